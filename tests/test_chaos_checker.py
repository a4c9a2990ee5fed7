"""
Tests for L{dhcp6ha.chaos.checker}: hand-made histories with each kind of
violation are caught, clean ones (and the legitimate edge cases) pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.chaos.checker import (
    Invariant,
    Violation,
    check,
    checkHistory,
    describeEvent,
    formatReport,
)
from dhcp6ha.chaos.history import (
    FAULT_KILL,
    FAULT_LOSE_DATABASE,
    FAULT_PARTNER_DOWN,
    NA,
    PD,
    BindingRecord,
    ClientReceived,
    ClientSent,
    DatabaseDump,
    Event,
    FaultEvent,
    IAEntry,
    LeaseEntry,
    Note,
    RunHeader,
    ServerInfo,
    ServerStateObserved,
    dumps,
    loads,
)

S1 = b"\x00\x02\x00\x00\x00\x09primary"
S2 = b"\x00\x02\x00\x00\x00\x09secondary"
A = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01"
B = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x02"
L1 = "2001:db8:1::101"
L2 = "2001:db8:1::102"
P1 = "2001:db8:100:100::/56"
T0 = 1000.0
MCLT = 30.0


def lease(
    text: str, valid: int = 0, preferred: int | None = None, status: int | None = None
) -> LeaseEntry:
    """An IA Address (text without a length) or IA Prefix (with one)."""
    if "/" in text:
        network = IPv6Network(text)
        address, length = network.network_address, network.prefixlen
    else:
        address, length = IPv6Address(text), 128
    if preferred is None:
        preferred = valid // 2
    return LeaseEntry(address, length, preferred, valid, status)


def na(iaid: int = 1, *leases: LeaseEntry, status: int | None = None) -> IAEntry:
    return IAEntry(NA, iaid, 0, 0, status, leases)


def pd(iaid: int = 1, *leases: LeaseEntry, status: int | None = None) -> IAEntry:
    return IAEntry(PD, iaid, 0, 0, status, leases)


def record(
    text: str,
    client: bytes,
    expires: float,
    iaid: int = 1,
    state: str = "active",
    cltt: float = T0 - 100,
    kind: str = NA,
) -> BindingRecord:
    entry = lease(text)
    return BindingRecord(
        kind, entry.address, entry.prefix_length, state, client, iaid, expires, cltt, 0.0
    )


class History:
    """A hand-made history: a header, then exchanges, faults, states and dumps."""

    def __init__(self, **header: Any) -> None:
        self.header = evolve(
            RunHeader(
                seed=4242,
                started=T0,
                mclt=MCLT,
                max_valid_lifetime=120,
                servers=(ServerInfo("primary", S1), ServerInfo("secondary", S2)),
                command=("python", "-m", "dhcp6ha.chaos", "--seed", "4242"),
            ),
            **header,
        )
        self.events: list[Event] = [self.header]
        self.dumps: list[DatabaseDump] = []
        self._xids = itertools.count(0x100)

    def exchange(
        self,
        client: bytes,
        msg_type: str,
        at: float,
        *ias: IAEntry,
        server: bytes | None = None,
        reply: Sequence[IAEntry] | None = None,
        replyAt: float | None = None,
        replyFrom: bytes = S1,
        status: int | None = None,
        retransmits: Sequence[float] = (),
        rapid: bool = False,
        also: Sequence[tuple[float, bytes, Sequence[IAEntry]]] = (),
    ) -> int:
        """
        One transaction: its transmissions, and its Reply if C{reply} is
        given (received 10 ms after the last transmission unless
        C{replyAt}), plus the further Replies in C{also}.
        """
        xid = next(self._xids)
        self.events.append(ClientSent(at, client, msg_type, xid, 0, server, ias, rapid))
        for attempt, t in enumerate(retransmits, 1):
            self.events.append(ClientSent(t, client, msg_type, xid, attempt, server, ias, rapid))
        if reply is not None:
            when = replyAt if replyAt is not None else max([at, *retransmits]) + 0.01
            self.events.append(
                ClientReceived(when, client, "REPLY", xid, replyFrom, status, tuple(reply))
            )
        for when, sender, answer in also:
            self.events.append(
                ClientReceived(when, client, "REPLY", xid, sender, None, tuple(answer))
            )
        return xid

    def bind(
        self, client: bytes, text: str, at: float, valid: int, iaid: int = 1, server: bytes = S1
    ) -> None:
        """A Request granted (kind from the lease's text)."""
        make = pd if "/" in text else na
        self.exchange(
            client,
            "REQUEST",
            at,
            make(iaid, lease(text)),
            server=server,
            reply=[make(iaid, lease(text, valid))],
            replyFrom=server,
        )

    def renew(
        self,
        client: bytes,
        text: str,
        at: float,
        reply: Sequence[IAEntry] | None,
        server: bytes = S1,
        msg_type: str = "RENEW",
        replyFrom: bytes | None = None,
        **kw: Any,
    ) -> None:
        make = pd if "/" in text else na
        self.exchange(
            client,
            msg_type,
            at,
            make(1, lease(text)),
            server=server if msg_type == "RENEW" else None,
            reply=reply,
            replyFrom=replyFrom or server,
            **kw,
        )

    def release(self, client: bytes, text: str, at: float, msg_type: str = "RELEASE") -> None:
        make = pd if "/" in text else na
        self.exchange(client, msg_type, at, make(1, lease(text)), server=S1, reply=[])

    def observe(self, server: bytes, *states: tuple[float, str]) -> None:
        for t, state in states:
            self.events.append(ServerStateObserved(t, server, state))

    def fault(self, kind: str, target: str, start: float, end: float | None = None) -> None:
        self.events.append(FaultEvent(kind, target, start, end))

    def dump(self, server: bytes, at: float, *records: BindingRecord) -> None:
        self.dumps.append(DatabaseDump(at, server, records, "primary" if server == S1 else ""))

    def calm(self, until: float = T0 + 200) -> None:
        """Both servers observed NORMAL every 10 s."""
        for t in range(int(T0) - 10, int(until) + 1, 10):
            self.observe(S1, (float(t), "normal"))
            self.observe(S2, (float(t), "NORMAL"))

    def check(self, **kw: Any) -> list[Violation]:
        return check(
            self.events,
            self.dumps,
            self.header.mclt,
            maxValidLifetime=self.header.max_valid_lifetime,
            **kw,
        )


def cleanHistory() -> History:
    """
    A clean run: A binds L1 (MCLT-capped), renews it, releases it; B then
    gets L1 and renews it; both dumps agree and hold B's lease.
    """
    h = History()
    h.calm()
    h.bind(A, L1, T0, 20)
    h.renew(A, L1, T0 + 10, [na(1, lease(L1, 60))])
    h.release(A, L1, T0 + 40)
    h.bind(B, L1, T0 + 41, 20)
    h.renew(B, L1, T0 + 51, [na(1, lease(L1, 60))])
    h.bind(A, P1, T0 + 2, 25, iaid=2)
    h.dump(S1, T0 + 100, record(L1, B, T0 + 111), record(P1, A, T0 + 27, 2, kind=PD))
    h.dump(
        S2,
        T0 + 100.5,
        record(L1, B, T0 + 160),
        record(L2, A, T0, state="expired"),
        record(P1, A, T0 + 27, 2, kind=PD),
    )
    return h


class CleanTests(SynchronousTestCase):
    """Runs that keep every invariant pass."""

    def test_clean(self) -> None:
        """The clean run has no violation."""
        self.assertEqual(cleanHistory().check(), [])

    def test_checkHistory(self) -> None:
        """A complete history (header and dumps inside) is checked the same way."""
        h = cleanHistory()
        self.assertEqual(checkHistory(h.events + list(h.dumps)), [])

    def test_roundTrip(self) -> None:
        """A history read back from JSON lines checks the same."""
        h = cleanHistory()
        h.bind(B, L1, T0 + 60, 20)
        h.bind(A, L1, T0 + 61, 20)
        events = h.events + list(h.dumps)
        self.assertEqual(checkHistory(loads(dumps(events))), checkHistory(events))
        self.assertNotEqual(checkHistory(events), [])

    def test_backToBack(self) -> None:
        """
        A second client may get a lease the moment the first one's runs
        out by the server's clock, although the first client's own clock
        runs a round trip longer.
        """
        h = History()
        h.exchange(A, "REQUEST", T0, na(1), reply=[na(1, lease(L1, 20))], replyAt=T0 + 0.05)
        # A's lifetime runs to T0 + 20.05 by its own clock, to >= T0 + 20 by the server's.
        h.exchange(B, "REQUEST", T0 + 19.99, na(1), reply=[na(1, lease(L1, 20))], replyAt=T0 + 20)
        self.assertEqual(h.check(), [])

    def test_releaseThenReuse(self) -> None:
        """A lease released may go to another client right after."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.release(A, L1, T0 + 10)
        h.bind(B, L1, T0 + 10.5, 60)
        self.assertEqual(h.check(), [])

    def test_declineThenReuse(self) -> None:
        """A Decline ends the lease too."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.release(A, L1, T0 + 10, "DECLINE")
        h.bind(B, L1, T0 + 10.5, 60)
        self.assertEqual(h.check(), [])

    def test_zeroLifetimeEnds(self) -> None:
        """A Reply giving the lease lifetime 0 ends it."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.exchange(
            A,
            "REQUEST",
            T0 + 10,
            na(1, lease(L1)),
            server=S1,
            reply=[na(1, lease(L2, 60), lease(L1, 0, 0))],
        )
        h.bind(B, L1, T0 + 11, 60)
        self.assertEqual(h.check(), [])

    def test_unansweredRequestCuts(self) -> None:
        """
        After a Request the client never saw answered, the server may have
        moved the IA elsewhere: the old lease is no longer certainly held.
        """
        h = History()
        h.bind(A, L1, T0, 60)
        h.exchange(A, "REQUEST", T0 + 10, na(1, lease(L1)), server=S1)
        h.bind(B, L1, T0 + 11, 60)
        self.assertEqual(h.check(), [])

    def test_sameClientAgain(self) -> None:
        """The same holder getting its lease again is not an overlap."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.bind(A, L1, T0 + 5, 60)
        h.renew(
            A, L1, T0 + 30, None, msg_type="REBIND", also=[(T0 + 30.1, S2, [na(1, lease(L1, 60))])]
        )
        self.assertEqual(h.check(), [])

    def test_lateRenewNotHeld(self) -> None:
        """
        A Renew answered after the lease certainly ran out (by the server's
        clock) may be refused.
        """
        h = History()
        h.exchange(A, "REQUEST", T0, na(1), reply=[na(1, lease(L1, 20))], replyAt=T0 + 0.5)
        h.renew(A, L1, T0 + 19.9, [na(1, status=3)], replyAt=T0 + 20.1)
        self.assertEqual(h.check(), [])

    def test_equalTimesKeepOrder(self) -> None:
        """
        Events of equal time are taken in the order recorded: a Decline
        sent the instant its grant arrived ends the lease.  Recorded the
        other way round, the Reply is an answer that crossed the Decline,
        which proves no holding either (the server may have processed the
        Decline after the Request).
        """
        h = History()
        h.exchange(A, "REQUEST", T0, na(1), reply=[na(1, lease(L1, 60))], replyAt=T0 + 1)
        h.exchange(A, "DECLINE", T0 + 1, na(1, lease(L1)), server=S1, reply=[])
        h.bind(B, L1, T0 + 2, 60)
        self.assertEqual(h.check(), [])
        reply = h.events.pop(2)
        h.events.insert(3, reply)  # recorded after the Decline: the Decline came first
        self.assertEqual(h.check(), [])

    def test_unprocessedReplyIgnored(self) -> None:
        """A Reply with UnspecFail or UseMulticast at the top did not process the Renew."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.renew(A, L1, T0 + 30, [], status=5)
        h.renew(A, L1, T0 + 31, [], status=1)
        self.assertEqual(h.check(), [])


class OverlapTests(SynchronousTestCase):
    """Invariant 1."""

    def test_overlap(self) -> None:
        """A lease granted to B while A's lifetime still runs."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.bind(B, L1, T0 + 30, 60, server=S2)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.OVERLAP)
        self.assertIn(L1, violation.description)
        self.assertEqual(
            {e.client for e in violation.events if isinstance(e, ClientReceived)}, {A, B}
        )

    def test_overlapAfterRenewal(self) -> None:
        """A renewal extends the lifetime the second grant overlaps."""
        h = History()
        h.bind(A, L1, T0, 20)
        h.renew(A, L1, T0 + 10, [na(1, lease(L1, 60))])
        h.bind(B, L1, T0 + 40, 60)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.OVERLAP)

    def test_sameClientOtherIA(self) -> None:
        """Two IAs of one DUID are two different holders."""
        h = History()
        h.bind(A, L1, T0, 60, iaid=1)
        h.bind(A, L1, T0 + 1, 60, iaid=2)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.OVERLAP)

    def test_prefixes(self) -> None:
        """Delegated prefixes are checked like addresses."""
        h = History()
        h.bind(A, P1, T0, 60)
        h.bind(B, P1, T0 + 1, 60)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.OVERLAP)
        self.assertIn(P1, violation.description)

    def test_releaseAfterReuse(self) -> None:
        """A Release sent after the lease went to another client does not excuse it."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.bind(B, L1, T0 + 10, 60)
        h.release(A, L1, T0 + 20)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.OVERLAP)

    def test_reportedOnce(self) -> None:
        """One violation per lease and pair of holders."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.bind(B, L1, T0 + 10, 60)
        h.renew(B, L1, T0 + 20, [na(1, lease(L1, 60))])
        self.assertEqual([v.kind for v in h.check()], [Invariant.OVERLAP])


class StabilityTests(SynchronousTestCase):
    """Invariant 2."""

    def assertUnstable(self, h: History) -> Violation:
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.STABILITY)
        return violation

    def test_noBinding(self) -> None:
        """A Renew of a running lease answered with NoBinding."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.renew(A, L1, T0 + 30, [na(1, status=3)])
        violation = self.assertUnstable(h)
        self.assertIn("status 3", violation.description)

    def test_otherAddress(self) -> None:
        """A Rebind answered with another address."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.renew(A, L1, T0 + 48, [na(1, lease(L2, 60))], msg_type="REBIND", replyFrom=S2)
        violation = self.assertUnstable(h)
        self.assertIn(L2, violation.description)

    def test_zeroLifetime(self) -> None:
        """A Renew answered with lifetime 0 for the running lease."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.renew(A, L1, T0 + 30, [na(1, lease(L1, 0, 0))])
        self.assertUnstable(h)

    def test_missingIA(self) -> None:
        """A Reply without the IA."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.renew(A, L1, T0 + 30, [])
        violation = self.assertUnstable(h)
        self.assertIn("no such IA", violation.description)

    def test_secondReplyChecked(self) -> None:
        """Every answer to a Rebind counts, not only the first."""
        h = History()
        h.bind(A, P1, T0, 60)
        h.renew(
            A,
            P1,
            T0 + 48,
            [pd(1, lease(P1, 60))],
            msg_type="REBIND",
            also=[(T0 + 48.2, S2, [pd(1, status=3)])],
        )
        self.assertUnstable(h)


class LifetimeTests(SynchronousTestCase):
    """Invariant 3."""

    def kinds(self, h: History, **kw: Any) -> list[Invariant]:
        return [v.kind for v in h.check(**kw)]

    def test_beyondConfiguration(self) -> None:
        """No valid lifetime beyond the configured maximum, in any state."""
        h = History()
        h.renew(A, L1, T0, [na(1, lease(L1, 121))])
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.LIFETIME)
        self.assertIn("121", violation.description)

    def test_preferredBeyondValid(self) -> None:
        """No preferred lifetime beyond the valid one."""
        h = History()
        h.exchange(A, "SOLICIT", T0, na(1))
        h.events.append(
            ClientReceived(T0 + 0.1, A, "ADVERTISE", 0x100, S1, None, (na(1, lease(L1, 20, 21)),))
        )
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.LIFETIME)
        self.assertIn("preferred", violation.description)

    def pristine(self, valid: int = 31, **kw: Any) -> History:
        h = History(**{k: v for k, v in kw.items() if k != "calm"})
        if kw.get("calm", True):
            h.calm()
        h.bind(A, L1, T0, valid)
        return h

    def test_firstGrantBeyondMCLT(self) -> None:
        """A client's first binding gets at most MCLT outside PARTNER-DOWN."""
        (violation,) = self.pristine().check()
        self.assertEqual(violation.kind, Invariant.LIFETIME)
        self.assertIn("MCLT", violation.description)

    def test_firstGrantWithinMCLT(self) -> None:
        """MCLT itself is allowed."""
        self.assertEqual(self.pristine(30).check(), [])

    def test_rapidCommit(self) -> None:
        """A Solicit with Rapid Commit is a first binding exchange too."""
        h = History()
        h.calm()
        h.exchange(A, "SOLICIT", T0, pd(1), rapid=True, reply=[pd(1, lease(P1, 60))])
        self.assertEqual(self.kinds(h), [Invariant.LIFETIME])

    def test_retransmitted(self) -> None:
        """
        Not when the first exchange was sent twice: the server may have
        bound the first transmission and had the partner ack it.
        """
        h = History()
        h.calm()
        h.exchange(A, "REQUEST", T0, na(1), retransmits=[T0 + 1], reply=[na(1, lease(L1, 60))])
        self.assertEqual(h.check(), [])

    def test_laterExchanges(self) -> None:
        """Not for later exchanges (renewals get acked partner lifetime + MCLT)."""
        h = History()
        h.calm()
        h.bind(A, L1, T0, 30)
        h.renew(A, L1, T0 + 15, [na(1, lease(L1, 120))])
        h.exchange(A, "REQUEST", T0 + 16, na(2), reply=[na(2, lease(L2, 60))])
        self.assertEqual(self.kinds(h), [Invariant.LIFETIME])  # IA 2 is a new holder

    def test_unansweredFirstExchange(self) -> None:
        """A first exchange that got no Reply makes the next one not pristine."""
        h = History()
        h.calm()
        h.exchange(A, "REQUEST", T0, na(1))
        h.bind(A, L1, T0 + 5, 60)
        self.assertEqual(h.check(), [])

    def test_partnerDownObserved(self) -> None:
        """Not from a server seen in PARTNER-DOWN around the exchange."""
        h = History()
        h.observe(S1, (T0 - 10, "normal"), (T0 + 5, "partner-down"), (T0 + 20, "normal"))
        h.bind(A, L1, T0, 60)
        self.assertEqual(h.check(), [])

    def test_partnerDownCommandPending(self) -> None:
        """
        Not after a partner-down command that has not been seen to take
        effect and end, even between two observations of another state.
        """
        h = History()
        h.calm()
        h.fault(FAULT_PARTNER_DOWN, "primary", T0 - 5)
        h.bind(A, L1, T0, 60)
        self.assertEqual(h.check(), [])

    def test_partnerDownEnded(self) -> None:
        """Once PARTNER-DOWN is seen and then left, the check applies again."""
        h = History()
        h.observe(S1, (T0 - 30, "normal"), (T0 - 20, "partner-down"))
        h.calm()
        h.fault(FAULT_PARTNER_DOWN, "primary", T0 - 25)
        h.bind(A, L1, T0, 60)
        self.assertEqual(self.kinds(h), [Invariant.LIFETIME])

    def test_partnerDownOtherServer(self) -> None:
        """A partner-down command to the other server does not matter."""
        h = History()
        h.calm()
        h.fault(FAULT_PARTNER_DOWN, "secondary", T0 - 5)
        h.bind(A, L1, T0, 60)
        self.assertEqual(self.kinds(h), [Invariant.LIFETIME])

    def test_notObserved(self) -> None:
        """Not from a server whose state is unknown."""
        self.assertEqual(self.pristine(calm=False).check(), [])

    def test_notFresh(self) -> None:
        """Not when the databases had bindings at the start."""
        self.assertEqual(self.pristine().check(freshDatabases=False), [])

    def test_autoPartnerDown(self) -> None:
        """Not when the servers may enter PARTNER-DOWN by themselves."""
        self.assertEqual(self.pristine().check(autoPartnerDown=True), [])

    def test_noFailover(self) -> None:
        """Not without an MCLT."""
        h = self.pristine()
        self.assertEqual(check(h.events, [], None), [])


class AgreementTests(SynchronousTestCase):
    """Invariant 4."""

    def test_differentClients(self) -> None:
        """ACTIVE on both sides for different clients."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60))
        h.dump(S2, T0, record(L1, B, T0 + 60))
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.AGREEMENT)
        self.assertEqual(len(violation.events), 2)

    def test_differentIAID(self) -> None:
        """ACTIVE on both sides for different IAs of one client."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60, iaid=1))
        h.dump(S2, T0, record(L1, A, T0 + 60, iaid=2))
        self.assertEqual([v.kind for v in h.check()], [Invariant.AGREEMENT])

    def test_activeOnOneSide(self) -> None:
        """ACTIVE on one side, unknown or not ACTIVE on the other."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60), record(L2, A, T0 + 60, state="expired"))
        h.dump(S2, T0, record(L2, B, T0 + 60))
        violations = h.check()
        self.assertEqual([v.kind for v in violations], [Invariant.AGREEMENT] * 2)
        self.assertIn("no record", violations[0].description + violations[1].description)

    def test_expiryMayDiffer(self) -> None:
        """Expiry times may differ (partner lifetime); states other than ACTIVE too."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60), record(L2, A, T0 - 5, state="expired"))
        h.dump(S2, T0 + 1, record(L1, A, T0 + 600), record(L2, B, T0 + 5, state="released"))
        self.assertEqual(h.check(), [])

    def test_runOutNotReclaimed(self) -> None:
        """An ACTIVE binding that has run out but is not reclaimed yet is no disagreement."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 - 1))
        h.dump(S2, T0, record(L1, A, T0 - 1, state="expired"))
        self.assertEqual(h.check(), [])

    def test_settle(self) -> None:
        """A binding written just before the dump may not have reached the partner yet."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60, cltt=T0 - 0.5))
        h.dump(S2, T0)
        self.assertEqual([v.kind for v in h.check()], [Invariant.AGREEMENT])
        self.assertEqual(h.check(settle=1.0), [])

    def test_lastDumpCounts(self) -> None:
        """With several dumps of one server, the last one counts."""
        h = History()
        h.dump(S1, T0, record(L1, A, T0 + 60))
        h.dump(S1, T0 + 1, record(L1, B, T0 + 60))
        h.dump(S2, T0, record(L1, B, T0 + 60))
        self.assertEqual(h.check(), [])


class DurabilityTests(SynchronousTestCase):
    """Invariant 5."""

    def running(self) -> History:
        """A's L1 from S1 runs to T0 + 60; S2's dump agrees with S1's."""
        h = History()
        h.bind(A, L1, T0, 60)
        return h

    def test_missing(self) -> None:
        """The sender's dump has no record of a running lease."""
        h = self.running()
        h.dump(S1, T0 + 50)
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.DURABILITY)
        self.assertIn("no record", violation.description)

    def test_otherClient(self) -> None:
        """The sender's dump has it for another client (and the partner agrees)."""
        h = self.running()
        h.dump(S1, T0 + 50, record(L1, B, T0 + 60))
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.DURABILITY)
        self.assertIsInstance(violation.events[-1], DatabaseDump)

    def test_notActive(self) -> None:
        """The sender's dump has it, but not ACTIVE."""
        h = self.running()
        h.dump(S1, T0 + 50, record(L1, A, T0 + 60, state="expired"))
        self.assertEqual([v.kind for v in h.check()], [Invariant.DURABILITY])

    def test_present(self) -> None:
        """ACTIVE for the client: fine; the partner's dump is not asked."""
        h = self.running()
        h.dump(S1, T0 + 50, record(L1, A, T0 + 60))
        self.assertEqual(h.check(), [])

    def test_ranOut(self) -> None:
        """A lease that ran out before the dump need not be there."""
        h = self.running()
        h.dump(S1, T0 + 60)
        self.assertEqual(h.check(), [])

    def test_clockSlack(self) -> None:
        """Clock slack loosens the bound."""
        h = self.running()
        h.dump(S1, T0 + 58)
        self.assertEqual(h.check(clockSlack=5.0), [])

    def test_released(self) -> None:
        """A released lease need not be there."""
        h = self.running()
        h.release(A, L1, T0 + 10)
        h.dump(S1, T0 + 50)
        self.assertEqual(h.check(), [])

    def test_lostDatabase(self) -> None:
        """Not checked for a server that lost its database after the grant."""
        h = self.running()
        h.fault(FAULT_LOSE_DATABASE, "primary", T0 + 5, T0 + 15)
        h.dump(S1, T0 + 50)
        self.assertEqual(h.check(), [])

    def test_lostDatabaseBefore(self) -> None:
        """Checked when the database was lost before the grant."""
        h = History()
        h.fault(FAULT_LOSE_DATABASE, "primary", T0 - 15, T0 - 5)
        h.fault(FAULT_KILL, "primary", T0 + 5, T0 + 15)
        h.bind(A, L1, T0, 60)
        h.dump(S1, T0 + 50)
        self.assertEqual([v.kind for v in h.check()], [Invariant.DURABILITY])

    def test_latestGrantOnly(self) -> None:
        """
        A later renewal by the partner replaces the first grant's expiry:
        only the partner must have it, and only while its grant runs.
        """
        h = self.running()
        h.renew(A, L1, T0 + 40, [na(1, lease(L1, 15))], msg_type="REBIND", replyFrom=S2)
        h.dump(S1, T0 + 56)
        h.dump(S2, T0 + 56, record(L1, A, T0 + 55.01))
        self.assertEqual(h.check(), [])
        h.dumps[:] = [DatabaseDump(T0 + 50, S1, ()), DatabaseDump(T0 + 50, S2, ())]
        (violation,) = h.check()
        self.assertEqual(violation.kind, Invariant.DURABILITY)
        self.assertIn("server " + S2.hex(":"), violation.description)

    def test_lateReplyAfterRelease(self) -> None:
        """
        A Reply to a Renew retransmission that arrives after the client's
        Release was sent proves nothing: the server may have renewed, then
        released (found by the chaos harness, seed 302 with 120 clients).
        """
        h = self.running()
        h.renew(
            A,
            L1,
            T0 + 30,
            None,
            retransmits=[T0 + 32],
            also=[(T0 + 36, S1, [na(1, lease(L1, 60))])],
        )
        h.release(A, L1, T0 + 35)
        h.dump(S1, T0 + 50, record(L1, A, T0 + 92, state="released"))
        self.assertEqual(h.check(), [])
        # Nor does it make an overlap with the next holder.
        h.bind(B, L1, T0 + 40, 60)
        h.dumps[:] = [DatabaseDump(T0 + 50, S1, (record(L1, B, T0 + 100),))]
        self.assertEqual(h.check(), [])

    def test_replyBeforeReleaseStillCounts(self) -> None:
        """A grant whose transaction started after the Release is checked as usual."""
        h = self.running()
        h.release(A, L1, T0 + 10)
        h.bind(A, L1, T0 + 12, 60)
        h.dump(S1, T0 + 50, record(L1, A, T0 + 72, state="released"))
        self.assertEqual([v.kind for v in h.check()], [Invariant.DURABILITY])

    def test_noDump(self) -> None:
        """Nothing to check without the sender's dump."""
        h = self.running()
        h.dump(S2, T0 + 50, record(L1, A, T0 + 60))
        self.assertEqual(h.check(), [])


class ReportTests(SynchronousTestCase):
    """The printed report."""

    def test_clean(self) -> None:
        """A clean run's report says so, with the seed and the faults."""
        h = cleanHistory()
        h.fault(FAULT_KILL, "primary", T0 + 20, T0 + 25)
        text = formatReport(h.events, h.check())
        self.assertIn("seed 4242", text)
        self.assertIn("replay: python -m dhcp6ha.chaos --seed 4242", text)
        self.assertIn("fault kill primary", text)
        self.assertIn("no violations", text)

    def test_violations(self) -> None:
        """Each violation with its events, then the involved clients' histories."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.bind(B, L1, T0 + 30, 60, server=S2)
        h.bind(b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x09", L2, T0 + 1, 60)
        h.fault(FAULT_KILL, "secondary", T0 + 10, T0 + 12)
        h.observe(S2, (T0 + 13, "recover"))
        h.events.append(Note(T0 + 14, "hello"))
        text = formatReport(h.events, h.check())
        self.assertIn("1 violation(s)", text)
        self.assertIn("invariant 1", text)
        self.assertIn("received REPLY", text)
        self.assertIn("from secondary", text)
        self.assertIn("secondary is recover", text)
        self.assertIn("note: hello", text)
        self.assertIn("t+30.000", text)
        self.assertNotIn("00:03:00:01:02:00:00:00:00:09", text)

    def test_noHeader(self) -> None:
        """Without a header the seed is unknown; servers by DUID."""
        h = History()
        h.bind(A, L1, T0, 60)
        h.dump(S1, T0 + 1)
        events = h.events[1:]
        text = formatReport(events, check(events, h.dumps, None))
        self.assertIn("seed unknown", text)
        self.assertIn("t+0.000", text)
        self.assertIn("invariant 5", text)

    def test_describeDump(self) -> None:
        """A dump lists its bindings (at most 50)."""
        dump = DatabaseDump(
            T0, S1, tuple(record(f"2001:db8::{n:x}", A, T0 + 1) for n in range(60)), "primary"
        )
        text = describeEvent(dump, T0)
        self.assertIn("dump of primary: 60 bindings", text)
        self.assertIn("2001:db8::3b", describeEvent(DatabaseDump(T0, S1, dump.bindings[59:])))
        self.assertIn("10 more", text)
