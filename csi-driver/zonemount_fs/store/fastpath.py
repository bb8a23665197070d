"""The lean S3 request path of the FUSE client: one signed HTTP request, no SDK pipeline.

Why: a botocore API call costs about 2 ms of CPU (event hooks, endpoint rules, model-driven
serialization and parsing, the retry handler), which was most of the CPU of creating or
removing a small file through the mount. Here a request is a URL, a few headers, a SigV4
signature (:class:`zonemount_contract.sigv4.Signer`, shared with the copy engine: the
computation of botocore's ``S3SigV4Auth``, compared with it byte for byte in the tests, with
the derived key cached per day; the credentials are the session's
provider chain, so refreshable credentials - IRSA, SSO, instance roles - refresh themselves when
asked for a frozen copy) and one request on a persistent connection: :mod:`.http1` for answers
read whole (urllib3 and ``http.client`` cost another 0.3 ms of CPU per request), urllib3 for
the streaming GETs. It is blocking and thread safe, like the botocore client it stands in for,
so it fits the store's worker threads. On a plain-HTTP endpoint a request can also be awaited
on the trio thread (:meth:`FastPath.request_native`, :class:`http1_trio.NativePool`): the same
signing, retries and errors, without a worker thread (what ``unlink``'s DeleteObject uses).

Where it applies (:func:`for_client` decides once; everything else stays on botocore):

* general-purpose buckets only - directory buckets (S3 Express One Zone) need CreateSession
  auth and stay on botocore;
* no HTTP proxy configured or in the environment (botocore owns proxy handling);
* the endpoint URL and the signing region are not computed here: they are read from one
  request botocore prepares (and that is never sent), so virtual hosting, path style, FIPS,
  dual-stack and custom endpoints come out exactly as botocore builds them;
* an answer that says the bucket lives elsewhere (301/307, or an error naming another region)
  raises :class:`Redirected`: the caller turns the fast path off and repeats the call on
  botocore, whose region redirector handles it.

Retries follow botocore's ``standard`` mode as the store configures it: ``max_attempts`` in all,
a retry for what :func:`zonemount_contract.aws_errors.classify` calls retryable (throttling,
5xx, timeouts) and for transport failures, a jittered exponential backoff
(``rand() * min(scale * 2**(attempt-1), 20 s)``, scale 1 s for throttling and 50 ms otherwise,
at least ``x-amz-retry-after``) and the same retry quota (500 units; a retry costs 5 after
throttling, 14 otherwise; a success gives back what its retries took, or 1).

ListObjectsV2 pages are read by :func:`zonemount_contract.s3list.parse_list` (flat when they
have the plain shape S3 servers write, by ElementTree otherwise), the one reader the copy
engine's lean path uses too.

Invariants: a non-2xx answer raises :class:`S3Error` (code, status, message - as botocore
reports them, so the store maps both paths to errnos with one function); a transport failure
raises :class:`TransportError` (an ``OSError``); neither message carries credentials or a
signed URL.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import socket
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from base64 import b64encode
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.httpsession
import botocore.utils
import trio
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from zonemount_contract import http1
from zonemount_contract.aws_errors import ErrorClass, classify
from zonemount_contract.s3client import user_agent
from zonemount_contract.s3list import Listed, parse_list
from zonemount_contract.sigv4 import Signer, host_header, key_path, query_value

from . import http1_trio

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
USER_AGENT = f"{user_agent()} fastpath"
_PROBE_KEY = "zonemount-fastpath-probe"
_REDIRECT_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"}
MAX_BACKOFF = 20.0
THROTTLING_SCALE = 1.0
OTHER_SCALE = 0.05
QUOTA_CAPACITY = 500
THROTTLING_RETRY_COST = 5
RETRY_COST = 14


class S3Error(Exception):
    """A non-2xx answer: ``code`` as in the error body (or the status), ``status``, message."""

    def __init__(self, operation: str, code: str, status: int, message: str) -> None:
        super().__init__(f"{operation}: {code} {message}".strip())
        self.operation = operation
        self.code = code
        self.status = status
        self.message = message


class TransportError(OSError):
    """No answer: connection refused/reset, timeout, truncated body."""


class Redirected(Exception):
    """The bucket is served elsewhere: repeat the call on botocore (which follows it)."""


class _Captured(Exception):
    def __init__(self, url: str, authorization: str | None) -> None:
        super().__init__(url)
        self.url = url
        self.authorization = authorization


def probe(client: Any, bucket: str) -> tuple[str, str | None]:
    """(base URL ending in ``/``, signing region or None when unsigned) exactly as botocore
    builds them for ``bucket``: one HeadObject is prepared and signed, then stopped before it
    is sent (no network)."""

    def capture(request: Any, **_: Any) -> None:
        auth = request.headers.get("Authorization")
        raise _Captured(request.url, auth.decode() if isinstance(auth, bytes) else auth)

    event = "before-send.s3.HeadObject"
    client.meta.events.register(event, capture, unique_id="zonemount-fastpath-probe")
    try:
        client.head_object(Bucket=bucket, Key=_PROBE_KEY)
    except _Captured as seen:
        url, auth = seen.url, seen.authorization
    finally:
        client.meta.events.unregister(event, unique_id="zonemount-fastpath-probe")
    if not url.endswith("/" + _PROBE_KEY):
        raise ValueError(f"unexpected request URL shape from botocore: {urlsplit(url).path}")
    region = None
    if auth:
        # "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, ..."
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        region = scope[2]
    return url[: -len(_PROBE_KEY)], region


def for_client(
    client: Any,
    session: Any,
    bucket: str,
    *,
    is_directory_bucket: bool,
    unsigned: bool,
    max_connections: int,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> FastPath | None:
    """The fast path for ``bucket`` on ``client``'s endpoint, or None where botocore must
    keep every call (see the module docstring)."""
    if is_directory_bucket or client.meta.config.proxies:
        return None
    try:
        base, region = probe(client, bucket)
    except Exception:  # no credentials, an odd endpoint: botocore reports it on each call
        return None
    if botocore.utils.get_environ_proxies(base):
        return None
    credentials = None if unsigned else session.get_credentials()
    if region is None and not unsigned:
        return None
    if not unsigned and credentials is None:
        return None
    ca_bundle = session.get_config_variable("ca_bundle")
    return FastPath(
        base,
        region or "us-east-1",
        credentials,
        sign_payload=not base.startswith("https://"),
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
        ca_certs=botocore.httpsession.get_cert_path(ca_bundle or True),
    )


class _Quota:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.available = QUOTA_CAPACITY

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.available = min(QUOTA_CAPACITY, self.available + amount)


class FastPath:
    """Signed requests to one bucket's base URL; thread safe."""

    def __init__(
        self,
        base_url: str,
        region: str,
        credentials: Any,
        *,
        sign_payload: bool,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        ca_certs: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.region = region
        self.credentials = credentials
        self.sign_payload = sign_payload
        self.max_attempts = max(1, max_attempts)
        self.tls = parts.scheme == "https"
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path  # "/bucket/" (path style) or "/" (virtual host)
        self._quota = _Quota()
        self._host = host_header(parts.scheme, parts.hostname or "", parts.port)
        self._signer = (
            Signer(credentials, region, sign_payload=sign_payload) if credentials else None
        )
        pool_args: dict[str, Any] = {
            "maxsize": max_connections,
            "block": False,
            "retries": False,
            "timeout": urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            "socket_options": [
                *urllib3.connection.HTTPConnection.default_socket_options,
                (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            ],
        }
        if self.tls:
            pool_args["ca_certs"] = ca_certs
        self._pool = urllib3.connection_from_url(self._origin, **pool_args)  # streaming GETs
        self._http = http1.Pool(  # everything else: answers read whole
            parts.scheme,
            parts.hostname or "",
            parts.port,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            maxsize=max_connections,
            ca_certs=ca_certs if self.tls else None,
        )
        # plain HTTP (in-cluster and local endpoints): requests awaited on the trio thread
        self._native = (
            None
            if self.tls
            else http1_trio.NativePool(
                parts.hostname or "",
                parts.port,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                maxsize=max_connections,
            )
        )

    def close(self) -> None:
        self._pool.close()
        self._http.close()
        if self._native is not None:
            self._native.close()

    # -- requests ------------------------------------------------------------------------
    def target(self, key: str, query: str = "") -> str:
        path = self._base_path + key_path(key)
        return f"{path}?{query}" if query else path

    def request(
        self,
        operation: str,
        method: str,
        key: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        stream: bool = False,
        error_in_body: bool = False,
    ) -> Any:
        """Send one request with retries; the 2xx urllib3 response (its body read unless
        ``stream``). ``error_in_body``: a 200 whose body is an ``<Error>`` document is an error
        (CopyObject, CompleteMultipartUpload)."""
        path, target, base_headers = self._prepare(key, query, headers, body)
        attempt = retry_cost = 0
        failure: S3Error | TransportError | None
        while True:
            attempt += 1
            signed = self._signed(method, path, query, base_headers, body)
            try:
                resp = self._send(method, target, signed, body, stream)
            except (Urllib3Error, http1.HttpError) as exc:
                failure, kind, retry_after = self._transport_failure(exc)
            else:
                failure, kind, retry_after = self._verdict(operation, resp, stream, error_in_body)
                if failure is None:
                    self._quota.release(retry_cost or 1)
                    return resp
            delay, retry_cost = self._retry(failure, kind, attempt, retry_after)
            time.sleep(delay)

    @property
    def native(self) -> bool:
        """Whether :meth:`request_native` can be awaited on the trio thread (plain HTTP)."""
        return self._native is not None

    async def request_native(
        self,
        operation: str,
        method: str,
        key: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        error_in_body: bool = False,
    ) -> http1.Response:
        """:meth:`request` for an answer read whole, awaited on the trio thread (the same
        signing, retries and errors; :class:`http1_trio.NativePool` instead of a worker thread)."""
        pool = self._native
        assert pool is not None, "request_native needs a plain-HTTP endpoint (see native)"
        path, target, base_headers = self._prepare(key, query, headers, body)
        payload = body if body or method in {"PUT", "POST"} else None
        attempt = retry_cost = 0
        failure: S3Error | TransportError | None
        while True:
            attempt += 1
            signed = self._signed(method, path, query, base_headers, body)
            try:
                resp = await pool.request(method, target, signed, payload)
            except http1.HttpError as exc:
                failure, kind, retry_after = self._transport_failure(exc)
            else:
                failure, kind, retry_after = self._verdict(operation, resp, False, error_in_body)
                if failure is None:
                    self._quota.release(retry_cost or 1)
                    return resp
            delay, retry_cost = self._retry(failure, kind, attempt, retry_after)
            await trio.sleep(delay)

    # -- the steps of a request, shared by both ways of sending it --------------------------
    def _prepare(
        self, key: str, query: str, headers: Mapping[str, str] | None, body: bytes
    ) -> tuple[str, str, dict[str, str]]:
        """(path, request target, headers before signing)."""
        path = self.target(key)
        target = f"{path}?{query}" if query else path
        base_headers = dict(headers or {})
        if body and not self.sign_payload:
            base_headers["x-amz-checksum-crc32"] = b64encode(
                zlib.crc32(body).to_bytes(4, "big")
            ).decode()
        return path, target, base_headers

    def _signed(
        self, method: str, path: str, query: str, base_headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        if self._signer is None:
            signed = {**base_headers, "host": self._host}
        else:
            signed = self._signer.sign(method, self._host, path, query, base_headers, body)
        signed["User-Agent"] = USER_AGENT  # not signed (as botocore): proxies rewrite it
        return signed

    @staticmethod
    def _transport_failure(exc: Exception) -> tuple[TransportError, ErrorClass, None]:
        name = str(exc) if isinstance(exc, http1.HttpError) else type(exc).__name__
        return TransportError(name), ErrorClass.TRANSIENT, None

    def _verdict(
        self, operation: str, resp: Any, stream: bool, error_in_body: bool
    ) -> tuple[S3Error | None, ErrorClass, str | None]:
        """(None, ...) for a success; else the error, its class and ``x-amz-retry-after``."""
        if resp.status < 300 and not (error_in_body and _is_error_doc(resp.data)):
            return None, ErrorClass.TRANSIENT, None
        failure = self._error(operation, resp, stream)
        return (
            failure,
            classify(failure.code, failure.status),
            resp.headers.get("x-amz-retry-after"),
        )

    def _retry(
        self,
        failure: S3Error | TransportError,
        kind: ErrorClass,
        attempt: int,
        retry_after: str | None,
    ) -> tuple[float, int]:
        """(backoff, quota cost) of the next attempt; raises ``failure`` when there is none."""
        if not kind.retryable or attempt >= self.max_attempts:
            raise failure
        cost = THROTTLING_RETRY_COST if kind is ErrorClass.THROTTLED else RETRY_COST
        if not self._quota.acquire(cost):
            raise failure
        return _backoff(attempt, kind, retry_after), cost

    def _send(
        self, method: str, target: str, headers: dict[str, str], body: bytes, stream: bool
    ) -> Any:
        """One attempt: a streaming urllib3 response, or an :class:`http1.Response`."""
        payload = body if body or method in {"PUT", "POST"} else None
        if not stream:
            return self._http.request(method, target, headers, payload)
        return self._pool.urlopen(
            method,
            target,
            body=payload,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )

    def _error(self, operation: str, resp: Any, stream: bool) -> S3Error:
        try:
            data = resp.read() if stream else resp.data
        except Urllib3Error:
            data = b""
        finally:
            if stream:
                resp.release_conn()
        status = resp.status
        code, message = _parse_error(data)
        if not code:
            code, message = str(status), message or (resp.reason or "")
        elsewhere = resp.headers.get("x-amz-bucket-region", self.region) != self.region
        if status in {301, 307} or code in _REDIRECT_CODES or (status == 400 and elsewhere):
            raise Redirected(f"{operation}: {code}")
        return S3Error(operation, code, status, message)

    # -- operations ----------------------------------------------------------------------
    def head(self, key: str) -> tuple[int, str, float, dict[str, str], str | None]:
        """(size, etag, mtime, user metadata, storage class)."""
        resp = self.request("HeadObject", "HEAD", key)
        headers = resp.headers
        return (
            int(headers.get("Content-Length", 0)),
            headers.get("ETag", ""),
            _http_date(headers.get("Last-Modified")),
            user_metadata(headers),
            headers.get("x-amz-storage-class"),
        )

    def put(self, key: str, data: bytes, headers: Mapping[str, str]) -> str:
        """PutObject; the ETag."""
        resp = self.request("PutObject", "PUT", key, headers=headers, body=data)
        return str(resp.headers.get("ETag", ""))

    async def put_native(self, key: str, data: bytes, headers: Mapping[str, str]) -> str:
        """:meth:`put` awaited on the trio thread (only where :attr:`native`)."""
        resp = await self.request_native("PutObject", "PUT", key, headers=headers, body=data)
        return str(resp.headers.get("ETag", ""))

    def delete(self, key: str) -> None:
        self.request("DeleteObject", "DELETE", key)

    async def delete_native(self, key: str) -> None:
        """:meth:`delete` awaited on the trio thread (only where :attr:`native`)."""
        await self.request_native("DeleteObject", "DELETE", key)

    def copy(self, src: str, bucket: str, dst: str, headers: Mapping[str, str]) -> None:
        source = {"x-amz-copy-source": key_path(f"{bucket}/{src}")}
        self.request("CopyObject", "PUT", dst, headers={**source, **headers}, error_in_body=True)

    async def copy_native(
        self, src: str, bucket: str, dst: str, headers: Mapping[str, str]
    ) -> None:
        """:meth:`copy` awaited on the trio thread (only where :attr:`native`)."""
        source = {"x-amz-copy-source": key_path(f"{bucket}/{src}")}
        await self.request_native(
            "CopyObject", "PUT", dst, headers={**source, **headers}, error_in_body=True
        )

    def get(self, key: str, start: int, end: int, etag: str | None) -> Any:
        """A streaming ranged GET: the urllib3 response (read it, then :func:`finish`)."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if etag:
            headers["If-Match"] = etag
        return self.request("GetObject", "GET", key, headers=headers, stream=True)

    def list_page(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int,
        start_after: str | None = None,
    ) -> Listed:
        query = _list_query(prefix, delimiter, token, max_keys, start_after)
        resp = self.request("ListObjectsV2", "GET", "", query=query)
        return parse_list(resp.data)

    async def list_page_native(
        self,
        prefix: str,
        delimiter: str | None,
        token: str | None,
        max_keys: int,
        start_after: str | None = None,
    ) -> Listed:
        """:meth:`list_page` awaited on the trio thread (only where :attr:`native`)."""
        query = _list_query(prefix, delimiter, token, max_keys, start_after)
        resp = await self.request_native("ListObjectsV2", "GET", "", query=query)
        return parse_list(resp.data)


def _list_query(
    prefix: str, delimiter: str | None, token: str | None, max_keys: int, start_after: str | None
) -> str:
    params = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", str(max_keys))]
    params.append(("prefix", prefix))
    if delimiter:
        params.append(("delimiter", delimiter))
    if token:
        params.append(("continuation-token", token))
    if start_after:
        params.append(("start-after", start_after))
    return "&".join(f"{k}={query_value(v)}" for k, v in params)


def read_piece(resp: Any, size: int) -> bytes:
    """Up to ``size`` bytes of a streaming body; transport failures as TransportError."""
    try:
        data: bytes = resp.read(size)
    except Urllib3Error as exc:
        raise TransportError(type(exc).__name__) from None
    return data


def finish(resp: Any, complete: bool) -> None:
    """Return a fully read connection to the pool; close one abandoned mid-body."""
    if complete:
        resp.release_conn()
    else:
        resp.close()


def socket_of(resp: Any) -> socket.socket | None:
    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def shut_down(resp: Any) -> None:
    """Shut the socket under a streaming body down: a read blocked in it fails at once."""
    sock = socket_of(resp)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """``x-amz-meta-*`` headers as botocore returns them (prefix dropped, name otherwise as
    received)."""
    prefix = "x-amz-meta-"
    return {
        name[len(prefix) :]: value
        for name, value in headers.items()
        if name.lower().startswith(prefix)
    }


def _http_date(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return float(botocore.utils.parse_timestamp(value).timestamp())


def _backoff(attempt: int, kind: ErrorClass, retry_after: str | None) -> float:
    scale = THROTTLING_SCALE if kind is ErrorClass.THROTTLED else OTHER_SCALE
    delay = random.random() * min(scale * 2.0 ** (attempt - 1), MAX_BACKOFF)  # noqa: S311 - jitter
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            wanted = int(retry_after) / 1000.0
            if wanted >= 0:
                delay = max(delay, min(wanted, delay + 5.0))
    return delay


def _is_error_doc(data: bytes) -> bool:
    head = data[:512].lstrip()
    if head.startswith(b"<?xml"):
        head = head[head.find(b"?>") + 2 :].lstrip()
    return head.startswith(b"<Error>")


def _parse_error(data: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 error document; ('', '') when there is none."""
    if not data:
        return "", ""
    try:
        root = ET.fromstring(data)  # noqa: S314 - the S3 endpoint the user named
    except ET.ParseError:
        return "", ""
    code = root.findtext("Code") or root.findtext(f"{_NS}Code") or ""
    message = root.findtext("Message") or root.findtext(f"{_NS}Message") or ""
    return code, message
