"""The wire between ``zonemount csi-node`` and ``zonemount csi-mounter``: one unix socket.

A ``SOCK_SEQPACKET`` socket, so every message arrives whole with its descriptors attached
(``SCM_RIGHTS``). A message is one UTF-8 JSON object. The client sends one request per
connection and reads one reply, except ``watch``, whose connection stays open and receives one
event per exited FUSE server.

Requests (``op``):

* ``serve`` + one descriptor (an open, mounted ``/dev/fuse``): ``key`` (the target path),
  ``volume_id``, ``args`` (``zonemount`` argv with :data:`FD_PLACEHOLDER` where the mount point
  goes), ``env`` (variables to set), ``unset`` (variables of the mounter's own environment to
  drop), ``log_path``, ``timeout``. Reply after the FUSE server reported ready: ``pid``,
  ``start_time``;
* ``stop``: ``key``, ``timeout`` - SIGTERM (the server flushes and exits), SIGKILL at the
  deadline; OK when nothing serves ``key``;
* ``kill``: ``key`` - SIGKILL (a hung server before its replacement is mounted);
* ``list``: every server the mounter knows: ``{key: {pid, start_time, alive, ...}}``;
* ``watch``: events ``{"event": "exit", "key": ..., "pid": ...}``.

Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "one line"}``. Invariants: no secret
ever crosses this socket (pod tokens are passed as file paths); the socket is mode 0600 in a
directory only the two containers share.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

FD_PLACEHOLDER = "@FUSE_FD@"
MAX_MESSAGE = 1 << 20


class WireError(RuntimeError):
    """The mounter could not be reached or answered with an error."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise WireError("message too large for the mounter socket")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def receive(sock: socket.socket, max_fds: int = 1) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at end of stream."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
    if not data:
        for fd in fds:
            _close(fd)
        return None, []
    try:
        message = json.loads(data)
    except ValueError:
        for fd in fds:
            _close(fd)
        raise WireError("malformed message on the mounter socket") from None
    if not isinstance(message, dict):
        raise WireError("malformed message on the mounter socket")
    return message, fds


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def call(
    path: Path, message: dict[str, Any], timeout: float, fds: list[int] | None = None
) -> dict[str, Any]:
    """One request/reply exchange with the mounter at ``path``; raises :class:`WireError`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
            send(sock, message, fds)
            reply, extra = receive(sock, max_fds=0)
        except OSError as exc:
            raise WireError(
                f"mounter at {path} unreachable ({exc.strerror or exc}): is zonemount "
                "csi-mounter running with this --endpoint?"
            ) from None
    finally:
        sock.close()
    for fd in extra:
        _close(fd)
    if reply is None:
        raise WireError(f"mounter at {path} closed the connection without a reply")
    if not reply.get("ok"):
        raise WireError(str(reply.get("error") or "mounter refused the request"))
    return reply


def connect_watch(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(path))
    send(sock, {"op": "watch"})
    return sock
