"""One error classifier: the FUSE client, the CSI controller and the operator agree on which
AWS errors are throttling/transient (retry), a denial, or a missing bucket or object.

Before zonemount_contract.aws_errors there were three lists: the CSI controller answered
INTERNAL (do not retry) for InternalError, ServiceUnavailable and RequestTimeout that the
operator retried, and INTERNAL for ExpiredToken / Forbidden that the others call a denial.
"""

from __future__ import annotations

import grpc
import pytest
from botocore.exceptions import ClientError
from zonemount_csi.controller import _s3_errors
from zonemount_csi.errors import CsiError
from zonemount_fs.errors import AccessDenied, BucketNotFound, ObjectNotFound
from zonemount_fs.store.s3 import _translate
from zonemount_operator.aws import translate
from zonemount_operator.errors import AccessDeniedError, TransientAwsError

pytestmark = pytest.mark.unit

CASES = [
    # (code, status, class)
    ("SlowDown", 503, "retry"),
    ("Throttling", 400, "retry"),
    ("RequestLimitExceeded", 400, "retry"),
    ("InternalError", 500, "retry"),
    ("ServiceUnavailable", 503, "retry"),
    ("RequestTimeout", 400, "retry"),
    ("", 503, "retry"),
    ("AccessDenied", 403, "denied"),
    ("ExpiredToken", 400, "denied"),
    ("Forbidden", 403, "denied"),
    ("InvalidAccessKeyId", 403, "denied"),
    ("", 403, "denied"),
    ("NoSuchBucket", 404, "no-bucket"),
    ("NoSuchKey", 404, "no-key"),
]


def _error(code: str, status: int) -> ClientError:
    response: dict[str, object] = {"ResponseMetadata": {"HTTPStatusCode": status}}
    if code:
        response["Error"] = {"Code": code, "Message": "m"}
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


def _csi_code(exc: ClientError) -> grpc.StatusCode:
    with pytest.raises(CsiError) as info, _s3_errors("DeleteVolume"):
        raise exc
    return info.value.code


@pytest.mark.parametrize(("code", "status", "kind"), CASES)
def test_the_three_parts_classify_aws_errors_alike(code: str, status: int, kind: str) -> None:
    exc = _error(code, status)
    operator = translate(exc, "s3", "GetObject")
    csi = _csi_code(exc)
    fs = _translate("GetObject", "k", exc)
    if kind == "retry":
        assert isinstance(operator, TransientAwsError)
        assert csi == grpc.StatusCode.UNAVAILABLE
    elif kind == "denied":
        assert isinstance(operator, AccessDeniedError)
        assert csi == grpc.StatusCode.PERMISSION_DENIED
        assert isinstance(fs, AccessDenied)
    elif kind == "no-bucket":
        assert isinstance(fs, BucketNotFound)
    else:
        assert isinstance(fs, ObjectNotFound)
