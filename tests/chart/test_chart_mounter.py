"""The mounter DaemonSet: long-lived (OnDelete), unprivileged, wired to the node plugin.

Rendered with the real helm binary; the last test starts the rendered mounter and node plugin
commands as real processes and checks that they find each other (Probe through the socket).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chart.chartlib import (
    COMBOS,
    Render,
    by_kind,
    container,
    local_env,
    node_script,
    one,
    pod_spec,
)


def mounter_ds(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "DaemonSet", "-mounter")


def test_mounter_daemonset_is_long_lived_and_unprivileged(render: Render) -> None:
    objects = render()
    daemonset = mounter_ds(objects)
    assert daemonset["spec"]["updateStrategy"] == {"type": "OnDelete"}
    spec = pod_spec(daemonset)
    assert not spec.get("hostPID") and not spec.get("hostNetwork")
    mounter = container(daemonset, "mounter")
    sc = mounter["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert all("mountPropagation" not in m for m in mounter["volumeMounts"])
    host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
    assert host_paths == ["/var/lib/zonemount"], "no /dev/fuse, no kubelet directory"
    command = mounter["command"]
    assert command[:2] == ["zonemount", "csi-mounter"]
    endpoint = command[command.index("--endpoint") + 1]
    assert endpoint == "unix:///var/lib/zonemount/mounter.sock"
    assert command[command.index("--max-memory-per-mount") + 1] == "2048"
    # the node plugin talks to it over the same host directory, with the same identity
    node_ds = one(objects, "DaemonSet", "-node")
    script = container(node_ds, "node")["args"][0]
    assert f'--mounter-endpoint "{endpoint}"' in script
    assert pod_spec(node_ds)["serviceAccountName"] == spec["serviceAccountName"]
    memory = next(v for v in spec["volumes"] if v["name"] == "memory-cache")
    assert memory["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    memory_path = next(m for m in mounter["volumeMounts"] if m["name"] == "memory-cache")
    assert f'--memory-cache-dir "{memory_path["mountPath"]}"' in script
    assert '--cache-dir "/var/lib/zonemount/cache"' in script
    # each FUSE server's memory target, a quarter of its bound (R-FLAGS-MEMORY-TARGET)
    assert "--max-memory-target 512" in script


@pytest.mark.parametrize(("bound", "target"), [(1024, "256"), (2, "1"), (0, None)])
def test_the_memory_target_of_mounts_is_a_quarter_of_their_bound(
    render: Render, bound: int, target: str | None
) -> None:
    """The node plugin gives every FUSE server ``--max-memory-target`` = a quarter of
    ``maxMemoryPerMountMiB`` (which a volume's part sizes are cut to fit); no bound, the FUSE
    client's default."""
    objects = render({"node": {"mounter": {"maxMemoryPerMountMiB": bound}}})
    script = container(one(objects, "DaemonSet", "-node"), "node")["args"][0]
    operator = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    # the operator says in an S3MountClass's condition what that target makes mounts cut
    assert env.get("ZONEMOUNT_MOUNT_MEMORY_TARGET_MIB") == target
    if target is None:
        assert "--max-memory-target" not in script
    else:
        assert re.search(rf"--max-memory-target {target}(\s|$)", script), script


@pytest.mark.parametrize("combo", [c for c in COMBOS if c != "no-mounter"])
def test_routine_upgrades_of_the_node_plugin_leave_the_mounter_untouched(
    render: Render, combo: str
) -> None:
    """What `helm upgrade` changes on the node plugin never changes the mounter's pod."""
    base = COMBOS[combo] or {}
    before = mounter_ds(render(base))
    node = dict(base.get("node", {}))
    changed = {
        **base,
        "node": {
            **node,
            "extraArgs": [*node.get("extraArgs", []), "--supervise-interval=3"],
            "resources": {"limits": {"memory": "1Gi"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "registrar": {"image": {"tag": "v2.14.0"}},
            "livenessProbe": {"image": {"tag": "v2.16.0"}},
        },
    }
    after = mounter_ds(render(changed))
    assert after == before
    assert after["spec"]["updateStrategy"]["type"] == "OnDelete"


def test_without_the_mounter_the_node_plugin_hosts_the_fuse_servers(render: Render) -> None:
    objects = render({"node": {"mounter": {"enabled": False}}})
    assert [d["metadata"]["name"] for d in by_kind(objects, "DaemonSet")] == ["zm-zonemount-node"]
    script = container(one(objects, "DaemonSet", "-node"), "node")["args"][0]
    assert "--mounter-endpoint" not in script and "--cache-dir" not in script


def test_rendered_mounter_and_node_plugin_find_each_other(render: Render, tmp_path: Path) -> None:
    import grpc
    from zonemount_csi._proto import csi_pb2, csi_pb2_grpc

    if not os.path.exists("/dev/fuse"):
        pytest.skip("the node plugin's Probe needs /dev/fuse")
    kubelet, state = tmp_path / "kubelet", tmp_path / "state"
    (kubelet / "pods").mkdir(parents=True)
    objects = render(
        {"node": {"kubeletDir": str(kubelet), "stateDir": str(state), "zone": "us-west-2b"}}
    )
    mounter_cmd = [
        a.replace(":9812", "127.0.0.1:0")
        for a in container(mounter_ds(objects), "mounter")["command"]
    ]
    node = container(one(objects, "DaemonSet", "-node"), "node")
    sock = tmp_path / "csi.sock"
    env = local_env(tmp_path)
    node_env = {**env, **{e["name"]: e["value"] for e in node["env"] if "value" in e}}
    mounter = subprocess.Popen(mounter_cmd, env=env, stderr=subprocess.PIPE, text=True)
    plugin = subprocess.Popen(
        [*node["command"], node_script(node, sock)], env=node_env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (sock.exists() and (state / "mounter.sock").exists()):
            if mounter.poll() is not None or plugin.poll() is not None:
                raise AssertionError(f"a rendered command exited: {plugin.stderr!r}")
            assert time.monotonic() < deadline, "sockets did not appear"
            time.sleep(0.1)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=20)
    finally:
        for proc in (plugin, mounter):
            proc.send_signal(signal.SIGTERM)
        # communicate() reads stderr to the end and closes the pipe (no unclosed-file warning).
        errors = [proc.communicate(timeout=60)[1] for proc in (plugin, mounter)]
        codes = [proc.returncode for proc in (plugin, mounter)]
    assert codes == [0, 0], errors
