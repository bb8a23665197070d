"""kopf handlers called directly: clients injected through ``memo``, errors -> kopf semantics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.errors import (
    AccessDeniedError,
    BucketNameTakenError,
    DependencyNotReady,
    KubeError,
    PermanentAwsError,
    SpecError,
    TransientAwsError,
)
from zonemount_operator.handlers import (
    OperatorConfig,
    backoff,
    bucket_delete,
    bucket_reconcile,
    raise_for,
)
from zonemount_operator.kube import KubeClient

from tests.operator.operator_testlib import KubeApiThread, unique_base

LOG = logging.getLogger("test")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "kind", "delay"),
    [
        (SpecError("bad"), kopf.PermanentError, None),
        (BucketNameTakenError("taken", "CreateBucket"), kopf.PermanentError, None),
        (PermanentAwsError("no", "PutBucketEncryption"), kopf.PermanentError, None),
        (
            AccessDeniedError("denied", "CreateBucket", "s3express:CreateBucket"),
            kopf.TemporaryError,
            120,
        ),
        (DependencyNotReady("wait"), kopf.TemporaryError, 10),
    ],
)
def test_raise_for_maps_errors(
    error: Exception, kind: type[Exception], delay: float | None
) -> None:
    with pytest.raises(kind) as exc:
        raise_for(error, retry=0)  # type: ignore[arg-type]
    assert str(exc.value) == str(error)
    if delay is not None:
        assert exc.value.delay == delay  # type: ignore[attr-defined]


@pytest.mark.unit
def test_transient_errors_back_off_with_jitter() -> None:
    for error in (TransientAwsError("slow", "CreateBucket"), KubeError("api", 500)):
        with pytest.raises(kopf.TemporaryError) as exc:
            raise_for(error, retry=3)
        assert 20 <= exc.value.delay <= 40
    assert backoff(0) <= 5 and backoff(50) <= 300
    raise_for(None, retry=0)  # no error: no exception


def delete(api: KubeApiThread, memo: kopf.Memo, **kwargs: Any) -> kopf.Patch:
    """Run bucket_delete with a Kubernetes client on the kmock API (one event loop)."""
    patch = kopf.Patch()

    async def main() -> None:
        memo.kube = KubeClient(api.url)
        try:
            await bucket_delete(
                namespace="ns",
                memo=memo,
                logger=LOG,
                retry=0,
                body={},
                meta={},
                patch=patch,
                **kwargs,
            )
        finally:
            await memo.kube.close()

    asyncio.run(main())
    return patch


@pytest.mark.integration
def test_bucket_handlers_use_memo_clients(admin: Boto3BucketAdmin, kube_api: KubeApiThread) -> None:
    memo = kopf.Memo(admin=admin, config=OperatorConfig())
    spec = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "deletionPolicy": "Delete",
    }
    patch = kopf.Patch()
    kwargs: dict[str, Any] = dict(
        name="b",
        namespace="ns",
        spec=spec,
        status={},
        meta={"generation": 3, "uid": "0b6e1c9e-5d43-4c55-9d7e-1f3f6a2b9c01"},
        memo=memo,
        logger=LOG,
        retry=0,
        body={},
    )
    asyncio.run(bucket_reconcile(patch=patch, **kwargs))
    status = dict(patch["status"])
    assert status["observedGeneration"] == 3
    assert status["conditions"][0] == {**status["conditions"][0], "type": "Ready", "status": "True"}
    delete(kube_api, memo, name="b", uid=kwargs["meta"]["uid"], spec=spec, status=status)
    buckets = admin.s3("us-east-1").list_directory_buckets()["Buckets"]
    assert status["bucketName"] not in {b["Name"] for b in buckets}

    bad = kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="set exactly one of"):
        asyncio.run(bucket_reconcile(patch=bad, **{**kwargs, "spec": {"region": "us-east-1"}}))
    assert bad["status"]["conditions"][0]["reason"] == "InvalidSpec"


READS = ("Get", "List", "Head", "Describe")


@pytest.mark.integration
def test_second_reconcile_of_an_unchanged_bucket_writes_nothing(
    moto_server: Any, s3_env: dict[str, str], role: Any, kube_api: KubeApiThread
) -> None:
    """Issue 13: every resync re-put lifecycle/encryption and re-patched the whole status."""
    calls: list[str] = []

    def count(client: Any) -> None:
        client.meta.events.register("before-call", lambda model, **_: calls.append(str(model.name)))

    admin = Boto3BucketAdmin(endpoint_url=moto_server.endpoint, max_attempts=2, event_hooks=count)
    memo = kopf.Memo(admin=admin, config=OperatorConfig())
    spec = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "deletionPolicy": "Delete",
        "lifecycle": {"expireAfterDays": 30, "abortIncompleteMultipartUploadAfterDays": 2},
        "access": {"roleArns": [role()], "sessionMode": "ReadOnly"},
    }
    kwargs: dict[str, Any] = dict(
        name="idem",
        namespace="ns",
        spec=spec,
        meta={"generation": 1, "uid": "5d0c7a1e-2f7b-4a8e-9d1c-3b6f0e9a7c42"},
        memo=memo,
        logger=LOG,
        retry=0,
        body={},
    )
    first = kopf.Patch()
    asyncio.run(bucket_reconcile(patch=first, status={}, **kwargs))
    status = dict(first["status"])
    assert status["conditions"][0]["status"] == "True", status
    assert any(not c.startswith(READS) for c in calls)  # the first pass did write
    calls.clear()
    second = kopf.Patch()
    asyncio.run(bucket_reconcile(patch=second, status=status, **kwargs))
    assert dict(second) == {}, dict(second)  # no Kubernetes write
    assert [c for c in calls if not c.startswith(READS)] == []  # no AWS write
    # A real change is still applied (and only it).
    calls.clear()
    changed = {**spec, "lifecycle": {"expireAfterDays": 31}}
    third = kopf.Patch()
    asyncio.run(bucket_reconcile(patch=third, status=status, **{**kwargs, "spec": changed}))
    assert [c for c in calls if not c.startswith(READS)] == ["PutBucketLifecycleConfiguration"]
    delete(
        kube_api,
        memo,
        name="idem",
        uid="5d0c7a1e-2f7b-4a8e-9d1c-3b6f0e9a7c42",
        spec=spec,
        status=status,
    )
