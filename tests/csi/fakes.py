"""In-memory :class:`~zonemount_csi.mounter.Mounter` for the node's unit matrix.

It never touches the kernel: a "mount" is an entry in a dict. Tests steer it: ``fail_next``
makes the next mount fail, ``gate`` holds mounts until set (to provoke ABORTED), ``on_state``
runs at each state probe (to hold a health check), ``break_mount`` simulates a FUSE process
killed with SIGKILL (the mount answers ENOTCONN). Every call is recorded so tests can assert
what the node asked for (argv, env).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from zonemount_csi.mounter import MountError, MountHandle, MountSpec
from zonemount_csi.mountinfo import MountState


@dataclass
class FakeMounter:
    mounted: dict[str, MountSpec] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    live_pids: set[int] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    specs: list[MountSpec] = field(default_factory=list)
    unmounted_caches: list[str] = field(default_factory=list)
    fail_next: str | None = None
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    problem: str | None = None
    #: Called with the target at the start of every ``state`` (a test makes a check slow).
    on_state: Callable[[str], None] | None = None
    _pid: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mount(self, spec: MountSpec, timeout: float) -> MountHandle:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        with self._lock:
            self.calls.append(("mount", spec.target))
            self.specs.append(spec)
            if self.fail_next is not None:
                message, self.fail_next = self.fail_next, None
                raise MountError(message)
            pid = next(self._pid)
            self.mounted[spec.target] = spec
            self.pids[spec.target] = pid
            self.live_pids.add(pid)
            self.broken.discard(spec.target)
            return MountHandle(pid, pid * 7)

    def remount(self, spec: MountSpec, timeout: float, old: MountHandle | None) -> MountHandle:
        """Like ProcessMounter: stop a live old process, detach the dead mount, mount again."""
        if old is not None:
            with self._lock:
                self.live_pids.discard(old.pid)
        self.lazy_unmount(spec.target)
        return self.mount(spec, timeout)

    def unmount(
        self, target: str, handle: MountHandle | None, timeout: float, cache_dir: str = ""
    ) -> None:
        with self._lock:
            self.calls.append(("unmount", target))
            if cache_dir:
                self.unmounted_caches.append(cache_dir)
            if handle is not None:
                self.live_pids.discard(handle.pid)
            self.mounted.pop(target, None)
            self.broken.discard(target)

    def lazy_unmount(self, target: str) -> None:
        with self._lock:
            self.calls.append(("lazy_unmount", target))
            self.mounted.pop(target, None)
            self.broken.discard(target)

    def state(self, target: str) -> MountState:
        if self.on_state is not None:
            self.on_state(target)
        with self._lock:
            if target in self.broken:
                return MountState.BROKEN
            return MountState.HEALTHY if target in self.mounted else MountState.ABSENT

    def alive(self, handle: MountHandle) -> bool:
        return handle.pid in self.live_pids and handle.start_time == handle.pid * 7

    def check(self) -> str | None:
        return self.problem

    # -- test steering -------------------------------------------------------------------
    def break_mount(self, target: str) -> None:
        """What ``kill -9`` of the FUSE process does: mount stays, answers ENOTCONN."""
        with self._lock:
            self.broken.add(target)
            self.live_pids.discard(self.pids[target])

    def count(self, kind: str) -> int:
        return sum(1 for call, _ in self.calls if call == kind)
