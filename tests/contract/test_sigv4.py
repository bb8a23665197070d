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


ENVIRONMENTS = [
    {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t"},
    {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "t1"},
    {  # botocore reads AWS_SECURITY_TOKEN first
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_SECURITY_TOKEN": "old",
        "AWS_SESSION_TOKEN": "new",
    },
    {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_PROFILE": "other"},
    {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": ""},
]
NOT_STATIC = [
    {},
    {"AWS_ACCESS_KEY_ID": "AKID"},  # botocore: PartialCredentialsError (its message, not ours)
    {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "s3cr3t"},  # the chain looks further
    {  # refreshable from the environment: botocore's
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z",
    },
]


@pytest.mark.unit
@pytest.mark.parametrize("environ", ENVIRONMENTS, ids=lambda e: ",".join(sorted(e)))
def test_env_credentials_are_what_botocores_chain_takes(
    environ: dict[str, str], tmp_path: Any
) -> None:
    """Static credentials in the environment are read as botocore's chain reads them (its
    environment provider comes first, even with AWS_PROFILE set), so ``zonemount cp`` signs
    with them without a botocore session."""
    import botocore.session
    from zonemount_contract.sigv4 import env_credentials

    found = env_credentials(environ)
    assert found is not None
    isolated = {
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    (tmp_path / "config").write_text("[profile other]\nregion = eu-west-1\n")
    (tmp_path / "credentials").write_text(
        "[other]\naws_access_key_id = FROMFILE\naws_secret_access_key = file\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_CREDENTIAL_EXPIRATION"):  # fmt: skip
            mp.delenv(name, raising=False)
        for name, value in {**isolated, **environ}.items():
            mp.setenv(name, value)
        theirs = botocore.session.get_session().get_credentials().get_frozen_credentials()
    ours = found.get_frozen_credentials()
    assert (ours.access_key, ours.secret_key, ours.token) == (
        theirs.access_key,
        theirs.secret_key,
        theirs.token,
    )


@pytest.mark.unit
@pytest.mark.parametrize("environ", NOT_STATIC, ids=lambda e: ",".join(sorted(e)) or "empty")
def test_env_credentials_leave_everything_else_to_botocore(environ: dict[str, str]) -> None:
    from zonemount_contract.sigv4 import env_credentials

    assert env_credentials(environ) is None


@pytest.mark.unit
def test_env_credentials_never_show_the_secret_or_token() -> None:
    from zonemount_contract.sigv4 import env_credentials

    environ = {
        "AWS_ACCESS_KEY_ID": "A",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_SESSION_TOKEN": "T0KEN",
    }
    found = env_credentials(environ)
    assert found is not None
    for text in (repr(found), str(found), repr(found.get_frozen_credentials())):
        assert "s3cr3t" not in text and "T0KEN" not in text, text
