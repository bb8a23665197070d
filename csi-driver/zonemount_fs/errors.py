"""The exception hierarchy of the FUSE client, and how each maps to an errno.

::

    ZonemountError                  base of everything raised on purpose
    +-- ConfigError                 bad command-line input; message names the fix (exit 2)
    +-- MountError                  the mount cannot be set up (bucket, credentials, mountpoint)
    +-- FsError(errno)              a filesystem operation fails with this errno
    +-- StoreError                  an S3 call failed; ``errno`` says how the filesystem reports it
        +-- ObjectNotFound          404 / NoSuchKey                  -> ENOENT
        +-- BucketNotFound          NoSuchBucket                     -> ENOENT
        +-- AccessDenied            403, bad or expired credentials  -> EACCES
        +-- PreconditionFailed      412: the object changed under us -> ESTALE
        +-- NotSupported            501 / the server lacks the call  -> ENOTSUP
        +-- StoreUnavailable        endpoint unreachable, timeouts, throttling after retries -> EIO

Invariant: messages never contain credentials or signed URLs.
"""

from __future__ import annotations

import errno as _errno


class ZonemountError(Exception):
    """Base of all errors raised on purpose by zonemount_fs."""


class ConfigError(ZonemountError):
    """Invalid command-line input. The message says what is wrong and how to fix it."""


class MountError(ZonemountError):
    """The mount cannot be set up."""


class FsError(ZonemountError):
    """A filesystem operation fails with ``errno``. ``cache_for`` (a lookup's ENOENT only):
    seconds the kernel may cache the miss as a negative entry (R-META-NEGATIVE-KERNEL)."""

    def __init__(self, errno: int, message: str = "", *, cache_for: float = 0.0) -> None:
        super().__init__(message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno
        self.cache_for = cache_for


class StoreError(ZonemountError):
    """An object-store call failed."""

    errno: int = _errno.EIO

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ObjectNotFound(StoreError):
    errno = _errno.ENOENT


class BucketNotFound(StoreError):
    errno = _errno.ENOENT


class AccessDenied(StoreError):
    errno = _errno.EACCES


class PreconditionFailed(StoreError):
    errno = _errno.ESTALE


class NotSupported(StoreError):
    errno = _errno.ENOTSUP


class StoreUnavailable(StoreError):
    errno = _errno.EIO
