"""What every ``zonemount`` subcommand builds on: one-line bad input, stop signals caught early.

argparse's default error prints the whole usage block and then the message; every zonemount
command (``mount``, ``csi-node``/``csi-controller``/``csi-mounter``, ``node-zone``,
``local-s3``, ``operator``/``reconcile``/``cp``/``sync``) reports it as a single line that names
the problem and where the fix is (``--help``) instead. Two ways to report it:

* default: print ``PROG: MESSAGE (see --help)`` on stderr and exit with code 2 (bad input);
* ``error_type=SomeError``: raise ``SomeError("MESSAGE (see 'PROG --help')")`` instead, for a
  caller that turns its own error type into the exit code and message (``zonemount mount``
  raises its ``ConfigError``, which the FUSE client's main reports and exits 2 on).

A long-running command (``csi-node``/``csi-controller``/``csi-mounter``, ``local-s3``) builds
one :class:`StopSignals` before it starts anything (thread, socket, child process): a SIGTERM
or Ctrl-C that arrives while it starts up then ends in the same graceful stop as a later one.

Invariants: standard library only (argparse, signal, threading); sub-parsers made by
``add_subparsers`` are of this class too and report by exiting.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
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


class StopSignals:
    """SIGTERM and SIGINT, caught from the moment this is built until :meth:`restore`.

    Built before anything starts a thread, creates a socket or spawns a child: a SIGTERM that
    arrives while the process starts up (the kubelet may stop a pod it just started; a user
    presses Ctrl-C while ``local-s3`` waits for its server) then still ends in a graceful stop.
    Installed any later (it once was, after serving began), a SIGTERM that came in between
    took the default action: exit -15, and what had been started was left unstopped (the
    mounter's adopted FUSE servers got no SIGTERM to flush; ``local-s3``'s S3 server, in a
    session of its own, kept running).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._received: list[str] = []
        self._previous = {
            signum: signal.signal(signum, self._handler)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signal.Signals(signum).name)
        self._stop.set()

    def received(self) -> str | None:
        """The name of the first stop signal that came, or None (does not block)."""
        return self._received[0] if self._received else None

    def wait(self) -> str:
        """Block until a stop signal came (at once if one already did); return its name."""
        # Python runs signal handlers in the main thread, between bytecodes. When the kernel
        # hands the signal to another thread (gRPC, supervisor, mounter watch), an untimed
        # wait here is never interrupted and the handler never runs: wake up regularly so it
        # does.
        while not self._stop.wait(0.5):
            pass
        return self._received[0] if self._received else "stop"

    def restore(self) -> None:
        """Put back the handlers found when this was built (for a caller run in-process)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
