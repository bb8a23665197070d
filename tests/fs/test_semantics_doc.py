"""docs/SEMANTICS.md and the rule tests (tests/fs/test_semantics.py, tests/fs/test_posix.py,
tests/fs/test_semantics_faults.py, tests/fs/test_shared_cache.py) name the same rules.

Beyond each rule's ``test_r_<id>``: a test elsewhere in tests/ whose docstring opens with a
rule id (``R-RENAME-DIR: ...``) checks a part of that rule, so the id must name a rule; and a
test a rule names (`` `test_...` ``, the evidence for a claim) must exist."""

from __future__ import annotations

import ast
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


def _rule_ids() -> set[str]:
    doc = (ROOT / "docs/SEMANTICS.md").read_text()
    return set(re.findall(r"^\| (R-[A-Z0-9-]+) \|", doc, re.M))


def _tests() -> dict[str, str]:
    """Every test function under tests/ and the start of its docstring."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and node.name.startswith("test_"):
                found[node.name] = (ast.get_docstring(node) or "")[:80]
    return found


@pytest.mark.unit
def test_every_rule_has_a_test_and_every_test_a_rule() -> None:
    rules = {r.lower().replace("-", "_") for r in _rule_ids()}
    tests: set[str] = set()
    for name in RULE_TESTS:
        source = (ROOT / name).read_text()
        tests |= set(re.findall(r"^def test_(r_[a-z0-9_]+)\(", source, re.M))
    assert rules, "no rules found in docs/SEMANTICS.md"
    assert rules - tests == set(), "rules without a test"
    assert tests - rules == set(), "tests without a rule in docs/SEMANTICS.md"


@pytest.mark.unit
def test_tests_named_by_rules_exist_and_rules_named_by_tests_exist() -> None:
    rules = _rule_ids()
    tests = _tests()
    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", (ROOT / "docs/SEMANTICS.md").read_text()))
    assert cited - set(tests) == set(), "docs/SEMANTICS.md names tests that do not exist"
    claimed = {
        name: m.group(1)
        for name, doc in tests.items()
        if (m := re.match(r"(R-[A-Z0-9]+(?:-[A-Z0-9]+)*)\b", doc))
    }
    assert claimed, "no test docstring opens with a rule id"
    unknown = {name: rule for name, rule in claimed.items() if rule not in rules}
    assert unknown == {}, "tests whose docstrings open with a rule id that is not a rule"
