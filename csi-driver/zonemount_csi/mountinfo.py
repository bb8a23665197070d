"""Reading ``/proc/self/mountinfo`` and probing the health of a mount point.

A FUSE mount whose daemon died stays in the mount table, but every access to it fails with
ENOTCONN ("Transport endpoint is not connected"). :func:`probe` tells the three states apart:

* ``HEALTHY`` - a ``fuse.zonemount`` mount is at the path and its root can be opened;
* ``BROKEN`` - a mount is at the path but opening its root fails with
  ENOTCONN/ECONNABORTED/EIO, or does not answer within ``stat_timeout`` (a hung FUSE process
  must not hang the plugin: the probe runs in a daemon thread that is abandoned on timeout).
  The probe is an opendir, not a ``stat``: the kernel answers ``stat`` of a dead mount's root
  from its attribute cache until the attributes time out, opendir always asks the daemon;
* ``ABSENT`` - no mount at the path (an empty directory, or nothing at all);
* ``FOREIGN`` - something that is not a zonemount mount is mounted there.

Invariants: paths in mountinfo are octal-escaped (``\\040`` for a space) and are unescaped
here; the last matching line wins (the top of a mount stack is what a process sees).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "fuse.zonemount"
MOUNTINFO = Path("/proc/self/mountinfo")
_DEAD_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED, errno.EIO})


class MountState(enum.Enum):
    HEALTHY = "healthy"
    BROKEN = "broken"
    ABSENT = "absent"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str
    source: str
    #: ``major:minor`` of the mounted file system (a FUSE mount's /sys/class/bdi entry).
    device: str = ""


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    """Parse mountinfo text (see proc(5)); malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        left_fields, right_fields = left.split(), right.split()
        if not sep or len(left_fields) < 5 or len(right_fields) < 2:
            continue
        entries.append(
            MountEntry(
                _unescape(left_fields[4]),
                right_fields[0],
                _unescape(right_fields[1]),
                left_fields[2],
            )
        )
    return entries


def find(path: str, mountinfo: Path = MOUNTINFO) -> MountEntry | None:
    """The topmost mount whose mount point is exactly ``path`` (already absolute/normalised)."""
    found = None
    for entry in parse(mountinfo.read_text()):
        if entry.mount_point == path:
            found = entry
    return found


def _opendir_within(path: str, timeout: float) -> OSError | bool | None:
    """Open and close the directory ``path``, bounded in time.

    Returns None (answered), the OSError, or False (no answer within ``timeout``). An opendir
    always reaches the FUSE daemon, unlike ``stat``, which the kernel may answer from its
    attribute cache for a while after the daemon died.
    """
    outcome: list[OSError | None] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            outcome.append(exc)
        else:
            os.close(fd)
            outcome.append(None)

    worker = threading.Thread(target=run, name="zonemount-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else False


def statvfs_within(path: str, timeout: float = 5.0) -> os.statvfs_result | None:
    """``os.statvfs(path)`` bounded in time; None when it fails or does not answer."""
    outcome: list[os.statvfs_result] = []

    def run() -> None:
        with contextlib.suppress(OSError):
            outcome.append(os.statvfs(path))

    worker = threading.Thread(target=run, name="zonemount-statvfs", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else None


#: The FUSE client's health report, an extended attribute of the mount's root
#: (zonemount_fs.context.Health): "ok" or "unhealthy: <why>".
HEALTH_XATTR = "user.zonemount.health"


def fs_health_within(path: str, timeout: float = 5.0) -> str | None:
    """The FUSE client's own health report for the mount at ``path``, bounded in time;
    None when it does not answer (or predates the report)."""
    outcome: list[str] = []

    def run() -> None:
        with contextlib.suppress(OSError):
            outcome.append(os.getxattr(path, HEALTH_XATTR).decode(errors="replace"))

    worker = threading.Thread(target=run, name="zonemount-health", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else None


def probe(path: str, mountinfo: Path = MOUNTINFO, stat_timeout: float = 10.0) -> MountState:
    """Classify the mount at ``path`` (see module docstring)."""
    entry = find(path, mountinfo)
    if entry is None:
        return MountState.ABSENT
    if entry.fstype != FSTYPE:
        return MountState.FOREIGN
    result = _opendir_within(path, stat_timeout)
    if result is False:
        return MountState.BROKEN  # hung: treat like dead, the repair kills the process
    if isinstance(result, OSError):
        if result.errno in _DEAD_ERRNOS:
            return MountState.BROKEN
        raise result
    return MountState.HEALTHY


def is_dead_mount_error(exc: OSError) -> bool:
    return exc.errno in _DEAD_ERRNOS
