"""Large imports as an Indexed Job (issue 17): the manifest the operator writes, and the real
operator (kopf + kmock + moto) creating it, re-creating it when it fails, and aggregating the
shards' progress into ``status.import`` while real ``zonemount sync`` worker processes run the
Job's own command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from kopf.testing import KopfRunner
from zonemount_cli.servers import LocalS3
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.handlers import registry
from zonemount_operator.importjob import (
    LABEL_UID,
    ImportJobSettings,
    aggregate,
    job_name,
    job_state,
    render_import_job,
)
from zonemount_operator.kube import S3EXPRESSBUCKETS, ResourceRef
from zonemount_operator.spec import parse_bucket

from tests.operator.operator_testlib import KubeApiThread, express_bucket_cr, unique_base
from tests.operator.test_kopf_runtime import kube, operator_env, wait_for

__all__ = ["operator_env"]  # the fixture, imported for this module's tests
BIN = Path(sys.executable).parent
PODS = ResourceRef("", "v1", "pods", namespaced=True)


def _spec(workers: int = 4) -> Any:
    return parse_bucket(
        "big",
        {
            "region": "us-east-1",
            "availabilityZoneId": "use1-az4",
            "import": {"source": "s3://landing/mp3/", "concurrency": 16, "workers": workers},
        },
    )


@pytest.mark.unit
def test_job_manifest_is_a_valid_indexed_job() -> None:
    settings = ImportJobSettings(image="zonemount:1.2", namespace="zm", service_account="imp")
    job = render_import_job(
        "big", "team-a", "0123abcd-ffff", _spec(), "big--use1-az4--x-s3", settings
    )
    kubernetes_validate.validate(job, "1.30.0", strict=True)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] >= 1
    assert job["metadata"]["namespace"] == "zm"
    assert job["metadata"]["labels"][LABEL_UID] == "0123abcd-ffff"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "imp" and pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["zonemount"]
    args = container["args"]
    assert args[:3] == ["sync", "s3://landing/mp3/", "s3://big--use1-az4--x-s3/mp3/"]
    assert args[args.index("--shard") + 1] == "auto/4"
    assert args[args.index("--manifest") + 1] == (
        "s3://big--use1-az4--x-s3/.zonemount/imports/0123abcd-ffff/"
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.unit
def test_admin_cap_on_workers_and_job_names() -> None:
    job = render_import_job(
        "big", "ns", "u" * 36, _spec(500), "b--use1-az4--x-s3", ImportJobSettings(max_workers=8)
    )
    assert job["spec"]["completions"] == 8
    assert len(job_name("x" * 253, "f" * 36)) <= 63


@pytest.mark.unit
def test_aggregate_and_job_state() -> None:
    docs = [
        {"objectsListed": 10, "objectsCopied": 6, "objectsSkipped": 4, "bytesCopied": 600,
         "bytesListed": 1000, "elapsedSeconds": 2.0, "final": True, "complete": True},
        {"objectsListed": 5, "objectsCopied": 1, "objectsFailed": 1, "bytesListed": 50,
         "elapsedSeconds": 1.0, "final": False, "firstError": "s3://a/b: SlowDown"},
    ]  # fmt: skip
    imp = aggregate("s3://a/", 3, docs, "2026-01-01T00:00:00Z", "job")
    assert (imp["objectsTotal"], imp["objectsCopied"], imp["objectsFailed"]) == (15, 7, 1)
    assert (imp["shardsTotal"], imp["shardsComplete"], imp["bytesPerSecond"]) == (3, 1, 300)
    assert imp["message"] == "shard error: s3://a/b: SlowDown"
    assert job_state(None) == "Missing"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == (
        "Failed"
    )
    assert job_state({"status": {"active": 2}}) == "Running"
    # a Job being deleted (waiting for its pods) is neither re-created nor deleted again
    deleting = {"metadata": {"deletionTimestamp": "2026-12-03T19:00:00Z"}}
    assert (
        job_state(deleting | {"status": {"conditions": [{"type": "Failed", "status": "True"}]}})
        == "Deleting"
    )


def _set_job_condition(api: KubeApiThread, name: str, namespace: str, kind: str) -> None:
    from zonemount_operator.importjob import JOBS

    cond = {"type": kind, "status": "True", "reason": "Test", "message": "set by the test"}
    kube(api, "patch", JOBS, name, {"status": {"conditions": [cond]}}, namespace, "status")


def test_operator_runs_a_large_import_as_an_indexed_job(
    operator_env: None,
    kube_api: KubeApiThread,
    moto_server: LocalS3,
    admin: Boto3BucketAdmin,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from zonemount_operator import handlers, importjob

    monkeypatch.setenv("ZONEMOUNT_IMPORT_NAMESPACE", "zonemount-system")
    monkeypatch.setenv("ZONEMOUNT_IMPORT_IMAGE", "zonemount:test")
    monkeypatch.setattr(handlers, "PROGRESS_INTERVAL", 0.0)
    monkeypatch.setattr(importjob, "RECREATE_LIMIT", 3)
    (tmp_path / "tenancy.yaml").write_text(f"importSources: ['s3://{bucket}/in/']\n")
    s3 = admin.s3("us-east-1")
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=f"in/f{i:03d}", Body=b"y" * (10 + i))
    base = unique_base()
    cr = express_bucket_cr(
        "big", base, {"import": {"source": f"s3://{bucket}/in/", "concurrency": 4, "workers": 3}}
    )

    def current() -> dict[str, Any]:
        return dict(kube_api.object("s3expressbuckets", "big", "spark") or {})

    args = ["run", "--standalone", "--all-namespaces", "--verbose"]
    with KopfRunner(args, registry=registry, timeout=60):
        kube(kube_api, "create", S3EXPRESSBUCKETS, cr, "spark")
        uid = wait_for("the CR's uid", lambda: current().get("metadata", {}).get("uid"))
        name = job_name("big", uid)
        first = wait_for("the Job", lambda: kube_api.object("jobs", name, "zonemount-system"))
        kubernetes_validate.validate(
            {k: v for k, v in first.items() if k in {"apiVersion", "kind", "metadata", "spec"}}
            | {"metadata": {k: first["metadata"][k] for k in ("name", "namespace", "labels")}},
            "1.30.0",
            strict=True,
        )
        assert first["spec"]["completionMode"] == "Indexed"
        assert first["metadata"]["labels"][LABEL_UID] == uid

        # A pod of the Job, as the Job controller makes them (owned by the Job).
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                 "uid": first["metadata"]["uid"], "controller": True}  # fmt: skip
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-0-abcde", "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "sync", "image": "zonemount:test"}]},
        }
        kube(kube_api, "create", PODS, pod, "zonemount-system")
        assert kube_api.object("pods", f"{name}-0-abcde", "zonemount-system") is not None

        # The Job fails (say every pod hit its per-index backoff): the operator re-creates it,
        # and the failed Job's pods go with it (a Job's default delete would orphan them).
        _set_job_condition(kube_api, name, "zonemount-system", "Failed")

        def recreated() -> bool:
            job = kube_api.object("jobs", name, "zonemount-system")
            return job is not None and job["metadata"]["uid"] != first["metadata"]["uid"]

        wait_for("the Job re-created", recreated)
        assert kube_api.object("pods", f"{name}-0-abcde", "zonemount-system") is None
        job_deletes = [d for d in kube_api.emulator.deletes if d[0] == "jobs"]
        assert job_deletes and all(d[3] == "Foreground" for d in job_deletes), job_deletes

        # The pods: the Job's own command line, one real worker process per index.
        container = kube_api.object("jobs", name, "zonemount-system")["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["args"][container["args"].index("--endpoint-url") + 1] == (
            moto_server.endpoint
        )
        env = {**os.environ, **moto_server.env()}
        workers = [
            subprocess.Popen(
                [str(BIN / container["command"][0]), *container["args"]],
                env={**env, "JOB_COMPLETION_INDEX": str(i)},
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        errs = [w.communicate(timeout=300)[1] for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0], errs

        # Progress is aggregated from the shards' manifests while the Job is still running.
        def aggregated() -> dict[str, Any]:
            return dict((current().get("status") or {}).get("import") or {})

        wait_for("shards aggregated", lambda: aggregated().get("shardsComplete") == 3)
        assert aggregated()["phase"] == "Copying" and aggregated()["objectsCopied"] == 30

        _set_job_condition(kube_api, name, "zonemount-system", "Complete")
        wait_for("import Complete", lambda: aggregated().get("phase") == "Complete")
        imp = aggregated()
        assert (imp["objectsTotal"], imp["objectsCopied"], imp["objectsFailed"]) == (30, 30, 0)
        assert imp["job"] == name and imp["shardsTotal"] == 3
        dst = f"{base}--use1-az4--x-s3"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=dst, Prefix="in/")["Contents"]}
        assert keys == {f"in/f{i:03d}" for i in range(30)}
        time.sleep(0.5)
        kube(kube_api, "delete", S3EXPRESSBUCKETS, "big", "spark")
        wait_for("bucket CR gone", lambda: not current(), timeout=90)
        # its import Job goes with it (Foreground: pods first), not left for the 7-day TTL
        assert kube_api.object("jobs", name, "zonemount-system") is None
        assert ("jobs", "zonemount-system", name, "Foreground") in kube_api.emulator.deletes
