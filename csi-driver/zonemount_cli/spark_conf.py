"""``zonemount spark-conf``: the settings for Spark jobs that write to a zonemount mount.

Owns the one copy of what docs/spark.md recommends: the mount flags, the session settings,
the committer by bucket type and the per-write options that skip Hadoop's ``.crc`` side files.
The Spark tier (tests/spark/sparkjobs.py) imports these same values, so what this command
prints is what the tier runs with; docs/spark.md explains each.

Invariants: standard library and :mod:`zonemount_contract` only (no Spark, no network);
mount flags are the option table's names (:data:`zonemount_contract.mount_options.BY_NAME`),
so a renamed flag fails here at import, not in a user's job; bad input is one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from zonemount_contract import mount_options, names
from zonemount_contract.cli import OneLineParser

KINDS = ("general-purpose", "directory")

#: The mount options a committer needs: it deletes ``_temporary``, failed attempts and
#: (overwrite mode) the old table; ``mode("append")`` replaces ``_SUCCESS`` with ``O_TRUNC``.
_OPTIONS = tuple(mount_options.BY_NAME[name] for name in ("allow-delete", "allow-overwrite"))
#: ... as ``zonemount mount`` flags
MOUNT_FLAGS: tuple[str, ...] = tuple(mount_options.render(o) for o in _OPTIONS)

#: Session settings (``spark-defaults.conf``) for both bucket kinds: speculative duplicates of
#: a task would race to commit through renames that are not atomic.
SESSION_SETTINGS: dict[str, str] = {"spark.speculation": "false"}

COMMITTER_KEY = "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version"

#: Write options (``DataFrameWriter.options``) that make that write go through Hadoop's
#: ``RawLocalFileSystem``: no ``.crc`` side file beside each part file, so half the creates,
#: renames and deletes on the mount. ``disable.cache`` gives the write its own FileSystem
#: instance instead of the session's cached ``LocalFileSystem`` (without it the ``.crc`` files
#: are written anyway); every other write and read of the session is unchanged. Not
#: session-wide: Hadoop's ``FileSystem.getLocal`` casts the ``file:`` file system to
#: ``LocalFileSystem``.
NO_CHECKSUM_FILES: dict[str, str] = {
    "fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "fs.file.impl.disable.cache": "true",
}


def committer(kind: str, *, fast: bool) -> str:
    """FileOutputCommitter algorithm version. v1 by default on both kinds: the table changes
    only at job commit. ``fast`` on general-purpose buckets: v2 renames each file (a copy +
    delete there) once instead of twice, but a job that fails after some task commits leaves
    part of its output in the table. On directory buckets a rename is one RenameObject, so v1
    stays (the gap is small)."""
    if kind not in KINDS:
        raise ValueError(f"bucket kind {kind!r}: expected one of {', '.join(KINDS)}")
    return "2" if fast and kind == "general-purpose" else "1"


@dataclass(frozen=True)
class SparkConf:
    """Everything the command prints for one bucket kind."""

    bucket_kind: str
    spark_defaults: dict[str, str]
    mount_flags: tuple[str, ...] = MOUNT_FLAGS
    pv_mount_options: tuple[str, ...] = tuple(o.name for o in _OPTIONS)
    s3mountclass_mount_options: tuple[str, ...] = tuple(o.typed or o.name for o in _OPTIONS)
    write_options: dict[str, str] = field(default_factory=lambda: dict(NO_CHECKSUM_FILES))

    def as_json(self) -> dict[str, object]:
        """``--json``: the same, as the CRDs and spark-defaults spell the keys."""
        return {
            "bucketKind": self.bucket_kind,
            "mountFlags": list(self.mount_flags),
            "persistentVolumeMountOptions": list(self.pv_mount_options),
            "s3MountClassMountOptions": dict.fromkeys(self.s3mountclass_mount_options, True),
            "sparkDefaults": self.spark_defaults,
            "writeOptions": self.write_options,
        }

    def as_text(self) -> str:
        return "\n".join(
            [
                f"# Spark jobs writing file:// paths on a zonemount mount of a {self.bucket_kind}"
                " bucket (docs/spark.md)",
                "# zonemount mount flags:",
                " ".join(self.mount_flags),
                f"# PersistentVolume spec.mountOptions: {json.dumps(list(self.pv_mount_options))}",
                "# S3MountClass spec.mountOptions: "
                + ", ".join(f"{key}: true" for key in self.s3mountclass_mount_options),
                "# spark-defaults.conf:",
                *(f"{key} {value}" for key, value in self.spark_defaults.items()),
                "# each write to the mount whose readers do not need Hadoop's .crc files"
                " (PySpark):",
                f"#   df.write.options(**{json.dumps(self.write_options)})",
                "",
            ]
        )


def settings(kind: str, *, fast: bool) -> SparkConf:
    """The settings for a bucket of ``kind`` (``fast``: the faster, less safe committer)."""
    return SparkConf(kind, {**SESSION_SETTINGS, COMMITTER_KEY: committer(kind, fast=fast)})


def main(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="zonemount spark-conf",
        description="Print the mount flags and Spark settings for jobs that write to a "
        "zonemount mount: the ones the Spark tests run with (docs/spark.md says why).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bucket", metavar="NAME", help="the bucket (its name gives its kind)")
    which.add_argument("--bucket-kind", choices=KINDS, help="default: general-purpose")
    parser.add_argument(
        "--fast-commit",
        action="store_true",
        help="general-purpose buckets: committer v2 (faster; a failed job can leave part of "
        "its output in the table)",
    )
    parser.add_argument("--json", action="store_true", help="print the settings as JSON")
    args = parser.parse_args(list(argv))
    kind = args.bucket_kind or "general-purpose"
    if args.bucket is not None:
        try:
            names.check_bucket_name(args.bucket)
        except ValueError as exc:
            parser.error(str(exc))
        kind = "directory" if names.is_directory_bucket(args.bucket) else "general-purpose"
    conf = settings(kind, fast=args.fast_commit)
    sys.stdout.write(json.dumps(conf.as_json(), indent=2) + "\n" if args.json else conf.as_text())
    return 0
