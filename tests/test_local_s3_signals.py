"""``zonemount local-s3`` stopped by SIGTERM or Ctrl-C while it starts: exit 0, nothing left.

Its S3 server runs in a session of its own (so a Ctrl-C in the terminal reaches only
``local-s3``, which stops it): a local-s3 that dies without stopping it leaves it running,
orphaned, holding its port. Each test SIGTERMs (or SIGINTs) local-s3 at one start-up step and
then checks the exit status and that no process of the server's process group is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import group_alive

pytestmark = pytest.mark.integration

# Runs ``zonemount local-s3`` with one start-up step wrapped to signal the process right there;
# the server's PID is written to a file as soon as it is spawned (the test checks it is gone).
SIGNAL_AT_STARTUP = """
import os, signal, sys
from zonemount_cli import local_s3, servers

step, signame, pid_file = sys.argv[1:4]
def hit(point):
    if point == step:
        os.kill(os.getpid(), getattr(signal, signame))

real_spawn = servers._spawn
def spawn(*args, **kwargs):
    proc, log_path = real_spawn(*args, **kwargs)
    with open(pid_file, "w") as f:
        f.write(str(proc.pid))
    hit("spawned")  # the server process exists, not yet a LocalS3 nor ready
    return proc, log_path
servers._spawn = spawn

real_wait = servers.LocalS3._wait_ready
def wait_ready(*args, **kwargs):
    hit("waiting")  # while waiting for the server to answer
    return real_wait(*args, **kwargs)
servers.LocalS3._wait_ready = wait_ready

real_start = local_s3._start
def start(*args, **kwargs):
    server = real_start(*args, **kwargs)
    hit("started")  # ready, buckets not created yet
    return server
local_s3._start = start
sys.exit(local_s3.main(sys.argv[4:]))
"""


@pytest.mark.parametrize(
    ("step", "signame"),
    [
        ("spawned", "SIGTERM"),
        ("waiting", "SIGTERM"),
        ("started", "SIGTERM"),
        ("spawned", "SIGINT"),
    ],
)
def test_signal_during_start_up_stops_the_server_and_exits_0(
    tmp_path: Path, step: str, signame: str
) -> None:
    """The handlers were installed only once the server was ready and the buckets made: a
    SIGTERM before that took the default action (exit -15) and a Ctrl-C a traceback, and a
    server already spawned was left running."""
    pid_file = tmp_path / "server.pid"
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_STARTUP, step, signame, str(pid_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    pid = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 5  # a stopped server was waited for before exit 0
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_alive(pid), f"server {pid} left running; stderr: {result.stderr}"
        assert result.returncode == 0, result.stderr
        # before the server answered, the start is given up (it need not come up to be stopped)
        given_up = step in ("spawned", "waiting")
        assert f"{signame} received: {'stopped' if given_up else 'stopping'} moto" in result.stderr
        assert "Traceback" not in result.stderr
        assert "Press Ctrl-C" not in result.stdout, "no instructions once stopping"
    finally:
        if group_alive(pid):  # the old code orphaned it: do not leave it behind
            os.killpg(pid, signal.SIGKILL)
