"""``zonemount csi-node`` / ``csi-controller`` as real processes: serve, report, shut down
gracefully on SIGTERM (exit 0, socket removed), and fail on bad input with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from zonemount_cli.servers import free_port
from zonemount_csi._proto import csi_pb2, csi_pb2_grpc

pytestmark = pytest.mark.integration
ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")


def _wait_socket(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "socket never appeared"
        time.sleep(0.05)


def test_node_plugin_serves_reports_and_stops_on_sigterm(workdir: Path) -> None:
    sock = workdir / "node.sock"
    port = free_port()
    process = subprocess.Popen(
        [
            ZONEMOUNT,
            "csi-node",
            "--endpoint",
            f"unix://{sock}",
            "--node-id",
            "ip-10-0-0-1",
            "--zone",
            "us-east-1a",
            "--zone-id",
            "use1-az4",
            "--kubelet-dir",
            str(workdir / "kubelet"),
            "--state-dir",
            str(workdir / "state"),
            "--metrics-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_socket(sock, process)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            identity = csi_pb2_grpc.IdentityStub(channel)
            assert (
                identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10).name
                == "s3.csi.zonemount.io"
            )
            info = csi_pb2_grpc.NodeStub(channel).NodeGetInfo(
                csi_pb2.NodeGetInfoRequest(), timeout=10
            )
            assert info.node_id == "ip-10-0-0-1"
            assert info.accessible_topology.segments["topology.zonemount.io/zone-id"] == "use1-az4"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"zonemount_csi_published_volumes 0.0" in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        # communicate() drains and closes both pipes (no unclosed-file ResourceWarning).
        _, stderr = process.communicate(timeout=30)
    assert not sock.exists()
    assert b"SIGTERM received" in stderr


def test_controller_plugin_serves_and_stops_on_sigterm(workdir: Path) -> None:
    sock = workdir / "ctrl.sock"
    process = subprocess.Popen(
        [ZONEMOUNT, "csi-controller", "--endpoint", f"unix://{sock}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_socket(sock, process)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            caps = csi_pb2_grpc.ControllerStub(channel).ControllerGetCapabilities(
                csi_pb2.ControllerGetCapabilitiesRequest(), timeout=10
            )
            assert len(caps.capabilities) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


# Runs a plugin whose gRPC server is SIGTERMed the moment it is built (its socket exists):
# the kubelet may stop a pod it has just started.
SIGTERM_ONCE_SERVING = """
import os, signal, sys
from zonemount_csi import cli

real = cli.build_server
def hooked(*args, **kwargs):
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return result
cli.build_server = hooked
sys.exit(getattr(cli, sys.argv[1])(sys.argv[2:]))
"""


@pytest.mark.parametrize("plugin", ["node_main", "controller_main"])
def test_sigterm_as_serving_starts_is_a_graceful_stop(workdir: Path, plugin: str) -> None:
    """The handler was installed only once the server was serving: a SIGTERM in between took
    the default action (exit -15, socket left behind)."""
    sock = workdir / "csi.sock"
    args = [plugin, "--endpoint", f"unix://{sock}"]
    if plugin == "node_main":
        args += [
            "--node-id",
            "n",
            "--zone",
            "us-east-1a",
            "--kubelet-dir",
            str(workdir / "kubelet"),
        ]
        args += ["--state-dir", str(workdir / "state")]
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_ONCE_SERVING, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "SIGTERM received" in result.stderr
    assert not sock.exists()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["csi-node", "--endpoint", "tcp://0.0.0.0:1", "--node-id", "n"], 1, "not a unix socket"),
        (
            [
                "csi-node",
                "--endpoint",
                "unix:///tmp/x.sock",
                "--node-id",
                "n",
                "--kubelet-dir",
                "/nonexistent-kubelet",
            ],
            1,
            "mount the host's kubelet directory into the container at that path",
        ),
        (["csi-node", "--endpoint", "unix:///tmp/x.sock"], 2, "--node-id"),
        (
            # VOLUME_ACCESSIBILITY_CONSTRAINTS is advertised: no zone, no start
            [
                "csi-node",
                "--endpoint",
                "unix:///tmp/x.sock",
                "--node-id",
                "n",
                "--kubelet-dir",
                "/",
            ],
            1,
            "--zone is required",
        ),
        (
            [
                "csi-controller",
                "--endpoint",
                "unix:///tmp/zm-ctrl.sock",
                "--metrics-address",
                "nonsense",
            ],
            1,
            "HOST:PORT",
        ),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(args: list[str], code: int, needle: str) -> None:
    result = subprocess.run([ZONEMOUNT, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
