"""Process helpers shared by the tests that signal a command and check what it left running."""

from __future__ import annotations

import os


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still exists (signal 0 to the group)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
