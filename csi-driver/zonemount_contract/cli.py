"""The one argparse parser every ``zonemount`` subcommand builds on: bad input is one line.

argparse's default error prints the whole usage block and then the message; every zonemount
command (``mount``, ``csi-node``/``csi-controller``/``csi-mounter``, ``node-zone``,
``local-s3``, ``operator``/``reconcile``/``cp``/``sync``) reports it as a single line that names
the problem and where the fix is (``--help``) instead. Two ways to report it:

* default: print ``PROG: MESSAGE (see --help)`` on stderr and exit with code 2 (bad input);
* ``error_type=SomeError``: raise ``SomeError("MESSAGE (see 'PROG --help')")`` instead, for a
  caller that turns its own error type into the exit code and message (``zonemount mount``
  raises its ``ConfigError``, which the FUSE client's main reports and exits 2 on).

Invariants: standard library only (argparse); sub-parsers made by ``add_subparsers`` are of
this class too and report by exiting.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line (see the module doc)."""

    def __init__(self, *args: Any, error_type: type[Exception] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.error_type = error_type

    def error(self, message: str) -> NoReturn:
        if self.error_type is not None:
            raise self.error_type(f"{message} (see '{self.prog} --help')")
        self.exit(2, f"{self.prog}: {message} (see --help)\n")
