"""Shared block cache in a second bucket (``--cache-xz BUCKET``), like mount-s3's ``--cache-xz``.

Every mount on every node that names the same cache bucket shares it: a block one mount fetched
from the mounted bucket is served to the others from the cache bucket (an S3 Express One Zone
directory bucket in the readers' Availability Zone is the intended place: single-digit ms GETs).

What is cached: whole aligned read chunks (``--part-size`` bytes, the last one shorter) of
objects no larger than ``--cache-xz-max-object-size`` (default 1 MiB: small objects, where a
request's latency dominates; mount-s3's shared cache also targets small objects). Larger
objects are read from the mounted bucket (and the local ``--cache``, if any) as before.

Keys and validation (invariants):
* A block's key is ``zonemount-cache/v1/<block size>/<sha256(source bucket, key, ETag)>/<index>``:
  a replaced source object has a new ETag, so its old blocks are never looked up again; a
  different part size gives different keys.
* Each block object carries ``x-amz-meta-zm-source`` (that hash), ``zm-index``,
  ``zm-block-size`` and ``zm-crc32`` (CRC-32 of the body). A block whose metadata does not
  match what was asked for, or whose body fails the checksum, is a miss and never served.
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
WRITERS = 2


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
    """Blocks of ``source_bucket``'s objects in the cache bucket behind ``store``."""

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
        self.block_size = block_size
        self.max_object_size = max_object_size
        self.backoff = backoff
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        self._pending_bytes = 0
        self._down_until = 0.0
        self._closed = False
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="cache-xz-put")

    def source_id(self, key: str, etag: str) -> str:
        return hashlib.sha256(f"{self.source_bucket}\0{key}\0{etag}".encode()).hexdigest()

    def block_key(self, key: str, etag: str, index: int) -> str:
        return f"{PREFIX}{self.block_size}/{self.source_id(key, etag)}/{index}"

    def _metadata(self, key: str, etag: str, index: int, data: bytes) -> dict[str, str]:
        return {
            "zm-source": self.source_id(key, etag),
            "zm-index": str(index),
            "zm-block-size": str(self.block_size),
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

    def get(self, key: str, etag: str, index: int) -> bytes | None:
        if not self._available():
            return None
        try:
            data, meta = self.store.get_object(self.block_key(key, etag, index))
        except ObjectNotFound:
            CACHE_XZ_BLOCKS.labels(result="miss").inc()
            return None
        except StoreError as exc:
            self._failed("read", exc)
            return None
        if len(data) > self.block_size or meta != self._metadata(key, etag, index, data):
            CACHE_XZ_BLOCKS.labels(result="invalid").inc()
            log.warning(
                "shared cache block %s of %r failed validation; reading the source",
                index,
                key,
            )
            return None
        CACHE_XZ_BLOCKS.labels(result="hit").inc()
        return data

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None:
        """Queue the block for writing; returns at once (the reader is never held up)."""
        if not self._available() or len(data) > self.block_size:
            return
        size = len(data)
        with self._lock:
            if self._pending_bytes + size > self.max_pending_bytes:
                CACHE_XZ_BLOCKS.labels(result="dropped").inc()
                return
            self._pending_bytes += size
        try:
            self._writers.submit(self._write, key, etag, index, bytes(data))
        except RuntimeError:  # closed meanwhile
            with self._lock:
                self._pending_bytes -= size

    def _write(self, key: str, etag: str, index: int, data: bytes) -> None:
        try:
            if self._available():
                self.store.put(
                    self.block_key(key, etag, index), data, self._metadata(key, etag, index, data)
                )
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
