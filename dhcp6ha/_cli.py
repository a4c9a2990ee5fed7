# -*- test-case-name: tests.test_cli,tests.test_ctl,tests.test_pki,tests.test_runpair -*-
"""
What the command lines of the package (C{dhcp6ha-ctl}, C{dhcp6ha-pki},
C{python -m dhcp6ha.runpair}) share: an argument parser that never exits
the process and writes to the streams it is given, so that each C{main()}
returns its exit status and can be tested with its output captured.

Private: imports only the standard library (C{dhcp6ha.ctl} must not import
Twisted).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any, NoReturn

__all__ = ["EXIT_USAGE", "Exit", "Parser"]

EXIT_USAGE = 2
"""The exit status of a usage error (as argparse's own)."""


class Exit(Exception):
    """
    The command line ends here, before doing anything.

    @ivar status: the exit status.
    @ivar message: what to write to standard error first, if anything.
    """

    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def report(self, err: IO[str]) -> int:
        """Write the message (if any) to C{err}; return the exit status."""
        if self.message:
            err.write(self.message)
        return self.status


class Parser(argparse.ArgumentParser):
    """
    An argument parser that writes where it is told and never exits: where
    argparse would exit (C{--help}, a usage error) it raises L{Exit}.

    @ivar out: where help goes (set it on every subparser too).
    @ivar err: where usage errors go.
    """

    out: IO[str] = sys.stdout
    err: IO[str] = sys.stderr

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self.err if file is sys.stderr else self.out).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise Exit(status, message)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise Exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
