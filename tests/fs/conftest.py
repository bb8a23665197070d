"""Fixtures for the FUSE client: real ``zonemount mount`` processes on a real S3 server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3

from .mounts import Mounter


@pytest.fixture
def mounter(moto_server: LocalS3, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(moto_server, tmp_path)
    yield m
    m.cleanup()


@pytest.fixture
def s3(moto_server: LocalS3) -> Any:
    """A boto3 client on the moto server: 'another client' of the bucket."""
    return moto_server.client()


@pytest.fixture
def mount_rw(mounter: Mounter, bucket: str) -> Callable[..., Path]:
    """Mount the test bucket with extra flags (default: delete + overwrite allowed)."""

    def make(*flags: str) -> Path:
        return mounter.mount(bucket, *(flags or ("--allow-delete", "--allow-overwrite")))

    return make
