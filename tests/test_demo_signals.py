"""``zonemount demo`` stopped by SIGTERM or Ctrl-C at a step: server stopped, mounts gone.

The demo's S3 server and its CSI node plugin's FUSE servers run in sessions of their own: a
demo that dies without its clean-up (SIGTERM's default action) or skips part of it (a Ctrl-C
before the stop was registered) leaves them running and the volume mounted. Each test runs the
demo (with a small data set) and signals it at one step, then checks the exit status (128 + the
signal), the one line saying so, no traceback, the server's process group gone, no mount under
the demo's work directory and no process naming it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import group_alive

pytestmark = pytest.mark.integration

# Runs ``zonemount demo`` with one step wrapped to signal the process right there. The S3
# server's PID and the work directory are written to files as soon as they exist.
SIGNAL_AT_STEP = """
import os, signal, sys
from zonemount_cli import demo, servers
from zonemount_csi._proto import csi_pb2_grpc

step, signame, pid_file, workdir_file = sys.argv[1:5]
def hit(point):
    if point == step:
        os.kill(os.getpid(), getattr(signal, signame))

real_init = demo.Demo.__init__
def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    self.files, self.rows_per_file = 2, 200  # small: the steps, not the data, are tested
    with open(workdir_file, "w") as f:
        f.write(str(self.workdir))
demo.Demo.__init__ = init

real_spawn = servers._spawn
def spawn(*args, **kwargs):
    proc, log_path = real_spawn(*args, **kwargs)
    with open(pid_file, "w") as f:
        f.write(str(proc.pid))
    hit("spawned")  # the S3 server process exists, not yet ready
    return proc, log_path
servers._spawn = spawn

real_start = demo.start_moto
def start_moto(*args, **kwargs):
    server = real_start(*args, **kwargs)
    hit("started")  # the server is ready; the demo has not yet registered its stop
    return server
demo.start_moto = start_moto

real_stub = csi_pb2_grpc.NodeStub
class NodeStub:
    def __init__(self, channel):
        self._node = real_stub(channel)
    def __getattr__(self, name):
        return getattr(self._node, name)
    def NodePublishVolume(self, *args, **kwargs):
        reply = self._node.NodePublishVolume(*args, **kwargs)
        hit("mounted")  # the volume is mounted; the demo has not seen the reply yet
        return reply
csi_pb2_grpc.NodeStub = NodeStub

import subprocess
class Popen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        super().__init__(args, *rest, **kwargs)
        if "csi-node" in args:
            hit("plugin")  # the node plugin runs; the demo has not registered its stop
subprocess.Popen = Popen
sys.exit(demo.main(["--tasks", "2"]))
"""


def _mounts_under(workdir: str) -> list[str]:
    return [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if workdir in line.split()[1]
    ]


def _processes_naming(workdir: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if workdir.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize(
    ("step", "signame", "title"),
    [
        ("spawned", "SIGTERM", "step 1 (start an S3 server"),
        ("started", "SIGTERM", "step 1 (start an S3 server"),
        ("started", "SIGINT", "step 1 (start an S3 server"),
        ("plugin", "SIGINT", "step 3 (publish a volume"),
        ("mounted", "SIGTERM", "step 3 (publish a volume"),
        ("mounted", "SIGINT", "step 3 (publish a volume"),
    ],
)
def test_signal_at_a_step_stops_everything_the_demo_started(
    tmp_path: Path, step: str, signame: str, title: str
) -> None:
    """The demo had no SIGTERM handler (exit -15, nothing stopped), and a Ctrl-C right after
    start_moto() returned or the node plugin was spawned (before its stop was registered), or
    after NodePublishVolume returned (before the unpublish was registered), left the server,
    the plugin or the mount behind."""
    pid_file, workdir_file = tmp_path / "server.pid", tmp_path / "workdir"
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_STEP, step, signame, str(pid_file), str(workdir_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    pid, workdir = int(pid_file.read_text()), workdir_file.read_text()
    try:
        deadline = time.monotonic() + 5  # the stopped server was waited for before the exit
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        output = result.stdout + result.stderr
        assert not group_alive(pid), f"S3 server {pid} left running: {output[-3000:]}"
        assert _mounts_under(workdir) == [], output[-3000:]
        assert _processes_naming(workdir) == [], output[-3000:]
        assert result.returncode == 128 + int(signal.Signals[signame]), output[-3000:]
        assert f"zonemount demo: {signame} received during {title}" in result.stderr
        assert "interrupted" in result.stderr
        assert "Traceback" not in output
        assert not Path(workdir).exists(), "the work directory is removed"
    finally:  # the old code left them behind: do not leave them for the next test
        for target in _mounts_under(workdir):
            subprocess.run(["fusermount3", "-uz", target], check=False)
        for leftover in _processes_naming(workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        if group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
