"""Shared block cache in a second bucket (``--cache-xz BUCKET``), like mount-s3's ``--cache-xz``.

Every mount on every node that names the same cache bucket shares it: a block one mount fetched
from the mounted bucket is served to the others from the cache bucket (an S3 Express One Zone
directory bucket in the readers' Availability Zone is the intended place: single-digit ms GETs).

What is cached: whole aligned read chunks (``--read-part-size`` bytes, the last one shorter) of
objects no larger than ``--cache-xz-max-object-size`` (default 1 MiB: small objects, where a
request's latency dominates; mount-s3's shared cache also targets small objects). Larger
objects are read from the mounted bucket (and the local ``--cache``, if any) as before.

Keys and validation (invariants):
* A chunk is stored as pieces of at most 1 MiB (``PIECE``), piece ``j`` of chunk ``i`` at
  ``zonemount-cache/v1/<part size>/<sha256(source bucket, key, ETag)>/<i>/<j>``: a replaced
  source object has a new ETag, so its old blocks are never looked up again; a different part
  size gives different keys. A get fetches piece 0, then the others in parallel.
* Each piece carries ``x-amz-meta-zm-source`` (that hash), ``zm-index``, ``zm-piece``,
  ``zm-block-size``, ``zm-length`` (of the whole chunk) and ``zm-crc32`` (CRC-32 of its body).
  A chunk is served only whole, from pieces whose metadata all match what was asked for and
  whose bodies pass their checksums and lengths; anything else is a miss, never served.
* Best effort: any error of the cache bucket (missing, denied, unreachable, slow) is a miss and
  never fails a read. After an error the cache is bypassed for ``BACKOFF`` seconds, so a dead
  endpoint costs one bounded timeout, not one per block.
* Writes happen after the block was delivered to the reader, on a small background pool with a
  bound on the bytes waiting; when the bound is reached the block is not cached (``dropped``).
  Nothing is ever deleted: expire blocks with a lifecycle rule on the cache bucket.

Trust (say it to whoever configures it): the checksum detects corruption, not forgery - anyone
who can write to the cache bucket can make every mount using it read arbitrary bytes in place of
any object of any mounted bucket. Grant write access (s3:PutObject, or s3express:CreateSession
in ReadWrite mode) to the cache bucket only to the mounts themselves, i.e. principals already
trusted with the data of every bucket cached there; and grant read access only to principals
allowed to read all of those buckets (the cache holds their data). That is why the CSI driver
takes it from StorageClass/S3MountClass parameters (the administrator), never from a tenant.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .cache import DataCache
from .errors import ObjectNotFound, StoreError
from .metrics import CACHE_XZ_BLOCKS

log = logging.getLogger("zonemount.cache_xz")

PREFIX = "zonemount-cache/v1/"
DEFAULT_MAX_OBJECT_SIZE = 1024 * 1024
BACKOFF = 30.0  # seconds the cache is bypassed after an error of the cache bucket
MAX_PENDING_BYTES = 64 * 1024 * 1024  # blocks waiting to be written; beyond this, dropped
WRITERS = 4
READERS = 8
PIECE = 1024 * 1024  # bytes per cache object (a chunk is stored as its pieces)


class BlockCache(Protocol):
    """What the read path needs of a block cache (:class:`DataCache`, :class:`SharedCache`,
    :class:`TieredCache`). Both calls are blocking, made from worker threads, never raise."""

    def get(self, key: str, etag: str, index: int) -> bytes | None: ...

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None: ...


class BlockStore(Protocol):
    """The cache bucket (an :class:`~zonemount_fs.store.s3.S3Store`)."""

    bucket: str

    def get_object(self, key: str) -> tuple[bytes, dict[str, str]]: ...

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> object: ...


class SharedCache:
    """Chunks of ``source_bucket``'s objects in the cache bucket behind ``store``, each kept as
    pieces of at most ``PIECE`` bytes (fetched in parallel: a cached chunk arrives in about
    two requests' latency whatever its size, as mount-s3's 1 MiB shared-cache blocks do)."""

    def __init__(
        self,
        store: BlockStore,
        source_bucket: str,
        block_size: int,
        max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
        *,
        backoff: float = BACKOFF,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.store = store
        self.source_bucket = source_bucket
        self.block_size = block_size  # the mount's read chunk (--read-part-size); in every key
        self.max_object_size = max_object_size
        self.backoff = backoff
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        self._pending_bytes = 0
        self._down_until = 0.0
        self._closed = False
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="cache-xz-put")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="cache-xz-get")

    def source_id(self, key: str, etag: str) -> str:
        return hashlib.sha256(f"{self.source_bucket}\0{key}\0{etag}".encode()).hexdigest()

    def block_key(self, key: str, etag: str, index: int, piece: int = 0) -> str:
        return f"{PREFIX}{self.block_size}/{self.source_id(key, etag)}/{index}/{piece}"

    def _metadata(
        self, key: str, etag: str, index: int, piece: int, length: int, data: bytes
    ) -> dict[str, str]:
        return {
            "zm-source": self.source_id(key, etag),
            "zm-index": str(index),
            "zm-piece": str(piece),
            "zm-block-size": str(self.block_size),
            "zm-length": str(length),  # of the whole chunk
            "zm-crc32": f"{zlib.crc32(data):08x}",
        }

    def _available(self) -> bool:
        return not self._closed and time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: StoreError) -> None:
        CACHE_XZ_BLOCKS.labels(result="error").inc()
        with self._lock:
            first = time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + self.backoff
        if first:
            log.warning(
                "shared cache %s failed (%s); bypassing s3://%s for %.0f s",
                what,
                exc,
                self.store.bucket,
                self.backoff,
            )

    def _piece(self, key: str, etag: str, index: int, piece: int) -> tuple[bytes, int]:
        """(bytes, chunk length) of one valid piece; ObjectNotFound when absent, ValueError
        when invalid."""
        data, meta = self.store.get_object(self.block_key(key, etag, index, piece))
        length = meta.get("zm-length", "")
        if not length.isdigit() or not 0 < int(length) <= self.block_size:
            raise ValueError("bad length")
        total = int(length)
        want = min(PIECE, total - piece * PIECE)
        if len(data) != want or meta != self._metadata(key, etag, index, piece, total, data):
            raise ValueError("metadata or checksum mismatch")
        return data, total

    def get(self, key: str, etag: str, index: int) -> bytes | None:
        if not self._available():
            return None
        try:
            first, total = self._piece(key, etag, index, 0)  # says how many pieces follow
            count = -(-total // PIECE)
            rest = list(
                self._readers.map(lambda n: self._piece(key, etag, index, n), range(1, count))
            )
        except ObjectNotFound:
            CACHE_XZ_BLOCKS.labels(result="miss").inc()
            return None
        except StoreError as exc:
            self._failed("read", exc)
            return None
        except ValueError as exc:
            CACHE_XZ_BLOCKS.labels(result="invalid").inc()
            log.warning("shared cache block %s of %r is not valid (%s); reading the source",
                        index, key, exc)  # fmt: skip
            return None
        if any(length != total for _, length in rest):
            CACHE_XZ_BLOCKS.labels(result="invalid").inc()
            return None
        CACHE_XZ_BLOCKS.labels(result="hit").inc()
        return first if count == 1 else b"".join([first, *(data for data, _ in rest)])

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None:
        """Queue the chunk for writing; returns at once (the reader is never held up)."""
        size = len(data)
        if not self._available() or not 0 < size <= self.block_size:
            return
        with self._lock:
            if self._pending_bytes + size > self.max_pending_bytes:
                CACHE_XZ_BLOCKS.labels(result="dropped").inc()
                return
            self._pending_bytes += size
        whole = bytes(data)
        for piece, offset in enumerate(range(0, size, PIECE)):
            part = whole[offset : offset + PIECE]
            try:
                self._writers.submit(self._write, key, etag, index, piece, size, part)
            except RuntimeError:  # closed meanwhile
                with self._lock:
                    self._pending_bytes -= len(part)

    def _write(self, key: str, etag: str, index: int, piece: int, length: int, data: bytes) -> None:
        try:
            if self._available():
                meta = self._metadata(key, etag, index, piece, length, data)
                self.store.put(self.block_key(key, etag, index, piece), data, meta)
                if piece == 0:
                    CACHE_XZ_BLOCKS.labels(result="stored").inc()
        except StoreError as exc:
            self._failed("write", exc)
        finally:
            with self._lock:
                self._pending_bytes -= len(data)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes

    def close(self) -> None:
        """Finish the writes already running; drop the queued ones."""
        self._closed = True
        self._writers.shutdown(wait=True, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)


class TieredCache:
    """The local disk cache first, then the shared one (``--cache DIR --cache-xz BUCKET``):
    a shared hit is kept locally too; a block fetched from the source goes to both."""

    def __init__(self, local: DataCache | None, shared: SharedCache) -> None:
        self.local = local
        self.shared = shared

    def get(self, key: str, etag: str, index: int) -> bytes | None:
        if self.local is not None:
            data = self.local.get(key, etag, index)
            if data is not None:
                return data
        data = self.shared.get(key, etag, index)
        if data is not None and self.local is not None:
            self.local.put(key, etag, index, data)
        return data

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None:
        if self.local is not None:
            self.local.put(key, etag, index, data)
        self.shared.put(key, etag, index, data)
