"""The one S3 (and AWS) client factory of the FUSE client, the CSI controller and the operator.

:func:`create_client` owns the client's configuration - retry mode and attempts, connect and
read timeouts, connection pool, addressing style, S3 Express session auth, TCP keep-alive and
the ``zonemount/<version>`` user agent - so the parts differ only in the figures they pass (a
mount's data path wants 6 attempts and a pool per thread, a controller's record writes 5 and
short timeouts), never in how a client is made. Two policies for a custom ``endpoint_url``:

* ``local_endpoint=False`` (the FUSE client, the CSI controller): the endpoint is an S3 like
  AWS's; addressing and S3 Express session auth are what the caller says (``--force-path-style``,
  ``--disable-express-session-auth``), botocore's defaults otherwise.
* ``local_endpoint=True`` (the operator, ``zonemount cp``): a custom endpoint is a local server
  (moto, SeaweedFS): path-style addressing and no CreateSession, which such servers lack.

Why here, in the dependency-free contract package: every part that talks to S3 imports this
package already, and the factory needs no part's code. botocore is imported inside the
function, so importing :mod:`zonemount_contract` stays standard-library only (the operator's
and the CSI node's start-up do not pay for botocore until they make a client). botocore, not
boto3: every caller uses the client API only, and boto3 adds import time and nothing else.

Invariants: one call, one new client (callers cache clients; creation on a shared session is
not thread-safe, so callers that pass one hold a lock); credentials come from the session
(environment, profile, IRSA), never from arguments, so none reach logs or argv.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import botocore.session

#: Retry mode of every client: botocore's "standard" (jittered exponential backoff, retries
#: throttling and transient errors, a retry quota per client).
RETRY_MODE = "standard"


@functools.cache
def zonemount_version() -> str:
    """The installed distribution's version (``0.0.0+source`` in a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zonemount")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+source"


def user_agent() -> str:
    """What every client appends to botocore's user agent: ``zonemount/<version>``."""
    return f"zonemount/{zonemount_version()}"


def create_client(
    service: str = "s3",
    *,
    session: botocore.session.Session | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_pool_connections: int = 10,
    local_endpoint: bool = False,
    path_style: bool = False,
    express_session_auth: bool = True,
    **config: Any,
) -> Any:
    """A botocore client of ``service`` (see the module doc for the endpoint policies).

    ``session`` defaults to a new botocore session (client creation on a shared one is not
    thread-safe); ``region`` falls back to the session's (environment, profile) and then
    ``us-east-1``; ``config`` holds further :class:`botocore.config.Config` options of one
    caller (the FUSE client's checksum and signing choices, the operator's
    ``inject_host_prefix``); an ``s3`` entry there is merged with the addressing and
    session-auth options made here.
    """
    import botocore.session
    from botocore.config import Config

    session = session or botocore.session.Session()
    s3_options: dict[str, Any] = dict(config.pop("s3", None) or {})
    if local_endpoint and endpoint_url:
        path_style, express_session_auth = True, False
    if path_style:
        s3_options["addressing_style"] = "path"
    if not express_session_auth:
        s3_options["disable_s3_express_session_auth"] = True
    region = region or session.get_config_variable("region") or "us-east-1"
    retries: Any = {"mode": RETRY_MODE, "max_attempts": max_attempts}
    s3: Any = s3_options or None
    client_config = Config(
        region_name=region,
        retries=retries,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
        user_agent_extra=user_agent(),
        s3=s3,
        **config,
    )
    return session.create_client(
        service, region_name=region, endpoint_url=endpoint_url or None, config=client_config
    )
