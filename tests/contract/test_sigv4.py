"""The one SigV4 signer of the lean S3 paths (zonemount_contract/sigv4.py): botocore's result.

The FUSE client's fast path and the copy engine's event-loop path both sign with it, so one
comparison with ``botocore.auth.S3SigV4Auth`` covers both.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.config import Config
from zonemount_contract.sigv4 import Signer, host_header

SIGNING_CASES = [
    # (method, origin, path, query, headers, body, token, sign_payload)
    ("HEAD", "http://127.0.0.1:8333", "/b/plain", "", {}, b"", None, True),
    (
        "PUT",
        "http://127.0.0.1:8333",
        "/b/" + quote("dir/ünï code & +plus%.txt", safe="/~"),
        "",
        {"x-amz-meta-mode": "33188", "x-amz-meta-note": "  two  spaces\tand tab "},
        b"x" * 4097,
        "session-token/with+chars==",
        True,
    ),
    (
        "GET",
        "https://my-bucket.s3.eu-west-1.amazonaws.com",
        "/",
        "list-type=2&encoding-type=url&max-keys=1000&prefix=a%2Fb%20%26c&delimiter=%2F"
        "&continuation-token=1%2Bx%3D%3D",
        {},
        b"",
        None,
        False,
    ),
    (
        "PUT",
        "https://my-bucket.s3.eu-west-1.amazonaws.com",
        "//leading/slash",
        "",
        {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-copy-source": "b/src%20key"},
        b"body",
        None,
        False,
    ),
    ("DELETE", "http://[::1]:9000", "/b/k", "", {"Range": "bytes=0-9"}, b"", None, True),
    (  # the copy engine's ListObjectsV2 (its parameter order) and CopyObject
        "GET",
        "http://127.0.0.1:8333",
        "/src-bucket/",
        "list-type=2&prefix=a%2Fb%20c&encoding-type=url&continuation-token=1%2Bx%3D%3D",
        {},
        b"",
        "tok",
        True,
    ),
    (
        "PUT",
        "http://localhost:9000",
        "/dst/" + quote("k ü+1", safe="/~"),
        "",
        {"x-amz-copy-source": quote("src/k ü+1", safe="/~"), "x-amz-copy-source-if-match": '"e"'},
        b"",
        None,
        True,
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize("case", SIGNING_CASES, ids=lambda c: f"{c[0]} {c[1]}{c[2]}"[:60])
def test_signer_matches_botocore(case: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean paths' SigV4 is botocore's S3SigV4Auth, byte for byte (same clock)."""
    method, origin, path, query, headers, body, token, sign_payload = case
    when = datetime.datetime(2026, 12, 3, 19, 30, 5, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    credentials = botocore.credentials.Credentials("AKIDEXAMPLE", "wJalr/XUtnFEMI+K7MDENG", token)
    parts = urlsplit(origin)
    host = host_header(parts.scheme, parts.hostname or "", parts.port)
    ours = Signer(credentials, "eu-west-1", sign_payload=sign_payload).sign(
        method, host, path, query, dict(headers), body, now=when.timestamp()
    )
    url = origin + path + (f"?{query}" if query else "")
    request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=headers, data=body)
    request.context["client_config"] = Config(s3={"payload_signing_enabled": sign_payload})
    botocore.auth.S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    theirs = {
        k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
    }
    assert ours["Authorization"] == theirs["authorization"]
    assert ours["x-amz-content-sha256"] == theirs["x-amz-content-sha256"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


@pytest.mark.unit
def test_signing_key_is_rederived_for_a_new_day_or_secret() -> None:
    credentials = botocore.credentials.Credentials("AKID", "one")
    signer = Signer(credentials, "us-east-1", sign_payload=True)
    day1 = signer.sign("GET", "h", "/k", "", {}, b"", now=0.0)["Authorization"]
    day2 = signer.sign("GET", "h", "/k", "", {}, b"", now=86400.0)["Authorization"]
    assert day2.split("Signature=")[1] != day1.split("Signature=")[1]
    assert signer.sign("GET", "h", "/k", "", {}, b"", now=0.0)["Authorization"] == day1
    signer.credentials = botocore.credentials.Credentials("AKID", "two")
    assert signer.sign("GET", "h", "/k", "", {}, b"", now=0.0)["Authorization"] != day1


@pytest.mark.unit
def test_keys_and_query_values_are_encoded_as_botocore_sends_them() -> None:
    """The one URI-encoding rule of both lean paths: what is sent is what is signed."""
    from zonemount_contract.sigv4 import key_path, query_value

    assert key_path("dir/a b+ü%~*.txt") == "dir/a%20b%2B%C3%BC%25~%2A.txt"
    assert query_value("a/b c&=+") == "a%2Fb%20c%26%3D%2B"
