# -*- test-case-name: tests.test_machine -*-
"""
The failover endpoint state machine (RFC 8156 section 8), sans-IO.

One L{FailoverEndpoint} per failover relationship.  It never touches a
socket: the AMP protocol (or a test) feeds it the RFC events as method calls
(the L{FailoverInputs} protocol), and it acts through two seams only:

  - L{ILeaseStore.setMetadata}, to make its state durable (one JSON
    L{FailoverRecord} under the key L{FailoverEndpoint.metadataKey});
  - the L{IFailoverPeer} of the current connection, given to it by
    L{FailoverEndpoint.connected}, to send STATE, UPDREQ, UPDREQALL, POOLREQ,
    CONTACT and to flush unacked binding updates.

Time comes only from the injected C{clock} (L{IReactorTime}); the startup,
RECOVER-WAIT, auto-partner-down, keepalive, contact and operation-record
timers are C{clock.callLater} calls.

Durable before announced
========================
Every transition queues its effects, in order, on one serial effect queue:
first the write of the new L{FailoverRecord} (a Deferred from the store),
then the STATE message, then the state's entry actions (unacked updates,
POOLREQ, UPDREQ...).  The queue runs one effect at a time and waits for a
write's Deferred before it runs the next effect, so nothing is ever sent
about a state before that state is on stable storage (RFC 8156 section 6.3,
DESIGN.md "the endpoint state is durable before it is announced").  Sends
are not waited for (their order on the connection is kept by the
transport); a send queued for a connection that has since been lost is
dropped.  A write that fails (a full or failing disk) stops the queue: it
is tried again after C{writeRetryDelay}, doubling up to
C{maxWriteRetryDelay}, and whatever was queued behind it (STATE, entry
actions, later transitions) runs once it has succeeded, so a server whose
disk comes back announces its state without waiting for another
transition.  Once stopping (PAUSED, SHUTDOWN) a failed write is not tried
again: every send queued after it is dropped, so that a dead disk cannot
hold up the shutdown.  L{FailoverEndpoint.whenIdle} fires once the queue
is empty.

Only the effects wait: the state itself changes at once, when the input
arrives.  A partner's STATE (or UPDDONE) that arrives while our own write is
still in flight is therefore judged against the state we are entering, and
its reaction's effects queue behind that write; no input waits for a write,
so none is lost to one (tests: C{PairTests}, the partner's STATEs arriving
back to back).

Update requests: every state that asks (RECOVER, POTENTIAL-CONFLICT, a
serving server catching up) asks once, on each connection, for each time it
is entered.  UPDDONE names no request and the partner may answer two in
either order: only the UPDDONE that answers the last request outstanding
takes the L{UPDATE_DONE} transition (and marks the database complete if an
UPDREQALL was among them).

Why explicit tables and not Automat
===================================
Almost every transition of section 8 depends on the partner's state as
received in a STATE message ("if the partner is in NORMAL or
COMMUNICATIONS-INTERRUPTED, go to NORMAL; if in RECOVER, stay..."), on the
role, or on times.  In Automat each of these would become either a synthetic
input per partner state or a conditional behaviour hidden in code; the dicts
below (L{PARTNER_STATE_REACTIONS}, L{COMMUNICATIONS_LOST},
L{UPDATE_DONE}...) are the RFC text as data, in RFC section order, one line
per sentence, and the tests walk them.

Choices stricter than, or not spelled out by, RFC 8156 (DESIGN.md wins):

  - No stored state: STARTUP with PREVIOUS-STATE RECOVER (section 8.3.2
    step 1, for both roles, instead of section 8.2's PARTNER-DOWN for the
    primary).  In RECOVER the server asks UPDREQALL when its database is not
    known to be complete (L{FailoverRecord.synced} false: first start, lost
    disk, or a recovery that never finished), UPDREQ otherwise; when neither
    side has any state (the partner says C{hasState=False} and neither do
    we) both go to NORMAL at once (the pair's first start).
  - A server that is not C{synced} but reaches a serving state anyway (the
    operator's partner-down on a fresh server) asks UPDREQALL, once per
    connection, whenever the partner has state; UPDDONE then marks it synced.
  - PARTNER-DOWN is entered only by L{FailoverEndpoint.operatorPartnerDown}
    or the auto-partner-down timer (off by default).  A partner announcing
    PAUSED or SHUTDOWN is treated as communications lost, never as
    partner-down.  The operator may declare partner-down from NORMAL,
    COMMUNICATIONS-INTERRUPTED and RESOLUTION-INTERRUPTED (sections 8.8.2,
    8.9.2, 8.11.2) and also from STARTUP, RECOVER, RECOVER-WAIT and
    RECOVER-DONE (DESIGN.md: the way out for a server whose partner is gone
    for good); it is refused in POTENTIAL-CONFLICT and CONFLICT-DONE.
  - A STATE with the STARTUP flag never triggers a transition in any state
    (section 8.4.2 says so for PARTNER-DOWN); only a server that is itself in
    STARTUP takes it as "communications OK".  The partner sends a STATE
    without the flag as soon as it leaves STARTUP.
  - "The last recorded time of operation" (section 8.3.2 step 5) is
    recorded every C{recordInterval} seconds while the server serves
    clients and at every transition into or out of a serving state; it is
    compared as C{last + recordInterval + maxSkew} (an upper bound), so a
    doubt goes to POTENTIAL-CONFLICT.  The interval is stored with the time
    (C{record_interval}): a restart with another interval keeps the bound
    of the time stored before it.
  - RECOVER-WAIT waits until MCLT after the last recorded time of operation
    (or after this process started, when that time is unknown), section
    8.6.2; the deadline is stored, so a restart resumes the same wait.
  - A NORMAL server seeing its partner in a state it cannot be in (section
    8.8.2) goes directly to where COMMUNICATIONS-INTERRUPTED would take it,
    without stopping in COMMUNICATIONS-INTERRUPTED.
  - STARTUP is never stored: the stored record keeps the state to resume.
    PAUSED and SHUTDOWN are stored with the state they interrupted as
    C{previous_state}, which a restart resumes.
  - The partner's state is stored with our own at every transition, not at
    every STATE received.
  - Partial communication loss (RFC 7031 section 4.7, which RFC 8156 does
    not address): in NORMAL, a server whose partner, still connected,
    reports in its CONTACTs a client message count that stays flat while
    client messages for the partner keep reaching this server, serves the
    partner's clients (L{PartnerTraffic}, L{FailoverEndpoint.servingForPartner},
    L{Service.RESPONSIVE_FOR_PARTNER}) until the partner's count grows.  It
    is not a state: nothing is stored or sent, and it ends with NORMAL or
    with the connection.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from dhcp6ha.interfaces import IFailoverPeer, ILeaseStore

__all__ = [
    "COMMUNICATIONS_LOST",
    "OPERATOR_PARTNER_DOWN",
    "PARTNER_STATE_REACTIONS",
    "SERVING",
    "UPDATE_DONE",
    "EndpointState",
    "EndpointStatus",
    "FailoverEndpoint",
    "FailoverInputs",
    "FailoverRecord",
    "PartnerTraffic",
    "Role",
    "Service",
    "StateMessage",
]


class Role(enum.Enum):
    """This server's role in the relationship (RFC 7031 req. 1)."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


class EndpointState(enum.Enum):
    """
    Failover endpoint states: the RFC 8156 set (section 5.5.19's server-state
    values and section 8), plus L{INIT} before L{FailoverEndpoint.start}.

    The values are the RFC names in lower case; the AMP protocol sends them
    as they are.
    """

    INIT = "init"  # not an RFC state: created, not started
    STARTUP = "startup"
    NORMAL = "normal"
    COMMUNICATIONS_INTERRUPTED = "communications-interrupted"
    PARTNER_DOWN = "partner-down"
    POTENTIAL_CONFLICT = "potential-conflict"
    RECOVER = "recover"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    RECOVER_DONE = "recover-done"
    RESOLUTION_INTERRUPTED = "resolution-interrupted"
    CONFLICT_DONE = "conflict-done"
    RECOVER_WAIT = "recover-wait"


class Service(enum.Enum):
    """What a state lets this server answer (RFC 8156 section 3, 8.1)."""

    RESPONSIVE = "responsive"  # every client message
    RENEW_RESPONSIVE = "renew-responsive"  # only messages naming our Server Identifier
    UNRESPONSIVE = "unresponsive"
    #: NORMAL, serving the partner's clients too: the partner is connected
    #: but does not reach its clients (RFC 7031 section 4.7,
    #: L{PartnerTraffic}).
    RESPONSIVE_FOR_PARTNER = "responsive-for-partner"


S = EndpointState

# --- the tables -----------------------------------------------------------------

#: States in which the server answers clients (RFC 8156 Figure 5
#: "responsive" and "r-responsive").  Being in one counts as operation
#: (section 8.3.2 step 5) and as having state worth recovering.
SERVING: frozenset[EndpointState] = frozenset(
    {
        S.NORMAL,
        S.COMMUNICATIONS_INTERRUPTED,
        S.PARTNER_DOWN,
        S.RECOVER_DONE,
        S.RESOLUTION_INTERRUPTED,
        S.CONFLICT_DONE,
    }
)

#: "Communications failed" transitions; every state not listed stays where
#: it is.  Also section 8.3.2 step 2, applied to the stored state at startup.
COMMUNICATIONS_LOST: Mapping[EndpointState, EndpointState] = {
    # 8.4.2 PARTNER-DOWN, 8.5.2 RECOVER ("will stay in RECOVER state"),
    # 8.6.2 RECOVER-WAIT ("no effect"), 8.7.2 RECOVER-DONE ("will stay"): stay.
    S.NORMAL: S.COMMUNICATIONS_INTERRUPTED,  # 8.8.2
    # 8.9 COMMUNICATIONS-INTERRUPTED: stay.
    S.POTENTIAL_CONFLICT: S.RESOLUTION_INTERRUPTED,  # 8.10.2
    # 8.11 RESOLUTION-INTERRUPTED: stay.  8.12.2 CONFLICT-DONE: "remain".
}

#: "Communications OK" transitions on the partner's state, as received in a
#: STATE without the STARTUP flag: C{PARTNER_STATE_REACTIONS[ours][theirs]}.
#: A pair not listed means: stay.  (RECOVER's UPDREQ, the pair's first start,
#: and the secondary's UPDREQ in POTENTIAL-CONFLICT are actions, in
#: L{FailoverEndpoint._react}.)
PARTNER_STATE_REACTIONS: Mapping[EndpointState, Mapping[EndpointState, EndpointState]] = {
    # 8.4.2 Transition out of PARTNER-DOWN
    S.PARTNER_DOWN: {
        S.NORMAL: S.POTENTIAL_CONFLICT,
        S.COMMUNICATIONS_INTERRUPTED: S.POTENTIAL_CONFLICT,
        S.PARTNER_DOWN: S.POTENTIAL_CONFLICT,
        S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
        S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
        S.CONFLICT_DONE: S.POTENTIAL_CONFLICT,
        # RECOVER, RECOVER-WAIT: stay in PARTNER-DOWN
        S.RECOVER_DONE: S.NORMAL,
    },
    # 8.5.2 Transition out of RECOVER (any other partner state: UPDREQ or
    # UPDREQALL, then UPDDONE -> RECOVER-WAIT; see UPDATE_DONE)
    S.RECOVER: {
        S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
        S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
        S.CONFLICT_DONE: S.POTENTIAL_CONFLICT,
    },
    # 8.6.2 RECOVER-WAIT: only its timer moves it.
    S.RECOVER_WAIT: {},
    # 8.7.2 Transition out of RECOVER-DONE (others: wait)
    S.RECOVER_DONE: {
        S.NORMAL: S.NORMAL,
        S.RECOVER_DONE: S.NORMAL,
        S.RECOVER: S.COMMUNICATIONS_INTERRUPTED,
        S.RECOVER_WAIT: S.COMMUNICATIONS_INTERRUPTED,
        S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
    },
    # 8.8.2 NORMAL: a partner state NORMAL cannot expect means "go to
    # COMMUNICATIONS-INTERRUPTED and take the transition from there" (8.9.2),
    # written here as the end result.  NORMAL, COMMUNICATIONS-INTERRUPTED,
    # RECOVER-DONE and CONFLICT-DONE are expected: stay.
    S.NORMAL: {
        S.PARTNER_DOWN: S.POTENTIAL_CONFLICT,
        S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
        S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
        S.RECOVER: S.COMMUNICATIONS_INTERRUPTED,
        S.RECOVER_WAIT: S.COMMUNICATIONS_INTERRUPTED,
    },
    # 8.9.2 Transition out of COMMUNICATIONS-INTERRUPTED (RECOVER: stay; also
    # RECOVER-WAIT, which the RFC does not list: the partner is recovering)
    S.COMMUNICATIONS_INTERRUPTED: {
        S.NORMAL: S.NORMAL,
        S.COMMUNICATIONS_INTERRUPTED: S.NORMAL,
        S.RECOVER_DONE: S.NORMAL,
        S.PARTNER_DOWN: S.POTENTIAL_CONFLICT,
        S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
        S.CONFLICT_DONE: S.POTENTIAL_CONFLICT,
        S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
    },
    # 8.10.2 POTENTIAL-CONFLICT: left on UPDDONE only (UPDATE_DONE).
    S.POTENTIAL_CONFLICT: {},
    # 8.11.2 RESOLUTION-INTERRUPTED: communications restored -> POTENTIAL-CONFLICT
    S.RESOLUTION_INTERRUPTED: {
        theirs: S.POTENTIAL_CONFLICT
        for theirs in (
            S.NORMAL,
            S.COMMUNICATIONS_INTERRUPTED,
            S.PARTNER_DOWN,
            S.POTENTIAL_CONFLICT,
            S.RECOVER,
            S.RECOVER_WAIT,
            S.RECOVER_DONE,
            S.RESOLUTION_INTERRUPTED,
            S.CONFLICT_DONE,
        )
    },
    # 8.12.2 Transition out of CONFLICT-DONE
    S.CONFLICT_DONE: {
        S.NORMAL: S.NORMAL,
    },
}

#: UPDDONE received (in answer to our own UPDREQ/UPDREQALL), by role.
UPDATE_DONE: Mapping[tuple[EndpointState, Role], EndpointState] = {
    (S.RECOVER, Role.PRIMARY): S.RECOVER_WAIT,  # 8.5.2
    (S.RECOVER, Role.SECONDARY): S.RECOVER_WAIT,  # 8.5.2
    (S.POTENTIAL_CONFLICT, Role.PRIMARY): S.CONFLICT_DONE,  # 8.10.2
    (S.POTENTIAL_CONFLICT, Role.SECONDARY): S.NORMAL,  # 8.10.2
}

#: States the operator's partner-down command is obeyed in.
OPERATOR_PARTNER_DOWN: frozenset[EndpointState] = frozenset(
    {
        S.NORMAL,  # 8.8.2
        S.COMMUNICATIONS_INTERRUPTED,  # 8.9.2
        S.RESOLUTION_INTERRUPTED,  # 8.11.2
        # DESIGN.md: a server whose partner is gone for good.
        S.STARTUP,
        S.RECOVER,
        S.RECOVER_WAIT,
        S.RECOVER_DONE,
    }
)

#: Timers that belong to one state and end with it.
_STATE_TIMERS = ("startup", "recover-wait", "auto-partner-down")
#: Timers that belong to one connection.
_CONNECTION_TIMERS = ("keepalive", "contact")

_RECORD_VERSION = 1

#: The recording interval of the time of operation before it was
#: configurable: what a stored record without C{record_interval} was
#: written with.
_RECORD_INTERVAL_BEFORE = 60.0


# --- values ---------------------------------------------------------------------


@frozen
class StateMessage:
    """
    What a STATE message carries (RFC 8156 section 6.3).

    @ivar state: the sender's state; while the sender is in STARTUP, the
        state it will resume (section 8.3.1), with C{startup} set.
    @ivar start_time: when the sender entered C{state}.
    @ivar startup: the STARTUP flag (section 5.5.18).
    @ivar has_state: the sender has failover state worth recovering: it has
        served clients or holds a complete copy of the bindings.  Two
        servers that both say no go straight to NORMAL (DESIGN.md).
    @ivar partner_down_time: when the sender entered PARTNER-DOWN, present
        only in that state (section 5.5.12).
    """

    state: EndpointState
    start_time: float
    startup: bool = False
    has_state: bool = True
    partner_down_time: float | None = None


@frozen
class FailoverRecord:
    """
    The durable state of one endpoint (RFC 8156 section 8.2), stored as JSON
    in the lease store's metadata.

    @ivar state: the current state (never STARTUP or INIT).
    @ivar start_time: when it was entered.
    @ivar previous_state: the state before it; for PAUSED and SHUTDOWN, the
        state to resume on restart.
    @ivar previous_start_time: when C{previous_state} was entered.
    @ivar partner_state: the partner's last known state.
    @ivar partner_start_time: when the partner entered it.
    @ivar last_operation: the last recorded time this server served clients
        (C{None}: never).
    @ivar record_interval: the recording interval in force when
        C{last_operation} was recorded: how much later this server may have
        served.  C{None}: not stored (a record from before it was), taken
        as the larger of the configured interval and the 60 s that was then
        the only one.
    @ivar has_state: see L{StateMessage.has_state}.
    @ivar synced: this server's binding database is complete: it has never
        been without one since it joined the relationship, or it has
        received everything the partner had (UPDREQALL answered).
    @ivar recover_wait_until: in RECOVER-WAIT, when the wait ends.
    """

    state: EndpointState
    start_time: float
    previous_state: EndpointState | None = None
    previous_start_time: float | None = None
    partner_state: EndpointState | None = None
    partner_start_time: float | None = None
    last_operation: float | None = None
    has_state: bool = False
    synced: bool = False
    recover_wait_until: float | None = None
    record_interval: float | None = None

    def toJSON(self) -> str:
        """This record as a JSON object (sorted keys)."""

        def name(state: EndpointState | None) -> str | None:
            return None if state is None else state.value

        return json.dumps(
            {
                "version": _RECORD_VERSION,
                "state": self.state.value,
                "start_time": self.start_time,
                "previous_state": name(self.previous_state),
                "previous_start_time": self.previous_start_time,
                "partner_state": name(self.partner_state),
                "partner_start_time": self.partner_start_time,
                "last_operation": self.last_operation,
                "has_state": self.has_state,
                "synced": self.synced,
                "recover_wait_until": self.recover_wait_until,
                "record_interval": self.record_interval,
            },
            sort_keys=True,
        )

    @classmethod
    def fromJSON(cls, text: str) -> FailoverRecord:
        """
        Parse L{toJSON}'s output.

        @raise ValueError: for anything else (bad JSON, unknown state, wrong
            types, unknown version).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError("failover record is not JSON: " + str(e)) from e
        if not isinstance(data, dict) or data.get("version") != _RECORD_VERSION:
            raise ValueError("failover record: not a version 1 object")

        def state(key: str, optional: bool) -> EndpointState | None:
            value = data.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise ValueError("failover record: " + key + " is not a state name")
            try:
                return EndpointState(value)
            except ValueError:
                raise ValueError("failover record: unknown state " + repr(value)) from None

        def time(key: str, optional: bool) -> float | None:
            value = data.get(key)
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("failover record: " + key + " is not a time")
            return float(value)

        def flag(key: str) -> bool:
            value = data.get(key)
            if not isinstance(value, bool):
                raise ValueError("failover record: " + key + " is not a boolean")
            return value

        current = state("state", False)
        start = time("start_time", False)
        assert current is not None and start is not None
        return cls(
            state=current,
            start_time=start,
            previous_state=state("previous_state", True),
            previous_start_time=time("previous_start_time", True),
            partner_state=state("partner_state", True),
            partner_start_time=time("partner_start_time", True),
            last_operation=time("last_operation", True),
            has_state=flag("has_state"),
            synced=flag("synced"),
            recover_wait_until=time("recover_wait_until", True),
            record_interval=time("record_interval", True),
        )


@frozen
class EndpointStatus:
    """
    A snapshot of one endpoint, for the control channel and logs.

    @ivar relationship: the relationship name.
    @ivar role: primary or secondary.
    @ivar state: the current state.
    @ivar start_time: when it was entered.
    @ivar previous_state: the state before it.
    @ivar service: what clients get in this state.
    @ivar communicating: a partner connection is up.
    @ivar partner_state: the partner's last known state (C{None}: unknown).
    @ivar partner_start_time: when the partner entered it.
    @ivar partner_startup: the partner's last STATE had the STARTUP flag.
    @ivar partner_down_time: the partner's PARTNER-DOWN time, if it is in
        that state.
    @ivar has_state: see L{StateMessage.has_state}.
    @ivar synced: see L{FailoverRecord.synced}.
    @ivar mclt: the maximum client lead time, seconds.
    @ivar last_operation: last recorded time of operation.
    @ivar recover_wait_until: when RECOVER-WAIT ends, in that state.
    @ivar auto_partner_down_at: when the auto-partner-down timer fires, if
        it runs.
    @ivar serving_for_partner: in NORMAL, answering the partner's clients
        because the partner does not reach them (L{PartnerTraffic}).
    @ivar serving_for_partner_since: when that began.
    """

    relationship: str
    role: Role
    state: EndpointState
    start_time: float
    previous_state: EndpointState | None
    service: Service
    communicating: bool
    partner_state: EndpointState | None
    partner_start_time: float | None
    partner_startup: bool
    partner_down_time: float | None
    has_state: bool
    synced: bool
    mclt: float
    last_operation: float | None
    recover_wait_until: float | None
    auto_partner_down_at: float | None
    serving_for_partner: bool = False
    serving_for_partner_since: float | None = None


class PartnerTraffic:
    """
    Partial communication loss (RFC 7031 section 4.7): is the partner, still
    connected over the failover link, receiving its clients' messages?

    Sans-IO, times passed in.  Two inputs:

      - L{missed}: a client message reached this server that the partner
        should answer (the policy refused it: the secondary in NORMAL
        refusing a Solicit, Rebind, Confirm or Information-request, either
        server refusing a message naming the partner's Server Identifier);
      - L{reported}: the partner's CONTACT carried its count of client
        messages received (C{clients_seen}).

    Decision, taken at each report (so at the partner's CONTACT pace, with
    no timer of its own): when at least C{threshold} missed messages have
    reached us since the partner's count last grew, the first of them at
    least C{window} ago, and the partner's count still has not grown, the
    partner does not receive them: L{serving} becomes true.  It becomes
    false again at the first report whose count grew (the partner receives
    client messages again).  A client message the partner receives reaches
    its count, and the count reaches us within one CONTACT interval, so a
    C{window} of several intervals (the keepalive time) leaves no race.
    The first report of a connection is a baseline: what was missed before
    it is forgotten (it may already be counted).  A report lower than the
    previous one (the partner restarted its count) is a new baseline.

    What this cannot see: a partner that still receives some client
    messages (another link, a relay) has a growing count, so it is not
    taken over even if it lost the link of this relationship's clients;
    and a partner that receives but cannot send has a growing count too.
    C{threshold} keeps one lost datagram from switching the mode: an
    unanswered client retransmits (RFC 8415 section 15), so a client that
    really goes unanswered sends several.

    @ivar window: seconds the partner's count must stay flat after the
        first missed message.
    @ivar threshold: missed messages needed.
    @ivar count: the partner's last reported count (C{None}: none yet).
    @ivar missedCount: messages missed since the count last grew.
    @ivar firstMissed: when the first of them arrived.
    @ivar serving: serving the partner's clients now.
    @ivar since: when L{serving} became true.
    """

    def __init__(self, window: float, threshold: int = 3) -> None:
        if window <= 0 or threshold < 1:
            raise ValueError("the partner traffic window and threshold must be positive")
        self.window = window
        self.threshold = threshold
        self.count: int | None = None
        self.missedCount = 0
        self.firstMissed: float | None = None
        self.serving = False
        self.since: float | None = None

    def missed(self, now: float) -> None:
        """A client message the partner should answer reached us."""
        if self.count is None:
            return  # no baseline yet: nothing to compare with
        if self.missedCount == 0:
            self.firstMissed = now
        self.missedCount += 1

    def reported(self, count: int, now: float, eligible: bool = True) -> bool | None:
        """
        The partner reported C{count} client messages received.

        @param eligible: whether L{serving} may become true now (the
            endpoint is in NORMAL); it may always become false.
        @return: C{True} if L{serving} just became true, C{False} if it
            just became false, C{None} if it did not change.
        """
        previous = self.count
        self.count = count
        if previous is None or count < previous:
            self._forget()
            return None
        if count > previous:
            self._forget()
            if self.serving:
                self.serving = False
                self.since = None
                return False
            return None
        if (
            eligible
            and not self.serving
            and self.firstMissed is not None
            and self.missedCount >= self.threshold
            and now - self.firstMissed >= self.window
        ):
            self.serving = True
            self.since = now
            return True
        return None

    def reset(self) -> bool:
        """
        Forget everything (a new connection, or a state change).

        @return: whether L{serving} was true.
        """
        was = self.serving
        self.count = None
        self.serving = False
        self.since = None
        self._forget()
        return was

    def _forget(self) -> None:
        self.missedCount = 0
        self.firstMissed = None


class FailoverInputs(Protocol):
    """
    The RFC 8156 events an endpoint reacts to.  The AMP protocol calls the
    first ones; the clock calls the timer inputs (they are public so that
    the wiring is explicit, and tests drive them through C{Clock.advance}).
    """

    def start(self) -> None:
        """Read the stored state and enter STARTUP (section 8.3)."""

    def connected(self, peer: IFailoverPeer, partnerKeepalive: float | None = None) -> None:
        """A partner connection passed CONNECT/CONNECTREPLY (section 6.1)."""

    def stateReceived(
        self,
        state: EndpointState,
        startTimeOfState: float,
        *,
        startup: bool = False,
        hasState: bool = True,
        partnerDownTime: float | None = None,
    ) -> None:
        """The partner's STATE (section 6.4): communications are OK."""

    def messageReceived(self) -> None:
        """Any message from the partner arrived (keepalive, section 6.6)."""

    def updateDoneReceived(self) -> None:
        """UPDDONE (section 5.3.7) answering our UPDREQ or UPDREQALL."""

    def communicationsLost(self) -> None:
        """The connection is gone (closed, DISCONNECT, failed)."""

    def operatorPartnerDown(self) -> bool:
        """The operator says the partner is down (sections 8.8.2, 8.9.2, 8.11.2)."""

    def stop(self, shutdown: bool = False) -> Deferred[None]:
        """Enter PAUSED (or SHUTDOWN), store it, announce it."""

    def startupExpired(self) -> None:
        """Timer: the STARTUP period ended without a partner (8.3.2 step 6)."""

    def mcltExpired(self) -> None:
        """Timer: RECOVER-WAIT's MCLT wait is over (8.6.2)."""

    def autoPartnerDownExpired(self) -> None:
        """Timer: long enough in COMMUNICATIONS-INTERRUPTED (8.9.2)."""

    def keepaliveExpired(self) -> None:
        """Timer: nothing heard from the partner for the keepalive time (6.6)."""

    def contactDue(self) -> None:
        """Timer: time to send CONTACT (6.6)."""

    def clientsSeenReceived(self, count: int) -> None:
        """The partner's CONTACT says it has received C{count} client messages."""

    def clientMessageForPartner(self) -> None:
        """A client message the partner should answer reached us (the policy refused it)."""


class _Wait:
    """Whether a queued effect's Deferred has fired yet."""

    def __init__(self) -> None:
        self.synchronous = True
        self.done = False
        # It failed and waits for its retry: the queue stops here.
        self.stalled = False


class FailoverEndpoint:
    """
    One failover endpoint: the RFC 8156 section 8 state machine of one
    relationship.  Implements L{FailoverInputs}.

    @ivar relationship: the relationship name.
    @ivar role: primary or secondary.
    @ivar mclt: the maximum client lead time, seconds.
    """

    log = Logger()

    def __init__(
        self,
        relationship: str,
        role: Role,
        clock: IReactorTime,
        store: ILeaseStore,
        *,
        mclt: float = 3600.0,
        startupTime: float = 10.0,
        autoPartnerDown: float | None = None,
        keepaliveTime: float = 60.0,
        contactsPerKeepalive: int = 4,
        recordInterval: float = 60.0,
        maxSkew: float = 5.0,
        takeoverAfter: float | None = None,
        takeoverMessages: int = 3,
        writeRetryDelay: float = 1.0,
        maxWriteRetryDelay: float = 60.0,
    ) -> None:
        """
        @param relationship: the relationship name (also names the metadata key).
        @param role: this server's role.
        @param clock: the only source of time.
        @param store: where the state is made durable.
        @param mclt: maximum client lead time (RFC 8156 section 4.4).
        @param startupTime: how long STARTUP waits for the partner (8.3.2 step 3).
        @param autoPartnerDown: seconds in COMMUNICATIONS-INTERRUPTED before
            going to PARTNER-DOWN on our own; C{None} (the default) never.
        @param keepaliveTime: FO_KEEPALIVE_TIME: silence after which the
            connection is dead (section 6.5).
        @param contactsPerKeepalive: FO_CONTACT_PER_KEEPALIVE_TIME.
        @param recordInterval: how often the time of operation is stored
            while serving.
        @param maxSkew: the clock skew bound between the partners (7.1).
        @param takeoverAfter: how long the partner's client message count
            must stay flat while client messages for it reach us before we
            serve its clients (L{PartnerTraffic} C{window}); default: the
            keepalive time.
        @param takeoverMessages: how many such messages it takes
            (L{PartnerTraffic} C{threshold}).
        @param writeRetryDelay: how long after a failed write of the state
            it is tried again (doubling at each failure).
        @param maxWriteRetryDelay: the longest such delay.
        """
        if mclt <= 0 or startupTime < 0 or keepaliveTime <= 0 or recordInterval <= 0:
            raise ValueError("failover times must be positive")
        if autoPartnerDown is not None and autoPartnerDown < 0:
            raise ValueError("autoPartnerDown must not be negative")
        if writeRetryDelay <= 0 or maxWriteRetryDelay < writeRetryDelay:
            raise ValueError("write retry delays must be positive, the longest not shorter")
        self.relationship = relationship
        self.role = role
        self.mclt = float(mclt)
        self._clock = clock
        self._store = store
        self._startupTime = startupTime
        self._autoPartnerDown = autoPartnerDown
        self._keepaliveTime = keepaliveTime
        self._contactsPerKeepalive = max(1, contactsPerKeepalive)
        self._recordInterval = recordInterval
        # How much later than _lastOperation we may have served: the
        # interval in force when it was recorded.
        self._lastOperationInterval = recordInterval
        self._maxSkew = maxSkew

        self._state = S.INIT
        self._start = 0.0
        self._previous: EndpointState | None = None
        self._previousStart: float | None = None
        # STARTUP's PREVIOUS-STATE (8.3.2) and its stored start time (None: new)
        self._resume = S.RECOVER
        self._resumeStart: float | None = None
        self._startedAt = 0.0
        self._hasState = False
        self._synced = False
        self._lastOperation: float | None = None
        self._recoverWaitUntil: float | None = None

        self._partner: StateMessage | None = None
        self._peer: IFailoverPeer | None = None
        self._contactInterval = keepaliveTime / self._contactsPerKeepalive
        # The current state has sent its update request (on this connection).
        self._requested = False
        # Update requests sent on this connection and not answered by an
        # UPDDONE yet, and whether one of them is an UPDREQALL.  The partner
        # may answer them in any order (an UPDREQ's flush can end before a
        # running UPDREQALL), and UPDDONE does not say which one it answers:
        # only the last answer counts.
        self._outstanding = 0
        self._outstandingAll = False

        self._traffic = PartnerTraffic(
            keepaliveTime if takeoverAfter is None else takeoverAfter, takeoverMessages
        )

        self._timers: dict[str, IDelayedCall] = {}
        self._effects: deque[Callable[[], Deferred[None] | None]] = deque()
        self._running = False
        self._writeFailed = False
        self._writeRetryDelay = writeRetryDelay
        self._maxWriteRetryDelay = maxWriteRetryDelay
        self._nextWriteRetry = writeRetryDelay
        # The retry of a failed write (the effect queue waits for it).
        self._writeRetry: IDelayedCall | None = None
        self._idle: list[Deferred[None]] = []

    # --- what others read --------------------------------------------------------

    @property
    def metadataKey(self) -> str:
        """The L{ILeaseStore} metadata key holding this endpoint's record."""
        return "failover." + self.relationship + ".state"

    @property
    def state(self) -> EndpointState:
        """The current state."""
        return self._state

    @property
    def startTimeOfState(self) -> float:
        """When the current state was entered."""
        return self._start

    @property
    def partnerState(self) -> EndpointState | None:
        """The partner's last known state, C{None} if unknown."""
        return None if self._partner is None else self._partner.state

    @property
    def partnerStartTimeOfState(self) -> float | None:
        """When the partner entered its last known state."""
        return None if self._partner is None else self._partner.start_time

    @property
    def communicating(self) -> bool:
        """Is a partner connection up?"""
        return self._peer is not None

    @property
    def synced(self) -> bool:
        """See L{FailoverRecord.synced}."""
        return self._synced

    @property
    def servingForPartner(self) -> bool:
        """
        In NORMAL, answering the partner's clients as in
        COMMUNICATIONS-INTERRUPTED because the partner, connected, does not
        receive their messages (RFC 7031 section 4.7, L{PartnerTraffic}).
        """
        return self._traffic.serving and self._state is S.NORMAL and self._peer is not None

    @property
    def partnerTraffic(self) -> PartnerTraffic:
        """The partial communication loss detector (read it, do not feed it)."""
        return self._traffic

    @property
    def service(self) -> Service:
        """What this server may answer now (RFC 8156 Figure 5)."""
        if self._state is S.NORMAL:
            if self.servingForPartner:
                return Service.RESPONSIVE_FOR_PARTNER
            if self.role is Role.PRIMARY:
                return Service.RESPONSIVE
            return Service.RENEW_RESPONSIVE
        if self._state is S.RECOVER_DONE:
            return Service.RENEW_RESPONSIVE
        if self._state in SERVING:
            return Service.RESPONSIVE
        return Service.UNRESPONSIVE

    def status(self) -> EndpointStatus:
        """A snapshot for the control channel."""
        partner = self._partner
        timer = self._timers.get("auto-partner-down")
        return EndpointStatus(
            relationship=self.relationship,
            role=self.role,
            state=self._state,
            start_time=self._start,
            previous_state=self._previous,
            service=self.service,
            communicating=self.communicating,
            partner_state=None if partner is None else partner.state,
            partner_start_time=None if partner is None else partner.start_time,
            partner_startup=partner is not None and partner.startup,
            partner_down_time=None if partner is None else partner.partner_down_time,
            has_state=self._hasState,
            synced=self._synced,
            mclt=self.mclt,
            last_operation=self._lastOperation,
            recover_wait_until=self._recoverWaitUntil,
            auto_partner_down_at=None if timer is None else timer.getTime(),
            serving_for_partner=self.servingForPartner,
            serving_for_partner_since=self._traffic.since if self.servingForPartner else None,
        )

    def whenIdle(self) -> Deferred[None]:
        """A Deferred that fires once every queued write and send has run."""
        if not self._running and not self._effects:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    # --- inputs ------------------------------------------------------------------

    def start(self) -> None:
        """
        Read the stored state and enter STARTUP (section 8.3.2 steps 1-3).
        An unreadable record counts as none (the safe side: RECOVER with
        UPDREQALL).
        """
        if self._state is not S.INIT:
            self.log.warn("Failover {relationship}: start() twice", relationship=self.relationship)
            return
        now = self._clock.seconds()
        self._startedAt = now
        record = self._load()
        if record is None:
            # Step 1: no record -> PREVIOUS-STATE RECOVER, TIME-OF-FAILURE 0.
            self._resume, self._resumeStart = S.RECOVER, None
        else:
            resume: EndpointState | None = record.state
            resumeStart: float | None = record.start_time
            if resume in (S.PAUSED, S.SHUTDOWN, S.STARTUP, S.INIT):
                resume, resumeStart = record.previous_state, record.previous_start_time
            if resume is None or resume in (S.PAUSED, S.SHUTDOWN, S.STARTUP, S.INIT):
                resume, resumeStart = S.RECOVER, None
            # Step 2: a state where communications were OK becomes its
            # communications-failed successor.
            failed = COMMUNICATIONS_LOST.get(resume)
            if failed is not None:
                resume, resumeStart = failed, None
            self._resume, self._resumeStart = resume, resumeStart
            self._previous, self._previousStart = record.state, record.start_time
            self._hasState = record.has_state
            self._synced = record.synced
            self._lastOperation = record.last_operation
            if record.record_interval is not None:
                self._lastOperationInterval = record.record_interval
            else:
                self._lastOperationInterval = max(_RECORD_INTERVAL_BEFORE, self._recordInterval)
            if resume is S.RECOVER_WAIT:
                self._recoverWaitUntil = record.recover_wait_until
            if record.partner_state is not None and record.partner_start_time is not None:
                self._partner = StateMessage(record.partner_state, record.partner_start_time)
        self._state = S.STARTUP
        self._start = now
        self.log.info(
            "Failover {relationship}: STARTUP, previous state {previous}",
            relationship=self.relationship,
            previous=self._resume.value,
        )
        self._startTimer("startup", self._startupTime, self.startupExpired)
        self._startTimer("record", self._recordInterval, self._recordOperation)

    def connected(self, peer: IFailoverPeer, partnerKeepalive: float | None = None) -> None:
        """
        A partner connection is ready (CONNECT/CONNECTREPLY done): send our
        STATE on it (section 6.1), start the keepalive and contact timers.
        A connection that replaces a live one counts as the old one lost.

        @param partnerKeepalive: the partner's FO_KEEPALIVE_TIME from
            CONNECT/CONNECTREPLY; our CONTACT interval is derived from it.
        """
        if self._state in (S.INIT, S.PAUSED, S.SHUTDOWN):
            self.log.warn(
                "Failover {relationship}: connection in state {state} ignored",
                relationship=self.relationship,
                state=self._state.value,
            )
            return
        if self._peer is not None:
            self._dropConnection()
        self._resetTraffic("new connection")
        self._peer = peer
        keepalive = self._keepaliveTime if partnerKeepalive is None else partnerKeepalive
        self._contactInterval = max(keepalive / self._contactsPerKeepalive, 0.001)
        self._startTimer("keepalive", self._keepaliveTime, self.keepaliveExpired)
        self._startTimer("contact", self._contactInterval, self.contactDue)
        self.log.info("Failover {relationship}: partner connected", relationship=self.relationship)
        self._sendState()

    def stateReceived(
        self,
        state: EndpointState,
        startTimeOfState: float,
        *,
        startup: bool = False,
        hasState: bool = True,
        partnerDownTime: float | None = None,
    ) -> None:
        """
        The partner's STATE: communications are OK (section 6.1).  Record it
        (section 6.4), then react (section 8).
        """
        if self._peer is None or self._state in (S.INIT, S.PAUSED, S.SHUTDOWN):
            self.log.warn(
                "Failover {relationship}: STATE {partner} ignored (state {state}, connected {c})",
                relationship=self.relationship,
                partner=state.value,
                state=self._state.value,
                c=self._peer is not None,
            )
            return
        self._resetKeepalive()
        if state is S.STARTUP:
            startup = True  # the flag is what counts (section 8.3.1)
        message = StateMessage(
            state=state,
            start_time=startTimeOfState,
            startup=startup,
            has_state=hasState,
            partner_down_time=partnerDownTime if state is S.PARTNER_DOWN else None,
        )
        previous = self._partner
        self._partner = message
        if previous is None or previous.state is not state or previous.startup != startup:
            self.log.info(
                "Failover {relationship}: partner is {partner}{flag}",
                relationship=self.relationship,
                partner=state.value,
                flag=" (starting up)" if startup else "",
            )
        if state in (S.PAUSED, S.SHUTDOWN):
            # The partner is leaving: as if communications had failed.
            failed = COMMUNICATIONS_LOST.get(self._state)
            if failed is not None:
                self._transition(failed)
            return
        if self._state is S.STARTUP:
            self._leaveStartup(message)
            return
        if startup:
            return
        self._react(message)

    def messageReceived(self) -> None:
        """Any message from the partner: it is alive (section 6.6)."""
        if self._peer is not None:
            self._resetKeepalive()

    def updateDoneReceived(self) -> None:
        """
        UPDDONE: every update we asked for has been sent and acked.  Ignored
        unless we have an UPDREQ or UPDREQALL outstanding on this connection.
        Only the UPDDONE that answers the last of them moves the state
        (L{UPDATE_DONE}), and marks the database complete if one of them
        was an UPDREQALL.
        """
        if self._peer is None or self._state in (S.INIT, S.PAUSED, S.SHUTDOWN):
            return
        self._resetKeepalive()
        if not self._outstanding:
            self.log.warn(
                "Failover {relationship}: UPDDONE with no update request outstanding",
                relationship=self.relationship,
            )
            return
        self._outstanding -= 1
        if self._outstanding:
            # Another request is still out (e.g. RECOVER's UPDREQ, or the
            # catch-up UPDREQALL, when POTENTIAL-CONFLICT asked again): the
            # updates of the current state's request may not all be in.
            return
        wasAll, self._outstandingAll = self._outstandingAll, False
        if wasAll:
            self._synced = True
            self._hasState = True
        target = UPDATE_DONE.get((self._state, self.role))
        if target is not None:
            self._transition(target)
        elif wasAll:
            self._persist()

    def communicationsLost(self) -> None:
        """The connection is gone (section 8: "communications failed")."""
        if self._peer is None:
            return
        self.log.info(
            "Failover {relationship}: partner connection lost", relationship=self.relationship
        )
        self._dropConnection()

    def operatorPartnerDown(self) -> bool:
        """
        The operator's command: the partner is down.

        @return: whether it was obeyed (see L{OPERATOR_PARTNER_DOWN}).
        """
        if self._state is S.PARTNER_DOWN:
            return True
        if self._state not in OPERATOR_PARTNER_DOWN:
            self.log.warn(
                "Failover {relationship}: partner-down refused in state {state}",
                relationship=self.relationship,
                state=self._state.value,
            )
            return False
        self.log.warn(
            "Failover {relationship}: operator declares partner down",
            relationship=self.relationship,
        )
        self._transition(S.PARTNER_DOWN)
        return True

    def stop(self, shutdown: bool = False) -> Deferred[None]:
        """
        Enter PAUSED (a restart) or SHUTDOWN (a long stop), store it and, if
        connected, announce it; every timer stops and later inputs are
        ignored.  The caller closes the connection after the Deferred fires.

        @return: fires when the state is stored and announced.
        """
        if self._state is S.INIT:
            self._state = S.SHUTDOWN if shutdown else S.PAUSED
            return succeed(None)
        if self._state in (S.PAUSED, S.SHUTDOWN):
            return self.whenIdle()
        for name in list(self._timers):
            self._cancelTimer(name)
        self._transition(S.SHUTDOWN if shutdown else S.PAUSED)
        retry, self._writeRetry = self._writeRetry, None
        if retry is not None:
            # A failed write is waiting: try it once more now, and no more.
            retry.cancel()
            self._drain()
        return self.whenIdle()

    # --- timer inputs ------------------------------------------------------------

    def startupExpired(self) -> None:
        """Section 8.3.2 step 6: no partner in time; go to PREVIOUS-STATE."""
        self._timers.pop("startup", None)
        if self._state is S.STARTUP:
            self._transition(self._resume, resumed=True)

    def mcltExpired(self) -> None:
        """Section 8.6.2: RECOVER-WAIT is over."""
        self._timers.pop("recover-wait", None)
        if self._state is S.RECOVER_WAIT:
            self._transition(S.RECOVER_DONE)

    def autoPartnerDownExpired(self) -> None:
        """Section 8.9.2: the auto-partner-down timer expired."""
        self._timers.pop("auto-partner-down", None)
        if self._state is S.COMMUNICATIONS_INTERRUPTED:
            self.log.warn(
                "Failover {relationship}: auto-partner-down after {seconds} s",
                relationship=self.relationship,
                seconds=self._autoPartnerDown,
            )
            self._transition(S.PARTNER_DOWN)

    def keepaliveExpired(self) -> None:
        """Section 6.6: the partner has been silent too long; drop it."""
        self._timers.pop("keepalive", None)
        peer = self._peer
        if peer is None:
            return
        self.log.warn(
            "Failover {relationship}: nothing from the partner for {seconds} s",
            relationship=self.relationship,
            seconds=self._keepaliveTime,
        )
        # Forget the connection first, so that a connectionLost the
        # disconnect delivers at once finds nothing to do.
        self._dropConnection()
        try:
            peer.disconnect("keepalive timeout")
        except Exception:
            self.log.failure(
                "Failover {relationship}: disconnect failed", relationship=self.relationship
            )

    def contactDue(self) -> None:
        """Section 6.6: send CONTACT, then again every interval."""
        self._timers.pop("contact", None)
        peer = self._peer
        if peer is None:
            return
        self._startTimer("contact", self._contactInterval, self.contactDue)
        maybeDeferred(peer.sendContact).addErrback(self._sendFailed, "sendContact")

    # --- partial communication loss (RFC 7031 section 4.7) --------------------------

    def clientsSeenReceived(self, count: int) -> None:
        """
        The partner's CONTACT carried its count of client messages received:
        start or stop serving its clients (L{PartnerTraffic}).  Ignored when
        not connected.
        """
        if self._peer is None or self._state in (S.INIT, S.PAUSED, S.SHUTDOWN):
            return
        traffic = self._traffic
        missed, first = traffic.missedCount, traffic.firstMissed
        now = self._clock.seconds()
        change = traffic.reported(count, now, eligible=self._state is S.NORMAL)
        if change is True:
            self.log.warn(
                "Failover {relationship}: the partner has received no client message for"
                " {seconds:.0f} s while {missed} that it should answer reached us; serving"
                " its clients until it receives theirs again (RFC 7031 section 4.7)",
                relationship=self.relationship,
                seconds=0.0 if first is None else now - first,
                missed=missed,
                failoverEvent="servingForPartner",
            )
        elif change is False:
            self.log.warn(
                "Failover {relationship}: the partner receives client messages again;"
                " no longer serving its clients",
                relationship=self.relationship,
                failoverEvent="servingForPartnerEnded",
            )

    def clientMessageForPartner(self) -> None:
        """
        A client message that the partner should answer reached us and was
        not answered here (the policy counts its own refusals).  Counted in
        NORMAL while connected only: elsewhere either both serve everything
        or the partner is not expected to answer.
        """
        if self._peer is None or self._state is not S.NORMAL:
            return
        self._traffic.missed(self._clock.seconds())

    def _resetTraffic(self, why: str) -> None:
        if self._traffic.reset():
            self.log.info(
                "Failover {relationship}: no longer serving the partner's clients ({why})",
                relationship=self.relationship,
                why=why,
                failoverEvent="servingForPartnerEnded",
            )

    # --- the machine -------------------------------------------------------------

    def _leaveStartup(self, message: StateMessage) -> None:
        """Section 8.3.2 step 5: communications OK while in STARTUP."""
        current = self._resume
        if message.state is S.PARTNER_DOWN:
            # "If the time at which it entered PARTNER-DOWN state is later
            # than the last recorded time of operation of this server, then
            # set CURRENT-STATE to RECOVER", else POTENTIAL-CONFLICT.
            downSince = message.partner_down_time
            if downSince is None:
                downSince = message.start_time
            if self._lastOperation is None:
                operated = 0.0  # TIME-OF-FAILURE 0 (step 1)
            else:
                operated = self._lastOperation + self._lastOperationInterval + self._maxSkew
            current = S.RECOVER if downSince > operated else S.POTENTIAL_CONFLICT
        self._transition(current, resumed=current is self._resume)
        if not message.startup:
            self._react(message)

    def _react(self, message: StateMessage) -> None:
        """Take the "communications OK" transition on the partner's state."""
        ours = self._state
        theirs = message.state
        target = PARTNER_STATE_REACTIONS.get(ours, {}).get(theirs)
        if ours is S.RECOVER and target is None:
            if not self._hasState and not message.has_state:
                # DESIGN.md: neither side has any state: the pair's first start.
                self.log.info(
                    "Failover {relationship}: neither partner has state; first start",
                    relationship=self.relationship,
                )
                self._synced = True
                self._transition(S.NORMAL)
                return
            # 8.5.2: UPDREQ, or UPDREQALL when our database is not complete.
            self._requestUpdates()
            return
        if target is not None:
            self._transition(target)
        if (
            self._state is S.POTENTIAL_CONFLICT
            and self.role is Role.SECONDARY
            and theirs is S.CONFLICT_DONE
        ):
            # 8.10.2: the primary is done; ask it for its updates.
            self._requestUpdates()
        elif (
            not self._synced
            and message.has_state
            and self._state in SERVING
            and self._state is not S.RECOVER_DONE
            and not self._outstandingAll
        ):
            # A server serving without a complete database (partner-down
            # from a fresh start) catches up, unless its UPDREQALL is out.
            self._requestUpdates()

    def _transition(self, target: EndpointState, resumed: bool = False) -> None:
        """
        Enter C{target}: store it, then announce it, then run its entry
        actions, in that order, on the effect queue.

        @param resumed: C{target} is the stored state STARTUP resumes: keep
            its stored start time (RFC 8156: no new state was entered).
        """
        old = self._state
        now = self._clock.seconds()
        for name in _STATE_TIMERS:
            self._cancelTimer(name)
        # A new state makes its own update request (8.5.2, 8.10), even on
        # a connection where an earlier state already made one: a pair that
        # resolves a second POTENTIAL-CONFLICT on one connection needs the
        # secondary's UPDREQ again (chaos finding 2).
        self._requested = False
        self._resetTraffic("leaving " + old.value)
        if old is S.STARTUP:
            self._previous = self._resume
            self._previousStart = now if self._resumeStart is None else self._resumeStart
        else:
            self._previous, self._previousStart = old, self._start
        self._state = target
        if resumed and self._resumeStart is not None:
            self._start = self._resumeStart
        else:
            self._start = now
        if target in SERVING or old in SERVING:
            self._lastOperation = now
            self._lastOperationInterval = self._recordInterval
        if target in SERVING:
            self._hasState = True
        if target is not S.RECOVER_WAIT:
            self._recoverWaitUntil = None
        self._logTransition(old, target)

        # Timers of the new state (they need no durability).
        if target is S.RECOVER_WAIT:
            if self._recoverWaitUntil is None:
                if self._lastOperation is not None:
                    base = self._lastOperation + self._lastOperationInterval + self._maxSkew
                else:
                    base = self._startedAt
                self._recoverWaitUntil = base + self.mclt
            self._startTimer(
                "recover-wait", max(0.0, self._recoverWaitUntil - now), self.mcltExpired
            )
        elif target is S.COMMUNICATIONS_INTERRUPTED and self._autoPartnerDown is not None:
            delay = max(0.0, self._start + self._autoPartnerDown - now)
            self._startTimer("auto-partner-down", delay, self.autoPartnerDownExpired)

        self._persist()
        self._sendState()

        # Entry actions that talk to the partner.
        if self._peer is None:
            return
        if target is S.NORMAL:
            # 8.8: send every unacked update; "when the above process is
            # complete", the secondary asks for prefixes.
            if self.role is Role.SECONDARY:
                self._send("sendUnackedUpdates", then=self._unackedUpdatesSent)
            else:
                self._send("sendUnackedUpdates")
        elif target is S.POTENTIAL_CONFLICT and self.role is Role.PRIMARY:
            # 8.10: the primary asks the secondary for what it has not acked.
            self._requestUpdates()

    def _logTransition(self, old: EndpointState, new: EndpointState) -> None:
        if new is S.COMMUNICATIONS_INTERRUPTED and old is S.NORMAL:
            self.log.warn(
                "Failover {relationship}: NORMAL -> COMMUNICATIONS-INTERRUPTED: partner unreachable",
                relationship=self.relationship,
            )
        elif new is S.RESOLUTION_INTERRUPTED:
            self.log.error(
                "Failover {relationship}: conflict resolution interrupted; "
                "serving clients without the partner",
                relationship=self.relationship,
            )
        else:
            self.log.info(
                "Failover {relationship}: {old} -> {new}",
                relationship=self.relationship,
                old=old.value,
                new=new.value,
            )

    def _requestUpdates(self) -> None:
        """
        UPDREQ, or UPDREQALL if our database is not complete; once per state
        and connection.  An UPDREQALL still unanswered brings everything
        the partner has: then UPDREQ is enough.
        """
        if self._peer is None or self._requested:
            return
        self._requested = True
        everything = not self._synced and not self._outstandingAll
        self._outstanding += 1
        self._outstandingAll = self._outstandingAll or everything
        self._send("sendUpdateRequestAll" if everything else "sendUpdateRequest")

    def _dropConnection(self) -> None:
        """Forget the connection and take the communications-failed transition."""
        self._peer = None
        for name in _CONNECTION_TIMERS:
            self._cancelTimer(name)
        self._resetTraffic("connection lost")
        self._requested = False
        self._outstanding = 0
        self._outstandingAll = False
        failed = COMMUNICATIONS_LOST.get(self._state)
        if failed is not None:
            self._transition(failed)

    def _resetKeepalive(self) -> None:
        if self._peer is not None and self._state not in (S.PAUSED, S.SHUTDOWN):
            self._startTimer("keepalive", self._keepaliveTime, self.keepaliveExpired)

    def _recordOperation(self) -> None:
        """Timer: store the time of operation while serving (8.3.2 step 5)."""
        self._timers.pop("record", None)
        if self._state in (S.INIT, S.PAUSED, S.SHUTDOWN):
            return
        self._startTimer("record", self._recordInterval, self._recordOperation)
        if self._state in SERVING:
            self._lastOperation = self._clock.seconds()
            self._lastOperationInterval = self._recordInterval
            self._persist()

    # --- timers ------------------------------------------------------------------

    def _startTimer(self, name: str, delay: float, f: Callable[[], None]) -> None:
        self._cancelTimer(name)
        self._timers[name] = self._clock.callLater(delay, f)

    def _cancelTimer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    # --- durability --------------------------------------------------------------

    def _load(self) -> FailoverRecord | None:
        raw = self._store.getMetadata(self.metadataKey)
        if raw is None:
            return None
        try:
            return FailoverRecord.fromJSON(raw)
        except ValueError as e:
            self.log.error(
                "Failover {relationship}: stored state unreadable ({reason}); starting as if new",
                relationship=self.relationship,
                reason=str(e),
            )
            return None

    def record(self) -> FailoverRecord:
        """The record L{_persist} would write now."""
        partner = self._partner
        return FailoverRecord(
            state=self._state,
            start_time=self._start,
            previous_state=self._previous,
            previous_start_time=self._previousStart,
            partner_state=None if partner is None else partner.state,
            partner_start_time=None if partner is None else partner.start_time,
            last_operation=self._lastOperation,
            has_state=self._hasState,
            synced=self._synced,
            recover_wait_until=self._recoverWaitUntil,
            record_interval=None if self._lastOperation is None else self._lastOperationInterval,
        )

    def _persist(self) -> None:
        if self._state in (S.INIT, S.STARTUP):
            return
        text = self.record().toJSON()
        key = self.metadataKey

        def write() -> Deferred[None]:
            return maybeDeferred(self._store.setMetadata, key, text)

        self._queue(write)

    def _sendState(self) -> None:
        if self._peer is None:
            return
        if self._state is S.STARTUP:
            state = self._resume
            start = self._startedAt if self._resumeStart is None else self._resumeStart
            message = StateMessage(
                state=state,
                start_time=start,
                startup=True,
                has_state=self._hasState,
                partner_down_time=start if state is S.PARTNER_DOWN else None,
            )
        else:
            message = StateMessage(
                state=self._state,
                start_time=self._start,
                startup=False,
                has_state=self._hasState,
                partner_down_time=self._start if self._state is S.PARTNER_DOWN else None,
            )
        self._send("sendState", message)

    def _unackedUpdatesSent(self, peer: IFailoverPeer) -> None:
        """8.8: the secondary's unacked updates are all sent and acked: POOLREQ."""
        if self._peer is peer and self._state is S.NORMAL:
            self._send("sendPoolRequest")

    def _send(
        self, method: str, *args: Any, then: Callable[[IFailoverPeer], None] | None = None
    ) -> None:
        """
        Queue a call of C{method} on the current connection's peer.

        @param then: called with the peer when the call's Deferred succeeds.
        """
        peer = self._peer
        if peer is None:
            return

        def send() -> None:
            if self._peer is not peer:
                self.log.debug(
                    "Failover {relationship}: {method} dropped: connection gone",
                    relationship=self.relationship,
                    method=method,
                )
                return
            if self._writeFailed:
                self.log.error(
                    "Failover {relationship}: {method} not sent: state not stored",
                    relationship=self.relationship,
                    method=method,
                )
                return
            d: Deferred[None] = maybeDeferred(getattr(peer, method), *args)
            if then is not None:
                d.addCallback(lambda _: then(peer))
            d.addErrback(self._sendFailed, method)

        self._queue(send)

    def _sendFailed(self, failure: Failure, what: str) -> None:
        self.log.failure(
            "Failover {relationship}: sending {what} failed",
            failure,
            relationship=self.relationship,
            what=what,
        )

    # --- the effect queue -------------------------------------------------------

    def _retryWrite(self) -> None:
        """Timer: try the failed write at the head of the queue again."""
        self._writeRetry = None
        self._drain()

    def _queue(self, effect: Callable[[], Deferred[None] | None]) -> None:
        self._effects.append(effect)
        if not self._running:
            self._drain()

    def _drain(self) -> None:
        self._running = True
        while self._effects:
            effect = self._effects.popleft()
            waiting = effect()
            if waiting is None:
                continue
            wait = _Wait()

            def finished(
                result: object,
                wait: _Wait = wait,
                effect: Callable[[], Deferred[None] | None] = effect,
            ) -> None:
                if isinstance(result, Failure):
                    self._writeFailed = True
                    retry = self._state not in (S.PAUSED, S.SHUTDOWN)
                    self.log.failure(
                        "Failover {relationship}: storing the failover state failed"
                        " ({what}); nothing is announced until it is stored",
                        result,
                        relationship=self.relationship,
                        what=(
                            f"trying again in {self._nextWriteRetry:g} s"
                            if retry
                            else "stopping: not tried again"
                        ),
                    )
                    if retry:
                        # The queue waits: the same write first, then the rest.
                        self._effects.appendleft(effect)
                        self._writeRetry = self._clock.callLater(
                            self._nextWriteRetry, self._retryWrite
                        )
                        self._nextWriteRetry = min(
                            2 * self._nextWriteRetry, self._maxWriteRetryDelay
                        )
                        wait.stalled = True
                else:
                    if self._writeFailed:
                        self.log.info(
                            "Failover {relationship}: the failover state is stored again",
                            relationship=self.relationship,
                        )
                    self._writeFailed = False
                    self._nextWriteRetry = self._writeRetryDelay
                wait.done = True
                if not wait.synchronous and not wait.stalled:
                    self._drain()

            waiting.addBoth(finished)
            wait.synchronous = False
            if wait.stalled or not wait.done:
                return  # finished() or the retry resumes the queue
        self._running = False
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)
