# -*- test-case-name: tests.test_conflict -*-
"""
Binding update bookkeeping (RFC 8156 section 7), pure functions.

L{resolve} decides whether a binding received from the partner replaces the
local one (sections 7.5.3-7.5.5) and gives the record to store; L{acknowledged}
records the partner's ack of a binding we sent (section 7.7).

The conflict rules (DESIGN.md "Conflict resolution", with the draft's
Figure 3 where DESIGN.md is silent).  "Time" of a record is its client last
transaction time (CLT) when it has one, else its start time of state; for an
incoming record in a state other than ACTIVE, EXPIRED or RELEASED, the later
of the two (section 7.5.4).  Times within C{tolerance} (5 s, the skew bound
of section 7.1) are the same time.  "Later wins": accept if the incoming time
is later, reject (OutdatedBindingInformation) if the local one is; at the
same time the later start time of state wins; at the same start time, an
identical record is accepted (a resent update) and anything else is
rejected.

=============  ==========================  =========================================
local          incoming                    result
=============  ==========================  =========================================
none           anything                    accept
any            -- not configured here      reject ConfigurationConflict
any            ACTIVE without client       reject MissingBindingInformation
other type     anything                    reject ConfigurationConflict
ACTIVE         ACTIVE, same client         later wins; same times: the later (or
                                           equal) expiry wins
ACTIVE         ACTIVE, other client        secondary: accept; primary: accept if the
                                           incoming CLT is later, else AddressInUse
ACTIVE         EXPIRED, FREE, FREE-BACKUP, keep local until its expiry (reject
               PENDING-FREE                Outdated), then accept
ACTIVE         RELEASED, RESET, ABANDONED  same client: later wins; another client:
                                           keep local until its expiry, then accept
RESET          ACTIVE                      accept if the incoming CLT is later than
                                           the local start time of state
any other      anything                    later wins
=============  ==========================  =========================================

Two rows are stricter than the draft's Figure 3, which accepts RELEASED,
RESET and ABANDONED over a local ACTIVE binding on time alone: a record of
another client must not erase the binding a client holds here.

A rejection with OutdatedBindingInformation (or AddressInUse) means the
partner holds older information: L{Resolution.sendLocal} says the local
record should be queued for the partner (section 7.5.4: set the "update
partner" flag; the queue sends it at its own pace, never in a tight loop).
"""

from __future__ import annotations

import enum

from attrs import evolve, frozen

from dhcp6ha.failover.machine import Role
from dhcp6ha.leases.lease import BindingState, Lease

__all__ = ["FailoverStatus", "Resolution", "Verdict", "acknowledged", "resolve"]

#: Section 7.1: times this close are the same time.
DEFAULT_TOLERANCE = 5.0


class FailoverStatus(enum.IntEnum):
    """RFC 8156 status codes (IANA DHCPv6 status codes 16-22)."""

    ADDRESS_IN_USE = 16
    CONFIGURATION_CONFLICT = 17
    MISSING_BINDING_INFORMATION = 18
    OUTDATED_BINDING_INFORMATION = 19
    SERVER_SHUTTING_DOWN = 20
    DNS_UPDATE_NOT_SUPPORTED = 21
    EXCESSIVE_TIME_SKEW = 22


class Verdict(enum.Enum):
    """The outcome of L{resolve}."""

    ACCEPT = "accept"
    REJECT = "reject"
    KEEP_UNTIL_EXPIRY = "keep-until-expiry"  # a REJECT that becomes ACCEPT at C{until}


@frozen
class Resolution:
    """
    What to do with one received binding.

    @ivar verdict: accept, reject, or keep the local binding until it expires.
    @ivar rule: the table row that decided, for logs and tests.
    @ivar status: the status code to answer with (C{None} when accepted).
    @ivar record: when accepted, the binding to store before acking (section
        7.5.2: the BNDREPLY goes only after it is durable).
    @ivar until: for KEEP_UNTIL_EXPIRY, when the local binding expires.
    @ivar sendLocal: the partner should be sent our record (section 7.5.4).
    """

    verdict: Verdict
    rule: str
    status: FailoverStatus | None = None
    record: Lease | None = None
    until: float | None = None
    sendLocal: bool = False

    @property
    def accepted(self) -> bool:
        """Is the incoming binding accepted?"""
        return self.verdict is Verdict.ACCEPT


#: States whose "time" is the CLT when present (section 7.5.4).
_CLT_STATES = frozenset({BindingState.ACTIVE, BindingState.EXPIRED, BindingState.RELEASED})
#: Incoming states that never override a local ACTIVE binding before it expires.
_FREEING = frozenset(
    {
        BindingState.EXPIRED,
        BindingState.FREE,
        BindingState.FREE_BACKUP,
        BindingState.PENDING_FREE,
    }
)


def _incomingTime(lease: Lease) -> float:
    if lease.state in _CLT_STATES and lease.cltt > 0:
        return lease.cltt
    if lease.state in _CLT_STATES:
        return lease.start_time_of_state
    return max(lease.cltt, lease.start_time_of_state)


def _localTime(lease: Lease) -> float:
    return lease.cltt if lease.cltt > 0 else lease.start_time_of_state


def _compare(a: float, b: float, tolerance: float) -> int:
    """1 if C{a} is later than C{b}, -1 if earlier, 0 if the same time."""
    if a > b + tolerance:
        return 1
    if b > a + tolerance:
        return -1
    return 0


def _sameRecord(local: Lease, incoming: Lease) -> bool:
    return (
        local.state is incoming.state
        and local.duid == incoming.duid
        and local.iaid == incoming.iaid
        and local.cltt == incoming.cltt
        and local.start_time_of_state == incoming.start_time_of_state
        and local.expires == incoming.expires
    )


def _stored(local: Lease | None, incoming: Lease) -> Lease:
    """
    The record to store for an accepted update (section 7.5.5): the
    partner's binding, which the partner by definition knows (so its state
    counts as acknowledged), with the partner lifetime it proposed as the
    lifetime both sides know (section 8.9.1 "the partner lifetime received
    from the partner server"), kept at the local acked value when that is
    later and concerns the same client.  Nothing of ours is left to propose.
    """
    acked = incoming.partner_lifetime_sent
    if local is not None and local.heldBy(incoming.duid, incoming.iaid):
        acked = max(acked, local.partner_lifetime_acked)
    return evolve(
        incoming,
        partner_lifetime_sent=0.0,
        partner_lifetime_acked=acked,
        partner_state_acked=incoming.state,
        partner_stos_acked=incoming.start_time_of_state,
    )


def _accept(rule: str, local: Lease | None, incoming: Lease) -> Resolution:
    return Resolution(Verdict.ACCEPT, rule, record=_stored(local, incoming))


def _reject(rule: str, status: FailoverStatus, sendLocal: bool = True) -> Resolution:
    return Resolution(Verdict.REJECT, rule, status=status, sendLocal=sendLocal)


def _order(local: Lease, incoming: Lease, tolerance: float) -> int:
    """1 if the incoming record is later, -1 if the local one is, 0 if neither."""
    order = _compare(_incomingTime(incoming), _localTime(local), tolerance)
    if order == 0:
        order = _compare(incoming.start_time_of_state, local.start_time_of_state, tolerance)
    return order


def _laterWins(local: Lease, incoming: Lease, tolerance: float, rule: str) -> Resolution:
    """Later time wins; then later start time of state; then identical records."""
    order = _order(local, incoming, tolerance)
    if order > 0:
        return _accept(rule + ": later", local, incoming)
    if order < 0:
        return _reject(rule + ": older", FailoverStatus.OUTDATED_BINDING_INFORMATION)
    if _sameRecord(local, incoming):
        return _accept(rule + ": same record", local, incoming)
    return _reject(rule + ": same time", FailoverStatus.OUTDATED_BINDING_INFORMATION)


def _keepUntilExpiry(local: Lease, incoming: Lease, now: float, rule: str) -> Resolution:
    """Draft Figure 3 time(1): a local ACTIVE binding stands until it expires."""
    if now >= local.expires:
        return _accept(rule + ": local expired", local, incoming)
    return Resolution(
        Verdict.KEEP_UNTIL_EXPIRY,
        rule + ": local active",
        status=FailoverStatus.OUTDATED_BINDING_INFORMATION,
        until=local.expires,
        sendLocal=True,
    )


def resolve(
    local: Lease | None,
    incoming: Lease,
    role: Role,
    now: float,
    *,
    configured: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Resolution:
    """
    Decide about one binding received in a binding update (see the module
    docstring for the table).

    @param local: our record of the same address or prefix, if any.
    @param incoming: the partner's record, with the partner lifetime it
        proposes in C{partner_lifetime_sent}, times already in our clock.
    @param role: this (the receiving) server's role.
    @param now: the current time.
    @param configured: is the address or prefix in one of this
        relationship's pools here (section 7.5.4)?
    @param tolerance: times this close are the same (section 7.1).
    """
    if not configured:
        return _reject("not configured", FailoverStatus.CONFIGURATION_CONFLICT, False)
    if incoming.state is BindingState.ACTIVE and not incoming.duid:
        return _reject("active without client", FailoverStatus.MISSING_BINDING_INFORMATION, False)
    if local is None:
        return _accept("new", None, incoming)
    if local.lease_type is not incoming.lease_type:
        return _reject("lease type differs", FailoverStatus.CONFIGURATION_CONFLICT, False)
    same = local.heldBy(incoming.duid, incoming.iaid)

    if local.state is BindingState.ACTIVE:
        if incoming.state is BindingState.ACTIVE:
            if same:
                rule = "active/active same client"
                order = _order(local, incoming, tolerance)
                if order == 0:
                    # Two grants to one client at the same time (or a resent
                    # update): the longer one stands, the client may hold it.
                    order = 1 if incoming.expires >= local.expires else -1
                if order > 0:
                    return _accept(rule + ": later", local, incoming)
                return _reject(rule + ": older", FailoverStatus.OUTDATED_BINDING_INFORMATION)
            if role is Role.SECONDARY:
                return _accept("active/active other client: secondary", local, incoming)
            if _compare(incoming.cltt, local.cltt, tolerance) > 0:
                return _accept("active/active other client: later client time", local, incoming)
            return _reject("active/active other client: primary", FailoverStatus.ADDRESS_IN_USE)
        if incoming.state in _FREEING:
            return _keepUntilExpiry(local, incoming, now, "active/" + incoming.state.value)
        if same:
            return _laterWins(local, incoming, tolerance, "active/" + incoming.state.value)
        return _keepUntilExpiry(local, incoming, now, "active/" + incoming.state.value + " other")

    if local.state is BindingState.RESET and incoming.state is BindingState.ACTIVE:
        # Figure 3 time(2): the client's time against the reset's.
        if _compare(incoming.cltt, local.start_time_of_state, tolerance) > 0:
            return _accept("reset/active: later client time", local, incoming)
        return _reject("reset/active: older", FailoverStatus.OUTDATED_BINDING_INFORMATION)

    return _laterWins(local, incoming, tolerance, local.state.value + "/" + incoming.state.value)


def acknowledged(stored: Lease, sent: Lease) -> Lease:
    """
    The record to store when the partner acks the update C{sent} (section
    7.7) and our record is now C{stored} (it may have changed since).

    The partner lifetime sent becomes the acked one when the binding is
    still the same client's (the greatest acked is kept, section 7.3); the
    state counts as acknowledged only if it is still the state that was
    sent (same state, same start time of state).
    """
    result = stored
    if stored.heldBy(sent.duid, sent.iaid) and sent.partner_lifetime_sent > 0:
        result = evolve(
            result,
            partner_lifetime_acked=max(stored.partner_lifetime_acked, sent.partner_lifetime_sent),
        )
    if (
        stored.state is sent.state
        and stored.start_time_of_state == sent.start_time_of_state
        and stored.heldBy(sent.duid, sent.iaid)
    ):
        result = evolve(
            result,
            partner_state_acked=sent.state,
            partner_stos_acked=sent.start_time_of_state,
        )
    return result
