"""The one AWS Signature Version 4 signer of zonemount's lean S3 paths.

Both lean S3 request paths sign with :class:`Signer`: the FUSE client's blocking fast path
(:mod:`zonemount_fs.store.fastpath`) and the bulk copy engine's event-loop path
(:mod:`zonemount_operator.fasts3`). It computes what ``botocore.auth.S3SigV4Auth`` computes
(tests/contract/test_sigv4.py compares the two byte for byte) without its cost: botocore's
signer rebuilds the request and re-derives the signing key on every call, which was a third
of a small request's CPU on the FUSE client and a fifth of a small object's on the copy engine.

:func:`key_path` and :func:`query_value` are the one URI-encoding rule of both paths (what
is sent is what is signed).

:func:`env_credentials` reads static credentials from the environment exactly where botocore's
credential chain would take them (its first provider, ``EnvProvider``), so a caller that finds
them needs no botocore session (importing ``botocore.session`` and building its chain is
~0.2-0.4 s of CPU at every ``zonemount cp`` start); any other source (profiles, SSO, IRSA,
instance roles, ``AWS_CREDENTIAL_EXPIRATION``) is botocore's.

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
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class FrozenCredentials(NamedTuple):
    """One reading of a set of credentials (what ``get_frozen_credentials()`` returns)."""

    access_key: str
    secret_key: str
    token: str | None

    def __repr__(self) -> str:  # never the secret or the token, even in a traceback
        return f"FrozenCredentials(access_key={self.access_key!r}, secret_key=***, token=***)"


class StaticCredentials:
    """Credentials that do not change (from the environment): the signer's interface."""

    def __init__(self, frozen: FrozenCredentials, method: str) -> None:
        self._frozen = frozen
        self.method = method  # where they came from, as botocore names it ("env")

    def get_frozen_credentials(self) -> FrozenCredentials:
        return self._frozen

    def __repr__(self) -> str:
        return f"StaticCredentials(method={self.method!r})"


def env_credentials(environ: Mapping[str, str]) -> StaticCredentials | None:
    """The static credentials botocore's chain would use from ``environ``, or None where the
    chain would look further or refresh (then ask botocore): ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` both set and not empty, ``AWS_CREDENTIAL_EXPIRATION`` unset; the
    token from ``AWS_SECURITY_TOKEN`` else ``AWS_SESSION_TOKEN`` (botocore's order). The
    environment wins over ``AWS_PROFILE`` in botocore too (a profile named in the environment
    does not switch its environment provider off)."""
    access_key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key or environ.get("AWS_CREDENTIAL_EXPIRATION", ""):
        return None
    token = environ.get("AWS_SECURITY_TOKEN", "") or environ.get("AWS_SESSION_TOKEN", "")
    return StaticCredentials(FrozenCredentials(access_key, secret_key, token or None), "env")


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
        self._stamp: tuple[int, str] = (-1, "")  # (second, its X-Amz-Date)

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
        second = int(time.time() if now is None else now)
        cached_stamp = self._stamp
        if cached_stamp[0] == second:
            stamp = cached_stamp[1]  # requests signed within one second share it
        else:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._stamp = (second, stamp)  # one tuple: readers see old or new, never a mix
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
        canonical = sorted([(k.lower(), " ".join(v.split())) for k, v in out.items()])
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
        signature = hmac.digest(
            self._signing_key(frozen.secret_key, day), to_sign.encode(), "sha256"
        ).hex()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        return out
