"""Reconcile an ``S3ExpressBucket``: plain, idempotent functions over plain data.

``reconcile_bucket`` takes the object's name, namespace, spec, current status and generation
plus a :class:`BucketAdmin`, makes AWS match the spec, and returns the new status (a full
dict: every key the operator owns, ``None`` meaning "remove") together with the error that
stopped it, if any. It never raises for AWS or spec trouble: failures are conditions, and
the caller (a kopf handler, or ``zonemount reconcile``) decides on retry vs. permanent.

The ordered steps (:data:`STEPS`, run by :func:`conditions.run_steps`), each idempotent:
``plan`` (:func:`plan_bucket`, reads only; ``zonemount reconcile --dry-run`` prints it):
parse spec -> resolve AZ name <-> ID (EC2) -> the bucket name -> authorize against the
admin's :mod:`~zonemount_operator.tenancy` policy (role ARNs, import source); ``bucket``:
HeadBucket, CreateBucket with owner tags if missing, else prove ownership -> lifecycle ->
default encryption; ``access``: IAM session policy (create/update, attach to roles, detach
from others); ``import``: bookkeeping. ``delete_bucket_resources`` undoes what
``deletionPolicy`` allows; ``detect_drift`` is the timer's cheap check; ``run_import``
runs the bulk copy.

Ownership invariants (docs/security.md): every bucket and policy created here carries the
owning CR's identity as tags (:class:`names.Owner`: uid, namespace, name); the policy's
name is keyed by the uid. Nothing that a tenant can write (spec, status, objects in a
bucket) can make this module write to, re-point or delete a bucket or policy whose tags
name another owner: only those tags prove ownership, and only an ``adopt`` entry of the
admin's tenancy policy hands a pre-existing bucket to a CR. Every tenancy check runs before
the first AWS write of a reconcile, so a refused spec changes nothing in AWS.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zonemount_operator import conditions, names
from zonemount_operator.aws import BucketAdmin, Zone
from zonemount_operator.errors import (
    AwsError,
    SpecError,
)
from zonemount_operator.spec import BucketSpec, parse_bucket
from zonemount_operator.tenancy import NotAllowedError, TenancyPolicy
from zonemount_operator.transfer import CopyOptions, Progress, copy_prefix


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


def owner_of(name: str, namespace: str | None, uid: str | None) -> names.Owner:
    """The identity written on what this CR creates.

    ``uid`` is the API server's; without one (``zonemount reconcile`` on a file without
    metadata.uid) a stable stand-in is derived from namespace/name, so rerunning the same
    file finds its own bucket.
    """
    ns = namespace or "default"
    if not uid:
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zonemount-offline:{ns}/{name}"))
    return names.Owner(uid, ns, name)


def bucket_owner(admin: BucketAdmin, region: str, bucket: str) -> names.Owner | None:
    """Who a zonemount directory bucket belongs to (its owner tags); None if untagged/absent."""
    if names.parse_directory_bucket(bucket) is None:
        return None  # the operator creates directory buckets only
    try:
        return names.owner_from_tags(admin.bucket_tags(region, bucket))
    except AwsError as exc:
        if exc.code in {"NoSuchBucket", "404", "NotFound", "NoSuchTagSet"}:
            return None
        raise


def authorize_roles(
    admin: BucketAdmin, spec: BucketSpec, namespace: str, policy: TenancyPolicy
) -> set[str]:
    """Role names to attach, after the tenancy policy and IAM agree on every ARN (reads only)."""
    account = admin.account_id()
    wanted: set[str] = set()
    for arn in spec.role_arns:
        role = policy.check_role(namespace, arn, account, names.partition(spec.region))
        real = admin.role_arn(role.name, names.partition(spec.region))
        if real is None:
            raise NotAllowedError(
                f"access.roleArns entry {arn}: account {account} has no role {role.name}: "
                "create the role first",
                reason="RoleNotFound",
            )
        if real != str(role):
            raise NotAllowedError(
                f"access.roleArns entry {arn} names role {role.name}, whose real ARN is "
                f"{real}: IAM role names ignore the path, so the ARN must match exactly; "
                "use the role's real ARN",
                reason="RoleArnMismatch",
            )
        wanted.add(role.name)
    return wanted


def authorize_import(
    admin: BucketAdmin, spec: BucketSpec, namespace: str | None, policy: TenancyPolicy
) -> None:
    """The confused-deputy check: may this namespace copy from ``spec.import.source``?

    Run before any copy starts (reconcile and :func:`run_import` both call it); reads the
    source bucket's owner tags only when the admin did not list the source.
    """
    if spec.import_source is None:
        return
    policy.check_import_source(
        namespace or "",
        spec.import_source,
        lambda bucket: bucket_owner(admin, spec.region, bucket),
    )


def authorize_destination(admin: BucketAdmin, region: str, bucket: str, owner_uid: str) -> None:
    """Copy only into a bucket whose owner tags carry ``owner_uid`` (reads only)."""
    current = bucket_owner(admin, region, bucket)
    if current is None or current.uid != owner_uid:
        whose = str(current) if current is not None else "no owner"
        raise NotAllowedError(
            f"import destination {bucket} is not this object's bucket (its owner tags name "
            f"{whose}): nothing was copied; status.bucketName was not written by the operator",
            reason="BucketNotOwned",
        )


def _target_bucket(
    spec: BucketSpec,
    zone: Zone,
    owner: names.Owner,
    policy: TenancyPolicy,
    status: Mapping[str, Any],
) -> str:
    """The bucket this CR manages: an admin's adopt entry, else baseName--azid--x-s3."""
    adopted = policy.adoption(owner.namespace, owner.name)
    if adopted is not None:
        parsed = names.parse_directory_bucket(adopted)
        if parsed is None or parsed.az_id != zone.zone_id:
            raise SpecError(
                f"the tenancy policy hands bucket {adopted} to {owner}, but the spec's zone is "
                f"{zone.name} ({zone.zone_id}): fix the adopt entry or the spec's zone",
                reason="AdoptionMismatch",
            )
        return adopted
    bucket = names.directory_bucket_name(spec.base_name, zone.zone_id)
    recorded = status.get("bucketName")
    if recorded and recorded != bucket:
        raise SpecError(
            f"status.bucketName {recorded} is not the bucket this release derives ({bucket}; "
            "default names now include the namespace): if it was created by an earlier "
            "zonemount release, ask the cluster admin to hand it over with a tenancy adopt "
            f"entry {{namespace: {owner.namespace}, name: {owner.name}, bucket: {recorded}}}",
            reason="AdoptionRequired",
        )
    return bucket


def _claim_bucket(
    admin: BucketAdmin,
    spec: BucketSpec,
    bucket: str,
    zone: Zone,
    owner: names.Owner,
    policy: TenancyPolicy,
    events: list[str],
) -> None:
    """Create the bucket with owner tags, or prove an existing one is this CR's."""
    tags = owner.tags()
    if not admin.bucket_exists(spec.region, bucket) and admin.create_directory_bucket(
        spec.region, bucket, zone.zone_id, tags
    ):
        # AWS applies the tags at CreateBucket; S3 servers without create-time tags get them
        # here (a crash in between leaves an untagged bucket that needs an adopt entry).
        admin.tag_bucket(spec.region, bucket, tags)
        events.append(f"created directory bucket {bucket} in {zone.name} ({zone.zone_id})")
        return
    current = bucket_owner(admin, spec.region, bucket)
    if current is not None and current.uid == owner.uid:
        return
    if policy.adoption(owner.namespace, owner.name) == bucket:
        admin.tag_bucket(spec.region, bucket, tags)
        was = f" (was {current})" if current is not None else ""
        events.append(f"adopted directory bucket {bucket}{was}: tenancy adopt entry")
        return
    if current is not None:
        raise SpecError(
            f"directory bucket {bucket} belongs to {current} (uid {current.uid}): nothing was "
            "changed; choose another spec.baseName, or ask the cluster admin to hand the bucket "
            "over with a tenancy adopt entry",
            reason="BucketOwnedByAnother",
        )
    raise SpecError(
        f"directory bucket {bucket} already exists and carries no zonemount owner tags "
        "(created outside zonemount or by a release before owner tags): nothing was changed; "
        "choose another spec.baseName, or ask the cluster admin to adopt it with a tenancy "
        f"adopt entry {{namespace: {owner.namespace}, name: {owner.name}, bucket: {bucket}}}",
        reason="BucketNotManaged",
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


@dataclass(frozen=True)
class BucketPlan:
    """What a reconcile will make true, found with reads only (the first step; ``zonemount
    reconcile --dry-run`` prints it): the parsed spec, the zone, the bucket this CR manages,
    its ARN and the IAM roles its policy goes to, all after the tenancy checks."""

    spec: BucketSpec
    owner: names.Owner
    zone: Zone
    bucket: str
    arn: str
    roles: frozenset[str]

    def fields(self) -> dict[str, Any]:
        """The status keys the plan decides."""
        return {
            "bucketName": self.bucket,
            "availabilityZone": self.zone.name,
            "availabilityZoneId": self.zone.zone_id,
            "region": self.spec.region,
            "endpoint": names.zonal_endpoint(self.spec.region, self.zone.zone_id),
            "bucketArn": self.arn,
        }


def plan_bucket(
    name: str,
    namespace: str | None,
    spec_dict: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    admin: BucketAdmin,
    *,
    uid: str | None = None,
    policy: TenancyPolicy | None = None,
) -> BucketPlan:
    """Parse, resolve the zone, pick the bucket and run every tenancy check (reads only:
    nothing in AWS changes before all of them pass). Raises SpecError/AwsError."""
    policy = policy if policy is not None else TenancyPolicy()
    owner = owner_of(name, namespace, uid)
    spec = parse_bucket(name, spec_dict, namespace=namespace)
    zone = resolve_zone(admin, spec)
    bucket = _target_bucket(spec, zone, owner, policy, status or {})
    roles = authorize_roles(admin, spec, owner.namespace, policy)
    authorize_import(admin, spec, owner.namespace, policy)
    arn = names.directory_bucket_arn(spec.region, admin.account_id(), bucket)
    return BucketPlan(spec, owner, zone, bucket, arn, frozenset(roles))


@dataclass
class _BucketRun:
    """The context the steps of one bucket reconcile share."""

    name: str
    namespace: str | None
    uid: str | None
    spec_dict: Mapping[str, Any]
    status: Mapping[str, Any]
    admin: BucketAdmin
    policy: TenancyPolicy
    plan: BucketPlan | None = None

    @property
    def planned(self) -> BucketPlan:
        assert self.plan is not None, "the plan step runs first"
        return self.plan


def _step_plan(run: _BucketRun, out: conditions.StatusBuilder) -> None:
    run.plan = plan_bucket(
        run.name,
        run.namespace,
        run.spec_dict,
        run.status,
        run.admin,
        uid=run.uid,
        policy=run.policy,
    )
    out.fields.update(run.plan.fields())


def _step_bucket(run: _BucketRun, out: conditions.StatusBuilder) -> None:
    plan, admin = run.planned, run.admin
    spec, zone = plan.spec, plan.zone
    _claim_bucket(admin, spec, plan.bucket, zone, plan.owner, run.policy, out.events)
    admin.put_lifecycle(spec.region, plan.bucket, spec.expire_after_days, spec.abort_mpu_after_days)
    admin.put_encryption(spec.region, plan.bucket, spec.kms_key_arn)
    out.set(
        "BucketReady",
        True,
        "BucketReady",
        f"directory bucket {plan.bucket} exists in {zone.name} ({zone.zone_id})",
    )


def _step_access(run: _BucketRun, out: conditions.StatusBuilder) -> None:
    plan = run.planned
    policy_arn = _reconcile_access(
        run.admin, plan.spec, plan.bucket, plan.arn, plan.owner, set(plan.roles)
    )
    out.fields["policyArn"] = policy_arn
    if policy_arn is None:
        out.set(
            "AccessReady",
            True,
            "NoAccessRequested",
            "spec.access.roleArns is empty: no policy written",
        )
        return
    out.set(
        "AccessReady",
        True,
        "PolicyAttached",
        f"s3express:CreateSession ({plan.spec.session_mode}) attached to "
        f"{len(plan.spec.role_arns)} role(s)",
    )


def _step_import(run: _BucketRun, out: conditions.StatusBuilder) -> None:
    out.put(_import_condition(run.planned.spec, run.status, out.generation, out.now))


_WAITING_FOR_BUCKET = (("AccessReady", "WaitingForBucket", "waiting for the bucket"),)
STEPS: tuple[conditions.Step[_BucketRun], ...] = (
    # Tenancy checks (reads only) before the first AWS write.
    conditions.Step("plan", "BucketReady", _step_plan, _WAITING_FOR_BUCKET),
    conditions.Step("bucket", "BucketReady", _step_bucket, _WAITING_FOR_BUCKET),
    conditions.Step("access", "AccessReady", _step_access),
    conditions.Step("import", "ImportComplete", _step_import),
)


def reconcile_bucket(
    name: str,
    namespace: str | None,
    spec_dict: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    generation: int | None,
    *,
    admin: BucketAdmin,
    uid: str | None = None,
    policy: TenancyPolicy | None = None,
    now: dt.datetime | None = None,
) -> conditions.Outcome:
    """Make AWS match the spec: :data:`STEPS` in order; returns the full new status (see
    the module docstring).

    ``uid`` is the CR's metadata.uid (its ownership key); ``policy`` the admin's tenancy
    policy (default: :class:`TenancyPolicy` defaults, never unrestricted).
    """
    run = _BucketRun(
        name,
        namespace,
        uid,
        spec_dict,
        dict(status or {}),
        admin,
        policy if policy is not None else TenancyPolicy(),
    )
    out = conditions.StatusBuilder(conditions.BUCKET, status, generation, now=now)
    return conditions.run_steps(STEPS, run, out)


def _delete_owned_policy(admin: BucketAdmin, arn: str, owner: names.Owner) -> str | None:
    """Delete the policy if its tags name ``owner``; returns what happened (None: absent)."""
    tags = admin.policy_tags(arn)
    if tags is None:
        return None
    current = names.owner_from_tags(tags)
    if current is None or current.uid != owner.uid:
        return f"left IAM policy {arn} alone: its tags do not name {owner}"
    admin.delete_policy(arn)
    return f"deleted IAM policy {arn}"


def _reconcile_access(
    admin: BucketAdmin,
    spec: BucketSpec,
    bucket: str,
    bucket_arn: str,
    owner: names.Owner,
    wanted: set[str],
) -> str | None:
    arn = names.policy_arn(spec.region, admin.account_id(), owner.uid)
    if not spec.role_arns:
        _delete_owned_policy(admin, arn, owner)
        return None
    tags = admin.policy_tags(arn)
    current = names.owner_from_tags(tags) if tags is not None else None
    if tags is not None and (current is None or current.uid != owner.uid):
        raise SpecError(
            f"IAM policy {arn} exists and its tags do not name {owner}: nothing was changed; "
            "a cluster admin must delete or re-tag it",
            reason="PolicyOwnedByAnother",
        )
    arn = admin.ensure_policy(
        spec.region,
        owner.uid,
        session_policy(bucket_arn, spec.session_mode),
        f"zonemount: s3express:CreateSession on {bucket} for {owner}",
        owner.tags(),
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
    *,
    uid: str | None = None,
    namespace: str | None = None,
) -> list[str]:
    """Delete this CR's policy; with ``deletionPolicy: Delete`` empty and delete its bucket.

    Only what carries this CR's owner tags is touched: the policy is the one keyed by
    ``uid``, and a bucket named in ``status.bucketName`` (which a tenant may be able to
    write) is emptied only if its tags name this CR. Idempotent: safe to call again after a
    partial failure (raises AwsError to retry). Returns human-readable lines of what was done.
    """
    status = status or {}
    owner = owner_of(name, namespace, uid)
    done: list[str] = []
    bucket = status.get("bucketName")
    region = status.get("region") or spec_dict.get("region")
    if not region:
        return done  # nothing was ever created
    line = _delete_owned_policy(
        admin, names.policy_arn(str(region), admin.account_id(), owner.uid), owner
    )
    if line:
        done.append(line)
    if not bucket:
        return done
    if spec_dict.get("deletionPolicy", "Retain") != "Delete":
        done.append(f"retained bucket {bucket} (deletionPolicy: Retain)")
        return done
    if not admin.bucket_exists(str(region), str(bucket)):
        return done
    current = bucket_owner(admin, str(region), str(bucket))
    if current is None or current.uid != owner.uid:
        whose = f"it belongs to {current}" if current else "it carries no owner tags"
        done.append(f"left bucket {bucket} alone: {whose}, not {owner}")
        return done
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
    namespace: str | None = None,
    policy: TenancyPolicy | None = None,
    owner_uid: str,
) -> dict[str, Any]:
    """Copy ``spec.import_source`` into the bucket; returns the final ``status.import``.

    ``report`` receives intermediate ``status.import`` dicts (phase Copying). Resumable: a
    rerun skips objects already copied. Raises AwsError only for setup failures, and
    NotAllowedError before copying anything when ``namespace`` may not read the source under
    ``policy`` (default: the restrictive defaults) or when ``status.bucketName`` is not the
    bucket of the object whose uid is ``owner_uid`` (status is no proof: its owner tags are).
    """
    assert spec.import_source is not None
    authorize_import(admin, spec, namespace, policy if policy is not None else TenancyPolicy())
    src = names.parse_s3_url(spec.import_source, "spec.import.source")
    bucket = str(status["bucketName"])
    authorize_destination(admin, spec.region, bucket, owner_uid)
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
    return conditions.with_ready(
        status.get("conditions"),
        [cond],
        conditions.BUCKET.types,
        conditions.BUCKET.required,
        generation,
        now=now,
    )
