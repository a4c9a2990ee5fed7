"""
Tests for L{dhcp6ha.failover.policy}: who answers, who allocates what, and
the MCLT rule, in every endpoint state.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from attrs import evolve
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dhcp6ha.failover.conflict import acknowledged
from dhcp6ha.failover.machine import EndpointState, FailoverEndpoint, Role
from dhcp6ha.failover.policy import FailoverPolicy, partnerLifetime
from dhcp6ha.interfaces import IAllocationPolicy, IFailoverPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import MessageType
from dhcp6ha.testing import FakePeer, FakeUpdateQueue, MemoryLeaseStore

S = EndpointState
T0 = 1_700_000_000.0
MCLT = 3600.0
DAY = 86400

ODD = IPv6Address("2001:db8:1::101")  # the primary's
EVEN = IPv6Address("2001:db8:1::102")  # the secondary's
PREFIX = IPv6Address("2001:db8:100:100::")

A = b"\x00\x03\x00\x01client-a"
B = b"\x00\x03\x00\x01client-b"
PARTNER = b"\x00\x03\x00\x01partner"

ALL_STATES = tuple(S)
ALLOCATING = (
    S.NORMAL,
    S.COMMUNICATIONS_INTERRUPTED,
    S.RESOLUTION_INTERRUPTED,
    S.CONFLICT_DONE,
    S.PARTNER_DOWN,
)
TAKEOVER = (
    S.COMMUNICATIONS_INTERRUPTED,
    S.RESOLUTION_INTERRUPTED,
    S.PARTNER_DOWN,
    S.CONFLICT_DONE,
)


@dataclass
class View:
    """A settable L{EndpointView}."""

    role: Role = Role.PRIMARY
    state: EndpointState = S.NORMAL
    startTimeOfState: float = T0
    mclt: float = MCLT


def makePolicy(**kw: Any) -> tuple[FailoverPolicy, View, FakeUpdateQueue]:
    view = View(**{k: v for k, v in kw.items() if k in ("role", "state", "startTimeOfState")})
    queue = FakeUpdateQueue()
    options = {k: v for k, v in kw.items() if k not in ("role", "state", "startTimeOfState")}
    return FailoverPolicy(view, queue, **options), view, queue


def lease(
    state: BindingState = BindingState.ACTIVE,
    address: IPv6Address = ODD,
    duid: bytes = A,
    iaid: int = 1,
    lease_type: LeaseType = LeaseType.NA,
    **kw: Any,
) -> Lease:
    values: dict[str, Any] = {
        "lease_type": lease_type,
        "address": address,
        "prefix_length": 56 if lease_type is LeaseType.PD else 128,
        "state": state,
        "duid": duid,
        "iaid": iaid,
        "start_time_of_state": T0 - 500,
        "cltt": T0 - 500,
        "preferred_lifetime": 1800,
        "valid_lifetime": 3600,
        "expires": T0 - 500 + 3600,
    }
    values.update(kw)
    return Lease(**values)


def acked(record: Lease) -> Lease:
    """C{record} with its current state acknowledged by the partner."""
    return evolve(
        record,
        partner_state_acked=record.state,
        partner_stos_acked=record.start_time_of_state,
    )


class InterfaceTests(SynchronousTestCase):
    """L{FailoverPolicy} provides its interfaces."""

    def test_verify(self) -> None:
        """Both L{IFailoverPolicy} and, through it, L{IAllocationPolicy}."""
        policy, _, _ = makePolicy()
        self.assertTrue(verifyObject(IFailoverPolicy, policy))
        self.assertTrue(verifyObject(IAllocationPolicy, policy))


class RespondsToTests(SynchronousTestCase):
    """Responsiveness per state and role (RFC 8156 sections 3, 8)."""

    def test_table(self) -> None:
        """Every state, role, message type, addressed or not."""
        addressed = {
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        }
        types = [
            MessageType.SOLICIT,
            MessageType.REQUEST,
            MessageType.CONFIRM,
            MessageType.RENEW,
            MessageType.REBIND,
            MessageType.RELEASE,
            MessageType.DECLINE,
            MessageType.INFORMATION_REQUEST,
        ]
        for state in ALL_STATES:
            for role in Role:
                policy, _, _ = makePolicy(role=role, state=state)
                for msg_type in types:
                    for ours in (True, False):
                        if state in TAKEOVER:
                            want = True
                        elif state is S.NORMAL and role is Role.PRIMARY:
                            want = ours or msg_type not in addressed
                        elif state is S.NORMAL:
                            want = ours
                        elif state is S.RECOVER_DONE:
                            want = ours and msg_type is MessageType.RENEW
                        else:
                            want = False
                        self.assertEqual(
                            policy.respondsTo(msg_type, ours), want, (state, role, msg_type, ours)
                        )

    def test_partnerServerId(self) -> None:
        """A message naming the partner: taken over only in takeover states, only the partner's."""
        for state in ALL_STATES:
            policy, _, _ = makePolicy(state=state, partnerDuid=PARTNER)
            takeover = state in TAKEOVER
            self.assertEqual(policy.respondsToServer(MessageType.RENEW, PARTNER), takeover)
            self.assertFalse(policy.respondsToServer(MessageType.RENEW, b"\x00\x02stranger"))
            policy, _, _ = makePolicy(state=state)
            self.assertEqual(policy.respondsToServer(MessageType.RENEW, b"\x00\x02x"), takeover)


class OwnershipTests(SynchronousTestCase):
    """The split of the pools (sections 4.2.1.1, 4.2.2)."""

    def test_addresses(self) -> None:
        """Primary odd, secondary even."""
        primary, _, _ = makePolicy(role=Role.PRIMARY)
        secondary, _, _ = makePolicy(role=Role.SECONDARY)
        self.assertTrue(primary.isOwn(LeaseType.NA, ODD, 128, None))
        self.assertFalse(primary.isOwn(LeaseType.NA, EVEN, 128, None))
        self.assertFalse(secondary.isOwn(LeaseType.NA, ODD, 128, None))
        self.assertTrue(secondary.isOwn(LeaseType.NA, EVEN, 128, None))
        # The binding state does not matter for addresses.
        backup = lease(BindingState.FREE_BACKUP, ODD)
        self.assertTrue(primary.isOwn(LeaseType.NA, ODD, 128, backup))

    def test_prefixes(self) -> None:
        """No record, FREE, PENDING-FREE: the primary's; FREE-BACKUP: the secondary's."""
        primary, _, _ = makePolicy(role=Role.PRIMARY)
        secondary, _, _ = makePolicy(role=Role.SECONDARY)
        for record, primarys in [
            (None, True),
            (lease(BindingState.FREE, PREFIX, lease_type=LeaseType.PD), True),
            (lease(BindingState.PENDING_FREE, PREFIX, lease_type=LeaseType.PD), True),
            (lease(BindingState.FREE_BACKUP, PREFIX, lease_type=LeaseType.PD), False),
        ]:
            self.assertEqual(primary.isOwn(LeaseType.PD, PREFIX, 56, record), primarys)
            self.assertEqual(secondary.isOwn(LeaseType.PD, PREFIX, 56, record), not primarys)


class MayAllocateTests(SynchronousTestCase):
    """Who may allocate what, in each state."""

    def may(
        self, policy: FailoverPolicy, address: IPv6Address, record: Lease | None, **kw: Any
    ) -> bool:
        lease_type = kw.pop("lease_type", LeaseType.NA)
        duid = kw.pop("duid", B)
        now = kw.pop("now", T0)
        length = 56 if lease_type is LeaseType.PD else 128
        return policy.mayAllocate(lease_type, address, length, record, duid, 1, now)

    def test_noAllocationOutsideAllocatingStates(self) -> None:
        """RECOVER-DONE and the unresponsive states allocate nothing."""
        for state in ALL_STATES:
            for role in Role:
                policy, _, _ = makePolicy(role=role, state=state)
                own = ODD if role is Role.PRIMARY else EVEN
                self.assertEqual(self.may(policy, own, None), state in ALLOCATING, (state, role))

    def test_addressSplitInEveryAllocatingState(self) -> None:
        """Only its own half, PARTNER-DOWN included, even long after MCLT."""
        for state in ALLOCATING:
            for role in Role:
                policy, _, _ = makePolicy(role=role, state=state, startTimeOfState=T0 - 10 * DAY)
                own, other = (ODD, EVEN) if role is Role.PRIMARY else (EVEN, ODD)
                for record in (None, lease(BindingState.FREE, own, duid=b"", iaid=0)):
                    self.assertTrue(self.may(policy, own, record))
                self.assertFalse(self.may(policy, other, None), (state, role))
                self.assertFalse(
                    self.may(policy, other, lease(BindingState.FREE, other, duid=b"")),
                    (state, role),
                )

    def test_prefixSplit(self) -> None:
        """Outside PARTNER-DOWN: FREE to the primary, FREE-BACKUP to the secondary."""
        free = lease(BindingState.FREE, PREFIX, duid=b"", lease_type=LeaseType.PD)
        backup = lease(BindingState.FREE_BACKUP, PREFIX, duid=b"", lease_type=LeaseType.PD)
        for state in (S.NORMAL, S.COMMUNICATIONS_INTERRUPTED, S.RESOLUTION_INTERRUPTED):
            primary, _, _ = makePolicy(role=Role.PRIMARY, state=state)
            secondary, _, _ = makePolicy(role=Role.SECONDARY, state=state)
            for record, primarys in ((None, True), (free, True), (backup, False)):
                self.assertEqual(
                    self.may(primary, PREFIX, record, lease_type=LeaseType.PD), primarys
                )
                self.assertEqual(
                    self.may(secondary, PREFIX, record, lease_type=LeaseType.PD), not primarys
                )

    def test_partnerPrefixesAfterMclt(self) -> None:
        """PARTNER-DOWN: the partner's free prefixes only MCLT after entering it (8.4.1)."""
        backup = lease(BindingState.FREE_BACKUP, PREFIX, duid=b"", lease_type=LeaseType.PD)
        primary, _, _ = makePolicy(role=Role.PRIMARY, state=S.PARTNER_DOWN)
        secondary, _, _ = makePolicy(role=Role.SECONDARY, state=S.PARTNER_DOWN)
        for now, allowed in ((T0, False), (T0 + MCLT - 1, False), (T0 + MCLT, True)):
            self.assertEqual(
                self.may(primary, PREFIX, backup, lease_type=LeaseType.PD, now=now), allowed
            )
            self.assertEqual(
                self.may(secondary, PREFIX, None, lease_type=LeaseType.PD, now=now), allowed
            )
        # Its own at once.
        self.assertTrue(self.may(primary, PREFIX, None, lease_type=LeaseType.PD))

    def test_activeAndAbandoned(self) -> None:
        """Another client's ACTIVE binding: never; its own: yes; ABANDONED: never."""
        policy, _, _ = makePolicy(state=S.PARTNER_DOWN, startTimeOfState=T0 - 10 * DAY)
        active = lease(BindingState.ACTIVE, ODD, duid=A, expires=T0 - DAY)
        self.assertFalse(self.may(policy, ODD, active, duid=B))
        self.assertTrue(self.may(policy, ODD, active, duid=A))
        self.assertFalse(self.may(policy, ODD, lease(BindingState.ABANDONED, ODD), duid=A))

    def test_expiredReleasedAddresses(self) -> None:
        """
        EXPIRED, RELEASED, RESET addresses of its own half: the same client
        at once, another client only once the partner acked that state.
        """
        for state in (BindingState.EXPIRED, BindingState.RELEASED, BindingState.RESET):
            for mode in (S.NORMAL, S.COMMUNICATIONS_INTERRUPTED):
                policy, _, _ = makePolicy(state=mode)
                record = lease(state, ODD, duid=A)
                self.assertTrue(self.may(policy, ODD, record, duid=A))
                self.assertFalse(self.may(policy, ODD, record, duid=B))
                self.assertTrue(self.may(policy, ODD, acked(record), duid=B))
                # An ack of an earlier state does not count.
                stale = evolve(
                    acked(record), state=BindingState.RELEASED, start_time_of_state=T0 - 1
                )
                if state is not BindingState.RELEASED:
                    stale = evolve(stale, state=state)
                self.assertFalse(self.may(policy, ODD, stale, duid=B))
                # The partner's half: never, not even the same client.
                theirs = lease(state, EVEN, duid=A)
                self.assertFalse(self.may(policy, EVEN, acked(theirs), duid=A))

    def test_partnerDownUnackedAddress(self) -> None:
        """
        PARTNER-DOWN: an unacked EXPIRED address goes to another client MCLT
        after the latest of its expiry, partner lifetimes, and entering
        PARTNER-DOWN (8.4.1).
        """
        record = lease(
            BindingState.EXPIRED,
            ODD,
            expires=T0 + 100,
            partner_lifetime_sent=T0 + 200,
            partner_lifetime_acked=T0 + 150,
        )
        policy, _, _ = makePolicy(state=S.PARTNER_DOWN, startTimeOfState=T0)
        self.assertFalse(self.may(policy, ODD, record, now=T0 + 200 + MCLT - 1))
        self.assertTrue(self.may(policy, ODD, record, now=T0 + 200 + MCLT))
        # Entering PARTNER-DOWN late pushes it further.
        policy, _, _ = makePolicy(state=S.PARTNER_DOWN, startTimeOfState=T0 + 1000)
        self.assertFalse(self.may(policy, ODD, record, now=T0 + 1000 + MCLT - 1))
        self.assertTrue(self.may(policy, ODD, record, now=T0 + 1000 + MCLT))
        # Outside PARTNER-DOWN, never.
        policy, _, _ = makePolicy(state=S.COMMUNICATIONS_INTERRUPTED)
        self.assertFalse(self.may(policy, ODD, record, now=T0 + 100 * DAY))

    def test_expiredPrefixes(self) -> None:
        """
        EXPIRED prefixes: the primary like addresses; the secondary only by
        the PARTNER-DOWN rule (it cannot know whether the primary freed it).
        """
        record = lease(BindingState.EXPIRED, PREFIX, duid=A, lease_type=LeaseType.PD)
        primary, _, _ = makePolicy(role=Role.PRIMARY, state=S.COMMUNICATIONS_INTERRUPTED)
        self.assertTrue(self.may(primary, PREFIX, record, duid=A, lease_type=LeaseType.PD))
        self.assertFalse(self.may(primary, PREFIX, record, duid=B, lease_type=LeaseType.PD))
        self.assertTrue(self.may(primary, PREFIX, acked(record), duid=B, lease_type=LeaseType.PD))
        secondary, view, _ = makePolicy(role=Role.SECONDARY, state=S.COMMUNICATIONS_INTERRUPTED)
        for candidate in (record, acked(record)):
            for duid in (A, B):
                self.assertFalse(
                    self.may(secondary, PREFIX, candidate, duid=duid, lease_type=LeaseType.PD)
                )
        view.state = S.PARTNER_DOWN
        view.startTimeOfState = T0
        record = evolve(record, expires=T0 - 100)
        self.assertFalse(
            self.may(secondary, PREFIX, record, duid=B, lease_type=LeaseType.PD, now=T0 + MCLT - 1)
        )
        self.assertTrue(
            self.may(secondary, PREFIX, record, duid=B, lease_type=LeaseType.PD, now=T0 + MCLT)
        )


class LifetimeTests(SynchronousTestCase):
    """The MCLT rule (section 4.4)."""

    def test_newLease(self) -> None:
        """No record, or someone else's: at most MCLT."""
        for state in (S.NORMAL, S.COMMUNICATIONS_INTERRUPTED, S.RECOVER_DONE, S.CONFLICT_DONE):
            policy, _, _ = makePolicy(state=state)
            self.assertEqual(policy.maxValidLifetime(None, 3 * DAY, T0), MCLT)
            self.assertEqual(policy.maxValidLifetime(None, 600, T0), 600)
            expired = acked(lease(BindingState.EXPIRED, partner_lifetime_acked=T0 + 9 * DAY))
            self.assertEqual(policy.maxValidLifetime(expired, 3 * DAY, T0), MCLT)

    def test_acked(self) -> None:
        """An acked ACTIVE binding: up to the acked partner lifetime plus MCLT."""
        policy, _, _ = makePolicy(state=S.COMMUNICATIONS_INTERRUPTED)
        record = acked(lease(partner_lifetime_acked=T0 + DAY))
        self.assertEqual(policy.maxValidLifetime(record, 3 * DAY, T0), DAY + MCLT)
        self.assertEqual(policy.maxValidLifetime(record, 600, T0), 600)
        # Past the acked lifetime: back to MCLT.
        self.assertEqual(policy.maxValidLifetime(record, 3 * DAY, T0 + 2 * DAY), MCLT)
        # An acked lifetime of a binding whose current state was not acked
        # (a new client's binding that inherited the field) does not count.
        unacked = evolve(record, start_time_of_state=T0)
        self.assertEqual(policy.maxValidLifetime(unacked, 3 * DAY, T0), MCLT)

    def test_partnerDown(self) -> None:
        """PARTNER-DOWN: no cap."""
        policy, _, _ = makePolicy(state=S.PARTNER_DOWN)
        self.assertEqual(policy.maxValidLifetime(None, 30 * DAY, T0), 30 * DAY)

    def test_invariant(self) -> None:
        """Outside PARTNER-DOWN a lifetime never ends past max(acked, now) + MCLT."""
        policy, _, _ = makePolicy(state=S.NORMAL)
        for ackedAt in (0.0, T0 - DAY, T0, T0 + 1.5, T0 + 3 * DAY):
            record = acked(lease(partner_lifetime_acked=ackedAt))
            for now in (T0 - 10, T0, T0 + 0.25, T0 + DAY, T0 + 5 * DAY):
                for desired in (0, 1, 600, 3 * DAY, 30 * DAY):
                    given = policy.maxValidLifetime(record, desired, now)
                    self.assertLessEqual(now + given, max(ackedAt, now) + MCLT)
                    self.assertLessEqual(given, desired)
                    self.assertGreaterEqual(given, 0)

    def test_mcltExample(self) -> None:
        """
        Section 4.4.1 with a clock: 1 hour first, partner lifetime 1/2 hour
        + 3 days proposed and acked, the renewal at T1 gets 3 days, and the
        next update proposes 1.5 + 3 days.
        """
        clock = Clock()
        clock.advance(T0)
        policy, _, queue = makePolicy(state=S.NORMAL, desiredLifetime=lambda lease: 3 * DAY)
        valid = policy.maxValidLifetime(None, 3 * DAY, clock.seconds())
        self.assertEqual(valid, 3600)
        granted = lease(start_time_of_state=T0, cltt=T0, valid_lifetime=valid, expires=T0 + valid)
        policy.bindingChanged(granted)
        sent = queue.enqueued[-1]
        self.assertEqual(sent.partner_lifetime_sent, T0 + 1800 + 3 * DAY)
        stored = acknowledged(granted, sent)
        self.assertTrue(stored.stateAcked)
        clock.advance(1800)
        renewed = policy.maxValidLifetime(stored, 3 * DAY, clock.seconds())
        self.assertEqual(renewed, 3 * DAY)
        again = evolve(stored, cltt=clock.seconds(), valid_lifetime=renewed)
        policy.bindingChanged(again)
        self.assertEqual(
            queue.enqueued[-1].partner_lifetime_sent, clock.seconds() + 1.5 * DAY + 3 * DAY
        )


class BindingChangedTests(SynchronousTestCase):
    """Lazy updates go to the queue with the partner lifetime to propose."""

    def test_active(self) -> None:
        """ACTIVE: C{cltt + T1 fraction * valid + desired}; default desired: the valid lifetime."""
        policy, _, queue = makePolicy()
        record = lease(cltt=T0, valid_lifetime=1000)
        policy.bindingChanged(record)
        self.assertEqual(queue.enqueued, [evolve(record, partner_lifetime_sent=T0 + 500 + 1000)])

    def test_other(self) -> None:
        """Other states go as they are."""
        policy, _, queue = makePolicy()
        record = lease(BindingState.RELEASED, partner_lifetime_sent=5.0)
        policy.bindingChanged(record)
        self.assertEqual(queue.enqueued, [record])

    def test_function(self) -> None:
        """L{partnerLifetime}."""
        self.assertEqual(partnerLifetime(100.0, 3600, 7200), 100 + 1800 + 7200)
        self.assertEqual(partnerLifetime(100.0, 3600, 7200, 0.8), 100 + 2880 + 7200)


class WithEndpointTests(SynchronousTestCase):
    """The policy follows a real L{FailoverEndpoint}."""

    def test_follows(self) -> None:
        """STARTUP answers nothing; partner-down answers all, the partner's prefixes after MCLT."""
        clock = Clock()
        clock.advance(T0)
        endpoint = FailoverEndpoint("rel", Role.SECONDARY, clock, MemoryLeaseStore(), mclt=MCLT)
        policy = FailoverPolicy(endpoint, FakeUpdateQueue())
        endpoint.start()
        self.assertFalse(policy.respondsTo(MessageType.SOLICIT, False))
        self.assertFalse(policy.mayAllocate(LeaseType.NA, EVEN, 128, None, A, 1, T0))
        endpoint.operatorPartnerDown()
        endpoint.connected(FakePeer())
        self.assertTrue(policy.respondsTo(MessageType.RENEW, False))
        self.assertTrue(policy.mayAllocate(LeaseType.NA, EVEN, 128, None, A, 1, T0))
        self.assertFalse(policy.mayAllocate(LeaseType.NA, ODD, 128, None, A, 1, T0 + DAY))
        self.assertFalse(policy.mayAllocate(LeaseType.PD, PREFIX, 56, None, A, 1, T0))
        self.assertTrue(policy.mayAllocate(LeaseType.PD, PREFIX, 56, None, A, 1, T0 + MCLT))
        self.assertEqual(policy.maxValidLifetime(None, 9 * DAY, T0), 9 * DAY)
