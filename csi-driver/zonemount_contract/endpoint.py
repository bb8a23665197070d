"""The endpoint-URL rule: what an S3/AWS endpoint override (``--endpoint-url``,
``--allowed-endpoint-url``, S3MountClass ``spec.endpointUrl``) must look like.

One copy for the FUSE client, the CSI driver and the operator: ``http(s)://HOST[:PORT][/PATH]``
with a host and a valid port, which is what botocore accepts (anything else it refuses with a
``ValueError`` traceback at client creation, or, for an allow-list entry, never matches).
:data:`ENDPOINT_URL_RE` is also the CRD's ``endpointUrl`` pattern (tests/operator keeps them
in step); the host/port check is what a pattern cannot say.

Invariant: :func:`check_endpoint_url` returns its argument unchanged or raises
:class:`EndpointUrlError` whose message names the value and shows what is expected; callers
prefix where the value came from (``--endpoint-url``) and raise their own error type.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ENDPOINT_URL_RE = re.compile(r"^https?://[^\s]+$")
EXPECTED = (
    "expected http://HOST:PORT or https://HOST "
    "(e.g. http://127.0.0.1:8333 or https://s3.us-east-1.amazonaws.com)"
)


class EndpointUrlError(ValueError):
    """Not an endpoint URL; ``str()`` names the value and what is expected."""


def check_endpoint_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise EndpointUrlError(f"{url!r} is not a URL ({exc}): {EXPECTED}") from None
    if not ENDPOINT_URL_RE.match(url) or not parts.hostname:
        raise EndpointUrlError(f"{url!r} is not an http(s) URL: {EXPECTED}")
    return url
