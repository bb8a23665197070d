"""Spark helpers shared by the Spark tier (tests/spark) and its benchmark (bench/spark.py).

Owns: building the one local-mode SparkSession a module uses (settings recommended for mounts
in docs/spark.md), mounting SeaweedFS buckets with ``zonemount mount`` (general-purpose and
directory buckets), and the order-independent table digest used to compare a job's output on
the mount with the same job's output on local disk.

Invariants: Spark runs offline (no ``spark.jars.packages``, nothing downloaded); every path
handed to Spark is a ``file://`` path (a mount is a plain local directory to Spark); the
SparkSession's scratch space (``spark.local.dir``) is on local disk, never on a mount.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from zonemount_cli import spark_conf
from zonemount_cli.servers import LocalS3

GP_BUCKET = "spark-gp"
EXPRESS_BUCKET = "spark--use1-az4--x-s3"
# What docs/spark.md recommends and ``zonemount spark-conf`` prints: the tier runs with
# exactly the product's values (zonemount_cli.spark_conf), not copies of them.
MOUNT_FLAGS = spark_conf.MOUNT_FLAGS
MOUNT_SETTINGS: dict[str, str] = spark_conf.SESSION_SETTINGS
NO_CHECKSUM_FILES: dict[str, str] = spark_conf.NO_CHECKSUM_FILES


def missing_requirements() -> str | None:
    """Why Spark cannot run here (None when it can)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed: run 'make setup' (pyproject's dev extra lists it)"
    java = shutil.which("java", path=os.environ.get("JAVA_HOME", "") + "/bin:" + os.environ["PATH"])
    if java is None:
        return "java is not installed: run 'make setup' (apt package openjdk-17-jre-headless)"
    return None


def java_version() -> str:
    proc = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0] if first else "unknown"


def session(
    app: str, local_dir: Path, *, master: str = "local[2,2]", extra: dict[str, str] | None = None
) -> Any:
    """A local-mode SparkSession: 2 cores, at most 2 attempts per task, no UI, scratch on disk."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    local_dir.mkdir(parents=True, exist_ok=True)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.local.dir", str(local_dir))
        .config("spark.sql.warehouse.dir", str(local_dir / "warehouse"))
        .config("spark.driver.memory", "1g")
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={local_dir}")
    )
    for key, value in {**MOUNT_SETTINGS, **(extra or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def uri(path: Path) -> str:
    return "file://" + str(path)


def digest(spark: Any, path: Path) -> tuple[int, int]:
    """(row count, order-independent content checksum) of the Parquet table at ``path``."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(uri(path))
    cols = sorted(df.columns)
    row = df.select(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.pmod(F.xxhash64(*[F.col(c) for c in cols]), F.lit(1_000_000_007))).alias("h"),
    ).first()
    return int(row["n"]), int(row["h"] or 0)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def layout(root: Path) -> list[str]:
    """Every file under ``root``, relative, with job UUIDs masked: the committed table's shape."""
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out.extend(_UUID.sub("<uuid>", str(rel / name)) for name in files)
    return sorted(out)


def s3_client(server: LocalS3) -> Any:
    """A boto3 client for the server that also handles directory-bucket names (no CreateSession)."""
    import boto3
    from botocore.config import Config

    env = server.env()
    s3_options: Any = {"addressing_style": "path", "disable_s3_express_session_auth": True}
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3=s3_options),
    )


def bucket_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def pending_uploads(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
