"""The contract package's own invariants (zonemount_contract/__init__.py): standard library only
at import, and no imports from the three parts, so every part may import any of its modules -
the operator's copy engine takes the lean paths' HTTP/1.1 client, signer and listing reader
from here, not from the FUSE package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import zonemount_contract

pytestmark = pytest.mark.unit

PACKAGE = Path(zonemount_contract.__file__).parent
PARTS = ("zonemount_fs", "zonemount_csi", "zonemount_operator", "zonemount_cli")


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module is imported (not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_contract_modules_import_the_standard_library_only(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "zonemount_contract"}
    assert _module_level_imports(path) <= allowed, path.name


def test_the_copy_engine_does_not_load_the_fuse_package() -> None:
    """Regression: fasts3 imported zonemount_fs.store.http1, so ``zonemount cp`` loaded the
    FUSE package (and whatever the FUSE store imports next to it)."""
    code = (
        "import sys\n"
        "import zonemount_operator.transfer, zonemount_operator.fasts3\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {PARTS[:2]!r}]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
