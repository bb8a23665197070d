"""Memory of the bulk copy engine vs the object count (issue 17), synthetic listings.

Measures the part of a run whose memory could grow with the object count: listing the source
and the destination and deciding what to copy. Each measurement is a fresh child process that
runs the engine (``zonemount_operator.transfer.copy_prefix``) over an *up-to-date* destination
(a re-run: every object is listed on both sides and skipped) against a fake S3 client whose
paginator generates ListObjectsV2 pages of 1,000 keys on the fly. Peak RSS comes from
``wait4``. Copy work itself is bounded by construction (at most 4 x concurrency objects queued,
one part per worker) and is measured on a real server by ``bench.bulkcopy``.

``--baseline DIR`` runs the same against another checkout (e.g. the engine before issue 17).
Run: ``.venv/bin/python -m bench.bulkcopy_memory --counts 20000,200000,10000000``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import datetime as dt, sys, time
from zonemount_operator.names import S3Url
from zonemount_operator import transfer

N = int(sys.argv[1])
T = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

class Pages:
    def paginate(self, Bucket, Prefix):
        for start in range(0, N, 1000):
            yield {"Contents": [
                {"Key": f"{Prefix}obj-{i:09d}", "Size": 16384, "ETag": '"e"', "LastModified": T}
                for i in range(start, min(N, start + 1000))
            ]}

class Meta:
    endpoint_url = "http://synthetic"
    region_name = "us-east-1"

class Client:
    meta = Meta()
    def get_paginator(self, name):
        return Pages()

c = Client()
t0 = time.perf_counter()
r = transfer.copy_prefix(c, S3Url("src", "a/"), c, S3Url("dst", "b/"),
                         transfer.CopyOptions(concurrency=64, skip_existing=True))
assert r.objects_skipped == N and r.objects_copied == 0, r
print(f"{time.perf_counter() - t0:.1f}")
"""


def measure(count: int, pythonpath: str | None) -> tuple[float, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(count)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed for {count} objects")
    return usage.ru_maxrss / 1024, float(out.strip() or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="20000,200000,2000000")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare")
    parser.add_argument(
        "--baseline-max", type=int, default=2_000_000, help="largest count for the baseline"
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    print(f"# Engine memory vs object count (re-run, all up to date), {time.ctime()}")
    print(f"load {os.getloadavg()[0]:.2f}\n")
    print("| objects | engine | peak RSS MiB | seconds |\n|---|---|---|---|")
    for count in counts:
        rss, secs = measure(count, None)
        print(f"| {count:,} | this checkout | {rss:.0f} | {secs:.1f} |", flush=True)
        if args.baseline and count <= args.baseline_max:
            path = f"{args.baseline / 'operator'}:{args.baseline / 'csi-driver'}"
            rss, secs = measure(count, path)
            print(f"| {count:,} | baseline | {rss:.0f} | {secs:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
