"""
Several relationships on one server (RFC 7031 section 7, requirement 3:
m-to-1), with three real dhcp6ha processes over real TLS on loopback:

    A --(ab: A primary, B secondary; subnet "one")--> B
    B --(bc: B primary, C secondary; subnet "two")--> C

B is secondary in one relationship and primary in the other.  Each
relationship reaches NORMAL and replicates its own subnet only: a binding
of subnet one is on A and B, never on C; one of subnet two on B and C,
never on A.
"""

from __future__ import annotations

import time
from ipaddress import IPv6Address, IPv6Network

from twisted.trial.unittest import TestCase

from tests.integration.netns import tempDir
from tests.integration.pair import (
    NORMAL,
    PKI,
    FailoverServer,
    Ports,
    Relationship,
    Servers,
    bindMany,
    expectedBindings,
    identityOf,
    shortDirectory,
    useNamespace,
    waitAgree,
)
from tests.integration.serverproc import Subnet, poolOf, serverSkipReason

ONE = IPv6Network("fd6a:5e1f:b::/64")
ONE_PD = IPv6Network("fd6a:5e1f:b100::/48")
TWO = IPv6Network("fd6a:5e1f:c::/64")
TWO_PD = IPv6Network("fd6a:5e1f:c100::/48")


def subnet(name: str, prefix: IPv6Network, pd: IPv6Network) -> Subnet:
    return Subnet(
        name,
        prefix,
        pools=[poolOf(prefix, 0x1000, 0x1FFF)],
        pdPools=[(pd, 56)],
        preferred=200,
        valid=300,
        t1=100,
        t2=160,
    )


def inOne(key: tuple[IPv6Address, int]) -> bool:
    return key[0] in ONE or key[0] in ONE_PD


def inTwo(key: tuple[IPv6Address, int]) -> bool:
    return key[0] in TWO or key[0] in TWO_PD


class MToOneTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        reason = serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def test_chainOfRelationships(self) -> None:
        """
        A, B and C as in the module docstring: both relationships reach
        NORMAL on both their members; clients bound on A (subnet one) are
        replicated to B only, clients bound on B (subnet two) to C only;
        B's status lists both relationships with their roles and no
        unacked update.
        """
        started = time.monotonic()
        directory = tempDir(self)
        ns = useNamespace(self, "m21")
        ports = Ports.choose(ns, 3)
        pki = PKI(directory / "pki")
        sockets = shortDirectory(self)
        one, two = subnet("one", ONE, ONE_PD), subnet("two", TWO, TWO_PD)
        certs = {n: pki.server(n, dns=[identityOf(n)]) for n in ("a", "b", "c")}
        ab, bc = ports.tcp[0], ports.tcp[1]

        def rel(name: str, role: str, me: str, partner: str, subnets: list[str],
                port: int) -> Relationship:  # fmt: skip
            cert, key = certs[me]
            if role == "primary":
                return Relationship(name, role, subnets, cert, key, pki.caPath,
                                    identityOf(partner), partnerAddress="::1",
                                    partnerPort=port, mclt=600)  # fmt: skip
            return Relationship(name, role, subnets, cert, key, pki.caPath, identityOf(partner),
                                listenAddress="::1", listenPort=port, mclt=600)  # fmt: skip

        a = FailoverServer(self, "a", directory / "a", sockets, subnets=[one],
                           relationships=[rel("ab", "primary", "a", "b", ["one"], ab)],
                           ns=ns, port=ports.udp[0])  # fmt: skip
        b = FailoverServer(self, "b", directory / "b", sockets, subnets=[one, two],
                           relationships=[rel("ab", "secondary", "b", "a", ["one"], ab),
                                          rel("bc", "primary", "b", "c", ["two"], bc)],
                           ns=ns, port=ports.udp[1])  # fmt: skip
        c = FailoverServer(self, "c", directory / "c", sockets, subnets=[two],
                           relationships=[rel("bc", "secondary", "c", "b", ["two"], bc)],
                           ns=ns, port=ports.udp[2])  # fmt: skip
        servers = Servers(directory, ns, pki, {"a": a, "b": b, "c": c})
        for server in (c, b, a):
            server.start()
        for server in (c, b, a):
            await server.ready()
        await servers.waitNormal("ab", "a", "b")
        await servers.waitNormal("bc", "b", "c")
        normalAfter = time.monotonic() - started

        onA = await bindMany(a.relayedClients(self, ONE.network_address + 1), range(1, 13))
        onB = await bindMany(b.relayedClients(self, TWO.network_address + 1), range(101, 113))
        expectedOne = expectedBindings(onA, {})
        expectedTwo = expectedBindings(onB, {})
        self.assertTrue(all(inOne(k) for k in expectedOne), expectedOne)
        self.assertTrue(all(inTwo(k) for k in expectedTwo), expectedTwo)

        agreedAB = await waitAgree(a, b, "ab", 20, where=inOne, details=servers.details)
        agreedBC = await waitAgree(b, c, "bc", 20, where=inTwo, details=servers.details)
        for key, value in expectedOne.items():
            self.assertEqual(agreedAB.get(key), value, servers.details())
        for key, value in expectedTwo.items():
            self.assertEqual(agreedBC.get(key), value, servers.details())
        replicatedAfter = time.monotonic() - started

        self.assertEqual([k for k in c.db.bindings() if inOne(k)], [], servers.details())
        self.assertEqual([k for k in a.db.bindings() if inTwo(k)], [], servers.details())
        self.assertEqual(c.db.pendingCount("ab"), 0)
        self.assertEqual(a.db.pendingCount("bc"), 0)

        status = b.ctlStatus()
        summary = {
            r["name"]: (
                r["role"],
                r["state"],
                r["partner_state"],
                r["unacked_updates"],
                r["connected"],
            )  # fmt: skip
            for r in status["relationships"]
        }
        self.assertEqual(
            summary,
            {
                "ab": ("secondary", NORMAL, NORMAL, 0, True),
                "bc": ("primary", NORMAL, NORMAL, 0, True),
            },
        )
        print(
            f"\nm-to-1: both relationships NORMAL after {normalAfter:.1f}s;"
            f" {len(expectedOne)} + {len(expectedTwo)} bindings replicated to their own"
            f" partner only after {replicatedAfter:.1f}s; B's status: {summary}"
        )
