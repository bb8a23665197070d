"""Command-line options of ``zonemount mount``: mount-s3's flags, names and meanings.

Owns parsing and validating argv into a frozen :class:`MountOptions`. Everything that can be
checked without the network is checked here, and every error is a one-line
:class:`ConfigError` naming the flag and the fix.

Invariants: ``MountOptions`` is immutable and fully validated; ``prefix`` is empty or ends
with ``/``; TTLs are seconds (``indefinite`` = infinity).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zonemount_contract.endpoint import EndpointUrlError, check_endpoint_url

from .errors import ConfigError
from .names import is_directory_bucket, normalize_prefix, parse_bucket_argument

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
DEFAULT_METADATA_TTL = (
    1.0  # mount-s3's "minimal" without a cache: short, keeps open-close consistency
)
INDEFINITE = math.inf


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
    metadata_ttl: float = DEFAULT_METADATA_TTL
    negative_metadata_ttl: float = DEFAULT_METADATA_TTL
    part_size: int = DEFAULT_PART_SIZE
    max_threads: int = 16
    max_memory_mib: int = 512
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
    def is_directory_bucket(self) -> bool:
        return is_directory_bucket(self.bucket)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see 'zonemount mount --help')")


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
    p = _Parser(
        prog="zonemount mount",
        description="Mount an S3 bucket (general purpose or S3 Express One Zone directory "
        "bucket) at DIRECTORY. Flags follow mount-s3.",
    )
    p.add_argument("bucket", metavar="BUCKET[/PREFIX/]", help="bucket (and optional prefix)")
    p.add_argument("directory", metavar="DIRECTORY", help="mount point (an empty directory)")
    g = p.add_argument_group("bucket options")
    g.add_argument("--prefix", help="prefix inside the bucket to mount (ends with /)")
    g.add_argument("--region", help="AWS region of the bucket")
    g.add_argument("--endpoint-url", help="S3 endpoint URL (http:// or https://)")
    g.add_argument("--force-path-style", action="store_true", help="path-style addressing")
    g.add_argument("--profile", help="AWS profile for credentials")
    g.add_argument("--no-sign-request", action="store_true", help="anonymous requests")
    g.add_argument("--storage-class", help="storage class of new objects")
    g.add_argument("--sse", choices=["AES256", "aws:kms", "aws:kms:dsse"], help="encryption")
    g.add_argument("--sse-kms-key-id", help="KMS key ARN for --sse aws:kms")
    g = p.add_argument_group("file system options")
    g.add_argument("--read-only", action="store_true", help="refuse every change (EROFS)")
    g.add_argument("--allow-delete", action="store_true", help="allow unlink/rmdir")
    g.add_argument("--allow-overwrite", action="store_true", help="allow O_TRUNC overwrites")
    g.add_argument(
        "--incremental-upload",
        action="store_true",
        help="append to existing objects (directory buckets)",
    )
    g.add_argument("--uid", type=_id, help="owner uid (default: the mounting user)")
    g.add_argument("--gid", type=_id, help="owner gid (default: the mounting group)")
    g.add_argument(
        "--dir-mode", type=_mode, default=0o755, help="directory mode, octal (default 0755)"
    )
    g.add_argument("--file-mode", type=_mode, default=0o644, help="file mode, octal (default 0644)")
    g = p.add_argument_group("mount options")
    g.add_argument("--allow-other", action="store_true", help="let other users access the mount")
    g.add_argument("--allow-root", action="store_true", help="let root access the mount")
    g.add_argument("--auto-unmount", action="store_true", help="unmount if the process dies")
    g.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    g = p.add_argument_group("caching and performance")
    g.add_argument("--cache", metavar="DIR", help="local disk data cache directory")
    g.add_argument("--max-cache-size", type=_positive, metavar="MiB", help="cache size bound")
    g.add_argument("--metadata-ttl", type=_ttl, help="SECONDS|minimal|indefinite")
    g.add_argument("--negative-metadata-ttl", type=_ttl, help="SECONDS for 'no such file'")
    g.add_argument(
        "--part-size",
        type=_positive,
        default=DEFAULT_PART_SIZE,
        metavar="BYTES",
        help=f"multipart upload part and read-ahead request size (default {DEFAULT_PART_SIZE}, "
        f"{DEFAULT_PART_SIZE // MiB} MiB)",
    )
    g.add_argument(
        "--max-threads",
        type=_positive,
        default=16,
        metavar="N",
        help="parallel S3 requests (default %(default)s)",
    )
    g.add_argument(
        "--max-memory-target",
        type=_positive,
        default=512,
        metavar="MiB",
        help="memory bound of read-ahead buffers (default %(default)s)",
    )
    g = p.add_argument_group("logging and metrics")
    g.add_argument("-l", "--log-directory", help="write logs to files in this directory")
    g.add_argument("-d", "--debug", action="store_true", help="debug logging")
    g.add_argument("--metrics-address", type=_address, help="Prometheus HOST:PORT")
    return p


def parse_args(argv: Sequence[str]) -> MountOptions:
    ns = build_parser().parse_args(list(argv))
    bucket, arg_prefix = parse_bucket_argument(ns.bucket)
    if ns.prefix is not None and arg_prefix:
        raise ConfigError("give the prefix either in BUCKET/PREFIX/ or with --prefix, not both")
    prefix = normalize_prefix(ns.prefix) if ns.prefix is not None else arg_prefix
    if ns.no_sign_request and ns.profile:
        raise ConfigError(
            "--no-sign-request and --profile conflict: anonymous requests use no profile"
        )
    if ns.sse_kms_key_id and ns.sse not in {"aws:kms", "aws:kms:dsse"}:
        raise ConfigError("--sse-kms-key-id needs --sse aws:kms (or aws:kms:dsse)")
    if ns.allow_other and ns.allow_root:
        raise ConfigError("--allow-other and --allow-root conflict: choose one")
    if ns.incremental_upload and not is_directory_bucket(bucket):
        raise ConfigError(
            f"--incremental-upload needs a directory bucket (name--azid--x-s3); {bucket!r} is a "
            "general purpose bucket"
        )
    if ns.max_cache_size is not None and ns.cache is None:
        raise ConfigError("--max-cache-size needs --cache DIR")
    if not MIN_PART_SIZE <= ns.part_size <= MAX_PART_SIZE:
        raise ConfigError(
            f"--part-size {ns.part_size} is outside S3's part limits "
            f"({MIN_PART_SIZE} to {MAX_PART_SIZE} bytes); the default is {DEFAULT_PART_SIZE}"
        )
    if ns.endpoint_url is not None:
        try:
            check_endpoint_url(ns.endpoint_url)
        except EndpointUrlError as exc:
            raise ConfigError(f"--endpoint-url {exc}") from None
    cache_dir = Path(ns.cache).resolve() if ns.cache else None
    mountpoint = Path(ns.directory).absolute()
    if cache_dir is not None and (cache_dir == mountpoint or mountpoint in cache_dir.parents):
        raise ConfigError("--cache must not be inside the mount point")
    # With a local cache mount-s3 keeps metadata for 60 s by default; without, "minimal".
    default_ttl = 60.0 if cache_dir else DEFAULT_METADATA_TTL
    metadata_ttl = ns.metadata_ttl if ns.metadata_ttl is not None else default_ttl
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
        metadata_ttl=metadata_ttl,
        negative_metadata_ttl=negative_ttl,
        part_size=ns.part_size,
        max_threads=ns.max_threads,
        max_memory_mib=ns.max_memory_target,
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
