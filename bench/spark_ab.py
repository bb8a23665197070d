"""Spark pipeline, before vs after one change, in one Spark session (paired A/B).

    .venv/bin/python -m bench.spark_ab --before /tmp/before-checkout --rounds 3
    .venv/bin/python -m bench.spark_ab --compare checksum-files --rounds 3

Owns: one SeaweedFS on loopback, one local-mode SparkSession (``local[2]``), and per round
three runs of :func:`bench.spark.job` (the pipeline ``make bench-spark`` times): on local disk,
through a mount of the ``--before`` checkout (a ``git worktree add --detach`` of the commit
before, run with :func:`bench.clients.checkout_command`) and through a mount of this checkout.
The order of the two mounts alternates by round. ``--compare checksum-files`` instead mounts
this checkout twice, Spark writing with and without ``.crc`` side files
(:data:`tests.spark.sparkjobs.NO_CHECKSUM_FILES`), each compared with local disk written the
same way. Per mounted run: write and read seconds, the FUSE server's and SeaweedFS's CPU
seconds (``/proc``), S3 requests by type and summed FUSE time by operation (``--metrics-address``).

Why paired: on this shared 2-core machine local disk alone varies 2x between separate
``bench.spark`` runs, so the ratio of two separate runs says little about a change of a few
percent; here the three targets of a round run back to back against the same server and JVM,
and the request counts and CPU seconds are measured, not inferred.

Writes ``spark-ab-<UTC time>.json`` and ``.md`` into ``--out`` and prints the markdown.
Invariants: every mount and server started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zonemount_cli.servers import free_port

from bench import spark as bench_spark
from bench.bulkcopy import process_cpu
from bench.clients import checkout_command
from tests.fs.mounts import ZONEMOUNT, server_pid, unmount
from tests.spark import sparkjobs

BUCKET = "spark-ab"


def scrape(port: int) -> dict[str, float]:
    """S3 requests by type and summed FUSE seconds by operation, from the mount's metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if m := re.match(r'zonemount_fuse_op_seconds_sum\{op="(\w+)"\} (\S+)', line):
            out[f"fuse s: {m[1]}"] = float(m[2])
        elif m := re.match(r'zonemount_s3_requests_total\{op="(\w+)"\} (\S+)', line):
            out[f"S3: {m[1]}"] = float(m[2])
    return out


def commit_of(checkout: Path) -> str:
    git = ["git", "-C", str(checkout), "log", "-1", "--format=%h"]
    return subprocess.run(git, check=False, capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class Side:
    """One mounted target of a round: a label, the checkout that mounts (None: this one) and
    whether Spark writes ``.crc`` side files (``bench.spark.job``'s ``checksum_files``)."""

    label: str
    checkout: Path | None
    checksum_files: bool


def sides_for(args: argparse.Namespace) -> list[Side]:
    """``--compare checkouts``: ``--before`` against this checkout, both with or both without
    ``.crc`` files; ``--compare checksum-files``: this checkout with and without them."""
    if args.compare == "checksum-files":
        return [Side("with .crc", None, True), Side("no .crc", None, False)]
    crc = not args.no_checksum_files
    return [Side("before", args.before, crc), Side("after", None, crc)]


def local_label(checksum_files: bool) -> str:
    return "local" if checksum_files else "local, no .crc"


def render(meta: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [
        f"# Spark pipeline, paired A/B: {meta['rows']:,} rows, committer v{meta['committer']}",
        "",
        f"{meta['when']} - {meta['sides']}; one SeaweedFS and one SparkSession (local[2]), "
        f"{meta['rounds']} rounds of local disk and each mounted side (mount order "
        "alternating). Each mounted run is compared with the local-disk run of its round that "
        "wrote the same files (with or without `.crc` side files). CPU: user+sys of the FUSE "
        "server and of SeaweedFS during the mounted run."
        + (f" {meta['cpus']}." if meta.get("cpus") else ""),
        "",
        "| round | target | write s | read s | total s | vs local disk | FUSE server CPU s "
        "| SeaweedFS CPU s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rnd in range(meta["rounds"]):
        for r in (x for x in runs if x["round"] == rnd):
            local = next(
                x
                for x in runs
                if x["round"] == rnd
                and x["mounted"] is False
                and x["checksum_files"] == r["checksum_files"]
            )
            total = r["write_s"] + r["read_s"]
            local_total = local["write_s"] + local["read_s"]
            cpu = f"{r['fuse_cpu_s']:.2f} | {r['seaweedfs_cpu_s']:.2f}" if r["mounted"] else " | "
            lines.append(
                f"| {rnd + 1} | {r['side']} | {r['write_s']:.2f} | {r['read_s']:.2f} "
                f"| {total:.2f} | {total / local_total:.2f}x | {cpu} |"
            )
    keys = sorted({k for r in runs for k in r["counts"]})
    mounted = [r for r in runs if r["mounted"]]
    lines += [
        "",
        "| per mounted run | "
        + " | ".join(f"{r['side']} {r['round'] + 1}" for r in mounted)
        + " |",
        "|---|" + "---:|" * len(mounted),
    ]
    for key in keys:
        cells = " | ".join(f"{r['counts'].get(key, 0):g}" for r in mounted)
        lines.append(f"| {key} | {cells} |")
    return "\n".join(lines) + "\n"


def mounted_run(
    st: bench_spark.Stage, side: Side, rnd: int, args: argparse.Namespace, seaweedfs: int
) -> dict[str, Any]:
    """Mount ``side``'s checkout, run the pipeline through it, unmount; the run's record."""
    slug = re.sub(r"[^a-z0-9]+", "-", side.label)
    mnt = st.work / f"mnt-{slug}-{rnd}"
    mnt.mkdir()
    port = free_port()
    mount_args = [
        "mount",
        BUCKET,
        str(mnt),
        "--endpoint-url",
        st.server.endpoint,
        "--force-path-style",
        *sparkjobs.MOUNT_FLAGS,
        "--metrics-address",
        f"127.0.0.1:{port}",
    ]
    cmd, env = [ZONEMOUNT, *mount_args], st.mounter.env()
    if side.checkout is not None:
        cmd, env = checkout_command(side.checkout, mount_args, env)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    try:
        fuse = server_pid(mnt)
        first = scrape(port)
        cpu0 = process_cpu(fuse), process_cpu(seaweedfs)
        write_s, read_s, _ = bench_spark.job(
            st.spark,
            mnt / slug / str(rnd),
            args.rows,
            args.committer,
            checksum_files=side.checksum_files,
        )
        last = scrape(port)
        cpu1 = process_cpu(fuse), process_cpu(seaweedfs)
    finally:
        unmount(mnt)
    counts = {
        k: round(last.get(k, 0.0) - first.get(k, 0.0), 3)
        for k in {*first, *last}
        if last.get(k, 0.0) != first.get(k, 0.0)
    }
    return {
        "round": rnd,
        "side": side.label,
        "mounted": True,
        "checksum_files": side.checksum_files,
        "write_s": write_s,
        "read_s": read_s,
        "fuse_cpu_s": cpu1[0] - cpu0[0],
        "seaweedfs_cpu_s": cpu1[1] - cpu0[1],
        "counts": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("checkouts", "checksum-files"), default="checkouts")
    parser.add_argument("--before", type=Path, help="the checkout to compare with (checkouts)")
    parser.add_argument(
        "--no-checksum-files",
        action="store_true",
        help="every run writes without .crc side files (checkouts)",
    )
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--committer", choices=("1", "2"), default="1")
    parser.add_argument(
        "--server-cpus",
        type=bench_spark.cpu_list,
        help="pin SeaweedFS to these CPUs and everything else to the rest (S3 off the job's "
        "cores, as on EKS), e.g. 1, or last",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.compare == "checkouts" and not (args.before and (args.before / "csi-driver").is_dir()):
        print(
            f"bench.spark_ab: --before {args.before} is not a zonemount checkout "
            "(make one with: git worktree add --detach /tmp/before <commit>)",
            file=sys.stderr,
        )
        return 2
    reason = sparkjobs.missing_requirements()
    if reason:
        print(f"bench.spark_ab: {reason}", file=sys.stderr)
        return 2
    sides = sides_for(args)
    runs: list[dict[str, Any]] = []
    with bench_spark.stage("zonemount-spark-ab-", BUCKET, "zonemount-ab") as st:
        seaweedfs = st.server.process.pid  # start_seaweedfs runs weed itself
        cpus = bench_spark.split_cpus(st, args.server_cpus) if args.server_cpus else ""
        bench_spark.job(st.spark, st.work / "warmup", min(args.rows, 200_000), args.committer)
        for rnd in range(args.rounds):
            for crc in dict.fromkeys(side.checksum_files for side in sides):
                write_s, read_s, _ = bench_spark.job(
                    st.spark,
                    st.work / f"local-{crc}" / str(rnd),
                    args.rows,
                    args.committer,
                    checksum_files=crc,
                )
                runs.append(
                    {
                        "round": rnd,
                        "side": local_label(crc),
                        "mounted": False,
                        "checksum_files": crc,
                        "write_s": write_s,
                        "read_s": read_s,
                        "counts": {},
                    }
                )
            for side in sides if rnd % 2 == 0 else sides[::-1]:
                run = mounted_run(st, side, rnd, args, seaweedfs)
                runs.append(run)
                print(f"round {rnd + 1} {side.label}: {run['write_s'] + run['read_s']:.2f} s")
    when = bench_spark.utc_now()
    named = {s.label: commit_of(s.checkout or Path.cwd()) for s in sides}
    meta = {
        "when": when,
        "rows": args.rows,
        "rounds": args.rounds,
        "committer": args.committer,
        "compare": args.compare,
        "cpus": cpus,
        "sides": ", ".join(f"{label}: `{commit}`" for label, commit in named.items()),
    }
    markdown = render(meta, runs)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"spark-ab-{when.replace(':', '').replace('-', '')}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
