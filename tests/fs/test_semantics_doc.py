"""docs/SEMANTICS.md and the rule tests (tests/fs/test_semantics.py, tests/fs/test_posix.py,
tests/fs/test_semantics_faults.py, tests/fs/test_shared_cache.py) name the same rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULE_TESTS = (
    "tests/fs/test_semantics.py",
    "tests/fs/test_posix.py",
    "tests/fs/test_semantics_faults.py",
    "tests/fs/test_shared_cache.py",
)


@pytest.mark.unit
def test_every_rule_has_a_test_and_every_test_a_rule() -> None:
    doc = (ROOT / "docs/SEMANTICS.md").read_text()
    rules = {r.lower().replace("-", "_") for r in re.findall(r"^\| (R-[A-Z0-9-]+) \|", doc, re.M)}
    tests: set[str] = set()
    for name in RULE_TESTS:
        source = (ROOT / name).read_text()
        tests |= set(re.findall(r"^def test_(r_[a-z0-9_]+)\(", source, re.M))
    assert rules, "no rules found in docs/SEMANTICS.md"
    assert rules - tests == set(), "rules without a test"
    assert tests - rules == set(), "tests without a rule in docs/SEMANTICS.md"
