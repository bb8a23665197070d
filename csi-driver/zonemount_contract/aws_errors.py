"""One classifier of AWS (S3, S3 Express, IAM, STS, EC2) errors for every part.

The FUSE client maps the class to an errno, the CSI driver to a gRPC code, the operator to a
retry-later or a condition; they agree on *which* errors are throttling, transient, a denial
or a missing thing because they all call :func:`classify` with the error code and HTTP status
botocore reports (``exc.response["Error"]["Code"]`` and ``["ResponseMetadata"]["HTTPStatusCode"]``;
:func:`code_and_status` reads them from any botocore ``ClientError`` without importing botocore).

Invariants: standard library only; pure; a code in :data:`THROTTLING_CODES` is always also
transient; a known code wins over the status, and an unknown code is classified by its status
(429 throttled, 5xx transient, 403 denied, 404 not found).
"""

from __future__ import annotations

from enum import Enum

#: The service asks the caller to slow down: retry with backoff.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "EC2ThrottledException",
        "BandwidthLimitExceeded",
    }
)
#: Worth retrying later: throttling, timeouts and server-side failures.
TRANSIENT_CODES = THROTTLING_CODES | frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "OperationAborted",
        "ServiceFailure",
        "ConcurrentModification",
        "503",
    }
)
#: The caller's identity may not do this (or its credentials are bad or expired).
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "Forbidden",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "InvalidClientTokenId",
        "AllAccessDisabled",
    }
)
NO_SUCH_BUCKET_CODES = frozenset({"NoSuchBucket"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


class ErrorClass(Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    ACCESS_DENIED = "access-denied"
    NO_SUCH_BUCKET = "no-such-bucket"
    NOT_FOUND = "not-found"
    OTHER = "other"

    @property
    def retryable(self) -> bool:
        return self in {ErrorClass.THROTTLED, ErrorClass.TRANSIENT}


def classify(code: str, status: int | str = 0) -> ErrorClass:
    """The class of an AWS error from its code (may be '') and HTTP status (may be 0)."""
    status_int = int(status) if str(status).isdigit() else 0
    if code in THROTTLING_CODES:
        return ErrorClass.THROTTLED
    if code in TRANSIENT_CODES:
        return ErrorClass.TRANSIENT
    if code in ACCESS_DENIED_CODES:
        return ErrorClass.ACCESS_DENIED
    if code in NO_SUCH_BUCKET_CODES:
        return ErrorClass.NO_SUCH_BUCKET
    if code in NOT_FOUND_CODES:
        return ErrorClass.NOT_FOUND
    if status_int == 429:
        return ErrorClass.THROTTLED
    if status_int >= 500:
        return ErrorClass.TRANSIENT
    if status_int == 403:
        return ErrorClass.ACCESS_DENIED
    if status_int == 404:
        return ErrorClass.NOT_FOUND
    return ErrorClass.OTHER


def code_and_status(exc: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ``ClientError`` (('', 0) for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
    return code, int(status) if str(status).isdigit() else 0
