"""Generate the values reference of docs/helm.md from charts/zonemount/values.yaml comments.

Every key documented in values.yaml with a ``# -- text`` comment (continued by further ``#``
lines) becomes a table row: dotted key, default (as YAML flow), text. The table lives between
the markers ``<!-- values:start -->`` and ``<!-- values:end -->`` in docs/helm.md;
``make chart-docs`` rewrites it and tests/chart/test_helm_docs.py fails when it is stale.

Usage: python -m docgen.helm_values [--write]   (prints the table without --write)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "charts" / "zonemount" / "values.yaml"
DOC = REPO / "docs" / "helm.md"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z][\w]*):(.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a ``# --`` comment."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match:
            if stripped and not stripped.startswith("-"):
                pending = None
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending is not None:
            out.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = None
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def default_text(value: Any) -> str:
    if value == "" or value is None:
        return '`""`'
    flow = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    flow = flow.removesuffix("\n...").removesuffix("...").strip()
    return f"`{flow}`".replace("|", "\\|")


def table() -> str:
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, desc in documented_keys(text):
        escaped = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | {default_text(lookup(values, key))} | {escaped} |")
    return "\n".join(rows) + "\n"


def render_doc(doc: str) -> str:
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} lacks the {START} / {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}{END}{tail}"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        DOC.write_text(render_doc(DOC.read_text()))
        print(f"updated the values reference in {DOC.relative_to(REPO)}")
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
