"""The CSI package's structure (issue 15): the controller shares request validation, locks and
the S3 client factory with the node plugin but imports nothing of the node service, so a
controller pod never loads the mount, mounter and healing code."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_the_controller_does_not_import_the_node_service() -> None:
    code = (
        "import sys, zonemount_csi.controller\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('zonemount_csi.'))\n"
        "bad = [m for m in loaded if m.split('.')[1] in "
        "('node', 'mounter', 'mounter_server', 'kernel_mount', 'mountinfo')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
