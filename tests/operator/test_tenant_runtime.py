"""Issue 10's operator attacks end to end: the real operator (kopf) on kmock, AWS on moto.

team-a owns a Ready S3ExpressBucket with data, a role and a 30-day lifecycle. team-b, a
hostile tenant that may only write S3ExpressBuckets in its own namespace, tries each
takeover of docs/security.md at once: the same bucket name (with a 1-day lifecycle, its
own role and deletionPolicy Delete, then deletes its object), a foreign-account role ARN,
and an import from team-a's bucket. Each attacker CR must end Ready=False with the reason
that names the rule, and team-a's bucket, objects, lifecycle and policy must be untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.handlers import registry
from zonemount_operator.kube import S3EXPRESSBUCKETS

from tests.operator.operator_testlib import KubeApiThread, unique_base
from tests.operator.test_kopf_runtime import condition, kube, operator_env, wait_for

pytestmark = pytest.mark.integration
__all__ = ["operator_env"]  # the fixture, shared with test_kopf_runtime


def cr(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3ExpressBucket",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),  # kmock assigns none; the API server always does
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": spec,
    }


def test_hostile_tenant_cannot_reach_another_namespaces_bucket(
    operator_env: None,
    kube_api: KubeApiThread,
    admin: Boto3BucketAdmin,
    role: Callable[..., str],
) -> None:
    tag = uuid.uuid4().hex[:6]
    team_a, team_b = f"team-a-{tag}", f"team-b-{tag}"
    base = unique_base()
    victim_role = role(team_a)
    zone = {"region": "us-east-1", "availabilityZone": "us-east-1d"}
    victim = cr(
        team_a,
        "data",
        {
            **zone,
            "baseName": base,
            "lifecycle": {"expireAfterDays": 30},
            "access": {"roleArns": [victim_role]},
        },
    )
    local = role(team_b)
    attackers = {
        "data": {  # same bucket name, shorter lifecycle, own role, Delete
            **zone,
            "baseName": base,
            "deletionPolicy": "Delete",
            "lifecycle": {"expireAfterDays": 1},
            "access": {"roleArns": [local]},
        },
        "foreign": {  # a foreign account's role with a local role's name
            **zone,
            "baseName": unique_base(),
            "access": {
                "roleArns": [
                    f"arn:aws:iam::999999999999:role/zonemount/{team_b}/" + local.rsplit("/", 1)[1]
                ]
            },
        },
        "steal": {  # import team-a's data with the operator's credentials
            **zone,
            "baseName": unique_base(),
            "import": {"source": f"s3://{base}--use1-az4--x-s3/"},
        },
    }
    expected = {
        "data": ("BucketOwnedByAnother", f"belongs to S3ExpressBucket {team_a}/data"),
        "foreign": ("ForeignAccountRole", "999999999999"),
        "steal": ("ImportSourceNotAllowed", f"belongs to S3ExpressBucket {team_a}/data"),
    }
    bucket = f"{base}--use1-az4--x-s3"
    s3 = admin.s3("us-east-1")
    args = ["run", "--standalone", "--all-namespaces"]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        kube(kube_api, "create", S3EXPRESSBUCKETS, victim, team_a)
        wait_for(
            "team-a Ready",
            lambda: (
                condition(kube_api.object("s3expressbuckets", "data", team_a), "Ready").get(
                    "status"
                )
                == "True"
            ),
        )
        status_a = kube_api.object("s3expressbuckets", "data", team_a)["status"]
        s3.put_object(Bucket=bucket, Key="important/report.csv", Body=b"team-a's data")
        lifecycle = admin.lifecycle("us-east-1", bucket)
        roles = admin.attached_roles(status_a["policyArn"])

        for name, spec in attackers.items():
            kube(kube_api, "create", S3EXPRESSBUCKETS, cr(team_b, name, spec), team_b)
        for name, (reason, text) in expected.items():
            ready = wait_for(
                f"{team_b}/{name} refused",
                lambda name=name: (
                    condition(kube_api.object("s3expressbuckets", name, team_b), "Ready").get(
                        "reason"
                    )
                    not in (None, "Reconciling")
                    and condition(kube_api.object("s3expressbuckets", name, team_b), "Ready")
                ),
            )
            assert ready["status"] == "False", (name, ready)
            assert ready["reason"] == reason, (name, ready)
            assert text in ready["message"], (name, ready)

        # team-b deletes its objects; the finalizers run and leave team-a alone.
        for name in attackers:
            kube(kube_api, "delete", S3EXPRESSBUCKETS, name, team_b)
        for name in attackers:
            wait_for(
                f"{team_b}/{name} gone",
                lambda name=name: kube_api.object("s3expressbuckets", name, team_b) is None,
            )
    assert runner.exception is None
    body = s3.get_object(Bucket=bucket, Key="important/report.csv")["Body"].read()
    assert body == b"team-a's data"
    assert admin.lifecycle("us-east-1", bucket) == lifecycle
    assert admin.attached_roles(status_a["policyArn"]) == roles == {victim_role.rsplit("/", 1)[1]}
    iam = admin.client("iam", "us-east-1")
    name = local.rsplit("/", 1)[1]
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    made = {b["Name"] for b in s3.list_directory_buckets()["Buckets"]}
    assert not {f"{attackers[n]['baseName']}--use1-az4--x-s3" for n in ("foreign", "steal")} & made
