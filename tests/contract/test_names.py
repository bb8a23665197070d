"""One name rule for three parts: the FUSE client, the CSI driver and the operator agree on
every bucket name, region and ARN (zonemount_contract.names).

Before the contract package each part had its own copy, and they disagreed: the CSI driver
accepted reserved bucket names such as ``xn--data`` that the FUSE client then refused, so a
user got a failed mount (INTERNAL) instead of INVALID_ARGUMENT naming the bucket.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from zonemount_contract.names import AZ_NAME_RE, NameRuleError, check_az_id, is_directory_bucket
from zonemount_csi.controller import _ZONE_RE as controller_zone_rule
from zonemount_csi.errors import CsiError
from zonemount_csi.validation import validate_bucket, validate_region, validate_role_arn
from zonemount_fs.errors import ConfigError
from zonemount_fs.names import validate_bucket_name
from zonemount_operator import names as operator_names
from zonemount_operator.errors import SpecError

pytestmark = pytest.mark.unit

_BUCKETISH = st.from_regex(
    r"(xn--|sthree-|amzn-s3-demo-)?[a-z0-9.-]{1,20}(--[a-z]{2,5}[0-9]-az[0-9]--x-s3|-s3alias)?",
    fullmatch=True,
)


def _fs_accepts(name: str) -> bool:
    try:
        validate_bucket_name(name)
    except ConfigError:
        return False
    return True


def _csi_accepts(name: str) -> bool:
    try:
        validate_bucket(name)
    except CsiError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        return False
    return True


@example("xn--data")  # the drift issue 15 reported: CSI accepted, FUSE refused
@example("data--use1-az4--x-s3")
@example("data--use1-AZ4--x-s3")
@example("my-bucket-s3alias")
@example("192.168.1.1")
@given(name=_BUCKETISH)
def test_fuse_client_and_csi_driver_accept_the_same_bucket_names(name: str) -> None:
    assert _fs_accepts(name) == _csi_accepts(name)


@example("data--use1-az4--x-s3")
@example("data--usw2-lax1-az1--x-s3")
@example("a--b--use1-az4--x-s3")
@example("sthree-data--use1-az4--x-s3")
@given(name=_BUCKETISH)
def test_fuse_client_and_operator_agree_on_directory_buckets(name: str) -> None:
    parsed = operator_names.parse_directory_bucket(name)
    fuse_accepts_directory = is_directory_bucket(name) and _fs_accepts(name)
    assert (parsed is not None) == fuse_accepts_directory
    if parsed is not None:
        assert parsed.name == name


@pytest.mark.parametrize("name", ["sthree-data--use1-az4--x-s3", "amzn-s3-demo-x--use1-az4--x-s3"])
def test_a_reserved_base_is_refused_everywhere(name: str) -> None:
    """The operator refused a reserved baseName, the CSI driver and the FUSE client took the
    same name as a directory bucket (issue 15's drift, one rule now)."""
    assert not _fs_accepts(name) and not _csi_accepts(name)
    assert operator_names.parse_directory_bucket(name) is None
    with pytest.raises(SpecError, match="reserved by S3"):
        operator_names.directory_bucket_name(name.split("--", maxsplit=1)[0], "use1-az4")


def test_messages_name_the_field_the_value_came_from() -> None:
    with pytest.raises(NameRuleError, match=r"^AZ ID 'us-east-1d' is not an AZ ID"):
        check_az_id("us-east-1d")
    with pytest.raises(SpecError, match=r"^availabilityZone 'use1-az4' is not an AZ name"):
        operator_names.validate_az_name("use1-az4")
    with pytest.raises(SpecError, match=r"^access.roleArns entry 'spark' is not an IAM role"):
        operator_names.parse_role_arn("spark")
    with pytest.raises(CsiError, match=r"^INVALID_ARGUMENT: StorageClass parameter roleArn is not"):
        validate_role_arn("x", "StorageClass parameter roleArn")


@pytest.mark.parametrize(
    ("region", "ok"),
    [("us-east-1", True), ("eu-central-2", True), ("us-gov-west-1", True), ("local", False)],
)
def test_csi_driver_and_operator_agree_on_regions(region: str, ok: bool) -> None:
    def operator_accepts() -> bool:
        try:
            operator_names.validate_region(region)
        except SpecError:
            return False
        return True

    def csi_accepts() -> bool:
        try:
            validate_region(region)
        except CsiError:
            return False
        return True

    assert operator_accepts() == csi_accepts() == ok


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::111122223333:role/spark",
        "arn:aws:iam::111122223333:role/team/a/spark",
        "arn:aws:iam::111122223333:role//spark",
        "arn:aws:iam::111122223333:role/a//b",
        "arn:aws:iam::1111:role/spark",
        "arn:aws:iam::111122223333:user/spark",
    ],
)
def test_csi_driver_and_operator_agree_on_role_arns(arn: str) -> None:
    try:
        operator_names.parse_role_arn(arn)
        operator_ok = True
    except SpecError:
        operator_ok = False
    try:
        validate_role_arn(arn)
        csi_ok = True
    except CsiError:
        csi_ok = False
    assert operator_ok == csi_ok


@given(zone=st.from_regex(AZ_NAME_RE, fullmatch=True).filter(lambda z: len(z) <= 40))
def test_every_az_name_the_operator_accepts_the_controller_accepts(zone: str) -> None:
    """The controller's availabilityZone rule is a topology label's (looser, on purpose);
    every AZ name the operator writes into a StorageClass must pass it (CRD maxLength 40)."""
    operator_names.validate_az_name(zone)
    assert controller_zone_rule.match(zone)
