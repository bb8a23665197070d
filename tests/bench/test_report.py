"""The benchmark report's arithmetic: ratio orientation, targets, best-of-N and workload 8.

Pure functions over a hand-built run document; each test pins one rule a reader of the report
relies on (a ratio > 1 means zonemount is better, whatever the unit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report


def _row(
    profile: str, client: str, workload: int, value: float | None, **kw: Any
) -> dict[str, Any]:
    return {
        "profile": profile,
        "client": client,
        "workload": workload,
        "status": "ok" if value is not None else "failed",
        "value": value,
        "unit": report.WORKLOADS[workload].unit,
        "bytes": 0,
        "seconds": 1.0,
        "peak_rss_mb": kw.get("rss"),
        "note": "",
        "extra": {},
    }


def _doc(results: list[dict[str, Any]], workloads: list[int]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "started": "2026-01-01T00:00:00+00:00",
        "host": {"cpus": 2, "kernel": "k"},
        "config": {
            "profiles": ["loopback", "shaped"],
            "workloads": workloads,
            "subject": "zonemount",
            "size_gib": 1.0,
            "small_mb": 6.26,
            "small_count": 100,
            "ls_keys": 10000,
            "rand_count": 400,
            "latency_ms": 15.0,
            "rate_mb_s": 90.0,
            "engine": "fio",
            "cold_cache": True,
        },
        "clients": {
            name: {"available": True, "reason": ""}
            for name in ("zonemount", "s3fs", "s5cmd", "single-GET")
        },
        "proxy": {},
        "results": report.derive_rss(results, workloads),
    }
    doc["ratios"] = report.ratios(doc)
    doc["targets"] = report.targets(doc)
    return doc


@pytest.mark.bench
def test_ratios_mean_better_above_one_for_rates_and_for_times() -> None:
    doc = _doc(
        [
            _row("loopback", "zonemount", 1, 300.0, rss=120.0),
            _row("loopback", "s3fs", 1, 200.0, rss=20.0),
            _row("loopback", "zonemount", 6, 2.0),
            _row("loopback", "s3fs", 6, 4.0),
        ],
        [1, 6, 8],
    )
    by = {
        (r["workload"], r["peer"]): r["ratio"] for r in doc["ratios"] if r["profile"] == "loopback"
    }
    assert by[(1, "s3fs")] == pytest.approx(1.5)  # faster reads: 300/200
    assert by[(6, "s3fs")] == pytest.approx(2.0)  # half the time: 4/2
    assert by[(8, "s3fs")] == pytest.approx(20.0 / 120.0)  # six times the memory
    assert by[(1, "s5cmd")] is None  # no measurement, no ratio


@pytest.mark.bench
def test_targets_pass_miss_and_na() -> None:
    doc = _doc(
        [
            _row("loopback", "zonemount", 1, 300.0, rss=310.0),
            _row("loopback", "s3fs", 1, 200.0, rss=20.0),
            _row("loopback", "single-GET", 1, 500.0, rss=60.0),
            _row("shaped", "zonemount", 3, 90.0),
            _row("shaped", "s5cmd", 3, 100.0),
        ],
        [1, 3, 8],
    )
    status = {(t["profile"], t["target"]): t["status"] for t in doc["targets"]}
    assert status[("loopback", "workload 1 >= 1.5x s3fs-fuse")] == "pass"
    assert status[("loopback", "workload 1 >= 0.8x single GET")] == "miss"  # 0.6x
    assert status[("loopback", "workload 8 <= 300 MB")] == "miss"  # 310 MB
    assert status[("loopback", "workload 3 >= 1.0x s3fs-fuse")] == "n/a"
    assert status[("shaped", "workload 3 >= 0.8x s5cmd")] == "pass"  # 0.9x
    assert all(t["workload"] in (1, 3, 8) for t in doc["targets"])


@pytest.mark.bench
def test_best_of_picks_by_direction_and_keeps_worst_memory() -> None:
    fast = _row("loopback", "s3fs", 1, 250.0, rss=30.0)
    slow = _row("loopback", "s3fs", 1, 150.0, rss=40.0)
    failed = _row("loopback", "s3fs", 1, None)
    cell = report.best_of([slow, failed, fast])
    assert cell["value"] == 250.0
    assert cell["peak_rss_mb"] == 40.0
    assert cell["samples"] == [150.0, None, 250.0]
    quick = report.best_of([_row("shaped", "s3fs", 6, 3.0), _row("shaped", "s3fs", 6, 2.0)])
    assert quick["value"] == 2.0
    assert report.best_of([failed])["status"] == "failed"


@pytest.mark.bench
def test_outputs_render_every_cell_and_a_png(tmp_path: Path) -> None:
    doc = _doc(
        [
            _row("loopback", "zonemount", 1, 300.0, rss=120.0),
            _row("loopback", "s3fs", 1, None),
            _row("shaped", "zonemount", 1, 100.0, rss=130.0),
        ],
        [1, 8],
    )
    doc["clients"]["s5cmd"] = {"available": False, "reason": "s5cmd not installed"}
    paths = report.write_all(doc, tmp_path)
    assert sorted(p.suffix for p in paths) == [".json", ".md", ".png"]
    md = paths[1].read_text()
    assert "s5cmd: not available** (s5cmd not installed)" in md
    assert "| 1. 1 file sequential read | MB/s (higher is better) | 300 | failed |" in md
    assert paths[2].read_bytes().startswith(b"\x89PNG")
