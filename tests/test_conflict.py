"""
Tests for L{dhcp6ha.failover.conflict}: one test per row of the conflict
table (DESIGN.md, draft section 7.5.4 Figure 3), and the bookkeeping of
accepted updates and acks.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address
from typing import Any

from attrs import evolve
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.failover.conflict import (
    FailoverStatus,
    Resolution,
    Verdict,
    acknowledged,
    resolve,
    rivalWinner,
)
from dhcp6ha.failover.machine import Role
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from tests.test_queue import Pair
from tests.test_queue import lease as queueLease

T0 = 1_700_000_000.0
A = b"\x00\x03\x00\x01client-a"
B = b"\x00\x03\x00\x01client-b"
ADDRESS = IPv6Address("2001:db8:1::101")

ACTIVE = BindingState.ACTIVE
EXPIRED = BindingState.EXPIRED
RELEASED = BindingState.RELEASED
FREE = BindingState.FREE
FREE_BACKUP = BindingState.FREE_BACKUP
PENDING_FREE = BindingState.PENDING_FREE
ABANDONED = BindingState.ABANDONED
RESET = BindingState.RESET

ACCEPT = Verdict.ACCEPT
REJECT = Verdict.REJECT
KEEP = Verdict.KEEP_UNTIL_EXPIRY
OUTDATED = FailoverStatus.OUTDATED_BINDING_INFORMATION
IN_USE = FailoverStatus.ADDRESS_IN_USE
CONFLICT = FailoverStatus.CONFIGURATION_CONFLICT
MISSING = FailoverStatus.MISSING_BINDING_INFORMATION

#: (name, local, incoming, receiver's role, now, verdict, status)
Row = tuple[str, Lease | None, Lease, Role, float, Verdict, FailoverStatus | None]


def rec(state: BindingState, duid: bytes = A, at: float = T0, **kw: Any) -> Lease:
    """A binding of C{duid} in C{state}: CLT and start time of state C{at}, expiring an hour later."""
    values: dict[str, Any] = {
        "lease_type": LeaseType.NA,
        "address": ADDRESS,
        "prefix_length": 128,
        "state": state,
        "duid": duid,
        "iaid": 7,
        "start_time_of_state": at,
        "cltt": at,
        "preferred_lifetime": 1800,
        "valid_lifetime": 3600,
        "expires": at + 3600,
    }
    values.update(kw)
    return Lease(**values)


class RowTests(SynchronousTestCase):
    """Checks rows of the conflict table."""

    def check(self, rows: Sequence[Row]) -> list[Resolution]:
        results = []
        for name, local, incoming, role, now, verdict, status in rows:
            result = resolve(local, incoming, role, now)
            self.assertIs(result.verdict, verdict, name + ": " + result.rule)
            self.assertEqual(result.status, status, name + ": " + result.rule)
            self.assertEqual(result.accepted, verdict is ACCEPT, name)
            if verdict is ACCEPT:
                self.assertIsNotNone(result.record, name)
            else:
                self.assertIsNone(result.record, name)
            results.append(result)
        return results


class TableTests(RowTests):
    """Every row of the table in L{dhcp6ha.failover.conflict}."""

    def test_noLocal(self) -> None:
        """No local record: accept anything."""
        rows: list[Row] = [
            ("new " + state.value, None, rec(state), role, T0, ACCEPT, None)
            for state in BindingState
            for role in Role
        ]
        self.check(rows)

    def test_sanity(self) -> None:
        """Section 7.5.4: unconfigured, incomplete or mismatched updates."""
        result = resolve(rec(ACTIVE), rec(ACTIVE, at=T0 + 60), Role.PRIMARY, T0, configured=False)
        self.assertEqual((result.verdict, result.status), (REJECT, CONFLICT))
        self.assertFalse(result.sendLocal)
        result = resolve(None, rec(ACTIVE, duid=b""), Role.SECONDARY, T0)
        self.assertEqual((result.verdict, result.status), (REJECT, MISSING))
        # Non-ACTIVE records need no client.
        self.assertTrue(resolve(None, rec(FREE, duid=b""), Role.SECONDARY, T0).accepted)
        local = rec(ACTIVE, lease_type=LeaseType.TA)
        result = resolve(local, rec(ACTIVE, at=T0 + 60), Role.SECONDARY, T0)
        self.assertEqual((result.verdict, result.status), (REJECT, CONFLICT))

    def test_activeActiveSameClient(self) -> None:
        """ACTIVE against ACTIVE of the same client: later wins; at the same time, the longer."""
        local = rec(ACTIVE, at=T0)
        rows: list[Row] = []
        for role in Role:
            rows += [
                ("later", local, rec(ACTIVE, at=T0 + 60), role, T0, ACCEPT, None),
                ("older", local, rec(ACTIVE, at=T0 - 60), role, T0, REJECT, OUTDATED),
                ("identical", local, local, role, T0, ACCEPT, None),
                (
                    "same time, longer",
                    local,
                    rec(ACTIVE, at=T0 + 3, expires=T0 + 9000),
                    role,
                    T0,
                    ACCEPT,
                    None,
                ),
                (
                    "same time, shorter",
                    local,
                    rec(ACTIVE, at=T0 - 3, expires=T0 + 100),
                    role,
                    T0,
                    REJECT,
                    OUTDATED,
                ),
            ]
        for result in self.check(rows):
            if not result.accepted:
                self.assertTrue(result.sendLocal)

    def test_activeActiveOtherClient(self) -> None:
        """
        ACTIVE against another client's ACTIVE, on both roles: the
        secondary's record stands only if its client time is clearly later
        (beyond the tolerance) than the primary's, else the primary's; each
        side accepts the partner's record if it is that one, else answers
        AddressInUse and sends its own.
        """
        P, S = Role.PRIMARY, Role.SECONDARY
        primarys = rec(ACTIVE, A, at=T0)
        rows: list[Row] = [
            # On the primary: local the primary's, incoming the secondary's.
            ("primary, later", primarys, rec(ACTIVE, B, T0 + 600), P, T0, ACCEPT, None),
            ("primary, just later", primarys, rec(ACTIVE, B, T0 + 5.5), P, T0, ACCEPT, None),
            ("primary, same", primarys, rec(ACTIVE, B, T0 + 2), P, T0, REJECT, IN_USE),
            ("primary, edge", primarys, rec(ACTIVE, B, T0 + 5), P, T0, REJECT, IN_USE),
            ("primary, older", primarys, rec(ACTIVE, B, T0 - 600), P, T0, REJECT, IN_USE),
            # On the secondary: local the secondary's, incoming the primary's.
            ("secondary, later", rec(ACTIVE, B, T0 + 600), primarys, S, T0, REJECT, IN_USE),
            ("secondary, just", rec(ACTIVE, B, T0 + 5.5), primarys, S, T0, REJECT, IN_USE),
            ("secondary, same", rec(ACTIVE, B, T0 + 2), primarys, S, T0, ACCEPT, None),
            ("secondary, edge", rec(ACTIVE, B, T0 + 5), primarys, S, T0, ACCEPT, None),
            ("secondary, older", rec(ACTIVE, B, T0 - 600), primarys, S, T0, ACCEPT, None),
        ]
        for result in self.check(rows):
            if not result.accepted:
                self.assertTrue(result.sendLocal, result.rule)
        # The same DUID with another IAID is another binding.
        other = rec(ACTIVE, A, T0 - 600, iaid=8)
        self.assertEqual(resolve(primarys, other, P, T0).status, IN_USE)
        self.assertTrue(resolve(other, primarys, S, T0).accepted)

    def test_rivalWinner(self) -> None:
        """
        L{rivalWinner} names the secondary's record only for a client time
        later than the primary's by more than the tolerance (a record
        without one: its start time of state), whatever the expiries.
        """
        primarys = rec(ACTIVE, A, T0)
        for delta, winner in (
            (-600.0, Role.PRIMARY),
            (0.0, Role.PRIMARY),
            (4.9, Role.PRIMARY),
            (5.0, Role.PRIMARY),
            (5.1, Role.SECONDARY),
            (600.0, Role.SECONDARY),
        ):
            secondarys = rec(ACTIVE, B, T0 + delta, expires=T0 + 10)
            self.assertIs(rivalWinner(primarys, secondarys), winner, delta)
        self.assertIs(rivalWinner(primarys, rec(ACTIVE, B, T0 + 3), tolerance=1.0), Role.SECONDARY)
        noClientTime = rec(ACTIVE, B, T0 + 60, cltt=0.0)
        self.assertIs(rivalWinner(primarys, noClientTime), Role.SECONDARY)

    def test_secondarysToLease(self) -> None:
        """
        On the primary, the secondary's ACTIVE binding is accepted over a
        FREE-BACKUP record (acked or not) or a pending takeback (FREE, last
        acked state FREE-BACKUP), whatever the times: before the handover
        (the secondary's clock behind), at it, after the takeback; expired,
        it is rejected (the secondary then takes the FREE).  The
        primary's own FREE and the secondary's FREE-BACKUP get the time
        rules as before.
        """
        pd: dict[str, Any] = {"lease_type": LeaseType.PD, "prefix_length": 56}
        handed = rec(FREE_BACKUP, b"", T0, cltt=0.0, iaid=0, expires=0.0, **pd)
        acked = evolve(handed, partner_state_acked=FREE_BACKUP, partner_stos_acked=T0)
        takeback = evolve(acked, state=FREE, start_time_of_state=T0 + 100, cltt=T0)
        rows: list[Row] = []
        for name, local in (("handed", handed), ("acked", acked), ("takeback", takeback)):
            for delta in (-600.0, -4.9, 0.0, 2.0, 4.9, 99.0, 100.0, 104.0, 600.0):
                leased = rec(ACTIVE, B, T0 + delta, **pd)
                where = f"{name} {delta:+}"
                rows.append((where, local, leased, Role.PRIMARY, T0 + 700, ACCEPT, None))
            late = rec(ACTIVE, B, T0 + 2, **pd)  # expires T0 + 3602
            if local is not acked:
                expired: Row = (
                    name + " expired",
                    local,
                    late,
                    Role.PRIMARY,
                    T0 + 3602,
                    REJECT,
                    OUTDATED,
                )
            else:
                # The secondary's successor of the FREE-BACKUP it acked:
                # accepted by the lineage rule, expired or not.
                expired = (name + " expired", local, late, Role.PRIMARY, T0 + 3602, ACCEPT, None)
            rows.append(expired)
            # The secondary's side: its binding stands against the FREE(-BACKUP).
            rows.append(("mirror " + name, late, local, Role.SECONDARY, T0 + 700, KEEP, OUTDATED))
        results = self.check(rows)
        for result in results:
            if result.accepted:
                self.assertTrue(result.rule.endswith(("to lease", "successor")), result.rule)
        older = rec(ACTIVE, B, T0 - 600, **pd)
        for local, role in (
            (rec(FREE, b"", T0, iaid=0, **pd), Role.PRIMARY),
            (takeback, Role.SECONDARY),
            (handed, Role.SECONDARY),
        ):
            result = resolve(local, older, role, T0)
            self.assertEqual((result.verdict, result.status), (REJECT, OUTDATED), result.rule)

    def test_activeAgainstFreeing(self) -> None:
        """
        A local ACTIVE binding against EXPIRED, FREE, FREE-BACKUP or
        PENDING-FREE is kept until its own expiry, whatever the times, then
        the update is accepted.
        """
        local = rec(ACTIVE, at=T0)  # expires T0 + 3600
        for state in (EXPIRED, FREE, FREE_BACKUP, PENDING_FREE):
            for duid in (A, B, b""):
                for role in Role:
                    incoming = rec(state, duid, at=T0 + 1800)
                    result = resolve(local, incoming, role, T0 + 1800)
                    self.assertIs(result.verdict, KEEP, result.rule)
                    self.assertEqual(result.status, OUTDATED)
                    self.assertEqual(result.until, T0 + 3600)
                    self.assertTrue(result.sendLocal)
                    self.assertFalse(result.accepted)
                    self.assertIsNone(result.record)
                    late = resolve(local, incoming, role, T0 + 3600)
                    self.assertIs(late.verdict, ACCEPT, late.rule)

    def test_activeAgainstReleasedSameClient(self) -> None:
        """RELEASED, RESET or ABANDONED by the same client: later wins."""
        local = rec(ACTIVE, at=T0)
        rows: list[Row] = []
        for state in (RELEASED, RESET, ABANDONED):
            rows += [
                (
                    state.value + " later",
                    local,
                    rec(state, at=T0 + 60),
                    Role.PRIMARY,
                    T0,
                    ACCEPT,
                    None,
                ),
                (
                    state.value + " older",
                    local,
                    rec(state, at=T0 - 60),
                    Role.PRIMARY,
                    T0,
                    REJECT,
                    OUTDATED,
                ),
            ]
        self.check(rows)

    def test_activeAgainstReleasedOtherClient(self) -> None:
        """RELEASED, RESET or ABANDONED of another client never erase a live binding."""
        local = rec(ACTIVE, A, at=T0)
        for state in (RELEASED, RESET, ABANDONED):
            incoming = rec(state, B, at=T0 + 60)
            self.assertIs(resolve(local, incoming, Role.SECONDARY, T0 + 60).verdict, KEEP)
            self.assertIs(resolve(local, incoming, Role.SECONDARY, T0 + 3600).verdict, ACCEPT)

    def test_resetAgainstActive(self) -> None:
        """Local RESET against ACTIVE: accept if the client time is later than the reset."""
        local = rec(RESET, b"", at=T0, cltt=T0 - 5000)
        self.check(
            [
                ("later", local, rec(ACTIVE, B, T0 + 60), Role.PRIMARY, T0, ACCEPT, None),
                ("older", local, rec(ACTIVE, B, T0 - 60), Role.PRIMARY, T0, REJECT, OUTDATED),
                ("same", local, rec(ACTIVE, B, T0 + 4), Role.SECONDARY, T0, REJECT, OUTDATED),
            ]
        )

    def test_laterWins(self) -> None:
        """Every other pair: the later time wins (CLT, else start time of state)."""
        rows: list[Row] = []
        for localState in (EXPIRED, RELEASED, FREE, FREE_BACKUP, PENDING_FREE, ABANDONED, RESET):
            for state in BindingState:
                if localState in (RESET, FREE_BACKUP) and state is ACTIVE:
                    continue  # rows of their own
                local = rec(localState, at=T0)
                name = localState.value + "/" + state.value
                rows += [
                    (
                        name + " later",
                        local,
                        rec(state, B, T0 + 60),
                        Role.PRIMARY,
                        T0,
                        ACCEPT,
                        None,
                    ),
                    (
                        name + " older",
                        local,
                        rec(state, B, T0 - 60),
                        Role.PRIMARY,
                        T0,
                        REJECT,
                        OUTDATED,
                    ),
                ]
        self.check(rows)

    def test_startTimeBreaksTies(self) -> None:
        """Same CLT (within 5 s): the later start time of state wins; identical is accepted."""
        local = rec(EXPIRED, at=T0, cltt=T0 - 100)
        self.check(
            [
                (
                    "later state",
                    local,
                    rec(RELEASED, at=T0 + 30, cltt=T0 - 98),
                    Role.PRIMARY,
                    T0,
                    ACCEPT,
                    None,
                ),
                (
                    "older state",
                    local,
                    rec(RELEASED, at=T0 - 30, cltt=T0 - 100),
                    Role.PRIMARY,
                    T0,
                    REJECT,
                    OUTDATED,
                ),
                ("identical", local, local, Role.SECONDARY, T0, ACCEPT, None),
                (
                    "same times, different",
                    local,
                    rec(RELEASED, at=T0 + 2, cltt=T0 - 100),
                    Role.PRIMARY,
                    T0,
                    REJECT,
                    OUTDATED,
                ),
            ]
        )

    def test_tolerance(self) -> None:
        """Times within the tolerance are the same time; the tolerance is a parameter."""
        local = rec(EXPIRED, at=T0)
        incoming = rec(RELEASED, at=T0 + 4)
        self.assertFalse(resolve(local, incoming, Role.PRIMARY, T0).accepted)
        self.assertTrue(resolve(local, incoming, Role.PRIMARY, T0, tolerance=1.0).accepted)

    def test_poolHandover(self) -> None:
        """
        Section 4.2.2: the primary gives a prefix as FREE-BACKUP, takes it
        back as FREE; the secondary refuses while it has leased it.
        """
        pd: dict[str, Any] = {"lease_type": LeaseType.PD, "prefix_length": 56}
        free = rec(FREE, b"", at=T0 - 1000, **pd)
        backup = rec(FREE_BACKUP, b"", at=T0, cltt=0.0, **pd)
        self.assertTrue(resolve(free, backup, Role.SECONDARY, T0).accepted)
        takeBack = rec(FREE, b"", at=T0 + 600, cltt=0.0, **pd)
        self.assertTrue(resolve(backup, takeBack, Role.SECONDARY, T0 + 600).accepted)
        leased = rec(ACTIVE, B, at=T0 + 300, **pd)
        self.assertIs(resolve(leased, takeBack, Role.SECONDARY, T0 + 600).verdict, KEEP)


class RecordTests(SynchronousTestCase):
    """What an accepted update stores, and what an ack stores."""

    def test_acceptedRecord(self) -> None:
        """
        The partner's record, its state acknowledged, its proposed partner
        lifetime as the acked one, nothing of ours left to propose.
        """
        incoming = rec(ACTIVE, B, at=T0, partner_lifetime_sent=T0 + 9000)
        result = resolve(None, incoming, Role.SECONDARY, T0)
        self.assertEqual(
            result.record,
            evolve(
                incoming,
                partner_lifetime_sent=0.0,
                partner_lifetime_acked=T0 + 9000,
                partner_state_acked=ACTIVE,
                partner_stos_acked=T0,
            ),
        )
        assert result.record is not None
        self.assertTrue(result.record.stateAcked)

    def test_acceptedKeepsLaterAck(self) -> None:
        """A later acked lifetime of the same client is kept; another client's is not."""
        local = rec(ACTIVE, A, at=T0, partner_lifetime_acked=T0 + 20_000)
        same = resolve(
            local, rec(ACTIVE, A, T0 + 60, partner_lifetime_sent=T0 + 10_000), Role.PRIMARY, T0
        )
        assert same.record is not None
        self.assertEqual(same.record.partner_lifetime_acked, T0 + 20_000)
        other = resolve(
            local, rec(ACTIVE, B, T0 + 60, partner_lifetime_sent=T0 + 10_000), Role.SECONDARY, T0
        )
        assert other.record is not None
        self.assertEqual(other.record.partner_lifetime_acked, T0 + 10_000)

    def test_acknowledged(self) -> None:
        """Section 7.7: the ack of what we sent, if the record is still that binding."""
        sent = rec(ACTIVE, A, at=T0, partner_lifetime_sent=T0 + 9000)
        stored = evolve(sent, partner_lifetime_sent=0.0)
        result = acknowledged(stored, sent)
        self.assertEqual(result.partner_lifetime_acked, T0 + 9000)
        self.assertTrue(result.stateAcked)
        # Renewed meanwhile (same state and start): still acknowledged.
        renewed = evolve(stored, cltt=T0 + 100, expires=T0 + 9999)
        self.assertTrue(acknowledged(renewed, sent).stateAcked)
        # Released meanwhile: the lifetime counts, the state does not.
        released = evolve(stored, state=RELEASED, start_time_of_state=T0 + 200)
        result = acknowledged(released, sent)
        self.assertFalse(result.stateAcked)
        self.assertEqual(result.partner_lifetime_acked, T0 + 9000)
        # Another client's now: nothing changes.
        other = rec(ACTIVE, B, at=T0 + 300)
        self.assertEqual(acknowledged(other, sent), other)
        # The greatest acked lifetime is kept.
        higher = evolve(stored, partner_lifetime_acked=T0 + 50_000)
        self.assertEqual(acknowledged(higher, sent).partner_lifetime_acked, T0 + 50_000)

    def test_acknowledgedExpired(self) -> None:
        """An acked EXPIRED state makes the binding reusable by others (policy)."""
        sent = rec(EXPIRED, A, at=T0)
        self.assertTrue(acknowledged(sent, sent).stateAcked)
        self.assertEqual(acknowledged(sent, sent).partner_lifetime_acked, 0.0)


def known(lease: Lease) -> Lease:
    """C{lease} as held once the partner knows its state (acked, or received from it)."""
    return evolve(
        lease, partner_state_acked=lease.state, partner_stos_acked=lease.start_time_of_state
    )


def changed(before: Lease, state: BindingState, at: float, **kw: Any) -> Lease:
    """
    The engine's change of C{before}, which the partner knew, at C{at}: a
    client transaction (CLT C{at}) entering C{state}, the acknowledged
    fields carried over (L{dhcp6ha.engine}: evolve of the stored record).
    """
    values: dict[str, Any] = {"state": state, "start_time_of_state": at, "cltt": at}
    values.update(kw)
    return evolve(known(before), **values)


def transitions(at: float) -> list[tuple[str, Lease, Lease]]:
    """
    C{(name, before, after)}: every change this server makes to a binding,
    C{after} made by one server from C{before} (which the other knows) at
    C{at}, with the acknowledged fields as the engine leaves them.
    """
    active = rec(ACTIVE, A, T0)
    released = known(rec(RELEASED, A, T0))
    abandoned = rec(ABANDONED, A, T0, expires=T0 + 100)
    backup = rec(FREE_BACKUP, b"", T0, cltt=0.0, iaid=0)
    return [
        ("release", active, changed(active, RELEASED, at)),
        ("decline", active, changed(active, ABANDONED, at, expires=at + 86400)),
        (
            "withdraw",
            active,
            changed(active, EXPIRED, at, expires=at, preferred_lifetime=0, valid_lifetime=0),
        ),
        ("expire", active, changed(active, EXPIRED, active.expires + at - T0, cltt=T0)),
        ("back", released, changed(released, ACTIVE, at, expires=at + 600)),
        # Another client's: the engine starts with no acknowledged fields.
        ("reuse", released, rec(ACTIVE, B, at, iaid=9, expires=at + 600)),
        ("expired back", rec(EXPIRED, A, T0), changed(rec(EXPIRED, A, T0), ACTIVE, at)),
        (
            "quarantine over",
            abandoned,
            changed(abandoned, FREE, T0 + 100 + at - T0, cltt=T0, duid=b"", iaid=0),
        ),
        ("lease backup", backup, changed(backup, ACTIVE, at, duid=B, iaid=9)),
        ("take back", backup, changed(backup, FREE, at, cltt=0.0)),
    ]


#: Delays between a change and the one before, within the tolerance, and
#: negative ones: the second server's clock behind the first's (the skew
#: bound is the tolerance, 5 s).
WITHIN = (0.0, 0.25, 2.5, 4.9, -0.25, -3.0, -4.9)


def endsEarlier(before: Lease, after: Lease) -> bool:
    """
    Does C{after} end the ACTIVE binding C{before} with a client time
    earlier than the binding's (the partner's clock behind)?  Not a
    successor: the binding stands (L{LineageTests.test_endEarlierThanBinding}).
    A Release says which transaction it ended (its expiry minus its valid
    lifetime: C{before}'s CLT when made from it), whatever its own time.
    """
    if before.state is not ACTIVE or after.state is ACTIVE:
        return False
    if after.state is RELEASED:
        return after.expires - after.valid_lifetime < before.cltt
    return after.cltt < before.cltt


class LineageTests(RowTests):
    """
    A record the partner derived from ours is accepted however close the
    times (the integration tests' stuck queues, docs/failover-bugs #1), and
    ours derived from the partner's supersedes it, on both roles.
    """

    def test_bugReport(self) -> None:
        """
        The report's reproduction: local ACTIVE at t, known to the partner;
        RELEASED or ABANDONED at t + 0.25, t + 4.9 and t + 5.1 are
        accepted, on both roles; so is ACTIVE at t + 0.5 over a known
        RELEASED, of the same client or another.
        """
        local = known(rec(ACTIVE, at=T0))
        rows: list[Row] = []
        for role in Role:
            for d in (0.25, 4.9, 5.1):
                for state in (RELEASED, ABANDONED):
                    incoming = rec(state, at=T0 + d)
                    rows.append(
                        (f"{state.value} +{d}", local, incoming, role, T0 + d, ACCEPT, None)
                    )
            released = known(rec(RELEASED, at=T0))
            for duid in (A, B):
                incoming = rec(ACTIVE, duid, T0 + 0.5)
                rows.append(("active +0.5", released, incoming, role, T0 + 1, ACCEPT, None))
        for result in self.check(rows):
            self.assertTrue(result.rule.endswith("successor"), result.rule)

    def test_successor(self) -> None:
        """
        Every change made by the partner after learning our record is
        accepted, on both roles, whatever the delay within the tolerance,
        the partner's clock ahead or behind; the record stored is the
        partner's, its state acknowledged.
        """
        for d in WITHIN + (60.0,):
            for name, before, after in transitions(T0 + d):
                if endsEarlier(before, after):
                    continue
                for role in Role:
                    now = max(after.start_time_of_state, after.cltt) + 1
                    result = resolve(known(before), after, role, now)
                    where = f"{name} {d:+} {role.value}: {result.rule}"
                    self.assertIs(result.verdict, ACCEPT, where)
                    assert result.record is not None
                    self.assertEqual(result.record.state, after.state, where)
                    self.assertTrue(result.record.stateAcked, where)

    def test_predecessor(self) -> None:
        """
        The partner sends again the record ours was derived from (its state
        and start time are what ours carries as acknowledged): answered
        with success, not stored, ours to be sent (superseded).
        """
        for d in WITHIN + (60.0,):
            for name, before, after in transitions(T0 + d):
                if not after.partner_state_acked:
                    continue  # another client's binding: no lineage here
                if endsEarlier(before, after):
                    continue
                for role in Role:
                    now = max(after.start_time_of_state, after.cltt) + 1
                    result = resolve(after, before, role, now)
                    where = f"{name} {d:+} {role.value}: {result.rule}"
                    self.assertIs(result.verdict, Verdict.SUPERSEDED, where)
                    self.assertTrue(result.answeredSuccess, where)
                    self.assertFalse(result.accepted, where)
                    self.assertIsNone(result.status, where)
                    self.assertIsNone(result.record, where)
                    self.assertTrue(result.sendLocal, where)

    def test_lostAck(self) -> None:
        """
        When our ack of the partner's record was lost, the partner sends it
        again while we send our change of it.  The partner, not knowing we
        have its record, takes ours as concurrent: if it rejects it, our
        answer to its resend (superseded, success) makes it mark its record
        acknowledged, and then it accepts ours; it never rejects it for
        good.
        """
        for d in WITHIN:
            for name, before, after in transitions(T0 + d):
                for role in Role:
                    other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
                    now = max(after.start_time_of_state, after.cltt) + 1
                    where = f"{name} {d:+} {role.value}"
                    if resolve(before, after, role, now).accepted:
                        continue
                    ours = resolve(after, before, other, now)
                    self.assertTrue(ours.answeredSuccess, where + ": " + ours.rule)
                    if ours.accepted:
                        # The binding stands on both sides (endsEarlier).
                        self.assertTrue(endsEarlier(before, after), where)
                        continue
                    acked = acknowledged(before, before)
                    theirs = resolve(acked, after, role, now)
                    self.assertIs(theirs.verdict, ACCEPT, where + ": " + theirs.rule)

    def test_renewalUnknownToPartner(self) -> None:
        """
        A renewal does not change the state, so the partner's acknowledged
        state still matches ours: a record of the partner without our later
        client transaction (beyond the tolerance) is concurrent, not a
        successor, and the later one wins on both sides.
        """
        before = known(rec(ACTIVE, at=T0))
        renewed = evolve(before, cltt=T0 + 60, expires=T0 + 3660)
        released = changed(before, RELEASED, T0 + 1)
        for role in Role:
            other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
            result = resolve(renewed, released, role, T0 + 61)
            self.assertEqual((result.verdict, result.status), (REJECT, OUTDATED), result.rule)
            self.assertTrue(result.sendLocal)
            mirror = resolve(released, renewed, other, T0 + 61)
            self.assertIs(mirror.verdict, ACCEPT, mirror.rule)
        # Within the tolerance too (chaos finding 3): a renewal or the same
        # client's Request answered after the partner's Release, while it
        # was on its way, stands on both sides.
        renewed = evolve(before, cltt=T0 + 4, expires=T0 + 3604)
        for role in Role:
            other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
            result = resolve(renewed, released, role, T0 + 5)
            self.assertEqual((result.verdict, result.status), (REJECT, OUTDATED), result.rule)
            self.assertTrue(result.sendLocal)
            self.assertIs(resolve(released, renewed, other, T0 + 5).verdict, ACCEPT)
        # A Release after the renewal the partner knew is its successor.
        later = changed(renewed, RELEASED, T0 + 4.5)
        self.assertTrue(resolve(known(renewed), later, Role.PRIMARY, T0 + 5).accepted)
        self.assertIs(
            resolve(later, known(renewed), Role.SECONDARY, T0 + 5).verdict, Verdict.SUPERSEDED
        )

    def test_endEarlierThanBinding(self) -> None:
        """
        A Decline or withdrawal of an ACTIVE binding whose client time is
        earlier than the binding's (the partner's clock behind, within the
        tolerance) is not the partner's successor of it, and the binding is
        not its predecessor: concurrent, the binding stands on both sides
        (one side keeps it and sends it, the other accepts it).  An expiry
        keeps the binding's client time and still follows it; so does a
        Release of that very binding, whose record says which transaction
        it ended (L{test_releaseOfOlderTransaction}).
        """
        seen = set()
        for d in WITHIN:
            for name, before, after in transitions(T0 + d):
                if not endsEarlier(before, after):
                    continue
                seen.add(name)
                for role in Role:
                    other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
                    now = max(after.start_time_of_state, after.cltt) + 1
                    where = f"{name} {d:+} {role.value}"
                    kept = resolve(known(before), after, role, now)
                    self.assertIn(kept.verdict, (REJECT, KEEP), where + ": " + kept.rule)
                    self.assertEqual(kept.status, OUTDATED, where)
                    self.assertTrue(kept.sendLocal, where)
                    taken = resolve(after, known(before), other, now)
                    self.assertIs(taken.verdict, ACCEPT, where + ": " + taken.rule)
        self.assertEqual(seen, {"decline", "withdraw"})

    def test_releaseOfKnownTransaction(self) -> None:
        """
        A Release of the binding the partner knew, its time earlier than
        the binding's (the releasing server's clock behind, within the
        tolerance): it ended that very transaction, so it is the successor
        on one side and the binding its predecessor on the other.
        """
        before = rec(ACTIVE, A, T0)
        for d in (-0.25, -3.0, -4.9):
            released = changed(before, RELEASED, T0 + d)
            for role in Role:
                other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
                now = T0 + 1
                taken = resolve(known(before), released, role, now)
                self.assertIs(taken.verdict, ACCEPT, taken.rule)
                self.assertTrue(taken.rule.endswith("successor"), taken.rule)
                mine = resolve(released, known(before), other, now)
                self.assertIs(mine.verdict, Verdict.SUPERSEDED, mine.rule)

    def test_releaseOfOlderTransaction(self) -> None:
        """
        Chaos finding 7 (seed 20008): the primary, its clock 2 s ahead,
        answers the client's Release of the binding as renewed at t + 19.38;
        1.9 s later, during a partition, the secondary answers the same
        client's Request with the binding it knew (a new client time, the
        start time of state kept).  The RELEASED record's time (t + 22.22 on
        the primary's clock) is later than the grant's (t + 22.15), but it
        ended an older transaction than the grant: not a successor, the
        binding stands on both sides, whatever the roles.
        """
        base = known(rec(ACTIVE, A, T0, expires=T0 + 20, valid_lifetime=20))
        renewed = evolve(base, cltt=T0 + 19.38, expires=T0 + 39.38)
        released = changed(renewed, RELEASED, T0 + 20.22 + 2)
        regrant = evolve(renewed, cltt=T0 + 22.15, expires=T0 + 42.15)
        for granter in Role:
            releaser = Role.SECONDARY if granter is Role.PRIMARY else Role.PRIMARY
            now = T0 + 24
            onGranter = resolve(regrant, released, granter, now)
            self.assertEqual(
                (onGranter.verdict, onGranter.status), (REJECT, OUTDATED), onGranter.rule
            )
            self.assertTrue(onGranter.sendLocal)
            onReleaser = resolve(released, regrant, releaser, now)
            self.assertIs(onReleaser.verdict, ACCEPT, onReleaser.rule)
            assert onReleaser.record is not None
            self.assertIs(onReleaser.record.state, ACTIVE)
        # The same Release more than the tolerance after the grant is later:
        # the client let the binding go after it was granted.
        late = changed(renewed, RELEASED, T0 + 22.15 + 5.5)
        self.assertTrue(resolve(regrant, late, Role.SECONDARY, T0 + 30).accepted)

    def test_activeActiveNotByLineage(self) -> None:
        """
        Two ACTIVE bindings go by the ACTIVE rows, whatever the partner
        knows: the same client's longer binding at the same time (a re-grant
        with a shorter lifetime loses to the binding it follows, which the
        other side then accepts); another client's by role.
        """
        before = known(rec(ACTIVE, at=T0))
        regrant = changed(before, ACTIVE, T0 + 1, expires=T0 + 601)
        for role in Role:
            other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
            result = resolve(before, regrant, role, T0 + 2)
            self.assertEqual((result.verdict, result.status), (REJECT, OUTDATED), result.rule)
            self.assertTrue(resolve(regrant, before, other, T0 + 2).accepted)
        rival = rec(ACTIVE, B, T0 + 1, iaid=9)
        self.assertEqual(resolve(before, rival, Role.PRIMARY, T0 + 2).status, IN_USE)
        self.assertTrue(resolve(before, rival, Role.SECONDARY, T0 + 2).accepted)

    def test_staleRecord(self) -> None:
        """
        A record the partner held long before ours (a database restored
        from an old copy): not a successor (its CLT is clearly older), the
        time rules reject it.
        """
        local = known(rec(RELEASED, at=T0))
        old = rec(ACTIVE, at=T0 - 600, expires=T0 - 300)
        for role in Role:
            result = resolve(local, old, role, T0)
            self.assertEqual((result.verdict, result.status), (REJECT, OUTDATED), result.rule)


def grid() -> list[Lease]:
    """Records of one address in every state, of two clients or none, at times around T0."""
    records = []
    for state in BindingState:
        for duid in (A, B, b""):
            if state is ACTIVE and not duid:
                continue
            for cltt in (0.0, T0 + 2.0):
                for stos in (T0, T0 + 4.0, T0 - 3.0, T0 + 60):
                    records.append(rec(state, duid, stos, cltt=cltt, iaid=7 if duid else 0))
    # The primary's pending takebacks (FREE, FREE-BACKUP the last state the
    # secondary acked; client time the handover's).
    for handover in (T0 - 60, T0, T0 + 3.0):
        for stos in (T0, T0 + 4.0, T0 + 60):
            records.append(
                rec(
                    FREE,
                    b"",
                    stos,
                    cltt=handover,
                    iaid=0,
                    partner_state_acked=FREE_BACKUP,
                    partner_stos_acked=handover,
                )
            )
    return records


class ConvergenceTests(RowTests):
    """
    Concurrent changes (neither side knew the other's): the two servers,
    each resolving the other's record, never both reject it for good, and
    take the same record.
    """

    def test_neverBothRejectForGood(self) -> None:
        """
        For every pair of records, the primary resolving the secondary's
        and the secondary the primary's: at least one answers success,
        except while a local ACTIVE binding is kept until its expiry (the
        draft's time(1)), which ends with it.
        """
        records = grid()
        for now in (T0 + 10, T0 + 10**6):
            for p in records:
                for s in records:
                    onPrimary = resolve(p, s, Role.PRIMARY, now)
                    onSecondary = resolve(s, p, Role.SECONDARY, now)
                    if onPrimary.answeredSuccess or onSecondary.answeredSuccess:
                        continue
                    where = f"{p} / {s}: {onPrimary.rule} / {onSecondary.rule}"
                    self.assertLess(now, T0 + 10**6, where)
                    kept = {onPrimary.verdict, onSecondary.verdict}
                    self.assertIn(KEEP, kept, where)

    def test_sameWinner(self) -> None:
        """
        Both servers accept each other's record only when they are the same
        record: never a swap, in any row (another client's ACTIVE binding
        included).
        """
        records = grid()
        for now in (T0 + 10, T0 + 10**6):
            for p in records:
                for s in records:
                    onPrimary = resolve(p, s, Role.PRIMARY, now)
                    onSecondary = resolve(s, p, Role.SECONDARY, now)
                    if not (onPrimary.accepted and onSecondary.accepted):
                        continue
                    where = f"{p} / {s}: {onPrimary.rule} / {onSecondary.rule}"
                    self.assertTrue(onPrimary.rule.endswith("same record"), where)

    def test_rivalsConverge(self) -> None:
        """
        Another client's ACTIVE binding on each side (an operator's
        partner-down while the partner was alive), over client times on
        both sides of the tolerance's edges, other expiries and IAIDs,
        early and late: exactly one side accepts the other's record, so
        never both reject for ever and never a swap; whichever update
        arrives first, both end with the same record, L{rivalWinner}'s.
        """
        deltas = (-600.0, -5.5, -5.0, -4.999, -2.0, 0.0, 2.0, 4.999, 5.0, 5.001, 5.5, 600.0)
        for delta in deltas:
            for expires in (T0 + 20, T0 + 3600, T0 + 86400):
                for iaid in (7, 8):
                    p = rec(ACTIVE, A, T0)
                    s = rec(ACTIVE, B if iaid == 7 else A, T0 + delta, iaid=iaid, expires=expires)
                    expected = s if delta > 5.0 else p
                    for now in (T0 + 10, T0 + 10**6):
                        onPrimary = resolve(p, s, Role.PRIMARY, now)
                        onSecondary = resolve(s, p, Role.SECONDARY, now)
                        where = f"{delta:+} {expires - T0} {iaid}: {onPrimary.rule}"
                        self.assertEqual(onPrimary.accepted + onSecondary.accepted, 1, where)
                        for result in (onPrimary, onSecondary):
                            if not result.accepted:
                                self.assertEqual(result.status, IN_USE, where)
                                self.assertTrue(result.sendLocal, where)
                        # Crossing updates: each keeps its own or takes the other's.
                        onP = s if onPrimary.accepted else p
                        onS = p if onSecondary.accepted else s
                        self.assertEqual((onP.duid, onP.iaid), (onS.duid, onS.iaid), where)
                        self.assertEqual((onP.duid, onP.iaid), (expected.duid, expected.iaid))
                        self.assertIs(
                            rivalWinner(p, s),
                            Role.SECONDARY if expected is s else Role.PRIMARY,
                        )
                        # One way at a time: the server holding the losing
                        # record takes the winner when it comes; the other
                        # rejects the losing one and sends the winner.
                        onLoser = onSecondary if expected is p else onPrimary
                        self.assertTrue(onLoser.accepted, where)

    def test_tieBreak(self) -> None:
        """
        Concurrent records at the same times: an ACTIVE binding wins over
        any other state on both sides; otherwise the primary's record.
        """
        active = rec(ACTIVE, A, T0)
        released = rec(RELEASED, A, T0 + 2)
        expired = rec(EXPIRED, A, T0 + 1)
        rows: list[Row] = []
        for role in Role:
            rows += [
                ("active/released", active, released, role, T0 + 3, REJECT, OUTDATED),
                ("released/active", released, active, role, T0 + 3, ACCEPT, None),
            ]
        rows += [
            ("expired/released primary", expired, released, Role.PRIMARY, T0 + 3, REJECT, OUTDATED),
            ("released/expired secondary", released, expired, Role.SECONDARY, T0, ACCEPT, None),
        ]
        results = self.check(rows)
        self.assertTrue(all("same time" in result.rule for result in results))
        self.assertTrue(results[0].sendLocal)

    def test_incomingExpired(self) -> None:
        """
        The mirror of time(1): an ACTIVE binding that has expired, against
        a local record the partner's ACTIVE binding would be kept against
        until then, is rejected (the partner now takes ours); unexpired,
        the time rules apply as before.
        """
        incoming = rec(ACTIVE, B, T0, iaid=9)  # expires T0 + 3600
        for local in (rec(EXPIRED, A, T0 - 60), rec(FREE, b"", T0 + 60, iaid=0)):
            for role in Role:
                late = resolve(local, incoming, role, T0 + 3600)
                self.assertEqual((late.verdict, late.status), (REJECT, OUTDATED), late.rule)
                self.assertTrue(resolve(incoming, local, role, T0 + 3600).accepted)
        early = resolve(rec(EXPIRED, A, T0 - 60), incoming, Role.PRIMARY, T0 + 10)
        self.assertTrue(early.accepted, early.rule)


class RivalPairTests(SynchronousTestCase):
    """
    Two update queues wired to each other (L{tests.test_queue.Pair}): after
    a partition, each server holds another client's ACTIVE binding of one
    address; on reconnection both updates cross.
    """

    def rivals(self, secondaryDelay: float) -> tuple[Pair, Lease, Lease]:
        """
        The primary's binding at T0 + 10 for one client, the secondary's at
        T0 + 10 + C{secondaryDelay} for another, made while apart and pending
        on both sides; then reconnected and settled.
        """
        pair = Pair()
        pair.disconnect()
        at = T0 + 10
        primarys = evolve(queueLease(1), cltt=at, start_time_of_state=at, expires=at + 600)
        at += secondaryDelay
        secondarys = evolve(
            queueLease(1, duid=b"\x00\x03other", iaid=9),
            cltt=at,
            start_time_of_state=at,
            expires=at + 600,
        )
        pair.change(Pair.PRIMARY, primarys)
        pair.change(Pair.SECONDARY, secondarys)
        pair.clock.advance(max(0.0, secondaryDelay) + 20)
        with capturedLogs():
            pair.connect()
            pair.settle(120)
        return pair, primarys, secondarys

    def assertBoth(self, pair: Pair, winner: Lease) -> None:
        """Both stores hold C{winner}'s binding, nothing pending: the same records."""
        self.assertEqual(pair.pending(), [0, 0])
        self.assertEqual(pair.records(Pair.PRIMARY), pair.records(Pair.SECONDARY))
        for side in (Pair.PRIMARY, Pair.SECONDARY):
            found = pair.current(side, 1)
            self.assertEqual(
                (found.state, found.duid, found.iaid, found.cltt),
                (ACTIVE, winner.duid, winner.iaid, winner.cltt),
            )

    def test_secondaryClearlyLater(self) -> None:
        """
        The secondary's binding is 60 s later: both end with it (the
        primary accepts it, the secondary rejects the primary's with
        AddressInUse) instead of each taking the other's.
        """
        pair, _, secondarys = self.rivals(60)
        self.assertBoth(pair, secondarys)
        self.assertLessEqual(sum(queue.rejected for queue in pair.queues), 1)
        self.assertLessEqual(sum(queue.sent for queue in pair.queues), 3)

    def test_sameTime(self) -> None:
        """Within the tolerance, the primary's binding wins on both sides."""
        for delay in (-4.0, 0.0, 4.0, 5.0):
            pair, primarys, _ = self.rivals(delay)
            self.assertBoth(pair, primarys)
            self.assertLessEqual(sum(queue.rejected for queue in pair.queues), 1, delay)
            self.assertLessEqual(sum(queue.sent for queue in pair.queues), 3, delay)

    def test_primaryLater(self) -> None:
        """The primary's binding is the later one: it wins on both sides."""
        pair, primarys, _ = self.rivals(-60)
        self.assertBoth(pair, primarys)
        self.assertLessEqual(sum(queue.rejected for queue in pair.queues), 1)


class RegrantAfterReleaseTests(RowTests):
    """
    Chaos finding 3: a Release answered by one server and the same
    client's Request (or Renew) answered by the other soon after, before
    the Release reached it (a partition, or the update in flight).  The
    client holds the binding granted last: it stands on both sides, the
    older RELEASED record is rejected by the server holding the binding
    and replaced on the other by the binding.
    """

    def shapes(self, gap: float) -> list[tuple[str, Lease, Lease]]:
        """
        C{(name, released, regrant)}: the Release on one server and the
        grant on the other C{gap} seconds later, each made from the
        binding both knew (the engine keeps the start time of state and
        the acknowledged fields of an ACTIVE binding it grants again).
        """
        base = known(rec(ACTIVE, A, T0))
        # Shape 1 (seed 301): Release on the primary at t + 17.5 during a
        # partition, the secondary's grant at t + 17.5 + gap.
        released1 = changed(base, RELEASED, T0 + 17.5)
        at = T0 + 17.5 + gap
        regrant1 = evolve(base, cltt=at, expires=at + 20, valid_lifetime=20, preferred_lifetime=10)
        # Shape 2 (the replay): renewed on the secondary (replicated), released
        # there at t + 45.65, granted again by the primary gap seconds later.
        renewed = evolve(base, cltt=T0 + 44.98, expires=T0 + 64.98, valid_lifetime=20)
        released2 = changed(renewed, RELEASED, T0 + 45.65)
        at = T0 + 45.65 + gap
        regrant2 = evolve(renewed, cltt=at, expires=at + 20, valid_lifetime=20)
        return [("partition", released1, regrant1), ("in flight", released2, regrant2)]

    def test_findingRows(self) -> None:
        """
        The two shapes of the finding as seen (the grant 2.46 s and 2.75 s
        after the Release), on either role: the server holding the grant
        rejects the RELEASED record (OutdatedBindingInformation) and sends
        its binding; the server holding the RELEASED record accepts the
        binding.
        """
        rows: list[Row] = []
        partition = self.shapes(2.46)[0]
        inFlight = self.shapes(2.75)[1]
        for name, released, regrant in (partition, inFlight):
            now = regrant.cltt + 4
            for role in Role:
                rows += [
                    (name + " on the granter", regrant, released, role, now, REJECT, OUTDATED),
                    (name + " on the releaser", released, regrant, role, now, ACCEPT, None),
                ]
        for result in self.check(rows):
            if not result.accepted:
                self.assertTrue(result.sendLocal, result.rule)
            else:
                assert result.record is not None
                self.assertIs(result.record.state, ACTIVE)

    def test_anyGap(self) -> None:
        """
        Whatever the gap between the Release and the later grant (within
        the tolerance, at its edge, beyond it), exactly one side accepts
        the other's record, and it is the binding: same winner, no swap,
        no rejection both ways.
        """
        for gap in (0.01, 0.5, 2.5, 4.9, 5.0, 5.1, 60.0):
            for name, released, regrant in self.shapes(gap):
                for granter in Role:
                    releaser = Role.SECONDARY if granter is Role.PRIMARY else Role.PRIMARY
                    now = regrant.cltt + 1
                    onGranter = resolve(regrant, released, granter, now)
                    onReleaser = resolve(released, regrant, releaser, now)
                    where = f"{name} +{gap} {granter.value}: {onGranter.rule} / {onReleaser.rule}"
                    self.assertFalse(onGranter.answeredSuccess, where)
                    self.assertTrue(onGranter.sendLocal, where)
                    self.assertIs(onReleaser.verdict, ACCEPT, where)

    def test_releaseAfterRenewal(self) -> None:
        """
        A Release after the renewal the partner knew (the same server: Renew
        at t, Release at t + 1, or 0.01 s) is its successor on the other
        side, and the renewal the predecessor of the Release on this one:
        the Release wins on both sides.
        """
        base = known(rec(ACTIVE, A, T0))
        renewed = evolve(base, cltt=T0 + 100, expires=T0 + 3700)
        for gap in (0.0, 0.01, 1.0, 4.9, 60.0):
            released = changed(renewed, RELEASED, T0 + 100 + gap)
            for role in Role:
                other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
                now = T0 + 100 + gap + 1
                where = f"+{gap} {role.value}"
                taken = resolve(renewed, released, role, now)
                self.assertIs(taken.verdict, ACCEPT, where + ": " + taken.rule)
                self.assertTrue(taken.rule.endswith("successor"), where)
                mine = resolve(released, renewed, other, now)
                self.assertIs(mine.verdict, Verdict.SUPERSEDED, where + ": " + mine.rule)

    def test_lostAck(self) -> None:
        """
        The Release reached the other server, which granted the binding
        again (a new start time of state) after storing it, but the ack
        was lost: the releaser's resend of the RELEASED record is
        superseded by the grant; the releaser accepts the grant before the
        answer (concurrent, the binding stands at the same time) and after
        it (successor of the RELEASED record it now knows acked).
        """
        for gap in (0.01, 2.5, 4.9):
            for _, released, _ in self.shapes(gap):
                stored = known(released)
                at = released.cltt + gap
                back = changed(stored, ACTIVE, at, expires=at + 20, valid_lifetime=20)
                for role in Role:
                    other = Role.SECONDARY if role is Role.PRIMARY else Role.PRIMARY
                    now = at + 1
                    resent = resolve(back, released, role, now)
                    self.assertIs(resent.verdict, Verdict.SUPERSEDED, resent.rule)
                    self.assertTrue(resent.sendLocal)
                    before = resolve(released, back, other, now)
                    self.assertIs(before.verdict, ACCEPT, before.rule)
                    after = resolve(acknowledged(released, released), back, other, now)
                    self.assertIs(after.verdict, ACCEPT, after.rule)
                    self.assertTrue(after.rule.endswith("successor"), after.rule)


class RegrantAfterReleasePairTests(SynchronousTestCase):
    """
    Chaos finding 3 over two update queues wired to each other
    (L{tests.test_queue.Pair}): the exact sequences of the finding, both
    orders of arrival, and with the first answers lost.
    """

    def grant(self, pair: Pair, side: int, at: float, lifetime: int = 20) -> Lease:
        """
        The engine's grant of lease 1 on C{side} at C{at} to the client
        holding it: the stored ACTIVE binding with a new client time and
        lifetime, its start time of state and acknowledged fields kept.
        """
        pair.clock.advance(max(0.0, at - pair.clock.seconds()))
        current = pair.current(side, 1)
        self.assertIs(current.state, ACTIVE)
        return pair.change(
            side,
            evolve(
                current,
                cltt=at,
                expires=at + lifetime,
                valid_lifetime=lifetime,
                preferred_lifetime=lifetime // 2,
            ),
        )

    def heal(self, pair: Pair, first: int | None, loseFirstAnswers: bool = False) -> None:
        """
        Reconnect: C{first}'s queue alone for a moment (its update arrives
        first), or both at once; optionally with the first answers lost.
        """
        pair.loseAnswers = loseFirstAnswers
        with capturedLogs():
            if first is not None:
                pair.queues[first].attach(pair._sender(1 - first))
                pair.settle()
            pair.connect()
            pair.settle()
            if loseFirstAnswers:
                pair.disconnect()
                pair.loseAnswers = False
                pair.connect()
            pair.settle(120)

    def assertGrantStands(self, pair: Pair, grant: Lease) -> None:
        """Both stores hold C{grant}'s binding, agree, and nothing is pending."""
        self.assertEqual(pair.pending(), [0, 0])
        self.assertEqual(pair.records(Pair.PRIMARY), pair.records(Pair.SECONDARY))
        for side in (Pair.PRIMARY, Pair.SECONDARY):
            found = pair.current(side, 1)
            self.assertEqual(
                (found.state, found.duid, found.iaid, found.cltt, found.expires),
                (ACTIVE, grant.duid, grant.iaid, grant.cltt, grant.expires),
            )
        self.assertLessEqual(sum(queue.rejected for queue in pair.queues), 2)

    def test_partition(self) -> None:
        """
        Seed 301: the binding granted by the primary and replicated; the
        partner link down at t + 16.9; the client releases on the primary
        at t + 17.5 and the secondary grants it the same lease at t +
        19.96; the link heals at t + 24.  The secondary's grant stands on
        both sides, whichever update arrives first, answers lost or not.
        """
        P, S = Pair.PRIMARY, Pair.SECONDARY
        for first in (None, P, S):
            for lose in (False, True):
                pair = Pair()
                pair.change(P, queueLease(1))
                pair.settle()
                self.assertTrue(pair.current(S, 1).stateAcked)
                pair.clock.advance(16.9)
                pair.disconnect()
                pair.clientChange(P, 1, RELEASED, T0 + 17.5)
                grant = self.grant(pair, S, T0 + 19.96)
                pair.clock.advance(T0 + 24 - pair.clock.seconds())
                self.heal(pair, first, lose)
                self.assertGrantStands(pair, grant)

    def test_updateInFlight(self) -> None:
        """
        The replay: the secondary's binding renewed there at t + 44.98
        (replicated), released there at t + 45.65, its update held back
        (in flight); the primary grants the same lease to the client at t
        + 48.4.  The primary's grant stands on both sides, whether it
        reaches the secondary before the RELEASED record leaves, after it
        arrives, or with the answers lost.
        """
        P, S = Pair.PRIMARY, Pair.SECONDARY
        for first in (None, P, S):
            for lose in (False, True):
                pair = Pair()
                pair.change(S, queueLease(1))
                pair.settle()
                self.grant(pair, S, T0 + 44.98)
                pair.settle()
                self.assertEqual(pair.current(P, 1).cltt, T0 + 44.98)
                self.assertEqual(pair.pending(), [0, 0])
                pair.queues[S].detach()  # the Release's update held back
                pair.clientChange(S, 1, RELEASED, T0 + 45.65)
                if first != P:
                    pair.queues[P].detach()  # the grant's too, till the heal
                grant = self.grant(pair, P, T0 + 48.4)
                pair.settle()  # first == P: the grant reaches the secondary now
                self.heal(pair, first, lose)
                self.assertGrantStands(pair, grant)

    def test_releaseAfterRenewal(self) -> None:
        """
        The same server renews at t and the client releases there at t +
        1, its update crossing nothing: the Release wins on both sides.
        """
        P, S = Pair.PRIMARY, Pair.SECONDARY
        pair = Pair()
        pair.change(P, queueLease(1))
        pair.settle()
        self.grant(pair, P, T0 + 30)
        pair.settle()
        pair.clientChange(P, 1, RELEASED, T0 + 31)
        pair.settle(10)
        self.assertEqual(pair.pending(), [0, 0])
        self.assertEqual(pair.records(P), pair.records(S))
        self.assertIs(pair.current(S, 1).state, RELEASED)
        self.assertEqual([queue.rejected for queue in pair.queues], [0, 0])
