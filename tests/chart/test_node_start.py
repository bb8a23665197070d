"""The node plugin pod's start-up, run for real: the zone init script and the shell wrapper.

- ``zonemount node-zone`` (the init container's command, as the chart renders it) runs as a
  subprocess against a loopback HTTP server that answers like the Kubernetes API
  (GET /api/v1/nodes/NAME): labels present, missing, refused.
- The container's `sh -c` wrapper is taken from the rendered DaemonSet and executed by /bin/sh
  with a stub `zonemount` that prints its argv, so quoting and the optional --zone/--zone-id
  flags are checked as the shell really splits them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.chart.chartlib import (
    Render,
    assert_flags_accepted,
    container,
    local_env,
    node_script,
    one,
)

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")


class FakeApi:
    """Loopback HTTP server: node name -> (status, labels)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[int, dict[str, str]]] = {}
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.paths.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                status, labels = api.nodes.get(name, (404, {}))
                body = json.dumps(
                    {"kind": "Node", "metadata": {"name": name, "labels": labels}}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    yield server
    server.close()


def run_script(
    api: FakeApi, tmp_path: Path, node: str, *flags: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "NODE_NAME": node,
        "KUBE_API_URL": api.url,
        "ZONE_FILE": str(tmp_path / "zone"),
        "ZONE_ID_FILE": str(tmp_path / "zone-id"),
        **extra,
    }
    return subprocess.run(
        [ZONEMOUNT, "node-zone", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_zone_and_zone_id_are_written(api: FakeApi, tmp_path: Path) -> None:
    api.nodes["ip-10-0-1-5.ec2.internal"] = (
        200,
        {"topology.kubernetes.io/zone": "us-west-2b", "topology.k8s.aws/zone-id": "usw2-az1"},
    )
    result = run_script(api, tmp_path, "ip-10-0-1-5.ec2.internal")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zone").read_text() == "us-west-2b"
    assert (tmp_path / "zone-id").read_text() == "usw2-az1"
    assert api.paths == ["/api/v1/nodes/ip-10-0-1-5.ec2.internal"]
    assert "zone=us-west-2b zone-id=usw2-az1" in result.stdout


def test_missing_zone_label_fails_with_the_fix_when_required(api: FakeApi, tmp_path: Path) -> None:
    api.nodes["kind-worker"] = (200, {"kubernetes.io/os": "linux"})
    result = run_script(api, tmp_path, "kind-worker", REQUIRE_ZONE="1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "has no label topology.kubernetes.io/zone" in lines[0]
    assert "kubectl label node kind-worker" in lines[0]
    assert not (tmp_path / "zone").exists()


def test_missing_zone_label_is_empty_when_optional(api: FakeApi, tmp_path: Path) -> None:
    api.nodes["kind-control-plane"] = (200, {})
    result = run_script(api, tmp_path, "kind-control-plane", REQUIRE_ZONE="0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zone").read_text() == ""
    assert (tmp_path / "zone-id").read_text() == ""


def test_flags_override_the_environment(api: FakeApi, tmp_path: Path) -> None:
    api.nodes["n2"] = (200, {"example.com/az": "rack-9"})
    out = tmp_path / "flags"
    result = run_script(
        api,
        tmp_path,
        "ignored-by-flag",
        *("--node-name", "n2", "--zone-label", "example.com/az", "--optional-zone"),
        *("--zone-file", str(out / "zone"), "--zone-id-file", str(out / "zone-id")),
    )
    assert result.returncode == 0, result.stderr
    assert (out / "zone").read_text() == "rack-9"
    assert (out / "zone-id").read_text() == ""
    assert api.paths == ["/api/v1/nodes/n2"]


def test_the_rendered_init_container_runs(render: Render, api: FakeApi, tmp_path: Path) -> None:
    """The chart's init container, command and environment as rendered, against the fake API."""
    init = next(
        c
        for c in one(render(None), "DaemonSet", "-node")["spec"]["template"]["spec"][
            "initContainers"
        ]
        if c["name"] == "node-zone"
    )
    assert init["command"][0] == "zonemount"
    env = {"PATH": os.environ["PATH"], "KUBE_API_URL": api.url, "NODE_NAME": "ip-10-0-9-9"}
    for item in init["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("/run/zonemount/", f"{tmp_path}/run/")
    api.nodes["ip-10-0-9-9"] = (200, {"topology.kubernetes.io/zone": "eu-west-1c"})
    result = subprocess.run(
        [ZONEMOUNT, *init["command"][1:], *init.get("args", [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "zone").read_text() == "eu-west-1c"
    assert (tmp_path / "run" / "zone-id").read_text() == ""


def test_custom_labels(api: FakeApi, tmp_path: Path) -> None:
    api.nodes["n1"] = (200, {"example.com/az": "rack-7"})
    result = run_script(api, tmp_path, "n1", ZONE_LABEL="example.com/az")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zone").read_text() == "rack-7"


@pytest.mark.parametrize(
    ("status", "needle"), [(403, "needs 'get' on nodes"), (404, "does not exist")]
)
def test_api_refusals_are_one_line(api: FakeApi, tmp_path: Path, status: int, needle: str) -> None:
    if status != 404:
        api.nodes["n1"] = (status, {})
    result = run_script(api, tmp_path, "n1")
    assert result.returncode == 1
    assert needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_api_is_reported_after_retries(tmp_path: Path) -> None:
    class Closed:
        url = "http://127.0.0.1:9"  # discard port: nothing listens

    result = run_script(Closed(), tmp_path, "n1")  # type: ignore[arg-type]
    assert result.returncode == 1
    assert "cannot reach the Kubernetes API at http://127.0.0.1:9" in result.stderr


def test_no_node_name_is_a_one_line_error(api: FakeApi, tmp_path: Path) -> None:
    result = run_script(api, tmp_path, "")
    assert result.returncode == 1
    assert "NODE_NAME is not set" in result.stderr
    assert api.paths == []


# --- the container's shell wrapper -------------------------------------------------------------


def wrapper_argv(
    render: Render, values: dict[str, Any] | None, tmp_path: Path, files: dict[str, str]
) -> list[str]:
    """Run the rendered node container command with a stub zonemount; return its argv."""
    node = container(one(render(values), "DaemonSet", "-node"), "node")
    assert node["command"] == ["/bin/sh", "-c"]
    script = node["args"][0].replace("/run/zonemount/", f"{tmp_path}/run/")
    (tmp_path / "run").mkdir(exist_ok=True)
    for name, content in files.items():
        (tmp_path / "run" / name).write_text(content)
    stub = tmp_path / "bin" / "zonemount"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "NODE_NAME": "ip-10-0-1-5.ec2.internal"}
    for item in node["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.splitlines()


def test_wrapper_passes_zone_from_the_init_files(render: Render, tmp_path: Path) -> None:
    argv = wrapper_argv(render, None, tmp_path, {"zone": "us-west-2b", "zone-id": "usw2-az1"})
    assert argv[:5] == [
        "csi-node",
        "--endpoint",
        "unix:///csi/csi.sock",
        "--node-id",
        "ip-10-0-1-5.ec2.internal",
    ]
    assert argv[argv.index("--zone") + 1] == "us-west-2b"
    assert argv[argv.index("--zone-id") + 1] == "usw2-az1"
    assert argv[argv.index("--kubelet-dir") + 1] == "/var/lib/kubelet"
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/zonemount"
    assert argv[argv.index("--metrics-address") + 1] == ":9810"


def test_wrapper_omits_zone_flags_when_unknown(render: Render, tmp_path: Path) -> None:
    argv = wrapper_argv(render, None, tmp_path, {"zone": "", "zone-id": ""})
    assert "--zone" not in argv and "--zone-id" not in argv


def test_wrapper_fixed_zone_and_quoted_extra_args(render: Render, tmp_path: Path) -> None:
    values = {
        "node": {
            "zone": "us-west-2a",
            "zoneId": "usw2-az2",
            "kubeletDir": "/var/lib/k0s/kubelet",
            "extraArgs": ["--mount-timeout=45", "--log-level", "DEBUG", "--x=a b $HOME"],
        },
        "aws": {"allowedEndpointUrls": ["http://10.96.200.200:5000"]},
    }
    argv = wrapper_argv(render, values, tmp_path, {})
    assert argv[argv.index("--zone") + 1] == "us-west-2a"
    assert argv[argv.index("--zone-id") + 1] == "usw2-az2"
    assert argv[argv.index("--kubelet-dir") + 1] == "/var/lib/k0s/kubelet"
    assert argv[argv.index("--allowed-endpoint-url") + 1] == "http://10.96.200.200:5000"
    assert argv[-4:] == ["--mount-timeout=45", "--log-level", "DEBUG", "--x=a b $HOME"]


def test_wrapper_flags_are_accepted_by_the_real_csi_node_parser(
    render: Render, tmp_path: Path
) -> None:
    """The flags the chart passes exist in `zonemount csi-node` (its argparse rejects others)."""
    argv = wrapper_argv(render, None, tmp_path, {"zone": "us-west-2b", "zone-id": "usw2-az1"})
    assert argv[0] == "csi-node"
    assert_flags_accepted(argv)


@pytest.mark.parametrize(
    ("suffix", "name", "module"),
    [
        ("-controller", "controller", "zonemount_csi.cli"),
        ("-operator", "operator", "zonemount_operator.cli"),
    ],
)
def test_deployment_flags_are_accepted_by_the_real_parsers(
    render: Render, suffix: str, name: str, module: str
) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    values = {"aws": {"allowedEndpointUrls": ["http://10.96.200.200:5000"]}}
    assert_flags_accepted(container(one(render(values), "Deployment", suffix), name)["args"])


# --- the real plugins started exactly as the chart starts them ---------------------------------


def _wait_for_socket(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"plugin exited {proc.returncode}: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no socket at {path} after {timeout}s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def test_rendered_node_plugin_starts_and_reports_the_nodes_zone(
    render: Render, tmp_path: Path
) -> None:
    """init file -> sh wrapper -> real `zonemount csi-node` -> NodeGetInfo topology over gRPC."""
    import grpc
    from zonemount_csi._proto import csi_pb2, csi_pb2_grpc

    kubelet, state, run = tmp_path / "kubelet", tmp_path / "state", tmp_path / "run"
    for d in (kubelet / "pods", state, run):
        d.mkdir(parents=True)
    (run / "zone").write_text("us-west-2b")
    (run / "zone-id").write_text("usw2-az1")
    sock = tmp_path / "csi.sock"
    node = container(
        one(
            render({"node": {"kubeletDir": str(kubelet), "stateDir": str(state)}}),
            "DaemonSet",
            "-node",
        ),
        "node",
    )
    proc = subprocess.Popen(
        [*node["command"], node_script(node, sock, run)],
        env=local_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_socket(sock, proc)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            info = csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
                csi_pb2.GetPluginInfoRequest(), timeout=10
            )
            assert info.name == "s3.csi.zonemount.io"
            node_info = csi_pb2_grpc.NodeStub(channel).NodeGetInfo(
                csi_pb2.NodeGetInfoRequest(), timeout=10
            )
        assert node_info.node_id == "ip-10-0-1-5.ec2.internal"
        segments = dict(node_info.accessible_topology.segments)
        assert segments["topology.kubernetes.io/zone"] == "us-west-2b"
        assert "usw2-az1" in segments.values()
    finally:
        code, err = _stop(proc)
    assert code == 0, err


def test_rendered_controller_starts(render: Render, tmp_path: Path) -> None:
    import grpc
    from zonemount_csi._proto import csi_pb2, csi_pb2_grpc

    sock = tmp_path / "csi.sock"
    controller = container(one(render(), "Deployment", "-controller"), "controller")
    args = [
        a.replace("unix:///csi/csi.sock", f"unix://{sock}").replace(":9811", "127.0.0.1:0")
        for a in controller["args"]
    ]
    assert "127.0.0.1:0" in args, "the chart turns the controller's metrics on"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonemount_cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_socket(sock, proc)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            caps = csi_pb2_grpc.ControllerStub(channel).ControllerGetCapabilities(
                csi_pb2.ControllerGetCapabilitiesRequest(), timeout=10
            )
        kinds = {c.rpc.type for c in caps.capabilities}
        assert csi_pb2.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME in kinds
    finally:
        code, err = _stop(proc)
    assert code == 0, err
