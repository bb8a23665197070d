"""Name rules: bucket names (general-purpose and S3 Express directory buckets), regions, AZ
names and AZ IDs, IAM role ARNs and KMS key ARNs.

One copy of each rule for the FUSE client, the CSI driver and the operator (the operator's CRDs
carry the same patterns: tests/operator/test_crd_schemas.py keeps them in step).

Every ``check_*`` returns its argument or raises :class:`NameRuleError` whose message names the
value, the rule and an example; ``what=`` names the field the value came from (the operator's
``availabilityZoneId``), or callers prefix it (``volume context bucketName: ...``), and raise
their own error type. The parts hold no message of their own for these rules.

Invariants: pure functions over the standard library; a name the FUSE client accepts the CSI
driver accepts and the other way round, because both call :func:`check_bucket_name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIRECTORY_BUCKET_SUFFIX = "--x-s3"
MAX_BUCKET_NAME = 63
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
AZ_NAME_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$")
AZ_ID_RE = re.compile(r"^[a-z]{2,5}[0-9]+(-[a-z]+[0-9]*)?-az[0-9]+$")
#: The ``base`` of a directory bucket ``base--azid--x-s3``.
BASE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
DIRECTORY_BUCKET_RE = re.compile(
    r"^(?P<base>[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9])--(?P<azid>[a-z0-9-]+?)--x-s3$"
)
GENERAL_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")
_IP_ADDRESS_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
#: IAM's grammar: ``arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`` (path segments non-empty).
ROLE_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>[0-9]{12}):role"
    r"(?P<path>/(?:[A-Za-z0-9+=,.@_-]+/)*)(?P<name>[A-Za-z0-9+=,.@_-]+)$"
)
#: A KMS key ARN (what directory buckets accept for default encryption).
KMS_KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$")
#: A KMS key or alias ARN (what PutObject accepts as SSEKMSKeyId on a mount).
KMS_KEY_OR_ALIAS_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]{1,200}$"
)


#: Characters a volume prefix may hold: they survive argv, logs and S3 keys unescaped.
PREFIX_CHARS_RE = re.compile(r"^[A-Za-z0-9!_.*'()/=+@:,~ -]+$")
MAX_PREFIX_BYTES = 512


class NameRuleError(ValueError):
    """A name breaks its rule; ``str()`` names the value, the rule and an example."""


@dataclass(frozen=True)
class DirectoryBucketName:
    base: str
    az_id: str

    @property
    def name(self) -> str:
        return f"{self.base}--{self.az_id}{DIRECTORY_BUCKET_SUFFIX}"


def is_directory_bucket(name: str) -> bool:
    """True for names in the S3 Express One Zone form (``...--x-s3``), valid or not."""
    return name.endswith(DIRECTORY_BUCKET_SUFFIX)


def is_directory_base(base: str) -> bool:
    """True when ``base`` may stand before ``--azid--x-s3``: lowercase letters, digits and
    single hyphens, starting and ending with a letter or digit, no prefix reserved by S3."""
    return (
        bool(BASE_NAME_RE.match(base))
        and "--" not in base
        and not base.startswith(RESERVED_PREFIXES)
    )


def parse_directory_bucket(name: str) -> DirectoryBucketName | None:
    """Split ``base--azid--x-s3``; ``None`` when ``name`` is not a valid directory bucket name."""
    match = DIRECTORY_BUCKET_RE.match(name)
    if (
        match is None
        or not AZ_ID_RE.match(match["azid"])
        or not is_directory_base(match["base"])
        or len(name) > MAX_BUCKET_NAME
    ):
        return None
    return DirectoryBucketName(match["base"], match["azid"])


def directory_bucket_name(base: str, az_id: str, *, what: str = "base name") -> str:
    """``base--azid--x-s3``, or :class:`NameRuleError` naming ``what`` (the field the base
    came from) and the fix: a bad base, a bad AZ ID, or a name over 63 characters."""
    check_az_id(az_id)
    if not BASE_NAME_RE.match(base) or "--" in base:
        raise NameRuleError(
            f"{what} {base[:80]!r} is not a valid bucket base name: use 3+ lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit"
        )
    if base.startswith(RESERVED_PREFIXES):
        raise NameRuleError(
            f"{what} {base[:80]!r} starts with a prefix reserved by S3 "
            f"({', '.join(RESERVED_PREFIXES)}): rename it"
        )
    name = f"{base}--{az_id}{DIRECTORY_BUCKET_SUFFIX}"
    if len(name) > MAX_BUCKET_NAME:
        room = MAX_BUCKET_NAME - len(name) + len(base)
        raise NameRuleError(
            f"bucket name {name!r} is {len(name)} characters, more than {MAX_BUCKET_NAME}: "
            f"shorten {what} to at most {room} characters"
        )
    return name


def check_bucket_name(name: str) -> str:
    """A valid general-purpose or directory bucket name, or :class:`NameRuleError`."""
    if is_directory_bucket(name):
        check_directory_bucket_name(name)
        return name
    if name.startswith(RESERVED_PREFIXES) or name.endswith(RESERVED_SUFFIXES):
        raise NameRuleError(
            f"bucket name {name[:80]!r} is invalid: names starting with "
            f"{', '.join(RESERVED_PREFIXES)} or ending with {', '.join(RESERVED_SUFFIXES)} are "
            "reserved by S3"
        )
    if not GENERAL_BUCKET_RE.match(name) or ".." in name or _IP_ADDRESS_RE.match(name):
        raise NameRuleError(
            f"bucket name {name[:80]!r} is invalid: use 3-63 lowercase letters, digits, '.' or "
            "'-', starting and ending with a letter or digit (e.g. my-data-bucket)"
        )
    return name


def check_directory_bucket_name(name: str) -> DirectoryBucketName:
    """The parts of a valid directory bucket name, or :class:`NameRuleError`."""
    parsed = parse_directory_bucket(name)
    if parsed is None:
        raise NameRuleError(
            f"bucket name {name[:80]!r} is not a directory bucket name: expected "
            "base--azid--x-s3 of at most 63 characters (the base not starting with "
            f"{', '.join(RESERVED_PREFIXES)}), e.g. spark-data--usw2-az1--x-s3"
        )
    return parsed


def check_prefix(prefix: str) -> str:
    """'' or ``a/b/`` (a trailing slash is added): safe characters, at most 512 bytes, no
    leading '/' or '-', no empty, '.' or '..' segment. The rule of every volume prefix (the
    CSI volume context and StorageClass basePrefix, the S3MountClass spec.prefix)."""
    if not prefix:
        return ""
    if len(prefix.encode()) > MAX_PREFIX_BYTES or not PREFIX_CHARS_RE.match(prefix):
        raise NameRuleError(
            f"prefix {prefix[:80]!r} has characters outside the safe S3 key set "
            "(letters, digits and !_.*'()/=+@:,~ -) or is longer than 512 bytes"
        )
    if prefix.startswith(("/", "-")):
        raise NameRuleError(
            f"prefix {prefix[:80]!r} must not start with '/' or '-': write e.g. data/team-a/"
        )
    parts = (prefix[:-1] if prefix.endswith("/") else prefix).split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise NameRuleError(
            f"prefix {prefix[:80]!r} has an empty, '.' or '..' path segment: write e.g. "
            "data/team-a/"
        )
    return prefix if prefix.endswith("/") else prefix + "/"


def check_region(region: str, *, what: str = "region") -> str:
    """An AWS region name; the message starts with ``what`` (the field it came from)."""
    if not REGION_RE.match(region):
        raise NameRuleError(
            f"{what} {region[:40]!r} is not an AWS region name: expected e.g. us-east-1"
        )
    return region


def check_az_name(az_name: str, *, what: str = "availability zone") -> str:
    if not AZ_NAME_RE.match(az_name):
        raise NameRuleError(f"{what} {az_name[:40]!r} is not an AZ name: expected e.g. us-east-1d")
    return az_name


def check_az_id(az_id: str, *, what: str = "AZ ID") -> str:
    if not AZ_ID_RE.match(az_id):
        raise NameRuleError(
            f"{what} {az_id[:40]!r} is not an AZ ID: expected e.g. use1-az4 "
            "(see 'aws ec2 describe-availability-zones')"
        )
    return az_id


def check_role_arn(arn: str, *, what: str = "role ARN", echo: bool = True) -> str:
    """An IAM role ARN. ``echo=False`` keeps the value out of the message (a field a user may
    fill with a token by mistake, such as the CSI volume context's roleArn)."""
    if not ROLE_ARN_RE.match(arn):
        value = f" {arn[:120]!r}" if echo else ""
        raise NameRuleError(
            f"{what}{value} is not an IAM role ARN: expected arn:aws:iam::111122223333:role/NAME"
        )
    return arn


def check_kms_key_arn(arn: str, *, alias: bool = False, what: str = "KMS key") -> str:
    """A KMS key ARN; with ``alias=True`` an alias ARN is accepted too."""
    if not (KMS_KEY_OR_ALIAS_ARN_RE if alias else KMS_KEY_ARN_RE).match(arn):
        kinds = "key or alias ARN" if alias else "key ARN"
        raise NameRuleError(
            f"{what} {arn[:120]!r} is not a KMS {kinds}: expected arn:aws:kms:REGION:ACCOUNT:key/ID"
        )
    return arn
