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

from dhcp6ha.engine import Engine
from dhcp6ha.failover.conflict import acknowledged
from dhcp6ha.failover.machine import (
    EndpointState,
    FailoverEndpoint,
    FailoverRecord,
    Role,
    Service,
)
from dhcp6ha.failover.policy import FailoverPolicy, PartnerTrafficView, partnerLifetime
from dhcp6ha.interfaces import (
    IAllocationPolicy,
    IFailoverPolicy,
    IPartnerLifetimePolicy,
    IRenewalPolicy,
)
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IANA,
    IAPD,
    IAAddress,
    IAPrefix,
    Message,
    MessageType,
    Option,
    ServerId,
    StatusCode,
)
from dhcp6ha.testing import FakePeer, FakeUpdateQueue, MemoryLeaseStore
from tests.test_allocation import activeLease, clientDuid, makeSubnet
from tests.test_engine import DIRECT, find, innerReply, makeConfig, message, na, one, pd, statusOf

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
                            want = ours or msg_type is not MessageType.REQUEST
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
            self.assertEqual(policy.respondsToServer(MessageType.RELEASE, PARTNER), takeover)
            self.assertEqual(policy.respondsToServer(MessageType.DECLINE, PARTNER), takeover)
            self.assertFalse(policy.respondsToServer(MessageType.RENEW, b"\x00\x02stranger"))
            policy, _, _ = makePolicy(state=state)
            self.assertEqual(policy.respondsToServer(MessageType.RENEW, b"\x00\x02x"), takeover)

    def test_requestNamingPartnerIgnored(self) -> None:
        """
        A Request naming the partner is never answered, in any state: the
        client chose the partner's Advertise, and a second lease from us
        would give one IA two leases (RFC 8415 section 16.4).
        """
        for state in ALL_STATES:
            policy, _, _ = makePolicy(state=state, partnerDuid=PARTNER)
            self.assertFalse(policy.respondsToServer(MessageType.REQUEST, PARTNER), state)
            self.assertFalse(policy.respondsTo(MessageType.REQUEST, False), state)


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
        granted = policy.withPartnerLifetime(
            lease(start_time_of_state=T0, cltt=T0, valid_lifetime=valid, expires=T0 + valid)
        )
        policy.bindingChanged(granted)
        sent = queue.enqueued[-1]
        self.assertEqual(sent.partner_lifetime_sent, T0 + 1800 + 3 * DAY)
        stored = acknowledged(granted, sent)
        self.assertTrue(stored.stateAcked)
        clock.advance(1800)
        renewed = policy.maxValidLifetime(stored, 3 * DAY, clock.seconds())
        self.assertEqual(renewed, 3 * DAY)
        again = policy.withPartnerLifetime(
            evolve(stored, cltt=clock.seconds(), valid_lifetime=renewed)
        )
        policy.bindingChanged(again)
        self.assertEqual(
            queue.enqueued[-1].partner_lifetime_sent, clock.seconds() + 1.5 * DAY + 3 * DAY
        )


class BindingChangedTests(SynchronousTestCase):
    """
    The partner lifetime to propose is put on the record to store
    (L{FailoverPolicy.withPartnerLifetime}); lazy updates go to the queue as
    stored.
    """

    def test_interface(self) -> None:
        """The policy provides L{IPartnerLifetimePolicy}."""
        policy, _, _ = makePolicy()
        self.assertTrue(verifyObject(IPartnerLifetimePolicy, policy))

    def test_active(self) -> None:
        """ACTIVE: C{cltt + T1 fraction * valid + desired}; default desired: the valid lifetime."""
        policy, _, queue = makePolicy()
        record = lease(cltt=T0, valid_lifetime=1000)
        stored = policy.withPartnerLifetime(record)
        self.assertEqual(stored, evolve(record, partner_lifetime_sent=T0 + 500 + 1000))
        policy.bindingChanged(stored)
        self.assertEqual(queue.enqueued, [stored])

    def test_neverLess(self) -> None:
        """
        A larger partner lifetime already proposed is kept (the same
        record comes back): a proposal is never withdrawn (section 4.4).
        """
        policy, _, _ = makePolicy()
        record = lease(cltt=T0, valid_lifetime=1000, partner_lifetime_sent=T0 + 5000)
        self.assertIs(policy.withPartnerLifetime(record), record)
        equal = lease(cltt=T0, valid_lifetime=1000, partner_lifetime_sent=T0 + 1500)
        self.assertIs(policy.withPartnerLifetime(equal), equal)

    def test_other(self) -> None:
        """Other states go as they are."""
        policy, _, queue = makePolicy()
        record = lease(BindingState.RELEASED, partner_lifetime_sent=5.0)
        self.assertIs(policy.withPartnerLifetime(record), record)
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


# --- renewing what the partner granted ----------------------------------------------

SERVING = TAKEOVER  # the states that serve the partner's clients without the NORMAL flag


@dataclass
class TrafficView(View):
    """A settable L{EndpointView} that is also a L{PartnerTrafficView}."""

    servingForPartner: bool = False
    missed: int = 0

    def clientMessageForPartner(self) -> None:
        self.missed += 1


class MayRenewTests(SynchronousTestCase):
    """
    L{FailoverPolicy.mayRenew}: a lease the client lists in a Renew or
    Rebind that we hold no ACTIVE record of for it (conditions A-C of the
    module docstring).
    """

    def renew(
        self, policy: FailoverPolicy, address: IPv6Address, record: Lease | None, **kw: Any
    ) -> bool:
        lease_type = kw.pop("lease_type", LeaseType.NA)
        duid = kw.pop("duid", A)
        now = kw.pop("now", T0)
        length = 56 if lease_type is LeaseType.PD else 128
        return policy.mayRenew(lease_type, address, length, record, duid, 1, now)

    def test_interface(self) -> None:
        """L{FailoverPolicy} provides L{IRenewalPolicy}."""
        policy, _, _ = makePolicy()
        self.assertTrue(verifyObject(IRenewalPolicy, policy))

    def test_partnersAddress(self) -> None:
        """
        While serving the partner's clients, an address of the partner's
        half: no record, FREE, the client's own ended binding, another
        client's acknowledged one, an ABANDONED binding of this very IA
        (it declined the lease to us; the partner may have given it back):
        yes; another client's unacknowledged ended binding, ACTIVE binding,
        ABANDONED binding, RESET: no.
        """
        for state in SERVING:
            for role in Role:
                policy, _, _ = makePolicy(role=role, state=state)
                other = EVEN if role is Role.PRIMARY else ODD
                where = (state, role)
                self.assertTrue(self.renew(policy, other, None), where)
                free = lease(BindingState.FREE, other, duid=b"", iaid=0)
                self.assertTrue(self.renew(policy, other, free), where)
                for ended in (BindingState.EXPIRED, BindingState.RELEASED):
                    mine = lease(ended, other, duid=A)
                    theirs = lease(ended, other, duid=B)
                    self.assertTrue(self.renew(policy, other, mine), where)
                    self.assertFalse(self.renew(policy, other, theirs), where)
                    self.assertTrue(self.renew(policy, other, acked(theirs)), where)
                self.assertTrue(self.renew(policy, other, lease(BindingState.ACTIVE, other)))
                self.assertFalse(self.renew(policy, other, lease(address=other, duid=B)), where)
                for never in (BindingState.ABANDONED, BindingState.RESET):
                    theirs = acked(lease(never, other, duid=B))
                    self.assertFalse(self.renew(policy, other, theirs), where)
                declined = lease(BindingState.ABANDONED, other, duid=A)
                self.assertTrue(self.renew(policy, other, declined), where)
                self.assertFalse(self.renew(policy, other, lease(BindingState.RESET, other)), where)
                # mayAllocate itself is unchanged: no new lease from the partner's half.
                self.assertFalse(policy.mayAllocate(LeaseType.NA, other, 128, None, A, 1, T0))

    def test_partnersPrefix(self) -> None:
        """
        Prefixes: the secondary renews one with no record (the primary's),
        the primary a FREE-BACKUP one (the secondary's).
        """
        backup = lease(BindingState.FREE_BACKUP, PREFIX, duid=b"", lease_type=LeaseType.PD)
        for state in SERVING:
            primary, _, _ = makePolicy(role=Role.PRIMARY, state=state)
            secondary, _, _ = makePolicy(role=Role.SECONDARY, state=state)
            self.assertTrue(self.renew(secondary, PREFIX, None, lease_type=LeaseType.PD))
            self.assertTrue(self.renew(primary, PREFIX, backup, lease_type=LeaseType.PD))
            expired = lease(BindingState.EXPIRED, PREFIX, duid=A, lease_type=LeaseType.PD)
            self.assertTrue(self.renew(secondary, PREFIX, expired, lease_type=LeaseType.PD))
            self.assertFalse(
                self.renew(secondary, PREFIX, expired, duid=B, lease_type=LeaseType.PD)
            )

    def test_ownPoolAsMayAllocate(self) -> None:
        """
        Our own half: exactly L{mayAllocate} (only we allocate it, so
        another client's unacknowledged ended binding stays refused), but
        for an ABANDONED binding of this very IA, renewed (the partner may
        have given it back to the IA).
        """
        for state in (S.NORMAL,) + SERVING:
            policy, _, _ = makePolicy(state=state)
            for record in (
                None,
                lease(BindingState.EXPIRED, ODD, duid=A),
                lease(BindingState.EXPIRED, ODD, duid=B),
                acked(lease(BindingState.RELEASED, ODD, duid=B)),
                lease(BindingState.ABANDONED, ODD, duid=B),
            ):
                self.assertEqual(
                    self.renew(policy, ODD, record),
                    policy.mayAllocate(LeaseType.NA, ODD, 128, record, A, 1, T0),
                    (state, record),
                )
            declined = lease(BindingState.ABANDONED, ODD, duid=A)
            self.assertFalse(policy.mayAllocate(LeaseType.NA, ODD, 128, declined, A, 1, T0))
            self.assertTrue(self.renew(policy, ODD, declined), state)

    def test_withdraw(self) -> None:
        """
        L{FailoverPolicy.mayWithdraw}, for a listed lease not renewed: our
        own pool, or the partner's while we serve its clients: lifetime 0;
        the partner's pool while the partner answers its clients: left out,
        unless our record says another client holds it (ACTIVE or ABANDONED).
        """
        for role in Role:
            own, other = (ODD, EVEN) if role is Role.PRIMARY else (EVEN, ODD)
            normal, _, _ = makePolicy(role=role, state=S.NORMAL)

            def withdraw(
                policy: FailoverPolicy, address: IPv6Address, record: Lease | None
            ) -> bool:
                return policy.mayWithdraw(LeaseType.NA, address, 128, record, A, 1, T0)

            self.assertTrue(withdraw(normal, own, None), role)
            self.assertTrue(withdraw(normal, own, lease(BindingState.EXPIRED, own, duid=A)))
            for record in (
                None,
                lease(BindingState.EXPIRED, other, duid=A),
                lease(BindingState.RELEASED, other, duid=B),
                lease(BindingState.ACTIVE, other, duid=A),
                lease(BindingState.ABANDONED, other, duid=A),
                lease(BindingState.FREE, other, duid=b"", iaid=0),
            ):
                self.assertFalse(withdraw(normal, other, record), (role, record))
            for record in (
                lease(BindingState.ACTIVE, other, duid=B),
                lease(BindingState.ABANDONED, other, duid=B),
            ):
                self.assertTrue(withdraw(normal, other, record), (role, record))
            for state in SERVING:
                serving, _, _ = makePolicy(role=role, state=state)
                self.assertTrue(withdraw(serving, other, None), (role, state))

    def test_normalRenewsPartners(self) -> None:
        """
        NORMAL: a Rebind (or a Renew naming us) listing a lease of the
        partner's pool that we hold no current record of renews it, as in
        the serving states (our record may lag the partner's: chaos seeds
        53002 and 64024); another client's unacknowledged ended binding is
        still refused.
        """
        for role in Role:
            view = TrafficView(role=role, state=S.NORMAL)
            policy = FailoverPolicy(view, FakeUpdateQueue())
            other = EVEN if role is Role.PRIMARY else ODD
            # No record: the primary's prefix; FREE-BACKUP: the secondary's.
            theirs = None
            if role is Role.PRIMARY:
                theirs = lease(BindingState.FREE_BACKUP, PREFIX, duid=b"", lease_type=LeaseType.PD)
            self.assertTrue(self.renew(policy, other, None), role)
            self.assertTrue(self.renew(policy, PREFIX, theirs, lease_type=LeaseType.PD), role)
            self.assertTrue(self.renew(policy, other, lease(BindingState.EXPIRED, other, duid=A)))
            self.assertFalse(self.renew(policy, other, lease(BindingState.EXPIRED, other, duid=B)))
            # mayAllocate is unchanged: no new lease from the partner's pool.
            self.assertFalse(policy.mayAllocate(LeaseType.NA, other, 128, None, A, 1, T0))

    def test_otherStatesRefuse(self) -> None:
        """RECOVER-DONE (no lease it has no record of, 8.7.1) and the unresponsive states: no."""
        for state in set(ALL_STATES) - set(SERVING) - {S.NORMAL}:
            for role in Role:
                policy, _, _ = makePolicy(role=role, state=state)
                self.assertFalse(self.renew(policy, ODD, None), state)
                self.assertFalse(self.renew(policy, EVEN, None), state)


class ReportingTests(SynchronousTestCase):
    """
    The policy reports to the endpoint the client messages it refuses
    because the partner answers them (RFC 7031 section 4.7), and answers
    everything while the endpoint serves for the partner.
    """

    def policy(
        self, role: Role, state: EndpointState = S.NORMAL
    ) -> tuple[FailoverPolicy, TrafficView]:
        view = TrafficView(role=role, state=state)
        return FailoverPolicy(view, FakeUpdateQueue(), partnerDuid=PARTNER), view

    def test_secondaryRefusals(self) -> None:
        """
        The secondary in NORMAL: every message naming no server is the
        primary's and is counted; one naming the partner too; one naming us
        is answered; one naming an unknown server is not the partner's.
        """
        policy, view = self.policy(Role.SECONDARY)
        for msg_type in (
            MessageType.SOLICIT,
            MessageType.REBIND,
            MessageType.CONFIRM,
            MessageType.INFORMATION_REQUEST,
        ):
            self.assertFalse(policy.respondsTo(msg_type, False))
        self.assertEqual(view.missed, 4)
        self.assertTrue(policy.respondsTo(MessageType.RENEW, True))
        self.assertFalse(policy.respondsToServer(MessageType.RENEW, PARTNER))
        self.assertFalse(policy.respondsToServer(MessageType.REQUEST, PARTNER))
        self.assertEqual(view.missed, 6)
        self.assertFalse(policy.respondsToServer(MessageType.RENEW, b"\x00\x02stranger"))
        self.assertEqual(view.missed, 6)

    def test_primaryRefusals(self) -> None:
        """The primary in NORMAL answers what names no server; one naming the partner counts."""
        policy, view = self.policy(Role.PRIMARY)
        self.assertTrue(policy.respondsTo(MessageType.SOLICIT, False))
        self.assertTrue(policy.respondsTo(MessageType.REBIND, False))
        self.assertEqual(view.missed, 0)
        self.assertFalse(policy.respondsToServer(MessageType.RENEW, PARTNER))
        self.assertEqual(view.missed, 1)

    def test_unknownPartner(self) -> None:
        """With the partner's DUID unknown, a message naming another server is not counted."""
        view = TrafficView(role=Role.PRIMARY, state=S.NORMAL)
        policy = FailoverPolicy(view, FakeUpdateQueue())
        self.assertFalse(policy.respondsToServer(MessageType.RENEW, PARTNER))
        self.assertEqual(view.missed, 0)

    def test_notCountedElsewhere(self) -> None:
        """Outside NORMAL nothing is counted (everything answered, or nothing expected)."""
        for state in set(ALL_STATES) - {S.NORMAL}:
            policy, view = self.policy(Role.SECONDARY, state)
            policy.respondsTo(MessageType.SOLICIT, False)
            policy.respondsToServer(MessageType.RENEW, PARTNER)
            self.assertEqual(view.missed, 0, state)

    def test_servingForPartner(self) -> None:
        """
        NORMAL while serving for the partner: everything answered, messages
        naming the partner included (not an unknown server's), nothing
        counted; allocation still from our own half only.
        """
        for role in Role:
            policy, view = self.policy(role)
            view.servingForPartner = True
            self.assertTrue(policy.servesPartnersClients)
            for msg_type in (MessageType.SOLICIT, MessageType.REBIND, MessageType.CONFIRM):
                self.assertTrue(policy.respondsTo(msg_type, False))
            self.assertTrue(policy.respondsToServer(MessageType.RENEW, PARTNER))
            self.assertFalse(policy.respondsToServer(MessageType.RENEW, b"\x00\x02stranger"))
            self.assertEqual(view.missed, 0)
            own, other = (ODD, EVEN) if role is Role.PRIMARY else (EVEN, ODD)
            self.assertTrue(policy.mayAllocate(LeaseType.NA, own, 128, None, A, 1, T0))
            self.assertFalse(policy.mayAllocate(LeaseType.NA, other, 128, None, A, 1, T0))
            self.assertEqual(policy.maxValidLifetime(None, 9 * DAY, T0), MCLT)
            # The flag counts in NORMAL only.
            view.state = S.RECOVER_DONE
            self.assertFalse(policy.servesPartnersClients)

    def test_plainEndpoint(self) -> None:
        """An endpoint that is only an L{EndpointView}: never serving for the partner."""
        policy, view, _ = makePolicy(role=Role.SECONDARY, partnerDuid=PARTNER)
        self.assertFalse(isinstance(view, PartnerTrafficView))
        self.assertFalse(policy.servesPartnersClients)
        self.assertFalse(policy.respondsTo(MessageType.SOLICIT, False))
        self.assertFalse(policy.respondsToServer(MessageType.RENEW, PARTNER))


# --- the pair, through the engine ------------------------------------------------------------

PRIMARY_DUID = b"\x00\x02\x00\x00\x00\x09primary-srv!"
SECONDARY_DUID = b"\x00\x02\x00\x00\x00\x09second-srv!!"
CLIENT = clientDuid(1)
OTHER_CLIENT = clientDuid(2)
VALID = 4000  # makeSubnet's valid lifetime, above MCLT
PD_VALID = 7000


class Server:
    """
    One server of the pair: its own store, update queue, engine and policy
    over a settable view of its endpoint (or a real endpoint).  The update
    queue is never delivered: binding updates are lost unless a test copies
    them over.
    """

    def __init__(
        self,
        role: Role,
        clock: Clock,
        state: EndpointState = S.NORMAL,
        endpoint: FailoverEndpoint | None = None,
    ) -> None:
        self.clock = clock
        self.store = MemoryLeaseStore()
        self.queue = FakeUpdateQueue()
        self.view = TrafficView(role=role, state=state, startTimeOfState=clock.seconds())
        self.duid = PRIMARY_DUID if role is Role.PRIMARY else SECONDARY_DUID
        partner = SECONDARY_DUID if role is Role.PRIMARY else PRIMARY_DUID
        self.policy = FailoverPolicy(
            self.view if endpoint is None else endpoint, self.queue, partnerDuid=partner
        )
        self.engine = Engine(makeConfig(makeSubnet()), self.store, self.policy, self.duid)

    def enter(self, state: EndpointState) -> None:
        self.view.state = state
        self.view.startTimeOfState = self.clock.seconds()

    def handle(self, msg: Message) -> Message | None:
        """Handle C{msg} now, commit, notify the policy like the adapter; the reply."""
        decision = self.engine.handle(msg, DIRECT, self.clock.seconds())
        if decision is None:
            return None
        if decision.changes:
            self.store.commit(decision.changes)
        for changed, policy in decision.notifications(self.policy):
            policy.bindingChanged(changed)
        return innerReply(decision)

    def reply(self, msg: Message) -> Message:
        reply = self.handle(msg)
        assert reply is not None, self.engine.counters
        return reply

    def bindingOf(self, key: tuple[IPv6Address, int]) -> Lease:
        found = self.store.get(*key)
        assert found is not None
        return found


def granted(reply: Message) -> tuple[IAAddress | None, IAPrefix | None]:
    """The address and prefix a Reply grants (lifetimes above 0), if any."""
    address = next(
        (
            o
            for ia in find(reply.options, IANA)
            for o in ia.options
            if isinstance(o, IAAddress) and o.valid_lifetime
        ),
        None,
    )
    prefix = next(
        (
            o
            for ia in find(reply.options, IAPD)
            for o in ia.options
            if isinstance(o, IAPrefix) and o.valid_lifetime
        ),
        None,
    )
    return address, prefix


def grant(
    server: Server, duid: bytes = CLIENT, prefix: bool = True
) -> tuple[IPv6Address, tuple[IPv6Address, int]]:
    """Solicit then Request an address and (unless not C{prefix}) a prefix from C{server}."""
    ias: list[Option] = [na(1)]
    if prefix:
        ias.append(pd(2))
    advertise = server.reply(message(MessageType.SOLICIT, *ias, duid=duid))
    offered, offeredPrefix = granted(advertise)
    assert offered is not None
    requested: list[Option] = [na(1, str(offered.address))]
    if offeredPrefix is not None:
        requested.append(pd(2, f"{offeredPrefix.prefix}/{offeredPrefix.prefix_length}"))
    reply = server.reply(message(MessageType.REQUEST, *requested, duid=duid, server=server.duid))
    address, delegated = granted(reply)
    assert address is not None
    if not prefix:
        return address.address, (IPv6Address(0), 0)
    assert delegated is not None
    return address.address, (delegated.prefix, delegated.prefix_length)


class LeaseStabilityTests(SynchronousTestCase):
    """
    DESIGN.md invariant 2 across the lazy-update window: the primary grants,
    dies before its update reaches the secondary, and the client renews or
    rebinds to the secondary.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.primary = Server(Role.PRIMARY, self.clock)
        self.secondary = Server(Role.SECONDARY, self.clock)

    def renew(
        self,
        server: Server,
        address: IPv6Address,
        prefix: tuple[IPv6Address, int] | None = None,
        naming: bytes | None = PRIMARY_DUID,
        duid: bytes = CLIENT,
    ) -> Message:
        """A Renew naming C{naming}, or a Rebind when it is C{None}."""
        ias: list[Option] = [na(1, str(address))]
        if prefix is not None:
            ias.append(pd(2, f"{prefix[0]}/{prefix[1]}"))
        if naming is None:
            return server.reply(message(MessageType.REBIND, *ias, duid=duid))
        return server.reply(message(MessageType.RENEW, *ias, duid=duid, server=naming))

    def primaryGrantsThenDies(self) -> tuple[IPv6Address, tuple[IPv6Address, int]]:
        address, prefix = grant(self.primary)
        self.assertEqual(int(address) & 1, 1)  # the primary's half
        self.assertEqual(len(self.primary.queue.enqueued), 2)  # never delivered
        self.assertIsNone(self.secondary.store.get(address, 128))
        self.clock.advance(60)
        self.secondary.enter(S.COMMUNICATIONS_INTERRUPTED)
        return address, prefix

    def assertMcltCapped(self, reply: Message) -> None:
        address, prefix = granted(reply)
        for lease in (address, prefix):
            assert lease is not None
            self.assertEqual(lease.valid_lifetime, MCLT)

    def test_renewAddressAndPrefix(self) -> None:
        """
        COMMUNICATIONS-INTERRUPTED: the client's Renew naming the dead
        primary gets the same address and prefix, at most MCLT, with the
        secondary's Server Identifier; both bindings are durable and queued
        for the primary.
        """
        address, prefix = self.primaryGrantsThenDies()
        self.clock.advance(MCLT / 2 - 60)
        reply = self.renew(self.secondary, address, prefix)
        self.assertEqual(one(reply.options, ServerId).duid, SECONDARY_DUID)
        gotAddress, gotPrefix = granted(reply)
        assert gotAddress is not None and gotPrefix is not None
        self.assertEqual(gotAddress.address, address)
        self.assertEqual((gotPrefix.prefix, gotPrefix.prefix_length), prefix)
        self.assertMcltCapped(reply)
        now = self.clock.seconds()
        for key in ((address, 128), prefix):
            stored = self.secondary.bindingOf(key)
            self.assertEqual(
                (stored.state, stored.duid, stored.iaid > 0), (BindingState.ACTIVE, CLIENT, True)
            )
            self.assertLessEqual(stored.expires, now + MCLT)
        self.assertEqual(
            sorted(lease.key for lease in self.secondary.queue.enqueued),
            sorted([(address, 128), prefix]),
        )

    def test_rebind(self) -> None:
        """The same with a Rebind (the client's T2), and again later: MCLT each time."""
        address, prefix = self.primaryGrantsThenDies()
        for _ in range(3):
            self.clock.advance(MCLT * 0.8)
            reply = self.renew(self.secondary, address, prefix, naming=None)
            gotAddress, gotPrefix = granted(reply)
            assert gotAddress is not None and gotPrefix is not None
            self.assertEqual(gotAddress.address, address)
            self.assertEqual((gotPrefix.prefix, gotPrefix.prefix_length), prefix)
            self.assertMcltCapped(reply)

    def test_staleRecord(self) -> None:
        """
        The secondary knew the first grant, but the primary's renewal was
        lost and the secondary's reclamation expired the binding: renewed,
        same address.
        """
        address, prefix = grant(self.primary)
        first = self.primary.bindingOf((address, 128))
        self.secondary.store.commit(
            [evolve(first, state=BindingState.EXPIRED, start_time_of_state=first.expires)]
        )
        self.clock.advance(MCLT + 10)
        self.secondary.enter(S.COMMUNICATIONS_INTERRUPTED)
        gotAddress, _ = granted(self.renew(self.secondary, address))
        assert gotAddress is not None
        self.assertEqual((gotAddress.address, gotAddress.valid_lifetime), (address, MCLT))

    def test_listedBeforeOlderBinding(self) -> None:
        """
        The client's older binding with the secondary (its own half,
        EXPIRED) does not replace the lease it lists: the listed one is
        renewed.
        """
        older = evolve(
            activeLease(IPv6Address("2001:db8:1::1a2"), CLIENT, now=T0 - 10 * DAY),
            state=BindingState.EXPIRED,
        )
        self.secondary.store.commit([older])
        address, _ = self.primaryGrantsThenDies()
        reply = self.renew(self.secondary, address)
        gotAddress, _ = granted(reply)
        assert gotAddress is not None
        self.assertEqual(gotAddress.address, address)
        self.assertIs(self.secondary.bindingOf(older.key).state, BindingState.EXPIRED)

    def test_heldByAnotherClient(self) -> None:
        """
        Another client's ACTIVE binding of that address at the secondary:
        NoBinding, the holder keeps it.
        """
        address, prefix = self.primaryGrantsThenDies()
        holder = activeLease(address, OTHER_CLIENT, now=self.clock.seconds())
        holderPrefix = activeLease(
            prefix[0], OTHER_CLIENT, prefix_length=prefix[1], now=self.clock.seconds()
        )
        self.secondary.store.commit([holder, holderPrefix])
        reply = self.renew(self.secondary, address, prefix)
        self.assertEqual(granted(reply), (None, None))
        self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_BINDING)
        self.assertEqual(statusOf(one(reply.options, IAPD).options), StatusCode.NO_BINDING)
        self.assertEqual(self.secondary.bindingOf((address, 128)), holder)
        self.assertEqual(self.secondary.bindingOf(prefix), holderPrefix)

    def test_endedForAnotherClient(self) -> None:
        """
        Another client's EXPIRED binding: refused while the partner may not
        know it ended (our own reclamation), renewed once the state is
        acknowledged (the partner may have reused it for this client).
        """
        address, _ = self.primaryGrantsThenDies()
        ended = evolve(activeLease(address, OTHER_CLIENT, now=T0 - DAY), state=BindingState.EXPIRED)
        self.secondary.store.commit([ended])
        self.assertEqual(granted(self.renew(self.secondary, address)), (None, None))
        self.secondary.store.commit([acked(ended)])
        gotAddress, _ = granted(self.renew(self.secondary, address))
        assert gotAddress is not None
        self.assertEqual(gotAddress.address, address)

    def test_partnerDown(self) -> None:
        """PARTNER-DOWN: renewed, same address and prefix, no MCLT cap (8.4.1)."""
        address, prefix = self.primaryGrantsThenDies()
        self.secondary.enter(S.PARTNER_DOWN)
        gotAddress, gotPrefix = granted(self.renew(self.secondary, address, prefix))
        assert gotAddress is not None and gotPrefix is not None
        self.assertEqual((gotAddress.address, gotAddress.valid_lifetime), (address, VALID))
        self.assertEqual(
            (gotPrefix.prefix, gotPrefix.prefix_length, gotPrefix.valid_lifetime),
            prefix + (PD_VALID,),
        )

    def test_secondaryDies(self) -> None:
        """The other way round: the secondary grants and dies; the primary renews."""
        # A secondary in NORMAL answers only messages naming it: this one
        # grants in COMMUNICATIONS-INTERRUPTED (it has no prefix to give).
        secondary = Server(Role.SECONDARY, self.clock, S.COMMUNICATIONS_INTERRUPTED)
        address, _ = grant(secondary, prefix=False)
        self.assertEqual(int(address) & 1, 0)
        self.primary.enter(S.COMMUNICATIONS_INTERRUPTED)
        gotAddress, _ = granted(self.renew(self.primary, address, naming=SECONDARY_DUID))
        assert gotAddress is not None
        self.assertEqual((gotAddress.address, gotAddress.valid_lifetime), (address, MCLT))

    def test_normalPartnerAlive(self) -> None:
        """
        NORMAL, the partner alive and reaching its clients: the secondary
        leaves the Renew naming the primary to the primary; the primary
        renews a Rebind's lease of the secondary's half it has no record of
        (its record may lag the secondary's), capped at MCLT.
        """
        address, _ = grant(self.primary)
        self.assertIsNone(
            self.secondary.handle(
                message(MessageType.RENEW, na(1, str(address)), server=PRIMARY_DUID)
            )
        )
        self.assertEqual(self.secondary.engine.counters["dropped.notForUs"], 1)
        theirs = IPv6Address("2001:db8:1::1a4")
        reply = self.primary.reply(message(MessageType.REBIND, na(3, str(theirs))))
        gotAddress, _ = granted(reply)
        assert gotAddress is not None
        self.assertEqual((gotAddress.address, gotAddress.valid_lifetime), (theirs, MCLT))
        stored = self.primary.store.get(theirs, 128)
        assert stored is not None
        self.assertEqual((stored.state, stored.iaid), (BindingState.ACTIVE, 3))

    def test_solicitHintNotHonoured(self) -> None:
        """
        A Solicit hinting at an address of the partner's half gets one of
        our own (module docstring: a hint is not a lease held).
        """
        address, _ = self.primaryGrantsThenDies()
        advertise = self.secondary.reply(message(MessageType.SOLICIT, na(1, str(address))))
        offered, _ = granted(advertise)
        assert offered is not None
        self.assertNotEqual(offered.address, address)
        self.assertEqual(int(offered.address) & 1, 0)


class ServingForPartnerTests(SynchronousTestCase):
    """
    RFC 7031 section 4.7 end to end on the secondary: a real endpoint in
    NORMAL, the engine, and the primary's CONTACT counts fed by hand.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        store = MemoryLeaseStore()
        store.setMetadata(
            "failover.rel.state",
            FailoverRecord(
                S.COMMUNICATIONS_INTERRUPTED, T0 - 100, has_state=True, synced=True
            ).toJSON(),
        )
        self.endpoint = FailoverEndpoint(
            "rel",
            Role.SECONDARY,
            self.clock,
            store,
            mclt=MCLT,
            startupTime=1.0,
            keepaliveTime=30.0,
            contactsPerKeepalive=6,
            recordInterval=DAY,
        )
        self.endpoint.start()
        self.clock.advance(1)
        self.endpoint.connected(FakePeer())
        self.endpoint.stateReceived(S.NORMAL, T0 - 50)
        self.assertIs(self.endpoint.state, S.NORMAL)
        self.secondary = Server(Role.SECONDARY, self.clock, endpoint=self.endpoint)
        self.primary = Server(Role.PRIMARY, self.clock)
        self.count = 1000

    def contact(self, grow: bool = False) -> None:
        """Five seconds pass; the primary's CONTACT arrives (keepalive included)."""
        self.clock.advance(5)
        if grow:
            self.count += 1
        self.endpoint.messageReceived()
        self.endpoint.clientsSeenReceived(self.count)

    def solicit(self) -> Message | None:
        return self.secondary.handle(message(MessageType.SOLICIT, na(7), duid=OTHER_CLIENT))

    def test_takeOverAndGiveBack(self) -> None:
        """
        The primary keeps reporting the same count while its clients'
        Solicits and Renews reach only the secondary: after the window the
        secondary answers them (new leases from its half, the primary's
        leases renewed, MCLT-capped, replicated), and stops once the
        primary's count grows again.
        """
        address, _ = grant(self.primary)
        self.contact()  # baseline
        renew = message(MessageType.RENEW, na(1, str(address)), server=PRIMARY_DUID)
        for _ in range(6):
            self.assertIsNone(self.solicit())
            self.assertIsNone(self.secondary.handle(renew))
            self.contact()
        self.assertTrue(self.endpoint.servingForPartner)
        self.assertIs(self.endpoint.service, Service.RESPONSIVE_FOR_PARTNER)
        self.assertTrue(self.endpoint.status().serving_for_partner)
        advertise = self.solicit()
        assert advertise is not None
        offered, _ = granted(advertise)
        assert offered is not None
        self.assertEqual(int(offered.address) & 1, 0)
        reply = self.secondary.handle(renew)
        assert reply is not None
        gotAddress, _ = granted(reply)
        assert gotAddress is not None
        self.assertEqual((gotAddress.address, gotAddress.valid_lifetime), (address, MCLT))
        self.assertEqual([lease.key for lease in self.secondary.queue.enqueued], [(address, 128)])
        # The primary receives client messages again.
        self.contact(grow=True)
        self.assertFalse(self.endpoint.servingForPartner)
        self.assertIs(self.endpoint.service, Service.RENEW_RESPONSIVE)
        self.assertIsNone(self.solicit())

    def test_partnerStillCounting(self) -> None:
        """The primary's count grows with the traffic: the secondary stays out of it."""
        self.contact()
        for _ in range(20):
            self.assertIsNone(self.solicit())
            self.contact(grow=True)
        self.assertFalse(self.endpoint.servingForPartner)
        self.assertIsNone(self.solicit())


class StoredPartnerLifetimeTests(SynchronousTestCase):
    """
    The engine stores the partner lifetime the update will propose with
    the grant itself (L{IPartnerLifetimePolicy}), so the update queue need
    not store it in a second write before sending.
    """

    def test_grantStoresProposal(self) -> None:
        """
        A Request's binding is stored with C{cltt + valid / 2 + desired}
        as its C{partner_lifetime_sent}; a renewal proposes the larger one
        of its own time.
        """
        clock = Clock()
        clock.advance(T0)
        server = Server(Role.PRIMARY, clock)
        address, delegated = grant(server)
        for key in ((address, 128), delegated):
            stored = server.bindingOf(key)
            self.assertEqual(
                stored.partner_lifetime_sent,
                partnerLifetime(stored.cltt, stored.valid_lifetime, stored.valid_lifetime),
            )
            self.assertEqual(server.queue.enqueued[-2 if key[1] == 128 else -1].key, key)
        first = server.bindingOf((address, 128)).partner_lifetime_sent
        clock.advance(600)
        server.reply(
            message(MessageType.RENEW, na(1, str(address)), duid=CLIENT, server=server.duid)
        )
        renewed = server.bindingOf((address, 128))
        self.assertEqual(renewed.cltt, T0 + 600)
        self.assertEqual(
            renewed.partner_lifetime_sent,
            partnerLifetime(renewed.cltt, renewed.valid_lifetime, renewed.valid_lifetime),
        )
        self.assertGreater(renewed.partner_lifetime_sent, first)

    def test_advertiseStoresNothing(self) -> None:
        """A Solicit commits nothing, and proposes nothing."""
        clock = Clock()
        clock.advance(T0)
        server = Server(Role.PRIMARY, clock)
        server.reply(message(MessageType.SOLICIT, na(1), duid=CLIENT))
        self.assertEqual(list(server.store.iterLeases(100)), [])
        self.assertEqual(server.queue.enqueued, [])
