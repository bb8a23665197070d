"""S3-shaped network: a small userspace TCP proxy in front of a loopback S3 server.

This kernel has no ``netem``, so the shaping is done here. Each accepted client connection gets
its own upstream connection and two threads:

* client -> server: parses the HTTP/1.1 request stream (request head up to a blank line, then
  a ``Content-Length`` body or a ``chunked`` body). Each new request pays ``latency_s`` before its
  head is forwarded, so every request (not every connection) sees S3-like time to first byte. Bodies
  of known length are moved with ``splice(2)`` (no copy through Python).
* server -> client: bytes are moved with ``splice(2)`` through a pipe, paced by a token bucket of
  ``rate_bps`` bytes/s per connection (``None``: no cap).

Invariants: listens on 127.0.0.1 only; a parse failure (not HTTP) degrades to plain pass-through
for that connection, never to a dropped connection; :meth:`Shaper.stop` closes the listener and
every live connection. With ``latency_s=0`` and ``rate_bps=None`` it is a pass-through proxy whose
throughput the benchmark reports, so the proxy is known not to be the bottleneck.

Run standalone: ``python -m bench.shaper --upstream 127.0.0.1:8333 --latency-ms 15 --rate-mbps 90``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import threading
import time
from dataclasses import dataclass, field

CHUNK = 1 << 20
PACE_CHUNK = 256 << 10
MAX_HEAD = 256 << 10
F_SETPIPE_SZ = 1031


class TokenBucket:
    """Pace a byte stream at ``rate`` bytes/s (debt based: send, then sleep off the debt)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def consume(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            time.sleep(-self.tokens / self.rate)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
    return r, w


def _splice_exact(src: int, dst: int, pipe: tuple[int, int], want: int) -> int:
    """Move up to ``want`` bytes src -> dst through ``pipe``; 0 means EOF on src."""
    r, w = pipe
    n = os.splice(src, w, want)
    left = n
    while left:
        left -= os.splice(r, dst, left)
    return n


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class _RequestForwarder:
    """client -> server: find request starts in an HTTP/1.1 byte stream, delay each one."""

    HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, TRAILER, RAW = range(6)

    def __init__(self, conn: _Conn, latency_s: float, bucket: TokenBucket | None) -> None:
        self.conn = conn
        self.latency_s = latency_s
        self.bucket = bucket
        self.state = self.HEAD
        self.buf = bytearray()
        self.remaining = 0
        self.requests = 0

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self.conn.upstream.sendall(data)
        if self.bucket is not None:
            self.bucket.consume(len(data))

    def _on_head(self, head: bytes) -> None:
        self.requests += 1
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        self._send(head)
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip() or b"0")
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            self.state = self.CHUNK_SIZE
        elif length > 0:
            self.state, self.remaining = self.BODY, length
        else:
            self.state = self.HEAD

    def feed(self, data: bytes) -> None:
        """Consume bytes already read from the client, forwarding them as the state allows."""
        self.buf += data
        while self.buf and self._step():
            pass

    def _step(self) -> bool:
        """Forward what the buffer holds in the current state; False: wait for more bytes."""
        if self.state == self.RAW:
            self._send(self.buf)
            self.buf.clear()
            return True
        if self.state in (self.BODY, self.CHUNK_DATA):
            take = min(self.remaining, len(self.buf))
            self._send(memoryview(self.buf)[:take])
            del self.buf[:take]
            self.remaining -= take
            if self.remaining == 0:
                self.state = self.HEAD if self.state == self.BODY else self.CHUNK_SIZE
            return True
        if self.state == self.HEAD:
            head = self._cut(b"\r\n\r\n")
            if head is None:
                return self.state == self.RAW
            try:
                self._on_head(head)
            except ValueError:
                self.state = self.RAW
            return True
        line = self._cut(b"\r\n")  # CHUNK_SIZE or TRAILER: one line at a time
        if line is None:
            return self.state == self.RAW
        self._send(line)
        if self.state == self.TRAILER:
            if line == b"\r\n":
                self.state = self.HEAD
        else:
            self._on_chunk_size(line)
        return True

    def _cut(self, sep: bytes) -> bytes | None:
        """The buffer up to and including ``sep``, taken out of it; None while ``sep`` is missing.

        A buffer grown past MAX_HEAD without ``sep`` is not HTTP: the connection turns RAW.
        """
        end = self.buf.find(sep)
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.state = self.RAW
            return None
        piece = bytes(self.buf[: end + len(sep)])
        del self.buf[: end + len(sep)]
        return piece

    def _on_chunk_size(self, line: bytes) -> None:
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            self.state = self.RAW
            return
        if size == 0:
            self.state = self.TRAILER
        else:
            self.state, self.remaining = self.CHUNK_DATA, size + 2

    def run(self) -> None:
        src = self.conn.client
        pipe = _pipe()
        try:
            while not self.conn.closed.is_set():
                if self.state == self.BODY and not self.buf and self.bucket is None:
                    n = _splice_exact(
                        src.fileno(), self.conn.upstream.fileno(), pipe, min(self.remaining, CHUNK)
                    )
                    if n == 0:
                        break
                    self.remaining -= n
                    if self.remaining == 0:
                        self.state = self.HEAD
                    continue
                data = src.recv(CHUNK)
                if not data:
                    break
                self.feed(data)
            with contextlib.suppress(OSError):
                self.conn.upstream.shutdown(socket.SHUT_WR)
        except OSError:
            self.conn.close()
        finally:
            os.close(pipe[0])
            os.close(pipe[1])


def _pump_down(conn: _Conn, bucket: TokenBucket | None) -> None:
    """server -> client with splice, paced per connection."""
    pipe = _pipe()
    want = PACE_CHUNK if bucket is not None else CHUNK
    try:
        while not conn.closed.is_set():
            n = _splice_exact(conn.upstream.fileno(), conn.client.fileno(), pipe, want)
            if n == 0:
                break
            if bucket is not None:
                bucket.consume(n)
    except OSError:
        pass
    finally:
        os.close(pipe[0])
        os.close(pipe[1])
        conn.close()


class Shaper:
    """A shaping TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        latency_s: float = 0.015,
        rate_bps: float | None = 90e6,
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.latency_s = latency_s
        self.rate_bps = rate_bps
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(512)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="shaper-accept", daemon=True)
        self.connections = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _bucket(self) -> TokenBucket | None:
        if self.rate_bps is None:
            return None
        return TokenBucket(self.rate_bps, burst=PACE_CHUNK)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns = [c for c in self._conns if not c.closed.is_set()]
                self._conns.append(conn)
                self.connections += 1
            fwd = _RequestForwarder(conn, self.latency_s, self._bucket())
            threading.Thread(target=fwd.run, name="shaper-up", daemon=True).start()
            threading.Thread(
                target=_pump_down, args=(conn, self._bucket()), name="shaper-down", daemon=True
            ).start()

    def start(self) -> Shaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._thread.join(timeout=5)

    def __enter__(self) -> Shaper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the S3 server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=15.0)
    parser.add_argument("--rate-mbps", type=float, default=90.0, help="per connection; 0 = none")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--upstream must be HOST:PORT, e.g. 127.0.0.1:8333")
    rate = args.rate_mbps * 1e6 if args.rate_mbps > 0 else None
    with Shaper((host, int(port)), args.latency_ms / 1000, rate, args.port) as shaper:
        print(f"shaping {shaper.endpoint} -> {args.upstream}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
