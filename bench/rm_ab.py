"""``rm -rf`` before/after in one run: this checkout's zonemount, another checkout's (``--baseline
DIR``, run from its source tree with ``PYTHONPATH``) and s3fs-fuse, on one SeaweedFS (issue 14).

Two ways to share a loaded machine fairly:

* default: per run and client (the order rotates each run), mount, untar ``--files`` 4 KiB files
  in 50 directories, time ``rm -rf`` of the tree (one ``rm``), unmount;
* ``--interleaved``: every client mounted at once, the tree untarred on each, then ``rm -rf``
  of one directory per client in turn (rotating who goes first), the times summed per client:
  a load swing hits every client alike (each ``rm`` start is in every client's time).

Per cell: files/s, the FUSE server's CPU (user + system) per removed file, and for zonemount
the FUSE requests and S3 requests counted by its metrics (``--metrics-address``). Prints one
JSON line per cell and the ratios to s3fs of the same run. A measuring tool, not a test; run
as root (FUSE mounts)::

    git -C /work/main worktree add --detach /tmp/base <commit>
    .venv/bin/python -m bench.rm_ab --baseline /tmp/base --repeat 3 [--interleaved]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from zonemount_cli.servers import free_port, start_seaweedfs

from bench.clients import Client, Dataset, S3fs, Target, Zonemount, checkout_command
from bench.fsload import server_cpu
from bench.runner import make_tarball


class _Zonemount(Zonemount):
    """zonemount with its metrics served; from ``source`` (a checkout) when given."""

    def __init__(self, name: str, source: Path | None) -> None:
        self.name, self.source, self.port = name, source, free_port()

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(data, target, mnt)
        cmd += ["--metrics-address", f"127.0.0.1:{self.port}"]
        if self.source is None:
            return cmd, env
        return checkout_command(self.source, cmd[1:], env)

    def counts(self) -> dict[str, float]:
        """FUSE requests and S3 requests so far, by kind."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        pattern = r'zonemount_(fuse_op_seconds_count|s3_requests_total)\{op="(\w+)"\} (\S+)'
        return {
            ("fuse_" if m[1].startswith("fuse") else "s3_") + m[2]: float(m[3])
            for m in re.finditer(pattern, text)
        }


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: round(v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)}


def _clients(args: argparse.Namespace) -> list[Client]:
    clients: list[Client] = [_Zonemount("zonemount", None)]
    if args.baseline:
        clients.append(_Zonemount("zonemount-baseline", args.baseline))
    return clients + ([S3fs()] if not args.no_s3fs else [])


def _untar(tarball: Path, dest: Path) -> int:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest), "--no-same-owner"], check=False)
    return sum(len(names) for _, _, names in os.walk(dest))


def _ratios(rows: dict[str, dict[str, Any]]) -> str:
    s3fs = rows.get("s3fs", {}).get("rm_files_s")
    return "  ".join(
        f"{name} {row['rm_files_s']} files/s"
        + (f" ({row['rm_files_s'] / s3fs:.2f}x s3fs)" if s3fs else "")
        + f", {row['rm_cpu_ms_file']} ms CPU/file"
        for name, row in rows.items()
    )


def sequential(args: argparse.Namespace, data: Dataset, target: Target, work: Path) -> None:
    clients = _clients(args)
    for run in range(args.repeat):
        rows: dict[str, dict[str, Any]] = {}
        for client in clients[run % len(clients) :] + clients[: run % len(clients)]:
            mnt = work / f"mnt-{client.name}"
            proc = client.mount(data, target, mnt)
            try:
                files = _untar(work / "tree.tar", mnt / client.name / f"r{run}")
                counts = client.counts() if isinstance(client, _Zonemount) else {}
                cpu, start = server_cpu(proc.pid), time.perf_counter()
                subprocess.run(["rm", "-rf", str(mnt / client.name / f"r{run}")], check=True)
                seconds, cpu = time.perf_counter() - start, server_cpu(proc.pid) - cpu
                row: dict[str, Any] = {
                    "rm_files_s": round(files / seconds, 1),
                    "rm_cpu_ms_file": round(cpu * 1e3 / files, 3),
                }
                if isinstance(client, _Zonemount):
                    row["requests"] = _delta(counts, client.counts())
            finally:
                client.unmount(proc, mnt)
            rows[client.name] = row
            print(json.dumps({"run": run, "client": client.name, **row}), flush=True)
        print(f"run {run}: {_ratios(rows)}", flush=True)


def interleaved(args: argparse.Namespace, data: Dataset, target: Target, work: Path) -> None:
    clients = _clients(args)
    procs: dict[str, Any] = {}
    try:
        for client in clients:
            procs[client.name] = client.mount(data, target, work / f"mnt-{client.name}")
        for run in range(args.repeat):
            tops = {c.name: work / f"mnt-{c.name}" / c.name / f"r{run}" for c in clients}
            files = {name: _untar(work / "tree.tar", top) for name, top in tops.items()}
            counts = {c.name: c.counts() for c in clients if isinstance(c, _Zonemount)}
            spent = {c.name: [0.0, 0.0] for c in clients}
            dirs = sorted(p.name for p in tops[clients[0].name].iterdir())
            for i, name in enumerate(dirs):
                for client in clients[i % len(clients) :] + clients[: i % len(clients)]:
                    pid = procs[client.name].pid
                    cpu, start = server_cpu(pid), time.perf_counter()
                    subprocess.run(["rm", "-rf", str(tops[client.name] / name)], check=True)
                    spent[client.name][0] += time.perf_counter() - start
                    spent[client.name][1] += server_cpu(pid) - cpu
            rows: dict[str, dict[str, Any]] = {}
            for client in clients:
                seconds, cpu = spent[client.name]
                n = files[client.name]
                rows[client.name] = {
                    "rm_files_s": round(n / seconds, 1),
                    "rm_cpu_ms_file": round(cpu * 1e3 / n, 3),
                }
                if isinstance(client, _Zonemount):
                    rows[client.name]["requests"] = _delta(counts[client.name], client.counts())
            print(json.dumps({"run": run, "load": os.getloadavg()[0], **rows}), flush=True)
            print(f"run {run}: {_ratios(rows)}", flush=True)
    finally:
        for client in clients:
            if client.name in procs:
                client.unmount(procs[client.name], work / f"mnt-{client.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another zonemount checkout to compare")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--interleaved", action="store_true")
    parser.add_argument("--no-s3fs", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zonemount-rm-ab-"))
    make_tarball(work / "tree.tar", args.files, 50)
    data_dir = Path(f"/dev/shm/zonemount-rm-ab-{uuid.uuid4().hex[:6]}")
    server = start_seaweedfs(data_dir=data_dir)
    try:
        bucket = f"rm-{uuid.uuid4().hex[:8]}"
        s3: Any = server.client()
        s3.create_bucket(Bucket=bucket)
        data = Dataset(bucket, [], [], "", [], 0, work / "unused", 0)
        target = Target("loopback", server.endpoint, server.env())
        (interleaved if args.interleaved else sequential)(args, data, target, work)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
