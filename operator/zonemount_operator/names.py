"""Names: directory bucket names, AZ names/IDs, ARNs, IAM policy names, s3:// URLs.

Pure functions, no I/O. Invariant: every name this module builds passes its own validator,
and every validator fails with :class:`SpecError` whose message names the value and the fix.
The patterns here are the same as in ``crds/*.yaml`` (a test keeps them in step).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from zonemount_operator.errors import SpecError

DIRECTORY_SUFFIX = "--x-s3"
MAX_BUCKET_NAME = 63
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
AZ_NAME_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$")
AZ_ID_RE = re.compile(r"^[a-z]{2,5}[0-9]+(-[a-z]+[0-9]*)?-az[0-9]+$")
BASE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
DIRECTORY_BUCKET_RE = re.compile(
    r"^(?P<base>[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9])--(?P<azid>[a-z0-9-]+?)--x-s3$"
)
GENERAL_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
ENDPOINT_URL_RE = re.compile(r"^https?://[^\s]+$")


def validate_endpoint_url(url: str, what: str = "endpoint URL") -> str:
    """An S3/AWS endpoint override: http(s)://HOST[:PORT][/PATH], as botocore accepts it
    (the one rule behind every --endpoint-url flag of the operator's commands and
    S3MountClass spec.endpointUrl)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise SpecError(
            f"{what} {url!r} is not a URL ({exc}): expected http://HOST:PORT or https://HOST"
        ) from None
    if not ENDPOINT_URL_RE.match(url) or not parts.hostname:
        raise SpecError(
            f"{what} {url!r} is not an http(s) URL: expected http://HOST:PORT or https://HOST "
            "(e.g. http://127.0.0.1:8333 or https://s3.us-east-1.amazonaws.com)"
        )
    return url


def validate_region(region: str) -> str:
    if not REGION_RE.match(region):
        raise SpecError(f"region {region!r} is not an AWS region name: expected e.g. us-east-1")
    return region


def validate_az_id(az_id: str) -> str:
    if not AZ_ID_RE.match(az_id):
        raise SpecError(
            f"availabilityZoneId {az_id!r} is not an AZ ID: expected e.g. use1-az4 "
            "(see 'aws ec2 describe-availability-zones')"
        )
    return az_id


def validate_az_name(az_name: str) -> str:
    if not AZ_NAME_RE.match(az_name):
        raise SpecError(f"availabilityZone {az_name!r} is not an AZ name: expected e.g. us-east-1d")
    return az_name


def directory_bucket_name(base: str, az_id: str) -> str:
    """``base--azid--x-s3``, validated (length, characters, reserved prefixes)."""
    validate_az_id(az_id)
    name = f"{base}--{az_id}{DIRECTORY_SUFFIX}"
    if not BASE_NAME_RE.match(base) or "--" in base:
        raise SpecError(
            f"baseName {base!r} is not a valid bucket base name: use 3+ lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit "
            "(set spec.baseName if metadata.name does not qualify)"
        )
    if base.startswith(RESERVED_PREFIXES):
        raise SpecError(f"baseName {base!r} starts with a prefix reserved by S3: rename it")
    if len(name) > MAX_BUCKET_NAME:
        room = MAX_BUCKET_NAME - len(name) + len(base)
        raise SpecError(
            f"bucket name {name!r} is {len(name)} characters, more than {MAX_BUCKET_NAME}: "
            f"shorten baseName to at most {room} characters"
        )
    return name


@dataclass(frozen=True)
class DirectoryBucketName:
    base: str
    az_id: str

    @property
    def name(self) -> str:
        return f"{self.base}--{self.az_id}{DIRECTORY_SUFFIX}"


def parse_directory_bucket(name: str) -> DirectoryBucketName | None:
    """Split ``base--azid--x-s3``; ``None`` for a general-purpose bucket name."""
    match = DIRECTORY_BUCKET_RE.match(name)
    if match is None or not AZ_ID_RE.match(match["azid"]):
        return None
    return DirectoryBucketName(match["base"], match["azid"])


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def directory_bucket_arn(region: str, account: str, bucket: str) -> str:
    return f"arn:{partition(region)}:s3express:{region}:{account}:bucket/{bucket}"


def zonal_endpoint(region: str, az_id: str) -> str:
    return f"https://s3express-{az_id}.{region}.amazonaws.com"


def policy_name(bucket: str) -> str:
    """IAM policy name for a bucket's session policy (IAM limit: 128 characters)."""
    name = f"zonemount-{bucket}"
    if len(name) > 128:  # pragma: no cover - bucket names are at most 63 characters
        name = name[:119] + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


POLICY_PATH = "/zonemount/"


def policy_arn(region: str, account: str, bucket: str) -> str:
    return f"arn:{partition(region)}:iam::{account}:policy{POLICY_PATH}{policy_name(bucket)}"


ROLE_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/(?P<path_name>[A-Za-z0-9+=,.@_/-]+)$"
)


def role_name_from_arn(arn: str) -> str:
    """The role name (last path segment) of a role ARN."""
    match = ROLE_ARN_RE.match(arn)
    if match is None:
        raise SpecError(
            f"access.roleArns entry {arn!r} is not an IAM role ARN: "
            "expected arn:aws:iam::111122223333:role/NAME"
        )
    return match["path_name"].rsplit("/", 1)[-1]


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
