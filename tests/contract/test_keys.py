"""The environment the CSI mounter sets for a FUSE server is the one the FUSE client reads.

The mounter (zonemount_csi.mounter_server) takes both names from zonemount_contract.keys; the
FUSE client must read the same ones, or a mount waits for a ready pipe nobody writes to and an
upload journal lands where the orphan sweep does not look.
"""

from __future__ import annotations

import pytest
from zonemount_contract import keys
from zonemount_csi import mounter_server
from zonemount_fs import cli as fuse_cli
from zonemount_fs import journal

pytestmark = pytest.mark.unit


def test_the_ready_pipe_variable_is_one_name() -> None:
    assert fuse_cli.READY_FD_ENV == keys.READY_FD_ENV
    assert mounter_server.READY_FD_ENV is keys.READY_FD_ENV


def test_the_state_dir_variable_is_one_name() -> None:
    assert journal.STATE_DIR_ENV is keys.STATE_DIR_ENV
    assert mounter_server.STATE_DIR_ENV is keys.STATE_DIR_ENV
