"""The fast path's HTTP/1.1 client (zonemount_contract.http1) against scripted servers on
loopback (plain TCP and TLS with a throwaway certificate), and against a real S3 server
through the store: framing, connection reuse, closed and stale connections, failures."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from zonemount_contract import http1
from zonemount_fs.store import http1_trio
from zonemount_fs.store.s3 import S3Settings, S3Store

#: What the server answers to one request: raw bytes, and whether to close afterwards.
Answer = tuple[bytes, bool]


class Scripted:
    """A loopback HTTP server answering each request with the next scripted answer."""

    def __init__(self, answers: list[Answer], context: ssl.SSLContext | None = None) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._context = context
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        try:
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_side=True)
            buf = b""
            while self.answers:
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += sock.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer, close = self.answers.pop(0)
                if answer:
                    sock.sendall(answer)
                if close:
                    return
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(answers: list[Answer], context: ssl.SSLContext | None = None) -> Scripted:
        servers.append(Scripted(answers, context))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _pool(port: int, scheme: str = "http", **kw: Any) -> http1.Pool:
    kw.setdefault("connect_timeout", 5.0)
    kw.setdefault("read_timeout", 5.0)
    return http1.Pool(scheme, kw.pop("host", "127.0.0.1"), port, maxsize=4, **kw)


class _Native:
    """A :class:`http1_trio.NativePool` driven from blocking test code: each request in a trio
    run of its own (the pool keeps plain sockets, so connections outlive the run)."""

    def __init__(self, port: int, **kw: Any) -> None:
        kw.setdefault("connect_timeout", 5.0)
        kw.setdefault("read_timeout", 5.0)
        self.pool = http1_trio.NativePool(kw.pop("host", "127.0.0.1"), port, maxsize=4, **kw)

    def request(self, *args: Any) -> http1.Response:
        return trio.run(self.pool.request, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


@pytest.fixture(params=["blocking", "native"])
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """The pool of each kind: the blocking one of worker threads, the trio-native one."""
    return _pool if request.param == "blocking" else _Native


OK = (b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: "e"\r\n\r\nok', False)
NO_CONTENT = (b"HTTP/1.1 204 No Content\r\n\r\n", False)


def test_keep_alive_reuses_one_connection(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    server = serve([OK, NO_CONTENT, OK])
    pool = make(server.port)
    put = pool.request("PUT", "/b/k", {"host": "h", "x-amz-meta-a": "1"}, b"data")
    assert (put.status, put.reason, put.data, put.headers["etag"]) == (200, "OK", b"ok", '"e"')
    assert pool.request("DELETE", "/b/k", {"host": "h"}, None).status == 204
    assert pool.request("PUT", "/b/e", {"host": "h"}, b"").data == b"ok"
    assert (pool.opened, server.connections) == (1, 1)
    assert server.requests[0] == (
        b"PUT /b/k HTTP/1.1\r\nhost: h\r\nx-amz-meta-a: 1\r\nContent-Length: 4\r\n"
        b"Accept-Encoding: identity\r\n\r\ndata"
    )
    assert b"Content-Length" not in server.requests[1]  # no body, no length
    assert b"\r\nContent-Length: 0\r\n" in server.requests[2]
    pool.close()


def test_headers_keep_their_names_and_join_repeats(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nX-Amz-Meta-Mode: 33188\r\nA: 1\r\na: 2\r\nContent-Length: 0\r\n\r\n"
    )
    server = serve([(answer, False)])
    headers = make(server.port).request("HEAD", "/k", {"host": "h"}, None).headers
    assert "X-Amz-Meta-Mode" in list(headers) and headers["x-amz-meta-mode"] == "33188"
    assert headers.get("A") == "1, 2" and "a" in headers and headers.get("missing") is None


def test_chunked_and_informational_answers(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server = serve([(chunked, False), OK])
    pool = make(server.port)
    assert pool.request("GET", "/?list-type=2", {"host": "h"}, None).data == b"hello world"
    assert pool.request("GET", "/k", {"host": "h"}, None).data == b"ok"
    assert pool.opened == 1


def test_head_answer_has_no_body(serve: Callable[..., Scripted], make: Callable[..., Any]) -> None:
    server = serve([(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n", False), OK])
    pool = make(server.port)
    head = pool.request("HEAD", "/k", {"host": "h"}, None)
    assert (head.data, head.headers["content-length"]) == (b"", "4096")
    assert pool.request("GET", "/k", {"host": "h"}, None).data == b"ok"
    assert pool.opened == 1


def test_connection_close_and_eof_bodies_are_not_reused(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    server = serve(
        [
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", True),  # no length: ends with the connection
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
            OK,
        ]
    )
    pool = make(server.port)
    assert pool.request("GET", "/1", {"host": "h"}, None).data == b"ok"
    assert pool.request("GET", "/2", {"host": "h"}, None).data == b"until the end"
    assert pool.request("GET", "/3", {"host": "h"}, None).data == b"ok"
    assert pool.request("GET", "/4", {"host": "h"}, None).data == b"ok"
    assert pool.opened == 4


def test_connection_closed_while_idle_is_replaced(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    """A server that closes an idle keep-alive connection (timeouts, restarts): the next
    request opens a new one instead of failing on the dead one."""
    server = serve([(OK[0], True), OK])  # answers, then closes without saying so
    pool = make(server.port)
    assert pool.request("GET", "/1", {"host": "h"}, None).data == b"ok"
    for _ in range(100):  # until the server's close has reached us
        if not pool._idle or not pool._idle[0].quiet():
            break
        threading.Event().wait(0.01)
    assert pool.request("GET", "/2", {"host": "h"}, None).data == b"ok"
    assert pool.opened == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # truncated body
        b"HTTP/1.1 200 OK\r\nContent-Le",  # truncated headers
        b"garbage\r\n\r\n",  # no status line
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"",  # closed without an answer
    ],
)
def test_incomplete_answers_raise_http_error(
    serve: Callable[..., Scripted], answer: bytes, make: Callable[..., Any]
) -> None:
    server = serve([(answer, True), OK])
    pool = make(server.port)
    with pytest.raises(http1.HttpError):
        pool.request("GET", "/k", {"host": "h"}, None)
    assert pool.request("GET", "/k", {"host": "h"}, None).data == b"ok"  # a fresh connection
    assert pool.opened == 2


def test_no_answer_within_the_read_timeout(
    serve: Callable[..., Scripted], make: Callable[..., Any]
) -> None:
    server = serve([(b"", False), OK])  # reads the request, never answers
    pool = make(server.port, read_timeout=0.2)
    with pytest.raises(http1.HttpError):
        pool.request("GET", "/k", {"host": "h"}, None)
    assert not pool._idle


def test_native_request_given_up_closes_its_connection(serve: Callable[..., Scripted]) -> None:
    """A native request cancelled while it waits (its caller's deadline) closes its
    connection: a late answer on it can never be read as the next request's."""
    server = serve([(b"", False), OK])  # reads the first request, never answers it
    native = _Native(server.port)

    async def give_up() -> None:
        with trio.move_on_after(0.2) as scope:
            await native.pool.request("DELETE", "/k", {"host": "h"}, None)
        assert scope.cancelled_caught

    trio.run(give_up)
    assert not native.pool._idle
    assert native.request("GET", "/k", {"host": "h"}, None).data == b"ok"
    assert (native.pool.opened, server.connections) == (2, 2)


def test_native_read_timeout_within_a_later_deadline(serve: Callable[..., Scripted]) -> None:
    """A wait is bounded by ``read_timeout`` when the caller's deadline ends later (the pool
    opens no scope of its own only when the caller's ends first)."""
    server = serve([(b"", False), OK])  # reads the first request, never answers it
    native = _Native(server.port, read_timeout=0.2)

    async def wait_long() -> None:
        with trio.move_on_after(30) as scope:
            with pytest.raises(http1.HttpError, match=r"no answer within 0\.2 s"):
                await native.pool.request("DELETE", "/k", {"host": "h"}, None)
        assert not scope.cancelled_caught

    trio.run(wait_long)
    assert not native.pool._idle


def test_refused_connection_and_bad_headers(make: Callable[..., Any]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(http1.HttpError, match="cannot connect"):
        make(port).request("GET", "/", {"host": "h"}, None)
    with pytest.raises(ValueError, match="line break"):
        make(port).request("GET", "/", {"x-amz-meta-a": "1\r\nEvil: 1"}, None)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_verifies_the_certificate(
    serve: Callable[..., Scripted], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve([OK, OK, OK], context)
    pool = _pool(server.port, "https", host="localhost", ca_certs=str(cert))
    assert pool.request("GET", "/k", {"host": "localhost"}, None).data == b"ok"
    assert pool.request("GET", "/k", {"host": "localhost"}, None).data == b"ok"
    assert pool.opened == 1
    untrusted = _pool(server.port, "https", host="localhost")  # the system CAs only
    with pytest.raises(http1.HttpError, match="cannot connect"):
        untrusted.request("GET", "/k", {"host": "localhost"}, None)


def test_store_fast_path_reuses_connections(seaweed_server: Any, monkeypatch: Any) -> None:
    """Through the store on a real S3 server (SeaweedFS keeps connections alive): small
    requests (PUT, HEAD, LIST, DELETE) go over this client's persistent connections, one
    connection for a sequence of calls."""
    for name, value in seaweed_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"zm-{uuid.uuid4().hex[:12]}"
    seaweed_server.client().create_bucket(Bucket=bucket)
    settings = S3Settings(bucket=bucket, endpoint_url=seaweed_server.endpoint)
    store = S3Store(replace(settings, force_path_style=True))
    assert store.uses_fast_path
    for i in range(5):
        store.put(f"d/k{i}", b"x" * i, {"mode": "33188"})
        assert store.head(f"d/k{i}").metadata == {"mode": "33188"}
    listed = store.list_page("d/", "/", None).objects
    assert [o.key for o in listed] == [f"d/k{i}" for i in range(5)]
    for i in range(5):
        store.delete(f"d/k{i}")
    assert [o.key for o in store.list_page("d/", "/", None).objects if o.key != "d/"] == []
    assert store._fast is not None and store._fast._http.opened == 1
