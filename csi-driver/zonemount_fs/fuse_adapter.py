"""The thin pyfuse3 adapter: translates FUSE requests to :class:`core.Filesystem` calls.

Owns only conversions - bytes names <-> str, :class:`core.Attr` <-> ``EntryAttributes``,
:class:`FsError` -> ``FUSEError`` - and the per-operation metrics. No filesystem logic here.

Invariants: every handler either returns a reply or raises ``pyfuse3.FUSEError``; an
unexpected exception is logged and reported as EIO, never left to kill the session.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from . import metrics, procinfo
from .core import ROOT_INO, Attr, Filesystem
from .errors import FsError

log = logging.getLogger("zonemount.fuse")
#: The mount's health, an extended attribute of its root (see context.Health).
HEALTH_XATTR = b"user.zonemount.health"
P = ParamSpec("P")
R = TypeVar("R")


def _entry(attr: Attr) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attr.ino
    entry.generation = 0
    entry.entry_timeout = attr.timeout
    entry.attr_timeout = attr.attr_timeout
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_rdev = 0
    entry.st_size = attr.size
    entry.st_blksize = 1024 * 1024
    entry.st_blocks = (attr.size + 511) // 512
    entry.st_atime_ns = int(attr.atime * 1e9)
    entry.st_mtime_ns = int(attr.mtime * 1e9)
    entry.st_ctime_ns = int(attr.ctime * 1e9)
    return entry


def _name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None


Handler = Callable[P, Coroutine[Any, Any, R]]
#: A lookup or getattr still waiting on S3 after KILL_POLL_START seconds checks every
#: KILL_POLL seconds whether its caller is being killed (SIGKILL pending in /proc) and then
#: answers EINTR at once: pyfuse3 does not deliver FUSE interrupts, and the kernel keeps a
#: caller whose request reached the daemon in uninterruptible sleep until it is answered.
KILL_POLL_START = 0.2
_LOOKUP_MISSES = metrics.FUSE_ERRORS.labels(op="lookup", errno="ENOENT")
KILL_POLL = 0.1


class KillWatch:
    """Gives up lookups and getattrs whose caller is being killed, with one task for all of
    them: a request registers its caller and cancel scope; the task wakes every
    ``KILL_POLL`` seconds while requests wait and checks those older than
    ``KILL_POLL_START`` (a SIGKILL pending in /proc). A request answered from the tree costs
    a dict entry, not a nursery and a task (the per-request cost on every ``stat``)."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[int, float, trio.CancelScope]] = {}
        self._next = 0
        self._wake: trio.Event | None = None
        self._running = False

    async def run(self, ctx: pyfuse3.RequestContext, op: Coroutine[Any, Any, R]) -> R:
        """Await ``op``; give up with EINTR as soon as the calling process is being killed.
        Only for operations that change nothing before their last await (lookup, getattr)."""
        if ctx.pid <= 0:
            return await op  # a caller outside our PID namespace: the deadline bounds it
        key = self._next
        self._next += 1
        with trio.CancelScope() as scope:
            self._waiting[key] = (ctx.pid, trio.current_time(), scope)
            if not self._running:
                self._running = True
                trio.lowlevel.spawn_system_task(self._poll)
            elif self._wake is not None:
                self._wake.set()
            try:
                return await op
            finally:
                del self._waiting[key]
        raise FsError(errno.EINTR, "the caller was killed")

    async def _poll(self) -> None:
        while True:
            if not self._waiting:
                self._wake = trio.Event()
                await self._wake.wait()
                self._wake = None
            await trio.sleep(KILL_POLL)
            now = trio.current_time()
            for pid, since, scope in list(self._waiting.values()):
                if now - since >= KILL_POLL_START and procinfo.fatal_signal_pending(pid):
                    scope.cancel()


def _op(name: str) -> Callable[[Handler[P, R]], Handler[P, R]]:
    latency = metrics.FUSE_LATENCY.labels(name)  # once per operation, not per request

    def wrap(fn: Handler[P, R]) -> Handler[P, R]:
        @functools.wraps(fn)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            except FsError as exc:
                metrics.FUSE_ERRORS.labels(op=name, errno=errno.errorcode.get(exc.errno, "?")).inc()
                # Expected answers are not news: lookups of missing names, exclusive creates,
                # and Hadoop's FileUtil.fullyDelete, which first tries rmdir on every
                # directory it deletes (ENOTEMPTY) before emptying it.
                if exc.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                    log.info("%s failed: %s", name, exc)
                raise pyfuse3.FUSEError(exc.errno) from None
            except pyfuse3.FUSEError:
                raise
            except Exception:
                metrics.FUSE_ERRORS.labels(op=name, errno="EIO").inc()
                log.exception("%s: unexpected error", name)
                raise pyfuse3.FUSEError(errno.EIO) from None
            finally:
                latency.observe(time.perf_counter() - start)

        return inner

    return wrap


class ZonemountOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs

    @functools.cached_property
    def _killable(self) -> KillWatch:  # the mount builds this object without __init__
        return KillWatch()

    @_op("lookup")
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            attr = await self._killable.run(ctx, self.fs.lookup(parent_inode, _name(name)))
        except FsError as exc:
            if exc.errno != errno.ENOENT or exc.cache_for <= 0:
                raise
            # R-META-NEGATIVE-KERNEL: the kernel caches the miss (inode 0) for that long;
            # counted as the ENOENT it is
            _LOOKUP_MISSES.inc()
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = 0
            entry.entry_timeout = exc.cache_for
            return entry
        return _entry(attr)

    @_op("getattr")
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        attr = self.fs.getattr_now(inode)  # current: no request, nothing to give up on
        if attr is None:
            attr = await self._killable.run(ctx, self.fs.getattr(inode))
        return _entry(attr)

    @_op("setattr")
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        now = time.time()
        result = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            mtime=(attr.st_mtime_ns / 1e9 if attr.st_mtime_ns else now)
            if fields.update_mtime
            else None,
            atime=(attr.st_atime_ns / 1e9 if attr.st_atime_ns else now)
            if fields.update_atime
            else None,
        )
        return _entry(result)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.fs.forget(inode, count)

    @_op("opendir")
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.fs.opendir(inode)

    @_op("readdir")
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = await self.fs.readdir(fh, start_id)
        for index, (name, attr) in enumerate(entries, start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name.encode("utf-8"), _entry(attr), index):
                break
            self.fs.remember(attr.ino)

    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @_op("mkdir")
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _entry(
            await self.fs.mkdir(parent_inode, _name(name), mode & ~ctx.umask, ctx.uid, ctx.gid)
        )

    @_op("rmdir")
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.rmdir(parent_inode, _name(name))

    @_op("unlink")
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.unlink(parent_inode, _name(name))

    @_op("rename")
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.fs.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags
        )

    @_op("symlink")
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _entry(await self.fs.symlink(parent_inode, _name(name), target, ctx.uid, ctx.gid))

    @_op("readlink")
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.fs.readlink(inode)

    @_op("create")
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.fs.create(
            parent_inode, _name(name), mode & ~ctx.umask, flags, ctx.uid, ctx.gid
        )
        self.fs.set_opener(fh, ctx.pid)
        handle = self.fs.files[fh]
        return pyfuse3.FileInfo(fh=fh, direct_io=handle.uncached_writes), _entry(attr)

    @_op("open")
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh = await self.fs.open(inode, flags)
        self.fs.set_opener(fh, ctx.pid)
        handle = self.fs.files[fh]
        return pyfuse3.FileInfo(
            fh=fh, direct_io=handle.direct or handle.uncached_writes, keep_cache=handle.keep_cache
        )

    @_op("read")
    async def read(self, fh: int, off: int, size: int) -> bytes:
        data = await self.fs.read(fh, off, size)
        metrics.BYTES_READ.inc(len(data))
        return data

    @_op("write")
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        written = await self.fs.write(fh, off, buf)
        metrics.BYTES_WRITTEN.inc(written)
        return written

    @_op("flush")
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @_op("fsync")
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    @_op("release")
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @_op("getxattr")
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        """Only ``user.zonemount.health`` of the root: "ok" or why S3 is not answering
        (read by the CSI node plugin's volume health check). Counted like every operation:
        the kernel asks for ``security.capability`` before each write through its page
        cache (R-WRITE-UNCACHED says which writes avoid it)."""
        if inode == ROOT_INO and name == HEALTH_XATTR:
            return self.fs.health.report().encode()
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = 1024 * 1024
        data.f_frsize = 1024 * 1024
        data.f_blocks = data.f_bfree = data.f_bavail = 2**40
        data.f_files = data.f_ffree = data.f_favail = 2**40
        data.f_namemax = 255
        return data
