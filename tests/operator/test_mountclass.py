"""S3MountClass reconcile against a real HTTP Kubernetes API (kmock) and moto for AZ lookups."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pytest
from zonemount_operator import conditions
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.errors import DependencyNotReady, SpecError
from zonemount_operator.kube import (
    PERSISTENTVOLUMES,
    S3EXPRESSBUCKETS,
    S3MOUNTCLASSES,
    STORAGECLASSES,
    KubeClient,
)
from zonemount_operator.mountclass import bucket_users, delete_mountclass, reconcile_mountclass

from tests.operator.operator_testlib import KubeApiThread, unique_base

pytestmark = pytest.mark.integration
R = TypeVar("R")
BUCKET = "data--use1-az4--x-s3"


def run(api: KubeApiThread, coro_fn: Any) -> Any:
    async def main() -> Any:
        kube = KubeClient(api.url)
        try:
            return await coro_fn(kube)
        finally:
            await kube.close()

    return asyncio.run(main())


def ready_bucket(api: KubeApiThread, ready: bool = True) -> None:
    status = {
        "bucketName": BUCKET,
        "region": "us-east-1",
        "availabilityZone": "us-east-1d",
        "availabilityZoneId": "use1-az4",
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Ready" if ready else "AccessDenied",
                "message": "m",
            }
        ],
    }

    async def put(kube: KubeClient) -> None:
        if await kube.get(S3EXPRESSBUCKETS, "data", "spark") is None:
            await kube.create(
                S3EXPRESSBUCKETS,
                {
                    "apiVersion": "zonemount.io/v1alpha1",
                    "kind": "S3ExpressBucket",
                    "metadata": {"name": "data", "namespace": "spark"},
                    "spec": {"region": "us-east-1", "availabilityZoneId": "use1-az4"},
                },
                "spark",
            )
        await kube.patch(S3EXPRESSBUCKETS, "data", {"status": status}, "spark", "status")

    run(api, put)


CLAIM = {"namespace": "spark", "name": "shared-data"}
SPEC: dict[str, Any] = {
    "bucketRef": {"name": "data", "namespace": "spark"},
    "prefix": "jobs/",
    "mountOptions": {"allowDelete": True, "allowOverwrite": True, "uid": 1000},
    "reclaimPolicy": "Delete",
}


def test_waits_for_bucket_then_writes_storage_class(kube_api: KubeApiThread) -> None:
    out = run(kube_api, lambda k: reconcile_mountclass("fast", "uid-1", SPEC, None, 1, kube=k))
    assert isinstance(out.error, DependencyNotReady)
    assert conditions.get(out.status["conditions"], "Ready")["reason"] == "BucketNotFound"
    ready_bucket(kube_api, ready=False)
    out = run(
        kube_api, lambda k: reconcile_mountclass("fast", "uid-1", SPEC, out.status, 1, kube=k)
    )
    assert conditions.get(out.status["conditions"], "BucketReady")["reason"] == "BucketNotReady"
    assert "(AccessDenied: m)" in conditions.get(out.status["conditions"], "Ready")["message"]
    assert kube_api.object("storageclasses", "fast") is None

    ready_bucket(kube_api)
    out = run(
        kube_api, lambda k: reconcile_mountclass("fast", "uid-1", SPEC, out.status, 1, kube=k)
    )
    assert out.error is None and out.ready, out.status
    sc = kube_api.object("storageclasses", "fast")
    assert sc["provisioner"] == "s3.csi.zonemount.io"
    assert sc["parameters"] == {
        "bucketName": BUCKET,
        "basePrefix": "jobs/",
        "region": "us-east-1",
        "authenticationSource": "driver",
        "availabilityZone": "us-east-1d",
        "deleteData": "true",
    }
    assert sc["mountOptions"] == ["--allow-delete", "--allow-overwrite", "--uid=1000"]
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["reclaimPolicy"] == "Delete"
    assert sc["allowedTopologies"] == [
        {
            "matchLabelExpressions": [
                {"key": "topology.kubernetes.io/zone", "values": ["us-east-1d"]}
            ]
        }
    ]
    assert sc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert out.status["storageClassName"] == "fast"
    assert out.status["persistentVolumeName"] is None
    assert kube_api.object("persistentvolumes", "fast") is None

    # Converged: a second pass writes nothing.
    again = run(
        kube_api, lambda k: reconcile_mountclass("fast", "uid-1", SPEC, out.status, 1, kube=k)
    )
    assert again.events == [] and again.status == out.status


def test_static_mode_pv_update_and_delete(kube_api: KubeApiThread) -> None:
    ready_bucket(kube_api)
    spec = {**SPEC, "provisioning": "Static", "capacity": "10Ti", "claimRef": CLAIM}
    out = run(kube_api, lambda k: reconcile_mountclass("shared", None, spec, None, 1, kube=k))
    assert out.ready, out.status
    pv = kube_api.object("persistentvolumes", "shared")
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["csi"] == {
        "driver": "s3.csi.zonemount.io",
        "volumeHandle": f"{BUCKET}/jobs/",
        "volumeAttributes": {
            "bucketName": BUCKET,
            "prefix": "jobs/",
            "region": "us-east-1",
            "authenticationSource": "driver",
        },
    }
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1d"]}
    ]
    assert pv["spec"]["storageClassName"] == "shared"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

    # Update propagates: new prefix replaces the StorageClass and the (unbound) PV.
    spec2 = {**spec, "prefix": "other/", "mountOptions": {"readOnly": True}}
    out = run(
        kube_api, lambda k: reconcile_mountclass("shared", None, spec2, out.status, 2, kube=k)
    )
    assert out.ready and sorted(out.events) == [
        "replaced PersistentVolume shared",
        "replaced StorageClass shared",
    ]
    assert kube_api.object("storageclasses", "shared")["parameters"]["basePrefix"] == "other/"
    assert kube_api.object("persistentvolumes", "shared")["spec"]["mountOptions"] == ["--read-only"]

    # A bound PV is never replaced under its claim.
    async def bind(k: KubeClient) -> None:
        # What the binder does: the claim's uid joins the reservation.
        claim = {"namespace": "spark", "name": "shared-data", "uid": "u-claim"}
        await k.patch(PERSISTENTVOLUMES, "shared", {"spec": {"claimRef": claim}})

    run(kube_api, bind)
    spec3 = {**spec2, "prefix": "third/"}
    out = run(
        kube_api, lambda k: reconcile_mountclass("shared", None, spec3, out.status, 3, kube=k)
    )
    assert conditions.get(out.status["conditions"], "Ready")["reason"] == "PersistentVolumeInUse"

    # Switching to PerClaimPrefix removes our PV; deletion removes the StorageClass.
    done = run(kube_api, lambda k: delete_mountclass("shared", out.status, spec3, kube=k))
    assert done == ["deleted StorageClass shared", "deleted PersistentVolume shared"]
    assert kube_api.object("storageclasses", "shared") is None
    assert run(kube_api, lambda k: delete_mountclass("shared", out.status, spec3, kube=k)) == []


def test_foreign_storage_class_is_not_overwritten(kube_api: KubeApiThread) -> None:
    ready_bucket(kube_api)

    async def foreign(k: KubeClient) -> None:
        await k.create(
            STORAGECLASSES,
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "gp3"},
                "provisioner": "ebs",
            },
        )

    run(kube_api, foreign)
    out = run(kube_api, lambda k: reconcile_mountclass("gp3", None, SPEC, None, 1, kube=k))
    assert isinstance(out.error, SpecError)
    assert conditions.get(out.status["conditions"], "Ready")["reason"] == "StorageClassConflict"
    assert kube_api.object("storageclasses", "gp3")["provisioner"] == "ebs"
    assert run(kube_api, lambda k: delete_mountclass("gp3", out.status, SPEC, k)) == []
    assert kube_api.object("storageclasses", "gp3") is not None


def test_bucket_name_mode_resolves_zone_from_az_id(
    kube_api: KubeApiThread, admin: Boto3BucketAdmin
) -> None:
    spec = {
        "bucketName": "logs--use1-az6--x-s3",
        "region": "us-east-1",
        "endpointUrl": "http://127.0.0.1:9000",
        "authenticationSource": "pod",
        "roleArn": "arn:aws:iam::111122223333:role/spark-executor",
    }
    out = run(
        kube_api, lambda k: reconcile_mountclass("logs", None, spec, None, 1, kube=k, admin=admin)
    )
    assert out.ready, out.status
    sc = kube_api.object("storageclasses", "logs")
    assert sc["parameters"]["endpointUrl"] == "http://127.0.0.1:9000"
    assert sc["parameters"]["authenticationSource"] == "pod"
    assert sc["parameters"]["roleArn"] == "arn:aws:iam::111122223333:role/spark-executor"
    assert sc["allowedTopologies"][0]["matchLabelExpressions"][0]["values"] == ["us-east-1a"]
    assert "deleteData" not in sc["parameters"] and sc["reclaimPolicy"] == "Retain"
    # A general-purpose bucket without a pinned zone: volumes may land anywhere. Issue 13:
    # a bucket that does not exist never makes the class Ready (checked again each resync).
    gp_name = f"plain-{unique_base()}"
    gp = {"bucketName": gp_name, "region": "us-east-1"}
    out = run(
        kube_api, lambda k: reconcile_mountclass("plain", None, gp, None, 1, kube=k, admin=admin)
    )
    assert isinstance(out.error, DependencyNotReady) and not out.ready
    ready = conditions.get(out.status["conditions"], "Ready")
    assert ready["reason"] == "BucketNotFound" and gp_name in ready["message"]
    assert kube_api.object("storageclasses", "plain") is None
    admin.s3("us-east-1").create_bucket(Bucket=gp_name)
    out = run(
        kube_api,
        lambda k: reconcile_mountclass("plain", None, gp, out.status, 1, kube=k, admin=admin),
    )
    assert out.ready and "allowedTopologies" not in kube_api.object("storageclasses", "plain")
    # A missing directory bucket named by bucketName is caught the same way.
    missing = {"bucketName": f"{unique_base()}--use1-az4--x-s3", "region": "us-east-1"}
    out = run(
        kube_api, lambda k: reconcile_mountclass("dir", None, missing, None, 1, kube=k, admin=admin)
    )
    assert conditions.get(out.status["conditions"], "Ready")["reason"] == "BucketNotFound"


def test_bucket_users_are_the_classes_that_name_it(kube_api: KubeApiThread) -> None:
    """What blocks an S3ExpressBucket's deletion: the classes whose bucketRef names it."""
    ready_bucket(kube_api)
    assert run(kube_api, lambda k: bucket_users(k, "spark", "data")) == []

    async def users(k: KubeClient) -> None:
        for name, ref in (("uses-data", "data"), ("uses-other", "other")):
            await k.create(
                S3MOUNTCLASSES,
                {
                    "apiVersion": "zonemount.io/v1alpha1",
                    "kind": "S3MountClass",
                    "metadata": {"name": name},
                    "spec": {"bucketRef": {"name": ref, "namespace": "spark"}},
                },
            )

    run(kube_api, users)
    assert run(kube_api, lambda k: bucket_users(k, "spark", "data")) == ["S3MountClass uses-data"]
    assert run(kube_api, lambda k: bucket_users(k, "other-ns", "data")) == []


def test_invalid_spec_is_a_condition(kube_api: KubeApiThread) -> None:
    bad = {"bucketRef": {"name": "x", "namespace": "y"}, "mountOptions": {"cache": "/tmp"}}
    out = run(kube_api, lambda k: reconcile_mountclass("bad", None, bad, None, 1, kube=k))
    assert isinstance(out.error, SpecError)
    ready = conditions.get(out.status["conditions"], "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.mountOptions.cache is not an allowed mount option" in ready["message"]


def test_pv_capacity_is_compared_as_a_quantity(kube_api: KubeApiThread) -> None:
    """Issue 13: the API server stores 1024Gi as 1Ti; a string compare patched every resync."""
    ready_bucket(kube_api)
    spec = {**SPEC, "provisioning": "Static", "capacity": "1024Gi", "claimRef": CLAIM}
    out = run(kube_api, lambda k: reconcile_mountclass("big", "uid-b", spec, None, 1, kube=k))
    assert out.ready, out.status
    assert kube_api.object("persistentvolumes", "big")["spec"]["capacity"] == {"storage": "1Ti"}
    before = len(kube_api.writes())
    again = run(
        kube_api, lambda k: reconcile_mountclass("big", "uid-b", spec, out.status, 1, kube=k)
    )
    assert again.events == [] and again.status == out.status
    assert kube_api.writes()[before:] == []
    # A real change of capacity is still written.
    bigger = {**spec, "capacity": "2Ti"}
    out = run(
        kube_api, lambda k: reconcile_mountclass("big", "uid-b", bigger, out.status, 2, kube=k)
    )
    assert out.events == ["updated PersistentVolume big"]
    assert kube_api.object("persistentvolumes", "big")["spec"]["capacity"] == {"storage": "2Ti"}


def test_renamed_storage_class_is_not_orphaned(kube_api: KubeApiThread) -> None:
    """Issue 13: a storageClassName change (before the CRD rule existed) left the old one."""
    ready_bucket(kube_api)
    first = {**SPEC, "storageClassName": "old-name"}
    out = run(kube_api, lambda k: reconcile_mountclass("mc", "uid-r", first, None, 1, kube=k))
    assert out.ready and kube_api.object("storageclasses", "old-name") is not None
    second = {**SPEC, "storageClassName": "new-name"}
    out = run(
        kube_api, lambda k: reconcile_mountclass("mc", "uid-r", second, out.status, 2, kube=k)
    )
    assert out.ready, out.status
    assert kube_api.object("storageclasses", "new-name") is not None
    assert kube_api.object("storageclasses", "old-name") is None
    assert "deleted StorageClass old-name (storageClassName is now new-name)" in out.events
    assert out.status["storageClassName"] == "new-name"


def test_cache_xz_becomes_the_sc_parameter_and_the_static_pv_attribute(
    kube_api: KubeApiThread,
) -> None:
    ready_bucket(kube_api)
    blocks = "blocks--use1-az4--x-s3"
    out = run(
        kube_api,
        lambda k: reconcile_mountclass("dyn", None, {**SPEC, "cacheXz": blocks}, None, 1, kube=k),
    )
    assert out.ready, out.status
    assert kube_api.object("storageclasses", "dyn")["parameters"]["cacheXz"] == blocks
    spec = {**SPEC, "provisioning": "Static", "claimRef": CLAIM, "cacheXz": blocks}
    out = run(kube_api, lambda k: reconcile_mountclass("cached", None, spec, None, 1, kube=k))
    assert out.ready, out.status
    attributes = kube_api.object("persistentvolumes", "cached")["spec"]["csi"]["volumeAttributes"]
    assert attributes["cacheXz"] == blocks


@pytest.mark.parametrize("bad", ["Bad_Name", "data--use1-az4--x-s3"])
def test_cache_xz_must_be_another_valid_bucket(bad: str) -> None:
    from zonemount_operator.spec import parse_mountclass

    spec = {k: v for k, v in SPEC.items() if k != "bucketRef"}
    spec |= {"bucketName": "data--use1-az4--x-s3", "region": "us-east-1"}
    with pytest.raises(SpecError, match=r"spec\.cacheXz"):
        parse_mountclass("c", {**spec, "cacheXz": bad})


def test_part_sizes_the_mounts_cut_are_said_in_the_condition(kube_api: KubeApiThread) -> None:
    """R-FLAGS-MEMORY-TARGET where the class's author looks: a partSize the mounts cut to fit
    their memory target (the node plugin's, the chart gives the operator the same) is written
    to the StorageClass as asked - the node is what fits it - and the StorageClassReady
    condition (still True) says what the mounts will use and the fix; a fitting one says
    nothing."""
    ready_bucket(kube_api)
    big = {**SPEC, "mountOptions": {"partSize": 256 * 1024 * 1024}}
    out = run(
        kube_api,
        lambda k: reconcile_mountclass(
            "big-parts", None, big, None, 1, kube=k, memory_target_mib=64
        ),
    )
    assert out.error is None and out.ready, out.status
    assert kube_api.object("storageclasses", "big-parts")["mountOptions"] == [
        "--part-size=268435456"
    ]
    message = conditions.get(out.status["conditions"], "StorageClassReady")["message"]
    assert message.startswith("StorageClass big-parts written (PerClaimPrefix); the mounts cut")
    assert "reads use 16777216-byte (16 MiB) parts" in message
    assert "uploads use 16777216-byte (16 MiB) parts" in message
    fits = {**SPEC, "mountOptions": {"partSize": 8 * 1024 * 1024}}
    out = run(
        kube_api,
        lambda k: reconcile_mountclass("fits", None, fits, None, 1, kube=k, memory_target_mib=80),
    )
    message = conditions.get(out.status["conditions"], "StorageClassReady")["message"]
    assert message == "StorageClass fits written (PerClaimPrefix)"
