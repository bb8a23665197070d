"""A FUSE server killed mid-way through an operation, for the tests of what it leaves in S3.

:func:`kill_mid_rename` renames a directory on a real mount in a child process, waits until
the S3 server behind shows the state the test waits for (one request held by a fault proxy,
the others done; :func:`reached` tells when, or that it will never come, so a test of code
that moves too early fails at once rather than at a timeout), SIGKILLs the
``zonemount mount`` process serving the mount, and unmounts the dead mount. Every wait polls
with a deadline: nothing sleeps to synchronize, nothing waits forever. What is left is then
read with a plain S3 client (:func:`contents`) and a fresh mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .mounts import Mounter, is_mounted, server_pid


def tree(n: int) -> dict[str, bytes]:
    """``n`` file names with contents of their own (different bytes and lengths)."""
    return {
        f"f{i:02d}": hashlib.sha256(b"%d" % i).digest() * (i + 1) + b"%d\n" % i for i in range(n)
    }


def contents(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (names without it) and its bytes, read from S3."""
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"][len(prefix) :]] = body
    return found


def names(client: Any, bucket: str, prefix: str) -> set[str]:
    """The names of the objects under ``prefix`` (without it)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}


def reached(client: Any, bucket: str, old: set[str], new: set[str]) -> bool:
    """Do ``src/`` and ``dst/`` hold exactly ``old`` and ``new`` - or can they no longer get
    there? A rename only takes names away from its source and adds names to its target, so
    a name of ``old`` gone from ``src/`` or a name beyond ``new`` under ``dst/`` is a
    wrong state for good: the caller need not wait for the right one any longer."""
    src, dst = names(client, bucket, "src/"), names(client, bucket, "dst/")
    return (src, dst) == (old, new) or not old <= src or not dst <= new


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


_RENAME = """
import os, sys
try:
    os.rename(sys.argv[1], sys.argv[2])
except OSError as exc:
    print("errno", exc.errno)
else:
    print("renamed")
"""


def kill_mid_rename(
    mounter: Mounter, mnt: Path, src: str, dst: str, ready: Callable[[], bool]
) -> None:
    """rename(2) ``mnt/src`` to ``mnt/dst`` in a child process; once ``ready()`` holds (it
    looks at S3), SIGKILL the FUSE server, check that the rename failed with ECONNABORTED and
    unmount the dead mount."""
    pid = server_pid(mnt)
    mover = subprocess.Popen(
        [sys.executable, "-c", _RENAME, str(mnt / src), str(mnt / dst)], stdout=subprocess.PIPE
    )
    try:
        wait_for(lambda: mover.poll() is not None or ready(), "the rename to reach the fault")
        assert mover.poll() is None, f"the rename ended before the kill: {mover.returncode}"
        os.kill(pid, signal.SIGKILL)
        out, _ = mover.communicate(timeout=30)
    finally:
        if mover.poll() is None:
            mover.kill()
            mover.wait()
    # the kernel fails the FUSE requests of a connection whose server died
    assert out.split() == [b"errno", str(errno.ECONNABORTED).encode()], out
    wait_for(lambda: _dead(pid), "the killed FUSE server to exit", 15)
    mounter.cleanup()  # fusermount3 -u of the dead mount
    wait_for(lambda: not is_mounted(mnt), "the dead mount to go", 15)
    mounter.mounts.remove(mnt)


def _dead(pid: int) -> bool:
    """Has process ``pid`` exited (gone, or a zombie its parent has not reaped)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
