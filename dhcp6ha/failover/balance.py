# -*- test-case-name: tests.test_balance -*-
"""
Proportional allocation, the other direction: the primary takes back
FREE-BACKUP prefixes the secondary has not leased (RFC 8156 section 4.2.2,
DESIGN.md "Who may allocate what").

L{dhcp6ha.failover.protocol.PrefixShare} hands the secondary its reserve of
delegable prefixes, C{min(floor(available * share), maxBackup)} per pd-pool
(the I{target}).  It only ever raises the reserve; L{PrefixTakeback} lowers
it again when it is above its target, so that the two never pull against
each other: one target, handing raises the reserve up to it, taking back
lowers it down to it.

The takeback (section 4.2.2: "The primary server can attempt to take an
available delegable prefix away from the secondary by sending a BNDUPD with
the state FREE.  If the secondary accepts the BNDUPD, then the lease is now
available to the primary [...] the secondary MUST reject that BNDUPD if it
has already allocated that lease"):

  - The primary stores the FREE-BACKUP record as FREE, with a new start
    time of state, and the usual pending mark: the update queue sends it
    (L{takebackOf}: its client time is the handover's).
    The record keeps C{partner_state_acked} FREE-BACKUP: that is what marks
    a I{pending takeback} (L{isTakeback}).  Until the secondary acks the
    FREE (C{conflict.acknowledged} sets C{partner_state_acked} to FREE),
    the prefix is still the secondary's: the policy does not count it as
    the primary's own (C{FailoverPolicy.isOwn}), so the primary does not
    allocate it outside PARTNER-DOWN, and a pass of L{PrefixShare} does
    not hand it again.  Once acked it is an ordinary FREE prefix of the
    primary's.
  - The secondary accepts a FREE over its FREE-BACKUP record (later start
    time of state: only FREE-BACKUP records at least C{minAge} old, well
    beyond the conflict tolerance, are taken back).  If it has leased the
    prefix, its ACTIVE binding stands (the conflict rule "local ACTIVE,
    incoming FREE: keep until its expiry"): it answers
    OutdatedBindingInformation and sends its ACTIVE binding.
  - The primary accepts the secondary's ACTIVE binding over its
    pending-takeback record: "later wins" compares the binding's client
    time with the record's, the time of the handover (L{takebackOf}), and
    the secondary leased the prefix after it received it.  Both sides end
    with the secondary's binding.  The rejected FREE is no longer pending
    once the ACTIVE is stored, and a rejection is resent only by the
    update queue's retry timer (never in a tight loop); the takeback pass
    never picks a prefix that is not FREE-BACKUP, acked and old enough.
    One race is left: a binding the secondary made within the conflict
    tolerance (5 s) of the handover, whose update reaches the primary only
    after the takeback, is the same time as the record and loses on the
    start time of state; it is kept by the secondary until it expires
    (the primary, meanwhile, does not allocate the prefix: it is still
    the secondary's), and a renewal there, later, is accepted.  The
    secondary sends its unacked updates before its PoolRequest (section
    8.8), so that needs a lazy update delayed by more than C{minAge} in
    NORMAL.

When (only in NORMAL, connected: L{PrefixTakeback.request} asks C{mayRun}):

  - (b) over target: after each pass of L{PrefixShare} (the secondary's
    PoolRequest, when it enters NORMAL, and the primary's own top-ups):
    e.g. C{prefix-share} or C{max-backup-prefixes} lowered in the
    configuration, or a pool that filled up;
  - (a) low water: the primary counts the prefixes it grants in each pool
    (L{PrefixTakeback.granted}, a binding entering ACTIVE); when its own
    free prefixes in a pool, as counted by the last pass less those
    grants, fall below C{lowWater} (default: the pool's reserve target,
    at least 1), it runs a pass.  Under the target rule the primary's own
    count is at least C{ceil(available * (1 - share))}, so a primary
    running out of prefixes while the secondary holds some is exactly a
    reserve above the target of the pool as it is now: the pass takes
    back the excess.  When the pool is balanced as configured and the
    primary is still below the mark (a pool nearly full, or a share above
    one half), the next check waits until half of what it has is gone
    again, so that a nearly exhausted pool costs a logarithmic number of
    passes, not one per grant.

A pass takes back at most C{batch} prefixes per pool, the deepest
FREE-BACKUP ones first (the reserve is handed from the top of the pool).
Passes start at least C{interval} seconds apart; a pass that leaves some
excess behind (the batch, FREE-BACKUP records not yet acked or too young)
schedules another, with a delay that doubles (up to C{maxInterval}) while
passes take nothing back.

A pass reads no more of a pool than it needs: the reach of the reserve
(every FREE-BACKUP record lies there, L{PrefixShare.reach}), then further
down only until the available prefixes counted justify the reserve
(C{floor(available * share) >= reserve}) and the primary's own free
prefixes counted reach C{lowWater}.  When it stops early, the target it
computes is exact where it matters: the excess is then C{reserve -
maxBackup} or nothing.  Like L{PrefixShare}, it reads at most C{chunk}
prefixes per reactor turn, and every record it writes is read again and
committed in one and the same turn.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.config import PrefixPool
    from dhcp6ha.failover.protocol import PrefixShare
    from dhcp6ha.interfaces import ILeaseStore

__all__ = ["PrefixTakeback", "isTakeback", "takebackOf"]

#: Default: the most prefixes one pass takes back per pool.
DEFAULT_BATCH = 256
#: Default: how old (start time of state) a FREE-BACKUP record must be to be
#: taken back; well beyond the conflict tolerance (5 s), so that the
#: secondary sees the FREE as later than its FREE-BACKUP.
DEFAULT_MIN_AGE = 60.0
#: Default: seconds between the starts of two passes.
DEFAULT_INTERVAL = 30.0
#: Default: the longest delay between passes that take nothing back.
DEFAULT_MAX_INTERVAL = 3600.0


def isTakeback(lease: Lease) -> bool:
    """
    Is C{lease} a pending takeback: a FREE-BACKUP prefix the primary has
    made FREE and sent, whose FREE the secondary has not acked yet?  It is
    still the secondary's (the secondary may have leased it): not the
    primary's own, not to be handed again.
    """
    return (
        lease.lease_type is LeaseType.PD
        and lease.state is BindingState.FREE
        and lease.partner_state_acked is BindingState.FREE_BACKUP
    )


def takebackOf(backup: Lease, now: float) -> Lease:
    """
    The FREE record that takes the FREE-BACKUP record C{backup} back at
    C{now}: the state and start time of state change; the acknowledged
    state stays FREE-BACKUP (L{isTakeback}) until the secondary acks; the
    client time becomes the time the prefix went to the secondary (the
    FREE-BACKUP start time of state, or an older client time it carried).

    Why that client time: no client transaction on the prefix since then
    was the primary's, so it is a lower bound of any the secondary made.
    The conflict rules compare a local record's client time with an
    incoming ACTIVE binding's: the secondary's binding of the prefix, if
    it leased it, comes out later and is accepted here (both sides keep
    it).  On the secondary the FREE is later than its FREE-BACKUP record
    (start time C{now}, at least C{minAge} after the handover) and carries
    no client time beyond it, so it is accepted there when the prefix is
    not leased.
    """
    return evolve(
        backup,
        state=BindingState.FREE,
        start_time_of_state=now,
        cltt=max(backup.cltt, backup.start_time_of_state),
    )


class _Turns:
    """At most C{chunk} reads per reactor turn."""

    def __init__(self, clock: IReactorTime, chunk: int) -> None:
        self.clock = clock
        self.chunk = chunk
        self.read = 0

    async def next(self) -> None:
        """Before a read: after C{chunk} reads, yield to the reactor."""
        if self.read >= self.chunk:
            self.read = 0
            await deferLater(self.clock, 0, lambda: None)
        self.read += 1


class PrefixTakeback:
    """
    The primary's takeback of FREE-BACKUP prefixes above the reserve's
    target (see the module docstring).

    @ivar share: the relationship's L{PrefixShare} (pools, share, cap,
        reach; its C{held} and C{targets} are updated after a takeback).
    @ivar batch: the most prefixes one pass takes back per pool.
    @ivar lowWater: the primary's own free prefixes per pool below which a
        pass runs (C{None}: the pool's reserve target, at least 1).
    @ivar minAge: how old a FREE-BACKUP record must be to be taken back.
    @ivar interval: seconds between the starts of two passes.
    @ivar maxInterval: the longest delay before another pass when passes
        leave an excess they cannot take back.
    @ivar ownFree: per pool, the primary's own free prefixes (pending
        takebacks included) as counted by the last pass (a lower bound
        when the pass stopped early), less the grants since.
    @ivar targets: per pool, the reserve target the last pass computed.
    @ivar excess: per pool, the excess over the target the last pass left.
    @ivar takenBack: prefixes taken back (sent FREE) since the start.
    @ivar passes: passes run.
    """

    log = Logger()

    def __init__(
        self,
        share: PrefixShare,
        clock: IReactorTime,
        store: ILeaseStore,
        *,
        reserved: Collection[IPv6Network] = (),
        mayRun: Callable[[], bool] = lambda: True,
        taken: Callable[[list[Lease]], None] = lambda records: None,
        relationship: str = "",
        batch: int = DEFAULT_BATCH,
        lowWater: int | None = None,
        minAge: float = DEFAULT_MIN_AGE,
        interval: float = DEFAULT_INTERVAL,
        maxInterval: float = DEFAULT_MAX_INTERVAL,
        chunk: int = 1024,
    ) -> None:
        """
        @param share: the relationship's prefix share.
        @param clock: time, turns and timers.
        @param store: the lease store.
        @param reserved: prefixes reserved for clients (never handed).
        @param mayRun: may a pass run now?  (NORMAL and connected.)
        @param taken: given the records of each pass that took some back,
            once they are durable (to enqueue them for the partner).
        @param relationship: the relationship name, for logs.
        @param batch: see L{batch}.
        @param lowWater: see L{lowWater}.
        @param minAge: see L{minAge}.
        @param interval: see L{interval}.
        @param maxInterval: see L{maxInterval}.
        @param chunk: the most prefixes read per reactor turn.
        """
        if batch < 1 or chunk < 1 or (lowWater is not None and lowWater < 0):
            raise ValueError("batch and chunk must be positive, lowWater not negative")
        if interval < 0 or maxInterval < interval or minAge < 0:
            raise ValueError("bad interval, maxInterval or minAge")
        self.share = share
        self.batch = batch
        self.lowWater = lowWater
        self.minAge = minAge
        self.interval = interval
        self.maxInterval = maxInterval
        self._clock = clock
        self._store = store
        self._reserved = frozenset(reserved)
        self._mayRun = mayRun
        self._taken = taken
        self._relationship = relationship
        self._chunk = chunk
        self.ownFree: dict[PrefixPool, int] = {}
        self._arm: dict[PrefixPool, int] = {}
        self.targets: dict[PrefixPool, int] = {}
        self.excess: dict[PrefixPool, int] = {}
        self.takenBack = 0
        self.passes = 0
        self._running: Deferred[list[Lease]] | None = None
        self._again: str | None = None
        self._lastStart: float | None = None
        self._delay = interval
        self._call: IDelayedCall | None = None
        self._retryCall: IDelayedCall | None = None
        self._stopped = False

    # --- triggers ----------------------------------------------------------------------

    def lowWaterOf(self, pool: PrefixPool) -> int:
        """The primary's own free prefixes in C{pool} below which a pass runs."""
        if self.lowWater is not None:
            return self.lowWater
        target = self.targets.get(pool)
        if target is None:
            target = self.share.bound(pool.size)
        return max(1, target)

    def granted(self, lease: Lease) -> None:
        """
        A binding of ours changed (the policy's C{bindingChanged}): a
        prefix entering ACTIVE (a grant, not a renewal: its start time of
        state is its client time) leaves the primary's own free prefixes;
        below the low-water mark, a pass is requested.
        """
        if (
            lease.lease_type is not LeaseType.PD
            or lease.state is not BindingState.ACTIVE
            or lease.start_time_of_state != lease.cltt
        ):
            return
        pool = self.share.poolOf(lease.address, lease.prefix_length)
        if pool is None or pool not in self.ownFree:
            return
        self.ownFree[pool] -= 1
        if self.ownFree[pool] < self._arm.get(pool, 0):
            self._arm[pool] = -1  # until the pass counts again
            self.request("low water")

    def request(self, reason: str) -> None:
        """
        Run a pass now if allowed (C{mayRun}), or once C{interval} has
        passed since the last one started; during a pass, once it ends.
        """
        if self._stopped:
            return
        if self._running is not None:
            self._again = self._again or reason
            return
        if not self._mayRun():
            return
        now = self._clock.seconds()
        if self._lastStart is not None and now < self._lastStart + self.interval:
            if self._call is None or not self._call.active():
                self._call = self._clock.callLater(
                    self._lastStart + self.interval - now, self._scheduled, reason
                )
            return
        self._start(reason)

    def _scheduled(self, reason: str) -> None:
        self._call = None
        self.request(reason)

    def _retry(self) -> None:
        self._retryCall = None
        self.request("excess left")

    def _cancel(self) -> None:
        for call in (self._call, self._retryCall):
            if call is not None and call.active():
                call.cancel()
        self._call = self._retryCall = None

    def stop(self) -> None:
        """No more passes (a running one finishes)."""
        self._stopped = True
        self._cancel()

    def _start(self, reason: str) -> None:
        self._cancel()
        self._lastStart = self._clock.seconds()
        self._again = None
        running = self.run()
        self._running = running
        running.addCallbacks(self._passed, self._failed, callbackArgs=(reason,))

    def _passed(self, records: list[Lease], reason: str) -> None:
        self._running = None
        left = any(self.excess.values())
        if records:
            self._delay = self.interval
            self.log.info(
                "Failover {relationship}: {count} FREE-BACKUP prefixes taken back from the"
                " secondary ({reason})",
                relationship=self._relationship,
                count=len(records),
                reason=reason,
            )
            self._taken(records)
        elif left:
            # Nothing could be taken back (not acked, too young): back off.
            self._delay = min(self.maxInterval, max(self.interval, 2 * self._delay))
        again, self._again = self._again, None
        if again is not None:
            self.request(again)
        elif left and not self._stopped:
            self._retryCall = self._clock.callLater(self._delay, self._retry)

    def _failed(self, failure: Failure) -> None:
        self._running = None
        self._again = None
        self.log.failure(
            "Failover {relationship}: taking FREE-BACKUP prefixes back failed",
            failure,
            relationship=self._relationship,
        )

    # --- one pass ----------------------------------------------------------------------

    def run(self) -> Deferred[list[Lease]]:
        """
        One pass over every pool (whatever C{mayRun} says): store the FREE
        records of the prefixes taken back.

        @return: fires with those records once they are durable.
        """
        return Deferred.fromCoroutine(self._run())

    async def _run(self) -> list[Lease]:
        self.passes += 1
        turns = _Turns(self._clock, self._chunk)
        records: list[Lease] = []
        writes: list[Deferred[None]] = []
        for pool in self.share.pools:
            found = await self._pool(pool, turns)
            if found:
                records.extend(found)
                writes.append(self._store.commit(found))
        for d in writes:
            await d
        self.takenBack += len(records)
        return records

    def _eligible(self, lease: Lease, now: float) -> bool:
        """A FREE-BACKUP record the secondary has acked, old enough to take back."""
        return (
            lease.state is BindingState.FREE_BACKUP
            and lease.stateAcked
            and now - lease.start_time_of_state >= self.minAge
        )

    async def _pool(self, pool: PrefixPool, turns: _Turns) -> list[Lease]:
        store, share = self._store, self.share
        length = pool.delegated_length
        step = 1 << (128 - length)
        top = int(pool.prefix.network_address) + (pool.size - 1) * step

        def at(depth: int) -> IPv6Address:
            return IPv6Address(top - (depth - 1) * step)

        reach = share.reach(store, pool)
        lowWater = self.lowWaterOf(pool)
        candidates: deque[int] = deque(maxlen=self.batch)
        reserve = own = leaving = 0
        depth = 0
        while depth < pool.size:
            if (
                depth >= reach
                and math.floor((reserve + own + leaving) * share.share) >= reserve
                and own + leaving >= lowWater
            ):
                break
            await turns.next()
            depth += 1
            address = at(depth)
            if IPv6Network((address, length)) in self._reserved:
                continue
            existing = store.get(address, length)
            if existing is None:
                own += 1
            elif isTakeback(existing):
                leaving += 1
            elif existing.state in (BindingState.FREE, BindingState.PENDING_FREE):
                own += 1
            elif existing.state is BindingState.FREE_BACKUP:
                reserve += 1
                if self._eligible(existing, self._clock.seconds()):
                    candidates.append(depth)
        target = share.bound(reserve + own + leaving)
        excess = max(0, reserve - target)

        # Read again and written in this one turn: nothing slips in between.
        now = self._clock.seconds()
        records: list[Lease] = []
        for depth in reversed(candidates):
            if len(records) >= min(excess, self.batch):
                break
            existing = store.get(at(depth), length)
            if existing is not None and self._eligible(existing, now):
                records.append(takebackOf(existing, now))

        free = own + leaving + len(records)
        self.targets[pool] = target
        self.excess[pool] = excess - len(records)
        self.ownFree[pool] = free
        lowWater = self.lowWaterOf(pool)
        self._arm[pool] = lowWater if free >= lowWater else (free + 1) // 2
        if records:
            share.held[pool] = reserve - len(records)
            share.targets[pool] = target
            self.log.debug(
                "Failover {relationship}: pool {pool}: reserve {reserve} above its target"
                " {target}; {count} taken back, {free} free prefixes of the primary's",
                relationship=self._relationship,
                pool=str(pool.prefix),
                reserve=reserve,
                target=target,
                count=len(records),
                free=free,
            )
        return records
