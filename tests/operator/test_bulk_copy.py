"""The bulk copy engine against moto over loopback: every byte, resumability, failures."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from zonemount_cli.servers import LocalS3
from zonemount_operator.names import S3Url
from zonemount_operator.transfer import (
    CopyOptions,
    MiB,
    Progress,
    SourceObject,
    copy_prefix,
    s3_client,
    up_to_date,
)

from tests.operator.operator_testlib import aws_error, s3_digests

pytestmark = pytest.mark.integration


def client(server: LocalS3, endpoint: str | None = None, attempts: int = 3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint or server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"mode": "standard", "max_attempts": attempts}, max_pool_connections=32
        ),
    )


def seed(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Objects of many sizes, including empty, nested keys and two multipart-sized ones."""
    rng = __import__("random").Random(7)
    sizes = [0, 1, 17, 4096, 65_537, 300_000] * 3 + [6 * MiB + 3, 11 * MiB]
    blobs: dict[str, bytes] = {}
    for i, size in enumerate(sizes):
        key = f"{prefix}d{i % 3}/obj-{i:03d}.bin"
        blobs[key] = rng.randbytes(size)
        s3.put_object(Bucket=bucket, Key=key, Body=blobs[key])
    return blobs


OPTS = CopyOptions(
    concurrency=8, multipart_threshold=5 * MiB, part_size=5 * MiB, progress_interval=0.05
)


@pytest.mark.parametrize("server_side", [True, False], ids=["copy-object", "streamed"])
def test_every_byte_arrives(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str, server_side: bool
) -> None:
    src = client(moto_server)
    # A different endpoint spelling for the same server forces the streaming path.
    dst = (
        src
        if server_side
        else client(moto_server, moto_server.endpoint.replace("127.0.0.1", "localhost"))
    )
    blobs = seed(src, bucket, "in/")
    seen: list[Progress] = []
    result = copy_prefix(
        src, S3Url(bucket, "in/"), dst, S3Url(bucket, "out/x/"), OPTS, on_progress=seen.append
    )
    assert result.objects_copied == len(blobs) and result.objects_failed == 0
    assert result.bytes_copied == sum(map(len, blobs.values()))
    assert seen[-1].objects_done == len(blobs) and seen[-1].listing_done
    assert s3_digests(src, bucket, "out/x/") == s3_digests(src, bucket, "in/")
    assert src.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_interrupted_run_resumes_without_recopying(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str
) -> None:
    s3 = client(moto_server)
    blobs = seed(s3, bucket, "src/")
    stop = threading.Event()

    def interrupt(p: Progress) -> None:
        if p.objects_copied >= 5:
            stop.set()

    first = copy_prefix(
        s3,
        S3Url(bucket, "src/"),
        s3,
        S3Url(bucket, "dst/"),
        CopyOptions(
            concurrency=2, progress_interval=0.01, multipart_threshold=5 * MiB, part_size=5 * MiB
        ),
        on_progress=interrupt,
        stop=stop,
    )
    assert 5 <= first.objects_copied < len(blobs), first
    second = copy_prefix(s3, S3Url(bucket, "src/"), s3, S3Url(bucket, "dst/"), OPTS)
    assert second.objects_skipped == first.objects_copied
    assert second.objects_copied == len(blobs) - first.objects_copied
    assert s3_digests(s3, bucket, "dst/") == s3_digests(s3, bucket, "src/")
    third = copy_prefix(s3, S3Url(bucket, "src/"), s3, S3Url(bucket, "dst/"), OPTS)
    assert third.objects_copied == 0 and third.objects_skipped == len(blobs)
    # A changed source object (same size, new content) is copied again. S3 times have
    # one-second resolution: wait so the change is newer than the copies.
    time.sleep(1.1)
    s3.put_object(Bucket=bucket, Key="src/d0/obj-000.bin", Body=b"")
    s3.put_object(Bucket=bucket, Key="src/d1/obj-001.bin", Body=b"Z")
    fourth = copy_prefix(s3, S3Url(bucket, "src/"), s3, S3Url(bucket, "dst/"), OPTS)
    assert fourth.objects_copied >= 1
    assert s3_digests(s3, bucket, "dst/") == s3_digests(s3, bucket, "src/")


def test_failed_multipart_copy_is_counted_and_aborted(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str
) -> None:
    s3 = client(moto_server, attempts=1)
    s3.put_object(Bucket=bucket, Key="big/a", Body=os.urandom(6 * MiB))
    s3.put_object(Bucket=bucket, Key="big/b", Body=b"small")
    s3.meta.events.register("before-send.s3.UploadPartCopy", aws_error(500, "InternalError"))
    result = copy_prefix(
        s3,
        S3Url(bucket, "big/"),
        s3,
        S3Url(bucket, "copy/"),
        CopyOptions(
            concurrency=2,
            multipart_threshold=5 * MiB,
            part_size=5 * MiB,
            retries=1,
            backoff_base=0.01,
        ),
    )
    assert result.objects_failed == 1 and result.objects_copied == 1
    assert result.first_error is not None and result.first_error.startswith(
        f"s3://{bucket}/big/a: InternalError"
    )
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="copy/")["Contents"]]
    assert keys == ["copy/b"]


def test_access_denied_is_not_retried(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str
) -> None:
    s3 = client(moto_server, attempts=1)
    s3.put_object(Bucket=bucket, Key="p/a", Body=b"1")
    calls: list[int] = []
    deny = aws_error(403, "AccessDenied")

    def counting(request: Any, **kw: Any) -> Any:
        calls.append(1)
        return deny(request, **kw)

    s3.meta.events.register("before-send.s3.CopyObject", counting)
    result = copy_prefix(
        s3, S3Url(bucket, "p/"), s3, S3Url(bucket, "q/"), CopyOptions(retries=5, backoff_base=0.01)
    )
    assert result.objects_failed == 1 and len(calls) == 1


@pytest.mark.unit
def test_up_to_date_rule() -> None:
    src = SourceObject("k", 10, "abc", 100.0)
    assert not up_to_date(src, None)
    assert not up_to_date(src, SourceObject("k", 11, "abc", 200.0))
    assert up_to_date(src, SourceObject("k", 10, "abc", 50.0))  # same ETag
    assert up_to_date(src, SourceObject("k", 10, "other", 100.0))  # not older
    assert not up_to_date(src, SourceObject("k", 10, "other", 99.0))  # older, different


@pytest.mark.unit
def test_s3_client_uses_path_style_on_custom_endpoints() -> None:
    c = s3_client("http://127.0.0.1:1", "us-east-1", 8)
    assert c.meta.config.s3["addressing_style"] == "path"
    assert c.meta.config.max_pool_connections == 16


def test_throttling_is_retried_and_reported(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str
) -> None:
    """503 SlowDown is retried with backoff and counted (botocore retries some itself first;
    those it gives up on reach the engine)."""
    s3 = client(moto_server, attempts=1)
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"t/{i}", Body=b"x" * i)
    slow_down = aws_error(503, "SlowDown", "Reduce your request rate.")
    left = [3]

    def throttle(request: Any, **kw: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            return slow_down(request, **kw)
        return None

    s3.meta.events.register("before-send.s3.CopyObject", throttle)
    result = copy_prefix(
        s3,
        S3Url(bucket, "t/"),
        s3,
        S3Url(bucket, "u/"),
        CopyOptions(concurrency=1, retries=4, backoff_base=0.01),
    )
    assert (result.objects_copied, result.objects_failed) == (5, 0)
    assert left == [0] and result.throttled >= 1


def test_expired_credentials_stop_the_run_and_say_so(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str
) -> None:
    s3 = client(moto_server, attempts=1)
    for i in range(40):
        s3.put_object(Bucket=bucket, Key=f"e/{i:02d}", Body=b"x")
    copies = [0]
    expired = aws_error(400, "ExpiredToken", "The provided token has expired.")

    def expire_after_five(request: Any, **kw: Any) -> Any:
        copies[0] += 1
        return expired(request, **kw) if copies[0] > 5 else None

    s3.meta.events.register("before-send.s3.CopyObject", expire_after_five)
    result = copy_prefix(
        s3, S3Url(bucket, "e/"), s3, S3Url(bucket, "f/"), CopyOptions(concurrency=1, retries=3)
    )
    assert result.objects_copied == 5 and result.objects_failed == 1
    assert result.objects_done < 40  # stopped: not 34 more doomed attempts
    assert result.first_error is not None
    assert "ExpiredToken" in result.first_error and "fresh credentials" in result.first_error
