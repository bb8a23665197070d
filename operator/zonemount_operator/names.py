"""Names: directory bucket names, AZ names/IDs, ARNs, IAM policy names, owner tags, s3:// URLs.

Pure functions, no I/O. Invariant: every name this module builds passes its own validator,
and every validator fails with :class:`SpecError` whose message names the value and the fix.
The patterns here are the same as in ``crds/*.yaml`` (a test keeps them in step).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from zonemount_contract.endpoint import EndpointUrlError, check_endpoint_url
from zonemount_contract.names import (
    AZ_ID_RE,
    AZ_NAME_RE,
    BASE_NAME_RE,
    DIRECTORY_BUCKET_RE,
    GENERAL_BUCKET_RE,
    MAX_BUCKET_NAME,
    REGION_RE,
    RESERVED_PREFIXES,
    ROLE_ARN_RE,
    DirectoryBucketName,
    NameRuleError,
    check_az_id,
    check_az_name,
    check_region,
    check_role_arn,
    is_directory_base,
    parse_directory_bucket,
)
from zonemount_contract.names import DIRECTORY_BUCKET_SUFFIX as DIRECTORY_SUFFIX
from zonemount_contract.names import directory_bucket_name as _directory_bucket_name

from zonemount_operator.errors import SpecError

# The name rules and their messages live in zonemount_contract.names (shared with the CSI
# driver and the FUSE client); the validators here only name the CR field and raise SpecError.
__all__ = [
    "AZ_ID_RE",
    "AZ_NAME_RE",
    "BASE_NAME_RE",
    "DIRECTORY_BUCKET_RE",
    "DIRECTORY_SUFFIX",
    "GENERAL_BUCKET_RE",
    "MAX_BUCKET_NAME",
    "REGION_RE",
    "RESERVED_PREFIXES",
    "ROLE_ARN_PARTS_RE",
    "DirectoryBucketName",
    "parse_directory_bucket",
]


def validate_endpoint_url(url: str, what: str = "endpoint URL") -> str:
    """The contract's endpoint-URL rule (:mod:`zonemount_contract.endpoint`) as a SpecError."""
    try:
        return check_endpoint_url(url)
    except EndpointUrlError as exc:
        raise SpecError(f"{what} {exc}") from None


def validate_region(region: str) -> str:
    try:
        return check_region(region)
    except NameRuleError as exc:
        raise SpecError(str(exc)) from None


def validate_az_id(az_id: str) -> str:
    try:
        return check_az_id(az_id, what="availabilityZoneId")
    except NameRuleError as exc:
        raise SpecError(str(exc)) from None


def validate_az_name(az_name: str) -> str:
    try:
        return check_az_name(az_name, what="availabilityZone")
    except NameRuleError as exc:
        raise SpecError(str(exc)) from None


def directory_bucket_name(base: str, az_id: str) -> str:
    """``base--azid--x-s3``, validated (length, characters, reserved prefixes)."""
    validate_az_id(az_id)
    try:
        return _directory_bucket_name(base, az_id, what="baseName")
    except NameRuleError as exc:
        raise SpecError(f"{exc} (set spec.baseName if metadata.name does not qualify)") from None


# The default base name fits any AZ ID up to 15 characters (63 - len("--") - 15 - len("--x-s3")).
DEFAULT_BASE_MAX = 40
_NOT_BASE_CHARS = re.compile(r"[^a-z0-9-]+")
_HYPHENS = re.compile(r"-{2,}")


def default_base_name(namespace: str | None, name: str) -> str:
    """The bucket base when ``spec.baseName`` is unset: ``<namespace>-<name>``.

    The namespace is part of the name so two namespaces can each have an S3ExpressBucket
    ``data`` (``team-a-data--use1-az4--x-s3`` and ``team-b-data--use1-az4--x-s3``). When
    ``<namespace>-<name>`` is longer than :data:`DEFAULT_BASE_MAX` or is not a valid base
    (dots, ``--``, reserved prefixes), it is shortened and suffixed with 8 hex digits of
    SHA-256 over ``namespace/name``, which keeps different objects apart. Without a
    namespace (offline callers that have none) it is ``name``, as before.
    """
    if not namespace:
        return name
    raw = f"{namespace}-{name}"
    if len(raw) <= DEFAULT_BASE_MAX and is_directory_base(raw):
        return raw
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    clean = _HYPHENS.sub("-", _NOT_BASE_CHARS.sub("-", raw.lower())).strip("-")
    head = clean[: DEFAULT_BASE_MAX - len(digest) - 1].strip("-") or "zm"
    if head.startswith(RESERVED_PREFIXES):
        head = "zm-" + head[: DEFAULT_BASE_MAX - len(digest) - 4].strip("-")
    return f"{head}-{digest}"


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


#: The region IAM (a global service) is called in, per partition.
IAM_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}


def iam_region(partition_name: str) -> str:
    """The region of IAM's endpoint in ``partition_name`` (``aws``, ``aws-cn``, ...)."""
    return IAM_REGIONS.get(partition_name, IAM_REGIONS["aws"])


def arn_partition(arn: str) -> str:
    """The partition field of an ARN (``arn:PARTITION:service:...``)."""
    parts = arn.split(":", 2)
    return parts[1] if len(parts) > 2 and parts[0] == "arn" else "aws"


def directory_bucket_arn(region: str, account: str, bucket: str) -> str:
    return f"arn:{partition(region)}:s3express:{region}:{account}:bucket/{bucket}"


def zonal_endpoint(region: str, az_id: str) -> str:
    return f"https://s3express-{az_id}.{region}.amazonaws.com"


def legacy_policy_name(bucket: str) -> str:
    """The policy name releases before owner tags used (``zonemount-<bucket>``).

    Kept only so documentation and migration notes can name it: the operator no longer
    derives anything it writes or deletes from it (a second CR naming the same bucket
    computed the same policy and re-pointed or deleted it).
    """
    return f"zonemount-{bucket}"


def policy_name(owner_uid: str) -> str:
    """IAM policy name of an S3ExpressBucket's session policy: keyed by the CR's uid.

    uids are assigned by the API server and never reused, so no two CRs (in any namespace)
    can compute the same policy. IAM's limit is 128 characters; a uid is 36.
    """
    if not OWNER_UID_RE.match(owner_uid):
        raise SpecError(f"owner uid {owner_uid!r} is not a Kubernetes uid")
    return f"zonemount-{owner_uid}"


POLICY_PATH = "/zonemount/"


def policy_arn(region: str, account: str, owner_uid: str) -> str:
    return f"arn:{partition(region)}:iam::{account}:policy{POLICY_PATH}{policy_name(owner_uid)}"


# Owner identity, written as tags on every bucket and policy the operator creates. They are
# the only proof of ownership the operator accepts (tenants cannot write AWS tags).
OWNER_UID_TAG = "zonemount.io/owner-uid"
OWNER_NAMESPACE_TAG = "zonemount.io/owner-namespace"
OWNER_NAME_TAG = "zonemount.io/owner-name"
MANAGED_BY_TAG = "zonemount.io/managed-by"
MANAGED_BY = "zonemount-operator"
OWNER_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Owner:
    """The S3ExpressBucket a bucket or policy belongs to."""

    uid: str
    namespace: str
    name: str

    def tags(self) -> dict[str, str]:
        return {
            OWNER_UID_TAG: self.uid,
            OWNER_NAMESPACE_TAG: self.namespace,
            OWNER_NAME_TAG: self.name,
            MANAGED_BY_TAG: MANAGED_BY,
        }

    def __str__(self) -> str:
        return f"S3ExpressBucket {self.namespace}/{self.name}"


def owner_from_tags(tags: dict[str, str]) -> Owner | None:
    """The owner recorded in a resource's tags, or ``None`` (not created by zonemount)."""
    uid = tags.get(OWNER_UID_TAG)
    if not uid:
        return None
    return Owner(uid, tags.get(OWNER_NAMESPACE_TAG, "?"), tags.get(OWNER_NAME_TAG, "?"))


ROLE_ARN_PARTS_RE = ROLE_ARN_RE


@dataclass(frozen=True)
class RoleArn:
    partition: str
    account: str
    path: str  # "/" or "/a/b/"
    name: str

    def __str__(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role{self.path}{self.name}"


def parse_role_arn(arn: str) -> RoleArn:
    """Split a role ARN into partition, account, path and name (IAM's own grammar)."""
    try:
        check_role_arn(arn, what="access.roleArns entry")
    except NameRuleError as exc:
        raise SpecError(str(exc)) from None
    match = ROLE_ARN_PARTS_RE.match(arn)
    assert match is not None  # check_role_arn matched the same pattern
    return RoleArn(match["partition"], match["account"], match["path"], match["name"])


def role_name_from_arn(arn: str) -> str:
    """The role name (last path segment) of a role ARN."""
    return parse_role_arn(arn).name


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_url(url: str, what: str = "URL") -> S3Url:
    """``s3://bucket[/prefix]`` -> (bucket, prefix); the prefix keeps its trailing slash."""
    if not url.startswith("s3://"):
        raise SpecError(f"{what} {url!r} is not an s3:// URL: expected s3://bucket/prefix/")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not GENERAL_BUCKET_RE.match(bucket) and parse_directory_bucket(bucket) is None:
        raise SpecError(
            f"{what} {url!r} does not name a valid bucket: expected s3://bucket/prefix/"
        )
    return S3Url(bucket, prefix)
