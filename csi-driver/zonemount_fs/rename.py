"""rename(2): check, move the data, re-link the tree - in that order.

Owns the rename of a file, symlink or directory (R-RENAME-* in docs/SEMANTICS.md):

1. **Check** (:meth:`Renamer.rename`, :meth:`Renamer._target`): the source and the target as
   they are now (files closed before any write are completed first, see
   :meth:`~.handles.Handles.settle`), the replace rules (RENAME_NOREPLACE, EISDIR/ENOTDIR,
   ``--allow-overwrite``, an empty target directory), key lengths, not into itself, and
   nothing under the source being written (EBUSY).
2. **Move the data**: one object (RenameObject on a directory bucket where the service has
   it, else copy then delete), or every object under a remote directory's prefix (copies -
   RenameObjects on a directory bucket that has them - at most :data:`RENAME_CONCURRENCY`
   at once, then the copied sources' deletes in one DeleteObjects request per 1,000 keys; a
   local directory has none). Sources are deleted only after every copy succeeded, so a
   failure or crash leaves both names, never neither (a crash among RenameObjects leaves
   each object under one of them; tests kill the FUSE server to show it); a failed copy
   phase deletes what it copied and renames back what it renamed (best effort), so a failed
   directory rename leaves the tree under its old name on either kind of bucket. On a
   server that keeps emptied directories as folders (SeaweedFS) the source's folders go
   too (:meth:`Renamer._drop_folders`).
3. **Re-link** the inode under its new name; its subtree's keys follow (keys are computed
   from the parent chain). The old parent is marked emptied (R-DIR-EMPTIED-STAYS) and the
   old name remembered absent.

Not atomic on general-purpose buckets: between copy and delete both names exist.

Concurrency: one trio thread; each step re-reads the parents it needs (by number) after its
awaits. The kernel serializes renames with other operations on the same names, but not
with everything (see the notes in :meth:`Renamer.rename`).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from time import monotonic as _now
from typing import TypeVar

import trio

from .context import IoContext
from .errors import FsError, StoreError
from .handles import Handles
from .inodes import ROOT_INO, Inode, InodeTable, Kind, valid_name
from .lookup import Resolver
from .moves import Moves, changes_under
from .names import MAX_KEY_BYTES
from .store.base import ObjectInfo, list_all

log = logging.getLogger("zonemount.fs")

# Renames of directories copy this many objects at once.
RENAME_CONCURRENCY = 16
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
T = TypeVar("T")


@dataclass
class _Moved:
    """What a directory rename's copy phase moved: ``(source, target)`` pairs copied (the
    source still there) and renamed (RenameObject: the source gone)."""

    copied: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)


class Renamer:
    """rename over the inode table, the resolver and the open files of one mount."""

    def __init__(
        self,
        ctx: IoContext,
        tree: InodeTable,
        resolver: Resolver,
        handles: Handles,
        moves: Moves,
    ) -> None:
        self.ctx = ctx
        self.tree = tree
        self.resolver = resolver
        self.handles = handles
        self.moves = moves

    @changes_under(0, 2)  # old_parent, new_parent
    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        """rename(2): check, move the data (one object, or every object under a directory's
        prefix), then re-link the tree. Steps in that order; each re-reads what it needs
        after its awaits.

        From the EBUSY check to the re-link, the source (and the target it replaces) is
        marked moving (:mod:`.moves`): an operation that would write a key under it (a
        create in a directory being moved, a symlink, an unlink, an open for writing)
        waits for the rename to end and then uses the new name; those already under way
        end before the data moves (a file they left being written makes it EBUSY)."""
        self.ctx.check_writable()
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        await self.handles.settle(await self.resolver.resolve(old_parent, old_name))
        src = await self.resolver.resolve(old_parent, old_name)
        if not valid_name(new_name) or "/" in new_name:
            raise FsError(errno.EINVAL)
        below = self.tree.deepest(src) if src.kind is Kind.DIR else 0
        suffix = "/" if src.kind is Kind.DIR else ""
        self.tree.check_key(self.tree.inode(new_parent), new_name, suffix, below)
        dst = await self._target(src, new_parent, new_name, flags)
        if dst is src:
            return
        self._check_not_into_itself(src, new_parent)
        async with self.moves.moving(src.ino, *([dst.ino] if dst is not None else [])):
            if self._busy(src) or (dst is not None and dst.writer is not None):
                raise FsError(errno.EBUSY, "a file under the source is being written")
            moved_at = _now()
            await self._move_data(src, new_parent, new_name)
            await self._relink(src, dst, old_parent, old_name, new_parent, new_name, moved_at)

    # -- 1. check ------------------------------------------------------------------------
    async def _target(self, src: Inode, new_parent: int, new_name: str, flags: int) -> Inode | None:
        """What ``new_name`` is now, after checking that ``src`` may replace it."""
        try:
            await self.handles.settle(await self.resolver.resolve(new_parent, new_name))
            dst = await self.resolver.resolve(new_parent, new_name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return None
        if dst is src:
            return dst
        if flags & RENAME_NOREPLACE:
            raise FsError(errno.EEXIST)
        if src.kind is not Kind.DIR and dst.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if src.kind is Kind.DIR and dst.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if dst.kind is not Kind.DIR and not self.ctx.opts.allow_overwrite:
            raise FsError(errno.EPERM, "replacing a file by rename needs --allow-overwrite")
        if dst.kind is Kind.DIR:
            await self._require_empty(dst)
        if dst.writer is not None:
            raise FsError(errno.EBUSY)
        return dst

    def _check_not_into_itself(self, src: Inode, new_parent: int) -> None:
        """Moving a directory into its own subtree is impossible."""
        probe = self.tree.inode(new_parent)
        while True:
            if probe.ino == src.ino:
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if probe.ino == ROOT_INO:
                return
            probe = self.tree.inode(probe.parent)

    def _busy(self, node: Inode) -> bool:
        """Is ``node``, or anything under it, being written?"""
        if node.writer is not None:
            return True
        return any(
            (c := self.tree.inodes.get(i)) is not None and self._busy(c)
            for i in node.children.values()
        )

    async def _require_empty(self, node: Inode) -> None:
        """ENOTEMPTY unless directory ``node`` holds nothing, locally or in S3 (but its
        own marker object)."""
        if any(
            (c := self.tree.inodes.get(i)) is not None and (c.local or c.writer is not None)
            for i in node.children.values()
        ):
            raise FsError(errno.ENOTEMPTY)
        if node.local:
            return
        prefix = self.tree.dir_prefix(node)
        page = await self.ctx.call(self.ctx.store.list_page, prefix, "/", None, 2)
        if [o for o in page.objects if o.key != prefix] or page.prefixes:
            raise FsError(errno.ENOTEMPTY)

    # -- 2. move the data ----------------------------------------------------------------
    async def _move_data(self, src: Inode, new_parent: int, new_name: str) -> None:
        """Move the objects: one for a file or symlink, every one under a remote directory's
        prefix (a local directory has none)."""
        if src.kind is Kind.DIR and src.local:
            return
        target = self.tree.dir_prefix(self.tree.inode(new_parent)) + new_name
        if src.kind is Kind.DIR:
            await self._move_prefix(self.tree.dir_prefix(src), target + "/")
            return
        src_key = self.tree.key_of(src)
        await self._move_object(src_key, target, src.size)
        memo = self.tree.memo.pop(src_key)
        if memo is not None:
            self.tree.memo.put(target, memo[0], memo[1])

    async def _move_object(self, src: str, dst: str, size: int) -> None:
        """Rename one object: RenameObject where the bucket has it, else copy then delete.

        The source is deleted only after the copy succeeded, so a crash in between leaves
        both names (never neither)."""
        if not await self._renamed(src, dst):
            await self.ctx.call(self.ctx.store.copy, src, dst, size)
            await self.ctx.call(self.ctx.store.delete, src)
        self.ctx.retained.moved(src, dst)

    async def _renamed(self, src: str, dst: str) -> bool:
        """RenameObject ``src`` to ``dst`` on a directory bucket whose endpoint has it: True
        once it moved; False where there is none (the caller copies)."""
        store = self.ctx.store
        if not store.is_directory_bucket:
            return False
        try:
            await self.ctx.run(store.rename, src, dst)
        except StoreError as exc:
            if exc.errno != errno.ENOTSUP:
                raise FsError(exc.errno, str(exc)) from None
            return False
        return True

    async def _move_prefix(self, src_prefix: str, dst_prefix: str) -> None:
        """Move every object under ``src_prefix`` to ``dst_prefix``: all copies (or
        RenameObjects) first, then the copied sources' deletes; after a failed copy or
        rename, what moved is moved back."""
        page = await self.ctx.call(list_all, self.ctx.store, src_prefix, None)
        objects = page.objects
        _check_growth(objects, src_prefix, dst_prefix)
        moved, errors = await self._copy_all(objects, src_prefix, dst_prefix)
        if errors:
            await self._roll_back(moved)
            raise errors[0]
        if moved.copied:  # RenameObject left nothing behind; copies left their sources
            copied = {src for src, _ in moved.copied}  # deleted in key order, not copy order
            errors = await self._delete_all([o.key for o in objects if o.key in copied])
            if errors:
                raise errors[0]
        self.ctx.retained.moved_prefix(src_prefix, dst_prefix)
        await self._drop_folders(src_prefix, objects)

    async def _copy_all(
        self, objects: list[ObjectInfo], src_prefix: str, dst_prefix: str
    ) -> tuple[_Moved, list[FsError]]:
        """Copy each object - rename it on a directory bucket whose endpoint has
        RenameObject; no source is deleted here - and after the first failure start no new
        one. What moved, and the errors."""
        moved = _Moved()
        errors: list[FsError] = []

        async def copy_one(info: ObjectInfo) -> None:
            if errors:
                return
            target = dst_prefix + info.key[len(src_prefix) :]
            try:
                if await self._renamed(info.key, target):
                    moved.renamed.append((info.key, target))
                else:
                    await self.ctx.call(self.ctx.store.copy, info.key, target, info.size)
                    moved.copied.append((info.key, target))
            except FsError as exc:
                errors.append(exc)

        await _each(objects, copy_one)
        return moved, errors

    async def _roll_back(self, moved: _Moved) -> None:
        """Undo a partial move (best effort): delete the copies (their sources were never
        touched) and rename the renamed objects back."""
        for _, target in moved.copied:
            try:
                await self.ctx.run(self.ctx.store.delete, target)
            except StoreError as exc:
                log.warning("rename rollback: could not delete %r: %s", target, exc)
        for src, target in moved.renamed:
            try:
                await self.ctx.run(self.ctx.store.rename, target, src)
            except StoreError as exc:
                log.warning("rename rollback: could not move %r back: %s", target, exc)

    async def _delete_all(self, keys: list[str]) -> list[FsError]:
        """Delete every copied source in as few requests as the store allows
        (DeleteObjects); the error, if any key failed."""
        try:
            await self.ctx.call(self.ctx.store.delete_many, keys)
        except FsError as exc:
            return [exc]
        return []

    async def _drop_folders(self, src_prefix: str, objects: list[ObjectInfo]) -> None:
        """Delete the entries a server keeps for directories whose last object is gone, so
        the moved directory does not show again under its old name (R-RENAME-DIR).

        SeaweedFS keeps an emptied directory as a folder: a listing shows it (``dir/``), and
        a HEAD of ``dir/`` finds it, until it is deleted; AWS S3 has no such entries (a real
        ``dir/`` marker is an object that :meth:`_move_prefix` listed and moved). Which kind
        of server this is shows in one HEAD of the deepest emptied directory, at the mount's
        first directory rename or rmdir, and is remembered
        (:meth:`~.context.IoContext.server_keeps_folders`): on AWS S3 that HEAD is the only
        cost.
        The entries go deepest first, one DeleteObjects request per depth (a folder that
        still holds a folder is not removed);
        deleting a key that holds nothing is harmless, and a folder another client wrote
        into meanwhile is not removed by deleting its key. Best effort: the data moved
        already, so a failure leaves an empty folder behind (logged), not an error."""
        ctx = self.ctx
        if ctx.keeps_folders is False:
            return
        levels = _folders(src_prefix, objects)
        if not levels or not await ctx.server_keeps_folders(levels[max(levels)][0]):
            return
        for depth in sorted(levels, reverse=True):  # one request per level (DeleteObjects)
            try:
                await ctx.run(ctx.store.delete_many, levels[depth])
            except StoreError as exc:  # the data moved: an empty folder left is no error
                log.warning("rename: could not delete an emptied folder: %s", exc)

    # -- 3. re-link ----------------------------------------------------------------------
    async def _relink(
        self,
        src: Inode,
        dst: Inode | None,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
        moved_at: float,
    ) -> None:
        """Re-link ``src`` under its new name (both parents re-read after the data moved,
        which started at ``moved_at``)."""
        old_p, new_p = self.tree.inode(old_parent), self.tree.inode(new_parent)
        if dst is not None:
            if dst.kind is Kind.DIR and not dst.local:
                marker = self.tree.dir_prefix(dst)
                await self.ctx.call(self.ctx.store.delete, marker)
            self.tree.detach(new_p, dst)
        self.tree.unlink(old_p, src, old_name)
        old_p.emptied = True  # R-DIR-EMPTIED-STAYS
        displaced = self.tree.child(new_p, new_name)
        if displaced is not None and displaced is not src:
            self.tree.detach(new_p, displaced)
        src.parent, src.name = new_p.ino, new_name
        self.tree.link(new_p, new_name, src)
        if src.kind is Kind.DIR:
            self.tree.forget_absent_since(src, moved_at)  # misses seen while it moved
        new_p.negative.pop(new_name, None)
        self.tree.note_absent(old_p, old_name)
        if not src.local:
            src.expiry = _now() + self.ctx.opts.metadata_ttl
            self.tree.mark_remote_ancestors(src)
        src.ctime = time.time()
        src.published_at = _now()
        self.tree.touch_dir(old_p)
        self.tree.touch_dir(new_p)


def _folders(src_prefix: str, objects: list[ObjectInfo]) -> dict[int, list[str]]:
    """The directory keys (``a/b/``) at and under ``src_prefix`` that hold the moved
    objects, by depth (``/`` count); markers that were objects themselves are left out."""
    found = {src_prefix}
    for info in objects:
        end = info.key.rfind("/")
        while end >= len(src_prefix):
            folder = info.key[: end + 1]
            if folder in found:
                break
            found.add(folder)
            end = info.key.rfind("/", 0, end)
    markers = {info.key for info in objects}
    levels: dict[int, list[str]] = {}
    for folder in sorted(found - markers):
        levels.setdefault(folder.count("/"), []).append(folder)
    return levels


def _check_growth(objects: list[ObjectInfo], src_prefix: str, dst_prefix: str) -> None:
    """ENAMETOOLONG when a key under the renamed directory would outgrow S3's limit."""
    growth = len(dst_prefix.encode()) - len(src_prefix.encode())
    longest = max((len(info.key.encode()) for info in objects), default=0) + growth
    if longest > MAX_KEY_BYTES:
        raise FsError(
            errno.ENAMETOOLONG,
            f"a key under the renamed directory would be {longest} bytes; "
            f"S3 allows {MAX_KEY_BYTES}",
        )


async def _each(items: Iterable[T], fn: Callable[[T], Awaitable[None]]) -> None:
    """Run ``fn`` on every item, at most :data:`RENAME_CONCURRENCY` at once."""
    limit = trio.Semaphore(RENAME_CONCURRENCY)

    async def one(item: T) -> None:
        async with limit:
            await fn(item)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
