"""File-system workloads on a mounted directory, run as a child process of the harness.

Owns what an application does to a mount in each workload: sequential reads with large buffers
(``readinto`` of 4 MiB, one thread per reader), 256 KiB random ``pread``s at seeded offsets,
a sequential write closed at the end (the time includes ``close``, when FUSE clients upload),
``ls -l`` (``os.scandir`` + ``lstat`` of every entry; ``--repeat 2`` times the second, warm
listing), time to first byte (``open`` + first ``read`` of files not read before), and the
metadata storms of a build or a Spark commit: ``untar`` (GNU tar extracting many small files) and
``rmrf`` (the same tree extracted, then ``rm -rf``; only the removal is timed). With ``--engine
fio`` sequential and random reads run through fio (psync, same block sizes) instead.

Prints one JSON object on stdout: ``{"bytes": int, "seconds": float, ...}``. With
``--server-pid`` it also carries ``server_cpu_s``: user+system CPU seconds the FUSE server
process (all its threads) spent during the timed part only.
Reads stop early at ``--max-seconds`` (the result then carries ``"partial": true``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

READ_BUF = 4 << 20
WRITE_BUF = 1 << 20


def _read_file(path: str, deadline: float) -> tuple[int, bool]:
    buf = bytearray(READ_BUF)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(view)
            if not n:
                return total, False
            total += n
            if time.monotonic() > deadline:
                return total, True


def op_seqread(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine == "fio":
        return _fio(args, "read", "1M")
    deadline = time.monotonic() + args.max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda p: _read_file(p, deadline), args.paths))
    seconds = time.perf_counter() - start
    return {
        "bytes": sum(n for n, _ in results),
        "seconds": seconds,
        "files": len(results),
        "partial": any(p for _, p in results),
    }


def op_randread(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine == "fio":
        return _fio(args, "randread", "256k")
    path = args.paths[0]
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.max_seconds
    total = 0
    count = 0
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = max(1, os.fstat(fd).st_size // args.block)
        for _ in range(args.count):
            total += len(os.pread(fd, args.block, rng.randrange(blocks) * args.block))
            count += 1
            if time.monotonic() > deadline:
                break
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    return {"bytes": total, "seconds": seconds, "ops": count, "partial": count < args.count}


def op_write(args: argparse.Namespace) -> dict[str, Any]:
    block = os.urandom(8 << 20)
    view = memoryview(block)
    left = args.size
    start = time.perf_counter()
    fd = os.open(args.paths[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while left > 0:
            off = (args.size - left) % len(block)
            n = min(WRITE_BUF, left, len(block) - off)
            written = os.write(fd, view[off : off + n])
            left -= written
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    return {"bytes": args.size, "seconds": seconds}


def server_cpu(pid: int | None) -> float:
    """User+system CPU seconds of process ``pid`` (every thread), 0 without a pid."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def op_ls(args: argparse.Namespace) -> dict[str, Any]:
    seconds, count, cpu = 0.0, 0, 0.0
    for _ in range(max(1, args.repeat)):  # the last listing is the one reported
        cpu0 = server_cpu(args.server_pid)
        start = time.perf_counter()
        count = 0
        with os.scandir(args.paths[0]) as entries:
            for entry in entries:
                entry.stat(follow_symlinks=False)
                count += 1
        seconds = time.perf_counter() - start
        cpu = server_cpu(args.server_pid) - cpu0
    return {"bytes": 0, "seconds": seconds, "entries": count, "server_cpu_s": cpu}


def _untar(tarball: str, dest: str) -> tuple[int, str]:
    """Extract ``tarball`` into ``dest`` with GNU tar: (regular files that arrived, the first
    line tar complained with, or ""). A client that refuses chmod/utime (s3fs-fuse on some
    entries) makes tar exit non-zero although the files are there; those count."""
    os.makedirs(dest, exist_ok=True)
    proc = subprocess.run(
        ["tar", "-xf", tarball, "-C", dest, "--no-same-owner"],
        check=False,
        capture_output=True,
        text=True,
    )
    arrived = sum(len(files) for _, _, files in os.walk(dest))
    if arrived == 0:
        raise SystemExit(f"tar extracted nothing: {proc.stderr.strip()[:200]}")
    return arrived, (proc.stderr.strip().splitlines() or [""])[0][:200]


def op_untar(args: argparse.Namespace) -> dict[str, Any]:
    tarball, dest = args.paths[0], args.paths[1]
    cpu0 = server_cpu(args.server_pid)
    start = time.perf_counter()
    files, complaint = _untar(tarball, dest)
    seconds = time.perf_counter() - start
    cpu = server_cpu(args.server_pid) - cpu0
    result = {"bytes": 0, "seconds": seconds, "files": files, "server_cpu_s": cpu}
    return result | ({"tar_errors": complaint} if complaint else {})


def op_rmrf(args: argparse.Namespace) -> dict[str, Any]:
    tarball, dest = args.paths[0], args.paths[1]
    files, _ = _untar(tarball, dest)
    cpu0 = server_cpu(args.server_pid)
    start = time.perf_counter()
    subprocess.run(["rm", "-rf", dest], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    cpu = server_cpu(args.server_pid) - cpu0
    if os.path.exists(dest):
        raise SystemExit(f"rm -rf left {dest} behind")
    return {"bytes": 0, "seconds": seconds, "files": files, "server_cpu_s": cpu}


def op_ttfb(args: argparse.Namespace) -> dict[str, Any]:
    samples = []
    start = time.perf_counter()
    for path in args.paths:
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as handle:
            handle.read(1)
            samples.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    return {"bytes": 0, "seconds": seconds, "ttfb_ms": statistics.median(samples) * 1000}


def _fio(args: argparse.Namespace, rw: str, bs: str) -> dict[str, Any]:
    fio = shutil.which("fio")
    if fio is None:
        raise SystemExit("fio not found: install it (make bench installs the Debian package)")
    cmd = [
        fio,
        "--output-format=json",
        "--group_reporting",
        "--ioengine=psync",
        "--readonly",
        "--invalidate=1",
        f"--rw={rw}",
        f"--bs={bs}",
        f"--runtime={int(args.max_seconds)}",
        f"--randseed={args.seed}",
    ]
    for i, path in enumerate(args.paths):
        cmd += [f"--name=job{i}", f"--filename={path}"]
        if rw == "randread":
            cmd += [f"--io_size={args.count * args.block}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{") :])
    job = report["jobs"][0]
    read = job["read"]
    seconds = read["runtime"] / 1000  # group reporting: the longest job's runtime
    return {
        "bytes": int(read["io_bytes"]),
        "seconds": seconds,
        "ops": int(read["total_ios"]),
        "engine": "fio",
    }


OPS = {
    "seqread": op_seqread,
    "randread": op_randread,
    "write": op_write,
    "ls": op_ls,
    "ttfb": op_ttfb,
    "untar": op_untar,
    "rmrf": op_rmrf,
}


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The workload parameters this module and bench.rawclient both take from the harness."""
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--block", type=int, default=256 << 10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="file-system workload for the benchmark")
    parser.add_argument("op", choices=sorted(OPS))
    parser.add_argument("paths", nargs="+")
    add_workload_args(parser)
    parser.add_argument("--engine", choices=("python", "fio"), default="python")
    parser.add_argument("--repeat", type=int, default=1, help="ls: list N times, report the last")
    parser.add_argument("--server-pid", type=int, default=0, help="report this process's CPU")
    args = parser.parse_args()
    cpu0 = server_cpu(args.server_pid)
    result = OPS[args.op](args)
    if args.server_pid and "server_cpu_s" not in result:
        result["server_cpu_s"] = server_cpu(args.server_pid) - cpu0
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
