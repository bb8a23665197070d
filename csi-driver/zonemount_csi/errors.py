"""The one exception type CSI handlers raise, and how it becomes a gRPC status.

Every handler validates first and fails by raising :class:`CsiError` with a gRPC status code and
a one-line message that names the problem and the fix. The server interceptor
(:mod:`zonemount_csi.server`) turns it into ``context.abort(code, message)``, logs it and counts it
by code. Invariant: a message never contains a secret (tokens, keys) - it is shown to users by
``kubectl describe pod``.
"""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """A CSI request failed with a specific gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)
