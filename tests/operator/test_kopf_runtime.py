"""The real operator (kopf, our registry) end to end: kmock for Kubernetes, moto for AWS.

create S3ExpressBucket -> status Ready (bucket + policy on moto) -> S3MountClass writes its
StorageClass -> update propagates -> delete runs the finalizers (policy, bucket, SC gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from zonemount_cli.servers import LocalS3
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.handlers import registry
from zonemount_operator.kube import S3EXPRESSBUCKETS, S3MOUNTCLASSES, KubeClient

from tests.operator.operator_testlib import KubeApiThread, express_bucket_cr, unique_base

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kube(api: KubeApiThread, method: str, *args: Any) -> Any:
    async def call() -> Any:
        client = KubeClient(api.url)
        try:
            return await getattr(client, method)(*args)
        finally:
            await client.close()

    return asyncio.run(call())


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


@pytest.fixture
def operator_env(
    kube_api: KubeApiThread,
    moto_server: LocalS3,
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{kube_api.url}'}}}}]\n"
        "users: [{name: test, user: {token: test-token}}]\n"
        "contexts: [{name: test, context: {cluster: kmock, user: test}}]\n"
        "current-context: test\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("ZONEMOUNT_AWS_ENDPOINT_URL", moto_server.endpoint)
    # The admin's tenancy policy, as the chart mounts it: the defaults plus whatever a test
    # writes into tmp_path/tenancy.yaml before starting the operator.
    monkeypatch.setenv("ZONEMOUNT_TENANCY_CONFIG", str(tmp_path / "tenancy.yaml"))
    (tmp_path / "tenancy.yaml").write_text("{}\n")
    yield


def test_operator_end_to_end(
    operator_env: None,
    kube_api: KubeApiThread,
    admin: Boto3BucketAdmin,
    role: Callable[..., str],
    bucket: str,
    tmp_path: Path,
) -> None:
    base, role_arn = unique_base(), role("spark")
    (tmp_path / "tenancy.yaml").write_text(f"importSources: ['s3://{bucket}/seed/']\n")
    s3 = admin.s3("us-east-1")
    seed = {f"seed/part-{i}": bytes([i]) * (1000 * i) for i in range(6)}
    for key, body in seed.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    bucket_name = f"{base}--use1-az4--x-s3"
    bucket_cr = {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3ExpressBucket",
        "metadata": {
            "name": "scratch",
            "namespace": "spark",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "region": "us-east-1",
            "availabilityZone": "us-east-1d",
            "baseName": base,
            "deletionPolicy": "Delete",
            "access": {"roleArns": [role_arn]},
            "import": {"source": f"s3://{bucket}/seed/", "concurrency": 4},
        },
    }
    class_cr = {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3MountClass",
        "metadata": {"name": f"sc-{base}", "uid": "uid-mc", "resourceVersion": "1"},
        "spec": {
            "bucketRef": {"name": "scratch", "namespace": "spark"},
            "prefix": "jobs/",
            "mountOptions": {"allowDelete": True},
        },
    }
    args = ["run", "--standalone", "--all-namespaces", "--verbose"]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        # The mount class first: it must wait for the bucket (condition, no StorageClass).
        kube(kube_api, "create", S3MOUNTCLASSES, class_cr)
        waiting = wait_for(
            "mount class waiting",
            lambda: condition(
                kube_api.object("s3mountclasses", class_cr["metadata"]["name"]), "BucketReady"
            ),
        )
        assert waiting["reason"] == "BucketNotFound"

        kube(kube_api, "create", S3EXPRESSBUCKETS, bucket_cr, "spark")
        ready = wait_for(
            "bucket Ready",
            lambda: (
                condition(kube_api.object("s3expressbuckets", "scratch", "spark"), "Ready").get(
                    "status"
                )
                == "True"
                and kube_api.object("s3expressbuckets", "scratch", "spark")
            ),
        )
        status = ready["status"]
        assert status["bucketName"] == bucket_name
        assert status["availabilityZoneId"] == "use1-az4"
        assert "zonemount.io/finalizer" in ready["metadata"]["finalizers"]
        assert admin.attached_roles(status["policyArn"]) == {role_arn.rsplit("/", 1)[1]}
        # Ready includes the import: the daemon copied every object and reported it.
        assert status["import"]["phase"] == "Complete"
        assert status["import"]["objectsCopied"] == len(seed)
        assert status["import"]["bytesCopied"] == sum(map(len, seed.values()))
        for key, body in seed.items():
            assert s3.get_object(Bucket=bucket_name, Key=key)["Body"].read() == body

        sc_name = class_cr["metadata"]["name"]
        sc = wait_for("StorageClass", lambda: kube_api.object("storageclasses", sc_name), 60)
        assert sc["parameters"]["bucketName"] == bucket_name
        assert sc["allowedTopologies"][0]["matchLabelExpressions"][0]["values"] == ["us-east-1d"]

        # Update propagates: ReadOnly session policy, new mount options.
        # Events (kubectl describe): what was done, and Ready becoming True; the class first
        # waited for its bucket (a Warning), then wrote its StorageClass.
        reasons = {(e["type"], e["reason"]) for e in kube_api.events("scratch")}
        assert {("Normal", "Created"), ("Normal", "ImportComplete"), ("Normal", "Ready")} <= reasons
        created = [e["message"] for e in kube_api.events("scratch") if e["reason"] == "Created"]
        assert created == [f"created directory bucket {bucket_name} in us-east-1d (use1-az4)"]
        class_events = wait_for(
            "mount class Ready event",
            lambda: (
                (
                    ev := [
                        (e["type"], e["reason"])
                        for e in kube_api.events(class_cr["metadata"]["name"])
                    ]
                )
                and ("Normal", "Ready") in ev
                and ev
            ),
        )
        assert class_events[0] == ("Warning", "BucketNotFound"), class_events
        assert ("Normal", "Created") in class_events

        # The API server bumps metadata.generation on a spec change (not the client).
        kube(
            kube_api,
            "patch",
            S3EXPRESSBUCKETS,
            "scratch",
            {"spec": {"access": {"sessionMode": "ReadOnly"}}},
            "spark",
        )
        wait_for(
            "observedGeneration 2",
            lambda: (
                kube_api.object("s3expressbuckets", "scratch", "spark")["status"].get(
                    "observedGeneration"
                )
                == 2
            ),
        )
        iam = admin.client("iam", "us-east-1")
        version = iam.get_policy(PolicyArn=status["policyArn"])["Policy"]["DefaultVersionId"]
        assert version != "v1"
        kube(
            kube_api,
            "patch",
            S3MOUNTCLASSES,
            sc_name,
            {"spec": {"mountOptions": {"allowDelete": True, "readOnly": True}}},
        )
        wait_for(
            "mountOptions updated",
            lambda: (
                (kube_api.object("storageclasses", sc_name) or {}).get("mountOptions")
                == ["--allow-delete", "--read-only"]
            ),
        )

        # Delete: finalizers run, AWS and Kubernetes objects go away.
        admin.s3("us-east-1").put_object(Bucket=bucket_name, Key="jobs/x", Body=b"1")
        kube(kube_api, "delete", S3MOUNTCLASSES, sc_name)
        kube(kube_api, "delete", S3EXPRESSBUCKETS, "scratch", "spark")
        wait_for(
            "bucket CR gone",
            lambda: kube_api.object("s3expressbuckets", "scratch", "spark") is None,
        )
        wait_for("mount class gone", lambda: kube_api.object("s3mountclasses", sc_name) is None)
        assert kube_api.object("storageclasses", sc_name) is None
        # Regression: the class's deletion posted no Event for what it deleted (the bucket's did).
        deleted = [e["message"] for e in kube_api.events(sc_name) if e["reason"] == "Deleted"]
        assert deleted == [f"deleted StorageClass {sc_name}"], deleted
        assert not admin.policy_exists(status["policyArn"])
        names = {b["Name"] for b in admin.s3("us-east-1").list_directory_buckets()["Buckets"]}
        assert bucket_name not in names
    assert runner.exception is None


def test_invalid_spec_is_a_permanent_condition(operator_env: None, kube_api: KubeApiThread) -> None:
    cr = {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3ExpressBucket",
        "metadata": {"name": "nowhere", "namespace": "spark", "resourceVersion": "1"},
        "spec": {"region": "us-east-1", "availabilityZoneId": "use1-az9", "baseName": "nowhere"},
    }
    with KopfRunner(["run", "--standalone", "--all-namespaces"], registry=registry, timeout=60):
        kube(kube_api, "create", S3EXPRESSBUCKETS, cr, "spark")
        ready = wait_for(
            "Ready=False",
            lambda: condition(kube_api.object("s3expressbuckets", "nowhere", "spark"), "Ready"),
        )
        assert ready["status"] == "False" and ready["reason"] == "UnknownAvailabilityZone"
        warning = wait_for("a Warning event", lambda: kube_api.events("nowhere"))
        assert [(e["type"], e["reason"]) for e in warning] == [
            ("Warning", "UnknownAvailabilityZone")
        ]
        assert "use1-az9" in warning[0]["message"]
        # Let kopf finish its bookkeeping writes, then watch for a hot loop (repeated writes).
        versions, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 1.5:
            now = kube_api.versions("s3expressbuckets", "nowhere", "spark")
            if now != versions:
                versions, stable_since = now, time.monotonic()
            time.sleep(0.1)
        time.sleep(3)
        # PermanentError: kopf considers the change handled (no retry pending), no more writes.
        meta = kube_api.object("s3expressbuckets", "nowhere", "spark")["metadata"]
        assert "zonemount.io/last-handled-configuration" in meta["annotations"]
        assert "zonemount.io/bucket-reconcile" not in meta["annotations"]
        assert kube_api.versions("s3expressbuckets", "nowhere", "spark") == versions
        assert len(kube_api.events("nowhere")) == 1  # one Warning, not one per retry


def test_zonemount_operator_process(
    operator_env: None, kube_api: KubeApiThread, tmp_path: Path, admin: Boto3BucketAdmin
) -> None:
    """The real entry point (`zonemount operator`) as a process: liveness, a reconcile, SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from zonemount_cli.servers import free_port

    port = free_port()
    log = (tmp_path / "operator.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "zonemount"),
            "operator",
            "--all-namespaces",
            "--liveness-port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )
    plain_bucket = f"plain-{unique_base()}"
    admin.s3("us-east-1").create_bucket(Bucket=plain_bucket)  # a class needs its bucket
    try:
        cr = {
            "apiVersion": "zonemount.io/v1alpha1",
            "kind": "S3MountClass",
            "metadata": {"name": "plain"},
            "spec": {
                "bucketName": plain_bucket,
                "region": "us-east-1",
                "availabilityZone": "us-east-1c",
            },
        }
        kube(kube_api, "create", S3MOUNTCLASSES, cr)
        sc = wait_for("StorageClass", lambda: kube_api.object("storageclasses", "plain"))
        assert sc["allowedTopologies"][0]["matchLabelExpressions"][0]["values"] == ["us-east-1c"]

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("liveness endpoint", healthy)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    output = (tmp_path / "operator.log").read_text()
    assert code == 0, output
    assert "Traceback" not in output, output


def test_import_result_is_never_overwritten_by_late_progress(
    operator_env: None,
    kube_api: KubeApiThread,
    admin: Boto3BucketAdmin,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 13 item 1: a progress patch sent without waiting landed after ``Complete``
    (phase Copying + ImportComplete=True); the next spec edit went ImportPending; kopf
    logged "cancelled. Will escalate" on every completion; a restart imported again.
    Here every progress patch is held back 1.5 s by the API server, so a progress write
    that is not awaited before the result lands after it."""
    import json

    from zonemount_operator import handlers

    monkeypatch.setattr(handlers, "PROGRESS_INTERVAL", 0.0)
    caplog.set_level(logging.DEBUG, logger="kopf")
    (tmp_path / "tenancy.yaml").write_text(f"importSources: ['s3://{bucket}/in/']\n")
    kube_api.hold(lambda r: r.subresource == "status" and '"Copying"' in json.dumps(r.data), 1.5)
    s3 = admin.s3("us-east-1")
    for i in range(8):
        s3.put_object(Bucket=bucket, Key=f"in/{i}", Body=b"x" * (100 + i))
    base = unique_base()
    cr = express_bucket_cr(
        "imp", base, {"import": {"source": f"s3://{bucket}/in/", "concurrency": 2}}
    )

    def current() -> dict[str, Any]:
        return dict(kube_api.object("s3expressbuckets", "imp", "spark") or {})

    args = ["run", "--standalone", "--all-namespaces", "--verbose"]
    with KopfRunner(args, registry=registry, timeout=60):
        kube(kube_api, "create", S3EXPRESSBUCKETS, cr, "spark")
        wait_for(
            "import Complete",
            lambda: (
                ((current().get("status") or {}).get("import") or {}).get("phase") == "Complete"
            ),
        )
        time.sleep(3.5)  # every held progress write has landed by now
        status = current()["status"]
        assert status["import"]["phase"] == "Complete", status["import"]
        assert status["import"]["objectsCopied"] == 8
        assert condition(current(), "ImportComplete")["status"] == "True"
        assert condition(current(), "Ready")["status"] == "True"
        started = status["import"]["startedAt"]

        # A spec edit keeps the import result (no ImportPending, Ready stays True).
        kube(
            kube_api,
            "patch",
            S3EXPRESSBUCKETS,
            "imp",
            {"spec": {"deletionPolicy": "Delete", "lifecycle": {"expireAfterDays": 7}}},
            "spark",
        )
        wait_for("generation 2 reconciled", lambda: current()["status"]["observedGeneration"] == 2)
        time.sleep(1)
        assert condition(current(), "Ready")["status"] == "True", current()["status"]
        assert current()["status"]["import"]["phase"] == "Complete"
    assert "import Complete: 8 objects copied" in caplog.text  # kopf's log is captured here
    assert "Will escalate" not in caplog.text
    assert "exited on its own" not in caplog.text

    # A restart does not import again: the result for this source is final.
    with KopfRunner(args, registry=registry, timeout=60):
        time.sleep(6)
        assert current()["status"]["import"]["startedAt"] == started
        assert current()["status"]["import"]["objectsCopied"] == 8
        kube(kube_api, "delete", S3EXPRESSBUCKETS, "imp", "spark")
        wait_for("bucket CR gone", lambda: not current())


def test_bucket_in_use_is_not_deleted_until_its_classes_are_gone(
    operator_env: None, kube_api: KubeApiThread, admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    """Issue 13 item 5: deleting an S3ExpressBucket that a class used went through; the
    StorageClass kept pointing at a deleted bucket (and its policy was gone). Now the
    finalizer waits, as kubernetes.io/pvc-protection does for a claim in use."""
    base = unique_base()
    bucket_cr = express_bucket_cr("held", base, {"access": {"roleArns": [role("spark")]}})
    class_cr = {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3MountClass",
        "metadata": {"name": f"uses-{base}"},
        "spec": {"bucketRef": {"name": "held", "namespace": "spark"}},
    }
    sc_name = class_cr["metadata"]["name"]

    def bucket_obj() -> Any:
        return kube_api.object("s3expressbuckets", "held", "spark")

    with KopfRunner(["run", "--standalone", "--all-namespaces"], registry=registry, timeout=60):
        kube(kube_api, "create", S3EXPRESSBUCKETS, bucket_cr, "spark")
        kube(kube_api, "create", S3MOUNTCLASSES, class_cr)
        wait_for("StorageClass", lambda: kube_api.object("storageclasses", sc_name))
        policy_arn = bucket_obj()["status"]["policyArn"]

        kube(kube_api, "delete", S3EXPRESSBUCKETS, "held", "spark")
        blocked = wait_for(
            "deletion blocked",
            lambda: (
                condition(bucket_obj(), "Ready").get("reason") == "BucketInUse"
                and condition(bucket_obj(), "Ready")
            ),
        )
        assert f"S3MountClass {sc_name}" in blocked["message"]
        assert blocked["status"] == "False"
        time.sleep(3)  # a retry or two later: still there, still whole
        assert bucket_obj() is not None and bucket_obj()["metadata"]["deletionTimestamp"]
        assert admin.policy_exists(policy_arn)
        assert admin.bucket_exists("us-east-1", f"{base}--use1-az4--x-s3")
        warnings = [e for e in kube_api.events("held") if e["reason"] == "BucketInUse"]
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

        kube(kube_api, "delete", S3MOUNTCLASSES, sc_name)
        wait_for("bucket CR gone", lambda: bucket_obj() is None)
        assert kube_api.object("storageclasses", sc_name) is None
        assert not admin.policy_exists(policy_arn)
        assert not admin.bucket_exists("us-east-1", f"{base}--use1-az4--x-s3")
