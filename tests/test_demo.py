"""``make demo`` works: the end-to-end walkthrough runs green and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "zonemount"), "demo"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for fact in (
        "directory bucket",
        "IAM policy",
        "bulk import",
        "StorageClass",
        "CSI node",
        "volume",
        "job",
        "_SUCCESS",
        "demo finished",
    ):
        assert fact in proc.stdout
    left = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if "zonemount-demo-" in line
    ]
    assert left == [], "the demo unmounts what it mounted"
