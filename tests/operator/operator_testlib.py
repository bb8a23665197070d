"""Helpers shared by the operator tests (importable: tests/operator is on sys.path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def aws_error(status: int, code: str, message: str = "injected") -> Callable[..., AWSResponse]:
    """A ``before-send`` handler answering with an S3/IAM-style XML error."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message><RequestId>x</RequestId></Error>"
    ).encode()

    def handler(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

    return handler


def unique_base() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
