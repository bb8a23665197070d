"""The engine's lean path (fasts3) and the source-changed / throttling rules.

SeaweedFS on loopback: unlike moto it enforces ``x-amz-copy-source-if-match``, so a source
that changes between the listing and the copy is caught on every path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import botocore.session
import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator.fasts3 import _client_error, eligible, parse_list_page
from zonemount_operator.locations import RawEntry, S3Location, SourceObject
from zonemount_operator.transfer import CopyOptions, attach_fast, copy, s3_client

pytestmark = pytest.mark.integration


@pytest.fixture
def weed(seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in seaweed_server.env().items():
        monkeypatch.setenv(key, value)
    client = s3_client(seaweed_server.endpoint, seaweed_server.region, 8)
    yield client


def _bucket(client: Any) -> str:
    name = f"fp-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=name)
    return name


class Stale(S3Location):
    """A source whose listing was taken before the objects changed."""

    def __init__(self, base: S3Location, listing: list[SourceObject]) -> None:
        super().__init__(base.client, base.bucket, base.base, fast=base.fast)
        self._listing = listing

    def objects(self, pages: Iterator[list[RawEntry]] | None = None) -> Iterator[SourceObject]:
        del pages
        return iter(self._listing)


@pytest.mark.parametrize("fast", [True, False], ids=["fasts3", "botocore"])
@pytest.mark.parametrize("server_side", [True, False], ids=["copy-object", "streamed"])
def test_a_source_changed_after_listing_is_reported_not_copied(
    weed: Any, seaweed_server: LocalS3, fast: bool, server_side: bool
) -> None:
    bucket = _bucket(weed)
    for key in ("in/a", "in/b", "in/c"):
        weed.put_object(Bucket=bucket, Key=key, Body=b"old!")
    source = S3Location(weed, bucket, "in/")
    listing = list(source.objects())
    weed.put_object(Bucket=bucket, Key="in/b", Body=b"new!")  # same size, new ETag
    other = weed if server_side else s3_client(
        seaweed_server.endpoint.replace("127.0.0.1", "localhost"), seaweed_server.region, 8
    )  # fmt: skip
    dest = S3Location(other, bucket, "out/")
    creds = botocore.session.get_session().get_credentials()
    if fast:
        attach_fast(source, creds)
        attach_fast(dest, creds)
        assert source.fast is not None and dest.fast is not None
    result = copy(Stale(source, listing), dest, CopyOptions(concurrency=4, skip_existing=False))
    assert result.objects_copied == 2 and result.objects_failed == 1
    assert result.objects_changed == 1
    assert result.first_error is not None and "in/b: changed while being copied" in (
        result.first_error
    )
    keys = [o["Key"] for o in weed.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys == ["out/a", "out/c"]


def test_fast_listing_matches_botocore_listing(weed: Any) -> None:
    bucket = _bucket(weed)
    keys = ["p/a b", "p/ü/x", "p/%41", "p/z+1", *(f"p/n{i:04d}" for i in range(1200))]
    for key in keys:
        weed.put_object(Bucket=bucket, Key=key, Body=key.encode())
    slow = S3Location(weed, bucket, "p/")
    fast = S3Location(weed, bucket, "p/")
    attach_fast(fast, botocore.session.get_session().get_credentials())
    from zonemount_operator.transfer import BulkCopier

    copier = BulkCopier(fast, fast)
    assert copier._fast
    got = list(copier._listing(fast))
    assert got == list(slow.objects())
    assert len(got) == len(keys)


@pytest.mark.unit
def test_errors_keep_botocore_shape() -> None:
    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    exc = _client_error(503, body, "PutObject", {})
    assert isinstance(exc, botocore.exceptions.ClientError)
    assert exc.response["Error"] == {"Code": "SlowDown", "Message": "Reduce your request rate."}
    assert _client_error(404, b"", "GetObject", {}).response["Error"]["Code"] == "NoSuchKey"


@pytest.mark.unit
def test_directory_buckets_stay_on_botocore() -> None:
    assert not eligible("base--use1-az4--x-s3", "http://127.0.0.1:1", "us-east-1")
    assert eligible("plain", "http://127.0.0.1:1", None)
    assert not eligible("plain", None, "us-east-1")  # AWS: botocore (redirects, hosting)


@pytest.mark.unit
def test_list_page_parse_decodes_url_encoded_keys() -> None:
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    body = (
        f'<ListBucketResult xmlns="{ns}"><EncodingType>url</EncodingType>'
        "<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>"
        "<Contents><Key>a%20b/%C3%BC</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>"
        '<ETag>"e1"</ETag><Size>7</Size></Contents></ListBucketResult>'
    ).encode()
    rows, token = parse_list_page(body)
    assert token == "t1"
    assert rows == [("a b/ü", 7, "e1", 1767323045.0)]


def test_lean_path_holds_at_most_concurrency_objects(
    weed: Any, seaweed_server: LocalS3, tmp_path: Any
) -> None:
    """Regression (event-loop era): every queued coroutine (4 x concurrency) read its object
    at once, so 100 x 6.26 MB local -> S3 peaked at 800 MiB; now one object per copy thread."""
    from zonemount_operator.locations import LocalLocation

    bucket = _bucket(weed)
    for i in range(24):
        (tmp_path / f"f{i:02d}").write_bytes(os.urandom(200_000))
    holding, peak = [0], [0]
    lock = threading.Lock()

    class Counting(LocalLocation):
        def read(self, rel: str, start: Any = None, end: Any = None, etag: str = "") -> bytes:
            with lock:
                holding[0] += 1
                peak[0] = max(peak[0], holding[0])
            return super().read(rel, start, end, etag)

    dest = S3Location(weed, bucket, "in/")
    attach_fast(dest, botocore.session.get_session().get_credentials())
    assert dest.fast is not None
    real_put = dest.fast.put

    def put(*args: Any) -> None:
        try:
            real_put(*args)
        finally:
            with lock:
                holding[0] -= 1

    dest.fast.put = put  # type: ignore[method-assign]
    result = copy(Counting(tmp_path), dest, CopyOptions(concurrency=3, skip_existing=False))
    assert result.objects_copied == 24
    assert 1 <= peak[0] <= 3


def test_a_run_on_the_lean_path_creates_no_botocore_client(
    weed: Any, seaweed_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a botocore client is ~0.1 s of CPU at start-up (a tenth of a 100-object run):
    ``zonemount cp`` creates one only when a request needs it (here: a multipart copy)."""
    from zonemount_operator import transfer
    from zonemount_operator.cli import cp_main

    bucket = _bucket(weed)
    for i in range(5):
        weed.put_object(Bucket=bucket, Key=f"in/k{i}", Body=os.urandom(3000))
    created: list[Any] = []
    real = transfer.s3_client

    def counting(*args: Any, **kwargs: Any) -> Any:
        created.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer, "s3_client", counting)
    common = ["--endpoint-url", seaweed_server.endpoint, "--no-progress"]
    assert cp_main([f"s3://{bucket}/in/", f"s3://{bucket}/out/", *common]) == 0
    assert created == []
    assert len(weed.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]) == 5

    weed.put_object(Bucket=bucket, Key="big/x", Body=os.urandom(6 * 1024 * 1024))
    many = ["--multipart-threshold", "5", "--part-size", "5"]
    assert cp_main([f"s3://{bucket}/big/", f"s3://{bucket}/big2/", *common, *many]) == 0
    assert len(created) == 1  # UploadPartCopy is botocore's
    head = weed.head_object(Bucket=bucket, Key="big2/x")
    assert head["ContentLength"] == 6 * 1024 * 1024


@pytest.mark.unit
def test_lazy_client_answers_endpoint_and_region_like_the_real_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the CLI reads before any request (endpoint, region) needs no botocore client, and
    says what the client would say; anything else creates it once."""
    from zonemount_operator.transfer import lazy_s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    for region_env in ("eu-west-3", None):
        if region_env is None:
            monkeypatch.delenv("AWS_REGION", raising=False)
            monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
        else:
            monkeypatch.setenv("AWS_DEFAULT_REGION", region_env)
        session = botocore.session.get_session()
        lazy = lazy_s3_client("http://127.0.0.1:9", None, 4, session)
        real = s3_client("http://127.0.0.1:9", None, 4, session)
        assert lazy.meta.endpoint_url == real.meta.endpoint_url
        assert lazy.meta.region_name == real.meta.region_name
        assert (lazy._client is None) == (region_env is not None)  # no region: asked the client
        assert lazy.meta.config.s3["addressing_style"] == "path"
        assert lazy.client() is lazy.client()


@pytest.mark.parametrize("fast", [True, False], ids=["fasts3", "threads"])
def test_an_unexpected_error_fails_the_object_never_silently(
    weed: Any, tmp_path: Any, fast: bool
) -> None:
    """Regression: an exception outside the retry rules (here a ValueError from reading) was
    left in an unread future: the object was neither copied nor failed, and the run said
    "0 failed"."""
    from zonemount_operator.locations import FileRange, LocalLocation

    bucket = _bucket(weed)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 100)

    class Broken(LocalLocation):
        def read(self, rel: str, start: Any = None, end: Any = None, etag: str = "") -> bytes:
            if rel == "b":
                raise ValueError("unreadable b")
            return super().read(rel, start, end, etag)

        def open_range(self, rel: str, start: int, length: int, size: int) -> FileRange:
            if rel == "b":
                raise ValueError("unreadable b")
            return super().open_range(rel, start, length, size)

    dest = S3Location(weed, bucket, "in/")
    if fast:
        attach_fast(dest, botocore.session.get_session().get_credentials())
        assert dest.fast is not None
    result = copy(Broken(tmp_path), dest, CopyOptions(concurrency=2, skip_existing=False))
    assert (result.objects_copied, result.objects_failed) == (2, 1)
    assert result.first_error is not None and "unreadable b" in result.first_error
    keys = [o["Key"] for o in weed.list_objects_v2(Bucket=bucket, Prefix="in/")["Contents"]]
    assert keys == ["in/a", "in/c"]


def test_cp_imports_only_what_its_path_needs(weed: Any, seaweed_server: LocalS3) -> None:
    """Start-up is most of a short copy's cost (the gap to s5cmd on 100 x 6.26 MB S3 -> S3,
    and nearly all of a re-run over an up-to-date destination): ``zonemount cp
    --no-progress`` on the lean path with credentials in the environment loads no aiohttp,
    asyncio, yaml, rich or kopf (aiohttp and asyncio alone were ~0.3 s of CPU per run), and no
    botocore session or client (importing them and building the credential chain was
    ~0.2-0.4 s: a re-run of 100 objects took 0.26 s of CPU, 0.10 s without)."""
    import subprocess
    import sys

    bucket = _bucket(weed)
    for i in range(3):
        weed.put_object(Bucket=bucket, Key=f"in/k{i}", Body=b"x" * 100)
    heavy = ["aiohttp", "asyncio", "trio", "yaml", "rich", "kopf", "botocore.session"]
    heavy.append("botocore.client")  # trio alone is ~0.3 s to import
    code = (
        "import sys\n"
        "from zonemount_cli.main import main\n"
        f"rc = main(['cp', 's3://{bucket}/in/', 's3://{bucket}/out/', '--no-progress',"
        f" '--endpoint-url', '{seaweed_server.endpoint}'])\n"
        "assert rc == 0, rc\n"
        f"loaded = {set(heavy)!r} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert len(weed.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]) == 3


def test_cp_takes_credentials_from_botocores_chain_when_not_in_the_environment(
    weed: Any,
    seaweed_server: LocalS3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only static credentials in the environment skip botocore: a profile (here a shared
    credentials file; SSO, IRSA and instance roles alike) is botocore's chain, and the lean
    path signs with what it returns."""
    from zonemount_operator import cli

    bucket = _bucket(weed)
    weed.put_object(Bucket=bucket, Key="in/a", Body=b"profile")
    (tmp_path / "credentials").write_text(
        f"[bulk]\naws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "bulk")
    used: list[Any] = []
    real = cli._credentials
    monkeypatch.setattr(cli, "_credentials", lambda s: used.append(real(s)) or used[-1])
    common = ["--endpoint-url", seaweed_server.endpoint, "--no-progress"]
    assert cli.cp_main([f"s3://{bucket}/in/", f"s3://{bucket}/out/", *common]) == 0
    assert used and getattr(used[0], "method", "") == "shared-credentials-file"
    assert weed.get_object(Bucket=bucket, Key="out/a")["Body"].read() == b"profile"

    # a profile that does not exist: one line (it was a ProfileNotFound traceback)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert cli.cp_main([f"s3://{bucket}/in/", f"s3://{bucket}/out2/", *common]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "zonemount cp: AWS credentials: The config profile (bulk) could not be found"


@pytest.mark.unit
def test_the_lean_path_keeps_a_connection_per_copy_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the pool kept 64 idle connections whatever --concurrency said, so with
    more copy threads every extra request opened (and closed) a TCP connection."""
    from zonemount_operator.transfer import lazy_s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    session = botocore.session.get_session()
    client = lazy_s3_client("http://127.0.0.1:9", "us-east-1", 200, session)
    location = S3Location(client, "bucket", "p/")
    attach_fast(location, session.get_credentials(), 200)
    assert location.fast is not None and location.fast._pool.maxsize == 200
