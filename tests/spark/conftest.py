"""Fixtures of the Spark tier: one SparkSession per module, SeaweedFS buckets mounted by zonemount.

``mounts`` maps a kind to a mounted directory: ``gp`` (a general-purpose bucket: renames are
copy + delete) and ``express`` (a directory-bucket name ``base--azid--x-s3``: the client takes
the S3 Express code paths; SeaweedFS has no RenameObject, so renames fall back to copy + delete
after the store's one-time probe). Both stay mounted for the module and are unmounted after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3

from tests.fs.mounts import Mounter

from . import sparkjobs

KINDS = {"gp": sparkjobs.GP_BUCKET, "express": sparkjobs.EXPRESS_BUCKET}


@dataclass
class SparkMount:
    kind: str
    bucket: str
    path: Path
    s3: Any


@pytest.fixture(scope="module")
def spark(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    mounts: dict[str, SparkMount],
) -> Iterator[Any]:
    """Depends on ``mounts`` so that Spark stops (closing its files) before they are unmounted."""
    reason = sparkjobs.missing_requirements()
    if reason:
        pytest.skip(reason)
    local_dir = tmp_path_factory.mktemp("spark-local")
    session = sparkjobs.session(f"zonemount-{request.module.__name__}", local_dir)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def mounts(
    seaweed_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SparkMount]]:
    client = sparkjobs.s3_client(seaweed_server)
    mounter = Mounter(seaweed_server, tmp_path_factory.mktemp("spark-mnt"))
    out: dict[str, SparkMount] = {}
    try:
        for kind, bucket in KINDS.items():
            if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                client.create_bucket(Bucket=bucket)
            out[kind] = SparkMount(
                kind, bucket, mounter.mount(bucket, *sparkjobs.MOUNT_FLAGS), client
            )
        yield out
    finally:
        mounter.cleanup()


@pytest.fixture(params=sorted(KINDS))
def mount(request: pytest.FixtureRequest, mounts: dict[str, SparkMount]) -> SparkMount:
    return mounts[request.param]
