"""One argparse parser for every ``zonemount`` subcommand (zonemount_contract.cli): bad input is
one line naming the problem and ``--help``, never argparse's usage block; the FUSE client's
``mount`` raises its ConfigError, every other subcommand exits 2."""

from __future__ import annotations

import pytest
from zonemount_cli.local_s3 import build_parser as local_s3_parser
from zonemount_contract.cli import OneLineParser
from zonemount_fs.errors import ConfigError
from zonemount_fs.options import build_parser as mount_parser

pytestmark = pytest.mark.unit


def test_exit_mode_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineParser(prog="zonemount thing")
    parser.add_argument("--count", type=int)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--count", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "zonemount thing: argument --count: invalid int value: 'many' (see --help)\n"


def test_raise_mode_raises_the_callers_error_naming_help() -> None:
    with pytest.raises(ConfigError) as exc:
        mount_parser().parse_args(["bucket", "/mnt", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in str(exc.value)
    assert str(exc.value).endswith("(see 'zonemount mount --help')")


def test_subparsers_and_other_commands_exit_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        local_s3_parser().parse_args(["--port", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zonemount local-s3: argument --port") and err.count("\n") == 1
    parent = OneLineParser(prog="zonemount top")
    parent.add_subparsers(dest="cmd").add_parser("sub").add_argument("n", type=int)
    with pytest.raises(SystemExit):
        parent.parse_args(["sub", "x"])
    assert capsys.readouterr().err.count("\n") == 1
