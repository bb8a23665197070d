"""Bucket names, prefixes and keys.

Owns the rules for general-purpose bucket names and S3 Express One Zone directory bucket
names (``base--azid--x-s3``), and the parsing of mount-s3's ``BUCKET[/PREFIX/]`` argument.

Also the limits a path through a mount must respect: S3 keys are at most
:data:`MAX_KEY_BYTES` bytes of UTF-8 (the mount's prefix included), names at most
:data:`MAX_NAME_BYTES` (``NAME_MAX``).

Invariants: a prefix is either empty or ends with ``/``; errors name the rule and an example.
"""

from __future__ import annotations

import re

from .errors import ConfigError

DIRECTORY_BUCKET_SUFFIX = "--x-s3"
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
MAX_NAME_BYTES = 255  # NAME_MAX: one path component
_AZ_ID = r"[a-z]{2,4}[0-9]{1,2}-(?:[a-z0-9]+-)?az[0-9]{1,2}"
_DIRECTORY_RE = re.compile(
    rf"^(?P<base>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)--(?P<azid>{_AZ_ID})--x-s3$"
)
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")
_GENERAL_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_directory_bucket(name: str) -> bool:
    """True for S3 Express One Zone directory bucket names (``base--azid--x-s3``)."""
    return name.endswith(DIRECTORY_BUCKET_SUFFIX)


def directory_bucket_az_id(name: str) -> str:
    match = _DIRECTORY_RE.match(name)
    if not match:
        raise ConfigError(
            f"bucket name {name!r} is not a directory bucket name: expected "
            "base--azid--x-s3, e.g. spark-data--usw2-az1--x-s3"
        )
    return match.group("azid")


def validate_bucket_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a valid general-purpose or directory bucket name."""
    if is_directory_bucket(name):
        directory_bucket_az_id(name)
        if len(name) > 63:
            raise ConfigError(f"bucket name {name!r} is longer than 63 characters")
        return
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        raise ConfigError(
            f"bucket name {name!r} is invalid: names starting with {', '.join(_RESERVED_PREFIXES)} "
            f"or ending with {', '.join(_RESERVED_SUFFIXES)} are reserved by S3"
        )
    if not _GENERAL_RE.match(name) or ".." in name or re.match(r"^\d+\.\d+\.\d+\.\d+$", name):
        raise ConfigError(
            f"bucket name {name!r} is invalid: use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit (e.g. my-data-bucket)"
        )


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` stripped of a leading ``/`` and ending with ``/`` (or empty)."""
    prefix = prefix.lstrip("/")
    if not prefix:
        return ""
    if "//" in prefix or any(part in {".", ".."} for part in prefix.rstrip("/").split("/")):
        raise ConfigError(f"prefix {prefix!r} has empty, '.' or '..' components")
    return prefix if prefix.endswith("/") else prefix + "/"


def parse_bucket_argument(arg: str) -> tuple[str, str]:
    """Split mount-s3's ``BUCKET[/PREFIX/]`` (also ``s3://BUCKET/PREFIX/``) into its parts."""
    if arg.startswith("s3://"):
        arg = arg[len("s3://") :]
    bucket, _, prefix = arg.partition("/")
    validate_bucket_name(bucket)
    return bucket, normalize_prefix(prefix)
