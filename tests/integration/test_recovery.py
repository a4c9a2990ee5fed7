"""
Recovery of a failover pair of real dhcp6ha processes over real TLS
(RFC 8156 section 8, DESIGN.md "What never happens"):

  - (a) the primary killed and declared down by the operator once its last
    recorded operation is past (it records it every 5 s here,
    C{operation-record-interval}): it comes back through RECOVER (UPDREQ);
    (a2) declared down at once: it comes back through POTENTIAL-CONFLICT;
  - (b) the primary's database lost: RECOVER with UPDREQALL, RECOVER-WAIT;
  - (c) the partner link cut while clients reach both servers, healed:
    COMMUNICATIONS-INTERRUPTED straight to NORMAL;
  - (d) the operator's partner-down while the partner is in fact alive and
    serving: POTENTIAL-CONFLICT, CONFLICT-DONE, NORMAL.

Each test records the states both servers went through (from their log
lines C{Failover pair: OLD -> NEW}, which see every transition, where
status polling can miss the short ones), asserts the path RFC 8156 and
L{dhcp6ha.failover.machine} prescribe, and then checks the invariants:

  1. no address or prefix ACTIVE for two different clients, across both
     databases, and none granted to two clients with overlapping lifetimes
     across every Reply the clients received (L{partition.doubleActive},
     L{partition.overlappingReplies});
  2. every client keeps its lease: each renewal or rebind, whoever answers,
     gives back the same address or prefix, and at the end both databases
     hold it ACTIVE for that client;
  and the databases agree again (L{pair.waitAgree}).

Clients are simulated relayed clients (L{partition.Relay}): relayed to one
server, or to both like a relay agent configured with two servers.  The
partner link is cut by a TCP proxy the test owns (L{partition.PartnerLinkProxy}):
the primary connects to the proxy, which forwards to the secondary.

MCLT is short (10 s) so that RECOVER-WAIT and PARTNER-DOWN's wait fit in a
test.  Each test prints its figures (clients, leases, seconds to NORMAL,
states seen) for the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from ipaddress import IPv6Address, IPv6Network

from twisted.trial.unittest import TestCase

from dhcp6ha.config import DEFAULT_OPERATION_RECORD_INTERVAL
from tests.integration import wire
from tests.integration.clients import DHCLIENT, DHClient, dhclientBytes
from tests.integration.netns import CLIENT_MAC, Capture, skipReason, sleep, tempDir, waitFor
from tests.integration.pair import (
    COMMUNICATIONS_INTERRUPTED,
    NORMAL,
    PKI,
    FailoverServer,
    Relationship,
    Servers,
    concurrently,
    freeTCPPort,
    identityOf,
    pcapMessages,
    sharedLink,
    shortDirectory,
    startPair,
    waitAgree,
)
from tests.integration.partition import (
    Held,
    Journal,
    PartnerLinkProxy,
    Relay,
    Renewer,
    acquire,
    doubleActive,
    loggedStates,
    overlappingReplies,
    renew,
)
from tests.integration.relayclient import NoReply
from tests.integration.serverproc import Subnet, poolOf, serverSkipReason

LINK_NET = IPv6Network("fd6a:5e1f:e::/64")
#: 256 delegable /56s.
LINK_PD = IPv6Network("fd6a:5e1f:e100::/48")
LINK = LINK_NET.network_address + 1
REL = "pair"
PARTNER_DOWN = "partner-down"
POTENTIAL_CONFLICT = "potential-conflict"
MCLT = 10
PREFERRED, VALID, T1, T2 = 200, 300, 100, 160
#: Skew bound configured on both sides (max-clock-skew): the machine adds it
#: to the last recorded time of operation (RFC 8156 section 8.3.2 step 5).
SKEW = 1.0
#: How often the machine stores its time of operation while serving
#: (operation-record-interval): the default, except in test (a).
RECORD_INTERVAL = DEFAULT_OPERATION_RECORD_INTERVAL
#: Test (a)'s primary records it this often, so that its last recorded
#: operation is past a few seconds after it is killed.
SHORT_RECORD_INTERVAL = 5.0
#: The proxy's port inside the pair's namespace (a free port without one).
PROXY_PORT = 6700


def subnet() -> Subnet:
    """One relayed subnet: an address pool and a /56 prefix pool; long lifetimes."""
    return Subnet(
        "link",
        LINK_NET,
        pools=[poolOf(LINK_NET, 0x1000, 0x1FFF)],
        pdPools=[(LINK_PD, 56)],
        preferred=PREFERRED,
        valid=VALID,
        t1=T1,
        t2=T2,
    )


def inPools(key: tuple[IPv6Address, int]) -> bool:
    address, length = key
    return (length == 128 and address in LINK_NET) or (length == 56 and address in LINK_PD)


def ownerOf(address: IPv6Address) -> str:
    """Independent allocation: the primary owns odd addresses, the secondary even ones."""
    return "primary" if int(address) & 1 else "secondary"


def since(states: list[str], count: int) -> list[str]:
    return states[count:]


async def waitStates(
    servers: Servers, wanted: dict[str, str], timeout: float, connected: bool | None
) -> float:
    """Wait until each named server is in its wanted state; return the seconds taken."""
    started = time.monotonic()
    for name, state in wanted.items():
        await servers[name].waitState(
            REL, state, timeout, connected=connected, details=servers.details
        )
    return time.monotonic() - started


class RecoveryTestCase(TestCase):
    timeout = 150

    def setUp(self) -> None:
        reason = serverSkipReason()
        if reason:
            raise self.skipTest(reason)
        self.figures: list[str] = []

    # -- the pair

    async def pair(
        self,
        *,
        proxy: bool = False,
        primaryExtra: dict[str, str] | None = None,
    ) -> tuple[Servers, PartnerLinkProxy | None]:
        """
        A primary and a secondary (MCLT L{MCLT}, skew bound L{SKEW}),
        started and NORMAL; with C{proxy}, the primary reaches the
        secondary through a L{PartnerLinkProxy}.
        """
        servers = await startPair(self, tempDir(self), [subnet()], mclt=MCLT, start=False)
        primary, secondary = servers.primary, servers.secondary
        for server in (primary, secondary):
            server.relationships[0].extra["max-clock-skew"] = f"{SKEW:g}"
        primary.relationships[0].extra.update(primaryExtra or {})
        link = None
        if proxy:
            listen = secondary.relationships[0].listenPort
            assert listen is not None
            port = PROXY_PORT if servers.ns is not None else freeTCPPort()
            link = PartnerLinkProxy(self, servers.ns, port, ("::1", listen))
            link.listen()
            primary.relationships[0].partnerPort = port
        for server in (primary, secondary):
            server.config = server.writeConfig()
        secondary.start()
        primary.start()
        await secondary.ready()
        await primary.ready()
        await servers.waitNormal(REL, "primary", "secondary")
        return servers, link

    def details(self, servers: Servers, link: PartnerLinkProxy | None = None) -> str:
        text = servers.details()
        if link is not None:
            text += "\n" + link.describe()
        return text

    def names(self, servers: Servers) -> dict[bytes, str]:
        return {s.serverDuid(): s.name for s in servers.servers.values()}

    # -- clients

    async def bind(
        self, relay: Relay, numbers: Iterable[int], names: dict[bytes, str], pdEvery: int = 3
    ) -> dict[int, Held]:
        """Solicit/Request for clients C{numbers} (a prefix for every third); all granted."""
        out: dict[int, Held] = {}

        async def one(n: int) -> None:
            held = await acquire(relay, n, n % pdEvery == 0, names)
            if held is None:
                raise AssertionError(f"client {n}: nothing offered through {relay.name}")
            out[n] = held

        await concurrently(list(numbers), one)
        return out

    async def renewAll(
        self,
        relay: Relay,
        clients: Iterable[Held],
        names: dict[bytes, str],
        *,
        valid: int | None = None,
        rebind: bool = False,
        what: str = "",
    ) -> None:
        """
        Renew (or rebind) every client through C{relay}: each gets its
        leases back, with valid lifetime C{valid} when given.
        """

        async def one(held: Held) -> None:
            leases = await renew(relay, held, names, rebind=rebind)
            if valid is not None:
                got = [x.valid for x in leases]
                self.assertEqual(
                    got, [valid] * len(leases), f"{what}: client {held.n} valid lifetimes {got}"
                )

        await concurrently(list(clients), one)
        changed = [f"client {h.n}: {c}" for h in clients for c in h.changes]
        self.assertEqual(changed, [], f"{what}: leases changed")

    def assertInvariants(
        self, servers: Servers, clients: dict[int, Held], journal: Journal, details: str
    ) -> int:
        """
        Invariants 1 and 2 at the end of a test; return the number of
        ACTIVE records in the primary's database.
        """
        primary, secondary = servers.primary, servers.secondary
        doubles = doubleActive([("primary", primary.db), ("secondary", secondary.db)])
        self.assertEqual(doubles, [], "ACTIVE for two clients\n" + details)
        overlaps = overlappingReplies(journal)
        self.assertEqual(overlaps[:20], [], "granted to two clients at once\n" + details)
        changed = [f"client {h.n}: {c}" for h in clients.values() for c in h.changes]
        self.assertEqual(changed, [], "a client's lease changed\n" + details)
        for server in (primary, secondary):
            have = server.db.bindings()
            wrong = [
                f"client {h.n} {k[0]}/{k[1]}: {have.get(k)}"
                for h in clients.values()
                for k in h.keys
                if have.get(k) is None or have[k][1:] != ("active", h.duid.hex(), h.iaid)
            ]
            self.assertEqual(wrong[:20], [], f"{server.name} lost client leases\n" + details)
        return sum(1 for v in primary.db.bindings().values() if v[1] == "active")

    async def finalRenew(
        self, relay: Relay, clients: dict[int, Held], names: dict[bytes, str]
    ) -> None:
        """Every client renews with the server that answered it last: same leases."""
        await self.renewAll(relay, clients.values(), names, what="after recovery")


class PartnerDownTests(RecoveryTestCase):
    """The primary dies; the operator declares it down; it comes back."""

    async def test_primaryKilledPartnerDownRecover(self) -> None:
        """
        The primary is killed with SIGKILL; the secondary, in
        COMMUNICATIONS-INTERRUPTED, renews the primary's clients; once the
        primary's last recorded time of operation is surely past (RFC 8156
        section 8.3.2 step 5: recorded every L{SHORT_RECORD_INTERVAL}
        seconds here, plus the skew bound),
        the operator runs C{dhcp6ha-ctl partner-down pair --yes} on it.  In
        PARTNER-DOWN the secondary gives new clients even addresses (its
        own half) with the full lifetime, its FREE-BACKUP prefixes and then
        nothing until MCLT has passed since it entered PARTNER-DOWN, after
        which the primary's free prefixes; the primary's clients Renew and
        Rebind with it and keep their leases with the full lifetime (no
        MCLT cap).  The primary restarted on its database goes STARTUP,
        RECOVER (UPDREQ), RECOVER-WAIT, RECOVER-DONE, NORMAL while the
        secondary goes PARTNER-DOWN to NORMAL; both databases then agree.
        """
        servers, _ = await self.pair(
            primaryExtra={
                "max-backup-prefixes": "2",
                "operation-record-interval": f"{SHORT_RECORD_INTERVAL:g}",
            }
        )
        primary, secondary = servers.primary, servers.secondary
        journal = Journal()
        toPrimary = Relay(self, "to-primary", [primary], LINK, journal)
        toSecondary = Relay(self, "to-secondary", [secondary], LINK, journal)
        toBoth = Relay(self, "to-both", [primary, secondary], LINK, journal)
        names = self.names(servers)
        clients = await self.bind(toPrimary, range(1, 19), names)
        self.assertEqual({h.server for h in clients.values()}, {"primary"})
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        # Acked: the next renewal gets the configured lifetime (section 4.4.1).
        await self.renewAll(toPrimary, clients.values(), names, valid=VALID, what="NORMAL")
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)

        before = len(loggedStates(secondary, REL))
        primary.kill9()
        # What the primary will find at its restart (RFC 8156 section 8.2).
        record = json.loads(primary.db.metadata()[f"failover.{REL}.state"])
        await secondary.waitState(
            REL, COMMUNICATIONS_INTERRUPTED, 10, connected=False, details=servers.details
        )
        # COMMUNICATIONS-INTERRUPTED: Renews naming the primary answered, same leases.
        early = [h for n, h in clients.items() if n <= 6]
        await self.renewAll(toSecondary, early, names, what="COMMUNICATIONS-INTERRUPTED")
        self.assertEqual({h.server for h in early}, {"secondary"})

        # Partner-down only once the primary's last recorded operation is
        # older than the entry into PARTNER-DOWN: then its restart goes to
        # RECOVER, not POTENTIAL-CONFLICT.
        self.assertEqual(record["record_interval"], SHORT_RECORD_INTERVAL)
        bound = float(record["last_operation"]) + SHORT_RECORD_INTERVAL + SKEW + 1.0
        waited = max(0.0, bound - time.time())
        await sleep(waited)
        done = secondary.ctl("partner-down", REL, "--yes")
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        entry = await secondary.waitState(REL, PARTNER_DOWN, 5, details=servers.details)
        downSince = float(entry["state_since"])
        self.assertGreater(downSince, bound - 1.0)
        backup = {
            k for k, v in secondary.db.bindings().items() if v[1] == "free-backup" and inPools(k)
        }

        # PARTNER-DOWN, before MCLT: addresses of the secondary's half, full lifetime.
        fresh: dict[int, Held] = {}
        for n in range(101, 107):
            held = await acquire(toSecondary, n, False, names)
            assert held is not None, f"client {n}: no address in PARTNER-DOWN"
            fresh[n] = held
        wrongHalf = [(n, h.keys) for n, h in fresh.items() if ownerOf(h.keys[0][0]) != "secondary"]
        self.assertEqual(wrongHalf, [], "PARTNER-DOWN allocated from the partner's half")
        self.assertEqual({h.valid for h in fresh.values()}, {VALID}, "MCLT cap in PARTNER-DOWN")
        # Prefixes: its FREE-BACKUP ones, then none until MCLT has passed.
        refused = []
        for n in range(201, 201 + len(backup) + 2):
            held = await acquire(toSecondary, n, True, names)
            if held is None:
                refused.append(n)
            else:
                fresh[n] = held
        refusedBy = time.time()
        self.assertLess(refusedBy, downSince + MCLT, "too slow: MCLT passed before the check")
        ownPrefixes = [fresh[n].keys[0] for n in fresh if n >= 201]
        self.assertEqual(len(refused), 2, f"FREE-BACKUP {sorted(backup)}, granted {ownPrefixes}")
        self.assertTrue(set(ownPrefixes) <= backup, f"{ownPrefixes} not FREE-BACKUP {backup}")
        # The primary's clients renew (even) or rebind (odd) with the secondary.
        primarys = [h for n, h in clients.items() if n > 6]
        await self.renewAll(
            toSecondary,
            [h for h in primarys if h.n % 2 == 0],
            names,
            valid=VALID,
            what="Renew naming the primary in PARTNER-DOWN",
        )
        await self.renewAll(
            toSecondary,
            [h for h in primarys if h.n % 2 == 1],
            names,
            valid=VALID,
            rebind=True,
            what="Rebind in PARTNER-DOWN",
        )
        # After MCLT: the primary's free prefixes.
        await sleep(max(0.0, downSince + MCLT + 0.5 - time.time()))
        taken = {k for h in [*clients.values(), *fresh.values()] for k in h.keys}
        for n in refused:
            held = await acquire(toSecondary, n, True, names)
            assert held is not None, f"client {n}: no prefix after MCLT in PARTNER-DOWN"
            self.assertNotIn(held.keys[0], backup | taken)
            self.assertEqual(held.valid, VALID)
            fresh[n] = held
        clients.update(fresh)

        # The primary comes back on its database.
        beforeRestart = len(loggedStates(primary, REL))
        restarted = time.monotonic()
        primary.start()
        await primary.ready()
        await servers.waitNormal(REL, "primary", "secondary", timeout=60)
        normalAfter = time.monotonic() - restarted
        primaryStates = since(loggedStates(primary, REL), beforeRestart)
        secondaryStates = since(loggedStates(secondary, REL), before)
        details = self.details(servers)
        self.assertEqual(
            primaryStates,
            ["startup", "recover", "recover-wait", "recover-done", NORMAL],
            details,
        )
        self.assertEqual(
            secondaryStates, [COMMUNICATIONS_INTERRUPTED, PARTNER_DOWN, NORMAL], details
        )
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        active = self.assertInvariants(servers, clients, journal, self.details(servers))
        await self.finalRenew(toBoth, clients, names)
        print(
            f"\n(a) primary SIGKILL + partner-down: {len(clients)} clients"
            f" ({len(fresh)} new in PARTNER-DOWN, {len(refused)} prefix requests refused"
            f" before MCLT, granted after), {active} ACTIVE leases; waited {waited:.1f}s"
            f" after the kill for the last recorded operation; NORMAL {normalAfter:.1f}s after"
            f" the restart; primary {primaryStates}; secondary {secondaryStates};"
            f" {journal.grants()} grants in Replies"
        )

    async def test_primaryKilledPartnerDownAtOnce(self) -> None:
        """
        The usual operator: partner-down as soon as the primary is seen
        dead.  The secondary entered PARTNER-DOWN before the primary's last
        recorded time of operation plus the recording interval and the skew
        bound, so the restarted primary cannot tell whether it served after
        that: RFC 8156 section 8.3.2 step 5 sends it to POTENTIAL-CONFLICT
        (not RECOVER), the secondary follows (section 8.4.2), the primary
        goes CONFLICT-DONE once it has the secondary's updates, the
        secondary NORMAL once it has the primary's, then the primary
        NORMAL.  Same end: databases agree, no lease for two clients,
        every client kept its lease.
        """
        servers, _ = await self.pair()
        primary, secondary = servers.primary, servers.secondary
        journal = Journal()
        toPrimary = Relay(self, "to-primary", [primary], LINK, journal)
        toSecondary = Relay(self, "to-secondary", [secondary], LINK, journal)
        toBoth = Relay(self, "to-both", [primary, secondary], LINK, journal)
        names = self.names(servers)
        clients = await self.bind(toPrimary, range(1, 13), names)
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        await self.renewAll(toPrimary, clients.values(), names, valid=VALID, what="NORMAL")
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)

        before = len(loggedStates(secondary, REL))
        primary.kill9()
        await secondary.waitState(
            REL, COMMUNICATIONS_INTERRUPTED, 10, connected=False, details=servers.details
        )
        done = secondary.ctl("partner-down", REL, "--yes")
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        entry = await secondary.waitState(REL, PARTNER_DOWN, 5, details=servers.details)
        record = json.loads(primary.db.metadata()[f"failover.{REL}.state"])
        doubt = float(record["last_operation"]) + RECORD_INTERVAL + SKEW
        self.assertLess(float(entry["state_since"]), doubt, "premise: within the doubt window")
        fresh = await self.bind(toSecondary, range(101, 107), names)
        await self.renewAll(
            toSecondary, clients.values(), names, valid=VALID, what="PARTNER-DOWN renewals"
        )
        clients.update(fresh)

        beforeRestart = len(loggedStates(primary, REL))
        restarted = time.monotonic()
        primary.start()
        await primary.ready()
        await servers.waitNormal(REL, "primary", "secondary", timeout=60)
        normalAfter = time.monotonic() - restarted
        primaryStates = since(loggedStates(primary, REL), beforeRestart)
        secondaryStates = since(loggedStates(secondary, REL), before)
        details = self.details(servers)
        self.assertEqual(
            primaryStates, ["startup", POTENTIAL_CONFLICT, "conflict-done", NORMAL], details
        )
        self.assertEqual(
            secondaryStates,
            [COMMUNICATIONS_INTERRUPTED, PARTNER_DOWN, POTENTIAL_CONFLICT, NORMAL],
            details,
        )
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        active = self.assertInvariants(servers, clients, journal, self.details(servers))
        await self.finalRenew(toBoth, clients, names)
        print(
            f"\n(a2) primary SIGKILL + immediate partner-down: {len(clients)} clients"
            f" ({len(fresh)} new in PARTNER-DOWN), {active} ACTIVE leases; NORMAL"
            f" {normalAfter:.1f}s after the restart; primary {primaryStates}; secondary"
            f" {secondaryStates}; {journal.grants()} grants in Replies"
        )

    async def test_primaryDatabaseLost(self) -> None:
        """
        As above, but the primary's database is deleted before it restarts
        and the operator declares partner-down at once: the primary has no
        stored state, goes RECOVER and asks for everything (UPDREQALL),
        waits MCLT in RECOVER-WAIT (answering no client), then
        RECOVER-DONE and NORMAL.  Its new database holds every binding the
        secondary has, and no address or prefix is ACTIVE for two clients.
        """
        servers, _ = await self.pair()
        primary, secondary = servers.primary, servers.secondary
        journal = Journal()
        toPrimary = Relay(self, "to-primary", [primary], LINK, journal)
        toSecondary = Relay(self, "to-secondary", [secondary], LINK, journal)
        toBoth = Relay(self, "to-both", [primary, secondary], LINK, journal)
        names = self.names(servers)
        clients = await self.bind(toPrimary, range(1, 19), names)
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        await self.renewAll(toPrimary, clients.values(), names, valid=VALID, what="NORMAL")
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        oldDuid = primary.serverDuid()

        before = len(loggedStates(secondary, REL))
        primary.kill9()
        await secondary.waitState(
            REL, COMMUNICATIONS_INTERRUPTED, 10, connected=False, details=servers.details
        )
        done = secondary.ctl("partner-down", REL, "--yes")
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        await secondary.waitState(REL, PARTNER_DOWN, 5, details=servers.details)
        fresh = await self.bind(toSecondary, range(101, 110), names)
        self.assertEqual({h.server for h in fresh.values()}, {"secondary"})
        wrongHalf = [
            (n, h.keys)
            for n, h in fresh.items()
            if not h.pd and ownerOf(h.keys[0][0]) != "secondary"
        ]
        self.assertEqual(wrongHalf, [], "PARTNER-DOWN allocated from the partner's half")
        await self.renewAll(
            toSecondary, clients.values(), names, valid=VALID, what="PARTNER-DOWN renewals"
        )
        clients.update(fresh)

        for suffix in ("", "-wal", "-shm"):
            path = primary.database.with_name(primary.database.name + suffix)
            if path.exists():
                path.unlink()
        beforeRestart = len(loggedStates(primary, REL))
        restarted = time.monotonic()
        primary.start()
        await primary.ready()
        # RECOVER-WAIT: unresponsive (section 8.6.1).
        await primary.waitState(REL, "recover-wait", 20, details=servers.details)
        with self.assertRaises(NoReply):
            await acquire(toPrimary, 999, False, names, timeout=0.5, attempts=2)
        await servers.waitNormal(REL, "primary", "secondary", timeout=60)
        normalAfter = time.monotonic() - restarted
        primaryStates = since(loggedStates(primary, REL), beforeRestart)
        secondaryStates = since(loggedStates(secondary, REL), before)
        details = self.details(servers)
        self.assertEqual(
            primaryStates,
            ["startup", "recover", "recover-wait", "recover-done", NORMAL],
            details,
        )
        self.assertEqual(
            secondaryStates, [COMMUNICATIONS_INTERRUPTED, PARTNER_DOWN, NORMAL], details
        )
        stored = json.loads(primary.db.metadata()[f"failover.{REL}.state"])
        self.assertTrue(stored["synced"], stored)
        agreed = await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        active = self.assertInvariants(servers, clients, journal, self.details(servers))
        newDuid = primary.serverDuid()
        await self.finalRenew(toBoth, clients, names | {newDuid: "primary"})
        print(
            f"\n(b) primary database lost: {len(clients)} clients ({len(fresh)} new in"
            f" PARTNER-DOWN), {len(agreed)} records resent by UPDREQALL and agreed,"
            f" {active} ACTIVE; NORMAL {normalAfter:.1f}s after the restart (RECOVER-WAIT ="
            f" MCLT {MCLT}s); primary {primaryStates}; secondary {secondaryStates}; primary"
            f" DUID {'changed' if newDuid != oldDuid else 'kept'}"
        )


class PartitionTests(RecoveryTestCase):
    """The partner link is cut while clients reach both servers."""

    async def test_partitionBothServeThenHeal(self) -> None:
        """
        The link is blackholed (no byte passes, new connections hang):
        both servers notice by keepalive and go COMMUNICATIONS-INTERRUPTED;
        clients behind a relay configured with both servers keep being
        served by both (new clients get leases capped at MCLT, from each
        server's own half, and renew them), clients relayed to one server
        only too.  Healed, both go straight to NORMAL (section 8.9.2: the
        partner is COMMUNICATIONS-INTERRUPTED), the databases agree, and no
        lease was given to two clients.
        """
        servers, link = await self.pair(proxy=True)
        assert link is not None
        primary, secondary = servers.primary, servers.secondary
        journal = Journal()
        toBoth = Relay(self, "to-both", [primary, secondary], LINK, journal)
        toPrimary = Relay(self, "to-primary", [primary], LINK, journal)
        toSecondary = Relay(self, "to-secondary", [secondary], LINK, journal)
        names = self.names(servers)
        clients = await self.bind(toBoth, range(1, 13), names)
        self.assertEqual({h.server for h in clients.values()}, {"primary"})
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        await self.renewAll(toBoth, clients.values(), names, valid=VALID, what="NORMAL")
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)

        counts = {s.name: len(loggedStates(s, REL)) for s in (primary, secondary)}
        cut = time.monotonic()
        await link.cut("blackhole")
        detected = await waitStates(
            servers,
            {"primary": COMMUNICATIONS_INTERRUPTED, "secondary": COMMUNICATIONS_INTERRUPTED},
            15,
            connected=False,
        )
        renewer = Renewer(toBoth, clients, names)
        renewer.start()
        self.addCleanup(renewer.stop)
        fresh = await self.bind(toBoth, range(101, 109), names)
        fresh |= await self.bind(toPrimary, range(201, 205), names)
        fresh |= await self.bind(toSecondary, range(301, 305), names)
        wrongHalf = [
            (n, h.server, h.keys)
            for n, h in fresh.items()
            if not h.pd and ownerOf(h.keys[0][0]) != h.server
        ]
        self.assertEqual(wrongHalf, [], "COMMUNICATIONS-INTERRUPTED allocated the partner's")
        capped = [(n, h.valid) for n, h in fresh.items() if h.valid > MCLT]
        self.assertEqual(capped, [], "new leases beyond MCLT in COMMUNICATIONS-INTERRUPTED")
        servedBy = sorted({h.server for h in fresh.values()})
        clients.update(fresh)
        await self.renewAll(toBoth, list(clients.values())[:12], names, what="partitioned")
        await sleep(max(0.0, cut + detected + 8.0 - time.monotonic()))
        partitionFor = time.monotonic() - cut

        healed = time.monotonic()
        await link.heal()
        normalAfter = await waitStates(
            servers, {"primary": NORMAL, "secondary": NORMAL}, 60, connected=True
        )
        states = {s.name: since(loggedStates(s, REL), counts[s.name]) for s in (primary, secondary)}
        details = self.details(servers, link)
        for name in ("primary", "secondary"):
            self.assertEqual(
                states[name], [COMMUNICATIONS_INTERRUPTED, NORMAL], f"{name}\n{details}"
            )
        await waitAgree(primary, secondary, REL, 30, inPools, servers.details)
        await renewer.stop()
        agreedAfter = time.monotonic() - healed
        active = self.assertInvariants(servers, clients, journal, self.details(servers, link))
        await self.finalRenew(toBoth, clients, names)
        print(
            f"\n(c) partition (blackhole) and heal: {len(clients)} clients ({len(fresh)} new"
            f" while partitioned, served by {servedBy}), {active} ACTIVE leases; both"
            f" COMMUNICATIONS-INTERRUPTED {detected:.1f}s after the cut; partition"
            f" {partitionFor:.1f}s; NORMAL {normalAfter:.1f}s after the heal, databases agreed"
            f" {agreedAfter:.1f}s after it; {renewer.renewed} renewals by the clients'"
            f" timers ({renewer.unanswered} unanswered); states {states};"
            f" {journal.grants()} grants in Replies; {len(journal.severalLeases())} IAs"
            f" granted two leases (a Request answered by both servers); {link.describe()}"
        )

    async def test_partnerDownWhilePartnerServes(self) -> None:
        """
        The dangerous case: the link is cut (connections closed, new ones
        refused), and the operator declares partner-down on the secondary
        while the primary, alive, keeps serving in
        COMMUNICATIONS-INTERRUPTED.  Both allocate, past MCLT.  Healed:
        both go to POTENTIAL-CONFLICT (section 8.4.2: PARTNER-DOWN meets
        COMMUNICATIONS-INTERRUPTED; 8.9.2: COMMUNICATIONS-INTERRUPTED meets
        PARTNER-DOWN), the primary to CONFLICT-DONE once it has the
        secondary's updates, the secondary to NORMAL once it has the
        primary's, the primary to NORMAL.  No address or prefix ACTIVE for
        two clients in the databases or in any two Replies with overlapping
        lifetimes; every client keeps its lease.
        """
        servers, link = await self.pair(proxy=True)
        assert link is not None
        primary, secondary = servers.primary, servers.secondary
        journal = Journal()
        toBoth = Relay(self, "to-both", [primary, secondary], LINK, journal)
        toPrimary = Relay(self, "to-primary", [primary], LINK, journal)
        toSecondary = Relay(self, "to-secondary", [secondary], LINK, journal)
        names = self.names(servers)
        clients = await self.bind(toBoth, range(1, 13), names)
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)
        await self.renewAll(toBoth, clients.values(), names, valid=VALID, what="NORMAL")
        await waitAgree(primary, secondary, REL, 20, inPools, servers.details)

        counts = {s.name: len(loggedStates(s, REL)) for s in (primary, secondary)}
        cut = time.monotonic()
        await link.cut("refuse")
        detected = await waitStates(
            servers,
            {"primary": COMMUNICATIONS_INTERRUPTED, "secondary": COMMUNICATIONS_INTERRUPTED},
            10,
            connected=False,
        )
        done = secondary.ctl("partner-down", REL, "--yes")
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        entry = await secondary.waitState(REL, PARTNER_DOWN, 5, details=servers.details)
        downSince = float(entry["state_since"])
        renewer = Renewer(toBoth, clients, names)
        renewer.start()
        self.addCleanup(renewer.stop)
        fresh = await self.bind(toPrimary, range(201, 207), names)
        fresh |= await self.bind(toSecondary, range(301, 307), names)
        fresh |= await self.bind(toBoth, range(101, 105), names)
        # Invariant 3: the primary (COMMUNICATIONS-INTERRUPTED) caps new
        # leases at MCLT; the secondary (PARTNER-DOWN) does not.
        lifetimes = sorted({(h.server, h.valid) for h in fresh.values()})
        self.assertEqual(
            [x for x in lifetimes if (x[1] > MCLT if x[0] == "primary" else x[1] != VALID)],
            [],
            f"new lifetimes by server: {lifetimes}",
        )
        clients.update(fresh)
        await self.renewAll(toBoth, list(clients.values())[:12], names, what="partitioned")
        # Past MCLT in PARTNER-DOWN, more clients on each side.
        await sleep(max(0.0, downSince + MCLT + 0.5 - time.time()))
        late = await self.bind(toSecondary, range(307, 313), names)
        late |= await self.bind(toPrimary, range(207, 213), names)
        clients.update(late)
        fresh |= late
        stillInterrupted = primary.relationship(REL)
        assert stillInterrupted is not None
        self.assertEqual(stillInterrupted["state"], COMMUNICATIONS_INTERRUPTED)
        partitionFor = time.monotonic() - cut

        healed = time.monotonic()
        await link.heal()
        normalAfter = await waitStates(
            servers, {"primary": NORMAL, "secondary": NORMAL}, 60, connected=True
        )
        states = {s.name: since(loggedStates(s, REL), counts[s.name]) for s in (primary, secondary)}
        details = self.details(servers, link)
        self.assertEqual(
            states["primary"],
            [COMMUNICATIONS_INTERRUPTED, POTENTIAL_CONFLICT, "conflict-done", NORMAL],
            details,
        )
        self.assertEqual(
            states["secondary"],
            [COMMUNICATIONS_INTERRUPTED, PARTNER_DOWN, POTENTIAL_CONFLICT, NORMAL],
            details,
        )
        await waitAgree(primary, secondary, REL, 30, inPools, servers.details)
        await renewer.stop()
        agreedAfter = time.monotonic() - healed
        active = self.assertInvariants(servers, clients, journal, self.details(servers, link))
        await self.finalRenew(toBoth, clients, names)
        bySide = {
            side: sum(1 for h in fresh.values() if h.server == side)
            for side in ("primary", "secondary")
        }
        print(
            f"\n(d) partner-down while the partner serves: {len(clients)} clients"
            f" ({len(fresh)} new while partitioned: {bySide}), {active} ACTIVE leases;"
            f" partition {partitionFor:.1f}s (PARTNER-DOWN from {downSince:.0f},"
            f" detected {detected:.1f}s after the cut); NORMAL {normalAfter:.1f}s after the"
            f" heal, databases agreed {agreedAfter:.1f}s after it; {renewer.renewed} renewals"
            f" ({renewer.unanswered} unanswered); states {states}; {journal.grants()} grants"
            f" in Replies; {len(journal.severalLeases())} IAs granted two leases (a Request"
            f" answered by both servers)"
        )


#: The real client's link (its own prefixes: other tests use theirs).
LAN = IPv6Network("fd6a:5e1f:f::/64")
LAN_PD = IPv6Network("fd6a:5e1f:f100::/48")
LAN_PRIMARY = LAN.network_address + 1
LAN_SECONDARY = LAN.network_address + 2
LAN_T1, LAN_T2, LAN_PREFERRED, LAN_VALID = 3, 5, 12, 20


class RealClientPartitionTests(TestCase):
    """ISC dhclient on a link shared with both servers, the partner link cut."""

    timeout = 120

    def setUp(self) -> None:
        reason = skipReason(DHCLIENT, "tcpdump") or serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def test_dhclientThroughPartition(self) -> None:
        """
        C{dhclient -6 -N -P} on a bridge with the primary and the secondary
        (its Renews are multicast: both servers receive them), the partner
        link going through the test's proxy in the primary's namespace.
        Bound by the primary and replicated, then the link is blackholed:
        both servers go COMMUNICATIONS-INTERRUPTED and both answer the
        client's Renews, with the same address and prefix.  Healed: both
        NORMAL again, the databases agree and hold the client's address
        and prefix ACTIVE for it; every hook call of dhclient kept them.
        """
        directory = tempDir(self)
        link = await sharedLink(
            self, [("prim", "lan0", None), ("sec", "lan0", None), ("cli", "c0", CLIENT_MAC)]
        )
        primNs, _ = link["prim"]
        secNs, _ = link["sec"]
        cliNs, _ = link["cli"]
        primNs.addAddress("lan0", f"{LAN_PRIMARY}/64")
        secNs.addAddress("lan0", f"{LAN_SECONDARY}/64")
        pki = PKI(directory / "pki")
        sockets = shortDirectory(self)
        lan = Subnet(
            "lan",
            LAN,
            interface="lan0",
            pools=[poolOf(LAN, 0x1000, 0x1FFF)],
            pdPools=[(LAN_PD, 56)],
            preferred=LAN_PREFERRED,
            valid=LAN_VALID,
            t1=LAN_T1,
            t2=LAN_T2,
        )
        pCert, pKey = pki.server("primary", dns=[identityOf("primary")])
        sCert, sKey = pki.server("secondary", dns=[identityOf("secondary")])
        primary = FailoverServer(
            self, "primary", directory / "primary", sockets, subnets=[lan],
            relationships=[Relationship(REL, "primary", ["lan"], pCert, pKey, pki.caPath,
                                        identityOf("secondary"), partnerAddress="::1",
                                        partnerPort=PROXY_PORT, mclt=MCLT)],
            ns=primNs, address="::", port=547, interfaces=["lan0"],
        )  # fmt: skip
        secondary = FailoverServer(
            self, "secondary", directory / "secondary", sockets, subnets=[lan],
            relationships=[Relationship(REL, "secondary", ["lan"], sCert, sKey, pki.caPath,
                                        identityOf("primary"), partnerAddress=str(LAN_PRIMARY),
                                        listenAddress=str(LAN_SECONDARY), listenPort=647,
                                        mclt=MCLT)],
            ns=secNs, address="::", port=547, interfaces=["lan0"],
        )  # fmt: skip
        servers = Servers(directory, None, pki, {"primary": primary, "secondary": secondary})
        proxy = PartnerLinkProxy(self, primNs, PROXY_PORT, (str(LAN_SECONDARY), 647))
        proxy.listen()
        capture = Capture(self, cliNs, "c0", directory / "client.pcap")
        await capture.started()
        secondary.start()
        primary.start()
        await secondary.ready()
        await primary.ready()
        await servers.waitNormal(REL, "primary", "secondary")
        names = {primary.serverDuid(): "primary", secondary.serverDuid(): "secondary"}

        def details() -> str:
            return servers.details() + "\n" + proxy.describe() + "\n" + capture.text(40)

        client = DHClient(cliNs, "c0", directory / "dhclient")
        client.start(self, ("-N", "-P"))
        index, bound = await client.waitEvent({"BOUND6"}, 30)
        _, bound2 = await client.waitEvent({"BOUND6"}, 15, after=index + 1)
        both = {**bound, **bound2}
        address = IPv6Address(both["new_ip6_address"])
        prefix = IPv6Network(both["new_ip6_prefix"])
        duid = dhclientBytes(bound["new_dhcp6_client_id"])
        keys = {(address, 128), (prefix.network_address, prefix.prefixlen)}

        def replicated() -> bool:
            have = secondary.db.bindings()
            return all(
                have.get(k, ("", "", "", 0))[1:3] == ("active", duid.hex()) for k in keys
            ) and not primary.db.pendingCount(REL)

        await waitFor(replicated, 15, "the client's leases on the secondary", details=details)

        counts = {s.name: len(loggedStates(s, REL)) for s in (primary, secondary)}
        cutAt = time.time()
        cut = time.monotonic()
        await proxy.cut("blackhole")
        detected = await waitStates(
            servers,
            {"primary": COMMUNICATIONS_INTERRUPTED, "secondary": COMMUNICATIONS_INTERRUPTED},
            15,
            connected=False,
        )

        def answeredByBoth() -> bool:
            repliers = {
                names.get(m.serverId or b"")
                for m in pcapMessages(capture.path)
                if m.time > cutAt + detected and m.message.msgType == wire.REPLY
            }
            return {"primary", "secondary"} <= repliers

        await waitFor(answeredByBoth, 20, "Replies from both servers", details=details)
        partitionFor = time.monotonic() - cut
        healed = time.monotonic()
        await proxy.heal()
        for server in (primary, secondary):
            await server.waitState(REL, NORMAL, 30, connected=True, details=details)
        normalAfter = time.monotonic() - healed
        await waitAgree(primary, secondary, REL, 20, details=details)
        states = {s.name: since(loggedStates(s, REL), counts[s.name]) for s in (primary, secondary)}
        for name in ("primary", "secondary"):
            self.assertEqual(states[name], [COMMUNICATIONS_INTERRUPTED, NORMAL], details())
        for server in (primary, secondary):
            have = server.db.bindings()
            for key in keys:
                self.assertEqual(have[key][1:3], ("active", duid.hex()), details())
        self.assertEqual(doubleActive([("primary", primary.db), ("secondary", secondary.db)]), [])
        events = client.events()[index:]
        kept = [
            (e["reason"], e.get("new_ip6_address"), e.get("new_ip6_prefix"))
            for e in events
            if e["reason"] in ("BOUND6", "RENEW6", "REBIND6")
        ]
        changed = [
            k
            for k in kept
            if (k[1] is not None and k[1] != str(address))
            or (k[2] is not None and k[2] != str(prefix))
        ]
        self.assertEqual(changed, [], client.diagnostics())
        self.assertNotIn("EXPIRE6", [e["reason"] for e in events], client.diagnostics())
        after = [
            m
            for m in pcapMessages(capture.path)
            if m.time > cutAt and m.message.msgType == wire.REPLY
        ]
        byServer = {
            name: sum(1 for m in after if names.get(m.serverId or b"") == name)
            for name in ("primary", "secondary")
        }
        print(
            f"\n(c, dhclient) dhclient -N -P through a partition: 1 client, 2 leases"
            f" ({address}, {prefix}); both COMMUNICATIONS-INTERRUPTED {detected:.1f}s after"
            f" the cut; partition {partitionFor:.1f}s; Replies since the cut by server"
            f" {byServer}; NORMAL {normalAfter:.1f}s after the heal; {len(kept)} hook calls,"
            f" all with the same address and prefix; states {states}"
        )
