"""The operator's IAM calls in the aws-cn and aws-us-gov partitions.

Moto answers every region with ``arn:aws:`` ARNs, so it cannot show a wrong partition; here
a stand-in IAM client per region answers as AWS would in that region's partition and records
the ARNs it is asked about (the reconcile tests against moto keep covering the calls
themselves)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from zonemount_operator import names
from zonemount_operator.aws import Boto3BucketAdmin

pytestmark = pytest.mark.unit
ACCOUNT = "111122223333"
UID = "6f1c2b8e-0d3a-4c1e-9b7a-2f4e5d6c7b8a"


def _no_such_entity(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchEntity", "Message": "none"}}, operation)


class PartitionIam:
    """IAM as one partition's endpoint answers: its own policies only, ARNs of its own
    partition; records (operation, PolicyArn) of every call."""

    def __init__(self, partition: str) -> None:
        self.partition = partition
        self.policies: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []

    def get_policy(self, PolicyArn: str) -> dict[str, Any]:
        self.calls.append(("GetPolicy", PolicyArn))
        if PolicyArn not in self.policies:
            raise _no_such_entity("GetPolicy")
        return {"Policy": {"Arn": PolicyArn, "DefaultVersionId": "v1"}}

    def create_policy(self, PolicyName: str, Path: str, **rest: Any) -> dict[str, Any]:
        arn = f"arn:{self.partition}:iam::{ACCOUNT}:policy{Path}{PolicyName}"
        self.calls.append(("CreatePolicy", arn))
        if arn in self.policies:
            raise ClientError(
                {"Error": {"Code": "EntityAlreadyExists", "Message": "exists"}}, "CreatePolicy"
            )
        self.policies[arn] = rest["PolicyDocument"]
        return {"Policy": {"Arn": arn}}

    def get_policy_version(self, PolicyArn: str, VersionId: str) -> dict[str, Any]:
        self.calls.append(("GetPolicyVersion", PolicyArn))
        return {"PolicyVersion": {"Document": json.loads(self.policies[PolicyArn])}}

    def attach_role_policy(self, RoleName: str, PolicyArn: str) -> None:
        self.calls.append(("AttachRolePolicy", PolicyArn))
        if PolicyArn not in self.policies:
            raise _no_such_entity("AttachRolePolicy")


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1", "eu-west-1"])
def test_session_policy_arn_is_in_the_buckets_partition(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session policy is looked up, created, found again and attached under the ARN
    :func:`names.policy_arn` gives for the bucket's region, through IAM's endpoint of that
    partition. ``ensure_policy`` used to build ``arn:aws:`` itself and call IAM in
    us-east-1: in aws-cn and aws-us-gov it created the policy again on every reconcile."""
    clients: dict[tuple[str, str], PartitionIam] = {}

    def client(service: str, client_region: str) -> PartitionIam:
        assert service == "iam"
        return clients.setdefault(
            (service, client_region), PartitionIam(names.partition(client_region))
        )

    admin = Boto3BucketAdmin()
    monkeypatch.setattr(admin, "client", client)
    monkeypatch.setattr(admin, "account_id", lambda: ACCOUNT)
    document = {"Version": "2012-10-17", "Statement": []}
    want = names.policy_arn(region, ACCOUNT, UID)
    assert want.startswith(f"arn:{names.partition(region)}:iam::")

    assert admin.ensure_policy(region, UID, document, "test") == want  # created
    assert admin.ensure_policy(region, UID, document, "test") == want  # found, unchanged
    assert admin.policy_exists(want)
    admin.attach_role_policy("spark", want)

    iam = clients.pop(("iam", names.iam_region(names.partition(region))))
    assert clients == {}, "IAM was called outside the bucket's partition"
    assert [op for op, _ in iam.calls] == [
        "GetPolicy",
        "CreatePolicy",
        "GetPolicy",
        "GetPolicyVersion",
        "GetPolicy",
        "AttachRolePolicy",
    ]
    assert {arn for _, arn in iam.calls} == {want}


def test_iam_region_and_arn_partition() -> None:
    assert names.iam_region("aws-cn") == "cn-north-1"
    assert names.iam_region("aws-us-gov") == "us-gov-west-1"
    assert names.iam_region("aws") == "us-east-1"
    assert names.arn_partition("arn:aws-cn:iam::111122223333:policy/x") == "aws-cn"
    assert names.arn_partition("arn:aws:iam::111122223333:role/r") == "aws"
