"""
Tests for L{dhcp6ha.failover.machine}: every transition of RFC 8156 section 8
as L{FailoverEndpoint} implements it, driven with a L{Clock} and a
L{FakePeer}, asserting the exact, ordered list of effects (store writes and
messages), like magic-wormhole's C{test_machines.py}.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.failover.machine import (
    COMMUNICATIONS_LOST,
    OPERATOR_PARTNER_DOWN,
    PARTNER_STATE_REACTIONS,
    SERVING,
    EndpointState,
    FailoverEndpoint,
    FailoverInputs,
    FailoverRecord,
    PartnerTraffic,
    Role,
    Service,
    StateMessage,
)
from dhcp6ha.interfaces import IFailoverPeer, IUpdateQueue
from dhcp6ha.testing import FakePeer, FakeUpdateQueue, MemoryLeaseStore

S = EndpointState
T0 = 1_700_000_000.0
MCLT = 3600.0
STARTUP = 10.0
KEY = "failover.rel.state"
QUIET = 10.0**7

#: Every state a partner can announce without the STARTUP flag.
PARTNER_STATES = (
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

Effect = tuple[object, ...]


class RecordingStore(MemoryLeaseStore):
    """
    A L{MemoryLeaseStore} that logs every metadata write to a shared effect
    list as C{("persist", state, start time)}, and can hold the write's
    Deferred until L{release}.
    """

    def __init__(self, effects: list[Effect]) -> None:
        super().__init__()
        self.effects = effects
        self.hold = False
        self.failNext = False
        # How many writes to fail, after failNext.
        self.failures = 0
        self.pending: list[Deferred[None]] = []

    def setMetadata(self, key: str, value: str) -> Deferred[None]:
        d = super().setMetadata(key, value)
        record = FailoverRecord.fromJSON(value)
        self.effects.append(("persist", record.state, record.start_time))
        if self.failNext:
            self.failNext = False
            return fail(OSError("disk full"))
        if self.failures:
            self.failures -= 1
            return fail(OSError("disk full"))
        if self.hold:
            d = Deferred()
            self.pending.append(d)
        return d

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)

    def stored(self) -> FailoverRecord:
        raw = self.getMetadata(KEY)
        assert raw is not None
        return FailoverRecord.fromJSON(raw)


def persist(state: EndpointState, start: float) -> Effect:
    return ("persist", state, start)


def sendState(state: EndpointState, start: float, **kw: Any) -> Effect:
    return ("sendState", StateMessage(state, start, **kw))


class Harness:
    """One endpoint with its clock, store, current peer and effect log."""

    def __init__(
        self,
        role: Role = Role.PRIMARY,
        record: FailoverRecord | None = None,
        **kw: Any,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.effects: list[Effect] = []
        self.store = RecordingStore(self.effects)
        if record is not None:
            MemoryLeaseStore.setMetadata(self.store, KEY, record.toJSON())
        kw.setdefault("mclt", MCLT)
        kw.setdefault("startupTime", STARTUP)
        # Quiet by default: tests of keepalive, CONTACT and the operation
        # record set these themselves.
        kw.setdefault("keepaliveTime", QUIET)
        kw.setdefault("recordInterval", QUIET)
        self.ep = FailoverEndpoint("rel", role, self.clock, self.store, **kw)
        self.peer = FakePeer(self.effects)

    def take(self) -> list[Effect]:
        """The effects so far, clearing the log."""
        effects = list(self.effects)
        del self.effects[:]
        return effects

    def connect(self, peer: FakePeer | None = None, **kw: Any) -> FakePeer:
        if peer is None:
            peer = FakePeer(self.effects)
        self.peer = peer
        self.ep.connected(peer, **kw)
        return peer

    def partner(self, state: EndpointState, start: float = T0 - 100, **kw: Any) -> None:
        self.ep.stateReceived(state, start, **kw)


def stored(state: EndpointState, start: float = T0 - 1000, **kw: Any) -> FailoverRecord:
    """A stored record of a server with a complete database."""
    kw.setdefault("has_state", True)
    kw.setdefault("synced", True)
    return FailoverRecord(state=state, start_time=start, **kw)


def inState(
    state: EndpointState, role: Role = Role.PRIMARY, connected: bool = True, **kw: Any
) -> Harness:
    """
    A harness whose endpoint is in C{state} (reached the way a server gets
    there), with a partner connection when C{connected}, effects cleared.
    """
    if state is S.NORMAL:
        h = Harness(role, stored(S.COMMUNICATIONS_INTERRUPTED, T0), **kw)
        h.ep.start()
        h.clock.advance(STARTUP)
        h.connect()
        h.partner(S.NORMAL)
    elif state is S.POTENTIAL_CONFLICT:
        h = Harness(role, stored(S.RESOLUTION_INTERRUPTED), **kw)
        h.ep.start()
        h.clock.advance(STARTUP)
        h.connect()
        h.partner(S.POTENTIAL_CONFLICT)
    elif state is S.RECOVER_WAIT:
        h = Harness(role, stored(S.RECOVER_WAIT, recover_wait_until=T0 + 10 * MCLT), **kw)
        h.ep.start()
        h.clock.advance(STARTUP)
        if connected:
            h.connect()
    else:
        h = Harness(role, stored(state), **kw)
        h.ep.start()
        h.clock.advance(STARTUP)
        if connected:
            h.connect()
    assert h.ep.state is state, h.ep.state
    if not connected and h.ep.communicating:
        h.ep.communicationsLost()
    h.take()
    return h


class FakesTests(SynchronousTestCase):
    """The public fakes provide their interfaces."""

    def test_fakePeer(self) -> None:
        """L{FakePeer} provides L{IFailoverPeer} and records calls."""
        peer = FakePeer()
        self.assertTrue(verifyObject(IFailoverPeer, peer))
        peer.sendState(StateMessage(S.NORMAL, 1.0))
        peer.sendUpdateRequest()
        peer.disconnect("bye")
        self.assertEqual(
            peer.calls,
            [
                ("sendState", StateMessage(S.NORMAL, 1.0)),
                ("sendUpdateRequest",),
                ("disconnect", "bye"),
            ],
        )
        self.assertEqual(peer.disconnected, "bye")

    def test_fakePeerHold(self) -> None:
        """Calls named in C{hold} return Deferreds the test fires."""
        peer = FakePeer()
        peer.hold.add("sendPoolRequest")
        d = peer.sendPoolRequest()
        self.assertNoResult(d)
        self.assertEqual(peer.held, [("sendPoolRequest", d)])
        self.successResultOf(peer.sendContact())

    def test_fakePeerFailure(self) -> None:
        """With C{failure} set, sends fail."""
        peer = FakePeer()
        peer.failure = ConnectionError("gone")
        self.failureResultOf(peer.sendContact(), ConnectionError)

    def test_fakeUpdateQueue(self) -> None:
        """L{FakeUpdateQueue} provides L{IUpdateQueue}."""
        self.assertTrue(verifyObject(IUpdateQueue, FakeUpdateQueue()))

    def test_inputsProtocol(self) -> None:
        """A L{FailoverEndpoint} is a L{FailoverInputs} (checked by mypy)."""
        h = Harness()
        inputs: FailoverInputs = h.ep
        self.assertIs(inputs, h.ep)


class RecordTests(SynchronousTestCase):
    """L{FailoverRecord} round-trips through JSON and rejects garbage."""

    def test_roundTrip(self) -> None:
        """Every field survives."""
        record = FailoverRecord(
            state=S.PAUSED,
            start_time=5.5,
            previous_state=S.PARTNER_DOWN,
            previous_start_time=1.0,
            partner_state=S.RECOVER,
            partner_start_time=2.0,
            last_operation=4.0,
            has_state=True,
            synced=False,
            recover_wait_until=None,
            record_interval=5.0,
        )
        self.assertEqual(FailoverRecord.fromJSON(record.toJSON()), record)
        minimal = FailoverRecord(S.RECOVER_WAIT, 1.0, recover_wait_until=9.0)
        self.assertEqual(FailoverRecord.fromJSON(minimal.toJSON()), minimal)

    def test_garbage(self) -> None:
        """Bad JSON, versions, states and types raise L{ValueError}."""
        good = stored(S.NORMAL).toJSON()
        for text in [
            "",
            "[]",
            "{",
            good.replace('"version": 1', '"version": 2'),
            good.replace('"normal"', '"sleeping"'),
            good.replace('"synced": true', '"synced": 1'),
            good.replace('"state": "normal"', '"state": 3'),
            good.replace('"start_time": 1699999000.0', '"start_time": "x"'),
            good.replace('"start_time": 1699999000.0', '"start_time": true'),
        ]:
            self.assertRaises(ValueError, FailoverRecord.fromJSON, text)


class StartupTests(SynchronousTestCase):
    """Section 8.3: STARTUP and what a restart resumes."""

    def test_init(self) -> None:
        """Before C{start}, the endpoint is INIT and unresponsive."""
        h = Harness()
        self.assertIs(h.ep.state, S.INIT)
        self.assertIs(h.ep.service, Service.UNRESPONSIVE)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_startWithoutRecord(self) -> None:
        """
        No stored state: STARTUP, then RECOVER when the startup time runs
        out (DESIGN.md: RECOVER for both roles), which is stored.
        """
        for role in Role:
            h = Harness(role)
            h.ep.start()
            self.assertIs(h.ep.state, S.STARTUP)
            self.assertEqual(h.take(), [])
            h.clock.advance(STARTUP - 1)
            self.assertIs(h.ep.state, S.STARTUP)
            h.clock.advance(1)
            self.assertIs(h.ep.state, S.RECOVER)
            self.assertEqual(h.take(), [persist(S.RECOVER, T0 + STARTUP)])
            record = h.store.stored()
            self.assertFalse(record.has_state)
            self.assertFalse(record.synced)
            self.assertIsNone(record.last_operation)

    def test_startupAnnouncesPreviousState(self) -> None:
        """In STARTUP the STATE carries the STARTUP flag and the state to resume (8.3.1)."""
        h = Harness()
        h.ep.start()
        h.connect()
        self.assertEqual(h.take(), [sendState(S.RECOVER, T0, startup=True, has_state=False)])
        h = Harness(record=stored(S.PARTNER_DOWN, T0 - 50))
        h.ep.start()
        h.connect()
        self.assertEqual(
            h.take(),
            [sendState(S.PARTNER_DOWN, T0 - 50, startup=True, partner_down_time=T0 - 50)],
        )

    def test_step2CommunicationsFailed(self) -> None:
        """Stored NORMAL resumes as COMMUNICATIONS-INTERRUPTED, POTENTIAL-CONFLICT as RESOLUTION-INTERRUPTED."""
        for before, after in COMMUNICATIONS_LOST.items():
            h = Harness(record=stored(before))
            h.ep.start()
            h.connect()
            h.clock.advance(STARTUP)
            self.assertIs(h.ep.state, after)
            self.assertEqual(
                h.take(),
                [
                    sendState(after, T0, startup=True),
                    persist(after, T0 + STARTUP),
                    sendState(after, T0 + STARTUP),
                ],
            )

    def test_resumeKeepsStartTime(self) -> None:
        """A resumed state keeps its stored start time: no new state was entered."""
        for state in (S.PARTNER_DOWN, S.COMMUNICATIONS_INTERRUPTED, S.RECOVER, S.CONFLICT_DONE):
            h = Harness(record=stored(state, T0 - 500))
            h.ep.start()
            h.clock.advance(STARTUP)
            self.assertIs(h.ep.state, state)
            self.assertEqual(h.ep.startTimeOfState, T0 - 500)
            self.assertEqual(h.take(), [persist(state, T0 - 500)])
            self.assertEqual(h.store.stored().previous_state, state)

    def test_resumeAfterPause(self) -> None:
        """A stored PAUSED or SHUTDOWN resumes the state it interrupted."""
        for pause in (S.PAUSED, S.SHUTDOWN):
            record = stored(
                pause, T0 - 10, previous_state=S.PARTNER_DOWN, previous_start_time=T0 - 900
            )
            h = Harness(record=record)
            h.ep.start()
            h.clock.advance(STARTUP)
            self.assertIs(h.ep.state, S.PARTNER_DOWN)
            self.assertEqual(h.ep.startTimeOfState, T0 - 900)

    def test_unreadableRecord(self) -> None:
        """An unreadable record counts as none, and says so."""
        h = Harness()
        MemoryLeaseStore.setMetadata(h.store, KEY, "{not json")
        with capturedLogs() as events:
            h.ep.start()
        self.assertTrue(any("unreadable" in e["log_format"] for e in events))
        h.connect()
        self.assertEqual(h.take(), [sendState(S.RECOVER, T0, startup=True, has_state=False)])

    def test_communicationsOkResumes(self) -> None:
        """
        Step 5: communications OK (the partner's STATE) resumes the previous
        state, then takes the communications-OK transition from it.
        """
        h = Harness(record=stored(S.COMMUNICATIONS_INTERRUPTED, T0 - 300))
        h.ep.start()
        h.connect()
        h.take()
        h.partner(S.NORMAL, T0 - 5)
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(
            h.take(),
            [
                persist(S.COMMUNICATIONS_INTERRUPTED, T0 - 300),
                sendState(S.COMMUNICATIONS_INTERRUPTED, T0 - 300),
                persist(S.NORMAL, T0),
                sendState(S.NORMAL, T0),
                ("sendUnackedUpdates",),
            ],
        )
        pending = [
            call.func.__name__
            for call in h.clock.getDelayedCalls()
            if isinstance(call, DelayedCall)
        ]
        self.assertNotIn("startupExpired", pending)

    def test_partnerStartingUp(self) -> None:
        """
        A partner STATE with the STARTUP flag ends our STARTUP but triggers
        no transition; its next STATE does.
        """
        h = Harness(record=stored(S.COMMUNICATIONS_INTERRUPTED, T0 - 300))
        h.ep.start()
        h.connect()
        h.take()
        h.partner(S.COMMUNICATIONS_INTERRUPTED, T0 - 200, startup=True)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(
            h.take(),
            [
                persist(S.COMMUNICATIONS_INTERRUPTED, T0 - 300),
                sendState(S.COMMUNICATIONS_INTERRUPTED, T0 - 300),
            ],
        )
        self.assertTrue(h.ep.status().partner_startup)
        h.partner(S.COMMUNICATIONS_INTERRUPTED, T0 - 200)
        self.assertIs(h.ep.state, S.NORMAL)

    def test_startupFlagNeverMovesUs(self) -> None:
        """Outside STARTUP, a STATE with the STARTUP flag is only recorded (8.4.2, generalised)."""
        for state in (S.PARTNER_DOWN, S.COMMUNICATIONS_INTERRUPTED, S.RECOVER):
            h = inState(state)
            for theirs in PARTNER_STATES:
                h.partner(theirs, startup=True)
                self.assertIs(h.ep.state, state)
            h.partner(S.STARTUP)
            self.assertIs(h.ep.state, state)
            self.assertEqual(h.take(), [])

    def test_partnerDownLaterThanOurOperation(self) -> None:
        """
        Step 5: the partner entered PARTNER-DOWN after we last operated:
        RECOVER (and UPDREQ, as our database is intact).
        """
        last = T0 - 10_000
        h = Harness(
            record=stored(S.COMMUNICATIONS_INTERRUPTED, last - 50, last_operation=last),
            recordInterval=60.0,
        )
        h.ep.start()
        h.connect()
        h.take()
        h.partner(S.PARTNER_DOWN, last + 100, partnerDownTime=last + 100)
        self.assertIs(h.ep.state, S.RECOVER)
        self.assertEqual(
            h.take(),
            [persist(S.RECOVER, T0), sendState(S.RECOVER, T0), ("sendUpdateRequest",)],
        )

    def test_partnerDownBeforeOurOperation(self) -> None:
        """
        Step 5: the partner entered PARTNER-DOWN while we still operated
        (within the recording bound): POTENTIAL-CONFLICT; the primary sends
        UPDREQ.
        """
        last = T0 - 10_000
        record = stored(S.COMMUNICATIONS_INTERRUPTED, last - 50, last_operation=last)
        for downAt in (last - 100, last + 60):  # +60: within interval + skew
            h = Harness(record=record, recordInterval=60.0)
            h.ep.start()
            h.connect()
            h.take()
            h.partner(S.PARTNER_DOWN, downAt, partnerDownTime=downAt)
            self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
            self.assertEqual(
                h.take(),
                [
                    persist(S.POTENTIAL_CONFLICT, T0),
                    sendState(S.POTENTIAL_CONFLICT, T0),
                    ("sendUpdateRequest",),
                ],
            )

    def test_partnerDownStoredInterval(self) -> None:
        """
        Step 5 bounds the last recorded operation with the interval stored
        with it (the one in force when it was recorded), not the one
        configured now: 5 s stored, 60 s now, partner down 20 s after it:
        RECOVER; 60 s stored, 5 s now: POTENTIAL-CONFLICT.
        """
        last = T0 - 10_000
        for storedInterval, configured, expected in [
            (5.0, 60.0, S.RECOVER),
            (60.0, 5.0, S.POTENTIAL_CONFLICT),
        ]:
            record = stored(
                S.COMMUNICATIONS_INTERRUPTED,
                last - 50,
                last_operation=last,
                record_interval=storedInterval,
            )
            h = Harness(record=record, recordInterval=configured)
            h.ep.start()
            h.connect()
            h.take()
            h.partner(S.PARTNER_DOWN, last + 20, partnerDownTime=last + 20)
            self.assertIs(h.ep.state, expected)

    def test_partnerDownRecordWithoutInterval(self) -> None:
        """
        A record without C{record_interval} was written when the interval
        was always 60 s: with 5 s configured, a partner down 20 s after the
        last recorded operation still means POTENTIAL-CONFLICT; past 60 s
        and the skew bound, RECOVER.  A longer configured interval counts.
        """
        last = T0 - 10_000
        record = stored(S.COMMUNICATIONS_INTERRUPTED, last - 50, last_operation=last)
        for configured, downAt, expected in [
            (5.0, last + 20, S.POTENTIAL_CONFLICT),
            (5.0, last + 66, S.RECOVER),
            (100.0, last + 66, S.POTENTIAL_CONFLICT),
        ]:
            h = Harness(record=record, recordInterval=configured)
            h.ep.start()
            h.connect()
            h.take()
            h.partner(S.PARTNER_DOWN, downAt, partnerDownTime=downAt)
            self.assertIs(h.ep.state, expected)

    def test_partnerDownShortInterval(self) -> None:
        """
        A server that recorded its operation every 5 s (stored with it)
        takes RECOVER from a partner down just past that time + 5 s + the
        5 s skew bound, POTENTIAL-CONFLICT at it.
        """
        last = T0 - 10_000
        for downAt, expected in [(last + 10, S.POTENTIAL_CONFLICT), (last + 10.5, S.RECOVER)]:
            record = stored(
                S.COMMUNICATIONS_INTERRUPTED, last - 50, last_operation=last, record_interval=5.0
            )
            h = Harness(record=record, recordInterval=5.0)
            h.ep.start()
            h.connect()
            h.take()
            h.partner(S.PARTNER_DOWN, downAt, partnerDownTime=downAt)
            self.assertIs(h.ep.state, expected)

    def test_partnerDownNoRecord(self) -> None:
        """Step 1: with no record the time of failure is 0: RECOVER, UPDREQALL."""
        h = Harness(Role.SECONDARY)
        h.ep.start()
        h.connect()
        h.take()
        h.partner(S.PARTNER_DOWN, T0 - 5, partnerDownTime=T0 - 5)
        self.assertIs(h.ep.state, S.RECOVER)
        self.assertEqual(
            h.take(),
            [
                persist(S.RECOVER, T0),
                sendState(S.RECOVER, T0, has_state=False),
                ("sendUpdateRequestAll",),
            ],
        )

    def test_startTwice(self) -> None:
        """A second C{start} does nothing."""
        h = Harness()
        h.ep.start()
        h.ep.start()
        self.assertIs(h.ep.state, S.STARTUP)


class FirstStartTests(SynchronousTestCase):
    """DESIGN.md: a server with no state asks for everything, unless neither has any."""

    def test_pairFirstStart(self) -> None:
        """Neither partner has state: both go straight to NORMAL."""
        for role, extra in ((Role.PRIMARY, []), (Role.SECONDARY, [("sendPoolRequest",)])):
            h = Harness(role)
            h.ep.start()
            h.connect()
            h.take()
            h.partner(S.RECOVER, T0, hasState=False)
            self.assertIs(h.ep.state, S.NORMAL)
            self.assertEqual(
                h.take(),
                [
                    persist(S.RECOVER, T0),
                    sendState(S.RECOVER, T0, has_state=False),
                    persist(S.NORMAL, T0),
                    sendState(S.NORMAL, T0),
                    ("sendUnackedUpdates",),
                ]
                + extra,
            )
            record = h.store.stored()
            self.assertTrue(record.synced)
            self.assertTrue(record.has_state)

    def test_pairFirstStartBothStartingUp(self) -> None:
        """Both in STARTUP: the flagged STATEs end STARTUP, the next ones meet."""
        h = Harness()
        h.ep.start()
        h.connect()
        h.partner(S.RECOVER, T0, startup=True, hasState=False)
        self.assertIs(h.ep.state, S.RECOVER)
        h.partner(S.RECOVER, T0, hasState=False)
        self.assertIs(h.ep.state, S.NORMAL)

    def test_freshServerAsksForEverything(self) -> None:
        """
        No state here, state there: UPDREQALL, then UPDDONE -> RECOVER-WAIT
        (now synced, stored), MCLT after this process started -> RECOVER-DONE,
        and NORMAL once the partner is.
        """
        h = Harness()
        h.ep.start()
        h.connect()
        h.take()
        h.partner(S.COMMUNICATIONS_INTERRUPTED, T0 - 100)
        self.assertIs(h.ep.state, S.RECOVER)
        self.assertEqual(
            h.take(),
            [
                persist(S.RECOVER, T0),
                sendState(S.RECOVER, T0, has_state=False),
                ("sendUpdateRequestAll",),
            ],
        )
        h.clock.advance(50)
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        self.assertEqual(
            h.take(), [persist(S.RECOVER_WAIT, T0 + 50), sendState(S.RECOVER_WAIT, T0 + 50)]
        )
        record = h.store.stored()
        self.assertTrue(record.synced)
        self.assertEqual(record.recover_wait_until, T0 + MCLT)
        h.clock.advance(MCLT - 51)
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        h.clock.advance(1)
        self.assertIs(h.ep.state, S.RECOVER_DONE)
        self.assertEqual(
            h.take(), [persist(S.RECOVER_DONE, T0 + MCLT), sendState(S.RECOVER_DONE, T0 + MCLT)]
        )
        h.partner(S.NORMAL, T0 + MCLT)
        self.assertIs(h.ep.state, S.NORMAL)

    def test_operatorPartnerDownThenCatchUp(self) -> None:
        """
        A fresh server put in PARTNER-DOWN by the operator serves, and asks
        UPDREQALL once the partner (with state) is back; UPDDONE makes it
        synced without a transition.
        """
        h = Harness()
        h.ep.start()
        self.assertTrue(h.ep.operatorPartnerDown())
        self.assertIs(h.ep.state, S.PARTNER_DOWN)
        self.assertEqual(h.take(), [persist(S.PARTNER_DOWN, T0)])
        self.assertTrue(h.store.stored().has_state)
        h.connect()
        h.partner(S.RECOVER_DONE, T0 - 5)
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(
            h.take(),
            [
                sendState(S.PARTNER_DOWN, T0, partner_down_time=T0),
                persist(S.NORMAL, T0),
                sendState(S.NORMAL, T0),
                ("sendUnackedUpdates",),
                ("sendUpdateRequestAll",),
            ],
        )
        h.partner(S.NORMAL, T0)
        self.assertEqual(h.take(), [])
        h.ep.updateDoneReceived()
        self.assertEqual(h.take(), [persist(S.NORMAL, T0)])
        self.assertTrue(h.store.stored().synced)


class RecoverTests(SynchronousTestCase):
    """Sections 8.5 (RECOVER), 8.6 (RECOVER-WAIT), 8.7 (RECOVER-DONE)."""

    def test_recoverUpdateRequest(self) -> None:
        """With a complete database, RECOVER asks UPDREQ, once per connection."""
        h = inState(S.RECOVER, connected=False)
        peer = h.connect()
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0 - 100)
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0 - 100)
        self.assertEqual(peer.calls, [sendState(S.RECOVER, T0 - 1000), ("sendUpdateRequest",)])
        # Communications fail during the exchange: stay; ask again later.
        h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.RECOVER)
        self.assertEqual(h.take(), [sendState(S.RECOVER, T0 - 1000), ("sendUpdateRequest",)])
        h.ep.updateDoneReceived()  # from the old connection: nothing outstanding now
        self.assertIs(h.ep.state, S.RECOVER)
        h.connect()
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0 - 100)
        self.assertEqual(h.take(), [sendState(S.RECOVER, T0 - 1000), ("sendUpdateRequest",)])
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.RECOVER_WAIT)

    def test_recoverAnyOtherStateRequests(self) -> None:
        """8.5.2: every partner state but the conflict ones gets an UPDREQ."""
        for theirs in PARTNER_STATES:
            h = inState(S.RECOVER)
            h.partner(theirs)
            if theirs in (S.POTENTIAL_CONFLICT, S.RESOLUTION_INTERRUPTED, S.CONFLICT_DONE):
                self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
            else:
                self.assertIs(h.ep.state, S.RECOVER)
                self.assertEqual(h.take(), [("sendUpdateRequest",)])

    def test_recoverToPotentialConflict(self) -> None:
        """8.5.2: partner in a conflict state: POTENTIAL-CONFLICT; only the primary asks."""
        h = inState(S.RECOVER)
        h.partner(S.CONFLICT_DONE)
        self.assertEqual(
            h.take(),
            [
                persist(S.POTENTIAL_CONFLICT, T0 + STARTUP),
                sendState(S.POTENTIAL_CONFLICT, T0 + STARTUP),
                ("sendUpdateRequest",),
            ],
        )
        h = inState(S.RECOVER, Role.SECONDARY)
        h.partner(S.RESOLUTION_INTERRUPTED)
        self.assertEqual(
            h.take(),
            [
                persist(S.POTENTIAL_CONFLICT, T0 + STARTUP),
                sendState(S.POTENTIAL_CONFLICT, T0 + STARTUP),
            ],
        )

    def test_strayUpdateDone(self) -> None:
        """An UPDDONE we did not ask for changes nothing, and is logged."""
        h = inState(S.RECOVER)
        with capturedLogs() as events:
            h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.RECOVER)
        self.assertEqual(h.take(), [])
        self.assertTrue(any("no update request" in e["log_format"] for e in events))

    def test_recoverWaitDeadlineFromLastOperation(self) -> None:
        """
        8.6.2: RECOVER-WAIT ends MCLT after the server went down (the last
        recorded operation, plus the recording interval and skew).
        """
        last = T0 - 1000
        h = Harness(record=stored(S.RECOVER, T0 - 900, last_operation=last), recordInterval=60.0)
        h.ep.start()
        h.clock.advance(STARTUP)
        h.connect()
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0 - 900)
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        until = last + 60 + 5 + MCLT
        self.assertEqual(h.store.stored().recover_wait_until, until)
        self.assertEqual(h.ep.status().recover_wait_until, until)
        h.take()
        h.clock.advance(until - h.clock.seconds() - 1)
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        h.clock.advance(1)
        self.assertIs(h.ep.state, S.RECOVER_DONE)

    def test_recoverWaitDeadlineStoredInterval(self) -> None:
        """
        8.6.2: the RECOVER-WAIT deadline bounds the last recorded operation
        with the interval stored with it (5 s), whatever is configured now.
        """
        last = T0 - 1000
        record = stored(S.RECOVER, T0 - 900, last_operation=last, record_interval=5.0)
        h = Harness(record=record, recordInterval=60.0)
        h.ep.start()
        h.clock.advance(STARTUP)
        h.connect()
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0 - 900)
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        self.assertEqual(h.store.stored().recover_wait_until, last + 5 + 5 + MCLT)

    def test_recoverWaitIgnoresPartnerAndCommunications(self) -> None:
        """8.6.2: partner states and lost communications do not move RECOVER-WAIT."""
        h = inState(S.RECOVER_WAIT)
        for theirs in PARTNER_STATES:
            h.partner(theirs)
        h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        self.assertEqual(h.take(), [])
        h.clock.advance(10 * MCLT)
        self.assertIs(h.ep.state, S.RECOVER_DONE)
        self.assertEqual(h.take(), [persist(S.RECOVER_DONE, h.clock.seconds())])

    def test_recoverWaitSurvivesRestart(self) -> None:
        """A restart in RECOVER-WAIT keeps the stored deadline."""
        h = Harness(record=stored(S.RECOVER_WAIT, T0 - 100, recover_wait_until=T0 + 500))
        h.ep.start()
        h.clock.advance(STARTUP)
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        h.clock.advance(500 - STARTUP - 1)
        self.assertIs(h.ep.state, S.RECOVER_WAIT)
        h.clock.advance(1)
        self.assertIs(h.ep.state, S.RECOVER_DONE)

    def test_recoverWaitOverdue(self) -> None:
        """A deadline already past ends the wait at once."""
        h = Harness(record=stored(S.RECOVER_WAIT, T0 - 9000, recover_wait_until=T0 - 1))
        h.ep.start()
        h.clock.advance(STARTUP)
        self.assertIs(h.ep.state, S.RECOVER_DONE)
        self.assertEqual(
            h.take(),
            [persist(S.RECOVER_WAIT, T0 - 9000), persist(S.RECOVER_DONE, T0 + STARTUP)],
        )

    def test_recoverDone(self) -> None:
        """8.7.2, the whole row."""
        expected = {
            S.NORMAL: S.NORMAL,
            S.RECOVER_DONE: S.NORMAL,
            S.RECOVER: S.COMMUNICATIONS_INTERRUPTED,
            S.RECOVER_WAIT: S.COMMUNICATIONS_INTERRUPTED,
            S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
        }
        for theirs in PARTNER_STATES:
            h = inState(S.RECOVER_DONE, Role.SECONDARY)
            h.partner(theirs)
            self.assertIs(h.ep.state, expected.get(theirs, S.RECOVER_DONE), theirs)
        h = inState(S.RECOVER_DONE, Role.SECONDARY)
        h.partner(S.NORMAL, T0)
        self.assertEqual(
            h.take(),
            [
                persist(S.NORMAL, T0 + STARTUP),
                sendState(S.NORMAL, T0 + STARTUP),
                ("sendUnackedUpdates",),
                ("sendPoolRequest",),
            ],
        )
        h = inState(S.RECOVER_DONE)
        h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.RECOVER_DONE)
        self.assertEqual(h.take(), [])


class NormalTests(SynchronousTestCase):
    """Section 8.8, NORMAL."""

    def test_entering(self) -> None:
        """8.8: entering NORMAL flushes unacked updates; the secondary then sends POOLREQ."""
        h = Harness(Role.SECONDARY, stored(S.COMMUNICATIONS_INTERRUPTED))
        h.ep.start()
        h.clock.advance(STARTUP)
        h.connect()
        h.take()
        h.partner(S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(
            h.take(),
            [
                persist(S.NORMAL, T0 + STARTUP),
                sendState(S.NORMAL, T0 + STARTUP),
                ("sendUnackedUpdates",),
                ("sendPoolRequest",),
            ],
        )
        self.assertIs(h.ep.service, Service.RENEW_RESPONSIVE)

    def test_poolRequestAfterUnackedUpdates(self) -> None:
        """
        8.8: the secondary's POOLREQ waits until its unacked updates are all
        sent and acked, and is not sent if NORMAL or the connection ended
        meanwhile.
        """
        for lose in (False, True):
            h = inState(S.COMMUNICATIONS_INTERRUPTED, Role.SECONDARY)
            h.peer.hold.add("sendUnackedUpdates")
            h.partner(S.NORMAL)
            now = T0 + STARTUP
            self.assertEqual(
                h.take(),
                [persist(S.NORMAL, now), sendState(S.NORMAL, now), ("sendUnackedUpdates",)],
            )
            if lose:
                h.ep.communicationsLost()
                h.take()
            [(name, d)] = h.peer.held
            d.callback(None)
            self.assertEqual(h.take(), [] if lose else [("sendPoolRequest",)])

    def test_communicationsLost(self) -> None:
        """8.8.2: NORMAL -> COMMUNICATIONS-INTERRUPTED, stored, not sent, with an alarm."""
        h = inState(S.NORMAL)
        h.clock.advance(5)
        with capturedLogs() as events:
            h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(h.take(), [persist(S.COMMUNICATIONS_INTERRUPTED, T0 + STARTUP + 5)])
        self.assertTrue(
            any(e["log_level"].name == "warn" and "unreachable" in e["log_format"] for e in events)
        )
        self.assertFalse(h.ep.communicating)
        h.ep.communicationsLost()
        self.assertEqual(h.take(), [])

    def test_partnerStates(self) -> None:
        """8.8.2, the whole row: an unexpected partner state goes via COMMUNICATIONS-INTERRUPTED."""
        expected = {
            S.PARTNER_DOWN: S.POTENTIAL_CONFLICT,
            S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
            S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
            S.RECOVER: S.COMMUNICATIONS_INTERRUPTED,
            S.RECOVER_WAIT: S.COMMUNICATIONS_INTERRUPTED,
        }
        for theirs in PARTNER_STATES:
            h = inState(S.NORMAL)
            h.partner(theirs)
            self.assertIs(h.ep.state, expected.get(theirs, S.NORMAL), theirs)

    def test_operatorPartnerDown(self) -> None:
        """8.8.2: the operator's command: PARTNER-DOWN, announced with its time."""
        h = inState(S.NORMAL)
        self.assertTrue(h.ep.operatorPartnerDown())
        now = T0 + STARTUP
        self.assertEqual(
            h.take(),
            [persist(S.PARTNER_DOWN, now), sendState(S.PARTNER_DOWN, now, partner_down_time=now)],
        )
        self.assertTrue(h.ep.operatorPartnerDown())
        self.assertEqual(h.take(), [])

    def test_partnerPausing(self) -> None:
        """A partner announcing PAUSED or SHUTDOWN counts as communications lost, not partner-down."""
        for leaving in (S.PAUSED, S.SHUTDOWN):
            h = inState(S.NORMAL)
            h.partner(leaving)
            self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
            now = T0 + STARTUP
            self.assertEqual(
                h.take(),
                [
                    persist(S.COMMUNICATIONS_INTERRUPTED, now),
                    sendState(S.COMMUNICATIONS_INTERRUPTED, now),
                ],
            )
            self.assertIs(h.ep.partnerState, leaving)


class CommunicationsInterruptedTests(SynchronousTestCase):
    """Section 8.9."""

    def test_partnerStates(self) -> None:
        """8.9.2, the whole row."""
        expected = {
            S.NORMAL: S.NORMAL,
            S.COMMUNICATIONS_INTERRUPTED: S.NORMAL,
            S.RECOVER_DONE: S.NORMAL,
            S.PARTNER_DOWN: S.POTENTIAL_CONFLICT,
            S.POTENTIAL_CONFLICT: S.POTENTIAL_CONFLICT,
            S.CONFLICT_DONE: S.POTENTIAL_CONFLICT,
            S.RESOLUTION_INTERRUPTED: S.POTENTIAL_CONFLICT,
        }
        for role in Role:
            for theirs in PARTNER_STATES:
                h = inState(S.COMMUNICATIONS_INTERRUPTED, role)
                h.partner(theirs)
                want = expected.get(theirs, S.COMMUNICATIONS_INTERRUPTED)
                self.assertIs(h.ep.state, want, (role, theirs))

    def test_respondsToAll(self) -> None:
        """8.9.1: responsive, both roles."""
        for role in Role:
            self.assertIs(
                inState(S.COMMUNICATIONS_INTERRUPTED, role).ep.service, Service.RESPONSIVE
            )

    def test_autoPartnerDownOffByDefault(self) -> None:
        """No auto-partner-down unless configured."""
        h = inState(S.NORMAL)
        h.ep.communicationsLost()
        h.clock.advance(365 * 86400)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertIsNone(h.ep.status().auto_partner_down_at)

    def test_autoPartnerDown(self) -> None:
        """8.9.2: the auto-partner-down timer, counted from entering the state."""
        h = inState(S.NORMAL, autoPartnerDown=600.0)
        h.ep.communicationsLost()
        entered = h.clock.seconds()
        self.assertEqual(h.ep.status().auto_partner_down_at, entered + 600)
        h.take()
        h.clock.advance(599)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        with capturedLogs() as events:
            h.clock.advance(1)
        self.assertIs(h.ep.state, S.PARTNER_DOWN)
        self.assertEqual(h.take(), [persist(S.PARTNER_DOWN, entered + 600)])
        self.assertTrue(any("auto-partner-down" in e["log_format"] for e in events))

    def test_autoPartnerDownCancelled(self) -> None:
        """Leaving COMMUNICATIONS-INTERRUPTED stops the timer."""
        h = inState(S.NORMAL, autoPartnerDown=600.0)
        h.ep.communicationsLost()
        h.connect()
        h.partner(S.NORMAL)
        h.clock.advance(601)
        self.assertIs(h.ep.state, S.NORMAL)

    def test_autoPartnerDownAfterRestart(self) -> None:
        """Resumed COMMUNICATIONS-INTERRUPTED counts from its stored start."""
        h = Harness(record=stored(S.COMMUNICATIONS_INTERRUPTED, T0 - 590), autoPartnerDown=600.0)
        h.ep.start()
        h.clock.advance(STARTUP)
        self.assertIs(h.ep.state, S.PARTNER_DOWN)
        self.assertEqual(
            h.take(),
            [
                persist(S.COMMUNICATIONS_INTERRUPTED, T0 - 590),
                persist(S.PARTNER_DOWN, T0 + STARTUP),
            ],
        )

    def test_operatorPartnerDown(self) -> None:
        """8.9.2: the external command."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED, connected=False)
        self.assertTrue(h.ep.operatorPartnerDown())
        self.assertEqual(h.take(), [persist(S.PARTNER_DOWN, T0 + STARTUP)])


class PartnerDownTests(SynchronousTestCase):
    """Section 8.4."""

    def test_partnerStates(self) -> None:
        """8.4.2, the whole row."""
        for theirs in PARTNER_STATES:
            h = inState(S.PARTNER_DOWN)
            h.partner(theirs)
            if theirs in (S.RECOVER, S.RECOVER_WAIT):
                want = S.PARTNER_DOWN
            elif theirs is S.RECOVER_DONE:
                want = S.NORMAL
            else:
                want = S.POTENTIAL_CONFLICT
            self.assertIs(h.ep.state, want, theirs)

    def test_responsive(self) -> None:
        """8.4.1: responsive, both roles; communications loss changes nothing."""
        for role in Role:
            h = inState(S.PARTNER_DOWN, role)
            self.assertIs(h.ep.service, Service.RESPONSIVE)
            h.ep.communicationsLost()
            self.assertIs(h.ep.state, S.PARTNER_DOWN)
            self.assertEqual(h.take(), [])

    def test_announcesPartnerDownTime(self) -> None:
        """Connected in PARTNER-DOWN, the STATE carries the partner-down time (6.3)."""
        h = inState(S.PARTNER_DOWN, connected=False)
        h.connect()
        self.assertEqual(
            h.take(),
            [sendState(S.PARTNER_DOWN, T0 - 1000, partner_down_time=T0 - 1000)],
        )


class PotentialConflictTests(SynchronousTestCase):
    """Sections 8.10, 8.11, 8.12."""

    def test_primaryResolves(self) -> None:
        """
        8.10: the primary asks UPDREQ on entry; UPDDONE -> CONFLICT-DONE;
        the secondary's NORMAL -> NORMAL (8.12.2).
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.partner(S.PARTNER_DOWN)
        now = T0 + STARTUP
        self.assertEqual(
            h.take(),
            [
                persist(S.POTENTIAL_CONFLICT, now),
                sendState(S.POTENTIAL_CONFLICT, now),
                ("sendUpdateRequest",),
            ],
        )
        self.assertIs(h.ep.service, Service.UNRESPONSIVE)
        for theirs in PARTNER_STATES:
            h.partner(theirs)
            self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take(), [])
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.CONFLICT_DONE)
        self.assertIs(h.ep.service, Service.RESPONSIVE)
        self.assertEqual(h.take(), [persist(S.CONFLICT_DONE, now), sendState(S.CONFLICT_DONE, now)])
        for theirs in PARTNER_STATES:
            if theirs is not S.NORMAL:
                h.partner(theirs)
                self.assertIs(h.ep.state, S.CONFLICT_DONE)
        h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.CONFLICT_DONE)
        h.connect()
        h.partner(S.NORMAL)
        self.assertIs(h.ep.state, S.NORMAL)

    def test_secondaryResolves(self) -> None:
        """
        8.10: the secondary waits; when the primary is CONFLICT-DONE it asks
        UPDREQ; UPDDONE -> NORMAL.
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED, Role.SECONDARY)
        h.partner(S.POTENTIAL_CONFLICT)
        now = T0 + STARTUP
        self.assertEqual(
            h.take(), [persist(S.POTENTIAL_CONFLICT, now), sendState(S.POTENTIAL_CONFLICT, now)]
        )
        h.ep.updateDoneReceived()  # not asked for
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        h.partner(S.CONFLICT_DONE)
        h.partner(S.CONFLICT_DONE)
        self.assertEqual(h.take(), [("sendUpdateRequest",)])
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(
            h.take(),
            [
                persist(S.NORMAL, now),
                sendState(S.NORMAL, now),
                ("sendUnackedUpdates",),
                ("sendPoolRequest",),
            ],
        )

    def test_secondaryResolvesTwiceOnOneConnection(self) -> None:
        """
        A second POTENTIAL-CONFLICT on the same connection: the secondary
        asks UPDREQ again when the primary is CONFLICT-DONE (8.10.2); its
        first resolution's request does not count for the second (chaos
        finding 2).
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED, Role.SECONDARY)
        now = T0 + STARTUP
        for _ in range(2):
            h.partner(S.PARTNER_DOWN, partnerDownTime=now)
            h.partner(S.POTENTIAL_CONFLICT)
            h.partner(S.CONFLICT_DONE)
            self.assertEqual(
                h.take(),
                [
                    persist(S.POTENTIAL_CONFLICT, now),
                    sendState(S.POTENTIAL_CONFLICT, now),
                    ("sendUpdateRequest",),
                ],
            )
            h.ep.updateDoneReceived()
            self.assertIs(h.ep.state, S.NORMAL)
            h.partner(S.NORMAL)
            self.assertEqual(
                h.take(),
                [
                    persist(S.NORMAL, now),
                    sendState(S.NORMAL, now),
                    ("sendUnackedUpdates",),
                    ("sendPoolRequest",),
                ],
            )

    def test_primaryResolvesTwiceOnOneConnection(self) -> None:
        """The primary asks UPDREQ on each entry into POTENTIAL-CONFLICT."""
        h = inState(S.NORMAL)
        now = T0 + STARTUP
        for _ in range(2):
            h.partner(S.PARTNER_DOWN, partnerDownTime=now)
            self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
            self.assertEqual(h.take()[-1], ("sendUpdateRequest",))
            h.ep.updateDoneReceived()
            self.assertIs(h.ep.state, S.CONFLICT_DONE)
            h.partner(S.NORMAL)
            self.assertIs(h.ep.state, S.NORMAL)
            h.take()

    def test_partnerStatesWhileWriting(self) -> None:
        """
        No lost wakeup: the partner's STATEs arriving back to back while our
        own state's write is still in flight are reacted to against the
        state we are entering (the machine decides at once; only the
        write and the sends wait), and the sends follow the write.
        """
        h = inState(S.NORMAL, Role.SECONDARY)
        now = T0 + STARTUP
        h.store.hold = True
        h.partner(S.PARTNER_DOWN, partnerDownTime=now)
        h.partner(S.POTENTIAL_CONFLICT)
        h.partner(S.CONFLICT_DONE)
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take(), [persist(S.POTENTIAL_CONFLICT, now)])
        h.store.release()
        self.assertEqual(h.take(), [sendState(S.POTENTIAL_CONFLICT, now), ("sendUpdateRequest",)])
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.NORMAL)

        # The primary: the secondary's NORMAL arrives before CONFLICT-DONE
        # is stored.
        h = inState(S.POTENTIAL_CONFLICT)
        h.store.hold = True
        h.ep.updateDoneReceived()
        h.partner(S.NORMAL)
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(h.take(), [persist(S.CONFLICT_DONE, now)])
        h.store.release()
        self.assertEqual(h.take(), [sendState(S.CONFLICT_DONE, now), persist(S.NORMAL, now)])
        h.store.release()
        self.assertEqual(h.take(), [sendState(S.NORMAL, now), ("sendUnackedUpdates",)])
        self.successResultOf(h.ep.whenIdle())

    def test_updateDoneAnswersLastRequest(self) -> None:
        """
        RECOVER's UPDREQ is still unanswered when the partner's state takes
        us to POTENTIAL-CONFLICT, which asks again: the first UPDDONE moves
        nothing; the one answering the last request moves the primary to
        CONFLICT-DONE; one more is stray.
        """
        h = inState(S.RECOVER)
        h.partner(S.NORMAL)
        self.assertEqual(h.take(), [("sendUpdateRequest",)])
        h.partner(S.CONFLICT_DONE)
        self.assertEqual(h.take()[-1], ("sendUpdateRequest",))
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take(), [])
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.CONFLICT_DONE)
        with capturedLogs() as events:
            h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.CONFLICT_DONE)
        self.assertTrue(any("no update request" in e["log_format"] for e in events))

    def test_catchUpOutstandingThenConflict(self) -> None:
        """
        A fresh server in PARTNER-DOWN catches up with UPDREQALL; it is not
        asked again while it is out, whatever the serving state; entering
        POTENTIAL-CONFLICT meanwhile asks UPDREQ only (the UPDREQALL brings
        everything).  The UPDDONEs do not say which request they answer
        (a flush can end before a running UPDREQALL): the first moves
        nothing, the last ends the conflict and marks the database
        complete.
        """
        h = Harness()
        h.ep.start()
        self.assertTrue(h.ep.operatorPartnerDown())
        h.connect()
        h.partner(S.RECOVER_DONE, T0 - 5)
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(h.take()[-1], ("sendUpdateRequestAll",))
        h.partner(S.RECOVER)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        h.partner(S.NORMAL)
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertNotIn(("sendUpdateRequestAll",), h.take())
        h.partner(S.PARTNER_DOWN, partnerDownTime=T0)
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take()[-1], ("sendUpdateRequest",))
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take(), [])
        self.assertFalse(h.ep.synced)
        h.ep.updateDoneReceived()
        self.assertIs(h.ep.state, S.CONFLICT_DONE)
        self.assertEqual(h.take(), [persist(S.CONFLICT_DONE, T0), sendState(S.CONFLICT_DONE, T0)])
        self.assertTrue(h.store.stored().synced)

    def test_resolutionInterrupted(self) -> None:
        """
        8.10.2: communications fail -> RESOLUTION-INTERRUPTED (alarm,
        responsive); 8.11.2: restored -> POTENTIAL-CONFLICT whatever the
        partner's state; the operator may declare partner-down.
        """
        h = inState(S.POTENTIAL_CONFLICT)
        with capturedLogs() as events:
            h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.RESOLUTION_INTERRUPTED)
        self.assertIs(h.ep.service, Service.RESPONSIVE)
        self.assertEqual(h.take(), [persist(S.RESOLUTION_INTERRUPTED, T0 + STARTUP)])
        self.assertTrue(any(e["log_level"].name == "error" for e in events))
        for theirs in PARTNER_STATES:
            h = inState(S.RESOLUTION_INTERRUPTED)
            h.partner(theirs)
            self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT, theirs)
        h = inState(S.RESOLUTION_INTERRUPTED, connected=False)
        self.assertTrue(h.ep.operatorPartnerDown())
        self.assertIs(h.ep.state, S.PARTNER_DOWN)

    def test_operatorRefused(self) -> None:
        """Partner-down is refused in POTENTIAL-CONFLICT and CONFLICT-DONE."""
        for state in (S.POTENTIAL_CONFLICT, S.CONFLICT_DONE):
            h = inState(state)
            self.assertFalse(h.ep.operatorPartnerDown())
            self.assertIs(h.ep.state, state)
            self.assertEqual(h.take(), [])

    def test_operatorTable(self) -> None:
        """Partner-down is obeyed exactly in L{OPERATOR_PARTNER_DOWN}."""
        for state in (
            S.NORMAL,
            S.COMMUNICATIONS_INTERRUPTED,
            S.RESOLUTION_INTERRUPTED,
            S.RECOVER,
            S.RECOVER_WAIT,
            S.RECOVER_DONE,
            S.POTENTIAL_CONFLICT,
            S.CONFLICT_DONE,
        ):
            h = inState(state)
            self.assertEqual(h.ep.operatorPartnerDown(), state in OPERATOR_PARTNER_DOWN)
        h = Harness()
        h.ep.start()
        self.assertTrue(h.ep.operatorPartnerDown())
        self.assertFalse(Harness().ep.operatorPartnerDown())


class TableTests(SynchronousTestCase):
    """Every (our state, partner state) pair does what the table says."""

    def test_reactions(self) -> None:
        """L{PARTNER_STATE_REACTIONS}: listed pairs move, others stay."""
        for ours, row in PARTNER_STATE_REACTIONS.items():
            for role in Role:
                if ours is S.CONFLICT_DONE and role is Role.SECONDARY:
                    continue
                for theirs in PARTNER_STATES:
                    h = inState(ours, role)
                    h.partner(theirs)
                    self.assertIs(h.ep.state, row.get(theirs, ours), (ours, role, theirs))

    def test_communicationsLost(self) -> None:
        """L{COMMUNICATIONS_LOST}: listed states move, others stay."""
        for ours in PARTNER_STATE_REACTIONS:
            h = inState(ours)
            h.ep.communicationsLost()
            self.assertIs(h.ep.state, COMMUNICATIONS_LOST.get(ours, ours), ours)

    def test_service(self) -> None:
        """What each state serves, by role (RFC 8156 Figure 5)."""
        for ours in PARTNER_STATE_REACTIONS:
            for role in Role:
                if ours is S.CONFLICT_DONE and role is Role.SECONDARY:
                    continue
                service = inState(ours, role).ep.service
                if ours is S.NORMAL:
                    want = Service.RESPONSIVE if role is Role.PRIMARY else Service.RENEW_RESPONSIVE
                elif ours is S.RECOVER_DONE:
                    want = Service.RENEW_RESPONSIVE
                elif ours in SERVING:
                    want = Service.RESPONSIVE
                else:
                    want = Service.UNRESPONSIVE
                self.assertIs(service, want, (ours, role))


class DurabilityTests(SynchronousTestCase):
    """The state is durable before it is announced."""

    def test_announceWaitsForWrite(self) -> None:
        """Nothing is sent about a state until its write has fired."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.hold = True
        h.partner(S.NORMAL)
        now = T0 + STARTUP
        self.assertIs(h.ep.state, S.NORMAL)
        self.assertEqual(h.take(), [persist(S.NORMAL, now)])
        idle = h.ep.whenIdle()
        self.assertNoResult(idle)
        h.store.release()
        self.assertEqual(h.take(), [sendState(S.NORMAL, now), ("sendUnackedUpdates",)])
        self.successResultOf(idle)

    def test_writesInOrder(self) -> None:
        """Two transitions: second write only after the first fired; sends in order."""
        h = inState(S.NORMAL)
        h.store.hold = True
        h.ep.operatorPartnerDown()
        now = T0 + STARTUP
        h.partner(S.POTENTIAL_CONFLICT)
        self.assertEqual(h.take(), [persist(S.PARTNER_DOWN, now)])
        h.store.release()
        self.assertEqual(
            h.take(),
            [
                sendState(S.PARTNER_DOWN, now, partner_down_time=now),
                persist(S.POTENTIAL_CONFLICT, now),
            ],
        )
        h.store.release()
        self.assertEqual(h.take(), [sendState(S.POTENTIAL_CONFLICT, now), ("sendUpdateRequest",)])

    def test_connectionLostWhileWriting(self) -> None:
        """A send queued for a connection lost meanwhile is dropped."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.hold = True
        h.partner(S.NORMAL)
        h.ep.communicationsLost()
        now = T0 + STARTUP
        self.assertEqual(h.take(), [persist(S.NORMAL, now)])
        h.store.release()
        self.assertEqual(h.take(), [persist(S.COMMUNICATIONS_INTERRUPTED, now)])
        h.store.release()
        self.assertEqual(h.take(), [])
        self.successResultOf(h.ep.whenIdle())

    def test_failedWriteSendsNothing(self) -> None:
        """
        After a failed write nothing is announced: the write is tried again
        after a second, and what was queued behind it (later transitions
        included) follows once it is stored.
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.failNext = True
        now = T0 + STARTUP
        with capturedLogs() as events:
            h.partner(S.NORMAL)
        self.assertEqual(h.take(), [persist(S.NORMAL, now)])
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.flushLoggedErrors(OSError)
        h.ep.operatorPartnerDown()
        self.assertEqual(h.take(), [])
        idle = h.ep.whenIdle()
        h.clock.advance(0.999)
        self.assertEqual(h.take(), [])
        with capturedLogs() as events:
            h.clock.advance(0.001)
        self.assertEqual(
            h.take(),
            [
                persist(S.NORMAL, now),
                sendState(S.NORMAL, now),
                ("sendUnackedUpdates",),
                persist(S.PARTNER_DOWN, now),
                sendState(S.PARTNER_DOWN, now, partner_down_time=now),
            ],
        )
        self.assertTrue(any("stored again" in (e.get("log_format") or "") for e in events))
        self.successResultOf(idle)

    def test_writeRetryBacksOff(self) -> None:
        """A write that keeps failing is tried 1, 2, 4... seconds apart, at most 60."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.failures = 8
        now = T0 + STARTUP
        h.partner(S.NORMAL)
        self.flushLoggedErrors(OSError)
        attempts = [h.clock.seconds()]
        idle = h.ep.whenIdle()
        for _ in range(300):
            h.clock.advance(1)
            if h.take():
                attempts.append(h.clock.seconds())
            if idle.called:
                break
        self.flushLoggedErrors(OSError)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        self.assertEqual(gaps, [1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(h.store.stored().state, S.NORMAL)
        self.assertEqual(h.store.stored().start_time, now)
        self.successResultOf(h.ep.whenIdle())
        # Stored at last: the next failure starts at one second again.
        h.store.failNext = True
        h.ep.operatorPartnerDown()
        self.flushLoggedErrors(OSError)
        h.take()
        h.clock.advance(1)
        self.assertEqual(h.take()[0][:2], ("persist", S.PARTNER_DOWN))

    def test_stopDoesNotWaitForDeadDisk(self) -> None:
        """
        Stopping while a write waits for its retry tries it once more, and
        then no more: the stop completes, with nothing announced that was
        not stored.
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.failures = 1000
        h.partner(S.NORMAL)
        h.take()
        stopped = h.ep.stop()
        self.successResultOf(stopped)
        self.flushLoggedErrors(OSError)
        effects = h.take()
        self.assertEqual([e[0] for e in effects], ["persist", "persist"])
        self.assertEqual(effects[1][1], S.PAUSED)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopAfterDiskRecovers(self) -> None:
        """
        Stopping while a write waits, with the disk back: the write, its
        announcements and then the stop's are stored and sent in order.
        """
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.store.failNext = True
        now = T0 + STARTUP
        h.partner(S.NORMAL)
        self.flushLoggedErrors(OSError)
        h.take()
        self.successResultOf(h.ep.stop())
        self.assertEqual(
            h.take(),
            [
                persist(S.NORMAL, now),
                sendState(S.NORMAL, now),
                ("sendUnackedUpdates",),
                persist(S.PAUSED, now),
                sendState(S.PAUSED, now),
            ],
        )

    def test_retryDelaysChecked(self) -> None:
        """Retry delays must be positive, the longest no shorter than the first."""
        for first, longest in [(0, 60), (-1, 60), (10, 5)]:
            with self.assertRaises(ValueError):
                Harness(writeRetryDelay=first, maxWriteRetryDelay=longest)

    def test_failedSendLogged(self) -> None:
        """A send that fails is logged, and the queue goes on."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.peer.failure = ConnectionError("reset")
        with capturedLogs() as events:
            h.partner(S.NORMAL)
        self.assertEqual(len([e for e in events if e.get("log_failure") is not None]), 2)
        self.successResultOf(h.ep.whenIdle())
        self.flushLoggedErrors(ConnectionError)

    def test_recordContents(self) -> None:
        """The stored record holds the RFC 8.2 items."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED)
        h.partner(S.NORMAL, T0 + 3)
        record = h.store.stored()
        self.assertEqual(
            record,
            FailoverRecord(
                state=S.NORMAL,
                start_time=T0 + STARTUP,
                previous_state=S.COMMUNICATIONS_INTERRUPTED,
                previous_start_time=T0 - 1000,
                partner_state=S.NORMAL,
                partner_start_time=T0 + 3,
                last_operation=T0 + STARTUP,
                has_state=True,
                synced=True,
                record_interval=QUIET,
            ),
        )
        self.assertEqual(h.ep.record(), record)

    def test_operationRecorded(self) -> None:
        """While serving, the time of operation is stored every interval; not otherwise."""
        h = inState(S.NORMAL, recordInterval=30.0)
        h.clock.advance(30)
        effects = [e for e in h.take() if e != ("sendContact",)]
        self.assertEqual(effects, [persist(S.NORMAL, T0 + STARTUP)])
        self.assertEqual(h.store.stored().last_operation, h.clock.seconds())
        self.assertEqual(h.store.stored().record_interval, 30.0)
        h = inState(S.RECOVER, recordInterval=30.0)
        h.clock.advance(3000)
        self.assertEqual(h.take(), [])


class ConnectionTests(SynchronousTestCase):
    """Section 6: connections, keepalive and CONTACT."""

    def test_keepalive(self) -> None:
        """
        6.6: silence for the keepalive time drops the connection (the
        machine forgets it first) and takes the communications-failed
        transition; any message resets the timer.
        """
        h = inState(S.NORMAL, keepaliveTime=60.0)
        peer = h.peer
        h.clock.advance(59)
        h.ep.messageReceived()
        h.clock.advance(59)
        h.partner(S.NORMAL)
        h.clock.advance(59)
        self.assertIs(h.ep.state, S.NORMAL)
        h.take()
        h.clock.advance(1)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(peer.disconnected, "keepalive timeout")
        effects = [e for e in h.take() if e != ("sendContact",)]
        now = h.clock.seconds()
        self.assertEqual(
            effects,
            [persist(S.COMMUNICATIONS_INTERRUPTED, now), ("disconnect", "keepalive timeout")],
        )
        h.ep.communicationsLost()  # the protocol's connectionLost: nothing more
        self.assertEqual(h.take(), [])

    def test_contact(self) -> None:
        """CONTACT every partner keepalive / 4; stops with the connection."""
        h = inState(S.NORMAL, connected=False, recordInterval=1000.0)
        h.connect(partnerKeepalive=40.0)
        h.take()
        h.clock.advance(10)
        self.assertEqual(h.take(), [("sendContact",)])
        h.clock.advance(10)
        self.assertEqual(h.take(), [("sendContact",)])
        h.ep.communicationsLost()
        h.take()
        h.clock.advance(100)
        self.assertEqual(h.take(), [])

    def test_reconnectReplacesConnection(self) -> None:
        """A new connection while one is up: the old one counts as lost."""
        h = inState(S.NORMAL)
        old = h.peer
        new = h.connect()
        now = T0 + STARTUP
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(
            h.take(),
            [
                persist(S.COMMUNICATIONS_INTERRUPTED, now),
                sendState(S.COMMUNICATIONS_INTERRUPTED, now),
            ],
        )
        self.assertIsNot(old, new)

    def test_stateWithoutConnection(self) -> None:
        """A STATE with no connection is ignored."""
        h = inState(S.COMMUNICATIONS_INTERRUPTED, connected=False)
        h.partner(S.NORMAL)
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        h.ep.updateDoneReceived()
        h.ep.messageReceived()
        self.assertEqual(h.take(), [])

    def test_status(self) -> None:
        """The status snapshot."""
        h = inState(S.NORMAL, Role.SECONDARY)
        h.partner(S.NORMAL, T0 + 1)
        status = h.ep.status()
        self.assertEqual(
            (
                status.relationship,
                status.role,
                status.state,
                status.start_time,
                status.previous_state,
                status.service,
                status.communicating,
                status.partner_state,
                status.partner_start_time,
                status.partner_startup,
                status.partner_down_time,
                status.has_state,
                status.synced,
                status.mclt,
            ),
            (
                "rel",
                Role.SECONDARY,
                S.NORMAL,
                T0 + STARTUP,
                S.COMMUNICATIONS_INTERRUPTED,
                Service.RENEW_RESPONSIVE,
                True,
                S.NORMAL,
                T0 + 1,
                False,
                None,
                True,
                True,
                MCLT,
            ),
        )
        self.assertEqual(h.ep.partnerState, S.NORMAL)
        self.assertEqual(h.ep.partnerStartTimeOfState, T0 + 1)
        self.assertEqual(h.ep.metadataKey, KEY)

    def test_badParameters(self) -> None:
        """Nonsense times are refused."""
        clock = Clock()
        store = MemoryLeaseStore()
        for kw in ({"mclt": 0}, {"keepaliveTime": -1}, {"autoPartnerDown": -5.0}):
            self.assertRaises(ValueError, FailoverEndpoint, "r", Role.PRIMARY, clock, store, **kw)


class StopTests(SynchronousTestCase):
    """PAUSED and SHUTDOWN."""

    def test_pause(self) -> None:
        """C{stop()}: PAUSED stored (with the state to resume) and announced; timers stop."""
        h = inState(S.NORMAL, autoPartnerDown=60.0)
        d = h.ep.stop()
        self.successResultOf(d)
        now = T0 + STARTUP
        self.assertEqual(h.take(), [persist(S.PAUSED, now), sendState(S.PAUSED, now)])
        record = h.store.stored()
        self.assertEqual((record.previous_state, record.previous_start_time), (S.NORMAL, now))
        self.assertEqual(h.clock.getDelayedCalls(), [])
        # Everything after is ignored.
        h.partner(S.PARTNER_DOWN)
        h.ep.messageReceived()
        h.ep.communicationsLost()
        h.connect()
        self.assertFalse(h.ep.operatorPartnerDown())
        self.assertIs(h.ep.state, S.PAUSED)
        self.assertEqual(h.take(), [])
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.successResultOf(h.ep.stop())

    def test_shutdownAndRestart(self) -> None:
        """C{stop(shutdown=True)}: SHUTDOWN; a restart resumes (NORMAL -> COMMUNICATIONS-INTERRUPTED)."""
        h = inState(S.NORMAL)
        h.store.hold = True
        d = h.ep.stop(shutdown=True)
        self.assertNoResult(d)
        h.store.release()
        self.successResultOf(d)
        record = h.store.stored()
        self.assertIs(record.state, S.SHUTDOWN)
        again = Harness(record=record)
        again.ep.start()
        again.clock.advance(STARTUP)
        self.assertIs(again.ep.state, S.COMMUNICATIONS_INTERRUPTED)

    def test_stopInStartup(self) -> None:
        """Stopped in STARTUP: the state it would have resumed is kept."""
        h = Harness(record=stored(S.PARTNER_DOWN, T0 - 70))
        h.ep.start()
        self.successResultOf(h.ep.stop())
        record = h.store.stored()
        self.assertEqual(
            (record.state, record.previous_state, record.previous_start_time),
            (S.PAUSED, S.PARTNER_DOWN, T0 - 70),
        )
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopBeforeStart(self) -> None:
        """Stopping a never started endpoint writes nothing."""
        h = Harness()
        self.successResultOf(h.ep.stop())
        self.assertEqual(h.take(), [])
        h.ep.start()
        self.assertIs(h.ep.state, S.PAUSED)


WINDOW = 30.0


class PartnerTrafficTests(SynchronousTestCase):
    """L{PartnerTraffic}: the partial communication loss detector, with times passed in."""

    def test_takeover(self) -> None:
        """Enough missed messages, the first a window ago, the count flat: serving."""
        t = PartnerTraffic(WINDOW, threshold=3)
        self.assertIsNone(t.reported(10, T0))
        for dt in (1, 2, 3):
            t.missed(T0 + dt)
        self.assertIsNone(t.reported(10, T0 + 1 + WINDOW - 0.5))
        self.assertFalse(t.serving)
        self.assertIs(t.reported(10, T0 + 1 + WINDOW), True)
        self.assertEqual((t.serving, t.since), (True, T0 + 1 + WINDOW))
        # More flat reports change nothing; a grown count ends it.
        self.assertIsNone(t.reported(10, T0 + 100))
        self.assertIs(t.reported(11, T0 + 110), False)
        self.assertEqual((t.serving, t.since, t.missedCount, t.firstMissed), (False, None, 0, None))

    def test_threshold(self) -> None:
        """Fewer missed messages than the threshold: no takeover, however long."""
        t = PartnerTraffic(WINDOW, threshold=3)
        t.reported(0, T0)
        t.missed(T0 + 1)
        t.missed(T0 + 2)
        self.assertIsNone(t.reported(0, T0 + 10 * WINDOW))
        self.assertFalse(t.serving)

    def test_growingCount(self) -> None:
        """A count that grows forgets what was missed."""
        t = PartnerTraffic(WINDOW, threshold=1)
        t.reported(0, T0)
        t.missed(T0 + 1)
        self.assertIsNone(t.reported(1, T0 + 5))
        self.assertEqual((t.missedCount, t.firstMissed), (0, None))
        self.assertIsNone(t.reported(1, T0 + 5 + WINDOW))
        self.assertFalse(t.serving)

    def test_baseline(self) -> None:
        """
        Messages missed before the first report are not counted (the report
        may already include them); a lower count is a new baseline.
        """
        t = PartnerTraffic(WINDOW, threshold=1)
        t.missed(T0)
        self.assertIsNone(t.reported(5, T0 + WINDOW))
        self.assertIsNone(t.reported(5, T0 + 2 * WINDOW))
        self.assertFalse(t.serving)
        t.missed(T0 + 2 * WINDOW)
        self.assertIsNone(t.reported(2, T0 + 4 * WINDOW))
        self.assertEqual((t.count, t.missedCount), (2, 0))

    def test_notEligible(self) -> None:
        """Not eligible (not NORMAL): no takeover, the evidence kept."""
        t = PartnerTraffic(WINDOW, threshold=1)
        t.reported(0, T0)
        t.missed(T0)
        self.assertIsNone(t.reported(0, T0 + WINDOW, eligible=False))
        self.assertIs(t.reported(0, T0 + WINDOW + 1), True)

    def test_reset(self) -> None:
        """L{PartnerTraffic.reset} forgets everything and says whether it was serving."""
        t = PartnerTraffic(WINDOW, threshold=1)
        self.assertFalse(t.reset())
        t.reported(0, T0)
        t.missed(T0)
        t.reported(0, T0 + WINDOW)
        self.assertTrue(t.reset())
        self.assertEqual((t.count, t.serving, t.since, t.missedCount), (None, False, None, 0))

    def test_invalid(self) -> None:
        """A window or threshold that is not positive is an error."""
        self.assertRaises(ValueError, PartnerTraffic, 0.0)
        self.assertRaises(ValueError, PartnerTraffic, 10.0, 0)


class ServingForPartnerTests(SynchronousTestCase):
    """
    RFC 7031 section 4.7 on the endpoint: CONTACT's client count against the
    messages the policy refused for the partner.
    """

    def normal(self, role: Role = Role.SECONDARY) -> Harness:
        return inState(S.NORMAL, role, takeoverAfter=WINDOW, takeoverMessages=3)

    def contacts(self, h: Harness, count: int, seconds: float, every: float = 5.0) -> None:
        """The partner reports C{count} every C{every} seconds for C{seconds}."""
        elapsed = 0.0
        while elapsed < seconds:
            h.clock.advance(every)
            elapsed += every
            h.ep.clientsSeenReceived(count)

    def takeover(self, h: Harness) -> None:
        """Baseline, three missed messages, a flat count for the window."""
        h.ep.clientsSeenReceived(100)
        for _ in range(3):
            h.clock.advance(1)
            h.ep.clientMessageForPartner()
        self.contacts(h, 100, WINDOW)

    def test_takeoverAfterWindow(self) -> None:
        """
        Messages for the partner keep arriving while its count stays flat:
        after the window, serving for the partner, logged at warning, shown
        in the status; nothing is stored or sent.
        """
        h = self.normal()
        h.ep.clientsSeenReceived(100)
        for _ in range(3):
            h.clock.advance(1)
            h.ep.clientMessageForPartner()
        self.contacts(h, 100, WINDOW - 5)
        self.assertFalse(h.ep.servingForPartner)
        self.assertIs(h.ep.service, Service.RENEW_RESPONSIVE)
        with capturedLogs() as events:
            self.contacts(h, 100, 5)
        self.assertTrue(h.ep.servingForPartner)
        self.assertIs(h.ep.service, Service.RESPONSIVE_FOR_PARTNER)
        status = h.ep.status()
        self.assertTrue(status.serving_for_partner)
        self.assertEqual(status.serving_for_partner_since, h.clock.seconds())
        self.assertIs(status.service, Service.RESPONSIVE_FOR_PARTNER)
        self.assertIs(status.state, S.NORMAL)
        warnings = [e for e in events if e.get("failoverEvent") == "servingForPartner"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"].name, "warn")
        self.assertEqual(warnings[0]["missed"], 3)
        self.assertIn("no client message for 32 s while 3 ", formatEvent(warnings[0]))
        self.assertEqual(h.take(), [])

    def test_primaryToo(self) -> None:
        """The primary serves for a secondary that does not reach its clients."""
        h = self.normal(Role.PRIMARY)
        self.takeover(h)
        self.assertTrue(h.ep.servingForPartner)
        self.assertIs(h.ep.service, Service.RESPONSIVE_FOR_PARTNER)

    def test_noTakeoverWhilePartnerCounts(self) -> None:
        """The partner's count grows: it receives its clients' messages; no takeover."""
        h = self.normal()
        h.ep.clientsSeenReceived(100)
        count = 100
        for _ in range(20):
            h.clock.advance(5)
            h.ep.clientMessageForPartner()
            count += 1
            h.ep.clientsSeenReceived(count)
        self.assertFalse(h.ep.servingForPartner)
        self.assertFalse(h.ep.status().serving_for_partner)

    def test_noTakeoverWithoutTraffic(self) -> None:
        """No message for the partner reaches us either: a quiet network, no takeover."""
        h = self.normal()
        h.ep.clientsSeenReceived(100)
        self.contacts(h, 100, 10 * WINDOW)
        self.assertFalse(h.ep.servingForPartner)

    def test_leaveWhenPartnerCountsAgain(self) -> None:
        """Serving ends at the first report whose count grew, logged."""
        h = self.normal()
        self.takeover(h)
        self.assertTrue(h.ep.servingForPartner)
        with capturedLogs() as events:
            self.contacts(h, 101, 5)
        self.assertFalse(h.ep.servingForPartner)
        self.assertIs(h.ep.service, Service.RENEW_RESPONSIVE)
        self.assertIsNone(h.ep.status().serving_for_partner_since)
        self.assertEqual(
            [e["log_level"].name for e in events if e.get("failoverEvent")],
            ["warn"],
        )
        # And it can start again.
        for _ in range(3):
            h.ep.clientMessageForPartner()
        self.contacts(h, 101, WINDOW)
        self.assertTrue(h.ep.servingForPartner)

    def test_connectionLost(self) -> None:
        """
        A lost connection ends it (COMMUNICATIONS-INTERRUPTED serves
        everything anyway); a new connection starts from a new baseline.
        """
        h = self.normal()
        self.takeover(h)
        h.ep.communicationsLost()
        self.assertIs(h.ep.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertFalse(h.ep.servingForPartner)
        self.assertIsNone(h.ep.partnerTraffic.count)
        # Not counted without a connection.
        h.ep.clientMessageForPartner()
        h.ep.clientsSeenReceived(5)
        self.assertEqual((h.ep.partnerTraffic.count, h.ep.partnerTraffic.missedCount), (None, 0))

    def test_onlyInNormal(self) -> None:
        """Outside NORMAL nothing is counted, and the mode never starts."""
        for state in (S.COMMUNICATIONS_INTERRUPTED, S.POTENTIAL_CONFLICT, S.RECOVER_DONE):
            h = inState(state, Role.SECONDARY, takeoverAfter=WINDOW, takeoverMessages=1)
            if not h.ep.communicating:
                h.connect()
            h.ep.clientsSeenReceived(0)
            h.ep.clientMessageForPartner()
            self.contacts(h, 0, 2 * WINDOW)
            self.assertFalse(h.ep.servingForPartner, state)
            self.assertEqual(h.ep.partnerTraffic.missedCount, 0, state)

    def test_stateChangeEnds(self) -> None:
        """Leaving NORMAL (here for POTENTIAL-CONFLICT) ends it."""
        h = self.normal()
        self.takeover(h)
        h.partner(S.PARTNER_DOWN)
        self.assertIs(h.ep.state, S.POTENTIAL_CONFLICT)
        self.assertFalse(h.ep.servingForPartner)
        self.assertFalse(h.ep.partnerTraffic.serving)

    def test_defaultWindow(self) -> None:
        """The window defaults to the keepalive time (unreachable-after)."""
        h = Harness(Role.SECONDARY, keepaliveTime=60.0)
        self.assertEqual(h.ep.partnerTraffic.window, 60.0)
        self.assertEqual(h.ep.partnerTraffic.threshold, 3)


@implementer(IFailoverPeer)
class WiredPeer:
    """
    One direction of a connection between two endpoints of a L{Pair}: every
    message goes on the pair's wire, in order, and reaches the other
    endpoint only when the wire is pumped.  UPDREQ and UPDREQALL are
    answered as the AMP protocol does (the updates, then UPDDONE, here with
    nothing to send), on the same wire.
    """

    def __init__(self, pair: Pair, source: str, target: str) -> None:
        self.pair = pair
        self.source = source
        self.target = target

    def _put(self, name: str, deliver: Callable[[], None], *details: object) -> Deferred[None]:
        self.pair.wire.append(((self.source, name, *details), self.target, deliver))
        return succeed(None)

    def sendState(self, message: StateMessage) -> Deferred[None]:
        def deliver() -> None:
            self.pair[self.target].stateReceived(
                message.state,
                message.start_time,
                startup=message.startup,
                hasState=message.has_state,
                partnerDownTime=message.partner_down_time,
            )

        return self._put("state", deliver, message.state)

    def _request(self, name: str) -> Deferred[None]:
        answer = self.pair.peers[self.target]

        def deliver() -> None:
            self.pair[self.target].messageReceived()
            answer._put("updateDone", self.pair[self.source].updateDoneReceived)

        return self._put(name, deliver)

    def sendUpdateRequest(self) -> Deferred[None]:
        return self._request("updateRequest")

    def sendUpdateRequestAll(self) -> Deferred[None]:
        return self._request("updateRequestAll")

    def sendUnackedUpdates(self) -> Deferred[None]:
        return succeed(None)

    def sendPoolRequest(self) -> Deferred[None]:
        return self._put("poolRequest", self.pair[self.target].messageReceived)

    def sendContact(self) -> Deferred[None]:
        return self._put("contact", self.pair[self.target].messageReceived)

    def disconnect(self, reason: str) -> None:
        raise AssertionError("the pair's connection is never dropped: " + reason)


class Pair:
    """
    A primary and a secondary endpoint on one clock, each with its own
    L{RecordingStore}, connected to each other through L{WiredPeer}s.

    @ivar wire: messages sent and not yet delivered, in order:
        C{(description, target name, deliver)}.
    @ivar delivered: descriptions of the messages delivered, in order.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.wire: deque[tuple[Effect, str, Callable[[], None]]] = deque()
        self.delivered: list[Effect] = []
        self.stores: dict[str, RecordingStore] = {}
        self.endpoints: dict[str, FailoverEndpoint] = {}
        for name, role in (("primary", Role.PRIMARY), ("secondary", Role.SECONDARY)):
            self.stores[name] = RecordingStore([])
            self.endpoints[name] = FailoverEndpoint(
                "rel",
                role,
                self.clock,
                self.stores[name],
                mclt=MCLT,
                startupTime=STARTUP,
                keepaliveTime=QUIET,
                recordInterval=QUIET,
                takeoverAfter=WINDOW,
                takeoverMessages=3,
            )
        self.peers = {
            "primary": WiredPeer(self, "primary", "secondary"),
            "secondary": WiredPeer(self, "secondary", "primary"),
        }

    def __getitem__(self, name: str) -> FailoverEndpoint:
        return self.endpoints[name]

    @property
    def primary(self) -> FailoverEndpoint:
        return self.endpoints["primary"]

    @property
    def secondary(self) -> FailoverEndpoint:
        return self.endpoints["secondary"]

    def hold(self, hold: bool = True) -> None:
        """Hold (or not) every state write of both endpoints until L{release}."""
        for store in self.stores.values():
            store.hold = hold

    def release(self) -> bool:
        """Fire every held write; return whether there was any."""
        held = any(store.pending for store in self.stores.values())
        for store in self.stores.values():
            store.release()
        return held

    def pump(self) -> bool:
        """Deliver everything on the wire (and what that sends); return whether anything was."""
        any = False
        for _ in range(1000):
            if not self.wire:
                return any
            description, _, deliver = self.wire.popleft()
            self.delivered.append(description)
            deliver()
            any = True
        raise AssertionError("the pair never goes quiet")

    def settle(self) -> None:
        """
        Alternate: deliver every message on the wire back to back, then fire
        the writes held meanwhile, until neither is left.
        """
        for _ in range(100):
            pumped = self.pump()
            if not self.release() and not pumped:
                return
        raise AssertionError("the pair never settles")

    def start(self) -> None:
        """The pair's first start: both in NORMAL, connected."""
        for endpoint in self.endpoints.values():
            endpoint.start()
        self.primary.connected(self.peers["primary"])
        self.secondary.connected(self.peers["secondary"])
        self.settle()
        assert (self.primary.state, self.secondary.state) == (S.NORMAL, S.NORMAL)

    def states(self) -> tuple[EndpointState, EndpointState]:
        return self.primary.state, self.secondary.state


class PairTests(SynchronousTestCase):
    """
    Two endpoints talking to each other (sections 8.8 to 8.12 as a
    conversation), the writes of their states held so that the partner's
    STATE messages arrive back to back.
    """

    def test_wiredPeer(self) -> None:
        """L{WiredPeer} is an L{IFailoverPeer}."""
        pair = Pair()
        self.assertTrue(verifyObject(IFailoverPeer, pair.peers["primary"]))

    def test_firstStart(self) -> None:
        """The pair's first start ends in NORMAL on both sides, the secondary asking POOLREQ."""
        pair = Pair()
        pair.start()
        self.assertIn(("secondary", "poolRequest"), pair.delivered)

    def resolve(self, pair: Pair, declaring: str, hold: bool) -> list[Effect]:
        """
        The operator declares partner-down on C{declaring} while the pair is
        connected in NORMAL; return what went over the wire until the pair
        settled.
        """
        pair.hold(hold)
        del pair.delivered[:]
        self.assertTrue(pair[declaring].operatorPartnerDown())
        pair.settle()
        pair.hold(False)
        return [d for d in pair.delivered if d[1] != "contact"]

    def assertResolved(self, pair: Pair, delivered: list[Effect]) -> None:
        """
        Figure 8: the primary asks first and goes to CONFLICT-DONE on its
        UPDDONE; then the secondary asks, goes to NORMAL on its UPDDONE, and
        the primary follows.
        """
        self.assertEqual(pair.states(), (S.NORMAL, S.NORMAL))
        steps = [
            ("primary", "state", S.POTENTIAL_CONFLICT),
            ("primary", "updateRequest"),
            ("secondary", "updateDone"),
            ("primary", "state", S.CONFLICT_DONE),
            ("secondary", "updateRequest"),
            ("primary", "updateDone"),
            ("secondary", "state", S.NORMAL),
            ("secondary", "poolRequest"),
        ]
        self.assertEqual([d for d in delivered if d in steps], steps)
        self.assertEqual(delivered[-1], ("primary", "state", S.NORMAL))
        self.assertLess(
            delivered.index(("secondary", "state", S.NORMAL)),
            delivered.index(("primary", "state", S.NORMAL)),
        )
        self.assertEqual(pair.stores["primary"].stored().state, S.NORMAL)
        self.assertEqual(pair.stores["secondary"].stored().state, S.NORMAL)

    def test_partnerDownOnLivePair(self) -> None:
        """
        The operator's partner-down on either side of a connected NORMAL
        pair: NORMAL -> POTENTIAL-CONFLICT -> CONFLICT-DONE -> NORMAL, with
        and without the writes held.
        """
        for declaring in ("primary", "secondary"):
            for hold in (False, True):
                pair = Pair()
                pair.start()
                self.assertResolved(pair, self.resolve(pair, declaring, hold))

    def test_partnerDownTwiceOnOneConnection(self) -> None:
        """
        Chaos finding 2 (seed 200): a first partner-down (the secondary's)
        resolves; on the same connection, with the primary serving the
        secondary's clients (RFC 7031 section 4.7) and the writes held so
        that the primary's STATEs partner-down, potential-conflict and
        conflict-done reach the secondary back to back, a second
        partner-down (the primary's) resolves too: the secondary asks UPDREQ
        again when the primary is CONFLICT-DONE (8.10.2), and both end in
        NORMAL.  The secondary's UPDREQ of the first resolution used to
        count for the whole connection, so the second was never sent.
        """
        for hold in (False, True):
            pair = Pair()
            pair.start()
            self.assertResolved(pair, self.resolve(pair, "secondary", hold))
            # The secondary loses its clients; the primary takes them over.
            primary = pair.primary
            primary.clientsSeenReceived(100)
            for _ in range(3):
                pair.clock.advance(1)
                primary.clientMessageForPartner()
            for _ in range(int(WINDOW // 5)):
                pair.clock.advance(5)
                primary.clientsSeenReceived(100)
            self.assertTrue(primary.servingForPartner)
            delivered = self.resolve(pair, "primary", hold)
            self.assertEqual(
                delivered[:2],
                [
                    ("primary", "state", S.PARTNER_DOWN),
                    ("secondary", "state", S.POTENTIAL_CONFLICT),
                ],
            )
            self.assertResolved(pair, delivered)
            self.assertFalse(primary.servingForPartner)
