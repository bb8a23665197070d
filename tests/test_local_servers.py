"""The S3 servers that tests, benchmarks and ``zonemount local-s3`` start on loopback
(zonemount_cli.servers) run side by side on one machine - two test sessions, or a benchmark
beside CI, each start their own - so none listens on a fixed port."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from zonemount_cli.servers import start_seaweedfs

pytestmark = pytest.mark.integration


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its sockets in /proc/net/tcp{,6})."""
    fds = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in os.listdir(fds):
        try:
            link = os.readlink(fds / fd)
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_seaweedfs_listens_on_no_fixed_port() -> None:
    """``weed mini`` also opened an Iceberg catalog on port 8181 and a Lance namespace on
    9101, checked free before binding them: two servers starting at once raced for them and
    one exited ('address already in use'), failing another session's tests at random. Both
    are turned off; the S3 port and the others are chosen free by the caller."""
    with start_seaweedfs() as server:
        deadline = time.monotonic() + 30
        while "All enabled components are running" not in (log := server.log_path.read_text()):
            assert server.process.poll() is None, log[-2000:]
            assert time.monotonic() < deadline, "weed mini never finished starting"
            time.sleep(0.05)
        ports = _listening_ports(server.process.pid)
        assert int(server.endpoint.rsplit(":", 1)[1]) in ports
        # another server may hold 8181 and 9101 already: weed then tried 8182, 9102, ...
        assert "Iceberg Catalog:" not in log and "Lance Namespace:" not in log
        assert ports & {8181, 9101} == set()


def test_seaweedfs_checks_no_signature_whatever_its_starters_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``weed mini`` checks signatures when it finds AWS credentials in its environment; a
    session-wide server started from a test that had set them checked them, one started from
    another did not, and a test passed or failed by order (CI of 0522a01: the fault proxy
    rewrites Host, so every signed request through it was SignatureDoesNotMatch). Started
    with credentials in the environment, it still accepts a request signed with others."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTARTER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-starters-secret")
    with start_seaweedfs() as server:
        client: Any = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="someone-else",
            aws_secret_access_key="another-secret",
        )
        client.create_bucket(Bucket="any-signature")
        client.put_object(Bucket="any-signature", Key="k", Body=b"accepted")
        assert client.get_object(Bucket="any-signature", Key="k")["Body"].read() == b"accepted"
