"""A directory listed again in ranges at once (store/ranged.py) equals one sequential listing.

Property tests: random directories (files, subdirectories, names around ``/`` in key order
such as ``c-x`` < ``c/`` < ``c0``), listed once sequentially to get the split keys, then
changed at random (keys added, removed, rewritten, split keys among them, a file replaced by a
directory of its name) and listed in ranges - compared with one sequential listing of the
changed directory, on the in-memory store (S3's order) and on SeaweedFS (which orders a
directory by its name and skips it at ``StartAfter`` = that name). Small pages make many
ranges out of a few keys. Then the filesystem core: a relist of a directory of 2,500 keys
uses the ranges and costs the requests a sequential listing costs.
"""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from zonemount_cli.servers import LocalS3
from zonemount_fs import listing
from zonemount_fs.core import ROOT_INO, Filesystem
from zonemount_fs.errors import ObjectNotFound
from zonemount_fs.options import MountOptions
from zonemount_fs.store import ranged
from zonemount_fs.store.base import ListPage, ObjectStore
from zonemount_fs.store.memory import MemoryStore

from .stores import local_store

PREFIX = "d/"
# characters below and above "/" in key order, and one outside ASCII
NAMES = st.text(alphabet="ac-0~é", min_size=1, max_size=3)


def sequential(store: ObjectStore, page_keys: int, prefix: str = PREFIX) -> tuple[ListPage, int]:
    """One sequential listing of ``prefix`` in pages of ``page_keys``, and its page count."""
    objects, prefixes, token, pages = [], [], None, 0
    while True:
        page = store.list_page(prefix, "/", token, page_keys)
        pages += 1
        objects += page.objects
        prefixes += page.prefixes
        token = page.next_token
        if token is None:
            return ListPage(objects, sorted(prefixes), None), pages


def in_ranges(
    store: ObjectStore, splits: tuple[str, ...], page_keys: int, prefix: str = PREFIX
) -> tuple[ListPage, int]:
    """The directory listed in ranges at ``splits``, and the pages that took."""
    pages = 0

    async def fetch(start_after: str | None, token: str | None) -> ListPage:
        nonlocal pages
        pages += 1
        return await trio.to_thread.run_sync(
            store.list_page, prefix, "/", token, page_keys, start_after
        )

    return trio.run(ranged.list_ranges, fetch, splits), pages


def same(a: ListPage, b: ListPage) -> bool:
    return a.objects == b.objects and a.prefixes == b.prefixes


@st.composite
def directories(draw: st.DrawFn, *, both_kinds: bool) -> dict[str, str]:
    """name -> "file" | "dir" (a directory holds one key, ``name/x``); with ``both_kinds``
    a name may be both (S3 allows it, SeaweedFS does not)."""
    names = draw(st.lists(NAMES, max_size=24, unique=True))
    kinds = st.sampled_from(["file", "dir", "both"] if both_kinds else ["file", "dir"])
    return {name: draw(kinds) for name in names}


def keys_of(prefix: str, name: str, kind: str) -> list[str]:
    return {
        "file": [prefix + name],
        "dir": [f"{prefix}{name}/x"],
        "both": [prefix + name, f"{prefix}{name}/x"],
    }[kind]


def apply(
    store: Any, prefix: str, before: dict[str, str], after: dict[str, str], rewrite: set[str]
) -> None:
    """Change the directory from ``before`` to ``after`` (removals first: SeaweedFS cannot
    hold a file and a directory of one name), rewriting ``rewrite`` (new ETags)."""
    gone = {k for n, kind in before.items() for k in keys_of(prefix, n, kind)}
    new = {k for n, kind in after.items() for k in keys_of(prefix, n, kind)}
    for key in sorted(gone - new, reverse=True):
        store.delete(key)
    for name, kind in after.items():
        for key in keys_of(prefix, name, kind):
            if key not in gone or name in rewrite:
                store.put(key, name.encode() + b"2" * (name in rewrite), {})


@st.composite
def changes(
    draw: st.DrawFn, *, both_kinds: bool
) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """A directory and a change of it; names near the split keys are among those changed."""
    before = draw(directories(both_kinds=both_kinds))
    after = dict(before)
    for name in draw(st.lists(st.sampled_from(sorted(before)), max_size=8)) if before else []:
        choice = draw(st.sampled_from(["delete", "to-dir", "to-file", "grow"]))
        if choice == "delete":
            after.pop(name, None)
        elif choice == "to-dir":
            after[name] = "dir"
        elif choice == "to-file":
            after[name] = "file"
        else:  # names right after this one in key order
            for suffix in ("-", "0", "a", "~"):
                after.setdefault(name + suffix, "file")
    for name, kind in draw(directories(both_kinds=both_kinds)).items():
        after.setdefault(name, kind)
    rewrite = set(draw(st.lists(st.sampled_from(sorted(after)), max_size=4))) if after else set()
    return before, after, rewrite


def check(
    store: Any,
    before: dict[str, str],
    after: dict[str, str],
    rewrite: set[str],
    page_keys: int,
    prefix: str = PREFIX,
) -> None:
    apply(store, prefix, {}, before, set())
    first, _ = sequential(store, page_keys, prefix)
    splits = ranged.split_keys(first, page_keys)
    assert all(s.startswith(prefix) for s in splits) and list(splits) == sorted(set(splits))
    unchanged, pages = in_ranges(store, splits, page_keys, prefix)
    expected, sequential_pages = sequential(store, page_keys, prefix)
    assert same(unchanged, expected)
    # an unchanged directory of files: the requests of a sequential listing; a common prefix
    # where a range should end moves its end to an object key (the range may need a page more)
    most = sequential_pages + (len(splits) if first.prefixes else 0)
    assert sequential_pages <= pages <= most
    apply(store, prefix, before, after, rewrite)
    got, _ = in_ranges(store, splits, page_keys, prefix)
    expected, _ = sequential(store, page_keys, prefix)
    assert same(got, expected), (splits, got, expected)


@pytest.mark.unit
@settings(max_examples=400, deadline=None)
@given(changes(both_kinds=True), st.integers(1, 4))
def test_ranges_equal_one_sequential_listing_memory(
    change: tuple[dict[str, str], dict[str, str], set[str]], page_keys: int
) -> None:
    check(MemoryStore(), *change, page_keys)


@pytest.mark.integration
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking on a server is slow
)
@given(change=changes(both_kinds=False), page_keys=st.integers(1, 4))
def test_ranges_equal_one_sequential_listing_seaweedfs(
    seaweed_server: LocalS3,
    monkeypatch: pytest.MonkeyPatch,
    change: tuple[dict[str, str], dict[str, str], set[str]],
    page_keys: int,
) -> None:
    # one bucket, a directory per example: SeaweedFS runs out of volumes for a bucket each
    store = seaweed_store(seaweed_server, monkeypatch)
    check(store, *change, page_keys, prefix=f"{uuid.uuid4().hex[:8]}/d/")


_STORES: dict[str, ObjectStore] = {}


def seaweed_store(server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    if server.endpoint not in _STORES:
        name = f"ranged-{uuid.uuid4().hex[:10]}"
        server.client().create_bucket(Bucket=name)
        _STORES[server.endpoint] = local_store(name, server.endpoint)
    return _STORES[server.endpoint]


@pytest.mark.unit
def test_split_keys_are_object_keys_evenly_spaced() -> None:
    store = MemoryStore()
    for i in range(2500):
        store.put(f"{PREFIX}{i:05d}", b"", {})
    for i in range(0, 2500, 7):
        store.put(f"{PREFIX}{i:05d}/sub", b"", {})  # common prefixes among the entries
    page, _ = sequential(store, 1000)
    splits = ranged.split_keys(page, 1000)
    entries = sorted([o.key for o in page.objects] + page.prefixes)
    cuts = [entries.index(s) + 1 for s in splits]
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    assert len(splits) == 2 and max(sizes) <= 1000 and sum(sizes) == len(entries)
    assert all(s in {o.key for o in page.objects} for s in splits)
    assert ranged.split_keys(ListPage([], [f"{PREFIX}{i}/" for i in range(3000)], None), 1000) == ()


class Recording(MemoryStore):
    """Remembers each LIST's start-after (None for a first or continued page)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[str | None] = []

    def list_page(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        if delimiter == "/" and prefix == PREFIX:
            self.starts.append(start_after)
        return super().list_page(prefix, delimiter, token, max_keys, start_after)


@pytest.mark.unit
def test_relist_of_a_large_directory_lists_ranges_at_once() -> None:
    """readdir of a directory listed before: ranges split at its keys, one request per page
    as before; keys added at a split key, a removed split key and a new subdirectory show."""
    store = Recording()
    for i in range(2500):
        store.put_object(f"{PREFIX}{i:05d}", b"1")
    options = MountOptions(bucket="b", mountpoint=Path("/mnt"), allow_delete=True)

    async def names(fs: Filesystem, ino: int) -> list[str]:
        fh = await fs.opendir(ino)
        try:
            return [name for name, _ in await fs.readdir(fh, 0)]
        finally:
            fs.releasedir(fh)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, options, nursery)
            d = await fs.lookup(ROOT_INO, "d")
            store.starts.clear()
            assert len(await names(fs, d.ino)) == 2500
            assert store.starts == [None, None, None]  # first: sequential, 3 pages
            store.starts.clear()
            assert len(await names(fs, d.ino)) == 2500
            assert sorted(store.starts, key=str) == [None, f"{PREFIX}00832", f"{PREFIX}01666"]
            store.delete_object(f"{PREFIX}00832")
            for extra in ("00832-a", "00832-b", "00832/x", "01666~"):
                store.put_object(PREFIX + extra, b"2")
            store.starts.clear()
            got = await names(fs, d.ino)
            want = sorted(
                {f"{i:05d}" for i in range(2500)} - {"00832"}
                | {"00832-a", "00832-b", "00832", "01666~"}
            )
            assert sorted(got) == want
            assert len(store.starts) == 3
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.unit
def test_at_most_parallel_ranges_at_once_and_an_error_is_raised() -> None:
    store = MemoryStore()
    for i in range(40):
        store.put(f"{PREFIX}{i:03d}", b"", {})
    first, _ = sequential(store, 4)
    splits = ranged.split_keys(first, 4)
    running = most = 0

    async def fetch(start_after: str | None, token: str | None) -> ListPage:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.01)
        running -= 1
        return store.list_page(PREFIX, "/", token, 4, start_after)

    page = trio.run(partial(ranged.list_ranges, fetch, splits, parallel=3))
    assert len(splits) == 9 and most == 3 and same(page, first)

    async def failing(start_after: str | None, token: str | None) -> ListPage:
        if start_after == splits[4]:
            raise ObjectNotFound("boom")
        await trio.sleep(0.01)
        return store.list_page(PREFIX, "/", token, 4, start_after)

    with pytest.raises(ObjectNotFound, match="boom"):
        trio.run(ranged.list_ranges, failing, splits)


@pytest.mark.integration
def test_native_list_page_is_list_page_on_the_trio_thread(
    seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3Store's ListObjectsV2 twin awaited on the trio thread (what a relist's ranges use)
    answers as list_page does: start-after, tokens, prefixes, LastModified."""
    store = seaweed_store(seaweed_server, monkeypatch)
    prefix = f"{uuid.uuid4().hex[:8]}/d/"
    for name in ("a", "b", "c-x", "c/x", "d"):
        store.put(prefix + name, b"1", {})
    native = store.native(store.list_page)  # type: ignore[attr-defined]
    assert native is not None
    for args in [(None, 2, None), (None, 2, prefix + "a"), (None, 1000, prefix + "c-x")]:
        token, keys, after = args
        want = store.list_page(prefix, "/", token, keys, after)
        got = trio.run(native, prefix, "/", token, keys, after)
        assert got == want
        if want.next_token:
            assert trio.run(native, prefix, "/", want.next_token, keys) == store.list_page(
                prefix, "/", want.next_token, keys
            )


@pytest.mark.integration
def test_full_listing_pages_are_awaited_on_the_trio_thread(
    seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory's first listing (``opendir`` + ``readdir``, what ``rm -rf`` does twice per
    directory) takes its pages one after the other with the native ListObjectsV2, without a
    worker thread, and shows every page's entries."""
    store = seaweed_store(seaweed_server, monkeypatch)
    top = uuid.uuid4().hex[:8]
    names = {f"f{i}" for i in range(7)} | {"sub"}
    for name in names - {"sub"}:
        store.put(f"{top}/{name}", b"1", {})
    store.put(f"{top}/sub/x", b"1", {})
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 3)  # three pages
    options = MountOptions(bucket="b", mountpoint=Path("/mnt"), allow_delete=True)

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, options, nursery)
            d = await fs.lookup(ROOT_INO, top)
            monkeypatch.setattr(trio.to_thread, "run_sync", no_thread)
            fh = await fs.opendir(d.ino)
            got = {name for name, _ in await fs.readdir(fh, 0)}
            fs.releasedir(fh)
            assert got == names
            nursery.cancel_scope.cancel()

    trio.run(main)
