"""
Tests for the integration harness itself (L{tests.integration.netns}): the
namespaces, the veth link, sockets opened inside namespaces, and a real
dhclient run against a tiny placeholder responder written here (so that the
harness is known to work independently of the server under test).
"""

from __future__ import annotations

import os
import struct
from ipaddress import IPv6Address
from typing import Any

from twisted.trial.unittest import TestCase

from tests.integration import wire
from tests.integration.clients import DHCLIENT, DHCPCD, DHClient, Dhcpcd, envLeases
from tests.integration.netns import (
    DatagramSocket,
    Namespace,
    skipReason,
    tempDir,
    veth,
    waitFor,
)


class PlaceholderResponder:
    """
    Just enough of a DHCPv6 server for one IA_NA client: always the same
    address, lifetimes from the constructor.  Not a server: a fixture.
    """

    duid = wire.duidLL(0xFFFF)

    def __init__(self, address: IPv6Address, t1: int = 2, t2: int = 3) -> None:
        self.address = address
        self.t1, self.t2 = t1, t2
        self.received: list[wire.Parsed] = []
        self.sock: DatagramSocket | None = None

    def __call__(self, data: bytes, addr: tuple[Any, ...]) -> None:
        msg = wire.parse(data)
        self.received.append(msg)
        reply = {wire.SOLICIT: wire.ADVERTISE}.get(msg.msgType, wire.REPLY)
        clientId = msg.get(wire.OPT_CLIENTID) or b""
        options = [
            wire.option(wire.OPT_SERVERID, self.duid),
            wire.option(wire.OPT_CLIENTID, clientId),
        ]
        for data_ in msg.all(wire.OPT_IA_NA):
            iaid = struct.unpack_from("!I", data_)[0]
            addr_ = wire.option(wire.OPT_IAADDR, self.address.packed + struct.pack("!II", 6, 10))
            options.append(
                wire.option(wire.OPT_IA_NA, struct.pack("!III", iaid, self.t1, self.t2) + addr_)
            )
        out = bytes([reply]) + msg.xid.to_bytes(3, "big") + b"".join(options)
        assert self.sock is not None
        self.sock.send(out, addr)


class HarnessTests(TestCase):
    """Namespaces, veth and sockets in namespaces."""

    timeout = 60

    def setUp(self) -> None:
        reason = skipReason()
        if reason:
            raise self.skipTest(reason)

    async def test_linkAndMulticast(self) -> None:
        """
        Two namespaces joined by veth get usable link-local addresses, and a
        datagram sent to ff02::1:2 from one reaches a socket in the other
        that joined the group, with the sender's link-local source address.
        """
        a = Namespace.create(self, "a")
        b = Namespace.create(self, "b")
        llA, llB = await veth(a, "va", b, "vb")
        self.assertTrue(llA.startswith("fe80:"), llA)
        got: list[tuple[bytes, tuple[Any, ...]]] = []
        DatagramSocket.open(self, lambda d, addr: got.append((d, addr)), a, port=547, joinOn="va")
        sender = DatagramSocket.open(self, lambda d, addr: None, b, port=546)
        sender.send(b"hello", ("ff02::1:2", 547, 0, b.ifindex("vb")))
        await waitFor(lambda: got, 5, "the multicast datagram")
        data, addr = got[0]
        self.assertEqual(data, b"hello")
        self.assertEqual(addr[0].split("%")[0], llB)
        self.assertEqual(addr[1], 546)


class PlaceholderClientTests(TestCase):
    """A real dhclient against the placeholder responder."""

    timeout = 60

    def setUp(self) -> None:
        reason = skipReason(DHCLIENT)
        if reason:
            raise self.skipTest(reason)

    async def test_dhclientBindsAndReleases(self) -> None:
        """
        dhclient -6 in one namespace gets the placeholder's address (hook
        called with BOUND6 and new_ip6_address), and C{dhclient -r} sends a
        Release for it.
        """
        directory = tempDir(self)
        server = Namespace.create(self, "srv")
        client = Namespace.create(self, "cli")
        await veth(server, "s0", client, "c0")
        responder = PlaceholderResponder(IPv6Address("fd6a:5e1f:9::100"))
        responder.sock = DatagramSocket.open(self, responder, server, port=547, joinOn="s0")
        dhclient = DHClient(client, "c0", directory / "dhclient")
        dhclient.start(self)
        _, event = await dhclient.waitEvent({"BOUND6"}, 20)
        self.assertEqual(event.get("new_ip6_address"), "fd6a:5e1f:9::100")
        types = [m.msgType for m in responder.received]
        self.assertEqual(types[:2], [wire.SOLICIT, wire.REQUEST])
        await dhclient.waitEvent({"RENEW6"}, 15)
        self.assertIn(wire.RENEW, [m.msgType for m in responder.received])
        await dhclient.release()
        await waitFor(
            lambda: wire.RELEASE in [m.msgType for m in responder.received],
            10,
            "a Release",
        )
        self.assertFalse(dhclient.process is not None and dhclient.process.running())


class PlaceholderDhcpcdTests(TestCase):
    """A real dhcpcd against the placeholder responder."""

    timeout = 60

    def setUp(self) -> None:
        reason = skipReason(DHCPCD)
        if reason:
            raise self.skipTest(reason)

    async def test_dhcpcdBindsAndReleases(self) -> None:
        """
        dhcpcd -6 with its own config file gets the placeholder's address
        (hook called with BOUND6), and C{dhcpcd -k} sends a Release.
        """
        directory = tempDir(self)
        server = Namespace.create(self, "srv")
        client = Namespace.create(self, "cli")
        iface = f"d6c{os.getpid() % 100000}"
        await veth(server, "s0", client, iface)
        responder = PlaceholderResponder(IPv6Address("fd6a:5e1f:9::101"))
        responder.sock = DatagramSocket.open(self, responder, server, port=547, joinOn="s0")
        dhcpcd = Dhcpcd(client, iface, directory / "dhcpcd", wire.duidLL(77))
        dhcpcd.start(self)
        _, event = await dhcpcd.waitEvent({"BOUND6"}, 20)
        self.assertIn("fd6a:5e1f:9::101", str(envLeases(event)))
        await dhcpcd.waitEvent({"RENEW6"}, 15)
        self.assertIn(wire.RENEW, [m.msgType for m in responder.received])
        await dhcpcd.control("-k")
        await waitFor(
            lambda: wire.RELEASE in [m.msgType for m in responder.received],
            10,
            "a Release",
        )
