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
5. A walk over a directory's files in key order (a reader opening them one after another)
   has the next files HEADed at once, ahead of their lookups (:class:`WalkAhead`,
   R-META-LOOKUP-AHEAD): the kernel sends the lookups of one directory one at a time.

Concurrency: one trio thread; after every await that talks to S3 the parent is re-read by
number (another task may have changed the tree) before anything is installed or detached,
and an answer for a key the inode no longer has (a rename re-linked it meanwhile) is not
applied: the name is asked about again under its new key (R-RENAME-DIR-HOLDS-WRITES).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from time import monotonic as _now
from typing import Any

import trio

from .context import IoContext
from .errors import FsError, StoreError, StoreUnavailable
from .inodes import ROOT_INO, Attr, Inode, InodeTable, Kind, valid_name
from .listing import Listing
from .meta import is_symlink_meta
from .store.base import ListPage, ObjectInfo

#: How often a lookup or getattr asks again when the directory (or inode) was renamed while
#: S3 answered for its old key.
_RENAMED_RETRIES = 3

#: The longest a kernel negative entry lives (as the kernel's positive entries, see
#: :meth:`~.inodes.InodeTable.attr`), whatever ``--negative-metadata-ttl`` says.
KERNEL_NEGATIVE_MAX = 3600.0

#: What S3 showed for a name: its kind and, for a file or symlink, its object.
Found = tuple[Kind, ObjectInfo | None]

log = logging.getLogger("zonemount.fs")

#: Files HEADed at once ahead of a walk (:class:`WalkAhead`); the next ones are fetched when
#: the walk's lookups reach the middle of these.
AHEAD = 8
#: Found lookups in a directory after a failed walk check before it is checked again.
AHEAD_COOLDOWN = 16
#: Directories whose walks are followed at once (the oldest is forgotten past this).
AHEAD_DIRS = 64


def _object_kind(info: ObjectInfo) -> Found:
    return Kind.SYMLINK if is_symlink_meta(info.metadata) else Kind.FILE, info


class Resolver:
    """lookup and getattr over the inode table, asking S3 only when the tree cannot answer."""

    def __init__(self, ctx: IoContext, tree: InodeTable, listing: Listing) -> None:
        self.ctx = ctx
        self.tree = tree
        self.listing = listing
        self.ahead = WalkAhead(ctx, tree)

    async def resolve(self, parent_ino: int, name: str) -> Inode:
        """The inode of ``name`` in directory ``parent_ino`` (ENOENT when there is none)."""
        self.ahead.passed(parent_ino, name)
        for _ in range(_RENAMED_RETRIES):
            await self.ahead.wait(parent_ino, name)
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
            self.ahead.found(parent, name, info)
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


@dataclass(eq=False)
class _Walk:
    """What :class:`WalkAhead` follows in one directory (asked under ``prefix``)."""

    prefix: str
    last_found: str | None = None  # the last file a lookup found by asking S3
    after: str | None = None  # the last key fetched ahead (the next page starts after it)
    refill_at: str | None = None  # a lookup of this name or later fetches the next page
    fetching: trio.Event | None = None  # set when the page being fetched ahead is in
    ended: bool = False  # the last page fetched ahead reached the directory's end
    cooldown: int = 0
    inflight: dict[str, _Ahead] = field(default_factory=dict)


@dataclass
class _Ahead:
    """One HEAD fetched ahead: ``done`` is set when it ended; ``unanswered`` is the failure
    when S3 did not answer it (a deadline missed, unreachable after retries)."""

    done: trio.Event = field(default_factory=trio.Event)
    unanswered: StoreUnavailable | None = None


class WalkAhead:
    """HEADs ahead of a walk over a directory's files (R-META-LOOKUP-AHEAD).

    The kernel sends the lookups of one directory one at a time (no ``FUSE_PARALLEL_DIROPS``:
    libfuse 3.14, Debian 12's, never sends it; 3.17.x sends it only when the file system's
    init asks, and pyfuse3 3.5.0's does not - ``python -m bench.parallel_dirops``), so eight
    readers opening the files of one directory each wait for the others' lookups, a HEAD
    (with a LIST in a large directory) each: ~19 ms a name on the shaped profile, at most
    ~53 files/s whatever the read path does.

    A *walk* is two lookups that found files in a directory by asking S3, the second within
    :data:`AHEAD` names after the first in key order (readers working through a directory
    side by side send them slightly out of order) - checked with one LIST page starting after
    the first. The other files on that page are then HEADed at once in the background and
    installed as their lookups would install them (with their metadata: a symlink stays a
    symlink); a lookup of a name whose HEAD is under way waits for it instead of asking
    again. A lookup reaching the middle of the names fetched ahead fetches the next
    page, until the directory's end. A check that fails (the reader skips names) is not made
    again in that directory for :data:`AHEAD_COOLDOWN` found lookups.

    Cost: a walk costs one LIST and :data:`AHEAD` HEADs per :data:`AHEAD` names (asked one by
    one, a large directory costs a HEAD and a LIST per name), and at its end up to
    :data:`AHEAD` HEADs of names nobody looks up. Nothing is fetched ahead with
    ``--metadata-ttl 0`` (every lookup asks S3 anyway).

    Only names the tree does not hold are fetched ahead: entries a listing installed are
    revalidated as R-META-RELIST says (by listing again), not one HEAD each.

    Invariants: an answer is installed only while the directory still has the prefix it was
    asked under and the tree holds no inode of that name (a lookup or listing got there
    first); a failed HEAD installs nothing (the name's own lookup asks), except that the
    lookups waiting for a HEAD S3 did not answer fail with it (EIO) rather than ask again:
    against a stalled S3 a lookup then fails one deadline after its HEAD was sent, not two.
    (Only the lookups already waiting share the failure: the kernel sends the next name's
    lookup after this one answered, and that lookup asks S3 itself, as R-ERR-DEADLINE says.)
    Background failures are logged, never raised.
    Concurrency: one trio thread; the directory is re-read by number after every await."""

    def __init__(self, ctx: IoContext, tree: InodeTable) -> None:
        self.ctx = ctx
        self.tree = tree
        self._walks: dict[int, _Walk] = {}

    def found(self, parent: Inode, name: str, info: ObjectInfo | None) -> None:
        """A lookup found ``name`` in ``parent`` by asking S3 (``info``: a file's object, None
        for a directory): a walk starts when a file follows the previous one in key order."""
        if info is None or self.ctx.opts.metadata_ttl <= 0:
            return
        prefix = self.tree.dir_prefix(parent)
        walk = self._walks.get(parent.ino)
        if walk is None or walk.prefix != prefix:
            if len(self._walks) >= AHEAD_DIRS:
                del self._walks[next(iter(self._walks))]
            walk = self._walks[parent.ino] = _Walk(prefix)
        last, walk.last_found = walk.last_found, name
        if walk.cooldown > 0:
            walk.cooldown -= 1
            return
        if walk.fetching is not None or last is None or not last < name:
            return
        walk.ended, walk.refill_at = False, None
        self._start(parent.ino, walk, prefix + last, name)

    def passed(self, parent_ino: int, name: str) -> None:
        """A lookup of ``name``: past the middle of the names fetched ahead, fetch more."""
        walk = self._walks.get(parent_ino)
        if (
            walk is None
            or walk.fetching is not None
            or walk.ended
            or walk.refill_at is None
            or walk.after is None
            or name < walk.refill_at
        ):
            return
        walk.refill_at = None
        self._start(parent_ino, walk, walk.after, None)

    def _start(self, parent_ino: int, walk: _Walk, after: str, expect: str | None) -> None:
        walk.after = after
        walk.fetching = trio.Event()
        self.ctx.nursery.start_soon(self._fetch, parent_ino, walk, after, expect)

    async def wait(self, parent_ino: int, name: str) -> None:
        """Wait for a HEAD of ``name`` fetched ahead, if one is under way - or may be soon:
        the page of names after the walk's last is being fetched (a lookup would otherwise
        ask S3 for it at the same time). Raises EIO when S3 did not answer that HEAD."""
        walk = self._walks.get(parent_ino)
        if walk is None:
            return
        if (
            name not in walk.inflight
            and walk.fetching is not None
            and walk.after is not None
            and walk.prefix + name > walk.after
        ):
            await walk.fetching.wait()
        ahead = walk.inflight.get(name)
        if ahead is not None:
            await ahead.done.wait()
            if ahead.unanswered is not None:
                raise FsError(errno.EIO, str(ahead.unanswered))

    async def _fetch(self, parent_ino: int, walk: _Walk, after: str, expect: str | None) -> None:
        """One page of names after key ``after``; with ``expect``, only if that name is on
        it (the walk check). HEAD the files on it (but ``expect``) at once."""
        try:
            page = await self.ctx.run(
                self.ctx.store.list_page, walk.prefix, "/", None, AHEAD + 1, after
            )
            self._take(parent_ino, walk, page, expect)
        except StoreError as exc:  # S3 failed: the walk's lookups ask for themselves
            log.debug("walk ahead in %s: %s", walk.prefix, exc)
        except Exception:  # a bug: logged, never fatal to the mount (this runs in its nursery)
            log.exception("walk ahead in %s", walk.prefix)
        finally:
            self._fetched(walk)

    def _take(self, parent_ino: int, walk: _Walk, page: ListPage, expect: str | None) -> None:
        entries = sorted([o.key for o in page.objects] + list(page.prefixes))
        parent = self.tree.inodes.get(parent_ino)
        if (
            not entries
            or parent is None
            or parent.detached
            or self.tree.dir_prefix(parent) != walk.prefix
            or (expect is not None and walk.prefix + expect not in entries)
        ):
            if expect is not None and entries:
                walk.cooldown = AHEAD_COOLDOWN  # not a walk: the reader skips names
            return
        shadowed = {p[len(walk.prefix) :].rstrip("/") for p in page.prefixes}
        names = [
            name
            for o in page.objects
            if (name := o.key[len(walk.prefix) :]) != expect
            and valid_name(name)
            and name not in shadowed
            and name not in walk.inflight
            and self.tree.child(parent, name) is None
        ]
        walk.after, walk.ended = entries[-1], page.next_token is None
        walk.refill_at = names[len(names) // 2] if names else None
        if not names:
            walk.cooldown = AHEAD_COOLDOWN  # the tree knows these names (R-META-RELIST's)
        for name in names:
            walk.inflight[name] = ahead = _Ahead()
            self.ctx.nursery.start_soon(self._head, parent_ino, walk, name, ahead)

    @staticmethod
    def _fetched(walk: _Walk) -> None:
        event, walk.fetching = walk.fetching, None
        if event is not None:
            event.set()

    async def _head(self, parent_ino: int, walk: _Walk, name: str, ahead: _Ahead) -> None:
        try:
            info = await self.ctx.run(self.ctx.store.head, walk.prefix + name)
            parent = self.tree.inodes.get(parent_ino)
            if (
                parent is not None
                and not parent.detached
                and self.tree.dir_prefix(parent) == walk.prefix
                and self.tree.child(parent, name) is None
            ):
                self.tree.install(parent, name, *_object_kind(info))
        except StoreUnavailable as exc:  # its waiting lookups fail with it; later ones ask
            ahead.unanswered = exc
            log.debug("walk ahead: HEAD %s%s: %s", walk.prefix, name, exc)
        except StoreError as exc:  # gone, or S3 answered with an error: the lookup asks
            log.debug("walk ahead: HEAD %s%s: %s", walk.prefix, name, exc)
        except Exception:
            log.exception("walk ahead: HEAD %s%s", walk.prefix, name)
        finally:
            if walk.inflight.get(name) is ahead:
                del walk.inflight[name]
            ahead.done.set()
