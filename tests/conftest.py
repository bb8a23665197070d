"""Shared fixtures: real S3 servers on loopback, shared by every test tier.

Tier markers are applied by directory where a module does not set one itself:
``tests/unit*`` -> unit; everything else defaults to integration.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3, start_moto, start_seaweedfs

TIER_MARKERS = ("unit", "integration", "spark", "bench")


def pytest_configure(config: pytest.Config) -> None:
    """An editable install made before a top-level package was added cannot import it."""
    import importlib.util

    if importlib.util.find_spec("zonemount_contract") is None:
        raise pytest.UsageError(
            "zonemount_contract is not importable: this editable install predates it; run "
            "'make setup' (or .venv/bin/pip install -e . --no-deps --no-build-isolation) once"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) for m in TIER_MARKERS):
            continue
        if "/unit" in str(item.path) or item.path.name.startswith("test_unit"):
            item.add_marker(pytest.mark.unit)
        else:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[LocalS3]:
    """moto in server mode (S3, IAM, STS, EC2) on loopback for the whole session."""
    with start_moto() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[LocalS3]:
    """SeaweedFS (fast Go S3 server) on loopback for the whole session."""
    with start_seaweedfs() as server:
        yield server


@pytest.fixture
def s3_env(moto_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point AWS SDKs in this process at the moto server; returns the env for subprocesses."""
    env = moto_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return {**os.environ, **env}


@pytest.fixture
def bucket(moto_server: LocalS3) -> str:
    """A fresh, empty general-purpose bucket on the moto server."""
    name = f"zm-{uuid.uuid4().hex[:12]}"
    client: Any = moto_server.client()
    client.create_bucket(Bucket=name)
    return name
