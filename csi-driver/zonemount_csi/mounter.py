"""The ``Mounter`` seam: start, watch and stop one FUSE process per target path.

Two real implementations:

* :class:`RemoteMounter` (``zonemount csi-node --mounter-endpoint``): the node plugin opens
  ``/dev/fuse`` and makes the kernel mount itself (:mod:`.kernel_mount`), then passes the
  descriptor to ``zonemount csi-mounter`` (:mod:`.mounter_server`), which runs the FUSE server
  unprivileged in its own long-lived container. A replacement for a dead server is mounted *on
  top of* the dead mount (:meth:`Mounter.remount`), so it propagates into pods that mount the
  volume with ``mountPropagation: HostToContainer``.
* :class:`ProcessMounter` (no ``--mounter-endpoint``; single-container installs and tests):
:class:`ProcessMounter` is the real implementation: it runs ``zonemount mount ... -f`` (the
``zonemount`` executable next to ``sys.executable``) with an argv list - never a shell - in its
own session, so the FUSE process outlives a restart of the node plugin, and waits (bounded)
until the target shows up in ``/proc/self/mountinfo`` as ``fuse.zonemount``. Its stdout/stderr
go to a per-volume log file; on failure the last line of that log becomes the error (the FUSE
client prints one-line errors and never secrets).

A repair lazily unmounts the dead mount and mounts again at the same path (pods' bind mounts keep
the dead one).

Tests use an in-memory implementation of :class:`Mounter` (tests/csi/fakes.py).

Invariants: :meth:`Mounter.mount` returns only when the mount is ready or raises
:class:`MountError` after cleaning up (process stopped, target lazily unmounted);
:meth:`Mounter.unmount` is idempotent; a :class:`MountHandle` names a process by PID *and*
start time, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from zonemount_fs.cli import READ_AHEAD_KB

from . import kernel_mount, mountinfo
from . import mounter_wire as wire
from .mountinfo import MountState

log = logging.getLogger(__name__)


class MountError(RuntimeError):
    """The FUSE process could not be started, did not become ready, or could not be stopped."""


@dataclass(frozen=True)
class MountHandle:
    pid: int
    start_time: int


@dataclass(frozen=True)
class MountSpec:
    """One FUSE process: ``zonemount <args...>`` with ``env``, logging to ``log_path``."""

    target: str
    args: list[str]
    env: dict[str, str] = field(repr=False)
    log_path: Path
    #: For mounters that run servers with their own environment (``inherits_env``): variables
    #: of that environment to drop (the driver's credentials, for pod-level mounts).
    env_unset: tuple[str, ...] = ()
    #: The volume's cache directory (``--cache``): created empty before the server starts,
    #: removed by :meth:`Mounter.unmount`. Empty: no cache.
    cache_dir: str = ""


class Mounter(Protocol):
    def mount(self, spec: MountSpec, timeout: float) -> MountHandle: ...

    def remount(self, spec: MountSpec, timeout: float, old: MountHandle | None) -> MountHandle:
        """Replace a dead (or hung: ``old`` is killed) FUSE server of ``spec.target``."""
        ...

    def unmount(
        self, target: str, handle: MountHandle | None, timeout: float, cache_dir: str = ""
    ) -> None: ...

    def lazy_unmount(self, target: str) -> None: ...

    def state(self, target: str) -> MountState: ...

    def alive(self, handle: MountHandle) -> bool: ...

    def check(self) -> str | None:
        """None when the node can mount; otherwise what is missing."""
        ...


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_comm = stat.rsplit(")", 1)[1].split()
    if after_comm[0] in {"Z", "X"}:
        return None
    return int(after_comm[19])


def fresh_cache_dir(path: str) -> None:
    """An empty 0700 ``path``: blocks a dead server left behind are never served."""
    if not os.path.isabs(path) or ".." in Path(path).parts:
        raise MountError(f"cache directory {path[:80]!r} is not an absolute path")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700, exist_ok=True)


def remove_cache_dir(path: str) -> None:
    if path and os.path.isabs(path) and ".." not in Path(path).parts:
        shutil.rmtree(path, ignore_errors=True)


def default_executable() -> str:
    candidate = Path(sys.executable).parent / "zonemount"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("zonemount")
    return found or str(candidate)


class ProcessMounter:
    """Real :class:`Mounter`: one ``zonemount mount -f`` child process per target."""

    def __init__(self, executable: str | None = None, poll_interval: float = 0.05) -> None:
        self.executable = executable or default_executable()
        self.poll_interval = poll_interval
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # -- probing -------------------------------------------------------------------------
    def state(self, target: str) -> MountState:
        return mountinfo.probe(target)

    def alive(self, handle: MountHandle) -> bool:
        with self._lock:
            child = self._children.get(handle.pid)
            if child is not None and child.poll() is not None:
                del self._children[handle.pid]  # reaped: no zombie left behind
        return process_start_time(handle.pid) == handle.start_time

    def check(self) -> str | None:
        if not Path(self.executable).exists():
            return f"FUSE client {self.executable} not found: install zonemount in the image"
        if not Path("/dev/fuse").exists():
            return "/dev/fuse is missing: run the node plugin privileged with /dev/fuse"
        if shutil.which("fusermount3") is None:
            return "fusermount3 not found: install the fuse3 package in the image"
        return None

    # -- mounting ------------------------------------------------------------------------
    def mount(self, spec: MountSpec, timeout: float) -> MountHandle:
        if spec.cache_dir:
            fresh_cache_dir(spec.cache_dir)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate_log(spec.log_path)
        fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            child = subprocess.Popen(
                [self.executable, *spec.args],
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise MountError(f"cannot start {self.executable}: {exc.strerror}") from None
        finally:
            os.close(fd)
        with self._lock:
            self._children[child.pid] = child
        start_time = process_start_time(child.pid) or 0
        handle = MountHandle(child.pid, start_time)
        deadline = time.monotonic() + timeout
        while True:
            code = child.poll()
            if code is not None:
                with self._lock:
                    self._children.pop(child.pid, None)
                self.lazy_unmount(spec.target)
                raise MountError(
                    f"zonemount mount exited with code {code}: {last_log_line(spec.log_path)}"
                )
            if self.state(spec.target) is MountState.HEALTHY:
                return handle
            if time.monotonic() > deadline:
                self._kill(child)
                self.lazy_unmount(spec.target)
                raise MountError(
                    f"mount not ready after {timeout:.0f}s (last log line: "
                    f"{last_log_line(spec.log_path)})"
                )
            time.sleep(self.poll_interval)

    def remount(self, spec: MountSpec, timeout: float, old: MountHandle | None) -> MountHandle:
        if old is not None and old.pid and self.alive(old):
            with contextlib.suppress(MountError):
                self.unmount(spec.target, old, timeout)
        self.lazy_unmount(spec.target)
        os.makedirs(spec.target, mode=0o750, exist_ok=True)
        return self.mount(spec, timeout)

    def unmount(
        self, target: str, handle: MountHandle | None, timeout: float, cache_dir: str = ""
    ) -> None:
        if handle is not None and self.alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive(handle):
                time.sleep(self.poll_interval)
        if mountinfo.find(target) is not None and _fusermount(["-u", target]) != 0:
            log.warning("unmount of %s failed (busy?); detaching it lazily", target)
            self.lazy_unmount(target)
        if handle is not None and self.alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive(handle):
                time.sleep(self.poll_interval)
        if mountinfo.find(target) is not None:
            raise MountError(f"{target} is still mounted after unmount")
        remove_cache_dir(cache_dir)

    def lazy_unmount(self, target: str) -> None:
        """Detach a (possibly dead) mount: ``fusermount3 -uz``; no-op when not mounted."""
        if mountinfo.find(target) is None:
            return
        if _fusermount(["-uz", target]) != 0:
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)

    def _kill(self, child: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        with self._lock:
            self._children.pop(child.pid, None)


class RemoteMounter:
    """:class:`Mounter` that mounts here (privileged) and serves in ``zonemount csi-mounter``.

    Handles name processes in the mounter's PID namespace; only the mounter checks them.
    """

    #: Servers run with the mounter's own environment plus ``MountSpec.env`` (overrides only).
    inherits_env = True

    def __init__(self, endpoint: Path, call_timeout: float = 15.0) -> None:
        self.endpoint = endpoint
        self.call_timeout = call_timeout
        self._watch_stop = threading.Event()

    def _call(self, message: dict[str, object], timeout: float | None = None) -> dict[str, Any]:
        try:
            return wire.call(self.endpoint, message, timeout or self.call_timeout)
        except wire.WireError as exc:
            raise MountError(str(exc)) from None

    def state(self, target: str) -> MountState:
        return mountinfo.probe(target)

    def servers(self) -> dict[str, dict[str, Any]]:
        servers: dict[str, dict[str, Any]] = self._call({"op": "list"})["servers"]
        return servers

    def alive(self, handle: MountHandle) -> bool:
        return any(
            s["alive"] and s["pid"] == handle.pid and s["start_time"] == handle.start_time
            for s in self.servers().values()
        )

    def check(self) -> str | None:
        if not Path(kernel_mount.FUSE_DEVICE).exists():
            return "/dev/fuse is missing: run the node plugin privileged with /dev/fuse"
        try:
            self.servers()
        except MountError as exc:
            return str(exc)
        return None

    def mount(self, spec: MountSpec, timeout: float) -> MountHandle:
        if spec.target not in spec.args:
            raise MountError("mount argv does not name the target")
        args = list(spec.args)
        args[args.index(spec.target)] = wire.FD_PLACEHOLDER
        flags, allow_other = kernel_mount.kernel_options(args)
        try:
            fd = kernel_mount.open_fuse()
        except OSError as exc:
            raise MountError(f"cannot open /dev/fuse: {exc.strerror}") from None
        reply: dict[str, Any] | None = None
        error = ""
        try:
            kernel_mount.fuse_mount(spec.target, fd, flags, allow_other)
        except OSError as exc:
            os.close(fd)
            raise MountError(str(exc)) from None
        try:
            reply = wire.call(
                self.endpoint,
                {
                    "op": "serve",
                    "key": spec.target,
                    "args": args,
                    "env": spec.env,
                    "unset": list(spec.env_unset),
                    "cache_dir": spec.cache_dir,
                    "timeout": timeout,
                },
                timeout + self.call_timeout,
                [fd],
            )
        except wire.WireError as exc:
            error = str(exc)
        finally:
            os.close(fd)  # the server holds the only copy now: the connection dies with it
        if reply is None:
            with contextlib.suppress(OSError):
                kernel_mount.umount(spec.target, detach=True)  # the layer we just mounted
            raise MountError(error)
        if not kernel_mount.tune_readahead(spec.target, READ_AHEAD_KB):
            log.info("read-ahead of %s left at the kernel default", spec.target)
        return MountHandle(int(reply["pid"]), int(reply["start_time"]))

    def remount(self, spec: MountSpec, timeout: float, old: MountHandle | None) -> MountHandle:
        if old is not None and old.pid:
            with contextlib.suppress(MountError):
                self._call({"op": "kill", "key": spec.target})
        if mountinfo.find(spec.target) is None:
            os.makedirs(spec.target, mode=0o750, exist_ok=True)
        # Stacked on the dead mount, not after unmounting it: pods' HostToContainer bind
        # mounts are slaves of the dead mount, so only a mount *on top of it* reaches them.
        return self.mount(spec, timeout)

    def unmount(
        self, target: str, handle: MountHandle | None, timeout: float, cache_dir: str = ""
    ) -> None:
        try:
            self._call(
                {"op": "stop", "key": target, "timeout": timeout, "cache_dir": cache_dir},
                timeout + 10,
            )
        except MountError as exc:
            log.warning("stopping the FUSE server of %s: %s", target, exc)
        try:
            kernel_mount.umount_all(target)
        except OSError as exc:
            raise MountError(str(exc)) from None
        entry = mountinfo.find(target)
        if entry is not None and entry.fstype == mountinfo.FSTYPE:
            raise MountError(f"{target} is still mounted after unmount")

    def lazy_unmount(self, target: str) -> None:
        while (entry := mountinfo.find(target)) is not None and entry.fstype == mountinfo.FSTYPE:
            try:
                kernel_mount.umount(target, detach=True)
            except OSError:
                return

    def watch(self, on_event: Callable[[str | None], None]) -> threading.Thread:
        """Call ``on_event(key)`` whenever a FUSE server exits, ``on_event(None)`` after each
        (re)connection (the mounter may have restarted: everything needs a look)."""

        def run() -> None:
            while not self._watch_stop.is_set():
                try:
                    sock = wire.connect_watch(self.endpoint)
                except OSError:
                    self._watch_stop.wait(1.0)
                    continue
                on_event(None)
                sock.settimeout(0.5)
                try:
                    while not self._watch_stop.is_set():
                        try:
                            event, _ = wire.receive(sock, max_fds=0)
                        except TimeoutError:
                            continue
                        if event is None:
                            break
                        on_event(str(event.get("key", "")))
                except (OSError, wire.WireError):
                    pass
                finally:
                    sock.close()
                self._watch_stop.wait(0.2)

        thread = threading.Thread(target=run, name="mounter-watch", daemon=True)
        thread.start()
        return thread

    def stop_watch(self) -> None:
        self._watch_stop.set()


LOG_ROTATE_BYTES = 8 * 1024 * 1024


def rotate_log(path: Path) -> None:
    """Keep at most two FUSE client logs of about LOG_ROTATE_BYTES per volume."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))


def _fusermount(args: list[str]) -> int:
    try:
        result = subprocess.run(["fusermount3", *args], check=False, capture_output=True)
    except OSError:
        return 127
    return result.returncode


def last_log_line(path: Path, limit: int = 300) -> str:
    """The last non-blank line of a FUSE server's log, for an error message."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:limit] if lines else "(no output)"
