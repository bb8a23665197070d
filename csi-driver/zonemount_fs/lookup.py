"""Name resolution: what a name in a directory is (lookup), and revalidating an inode (getattr).

Owns the decision of when to ask S3 and how, over the state kept by :mod:`.inodes` and
:mod:`.listing`:

1. The tree answers first: ``.``/``..``, invalid names (ENOENT), names too long for a key
   (ENAMETOOLONG), an inode that is local, being written or not yet expired - or expired,
   in a directory walked so far past the TTL that listing it again is cheaper than asking
   per name (:meth:`~.listing.Listing.relisted`, R-META-RELIST).
2. Negative knowledge answers a miss without a request: a name remembered absent
   (``--negative-metadata-ttl``), a local directory (nothing remote lives under it), a
   directory this mount listed in full or made (``complete_until``).
3. Otherwise S3: in a small directory (negative caching on, not ``large``) one LIST page
   answers this miss and its siblings' (:meth:`~.listing.Listing.page_names`), a file then
   gets its HEAD; anywhere else a HEAD of the key and a LIST of ``name/`` run together
   (:meth:`Resolver.remote_lookup`). A directory shadows a file of the same name.
4. A miss S3 confirms detaches the name's inode unless it is local (or a directory kept as
   local) and is remembered for the negative TTL.

Concurrency: one trio thread; after every await that talks to S3 the parent is re-read by
number (another task may have changed the tree) before anything is installed or detached,
and an answer for a key the inode no longer has (a rename re-linked it meanwhile) is not
applied: the name is asked about again under its new key (R-RENAME-DIR-HOLDS-WRITES).
"""

from __future__ import annotations

import errno
from time import monotonic as _now
from typing import Any

import trio

from .context import IoContext
from .errors import FsError, StoreError
from .inodes import ROOT_INO, Attr, Inode, InodeTable, Kind, valid_name
from .listing import Listing
from .meta import is_symlink_meta
from .store.base import ObjectInfo

#: How often a lookup or getattr asks again when the directory (or inode) was renamed while
#: S3 answered for its old key.
_RENAMED_RETRIES = 3

#: The longest a kernel negative entry lives (as the kernel's positive entries, see
#: :meth:`~.inodes.InodeTable.attr`), whatever ``--negative-metadata-ttl`` says.
KERNEL_NEGATIVE_MAX = 3600.0

#: What S3 showed for a name: its kind and, for a file or symlink, its object.
Found = tuple[Kind, ObjectInfo | None]


def _object_kind(info: ObjectInfo) -> Found:
    return Kind.SYMLINK if is_symlink_meta(info.metadata) else Kind.FILE, info


class Resolver:
    """lookup and getattr over the inode table, asking S3 only when the tree cannot answer."""

    def __init__(self, ctx: IoContext, tree: InodeTable, listing: Listing) -> None:
        self.ctx = ctx
        self.tree = tree
        self.listing = listing

    async def resolve(self, parent_ino: int, name: str) -> Inode:
        """The inode of ``name`` in directory ``parent_ino`` (ENOENT when there is none)."""
        for _ in range(_RENAMED_RETRIES):
            parent = self.tree.inode(parent_ino)
            special = self._special(parent, name)
            if special is not None:
                return special
            fresh = await self._known_fresh(parent, name)
            if fresh is not None:
                return fresh
            parent = self.tree.inode(parent_ino)  # re-read after await
            if self.tree.child(parent, name) is None and self._known_absent(parent, name):
                raise FsError(errno.ENOENT, cache_for=self._absent_for(parent, name))
            if self.tree.child(parent, name) is None and await self._relisted_for_miss(parent):
                parent = self.tree.inode(parent_ino)  # re-read after await
                node = self.tree.child(parent, name)
                if node is not None and node.expiry > _now():
                    return node
                if node is None and self._known_absent(parent, name):
                    raise FsError(errno.ENOENT, cache_for=self._absent_for(parent, name))
            prefix = self.tree.dir_prefix(parent)
            if (
                self.tree.child(parent, name) is None
                and self.ctx.opts.negative_metadata_ttl > 0
                and not parent.large
            ):
                found = await self._by_listing(parent, name)
            else:
                found = await self.remote_lookup(parent, name)
            parent = self.tree.inode(parent_ino)  # re-read after await
            if self.tree.dir_prefix(parent) != prefix:
                continue  # renamed while S3 answered for the old key: ask under the new one
            if found is None:
                return self._missing(parent, name)
            kind, info = found
            return self.tree.install(parent, name, kind, info)
        raise FsError(errno.ESTALE, "the directory was renamed during every lookup")

    def _special(self, parent: Inode, name: str) -> Inode | None:
        """``.`` and ``..``; ENOTDIR, ENOENT for names no key can have, ENAMETOOLONG;
        None for an ordinary name."""
        if parent.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if name == ".":
            return parent
        if name == "..":
            return self.tree.inode(parent.parent)
        if not valid_name(name):
            raise FsError(errno.ENOENT)
        self.tree.check_key(parent, name)
        return None

    async def _known_fresh(self, parent: Inode, name: str) -> Inode | None:
        """The tree's inode for ``name`` when it answers without asking S3 about the name:
        local, being written, or attributes not yet expired (after listing ``parent`` again
        when that is cheaper than revalidating one by one, see
        :meth:`~.listing.Listing.relisted`)."""
        node = self.tree.child(parent, name)
        if node is None:
            return None
        if node.local or node.writer is not None or node.expiry > _now():
            return node
        if await self.listing.relisted(parent):
            node = self.tree.child(self.tree.inode(parent.ino), name)
            if node is not None and node.expiry > _now():
                return node
        return None

    async def _relisted_for_miss(self, parent: Inode) -> bool:
        """A miss in a large directory this mount made or listed in full, whose negative
        knowledge expired, counts like an expired entry (:meth:`~.listing.Listing.relisted`):
        once asking name by name (HEAD + LIST each) would cost more than listing it again, it
        is listed, which renews that knowledge (an untar or a Spark job writing thousands of
        files into one directory: otherwise every new name costs two requests once the
        directory outlives the negative TTL). True when it was listed again."""
        if self.ctx.opts.negative_metadata_ttl <= 0 or not parent.large:
            return False
        return await self.listing.relisted(parent)

    @staticmethod
    def _known_absent(parent: Inode, name: str) -> bool:
        """A name the tree does not hold is known not to exist: remembered absent, under a
        local directory (nothing remote lives there), or in a directory this mount knows
        every name of (made or listed it)."""
        negative = parent.negative.get(name)
        return (
            (negative is not None and negative > _now())
            or parent.local
            or parent.complete_until > _now()
        )

    def _absent_for(self, parent: Inode, name: str) -> float:
        """How long the kernel may cache the miss of a name :meth:`_known_absent` denies
        (R-META-NEGATIVE-KERNEL): until this mount's own knowledge of it ends (the name
        remembered absent, or the directory known whole); a local directory, whose
        knowledge does not end, for ``--negative-metadata-ttl``. A name another client
        creates shows within that TTL, as without the kernel's cache; names this mount
        creates go through the kernel, which replaces its negative entry."""
        now = _now()
        until = max(parent.negative.get(name, 0.0), parent.complete_until)
        ttl = self.ctx.opts.negative_metadata_ttl
        left = max(until - now, ttl if parent.local else 0.0)
        return min(left, ttl, KERNEL_NEGATIVE_MAX)

    def _missing(self, parent: Inode, name: str) -> Inode:
        """S3 shows no ``name``: a local inode of that name stays; otherwise it is detached,
        the miss remembered, and ENOENT raised."""
        node = self.tree.child(parent, name)
        if node is not None and (
            node.local or node.writer is not None or self.tree.keep_as_local(node)
        ):
            return node
        if node is not None:
            self.tree.detach(parent, node)
        self.tree.note_absent(parent, name)
        raise FsError(errno.ENOENT, cache_for=self._absent_for(parent, name))

    async def _by_listing(self, parent: Inode, name: str) -> Found | None:
        """A lookup of a name the tree does not hold, in a directory small enough for one
        LIST page: the page's names answer this and later misses for the negative TTL; a
        file still gets its HEAD (for its metadata), a directory needs nothing more."""
        if not await self.listing.page_names(parent):
            return await self.remote_lookup(parent, name)
        assert parent.names is not None
        if name not in parent.names:
            return None
        if name in parent.dir_names:
            return Kind.DIR, None  # a directory shadows a file of the same name
        try:
            info = await self.ctx.run(self.ctx.store.head, self.tree.dir_prefix(parent) + name)
        except StoreError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise FsError(exc.errno, str(exc)) from None
        return _object_kind(info)

    async def remote_lookup(self, parent: Inode, name: str) -> Found | None:
        """Ask S3 what ``name`` is: a directory (shadows a file), a file, or nothing."""
        base = self.tree.dir_prefix(parent) + name
        store = self.ctx.store
        result: dict[str, Any] = {}

        async def head() -> None:
            try:
                result["file"] = await self.ctx.run(store.head, base)
            except StoreError as exc:
                if exc.errno != errno.ENOENT:
                    result["error"] = exc

        async def listing() -> None:
            try:
                page = await self.ctx.run(store.list_page, base + "/", "/", None, 1)
                result["dir"] = bool(page.objects or page.prefixes)
            except StoreError as exc:
                result["error"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(head)
            nursery.start_soon(listing)
        if result.get("dir"):
            return Kind.DIR, None
        if "file" in result:
            return _object_kind(result["file"])
        if "error" in result:
            err: StoreError = result["error"]
            raise FsError(err.errno, str(err))
        return None

    def attr_now(self, ino: int) -> Attr | None:
        """:meth:`getattr`'s answer when it needs neither a request nor a wait (the inode's
        attributes are current: the root, a local inode, a file being written, attributes
        within their TTL); None when :meth:`getattr` must run. The kernel asks for the
        directory's attributes before every unlink in it (``default_permissions``: each
        unlink invalidates them), so ``rm -rf`` sends one such getattr per file."""
        node = self.tree.inodes.get(ino)
        if node is None or node.detached:
            return None
        if node.ino == ROOT_INO or node.local or node.writer is not None or node.expiry > _now():
            return self.tree.attr(node)
        return None

    async def getattr(self, ino: int, *, revalidate: bool = False) -> Attr:
        """The inode's attributes; asks S3 again once they expired (or ``revalidate``).

        An answer S3 gave for the inode's old key (it was renamed, or a directory above it,
        while the request was under way) is not applied: the inode is asked about again
        under its new key."""
        for _ in range(_RENAMED_RETRIES):
            attr = await self._getattr_once(ino, revalidate=revalidate)
            if attr is not None:
                return attr
        return self.tree.attr(self.tree.inode(ino))  # renamed during every try: as it is

    async def _getattr_once(self, ino: int, *, revalidate: bool) -> Attr | None:
        """:meth:`getattr`, or None when the inode was renamed while S3 answered."""
        node = self.tree.inode(ino)
        if node.ino == ROOT_INO or node.local or node.writer is not None:
            return self.tree.attr(node)
        if node.detached:
            if node.open_handles:
                return self.tree.attr(node)  # fstat after unlink: nlink 0, as POSIX says
            # A path walk that raced an unlink or rename (the kernel checks permissions of
            # the dentry it still had): ESTALE makes it walk again (LOOKUP_REVAL) and see the
            # name as it is now - an open(O_CREAT) then creates instead of failing ENOENT.
            raise FsError(errno.ESTALE)
        if (
            not revalidate
            and node.expiry <= _now()
            and await self.listing.relisted(self.tree.inode(node.parent))
        ):
            node = self.tree.inode(ino)  # re-read after await
        if revalidate or node.expiry <= _now():
            key = self.tree.key_of(node)
            found = await self.remote_lookup(self.tree.inode(node.parent), node.name)
            node = self.tree.inode(ino)  # re-read after await
            if node.detached or self.tree.key_of(node) != key:
                return None  # renamed (or unlinked) meanwhile: the answer is for another key
            if found is None or found[0] is not node.kind:
                if node.open_handles or self.tree.keep_as_local(node):
                    return self.tree.attr(node)  # an open file keeps its attributes
                holder = self.tree.inodes.get(node.parent)
                if holder is not None:
                    self.tree.detach(holder, node)
                raise FsError(errno.ESTALE)  # gone (or replaced): the kernel walks again
            node = self.tree.install(self.tree.inode(node.parent), node.name, *found)
        return self.tree.attr(node)
