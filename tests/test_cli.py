"""
Tests for L{dhcp6ha._cli}: the argument parser of the command lines never
exits and writes only to the streams it is given.
"""

from __future__ import annotations

from io import StringIO

from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha._cli import EXIT_USAGE, Exit, Parser


def _parser() -> tuple[Parser, StringIO, StringIO]:
    out, err = StringIO(), StringIO()
    parser = Parser(prog="tool", description="A tool.")
    parser.out, parser.err = out, err
    parser.add_argument("--count", type=int, default=1)
    return parser, out, err


class ParserTests(SynchronousTestCase):
    """L{Parser}."""

    def test_parses(self) -> None:
        """Good arguments parse as with argparse, and nothing is written."""
        parser, out, err = _parser()
        self.assertEqual(parser.parse_args(["--count", "3"]).count, 3)
        self.assertEqual((out.getvalue(), err.getvalue()), ("", ""))

    def test_usageError(self) -> None:
        """
        A usage error raises L{Exit} with the usage status and the error as
        its message; the usage goes to C{err}, nothing to C{out}.
        """
        parser, out, err = _parser()
        with self.assertRaises(Exit) as raised:
            parser.parse_args(["--count", "many"])
        self.assertEqual(raised.exception.status, EXIT_USAGE)
        self.assertEqual(
            raised.exception.message, "tool: error: argument --count: invalid int value: 'many'\n"
        )
        self.assertIn("usage: tool", err.getvalue())
        self.assertEqual(out.getvalue(), "")

    def test_help(self) -> None:
        """C{--help} writes to C{out} and raises L{Exit} with status 0, no message."""
        parser, out, err = _parser()
        with self.assertRaises(Exit) as raised:
            parser.parse_args(["--help"])
        self.assertEqual((raised.exception.status, raised.exception.message), (0, None))
        self.assertIn("A tool.", out.getvalue())
        self.assertEqual(err.getvalue(), "")


class ExitTests(SynchronousTestCase):
    """L{Exit.report}."""

    def test_report(self) -> None:
        """The message, if any, goes to the stream; the status is returned."""
        err = StringIO()
        self.assertEqual(Exit(3, "tool: no\n").report(err), 3)
        self.assertEqual(Exit(0, None).report(err), 0)
        self.assertEqual(err.getvalue(), "tool: no\n")
