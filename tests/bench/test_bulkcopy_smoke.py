"""``python -m bench.bulkcopy`` end to end on a tiny data set: every tool x direction cell is
present and ok, the re-runs are there, the markdown has the table. Never asserts speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bulkcopy

pytestmark = pytest.mark.bench


def test_bulkcopy_grid_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bulkcopy.main(["--small", "12", "--large", "0", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("bulkcopy-*.json")
    assert result.with_suffix(".png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    cells = json.loads(result.read_text())["cells"]
    got = {(c["tool"], c["direction"]): c for c in cells}
    for direction in bulkcopy.DIRECTIONS:
        for tool in ("zonemount", "s5cmd"):
            cell = got[(tool, direction)]
            assert cell["status"] == "ok", cell
            assert cell["objects"] == 12 and cell["wall"] > 0 and cell["rss_mib"] > 0
        assert got[("zonemount", f"{direction} re-run")]["status"] == "ok"
    # the server's CPU is measured (12 objects can take less than one 10 ms clock tick)
    assert sum(c["server_cpu"] for c in cells) > 0
    text = capsys.readouterr().out
    assert "| small | local-s3 | s5cmd | 1 |" in text and "| ratio median | ratio best |" in text
