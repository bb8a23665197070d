"""Spark benchmark: one Spark job's wall time on a zonemount mount vs local disk vs s3fs-fuse.

Run by ``make bench-spark`` (part of ``make bench``)::

    .venv/bin/python -m bench.spark --rows 3000000 --out bench/results

Owns: starting SeaweedFS on loopback, mounting one bucket with ``zonemount mount`` and with
s3fs-fuse, and timing the same pipeline (generate rows; with the default FileOutputCommitter
write partitioned Parquet, append to it, overwrite two partitions dynamically, export one
partition as CSV; read the table back and aggregate) in one local-mode SparkSession on each
target.
A warm-up run on local disk comes first so JIT warm-up is charged to no target. Every target's
result is checked against local disk's (row count + content checksum). A target that cannot
run the job at all is reported as "could not run" with the first line of its error.

Writes ``spark-<UTC time>.json`` and ``.md`` into ``--out`` and prints the markdown.
Invariants: every server and mount started here is stopped/unmounted on exit; credentials
reach s3fs through a 0600 passwd file, never argv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zonemount_cli.servers import LocalS3, start_seaweedfs

from bench import charts
from tests.fs import mounts
from tests.fs.mounts import Mounter
from tests.spark import sparkjobs

BUCKET = "spark-bench"


@dataclass
class Result:
    target: str
    status: str = "ok"  # ok | could not run | not available
    write_s: float | None = None
    read_s: float | None = None
    total_s: float | None = None
    rows: int | None = None
    checksum_ok: bool | None = None
    reason: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)


COLUMNS = (
    "id",
    "cast(id % 16 as int) as part",
    "cast(id * 7919 % 100003 as double) / 7 as amount",
    "concat('customer-', cast(id % 50000 as string)) as customer",
)
REDONE_PARTS = (3, 5)  # the partitions the dynamic overwrite replaces


def expected_rows(rows: int) -> int:
    """Rows in the table after the pipeline: the first write, plus the appended tenth outside
    the partitions the dynamic overwrite replaced with first-write rows only."""
    appended = range(rows, rows + rows // 10)
    return rows + sum(1 for i in appended if i % 16 not in REDONE_PARTS)


def job(
    spark: Any, base: Path, rows: int, committer: str, *, checksum_files: bool = True
) -> tuple[float, float, tuple[int, int]]:
    """The measured pipeline (the commit storms a Spark job on a mount meets): a partitioned
    Parquet overwrite, an append, a dynamic partition overwrite of two partitions and a CSV
    export of one partition, then the read half. ``checksum_files=False`` gives every write
    :data:`sparkjobs.NO_CHECKSUM_FILES` (no ``.crc`` side files). Returns (write seconds,
    read+aggregate seconds, table digest)."""
    table = sparkjobs.uri(base / "table")
    options = {"mapreduce.fileoutputcommitter.algorithm.version": committer}
    if not checksum_files:
        options.update(sparkjobs.NO_CHECKSUM_FILES)

    def write(frame: Any) -> Any:
        return frame.write.partitionBy("part").options(**options)

    t0 = time.perf_counter()
    write(spark.range(0, rows, numPartitions=4).selectExpr(*COLUMNS)).mode("overwrite").parquet(
        table
    )
    extra = spark.range(rows, rows + rows // 10, numPartitions=2).selectExpr(*COLUMNS)
    write(extra).mode("append").parquet(table)
    redo = spark.range(0, rows, numPartitions=2).selectExpr(*COLUMNS)
    redo = redo.where(f"part in {REDONE_PARTS}")
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    try:
        write(redo).mode("overwrite").parquet(table)
    finally:
        spark.conf.set("spark.sql.sources.partitionOverwriteMode", "static")
    spark.read.parquet(table).where("part = 1").write.mode("overwrite").options(**options).option(
        "header", True
    ).csv(sparkjobs.uri(base / "export"))
    t1 = time.perf_counter()
    read_s = read_back(spark, base / "table", expected_rows(rows))
    return t1 - t0, read_s, sparkjobs.digest(spark, base / "table")


def read_back(spark: Any, table: Path, rows: int) -> float:
    """The read half of the job: read the table, aggregate per partition; returns seconds."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    agg = (
        spark.read.parquet(sparkjobs.uri(table))
        .groupBy("part")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("amount").alias("total"))
        .collect()
    )
    assert sum(r["n"] for r in agg) == rows
    return time.perf_counter() - t0


def first_line(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("chmod:", "ExitCodeException", "IOException", "Exception:"):
        idx = text.find(marker)
        if idx >= 0:
            return text[idx:].splitlines()[0][:300]
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


def s3fs_mount(server: LocalS3, work: Path) -> contextlib.AbstractContextManager[Path]:
    """s3fs-fuse on the benchmark's bucket (the tests' helper: one copy of how to mount it)."""
    return mounts.s3fs_mount(server, BUCKET, work)


def measure(
    spark: Any,
    name: str,
    base: Callable[[], contextlib.AbstractContextManager[Path]],
    rows: int,
    repeats: int,
    committer: str,
    reference: tuple[int, int] | None,
    subdir: str,
    checksum_files: bool = True,
) -> tuple[Result, tuple[int, int] | None]:
    result = Result(name)
    table_digest = None
    try:
        with base() as root:
            for i in range(repeats):
                run_dir = root / subdir / f"run-{committer}-{i}"
                write_s, read_s, table_digest = job(
                    spark, run_dir, rows, committer, checksum_files=checksum_files
                )
                result.runs.append({"write_s": write_s, "read_s": read_s})
    except FileNotFoundError as exc:
        result.status, result.reason = "not available", str(exc)
        return result, None
    except Exception as exc:  # a client that cannot run the job is a finding, not a crash
        result.status, result.reason = "could not run", first_line(exc)
        return result, None
    best = min(result.runs, key=lambda r: r["write_s"] + r["read_s"])
    result.write_s, result.read_s = best["write_s"], best["read_s"]
    result.total_s = best["write_s"] + best["read_s"]
    result.rows = table_digest[0] if table_digest else None
    result.checksum_ok = reference is None or table_digest == reference
    return result, table_digest


def read_only(
    spark: Any,
    name: str,
    base: Callable[[], contextlib.AbstractContextManager[Path]],
    table: Path,
    rows: int,
) -> Result:
    result = Result(name)
    try:
        with base() as root:
            result.read_s = read_back(spark, root / table, rows)
    except FileNotFoundError as exc:
        result.status, result.reason = "not available", str(exc)
        return result
    except Exception as exc:
        result.status, result.reason = "could not run", first_line(exc)
        return result
    result.total_s, result.rows = result.read_s, rows
    return result


@dataclass
class Stage:
    """Where a Spark benchmark runs: its work directory, SeaweedFS, mounts and SparkSession."""

    work: Path
    server: LocalS3
    mounter: Mounter
    spark: Any


@contextlib.contextmanager
def stage(prefix: str, bucket: str, app: str) -> Iterator[Stage]:
    """A temporary work directory, one SeaweedFS holding ``bucket``, a :class:`Mounter` on
    it and a ``local[2]`` SparkSession (``bench.spark`` and ``bench.spark_ab``). On exit Spark
    is stopped, every mount unmounted, the server stopped and the directory removed."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with start_seaweedfs() as server:
            sparkjobs.s3_client(server).create_bucket(Bucket=bucket)
            mounter = Mounter(server, work)
            spark = sparkjobs.session(app, work / "spark-local", master="local[2]")
            try:
                yield Stage(work, server, mounter, spark)
            finally:
                spark.stop()
                mounter.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_list(text: str) -> set[int]:
    """``--server-cpus``: ``"1"``, ``"0,2"`` or ``"last"`` (the highest of the CPUs this process
    may use), CPUs this process may use."""
    allowed = os.sched_getaffinity(0)
    try:
        cpus = {max(allowed)} if text == "last" else {int(c) for c in text.split(",") if c.strip()}
    except ValueError:
        raise SystemExit(
            f"--server-cpus {text!r}: expected CPU numbers such as 1 or 2,3, or 'last'"
        ) from None
    if not cpus or not cpus < allowed:
        raise SystemExit(
            f"--server-cpus {text!r}: name some but not all of this machine's CPUs "
            f"{sorted(allowed)} (the job needs one left)"
        )
    return cpus


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` and of its descendants on ``cpus``; threads and processes
    they start later inherit it."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)
            for child in (task / "children").read_text().split():
                pin_tree(int(child), cpus)


def split_cpus(st: Stage, server_cpus: set[int]) -> str:
    """S3 off the job's cores, as on EKS where S3 is not on the node: SeaweedFS on
    ``server_cpus``; this process, Spark's JVM and everything started later (the mounts,
    the local-disk runs) on the other CPUs. Returns the split, for the report."""
    job_cpus = os.sched_getaffinity(0) - server_cpus
    pin_tree(os.getpid(), job_cpus)  # also pins SeaweedFS, a child: set it apart next
    pin_tree(st.server.process.pid, server_cpus)
    return f"SeaweedFS on CPU {_cpus(server_cpus)}, Spark and the mounts on CPU {_cpus(job_cpus)}"


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def utc_now() -> str:
    """Now, as the results' ``when`` (UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def render(meta: dict[str, Any], results: list[Result]) -> str:
    local = next((r for r in results if r.target == "local disk" and r.total_s), None)
    lines = [
        f"# Spark on the mount: {meta['rows']:,} rows, partitioned Parquet (16 partitions)",
        "",
        f"{meta['when']} - pyspark {meta['pyspark']}, {meta['java']}, local[{meta['cores']}], "
        f"SeaweedFS on loopback, best of {meta['repeats']}. Job: generate rows, write "
        "partitioned Parquet (FileOutputCommitter), read back, aggregate by partition."
        + ("" if meta.get("checksum_files", True) else " No `.crc` side files (every target).")
        + (f" {meta['cpus']}." if meta.get("cpus") else ""),
        "",
        "| target | status | write s | read+agg s | total s | vs local disk | result = local |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.target} | {r.status}: {r.reason} | | | | | |")
            continue
        assert r.read_s is not None and r.total_s is not None
        if r.write_s is None:  # read-only rows: compare with local disk's read
            ratio = f"{r.read_s / local.read_s:.2f}x (read)" if local and local.read_s else ""
            lines.append(f"| {r.target} | ok | | {r.read_s:.1f} | | {ratio} | |")
            continue
        ratio = f"{r.total_s / local.total_s:.2f}x" if local and local.total_s else ""
        lines.append(
            f"| {r.target} | ok | {r.write_s:.1f} | {r.read_s:.1f} | {r.total_s:.1f} | {ratio} "
            f"| {'yes' if r.checksum_ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--targets", default="local,zonemount,zonemount-v2,s3fs")
    parser.add_argument(
        "--no-checksum-files",
        action="store_true",
        help="every target's writes skip Hadoop's .crc side files (sparkjobs.NO_CHECKSUM_FILES)",
    )
    parser.add_argument(
        "--server-cpus",
        type=cpu_list,
        help="pin SeaweedFS to these CPUs and everything else to the rest (S3 off the job's "
        "cores, as on EKS), e.g. 1, or last",
    )
    parser.add_argument(
        "--zonemount-args",
        default="",
        help="extra 'zonemount mount' flags, e.g. '--metadata-ttl 60' (recorded in the report)",
    )
    args = parser.parse_args(argv)
    reason = sparkjobs.missing_requirements()
    if reason:
        print(f"bench.spark: {reason}", file=sys.stderr)
        return 2
    targets = args.targets.split(",")
    import pyspark

    results: list[Result] = []
    with stage("zonemount-spark-bench-", BUCKET, "zonemount-bench") as st:
        work, server, mounter, spark = st.work, st.server, st.mounter, st.spark
        cpus = split_cpus(st, args.server_cpus) if args.server_cpus else ""

        @contextlib.contextmanager
        def local() -> Iterator[Path]:
            path = work / "local-disk"
            path.mkdir(exist_ok=True)
            yield path

        @contextlib.contextmanager
        def zonemount() -> Iterator[Path]:
            yield mounter.mount(BUCKET, *sparkjobs.MOUNT_FLAGS, *args.zonemount_args.split())

        # Warm-up (JIT, class loading) on local disk, not timed.
        crc = not args.no_checksum_files
        job(spark, work / "warmup", min(args.rows, 200_000), "1", checksum_files=crc)
        reference: tuple[int, int] | None = None
        plan: list[tuple[str, str, Callable[[], Any], str]] = [
            ("local", "local disk", local, "1"),
            ("zonemount", "zonemount (committer v1)", zonemount, "1"),
            ("zonemount-v2", "zonemount (committer v2)", zonemount, "2"),
            ("s3fs", "s3fs-fuse 1.90", lambda: s3fs_mount(server, work), "1"),
        ]
        for key, name, base, committer in plan:
            if key not in targets:
                continue
            print(f">> {name} ...", flush=True)
            result, got = measure(
                spark, name, base, args.rows, args.repeats, committer, reference, key, crc
            )
            if key == "local" and got is not None:
                reference = got
            print(f"   {result.status} {result.total_s or ''} {result.reason}", flush=True)
            results.append(result)
        # Reading alone: the table zonemount wrote, through fresh mounts of each client
        # (s3fs-fuse cannot write it, but it can be asked to read it).
        written = next(
            (r for r in results if r.target.startswith("zonemount") and r.status == "ok"),
            None,
        )
        if written is not None and "s3fs" in targets:
            # Each target writes under its own directory (a failed overwrite deletes
            # its output path first), so this is the table zonemount wrote.
            v2 = "v2" in written.target
            key, committer = ("zonemount-v2", "2") if v2 else ("zonemount", "1")
            table = Path(key) / f"run-{committer}-0" / "table"
            readers = [
                ("read only: zonemount (fresh mount)", zonemount),
                ("read only: s3fs-fuse 1.90", lambda: s3fs_mount(server, work)),
            ]
            for name, base in readers:
                print(f">> {name} ...", flush=True)
                expected = expected_rows(args.rows)
                results.append(read_only(spark, name, base, table, expected))
    when = utc_now()
    meta = {
        "when": when,
        "rows": args.rows,
        "zonemount_args": args.zonemount_args,
        "checksum_files": not args.no_checksum_files,
        "cpus": cpus,
        "repeats": args.repeats,
        "pyspark": pyspark.__version__,
        "java": sparkjobs.java_version(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
    }
    markdown = render(meta, results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"spark-{when.replace(':', '').replace('-', '')}"
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {stem}.json, {stem}.md and {charts.chart(stem.with_suffix('.json'))}")
    return 0 if all(r.checksum_ok is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
