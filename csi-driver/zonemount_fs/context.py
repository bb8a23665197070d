"""The per-mount I/O context: what every part of the filesystem core needs to talk to S3.

One :class:`IoContext` per mount holds the store, the mount's options, the nursery that
background work (part uploads, prefetches, abort retries) runs in, the upload journal, the
worker-thread limiters, the read-ahead memory budget, the block caches and the mount's
:class:`Health`. Readers (:mod:`.prefetch`), writers (:mod:`.upload`) and the filesystem
(:mod:`.core` and the modules it is split into) take this one object instead of a long list
of constructor arguments.

Invariants:

* Every store call goes through :meth:`IoContext.run` (or :meth:`IoContext.call`, which
  translates store errors into :class:`~.errors.FsError`): a blocking call runs in a worker
  thread under the limiter of its class - data calls (:data:`DATA_CALLS`, ``--max-threads``,
  the data deadline) or metadata calls (their own limiter, ``--request-deadline``) - so a
  lookup never queues behind a stalled part. A call the store can await on the trio thread
  (its ``native(fn)`` twin: S3's DeleteObject, ListObjectsV2, one-request CopyObject and a
  small file's PutObject over plain HTTP) is awaited there instead, under the same limiter,
  deadline and health accounting - without the hand-off to a worker thread and back, which
  cost as much CPU as the request (its connections are still opened, and a redirected call
  finished by botocore, in threads of trio's default limiter).
* The metadata limiter's size is the option table's ``metadata_threads``: the CSI mounter
  bounds a server's address space by the threads the limiters (and trio's default limiter)
  let it start (``zonemount_contract.mount_options.thread_stacks_args``).
* Past its deadline a call's caller gets :class:`~.errors.StoreUnavailable` at once; the
  worker thread is abandoned and ends with its own timeouts. :class:`Health` records every
  answer and every miss per class.
* The context holds no filesystem state (inodes, handles): it may be shared by every reader
  and writer of the mount without any ordering between them. Only :class:`Health` is touched
  from worker threads (its counter under a lock); everything else is used on the trio thread.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from zonemount_contract.mount_options import metadata_threads

from . import metrics
from .cache import DataCache
from .errors import FsError, StoreError, StoreUnavailable
from .journal import UploadJournal
from .options import MountOptions
from .retained import Retained
from .shared_cache import BlockCache, SharedCache, TieredCache
from .store.base import ObjectStore

log = logging.getLogger("zonemount.fs")
T = TypeVar("T")

#: Store calls that move object data (limited by --max-threads, data deadline); every other
#: call is metadata (its own limiter, --request-deadline).
DATA_CALLS = frozenset(
    {
        "fill",
        "_from_cache",
        "_to_cache",
        "get",
        "get_range",
        "open_range",
        "put",
        "upload_part",
        "complete_multipart",
        "copy",
        "append",
    }
)


def _now() -> float:
    return time.monotonic()


class Health:
    """Is this mount's S3 answering (within deadlines, without timeouts)? Read through
    ``user.zonemount.health`` (an xattr of the root) by the CSI node plugin's health check.

    Per class of call (data, metadata): unhealthy from a missed deadline until a call of
    the same class is answered again - so a hung data path shows even while metadata works."""

    def __init__(self) -> None:
        self.running = 0  # worker threads inside a store call (abandoned ones included)
        self.last_answer = {"data": _now(), "metadata": _now()}
        self.last_miss = {"data": 0.0, "metadata": 0.0}
        self.misses = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.running += 1

    def ended(self) -> None:
        with self._lock:
            self.running -= 1

    def answered(self, kind: str) -> None:
        self.last_answer[kind] = _now()

    def missed(self, kind: str) -> None:
        self.last_miss[kind] = _now()
        self.misses += 1
        metrics.S3_DEADLINES.labels(kind=kind).inc()

    def report(self) -> str:
        failing = [k for k, t in self.last_miss.items() if t > self.last_answer[k]]
        if failing:
            return (
                f"unhealthy: S3 {' and '.join(failing)} calls miss their deadline "
                f"({self.misses} so far, {self.running} calls running)"
            )
        return "ok"


class IoContext:
    """One mount's way to S3: store, options, limiters, caches, journal, health."""

    def __init__(
        self,
        store: ObjectStore,
        options: MountOptions,
        nursery: trio.Nursery,
        journal: UploadJournal | None = None,
        shared_cache: SharedCache | None = None,
    ) -> None:
        self.store = store
        self.opts = options
        self.nursery = nursery
        self.journal = journal
        # Data (part GETs and uploads, copies) and metadata (HEAD, LIST, DELETE, ...) have
        # their own worker threads: a lookup never queues behind a stalled part.
        self.limiter = trio.CapacityLimiter(options.max_threads)
        self.meta_limiter = trio.CapacityLimiter(metadata_threads(options.max_threads))
        self.health = Health()
        # Read-ahead memory: one slot per part of --max-memory-target, shared by all readers.
        slots = max(2, options.max_memory_mib * 1024 * 1024 // self.read_part_size)
        self.read_slots = trio.Semaphore(slots)
        chunk = self.read_part_size
        read_slots = self.read_slots  # read by the metrics thread: one int, no lock needed
        metrics.READ_AHEAD_BYTES.set_function(lambda: (slots - read_slots.value) * chunk)
        self.max_window = max(1, min(16, slots // 2))
        # R-READ-RETAINED: an eighth of the memory target for what this mount just wrote
        self.retained = Retained(options.max_memory_mib * 1024 * 1024 // 8, options.part_size)
        self.cache: DataCache | None = None
        if options.cache_dir is not None:
            limit = (options.max_cache_size_mib or 10 * 1024) * 1024 * 1024
            self.cache = DataCache(options.cache_dir, limit)
        self.shared_cache = shared_cache
        # Does the server keep an emptied directory as an entry of its own (SeaweedFS
        # folders)? None until :meth:`server_keeps_folders` asked (a rename, an rmdir).
        self.keeps_folders: bool | None = None
        self._tiered = TieredCache(self.cache, shared_cache) if shared_cache else None
        # the store's trio-native twins of its calls, if it has any (S3Store.native)
        self._native: Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]] | None]
        self._native = getattr(store, "native", None) or (lambda fn: None)

    @property
    def part_size(self) -> int:
        """Multipart upload part size."""
        return self.opts.part_size

    @property
    def read_part_size(self) -> int:
        """Read-ahead request (read chunk) size."""
        return self.opts.read_chunk_size

    async def server_keeps_folders(self, emptied: str) -> bool | None:
        """Does this server keep a directory whose objects are all gone as an entry of its
        own? SeaweedFS does (a folder: listings show it, a HEAD of ``dir/`` finds it, until
        it is deleted); AWS S3 and S3 Express do not. ``emptied`` is the ``dir/`` key of such
        a directory that had no marker object; the first call HEADs it and the answer is
        remembered for the mount's life. None when that HEAD failed (asked again next time)."""
        if self.keeps_folders is None:
            try:
                await self.run(self.store.head, emptied)
            except StoreError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("could not ask whether %r is kept as a folder: %s", emptied, exc)
                    return None
                self.keeps_folders = False
            else:
                self.keeps_folders = True
        return self.keeps_folders

    def check_writable(self) -> None:
        if self.opts.read_only:
            raise FsError(errno.EROFS, "mounted with --read-only")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a worker thread, within its total deadline.

        Past the deadline (``--request-deadline``, four times that for data calls) the caller
        gets :class:`StoreUnavailable` (EIO) at once; the worker thread is abandoned and ends
        with its own timeouts (a GET body is shut down by the store's watchdog)."""
        data = getattr(fn, "__name__", "") in DATA_CALLS
        kind = "data" if data else "metadata"
        limiter = self.limiter if data else self.meta_limiter
        deadline = self.opts.data_deadline if data else self.opts.request_deadline
        native = self._native(fn)
        if native is not None:
            return await self._run_native(fn, native, args, kind, limiter, deadline)
        health = self.health

        def call() -> T:
            health.started()
            try:
                return fn(*args)
            finally:
                health.ended()

        with trio.move_on_after(deadline):
            try:
                result = await trio.to_thread.run_sync(
                    call, limiter=limiter, abandon_on_cancel=True
                )
            except StoreUnavailable:  # timed out or unreachable after botocore's retries
                health.missed(kind)
                raise
            except StoreError:
                health.answered(kind)  # S3 answered (with an error)
                raise
            health.answered(kind)
            return result
        health.missed(kind)
        name = getattr(fn, "__name__", "S3 call")
        raise StoreUnavailable(f"{name}: no answer from S3 within {deadline:g} s")

    def is_native(self, fn: Callable[..., Any]) -> bool:
        """Does store call ``fn`` have a twin :meth:`run` awaits on the trio thread?"""
        return self._native(fn) is not None

    async def _run_native(
        self,
        fn: Callable[..., T],
        native: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kind: str,
        limiter: trio.CapacityLimiter,
        deadline: float,
    ) -> T:
        """:meth:`run` of a call awaited on the trio thread: the same limiter, deadline and
        health accounting, without a worker thread."""
        health = self.health
        borrower = object()  # a token per call, as trio.to_thread takes one
        # move_on_after's scope, without its checks and relative deadline (9.7 -> 6.6 us
        # measured hot; one per DeleteObject of ``rm -rf``)
        with trio.CancelScope(deadline=trio.current_time() + deadline):
            try:  # a free token without the two scheduler rounds of ``async with limiter``
                limiter.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                await limiter.acquire_on_behalf_of(borrower)
            try:
                result = await native(*args)
            except StoreUnavailable:  # unreachable after the store's own retries
                health.missed(kind)
                raise
            except StoreError:
                health.answered(kind)  # S3 answered (with an error)
                raise
            finally:
                limiter.release_on_behalf_of(borrower)
            health.answered(kind)
            return result
        health.missed(kind)
        name = getattr(fn, "__name__", "S3 call")
        raise StoreUnavailable(f"{name}: no answer from S3 within {deadline:g} s")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`run`, with a store error raised as the :class:`FsError` of its errno."""
        try:
            return await self.run(fn, *args)
        except StoreError as exc:
            log.debug("store error: %s", exc)
            raise FsError(exc.errno, str(exc)) from None

    def cache_for(self, size: int) -> BlockCache | None:
        """The block cache for an object of ``size`` bytes: the shared one only for objects
        up to ``--cache-xz-max-object-size``."""
        if self._tiered is not None and size <= self._tiered.shared.max_object_size:
            return self._tiered
        return self.cache

    async def close_caches(self) -> None:
        """Close the disk cache and the shared cache (at unmount)."""
        if self.cache is not None:
            self.cache.close()
        if self.shared_cache is not None:
            await trio.to_thread.run_sync(self.shared_cache.close)  # bounded: request timeouts
