"""
Real Debian DHCPv6 clients (ISC dhclient, dhcpcd) against a real dhcp6ha
process, in network namespaces joined by a veth pair.

Each test binds, waits for a renewal (T1 is 2 seconds) and releases, and
checks at each step that the server's SQLite database, read from this
process, agrees with what the client was told: the lease is durable before
the client hears of it, the renewal moves the client last transaction time,
and the release is recorded.
"""

from __future__ import annotations

import os
from ipaddress import IPv6Address, IPv6Network

from twisted.trial.unittest import TestCase

from tests.integration.clients import DHCLIENT, DHCPCD, DHClient, Dhcpcd, dhclientBytes
from tests.integration.netns import skipReason, tempDir, waitFor
from tests.integration.serverproc import (
    LAN,
    LAN_DNS,
    LAN_DOMAIN,
    LAN_PD,
    DBLease,
    Lan,
    serverSkipReason,
    startLan,
)
from tests.integration.wire import duidLL


class ClientTestCase(TestCase):
    """Set-up and checks shared by the client tests (no tests of its own)."""

    binary = DHCLIENT
    timeout = 90

    def setUp(self) -> None:
        reason = skipReason(self.binary) or serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    def assertBound(
        self,
        lan: Lan,
        address: IPv6Address,
        prefixLength: int,
        leaseType: str,
        duid: bytes,
        iaid: int,
    ) -> DBLease:
        """
        The database holds this lease ACTIVE for this client: checked at
        once, with no waiting, because the Reply must follow the commit.
        """
        lease = lan.db.get(address, prefixLength)
        self.assertIsNotNone(
            lease, f"{address}/{prefixLength} not in the database\n{lan.details()}"
        )
        assert lease is not None
        self.assertEqual(
            (lease.lease_type, lease.state, lease.duid.hex(), lease.iaid),
            (leaseType, "active", duid.hex(), iaid),
            lan.details(),
        )
        return lease


class DHClientTests(ClientTestCase):
    """ISC dhclient 4.4 (C{dhclient -6}) against the server."""

    async def test_addressBindRenewRelease(self) -> None:
        """
        C{dhclient -6 -N} gets an address from the pool (ACTIVE in the
        database for its DUID and IAID), renews it (the CLT moves on and
        the lease is the same), and C{dhclient -6 -r} releases it (RELEASED
        in the database).
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-N",))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        address = IPv6Address(bound["new_ip6_address"])
        self.assertIn(address, LAN, lan.details())
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        iaid = int.from_bytes(dhclientBytes(bound["new_iaid"]), "big")
        self.assertEqual(bound.get("new_renew"), "2")
        self.assertEqual(bound.get("new_rebind"), "3")
        self.assertEqual(bound.get("new_preferred_life"), "6")
        self.assertEqual(bound.get("new_max_life"), "10")
        self.assertEqual(bound.get("new_dhcp6_name_servers"), str(LAN_DNS))
        self.assertEqual(bound.get("new_dhcp6_domain_search", "").rstrip("."), LAN_DOMAIN)
        first = self.assertBound(lan, address, 128, "na", duid, iaid)

        _, renewed = await client.waitEvent({"RENEW6"}, 15, after=index + 1)
        self.assertEqual(IPv6Address(renewed["new_ip6_address"]), address)
        second = self.assertBound(lan, address, 128, "na", duid, iaid)
        self.assertGreater(second.cltt, first.cltt, lan.details())
        self.assertGreater(second.expires, first.expires, lan.details())

        output = await client.release()
        self.assertIn("Forming Release", output)
        _, reply = await waitFor(
            lambda: lan.capture.answered("release"),
            5,
            "the Reply to the Release",
            details=lan.details,
        )
        self.assertIn("status-code Success", reply)
        lease = lan.db.get(address, 128)
        assert lease is not None
        self.assertEqual(lease.state, "released", lan.details())

    async def test_prefixBindRenewRelease(self) -> None:
        """
        C{dhclient -6 -P} gets a /56 from the prefix pool, renews it and
        releases it, the database agreeing at each step.
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-P",))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        prefix = IPv6Network(bound["new_ip6_prefix"])
        self.assertEqual(prefix.prefixlen, 56)
        self.assertTrue(prefix.subnet_of(LAN_PD), prefix)
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        iaid = int.from_bytes(dhclientBytes(bound["new_iaid"]), "big")
        first = self.assertBound(lan, prefix.network_address, 56, "pd", duid, iaid)

        _, renewed = await client.waitEvent({"RENEW6"}, 15, after=index + 1)
        self.assertEqual(IPv6Network(renewed["new_ip6_prefix"]), prefix)
        second = self.assertBound(lan, prefix.network_address, 56, "pd", duid, iaid)
        self.assertGreater(second.cltt, first.cltt, lan.details())

        await client.release()
        _, reply = await waitFor(
            lambda: lan.capture.answered("release"),
            5,
            "the Reply to the Release",
            details=lan.details,
        )
        self.assertIn("status-code Success", reply)
        lease = lan.db.get(prefix.network_address, 56)
        assert lease is not None
        self.assertEqual(lease.state, "released", lan.details())

    async def test_addressAndPrefixTogether(self) -> None:
        """
        C{dhclient -6 -N -P} asks for an IA_NA and an IA_PD in one
        exchange and gets both, each ACTIVE in the database for the client.
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-N", "-P"))
        # dhclient runs its script once per lease: BOUND6 for each.
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        _, bound2 = await client.waitEvent({"BOUND6"}, 5, after=index + 1)
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        iaid = int.from_bytes(dhclientBytes(bound["new_iaid"]), "big")
        both = {**bound, **bound2}
        address = IPv6Address(both["new_ip6_address"])
        prefix = IPv6Network(both["new_ip6_prefix"])
        self.assertIn(address, LAN)
        self.assertTrue(prefix.subnet_of(LAN_PD), prefix)
        self.assertBound(lan, address, 128, "na", duid, iaid)
        self.assertBound(lan, prefix.network_address, 56, "pd", duid, iaid)

    async def test_stateless(self) -> None:
        """
        C{dhclient -6 -S} (Information-request) gets the DNS server and
        search domain, and the server records no binding.
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-S",))
        # dhclient 4.4 reports a stateless Reply with reason RENEW6.
        _, event = await client.waitEvent({"INFORM6", "RENEW6"}, 30)
        self.assertEqual(event.get("new_dhcp6_name_servers"), str(LAN_DNS), lan.details())
        self.assertEqual(event.get("new_dhcp6_domain_search", "").rstrip("."), LAN_DOMAIN)
        self.assertEqual(lan.db.leases(), [])

    async def test_restartConfirms(self) -> None:
        """
        A dhclient restarted with its lease file sends Confirm for its
        address; the server answers Success (the address is on the link)
        and the client keeps the address and renews it.
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-N",))
        _, bound = await client.waitEvent({"BOUND6"}, 30)
        address = IPv6Address(bound["new_ip6_address"])
        assert client.process is not None
        client.process.stop()
        index = len(client.events())
        client.start(self, ("-N",))
        _, reply = await waitFor(
            lambda: lan.capture.answered("confirm"), 15, "a Reply to a Confirm",
            details=lan.details,
        )  # fmt: skip
        self.assertIn("status-code Success", reply)
        _, rebooted = await client.waitEvent({"REBOOT6", "BOUND6", "RENEW6"}, 15, after=index)
        self.assertEqual(IPv6Address(rebooted["new_ip6_address"]), address, lan.details())

    async def test_renewAfterServerKill(self) -> None:
        """
        The server is killed with SIGKILL right after dhclient is bound and
        restarted on the same database: dhclient's Renew (naming the server
        by its DUID, kept in the database) is answered with the same address.
        """
        lan = await startLan(self, tempDir(self))
        client = DHClient(lan.clientNs, lan.clientIface, lan.directory / "dhclient")
        client.start(self, ("-N",))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        address = IPv6Address(bound["new_ip6_address"])
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        iaid = int.from_bytes(dhclientBytes(bound["new_iaid"]), "big")
        lan.server.kill9()
        first = self.assertBound(lan, address, 128, "na", duid, iaid)
        lan.server.start()
        await lan.server.ready()
        _, renewed = await client.waitEvent({"RENEW6", "REBIND6"}, 15, after=index + 1)
        self.assertEqual(renewed["reason"], "RENEW6", lan.details())
        self.assertEqual(IPv6Address(renewed["new_ip6_address"]), address)
        self.assertEqual(renewed["new_dhcp6_server_id"], bound["new_dhcp6_server_id"])
        second = self.assertBound(lan, address, 128, "na", duid, iaid)
        self.assertGreater(second.cltt, first.cltt)


class DhcpcdTests(ClientTestCase):
    """dhcpcd 9 (C{dhcpcd -6}, its own config file) against the server."""

    binary = DHCPCD

    async def test_addressAndPrefixBindRenewRelease(self) -> None:
        """
        dhcpcd asking for an IA_NA (IAID 1) and an IA_PD (IAID 2) in one
        exchange gets both; renews both; C{dhcpcd -k} releases both.
        """
        iface = f"d6c{os.getpid() % 100000}"
        lan = await startLan(self, tempDir(self), clientIface=iface)
        duid = duidLL(0x5E1F)
        client = Dhcpcd(lan.clientNs, iface, lan.directory / "dhcpcd", duid)
        client.start(self, iaNA=1, iaPD=2)
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        self.assertEqual(bound.get("new_dhcp6_client_id"), duid.hex())
        address = IPv6Address(bound["new_dhcp6_ia_na1_ia_addr1"])
        self.assertIn(address, LAN)
        prefix = IPv6Network(
            f"{bound['new_dhcp6_ia_pd1_prefix1']}/{bound['new_dhcp6_ia_pd1_prefix1_length']}"
        )
        self.assertTrue(prefix.subnet_of(LAN_PD), prefix)
        na = self.assertBound(lan, address, 128, "na", duid, 1)
        pd = self.assertBound(lan, prefix.network_address, 56, "pd", duid, 2)

        _, renewed = await client.waitEvent({"RENEW6"}, 15, after=index + 1)
        self.assertEqual(IPv6Address(renewed["new_dhcp6_ia_na1_ia_addr1"]), address)
        na2 = self.assertBound(lan, address, 128, "na", duid, 1)
        pd2 = self.assertBound(lan, prefix.network_address, 56, "pd", duid, 2)
        self.assertGreater(na2.cltt, na.cltt)
        self.assertGreater(pd2.cltt, pd.cltt)

        await client.control("-k")
        await client.waitEvent({"RELEASE6"}, 10)
        _, reply = await waitFor(
            lambda: lan.capture.answered("release"),
            5,
            "the Reply to the Release",
            details=lan.details,
        )
        self.assertIn("status-code Success", reply)

        def released() -> bool:
            a = lan.db.get(address, 128)
            p = lan.db.get(prefix.network_address, 56)
            return a is not None and p is not None and a.state == p.state == "released"

        # dhcpcd does not wait for the Reply to its Release: poll.
        await waitFor(released, 10, "both leases RELEASED", details=lan.details)
