"""The node side with containers simulated faithfully: real processes, real mounts, real sockets.

* the node plugin (``zonemount csi-node --mounter-endpoint``) runs as PID 1 of its own PID
  namespace (``unshare --pid --fork --mount-proc``): killing that init kills everything in it,
  as a container runtime does; its mount namespace shares the "kubelet directory" with the
  host (a shared bind mount, like ``mountPropagation: Bidirectional``);
* ``zonemount csi-mounter`` runs as PID 1 of another PID + mount namespace (private, as a
  container without Bidirectional), hosting the FUSE servers on descriptors the plugin passes;
* each "pod" (tests/csi/pod_sim.py) runs in its own mount namespace and reads and writes only
  through a bind mount of its target path - private (``mountPropagation: None``) or slave
  (``HostToContainer``) - as a container runtime sets it up.

The failure matrix of docs/csi.md comes from these tests (run with ``-s`` to see the windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

pytest.importorskip("zonemount_fs.cli", reason="the FUSE client is not importable")
if not os.path.exists("/dev/fuse") or os.geteuid() != 0:  # pragma: no cover - machine-dependent
    pytest.skip("real mounts and namespaces need root and /dev/fuse", allow_module_level=True)

from zonemount_cli.servers import LocalS3, free_port
from zonemount_csi._proto import csi_pb2, csi_pb2_grpc
from zonemount_csi.mountinfo import FSTYPE, find, parse
from zonemount_fs.cli import READ_AHEAD_KB

from tests.csi.conftest import (
    make_target,
    node_env,
    publish_request,
    scrape,
    until_not_aborted,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
POD_SIM = str(Path(__file__).with_name("pod_sim.py"))


def layers(path: str) -> int:
    """How many zonemount mounts are stacked at ``path`` (in this test's namespace)."""
    entries = parse(Path("/proc/self/mountinfo").read_text())
    return sum(1 for e in entries if e.mount_point == path and e.fstype == FSTYPE)


def read_ahead_kb(path: str) -> int:
    """The kernel read-ahead of the top mount at ``path`` (the node plugin tunes it)."""
    entry = find(path)
    assert entry is not None
    return int(Path(f"/sys/class/bdi/{entry.device}/read_ahead_kb").read_text())


def fuse_servers(bucket: str) -> list[int]:
    """PIDs (this namespace) of FUSE servers of ``bucket`` (descriptor-passed or mounting)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and bucket.encode() in argv:
            found.append(int(entry.name))
    return sorted(found)


def ns_init(outer: subprocess.Popen[bytes]) -> int:
    """PID (here) of the init of the namespace that ``unshare --fork`` created."""
    children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")
    wait_for(lambda: children.read_text().strip() != "", 10, "the namespace's init")
    return int(children.read_text().split()[0])


class Pod:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, stop: Path) -> None:
        self.process, self.log, self.stopfile = process, log, stop

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def errors(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in self.events() if not e["ok"] and e["t"] >= since]

    def healthy_after(self, since: float) -> bool:
        """Every operation succeeded at least once after the last error after ``since``."""
        events = [e for e in self.events() if e["t"] >= since]
        last_error = max((e["t"] for e in events if not e["ok"]), default=since)
        after = {e["op"] for e in events if e["ok"] and e["t"] > last_error}
        return {"write", "read", "input", "list"} <= after

    def error_window(self, since: float) -> float:
        """Seconds from ``since`` to the last error after it (0 when there was none)."""
        errors = self.errors(since)
        return max(e["t"] for e in errors) - since if errors else 0.0

    def stop(self) -> None:
        self.stopfile.touch()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Node:
    """The plugin and the mounter in their own namespaces, the pods in theirs."""

    def __init__(self, workdir: Path, moto: LocalS3, legacy: bool = False) -> None:
        #: legacy: no mounter; the FUSE servers are children of the plugin (the old design).
        self.legacy = legacy
        self.workdir = workdir
        self.kubelet = workdir / "kubelet"
        self.moto = moto
        self.csi_socket = workdir / "csi.sock"
        self.mounter_socket = workdir / "mounter.sock"
        self.env = node_env(moto)
        self.plugin: subprocess.Popen[bytes] | None = None
        self.mounter: subprocess.Popen[bytes] | None = None
        self.pods: list[Pod] = []
        self.channel: grpc.Channel | None = None
        self.node: Any = None
        self.plugin_metrics = free_port()
        self.mounter_metrics = free_port()
        # The host's kubelet directory is a shared mount (systemd makes / shared): mounts the
        # plugin makes in its namespace propagate here, and from here into slave pods.
        subprocess.run(["mount", "--bind", str(self.kubelet), str(self.kubelet)], check=True)
        subprocess.run(["mount", "--make-private", str(self.kubelet)], check=True)
        subprocess.run(["mount", "--make-shared", str(self.kubelet)], check=True)

    def _log(self, name: str) -> Any:
        return (self.workdir / f"{name}.log").open("ab")

    def start_mounter(self) -> None:
        with self._log("mounter") as log:
            self.mounter = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    ZONEMOUNT,
                    "csi-mounter",
                    "--endpoint",
                    f"unix://{self.mounter_socket}",
                    "--state-dir",
                    str(self.workdir / "mounter-state"),
                    "--max-memory-per-mount",
                    "4096",
                    "--metrics-address",
                    f"127.0.0.1:{self.mounter_metrics}",
                    "--shutdown-grace",
                    "5",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.mounter_socket.exists, 30, "the mounter socket")

    def start_plugin(self) -> None:
        self.csi_socket.unlink(missing_ok=True)
        with self._log("plugin") as log:
            self.plugin = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--propagation",
                    "unchanged",
                    ZONEMOUNT,
                    "csi-node",
                    "--endpoint",
                    f"unix://{self.csi_socket}",
                    "--node-id",
                    "node-ns",
                    "--zone",
                    "us-east-1a",
                    "--kubelet-dir",
                    str(self.kubelet),
                    "--state-dir",
                    str(self.workdir / "state"),
                    "--allowed-endpoint-url",
                    self.moto.endpoint,
                    "--supervise-interval",
                    "2",
                    "--cache-dir",
                    str(self.workdir / "cache"),
                    *(
                        ()
                        if self.legacy
                        else ("--mounter-endpoint", f"unix://{self.mounter_socket}")
                    ),
                    "--metrics-address",
                    f"127.0.0.1:{self.plugin_metrics}",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.csi_socket.exists, 30, "the CSI socket")
        self.channel = grpc.insecure_channel(f"unix://{self.csi_socket}")
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        csi_pb2_grpc.IdentityStub(self.channel).Probe(
            csi_pb2.ProbeRequest(), timeout=30, wait_for_ready=True
        )

    def stop_process(self, which: str, sig: int) -> None:
        """Signal the init of the plugin's or the mounter's namespace (SIGKILL: all of it)."""
        process = self.plugin if which == "plugin" else self.mounter
        assert process is not None
        if which == "plugin" and self.channel is not None:
            self.channel.close()
            self.channel = None
        os.kill(ns_init(process), sig)
        process.wait(timeout=60)
        if which == "plugin":
            self.plugin = None
        else:
            self.mounter = None

    def publish(self, target: str, bucket: str, **context: str) -> None:
        request = publish_request(target, bucket, self.moto.endpoint, **context)
        if not until_not_aborted(lambda: self.node.NodePublishVolume(request, timeout=90), 120):
            raise AssertionError("NodePublishVolume stayed ABORTED")

    def unpublish(self, target: str, bucket: str) -> None:
        request = csi_pb2.NodeUnpublishVolumeRequest(volume_id=f"vol-{bucket}", target_path=target)
        if not until_not_aborted(lambda: self.node.NodeUnpublishVolume(request, timeout=90), 120):
            raise AssertionError("NodeUnpublishVolume stayed ABORTED")

    def start_pod(self, target: str, mode: str) -> Pod:
        name = f"pod{len(self.pods)}-{mode}"
        view = self.workdir / "pods" / name / "data"
        log = self.workdir / f"{name}.jsonl"
        stop = self.workdir / f"{name}.stop"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *("unshare", "--mount", "--propagation", "slave", sys.executable, POD_SIM),
                    *(target, str(view), mode, name, str(stop)),
                ],
                stdout=out,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        pod = Pod(process, log, stop)
        self.pods.append(pod)
        wait_for(lambda: pod.healthy_after(0), 60, f"{name} to read and write")
        return pod

    def cleanup(self) -> None:
        for pod in self.pods:
            with contextlib.suppress(Exception):
                pod.stop()
        for which in ("plugin", "mounter"):
            if (self.plugin if which == "plugin" else self.mounter) is not None:
                with contextlib.suppress(Exception):
                    self.stop_process(which, signal.SIGKILL)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mount_point = line.split()[4]
            if mount_point.startswith(str(self.workdir)):
                subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)


@pytest.fixture
def node(workdir: Path, moto_server: LocalS3) -> Iterator[Node]:
    sim = Node(workdir, moto_server)
    try:
        sim.start_mounter()
        sim.start_plugin()
        yield sim
    finally:
        sim.cleanup()


CACHE = {"cacheMedium": "disk", "cacheSizeLimit": "64Mi"}


def cache_files(node: Node) -> list[Path]:
    return [p for p in (node.workdir / "cache").rglob("*") if p.is_file()]


def _two_pods(node: Node, bucket: str) -> tuple[str, str, Pod, Pod]:
    node.moto.client().put_object(Bucket=bucket, Key="data/input.txt", Body=b"input data")  # type: ignore[attr-defined]
    private_target = make_target(node.kubelet, "pv-a")
    slave_target = make_target(node.kubelet, "pv-a")
    node.publish(private_target, bucket)
    node.publish(slave_target, bucket, **CACHE)
    return (
        private_target,
        slave_target,
        node.start_pod(private_target, "private"),
        node.start_pod(slave_target, "slave"),
    )


def _assert_nothing_left(node: Node, bucket: str, *targets: str) -> None:
    for target in targets:
        node.unpublish(target, bucket)
        assert layers(target) == 0
        assert not os.path.exists(target)
    wait_for(lambda: fuse_servers(bucket) == [], 20, "the FUSE servers to exit")
    cache = node.workdir / "cache"
    assert cache_files(node) == [] and (not cache.exists() or list(cache.iterdir()) == [])
    state = json.loads((node.workdir / "state" / "state.json").read_text())
    assert state["volumes"] == {}
    assert not list((node.workdir / "mounter-state").glob("volumes/*/meta.json"))


def test_plugin_kill_and_upgrade_during_io_pods_see_no_error(node: Node, bucket: str) -> None:
    private_target, slave_target, private, slave = _two_pods(node, bucket)
    servers = fuse_servers(bucket)
    assert len(servers) == 2
    assert read_ahead_kb(slave_target) == READ_AHEAD_KB  # the unprivileged server cannot set it
    start = time.time()
    # 1. kill -9 of the plugin container (its PID namespace) in the middle of reads and writes
    node.stop_process("plugin", signal.SIGKILL)
    time.sleep(3)  # pods keep reading and writing while no plugin exists
    node.start_plugin()
    node.publish(private_target, bucket)  # the kubelet's republish: idempotent
    node.publish(slave_target, bucket, **CACHE)
    # 2. an upgrade: SIGTERM, a new plugin process (same mounts, same servers)
    node.stop_process("plugin", signal.SIGTERM)
    time.sleep(2)
    node.start_plugin()
    node.publish(private_target, bucket)
    node.publish(slave_target, bucket, **CACHE)
    time.sleep(3)  # supervisor passes of the new plugin: nothing to repair
    assert fuse_servers(bucket) == servers, "a live FUSE server must not be replaced"
    assert layers(private_target) == layers(slave_target) == 1
    assert cache_files(node), "the slave pod's volume has a disk cache (cacheMedium: disk)"
    for pod in (private, slave):
        assert pod.healthy_after(start)
        assert pod.errors(start) == [], pod.errors(start)[:3]
    print(f"\nplugin kill + upgrade: {len(slave.events())} pod operations, 0 errors")
    private.stop()
    slave.stop()
    _assert_nothing_left(node, bucket, private_target, slave_target)


def test_fuse_server_kill_slave_pod_recovers_private_pod_does_not(node: Node, bucket: str) -> None:
    private_target, slave_target, private, slave = _two_pods(node, bucket)
    before = fuse_servers(bucket)
    killed = time.time()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: slave.healthy_after(killed) and slave.errors(killed) != [], 60, "recovery")
    window = slave.error_window(killed)
    time.sleep(2)
    errors = private.errors(killed)
    assert errors and all(e["err"].startswith("107 ") for e in errors[-5:]), errors[-3:]
    assert not private.healthy_after(killed), "a private bind mount cannot see the new mount"
    print(f"\nFUSE kill: slave pod errors for {window:.1f} s; private pod: ENOTCONN until restart")
    assert layers(slave_target) == 2  # the replacement is stacked on the dead mount
    assert read_ahead_kb(slave_target) == READ_AHEAD_KB
    assert len(fuse_servers(bucket)) == 2 and set(fuse_servers(bucket)).isdisjoint(before)
    restarts = scrape(node.plugin_metrics)
    assert "zonemount_csi_fuse_restarts_total" in restarts
    assert 'zonemount_mounter_fuse_server_exits_total{cause="signal"} 2.0' in scrape(
        node.mounter_metrics
    )
    private.stop()
    slave.stop()
    _assert_nothing_left(node, bucket, private_target, slave_target)


def test_mounter_restart_slave_pod_recovers(node: Node, bucket: str) -> None:
    private_target, slave_target, private, slave = _two_pods(node, bucket)
    before = fuse_servers(bucket)
    restarted = time.time()
    node.stop_process("mounter", signal.SIGTERM)  # servers flush and exit with their container
    node.start_mounter()
    wait_for(lambda: slave.healthy_after(restarted), 60, "recovery after the mounter restart")
    window = slave.error_window(restarted)
    print(f"\nmounter restart: slave pod errors for {window:.1f} s")
    assert set(fuse_servers(bucket)).isdisjoint(before)
    assert not private.healthy_after(restarted + window + 1)
    private.stop()
    slave.stop()
    _assert_nothing_left(node, bucket, private_target, slave_target)


@pytest.fixture
def legacy_node(workdir: Path, moto_server: LocalS3) -> Iterator[Node]:
    sim = Node(workdir, moto_server, legacy=True)
    try:
        sim.start_plugin()
        yield sim
    finally:
        sim.cleanup()


def test_before_without_the_mounter_a_plugin_kill_breaks_every_pod(
    legacy_node: Node, bucket: str
) -> None:
    """The old design (and ``node.mounter.enabled=false``): the FUSE servers share the plugin's
    PID namespace, so a plugin kill kills them; the restarted plugin remounts at the target
    path (after detaching the dead mount), which no running pod's bind mount can see."""
    node = legacy_node
    _, _, private, slave = _two_pods(node, bucket)
    killed = time.time()
    node.stop_process("plugin", signal.SIGKILL)
    assert fuse_servers(bucket) == [], "the FUSE servers died with the plugin's namespace"
    node.start_plugin()
    wait_for(lambda: len(fuse_servers(bucket)) == 2, 60, "the plugin to restore both mounts")
    restored = time.time()
    time.sleep(8)
    for pod in (private, slave):
        assert pod.errors(killed), "the pod saw the plugin's death"
        assert not pod.healthy_after(restored), "and cannot see the restored mount"
    print(
        f"\nbefore (no mounter): plugin kill -> both pods ENOTCONN; plugin restored the mounts "
        f"{restored - killed:.1f} s later, pods still failing {time.time() - restored:.0f} s after"
    )
    private.stop()
    slave.stop()


def _host_pid(node: Node, bucket: str, target: str) -> int:
    """The host PID of the FUSE server of ``target`` (meta.json has the mounter's own PID)."""
    metas = [json.loads(p.read_text()) for p in node.workdir.glob("mounter-state/volumes/*/*.json")]
    inner = next(m["pid"] for m in metas if m["key"] == target)
    for pid in fuse_servers(bucket):
        nspid = next(
            ln
            for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ln.startswith("NSpid")
        ).split()
        if int(nspid[-1]) == inner:
            return pid
    raise AssertionError(f"no FUSE server with PID {inner} in the mounter's namespace")


def test_a_hung_fuse_server_is_killed_and_replaced(node: Node, bucket: str) -> None:
    """SIGSTOP: the mount neither answers nor fails; the probe's bound (10 s) calls it dead."""
    node.moto.client().put_object(Bucket=bucket, Key="data/input.txt", Body=b"input data")  # type: ignore[attr-defined]
    target = make_target(node.kubelet, "pv-hung")
    node.publish(target, bucket)
    pod = node.start_pod(target, "slave")
    hung = _host_pid(node, bucket, target)
    stopped = time.time()
    os.kill(hung, signal.SIGSTOP)
    wait_for(lambda: not Path(f"/proc/{hung}").exists(), 90, "the hung server to be killed")
    wait_for(lambda: pod.healthy_after(stopped + 1), 60, "the pod to work again")
    print(f"\nhung FUSE server: replaced, pod working again {time.time() - stopped:.1f} s later")
    assert layers(target) == 2
    pod.stop()
    _assert_nothing_left(node, bucket, target)
