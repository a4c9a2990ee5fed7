"""
Partial communication loss (RFC 7031 section 4.7, issue 4 item 5): a
server that loses its client-facing link while the partner link stays up
must not leave its clients unserved.

Topology (TESTING-NOTES.md): the client link is a bridge in a namespace of
its own joining the primary (C{lan0}), the secondary (C{lan0}) and four
client namespaces: ISC dhclient C{-6 -N} (an address), dhclient C{-6 -P} (a
prefix), dhcpcd (IA_NA 1 and IA_PD 2) and a handful of simulated clients
(L{dhcp6ha.chaos.clients.ClientPool} over a L{LinkTransport}, one address
and one prefix each).  The partners talk TLS over a link of their own: a
veth pair C{fo0} between the two servers' namespaces, so that taking the
primary's C{lan0} down (C{ip link set lan0 down} in its namespace, as a
failing network adapter) leaves the partner link up.  Captures on the
bridge's ports of both servers (C{b0}, C{b1}: their carrier goes, not the
capture).

Short timers: T1 4 s, T2 7 s, preferred 18 s, valid 20 s, MCLT 20 s,
heartbeat 1 s, unreachable-after 3 s (so the takeover window,
L{dhcp6ha.failover.machine.PartnerTraffic}, is 3 s).  Valid is 20 s rather
than 15 s because of the real clients' retransmission timers (RFC 8415
REN_TIMEOUT and REB_TIMEOUT are 10 s, +-10%): dhclient 4.4.3 sends its
Renew at T1 and its first Rebind only at the Renew's next retransmission,
about T1 + 10 s = 13-14 s after the last Reply (not at T2), and the next
Rebind about 10 s later, after the lease is gone either way; dhcpcd
rebinds at T2.  With 15 s a dhclient renewed just before the cut would have
one Rebind, 1-2 s before its lease ends; with 20 s it has about 6 s.  The
takeover itself needs about 6 s (the first refused message, the 3 s window,
the next CONTACT), well before that first Rebind.

Steps: the pair NORMAL over C{fo0}; every client bound by the primary and
renewed once by it (the secondary, which sees those Renews too, answered
nothing and did not take over: the primary's count grows); the primary's C{lan0} down for 2 x valid (40
s); the secondary must switch to C{responsive-for-partner}
(C{dhcp6ha-ctl --json status}), answer the clients' Renews and Rebinds with
the same address and prefix, replicate the renewals to the primary over
C{fo0}, and no client may lose a lease; the pair stays NORMAL and connected
throughout (status polled every 0.25 s, and exactly one connection in each
log).  Then the link comes back: the secondary leaves the mode once the
primary's C{clients_seen} grows, every client renews again with its
leases, both databases agree, and no address or prefix is ACTIVE for two
clients (in either database, across them, or in the clients' own view).

Needs root (namespaces), tcpdump, isc-dhcp-client and dhcpcd-base; skips
with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from dhcp6ha.chaos.clients import Behaviour, ClientPool, LinkTransport, Timing
from dhcp6ha.chaos.history import ClientReceived, ClientSent, HistoryRecorder
from tests.integration import wire
from tests.integration.clients import DHCLIENT, DHCPCD, ClientBase, DHClient, Dhcpcd, dhclientBytes
from tests.integration.netns import Capture, Namespace, skipReason, tempDir, waitFor
from tests.integration.pair import (
    NORMAL,
    Captured,
    FailoverServer,
    LeaseKey,
    LinkedPair,
    describeDB,
    pairOnSharedLink,
    pcapMessages,
    waitAgree,
)
from tests.integration.relayclient import leasesOf
from tests.integration.serverproc import serverSkipReason
from tests.integration.wire import duidLL

#: The client link: the primary at ::1, the secondary at ::2 (L{pairOnSharedLink}).
LAN = IPv6Network("fd6a:5e1f:47::/64")
LAN_PD = IPv6Network("fd6a:5e1f:4710::/48")
#: The partner link (C{fo0}), separate from the client link.
FO = IPv6Network("fd6a:5e1f:4f::/64")
RELATIONSHIP = "lan"
T1, T2, PREFERRED, VALID = 4, 7, 18, 20
MCLT = 20
HEARTBEAT, UNREACHABLE = 1.0, 3.0
#: How long the primary's client link stays down.
CUT = 2 * VALID
SIMULATED = 6

#: Hook reasons that mean a real client lost (or gave up) a lease.
LOSS_REASONS = frozenset(
    {"EXPIRE6", "RELEASE6", "STOP6", "PREINIT6", "FAIL6", "STOPPED", "NOCARRIER", "DEPARTED"}
)
RENEWED_REASONS = frozenset({"RENEW6", "REBIND6", "BOUND6", "REBOOT6"})

RFP = "responsive-for-partner"

MSG_NAMES = {wire.SOLICIT: "Solicit", wire.REQUEST: "Request", wire.RENEW: "Renew",
             wire.REBIND: "Rebind", wire.RELEASE: "Release", wire.REPLY: "Reply",
             wire.ADVERTISE: "Advertise", 11: "Information-request", 4: "Confirm"}  # fmt: skip


# --- the real clients ------------------------------------------------------------------


@dataclass
class RealClient:
    """One real client, its namespace, what it got bound to."""

    name: str
    ns: Namespace
    iface: str
    client: ClientBase
    keysOf: Callable[[dict[str, str]], set[LeaseKey]]
    duid: bytes = b""
    keys: set[LeaseKey] = field(default_factory=set)
    boundIndex: int = 0
    linkLocal: IPv6Address | None = None

    def lossEvents(self) -> list[str]:
        return [
            e["reason"]
            for e in self.client.events()[self.boundIndex :]
            if e["reason"] in LOSS_REASONS
        ]

    def renewedSince(self, mark: int) -> bool:
        """Has a Renew or Rebind been answered since hook record number C{mark}?"""
        return any(e["reason"] in ("RENEW6", "REBIND6") for e in self.client.events()[mark:])

    def renewals(self) -> list[tuple[str, set[LeaseKey]]]:
        """(reason, keys in it) of every renewal hook call after binding."""
        out = []
        for e in self.client.events()[self.boundIndex + 1 :]:
            if e["reason"] in RENEWED_REASONS:
                out.append((e["reason"], self.keysOf(e)))
        return out


def dhclientKeys(event: dict[str, str]) -> set[LeaseKey]:
    out: set[LeaseKey] = set()
    if event.get("new_ip6_address"):
        out.add((IPv6Address(event["new_ip6_address"]), 128))
    if event.get("new_ip6_prefix"):
        prefix = IPv6Network(event["new_ip6_prefix"])
        out.add((prefix.network_address, prefix.prefixlen))
    return out


def dhcpcdKeys(event: dict[str, str]) -> set[LeaseKey]:
    out: set[LeaseKey] = set()
    if event.get("new_dhcp6_ia_na1_ia_addr1"):
        out.add((IPv6Address(event["new_dhcp6_ia_na1_ia_addr1"]), 128))
    if event.get("new_dhcp6_ia_pd1_prefix1"):
        length = int(event.get("new_dhcp6_ia_pd1_prefix1_length", "0"))
        out.add((IPv6Address(event["new_dhcp6_ia_pd1_prefix1"]), length))
    return out


# --- watching the pair ----------------------------------------------------------------------


@dataclass
class Sample:
    """One poll of both servers' relationship status."""

    time: float  # wall clock
    phase: str
    primary: dict[str, Any] | None
    secondary: dict[str, Any] | None
    error: str | None = None


class Monitor:
    """
    Polls both servers' C{status} every C{interval} seconds (the library of
    C{dhcp6ha-ctl}, on the control socket) and what the simulated clients
    hold, with the current phase.
    """

    def __init__(
        self,
        primary: FailoverServer,
        secondary: FailoverServer,
        pool: Callable[[], ClientPool | None],
        interval: float = 0.25,
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.pool = pool
        self.phase = "setup"
        self.samples: list[Sample] = []
        #: per simulated client index: every distinct set of keys held, in order
        self.held: dict[int, list[frozenset[LeaseKey]]] = {}
        self._loop = LoopingCall(self.poll)
        self._interval = interval

    def start(self) -> None:
        self._loop.start(self._interval)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        entries: list[dict[str, Any] | None] = []
        error = None
        for server in (self.primary, self.secondary):
            try:
                entries.append(server.relationship(RELATIONSHIP))
            except Exception as e:  # noqa: BLE001 - recorded as a sample
                entries.append(None)
                error = f"{server.name}: {e!r}"
        self.samples.append(Sample(time.time(), self.phase, entries[0], entries[1], error))
        pool = self.pool()
        if pool is not None:
            for c in pool.clients:
                keys = frozenset(k for held in c.leases.values() for k in held)
                seen = self.held.setdefault(c.index, [])
                if not seen or seen[-1] != keys:
                    seen.append(keys)

    def notNormal(self) -> list[str]:
        """Samples in which either side was not NORMAL and connected."""
        out = []
        for s in self.samples:
            for name, entry in (("primary", s.primary), ("secondary", s.secondary)):
                if entry is None:
                    continue
                if entry.get("state") != NORMAL or entry.get("connected") is not True:
                    out.append(
                        f"{s.time:.2f} ({s.phase}) {name}: state {entry.get('state')}"
                        f" connected {entry.get('connected')}"
                    )
        return out

    def services(self, name: str) -> list[tuple[float, str, str]]:
        """(time, phase, service) at each change of C{name}'s service."""
        out: list[tuple[float, str, str]] = []
        for s in self.samples:
            entry = s.primary if name == "primary" else s.secondary
            if entry is None:
                continue
            service = str(entry.get("service"))
            if not out or out[-1][2] != service:
                out.append((s.time, s.phase, service))
        return out

    def errors(self) -> list[str]:
        return [f"{s.time:.2f} ({s.phase}) {s.error}" for s in self.samples if s.error]


# --- the topology -----------------------------------------------------------------------------


@dataclass
class Topology(LinkedPair):
    captures: dict[str, Capture]
    monitor: Monitor | None = None
    extra: list[Callable[[], str]] = field(default_factory=list)

    def statuses(self) -> str:
        parts = []
        for server in (self.primary, self.secondary):
            try:
                parts.append(f"{server.name}: {json.dumps(server.relationship(RELATIONSHIP))}")
            except Exception as e:  # noqa: BLE001 - diagnostics only
                parts.append(f"{server.name}: status failed: {e!r}")
        return "--- status ---\n" + "\n".join(parts)

    def details(self) -> str:
        parts = [self.servers.details(), self.statuses()]
        if self.monitor is not None:
            parts.append(
                "--- service changes --- primary "
                f"{self.monitor.services('primary')} secondary {self.monitor.services('secondary')}"
            )
        parts += [f() for f in self.extra]
        parts += [c.text(40) for c in self.captures.values()]
        return "\n".join(parts)


def describeExchange(
    message: Captured, replies: list[Captured], names: dict[bytes, str], since: float
) -> str:
    """
    One client message and the Advertises and Replies to it (by transaction
    id) in C{replies}, the servers' messages of both captures.
    """
    m = message
    kind = MSG_NAMES.get(m.message.msgType, str(m.message.msgType))
    named = m.serverId
    text = f"{m.time - since:+.1f}s {kind}"
    if named is not None:
        text += f"(->{names.get(named, named.hex()[:8])})"
    replies = [
        r
        for r in replies
        if r.time >= m.time
        and r.message.msgType in (wire.REPLY, wire.ADVERTISE)
        and r.message.xid == m.message.xid
        and r.destination == m.source
    ]
    if not replies:
        return text + ": -"
    out = []
    for r in replies:
        granted = ",".join(f"{x.address}/{x.prefixLength}:{x.valid}s" for x in leasesOf(r.message))
        status = r.message.status
        out.append(
            f"{names.get(r.serverId or b'', '?')}"
            + (f" status {status}" if status not in (None, 0) else "")
            + f" [{granted}]"
        )
        if status not in (None, 0) or not granted:
            for ia in r.message.ias():
                out.append(f"(IA status {ia.status})")
    return text + ": " + "; ".join(out)


class PartialLossTests(TestCase):
    """The primary's client link down for 2 x valid, the partner link up."""

    timeout = 300
    _recorder: HistoryRecorder

    def setUp(self) -> None:
        reason = skipReason(DHCLIENT, DHCPCD, "tcpdump") or serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def topology(self, members: list[tuple[str, str, str | None]]) -> Topology:
        """The client link, the partner link, the pair on both (NORMAL over C{fo0})."""
        directory = tempDir(self)
        pair = await pairOnSharedLink(
            self, directory, members, lan=LAN, lanPD=LAN_PD, preferred=PREFERRED, valid=VALID,
            t1=T1, t2=T2, relationship=RELATIONSHIP, partnerLink=FO, mclt=MCLT,
            heartbeat=HEARTBEAT, unreachableAfter=UNREACHABLE,
        )  # fmt: skip
        # The bridge's ports of the servers: b0 (primary), b1 (secondary).
        captures = {
            "primary": Capture(self, pair.link.bridge, "b0", directory / "primary-port.pcap"),
            "secondary": Capture(self, pair.link.bridge, "b1", directory / "secondary-port.pcap"),
        }
        for capture in captures.values():
            await capture.started()
        await pair.servers.startNormal(RELATIONSHIP)
        return Topology(directory, pair.link, pair.servers, captures)

    def startSimulated(self, topo: Topology, ns: Namespace, iface: str) -> ClientPool:
        """The simulated clients on the link (NA and PD each), recorded to history.jsonl."""
        history = open(topo.directory / "history.jsonl", "w")  # noqa: SIM115
        self.addCleanup(history.close)
        recorder = HistoryRecorder(reactor, history)
        transport = LinkTransport(str(ns.ifindex(iface)))
        with ns.entered():
            port = reactor.listenUDP(546, transport, interface="::")  # type: ignore[attr-defined]
        # RFC 8415 timers scaled down: Renew and Rebind retransmitted every 2-4 s.
        timing = Timing().scaled(0.2)
        pool = ClientPool(
            reactor,
            transport,
            recorder,
            seed=4705,
            count=SIMULATED,
            behaviour=Behaviour(na=True, pd=True, start_spread=1.0),
            timing=timing,
        )

        def stop() -> None:
            pool.stop()
            port.stopListening()

        self.addCleanup(stop)
        pool.start()
        self._recorder = recorder
        return pool

    async def test_primaryClientLinkDown(self) -> None:
        """
        The primary's client-facing link down for 2 x valid lifetime while
        the partner link stays up: the secondary serves the primary's
        clients (C{responsive-for-partner}) with their own addresses and
        prefixes, replicated to the primary; no client loses a lease; the
        pair stays NORMAL; once the link is back the secondary stops, and
        no lease is held twice.
        """
        dhcpcdIface = f"d6p{os.getpid() % 100000}"
        macs = {"na": "02:6a:5e:1f:00:11", "pd": "02:6a:5e:1f:00:12", "dc": "02:6a:5e:1f:00:13"}
        topo = await self.topology(
            [
                ("cna", "c0", macs["na"]),
                ("cpd", "c0", macs["pd"]),
                ("cdc", dhcpcdIface, macs["dc"]),
                ("sim", "c0", "02:6a:5e:1f:00:14"),
            ]
        )
        primary, secondary = topo.primary, topo.secondary
        primaryDuid, secondaryDuid = primary.serverDuid(), secondary.serverDuid()
        names = {primaryDuid: "primary", secondaryDuid: "secondary"}
        primNs, _ = topo.link["prim"]
        poolHolder: list[ClientPool] = []
        monitor = Monitor(primary, secondary, lambda: poolHolder[0] if poolHolder else None)
        topo.monitor = monitor
        monitor.start()
        self.addCleanup(monitor.stop)
        connectedBefore = {
            s.name: len(s.logLines("connected to the partner")) for s in (primary, secondary)
        }

        # --- clients bind with the primary ------------------------------------------
        clients: list[RealClient] = []
        for name, nsName, iface, keysOf in (
            ("dhclient -6 -N", "cna", "c0", dhclientKeys),
            ("dhclient -6 -P", "cpd", "c0", dhclientKeys),
            ("dhcpcd (ia_na 1, ia_pd 2)", "cdc", dhcpcdIface, dhcpcdKeys),
        ):
            ns, _ = topo.link[nsName]
            directory = topo.directory / nsName
            client: ClientBase
            if nsName == "cdc":
                duid = duidLL(0x5E1F47)
                client = Dhcpcd(ns, iface, directory, duid)
                client.start(self, iaNA=1, iaPD=2)
            else:
                duid = b""
                client = DHClient(ns, iface, directory)
                client.start(self, ("-N",) if nsName == "cna" else ("-P",))
            clients.append(RealClient(name, ns, iface, client, keysOf, duid))
            topo.extra.append(client.diagnostics)
        simNs, simIface = topo.link["sim"]
        pool = self.startSimulated(topo, simNs, simIface)
        poolHolder.append(pool)

        for rc in clients:
            index, bound = await rc.client.waitEvent({"BOUND6"}, 30)
            rc.boundIndex = index
            rc.keys = rc.keysOf(bound)
            if not rc.duid:
                rc.duid = dhclientBytes(bound["new_dhcp6_client_id"])
            rc.linkLocal = IPv6Address(rc.ns.linkLocal(rc.iface) or "::")
            self.assertTrue(rc.keys, f"{rc.name}: nothing bound: {bound}")

        def simBound() -> bool:
            return all(all(c.leases.values()) for c in pool.clients)

        await waitFor(simBound, 30, "every simulated client bound", details=topo.details)
        simKeys = {c.index: {k for held in c.leases.values() for k in held} for c in pool.clients}
        simIaids = {c.index: dict(c.ias) for c in pool.clients}

        # Everything on both databases, from the primary (the secondary answered nothing).
        expected: dict[LeaseKey, tuple[str, str]] = {}
        for rc in clients:
            for key in rc.keys:
                expected[key] = ("active", rc.duid.hex())
        for c in pool.clients:
            for key in simKeys[c.index]:
                expected[key] = ("active", c.duid.hex())

        def replicated() -> bool:
            for server in (primary, secondary):
                have = server.db.bindings()
                if any(have.get(k, ("", "", "", 0))[1:3] != v for k, v in expected.items()):
                    return False
            return not (primary.db.pendingKeys(RELATIONSHIP) & set(expected))

        await waitFor(replicated, 15, "every binding on both servers", details=topo.details)
        # One renewal with the primary reachable: the secondary sees these
        # Renews (naming the primary) too, but the primary's count grows, so
        # it must not take over.
        for rc in clients:
            await waitFor(
                partial(rc.renewedSince, rc.boundIndex + 1),
                T1 + 12,
                f"{rc.name}: a renewal before the cut",
                details=topo.details,
            )
        sentBySecondary = [
            m
            for m in pcapMessages(topo.captures["secondary"].path)
            if m.sourcePort == 547 and m.serverId == secondaryDuid
        ]
        self.assertEqual(sentBySecondary, [], "the secondary answered before the cut")
        self.assertNotIn(RFP, [s for _, _, s in monitor.services("secondary")])

        # --- the cut ---------------------------------------------------------------
        marksAtCut = {rc.name: len(rc.client.events()) for rc in clients}
        monitor.phase = "cut"
        cutAt = time.time()
        primNs.run("ip", "link", "set", "lan0", "down")
        cutMono = time.monotonic()

        entry = await secondary.waitRelationship(
            RELATIONSHIP,
            lambda e: e.get("service") == RFP,
            T1 + UNREACHABLE + 3 * HEARTBEAT + 5,
            RFP,
            details=topo.details,
        )
        takeoverAfter = time.monotonic() - cutMono
        self.assertEqual((entry["state"], entry["connected"]), (NORMAL, True))
        ctl = secondary.ctlStatus()  # the real dhcp6ha-ctl --json status
        [ctlEntry] = [r for r in ctl["relationships"] if r["name"] == RELATIONSHIP]
        self.assertEqual(
            (ctlEntry["state"], ctlEntry["connected"], ctlEntry["service"]),
            (NORMAL, True, RFP),
            json.dumps(ctl),
        )
        ctlPrimary = primary.ctlStatus()
        [ctlPrimaryEntry] = [r for r in ctlPrimary["relationships"] if r["name"] == RELATIONSHIP]
        self.assertEqual((ctlPrimaryEntry["state"], ctlPrimaryEntry["connected"]), (NORMAL, True))
        takeoverLog = secondary.logLines("serving its clients until")

        # Every client renewed (by the secondary: the primary hears nothing).
        for rc in clients:
            await waitFor(
                partial(rc.renewedSince, marksAtCut[rc.name]),
                T2 + 2 * 11 + 5,
                f"{rc.name}: a renewal answered after the cut",
                details=topo.details,
            )

        def simRenewed() -> bool:
            return all(
                any(
                    isinstance(e, ClientReceived)
                    and e.client == c.duid
                    and e.time > cutAt
                    and e.server == secondaryDuid
                    and e.msg_type == "REPLY"
                    for e in self._recorder.events
                )
                for c in pool.clients
            )

        await waitFor(simRenewed, T2 + 15, "a Reply from the secondary to every simulated client",
                      details=topo.details)  # fmt: skip

        # The renewals reach the primary over the partner link.
        def renewedOnPrimary() -> bool:
            leases = {(x.address, x.prefix_length): x for x in primary.db.leases()}
            for key, (state, duid) in expected.items():
                x = leases.get(key)
                if x is None or (x.state, x.duid.hex()) != (state, duid) or x.cltt <= cutAt:
                    return False
            return True

        await waitFor(
            renewedOnPrimary, 15, "the renewals on the primary's database", details=topo.details
        )
        replicatedAfter = time.monotonic() - cutMono

        await waitFor(
            lambda: time.monotonic() - cutMono >= CUT, CUT + 5, "the end of the cut", interval=0.5
        )
        # Still in takeover mode, still NORMAL: the primary never received anything.
        last = secondary.relationship(RELATIONSHIP)
        assert last is not None
        self.assertEqual((last["state"], last["connected"], last["service"]),
                         (NORMAL, True, RFP), topo.details())  # fmt: skip

        # The renewals go on reaching the primary: every binding renewed lately.
        def recentOnPrimary() -> bool:
            leases = {(x.address, x.prefix_length): x for x in primary.db.leases()}
            recent = time.time() - 2 * T2
            return all(k in leases and leases[k].cltt > recent for k in expected)

        await waitFor(
            recentOnPrimary, 10, "recent renewals on the primary's database", details=topo.details
        )
        dbDuringCut = {
            "primary": describeDB(primary.db),
            "secondary": describeDB(secondary.db),
        }

        # --- the link comes back -------------------------------------------------------
        monitor.phase = "restored"
        restoredAt = time.time()
        primNs.run("ip", "link", "set", "lan0", "up")
        restoredMono = time.monotonic()
        await secondary.waitRelationship(
            RELATIONSHIP,
            lambda e: e.get("service") == "renew-responsive",
            T2 + 15,
            "renew-responsive again",
            details=topo.details,
        )
        leftAfter = time.monotonic() - restoredMono
        endedLog = secondary.logLines("no longer serving its clients")
        marksAtEnd = {rc.name: len(rc.client.events()) for rc in clients}

        # Every client renews once more after the restore, with the same leases.
        for rc in clients:
            await waitFor(
                partial(rc.renewedSince, marksAtEnd[rc.name]),
                T2 + 2 * 11 + 5,
                f"{rc.name}: a renewal after the restore",
                details=topo.details,
            )
        monitor.stop()
        pool.stop()
        primaryDB = primary.db.bindings()
        agreed = await waitAgree(primary, secondary, RELATIONSHIP, 20, details=topo.details)

        # --- what happened -----------------------------------------------------------
        failures: list[str] = []
        notNormal = monitor.notNormal()
        if notNormal:
            failures.append("the pair left NORMAL/connected:\n  " + "\n  ".join(notNormal[:20]))
        connectedAfter = {
            s.name: len(s.logLines("connected to the partner")) for s in (primary, secondary)
        }
        if connectedAfter != connectedBefore:
            failures.append(
                f"the partner connection was made again: {connectedBefore} -> {connectedAfter}"
            )
        for rc in clients:
            lost = rc.lossEvents()
            if lost:
                failures.append(f"{rc.name}: lease lost ({lost})")
            for reason, keys in rc.renewals():
                if keys != rc.keys:
                    failures.append(f"{rc.name}: {reason} with {keys}, bound to {rc.keys}")
        for c in pool.clients:
            held = monitor.held.get(c.index, [])
            after = [h for h in held if h]
            if any(h != frozenset(simKeys[c.index]) for h in after) or (held and not held[-1]):
                failures.append(
                    f"simulated client {c.index}: held {held}, bound to {simKeys[c.index]}"
                )
            solicits = [
                e
                for e in self._recorder.events
                if isinstance(e, ClientSent)
                and e.client == c.duid
                and e.msg_type in ("SOLICIT", "REQUEST")
                and e.time > cutAt
            ]
            if solicits:
                failures.append(
                    f"simulated client {c.index}: {len(solicits)} Solicit/Request after the cut"
                )
        # No lease for two clients: in the clients' view...
        holders: dict[LeaseKey, list[str]] = {}
        for rc in clients:
            for key in rc.keys:
                holders.setdefault(key, []).append(rc.name)
        for c in pool.clients:
            for key in simKeys[c.index]:
                holders.setdefault(key, []).append(f"sim {c.index}")
        twice = {k: v for k, v in holders.items() if len(v) > 1}
        if twice:
            failures.append(f"held by two clients: {twice}")
        networks = sorted(
            (IPv6Network(f"{a}/{n}"), who) for (a, n), v in holders.items() for who in v
        )
        for i, (net, who) in enumerate(networks):
            for other, otherWho in networks[i + 1 :]:
                if net.overlaps(other) and who != otherWho:
                    failures.append(f"{net} ({who}) overlaps {other} ({otherWho})")
        # ... and in the databases: one holder per key across both, and each
        # client's leases ACTIVE for it alone.
        secondaryDB = secondary.db.bindings()
        for key in set(primaryDB) & set(secondaryDB):
            a, b = primaryDB[key], secondaryDB[key]
            if a[1] == b[1] == "active" and (a[2], a[3]) != (b[2], b[3]):
                failures.append(
                    f"{key}: ACTIVE for {a[2:]} on the primary, {b[2:]} on the secondary"
                )
        activeBy: Counter[tuple[str, str, int]] = Counter()
        for kind, state, holder, iaid in agreed.values():
            if state == "active":
                activeBy[(kind, holder, iaid)] += 1
        many = {k: n for k, n in activeBy.items() if n > 1}
        if many:
            failures.append(f"IAs with more than one ACTIVE binding: {many}")
        for key, want in expected.items():
            got = agreed.get(key)
            if got is None or (got[1], got[2]) != want:
                failures.append(f"{key}: {got} at the end, expected {want}")
        if not takeoverLog:
            failures.append("no 'serving its clients' warning in the secondary's log")
        if not endedLog:
            failures.append("no 'no longer serving its clients' line in the secondary's log")

        # --- the report ------------------------------------------------------------------
        report = self._report(
            topo, clients, pool, names, cutAt, restoredAt, simKeys, simIaids,
            takeoverAfter=takeoverAfter, replicatedAfter=replicatedAfter, leftAfter=leftAfter,
        )  # fmt: skip
        (topo.directory / "report.txt").write_text(report)
        (topo.directory / "details.txt").write_text(topo.details())
        print("\n" + report)
        if failures:
            self.fail(
                "\n".join(failures)
                + "\n"
                + report
                + "\n--- databases during the cut ---\n"
                + "\n".join(dbDuringCut.values())
                + "\n"
                + topo.details()
            )

    # --- helpers -----------------------------------------------------------------------

    def _report(
        self,
        topo: Topology,
        clients: list[RealClient],
        pool: ClientPool,
        names: dict[bytes, str],
        cutAt: float,
        restoredAt: float,
        simKeys: dict[int, set[LeaseKey]],
        simIaids: dict[int, dict[str, int]],
        *,
        takeoverAfter: float,
        replicatedAfter: float,
        leftAfter: float,
    ) -> str:
        monitor = topo.monitor
        assert monitor is not None
        lines = [
            f"partial communication loss: T1 {T1}s T2 {T2}s preferred {PREFERRED}s valid"
            f" {VALID}s MCLT {MCLT}s heartbeat {HEARTBEAT:g}s unreachable-after"
            f" {UNREACHABLE:g}s; primary's lan0 down for {restoredAt - cutAt:.1f}s",
            f"secondary responsive-for-partner {takeoverAfter:.1f}s after the cut; every"
            f" renewal on the primary's database {replicatedAfter:.1f}s after the cut;"
            f" secondary renew-responsive again {leftAfter:.1f}s after the restore",
            "secondary service changes: "
            + ", ".join(f"{t - cutAt:+.1f}s {s}" for t, _, s in monitor.services("secondary")),
            "primary service changes: "
            + ", ".join(f"{t - cutAt:+.1f}s {s}" for t, _, s in monitor.services("primary")),
            f"status samples: {len(monitor.samples)}, not NORMAL/connected:"
            f" {len(monitor.notNormal())}, errors: {len(monitor.errors())}",
        ]
        secondaryMessages = pcapMessages(topo.captures["secondary"].path)
        primaryMessages = pcapMessages(topo.captures["primary"].path)
        duringCut = [m for m in primaryMessages if cutAt + 0.5 < m.time < restoredAt]
        # Client messages are multicast (both ports see them); each server's
        # answers are unicast to the client (its own port only).
        serverMessages = sorted(
            (m for m in primaryMessages + secondaryMessages if m.sourcePort == 547),
            key=lambda m: m.time,
        )
        lines.append(f"frames on the primary's bridge port during the cut: {len(duringCut)}")
        for rc in clients:
            lines.append(
                f"{rc.name}: bound to {sorted(f'{a}/{n}' for a, n in rc.keys)};"
                f" hook reasons since binding:"
                f" {[e['reason'] for e in rc.client.events()[rc.boundIndex :]]}"
            )
            for m in secondaryMessages:
                if m.sourcePort == 546 and m.source == rc.linkLocal:
                    lines.append("    " + describeExchange(m, serverMessages, names, cutAt))
        sent: Counter[tuple[str, str]] = Counter()
        replies: Counter[tuple[str, str]] = Counter()
        for e in self._recorder.events:
            if not isinstance(e, (ClientSent, ClientReceived)):
                continue
            phase = "before" if e.time < cutAt else "cut" if e.time < restoredAt else "after"
            if isinstance(e, ClientSent):
                sent[(phase, e.msg_type)] += 1
            elif isinstance(e, ClientReceived):
                replies[(phase, names.get(e.server or b"", "?"))] += 1
        lines.append(
            f"{SIMULATED} simulated clients (NA+PD each): sent {dict(sent)}; answers {dict(replies)}"
        )
        valids = sorted(
            {
                lease.valid
                for e in self._recorder.events
                if isinstance(e, ClientReceived) and cutAt < e.time < restoredAt
                for ia in e.ias
                for lease in ia.leases
            }
        )
        lines.append(
            f"valid lifetimes the secondary gave the simulated clients during the cut: {valids}"
        )
        for c in pool.clients:
            lines.append(
                f"    sim {c.index}: {sorted(f'{a}/{n}' for a, n in simKeys[c.index])}"
                f" held {len(monitor.held.get(c.index, []))} distinct set(s)"
            )
        return "\n".join(lines)
