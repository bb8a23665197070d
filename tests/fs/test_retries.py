"""Throttling and server errors: retried with jittered backoff (botocore's standard mode),
then reported as EIO - never a hang. Against a real HTTP proxy in front of moto
(tests/fs/faultproxy.py) that answers 503 SlowDown for a number of requests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_fs.errors import StoreError
from zonemount_fs.store.s3 import S3Store

from .faultproxy import FaultProxy, Rule
from .stores import local_store

pytestmark = pytest.mark.integration


@pytest.fixture
def throttled(moto_server: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"payload")  # type: ignore[attr-defined]
    proxies: list[FaultProxy] = []

    def make(failures: int, attempts: int = 4) -> tuple[S3Store, Rule]:
        """A store whose first ``failures`` requests are answered 503 SlowDown; the rule's
        ``hits`` counts them."""
        proxy = FaultProxy(moto_server.endpoint)
        proxies.append(proxy)
        slow_down = Rule("*", "", "status", count=failures, status=503, code="SlowDown")
        proxy.add(slow_down)
        store = local_store(bucket, proxy.endpoint, max_attempts=attempts)
        return store, slow_down

    yield make
    for proxy in proxies:
        proxy.close()


def test_throttling_is_retried_then_succeeds(throttled) -> None:
    store, slow_down = throttled(failures=2)
    assert store.get_range("k", 0, 7) == b"payload"
    assert slow_down.hits == 2


def test_persistent_throttling_becomes_eio_in_bounded_time(throttled) -> None:
    store, slow_down = throttled(failures=1000, attempts=4)
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.head("k")
    assert info.value.errno == 5  # EIO
    assert 2 <= slow_down.hits <= 5, "retried a bounded number of times, then given up"
    assert time.monotonic() - start < 30
