"""The filesystem core: POSIX-ish operations over an ObjectStore, with no FUSE in it.

The FUSE adapter (:mod:`.fuse_adapter`) translates pyfuse3 calls into calls on
:class:`Filesystem` and :class:`Attr` back into ``EntryAttributes``; tests drive this class
directly with the in-memory store and, through real mounts, with a real S3 server.

:class:`Filesystem` is the façade: it builds one mount's parts and keeps the operations that
need several of them. The parts (after Mountpoint's superblock/inode/negative-cache/readdir/
handles split; semantics in docs/SEMANTICS.md), each owning its state and stating its
invariants:

=====================  ==================================================================
:mod:`.context`        the per-mount I/O context: store, options, limiters and deadlines,
                       caches, journal, health
:mod:`.inodes`         the inode table: tree, lookup counts, install/detach/drop, negative
                       knowledge; :mod:`.meta` the s3fs metadata vocabulary and its memo
:mod:`.listing`        directory handles, readdir snapshots, what a LIST page showed
:mod:`.lookup`         lookup and getattr: when and how to ask S3
:mod:`.handles`        open files and the write lifecycle (create/open/write/flush/release)
:mod:`.rename`         rename: check, move the data, re-link
:mod:`.prefetch`       the read path of one open file; :mod:`.upload` its write path
=====================  ==================================================================

This module keeps mkdir/rmdir/unlink, symlink/readlink and setattr (chmod, chown, utime,
truncate), and the mount's start and end (sweeping orphaned uploads, shutdown).

Model:

* Remote state is authoritative except for *local* inodes: directories made by ``mkdir``
  that hold no object yet, and files being written.
* A directory shadows a file of the same name. Keys whose names are empty, ``.``/``..``
  or contain NUL are not shown.

Concurrency: everything runs on one trio thread; code between two ``await`` points is
atomic. Store calls run in worker threads through the mount's :class:`~.context.IoContext`
(its limiters and deadlines). After every ``await`` that talks to S3, tree state is re-read
(another task may have changed it) before it is modified. The parts share state only
through the objects handed to them here (the context, the inode table, one handle
numbering).

Errors: operations raise :class:`FsError`; store errors are translated with their errno.
"""

from __future__ import annotations

import errno
import itertools
import logging
import stat
import time
from collections.abc import Iterator, Mapping
from time import monotonic as _now

import trio

from .context import IoContext
from .errors import FsError
from .handles import Handles
from .inodes import ROOT_INO, Attr, Inode, InodeTable, Kind
from .journal import UploadJournal
from .listing import Listing
from .lookup import Resolver
from .meta import (
    META_ATIME,
    META_CTIME,
    META_GID,
    META_MODE,
    META_MTIME,
    META_UID,
    SYMLINK_MODE,
    meta_time,
)
from .moves import Moves, changes_under
from .options import MountOptions
from .rename import Renamer
from .shared_cache import SharedCache
from .store.base import ObjectInfo, ObjectStore
from .upload import abort_once, retry_abort

__all__ = ["ROOT_INO", "Attr", "Filesystem", "Inode", "Kind"]  # the façade's vocabulary

log = logging.getLogger("zonemount.fs")


class Filesystem:
    """Filesystem operations; one instance per mount (the façade over its parts)."""

    def __init__(
        self,
        store: ObjectStore,
        options: MountOptions,
        nursery: trio.Nursery,
        journal: UploadJournal | None = None,
        shared_cache: SharedCache | None = None,
    ) -> None:
        self.ctx = ctx = IoContext(store, options, nursery, journal, shared_cache)
        self.store, self.opts, self.nursery, self.journal = store, options, nursery, journal
        self.health, self.cache, self.shared_cache = ctx.health, ctx.cache, shared_cache
        self.read_slots, self.max_window = ctx.read_slots, ctx.max_window
        self.run, self._store = ctx.run, ctx.call
        self.tree = InodeTable(options)
        self.inodes = self.tree.inodes
        self._fh_numbers = itertools.count(1)  # file and directory handles: one numbering
        self.listing = Listing(ctx, self.tree, self._fh_numbers)
        self.dirs = self.listing.dirs
        self.resolver = Resolver(ctx, self.tree, self.listing)
        self.moves = Moves(self.tree)  # renames hold what writes keys under what they move
        self.handles = Handles(ctx, self.tree, self.resolver, self._fh_numbers, self.moves)
        self.files = self.handles.files
        self.renamer = Renamer(ctx, self.tree, self.resolver, self.handles, self.moves)

    # -- the inode table -------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        return self.tree.inode(ino)

    def attr(self, node: Inode) -> Attr:
        return self.tree.attr(node)

    def key_of(self, node: Inode) -> str:
        return self.tree.key_of(node)

    def remember(self, ino: int, count: int = 1) -> None:
        self.tree.remember(ino, count)

    def forget(self, ino: int, count: int) -> None:
        self.tree.forget(ino, count)

    # -- lookup / getattr --------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str) -> Attr:
        try:
            node = await self.resolver.resolve(parent_ino, name)
        except FsError as exc:
            if exc.cache_for and self.moves.moving_at_or_above(parent_ino):
                # what a rename learns to be absent mid-way is forgotten when it ends
                # (R-RENAME-DIR-HOLDS-WRITES): the kernel must not keep it either
                exc.cache_for = 0.0
            raise
        node.lookups += 1
        return self.tree.attr(node)

    async def getattr(self, ino: int, *, revalidate: bool = False) -> Attr:
        return await self.resolver.getattr(ino, revalidate=revalidate)

    def getattr_now(self, ino: int) -> Attr | None:
        """:meth:`getattr` when it needs no request (the current attributes), else None."""
        return self.resolver.attr_now(ino)

    # -- directories -------------------------------------------------------------------
    async def opendir(self, ino: int) -> int:
        return await self.listing.opendir(ino)

    async def readdir(self, fh: int, start: int) -> Iterator[tuple[str, Attr]]:
        """Entries from index ``start`` of the handle's snapshot (taken on first call),
        produced lazily. A snapshot of a directory a rename is moving waits for the rename
        (a listing mid-way would show half of the directory's objects)."""
        handle = self.dirs.get(fh)
        if handle is not None and (handle.entries is None or start == 0):
            await self.moves.settled(handle.ino)
        return await self.listing.readdir(fh, start)

    def releasedir(self, fh: int) -> None:
        self.listing.releasedir(fh)

    @changes_under(0)
    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        self.ctx.check_writable()
        parent = self.tree.inode(parent_ino)
        try:
            await self.resolver.resolve(parent_ino, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise FsError(errno.EEXIST)
        parent = self.tree.inode(parent_ino)
        if name in parent.children:
            raise FsError(errno.EEXIST)
        self.tree.check_key(parent, name, "/")
        node = self.tree.add_local(parent, name, Kind.DIR, mode, uid, gid)
        node.listed_count = 1  # known whole: empty, and everything put in it goes through here
        node.marker = False  # R-DIR-MKDIR-LOCAL: no object is written for it
        if self.opts.negative_metadata_ttl > 0:
            # it did not exist a moment ago, so nothing lived under it
            node.complete_until = _now() + self.opts.negative_metadata_ttl
        self.tree.touch_dir(parent)
        node.lookups += 1
        return self.tree.attr(node)

    @changes_under(0)
    async def rmdir(self, parent_ino: int, name: str) -> None:
        self.ctx.check_writable()
        node = await self.resolver.resolve(parent_ino, name)
        parent = self.tree.inode(parent_ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        now = _now()
        if any(
            (c := self.inodes.get(i)) is not None
            and (c.local or c.writer is not None or c.expiry > now)
            for i in node.children.values()
        ):
            # something made here, being written, or known to exist within the metadata
            # TTL (Hadoop's fullyDelete tries rmdir on every directory before emptying it)
            raise FsError(errno.ENOTEMPTY)
        if not node.local and self._known_empty(node, now):
            # listed in full within the negative TTL and emptied here since (``rm -rf``
            # lists each directory before emptying it): its marker goes if that listing
            # showed one, and its folder on a server that keeps emptied directories
            prefix = self.tree.dir_prefix(node)
            if node.marker or await self.ctx.server_keeps_folders(prefix) is not False:
                await self._store(self.store.delete, prefix)
        elif not node.local:
            prefix = self.tree.dir_prefix(node)
            page = await self._store(self.store.list_page, prefix, "/", None, 2)
            others = [o for o in page.objects if o.key != prefix] + page.prefixes
            if others:
                raise FsError(errno.ENOTEMPTY)
            if page.objects:  # only the zero-byte "dir/" marker is left
                if not self.opts.allow_delete:
                    raise FsError(errno.EPERM, "removing a directory marker needs --allow-delete")
                await self._store(self.store.delete, prefix)
        parent = self.tree.inode(parent_ino)
        node.local = False
        for child_ino in list(node.children.values()):
            child = self.inodes.get(child_ino)
            if child is not None:
                self.tree.detach(node, child)
        node.emptied = False
        self.tree.detach(parent, node)
        parent.emptied = True  # R-DIR-EMPTIED-STAYS
        self.tree.touch_dir(parent)
        self.tree.note_absent(parent, name)

    def _known_empty(self, node: Inode, now: float) -> bool:
        """R-DIR-RMDIR without a LIST: the directory was listed in full within the negative
        TTL (``complete_until``: every name under it is in the tree, as a lookup miss there
        trusts - R-META-NEGATIVE-DIR), nothing is left of what it showed, and no operation
        of this mount is writing keys under it (a rename into it, a create). Only with
        ``--allow-delete``: its ``dir/`` marker, if any, is deleted without looking."""
        return (
            self.opts.allow_delete
            and node.complete_until > now
            and not node.children
            and not self.moves.changing_at_or_below(node.ino)
        )

    # -- files -------------------------------------------------------------------------
    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        return await self.handles.create(parent_ino, name, mode, flags, uid, gid)

    async def open(self, ino: int, flags: int) -> int:
        return await self.handles.open(ino, flags)

    async def read(self, fh: int, offset: int, length: int) -> bytes:
        return await self.handles.read(fh, offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self.handles.write(fh, offset, data)

    def set_opener(self, fh: int, pid: int) -> None:
        """Record the process that opened ``fh`` for writing (the FUSE request's pid)."""
        self.handles.set_opener(fh, pid)

    async def flush(self, fh: int, *, force: bool = False, at_release: bool = False) -> None:
        """close(): complete the upload; the object is visible when close() returns."""
        await self.handles.flush(fh, force=force, at_release=at_release)

    async def fsync(self, fh: int) -> None:
        await self.handles.fsync(fh)

    async def release(self, fh: int) -> None:
        await self.handles.release(fh)

    @changes_under(0)
    async def unlink(self, parent_ino: int, name: str) -> None:
        self.ctx.check_writable()
        if not self.opts.allow_delete:
            raise FsError(errno.EPERM, "deleting needs --allow-delete")
        node = await self.resolver.resolve(parent_ino, name)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.writer is not None:
            await self.handles.finish_closed_writer(node)
            node = await self.resolver.resolve(parent_ino, name)
        if node.writer is not None:
            raise FsError(errno.EBUSY, "file is being written")
        await self._store(self.store.delete, self.tree.key_of(node))
        parent = self.tree.inode(parent_ino)
        self.tree.detach(parent, node)
        parent.emptied = True  # R-DIR-EMPTIED-STAYS
        self.tree.touch_dir(parent)
        self.tree.note_absent(parent, name)

    # -- symlinks ----------------------------------------------------------------------
    @changes_under(0)
    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        """A symlink as s3fs-fuse stores one: the object's body is the target, its
        ``x-amz-meta-mode`` is S_IFLNK|0777, with owner and times (docs/SEMANTICS.md)."""
        self.ctx.check_writable()
        try:
            await self.resolver.resolve(parent_ino, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise FsError(errno.EEXIST)
        parent = self.tree.inode(parent_ino)
        if name in parent.children:
            raise FsError(errno.EEXIST)
        if parent.detached:  # removed or replaced: its key may be another directory's now
            raise FsError(errno.ENOENT, "the directory was removed")
        self.tree.check_key(parent, name)
        key = self.tree.dir_prefix(parent) + name
        now = meta_time(time.time())
        meta = {
            META_MODE: str(SYMLINK_MODE),
            META_UID: str(uid),
            META_GID: str(gid),
            META_MTIME: now,
            META_CTIME: now,
            META_ATIME: now,
        }
        info = await self._store(self.store.put, key, target, meta)
        parent = self.tree.inode(parent_ino)  # re-read after await
        node = self.tree.install(
            parent, name, Kind.SYMLINK, ObjectInfo(key, len(target), info.etag, info.mtime, meta)
        )
        node.target = target
        node.published_at = _now()
        self.tree.touch_dir(parent)
        self.tree.mark_remote_ancestors(node)
        node.lookups += 1
        return self.tree.attr(node)

    async def readlink(self, ino: int) -> bytes:
        node = self.tree.inode(ino)
        if node.kind is not Kind.SYMLINK:
            raise FsError(errno.EINVAL)
        if node.target is None and node.size == 0:
            return b""
        if node.target is None:
            etag = node.etag
            data = await self._store(
                self.store.get_range, self.tree.key_of(node), 0, node.size, etag or None
            )
            node = self.tree.inode(ino)
            if node.etag == etag:
                node.target = data
            return data
        return node.target

    # -- setattr -----------------------------------------------------------------------
    @changes_under(0)
    async def setattr(
        self,
        ino: int,
        *,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: float | None = None,
        atime: float | None = None,
    ) -> Attr:
        """truncate (to 0 only), chmod, chown, utime. Mode, owner and mtime of a file that
        exists in S3 are persisted as its metadata (s3fs-compatible); of a file being
        written they go with its upload; a directory keeps them in the mount."""
        self.ctx.check_writable()
        node = self.tree.inode(ino)
        if size is not None and node.kind is Kind.FILE:
            node = await self._truncate(ino, node, size)
        changed = self._change(node, mode=mode, uid=uid, gid=gid, mtime=mtime)
        if atime is not None:
            node.atime = atime
        node.ctime = time.time()
        if changed and node.kind is not Kind.DIR and node.writer is None and not node.local:
            node = await self._persist_metadata(ino, node)
        elif changed and node.writer is not None:
            node.writer.metadata = self.tree.new_metadata(node)
        return self.tree.attr(node)

    async def _truncate(self, ino: int, node: Inode, size: int) -> Inode:
        """Truncate a file to ``size``: only to 0 (an empty object replaces it), never
        while it is written; the inode (re-read when the object was replaced)."""
        current = node.writer.size if node.writer is not None else node.size
        if size == current:
            return node
        if size > current:  # Linux truncate(2): the file system cannot extend files
            raise FsError(errno.EPERM, "files cannot be extended (only truncated to 0)")
        if size != 0:  # POSIX ftruncate: not a file on which this is possible
            raise FsError(errno.EINVAL, "only truncation to 0 is supported")
        if node.writer is not None:
            raise FsError(errno.EINVAL, "cannot truncate a file while it is written")
        if not self.opts.allow_overwrite:
            raise FsError(errno.EPERM, "truncating needs --allow-overwrite")
        meta = dict(node.metadata)
        now = time.time()
        if META_MTIME in meta:
            meta[META_MTIME] = meta_time(now)
        info = await self._store(self.store.put, self.tree.key_of(node), b"", meta)
        node = self.tree.inode(ino)
        node.size, node.etag, node.metadata = 0, info.etag, meta
        node.mtime = node.ctime = now  # a truncation is a write
        return node

    def _change(
        self,
        node: Inode,
        *,
        mode: int | None,
        uid: int | None,
        gid: int | None,
        mtime: float | None,
    ) -> bool:
        """Apply chmod/chown/utime(mtime) to the inode; True when anything changed."""
        changed = False
        if mode is not None and stat.S_IMODE(mode) != self.tree.attr(node).mode & 0o7777:
            node.perm = stat.S_IMODE(mode)
            changed = True
        if uid is not None and uid != self.tree.attr(node).uid:
            node.uid = uid
            changed = True
        if gid is not None and gid != self.tree.attr(node).gid:
            node.gid = gid
            changed = True
        if mtime is not None and mtime != node.mtime:
            node.mtime = mtime
            node.metadata[META_MTIME] = meta_time(mtime)
            changed = True
        return changed

    async def _persist_metadata(self, ino: int, node: Inode) -> Inode:
        """Write the inode's mode/owner/times as its object's metadata (a server-side copy
        onto itself), keeping the user metadata it had; the inode, re-read."""
        key = self.tree.key_of(node)
        known: Mapping[str, str] = node.metadata
        memo = self.tree.memo.get(key)
        if node.etag is not None and (memo is None or memo[0] not in (None, node.etag)):
            # known from a listing only (no user metadata): the copy replaces metadata,
            # so read what there is first rather than drop it
            known = (await self._store(self.store.head, key)).metadata or {}
            node = self.tree.inode(ino)
        meta = {
            k: v for k, v in known.items() if k not in (META_MODE, META_UID, META_GID)
        } | self.tree.new_metadata(node)
        # the copy gets a new LastModified: keep the file's mtime (chmod is no write)
        meta.setdefault(META_MTIME, meta_time(node.mtime))
        meta[META_CTIME] = meta_time(node.ctime)
        await self._store(self.store.copy, key, key, node.size, meta)
        node = self.tree.inode(ino)
        node.metadata = meta
        node.etag = None  # unknown after copy; the next lookup refreshes it
        node.expiry = 0.0
        self.tree.memo.put(self.tree.key_of(node), None, meta)
        return node

    # -- rename ------------------------------------------------------------------------
    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        """rename(2): see :mod:`.rename`."""
        await self.renamer.rename(old_parent, old_name, new_parent, new_name, flags)

    # -- mount -------------------------------------------------------------------------
    async def sweep_orphans(self, orphans: Mapping[str, str]) -> None:
        """Abort the multipart uploads that a dead FUSE server of this prefix on this host
        left behind (proved by its journal: see :mod:`.journal`), retrying failures."""
        for upload_id, key in orphans.items():
            log.info("aborting the upload of %r left by a previous mount", key)
            if not await abort_once(self.ctx, key, upload_id):
                self.nursery.start_soon(retry_abort, self.ctx, key, upload_id)

    async def shutdown(self) -> None:
        """Abort uploads of files still open (nothing partial becomes visible); drop the cache."""
        await self.ctx.close_caches()
        await self.handles.close_all()
