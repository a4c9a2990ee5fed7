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
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.failover.conflict import (
    FailoverStatus,
    Resolution,
    Verdict,
    acknowledged,
    resolve,
)
from dhcp6ha.failover.machine import Role
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

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


class TableTests(SynchronousTestCase):
    """Every row of the table in L{dhcp6ha.failover.conflict}."""

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
        ACTIVE against another client's ACTIVE: the secondary accepts the
        primary's; the primary accepts only a later client time, else
        AddressInUse.
        """
        local = rec(ACTIVE, A, at=T0)
        self.check(
            [
                (
                    "secondary, older",
                    local,
                    rec(ACTIVE, B, T0 - 600),
                    Role.SECONDARY,
                    T0,
                    ACCEPT,
                    None,
                ),
                (
                    "secondary, later",
                    local,
                    rec(ACTIVE, B, T0 + 600),
                    Role.SECONDARY,
                    T0,
                    ACCEPT,
                    None,
                ),
                ("primary, later", local, rec(ACTIVE, B, T0 + 600), Role.PRIMARY, T0, ACCEPT, None),
                ("primary, same", local, rec(ACTIVE, B, T0 + 2), Role.PRIMARY, T0, REJECT, IN_USE),
                (
                    "primary, older",
                    local,
                    rec(ACTIVE, B, T0 - 600),
                    Role.PRIMARY,
                    T0,
                    REJECT,
                    IN_USE,
                ),
            ]
        )
        # The same DUID with another IAID is another binding.
        other = rec(ACTIVE, A, T0 - 600, iaid=8)
        self.assertEqual(resolve(local, other, Role.PRIMARY, T0).status, IN_USE)

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
                if localState is RESET and state is ACTIVE:
                    continue
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
