"""Walk the real e2e/run.sh from preflight to teardown without Docker.

tests/e2e/fake_cluster.py stands in for docker, kind, kubectl and helm (see its docstring);
AWS is a real moto server, and run.sh's moto_ctl.py calls run for real against it. This
catches what static checks cannot: a variable unset under `set -u`, a pipeline failing under
`pipefail`, a step order that does not hold together, a cleanup that does not run. A second
run makes a pod fail and checks the failure is reported with its step, diagnostics are
collected and the cluster is still deleted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_cluster.py")


SPARK_APP = """\
apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: e2e-pi
  namespace: spark
spec:
  type: Python
  mode: cluster
"""


def examples_with_spark(tmp_path: Path) -> Path:
    """The repository's examples plus a SparkApplication (exercises run.sh's Spark step)."""
    examples = tmp_path / "examples"
    examples.mkdir()
    for path in (REPO / "examples").glob("*.yaml"):
        (examples / path.name).write_text(path.read_text())
    (examples / "zz-spark-app.yaml").write_text(SPARK_APP)
    return examples


def walk(
    tmp_path: Path, moto_endpoint: str, **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm"):
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {tool} "$@"\n')
        wrapper.chmod(0o755)
    state = tmp_path / "state.json"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HELM": str(bin_dir / "helm"),
        "FAKE_STATE": str(state),
        "MOTO_ENDPOINT": moto_endpoint,
        "E2E_ARTIFACTS": str(tmp_path / "artifacts"),
        **extra,
    }
    result = subprocess.run(
        ["bash", str(REPO / "e2e" / "run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    calls: list[list[str]] = json.loads(state.read_text())["calls"] if state.exists() else []
    return result, calls


def called(calls: list[list[str]], *prefix: str) -> bool:
    return any(c[: len(prefix)] == list(prefix) for c in calls)


@pytest.fixture
def fresh_moto(moto_server: Any) -> str:
    """The shared moto server without the e2e's bucket (each walk creates and deletes it)."""
    client = moto_server.client()
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    assert "e2e-scratch--use1-az4--x-s3" not in names
    endpoint: str = moto_server.endpoint
    return endpoint


def test_run_sh_walks_every_step_and_cleans_up(tmp_path: Path, fresh_moto: str) -> None:
    examples = examples_with_spark(tmp_path)
    result, calls = walk(tmp_path, fresh_moto, E2E_EXAMPLES=str(examples), FAKE_SPARK="1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "SparkApplication spark/e2e-pi COMPLETED" in result.stderr
    log = result.stderr
    steps = [line.split("== step ", 1)[1] for line in log.splitlines() if "== step " in line]
    assert [s.split(":")[0] for s in steps] == [str(i) for i in range(1, 15)], steps
    assert "PASSED: all 14 steps" in log
    assert "bucket e2e-scratch--use1-az4--x-s3 in us-east-1d" in log
    # done for real against moto by moto_ctl.py: roles, an import source, a bucket by name
    assert "created role e2e-spark" in result.stdout
    assert "seeded s3://warehouse-landing/tables/events/ with 3 objects" in result.stdout
    assert "created bucket logs--use1-az4--x-s3" in result.stdout
    # the order that matters
    order = [c[0] + " " + " ".join(c[1:3]) for c in calls]
    assert order.index("kind create cluster") < order.index("helm upgrade --install")
    assert called(calls, "kubectl", "label", "node", "zonemount-e2e-worker", "--overwrite")
    assert called(calls, "helm", "uninstall", "zonemount")
    assert calls[-1][:3] == ["kind", "delete", "cluster"], "the cluster is deleted last"
    examples = [c for c in calls if c[:2] == ["kubectl", "apply"] and "/examples/" in c[-1]]
    kinds = re.compile(r"^kind: (S3ExpressBucket|S3MountClass|SparkApplication)$", re.M)
    expected = [p for p in (tmp_path / "examples").glob("*.yaml") if kinds.search(p.read_text())]
    assert len(examples) == len(expected), "every example with zonemount or Spark objects applied"
    deleted = [c for c in calls if c[:2] == ["kubectl", "delete"] and "-f" in c]
    assert len(deleted) == len(expected), "and deleted again before helm uninstall"


def test_run_sh_reports_a_failing_pod_with_its_step_and_cleans_up(
    tmp_path: Path, fresh_moto: str
) -> None:
    result, calls = walk(tmp_path, fresh_moto, FAKE_FAIL="static-reader")
    assert result.returncode == 1
    step = "FAILED in step 9 (static volume: write in one pod, read in another)"
    assert f"{step}: pod zonemount-e2e/static-reader failed" in result.stderr
    assert (tmp_path / "artifacts" / "nodes.txt").exists(), "diagnostics collected"
    assert calls[-1][:3] == ["kind", "delete", "cluster"]
    # the bucket the walk created is left for the cleanup of a real cluster; remove it here
    import boto3
    from botocore.config import Config

    # (a Config, not os.environ: the environment of this process is shared by later tests)
    s3: Any = boto3.client(
        "s3",
        endpoint_url=fresh_moto,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
        config=Config(s3={"disable_s3_express_session_auth": True}),
    )
    for item in s3.list_objects_v2(Bucket="e2e-scratch--use1-az4--x-s3").get("Contents", []):
        s3.delete_object(Bucket="e2e-scratch--use1-az4--x-s3", Key=item["Key"])
    s3.delete_bucket(Bucket="e2e-scratch--use1-az4--x-s3")
