"""
Tests for L{dhcp6ha.runpair}, the foreground supervisor behind C{make run}.

It exists to handle real processes and real signals, so these tests run
real (small Python) child processes, each bounded: every child ends by
itself within a few seconds whatever happens, and the stop timeouts are
short.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.runpair import Child, main, supervise, twistdCommand

#: Preamble of every child: ends by itself after LIFETIME seconds, and
#: waits for files (written by other children) with a bound too.
PREAMBLE = """
import os, signal, sys, time
LIFETIME = 10
def waitFor(path):
    deadline = time.monotonic() + LIFETIME
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(99)
        time.sleep(0.01)
def ready(path):
    with open(path, "w"):
        pass
def twistdLike(number, frame):
    # Like twistd: stop, then end by the signal that stopped it.
    print("stopping on", signal.Signals(number).name)
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
"""


def child(label: str, body: str) -> Child:
    return Child(label, (sys.executable, "-c", PREAMBLE + body))


class SuperviseTests(SynchronousTestCase):
    """L{supervise} with real child processes."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def marker(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def supervise(self, children: Sequence[Child], stopTimeout: float = 5.0) -> tuple[int, str]:
        out = io.BytesIO()
        started = time.monotonic()
        status = supervise(children, out, stopTimeout=stopTimeout)
        self.assertLess(time.monotonic() - started, 15)
        return status, out.getvalue().decode()

    def test_oneEndsTheOtherIsStopped(self) -> None:
        """
        When one child ends by itself, the others get SIGTERM; the status is
        1 and the output says which ended, every line prefixed, the last
        partial line included.
        """
        ready = self.marker("a-ready")
        a = child(
            "a",
            f"signal.signal(signal.SIGTERM, lambda n, f: (print('a stopping'), sys.exit(0)))\n"
            f"print('a ready'); ready({ready!r}); time.sleep(LIFETIME)",
        )
        b = child(
            "bee",
            f"waitFor({ready!r}); sys.stdout.write('b here\\npartial'); sys.exit(3)",
        )
        status, output = self.supervise([a, b])
        self.assertEqual(status, 1)
        lines = output.splitlines()
        self.assertIn("a       | a ready", lines)
        self.assertIn("bee     | b here", lines)
        self.assertIn("bee     | partial", lines)
        self.assertIn("runpair | bee exited with status 3", lines)
        self.assertIn("runpair | stopping a (SIGTERM)", lines)
        self.assertIn("a       | a stopping", lines)
        self.assertIn("runpair | a exited with status 0", lines)
        self.assertEqual(lines[-1], "runpair | stopped: bee ended")
        self.assertTrue(lines[0].startswith("runpair | started a (pid "), lines[0])
        self.assertLess(
            output.index("runpair | started a (pid "), output.index("runpair | started bee (pid ")
        )

    def test_signalPassedOn(self) -> None:
        """
        SIGINT to the supervisor reaches every child once, as SIGINT; children
        that stop by it (as twistd does) count as stopped cleanly: status 0.
        """
        ready = self.marker("a-ready")
        a = child(
            "a",
            f"signal.signal(signal.SIGINT, twistdLike); ready({ready!r}); time.sleep(LIFETIME)",
        )
        b = child(
            "b",
            "signal.signal(signal.SIGINT, twistdLike)\n"
            f"waitFor({ready!r}); os.kill(os.getppid(), signal.SIGINT); time.sleep(LIFETIME)",
        )
        status, output = self.supervise([a, b])
        self.assertEqual(status, 0, output)
        lines = output.splitlines()
        self.assertIn("runpair | SIGINT: stopping a, b (SIGINT; again to kill)", lines)
        self.assertEqual(output.count("stopping on SIGINT"), 2)
        self.assertIn("runpair | a stopped (SIGINT)", lines)
        self.assertIn("runpair | b stopped (SIGINT)", lines)
        self.assertEqual(lines[-1], "runpair | stopped")

    def test_handlersRestored(self) -> None:
        """The signal handlers in place before are back afterwards."""
        before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        self.supervise([child("a", "pass")])
        after = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        self.assertEqual(after, before)

    def test_hangupStopsWithTerm(self) -> None:
        """SIGHUP (the terminal went away) stops the children with SIGTERM."""
        a = child(
            "a",
            "signal.signal(signal.SIGTERM, twistdLike)\n"
            "os.kill(os.getppid(), signal.SIGHUP); time.sleep(LIFETIME)",
        )
        status, output = self.supervise([a])
        self.assertEqual(status, 0, output)
        self.assertIn("runpair | SIGHUP: stopping a (SIGTERM; again to kill)", output)
        self.assertIn("runpair | a stopped (SIGTERM)", output)

    def test_stopTimeout(self) -> None:
        """A child that does not stop in time is killed, and the status is 1."""
        ready = self.marker("a-ready")
        a = child(
            "a",
            f"signal.signal(signal.SIGTERM, signal.SIG_IGN); ready({ready!r}); time.sleep(LIFETIME)",
        )
        b = child("b", f"waitFor({ready!r})")
        status, output = self.supervise([a, b], stopTimeout=0.3)
        self.assertEqual(status, 1)
        self.assertIn("runpair | b exited with status 0", output)
        self.assertIn("runpair | still running after 0.3 s: killing a", output)
        self.assertIn("runpair | a was killed by SIGKILL", output)

    def test_secondSignalKills(self) -> None:
        """A second signal kills the children still running; not clean: status 1."""
        ready = self.marker("a-ready")
        a = child(
            "a",
            f"signal.signal(signal.SIGINT, signal.SIG_IGN); ready({ready!r}); time.sleep(LIFETIME)",
        )
        b = child(
            "b",
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"waitFor({ready!r}); os.kill(os.getppid(), signal.SIGINT)\n"
            "time.sleep(0.2); os.kill(os.getppid(), signal.SIGINT); time.sleep(LIFETIME)",
        )
        status, output = self.supervise([a, b])
        self.assertEqual(status, 1, output)
        self.assertIn("runpair | SIGINT again: killing a (pid ", output)
        self.assertIn("runpair | a was killed by SIGKILL", output)
        self.assertIn("runpair | b was killed by SIGKILL", output)
        self.assertIn("runpair | stopped, not all cleanly", output)

    def test_childSetting(self) -> None:
        """
        Each child leads its own process group (a terminal's Ctrl-C reaches
        it only through the supervisor), reads nothing from stdin, and runs
        with C{PYTHONUNBUFFERED=1}.
        """
        a = child(
            "a",
            "print(os.getpgid(0) == os.getpid(), os.environ.get('PYTHONUNBUFFERED'),"
            " sys.stdin.read() == '')",
        )
        status, output = self.supervise([a])
        self.assertEqual(status, 1)
        self.assertIn("a       | True 1 True", output.splitlines())

    def test_cannotStart(self) -> None:
        """A child that cannot be started stops those already running; status 1."""
        a = child(
            "a",
            "signal.signal(signal.SIGTERM, twistdLike); time.sleep(LIFETIME)",
        )
        missing = Child("missing", (os.path.join(self.directory, "no-such-program"),))
        status, output = self.supervise([a, missing])
        self.assertEqual(status, 1)
        self.assertIn("runpair | cannot start missing: No such file or directory", output)
        self.assertIn("runpair | stopping a", output)
        self.assertIn("runpair | a stopped (SIGTERM)", output)
        self.assertNotIn("started missing", output)

    def test_nothing(self) -> None:
        """Nothing to run is an error."""
        self.assertRaises(ValueError, supervise, [], io.BytesIO())


FAKE_TWISTD = """\
import os, signal, sys, time
# Called as: twistd -n --pidfile PIDFILE dhcp6ha --config CONFIG
assert sys.argv[1:3] == ["-n", "--pidfile"] and sys.argv[4:6] == ["dhcp6ha", "--config"], sys.argv
pidfile = sys.argv[3]
def stop(number, frame):
    os.unlink(pidfile)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
print("serving", sys.argv[6])
time.sleep(10)
"""


class MainTests(SynchronousTestCase):
    """The command line, end to end, in a process of its own."""

    def test_twistdCommand(self) -> None:
        """Each server runs as C{twistd -n --pidfile RUNDIR/LABEL.pid dhcp6ha --config FILE}."""
        self.assertEqual(
            twistdCommand(".venv/bin/twistd", "primary", "etc/primary.ini", "var"),
            Child(
                "primary",
                (
                    ".venv/bin/twistd",
                    "-n",
                    "--pidfile",
                    "var/primary.pid",
                    "dhcp6ha",
                    "--config",
                    "etc/primary.ini",
                ),
            ),
        )

    def test_usage(self) -> None:
        """Usage errors: status 2 and the reason."""
        for argv, fragment in [
            ([], "the following arguments are required"),
            (["primary"], "expected LABEL=CONFIG"),
            (["primary="], "expected LABEL=CONFIG"),
            (["runpair=x.ini"], "a label is"),
            (["a=x.ini", "a=y.ini"], "its own label"),
            (["--stop-timeout", "0", "a=x.ini"], "--stop-timeout must be above 0"),
        ]:
            err = io.StringIO()
            self.assertEqual(main(argv, stdout=io.BytesIO(), stderr=err), 2, argv)
            self.assertIn(fragment, err.getvalue())

    def test_supervisorKilled(self) -> None:
        """
        Even when the supervisor is killed with SIGKILL, its servers are told
        to stop (Linux: the parent-death signal), so none is left behind.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("the parent-death signal is Linux's")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        twistd = os.path.join(directory, "twistd")
        with open(twistd, "w") as f:
            f.write("#!" + sys.executable + "\n" + FAKE_TWISTD)
        os.chmod(twistd, 0o755)
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dhcp6ha.runpair",
                "--twistd",
                twistd,
                "--rundir",
                directory,
                "secondary=etc/secondary.ini",
                "primary=etc/primary.ini",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(supervisor.wait)
        self.addCleanup(supervisor.kill)
        pidfiles = [os.path.join(directory, n + ".pid") for n in ("secondary", "primary")]
        deadline = time.monotonic() + 10
        while not all(os.path.exists(p) for p in pidfiles):
            self.assertLess(time.monotonic(), deadline, "the servers did not start")
            time.sleep(0.02)
        pids = []
        for path in pidfiles:
            with open(path) as f:
                pids.append(int(f.read()))
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 10
        while any(os.path.exists(p) for p in pidfiles):
            if time.monotonic() > deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.fail("the servers were left running after the supervisor was killed")
            time.sleep(0.02)
        assert supervisor.stdout is not None
        output = supervisor.stdout.read().decode()
        self.assertIn("runpair   | started secondary (pid " + str(pids[0]) + "): " + twistd, output)
        self.assertIn("runpair   | started primary (pid " + str(pids[1]) + ")", output)
