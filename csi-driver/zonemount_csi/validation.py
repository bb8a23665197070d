"""Request validation shared by the CSI controller and the node plugin.

After csi-driver-host-path, whose controller and node servers validate a request whole before
acting: every check here either returns the clean value or raises
:class:`~zonemount_csi.errors.CsiError` - INVALID_ARGUMENT for bad input, FAILED_PRECONDITION
where the spec says a capability is beyond the plugin (block volumes, unknown access modes) -
with a one-line message that names the field and the fix.

The name rules themselves (bucket, prefix, region) are :mod:`zonemount_contract.names`, the
keys :mod:`zonemount_contract.keys`; this module only says where a value came from (``what``)
and turns the contract's errors into gRPC codes.

Invariants: pure functions (no I/O, no service state); the controller and the node import
their checks from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import grpc
from zonemount_contract import keys as vc
from zonemount_contract.names import (
    NameRuleError,
    check_bucket_name,
    check_prefix,
    check_region,
    check_role_arn,
)

from ._proto import csi_pb2
from .errors import CsiError, invalid

_Mode = csi_pb2.VolumeCapability.AccessMode
READ_ONLY_MODES = frozenset({_Mode.SINGLE_NODE_READER_ONLY, _Mode.MULTI_NODE_READER_ONLY})
SUPPORTED_MODES = frozenset(
    {
        _Mode.SINGLE_NODE_WRITER,
        _Mode.SINGLE_NODE_READER_ONLY,
        _Mode.MULTI_NODE_READER_ONLY,
        _Mode.MULTI_NODE_SINGLE_WRITER,
        _Mode.MULTI_NODE_MULTI_WRITER,
        _Mode.SINGLE_NODE_SINGLE_WRITER,
        _Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
FS_TYPES = frozenset({"", "fuse", "fuse.zonemount", "zonemount", "s3"})


def check_known_keys(keys: Iterable[str], known: Collection[str], what: str) -> None:
    """INVALID_ARGUMENT for the first key neither in ``known`` nor under one of the prefixes
    the CO adds (:data:`zonemount_contract.keys.KUBERNETES_PREFIXES`): a typo such as
    ``bucketname`` fails loudly instead of being ignored."""
    unknown = sorted(k for k in keys if k not in known and not k.startswith(vc.KUBERNETES_PREFIXES))
    if unknown:
        raise invalid(
            f"unknown {what} {unknown[0][:60]!r}: known {what}s are {', '.join(sorted(known))}"
        )


def validate_bucket(name: str, what: str = "volume context bucketName") -> str:
    if not name:
        raise invalid(f"{what} is required: set it to the bucket to mount")
    try:
        return check_bucket_name(name)
    except NameRuleError as exc:
        raise invalid(f"{what}: {exc}") from None


def validate_cache_xz(cache_xz: str, bucket: str, what: str) -> str:
    """'' (no shared cache) or a valid bucket other than the volume's ``bucket``."""
    if not cache_xz:
        return ""
    cache_xz = validate_bucket(cache_xz, what)
    if cache_xz == bucket:
        raise invalid(f"{what} must name another bucket")
    return cache_xz


def validate_prefix(prefix: str, what: str = "volume context prefix") -> str:
    """'' or 'a/b/' (a trailing slash is added): :func:`zonemount_contract.names.check_prefix`."""
    try:
        return check_prefix(prefix)
    except NameRuleError as exc:
        raise invalid(f"{what}: {exc}") from None


def validate_region(region: str, what: str = "volume context region") -> str:
    try:
        return check_region(region) if region else region
    except NameRuleError as exc:
        raise invalid(f"{what}: {exc}") from None


def validate_role_arn(arn: str, what: str = "volume context roleArn") -> str:
    """The contract's role-ARN rule; the message never holds the value (a token pasted into
    roleArn must not reach the logs)."""
    try:
        return check_role_arn(arn, what=what, echo=False)
    except NameRuleError as exc:
        raise invalid(f"{exc} (the role the pod's service account may assume)") from None


def validate_choice(value: str, choices: Collection[str], what: str) -> str:
    if value not in choices:
        raise invalid(f"{what} must be one of {', '.join(choices)}")
    return value


def check_capability(cap: csi_pb2.VolumeCapability) -> None:
    """Mount access type with a known access mode, else FAILED_PRECONDITION/INVALID_ARGUMENT."""
    if cap.WhichOneof("access_type") == "block":
        raise CsiError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "block volumes are not supported: use volumeMode: Filesystem",
        )
    if cap.WhichOneof("access_type") != "mount":
        raise invalid("volume_capability needs access_type mount")
    if not cap.HasField("access_mode") or cap.access_mode.mode not in SUPPORTED_MODES:
        raise CsiError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "volume_capability access_mode is missing or unknown: use ReadWriteMany or "
            "ReadOnlyMany",
        )
    if cap.mount.fs_type not in FS_TYPES:
        raise invalid(f"fs_type {cap.mount.fs_type[:40]!r} is not supported: leave it empty")
