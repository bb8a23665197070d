"""The ``BucketAdmin`` seam: the S3 Express control plane, IAM, EC2 and STS behind one class.

Reconcile code talks to AWS only through :class:`BucketAdmin` (a Protocol) so that the real
implementation, :class:`Boto3BucketAdmin`, can be pointed at AWS or at a local endpoint
(moto on loopback in the tests). Every method is idempotent and translates botocore's errors
into the hierarchy of :mod:`zonemount_operator.errors`:

* throttling codes, 5xx and connection failures -> :class:`TransientAwsError` (retry later);
* AccessDenied-like codes -> :class:`AccessDeniedError` naming the IAM action we needed;
* other client errors -> :class:`PermanentAwsError` with AWS's own message.

Clients come from the contract's one factory (:mod:`zonemount_contract.s3client`) with its
local-endpoint policy: against a custom endpoint (``endpoint_url``) S3 uses path-style
addressing and no S3 Express session auth (local servers do not speak CreateSession). Against AWS,
botocore routes directory-bucket calls to the regional/zonal endpoints and runs
CreateSession itself. Credentials come from the standard chain and never appear in errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import botocore.exceptions
import botocore.session
from zonemount_contract.aws_errors import ErrorClass, classify
from zonemount_contract.s3client import create_client

from zonemount_operator import names
from zonemount_operator.errors import (
    AccessDeniedError,
    AwsError,
    BucketNameTakenError,
    PermanentAwsError,
    TransientAwsError,
)

# botocore operation name -> IAM action the operator needs for it (docs/operator.md lists them).
PERMISSIONS = {
    "CreateBucket": "s3express:CreateBucket",
    "DeleteBucket": "s3express:DeleteBucket",
    "HeadBucket": "s3express:CreateSession",
    "ListDirectoryBuckets": "s3express:ListAllMyDirectoryBuckets",
    "PutBucketLifecycleConfiguration": "s3express:PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3express:PutLifecycleConfiguration",
    "PutBucketEncryption": "s3express:PutEncryptionConfiguration",
    "GetBucketLifecycleConfiguration": "s3express:GetLifecycleConfiguration",
    "GetBucketEncryption": "s3express:GetEncryptionConfiguration",
    "ListObjectsV2": "s3express:CreateSession",
    "DeleteObjects": "s3express:CreateSession",
    "ListMultipartUploads": "s3express:CreateSession",
    "AbortMultipartUpload": "s3express:CreateSession",
    "DescribeAvailabilityZones": "ec2:DescribeAvailabilityZones",
    "GetCallerIdentity": "sts:GetCallerIdentity",
    "ListTagsForResource": "s3express:ListTagsForResource",
    "TagResource": "s3express:TagResource",
    "GetRole": "iam:GetRole",
    "ListPolicyTags": "iam:ListPolicyTags",
}


def permission_for(service: str, operation: str) -> str:
    if operation in PERMISSIONS:
        return PERMISSIONS[operation]
    return f"{service}:{operation}"


def translate(error: Exception, service: str, operation: str) -> AwsError:
    """Map a botocore exception to the operator's error hierarchy (one line, no secrets)."""
    if isinstance(error, botocore.exceptions.ClientError):
        err = error.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = str(err.get("Message", "") or code).splitlines()[0] if err else str(error)
        kind = classify(code, status)  # the one classifier shared with the CSI driver and fs
        if kind is ErrorClass.ACCESS_DENIED:
            permission = permission_for(service, operation)
            return AccessDeniedError(
                f"{operation} was denied ({code or status}): grant the operator's role "
                f"{permission}",
                operation,
                permission,
                code,
            )
        if kind.retryable:
            return TransientAwsError(
                f"{operation} failed transiently ({code or status}): {text}", operation, code
            )
        if code == "BucketAlreadyExists":
            return BucketNameTakenError(
                f"the bucket name is owned by another AWS account ({code}): choose another "
                "spec.baseName",
                operation,
                code,
            )
        return PermanentAwsError(
            f"{operation} was rejected ({code or status}): {text}", operation, code
        )
    if isinstance(
        error,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ProxyConnectionError,
    ):
        return TransientAwsError(
            f"{operation}: cannot reach AWS ({type(error).__name__})", operation
        )
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AccessDeniedError(
            f"{operation}: no AWS credentials found: give the operator IRSA/Pod Identity or "
            "AWS_* environment variables",
            operation,
            permission_for(service, operation),
        )
    return PermanentAwsError(f"{operation} failed: {type(error).__name__}: {error}", operation)


def error_code(error: BaseException) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _sign_as_s3(request: Any, **_: Any) -> None:
    request.context.setdefault("signing", {})["signing_name"] = "s3"


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


@dataclass(frozen=True)
class Zone:
    name: str
    zone_id: str
    region: str


class BucketAdmin(Protocol):
    """The control-plane operations reconcile needs (all idempotent)."""

    def zones(self, region: str) -> list[Zone]: ...

    def account_id(self) -> str: ...

    def create_directory_bucket(
        self, region: str, bucket: str, az_id: str, tags: Mapping[str, str] | None = None
    ) -> bool: ...

    def bucket_exists(self, region: str, bucket: str) -> bool: ...

    def bucket_tags(self, region: str, bucket: str) -> dict[str, str]: ...

    def tag_bucket(self, region: str, bucket: str, tags: Mapping[str, str]) -> None: ...

    def role_arn(self, role: str, partition: str = "aws") -> str | None: ...

    def policy_tags(self, policy_arn: str) -> dict[str, str] | None: ...

    def put_lifecycle(
        self, region: str, bucket: str, expire_days: int | None, abort_days: int | None
    ) -> None: ...

    def put_encryption(self, region: str, bucket: str, kms_key_arn: str | None) -> None: ...

    def ensure_policy(
        self,
        region: str,
        owner_uid: str,
        document: dict[str, Any],
        description: str,
        tags: Mapping[str, str] | None = None,
    ) -> str: ...

    def policy_exists(self, arn: str) -> bool: ...

    def attached_roles(self, policy_arn: str) -> set[str]: ...

    def attach_role_policy(self, role: str, policy_arn: str) -> None: ...

    def detach_role_policy(self, role: str, policy_arn: str) -> None: ...

    def delete_policy(self, policy_arn: str) -> None: ...

    def empty_bucket(self, region: str, bucket: str) -> int: ...

    def delete_bucket(self, region: str, bucket: str) -> None: ...

    def s3(self, region: str) -> Any: ...


def _subset(want: Any, have: Any) -> bool:
    """``want`` is contained in ``have`` (AWS answers with extra fields and defaults)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset(v, have.get(k)) for k, v in want.items())
    return bool(want == have)


def _same_rules(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    by_id = {r.get("ID"): r for r in have}
    return len(have) == len(want) and all(_subset(r, by_id.get(r["ID"])) for r in want)


class Boto3BucketAdmin:
    """:class:`BucketAdmin` over botocore clients made by the contract's one factory
    (:func:`zonemount_contract.s3client.create_client`; AWS, or any endpoint via
    ``endpoint_url``, a local server's policy: path-style, no CreateSession)."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        session: botocore.session.Session | None = None,
        max_attempts: int = 5,
        event_hooks: Callable[[Any], None] | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self._session = session or botocore.session.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._zones: dict[str, list[Zone]] = {}
        self._account: str | None = None
        self._max_attempts = max_attempts
        self._event_hooks = event_hooks

    # -- clients ---------------------------------------------------------------------------
    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:  # client creation is not thread-safe; clients themselves are
            if key not in self._clients:
                client = create_client(
                    service,
                    session=self._session,
                    endpoint_url=self.endpoint_url,
                    region=region,
                    max_attempts=self._max_attempts,
                    max_pool_connections=64,
                    local_endpoint=True,
                    # S3 Control puts the account ID into the host name; a local endpoint
                    # (moto) serves every account on one host.
                    inject_host_prefix=not (self.endpoint_url and service == "s3control"),
                )
                if self.endpoint_url and service == "s3control":
                    # Tagging a directory bucket's ARN is signed for "s3express"; a local server
                    # routes S3 Control requests by the "s3" signing name. AWS is unaffected.
                    client.meta.events.register("before-sign.s3-control", _sign_as_s3)
                if self._event_hooks is not None:
                    self._event_hooks(client)
                self._clients[key] = client
            return self._clients[key]

    def s3(self, region: str) -> Any:
        return self.client("s3", region)

    @contextmanager
    def _call(self, service: str, operation: str) -> Iterator[None]:
        try:
            yield
        except AwsError:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise translate(exc, service, operation) from exc

    # -- EC2 / STS -------------------------------------------------------------------------
    def zones(self, region: str) -> list[Zone]:
        if region not in self._zones:
            with self._call("ec2", "DescribeAvailabilityZones"):
                resp = self.client("ec2", region).describe_availability_zones(
                    AllAvailabilityZones=True
                )
            self._zones[region] = [
                Zone(z["ZoneName"], z["ZoneId"], z.get("RegionName", region))
                for z in resp["AvailabilityZones"]
            ]
        return self._zones[region]

    def account_id(self) -> str:
        if self._account is None:
            region = self._session.get_config_variable("region") or "us-east-1"
            with self._call("sts", "GetCallerIdentity"):
                self._account = str(self.client("sts", region).get_caller_identity()["Account"])
        return self._account

    # -- S3 control plane ------------------------------------------------------------------
    def create_directory_bucket(
        self, region: str, bucket: str, az_id: str, tags: Mapping[str, str] | None = None
    ) -> bool:
        """Create the bucket (with ``tags``, atomically on AWS); False when it already
        exists in this account (the caller then checks who owns it)."""
        config: dict[str, Any] = {
            "Location": {"Type": "AvailabilityZone", "Name": az_id},
            "Bucket": {"Type": "Directory", "DataRedundancy": "SingleAvailabilityZone"},
        }
        if tags:
            config["Tags"] = _tag_list(tags)
        try:
            with self._call("s3", "CreateBucket"):
                self.s3(region).create_bucket(Bucket=bucket, CreateBucketConfiguration=config)
        except AwsError as exc:
            if exc.code == "BucketAlreadyOwnedByYou":
                return False
            raise
        return True

    def bucket_exists(self, region: str, bucket: str) -> bool:
        try:
            with self._call("s3", "HeadBucket"):
                self.s3(region).head_bucket(Bucket=bucket)
        except AwsError as exc:
            if exc.code in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise
        return True

    def _bucket_arn(self, region: str, bucket: str) -> str:
        return names.directory_bucket_arn(region, self.account_id(), bucket)

    def bucket_tags(self, region: str, bucket: str) -> dict[str, str]:
        """The directory bucket's tags (S3 Control ListTagsForResource on its ARN)."""
        with self._call("s3control", "ListTagsForResource"):
            resp = self.client("s3control", region).list_tags_for_resource(
                AccountId=self.account_id(), ResourceArn=self._bucket_arn(region, bucket)
            )
        return {t["Key"]: t["Value"] for t in resp.get("Tags", [])}

    def tag_bucket(self, region: str, bucket: str, tags: Mapping[str, str]) -> None:
        """Add/overwrite ``tags`` on the directory bucket (S3 Control TagResource)."""
        with self._call("s3control", "TagResource"):
            self.client("s3control", region).tag_resource(
                AccountId=self.account_id(),
                ResourceArn=self._bucket_arn(region, bucket),
                Tags=_tag_list(tags),
            )

    def put_lifecycle(
        self, region: str, bucket: str, expire_days: int | None, abort_days: int | None
    ) -> None:
        """Make the bucket's lifecycle these rules; reads first, writes only a difference."""
        s3 = self.s3(region)
        current = self.lifecycle(region, bucket)
        if expire_days is None and abort_days is None:
            if not current:
                return
            with self._call("s3", "DeleteBucketLifecycle"):
                s3.delete_bucket_lifecycle(Bucket=bucket)
            return
        rules: list[dict[str, Any]] = []
        if expire_days is not None:
            rules.append(
                {
                    "ID": "zonemount-expire",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": expire_days},
                }
            )
        if abort_days is not None:
            rules.append(
                {
                    "ID": "zonemount-abort-mpu",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_days},
                }
            )
        if _same_rules(current, rules):
            return
        with self._call("s3", "PutBucketLifecycleConfiguration"):
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": rules}
            )

    def lifecycle(self, region: str, bucket: str) -> list[dict[str, Any]]:
        try:
            with self._call("s3", "GetBucketLifecycleConfiguration"):
                resp = self.s3(region).get_bucket_lifecycle_configuration(Bucket=bucket)
        except AwsError as exc:
            if exc.code == "NoSuchLifecycleConfiguration":
                return []
            raise
        return list(resp.get("Rules", []))

    def put_encryption(self, region: str, bucket: str, kms_key_arn: str | None) -> None:
        default: dict[str, Any] = {"SSEAlgorithm": "AES256"}
        if kms_key_arn:
            default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_arn}
        rule = {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}
        try:
            with self._call("s3", "GetBucketEncryption"):
                have = self.s3(region).get_bucket_encryption(Bucket=bucket)
            rules = have.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        except AwsError as exc:
            if exc.code != "ServerSideEncryptionConfigurationNotFoundError":
                raise
            rules = []
        if [_subset(rule, r) for r in rules] == [True]:
            return  # already so: no write
        with self._call("s3", "PutBucketEncryption"):
            self.s3(region).put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]}
            )

    def empty_bucket(self, region: str, bucket: str) -> int:
        """Abort multipart uploads, delete every object; returns objects deleted."""
        s3 = self.s3(region)
        with self._call("s3", "ListMultipartUploads"):
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            with self._call("s3", "AbortMultipartUpload"):
                s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        deleted = 0
        while True:
            with self._call("s3", "ListObjectsV2"):
                resp = s3.list_objects_v2(Bucket=bucket, MaxKeys=1000)
            keys = [{"Key": o["Key"]} for o in resp.get("Contents", [])]
            if not keys:
                return deleted
            with self._call("s3", "DeleteObjects"):
                out = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise TransientAwsError(
                    f"DeleteObjects left {len(out['Errors'])} objects ({first.get('Code')}: "
                    f"{first.get('Key')})",
                    "DeleteObjects",
                    str(first.get("Code", "")),
                )
            deleted += len(keys)

    def delete_bucket(self, region: str, bucket: str) -> None:
        try:
            with self._call("s3", "DeleteBucket"):
                self.s3(region).delete_bucket(Bucket=bucket)
        except AwsError as exc:
            if exc.code not in {"NoSuchBucket", "404"}:
                raise

    # -- IAM -------------------------------------------------------------------------------
    def _iam(self, partition: str) -> Any:
        """The IAM client of ``partition`` (IAM is global per partition: ``aws-cn`` and
        ``aws-us-gov`` have their own endpoints and accounts)."""
        return self.client("iam", names.iam_region(partition))

    def _iam_of(self, arn: str) -> Any:
        """The IAM client of the partition ``arn`` lives in."""
        return self._iam(names.arn_partition(arn))

    def role_arn(self, role: str, partition: str = "aws") -> str | None:
        """The real ARN (with its path) of the role named ``role`` in ``partition``; None if
        there is none."""
        try:
            with self._call("iam", "GetRole"):
                return str(self._iam(partition).get_role(RoleName=role)["Role"]["Arn"])
        except AwsError as exc:
            if exc.code == "NoSuchEntity":
                return None
            raise

    def policy_tags(self, policy_arn: str) -> dict[str, str] | None:
        """The managed policy's tags; None when the policy does not exist."""
        try:
            with self._call("iam", "ListPolicyTags"):
                resp = self._iam_of(policy_arn).list_policy_tags(PolicyArn=policy_arn)
        except AwsError as exc:
            if exc.code == "NoSuchEntity":
                return None
            raise
        return {t["Key"]: t["Value"] for t in resp.get("Tags", [])}

    def ensure_policy(
        self,
        region: str,
        owner_uid: str,
        document: dict[str, Any],
        description: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create the session policy of the S3ExpressBucket ``owner_uid`` (named and placed by
        :func:`names.policy_name`/:func:`names.policy_arn`, in ``region``'s partition) or make
        ``document`` its default version; returns its ARN."""
        name = names.policy_name(owner_uid)
        arn = names.policy_arn(region, self.account_id(), owner_uid)
        iam = self._iam_of(arn)
        body = json.dumps(document, sort_keys=True)
        try:
            with self._call("iam", "GetPolicy"):
                policy = iam.get_policy(PolicyArn=arn)["Policy"]
        except AwsError as exc:
            if exc.code != "NoSuchEntity":
                raise
            with self._call("iam", "CreatePolicy"):
                created = iam.create_policy(
                    PolicyName=name,
                    Path=names.POLICY_PATH,
                    PolicyDocument=body,
                    Description=description,
                    Tags=_tag_list(tags or {names.MANAGED_BY_TAG: names.MANAGED_BY}),
                )
            return str(created["Policy"]["Arn"])
        with self._call("iam", "GetPolicyVersion"):
            version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        current = version["PolicyVersion"]["Document"]
        if isinstance(current, str):
            from urllib.parse import unquote

            current = json.loads(unquote(current))
        if current == json.loads(body):
            return arn
        with self._call("iam", "ListPolicyVersions"):
            versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted(
            (v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"]
        )
        while len(old) >= 4:  # IAM keeps at most 5 versions
            with self._call("iam", "DeletePolicyVersion"):
                iam.delete_policy_version(PolicyArn=arn, VersionId=old.pop(0)["VersionId"])
        with self._call("iam", "CreatePolicyVersion"):
            iam.create_policy_version(PolicyArn=arn, PolicyDocument=body, SetAsDefault=True)
        return arn

    def policy_exists(self, arn: str) -> bool:
        try:
            with self._call("iam", "GetPolicy"):
                self._iam_of(arn).get_policy(PolicyArn=arn)
        except AwsError as exc:
            if exc.code == "NoSuchEntity":
                return False
            raise
        return True

    def attached_roles(self, policy_arn: str) -> set[str]:
        roles: set[str] = set()
        with self._call("iam", "ListEntitiesForPolicy"):
            paginator = self._iam_of(policy_arn).get_paginator("list_entities_for_policy")
            for page in paginator.paginate(PolicyArn=policy_arn, EntityFilter="Role"):
                roles.update(r["RoleName"] for r in page.get("PolicyRoles", []))
        return roles

    def attach_role_policy(self, role: str, policy_arn: str) -> None:
        with self._call("iam", "AttachRolePolicy"):
            self._iam_of(policy_arn).attach_role_policy(RoleName=role, PolicyArn=policy_arn)

    def detach_role_policy(self, role: str, policy_arn: str) -> None:
        try:
            with self._call("iam", "DetachRolePolicy"):
                self._iam_of(policy_arn).detach_role_policy(RoleName=role, PolicyArn=policy_arn)
        except AwsError as exc:
            if exc.code != "NoSuchEntity":
                raise

    def delete_policy(self, policy_arn: str) -> None:
        """Detach from every role, delete old versions, delete the policy (idempotent)."""
        if not self.policy_exists(policy_arn):
            return
        iam = self._iam_of(policy_arn)
        for role in sorted(self.attached_roles(policy_arn)):
            self.detach_role_policy(role, policy_arn)
        with self._call("iam", "ListPolicyVersions"):
            versions = iam.list_policy_versions(PolicyArn=policy_arn)["Versions"]
        for version in versions:
            if not version["IsDefaultVersion"]:
                with self._call("iam", "DeletePolicyVersion"):
                    iam.delete_policy_version(PolicyArn=policy_arn, VersionId=version["VersionId"])
        try:
            with self._call("iam", "DeletePolicy"):
                iam.delete_policy(PolicyArn=policy_arn)
        except AwsError as exc:
            if exc.code != "NoSuchEntity":
                raise
