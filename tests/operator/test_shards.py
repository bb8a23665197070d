"""Sharded copies with real worker processes (``zonemount sync --shard I/N --manifest``) on a
real S3 server (SeaweedFS on loopback): shards are disjoint and together complete, a killed
worker's shard resumes from its manifest, and nothing already in the destination is copied
again (issue 17).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator.manifest import S3Store, read_progress
from zonemount_operator.transfer import s3_client, shard_of

pytestmark = pytest.mark.integration
ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")


@pytest.fixture
def weed(seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in seaweed_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_client(seaweed_server.endpoint, seaweed_server.region, 16)


def _seed(client: Any, count: int) -> str:
    bucket = f"sh-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=bucket, Key=f"src/k{i:05d}", Body=b"%d" % i),
                range(count),
            )
        )
    return bucket


def _keys(client: Any, bucket: str, prefix: str) -> set[str]:
    out: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out |= {o["Key"][len(prefix) :] for o in page.get("Contents", [])}
    return out


def _worker(
    server: LocalS3, bucket: str, shard: str, *extra: str, env: dict[str, str] | None = None
) -> list[str]:
    return [
        ZONEMOUNT,
        "sync",
        f"s3://{bucket}/src/",
        f"s3://{bucket}/dst/",
        "--endpoint-url",
        server.endpoint,
        "--no-progress",
        "--shard",
        shard,
        "--manifest",
        f"s3://{bucket}/.zonemount/m/",
        *extra,
    ]


def _records(client: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every manifest record, by shard directory."""
    store = S3Store(client, bucket, ".zonemount/m/")
    out: dict[str, list[dict[str, Any]]] = {}
    for name in store.names(""):
        if "/seg-" in name:
            rows = [json.loads(x) for x in store.get(name).splitlines() if x]
            out.setdefault(name.split("/")[0], []).extend(rows)
    return out


def test_shards_are_disjoint_and_complete(seaweed_server: LocalS3, weed: Any) -> None:
    bucket = _seed(weed, 240)
    env = {**os.environ, **seaweed_server.env()}
    procs = [
        subprocess.Popen(
            _worker(seaweed_server, bucket, f"{i}/3", "--concurrency", "4"),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert _keys(weed, bucket, "dst/") == _keys(weed, bucket, "src/")
    records = _records(weed, bucket)
    per_shard = [{r["k"] for r in rows} for rows in records.values()]
    assert len(per_shard) == 3
    assert sum(map(len, per_shard)) == 240 == len(set().union(*per_shard))  # disjoint, complete
    for i, name in enumerate(sorted(records)):
        assert all(shard_of(k, 3) == i for k in per_shard[i]), name
    progress = read_progress(S3Store(weed, bucket, ".zonemount/m/"))
    assert sorted(p["shard"] for p in progress) == [0, 1, 2]
    assert all(p["complete"] and p["final"] for p in progress)
    assert sum(p["objectsListed"] for p in progress) == 240
    assert all("complete: " in e and "recorded in the manifest" in e for e in errs)


def test_a_killed_worker_resumes_from_its_manifest_without_copying_twice(
    seaweed_server: LocalS3, weed: Any
) -> None:
    count = 600
    bucket = _seed(weed, count)
    env = {**os.environ, **seaweed_server.env()}
    store = S3Store(weed, bucket, ".zonemount/m/")
    slow = ["--concurrency", "1", "--manifest-flush-every", "10"]
    proc = subprocess.Popen(
        _worker(seaweed_server, bucket, "0/1", *slow), env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while sum("/seg-" in n for n in store.names("")) < 3:
        assert proc.poll() is None, "the worker finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let requests the server already received finish
    present = _keys(weed, bucket, "dst/")
    recorded_before = {r["k"] for rows in _records(weed, bucket).values() for r in rows}
    assert 30 <= len(recorded_before) <= len(present) < count  # killed mid-way
    assert recorded_before <= present  # the manifest never claims a missing object

    segments_before = set(store.names(""))
    done = subprocess.run(
        _worker(seaweed_server, bucket, "0/1", "--concurrency", "8"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [
        json.loads(line)
        for name in set(store.names("")) - segments_before
        if "/seg-" in name
        for line in store.get(name).splitlines()
        if line
    ]
    copied = {r["k"] for r in rows if r["a"] == "copied"}
    found = {r["k"] for r in rows if r["a"] == "present"}
    # Recorded objects were skipped untouched; objects the killed worker copied but had not
    # published were found in the destination (HEAD), not copied again; the rest was copied.
    assert recorded_before.isdisjoint(copied | found)
    assert found == present - recorded_before
    assert copied.isdisjoint(present)
    assert copied | present == _keys(weed, bucket, "src/")
    assert f"{len(copied)} copied, {count - len(copied)} up to date, 0 failed" in done.stderr
    assert _keys(weed, bucket, "dst/") == _keys(weed, bucket, "src/")
    (progress,) = read_progress(store)
    assert progress["complete"] and progress["objectsListed"] == count


def test_shard_argument_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from zonemount_operator.cli import sync_main

    for bad in ["3/3", "x/2", "1", "-1/2"]:
        assert sync_main(["s3://bkt/a/", "s3://bkt/b/", f"--shard={bad}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--shard" in err
    os.environ.pop("JOB_COMPLETION_INDEX", None)
    assert sync_main(["s3://bkt/a/", "s3://bkt/b/", "--shard", "auto/4"]) == 2
    assert "$JOB_COMPLETION_INDEX" in capsys.readouterr().err
