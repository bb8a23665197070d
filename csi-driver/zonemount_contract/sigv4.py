"""The one AWS Signature Version 4 signer of zonemount's lean S3 paths.

Both lean S3 request paths sign with :class:`Signer`: the FUSE client's blocking fast path
(:mod:`zonemount_fs.store.fastpath`) and the bulk copy engine's event-loop path
(:mod:`zonemount_operator.fasts3`). It computes what ``botocore.auth.S3SigV4Auth`` computes
(tests/contract/test_sigv4.py compares the two byte for byte) without its cost: botocore's
signer rebuilds the request and re-derives the signing key on every call, which was a third
of a small request's CPU on the FUSE client and a fifth of a small object's on the copy engine.

:func:`key_path` and :func:`query_value` are the one URI-encoding rule of both paths (what
is sent is what is signed).

Invariants: standard library only (this package's rule), no I/O. Credentials are any object
with ``get_frozen_credentials()`` returning ``access_key``/``secret_key``/``token`` (botocore's
credential objects, so refreshable credentials - IRSA, SSO, instance roles - refresh themselves
when asked); they are read on every call and never cached here except as the derived key, which
is re-derived when the secret or the day changes. Thread safe.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def key_path(key: str) -> str:
    """A key as it goes into a request path or ``x-amz-copy-source`` (and is signed): every
    byte but unreserved characters and ``/`` percent-encoded, as botocore sends it."""
    return quote(key, safe="/~")


def query_value(value: str) -> str:
    """A query parameter's value (a prefix, a continuation token) as sent and signed."""
    return quote(value, safe="-_.~")


def host_header(scheme: str, hostname: str, port: int | None) -> str:
    """The Host header as botocore signs it: lower case, default ports left out, IPv6 in
    brackets."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    if port is None or (scheme, port) in {("http", 80), ("https", 443)}:
        return host.lower()
    return f"{host}:{port}".lower()


class Signer:
    """SigV4 for S3 requests in one region, the derived signing key cached per day.

    ``sign_payload``: hash the body into the signature (botocore does over plain HTTP);
    otherwise ``UNSIGNED-PAYLOAD`` (what botocore sends for uploads over TLS)."""

    def __init__(self, credentials: Any, region: str, *, sign_payload: bool) -> None:
        self.credentials = credentials
        self.region = region
        self.sign_payload = sign_payload
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, yyyymmdd, signing key)

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached[0] == secret and cached[1] == day:
            return cached[2]
        key = ("AWS4" + secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, day, key)  # one tuple: readers see old or new, never a mix
        return key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        now: float | None = None,
    ) -> dict[str, str]:
        """``headers`` plus Host, X-Amz-Date, X-Amz-Content-SHA256, the session token and
        Authorization. ``path`` and ``query`` exactly as sent (already URI-encoded)."""
        frozen = self.credentials.get_frozen_credentials()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        if body and self.sign_payload:
            payload = hashlib.sha256(body).hexdigest()
        elif self.sign_payload:
            payload = EMPTY_SHA256
        else:
            payload = UNSIGNED_PAYLOAD
        out = dict(headers)
        out["host"] = host
        out["x-amz-date"] = stamp
        out["x-amz-content-sha256"] = payload
        if frozen.token:
            out["x-amz-security-token"] = frozen.token
        canonical = sorted((k.lower(), " ".join(v.split())) for k, v in out.items())
        names = ";".join(k for k, _ in canonical)
        if query:
            pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
            query = "&".join(f"{k}={v}" for k, v in pairs)
        request = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{k}:{v}\n" for k, v in canonical),
                names,
                payload,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()]
        )
        signature = hmac.new(
            self._signing_key(frozen.secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        return out
