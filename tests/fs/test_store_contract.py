"""The ObjectStore contract, run against every implementation.

The in-memory store (unit tests' stand-in) and the botocore store against real S3 servers on
loopback (moto; SeaweedFS) must behave the same for everything the filesystem relies on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_fs.errors import BucketNotFound, NotSupported, ObjectNotFound, PreconditionFailed
from zonemount_fs.store.base import ObjectStore, list_all
from zonemount_fs.store.memory import MemoryStore
from zonemount_fs.store.s3 import S3Settings, S3Store

MiB = 1024 * 1024


def _s3(server: LocalS3) -> S3Store:
    name = f"contract-{uuid.uuid4().hex[:10]}"
    client: Any = server.client()
    client.create_bucket(Bucket=name)
    return S3Store(
        S3Settings(
            bucket=name, endpoint_url=server.endpoint, region="us-east-1", force_path_style=True
        )
    )


@pytest.fixture(params=["memory", "moto", "seaweedfs"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    if request.param == "memory":
        request.applymarker(pytest.mark.unit)
        yield MemoryStore()
        return
    request.applymarker(pytest.mark.integration)
    server: LocalS3 = request.getfixturevalue(
        f"{'moto' if request.param == 'moto' else 'seaweed'}_server"
    )
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield _s3(server)


def test_put_head_get(store: ObjectStore) -> None:
    info = store.put("a/b.txt", b"hello world", {"mode": "33188"})
    head = store.head("a/b.txt")
    assert head.size == 11 and head.etag == info.etag
    assert dict(head.metadata or {}) == {"mode": "33188"}
    assert store.get_range("a/b.txt", 0, 5) == b"hello"
    assert store.get_range("a/b.txt", 6, 100) == b"world"
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


def test_general_purpose_has_no_rename_or_append(store: ObjectStore) -> None:
    store.put("r", b"1", {})
    with pytest.raises(NotSupported):
        store.rename("r", "s")
    with pytest.raises(NotSupported):
        store.append("r", 1, b"2")


def test_missing_bucket(moto_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    store = S3Store(
        S3Settings(
            bucket="nope-not-here",
            endpoint_url=moto_server.endpoint,
            region="us-east-1",
            force_path_style=True,
        )
    )
    with pytest.raises(BucketNotFound):
        store.check_bucket("")
    mem = MemoryStore()
    mem.exists = False
    with pytest.raises(BucketNotFound):
        mem.check_bucket("")
