"""``zonemount COMMAND --help`` reads as documentation: every flag of every subcommand has a
help text, no raw reST markup leaks into it, and the performance flags show their defaults.

Runs the installed console script (``.venv/bin/zonemount``), as a user types it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from zonemount_cli.main import SUBCOMMANDS

pytestmark = pytest.mark.unit
ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
# argparse prints an option as "  --flag METAVAR   help"; a flag with no help ends its line
# without a two-space gap and the next line is not the (deeper indented) continuation.
_OPTION = re.compile(r"^  (-\S.*)$")


def _help(command: str) -> str:
    result = subprocess.run(
        [ZONEMOUNT, command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def flags_without_help(text: str) -> list[str]:
    lines = text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = _OPTION.match(line)
        if not match or "  " in match.group(1).strip():
            continue  # not an option line, or help text follows on the same line
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not following.startswith(" " * 6):
            missing.append(match.group(1).split()[0].rstrip(","))
    return missing


def test_the_checker_sees_a_flag_without_help() -> None:
    text = "options:\n  --a A       has help\n  --b B\n  --c C\n                 wrapped help\n"
    assert flags_without_help(text) == ["--b"]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_flag_has_a_help_text(command: str) -> None:
    text = _help(command)
    assert flags_without_help(text) == [], f"zonemount {command} --help"
    assert "``" not in text, "raw reST markup in the help"


def test_csi_node_help_explains_log_level_and_kubelet_dir() -> None:
    text = " ".join(_help("csi-node").split())
    assert "log verbosity on stderr (default INFO)" in text
    assert "target paths must lie under its pods/ (default /var/lib/kubelet)" in text


def test_mount_help_shows_performance_defaults() -> None:
    text = " ".join(_help("mount").split())
    assert (
        "--part-size BYTES multipart upload part and read-ahead request size (default: 8 MiB "
        "for uploads, 16 MiB for reads)" in text
    )
    assert "--read-part-size BYTES read-ahead request size (default: --part-size, else 16" in text
    assert "--max-threads N parallel S3 requests (default 16)" in text
    assert "(default 512)" in text
