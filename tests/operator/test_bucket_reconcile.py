"""S3ExpressBucket reconcile against moto in server mode (S3, IAM, EC2, STS over loopback)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from zonemount_operator import conditions
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.bucket import (
    delete_bucket_resources,
    detect_drift,
    reconcile_bucket,
    run_import,
)
from zonemount_operator.errors import (
    AccessDeniedError,
    BucketNameTakenError,
    SpecError,
    TransientAwsError,
)
from zonemount_operator.spec import parse_bucket
from zonemount_operator.tenancy import Rules, TenancyPolicy

from tests.operator.operator_testlib import aws_error, unique_base

pytestmark = pytest.mark.integration


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = conditions.get(status["conditions"], type_)
    assert found is not None, status
    return dict(found)


def directory_buckets(admin: Boto3BucketAdmin) -> set[str]:
    resp = admin.s3("us-east-1").list_directory_buckets()
    return {b["Name"] for b in resp.get("Buckets", [])}


def test_create_resolves_zone_and_converges(
    uid: str, admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    base, role_arn = unique_base(), role()
    spec = {
        "region": "us-east-1",
        "availabilityZone": "us-east-1d",
        "baseName": base,
        "lifecycle": {"expireAfterDays": 3, "abortIncompleteMultipartUploadAfterDays": 1},
        "access": {"roleArns": [role_arn]},
    }
    out = reconcile_bucket("ignored", "ns", spec, None, 1, admin=admin, uid=uid)
    assert out.error is None, out.error
    st = out.status
    bucket = f"{base}--use1-az4--x-s3"
    assert st["bucketName"] == bucket
    assert st["availabilityZoneId"] == "use1-az4"
    assert st["availabilityZone"] == "us-east-1d"
    assert st["bucketArn"] == f"arn:aws:s3express:us-east-1:123456789012:bucket/{bucket}"
    assert st["endpoint"] == "https://s3express-use1-az4.us-east-1.amazonaws.com"
    assert st["observedGeneration"] == 1
    assert [c["type"] for c in st["conditions"]] == list(conditions.BUCKET_TYPES)
    assert all(c["status"] == "True" for c in st["conditions"]), st["conditions"]
    assert out.events == [f"created directory bucket {bucket} in us-east-1d (use1-az4)"]
    assert bucket in directory_buckets(admin)

    s3 = admin.s3("us-east-1")
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["zonemount-expire"]["Expiration"] == {"Days": 3}
    assert rules["zonemount-abort-mpu"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    iam = admin.client("iam", "us-east-1")
    policy = iam.get_policy(PolicyArn=st["policyArn"])["Policy"]
    assert policy["Path"] == "/zonemount/"
    doc = iam.get_policy_version(PolicyArn=st["policyArn"], VersionId=policy["DefaultVersionId"])[
        "PolicyVersion"
    ]["Document"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert doc["Statement"] == [
        {
            "Sid": "ZonemountCreateSession",
            "Effect": "Allow",
            "Action": "s3express:CreateSession",
            "Resource": st["bucketArn"],
        }
    ]
    assert admin.attached_roles(st["policyArn"]) == {role_arn.rsplit("/", 1)[1]}

    # Idempotent: a second pass changes nothing (same transition times, no events).
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    again = reconcile_bucket("ignored", "ns", spec, st, 1, admin=admin, uid=uid, now=later)
    assert again.error is None and again.events == []
    assert again.status == st


def test_update_session_mode_roles_and_removal(
    uid: str, admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    base, r1, r2 = unique_base(), role(), role()
    spec: dict[str, Any] = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az6",
        "baseName": base,
        "access": {"roleArns": [r1]},
    }
    st = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid).status
    arn = st["policyArn"]
    assert st["availabilityZone"] == "us-east-1a"

    spec["access"] = {"roleArns": [r2], "sessionMode": "ReadOnly"}
    out = reconcile_bucket("b", "ns", spec, st, 2, admin=admin, uid=uid)
    assert out.ready and out.status["policyArn"] == arn
    assert admin.attached_roles(arn) == {r2.rsplit("/", 1)[1]}
    iam = admin.client("iam", "us-east-1")
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert doc["Statement"][0]["Condition"] == {
        "StringEquals": {"s3express:SessionMode": "ReadOnly"}
    }

    spec["access"] = {}
    out = reconcile_bucket("b", "ns", spec, out.status, 3, admin=admin, uid=uid)
    assert out.ready and out.status["policyArn"] is None
    assert cond(out.status, "AccessReady")["reason"] == "NoAccessRequested"
    assert not admin.policy_exists(arn)


def test_unknown_zone_is_a_spec_error_with_choices(uid: str, admin: Boto3BucketAdmin) -> None:
    spec = {"region": "us-east-1", "availabilityZoneId": "use1-az9", "baseName": unique_base()}
    out = reconcile_bucket("b", "ns", spec, None, 4, admin=admin, uid=uid)
    assert isinstance(out.error, SpecError)
    ready = cond(out.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "UnknownAvailabilityZone"
    assert "us-east-1d (use1-az4)" in ready["message"]
    assert cond(out.status, "AccessReady")["status"] == "Unknown"


def test_invalid_name_rejected_before_calling_aws(uid: str, admin: Boto3BucketAdmin) -> None:
    before = directory_buckets(admin)
    long_base = "a" * 48
    out = reconcile_bucket(
        "b",
        "ns",
        {"region": "us-east-1", "availabilityZoneId": "use1-az4", "baseName": long_base},
        None,
        1,
        admin=admin,
        uid=uid,
    )
    assert isinstance(out.error, SpecError)
    assert "shorten baseName to at most 47 characters" in str(out.error)
    out = reconcile_bucket(  # no namespace: the base defaults to metadata.name alone
        "Bad_Name",
        None,
        {"region": "us-east-1", "availabilityZoneId": "use1-az4"},
        None,
        1,
        admin=admin,
        uid=uid,
    )
    assert isinstance(out.error, SpecError) and "set spec.baseName" in str(out.error)
    assert directory_buckets(admin) == before


def test_access_denied_names_the_missing_permission(uid: str, admin: Boto3BucketAdmin) -> None:
    admin.s3("us-east-1").meta.events.register(
        "before-send.s3.PutBucketEncryption", aws_error(403, "AccessDenied")
    )
    spec = {"region": "us-east-1", "availabilityZoneId": "use1-az4", "baseName": unique_base()}
    out = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid)
    assert isinstance(out.error, AccessDeniedError)
    bucket_ready = cond(out.status, "BucketReady")
    assert bucket_ready["reason"] == "AccessDenied"
    assert "s3express:PutEncryptionConfiguration" in bucket_ready["message"]
    assert cond(out.status, "Ready")["reason"] == "AccessDenied"


def test_throttling_is_transient(uid: str, admin: Boto3BucketAdmin) -> None:
    admin.client("ec2", "eu-west-1").meta.events.register(
        "before-send.ec2.DescribeAvailabilityZones", aws_error(503, "RequestLimitExceeded")
    )
    spec = {"region": "eu-west-1", "availabilityZoneId": "euw1-az1", "baseName": unique_base()}
    out = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid)
    assert isinstance(out.error, TransientAwsError)
    assert cond(out.status, "BucketReady")["reason"] == "AwsUnavailable"


def test_bucket_owned_elsewhere_is_a_condition(uid: str, admin: Boto3BucketAdmin) -> None:
    admin.s3("us-east-1").meta.events.register(
        "before-send.s3.CreateBucket", aws_error(409, "BucketAlreadyExists")
    )
    spec = {"region": "us-east-1", "availabilityZoneId": "use1-az4", "baseName": unique_base()}
    out = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid)
    assert isinstance(out.error, BucketNameTakenError)
    assert cond(out.status, "Ready")["reason"] == "BucketNameTaken"
    assert "choose another spec.baseName" in cond(out.status, "Ready")["message"]


def test_already_owned_by_you_is_success(uid: str, admin: Boto3BucketAdmin) -> None:
    spec = {"region": "us-east-1", "availabilityZoneId": "use1-az4", "baseName": unique_base()}
    first = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid)
    assert first.ready
    admin.s3("us-east-1").meta.events.register(
        "before-send.s3.CreateBucket", aws_error(409, "BucketAlreadyOwnedByYou")
    )
    bucket = first.status["bucketName"]
    assert admin.create_directory_bucket("us-east-1", bucket, "use1-az4") is False
    out = reconcile_bucket("b", "ns", spec, first.status, 1, admin=admin, uid=uid)
    assert out.error is None and out.ready and out.events == []


def test_delete_retain_keeps_bucket_and_drops_policy(
    uid: str, admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    spec = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "access": {"roleArns": [role()]},
    }
    st = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid).status
    done = delete_bucket_resources("b", spec, st, admin, uid=uid, namespace="ns")
    assert st["bucketName"] in directory_buckets(admin)
    assert not admin.policy_exists(st["policyArn"])
    assert done[-1].startswith("retained bucket")
    assert delete_bucket_resources(
        "b", spec, st, admin, uid=uid, namespace="ns"
    )  # idempotent second call


def test_delete_policy_delete_empties_and_removes(uid: str, admin: Boto3BucketAdmin) -> None:
    spec = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "deletionPolicy": "Delete",
    }
    st = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid).status
    s3 = admin.s3("us-east-1")
    for i in range(3):
        s3.put_object(Bucket=st["bucketName"], Key=f"k/{i}", Body=b"x" * i)
    s3.create_multipart_upload(Bucket=st["bucketName"], Key="k/partial")
    done = delete_bucket_resources("b", spec, st, admin, uid=uid, namespace="ns")
    assert done == [f"deleted bucket {st['bucketName']} and 3 objects (deletionPolicy: Delete)"]
    assert st["bucketName"] not in directory_buckets(admin)
    # gone already: a no-op
    assert delete_bucket_resources("b", spec, st, admin, uid=uid, namespace="ns") == []


def test_drift_detected_and_repaired(
    uid: str, admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    spec = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "access": {"roleArns": [role()]},
    }
    st = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid).status
    assert detect_drift(st, admin) == []
    admin.s3("us-east-1").delete_bucket(Bucket=st["bucketName"])
    admin.delete_policy(st["policyArn"])
    assert detect_drift(st, admin) == [
        f"bucket {st['bucketName']} was deleted out of band",
        f"IAM policy {st['policyArn']} was deleted out of band",
    ]
    repaired = reconcile_bucket("b", "ns", spec, st, 1, admin=admin, uid=uid)
    assert repaired.ready and detect_drift(repaired.status, admin) == []


def test_import_copies_and_completes(uid: str, admin: Boto3BucketAdmin, bucket: str) -> None:
    s3 = admin.s3("us-east-1")
    blobs = {f"in/{i}.bin": bytes([i]) * (1000 + i) for i in range(12)}
    for key, body in blobs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    spec_dict = {
        "region": "us-east-1",
        "availabilityZoneId": "use1-az4",
        "baseName": unique_base(),
        "import": {"source": f"s3://{bucket}/in/"},
    }
    allowed = TenancyPolicy(Rules(import_sources=(f"s3://{bucket}/in/",)))
    out = reconcile_bucket("b", "ns", spec_dict, None, 1, admin=admin, uid=uid, policy=allowed)
    assert cond(out.status, "ImportComplete")["reason"] == "ImportPending"
    assert cond(out.status, "Ready")["status"] == "False"
    reports: list[dict[str, Any]] = []
    final = run_import(
        parse_bucket("b", spec_dict),
        out.status,
        admin,
        reports.append,
        namespace="ns",
        policy=allowed,
        owner_uid=uid,
    )
    assert final["phase"] == "Complete" and final["objectsCopied"] == 12
    assert final["bytesCopied"] == sum(len(b) for b in blobs.values())
    dst = out.status["bucketName"]
    for key, body in blobs.items():
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body
    done = reconcile_bucket(
        "b",
        "ns",
        spec_dict,
        {**out.status, "import": final},
        1,
        admin=admin,
        uid=uid,
        policy=allowed,
    )
    assert done.ready and cond(done.status, "ImportComplete")["reason"] == "ImportComplete"
    rerun = run_import(
        parse_bucket("b", spec_dict),
        done.status,
        admin,
        reports.append,
        namespace="ns",
        policy=allowed,
        owner_uid=uid,
    )
    assert rerun["objectsSkipped"] == 12 and rerun["objectsCopied"] == 0
