# -*- test-case-name: tests.test_policy -*-
"""
The allocation policy of one failover relationship (RFC 8156 sections 4 and
8): who answers what, who may allocate which address or prefix, and the
MCLT cap on lifetimes, all read from the endpoint's current state.

Who may allocate what (DESIGN.md "Who may allocate what"):

  - Addresses, independent allocation (section 4.2.1.1): the primary owns
    the addresses whose lowest bit is 1, the secondary those whose lowest
    bit is 0, in every state, PARTNER-DOWN included (section 4.2.1: "MUST
    NOT use its partner's pool").  A non-ACTIVE binding (FREE, EXPIRED,
    RELEASED...) is only ever allocated by the owner of its address.
  - Prefixes, proportional allocation (section 4.2.2): a prefix with no
    record, or FREE (or PENDING-FREE), belongs to the primary; FREE-BACKUP
    to the secondary.  In PARTNER-DOWN the partner's free prefixes are
    allowed once MCLT has passed since entering PARTNER-DOWN (section
    8.4.1); the allocator should use L{FailoverPolicy.isOwn} to try its own
    first.
  - EXPIRED, RELEASED and RESET bindings (section 4.2.2.1): the same client
    may have its binding back; another client only once the partner has
    acknowledged that state (L{Lease.stateAcked}).  In PARTNER-DOWN, an
    unacknowledged one goes to another client once MCLT has passed beyond
    the latest of its expiry, the partner lifetimes sent and acked, and the
    entry into PARTNER-DOWN (section 8.4.1).  Prefixes differ by role: an
    EXPIRED or RELEASED prefix becomes the primary's FREE once acked
    (section 7.2, Figure 2), so the primary may reuse it as above, while the
    secondary, which cannot know whether the primary has already freed it,
    reuses one only under the PARTNER-DOWN rule.  (This is stricter than
    DESIGN.md's "the same client may have it back", for the secondary's
    prefixes only.)
  - ABANDONED and ACTIVE bindings of other clients: never.

Lifetimes (section 4.4): outside PARTNER-DOWN, the valid lifetime given is at
most C{max(acked partner lifetime, now) + MCLT - now}, where the acked
partner lifetime counts only while the partner has acknowledged this very
binding (an ACTIVE record whose C{stateAcked} holds; so a binding taken over
from another client, or renewed by an engine that dropped the ack fields,
starts again at MCLT).  In PARTNER-DOWN there is no cap.  The update sent to
the partner proposes C{cltt + t1Fraction * valid + desired} as partner
lifetime (section 4.4.1's example), so the next renewal can get the desired
lifetime once the partner acks it.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Protocol

from attrs import evolve
from zope.interface import implementer

from dhcp6ha.failover.machine import EndpointState, Role
from dhcp6ha.interfaces import IFailoverPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.interfaces import IUpdateQueue

__all__ = ["EndpointView", "FailoverPolicy", "partnerLifetime"]

S = EndpointState

# RFC 8415 message types that carry a Server Identifier naming their server
# (REQUEST, RENEW, RELEASE, DECLINE).  For these, C{respondsTo(t, False)}
# means "names another server".
_ADDRESSED = frozenset({3, 5, 8, 9})
_RENEW = 5

#: States in which both servers answer everything, the partner's clients
#: included (sections 8.4.1, 8.9.1, 8.11.1, 8.12.1).
_TAKEOVER = frozenset(
    {
        S.COMMUNICATIONS_INTERRUPTED,
        S.RESOLUTION_INTERRUPTED,
        S.PARTNER_DOWN,
        S.CONFLICT_DONE,
    }
)

#: States in which new leases may be allocated (from this server's own pool;
#: PARTNER-DOWN also from the partner's free prefixes after MCLT).  Not
#: RECOVER-DONE (section 8.7.1: "MUST NOT allocate any additional leases").
_ALLOCATING = frozenset(
    {
        S.NORMAL,
        S.COMMUNICATIONS_INTERRUPTED,
        S.RESOLUTION_INTERRUPTED,
        S.CONFLICT_DONE,
        S.PARTNER_DOWN,
    }
)

#: Binding states that wait for the partner's ack before another client may
#: have them (Figure 1, transition 4).
_NEEDS_ACK = frozenset({BindingState.EXPIRED, BindingState.RELEASED, BindingState.RESET})

#: Binding states that count as available (PENDING-FREE is FREE for
#: proportional allocation, Figure 2).
_AVAILABLE = frozenset({BindingState.FREE, BindingState.FREE_BACKUP, BindingState.PENDING_FREE})


class EndpointView(Protocol):
    """What the policy reads from the endpoint (a L{FailoverEndpoint} is one)."""

    @property
    def role(self) -> Role:
        """This server's role."""

    @property
    def mclt(self) -> float:
        """The maximum client lead time."""

    @property
    def state(self) -> EndpointState:
        """The current endpoint state."""

    @property
    def startTimeOfState(self) -> float:
        """When it was entered."""


def partnerLifetime(cltt: float, valid: int, desired: int, t1Fraction: float = 0.5) -> float:
    """
    The partner lifetime to propose in a binding update (RFC 8156 section
    4.4.1): the client's last transaction time, plus the T1 fraction of the
    valid lifetime just given, plus the desired lifetime.  Once the partner
    acks it, the client's next renewal (at about C{cltt + t1Fraction *
    valid}) may get the full desired lifetime within the MCLT rule.

    @return: an absolute time.
    """
    return cltt + t1Fraction * valid + desired


@implementer(IFailoverPolicy)
class FailoverPolicy:
    """
    L{IFailoverPolicy} for one failover relationship.

    @ivar endpoint: the endpoint whose state decides.
    @ivar queue: where changed bindings go (lazy updates).
    @ivar partnerDuid: the partner's server DUID, when known: only messages
        naming it are taken over.  C{None}: any other server's.
    """

    def __init__(
        self,
        endpoint: EndpointView,
        queue: IUpdateQueue,
        *,
        partnerDuid: bytes | None = None,
        desiredLifetime: Callable[[Lease], int] | None = None,
        t1Fraction: float = 0.5,
    ) -> None:
        """
        @param endpoint: the relationship's endpoint.
        @param queue: the update queue the changed bindings are handed to.
        @param partnerDuid: the partner's server DUID, if known.
        @param desiredLifetime: the lifetime the configuration wants for a
            binding (its subnet's valid or PD valid lifetime), used for the
            partner lifetime; default: the lifetime the binding got.
        @param t1Fraction: the T1 fraction of L{partnerLifetime}.
        """
        self.endpoint = endpoint
        self.queue = queue
        self.partnerDuid = partnerDuid
        self._desired = desiredLifetime
        self._t1Fraction = t1Fraction

    # --- who answers what ------------------------------------------------------

    def respondsTo(self, msg_type: int, addressed_to_us: bool) -> bool:
        """
        NORMAL: the primary answers everything but messages naming another
        server, the secondary only messages naming it (renew responsive).
        COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED, PARTNER-DOWN,
        CONFLICT-DONE: everything, messages naming the partner included.
        RECOVER-DONE: Renew naming us.  Other states: nothing.
        """
        state = self.endpoint.state
        if state in _TAKEOVER:
            return True
        if state is S.NORMAL:
            if self.endpoint.role is Role.PRIMARY:
                return addressed_to_us or msg_type not in _ADDRESSED
            return addressed_to_us
        if state is S.RECOVER_DONE:
            return addressed_to_us and msg_type == _RENEW
        return False

    def respondsToServer(self, msg_type: int, server_id: bytes) -> bool:
        """A message naming another server: the partner's, in takeover states."""
        if self.endpoint.state not in _TAKEOVER:
            return False
        return self.partnerDuid is None or server_id == self.partnerDuid

    # --- who allocates what -----------------------------------------------------

    def isOwn(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
    ) -> bool:
        """Independent allocation by the low bit; proportional by FREE / FREE-BACKUP."""
        if lease_type is LeaseType.PD:
            backup = existing is not None and existing.state is BindingState.FREE_BACKUP
            return backup is (self.endpoint.role is Role.SECONDARY)
        return self._ownsAddress(address)

    def _ownsAddress(self, address: IPv6Address) -> bool:
        odd = int(address) & 1 == 1
        return odd is (self.endpoint.role is Role.PRIMARY)

    def mayAllocate(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """See the module docstring."""
        state = self.endpoint.state
        if state not in _ALLOCATING:
            return False
        if existing is not None:
            if existing.state is BindingState.ACTIVE:
                return existing.heldBy(duid, iaid)
            if existing.state in _NEEDS_ACK:
                return self._mayReuse(lease_type, address, existing, duid, iaid, now)
            if existing.state not in _AVAILABLE:
                return False  # ABANDONED
        if self.isOwn(lease_type, address, prefix_length, existing):
            return True
        # The partner's free prefix: PARTNER-DOWN, MCLT after entering it.
        return lease_type is LeaseType.PD and self._partnerDownFor(now)

    def _mayReuse(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        existing: Lease,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """An EXPIRED, RELEASED or RESET binding."""
        afterPartnerDown = self._partnerDownFor(now) and now >= self.endpoint.mclt + max(
            existing.expires,
            existing.partner_lifetime_sent,
            existing.partner_lifetime_acked,
            self.endpoint.startTimeOfState,
        )
        if lease_type is LeaseType.PD:
            if self.endpoint.role is Role.SECONDARY:
                return afterPartnerDown
        elif not self._ownsAddress(address):
            return False
        return existing.heldBy(duid, iaid) or existing.stateAcked or afterPartnerDown

    def _partnerDownFor(self, now: float) -> bool:
        """In PARTNER-DOWN for at least MCLT?"""
        endpoint = self.endpoint
        return endpoint.state is S.PARTNER_DOWN and now >= endpoint.startTimeOfState + endpoint.mclt

    # --- lifetimes --------------------------------------------------------------

    def maxValidLifetime(self, existing: Lease | None, desired: int, now: float) -> int:
        """
        The MCLT rule (section 4.4): C{max(acked, now) + MCLT - now}, no cap
        in PARTNER-DOWN.
        """
        if self.endpoint.state is S.PARTNER_DOWN:
            return desired
        acked = 0.0
        if existing is not None and existing.state is BindingState.ACTIVE and existing.stateAcked:
            acked = existing.partner_lifetime_acked
        cap = int(max(acked, now) + self.endpoint.mclt - now)
        return max(0, min(desired, cap))

    def partnerLifetime(self, lease: Lease) -> float:
        """The partner lifetime to propose for C{lease} (L{partnerLifetime})."""
        desired = lease.valid_lifetime if self._desired is None else self._desired(lease)
        return partnerLifetime(lease.cltt, lease.valid_lifetime, desired, self._t1Fraction)

    # --- lazy updates -----------------------------------------------------------

    def bindingChanged(self, lease: Lease) -> None:
        """
        Hand the changed binding to the update queue, with the partner
        lifetime to propose when it is ACTIVE.
        """
        if lease.state is BindingState.ACTIVE:
            lease = evolve(lease, partner_lifetime_sent=self.partnerLifetime(lease))
        self.queue.enqueue(lease)
