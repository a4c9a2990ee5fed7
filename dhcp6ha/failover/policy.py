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
    to the secondary, and so does a FREE-BACKUP prefix the primary is
    taking back until the secondary acks the FREE (a pending takeback,
    L{dhcp6ha.failover.balance.isTakeback}).  In PARTNER-DOWN the partner's free prefixes are
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

Renewing what the partner granted
=================================
Lease stability (RFC 7031 requirement 4, DESIGN.md invariant 2): with lazy
updates the partner may grant or extend a lease and die (or be cut off)
before its binding update reaches us.  We then hold no record of that lease,
or an older one (EXPIRED by our own reclamation, RELEASED, FREE...).  When
the client Renews (naming the partner) or Rebinds to us, L{mayAllocate}
would refuse an address of the partner's half or a prefix that is not ours,
the client would get NoBinding and lose its lease.  Sections 8.9.1 and
8.11.1 ("continued renewal of a DHCP client's current lease regardless of
whether that lease was given out by the receiving server or not") and 8.4.1
("renewal of all outstanding leases") say to renew it.  L{mayRenew}, which
the allocator asks (L{IRenewalPolicy}) only for the lease a client lists in
a Renew or Rebind, allows what L{mayAllocate} allows and, in addition, a
lease we hold no ACTIVE record of for this client when:

  - (A) no other client may hold it by our records: another client's ACTIVE
    binding is refused (the allocator refuses it before asking, and
    ABANDONED, RESET and PENDING-FREE ones too, but for an ABANDONED binding
    of this very IA: below); another client's EXPIRED or
    RELEASED binding only once that state is acknowledged between the
    partners (L{Lease.stateAcked}); no record, FREE, FREE-BACKUP: yes;
  - (B) it is in a pool of this relationship: the allocator asks only for a
    listed lease inside one of the subnet's pools (a prefix of a pool's
    delegated length, exactly as listed), and this policy only decides for
    its relationship's subnets;
  - (C) we serve the partner's clients (L{servesPartnersClients}):
    COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED, PARTNER-DOWN,
    CONFLICT-DONE (the primary, while the secondary in POTENTIAL-CONFLICT
    answers nobody), or NORMAL while serving for a partner that does not
    reach its clients (below); or we are in NORMAL at all (below: in NORMAL
    only a Rebind, or a Renew naming us, gets here).

A lease this very IA declined to us (our record: its ABANDONED binding, in
either pool) is renewed under (C) too: the partner, which the Decline has
not reached (a partition, the lazy window), may have given the same client
its lease again (the partner's record still says the IA holds it), and the
client, having accepted it, holds it; a lifetime of 0 would take it away
while it runs (chaos seed 42000, docs/chaos-findings.rst finding 8).  No
other client is given a declined lease; if the address is really in use
elsewhere, the client's Duplicate Address Detection finds it and a Decline
ends the binding again.

Leases that are the partner's to answer
=======================================
A lease of the partner's pool that a Renew or Rebind lists and that we do
not renew is one (A) refuses: our record says another client may hold it.
Our record of the partner's pool may lag the partner's, so
L{mayWithdraw} gives such a lease lifetime 0 only when that record is
another client's ACTIVE or ABANDONED binding (so that one address is not
used twice); another client's unacknowledged EXPIRED or RELEASED binding,
or a RESET one, leaves it out of the Reply, and the client keeps it as it
is (RFC 8415 section 18.2.10.1).  Our own pool is ours to answer for: there
a lease we do not renew gets 0.

Why this cannot give one lease to two clients.  A lease of the partner's
pool that we hold no ACTIVE record of was given out, if at all, by the
partner: outside PARTNER-DOWN we never allocate from its pool, and what we
do allocate or renew there we hold an ACTIVE record of.  The partner's own
database has at most one client for it.  A client renews only a lease it
holds, while its valid lifetime runs (RFC 8415 section 18.2), so the client
asking is that one client, and the partner gives the lease to nobody else
while it does (section 4.2.2.1: not before the end of the binding is
acknowledged by us).  Our records can contradict this only in the cases
(A) refuses: another client's ACTIVE binding means we never acknowledged
its end, so the partner cannot have reused the lease; another client's
unacknowledged EXPIRED or RELEASED binding may be our own reclamation of a
lease the partner extended in the lazy window, and the partner has not
reused it either, so the requester cannot hold it; once acknowledged, the
partner may have given it to the requester.  Our own pool is unchanged:
only we allocate it, so L{mayAllocate}'s rules stand there.  What this
trusts is the client's claim: a client listing a lease it does not hold
could be given one the partner granted to someone else in the lazy window.
A standalone server places the same trust in a Renew of a free address; the
lifetime is capped at MCLT (below); the binding is replicated like any
other, and conflict resolution at reintegration settles a clash
(L{dhcp6ha.failover.conflict}).

Lifetime: L{maxValidLifetime} gives a re-created binding at most MCLT
outside PARTNER-DOWN (nothing about it is acknowledged: no ACTIVE acked
record), section 8.9.1; no cap in PARTNER-DOWN (section 8.4.1).

In NORMAL too: a Renew naming the partner is the partner's (we do not
answer it), and the secondary sees no Rebind (it answers only messages
naming it), so what reaches L{mayRenew} in NORMAL is a Rebind to the
primary, or a Renew naming us that lists a second lease.  A client rebinds
after its Renews went unanswered from T1 to T2, and our record of the
partner's lease may lag: its update still in the lazy window, or our
database rebuilt from the partner's after we lost it, without a renewal we
granted just before (chaos seeds 53002 and 64024, docs/chaos-findings.rst
finding 9).  Refusing took the lease away while it ran; (A) and (B) are
what make renewing it safe, in NORMAL as in the other states.

Solicit and Request hints are not honoured from the partner's pool (own
pool first, L{mayAllocate} decides, as before).  A hint is a wish, not a
lease held (RFC 8415 section 18.2.1): nothing says the partner has not given
it to another client, and during a partition the partner keeps allocating
from its pool where we cannot see it.  A client that still holds a lease
renews or rebinds it, which takes the path above.

Serving for a partner that does not reach its clients
=====================================================
RFC 7031 section 4.7: a server whose client-facing link fails while the
failover link stays up would leave its clients unserved, its partner none
the wiser.  The partners send their count of client messages received in
every CONTACT; the endpoint (L{dhcp6ha.failover.machine.PartnerTraffic})
compares the partner's count with the client messages we refused because
the partner answers them, which this policy reports
(C{endpoint.clientMessageForPartner()}) from L{respondsTo} (the secondary in
NORMAL refusing a message naming no server) and L{respondsToServer} (either
server in NORMAL refusing one naming the partner).  When such messages keep
reaching us while the partner's count stays flat, the endpoint serves for
the partner (C{servingForPartner}, logged at warning level, its status
C{responsive-for-partner}) until the partner's count grows again.  Meanwhile
we answer as in COMMUNICATIONS-INTERRUPTED: every message, the partner's
Server Identifier included; new leases only from our own pool (the
partner, alive, allocates from its own); renewals of the leases the partner
granted (L{mayRenew}); lifetimes capped by MCLT (NORMAL).  Replication goes
on as usual: the link is up, so the partner learns at once of every lease we
give or renew for its clients.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from zope.interface import implementer

from dhcp6ha.failover.balance import isTakeback
from dhcp6ha.failover.machine import EndpointState, Role
from dhcp6ha.interfaces import IFailoverPolicy, IPartnerLifetimePolicy, IRenewalPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType, withPartnerLifetimeSent
from dhcp6ha.message import MessageType

if TYPE_CHECKING:
    from dhcp6ha.interfaces import IUpdateQueue

__all__ = ["EndpointView", "FailoverPolicy", "PartnerTrafficView", "partnerLifetime"]

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

#: Ended bindings a client may renew while we serve the partner's clients:
#: its own, or another client's once the partner knows the state.
_RENEWABLE = frozenset({BindingState.EXPIRED, BindingState.RELEASED})


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


@runtime_checkable
class PartnerTrafficView(Protocol):
    """
    What the policy reads from, and reports to, an endpoint that detects a
    partner not reaching its clients (RFC 7031 section 4.7; a
    L{FailoverEndpoint} is one).  Optional: with an endpoint that is only an
    L{EndpointView}, the policy never serves for the partner in NORMAL.
    """

    @property
    def servingForPartner(self) -> bool:
        """
        In NORMAL, serving the partner's clients: the partner is connected
        but does not receive their messages.
        """

    def clientMessageForPartner(self) -> None:
        """A client message the partner should answer was refused here."""


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


@implementer(IFailoverPolicy, IRenewalPolicy, IPartnerLifetimePolicy)
class FailoverPolicy:
    """
    L{IFailoverPolicy} for one failover relationship.

    @ivar endpoint: the endpoint whose state decides; when it is also a
        L{PartnerTrafficView}, refusals are reported to it and it may serve
        for the partner.
    @ivar queue: where changed bindings go (lazy updates).
    @ivar partnerDuid: the partner's server DUID, when known: only messages
        naming it are taken over.  C{None}: any other server's.
    @ivar bindingObservers: called with every binding L{bindingChanged}
        hands to the queue (e.g. the primary's takeback counting grants).
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
        self._traffic = endpoint if isinstance(endpoint, PartnerTrafficView) else None
        self.queue = queue
        self.partnerDuid = partnerDuid
        self._desired = desiredLifetime
        self._t1Fraction = t1Fraction
        self.bindingObservers: list[Callable[[Lease], None]] = []

    # --- who answers what ------------------------------------------------------

    @property
    def servesPartnersClients(self) -> bool:
        """
        Does this server answer the partner's clients now, renewing the
        leases the partner granted?  In COMMUNICATIONS-INTERRUPTED,
        RESOLUTION-INTERRUPTED, PARTNER-DOWN and CONFLICT-DONE, and in
        NORMAL while the endpoint serves for a partner that does not reach
        its clients (RFC 7031 section 4.7, see the module docstring).
        """
        state = self.endpoint.state
        if state in _TAKEOVER:
            return True
        traffic = self._traffic
        return state is S.NORMAL and traffic is not None and traffic.servingForPartner

    def respondsTo(self, msg_type: int, addressed_to_us: bool) -> bool:
        """
        NORMAL: the primary answers everything but messages naming another
        server, the secondary only messages naming it (renew responsive).
        COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED, PARTNER-DOWN,
        CONFLICT-DONE, and NORMAL while serving for the partner: everything,
        messages naming the partner included.  RECOVER-DONE: Renew naming
        us.  Other states: nothing.

        A message the secondary refuses in NORMAL because the primary
        answers it (one naming no server) is reported to the endpoint
        (C{clientMessageForPartner}, RFC 7031 section 4.7).
        """
        state = self.endpoint.state
        if self.servesPartnersClients:
            # A Request naming another server chose that server's Advertise
            # (RFC 8415 section 16.4): see respondsToServer.
            return addressed_to_us or msg_type != MessageType.REQUEST
        if state is S.NORMAL:
            if self.endpoint.role is Role.PRIMARY:
                return addressed_to_us or msg_type not in _ADDRESSED
            if not addressed_to_us and msg_type not in _ADDRESSED:
                self._missed()
            return addressed_to_us
        if state is S.RECOVER_DONE:
            return addressed_to_us and msg_type == _RENEW
        return False

    def respondsToServer(self, msg_type: int, server_id: bytes) -> bool:
        """
        A message naming another server: the partner's, while serving the
        partner's clients (L{servesPartnersClients}).  In NORMAL, one naming
        the partner (its DUID known) is the partner's to answer and is
        reported to the endpoint (C{clientMessageForPartner}).

        A Request naming another server is never answered, whatever the
        state (RFC 8415 section 16.4): the client chose that server's
        Advertise, and answering it too would give one IA two leases, one
        from each server.  Renew, Release and Decline naming the partner are
        answered while serving its clients: those name a lease the client
        already holds.
        """
        if self.servesPartnersClients:
            if msg_type == MessageType.REQUEST:
                return False
            return self.partnerDuid is None or server_id == self.partnerDuid
        if (
            self.endpoint.state is S.NORMAL
            and self.partnerDuid is not None
            and server_id == self.partnerDuid
        ):
            self._missed()
        return False

    def _missed(self) -> None:
        """Report a client message refused because the partner answers it."""
        if self._traffic is not None:
            self._traffic.clientMessageForPartner()

    # --- who allocates what -----------------------------------------------------

    def isOwn(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
    ) -> bool:
        """
        Independent allocation by the low bit; proportional by FREE /
        FREE-BACKUP (a pending takeback is still the secondary's).
        """
        if lease_type is LeaseType.PD:
            backup = existing is not None and (
                existing.state is BindingState.FREE_BACKUP or isTakeback(existing)
            )
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

    def mayRenew(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        A lease the client lists in a Renew or Rebind that we hold no
        ACTIVE record of for it: whatever L{mayAllocate} allows, and, while
        serving the partner's clients (L{servesPartnersClients}) or in
        NORMAL, also a lease of the partner's pool unless our record says
        another client may hold it.  See "Renewing what the partner granted" in the module
        docstring for why this is safe.
        """
        if self.mayAllocate(lease_type, address, prefix_length, existing, duid, iaid, now):
            return True
        if not (self.servesPartnersClients or self.endpoint.state is S.NORMAL):
            return False
        if existing is None or existing.state in _AVAILABLE:
            return True
        if existing.state is BindingState.ACTIVE:
            return existing.heldBy(duid, iaid)
        if existing.state in _RENEWABLE:
            return existing.heldBy(duid, iaid) or existing.stateAcked
        if existing.state is BindingState.ABANDONED:
            # This very IA declined it here; the partner, not told yet, may
            # have given it back (module docstring).
            return existing.heldBy(duid, iaid)
        return False  # RESET

    def mayWithdraw(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        A listed lease we do not renew: lifetime 0 in our own pool, or the
        partner's while we serve its clients, or when our record says
        another client holds it; otherwise left out of the Reply.  See
        "Leases that are the partner's to answer" in the module docstring.
        """
        if self.servesPartnersClients or self.isOwn(lease_type, address, prefix_length, existing):
            return True
        return (
            existing is not None
            and existing.state in (BindingState.ACTIVE, BindingState.ABANDONED)
            and not existing.heldBy(duid, iaid)
        )

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

    def withPartnerLifetime(self, lease: Lease) -> Lease:
        """
        The record to store for this change: an ACTIVE binding with the
        partner lifetime it will propose, C{max(partner_lifetime_sent,
        partnerLifetime(lease))}, stored with the change itself (so that the
        update queue proposes the stored value and need not store it first,
        L{IPartnerLifetimePolicy}); C{lease} itself when that is what it
        holds already, or when it is not ACTIVE.
        """
        if lease.state is not BindingState.ACTIVE:
            return lease
        proposal = self.partnerLifetime(lease)
        if proposal <= lease.partner_lifetime_sent:
            return lease
        return withPartnerLifetimeSent(lease, proposal)

    def bindingChanged(self, lease: Lease) -> None:
        """
        Hand the changed binding (durable) to the update queue, which reads
        it back from the store with the partner lifetime to propose, then to
        the L{bindingObservers}.
        """
        self.queue.enqueue(lease)
        for observer in self.bindingObservers:
            observer(lease)
