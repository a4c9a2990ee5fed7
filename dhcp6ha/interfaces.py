# -*- test-case-name: tests.test_interfaces -*-
"""
The seams of dhcp6ha, as zope.interface interfaces.

Every implementer (including the fakes in L{dhcp6ha.testing}) is checked with
C{verifyObject} in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from dhcp6ha.leases.lease import BindingState, Lease, LeaseType


class ILeaseStore(Interface):
    """
    Stable storage for bindings.

    Reads are synchronous and see every change already passed to L{commit}
    (read-your-writes), durable or not: the engine must never hand out a
    binding that an in-flight exchange is granting.  L{commit} returns a
    Deferred that fires only once the changes are on stable storage (fsync);
    a Reply granting a lease is sent only after that.
    """

    def get(address: IPv6Address, prefix_length: int) -> Lease | None:
        """
        The binding for this address (C{prefix_length} 128) or delegated
        prefix, or C{None}.
        """

    def byClient(duid: bytes, iaid: int, lease_type: LeaseType) -> list[Lease]:
        """Every binding held by this client's IA of this type."""

    def commit(
        changes: Sequence[Lease],
        *,
        pending: bool = True,
        whenDurable: Callable[[], None] | None = None,
    ) -> Deferred[None]:
        """
        Insert or replace these bindings (keyed by L{Lease.key}).

        Visible to reads at once; the Deferred fires when durable, or fails
        if they could not be written.  Changes of many calls may share one
        transaction (group commit).

        C{whenDurable}, if given, is called once, as soon as the changes are
        durable and before the Deferred fires, in whatever thread made them
        durable (not necessarily the reactor's): for work that should not
        wait for the reactor, such as sending the client's Reply.  It must
        be safe to call from another thread and must not block; the store
        logs what it raises.  Never called if the changes are not stored.

        Replication (failover): every change gets a new version (a counter
        of the store, increasing in call order).  With C{pending} (the
        default), a change the store's classifier assigns to a failover
        relationship is marked pending for it, durably with the change
        itself; C{pending=False} is for a binding received from the partner,
        which must not be sent back.
        """

    def amend(changes: Sequence[Lease]) -> Deferred[None]:
        """
        Replace stored bindings in place, keeping their version and pending
        mark (bookkeeping that is not itself replicated, e.g. the partner
        lifetime about to be proposed).  Bindings with no record or an
        identical one are skipped.  Fires once durable.
        """

    def pendingUpdates(relationship: str, afterVersion: int, limit: int) -> list[tuple[int, Lease]]:
        """
        Up to C{limit} C{(version, binding)} pending for C{relationship}
        with a version above C{afterVersion}, in version order (keyset
        pagination).  Sees acks and newer changes at once, but never a
        version whose commit is not durable yet.
        """

    def pendingCount(relationship: str) -> int:
        """The number of bindings pending for C{relationship} (for status)."""

    def acknowledge(relationship: str, acks: Sequence[tuple[Lease, int | None]]) -> Deferred[None]:
        """
        The partner acked: for each C{(sent, version)}, the record as sent
        (its C{partner_lifetime_sent} the partner lifetime proposed) and the
        version sent (C{None}: not one of the pending updates), apply the
        ack to the binding as it is stored when the ack is written, in place
        (no new version), as
        L{dhcp6ha.failover.conflict.acknowledged} applies it to a record;
        clear its pending mark for C{relationship} only if the binding is
        still at that version.  Reads may see the ack only once it is
        durable (seeing an ack late is only cautious).  Fires once durable.
        """

    def markPending(keys: Sequence[tuple[IPv6Address, int]]) -> Deferred[None]:
        """
        Mark these stored bindings pending again (new version) for their
        relationship, unless already pending there (those keep their
        version: no update storm between disagreeing partners).  Fires once
        durable.
        """

    def expiredBefore(now: float, limit: int) -> list[Lease]:
        """
        Up to C{limit} bindings whose C{expires} is at or before C{now} and
        whose state is ACTIVE or ABANDONED (candidates for reclamation).
        """

    def iterLeases(batch: int) -> Iterator[Lease]:
        """
        Every binding, read in batches of C{batch} so that a large database
        is never loaded into memory at once.
        """

    def getMetadata(key: str) -> str | None:
        """A durable value stored with L{setMetadata} (server DUID, failover state)."""

    def setMetadata(key: str, value: str) -> Deferred[None]:
        """Store a value durably; the Deferred fires once it is durable."""

    def count() -> dict[str, int]:
        """Number of bindings per state name (for status and tests)."""

    def close() -> Deferred[None]:
        """Flush every committed change to stable storage and release the file."""


class IAllocationPolicy(Interface):
    """
    What this server may do with addresses and prefixes at this moment.

    This is where failover plugs into the engine: a standalone server allows
    everything; a failover endpoint answers from its state (RFC 8156 sections
    4.2 and 4.4 and 8).
    """

    def mayAllocate(
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        May this server give this (free, expired or released) address or
        prefix to this client now?  C{existing} is the stored binding, if any.
        """

    def maxValidLifetime(existing: Lease | None, desired: int, now: float) -> int:
        """
        The longest valid lifetime this server may give now for a binding
        whose stored record is C{existing}, given the configured C{desired}
        one (the MCLT rule, RFC 8156 section 4.4).
        """

    def respondsTo(msg_type: int, addressed_to_us: bool) -> bool:
        """
        Does this server answer this client message now?  C{addressed_to_us}
        is True when the message carries this server's Server Identifier,
        False when it carries none or another server's.
        """

    def bindingChanged(lease: Lease) -> None:
        """
        Called after C{lease} is durable and the client's Reply is sent
        (lazy update: the failover queue takes it from here).
        """


Replicate = Callable[["Lease"], "str | None"]
"""
A store's failover classifier: the relationship that replicates a binding
(the one its subnet belongs to), or C{None} for a binding no partner shares.
"""

__all__ = ["IAllocationPolicy", "ILeaseStore", "Replicate"]


# --- failover (RFC 8156) -------------------------------------------------------

if TYPE_CHECKING:
    from dhcp6ha.failover.machine import StateMessage


class IFailoverPeer(Interface):
    """
    The failover partner as one connection to it: what the endpoint state
    machine (L{dhcp6ha.failover.machine.FailoverEndpoint}) sends.  The AMP
    protocol implements it, one provider per connection, handed to the
    machine by C{FailoverEndpoint.connected(peer)}.

    The machine calls these only after the state they reflect is durable.
    Every method returns a Deferred that fires when the message is sent (or
    answered, as the implementation likes) and fails if it could not be; the
    machine logs failures and does not wait for them.
    """

    def sendState(message: StateMessage) -> Deferred[None]:
        """Send a STATE message (RFC 8156 section 6.3)."""

    def sendUpdateRequest() -> Deferred[None]:
        """
        Send UPDREQ: ask for every binding update the partner has not had
        acked (section 5.3.5).  The partner answers with binding updates,
        then UPDDONE, which the protocol reports as
        C{FailoverEndpoint.updateDoneReceived()}.
        """

    def sendUpdateRequestAll() -> Deferred[None]:
        """Send UPDREQALL: ask for every binding the partner has (section 5.3.6)."""

    def sendUnackedUpdates() -> Deferred[None]:
        """
        Send every binding update of ours the partner has not acked yet
        (entering NORMAL, section 8.8); no UPDDONE follows.
        """

    def sendPoolRequest() -> Deferred[None]:
        """Send POOLREQ: the secondary asks for delegable prefixes (section 4.2.2)."""

    def sendContact() -> Deferred[None]:
        """Send CONTACT, the heartbeat (section 6.6)."""

    def disconnect(reason: str) -> None:
        """
        Drop this connection (e.g. the keepalive timer expired).  The
        machine has already forgotten it: a C{communicationsLost()} that
        follows is ignored.
        """


class IUpdateQueue(Interface):
    """
    The lazy-update queue (RFC 8156 section 4.3): bindings waiting to be sent
    to the partner, kept across restarts until the partner acks them.
    """

    def enqueue(lease: Lease) -> None:
        """
        Send this binding to the partner as soon as it can be sent.  The
        binding is already durable locally; C{lease.partner_lifetime_sent}
        holds the partner lifetime to propose (section 4.4).
        """

    def attach(sender: Callable[[list[dict[str, Any]]], Deferred[list[dict[str, Any]]]]) -> None:
        """
        A connection to the partner is up: send through C{sender}, which
        sends one BindingUpdate batch (a list of binding boxes) and fires
        with the partner's per-binding results.  Everything pending is
        (re)sent.
        """

    def detach() -> None:
        """
        The connection is gone: forget what is in flight (it stays pending
        and goes again on the next connection); L{flush} and L{sendAll}
        Deferreds still waiting fail.
        """

    def flush() -> Deferred[None]:
        """
        Fires once every update pending now has been sent and answered (acked
        or rejected) on this connection (RFC 8156 section 8.8 "send all
        unacked updates").
        """

    def sendAll() -> Deferred[None]:
        """
        Send every binding (UPDREQALL, section 5.3.6); fires once all are
        sent and answered.
        """

    def pause() -> None:
        """Send no new batch until L{resume} (what is in flight goes on)."""

    def resume() -> None:
        """Send again after L{pause}."""


class IFailoverPolicy(IAllocationPolicy):
    """
    What a failover endpoint adds to L{IAllocationPolicy}: finer answers the
    engine and allocator may use when the policy provides this interface.
    """

    def respondsToServer(msg_type: int, server_id: bytes) -> bool:
        """
        Does this server answer a client message that names another
        server's Server Identifier C{server_id}?  True only for the
        partner's (when known) in the states where this server renews the
        partner's clients (COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED,
        PARTNER-DOWN, CONFLICT-DONE).
        """

    def isOwn(
        lease_type: LeaseType, address: IPv6Address, prefix_length: int, existing: Lease | None
    ) -> bool:
        """
        Is this available address or prefix in this server's own pool
        (independent allocation: the low bit; proportional allocation: FREE
        for the primary, FREE-BACKUP for the secondary)?  An allocator
        should try its own pool first: in PARTNER-DOWN the partner's free
        prefixes become allowed too (RFC 8156 section 8.4.1: own pool first).
        """


class IRenewalPolicy(IAllocationPolicy):
    """
    What a policy may add to L{IAllocationPolicy} for renewals: a separate
    answer for a lease a client says it holds, in a Renew or Rebind, that
    this server has no ACTIVE record of for that client (lease stability
    after a lost binding update, RFC 7031 requirement 4, RFC 8156 section
    8.9.1).  The allocator asks it, instead of C{mayAllocate}, only for the
    address or prefix the client lists in a Renew or Rebind (its
    C{probe=False} path); every other candidate is put to C{mayAllocate}.
    A policy that does not provide this interface is asked C{mayAllocate}
    for those too.
    """

    def mayRenew(
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        May this server (re-)create the binding of this address or prefix,
        of a pool of this policy's, for this client, which lists it as its
        own in a Renew or Rebind?  C{existing} is the stored binding, if
        any; never another client's ACTIVE binding nor one in a state the
        allocator does not reuse (ABANDONED, RESET, PENDING-FREE): those
        are refused without asking (but for an ABANDONED binding of this
        very IA).
        """

    def mayWithdraw(
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        A lease of a pool of this policy's, appropriate on the link, that
        the client lists in a Renew or Rebind and this server does not
        renew: may the Reply give it lifetime 0, taking it away?  If not,
        the Reply leaves it out, and the client keeps it as it is (RFC 8415
        section 18.2.10.1): for a lease of a failover partner's pool, whose
        record of it may be newer than ours.
        """


class IPartnerLifetimePolicy(IAllocationPolicy):
    """
    What a failover policy may add to L{IAllocationPolicy} so that the
    partner lifetime an update will propose (RFC 8156 section 4.4) is stored
    with the binding change itself, not in a second write before the update
    is sent (it must be durable before it is proposed).  The engine asks it
    for every ACTIVE binding it grants or renews, before committing; a
    policy that does not provide this interface stores the binding as built.
    """

    def withPartnerLifetime(lease: Lease) -> Lease:
        """
        The record to store: C{lease} with the partner lifetime to propose
        as its C{partner_lifetime_sent}, never less than it holds (or
        C{lease} itself).
        """


__all__ += [
    "IFailoverPeer",
    "IFailoverPolicy",
    "IPartnerLifetimePolicy",
    "IRenewalPolicy",
    "IUpdateQueue",
]


# --- operator control (dhcp6ha-ctl) ------------------------------------------------

if TYPE_CHECKING:
    from ipaddress import IPv6Network

    from dhcp6ha.control import RelationshipStatus


class IRelationshipControl(Interface):
    """
    One failover relationship as the operator control channel sees it.  The
    failover wiring provides one per C{[failover:NAME]} and registers it with
    C{dhcp6ha.control.ControlTarget.addRelationship}.

    L{partnerDown} and L{sync} may fail with C{dhcp6ha.control.ControlError}
    to refuse with a reason for the operator (e.g. "refused in state
    RECOVER"); any other failure is reported as an internal error.  Their
    results must be JSON-serialisable (C{str}, numbers, C{bool}, C{None},
    lists and dicts of those): they are sent to C{dhcp6ha-ctl} as they are.
    """

    name = Attribute("The relationship's name, C{NAME} of C{[failover:NAME]} (C{str}).")

    def status() -> RelationshipStatus:
        """A snapshot of the relationship now (cheap, synchronous)."""

    def partnerDown() -> Deferred[object]:
        """
        The operator says the partner is down (RFC 8156 sections 8.8.2,
        8.9.2, 8.11.2): go to PARTNER-DOWN.  Fires once the new state is
        durable (or the command refused), with a description of the outcome,
        e.g. C{{"state": "partner-down", "since": 1790000000.0}}.
        """

    def sync() -> Deferred[object]:
        """
        Resynchronise with the partner now: ask it for the binding updates
        we have not received (UPDREQ) and send ours that it has not acked.
        Fires once the request is sent (not when the updates are done), with
        a description, e.g. C{{"requested": True, "unacked_updates": 12}};
        fails with C{ControlError} when not connected to the partner.
        """


class IControlTarget(Interface):
    """
    What the operator control channel (C{dhcp6ha.control.ControlFactory})
    asks of the running server.  C{dhcp6ha.control.ControlTarget} implements
    it on top of the services of C{dhcp6ha.service.makeService}.

    Every method may raise (or fail with) C{dhcp6ha.control.ControlError}
    to answer the operator with an error message.
    """

    def status() -> dict[str, object]:
        """
        The server's status as a JSON-serialisable dict: the server, its
        counters, lease counts per state and one entry per failover
        relationship (C{RelationshipStatus.asDict()}); see
        C{dhcp6ha.control.ControlTarget.status} for the keys.
        """

    def leases(
        address: IPv6Address | None,
        prefix: IPv6Network | None,
        duid: bytes | None,
        limit: int,
        states: Collection[BindingState] | None = None,
    ) -> Deferred[list[Lease]]:
        """
        The bindings of this address (C{prefix_length} 128), of this
        delegated prefix, or held by this client DUID (every IAID and IA
        type); with none of the three, every binding.  Only those in
        C{states}, when given.  At most C{limit} bindings, in key order.
        """

    def partnerDown(relationship: str) -> Deferred[object]:
        """
        L{IRelationshipControl.partnerDown} of the relationship named
        C{relationship}; fails with C{ControlError} if there is none.
        """

    def sync(relationship: str) -> Deferred[object]:
        """
        L{IRelationshipControl.sync} of the relationship named
        C{relationship}; fails with C{ControlError} if there is none.
        """


__all__ += ["IControlTarget", "IRelationshipControl"]
