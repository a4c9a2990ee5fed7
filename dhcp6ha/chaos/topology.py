# -*- test-case-name: tests.integration.test_chaos -*-
"""
The network of a chaos run: four network namespaces joined by veth pairs,
and the network faults the scheduler injects into it.

::

      <prefix>-s1 (primary)           <prefix>-s2 (secondary)
      lan  LAN::1    peer PEER::1 ==== peer PEER::2    lan  LAN::2
       |                (partner link, a veth pair)      |
       |                                                 |
      b1 -------------- br0 (<prefix>-br) ------------- b2
                         |
                        bc
                         |
                        lan  (<prefix>-c: the simulated clients)

The partner link is separate from the client link, so that the two kinds of
fault are independent:

  - the partner link cut in both directions: its veth set down
    (L{Topology.partnerLinkDown}: both ends lose the route, connects fail
    at once) or both directions dropped silently (L{Topology.blackhole} on
    both sides: packets vanish, TCP times out);
  - cut in one direction: a blackhole route, in the sender's namespace, to
    the partner's partner-link address (what one side sends vanishes,
    what the other side sends arrives);
  - one server cut off from the clients while it still talks to its
    partner (RFC 7031 section 4.7): its bridge port set down
    (L{Topology.cutClients}).

Only C{ip} (iproute2) is used: the kernels this runs on may lack netem,
tc classifiers and netfilter modules, and blackhole routes and link states
are part of every kernel.

Names: every namespace is C{<prefix>-s1}, C{-s2}, C{-c}, C{-br}; the
default prefix carries the PID of the process (C{d6chaos<PID>}) so that
leftovers of a killed run are recognised and removed by the next one
(L{removeStale}).  Interface names are the same in every run (each lives
in its own namespace).

Nothing here imports the test suite: the harness is part of the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CLIENT_IFACE",
    "LAN",
    "LAN_PD",
    "PEER",
    "PREFIX_BASE",
    "SERVER_IFACE",
    "SERVERS",
    "CommandFailed",
    "Namespace",
    "Topology",
    "namespaceProblem",
    "removeStale",
    "run",
]

PREFIX_BASE = "d6chaos"
"""Start of every namespace name the harness makes (then the PID)."""

SERVERS = ("primary", "secondary")
"""The two servers of the pair, in the order of their namespaces s1, s2."""

LAN = IPv6Network("fd6a:5e1f:c5::/64")
"""The client link: the primary is C{::1}, the secondary C{::2}."""
LAN_PD = IPv6Network("fd6a:5e1f:c500::/40")
"""Where the delegated prefixes of the run come from."""
PEER = IPv6Network("fd6a:5e1f:cf::/64")
"""The partner link: the primary is C{::1}, the secondary C{::2}."""

SERVER_IFACE = "lan"
"""A server's client-facing interface (in its namespace)."""
PEER_IFACE = "peer"
"""A server's partner-link interface (in its namespace)."""
CLIENT_IFACE = "lan"
"""The clients' interface (in their namespace)."""
BRIDGE = "br0"
_BRIDGE_PORTS = {"primary": "b1", "secondary": "b2", "clients": "bc"}
_CLONE_NEWNET = 0x40000000


class CommandFailed(RuntimeError):
    """A command of the topology failed; the message has its output."""


def run(
    args: Sequence[str], timeout: float = 15.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """
    Run a short command to completion, with a timeout.

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


def namespaceProblem() -> str | None:
    """
    Why the harness cannot run here, or C{None}: it needs root and a
    working C{ip netns}.
    """
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    name = f"{PREFIX_BASE}{os.getpid()}-probe"
    try:
        run(["ip", "netns", "add", name], timeout=10)
    except CommandFailed as e:
        return f"ip netns is unusable here: {e}"
    run(["ip", "netns", "del", name], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pidsIn(name: str) -> list[int]:
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def removeStale() -> list[str]:
    """
    Delete the namespaces of earlier harness runs whose process is gone
    (killed before it could clean up), killing what still runs in them
    (only that run's children can be there).

    @return: the names removed.
    """
    removed = []
    proc = run(["ip", "netns", "list"], check=False)
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(PREFIX_BASE + r"(\d+)-.*", name)
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
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Namespace:
    """One network namespace, by the name C{ip netns} knows it by."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def command(self, *args: str) -> list[str]:
        """The argv that runs C{args} inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, timeout: float = 15.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside this namespace (L{run})."""
        return run(self.command(*args), timeout=timeout, check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def create(self) -> None:
        """
        Create it, with DAD and router advertisements off before any link
        exists (addresses usable at once), addresses kept when a link goes
        down, and C{lo} up.
        """
        run(["ip", "netns", "add", self.name])
        for conf in ("all", "default"):
            self.sysctl(f"net.ipv6.conf.{conf}.accept_dad", "0")
            self.sysctl(f"net.ipv6.conf.{conf}.accept_ra", "0")
            self.sysctl(f"net.ipv6.conf.{conf}.keep_addr_on_down", "1")
        self.run("ip", "link", "set", "dev", "lo", "up")

    def pids(self) -> list[int]:
        """The processes running inside."""
        return _pidsIn(self.name)

    def delete(self) -> None:
        """Kill what still runs inside (only our own children), then delete it."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run(["ip", "netns", "del", self.name], check=False)

    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    def spawn(
        self,
        args: Sequence[str],
        log: IO[bytes],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """
        Start C{args} inside this namespace, in a session of its own, output
        to C{log}.  C{ip netns exec} execs the command, so the PID is the
        command's own (a signal to it reaches the command).
        """
        return subprocess.Popen(
            self.command(*args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """
        Run the body with the calling thread inside this namespace, and
        return to the original one afterwards.  Sockets created in the body
        belong to this namespace for good.
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

    def ifindex(self, iface: str) -> int:
        """The index of an interface of this namespace."""
        with self.entered():
            return socket.if_nametoindex(iface)

    def linkLocal(self, iface: str) -> str | None:
        """The usable (not tentative) link-local address of C{iface}, if any."""
        out = self.run("ip", "-j", "-6", "addr", "show", "dev", iface).stdout
        data = json.loads(out) if out.strip() else []
        for a in data[0].get("addr_info", []) if data else []:
            if a.get("scope") == "link" and not a.get("tentative"):
                return str(a["local"])
        return None

    def operUp(self, iface: str) -> bool:
        out = self.run("ip", "-j", "link", "show", "dev", iface).stdout
        data = json.loads(out) if out.strip() else []
        return bool(data) and data[0].get("operstate") == "UP"

    def udpListening(self, port: int) -> bool:
        """Is some UDP socket bound to C{port} in this namespace?"""
        out = self.run("ss", "-H", "-u", "-a", "-n", f"sport = :{port}", check=False).stdout
        return bool(out.strip())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise CommandFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Topology:
    """
    The four namespaces of a run and the faults of the network.

    Every fault method is idempotent and has its undo; L{healAll} undoes
    every fault there is.  L{destroy} removes everything (and kills what
    runs inside).

    @ivar servers: the namespace of each server, by name (L{SERVERS}).
    @ivar clients: the clients' namespace.
    @ivar bridge: the bridge's namespace.
    """

    def __init__(self, prefix: str | None = None) -> None:
        """
        @param prefix: the start of every namespace name; by default
            C{d6chaos<PID>} (what L{removeStale} recognises).
        """
        self.prefix = prefix or f"{PREFIX_BASE}{os.getpid()}"
        self.servers = {
            "primary": Namespace(f"{self.prefix}-s1"),
            "secondary": Namespace(f"{self.prefix}-s2"),
        }
        self.clients = Namespace(f"{self.prefix}-c")
        self.bridge = Namespace(f"{self.prefix}-br")
        self._linkDown = False
        self._blackholes: set[str] = set()
        self._cut: set[str] = set()

    # --- addresses -------------------------------------------------------------

    @staticmethod
    def lanAddress(server: str) -> IPv6Address:
        """A server's address on the client link."""
        return LAN.network_address + (1 + SERVERS.index(server))

    @staticmethod
    def peerAddress(server: str) -> IPv6Address:
        """A server's address on the partner link."""
        return PEER.network_address + (1 + SERVERS.index(server))

    @staticmethod
    def partnerOf(server: str) -> str:
        return SERVERS[1 - SERVERS.index(server)]

    def namespaces(self) -> list[Namespace]:
        return [*self.servers.values(), self.clients, self.bridge]

    # --- building and removing ---------------------------------------------------

    def create(self, timeout: float = 15.0) -> None:
        """
        Make the namespaces and links (see the module docstring) and wait
        until every link is up with its link-local address usable.  On
        failure, whatever was made is removed again.
        """
        try:
            self._create(timeout)
        except BaseException:
            self.destroy()
            raise

    def _create(self, timeout: float) -> None:
        for ns in self.namespaces():
            ns.create()
        br = self.bridge
        br.run("ip", "link", "add", "name", BRIDGE, "type", "bridge")
        # Unknown multicast is flooded either way; without snooping nothing
        # depends on MLD reports reaching the bridge in time.
        br.run("ip", "link", "set", "dev", BRIDGE, "type", "bridge", "mcast_snooping", "0")
        br.run("ip", "link", "set", "dev", BRIDGE, "up")
        ends: list[tuple[Namespace, str]] = []
        for name, ns in [*self.servers.items(), ("clients", self.clients)]:
            iface = CLIENT_IFACE if name == "clients" else SERVER_IFACE
            port = _BRIDGE_PORTS[name]
            self._veth(ns, iface, br, port)
            br.run("ip", "link", "set", "dev", port, "master", BRIDGE)
            ends += [(ns, iface), (br, port)]
        s1, s2 = self.servers["primary"], self.servers["secondary"]
        self._veth(s1, PEER_IFACE, s2, PEER_IFACE)
        ends += [(s1, PEER_IFACE), (s2, PEER_IFACE)]
        for server, ns in self.servers.items():
            ns.run("ip", "-6", "addr", "add", f"{self.lanAddress(server)}/64", "dev",
                   SERVER_IFACE, "nodad")  # fmt: skip
            ns.run("ip", "-6", "addr", "add", f"{self.peerAddress(server)}/64", "dev",
                   PEER_IFACE, "nodad")  # fmt: skip
        for ns, iface in ends:
            ns.run("ip", "link", "set", "dev", iface, "up")
        for ns, iface in ends:
            _wait(lambda ns=ns, iface=iface: ns.operUp(iface), timeout, f"{ns.name}/{iface} up")
        for ns, iface in [(s1, SERVER_IFACE), (s2, SERVER_IFACE), (self.clients, CLIENT_IFACE)]:
            _wait(
                lambda ns=ns, iface=iface: ns.linkLocal(iface),
                timeout,
                f"a link-local address on {ns.name}/{iface}",
            )

    @staticmethod
    def _veth(a: Namespace, ifA: str, b: Namespace, ifB: str) -> None:
        run(["ip", "link", "add", "name", ifA, "netns", a.name, "type", "veth",
             "peer", "name", ifB, "netns", b.name])  # fmt: skip
        for ns, iface in ((a, ifA), (b, ifB)):
            ns.sysctl(f"net.ipv6.conf.{iface}.accept_dad", "0")
            ns.sysctl(f"net.ipv6.conf.{iface}.accept_ra", "0")

    def destroy(self) -> None:
        """Remove every namespace (killing what runs inside)."""
        for ns in self.namespaces():
            if ns.exists():
                ns.delete()

    # --- faults ------------------------------------------------------------------

    def partnerLinkDown(self) -> None:
        """Cut the partner link in both directions: its veth goes down."""
        self.servers["primary"].run("ip", "link", "set", "dev", PEER_IFACE, "down")
        self._linkDown = True

    def partnerLinkUp(self) -> None:
        """Undo L{partnerLinkDown}."""
        for ns in self.servers.values():
            ns.run("ip", "link", "set", "dev", PEER_IFACE, "up")
        self._linkDown = False

    def blackhole(self, sender: str) -> None:
        """
        Drop, silently, everything C{sender} sends to its partner on the
        partner link (one direction; both senders: both directions).
        """
        if sender in self._blackholes:
            return
        target = self.peerAddress(self.partnerOf(sender))
        self.servers[sender].run("ip", "-6", "route", "add", "blackhole", f"{target}/128")
        self._blackholes.add(sender)

    def unblackhole(self, sender: str) -> None:
        """Undo L{blackhole}."""
        target = self.peerAddress(self.partnerOf(sender))
        self.servers[sender].run(
            "ip", "-6", "route", "del", "blackhole", f"{target}/128", check=False
        )
        self._blackholes.discard(sender)

    def cutClients(self, server: str) -> None:
        """
        Cut C{server} off from the clients (its bridge port goes down); it
        still reaches its partner.
        """
        self.bridge.run("ip", "link", "set", "dev", _BRIDGE_PORTS[server], "down")
        self._cut.add(server)

    def restoreClients(self, server: str) -> None:
        """Undo L{cutClients}."""
        self.bridge.run("ip", "link", "set", "dev", _BRIDGE_PORTS[server], "up")
        self._cut.discard(server)

    def faultsInPlace(self) -> list[str]:
        """The network faults in place now, for reports."""
        out = ["partner link down"] if self._linkDown else []
        out += [f"{s} -> {self.partnerOf(s)} dropped" for s in sorted(self._blackholes)]
        out += [f"{s} cut from the clients" for s in sorted(self._cut)]
        return out

    def healAll(self) -> None:
        """Undo every network fault (also ones this object did not record)."""
        self.partnerLinkUp()
        for server in SERVERS:
            self.unblackhole(server)
            self.restoreClients(server)
