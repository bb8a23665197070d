"""Real Spark (pyspark, local mode, Java 17) reads and commits output through zonemount mounts.

Every job runs twice, on a zonemount mount of a SeaweedFS bucket and on local disk, and the
two results must agree: same row count, same order-independent content checksum, same table
layout (part files, ``.crc`` side files, ``_SUCCESS``). Each test runs on a general-purpose
bucket and on a directory bucket. Nothing of a job's scratch state (``_temporary``,
``.spark-staging-*``, multipart uploads) may be left in the bucket afterwards.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import sparkjobs
from .conftest import SparkMount

pytestmark = [
    pytest.mark.spark,
    # pyspark (3.5, rdd._load_from_socket) leaves the loopback socket that collect() reads to
    # the garbage collector ("The socket will be automatically closed when garbage-collected"),
    # so an unclosed-socket ResourceWarning surfaces in whichever test the GC runs; only this
    # tier calls pyspark, so only this tier ignores unclosed IPv4 loopback TCP sockets.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <socket.socket fd=\d+, family=2, type=1, proto=6, "
        r"laddr=\('127\.0\.0\.1':pytest.PytestUnraisableExceptionWarning"
    ),
]
ROWS = 20_000


def frame(spark: Any, rows: int = ROWS, seed: int = 0) -> Any:
    return spark.range(0, rows, numPartitions=2).selectExpr(
        "id",
        "cast(id % 5 as int) as part",
        f"cast((id * 7 + {seed}) % 1000 as double) / 3 as x",
        f"concat('row-', id, '-', {seed}) as s",
    )


def twin(mount: SparkMount, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(directory on the mount, directory on local disk) for one job."""
    remote = mount.path / f"{name}-{uuid.uuid4().hex[:6]}"
    local = tmp_path / "local" / name
    local.parent.mkdir(parents=True, exist_ok=True)
    return remote, local


def assert_same_table(spark: Any, remote: Path, local: Path) -> tuple[int, int]:
    got, want = sparkjobs.digest(spark, remote), sparkjobs.digest(spark, local)
    assert got == want, f"{remote}: (rows, checksum) {got} differ from local disk {want}"
    assert sparkjobs.layout(remote) == sparkjobs.layout(local)
    return got


def assert_clean(mount: SparkMount, remote: Path, *, checksum_files: bool = True) -> None:
    """The committed table is all that is left: no scratch state on the mount or in the bucket;
    each part file has its ``.crc`` side file, or (``checksum_files=False``) none has."""
    prefix = str(remote.relative_to(mount.path)) + "/"
    keys = sparkjobs.bucket_keys(mount.s3, mount.bucket, prefix)
    assert keys, f"nothing under {prefix} in the bucket"
    leftovers = [k for k in keys if "_temporary" in k or ".spark-staging" in k]
    assert leftovers == []
    assert not (remote / "_temporary").exists()
    assert sparkjobs.pending_uploads(mount.s3, mount.bucket) == []
    # Each data file has its checksum side file, and the bucket holds exactly what is listed.
    seen = sorted(str(p.relative_to(mount.path)) for p in remote.rglob("*") if p.is_file())
    assert sorted(keys) == seen
    if not checksum_files:
        assert [k for k in keys if k.endswith(".crc")] == []
        return
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name.startswith("part-"):
            assert key.rsplit("/", 1)[0] + f"/.{name}.crc" in keys, f"no .crc for {key}"


def run_both(
    spark: Any,
    mount: SparkMount,
    tmp_path: Path,
    name: str,
    job: Callable[[Path], None],
    *,
    checksum_files: bool = True,
) -> tuple[Path, tuple[int, int]]:
    remote, local = twin(mount, tmp_path, name)
    job(local)
    job(remote)
    result = assert_same_table(spark, remote, local)
    assert (remote / "_SUCCESS").is_file()
    assert_clean(mount, remote, checksum_files=checksum_files)
    return remote, result


def test_read_csv_and_parquet_written_by_another_client(
    spark: Any, mount: SparkMount, tmp_path: Path
) -> None:
    """Objects put by boto3 are read by Spark through the mount exactly as from local disk."""
    prefix = f"input-{uuid.uuid4().hex[:6]}"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "name", "score"])
    for i in range(5000):
        writer.writerow([i, f"name {i}, quoted", (i * 37) % 101])
    local_in = tmp_path / "input"
    (local_in / "csv").mkdir(parents=True)
    for i, chunk in enumerate((buf.getvalue(),)):
        (local_in / "csv" / f"part-{i}.csv").write_text(chunk)
        mount.s3.put_object(Bucket=mount.bucket, Key=f"{prefix}/csv/part-{i}.csv", Body=chunk)
    # Parquet produced by Spark on local disk, then uploaded object by object.
    frame(spark, seed=3).write.parquet(sparkjobs.uri(local_in / "parquet"))
    for path in sorted((local_in / "parquet").iterdir()):
        if path.name.endswith(".parquet"):
            mount.s3.put_object(
                Bucket=mount.bucket, Key=f"{prefix}/parquet/{path.name}", Body=path.read_bytes()
            )
    remote_in = mount.path / prefix

    def read_csv(base: Path) -> Any:
        return (
            spark.read.option("header", True)
            .option("inferSchema", True)
            .csv(sparkjobs.uri(base / "csv"))
        )

    got = read_csv(remote_in)
    want = read_csv(local_in)
    assert got.schema == want.schema
    assert got.count() == want.count() == 5000
    assert sorted(got.collect()) == sorted(want.collect())
    got_pq = sparkjobs.digest(spark, remote_in / "parquet")
    assert got_pq == sparkjobs.digest(spark, local_in / "parquet")
    assert got_pq[0] == ROWS


@pytest.mark.parametrize("algorithm", ["1", "2"])
def test_write_parquet_overwrite_with_committer(
    spark: Any, mount: SparkMount, tmp_path: Path, algorithm: str
) -> None:
    """FileOutputCommitter v1 and v2, mode("overwrite") onto an existing table."""

    def job(base: Path) -> None:
        for seed in (1, 2):  # the second run replaces the first table
            frame(spark, seed=seed).write.mode("overwrite").option(
                "mapreduce.fileoutputcommitter.algorithm.version", algorithm
            ).parquet(sparkjobs.uri(base))

    remote, (rows, _) = run_both(spark, mount, tmp_path, f"overwrite-v{algorithm}", job)
    assert rows == ROWS
    suffixes = spark.read.parquet(sparkjobs.uri(remote)).selectExpr("substring_index(s, '-', -1)")
    assert {r[0] for r in suffixes.distinct().collect()} == {"2"}  # only the second run's rows


def test_write_parquet_append(spark: Any, mount: SparkMount, tmp_path: Path) -> None:
    def job(base: Path) -> None:
        frame(spark, seed=1).write.mode("overwrite").parquet(sparkjobs.uri(base))
        frame(spark, rows=ROWS // 2, seed=2).write.mode("append").parquet(sparkjobs.uri(base))

    _, (rows, _) = run_both(spark, mount, tmp_path, "append", job)
    assert rows == ROWS + ROWS // 2


def test_dynamic_partition_overwrite(spark: Any, mount: SparkMount, tmp_path: Path) -> None:
    """partitionOverwriteMode=dynamic replaces only the partitions the job writes."""
    from pyspark.sql import functions as F

    def job(base: Path) -> None:
        frame(spark, seed=1).write.partitionBy("part").mode("overwrite").parquet(
            sparkjobs.uri(base)
        )
        frame(spark, seed=9).where(F.col("part").isin(1, 3)).write.partitionBy("part").mode(
            "overwrite"
        ).option("partitionOverwriteMode", "dynamic").parquet(sparkjobs.uri(base))

    remote, (rows, _) = run_both(spark, mount, tmp_path, "dynamic", job)
    assert rows == ROWS
    assert sorted(p.name for p in remote.iterdir() if p.is_dir()) == [f"part={i}" for i in range(5)]
    df = spark.read.parquet(sparkjobs.uri(remote))
    seeds = {
        r["part"]: r["s"].rsplit("-", 1)[1]
        for r in df.groupBy("part").agg(F.max("s").alias("s")).collect()
    }
    assert seeds == {0: "1", 1: "9", 2: "1", 3: "9", 4: "1"}


@pytest.mark.parametrize("algorithm", ["1", "2"])
def test_writes_without_checksum_side_files(
    spark: Any, mount: SparkMount, tmp_path: Path, algorithm: str
) -> None:
    """docs/spark.md's "Checksum side files": a write given sparkjobs.NO_CHECKSUM_FILES as
    options goes through RawLocalFileSystem (no ``.crc`` beside any file, so half the creates,
    renames and deletes on the mount) and commits the same table as on local disk, with both
    committers and a dynamic partition overwrite; the session's other writes keep theirs."""
    from pyspark.sql import functions as F

    options = {
        "mapreduce.fileoutputcommitter.algorithm.version": algorithm,
        **sparkjobs.NO_CHECKSUM_FILES,
    }

    def job(base: Path) -> None:
        frame(spark, seed=1).write.partitionBy("part").mode("overwrite").options(**options).parquet(
            sparkjobs.uri(base)
        )
        frame(spark, seed=9).where(F.col("part").isin(1, 3)).write.partitionBy("part").mode(
            "overwrite"
        ).option("partitionOverwriteMode", "dynamic").options(**options).parquet(
            sparkjobs.uri(base)
        )

    name = f"no-crc-v{algorithm}"
    _, (rows, _) = run_both(spark, mount, tmp_path, name, job, checksum_files=False)
    assert rows == ROWS
    # Scoped to those writes: the same session's next write without the options has its .crc.
    _, (rows, _) = run_both(
        spark,
        mount,
        tmp_path,
        f"{name}-then-crc",
        lambda base: frame(spark).write.parquet(sparkjobs.uri(base)),
    )
    assert rows == ROWS


def test_failed_task_attempt_leaves_no_output(
    spark: Any, mount: SparkMount, tmp_path: Path
) -> None:
    """A task attempt that dies mid-write is retried (local[2,2]); its output never lands."""
    from pyspark import TaskContext
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    markers = tmp_path / "markers"
    markers.mkdir()
    last_of_first_partition = ROWS // 2 - 1

    def flaky(value: int, marker_dir: str) -> int:
        ctx = TaskContext.get()
        assert ctx is not None
        if value == last_of_first_partition and ctx.attemptNumber() == 0:
            Path(marker_dir, f"failed-{ctx.partitionId()}-{ctx.taskAttemptId()}").touch()
            raise RuntimeError("injected failure of the first attempt")
        return value

    def job(base: Path) -> None:
        marker_dir = str(markers / base.name)
        os.makedirs(marker_dir)
        udf = F.udf(lambda v: flaky(v, marker_dir), LongType())
        frame(spark, seed=4).withColumn("id", udf("id")).write.mode("overwrite").parquet(
            sparkjobs.uri(base)
        )

    remote, (rows, _) = run_both(spark, mount, tmp_path, "failed-attempt", job)
    assert rows == ROWS  # no duplicate rows from the failed attempt
    assert len(os.listdir(markers / remote.name)) == 1, "the failure was not injected"
    ids = spark.read.parquet(sparkjobs.uri(remote)).select(F.countDistinct("id")).first()[0]
    assert ids == ROWS
    assert len([p for p in os.listdir(remote) if p.startswith("part-")]) == 2


def test_hadoop_local_filesystem_primitives(spark: Any, mount: SparkMount) -> None:
    """What Hadoop's checksummed local file system does for the committer, one call at a time."""
    jvm = spark.sparkContext._jvm
    hadoop_fs = jvm.org.apache.hadoop.fs
    fs = hadoop_fs.FileSystem.getLocal(spark.sparkContext._jsc.hadoopConfiguration())
    perm = hadoop_fs.permission.FsPermission

    def path(*parts: str) -> Any:
        return hadoop_fs.Path(sparkjobs.uri(mount.path.joinpath(*parts)))

    base = f"hadoop-{uuid.uuid4().hex[:6]}"
    attempt = path(base, "_temporary", "0", "_temporary", "attempt_0")
    assert fs.mkdirs(attempt, perm(0o750))  # mkdir -p, then chmod (a forked chmod) of the leaf
    local_attempt = mount.path / base / "_temporary" / "0" / "_temporary" / "attempt_0"
    assert os.stat(local_attempt).st_mode & 0o777 == 0o750
    out = fs.create(hadoop_fs.Path(attempt, "part-0"), perm(0o640), True, 4096, 1, 1 << 20, None)
    out.write(bytearray(b"hello, committer\n" * 1000))
    out.close()
    assert sorted(os.listdir(local_attempt)) == [".part-0.crc", "part-0"]
    assert os.stat(local_attempt / "part-0").st_mode & 0o777 == 0o640
    fs.setPermission(hadoop_fs.Path(attempt, "part-0"), perm(0o600))
    assert os.stat(local_attempt / "part-0").st_mode & 0o777 == 0o600
    # Task commit (v1): the attempt directory is renamed; job commit: its files move up.
    task = path(base, "_temporary", "0", "task_0")
    assert fs.rename(attempt, task)
    listing = [s.getPath().getName() for s in fs.listStatus(path(base, "_temporary", "0"))]
    # The emptied "_temporary" parent may or may not be listed (POSIX keeps it, S3 has no key
    # for it); the committer lists only task_* entries.
    assert [n for n in listing if not n.startswith("_")] == ["task_0"]
    assert fs.rename(hadoop_fs.Path(task, "part-0"), path(base, "part-0"))
    assert fs.delete(path(base, "_temporary"), True)
    assert sorted(os.listdir(mount.path / base)) == [".part-0.crc", "part-0"]

    def read(name: str) -> bytes:
        stream = fs.open(path(base, name))
        try:
            return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    assert read("part-0") == b"hello, committer\n" * 1000
    # The .crc side file is really checked: same-length different bytes are detected.
    (mount.path / base / "part-0").write_bytes(b"HELLO, committer\n" * 1000)
    with pytest.raises(Exception, match=r"ChecksumException|Checksum error"):
        read("part-0")
    keys = sparkjobs.bucket_keys(mount.s3, mount.bucket, base + "/")
    assert sorted(keys) == [f"{base}/.part-0.crc", f"{base}/part-0"]
