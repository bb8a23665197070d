"""Typed views of the two CRs' specs, parsed from plain dicts.

The API server validates the schema at admission (crds/*.yaml); this module re-checks what
reconcile relies on, because ``zonemount reconcile -f FILE`` runs without an API server.
Invariant: a parsed spec is internally consistent (exactly one zone field, KMS key iff
SSE-KMS, ...); anything else raises :class:`SpecError` with the field path and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zonemount_contract import mount_options as option_table
from zonemount_contract.names import (
    KMS_KEY_ARN_RE,
    ROLE_ARN_RE,
    NameRuleError,
    check_bucket_name,
    check_prefix,
    is_directory_bucket,
)

from zonemount_operator import names
from zonemount_operator.errors import SpecError

KMS_ARN_RE = KMS_KEY_ARN_RE


# How an expected YAML type reads in an error ("must be an integer", not "must be a int").
_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    str: "a string",
    bool: "true or false",
    list: "a list",
    Mapping: "a mapping (key: value lines)",
}


def _get(d: Mapping[str, Any], key: str, kind: type, path: str, default: Any = None) -> Any:
    value = d.get(key, default)
    if value is None:
        return default
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        expected = _KIND_NAMES.get(kind, f"of type {kind.__name__}")
        raise SpecError(f"{path} must be {expected}, got {value!r}")
    return value


def _enum(d: Mapping[str, Any], key: str, choices: tuple[str, ...], path: str) -> str:
    value = _get(d, key, str, path, choices[0])
    if value not in choices:
        raise SpecError(f"{path} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _known(d: Mapping[str, Any], keys: set[str], path: str) -> None:
    unknown = sorted(set(d) - keys)
    if unknown:
        raise SpecError(
            f"{path}.{unknown[0]} is not a known field (typo?); known: {', '.join(sorted(keys))}"
        )


BUCKET_FIELDS = {
    "region",
    "availabilityZone",
    "availabilityZoneId",
    "baseName",
    "deletionPolicy",
    "lifecycle",
    "encryption",
    "access",
    "import",
}
MOUNTCLASS_FIELDS = {
    "bucketRef",
    "bucketName",
    "region",
    "endpointUrl",
    "availabilityZone",
    "prefix",
    "provisioning",
    "storageClassName",
    "capacity",
    "authenticationSource",
    "roleArn",
    "claimRef",
    "reclaimPolicy",
    "mountOptions",
    "cacheXz",
}
_ROLE_ARN = ROLE_ARN_RE


def _positive(d: Mapping[str, Any], key: str, path: str) -> int | None:
    value = _get(d, key, int, path)
    if value is not None and value < 1:
        raise SpecError(f"{path} must be at least 1, got {value}")
    return value  # type: ignore[no-any-return]


def _abort_days(lifecycle: Mapping[str, Any]) -> int | None:
    path = "spec.lifecycle.abortIncompleteMultipartUploadAfterDays"
    days = _get(lifecycle, "abortIncompleteMultipartUploadAfterDays", int, path)
    if days is None:
        return DEFAULT_ABORT_MPU_DAYS
    if days < 0:
        raise SpecError(f"{path} must be 0 (off) or a number of days, got {days}")
    return days or None


@dataclass(frozen=True)
class BucketSpec:
    region: str
    base_name: str
    availability_zone: str | None
    availability_zone_id: str | None
    deletion_policy: str = "Retain"
    expire_after_days: int | None = None
    abort_mpu_after_days: int | None = None
    encryption: str = "SSE-S3"
    kms_key_arn: str | None = None
    role_arns: tuple[str, ...] = ()
    session_mode: str = "ReadWrite"
    import_source: str | None = None
    import_concurrency: int = 32
    import_workers: int = 1  # > 1: an Indexed Job of that many shards (importjob.py)


# Incomplete multipart uploads (a crashed writer's parts) are aborted after this many days
# unless spec.lifecycle.abortIncompleteMultipartUploadAfterDays says otherwise (0: never).
# The FUSE client sweeps its own stale uploads at mount; this rule catches the rest.
DEFAULT_ABORT_MPU_DAYS = 7


def _bucket_zone(spec: Mapping[str, Any], region: str) -> tuple[str | None, str | None]:
    """(availabilityZone, availabilityZoneId): exactly one of them, each well-formed."""
    az = _get(spec, "availabilityZone", str, "spec.availabilityZone")
    az_id = _get(spec, "availabilityZoneId", str, "spec.availabilityZoneId")
    if (az is None) == (az_id is None):
        raise SpecError(
            "set exactly one of spec.availabilityZone (e.g. us-east-1d) "
            "or spec.availabilityZoneId (e.g. use1-az4)"
        )
    if az is not None:
        names.validate_az_name(az)
        if not az.startswith(region):
            raise SpecError(f"spec.availabilityZone {az!r} is not in region {region!r}")
    if az_id is not None:
        names.validate_az_id(az_id)
    return az, az_id


def _bucket_encryption(spec: Mapping[str, Any]) -> tuple[str, str | None]:
    """(type, kmsKeyArn): a KMS key iff SSE-KMS."""
    encryption = _get(spec, "encryption", Mapping, "spec.encryption", {})
    _known(encryption, {"type", "kmsKeyArn"}, "spec.encryption")
    enc_type = _enum(encryption, "type", ("SSE-S3", "SSE-KMS"), "spec.encryption.type")
    kms = _get(encryption, "kmsKeyArn", str, "spec.encryption.kmsKeyArn")
    if (enc_type == "SSE-KMS") != (kms is not None):
        raise SpecError(
            "spec.encryption.kmsKeyArn is required with SSE-KMS and not allowed otherwise"
        )
    if kms is not None and not KMS_ARN_RE.match(kms):
        raise SpecError(f"spec.encryption.kmsKeyArn {kms!r} is not a KMS key ARN")
    return enc_type, kms


def _bucket_access(spec: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """(role ARNs, sorted and unique; session mode)."""
    access = _get(spec, "access", Mapping, "spec.access", {})
    _known(access, {"roleArns", "sessionMode"}, "spec.access")
    roles = tuple(_get(access, "roleArns", list, "spec.access.roleArns", []))
    for arn in roles:
        names.role_name_from_arn(str(arn))
    mode = _enum(access, "sessionMode", ("ReadWrite", "ReadOnly"), "spec.access.sessionMode")
    return tuple(sorted(set(roles))), mode


def _bucket_import(spec: Mapping[str, Any]) -> tuple[str | None, int, int]:
    """(source URL, concurrency, workers)."""
    imp = _get(spec, "import", Mapping, "spec.import", {})
    _known(imp, {"source", "concurrency", "workers"}, "spec.import")
    source = _get(imp, "source", str, "spec.import.source")
    if source is not None:
        url = names.parse_s3_url(source, "spec.import.source")
        if url.prefix and not url.prefix.endswith("/"):
            raise SpecError(
                f"spec.import.source {source!r} must end with '/' (directory buckets list whole "
                f"path segments only): use {source}/"
            )
    return (
        source,
        _positive(imp, "concurrency", "spec.import.concurrency") or 32,
        _positive(imp, "workers", "spec.import.workers") or 1,
    )


def parse_bucket(name: str, spec: Mapping[str, Any], namespace: str | None = None) -> BucketSpec:
    """Parse an S3ExpressBucket spec (``name`` is metadata.name; with ``namespace`` the
    baseName default is :func:`names.default_base_name`)."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec must be an object")
    _known(spec, BUCKET_FIELDS, "spec")
    region = _get(spec, "region", str, "spec.region")
    if not region:
        raise SpecError("spec.region is required: set it to the bucket's region, e.g. us-east-1")
    names.validate_region(region)
    az, az_id = _bucket_zone(spec, region)
    base = _get(spec, "baseName", str, "spec.baseName", None)
    if base is None:
        base = names.default_base_name(namespace, name)
    # Validate the base now (with a placeholder AZ ID when only the name is known).
    names.directory_bucket_name(base, az_id or "xxxx0-az0")
    lifecycle = _get(spec, "lifecycle", Mapping, "spec.lifecycle", {})
    _known(
        lifecycle, {"expireAfterDays", "abortIncompleteMultipartUploadAfterDays"}, "spec.lifecycle"
    )
    enc_type, kms = _bucket_encryption(spec)
    roles, session_mode = _bucket_access(spec)
    source, concurrency, workers = _bucket_import(spec)
    return BucketSpec(
        region=region,
        base_name=base,
        availability_zone=az,
        availability_zone_id=az_id,
        deletion_policy=_enum(spec, "deletionPolicy", ("Retain", "Delete"), "spec.deletionPolicy"),
        expire_after_days=_positive(lifecycle, "expireAfterDays", "spec.lifecycle.expireAfterDays"),
        abort_mpu_after_days=_abort_days(lifecycle),
        encryption=enc_type,
        kms_key_arn=kms,
        role_arns=roles,
        session_mode=session_mode,
        import_source=source,
        import_concurrency=concurrency,
        import_workers=workers,
    )


# Typed mount options -> mount-s3 style flags (one StorageClass/PV mountOptions line each),
# from the one option table (zonemount_contract.mount_options: TYPED keys and value domains).


def mount_option_lines(
    options: Mapping[str, Any], *, directory_bucket: bool | None = None
) -> list[str]:
    """Typed ``spec.mountOptions`` -> sorted flag lines (``--allow-delete``, ``--uid=1000``).

    Values are checked against the table's allow-list domain, the one the CSI node enforces,
    so every line the operator writes is accepted downstream.
    """
    lines: list[str] = []
    for key, value in options.items():
        path = f"spec.mountOptions.{key}"
        option = option_table.TYPED.get(key)
        if option is None:
            allowed = ", ".join(sorted(option_table.TYPED))
            raise SpecError(f"{path} is not an allowed mount option; allowed: {allowed}")
        if not option.takes_value:
            if not isinstance(value, bool):
                raise SpecError(f"{path} must be true or false, got {value!r}")
            if value:
                lines.append(option_table.render(option))
            continue
        if option.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(f"{path} must be an integer, got {value!r}")
        try:
            option_table.check_value(option, str(value))
        except option_table.OptionValueError as exc:
            raise SpecError(f"{path}: {exc}; got {value!r}") from None
        lines.append(option_table.render(option, str(value)))
    given = {line[2:].partition("=")[0]: line.partition("=")[2] or None for line in lines}
    try:
        option_table.check_combination(given, directory_bucket=directory_bucket)
    except option_table.OptionValueError as exc:
        raise SpecError(f"spec.mountOptions: {exc}") from None
    return sorted(lines)


@dataclass(frozen=True)
class MountClassSpec:
    storage_class_name: str
    bucket_ref: tuple[str, str] | None  # (namespace, name)
    bucket_name: str | None
    region: str | None
    endpoint_url: str | None
    availability_zone: str | None
    prefix: str = ""
    provisioning: str = "PerClaimPrefix"
    capacity: str = "1Ti"
    authentication_source: str = "driver"
    reclaim_policy: str = "Retain"
    mount_options: list[str] = field(default_factory=list)
    role_arn: str | None = None  # with authenticationSource: pod
    claim_ref: tuple[str, str] | None = None  # (namespace, name): the Static PV's only claim
    cache_xz: str | None = None  # shared block cache bucket (SC parameter / PV attribute)


def _claim_ref(spec: Mapping[str, Any], provisioning: str) -> tuple[str, str] | None:
    """Static provisioning pre-binds its PV to one claim, so no other namespace's claim can
    bind it first (Kubernetes binds an unreserved PV to any matching claim)."""
    ref = _get(spec, "claimRef", Mapping, "spec.claimRef")
    if provisioning != "Static":
        if ref is not None:
            raise SpecError("spec.claimRef only applies with spec.provisioning: Static")
        return None
    if ref is None:
        raise SpecError(
            "spec.provisioning: Static needs spec.claimRef {namespace, name}: the claim the "
            "PersistentVolume is reserved for (otherwise any namespace could bind it first)"
        )
    _known(ref, {"namespace", "name"}, "spec.claimRef")
    namespace = _get(ref, "namespace", str, "spec.claimRef.namespace")
    claim = _get(ref, "name", str, "spec.claimRef.name")
    if not namespace or not claim:
        raise SpecError("spec.claimRef needs both namespace and name")
    return (namespace, claim)


def _cache_xz(spec: Mapping[str, Any], bucket_name: str | None) -> str | None:
    """The shared cache bucket: an administrator's choice (an S3MountClass is cluster-scoped),
    since its writers decide what every mount using it reads. It becomes the StorageClass
    parameter and the Static PV's attribute ``cacheXz``, never a mount option."""
    bucket = _get(spec, "cacheXz", str, "spec.cacheXz")
    if bucket is None:
        return None
    try:
        checked = check_bucket_name(bucket)
    except NameRuleError as exc:
        raise SpecError(f"spec.cacheXz: {exc}") from None
    if checked == bucket_name:
        raise SpecError("spec.cacheXz must name another bucket than the one mounted")
    return checked


_Target = tuple[tuple[str, str] | None, str | None, str | None, str | None, str | None]


def _mountclass_target(spec: Mapping[str, Any]) -> _Target:
    """(bucketRef as (namespace, name), bucketName, region, endpointUrl, availabilityZone):
    an S3ExpressBucket reference, or a bucket named with its region (and optional zone)."""
    ref = _get(spec, "bucketRef", Mapping, "spec.bucketRef")
    bucket_name = _get(spec, "bucketName", str, "spec.bucketName")
    if (ref is None) == (bucket_name is None):
        raise SpecError("set exactly one of spec.bucketRef (an S3ExpressBucket) or spec.bucketName")
    region = _get(spec, "region", str, "spec.region")
    endpoint = _get(spec, "endpointUrl", str, "spec.endpointUrl")
    if endpoint is not None:
        names.validate_endpoint_url(endpoint, "spec.endpointUrl")
    az = _get(spec, "availabilityZone", str, "spec.availabilityZone")
    if ref is None:
        if not region:
            raise SpecError("spec.region is required with spec.bucketName")
        names.validate_region(region)
        if az is not None:
            names.validate_az_name(az)
        return None, bucket_name, region, endpoint, az
    if region or endpoint or az:
        raise SpecError(
            "spec.region, spec.endpointUrl and spec.availabilityZone go with spec.bucketName; "
            "with spec.bucketRef they come from the S3ExpressBucket"
        )
    ref_name = _get(ref, "name", str, "spec.bucketRef.name")
    ref_ns = _get(ref, "namespace", str, "spec.bucketRef.namespace")
    if not ref_name or not ref_ns:
        raise SpecError("spec.bucketRef needs both name and namespace")
    return (ref_ns, ref_name), None, region, endpoint, az


def _mountclass_prefix(spec: Mapping[str, Any]) -> str:
    prefix = _get(spec, "prefix", str, "spec.prefix", "")
    if prefix and (prefix.startswith("/") or not prefix.endswith("/")):
        raise SpecError(f"spec.prefix {prefix!r} must not start with '/' and must end with '/'")
    try:
        check_prefix(prefix)  # the CSI driver's rule for basePrefix and volume prefixes
    except NameRuleError as exc:
        raise SpecError(f"spec.prefix: {exc}") from None
    return str(prefix)


def _mountclass_auth(spec: Mapping[str, Any]) -> tuple[str, str | None]:
    """(authenticationSource, roleArn): a role ARN iff the pods' own credentials."""
    auth = _enum(spec, "authenticationSource", ("driver", "pod"), "spec.authenticationSource")
    role_arn = _get(spec, "roleArn", str, "spec.roleArn")
    if role_arn is not None and auth != "pod":
        raise SpecError("spec.roleArn only applies with spec.authenticationSource: pod")
    if auth == "pod" and role_arn is None:
        raise SpecError(
            "spec.authenticationSource: pod needs spec.roleArn, the IAM role the pods' service "
            "account tokens assume (e.g. arn:aws:iam::111122223333:role/spark-executor)"
        )
    if role_arn is not None and not _ROLE_ARN.match(role_arn):
        raise SpecError(f"spec.roleArn {role_arn!r} is not an IAM role ARN")
    return auth, role_arn


def parse_mountclass(name: str, spec: Mapping[str, Any]) -> MountClassSpec:
    """Parse an S3MountClass spec (``name`` is metadata.name: the default storageClassName)."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec must be an object")
    _known(spec, MOUNTCLASS_FIELDS, "spec")
    bucket_ref, bucket_name, region, endpoint, az = _mountclass_target(spec)
    prefix = _mountclass_prefix(spec)
    auth, role_arn = _mountclass_auth(spec)
    provisioning = _enum(spec, "provisioning", ("PerClaimPrefix", "Static"), "spec.provisioning")
    cache_xz = _cache_xz(spec, bucket_name)
    return MountClassSpec(
        cache_xz=cache_xz,
        role_arn=role_arn,
        claim_ref=_claim_ref(spec, provisioning),
        storage_class_name=_get(spec, "storageClassName", str, "spec.storageClassName", name),
        bucket_ref=bucket_ref,
        bucket_name=bucket_name,
        region=region,
        endpoint_url=endpoint,
        availability_zone=az,
        prefix=prefix,
        provisioning=provisioning,
        capacity=_get(spec, "capacity", str, "spec.capacity", "1Ti"),
        authentication_source=auth,
        reclaim_policy=_enum(spec, "reclaimPolicy", ("Retain", "Delete"), "spec.reclaimPolicy"),
        mount_options=mount_option_lines(
            _get(spec, "mountOptions", Mapping, "spec.mountOptions", {}),
            # an S3ExpressBucket is always a directory bucket
            directory_bucket=bucket_ref is not None or is_directory_bucket(bucket_name or ""),
        ),
    )
