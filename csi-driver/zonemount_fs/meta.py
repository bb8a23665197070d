"""Object user metadata as s3fs-fuse writes it, and the mount's memo of it.

Owns the ``x-amz-meta-*`` vocabulary (mode, uid, gid and the three times), its parsing and
formatting, and :class:`MetaMemo`: what this mount last knew of each key's user metadata.

Why a memo: a LIST carries no user metadata, and the kernel forgets inodes at will, so the
mode/owner/mtime that a HEAD or a chmod told this mount would otherwise flip back to the
defaults the next time the file is seen through a listing. The memo maps a key to the ETag
its metadata belongs to (None when unknown, after a copy) and that metadata.

Invariants: an entry is used only while its ETag matches the object's (or is unknown);
entries are bounded (:data:`META_MEMO_ENTRIES`, least recently *written* dropped first - a
read does not refresh an entry); a rename moves the entry with the object.
"""

from __future__ import annotations

import stat
from collections import OrderedDict
from collections.abc import Mapping

META_MODE, META_UID, META_GID, META_MTIME = "mode", "uid", "gid", "mtime"
META_ATIME, META_CTIME = "atime", "ctime"
# s3fs-fuse's symlink: an object whose body is the target and whose x-amz-meta-mode says
# S_IFLNK (written as decimal, with every permission bit, as s3fs does).
SYMLINK_MODE = stat.S_IFLNK | 0o777
META_MEMO_ENTRIES = 100_000


def parse_meta(
    metadata: Mapping[str, str],
) -> tuple[int | None, int | None, int | None, float | None]:
    """(permission bits, uid, gid, mtime) from user metadata; None for what is absent or
    unreadable."""

    def number(key: str, base: int = 10) -> int | None:
        try:
            return int(metadata[key], base)
        except (KeyError, ValueError):
            return None

    mtime: float | None
    try:
        mtime = float(metadata[META_MTIME])
    except (KeyError, ValueError):
        mtime = None
    mode = number(META_MODE)
    return (
        stat.S_IMODE(mode) if mode is not None else None,
        number(META_UID),
        number(META_GID),
        mtime,
    )


def is_symlink_meta(metadata: Mapping[str, str] | None) -> bool:
    try:
        return metadata is not None and stat.S_ISLNK(int(metadata[META_MODE]))
    except (KeyError, ValueError):
        return False


def meta_time(seconds: float) -> str:
    """A time as s3fs-fuse writes and reads it: ``sec.nsec`` with 9 digits of nanoseconds."""
    return f"{seconds:.9f}"


class MetaMemo:
    """key -> (etag, user metadata): survives the kernel forgetting an inode, so that
    attributes set or read once are reported consistently from later listings (which carry
    no user metadata). A bounded LRU (by writes)."""

    def __init__(self, limit: int = META_MEMO_ENTRIES) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, tuple[str | None, dict[str, str]]] = OrderedDict()

    def get(self, key: str) -> tuple[str | None, dict[str, str]] | None:
        return self._entries.get(key)

    def put(self, key: str, etag: str | None, metadata: Mapping[str, str]) -> None:
        self._entries[key] = (etag, dict(metadata))
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> tuple[str | None, dict[str, str]] | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
