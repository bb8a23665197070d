"""The CSI services' keyed locks: which volumes, targets and buckets an operation holds.

After csi-driver-host-path's and Mountpoint's ``VolumeLocks``: a second RPC on a volume (or a
target path) that is already in flight is refused with ABORTED, which the CO retries later,
rather than queued behind the first (the CSI spec's "operation pending" rule).

* :class:`InFlight` - the keys (``volume:<id>``, ``target:<path>``, ``name:<name>``) of the
  operations in progress; :meth:`InFlight.exclusive` claims all of an operation's keys or
  none, raising ABORTED; :meth:`InFlight.claim` reports the busy key instead (the node's
  supervisor skips busy volumes rather than fail). Only operations that change a volume
  claim it: the supervisor's health check does not (an RPC meeting one would be ABORTED for
  a read, and the kubelet's retry backoff starts at 500 ms); it claims a volume to repair it.
* :class:`KeyedLock` - a blocking lock per key (the controller's per-bucket lock, which makes
  the overlap check and the record write of CreateVolume one step).

Invariants: keys are released when the block exits, however it exits; claiming several keys
is atomic (no partial claim is ever visible); a :class:`KeyedLock` key's lock lives as long as
the object (one per bucket: a handful).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterator

import grpc

from .errors import CsiError


class InFlight:
    """The set of keys held by operations in progress (thread safe)."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._busy: set[str] = set()

    @contextlib.contextmanager
    def claim(self, *keys: str) -> Iterator[str | None]:
        """Hold ``keys`` for the block and yield ``None``; or, when one is held already, hold
        none of them and yield that busy key."""
        with self._mu:
            busy = next((k for k in keys if k in self._busy), None)
            if busy is None:
                self._busy.update(keys)
        if busy is not None:
            yield busy
            return
        try:
            yield None
        finally:
            with self._mu:
                self._busy.difference_update(keys)

    @contextlib.contextmanager
    def exclusive(self, *keys: str) -> Iterator[None]:
        """Hold ``keys`` for the block, or raise ABORTED naming the busy one (without its
        ``kind:`` part)."""
        with self.claim(*keys) as busy:
            if busy is not None:
                raise CsiError(
                    grpc.StatusCode.ABORTED,
                    f"an operation on {busy.split(':', 1)[-1][:120]} is already in progress: "
                    "retry later",
                )
            yield


class KeyedLock:
    """One :class:`threading.Lock` per key, made on first use: ``with locks(key): ...``."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}

    def __call__(self, key: Hashable) -> threading.Lock:
        with self._mu:
            return self._locks.setdefault(key, threading.Lock())
