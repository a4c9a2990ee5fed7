# -*- test-case-name: tests.test_queue -*-
"""
Tests for L{dhcp6ha.failover.queue}: the lazy-update queue (sending side)
and L{receiveBindings} (receiving side).

Most tests are deterministic: L{MemoryLeaseStore}, a L{Clock} and a fake
sender whose Deferreds the test fires.  L{SQLiteQueueTests} run the same
queue over the real store on the real reactor, and L{QueueCrashTests} kills
a process running one with SIGKILL.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from dhcp6ha.failover import commands
from dhcp6ha.failover import queue as queuemodule
from dhcp6ha.failover.commands import FailoverStatus, bindingToBox
from dhcp6ha.failover.conflict import acknowledged
from dhcp6ha.failover.machine import Role
from dhcp6ha.failover.queue import (
    DEFAULT_GATHER_DELAY,
    DEFAULT_MAX_SENDS,
    QueueDetached,
    UpdateQueue,
    receiveBindings,
)
from dhcp6ha.interfaces import IUpdateQueue
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SQLiteLeaseStore
from dhcp6ha.testing import FakeUpdateQueue, MemoryLeaseStore
from tests.storetests import allPending, makeLease

reactor: Any = globalReactor

REL = "rel"
T0 = 1_700_000_000.0


def replicate(lease: Lease) -> str | None:
    """Everything but prefixes of length 48 belongs to C{REL}."""
    return None if lease.prefix_length == 48 else REL


def lease(n: int, **kwargs: Any) -> Lease:
    """An ACTIVE binding of C{2001:db8::n} for client C{n}, at C{T0}."""
    values: dict[str, Any] = {
        "duid": b"\x00\x03\x00\x01client-%d" % n,
        "iaid": n,
        "expires": T0 + 600,
    }
    values.update(kwargs)
    base = makeLease(n, **values)
    return evolve(base, start_time_of_state=T0, cltt=T0)


def success(boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of a batch every binding of which is accepted."""
    return [
        {"address": box["address"], "prefix_length": box["prefix_length"], "status": 0}
        for box in boxes
    ]


def rejection(boxes: list[dict[str, Any]], status: int = 19) -> list[dict[str, Any]]:
    """The results of a batch every binding of which is rejected."""
    return [
        {
            "address": box["address"],
            "prefix_length": box["prefix_length"],
            "status": status,
            "message": "older",
        }
        for box in boxes
    ]


class FakeSender:
    """
    A queue's sender that records each batch and returns a Deferred the test
    fires (or, with C{auto}, answers every batch at once with C{auto(boxes)}).

    @ivar batches: C{(boxes, Deferred)} per batch sent, in order.
    """

    def __init__(self, auto: Any = None) -> None:
        self.batches: list[tuple[list[dict[str, Any]], Deferred[list[dict[str, Any]]]]] = []
        self.auto = auto

    def __call__(self, boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        d: Deferred[list[dict[str, Any]]] = Deferred()
        self.batches.append((boxes, d))
        if self.auto is not None:
            d.callback(self.auto(boxes))
        return d

    def waiting(self) -> list[tuple[list[dict[str, Any]], Deferred[list[dict[str, Any]]]]]:
        """The batches not answered yet."""
        return [(boxes, d) for boxes, d in self.batches if not d.called]

    def answer(self, index: int = 0, results: Any = success) -> None:
        """Answer the C{index}th batch still waiting, with C{results(boxes)}."""
        boxes, d = self.waiting()[index]
        d.callback(results(boxes))

    def answerAll(self, results: Any = success) -> None:
        while self.waiting():
            self.answer(0, results)

    def addresses(self) -> list[int]:
        """The last 16 bits of every address sent, in order."""
        return [int(box["address"]) & 0xFFFF for boxes, _ in self.batches for box in boxes]

    def inFlight(self) -> int:
        return sum(len(boxes) for boxes, _ in self.waiting())


class Setup:
    """A store, a clock, a queue and a fake sender."""

    def __init__(
        self,
        autoFlush: bool = True,
        attach: bool = True,
        store: MemoryLeaseStore | None = None,
        **kwargs: Any,
    ) -> None:
        self.store = store or MemoryLeaseStore(autoFlush=autoFlush, replicate=replicate)
        self.clock = Clock()
        self.clock.advance(T0)
        kwargs.setdefault("maxUnacked", 100)
        # The other rules, without gathering (its own tests set it).
        kwargs.setdefault("gatherDelay", 0.0)
        self.queue = UpdateQueue(REL, self.store, self.clock, **kwargs)
        self.sender = FakeSender()
        if attach:
            self.queue.attach(self.sender)

    def change(self, *leases: Lease) -> None:
        """Commit these bindings (made durable) and enqueue them, as the server does."""
        d = self.store.commit(leases)
        if not d.called:
            self.store.flush()
        for one in leases:
            self.queue.enqueue(one)

    def turn(self) -> None:
        self.clock.advance(0)

    def oneTurn(self) -> int:
        """
        Run the calls due now, but not those they schedule (as one turn of a
        real reactor would; L{Clock.advance} runs those too).  Return how
        many ran.
        """
        due = [call for call in self.clock.calls if call.getTime() <= self.clock.seconds()]
        for call in due:
            self.clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
        return len(due)


class UpdateQueueTests(SynchronousTestCase):
    """Sending pending bindings: batches, the in-flight bound, acks."""

    def test_interface(self) -> None:
        """L{UpdateQueue} provides L{IUpdateQueue}."""
        self.assertTrue(verifyObject(IUpdateQueue, Setup().queue))

    def test_badBound(self) -> None:
        """C{maxUnacked} must allow at least one binding in flight."""
        self.assertRaises(ValueError, Setup, maxUnacked=0)

    def test_sendsPendingInVersionOrder(self) -> None:
        """
        An enqueued binding is sent on the next reactor turn, with every
        other pending one, in version order, as L{commands.bindingToBox}
        makes them.
        """
        s = Setup()
        leases = [lease(3), lease(1), lease(2)]
        s.change(*leases)
        self.assertEqual(s.sender.batches, [])
        s.turn()
        [(boxes, _)] = s.sender.batches
        self.assertEqual(boxes, [bindingToBox(one, 0.0) for one in leases])
        self.assertEqual((s.queue.sent, s.queue.inFlight), (3, 3))

    def test_notAttached(self) -> None:
        """Nothing is sent before L{UpdateQueue.attach}; then everything pending is."""
        s = Setup(attach=False)
        s.change(lease(1), lease(2))
        s.turn()
        self.assertFalse(s.queue.attached)
        s.queue.attach(s.sender)
        self.assertTrue(s.queue.attached)
        s.turn()
        self.assertEqual(s.sender.addresses(), [1, 2])

    def test_notReplicated(self) -> None:
        """Bindings no relationship covers, or received from the partner, are never sent."""
        s = Setup()
        s.change(lease(1, prefix_length=48, lease_type=LeaseType.PD))
        s.store.commit([lease(2)], pending=False)
        s.queue.enqueue(lease(2))
        s.turn()
        self.assertEqual(s.sender.batches, [])

    def test_notBeforeDurable(self) -> None:
        """A binding is not sent before its commit is durable."""
        s = Setup(autoFlush=False)
        s.store.commit([lease(1)])
        s.queue.enqueue(lease(1))
        s.turn()
        self.assertEqual(s.sender.batches, [])
        s.store.flush()
        s.queue.enqueue(lease(1))
        s.turn()
        self.assertEqual(s.sender.addresses(), [1])

    def test_batchesCutBySize(self) -> None:
        """
        Bindings are cut into batches under C{batchBytes}, all sent at once
        (pipelined) while the in-flight bound allows.
        """
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(batchBytes=3 * one + 10)
        s.change(*[lease(n) for n in range(1, 11)])
        s.turn()
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [3, 3, 3, 1])
        self.assertEqual(s.sender.addresses(), list(range(1, 11)))

    def test_inFlightBound(self) -> None:
        """
        At most C{maxUnacked} bindings are in flight; each answer lets as
        many more go.
        """
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(maxUnacked=5, batchBytes=2 * one + 10)
        s.change(*[lease(n) for n in range(1, 13)])
        s.turn()
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [2, 2, 1])
        self.assertEqual(s.queue.inFlight, 5)
        s.sender.answer(1)
        self.assertEqual(s.sender.inFlight(), 5)
        self.assertEqual(s.sender.addresses(), list(range(1, 8)))
        while s.sender.waiting():
            s.sender.answer(0)
            self.assertLessEqual(s.sender.inFlight(), 5)
            self.assertEqual(s.queue.inFlight, s.sender.inFlight())
        self.assertEqual(s.sender.addresses(), list(range(1, 13)))
        self.assertEqual(s.store.pendingCount(REL), 0)
        self.assertEqual((s.queue.sent, s.queue.acked), (12, 12))

    def test_ackStored(self) -> None:
        """
        An ack clears the pending mark and stores what the partner now
        knows: C{conflict.acknowledged(current, sent)}.
        """
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        s.sender.answer()
        self.assertEqual(s.store.pendingCount(REL), 0)
        for n in (1, 2):
            stored = s.store.get(lease(n).address, 128)
            self.assertEqual(stored, acknowledged(lease(n), lease(n)))
            assert stored is not None
            self.assertTrue(stored.stateAcked)
        self.assertEqual(s.queue.lastAckTime, T0)

    def test_ackDurableBeforeDone(self) -> None:
        """
        A batch counts as done for L{UpdateQueue.flush} only once its acks
        are durable.
        """
        s = Setup(autoFlush=False)
        s.store.commit([lease(1)])
        s.store.flush()
        s.queue.enqueue(lease(1))
        flushed = s.queue.flush()
        s.turn()
        s.sender.answer()
        self.assertNoResult(flushed)
        self.assertEqual(s.store.pendingCount(REL), 0)  # read-your-writes
        s.store.flush()
        self.successResultOf(flushed)

    def test_partnerLifetimeProposed(self) -> None:
        """
        With C{partnerLifetime}, an ACTIVE binding proposes the larger of
        it and the stored value; a larger proposal is stored (same version,
        still pending) before the batch goes; the ack makes it the acked
        lifetime.
        """
        s = Setup(autoFlush=False, partnerLifetime=lambda one: T0 + 5000.0)
        active = lease(1)
        already = lease(2, partner_lifetime_sent=T0 + 9000.0)
        expired = lease(3, state=BindingState.EXPIRED, partner_lifetime_sent=T0 + 100.0)
        s.store.commit([active, already, expired])
        s.store.flush()
        s.queue.enqueue(active)
        s.turn()
        self.assertEqual(s.sender.batches, [])
        proposed = evolve(active, partner_lifetime_sent=T0 + 5000.0)
        self.assertEqual(s.store.get(active.address, 128), proposed)
        self.assertEqual([v for v, _ in s.store.pendingUpdates(REL, 0, 10)], [1, 2, 3])
        s.store.flush()
        [(boxes, _)] = s.sender.batches
        self.assertEqual(
            [box["partner_lifetime"] for box in boxes], [T0 + 5000.0, T0 + 9000.0, T0 + 100.0]
        )
        s.sender.answer()
        s.store.flush()
        stored = s.store.get(active.address, 128)
        assert stored is not None
        self.assertEqual(stored.partner_lifetime_acked, T0 + 5000.0)
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_newerChangeStaysPending(self) -> None:
        """
        A binding changed while its update is in flight stays pending after
        the ack (with the ack's bookkeeping merged in) and goes next.
        """
        s = Setup()
        first = lease(1)
        s.change(first)
        s.turn()
        renewed = evolve(first, cltt=T0 + 100, expires=T0 + 700)
        s.change(renewed)
        s.turn()
        # The newer version goes at once (the partner handles batches in order).
        self.assertEqual(s.sender.addresses(), [1, 1])
        s.sender.answer(0)
        [(version, stored)] = s.store.pendingUpdates(REL, 0, 10)
        self.assertEqual(stored, acknowledged(renewed, first))
        self.assertEqual(version, 2)
        s.sender.answer(0)
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_detachForgetsInFlight(self) -> None:
        """
        After L{UpdateQueue.detach}, answers of the lost connection are
        ignored and the bindings stay pending; the next attach sends them
        all again.
        """
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        s.queue.detach()
        self.assertEqual(s.queue.inFlight, 0)
        s.sender.answer()
        self.assertEqual((s.store.pendingCount(REL), s.queue.acked), (2, 0))
        second = FakeSender()
        s.queue.attach(second)
        s.turn()
        self.assertEqual(second.addresses(), [1, 2])
        second.answer()
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_detachTwice(self) -> None:
        """Detaching when not attached does nothing."""
        s = Setup(attach=False)
        s.queue.detach()
        self.assertFalse(s.queue.attached)

    def test_attachReplaces(self) -> None:
        """Attaching a new sender forgets the old connection's batches."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        second = FakeSender()
        s.queue.attach(second)
        s.turn()
        self.assertEqual(second.addresses(), [1])
        s.sender.answer()
        self.assertEqual(s.queue.acked, 0)

    def test_pauseResume(self) -> None:
        """While paused no batch is sent; in-flight answers are still handled."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        s.queue.pause()
        s.change(lease(2))
        s.turn()
        s.sender.answer()
        self.assertEqual((s.sender.addresses(), s.queue.acked), ([1], 1))
        s.queue.resume()
        s.turn()
        self.assertEqual(s.sender.addresses(), [1, 2])

    def test_pauseAfterAttach(self) -> None:
        """A pause in the turn of the attach stops the first send."""
        s = Setup(attach=False)
        s.change(lease(1))
        s.queue.attach(s.sender)
        s.queue.pause()
        s.turn()
        self.assertEqual(s.sender.batches, [])

    def test_synchronousAnswersYield(self) -> None:
        """
        A sender that answers at once does not make the queue stream the
        whole store in one reactor turn, nor recurse: each turn sends about
        C{maxUnacked} bindings.
        """
        s = Setup(maxUnacked=10)
        s.sender.auto = success
        s.change(*[lease(n) for n in range(1, 101)])
        turns = 0
        while s.oneTurn():
            turns += 1
            self.assertLessEqual(len(s.sender.addresses()), 10 * turns)
        self.assertGreaterEqual(turns, 10)
        self.assertEqual(s.sender.addresses(), list(range(1, 101)))
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_senderRaises(self) -> None:
        """A sender that raises fails its batch like one whose Deferred fails."""
        s = Setup()

        def broken(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
            raise RuntimeError("broken")

        s.queue.attach(broken)
        s.change(lease(1))
        with capturedLogs():
            s.turn()
        self.assertEqual((s.queue.failedBatches, s.queue.inFlight), (1, 0))


class StoreFailureTests(SynchronousTestCase):
    """A store that cannot be read (or a broken partner lifetime) stops the queue, not the server."""

    def test_readFails(self) -> None:
        """
        A failing read is logged, fails the waiters and blocks sending until
        the retry timer; then sending resumes.
        """

        class Flaky(MemoryLeaseStore):
            broken = True

            def pendingUpdates(
                self, relationship: str, afterVersion: int, limit: int
            ) -> list[tuple[int, Lease]]:
                if self.broken:
                    raise OSError("disk")
                return super().pendingUpdates(relationship, afterVersion, limit)

        store = Flaky(replicate=replicate)
        s = Setup(store=store)
        s.change(lease(1))
        d = s.queue.flush()
        s.turn()
        self.failureResultOf(d, OSError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        store.broken = False
        s.change(lease(2))
        s.turn()
        self.assertEqual(s.sender.batches, [])
        s.clock.advance(30)
        self.assertEqual(s.sender.addresses(), [1, 2])

    def test_partnerLifetimeFails(self) -> None:
        """A partner lifetime function that raises is handled the same way."""

        def broken(one: Lease) -> float:
            raise ValueError("no subnet")

        s = Setup(partnerLifetime=broken)
        s.change(lease(1), lease(2))
        s.turn()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual((s.sender.batches, s.queue.inFlight), ([], 0))
        s.queue.partnerLifetime = None
        s.clock.advance(30)
        self.assertEqual(s.sender.addresses(), [1, 2])


class FlushTests(SynchronousTestCase):
    """L{UpdateQueue.flush}: every update pending at the call sent and answered."""

    def test_nothingPending(self) -> None:
        """With nothing pending, flush fires on the next turn."""
        s = Setup()
        d = s.queue.flush()
        self.assertNoResult(d)
        s.turn()
        self.successResultOf(d)

    def test_waitsForAnswers(self) -> None:
        """Flush fires once every batch holding what was pending is answered."""
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(maxUnacked=3, batchBytes=2 * one + 10)
        s.change(*[lease(n) for n in range(1, 8)])
        d = s.queue.flush()
        s.turn()
        while len(s.sender.waiting()) > 1 or s.queue.inFlight < 1:
            self.assertNoResult(d)
            s.sender.answer(0)
        self.assertNoResult(d)
        s.sender.answerAll()
        self.successResultOf(d)
        self.assertEqual(s.sender.addresses(), list(range(1, 8)))

    def test_includesInFlight(self) -> None:
        """A batch in flight when flush is called is waited for too."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        d = s.queue.flush()
        s.turn()
        self.assertNoResult(d)
        s.sender.answer()
        self.successResultOf(d)

    def test_notForLaterUpdates(self) -> None:
        """Updates enqueued after flush's scan ended do not hold it back."""
        s = Setup()
        s.change(lease(1))
        d = s.queue.flush()
        s.turn()
        s.change(lease(2))
        s.turn()
        self.assertEqual(len(s.sender.waiting()), 2)
        s.sender.answer(0)
        self.successResultOf(d)

    def test_rejectionsAreAnswers(self) -> None:
        """A rejected update counts as answered."""
        s = Setup()
        s.change(lease(1))
        d = s.queue.flush()
        s.turn()
        with capturedLogs():
            s.sender.answer(0, rejection)
        self.successResultOf(d)
        self.assertEqual(s.store.pendingCount(REL), 1)

    def test_resendsRejected(self) -> None:
        """Bindings rejected before the call are sent again for it."""
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        with capturedLogs():
            s.sender.answer(0, lambda boxes: rejection(boxes[:1]) + success(boxes[1:]))
        d = s.queue.flush()
        s.turn()
        self.assertEqual(s.sender.addresses(), [1, 2, 1])
        self.assertNoResult(d)
        s.sender.answer()
        self.successResultOf(d)
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_notAttached(self) -> None:
        """Flush without a connection fails at once."""
        s = Setup(attach=False)
        self.failureResultOf(s.queue.flush(), QueueDetached)

    def test_detachFails(self) -> None:
        """A flush waiting when the connection is lost fails."""
        s = Setup()
        s.change(lease(1))
        d = s.queue.flush()
        s.turn()
        s.queue.detach()
        self.failureResultOf(d, QueueDetached)

    def test_batchFailureFails(self) -> None:
        """A batch that fails without an answer fails the flush with its error."""
        s = Setup()
        s.change(lease(1))
        d = s.queue.flush()
        s.turn()
        _, sent = s.sender.batches[0]
        with capturedLogs():
            sent.errback(commands.NotInState("recover"))
        self.failureResultOf(d, commands.NotInState)

    def test_waitsWhilePaused(self) -> None:
        """A flush called while paused waits for the resume."""
        s = Setup()
        s.queue.pause()
        d = s.queue.flush()
        s.turn()
        self.assertNoResult(d)
        s.queue.resume()
        s.turn()
        self.successResultOf(d)


class RetryTests(SynchronousTestCase):
    """Rejected and failed updates are sent again later, never in a tight loop."""

    def test_rejectedNotResentAtOnce(self) -> None:
        """
        A rejected binding is counted, logged once per batch and left
        pending; new changes still go, the rejected one only when the retry
        timer fires (30 s).
        """
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        with capturedLogs() as events:
            s.sender.answer(0, rejection)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["count"], warnings[0]["status"]), (2, 19))
        self.assertEqual((s.queue.rejected, s.store.pendingCount(REL)), (2, 2))
        s.change(lease(3))
        s.clock.advance(29)
        self.assertEqual(s.sender.addresses(), [1, 2, 3])
        s.sender.answer()
        s.clock.advance(1)
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 1, 2])
        self.assertEqual(s.queue.retries, 1)
        s.sender.answer()
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_backoff(self) -> None:
        """
        A partner that keeps rejecting gets the update after 30, 60, 120...
        seconds, up to C{maxRetryDelay}; after a quiet spell the delay
        starts again at 30 s.
        """
        s = Setup(maxRetryDelay=200.0)
        s.change(lease(1))
        s.turn()
        times = []
        with capturedLogs():
            for _ in range(6):
                s.sender.answer(0, rejection)
                start = s.clock.seconds()
                sent = len(s.sender.batches)
                while len(s.sender.batches) == sent:
                    s.clock.advance(1)
                times.append(s.clock.seconds() - start)
            self.assertEqual(times, [30, 60, 120, 200, 200, 200])
            s.sender.answer(0)  # accepted at last
            s.clock.advance(1000)
            s.change(lease(2))
            s.turn()
            s.sender.answer(0, rejection)
            s.clock.advance(30)
        self.assertEqual(s.sender.addresses()[-1], 2)

    def test_reconnectResends(self) -> None:
        """A new connection sends rejected bindings at once."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        with capturedLogs():
            s.sender.answer(0, rejection)
        s.queue.attach(s.sender)
        s.turn()
        self.assertEqual(s.sender.addresses(), [1, 1])

    def test_missingResult(self) -> None:
        """A binding the partner's answer leaves out is treated as rejected."""
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        with capturedLogs() as events:
            s.sender.answer(0, lambda boxes: success(boxes[1:]))
        self.assertEqual((s.queue.acked, s.queue.rejected), (1, 1))
        self.assertEqual(events[0]["reason"], "no answer")
        self.assertEqual([one for _, one in s.store.pendingUpdates(REL, 0, 10)], [lease(1)])

    def test_failedBatchBlocks(self) -> None:
        """
        After a batch fails without an answer (e.g. the partner's state
        refuses updates), nothing more is sent until the retry timer fires;
        then everything pending goes again.
        """
        s = Setup()
        s.change(lease(1))
        s.turn()
        with capturedLogs() as events:
            s.sender.batches[0][1].errback(commands.NotInState("recover"))
        self.assertEqual(len(events), 1)
        self.assertEqual((s.queue.failedBatches, s.queue.inFlight), (1, 0))
        s.change(lease(2))
        s.clock.advance(29)
        self.assertEqual(s.sender.addresses(), [1])
        s.clock.advance(1)
        self.assertEqual(s.sender.addresses(), [1, 1, 2])

    def test_retryWhileDetached(self) -> None:
        """A retry timer is cancelled by detach; the next attach resends anyway."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        with capturedLogs():
            s.sender.answer(0, rejection)
        s.queue.detach()
        self.assertEqual(s.clock.getDelayedCalls(), [])


class SendAllTests(SynchronousTestCase):
    """L{UpdateQueue.sendAll}: every binding, streamed within the in-flight bound."""

    def test_streamsEverything(self) -> None:
        """
        Every binding (pending or not) is sent once, in key order, in
        batches, never more than C{maxUnacked} in flight; the Deferred fires
        once the last is answered.
        """
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(maxUnacked=6, batchBytes=4 * one + 10)
        s.store.commit([lease(n) for n in range(1, 26)], pending=False)
        d = s.queue.sendAll()
        s.turn()
        while s.sender.waiting():
            self.assertNoResult(d)
            self.assertLessEqual(s.sender.inFlight(), 6)
            s.sender.answer(0)
        self.successResultOf(d)
        self.assertEqual(s.sender.addresses(), list(range(1, 26)))
        self.assertTrue(all(len(boxes) <= 4 for boxes, _ in s.sender.batches))
        stored = s.store.get(lease(1).address, 128)
        assert stored is not None
        self.assertTrue(stored.stateAcked)

    def test_ackedAlready(self) -> None:
        """
        The ack of a binding whose record says the partner acked it already
        (its state, at least the partner lifetime proposed) is not written;
        one that tells something new is stored.  Neither is read back.
        """
        known = evolve(
            lease(1),
            partner_lifetime_sent=T0 + 900,
            partner_lifetime_acked=T0 + 900,
            partner_state_acked=BindingState.ACTIVE,
            partner_stos_acked=T0,
        )
        newer = evolve(known, address=lease(2).address, partner_lifetime_acked=T0 + 300)
        reads: list[Any] = []
        writes: list[Any] = []

        class Store(MemoryLeaseStore):
            def get(self, address: Any, prefix_length: int) -> Lease | None:
                reads.append(address)
                return super().get(address, prefix_length)

            def acknowledge(self, relationship: str, acks: Any) -> Deferred[None]:
                writes.extend(sent.address for sent, _ in acks)
                return super().acknowledge(relationship, acks)

        store = Store(replicate=replicate)
        store.commit([known, newer], pending=False)
        s = Setup(store=store)
        d = s.queue.sendAll()
        s.turn()
        s.sender.answerAll()
        self.successResultOf(d)
        self.assertEqual((reads, writes), ([], [newer.address]))
        self.assertEqual(store.get(known.address, 128), known)
        stored = store.get(newer.address, 128)
        assert stored is not None
        self.assertEqual(stored.partner_lifetime_acked, T0 + 900)
        self.assertEqual(s.queue.acked, 2)

    def test_readsLazily(self) -> None:
        """The bindings are pulled from C{iterLeases} only as the window allows."""
        pulled: list[int] = []

        class Store(MemoryLeaseStore):
            def iterLeases(self, batch: int) -> Iterator[Lease]:
                for found in super().iterLeases(batch):
                    pulled.append(1)
                    yield found

        s = Setup(maxUnacked=5)
        store = Store(replicate=replicate)
        store.commit([lease(n) for n in range(1, 101)], pending=False)
        queue = UpdateQueue(REL, store, s.clock, maxUnacked=5)
        queue.attach(s.sender)
        d = queue.sendAll()
        s.turn()
        self.assertLessEqual(len(pulled), 6)
        s.sender.answer()
        self.assertLessEqual(len(pulled), 11)
        s.sender.answerAll()
        for _ in range(30):
            s.sender.answerAll()
            s.turn()
        self.successResultOf(d)
        self.assertEqual(len(pulled), 100)

    def test_beforePending(self) -> None:
        """A running sendAll goes first; the pending updates follow, kept pending."""
        s = Setup(maxUnacked=2)
        s.store.commit([lease(n) for n in (1, 2, 3)], pending=False)
        s.change(lease(4))
        d = s.queue.sendAll()
        s.turn()
        while s.sender.waiting():
            s.sender.answer(0)
            s.turn()
        self.successResultOf(d)
        # All four once, then 4 again as a pending update (its ack clears it).
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 4, 4])
        self.assertEqual(s.store.pendingCount(REL), 0)

    def test_empty(self) -> None:
        """With no binding, sendAll fires on the next turn."""
        s = Setup()
        d = s.queue.sendAll()
        s.turn()
        self.successResultOf(d)

    def test_sharedEnd(self) -> None:
        """A second sendAll while one runs fires with it."""
        s = Setup()
        s.store.commit([lease(1)], pending=False)
        d1 = s.queue.sendAll()
        s.turn()
        d2 = s.queue.sendAll()
        s.turn()
        s.sender.answerAll()
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(s.sender.addresses(), [1])

    def test_detachFails(self) -> None:
        """A connection lost during sendAll fails it; so does sendAll without one."""
        s = Setup()
        s.store.commit([lease(1)], pending=False)
        d = s.queue.sendAll()
        s.turn()
        s.queue.detach()
        self.failureResultOf(d, QueueDetached)
        self.failureResultOf(s.queue.sendAll(), QueueDetached)

    def test_failedBatchFails(self) -> None:
        """A sendAll batch that fails without an answer fails sendAll."""
        s = Setup()
        s.store.commit([lease(1)], pending=False)
        d = s.queue.sendAll()
        s.turn()
        with capturedLogs():
            s.sender.batches[0][1].errback(RuntimeError("boom"))
        self.failureResultOf(d, RuntimeError)


class LagTests(SynchronousTestCase):
    """The replication lag measurement."""

    def test_enqueueToAck(self) -> None:
        """The lag of a binding runs from its enqueue to its ack."""
        s = Setup()
        s.change(lease(1))
        s.clock.advance(2)
        s.sender.answer()
        self.assertEqual((s.queue.lag.count, s.queue.lag.maximum), (1, 2.0))

    def test_enqueuedAfterSend(self) -> None:
        """A change enqueued after its binding was sent is timed to a later ack."""
        s = Setup()
        s.change(lease(1))
        s.turn()
        s.clock.advance(1)
        s.change(evolve(lease(1), cltt=T0 + 1))
        s.sender.answer()
        self.assertEqual(s.queue.lag.count, 1)
        s.clock.advance(3)
        s.sender.answer()
        self.assertEqual((s.queue.lag.count, s.queue.lag.maximum), (2, 3.0))

    def test_bounded(self) -> None:
        """
        At most C{maxTracked} bindings are timed at once: the oldest is
        dropped.  Five enqueued a second apart, acked a second after the
        last: the three timed are the last three (lags 3, 2 and 1 s).
        """
        s = Setup(maxTracked=3)
        for n in range(1, 6):
            s.change(lease(n))
            s.clock.advance(1)
        s.sender.answerAll()
        s.turn()
        s.sender.answerAll()
        self.assertEqual((s.queue.lag.count, s.queue.lag.maximum), (3, 3.0))

    def test_status(self) -> None:
        """C{status} reports the counters, the store's pending count and the lag."""
        s = Setup()
        s.change(lease(1), lease(2))
        s.turn()
        status = s.queue.status()
        self.assertEqual(
            {k: status[k] for k in ("sent", "acked", "in_flight", "pending", "attached")},
            {"sent": 2, "acked": 0, "in_flight": 2, "pending": 2, "attached": True},
        )
        s.sender.answer()
        status = s.queue.status()
        self.assertEqual((status["acked"], status["pending"]), (2, 0))
        self.assertEqual(status["last_ack_time"], T0)
        self.assertEqual(status["lag"]["count"], 2)
        self.assertEqual(status["lag_histogram"], s.queue.lag.snapshot())


class ReceiveBindingsTests(SynchronousTestCase):
    """L{receiveBindings}: conflict resolution, storage, durable before the answer."""

    def receive(
        self,
        store: MemoryLeaseStore,
        *incoming: Lease,
        role: Role = Role.SECONDARY,
        proposal: float = T0 + 3000,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        boxes = [bindingToBox(one, proposal) for one in incoming]
        result: list[dict[str, Any]] = self.successResultOf(
            receiveBindings(store, role, boxes, T0 + 10, **kwargs)
        )
        return result

    def test_acceptNew(self) -> None:
        """
        A new binding is stored as the partner holds it, not pending (never
        echoed back), acknowledged, with the proposed partner lifetime acked.
        """
        store = MemoryLeaseStore(replicate=replicate)
        results = self.receive(store, lease(1), lease(2))
        self.assertEqual(
            results,
            [{"address": lease(n).address, "prefix_length": 128, "status": 0} for n in (1, 2)],
        )
        stored = store.get(lease(1).address, 128)
        self.assertEqual(
            stored,
            evolve(
                lease(1),
                partner_lifetime_acked=T0 + 3000,
                partner_state_acked=BindingState.ACTIVE,
                partner_stos_acked=T0,
            ),
        )
        self.assertEqual(store.pendingCount(REL), 0)

    def test_incomingAsBindingFromBox(self) -> None:
        """
        The received binding is L{commands.bindingFromBox}'s, with the
        proposed partner lifetime as its C{partner_lifetime_sent}, with an
        FQDN or without.
        """
        for one in (lease(1), lease(2, fqdn="host.example.com", fqdn_flags=1)):
            box = bindingToBox(one, T0 + 900)
            self.assertEqual(
                queuemodule._incoming(box),
                evolve(commands.bindingFromBox(box), partner_lifetime_sent=T0 + 900),
            )

    def test_readsOnce(self) -> None:
        """
        A store that reads many keys at once (C{getMany}) is read once per
        batch; another one key at a time; both give the same results.
        """
        calls: list[int] = []

        class Bulk(MemoryLeaseStore):
            def getMany(self, keys: Any) -> dict[Any, Lease]:
                keys = list(keys)
                calls.append(len(keys))
                return {key: found for key in keys if (found := self.get(*key)) is not None}

        stores = [Bulk(replicate=replicate), MemoryLeaseStore(replicate=replicate)]
        answers = []
        for store in stores:
            store.commit([evolve(lease(1), cltt=T0 + 100), lease(2)], pending=False)
            answers.append(self.receive(store, lease(1), lease(2), lease(3)))
        self.assertEqual(calls, [3])
        self.assertEqual(answers[0], answers[1])
        self.assertEqual([r["status"] for r in answers[0]], [19, 0, 0])

    def test_durableBeforeAnswer(self) -> None:
        """The answer waits until the accepted changes are durable."""
        store = MemoryLeaseStore(autoFlush=False, replicate=replicate)
        d = receiveBindings(store, Role.SECONDARY, [bindingToBox(lease(1), 0.0)], T0)
        self.assertNoResult(d)
        self.assertIsNotNone(store.get(lease(1).address, 128))
        store.flush()
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], 0)

    def test_commitFails(self) -> None:
        """If the accepted changes cannot be stored, the batch fails (no answer)."""

        class Broken(MemoryLeaseStore):
            def commit(self, changes: Any, *, pending: bool = True) -> Deferred[None]:
                return fail(OSError("disk"))

        d = receiveBindings(Broken(), Role.SECONDARY, [bindingToBox(lease(1), 0.0)], T0)
        self.failureResultOf(d, OSError)

    def test_rejectOutdated(self) -> None:
        """
        An older record is rejected as outdated; ours is marked pending
        (a new version) and the queue woken for it, once durable.
        """
        store = MemoryLeaseStore(autoFlush=False, replicate=replicate)
        ours = evolve(lease(1), cltt=T0 + 100)
        store.commit([ours], pending=False)
        store.flush()
        queue = FakeUpdateQueue()
        older = evolve(ours, state=BindingState.EXPIRED, cltt=T0, start_time_of_state=T0)
        d = receiveBindings(store, Role.PRIMARY, [bindingToBox(older, 0.0)], T0 + 200, queue=queue)
        self.assertNoResult(d)
        self.assertEqual(queue.enqueued, [])
        store.flush()
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], FailoverStatus.OUTDATED_BINDING_INFORMATION)
        self.assertEqual(result["message"], "active/expired: local active")
        self.assertEqual(store.get(ours.address, 128), ours)
        self.assertEqual(store.pendingUpdates(REL, 0, 10), [(2, ours)])
        self.assertEqual(queue.enqueued, [ours])

    def test_rejectAlreadyPending(self) -> None:
        """Our record already pending keeps its version: no update storm."""
        store = MemoryLeaseStore(replicate=replicate)
        ours = evolve(lease(1), cltt=T0 + 100)
        store.commit([ours])
        older = evolve(ours, cltt=T0)
        self.receive(store, older, role=Role.PRIMARY)
        self.assertEqual(store.pendingUpdates(REL, 0, 10), [(1, ours)])

    def test_superseded(self) -> None:
        """
        The partner's record ours was derived from (sent again, its ack
        lost): answered with success and a message, not stored; ours stays
        as it is, pending, and the queue is woken for it.
        """
        store = MemoryLeaseStore(replicate=replicate)
        theirs = lease(1)
        released = evolve(
            theirs,
            state=BindingState.RELEASED,
            start_time_of_state=T0 + 0.25,
            cltt=T0 + 0.25,
            partner_state_acked=BindingState.ACTIVE,
            partner_stos_acked=T0,
        )
        store.commit([released])
        queue = FakeUpdateQueue()
        [result] = self.receive(store, theirs, role=Role.PRIMARY, queue=queue)
        self.assertEqual(
            result,
            {
                "address": theirs.address,
                "prefix_length": 128,
                "status": 0,
                "message": "released/active: superseded",
            },
        )
        self.assertEqual(store.get(theirs.address, 128), released)
        self.assertEqual(store.pendingUpdates(REL, 0, 10), [(1, released)])
        self.assertEqual(queue.enqueued, [released])

    def test_addressInUse(self) -> None:
        """
        The primary answers AddressInUse for another client's ACTIVE binding
        that is not later than its own; the secondary accepts it.
        """
        for role, status in ((Role.PRIMARY, 16), (Role.SECONDARY, 0)):
            store = MemoryLeaseStore(replicate=replicate)
            store.commit([lease(1)], pending=False)
            other = evolve(lease(1), duid=b"\x00\x03other", iaid=9)
            [result] = self.receive(store, other, role=role)
            self.assertEqual(result["status"], status)
            stored = store.get(lease(1).address, 128)
            assert stored is not None
            self.assertEqual(stored.duid, lease(1).duid if status else other.duid)

    def test_notConfigured(self) -> None:
        """A binding outside this relationship's pools: ConfigurationConflict."""
        store = MemoryLeaseStore(replicate=replicate)
        [result] = self.receive(store, lease(1), configured=lambda one: False)
        self.assertEqual(result["status"], FailoverStatus.CONFIGURATION_CONFLICT)
        self.assertIsNone(store.get(lease(1).address, 128))

    def test_sameKeyTwice(self) -> None:
        """A binding twice in one batch: the second is resolved against the first."""
        store = MemoryLeaseStore(replicate=replicate)
        first = lease(1)
        later = evolve(first, cltt=T0 + 60, expires=T0 + 660)
        results = self.receive(store, later, first)
        self.assertEqual([r["status"] for r in results], [0, 19])
        stored = store.get(first.address, 128)
        assert stored is not None
        self.assertEqual(stored.cltt, T0 + 60)
        self.assertEqual(store.committed[-1][0].cltt, T0 + 60)

    def test_nothingToStore(self) -> None:
        """A batch with nothing accepted answers at once."""
        store = MemoryLeaseStore(autoFlush=False, replicate=replicate)
        d = receiveBindings(
            store, Role.SECONDARY, [bindingToBox(lease(1), 0.0)], T0, configured=lambda _: False
        )
        self.assertEqual(len(self.successResultOf(d)), 1)

    def test_brokenBox(self) -> None:
        """A binding that cannot be resolved gets UnspecFail; the others go on."""
        store = MemoryLeaseStore(replicate=replicate)
        broken = dict(bindingToBox(lease(1), 0.0))
        del broken["partner_lifetime"]
        d = receiveBindings(store, Role.SECONDARY, [broken, bindingToBox(lease(2), 0.0)], T0)
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], [1, 0])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class PairTests(SynchronousTestCase):
    """Two stores, two queues, wired to each other through L{receiveBindings}."""

    def test_replicates(self) -> None:
        """
        Changes on each side reach the other, are stored there without a
        mark, and are acked: nothing is left pending on either side.
        """
        clock = Clock()
        clock.advance(T0)
        stores = [MemoryLeaseStore(replicate=replicate) for _ in range(2)]
        roles = [Role.PRIMARY, Role.SECONDARY]
        queues = [
            UpdateQueue(
                REL,
                store,
                clock,
                maxUnacked=4,
                partnerLifetime=lambda one: T0 + 900,
                gatherDelay=0.0,
            )
            for store in stores
        ]
        for me, other in ((0, 1), (1, 0)):

            def send(
                boxes: list[dict[str, Any]], other: int = other
            ) -> Deferred[list[dict[str, Any]]]:
                return receiveBindings(
                    stores[other], roles[other], boxes, clock.seconds(), queue=queues[other]
                )

            queues[me].attach(send)
        for n in range(1, 11):
            side = n % 2
            stores[side].commit([lease(n)])
            queues[side].enqueue(lease(n))
        for _ in range(10):
            clock.advance(0)
        for store in stores:
            self.assertEqual(store.pendingCount(REL), 0)
            self.assertEqual(len(list(store.iterLeases(100))), 10)
        for n in range(1, 11):
            mine = stores[n % 2].get(lease(n).address, 128)
            theirs = stores[1 - n % 2].get(lease(n).address, 128)
            assert mine is not None and theirs is not None
            self.assertEqual((mine.partner_lifetime_acked, mine.stateAcked), (T0 + 900, True))
            self.assertEqual(mine.partner_lifetime_sent, T0 + 900)
            self.assertEqual(evolve(theirs, partner_lifetime_sent=T0 + 900), mine)

    def test_conflictConverges(self) -> None:
        """
        Two different records of one address: the older side's update is
        rejected, the newer side's record wins on both, without a storm.
        """
        clock = Clock()
        clock.advance(T0 + 1000)
        stores = [MemoryLeaseStore(replicate=replicate) for _ in range(2)]
        roles = [Role.PRIMARY, Role.SECONDARY]
        queues = [UpdateQueue(REL, store, clock, maxUnacked=4, gatherDelay=0.0) for store in stores]
        sent = [0, 0]
        for me, other in ((0, 1), (1, 0)):

            def send(
                boxes: list[dict[str, Any]], me: int = me, other: int = other
            ) -> Deferred[list[dict[str, Any]]]:
                sent[me] += len(boxes)
                return receiveBindings(
                    stores[other], roles[other], boxes, clock.seconds(), queue=queues[other]
                )

            queues[me].attach(send)
        old = evolve(lease(1), state=BindingState.RELEASED, cltt=T0 + 10)
        new = evolve(lease(1), cltt=T0 + 500, expires=T0 + 1100)
        stores[0].commit([old])
        stores[1].commit([new])
        with capturedLogs():
            for _ in range(5):
                clock.advance(0)
            clock.advance(60)
        for store in stores:
            self.assertEqual(store.pendingCount(REL), 0)
            stored = store.get(new.address, 128)
            assert stored is not None
            self.assertEqual((stored.state, stored.cltt), (BindingState.ACTIVE, T0 + 500))
        self.assertLessEqual(sum(sent), 4)


class Pair:
    """
    A primary and a secondary: two stores and two queues on one L{Clock},
    each queue's batches applied to the other side with L{receiveBindings}
    (the partner's queue woken for the records it should send).

    @ivar stores: the primary's and the secondary's store.
    @ivar queues: their queues.
    @ivar loseAnswers: the partner still applies what it receives, but its
        answers never arrive (a connection lost after the partner stored a
        batch and before its answer came).
    """

    PRIMARY, SECONDARY = 0, 1
    roles = (Role.PRIMARY, Role.SECONDARY)

    def __init__(self, start: float = T0) -> None:
        self.clock = Clock()
        self.clock.advance(start)
        self.stores = [MemoryLeaseStore(replicate=replicate) for _ in self.roles]
        self.queues = [
            UpdateQueue(
                REL,
                store,
                self.clock,
                maxUnacked=4,
                partnerLifetime=lambda one: T0 + 900,
                gatherDelay=0.0,
            )
            for store in self.stores
        ]
        self.loseAnswers = False
        self.connect()

    def connect(self) -> None:
        """(Re)connect: both queues attached, resending whatever is pending."""
        for me in (self.PRIMARY, self.SECONDARY):
            self.queues[me].attach(self._sender(1 - me))

    def _sender(self, other: int) -> queuemodule.Sender:
        def send(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
            return self._deliver(other, boxes)

        return send

    def disconnect(self) -> None:
        for queue in self.queues:
            queue.detach()

    def _deliver(self, side: int, boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        answer = receiveBindings(
            self.stores[side],
            self.roles[side],
            boxes,
            self.clock.seconds(),
            queue=self.queues[side],
        )
        if self.loseAnswers:
            return Deferred()
        return answer

    def change(self, side: int, one: Lease) -> Lease:
        """Commit a change of C{side}'s engine and enqueue it."""
        self.stores[side].commit([one])
        self.queues[side].enqueue(one)
        return one

    def current(self, side: int, n: int) -> Lease:
        found = self.stores[side].get(lease(n).address, 128)
        assert found is not None
        return found

    def clientChange(self, side: int, n: int, state: BindingState, at: float, **kw: Any) -> Lease:
        """
        The engine's change of the client's binding of address C{n} on
        C{side} at C{at} (a Release, Decline, withdrawal or the same client
        back): the stored record evolved, its acknowledged fields kept.
        """
        self.clock.advance(max(0.0, at - self.clock.seconds()))
        values: dict[str, Any] = {"state": state, "start_time_of_state": at, "cltt": at}
        values.update(kw)
        return self.change(side, evolve(self.current(side, n), **values))

    def settle(self, seconds: float = 0.0) -> None:
        """Let every batch and answer go through; then C{seconds} pass (retries)."""
        for _ in range(5):
            self.clock.advance(0)
        step = 1.0
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
            for _ in range(3):
                self.clock.advance(0)

    def pending(self) -> list[int]:
        return [store.pendingCount(REL) for store in self.stores]

    def records(self, side: int) -> dict[Any, tuple[Any, ...]]:
        """What both must agree on, per key."""
        return {
            one.key: (one.state, one.duid, one.iaid, one.start_time_of_state, one.cltt, one.expires)
            for one in self.stores[side].iterLeases(100)
        }


class ConflictConvergenceTests(SynchronousTestCase):
    """
    A Release, Decline or re-grant soon after the last replicated change
    (within the 5 s tolerance) is replicated, and two servers that
    disagree converge: both queues drain, both stores agree (the
    integration tests' stuck queues, failover-bugs #1).
    """

    def assertConverged(self, pair: Pair) -> None:
        self.assertEqual(pair.pending(), [0, 0])
        self.assertEqual(pair.records(Pair.PRIMARY), pair.records(Pair.SECONDARY))

    def test_changesSoonAfterGrant(self) -> None:
        """
        The primary grants six leases and the secondary one, all replicated
        and acked; then, within a second: releases, a decline, a withdrawal,
        a client back after its release, a released address given to
        another client once its release is acked, and a release on the
        secondary.  Every change reaches the other side at once: nothing is
        rejected, nothing is left pending, the stores agree.
        """
        pair = Pair()
        P, S = Pair.PRIMARY, Pair.SECONDARY
        for n in range(1, 7):
            pair.change(P, lease(n))
        pair.change(S, lease(7))
        pair.settle()
        self.assertConverged(pair)
        pair.clientChange(P, 1, BindingState.RELEASED, T0 + 0.25)
        pair.clientChange(P, 2, BindingState.ABANDONED, T0 + 0.3, expires=T0 + 86400)
        pair.clientChange(P, 3, BindingState.RELEASED, T0 + 0.3)
        pair.clientChange(P, 3, BindingState.ACTIVE, T0 + 0.5, expires=T0 + 600.5)
        pair.clientChange(P, 4, BindingState.RELEASED, T0 + 0.5)
        pair.clientChange(P, 5, BindingState.EXPIRED, T0 + 0.6, expires=T0 + 0.6, valid_lifetime=0)
        pair.clientChange(S, 7, BindingState.RELEASED, T0 + 0.6)
        pair.settle()
        self.assertTrue(pair.current(P, 4).stateAcked)
        other = evolve(lease(4), duid=b"\x00\x03other", iaid=44, start_time_of_state=T0 + 0.7)
        pair.change(P, evolve(other, cltt=T0 + 0.7, expires=T0 + 600.7))
        pair.settle()
        self.assertConverged(pair)
        self.assertEqual([queue.rejected for queue in pair.queues], [0, 0])
        states = {n: pair.current(S, n).state for n in range(1, 8)}
        A, R, X = BindingState.ACTIVE, BindingState.RELEASED, BindingState.EXPIRED
        self.assertEqual(states, {1: R, 2: BindingState.ABANDONED, 3: A, 4: A, 5: X, 6: A, 7: R})
        self.assertEqual(pair.current(S, 4).duid, b"\x00\x03other")
        self.assertEqual(pair.current(P, 7).state, R)

    def test_stuckQueuesDrain(self) -> None:
        """
        The state the old rules left (failover-bugs #1): the primary holds
        the client's release, the secondary the ACTIVE binding it had
        acked, each rejected by the other and pending on both sides.  On
        reconnection the secondary takes the release and the primary acks
        the ACTIVE record its release follows: both drain, both agree.
        """
        pair = Pair()
        P, S = Pair.PRIMARY, Pair.SECONDARY
        pair.disconnect()
        active = evolve(lease(1), partner_state_acked=BindingState.ACTIVE, partner_stos_acked=T0)
        released = evolve(
            active, state=BindingState.RELEASED, start_time_of_state=T0 + 0.25, cltt=T0 + 0.25
        )
        pair.stores[P].commit([released])
        pair.stores[S].commit([active], pending=False)
        pair.stores[S].markPending([active.key])
        self.assertEqual(pair.pending(), [1, 1])
        pair.clock.advance(20)
        with capturedLogs() as logged:
            pair.connect()
            pair.settle()
        self.assertConverged(pair)
        self.assertEqual(pair.current(S, 1).state, BindingState.RELEASED)
        self.assertEqual([queue.rejected for queue in pair.queues], [0, 0])
        self.assertEqual([e for e in logged if e["log_level"] >= LogLevel.warn], [])

    def test_lostAck(self) -> None:
        """
        The secondary stores the primary's grant but its ack is lost with
        the connection; the client then releases on the secondary.  After
        reconnection the primary resends the grant while the secondary
        sends the release: the secondary answers the grant with success
        (superseded by its release), the primary takes the release.
        """
        pair = Pair()
        P, S = Pair.PRIMARY, Pair.SECONDARY
        pair.loseAnswers = True
        pair.change(P, lease(1))
        pair.settle()
        pair.disconnect()
        pair.loseAnswers = False
        self.assertEqual(pair.pending(), [1, 0])
        self.assertTrue(pair.current(S, 1).stateAcked)
        pair.clientChange(S, 1, BindingState.RELEASED, T0 + 0.25)
        pair.connect()
        with capturedLogs():
            pair.settle(120)
        self.assertConverged(pair)
        self.assertEqual(pair.current(P, 1).state, BindingState.RELEASED)

    def test_concurrentChangesConverge(self) -> None:
        """
        Both sides change one binding while apart (a partition), at the
        same time within the tolerance: the primary's record wins on both
        sides, the secondary's rejected update is replaced by it (no longer
        pending), and nothing goes back and forth afterwards.
        """
        pair = Pair()
        P, S = Pair.PRIMARY, Pair.SECONDARY
        pair.change(P, lease(1))
        pair.settle()
        pair.disconnect()
        pair.clientChange(P, 1, BindingState.EXPIRED, T0 + 1, cltt=T0, expires=T0 + 1)
        pair.clientChange(S, 1, BindingState.RELEASED, T0 + 2)
        pair.connect()
        with capturedLogs():
            pair.settle(300)
        self.assertConverged(pair)
        self.assertEqual(pair.current(S, 1).state, BindingState.EXPIRED)
        self.assertLessEqual(sum(queue.sent for queue in pair.queues), 4)


# --- over SQLite, on the real reactor --------------------------------------------


def later(value: Any, delay: float = 0.001) -> Deferred[Any]:
    return deferLater(reactor, delay, lambda: value)


class SQLiteQueueTests(TestCase):
    """The queue over L{SQLiteLeaseStore}, on the real reactor."""

    timeout = 30

    def openStore(self, path: str) -> SQLiteLeaseStore:
        store = SQLiteLeaseStore(path, reactor, replicate=replicate)
        self.addCleanup(store.close)
        return store

    def databasePath(self) -> str:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        return str(directory / "leases.sqlite")

    async def test_flushAcksDurably(self) -> None:
        """
        500 bindings committed and enqueued are sent within the in-flight
        bound, acked, and after a reopen nothing is pending and every record
        carries the ack.
        """
        path = self.databasePath()
        store = self.openStore(path)
        queue = UpdateQueue(REL, store, reactor, maxUnacked=64)
        inFlight = [0, 0]

        def send(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
            inFlight[0] += len(boxes)
            inFlight[1] = max(inFlight[1], inFlight[0])

            def answered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
                inFlight[0] -= len(boxes)
                return results

            return later(success(boxes)).addCallback(answered)

        queue.attach(send)
        leases = [lease(n) for n in range(1, 501)]
        for i in range(0, 500, 50):
            await store.commit(leases[i : i + 50])
            for one in leases[i : i + 50]:
                queue.enqueue(one)
        await queue.flush()
        self.assertLessEqual(inFlight[1], 64)
        self.assertEqual((queue.sent, queue.acked), (500, 500))
        await store.close()
        store = self.openStore(path)
        self.assertEqual(store.pendingCount(REL), 0)
        for one in store.iterLeases(100):
            self.assertTrue(one.stateAcked)

    async def test_restartResends(self) -> None:
        """What was sent but never acked before a close goes again after a reopen."""
        path = self.databasePath()
        store = self.openStore(path)
        queue = UpdateQueue(REL, store, reactor, maxUnacked=10)
        lost = FakeSender()
        queue.attach(lost)
        await store.commit([lease(n) for n in range(1, 6)])
        queue.enqueue(lease(1))
        await later(None, 0.01)
        self.assertEqual(lost.addresses(), [1, 2, 3, 4, 5])
        queue.detach()
        await store.close()
        store = self.openStore(path)
        queue = UpdateQueue(REL, store, reactor, maxUnacked=10)
        sender = FakeSender(auto=success)
        queue.attach(sender)
        await queue.flush()
        self.assertEqual(sender.addresses(), [1, 2, 3, 4, 5])
        self.assertEqual(store.pendingCount(REL), 0)

    async def test_sendAll(self) -> None:
        """sendAll streams 3,000 bindings from the database within the bound."""
        store = self.openStore(self.databasePath())
        await store.commit([lease(n) for n in range(1, 3001)], pending=False)
        queue = UpdateQueue(REL, store, reactor, maxUnacked=200, pageSize=97)
        sent: list[int] = []
        inFlight = [0, 0]

        def send(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
            sent.extend(int(box["address"]) & 0xFFFF for box in boxes)
            inFlight[0] += len(boxes)
            inFlight[1] = max(inFlight[1], inFlight[0])

            def answered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
                inFlight[0] -= len(boxes)
                return results

            return later(success(boxes)).addCallback(answered)

        queue.attach(send)
        await queue.sendAll()
        self.assertEqual(sent, list(range(1, 3001)))
        self.assertLessEqual(inFlight[1], 200)

    async def test_receiveDurable(self) -> None:
        """receiveBindings answers only once the accepted rows are on disk."""
        path = self.databasePath()
        store = self.openStore(path)
        seen: list[int] = []

        def onDisk(_: object) -> None:
            import sqlite3

            raw = sqlite3.connect(path)
            seen.append(raw.execute("SELECT count(*) FROM leases").fetchone()[0])
            raw.close()

        d = receiveBindings(
            store, Role.SECONDARY, [bindingToBox(lease(n), 0.0) for n in range(1, 4)], T0
        )
        self.assertFalse(d.called)
        d.addCallback(onDisk)
        await d
        self.assertEqual(seen, [3])
        self.assertEqual(store.pendingCount(REL), 0)


CHILD = """
import sys
from ipaddress import IPv6Address

from twisted.internet import reactor
from twisted.internet.task import deferLater

from dhcp6ha.failover.queue import UpdateQueue
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SQLiteLeaseStore

path, first = sys.argv[1], int(sys.argv[2])
store = SQLiteLeaseStore(path, reactor, replicate=lambda lease: "rel")
queue = UpdateQueue("rel", store, reactor, maxUnacked=50,
                    partnerLifetime=lambda lease: lease.cltt + 1000.0)
nextBatch = first


def send(boxes):
    results = [dict(address=b["address"], prefix_length=b["prefix_length"], status=0)
               for b in boxes]
    return deferLater(reactor, 0.001, lambda: results)


def lease(batch, i):
    address = IPv6Address(0x20010DB8 << 96 | batch << 16 | i)
    return Lease(LeaseType.NA, address, 128, BindingState.ACTIVE, b"c%d" % batch, batch,
                 float(batch), float(batch), 300, 600, float(batch) + 600)


def start():
    global nextBatch
    batch, nextBatch = nextBatch, nextBatch + 1
    changes = [lease(batch, i) for i in range(4)]
    store.commit(changes).addCallbacks(durable, failed, callbackArgs=(batch, changes))


def durable(_, batch, changes):
    sys.stdout.write("%d\\n" % batch)
    sys.stdout.flush()
    for change in changes:
        queue.enqueue(change)
    start()


def failed(failure):
    sys.stderr.write(failure.getTraceback())
    reactor.stop()


queue.attach(send)
reactor.callWhenRunning(lambda: [start() for _ in range(10)])
reactor.run()
"""


class _Child(ProcessProtocol):
    def __init__(self, killAfter: int) -> None:
        self.killAfter = killAfter
        self.buffer = b""
        self.durable: list[int] = []
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.durable.extend(int(line) for line in lines)
        if len(self.durable) >= self.killAfter and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass
            self.killAfter = sys.maxsize

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class QueueCrashTests(TestCase):
    """kill -9 of a server replicating through the queue loses no update."""

    timeout = 60

    async def test_killNine(self) -> None:
        """
        A child commits batches, enqueues them and replicates them to a fake
        partner that acks after 1 ms; it is killed with SIGKILL twice.  Then
        every durable batch is present; every binding is either still
        pending or carries the partner's ack (the proposed partner lifetime
        acked, its state acknowledged): never both, never neither; and a new
        queue sends exactly the pending ones.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        path = str(directory / "leases.sqlite")
        script = str(directory / "child.py")
        Path(script).write_text(CHILD)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
        )
        durable: list[int] = []
        started = 1
        for killAfter in (120, 200):
            child = _Child(killAfter)
            reactor.spawnProcess(
                child, sys.executable, [sys.executable, script, path, str(started)], env=env
            )
            await child.ended
            self.assertGreaterEqual(len(child.durable), killAfter, child.stderr.decode())
            durable += child.durable
            started = max(durable) + 11

        store = SQLiteLeaseStore(path, reactor, replicate=replicate)
        self.addCleanup(store.close)
        pending = {one.key for _, one in allPending(store, REL, 500)}
        present: dict[int, int] = {}
        acked = 0
        for one in store.iterLeases(500):
            present[one.iaid] = present.get(one.iaid, 0) + 1
            carriesAck = one.stateAcked and one.partner_lifetime_acked == one.cltt + 1000.0
            self.assertNotEqual(one.key in pending, carriesAck, one)
            acked += carriesAck
        self.assertEqual([b for b in durable if present.get(b) != 4], [])
        self.assertEqual([b for b, n in present.items() if n != 4], [])
        self.assertGreater(acked, 0)

        queue = UpdateQueue(REL, store, reactor, maxUnacked=1000)
        sender = FakeSender(auto=success)
        queue.attach(sender)
        await queue.flush()
        resent = {
            (box["address"], box["prefix_length"]) for boxes, _ in sender.batches for box in boxes
        }
        self.assertEqual(resent, pending)
        self.assertEqual(store.pendingCount(REL), 0)


class AdaptiveBatchingTests(SynchronousTestCase):
    """
    At most C{maxSends} sends in flight: what becomes pending meanwhile
    goes as one send when one is answered.
    """

    def test_badBound(self) -> None:
        """C{maxSends} must allow at least one send in flight."""
        self.assertRaises(ValueError, Setup, maxSends=0)

    def test_default(self) -> None:
        """The default bound is L{DEFAULT_MAX_SENDS}, 2."""
        self.assertEqual(Setup().queue.maxSends, DEFAULT_MAX_SENDS)
        self.assertEqual(DEFAULT_MAX_SENDS, 2)

    def test_accumulates(self) -> None:
        """
        A lone binding goes at once; with C{maxSends} sends unanswered,
        later ones wait and go together when the oldest is answered.
        """
        s = Setup(maxSends=2)
        s.change(lease(1))
        s.turn()
        s.change(lease(2))
        s.turn()
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [1, 1])
        for n in (3, 4, 5):
            s.change(lease(n))
            s.turn()
        self.assertEqual(len(s.sender.batches), 2)
        self.assertEqual(s.queue.inFlight, 2)
        s.sender.answer(0)
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [1, 1, 3])
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 4, 5])
        s.sender.answerAll()
        self.assertEqual(s.store.pendingCount(REL), 0)
        self.assertEqual((s.queue.sent, s.queue.batchesSent, s.queue.acked), (5, 3, 5))
        self.assertEqual(s.queue.status()["batches_sent"], 3)

    def test_oneSend(self) -> None:
        """With C{maxSends=1}, one send at a time (stop and wait)."""
        s = Setup(maxSends=1)
        s.change(lease(1))
        s.turn()
        s.change(lease(2), lease(3))
        s.turn()
        self.assertEqual(s.sender.addresses(), [1])
        s.sender.answer()
        self.assertEqual(s.sender.addresses(), [1, 2, 3])

    def test_sendCutIntoBatches(self) -> None:
        """
        A send cut into several batches (the AMP value limit) counts once,
        until every batch of it is answered.
        """
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(maxSends=2, batchBytes=2 * one + 10)
        s.change(*[lease(n) for n in range(1, 6)])
        s.turn()
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [2, 2, 1])
        s.change(lease(6))
        s.turn()
        s.change(lease(7))
        s.turn()
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 4, 5, 6])
        s.sender.answer(0)
        s.sender.answer(0)
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 4, 5, 6])
        s.sender.answer(0)
        self.assertEqual(s.sender.addresses(), [1, 2, 3, 4, 5, 6, 7])

    def test_failedSendFrees(self) -> None:
        """A send that failed no longer counts (sending resumes after the retry delay)."""
        s = Setup(maxSends=1, retryDelay=30.0)
        s.change(lease(1))
        s.turn()
        s.change(lease(2))
        s.turn()
        _, d = s.sender.batches[0]
        with capturedLogs():
            d.errback(RuntimeError("lost"))
        self.assertEqual(s.queue.inFlight, 0)
        s.clock.advance(30.0)
        self.assertEqual(s.sender.addresses(), [1, 1, 2])

    def test_detachForgetsSends(self) -> None:
        """After detach and attach, the bound starts afresh: everything pending goes."""
        s = Setup(maxSends=1)
        s.change(lease(1))
        s.turn()
        s.change(lease(2))
        s.turn()
        s.queue.detach()
        sender = FakeSender()
        s.queue.attach(sender)
        s.turn()
        self.assertEqual(sender.addresses(), [1, 2])

    def test_flushWaitsForAccumulated(self) -> None:
        """
        A flush called while the bound holds bindings back fires only once
        those are sent and answered too.
        """
        s = Setup(maxSends=1)
        s.change(lease(1))
        s.turn()
        s.change(lease(2), lease(3))
        d = s.queue.flush()
        s.turn()
        self.assertEqual(s.sender.addresses(), [1])
        s.sender.answer()
        self.assertNoResult(d)
        self.assertEqual(s.sender.addresses(), [1, 2, 3])
        s.sender.answer()
        self.successResultOf(d)

    def test_sendAllBounded(self) -> None:
        """L{UpdateQueue.sendAll} streams within the bound as well, and ends."""
        one = commands._encodedSize(bindingToBox(lease(1), 0.0))
        s = Setup(maxSends=1, maxUnacked=4, batchBytes=2 * one + 10)
        s.store.commit([lease(n) for n in range(1, 11)], pending=False)
        d = s.queue.sendAll()
        s.turn()
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [2, 2])
        while s.sender.waiting():
            self.assertNoResult(d)
            s.sender.answer(0)
        self.successResultOf(d)
        self.assertEqual(s.sender.addresses(), list(range(1, 11)))

    def test_storedProposalNotAmended(self) -> None:
        """
        A binding stored with the partner lifetime the queue would propose
        (the engine's L{IPartnerLifetimePolicy} hook) goes in the same turn,
        with no store write before it.
        """
        s = Setup(autoFlush=False, partnerLifetime=lambda one: T0 + 5000.0)
        stored = lease(1, partner_lifetime_sent=T0 + 5000.0)
        s.store.commit([stored])
        s.store.flush()
        s.queue.enqueue(stored)
        s.turn()
        [(boxes, _)] = s.sender.batches
        self.assertEqual(boxes, [bindingToBox(stored, T0 + 5000.0)])
        self.assertEqual(s.store.get(stored.address, 128), stored)


class GatheringTests(SynchronousTestCase):
    """
    A binding that becomes pending, and the next send after an answer,
    wait C{gatherDelay} to gather more into one batch; explicit requests
    do not wait.
    """

    def test_default(self) -> None:
        """The default delay is L{DEFAULT_GATHER_DELAY}, 10 ms."""
        queue = UpdateQueue(REL, MemoryLeaseStore(), Clock(), maxUnacked=10)
        self.assertEqual((queue.gatherDelay, DEFAULT_GATHER_DELAY), (0.01, 0.01))

    def test_negative(self) -> None:
        """A negative delay is refused."""
        self.assertRaises(ValueError, Setup, gatherDelay=-0.001)

    def test_gathers(self) -> None:
        """
        What becomes pending within the delay of the first change goes in
        one batch, when the delay is over.
        """
        s = Setup(gatherDelay=0.01)
        s.turn()
        s.change(lease(1))
        s.turn()
        s.clock.advance(0.006)
        s.change(lease(2), lease(3))
        s.clock.advance(0.003)
        self.assertEqual(s.sender.batches, [])
        s.clock.advance(0.001)
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [3])

    def test_afterAnswer(self) -> None:
        """
        With the sends in flight at their bound, an answer lets the next
        send go only after the delay, with all that accumulated by then.
        """
        s = Setup(gatherDelay=0.01, maxSends=1)
        s.change(lease(1))
        s.clock.advance(0.01)
        s.change(lease(2))
        s.clock.advance(0.01)
        self.assertEqual(s.sender.addresses(), [1])
        s.sender.answer()
        s.change(lease(3))
        s.clock.advance(0.009)
        self.assertEqual(s.sender.addresses(), [1])
        s.clock.advance(0.001)
        self.assertEqual(s.sender.addresses(), [1, 2, 3])
        self.assertEqual([len(boxes) for boxes, _ in s.sender.batches], [1, 2])

    def test_flushAtOnce(self) -> None:
        """
        L{UpdateQueue.flush} sends on the next turn, not after the delay,
        and while it waits each answer lets the next send go at once; once
        it has fired, changes are gathered again.
        """
        s = Setup(gatherDelay=0.5, maxUnacked=1)
        s.turn()
        s.change(lease(1), lease(2))
        d = s.queue.flush()
        s.turn()
        self.assertEqual(s.sender.addresses(), [1])
        s.sender.answer()
        self.assertEqual(s.sender.addresses(), [1, 2])
        s.sender.answer()
        self.successResultOf(d)
        s.change(lease(3))
        s.clock.advance(0.4)
        self.assertEqual(s.sender.addresses(), [1, 2])
        s.clock.advance(0.1)
        self.assertEqual(s.sender.addresses(), [1, 2, 3])

    def test_attachAtOnce(self) -> None:
        """A new connection sends what is pending on the next turn."""
        s = Setup(gatherDelay=0.5, attach=False)
        s.change(lease(1))
        s.queue.attach(s.sender)
        s.turn()
        self.assertEqual(s.sender.addresses(), [1])
