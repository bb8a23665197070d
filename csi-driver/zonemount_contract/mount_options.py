"""The one table of ``zonemount mount`` options.

Three things are made from :data:`OPTIONS`, so they cannot drift apart:

* the FUSE client's flags (``zonemount_fs.options.build_parser``: name, short form, help,
  metavar, default and how argparse converts the value - ``fuse_type``);
* the CSI driver's PV ``mountOptions`` allow-list (``zonemount_csi.mount_options``): an option
  with an empty ``refused`` is allowed, its value checked by :func:`check_value`; the others are
  refused with that reason;
* the operator's typed ``S3MountClass`` ``spec.mountOptions`` (``typed`` is the camelCase key;
  the CRD's schema carries the same bounds, checked by tests/contract).

Value domains: :func:`check_value` is the *allow-list* domain (what a PV or an S3MountClass may
say). The FUSE client may accept more (fractional TTLs, any octal mode); never less - the
contract test (tests/contract/test_option_chain.py) proves every allowed value is accepted.

Memory: :func:`fit_memory` is the one rule that fits the part sizes a volume (or a command
line) asks for into the mount's ``--max-memory-target`` (docs/SEMANTICS.md R-FLAGS-MEMORY-TARGET);
the FUSE client applies it to its own flags, the CSI node plugin to a PV's options under the
target it gives every mount. Like Mountpoint's memory target it adapts (smaller chunks, fewer
parts in flight) rather than refusing, and says what it changed. :func:`thread_stacks_args` is
the one rule for the address space a mount's threads reserve (``--max-threads`` worker threads
for data calls, :func:`metadata_threads` for metadata, each with a :data:`THREAD_STACK_BYTES`
stack): the FUSE client takes its stack size and metadata limiter from here, the CSI mounter
adds the sum to an ``RLIMIT_AS`` bound (address space, not resident memory: untouched stack
pages cost nothing).

Invariants: standard library only; every option with a ``typed`` key is allowed in PVs; values
are rendered as ``--name=value`` so no value is ever parsed as a flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .names import KMS_KEY_OR_ALIAS_ARN_RE

MIB = 1024 * 1024
#: Multipart upload part size without --part-size/--write-part-size (mount-s3's default).
DEFAULT_PART_SIZE = 8 * MIB
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
#: Read-ahead request (read chunk) size without --part-size/--read-part-size: twice mount-s3's
#: 8 MiB - half the GETs per GiB read, which cost the S3 server and the FUSE server CPU per
#: request (docs/performance.md, "Read part size").
DEFAULT_READ_PART_SIZE = 16 * MIB
MIN_READ_PART_SIZE = 1 * MIB
#: A read chunk is held in memory whole (and --max-memory-target holds at least
#: READ_CHUNKS_IN_TARGET of them, :func:`fit_memory`).
MAX_READ_PART_SIZE = 256 * MIB
#: --max-memory-target without the flag (MiB).
DEFAULT_MAX_MEMORY_TARGET_MIB = 512
#: The read-ahead memory (--max-memory-target) holds at least this many read chunks.
READ_CHUNKS_IN_TARGET = 4
#: Parts of one file in flight at once (UploadPart calls), at most.
MAX_UPLOADS_IN_FLIGHT = 4
#: Stack of every thread the FUSE server starts (worker threads of S3 calls, up to
#: ``--max-threads`` and :func:`metadata_threads` more). Linux's default, RLIMIT_STACK (8 MiB),
#: is address space: under the CSI mounter's RLIMIT_AS bound 256 threads needed 2 GiB and
#: threads failed to start, killing the server. The threads run botocore, SigV4 and HTTP
#: parsing, which need a few hundred KiB; mount-s3's (Rust) threads get 2 MiB too.
THREAD_STACK_BYTES = 2 * MIB
#: Address space a thread takes beyond its stack (guard page, thread state; measured about
#: 24 KiB with ``MALLOC_ARENA_MAX=2``), rounded up.
THREAD_OVERHEAD_BYTES = 64 * 1024
#: Threads of the FUSE server outside its two store-call limiters, at most: the shared
#: cache's pools (12), a DeleteObjects fallback's pool (8), the watchdog, the metrics server
#: and its requests, and trio's default thread limiter (40: the plain-HTTP fast path opens
#: its connections and falls back to botocore in threads of no store-call limiter, and a
#: thread its caller's deadline abandoned - a name lookup that hangs - keeps running outside
#: any limit but that one) - a margin over their sum (tests/contract checks it).
OTHER_THREADS = 64
MAX_ID = 2**32 - 2
MAX_TTL_SECONDS = 10**7
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)
SSE_TYPES = ("AES256", "aws:kms", "aws:kms:dsse")
_MODE_RE = re.compile(r"^0?[0-7]{3}$")

#: argparse groups of ``zonemount mount --help``, in order.
GROUPS = (
    "bucket options",
    "file system options",
    "mount options",
    "caching and performance",
    "logging and metrics",
)

_NODE_OWNS = "the node plugin manages it"
# A shared cache bucket is a place data goes and comes from for every volume using it (its
# writers decide what all readers see): an administrator's choice, never a tenant's.
_ADMIN_CACHE = (
    "a shared cache bucket is an administrator's setting (StorageClass parameters or the "
    "S3MountClass), not a volume's mount option"
)


class OptionValueError(ValueError):
    """A value outside the option's allow-list domain; ``str()`` says what is expected."""


@dataclass(frozen=True)
class Option:
    """One ``zonemount mount`` flag."""

    name: str  #: long flag without dashes
    kind: str  #: flag | int | mode | ttl | choice | kms-arn | text
    help: str
    group: str
    fuse_type: str = ""  #: how the FUSE client converts it (default: the kind)
    short: str = ""
    metavar: str | None = None
    default: object = None  #: the FUSE client's default
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    refused: str = ""  #: why a PV may not set it ('' = allowed in PV mountOptions)
    typed: str = ""  #: S3MountClass spec.mountOptions key ('' = not offered)

    @property
    def takes_value(self) -> bool:
        return self.kind != "flag"

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    # -- bucket options
    Option("prefix", "text", "prefix inside the bucket to mount (ends with /)", GROUPS[0],
           refused="set volumeAttributes.prefix instead"),
    Option("region", "text", "AWS region of the bucket", GROUPS[0],
           refused="set volumeAttributes.region instead"),
    Option("endpoint-url", "text", "S3 endpoint URL (http:// or https://)", GROUPS[0],
           refused="set volumeAttributes.endpointUrl; the node only honours endpoints listed "
           "in its --allowed-endpoint-url"),
    Option("force-path-style", "flag", "path-style addressing", GROUPS[0]),
    Option("profile", "text", "AWS profile for credentials", GROUPS[0],
           refused="credentials come from the driver or the pod (authenticationSource)"),
    Option("no-sign-request", "flag", "anonymous requests", GROUPS[0]),
    Option("storage-class", "choice", "storage class of new objects", GROUPS[0],
           fuse_type="text", choices=STORAGE_CLASSES),
    Option("sse", "choice", "encryption", GROUPS[0], choices=SSE_TYPES),
    Option("sse-kms-key-id", "kms-arn", "KMS key ARN for --sse aws:kms", GROUPS[0],
           fuse_type="text"),
    # -- file system options
    Option("read-only", "flag", "refuse every change (EROFS)", GROUPS[1], typed="readOnly"),
    Option("allow-delete", "flag", "allow unlink/rmdir", GROUPS[1], typed="allowDelete"),
    Option("allow-overwrite", "flag", "allow O_TRUNC overwrites", GROUPS[1],
           typed="allowOverwrite"),
    Option("incremental-upload", "flag", "append to existing objects (directory buckets)",
           GROUPS[1], typed="incrementalUpload"),
    Option("uid", "int", "owner uid (default: the mounting user)", GROUPS[1], fuse_type="id",
           high=MAX_ID, typed="uid"),
    Option("gid", "int", "owner gid (default: the mounting group)", GROUPS[1], fuse_type="id",
           high=MAX_ID, typed="gid"),
    Option("dir-mode", "mode", "directory mode, octal (default 0755)", GROUPS[1],
           default=0o755, typed="dirMode"),
    Option("file-mode", "mode", "file mode, octal (default 0644)", GROUPS[1], default=0o644,
           typed="fileMode"),
    # -- mount options
    Option("allow-other", "flag", "let other users access the mount", GROUPS[2],
           typed="allowOther"),
    Option("allow-root", "flag", "let root access the mount", GROUPS[2], typed="allowRoot"),
    Option("auto-unmount", "flag", "unmount if the process dies", GROUPS[2],
           refused="the driver unmounts volumes itself"),
    Option("foreground", "flag", "stay in the foreground", GROUPS[2], short="-f",
           refused="the driver runs the FUSE client in the foreground itself"),
    # -- caching and performance
    Option("cache", "text", "local disk data cache directory", GROUPS[3], metavar="DIR",
           refused="the local cache directory is chosen by the node plugin, not by a volume"),
    Option("max-cache-size", "int", "cache size bound", GROUPS[3], fuse_type="positive",
           metavar="MiB", low=1, high=2**40, refused="the local cache is managed by the node "
           "plugin"),
    Option("cache-xz", "text", "shared block cache in this bucket (an S3 Express directory "
           "bucket in your AZ); whoever can write to it decides what every mount using it reads",
           GROUPS[3], metavar="BUCKET", refused=_ADMIN_CACHE),
    Option("cache-xz-endpoint-url", "text", "endpoint of the --cache-xz bucket (default: "
           "--endpoint-url's)", GROUPS[3], metavar="URL", refused=_ADMIN_CACHE),
    Option("cache-xz-max-object-size", "int", "largest object kept in the --cache-xz bucket "
           "(default 1)", GROUPS[3], fuse_type="positive", metavar="MiB", low=1, high=2**20,
           refused=_ADMIN_CACHE),
    Option("metadata-ttl", "ttl", "SECONDS|minimal|indefinite", GROUPS[3], typed="metadataTtl"),
    Option("negative-metadata-ttl", "int", "SECONDS for 'no such file'", GROUPS[3],
           fuse_type="ttl", high=MAX_TTL_SECONDS, typed="negativeMetadataTtl"),
    Option("part-size", "int", "multipart upload part and read-ahead request size (default: "
           f"{DEFAULT_PART_SIZE // MIB} MiB for uploads, {DEFAULT_READ_PART_SIZE // MIB} MiB "
           "for reads)", GROUPS[3], fuse_type="positive", metavar="BYTES",
           low=MIN_PART_SIZE, high=MAX_PART_SIZE, typed="partSize"),
    Option("read-part-size", "int", "read-ahead request size (default: --part-size, else "
           f"{DEFAULT_READ_PART_SIZE // MIB} MiB)", GROUPS[3], fuse_type="positive",
           metavar="BYTES", low=MIN_READ_PART_SIZE, high=MAX_READ_PART_SIZE),
    Option("write-part-size", "int", "multipart upload part size (default: --part-size, else "
           f"{DEFAULT_PART_SIZE // MIB} MiB)", GROUPS[3], fuse_type="positive",
           metavar="BYTES", low=MIN_PART_SIZE, high=MAX_PART_SIZE),
    Option("max-threads", "int", "parallel S3 requests (default %(default)s)", GROUPS[3],
           fuse_type="positive", metavar="N", default=16, low=1, high=256, typed="maxThreads"),
    Option("request-deadline", "int", "total seconds an S3 request may take, retries "
           "included, before the operation fails with EIO (data requests: four times as long; "
           "default %(default)s)", GROUPS[3], fuse_type="positive", metavar="SECONDS",
           default=30, low=1, high=3600, refused=_NODE_OWNS),
    Option("max-memory-target", "int", "memory bound of read-ahead buffers, an eighth of it "
           "for small files this mount just wrote; bigger part sizes are cut to fit it: a read "
           "part is at most a quarter, a file's upload parts at most half (default "
           "%(default)s)", GROUPS[3],
           fuse_type="positive", metavar="MiB", default=DEFAULT_MAX_MEMORY_TARGET_MIB, low=1,
           high=2**20, refused=_NODE_OWNS),
    # -- logging and metrics
    Option("log-directory", "text", "write logs to files in this directory", GROUPS[4],
           short="-l", refused="the FUSE client's logs are managed by the node plugin"),
    Option("debug", "flag", "debug logging", GROUPS[4], short="-d",
           refused="debug logs of the S3 client can hold request signatures and session "
           "tokens; the cluster admin can enable them for all volumes with the node plugin's "
           "--fuse-debug"),
    Option("metrics-address", "text", "Prometheus HOST:PORT", GROUPS[4], fuse_type="address",
           refused="a volume must not open network ports on the node"),
)  # fmt: skip

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
#: Options a PV (and so an S3MountClass) may set.
ALLOWED: tuple[Option, ...] = tuple(o for o in OPTIONS if not o.refused)
#: Option name -> why a PV may not set it (short forms and ``-o`` included).
REFUSED: dict[str, str] = {
    **{o.name: o.refused for o in OPTIONS if o.refused},
    **{o.short.lstrip("-"): o.refused for o in OPTIONS if o.refused and o.short},
    "o": "pass each option as its own list entry",
}
#: S3MountClass typed key -> option.
TYPED: dict[str, Option] = {o.typed: o for o in OPTIONS if o.typed}


def check_value(option: Option, value: str) -> str:
    """``value`` in ``option``'s allow-list domain, canonical text; else OptionValueError."""
    kind = option.kind
    if kind == "int":
        if not value.isdigit() or not option.low <= int(value) <= option.high:
            raise OptionValueError(f"expected an integer {option.low}..{option.high}")
        return str(int(value))
    if kind == "mode":
        if not _MODE_RE.match(value):
            raise OptionValueError("expected an octal mode such as 0755")
        return format(int(value, 8), "04o")
    if kind == "ttl":
        if value in {"minimal", "indefinite"}:
            return value
        if not value.isdigit() or int(value) > MAX_TTL_SECONDS:
            raise OptionValueError("expected seconds, 'minimal' or 'indefinite'")
        return str(int(value))
    if kind == "choice":
        if value not in option.choices:
            raise OptionValueError(f"expected one of {', '.join(sorted(option.choices))}")
        return value
    if kind == "kms-arn":
        if not KMS_KEY_OR_ALIAS_ARN_RE.match(value):
            raise OptionValueError("expected a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
        return value
    raise OptionValueError(f"--{option.name} is not a PV mount option")  # flag / text


KMS_SSE_TYPES = ("aws:kms", "aws:kms:dsse")


def check_combination(given: Mapping[str, str | None], *, directory_bucket: bool | None) -> None:
    """Rules across options (``given``: option name -> value, ``None`` for a flag); the same
    for the FUSE client, the CSI node and the operator. ``directory_bucket`` is ``None`` when
    the bucket is not known yet."""
    if "allow-other" in given and "allow-root" in given:
        raise OptionValueError("--allow-other and --allow-root conflict: choose one")
    if "sse-kms-key-id" in given and given.get("sse") not in KMS_SSE_TYPES:
        raise OptionValueError("--sse-kms-key-id needs --sse aws:kms (or aws:kms:dsse)")
    if "incremental-upload" in given and directory_bucket is False:
        raise OptionValueError(
            "--incremental-upload needs a directory bucket (name--azid--x-s3): appends are an "
            "S3 Express One Zone feature"
        )


def render(option: Option, value: str | None = None) -> str:
    """The argv form: ``--name`` or ``--name=value``."""
    return f"--{option.name}" if value is None else f"--{option.name}={value}"


@dataclass(frozen=True)
class MemoryFit:
    """Part sizes and upload concurrency that fit a memory target (:func:`fit_memory`)."""

    read_part_size: int
    write_part_size: int
    uploads_in_flight: int  #: UploadPart calls of one file at once
    warnings: tuple[str, ...]  #: one line per value changed: what, why and the fix


def _mib(size: int) -> str:
    return f"{size / MIB:g} MiB"


def fit_memory(max_memory_mib: int, read_part_size: int, write_part_size: int) -> MemoryFit:
    """Fit the part sizes asked for into ``max_memory_mib`` (--max-memory-target).

    * A read chunk is held whole, and the read-ahead keeps at least
      :data:`READ_CHUNKS_IN_TARGET` of them within the target: a read part size above a quarter
      of it (or above :data:`MAX_READ_PART_SIZE`, which ``--part-size`` alone could exceed) is
      cut to that, never below :data:`MIN_READ_PART_SIZE`.
    * A file being written holds the part it fills plus the parts in flight: that is kept
      within half of the target by sending fewer parts at once (from
      :data:`MAX_UPLOADS_IN_FLIGHT` down to one), and a write part size above a quarter of the
      target is cut to that (never below S3's :data:`MIN_PART_SIZE`).

    Values that fit are returned unchanged with no warning; so are the defaults at the
    default target."""
    budget = max_memory_mib * MIB
    warnings: list[str] = []
    read_cap = max(MIN_READ_PART_SIZE, min(MAX_READ_PART_SIZE, budget // READ_CHUNKS_IN_TARGET))
    read_cap -= read_cap % MIB
    read = min(read_part_size, read_cap)
    if read < read_part_size:
        need = -(-READ_CHUNKS_IN_TARGET * read_part_size // MIB)
        fix = (
            f"raise --max-memory-target to {need} MiB or lower the read part size"
            if read_part_size <= MAX_READ_PART_SIZE
            else f"read parts are at most {_mib(MAX_READ_PART_SIZE)}: set --read-part-size to "
            f"at most {read} with this target"
        )
        warnings.append(
            f"read part size {read_part_size} ({_mib(read_part_size)}) does not fit "
            f"--max-memory-target {max_memory_mib} MiB ({READ_CHUNKS_IN_TARGET} read chunks "
            f"at least): reads use {read}-byte ({_mib(read)}) parts; {fix}"
        )
    write_cap = max(MIN_PART_SIZE, budget // 4)
    write_cap -= write_cap % MIB
    write = min(write_part_size, write_cap)
    if write < write_part_size:
        warnings.append(
            f"write part size {write_part_size} ({_mib(write_part_size)}) does not fit "
            f"--max-memory-target {max_memory_mib} MiB (a file's upload buffer is at most half "
            f"of it): uploads use {write}-byte ({_mib(write)}) parts; raise "
            f"--max-memory-target to {-(-4 * write_part_size // MIB)} MiB or lower the write "
            "part size"
        )
    in_flight = max(1, min(MAX_UPLOADS_IN_FLIGHT, budget // 2 // write - 1))
    if in_flight < MAX_UPLOADS_IN_FLIGHT:
        need = -(-2 * (MAX_UPLOADS_IN_FLIGHT + 1) * write // MIB)
        warnings.append(
            f"write part size {write} ({_mib(write)}) with --max-memory-target "
            f"{max_memory_mib} MiB: a file being written sends {in_flight} part(s) at once "
            f"instead of {MAX_UPLOADS_IN_FLIGHT}; raise --max-memory-target to {need} MiB for "
            "all of them"
        )
    return MemoryFit(read, write, in_flight, tuple(warnings))


def part_sizes(read: int | None, write: int | None, part: int | None) -> tuple[int, int]:
    """The read and write part sizes a mount uses, from ``--read-part-size``,
    ``--write-part-size`` and ``--part-size`` (which sets both, as in mount-s3): the specific
    flag first, then ``--part-size``, then the default of each."""
    return read or part or DEFAULT_READ_PART_SIZE, write or part or DEFAULT_PART_SIZE


def _given(args: Iterable[str]) -> dict[str, str]:
    """Option name -> value of the ``--name=value`` entries of mount arguments (as PV and
    StorageClass ``mountOptions`` lines render them; ``--flag`` -> '', others ignored)."""
    return dict(arg[2:].partition("=")[::2] for arg in args if arg.startswith("--"))


def fit_memory_args(args: Iterable[str], max_memory_mib: int) -> MemoryFit:
    """:func:`fit_memory` of the part sizes in mount arguments (``--name=value`` entries, as
    PV and StorageClass ``mountOptions`` lines render them; others are ignored), the FUSE
    client's defaults where they say nothing: what a mount of them will use, for the CSI node
    plugin and the operator to report."""
    given = _given(args)

    def size(name: str) -> int | None:
        return int(given[name]) if given.get(name) else None

    read, write = part_sizes(size("read-part-size"), size("write-part-size"), size("part-size"))
    return fit_memory(max_memory_mib, read, write)


def metadata_threads(max_threads: int) -> int:
    """Metadata store calls (HEAD, LIST, ...) a mount runs in worker threads at once: their own
    limiter beside the ``--max-threads`` of data calls, so a lookup never queues behind a
    stalled part; never fewer than 8, so lookups go on with ``--max-threads 1``."""
    return max(8, max_threads)


def mount_threads(max_threads: int) -> int:
    """Threads a FUSE server with ``--max-threads`` runs at most: a worker per data call and
    per metadata call in flight (a call abandoned past its deadline keeps its limiter slot
    until its thread ends) and :data:`OTHER_THREADS`."""
    return max_threads + metadata_threads(max_threads) + OTHER_THREADS


def thread_stacks_args(args: Iterable[str]) -> int:
    """Address space (bytes) the threads of a mount with these arguments reserve at most
    (``--max-threads=N`` as PV ``mountOptions`` render it, else the FUSE client's default;
    clamped to the allow-list's bounds): :func:`mount_threads` stacks of
    :data:`THREAD_STACK_BYTES` plus :data:`THREAD_OVERHEAD_BYTES` each. Reserved, not
    resident: a thread touches a few hundred KiB of its stack. 576 threads (1.2 GiB) for a
    volume's ``maxThreads: 256``, 96 (198 MiB) by default."""
    option = BY_NAME["max-threads"]
    value = _given(args).get(option.name, "")
    default = option.default if isinstance(option.default, int) else option.low
    threads = int(value) if value.isdigit() else default
    threads = min(max(threads, option.low), option.high)
    return mount_threads(threads) * (THREAD_STACK_BYTES + THREAD_OVERHEAD_BYTES)
