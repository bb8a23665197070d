"""docs/helm.md stays true to the chart: every value documented, the reference table current,
and the schema knows every documented key."""

from __future__ import annotations

import json
from typing import Any

import yaml

from docgen.helm_values import DOC, VALUES, documented_keys, render_doc
from tests.chart.chartlib import CHART


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        out: list[str] = []
        for key, value in node.items():
            out += leaves(value, f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")]


def test_every_value_is_documented() -> None:
    documented = {key for key, _ in documented_keys(VALUES.read_text())}
    values = yaml.safe_load(VALUES.read_text())
    missing = [
        leaf
        for leaf in leaves(values)
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert missing == [], f"values without a '# --' comment: {missing}"


def test_values_reference_in_docs_is_current() -> None:
    doc = DOC.read_text()
    assert render_doc(doc) == doc, "docs/helm.md's values reference is stale: run `make chart-docs`"


def test_schema_declares_every_documented_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key, _ in documented_keys(VALUES.read_text()):
        node = schema
        for part in key.split("."):
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
            assert part in node.get("properties", {}), f"values.schema.json lacks {key}"
            node = node["properties"][part]


def test_docs_name_the_security_and_eks_essentials() -> None:
    doc = DOC.read_text()
    for needle in (
        "IRSA",
        "topology.kubernetes.io/zone",
        "topology.k8s.aws/zone-id",
        "privileged",
        "Bidirectional",
        "node.kubeletDir",
        "make chart-tools",
    ):
        assert needle in doc, needle
