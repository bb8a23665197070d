"""Fixtures for the operator tests: a BucketAdmin on the shared moto server, fault injection.

Fault injection happens at the HTTP layer of the real botocore client (``before-send``
returns a canned AWS error response, see operator_testlib.aws_error), so error parsing and
translation run for real.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator.aws import Boto3BucketAdmin

from tests.operator.operator_testlib import KubeApiThread


@pytest.fixture
def admin(s3_env: dict[str, str], moto_server: LocalS3) -> Boto3BucketAdmin:
    return Boto3BucketAdmin(endpoint_url=moto_server.endpoint, max_attempts=2)


@pytest.fixture
def role(admin: Boto3BucketAdmin) -> Callable[..., str]:
    """Factory: a fresh IAM role on moto, returns its ARN.

    By default under the tenancy policy's default path for namespace ``ns``
    (``/zonemount/ns/``), so a CR in that namespace may name it.
    """

    def make(namespace: str = "ns", path: str | None = None) -> str:
        name = f"spark-{uuid.uuid4().hex[:8]}"
        resp = admin.client("iam", "us-east-1").create_role(
            RoleName=name,
            Path=path or f"/zonemount/{namespace}/",
            AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}',
        )
        return str(resp["Role"]["Arn"])

    return make


@pytest.fixture
def uid() -> str:
    """A fresh Kubernetes-style uid for one CR (the operator's ownership key)."""
    return str(uuid.uuid4())


@pytest.fixture
def kube_api() -> Iterator[KubeApiThread]:
    """A kmock Kubernetes API on loopback (its own thread); stopped after the test."""
    api = KubeApiThread().start()
    try:
        yield api
    finally:
        api.stop()
