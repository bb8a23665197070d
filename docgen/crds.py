"""Generate docs/crds.md (the CRD reference) from crds/*.yaml.

``python -m docgen.crds crds > docs/crds.md`` (or ``make crd-docs``). The output
is deterministic (sorted files, schema order kept), so a test can compare it with the
committed file. Each field row gives its path, type, default, constraints (enum, pattern,
bounds) and description; CEL rules are listed with their messages under their object.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

HEADER = """# CRD reference

Generated from `crds/*.yaml` by `python -m docgen.crds crds > docs/crds.md`
(`make crd-docs`); a test fails when this file is out of date. Edit the CRDs, not this file.
How the operator acts on these fields: [operator.md](operator.md).
"""


def _type(node: dict[str, Any]) -> str:
    kind = str(node.get("type", "any"))
    if kind == "array" and isinstance(node.get("items"), dict):
        return f"[]{_type(node['items'])}"
    if node.get("format"):
        return f"{kind} ({node['format']})"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    items = node.get("items")
    if isinstance(items, dict) and not items.get("properties") and _constraints(items):
        parts.append(f"items: {_constraints(items)}")
    return "; ".join(parts)


def _rows(
    node: dict[str, Any],
    path: str,
    required: set[str],
    out: list[str],
    rules: list[tuple[str, str, str]],
) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        rules.append((path or ".", rule["rule"], rule.get("message", "")))
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        req = "yes" if name in required else ""
        desc = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        out.append(
            f"| `{child_path}` | {_type(child)} | {req} | {default} | "
            f"{_constraints(child).replace('|', chr(92) + '|')} | {desc} |"
        )
        _rows(child, child_path, set(child.get("required", [])), out, rules)
        items = child.get("items")
        if isinstance(items, dict) and items.get("properties"):
            _rows(items, f"{child_path}[]", set(items.get("required", [])), out, rules)


def render_crd(crd: dict[str, Any]) -> str:
    spec = crd["spec"]
    version = spec["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    names = spec["names"]
    scope = "namespaced" if spec["scope"] == "Namespaced" else "cluster-scoped"
    short = ", ".join(f"`{n}`" for n in names.get("shortNames", []))
    lines = [
        f"## {names['kind']}",
        "",
        f"`{spec['group']}/{version['name']}`, {scope}; plural "
        f"`{names['plural']}`, short names {short}."
        f" {' '.join(str(schema.get('description', '')).split())}",
        "",
        "Printer columns: "
        + ", ".join(
            f"{c['name']} (`{c['jsonPath']}`)" for c in version["additionalPrinterColumns"]
        ),
        "",
    ]
    for part in ("spec", "status"):
        node = schema["properties"][part]
        lines += [f"### {part}", ""]
        if node.get("description"):
            lines += [" ".join(str(node["description"]).split()), ""]
        lines += [
            "| Field | Type | Required | Default | Constraints | Description |",
            "|---|---|---|---|---|---|",
        ]
        rows: list[str] = []
        rules: list[tuple[str, str, str]] = []
        _rows(node, part, set(node.get("required", [])), rows, rules)
        lines += [*rows, ""]
        if rules:
            lines += ["Validation rules (CEL, enforced at admission):", ""]
            lines += [f"- on `{where}`: {msg} — `{rule}`" for where, rule, msg in rules]
            lines += [""]
    return "\n".join(lines)


def render(crd_dir: Path) -> str:
    parts = [HEADER]
    for path in sorted(crd_dir.glob("*.yaml")):
        parts.append(render_crd(yaml.safe_load(path.read_text())))
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    crd_dir = Path(args[0] if args else "crds")
    if not crd_dir.is_dir():
        print(f"crddoc: {crd_dir} is not a directory: pass the crds/ folder", file=sys.stderr)
        return 2
    sys.stdout.write(render(crd_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
