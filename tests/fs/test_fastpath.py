"""The lean S3 request path (zonemount_fs/store/fastpath.py) against real servers.

What the contract suite (test_store_contract.py) cannot show: that signatures are checked and
bad ones reported as EACCES without the secret, that rotated credentials are picked up
(refreshable credentials refresh, a stale key is refused), that 503 SlowDown is retried with
backoff, that a redirect hands the bucket to botocore, and where the path does not apply.
Signing is checked by moto with ``INITIAL_NO_AUTH_ACTION_COUNT`` (every request after the
setup is authenticated against moto's IAM).
"""

from __future__ import annotations

import datetime
import errno
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.session
import pytest
import trio
from zonemount_cli.servers import LocalS3, free_port, start_moto
from zonemount_fs.errors import AccessDenied, ObjectNotFound, StoreError
from zonemount_fs.store.s3 import NATIVE_PUT_MAX, S3Settings, S3Store

from .faultproxy import FaultProxy, Rule
from .stores import local_store

pytestmark = pytest.mark.integration

SETUP_ACTIONS = 4  # create user, its policy, two access keys


class Keys:
    def __init__(self, server: LocalS3, bucket: str, keys: list[dict[str, str]]) -> None:
        self.server = server
        self.bucket = bucket
        self.keys = keys

    def client(self, service: str, index: int) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.keys[index]["AccessKeyId"],
            aws_secret_access_key=self.keys[index]["SecretAccessKey"],
        )


@pytest.fixture(scope="module")
def authed() -> Iterator[Keys]:
    """moto checking every signature: one IAM user allowed everything, with two access keys."""
    with pytest.MonkeyPatch.context() as mp:  # only this server: others start without it
        mp.setenv("INITIAL_NO_AUTH_ACTION_COUNT", str(SETUP_ACTIONS + 1))  # + the ready check
        server = start_moto()
    try:
        anonymous = {
            "endpoint_url": server.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "nobody",
            "aws_secret_access_key": "nothing",
        }
        iam: Any = boto3.client("iam", **anonymous)
        iam.create_user(UserName="zm")
        policy = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="zm",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        keys = [iam.create_access_key(UserName="zm")["AccessKey"] for _ in range(2)]
        s3: Any = boto3.client("s3", **anonymous)
        for _ in range(3):  # whatever moto still let through unauthenticated is used up here
            try:
                s3.list_buckets()
            except Exception:  # any refusal means enforcement is on
                break
        else:
            pytest.fail("moto does not enforce signatures")
        out = Keys(server, f"auth-{uuid.uuid4().hex[:8]}", keys)
        out.client("s3", 0).create_bucket(Bucket=out.bucket)
        yield out
    finally:
        server.stop()


class _Provider(botocore.credentials.CredentialProvider):
    METHOD = "zonemount-test"
    CANONICAL_NAME = "zonemount-test"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        self.credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self.credentials


def _store(
    endpoint: str, bucket: str, credentials: botocore.credentials.Credentials, **settings: Any
) -> S3Store:
    session = botocore.session.Session()
    session.get_component("credential_provider").insert_before("env", _Provider(credentials))
    store = local_store(bucket, endpoint, session, **settings)
    assert store.uses_fast_path
    return store


def _static(key: dict[str, str]) -> botocore.credentials.Credentials:
    return botocore.credentials.Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def test_signed_requests_are_accepted(authed: Keys) -> None:
    store = _store(authed.server.endpoint, authed.bucket, _static(authed.keys[0]))
    store.put("signed/ü &x.txt", b"payload", {"mode": "33188"})
    assert store.head("signed/ü &x.txt").size == 7
    assert store.get_range("signed/ü &x.txt", 0, 3) == b"pay"
    assert [o.key for o in store.list_page("signed/", "/", None).objects] == ["signed/ü &x.txt"]
    store.delete("signed/ü &x.txt")


def test_wrong_secret_is_eacces_without_the_secret(authed: Keys) -> None:
    wrong = {**authed.keys[0], "SecretAccessKey": "not-the-secret-0123456789"}
    store = _store(authed.server.endpoint, authed.bucket, _static(wrong))
    with pytest.raises(AccessDenied) as info:
        store.put("k", b"x", {})
    assert info.value.errno == errno.EACCES
    assert info.value.code == "SignatureDoesNotMatch"
    assert "not-the-secret" not in str(info.value)
    with pytest.raises(AccessDenied):
        store.head("k")  # HEAD has no error body: the 403 status alone decides


def test_rotated_credentials_are_refreshed(authed: Keys) -> None:
    """Refreshable credentials (IRSA, SSO, instance roles) past their expiry are refreshed
    before signing; the old key, revoked meanwhile, is never used again."""
    issued: list[int] = []

    def refresh() -> dict[str, str]:
        index = min(len(issued), 1)
        issued.append(index)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
        return {
            "access_key": authed.keys[index]["AccessKeyId"],
            "secret_key": authed.keys[index]["SecretAccessKey"],
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        refresh(), refresh, "zonemount-test"
    )
    # refresh when expired, not 15/10 minutes before (the defaults)
    credentials._advisory_refresh_timeout = 0  # type: ignore[attr-defined]
    credentials._mandatory_refresh_timeout = 0  # type: ignore[attr-defined]
    store = _store(authed.server.endpoint, authed.bucket, credentials)
    store.put("rot", b"1", {})
    authed.client("iam", 1).delete_access_key(
        UserName="zm", AccessKeyId=authed.keys[0]["AccessKeyId"]
    )
    stale = _store(authed.server.endpoint, authed.bucket, _static(authed.keys[0]))
    with pytest.raises(AccessDenied):
        stale.head("rot")  # the revoked key is refused: the refresh below is what passes
    time.sleep(2.5)
    assert store.head("rot").size == 1
    assert issued == [0, 1]


@pytest.fixture
def proxied(moto_server: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    proxy = FaultProxy(moto_server.endpoint)

    def make(**settings: Any) -> tuple[S3Store, FaultProxy]:
        store = local_store(bucket, proxy.endpoint, **settings)
        assert store.uses_fast_path
        return store, proxy

    yield make
    proxy.close()


@pytest.mark.parametrize("method", ["PUT", "HEAD", "GET", "DELETE"])
def test_slowdown_is_retried(proxied: Any, method: str) -> None:
    store, proxy = proxied(max_attempts=4)
    store.put("k", b"payload", {})
    rule = proxy.add(Rule(method, "/k", "status", count=2, status=503, code="SlowDown"))
    {
        "PUT": lambda: store.put("k", b"payload", {}),
        "HEAD": lambda: store.head("k"),
        "GET": lambda: store.get_range("k", 0, 7),
        "DELETE": lambda: store.delete("k"),
    }[method]()
    assert rule.hits == 2


def test_native_delete_is_retried_and_translated_alike(proxied: Any) -> None:
    """DeleteObject awaited on the trio thread (what unlink uses on plain HTTP) follows the
    blocking path's retries and errors: SlowDown retried, a missing key deleted all the
    same, AccessDenied reported; HEAD and GET have no such twin."""
    store, proxy = proxied(max_attempts=4)
    delete = store.native(store.delete)
    assert delete is not None
    assert store.native(store.head) is None and store.native(store.get_range) is None
    store.put("k", b"payload", {})
    rule = proxy.add(Rule("DELETE", "/k", "status", count=2, status=503, code="SlowDown"))
    trio.run(delete, "k")
    assert rule.hits == 2
    with pytest.raises(ObjectNotFound):
        store.head("k")  # gone once the call returned
    trio.run(delete, "k")  # deleting a missing key succeeds
    proxy.add(Rule("DELETE", "/k", "status", status=403, code="AccessDenied"))
    with pytest.raises(AccessDenied):
        trio.run(delete, "k")


def test_native_copy_is_retried_and_translated_alike(proxied: Any) -> None:
    """CopyObject awaited on the trio thread (a rename's copy on plain HTTP) follows the
    blocking path: SlowDown retried, the source's metadata kept or replaced, a missing
    source and a refusal translated; a copy too large for one request (UploadPartCopy)
    still goes through the blocking path."""
    store, proxy = proxied(max_attempts=4)
    copy = store.native(store.copy)
    assert copy is not None
    store.put("src", b"payload", {"mode": "1"})
    rule = proxy.add(Rule("PUT", "/dst", "status", count=2, status=503, code="SlowDown"))
    trio.run(copy, "src", "dst", 7)
    assert rule.hits == 2
    assert store.get_range("dst", 0, 100) == b"payload"
    assert dict(store.head("dst").metadata or {}) == {"mode": "1"}
    trio.run(copy, "dst", "dst", 7, {"mode": "2"})  # metadata replaced in place
    assert dict(store.head("dst").metadata or {}) == {"mode": "2"}
    with pytest.raises(ObjectNotFound):
        trio.run(copy, "missing", "dst2", 7)
    proxy.add(Rule("PUT", "/dst3", "status", status=403, code="AccessDenied"))
    with pytest.raises(AccessDenied):
        trio.run(copy, "src", "dst3", 7)


def test_native_put_is_retried_and_translated_alike(proxied: Any) -> None:
    """PutObject of a small file awaited on the trio thread (a Spark task's close() on plain
    HTTP) follows the blocking path: SlowDown retried, the ETag S3 stored returned, metadata
    written, a refusal translated; a body over NATIVE_PUT_MAX goes through the blocking path
    and lands the same."""
    store, proxy = proxied(max_attempts=4)
    put = store.native(store.put)
    assert put is not None
    rule = proxy.add(Rule("PUT", "/small", "status", count=2, status=503, code="SlowDown"))
    info = trio.run(put, "small", b"payload", {"mode": "33188"})
    assert rule.hits == 2
    head = store.head("small")
    assert (info.size, info.etag) == (7, head.etag)
    assert dict(head.metadata or {}) == {"mode": "33188"}
    big = bytes(range(256)) * (NATIVE_PUT_MAX // 256 + 1)
    assert trio.run(put, "big", big, {}).etag == store.head("big").etag
    assert store.get_range("big", 0, len(big) + 1) == big
    proxy.add(Rule("PUT", "/denied", "status", status=403, code="AccessDenied"))
    with pytest.raises(AccessDenied):
        trio.run(put, "denied", b"x", {})


def test_listing_slowdown_is_retried_then_gives_eio(proxied: Any) -> None:
    store, proxy = proxied(max_attempts=3)
    rule = proxy.add(Rule("GET", "list-type=2", "status", count=2, status=503, code="SlowDown"))
    assert store.list_page("", "/", None).next_token is None
    assert rule.hits == 2
    proxy.add(Rule("GET", "list-type=2", "status", status=503, code="SlowDown"))
    with pytest.raises(StoreError) as info:
        store.list_page("", "/", None)
    assert info.value.errno == errno.EIO and info.value.code == "SlowDown"


def test_client_errors_are_not_retried(proxied: Any) -> None:
    store, proxy = proxied(max_attempts=4)
    rule = proxy.add(Rule("HEAD", "/k", "status", status=400, code="InvalidArgument"))
    with pytest.raises(StoreError):
        store.head("k")
    assert rule.hits == 1


def _redirect_once(method: str, path: str) -> Rule:
    """The bucket answers one request with 301: it lives in another region."""
    return Rule(
        method,
        path,
        "status",
        count=1,
        status=301,
        code="PermanentRedirect",
        headers={"x-amz-bucket-region": "us-east-1"},
    )


def test_redirect_hands_the_bucket_to_botocore(proxied: Any) -> None:
    """A bucket that answers 301 (another region) is served by botocore from then on."""
    store, proxy = proxied()
    store.put("k", b"v", {})
    rule = proxy.add(_redirect_once("HEAD", "/k"))
    assert store.head("k").size == 1
    assert rule.hits == 1
    assert not store.uses_fast_path


def test_native_delete_missing_key_and_redirect(proxied: Any, s3: Any, bucket: str) -> None:
    """The trio-native DeleteObject (``rm -rf``'s): a 404 is a success, a 400 an error, and a
    bucket that answers 301 is deleted from by botocore, which serves it from then on."""
    store, proxy = proxied(max_attempts=1)
    delete = store.native(store.delete)
    assert delete is not None
    gone = proxy.add(Rule("DELETE", "/gone", "status", count=1, status=404, code="NoSuchKey"))
    trio.run(delete, "gone")
    assert gone.hits == 1
    proxy.add(Rule("DELETE", "/bad", "status", count=1, status=400, code="InvalidArgument"))
    with pytest.raises(StoreError):
        trio.run(delete, "bad")
    store.put("k", b"v", {})
    moved = proxy.add(_redirect_once("DELETE", "/k"))
    trio.run(delete, "k")
    assert moved.hits == 1
    assert not store.uses_fast_path
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # botocore deleted it


def test_unreachable_endpoint_is_eio_after_bounded_retries(
    moto_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    store = local_store("b", f"http://127.0.0.1:{free_port()}", max_attempts=3, connect_timeout=1.0)
    assert store.uses_fast_path
    with pytest.raises(StoreError) as info:
        store.head("k")
    assert info.value.errno == errno.EIO
    assert "endpoint unreachable" in str(info.value)


@pytest.mark.unit
def test_where_the_fast_path_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs and regions come from botocore (virtual hosting on AWS, path style elsewhere);
    directory buckets and proxied endpoints stay on botocore. No request is sent."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    aws = S3Store(S3Settings(bucket="my-bucket", region="eu-west-1"))
    assert aws._fast is not None
    assert aws._fast.base_url == "https://my-bucket.s3.eu-west-1.amazonaws.com/"
    assert aws._fast.region == "eu-west-1" and not aws._fast.sign_payload
    local = S3Store(
        S3Settings(bucket="b", endpoint_url="http://127.0.0.1:1", force_path_style=True)
    )
    assert local._fast is not None and local._fast.base_url == "http://127.0.0.1:1/b/"
    assert local._fast.sign_payload  # no TLS: the body hash is signed
    express = S3Store(S3Settings(bucket="x--use1-az4--x-s3", region="us-east-1"))
    assert not express.uses_fast_path
    off = S3Store(S3Settings(bucket="b", region="us-east-1", fast_path=False))
    assert not off.uses_fast_path
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert not S3Store(S3Settings(bucket="b", region="us-east-1")).uses_fast_path
