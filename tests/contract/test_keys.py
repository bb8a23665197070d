"""The environment the CSI mounter sets for a FUSE server is the one the FUSE client reads.

The mounter (zonemount_csi.mounter_server) takes both names from zonemount_contract.keys; the
FUSE client must read the same ones, or a mount waits for a ready pipe nobody writes to and an
upload journal lands where the orphan sweep does not look.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_contract import keys
from zonemount_csi import mounter_server
from zonemount_fs import journal

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")


@pytest.mark.integration
def test_the_fuse_client_answers_on_the_pipe_the_mounter_names(
    moto_server: LocalS3, tmp_path: Path
) -> None:
    """The real ``zonemount mount`` reports on the descriptor named by keys.READY_FD_ENV."""
    assert mounter_server.READY_FD_ENV is keys.READY_FD_ENV
    read_end, write_end = os.pipe()
    env = {**os.environ, **moto_server.env(), keys.READY_FD_ENV: str(write_end)}
    argv = [ZONEMOUNT, "mount", "no-such-bucket-ready-fd", str(tmp_path), "-f"]
    argv += ["--endpoint-url", moto_server.endpoint, "--force-path-style"]
    try:
        proc = subprocess.run(
            argv,
            env=env,
            pass_fds=(write_end,),
            capture_output=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    assert proc.returncode == 1, proc.stderr
    assert message.startswith("error: ") and "no-such-bucket-ready-fd" in message, message


@pytest.mark.unit
def test_the_state_dir_variable_is_one_name() -> None:
    assert journal.STATE_DIR_ENV is keys.STATE_DIR_ENV
    assert mounter_server.STATE_DIR_ENV is keys.STATE_DIR_ENV
