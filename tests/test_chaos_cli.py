"""
Tests for the command line of L{dhcp6ha.chaos.__main__} that need no run:
a C{--kinds} value that starts with C{-}, and output to a reader that goes
away (C{| head}).  (Its other command-line tests are in
L{tests.test_chaos_faults}.)
"""

from __future__ import annotations

import io
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.chaos.__main__ import EXIT_BROKEN_PIPE, main
from dhcp6ha.chaos.faults import CLOCK_STEP, KILL, KINDS, ScheduleParameters, makeSchedule


class KindsTests(SynchronousTestCase):
    """C{--kinds -KIND} works as its own word and joined with C{=}."""

    def printed(self, *argv: str) -> str:
        out = io.StringIO()
        self.assertEqual(main(["--seed", "5", *argv, "--print-schedule"], out), 0)
        return out.getvalue()

    def test_leadingDash(self) -> None:
        """
        C{--kinds -clock-step}, C{--kinds=-clock-step} and the abbreviation
        C{--kind -clock-step} all mean every kind but clock-step.
        """
        rest = tuple(k for k in KINDS if k != CLOCK_STEP)
        expected = makeSchedule(5, ScheduleParameters(kinds=rest)).describe()
        replay = "--kinds " + ",".join(rest) + "\n"
        for argv in (
            ["--kinds", "-clock-step"],
            ["--kinds=-clock-step"],
            ["--kind", "-clock-step"],
        ):
            text = self.printed(*argv)
            self.assertIn(expected, text, argv)
            self.assertTrue(text.endswith(replay), argv)

    def test_leadingDashList(self) -> None:
        """A list of left-out kinds as its own word."""
        text = self.printed("--kinds", "-kill,-clock-step")
        self.assertIn(
            "--kinds " + ",".join(k for k in KINDS if k not in (KILL, CLOCK_STEP)) + "\n", text
        )

    def test_unknownLeftOut(self) -> None:
        """An unknown kind after C{-} is a usage error naming it, not a missing value."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["--kinds", "-nap", "--print-schedule"], io.StringIO()), 2)
        self.assertIn("unknown fault kind '-nap'", err.getvalue())

    def test_optionsAfterKindsStayOptions(self) -> None:
        """A short or long option after C{--kinds} is not taken as its value."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["--kinds", "-q", "--print-schedule"], io.StringIO()), 2)
        self.assertEqual(main(["--kinds", "--print-schedule"], io.StringIO()), 2)
        self.assertIn("--kinds: expected one argument", err.getvalue())


class BrokenPipeTests(SynchronousTestCase):
    """C{python -m dhcp6ha.chaos ... | head}: no traceback."""

    def test_readerGoesAway(self) -> None:
        """
        A reader that closes the pipe after the first line: the command
        stops, writes nothing on stderr, and exits with 141 (128 + SIGPIPE).
        """
        process = subprocess.Popen(
            [sys.executable, "-m", "dhcp6ha.chaos", "--seeds", "100000", "--first-seed", "1",
             "--print-schedule"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None and process.stderr is not None
            first = process.stdout.readline()
            process.stdout.close()
            status = process.wait(timeout=60)
            err = process.stderr.read()
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        self.assertTrue(first.startswith(b"schedule of seed 1:"), first)
        self.assertEqual(err, b"")
        self.assertEqual(status, EXIT_BROKEN_PIPE)
