"""The privileged half of fd passing: open ``/dev/fuse``, mount it, unmount it (node plugin only).

The node plugin (privileged, ``Bidirectional`` propagation on the kubelet directory) makes the
kernel mount itself, exactly as ``fusermount3`` would - ``mount("zonemount", TARGET,
"fuse.zonemount", MS_NOSUID|MS_NODEV|MS_NOATIME[|MS_RDONLY], "fd=N,rootmode=40000,user_id=0,
group_id=0,default_permissions[,allow_other]")`` - and hands the descriptor N to the
unprivileged ``zonemount csi-mounter``, whose FUSE server serves it as ``/dev/fd/N``.

Invariants: a descriptor is opened close-on-exec and closed by the caller once handed over (so
the connection dies with the FUSE server that holds the last copy: pods then get ENOTCONN, never
a hang); :func:`fuse_mount` onto a path that already holds a mount *stacks* on top of it (that is
how a replacement reaches pods with HostToContainer propagation, see docs/csi.md); options come
only from the fixed set below, never from a volume's free text.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence

from . import mountinfo

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOATIME = 1024
MNT_DETACH = 2
FUSE_DEVICE = "/dev/fuse"
SOURCE = "zonemount"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def open_fuse() -> int:
    """A fresh ``/dev/fuse`` descriptor (close-on-exec)."""
    return os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)


def kernel_options(args: Sequence[str]) -> tuple[int, bool]:
    """(mount flags, allow_other) for a ``zonemount mount`` argv (its allow-listed flags)."""
    flags = MS_NOSUID | MS_NODEV | MS_NOATIME
    if "--read-only" in args:
        flags |= MS_RDONLY
    # --allow-root is allow_other in the kernel plus a uid check inside libfuse (as fusermount).
    allow_other = "--allow-other" in args or "--allow-root" in args
    return flags, allow_other


def fuse_mount(target: str, fd: int, flags: int, allow_other: bool) -> None:
    """Mount the FUSE connection ``fd`` at ``target`` (stacking on what is there)."""
    data = f"fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions"
    if allow_other:
        data += ",allow_other"
    _check(
        _libc.mount(
            SOURCE.encode(),
            target.encode(),
            mountinfo.FSTYPE.encode(),
            flags,
            data.encode(),
        ),
        f"mount of {target}",
    )


def tune_readahead(target: str, kb: int, timeout: float = 10.0) -> bool:
    """Set the kernel read-ahead of the FUSE mount at ``target`` (the top layer) to ``kb``.

    The unprivileged server cannot write /sys; the kernel resets the value when it processes
    FUSE INIT, so this first waits (bounded) until the mount answers - INIT is done then.
    Returns whether the value was written.
    """
    if mountinfo.probe(target, stat_timeout=timeout) is not mountinfo.MountState.HEALTHY:
        return False
    entry = mountinfo.find(target)
    if entry is None or not entry.device:
        return False
    try:
        with open(f"/sys/class/bdi/{entry.device}/read_ahead_kb", "w") as handle:
            handle.write(str(kb))
    except OSError:
        return False
    return True


def umount(target: str, detach: bool = False) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH if detach else 0), f"umount of {target}")


def umount_all(target: str, limit: int = 64) -> int:
    """Unmount every zonemount layer stacked at ``target`` (lazily when busy); returns how many.

    Stops at a mount that is not ours (``FOREIGN``), which the caller must never touch.
    """
    removed = 0
    while removed < limit:
        entry = mountinfo.find(target)
        if entry is None or entry.fstype != mountinfo.FSTYPE:
            break
        try:
            umount(target)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # raced with another unmount
                continue
            umount(target, detach=True)
        removed += 1
    return removed
