"""Measure the node plugin's publish / republish / repair / unpublish latency on real mounts.

Run: ``make csi-measure`` (or ``.venv/bin/python -m tests.csi.measure_node [N]``). Needs root,
/dev/fuse and the FUSE client; starts its own moto server; cleans up every mount it made.
Prints medians (min-max) over N volumes (default 5). Not a test: nothing is asserted on times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from zonemount_cli.servers import start_moto
from zonemount_csi._proto import csi_pb2
from zonemount_csi.metrics import Metrics
from zonemount_csi.mounter import ProcessMounter
from zonemount_csi.node import NodeConfig, NodeService
from zonemount_csi.state import StateStore

from tests.csi.conftest import node_env


def _fmt(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f})"


def main(count: int = 5) -> int:
    root = Path(tempfile.mkdtemp(prefix="zmm-", dir="/tmp"))
    (root / "kubelet" / "pods").mkdir(parents=True)
    results: dict[str, list[float]] = {
        "publish": [],
        "republish": [],
        "repair": [],
        "unpublish": [],
    }
    with start_moto() as moto:
        env = node_env(moto)
        s3: object = moto.client()
        s3.create_bucket(Bucket="measure")  # type: ignore[attr-defined]
        s3.put_object(Bucket="measure", Key="d/x", Body=b"x")  # type: ignore[attr-defined]
        service = NodeService(
            NodeConfig("node", root / "kubelet", root / "state", base_env=env),
            ProcessMounter(),
            StateStore(root / "state"),
            Metrics(),
        )
        capability = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(),
            access_mode=csi_pb2.VolumeCapability.AccessMode(mode=5),
        )
        try:
            for _ in range(count):
                target = (
                    root / "kubelet/pods" / str(uuid.uuid4()) / "volumes/kubernetes.io~csi/pv/mount"
                )
                target.parent.mkdir(parents=True)
                request = csi_pb2.NodePublishVolumeRequest(
                    volume_id="v",
                    target_path=str(target),
                    volume_capability=capability,
                    volume_context={"bucketName": "measure", "prefix": "d/"},
                )
                started = time.monotonic()
                service.publish(request)
                results["publish"].append(time.monotonic() - started)
                started = time.monotonic()
                service.publish(request)
                results["republish"].append(time.monotonic() - started)
                record = service.store.get(str(target))
                assert record is not None
                os.kill(record.pid, signal.SIGKILL)
                time.sleep(0.2)
                started = time.monotonic()
                assert service.heal_once() == 1, "the dead mount was not detected"
                results["repair"].append(time.monotonic() - started)
                assert (target / "x").read_bytes() == b"x"
                started = time.monotonic()
                service.unpublish(
                    csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path=str(target))
                )
                results["unpublish"].append(time.monotonic() - started)
        finally:
            for record in service.store.all():
                subprocess.run(["fusermount3", "-uz", record.target_path], check=False)
                if record.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(record.pid, signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)
    for name, samples in results.items():
        print(f"{name:>10}: {_fmt(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
