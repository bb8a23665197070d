"""Side by side: a second mount reading files with and without ``--cache-xz`` (shared cache).

SeaweedFS on loopback; the mounted bucket is reached through the S3-shaped proxy (per-request
latency and a per-connection bandwidth cap, :mod:`bench.shaper`), the cache bucket through a
second proxy modelling an S3 Express One Zone bucket in the same AZ (lower latency, same cap).
A first mount reads every file once (filling the cache bucket); then, per round, a fresh mount
without the shared cache and a fresh mount with it each read all files (one reader, in order),
alternating. Metadata is listed before the timed part (``--metadata-ttl 60``), so the figures
are data reads only. Best of ``--rounds``.

Run: ``python -m bench.cache_xz`` (``--help`` for the knobs). Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from zonemount_cli.servers import start_seaweedfs

from .shaper import Shaper

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
MB = 1_000_000


def _mount(env: dict[str, str], bucket: str, mnt: Path, endpoint: str, *flags: str) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    args = [ZONEMOUNT, "mount", bucket, str(mnt), "--endpoint-url", endpoint]
    args += ["--force-path-style", "--metadata-ttl", "60", *flags]
    subprocess.run(args, env=env, check=True, timeout=60)


def _unmount(mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)


def _read_all(mnt: Path, names: list[str]) -> float:
    sorted(os.listdir(mnt / "data"))  # metadata from one listing, outside the timing
    start = time.perf_counter()
    for name in names:
        with open(mnt / "data" / name, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = start_seaweedfs()
    tmp = Path(tempfile.mkdtemp(prefix="zm-cachexz-"))
    env = {**os.environ, **server.env()}
    client: Any = server.client()
    bucket, cache = f"src-{uuid.uuid4().hex[:8]}", f"xz-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=cache)
    names = [f"f{i:04d}.bin" for i in range(args.files)]
    body = os.urandom(args.size)
    for name in names:
        client.put_object(Bucket=bucket, Key=f"data/{name}", Body=body)
    host, port = server.endpoint.removeprefix("http://").split(":")
    upstream = (host, int(port))
    source = Shaper(upstream, args.latency_ms / 1000, args.rate_mbps * MB).start()
    express = Shaper(upstream, args.xz_latency_ms / 1000, args.rate_mbps * MB).start()
    max_mib = str(max(1, -(-args.size // (1 << 20))))
    xz = ["--cache-xz", cache, "--cache-xz-endpoint-url", express.endpoint]
    xz += ["--cache-xz-max-object-size", max_mib]
    mounted: list[Path] = []
    results: dict[str, list[float]] = {"without": [], "with_cache_xz": []}
    try:
        fill = tmp / "fill"
        _mount(env, bucket, fill, source.endpoint, *xz)
        mounted.append(fill)
        _read_all(fill, names)
        deadline = time.monotonic() + 120
        blocks = 0
        while time.monotonic() < deadline:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=cache, Prefix="zonemount-cache/"
            )
            blocks = sum(page.get("KeyCount", 0) for page in pages)
            if blocks >= args.files * -(-args.size // (1 << 20)):  # 1 MiB pieces
                break
            time.sleep(0.2)
        for r in range(args.rounds):
            for kind, flags in (("without", []), ("with_cache_xz", xz)):
                mnt = tmp / f"{kind}-{r}"
                _mount(env, bucket, mnt, source.endpoint, *flags)
                mounted.append(mnt)
                results[kind].append(_read_all(mnt, names))
                _unmount(mnt)
    finally:
        for mnt in mounted:
            _unmount(mnt)
            with contextlib.suppress(OSError):
                mnt.rmdir()  # only if unmounted (empty): never a walk into a live mount
        with contextlib.suppress(OSError):
            tmp.rmdir()
        source.stop()
        express.stop()
        server.stop()
    total = args.files * args.size
    out: dict[str, Any] = {
        "files": args.files,
        "size": args.size,
        "source": {"latency_ms": args.latency_ms, "rate_mb_s": args.rate_mbps},
        "cache_xz": {"latency_ms": args.xz_latency_ms, "rate_mb_s": args.rate_mbps},
        "cache_blocks": blocks,
    }
    for kind, times in results.items():
        best = min(times)
        out[kind] = {"seconds": round(best, 3), "mb_s": round(total / best / MB, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--size", type=int, default=6_260_000, help="bytes per file")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--latency-ms", type=float, default=15.0, help="mounted bucket, per request")
    p.add_argument("--rate-mbps", type=float, default=90.0, help="MB/s per connection")
    p.add_argument("--xz-latency-ms", type=float, default=3.0, help="cache bucket, per request")
    print(json.dumps(run(p.parse_args()), indent=2))


if __name__ == "__main__":
    main()
