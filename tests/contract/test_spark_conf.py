"""``zonemount spark-conf`` prints settings every part of zonemount accepts, and the Spark tier
runs with them (tests/spark/sparkjobs.py imports the same values)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from zonemount_cli import spark_conf
from zonemount_csi import mount_options as pv_options

from tests.spark import sparkjobs

pytestmark = pytest.mark.unit
ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ZONEMOUNT, "spark-conf", *args], capture_output=True, text=True, timeout=60
    )


def test_the_spark_tier_runs_with_what_the_command_prints() -> None:
    conf = json.loads(_run("--json").stdout)
    assert tuple(conf["mountFlags"]) == sparkjobs.MOUNT_FLAGS
    assert conf["writeOptions"] == sparkjobs.NO_CHECKSUM_FILES
    assert sparkjobs.MOUNT_SETTINGS.items() <= conf["sparkDefaults"].items()


@pytest.mark.parametrize(
    ("args", "kind", "version"),
    [
        ((), "general-purpose", "1"),
        (("--fast-commit",), "general-purpose", "2"),
        (("--bucket", "spark-data"), "general-purpose", "1"),
        (("--bucket", "spark--use1-az4--x-s3", "--fast-commit"), "directory", "1"),
        (("--bucket-kind", "directory"), "directory", "1"),
    ],
)
def test_committer_by_bucket_kind(args: tuple[str, ...], kind: str, version: str) -> None:
    """docs/spark.md, "Committer settings by bucket type": v1 unless asked for speed on a
    general-purpose bucket (on directory buckets RenameObject makes v1's second rename cheap)."""
    conf = json.loads(_run(*args, "--json").stdout)
    assert conf["bucketKind"] == kind
    assert conf["sparkDefaults"][spark_conf.COMMITTER_KEY] == version
    text = _run(*args).stdout
    assert f"{spark_conf.COMMITTER_KEY} {version}\n" in text
    assert " ".join(spark_conf.MOUNT_FLAGS) in text.splitlines()


def test_the_mount_options_are_ones_a_pv_and_an_s3mountclass_accept() -> None:
    """The PV form goes through the CSI node's allow-list; the S3MountClass form names fields
    of the CRD's ``spec.mountOptions`` schema."""
    conf = spark_conf.settings("general-purpose", fast=False).as_json()
    parsed = pv_options.parse(conf["persistentVolumeMountOptions"])  # type: ignore[arg-type]
    assert list(parsed.to_argv()) == list(spark_conf.MOUNT_FLAGS)
    crd = yaml.safe_load((ROOT / "crds/s3mountclasses.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["spec"]["properties"]["mountOptions"]["properties"]
    for name, value in conf["s3MountClassMountOptions"].items():  # type: ignore[attr-defined]
        assert fields[name]["type"] == "boolean" and value is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bucket", "Bad_Name"), "bucket name 'Bad_Name' is invalid"),
        (("--bucket-kind", "hdfs"), "invalid choice: 'hdfs'"),
        (("--bucket", "a-bucket", "--bucket-kind", "directory"), "not allowed with argument"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr
