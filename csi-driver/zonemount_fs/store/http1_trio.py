"""The HTTP/1.1 client of :mod:`zonemount_contract.http1` awaited on the trio thread:
:class:`NativePool`.

Why: a store call handed to a worker thread costs the hand-off both ways (a futex wake, the
wake-up socket, the GIL changing hands twice), about as much CPU as the request itself, and
``rm -rf`` waits for one DeleteObject per file. Here a request is sent on a non-blocking socket
and its answer awaited with ``trio.lowlevel.wait_readable``; requests are written and answers
parsed by :mod:`zonemount_contract.http1`'s functions, so both pools speak exactly the same
HTTP.

Scope: plain HTTP only (in-cluster and local endpoints); TLS stays on the blocking
:class:`zonemount_contract.http1.Pool`.

Invariants:

* Used from one trio thread only (no lock); a connection serves one request at a time.
* A connection goes back to the pool only after a complete answer that did not ask to close
  it; a request that failed or was cancelled mid-way (its caller's deadline) closes its
  connection - its late answer would otherwise be read as the next request's.
* Every failure to get a complete answer raises :class:`zonemount_contract.http1.HttpError`,
  as the blocking pool does; ``connect_timeout`` bounds opening a connection,
  ``read_timeout`` each wait (unless the caller's own deadline ends sooner: then that one
  cancels the request, and the connection is closed as for any cancelled request).
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Mapping

import trio
from zonemount_contract.http1 import (
    _RECV,
    HttpError,
    Response,
    _close_all,
    _Connection,
    _read_response,
    _request_head,
)


class _Pending(Exception):
    """A non-blocking read found no more data yet: wait until the socket is readable."""


class _NativeConnection(_Connection):
    """A non-blocking socket: reads never block; what an answer needs and has not arrived
    yet raises :class:`_Pending`. ``raw`` keeps every byte of the answer under way, so
    parsing starts again from it once more data has come."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.raw = bytearray()

    def _receive(self) -> bytes:
        try:
            chunk = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            raise _Pending from None
        self.raw += chunk
        self.buf += chunk
        return chunk

    def quiet(self) -> bool:
        """Nothing to read, neither data nor the server's close: one non-blocking peek
        (the blocking connections' ``poll`` object is built per call)."""
        if self.buf:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # data or b"" (closed): not quiet
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        return False

    def _fill(self) -> None:
        if not self._receive():
            raise HttpError("the server closed the connection before a complete answer")

    def rest(self) -> bytes:
        while self._receive():
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data


class NativePool:
    """Persistent plain-HTTP connections to one origin, driven from the trio thread.

    Same wire behaviour as :class:`zonemount_contract.http1.Pool` (requests, reuse rules,
    errors); only the waiting differs: ``await`` on the socket instead of a blocked worker
    thread. ``connect_timeout`` bounds opening a connection, ``read_timeout`` each wait for
    more of an answer."""

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        maxsize: int,
    ) -> None:
        self.host = host
        self.port = port or 80
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.maxsize = maxsize
        self._idle: list[_NativeConnection] = []
        self.opened = 0
        weakref.finalize(self, _close_all, self._idle)

    def close(self) -> None:
        _close_all(self._idle)

    async def _take(self) -> _NativeConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.quiet():
                return conn
            conn.close()  # closed by the server while idle (or answered out of turn)
        with trio.move_on_after(self.connect_timeout):
            sock = await trio.to_thread.run_sync(  # once per connection: name lookup included
                socket.create_connection,
                (self.host, self.port),
                self.connect_timeout,
                abandon_on_cancel=True,
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setblocking(False)
            self.opened += 1
            return _NativeConnection(sock)
        raise HttpError(f"timed out after {self.connect_timeout:g} s")

    async def _wait(self, conn: _NativeConnection, readable: bool) -> None:
        wait = trio.lowlevel.wait_readable if readable else trio.lowlevel.wait_writable
        if trio.current_effective_deadline() <= trio.current_time() + self.read_timeout:
            # The caller's deadline (the mount's request deadline, which read_timeout never
            # exceeds) ends first: a scope of our own could never fire. Entering and leaving
            # one per wait was ~8% of the server's CPU in ``rm -rf``.
            await wait(conn.sock)
            return
        with trio.move_on_after(self.read_timeout):
            await wait(conn.sock)
            return
        raise HttpError(f"no answer within {self.read_timeout:g} s")

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        """:meth:`zonemount_contract.http1.Pool.request`, awaited on the trio thread."""
        data = memoryview(_request_head(method, target, headers, body) + (body or b""))
        try:
            conn = await self._take()
        except (OSError, ValueError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            while data:
                try:
                    data = data[conn.sock.send(data) :]
                except (BlockingIOError, InterruptedError):
                    await self._wait(conn, readable=False)
            while True:
                await self._wait(conn, readable=True)
                conn.buf = bytearray(conn.raw)
                try:
                    response, reusable = _read_response(conn, method)
                except _Pending:
                    continue
                break
        except HttpError:
            conn.close()
            raise
        except (OSError, ValueError) as exc:
            conn.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # cancelled mid-way: the answer must not reach the next request
            conn.close()
            raise
        conn.raw = conn.buf
        if reusable and len(self._idle) < self.maxsize:
            self._idle.append(conn)
        else:
            conn.close()
        return response
