"""Smoke test of the benchmark harness: one tiny end-to-end run, checking only the output's shape.

Runs ``python -m bench`` as `make bench` would (real SeaweedFS, real shaping proxy, real FUSE
mounts) with 8 MiB files, 8 small files, 50 keys and a 40-file tarball, on both network
profiles, with one FUSE peer and zonemount (recorded as "not available" when its mount does
not work), one workload of each kind.
Never asserts speed: only that every cell of the grid is present with a known status, that the
JSON, markdown and PNG are written and consistent, and that ratios/targets are well formed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STATUSES = {"ok", "failed", "timeout", "n/a"}
WORKLOADS = [1, 5, 6, 8, 9, 10, 11]


def _fuse_peer() -> str:
    return "s3fs" if shutil.which("s3fs") else "rclone"


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_harness_end_to_end_shape(tmp_path: Path) -> None:
    peer = _fuse_peer()
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--profile",
        "both",
        "--clients",
        f"zonemount,{peer},single-GET",
        "--size-gib",
        str(8 / 1024),
        "--small-mb",
        "0.5",
        "--small-count",
        "8",
        "--ls-keys",
        "50",
        "--rand-count",
        "16",
        # one workload of each kind (read, write, ls cold/warm, RSS, untar, rm -rf): the
        # grid's shape, not every cell, is what this test is for (the full grid took 450 s
        # on a loaded 2-core machine)
        "--workloads",
        ",".join(map(str, WORKLOADS)),
        "--tar-files",
        "40",
        "--tar-dirs",
        "4",
        "--timeout",
        "60",
        "--engine",
        "python",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    jsons = list(tmp_path.glob("*.json"))
    assert len(jsons) == 1
    doc = json.loads(jsons[0].read_text())
    stem = jsons[0].with_suffix("")
    md = stem.with_suffix(".md").read_text()
    png = stem.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

    assert doc["config"]["profiles"] == ["loopback", "shaped"]
    assert doc["config"]["workloads"] == WORKLOADS
    zm = doc["clients"]["zonemount"]
    assert zm["available"] or zm["reason"]
    live = [name for name, c in doc["clients"].items() if c["available"]]
    assert peer in live

    cells = {(r["profile"], r["client"], r["workload"]): r for r in doc["results"]}
    for profile in ("loopback", "shaped"):
        for client in live:
            for workload in WORKLOADS:
                row = cells[(profile, client, workload)]
                assert row["status"] in STATUSES, row
                if row["status"] == "ok":
                    assert isinstance(row["value"], int | float) and row["value"] > 0, row
    # the harness measured something in each profile (which cells succeed is the clients' business)
    for profile in ("loopback", "shaped"):
        assert any(cells[(profile, c, w)]["status"] == "ok" for c in live for w in (1, 5, 6))

    for key in ("direct_1_mb_s", "passthrough_1_mb_s", "shaped_1_mb_s"):
        assert doc["proxy"][key] > 0
    assert {t["status"] for t in doc["targets"]} <= {"pass", "miss", "n/a"}
    # issue 3's targets on workloads 1, 5, 6, 8 (6) and issue 14's on 9, 10, 11 and CPU (5)
    assert len(doc["targets"]) == 11
    # the metadata workloads report the FUSE server's CPU for their timed part only
    for profile in ("loopback", "shaped"):
        for workload in (9, 10):
            row = cells[(profile, peer, workload)]
            if row["status"] == "ok":
                assert row["extra"]["files"] == 40, row
                assert row["extra"]["server_cpu_s"] >= 0, row
    for ratio in doc["ratios"]:
        assert ratio["ratio"] is None or ratio["ratio"] > 0

    assert "## loopback" in md and "## shaped" in md and "## Targets (issues 3 and 14)" in md
    assert "CPU of the FUSE server" in md
    header = next(line for line in md.splitlines() if line.startswith("| workload | unit |"))
    for client in doc["clients"]:
        assert client in header
    if not zm["available"]:
        assert "zonemount: not available" in md


@pytest.mark.bench
@pytest.mark.timeout(120)
def test_parallel_dirops_probe_reports_its_stack() -> None:
    """``bench.parallel_dirops`` mounts its probe file system and says what this FUSE stack
    does with one directory's concurrent lookups, with the time that decides it."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.parallel_dirops", "--names", "4", "--delay", "0.1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    ).stdout
    assert re.search(r"^pyfuse3 \S+, libfuse /\S*libfuse3\S*$", out, re.M), out
    found = re.search(r"^4 lookups in one directory, 0\.1 s each: ([\d.]+) s \((\w+)\)$", out, re.M)
    assert found, out
    took, verdict = float(found[1]), found[2]
    assert took >= 0.1 and verdict == ("parallel" if took < 0.25 else "serialized")


def test_spark_benchmarks_split_cpus_between_the_server_and_the_job() -> None:
    """``--server-cpus`` (bench.spark, bench.spark_ab): a bad list is a one-line error naming
    the fix; a good one pins a process tree (every thread, children included) and leaves
    the rest of the machine to the job."""
    from bench import spark

    allowed = os.sched_getaffinity(0)
    for bad in ("x", ",".join(str(c) for c in sorted(allowed)), "4096"):
        with pytest.raises(SystemExit, match="--server-cpus"):
            spark.cpu_list(bad)
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to split")
    server = {max(allowed)}
    assert spark.cpu_list(str(max(allowed))) == server == spark.cpu_list("last")
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"]
    )
    try:
        deadline = 50
        while not Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split():
            deadline -= 1
            assert deadline, "the child started no grandchild"
            time.sleep(0.1)
        spark.pin_tree(child.pid, server)
        grandchild = int(Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text())
        for pid in (child.pid, grandchild):
            for task in Path(f"/proc/{pid}/task").iterdir():
                assert os.sched_getaffinity(int(task.name)) == server
        assert os.sched_getaffinity(0) == allowed  # the caller is untouched
    finally:
        child.kill()
        child.wait()
