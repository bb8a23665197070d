"""Throttling and server errors: retried with jittered backoff (botocore's standard mode),
then reported as EIO - never a hang. Against a real HTTP proxy in front of moto that answers
503 SlowDown for a number of requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_fs.errors import StoreError
from zonemount_fs.store.s3 import S3Settings, S3Store

from .express_endpoint import relay

pytestmark = pytest.mark.integration


class Throttler:
    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream = urlsplit(upstream)
        self.failures = failures
        self.throttled = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    throttle = outer.throttled < outer.failures
                    if throttle:
                        outer.throttled += 1
                if throttle:
                    payload = (
                        b"<Error><Code>SlowDown</Code><Message>Please reduce your "
                        b"request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                relay(self, outer.upstream, body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def throttled(moto_server: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"payload")  # type: ignore[attr-defined]
    proxies: list[Throttler] = []

    def make(failures: int, attempts: int = 4) -> tuple[S3Store, Throttler]:
        proxy = Throttler(moto_server.endpoint, failures)
        proxies.append(proxy)
        store = S3Store(
            S3Settings(
                bucket=bucket,
                endpoint_url=proxy.endpoint,
                region="us-east-1",
                force_path_style=True,
                max_attempts=attempts,
            )
        )
        return store, proxy

    yield make
    for proxy in proxies:
        proxy.close()


def test_throttling_is_retried_then_succeeds(throttled) -> None:
    store, proxy = throttled(failures=2)
    assert store.get_range("k", 0, 7) == b"payload"
    assert proxy.throttled == 2


def test_persistent_throttling_becomes_eio_in_bounded_time(throttled) -> None:
    store, proxy = throttled(failures=1000, attempts=4)
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.head("k")
    assert info.value.errno == 5  # EIO
    assert 2 <= proxy.throttled <= 5, "retried a bounded number of times, then given up"
    assert time.monotonic() - start < 30
