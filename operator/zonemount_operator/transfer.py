"""Bulk copy engine: many objects from a source to a destination with many parallel streams.

Sources and destinations are S3 prefixes or local directories (:mod:`.locations`), so
``zonemount cp``/``sync`` copy S3 -> S3, local -> S3 and S3 -> local with this one engine,
and the S3ExpressBucket import uses it too (progress lands in the CR status). Per object:

* S3 -> S3 on one endpoint: server-side ``CopyObject``; objects at or above
  ``multipart_threshold`` use multipart ``UploadPartCopy`` with parts copied in parallel;
* otherwise the bytes stream through: read (GetObject / a local file) -> write (PutObject / a
  temporary local file); objects of at least one part size go part by part (ranged GETs,
  ``pread``; multipart upload parts, ``pwrite``).

Memory (the thread path): local -> S3 uploads are sent from the file (:class:`FileRange`, read
in blocks to sign and to send) and S3 -> local downloads are written as they arrive
(``STREAM_CHUNK`` at a time), so neither holds an object or part; only S3 -> S3 streamed
copies (two endpoints) hold bytes, and those wait for ``buffer_bytes`` (a budget shared by all
workers) before reading. Small objects on the lean path (:mod:`.fasts3`) are held whole, one
per copy thread, each below ``FAST_STREAM_MAX`` bytes.

Resumability: a destination object is *up to date* when its size equals the source's and
either the ETags match or it is not older than the source (ETags differ legitimately:
multipart layouts, SSE-KMS, directory buckets, local files have none; local files written by
the engine carry the source's modification time; S3 times are whole seconds, so the source
time is compared truncated to its second). ``sync`` (``skip_existing``) skips
up-to-date objects, so a run interrupted at any point is resumed by running it again; the
destination listing is merged with the source listing in key order (memory does not grow with
the object count) where both list sorted, else held as a map. Half-copied objects never
exist: PutObject/CopyObject/CompleteMultipartUpload and local renames are atomic and a failed
multipart upload is aborted (a failed local write removed).

Retries: botocore's standard mode retries throttling and 5xx per request; on top of that
each object is retried ``retries`` times with full-jitter exponential backoff. Objects that
still fail are counted in ``Progress.objects_failed`` with the first error kept.

Concurrency rules: the listing runs in the caller's thread; object copies run in an object
pool (``concurrency`` threads); parts of large objects run in a separate part pool so an
object worker waiting on its parts can never starve them. ``Progress`` is updated under its
lock (bytes of large objects part by part, taken back if the object fails); ``on_progress``
is called from a reporter thread at most every ``progress_interval`` seconds and once at the
end, always with a snapshot (never the live object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import botocore.exceptions

from zonemount_operator.locations import (
    LocalLocation,
    Location,
    RawEntry,
    S3Location,
    SourceObject,
    source_changed,
)

if TYPE_CHECKING:
    from zonemount_operator.manifest import Manifest
from zonemount_operator.names import S3Url

__all__ = [
    "MAX_PARTS",
    "BulkCopier",
    "CopyError",
    "CopyOptions",
    "MiB",
    "Progress",
    "SourceObject",
    "copy",
    "copy_prefix",
    "s3_client",
    "up_to_date",
]

MiB = 1024 * 1024
MAX_PARTS = 10_000
FAST_STREAM_MAX = 1 * MiB  # streamed objects below this size take the lean path (fasts3)


@dataclass
class Progress:
    """Counters of one copy run (a snapshot when handed to a callback)."""

    objects_total: int = 0
    bytes_total: int = 0
    objects_copied: int = 0
    objects_skipped: int = 0
    objects_failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    objects_changed: int = 0  # the source changed while being copied (failed; re-run copies it)
    throttled: int = 0  # requests answered 503 SlowDown / 429 and retried
    listing_done: bool = False
    elapsed: float = 0.0
    first_error: str | None = None
    _started: float = field(default_factory=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_copied / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def objects_done(self) -> int:
        return self.objects_copied + self.objects_skipped + self.objects_failed

    def snapshot(self) -> Progress:
        with self._lock:
            copy = dataclasses.replace(self, _lock=threading.Lock())
        copy.elapsed = time.monotonic() - self._started
        return copy

    def listed(self, size: int) -> None:
        with self._lock:
            self.objects_total += 1
            self.bytes_total += size

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass
class CopyOptions:
    concurrency: int = 64
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    skip_existing: bool = True
    dry_run: bool = False
    shard: tuple[int, int] | None = None  # (i, N): copy only the keys of shard i of N
    fast: bool = True  # small objects on the lean path where eligible (fasts3)
    retries: int = 4
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    progress_interval: float = 0.5
    buffer_bytes: int = 128 * MiB  # S3 -> S3 streamed copies: bytes held at once, all workers


class CopyError(RuntimeError):
    """Some objects could not be copied after retries (the message names the first)."""


def up_to_date(src: SourceObject, dst: SourceObject | None) -> bool:
    """The resumability rule (see the module docstring)."""
    if dst is None or dst.size != src.size:
        return False
    # S3 keeps whole seconds: a file uploaded in the second it was written is not older.
    return (bool(src.etag) and dst.etag == src.etag) or dst.last_modified >= int(src.last_modified)


def _merged(
    source: Iterator[SourceObject], dest: Location, theirs: Iterator[SourceObject] | None
) -> Iterator[tuple[SourceObject, SourceObject | None]]:
    """Pair each source object with the destination object of the same relative name.

    One object: looked up. Both listings sorted: a merge in key order (constant memory).
    Otherwise the destination listing is held as a map (S3 Express directory buckets list
    unsorted).
    """
    if dest.single is not None or theirs is None:
        for obj in source:
            yield obj, dest.stat(obj.key)
        return
    if not dest.sorted_listing:
        existing = {o.key: o for o in theirs}
        for obj in source:
            yield obj, existing.get(obj.key)
        return
    current = next(theirs, None)
    for obj in source:
        while current is not None and current.key < obj.key:
            current = next(theirs, None)
        yield obj, current if current is not None and current.key == obj.key else None


def shard_of(key: str, shards: int) -> int:
    """The shard (0..shards-1) a relative name belongs to: stable across runs and machines."""
    return zlib.crc32(key.encode()) % shards


def _same_endpoint(a: Location, b: Location) -> bool:
    return isinstance(a, S3Location) and isinstance(b, S3Location) and a.endpoint == b.endpoint


class BulkCopier:
    """One copy run from a source location to a destination (see the module docstring)."""

    def __init__(
        self,
        source: Location,
        dest: Location,
        options: CopyOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_plan: Callable[[SourceObject], None] | None = None,
        stop: threading.Event | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.manifest = manifest
        self.options = options or CopyOptions()
        self.on_progress = on_progress
        self.on_plan = on_plan
        self.stop = stop or threading.Event()
        self.progress = Progress()
        self.fatal: str | None = None  # why the run stopped early (e.g. expired credentials)
        self.server_side = _same_endpoint(source, dest)
        self._parts = ThreadPoolExecutor(
            max_workers=max(4, self.options.concurrency), thread_name_prefix="zm-part"
        )
        self._fast = self._fast_wanted()  # both S3 sides have the lean path (fasts3)
        self._budget = _ByteBudget(max(self.options.buffer_bytes, 1), self.stop)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Progress:
        """Copy everything; returns the final snapshot (raises nothing for per-object errors)."""
        done = threading.Event()
        reporter = threading.Thread(
            target=self._report, args=(done,), daemon=True, name="zm-progress"
        )
        reporter.start()
        try:
            if self.manifest is not None and not self.options.dry_run:
                # published first: marks this shard as attempted (see _pairs)
                self.manifest.flush(self.progress_doc(self.progress.snapshot(), final=False))
            self._run()
        finally:
            done.set()
            reporter.join()
            self._parts.shutdown(wait=True, cancel_futures=True)
            for side in (self.source, self.dest):
                if isinstance(side, S3Location) and side.fast is not None:
                    side.fast.close()  # idle connections (a later run opens new ones)
        final = self.progress.snapshot()
        if self.fatal:  # why the run stopped early comes first
            final.first_error = self.fatal
        if self.manifest is not None and not self.options.dry_run:
            self.manifest.flush(self.progress_doc(final, final=True))
        if self.on_progress is not None:
            self.on_progress(final)
        return final

    def _listing(self, where: Location) -> Iterator[SourceObject]:
        pages = None
        if isinstance(where, S3Location) and where.fast is not None and self._fast:
            pages = self._fast_pages(where)
        objects = where.objects(pages)
        shard = self.options.shard
        if shard is None or where is self.dest:
            return objects
        index, count = shard
        return (o for o in objects if shard_of(o.key, count) == index)

    def _pairs(self) -> Iterator[tuple[SourceObject, SourceObject | bool | None]]:
        """(object, what the destination has: an entry, None, or True = recorded as copied)."""
        source = self._listing(self.source)
        manifest = self.manifest
        if manifest is not None:
            # A manifest decides without touching the destination. Misses are looked up in
            # the destination only when this shard was attempted before (a killed worker's
            # last copies may not be published yet); a first attempt copies them.
            check = self.options.skip_existing or manifest.resumed
            return (
                (o, True) if manifest.has(o) else (o, self.dest.stat(o.key) if check else None)
                for o in source
            )
        if self.options.skip_existing:
            theirs = None if self.source.single is not None else self._listing(self.dest)
            return _merged(source, self.dest, theirs)
        return ((obj, None) for obj in source)

    def _run(self) -> None:
        concurrency = self.options.concurrency
        # At most 4 x concurrency objects queued: listing millions of keys must not queue
        # millions of work items (the listing waits for free slots instead).
        slots = _Slots(concurrency * 4)
        work: queue.SimpleQueue[SourceObject | None] = queue.SimpleQueue()
        workers: list[threading.Thread] = []
        try:
            for obj, existing in self._pairs():
                if self.stop.is_set():
                    break
                self.progress.listed(obj.size)
                if self._needs_no_copy(obj, existing):
                    continue
                if not slots.take(self.stop):
                    break
                work.put(obj)
                if len(workers) < concurrency:  # as many threads as objects, up to the limit
                    worker = threading.Thread(
                        target=self._work, args=(work, slots), name="zm-copy", daemon=True
                    )
                    worker.start()
                    workers.append(worker)
            with self.progress._lock:
                self.progress.listing_done = True
        finally:  # what is queued is copied (or skipped once stopped), then the threads end
            for _ in workers:
                work.put(None)
            for worker in workers:
                worker.join()

    def _work(self, work: queue.SimpleQueue[SourceObject | None], slots: _Slots) -> None:
        """A copy thread: objects from ``work`` until None. Plain threads and a C-level queue,
        not an executor: its Future (a Condition and an RLock) per object cost more CPU than
        signing the object's request."""
        while (obj := work.get()) is not None:
            try:
                self._copy_with_retries(obj)
            except Exception as exc:  # outside the retry rules: still the object's failure
                self._failed(obj, f"{type(exc).__name__}: {exc}")
            finally:
                slots.give()

    def _needs_no_copy(self, obj: SourceObject, existing: SourceObject | bool | None) -> bool:
        """Account for an object that is not copied: recorded in the manifest (``existing``
        is True), up to date at the destination (recorded now), or only planned (dry run)."""
        opts = self.options
        if existing is True:  # recorded in the manifest
            self.progress.add(objects_skipped=1, bytes_skipped=obj.size)
            return True
        if existing is not None and existing is not False and up_to_date(obj, existing):
            self.progress.add(objects_skipped=1, bytes_skipped=obj.size)
            if self.manifest is not None and not opts.dry_run:
                self.manifest.record(obj, "present")
            return True
        if opts.dry_run:
            if self.on_plan is not None:
                self.on_plan(obj)
            return True
        return False

    def _report(self, done: threading.Event) -> None:
        last_publish = time.monotonic()
        while not done.wait(self.options.progress_interval):
            snap = self.progress.snapshot()
            if self.on_progress is not None:
                self.on_progress(snap)
            manifest = self.manifest
            if manifest is not None and time.monotonic() - last_publish >= manifest.flush_seconds:
                last_publish = time.monotonic()
                with contextlib.suppress(  # published at the next flush or the end (which raises)
                    botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError
                ):
                    manifest.flush(self.progress_doc(snap, final=False))

    def progress_doc(self, p: Progress, *, final: bool) -> dict[str, Any]:
        """The shard's ``progress.json`` (see :mod:`.manifest`)."""
        shard = self.options.shard or (0, 1)
        complete = (
            final
            and p.listing_done
            and not self.stop.is_set()
            and p.objects_failed == 0
            and p.objects_copied + p.objects_skipped == p.objects_total
        )
        return {
            "shard": shard[0],
            "shards": shard[1],
            "source": str(self.source),
            "destination": str(self.dest),
            "objectsListed": p.objects_total,
            "objectsCopied": p.objects_copied,
            "objectsSkipped": p.objects_skipped,
            "objectsFailed": p.objects_failed,
            "objectsChanged": p.objects_changed,
            "throttled": p.throttled,
            "bytesListed": p.bytes_total,
            "bytesCopied": p.bytes_copied,
            "elapsedSeconds": round(p.elapsed, 3),
            "listingDone": p.listing_done,
            "final": final,
            "complete": complete,
            "firstError": p.first_error,
            "updatedAt": time.time(),
        }

    # -- outcome bookkeeping (shared by both paths) -----------------------------------------
    def _succeeded(self, obj: SourceObject, counted: int = 0) -> None:
        if self.manifest is not None:
            self.manifest.record(obj, "copied")
        progress = self.progress
        with progress._lock:
            progress.objects_copied += 1
            progress.bytes_copied += obj.size - counted

    def _failed(self, obj: SourceObject, what: str, *, changed: bool = False) -> None:
        with self.progress._lock:
            self.progress.objects_failed += 1
            if changed:
                self.progress.objects_changed += 1
            if self.progress.first_error is None:
                self.progress.first_error = f"{self.source.describe(obj.key)}: {what}"

    def _retry_delay(self, obj: SourceObject, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None: the object failed (recorded)."""
        code = _code(exc)
        if code in THROTTLED:
            self.progress.add(throttled=1)
        if code in CREDENTIALS_GONE and self.fatal is None:
            self.fatal = (
                f"{self.source.describe(obj.key)}: {_describe(exc)}: the credentials expired "
                "or were revoked; the run stopped: re-run 'sync' with fresh credentials"
            )
            self.stop.set()
        if attempt > self.options.retries or _not_retryable(exc):
            what = (
                "changed while being copied (re-run sync to copy the new version)"
                if code in CHANGED
                else _describe(exc)
            )
            self._failed(obj, what, changed=code in CHANGED)
            return None
        cap = min(self.options.backoff_cap, self.options.backoff_base * 2**attempt)
        return random.uniform(0, cap)  # noqa: S311 - jitter, not crypto

    # -- one object on the thread path -------------------------------------------------------
    def _copy_with_retries(self, obj: SourceObject) -> None:
        attempt = 0
        while True:
            if self.stop.is_set():
                return
            counted = [0]  # bytes of this object already counted part by part
            try:
                self._copy_one(obj, counted)
            except (
                botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError,
                OSError,
                CopyError,
            ) as exc:
                self.progress.add(bytes_copied=-counted[0])
                attempt += 1
                delay = self._retry_delay(obj, exc, attempt)
                if delay is None:
                    return
                self.stop.wait(delay)
            else:
                self._succeeded(obj, counted[0])
                return

    def _copy_one(self, obj: SourceObject, counted: list[int]) -> None:
        # Streamed copies hold a part in memory per worker: go multipart from one part size.
        threshold = self.options.multipart_threshold if self.server_side else self.options.part_size
        if self._fast and self._fast_ok(obj):
            self._copy_small(obj)
        elif obj.size >= threshold:
            self._multipart(obj, counted)
        elif self.server_side:
            dest, source = cast(S3Location, self.dest), cast(S3Location, self.source)
            dest.copy(obj.key, source, obj.key, obj.etag)
        else:
            self._stream(obj, None, lambda data: self.dest.put(obj.key, data, obj))

    def _stream(self, obj: SourceObject, rng: tuple[int, int] | None, write: Any) -> Any:
        """Move the object (or the inclusive range ``rng``) from source to destination with
        ``write(data)``, holding as little as each pair of sides allows (module docstring)."""
        start, end = rng if rng is not None else (0, obj.size - 1)
        length = end - start + 1
        source, dest = self.source, self.dest
        if isinstance(source, LocalLocation) and isinstance(dest, S3Location):
            with source.open_range(obj.key, start, length, obj.size) as body:
                return write(body)
        if isinstance(source, S3Location) and isinstance(dest, LocalLocation):
            chunks: Iterator[bytes | memoryview]
            if self._fast and source.fast is not None:  # views of one buffer: written at once
                chunks = source.fast.chunks(source.bucket, source.key(obj.key), obj.etag, rng)
            elif rng is None:
                chunks = source.chunks(obj.key, etag=obj.etag)
            else:
                chunks = source.chunks(obj.key, start, end, etag=obj.etag)
            return write(_exactly(chunks, length, f"range {start}-{end}"))
        with self._budget.hold(length):
            if rng is None:
                data = self.source.read(obj.key, etag=obj.etag)
                _check_size(obj, data)
            else:
                data = self.source.read(obj.key, start, end, etag=obj.etag)
                if len(data) != length:
                    raise _changed(f"read {len(data)} bytes of range {start}-{end}")
            return write(data)

    def _multipart(self, obj: SourceObject, counted: list[int]) -> None:
        part_size = max(self.options.part_size, -(-obj.size // MAX_PARTS), 5 * MiB)
        ranges = [
            (start, min(start + part_size, obj.size) - 1) for start in range(0, obj.size, part_size)
        ]
        upload = self.dest.begin(obj.key, obj)
        try:
            futures = [
                self._parts.submit(self._part, obj, upload, n, rng, counted)
                for n, rng in enumerate(ranges, start=1)
            ]
            parts = [f.result() for f in futures]
            self.dest.complete(obj.key, upload, parts, obj)
        except BaseException:
            with contextlib.suppress(
                botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError
            ):  # on failure the bucket's abort-incomplete-uploads lifecycle rule is the backstop
                self.dest.abort(obj.key, upload)
            raise

    def _part(
        self,
        obj: SourceObject,
        upload: Any,
        number: int,
        rng: tuple[int, int],
        counted: list[int],
    ) -> Any:
        if self.stop.is_set():
            raise CopyError("stopped")
        if self.server_side:
            part = cast(S3Location, self.dest).copy_part(
                obj.key, upload, number, cast(S3Location, self.source), obj.key, rng, obj.etag
            )
        else:
            part = self._stream(
                obj, rng, lambda data: self.dest.write_part(obj.key, upload, number, rng[0], data)
            )
        size = rng[1] - rng[0] + 1
        with self.progress._lock:
            self.progress.bytes_copied += size
            counted[0] += size
        return part

    # -- small objects on the lean path (fasts3) ---------------------------------------------
    def _fast_wanted(self) -> bool:
        if not self.options.fast or self.options.dry_run:
            return False
        sides = [x for x in (self.source, self.dest) if isinstance(x, S3Location)]
        return bool(sides) and all(x.fast is not None for x in sides)

    def _fast_ok(self, obj: SourceObject) -> bool:
        """Server-side copies of any single-request size; streamed copies only when small
        (they are held whole: larger ones stream on botocore, part by part)."""
        if self.server_side:
            return obj.size < self.options.multipart_threshold
        return obj.size < min(self.options.part_size, FAST_STREAM_MAX)

    def _fast_pages(self, where: S3Location) -> Iterator[list[RawEntry]]:
        """ListObjectsV2 pages through fasts3, the next page requested before this one is used."""
        fast = where.fast
        assert fast is not None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zm-list") as lister:

            def request(token: str | None) -> Future[tuple[list[RawEntry], str | None]]:
                return lister.submit(fast.list_page, where.bucket, where.list_prefix, token)

            pending = request(None)
            while True:
                page, token = pending.result()
                if token:
                    pending = request(token)
                yield page
                if not token:
                    return

    def _copy_small(self, obj: SourceObject) -> None:
        """One object in one request each way (CopyObject, or GET/read then PUT/write)."""
        source, dest = self.source, self.dest
        if self.server_side:
            assert isinstance(source, S3Location) and isinstance(dest, S3Location)
            assert dest.fast is not None
            dest.fast.copy(
                source.bucket, source.key(obj.key), dest.bucket, dest.key(obj.key), obj.etag
            )
            return
        if isinstance(source, S3Location):
            assert source.fast is not None
            data = source.fast.get(source.bucket, source.key(obj.key), obj.etag)
        else:
            data = source.read(obj.key)
        _check_size(obj, data)
        if isinstance(dest, S3Location):
            assert dest.fast is not None
            dest.fast.put(dest.bucket, dest.key(obj.key), data)
        else:
            dest.put(obj.key, data, obj)


def _changed(what: str) -> Exception:
    return source_changed(what)


def _exactly(
    chunks: Iterator[bytes | memoryview], length: int, what: str
) -> Iterator[bytes | memoryview]:
    """``chunks``, checked to add up to ``length`` bytes (else the source changed)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > length:
            break
        yield chunk
    if total != length:
        raise _changed(f"read {total} bytes of {what}, expected {length}")


class _Slots:
    """At most ``count`` objects queued or in flight. Taken by the listing, given back by the
    copy threads through a C-level queue: ``threading.BoundedSemaphore`` is Python code around
    a Condition, and its release was 5% of a small object's CPU."""

    def __init__(self, count: int) -> None:
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(None)

    def take(self, stop: threading.Event) -> bool:
        """Wait for a slot; False (none taken) once ``stop`` is set."""
        while not stop.is_set():
            try:
                self._free.get(timeout=0.2)
            except queue.Empty:
                continue
            return True
        return False

    def give(self) -> None:
        self._free.put(None)


class _ByteBudget:
    """At most ``limit`` bytes held at once by all workers (one hold larger than the limit
    waits for everything else to be given back, then takes it all)."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._stop = stop
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self.limit)
        with self._cond:
            while self.used + size > self.limit:
                if self._stop.is_set():
                    raise CopyError("stopped")
                self._cond.wait(0.2)
            self.used += size
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= size
                self._cond.notify_all()


def _check_size(obj: SourceObject, data: bytes) -> None:
    if len(data) != obj.size:
        raise _changed(f"listed {obj.size} bytes, read {len(data)}")


def _code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


THROTTLED = frozenset({"SlowDown", "503", "Throttling", "ThrottlingException", "429"})
CHANGED = frozenset({"PreconditionFailed", "412", "SourceChanged"})
CREDENTIALS_GONE = frozenset({"ExpiredToken", "InvalidToken", "TokenRefreshRequired"})


NOT_RETRYABLE = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "NoSuchKey",
        "InvalidObjectState",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        *CHANGED,
        *CREDENTIALS_GONE,
    }
)


def _not_retryable(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in NOT_RETRYABLE
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return True
    return isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def copy(
    source: Location,
    dest: Location,
    options: CopyOptions | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_plan: Callable[[SourceObject], None] | None = None,
    stop: threading.Event | None = None,
    manifest: Manifest | None = None,
) -> Progress:
    """Run one :class:`BulkCopier`; the returned snapshot says what happened."""
    return BulkCopier(
        source,
        dest,
        options,
        on_progress=on_progress,
        on_plan=on_plan,
        stop=stop,
        manifest=manifest,
    ).run()


def copy_prefix(
    src_client: Any,
    src: S3Url,
    dst_client: Any,
    dst: S3Url,
    options: CopyOptions | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> Progress:
    """S3 prefix -> S3 prefix: each key keeps its suffix after ``src.prefix``."""
    return copy(
        S3Location(src_client, src.bucket, src.prefix),
        S3Location(dst_client, dst.bucket, dst.prefix),
        options,
        on_progress=on_progress,
        stop=stop,
    )


def s3_client(
    endpoint_url: str | None, region: str | None, concurrency: int = 64, session: Any = None
) -> Any:
    """A botocore S3 client sized for ``concurrency`` streams (path-style on custom endpoints).

    botocore directly (not boto3): ``zonemount cp`` starts faster without boto3/s3transfer.
    """
    import botocore.session
    from botocore.config import Config

    s3_opts: dict[str, Any] | None = None
    if endpoint_url:
        s3_opts = {"addressing_style": "path", "disable_s3_express_session_auth": True}
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max(10, concurrency * 2),
        s3=cast(Any, s3_opts),
        tcp_keepalive=True,
    )
    session = session or botocore.session.get_session()
    return session.create_client("s3", endpoint_url=endpoint_url, config=config)


_CREATE_LOCK = threading.Lock()


class SessionOnDemand:
    """The CLI's one botocore session, made on first use (thread safe).

    Importing ``botocore.session`` and building its credential chain is ~0.2-0.4 s of CPU; a
    copy on a custom endpoint with credentials in the environment
    (:func:`zonemount_contract.sigv4.env_credentials`) and every request on the lean path
    never needs it. ``region()`` answers as ``session.get_config_variable("region")`` would:
    ``AWS_DEFAULT_REGION`` comes first in botocore's chain, so only without it is the session
    (and its config file) asked."""

    def __init__(self, session: Any = None) -> None:
        self._session = session
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._session is None:
                import botocore.session

                self._session = botocore.session.get_session()
            return self._session

    @property
    def made(self) -> bool:
        return self._session is not None

    def region(self) -> str | None:
        if self._session is None and os.environ.get("AWS_DEFAULT_REGION"):
            return os.environ["AWS_DEFAULT_REGION"]
        return cast("str | None", self.get().get_config_variable("region"))


class _LazyMeta:
    def __init__(self, owner: LazyS3Client) -> None:
        self._owner = owner

    @property
    def endpoint_url(self) -> str:
        return self._owner.endpoint_url or str(self._owner.client().meta.endpoint_url)

    @property
    def region_name(self) -> str:
        return self._owner.region or str(self._owner.client().meta.region_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.client().meta, name)


class LazyS3Client:
    """:func:`s3_client`, created on first use (thread safe). Creating a botocore client costs
    ~0.1 s of CPU (service model, endpoint rules); a copy whose requests all take the lean
    path never needs it. ``meta.endpoint_url``/``meta.region_name`` are answered without it
    when the endpoint and region are known. ``session``: a botocore session or a
    :class:`SessionOnDemand`."""

    def __init__(
        self, endpoint_url: str | None, region: str | None, concurrency: int, session: Any
    ) -> None:
        sessions = session if isinstance(session, SessionOnDemand) else SessionOnDemand(session)
        self.endpoint_url = endpoint_url
        self.region = region or sessions.region()
        self._args = (endpoint_url, region, concurrency)
        self._sessions = sessions
        self._client: Any = None
        self.meta = _LazyMeta(self)

    def client(self) -> Any:
        with _CREATE_LOCK:  # one at a time: a botocore session is not safe to share for this
            if self._client is None:
                self._client = s3_client(*self._args, session=self._sessions.get())
            return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client(), name)


def lazy_s3_client(
    endpoint_url: str | None, region: str | None, concurrency: int, session: Any
) -> Any:
    """A :class:`LazyS3Client` (the CLI's clients: most runs on custom endpoints need none)."""
    return LazyS3Client(endpoint_url, region, concurrency, session)


def attach_fast(location: Location, credentials: Any, concurrency: int = 64) -> None:
    """Give an S3 location the lean path (fasts3) when its bucket is eligible, keeping up to
    ``concurrency`` connections (one per copy thread: fewer would reconnect for every extra
    request)."""
    from zonemount_operator import fasts3

    if not isinstance(location, S3Location) or credentials is None:
        return
    endpoint = location.client.meta.endpoint_url
    custom = None if endpoint.endswith(".amazonaws.com") else endpoint
    region = location.client.meta.region_name
    if custom is not None and fasts3.eligible(location.bucket, custom, region):
        location.fast = fasts3.FastS3(credentials, region, custom, connections=concurrency)
