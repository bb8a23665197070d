"""``python -m bench.bulkcopy`` end to end on a tiny data set: every tool x direction cell is
present and ok, the re-runs are there, the markdown has the table. Never asserts speed."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from zonemount_cli.servers import start_seaweedfs

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


def test_large_set_has_its_own_round_count(tmp_path: Path) -> None:
    """``--large-rounds``: the 6.26 MB copies last seconds, so their cells take more rounds
    than the 20,000-object ones (one round of 100 large objects is a coin toss)."""
    argv = ["--small", "2", "--large", "1", "--large-rounds", "2", "--directions", "s3-s3"]
    assert bulkcopy.main([*argv, "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("bulkcopy-*.json")
    cells = json.loads(result.read_text())["cells"]
    assert all(c["status"] == "ok" for c in cells), cells
    copies = Counter((c["dataset"], c["tool"]) for c in cells if c["direction"] == "s3-s3")
    assert copies == {
        ("small", "zonemount"): 1,
        ("small", "s5cmd"): 1,
        ("large", "zonemount"): 2,
        ("large", "s5cmd"): 2,
    }


def test_seaweedfs_volume_size_is_the_callers(tmp_path: Path) -> None:
    """``start_seaweedfs(volume_size_mb=...)`` sizes the master's volumes (the benchmark passes
    ``VOLUME_MB``; weed mini's own choice, 256 MiB on this tmpfs, made a copy of 100 x 6.26 MB
    into a fresh bucket wait on volume growth). 3000 MB is above any size weed mini picks."""
    data = tmp_path / "weed"
    with start_seaweedfs(data_dir=data, volume_size_mb=3000) as server:
        argv = " ".join(map(str, server.process.args))
        master = re.search(r"-master\.port=(\d+)", argv)
        assert master is not None, argv
        with urllib.request.urlopen(f"http://127.0.0.1:{master[1]}/dir/status") as answer:
            most = json.load(answer)["Topology"]["Max"]  # volumes the disk has room for
        free = shutil.disk_usage(data).free
    assert 0 < most <= free // (3000 << 20) + 2, (most, free)
    assert bulkcopy.VOLUME_MB << 20 >= 100 * bulkcopy.LARGE  # a large cell fits in one volume
