# -*- test-case-name: tests.test_queue -*-
"""
The persistent lazy-update queue of one failover relationship (RFC 8156
sections 4.3 and 7), and the receiving side of binding updates.

Sending: L{UpdateQueue}
=======================
The queue holds nothing of its own that a crash could lose.  The lease
store marks every binding change of the relationship I{pending}, with a
version, in the very transaction that stores the change
(L{dhcp6ha.interfaces.ILeaseStore.commit}); the mark is cleared only when
the partner's ack of that version is stored
(L{dhcp6ha.interfaces.ILeaseStore.acknowledge}).  The queue reads pending
bindings back by version (L{dhcp6ha.interfaces.ILeaseStore.pendingUpdates},
keyset pagination after a cursor), sends them in BindingUpdate batches and
stores the acks.  L{UpdateQueue.enqueue} only wakes it: the binding is
already durable.  The store never returns a version that is not yet durable,
so nothing reaches the partner before it is on our disk.

Bounded: at most C{maxUnacked} bindings are in flight (sent, not yet
answered), in as many batches as that takes (pipelined; each batch is cut by
L{dhcp6ha.failover.commands.batches} to stay under the AMP value limit).  In
memory there is only what is in flight and a bounded table for the lag
measurement.

Adaptive batching: at most C{maxSends} sends are unanswered at once (a send
is what one read of pending bindings yields, up to the room C{maxUnacked}
leaves, cut into as many batches as the AMP limit needs; a send is
unanswered until all of its batches are answered or failed).  What becomes
pending while that many are in flight waits, and goes as one send when the
oldest is answered.  At low load the lag stays one round trip (a lone
binding goes at once); under load each send grows by itself to what
accumulated during a round trip, so the costs paid per batch (the AMP box
and its TLS record, the store read here, the partner's durable commit, our
ack write) are shared by many bindings.

Gathering (lazy updates, section 4.3): a binding that becomes pending is
sent C{gatherDelay} seconds later (10 ms by default), and after an answer
the next send waits as long, so that what accumulates meanwhile goes as
one batch.  The per-batch costs are the larger part of what replication
costs the primary's one thread (its clients wait behind it): with 10 ms,
at 1,180 exchanges/s, 14.6 bindings per batch instead of 3.7 and a
Request's median Reply time 2.34 instead of 3.35 ms (bench_perfdhcp
--pin), for a median lag of 14 ms instead of 7.6.  An explicit request
(L{UpdateQueue.flush}, L{UpdateQueue.sendAll}, a new connection, the
retry timer) is served at once.

Partner lifetime (section 4.4): the lifetime proposed for an ACTIVE binding
is the larger of its stored C{partner_lifetime_sent} and
C{partnerLifetime(binding)} (pass C{FailoverPolicy.partnerLifetime}).  The
enqueued lease itself is not used (only its key): what is sent is read
back from the store, durable.  The engine stores the proposal with the
change itself (L{dhcp6ha.interfaces.IPartnerLifetimePolicy}, which
L{FailoverPolicy} provides), so for a grant or renewal the proposal is the
stored value and nothing more is written.  When the proposal is larger than
the stored value (a binding stored otherwise) it is first stored
(C{ILeaseStore.amend}, same version, same mark) and the batch goes only once
that is durable, so that after a crash we never forget a lifetime the
partner may have acked (the PARTNER-DOWN reuse rule waits for it).

Answers (section 7.7): a binding answered with success is acknowledged:
the store applies C{conflict.acknowledged(current record, sent record)} to
the binding as it is when the ack is written, and clears its pending mark
if it is still at the version sent (a newer change stays pending and goes
in its turn), with no read first (C{ILeaseStore.acknowledge}).  A
rejection (AddressInUse, OutdatedBindingInformation...) is counted and
logged once per batch; the
binding stays pending, behind the cursor, and is not sent again until a
later trigger (section 7.5.4: never in a tight loop):

  - a new connection (L{UpdateQueue.attach} rescans from version 0);
  - the retry timer: a rejection, or a batch that failed outright, starts
    it (C{retryDelay}, 30 s by default); when it fires the queue rescans
    from version 0, resending every pending binding not in flight.  If the
    next rejection comes within twice the last delay of that rescan, the
    delay doubles (up to C{maxRetryDelay}, an hour), otherwise it starts
    again at C{retryDelay}.  After a failed batch nothing more is sent
    until the timer fires.

Meanwhile the partner, which rejected our record as outdated, sends us its
own; once we accept it the binding is no longer pending here.

L{UpdateQueue.flush} (UPDREQ, and entering NORMAL, section 8.8) rescans from
version 0 and fires once every binding pending when it was called (durable
then) has been sent and answered, acked or rejected: bindings in flight are
waited for, bindings rejected before are sent again (an explicit request of
the partner or of the state machine, not a loop).
L{UpdateQueue.sendAll} (UPDREQALL) streams every binding from
C{ILeaseStore.iterLeases}, a page at a time as the in-flight bound allows,
ahead of the pending updates; its acks update the acknowledgement fields in
place but clear no mark (their versions are not known), so a pending
binding also goes the usual way.  An ack of a binding whose record, as
read, says the partner acked it already (its state, and at least the
partner lifetime proposed: the usual resync of a partner that lost its
database) changes nothing and costs no write.

L{UpdateQueue.detach} forgets what is in flight: the rows are still pending
and go again on the next connection; answers that arrive for a forgotten
batch are ignored, and waiting L{UpdateQueue.flush} and
L{UpdateQueue.sendAll} Deferreds fail with L{QueueDetached}.

Receiving: L{receiveBindings}
=============================
Resolves each received binding against ours with L{conflict.resolve},
stores the accepted ones with C{pending=False} (the partner has them: never
echoed back), answers success without storing a binding ours was derived
from (superseded: the partner, whose record it is, then takes ours as its
successor), marks ours pending again where the resolution says the
partner should get ours (C{ILeaseStore.markPending}: not if it is pending
already, so two disagreeing servers do not ping-pong), and answers only once
all of that is durable (section 7.5.2).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv6Address
from typing import Any, Protocol, runtime_checkable

from attrs import define, field
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha.failover import commands
from dhcp6ha.failover.commands import FailoverStatus, bindingToBox
from dhcp6ha.failover.conflict import DEFAULT_TOLERANCE, resolve
from dhcp6ha.failover.machine import Role
from dhcp6ha.histogram import DurationHistogram
from dhcp6ha.interfaces import ILeaseStore, IUpdateQueue
from dhcp6ha.leases.lease import BindingState, Lease, withPartnerLifetimeSent

__all__ = [
    "DEFAULT_GATHER_DELAY",
    "DEFAULT_MAX_SENDS",
    "QueueDetached",
    "Sender",
    "UpdateQueue",
    "receiveBindings",
]

DEFAULT_MAX_SENDS = 2
"""The default of L{UpdateQueue}'s C{maxSends}: one send answered while
the next accumulates."""

DEFAULT_GATHER_DELAY = 0.01
"""The default of L{UpdateQueue}'s C{gatherDelay} (seconds; see
"Gathering" in the module docstring)."""

Sender = Callable[[list[dict[str, Any]]], Deferred[list[dict[str, Any]]]]
"""Sends one BindingUpdate batch of binding boxes; fires with the results."""

_Key = tuple[IPv6Address, int]


class QueueDetached(Exception):
    """The partner connection was lost (or there was none) before it was done."""


def _ackKnown(sent: Lease) -> bool:
    """
    Does C{sent} (a record as read, with the partner lifetime proposed) say
    already that the partner acked what it carries: its state (same start
    time) and at least the partner lifetime proposed?  Then
    C{acknowledged(sent, sent) == sent}: an ack of it changes nothing.
    """
    return sent.stateAcked and sent.partner_lifetime_acked >= sent.partner_lifetime_sent


@define
class _Row:
    """
    One binding in a batch.

    @ivar version: the version read (C{None} for L{UpdateQueue.sendAll}).
    @ivar sent: the record as sent (its C{partner_lifetime_sent} is the
        proposal).
    @ivar tick: the queue's event counter when it was read (lag).
    """

    version: int | None
    sent: Lease
    tick: int


@define
class _Batch:
    """One BindingUpdate batch, from its creation until its acks are durable."""

    id: int
    generation: int
    send: int
    rows: list[_Row]
    boxes: list[dict[str, Any]]
    answered: bool = False


@define
class _Waiter:
    """
    A L{UpdateQueue.flush} or L{UpdateQueue.sendAll} caller.

    @ivar until: once its scan has ended, the id of the last batch it waits
        for (C{None} before).
    """

    deferred: Deferred[None] = field(factory=Deferred)
    until: int | None = None


@define
class _SendAll:
    """
    An L{UpdateQueue.sendAll} in progress.

    @ivar until: once every binding is read, the id of its last batch.
    """

    leases: Iterator[Lease]
    waiters: list[_Waiter]
    exhausted: bool = False
    until: int | None = None


@implementer(IUpdateQueue)
class UpdateQueue:
    """
    The lazy-update queue of one failover relationship (see the module
    docstring).

    @ivar relationship: the relationship name (the store's pending marks).
    @ivar maxUnacked: the most bindings in flight (the partner's
        C{max_unacked} of Connect, or ours, whichever is smaller).
    @ivar maxSends: the most sends in flight (see "Adaptive batching" in
        the module docstring).
    @ivar partnerLifetime: the partner lifetime to propose for an ACTIVE
        binding, or C{None} to send the stored C{partner_lifetime_sent}.
    @ivar sent: bindings sent (resends included).
    @ivar batchesSent: BindingUpdate batches sent (C{sent / batchesSent} is
        the mean batch size).
    @ivar acked: bindings the partner acked.
    @ivar rejected: bindings the partner rejected.
    @ivar failedBatches: batches that failed without an answer (connection
        loss excepted).
    @ivar retries: rescans started by the retry timer.
    @ivar lastAckTime: when the last ack arrived (C{None}: never).
    @ivar lag: time from L{enqueue} to the partner's ack, per binding
        (bindings enqueued again before they were sent count once, from the
        first enqueue).
    """

    log = Logger()

    def __init__(
        self,
        relationship: str,
        store: ILeaseStore,
        clock: IReactorTime,
        *,
        maxUnacked: int,
        maxSends: int = DEFAULT_MAX_SENDS,
        gatherDelay: float = DEFAULT_GATHER_DELAY,
        batchBytes: int = commands.MAX_BATCH_BYTES,
        partnerLifetime: Callable[[Lease], float] | None = None,
        retryDelay: float = 30.0,
        maxRetryDelay: float = 3600.0,
        pageSize: int = 500,
        maxTracked: int = 10_000,
    ) -> None:
        """
        @param relationship: the relationship name.
        @param store: the lease store holding the pending marks.
        @param clock: time and scheduling.
        @param maxUnacked: the most bindings in flight at once (at least 1).
        @param maxSends: the most sends in flight at once (at least 1; see
            "Adaptive batching" in the module docstring).
        @param gatherDelay: how long a binding that becomes pending, and
            the next send after an answer, wait to gather more (seconds, at
            least 0; see "Gathering" in the module docstring).
        @param batchBytes: the size limit of one batch's AMP value.
        @param partnerLifetime: see L{partnerLifetime}.
        @param retryDelay: the first delay before rejected bindings are sent
            again.
        @param maxRetryDelay: the longest.
        @param pageSize: bindings per store read in L{sendAll}.
        @param maxTracked: the most enqueued bindings whose lag is measured
            at once (the oldest is dropped beyond).
        """
        if maxUnacked < 1:
            raise ValueError("maxUnacked must be at least 1")
        if maxSends < 1:
            raise ValueError("maxSends must be at least 1")
        if not gatherDelay >= 0:
            raise ValueError("gatherDelay must be at least 0")
        self.relationship = relationship
        self._store = store
        self._clock = clock
        self.maxUnacked = maxUnacked
        self.maxSends = maxSends
        self.gatherDelay = gatherDelay
        self._batchBytes = batchBytes
        self.partnerLifetime = partnerLifetime
        self._retryDelay = retryDelay
        self._maxRetryDelay = maxRetryDelay
        self._pageSize = pageSize
        self._maxTracked = maxTracked

        self._sender: Sender | None = None
        self._generation = 0
        self._paused = False
        self._blocked = False  # after a failed batch, until the retry timer

        self._cursor = 0
        self._scanDone = False
        self._wakeCall: IDelayedCall | None = None
        self._pumping = False
        self._pumpAgain = False

        self._unanswered = 0
        self._inFlight: set[tuple[_Key, int | None]] = set()
        self._outstanding: dict[int, _Batch] = {}
        self._lastBatchId = 0
        # Per send in flight: its batches not answered yet.
        self._sends: dict[int, int] = {}
        self._lastSendId = 0

        self._flushes: list[_Waiter] = []
        self._all: _SendAll | None = None

        self._retryCall: IDelayedCall | None = None
        self._currentRetryDelay = retryDelay
        self._lastRetry: float | None = None

        self._tick = 0
        # Per key: (tick, time) of the first enqueue not acked yet, and of
        # the latest one.  Oldest first, dropped first at the bound (an
        # OrderedDict: see SQLiteLeaseStore._recent).
        self._enqueued: OrderedDict[_Key, tuple[int, float, int, float]] = OrderedDict()

        self.sent = 0
        self.batchesSent = 0
        self.acked = 0
        self.rejected = 0
        self.failedBatches = 0
        self.retries = 0
        self.lastAckTime: float | None = None
        self.lag = DurationHistogram()

    # --- IUpdateQueue -----------------------------------------------------------

    def enqueue(self, lease: Lease) -> None:
        """A durable change of C{lease} is pending: wake up (and time it)."""
        self._tick += 1
        key = lease.key
        now = self._clock.seconds()
        timed = self._enqueued.get(key)
        if timed is not None:
            self._enqueued[key] = (timed[0], timed[1], self._tick, now)
        elif self._maxTracked > 0:
            if len(self._enqueued) >= self._maxTracked:
                self._enqueued.popitem(last=False)
            self._enqueued[key] = (self._tick, now, self._tick, now)
        self._wake(self.gatherDelay)

    def attach(self, sender: Sender) -> None:
        """
        A connection is up: send with C{sender}, starting (on the next
        reactor turn, so that a L{pause} right after takes effect) with
        every pending binding from version 0.
        """
        if self._sender is not None:
            self.detach()
        self._sender = sender
        self._cursor = 0
        self._wake()

    def detach(self) -> None:
        """The connection is gone: forget what is in flight (see the module docstring)."""
        if self._sender is None:
            return
        self._sender = None
        self._generation += 1
        self._unanswered = 0
        self._inFlight.clear()
        self._outstanding.clear()
        self._sends.clear()
        self._blocked = False
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        self._failWaiters(QueueDetached("the partner connection was lost"))

    def flush(self) -> Deferred[None]:
        """
        Send every binding pending now that is not in flight (rejected ones
        included) and fire once all of them, and those in flight, are
        answered; fails with L{QueueDetached} if the connection is lost
        first (or there is none), or with the error of a batch that failed
        without an answer.
        """
        if self._sender is None:
            return fail(QueueDetached("not connected to the partner"))
        waiter = _Waiter()
        self._flushes.append(waiter)
        self._cursor = 0
        self._wake()
        return waiter.deferred

    def sendAll(self) -> Deferred[None]:
        """
        Send every binding (UPDREQALL); fires once all are sent and answered.
        A call while one is running shares its end.  Fails like L{flush}.
        """
        if self._sender is None:
            return fail(QueueDetached("not connected to the partner"))
        waiter = _Waiter()
        if self._all is None:
            self._all = _SendAll(self._store.iterLeases(self._pageSize), [waiter])
        else:
            self._all.waiters.append(waiter)
        self._wake()
        return waiter.deferred

    def pause(self) -> None:
        """Send no new batch until L{resume}; what is in flight goes on."""
        self._paused = True

    def resume(self) -> None:
        """Send again."""
        if self._paused:
            self._paused = False
            self._wake()

    # --- status -----------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Is there a connection to send on?"""
        return self._sender is not None

    @property
    def inFlight(self) -> int:
        """Bindings sent (or about to be) and not answered yet."""
        return self._unanswered

    def pending(self) -> int:
        """Bindings waiting for the partner's ack (from the store)."""
        return self._store.pendingCount(self.relationship)

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the counters."""
        return {
            "relationship": self.relationship,
            "attached": self.attached,
            "paused": self._paused,
            "sent": self.sent,
            "batches_sent": self.batchesSent,
            "acked": self.acked,
            "rejected": self.rejected,
            "failed_batches": self.failedBatches,
            "retries": self.retries,
            "in_flight": self._unanswered,
            "pending": self.pending(),
            "last_ack_time": self.lastAckTime,
            "lag": self.lag.summary(),
            "lag_histogram": self.lag.snapshot(),
        }

    # --- sending ----------------------------------------------------------------

    def _wake(self, delay: float = 0.0) -> None:
        """
        Look for pending bindings C{delay} seconds from now, or earlier if
        a look is due earlier (coalesced); C{0}: on the next reactor turn.
        """
        self._scanDone = False
        call = self._wakeCall
        if call is None:
            self._wakeCall = self._clock.callLater(delay, self._woken)
        elif call.getTime() > self._clock.seconds() + delay:
            call.reset(delay)

    def _woken(self) -> None:
        self._wakeCall = None
        self._pump()

    def _pump(self) -> None:
        """Fill the in-flight window; reentrant calls (synchronous answers) loop here."""
        if self._pumping:
            self._pumpAgain = True
            return
        self._pumping = True
        try:
            budget = self.maxUnacked
            while True:
                self._pumpAgain = False
                try:
                    budget -= self._fill(budget)
                except Exception as e:
                    self._stuck(e)
                    break
                if not self._pumpAgain:
                    break
                if budget <= 0:
                    # Answers come back synchronously: yield to the reactor
                    # now and then rather than stream a whole database here.
                    if self._wakeCall is None:
                        self._wakeCall = self._clock.callLater(0, self._woken)
                    break
        finally:
            self._pumping = False

    def _fill(self, budget: int) -> int:
        """Send what the window allows (at most C{budget}); return how many."""
        dispatched = 0
        while (
            self._sender is not None
            and not self._paused
            and not self._blocked
            and dispatched < budget
            and len(self._sends) < self.maxSends
        ):
            room = min(self.maxUnacked - self._unanswered, budget - dispatched)
            if room <= 0:
                break
            rows, fromAll = self._nextRows(room)
            if rows:
                self._dispatch(rows)
                dispatched += len(rows)
            self._scanEnded(fromAll)
            if not rows and not fromAll:
                break
        self._checkWaiters()
        return dispatched

    def _nextRows(self, room: int) -> tuple[list[tuple[int | None, Lease]], bool]:
        """
        Up to C{room} bindings to send: first those of a running
        L{sendAll}, then pending ones after the cursor.
        """
        running = self._all
        if running is not None and not running.exhausted:
            leases = list(itertools.islice(running.leases, room))
            if len(leases) < room:
                running.exhausted = True
            found: list[tuple[int | None, Lease]] = [(None, lease) for lease in leases]
            return found, True
        while not self._scanDone:
            page = self._store.pendingUpdates(self.relationship, self._cursor, room)
            if len(page) < room:
                self._scanDone = True
            if page:
                self._cursor = page[-1][0]
            fresh: list[tuple[int | None, Lease]] = [
                (version, lease)
                for version, lease in page
                if (lease.key, version) not in self._inFlight
            ]
            if fresh:
                return fresh, False
        return [], False

    def _scanEnded(self, fromAll: bool) -> None:
        """After a read: waiters whose scan has ended learn their last batch."""
        if fromAll:
            running = self._all
            if running is not None and running.exhausted and running.until is None:
                running.until = self._lastBatchId
        elif self._scanDone:
            for waiter in self._flushes:
                if waiter.until is None:
                    waiter.until = self._lastBatchId

    def _proposal(self, lease: Lease) -> float:
        """The partner lifetime to propose for C{lease} (section 4.4)."""
        if self.partnerLifetime is None or lease.state is not BindingState.ACTIVE:
            return lease.partner_lifetime_sent
        return max(lease.partner_lifetime_sent, self.partnerLifetime(lease))

    def _dispatch(self, found: list[tuple[int | None, Lease]]) -> None:
        """Cut these bindings into batches and send them (after storing proposals)."""
        rows: list[_Row] = []
        proposals: list[Lease] = []
        for version, lease in found:
            proposal = self._proposal(lease)  # may raise: nothing changed yet
            sent = lease
            if proposal != lease.partner_lifetime_sent:
                sent = withPartnerLifetimeSent(lease, proposal)
                proposals.append(sent)
            rows.append(_Row(version, sent, self._tick))
        for row in rows:
            self._inFlight.add((row.sent.key, row.version))
        self._unanswered += len(rows)
        boxes = [bindingToBox(row.sent, row.sent.partner_lifetime_sent) for row in rows]
        batches: list[_Batch] = []
        start = 0
        self._lastSendId += 1
        send = self._lastSendId
        for cut in commands.batches(boxes, self._batchBytes):
            self._lastBatchId += 1
            batch = _Batch(
                self._lastBatchId, self._generation, send, rows[start : start + len(cut)], cut
            )
            start += len(cut)
            self._outstanding[batch.id] = batch
            batches.append(batch)
        self._sends[send] = len(batches)
        if not proposals:
            for batch in batches:
                self._send(batch)
            return
        # Durable before proposed: the partner may ack it, and after a crash
        # we must still know it was proposed.
        stored = self._store.amend(proposals)

        def sendAll(_: object) -> None:
            for batch in batches:
                self._send(batch)

        def notStored(failure: Failure) -> None:
            self.log.failure(
                "Failover {relationship}: storing the partner lifetimes to propose failed",
                failure,
                relationship=self.relationship,
            )
            for batch in batches:
                self._failed(failure, batch)

        stored.addCallbacks(sendAll, notStored)

    def _send(self, batch: _Batch) -> None:
        sender = self._sender
        if batch.generation != self._generation or sender is None:
            return
        self.sent += len(batch.rows)
        self.batchesSent += 1
        try:
            d = sender(batch.boxes)
        except Exception:
            d = fail()
        d.addCallbacks(self._answered, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _release(self, batch: _Batch) -> None:
        """The partner answered C{batch} (or never will): free its window."""
        batch.answered = True
        self._unanswered -= len(batch.rows)
        left = self._sends.get(batch.send, 0) - 1
        if left > 0:
            self._sends[batch.send] = left
        else:
            self._sends.pop(batch.send, None)
        for row in batch.rows:
            self._inFlight.discard((row.sent.key, row.version))

    def _answered(self, results: list[dict[str, Any]], batch: _Batch) -> None:
        if batch.generation != self._generation:
            return
        self._release(batch)
        byKey: dict[_Key, dict[str, Any]] = {}
        for answer in results:
            byKey[(answer["address"], answer["prefix_length"])] = answer
        now = self._clock.seconds()
        acks: list[tuple[Lease, int | None]] = []
        refused: list[tuple[_Row, dict[str, Any] | None]] = []
        for row in batch.rows:
            key = row.sent.key
            result = byKey.get(key)
            if result is None or result["status"] != FailoverStatus.SUCCESS:
                refused.append((row, result))
                continue
            self.acked += 1
            self.lastAckTime = now
            self._timeAck(key, row.tick, now)
            if row.version is None and _ackKnown(row.sent):
                # sendAll of a binding the partner had acked already (the
                # usual resync): the ack tells nothing the record did not
                # say, so no write.
                continue
            acks.append((row.sent, row.version))
        if refused:
            self._refused(refused, len(batch.rows))
        if acks:
            self._store.acknowledge(self.relationship, acks).addCallbacks(
                lambda _: self._done(batch),
                self._ackNotStored,
                errbackArgs=(batch,),
            )
        else:
            self._done(batch)
        if self._flushes or self._all is not None or not self.gatherDelay:
            # Someone waits for the queue to drain (or no gathering).
            self._pump()
        else:
            self._wake(self.gatherDelay)

    def _timeAck(self, key: _Key, tick: int, now: float) -> None:
        """The partner acked C{key} as read at C{tick}: record the lag of
        the enqueues before; a later one is timed to a later ack (the
        enqueues in between count as that one)."""
        timed = self._enqueued.get(key)
        if timed is None or timed[0] > tick:
            return
        self.lag.record(now - timed[1])
        if timed[2] > tick:
            self._enqueued[key] = (timed[2], timed[3], timed[2], timed[3])
        else:
            del self._enqueued[key]

    def _refused(self, refused: list[tuple[_Row, dict[str, Any] | None]], total: int) -> None:
        """Rejected (or unanswered) bindings: count, log once, retry later."""
        self.rejected += len(refused)
        row, result = refused[0]
        self.log.warn(
            "Failover {relationship}: the partner rejected {count} of {total} binding updates"
            " (first: {address}/{prefixLength}: status {status} {reason}); they stay"
            " queued for a later resend",
            relationship=self.relationship,
            count=len(refused),
            total=total,
            address=row.sent.address,
            prefixLength=row.sent.prefix_length,
            status=None if result is None else result.get("status"),
            reason="no answer" if result is None else result.get("message") or "",
        )
        self._scheduleRetry()

    def _ackNotStored(self, failure: Failure, batch: _Batch) -> None:
        self.log.failure(
            "Failover {relationship}: storing the partner's acks failed; the bindings stay queued",
            failure,
            relationship=self.relationship,
        )
        self._scheduleRetry()
        self._done(batch)

    def _failed(self, failure: Failure, batch: _Batch) -> None:
        """A batch failed without an answer (or its proposals were not stored)."""
        if batch.generation != self._generation or batch.answered:
            return
        self._release(batch)
        self.failedBatches += 1
        self.log.warn(
            "Failover {relationship}: a batch of {count} binding updates failed ({error});"
            " they stay queued, sending resumes after the retry delay",
            relationship=self.relationship,
            count=len(batch.rows),
            error=failure.getErrorMessage(),
        )
        self._blocked = True
        self._scheduleRetry()
        self._outstanding.pop(batch.id, None)
        self._failWaiters(failure)

    def _stuck(self, error: Exception) -> None:
        """
        Reading or preparing bindings failed (the store, the partner
        lifetime): stop until the retry timer, fail the waiters.  Called in
        the C{except} block (the log takes the exception being handled).
        """
        self.log.failure(
            "Failover {relationship}: reading the updates to send failed; retrying later",
            relationship=self.relationship,
        )
        self._blocked = True
        self._scheduleRetry()
        self._failWaiters(error)

    def _failWaiters(self, failure: Failure | BaseException) -> None:
        waiters = list(self._flushes)
        self._flushes.clear()
        if self._all is not None:
            waiters += self._all.waiters
            self._all = None
        for waiter in waiters:
            waiter.deferred.errback(failure)

    def _done(self, batch: _Batch) -> None:
        """C{batch} is answered and its acks are stored."""
        if self._outstanding.pop(batch.id, None) is not None:
            self._checkWaiters()

    def _checkWaiters(self) -> None:
        """Fire the waiters whose batches are all done."""
        oldest = min(self._outstanding, default=None)

        def finished(waiter: _Waiter) -> bool:
            return waiter.until is not None and (oldest is None or oldest > waiter.until)

        done = [waiter for waiter in self._flushes if finished(waiter)]
        self._flushes = [waiter for waiter in self._flushes if not finished(waiter)]
        running = self._all
        if running is not None and running.until is not None:
            if oldest is None or oldest > running.until:
                done += running.waiters
                self._all = None
        for waiter in done:
            waiter.deferred.callback(None)

    # --- retrying ---------------------------------------------------------------

    def _scheduleRetry(self) -> None:
        if self._retryCall is not None and self._retryCall.active():
            return
        now = self._clock.seconds()
        if self._lastRetry is not None and now - self._lastRetry <= 2 * self._currentRetryDelay:
            self._currentRetryDelay = min(2 * self._currentRetryDelay, self._maxRetryDelay)
        else:
            self._currentRetryDelay = self._retryDelay
        self._retryCall = self._clock.callLater(self._currentRetryDelay, self._retry)

    def _retry(self) -> None:
        """The retry timer: send every pending binding not in flight again."""
        self._retryCall = None
        self._lastRetry = self._clock.seconds()
        self._blocked = False
        if self._sender is None:
            return
        self.retries += 1
        self._cursor = 0
        self._wake()


# --- receiving -------------------------------------------------------------------

_log = Logger(namespace="dhcp6ha.failover.queue.receiveBindings")


_UNSPECIFIED = IPv6Address("::")


def _result(box: dict[str, Any], status: int, message: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "address": box.get("address", _UNSPECIFIED),
        "prefix_length": box.get("prefix_length", 128),
        "status": status,
    }
    if message is not None:
        result["message"] = message
    return result


def _incoming(box: dict[str, Any]) -> Lease:
    """
    L{bindingFromBox} with the partner lifetime the sender proposes as its
    C{partner_lifetime_sent}, built at once (no C{evolve}: this runs for
    every binding of a resync).
    """
    return Lease(
        lease_type=box["lease_type"],
        address=box["address"],
        prefix_length=box["prefix_length"],
        state=box["state"],
        duid=box["duid"],
        iaid=box["iaid"],
        start_time_of_state=box["start_time_of_state"],
        cltt=box["cltt"],
        preferred_lifetime=box["preferred_lifetime"],
        valid_lifetime=box["valid_lifetime"],
        expires=box["expires"],
        partner_lifetime_sent=float(box["partner_lifetime"]),
        fqdn=box.get("fqdn"),
        fqdn_flags=box.get("fqdn_flags") or 0,
    )


@runtime_checkable
class _ReadsMany(Protocol):
    """A store that reads many keys at once (L{SQLiteLeaseStore.getMany})."""

    def getMany(self, keys: Iterable[_Key]) -> dict[_Key, Lease]: ...


def _reader(store: ILeaseStore, keys: Iterable[_Key]) -> Callable[[_Key], Lease | None]:
    """
    A C{get} for these keys, in this reactor turn: one read for all of them
    when the store can (L{_ReadsMany}), else C{store.get} per key.  A bulk
    read that fails falls back to C{store.get}, whose errors are the
    caller's as before.
    """
    if isinstance(store, _ReadsMany):
        try:
            return store.getMany(keys).get
        except Exception:
            _log.failure("Failover: reading a batch of bindings failed; reading them one by one")

    def one(key: _Key) -> Lease | None:
        return store.get(*key)

    return one


def receiveBindings(
    store: ILeaseStore,
    role: Role,
    boxes: Sequence[dict[str, Any]],
    now: float,
    *,
    configured: Callable[[Lease], bool] | None = None,
    queue: IUpdateQueue | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Deferred[list[dict[str, Any]]]:
    """
    Apply a received BindingUpdate batch (RFC 8156 sections 7.5-7.6).

    Each binding is resolved against ours (L{conflict.resolve}, bindings of
    the same batch seeing those before them).  Accepted ones are stored with
    C{pending=False}; one that ours was derived from (superseded) is
    answered with success and not stored; where the resolution says the
    partner should have our record (a rejection, a superseded one), ours is
    marked pending again unless it is already (C{ILeaseStore.markPending})
    and C{queue}, if given, is woken for it.

    @param store: our lease store.
    @param role: our role.
    @param boxes: the bindings as received (L{commands.BINDING_FIELDS}).
    @param now: the current time.
    @param configured: is a binding in one of this relationship's pools here?
        (default: yes).
    @param queue: this relationship's update queue, to wake for our records.
    @param tolerance: times this close are the same (section 7.1).
    @return: fires with one result per binding, in order (C{address},
        C{prefix_length}, C{status}, C{message} on rejection), once the
        accepted changes are durable; fails if they could not be stored.
    """
    results: list[dict[str, Any]] = []
    accepted: dict[_Key, Lease] = {}
    sendLocal: dict[_Key, None] = {}
    get = _reader(
        store,
        [
            (box["address"], box["prefix_length"])
            for box in boxes
            if isinstance(box.get("address"), IPv6Address)
            and isinstance(box.get("prefix_length"), int)
        ],
    )
    for box in boxes:
        try:
            incoming = _incoming(box)
            key = incoming.key
            local = accepted.get(key)
            if local is None:
                local = get(key)
            resolution = resolve(
                local,
                incoming,
                role,
                now,
                configured=True if configured is None else configured(incoming),
                tolerance=tolerance,
            )
        except Exception:
            _log.failure("Failover: a received binding could not be resolved")
            results.append(_result(box, int(FailoverStatus.UNSPEC_FAIL), "internal error"))
            continue
        if resolution.accepted:
            assert resolution.record is not None
            accepted[key] = resolution.record
            results.append(_result(box, int(FailoverStatus.SUCCESS)))
        elif resolution.answeredSuccess:
            # Superseded: ours was derived from it; the partner acks it
            # (and so learns that we knew it) and gets ours as its successor.
            results.append(_result(box, int(FailoverStatus.SUCCESS), resolution.rule))
            if resolution.sendLocal and local is not None:
                sendLocal[key] = None
        else:
            status = resolution.status
            code = int(FailoverStatus.UNSPEC_FAIL if status is None else status)
            results.append(_result(box, code, resolution.rule))
            if resolution.sendLocal and local is not None:
                sendLocal[key] = None
    writes: list[Deferred[None]] = []
    if accepted:
        writes.append(store.commit(list(accepted.values()), pending=False))
    if sendLocal:
        writes.append(store.markPending(list(sendLocal)))
    if not writes:
        return succeed(results)

    def stored(_: object) -> list[dict[str, Any]]:
        if queue is not None:
            for key in sendLocal:
                lease = store.get(*key)
                if lease is not None:
                    queue.enqueue(lease)
        return results

    def unwrap(failure: Failure) -> Failure:
        if isinstance(failure.value, FirstError):
            return failure.value.subFailure
        return failure

    return gatherResults(writes, consumeErrors=True).addCallbacks(stored, unwrap)
