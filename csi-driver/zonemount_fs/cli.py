"""``zonemount mount``: parse flags, check the bucket, mount, serve until unmounted.

By default the command daemonizes and returns only when the mount is ready - exit 0 - or
prints one line saying what is wrong and exits non-zero with nothing left mounted. With
``-f`` it stays in the foreground. SIGTERM/SIGINT unmount cleanly; so does
``umount``/``fusermount3 -u`` from outside.

The mount point may be ``/dev/fd/N`` (libfuse >= 3.3 and mount-s3 do the same): N is an open
``/dev/fuse`` descriptor of a mount someone privileged already made (the CSI node plugin does,
then hands the descriptor to the unprivileged ``zonemount csi-mounter``). The client then
serves that connection and never mounts or unmounts anything itself. With ``-f``, the
environment variable ``ZONEMOUNT_READY_FD`` may name a pipe on which the client writes ``ok``
once it serves (or ``error: ...``), as the daemonizing parent does.

Invariants: no traceback for bad input; credentials never appear in argv, logs or errors
(they come only from the AWS credential chain).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import logging.handlers
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.session
from zonemount_contract.keys import READY_FD_ENV
from zonemount_contract.mount_options import THREAD_STACK_BYTES

from .errors import ConfigError, MountError, StoreError
from .metrics import CACHE_XZ_ERRORS, CACHE_XZ_REQUESTS
from .names import is_directory_bucket
from .options import MountOptions, parse_args
from .shared_cache import PREFIX, SharedCache
from .store.base import PutOptions
from .store.s3 import S3Settings, S3Store

if TYPE_CHECKING:
    from .fuse_adapter import ZonemountOperations
    from .journal import UploadJournal

log = logging.getLogger("zonemount")
FSTYPE = "fuse.zonemount"
#: Allocations (net) between two young-generation collections of the mount process
#: (CPython's default is 700). A listing of 10,000 keys allocates a few hundred thousand
#: objects that die within the request; at 700, the collections they trigger - and the full
#: ones that follow, which walked every object botocore and the mount had loaded - were
#: about half of the FUSE server's CPU in a warm ``ls -l`` (py-spy and ``gc.callbacks``).
GC_YOUNG_THRESHOLD = 20_000


def _err(message: str) -> None:
    print(f"zonemount mount: error: {message}", file=sys.stderr)


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
                    return True
    except OSError:
        return os.path.ismount(target)
    return False


_FD_MOUNTPOINT = re.compile(r"^/dev/fd/(\d+)$")
#: Device number of /dev/fuse (misc major 10, minor 229).
_FUSE_RDEV = os.makedev(10, 229)


def fuse_fd(path: Path) -> int | None:
    """N when ``path`` is the ``/dev/fd/N`` form of a pre-mounted FUSE connection."""
    match = _FD_MOUNTPOINT.match(str(path))
    return int(match.group(1)) if match else None


def check_mountpoint(path: Path) -> None:
    fd = fuse_fd(path)
    if fd is not None:
        try:
            st = os.fstat(fd)
        except OSError:
            raise MountError(f"{path}: descriptor {fd} is not open (pass a /dev/fuse fd)") from None
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _FUSE_RDEV:
            raise MountError(f"{path}: descriptor {fd} is not an open /dev/fuse device")
        return
    if not path.exists():
        raise MountError(f"mount point {path} does not exist: create it with 'mkdir -p {path}'")
    if not path.is_dir():
        raise MountError(f"mount point {path} is not a directory")
    if is_mountpoint(path):
        raise MountError(f"{path} is already a mount point: unmount it first ('umount {path}')")
    try:
        if any(path.iterdir()):
            raise MountError(f"mount point {path} is not empty: mount on an empty directory")
    except PermissionError:
        raise MountError(f"cannot read mount point {path}: permission denied") from None


def settings_for(opts: MountOptions, *, quick: bool = False) -> S3Settings:
    return S3Settings(
        bucket=opts.bucket,
        region=opts.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        endpoint_url=opts.endpoint_url,
        force_path_style=opts.force_path_style,
        profile=opts.profile,
        no_sign_request=opts.no_sign_request,
        max_connections=max(16, opts.max_threads * 2),
        connect_timeout=3.0 if quick else 5.0,
        read_timeout=10.0 if quick else min(30.0, opts.request_deadline),
        max_attempts=2 if quick else 6,
        body_deadline=opts.data_deadline,
        put=PutOptions(opts.storage_class, opts.sse, opts.sse_kms_key_id),
    )


def check_bucket(opts: MountOptions, session: botocore.session.Session | None = None) -> None:
    """Fail fast, with a message a person can act on, if the bucket cannot be used."""
    where = f"bucket {opts.bucket!r}" + (f" (prefix {opts.prefix!r})" if opts.prefix else "")
    try:
        S3Store(settings_for(opts, quick=True), session).check_bucket(opts.prefix)
    except StoreError as exc:
        code = exc.code
        if code == "NoSuchBucket":
            raise MountError(
                f"{where} does not exist; check the name and --region/--endpoint-url"
            ) from None
        if code == "NoCredentials":
            raise MountError(
                f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, use --profile NAME, run with IRSA or an instance profile, "
                "or pass --no-sign-request for a public bucket"
            ) from None
        if exc.errno == 13:
            raise MountError(
                f"access denied to {where} ({code or 'AccessDenied'}): check the credentials "
                "(environment, --profile, IRSA) and that they allow s3:ListBucket"
                + (" and s3express:CreateSession" if opts.is_directory_bucket else "")
            ) from None
        endpoint = opts.endpoint_url or "the AWS S3 endpoint"
        raise MountError(
            f"cannot use {where} at {endpoint}: {exc}; check --endpoint-url, --region and the "
            "network"
        ) from None


def shared_cache_for(
    opts: MountOptions, session: botocore.session.Session | None = None
) -> SharedCache | None:
    """The ``--cache-xz`` cache: a second S3Store (same endpoint, credentials and express
    session handling as the mounted bucket) with short timeouts and one attempt, since a miss
    is cheaper than waiting. A missing or forbidden cache bucket fails the mount (a typo must
    not silently disable the cache); an unreachable one only logs: it is best effort."""
    if opts.cache_xz_bucket is None:
        return None
    settings = dataclasses.replace(
        settings_for(opts),
        bucket=opts.cache_xz_bucket,
        endpoint_url=opts.cache_xz_endpoint_url or opts.endpoint_url,
        connect_timeout=1.0,
        read_timeout=5.0,
        max_attempts=1,
        put=PutOptions(),
    )
    store = S3Store(settings, session, requests=CACHE_XZ_REQUESTS, errors=CACHE_XZ_ERRORS)
    try:
        store.check_bucket(PREFIX)
    except StoreError as exc:
        if exc.code == "NoSuchBucket":
            raise MountError(
                f"--cache-xz bucket {opts.cache_xz_bucket!r} does not exist; create it (a "
                "directory bucket in this Availability Zone) or fix the name"
            ) from None
        if exc.errno == 13:
            raise MountError(
                f"access denied to --cache-xz bucket {opts.cache_xz_bucket!r}: the mount needs "
                "s3:ListBucket, s3:GetObject and s3:PutObject on it"
                + (" (s3express:CreateSession)" if is_directory_bucket(settings.bucket) else "")
            ) from None
        log.warning("--cache-xz bucket not reachable now (%s); reads go to the source", exc)
    return SharedCache(
        store,
        opts.bucket,
        opts.read_chunk_size,
        opts.cache_xz_max_object_mib * 1024 * 1024,
    )


def _setup_logging(opts: MountOptions, foreground: bool) -> None:
    level = logging.DEBUG if opts.debug else logging.INFO
    handler: logging.Handler
    if opts.log_directory is not None:
        opts.log_directory.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(opts.log_directory / f"zonemount-{os.getpid()}.log")
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK stays at WARNING even with --debug: its DEBUG output includes request
    # signatures and STS session credentials, which must never reach a log.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


#: The kernel's read-ahead for a mount: 8 MiB (docs/performance.md, "Kernel interface": at 4 MiB a
#: `dd` read over 15 ms requests ran at half the speed; fio's POSIX_FADV_SEQUENTIAL doubles it).
READ_AHEAD_KB = 8192


def _bdi_file(mountpoint: Path) -> Path | None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == str(mountpoint):
                return Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb")
    return None


async def tune_readahead(mountpoint: Path, kb: int = READ_AHEAD_KB) -> None:
    """Raise the kernel's read-ahead for this mount from 128 KiB to ``kb``.

    Sequential reads then arrive as 1 MiB FUSE requests, several in flight, instead of one
    128 KiB request at a time (8x fewer trips through the Python loop). The kernel sets the
    read-ahead when it processes the FUSE INIT reply, so this runs from the serving loop and
    retries until the value sticks. The backing device is found in /proc/self/mountinfo (no
    FUSE request, so this cannot deadlock); failures are ignored (non-root callers keep the
    kernel default)."""
    import trio

    for _ in range(50):
        await trio.sleep(0.1)
        try:
            path = _bdi_file(mountpoint)
            if path is None:
                continue
            if path.read_text().strip() == str(kb):
                return
            path.write_text(str(kb))
        except OSError as exc:
            log.debug("read-ahead not tuned: %s", exc)
            return


def _fuse_options(opts: MountOptions) -> set[str]:
    options = {"fsname=zonemount", "subtype=zonemount", "default_permissions", "noatime"}
    if opts.read_only:
        options.add("ro")
    if opts.allow_other:
        options.add("allow_other")
    if opts.allow_root:
        options.add("allow_root")
    if opts.auto_unmount:
        options.add("auto_unmount")
    return options


def serve(opts: MountOptions, ready_fd: int | None) -> int:
    """Check the bucket, mount, report readiness on ``ready_fd``, serve until unmounted."""
    import pyfuse3
    import trio

    # before the first thread; the CSI mounter's RLIMIT_AS bound counts these stacks
    # (zonemount_contract.mount_options.thread_stacks_args)
    threading.stack_size(THREAD_STACK_BYTES)
    report = _reporter(ready_fd)
    for warning in opts.memory_warnings:  # R-FLAGS-MEMORY-TARGET: what was cut to fit
        log.warning("%s", warning)
    try:
        store, shared_cache, ops = _mount(opts)
    except (MountError, ConfigError) as exc:
        report(f"error: {exc}")
        _err(str(exc))  # the daemon's stderr is /dev/null; -f logs it
        return 1
    except (OSError, RuntimeError) as exc:
        message = f"cannot mount at {opts.mountpoint}: {exc}"
        if isinstance(exc, RuntimeError) and "fuse" in str(exc).lower():
            message += " (is /dev/fuse available and fuse3 installed?)"
        report(f"error: {message}")
        _err(message)
        return 1
    journal, orphans = _open_journal(opts)
    tune_gc()
    try:
        trio.run(_serve_mounted, opts, store, shared_cache, ops, journal, orphans, report)
    except BaseException:
        log.exception("file system loop failed")
        pyfuse3.close(unmount=True)
        return 1
    pyfuse3.close(unmount=True)
    journal.close()
    log.info("unmounted %s", opts.mountpoint)
    return 0


def tune_gc() -> None:
    """Once mounted: collect, then freeze what start-up left (modules, botocore's models,
    the store) so collections never walk it again, and collect the young generation less
    often (:data:`GC_YOUNG_THRESHOLD`). Only cyclic garbage waits longer; the inode table,
    handles and buffers are freed by reference counting as before."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _reporter(ready_fd: int | None) -> Callable[[str], None]:
    """Writes the one readiness message (``ok`` or ``error: ...``) to ``ready_fd``."""

    def report(message: str) -> None:
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, message.encode())
                os.close(ready_fd)

    return report


def _mount(opts: MountOptions) -> tuple[S3Store, SharedCache | None, ZonemountOperations]:
    """Check the bucket, make the stores, start metrics and mount the FUSE file system (its
    operations object is filled in with the Filesystem once the event loop runs)."""
    import pyfuse3

    from .fuse_adapter import ZonemountOperations

    session = botocore.session.Session(profile=opts.profile)
    check_bucket(opts, session)
    store = S3Store(settings_for(opts), session)
    shared_cache = shared_cache_for(opts, session)
    if opts.metrics_address is not None:
        from . import metrics

        metrics.serve(*opts.metrics_address)
    ops = ZonemountOperations.__new__(ZonemountOperations)
    pyfuse3.Operations.__init__(ops)
    pyfuse3.init(ops, str(opts.mountpoint), _fuse_options(opts))
    return store, shared_cache, ops


def _open_journal(opts: MountOptions) -> tuple[UploadJournal, dict[str, str]]:
    """The mount's upload journal and the uploads a crashed predecessor left (to sweep)."""
    from .journal import UploadJournal, state_dir

    journal = UploadJournal(opts.endpoint_url, opts.bucket, opts.prefix, state_dir())
    try:
        orphans = journal.open()
    except OSError as exc:
        log.warning("no upload journal (%s): uploads orphaned by a crash are not swept", exc)
        orphans = {}
    return journal, orphans


async def _serve_mounted(
    opts: MountOptions,
    store: S3Store,
    shared_cache: SharedCache | None,
    ops: ZonemountOperations,
    journal: UploadJournal,
    orphans: dict[str, str],
    report: Callable[[str], None],
) -> None:
    """The file system's event loop: serve FUSE requests until unmounted or signalled."""
    import pyfuse3
    import trio

    from .core import Filesystem

    async with trio.open_nursery() as nursery:
        fs = Filesystem(store, opts, nursery, journal, shared_cache)
        ops.fs = fs
        if orphans:
            nursery.start_soon(fs.sweep_orphans, orphans)
        nursery.start_soon(_unmount_on_signal, opts.mountpoint)
        if fuse_fd(opts.mountpoint) is None:  # else the mounting node plugin tunes it
            nursery.start_soon(tune_readahead, opts.mountpoint)
        log.info("mounted s3://%s/%s at %s", opts.bucket, opts.prefix, opts.mountpoint)
        report("ok")
        try:
            await pyfuse3.main(min_tasks=4, max_tasks=64)
        finally:
            with trio.CancelScope(shield=True):
                await fs.shutdown()
            nursery.cancel_scope.cancel()


async def _unmount_on_signal(mountpoint: Path) -> None:
    """SIGTERM, SIGINT or SIGHUP end the FUSE loop (the mount is then closed and unmounted)."""
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
        async for _ in sigs:
            log.info("signal received: unmounting %s", mountpoint)
            pyfuse3.terminate()
            return


def _daemonize(opts: MountOptions) -> int:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        os.close(read_fd)
        message = b"".join(chunks).decode(errors="replace")
        if message == "ok":
            return 0
        _, status = os.waitpid(pid, 0)
        _err(message.removeprefix("error: ") or f"mount process exited (status {status})")
        return 1
    # child: detach from the terminal and the caller's session
    os.close(read_fd)
    os.setsid()
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _setup_logging(opts, foreground=False)
    code = serve(opts, write_fd)
    os._exit(code)


def main(argv: Sequence[str]) -> int:
    try:
        opts = parse_args(argv)
        check_mountpoint(opts.mountpoint)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except MountError as exc:
        _err(str(exc))
        return 1
    if not opts.foreground:  # the daemon logs them too, where its logs go
        for warning in opts.memory_warnings:
            print(f"zonemount mount: warning: {warning}", file=sys.stderr)
    if opts.foreground:
        _setup_logging(opts, foreground=True)
        ready = os.environ.get(READY_FD_ENV, "")
        return serve(opts, int(ready) if ready.isdigit() else None)
    return _daemonize(opts)
