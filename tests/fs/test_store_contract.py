"""The ObjectStore contract, run against every implementation.

The in-memory store (unit tests' stand-in) and the S3 store against real S3 servers on
loopback (moto; SeaweedFS) - its hot calls on the lean request path, and all on botocore - must
behave the same for everything the filesystem relies on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_contract import s3list
from zonemount_fs.errors import (
    AccessDenied,
    BucketNotFound,
    NotSupported,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
)
from zonemount_fs.store import s3
from zonemount_fs.store.base import ObjectStore, list_all
from zonemount_fs.store.faults import FaultyStore
from zonemount_fs.store.memory import MemoryStore
from zonemount_fs.store.s3 import S3Store

from .faultproxy import FaultProxy, Rule
from .stores import local_store

MiB = 1024 * 1024


def _s3(server: LocalS3, *, fast_path: bool = True) -> S3Store:
    name = f"contract-{uuid.uuid4().hex[:10]}"
    client: Any = server.client()
    client.create_bucket(Bucket=name)
    store = local_store(name, server.endpoint, fast_path=fast_path)
    assert store.uses_fast_path is fast_path
    return store


def _real_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    """The moto or SeaweedFS server a ``moto...``/``seaweedfs...`` parameter names, its
    credentials in the environment; the test is marked integration."""
    request.applymarker(pytest.mark.integration)
    server: LocalS3 = request.getfixturevalue(
        f"{'moto' if request.param.startswith('moto') else 'seaweed'}_server"
    )
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture(params=["memory", "moto", "seaweedfs", "moto-botocore", "seaweedfs-botocore"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    if request.param == "memory":
        request.applymarker(pytest.mark.unit)
        yield MemoryStore()
        return
    # the hot calls on the lean request path (fastpath.py), and everything on botocore
    server = _real_server(request, monkeypatch)
    yield _s3(server, fast_path=not request.param.endswith("-botocore"))


def test_put_head_get(store: ObjectStore) -> None:
    info = store.put("a/b.txt", b"hello world", {"mode": "33188"})
    head = store.head("a/b.txt")
    assert head.size == 11 and head.etag == info.etag
    assert dict(head.metadata or {}) == {"mode": "33188"}
    assert store.get_range("a/b.txt", 0, 5) == b"hello"
    assert store.get_range("a/b.txt", 6, 100) == b"world"
    assert store.get_range("a/b.txt", 11, 20) == b""  # past the end (S3: 416 InvalidRange)
    assert b"".join(store.open_range("a/b.txt", 2, 9)) == b"llo wor"
    with pytest.raises(PreconditionFailed):
        store.get_range("a/b.txt", 0, 5, etag='"0000"')
    with pytest.raises(ObjectNotFound):
        store.head("missing")
    with pytest.raises(ObjectNotFound):
        store.get_range("missing", 0, 1)


def test_list_delimiter_and_pages(store: ObjectStore) -> None:
    for key in ["d/1", "d/2", "d/3", "d/sub/x", "d/sub2/", "e"]:
        store.put(key, b"", {})
    page = list_all(store, "d/", "/")
    assert sorted(o.key for o in page.objects) == ["d/1", "d/2", "d/3"]
    assert sorted(page.prefixes) == ["d/sub/", "d/sub2/"]
    keys: list[str] = []
    token = None
    while True:
        p = store.list_page("d/", None, token, max_keys=2)
        assert len(p.objects) <= 2
        keys += [o.key for o in p.objects]
        token = p.next_token
        if token is None:
            break
    assert sorted(keys) == ["d/1", "d/2", "d/3", "d/sub/x", "d/sub2/"]


def test_multipart_invisible_until_complete(store: ObjectStore) -> None:
    upload = store.create_multipart("mp.bin", {"uid": "7"})
    e1 = store.upload_part("mp.bin", upload, 1, b"a" * (5 * MiB))
    e2 = store.upload_part("mp.bin", upload, 2, b"b" * 10)
    with pytest.raises(ObjectNotFound):
        store.head("mp.bin")
    store.complete_multipart("mp.bin", upload, [(1, e1), (2, e2)])
    head = store.head("mp.bin")
    assert head.size == 5 * MiB + 10 and dict(head.metadata or {}) == {"uid": "7"}
    aborted = store.create_multipart("gone.bin", {})
    store.upload_part("gone.bin", aborted, 1, b"x")
    store.abort_multipart("gone.bin", aborted)
    with pytest.raises(ObjectNotFound):
        store.head("gone.bin")


def test_copy_and_delete(store: ObjectStore) -> None:
    store.put("src", b"data", {"mode": "1"})
    store.copy("src", "dst", 4)
    assert store.get_range("dst", 0, 10) == b"data"
    assert dict(store.head("dst").metadata or {}) == {"mode": "1"}
    store.copy("dst", "dst", 4, {"mode": "2"})  # metadata replace in place
    assert dict(store.head("dst").metadata or {}) == {"mode": "2"}
    store.delete("src")
    store.delete("src")  # deleting a missing key succeeds
    with pytest.raises(ObjectNotFound):
        store.head("src")


def test_delete_many(store: ObjectStore) -> None:
    """Every key goes (missing ones too, as a delete of a missing key succeeds), one key or
    more than one DeleteObjects request holds; keys not named stay."""
    keys = [f"d/{i:04}" for i in range(1005)]
    for key in [*keys, "d/kept"]:
        store.put(key, b"x", {})
    store.delete_many([*keys, "d/never-existed"])
    store.delete_many(["d/never-existed"])
    assert [o.key for o in list_all(store, "d/").objects] == ["d/kept"]
    store.delete_many(["d/kept"])
    assert list_all(store, "d/").objects == []


@dataclass
class PartialDeletes:
    """A store whose batched deletes can be made to fail for some keys: the fault twin
    (FaultyStore over the memory store: per-key faults) or S3Store behind a fault proxy
    whose DeleteObjects answers list those keys in ``<Error>`` (the server keeps them)."""

    store: ObjectStore
    #: keys, S3 error code, and whether a key's own DeleteObject fails too
    fail: Callable[[set[str], str, bool], None]
    batches: Callable[[], int | None]  # DeleteObjects requests so far (None: not counted)


@pytest.fixture(params=["faulty-memory", "moto", "seaweedfs"])
def partial(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PartialDeletes]:
    if request.param == "faulty-memory":
        request.applymarker(pytest.mark.unit)
        faulty = FaultyStore(MemoryStore())

        def fail_memory(keys: set[str], code: str, persistent: bool) -> None:
            kind = AccessDenied if code == "AccessDenied" else StoreError
            for key in keys:
                error = kind(f"delete {key!r}: {code}", code=code)
                faulty.fail("delete", error, key=key, times=1_000_000 if persistent else 1)

        yield PartialDeletes(faulty, fail_memory, lambda: None)  # type: ignore[arg-type]
        return
    server = _real_server(request, monkeypatch)
    name = f"contract-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=name)
    proxy = FaultProxy(server.endpoint)
    batch = proxy.add(Rule("POST", "?delete", "delete-errors"))
    store = local_store(name, proxy.endpoint, max_attempts=2)

    def fail_s3(keys: set[str], code: str, persistent: bool) -> None:
        batch.keys, batch.code = frozenset(keys), code
        for key in keys if persistent else ():
            proxy.add(Rule("DELETE", f"/{name}/{key}", "status", status=500, code=code))

    try:
        yield PartialDeletes(store, fail_s3, lambda: batch.hits)
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("code", "persistent", "raised"),
    [
        ("AccessDenied", False, AccessDenied),  # not transient: not tried again
        ("InternalError", False, None),  # tried again key by key: gone
        ("InternalError", True, StoreError),  # failing again too: raised
    ],
)
def test_delete_many_that_fails_partway(
    partial: PartialDeletes, code: str, persistent: bool, raised: type[StoreError] | None
) -> None:
    """A DeleteObjects answer that lists some keys in ``<Error>`` (one in each of two
    batches): every other key goes, a missing one too, in two requests. A key that failed
    for good stays, and the first such failure (in key order) is raised once every key was
    tried; a transient failure (S3's per-key InternalError) is tried again as a DeleteObject
    of its own, so it counts only if that fails too."""
    store = partial.store
    keys = [f"d/{i:04}" for i in range(1005)]
    for key in [*keys, "d/kept"]:
        store.put(key, b"x", {})
    failing = {"d/0003", "d/1002"}
    partial.fail(failing, code, persistent)
    if raised is None:
        store.delete_many([*keys, "d/never-existed"])
        assert [o.key for o in list_all(store, "d/").objects] == ["d/kept"]
    else:
        with pytest.raises(raised) as err:
            store.delete_many([*keys, "d/never-existed"])
        assert "d/0003" in str(err.value) and code in str(err.value)
        assert isinstance(err.value, AccessDenied) is (code == "AccessDenied")
        assert [o.key for o in list_all(store, "d/").objects] == [*sorted(failing), "d/kept"]
    assert partial.batches() in (None, 2)  # two requests for 1,006 keys


@pytest.mark.integration
@pytest.mark.parametrize("server_name", ["moto", "seaweed"])
def test_delete_many_without_delete_objects_goes_key_by_key_at_once(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, server_name: str
) -> None:
    """An endpoint that answers DeleteObjects with 501: the keys go as DeleteObjects of their
    own, several at once (24 DELETEs each held 0.5 s take about 1.5 s, not 12), with the same
    errors as one by one: every key is tried, the first failure in key order is raised."""
    server: LocalS3 = request.getfixturevalue(f"{server_name}_server")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    name = f"contract-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=name)
    proxy = FaultProxy(server.endpoint)
    try:
        store = local_store(name, proxy.endpoint, max_attempts=1)
        keys = [f"d/{i:02}" for i in range(24)]
        for key in [*keys, "d/kept"]:
            store.put(key, b"x", {})
        proxy.add(Rule("POST", "?delete", "status", status=501, code="NotImplemented"))
        proxy.add(Rule("DELETE", f"/{name}/d/07", "status", status=403, code="AccessDenied"))
        proxy.add(Rule("DELETE", f"/{name}/d/19", "status", status=403, code="AccessDenied"))
        held = proxy.add(Rule("DELETE", f"/{name}/d/", "stall", seconds=0.5))
        started = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            store.delete_many(keys)
        elapsed = time.monotonic() - started
        assert "d/07" in str(err.value)
        assert held.hits == 22  # every other key was tried
        assert [o.key for o in list_all(store, "d/").objects] == ["d/07", "d/19", "d/kept"]
        assert elapsed < 6, f"{elapsed:.1f} s: the keys went one after another"
    finally:
        proxy.close()


@pytest.mark.unit
def test_key_by_key_deletes_of_concurrent_calls_share_one_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys deleted one by one run in the store's one pool of ``DELETE_CONCURRENCY`` threads
    however many ``delete_many`` calls run at once. Review: each call made a pool of its own,
    so the metadata calls of directory renames on an endpoint without DeleteObjects (16 at
    once by default, 256 with ``--max-threads 256``) could start 8 threads each, which the
    FUSE server's RLIMIT_AS bound counts once (``OTHER_THREADS``)."""
    store = local_store("bucket-a", "http://127.0.0.1:9", fast_path=False)
    store._batch_deletes = False  # as after the endpoint's 501
    lock = threading.Lock()
    running: list[int] = [0, 0]  # now, most
    threads: set[str] = set()

    def delete(key: str) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    monkeypatch.setattr(store, "delete", delete)
    callers = [
        threading.Thread(target=store.delete_many, args=([f"d{i}/{k}" for k in range(8)],))
        for i in range(4)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert running[1] <= s3.DELETE_CONCURRENCY, "deletes at once"
    assert len(threads) <= s3.DELETE_CONCURRENCY, "delete threads"


def test_general_purpose_has_no_rename_or_append(store: ObjectStore) -> None:
    store.put("r", b"1", {})
    with pytest.raises(NotSupported):
        store.rename("r", "s")
    with pytest.raises(NotSupported):
        store.append("r", 1, b"2")


def test_missing_bucket(moto_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    store = local_store("nope-not-here", moto_server.endpoint)
    with pytest.raises(BucketNotFound):
        store.check_bucket("")
    mem = MemoryStore()
    mem.exists = False
    with pytest.raises(BucketNotFound):
        mem.check_bucket("")


ODD_KEYS = [
    "odd/ünïcødé ☃.txt",
    "odd/a&b<c>'\"d.txt",
    "odd/plus+sign and space",
    "odd/percent%20literal%zz",
    "odd/question?mark#hash=eq;semi",
    "odd/tilde~star*paren()",
    "odd/dot/.hidden..x",
]  # no "." / ".." path segments: SeaweedFS refuses those keys (InvalidRequest) on any client


def test_odd_keys_round_trip_and_list(store: ObjectStore) -> None:
    """Keys that need URL- and XML-encoding come back byte for byte from every call."""
    for i, key in enumerate(ODD_KEYS):
        store.put(key, str(i).encode(), {"n": str(i)})
    for i, key in enumerate(ODD_KEYS):
        head = store.head(key)
        assert head.size == len(str(i)) and dict(head.metadata or {}) == {"n": str(i)}
        assert store.get_range(key, 0, 10) == str(i).encode()
    page = list_all(store, "odd/", "/")
    direct = sorted(k for k in ODD_KEYS if "/" not in k[len("odd/") :])
    assert sorted(o.key for o in page.objects) == direct
    assert sorted(page.prefixes) == ["odd/dot/"]
    everything = list_all(store, "odd/")
    assert sorted(o.key for o in everything.objects) == sorted(ODD_KEYS)
    store.copy(ODD_KEYS[1], ODD_KEYS[1] + ".copy", 1)
    assert store.get_range(ODD_KEYS[1] + ".copy", 0, 10) == b"1"
    for key in ODD_KEYS:
        store.delete(key)
    assert [o.key for o in list_all(store, "odd/").objects] == [ODD_KEYS[1] + ".copy"]


def test_server_pages_are_read_flat(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean path reads this server's ListObjectsV2 pages (odd keys, common prefixes,
    continuation tokens) with the flat reader, which agrees with ElementTree on each."""
    if not getattr(store, "uses_fast_path", False):
        pytest.skip("only the lean request path reads the XML itself")
    for i, key in enumerate(ODD_KEYS):
        store.put(key, str(i).encode(), {})
    pages: list[bytes] = []
    flat_reader = s3list._parse_list_flat

    def reading(data: bytes) -> s3list.Listed | None:
        pages.append(data)
        return flat_reader(data)

    monkeypatch.setattr(s3list, "_parse_list_flat", reading)
    for delimiter in ("/", None):
        token, keys = None, []
        while True:
            page = store.list_page("odd/", delimiter, token, 2)
            keys += [o.key for o in page.objects] + list(page.prefixes)
            if not (token := page.next_token):
                break
        assert sorted(keys) == sorted(
            ODD_KEYS if delimiter is None else [*ODD_KEYS[:-1], "odd/dot/"]
        )
    assert len(pages) >= 6
    for data in pages:
        flat = flat_reader(data)
        assert flat is not None, data[:300]
        assert flat == s3list._parse_list_tree(data)
    for key in ODD_KEYS:
        store.delete(key)


def test_leading_and_double_slash_keys(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["store"].startswith("seaweedfs"):
        pytest.skip("SeaweedFS's filer collapses empty path segments in keys (on any client)")
    for key in ("/rooted", "a//b"):
        store.put(key, b"r", {})
        assert store.head(key).size == 1
        assert store.get_range(key, 0, 1) == b"r"
    assert [o.key for o in list_all(store, "/").objects] == ["/rooted"]
    assert list_all(store, "a/", "/").prefixes == ["a//"]
    for key in ("/rooted", "a//b"):
        store.delete(key)
        with pytest.raises(ObjectNotFound):
            store.head(key)


def test_listing_continues_across_many_pages(store: ObjectStore) -> None:
    keys = sorted(f"many/{i:03d}+&ü" for i in range(23))
    for key in keys:
        store.put(key, b"", {})
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = store.list_page("many/", "/", token, max_keys=5)
        pages += 1
        seen += [o.key for o in page.objects]
        token = page.next_token
        if token is None:
            break
    assert sorted(seen) == keys and len(seen) == len(set(seen))
    assert pages == 5
