"""bench.charts: the Spark and bulk-copy charts are drawn from their JSON, failed cells too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import charts

PNG = b"\x89PNG\r\n\x1a\n"


def _spark_doc() -> dict[str, object]:
    def ok(target: str, write: float, read: float) -> dict[str, object]:
        return {"target": target, "status": "ok", "write_s": write, "read_s": read}

    results = [ok("local disk", 2.0, 0.5), ok("zonemount (committer v1)", 3.5, 0.5)]
    results = [{**r, "total_s": r["write_s"] + r["read_s"]} for r in results]
    results.append({"target": "s3fs", "status": "failed", "total_s": None, "reason": "chmod"})
    meta = {"rows": 1000, "when": "2026-12-04T00:00:00Z", "cores": 2, "repeats": 1}
    return {"meta": meta, "results": results}


def test_spark_and_bulkcopy_results_are_drawn(tmp_path: Path) -> None:
    spark = tmp_path / "spark-x.json"
    spark.write_text(json.dumps(_spark_doc()))
    cell = {"dataset": "large", "direction": "s3-s3", "objects": 4, "cpu": 0.1, "wall": 1.0}
    cells = [
        {**cell, "tool": "zonemount", "status": "ok", "objects_per_s": 4.0, "mb_per_s": 25.0},
        {**cell, "tool": "s5cmd", "status": "failed", "objects_per_s": 0.0, "mb_per_s": 0.0},
        {**cell, "tool": "zonemount", "direction": "s3-s3 re-run", "status": "ok"},
    ]
    copy = tmp_path / "bulkcopy-x.json"
    copy.write_text(json.dumps({"stamp": "x", "cpus": 2, "cells": cells}))
    for result in (spark, copy):
        assert charts.chart(result) == result.with_suffix(".png")
        assert result.with_suffix(".png").read_bytes().startswith(PNG)


def test_an_unknown_result_is_refused_in_one_line(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(SystemExit, match=r"neither a bench\.spark nor a bench\.bulkcopy result"):
        charts.chart(other)
