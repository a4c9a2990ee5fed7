# -*- test-case-name: tests.integration.test_recovery -*-
"""
Tools for the recovery tests (L{tests.integration.test_recovery}): cutting
the partner link of a failover pair, relayed clients that reach one or both
servers and remember every Reply, and the invariant checks of DESIGN.md
("What never happens") over both databases and every Reply received.

  - L{PartnerLinkProxy}: a TCP proxy owned by the test between the primary
    and the secondary's partner port (the primary connects to the proxy).
    L{PartnerLinkProxy.cut} either closes every connection and refuses new
    ones (C{"refuse"}: both servers see the connection end at once), or
    silently drops every byte and holds new connections open without
    answering (C{"blackhole"}: the servers notice only by their keepalive,
    and reconnection attempts time out in the TLS handshake);
    L{PartnerLinkProxy.heal} forwards again.  The sockets are created inside
    the servers' network namespace and driven by this process's reactor.
  - L{Relay}: L{RelayedClients} sending each message to one or several
    servers (like a relay agent configured with two servers), recording
    every Reply in a shared L{Journal}.
  - L{Held}: one simulated client's current lease, renewed or rebound like
    a client would (L{renew}), kept alive by a L{Renewer} at half its valid
    lifetime.
  - L{doubleActive}, L{overlappingReplies}: invariant 1 over databases and
    Replies; L{loggedStates}: the relationship states a server went through,
    from its log lines (C{Failover NAME: OLD -> NEW}).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests.integration import wire
from tests.integration.netns import CleanupRegistry, Namespace, sleep
from tests.integration.pair import FailoverServer, Grant, LeaseKey, ReplicaDB, clientDuid
from tests.integration.relayclient import Exchange, Hop, Lease, NoReply, RelayedClients, leasesOf

__all__ = [
    "Held",
    "Journal",
    "PartnerLinkProxy",
    "Relay",
    "Renewer",
    "SeenReply",
    "acquire",
    "doubleActive",
    "loggedStates",
    "overlappingReplies",
    "renew",
]


# --- the partner link ------------------------------------------------------------------------


class _Half(Protocol):
    """One side of a proxied connection; forwards to C{peer} while allowed."""

    def __init__(self, proxy: PartnerLinkProxy) -> None:
        self.proxy = proxy
        self.peer: _Half | None = None
        self.generation = proxy.generation

    def connectionMade(self) -> None:
        self.proxy.live.add(self)

    def dataReceived(self, data: bytes) -> None:
        peer = self.peer
        if (
            self.proxy.mode == "forward"
            and self.generation == self.proxy.generation
            and peer is not None
            and peer.transport is not None
        ):
            self.proxy.forwarded += len(data)
            peer.transport.write(data)
        else:
            self.proxy.dropped += len(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.proxy.live.discard(self)
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.peer = None
            peer.transport.loseConnection()

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class _Inbound(_Half):
    """The primary's side: connect to the secondary, unless cut."""

    def connectionMade(self) -> None:
        super().connectionMade()
        proxy = self.proxy
        proxy.accepted += 1
        if proxy.mode != "forward":
            proxy.held += 1  # blackhole: accepted, never answered
            return
        try:
            sock = proxy.newSocket()
            sock.settimeout(2.0)
            sock.connect(proxy.target)
            sock.setblocking(False)
        except OSError:
            proxy.refusedUpstream += 1
            self.abort()
            return
        outbound = _Half(proxy)
        outbound.peer, self.peer = self, outbound
        try:
            proxy.reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET6, _Given(outbound))
        finally:
            sock.close()  # the reactor holds its own copy


class _Given(Factory):
    """A factory that returns one protocol instance, built beforehand."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.protocol_


class _InboundFactory(Factory):
    def __init__(self, proxy: PartnerLinkProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: object) -> Protocol:
        return _Inbound(self.proxy)


class PartnerLinkProxy:
    """
    A TCP proxy from C{[::1]:listenPort} to C{target}, in C{ns} (or here).

    @ivar mode: C{"forward"}, C{"refuse"} or C{"blackhole"}.
    @ivar accepted: connections accepted (attempts by the primary).
    @ivar forwarded: bytes forwarded; C{dropped}: bytes dropped while cut.
    """

    def __init__(
        self,
        testCase: CleanupRegistry,
        ns: Namespace | None,
        listenPort: int,
        target: tuple[str, int],
    ) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.ns = ns
        self.listenPort = listenPort
        self.target = target
        self.mode = "forward"
        self.generation = 0
        self.live: set[_Half] = set()
        self.port: IListeningPort | None = None
        self.accepted = self.held = self.refusedUpstream = 0
        self.forwarded = self.dropped = 0
        self.cuts: list[tuple[float, str]] = []
        testCase.addCleanup(self.close)

    def newSocket(self) -> socket.socket:
        if self.ns is not None:
            return self.ns.socket(socket.AF_INET6, socket.SOCK_STREAM)
        return socket.socket(socket.AF_INET6, socket.SOCK_STREAM)

    def listen(self) -> None:
        """Accept connections (again) on C{[::1]:listenPort}."""
        if self.port is not None:
            return
        sock = self.newSocket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::1", self.listenPort))
            sock.listen(16)
            sock.setblocking(False)
            self.port = self.reactor.adoptStreamPort(
                sock.fileno(), socket.AF_INET6, _InboundFactory(self)
            )
        finally:
            sock.close()

    def _abortAll(self) -> None:
        for half in list(self.live):
            half.abort()

    async def cut(self, mode: str) -> None:
        """
        Partition the link: C{"refuse"} closes every connection and stops
        listening (new attempts get ECONNREFUSED); C{"blackhole"} drops
        every byte from now on and holds new connections silently.
        """
        if mode not in ("refuse", "blackhole"):
            raise ValueError(mode)
        self.mode = mode
        self.generation += 1
        self.cuts.append((time.monotonic(), mode))
        if mode == "refuse":
            self._abortAll()
            await self._stopListening()

    async def heal(self) -> None:
        """Forward again; connections from before or during the cut are closed."""
        self.mode = "forward"
        self.generation += 1
        self.cuts.append((time.monotonic(), "heal"))
        self._abortAll()
        self.listen()

    async def _stopListening(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            d = port.stopListening()
            if d is not None:
                await d

    def close(self) -> Deferred[None] | None:
        self._abortAll()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    def describe(self) -> str:
        return (
            f"proxy: mode {self.mode}, {self.accepted} connections accepted ({self.held} held"
            f" silently, {self.refusedUpstream} refused upstream), {self.forwarded} bytes"
            f" forwarded, {self.dropped} dropped"
        )


# --- clients -------------------------------------------------------------------------------


@dataclass
class SeenReply:
    """One Reply received by a L{Relay}: when, from which server, what it granted."""

    time: float
    server: str
    msgType: int
    duid: bytes | None
    ias: list[tuple[int, bool, list[Lease]]]  # (IAID, is IA_PD, leases granted)


@dataclass
class Journal:
    """Every Reply any relay of a test received, in order."""

    replies: list[SeenReply] = field(default_factory=list)

    def grants(self) -> int:
        return sum(1 for r in self.replies for _, _, leases in r.ias if leases)

    def severalLeases(self) -> dict[tuple[bytes, int], set[str]]:
        """
        The client IAs that were granted more than one distinct address or
        prefix (e.g. both servers answering one Request), with the servers
        that granted them.
        """
        keys: dict[tuple[bytes, int], set[LeaseKey]] = {}
        servers: dict[tuple[bytes, int], set[str]] = {}
        for r in self.replies:
            if r.duid is None:
                continue
            for iaid, _, leases in r.ias:
                for x in leases:
                    keys.setdefault((r.duid, iaid), set()).add((x.address, x.prefixLength))
                    servers.setdefault((r.duid, iaid), set()).add(r.server)
        return {ia: servers[ia] for ia, k in keys.items() if len(k) > 1}


class Relay(RelayedClients):
    """
    Relayed clients that send each message to every one of C{servers} (one
    server: an ordinary relay; two: a relay agent configured with both) and
    take the first answer; every Reply, first or not, goes to C{journal}.
    """

    def __init__(
        self,
        testCase: CleanupRegistry,
        name: str,
        servers: Sequence[FailoverServer],
        linkAddress: IPv6Address,
        journal: Journal,
    ) -> None:
        first = servers[0]
        super().__init__(
            testCase,
            (first.address, first.port),
            [Hop(linkAddress)],
            ns=first.ns,
            bindAddress=first.address,
            details=lambda: "\n".join(s.logTail(30) for s in servers),
        )
        self.name = name
        self.targets = [(s.address, s.port) for s in servers]
        self.names = {s.port: s.name for s in servers}
        self.journal = journal

    def _received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = wire.parse(data)
            while msg.msgType == wire.RELAY_REPL:
                inner = msg.get(wire.OPT_RELAY_MSG)
                if inner is None:
                    raise ValueError("no relay message")
                msg = wire.parse(inner)
        except ValueError:
            msg = None
        if msg is not None and msg.msgType == wire.REPLY:
            ias = []
            for code, data_ in msg.options:
                if code in (wire.OPT_IA_NA, wire.OPT_IA_PD):
                    one = wire.Parsed(msg.msgType, msg.xid, [(code, data_)])
                    [ia] = one.ias()
                    ias.append((ia.iaid, code == wire.OPT_IA_PD, leasesOf(one)))
            self.journal.replies.append(
                SeenReply(
                    time.time(),
                    self.names.get(int(addr[1]), str(addr)),
                    msg.msgType,
                    msg.get(wire.OPT_CLIENTID),
                    ias,
                )
            )
        super()._received(data, addr)

    async def exchange(
        self,
        msgType: int,
        options: list[bytes],
        peer: IPv6Address,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> Exchange:
        """L{RelayedClients.exchange}, sending every attempt to every server."""
        from twisted.internet import reactor

        xid = next(self._xids) & 0xFFFFFF
        request = wire.message(msgType, xid, *options)
        packet = self.wrap(request, peer)
        for _ in range(attempts):
            d: Deferred[tuple[wire.Parsed, list[wire.Parsed]]] = Deferred()
            self._waiting[xid] = d
            for target in self.targets:
                self.sock.send(packet, target)
                self.sent += 1
            timer = reactor.callLater(timeout, _timeOut, d)
            try:
                reply, relays = await d
            except NoReply:
                self._waiting.pop(xid, None)
                continue
            if timer.active():
                timer.cancel()
            return Exchange(packet, reply, relays)
        raise NoReply(f"{self.name}: no answer to message type {msgType} xid {xid:#x}")


def _timeOut(d: Deferred[Any]) -> None:
    if not d.called:
        d.errback(NoReply())


@dataclass
class Held:
    """
    One simulated client IA and the lease it holds now.

    @ivar at: when the last Reply granting it arrived (wall clock).
    @ivar server: the name of the server that sent it.
    @ivar changes: renewals that returned other leases than those held.
    @ivar lapses: times its valid lifetime ran out before a renewal.
    """

    n: int
    pd: bool
    serverId: bytes
    leases: list[Lease]
    at: float
    server: str
    renewals: int = 0
    changes: list[str] = field(default_factory=list)
    lapses: int = 0

    @property
    def duid(self) -> bytes:
        return clientDuid(self.n)

    @property
    def iaid(self) -> int:
        return self.n

    @property
    def keys(self) -> list[LeaseKey]:
        return sorted((x.address, x.prefixLength) for x in self.leases)

    @property
    def valid(self) -> int:
        return min(x.valid for x in self.leases)

    def expiresAt(self) -> float:
        return self.at + self.valid

    def grant(self) -> Grant:
        return Grant(self.duid, self.iaid, self.pd, self.serverId, list(self.leases))


def _serverName(relay: Relay, reply: wire.Parsed, names: dict[bytes, str]) -> str:
    serverId = reply.get(wire.OPT_SERVERID) or b""
    return names.get(serverId, serverId.hex())


async def acquire(
    relay: Relay,
    n: int,
    pd: bool,
    names: dict[bytes, str],
    timeout: float = 1.0,
    attempts: int = 3,
) -> Held | None:
    """
    Solicit for client C{n} (an address, or a prefix if C{pd}); if the
    Advertise offers something, Request it from its sender and return what
    the Reply granted; C{None} if nothing was offered.
    """
    clientId = wire.option(wire.OPT_CLIENTID, clientDuid(n))
    ia = wire.iaPD(n) if pd else wire.iaNA(n)
    peer = relay.newPeerAddress()
    advertise = await relay.exchange(wire.SOLICIT, [clientId, ia], peer, timeout, attempts)
    if advertise.reply.msgType != wire.ADVERTISE:
        raise AssertionError(f"client {n}: expected ADVERTISE, got {advertise.reply.msgType}")
    offered = leasesOf(advertise.reply)
    if not offered:
        return None
    serverId = advertise.reply.get(wire.OPT_SERVERID)
    assert serverId is not None
    if pd:
        ia = wire.iaPD(n, [(x.address, x.prefixLength) for x in offered])
    else:
        ia = wire.iaNA(n, [x.address for x in offered])
    options = [clientId, wire.option(wire.OPT_SERVERID, serverId), ia]
    exchange = await relay.exchange(wire.REQUEST, options, peer, timeout, attempts)
    reply = exchange.reply
    leases = leasesOf(reply)
    if reply.msgType != wire.REPLY or not leases:
        raise AssertionError(f"client {n}: Request not granted: {reply}")
    replier = reply.get(wire.OPT_SERVERID)
    assert replier is not None
    return Held(n, pd, replier, leases, time.time(), _serverName(relay, reply, names))


async def renew(
    relay: Relay,
    held: Held,
    names: dict[bytes, str],
    rebind: bool = False,
    timeout: float = 1.0,
    attempts: int = 3,
) -> list[Lease]:
    """
    Renew (naming the server that last answered) or Rebind C{held}'s
    leases; update C{held} from the Reply and return what it granted.  A
    Reply granting other leases is recorded in C{held.changes}.

    @raise NoReply: nobody answered.
    """
    if held.pd:
        ia = wire.iaPD(held.iaid, [(x.address, x.prefixLength) for x in held.leases])
    else:
        ia = wire.iaNA(held.iaid, [x.address for x in held.leases])
    options = [wire.option(wire.OPT_CLIENTID, held.duid), ia]
    if not rebind:
        options.insert(1, wire.option(wire.OPT_SERVERID, held.serverId))
    msgType = wire.REBIND if rebind else wire.RENEW
    sent = time.time()
    exchange = await relay.exchange(msgType, options, relay.newPeerAddress(), timeout, attempts)
    reply = exchange.reply
    if reply.msgType != wire.REPLY:
        raise AssertionError(f"client {held.n}: expected REPLY, got {reply.msgType}")
    leases = leasesOf(reply)
    keys = sorted((x.address, x.prefixLength) for x in leases)
    if keys != held.keys:
        held.changes.append(
            f"{'Rebind' if rebind else 'Renew'} of {held.keys} answered by"
            f" {_serverName(relay, reply, names)} with {keys}"
        )
    if sent > held.expiresAt():
        held.lapses += 1
    if leases:
        replier = reply.get(wire.OPT_SERVERID)
        assert replier is not None
        held.serverId = replier
        held.server = _serverName(relay, reply, names)
        held.leases = leases
        held.at = time.time()
        held.renewals += 1
    return leases


class Renewer:
    """
    Keeps a set of clients' leases alive the way clients do: renews each one
    once half of its valid lifetime has passed (through C{relay}), until
    stopped; unanswered attempts are counted, not fatal (both servers are
    unresponsive during conflict resolution).
    """

    def __init__(self, relay: Relay, clients: dict[int, Held], names: dict[bytes, str]) -> None:
        self.relay = relay
        self.clients = clients
        self.names = names
        self.running = False
        self.unanswered = 0
        self.renewed = 0
        self._done: Deferred[None] | None = None

    def start(self) -> None:
        self.running = True
        self._done = Deferred.fromCoroutine(self._loop())

    async def _loop(self) -> None:
        while self.running:
            now = time.time()
            for held in list(self.clients.values()):
                if not self.running:
                    break
                if now < held.at + held.valid / 2:
                    continue
                try:
                    await renew(self.relay, held, self.names, timeout=0.5, attempts=2)
                    self.renewed += 1
                except NoReply:
                    self.unanswered += 1
            await sleep(0.3)

    async def stop(self) -> None:
        self.running = False
        if self._done is not None:
            await self._done


# --- invariants ----------------------------------------------------------------------------


def doubleActive(dbs: Iterable[tuple[str, ReplicaDB]]) -> list[str]:
    """
    Invariant 1 over databases: every address or prefix ACTIVE for two
    different clients (DUID, IAID), within one database or across them.
    """
    holders: dict[LeaseKey, dict[tuple[bytes, int], list[str]]] = {}
    for name, db in dbs:
        for x in db.leases():
            if x.state == "active":
                key = (x.address, x.prefix_length)
                holders.setdefault(key, {}).setdefault((x.duid, x.iaid), []).append(name)
    return [
        f"{k[0]}/{k[1]}: " + "; ".join(f"{d.hex()}/{i} on {w}" for (d, i), w in h.items())
        for k, h in sorted(holders.items())
        if len(h) > 1
    ]


def overlappingReplies(journal: Journal) -> list[str]:
    """
    Invariant 1 over Replies: an address or prefix granted to two different
    clients with overlapping lifetimes (from the time each Reply arrived).
    """
    grants: dict[LeaseKey, list[tuple[float, float, bytes, int, str]]] = {}
    for r in journal.replies:
        if r.duid is None:
            continue
        for iaid, _, leases in r.ias:
            for x in leases:
                grants.setdefault((x.address, x.prefixLength), []).append(
                    (r.time, r.time + x.valid, r.duid, iaid, r.server)
                )
    out = []
    for key, items in sorted(grants.items()):
        items.sort()
        for i, (_s1, e1, d1, i1, w1) in enumerate(items):
            for s2, _e2, d2, i2, w2 in items[i + 1 :]:
                if (d1, i1) != (d2, i2) and s2 < e1:
                    out.append(
                        f"{key[0]}/{key[1]}: {d1.hex()}/{i1} from {w1} until {e1:.1f},"
                        f" {d2.hex()}/{i2} from {w2} at {s2:.1f}"
                    )
    return out


_TRANSITION = re.compile(r"Failover (\S+): ([A-Za-z-]+) -> ([A-Za-z-]+)")
_STARTUP = re.compile(r"Failover (\S+): STARTUP, previous state ([a-z-]+)")
_RESOLUTION = re.compile(r"Failover (\S+): conflict resolution interrupted")


def loggedStates(server: FailoverServer, relationship: str) -> list[str]:
    """
    Every state C{relationship} entered on C{server}, in order, across its
    starts, from the machine's log lines (C{startup} for each start).
    """
    out: list[str] = []
    for line in server.log().splitlines():
        m = _STARTUP.search(line)
        if m is not None and m.group(1) == relationship:
            out.append("startup")
            continue
        m = _TRANSITION.search(line)
        if m is not None and m.group(1) == relationship:
            out.append(m.group(3).lower())
            continue
        m = _RESOLUTION.search(line)
        if m is not None and m.group(1) == relationship:
            out.append("resolution-interrupted")
    return out
