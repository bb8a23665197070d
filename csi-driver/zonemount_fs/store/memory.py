"""An in-memory ObjectStore for fast unit tests.

Behaves like S3 for everything the filesystem uses: flat keys, delimiter listings with
continuation tokens, ranged reads with If-Match, multipart uploads that stay invisible until
completed, server-side copy, and (when ``directory_bucket=True``) appends and RenameObject.
Thread safe (one lock). Every behaviour here is also checked against a real S3 server by
the contract suite, so the two cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import BucketNotFound, NotSupported, ObjectNotFound, PreconditionFailed, StoreError
from .base import DELETE_BATCH, ListPage, ObjectInfo


@dataclass
class _Obj:
    data: bytes
    etag: str
    mtime: float
    metadata: dict[str, str] = field(default_factory=dict)


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class MemoryStore:
    def __init__(self, bucket: str = "memory-bucket", *, directory_bucket: bool = False) -> None:
        self.bucket = bucket
        self.is_directory_bucket = directory_bucket
        self._objects: dict[str, _Obj] = {}
        self._uploads: dict[str, tuple[str, dict[str, str], dict[int, bytes]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.exists = True
        self.calls: dict[str, int] = {}

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    # direct access for tests ("another client")
    def put_object(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._objects[key] = _Obj(data, _etag(data), time.time(), dict(metadata or {}))

    def get_object(self, key: str) -> bytes:
        with self._lock:
            return self._objects[key].data

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def delete_object(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    # ObjectStore
    def check_bucket(self, prefix: str) -> None:
        if not self.exists:
            raise BucketNotFound(
                f"ListObjectsV2 {self.bucket!r}: NoSuchBucket", code="NoSuchBucket"
            )

    def _get(self, key: str) -> _Obj:
        self.check_bucket("")
        obj = self._objects.get(key)
        if obj is None:
            raise ObjectNotFound(f"{key!r}: NoSuchKey", code="NoSuchKey")
        return obj

    def head(self, key: str) -> ObjectInfo:
        self._count("head")
        with self._lock:
            obj = self._get(key)
            return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    def list_page(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """As S3 (general-purpose): entries in key order, a common prefix in the place of
        its first key; ``start_after`` keeps the keys after it (then rolls up, so a common
        prefix with keys after it is listed again); the token is the page's last entry, so
        the next page starts after it (and after every key under a common prefix)."""
        self._count("list")
        with self._lock:
            self.check_bucket(prefix)
            entries: list[tuple[str, ObjectInfo | None]] = []
            seen: set[str] = set()
            after = start_after if token is None else None
            for key in sorted(self._objects):
                if not key.startswith(prefix) or (after is not None and key <= after):
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if common not in seen:
                        seen.add(common)
                        entries.append((common, None))
                    continue
                obj = self._objects[key]
                entries.append((key, ObjectInfo(key, len(obj.data), obj.etag, obj.mtime)))
        if token is not None:
            entries = [entry for entry in entries if entry[0] > token]
        chunk = entries[:max_keys]
        more = len(entries) > max_keys
        return ListPage(
            [info for _, info in chunk if info is not None],
            [name for name, info in chunk if info is None],
            chunk[-1][0] if more else None,
        )

    def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        self._count("get")
        with self._lock:
            obj = self._get(key)
            if etag and etag != obj.etag:
                raise PreconditionFailed(f"GetObject {key!r}: PreconditionFailed")
            return obj.data[start:end]

    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        data = self.get_range(key, start, end, etag)
        for offset in range(0, len(data), 1 << 20):
            yield data[offset : offset + (1 << 20)]

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        self._count("put")
        with self._lock:
            self.check_bucket(key)
            obj = _Obj(bytes(data), _etag(data), time.time(), dict(metadata))
            self._objects[key] = obj
            return ObjectInfo(key, len(data), obj.etag, obj.mtime, dict(metadata))

    def append(self, key: str, offset: int, data: bytes) -> None:
        if not self.is_directory_bucket:
            raise NotSupported("appends need a directory bucket")
        with self._lock:
            obj = self._objects.get(key)
            current = obj.data if obj else b""
            if offset != len(current):
                raise StoreError(
                    f"PutObject(append) {key!r}: InvalidWriteOffset", code="InvalidWriteOffset"
                )
            new = current + data
            meta = obj.metadata if obj else {}
            self._objects[key] = _Obj(new, _etag(new), time.time(), meta)

    def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        self._count("create_multipart")
        with self._lock:
            upload_id = f"upload-{next(self._ids)}"
            self._uploads[upload_id] = (key, dict(metadata), {})
            return upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        self._count("upload_part")
        with self._lock:
            self._upload(upload_id)[2][part_number] = bytes(data)
            return _etag(data)

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        with self._lock:
            ukey, meta, stored = self._upload(upload_id)
            del self._uploads[upload_id]
            data = b"".join(stored[n] for n, _ in sorted(parts))
            obj = _Obj(data, _etag(data), time.time(), meta)
            self._objects[ukey] = obj
            return ObjectInfo(ukey, len(data), obj.etag, obj.mtime, dict(meta))

    def _upload(self, upload_id: str) -> tuple[str, dict[str, str], dict[int, bytes]]:
        """An upload under way; S3's NoSuchUpload once it was completed or aborted."""
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise StoreError(f"NoSuchUpload {upload_id}", code="NoSuchUpload")
        return upload

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._uploads.pop(upload_id, None)

    def pending_uploads(self) -> int:
        with self._lock:
            return len(self._uploads)

    def copy(
        self, src: str, dst: str, size: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        self._count("copy")
        with self._lock:
            obj = self._get(src)
            meta = dict(metadata) if metadata is not None else dict(obj.metadata)
            self._objects[dst] = _Obj(obj.data, obj.etag, time.time(), meta)

    def rename(self, src: str, dst: str) -> None:
        if not self.is_directory_bucket:
            raise NotSupported("RenameObject is available on directory buckets only")
        self._count("rename")
        with self._lock:
            self._objects[dst] = self._get(src)
            del self._objects[src]

    def delete(self, key: str) -> None:
        self._count("delete")
        with self._lock:
            self._objects.pop(key, None)

    def delete_many(self, keys: Sequence[str]) -> None:
        if len(keys) == 1:
            self.delete(keys[0])
            return
        for start in range(0, len(keys), DELETE_BATCH):
            self._count("delete_many")
            with self._lock:
                for key in keys[start : start + DELETE_BATCH]:
                    self._objects.pop(key, None)
