# -*- test-case-name: tests.integration.test_netns -*-
"""
Harness for tests on real sockets: network namespaces joined by veth pairs,
processes started in them and always stopped again.

Everything created here carries the prefix C{d6ha} and the PID of the test
process, so that concurrent runs on one machine never collide and leftovers of
a killed run can be recognised (L{removeStale}).  Every resource is
registered with C{testCase.addCleanup} as soon as it exists, so it is removed
even when the test fails half-way.

The namespaces themselves are L{dhcp6ha.netns} (shared with the chaos
harness); what is here ties them to a test: names, cleanups, skipping,
waiting on the reactor, processes with log files, captures.

Waiting is always by polling a condition with a deadline (L{waitFor}), never
by fixed sleeps; tests that use this module are C{twisted.trial.unittest.
TestCase}s with a C{timeout}, written as C{async def}.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import deferLater
from zope.interface import implementer

import dhcp6ha.netns
from dhcp6ha.netns import namespaceProblem, run, startProcess, vethPair

__all__ = [
    "CLIENT_MAC",
    "PREFIX",
    "REPO",
    "Capture",
    "CleanupRegistry",
    "ConditionTimeout",
    "DatagramSocket",
    "Namespace",
    "Process",
    "netnsProblem",
    "removeStale",
    "run",
    "skipReason",
    "sleep",
    "tempDir",
    "veth",
    "waitFor",
    "within",
]

T = TypeVar("T")

PREFIX = "d6ha"
REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()


class CleanupRegistry(Protocol):
    """The part of a trial TestCase this module uses."""

    def addCleanup(self, f: Callable[..., object], *args: object, **kwargs: object) -> None: ...


# --- skipping ------------------------------------------------------------


@functools.cache
def netnsProblem() -> str | None:
    """
    Why namespaces cannot be used here, or C{None} if they can: we must be
    root and C{ip netns add} must work (probed once per process, when the
    leftovers of killed runs are removed too: L{removeStale}).
    """
    problem = namespaceProblem(f"{PREFIX}-{os.getpid()}-probe")
    if problem is None:
        removeStale()
    return problem


def skipReason(*binaries: str) -> str | None:
    """
    A reason to skip a namespace test, or C{None}: no root, no usable
    C{ip netns}, or one of C{binaries} (names or absolute paths) missing.
    """
    problem = netnsProblem()
    if problem is not None:
        return problem
    for binary in binaries:
        if shutil.which(binary) is None and not os.access(binary, os.X_OK):
            return f"{binary} is not installed"
    return None


def removeStale() -> list[str]:
    """
    Delete namespaces left by earlier runs of these tests whose process is
    gone (a run killed before its cleanups ran); only C{d6ha-PID-...} ones.

    @return: the names removed.
    """
    return dhcp6ha.netns.removeStale(PREFIX + r"-(\d+)-.*")


# --- waiting -------------------------------------------------------------


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred that fires after C{seconds} of reactor time."""
    from twisted.internet import reactor

    return deferLater(reactor, seconds, lambda: None)


class ConditionTimeout(AssertionError):
    """A condition polled by L{waitFor} did not come true in time."""


async def waitFor(
    predicate: Callable[[], T | None | bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """
    Poll C{predicate} until it returns something truthy; return that.

    @raise ConditionTimeout: after C{timeout} seconds, naming C{what} and
        adding C{details()} (e.g. a log tail) to the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            extra = ""
            if details is not None:
                try:
                    extra = "\n" + details()
                except Exception as e:  # noqa: BLE001 - diagnostics only
                    extra = f"\n(details failed: {e!r})"
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {what}{extra}")
        await sleep(interval)


async def within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """Await C{awaitable}, failing with L{ConditionTimeout} after C{timeout}."""
    from twisted.internet import reactor

    d: Deferred[T] = Deferred.fromCoroutine(_await(awaitable))
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except Exception as e:
        from twisted.internet.defer import TimeoutError as DeferTimeout

        if isinstance(e, DeferTimeout):
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {what}") from e
        raise


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


# --- processes -----------------------------------------------------------


class Process:
    """
    A child process whose output goes to a log file; stopped by its PID.
    """

    def __init__(
        self,
        args: Sequence[str],
        logPath: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.logPath = logPath
        self._log = open(logPath, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = startProcess(self.args, self._log, env=env, cwd=cwd)
        self.pid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(5)
        self._log.close()

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to C{grace} seconds, then SIGKILL; reap."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def log(self) -> str:
        try:
            return self.logPath.read_text(errors="replace")
        except OSError:
            return ""

    def logTail(self, lines: int = 40) -> str:
        return f"--- {self.logPath} ---\n" + "\n".join(self.log().splitlines()[-lines:])

    async def exited(self, timeout: float, what: str | None = None) -> int:
        """Wait for the process to exit; return its status."""
        await waitFor(
            lambda: not self.running(),
            timeout,
            what or f"{self.args[0]} to exit",
            details=self.logTail,
        )
        return self.popen.returncode


# --- namespaces ----------------------------------------------------------


class Namespace(dhcp6ha.netns.Namespace):
    """
    A namespace of a test (L{dhcp6ha.netns.Namespace}): made by L{create},
    removed at the test's cleanup, processes started in it stopped then.
    """

    @classmethod
    def create(cls, testCase: CleanupRegistry, role: str) -> Namespace:
        """
        Create a namespace named C{d6ha-PID-N-ROLE} (L{dhcp6ha.netns.
        Namespace.add}) and register its removal (which first kills
        anything still running inside it).
        """
        ns = cls(f"{PREFIX}-{os.getpid()}-{next(_counter)}-{role}")
        testCase.addCleanup(ns.delete)
        ns.add()
        return ns

    def spawn(
        self,
        testCase: CleanupRegistry,
        args: Sequence[str],
        logPath: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        grace: float = 5.0,
    ) -> Process:
        """Start C{args} in this namespace; stopped (TERM, then KILL) at cleanup."""
        proc = Process(self.command(*args), logPath, env=env, cwd=cwd)
        testCase.addCleanup(proc.stop, grace)
        return proc


#: MAC of the client end of a link by default.  ISC dhclient derives its
#: IAID (and DUID-LL) from the MAC, and when the IAID's 4 bytes happen to be
#: printable it writes them to its lease file as a string it cannot read
#: back (4.4.3: "Expecting IAID of length 4, got 2"), so a random MAC makes
#: restart tests flaky; these bytes include 0x00.
CLIENT_MAC = "02:6a:5e:1f:00:01"


async def veth(
    nsA: Namespace,
    ifA: str,
    nsB: Namespace,
    ifB: str,
    timeout: float = 10.0,
    macB: str | None = CLIENT_MAC,
) -> tuple[str, str]:
    """
    Join two namespaces with a veth pair created directly inside them, bring
    both ends up and wait until both link-local addresses are usable;
    return them (A's, B's).  The pair goes away with its namespaces.
    B's end (the client's, by convention) gets the MAC C{macB}
    (L{CLIENT_MAC}), or a random one if C{None}.
    """
    vethPair(nsA, ifA, nsB, ifB, macB=macB)
    for ns, iface in ((nsA, ifA), (nsB, ifB)):
        ns.run("ip", "link", "set", iface, "up")
    llA = await waitFor(
        lambda: nsA.linkLocal(ifA), timeout, f"link-local address on {nsA.name}/{ifA}"
    )
    llB = await waitFor(
        lambda: nsB.linkLocal(ifB), timeout, f"link-local address on {nsB.name}/{ifB}"
    )
    await waitFor(lambda: nsA.operUp(ifA) and nsB.operUp(ifB), timeout, "veth carrier")
    return llA, llB


def tempDir(testCase: Any) -> Path:
    """A fresh directory for this test's files (under trial's _trial_temp)."""
    path = Path(testCase.mktemp()).resolve()
    path.mkdir(parents=True)
    return path


# --- datagram sockets driven by the reactor --------------------------------


@implementer(IReadDescriptor)
class DatagramSocket:
    """
    A non-blocking UDP socket read by the reactor, keeping the full IPv6
    source address (with its scope id, which Twisted's UDP port drops), so
    that link-local peers in other namespaces can be answered.

    C{handler(data, address)} is called for each datagram.
    """

    def __init__(
        self, sock: socket.socket, handler: Callable[[bytes, tuple[Any, ...]], None]
    ) -> None:
        from twisted.internet import reactor

        self.sock = sock
        self.handler = handler
        sock.setblocking(False)
        self._reactor: Any = reactor
        self._reactor.addReader(self)
        self.closed = False

    @classmethod
    def open(
        cls,
        testCase: CleanupRegistry,
        handler: Callable[[bytes, tuple[Any, ...]], None],
        ns: Namespace | None = None,
        address: str = "::",
        port: int = 0,
        joinOn: str | None = None,
    ) -> DatagramSocket:
        """
        Bind a UDP socket (in C{ns}, else here) to C{address}/C{port}; join
        ff02::1:2 on interface C{joinOn} if given; closed at cleanup.
        """
        if ns is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            ifindex = socket.if_nametoindex(joinOn) if joinOn else 0
        else:
            with ns.entered():
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                ifindex = socket.if_nametoindex(joinOn) if joinOn else 0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if joinOn:
            mreq = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack("@I", ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        ds = cls(sock, handler)
        testCase.addCleanup(ds.close)
        return ds

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "DatagramSocket"

    def doRead(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.handler(data, addr)

    def connectionLost(self, reason: object) -> None:
        self.close()

    def send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._reactor.removeReader(self)
            self.sock.close()


# --- packet captures -------------------------------------------------------


class Capture:
    """
    tcpdump on one interface of a namespace, writing DHCPv6 traffic to a
    pcap file in the test directory (kept for diagnosis); stopped at cleanup.
    Does nothing if tcpdump is missing.
    """

    def __init__(self, testCase: CleanupRegistry, ns: Namespace, iface: str, path: Path) -> None:
        self.path = path
        self.process: Process | None = None
        if shutil.which("tcpdump") is None:
            return
        args = ["tcpdump", "-i", iface, "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(path),
                "udp port 546 or udp port 547"]  # fmt: skip
        self.process = ns.spawn(testCase, args, path.with_suffix(".log"), grace=3.0)

    async def started(self, timeout: float = 5.0) -> None:
        if self.process is not None:
            proc = self.process
            await waitFor(
                lambda: "listening on" in proc.log() or not proc.running(),
                timeout,
                "tcpdump to start",
            )

    def messages(self) -> list[tuple[str, str, str]]:
        """
        (message type, transaction id, the decoded line) of every DHCPv6
        message captured so far, e.g. C{("reply", "235a81", "...")}.
        """
        if self.process is None or not self.path.exists():
            return []
        proc = run(["tcpdump", "-n", "-vv", "-r", str(self.path)], check=False)
        out = []
        for line in proc.stdout.splitlines():
            m = re.search(r"dhcp6 ([a-z-]+) \(xid=([0-9a-f]+)", line)
            if m:
                out.append((m.group(1), m.group(2), line))
        return out

    def answered(self, request: str) -> tuple[str, str] | None:
        """
        The last C{request} message (e.g. C{"release"}) captured and the
        decoded reply with the same transaction id, or C{None} while there
        is none.
        """
        messages = self.messages()
        xids = [xid for kind, xid, _ in messages if kind == request]
        if not xids:
            return None
        for kind, xid, line in messages:
            if kind == "reply" and xid == xids[-1]:
                return (xids[-1], line)
        return None

    def text(self, limit: int = 80) -> str:
        """A decoded summary of what was captured so far."""
        if self.process is None or not self.path.exists():
            return "(no capture)"
        proc = run(["tcpdump", "-n", "-vv", "-r", str(self.path)], check=False)
        lines = proc.stdout.splitlines()
        return f"--- capture {self.path} ---\n" + "\n".join(lines[-limit:])
