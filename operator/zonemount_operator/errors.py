"""The operator's exception hierarchy (one place, one docstring).

    ZonemountError                 base; ``str(e)`` is one line a person can act on
    +-- SpecError                  the spec cannot work as written: fix the CR (no retry)
    +-- AwsError                   an AWS call failed (``operation`` names it)
    |   +-- TransientAwsError      throttling, 5xx, connection trouble: retry with backoff
    |   +-- AccessDeniedError      the operator lacks ``permission`` (an IAM action)
    |   +-- BucketNameTakenError   the bucket name belongs to another account
    |   +-- PermanentAwsError      any other 4xx: retrying will not help
    +-- KubeError                  a Kubernetes API call failed (``status`` is the HTTP code)
    +-- DependencyNotReady         something we need (a referenced bucket) is not ready yet

Reconcile functions raise these; handlers map them to conditions and to kopf's
``PermanentError`` / ``TemporaryError``. Messages never contain credentials.
"""

from __future__ import annotations


class ZonemountError(Exception):
    """Base of every error the operator reports to a person."""

    reason = "Error"


class SpecError(ZonemountError):
    """The spec is invalid or cannot be satisfied; the user must change it."""

    reason = "InvalidSpec"

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason


class AwsError(ZonemountError):
    """An AWS API call failed."""

    reason = "AwsError"

    def __init__(self, message: str, operation: str, code: str = "") -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code


class TransientAwsError(AwsError):
    """Throttling, a 5xx or a network error: retry later."""

    reason = "AwsUnavailable"


class AccessDeniedError(AwsError):
    """AWS refused an action the operator needs; ``permission`` names the IAM action."""

    reason = "AccessDenied"

    def __init__(self, message: str, operation: str, permission: str, code: str = "") -> None:
        super().__init__(message, operation, code)
        self.permission = permission


class BucketNameTakenError(AwsError):
    """The directory bucket name exists and is owned by another account."""

    reason = "BucketNameTaken"


class PermanentAwsError(AwsError):
    """A 4xx that retrying will not fix (the message says what AWS said)."""

    reason = "AwsRejected"


class KubeError(ZonemountError):
    """A Kubernetes API call failed."""

    reason = "KubernetesApiError"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class DependencyNotReady(ZonemountError):
    """A referenced object is missing or not Ready yet; reconcile again later."""

    reason = "BucketNotReady"

    def __init__(self, message: str, reason: str = "BucketNotReady") -> None:
        super().__init__(message)
        self.reason = reason
