"""Bulk copy engine: ``s3://src/prefix/`` -> ``s3://dst/prefix/`` with many parallel streams.

Used by the S3ExpressBucket import (progress lands in the CR status) and by
``zonemount cp`` / ``zonemount sync`` (progress bar). Strategy per object:

* same endpoint (one S3 service): server-side ``CopyObject``; objects at or above
  ``multipart_threshold`` use multipart ``UploadPartCopy`` with parts copied in parallel;
* different endpoints: stream ``GetObject`` -> ``PutObject``; objects of at least one part
  size go multipart with ranged GETs, so a worker never holds more than one part in memory.

Resumability: a destination object is *up to date* when its size equals the source's and
either the ETags match or it is not older than the source (ETags differ legitimately:
multipart layouts, SSE-KMS, directory buckets). Up-to-date objects are skipped, so a run
interrupted at any point is resumed by running it again; half-copied objects never exist
because PutObject/CopyObject/CompleteMultipartUpload are atomic and a failed multipart
upload is aborted. ``cp`` (``skip_existing=False``) copies everything regardless.

Retries: botocore's standard mode retries throttling and 5xx per request; on top of that
each object is retried ``retries`` times with full-jitter exponential backoff. Objects that
still fail are counted in ``Progress.objects_failed`` with the first error kept.

Concurrency rules: the listing runs in the caller's thread; object copies run in an object
pool (``concurrency`` threads); parts of large objects run in a separate part pool so an
object worker waiting on its parts can never starve them. ``Progress`` is updated under its
lock; ``on_progress`` is called from a reporter thread at most every ``progress_interval``
seconds and once at the end, always with a snapshot (never the live object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import botocore.exceptions

from zonemount_operator.names import S3Url

MiB = 1024 * 1024
MAX_PARTS = 10_000


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

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass(frozen=True)
class SourceObject:
    key: str
    size: int
    etag: str
    last_modified: float


@dataclass
class CopyOptions:
    concurrency: int = 64
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    skip_existing: bool = True
    retries: int = 4
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    progress_interval: float = 0.5


class CopyError(RuntimeError):
    """Some objects could not be copied after retries (the message names the first)."""


def _list(client: Any, url: S3Url) -> Iterator[SourceObject]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=url.bucket, Prefix=url.prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/") and item["Size"] == 0 and item["Key"] == url.prefix:
                continue
            yield SourceObject(
                key=item["Key"],
                size=int(item["Size"]),
                etag=str(item.get("ETag", "")).strip('"'),
                last_modified=item["LastModified"].timestamp() if "LastModified" in item else 0.0,
            )


def up_to_date(src: SourceObject, dst: SourceObject | None) -> bool:
    """The resumability rule (see the module docstring)."""
    if dst is None or dst.size != src.size:
        return False
    return dst.etag == src.etag or dst.last_modified >= src.last_modified


def _same_endpoint(a: Any, b: Any) -> bool:
    return bool(a.meta.endpoint_url == b.meta.endpoint_url)


class BulkCopier:
    """One copy run between two prefixes (see the module docstring)."""

    def __init__(
        self,
        src_client: Any,
        src: S3Url,
        dst_client: Any,
        dst: S3Url,
        options: CopyOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.src_client = src_client
        self.dst_client = dst_client
        self.src = src
        self.dst = dst
        self.options = options or CopyOptions()
        self.on_progress = on_progress
        self.stop = stop or threading.Event()
        self.progress = Progress()
        self.server_side = _same_endpoint(src_client, dst_client)
        self._parts = ThreadPoolExecutor(
            max_workers=max(4, self.options.concurrency), thread_name_prefix="zm-part"
        )

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Progress:
        """Copy everything; returns the final snapshot (raises nothing for per-object errors)."""
        done = threading.Event()
        reporter = threading.Thread(
            target=self._report, args=(done,), daemon=True, name="zm-progress"
        )
        reporter.start()
        try:
            existing: dict[str, SourceObject] = {}
            if self.options.skip_existing:
                existing = {o.key: o for o in _list(self.dst_client, self.dst)}
            with ThreadPoolExecutor(
                max_workers=self.options.concurrency, thread_name_prefix="zm-copy"
            ) as pool:
                pending: set[Future[None]] = set()
                # At most 4 x concurrency objects queued: listing millions of keys must not
                # queue millions of work items (the listing waits for free slots instead).
                slots = threading.BoundedSemaphore(self.options.concurrency * 4)
                for obj in _list(self.src_client, self.src):
                    if self.stop.is_set():
                        break
                    self.progress.add(objects_total=1, bytes_total=obj.size)
                    dst_key = self.dst.prefix + obj.key[len(self.src.prefix) :]
                    if self.options.skip_existing and up_to_date(obj, existing.get(dst_key)):
                        self.progress.add(objects_skipped=1, bytes_skipped=obj.size)
                        continue
                    while not slots.acquire(timeout=0.2):
                        if self.stop.is_set():
                            break
                    if self.stop.is_set():
                        break
                    future = pool.submit(self._copy_with_retries, obj, dst_key)
                    future.add_done_callback(lambda _: slots.release())
                    pending.add(future)
                    if len(pending) >= self.options.concurrency * 8:
                        pending = {f for f in pending if not f.done()}
                with self.progress._lock:
                    self.progress.listing_done = True
                if self.stop.is_set():
                    for fut in pending:
                        fut.cancel()
        finally:
            done.set()
            reporter.join()
            self._parts.shutdown(wait=True, cancel_futures=True)
        final = self.progress.snapshot()
        if self.on_progress is not None:
            self.on_progress(final)
        return final

    def _report(self, done: threading.Event) -> None:
        while not done.wait(self.options.progress_interval):
            if self.on_progress is not None:
                self.on_progress(self.progress.snapshot())

    # -- one object ------------------------------------------------------------------------
    def _copy_with_retries(self, obj: SourceObject, dst_key: str) -> None:
        attempt = 0
        while True:
            if self.stop.is_set():
                return
            try:
                self._copy_one(obj, dst_key)
            except (
                botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError,
                OSError,
            ) as exc:
                attempt += 1
                if attempt > self.options.retries or _not_retryable(exc):
                    with self.progress._lock:
                        self.progress.objects_failed += 1
                        if self.progress.first_error is None:
                            self.progress.first_error = f"{obj.key}: {_describe(exc)}"
                    return
                cap = min(self.options.backoff_cap, self.options.backoff_base * 2**attempt)
                self.stop.wait(random.uniform(0, cap))  # noqa: S311 - jitter, not crypto
            else:
                self.progress.add(objects_copied=1, bytes_copied=obj.size)
                return

    def _copy_one(self, obj: SourceObject, dst_key: str) -> None:
        # Streamed copies hold a part in memory per worker: go multipart from one part size.
        threshold = self.options.multipart_threshold if self.server_side else self.options.part_size
        big = obj.size >= threshold
        if self.server_side and not big:
            self.dst_client.copy_object(
                Bucket=self.dst.bucket,
                Key=dst_key,
                CopySource={"Bucket": self.src.bucket, "Key": obj.key},
            )
        elif not big:
            body = self.src_client.get_object(Bucket=self.src.bucket, Key=obj.key)["Body"]
            data = body.read()
            self.dst_client.put_object(Bucket=self.dst.bucket, Key=dst_key, Body=data)
        else:
            self._multipart(obj, dst_key)

    def _multipart(self, obj: SourceObject, dst_key: str) -> None:
        part_size = max(self.options.part_size, -(-obj.size // MAX_PARTS), 5 * MiB)
        ranges = [
            (start, min(start + part_size, obj.size) - 1) for start in range(0, obj.size, part_size)
        ]
        upload = self.dst_client.create_multipart_upload(Bucket=self.dst.bucket, Key=dst_key)
        upload_id = upload["UploadId"]
        try:
            futures = [
                self._parts.submit(self._part, obj, dst_key, upload_id, n, rng)
                for n, rng in enumerate(ranges, start=1)
            ]
            parts = [f.result() for f in futures]
            self.dst_client.complete_multipart_upload(
                Bucket=self.dst.bucket,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(
                botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
            ):  # on failure the bucket's abort-incomplete-uploads lifecycle rule is the backstop
                self.dst_client.abort_multipart_upload(
                    Bucket=self.dst.bucket, Key=dst_key, UploadId=upload_id
                )
            raise

    def _part(
        self, obj: SourceObject, dst_key: str, upload_id: str, number: int, rng: tuple[int, int]
    ) -> dict[str, Any]:
        if self.stop.is_set():
            raise CopyError("stopped")
        byte_range = f"bytes={rng[0]}-{rng[1]}"
        if self.server_side:
            resp = self.dst_client.upload_part_copy(
                Bucket=self.dst.bucket,
                Key=dst_key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.src.bucket, "Key": obj.key},
                CopySourceRange=byte_range,
            )
            etag = resp["CopyPartResult"]["ETag"]
        else:
            data = self.src_client.get_object(
                Bucket=self.src.bucket, Key=obj.key, Range=byte_range
            )["Body"].read()
            resp = self.dst_client.upload_part(
                Bucket=self.dst.bucket,
                Key=dst_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
            etag = resp["ETag"]
        return {"PartNumber": number, "ETag": etag}


NOT_RETRYABLE = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "NoSuchKey",
        "InvalidObjectState",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    }
)


def _not_retryable(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in NOT_RETRYABLE
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


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
    """Run one :class:`BulkCopier`; the returned snapshot says what happened."""
    return BulkCopier(
        src_client, src, dst_client, dst, options, on_progress=on_progress, stop=stop
    ).run()


def s3_client(endpoint_url: str | None, region: str | None, concurrency: int = 64) -> Any:
    """A boto3 S3 client sized for ``concurrency`` streams (path-style on custom endpoints)."""
    import boto3
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
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
