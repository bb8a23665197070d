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


@pytest.mark.unit
def test_demo_failure_prints_traceback_and_keeps_fuse_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import shutil

    from zonemount_cli import demo

    def failing_step(self: demo.Demo) -> None:
        vol = self.workdir / "csi-state" / "volumes" / "vol-1"
        vol.mkdir(parents=True)
        (vol / "zonemount.log").write_text("fuse client says: lookup failed\n")
        self.cleanups.append(lambda: shutil.rmtree(self.workdir / "csi-state"))
        raise FileNotFoundError(2, "No such file or directory", "_temporary/0/day=2026-11-01")

    monkeypatch.setattr(demo.Demo, "start_s3", failing_step)
    monkeypatch.setattr(demo.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    assert demo.main([]) == 1
    out = capsys.readouterr().out
    assert "Traceback (most recent call last)" in out
    assert "in failing_step" in out and "day=2026-11-01" in out
    kept = tmp_path / "work" / "fuse-client-vol-1-zonemount.log"
    assert kept.read_text() == "fuse client says: lookup failed\n"
    assert str(kept) in out.replace("\n", "")
