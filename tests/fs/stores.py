"""The S3 store the store-level tests talk to: :class:`S3Store` on a local S3 server, or on a
fault proxy in front of one (path-style addressing, region us-east-1)."""

from __future__ import annotations

from typing import Any

import botocore.session
from zonemount_fs.store.s3 import S3Settings, S3Store


def local_store(
    bucket: str,
    endpoint: str,
    session: botocore.session.Session | None = None,
    **settings: Any,
) -> S3Store:
    """An :class:`S3Store` of ``bucket`` at ``endpoint`` (``settings``: other
    :class:`S3Settings` fields, such as ``max_attempts`` or ``fast_path``)."""
    return S3Store(
        S3Settings(
            bucket=bucket,
            endpoint_url=endpoint,
            region="us-east-1",
            force_path_style=True,
            **settings,
        ),
        session,
    )
