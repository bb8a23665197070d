"""Benchmark: zonemount's bulk copy engine vs ``s5cmd cp`` (bucket -> bucket, one S3 server).

Workload (the seed's): 100 objects of 6.26 MB on SeaweedFS on loopback, copied from one
bucket to another with each tool into a fresh destination bucket, alternating, best of N.
Run: ``make operator-bench`` or ``.venv/bin/python -m bench.transfer [--objects 100] [--rounds 3]``.
Prints rates and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from zonemount_cli.servers import start_seaweedfs
from zonemount_operator.names import S3Url
from zonemount_operator.transfer import CopyOptions, copy_prefix, s3_client

SIZE = 6_260_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    s5cmd = Path(sys.executable).parent / "s5cmd"
    with start_seaweedfs() as server:
        os.environ.update(server.env())
        env = dict(os.environ)
        client = s3_client(server.endpoint, server.region, args.concurrency)
        src = "bench-src"
        client.create_bucket(Bucket=src)
        payload = os.urandom(SIZE)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: client.put_object(Bucket=src, Key=f"data/part-{i:05d}", Body=payload),
                    range(args.objects),
                )
            )
        total = SIZE * args.objects
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.rounds):
            dst = f"bench-zm-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=dst)
            t0 = time.perf_counter()
            result = copy_prefix(
                client,
                S3Url(src, "data/"),
                client,
                S3Url(dst, "data/"),
                CopyOptions(concurrency=args.concurrency, skip_existing=False),
            )
            ours.append(time.perf_counter() - t0)
            assert result.objects_copied == args.objects, result
            dst = f"bench-s5-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=dst)
            t0 = time.perf_counter()
            subprocess.run(
                [
                    str(s5cmd),
                    "--endpoint-url",
                    server.endpoint,
                    "cp",
                    f"s3://{src}/data/*",
                    f"s3://{dst}/data/",
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            theirs.append(time.perf_counter() - t0)
            n = client.list_objects_v2(Bucket=dst, Prefix="data/")["KeyCount"]
            assert n == args.objects, n
        zm_rate = total / min(ours) / 1e6
        s5_rate = total / min(theirs) / 1e6
        print(f"objects={args.objects} size={SIZE} rounds={args.rounds}")
        print(
            f"zonemount cp : best {min(ours):.2f}s  {zm_rate:8.1f} MB/s  (all: "
            + ", ".join(f"{t:.2f}" for t in ours)
            + ")"
        )
        print(
            f"s5cmd cp     : best {min(theirs):.2f}s  {s5_rate:8.1f} MB/s  (all: "
            + ", ".join(f"{t:.2f}" for t in theirs)
            + ")"
        )
        print(
            f"ratio zonemount/s5cmd = {zm_rate / s5_rate:.2f}x (best of each); "
            f"{statistics.median(theirs) / statistics.median(ours):.2f}x (medians)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
