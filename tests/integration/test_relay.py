"""
Relayed clients (RFC 8415 sections 9 and 19) against a real dhcp6ha process.

Topology: three namespaces in a row, C{cli} (C{c0}) -- C{rel} (C{r0} |
C{r1}) -- C{srv} (C{s0}).  The server is attached to the C{lan} link
(C{s0}, L{LAN}) and serves a second subnet, C{far} (L{FAR}), that it can
only reach through a relay: the relay's link-address inside L{FAR} selects
it.  The relay itself is a few lines of Python in this module, running in
the test process on a socket that lives in the C{rel} namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.integration import wire
from tests.integration.clients import DHCLIENT, DHClient, dhclientBytes
from tests.integration.netns import (
    Capture,
    CleanupRegistry,
    DatagramSocket,
    Namespace,
    skipReason,
    tempDir,
    veth,
    waitFor,
)
from tests.integration.relayclient import Hop, NoReply, RelayedClients, leasesOf
from tests.integration.serverproc import (
    FAR,
    FAR_PD,
    LAN,
    LAN_PD,
    LeaseDB,
    ServerProcess,
    Subnet,
    poolOf,
    serverSkipReason,
    writeConfig,
)

SERVER = LAN.network_address + 1
RELAY_UPSTREAM = LAN.network_address + 2
RELAY_LINK = FAR.network_address + 1


class RelayAgent:
    """
    A minimal relay agent (RFC 8415 section 19.1): client messages arriving
    on C{clientIface} (multicast to ff02::1:2) are wrapped in RELAY-FORW with
    our link-address and Interface-ID and sent to the server; RELAY-REPL is
    unwrapped and the inner message sent to the peer-address, port 546, on
    the client link.  Everything is recorded for the test to inspect.
    """

    CLIENT_TYPES = frozenset(
        {wire.SOLICIT, wire.REQUEST, 4, wire.RENEW, wire.REBIND, wire.RELEASE, 9, 11}
    )

    def __init__(
        self,
        testCase: CleanupRegistry,
        ns: Namespace,
        clientIface: str,
        linkAddress: IPv6Address,
        server: IPv6Address,
        interfaceId: bytes,
    ) -> None:
        self.linkAddress = linkAddress
        self.server = server
        self.interfaceId = interfaceId
        self.ifindex = ns.ifindex(clientIface)
        self.forwarded: list[wire.Parsed] = []
        self.replies: list[wire.Parsed] = []
        self.problems: list[str] = []
        self.sock = DatagramSocket.open(testCase, self.received, ns, port=547, joinOn=clientIface)

    def received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = wire.parse(data)
        except ValueError as e:
            self.problems.append(f"malformed from {addr}: {e}")
            return
        if msg.msgType == wire.RELAY_REPL:
            self.replies.append(msg)
            inner = msg.get(wire.OPT_RELAY_MSG)
            if inner is None or msg.peerAddress is None:
                self.problems.append("RELAY-REPL without Relay Message")
                return
            self.sock.send(inner, (str(msg.peerAddress), 546, 0, self.ifindex))
        elif msg.msgType in self.CLIENT_TYPES and addr[1] == 546:
            self.forwarded.append(msg)
            peer = IPv6Address(addr[0].split("%")[0])
            packet = wire.relayForward(data, self.linkAddress, peer, self.interfaceId)
            self.sock.send(packet, (str(self.server), 547))
        else:
            self.problems.append(f"unexpected message type {msg.msgType} from {addr}")


@dataclass
class Chain:
    """The three namespaces, the server, its database."""

    directory: Path
    client: Namespace
    relay: Namespace
    serverNs: Namespace
    server: ServerProcess
    db: LeaseDB
    capture: Capture

    def details(self) -> str:
        return "\n".join([self.server.logTail(), self.db.describe(), self.capture.text()])


async def startChain(testCase: CleanupRegistry, directory: Path) -> Chain:
    client = Namespace.create(testCase, "cli")
    relay = Namespace.create(testCase, "rel")
    serverNs = Namespace.create(testCase, "srv")
    await veth(relay, "r0", client, "c0")
    await veth(relay, "r1", serverNs, "s0", macB=None)
    serverNs.addAddress("s0", f"{SERVER}/64")
    relay.addAddress("r1", f"{RELAY_UPSTREAM}/64")
    relay.addAddress("r0", f"{RELAY_LINK}/64")
    capture = Capture(testCase, relay, "r1", directory / "relay-upstream.pcap")
    await capture.started()
    subnets = [
        Subnet("lan", LAN, interface="s0", pools=[poolOf(LAN, 0x1000, 0x1FFF)],
               pdPools=[(LAN_PD, 56)]),
        Subnet("far", FAR, pools=[poolOf(FAR, 0x1000, 0x1FFF)], pdPools=[(FAR_PD, 56)]),
    ]  # fmt: skip
    database = directory / "leases.sqlite"
    config = writeConfig(directory / "server.ini", database, subnets, interfaces=["s0"])
    server = ServerProcess(testCase, config, directory, ns=serverNs)
    server.start()
    await server.ready()
    return Chain(directory, client, relay, serverNs, server, LeaseDB(database), capture)


class RelayTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        reason = skipReason() or serverSkipReason()
        if reason:
            raise self.skipTest(reason)


class RelayForwardTests(RelayTestCase):
    """A Python client speaking RELAY-FORW straight to the server's unicast address."""

    async def test_linkAddressSelectsSubnet(self) -> None:
        """
        A Solicit/Request relayed with a link-address in L{FAR} gets an
        address from FAR's pool; the RELAY-REPL echoes the Interface-ID, the
        peer-address, the link-address and the hop count; the lease is in
        the database for the client's DUID and IAID.
        """
        chain = await startChain(self, tempDir(self))
        clients = RelayedClients(
            self,
            (str(SERVER), 547),
            [Hop(RELAY_LINK, b"far-port-7")],
            ns=chain.relay,
            details=chain.details,
            bindAddress=str(RELAY_UPSTREAM),
            bindPort=547,
        )
        duid = wire.duidLL(0xA1)
        peer = IPv6Address("fe80::a1")
        advertise, reply = await clients.solicitRequest(duid, 0xA1, peer=peer)
        for exchange in (advertise, reply):
            (relayReply,) = exchange.relayReplies
            self.assertEqual(relayReply.msgType, wire.RELAY_REPL)
            self.assertEqual(relayReply.get(wire.OPT_INTERFACE_ID), b"far-port-7")
            self.assertEqual(relayReply.peerAddress, peer)
            self.assertEqual(relayReply.linkAddress, RELAY_LINK)
            self.assertEqual(relayReply.hopCount, 0)
        self.assertEqual(reply.reply.msgType, wire.REPLY)
        self.assertEqual(reply.reply.get(wire.OPT_CLIENTID), duid)
        (lease,) = leasesOf(reply.reply)
        self.assertIn(lease.address, FAR, chain.details())
        stored = chain.db.get(lease.address)
        assert stored is not None, chain.details()
        self.assertEqual((stored.duid, stored.iaid, stored.state), (duid, 0xA1, "active"))

    async def test_prefixThroughRelay(self) -> None:
        """An IA_PD relayed from the far link gets a /56 of FAR's prefix pool."""
        chain = await startChain(self, tempDir(self))
        clients = RelayedClients(
            self,
            (str(SERVER), 547),
            [Hop(RELAY_LINK, b"far")],
            ns=chain.relay,
            details=chain.details,
            bindAddress=str(RELAY_UPSTREAM),
            bindPort=547,
        )
        duid = wire.duidLL(0xA2)
        _, reply = await clients.solicitRequest(duid, 7, pd=True)
        (lease,) = leasesOf(reply.reply)
        prefix = IPv6Network((lease.address, lease.prefixLength))
        self.assertEqual(prefix.prefixlen, 56)
        self.assertTrue(prefix.subnet_of(FAR_PD), prefix)
        stored = chain.db.get(lease.address, 56)
        assert stored is not None, chain.details()
        self.assertEqual((stored.lease_type, stored.duid, stored.iaid), ("pd", duid, 7))

    async def test_nestedRelays(self) -> None:
        """
        Through two relays, the link-address of the relay closest to the
        client (inner, in L{FAR}) selects the subnet, not the outer one's
        (in L{LAN}); each level's Interface-ID comes back at its level.
        """
        chain = await startChain(self, tempDir(self))
        clients = RelayedClients(
            self,
            (str(SERVER), 547),
            [Hop(RELAY_LINK, b"inner"), Hop(RELAY_UPSTREAM, b"outer")],
            ns=chain.relay,
            details=chain.details,
            bindAddress=str(RELAY_UPSTREAM),
            bindPort=547,
        )
        _, reply = await clients.solicitRequest(wire.duidLL(0xA3), 1)
        outer, inner = reply.relayReplies
        self.assertEqual(
            (outer.get(wire.OPT_INTERFACE_ID), outer.hopCount, outer.linkAddress),
            (b"outer", 1, RELAY_UPSTREAM),
        )
        self.assertEqual(
            (inner.get(wire.OPT_INTERFACE_ID), inner.hopCount, inner.linkAddress),
            (b"inner", 0, RELAY_LINK),
        )
        (lease,) = leasesOf(reply.reply)
        self.assertIn(lease.address, FAR, chain.details())

    async def test_unknownLinkGetsNoAddress(self) -> None:
        """
        A relay whose link-address is in no configured subnet gets no
        address: the Advertise carries NoAddrsAvail (status 2), at the top
        level or in the IA (RFC 8415 section 18.3.1), or the server stays
        silent; it never hands out an address from another subnet.
        """
        chain = await startChain(self, tempDir(self))
        clients = RelayedClients(
            self,
            (str(SERVER), 547),
            [Hop(IPv6Address("fd6a:5e1f:77::1"), b"x")],
            ns=chain.relay,
            details=chain.details,
            bindAddress=str(RELAY_UPSTREAM),
            bindPort=547,
        )
        try:
            exchange = await clients.exchange(
                wire.SOLICIT,
                [wire.option(wire.OPT_CLIENTID, wire.duidLL(0xA4)), wire.iaNA(1)],
                IPv6Address("fe80::a4"),
                timeout=1.0,
                attempts=2,
            )
        except NoReply:
            return
        self.assertEqual(leasesOf(exchange.reply), [], chain.details())


class RelayedDHClientTests(RelayTestCase):
    """A real dhclient behind the Python relay agent."""

    def setUp(self) -> None:
        super().setUp()
        reason = skipReason(DHCLIENT)
        if reason:
            raise self.skipTest(reason)

    async def test_dhclientThroughRelay(self) -> None:
        """
        dhclient on the far link gets an address of L{FAR} (the relay's
        link-address selects it), every RELAY-REPL echoes the relay's
        Interface-ID, and the Renew and Release go through the relay too.
        """
        chain = await startChain(self, tempDir(self))
        relay = RelayAgent(self, chain.relay, "r0", RELAY_LINK, SERVER, b"r0-ifid")
        client = DHClient(chain.client, "c0", chain.directory / "dhclient")
        client.start(self, ("-N",))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        address = IPv6Address(bound["new_ip6_address"])
        self.assertIn(address, FAR, chain.details())
        stored = chain.db.get(address)
        assert stored is not None, chain.details()
        self.assertEqual(stored.state, "active")
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        self.assertEqual(stored.duid, duid)

        _, renewed = await client.waitEvent({"RENEW6"}, 15, after=index + 1)
        self.assertEqual(IPv6Address(renewed["new_ip6_address"]), address)
        await client.release()
        await waitFor(
            lambda: (lease := chain.db.get(address)) is not None and lease.state == "released",
            10,
            "the lease RELEASED",
            details=chain.details,
        )
        types = [m.msgType for m in relay.forwarded]
        for t in (wire.SOLICIT, wire.REQUEST, wire.RENEW, wire.RELEASE):
            self.assertIn(t, types)
        self.assertGreaterEqual(len(relay.replies), 4)
        for reply in relay.replies:
            self.assertEqual(reply.get(wire.OPT_INTERFACE_ID), b"r0-ifid")
            self.assertEqual(reply.linkAddress, RELAY_LINK)
        self.assertEqual(relay.problems, [])
