# -*- test-case-name: tests.integration.test_netns,tests.integration.test_chaos -*-
"""
Network namespaces, as C{ip netns} (iproute2) makes them: the plumbing
shared by the chaos harness (L{dhcp6ha.chaos.topology}) and the integration
tests (C{tests.integration.netns}).

Each user names its namespaces with a prefix of its own that carries the
PID of the process that made them (C{d6chaos<PID>-...}, C{d6ha-<PID>-...}),
so that L{removeStale} can recognise the leftovers of a run that was killed
before it cleaned up, and never touches the namespaces of a run that is
still alive, nor anybody else's.

A thread enters a namespace with C{setns(2)} (L{Namespace.entered}):
sockets it makes there stay in that namespace, so one process can talk
into several namespaces.  Processes are started inside one with
C{ip netns exec} (L{Namespace.command}).

Nothing here imports Twisted or the test suite: waiting and cleanup belong
to the callers.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CLONE_NEWNET",
    "CommandFailed",
    "Namespace",
    "namespaceProblem",
    "removeStale",
    "run",
    "startProcess",
    "vethPair",
]

CLONE_NEWNET = 0x40000000
"""The C{setns(2)} flag of a network namespace."""


class CommandFailed(RuntimeError):
    """A command failed (exit status, timeout, not found); the message has its output."""


def run(
    args: Sequence[str], timeout: float = 15.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """
    Run a short command to completion, with a timeout.

    @return: the finished process; without C{check}, a command that could
        not run or timed out reads as exit status 255 with the error as
        its stderr.
    @raise CommandFailed: if it fails (exit status, timeout, not found) and
        C{check} is set.
    """
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise CommandFailed(f"{' '.join(args)}: {e}") from None
        return subprocess.CompletedProcess(list(args), 255, "", str(e))
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            f" {proc.stdout.strip()}".rstrip()
        )
    return proc


def startProcess(
    args: Sequence[str],
    log: IO[bytes],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """
    Start C{args} in a session of its own (a signal to its process group
    reaches nothing of ours), no input, its output and errors to C{log}.
    """
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def namespaceProblem(probe: str) -> str | None:
    """
    Why network namespaces cannot be used here, or C{None}: they need root,
    iproute2, and a working C{ip netns add} (tried with a namespace named
    C{probe}, deleted again at once).
    """
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    try:
        run(["ip", "netns", "add", probe], timeout=10)
    except CommandFailed as e:
        return f"ip netns is unusable here: {e}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def removeStale(pattern: str) -> list[str]:
    """
    Delete the namespaces of earlier runs whose process is gone (killed
    before it could clean up), killing what still runs in them (only that
    run's children can be there).

    @param pattern: a regular expression a namespace name must match in
        full to be considered, whose first group is the PID of the process
        that made it (e.g. C{r"d6ha-(\\d+)-.*"}).  Namespaces of this process
        and of live processes are left alone.
    @return: the names removed.
    """
    removed = []
    proc = run(["ip", "netns", "list"], check=False)
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(pattern, name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        Namespace(name).delete()
        removed.append(name)
    return removed


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Namespace:
    """
    One network namespace, by the name C{ip netns} knows it by.  Making the
    object makes nothing: L{add} creates the namespace, L{delete} removes it.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    # --- the namespace itself --------------------------------------------------

    def add(self) -> None:
        """
        Create it, with DAD and router advertisements off before any link
        exists (addresses usable at once), addresses kept when a link goes
        down, and C{lo} up.

        @raise CommandFailed: if it cannot be made (e.g. the name is taken).
        """
        run(["ip", "netns", "add", self.name])
        for conf in ("all", "default"):
            self.sysctl(f"net.ipv6.conf.{conf}.accept_dad", "0")
            self.sysctl(f"net.ipv6.conf.{conf}.accept_ra", "0")
            self.sysctl(f"net.ipv6.conf.{conf}.keep_addr_on_down", "1")
        self.run("ip", "link", "set", "dev", "lo", "up")

    def delete(self) -> None:
        """
        Kill what still runs inside (only our own children end up there),
        then delete it; nothing happens if it does not exist.
        """
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run(["ip", "netns", "del", self.name], check=False)

    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    def pids(self) -> list[int]:
        """The processes running inside."""
        proc = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in proc.stdout.split() if p.isdigit()]

    # --- commands --------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        """
        The argv that runs C{args} inside this namespace.  C{ip netns exec}
        execs the command, so a process started with it has the command's
        PID (a signal to it reaches the command).
        """
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, timeout: float = 15.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside this namespace (L{run})."""
        return run(self.command(*args), timeout=timeout, check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    # --- this process inside ---------------------------------------------------

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """
        Run the body with the calling thread inside this namespace (setns on
        the thread only), and return to the original one afterwards.
        Sockets created in the body belong to this namespace for good.
        """
        with (
            open("/proc/thread-self/ns/net", "rb") as original,
            open(f"/run/netns/{self.name}", "rb") as target,
        ):
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(original.fileno())

    def socket(self, family: int = socket.AF_INET6, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket living in this namespace (usable from this process)."""
        with self.entered():
            return socket.socket(family, kind)

    def ifindex(self, iface: str) -> int:
        """The index of an interface of this namespace."""
        with self.entered():
            return socket.if_nametoindex(iface)

    # --- links and addresses ---------------------------------------------------

    def addresses(self, iface: str) -> list[dict[str, Any]]:
        """C{ip -j -6 addr show dev IFACE}'s addr_info entries."""
        out = self.run("ip", "-j", "-6", "addr", "show", "dev", iface).stdout
        data = json.loads(out) if out.strip() else []
        return list(data[0].get("addr_info", [])) if data else []

    def linkLocal(self, iface: str) -> str | None:
        """The usable (not tentative) link-local address of C{iface}, if any."""
        for a in self.addresses(iface):
            if a.get("scope") == "link" and not a.get("tentative"):
                return str(a["local"])
        return None

    def addAddress(self, iface: str, cidr: str) -> None:
        """Add an IPv6 address (C{ADDRESS/LENGTH}) to C{iface}, usable at once (no DAD)."""
        self.run("ip", "-6", "addr", "add", cidr, "dev", iface, "nodad")

    def operUp(self, iface: str) -> bool:
        """Is C{iface} operationally up (carrier)?"""
        out = self.run("ip", "-j", "link", "show", "dev", iface).stdout
        data = json.loads(out) if out.strip() else []
        return bool(data) and data[0].get("operstate") == "UP"

    def udpListening(self, port: int) -> bool:
        """Is some UDP socket bound to C{port} in this namespace?"""
        out = self.run("ss", "-H", "-u", "-a", "-n", f"sport = :{port}", check=False).stdout
        return bool(out.strip())


def vethPair(a: Namespace, ifA: str, b: Namespace, ifB: str, macB: str | None = None) -> None:
    """
    Join two namespaces with a veth pair created directly inside them
    (C{ifA} in C{a}, C{ifB} in C{b}), DAD and router advertisements off on
    both ends, both still down.  The pair goes away with its namespaces.

    @param macB: the MAC address of C{b}'s end; a random one if C{None}.
    """
    run(["ip", "link", "add", "name", ifA, "netns", a.name, "type", "veth",
         "peer", "name", ifB, "netns", b.name])  # fmt: skip
    if macB is not None:
        b.run("ip", "link", "set", "dev", ifB, "address", macB)
    for ns, iface in ((a, ifA), (b, ifB)):
        ns.sysctl(f"net.ipv6.conf.{iface}.accept_dad", "0")
        ns.sysctl(f"net.ipv6.conf.{iface}.accept_ra", "0")
