"""``zonemount csi-mounter`` itself: the wire, the server table, limits, metadata, cache dirs.

Real processes and a real SEQPACKET socket with a real descriptor passed over it; the FUSE
server is a small stand-in executable (it reports ready on ZONEMOUNT_READY_FD, dumps its
environment and limits, and sleeps) so these run in a second without FUSE. The FUSE side is
covered by test_mounter_namespaces.py. The cgroup v2 limiter runs against a directory laid out
like a cgroup (no writable cgroup v2 on these machines).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from zonemount_csi import mounter_wire as wire
from zonemount_csi.metrics import Metrics
from zonemount_csi.mounter import process_start_time
from zonemount_csi.mounter_server import MemoryLimiter, MounterDaemon, ServerRecord
from zonemount_csi.node import NodeConfig, NodeService
from zonemount_csi.state import StateStore

from tests.csi.conftest import make_target, mount_capability, wait_for
from tests.csi.fakes import FakeMounter

pytestmark = pytest.mark.timeout(120)
MIB = 1024 * 1024

STUB = """#!{python}
import os, sys, time, json
out = os.environ["STUB_OUT"]
fd_arg = [a for a in sys.argv if a.startswith("/dev/fd/")][0]
info = {{"argv": sys.argv, "env": dict(os.environ), "fd_open": os.path.exists(fd_arg),
        "limits": open("/proc/self/limits").read()}}
with open(out + "." + str(os.getpid()), "w") as f:
    json.dump(info, f)
ready = int(os.environ["ZONEMOUNT_READY_FD"])
if "fail" in sys.argv:
    print("zonemount mount: error: bucket 'b' does not exist", file=sys.stderr)
    os.write(ready, b"error: bucket 'b' does not exist")
    sys.exit(1)
os.write(ready, b"ok"); os.close(ready)
time.sleep(600)
"""


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "zonemount-stub"
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("STUB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMOUNTER")
    return path


@pytest.fixture
def daemon(tmp_path: Path, stub: Path) -> Iterator[tuple[MounterDaemon, Path]]:
    sock = Path(f"/tmp/zm-mounter-{os.getpid()}-{time.monotonic_ns()}.sock")
    d = MounterDaemon(
        tmp_path / "state", executable=str(stub), limiter=MemoryLimiter(512, "rlimit")
    )
    stop = threading.Event()
    loop = threading.Thread(target=d.serve_forever, args=(sock, stop), daemon=True)
    loop.start()
    wait_for(sock.exists)
    yield d, sock
    d.shutdown(2)
    stop.set()
    loop.join(5)


def serve(sock: Path, key: str, *extra: str, **fields: object) -> dict[str, object]:
    fd = os.open("/dev/null", os.O_RDONLY)  # any descriptor travels the same way as /dev/fuse
    try:
        message = {"op": "serve", "key": key, "args": ["mount", "b", wire.FD_PLACEHOLDER, *extra]}
        return wire.call(sock, {**message, **fields}, 30, [fd])
    finally:
        os.close(fd)


def address_space_limit(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))
    return int(line.split()[3])


def stub_info(tmp_path: Path, pid: int) -> dict[str, object]:
    info: dict[str, object] = json.loads(Path(f"{tmp_path}/out.{pid}").read_text())
    return info


def test_serve_passes_the_descriptor_environment_and_memory_bound(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path
) -> None:
    _d, sock = daemon
    reply = serve(
        sock,
        "/k/pod-a/mount",
        env={"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r"},
        unset=["AWS_ACCESS_KEY_ID"],
    )
    pid = int(str(reply["pid"]))
    assert process_start_time(pid) == reply["start_time"]
    wait_for(lambda: Path(f"{tmp_path}/out.{pid}").exists())
    info = stub_info(tmp_path, pid)
    assert info["fd_open"] is True, "the passed descriptor is open in the server as /dev/fd/N"
    env = info["env"]
    assert isinstance(env, dict)
    assert env["AWS_ROLE_ARN"].endswith("role/r")
    assert "AWS_ACCESS_KEY_ID" not in env, "a pod mount must not inherit the mounter's keys"
    assert env["MALLOC_ARENA_MAX"] == "2"
    # upload journals on the mounter's state directory (the node's), whatever the request says
    assert env["ZONEMOUNT_STATE_DIR"] == str(_d.state_dir)
    # the bound, plus the stacks of the threads the mount may start (16 + 16 + 64 by default)
    assert address_space_limit(pid) == 512 * MIB + 96 * (2 * MIB + 64 * 1024)
    listed = wire.call(sock, {"op": "list"}, 5)["servers"]
    assert listed["/k/pod-a/mount"]["alive"] is True
    meta = list((tmp_path / "state").glob("volumes/*/meta.json"))
    assert len(meta) == 1 and json.loads(meta[0].read_text())["pid"] == pid


def test_rlimit_bound_adds_the_stacks_of_the_threads_a_volume_asks_for(
    daemon: tuple[MounterDaemon, Path],
) -> None:
    """RLIMIT_AS is address space: a volume's ``maxThreads: 256`` lets its server run 256
    data calls, 256 metadata calls and its other threads, each reserving a 2 MiB stack (+64
    KiB) it barely touches. The bound grows by that (1188 MiB), so starting the threads the
    volume asked for never eats into the memory its data may use (the server's record says
    so); below the allow-list's lowest value counts as that."""
    d, sock = daemon
    pid = int(str(serve(sock, "/k/pod-t/mount", "--max-threads=256")["pid"]))
    assert address_space_limit(pid) == 512 * MIB + 576 * (2 * MIB + 64 * 1024)
    assert d.list()["servers"]["/k/pod-t/mount"]["memory_limit"].endswith(
        "(512 MiB + 1188 MiB of thread stacks)"
    )
    pid = int(str(serve(sock, "/k/pod-u/mount", "--max-threads=0")["pid"]))
    assert address_space_limit(pid) == 512 * MIB + (1 + 8 + 64) * (2 * MIB + 64 * 1024)


def test_driver_mount_inherits_the_mounters_own_identity(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path
) -> None:
    _, sock = daemon
    pid = int(str(serve(sock, "/k/pod-b/mount")["pid"]))
    wait_for(lambda: Path(f"{tmp_path}/out.{pid}").exists())
    env = stub_info(tmp_path, pid)["env"]
    assert isinstance(env, dict) and env["AWS_ACCESS_KEY_ID"] == "AKIAMOUNTER"


def test_a_server_that_fails_reports_its_one_line_error(
    daemon: tuple[MounterDaemon, Path],
) -> None:
    _d, sock = daemon
    with pytest.raises(wire.WireError, match="bucket 'b' does not exist"):
        serve(sock, "/k/pod-c/mount", "fail")
    assert wire.call(sock, {"op": "list"}, 5)["servers"] == {}


def test_exit_is_pushed_to_watchers_and_counted(daemon: tuple[MounterDaemon, Path]) -> None:
    d, sock = daemon
    pid = int(str(serve(sock, "/k/pod-d/mount")["pid"]))
    watch = wire.connect_watch(sock)
    watch.settimeout(20)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    event, _ = wire.receive(watch, 0)
    watch.close()
    assert event == {"event": "exit", "key": "/k/pod-d/mount", "pid": pid, "how": "signal (-9)"}
    assert d.metrics.exits.labels("signal")._value.get() == 1
    server = wire.call(sock, {"op": "list"}, 5)["servers"]["/k/pod-d/mount"]
    assert server["alive"] is False and server["last_exit"] == "signal (-9)"


def test_stop_ends_the_server_and_forgets_it_and_its_cache(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path
) -> None:
    _d, sock = daemon
    cache = tmp_path / "cache" / "abc"
    pid = int(str(serve(sock, "/k/pod-e/mount", cache_dir=str(cache))["pid"]))
    (cache / "block").write_bytes(b"x")
    wire.call(
        sock, {"op": "stop", "key": "/k/pod-e/mount", "timeout": 5, "cache_dir": str(cache)}, 20
    )
    assert process_start_time(pid) is None
    assert not cache.exists()
    assert wire.call(sock, {"op": "list"}, 5)["servers"] == {}
    assert not list((tmp_path / "state").glob("volumes/*/meta.json"))
    wire.call(sock, {"op": "stop", "key": "/k/pod-e/mount", "timeout": 5}, 20)  # idempotent


def test_a_replacement_starts_with_an_empty_cache_and_ends_its_predecessor(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path
) -> None:
    _d, sock = daemon
    cache = tmp_path / "cache" / "def"
    first = int(str(serve(sock, "/k/pod-f/mount", cache_dir=str(cache))["pid"]))
    (cache / "stale-block").write_bytes(b"old")
    second = int(str(serve(sock, "/k/pod-f/mount", cache_dir=str(cache))["pid"]))
    assert first != second and process_start_time(first) is None
    assert list(cache.iterdir()) == []
    assert wire.call(sock, {"op": "list"}, 5)["servers"]["/k/pod-f/mount"]["starts"] == 2


def test_restarted_daemon_rebuilds_its_table_from_metadata(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path, stub: Path
) -> None:
    d, sock = daemon
    live = int(str(serve(sock, "/k/live/mount")["pid"]))
    dead = int(str(serve(sock, "/k/dead/mount")["pid"]))
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: not d.list()["servers"]["/k/dead/mount"]["alive"])
    again = MounterDaemon(tmp_path / "state", executable=str(stub))
    servers = again.list()["servers"]
    assert servers["/k/live/mount"]["alive"] is True and servers["/k/live/mount"]["pid"] == live
    assert servers["/k/dead/mount"]["alive"] is False


def test_refuses_malformed_requests(daemon: tuple[MounterDaemon, Path]) -> None:
    _, sock = daemon
    with pytest.raises(wire.WireError, match="placeholder"):
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            wire.call(sock, {"op": "serve", "key": "k", "args": ["sh", "-c", "x"]}, 5, [fd])
        finally:
            os.close(fd)
    with pytest.raises(wire.WireError, match="descriptor"):
        wire.call(sock, {"op": "serve", "key": "k", "args": ["mount", wire.FD_PLACEHOLDER]}, 5)
    with pytest.raises(wire.WireError, match="unknown op"):
        wire.call(sock, {"op": "exec"}, 5)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(str(sock))
    raw.sendall(b"not json")
    raw.close()
    assert wire.call(sock, {"op": "list"}, 5)["ok"] is True  # still serving


def test_socket_is_private_to_its_owner(daemon: tuple[MounterDaemon, Path]) -> None:
    _, sock = daemon
    assert sock.stat().st_mode & 0o777 == 0o600


def test_socket_path_appears_only_once_listening_and_private(
    tmp_path: Path, stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that connects as soon as the path exists (the node plugin at start) is
    never refused: the path appears after listen() and chmod, not at bind(). CI of 0522a01
    saw 'Connection refused' from a client that came between the two. The staging name a
    mounter killed in between leaves is removed at the next start."""
    from zonemount_csi import mounter_server

    sock = tmp_path / "run" / "mounter.sock"
    seen: list[tuple[str, bool]] = []

    class Recording(socket.socket):
        def bind(self, address: object) -> None:
            super().bind(address)  # type: ignore[arg-type]
            seen.append(("bind", sock.exists()))

        def listen(self, backlog: int = 0) -> None:
            seen.append(("listen", sock.exists()))
            super().listen(backlog)

    monkeypatch.setattr(mounter_server.socket, "socket", Recording)
    sock.parent.mkdir()
    (sock.parent / ".mounter.sock.4242.binding").touch()  # a mounter killed mid-start left it
    d = MounterDaemon(
        tmp_path / "state", executable=str(stub), limiter=MemoryLimiter(512, "rlimit")
    )
    stop = threading.Event()
    loop = threading.Thread(target=d.serve_forever, args=(sock, stop), daemon=True)
    loop.start()
    try:
        wait_for(sock.exists)
        assert seen == [("bind", False), ("listen", False)]
        assert sock.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in sock.parent.iterdir()] == ["mounter.sock"]
    finally:
        stop.set()
        loop.join(5)
        d.shutdown(2)
    assert not sock.exists()


def test_cgroup_limiter_gives_each_server_its_own_memory_max(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    own = Path("/proc/self/cgroup").read_text().splitlines()[-1].split("::", 1)
    base = root / (own[1].lstrip("/") if len(own) == 2 else "")
    base.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (base / "cgroup.subtree_control").write_text("")
    limiter = MemoryLimiter(256, "auto", cgroup_root=root)
    assert limiter.mode == "cgroup"
    assert (base / "mounter" / "cgroup.procs").read_text() == str(os.getpid())
    assert (base / "cgroup.subtree_control").read_text() == "+memory"
    # memory.max counts touched pages: untouched thread stacks cost nothing, none added
    applied = limiter.apply(4242, ["mount", "b", "--max-threads=256"])
    assert applied == f"cgroup memory.max={256 * MIB}"
    assert (base / "fuse-4242" / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (base / "fuse-4242" / "cgroup.procs").read_text() == "4242"
    (base / "fuse-4242" / "memory.events").write_text("low 0\noom 1\noom_kill 1\n")
    assert limiter.oom_killed(4242)


def test_auto_falls_back_to_rlimit_without_cgroup_v2(tmp_path: Path) -> None:
    assert MemoryLimiter(256, "auto", cgroup_root=tmp_path / "none").mode == "rlimit"
    assert MemoryLimiter(0, "auto").mode == "none"
    with pytest.raises(RuntimeError, match="cgroup v2"):
        MemoryLimiter(256, "cgroup", cgroup_root=tmp_path / "none")


# --- the node's cache volume attributes (unit tier, in-memory mounter) ---------------------


@pytest.fixture
def cache_node(workdir: Path) -> NodeService:
    config = NodeConfig(
        node_id="n",
        kubelet_dir=workdir / "kubelet",
        state_dir=workdir / "state",
        cache_dir="/var/lib/zonemount/cache",
        max_cache_mib=2048,
    )
    return NodeService(config, FakeMounter(), StateStore(workdir / "state"), Metrics())


def _publish(node: NodeService, target: str, **context: str) -> None:
    from zonemount_csi._proto import csi_pb2

    node.publish(
        csi_pb2.NodePublishVolumeRequest(
            volume_id="v",
            target_path=target,
            volume_capability=mount_capability(),
            volume_context={"bucketName": "bucket-a", **context},
        )
    )


@pytest.mark.parametrize(
    ("context", "needle"),
    [
        ({"cacheMedium": "ssd"}, "cacheMedium must be one of disk, memory"),
        ({"cacheSizeLimit": "1Gi"}, "cacheSizeLimit needs cacheMedium"),
        ({"cacheMedium": "memory"}, "without --memory-cache-dir"),
        ({"cacheMedium": "disk", "cacheSizeLimit": "lots"}, "not a quantity"),
        ({"cacheMedium": "disk", "cacheSizeLimit": "3Gi"}, "limit of 2048 MiB"),
        ({"cacheMedium": "disk", "cacheSizeLimit": "0"}, "must be positive"),
    ],
)
def test_cache_attributes_are_validated(
    cache_node: NodeService, workdir: Path, context: dict[str, str], needle: str
) -> None:
    from zonemount_csi.errors import CsiError

    with pytest.raises(CsiError) as info:
        _publish(cache_node, make_target(workdir / "kubelet"), **context)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.message


def test_cache_attributes_become_cache_flags_and_are_removed_at_unpublish(
    cache_node: NodeService, workdir: Path
) -> None:
    from zonemount_csi._proto import csi_pb2

    target = make_target(workdir / "kubelet")
    _publish(cache_node, target, cacheMedium="disk", cacheSizeLimit="300Mi")
    mounter = cache_node.mounter
    assert isinstance(mounter, FakeMounter)
    spec = mounter.specs[-1]
    assert spec.cache_dir.startswith("/var/lib/zonemount/cache/")
    assert f"--cache={spec.cache_dir}" in spec.args and "--max-cache-size=300" in spec.args
    other = make_target(workdir / "kubelet")
    _publish(cache_node, other, cacheMedium="disk")
    assert mounter.specs[-1].cache_dir != spec.cache_dir, "one cache directory per target"
    assert "--max-cache-size=1024" in mounter.specs[-1].args  # default 1Gi
    cache_node.unpublish(csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path=target))
    assert mounter.unmounted_caches == [spec.cache_dir]


def test_cache_xz_attribute_becomes_the_flag_and_is_validated(
    cache_node: NodeService, workdir: Path
) -> None:
    from zonemount_csi.errors import CsiError

    _publish(cache_node, make_target(workdir / "kubelet"), cacheXz="cache--use1-az4--x-s3")
    mounter = cache_node.mounter
    assert isinstance(mounter, FakeMounter)
    assert "--cache-xz=cache--use1-az4--x-s3" in mounter.specs[-1].args
    for bad, needle in (("Bad_Name", "volume context cacheXz:"), ("bucket-a", "another bucket")):
        with pytest.raises(CsiError) as info:
            _publish(cache_node, make_target(workdir / "kubelet"), cacheXz=bad)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in info.value.message


# --- the node's side of the volume condition and of fd passing ----------------------------


def test_volume_condition_carries_the_fuse_clients_health(
    cache_node: NodeService, workdir: Path
) -> None:
    """The FUSE client's ``user.zonemount.health`` decides the condition (R-ERR-DEADLINE)."""
    target = make_target(workdir / "kubelet")
    _publish(cache_node, target)
    healthy = cache_node.volume_stats("v", target).volume_condition
    assert (healthy.abnormal, healthy.message) == (False, "mounted")
    message = b"unhealthy: S3 data calls miss their deadline (3 so far, 2 calls running)"
    os.setxattr(target, "user.zonemount.health", message)  # the stand-in mount is a plain dir
    sick = cache_node.volume_stats("v", target).volume_condition
    assert sick.abnormal and message.decode() in sick.message


class _InheritingFake(FakeMounter):
    inherits_env = True


def test_a_mounter_with_its_own_identity_gets_overrides_only(workdir: Path) -> None:
    """Driver volumes send no environment; pod volumes send the pod's role and token file and
    name the mounter's credential variables to drop."""
    from zonemount_csi._proto import csi_pb2

    mounter = _InheritingFake()
    config = NodeConfig(node_id="n", kubelet_dir=workdir / "kubelet", state_dir=workdir / "s")
    node = NodeService(config, mounter, StateStore(workdir / "s"), Metrics())
    _publish(node, make_target(workdir / "kubelet"))
    assert mounter.specs[-1].env == {} and mounter.specs[-1].env_unset == ()
    tokens = json.dumps({"sts.amazonaws.com": {"token": "header.payload.sig"}})
    node.publish(
        csi_pb2.NodePublishVolumeRequest(
            volume_id="v2",
            target_path=make_target(workdir / "kubelet"),
            volume_capability=mount_capability(),
            volume_context={
                "bucketName": "bucket-a",
                "authenticationSource": "pod",
                "roleArn": "arn:aws:iam::123456789012:role/spark",
                "csi.storage.k8s.io/serviceAccount.tokens": tokens,
            },
        )
    )
    spec = mounter.specs[-1]
    assert spec.env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/spark"
    assert Path(spec.env["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text() == "header.payload.sig"
    assert "AWS_ACCESS_KEY_ID" in spec.env_unset and "AWS_PROFILE" in spec.env_unset
    assert "header.payload.sig" not in json.dumps(spec.env)


@pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse"
)
def test_a_refused_serve_leaves_no_mount_behind(
    daemon: tuple[MounterDaemon, Path], tmp_path: Path
) -> None:
    """The node mounts first, then hands over: if the mounter refuses, the mount is undone."""
    from zonemount_csi.mounter import MountError, MountSpec, RemoteMounter
    from zonemount_csi.mountinfo import find

    _, sock = daemon
    target = tmp_path / "target"
    target.mkdir()
    spec = MountSpec(str(target), ["mount", "b", str(target), "-f", "fail"], {}, tmp_path / "l")
    with pytest.raises(MountError, match="bucket 'b' does not exist"):
        RemoteMounter(sock).mount(spec, 10)
    assert find(str(target)) is None


@pytest.mark.parametrize(
    ("pass_null", "needle"),
    [(False, "descriptor 97 is not open"), (True, "is not an open /dev/fuse device")],
)
def test_fuse_client_refuses_a_bad_descriptor_in_one_line(pass_null: bool, needle: str) -> None:
    """``zonemount mount BUCKET /dev/fd/N`` checks N before touching S3 or FUSE."""
    import subprocess

    null = os.open("/dev/null", os.O_RDONLY)
    try:
        os.dup2(null, 97, inheritable=True) if pass_null else None
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "zonemount"),
                "mount",
                "bucket-b",
                "/dev/fd/97",
                "-f",
            ],
            capture_output=True,
            text=True,
            pass_fds=(97,) if pass_null else (),
            timeout=60,
        )
    finally:
        os.close(null)
        if pass_null:
            os.close(97)
    assert result.returncode == 1
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_delivered_to_another_thread_still_stops_the_mounter(tmp_path: Path) -> None:
    """The kernel may hand SIGTERM to any thread; Python runs handlers only in the main
    thread, which an untimed wait never gave back control (the plugin then ignored SIGTERM)."""
    import ctypes
    import subprocess

    sock = tmp_path / "m.sock"
    proc = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "zonemount"), "csi-mounter"),
            *("--endpoint", f"unix://{sock}", "--state-dir", str(tmp_path / "state")),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(sock.exists, 60)  # the handler is installed before the socket exists
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others, "the mounter serves its socket from a second thread"
        libc = ctypes.CDLL(None, use_errno=True)
        sys_tgkill = 234  # x86_64
        assert libc.syscall(sys_tgkill, proc.pid, others[0], signal.SIGTERM) == 0, (
            ctypes.get_errno()
        )
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # drains and closes the stderr pipe


# Runs ``zonemount csi-mounter`` with one of its start-up steps wrapped to SIGTERM the process
# right there (before or after the step): the kubelet may stop a pod it has just started.
SIGTERM_AT_STARTUP = """
import os, signal, sys
from zonemount_csi import cli
from zonemount_csi.mounter_server import MounterDaemon

real = getattr(MounterDaemon, sys.argv[1])
def hooked(*args, **kwargs):
    if sys.argv[2] == "before":
        os.kill(os.getpid(), signal.SIGTERM)
    result = real(*args, **kwargs)
    if sys.argv[2] == "after":
        os.kill(os.getpid(), signal.SIGTERM)
    return result
setattr(MounterDaemon, sys.argv[1], hooked)
sys.exit(cli.mounter_main(sys.argv[3:]))
"""


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("__init__", "after"),  # main thread: the state dir was read, servers adopted
        ("serve_forever", "before"),  # the socket thread, as it starts
    ],
)
def test_sigterm_during_start_up_still_stops_the_mounter_gracefully(
    tmp_path: Path, step: str, when: str
) -> None:
    """The handler was installed only after the socket thread had started: a SIGTERM in
    between took the default action (exit -15, adopted FUSE servers not stopped). This is
    what failed the test above under load, once the socket existed but the handler did not."""
    import subprocess

    result = subprocess.run(
        [
            *(sys.executable, "-c", SIGTERM_AT_STARTUP, step, when),
            *("--endpoint", f"unix://{tmp_path / 'm.sock'}", "--state-dir", str(tmp_path / "s")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "SIGTERM received" in result.stderr
    assert not (tmp_path / "m.sock").exists()


def test_records_saved_at_once_by_two_daemons_all_land(tmp_path: Path) -> None:
    """A restarted daemon's watcher and the old daemon's reaper saved the same meta.json at
    the same moment through one shared ``meta.tmp``: the second ``os.replace`` found it gone
    (FileNotFoundError in CI). Each writer now has a temp file of its own."""
    state = tmp_path / "state"
    daemons = [
        MounterDaemon(state, executable=sys.executable, limiter=MemoryLimiter(512, "rlimit"))
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def save(daemon: MounterDaemon, n: int) -> None:
        try:
            for i in range(300):
                daemon._save(ServerRecord(key="/k/m", volume_id="v", args=[], pid=n * 1000 + i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(d, n)) for n, d in enumerate(daemons * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (meta,) = state.glob("volumes/*/meta.json")
    assert json.loads(meta.read_text())["key"] == "/k/m"
    assert [p.name for p in meta.parent.iterdir()] == ["meta.json"]  # no temp file left
