"""``zonemount csi-mounter``: the long-lived, unprivileged host of the FUSE servers of a node.

The node plugin (privileged, upgraded freely) makes each kernel mount and passes the open
``/dev/fuse`` descriptor here over a unix socket (:mod:`.mounter_wire`); this daemon runs one
``zonemount mount BUCKET /dev/fd/N -f ...`` per volume. It needs no capability, no
``/dev/fuse`` and no view of the kubelet's mounts: restarting or upgrading the node plugin never
touches a FUSE server, and this daemon is restarted only on purpose (chart: ``OnDelete``).

What it keeps, per volume, in ``<state-dir>/volumes/<sha256(target)[:24]>/``: ``meta.json``
(target, volume id, argv without secrets, PID + start time, starts, last exit) and the FUSE
server's ``zonemount.log``. After a restart of this daemon it rebuilds its table from those
files: a server still running (same PID *and* start time - only possible when the daemon, not
its container, restarted) is adopted, any other is reported dead so the node plugin mounts a
replacement.

Per-mount memory bound (``--max-memory-per-mount MiB``), one of:

* ``cgroup`` - cgroup v2 where this daemon's cgroup can be written (own leaf ``mounter``,
  ``+memory`` in ``subtree_control``, one ``fuse-<pid>`` child per server with ``memory.max``
  and ``memory.oom.group``): one runaway mount is OOM-killed alone and replaced;
* ``rlimit`` - ``RLIMIT_AS`` on the server (``prlimit`` right after spawn), with
  ``MALLOC_ARENA_MAX=2`` so glibc's per-thread arenas do not eat the address space: allocations
  beyond the bound fail inside that server only (it exits; the node replaces it). The bound is
  the per-mount limit *plus* the stacks the mount's own ``--max-threads`` lets it start
  (``zonemount_contract.mount_options.thread_stacks_args``): address space a thread reserves
  whole but touches a few hundred KiB of, so a volume asking for 256 threads can start them
  all (a thread that cannot start fails the tenant's reads or kills its server) without its
  data allowance shrinking. cgroup ``memory.max`` counts touched pages only: nothing is added;
* ``auto`` (default) - ``cgroup`` when available, else ``rlimit``.

Invariants: a received descriptor is closed here as soon as the server holds it (the
connection then dies with its server: pods see ENOTCONN, never a hang); one server per key (a
new ``serve`` of a key first kills the old server); every exit is reaped, counted and pushed to
``watch`` connections.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from zonemount_contract.keys import READY_FD_ENV, STATE_DIR_ENV
from zonemount_contract.mount_options import thread_stacks_args

from . import mounter_wire as wire
from .metrics import RegistryServer
from .mounter import (
    MountError,
    default_executable,
    fresh_cache_dir,
    last_log_line,
    process_start_time,
    remove_cache_dir,
    rotate_log,
)
from .state import volume_path, write_atomically

log = logging.getLogger("zonemount_csi.mounter")

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024


@dataclass
class ServerRecord:
    """One FUSE server (persisted as meta.json, without the process object)."""

    key: str
    volume_id: str
    args: list[str]
    pid: int = 0
    start_time: int = 0
    starts: int = 0
    started_at: float = 0.0
    alive: bool = False
    last_exit: str = ""
    memory_limit: str = ""


class MounterMetrics(RegistryServer):
    def __init__(self) -> None:
        super().__init__()
        self.servers = Gauge(
            "zonemount_mounter_fuse_servers", "FUSE servers running", registry=self.registry
        )
        self.starts = Counter(
            "zonemount_mounter_fuse_server_starts",
            "FUSE servers started (first mounts and replacements)",
            registry=self.registry,
        )
        self.exits = Counter(
            "zonemount_mounter_fuse_server_exits",
            "FUSE servers that exited, by cause (clean, error, signal, oom)",
            ["cause"],
            registry=self.registry,
        )


class MemoryLimiter:
    """Applies the per-mount memory bound to one server process (see module docstring)."""

    def __init__(self, limit_mib: int, mode: str = "auto", cgroup_root: Path = CGROUP_ROOT):
        self.limit = limit_mib * MIB
        self.cgroup_root = cgroup_root
        self.base: Path | None = None
        self.mode = "none" if limit_mib <= 0 else mode
        if self.mode in {"auto", "cgroup"}:
            self.base = self._setup_cgroup()
            if self.base is None:
                if self.mode == "cgroup":
                    raise RuntimeError(
                        "--memory-limit-mode cgroup: no writable cgroup v2 with the memory "
                        "controller here; use rlimit or auto"
                    )
                self.mode = "rlimit"
            else:
                self.mode = "cgroup"

    def _setup_cgroup(self) -> Path | None:
        try:
            own = _own_cgroup()
            if own is None or not (self.cgroup_root / "cgroup.controllers").exists():
                return None
            base = self.cgroup_root / own.lstrip("/")
            if "memory" not in (base / "cgroup.controllers").read_text().split():
                return None
            leaf = base / "mounter"
            leaf.mkdir(exist_ok=True)
            # "No internal processes": this daemon moves into its own leaf first.
            for pid in (base / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (leaf / "cgroup.procs").write_text(pid)
            (base / "cgroup.subtree_control").write_text("+memory")
            return base
        except OSError as exc:
            log.info("cgroup v2 memory limits unavailable (%s): using RLIMIT_AS", exc)
            return None

    def apply(self, pid: int, args: list[str]) -> str:
        """Bound server ``pid``, started with mount arguments ``args``; says what was set."""
        if self.mode == "cgroup" and self.base is not None:
            group = self.base / f"fuse-{pid}"
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(self.limit))
            with contextlib.suppress(OSError):
                (group / "memory.oom.group").write_text("1")
            (group / "cgroup.procs").write_text(str(pid))
            return f"cgroup memory.max={self.limit}"
        if self.mode == "rlimit":
            stacks = thread_stacks_args(args)
            limit = self.limit + stacks
            resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
            return (
                f"RLIMIT_AS={limit} ({self.limit // MIB} MiB + {stacks // MIB} MiB of thread "
                "stacks)"
            )
        return ""

    def oom_killed(self, pid: int) -> bool:
        if self.mode != "cgroup" or self.base is None:
            return False
        try:
            events = (self.base / f"fuse-{pid}" / "memory.events").read_text()
        except OSError:
            return False
        return any(
            line.split()[0] == "oom_kill" and line.split()[1] != "0"
            for line in events.splitlines()
            if len(line.split()) == 2
        )

    def release(self, pid: int) -> None:
        if self.mode == "cgroup" and self.base is not None:
            with contextlib.suppress(OSError):
                (self.base / f"fuse-{pid}").rmdir()


def _own_cgroup() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def volume_dir(state_dir: Path, key: str) -> Path:
    path = volume_path(state_dir, key)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class MounterDaemon:
    """The FUSE server table and the request handlers (the socket loop is :meth:`serve_forever`)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        executable: str | None = None,
        limiter: MemoryLimiter | None = None,
        metrics: MounterMetrics | None = None,
        kill_timeout: float = 10.0,
    ) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.executable = executable or default_executable()
        self.limiter = limiter or MemoryLimiter(0)
        self.metrics = metrics or MounterMetrics()
        self.kill_timeout = kill_timeout
        self._lock = threading.Lock()
        self._records: dict[str, ServerRecord] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._watchers: list[socket.socket] = []
        self._stopping = threading.Event()
        self._load()

    # -- persistence -----------------------------------------------------------------------
    def _load(self) -> None:
        for meta in sorted((self.state_dir / "volumes").glob("*/meta.json")):
            try:
                record = ServerRecord(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable %s: %s", meta, exc)
                continue
            record.alive = bool(record.pid) and process_start_time(record.pid) == record.start_time
            if record.alive:
                log.info("adopted running FUSE server %d for %s", record.pid, record.key)
                threading.Thread(
                    target=self._watch_adopted, args=(record.key, record.pid), daemon=True
                ).start()
            elif not record.last_exit:
                record.last_exit = "gone after a mounter restart"
            self._records[record.key] = record
        self.metrics.servers.set(sum(r.alive for r in self._records.values()))

    def _save(self, record: ServerRecord) -> None:
        # the reaper thread, an adopter's watcher and a request may save the same record at
        # once: each writes its own temp file (a shared one was moved away under the other)
        path = volume_dir(self.state_dir, record.key) / "meta.json"
        write_atomically(path, json.dumps(asdict(record), indent=1, sort_keys=True))

    def _forget(self, key: str) -> None:
        self._records.pop(key, None)
        with contextlib.suppress(OSError):
            (volume_path(self.state_dir, key) / "meta.json").unlink()

    # -- requests --------------------------------------------------------------------------
    def handle(self, message: dict[str, Any], fds: list[int], conn: socket.socket) -> bool:
        """Answer one request on ``conn``; returns True when ``conn`` is kept (watch)."""
        op = message.get("op")
        try:
            if op == "serve":
                reply = self.serve(message, fds)
            elif op == "stop":
                reply = self.stop(str(message.get("key", "")), float(message.get("timeout", 10)))
                remove_cache_dir(str(message.get("cache_dir") or ""))
            elif op == "kill":
                reply = self.stop(str(message.get("key", "")), 0.0)
            elif op == "list":
                reply = self.list()
            elif op == "watch":
                with self._lock:
                    self._watchers.append(conn)
                return True
            else:
                reply = {"ok": False, "error": f"unknown op {str(op)[:20]!r}"}
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, MountError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        wire.send(conn, reply)
        return False

    def serve(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        key = str(message["key"])
        args = [str(a) for a in message["args"]]
        if len(fds) != 1:
            raise ValueError("serve needs exactly one /dev/fuse descriptor")
        if not args or args[0] != "mount" or args.count(wire.FD_PLACEHOLDER) != 1:
            raise ValueError("serve needs 'mount' argv with one fd placeholder")
        unset = {str(k) for k in message.get("unset", [])}
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.update({str(k): str(v) for k, v in dict(message.get("env", {})).items()})
        env.setdefault("MALLOC_ARENA_MAX", "2")
        # upload journals beside the volumes' metadata: on the node's state directory they
        # survive a mounter restart, so the replacement server sweeps its predecessor's uploads
        env[STATE_DIR_ENV] = str(self.state_dir)
        timeout = float(message.get("timeout", 30))
        with self._lock:
            previous = self._records.get(key)
        self.stop(key, 0.0)  # one server per key: a replacement ends a hung predecessor
        cache_dir = str(message.get("cache_dir") or "")
        if cache_dir:
            fresh_cache_dir(cache_dir)
        fuse_fd = fds[0]
        argv = [self.executable] + [
            f"/dev/fd/{fuse_fd}" if a == wire.FD_PLACEHOLDER else a for a in args
        ]
        vdir = volume_dir(self.state_dir, key)
        log_path = vdir / "zonemount.log"
        rotate_log(log_path)
        ready_r, ready_w = os.pipe()
        env[READY_FD_ENV] = str(ready_w)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            child = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=(fuse_fd, ready_w),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            os.close(ready_r)
            raise RuntimeError(f"cannot start {self.executable}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
            os.close(ready_w)
        limit = ""
        try:
            limit = self.limiter.apply(child.pid, args)
        except OSError as exc:
            log.warning("memory bound not applied to %d: %s", child.pid, exc)
        record = ServerRecord(
            key=key,
            volume_id=str(message.get("volume_id", "")),
            args=args,
            pid=child.pid,
            start_time=process_start_time(child.pid) or 0,
            starts=(previous.starts if previous else 0) + 1,
            started_at=time.time(),
            alive=True,
            memory_limit=limit,
        )
        with self._lock:
            self._children[child.pid] = child
            self._records[key] = record
            self._save(record)
        self.metrics.starts.inc()
        self.metrics.servers.inc()
        threading.Thread(target=self._reap, args=(key, child), daemon=True).start()
        status = _wait_ready(ready_r, child, timeout)
        if status != "ok":
            self.stop(key, 0.0)
            if not status:
                status = f"FUSE server not ready after {timeout:.0f}s"
            raise RuntimeError(f"{status} (last log line: {last_log_line(log_path)})")
        return {"ok": True, "pid": record.pid, "start_time": record.start_time}

    def stop(self, key: str, timeout: float) -> dict[str, Any]:
        with self._lock:
            record = self._records.get(key)
        if record is not None and record.alive:
            sig = signal.SIGTERM if timeout > 0 else signal.SIGKILL
            self._signal(record, sig)
            deadline = time.monotonic() + max(timeout, 0.0)
            while self._running(record) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._running(record):
                self._signal(record, signal.SIGKILL)
                deadline = time.monotonic() + self.kill_timeout
                while self._running(record) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if self._running(record):
                raise RuntimeError(f"FUSE server {record.pid} does not exit")
        with self._lock:
            current = self._records.get(key)
            if current is not None and (current is record or not current.alive):
                self._forget(key)  # gone: a late exit report of it is ignored
        return {"ok": True}

    def list(self) -> dict[str, Any]:
        with self._lock:
            return {"ok": True, "servers": {k: asdict(r) for k, r in self._records.items()}}

    # -- processes -------------------------------------------------------------------------
    def _running(self, record: ServerRecord) -> bool:
        """Until its exit is reaped and recorded (a zombie child still counts)."""
        if not record.alive:
            return False
        with self._lock:
            if record.pid in self._children:
                return True
        return process_start_time(record.pid) == record.start_time

    def _signal(self, record: ServerRecord, sig: int) -> None:
        if process_start_time(record.pid) == record.start_time:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)

    def _reap(self, key: str, child: subprocess.Popen[bytes]) -> None:
        code = child.wait()
        if code == 0:
            cause = "clean"
        elif code < 0:
            cause = "oom" if self.limiter.oom_killed(child.pid) else "signal"
        else:
            cause = "error"
        self.limiter.release(child.pid)
        self._exited(key, child.pid, f"{cause} ({code})", cause)
        with self._lock:
            self._children.pop(child.pid, None)

    def _watch_adopted(self, key: str, pid: int) -> None:
        start = process_start_time(pid)
        while start is not None and process_start_time(pid) == start:
            time.sleep(0.5)
        self._exited(key, pid, "exited (adopted)", "signal")

    def _exited(self, key: str, pid: int, how: str, cause: str) -> None:
        with self._lock:
            record = self._records.get(key)
            if record is not None and record.pid == pid:
                record.alive = False
                record.last_exit = how
                self._save(record)
            watchers = list(self._watchers)
        self.metrics.exits.labels(cause).inc()
        self.metrics.servers.dec()
        log.info("FUSE server %d of %s exited: %s", pid, key, how)
        event = {"event": "exit", "key": key, "pid": pid, "how": how}
        for conn in watchers:
            try:
                wire.send(conn, event)
            except OSError:
                with self._lock:
                    if conn in self._watchers:
                        self._watchers.remove(conn)
                conn.close()

    def shutdown(self, grace: float) -> None:
        """SIGTERM every server (they flush and exit), SIGKILL what is left after ``grace``."""
        self._stopping.set()
        with self._lock:
            keys = [k for k, r in self._records.items() if r.alive]
        threads = [
            threading.Thread(target=self._stop_quietly, args=(k, grace), daemon=True) for k in keys
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(grace + self.kill_timeout + 1)
        with self._lock:
            for conn in self._watchers:
                conn.close()
            self._watchers.clear()

    def _stop_quietly(self, key: str, grace: float) -> None:
        try:
            self.stop(key, grace)
        except RuntimeError as exc:
            log.error("%s", exc)

    # -- socket loop -----------------------------------------------------------------------
    def serve_forever(self, path: Path, stop: threading.Event) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        # Bound, made private and listening under a temporary name, then renamed into place:
        # the path never exists while a connect would be refused (between bind and listen)
        # or while the socket has the umask's mode (between bind and chmod).
        # (a mounter killed between bind and rename left its staging name: removed here)
        for stale in path.parent.glob(f".{path.name}.*.binding"):
            stale.unlink(missing_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.binding")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(staging))
        os.chmod(staging, 0o600)
        listener.listen(64)
        os.replace(staging, path)
        listener.settimeout(0.2)
        log.info("csi-mounter serving on unix://%s", path)
        try:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()
        finally:
            listener.close()
            path.unlink(missing_ok=True)

    def _connection(self, conn: socket.socket) -> None:
        keep = False
        try:
            message, fds = wire.receive(conn, max_fds=4)
            if message is not None:
                keep = self.handle(message, fds, conn)
        except (OSError, wire.WireError) as exc:
            log.warning("mounter request failed: %s", exc)
        finally:
            if not keep:
                conn.close()


def _wait_ready(fd: int, child: subprocess.Popen[bytes], timeout: float) -> str:
    """'ok', 'error: ...' from the server, '' on timeout; the server's exit ends the wait."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
            elif child.poll() is not None:
                break
    finally:
        os.close(fd)
    message = b"".join(chunks).decode(errors="replace").strip()
    if message == "ok":
        return "ok"
    if message:
        return message.removeprefix("error: ")
    return f"the FUSE server exited with code {child.wait()} before it was ready"
