"""A fault-injecting HTTP proxy on loopback, in front of a real S3 server (moto).

Each request is matched against rules, in order; the first whose method and query/path
match applies its fault a number of times (``count``; ``None`` = forever):

* ``status``: answer with an S3 error of that HTTP status (error ``code``, extra ``headers``)
  instead of forwarding;
* ``stall``: hold the request for ``seconds`` (until the proxy closes), then forward;
* ``stall-fail``: hold the request for ``seconds``, then answer like ``status``;
* ``trickle``: forward, then send the response body at ``rate`` bytes per second.

Everything else is relayed unchanged (tests/fs/express_endpoint.relay); a client that dies
mid-request (a FUSE server killed by a test) is no error. ``hits`` counts the
faults injected per rule, so a test can check that a retry really happened.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .express_endpoint import relay


@dataclass
class Rule:
    method: str  # "GET", "PUT", "DELETE", "HEAD", "POST" or "*"
    match: str  # substring of the request path (with its query string)
    fault: str  # "status" | "stall" | "stall-fail" | "trickle"
    count: int | None = None
    status: int = 500
    seconds: float = 3600.0
    rate: float = 10.0
    code: str = "InternalError"
    headers: dict[str, str] = field(default_factory=dict)
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
                elif rule.fault == "stall":
                    outer.closed.wait(rule.seconds)
                    if not outer.closed.is_set():
                        relay(self, outer.upstream, body)
                else:
                    self._trickle(body, rule.rate)

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
