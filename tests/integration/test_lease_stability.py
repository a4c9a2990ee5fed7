"""
Lease stability with real clients (RFC 7031 requirement 4, DESIGN.md
invariant 2): a client bound by the primary keeps its address and its
prefix when the primary dies, because the secondary renews them.

Topology (TESTING-NOTES.md): four namespaces, a bridge in one, the primary
(C{lan0}, L{LAN}::1), the secondary (C{lan0}, L{LAN}::2) and the client on
it; the partners talk TLS over the same link.  Short T1/T2 and lifetimes,
MCLT 30 s.  The client (ISC dhclient with C{-N -P}, dhcpcd, WIDE dhcp6c or
Dibbler's client, each with an IA_NA and an IA_PD) binds with the primary; once the binding is on the
secondary the primary is killed with SIGKILL; the secondary is in
COMMUNICATIONS-INTERRUPTED at once (the TCP connection closes) and must
answer the client's Renew, which still names the primary's Server
Identifier (RFC 8156 section 8: in COMMUNICATIONS-INTERRUPTED a server
renews any lease it knows of), with the same address and prefix.  What the
client does with that Reply is recorded from the capture: the next Renew
of dhclient, dhcpcd and dhcp6c names the secondary; Dibbler keeps naming
the primary, which the secondary answers all the same.  dhcp6c and Dibbler
renew each IA in a message of its own.

Needs root (namespaces), tcpdump, and the client's package
(isc-dhcp-client, dhcpcd-base, wide-dhcpv6-client, dibbler-client); each
test skips with the reason otherwise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from twisted.trial.unittest import TestCase

from tests.integration import wire
from tests.integration.clients import (
    DHCLIENT,
    DHCP6C,
    DHCPCD,
    DIBBLER,
    ClientBase,
    DHClient,
    Dhcpcd,
    Dibbler,
    WideDhcp6c,
    dhclientBytes,
)
from tests.integration.netns import CLIENT_MAC, Capture, skipReason, tempDir, waitFor
from tests.integration.pair import (
    COMMUNICATIONS_INTERRUPTED,
    Captured,
    LeaseKey,
    LinkedPair,
    pairOnSharedLink,
    pcapMessages,
)
from tests.integration.relayclient import leasesOf
from tests.integration.serverproc import serverSkipReason
from tests.integration.wire import duidLL

#: The client link: the primary at ::1, the secondary at ::2 (L{pairOnSharedLink}).
LAN = IPv6Network("fd6a:5e1f:d::/64")
LAN_PD = IPv6Network("fd6a:5e1f:d100::/48")
RELATIONSHIP = "lan"
MCLT = 30
T1, T2, PREFERRED, VALID = 4, 7, 12, 20


@dataclass
class Topology(LinkedPair):
    capture: Capture
    clientIface: str

    def details(self) -> str:
        return self.servers.details() + "\n" + self.capture.text(60)


@dataclass
class Seen:
    """One client message in the capture and the Reply to it, if any."""

    request: Captured
    reply: Captured | None

    def describe(self, names: dict[bytes, str]) -> str:
        kind = {wire.RENEW: "Renew", wire.REBIND: "Rebind", wire.SOLICIT: "Solicit",
                wire.REQUEST: "Request"}.get(self.request.message.msgType,
                                             str(self.request.message.msgType))  # fmt: skip
        named = self.request.serverId
        text = f"{kind} (Server ID {names.get(named, named.hex()) if named else 'none'})"
        if self.reply is None:
            return text + ": no Reply"
        granted = sorted(
            f"{x.address}/{x.prefixLength} (valid {x.valid}s)" for x in leasesOf(self.reply.message)
        )
        replier = self.reply.serverId
        return text + f": Reply from {names.get(replier or b'', '?')} granting {granted}"


def exchangesAfter(capture: Capture, after: float, types: set[int]) -> list[Seen]:
    """Client messages of C{types} sent after C{after} (wall clock), each with its Reply."""
    messages = pcapMessages(capture.path)
    out = []
    for i, m in enumerate(messages):
        if m.time < after or m.sourcePort != 546 or m.message.msgType not in types:
            continue
        reply = next(
            (
                r
                for r in messages[i + 1 :]
                if r.sourcePort == 547
                and r.message.msgType == wire.REPLY
                and r.message.xid == m.message.xid
            ),
            None,
        )
        out.append(Seen(m, reply))
    return out


def listedKeys(seen: Seen) -> set[LeaseKey]:
    """The addresses and prefixes the client's message lists in its IAs."""
    return {(lease[0], lease[1]) for ia in seen.request.message.ias() for lease in ia.leases}


def firstGranting(capture: Capture, key: LeaseKey, after: float) -> Seen | None:
    """The first Renew or Rebind sent after C{after} whose Reply grants C{key}."""
    for seen in exchangesAfter(capture, after, {wire.RENEW, wire.REBIND}):
        if key in grantedKeys(seen):
            return seen
    return None


def grantedKeys(seen: Seen) -> set[LeaseKey]:
    if seen.reply is None:
        return set()
    return {(x.address, x.prefixLength) for x in leasesOf(seen.reply.message)}


class LeaseStabilityTests(TestCase):
    timeout = 120
    binary = DHCLIENT

    def setUp(self) -> None:
        reason = skipReason(self.binary, "tcpdump") or serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def topology(self, clientIface: str) -> Topology:
        """The shared link, the pair on it (NORMAL), a capture on the client's side."""
        directory = tempDir(self)
        pair = await pairOnSharedLink(
            self, directory, [("cli", clientIface, CLIENT_MAC)], lan=LAN, lanPD=LAN_PD,
            preferred=PREFERRED, valid=VALID, t1=T1, t2=T2, relationship=RELATIONSHIP, mclt=MCLT,
        )  # fmt: skip
        cliNs, _ = pair.link["cli"]
        capture = Capture(self, cliNs, clientIface, directory / "client.pcap")
        await capture.started()
        await pair.servers.startNormal(RELATIONSHIP)
        return Topology(directory, pair.link, pair.servers, capture, clientIface)

    async def survive(
        self,
        topo: Topology,
        client: ClientBase,
        duid: bytes,
        keys: set[LeaseKey],
        boundIndex: int,
        nextNames: str = "secondary",
    ) -> str:
        """
        The common part once the client is bound to C{keys}: replication,
        SIGKILL of the primary, the client's next exchanges; return a
        summary for the report.  C{nextNames}: the server whose Server
        Identifier the client's next Renew of each lease names, after the
        secondary's Reply ("secondary" for clients that take the replying
        server's, "primary" for those that keep the one they bound with).
        """
        primary, secondary = topo.primary, topo.secondary
        primaryDuid, secondaryDuid = primary.serverDuid(), secondary.serverDuid()
        names = {primaryDuid: "primary", secondaryDuid: "secondary"}

        def replicated() -> bool:
            have = secondary.db.bindings()
            return all(
                have.get(k, ("", "", "", 0))[1:3] == ("active", duid.hex()) for k in keys
            ) and not (primary.db.pendingKeys(RELATIONSHIP) & keys)

        await waitFor(replicated, 10, "the binding on the secondary", details=topo.details)
        # The client bound with the primary.
        [request] = [s for s in exchangesAfter(topo.capture, 0, {wire.REQUEST}) if s.reply][-1:]
        assert request.reply is not None
        self.assertEqual(request.reply.serverId, primaryDuid, topo.details())

        primary.kill9()
        killedAt = time.time()
        killed = time.monotonic()
        await secondary.waitState(
            RELATIONSHIP, COMMUNICATIONS_INTERRUPTED, 5, connected=False, details=topo.details
        )
        interruptedAfter = time.monotonic() - killed

        # Per lease: a client may renew each IA in a message of its own
        # (Dibbler does), or all of them in one (dhclient, dhcpcd).
        firsts: dict[LeaseKey, Seen] = {}
        for key in sorted(keys):
            firsts[key] = await waitFor(
                lambda key=key: firstGranting(topo.capture, key, killedAt),
                T2 + 15,
                f"a Reply granting {key[0]}/{key[1]} after the kill",
                details=topo.details,
            )
        tried = exchangesAfter(topo.capture, killedAt, {wire.RENEW, wire.REBIND})
        for key, first in firsts.items():
            assert first.reply is not None
            unanswered = [s for s in tried[: tried.index(first)] if key in listedKeys(s)]
            self.assertEqual(first.reply.serverId, secondaryDuid, topo.details())
            self.assertLessEqual(grantedKeys(first), keys, topo.details())
            # RFC 8156 section 8 (DESIGN.md): in COMMUNICATIONS-INTERRUPTED the
            # secondary answers a Renew naming its partner; the client need not
            # wait for T2 and Rebind.
            self.assertEqual(
                (first.request.message.msgType, first.request.serverId, len(unanswered)),
                (wire.RENEW, primaryDuid, 0),
                "the first Renew after the kill was not answered by the secondary:\n"
                + "\n".join(s.describe(names) for s in tried)
                + "\n"
                + topo.details(),
            )
        first = min(firsts.values(), key=lambda seen: seen.request.time)
        assert first.reply is not None
        answeredAfter = first.reply.time - killedAt

        seconds: dict[LeaseKey, Seen] = {}
        for key, firstForKey in firsts.items():
            assert firstForKey.reply is not None
            seconds[key] = await waitFor(
                lambda key=key, after=firstForKey.reply.time + 0.001: firstGranting(
                    topo.capture, key, after
                ),
                T2 + 15,
                f"the client's next Renew of {key[0]}/{key[1]}",
                details=topo.details,
            )
        named = {"secondary": secondaryDuid, "primary": primaryDuid}[nextNames]
        for second in seconds.values():
            assert second.reply is not None
            self.assertEqual(second.reply.serverId, secondaryDuid, topo.details())
            self.assertEqual(
                (second.request.message.msgType, second.request.serverId),
                (wire.RENEW, named),
                f"the client's next message does not name the {nextNames}: "
                + second.describe(names)
                + "\n"
                + topo.details(),
            )
        second = min(seconds.values(), key=lambda seen: seen.request.time)
        after = secondary.db.bindings()
        for key in keys:
            self.assertEqual(after[key][1:3], ("active", duid.hex()), topo.details())
        lease = {(x.address, x.prefix_length): x for x in secondary.db.leases()}
        for key in keys:
            self.assertGreater(lease[key].cltt, killedAt - 1, topo.details())
        events = [e["reason"] for e in client.events()[boundIndex:]]
        return (
            f"secondary COMMUNICATIONS-INTERRUPTED {interruptedAfter:.2f}s after the kill;"
            f" first exchange after the kill: {first.describe(names)}"
            f" ({answeredAfter:.1f}s after the kill); next: {second.describe(names)};"
            f" client hook reasons since binding: {events}"
        )

    async def test_dhclientRenewAnsweredBySecondary(self) -> None:
        """
        C{dhclient -6 -N -P} bound by the primary keeps its address and
        prefix across the primary's SIGKILL: the secondary answers its
        Renew (naming the primary) with both, and dhclient's next Renew
        names the secondary.
        """
        topo = await self.topology("c0")
        cliNs, iface = topo.link["cli"]
        client = DHClient(cliNs, iface, topo.directory / "dhclient")
        client.start(self, ("-N", "-P"))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        _, bound2 = await client.waitEvent({"BOUND6"}, 10, after=index + 1)
        both = {**bound, **bound2}
        address = IPv6Address(both["new_ip6_address"])
        prefix = IPv6Network(both["new_ip6_prefix"])
        self.assertIn(address, LAN)
        self.assertTrue(prefix.subnet_of(LAN_PD))

        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        keys = {(address, 128), (prefix.network_address, prefix.prefixlen)}
        summary = await self.survive(topo, client, duid, keys, index)
        events = client.events()
        renewed = [e for e in events[index + 2 :] if e["reason"] in ("RENEW6", "REBIND6")]
        self.assertTrue(renewed, client.diagnostics())
        kept = {e.get("new_ip6_address") for e in renewed} | {
            e.get("new_ip6_prefix") for e in renewed
        }
        self.assertTrue({str(address), str(prefix)} <= kept, kept)
        print(f"\ndhclient -6 -N -P: {summary}")

    async def test_dhcpcdRenewAnsweredBySecondary(self) -> None:
        """
        dhcpcd (IA_NA 1 and IA_PD 2) in the same scenario: what it sends
        after the kill, whether the secondary's Reply keeps both leases,
        and whom its next Renew names.
        """
        reason = skipReason(DHCPCD)
        if reason:
            raise self.skipTest(reason)
        iface = f"d6l{os.getpid() % 100000}"
        topo = await self.topology(iface)
        cliNs, _ = topo.link["cli"]
        duid = duidLL(0x5E1F5)
        client = Dhcpcd(cliNs, iface, topo.directory / "dhcpcd", duid)
        client.start(self, iaNA=1, iaPD=2)
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        address = IPv6Address(bound["new_dhcp6_ia_na1_ia_addr1"])
        prefix = IPv6Network(
            f"{bound['new_dhcp6_ia_pd1_prefix1']}/{bound['new_dhcp6_ia_pd1_prefix1_length']}"
        )
        keys = {(address, 128), (prefix.network_address, prefix.prefixlen)}
        summary = await self.survive(topo, client, duid, keys, index)
        print(f"\ndhcpcd: {summary}")

    async def test_dibblerRenewAnsweredBySecondary(self) -> None:
        """
        Dibbler's client (an IA_NA and an IA_PD, renewed in a message
        each) in the same scenario: the secondary answers the Renew of
        each lease, which names the primary, with that lease.  Dibbler
        keeps the Server Identifier it bound with: its next Renews name
        the primary still, and the secondary answers those too.
        """
        reason = skipReason(DIBBLER, "unshare", "mount")
        if reason:
            raise self.skipTest(reason)
        topo = await self.topology("c0")
        cliNs, iface = topo.link["cli"]
        duid = duidLL(0x5E1F6)
        client = Dibbler(cliNs, iface, topo.directory / "dibbler", duid)
        client.start(self, ia=True, pd=True)
        index, bound = await client.waitEvent({"add"}, 30)
        address = IPv6Address(bound["ADDR1"])
        prefix = IPv6Network(f"{bound['PREFIX1']}/{bound['PREFIX1LEN']}")
        self.assertIn(address, LAN)
        self.assertTrue(prefix.subnet_of(LAN_PD))
        keys = {(address, 128), (prefix.network_address, prefix.prefixlen)}
        summary = await self.survive(topo, client, duid, keys, index, nextNames="primary")
        print(f"\ndibbler-client: {summary}")

    async def test_dhcp6cRenewAnsweredBySecondary(self) -> None:
        """
        WIDE dhcp6c (an IA_NA and an IA_PD, renewed in a message each, T1
        raised to 18 s) in the same scenario: the secondary answers the
        Renew of each lease, which names the primary, with that lease, and
        the client's next Renew of each names the secondary.
        """
        reason = skipReason(DHCP6C, "unshare", "mount")
        if reason:
            raise self.skipTest(reason)
        topo = await self.topology("c0")
        cliNs, iface = topo.link["cli"]
        # The interface the delegated prefix's /64 goes on.
        cliNs.run("ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        for name in ("p0", "p1"):
            cliNs.run("ip", "link", "set", name, "up")
        duid = duidLL(0x5E1F7)
        client = WideDhcp6c(cliNs, iface, topo.directory / "dhcp6c", duid)
        client.start(self, iaNA=1, iaPD=2, prefixInterface="p0")

        def bound() -> set[LeaseKey] | None:
            have = topo.primary.db.bindings()
            keys = {k for k, v in have.items() if v[1:3] == ("active", duid.hex())}
            onLink = [a for a in cliNs.addresses(iface) if a.get("scope") == "global"]
            return keys if len(keys) == 2 and onLink else None

        keys = await waitFor(bound, 30, "dhcp6c bound", details=topo.details)
        [address] = [k[0] for k in keys if k[1] == 128]
        [prefix] = [IPv6Network(f"{k[0]}/{k[1]}") for k in keys if k[1] != 128]
        self.assertIn(address, LAN)
        self.assertTrue(prefix.subnet_of(LAN_PD))
        summary = await self.survive(topo, client, duid, keys, len(client.events()))
        print(f"\ndhcp6c: {summary}")
