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

Only C{ip} (iproute2) is used, through L{dhcp6ha.netns}: the kernels this runs on may lack netem,
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

import os
import subprocess
import time
from collections.abc import Sequence
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import IO, Any

from dhcp6ha import netns
from dhcp6ha.netns import CommandFailed, vethPair

__all__ = [
    "CLIENT_IFACE",
    "LAN",
    "LAN_PD",
    "PEER",
    "PREFIX_BASE",
    "SERVER_IFACE",
    "SERVERS",
    "Namespace",
    "Topology",
    "namespaceProblem",
    "removeStale",
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


def namespaceProblem() -> str | None:
    """
    Why the harness cannot run here, or C{None}: it needs root and a
    working C{ip netns} (L{dhcp6ha.netns.namespaceProblem}).
    """
    return netns.namespaceProblem(f"{PREFIX_BASE}{os.getpid()}-probe")


def removeStale() -> list[str]:
    """
    Delete the namespaces of earlier harness runs whose process is gone
    (killed before it could clean up), killing what still runs in them
    (L{dhcp6ha.netns.removeStale}).

    @return: the names removed.
    """
    return netns.removeStale(PREFIX_BASE + r"(\d+)-.*")


class Namespace(netns.Namespace):
    """One namespace of the run, where the harness starts its servers."""

    def spawn(
        self,
        args: Sequence[str],
        log: IO[bytes],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """
        Start C{args} inside this namespace, in a session of its own, output
        to C{log} (L{dhcp6ha.netns.startProcess}); the PID is the command's
        own (L{command}).
        """
        return netns.startProcess(self.command(*args), log, env=env, cwd=cwd)


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
            ns.add()
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
            vethPair(ns, iface, br, port)
            br.run("ip", "link", "set", "dev", port, "master", BRIDGE)
            ends += [(ns, iface), (br, port)]
        s1, s2 = self.servers["primary"], self.servers["secondary"]
        vethPair(s1, PEER_IFACE, s2, PEER_IFACE)
        ends += [(s1, PEER_IFACE), (s2, PEER_IFACE)]
        for server, ns in self.servers.items():
            ns.addAddress(SERVER_IFACE, f"{self.lanAddress(server)}/64")
            ns.addAddress(PEER_IFACE, f"{self.peerAddress(server)}/64")
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
