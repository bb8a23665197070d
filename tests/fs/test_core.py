"""The filesystem core driven directly (no FUSE) over the in-memory and failing stores."""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from zonemount_fs.core import ROOT_INO, Filesystem, Kind
from zonemount_fs.errors import (
    AccessDenied,
    FsError,
    NotSupported,
    ObjectNotFound,
    StoreUnavailable,
)
from zonemount_fs.options import MountOptions
from zonemount_fs.store.base import ListPage
from zonemount_fs.store.faults import FaultyStore, Hold
from zonemount_fs.store.memory import MemoryStore

pytestmark = pytest.mark.unit
MiB = 1024 * 1024
T = TypeVar("T")


def opts(**kw: Any) -> MountOptions:
    base: dict[str, Any] = dict(
        bucket="b",
        mountpoint=Path("/mnt"),
        allow_delete=True,
        allow_overwrite=True,
        part_size=5 * MiB,
        metadata_ttl=0.0,
        negative_metadata_ttl=0.0,
    )
    base.update(kw)
    return MountOptions(**base)


def run(store: Any, fn: Callable[[Filesystem], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, opts(**kw), nursery)
            await fn(fs)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def write_file(fs: Filesystem, parent: int, name: str, data: bytes) -> int:
    fh, attr = await fs.create(parent, name, 0o644, os.O_WRONLY, 0, 0)
    for off in range(0, len(data), 128 * 1024):
        await fs.write(fh, off, data[off : off + 128 * 1024])
    await fs.flush(fh)
    await fs.release(fh)
    return attr.ino


async def read_file(fs: Filesystem, ino: int) -> bytes:
    fh = await fs.open(ino, os.O_RDONLY)
    out = []
    off = 0
    while chunk := await fs.read(fh, off, 128 * 1024):
        out.append(chunk)
        off += len(chunk)
    await fs.release(fh)
    return b"".join(out)


async def errno_of(aw: Awaitable[Any]) -> int:
    try:
        await aw
    except FsError as exc:
        return exc.errno
    return 0


def test_write_then_read_multipart() -> None:
    store = MemoryStore()
    data = random.Random(0).randbytes(12 * MiB + 7)

    async def body(fs: Filesystem) -> None:
        ino = await write_file(fs, ROOT_INO, "f.bin", data)
        assert store.get_object("f.bin") == data
        assert store.calls.get("upload_part", 0) == 3
        assert await read_file(fs, ino) == data

    run(store, body)


def test_rename_dir_failure_mid_way_loses_nothing() -> None:
    inner = MemoryStore()
    for i in range(10):
        inner.put_object(f"src/{i}.txt", b"%d" % i)
    store = FaultyStore(inner)
    store.fail("copy", StoreUnavailable("injected"), after=4, times=1)

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        assert src.ino
        assert await errno_of(fs.rename(ROOT_INO, "src", ROOT_INO, "dst")) == errno.EIO
        # Every source object is still there: deletes only start after all copies succeeded.
        assert [k for k in list(inner.keys()) if k.startswith("src/")] == [
            f"src/{i}.txt" for i in range(10)
        ]
        store.clear()
        await fs.rename(ROOT_INO, "src", ROOT_INO, "dst")
        assert inner.keys() == sorted(f"dst/{i}.txt" for i in range(10))

    run(store, body)


@pytest.mark.parametrize("rename_object", [True, False], ids=["RenameObject", "copy"])
def test_rename_dir_on_a_directory_bucket_failing_mid_way_is_moved_back(
    rename_object: bool,
) -> None:
    """R-RENAME-DIR on a directory bucket: a directory rename whose fifth RenameObject (or,
    where the endpoint has none, whose fifth copy) fails leaves the whole tree under its old
    name - the objects renamed before it are renamed back, no copied source was deleted.
    Before, the four moved objects stayed under the new name (with copies: their sources
    were deleted one by one), the tree split between two names."""
    bucket = "data--usw2-az1--x-s3"
    inner = MemoryStore(bucket, directory_bucket=True)
    for i in range(10):
        inner.put_object(f"src/{i}.txt", b"%d" % i)
    store = FaultyStore(inner)
    if rename_object:
        store.fail("rename", StoreUnavailable("injected"), after=4, times=1)
    else:
        store.fail("rename", NotSupported("no RenameObject here", code="Ignored"))
        store.fail("copy", StoreUnavailable("injected"), after=4, times=1)

    async def body(fs: Filesystem) -> None:
        await fs.lookup(ROOT_INO, "src")
        assert await errno_of(fs.rename(ROOT_INO, "src", ROOT_INO, "dst")) == errno.EIO
        assert inner.keys() == sorted(f"src/{i}.txt" for i in range(10))
        await fs.rename(ROOT_INO, "src", ROOT_INO, "dst")  # the rules have run out
        assert inner.keys() == sorted(f"dst/{i}.txt" for i in range(10))
        assert inner.get_object("dst/7.txt") == b"7"

    run(store, body, bucket=bucket)


def test_rename_file_copy_fails_source_kept() -> None:
    inner, store = _faulty({"a": b"A"})
    store.fail("copy", StoreUnavailable("injected"))

    async def body(fs: Filesystem) -> None:
        await fs.lookup(ROOT_INO, "a")
        assert await errno_of(fs.rename(ROOT_INO, "a", ROOT_INO, "b")) == errno.EIO
        assert inner.keys() == ["a"]

    run(store, body)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ObjectNotFound("x", code="NoSuchKey"), errno.ENOENT),
        (AccessDenied("x", code="AccessDenied"), errno.EACCES),
        (StoreUnavailable("x"), errno.EIO),
    ],
)
def test_error_mapping(error: Exception, expected: int) -> None:
    _, store = _faulty({"f": b"data"})

    async def body(fs: Filesystem) -> None:
        attr = await fs.lookup(ROOT_INO, "f")
        store.fail("get_range", error)  # type: ignore[arg-type]
        store.fail("open_range", error)  # type: ignore[arg-type]
        fh = await fs.open(attr.ino, os.O_RDONLY)
        assert await errno_of(fs.read(fh, 0, 4)) == expected
        await fs.release(fh)
        store.fail("head", error)  # type: ignore[arg-type]
        store.fail("list_page", error)  # type: ignore[arg-type]
        got = await errno_of(fs.lookup(ROOT_INO, "g"))
        assert got == (expected if expected != errno.ENOENT else errno.ENOENT)

    run(store, body)


def test_failed_upload_is_aborted_and_invisible() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner)
    store.fail("upload_part", StoreUnavailable("injected"), after=1)

    async def body(fs: Filesystem) -> None:
        fh, _ = await fs.create(ROOT_INO, "big", 0o644, os.O_WRONLY, 0, 0)
        block = b"x" * MiB
        code = 0
        for i in range(20):
            code = await errno_of(fs.write(fh, i * MiB, block))
            if code:
                break
        if not code:
            code = await errno_of(fs.flush(fh))
        assert code == errno.EIO
        await fs.release(fh)
        assert inner.keys() == []
        assert inner.pending_uploads() == 0

    run(store, body)


def test_unordered_listing_directory_bucket() -> None:
    class Shuffled(MemoryStore):
        def list_page(
            self, prefix: str, delimiter: str | None, token: str | None, max_keys: int = 1000
        ) -> ListPage:
            page = super().list_page(prefix, delimiter, token, max_keys=7)
            objs, prefs = list(page.objects), list(page.prefixes)
            random.Random(len(objs)).shuffle(objs)
            random.Random(len(prefs)).shuffle(prefs)
            return ListPage(objs, prefs, page.next_token)

    store = Shuffled("data--usw2-az1--x-s3", directory_bucket=True)
    names = {f"n{i:02d}" for i in range(40)}
    for name in names:
        store.put_object(f"d/{name}", b"1")
        store.put_object(f"d/{name}x/inner", b"1")
    store.put_object("d/n05/inner", b"shadow")  # n05 is both a file and a directory

    async def body(fs: Filesystem) -> None:
        d = await fs.lookup(ROOT_INO, "d")
        fh = await fs.opendir(d.ino)
        entries = list(await fs.readdir(fh, 0))
        got = [n for n, _ in entries]
        assert len(got) == len(set(got)) == 80
        assert set(got) == names | {n + "x" for n in names}
        n05 = dict(entries)["n05"]
        assert n05.mode & 0o170000 == 0o040000  # the directory shadows the file
        tail = await fs.readdir(fh, 30)
        assert [n for n, _ in tail] == got[30:]

    run(store, body)


def test_incremental_upload_appends() -> None:
    store = MemoryStore("logs--usw2-az1--x-s3", directory_bucket=True)
    store.put_object("app.log", b"line1\n")

    async def body(fs: Filesystem) -> None:
        attr = await fs.lookup(ROOT_INO, "app.log")
        fh = await fs.open(attr.ino, os.O_WRONLY | os.O_APPEND)
        assert await errno_of(fs.write(fh, 0, b"bad")) == errno.EINVAL
        await fs.write(fh, 6, b"line2\n")
        await fs.flush(fh)
        await fs.release(fh)
        assert store.get_object("app.log") == b"line1\nline2\n"
        fh, _ = await fs.create(ROOT_INO, "new.log", 0o644, os.O_WRONLY, 0, 0)
        await fs.write(fh, 0, b"a")
        await fs.flush(fh)
        await fs.release(fh)
        assert store.get_object("new.log") == b"a"

    run(store, body, bucket="logs--usw2-az1--x-s3", incremental_upload=True)


def test_racing_append_opens_get_one_writer() -> None:
    """Two opens for appending that race (both revalidate the size in S3 at the same time)
    must not both become the file's writer - the second used to replace the first's
    writer, leaving two uploads appending at the same offset. The loser is refused like
    any open of a file being written (EPERM)."""
    store = MemoryStore("logs--usw2-az1--x-s3", directory_bucket=True)
    store.put_object("app.log", b"line1\n")

    async def body(fs: Filesystem) -> None:
        attr = await fs.lookup(ROOT_INO, "app.log")
        results: list[int] = []

        async def opener() -> None:
            try:
                results.append(await fs.open(attr.ino, os.O_WRONLY | os.O_APPEND))
            except FsError as exc:
                results.append(-exc.errno)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            nursery.start_soon(opener)
        handles = [r for r in results if r > 0]
        assert [r for r in results if r < 0] == [-errno.EPERM]
        assert len(handles) == 1
        assert fs.files[handles[0]].writer is fs.inode(attr.ino).writer
        await fs.write(handles[0], 6, b"line2\n")
        await fs.flush(handles[0])
        await fs.release(handles[0])
        assert store.get_object("app.log") == b"line1\nline2\n"

    run(store, body, bucket="logs--usw2-az1--x-s3", incremental_upload=True)


async def _create_in(fs: Filesystem, src: int, renamed: trio.Event) -> None:
    fh, _ = await fs.create(src, "new.txt", 0o644, os.O_WRONLY, 0, 0)
    await renamed.wait()  # written and closed after the rename ended
    await fs.write(fh, 0, b"n")
    await fs.flush(fh)
    await fs.release(fh)


async def _overwrite_in(fs: Filesystem, src: int, renamed: trio.Event) -> None:
    b = await fs.lookup(src, "b.txt")
    fh = await fs.open(b.ino, os.O_WRONLY | os.O_TRUNC)
    await renamed.wait()
    await fs.write(fh, 0, b"B2")
    await fs.flush(fh)
    await fs.release(fh)


async def _unlink_in(fs: Filesystem, src: int, renamed: trio.Event) -> None:
    await fs.unlink(src, "b.txt")


async def _symlink_in(fs: Filesystem, src: int, renamed: trio.Event) -> None:
    await fs.symlink(src, "ln", b"a.txt", 0, 0)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (_create_in, {"dst/a.txt": b"a", "dst/b.txt": b"b", "dst/new.txt": b"n"}),
        (_overwrite_in, {"dst/a.txt": b"a", "dst/b.txt": b"B2"}),
        (_unlink_in, {"dst/a.txt": b"a"}),
        (_symlink_in, {"dst/a.txt": b"a", "dst/b.txt": b"b", "dst/ln": b"a.txt"}),
    ],
    ids=["create", "open-trunc", "unlink", "symlink"],
)
def test_writes_under_a_directory_being_renamed_use_its_new_name(
    op: Callable[[Filesystem, int, trio.Event], Awaitable[None]], expected: dict[str, bytes]
) -> None:
    """R-RENAME-DIR-HOLDS-WRITES: ``mv src dst`` within one parent does not lock ``src`` in
    the kernel, so a create (or open for writing, unlink, symlink) in ``src`` can arrive
    while its objects are copied. It waits for the rename (moves.py) and writes under
    ``dst``. It used to write under ``src`` (a new file's object was left at ``src/new.txt``,
    which the delete phase, over what it had listed, never removed, while the tree showed
    ``dst/new.txt``), or made the rename fail half-way (an unlink deleting a source)."""
    inner, store = _faulty({"src/a.txt": b"a", "src/b.txt": b"b"})
    copying = store.hold("copy")

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        renamed = trio.Event()

        async def rename() -> None:
            await fs.rename(ROOT_INO, "src", ROOT_INO, "dst")
            renamed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rename)
            assert await trio.to_thread.run_sync(copying.entered.wait, 30)
            nursery.start_soon(op, fs, src.ino, renamed)
            # the operation waits for the rename (or, on the old code, did what it does
            # before the rename's end)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            copying.release()
        stored = inner.keys()
        assert {k: inner.get_object(k) for k in stored} == expected
        assert sorted(n for n, _ in await _names(fs, ROOT_INO)) == ["dst"]
        dst = await fs.lookup(ROOT_INO, "dst")
        assert sorted(n for n, _ in await _names(fs, dst.ino)) == sorted(
            k.removeprefix("dst/") for k in expected
        )

    run(store, body)


async def _names(fs: Filesystem, ino: int) -> list[tuple[str, Any]]:
    fh = await fs.opendir(ino)
    try:
        return [e for e in await fs.readdir(fh, 0) if e[0] not in (".", "..")]
    finally:
        fs.releasedir(fh)


def _faulty(objects: dict[str, bytes]) -> tuple[MemoryStore, FaultyStore]:
    """An in-memory store holding ``objects``, and its fault/stall twin."""
    inner = MemoryStore()
    for key, data in objects.items():
        inner.put_object(key, data)
    return inner, FaultyStore(inner)


async def _renamed_while_asked(
    fs: Filesystem, held: Hold, ask: Callable[[], Awaitable[T]], old: str, new: str
) -> T:
    """``ask()``'s answer, when the store call it sends that ``held`` stalls (a HEAD, a
    LIST) answers only after ``old`` was renamed to ``new``."""
    got: list[T] = []

    async def asking() -> None:
        got.append(await ask())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asking)
        assert await trio.to_thread.run_sync(held.entered.wait, 30)
        await fs.rename(ROOT_INO, old, ROOT_INO, new)
        held.release()
    return got[0]


def test_getattr_answered_for_the_old_key_of_a_renamed_file_is_not_applied() -> None:
    """A stat of ``a`` whose HEAD is still under way when ``a`` is renamed to ``b``: S3's
    answer for ``a`` (gone) is not applied to the inode, which is now ``b`` - it used to be
    detached (the file vanished from the tree) and the stat failed with ESTALE."""
    inner, store = _faulty({"a": b"abc"})

    async def body(fs: Filesystem) -> None:
        a = await fs.lookup(ROOT_INO, "a")
        stat = partial(fs.getattr, a.ino, revalidate=True)
        head = store.hold("head", key="a")
        assert (await _renamed_while_asked(fs, head, stat, "a", "b")).size == 3
        assert not fs.inode(a.ino).detached
        assert (await fs.lookup(ROOT_INO, "b")).ino == a.ino
        assert inner.keys() == ["b"]

    run(store, body, metadata_ttl=60.0)


def test_lookup_answered_for_the_old_prefix_of_a_renamed_directory_asks_again() -> None:
    """A lookup of ``src/x`` whose HEAD is under way when ``src`` is renamed to ``dst``: the
    "not found" S3 gives for ``src/x`` is not remembered for ``dst/x``; the name is asked
    about again under ``dst/``. It used to fail with ENOENT and keep ``x`` as absent in
    ``dst`` for the negative TTL."""
    inner, store = _faulty({"src/x": b"x"})

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        lookup = partial(fs.lookup, src.ino, "x")
        head = store.hold("head", key="src/x")
        x = await _renamed_while_asked(fs, head, lookup, "src", "dst")
        assert x.size == 1
        dst = await fs.lookup(ROOT_INO, "dst")
        assert dst.ino == src.ino
        assert (await fs.lookup(dst.ino, "x")).ino == x.ino
        assert inner.keys() == ["dst/x"]

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


@pytest.mark.parametrize("race", ["listed-before-the-rename", "listed-while-deleting"])
def test_readdir_racing_a_rename_of_its_directory_shows_it_whole(race: str) -> None:
    """``ls src`` racing ``mv src dst``. A LIST sent before the rename that answers after it
    (showing nothing left under ``src/``) is not applied: the directory is listed again
    under ``dst/``. A listing asked for while the rename deletes its sources (``src/a``
    gone, ``src/b`` not yet) waits for the rename. Both used to show part of the directory
    (nothing, or ``b`` only) and drop the other files from the tree."""
    _, store = _faulty({"src/a": b"1", "src/b": b"2"})

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        ls = partial(_names, fs, src.ino)
        if race == "listed-before-the-rename":
            listing = store.hold("list_page", args=("src/", "/"))
            names = await _renamed_while_asked(fs, listing, ls, "src", "dst")
        else:
            deleting = store.hold("delete", key="src/b")
            got: list[list[tuple[str, Any]]] = []

            async def listed() -> None:
                got.append(await ls())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fs.rename, ROOT_INO, "src", ROOT_INO, "dst")
                assert await trio.to_thread.run_sync(deleting.entered.wait, 30)
                nursery.start_soon(listed)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                deleting.release()
            names = got[0]
        assert [name for name, _ in names] == ["a", "b"]
        assert sorted(fs.inode(src.ino).children) == ["a", "b"]

    run(store, body, metadata_ttl=60.0)


def test_a_miss_seen_while_a_directory_moves_is_not_remembered_after_the_move() -> None:
    """A lookup of ``src/a`` while ``mv src dst`` deletes its sources (``src/a`` gone,
    ``src/b`` not yet) misses (renames are not atomic), but that miss is not remembered for
    ``dst/a`` once the rename ends. It used to be, for the negative TTL: ``dst/a`` existed in
    S3 and the mount said ENOENT."""
    inner, store = _faulty({"src/a": b"1", "src/b": b"2"})

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        deleting = store.hold("delete", key="src/b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.rename, ROOT_INO, "src", ROOT_INO, "dst")
            assert await trio.to_thread.run_sync(deleting.entered.wait, 30)
            assert await errno_of(fs.lookup(src.ino, "a")) == errno.ENOENT  # mid-move
            deleting.release()
        assert inner.keys() == ["dst/a", "dst/b"]
        assert (await fs.lookup(src.ino, "a")).size == 1

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_nothing_is_created_in_a_directory_a_rename_replaced() -> None:
    """``mv src dst`` replacing the empty directory ``dst`` while a create, mkdir or symlink
    in ``dst`` waits for it: they fail with ENOENT (``dst``'s inode is gone). They used to
    write under the key ``dst/``, which is the moved ``src`` by then."""
    inner, store = _faulty({"src/a": b"1", "dst/": b""})

    async def body(fs: Filesystem) -> None:
        old_dst = await fs.lookup(ROOT_INO, "dst")
        await fs.lookup(ROOT_INO, "src")
        copying = store.hold("copy")
        results: list[int] = []

        async def create() -> None:
            results.append(await errno_of(fs.create(old_dst.ino, "f", 0o644, os.O_WRONLY, 0, 0)))

        async def mkdir() -> None:
            results.append(await errno_of(fs.mkdir(old_dst.ino, "d", 0o755, 0, 0)))

        async def symlink() -> None:
            results.append(await errno_of(fs.symlink(old_dst.ino, "l", b"a", 0, 0)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.rename, ROOT_INO, "src", ROOT_INO, "dst")
            assert await trio.to_thread.run_sync(copying.entered.wait, 30)
            for op in (create, mkdir, symlink):
                nursery.start_soon(op)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            copying.release()
        assert results == [errno.ENOENT] * 3
        assert inner.keys() == ["dst/a"]
        dst = await fs.lookup(ROOT_INO, "dst")
        assert [name for name, _ in await _names(fs, dst.ino)] == ["a"]

    run(store, body, metadata_ttl=60.0)


def test_lookup_by_listing_under_a_directory_renamed_meanwhile_asks_again() -> None:
    """A lookup miss answered by one LIST page of ``src/`` (negative caching on) that comes
    back after ``src`` was renamed to ``dst``: the page's (empty) names are not kept for
    ``dst``. They used to be, so the lookup asked again under ``dst/`` found ``x`` absent
    from the stale names and failed with ENOENT for the negative TTL."""
    inner, store = _faulty({"src/x": b"x"})

    async def body(fs: Filesystem) -> None:
        src = await fs.lookup(ROOT_INO, "src")
        listing = store.hold("list_page", args=("src/", "/"))
        lookup = partial(fs.lookup, src.ino, "x")
        assert (await _renamed_while_asked(fs, listing, lookup, "src", "dst")).size == 1
        assert inner.keys() == ["dst/x"]

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_unmount_aborts_an_upload_a_write_is_still_creating() -> None:
    """Unmount while a write is creating its file's multipart upload: the abort at unmount
    waits for the write (the writer's lock) and then aborts that upload. It used to abort
    the writer before the upload existed, so the upload the write then created was left
    behind in the bucket."""
    inner = MemoryStore()
    store = FaultyStore(inner)

    async def body(fs: Filesystem) -> None:
        fh, _ = await fs.create(ROOT_INO, "big", 0o644, os.O_WRONLY, 0, 0)
        writer = fs.files[fh].writer
        assert writer is not None
        creating = store.hold("create_multipart")
        shut = trio.Event()

        async def shutdown() -> None:
            await fs.shutdown()
            shut.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.write, fh, 0, b"x" * (6 * MiB))  # a part: the upload
            assert await trio.to_thread.run_sync(creating.entered.wait, 30)
            nursery.start_soon(shutdown)
            with trio.fail_after(30):  # the unmount waits for the write (or, old code, ends)
                while not shut.is_set() and not writer.lock.statistics().tasks_waiting:
                    await trio.sleep(0.01)
            creating.release()
        assert inner.pending_uploads() == 0
        assert inner.keys() == []

    run(store, body)


def test_directory_bucket_rename_uses_rename_object() -> None:
    store = MemoryStore("data--usw2-az1--x-s3", directory_bucket=True)
    store.put_object("t/a", b"1")
    store.put_object("t/b/c", b"2")

    async def body(fs: Filesystem) -> None:
        await fs.lookup(ROOT_INO, "t")
        await fs.rename(ROOT_INO, "t", ROOT_INO, "u")
        assert store.keys() == ["u/a", "u/b/c"]
        assert store.calls.get("rename") == 2 and store.calls.get("copy") is None

    run(store, body, bucket="data--usw2-az1--x-s3")


def test_forget_drops_inodes_but_keeps_attributes() -> None:
    store = MemoryStore()
    store.put_object("f", b"x")

    async def body(fs: Filesystem) -> None:
        attr = await fs.lookup(ROOT_INO, "f")
        await fs.setattr(attr.ino, mode=0o600)
        fs.forget(attr.ino, 1)
        assert attr.ino not in fs.inodes
        d = await fs.opendir(ROOT_INO)
        entries = dict(await fs.readdir(d, 0))
        assert entries["f"].mode & 0o7777 == 0o600

    run(store, body)


def test_memory_bounded_prefetch_window() -> None:
    store = MemoryStore()
    data = random.Random(5).randbytes(64 * MiB)
    store.put_object("big", data)

    async def body(fs: Filesystem) -> None:
        attr = await fs.lookup(ROOT_INO, "big")
        fh = await fs.open(attr.ino, os.O_RDONLY)
        reader = fs.files[fh].reader
        assert reader is not None
        peak = 0
        off = 0
        while chunk := await fs.read(fh, off, 128 * 1024):
            assert chunk == data[off : off + len(chunk)]
            off += len(chunk)
            peak = max(peak, len(reader._chunks))
        assert off == len(data)
        assert peak <= fs.max_window + 2
        await fs.release(fh)
        assert fs.read_slots.value == max(2, 32 * MiB // (5 * MiB))

    run(store, body, max_memory_mib=32)


def test_disk_cache_serves_second_read_and_is_bounded(tmp_path: Path) -> None:
    store = MemoryStore()
    data = random.Random(6).randbytes(23 * MiB)
    store.put_object("c.bin", data)

    async def body(fs: Filesystem) -> None:
        assert fs.cache is not None
        attr = await fs.lookup(ROOT_INO, "c.bin")
        assert await read_file(fs, attr.ino) == data
        with trio.fail_after(10):  # cache writes finish in worker threads after the reads
            while fs.cache.size < len(data) or fs.cache.writing:
                await trio.sleep(0.01)
        gets = store.calls.get("get", 0)
        assert await read_file(fs, attr.ino) == data
        assert store.calls.get("get", 0) == gets, "second read comes from the disk cache"
        assert fs.cache.size == len(data)
        fh = await fs.open(attr.ino, os.O_RDONLY)
        assert await fs.read(fh, 20 * MiB + 5, 100) == data[20 * MiB + 5 : 20 * MiB + 105]
        await fs.release(fh)
        store.put_object("c.bin", b"replaced")  # new ETag: old blocks are never served
        attr = await fs.getattr(attr.ino, revalidate=True)
        assert await read_file(fs, attr.ino) == b"replaced"
        root = fs.cache.root
        await fs.shutdown()
        assert not root.exists(), "the cache is removed at unmount"

    run(store, body, cache_dir=tmp_path / "cache", max_cache_size_mib=30)

    async def bounded(fs: Filesystem) -> None:
        assert fs.cache is not None
        attr = await fs.lookup(ROOT_INO, "big")
        assert await read_file(fs, attr.ino) == big
        await trio.sleep(0.2)
        assert 0 < fs.cache.size <= 12 * MiB

    big = random.Random(7).randbytes(40 * MiB)
    store.put_object("big", big)
    run(store, bounded, cache_dir=tmp_path / "cache2", max_cache_size_mib=12)


def test_known_directory_forgets_its_knowledge_with_a_forgotten_inode() -> None:
    """R-META-NEGATIVE-DIR: a directory known whole must not deny a name this mount wrote
    there after the kernel forgot the name's inode (the tree no longer holds it)."""
    store = MemoryStore()

    async def body(fs: Filesystem) -> None:
        d = (await fs.mkdir(ROOT_INO, "job", 0o755, 0, 0)).ino
        ino = await write_file(fs, d, "part-0", b"data")
        fs.forget(ino, fs.inode(ino).lookups)  # the kernel drops the dentry and the inode
        assert ino not in fs.inodes
        assert (await fs.lookup(d, "part-0")).size == 4
        assert await errno_of(fs.lookup(d, "part-1")) == errno.ENOENT

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_listing_answers_misses_in_a_small_directory() -> None:
    """R-META-NEGATIVE-DIR: misses in a directory of one LIST page cost that one LIST; a
    file found there still gets its HEAD; a larger directory asks per name."""
    store = MemoryStore()
    for i in range(5):
        store.put_object(f"small/f{i}", b"x")
    store.put_object("small/sub/x", b"x")
    for i in range(250):
        store.put_object(f"big/f{i:03d}", b"x")
    calls: list[str] = []
    _counting(store, calls)

    async def body(fs: Filesystem) -> None:
        small = (await fs.lookup(ROOT_INO, "small")).ino
        big = (await fs.lookup(ROOT_INO, "big")).ino
        calls.clear()
        for i in range(20):
            assert await errno_of(fs.lookup(small, f"missing-{i}")) == errno.ENOENT
        assert calls == ["list_page"]
        calls.clear()
        assert (await fs.lookup(small, "f3")).size == 1
        assert calls == ["head"]
        calls.clear()
        await fs.lookup(small, "sub")
        assert calls == []
        calls.clear()
        for i in range(3):
            assert await errno_of(fs.lookup(big, f"missing-{i}")) == errno.ENOENT
        assert calls.count("head") == 3  # too large for one page: per-name lookups

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def _subdir_counts_hold(fs: Filesystem) -> None:
    """Every directory's ``subdirs`` equals a scan of its children (what nlink used to be)."""
    for node in fs.inodes.values():
        scanned = sum(1 for ino in node.children.values() if fs.inodes[ino].kind is Kind.DIR)
        assert node.subdirs == scanned, (node.name, node.subdirs, scanned)
        if node.kind is Kind.DIR and not node.detached:
            assert fs.attr(node).nlink == 2 + scanned


def test_directory_nlink_is_kept_without_a_scan() -> None:
    """nlink of a directory is counted as entries come and go (mkdir, rmdir, rename of
    files and directories, over an existing target, a directory that S3 then shows as a
    file, entries dropped when the kernel forgets them), not by scanning its children on
    every getattr (quadratic in untar and rm -rf of a large directory)."""
    store = MemoryStore()
    store.put("remote/a/x", b"1", {})
    store.put("remote/f", b"2", {})

    async def body(fs: Filesystem) -> None:
        rng = random.Random(14)
        top = (await fs.mkdir(ROOT_INO, "t", 0o755, 0, 0)).ino
        remote = (await fs.lookup(ROOT_INO, "remote")).ino
        await fs.readdir(await fs.opendir(remote), 0)
        assert fs.attr(fs.inode(remote)).nlink == 3  # "a" is a directory, "f" a file
        names = [f"n{i}" for i in range(6)]
        for _ in range(300):
            op = rng.choice(["mkdir", "file", "rmdir", "unlink", "rename", "forget"])
            parent = rng.choice([top, *(n for n in fs.inode(top).children.values())])
            if fs.inode(parent).kind is not Kind.DIR:
                parent = top
            name = rng.choice(names)
            if op == "mkdir":
                await errno_of(fs.mkdir(parent, name, 0o755, 0, 0))
            elif op == "file":
                with contextlib.suppress(FsError):
                    await write_file(fs, parent, name, b"x")
            elif op == "rmdir":
                await errno_of(fs.rmdir(parent, name))
            elif op == "unlink":
                await errno_of(fs.unlink(parent, name))
            elif op == "rename":
                await errno_of(fs.rename(parent, name, top, rng.choice(names)))
            else:
                child = fs.tree.child(fs.inode(parent), name)
                if child is not None and child.lookups:
                    fs.forget(child.ino, child.lookups)
            _subdir_counts_hold(fs)

    run(store, body)


def test_getattr_now_answers_only_what_needs_no_request() -> None:
    """The FUSE getattr the kernel sends before each unlink is answered from the tree when
    the attributes are current (no request, no kill watch); expired or unlinked ones go the
    full way (a HEAD, or ESTALE), exactly as getattr answers them."""
    store = MemoryStore()
    store.put("d/f", b"x", {})

    async def body(fs: Filesystem) -> None:
        d = await fs.lookup(ROOT_INO, "d")
        f = await fs.lookup(d.ino, "f")
        assert fs.getattr_now(ROOT_INO) is not None
        assert fs.getattr_now(d.ino) == await fs.getattr(d.ino)
        fs.inode(f.ino).expiry = 0.0  # expired: S3 is asked again
        assert fs.getattr_now(f.ino) is None
        assert (await fs.getattr(f.ino)).size == 1
        await fs.unlink(d.ino, "f")
        assert fs.getattr_now(f.ino) is None  # detached: getattr says ESTALE
        assert await errno_of(fs.getattr(f.ino)) == errno.ESTALE
        assert fs.getattr_now(123456) is None

    run(store, body, metadata_ttl=60.0)


def test_readdir_lists_entries_the_kernel_forgot_meanwhile() -> None:
    """A listing is handed to the kernel page by page. Entries of the snapshot that the kernel
    FORGETs between two pages (dentry pruning, e.g. an earlier ``ls`` evicted under memory
    pressure) were dropped from the table and skipped - a warm ``ls`` of 10,000 files at load
    13 showed 5,957 - and each skip shifted every later offset by one. Every entry is listed
    exactly once, and each can be looked up (the kernel learns its inode from the listing)."""
    store = MemoryStore("b")
    names = [f"f{i:03d}" for i in range(60)]
    for name in names:
        store.put_object(f"d/{name}", b"1")

    async def body(fs: Filesystem) -> None:
        d = await fs.lookup(ROOT_INO, "d")
        fh = await fs.opendir(d.ino)
        earlier = list(await fs.readdir(fh, 0))  # an earlier ls: the kernel holds every entry
        for _, attr in earlier:
            fs.remember(attr.ino)
        fs.releasedir(fh)
        fh = await fs.opendir(d.ino)
        page = list(await fs.readdir(fh, 0))[:20]  # the kernel takes one page ...
        for _, attr in page:
            fs.remember(attr.ino)
        for _, attr in earlier[20:]:  # ... and meanwhile forgets the rest
            fs.forget(attr.ino, 1)
        tail = list(await fs.readdir(fh, 20))
        assert [n for n, _ in page] + [n for n, _ in tail] == names
        for name, attr in tail:
            fs.remember(attr.ino)  # what the adapter does after each reply: must not fail
            assert (await fs.getattr(attr.ino)).ino == attr.ino
            assert (await fs.lookup(d.ino, name)).ino == attr.ino

    run(store, body)


_GETS = ("get", "get_range", "open_range")


def _gets(store: MemoryStore) -> int:
    return sum(store.calls.get(op, 0) for op in _GETS)


def test_reads_of_what_the_mount_wrote_send_no_get() -> None:
    """R-READ-RETAINED: a file written with one PutObject is read back (also under the name a
    file or directory rename gave it) from the bytes the mount wrote; another client's
    replacement is read from S3 once the attributes show its ETag; bigger files are not kept."""
    store = MemoryStore()
    small = random.Random(7).randbytes(300_000)
    big = random.Random(8).randbytes(6 * MiB)  # > one part: a multipart upload

    async def body(fs: Filesystem) -> None:
        ino = await write_file(fs, ROOT_INO, "a.bin", small)
        big_ino = await write_file(fs, ROOT_INO, "big.bin", big)
        d = await fs.mkdir(ROOT_INO, "d", 0o755, 0, 0)
        await write_file(fs, d.ino, "x.bin", small[:1000])
        gets = _gets(store)
        assert await read_file(fs, ino) == small
        await fs.rename(ROOT_INO, "a.bin", ROOT_INO, "b.bin")
        assert await read_file(fs, (await fs.lookup(ROOT_INO, "b.bin")).ino) == small
        await fs.rename(ROOT_INO, "d", ROOT_INO, "e")
        e = await fs.lookup(ROOT_INO, "e")
        assert await read_file(fs, (await fs.lookup(e.ino, "x.bin")).ino) == small[:1000]
        assert _gets(store) == gets, "read back from memory"
        assert await read_file(fs, big_ino) == big
        assert _gets(store) > gets, "a multipart object is read from S3"
        # another client replaces b.bin; the cached attributes still name what we wrote
        other = random.Random(9).randbytes(len(small))
        store.put_object("b.bin", other)
        b = await fs.lookup(ROOT_INO, "b.bin")
        assert await read_file(fs, b.ino) == small  # never a mix: the object the open named
        fh = await fs.open(b.ino, os.O_RDONLY | os.O_DIRECT)  # revalidates: the new ETag
        assert await fs.read(fh, 0, len(other)) == other
        await fs.release(fh)
        assert await read_file(fs, b.ino) == other

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_retained_objects_are_bounded_and_keyed_by_etag() -> None:
    from zonemount_fs.retained import Retained

    kept = Retained(budget=250, max_object=100)
    kept.keep("a", "e1", b"a" * 100)
    kept.keep("big", "e9", b"b" * 101)  # over max_object: not kept
    kept.keep("b", "e2", b"b" * 100)
    assert kept.get("a", "e1") == b"a" * 100  # a is now the most recently used
    assert kept.get("a", "other") is None and kept.get("a", None) is None
    kept.keep("c", "e3", b"c" * 100)  # over budget: b (least recently used) goes
    assert kept.get("b", "e2") is None and kept.get("big", "e9") is None
    assert kept.size == 200
    kept.moved_prefix("", "p/")
    assert kept.get("a", "e1") is None and kept.get("p/a", "e1") == b"a" * 100
    kept.keep("p/a", "e4", b"x")  # replaced: the old bytes go
    assert kept.get("p/a", "e1") is None and kept.size == 101


def _big_directory(files: int) -> tuple[MemoryStore, list[str]]:
    """A store with ``big/f000``... and the list its HEADs and LIST pages are counted in."""
    store = MemoryStore()
    for i in range(files):
        store.put_object(f"big/f{i:03d}", b"x")
    calls: list[str] = []
    _counting(store, calls)
    return store, calls


def _counting(store: MemoryStore, calls: list[str]) -> None:
    for op in ("head", "list_page"):
        real = getattr(store, op)

        def counted(*a: Any, _real: Any = real, _op: str = op, **k: Any) -> Any:
            calls.append(_op)
            return _real(*a, **k)

        setattr(store, op, counted)


async def _settle(fs: Filesystem) -> None:
    """Let the pages and HEADs fetched ahead of a walk end. They run in worker threads, and a
    task waiting on a thread counts as blocked: wait_all_tasks_blocked alone returned while
    HEADs were still out (a later lookup then met a failure meant for them)."""
    walks = fs.resolver.ahead._walks.values()
    with trio.fail_after(10):
        while any(w.inflight or w.fetching is not None for w in walks):
            await trio.sleep(0.001)
    await trio.testing.wait_all_tasks_blocked()


def test_a_walk_over_a_large_directory_is_headed_ahead() -> None:
    """R-META-LOOKUP-AHEAD: lookups of a large directory's files in key order (readers
    opening them one after another) find them HEADed ahead, with their metadata (a symlink
    among them stays one); asked one by one (before) each name cost a HEAD and a LIST."""
    from zonemount_fs.lookup import AHEAD
    from zonemount_fs.meta import SYMLINK_MODE

    store = MemoryStore()
    for i in range(100):
        store.put_object(f"big/f{i:03d}", b"x" * i)
    store.put_object("big/f050", b"f001", {"mode": str(SYMLINK_MODE)})
    calls: list[str] = []
    _counting(store, calls)

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        calls.clear()
        kinds = {}
        for i in range(100):
            attr = await fs.lookup(big, f"f{i:03d}")
            kinds[i] = fs.tree.inode(attr.ino).kind
            assert attr.size == (4 if i == 50 else i)
            await _settle(fs)
        assert kinds[50] is Kind.SYMLINK and kinds[49] is Kind.FILE
        assert calls.count("head") <= 100 + AHEAD, calls.count("head")
        assert calls.count("list_page") <= 2 + 100 // (AHEAD // 2), calls.count("list_page")

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_lookups_that_skip_names_are_not_headed_ahead() -> None:
    """R-META-LOOKUP-AHEAD: ``stat`` of every 20th file (in key order) is no walk: nothing
    is HEADed ahead, and a failed check is not repeated for a while."""
    store, calls = _big_directory(400)

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        calls.clear()
        for i in range(0, 400, 20):
            await fs.lookup(big, f"f{i:03d}")
            await _settle(fs)
        assert calls.count("head") == 20
        # each name's own LIST, the page of names the first one tried, a check per cooldown
        assert calls.count("list_page") == 20 + 1 + 2

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_a_head_fetched_ahead_is_not_installed_under_a_renamed_directory() -> None:
    """R-META-LOOKUP-AHEAD: a HEAD fetched ahead for ``big/f005`` that answers only after
    ``big`` was renamed to ``moved`` (and another client wrote a new ``big/f005``) installs
    nothing in the renamed directory: ``moved/f005`` is asked for under its own key."""
    inner, store = _faulty({f"big/f{i:03d}": b"old" for i in range(100)})

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        head = store.hold("head", key="big/f005")
        await fs.lookup(big, "f000")
        await fs.lookup(big, "f001")  # a walk: f002... are HEADed ahead
        assert await trio.to_thread.run_sync(head.entered.wait, 10)
        await fs.rename(ROOT_INO, "big", ROOT_INO, "moved")
        inner.put_object("big/f005", b"another")
        head.release()
        await _settle(fs)
        assert (await fs.lookup(big, "f005")).size == len(b"old")

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_a_walk_whose_heads_ahead_fail_still_answers_every_lookup() -> None:
    """R-META-LOOKUP-AHEAD: HEADs fetched ahead that S3 fails install nothing and fail no
    lookup: each name is then asked for by its own lookup."""
    _inner, store = _faulty({f"big/f{i:03d}": b"x" * i for i in range(100)})

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        await fs.lookup(big, "f000")
        store.fail("head", StoreUnavailable("no answer"), after=1, times=8)  # the walk's HEADs
        await fs.lookup(big, "f001")
        await _settle(fs)
        assert [(await fs.lookup(big, f"f{i:03d}")).size for i in range(2, 12)] == list(
            range(2, 12)
        )

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0)


def test_lookups_waiting_for_a_head_s3_does_not_answer_fail_with_it() -> None:
    """R-META-LOOKUP-AHEAD, R-ERR-DEADLINE: a lookup that waits for a HEAD fetched ahead
    which S3 never answers fails (EIO) when that HEAD misses its deadline; it does not send
    the HEAD again and wait a second deadline (before: two HEADs, two deadlines). A later
    lookup of the name asks S3 again."""
    _inner, store = _faulty({f"big/f{i:03d}": b"x" * i for i in range(100)})
    heads: list[str] = []
    real = store.head

    def head(key: str, *a: Any, **k: Any) -> Any:
        heads.append(key)
        return real(key, *a, **k)

    store.head = head  # type: ignore[method-assign]

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        stalled = store.hold("head", key="big/f005")
        await fs.lookup(big, "f000")
        await fs.lookup(big, "f001")  # a walk: f002... are HEADed ahead, f005's never answers
        assert await trio.to_thread.run_sync(stalled.entered.wait, 10)
        with pytest.raises(FsError) as failed:
            await fs.lookup(big, "f005")
        assert failed.value.errno == errno.EIO
        assert heads.count("big/f005") == 1
        stalled.release()
        await _settle(fs)
        assert (await fs.lookup(big, "f005")).size == 5  # asked again, answered now
        assert heads.count("big/f005") == 2

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=60.0, request_deadline=0.3)


def test_page_cache_kept_only_for_the_version_it_holds() -> None:
    """R-READ-PAGE-CACHE: an open keeps the kernel's pages (FOPEN_KEEP_CACHE) only when they
    are of the version its attributes name: not after another client's replacement, not while
    a reader of another version is open, not after O_DIRECT, O_RDWR or a write."""
    store = MemoryStore()
    store.put_object("f", b"v1")

    async def body(fs: Filesystem) -> None:
        ino = (await fs.lookup(ROOT_INO, "f")).ino

        async def opened(flags: int = os.O_RDONLY) -> tuple[int, bool]:
            fh = await fs.open(ino, flags)
            return fh, fs.files[fh].keep_cache

        a, keep = await opened()
        assert not keep  # nothing known of the kernel's pages yet: it drops them
        b, keep = await opened()
        assert keep
        await fs.release(a)
        await fs.release(b)
        c, keep = await opened()
        assert keep
        await fs.release(c)
        store.put_object("f", b"v2, longer")  # another client (the TTL is 0: opens revalidate)
        d, keep = await opened()
        assert not keep
        e, keep = await opened()
        assert keep
        store.put_object("f", b"v3")
        g, keep = await opened()
        assert not keep  # d and e still read v2 through the page cache
        await fs.release(d)
        await fs.release(e)
        h, keep = await opened()
        assert not keep  # pages of v2 may have come in meanwhile
        await fs.release(g)
        await fs.release(h)
        for flags in (os.O_RDONLY | os.O_DIRECT, os.O_RDWR):
            i, keep = await opened()
            assert not keep
            await fs.release(i)
            j, keep = await opened()
            assert keep
            await fs.release(j)
            k, keep = await opened(flags)
            assert not keep
            await fs.release(k)
        w = await fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        await fs.write(w, 0, b"mine")
        await fs.flush(w)
        await fs.release(w)
        for expected in (False, True):
            p, keep = await opened()
            assert keep is expected
            assert await fs.read(p, 0, 10) == b"mine"
            await fs.release(p)

    run(store, body)


def test_misses_in_key_order_start_no_walk() -> None:
    """R-META-LOOKUP-AHEAD: only lookups that find files start a walk - a create storm's
    misses (Hadoop's ``exists()`` of part-00000, part-00001, ... in a large directory) cost
    no LIST page or HEAD ahead."""
    store, calls = _big_directory(100)

    async def body(fs: Filesystem) -> None:
        big = (await fs.lookup(ROOT_INO, "big")).ino
        calls.clear()
        for i in range(20):
            assert await errno_of(fs.lookup(big, f"part-{i:05d}")) == errno.ENOENT
            await _settle(fs)
        # the first miss's page of names (too large for one), then a HEAD + LIST per name
        assert (calls.count("head"), calls.count("list_page")) == (20, 21)

    run(store, body, metadata_ttl=60.0, negative_metadata_ttl=1.0)


def test_a_directory_above_one_this_mount_emptied_stays() -> None:
    """R-DIR-EMPTIED-STAYS: renaming another client's only file out of ``d/f`` leaves ``f``
    (emptied here) and so ``d`` above it, though S3 shows neither any more (the reference
    model found ``d`` and ``d/f`` gone after a listing of the root, TTLs 0)."""
    store = MemoryStore()
    store.put_object("d/f/a", b"")

    async def body(fs: Filesystem) -> None:
        d = await fs.lookup(ROOT_INO, "d")
        f = await fs.lookup(d.ino, "f")
        await fs.lookup(f.ino, "a")
        await fs.rename(f.ino, "a", ROOT_INO, "a")
        assert sorted(n for n, _ in await _names(fs, ROOT_INO)) == ["a", "d"]
        assert [n for n, _ in await _names(fs, d.ino)] == ["f"]
        assert await _names(fs, f.ino) == []
        await fs.rmdir(d.ino, "f")
        await fs.rmdir(ROOT_INO, "d")
        assert [n for n, _ in await _names(fs, ROOT_INO)] == ["a"]

    run(store, body)
