"""Raw S3 baseline ("single GET"): plain botocore/urllib3 requests, run as its own process.

Owns the no-filesystem baseline of every workload: one streaming GET per object read in large
chunks, ranged GETs for random reads, a single streaming PUT for writes, ListObjectsV2 for
``ls``. It runs as a child process of the harness so its peak RSS can be measured like any
client and the harness's own threads do not compete for its GIL.

Prints one JSON object on stdout: ``{"bytes": int, "seconds": float, ...}``; ``seconds`` is
measured inside the process around the transfer only (client creation excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from bench.fsload import add_workload_args

READ_CHUNK = 4 << 20


def _client(endpoint: str, pool: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=max(10, pool),
            retries={"max_attempts": 3, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _stream(client: Any, bucket: str, key: str, deadline: float) -> int:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    total = 0
    while True:
        chunk = body.read(READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if time.monotonic() > deadline:
            break
    body.close()
    return total


def op_get(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        sizes = list(pool.map(lambda k: _stream(client, args.bucket, k, deadline), args.keys))
    seconds = time.perf_counter() - start
    return {"bytes": sum(sizes), "seconds": seconds, "files": len(sizes)}


def op_randread(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    key = args.keys[0]
    size = client.head_object(Bucket=args.bucket, Key=key)["ContentLength"]
    rng = random.Random(args.seed)
    blocks = max(1, size // args.block)
    deadline = time.monotonic() + args.max_seconds
    total = 0
    count = 0
    start = time.perf_counter()
    for _ in range(args.count):
        offset = rng.randrange(blocks) * args.block
        rng_header = f"bytes={offset}-{offset + args.block - 1}"
        body = client.get_object(Bucket=args.bucket, Key=key, Range=rng_header)["Body"]
        total += len(body.read())
        count += 1
        if time.monotonic() > deadline:
            break
    seconds = time.perf_counter() - start
    return {"bytes": total, "seconds": seconds, "ops": count}


class _RandomStream:
    """A file-like body of ``size`` bytes cycling over one random buffer (no big allocation)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(8 << 20)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = len(self.block) if n < 0 else min(n, len(self.block))
        n = min(n, self.left)
        self.left -= n
        return self.block[:n]


def op_put(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One streaming PUT. botocore hashes the whole payload over plain http (SigV4 on a
    non-TLS endpoint), so the baseline signs with ``UNSIGNED-PAYLOAD`` and streams via urllib3."""
    import urllib3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = f"{args.endpoint}/{args.bucket}/{args.keys[0]}"
    headers = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "Content-Length": str(args.size)}
    request = AWSRequest(method="PUT", url=url, headers=headers)
    credentials = client._request_signer._credentials
    SigV4Auth(credentials, "s3", client.meta.region_name).add_auth(request)
    pool = urllib3.PoolManager(blocksize=1 << 20)
    start = time.perf_counter()
    response = pool.request(
        "PUT",
        url,
        body=_RandomStream(args.size),  # type: ignore[arg-type]
        headers=dict(request.headers.items()),
        preload_content=True,
    )
    seconds = time.perf_counter() - start
    if response.status >= 300:
        raise SystemExit(f"PUT {url} failed: HTTP {response.status}")
    return {"bytes": args.size, "seconds": seconds}


def op_list(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    count = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=args.bucket, Prefix=args.keys[0], Delimiter="/"):
        count += len(page.get("Contents", []))
    seconds = time.perf_counter() - start
    return {"bytes": 0, "seconds": seconds, "entries": count}


def op_ttfb(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    samples = []
    start = time.perf_counter()
    for key in args.keys:
        t0 = time.perf_counter()
        body = client.get_object(Bucket=args.bucket, Key=key)["Body"]
        body.read(1)
        samples.append(time.perf_counter() - t0)
        body.close()
    seconds = time.perf_counter() - start
    return {"bytes": 0, "seconds": seconds, "ttfb_ms": statistics.median(samples) * 1000}


OPS = {"get": op_get, "randread": op_randread, "put": op_put, "list": op_list, "ttfb": op_ttfb}


def main() -> None:
    parser = argparse.ArgumentParser(description="raw S3 baseline for the benchmark")
    parser.add_argument("op", choices=sorted(OPS))
    parser.add_argument("keys", nargs="+")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    add_workload_args(parser)
    args = parser.parse_args()
    client = _client(args.endpoint, args.parallel)
    result = OPS[args.op](client, args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
