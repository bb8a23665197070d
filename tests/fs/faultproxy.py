"""A fault-injecting HTTP proxy on loopback, in front of a real S3 server (moto).

Each request is matched against rules, in order; the first whose method and query/path
match applies its fault a number of times (``count``; ``None`` = forever):

* ``status``: answer with an S3 error of that HTTP status (error ``code``, extra ``headers``)
  instead of forwarding;
* ``stall``: hold the request for ``seconds`` (until the proxy closes), then forward;
* ``stall-fail``: hold the request for ``seconds``, then answer like ``status``;
* ``trickle``: forward, then send the response body at ``rate`` bytes per second;
* ``delete-errors``: a DeleteObjects request (``POST ?delete``) is forwarded without the
  objects named in ``keys`` (its checksums recomputed), and the answer lists each of those as
  an ``<Error>`` with ``code``: a request that fails partway, those keys kept by the server.

Everything else is relayed unchanged (tests/fs/express_endpoint.relay); a client that dies
mid-request (a FUSE server killed by a test) is no error. ``hits`` counts the
faults injected per rule, so a test can check that a retry really happened.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from .express_endpoint import relay


@dataclass
class Rule:
    method: str  # "GET", "PUT", "DELETE", "HEAD", "POST" or "*"
    match: str  # substring of the request path (with its query string)
    fault: str  # "status" | "stall" | "stall-fail" | "trickle" | "delete-errors"
    count: int | None = None
    status: int = 500
    seconds: float = 3600.0
    rate: float = 10.0
    code: str = "InternalError"
    headers: dict[str, str] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()  # delete-errors: the keys that fail
    hits: int = 0


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def handle(self) -> None:
                try:
                    super().handle()
                except ConnectionError:
                    return  # the client died (a killed FUSE server): nobody to answer

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rule = outer._take(self.command, self.path)
                if rule is not None and rule.fault == "stall-fail":
                    outer.closed.wait(rule.seconds)
                if rule is None:
                    relay(self, outer.upstream, body)
                elif rule.fault in ("status", "stall-fail"):
                    payload = (
                        f"<Error><Code>{rule.code}</Code><Message>injected</Message></Error>"
                    ).encode()
                    self.send_response(rule.status)
                    for name, value in rule.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                elif rule.fault == "delete-errors":
                    self._delete_errors(body, rule)
                elif rule.fault == "stall":
                    outer.closed.wait(rule.seconds)
                    if not outer.closed.is_set():
                        relay(self, outer.upstream, body)
                else:
                    self._trickle(body, rule.rate)

            def _delete_errors(self, body: bytes, rule: Rule) -> None:
                failing = [k for k in rule.keys if f"<Key>{escape(k)}</Key>" in body.decode()]
                kept = body.decode()
                for key in failing:
                    kept = re.sub(
                        rf"<Object>\s*<Key>{re.escape(escape(key))}</Key>.*?</Object>", "", kept
                    )
                forwarded = kept.encode()
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                for name in list(headers):  # the body changed: so do its checksums
                    lower = name.lower()
                    if lower == "content-md5":
                        headers[name] = base64.b64encode(hashlib.md5(forwarded).digest()).decode()
                    elif lower == "x-amz-checksum-crc32":
                        crc = zlib.crc32(forwarded).to_bytes(4, "big")
                        headers[name] = base64.b64encode(crc).decode()
                    elif lower == "x-amz-content-sha256" and len(headers[name]) == 64:
                        headers[name] = hashlib.sha256(forwarded).hexdigest()
                    elif (
                        lower.startswith("x-amz-checksum-")
                        or lower == "x-amz-sdk-checksum-algorithm"
                    ):
                        del headers[name]
                headers["Host"] = outer.upstream.netloc
                headers["Content-Length"] = str(len(forwarded))
                conn = http.client.HTTPConnection(
                    outer.upstream.hostname, outer.upstream.port, timeout=30
                )
                try:
                    conn.request(self.command, self.path, body=forwarded, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read().decode()
                finally:
                    conn.close()
                errors = "".join(
                    f"<Error><Key>{escape(k)}</Key><Code>{rule.code}</Code>"
                    "<Message>injected</Message></Error>"
                    for k in sorted(failing)
                )
                if resp.status == 200 and failing:
                    if "</DeleteResult>" in data:
                        data = data.replace("</DeleteResult>", errors + "</DeleteResult>")
                    else:  # an empty quiet answer: <DeleteResult/>
                        data = re.sub(
                            r"<DeleteResult([^>]*)/>",
                            rf"<DeleteResult\1>{errors}</DeleteResult>",
                            data,
                        )
                payload = data.encode()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _trickle(self, body: bytes, rate: float) -> None:
                conn = http.client.HTTPConnection(
                    outer.upstream.hostname, outer.upstream.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = outer.upstream.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for i in range(len(data)):
                        if outer.closed.is_set():
                            return
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(1 / rate)
                except OSError:
                    return  # the client gave up: that is the point

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.method in ("*", method) and rule.match in path:
                    if rule.count is not None and rule.hits >= rule.count:
                        continue
                    rule.hits += 1
                    return rule
        return None

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()
