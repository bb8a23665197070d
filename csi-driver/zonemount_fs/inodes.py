"""The inode table: the tree this mount knows, lookup counts, and what it caches per inode.

Owns :class:`Inode` (one entry of the tree, with its cached attributes and negative
knowledge), :class:`Attr` (what stat shows) and :class:`InodeTable`: inode numbers, the
(parent, name) links, keys, installing what S3 showed, detaching and dropping, the
metadata memo (:mod:`.meta`) and the "no such name" caches.

Invariants:

* An inode is a (parent, name) in the tree; its key is computed from the parent chain
  (:meth:`InodeTable.key_of`), so renaming a directory re-keys its whole subtree at once.
* ``parent.children[name] == node.ino`` for every linked inode, and ``parent.subdirs`` counts
  the directories among them (both kept by :meth:`InodeTable.link`/``unlink``); a detached inode
  (``detached``: unlinked, replaced or gone from the bucket) is in no ``children`` but may stay
  in the table while the kernel or an open handle still refers to it.
* Lookup counts follow the kernel (lookup/create/mkdir/symlink/readdir add, ``forget``
  subtracts). An inode is dropped (:meth:`InodeTable.maybe_drop`) when its count is zero,
  no handle is open, no writer holds it, it has no children and it is neither a local
  directory nor a directory this mount emptied; dropping it from a directory also ends
  that directory's "every name is known" state.
* Remote attributes are valid until ``expiry`` (``--metadata-ttl``); a *local* inode (a
  directory made by mkdir that holds no object yet, a file being written) never expires and
  wins over what S3 shows. Negative knowledge lives on the directory: ``negative`` (name ->
  until, ``--negative-metadata-ttl``), ``complete_until`` and the listing's ``names``
  (:mod:`.listing`).

Concurrency: the table is only touched on the trio thread and none of its methods awaits,
so each call is atomic. Callers that await S3 re-read inodes afterwards (by number, through
:meth:`InodeTable.inode`): another task may have detached or replaced them meanwhile.
"""

from __future__ import annotations

import errno
import math
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from time import monotonic as _now
from typing import TYPE_CHECKING

import trio

from .errors import FsError
from .meta import (
    META_GID,
    META_MODE,
    META_MTIME,
    META_UID,
    SYMLINK_MODE,
    MetaMemo,
    is_symlink_meta,
    parse_meta,
)
from .names import MAX_KEY_BYTES, MAX_NAME_BYTES
from .options import MountOptions
from .store.base import ObjectInfo

if TYPE_CHECKING:
    from .upload import Writer

ROOT_INO = 1


class Kind(Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


# An Enum member read through its class costs about 0.1 us (a class attribute lookup that
# goes through the enum's metaclass); the per-entry paths of a listing read these instead.
_FILE, _DIR = Kind.FILE, Kind.DIR
_S_IFREG = stat.S_IFREG


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
    timeout: float  # how long the kernel may cache the name (its entry)
    attr_timeout: float  # how long the kernel may cache these attributes


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
    # directories: how many of ``children`` are directories (nlink without a scan: the kernel
    # asks for a directory's attributes after each create or unlink in it, so a scan made
    # untar and rm -rf quadratic in the directory's size); kept by link/unlink
    subdirs: int = 0
    negative: dict[str, float] = field(default_factory=dict)
    # directories: until this (monotonic) time every name that exists here is in
    # ``children`` -- a negative entry for the whole directory, set when this mount made the
    # directory or listed it in full (R-META-NEGATIVE-DIR)
    complete_until: float = 0.0
    # directories: S3 may hold a ``dir/`` marker object for it - False once this mount made
    # it or its last full listing showed none (what ``complete_until`` trusts, R-DIR-RMDIR)
    marker: bool = True
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
    # directories: object keys splitting the next full listing into ranges listed at once
    # (:mod:`.store.ranged`), from the last full listing; empty when it was one page
    list_splits: tuple[str, ...] = ()
    perm: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: float | None = None
    ctime: float = 0.0
    writer: Writer | None = None
    open_handles: int = 0
    # files: the version (ETag) whose pages the kernel may hold, None when unknown or mixed,
    # and the handles open for reading through the page cache (R-READ-PAGE-CACHE)
    cache_etag: str | None = None
    readers: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    detached: bool = False
    # when this mount last made the object appear (upload completed, rename target): a
    # listing that started earlier may not show it yet
    published_at: float = 0.0
    target: bytes | None = None  # a symlink's target, once read (or written) by this mount


def valid_name(name: str) -> bool:
    """Names a key may show as: not empty, not ``.``/``..``, no NUL."""
    return bool(name) and name not in {".", ".."} and "\0" not in name


class InodeTable:
    """The inodes of one mount, from the root (:data:`ROOT_INO`, never dropped) down."""

    def __init__(self, options: MountOptions) -> None:
        self.opts = options
        self._kernel_ttl = min(options.metadata_ttl, 3600.0)  # how long the kernel caches
        self.inodes: dict[int, Inode] = {}
        self._next_ino = ROOT_INO + 1
        self.memo = MetaMemo()
        now = time.time()
        root = Inode(
            ROOT_INO, ROOT_INO, "", Kind.DIR, mtime=now, ctime=now, expiry=math.inf, lookups=1
        )
        self.inodes[ROOT_INO] = root

    # -- numbers, keys, names ------------------------------------------------------------
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

    def check_key(self, parent: Inode, name: str, suffix: str = "", below: int = 0) -> None:
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

    def deepest(self, node: Inode) -> int:
        """Bytes of the longest path below directory ``node`` that this mount knows of."""
        best = 0
        for name, ino in node.children.items():
            child = self.inodes.get(ino)
            if child is not None:
                below = 1 + self.deepest(child) if child.kind is Kind.DIR else 0
                best = max(best, len(name.encode()) + below)
        return best

    # -- attributes ----------------------------------------------------------------------
    def attr(self, node: Inode) -> Attr:
        # (locals and module-level kinds: readdir asks this once per entry listed)
        kind, opts, writer = node.kind, self.opts, node.writer
        if kind is _FILE:
            mode = _S_IFREG | (node.perm if node.perm is not None else opts.file_mode)
            nlink = 1
        elif kind is _DIR:
            mode = stat.S_IFDIR | (node.perm if node.perm is not None else opts.dir_mode)
            # "." and the entry in its parent, plus each subdirectory's ".."
            nlink = 2 + node.subdirs
        else:
            mode = SYMLINK_MODE
            nlink = 1
        if node.detached:
            nlink = 0  # unlinked (or gone from the bucket) while still open
        size = writer.size if writer is not None else node.size
        mtime = node.mtime or time.time()
        # A mkdir'd directory changes only through this mount's own operations, which the
        # kernel sees and invalidates its caches for, so it is cached as long as remote
        # attributes (with 0, every path walk through a new directory was a FUSE lookup). The
        # name of a file being written is not: its upload can be abandoned behind the kernel's
        # back (a killed writer, R-WRITE-KILLED-PUBLISHES-NOTHING), and its name must go at
        # once - every path walk to it is a FUSE lookup, whose answer also refreshes these
        # attributes. Its attributes are cached all the same: they change only through the
        # kernel's own writes and setattrs, and with 0 every open(O_CREAT) cost a getattr
        # (the kernel's permission check on the new inode) - one FUSE request per created file.
        ttl = self._kernel_ttl
        timeout = 0.0 if writer is not None else ttl
        return Attr(  # positional (half the cost of keywords): the fields in their order
            node.ino,
            mode,
            size if kind is not _DIR else 0,
            node.uid if node.uid is not None else opts.uid,
            node.gid if node.gid is not None else opts.gid,
            mtime,
            node.atime if node.atime is not None else mtime,  # atime
            node.ctime or mtime,  # ctime
            nlink,
            timeout,
            ttl,  # attr_timeout
        )

    def new_metadata(self, node: Inode) -> dict[str, str]:
        """The user metadata an object written for ``node`` gets (what differs from the
        mount's defaults, and the mtime the user set)."""
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

    @staticmethod
    def touch_dir(node: Inode) -> None:
        """An entry was added to or removed from directory ``node`` by this mount: its
        mtime and ctime change (kept in the mount; directories have no object)."""
        node.mtime = node.ctime = time.time()

    # -- the tree ------------------------------------------------------------------------
    def child(self, parent: Inode, name: str) -> Inode | None:
        ino = parent.children.get(name)
        return self.inodes.get(ino) if ino is not None else None

    def install(self, parent: Inode, name: str, kind: Kind, info: ObjectInfo | None) -> Inode:
        """Create or refresh the inode for a remote entry (kind may have changed)."""
        node = self.child(parent, name)
        if node is not None and node.kind is not kind:
            if node.local or self.keep_as_local(node):
                return node  # a local directory or a file being written wins
            self.detach(parent, node)
            node = None
        if node is None:
            node = Inode(self._new_ino(), parent.ino, name, kind, ctime=time.time())
            self.inodes[node.ino] = node
            self.link(parent, name, node)
        parent.negative.pop(name, None)
        if node.local and kind is Kind.DIR:
            node.local = False  # someone wrote into it: it exists remotely now
        if not node.local:
            node.expiry = _now() + self.opts.metadata_ttl
        if info is not None and node.writer is None:
            self._refresh(node, info)
        elif kind is Kind.DIR and not node.mtime:
            node.mtime = time.time()
        return node

    def listed_unchanged(
        self, parent: Inode, name: str, info: ObjectInfo, expiry: float
    ) -> Inode | None:
        """A listing's warm path: when ``name`` is a remote file this mount knows with the
        listed object's ETag (not being written, not a symlink by the memo), what
        :meth:`install` would do to it - the TTL starts again (until ``expiry``), the size
        is the listed one, the name is no longer absent - done without the rest; the inode.
        None when it needs :meth:`install` (new, replaced, local or another kind)."""
        ino = parent.children.get(name)
        node = self.inodes.get(ino) if ino is not None else None
        if (
            node is None
            or node.kind is not _FILE
            or node.etag != info.etag
            or node.local
            or node.writer is not None
            or not node.mtime
        ):
            return None
        memo = self.memo.get(info.key)
        if memo is not None and memo[0] in (None, info.etag) and is_symlink_meta(memo[1]):
            return None  # a listing shows it as a symlink: install replaces the inode
        if parent.negative:
            parent.negative.pop(name, None)
        node.expiry = expiry
        node.size = info.size
        return node

    def _refresh(self, node: Inode, info: ObjectInfo) -> None:
        """Take an object's size, ETag and metadata (from HEAD: authoritative; from a
        listing: the memo's, or nothing when the object was replaced by someone else)."""
        replaced = node.etag is not None and node.etag != info.etag
        if replaced:
            node.target = None
        # An object without x-amz-meta-mtime has LastModified as its mtime, which S3
        # reports in whole seconds: an object this mount already knows (same ETag)
        # keeps the mtime it reported so far, so stat does not flip on revalidation.
        fallback_mtime = node.mtime if node.mtime and node.etag == info.etag else info.mtime
        node.size = info.size
        node.etag = info.etag
        memo = self.memo.get(info.key)
        if info.metadata is not None:  # from HEAD: authoritative
            self.apply_meta(node, info.metadata, fallback_mtime)
            self.memo.put(info.key, info.etag, info.metadata)
        elif memo is not None and memo[0] in (None, info.etag) and (replaced or not node.mtime):
            self.apply_meta(node, memo[1], info.mtime)
            self.memo.put(info.key, info.etag, memo[1])
        elif replaced or not node.mtime:
            # from a listing (no user metadata): the object was replaced by someone else,
            # so what we knew of its metadata is stale.
            node.metadata = {}
            node.perm = node.uid = node.gid = None
            node.mtime = info.mtime

    @staticmethod
    def apply_meta(node: Inode, metadata: Mapping[str, str], fallback_mtime: float) -> None:
        perm, uid, gid, mtime = parse_meta(metadata)
        node.metadata = dict(metadata)
        node.perm, node.uid, node.gid = perm, uid, gid
        node.mtime = mtime if mtime is not None else fallback_mtime

    def add_local(
        self, parent: Inode, name: str, kind: Kind, mode: int, uid: int, gid: int
    ) -> Inode:
        """Link a new inode that exists only in this mount (mkdir, or a file being created)
        as ``name`` in ``parent`` (ENOENT once ``parent`` was removed or replaced: its key
        may belong to another directory by now)."""
        if parent.detached:
            raise FsError(errno.ENOENT, "the directory was removed")
        now = time.time()
        node = Inode(
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
        self.inodes[node.ino] = node
        self.link(parent, name, node)
        parent.negative.pop(name, None)
        return node

    def link(self, parent: Inode, name: str, node: Inode) -> None:
        """Make ``node`` the entry ``name`` of ``parent`` (every link of the tree goes through
        here and :meth:`unlink`: they keep ``subdirs``)."""
        old = self.child(parent, name)
        if old is not None and old.kind is Kind.DIR:
            parent.subdirs -= 1
        parent.children[name] = node.ino
        if node.kind is Kind.DIR:
            parent.subdirs += 1

    def revive(self, parent: Inode | None, name: str, node: Inode) -> None:
        """A readdir snapshot hands the kernel ``node`` after the kernel forgot it and
        :meth:`maybe_drop` dropped it: it is in the table again (the kernel will look it up by
        this inode number), and under ``name`` in ``parent`` again unless it was removed
        meanwhile or the name now holds another entry."""
        self.inodes[node.ino] = node
        if parent is not None and not node.detached and name not in parent.children:
            self.link(parent, name, node)

    def unlink(self, parent: Inode, node: Inode, name: str | None = None) -> bool:
        """Remove the entry ``name`` (default: the node's name) of ``parent`` if it is
        ``node``; True if it was."""
        name = node.name if name is None else name
        if parent.children.get(name) != node.ino:
            return False
        del parent.children[name]
        if node.kind is Kind.DIR:
            parent.subdirs -= 1
        return True

    def detach(self, parent: Inode, node: Inode) -> None:
        self.unlink(parent, node)
        node.detached = True
        self.maybe_drop(node)

    def maybe_drop(self, node: Inode) -> None:
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
            if parent is not None and self.unlink(parent, node):
                # the tree no longer holds every name this mount knows here
                parent.complete_until, parent.names = 0.0, None

    def holds_local(self, node: Inode) -> bool:
        """True when something under ``node`` exists only in this mount (a mkdir'd
        directory, a file being written, a directory this mount emptied: R-DIR-EMPTIED-STAYS
        keeps it, so its parents stay too)."""
        return any(
            (c := self.inodes.get(i)) is not None
            and (
                c.local
                or c.writer is not None
                or (c.kind is Kind.DIR and c.emptied and not c.detached)
                or self.holds_local(c)
            )
            for i in node.children.values()
        )

    def keep_as_local(self, node: Inode) -> bool:
        """A directory that S3 no longer shows (its objects were renamed or deleted) but that
        holds local entries stays, as a local directory: dropping it would orphan what was
        just made in it (the ``make demo`` race: a task's ``mkdir`` under ``_temporary`` got
        ENOENT once the previous task's rename emptied it and its TTL expired)."""
        if node.kind is not Kind.DIR or not (node.emptied or self.holds_local(node)):
            return False
        node.local, node.expiry = True, math.inf
        return True

    def mark_remote_ancestors(self, node: Inode) -> None:
        """``node`` now has an object: every directory above it follows S3 again, and is
        known to exist as of now (as a revalidation would have shown: R-META-PUBLISH-PROVES)."""
        parent = self.inodes.get(node.parent)
        now = _now()
        while parent is not None and parent.ino != ROOT_INO:
            parent.emptied = False  # it holds an object again: it follows S3 again
            if parent.local:
                parent.local = False
                parent.published_at = now  # a listing that started earlier may not show it
                parent.expiry = now + self.opts.metadata_ttl
            else:
                parent.expiry = max(parent.expiry, now + self.opts.metadata_ttl)
            parent = self.inodes.get(parent.parent)

    def forget_absent_since(self, node: Inode, since: float) -> None:
        """Drop what directory ``node`` and every directory below it learnt to be absent at
        or after ``since`` (names remembered absent, a LIST page's names, "every name is
        known"; each is learnt ``--negative-metadata-ttl`` before it ends): a rename moved
        their objects from then on, and a lookup that saw a source already deleted took it
        for absent. What was known before the move stays true of the moved directory."""
        learnt = since + self.opts.negative_metadata_ttl  # knowledge ending after this
        pending = [node]
        while pending:
            current = pending.pop()
            for name in [n for n, until in current.negative.items() if until >= learnt]:
                del current.negative[name]
            if current.names_until >= learnt:
                current.names, current.names_until = None, 0.0
            if current.complete_until >= learnt:
                current.complete_until = 0.0
            pending.extend(
                c
                for i in current.children.values()
                if (c := self.inodes.get(i)) is not None and c.kind is Kind.DIR
            )

    def note_absent(self, parent: Inode, name: str) -> None:
        """``name`` does not exist in ``parent`` now: remember that for the negative TTL."""
        if self.opts.negative_metadata_ttl > 0:
            parent.negative[name] = _now() + self.opts.negative_metadata_ttl

    # -- lookup counts -------------------------------------------------------------------
    def remember(self, ino: int, count: int = 1) -> None:
        self.inodes[ino].lookups += count

    def forget(self, ino: int, count: int) -> None:
        node = self.inodes.get(ino)
        if node is None:
            return
        node.lookups -= count
        self.maybe_drop(node)
