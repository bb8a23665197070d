"""The minimal blocking HTTP/1.1 client of zonemount's lean S3 paths.

Two parts send their small requests with :class:`Pool`: the FUSE client's fast path
(:mod:`zonemount_fs.store.fastpath`) and the bulk copy engine's (:mod:`zonemount_operator.fasts3`),
so the operator does not import the FUSE package for it. It lives in the contract package as
the one copy both import: standard library only, and no I/O until a pool is asked for a request.

Why: a request through urllib3 and ``http.client`` costs about 0.3 ms of CPU on its own
(response objects, header parsing through the ``email`` package, pool bookkeeping), as much
as the rest of an ``unlink`` through the mount; untar and ``rm -rf`` send one request per
file. Here a request is one ``sendall`` of the request line, headers and body, and the answer
is read into memory with ``bytes`` operations.

Scope: requests whose answers are read whole (HEAD, PUT, DELETE, CopyObject, LIST and the
multipart calls). Streaming GETs stay on urllib3 (the fast path) or ``http.client`` (the copy
engine).

Two pools speak it: :class:`Pool` here, blocking and thread safe (the store's worker threads,
the copy threads), and :class:`zonemount_fs.store.http1_trio.NativePool`, the same requests and
answers awaited on the FUSE client's trio thread (in the FUSE package: ``zonemount cp`` imports
this module and must not load trio).

What it speaks: HTTP/1.1 over TCP or TLS (certificates verified against ``ca_certs``, host
name checked, as urllib3 does), bodies framed by ``Content-Length``, ``chunked`` transfer
coding or the end of the connection; informational (1xx) answers are skipped; HEAD, 204 and
304 answers have no body.

Invariants:

* A connection goes back to the pool only after a complete answer that did not ask to
  close it (``Connection: close``, HTTP/1.0, a body ended by EOF); any failure closes it.
* A pooled connection is reused only while it is quiet (not readable: the server has not
  closed it meanwhile); otherwise a new one is opened.
* Every failure to get a complete answer raises :class:`HttpError` (an ``OSError``; the
  caller's retry policy decides), naming what went wrong but never the request's headers.
* Thread safe: a connection serves one request at a time; the pool is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TypeVar

#: Largest status line plus headers accepted (S3 answers carry a few hundred bytes).
MAX_HEAD = 256 * 1024
_RECV = 256 * 1024
#: Bodies up to this size are sent in the same ``sendall`` as the headers.
_JOIN_BODY = 64 * 1024


class HttpError(OSError):
    """No complete answer: connection refused/reset/closed, timeout, a malformed answer."""


class Headers(Mapping[str, str]):
    """Answer headers: looked up without regard to case, iterated with the names as sent;
    a repeated header's values joined with ", " (as urllib3 does)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._items:
            first, old = self._items[key]
            self._items[key] = (first, f"{old}, {value}")
        else:
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class Response:
    """A complete answer: status, reason, headers and the whole body."""

    __slots__ = ("data", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: Headers, data: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.data = data

    def read(self) -> bytes:
        return self.data


class _Connection:
    """One socket and what was received on it but not yet consumed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def quiet(self) -> bool:
        """Nothing to read: neither data nor the server's close (then it can be reused)."""
        if self.buf or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return False
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def _fill(self) -> None:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise HttpError("the server closed the connection before a complete answer")
        self.buf += chunk

    def until(self, marker: bytes, limit: int) -> bytes:
        """Bytes up to ``marker`` (consumed, marker dropped)."""
        start = 0
        while (end := self.buf.find(marker, start)) < 0:
            if len(self.buf) > limit:
                raise HttpError("answer headers too large")
            start = max(0, len(self.buf) - len(marker) + 1)
            self._fill()
        data = bytes(self.buf[:end])
        del self.buf[: end + len(marker)]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while chunk := self.sock.recv(_RECV):
            self.buf += chunk
        data = bytes(self.buf)
        self.buf.clear()
        return data


C = TypeVar("C", bound=_Connection)


class Pool:
    """Persistent connections to one origin (``http`` or ``https``, host, port)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        maxsize: int,
        ca_certs: str | None = None,
    ) -> None:
        self.host = host
        self.tls = scheme == "https"
        self.port = port or (443 if self.tls else 80)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.maxsize = maxsize
        self._ssl = ssl.create_default_context(cafile=ca_certs) if self.tls else None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far (for tests and metrics)
        # a pool dropped without close() closes its idle connections (as urllib3's does)
        weakref.finalize(self, _close_all, self._idle)

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle)

    def _take(self) -> _Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if conn.quiet():
                return conn
            conn.close()  # closed by the server while idle (or answered out of turn)

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        self.opened += 1
        return _Connection(sock)

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        """Send one request (``body`` None: no body and no Content-Length); the whole answer.
        :class:`HttpError` when no complete answer came."""
        head = _request_head(method, target, headers, body)
        try:
            conn = self._take()
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            if body and len(body) > _JOIN_BODY:
                conn.sock.sendall(head)
                conn.sock.sendall(body)
            else:
                conn.sock.sendall(head + body if body else head)
            response, reusable = _read_response(conn, method)
        except HttpError:
            conn.close()
            raise
        except (OSError, ValueError) as exc:
            conn.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        if reusable:
            self._give_back(conn)
        else:
            conn.close()
        return response


def _close_all(idle: list[C]) -> None:
    while idle:
        idle.pop().close()


def _request_head(
    method: str, target: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"invalid HTTP header {name!r}: it contains a line break")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    # as http.client sends it: without it a server may compress (RFC 9110), and nothing
    # here decodes content codings
    lines.append("Accept-Encoding: identity")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def _read_response(conn: _Connection, method: str) -> tuple[Response, bool]:
    """The answer to the request just sent, and whether the connection can be reused."""
    while True:
        head = conn.until(b"\r\n\r\n", MAX_HEAD).decode("latin-1")
        status_line, _, header_block = head.partition("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise HttpError(f"malformed status line {status_line[:80]!r}")
        status = int(code)
        if not 100 <= status < 200:
            break  # 1xx: informational, the real answer follows
    headers = Headers()
    last = ""
    for line in header_block.split("\r\n") if header_block else ():
        if line[:1] in (" ", "\t") and last:  # obsolete line folding
            headers.add(last, line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"malformed header line {line[:80]!r}")
        headers.add(name, value.strip())
        last = name
    reusable = version == "HTTP/1.1" and "close" not in headers.get("Connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        data = b""
    elif "chunked" in headers.get("Transfer-Encoding", "").lower():
        data = _chunked(conn)
    elif (length := headers.get("Content-Length")) is not None:
        if not length.strip().isdigit():
            raise HttpError(f"malformed Content-Length {length[:40]!r}")
        data = conn.exactly(int(length))
    else:
        data, reusable = conn.rest(), False
    return Response(status, reason, headers, data), reusable


def _chunked(conn: _Connection) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = conn.until(b"\r\n", MAX_HEAD).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise HttpError(f"malformed chunk size {size_line[:40]!r}") from None
        if size == 0:
            while conn.until(b"\r\n", MAX_HEAD):  # trailers, up to the empty line
                pass
            return b"".join(parts)
        parts.append(conn.exactly(size))
        if conn.exactly(2) != b"\r\n":
            raise HttpError("malformed chunk: no CRLF after its data")
