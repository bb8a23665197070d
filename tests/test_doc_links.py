"""Every relative link in README.md and docs/*.md points at a file in the tree.

Pins the pruning of bench/results (only the latest runs stay; docs cite older ones through git
history) and any future move of a file the docs link to.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.DOTALL)  # code is not a link
    return [
        target.split("#", 1)[0]
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z]+:", target) and not target.startswith("#")
    ]


def test_the_link_finder_sees_relative_links_only() -> None:
    text = "[a](docs/x.md) [b](https://e.org) [c](#top) ![d](../bench/y.png#z) `[e](f)`"
    assert relative_links(text) == ["docs/x.md", "../bench/y.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [
        link for link in relative_links(page.read_text()) if not (page.parent / link).exists()
    ]
    assert missing == [], f"{page.relative_to(ROOT)} links to missing files"
