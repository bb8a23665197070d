"""Reconcile an ``S3ExpressBucket``: plain, idempotent functions over plain data.

``reconcile_bucket`` takes the object's name, namespace, spec, current status and generation
plus a :class:`BucketAdmin`, makes AWS match the spec, and returns the new status (a full
dict: every key the operator owns, ``None`` meaning "remove") together with the error that
stopped it, if any. It never raises for AWS or spec trouble: failures are conditions, and
the caller (a kopf handler, or ``zonemount reconcile``) decides on retry vs. permanent.

Steps, each idempotent: parse spec -> resolve AZ name <-> ID (EC2) -> validate the bucket
name -> HeadBucket, CreateBucket if missing (``BucketAlreadyOwnedByYou`` = success) ->
lifecycle -> default encryption -> IAM session policy (create/update, attach to roles,
detach from others) -> import bookkeeping. ``delete_bucket_resources`` undoes what
``deletionPolicy`` allows; ``detect_drift`` is the timer's cheap check; ``run_import``
runs the bulk copy.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zonemount_operator import conditions, names
from zonemount_operator.aws import BucketAdmin, Zone
from zonemount_operator.errors import (
    AwsError,
    SpecError,
    ZonemountError,
)
from zonemount_operator.spec import BucketSpec, parse_bucket
from zonemount_operator.transfer import CopyOptions, Progress, copy_prefix

T = conditions.BUCKET_TYPES
REQUIRED = ("BucketReady", "AccessReady", "ImportComplete")


@dataclass
class Outcome:
    """What a reconcile produced: the status to write and the error that stopped it."""

    status: dict[str, Any]
    error: ZonemountError | None = None
    events: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return conditions.is_true(self.status.get("conditions"), "Ready")


def resolve_zone(admin: BucketAdmin, spec: BucketSpec) -> Zone:
    """AZ name -> ID or ID -> name via EC2 DescribeAvailabilityZones."""
    zones = admin.zones(spec.region)
    for zone in zones:
        if spec.availability_zone_id and zone.zone_id == spec.availability_zone_id:
            return zone
        if spec.availability_zone and zone.name == spec.availability_zone:
            return zone
    wanted = spec.availability_zone_id or spec.availability_zone
    choices = ", ".join(f"{z.name} ({z.zone_id})" for z in zones) or "none"
    raise SpecError(
        f"availability zone {wanted!r} does not exist in region {spec.region}: "
        f"pick one of {choices}",
        reason="UnknownAvailabilityZone",
    )


def session_policy(bucket_arn: str, session_mode: str) -> dict[str, Any]:
    """Least privilege: CreateSession on this bucket only (ReadOnly pins SessionMode)."""
    statement: dict[str, Any] = {
        "Sid": "ZonemountCreateSession",
        "Effect": "Allow",
        "Action": "s3express:CreateSession",
        "Resource": bucket_arn,
    }
    if session_mode == "ReadOnly":
        statement["Condition"] = {"StringEquals": {"s3express:SessionMode": "ReadOnly"}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _import_condition(
    spec: BucketSpec, status: Mapping[str, Any], gen: int | None, now: dt.datetime
) -> conditions.Condition:
    if spec.import_source is None:
        return conditions.make(
            "ImportComplete", True, "NoImport", "no import requested", gen, now=now
        )
    imp = status.get("import") or {}
    if imp.get("source") == spec.import_source and imp.get("phase") == "Complete":
        return conditions.make(
            "ImportComplete",
            True,
            "ImportComplete",
            f"copied {imp.get('objectsCopied', 0)} objects, skipped "
            f"{imp.get('objectsSkipped', 0)} up-to-date from {spec.import_source}",
            gen,
            now=now,
        )
    if imp.get("source") == spec.import_source and imp.get("phase") == "Failed":
        return conditions.make(
            "ImportComplete",
            False,
            "ImportFailed",
            str(imp.get("message", "import failed")),
            gen,
            now=now,
        )
    return conditions.make(
        "ImportComplete",
        False,
        "ImportPending",
        f"import from {spec.import_source} starts when the bucket is ready",
        gen,
        now=now,
    )


def reconcile_bucket(
    name: str,
    namespace: str | None,
    spec_dict: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    generation: int | None,
    *,
    admin: BucketAdmin,
    now: dt.datetime | None = None,
) -> Outcome:
    """Make AWS match the spec; returns the full new status (see module docstring)."""
    now = now or dt.datetime.now(dt.UTC)
    status = dict(status or {})
    current = status.get("conditions")
    new: dict[str, Any] = {"observedGeneration": generation}
    updates: list[conditions.Condition] = []

    def finish(error: ZonemountError | None, events: list[str] | None = None) -> Outcome:
        new["conditions"] = conditions.with_ready(
            current, updates, T, REQUIRED, generation, now=now
        )
        return Outcome({**status, **new}, error, events or [])

    try:
        spec = parse_bucket(name, spec_dict)
        zone = resolve_zone(admin, spec)
        bucket = names.directory_bucket_name(spec.base_name, zone.zone_id)
    except (SpecError, AwsError) as exc:
        updates.append(
            conditions.make("BucketReady", False, exc.reason, str(exc), generation, now=now)
        )
        updates.append(
            conditions.make(
                "AccessReady",
                None,
                "WaitingForBucket",
                "waiting for the bucket",
                generation,
                now=now,
            )
        )
        return finish(exc)

    new.update(
        bucketName=bucket,
        availabilityZone=zone.name,
        availabilityZoneId=zone.zone_id,
        region=spec.region,
        endpoint=names.zonal_endpoint(spec.region, zone.zone_id),
    )
    events: list[str] = []
    try:
        account = admin.account_id()
        arn = names.directory_bucket_arn(spec.region, account, bucket)
        new["bucketArn"] = arn
        exists = admin.bucket_exists(spec.region, bucket)
        if not exists and admin.create_directory_bucket(spec.region, bucket, zone.zone_id):
            events.append(f"created directory bucket {bucket} in {zone.name} ({zone.zone_id})")
        admin.put_lifecycle(spec.region, bucket, spec.expire_after_days, spec.abort_mpu_after_days)
        admin.put_encryption(spec.region, bucket, spec.kms_key_arn)
    except AwsError as exc:
        updates.append(
            conditions.make("BucketReady", False, exc.reason, str(exc), generation, now=now)
        )
        updates.append(
            conditions.make(
                "AccessReady",
                None,
                "WaitingForBucket",
                "waiting for the bucket",
                generation,
                now=now,
            )
        )
        return finish(exc, events)
    updates.append(
        conditions.make(
            "BucketReady",
            True,
            "BucketReady",
            f"directory bucket {bucket} exists in {zone.name} ({zone.zone_id})",
            generation,
            now=now,
        )
    )

    try:
        policy_arn = _reconcile_access(admin, spec, bucket, arn)
    except (AwsError, SpecError) as exc:
        updates.append(
            conditions.make("AccessReady", False, exc.reason, str(exc), generation, now=now)
        )
        return finish(exc, events)
    new["policyArn"] = policy_arn
    if policy_arn is None:
        updates.append(
            conditions.make(
                "AccessReady",
                True,
                "NoAccessRequested",
                "spec.access.roleArns is empty: no policy written",
                generation,
                now=now,
            )
        )
    else:
        updates.append(
            conditions.make(
                "AccessReady",
                True,
                "PolicyAttached",
                f"s3express:CreateSession ({spec.session_mode}) attached to "
                f"{len(spec.role_arns)} role(s)",
                generation,
                now=now,
            )
        )
    updates.append(_import_condition(spec, status, generation, now=now))
    return finish(None, events)


def _reconcile_access(
    admin: BucketAdmin, spec: BucketSpec, bucket: str, bucket_arn: str
) -> str | None:
    policy = names.policy_name(bucket)
    arn_guess = names.policy_arn(spec.region, admin.account_id(), bucket)
    if not spec.role_arns:
        admin.delete_policy(arn_guess)
        return None
    wanted = {names.role_name_from_arn(r) for r in spec.role_arns}
    arn = admin.ensure_policy(
        policy,
        session_policy(bucket_arn, spec.session_mode),
        f"zonemount: s3express:CreateSession on {bucket}",
    )
    attached = admin.attached_roles(arn)
    for role in sorted(wanted - attached):
        admin.attach_role_policy(role, arn)
    for role in sorted(attached - wanted):
        admin.detach_role_policy(role, arn)
    return arn


def delete_bucket_resources(
    name: str,
    spec_dict: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    admin: BucketAdmin,
) -> list[str]:
    """Detach/delete the policy; with ``deletionPolicy: Delete`` empty and delete the bucket.

    Idempotent: safe to call again after a partial failure (raises AwsError to retry).
    Returns human-readable lines of what was done.
    """
    status = status or {}
    done: list[str] = []
    bucket = status.get("bucketName")
    region = status.get("region") or spec_dict.get("region")
    policy_arn = status.get("policyArn")
    if bucket and region and not policy_arn:
        policy_arn = names.policy_arn(str(region), admin.account_id(), str(bucket))
    if policy_arn:
        admin.delete_policy(str(policy_arn))
        done.append(f"deleted IAM policy {policy_arn}")
    if not bucket or not region:
        return done  # nothing was ever created
    if spec_dict.get("deletionPolicy", "Retain") != "Delete":
        done.append(f"retained bucket {bucket} (deletionPolicy: Retain)")
        return done
    if admin.bucket_exists(str(region), str(bucket)):
        count = admin.empty_bucket(str(region), str(bucket))
        admin.delete_bucket(str(region), str(bucket))
        done.append(f"deleted bucket {bucket} and {count} objects (deletionPolicy: Delete)")
    return done


def detect_drift(status: Mapping[str, Any], admin: BucketAdmin) -> list[str]:
    """Cheap out-of-band checks for a bucket that was Ready: what is missing now."""
    drift: list[str] = []
    bucket, region = status.get("bucketName"), status.get("region")
    if not bucket or not region or not conditions.is_true(status.get("conditions"), "BucketReady"):
        return drift
    if not admin.bucket_exists(str(region), str(bucket)):
        drift.append(f"bucket {bucket} was deleted out of band")
    policy_arn = status.get("policyArn")
    if policy_arn and not admin.policy_exists(str(policy_arn)):
        drift.append(f"IAM policy {policy_arn} was deleted out of band")
    return drift


def import_status(
    source: str, progress: Progress, phase: str, started: str, message: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": source,
        "phase": phase,
        "objectsCopied": progress.objects_copied,
        "objectsSkipped": progress.objects_skipped,
        "objectsFailed": progress.objects_failed,
        "objectsTotal": progress.objects_total,
        "bytesCopied": progress.bytes_copied,
        "bytesTotal": progress.bytes_total,
        "bytesPerSecond": int(progress.bytes_per_second),
        "startedAt": started,
    }
    if phase in {"Complete", "Failed"}:
        out["completedAt"] = conditions.now_iso()
    if message:
        out["message"] = message
    return out


def run_import(
    spec: BucketSpec,
    status: Mapping[str, Any],
    admin: BucketAdmin,
    report: Callable[[dict[str, Any]], None],
    *,
    stop: threading.Event | None = None,
    source_client: Any = None,
) -> dict[str, Any]:
    """Copy ``spec.import_source`` into the bucket; returns the final ``status.import``.

    ``report`` receives intermediate ``status.import`` dicts (phase Copying). Resumable: a
    rerun skips objects already copied. Raises AwsError only for setup failures.
    """
    assert spec.import_source is not None
    src = names.parse_s3_url(spec.import_source, "spec.import.source")
    bucket = str(status["bucketName"])
    started = conditions.now_iso()
    dst_client = admin.s3(spec.region)
    src_client = source_client or dst_client

    def on_progress(p: Progress) -> None:
        report(import_status(spec.import_source or "", p, "Copying", started))

    final = copy_prefix(
        src_client,
        src,
        dst_client,
        names.S3Url(bucket, src.prefix),
        CopyOptions(concurrency=spec.import_concurrency),
        on_progress=on_progress,
        stop=stop,
    )
    if final.objects_failed:
        return import_status(
            spec.import_source,
            final,
            "Failed",
            started,
            f"{final.objects_failed} objects failed, first: {final.first_error}; "
            "the import resumes (skipping copied objects) on the next reconcile",
        )
    if stop is not None and stop.is_set():
        return import_status(spec.import_source, final, "Copying", started)
    return import_status(spec.import_source, final, "Complete", started)


def import_conditions(
    spec_dict: Mapping[str, Any], status: Mapping[str, Any], generation: int | None, name: str = ""
) -> list[conditions.Condition]:
    """Recompute ImportComplete and Ready after ``status.import`` changed."""
    now = dt.datetime.now(dt.UTC)
    spec = parse_bucket(name or str(spec_dict.get("baseName", "x")), spec_dict)
    cond = _import_condition(spec, status, generation, now=now)
    return conditions.with_ready(status.get("conditions"), [cond], T, REQUIRED, generation, now=now)
