"""Read path: sequential-read detection and a growing window of parallel ranged GETs.

A :class:`Reader` serves one open file. The object is split into aligned chunks of
``chunk_size`` bytes (``--read-part-size``). When reads look sequential, the reader keeps a
window of chunks ahead of the application in flight, each a ranged GET streamed by a worker
thread (kept as the pieces received, see :class:`Chunk`); the window doubles on every
chunk the application finishes, up to ``max_window`` chunks. Readers wait only for the bytes
they need (a chunk is
usable while it downloads), which keeps time to first byte at one request's latency.
Random reads fetch just the requested range and shrink the window back to one chunk.
With ``--cache``, complete chunks are kept in the local disk cache (:mod:`.cache`) and later
reads of them - sequential or random - are served from it; with ``--cache-xz`` also in the shared
cache bucket (:mod:`.shared_cache`).

Memory: every prefetched chunk takes a slot from a mount-wide :class:`trio.Semaphore`
(``--max-memory-target / chunk_size`` slots). Chunks the reader needs right now are always
fetched; chunks ahead are only fetched if a slot is free (no waiting, no deadlock). Chunks
behind the reader are dropped, releasing their slot.

Every store call goes through the mount's :class:`~.context.IoContext` (the data limiter and
deadline); prefetches run in its nursery.

Concurrency: trio code between ``await`` points is atomic. The only cross-thread state is a
chunk's pieces, ``filled`` counter and waiter list, guarded by the chunk's lock; the filling thread
wakes waiters with ``TrioToken.run_sync_soon`` (it does not wait for the loop).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Awaitable

import trio

from .context import IoContext
from .errors import FsError, StoreError
from .shared_cache import BlockCache
from .store.base import ObjectStore

SEQUENTIAL_RUN = 1024 * 1024  # contiguous bytes before a reader counts as sequential
#: The chunk that opens a sequential stream is fetched as up to MAX_LANES ranged GETs at once,
#: each at least MIN_LANE bytes: an S3 connection is limited to ~90 MB/s, so a whole small
#: object (or the first part of a big one) arrives several times sooner than over one GET.
MAX_LANES = 4
MIN_LANE = 2 * 1024 * 1024


class Chunk:
    """One aligned range of an object, as the pieces its GETs delivered them.

    Pieces are kept as the ``bytes`` objects the HTTP client returned (no preallocated buffer
    to zero, no copy into it); a read that matches a piece exactly gets that object back
    without any copy, others are joined from slices (one copy).

    A chunk may be fetched as several *lanes*: equal sub-ranges, each its own ranged GET
    running at once (:data:`MAX_LANES`, at least :data:`MIN_LANE` bytes each). Only bytes
    contiguous from the chunk's start count as ``filled`` and are visible to readers: lane
    ``i`` (the *head*) appends to the chunk as it receives; later lanes hold their pieces
    until every lane before them has ended. A lane that ends short (the object shrank) ends
    the chunk there; a lane that fails fails the chunk (``error``) and stops the others."""

    __slots__ = (
        "_bounds",
        "_ended",
        "_got",
        "_head",
        "_held",
        "_lock",
        "_offsets",
        "_pieces",
        "_token",
        "_waiters",
        "cancelled",
        "done",
        "end",
        "error",
        "filled",
        "has_slot",
        "start",
    )

    def __init__(self, start: int, end: int, lanes: int = 1) -> None:
        self.start = start
        self.end = end
        self._pieces: list[bytes] = []
        self._offsets: list[int] = []  # start of each piece, relative to ``start``
        self.filled = 0
        self.done = False
        self.cancelled = False
        self.error: StoreError | None = None
        self.has_slot = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, trio.Event]] = []
        self._token = trio.lowlevel.current_trio_token()
        length = end - start
        lanes = max(1, min(lanes, length // MIN_LANE))
        step = -(-length // lanes)
        #: lane i covers [bounds[i], bounds[i + 1]) relative to ``start``
        self._bounds = [min(i * step, length) for i in range(lanes)] + [length]
        self._got = [0] * lanes  # bytes each lane received
        self._held: list[list[bytes]] = [[] for _ in range(lanes)]  # lanes behind the head
        self._ended = [False] * lanes
        self._head = 0

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def lanes(self) -> int:
        return len(self._got)

    # -- worker thread side ------------------------------------------------------------
    def fill(self, store: ObjectStore, key: str, etag: str | None, lane: int = 0) -> None:
        """Fetch lane ``lane`` (the whole chunk when it has one lane)."""
        lo, hi = self._bounds[lane], self._bounds[lane + 1]
        failed = False
        try:
            for received in store.open_range(key, self.start + lo, self.start + hi, etag):
                if self.cancelled:
                    break
                room = hi - lo - self._got[lane]
                self.add(received if len(received) <= room else received[:room], lane=lane)
        except StoreError as exc:
            failed = True
            self.error = self.error or exc
            self.cancelled = self.lanes > 1  # the other lanes stop: the chunk failed
            raise  # the caller's run() learns of it too (mount health)
        finally:
            self.end_lane(lane, failed=failed)

    def add(self, piece: bytes, *, final: bool = False, lane: int = 0) -> None:
        with self._lock:
            self._got[lane] += len(piece)
            if lane == self._head:
                self._append(piece)
            else:
                self._held[lane].append(piece)
        if final:
            self.end_lane(lane)
        else:
            self._advance(final=False)

    def _append(self, piece: bytes) -> None:
        self._offsets.append(self.filled)
        self._pieces.append(piece)
        self.filled += len(piece)

    def end_lane(self, lane: int, *, failed: bool = False) -> None:
        """Lane ``lane`` ended (all its bytes arrived, it stopped, or it failed)."""
        with self._lock:
            self._ended[lane] = True
            final = failed
            while not final and self._ended[self._head]:
                head = self._head
                if self.filled < self._bounds[head + 1] or head + 1 == self.lanes:
                    final = True  # the last lane ended, or a lane ended short: no more bytes
                    break
                self._head = head + 1
                for piece in self._held[head + 1]:
                    self._append(piece)
                self._held[head + 1] = []
        self._advance(final=final)

    def add_whole(self, data: bytes) -> None:
        """The chunk's bytes from a cache, before any lane started: one lane, ended."""
        with self._lock:
            self._bounds = [0, self.length]
            self._got, self._held, self._ended = [0], [[]], [False]
        self.add(data, final=True)

    def data(self) -> bytes:
        """The whole chunk as one bytes object (for the disk cache)."""
        with self._lock:
            pieces = list(self._pieces)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _advance(self, *, final: bool) -> None:
        with self._lock:
            filled = self.filled
            if final:
                self.done = True
            ready = [ev for upto, ev in self._waiters if final or upto <= filled]
            self._waiters = [(u, ev) for u, ev in self._waiters if not (final or u <= filled)]
        for ev in ready:
            try:
                # Schedule the wake-up without waiting for the loop to run it: the download
                # thread goes straight back to the socket.
                self._token.run_sync_soon(ev.set)
            except trio.RunFinishedError:
                return

    # -- trio side ---------------------------------------------------------------------
    async def wait(self, upto: int) -> None:
        """Wait until ``upto`` bytes (relative to ``start``) have arrived or the fill ended."""
        with self._lock:
            if self.filled >= upto or self.done:
                return
            event = trio.Event()
            self._waiters.append((upto, event))
        await event.wait()

    def slice(self, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` relative to ``start``; they must have arrived."""
        with self._lock:
            offsets, pieces = self._offsets, self._pieces
            i = bisect.bisect_right(offsets, lo) - 1
            first_off = offsets[i]
            piece = pieces[i]
            if lo == first_off and hi == first_off + len(piece):
                return piece  # zero copy
            if hi <= first_off + len(piece):
                return bytes(memoryview(piece)[lo - first_off : hi - first_off])
            parts: list[memoryview] = []
            pos = lo
            while pos < hi:
                off, piece = offsets[i], pieces[i]
                parts.append(memoryview(piece)[pos - off : min(hi, off + len(piece)) - off])
                pos = off + len(piece)
                i += 1
        return b"".join(parts)


class Reader:
    """The read path of one open file (``key`` at ``etag``, ``size`` bytes): chunks of the
    mount's read part size, prefetched within the mount's read-ahead memory (``ctx.read_slots``,
    at most ``ctx.max_window`` chunks ahead), kept in ``cache`` when given."""

    def __init__(
        self,
        ctx: IoContext,
        key: str,
        size: int,
        etag: str | None,
        cache: BlockCache | None = None,
    ) -> None:
        self._cache = cache if etag else None
        self.store = ctx.store
        self.key = key
        self.size = size
        self.etag = etag
        self.chunk_size = ctx.read_part_size
        self._nursery = ctx.nursery
        self._run = ctx.run
        self._slots = ctx.read_slots
        self._max_window = ctx.max_window
        self._chunks: dict[int, Chunk] = {}
        self._window = 1
        self._last_end = 0
        self._run_bytes = 0
        self._closed = False

    def _classify(self, offset: int, end: int) -> bool:
        """Is this read part of a sequential stream? Updates the run-length bookkeeping.

        A read near the previous one's end (the kernel reorders concurrent read-ahead
        requests, so within one chunk) extends the current run; anything else starts a new
        one. Chunked prefetch starts only once a run reaches SEQUENTIAL_RUN bytes, or at
        offset 0 of a fresh handle (whole-file readers): a random reader whose two halves
        of one 256 KiB pread arrive as consecutive requests must not trigger 8 MiB GETs."""
        near = abs(offset - self._last_end) <= self.chunk_size
        if offset == 0 and self._last_end == 0 and self._run_bytes == 0:
            self._run_bytes = end
            return True
        self._run_bytes = self._run_bytes + (end - offset) if near else end - offset
        return near and (self._run_bytes >= SEQUENTIAL_RUN or bool(self._chunks))

    def _start_chunk(self, index: int, *, required: bool) -> Chunk | None:
        chunk = self._chunks.get(index)
        if chunk is not None:
            return chunk
        start = index * self.chunk_size
        if start >= self.size:
            return None
        has_slot = True
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            if not required:
                return None
            has_slot = False
        # The chunk the reader needs now while the window is still opening gets lanes.
        lanes = MAX_LANES if required and self._window == 1 else 1
        chunk = Chunk(start, min(start + self.chunk_size, self.size), lanes)
        chunk.has_slot = has_slot
        self._chunks[index] = chunk
        self._nursery.start_soon(self._fill, chunk, index)
        return chunk

    def _from_cache(self, chunk: Chunk, index: int) -> bool:
        """Worker thread: serve the chunk from the block cache, if it has it."""
        assert self._cache is not None and self.etag is not None
        data = self._cache.get(self.key, self.etag, index)
        if data is None or len(data) != chunk.length:
            return False
        chunk.add_whole(data)
        return True

    def _to_cache(self, chunk: Chunk, index: int) -> None:
        """Worker thread: keep a chunk that arrived whole (even if its reader closed since)."""
        assert self._cache is not None and self.etag is not None
        self._cache.put(self.key, self.etag, index, chunk.data())

    async def _fill(self, chunk: Chunk, index: int) -> None:
        try:
            if self._cache is not None and await self._run(self._from_cache, chunk, index):
                return
            if chunk.lanes == 1:
                await self._run(chunk.fill, self.store, self.key, self.etag)
            else:
                async with trio.open_nursery() as lanes:
                    for lane in range(chunk.lanes):
                        lanes.start_soon(self._fill_lane, chunk, lane)
            if self._cache is not None and chunk.error is None and chunk.filled == chunk.length:
                await self._run(self._to_cache, chunk, index)
        except StoreError as exc:
            self._failed(chunk, exc)

    async def _fill_lane(self, chunk: Chunk, lane: int) -> None:
        try:
            await self._run(chunk.fill, self.store, self.key, self.etag, lane)
        except StoreError as exc:
            self._failed(chunk, exc)

    @staticmethod
    def _failed(chunk: Chunk, exc: StoreError) -> None:
        # The call failed or its total deadline passed (its thread is abandoned): readers get
        # the error now; whatever an abandoned thread still receives is dropped.
        chunk.cancelled = True
        chunk.error = chunk.error or exc
        chunk._advance(final=True)

    def _drop(self, index: int) -> None:
        chunk = self._chunks.pop(index)
        chunk.cancelled = True
        if chunk.has_slot:
            chunk.has_slot = False
            self._slots.release()

    async def read(self, offset: int, length: int) -> bytes:
        if self._closed:
            raise FsError(9, "read on a closed file")
        if offset >= self.size or length <= 0:
            return b""
        end = min(offset + length, self.size)
        if self._classify(offset, end):
            return await self._read_ahead(offset, end)
        return await self._read_random(offset, end)

    async def _read_random(self, offset: int, end: int) -> bytes:
        """A read that is not part of a sequential stream: from chunks already fetched, else
        from the disk cache (a read within one chunk), else one ranged GET of just these
        bytes; the window shrinks back to one chunk."""
        self._window = 1
        self._last_end = end
        cached = self._from_chunks(offset, end)
        if cached is not None:
            return await cached
        index = offset // self.chunk_size
        if self._cache is not None and self.etag and index == (end - 1) // self.chunk_size:
            block = await self._run(self._cache.get, self.key, self.etag, index)
            if block is not None:
                base = index * self.chunk_size
                return bytes(memoryview(block)[offset - base : end - base])
        try:
            data: bytes = await self._run(self.store.get_range, self.key, offset, end, self.etag)
        except StoreError as exc:
            raise FsError(exc.errno, str(exc)) from None
        return data

    async def _read_ahead(self, offset: int, end: int) -> bytes:
        """A sequential read: fetch the chunks it needs, keep the window ahead of it in
        flight (grown on entering a new chunk), drop the chunks behind it."""
        first, last = offset // self.chunk_size, (end - 1) // self.chunk_size
        for index in range(first, last + 1):
            self._start_chunk(index, required=True)
        if offset == 0 or first != (self._last_end - 1) // self.chunk_size:
            # The application entered a new chunk (the previous read's last byte was in
            # another one): grow the window. Until 2026-12-04 this compared with the chunk
            # of the byte *after* the previous read, which is the new chunk itself when reads
            # end on a chunk boundary (the kernel's aligned read-ahead always does): the
            # window grew only when the kernel's concurrent requests arrived out of order.
            self._window = min(self._window * 2, self._max_window) if offset else 1
        for index in range(last + 1, last + 1 + self._window):
            if self._start_chunk(index, required=False) is None:
                break
        for index in [i for i in self._chunks if i < first - 1]:
            self._drop(index)
        self._last_end = end
        pending = self._from_chunks(offset, end)
        assert pending is not None
        return await pending

    def _from_chunks(self, offset: int, end: int) -> Awaitable[bytes] | None:
        first, last = offset // self.chunk_size, (end - 1) // self.chunk_size
        chunks = [self._chunks.get(i) for i in range(first, last + 1)]
        if any(c is None for c in chunks):
            return None
        return self._gather([c for c in chunks if c is not None], offset, end)

    async def _gather(self, chunks: list[Chunk], offset: int, end: int) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            lo = max(offset, chunk.start) - chunk.start
            hi = min(end, chunk.end) - chunk.start
            await chunk.wait(hi)
            if chunk.filled < hi:
                if chunk.error is not None:
                    raise FsError(chunk.error.errno, str(chunk.error))
                if chunk.cancelled:
                    raise FsError(5, "read raced with close")
                # the object is shorter than advertised (changed under us): short read
                if chunk.filled > lo:
                    out.append(chunk.slice(lo, chunk.filled))
                break
            out.append(chunk.slice(lo, hi))
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        self._closed = True
        for index in list(self._chunks):
            self._drop(index)
