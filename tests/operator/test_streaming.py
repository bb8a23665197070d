"""The copy engine's memory rule on the thread path (issue 17: 6.26 MB objects local -> S3
peaked at 489 MiB, each of 64 workers holding a whole object).

SeaweedFS on loopback (it enforces If-Match, so a changed source is caught): uploads are
sent from the file and downloads written as they arrive (never an object or part in memory),
S3 -> S3 streamed copies hold at most ``buffer_bytes`` across all workers, and the
source-changed rule still holds on each of these paths. Every object is above
``FAST_STREAM_MAX``, so the thread path is what is tested: through botocore, and for downloads
also through fasts3's streamed GET (``fast=True``: one reused buffer per thread).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator.locations import LocalLocation, RawEntry, S3Location, SourceObject
from zonemount_operator.transfer import (
    FAST_STREAM_MAX,
    CopyOptions,
    MiB,
    attach_fast,
    copy,
    s3_client,
)

from tests.operator.operator_testlib import s3_digests, tree_digests, write_tree

pytestmark = pytest.mark.integration

SIZES = {"a": 2 * MiB + 1, "b/c": 3 * MiB, "d": 11 * MiB + 5, "e": 0}  # d: 3 parts of 5 MiB
OPTIONS = CopyOptions(concurrency=8, part_size=5 * MiB, skip_existing=False, fast=False)


@pytest.fixture
def weed(seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in seaweed_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_client(seaweed_server.endpoint, seaweed_server.region, 8)


def _bucket(client: Any) -> str:
    name = f"st-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=name)
    return name


def _tree(root: Path) -> dict[str, str]:
    return write_tree(root, SIZES, os.urandom)


class NoWholeReads(LocalLocation):
    """A local source that fails if the engine reads an object (or part) into memory."""

    def read(self, rel: str, start: Any = None, end: Any = None, etag: str = "") -> bytes:
        raise AssertionError(f"read {rel} {start}-{end} into memory")


class NoWholeGets(S3Location):
    """An S3 source that fails if the engine reads an object (or part) into memory."""

    def read(self, rel: str, start: Any = None, end: Any = None, etag: str = "") -> bytes:
        raise AssertionError(f"read {rel} {start}-{end} into memory")


class LeanGetsOnly(NoWholeGets):
    """... and if a download takes botocore's streaming GET instead of fasts3's."""

    def chunks(self, rel: str, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        raise AssertionError(f"botocore GET of {rel}")


def _downloading(client: Any, bucket: str, prefix: str, fast: bool) -> S3Location:
    if not fast:
        return NoWholeGets(client, bucket, prefix)
    source = LeanGetsOnly(client, bucket, prefix)
    attach_fast(source, botocore.session.get_session().get_credentials())
    assert source.fast is not None
    return source


@pytest.mark.parametrize("fast", [False, True], ids=["botocore", "fasts3"])
def test_uploads_stream_from_the_file_and_downloads_to_it(
    weed: Any, tmp_path: Path, fast: bool
) -> None:
    assert min(s for s in SIZES.values() if s) > FAST_STREAM_MAX
    digests = _tree(tmp_path / "src")
    bucket = _bucket(weed)
    up = copy(NoWholeReads(tmp_path / "src"), S3Location(weed, bucket, "up/"), OPTIONS)
    assert (up.objects_copied, up.objects_failed, up.first_error) == (len(SIZES), 0, None)
    assert s3_digests(weed, bucket, "up/") == digests
    # ETags are the server's MD5 of what arrived: a single PUT's is the file's MD5
    head = weed.head_object(Bucket=bucket, Key="up/a")
    md5 = hashlib.md5((tmp_path / "src" / "a").read_bytes()).hexdigest()
    assert head["ETag"].strip('"') == md5

    source = _downloading(weed, bucket, "up/", fast)
    options = dataclasses.replace(OPTIONS, fast=fast)
    down = copy(source, LocalLocation(tmp_path / "down"), options)
    assert (down.objects_copied, down.objects_failed, down.first_error) == (len(SIZES), 0, None)
    assert tree_digests(tmp_path / "down") == digests  # and no temporary files left


def test_streamed_s3_to_s3_holds_at_most_buffer_bytes(
    weed: Any, seaweed_server: LocalS3, tmp_path: Path
) -> None:
    """Two endpoints (no server-side copy): bytes in memory at once stay within the budget,
    whatever the concurrency; a part or object larger than the budget still goes through."""
    bucket = _bucket(weed)
    sizes = {f"k{i:02d}": 1_500_000 for i in range(12)} | {"big": 11 * MiB}
    payloads = {k: os.urandom(n) for k, n in sizes.items()}
    for key, data in payloads.items():
        weed.put_object(Bucket=bucket, Key=f"in/{key}", Body=data)
    lock, holding, peak = threading.Lock(), [0], [0]

    class Counting(S3Location):
        def read(self, rel: str, start: Any = None, end: Any = None, etag: str = "") -> bytes:
            data = super().read(rel, start, end, etag)
            with lock:
                holding[0] += len(data)
                peak[0] = max(peak[0], holding[0])
            return data

    class Releasing(S3Location):
        def put(self, rel: str, data: Any, src: SourceObject) -> None:
            try:
                super().put(rel, data, src)
            finally:
                with lock:
                    holding[0] -= len(data)

        def write_part(self, rel: str, upload: Any, number: int, offset: int, data: Any) -> Any:
            try:
                return super().write_part(rel, upload, number, offset, data)
            finally:
                with lock:
                    holding[0] -= len(data)

    other = s3_client(seaweed_server.endpoint.replace("127.0.0.1", "localhost"), None, 8)
    budget = 5 * MiB
    options = CopyOptions(
        concurrency=16, part_size=5 * MiB, skip_existing=False, fast=False, buffer_bytes=budget
    )
    result = copy(Counting(weed, bucket, "in/"), Releasing(other, bucket, "out/"), options)
    assert (result.objects_copied, result.objects_failed) == (len(sizes), 0), result.first_error
    assert 0 < peak[0] <= budget, peak[0]
    assert holding[0] == 0
    assert s3_digests(weed, bucket, "out/") == {
        k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()
    }


class Stale(LocalLocation):
    """A local source whose listing was taken before the files changed."""

    def __init__(self, root: Path, listing: list[SourceObject]) -> None:
        super().__init__(root)
        self._listing = listing

    def objects(self, pages: Iterator[list[RawEntry]] | None = None) -> Iterator[SourceObject]:
        del pages
        return iter(self._listing)


@pytest.mark.parametrize("name", ["a", "d"], ids=["single-put", "multipart"])
@pytest.mark.parametrize("change", ["shrunk", "grown"])
def test_a_local_file_changed_after_listing_is_reported_not_uploaded(
    weed: Any, tmp_path: Path, name: str, change: str
) -> None:
    _tree(tmp_path / "src")
    listing = list(LocalLocation(tmp_path / "src").objects())
    path = tmp_path / "src" / name
    if change == "shrunk":
        os.truncate(path, SIZES[name] - 1)
    else:
        with open(path, "ab") as handle:
            handle.write(b"more")
    bucket = _bucket(weed)
    result = copy(Stale(tmp_path / "src", listing), S3Location(weed, bucket, "up/"), OPTIONS)
    assert (result.objects_copied, result.objects_failed, result.objects_changed) == (
        len(SIZES) - 1,
        1,
        1,
    )
    assert result.first_error is not None and f"{name}: changed while being copied" in (
        result.first_error
    )
    keys = {o["Key"] for o in weed.list_objects_v2(Bucket=bucket, Prefix="up/")["Contents"]}
    assert f"up/{name}" not in keys
    assert weed.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("fast", [False, True], ids=["botocore", "fasts3"])
@pytest.mark.parametrize("name", ["a", "d"], ids=["single-get", "ranged-gets"])
def test_an_s3_object_changed_after_listing_is_not_written_locally(
    weed: Any, tmp_path: Path, name: str, fast: bool
) -> None:
    bucket = _bucket(weed)
    for rel, size in SIZES.items():
        weed.put_object(Bucket=bucket, Key=f"in/{rel}", Body=os.urandom(size))
    source = S3Location(weed, bucket, "in/")
    listing = list(source.objects())
    weed.put_object(Bucket=bucket, Key=f"in/{name}", Body=os.urandom(SIZES[name]))  # new ETag

    class StaleS3(LeanGetsOnly if fast else S3Location):  # type: ignore[misc]
        def objects(self, pages: Any = None) -> Iterator[SourceObject]:
            return iter(listing)

    stale = StaleS3(weed, bucket, "in/")
    if fast:
        attach_fast(stale, botocore.session.get_session().get_credentials())
    options = dataclasses.replace(OPTIONS, fast=fast)
    result = copy(stale, LocalLocation(tmp_path / "down"), options)
    assert (result.objects_copied, result.objects_failed, result.objects_changed) == (
        len(SIZES) - 1,
        1,
        1,
    )
    files = {p.name for p in (tmp_path / "down").rglob("*") if p.is_file()}
    assert name not in files and not any(".zm-" in f for f in files)


def test_a_kept_streaming_connection_the_server_closed_is_replaced(weed: Any) -> None:
    """fasts3 keeps each thread's streaming connection for its next GET; one the server
    closed meanwhile is replaced without failing the GET (nothing had been received)."""
    bucket = _bucket(weed)
    blobs = {name: os.urandom(300_000) for name in ("x", "y")}
    for name, data in blobs.items():
        weed.put_object(Bucket=bucket, Key=name, Body=data)
    source = S3Location(weed, bucket, "")
    attach_fast(source, botocore.session.get_session().get_credentials())
    fast = source.fast
    assert fast is not None
    assert b"".join(bytes(c) for c in fast.chunks(bucket, "x")) == blobs["x"]
    conn = fast._local.conn
    assert conn.sock is not None  # kept after a body read to its end
    conn.sock.shutdown(__import__("socket").SHUT_RDWR)  # as if the server had closed it
    assert b"".join(bytes(c) for c in fast.chunks(bucket, "y", rng=(5, 99))) == blobs["y"][5:100]
