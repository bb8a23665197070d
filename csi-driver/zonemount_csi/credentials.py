"""Credentials of one mount: driver-level or pod-level (web identity), never in argv or logs.

* ``driver`` (default): the FUSE process inherits the node plugin's own AWS environment
  (IRSA/Pod Identity of the DaemonSet, or static keys in tests).
* ``pod``: the kubelet passes the pod's projected service-account token for audience
  ``sts.amazonaws.com`` in ``csi.storage.k8s.io/serviceAccount.tokens`` (CSIDriver
  ``tokenRequests``). It is written to a 0600 file in the volume's private state directory and
  the FUSE process runs with ``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN`` (the volume
  context's ``roleArn``) and **without** every credential variable of the driver
  (:data:`DRIVER_CREDENTIAL_ENV`), with instance metadata disabled - so a pod mount can never
  silently fall back to the node's or the driver's identity. botocore re-reads the file when
  its credentials expire; the kubelet's periodic republish (``requiresRepublish: true``)
  rewrites it with a fresh token.

Invariant: a token only ever lives in that file; errors name the key, never the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from zonemount_contract.keys import STS_AUDIENCE

from .state import write_atomically

#: Variables that carry (or point at) the driver's own identity; removed for pod-level mounts.
DRIVER_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)
TOKEN_FILE_NAME = "web-identity-token"  # noqa: S105 - a file name
_SESSION_RE = re.compile(r"[^A-Za-z0-9+=,.@_-]")


class CredentialsError(ValueError):
    """The request cannot be turned into credentials (message never holds a secret)."""


def extract_sts_token(tokens_json: str) -> str:
    """The ``sts.amazonaws.com`` token from the kubelet's serviceAccount.tokens JSON."""
    try:
        tokens = json.loads(tokens_json)
        token = tokens[STS_AUDIENCE]["token"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(
            f"authenticationSource is pod but the kubelet passed no service-account token for "
            f"audience {STS_AUDIENCE}: set tokenRequests [{{audience: {STS_AUDIENCE}}}] and "
            "requiresRepublish: true in the CSIDriver object"
        ) from None
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise CredentialsError(f"the service-account token for {STS_AUDIENCE} is malformed")
    return token


def write_token_file(directory: Path, token: str) -> Path:
    """Atomically (re)write the token file, mode 0600; returns its path."""
    path = directory / TOKEN_FILE_NAME
    write_atomically(path, token)
    return path


def session_name(namespace: str, pod: str) -> str:
    """A valid STS RoleSessionName (<=64 chars) that names the pod in CloudTrail."""
    name = _SESSION_RE.sub("-", f"zonemount-{namespace}-{pod}".rstrip("-"))
    return name[:64]


def mount_env(
    base_env: Mapping[str, str],
    *,
    authentication_source: str,
    token_file: Path | None = None,
    role_arn: str = "",
    role_session_name: str = "",
) -> dict[str, str]:
    """The environment of the FUSE process for one mount."""
    env = dict(base_env)
    if authentication_source != "pod":
        return env
    if token_file is None or not role_arn:
        raise CredentialsError("pod-level credentials need a token file and a role ARN")
    for key in DRIVER_CREDENTIAL_ENV:
        env.pop(key, None)
    env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token_file)
    env["AWS_ROLE_ARN"] = role_arn
    env["AWS_ROLE_SESSION_NAME"] = role_session_name or "zonemount"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env
