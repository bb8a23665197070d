"""Moves under way: a rename holds the operations that write keys under what it moves.

Keys are computed from the parent chain (:meth:`~.inodes.InodeTable.key_of`), so an operation
that writes an object computes its key from the tree as it is when it starts. A rename moves
a directory's objects by listing its prefix and copying what it listed; an object written
under the old prefix after that listing (a file created in the directory, a symlink, a
metadata copy, an unlink's delete, a nested rename's copy) would stay under the old name in
S3 while the tree shows it under the new one (R-RENAME-DIR). The kernel does not prevent
that: it locks the parent of a directory renamed within that parent, not the directory.

:class:`Moves` closes the window with two marks, both kept here:

* **moving**: the inodes a rename is re-keying (its source, and the target it replaces),
  from just before it checks EBUSY until it has re-linked the tree (or failed);
* **changing**: the inodes under which an operation that writes keys is under way (its
  parent directory, or the file itself), for the length of that operation.

Invariants:

* An operation enters ``changing`` only when nothing at or above its inodes is ``moving``;
  otherwise it waits for that rename to end and checks again, so it computes its keys from
  the tree the rename left (the new name, or the old one if the rename failed).
* A rename starts moving data only once no ``changing`` operation at or below its inodes is
  under way; operations that started before it are finished (their objects are listed and
  moved, or their writers make the rename fail with EBUSY).
* A file being written is not "changing" for its whole life: its writer is what makes a
  rename fail with EBUSY. Only the steps that give an inode a writer (create, open for
  writing, a write resuming a completed upload) are marked.

Deadlock freedom: a rename marks ``changing`` on its two parents before ``moving`` on its
source and target, which are below them; a rename waiting for operations below its source
never waits for an operation waiting on it (those have not entered ``changing``). Two
renames that move into each other's subtrees would wait on each other, but the kernel
serializes renames across directories (``s_vfs_rename_mutex``), and a rename within one
parent cannot involve another's subtree in both directions.

Concurrency: one trio thread; the walks up the tree happen between awaits, on the tree as
it is at that moment (a parent chain changes only by a rename's re-link). A readdir waits
for a rename moving its directory (:meth:`Moves.settled`). Lookups and getattr are not held
(an operation under way below a rename looks names up, so holding them would deadlock):
they, and listings, re-check the key they asked about after S3 answers (:mod:`.lookup`,
:mod:`.listing`). Reads are not held either: a file read while its directory moves may fail
once its old object is deleted (renames are not atomic on general-purpose buckets).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, cast

import trio

from .inodes import ROOT_INO, InodeTable

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Moves:
    """The renames re-keying inodes of one mount, and the operations writing keys under
    them (see the module docstring)."""

    def __init__(self, tree: InodeTable) -> None:
        self.tree = tree
        self._moving: dict[int, trio.Event] = {}  # inode -> set when its rename ends
        self._changing: dict[int, int] = {}  # inode -> operations under way
        self._quiet: trio.Event | None = None  # set when a changing operation ends
        self.waiting = 0  # operations waiting for a rename to end (for tests and debugging)

    def _chain(self, ino: int) -> list[int]:
        """``ino`` and every directory above it, up to the root (as the tree is now)."""
        chain = [ino]
        node = self.tree.inodes.get(ino)
        while node is not None and node.ino != ROOT_INO:
            chain.append(node.parent)
            node = self.tree.inodes.get(node.parent)
        return chain

    def _moving_above(self, inos: tuple[int, ...]) -> trio.Event | None:
        if not self._moving:
            return None
        for ino in inos:
            for above in self._chain(ino):
                event = self._moving.get(above)
                if event is not None:
                    return event
        return None

    def moving_at_or_above(self, ino: int) -> bool:
        """Is a rename re-keying ``ino`` or a directory above it now?"""
        return self._moving_above((ino,)) is not None

    def changing_at_or_below(self, ino: int) -> bool:
        """Is an operation writing keys at or below ``ino`` under way now?"""
        return bool(self._changing) and self._changing_below((ino,))

    def changing(self, *inos: int) -> _Changing:
        """Hold an operation that writes keys under ``inos`` (directories it writes in, or
        the file it gives a writer) until no rename re-keys them, and keep renames of
        anything above them from moving data until it ends (``async with``)."""
        return _Changing(self, inos)

    async def _enter(self, inos: tuple[int, ...]) -> None:
        if self._moving:
            await self._wait(inos)
        counts = self._changing
        for ino in inos:
            counts[ino] = counts.get(ino, 0) + 1

    async def _wait(self, inos: tuple[int, ...]) -> None:
        while (event := self._moving_above(inos)) is not None:
            self.waiting += 1
            try:
                await event.wait()
            finally:
                self.waiting -= 1

    async def settled(self, ino: int) -> None:
        """Wait until no rename re-keys ``ino`` or a directory above it (a readdir, which
        must not list a directory half moved; it writes nothing, so it is not counted)."""
        if self._moving:
            await self._wait((ino,))

    def _exit(self, inos: tuple[int, ...]) -> None:
        counts = self._changing
        for ino in inos:
            left = counts[ino] - 1
            if left:
                counts[ino] = left
            else:
                del counts[ino]
        if self._quiet is not None:
            self._quiet.set()
            self._quiet = None

    def _changing_below(self, inos: tuple[int, ...]) -> bool:
        wanted = set(inos)
        return any(wanted.intersection(self._chain(ino)) for ino in self._changing)

    @asynccontextmanager
    async def moving(self, *inos: int) -> AsyncIterator[None]:
        """Mark ``inos`` as being re-keyed by a rename: new operations under them wait until
        this ends; returns into the block once those already under way have ended."""
        event = trio.Event()
        marked = [ino for ino in inos if ino not in self._moving]
        for ino in marked:
            self._moving[ino] = event
        try:
            while self._changing_below(inos):
                self._quiet = self._quiet or trio.Event()
                await self._quiet.wait()
            yield
        finally:
            for ino in marked:
                del self._moving[ino]
            event.set()


class _Changing:
    """``async with moves.changing(...)`` (a class: the hot path of every create)."""

    __slots__ = ("_inos", "_moves")

    def __init__(self, moves: Moves, inos: tuple[int, ...]) -> None:
        self._moves, self._inos = moves, inos

    async def __aenter__(self) -> None:
        await self._moves._enter(self._inos)

    async def __aexit__(self, *exc: object) -> None:
        self._moves._exit(self._inos)


class _HasMoves(Protocol):
    moves: Moves


def changes_under(*positions: int) -> Callable[[F], F]:
    """Decorate a method whose positional arguments at ``positions`` (after ``self``) are
    the inodes it writes keys under: it runs inside :meth:`Moves.changing` of them."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def held(self: _HasMoves, *args: Any, **kwargs: Any) -> Any:
            async with self.moves.changing(*(args[p] for p in positions)):
                return await fn(self, *args, **kwargs)

        return cast(F, held)

    return wrap
