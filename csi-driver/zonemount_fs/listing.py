"""Directory listing: opendir/readdir snapshots and what a LIST tells about a directory.

Owns the directory handles and every piece of state a LIST leaves on a directory inode:

* a readdir snapshot (:meth:`Listing.readdir`): the remote entries of one full listing
  merged with this mount's local ones, taken at offset 0 and served by index after that;
* ``complete_until``: after a full listing, every name that exists is in the tree until
  the negative TTL ends (R-META-NEGATIVE-DIR) - a lookup miss needs no request;
* ``names``/``dir_names``/``names_until``/``large``: the names one LIST page of at most
  :data:`RELIST_KEYS` keys showed, which answer lookup misses in small directories
  (:meth:`Listing.page_names`); a directory whose page was not the whole of it is ``large``
  and asked name by name instead;
* ``listed_count``/``revalidations``/``relisting``: a walk of a listed directory that
  outlasts the TTL (``ls -l``) lists it again once revalidating its entries one by one would
  cost more - at the first expired entry for a directory one small page holds
  (:meth:`Listing.relisted`, R-META-RELIST); one listing serves every task that asks
  meanwhile.

Invariants: a listing never hides what only this mount has - local inodes, files being
written, objects this mount published after the listing started (``published_at``) and
directories kept as local stay in the snapshot; remote entries the listing no longer shows
are detached from the tree. Names that are not valid names (:func:`~.inodes.valid_name`) or
that contain ``/`` are not shown.

Concurrency: one trio thread; the directory inode is re-read by number after the LIST
returns (another task may have changed or dropped it meanwhile) before anything is merged,
and a LIST answered for the prefix the directory had before a rename re-linked it is not
applied (a readdir lists again, a page of names is not kept).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from time import monotonic as _now

import trio

from .context import IoContext
from .errors import FsError
from .inodes import Attr, Inode, InodeTable, Kind, valid_name
from .meta import is_symlink_meta
from .store import ranged
from .store.base import ListPage, ObjectInfo, list_all

# A lookup miss in a directory listed in one page of at most this many entries lists the
# directory (one request) and answers its siblings' misses from that (R-META-NEGATIVE-DIR).
RELIST_KEYS = 64
# Entries of a listed directory larger than RELIST_KEYS revalidated one by one (HEAD + LIST
# each) after their TTL, before the directory is listed again instead: at least this many,
# and at least twice the pages a listing costs, so relisting never costs more than the
# per-name requests it saves (R-META-RELIST: `ls -l` of a large directory that outlasts the
# TTL). A smaller directory is listed again at the first expired entry (one request).
RELIST_AFTER = 16
LIST_PAGE_KEYS = 1000
# Ranges of a relisted directory fetched at once (:mod:`.store.ranged`). Measured on 2 shared
# cores: with 20 ms per request (S3-like) 4 at once took 0.60x the sequential listing's wall
# time and all at once 0.68x; on loopback with the CPU saturated, 4 were even (1.02x) and all
# at once 1.19x (more pages parsed side by side than cores).
RANGES_AT_ONCE = 4
# A listing answered for the prefix a directory had before a rename is done again under the
# new one, at most this many times.
_RENAMED_RETRIES = 3


# A full listing: objects by name, subdirectory names, where to split the next one.
#: a full listing: files by name, subdirectories, where to split the next listing, and
#: whether the directory's own ``dir/`` marker object was there
_Listed = tuple[dict[str, ObjectInfo], frozenset[str] | set[str], tuple[str, ...], bool]
_NONE: _Listed = ({}, frozenset(), (), False)  # a local directory's: nothing (never mutated)


@dataclass(eq=False)
class DirHandle:
    ino: int
    #: the snapshot, with the inodes themselves: one the kernel forgets while it reads the
    #: listing page by page is put back when handed out (:meth:`InodeTable.revive`)
    entries: list[tuple[str, Inode]] | None = None


class Listing:
    """Directory handles and the listing state of directory inodes."""

    def __init__(self, ctx: IoContext, tree: InodeTable, fh_numbers: Iterator[int]) -> None:
        self.ctx = ctx
        self.tree = tree
        self._fh_numbers = fh_numbers  # shared with the file handles: one numbering
        self.dirs: dict[int, DirHandle] = {}

    async def opendir(self, ino: int) -> int:
        node = self.tree.inode(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        fh = next(self._fh_numbers)
        self.dirs[fh] = DirHandle(ino)
        return fh

    async def readdir(self, fh: int, start: int) -> Iterator[tuple[str, Attr]]:
        """Entries from index ``start`` of the handle's snapshot (taken on first call),
        produced lazily: the kernel takes a page (a few dozen entries) per call, so building
        every remaining entry's attributes each time made listing quadratic."""
        handle = self.dirs.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        if handle.entries is None or start == 0:
            snapshot = await self._snapshot(handle.ino)
            inodes = self.tree.inodes
            handle.entries = [(name, inodes[ino]) for name, ino in snapshot]
        return self._entries_from(handle, start)

    def _entries_from(self, handle: DirHandle, start: int) -> Iterator[tuple[str, Attr]]:
        """Every entry from ``start`` on, none skipped: offsets are snapshot indexes."""
        entries = handle.entries or []
        for index in range(start, len(entries)):
            name, node = entries[index]
            if self.tree.inodes.get(node.ino) is not node:
                self.tree.revive(self.tree.inodes.get(handle.ino), name, node)
            yield name, self.tree.attr(node)

    def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def _snapshot(self, ino: int) -> list[tuple[str, int]]:
        """List the directory in full and bring the tree in line with it; its entries."""
        for _ in range(_RENAMED_RETRIES):
            dir_node = self.tree.inode(ino)
            listed_at, prefix = _now(), self.tree.dir_prefix(dir_node)
            listed = await self._list(dir_node) if not dir_node.local else _NONE
            files, dirs, splits, marker = listed
            dir_node = self.tree.inode(ino)  # re-read after await
            if self.tree.dir_prefix(dir_node) == prefix:
                break  # else renamed while listed: the answer is for its old prefix
        else:
            raise FsError(errno.ESTALE, "the directory was renamed during every listing")
        if self.ctx.opts.negative_metadata_ttl > 0:
            dir_node.complete_until = listed_at + self.ctx.opts.negative_metadata_ttl
        dir_node.large = len(files) + len(dirs) > RELIST_KEYS
        dir_node.listed_count = max(1, len(files) + len(dirs))
        dir_node.revalidations = 0
        dir_node.list_splits = splits
        dir_node.marker = marker
        names: dict[str, int] = {}
        expiry = _now() + self.ctx.opts.metadata_ttl
        for name in sorted(dirs | files.keys()):
            entry = files.get(name) if name not in dirs else None
            if entry is None:
                node = self.tree.install(dir_node, name, Kind.DIR, None)
            elif (known := self.tree.listed_unchanged(dir_node, name, entry, expiry)) is not None:
                node = known  # the warm path: an object this mount knows, unchanged
            else:
                kind = self._listed_kind(dir_node, name, entry)
                node = self.tree.install(dir_node, name, kind, entry)
            names[name] = node.ino
        for name, child_ino in sorted(dir_node.children.items()):
            child = self.tree.inodes.get(child_ino)
            if child is not None and name not in names and self._kept(child, listed_at):
                names[name] = child_ino
        # Remote entries that vanished are dropped from the tree (not local ones), also from
        # a directory kept as local: S3 showed nothing under it, and a name the listing
        # does not show must not make its rmdir ENOTEMPTY (``make demo``'s rmtree did).
        for name, child_ino in list(dir_node.children.items()):
            child = self.tree.inodes.get(child_ino)
            if child is not None and name not in names:
                self.tree.detach(dir_node, child)
        return list(names.items())

    async def _list(self, dir_node: Inode) -> _Listed:
        """The directory's objects (by name) and subdirectories, from a full listing, and
        where to split its next listing. A directory listed before is listed in ranges at
        once, split where the last listing said (:mod:`.store.ranged`; general-purpose
        buckets, whose listings are in key order)."""
        files: dict[str, ObjectInfo] = {}
        dirs: set[str] = set()
        prefix = self.tree.dir_prefix(dir_node)
        store = self.ctx.store
        splits = dir_node.list_splits
        if store.is_directory_bucket:
            page = await self._list_all(prefix)
        elif splits and splits[0].startswith(prefix) and splits[-1].startswith(prefix):
            call = self.ctx.call

            async def fetch(start_after: str | None, token: str | None) -> ListPage:
                return await call(store.list_page, prefix, "/", token, LIST_PAGE_KEYS, start_after)

            page = await ranged.list_ranges(fetch, splits, parallel=RANGES_AT_ONCE)
        else:
            page = await self._list_all(prefix)
        marker = False
        for info in page.objects:
            name = info.key[len(prefix) :]
            if valid_name(name) and "/" not in name:
                files[name] = info
            elif not name:
                marker = True
        for sub in page.prefixes:
            name = sub[len(prefix) :].rstrip("/")
            if valid_name(name) and "/" not in name:
                dirs.add(name)
        next_splits = () if store.is_directory_bucket else ranged.split_keys(page, LIST_PAGE_KEYS)
        return files, dirs, next_splits, marker

    async def _list_all(self, prefix: str) -> ListPage:
        """Every page of the directory's listing, one after the other: on the trio thread
        page by page where the store's ListObjectsV2 has a native twin (``rm -rf`` lists
        each directory twice; a worker thread each cost a hand-off both ways), else
        :func:`~.store.base.list_all` in a worker thread."""
        store, call = self.ctx.store, self.ctx.call
        if not self.ctx.is_native(store.list_page):
            return await call(list_all, store, prefix, "/")
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token: str | None = None
        while True:
            page = await call(store.list_page, prefix, "/", token, LIST_PAGE_KEYS)
            objects += page.objects
            prefixes += page.prefixes
            if (token := page.next_token) is None:
                return ListPage(objects, prefixes, None)

    def _kept(self, child: Inode, listed_at: float) -> bool:
        """Does an entry the listing did not show stay? Local ones, files being written,
        objects published after the listing started, directories kept as local."""
        return bool(
            child.local
            or child.writer
            or child.published_at >= listed_at
            or self.tree.keep_as_local(child)
        )

    def _listed_kind(self, parent: Inode, name: str, info: ObjectInfo | None) -> Kind:
        """A listing carries no metadata: an object is a symlink if this mount knows the
        object (same ETag) to be one, from its inode or the metadata memo; else a file."""
        if info is None:
            return Kind.FILE
        node = self.tree.child(parent, name)
        if node is not None and node.kind is Kind.SYMLINK and node.etag in (None, info.etag):
            return Kind.SYMLINK
        memo = self.tree.memo.get(info.key)
        if memo is not None and memo[0] in (None, info.etag) and is_symlink_meta(memo[1]):
            return Kind.SYMLINK
        return Kind.FILE

    async def relisted(self, parent: Inode) -> bool:
        """Count one expired entry of ``parent`` being revalidated; once such one-by-one
        revalidations would cost more than listing ``parent`` again (at once for a directory
        one small LIST page holds: one request instead of HEAD + LIST; after
        ``RELIST_AFTER`` for larger ones), list it (one listing for every task that asks
        meanwhile) so the rest come from that. True when ``parent`` was listed again (the
        caller re-reads its tree)."""
        if parent.kind is not Kind.DIR or parent.local or not parent.listed_count:
            return False
        if parent.relisting is not None:
            await parent.relisting.wait()
            return True
        parent.revalidations += 1
        entries = max(parent.listed_count, len(parent.children))  # it may have grown since
        pages = -(-entries // LIST_PAGE_KEYS)
        small = entries <= RELIST_KEYS
        if parent.revalidations < (1 if small else max(RELIST_AFTER, 2 * pages)):
            return False
        done = parent.relisting = trio.Event()
        try:
            await self._snapshot(parent.ino)
        finally:
            parent.relisting = None
            done.set()
        return True

    async def page_names(self, parent: Inode) -> bool:
        """Make ``parent.names`` (and ``dir_names``) current: the names of one LIST page,
        valid for the negative TTL. False when one page does not hold the directory (it is
        then ``large``: lookups in it ask S3 name by name)."""
        if parent.names is not None and parent.names_until > _now():
            return True
        prefix, listed_at = self.tree.dir_prefix(parent), _now()
        page = await self.ctx.call(self.ctx.store.list_page, prefix, "/", None, RELIST_KEYS)
        if self.tree.dir_prefix(parent) != prefix:
            return False  # renamed while listed: the caller asks S3 under the new name
        if page.next_token:
            parent.large = True
            return False
        files = {o.key[len(prefix) :] for o in page.objects}
        dirs = {p[len(prefix) :].rstrip("/") for p in page.prefixes}
        parent.names, parent.dir_names = frozenset(files | dirs), frozenset(dirs)
        parent.listed_count = max(1, len(files | dirs))
        parent.names_until = listed_at + self.ctx.opts.negative_metadata_ttl
        return True
