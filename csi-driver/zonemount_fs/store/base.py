"""The object-store protocol used by the filesystem core.

All methods are blocking (the core calls them from worker threads through a capacity
limiter) and raise only :class:`zonemount_fs.errors.StoreError` subclasses.

Invariants:
* keys are full object keys (the mount prefix already applied);
* ``list_page`` with ``delimiter="/"`` returns direct children only: objects in
  ``objects`` and sub-prefixes (ending in ``/``) in ``prefixes``; order is not promised
  (directory buckets list unordered); general-purpose buckets list in key order, which
  :mod:`.ranged` relies on to list ranges of a directory in parallel;
* ``get_range(key, start, end)`` returns bytes ``[start, end)``, shorter only at the end of
  the object; with ``etag`` set it fails with PreconditionFailed if the object changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

# Keys per DeleteObjects request (the S3 API's limit).
DELETE_BATCH = 1000


class ObjectInfo(NamedTuple):
    """One object as S3 showed it. A named tuple, immutable: a listing makes one per key, and
    a frozen dataclass cost 3-4 us each to build (35 ms per 10,000 keys listed)."""

    key: str
    size: int
    etag: str
    mtime: float  # seconds since the epoch (LastModified)
    metadata: Mapping[str, str] | None = None  # x-amz-meta-*; None when unknown (listings)
    storage_class: str | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class PutOptions:
    """What every new object is written with (from the mount's flags)."""

    storage_class: str | None = None
    sse: str | None = None  # "AES256" | "aws:kms" | "aws:kms:dsse"
    sse_kms_key_id: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    bucket: str
    is_directory_bucket: bool

    def check_bucket(self, prefix: str) -> None:
        """Fail with BucketNotFound/AccessDenied/StoreUnavailable unless listable."""

    def head(self, key: str) -> ObjectInfo: ...

    def list_page(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """One ListObjectsV2 page; ``start_after`` (a key; ignored with ``token``) starts it
        after that key (general-purpose buckets; see :mod:`.ranged` for what servers do
        with a common prefix at that point)."""
        ...

    def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes: ...

    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` in pieces as they arrive."""
        ...

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo: ...

    def append(self, key: str, offset: int, data: bytes) -> None:
        """Append at ``offset`` (S3 Express ``WriteOffsetBytes``); NotSupported elsewhere."""

    def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str: ...

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str: ...

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo: ...

    def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def copy(
        self, src: str, dst: str, size: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Server-side copy; ``metadata`` replaces the source's user metadata if given."""

    def rename(self, src: str, dst: str) -> None:
        """Atomic server-side rename (RenameObject); NotSupported where absent."""

    def delete(self, key: str) -> None:
        """Delete one key; deleting a missing key succeeds."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete every key in as few requests as the service allows (DeleteObjects, at most
        :data:`DELETE_BATCH` keys each; one key is a plain delete). A missing key succeeds.
        Every key is tried; then the first failure is raised."""


def list_all(store: ObjectStore, prefix: str, delimiter: str | None = None) -> ListPage:
    """Collect every page of a listing into one page (``next_token`` is None)."""
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    token: str | None = None
    while True:
        page = store.list_page(prefix, delimiter, token)
        objects.extend(page.objects)
        prefixes.extend(page.prefixes)
        token = page.next_token
        if token is None:
            return ListPage(objects, prefixes, None)
