"""Command-line options of ``zonemount mount``: mount-s3's flags, names and meanings.

Owns parsing and validating argv into a frozen :class:`MountOptions`. The flags themselves
(names, help, defaults) come from the one option table :mod:`zonemount_contract.mount_options`,
which also makes the CSI allow-list and the operator's typed options. Everything that can be
checked without the network is checked here, and every error is a one-line
:class:`ConfigError` naming the flag and the fix.

Invariants: ``MountOptions`` is immutable and fully validated; ``prefix`` is empty or ends
with ``/``; TTLs are seconds (``indefinite`` = infinity); the part sizes and the uploads in
flight fit ``--max-memory-target`` (the table's :func:`~zonemount_contract.mount_options.
fit_memory`; what it changed is in ``memory_warnings``, logged when the mount starts).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zonemount_contract import mount_options as option_table
from zonemount_contract.cli import OneLineParser
from zonemount_contract.endpoint import EndpointUrlError, check_endpoint_url

from .errors import ConfigError
from .names import (
    is_directory_bucket,
    normalize_prefix,
    parse_bucket_argument,
    validate_bucket_name,
)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = option_table.DEFAULT_PART_SIZE
MIN_PART_SIZE = option_table.MIN_PART_SIZE
MAX_PART_SIZE = option_table.MAX_PART_SIZE
DEFAULT_READ_PART_SIZE = option_table.DEFAULT_READ_PART_SIZE
DEFAULT_METADATA_TTL = (
    1.0  # mount-s3's "minimal" without a cache: short, keeps open-close consistency
)
INDEFINITE = math.inf
#: Data requests get this many times --request-deadline.
DATA_DEADLINE_FACTOR = 4


@dataclass(frozen=True)
class MountOptions:
    bucket: str
    mountpoint: Path
    prefix: str = ""
    read_only: bool = False
    allow_delete: bool = False
    allow_overwrite: bool = False
    incremental_upload: bool = False
    region: str | None = None
    endpoint_url: str | None = None
    force_path_style: bool = False
    profile: str | None = None
    no_sign_request: bool = False
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    cache_dir: Path | None = None
    max_cache_size_mib: int | None = None
    cache_xz_bucket: str | None = None  # shared block cache bucket (see shared_cache.py)
    cache_xz_max_object_mib: int = 1
    cache_xz_endpoint_url: str | None = None  # None: the mounted bucket's endpoint
    metadata_ttl: float = DEFAULT_METADATA_TTL
    negative_metadata_ttl: float = DEFAULT_METADATA_TTL
    #: Multipart upload part size (--write-part-size, else --part-size).
    part_size: int = DEFAULT_PART_SIZE
    #: Read-ahead request size (--read-part-size, else --part-size); None: ``part_size``. The
    #: command line's default is DEFAULT_READ_PART_SIZE (:func:`parse_args`).
    read_part_size: int | None = None
    max_threads: int = 16
    #: Seconds a metadata request (HEAD, LIST, DELETE, ...) may take in all, retries
    #: included; data requests (a part of --part-size) get DATA_DEADLINE_FACTOR times it.
    request_deadline: float = 30.0
    max_memory_mib: int = option_table.DEFAULT_MAX_MEMORY_TARGET_MIB
    #: UploadPart calls of one file at once (fewer with big parts, to fit max_memory_mib).
    uploads_in_flight: int = option_table.MAX_UPLOADS_IN_FLIGHT
    #: What fitting the part sizes into --max-memory-target changed (one line each).
    memory_warnings: tuple[str, ...] = ()
    uid: int = 0
    gid: int = 0
    dir_mode: int = 0o755
    file_mode: int = 0o644
    allow_other: bool = False
    allow_root: bool = False
    auto_unmount: bool = False
    foreground: bool = False
    log_directory: Path | None = None
    debug: bool = False
    metrics_address: tuple[str, int] | None = None

    @property
    def read_chunk_size(self) -> int:
        """Bytes per read-ahead request (and per cached block): ``read_part_size``, else
        ``part_size``."""
        return self.read_part_size or self.part_size

    @property
    def data_deadline(self) -> float:
        """Seconds a data request (a part's GET or UploadPart, a file's PutObject) may take."""
        return self.request_deadline * DATA_DEADLINE_FACTOR

    @property
    def is_directory_bucket(self) -> bool:
        return is_directory_bucket(self.bucket)


def _mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an octal mode such as 0755") from None
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range 0000-7777")
    return mode


def _ttl(value: str) -> float:
    if value == "indefinite":
        return INDEFINITE
    if value == "minimal":
        return DEFAULT_METADATA_TTL
    try:
        ttl = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds, 'minimal' or 'indefinite'"
        ) from None
    if ttl < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return ttl


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return number


def _id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a numeric id") from None
    if not 0 <= number < 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range")
    return number


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9810)")
    return host or "0.0.0.0", int(port)  # noqa: S104 - an explicit ':PORT' means all interfaces


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        error_type=ConfigError,
        prog="zonemount mount",
        description="Mount an S3 bucket (general purpose or S3 Express One Zone directory "
        "bucket) at DIRECTORY. Flags follow mount-s3.",
    )
    p.add_argument("bucket", metavar="BUCKET[/PREFIX/]", help="bucket (and optional prefix)")
    p.add_argument("directory", metavar="DIRECTORY", help="mount point (an empty directory)")
    converters: dict[str, Callable[[str], object]] = {
        "id": _id,
        "mode": _mode,
        "ttl": _ttl,
        "positive": _positive,
        "address": _address,
    }
    groups = {name: p.add_argument_group(name) for name in option_table.GROUPS}
    for option in option_table.OPTIONS:  # the flags come from the one option table
        flags = [f for f in (option.short, f"--{option.name}") if f]
        kwargs: dict[str, Any] = {"help": option.help}
        kind = option.fuse_type or option.kind
        if kind == "flag":
            kwargs["action"] = "store_true"
        elif kind == "choice":
            kwargs["choices"] = list(option.choices)
        elif kind in converters:
            kwargs["type"] = converters[kind]
        if option.default is not None:
            kwargs["default"] = option.default
        if option.metavar:
            kwargs["metavar"] = option.metavar
        groups[option.group].add_argument(*flags, **kwargs)
    return p


def parse_args(argv: Sequence[str]) -> MountOptions:
    """``zonemount mount`` argv -> :class:`MountOptions`, or :class:`ConfigError` naming the
    flag and the fix (every rule checked before anything is mounted)."""
    ns = build_parser().parse_args(list(argv))
    bucket, prefix = _bucket_and_prefix(ns)
    _check_options(ns, bucket)
    cache_dir = Path(ns.cache).resolve() if ns.cache else None
    mountpoint = Path(ns.directory).absolute()
    if cache_dir is not None and (cache_dir == mountpoint or mountpoint in cache_dir.parents):
        raise ConfigError("--cache must not be inside the mount point")
    # With a local cache mount-s3 keeps metadata for 60 s by default; without, "minimal".
    default_ttl = 60.0 if cache_dir else DEFAULT_METADATA_TTL
    metadata_ttl = ns.metadata_ttl if ns.metadata_ttl is not None else default_ttl
    memory = option_table.fit_memory(
        ns.max_memory_target,
        *option_table.part_sizes(ns.read_part_size, ns.write_part_size, ns.part_size),
    )
    negative_ttl = (
        ns.negative_metadata_ttl
        if ns.negative_metadata_ttl is not None
        else min(metadata_ttl, 60.0)
    )
    return MountOptions(
        bucket=bucket,
        mountpoint=mountpoint,
        prefix=prefix,
        read_only=ns.read_only,
        allow_delete=ns.allow_delete,
        allow_overwrite=ns.allow_overwrite,
        incremental_upload=ns.incremental_upload,
        region=ns.region,
        endpoint_url=ns.endpoint_url,
        force_path_style=ns.force_path_style,
        profile=ns.profile,
        no_sign_request=ns.no_sign_request,
        storage_class=ns.storage_class,
        sse=ns.sse,
        sse_kms_key_id=ns.sse_kms_key_id,
        cache_dir=cache_dir,
        max_cache_size_mib=ns.max_cache_size,
        cache_xz_bucket=ns.cache_xz,
        cache_xz_max_object_mib=ns.cache_xz_max_object_size or 1,
        cache_xz_endpoint_url=ns.cache_xz_endpoint_url,
        metadata_ttl=metadata_ttl,
        negative_metadata_ttl=negative_ttl,
        part_size=memory.write_part_size,
        read_part_size=memory.read_part_size,
        max_threads=ns.max_threads,
        request_deadline=ns.request_deadline,
        max_memory_mib=ns.max_memory_target,
        uploads_in_flight=memory.uploads_in_flight,
        memory_warnings=memory.warnings,
        uid=ns.uid if ns.uid is not None else os.getuid(),
        gid=ns.gid if ns.gid is not None else os.getgid(),
        dir_mode=ns.dir_mode,
        file_mode=ns.file_mode,
        allow_other=ns.allow_other,
        allow_root=ns.allow_root,
        auto_unmount=ns.auto_unmount,
        foreground=ns.foreground,
        log_directory=Path(ns.log_directory).resolve() if ns.log_directory else None,
        debug=ns.debug,
        metrics_address=ns.metrics_address,
    )


def _bucket_and_prefix(ns: argparse.Namespace) -> tuple[str, str]:
    """The bucket and the prefix, from ``BUCKET[/PREFIX/]`` or ``--prefix`` (not both)."""
    bucket, arg_prefix = parse_bucket_argument(ns.bucket)
    if ns.prefix is not None and arg_prefix:
        raise ConfigError("give the prefix either in BUCKET/PREFIX/ or with --prefix, not both")
    return bucket, normalize_prefix(ns.prefix) if ns.prefix is not None else arg_prefix


def _check_options(ns: argparse.Namespace, bucket: str) -> None:
    """Rules across flags: the option table's (:func:`zonemount_contract.mount_options.
    check_combination`, shared with the CSI allow-list) and the FUSE client's own."""
    if ns.no_sign_request and ns.profile:
        raise ConfigError(
            "--no-sign-request and --profile conflict: anonymous requests use no profile"
        )
    given = {
        o.name: getattr(ns, o.field) if o.takes_value else None
        for o in option_table.OPTIONS
        if getattr(ns, o.field) not in (None, False) and getattr(ns, o.field) != o.default
    }
    try:
        option_table.check_combination(given, directory_bucket=is_directory_bucket(bucket))
    except option_table.OptionValueError as exc:
        raise ConfigError(f"{exc} (bucket {bucket!r})") from None
    _check_cache_options(ns, bucket)
    for name in ("part-size", "read-part-size", "write-part-size"):
        option = option_table.BY_NAME[name]
        value = getattr(ns, option.field)
        try:  # the allow-list's bounds: one rule for the CLI, PVs and S3MountClasses
            if value is not None:
                option_table.check_value(option, str(value))
        except option_table.OptionValueError as exc:
            limits = " (S3's part limits)" if option.low == MIN_PART_SIZE else ""
            raise ConfigError(
                f"--{name} {value}: {exc} bytes{limits}; leave it out for the default"
            ) from None
    if ns.endpoint_url is not None:
        _endpoint_url(ns.endpoint_url, "--endpoint-url")


def _check_cache_options(ns: argparse.Namespace, bucket: str) -> None:
    """``--max-cache-size`` needs ``--cache``; ``--cache-xz*`` need a valid other bucket."""
    if ns.max_cache_size is not None and ns.cache is None:
        raise ConfigError("--max-cache-size needs --cache DIR")
    if ns.cache_xz_max_object_size is not None and ns.cache_xz is None:
        raise ConfigError("--cache-xz-max-object-size needs --cache-xz BUCKET")
    if ns.cache_xz is not None:
        try:
            validate_bucket_name(ns.cache_xz)
        except ConfigError as exc:
            raise ConfigError(f"--cache-xz: {exc}") from None
        if ns.cache_xz == bucket:
            raise ConfigError("--cache-xz must name another bucket than the one mounted")
    if ns.cache_xz_endpoint_url is not None:
        if ns.cache_xz is None:
            raise ConfigError("--cache-xz-endpoint-url needs --cache-xz BUCKET")
        _endpoint_url(ns.cache_xz_endpoint_url, "--cache-xz-endpoint-url")


def _endpoint_url(url: str, flag: str) -> None:
    try:
        check_endpoint_url(url)
    except EndpointUrlError as exc:
        raise ConfigError(f"{flag} {exc}") from None
