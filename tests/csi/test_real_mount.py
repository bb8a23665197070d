"""The node plugin end to end: real ``zonemount csi-node`` process, real FUSE mounts of the real
``zonemount mount`` client against the moto server, driven through the CSI gRPC socket.

Covers: publish -> read/write through the target -> unpublish; a plugin restart with a live
mount (re-adopted, not remounted); ``kill -9`` of the FUSE process (ENOTCONN) and its recovery
by the supervisor, counted in metrics; pod-level credentials end to end (AssumeRoleWithWebIdentity
against moto's STS, no driver keys in the FUSE process, no token in argv or logs).

Runs only where the FUSE client is importable and /dev/fuse exists (root on CI machines).
"""

from __future__ import annotations

import contextlib
import errno
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

pytest.importorskip("zonemount_fs.cli", reason="the FUSE client (zonemount mount) is not built yet")
if not os.path.exists("/dev/fuse") or os.geteuid() != 0:  # pragma: no cover - machine-dependent
    pytest.skip("real FUSE mounts need root and /dev/fuse", allow_module_level=True)

from zonemount_cli.servers import LocalS3, free_port
from zonemount_csi._proto import csi_pb2, csi_pb2_grpc
from zonemount_csi.mountinfo import find

from tests.csi.conftest import (
    make_target,
    mount_capability,
    node_env,
    publish_request,
    scrape,
    until_not_aborted,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1hOnNwYXJrIn0.UE9ELVRPS0VOLVNFQ1JFVA"  # noqa: E501


class RealNode:
    """A ``zonemount csi-node`` subprocess and a gRPC client to it."""

    def __init__(self, workdir: Path, moto: LocalS3, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.workdir = workdir
        self.kubelet = workdir / "kubelet"
        self.state_dir = workdir / "state"
        self.socket = workdir / "csi.sock"
        self.log_path = workdir / "plugin.log"
        self.moto = moto
        self.metrics_port = free_port()
        self.env = node_env(moto)
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.node: Any = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    ZONEMOUNT,
                    "csi-node",
                    "--endpoint",
                    f"unix://{self.socket}",
                    "--node-id",
                    "node-real",
                    "--zone",
                    "us-east-1a",
                    "--kubelet-dir",
                    str(self.kubelet),
                    "--state-dir",
                    str(self.state_dir),
                    "--allowed-endpoint-url",
                    self.moto.endpoint,
                    "--supervise-interval",
                    "0.5",
                    "--metrics-address",
                    f"127.0.0.1:{self.metrics_port}",
                    "--log-level",
                    "DEBUG",
                    *self.extra_args,
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.socket.exists, 30, "the CSI socket")
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        identity = csi_pb2_grpc.IdentityStub(self.channel)
        # The socket file appears at bind(), before the server listens on it: a Probe sent in
        # between is refused (UNAVAILABLE) on a loaded machine. wait_for_ready waits for the
        # server to accept, which is what "started" means here.
        identity.Probe(csi_pb2.ProbeRequest(), timeout=30, wait_for_ready=True)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.channel is not None:
            self.channel.close()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def records(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        if not path.exists():
            return {}
        volumes: dict[str, Any] = json.loads(path.read_text())["volumes"]
        return volumes

    def metrics(self) -> str:
        return scrape(self.metrics_port)

    def publish(self, target: str, bucket: str, **extra: str) -> None:
        request = publish_request(target, bucket, self.moto.endpoint, **extra)
        if not until_not_aborted(lambda: self.node.NodePublishVolume(request, timeout=60), 60):
            raise AssertionError("NodePublishVolume stayed ABORTED")

    def unpublish(self, target: str, bucket: str, volume_id: str = "") -> None:
        """As the kubelet does: again while the plugin answers ABORTED - another operation on
        the volume is in flight (its supervisor repairing the mount)."""
        request = csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=volume_id or f"vol-{bucket}", target_path=target
        )
        if not until_not_aborted(lambda: self.node.NodeUnpublishVolume(request, timeout=60), 60):
            raise AssertionError("NodeUnpublishVolume stayed ABORTED")

    def cleanup(self) -> None:
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.stop(signal.SIGKILL)
        for record in self.records().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGKILL)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4]
            if mount_point.startswith(str(self.workdir)):
                subprocess.run(["fusermount3", "-uz", mount_point], check=False)


@pytest.fixture
def real_node(workdir: Path, moto_server: LocalS3) -> Iterator[RealNode]:
    node = RealNode(workdir, moto_server)
    try:  # a start that fails still leaves a plugin process to stop
        node.start()
        yield node
    finally:
        node.cleanup()


def _s3(moto: LocalS3) -> Any:
    return moto.client()


def _fuse_pid(node: RealNode, target: str) -> int:
    pid: int = node.records()[target]["pid"]
    return pid


def test_publish_read_write_unpublish(real_node: RealNode, bucket: str) -> None:
    s3 = _s3(real_node.moto)
    s3.put_object(Bucket=bucket, Key="data/input.txt", Body=b"from s3")
    target = make_target(real_node.kubelet, "pv-rw")
    real_node.publish(target, bucket)
    entry = find(target)
    assert entry is not None and entry.fstype == "fuse.zonemount"
    assert Path(target, "input.txt").read_bytes() == b"from s3"
    Path(target, "output.txt").write_bytes(b"from the pod")
    assert s3.get_object(Bucket=bucket, Key="data/output.txt")["Body"].read() == b"from the pod"
    real_node.publish(target, bucket)  # idempotent: same target, same args
    stats = real_node.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=f"vol-{bucket}", volume_path=target), timeout=30
    )
    assert not stats.volume_condition.abnormal
    assert {u.unit for u in stats.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}
    assert all(u.total > 0 for u in stats.usage)
    real_node.unpublish(target, bucket)
    assert find(target) is None
    assert not os.path.exists(target)
    assert real_node.records() == {}
    real_node.unpublish(target, bucket)  # and again: OK


def test_supervisor_checks_never_abort_a_publish_or_unpublish(
    workdir: Path, moto_server: LocalS3, bucket: str
) -> None:
    """With the supervisor checking every mount every 5 ms, publish and unpublish succeed at
    the first call: a health check claims no volume (before: ABORTED while it ran)."""
    node = RealNode(workdir, moto_server, "--supervise-interval", "0.005")
    try:
        node.start()
        target = make_target(node.kubelet, "pv-checked")
        node.publish(target, bucket)
        request = publish_request(target, bucket, moto_server.endpoint)
        for _ in range(40):  # idempotent republish: checks the mount, as the supervisor does
            node.node.NodePublishVolume(request, timeout=60)
        node.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=f"vol-{bucket}", target_path=target),
            timeout=60,
        )
        assert find(target) is None
        assert "restarting FUSE process" not in node.log_path.read_text()
    finally:
        node.cleanup()


def test_a_tenants_oversized_part_sizes_fit_the_nodes_memory_target(
    workdir: Path, moto_server: LocalS3, bucket: str
) -> None:
    """R-FLAGS-MEMORY-TARGET end to end: a PV asking for 64 MiB write parts and 256 MiB read
    parts on a node whose mounts get ``--max-memory-target 64`` is mounted, and the real FUSE
    server uploads a 40 MiB file as 16 MiB parts (3 parts: a multipart ETag ``-3``; before, one
    40 MiB PutObject buffered whole); the node's volume condition and the FUSE server's log
    say what was cut."""
    node = RealNode(workdir, moto_server, "--max-memory-target", "64")
    try:
        node.start()
        target = make_target(node.kubelet, "pv-big-parts")
        request = publish_request(target, bucket, moto_server.endpoint)
        request.volume_capability.mount.mount_flags.extend(
            [f"write-part-size={64 * 1024 * 1024}", f"read-part-size={256 * 1024 * 1024}"]
        )
        assert until_not_aborted(lambda: node.node.NodePublishVolume(request, timeout=60), 60)
        data = os.urandom(40 * 1024 * 1024)
        Path(target, "big.bin").write_bytes(data)
        s3 = _s3(moto_server)
        assert s3.get_object(Bucket=bucket, Key="data/big.bin")["Body"].read() == data
        etag = s3.head_object(Bucket=bucket, Key="data/big.bin")["ETag"]
        assert etag.strip('"').endswith("-3"), etag
        assert Path(target, "big.bin").read_bytes() == data
        stats = node.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=f"vol-{bucket}", volume_path=target),
            timeout=30,
        )
        assert not stats.volume_condition.abnormal
        assert "uploads use 16777216-byte (16 MiB) parts" in stats.volume_condition.message
        assert "reads use 16777216-byte (16 MiB) parts" in stats.volume_condition.message
        fuse_log = (node.state_dir / "volumes").rglob("zonemount.log")
        assert any("sends 1 part(s) at once" in p.read_text() for p in fuse_log)
        node.unpublish(target, bucket)
    finally:
        node.cleanup()


def test_plugin_restart_keeps_and_readopts_live_mount(real_node: RealNode, bucket: str) -> None:
    s3 = _s3(real_node.moto)
    s3.put_object(Bucket=bucket, Key="data/keep.txt", Body=b"still here")
    target = make_target(real_node.kubelet, "pv-restart")
    real_node.publish(target, bucket)
    pid = _fuse_pid(real_node, target)
    assert real_node.stop(signal.SIGTERM) == 0  # graceful shutdown leaves mounts alive
    assert Path(target, "keep.txt").read_bytes() == b"still here"
    real_node.start()
    real_node.publish(target, bucket)  # kubelet's republish after the restart
    time.sleep(1.5)  # a few supervisor passes
    assert _fuse_pid(real_node, target) == pid, "a live mount must not be remounted"
    assert "zonemount_csi_published_volumes 1.0" in real_node.metrics()
    assert Path(target, "keep.txt").read_bytes() == b"still here"
    real_node.unpublish(target, bucket)  # stops the adopted (not our child) process
    assert find(target) is None
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15, "the adopted FUSE process to exit")


def test_kill_9_of_fuse_process_is_detected_and_repaired(real_node: RealNode, bucket: str) -> None:
    s3 = _s3(real_node.moto)
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"alpha")
    target = make_target(real_node.kubelet, "pv-kill")
    real_node.publish(target, bucket)
    pid = _fuse_pid(real_node, target)
    os.kill(pid, signal.SIGKILL)

    def repaired() -> bool:
        try:
            return Path(target, "a.txt").read_bytes() == b"alpha"
        except OSError as exc:
            assert exc.errno in {errno.ENOTCONN, errno.ECONNABORTED, errno.ENOENT}, exc
            return False

    wait_for(repaired, 60, "the supervisor to restore the mount")
    assert _fuse_pid(real_node, target) != pid
    assert 'zonemount_csi_fuse_restarts_total{reason="supervisor"} 1.0' in real_node.metrics()
    real_node.unpublish(target, bucket)
    assert find(target) is None


def test_publish_repairs_a_dead_mount_while_supervisor_is_stopped(
    real_node: RealNode, bucket: str
) -> None:
    s3 = _s3(real_node.moto)
    s3.put_object(Bucket=bucket, Key="data/b.txt", Body=b"beta")
    target = make_target(real_node.kubelet, "pv-dead")
    real_node.publish(target, bucket)
    pid = _fuse_pid(real_node, target)
    real_node.stop(signal.SIGTERM)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the FUSE process to die")
    with pytest.raises(OSError) as info:
        os.listdir(target)
    assert info.value.errno == errno.ENOTCONN  # "Transport endpoint is not connected"
    real_node.start()  # the restarted plugin restores it (first supervisor pass or republish)
    real_node.publish(target, bucket)
    wait_for(lambda: Path(target, "b.txt").exists(), 30, "the mount to come back")
    assert Path(target, "b.txt").read_bytes() == b"beta"
    real_node.unpublish(target, bucket)


def test_pod_level_credentials_end_to_end_against_moto_sts(
    real_node: RealNode, bucket: str
) -> None:
    import boto3

    moto = real_node.moto
    iam = boto3.client(
        "iam",
        endpoint_url=moto.endpoint,
        region_name=moto.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example"},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    role_arn = iam.create_role(
        RoleName=f"spark-{bucket}", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    s3 = _s3(moto)
    s3.put_object(Bucket=bucket, Key="data/pod.txt", Body=b"pod identity")
    target = make_target(real_node.kubelet, "pv-pod")
    tokens = json.dumps(
        {"sts.amazonaws.com": {"token": TOKEN, "expirationTimestamp": "2030-01-01T00:00:00Z"}}
    )
    real_node.publish(
        target,
        bucket,
        authenticationSource="pod",
        roleArn=role_arn,
        **{
            "csi.storage.k8s.io/serviceAccount.tokens": tokens,
            "csi.storage.k8s.io/pod.name": "exec-1",
            "csi.storage.k8s.io/pod.namespace": "team-a",
        },
    )
    assert Path(target, "pod.txt").read_bytes() == b"pod identity"
    Path(target, "from-pod.txt").write_bytes(b"written with STS credentials")
    assert (
        s3.get_object(Bucket=bucket, Key="data/from-pod.txt")["Body"].read().startswith(b"written")
    )
    pid = _fuse_pid(real_node, target)
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert environ["AWS_ROLE_ARN"] == role_arn
    assert Path(environ["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text() == TOKEN
    assert "AWS_ACCESS_KEY_ID" not in environ and "AWS_SECRET_ACCESS_KEY" not in environ
    assert TOKEN not in Path(f"/proc/{pid}/cmdline").read_text()
    # the FUSE process's credential chain resolves to web identity (STS), nothing else
    probe = subprocess.run(
        [sys.executable, "-c", "import boto3; print(boto3.Session().get_credentials().method)"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "assume-role-with-web-identity"
    logs = real_node.log_path.read_text() + "".join(
        p.read_text() for p in real_node.state_dir.glob("volumes/*/zonemount.log")
    )
    assert "NodePublishVolume request" in logs
    assert TOKEN not in logs and "UE9ELVRPS0VOLVNFQ1JFVA" not in logs
    real_node.unpublish(target, bucket)
    assert not any(real_node.state_dir.glob("volumes/*/web-identity-token"))


def test_dynamic_provisioning_lifecycle_controller_to_node(
    real_node: RealNode, bucket: str, s3_env: dict[str, str]
) -> None:
    """csi-sanity's lifecycle: CreateVolume -> NodePublish with the returned context -> write ->
    NodeUnpublish -> DeleteVolume (deleteData) -> the claim's prefix is gone, nothing else."""
    from zonemount_csi.controller import ControllerConfig, ControllerService

    moto = real_node.moto
    controller = ControllerService(ControllerConfig((moto.endpoint,)))
    s3 = _s3(moto)
    s3.put_object(Bucket=bucket, Key="claims/team-b/other/keep.txt", Body=b"neighbour")
    volume = controller.create(
        csi_pb2.CreateVolumeRequest(
            name="pvc-5e1f",
            volume_capabilities=[mount_capability()],
            parameters={
                "bucketName": bucket,
                "basePrefix": "claims/",
                "endpointUrl": moto.endpoint,
                "deleteData": "true",
                "csi.storage.k8s.io/pvc/name": "scratch",
                "csi.storage.k8s.io/pvc/namespace": "team-b",
            },
        )
    ).volume
    target = make_target(real_node.kubelet, "pvc-5e1f")
    real_node.node.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id=volume.volume_id,
            target_path=target,
            volume_capability=mount_capability(["allow-delete"]),
            volume_context=volume.volume_context,
        ),
        timeout=60,
    )
    Path(target, "part-0000").write_bytes(b"spark output")
    assert (
        s3.get_object(Bucket=bucket, Key="claims/team-b/scratch/part-0000")["Body"].read()
        == b"spark output"
    )
    real_node.unpublish(target, bucket, volume.volume_id)
    controller.delete(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    remaining = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert remaining == ["claims/team-b/other/keep.txt"]
