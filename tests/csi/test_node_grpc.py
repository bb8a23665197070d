"""The node plugin's idempotency / error-code matrix through a real gRPC unix socket.

The FUSE side is the in-memory FakeMounter (tests/csi/fakes.py); the real-mount tier is in
test_real_mount.py. Each test names the CSI rule it pins down.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest
from zonemount_csi._proto import csi_pb2
from zonemount_csi.metrics import Metrics
from zonemount_csi.node import NodeService, Supervisor
from zonemount_csi.state import StateStore
from zonemount_fs.options import parse_args

from tests.csi.conftest import NodePlugin, NodePluginFactory, mount_capability, rpc_error

MiB = 1024 * 1024

pytestmark = pytest.mark.unit

Mode = csi_pb2.VolumeCapability.AccessMode
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c3VwZXItc2VjcmV0LXRva2Vu.sig-VERY-SECRET-123"
TOKENS_JSON = json.dumps({"sts.amazonaws.com": {"token": TOKEN, "expirationTimestamp": "x"}})
ROLE = "arn:aws:iam::123456789012:role/spark-reader"


def pod_context(token_json: str = TOKENS_JSON, **extra: str) -> dict[str, str]:
    return {
        "bucketName": "bucket-a",
        "prefix": "data/",
        "authenticationSource": "pod",
        "roleArn": ROLE,
        "csi.storage.k8s.io/serviceAccount.tokens": token_json,
        "csi.storage.k8s.io/pod.name": "spark-exec-1",
        "csi.storage.k8s.io/pod.namespace": "team-a",
        **extra,
    }


# ---------------------------------------------------------------- identity / info


def test_identity_reports_name_capabilities_and_probe(node_plugin: NodePlugin) -> None:
    info = node_plugin.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "s3.csi.zonemount.io"
    # csi-sanity: domain-name notation, at most 63 characters
    assert re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?", info.name)
    assert info.vendor_version
    caps = node_plugin.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    types = {c.service.type for c in caps.capabilities}
    service = csi_pb2.PluginCapability.Service
    assert types == {service.CONTROLLER_SERVICE, service.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    assert node_plugin.identity.Probe(csi_pb2.ProbeRequest()).ready.value is True


def test_probe_fails_with_failed_precondition_when_node_cannot_mount(
    node_plugin: NodePlugin,
) -> None:
    node_plugin.mounter.problem = "/dev/fuse is missing"
    err = rpc_error(lambda: node_plugin.identity.Probe(csi_pb2.ProbeRequest()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/dev/fuse" in (err.details() or "")


def test_node_get_info_reports_zone_and_zone_id(node_plugin: NodePlugin) -> None:
    info = node_plugin.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "node-a"
    assert dict(info.accessible_topology.segments) == {
        "topology.kubernetes.io/zone": "us-east-1a",
        "topology.zonemount.io/zone-id": "use1-az4",
    }


def test_node_get_info_never_reports_no_topology(node_plugin_factory: NodePluginFactory) -> None:
    """The plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS: no zone is an error, not a
    NodeGetInfo without topology (the CLI refuses to start; see test_cli)."""
    plugin = node_plugin_factory(zone="", zone_id="")
    err = rpc_error(lambda: plugin.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--zone" in (err.details() or "")
    info = node_plugin_factory(zone="us-east-1b", zone_id="").node.NodeGetInfo(
        csi_pb2.NodeGetInfoRequest()
    )
    assert dict(info.accessible_topology.segments) == {"topology.kubernetes.io/zone": "us-east-1b"}


def test_node_capabilities(node_plugin: NodePlugin) -> None:
    caps = node_plugin.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert {c.rpc.type for c in caps.capabilities} == {rpc.GET_VOLUME_STATS, rpc.VOLUME_CONDITION}


def test_stage_is_unimplemented(node_plugin: NodePlugin) -> None:
    err = rpc_error(lambda: node_plugin.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest()))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------- publish: happy path


def test_publish_runs_one_fuse_process_with_exact_argv(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(
        node_plugin.publish_request(target, flags=["allow-delete", "--uid=1000", "gid 100"])
    )
    (spec,) = node_plugin.mounter.specs
    assert spec.args == [
        "mount",
        "bucket-a",
        target,
        "-f",
        "--prefix=data/",
        "--allow-delete",
        "--uid=1000",
        "--gid=100",
        "--max-memory-target=512",  # the node's, for every mount
    ]
    assert os.path.isdir(target)
    assert spec.env["AWS_ACCESS_KEY_ID"] == "AKIADRIVER"  # driver-level: plugin env passes through


def test_publish_is_idempotent_for_same_target_and_args(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    request = node_plugin.publish_request(target, flags=["allow-delete"])
    node_plugin.node.NodePublishVolume(request)
    node_plugin.node.NodePublishVolume(request)
    assert node_plugin.mounter.count("mount") == 1


@pytest.mark.parametrize(
    "change",
    [
        {"flags": ["allow-overwrite"]},
        {"volume_id": "vol-2"},
        {"context": {"bucketName": "bucket-b", "prefix": "data/"}},
        {"readonly": True},
    ],
    ids=["options", "volume", "bucket", "readonly"],
)
def test_publish_same_target_different_args_is_already_exists(
    node_plugin: NodePlugin, change: dict[str, object]
) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target, flags=["allow-delete"]))
    kwargs: dict[str, object] = {"flags": ["allow-delete"], **change}
    err = rpc_error(
        lambda: node_plugin.node.NodePublishVolume(node_plugin.publish_request(target, **kwargs))  # type: ignore[arg-type]
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert node_plugin.mounter.count("mount") == 1


@pytest.mark.parametrize(
    ("readonly", "mode"),
    [(True, Mode.MULTI_NODE_MULTI_WRITER), (False, Mode.MULTI_NODE_READER_ONLY)],
)
def test_readonly_request_or_mode_adds_read_only(
    node_plugin: NodePlugin, readonly: bool, mode: int
) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(
        node_plugin.publish_request(
            target, readonly=readonly, capability=mount_capability(["allow-delete"], mode)
        )
    )
    assert "--read-only" in node_plugin.mounter.specs[0].args


def test_same_volume_on_two_targets_gives_two_processes(node_plugin: NodePlugin) -> None:
    first, second = node_plugin.target(), node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(first))
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(second))
    assert set(node_plugin.mounter.mounted) == {first, second}


def test_allowed_endpoint_is_passed_and_others_refused(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    ctx = {"bucketName": "bucket-a", "endpointUrl": "https://s3.allowed.example/"}
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target, context=ctx))
    assert "--endpoint-url=https://s3.allowed.example" in node_plugin.mounter.specs[0].args
    for url in (
        "https://evil.example",
        "https://user:hunter2@s3.allowed.example",
        "http://s3.allowed.example",
    ):
        other = node_plugin.target()
        err = rpc_error(
            lambda url=url, other=other: node_plugin.node.NodePublishVolume(
                node_plugin.publish_request(
                    other, context={"bucketName": "b-1", "endpointUrl": url}
                )
            )
        )
        assert err.code() == INVALID
        assert "--allowed-endpoint-url" in (err.details() or "")
        assert "hunter2" not in (err.details() or "")
    assert node_plugin.mounter.count("mount") == 1


# ---------------------------------------------------------------- publish: validation matrix


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda r: r.ClearField("volume_id"), INVALID),
        (lambda r: r.ClearField("target_path"), INVALID),
        (lambda r: r.ClearField("volume_capability"), INVALID),
        (lambda r: r.volume_capability.ClearField("access_type"), INVALID),
        (
            lambda r: r.volume_capability.CopyFrom(
                csi_pb2.VolumeCapability(
                    block=csi_pb2.VolumeCapability.BlockVolume(),
                    access_mode=Mode(mode=Mode.MULTI_NODE_MULTI_WRITER),
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (lambda r: r.volume_capability.access_mode.Clear(), grpc.StatusCode.FAILED_PRECONDITION),
        (lambda r: setattr(r.volume_capability.mount, "fs_type", "ext4"), INVALID),
        (lambda r: r.volume_context.pop("bucketName"), INVALID),
        (lambda r: r.volume_context.__setitem__("bucketName", "Not_A_Bucket"), INVALID),
        # reserved by S3: the FUSE client refuses it, so the node must (issue 15's drift)
        (lambda r: r.volume_context.__setitem__("bucketName", "xn--data"), INVALID),
        (lambda r: r.volume_context.__setitem__("bucketName", "data--use1-AZ4--x-s3"), INVALID),
        (lambda r: r.volume_context.__setitem__("bucketname", "typo"), INVALID),
        (lambda r: r.volume_context.__setitem__("prefix", "../etc/"), INVALID),
        (lambda r: r.volume_context.__setitem__("prefix", "/abs/"), INVALID),
        (lambda r: r.volume_context.__setitem__("prefix", "--cache=/x/"), INVALID),
        (lambda r: r.volume_context.__setitem__("region", "us east 1"), INVALID),
        (lambda r: r.volume_context.__setitem__("authenticationSource", "node"), INVALID),
        (lambda r: r.volume_context.__setitem__("roleArn", ROLE), INVALID),
    ],
    ids=[
        "no-volume-id",
        "no-target",
        "no-capability",
        "no-access-type",
        "block",
        "unknown-mode",
        "fs-type",
        "no-bucket",
        "bad-bucket",
        "reserved-bucket",
        "bad-directory-bucket",
        "unknown-key",
        "prefix-dotdot",
        "prefix-abs",
        "prefix-flag",
        "bad-region",
        "bad-auth",
        "role-without-pod-auth",
    ],
)
def test_publish_validation(node_plugin: NodePlugin, mutate: object, code: grpc.StatusCode) -> None:
    request = node_plugin.publish_request(node_plugin.target())
    mutate(request)  # type: ignore[operator]
    err = rpc_error(lambda: node_plugin.node.NodePublishVolume(request))
    assert err.code() == code, err.details()
    assert node_plugin.mounter.count("mount") == 0


@pytest.mark.parametrize(
    "flags",
    [
        ["-o allow_other"],
        ["-o", "allow_other"],
        ["uid=1000,gid=1000"],
        ["--endpoint-url=https://evil.example"],
        ["endpoint-url https://evil.example"],
        ["--cache=/var/lib/kubelet"],
        ["cache /tmp"],
        ["--max-cache-size=100"],
        ["--log-directory=/etc/cron.d"],
        ["--profile=admin"],
        ["--metrics-address=0.0.0.0:80"],
        ["--prefix=other/"],
        ["--region=us-west-2"],
        ["--foreground"],
        ["-f"],
        ["--auto-unmount"],
        ["unknown-flag"],
        ["uid=1000 --cache /x"],
        ["--uid=0; rm -rf /"],
        ["uid=$(id)"],
        ["allow-delete\n--cache=/x"],
        ["uid=-1"],
        ["dir-mode=0999"],
        ["allow-delete=false"],
        ["uid"],
        ["uid=1", "uid=2"],
        ["sse-kms-key-id=arn:aws:kms:us-east-1:123456789012:key/abc"],
        ["storage-class=--debug"],
        ["debug"],
        ["--debug"],
    ],
)
def test_mount_option_injection_is_refused(node_plugin: NodePlugin, flags: list[str]) -> None:
    request = node_plugin.publish_request(node_plugin.target(), flags=flags)
    err = rpc_error(lambda: node_plugin.node.NodePublishVolume(request))
    assert err.code() == INVALID, err.details()
    assert node_plugin.mounter.count("mount") == 0


# ---------------------------------------------------------------- path confinement


def _escape_targets(plugin: NodePlugin) -> dict[str, str]:
    outside = plugin.workdir / "outside"
    outside.mkdir(exist_ok=True)
    pods = plugin.kubelet / "pods"
    # a symlinked directory in the middle of the path that points outside the kubelet dir
    link_parent = pods / "uid-link" / "volumes" / "kubernetes.io~csi"
    link_parent.mkdir(parents=True)
    (link_parent / "pv-1").symlink_to(outside)
    # the target itself is a symlink (to a directory that is inside)
    inside = pods / "uid-other" / "volumes" / "kubernetes.io~csi" / "pv-2" / "mount"
    inside.mkdir(parents=True)
    self_link_parent = pods / "uid-self" / "volumes" / "kubernetes.io~csi" / "pv-1"
    self_link_parent.mkdir(parents=True)
    (self_link_parent / "mount").symlink_to(inside)
    return {
        "outside": str(outside / "mount"),
        "dotdot": str(pods / "uid" / ".." / ".." / ".." / "outside" / "mount"),
        "dotdot-inside": str(pods / "a" / ".." / "b" / "mount"),
        "dot": f"{pods}/./x/mount",
        "relative": "pods/uid/volumes/kubernetes.io~csi/pv/mount",
        "symlink-parent": str(link_parent / "pv-1" / "mount"),
        "symlink-target": str(self_link_parent / "mount"),
        "kubelet-root": str(plugin.kubelet),
        "pods-root": str(pods),
        "plugins-dir": str(plugin.kubelet / "plugins" / "x" / "mount"),
        "etc": "/etc/zonemount-test-mount",
        "nul": str(pods / "a\x00b"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "outside",
        "dotdot",
        "dotdot-inside",
        "dot",
        "relative",
        "symlink-parent",
        "symlink-target",
        "kubelet-root",
        "pods-root",
        "plugins-dir",
        "etc",
        "nul",
    ],
)
def test_path_traversal_is_refused_for_publish_and_unpublish(
    node_plugin: NodePlugin, case: str
) -> None:
    target = _escape_targets(node_plugin)[case]
    err = rpc_error(lambda: node_plugin.node.NodePublishVolume(node_plugin.publish_request(target)))
    assert err.code() == INVALID, err.details()
    err = rpc_error(
        lambda: node_plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=target)
        )
    )
    assert err.code() == INVALID
    assert node_plugin.mounter.calls == []
    assert not (node_plugin.workdir / "outside" / "mount").exists()


# ---------------------------------------------------------------- unpublish


def test_unpublish_unmounts_removes_target_and_is_idempotent(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    request = csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=target)
    node_plugin.node.NodeUnpublishVolume(request)
    assert not os.path.exists(target)
    assert node_plugin.mounter.mounted == {}
    assert node_plugin.service.store.get(target) is None
    node_plugin.node.NodeUnpublishVolume(request)  # second time: OK, nothing to do
    assert node_plugin.mounter.count("unmount") == 1


def test_unpublish_of_unknown_target_is_ok(node_plugin: NodePlugin) -> None:
    node_plugin.node.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-x", target_path=node_plugin.target())
    )
    assert node_plugin.mounter.calls == []


def test_unpublish_validation_and_wrong_volume(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    err = rpc_error(
        lambda: node_plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(target_path=target)
        )
    )
    assert err.code() == INVALID
    err = rpc_error(
        lambda: node_plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="v")
        )
    )
    assert err.code() == INVALID
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    err = rpc_error(
        lambda: node_plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-other", target_path=target)
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert target in node_plugin.mounter.mounted


# ---------------------------------------------------------------- concurrency and failures


def test_concurrent_operation_on_same_volume_is_aborted(node_plugin: NodePlugin) -> None:
    gate = threading.Event()
    node_plugin.mounter.gate = gate
    first, second = node_plugin.target(), node_plugin.target()
    future = node_plugin.node.NodePublishVolume.future(node_plugin.publish_request(first))
    assert node_plugin.mounter.entered.wait(5)
    try:
        err = rpc_error(
            lambda: node_plugin.node.NodePublishVolume(node_plugin.publish_request(second))
        )
        assert err.code() == grpc.StatusCode.ABORTED
        err = rpc_error(
            lambda: node_plugin.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=first)
            )
        )
        assert err.code() == grpc.StatusCode.ABORTED
    finally:
        gate.set()
    future.result(timeout=10)
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(second))  # retry succeeds
    assert set(node_plugin.mounter.mounted) == {first, second}


def test_mount_failure_is_internal_with_reason_and_leaves_no_record(
    node_plugin: NodePlugin,
) -> None:
    node_plugin.mounter.fail_next = "zonemount mount exited with code 1: bucket bucket-a not found"
    target = node_plugin.target()
    err = rpc_error(lambda: node_plugin.node.NodePublishVolume(node_plugin.publish_request(target)))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "bucket bucket-a not found" in (err.details() or "")
    assert node_plugin.service.store.get(target) is None
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))  # kubelet retry works


def test_publish_repairs_a_broken_mount(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    request = node_plugin.publish_request(target)
    node_plugin.node.NodePublishVolume(request)
    node_plugin.mounter.break_mount(target)
    node_plugin.node.NodePublishVolume(request)
    assert node_plugin.mounter.count("mount") == 2
    assert node_plugin.mounter.count("lazy_unmount") == 1
    record = node_plugin.service.store.get(target)
    assert record is not None and record.restarts == 1
    assert node_plugin.metrics.fuse_restarts.labels("publish")._value.get() == 1


def test_supervisor_restarts_a_dead_fuse_process(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    supervisor = Supervisor(node_plugin.service, interval=0.05)
    supervisor.start()
    try:
        node_plugin.mounter.break_mount(target)
        for _ in range(100):
            if node_plugin.mounter.count("mount") == 2:
                break
            threading.Event().wait(0.05)
    finally:
        supervisor.stop()
    assert node_plugin.mounter.count("mount") == 2
    assert node_plugin.service.mounter.state(target).value == "healthy"
    assert node_plugin.metrics.fuse_restarts.labels("supervisor")._value.get() == 1


def test_a_health_check_never_delays_an_rpc_but_a_repair_aborts_one(
    node_plugin: NodePlugin,
) -> None:
    """The supervisor's check of a volume claims nothing: a publish or unpublish of the volume
    arriving while one runs succeeds at once (before: ABORTED, and the kubelet retries with a
    backoff from 500 ms). A repair claims the volume, so an RPC meeting one is ABORTED."""
    first, second = node_plugin.target(), node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(first))
    checking, release = threading.Event(), threading.Event()

    def slow_check(target: str) -> None:
        if threading.current_thread().name == "csi-supervisor":
            checking.set()
            release.wait(10)

    node_plugin.mounter.on_state = slow_check
    supervisor = Supervisor(node_plugin.service, interval=60)
    supervisor.start()  # its first pass runs at once
    try:
        assert checking.wait(5)
        node_plugin.node.NodePublishVolume(node_plugin.publish_request(second))  # same volume
        node_plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=first)
        )
    finally:
        release.set()
        supervisor.stop()
    node_plugin.mounter.on_state = None
    assert set(node_plugin.mounter.mounted) == {second}
    assert node_plugin.service.store.get(first) is None
    assert node_plugin.mounter.count("mount") == 2  # the check repaired nothing

    gate = threading.Event()
    node_plugin.mounter.gate = gate
    node_plugin.mounter.entered.clear()
    node_plugin.mounter.break_mount(second)
    supervisor = Supervisor(node_plugin.service, interval=60)
    supervisor.start()
    try:
        assert node_plugin.mounter.entered.wait(5)  # the repair is mounting
        err = rpc_error(
            lambda: node_plugin.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=second)
            )
        )
        assert err.code() == grpc.StatusCode.ABORTED
        err = rpc_error(
            lambda: node_plugin.node.NodePublishVolume(node_plugin.publish_request(second))
        )
        assert err.code() == grpc.StatusCode.ABORTED
    finally:
        gate.set()
        supervisor.stop()
    record = node_plugin.service.store.get(second)
    assert record is not None and record.restarts == 1  # the repair went through
    node_plugin.node.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=second)
    )
    assert node_plugin.mounter.mounted == {}


def test_restarted_plugin_readopts_live_mounts_and_forgets_removed_targets(
    node_plugin: NodePlugin,
) -> None:
    live, gone = node_plugin.target(), node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(live))
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(gone, volume_id="vol-2"))
    # the kubelet cleaned up `gone` while the plugin was down
    node_plugin.mounter.mounted.pop(gone)
    os.rmdir(gone)
    # "restart": a new service over the same state dir and the same (still running) mounts
    fresh = node_plugin.restarted()
    assert fresh.heal_once("adopt") == 0
    assert fresh.store.get(gone) is None
    assert fresh.store.get(live) is not None
    fresh.publish(node_plugin.publish_request(live))
    assert node_plugin.mounter.count("mount") == 2  # nothing was remounted


def test_restarted_plugin_restores_mount_that_died_while_it_was_down(
    node_plugin: NodePlugin,
) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    node_plugin.mounter.break_mount(target)
    fresh = node_plugin.restarted()
    assert fresh.heal_once("adopt") == 1
    assert node_plugin.mounter.state(target).value == "healthy"


# ---------------------------------------------------------------- pod-level credentials


def test_pod_credentials_use_token_file_and_drop_driver_keys(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target, context=pod_context()))
    (spec,) = node_plugin.mounter.specs
    token_file = Path(spec.env["AWS_WEB_IDENTITY_TOKEN_FILE"])
    assert token_file.read_text() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert spec.env["AWS_ROLE_ARN"] == ROLE
    assert spec.env["AWS_ROLE_SESSION_NAME"] == "zonemount-team-a-spark-exec-1"
    assert spec.env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_ACCESS_KEY_ID" not in spec.env and "AWS_SECRET_ACCESS_KEY" not in spec.env
    assert not any(TOKEN in arg for arg in spec.args)
    assert TOKEN not in (node_plugin.workdir / "state" / "state.json").read_text()


def test_republish_refreshes_the_token_without_remounting(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target, context=pod_context()))
    fresh = json.dumps(
        {"sts.amazonaws.com": {"token": "new-token-value", "expirationTimestamp": "y"}}
    )
    node_plugin.node.NodePublishVolume(
        node_plugin.publish_request(target, context=pod_context(token_json=fresh))
    )
    assert node_plugin.mounter.count("mount") == 1
    token_file = Path(node_plugin.mounter.specs[0].env["AWS_WEB_IDENTITY_TOKEN_FILE"])
    assert token_file.read_text() == "new-token-value"


@pytest.mark.parametrize(
    "context",
    [
        pod_context(token_json=""),
        pod_context(token_json="not json " + TOKEN),
        pod_context(token_json=json.dumps({"other-audience": {"token": TOKEN}})),
        {k: v for k, v in pod_context().items() if k != "roleArn"},
        pod_context(roleArn="arn:aws:iam::123:user/" + TOKEN),
    ],
    ids=["no-token", "bad-json", "wrong-audience", "no-role", "bad-role"],
)
def test_pod_credentials_validation_never_echoes_the_token(
    node_plugin: NodePlugin, context: dict[str, str]
) -> None:
    err = rpc_error(
        lambda: node_plugin.node.NodePublishVolume(
            node_plugin.publish_request(node_plugin.target(), context=context)
        )
    )
    assert err.code() == INVALID
    assert TOKEN not in (err.details() or "")
    assert "c3VwZXItc2VjcmV0" not in (err.details() or "")


def test_no_secret_reaches_the_logs(
    node_plugin: NodePlugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "node-publish-secret-value-42"
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(
        node_plugin.publish_request(target, context=pod_context(), secrets={"key": secret})
    )
    node_plugin.node.NodePublishVolume(  # republish (idempotent path)
        node_plugin.publish_request(target, context=pod_context(), secrets={"key": secret})
    )
    rpc_error(  # a failing call with the same secrets
        lambda: node_plugin.node.NodePublishVolume(
            node_plugin.publish_request(
                node_plugin.target(),
                context=pod_context(),
                secrets={"key": secret},
                flags=["--cache=/x"],
            )
        )
    )
    node_plugin.mounter.fail_next = "boom"
    rpc_error(
        lambda: node_plugin.node.NodePublishVolume(
            node_plugin.publish_request(
                node_plugin.target(), context=pod_context(), secrets={"key": secret}
            )
        )
    )
    text = caplog.text
    assert "NodePublishVolume request" in text  # the interceptor did log the requests
    assert "***stripped***" in text
    for leaked in (TOKEN, secret, "c3VwZXItc2VjcmV0"):
        assert leaked not in text


# ---------------------------------------------------------------- volume stats and metrics


def test_volume_stats_report_usage_and_a_broken_mount(node_plugin: NodePlugin) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id="vol-1", volume_path=target)
    stats = node_plugin.node.NodeGetVolumeStats(request)
    assert stats.volume_condition.abnormal is False
    units = {u.unit: u for u in stats.usage}  # the kubelet rejects a response without usage
    assert units[csi_pb2.VolumeUsage.BYTES].total > 0
    assert csi_pb2.VolumeUsage.INODES in units
    node_plugin.mounter.break_mount(target)
    stats = node_plugin.node.NodeGetVolumeStats(request)
    assert stats.volume_condition.abnormal is True
    assert len(stats.usage) == 2
    err = rpc_error(
        lambda: node_plugin.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="vol-9", volume_path=target)
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("volume_id", "where"),
    [
        ("some-vol-id", "elsewhere"),  # csi-sanity: unknown volume id
        ("vol-1", "elsewhere"),  # csi-sanity: a path that is not that volume
        ("vol-1", "outside"),
        ("vol-1", "other-target"),
        ("vol-1", "relative"),
    ],
)
def test_volume_stats_of_an_unknown_volume_or_path_is_not_found(
    node_plugin: NodePlugin, volume_id: str, where: str
) -> None:
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    path = {
        "elsewhere": "/tmp/csi-sanity/target/does-not-exist",
        "outside": "/etc",
        "other-target": node_plugin.target(pv="pv-2"),
        "relative": "some/path",
    }[where]
    err = rpc_error(
        lambda: node_plugin.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path)
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()


def test_metrics_endpoint_reports_volumes_latency_and_errors(node_plugin: NodePlugin) -> None:
    port = node_plugin.metrics.serve("127.0.0.1:0")
    try:
        node_plugin.node.NodePublishVolume(node_plugin.publish_request(node_plugin.target()))
        rpc_error(lambda: node_plugin.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest()))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        node_plugin.metrics.shutdown()
    assert "zonemount_csi_published_volumes 1.0" in body
    assert "zonemount_csi_publish_duration_seconds_count 1.0" in body
    assert (
        'zonemount_csi_errors_total{code="INVALID_ARGUMENT",method="NodePublishVolume"} 1.0' in body
    )
    assert "# TYPE zonemount_csi_fuse_restarts_total counter" in body


def test_heal_restarts_when_the_process_is_dead_even_if_the_mount_still_answers(
    node_plugin: NodePlugin,
) -> None:
    """The kernel can answer for a dead FUSE daemon from its caches for a while."""
    target = node_plugin.target()
    node_plugin.node.NodePublishVolume(node_plugin.publish_request(target))
    node_plugin.mounter.live_pids.clear()  # process gone, mount entry still "healthy"
    assert node_plugin.service.heal_once() == 1
    assert node_plugin.mounter.count("mount") == 2


def test_oversized_part_sizes_of_a_volume_are_cut_to_the_nodes_memory_target(
    node_plugin_factory: NodePluginFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """R-FLAGS-MEMORY-TARGET through the node: a PV asking for 256 MiB read parts and 64 MiB
    write parts on a node whose mounts get 64 MiB of memory is mounted (not refused) with
    ``--max-memory-target=64``, which the FUSE client fits them into; the node logs what is
    cut and reports it in the volume's condition (not abnormal). The target is the node's,
    outside the volume's identity, as ``--fuse-debug``."""
    plugin = node_plugin_factory(max_memory_target_mib=64)
    target = plugin.target()
    flags = [f"read-part-size={256 * MiB}", f"write-part-size={64 * MiB}"]
    with caplog.at_level(logging.WARNING, logger="zonemount_csi.node"):
        plugin.node.NodePublishVolume(plugin.publish_request(target, flags=flags))
    (spec,) = plugin.mounter.specs
    assert "--max-memory-target=64" in spec.args
    record = plugin.service.store.get(target)
    assert record is not None and not any("max-memory" in a for a in record.args)
    fuse = parse_args(spec.args[1:])  # what the FUSE client makes of that argv
    assert (fuse.read_chunk_size, fuse.part_size, fuse.uploads_in_flight) == (
        16 * MiB,
        16 * MiB,
        1,
    )
    assert list(fuse.memory_warnings) == [
        r.getMessage().split(": ", 1)[1] for r in caplog.records if "vol-1" in r.getMessage()
    ]
    stats = plugin.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id="vol-1", volume_path=target)
    )
    assert stats.volume_condition.abnormal is False
    message = stats.volume_condition.message
    assert message.startswith("mounted; read part size 268435456 (256 MiB) does not fit")
    assert all(w in message for w in fuse.memory_warnings)


def test_a_volume_whose_part_sizes_are_cut_is_a_metric_while_published(
    node_plugin_factory: NodePluginFactory,
) -> None:
    """R-FLAGS-MEMORY-TARGET where operators look: the kubelet shows no event for a condition
    that is not abnormal, so every volume published on the node whose part sizes its memory
    target cuts is ``zonemount_csi_volume_part_sizes_cut{volume}`` = 1: once however many
    pods mount it and however often the kubelet republishes, after a plugin restart too, and
    gone once its last target is unpublished. A volume that fits is not there."""
    plugin = node_plugin_factory(max_memory_target_mib=128)  # the default part sizes fit
    name = "zonemount_csi_volume_part_sizes_cut"

    def cut(metrics: Metrics = plugin.metrics) -> dict[str, float]:
        return {
            sample.labels["volume"]: sample.value
            for family in metrics.registry.collect()
            if family.name == name
            for sample in family.samples
        }

    flags = [f"read-part-size={256 * MiB}"]
    pods = [plugin.target("pv-1", f"pod-{i}") for i in range(2)]
    for target in (*pods, pods[0]):  # two pods, and a republish
        plugin.node.NodePublishVolume(plugin.publish_request(target, flags=flags))
    fits = plugin.target("pv-2")
    plugin.node.NodePublishVolume(plugin.publish_request(fits, volume_id="vol-2"))
    assert cut() == {"vol-1": 1.0}
    assert f'{name}{{volume="vol-1"}} 1.0' in generate_latest(plugin.metrics.registry).decode()
    service = plugin.service
    restarted = Metrics()
    NodeService(service.config, plugin.mounter, StateStore(service.config.state_dir), restarted)
    assert cut(restarted) == {"vol-1": 1.0}
    for target in pods:
        plugin.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-1", target_path=target)
        )
    assert cut() == {}


def test_fuse_debug_is_an_admin_switch_outside_the_volume_identity(
    node_plugin_factory: NodePluginFactory,
) -> None:
    plugin = node_plugin_factory(fuse_debug=True)
    target = plugin.target()
    plugin.node.NodePublishVolume(plugin.publish_request(target))
    assert plugin.mounter.specs[0].args[-1] == "--debug"  # after the node's memory target
    record = plugin.service.store.get(target)
    assert record is not None and "--debug" not in record.args
