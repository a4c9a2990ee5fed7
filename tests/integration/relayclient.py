# -*- test-case-name: tests.integration.test_relay -*-
"""
Simulated DHCPv6 clients behind a simulated relay agent: each client
message is wrapped in RELAY-FORW (RFC 8415 section 9.1) and sent over
unicast to the server; the server's RELAY-REPL is matched to the waiting
exchange by transaction id and unwrapped.

Used by the relay tests (one client at a time, nested relays) and by the
durability test (hundreds of clients at once).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

from twisted.internet.defer import Deferred

from tests.integration import wire
from tests.integration.netns import CleanupRegistry, DatagramSocket, Namespace


class NoReply(Exception):
    """The server did not answer within the retransmissions."""


@dataclass
class Hop:
    """One relay level: its link-address and Interface-ID (None: no option)."""

    linkAddress: IPv6Address
    interfaceId: bytes | None = None


@dataclass
class Exchange:
    """One request and its answer, as seen on the wire."""

    request: bytes
    reply: wire.Parsed
    relayReplies: list[wire.Parsed] = field(default_factory=list)  # outermost first


@dataclass
class Lease:
    """What a Reply granted to one IA."""

    address: IPv6Address
    prefixLength: int
    preferred: int
    valid: int


class RelayedClients:
    """
    A socket that speaks RELAY-FORW for simulated clients.

    @ivar sent: number of datagrams sent (retransmissions included).
    """

    def __init__(
        self,
        testCase: CleanupRegistry,
        server: tuple[str, int],
        hops: list[Hop],
        ns: Namespace | None = None,
        bindAddress: str = "::",
        bindPort: int = 0,
        details: Callable[[], str] | None = None,
    ) -> None:
        """
        @param hops: the relay chain, the relay closest to the client first.
        @param details: called for diagnostics (server log, ...) when an
            exchange gets no answer.
        """
        self.details = details
        self.server = server
        self.hops = hops
        self.sock = DatagramSocket.open(
            testCase, self._received, ns, address=bindAddress, port=bindPort
        )
        self._xids = itertools.count(1)
        self._waiting: dict[int, Deferred[tuple[wire.Parsed, list[wire.Parsed]]]] = {}
        self.sent = 0
        self.unmatched = 0
        self.peerAddresses = itertools.count(1)

    def newPeerAddress(self) -> IPv6Address:
        """A distinct link-local peer address for a new simulated client."""
        return IPv6Address("fe80::") + next(self.peerAddresses)

    def _received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        relays = []
        try:
            msg = wire.parse(data)
            while msg.msgType == wire.RELAY_REPL:
                relays.append(msg)
                inner = msg.get(wire.OPT_RELAY_MSG)
                if inner is None:
                    raise ValueError("RELAY-REPL without a Relay Message option")
                msg = wire.parse(inner)
        except ValueError:
            self.unmatched += 1
            return
        d = self._waiting.pop(msg.xid, None)
        if d is None:
            self.unmatched += 1
            return
        d.callback((msg, relays))

    def wrap(self, inner: bytes, peer: IPv6Address) -> bytes:
        data = inner
        for level, hop in enumerate(self.hops):
            data = wire.relayForward(
                data,
                hop.linkAddress,
                peer if level == 0 else self.hops[level - 1].linkAddress,
                hop.interfaceId,
                hopCount=level,
            )
        return data

    async def exchange(
        self,
        msgType: int,
        options: list[bytes],
        peer: IPv6Address,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> Exchange:
        """
        Send one client message (wrapped), retransmitting up to C{attempts}
        times (same transaction id) every C{timeout} seconds.

        @raise NoReply: no answer to any attempt.
        """
        from twisted.internet import reactor

        xid = next(self._xids) & 0xFFFFFF
        request = wire.message(msgType, xid, *options)
        packet = self.wrap(request, peer)
        for _ in range(attempts):
            d: Deferred[tuple[wire.Parsed, list[wire.Parsed]]] = Deferred()
            self._waiting[xid] = d
            self.sock.send(packet, self.server)
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
        extra = "\n" + self.details() if self.details is not None else ""
        raise NoReply(f"no answer to message type {msgType} xid {xid:#x}{extra}")

    async def solicitRequest(
        self,
        duid: bytes,
        iaid: int,
        pd: bool = False,
        peer: IPv6Address | None = None,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> tuple[Exchange, Exchange]:
        """
        Solicit, then Request what the Advertise offered (from the server that
        sent it); return both exchanges.
        """
        if peer is None:
            peer = self.newPeerAddress()
        clientId = wire.option(wire.OPT_CLIENTID, duid)
        ia = wire.iaPD(iaid) if pd else wire.iaNA(iaid)
        advertise = await self.exchange(wire.SOLICIT, [clientId, ia], peer, timeout, attempts)
        if advertise.reply.msgType != wire.ADVERTISE:
            raise AssertionError(f"expected ADVERTISE, got {advertise.reply.msgType}")
        serverId = advertise.reply.get(wire.OPT_SERVERID)
        if serverId is None:
            raise AssertionError("ADVERTISE without a Server Identifier")
        offered = leasesOf(advertise.reply)
        if pd:
            ia = wire.iaPD(iaid, [(x.address, x.prefixLength) for x in offered])
        else:
            ia = wire.iaNA(iaid, [x.address for x in offered])
        reply = await self.exchange(
            wire.REQUEST,
            [clientId, wire.option(wire.OPT_SERVERID, serverId), ia],
            peer,
            timeout,
            attempts,
        )
        return advertise, reply

    async def renew(
        self,
        duid: bytes,
        iaid: int,
        serverId: bytes,
        leases: list[Lease],
        pd: bool = False,
        peer: IPv6Address | None = None,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> Exchange:
        """Renew these leases of this IA with the server named C{serverId}."""
        if peer is None:
            peer = self.newPeerAddress()
        if pd:
            ia = wire.iaPD(iaid, [(x.address, x.prefixLength) for x in leases])
        else:
            ia = wire.iaNA(iaid, [x.address for x in leases])
        return await self.exchange(
            wire.RENEW,
            [wire.option(wire.OPT_CLIENTID, duid), wire.option(wire.OPT_SERVERID, serverId), ia],
            peer,
            timeout,
            attempts,
        )


def _timeOut(d: Deferred[Any]) -> None:
    if not d.called:
        d.errback(NoReply())


def leasesOf(reply: wire.Parsed) -> list[Lease]:
    """Every address or prefix granted (valid lifetime > 0, no error status)."""
    out = []
    for ia in reply.ias():
        if ia.status not in (None, 0):
            continue
        for address, length, preferred, valid, status in ia.leases:
            if valid > 0 and status in (None, 0):
                out.append(Lease(address, length, preferred, valid))
    return out
