"""A CreateSession-speaking S3 Express test endpoint in front of moto.

moto and SeaweedFS do not implement S3 Express session auth. This small proxy does just that
part, faithfully enough to exercise botocore's real session handling:

* ``GET /<bucket>?session`` (CreateSession) returns fresh session credentials with a short
  expiry and counts the call;
* CopyObject/UploadPartCopy are authorised by plain SigV4 (as on AWS, where botocore's model
  disables session auth for them);
* every other request must carry ``x-amz-s3session-token`` with a token it issued that has not
  expired, or it gets 403 AccessDenied - so plain SigV4 requests fail, as on AWS;
* accepted requests are forwarded unchanged to the S3 server behind it;
* with ``rename_object=True``, RenameObject (``PUT /<bucket>/<key>?renameObject`` with
  ``x-amz-rename-source: <bucket>/<key>``, path-style) is answered here, as a copy then a
  delete of the source on the server behind (moto has no RenameObject: it stores an empty
  object under the new key and keeps the source). Once the request has arrived it moves the
  object whole, whatever becomes of the client: what a test of a client killed mid-way needs
  from the service. Without the flag it goes to the server behind, like an endpoint without
  RenameObject. ``renamed`` counts the objects moved.
"""

from __future__ import annotations

import datetime as dt
import http.client
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from botocore.exceptions import ClientError


def relay(handler: BaseHTTPRequestHandler, upstream: SplitResult, body: bytes) -> None:
    """Forward the request being handled to ``upstream`` and copy the answer back (the
    connection to ``upstream`` is closed before the answer goes back: a client that died
    meanwhile leaves nothing open)."""
    conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
    try:
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        headers["Host"] = upstream.netloc
        conn.request(handler.command, handler.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(k, v)
    length = resp.getheader("Content-Length") if handler.command == "HEAD" else None
    handler.send_header("Content-Length", length or str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


class ExpressEndpoint:
    def __init__(
        self, upstream: str, session_seconds: int = 300, rename_object: bool = False
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.session_seconds = session_seconds
        self.rename_object = rename_object
        self.renamed = 0
        self._upstream_client: Any = None
        self.sessions: dict[str, dt.datetime] = {}
        self.create_session_calls = 0
        self.rejected = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ExpressEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def upstream_client(self) -> Any:
        """A client of the server behind (plain SigV4, path-style), made at first use."""
        with self._lock:
            if self._upstream_client is None:
                import boto3
                from botocore.config import Config

                self._upstream_client = boto3.client(
                    "s3",
                    endpoint_url=self.upstream.geturl(),
                    region_name="us-east-1",
                    aws_access_key_id="test",
                    aws_secret_access_key="test",
                    config=Config(
                        s3={"addressing_style": "path", "disable_s3_express_session_auth": True}
                    ),
                )
            return self._upstream_client

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = urlsplit(self.path).query
                if self.command == "GET" and query.split("&")[0] in ("session", "session="):
                    token = secrets.token_urlsafe(24)
                    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=outer.session_seconds)
                    with outer._lock:
                        outer.create_session_calls += 1
                        outer.sessions[token] = expires
                    xml = (
                        '<?xml version="1.0" encoding="UTF-8"?><CreateSessionResult '
                        'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Credentials>'
                        f"<SessionToken>{token}</SessionToken>"
                        f"<SecretAccessKey>{secrets.token_hex(20)}</SecretAccessKey>"
                        f"<AccessKeyId>ASIA{secrets.token_hex(8).upper()}</AccessKeyId>"
                        f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
                        "</Credentials></CreateSessionResult>"
                    ).encode()
                    self._reply(200, xml, {"Content-Type": "application/xml"})
                    return
                token = self.headers.get("x-amz-s3session-token", "")
                signed = self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256")
                with outer._lock:
                    expires = outer.sessions.get(token)
                    valid = expires is not None and expires > dt.datetime.now(dt.UTC)
                    if "x-amz-copy-source" in self.headers and signed:
                        valid = True  # CopyObject/UploadPartCopy use IAM SigV4 on AWS too
                    if not valid:
                        outer.rejected += 1
                if not valid:
                    self._reply(
                        403,
                        b"<Error><Code>AccessDenied</Code><Message>missing or "
                        b"expired S3 Express session token</Message></Error>",
                        {"Content-Type": "application/xml"},
                    )
                    return
                if outer.rename_object and self.command == "PUT" and "renameObject" in query:
                    self._rename_object()
                    return
                relay(self, outer.upstream, body)
                with outer._lock:
                    outer.forwarded += 1

            def _rename_object(self) -> None:
                """RenameObject as a copy then a delete of the source on the server behind;
                its errors are passed on."""
                bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
                source = unquote(self.headers.get("x-amz-rename-source", "")).lstrip("/")
                src_bucket, _, src_key = source.partition("/")
                client = outer.upstream_client()
                try:
                    client.copy_object(
                        Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key}
                    )
                    client.delete_object(Bucket=src_bucket, Key=src_key)
                except ClientError as exc:
                    error = exc.response.get("Error", {})
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
                    body = f"<Error><Code>{error.get('Code', '')}</Code></Error>".encode()
                    self._reply(status, body, {"Content-Type": "application/xml"})
                    return
                with outer._lock:
                    outer.renamed += 1
                self._reply(200, b"")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
