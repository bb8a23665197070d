"""Reconcile an ``S3MountClass``: the StorageClass (and Static PV) it owns.

Plain async functions over plain data and the :class:`KubeClient` seam (plus a
:class:`BucketAdmin` to turn a directory bucket's AZ ID into a zone name and to check that a
``bucketName`` exists: a class is never Ready on a bucket that is not there).

* ``render_storage_class`` / ``render_persistent_volume`` are pure: spec + bucket facts ->
  manifest. Volumes land only in the bucket's zone (``allowedTopologies`` /
  ``nodeAffinity`` on ``topology.kubernetes.io/zone``), binding waits for the first consumer.
* ``reconcile_mountclass`` runs :data:`STEPS` (``spec`` -> ``bucket`` -> ``objects``, the
  shape of :mod:`~zonemount_operator.conditions`): it waits (condition
  ``BucketReady=False``, reason BucketNotReady / BucketNotFound) until a referenced
  S3ExpressBucket is Ready, then converges the objects (:func:`desired_objects`):
  missing -> create; different -> recreate (StorageClass parameters are immutable; a PV is
  recreated only while no claim is bound to it, otherwise the condition says so); someone
  else's object with our name -> condition ``StorageClassConflict``, never overwritten.
* ``delete_mountclass`` deletes only objects labelled as owned by this S3MountClass.
* ``bucket_users`` lists what still uses an S3ExpressBucket (its deletion waits for none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zonemount_contract import keys
from zonemount_contract import mount_options as option_table

from zonemount_operator import CSI_DRIVER, GROUP, VERSION, conditions, names, quantity
from zonemount_operator.aws import BucketAdmin
from zonemount_operator.errors import (
    AccessDeniedError,
    DependencyNotReady,
    SpecError,
)
from zonemount_operator.kube import (
    PERSISTENTVOLUMES,
    S3EXPRESSBUCKETS,
    S3MOUNTCLASSES,
    STORAGECLASSES,
    KubeClient,
)
from zonemount_operator.spec import MountClassSpec, parse_mountclass

ZONE_KEY = keys.TOPOLOGY_ZONE
OWNER_LABEL = "zonemount.io/mountclass"
MANAGED_BY = {"app.kubernetes.io/managed-by": "zonemount-operator"}


@dataclass(frozen=True)
class BucketFacts:
    """Where the volumes' data lives."""

    bucket_name: str
    region: str
    availability_zone: str | None
    availability_zone_id: str | None
    endpoint_url: str | None = None


def _metadata(name: str, owner: str, owner_uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**MANAGED_BY, OWNER_LABEL: owner}}
    if owner_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "S3MountClass",
                "name": owner,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return meta


def render_storage_class(
    owner: str, owner_uid: str | None, spec: MountClassSpec, facts: BucketFacts
) -> dict[str, Any]:
    params = {
        keys.PARAM_BUCKET_NAME: facts.bucket_name,
        keys.PARAM_BASE_PREFIX: spec.prefix,
        keys.PARAM_REGION: facts.region,
        keys.PARAM_AUTHENTICATION_SOURCE: spec.authentication_source,
    }
    if facts.endpoint_url:
        params[keys.PARAM_ENDPOINT_URL] = facts.endpoint_url
    if spec.role_arn:
        params[keys.PARAM_ROLE_ARN] = spec.role_arn
    if facts.availability_zone:
        params[keys.PARAM_AVAILABILITY_ZONE] = facts.availability_zone
    if spec.cache_xz:
        params[keys.PARAM_CACHE_XZ] = spec.cache_xz
    if spec.reclaim_policy == "Delete":
        params[keys.PARAM_DELETE_DATA] = "true"
    sc: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": _metadata(spec.storage_class_name, owner, owner_uid),
        "provisioner": CSI_DRIVER,
        "parameters": params,
        "reclaimPolicy": spec.reclaim_policy,
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": False,
    }
    if spec.mount_options:
        sc["mountOptions"] = list(spec.mount_options)
    if facts.availability_zone:
        sc["allowedTopologies"] = [
            {"matchLabelExpressions": [{"key": ZONE_KEY, "values": [facts.availability_zone]}]}
        ]
    return sc


def render_persistent_volume(
    owner: str, owner_uid: str | None, spec: MountClassSpec, facts: BucketFacts
) -> dict[str, Any]:
    attributes = {
        keys.BUCKET_NAME: facts.bucket_name,
        keys.PREFIX: spec.prefix,
        keys.REGION: facts.region,
        keys.AUTHENTICATION_SOURCE: spec.authentication_source,
    }
    if facts.endpoint_url:
        attributes[keys.ENDPOINT_URL] = facts.endpoint_url
    if spec.role_arn:
        attributes[keys.ROLE_ARN] = spec.role_arn
    if spec.cache_xz:
        attributes[keys.CACHE_XZ] = spec.cache_xz
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": spec.capacity},
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": spec.storage_class_name,
        "volumeMode": "Filesystem",
        "csi": {
            "driver": CSI_DRIVER,
            "volumeHandle": f"{facts.bucket_name}/{spec.prefix}",
            "volumeAttributes": attributes,
        },
    }
    if spec.mount_options:
        pv_spec["mountOptions"] = list(spec.mount_options)
    if spec.claim_ref is not None:  # reserved: only this claim can bind it
        pv_spec["claimRef"] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": spec.claim_ref[0],
            "name": spec.claim_ref[1],
        }
    if facts.availability_zone:
        pv_spec["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": ZONE_KEY, "operator": "In", "values": [facts.availability_zone]}
                        ]
                    }
                ]
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": _metadata(spec.storage_class_name, owner, owner_uid),
        "spec": pv_spec,
    }


async def _check_owned(
    admin: BucketAdmin, ns: str, name: str, obj: Mapping[str, Any], status: Mapping[str, Any]
) -> None:
    """The bucket a referenced S3ExpressBucket's status names must carry that object's owner
    tags: a tenant able to write its object's status cannot point a StorageClass at another
    tenant's bucket."""
    from zonemount_operator.bucket import bucket_owner, owner_of

    want = owner_of(name, ns, (obj.get("metadata") or {}).get("uid"))
    bucket = str(status["bucketName"])
    have = await asyncio.to_thread(bucket_owner, admin, str(status.get("region", "")), bucket)
    if have is None or have.uid != want.uid:
        whose = f"{have}" if have is not None else "no owner"
        raise DependencyNotReady(
            f"S3ExpressBucket {ns}/{name} reports bucket {bucket}, whose owner tags name {whose}: "
            "its status was not written by the operator; nothing is written until it is",
            reason="BucketNotOwned",
        )


async def referenced_bucket_facts(
    ref: tuple[str, str],
    obj: Mapping[str, Any] | None,
    admin: BucketAdmin | None,
    endpoint_url: str | None = None,
) -> BucketFacts:
    """Facts from the S3ExpressBucket ``ref`` (namespace, name) as ``obj`` shows it (from the
    API server, or from the file ``zonemount reconcile`` reconciled): it must exist, not be
    deleting, be Ready, and (with ``admin``) its bucket must carry its owner tags."""
    ns, ref_name = ref
    if obj is None:
        raise DependencyNotReady(
            f"S3ExpressBucket {ns}/{ref_name} does not exist: create it or fix spec.bucketRef",
            reason="BucketNotFound",
        )
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        raise DependencyNotReady(
            f"S3ExpressBucket {ns}/{ref_name} is being deleted (it waits until no "
            "S3MountClass or volume uses it): point spec.bucketRef at another bucket",
            reason="BucketDeleting",
        )
    status = obj.get("status") or {}
    ready = conditions.get(status.get("conditions"), "Ready")
    if ready is None or ready.get("status") != "True" or not status.get("bucketName"):
        why = f" ({ready.get('reason')}: {ready.get('message')})" if ready else ""
        raise DependencyNotReady(f"waiting for S3ExpressBucket {ns}/{ref_name} to be Ready{why}")
    if admin is not None:
        await _check_owned(admin, ns, ref_name, obj, status)
    return BucketFacts(
        status["bucketName"],
        status["region"],
        status.get("availabilityZone"),
        status.get("availabilityZoneId"),
        endpoint_url,
    )


async def bucket_facts(
    spec: MountClassSpec,
    kube: KubeClient,
    admin: BucketAdmin | None,
    endpoint_url: str | None = None,
) -> BucketFacts:
    """Facts about the target bucket; raises DependencyNotReady while it is not usable."""
    if spec.bucket_ref is not None:
        ns, ref_name = spec.bucket_ref
        obj = await kube.get(S3EXPRESSBUCKETS, ref_name, ns)
        return await referenced_bucket_facts(spec.bucket_ref, obj, admin, endpoint_url)
    assert spec.bucket_name is not None and spec.region is not None
    parsed = names.parse_directory_bucket(spec.bucket_name)
    if parsed is None:  # general-purpose bucket: the zone is whatever the user pinned
        await _check_bucket_exists(spec, admin)
        return BucketFacts(
            spec.bucket_name, spec.region, spec.availability_zone, None, spec.endpoint_url
        )
    if admin is None:
        raise DependencyNotReady("no AWS access to resolve the bucket's zone", "AwsUnavailable")
    for zone in admin.zones(spec.region):
        if zone.zone_id == parsed.az_id:
            await _check_bucket_exists(spec, admin)
            return BucketFacts(
                spec.bucket_name, spec.region, zone.name, zone.zone_id, spec.endpoint_url
            )
    raise SpecError(
        f"bucket {spec.bucket_name!r} names AZ ID {parsed.az_id!r}, which region "
        f"{spec.region} does not have: fix spec.region or spec.bucketName",
        reason="UnknownAvailabilityZone",
    )


async def _check_bucket_exists(spec: MountClassSpec, admin: BucketAdmin | None) -> None:
    """``spec.bucketName`` must exist before a class is Ready (HeadBucket through the
    operator's AWS endpoint; a class with its own ``endpointUrl`` elsewhere is not checked).
    403 means it exists and the operator may not read it: volumes use other credentials."""
    assert spec.bucket_name is not None and spec.region is not None
    if admin is None:
        raise DependencyNotReady("no AWS access to check the bucket exists", "AwsUnavailable")
    own_endpoint = getattr(admin, "endpoint_url", None)
    if spec.endpoint_url and spec.endpoint_url != own_endpoint:
        return
    try:
        exists = await asyncio.to_thread(admin.bucket_exists, spec.region, spec.bucket_name)
    except AccessDeniedError:
        return
    if not exists:
        raise DependencyNotReady(
            f"bucket {spec.bucket_name} does not exist in {spec.region}: create it or fix "
            "spec.bucketName (checked again every resync)",
            reason="BucketNotFound",
        )


async def bucket_users(kube: KubeClient, namespace: str | None, name: str) -> list[str]:
    """The S3MountClasses whose ``bucketRef`` names an S3ExpressBucket (what its deletion
    waits for). PersistentVolumes are not listed: the operator's RBAC has no ``list`` on
    them (it writes its own by name), so dynamic volumes of a deleted class are not seen."""
    return sorted(
        f"S3MountClass {mc['metadata']['name']}"
        for mc in await kube.list(S3MOUNTCLASSES)
        if ((mc.get("spec") or {}).get("bucketRef") or {}) == {"name": name, "namespace": namespace}
    )


def _owned_by(obj: Mapping[str, Any], owner: str) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(OWNER_LABEL) == owner


SC_FIELDS = (
    "provisioner",
    "parameters",
    "reclaimPolicy",
    "volumeBindingMode",
    "allowedTopologies",
    "mountOptions",
    "allowVolumeExpansion",
)


async def _ensure_storage_class(
    kube: KubeClient, owner: str, want: dict[str, Any], events: list[str]
) -> None:
    name = want["metadata"]["name"]
    have = await kube.get(STORAGECLASSES, name)
    if have is not None and not _owned_by(have, owner):
        raise SpecError(
            f"StorageClass {name} exists and is not managed by S3MountClass {owner}: "
            "delete it or set spec.storageClassName",
            reason="StorageClassConflict",
        )
    if have is not None and all(have.get(f) == want.get(f) for f in SC_FIELDS):
        return
    if have is not None:  # StorageClasses are immutable: replace
        await kube.delete(STORAGECLASSES, name)
        events.append(f"replaced StorageClass {name}")
    else:
        events.append(f"created StorageClass {name}")
    await kube.create(STORAGECLASSES, want)


def _claim(pv_spec: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (namespace, name) a PV is reserved for or bound to."""
    ref = pv_spec.get("claimRef") or {}
    return (str(ref.get("namespace", "")), str(ref["name"])) if ref.get("name") else None


async def _ensure_pv(kube: KubeClient, owner: str, want: dict[str, Any], events: list[str]) -> None:
    name = want["metadata"]["name"]
    have = await kube.get(PERSISTENTVOLUMES, name)
    if have is not None and not _owned_by(have, owner):
        raise SpecError(
            f"PersistentVolume {name} exists and is not managed by S3MountClass "
            f"{owner}: delete it or set spec.storageClassName",
            reason="PersistentVolumeConflict",
        )
    if have is None:
        await kube.create(PERSISTENTVOLUMES, want)
        events.append(f"created PersistentVolume {name}")
        return
    have_spec, want_spec = have.get("spec", {}), want["spec"]
    fixed = ("csi", "nodeAffinity", "storageClassName", "accessModes", "volumeMode")
    if all(have_spec.get(f) == want_spec.get(f) for f in fixed) and _claim(have_spec) == _claim(
        want_spec
    ):
        # The API server stores quantities canonicalised (1024Gi comes back as 1Ti): compare
        # values, or every resync patches the PV again.
        have_storage = (have_spec.get("capacity") or {}).get("storage")
        if have_spec.get("mountOptions") != want_spec.get("mountOptions") or not quantity.same(
            have_storage, want_spec["capacity"]["storage"]
        ):
            await kube.patch(
                PERSISTENTVOLUMES,
                name,
                {
                    "spec": {
                        "mountOptions": want_spec.get("mountOptions"),
                        "capacity": want_spec["capacity"],
                    }
                },
            )
            events.append(f"updated PersistentVolume {name}")
        return
    # Bound: the binder filled in the claim's uid (a reservation alone has none).
    if (have_spec.get("claimRef") or {}).get("uid") or (have.get("status") or {}).get(
        "phase"
    ) == "Bound":
        raise DependencyNotReady(
            f"PersistentVolume {name} is bound to a claim and its bucket/prefix/zone cannot "
            "change in place: delete the claim to let the operator replace it",
            reason="PersistentVolumeInUse",
        )
    await kube.delete(PERSISTENTVOLUMES, name)
    await kube.create(PERSISTENTVOLUMES, want)
    events.append(f"replaced PersistentVolume {name}")


async def _release_renamed(
    kube: KubeClient, owner: str, written: str | None, spec: MountClassSpec, events: list[str]
) -> None:
    """Delete what we wrote under a previous ``storageClassName`` (the CRD makes the field
    immutable; this covers objects from before that rule): never orphan a StorageClass."""
    if not written or written == spec.storage_class_name:
        return
    for ref, kind in ((STORAGECLASSES, "StorageClass"), (PERSISTENTVOLUMES, "PersistentVolume")):
        have = await kube.get(ref, written)
        if have is None or not _owned_by(have, owner):
            continue
        if have.get("spec", {}).get("claimRef"):
            events.append(f"kept {kind} {written}: a claim is bound to it")
            continue
        if await kube.delete(ref, written):
            now = spec.storage_class_name
            events.append(f"deleted {kind} {written} (storageClassName is now {now})")


@dataclass
class _MountClassRun:
    """The context the steps of one S3MountClass reconcile share."""

    name: str
    uid: str | None
    spec_dict: Mapping[str, Any]
    status: Mapping[str, Any]
    kube: KubeClient
    admin: BucketAdmin | None
    endpoint_url: str | None
    memory_target_mib: int = option_table.DEFAULT_MAX_MEMORY_TARGET_MIB
    spec: MountClassSpec | None = None
    facts: BucketFacts | None = None

    @property
    def parsed(self) -> MountClassSpec:
        assert self.spec is not None, "the spec step runs first"
        return self.spec


def desired_objects(
    name: str, uid: str | None, spec: MountClassSpec, facts: BucketFacts
) -> dict[str, dict[str, Any]]:
    """What an S3MountClass writes: ``storageClass`` and, for Static, ``persistentVolume``
    (the live reconcile converges them; ``zonemount reconcile`` prints them)."""
    out = {"storageClass": render_storage_class(name, uid, spec, facts)}
    if spec.provisioning == "Static":
        out["persistentVolume"] = render_persistent_volume(name, uid, spec, facts)
    return out


async def _step_spec(run: _MountClassRun, out: conditions.StatusBuilder) -> None:
    run.spec = parse_mountclass(run.name, run.spec_dict)


async def _step_bucket(run: _MountClassRun, out: conditions.StatusBuilder) -> None:
    facts = await bucket_facts(run.parsed, run.kube, run.admin, run.endpoint_url)
    run.facts = facts
    out.fields.update(
        bucketName=facts.bucket_name,
        region=facts.region,
        availabilityZone=facts.availability_zone,
        availabilityZoneId=facts.availability_zone_id,
    )
    where = f" in {facts.availability_zone}" if facts.availability_zone else ""
    out.set("BucketReady", True, "BucketReady", f"bucket {facts.bucket_name}{where}")


async def _step_objects(run: _MountClassRun, out: conditions.StatusBuilder) -> None:
    assert run.facts is not None, "the bucket step runs first"
    spec, kube, name, events = run.parsed, run.kube, run.name, out.events
    want = desired_objects(name, run.uid, spec, run.facts)
    await _ensure_storage_class(kube, name, want["storageClass"], events)
    out.fields["storageClassName"] = spec.storage_class_name
    await _release_renamed(kube, name, run.status.get("storageClassName"), spec, events)
    pv_name = spec.storage_class_name
    if "persistentVolume" in want:
        await _ensure_pv(kube, name, want["persistentVolume"], events)
        out.fields["persistentVolumeName"] = pv_name
    else:
        have = await kube.get(PERSISTENTVOLUMES, pv_name)
        if have is not None and _owned_by(have, name):
            await kube.delete(PERSISTENTVOLUMES, pv_name)
            events.append(
                f"deleted PersistentVolume {pv_name} (provisioning is PerClaimPrefix now)"
            )
        out.fields["persistentVolumeName"] = None
    what = f"StorageClass {spec.storage_class_name}"
    if spec.provisioning == "Static":
        what += f" and PersistentVolume {spec.storage_class_name}"
    message = f"{what} written ({spec.provisioning})"
    # R-FLAGS-MEMORY-TARGET: what the mounts will cut, said where the class's author looks
    fit = option_table.fit_memory_args(spec.mount_options, run.memory_target_mib)
    if fit.warnings:
        message += "; the mounts cut its part sizes to fit: " + "; ".join(fit.warnings)
    out.set("StorageClassReady", True, "StorageClassReady", message)


def _waiting(message: str) -> tuple[tuple[str, str, str], ...]:
    return (("StorageClassReady", "WaitingForBucket", message),)


STEPS: tuple[conditions.Step[_MountClassRun], ...] = (
    conditions.Step("spec", "BucketReady", _step_spec, _waiting("waiting for a valid spec")),
    conditions.Step("bucket", "BucketReady", _step_bucket, _waiting("waiting for the bucket")),
    conditions.Step("objects", "StorageClassReady", _step_objects),
)


async def reconcile_mountclass(
    name: str,
    uid: str | None,
    spec_dict: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    generation: int | None,
    *,
    kube: KubeClient,
    admin: BucketAdmin | None = None,
    endpoint_url: str | None = None,
    now: dt.datetime | None = None,
    memory_target_mib: int = option_table.DEFAULT_MAX_MEMORY_TARGET_MIB,
) -> conditions.Outcome:
    """Converge the StorageClass (+ Static PV): :data:`STEPS` in order; never raises for
    spec/AWS/API trouble. ``memory_target_mib``: the mounts' --max-memory-target (the
    condition says what it makes them cut)."""
    run = _MountClassRun(
        name, uid, spec_dict, dict(status or {}), kube, admin, endpoint_url, memory_target_mib
    )
    out = conditions.StatusBuilder(conditions.MOUNTCLASS, status, generation, now=now)
    return await conditions.arun_steps(STEPS, run, out)


async def delete_mountclass(
    name: str, status: Mapping[str, Any] | None, spec_dict: Mapping[str, Any], kube: KubeClient
) -> list[str]:
    """Delete the StorageClass/PV this S3MountClass owns (idempotent)."""
    status = status or {}
    done: list[str] = []
    sc_name = status.get("storageClassName") or spec_dict.get("storageClassName") or name
    for ref, kind in ((STORAGECLASSES, "StorageClass"), (PERSISTENTVOLUMES, "PersistentVolume")):
        have = await kube.get(ref, str(sc_name))
        if have is not None and _owned_by(have, name) and await kube.delete(ref, str(sc_name)):
            done.append(f"deleted {kind} {sc_name}")
    return done
