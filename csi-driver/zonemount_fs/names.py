"""Bucket names, prefixes and keys.

Owns the parsing of mount-s3's ``BUCKET[/PREFIX/]`` argument; the bucket-name rules
(general-purpose and S3 Express ``base--azid--x-s3``) are :mod:`zonemount_contract.names`.

Also the limits a path through a mount must respect: S3 keys are at most
:data:`MAX_KEY_BYTES` bytes of UTF-8 (the mount's prefix included), names at most
:data:`MAX_NAME_BYTES` (``NAME_MAX``).

Invariants: a prefix is either empty or ends with ``/``; errors name the rule and an example.
"""

from __future__ import annotations

from zonemount_contract.names import (
    DIRECTORY_BUCKET_SUFFIX,
    NameRuleError,
    check_bucket_name,
    is_directory_bucket,
)

from .errors import ConfigError

__all__ = [
    "DIRECTORY_BUCKET_SUFFIX",
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "is_directory_bucket",
    "normalize_prefix",
    "parse_bucket_argument",
    "validate_bucket_name",
]

MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
MAX_NAME_BYTES = 255  # NAME_MAX: one path component


def validate_bucket_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a valid general-purpose or directory bucket name
    (the rule is :func:`zonemount_contract.names.check_bucket_name`, shared with the CSI
    driver and the operator)."""
    try:
        check_bucket_name(name)
    except NameRuleError as exc:
        raise ConfigError(str(exc)) from None


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
