# -*- test-case-name: tests.test_runpair -*-
"""
Run several dhcp6ha servers in the foreground as one: what C{make run} uses
to start the failover pair of C{etc/}::

    python -m dhcp6ha.runpair secondary=etc/secondary.ini primary=etc/primary.ini

Each C{LABEL=CONFIG} becomes, in the order given (the secondary first: it
listens, the primary connects)::

    twistd -n --pidfile RUNDIR/LABEL.pid dhcp6ha --config CONFIG

with its output (stdout and stderr) prefixed with its label, line by line.

  - SIGINT (Ctrl-C), SIGTERM and SIGHUP are passed on to every server
    (SIGHUP as SIGTERM), which stops cleanly; this tool exits once all have
    ended: status 0 if each stopped cleanly, else 1.  A second signal kills
    (SIGKILL) those still running, and so does the end of C{--stop-timeout}.
  - When one server ends by itself (a start-up error, a crash, a kill), the
    others are told to stop (SIGTERM) and this tool exits with status 1,
    saying which one ended and how.

The servers run in process groups of their own, so that a Ctrl-C in the
terminal reaches them once, through this tool, rather than twice; on Linux
each is also set to receive SIGTERM if this tool dies (even by SIGKILL), so
that none is left behind.

A development tool: under a service manager, run each server as its own
service instead.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, BinaryIO

from attrs import define, field, frozen

from dhcp6ha._cli import EXIT_USAGE, Exit, Parser

__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "Child",
    "main",
    "supervise",
    "twistdCommand",
]

#: Seconds servers get to stop before they are killed.  A dhcp6ha server
#: finishes the lease changes in hand and closes its database: a few
#: seconds at most.
DEFAULT_STOP_TIMEOUT = 30.0

#: The label of this tool's own lines.
_OWN_LABEL = "runpair"

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")

#: Signals passed on to the children, and as what.
_FORWARDED = {
    signal.SIGINT: signal.SIGINT,
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGHUP: signal.SIGTERM,
}

_PR_SET_PDEATHSIG = 1

#: Longest part of a line held back waiting for its end.
_MAX_LINE = 64 * 1024


@frozen
class Child:
    """
    A process to run.

    @ivar label: the name its output lines are prefixed with.
    @ivar argv: the command.
    """

    label: str
    argv: tuple[str, ...]


def twistdCommand(twistd: str, label: str, config: str, rundir: str) -> Child:
    """
    The command that runs one dhcp6ha server in the foreground.

    @param twistd: the C{twistd} executable.
    @param rundir: the directory of its pidfile, C{LABEL.pid}.
    """
    return Child(
        label,
        (
            twistd,
            "-n",
            "--pidfile",
            os.path.join(rundir, label + ".pid"),
            "dhcp6ha",
            "--config",
            config,
        ),
    )


def _signalName(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal " + str(number)


def _describeEnd(returncode: int, stopSignal: int | None) -> str:
    if stopSignal is not None and returncode == -stopSignal:
        # twistd ends with the signal that stopped it, once it has stopped.
        return "stopped (" + _signalName(stopSignal) + ")"
    if returncode < 0:
        return "was killed by " + _signalName(-returncode)
    return "exited with status " + str(returncode)


def _parentDeathSignal() -> Callable[[int], None] | None:
    """C{prctl(PR_SET_PDEATHSIG, sig)}, where there is one (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def setSignal(number: int) -> None:
        prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)

    return setSignal


@define
class _Running:
    """A started child: its process and the part of a line not yet shown."""

    child: Child
    process: subprocess.Popen[bytes]
    pending: bytes = b""
    returncode: int | None = None
    stopSignal: int | None = None
    outputOpen: bool = True


@define
class _Output:
    """Prefixed lines to C{stream}; output stops quietly if it breaks."""

    stream: BinaryIO | None
    width: int
    lost: bool = field(default=False)

    def lines(self, label: str, data: bytes) -> None:
        if self.stream is None or not data:
            return
        prefix = label.ljust(self.width).encode() + b" | "
        text = b"".join(prefix + line + b"\n" for line in data.split(b"\n"))
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.stream = None
            self.lost = True

    def say(self, message: str) -> None:
        self.lines(_OWN_LABEL, message.encode())


def _start(child: Child, parent: int, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    setDeathSignal = _parentDeathSignal()

    def prepare() -> None:
        # In the child, between fork and exec.
        if setDeathSignal is not None:
            setDeathSignal(signal.SIGTERM)
        if os.getppid() != parent:
            # The parent died before the death signal was set.
            os._exit(1)

    return subprocess.Popen(
        child.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
        process_group=0,
        preexec_fn=prepare,
    )


def supervise(
    children: Sequence[Child],
    out: BinaryIO | None,
    *,
    stopTimeout: float = DEFAULT_STOP_TIMEOUT,
    environment: dict[str, str] | None = None,
) -> int:
    """
    Start C{children} in order and run until all have ended; see the module
    docstring.  Installs handlers for SIGINT, SIGTERM and SIGHUP while it
    runs (call it from the main thread), and restores the previous ones.

    @param out: where the children's prefixed output and this tool's own
        messages go.
    @param stopTimeout: seconds from the stop request (a signal, or a child's
        end) to SIGKILL.
    @param environment: the children's environment; C{os.environ} by
        default.  C{PYTHONUNBUFFERED=1} is added, so that Python children's
        lines come when they are written.
    @return: the exit status: 0 if stopped by a signal and every child
        stopped cleanly (status 0, or the signal passed on), else 1.
    """
    if not children:
        raise ValueError("nothing to run")
    environment = dict(os.environ if environment is None else environment)
    environment["PYTHONUNBUFFERED"] = "1"
    output = _Output(out, max(len(_OWN_LABEL), *(len(c.label) for c in children)))
    received: list[int] = []

    def onSignal(number: int, frame: Any) -> None:
        received.append(number)

    previous = {number: signal.signal(number, onSignal) for number in _FORWARDED}
    running: list[_Running] = []
    selector = selectors.DefaultSelector()
    try:
        status = _run(children, running, selector, output, received, stopTimeout, environment)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for entry in running:
            if entry.returncode is None and entry.process.poll() is None:
                # Only if this function itself failed: never leave one behind.
                entry.process.kill()
                entry.process.wait()
            if entry.process.stdout is not None:
                entry.process.stdout.close()
        selector.close()
    return status


def _run(
    children: Sequence[Child],
    running: list[_Running],
    selector: selectors.BaseSelector,
    output: _Output,
    received: list[int],
    stopTimeout: float,
    environment: dict[str, str],
) -> int:
    stopping: str | None = None  # why, once stopping
    byChild = False
    deadline: float | None = None
    handled = 0
    parent = os.getpid()

    def stopAll(number: int) -> None:
        for entry in running:
            if entry.returncode is None:
                if entry.stopSignal is None:
                    # The stop asked for, not the SIGKILL that may follow.
                    entry.stopSignal = number
                try:
                    os.kill(entry.process.pid, number)
                except ProcessLookupError:
                    pass

    for child in children:
        if received:
            break
        try:
            process = _start(child, parent, environment)
        except OSError as e:
            output.say("cannot start " + child.label + ": " + (e.strerror or str(e)))
            stopping, byChild = child.label + " did not start", True
            break
        assert process.stdout is not None
        entry = _Running(child, process)
        running.append(entry)
        os.set_blocking(process.stdout.fileno(), False)
        selector.register(process.stdout, selectors.EVENT_READ, entry)
        output.say(
            "started " + child.label + " (pid " + str(process.pid) + "): " + shlex.join(child.argv)
        )

    if stopping is not None:
        stopAll(signal.SIGTERM)
        deadline = time.monotonic() + stopTimeout
        if running:
            output.say("stopping " + ", ".join(e.child.label for e in running))

    endedAt: float | None = None
    while True:
        while handled < len(received):
            number = received[handled]
            handled += 1
            left = [e for e in running if e.returncode is None]
            if stopping is None:
                stopping = _signalName(number)
                forwarded = _FORWARDED.get(signal.Signals(number), signal.SIGTERM)
                output.say(
                    stopping
                    + ": stopping "
                    + (", ".join(e.child.label for e in left) or "nothing")
                    + " ("
                    + _signalName(forwarded)
                    + "; again to kill)"
                )
                stopAll(forwarded)
                deadline = time.monotonic() + stopTimeout
            elif left:
                output.say(
                    _signalName(number)
                    + " again: killing "
                    + ", ".join(e.child.label + " (pid " + str(e.process.pid) + ")" for e in left)
                )
                stopAll(signal.SIGKILL)

        for key, _ in selector.select(timeout=0.1):
            entry = key.data
            _read(entry, selector, output)

        for entry in running:
            if entry.returncode is not None:
                continue
            returncode = entry.process.poll()
            if returncode is None:
                continue
            entry.returncode = returncode
            output.say(entry.child.label + " " + _describeEnd(returncode, entry.stopSignal))
            if stopping is None:
                stopping, byChild = entry.child.label + " ended", True
                left = [e for e in running if e.returncode is None]
                if left:
                    output.say("stopping " + ", ".join(e.child.label for e in left) + " (SIGTERM)")
                stopAll(signal.SIGTERM)
                deadline = time.monotonic() + stopTimeout

        if deadline is not None and time.monotonic() > deadline:
            left = [e for e in running if e.returncode is None]
            if left:
                output.say(
                    "still running after "
                    + format(stopTimeout, "g")
                    + " s: killing "
                    + ", ".join(e.child.label for e in left)
                )
                stopAll(signal.SIGKILL)
            deadline = None

        if all(e.returncode is not None for e in running):
            if endedAt is None:
                endedAt = time.monotonic()
            # Output a child passed on to its own children may stay open;
            # do not wait for it long.
            if not any(e.outputOpen for e in running) or time.monotonic() - endedAt > 1.0:
                break

    for entry in running:
        if entry.pending:
            output.lines(entry.child.label, entry.pending)
            entry.pending = b""
    if byChild:
        output.say("stopped: " + (stopping or ""))
        return 1
    clean = all(e.returncode in (0, -(e.stopSignal or 0)) for e in running)
    output.say("stopped" if clean else "stopped, not all cleanly")
    return 0 if clean else 1


def _read(entry: _Running, selector: selectors.BaseSelector, output: _Output) -> None:
    stream = entry.process.stdout
    assert stream is not None
    try:
        data = os.read(stream.fileno(), 65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        selector.unregister(stream)
        entry.outputOpen = False
        if entry.pending:
            output.lines(entry.child.label, entry.pending)
            entry.pending = b""
        return
    data = entry.pending + data
    complete, newline, entry.pending = data.rpartition(b"\n")
    if newline:
        output.lines(entry.child.label, complete)
    if len(entry.pending) > _MAX_LINE:
        output.lines(entry.child.label, entry.pending)
        entry.pending = b""


# ---------------------------------------------------------------------------
# Command line


def _server(text: str) -> tuple[str, str]:
    label, sep, config = text.partition("=")
    if not sep or not config:
        raise argparse.ArgumentTypeError(repr(text) + ": expected LABEL=CONFIG")
    if not _LABEL.match(label) or label == _OWN_LABEL:
        raise argparse.ArgumentTypeError(
            repr(label)
            + ": a label is 1 to 32 letters, digits, '.', '_' or '-' (not "
            + repr(_OWN_LABEL)
            + ")"
        )
    return label, config


def _defaultTwistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.access(beside, os.X_OK) else "twistd"


def main(
    argv: Sequence[str] | None = None,
    stdout: BinaryIO | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """
    Run with these arguments (default: C{sys.argv[1:]}).

    @return: the exit status: 0 stopped by a signal, every server cleanly;
        1 a server ended by itself or did not stop cleanly; 2 usage error.
    """
    err = sys.stderr if stderr is None else stderr
    parser = Parser(
        prog="python -m dhcp6ha.runpair",
        description=(
            "Run dhcp6ha servers in the foreground (twistd -n), their output prefixed with"
            " their labels; Ctrl-C or SIGTERM stops them all, and when one ends the others"
            " are stopped."
        ),
    )
    parser.out, parser.err = sys.stdout, err
    parser.add_argument(
        "servers",
        nargs="+",
        type=_server,
        metavar="LABEL=CONFIG",
        help="a server: its label and ini file; started in the order given",
    )
    parser.add_argument("--twistd", default=None, metavar="PATH", help="the twistd to run")
    parser.add_argument(
        "--rundir", default="var", metavar="DIR", help="where the pidfiles go (default var)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="SECONDS",
        help=f"time to stop before SIGKILL (default {DEFAULT_STOP_TIMEOUT:g})",
    )
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except Exit as e:
        return e.report(err)
    labels = [label for label, _ in args.servers]
    if len(set(labels)) != len(labels):
        err.write(parser.prog + ": error: each server needs its own label\n")
        return EXIT_USAGE
    if args.stop_timeout <= 0:
        err.write(parser.prog + ": error: --stop-timeout must be above 0\n")
        return EXIT_USAGE
    twistd = args.twistd if args.twistd is not None else _defaultTwistd()
    children = [twistdCommand(twistd, label, config, args.rundir) for label, config in args.servers]
    return supervise(
        children,
        sys.stdout.buffer if stdout is None else stdout,
        stopTimeout=args.stop_timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
