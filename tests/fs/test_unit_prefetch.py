"""The read path's lanes (prefetch.Chunk): a chunk fetched as several ranged GETs at once
shows readers only the bytes contiguous from its start, in order, whatever order the lanes
answer in; a short lane ends the chunk, a failed lane fails it."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from zonemount_fs.core import ROOT_INO, Filesystem
from zonemount_fs.errors import FsError, StoreUnavailable
from zonemount_fs.options import MountOptions
from zonemount_fs.prefetch import MAX_LANES, MIN_LANE, Chunk
from zonemount_fs.store.memory import MemoryStore

pytestmark = pytest.mark.unit
MiB = 1024 * 1024


def test_lanes_answering_out_of_order_are_shown_in_order() -> None:
    data = random.Random(1).randbytes(6 * MiB)

    async def main() -> None:
        chunk = Chunk(0, len(data), lanes=3)
        assert chunk.lanes == 3
        two, one = data[4 * MiB :], data[2 * MiB : 4 * MiB]
        chunk.add(two, lane=2, final=True)
        chunk.add(one[:MiB], lane=1)
        assert chunk.filled == 0 and not chunk.done, "nothing contiguous from the start yet"
        chunk.add(data[:MiB], lane=0)
        assert chunk.filled == MiB
        chunk.add(data[MiB : 2 * MiB], lane=0, final=True)
        assert chunk.filled == 3 * MiB and not chunk.done, "lane 1 is still running"
        chunk.add(one[MiB:], lane=1, final=True)
        assert chunk.done and chunk.filled == len(data)
        assert chunk.data() == data
        assert chunk.slice(MiB - 5, 5 * MiB + 7) == data[MiB - 5 : 5 * MiB + 7]

    trio.run(main)


def test_a_short_lane_ends_the_chunk_there() -> None:
    async def main() -> None:
        chunk = Chunk(0, 4 * MiB, lanes=2)
        chunk.add(b"y" * (2 * MiB), lane=1, final=True)
        chunk.add(b"x" * 100, lane=0, final=True)  # the object shrank under the GET
        assert chunk.done and chunk.filled == 100, "bytes after a gap are never shown"

    trio.run(main)


def test_lanes_are_at_least_min_lane_and_at_most_max_lanes() -> None:
    async def main() -> None:
        assert Chunk(0, MIN_LANE * 3 - 1, lanes=MAX_LANES).lanes == 2
        assert Chunk(0, MIN_LANE - 1, lanes=MAX_LANES).lanes == 1
        assert Chunk(0, 64 * MiB, lanes=MAX_LANES).lanes == MAX_LANES

    trio.run(main)


class OutOfOrderStore(MemoryStore):
    """The GET of an object's first bytes answers only after every later range has."""

    def __init__(self, later: int) -> None:
        super().__init__()
        self.later = later
        self.ranges: list[tuple[int, int]] = []
        self._done = threading.Semaphore(0)

    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        self.ranges.append((start, end))
        if start == 0:
            for _ in range(self.later):
                assert self._done.acquire(timeout=10), "the other lanes never ran"
            yield from super().open_range(key, start, end, etag)
            return
        yield from super().open_range(key, start, end, etag)
        self._done.release()


def opts(tmp: Path, **kw: Any) -> MountOptions:
    return MountOptions(bucket="b", mountpoint=tmp, part_size=8 * MiB, **kw)


async def read_all(fs: Filesystem, name: str) -> bytes:
    attr = await fs.lookup(ROOT_INO, name)
    fh = await fs.open(attr.ino, os.O_RDONLY)
    out, off = [], 0
    while piece := await fs.read(fh, off, 128 * 1024):
        out.append(piece)
        off += len(piece)
    await fs.release(fh)
    return b"".join(out)


def test_a_small_object_is_read_over_parallel_lanes(tmp_path: Path) -> None:
    """6 MiB, the size of the seeds' mp3s: three 2 MiB GETs at once, not one 6 MiB GET,
    and the first lane answering last still yields the object's exact bytes."""
    data = random.Random(2).randbytes(6 * MiB + 17)
    store = OutOfOrderStore(later=2)
    store.put_object("song.mp3", data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(tmp_path), nursery)
            with trio.fail_after(20):
                assert await read_all(fs, "song.mp3") == data
            nursery.cancel_scope.cancel()

    trio.run(main)
    lane = -(-len(data) // 3)
    assert sorted(store.ranges) == [(0, lane), (lane, 2 * lane), (2 * lane, len(data))]
    assert len(store.ranges) == 3, "one GET per lane, nothing fetched twice"


class FailingLaneStore(MemoryStore):
    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        if start > 0:
            raise StoreUnavailable("GetObject: connection reset")
        yield from super().open_range(key, start, end, etag)


def test_a_failed_lane_fails_the_read_with_its_error(tmp_path: Path) -> None:
    store = FailingLaneStore()
    store.put_object("f", random.Random(3).randbytes(6 * MiB))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(tmp_path), nursery)
            with trio.fail_after(20), pytest.raises(FsError) as info:
                await read_all(fs, "f")
            assert info.value.errno == errno.EIO
            assert "connection reset" in str(info.value)
            nursery.cancel_scope.cancel()

    trio.run(main)


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        self.ranges.append((start, end))
        yield from super().open_range(key, start, end, etag)


def test_sequential_reads_fetch_read_part_size_chunks(tmp_path: Path) -> None:
    """The read chunk is --read-part-size, not the upload part size: a 40 MiB object read
    from start to end with 16 MiB read parts (8 MiB upload parts) is fetched as lanes of the
    first 16 MiB chunk, then whole 16 MiB chunks, each byte once."""
    data = random.Random(4).randbytes(40 * MiB)
    store = RecordingStore()
    store.put_object("big", data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(tmp_path, read_part_size=16 * MiB), nursery)
            with trio.fail_after(20):
                assert await read_all(fs, "big") == data
            nursery.cancel_scope.cancel()

    trio.run(main)
    lane = 16 * MiB // MAX_LANES
    first = [(i * lane, (i + 1) * lane) for i in range(MAX_LANES)]
    assert sorted(store.ranges) == [*first, (16 * MiB, 32 * MiB), (32 * MiB, 40 * MiB)]


def _covered_once(ranges: list[tuple[int, int]], size: int) -> bool:
    pos = 0
    for start, end in sorted(ranges):
        if start != pos:
            return False
        pos = end
    return pos == size


def test_a_long_stream_fetches_every_byte_once(tmp_path: Path) -> None:
    """R-READ-SEQ: a 40-chunk object read from start to end with the window open (up to 16
    chunks ahead) is fetched one GET per chunk (the first in lanes), each byte once, and read
    back exact."""
    chunk = 4 * MiB
    data = random.Random(5).randbytes(40 * chunk + 123)
    store = RecordingStore()
    store.put_object("long", data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(tmp_path, read_part_size=chunk), nursery)
            with trio.fail_after(30):
                assert await read_all(fs, "long") == data
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _covered_once(store.ranges, len(data)), "a byte fetched twice, or never"
    assert len(store.ranges) == 41 + 1, "one GET per chunk, two lanes for the first"


def test_an_aligned_sequential_reader_opens_its_window(tmp_path: Path) -> None:
    """R-READ-SEQ: the window doubles each time the reader enters a new chunk, also when its
    reads end exactly on chunk boundaries (the kernel's read-ahead always does). Until
    2026-12-04 it stayed at one chunk ahead for such a reader: the check compared the new
    chunk with the one after the previous read's end, which is the same chunk."""
    chunk = 4 * MiB
    data = random.Random(8).randbytes(40 * chunk)
    store = RecordingStore()
    store.put_object("f", data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(tmp_path, read_part_size=chunk), nursery)
            attr = await fs.lookup(ROOT_INO, "f")
            fh = await fs.open(attr.ino, os.O_RDONLY)
            with trio.fail_after(30):
                for off in range(0, 4 * chunk, 128 * 1024):  # chunks 0-3: windows 1, 2, 4, 8
                    assert await fs.read(fh, off, 128 * 1024) == data[off : off + 128 * 1024]
                while max(end for _, end in store.ranges) < 10 * chunk:
                    await trio.sleep(0.01)  # the GETs started ahead reach the store
            await fs.release(fh)
            nursery.cancel_scope.cancel()

    trio.run(main)
