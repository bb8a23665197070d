"""The real ObjectStore on botocore.

Why botocore (in worker threads) rather than awscrt's S3 client: botocore already implements
everything the filesystem needs to be correct - SigV4, S3 Express One Zone session auth
(CreateSession with a session cache refreshed before expiry), the credential chain including
web identity (IRSA / pod identity), the ``standard`` retry mode with jittered exponential backoff
for throttling and 5xx - and it is thread safe, so parallelism comes from issuing many ranged
GETs / UploadParts from a thread pool, which is the same strategy awscrt uses internally.
The hot loop (body reads) runs in C (ssl/socket) with the GIL released.

The per-file calls (HeadObject, ListObjectsV2, PutObject, DeleteObject, ranged GetObject,
CopyObject) go through :mod:`.fastpath` instead where it applies (general-purpose buckets, no
proxy): the same signer, credentials, URL, retry policy and error mapping at a third of
botocore's CPU per request. It turns itself off on a redirect; ``fast_path=False`` (or
``ZONEMOUNT_S3_FAST_PATH=0``) keeps everything on botocore. Directory buckets stay on botocore
(CreateSession auth).

Invariants: every botocore/urllib3 exception is translated into a StoreError subclass here;
messages carry the operation, the key and the S3 error code, never credentials.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.session
import botocore.utils
import trio
from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from prometheus_client import Counter
from zonemount_contract.aws_errors import ErrorClass, classify
from zonemount_contract.s3client import create_client
from zonemount_contract.s3list import Listed

from ..errors import (
    AccessDenied,
    BucketNotFound,
    NotSupported,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from ..metrics import S3_ERRORS, S3_REQUESTS
from ..names import is_directory_bucket
from . import fastpath
from .base import DELETE_BATCH, ListPage, ObjectInfo, PutOptions
from .watchdog import WATCHDOG

T = TypeVar("T")
log = logging.getLogger(__name__)

#: DeleteObject calls at once where keys go one by one (no DeleteObjects, or keys to retry):
#: one pool of this many threads per store, however many ``delete_many`` calls run at once
#: (the FUSE server's thread count, ``zonemount_contract.mount_options.OTHER_THREADS``,
#: counts it once).
DELETE_CONCURRENCY = 8
MAX_COPY_PART = 5 * 1024**3  # CopyObject's limit; larger objects use UploadPartCopy
COPY_PART_SIZE = 512 * 1024**2
STREAM_PIECE = 1024 * 1024
FIRST_PIECE = 64 * 1024

_NOT_SUPPORTED = {"NotImplemented", "501", "MethodNotAllowed", "405", "InvalidRequest"}
# Set in the environment when talking to S3 servers that do not speak CreateSession
# (moto, SeaweedFS): directory-bucket requests are then signed with plain SigV4.
DISABLE_EXPRESS_ENV = "ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH"
#: Set to "0" to send every request through botocore (the fast path's A/B switch).
FAST_PATH_ENV = "ZONEMOUNT_S3_FAST_PATH"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    force_path_style: bool = False
    profile: str | None = None
    no_sign_request: bool = False
    max_connections: int = 64
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    #: Total seconds a GET's body may take (a server trickling bytes never trips the
    #: per-read timeout): past it the connection is shut down and the read fails.
    body_deadline: float = 120.0
    put: PutOptions = PutOptions()  # noqa: RUF009 - frozen dataclass default
    disable_express_session_auth: bool = False
    #: Hot calls on :mod:`.fastpath` where it applies (general-purpose buckets, no proxy).
    fast_path: bool = True


def _from_code(where: str, code: str, status: str, message: str) -> StoreError:
    """The StoreError of an S3 error answer (botocore's ClientError or the fast path's)."""
    msg = f"{where}: {code or status} {message}".strip()
    kind = classify(code, status)  # the one classifier shared with the CSI driver/operator
    if kind is ErrorClass.NO_SUCH_BUCKET:
        return BucketNotFound(msg, code=code)
    if kind is ErrorClass.NOT_FOUND and code != "NoSuchUpload":
        return ObjectNotFound(msg, code=code)
    if kind is ErrorClass.ACCESS_DENIED:
        return AccessDenied(msg, code=code)
    if code in {"PreconditionFailed", "412"} or status == "412":
        return PreconditionFailed(msg, code=code)
    if code in _NOT_SUPPORTED or status in {"501", "405"}:
        return NotSupported(msg, code=code)
    return StoreError(msg, code=code)


def _translate(op: str, key: str, exc: Exception) -> StoreError:
    where = f"{op} {key!r}" if key else op
    if isinstance(exc, fastpath.S3Error):
        return _from_code(where, exc.code, str(exc.status), exc.message)
    if isinstance(exc, fastpath.TransportError):
        return StoreUnavailable(f"{where}: {exc}: endpoint unreachable or slow")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return _from_code(where, code, status, str(err.get("Message", "")))
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{where}: no AWS credentials found", code="NoCredentials")
    if isinstance(exc, BotoConnectionError | ReadTimeoutError):
        return StoreUnavailable(f"{where}: {type(exc).__name__}: endpoint unreachable or slow")
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"{where}: {exc}")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _shut_down(body: Any) -> None:
    """Shut the socket under a streaming body down: a read blocked in it fails at once."""
    raw = getattr(body, "_raw_stream", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _info(key: str, resp: Mapping[str, Any]) -> ObjectInfo:
    last = resp.get("LastModified")
    return ObjectInfo(
        key=key,
        size=int(resp.get("ContentLength", resp.get("Size", 0))),
        etag=str(resp.get("ETag", "")),
        mtime=last.timestamp() if last is not None else 0.0,
        metadata=dict(resp.get("Metadata", {})),
        storage_class=resp.get("StorageClass"),
    )


def parse_timestamp(value: str) -> datetime.datetime:
    """botocore's timestamp parser, fast for the ISO 8601 times S3 lists (``...T..:..:..Z``);
    anything else (HTTP dates of HEAD, epoch numbers) goes to botocore's own parser."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


#: What every PUT (and copy) carries: the option, botocore's parameter, the header.
_PUT_FIELDS = (
    ("storage_class", "StorageClass", "x-amz-storage-class"),
    ("sse", "ServerSideEncryption", "x-amz-server-side-encryption"),
    ("sse_kms_key_id", "SSEKMSKeyId", "x-amz-server-side-encryption-aws-kms-key-id"),
)


# PutObject bodies up to this size are sent from the trio thread (the signature's SHA-256 of
# the body is computed there on plain HTTP: about 0.5 ms at this size).
NATIVE_PUT_MAX = 256 * 1024


class S3Store:
    """ObjectStore over one bucket, thread safe."""

    def __init__(
        self,
        settings: S3Settings,
        session: botocore.session.Session | None = None,
        *,
        requests: Counter = S3_REQUESTS,
        errors: Counter = S3_ERRORS,
    ) -> None:
        """``requests``/``errors`` count this store's calls (a second store - the shared
        cache bucket - passes its own counters, so the mount's S3 figures stay its own)."""
        self.settings = settings
        self._requests = requests
        self._errors = errors
        self._counted: dict[str, Any] = {}  # op -> its requests child (labels() costs a lock)
        self.bucket = settings.bucket
        self.is_directory_bucket = is_directory_bucket(settings.bucket)
        self._rename_supported: bool | None = None
        self._rename_probe = threading.Lock()
        self._batch_deletes = True  # False once the endpoint refused DeleteObjects (501)
        self._deleters: ThreadPoolExecutor | None = None  # key-by-key deletes, made at first
        self._deleters_made = threading.Lock()
        # A shared session keeps its loaded service models and resolved credentials: the
        # mount's quick bucket check and its real store then pay for them once.
        session = session or botocore.session.Session(profile=settings.profile)
        # ListObjectsV2 pages carry an ISO 8601 time per key; botocore's default parser
        # (dateutil) was half the CPU of listing a large directory.
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        secure = settings.endpoint_url is None or settings.endpoint_url.startswith("https://")
        self._client: Any = create_client(  # the contract's one factory, this mount's figures
            session=session,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            max_attempts=settings.max_attempts,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=settings.max_connections,
            path_style=settings.force_path_style,
            express_session_auth=not (
                settings.disable_express_session_auth or os.environ.get(DISABLE_EXPRESS_ENV) == "1"
            ),
            # Over TLS the body needs no SHA-256 in the signature (the hash would cost a CPU
            # core per GB/s); integrity comes from a CRC32 trailer checksum instead.
            s3={"payload_signing_enabled": False} if secure else None,
            # requests are built here, from typed values: botocore's per-call parameter
            # validation only costs CPU (about a tenth of a small request's)
            parameter_validation=False,
            signature_version=UNSIGNED if settings.no_sign_request else None,
            # Plain-http endpoints (local test servers) sign the payload hash anyway (SigV4
            # requires it without TLS) and may not accept trailing checksums.
            request_checksum_calculation="when_supported" if secure else "when_required",
            response_checksum_validation="when_required",
        )
        self._fast: fastpath.FastPath | None = None
        if settings.fast_path and os.environ.get(FAST_PATH_ENV, "1") != "0":
            self._fast = fastpath.for_client(
                self._client,
                session,
                settings.bucket,
                is_directory_bucket=self.is_directory_bucket,
                unsigned=settings.no_sign_request,
                max_connections=settings.max_connections,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                max_attempts=settings.max_attempts,
            )

    @property
    def uses_fast_path(self) -> bool:
        """Whether the hot calls currently go through :mod:`.fastpath`."""
        return self._fast is not None

    # -- helpers -------------------------------------------------------------------------
    def _call(self, op: str, key: str, fn: Callable[..., T], **kwargs: Any) -> T:
        self._count(op)
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            error = _translate(op, key, exc)
            self._errors.labels(op=op, code=error.code or type(error).__name__).inc()
            raise error from None

    def _count(self, op: str) -> None:
        child = self._counted.get(op)
        if child is None:
            child = self._counted[op] = self._requests.labels(op=op)
        child.inc()

    def _fast_call(self, op: str, key: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the fast path, counted and translated like :meth:`_call`;
        :class:`fastpath.Redirected` propagates (the caller repeats the call on botocore)."""
        self._count(op)
        try:
            return fn(*args)
        except fastpath.Redirected:
            log.info("%s: the bucket answered with a redirect; using botocore from now on", op)
            self._fast = None
            raise
        except Exception as exc:
            error = _translate(op, key, exc)
            self._errors.labels(op=op, code=error.code or type(error).__name__).inc()
            raise error from None

    async def _fast_native(
        self, op: str, key: str, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """:meth:`_fast_call` for a fast-path coroutine awaited on the trio thread."""
        self._count(op)
        try:
            return await fn(*args)
        except fastpath.Redirected:
            log.info("%s: the bucket answered with a redirect; using botocore from now on", op)
            self._fast = None
            raise
        except Exception as exc:
            error = _translate(op, key, exc)
            self._errors.labels(op=op, code=error.code or type(error).__name__).inc()
            raise error from None

    def _put_headers(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        """The fast path's PutObject/CopyObject headers (as botocore serializes _put_args)."""
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        for attr, _, header in _PUT_FIELDS:
            if value := getattr(self.settings.put, attr):
                headers[header] = value
        return headers

    def _copy_headers(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        """The fast path's CopyObject headers: a new object's, and the metadata replaced if
        given (else the source's is kept)."""
        headers = self._put_headers(metadata)
        if metadata is not None:
            headers["x-amz-metadata-directive"] = "REPLACE"
        return headers

    def _put_args(self) -> dict[str, Any]:
        return {
            param: value
            for attr, param, _ in _PUT_FIELDS
            if (value := getattr(self.settings.put, attr))
        }

    # -- ObjectStore ---------------------------------------------------------------------
    def check_bucket(self, prefix: str) -> None:
        self._call("ListObjectsV2", prefix, self._client.list_objects_v2, Prefix=prefix, MaxKeys=1)

    def head(self, key: str) -> ObjectInfo:
        fast = self._fast
        if fast is not None:
            with contextlib.suppress(fastpath.Redirected):
                size, etag, mtime, meta, storage = self._fast_call(
                    "HeadObject", key, fast.head, key
                )
                return ObjectInfo(key, size, etag, mtime, meta, storage)
        resp = self._call("HeadObject", key, self._client.head_object, Key=key)
        return _info(key, resp)

    def list_page(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        after = start_after if token is None else None
        fast = self._fast
        if fast is not None:
            with contextlib.suppress(fastpath.Redirected):
                listed = self._fast_call(
                    "ListObjectsV2",
                    prefix,
                    fast.list_page,
                    prefix,
                    delimiter,
                    token,
                    max_keys,
                    after,
                )
                return _list_page(listed)
        kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        elif after:
            kwargs["StartAfter"] = after
        resp = self._call("ListObjectsV2", prefix, self._client.list_objects_v2, **kwargs)
        objects = [
            ObjectInfo(
                key=o["Key"],
                size=int(o.get("Size", 0)),
                etag=str(o.get("ETag", "")),
                mtime=o["LastModified"].timestamp() if "LastModified" in o else 0.0,
                storage_class=o.get("StorageClass"),
            )
            for o in resp.get("Contents", [])
        ]
        prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
        next_token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
        return ListPage(objects, prefixes, next_token)

    def _get(self, key: str, start: int, end: int, etag: str | None) -> Any:
        kwargs: dict[str, Any] = {"Key": key, "Range": f"bytes={start}-{end - 1}"}
        if etag:
            kwargs["IfMatch"] = etag
        return self._call("GetObject", key, self._client.get_object, **kwargs)

    def get_object(self, key: str) -> tuple[bytes, dict[str, str]]:
        """The whole object and its user metadata, in one GET."""
        resp = self._call("GetObject", key, self._client.get_object, Key=key)
        body = resp["Body"]
        try:
            data: bytes = body.read()
        except Exception as exc:
            raise _translate("GetObject(body)", key, exc) from None
        finally:
            body.close()
        return data, dict(resp.get("Metadata", {}))

    def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        if end <= start:
            return b""
        return b"".join(self.open_range(key, start, end, etag))

    def open_range(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> Iterator[bytes]:
        if end <= start:
            return
        fast = self._fast
        if fast is not None:
            try:
                resp = self._fast_call("GetObject", key, fast.get, key, start, end, etag)
            except fastpath.Redirected:
                pass
            except StoreError as exc:
                if exc.code == "InvalidRange":
                    return
                raise
            else:
                yield from self._pieces(
                    key,
                    lambda size: fastpath.read_piece(resp, size),
                    lambda: fastpath.shut_down(resp),
                    lambda complete: fastpath.finish(resp, complete),
                )
                return
        try:
            got = self._get(key, start, end, etag)
        except StoreError as exc:
            if exc.code == "InvalidRange":
                return
            raise
        body = got["Body"]
        yield from self._pieces(key, body.read, lambda: _shut_down(body), lambda _: body.close())

    def _pieces(
        self,
        key: str,
        read: Callable[[int], bytes],
        shut_down: Callable[[], None],
        close: Callable[[bool], None],
    ) -> Iterator[bytes]:
        """A GET body in pieces; past ``body_deadline`` its socket is shut down (a server
        trickling bytes never trips the per-read timeout) and the read fails."""
        size = FIRST_PIECE  # small first piece: the first bytes reach the reader sooner
        alarm = WATCHDOG.arm(self.settings.body_deadline, shut_down)
        complete = False
        try:
            while True:
                try:
                    piece = read(size)
                    # then the rest of the first MiB, then whole MiBs: pieces stay aligned
                    # with the kernel's 1 MiB read requests, which can then be answered
                    # with the received bytes objects themselves (no copy)
                    size = STREAM_PIECE - FIRST_PIECE if size == FIRST_PIECE else STREAM_PIECE
                except Exception as exc:
                    if alarm.fired:
                        raise StoreUnavailable(
                            f"GetObject(body) {key!r}: body not received within "
                            f"{self.settings.body_deadline:.0f} s"
                        ) from None
                    raise _translate("GetObject(body)", key, exc) from None
                if not piece:
                    complete = True
                    break
                yield piece
        finally:
            fired = alarm.cancel()
            close(complete and not fired)  # a connection it shut down is not reused

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        fast = self._fast
        if fast is not None:
            with contextlib.suppress(fastpath.Redirected):
                headers = self._put_headers(metadata)
                etag = self._fast_call("PutObject", key, fast.put, key, data, headers)
                return ObjectInfo(key, len(data), etag, _now(), dict(metadata))
        resp = self._call(
            "PutObject",
            key,
            self._client.put_object,
            Key=key,
            Body=data,
            Metadata=dict(metadata),
            **self._put_args(),
        )
        return ObjectInfo(key, len(data), str(resp.get("ETag", "")), _now(), dict(metadata))

    def append(self, key: str, offset: int, data: bytes) -> None:
        if not self.is_directory_bucket:
            raise NotSupported(f"PutObject(append) {key!r}: appends need a directory bucket")
        self._call(
            "PutObject(append)",
            key,
            self._client.put_object,
            Key=key,
            Body=data,
            WriteOffsetBytes=offset,
        )

    def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        resp = self._call(
            "CreateMultipartUpload",
            key,
            self._client.create_multipart_upload,
            Key=key,
            Metadata=dict(metadata),
            **self._put_args(),
        )
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        resp = self._call(
            "UploadPart",
            key,
            self._client.upload_part,
            Key=key,
            UploadId=upload_id,
            PartNumber=part_number,
            Body=data,
        )
        return str(resp["ETag"])

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        resp = self._call(
            "CompleteMultipartUpload",
            key,
            self._client.complete_multipart_upload,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )
        return ObjectInfo(key, -1, str(resp.get("ETag", "")), _now())

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ObjectNotFound):
            self._call(
                "AbortMultipartUpload",
                key,
                self._client.abort_multipart_upload,
                Key=key,
                UploadId=upload_id,
            )

    def copy(
        self, src: str, dst: str, size: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        source = {"Bucket": self.bucket, "Key": src}
        extra: dict[str, Any] = dict(self._put_args())
        if metadata is not None:
            extra["Metadata"] = dict(metadata)
            extra["MetadataDirective"] = "REPLACE"
        fast = self._fast
        if fast is not None and size <= MAX_COPY_PART:
            headers = self._copy_headers(metadata)
            with contextlib.suppress(fastpath.Redirected):
                self._fast_call("CopyObject", src, fast.copy, src, self.bucket, dst, headers)
                return
        if size <= MAX_COPY_PART:
            self._call(
                "CopyObject",
                src,
                self._client.copy_object,
                Key=dst,
                CopySource=source,
                **extra,
            )
            return
        head = self.head(src)
        meta = dict(metadata) if metadata is not None else dict(head.metadata or {})
        upload_id = self.create_multipart(dst, meta)
        try:
            parts: list[tuple[int, str]] = []
            for number, offset in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                last = min(offset + COPY_PART_SIZE, size) - 1
                resp = self._call(
                    "UploadPartCopy",
                    src,
                    self._client.upload_part_copy,
                    Key=dst,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={offset}-{last}",
                    CopySourceIfMatch=head.etag,
                )
                parts.append((number, str(resp["CopyPartResult"]["ETag"])))
            self.complete_multipart(dst, upload_id, parts)
        except BaseException:
            self.abort_multipart(dst, upload_id)
            raise

    def rename(self, src: str, dst: str) -> None:
        if not self.is_directory_bucket:
            raise NotSupported("RenameObject is available on directory buckets only")
        with self._rename_probe:
            if self._rename_supported is None:
                # First use, one caller at a time: find out whether the endpoint really renames.
                self._rename_supported = self._probe_rename(src, dst)
                if self._rename_supported:
                    return
        if not self._rename_supported:
            raise NotSupported("RenameObject is not supported by this endpoint", code="Ignored")
        self._rename_object(src, dst)

    def _rename_object(self, src: str, dst: str) -> None:
        self._call(
            "RenameObject",
            src,
            self._client.rename_object,
            Key=dst,
            RenameSource=f"{self.bucket}/{src}",
        )

    def _probe_rename(self, src: str, dst: str) -> bool:
        """Try RenameObject once; True if the object moved. S3-compatible servers that do not
        know the call may fail with odd codes or answer 200 as if it were an empty PutObject,
        so success is checked by looking at the source."""
        try:
            self._rename_object(src, dst)
        except StoreError as exc:
            if classify(exc.code or "") in {ErrorClass.NOT_FOUND, ErrorClass.ACCESS_DENIED}:
                raise
            return False
        try:
            self.head(src)
        except ObjectNotFound:
            return True
        self.delete(dst)  # whatever the endpoint wrote there; the copy fallback replaces it
        return False

    def delete(self, key: str) -> None:
        fast = self._fast
        if fast is not None:
            try:
                self._fast_call("DeleteObject", key, fast.delete, key)
                return
            except ObjectNotFound:
                return  # deleting a missing key succeeds
            except fastpath.Redirected:
                pass
        with contextlib.suppress(ObjectNotFound):
            self._call("DeleteObject", key, self._client.delete_object, Key=key)

    def delete_many(self, keys: Sequence[str]) -> None:
        """One DeleteObjects request per :data:`DELETE_BATCH` keys (a directory rename's
        sources: one request where each key was a DeleteObject of its own, which cost both
        sides about as much CPU as the copy). One key, or an endpoint without DeleteObjects
        (remembered after its first 501), is deleted key by key, up to
        :data:`DELETE_CONCURRENCY` at once. Keys the answer lists as failed (other than
        missing) are errors, except that a transient failure (S3's per-key ``InternalError``,
        ``SlowDown``) is tried again as a DeleteObject of its own, with its retries. Every key
        is tried; then the first failure, in the order of ``keys``, is raised."""
        first: StoreError | None = None
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            try:
                failed = self._delete_batch(chunk)
            except StoreError as exc:
                failed = [exc]
            first = first or (failed[0] if failed else None)
        if first is not None:
            raise first

    def _delete_batch(self, keys: Sequence[str]) -> list[StoreError]:
        """Delete ``keys`` (at most :data:`DELETE_BATCH`); the errors of the keys that
        failed, in the order of ``keys``."""
        if len(keys) > 1 and self._batch_deletes:
            try:
                answer = self._call(
                    "DeleteObjects",
                    keys[0],
                    self._client.delete_objects,
                    Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
                )
            except NotSupported:
                log.info("DeleteObjects is not supported here: deleting key by key")
                self._batch_deletes = False
            else:
                failed: dict[str, StoreError] = {}
                again: list[str] = []
                for err in answer.get("Errors", ()):
                    code, key = str(err.get("Code", "")), str(err.get("Key", ""))
                    error = _from_code(f"DeleteObjects {key!r}", code, "", err.get("Message", ""))
                    if isinstance(error, ObjectNotFound):  # a missing key is deleted
                        continue
                    self._errors.labels(op="DeleteObjects", code=code).inc()
                    if classify(code).retryable:
                        again.append(key)
                    else:
                        failed[key] = error
                failed.update(self._delete_each(again))
                if not failed:
                    return []
                order = {key: i for i, key in enumerate(keys)}
                return [failed[k] for k in sorted(failed, key=lambda k: order.get(k, len(keys)))]
        return list(self._delete_each(keys).values())

    def _delete_each(self, keys: Sequence[str]) -> dict[str, StoreError]:
        """Delete ``keys`` one by one, up to :data:`DELETE_CONCURRENCY` at once in the
        store's one pool, which concurrent calls share (a connection each; 1,000 keys one
        after another at S3's tens of ms each would outlast the metadata deadline); the
        failures, in the order of ``keys``, once every key was tried."""

        def one(key: str) -> StoreError | None:
            try:
                self.delete(key)
            except StoreError as exc:
                return exc
            return None

        workers = min(DELETE_CONCURRENCY, self.settings.max_connections)
        if workers <= 1 or len(keys) <= 1:
            results = [one(key) for key in keys]
        else:
            with self._deleters_made:
                pool = self._deleters = self._deleters or ThreadPoolExecutor(
                    workers, thread_name_prefix="zonemount-delete"
                )
            results = list(pool.map(one, keys))
        return {key: exc for key, exc in zip(keys, results, strict=True) if exc is not None}

    def native(self, fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]] | None:
        """The twin of store call ``fn`` (a bound method of this store) that is awaited on
        the trio thread instead of run in a worker thread, or None. DeleteObject (``rm -rf``
        waits for one per file) and ListObjectsV2 (a relist's ranges, :mod:`.ranged`) have
        one, and so do a one-request CopyObject (a rename's copy) and the PutObject of a small
        file, on a plain-HTTP fast path."""
        fast = self._fast
        if fast is None or not fast.native or getattr(fn, "__self__", None) is not self:
            return None
        func = getattr(fn, "__func__", None)  # asked before every call: no dict built here
        twin: Callable[..., Awaitable[Any]] | None = None
        if func is S3Store.delete:
            twin = self._delete_native
        elif func is S3Store.list_page:
            twin = self._list_page_native
        elif func is S3Store.copy:
            twin = self._copy_native
        elif func is S3Store.put:
            twin = self._put_native
        return twin

    async def _list_page_native(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """:meth:`list_page` on the trio thread: the pages of a listing in ranges
        (:mod:`.ranged`) are then awaited at once without a worker thread each - threads
        parsing pages side by side fought over the GIL and made a listing slower."""
        fast = self._fast
        if fast is not None:
            after = start_after if token is None else None
            with contextlib.suppress(fastpath.Redirected):
                listed = await self._fast_native(
                    "ListObjectsV2",
                    prefix,
                    fast.list_page_native,
                    prefix,
                    delimiter,
                    token,
                    max_keys,
                    after,
                )
                return _list_page(listed)
        return await trio.to_thread.run_sync(
            self.list_page, prefix, delimiter, token, max_keys, start_after, abandon_on_cancel=True
        )

    async def _put_native(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        """:meth:`put` on the trio thread for a small file (at most :data:`NATIVE_PUT_MAX`
        bytes: the plain-HTTP signature hashes the body there, about 2 ms per MiB): the
        ``close()`` of each file a Spark task writes waits for its PutObject, and the hand-off
        to a worker thread and back cost about as much as for a copy. Larger bodies are sent
        from a worker thread."""
        fast = self._fast
        if fast is not None and len(data) <= NATIVE_PUT_MAX:
            headers = self._put_headers(metadata)
            with contextlib.suppress(fastpath.Redirected):
                etag = await self._fast_native(
                    "PutObject", key, fast.put_native, key, data, headers
                )
                return ObjectInfo(key, len(data), etag, _now(), dict(metadata))
        return await trio.to_thread.run_sync(self.put, key, data, metadata, abandon_on_cancel=True)

    async def _copy_native(
        self, src: str, dst: str, size: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`copy` on the trio thread when it is one CopyObject (a file rename: copy,
        then delete). In a worker thread the copy took about 0.7 ms longer than the request
        itself on a loaded 2-core machine, once per file of a Spark job commit, which renames
        one file after another. Larger copies (UploadPartCopy) run in a worker thread."""
        fast = self._fast
        if fast is not None and size <= MAX_COPY_PART:
            headers = self._copy_headers(metadata)
            with contextlib.suppress(fastpath.Redirected):
                await self._fast_native(
                    "CopyObject", src, fast.copy_native, src, self.bucket, dst, headers
                )
                return
        await trio.to_thread.run_sync(self.copy, src, dst, size, metadata, abandon_on_cancel=True)

    async def _delete_native(self, key: str) -> None:
        """:meth:`delete` on the trio thread: counted, translated and redirected alike."""
        fast = self._fast
        if fast is not None:
            try:  # not contextlib.suppress: two context managers per file of ``rm -rf``
                await self._fast_native("DeleteObject", key, fast.delete_native, key)
                return
            except ObjectNotFound:  # deleting a missing key succeeds
                return
            except fastpath.Redirected:
                pass  # botocore answers from now on (_fast_native dropped the fast path)
        # botocore is blocking: in a thread (abandoned, like any, past the caller's deadline)
        await trio.to_thread.run_sync(self.delete, key, abandon_on_cancel=True)


def _list_page(listed: Listed) -> ListPage:
    """A fast-path page as the store's :class:`ListPage`."""
    # each distinct time parsed once: keys written together share their second
    times = {m for _, _, _, m, _ in listed.objects if m}
    mtimes: dict[str | None, float] = {m: parse_timestamp(m).timestamp() for m in times}
    mtimes[None] = mtimes[""] = 0.0
    return ListPage(
        [
            ObjectInfo(key, size, etag, mtimes[modified], None, storage)
            for key, size, etag, modified, storage in listed.objects
        ],
        listed.prefixes,
        listed.next_token,
    )


def _now() -> float:
    import time

    return time.time()
