"""Talk to the in-cluster moto server from inside its pod (e2e/run.sh pipes this file to
``kubectl exec -i deploy/moto -- python - COMMAND ...``).

Commands:
  create-roles ARN...     create the IAM roles the CRs name (moto has none), idempotently
  list-keys BUCKET [PFX]  print the bucket's keys under PFX, one per line
  bucket-exists BUCKET    print "yes" or "no"
  create-bucket NAME REGION
                          create a bucket (a directory bucket for base--azid--x-s3 names)
  seed BUCKET PREFIX      create the bucket if needed and put 3 small objects under PREFIX
                          (stands in for an S3ExpressBucket's spec.import.source)

MOTO_ENDPOINT overrides the server URL (tests). Dummy credentials only (moto accepts any).
Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import boto3
from botocore.config import Config

ENDPOINT = os.environ.get("MOTO_ENDPOINT", "http://127.0.0.1:5000")
# moto has no CreateSession: botocore's own switch signs directory-bucket calls with SigV4.
os.environ["AWS_S3_DISABLE_EXPRESS_SESSION_AUTH"] = "true"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/e2e"},
            "Action": "sts:AssumeRoleWithWebIdentity",
        }
    ],
}


def client(service: str, region: str = "us-east-1") -> Any:
    factory: Any = boto3.client  # service is a runtime string: skip the stubs' Literal overloads
    return factory(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's dummy credentials
        config=Config(s3={"addressing_style": "path"}),
    )


def create_roles(arns: list[str]) -> None:
    iam = client("iam", "us-east-1")
    for arn in arns:
        # role/PATH/NAME: the operator checks the path against its tenancy policy and reads
        # the role back, so the role must exist under exactly that path.
        path_name = arn.split(":role", 1)[1]
        path, name = path_name.rsplit("/", 1)
        try:
            iam.create_role(
                RoleName=name, Path=path + "/", AssumeRolePolicyDocument=json.dumps(TRUST)
            )
            print(f"created role {name}")
        except iam.exceptions.EntityAlreadyExistsException:
            print(f"role {name} exists")


def list_keys(bucket: str, prefix: str) -> None:
    s3 = client("s3")
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            print(item["Key"])


def create_bucket(name: str, region: str) -> None:
    s3 = client("s3", region)
    config: dict[str, Any] = {}
    if name.endswith("--x-s3"):
        az_id = name.removesuffix("--x-s3").rsplit("--", 1)[-1]
        config = {
            "Location": {"Type": "AvailabilityZone", "Name": az_id},
            "Bucket": {"Type": "Directory", "DataRedundancy": "SingleAvailabilityZone"},
        }
    elif region != "us-east-1":
        config = {"LocationConstraint": region}
    try:
        if config:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration=config)
        else:
            s3.create_bucket(Bucket=name)
        print(f"created bucket {name}")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        print(f"bucket {name} exists")


def seed(bucket: str, prefix: str) -> None:
    create_bucket(bucket, "us-east-1")
    s3 = client("s3", "us-east-1")
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"{prefix}part-{i:05d}.json", Body=b'{"e2e": %d}\n' % i)
    print(f"seeded s3://{bucket}/{prefix} with 3 objects")


def bucket_exists(bucket: str) -> None:
    s3 = client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}:
            print("no")
            return
        raise
    print("yes")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    try:
        if command == "create-roles":
            create_roles(args)
        elif command == "bucket-exists" and len(args) == 1:
            bucket_exists(args[0])
        elif command == "create-bucket" and len(args) == 2:
            create_bucket(args[0], args[1])
        elif command == "seed" and len(args) == 2:
            seed(args[0], args[1])
        elif command == "list-keys" and args:
            list_keys(args[0], args[1] if len(args) > 1 else "")
        else:
            print(f"moto_ctl: unknown command or missing arguments: {argv}", file=sys.stderr)
            return 2
    except Exception as exc:  # one line for the e2e log, never a traceback
        print(f"moto_ctl {command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
