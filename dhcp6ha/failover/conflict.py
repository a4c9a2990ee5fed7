# -*- test-case-name: tests.test_conflict -*-
"""
Binding update bookkeeping (RFC 8156 section 7), pure functions.

L{resolve} decides whether a binding received from the partner replaces the
local one (sections 7.5.3-7.5.5) and gives the record to store; L{acknowledged}
records the partner's ack of a binding we sent (section 7.7).

Lineage before time
===================
Section 7.5.3 asks whether a received binding "is consistent with the
server's already known state" before deciding which is "better".  Both
servers record what the other knows of each binding (C{partner_state_acked}
and C{partner_stos_acked}: set when the partner acks ours, L{acknowledged},
and when we accept the partner's, L{_stored}; the engine keeps them across
a change of the same client's binding).  These are values copied between
the servers, never measured again, so comparing them involves neither
clock: no skew, no tolerance.

  - I{Successor}: the partner knows our record's state (L{Lease.stateAcked})
    and sends another state or start time of state: it changed the binding
    after learning ours (a Release, a Decline, an expiry, the quarantine's
    end, a re-grant...).  Accepted, however close the times.
  - I{Predecessor}: our record was derived from the incoming one (our
    acknowledged state and start time of state are the incoming record's,
    and our state changed since): the partner sends again what we had
    before our change, most likely because our ack of it was lost.
    Answered with success and not stored (L{Verdict.SUPERSEDED}): we did
    receive it, and the partner, marking it acknowledged, then takes our
    record, which we send, as its successor.  A rejection here could meet
    the partner's rejection of ours (it does not know the lineage while it
    misses our ack): the pair would reject each other's updates for ever.

One guard on both: a change of the same state (a renewal, or the same
client's Request answered with the binding it holds) leaves C{stateAcked}
as it was, so the partner may know our state without our last client
transaction.  A record derived from ours is a successor only if it
carries a client transaction at least as late as ours (L{_follows}), and
ours is the predecessor of the incoming one only if the same holds the
other way round: the guard is one function of the base record and the
derived one, the same on both sides, so what one server finds a
successor of its record the other finds a predecessor of its own.  It
leans towards an ACTIVE binding, which its client may hold:

  - the end of an ACTIVE binding (a Release, a Decline, a withdrawal, an
    expiry) follows it only if it ended the binding's last client
    transaction or a later one, without tolerance: the client's own
    transactions are ordered (its Release was sent before its next
    Request), and a Release the partner answered before our grant or
    renewal must not take back what we granted after it (chaos finding 3:
    a Release on one server, the same client's Request answered by the
    other within the tolerance, during a partition or while the Release was
    on its way).  Which transaction a Release ended is in the record
    itself, copied, not measured (L{_endedClientTime}: its expiry minus its
    valid lifetime), so no clock skew misorders it (chaos finding 7).  An
    expiry keeps the binding's CLT: it follows the binding it expired, not
    a renewal the partner did not know;
  - anything else (a re-grant after a Release or an expiry, a lease of a
    FREE-BACKUP prefix, the quarantine's end) follows unless its CLT is
    earlier than ours by more than C{tolerance}, the one comparison
    across clocks.

What is not a successor or a predecessor is concurrent.  Two ACTIVE
bindings are never compared by lineage: the rules below keep the longer
binding of a client, and another client's only by role.  A Release
that is not a successor meets the concurrent rules below: against the
same client's binding, within the tolerance, the binding stands.

Concurrent changes
==================
Anything else was changed on both sides (a partition, a race across a
failover) and goes by the conflict rules (DESIGN.md "Conflict resolution",
with the draft's Figure 3 where DESIGN.md is silent).  "Time" of a record
is its client last transaction time (CLT) when it has one, else its start
time of state; for a record in a state other than ACTIVE, EXPIRED or
RELEASED compared with another non-ACTIVE one, the later of the two
(section 7.5.4; taken the same way on both sides, L{_order}).  Times
within C{tolerance} (5 s, the skew bound of section 7.1) are the same
time: only here does the skew matter.  "Later wins": accept if the
incoming time is later, reject (OutdatedBindingInformation) if the local
one is; at the same time the later start time of state wins; then both
servers pick the same record (L{_tieBreak}): an ACTIVE binding over any
other state (a client may hold it), else the primary's record.  Between a
client's ACTIVE binding and the same client's record in another state,
the start times of state are not compared: the ACTIVE binding's is its
first grant, kept by every renewal, and says nothing of its last client
transaction; at the same time the ACTIVE binding stands.

=============  ==========================  =========================================
local          incoming                    result
=============  ==========================  =========================================
none           anything                    accept
any            -- not configured here      reject ConfigurationConflict
any            ACTIVE without client       reject MissingBindingInformation
other type     anything                    reject ConfigurationConflict
any            the same record             accept (a resend)
ACTIVE         ACTIVE, same client         later wins; same times: the later
                                           expiry, then the primary's record
ACTIVE         ACTIVE, other client        the same winner on both sides
                                           (L{rivalWinner}): the secondary's if its
                                           CLT is later than the primary's by more
                                           than the tolerance, else the primary's;
                                           primary: accept the secondary's if it
                                           wins, else AddressInUse; secondary:
                                           accept the primary's if it wins, else
                                           AddressInUse
any            successor (see above)       accept
any            predecessor (see above)     answer success, keep ours (superseded)
ACTIVE         EXPIRED, FREE, FREE-BACKUP, keep local until its expiry (reject
               PENDING-FREE                Outdated), then accept
ACTIVE         RELEASED, RESET, ABANDONED  same client: later wins, the same time
                                           keeps the ACTIVE binding; another
                                           client: keep local until its expiry,
                                           then accept
EXPIRED, FREE, ACTIVE that has expired,    reject Outdated (the mirror of the two
...            where the partner would     rows above: the partner takes ours)
               keep it until its expiry
FREE-BACKUP,   ACTIVE (on the primary)     accept, whatever the times (the
pending                                    secondary was entitled to lease it);
takeback                                   expired: reject Outdated, as below
RESET          ACTIVE, other client        accept if the incoming CLT is later than
                                           the local start time of state
any other      anything                    later wins
=============  ==========================  =========================================

ACTIVE against another client's ACTIVE binding (possible after an operator
declared a live partner down): DESIGN.md says "the secondary accepts the
primary's, the primary accepts only a later client time, else answers
AddressInUse".  Taken as two rules, one per receiver, that row swapped the
records whenever the secondary's was clearly later: the primary took the
secondary's, the secondary the primary's, and each ended with the other's
client.  Its intent is kept (the primary's record wins ties, a clearly
later client time wins) as one choice both sides make alike from the same
two records, L{rivalWinner}: the server holding the winning record answers
the other's AddressInUse and sends its own, which the other accepts.

The primary's FREE-BACKUP or pending-takeback record (FREE, its last state
acked by the secondary FREE-BACKUP: L{dhcp6ha.failover.balance}) against
the secondary's ACTIVE binding: the prefix was the secondary's to lease, so
its binding is accepted whatever the times.  By later-wins alone, a binding
made within the tolerance of the handover, reaching the primary after the
takeback, ties with the takeback's client time (the handover's) and loses
on the takeback's later start time of state: safe, but the two databases
disagreed for a lease lifetime (the secondary keeps its binding against the
FREE until it expires, row "ACTIVE / FREE" above).  An expired binding is
still rejected (the mirror row below): the secondary then takes the FREE.

Two rows are stricter than the draft's Figure 3, which accepts RELEASED,
RESET and ABANDONED over a local ACTIVE binding on time alone: a record of
another client must not erase the binding a client holds here (unless it
is the partner's successor of that very binding, e.g. a declined address
freed after its quarantine).

Convergence
===========
A rejection with OutdatedBindingInformation (or AddressInUse) means the
partner holds older information: L{Resolution.sendLocal} says the local
record should be queued for the partner (section 7.5.4: set the "update
partner" flag; the queue sends it at its own pace, never in a tight loop).
Section 7.5.4: "the server with the most recent binding information should
have its update accepted by its partner".  The rules are built for it:
each comparison gives the opposite answer when the partner makes it the
other way round (same times on both sides, L{_tieBreak}, successor against
predecessor), so whatever one server rejects in favour of its own record,
the other accepts when that record comes, and its own rejected update is
then replaced (no longer pending).  The disagreements that last are the
draft's time(1) and time(2) rows (a local ACTIVE binding kept until it
expires, against a later-wins rule on the other side): they end at that
expiry.  The row of another client's ACTIVE binding is decided by role,
not by receiver (L{rivalWinner}), so it too has one winner on both sides;
the row of the primary's FREE-BACKUP or pending takeback against the
secondary's ACTIVE binding is the time(1) row seen from the other side
(the secondary keeps its binding, the primary takes it).
"""

from __future__ import annotations

import enum

from attrs import evolve, frozen

from dhcp6ha.failover.machine import Role
from dhcp6ha.leases.lease import BindingState, Lease

__all__ = ["FailoverStatus", "Resolution", "Verdict", "acknowledged", "resolve", "rivalWinner"]

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
    SUPERSEDED = "superseded"  # answered with success, not stored: ours follows it


@frozen
class Resolution:
    """
    What to do with one received binding.

    @ivar verdict: accept, reject, keep the local binding until it expires,
        or superseded (ours was derived from it).
    @ivar rule: the table row that decided, for logs and tests.
    @ivar status: the status code to answer with (C{None} when answered
        with success: accepted or superseded).
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
        """Is the incoming binding accepted (to be stored)?"""
        return self.verdict is Verdict.ACCEPT

    @property
    def answeredSuccess(self) -> bool:
        """Is the answer success (accepted, or superseded by ours)?"""
        return self.status is None


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


def _time(lease: Lease) -> float:
    """The time of a record (section 7.5.4, the time of an update)."""
    if lease.state in _CLT_STATES and lease.cltt > 0:
        return lease.cltt
    if lease.state in _CLT_STATES:
        return lease.start_time_of_state
    return max(lease.cltt, lease.start_time_of_state)


def _clientTime(lease: Lease) -> float:
    """The time of a local record against an incoming ACTIVE binding (section 7.5.4)."""
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


def _follows(base: Lease, derived: Lease, tolerance: float) -> bool:
    """
    Can C{derived}, a change of C{base} made by the server that knew
    C{base}'s state, have been made after C{base}'s last client
    transaction (the guard of the lineage rules, see the module
    docstring)?

    The end of an ACTIVE binding follows it only if it ended that very
    transaction or a later one (L{_endedClientTime} not earlier than the
    binding's CLT, compared as they are, without tolerance): the same
    client's transactions are ordered, and an ACTIVE binding the client
    may hold is never taken back by a change made from an older one.
    Anything else follows unless its CLT is earlier by more than
    C{tolerance}.  One function of the two records, whichever server
    asks: the successor rule calls it as C{_follows(ours, theirs)}, the
    predecessor rule as C{_follows(theirs, ours)}.
    """
    if base.state is BindingState.ACTIVE and derived.state is not BindingState.ACTIVE:
        return _endedClientTime(derived) >= base.cltt - _COPY_EPSILON
    return derived.cltt >= base.cltt - tolerance


#: Rounding of C{expires - valid_lifetime} against the CLT it was made from.
_COPY_EPSILON = 0.001


def _endedClientTime(ended: Lease) -> float:
    """
    The CLT of the ACTIVE binding that C{ended} (the end of a binding)
    ended, as the server that ended it held that binding, where the record
    keeps it; else C{ended}'s own CLT.

    A Release keeps the binding's expiry and valid lifetime (the engine
    changes only the state, the start time of state and the CLT), and a
    binding's expiry is its CLT plus its valid lifetime: their difference is
    the CLT of the binding released, a value copied between the servers,
    not a time measured on either clock.  So a Release made from an older
    transaction than ours is not taken for our successor because the
    releasing server's clock runs ahead (chaos finding 7: a Release on the
    primary, clock 2 s ahead, then the same client's Request answered by
    the secondary 1.9 s later during a partition; the RELEASED record's CLT
    came out later than the grant's).  An expiry keeps the binding's CLT
    itself.  A Decline overwrites the expiry (the quarantine): its own CLT.
    """
    if ended.state is BindingState.RELEASED and ended.valid_lifetime > 0:
        return ended.expires - ended.valid_lifetime
    return ended.cltt


def _lineage(local: Lease, incoming: Lease, tolerance: float) -> int:
    """
    1 if the incoming record is the partner's successor of ours, -1 if ours
    was derived from it (its predecessor), 0 if neither (see the module
    docstring).

    The tests mirror each other: when the partner derived C{theirs} from
    C{ours} (so C{theirs} carries C{ours}' state and start time of state as
    acknowledged, and C{ours} is acknowledged), C{_lineage(ours, theirs)
    == 1} exactly when C{_lineage(theirs, ours) == -1} on the partner.
    """
    if (incoming.state, incoming.start_time_of_state) == (
        local.state,
        local.start_time_of_state,
    ):
        return 0  # the same state: a renewal, or concurrent grants
    if local.stateAcked:
        # The partner knew our state, and changed it since.
        return 1 if _follows(local, incoming, tolerance) else 0
    if (
        local.partner_state_acked is incoming.state
        and local.partner_stos_acked == incoming.start_time_of_state
    ):
        # We knew theirs, and changed it since.
        return -1 if _follows(incoming, local, tolerance) else 0
    return 0


def _order(local: Lease, incoming: Lease, tolerance: float) -> int:
    """
    1 if the incoming record is later, -1 if the local one is, 0 if neither.

    Both records' times are taken the same way, so that the partner,
    comparing the same two records the other way round, finds the
    opposite: L{_time}, except against an ACTIVE binding, where the other
    record's time is its CLT as section 7.5.4 takes a local record's (the
    freeing of an older binding does not outweigh a later grant because the
    freeing came later still; in the mirror case a local ACTIVE binding is
    kept until it expires anyway).  At the same time, the later start
    time of state, except between the same client's ACTIVE binding and
    another state of it (0: L{_tieBreak} keeps the binding).
    """
    active = BindingState.ACTIVE
    timeOf = _clientTime if active in (local.state, incoming.state) else _time
    order = _compare(timeOf(incoming), timeOf(local), tolerance)
    if (
        order == 0
        and (local.state is active) is not (incoming.state is active)
        and local.heldBy(incoming.duid, incoming.iaid)
    ):
        # The same client's ACTIVE binding and another state of it: the
        # binding's start time of state is its first grant, not its last
        # transaction; at the same time the binding stands (L{_tieBreak}).
        return 0
    if order == 0:
        order = _compare(incoming.start_time_of_state, local.start_time_of_state, tolerance)
    return order


def _tieBreak(local: Lease, incoming: Lease, role: Role) -> tuple[int, str]:
    """
    Concurrent records with the same times: 1 to accept the incoming one,
    -1 to keep ours, and why.  Both servers pick the same record (the
    reverse call on the partner gives the opposite sign, so the server
    whose update is rejected accepts the other's when it comes): an ACTIVE
    binding over any other state (its client may hold it), else the
    primary's record.
    """
    active = BindingState.ACTIVE
    if (incoming.state is active) is not (local.state is active):
        return (1 if incoming.state is active else -1), "active"
    return (-1 if role is Role.PRIMARY else 1), "primary's"


def _laterWins(
    local: Lease, incoming: Lease, role: Role, tolerance: float, rule: str
) -> Resolution:
    """Later time wins; then later start time of state; then L{_tieBreak}."""
    order = _order(local, incoming, tolerance)
    if order > 0:
        return _accept(rule + ": later", local, incoming)
    if order < 0:
        return _reject(rule + ": older", FailoverStatus.OUTDATED_BINDING_INFORMATION)
    order, why = _tieBreak(local, incoming, role)
    rule += ": same time, " + why
    if order > 0:
        return _accept(rule, local, incoming)
    return _reject(rule, FailoverStatus.OUTDATED_BINDING_INFORMATION)


def _secondarys(local: Lease) -> bool:
    """
    Is the primary's record C{local} one of a prefix the secondary may
    lease: FREE-BACKUP, or a pending takeback (FREE, the FREE-BACKUP state
    the last the secondary acked: L{dhcp6ha.failover.balance.isTakeback})?
    """
    return local.state is BindingState.FREE_BACKUP or (
        local.state is BindingState.FREE and local.partner_state_acked is BindingState.FREE_BACKUP
    )


def _keptAgainst(active: Lease, other: Lease) -> bool:
    """
    Does the ACTIVE binding C{active}, held locally, stand against C{other}
    until it expires (draft Figure 3 time(1), and the stricter rows)?
    """
    return other.state in _FREEING or not active.heldBy(other.duid, other.iaid)


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


def rivalWinner(primary: Lease, secondary: Lease, tolerance: float = DEFAULT_TOLERANCE) -> Role:
    """
    Two ACTIVE bindings of one address or prefix for different clients,
    the primary's record and the secondary's: whose stands (DESIGN.md,
    "an ACTIVE binding for a different client")?  The secondary's only if
    its client time is later than the primary's by more than
    C{tolerance}; else (the same time, or earlier) the primary's.

    A function of the two records alone, by role and not by who is asking:
    each server, given its own record and the partner's, names the same
    winner, accepts the partner's record if it is that one and otherwise
    answers AddressInUse and sends its own, which the partner then accepts.
    (A rule per receiver, "the secondary takes the primary's, the primary
    takes a clearly later one", had both accept the other's when the
    secondary's was the later: they ended swapped, each with the other's
    client.)  The times are compared as the records carry them (a binding
    update converts no time), the same numbers on both sides, so the two
    never disagree, even at the edge of the tolerance.
    """
    if _compare(_clientTime(secondary), _clientTime(primary), tolerance) > 0:
        return Role.SECONDARY
    return Role.PRIMARY


def _activeActive(local: Lease, incoming: Lease, role: Role, tolerance: float) -> Resolution:
    """Two ACTIVE bindings (DESIGN.md; draft Figure 3 accept(3))."""
    if local.heldBy(incoming.duid, incoming.iaid):
        rule = "active/active same client"
        order = _order(local, incoming, tolerance)
        if order == 0 and incoming.expires != local.expires:
            # Two grants to one client at the same time: the longer one
            # stands, the client may hold it.
            order = 1 if incoming.expires > local.expires else -1
        if order == 0:
            order, _ = _tieBreak(local, incoming, role)
        if order > 0:
            return _accept(rule + ": later", local, incoming)
        return _reject(rule + ": older", FailoverStatus.OUTDATED_BINDING_INFORMATION)
    if role is Role.PRIMARY:
        winner = rivalWinner(local, incoming, tolerance)
    else:
        winner = rivalWinner(incoming, local, tolerance)
    rule = "active/active other client: " + (
        "primary's" if winner is Role.PRIMARY else "secondary's later client time"
    )
    if winner is role:
        return _reject(rule, FailoverStatus.ADDRESS_IN_USE)
    return _accept(rule, local, incoming)


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
    pair = local.state.value + "/" + incoming.state.value
    if _sameRecord(local, incoming):
        return _accept(pair + ": same record", local, incoming)
    if local.state is BindingState.ACTIVE and incoming.state is BindingState.ACTIVE:
        return _activeActive(local, incoming, role, tolerance)

    lineage = _lineage(local, incoming, tolerance)
    if lineage > 0:
        return _accept(pair + ": successor", local, incoming)
    if lineage < 0:
        return Resolution(Verdict.SUPERSEDED, pair + ": superseded", sendLocal=True)

    same = local.heldBy(incoming.duid, incoming.iaid)
    if local.state is BindingState.ACTIVE:
        if _keptAgainst(local, incoming):
            return _keepUntilExpiry(local, incoming, now, pair + ("" if same else " other"))
        return _laterWins(local, incoming, role, tolerance, pair)
    if incoming.state is BindingState.ACTIVE and _keptAgainst(incoming, local):
        if now >= incoming.expires:
            # The mirror of time(1): the partner, holding it, takes ours now.
            return _reject(pair + ": incoming expired", FailoverStatus.OUTDATED_BINDING_INFORMATION)
        if role is Role.PRIMARY and _secondarys(local):
            # Whatever the times: the secondary was entitled to lease it.
            return _accept(pair + ": the secondary's to lease", local, incoming)

    if local.state is BindingState.RESET and incoming.state is BindingState.ACTIVE and not same:
        # Figure 3 time(2): the client's time against the reset's.  (The
        # same client's: later wins, as in the mirror row above.)
        if _compare(incoming.cltt, local.start_time_of_state, tolerance) > 0:
            return _accept("reset/active: later client time", local, incoming)
        return _reject("reset/active: older", FailoverStatus.OUTDATED_BINDING_INFORMATION)

    return _laterWins(local, incoming, role, tolerance, pair)


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
