"""Streaming uploads: bytes written to a file go to S3 while the application keeps writing.

:class:`Writer` is what the filesystem holds for a file being written (its inode and every
handle open for writing refer to the same one); two kinds implement it:

:class:`StreamingUpload` (new objects, overwrites) buffers at most one part, hands full parts
to background tasks that run UploadPart in worker threads, and blocks the writer when
``max_inflight`` parts are already in flight (backpressure). Memory per open file is bounded
by ``(max_inflight + 1) * part_size`` whatever the file size. Files smaller than one part are
written with a single PutObject on completion; the multipart upload is created lazily.

:class:`AppendUpload` (``--incremental-upload`` on directory buckets) appends buffered bytes
at the object's current size with PutObject ``WriteOffsetBytes``.

Every store call goes through the mount's :class:`~.context.IoContext` (limiters, deadlines,
journal, the nursery that part uploads and abort retries run in).

Concurrency rules (trio): code between two ``await`` points is atomic, so ``size`` and the
buffer are only touched by the writing task; part tasks only record their ETag or error. The
filesystem holds a writer's ``lock`` around each write (with its resume) and each flush.
Invariant: on any failure nothing partial becomes visible - the multipart upload is aborted.
An abort that fails is retried in the background (:data:`ABORT_RETRY_DELAYS`); every upload id
is in the mount's :class:`~.journal.UploadJournal` from creation until it is completed or
aborted, so one whose abort never succeeded (or whose FUSE server died) is aborted by the next
mount of the same prefix on this host.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Protocol

import trio

from .context import IoContext
from .errors import FsError, StoreError
from .store.base import ObjectInfo

log = logging.getLogger("zonemount.upload")
MAX_PARTS = 10_000
#: Seconds between the retries of a failed AbortMultipartUpload (about 5 minutes in all).
ABORT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 60.0, 120.0)


class Writer(Protocol):
    """A file being written: bytes go to ``key`` in order; ``complete`` makes them the object.

    ``size`` counts the bytes written so far (what stat shows); ``metadata`` is the object's
    user metadata (the filesystem updates it on chmod/chown/utime); ``finished`` is set by
    ``complete`` and ``abort``. After a successful ``complete`` the writer is ``resumable``
    (a write after a forked child's close, see R-WRITE-FORKED-CLOSE) until ``seal``
    (fsync) or ``abort``. Callers hold ``lock`` around each write (with its resume)
    and each flush."""

    key: str
    size: int
    metadata: dict[str, str]
    finished: bool
    lock: trio.Lock

    @property
    def resumable(self) -> bool: ...

    @property
    def sets_metadata(self) -> bool:
        """True when ``complete`` writes ``metadata`` as the object's (so the filesystem
        hands it the latest before completing, and re-copies what a setattr changed while
        it completed); False when metadata is written only with the object's first bytes."""
        ...

    def seal(self) -> None: ...

    async def resume(self, etag: str | None) -> None: ...

    async def write(self, offset: int, data: bytes) -> int: ...

    async def complete(self) -> ObjectInfo: ...

    async def abort(self) -> None: ...


class PartBuffer:
    """Bytes waiting to become a part: a list of pieces joined once per part.

    Each written byte is copied once (by the join), instead of the grow/copy/shift of a
    bytearray that the profile showed as the top Python frame of the write path."""

    __slots__ = ("_len", "_pieces", "part_size")

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self._pieces: list[bytes | memoryview] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the parts it completed (each exactly ``part_size``)."""
        parts: list[bytes] = []
        view = memoryview(data)
        while view:
            room = self.part_size - self._len
            piece = view[:room]
            self._pieces.append(piece)
            self._len += len(piece)
            view = view[room:]
            if self._len == self.part_size:
                parts.append(self.take())
        return parts

    def take(self) -> bytes:
        data = b"".join(self._pieces)
        self.clear()
        return data

    def clear(self) -> None:
        self._pieces = []
        self._len = 0


class StreamingUpload:
    """A new object (or an overwrite): parts go out while the application writes."""

    sets_metadata = True

    def __init__(
        self,
        ctx: IoContext,
        key: str,
        metadata: Mapping[str, str],
        max_inflight: int = 4,
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.journal = ctx.journal
        self.key = key
        self.part_size = part_size = ctx.part_size
        self._run = ctx.run
        self._nursery = ctx.nursery
        self.metadata = dict(metadata)
        self._created_metadata: dict[str, str] | None = None
        self.size = 0
        self._buf = PartBuffer(part_size)
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        self._next_part = 1
        self._slots = trio.Semaphore(max_inflight)
        self._max_inflight = max_inflight
        self._error: StoreError | None = None
        self.finished = False
        self.lock = trio.Lock()  # held by the filesystem around write and complete
        # Set by a successful complete(); cleared by abort() and seal() (fsync).
        self._resumable = False

    @property
    def resumable(self) -> bool:
        """True when a flush completed the object and the writer may continue (see resume)."""
        return self.finished and self._resumable

    def seal(self) -> None:
        """No resuming after this (fsync: further writes fail with EBADF)."""
        self._resumable = False

    async def resume(self, etag: str | None) -> None:
        """Continue writing an object that a flush already completed.

        The kernel sends FLUSH on every close() of a descriptor of the open file, including
        a forked child's copy (a JVM forking ``chmod`` closes every inherited descriptor), so
        a writer may see its object completed while it still writes. The object is then
        re-opened: a new upload starts with the bytes already stored (re-read from S3 in
        parts, ``If-Match`` the completed ETag when known) and the writer continues after
        them. Memory stays bounded by the part window. On failure nothing changes remotely
        and the writer stays finished."""
        if not self.resumable:
            raise FsError(errno.EBADF, "file already closed for writing; reopen with O_TRUNC")
        stored = self.size
        self._resumable = False
        self._buf.clear()
        self._upload_id = None
        self._etags = {}
        self._next_part = 1
        self._error = None
        self._created_metadata = None
        self.size = 0
        try:
            offset = 0
            while offset < stored:
                end = min(stored, offset + self.part_size)
                chunk = await self._run(self.store.get_range, self.key, offset, end, etag)
                if len(chunk) != end - offset:
                    break
                await self._append(chunk)
                offset = end
        except StoreError as exc:
            await self.abort()
            raise FsError(exc.errno, f"resuming the upload of {self.key!r} failed: {exc}") from None
        except BaseException:
            await self.abort()
            raise
        if self.size != stored:
            await self.abort()
            raise FsError(errno.ESTALE, f"{self.key!r} was replaced while it was written")
        self.finished = False

    async def write(self, offset: int, data: bytes) -> int:
        if self.finished:
            raise FsError(errno.EBADF, "file already closed for writing; reopen with O_TRUNC")
        if offset != self.size:
            raise FsError(
                errno.EINVAL,
                f"out-of-order write at {offset} (expected {self.size}): S3 objects are "
                "written sequentially",
            )
        self._raise_if_failed()
        await self._append(data)
        return len(data)

    async def _append(self, data: bytes) -> None:
        self.size += len(data)
        for part in self._buf.append(data):
            await self._submit(part)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise FsError(
                self._error.errno if self._error.errno != errno.ENOENT else errno.EIO,
                f"upload of {self.key!r} failed: {self._error}",
            )

    async def _submit(self, part: bytes) -> None:
        if self._next_part > MAX_PARTS:
            raise FsError(
                errno.EFBIG, f"{self.key!r} exceeds {MAX_PARTS} parts; raise --write-part-size"
            )
        if self._upload_id is None:
            self._created_metadata = dict(self.metadata)
            try:
                self._upload_id = await self._run(
                    self.store.create_multipart, self.key, self._created_metadata
                )
                if self.journal is not None:
                    self.journal.created(self.key, self._upload_id)
            except StoreError as exc:
                self._error = exc
                self._raise_if_failed()
        number = self._next_part
        self._next_part += 1
        await self._slots.acquire()  # backpressure: at most max_inflight parts in memory
        assert self._upload_id is not None
        # the upload id as of now: an abort may clear it before the task starts
        self._nursery.start_soon(self._upload_part, self._upload_id, number, part)

    async def _upload_part(self, upload_id: str, number: int, part: bytes) -> None:
        try:
            self._etags[number] = await self._run(
                self.store.upload_part, self.key, upload_id, number, part
            )
        except StoreError as exc:
            self._error = self._error or exc
        finally:
            self._slots.release()

    async def _drain(self) -> None:
        for _ in range(self._max_inflight):
            await self._slots.acquire()
        for _ in range(self._max_inflight):
            self._slots.release()

    async def complete(self) -> ObjectInfo:
        """Finish the object; it is visible to everyone when this returns."""
        if self.finished:
            raise FsError(errno.EBADF, "upload already completed")
        self.finished = True
        try:
            if self._upload_id is None:
                self._raise_if_failed()
                written = dict(self.metadata)
                data = self._buf.take()
                info: ObjectInfo = await self._run(self.store.put, self.key, data, written)
                self.ctx.retained.keep(self.key, info.etag, data)
                self._resumable = True
                return ObjectInfo(self.key, self.size, info.etag, info.mtime, written)
            if len(self._buf) or self._next_part == 1:
                await self._submit(self._buf.take())
            await self._drain()
            self._raise_if_failed()
            parts = sorted(self._etags.items())
            info = await self._run(self.store.complete_multipart, self.key, self._upload_id, parts)
            if self.journal is not None:
                self.journal.done(self.key, self._upload_id)
            self._upload_id = None
            written = dict(self._created_metadata or {})
            if self.metadata != written:
                # chmod/chown/utime arrived after the upload was created: rewrite metadata.
                written = dict(self.metadata)
                await self._run(self.store.copy, self.key, self.key, self.size, written)
            self._resumable = True
            return ObjectInfo(self.key, self.size, info.etag, info.mtime, written)
        except StoreError as exc:
            await self.abort()
            raise FsError(exc.errno, f"upload of {self.key!r} failed: {exc}") from None
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        self.finished = True
        self._resumable = False
        self._buf.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await self._drain()
            if not await abort_once(self.ctx, self.key, upload_id):
                self._nursery.start_soon(retry_abort, self.ctx, self.key, upload_id)


async def abort_once(ctx: IoContext, key: str, upload_id: str) -> bool:
    """AbortMultipartUpload; True when the upload is gone (aborted now or before)."""
    try:
        await ctx.run(ctx.store.abort_multipart, key, upload_id)
    except StoreError as exc:
        if exc.errno != errno.ENOENT:  # NoSuchUpload: aborted or completed already
            log.warning("abort of the upload of %r failed (will retry): %s", key, exc)
            return False
    if ctx.journal is not None:
        ctx.journal.done(key, upload_id)
    return True


async def retry_abort(
    ctx: IoContext, key: str, upload_id: str, delays: tuple[float, ...] = ABORT_RETRY_DELAYS
) -> None:
    """Retry an abort with growing pauses; what still fails stays in the journal for the next
    mount's sweep (and the bucket's abort-incomplete-uploads lifecycle rule)."""
    for delay in delays:
        await trio.sleep(delay)
        if await abort_once(ctx, key, upload_id):
            return
    log.error("upload of %r could not be aborted; left for the next mount's sweep", key)


class AppendUpload:
    """Appends to an object of a directory bucket (``--incremental-upload``)."""

    sets_metadata = False  # written with the first bytes of a new object only

    def __init__(
        self,
        ctx: IoContext,
        key: str,
        start_size: int,
        metadata: Mapping[str, str],
        exists: bool,
    ) -> None:
        self.store = ctx.store
        self.key = key
        self.part_size = ctx.part_size
        self._run = ctx.run
        self.metadata = dict(metadata)
        self.size = start_size
        self._remote_size = start_size
        self._exists = exists
        self._buf = bytearray()
        self.finished = False
        self._resumable = False
        self.lock = trio.Lock()  # held by the filesystem around write and complete

    @property
    def resumable(self) -> bool:
        return self.finished and self._resumable

    def seal(self) -> None:
        self._resumable = False

    async def resume(self, etag: str | None) -> None:
        """Continue after a flush completed the object: appends simply go on at its end."""
        if not self.resumable:
            raise FsError(errno.EBADF, "file already closed for writing; reopen to append")
        self._resumable = False
        self.finished = False

    async def write(self, offset: int, data: bytes) -> int:
        if self.finished:
            raise FsError(errno.EBADF, "file already closed for writing; reopen to append")
        if offset != self.size:
            raise FsError(
                errno.EINVAL, f"write at {offset} is not an append at the end ({self.size})"
            )
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= self.part_size:
            await self._flush_buffer()
        return len(data)

    async def _flush_buffer(self) -> None:
        if not self._buf and self._exists:
            return
        data = bytes(self._buf)
        try:
            if not self._exists:
                await self._run(self.store.put, self.key, data, self.metadata)
                self._exists = True
            else:
                await self._run(self.store.append, self.key, self._remote_size, data)
        except StoreError as exc:
            raise FsError(exc.errno, f"append to {self.key!r} failed: {exc}") from None
        self._remote_size += len(data)
        self._buf = bytearray()

    async def complete(self) -> ObjectInfo:
        self.finished = True
        await self._flush_buffer()
        info: ObjectInfo = await self._run(self.store.head, self.key)
        self._resumable = True
        return info

    async def abort(self) -> None:
        self.finished = True
        self._resumable = False
        self._buf = bytearray()
