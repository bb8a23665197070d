"""Fixtures for the Helm chart tests: the real helm binary and a caching renderer.

A missing helm fails the tests naming the make target to run; it is never a skip, so a broken
install cannot pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import HELM, Render, run_helm, template_args


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: run `make chart-tools` (part of `make test`)")
    return HELM


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """render(values=None, include_crds=True) -> the rendered objects (helm template)."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(
        values: dict[str, Any] | None = None, *, include_crds: bool = True
    ) -> list[dict[str, Any]]:
        key = json.dumps([values, include_crds], sort_keys=True)
        if key not in cache:
            result = run_helm(helm, *template_args(values, include_crds=include_crds))
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return [json.loads(json.dumps(obj)) for obj in cache[key]]  # a fresh copy per caller

    return _render
