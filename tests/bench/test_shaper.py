"""The S3-shaping proxy on real loopback sockets: per-request latency, rate cap, intact bytes.

A small HTTP/1.1 keep-alive server stands in for S3 (the proxy only sees HTTP framing). Only
lower bounds on time are asserted (latency and the rate cap can only make things slower), so the
tests hold on a loaded machine; each would fail if the proxy stopped shaping or corrupted data.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.shaper import Shaper

PAYLOAD = os.urandom(3 << 20)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        digest = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.bench
def test_each_request_on_a_kept_alive_connection_pays_the_latency(
    upstream: tuple[str, int],
) -> None:
    with Shaper(upstream, latency_s=0.1, rate_bps=None) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        start = time.perf_counter()
        for _ in range(3):
            conn.request("GET", "/obj")
            assert conn.getresponse().read() == PAYLOAD
        elapsed = time.perf_counter() - start
        conn.close()
        assert proxy.connections == 1
    assert elapsed >= 0.3


@pytest.mark.bench
def test_bodies_pass_intact_with_length_and_chunked_framing(upstream: tuple[str, int]) -> None:
    want = hashlib.sha256(PAYLOAD).hexdigest().encode()
    with Shaper(upstream, latency_s=0.0, rate_bps=None) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.request("PUT", "/a", body=PAYLOAD)
        assert conn.getresponse().read() == want
        chunks = (PAYLOAD[i : i + 100_000] for i in range(0, len(PAYLOAD), 100_000))
        conn.request("PUT", "/b", body=chunks, encode_chunked=True)
        assert conn.getresponse().read() == want
        conn.request("GET", "/c")
        assert conn.getresponse().read() == PAYLOAD
        conn.close()


@pytest.mark.bench
def test_rate_cap_paces_each_connection(upstream: tuple[str, int]) -> None:
    rate = 10e6
    with Shaper(upstream, latency_s=0.0, rate_bps=rate) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        start = time.perf_counter()
        conn.request("GET", "/obj")
        assert conn.getresponse().read() == PAYLOAD
        elapsed = time.perf_counter() - start
        conn.close()
    # 3 MiB at 10 MB/s is ~0.31 s; allow the initial burst of one pacing chunk (256 KiB)
    # the bucket lets the first pacing chunks through at once and paces the rest, so allow a
    # generous burst; an unpaced proxy moves 3 MiB on loopback in ~10 ms, far below it
    assert elapsed >= (len(PAYLOAD) - (512 << 10)) / rate * 0.9
