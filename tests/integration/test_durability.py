"""
Durability under SIGKILL: every lease a client got a Reply for survives a
crash of the server process (DESIGN.md invariant 4: "a lease in a Reply is
in the sender's durable store"), and the restarted server gives each such
client the same lease back.

Runs on loopback in the test's own network namespace when we are root (so
that no other test run can disturb it), else on C{::1} in the current one,
on an unprivileged port: the server answers relayed messages to their
source port.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from ipaddress import IPv6Address

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.integration import wire
from tests.integration.netns import Namespace, netnsProblem, tempDir, waitFor
from tests.integration.relayclient import Hop, Lease, NoReply, RelayedClients, leasesOf
from tests.integration.serverproc import (
    LOOP,
    LOOP_PD,
    LeaseDB,
    ServerProcess,
    Subnet,
    freePort,
    poolOf,
    serverSkipReason,
    writeConfig,
)

CLIENTS = 600
CONCURRENCY = 48
KILL_AFTER = CLIENTS // 2


@dataclass
class Grant:
    """A Reply that granted leases to one client IA."""

    duid: bytes
    iaid: int
    pd: bool
    serverId: bytes
    leases: list[Lease]


class DurabilityTests(TestCase):
    """SIGKILL the server in the middle of a burst of new clients."""

    timeout = 120

    def setUp(self) -> None:
        reason = serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def test_killNineKeepsEveryRepliedLease(self) -> None:
        """
        With the default configuration (no commit delay).  See L{killNine}.
        """
        await self.killNine(commitDelay=None)

    async def test_killNineWithCommitDelay(self) -> None:
        """
        With C{commit-delay = 0.05}: each lease waits up to 50 ms for others
        to share its transaction, so far more are decided but not yet durable
        at the kill; none of those may have been replied to.
        """
        await self.killNine(commitDelay=0.05)

    async def killNine(self, commitDelay: float | None) -> None:
        """
        Drive Solicit/Request for many distinct relayed clients (a third of
        them asking for prefixes), SIGKILL the server once half have their
        Reply while dozens of exchanges are in flight, then:
          - every lease in any Reply is in the database, ACTIVE, for the
            DUID and IAID it was given to;
          - no address or prefix was given to two clients;
          - the restarted server (same database, same DUID) renews every
            such lease unchanged, and a new Solicit/Request by the same
            client gets the same lease back.
        """
        directory = tempDir(self)
        ns: Namespace | None = None
        if netnsProblem() is None:
            ns = Namespace.create(self, "dur")
            port = 547
        else:
            port = freePort()
        database = directory / "leases.sqlite"
        subnet = Subnet(
            "loop",
            LOOP,
            pools=[poolOf(LOOP, 0x10000, 0xFFFFFFFF)],
            pdPools=[(LOOP_PD, 56)],
            preferred=200,
            valid=300,
            t1=100,
            t2=160,
        )
        extra = {} if commitDelay is None else {"commit-delay": str(commitDelay)}
        config = writeConfig(
            directory / "server.ini", database, [subnet], address="::1", port=port, extra=extra
        )
        server = ServerProcess(self, config, directory, ns=ns, port=port)
        server.start()
        await server.ready()
        db = LeaseDB(database)
        # The server makes its DUID durable before it answers any client, but
        # it may already listen while that write is in flight.
        serverDuid = await waitFor(
            lambda: db.metadata().get("server-duid"), 10.0, "the server DUID on disk"
        )

        clients = RelayedClients(self, ("::1", port), [Hop(LOOP.network_address + 1, b"dur")],
                                 ns=ns, bindAddress="::1")  # fmt: skip
        grants: dict[tuple[bytes, int], Grant] = {}
        everyGrant: list[tuple[bytes, int, Lease]] = []
        killed: dict[str, float] = {}
        pending = iter(range(CLIENTS))

        async def worker() -> None:
            for i in pending:
                if killed:
                    return
                duid = wire.duidLL(0x10000 + i)
                iaid = i
                pd = i % 3 == 0
                try:
                    _, reply = await clients.solicitRequest(
                        duid, iaid, pd=pd, timeout=0.5, attempts=3
                    )
                except NoReply:
                    if killed:
                        return
                    raise
                self.assertEqual(reply.reply.msgType, wire.REPLY)
                leases = leasesOf(reply.reply)
                if not leases:
                    continue
                serverId = reply.reply.get(wire.OPT_SERVERID)
                assert serverId is not None
                grants[(duid, iaid)] = Grant(duid, iaid, pd, serverId, leases)
                everyGrant.extend((duid, iaid, lease) for lease in leases)
                if len(grants) >= KILL_AFTER and not killed:
                    killed["inFlight"] = len(clients._waiting)
                    killed["at"] = time.monotonic()
                    server.kill9()

        started = time.monotonic()
        await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(CONCURRENCY)])
        self.assertTrue(killed, f"the load ended before the kill: {len(grants)} grants")
        self.assertGreater(killed["inFlight"], 0, "nothing was in flight at the kill")
        rate = len(grants) / (killed["at"] - started)

        # 1. Every replied lease is on disk, as the crash left it.
        byKey = {(x.address, x.prefix_length): x for x in db.leases()}
        problems = []
        for duid, iaid, lease in everyGrant:
            stored = byKey.get((lease.address, lease.prefixLength))
            want = (duid, iaid, "active", "pd" if lease.prefixLength < 128 else "na")
            got = None if stored is None else (stored.duid, stored.iaid, stored.state,
                                               stored.lease_type)  # fmt: skip
            if got != want:
                problems.append(
                    f"{lease.address}/{lease.prefixLength}: replied {(want[0].hex(),) + want[1:]}, stored {got and (got[0].hex(),) + got[1:]}"
                )
        self.assertEqual(
            problems[:10], [], f"{len(problems)} replied leases not durable\n{server.logTail()}"
        )
        # 2. No lease went to two clients.
        owners: dict[tuple[IPv6Address, int], set[tuple[bytes, int]]] = {}
        for duid, iaid, lease in everyGrant:
            owners.setdefault((lease.address, lease.prefixLength), set()).add((duid, iaid))
        self.assertEqual({k: v for k, v in owners.items() if len(v) > 1}, {})

        # 3. The restarted server renews each lease unchanged.
        server.start()
        await server.ready()
        self.assertEqual(db.metadata().get("server-duid"), serverDuid)
        items = iter(list(grants.values()))
        failures: list[str] = []

        async def renewer() -> None:
            for g in items:
                exchange = await clients.renew(g.duid, g.iaid, g.serverId, g.leases, pd=g.pd,
                                               timeout=1.0, attempts=3)  # fmt: skip
                got = sorted((x.address, x.prefixLength) for x in leasesOf(exchange.reply))
                want = sorted((x.address, x.prefixLength) for x in g.leases)
                if got != want:
                    failures.append(f"renew {g.duid.hex()}/{g.iaid}: had {want}, got {got}")

        await gatherResults([Deferred.fromCoroutine(renewer()) for _ in range(CONCURRENCY)])
        self.assertEqual(failures[:10], [], f"{len(failures)} renewals changed\n{server.logTail()}")

        # 4. ... and a new Solicit/Request from the same IA gets the same lease.
        items = iter(list(grants.values()))

        async def rerequester() -> None:
            for g in items:
                _, reply = await clients.solicitRequest(g.duid, g.iaid, pd=g.pd, timeout=1.0)
                got = sorted((x.address, x.prefixLength) for x in leasesOf(reply.reply))
                want = sorted((x.address, x.prefixLength) for x in g.leases)
                if got != want:
                    failures.append(f"request {g.duid.hex()}/{g.iaid}: had {want}, got {got}")

        await gatherResults([Deferred.fromCoroutine(rerequester()) for _ in range(CONCURRENCY)])
        self.assertEqual(failures[:10], [], f"{len(failures)} requests changed\n{server.logTail()}")
        server.stop()
        self.assertTrue(os.path.exists(database))
        # For the record (trial shows it with -e / in test.log).
        print(
            f"\ndurability (commit-delay {commitDelay}): {len(grants)} clients granted before SIGKILL "
            f"({rate:.0f}/s, {killed['inFlight']:.0f} exchanges in flight at the kill)"
        )
