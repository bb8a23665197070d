"""The filesystem core: POSIX-ish operations over an ObjectStore, with no FUSE in it.

The FUSE adapter (:mod:`.fuse_adapter`) translates pyfuse3 calls into calls on
:class:`Filesystem` and :class:`Attr` back into ``EntryAttributes``; tests drive this class
directly with the in-memory store and, through real mounts, with a real S3 server.

Model (after Mountpoint, see docs/SEMANTICS.md):

* The inode table is explicit. An inode is a (parent, name) in the tree; its key is computed
  from the parent chain, so renaming a directory re-keys its whole subtree at once. Lookup
  counts follow the kernel (``lookup``/``create``/``mkdir``/``readdir`` add, ``forget``
  subtracts); an inode is dropped when its count is zero and nothing local depends on it.
* Remote state is authoritative except for *local* inodes: directories made by ``mkdir``
  that hold no object yet, and files being written. Remote attributes are cached until
  ``expiry`` (``--metadata-ttl``); "no such name" is cached per directory
  (``--negative-metadata-ttl``).
* A directory shadows a file of the same name. Keys whose names are empty, ``.``/``..``
  or contain NUL are not shown.

Concurrency: everything runs on one trio thread; code between two ``await`` points is
atomic. Store calls run in worker threads through the mount's :class:`~.context.IoContext`
(its limiters and deadlines).
After every ``await`` that talks to S3, tree state is re-read (another task may have
changed it) before it is modified.

Errors: operations raise :class:`FsError`; store errors are translated with their errno.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import trio

from . import metrics, procinfo
from .context import IoContext
from .errors import FsError, StoreError
from .journal import UploadJournal
from .names import MAX_KEY_BYTES, MAX_NAME_BYTES
from .options import MountOptions
from .prefetch import Reader
from .shared_cache import SharedCache
from .store.base import ObjectInfo, ObjectStore, list_all
from .upload import AppendUpload, StreamingUpload, Writer, abort_once, retry_abort

log = logging.getLogger("zonemount.fs")

ROOT_INO = 1
META_MEMO_ENTRIES = 100_000
# Renames of directories copy this many objects at once.
RENAME_CONCURRENCY = 16
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
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
META_MODE, META_UID, META_GID, META_MTIME = "mode", "uid", "gid", "mtime"
META_ATIME, META_CTIME = "atime", "ctime"
# s3fs-fuse's symlink: an object whose body is the target and whose x-amz-meta-mode says
# S_IFLNK (written as decimal, with every permission bit, as s3fs does).
SYMLINK_MODE = stat.S_IFLNK | 0o777


class Kind(Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(slots=True)
class Attr:
    ino: int
    mode: int
    size: int
    uid: int
    gid: int
    mtime: float
    atime: float
    ctime: float
    nlink: int
    timeout: float  # how long the kernel may cache this


@dataclass(eq=False)
class Inode:
    ino: int
    parent: int
    name: str
    kind: Kind
    size: int = 0
    mtime: float = 0.0
    etag: str | None = None
    expiry: float = 0.0
    lookups: int = 0
    local: bool = False
    children: dict[str, int] = field(default_factory=dict)
    negative: dict[str, float] = field(default_factory=dict)
    # directories: until this (monotonic) time every name that exists here is in
    # ``children`` -- a negative entry for the whole directory, set when this mount made the
    # directory or listed it in full (R-META-NEGATIVE-DIR)
    complete_until: float = 0.0
    # directories: this mount removed an entry (unlink, rename, rmdir) and nothing was
    # written or discovered in it since - it stays when S3 no longer shows it
    # (R-DIR-EMPTIED-STAYS)
    emptied: bool = False
    # directories: the names (and which of them are directories) one LIST page showed, valid
    # until ``names_until``; ``large`` once a page could not hold the whole directory
    names: frozenset[str] | None = None
    dir_names: frozenset[str] = frozenset()
    names_until: float = 0.0
    large: bool = False
    # directories: entries the last full listing (readdir) showed, 0 if never listed in
    # full; expired entries revalidated one by one since; the relisting under way, if any
    listed_count: int = 0
    revalidations: int = 0
    relisting: trio.Event | None = None
    perm: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: float | None = None
    ctime: float = 0.0
    writer: Writer | None = None
    open_handles: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    detached: bool = False
    # when this mount last made the object appear (upload completed, rename target): a
    # listing that started earlier may not show it yet
    published_at: float = 0.0
    target: bytes | None = None  # a symlink's target, once read (or written) by this mount


@dataclass(eq=False)
class FileHandle:
    ino: int
    key: str
    reader: Reader | None = None
    writer: Writer | None = None
    direct: bool = False
    # close() reached us (flush) but the upload was left for release (nothing written yet)
    closed_pending: bool = False
    # the process (thread, thread group) that opened it: how it ends decides commit/abort
    pid: int = 0
    tgid: int = 0


@dataclass(eq=False)
class DirHandle:
    ino: int
    entries: list[tuple[str, int]] | None = None


def _now() -> float:
    return time.monotonic()


def _parse_meta(
    metadata: Mapping[str, str],
) -> tuple[int | None, int | None, int | None, float | None]:
    def number(key: str, base: int = 10) -> int | None:
        try:
            return int(metadata[key], base)
        except (KeyError, ValueError):
            return None

    mtime: float | None
    try:
        mtime = float(metadata[META_MTIME])
    except (KeyError, ValueError):
        mtime = None
    mode = number(META_MODE)
    return (
        stat.S_IMODE(mode) if mode is not None else None,
        number(META_UID),
        number(META_GID),
        mtime,
    )


def _is_symlink_meta(metadata: Mapping[str, str] | None) -> bool:
    try:
        return metadata is not None and stat.S_ISLNK(int(metadata[META_MODE]))
    except (KeyError, ValueError):
        return False


def _meta_time(seconds: float) -> str:
    """A time as s3fs-fuse writes and reads it: ``sec.nsec`` with 9 digits of nanoseconds."""
    return f"{seconds:.9f}"


def _valid_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "\0" not in name


class Filesystem:
    """Filesystem operations; one instance per mount."""

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
        self.inodes: dict[int, Inode] = {}
        self._next_ino = ROOT_INO + 1
        self._next_fh = 1
        self.files: dict[int, FileHandle] = {}
        # key -> (etag, user metadata): survives the kernel forgetting an inode, so that
        # attributes we set or read once are reported consistently from later listings
        # (which carry no user metadata). Bounded LRU.
        self.meta_memo: OrderedDict[str, tuple[str | None, dict[str, str]]] = OrderedDict()
        self.dirs: dict[int, DirHandle] = {}
        now = time.time()
        root = Inode(
            ROOT_INO, ROOT_INO, "", Kind.DIR, mtime=now, ctime=now, expiry=math.inf, lookups=1
        )
        self.inodes[ROOT_INO] = root

    # -- plumbing --------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.opts.read_only:
            raise FsError(errno.EROFS, "mounted with --read-only")

    def inode(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"unknown inode {ino}")
        return node

    def _new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def key_of(self, node: Inode) -> str:
        """Object key of a file, or prefix (ending in ``/``) of a directory."""
        parts: list[str] = []
        while node.ino != ROOT_INO:
            parts.append(node.name)
            node = self.inodes[node.parent]
        return self.opts.prefix + "/".join(reversed(parts))

    def dir_prefix(self, node: Inode) -> str:
        key = self.key_of(node)
        return key + "/" if node.ino != ROOT_INO else self.opts.prefix

    def _check_key(self, parent: Inode, name: str, suffix: str = "", below: int = 0) -> None:
        """ENAMETOOLONG unless ``name`` fits NAME_MAX and its key fits S3's limit, the mount's
        prefix included (``suffix`` ``/`` for a directory; ``below``: bytes of the longest
        path under it). Checked before anything is acknowledged: a key S3 refuses would
        otherwise be lost after ``close()`` returned."""
        if len(name.encode()) > MAX_NAME_BYTES:
            raise FsError(errno.ENAMETOOLONG, f"name is longer than {MAX_NAME_BYTES} bytes")
        size = len((self.dir_prefix(parent) + name + suffix).encode()) + below
        if size > MAX_KEY_BYTES:
            raise FsError(
                errno.ENAMETOOLONG,
                f"object key would be {size} bytes; S3 allows {MAX_KEY_BYTES} "
                "(the mount's prefix included)",
            )

    @staticmethod
    def _touch_dir(node: Inode) -> None:
        """An entry was added to or removed from directory ``node`` by this mount: its
        mtime and ctime change (kept in the mount; directories have no object)."""
        node.mtime = node.ctime = time.time()

    def _deepest(self, node: Inode) -> int:
        """Bytes of the longest path below directory ``node`` that this mount knows of."""
        best = 0
        for name, ino in node.children.items():
            child = self.inodes.get(ino)
            if child is not None:
                below = 1 + self._deepest(child) if child.kind is Kind.DIR else 0
                best = max(best, len(name.encode()) + below)
        return best

    def attr(self, node: Inode) -> Attr:
        now = time.time()
        if node.kind is Kind.DIR:
            mode = stat.S_IFDIR | (node.perm if node.perm is not None else self.opts.dir_mode)
            nlink = 2 + sum(  # "." and the entry in its parent, plus each subdirectory's ".."
                1
                for ino in node.children.values()
                if (child := self.inodes.get(ino)) is not None and child.kind is Kind.DIR
            )
        elif node.kind is Kind.SYMLINK:
            mode = SYMLINK_MODE
            nlink = 1
        else:
            mode = stat.S_IFREG | (node.perm if node.perm is not None else self.opts.file_mode)
            nlink = 1
        if node.detached:
            nlink = 0  # unlinked (or gone from the bucket) while still open
        size = node.writer.size if node.writer is not None else node.size
        mtime = node.mtime or now
        timeout = 0.0 if node.local else min(self.opts.metadata_ttl, 3600.0)
        return Attr(
            ino=node.ino,
            mode=mode,
            size=size if node.kind is not Kind.DIR else 0,
            uid=node.uid if node.uid is not None else self.opts.uid,
            gid=node.gid if node.gid is not None else self.opts.gid,
            mtime=mtime,
            atime=node.atime if node.atime is not None else mtime,
            ctime=node.ctime or mtime,
            nlink=nlink,
            timeout=timeout,
        )

    # -- inode table -------------------------------------------------------------------
    def _child(self, parent: Inode, name: str) -> Inode | None:
        ino = parent.children.get(name)
        return self.inodes.get(ino) if ino is not None else None

    def _install(self, parent: Inode, name: str, kind: Kind, info: ObjectInfo | None) -> Inode:
        """Create or refresh the inode for a remote entry (kind may have changed)."""
        node = self._child(parent, name)
        if node is not None and node.kind is not kind:
            if node.local or self._keep_as_local(node):
                return node  # a local directory or a file being written wins
            self._detach(parent, node)
            node = None
        if node is None:
            node = Inode(self._new_ino(), parent.ino, name, kind, ctime=time.time())
            self.inodes[node.ino] = node
            parent.children[name] = node.ino
        parent.negative.pop(name, None)
        if node.local and kind is Kind.DIR:
            node.local = False  # someone wrote into it: it exists remotely now
        if not node.local:
            node.expiry = _now() + self.opts.metadata_ttl
        if info is not None and node.writer is None:
            replaced = node.etag is not None and node.etag != info.etag
            if replaced:
                node.target = None
            # An object without x-amz-meta-mtime has LastModified as its mtime, which S3
            # reports in whole seconds: an object this mount already knows (same ETag)
            # keeps the mtime it reported so far, so stat does not flip on revalidation.
            fallback_mtime = node.mtime if node.mtime and node.etag == info.etag else info.mtime
            node.size = info.size
            node.etag = info.etag
            memo = self.meta_memo.get(info.key)
            if info.metadata is not None:  # from HEAD: authoritative
                self._apply_meta(node, info.metadata, fallback_mtime)
                self._memo_put(info.key, info.etag, info.metadata)
            elif memo is not None and memo[0] in (None, info.etag) and (replaced or not node.mtime):
                self._apply_meta(node, memo[1], info.mtime)
                self._memo_put(info.key, info.etag, memo[1])
            elif replaced or not node.mtime:
                # from a listing (no user metadata): the object was replaced by someone else,
                # so what we knew of its metadata is stale.
                node.metadata = {}
                node.perm = node.uid = node.gid = None
                node.mtime = info.mtime
        elif kind is Kind.DIR and not node.mtime:
            node.mtime = time.time()
        return node

    def _new_local(
        self, parent: Inode, name: str, kind: Kind, mode: int, uid: int, gid: int
    ) -> Inode:
        """A new inode that exists only in this mount (mkdir, or a file being created)."""
        now = time.time()
        return Inode(
            self._new_ino(),
            parent.ino,
            name,
            kind,
            mtime=now,
            ctime=now,
            local=True,
            expiry=math.inf,
            perm=stat.S_IMODE(mode),
            uid=uid,
            gid=gid,
        )

    def _memo_put(self, key: str, etag: str | None, metadata: Mapping[str, str]) -> None:
        self.meta_memo[key] = (etag, dict(metadata))
        self.meta_memo.move_to_end(key)
        while len(self.meta_memo) > META_MEMO_ENTRIES:
            self.meta_memo.popitem(last=False)

    def _apply_meta(self, node: Inode, metadata: Mapping[str, str], fallback_mtime: float) -> None:
        perm, uid, gid, mtime = _parse_meta(metadata)
        node.metadata = dict(metadata)
        node.perm, node.uid, node.gid = perm, uid, gid
        node.mtime = mtime if mtime is not None else fallback_mtime

    def _detach(self, parent: Inode, node: Inode) -> None:
        if parent.children.get(node.name) == node.ino:
            del parent.children[node.name]
        node.detached = True
        self._maybe_drop(node)

    def _maybe_drop(self, node: Inode) -> None:
        if (
            node.ino != ROOT_INO
            and node.lookups <= 0
            and node.open_handles == 0
            and node.writer is None
            and not (node.local and not node.detached)
            and not (node.emptied and not node.detached)
            and not node.children
        ):
            self.inodes.pop(node.ino, None)
            parent = self.inodes.get(node.parent)
            if parent is not None and parent.children.get(node.name) == node.ino:
                del parent.children[node.name]
                # the tree no longer holds every name this mount knows here
                parent.complete_until, parent.names = 0.0, None

    def _holds_local(self, node: Inode) -> bool:
        """True when something under ``node`` exists only in this mount (a mkdir'd
        directory, a file being written)."""
        return any(
            (c := self.inodes.get(i)) is not None
            and (c.local or c.writer is not None or self._holds_local(c))
            for i in node.children.values()
        )

    def _keep_as_local(self, node: Inode) -> bool:
        """A directory that S3 no longer shows (its objects were renamed or deleted) but that
        holds local entries stays, as a local directory: dropping it would orphan what was
        just made in it (the ``make demo`` race: a task's ``mkdir`` under ``_temporary`` got
        ENOENT once the previous task's rename emptied it and its TTL expired)."""
        if node.kind is not Kind.DIR or not (node.emptied or self._holds_local(node)):
            return False
        node.local, node.expiry = True, math.inf
        return True

    def remember(self, ino: int, count: int = 1) -> None:
        self.inodes[ino].lookups += count

    def forget(self, ino: int, count: int) -> None:
        node = self.inodes.get(ino)
        if node is None:
            return
        node.lookups -= count
        self._maybe_drop(node)

    # -- lookup / getattr --------------------------------------------------------------
    async def _remote_lookup(
        self, parent: Inode, name: str
    ) -> tuple[Kind, ObjectInfo | None] | None:
        """Ask S3 what ``name`` is: a directory (shadows a file), a file, or nothing."""
        base = self.dir_prefix(parent) + name
        result: dict[str, Any] = {}

        async def head() -> None:
            try:
                result["file"] = await self.run(self.store.head, base)
            except StoreError as exc:
                if exc.errno != errno.ENOENT:
                    result["error"] = exc

        async def listing() -> None:
            try:
                page = await self.run(self.store.list_page, base + "/", "/", None, 1)
                result["dir"] = bool(page.objects or page.prefixes)
            except StoreError as exc:
                result["error"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(head)
            nursery.start_soon(listing)
        if result.get("dir"):
            return Kind.DIR, None
        if "file" in result:
            info: ObjectInfo = result["file"]
            return Kind.SYMLINK if _is_symlink_meta(info.metadata) else Kind.FILE, info
        if "error" in result:
            err: StoreError = result["error"]
            raise FsError(err.errno, str(err))
        return None

    async def _lookup_by_listing(
        self, parent: Inode, name: str
    ) -> tuple[Kind, ObjectInfo | None] | None:
        """A lookup of a name the tree does not hold, in a directory small enough for one
        LIST page: the page's names answer this and later misses for the negative TTL; a
        file still gets its HEAD (for its metadata), a directory needs nothing more."""
        if parent.names is None or parent.names_until <= _now():
            prefix, listed_at = self.dir_prefix(parent), _now()
            page = await self._store(self.store.list_page, prefix, "/", None, RELIST_KEYS)
            if page.next_token:
                parent.large = True
                return await self._remote_lookup(parent, name)
            files = {o.key[len(prefix) :] for o in page.objects}
            dirs = {p[len(prefix) :].rstrip("/") for p in page.prefixes}
            parent.names, parent.dir_names = frozenset(files | dirs), frozenset(dirs)
            parent.listed_count = max(1, len(files | dirs))
            parent.names_until = listed_at + self.opts.negative_metadata_ttl
        if name not in parent.names:
            return None
        if name in parent.dir_names:
            return Kind.DIR, None  # a directory shadows a file of the same name
        try:
            info = await self.run(self.store.head, self.dir_prefix(parent) + name)
        except StoreError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise FsError(exc.errno, str(exc)) from None
        return Kind.SYMLINK if _is_symlink_meta(info.metadata) else Kind.FILE, info

    async def _relisted(self, parent: Inode) -> bool:
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

    async def _known_fresh(self, parent: Inode, name: str) -> Inode | None:
        """The tree's inode for ``name`` when it answers without asking S3 about the name:
        local, being written, or attributes not yet expired (after listing ``parent`` again
        when that is cheaper than revalidating one by one, see :meth:`_relisted`)."""
        node = self._child(parent, name)
        if node is None:
            return None
        if node.local or node.writer is not None or node.expiry > _now():
            return node
        if await self._relisted(parent):
            node = self._child(self.inode(parent.ino), name)
            if node is not None and node.expiry > _now():
                return node
        return None

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        node = await self._lookup(parent_ino, name)
        node.lookups += 1
        return self.attr(node)

    async def _lookup(self, parent_ino: int, name: str) -> Inode:  # noqa: C901 - over the issue-15 limits; next to split
        parent = self.inode(parent_ino)
        if parent.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if name == ".":
            return parent
        if name == "..":
            return self.inode(parent.parent)
        if not _valid_name(name):
            raise FsError(errno.ENOENT)
        self._check_key(parent, name)
        fresh = await self._known_fresh(parent, name)
        if fresh is not None:
            return fresh
        parent = self.inode(parent_ino)  # re-read after await
        node = self._child(parent, name)
        negative = parent.negative.get(name)
        if negative is not None and negative > _now() and node is None:
            raise FsError(errno.ENOENT)
        if parent.local and node is None:
            raise FsError(errno.ENOENT)  # nothing remote can live under a local directory
        if node is None and parent.complete_until > _now():
            raise FsError(errno.ENOENT)  # this mount knows every name here (made or listed it)
        if node is None and self.opts.negative_metadata_ttl > 0 and not parent.large:
            found = await self._lookup_by_listing(parent, name)
        else:
            found = await self._remote_lookup(parent, name)
        parent = self.inode(parent_ino)  # re-read after await
        if found is None:
            node = self._child(parent, name)
            if node is not None and (
                node.local or node.writer is not None or self._keep_as_local(node)
            ):
                return node
            if node is not None:
                self._detach(parent, node)
            if self.opts.negative_metadata_ttl > 0:
                parent.negative[name] = _now() + self.opts.negative_metadata_ttl
            raise FsError(errno.ENOENT)
        kind, info = found
        return self._install(parent, name, kind, info)

    async def getattr(self, ino: int, *, revalidate: bool = False) -> Attr:
        node = self.inode(ino)
        if node.ino == ROOT_INO or node.local or node.writer is not None:
            return self.attr(node)
        if node.detached:
            if node.open_handles:
                return self.attr(node)  # fstat after unlink: nlink 0, as POSIX says
            # A path walk that raced an unlink or rename (the kernel checks permissions of
            # the dentry it still had): ESTALE makes it walk again (LOOKUP_REVAL) and see the
            # name as it is now - an open(O_CREAT) then creates instead of failing ENOENT.
            raise FsError(errno.ESTALE)
        if (
            not revalidate
            and node.expiry <= _now()
            and await self._relisted(self.inode(node.parent))
        ):
            node = self.inode(ino)  # re-read after await
        if revalidate or node.expiry <= _now():
            parent = self.inode(node.parent)
            found = await self._remote_lookup(parent, node.name)
            if found is None or found[0] is not node.kind:
                if node.open_handles or self._keep_as_local(node):
                    return self.attr(node)  # an open file keeps its attributes
                node = self.inode(ino)
                holder = self.inodes.get(node.parent)
                if holder is not None:
                    self._detach(holder, node)
                raise FsError(errno.ESTALE)  # gone (or replaced): the kernel walks again
            node = self._install(self.inode(node.parent), node.name, found[0], found[1])
        return self.attr(node)

    # -- directories -------------------------------------------------------------------
    async def opendir(self, ino: int) -> int:
        node = self.inode(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
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
            handle.entries = await self._snapshot(handle.ino)
        return self._entries_from(handle.entries, start)

    def _entries_from(
        self, entries: list[tuple[str, int]], start: int
    ) -> Iterator[tuple[str, Attr]]:
        for index in range(start, len(entries)):
            name, ino = entries[index]
            node = self.inodes.get(ino)
            if node is not None:
                yield name, self.attr(node)

    async def _snapshot(self, ino: int) -> list[tuple[str, int]]:
        dir_node = self.inode(ino)
        remote_files: dict[str, ObjectInfo] = {}
        remote_dirs: set[str] = set()
        listed_at = _now()
        if not dir_node.local:
            prefix = self.dir_prefix(dir_node)
            page = await self._store(list_all, self.store, prefix, "/")
            for info in page.objects:
                name = info.key[len(prefix) :]
                if _valid_name(name) and "/" not in name:
                    remote_files[name] = info
            for sub in page.prefixes:
                name = sub[len(prefix) :].rstrip("/")
                if _valid_name(name) and "/" not in name:
                    remote_dirs.add(name)
        dir_node = self.inode(ino)  # re-read after await
        if self.opts.negative_metadata_ttl > 0:
            dir_node.complete_until = listed_at + self.opts.negative_metadata_ttl
        dir_node.large = len(remote_files) + len(remote_dirs) > RELIST_KEYS
        dir_node.listed_count = max(1, len(remote_files) + len(remote_dirs))
        dir_node.revalidations = 0
        names: dict[str, int] = {}
        for name in sorted(remote_dirs | remote_files.keys()):
            entry = remote_files.get(name)
            kind = Kind.DIR if name in remote_dirs else self._listed_kind(dir_node, name, entry)
            entry = entry if kind is not Kind.DIR else None
            node = self._install(dir_node, name, kind, entry)
            names[name] = node.ino
        for name, child_ino in sorted(dir_node.children.items()):
            child = self.inodes.get(child_ino)
            if (
                child is not None
                and name not in names
                and (
                    child.local
                    or child.writer
                    or child.published_at >= listed_at
                    or self._keep_as_local(child)
                )
            ):
                names[name] = child_ino
        # Remote entries that vanished are dropped from the tree (not local ones).
        for name, child_ino in list(dir_node.children.items()):
            child = self.inodes.get(child_ino)
            if child is not None and name not in names and not dir_node.local:
                self._detach(dir_node, child)
        return list(names.items())

    def _listed_kind(self, parent: Inode, name: str, info: ObjectInfo | None) -> Kind:
        """A listing carries no metadata: an object is a symlink if this mount knows the
        object (same ETag) to be one, from its inode or the metadata memo; else a file."""
        if info is None:
            return Kind.FILE
        node = self._child(parent, name)
        if node is not None and node.kind is Kind.SYMLINK and node.etag in (None, info.etag):
            return Kind.SYMLINK
        memo = self.meta_memo.get(info.key)
        if memo is not None and memo[0] in (None, info.etag) and _is_symlink_meta(memo[1]):
            return Kind.SYMLINK
        return Kind.FILE

    def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        self._check_writable()
        parent = self.inode(parent_ino)
        try:
            await self._lookup(parent_ino, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise FsError(errno.EEXIST)
        parent = self.inode(parent_ino)
        if name in parent.children:
            raise FsError(errno.EEXIST)
        self._check_key(parent, name, "/")
        node = self._new_local(parent, name, Kind.DIR, mode, uid, gid)
        node.listed_count = 1  # known whole: empty, and everything put in it goes through here
        if self.opts.negative_metadata_ttl > 0:
            # it did not exist a moment ago, so nothing lived under it
            node.complete_until = _now() + self.opts.negative_metadata_ttl
        self.inodes[node.ino] = node
        parent.children[name] = node.ino
        parent.negative.pop(name, None)
        self._touch_dir(parent)
        node.lookups += 1
        return self.attr(node)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        node = await self._lookup(parent_ino, name)
        parent = self.inode(parent_ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if any(
            (c := self.inodes.get(i)) is not None and (c.local or c.writer is not None)
            for i in node.children.values()
        ):
            raise FsError(errno.ENOTEMPTY)
        if not node.local:
            prefix = self.dir_prefix(node)
            page = await self._store(self.store.list_page, prefix, "/", None, 2)
            others = [o for o in page.objects if o.key != prefix] + page.prefixes
            if others:
                raise FsError(errno.ENOTEMPTY)
            if page.objects:  # only the zero-byte "dir/" marker is left
                if not self.opts.allow_delete:
                    raise FsError(errno.EPERM, "removing a directory marker needs --allow-delete")
                await self._store(self.store.delete, prefix)
        parent = self.inode(parent_ino)
        node.local = False
        for child_ino in list(node.children.values()):
            child = self.inodes.get(child_ino)
            if child is not None:
                self._detach(node, child)
        node.emptied = False
        self._detach(parent, node)
        parent.emptied = True  # R-DIR-EMPTIED-STAYS
        self._touch_dir(parent)
        if self.opts.negative_metadata_ttl > 0:
            parent.negative[name] = _now() + self.opts.negative_metadata_ttl

    # -- files -------------------------------------------------------------------------
    def _new_metadata(self, node: Inode) -> dict[str, str]:
        meta: dict[str, str] = {}
        if node.kind is Kind.SYMLINK:
            meta[META_MODE] = str(SYMLINK_MODE)
        elif node.perm is not None and node.perm != self.opts.file_mode:
            meta[META_MODE] = str(stat.S_IFREG | node.perm)
        if node.uid is not None and node.uid != self.opts.uid:
            meta[META_UID] = str(node.uid)
        if node.gid is not None and node.gid != self.opts.gid:
            meta[META_GID] = str(node.gid)
        if node.metadata.get(META_MTIME):
            meta[META_MTIME] = node.metadata[META_MTIME]
        return meta

    def _writer_for(self, node: Inode, *, existing_size: int, exists: bool) -> Writer:
        """The writer of a file: appends with ``--incremental-upload``, else a new object."""
        if self.opts.incremental_upload:
            return self._appending(node, existing_size=existing_size, exists=exists)
        return self._streaming(node)

    def _streaming(self, node: Inode) -> StreamingUpload:
        """A writer that makes a new object at the file's key (a new file, O_TRUNC)."""
        return StreamingUpload(self.ctx, self.key_of(node), self._new_metadata(node))

    def _appending(self, node: Inode, *, existing_size: int, exists: bool) -> AppendUpload:
        """A writer that appends to the file's object (``--incremental-upload``)."""
        return AppendUpload(
            self.ctx, self.key_of(node), existing_size, self._new_metadata(node), exists
        )

    def _new_fh(self, handle: FileHandle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.files[fh] = handle
        node = self.inodes.get(handle.ino)
        if node is not None:
            node.open_handles += 1
        return fh

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        self._check_writable()
        parent = self.inode(parent_ino)
        if parent.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if not _valid_name(name) or "/" in name:
            raise FsError(errno.EINVAL)
        self._check_key(parent, name)
        existing = self._child(parent, name)
        if existing is not None and (existing.local or existing.writer or existing.expiry > _now()):
            raise FsError(errno.EEXIST)
        node = self._new_local(parent, name, Kind.FILE, mode, uid, gid)
        if existing is not None:
            self._detach(parent, existing)
        self.inodes[node.ino] = node
        parent.children[name] = node.ino
        parent.negative.pop(name, None)
        self._touch_dir(parent)
        node.writer = self._writer_for(node, existing_size=0, exists=False)
        node.lookups += 1
        fh = self._new_fh(FileHandle(node.ino, self.key_of(node), writer=node.writer))
        return fh, self.attr(node)

    async def open(self, ino: int, flags: int) -> int:  # noqa: C901 - over the issue-15 limits; next to split
        node = self.inode(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.SYMLINK:
            raise FsError(errno.ELOOP)  # the kernel follows symlinks; never opened as such
        accmode = flags & os.O_ACCMODE
        direct = bool(flags & os.O_DIRECT)
        wants_write = accmode in (os.O_WRONLY, os.O_RDWR)
        if node.writer is not None:
            await self._finish_closed_writer(node)
            node = self.inode(ino)
        if node.writer is not None:
            raise FsError(errno.EPERM, "file is being written; it can be opened after close")
        if wants_write:
            self._check_writable()
            replace = bool(flags & os.O_TRUNC)
            if not replace and await self._empty_for_writing(ino, flags):
                # Nothing to keep: writing an empty file from offset 0 replaces it, exactly
                # as with O_TRUNC (R-ERRNO-REFUSALS).
                node = self.inode(ino)
                if node.writer is not None:  # another open won the race
                    raise FsError(errno.EPERM, "file is being written; open it after close")
                replace = True
            if replace:
                if not self.opts.allow_overwrite:
                    raise FsError(errno.EPERM, "overwriting needs --allow-overwrite")
                # truncate (with or without --incremental-upload): a fresh object
                node.writer = self._streaming(node)
                node.local = True
                return self._new_fh(
                    FileHandle(ino, self.key_of(node), writer=node.writer, direct=direct)
                )
            if self.opts.incremental_upload and (flags & os.O_APPEND or accmode == os.O_WRONLY):
                attr = await self.getattr(ino, revalidate=True)
                node = self.inode(ino)
                node.writer = self._writer_for(node, existing_size=attr.size, exists=True)
                node.local = True
                return self._new_fh(FileHandle(ino, self.key_of(node), writer=node.writer))
            if accmode == os.O_WRONLY or flags & os.O_APPEND:
                raise FsError(
                    errno.EPERM,
                    "existing files can only be replaced (O_TRUNC with --allow-overwrite)"
                    + (
                        " or appended with --incremental-upload"
                        if self.opts.is_directory_bucket
                        else ""
                    ),
                )
            # O_RDWR without O_TRUNC: opened for reading; a write will fail with EBADF.
        if direct or node.expiry <= _now():
            await self.getattr(ino, revalidate=True)
            node = self.inode(ino)
        reader = Reader(
            self.ctx,
            self.key_of(node),
            node.size,
            node.etag or None,
            None if direct else self.ctx.cache_for(node.size),
        )
        return self._new_fh(FileHandle(ino, self.key_of(node), reader=reader, direct=direct))

    async def _empty_for_writing(self, ino: int, flags: int) -> bool:
        """Is this a write-only or append open, without O_TRUNC, of a file that is empty in
        the bucket now (revalidated: a cached size could hide another client's data)?"""
        if self.opts.incremental_upload or not (
            flags & os.O_ACCMODE == os.O_WRONLY or flags & os.O_APPEND
        ):
            return False
        if self.inode(ino).size != 0:
            return False
        return (await self.getattr(ino, revalidate=True)).size == 0

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
                await self._resume(handle, writer)
            return await writer.write(offset, data)

    async def _resume(self, handle: FileHandle, writer: Writer) -> None:
        """A write after a flush completed the object (see R-WRITE-FORKED-CLOSE).

        Only the writer's own file qualifies: not renamed, replaced or deleted since."""
        node = self.inodes.get(handle.ino)
        if (
            node is None
            or node.detached
            or node.writer is not None
            or self.key_of(node) != writer.key
            or node.size != writer.size
        ):
            raise FsError(errno.EBADF, "file already closed for writing; reopen with O_TRUNC")
        node.writer, node.local = writer, True
        try:
            await writer.resume(node.etag)
        except BaseException:
            node = self.inodes.get(handle.ino)
            if node is not None and node.writer is writer:
                node.writer, node.local = None, False
            raise

    def set_opener(self, fh: int, pid: int) -> None:
        """Record the process that opened ``fh`` for writing (the FUSE request's pid)."""
        handle = self.files.get(fh)
        if handle is not None and handle.writer is not None and pid > 0:
            handle.pid, handle.tgid = pid, procinfo.tgid_of(pid) or pid

    async def _abandon(self, handle: FileHandle, writer: Writer, why: str) -> None:
        """R-WRITE-KILLED-PUBLISHES-NOTHING: abort the upload; S3 keeps what it had (the old
        object of an overwrite, or nothing) and the mount shows that."""
        log.warning("upload of %r aborted: %s", writer.key, why)
        metrics.UPLOADS_ABORTED.labels(reason="writer-killed").inc()
        await writer.abort()
        node = self.inodes.get(handle.ino)
        if node is not None and node.writer is writer:
            node.writer, node.local, node.expiry = None, False, 0.0
            parent = self.inodes.get(node.parent)
            if node.etag is None and parent is not None:  # a new file: it never existed
                self._detach(parent, node)

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
            await self._complete(handle, writer)

    async def _settle(self, node: Inode) -> None:
        """Complete every file at or under ``node`` whose descriptors were all closed before
        anything was written: to unlink and rename they are ordinary closed files, not
        files being written (``EBUSY``), even before the kernel's release arrives."""
        pending = [node]
        while pending:
            current = pending.pop()
            if current.writer is not None:
                await self._finish_closed_writer(current)
            pending.extend(
                c for i in list(current.children.values()) if (c := self.inodes.get(i)) is not None
            )

    async def _finish_closed_writer(self, node: Inode) -> None:
        """Complete a file whose every descriptor was closed before anything was written
        (``touch``, an empty ``write_bytes``): its upload waits for ``release``, which the
        kernel sends after close() returned, so an open right after would race it. A write
        through a descriptor that is in fact still in use (``dup2``) resumes the file."""
        handles = [(fh, h) for fh, h in self.files.items() if h.writer is node.writer]
        if handles and all(h.closed_pending for _, h in handles):
            await self.flush(handles[0][0], force=True)

    async def _complete(self, handle: FileHandle, writer: Writer) -> None:
        node = self.inodes.get(handle.ino)
        if node is not None and writer.sets_metadata:
            writer.metadata = self._new_metadata(node)
        try:
            info = await writer.complete()
        except BaseException:
            node = self.inodes.get(handle.ino)
            if node is not None and node.writer is writer:
                # Aborted: S3 keeps what it had (an old object, or nothing) and so does
                # the mount (the next lookup asks S3).
                node.writer, node.local, node.expiry = None, False, 0.0
                parent = self.inodes.get(node.parent)
                if node.etag is None and parent is not None:
                    self._detach(parent, node)
            raise
        finally:
            node = self.inodes.get(handle.ino)
            if node is not None and node.writer is writer:
                node.writer = None
                node.local = False
                node.published_at = _now()  # before any await: see _snapshot
        if node is not None:
            node.size = info.size if info.size >= 0 else writer.size
            node.etag = info.etag
            wanted = self._new_metadata(node)  # includes setattr calls that raced with us
            node.metadata = dict(info.metadata or {})
            if writer.sets_metadata and wanted != node.metadata:
                # chmod/utime raced with the completion: persist what the user asked for.
                await self._store(self.store.copy, writer.key, writer.key, node.size, wanted)
                node.metadata, node.etag = wanted, None
            self._memo_put(writer.key, node.etag, node.metadata)
            node.expiry = _now() + self.opts.metadata_ttl
            node.published_at = _now()
            if not node.metadata.get(META_MTIME):
                node.mtime = time.time()
            self._mark_remote_ancestors(node)

    def _mark_remote_ancestors(self, node: Inode) -> None:
        parent = self.inodes.get(node.parent)
        while parent is not None and parent.ino != ROOT_INO:
            parent.emptied = False  # it holds an object again: it follows S3 again
            if parent.local:
                parent.local = False
                parent.expiry = _now() + self.opts.metadata_ttl
                parent.published_at = _now()  # a listing that started earlier may not show it
            parent = self.inodes.get(parent.parent)

    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is None:
            return
        node = self.inodes.get(handle.ino)
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
                self._maybe_drop(node)

    async def unlink(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        if not self.opts.allow_delete:
            raise FsError(errno.EPERM, "deleting needs --allow-delete")
        node = await self._lookup(parent_ino, name)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.writer is not None:
            await self._finish_closed_writer(node)
            node = await self._lookup(parent_ino, name)
        if node.writer is not None:
            raise FsError(errno.EBUSY, "file is being written")
        await self._store(self.store.delete, self.key_of(node))
        parent = self.inode(parent_ino)
        self._detach(parent, node)
        parent.emptied = True  # R-DIR-EMPTIED-STAYS
        self._touch_dir(parent)
        if self.opts.negative_metadata_ttl > 0:
            parent.negative[name] = _now() + self.opts.negative_metadata_ttl

    # -- symlinks ----------------------------------------------------------------------
    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        """A symlink as s3fs-fuse stores one: the object's body is the target, its
        ``x-amz-meta-mode`` is S_IFLNK|0777, with owner and times (docs/SEMANTICS.md)."""
        self._check_writable()
        try:
            await self._lookup(parent_ino, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise FsError(errno.EEXIST)
        parent = self.inode(parent_ino)
        if name in parent.children:
            raise FsError(errno.EEXIST)
        self._check_key(parent, name)
        key = self.dir_prefix(parent) + name
        now = _meta_time(time.time())
        meta = {
            META_MODE: str(SYMLINK_MODE),
            META_UID: str(uid),
            META_GID: str(gid),
            META_MTIME: now,
            META_CTIME: now,
            META_ATIME: now,
        }
        info = await self._store(self.store.put, key, target, meta)
        parent = self.inode(parent_ino)  # re-read after await
        node = self._install(
            parent, name, Kind.SYMLINK, ObjectInfo(key, len(target), info.etag, info.mtime, meta)
        )
        node.target = target
        node.published_at = _now()
        self._touch_dir(parent)
        self._mark_remote_ancestors(node)
        node.lookups += 1
        return self.attr(node)

    async def readlink(self, ino: int) -> bytes:
        node = self.inode(ino)
        if node.kind is not Kind.SYMLINK:
            raise FsError(errno.EINVAL)
        if node.target is None and node.size == 0:
            return b""
        if node.target is None:
            etag = node.etag
            data = await self._store(
                self.store.get_range, self.key_of(node), 0, node.size, etag or None
            )
            node = self.inode(ino)
            if node.etag == etag:
                node.target = data
            return data
        return node.target

    # -- setattr -----------------------------------------------------------------------
    async def setattr(  # noqa: C901, PLR0912 - over the issue-15 limits; next to split
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
        self._check_writable()
        node = self.inode(ino)
        if size is not None and node.kind is Kind.FILE:
            current = node.writer.size if node.writer is not None else node.size
            if size != current:
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
                    meta[META_MTIME] = _meta_time(now)
                info = await self._store(self.store.put, self.key_of(node), b"", meta)
                node = self.inode(ino)
                node.size, node.etag, node.metadata = 0, info.etag, meta
                node.mtime = node.ctime = now  # a truncation is a write
        changed = False
        if mode is not None and stat.S_IMODE(mode) != self.attr(node).mode & 0o7777:
            node.perm = stat.S_IMODE(mode)
            changed = True
        if uid is not None and uid != self.attr(node).uid:
            node.uid = uid
            changed = True
        if gid is not None and gid != self.attr(node).gid:
            node.gid = gid
            changed = True
        if mtime is not None and mtime != node.mtime:
            node.mtime = mtime
            node.metadata[META_MTIME] = _meta_time(mtime)
            changed = True
        if atime is not None:
            node.atime = atime
        node.ctime = time.time()
        if changed and node.kind is not Kind.DIR and node.writer is None and not node.local:
            # Persist as object metadata (a server-side copy onto itself).
            key = self.key_of(node)
            known: Mapping[str, str] = node.metadata
            memo = self.meta_memo.get(key)
            if node.etag is not None and (memo is None or memo[0] not in (None, node.etag)):
                # known from a listing only (no user metadata): the copy replaces metadata,
                # so read what there is first rather than drop it
                known = (await self._store(self.store.head, key)).metadata or {}
                node = self.inode(ino)
            meta = {
                k: v for k, v in known.items() if k not in (META_MODE, META_UID, META_GID)
            } | self._new_metadata(node)
            # the copy gets a new LastModified: keep the file's mtime (chmod is no write)
            meta.setdefault(META_MTIME, _meta_time(node.mtime))
            meta[META_CTIME] = _meta_time(node.ctime)
            await self._store(self.store.copy, key, key, node.size, meta)
            node = self.inode(ino)
            node.metadata = meta
            node.etag = None  # unknown after copy; the next lookup refreshes it
            node.expiry = 0.0
            self._memo_put(self.key_of(node), None, meta)
        elif changed and node.writer is not None:
            node.writer.metadata = self._new_metadata(node)
        return self.attr(node)

    # -- rename ------------------------------------------------------------------------
    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        """rename(2): check, move the data (one object, or every object under a directory's
        prefix), then re-link the tree. Steps in that order; each re-reads what it needs
        after its awaits."""
        self._check_writable()
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        await self._settle(await self._lookup(old_parent, old_name))
        src = await self._lookup(old_parent, old_name)
        if not _valid_name(new_name) or "/" in new_name:
            raise FsError(errno.EINVAL)
        if src.kind is Kind.DIR:
            self._check_key(self.inode(new_parent), new_name, "/", self._deepest(src))
        else:
            self._check_key(self.inode(new_parent), new_name)
        dst = await self._rename_target(src, new_parent, new_name, flags)
        if dst is src:
            return
        self._check_not_into_itself(src, new_parent)
        if self._busy(src):
            raise FsError(errno.EBUSY, "a file under the source is being written")
        await self._rename_data(src, new_parent, new_name)
        await self._relink(src, dst, old_parent, old_name, new_parent, new_name)

    async def _rename_target(
        self, src: Inode, new_parent: int, new_name: str, flags: int
    ) -> Inode | None:
        """What ``new_name`` is now, after checking that ``src`` may replace it."""
        try:
            await self._settle(await self._lookup(new_parent, new_name))
            dst = await self._lookup(new_parent, new_name)
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
        if dst.kind is not Kind.DIR and not self.opts.allow_overwrite:
            raise FsError(errno.EPERM, "replacing a file by rename needs --allow-overwrite")
        if dst.kind is Kind.DIR:
            await self._require_empty(dst)
        if dst.writer is not None:
            raise FsError(errno.EBUSY)
        return dst

    def _check_not_into_itself(self, src: Inode, new_parent: int) -> None:
        """Moving a directory into its own subtree is impossible."""
        probe = self.inode(new_parent)
        while True:
            if probe.ino == src.ino:
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if probe.ino == ROOT_INO:
                return
            probe = self.inode(probe.parent)

    async def _rename_data(self, src: Inode, new_parent: int, new_name: str) -> None:
        """Move the objects: one for a file or symlink, every one under a remote directory's
        prefix (a local directory has none)."""
        if src.kind is not Kind.DIR:
            src_key, dst_key = self.key_of(src), self._target_key(new_parent, new_name)
            await self._move_object(src_key, dst_key, src.size)
            memo = self.meta_memo.pop(src_key, None)
            if memo is not None:
                self._memo_put(dst_key, memo[0], memo[1])
        elif not src.local:
            await self._move_prefix(
                self.dir_prefix(src), self._target_key(new_parent, new_name) + "/"
            )

    async def _relink(
        self,
        src: Inode,
        dst: Inode | None,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
    ) -> None:
        """Re-link ``src`` under its new name (both parents re-read after the data moved)."""
        old_p, new_p = self.inode(old_parent), self.inode(new_parent)
        if dst is not None:
            if dst.kind is Kind.DIR and not dst.local:
                marker = self.dir_prefix(dst)
                await self._store(self.store.delete, marker)
            self._detach(new_p, dst)
        if old_p.children.get(old_name) == src.ino:
            del old_p.children[old_name]
        old_p.emptied = True  # R-DIR-EMPTIED-STAYS
        displaced = self._child(new_p, new_name)
        if displaced is not None and displaced is not src:
            self._detach(new_p, displaced)
        src.parent, src.name = new_p.ino, new_name
        new_p.children[new_name] = src.ino
        new_p.negative.pop(new_name, None)
        if self.opts.negative_metadata_ttl > 0:
            old_p.negative[old_name] = _now() + self.opts.negative_metadata_ttl
        if not src.local:
            src.expiry = _now() + self.opts.metadata_ttl
            self._mark_remote_ancestors(src)
        src.ctime = time.time()
        src.published_at = _now()
        self._touch_dir(old_p)
        self._touch_dir(new_p)

    def _target_key(self, parent_ino: int, name: str) -> str:
        parent = self.inode(parent_ino)
        return self.dir_prefix(parent) + name

    def _busy(self, node: Inode) -> bool:
        if node.writer is not None:
            return True
        return any(
            (c := self.inodes.get(i)) is not None and self._busy(c) for i in node.children.values()
        )

    async def _require_empty(self, node: Inode) -> None:
        if any(
            (c := self.inodes.get(i)) is not None and (c.local or c.writer is not None)
            for i in node.children.values()
        ):
            raise FsError(errno.ENOTEMPTY)
        if node.local:
            return
        prefix = self.dir_prefix(node)
        page = await self._store(self.store.list_page, prefix, "/", None, 2)
        if [o for o in page.objects if o.key != prefix] or page.prefixes:
            raise FsError(errno.ENOTEMPTY)

    async def _move_object(self, src: str, dst: str, size: int) -> None:
        """Rename one object: RenameObject where the bucket has it, else copy then delete.

        The source is deleted only after the copy succeeded, so a crash in between leaves
        both names (never neither)."""
        if self.store.is_directory_bucket:
            try:
                await self.run(self.store.rename, src, dst)
                return
            except StoreError as exc:
                if exc.errno != errno.ENOTSUP:
                    raise FsError(exc.errno, str(exc)) from None
        await self._store(self.store.copy, src, dst, size)
        await self._store(self.store.delete, src)

    async def _move_prefix(self, src_prefix: str, dst_prefix: str) -> None:  # noqa: C901 - over the issue-15 limits; next to split
        page = await self._store(list_all, self.store, src_prefix, None)
        objects = page.objects
        growth = len(dst_prefix.encode()) - len(src_prefix.encode())
        longest = max((len(info.key.encode()) for info in objects), default=0) + growth
        if longest > MAX_KEY_BYTES:
            raise FsError(
                errno.ENAMETOOLONG,
                f"a key under the renamed directory would be {longest} bytes; "
                f"S3 allows {MAX_KEY_BYTES}",
            )
        errors: list[FsError] = []
        limit = trio.Semaphore(RENAME_CONCURRENCY)

        copied: list[str] = []

        async def copy_one(info: ObjectInfo) -> None:
            async with limit:
                if errors:
                    return
                try:
                    target = dst_prefix + info.key[len(src_prefix) :]
                    if self.store.is_directory_bucket:
                        await self._move_object(info.key, target, info.size)
                    else:
                        await self._store(self.store.copy, info.key, target, info.size)
                        copied.append(target)
                except FsError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for info in objects:
                nursery.start_soon(copy_one, info)
        if errors:
            # Undo the partial copy (best effort); the sources were never touched.
            for target in copied:
                try:
                    await self.run(self.store.delete, target)
                except StoreError as exc:
                    log.warning("rename rollback: could not delete %r: %s", target, exc)
            raise errors[0]
        if self.store.is_directory_bucket:
            return

        async def delete_one(info: ObjectInfo) -> None:
            async with limit:
                try:
                    await self._store(self.store.delete, info.key)
                except FsError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for info in objects:
                nursery.start_soon(delete_one, info)
        if errors:
            raise errors[0]

    # -- misc --------------------------------------------------------------------------
    async def fsync(self, fh: int) -> None:
        await self.flush(fh, force=True)
        handle = self.files.get(fh)
        if handle is not None and handle.writer is not None:
            handle.writer.seal()  # R-WRITE-FSYNC: no writes after fsync

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
        for handle in list(self.files.values()):
            if handle.writer is not None and not handle.writer.finished:
                await handle.writer.abort()
            if handle.reader is not None:
                handle.reader.close()
