"""Open files: file handles and the write lifecycle (create/open, write, flush, release).

Owns :class:`FileHandle` and the ``files`` table, and the life of a file being written:

* ``create`` and ``open`` for writing give the inode a :class:`~.upload.Writer` (new object:
  :class:`~.upload.StreamingUpload`; ``--incremental-upload`` appends:
  :class:`~.upload.AppendUpload`); the inode is *local* while it has a writer. One writer per
  inode: a second open for writing while one is open is refused (EPERM).
* ``flush`` (every close()) completes the upload, so the object is visible when close()
  returns; a flush before anything was written is left for ``release`` (``echo x > f``
  closes a descriptor before writing through its dup), and such files are completed before
  an open, unlink or rename needs them closed (:meth:`Handles.settle`).
* A flush while the process that opened the file still holds a descriptor open for writing
  on it is another process' close() (a forked child closing what it inherited): it
  completes nothing; the opener's own last close() does (R-WRITE-FORKED-CLOSE).
* A write after a flush completed the object resumes it (R-WRITE-FORKED-CLOSE), only for
  the writer's own file (not renamed, replaced or deleted since); ``fsync`` seals it.
* A writer whose process was killed (or died before its close() flushed) is aborted, never
  completed (R-WRITE-KILLED-PUBLISHES-NOTHING); so is every open writer at unmount.
* On completion the inode takes the object's size, ETag and metadata, stops being local,
  records ``published_at`` (before any await: a listing that started earlier may not show
  it) and makes its ancestors follow S3 again.
* What the kernel may cache of a handle: a reader keeps the file's pages only if they are
  of its version (:func:`_page_cache`, R-READ-PAGE-CACHE); a write-only handle writes past
  the page cache (:func:`uncached_writes`, R-WRITE-UNCACHED). The FUSE adapter turns both
  into the open's flags.

Concurrency: one trio thread. A writer's ``lock`` is held around each write (with its
resume), each flush and the abort at unmount, so a completion never interleaves with a
write or an abort of the same file.
After every await the inode is re-read by number and checked to still hold *this* writer
(``node.writer is writer``) before it is changed: the file may have been replaced,
unlinked or renamed meanwhile.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from time import monotonic as _now

from . import metrics, procinfo
from .context import IoContext
from .errors import FsError
from .inodes import Attr, Inode, InodeTable, Kind, valid_name
from .lookup import Resolver
from .meta import META_MTIME
from .moves import Moves, changes_under
from .prefetch import Reader
from .retained import RetainedReader
from .upload import AppendUpload, StreamingUpload, Writer

log = logging.getLogger("zonemount.fs")


@dataclass(eq=False)
class FileHandle:
    ino: int
    key: str
    reader: Reader | RetainedReader | None = None
    writer: Writer | None = None
    direct: bool = False
    # close() reached us (flush) but the upload was left for release (nothing written yet)
    closed_pending: bool = False
    # the process (thread, thread group) that opened it: how it ends decides commit/abort
    pid: int = 0
    tgid: int = 0
    # the opener's descriptor of this file, once a flush looked for it (checked first)
    fd_hint: int | None = None
    # the kernel may keep the pages it cached of this file (FOPEN_KEEP_CACHE); counted in
    # the inode's ``readers`` until released (R-READ-PAGE-CACHE)
    keep_cache: bool = False
    cached_reader: bool = False
    # opened O_RDWR (for reading only: writes fail with EBADF)
    rdwr: bool = False
    # writes bypass the kernel's page cache (FOPEN_DIRECT_IO, R-WRITE-UNCACHED)
    uncached_writes: bool = False


def uncached_writes(flags: int, mode: int) -> bool:
    """R-WRITE-UNCACHED: may a handle opened for writing with ``flags`` on a file of ``mode``
    write past the kernel's page cache?

    Written through the page cache, each ``write()`` costs the FUSE server a second request
    first: the kernel asks for the file's ``security.capability`` xattr (to drop privileges
    of the file being changed) before every write, a write at an unaligned offset is cut
    into two requests at a page boundary, and the bytes are copied into pages that no later
    open may trust (a writer's pages are of no object version, R-READ-PAGE-CACHE). Direct
    I/O skips all three. Only write-only handles: an O_RDWR writer may read back what it
    wrote from those pages. Not for setuid/setgid files, whose bits the kernel clears on a
    write only through the page cache."""
    return flags & os.O_ACCMODE == os.O_WRONLY and not mode & (stat.S_ISUID | stat.S_ISGID)


def _page_cache(node: Inode, handle: FileHandle) -> None:
    """R-READ-PAGE-CACHE: may the kernel keep the pages it holds of this file for the new
    ``handle`` (FOPEN_KEEP_CACHE)? Only a reader of the very version those pages are of.

    An open without the flag makes the kernel drop the file's pages; from then on they fill
    with what this handle's reads return (the version its attributes name: every GET
    carries If-Match). So ``cache_etag`` becomes this handle's ETag - unless readers of
    another version are still open and may fill pages too (then unknown, None). A writer's
    bytes may go through the page cache before they are an object (an O_RDWR writer's, a
    setuid file's: R-WRITE-UNCACHED), an O_DIRECT open drops the
    pages and an O_RDWR reader's shared mapping could dirty them: all leave the version
    unknown."""
    etag = node.etag or None
    if handle.writer is not None or handle.direct or etag is None:
        node.cache_etag = None
        return
    handle.keep_cache = node.cache_etag == etag and not handle.rdwr
    if handle.rdwr:
        node.cache_etag = None  # a shared writable mapping could dirty its pages
    elif not handle.keep_cache and node.readers:
        node.cache_etag = None  # pages of another version may still come in
    elif node.readers == 0:
        node.cache_etag = etag
    node.readers += 1
    handle.cached_reader = True


class Handles:
    """The open files of one mount."""

    def __init__(
        self,
        ctx: IoContext,
        tree: InodeTable,
        resolver: Resolver,
        fh_numbers: Iterator[int],
        moves: Moves,
    ) -> None:
        self.ctx = ctx
        self.tree = tree
        self.resolver = resolver
        self.moves = moves
        self._fh_numbers = fh_numbers  # shared with the directory handles: one numbering
        self.files: dict[int, FileHandle] = {}

    # -- writers -------------------------------------------------------------------------
    def _writer_for(self, node: Inode, *, existing_size: int, exists: bool) -> Writer:
        """The writer of a file: appends with ``--incremental-upload``, else a new object."""
        if self.ctx.opts.incremental_upload:
            return self._appending(node, existing_size=existing_size, exists=exists)
        return self._streaming(node)

    def _streaming(self, node: Inode) -> StreamingUpload:
        """A writer that makes a new object at the file's key (a new file, O_TRUNC)."""
        return StreamingUpload(
            self.ctx,
            self.tree.key_of(node),
            self.tree.new_metadata(node),
            max_inflight=self.ctx.opts.uploads_in_flight,
        )

    def _appending(self, node: Inode, *, existing_size: int, exists: bool) -> AppendUpload:
        """A writer that appends to the file's object (``--incremental-upload``)."""
        return AppendUpload(
            self.ctx, self.tree.key_of(node), existing_size, self.tree.new_metadata(node), exists
        )

    def _new_fh(self, handle: FileHandle) -> int:
        fh = next(self._fh_numbers)
        self.files[fh] = handle
        node = self.tree.inodes.get(handle.ino)
        if node is not None:
            node.open_handles += 1
            _page_cache(node, handle)
        return fh

    # -- create / open -------------------------------------------------------------------
    @changes_under(0)
    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        self.ctx.check_writable()
        parent = self.tree.inode(parent_ino)
        if parent.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if not valid_name(name) or "/" in name:
            raise FsError(errno.EINVAL)
        self.tree.check_key(parent, name)
        existing = self.tree.child(parent, name)
        if existing is not None and (existing.local or existing.writer or existing.expiry > _now()):
            raise FsError(errno.EEXIST)
        if existing is not None:
            self.tree.detach(parent, existing)
        node = self.tree.add_local(parent, name, Kind.FILE, mode, uid, gid)
        self.tree.touch_dir(parent)
        node.writer = self._writer_for(node, existing_size=0, exists=False)
        node.lookups += 1
        fh = self._new_fh(
            FileHandle(
                node.ino,
                self.tree.key_of(node),
                writer=node.writer,
                uncached_writes=uncached_writes(flags, self.tree.attr(node).mode),
            )
        )
        return fh, self.tree.attr(node)

    async def open(self, ino: int, flags: int) -> int:
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            async with self.moves.changing(ino):  # it may give the file a writer
                return await self._open(ino, flags)
        return await self._open(ino, flags)

    async def _open(self, ino: int, flags: int) -> int:
        node = self.tree.inode(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.SYMLINK:
            raise FsError(errno.ELOOP)  # the kernel follows symlinks; never opened as such
        if node.writer is not None:
            await self.finish_closed_writer(node)
            node = self.tree.inode(ino)
        if node.writer is not None:
            raise FsError(errno.EPERM, "file is being written; it can be opened after close")
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            fh = await self._open_for_writing(ino, flags)
            if fh is not None:
                return fh
            # O_RDWR without O_TRUNC: opened for reading; a write will fail with EBADF.
        return await self._open_for_reading(
            ino, direct=bool(flags & os.O_DIRECT), rdwr=flags & os.O_ACCMODE == os.O_RDWR
        )

    async def _open_for_writing(self, ino: int, flags: int) -> int | None:
        """A handle that replaces (O_TRUNC, or an empty file) or appends to the file; None
        for O_RDWR without O_TRUNC (opened for reading); EPERM for anything else."""
        self.ctx.check_writable()
        accmode = flags & os.O_ACCMODE
        replace = bool(flags & os.O_TRUNC)
        if not replace and await self._empty_for_writing(ino, flags):
            # Nothing to keep: writing an empty file from offset 0 replaces it, exactly
            # as with O_TRUNC (R-ERRNO-REFUSALS).
            if self.tree.inode(ino).writer is not None:  # another open won the race
                raise FsError(errno.EPERM, "file is being written; open it after close")
            replace = True
        if replace:
            return self._open_replacing(self.tree.inode(ino), flags)
        if self.ctx.opts.incremental_upload and (flags & os.O_APPEND or accmode == os.O_WRONLY):
            return await self._open_appending(ino, flags)
        if accmode == os.O_WRONLY or flags & os.O_APPEND:
            raise FsError(
                errno.EPERM,
                "existing files can only be replaced (O_TRUNC with --allow-overwrite)"
                + (
                    " or appended with --incremental-upload"
                    if self.ctx.opts.is_directory_bucket
                    else ""
                ),
            )
        return None

    def _open_replacing(self, node: Inode, flags: int) -> int:
        """O_TRUNC (with or without ``--incremental-upload``): a fresh object."""
        if not self.ctx.opts.allow_overwrite:
            raise FsError(errno.EPERM, "overwriting needs --allow-overwrite")
        node.writer = self._streaming(node)
        node.local = True
        return self._new_fh(
            FileHandle(
                node.ino,
                self.tree.key_of(node),
                writer=node.writer,
                direct=bool(flags & os.O_DIRECT),
                uncached_writes=uncached_writes(flags, self.tree.attr(node).mode),
            )
        )

    async def _open_appending(self, ino: int, flags: int) -> int:
        """``--incremental-upload``: append at the object's size (revalidated now)."""
        attr = await self.resolver.getattr(ino, revalidate=True)
        node = self.tree.inode(ino)
        if node.writer is not None:  # another open won the race while we asked S3
            raise FsError(errno.EPERM, "file is being written; open it after close")
        node.writer = self._writer_for(node, existing_size=attr.size, exists=True)
        node.local = True
        return self._new_fh(
            FileHandle(
                ino,
                self.tree.key_of(node),
                writer=node.writer,
                uncached_writes=uncached_writes(flags, self.tree.attr(node).mode),
            )
        )

    async def _open_for_reading(self, ino: int, *, direct: bool, rdwr: bool = False) -> int:
        """A handle with a :class:`~.prefetch.Reader` of the object as it is now (revalidated
        for O_DIRECT or once the attributes expired)."""
        node = self.tree.inode(ino)
        if direct or node.expiry <= _now():
            await self.resolver.getattr(ino, revalidate=True)
            node = self.tree.inode(ino)
        key = self.tree.key_of(node)
        kept = None if direct else self.ctx.retained.get(key, node.etag)
        reader: Reader | RetainedReader
        if kept is not None and len(kept) == node.size:  # R-READ-RETAINED
            reader = RetainedReader(kept)
        else:
            cache = None if direct else self.ctx.cache_for(node.size)
            reader = Reader(self.ctx, key, node.size, node.etag or None, cache)
        return self._new_fh(FileHandle(ino, key, reader=reader, direct=direct, rdwr=rdwr))

    async def _empty_for_writing(self, ino: int, flags: int) -> bool:
        """Is this a write-only or append open, without O_TRUNC, of a file that is empty in
        the bucket now (revalidated: a cached size could hide another client's data)?"""
        if self.ctx.opts.incremental_upload or not (
            flags & os.O_ACCMODE == os.O_WRONLY or flags & os.O_APPEND
        ):
            return False
        if self.tree.inode(ino).size != 0:
            return False
        return (await self.resolver.getattr(ino, revalidate=True)).size == 0

    # -- read / write --------------------------------------------------------------------
    async def read(self, fh: int, offset: int, length: int) -> bytes:
        handle = self.files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        if handle.reader is None:
            raise FsError(errno.EBADF, "file is open for writing only")
        return await handle.reader.read(offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        if handle.writer is None:
            raise FsError(
                errno.EBADF, "file was opened for reading (open with O_TRUNC to replace it)"
            )
        writer = handle.writer
        handle.closed_pending = False
        async with writer.lock:  # a flush completing this file finishes first
            if writer.resumable and offset == writer.size:
                async with self.moves.changing(handle.ino):  # it gives the file a writer
                    await self._resume(handle, writer)
            return await writer.write(offset, data)

    async def _resume(self, handle: FileHandle, writer: Writer) -> None:
        """A write after a flush completed the object (see R-WRITE-FORKED-CLOSE).

        Only the writer's own file qualifies: not renamed, replaced or deleted since."""
        node = self.tree.inodes.get(handle.ino)
        if (
            node is None
            or node.detached
            or node.writer is not None
            or self.tree.key_of(node) != writer.key
            or node.size != writer.size
        ):
            raise FsError(errno.EBADF, "file already closed for writing; reopen with O_TRUNC")
        node.writer, node.local = writer, True
        try:
            await writer.resume(node.etag)
        except BaseException:
            node = self.tree.inodes.get(handle.ino)
            if node is not None and node.writer is writer:
                node.writer, node.local = None, False
            raise

    def set_opener(self, fh: int, pid: int) -> None:
        """Record the process that opened ``fh`` for writing (the FUSE request's pid)."""
        handle = self.files.get(fh)
        if handle is not None and handle.writer is not None and pid > 0:
            handle.pid, handle.tgid = pid, procinfo.tgid_of(pid) or pid

    # -- flush / release -----------------------------------------------------------------
    async def flush(self, fh: int, *, force: bool = False, at_release: bool = False) -> None:
        """close(): complete the upload; the object is visible when close() returns.

        A flush before anything was written is ignored: shells open a file, ``dup2`` the
        descriptor and close the original before writing (``echo x > f``). Such a file is
        completed at ``release`` (or ``fsync``) instead."""
        handle = self.files.get(fh)
        if handle is None or handle.writer is None:
            return
        writer = handle.writer
        async with writer.lock:  # never while a write (or a resume) of this file is under way
            if writer.finished:
                return
            killed = procinfo.killed_by(handle.pid, handle.tgid) if handle.pid else None
            if killed:
                await self._abandon(handle, writer, f"its writer was killed by signal {killed}")
                return
            if at_release and killed is None and handle.pid and writer.size:
                # A normal close() always flushes first; bytes never flushed whose writer is
                # gone mean the flush of a dying process was dropped (fatal signal pending).
                await self._abandon(handle, writer, "its writer died before its close() flushed")
                return
            if not force and writer.size == 0:
                handle.closed_pending = True
                return
            if not force and self._opener_still_writes(handle, writer):
                metrics.FLUSHES_LEFT_TO_OPENER.inc()
                return
            await self._complete(handle, writer)

    def _opener_still_writes(self, handle: FileHandle, writer: Writer) -> bool:
        """R-WRITE-FORKED-CLOSE: is this flush another process' close() while the process
        that opened the file still holds a descriptor open for writing on it (a JVM's forked
        ``chmod`` closing every descriptor it inherited)? ``close`` takes the descriptor out
        of the closing process' table before the kernel flushes, so the opener's own close
        never finds its descriptor. False when it cannot be told (no opener pid, /proc not
        readable): the flush completes the file, as before."""
        if handle.tgid <= 0 or procinfo.closing(handle.pid):
            return False  # unknown opener, or its thread is in close(): its own close
        node = self.tree.inodes.get(handle.ino)
        if node is None or node.detached or node.writer is not writer:
            return False
        path = os.path.join(
            str(self.ctx.opts.mountpoint), self.tree.key_of(node)[len(self.ctx.opts.prefix) :]
        )
        handle.fd_hint = procinfo.write_descriptor(handle.tgid, path, handle.fd_hint)
        return handle.fd_hint is not None

    async def _abandon(self, handle: FileHandle, writer: Writer, why: str) -> None:
        """R-WRITE-KILLED-PUBLISHES-NOTHING: abort the upload; S3 keeps what it had (the old
        object of an overwrite, or nothing) and the mount shows that."""
        log.warning("upload of %r aborted: %s", writer.key, why)
        metrics.UPLOADS_ABORTED.labels(reason="writer-killed").inc()
        await writer.abort()
        self._forget_writer(handle, writer)

    def _forget_writer(self, handle: FileHandle, writer: Writer) -> None:
        """The upload was aborted: S3 keeps what it had (an old object, or nothing) and so
        does the mount (the next lookup asks S3); a new file never existed."""
        node = self.tree.inodes.get(handle.ino)
        if node is not None and node.writer is writer:
            node.writer, node.local, node.expiry = None, False, 0.0
            parent = self.tree.inodes.get(node.parent)
            if node.etag is None and parent is not None:
                self.tree.detach(parent, node)

    async def _complete(self, handle: FileHandle, writer: Writer) -> None:
        node = self.tree.inodes.get(handle.ino)
        if node is not None and writer.sets_metadata:
            writer.metadata = self.tree.new_metadata(node)
        try:
            info = await writer.complete()
        except BaseException:
            self._forget_writer(handle, writer)
            raise
        finally:
            node = self.tree.inodes.get(handle.ino)
            if node is not None and node.writer is writer:
                node.writer = None
                node.local = False
                node.published_at = _now()  # before any await: see Listing._snapshot
        if node is not None:
            node.size = info.size if info.size >= 0 else writer.size
            node.etag = info.etag
            wanted = self.tree.new_metadata(node)  # includes setattr calls that raced with us
            node.metadata = dict(info.metadata or {})
            if writer.sets_metadata and wanted != node.metadata:
                # chmod/utime raced with the completion: persist what the user asked for.
                store = self.ctx.store
                await self.ctx.call(store.copy, writer.key, writer.key, node.size, wanted)
                node.metadata, node.etag = wanted, None
            self.tree.memo.put(writer.key, node.etag, node.metadata)
            node.expiry = _now() + self.ctx.opts.metadata_ttl
            node.published_at = _now()
            if not node.metadata.get(META_MTIME):
                node.mtime = time.time()
            self.tree.mark_remote_ancestors(node)

    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is None:
            return
        node = self.tree.inodes.get(handle.ino)
        try:
            if handle.writer is not None and not handle.writer.finished:
                self.files[fh] = handle
                try:
                    await self.flush(fh, force=True, at_release=True)
                except FsError as exc:
                    # close() has returned already (a file closed before any write): the
                    # upload was aborted, nothing is visible, and the failure is reported
                    # where an operator looks - an error in the log and a counter.
                    log.error("upload of %r failed after close(): %s", handle.key, exc)
                    metrics.UPLOADS_ABORTED.labels(reason="failed-at-release").inc()
                finally:
                    self.files.pop(fh, None)
        finally:
            if handle.reader is not None:
                handle.reader.close()
            if node is not None:
                node.open_handles -= 1
                node.readers -= handle.cached_reader
                self.tree.maybe_drop(node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh, force=True)
        handle = self.files.get(fh)
        if handle is not None and handle.writer is not None:
            handle.writer.seal()  # R-WRITE-FSYNC: no writes after fsync

    # -- files closed before anything was written ---------------------------------------
    async def settle(self, node: Inode) -> None:
        """Complete every file at or under ``node`` whose descriptors were all closed before
        anything was written: to unlink and rename they are ordinary closed files, not
        files being written (``EBUSY``), even before the kernel's release arrives."""
        pending = [node]
        while pending:
            current = pending.pop()
            if current.writer is not None:
                await self.finish_closed_writer(current)
            pending.extend(
                c
                for i in list(current.children.values())
                if (c := self.tree.inodes.get(i)) is not None
            )

    async def finish_closed_writer(self, node: Inode) -> None:
        """Complete a file whose every descriptor was closed before anything was written
        (``touch``, an empty ``write_bytes``): its upload waits for ``release``, which the
        kernel sends after close() returned, so an open right after would race it. A write
        through a descriptor that is in fact still in use (``dup2``) resumes the file."""
        handles = [(fh, h) for fh, h in self.files.items() if h.writer is node.writer]
        if handles and all(h.closed_pending for _, h in handles):
            await self.flush(handles[0][0], force=True)

    async def close_all(self) -> None:
        """Unmount: abort the uploads of files still open (nothing partial becomes
        visible) and stop their readers. A flush (or write) under way finishes first,
        under the writer's lock: a close() that is completing its file publishes it."""
        for handle in list(self.files.values()):
            writer = handle.writer
            if writer is not None:
                async with writer.lock:
                    if not writer.finished:
                        await writer.abort()
            if handle.reader is not None:
                handle.reader.close()
