"""Property-style tenant isolation (hypothesis): random tenants, CR names and AZs.

Two properties, checked against moto through the real reconcile and delete functions:

* no two S3ExpressBuckets ever share a bucket or an IAM policy: every Ready CR's bucket and
  policy carry that CR's owner tags, and no two Ready CRs report the same bucket or policy
  (colliding names, e.g. namespace ``a-b`` + ``c`` vs ``a`` + ``b-c``, or an explicit
  baseName another tenant already uses, end as Ready=False instead);
* deleting any subset of the CRs (with ``deletionPolicy: Delete``, the worst case) never
  removes another CR's bucket, objects or policy.

Plus a pure one: the default base name is a valid bucket base for every Kubernetes
namespace and object name, in every AZ ID form.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from zonemount_operator import conditions, names
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.bucket import delete_bucket_resources, reconcile_bucket

# Small pools so that collisions (same name, hyphen-ambiguous names, shared baseNames) are
# common; AZ IDs of moto's us-east-1.
NAMESPACES = ["a", "a-b", "team"]
CR_NAMES = ["data", "b-c", "c"]
BASES = [None, None, "shared", "a-b-c"]
ZONES = ["use1-az4", "use1-az4", "use1-az6"]

tenant = st.tuples(
    st.sampled_from(NAMESPACES),
    st.sampled_from(CR_NAMES),
    st.sampled_from(ZONES),
    st.sampled_from(BASES),
    st.booleans(),  # with an access role
)


def _ready(status: dict[str, Any]) -> bool:
    return conditions.is_true(status.get("conditions"), "Ready")


@pytest.mark.integration
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenants=st.lists(tenant, min_size=2, max_size=4, unique_by=lambda t: (t[0], t[1])),
    doomed=st.sets(st.integers(min_value=0, max_value=3)),
)
# The collisions that matter, always run: same name in two namespaces; hyphen-ambiguous
# default names (a-b + c == a + b-c); one explicit baseName in two namespaces, the owner
# deleted or the intruder deleted.
@example(
    tenants=[("a", "data", ZONES[0], None, True), ("team", "data", ZONES[0], None, True)],
    doomed={1},
)
@example(
    tenants=[("a-b", "c", ZONES[0], None, True), ("a", "b-c", ZONES[0], None, True)], doomed={1}
)
@example(
    tenants=[("a", "c", ZONES[0], "shared", True), ("team", "c", ZONES[0], "shared", True)],
    doomed={1},
)
@example(
    tenants=[
        ("a", "c", ZONES[0], "shared", False),
        ("team", "data", ZONES[0], "shared", True),
        ("a-b", "c", ZONES[2], "shared", False),
    ],
    doomed={0, 1},
)
def test_tenants_never_share_and_deletes_never_cross(
    admin: Boto3BucketAdmin,
    tenants: list[tuple[str, str, str, str | None, bool]],
    doomed: set[int],
) -> None:
    run = "p" + uuid.uuid4().hex[:5]  # this example's own names on the session's moto
    iam = admin.client("iam", "us-east-1")
    s3 = admin.s3("us-east-1")
    crs: list[dict[str, Any]] = []
    for ns_short, name, az_id, base, with_role in tenants:
        ns = f"{run}-{ns_short}"
        spec: dict[str, Any] = {
            "region": "us-east-1",
            "availabilityZoneId": az_id,
            "deletionPolicy": "Delete",
        }
        if base:
            spec["baseName"] = f"{run}-{base}"
        if with_role:
            role = iam.create_role(
                RoleName=f"{run}-{uuid.uuid4().hex[:8]}",
                Path=f"/zonemount/{ns}/",
                AssumeRolePolicyDocument="{}",
            )
            spec["access"] = {"roleArns": [role["Role"]["Arn"]]}
        uid = str(uuid.uuid4())
        out = reconcile_bucket(name, ns, spec, None, 1, admin=admin, uid=uid)
        crs.append({"ns": ns, "name": name, "uid": uid, "spec": spec, "status": out.status})

    ready = [cr for cr in crs if _ready(cr["status"])]
    assert ready, "the first tenant always gets its bucket"
    buckets = [cr["status"]["bucketName"] for cr in ready]
    assert len(set(buckets)) == len(buckets)
    policies = [cr["status"]["policyArn"] for cr in ready if cr["status"].get("policyArn")]
    assert len(set(policies)) == len(policies)
    for cr in ready:
        owner = names.Owner(cr["uid"], cr["ns"], cr["name"])
        bucket = cr["status"]["bucketName"]
        assert names.owner_from_tags(admin.bucket_tags("us-east-1", bucket)) == owner
        if cr["status"].get("policyArn"):
            assert (
                names.owner_from_tags(admin.policy_tags(cr["status"]["policyArn"]) or {}) == owner
            )
        s3.put_object(Bucket=bucket, Key="mine", Body=cr["uid"].encode())
    event(f"{len(crs) - len(ready)} of {len(crs)} refused")
    for cr in crs:
        if not _ready(cr["status"]):
            reason = conditions.get(cr["status"]["conditions"], "Ready")["reason"]  # type: ignore[index]
            assert reason == "BucketOwnedByAnother", cr["status"]["conditions"]

    # Delete a random subset, Ready or not (a refused CR's status still names the bucket).
    for i, cr in enumerate(crs):
        if i in doomed:
            delete_bucket_resources(
                cr["name"], cr["spec"], cr["status"], admin, uid=cr["uid"], namespace=cr["ns"]
            )
    for i, cr in enumerate(crs):
        if i in doomed or not _ready(cr["status"]):
            continue
        bucket = cr["status"]["bucketName"]
        assert s3.get_object(Bucket=bucket, Key="mine")["Body"].read() == cr["uid"].encode()
        if cr["status"].get("policyArn"):
            assert admin.policy_exists(cr["status"]["policyArn"])


k8s_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
k8s_name = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?){0,3}",
    fullmatch=True,
)
az_id = st.sampled_from(["use1-az4", "apne1-az4", "usw2-lax1-az1", "use1-atl2-az1"])


@pytest.mark.unit
@settings(max_examples=300)
@given(namespace=k8s_label, name=k8s_name, zone=az_id)
def test_default_base_name_is_always_a_valid_bucket_name(
    namespace: str, name: str, zone: str
) -> None:
    base = names.default_base_name(namespace, name)
    bucket = names.directory_bucket_name(base, zone)  # raises SpecError if not valid
    assert names.parse_directory_bucket(bucket) == names.DirectoryBucketName(base, zone)
    assert len(base) <= names.DEFAULT_BASE_MAX
    raw = f"{namespace}-{name}"
    readable = (
        len(raw) <= names.DEFAULT_BASE_MAX
        and "." not in raw
        and "--" not in raw
        and not raw.startswith(names.RESERVED_PREFIXES)
    )
    assert (base == raw) == readable  # the plain <namespace>-<name> whenever it works
