"""``zonemount reconcile | cp | sync | operator`` entry points (moto on loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from zonemount_cli.servers import LocalS3
from zonemount_operator.cli import cp_main, operator_main, reconcile_main, sync_main
from zonemount_operator.transfer import s3_client

from tests.operator.operator_testlib import unique_base

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_cp_then_sync(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s3: Any = moto_server.client()
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"a/{i}", Body=bytes([i]) * (i * 100))
    ep = ["--endpoint-url", moto_server.endpoint, "--no-progress", "--concurrency", "8"]
    assert cp_main([f"s3://{bucket}/a/", f"s3://{bucket}/b/", *ep]) == 0
    assert "cp: 20 copied, 0 up to date, 0 failed" in capsys.readouterr().err
    assert sync_main([f"s3://{bucket}/a/", f"s3://{bucket}/b/", *ep]) == 0
    assert "sync: 0 copied, 20 up to date, 0 failed" in capsys.readouterr().err
    got = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="b/")["Contents"]}
    assert got == {f"b/{i}": i * 100 for i in range(20)}


def test_cp_bad_input_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cp_main(["/local/path", "s3://bucket/x/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SRC '/local/path' does not exist" in err
    assert sync_main(["s3://b/x/", "s3://Bad_Bucket/", "--no-progress"]) == 2
    assert "does not name a valid bucket" in capsys.readouterr().err
    assert cp_main(["s3://bucket/a/", "s3://bucket/b/", "--concurrency", "0"]) == 2


def test_cp_missing_bucket_is_one_line(
    moto_server: LocalS3, s3_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cp_main(
        [
            "s3://no-such-bucket-zm/a/",
            "s3://no-such-bucket-zm/b/",
            "--endpoint-url",
            moto_server.endpoint,
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "NoSuchBucket" in err and "Traceback" not in err


def _docs(base: str, role: bool = False) -> str:
    return f"""
apiVersion: zonemount.io/v1alpha1
kind: S3MountClass
metadata: {{name: fast}}
spec:
  bucketRef: {{name: scratch, namespace: spark}}
  provisioning: Static
  claimRef: {{namespace: spark, name: fast}}
  mountOptions: {{allowDelete: true}}
---
apiVersion: zonemount.io/v1alpha1
kind: S3ExpressBucket
metadata: {{name: scratch, namespace: spark}}
spec:
  region: us-east-1
  availabilityZone: us-east-1d
  baseName: {base}
  lifecycle: {{expireAfterDays: 2}}
"""


def test_reconcile_file_once(
    moto_server: LocalS3, s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = unique_base()
    path = tmp_path / "crs.yaml"
    path.write_text(_docs(base))
    args = ["-f", str(path), "--endpoint-url", moto_server.endpoint]

    assert reconcile_main([*args, "--dry-run"]) == 0
    plan = list(yaml.safe_load_all(capsys.readouterr().out))
    assert plan[0]["plan"]["bucketName"] == f"{base}--use1-az4--x-s3"
    assert plan[1]["storageClass"]["parameters"]["bucketName"] == f"{base}--use1-az4--x-s3"
    s3: Any = moto_server.client()
    names = {b["Name"] for b in s3.list_directory_buckets().get("Buckets", [])}
    assert f"{base}--use1-az4--x-s3" not in names  # dry run created nothing

    assert reconcile_main(args) == 0
    out = capsys.readouterr()
    docs = list(yaml.safe_load_all(out.out))
    status = docs[0]["status"]
    assert status["bucketName"] == f"{base}--use1-az4--x-s3"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "BucketReady": "True",
        "AccessReady": "True",
        "ImportComplete": "True",
    }
    assert "policyArn" not in status  # None values are not printed
    assert f"created directory bucket {base}--use1-az4--x-s3" in out.err
    pv = docs[1]["persistentVolume"]
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0][
        "values"
    ] == ["us-east-1d"]


def test_reconcile_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reconcile_main(["-f", str(EXAMPLES / "invalid" / "bucket-both-zones.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set exactly one of spec.availabilityZone" in err
    assert reconcile_main(["-f", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    assert reconcile_main(["-f", str(tmp_path / "pod.yaml")]) == 2
    assert "expected S3ExpressBucket or S3MountClass documents, got Pod" in (
        capsys.readouterr().err
    )


def test_reconcile_refuses_an_endpoint_that_is_not_a_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: botocore's 'Invalid endpoint' ValueError escaped as a 37-line traceback."""
    bucket = str(EXAMPLES / "s3expressbucket-minimal.yaml")
    assert reconcile_main(["-f", bucket, "--endpoint-url", "notaurl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--endpoint-url 'notaurl' is not an http(s) URL: expected http://HOST:PORT" in err


def test_reconcile_malformed_yaml_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: a YAML error said only 'while parsing a block mapping'."""
    path = tmp_path / "bad.yaml"
    path.write_text("kind: S3ExpressBucket\nmetadata:\n  name: x\n spec: [\n")
    assert reconcile_main(["-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}:4:2: not valid YAML: expected <block end>" in err


def test_reconcile_type_errors_read_as_english(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: 'spec.lifecycle.expireAfterDays must be a int'."""
    path = tmp_path / "b.yaml"
    path.write_text(
        "apiVersion: zonemount.io/v1alpha1\nkind: S3ExpressBucket\n"
        "metadata: {name: scratch}\n"
        "spec: {region: us-east-1, availabilityZoneId: use1-az4, "
        "lifecycle: {expireAfterDays: soon}}\n"
    )
    assert reconcile_main(["-f", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "spec.lifecycle.expireAfterDays must be an integer, got 'soon'" in err
    path.write_text(
        path.read_text().replace("lifecycle: {expireAfterDays: soon}", "encryption: [x]")
    )
    assert reconcile_main(["-f", str(path), "--dry-run"]) == 2
    assert "spec.encryption must be a mapping (key: value lines), got ['x']" in (
        capsys.readouterr().err
    )


def test_reconcile_reports_unknown_zone(
    moto_server: LocalS3, s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "apiVersion: zonemount.io/v1alpha1\nkind: S3ExpressBucket\n"
        "metadata: {name: zz, namespace: x}\n"
        "spec: {region: us-east-1, availabilityZoneId: use1-az9}\n"
    )
    assert reconcile_main(["-f", str(path), "--endpoint-url", moto_server.endpoint]) == 1
    out = capsys.readouterr()
    assert "not Ready: UnknownAvailabilityZone" in out.err
    assert yaml.safe_load(out.out)["status"]["conditions"][0]["reason"] == (
        "UnknownAvailabilityZone"
    )


def test_dry_run_plans_the_bucket_the_real_run_reconciles(
    moto_server: LocalS3, s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: --dry-run had its own planning path, which ignored the tenancy policy: with
    an adopt entry it planned the derived bucket name while the real run adopts the named one."""
    legacy = f"{unique_base()}--use1-az4--x-s3"
    tenancy = tmp_path / "tenancy.yaml"
    tenancy.write_text(f"adopt:\n  - {{namespace: x, name: zz, bucket: {legacy}}}\n")
    path = tmp_path / "b.yaml"
    path.write_text(
        "apiVersion: zonemount.io/v1alpha1\nkind: S3ExpressBucket\n"
        "metadata: {name: zz, namespace: x}\n"
        "spec: {region: us-east-1, availabilityZoneId: use1-az4}\n"
    )
    args = ["-f", str(path), "--endpoint-url", moto_server.endpoint]
    args += ["--tenancy-config", str(tenancy)]
    assert reconcile_main([*args, "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["plan"]["bucketName"] == legacy
    assert reconcile_main(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["status"]["bucketName"] == legacy


def test_a_class_whose_bucket_failed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: when the file's S3ExpressBucket failed (AWS unreachable), its S3MountClass
    said the bucket "is not in this file" and exited 2 (bad input) for a good file."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = tmp_path / "crs.yaml"
    path.write_text(_docs(unique_base()))
    unreachable = ["--endpoint-url", "http://127.0.0.1:9"]  # the discard port: nothing listens
    assert reconcile_main(["-f", str(path), *unreachable, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "is not in this file" not in err
    assert "S3MountClass/fast: S3ExpressBucket spark/scratch failed above: " in err


def test_operator_flags_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        operator_main(["--namespace", "a", "--all-namespaces"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_reconcile_runs_the_import(
    moto_server: LocalS3,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3: Any = moto_server.client()
    for i in range(7):
        s3.put_object(Bucket=bucket, Key=f"landing/{i}.csv", Body=b"a,b\n" * (i + 1))
    base = unique_base()
    path = tmp_path / "b.yaml"
    path.write_text(
        "apiVersion: zonemount.io/v1alpha1\nkind: S3ExpressBucket\n"
        "metadata: {name: imp, namespace: x}\n"
        f"spec: {{region: us-east-1, availabilityZoneId: use1-az6, baseName: {base},\n"
        f"  import: {{source: 's3://{bucket}/landing/'}}}}\n"
    )
    assert reconcile_main(["-f", str(path), "--endpoint-url", moto_server.endpoint]) == 0
    status = yaml.safe_load(capsys.readouterr().out)["status"]
    assert status["import"]["phase"] == "Complete"
    assert status["import"]["objectsCopied"] == 7
    assert {c["type"]: c["reason"] for c in status["conditions"]}["ImportComplete"] == (
        "ImportComplete"
    )
    express = s3_client(moto_server.endpoint, "us-east-1")  # no CreateSession on moto
    keys = express.list_objects_v2(Bucket=f"{base}--use1-az6--x-s3")["KeyCount"]
    assert keys == 7


def test_operator_without_a_cluster_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: a traceback retried every 60 s (no credentials), or a FileNotFoundError
    traceback (KUBECONFIG names a missing file), instead of one line and exit 1."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert operator_main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        "no Kubernetes credentials: run in a pod with a service account, or point KUBECONFIG" in err
    )
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    assert operator_main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot read the kubeconfig {tmp_path / 'missing-kubeconfig'}" in err
