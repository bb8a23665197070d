"""Before/after of the store's lean request path, in one run: zonemount with every S3 call on
botocore (``ZONEMOUNT_S3_FAST_PATH=0``), zonemount with the fast path, and s3fs-fuse for the
ratios, interleaved, on one SeaweedFS server (issue 14).

Per client and run: untar of ``--files`` 4 KiB files in 50 directories (files/s, FUSE server
CPU per file), ``rm -rf`` of that tree (same), and one sequential read of a ``--read-mib`` file
with a cold page cache (MB/s, CPU-s per GiB). Prints one JSON line per cell and a summary of
the best run per client. A measuring tool, not a test; run as root (FUSE mounts, drop_caches)::

    .venv/bin/python -m bench.fastpath_ab --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from zonemount_cli.servers import start_seaweedfs

from bench.clients import Client, Dataset, S3fs, Target, Zonemount
from bench.fsload import server_cpu
from bench.runner import make_tarball

VARIANTS: list[tuple[str, type[Client], dict[str, str]]] = [
    ("zonemount-botocore", Zonemount, {"ZONEMOUNT_S3_FAST_PATH": "0"}),
    ("zonemount-fastpath", Zonemount, {"ZONEMOUNT_S3_FAST_PATH": "1"}),
    ("s3fs", S3fs, {}),
]


def _timed(pid: int, fn: Any) -> tuple[float, float]:
    cpu0, start = server_cpu(pid), time.perf_counter()
    fn()
    return time.perf_counter() - start, server_cpu(pid) - cpu0


def _cell(mnt: Path, pid: int, tarball: Path, tag: str) -> dict[str, Any]:
    dest = mnt / tag
    dest.mkdir()
    seconds, cpu = _timed(
        pid,
        lambda: subprocess.run(
            ["tar", "-xf", str(tarball), "-C", str(dest), "--no-same-owner"],
            capture_output=True,
            check=False,
        ),
    )
    files = sum(len(names) for _, _, names in os.walk(dest))
    row: dict[str, Any] = {"untar_files_s": files / seconds, "untar_cpu_ms_file": cpu * 1e3 / files}
    seconds, cpu = _timed(pid, lambda: subprocess.run(["rm", "-rf", str(dest)], check=True))
    row |= {"rm_files_s": files / seconds, "rm_cpu_ms_file": cpu * 1e3 / files}
    Path("/proc/sys/vm/drop_caches").write_text("3")
    buf = memoryview(bytearray(4 << 20))
    total = 0

    def read() -> None:
        nonlocal total
        with open(mnt / "big.bin", "rb", buffering=0) as handle:
            while n := handle.readinto(buf):
                total += n

    seconds, cpu = _timed(pid, read)
    return row | {"read_mb_s": total / seconds / 1e6, "read_cpu_s_gib": cpu / (total / 2**30)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--read-mib", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zonemount-ab-"))
    tarball = work / "tree.tar"
    make_tarball(tarball, args.files, 50)
    data_dir = Path(f"/dev/shm/zonemount-ab-{uuid.uuid4().hex[:6]}")
    server = start_seaweedfs(data_dir=data_dir)
    rows: list[dict[str, Any]] = []
    try:
        bucket = f"ab-{uuid.uuid4().hex[:8]}"
        s3: Any = server.client()
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(args.read_mib << 20))
        data = Dataset(bucket, [], [], "", [], 0, work / "unused", 0)
        target = Target("loopback", server.endpoint, server.env())
        for run in range(args.repeat):
            for name, cls, env in VARIANTS:
                os.environ.update(env)
                client = cls()
                mnt = work / f"mnt-{name}"
                proc = client.mount(data, target, mnt)
                try:
                    row = {"client": name, "run": run} | _cell(mnt, proc.pid, tarball, f"t{run}")
                finally:
                    client.unmount(proc, mnt)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # a given data dir is the caller's to remove
        shutil.rmtree(work, ignore_errors=True)
    best: dict[str, dict[str, float]] = {}
    for row in rows:
        cell = best.setdefault(row["client"], {})
        for key, value in row.items():
            if key in {"client", "run"}:
                continue
            better = min if "cpu" in key else max
            cell[key] = better(cell.get(key, value), value)
    print(json.dumps({"best_of": args.repeat, "best": best}, indent=1))


if __name__ == "__main__":
    main()
