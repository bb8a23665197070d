"""Fixtures of the CSI driver tests: a kubelet-like directory, and plugins served on real
unix-socket gRPC servers (in-process, with the fake or the real mounter); and the helpers the
tests of plugin *processes* share (their environment, a kubelet-like retried publish, waiting,
scraping their metrics).

Socket paths live under a short /tmp directory: unix socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from zonemount_cli.servers import LocalS3
from zonemount_csi._proto import csi_pb2, csi_pb2_grpc
from zonemount_csi.controller import ControllerConfig, ControllerService, ControllerServicer
from zonemount_csi.identity import IdentityServicer
from zonemount_csi.metrics import Metrics
from zonemount_csi.node import NodeConfig, NodeService, NodeServicer
from zonemount_csi.server import build_server
from zonemount_csi.state import StateStore
from zonemount_fs.store.s3 import DISABLE_EXPRESS_ENV

from tests.csi.fakes import FakeMounter


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="zmcsi-", dir="/tmp"))
    (path / "kubelet" / "pods").mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_target(kubelet: Path, pv: str = "pv-1", pod_uid: str | None = None) -> str:
    """A kubelet-style target path whose parent exists (the kubelet creates it)."""
    uid = pod_uid or str(uuid.uuid4())
    parent = kubelet / "pods" / uid / "volumes" / "kubernetes.io~csi" / pv
    parent.mkdir(parents=True, exist_ok=True)
    return str(parent / "mount")


def mount_capability(
    flags: list[str] | None = None,
    mode: int = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER,
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=flags or []),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),
    )


def node_env(moto: LocalS3) -> dict[str, str]:
    """The environment of a plugin process against ``moto``: its endpoint and keys, no AWS
    profile, and S3 Express session auth off (moto has none; it is tested elsewhere)."""
    env = {**os.environ, **moto.env(), DISABLE_EXPRESS_ENV: "1"}
    env.pop("AWS_PROFILE", None)
    return env


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def publish_request(
    target: str, bucket: str, endpoint: str, **context: str
) -> csi_pb2.NodePublishVolumeRequest:
    """Publish ``data/`` of ``bucket`` at ``endpoint`` read-write (volume id ``vol-<bucket>``)."""
    return csi_pb2.NodePublishVolumeRequest(
        volume_id=f"vol-{bucket}",
        target_path=target,
        volume_capability=mount_capability(["allow-delete", "allow-overwrite", "metadata-ttl=0"]),
        volume_context={
            "bucketName": bucket,
            "prefix": "data/",
            "endpointUrl": endpoint,
            **context,
        },
    )


def until_not_aborted(call: Callable[[], object], attempts: int) -> bool:
    """Call as the kubelet does: again (after 0.5 s) while the plugin answers ABORTED, another
    operation on the volume being in flight. False: every attempt was ABORTED."""
    for _ in range(attempts):
        try:
            call()
            return True
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ABORTED:
                raise
            time.sleep(0.5)
    return False


def scrape(port: int) -> str:
    """The Prometheus text a plugin or mounter serves on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


@dataclass
class NodePlugin:
    workdir: Path
    kubelet: Path
    service: NodeService
    mounter: FakeMounter
    metrics: Metrics
    node: csi_pb2_grpc.NodeStub
    identity: csi_pb2_grpc.IdentityStub
    server: grpc.Server
    channel: grpc.Channel

    def target(self, pv: str = "pv-1", pod_uid: str | None = None) -> str:
        return make_target(self.kubelet, pv, pod_uid)

    def restarted(self) -> NodeService:
        """A new service over the same state directory and the same (still running) mounts,
        as the plugin is after a restart."""
        return NodeService(
            self.service.config, self.mounter, StateStore(self.workdir / "state"), self.metrics
        )

    def publish_request(
        self,
        target: str,
        volume_id: str = "vol-1",
        context: dict[str, str] | None = None,
        flags: list[str] | None = None,
        **kwargs: object,
    ) -> csi_pb2.NodePublishVolumeRequest:
        ctx = {"bucketName": "bucket-a", "prefix": "data/"} if context is None else context
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=target,
            volume_capability=kwargs.pop("capability", None) or mount_capability(flags),  # type: ignore[arg-type]
            volume_context=ctx,
            **kwargs,  # type: ignore[arg-type]
        )


NodePluginFactory = Callable[..., NodePlugin]


@pytest.fixture
def node_plugin_factory(workdir: Path) -> Iterator[NodePluginFactory]:
    started: list[NodePlugin] = []

    def start(
        mounter: FakeMounter | None = None,
        zone: str = "us-east-1a",
        zone_id: str = "use1-az4",
        allowed: tuple[str, ...] = ("https://s3.allowed.example",),
        base_env: dict[str, str] | None = None,
        fuse_debug: bool = False,
        max_memory_target_mib: int = 512,
    ) -> NodePlugin:
        mounter = mounter or FakeMounter()
        kubelet = workdir / "kubelet"
        state_dir = workdir / "state"
        metrics = Metrics()
        config = NodeConfig(
            node_id="node-a",
            kubelet_dir=kubelet,
            state_dir=state_dir,
            zone=zone,
            zone_id=zone_id,
            allowed_endpoint_urls=allowed,
            fuse_debug=fuse_debug,
            max_memory_target_mib=max_memory_target_mib,
            base_env=base_env
            if base_env is not None
            else {
                "PATH": "/usr/bin",
                "AWS_ACCESS_KEY_ID": "AKIADRIVER",
                "AWS_SECRET_ACCESS_KEY": "driver-secret",
            },
        )
        service = NodeService(config, mounter, StateStore(state_dir), metrics)

        def register(server: grpc.Server) -> None:
            csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(mounter.check), server)
            csi_pb2_grpc.add_NodeServicer_to_server(NodeServicer(service), server)

        sock = workdir / f"csi-{len(started)}.sock"
        server, _ = build_server(f"unix://{sock}", register, metrics)
        channel = grpc.insecure_channel(f"unix://{sock}")
        plugin = NodePlugin(
            workdir,
            kubelet,
            service,
            mounter,
            metrics,
            csi_pb2_grpc.NodeStub(channel),
            csi_pb2_grpc.IdentityStub(channel),
            server,
            channel,
        )
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        plugin.channel.close()
        plugin.server.stop(None)


@pytest.fixture
def node_plugin(node_plugin_factory: NodePluginFactory) -> NodePlugin:
    return node_plugin_factory()


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Run ``call`` and return the gRPC error it must raise."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# ---------------------------------------------------------------- the controller


@pytest.fixture
def controller_factory(
    workdir: Path, s3_env: dict[str, str], moto_server: LocalS3
) -> Iterator[Callable[[], Any]]:
    servers: list[tuple[grpc.Server, grpc.Channel]] = []

    def start() -> Any:
        service = ControllerService(ControllerConfig((moto_server.endpoint,)))

        def register(server: grpc.Server) -> None:
            csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(), server)
            csi_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(service), server)

        sock = workdir / f"ctrl-{len(servers)}.sock"
        server, _ = build_server(f"unix://{sock}", register, Metrics())
        channel = grpc.insecure_channel(f"unix://{sock}")
        servers.append((server, channel))
        return csi_pb2_grpc.ControllerStub(channel)

    yield start
    for server, channel in servers:
        channel.close()
        server.stop(None)


@pytest.fixture
def controller(controller_factory: Callable[[], Any]) -> Any:
    return controller_factory()


def create_request(
    bucket: str, name: str = "pvc-1234", **params: str
) -> csi_pb2.CreateVolumeRequest:
    parameters = {
        "bucketName": bucket,
        "basePrefix": "claims/",
        "csi.storage.k8s.io/pvc/name": "data",
        "csi.storage.k8s.io/pvc/namespace": "team-a",
        **params,
    }
    return csi_pb2.CreateVolumeRequest(
        name=name,
        volume_capabilities=[
            mount_capability(mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER)
        ],
        parameters={k: v for k, v in parameters.items() if v != ""},
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
    )


def keys(moto: LocalS3, bucket: str, prefix: str = "") -> list[str]:
    client: Any = moto.client()
    return sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    )
