"""
Tests for L{dhcp6ha.failover.balance}: the primary takes back FREE-BACKUP
prefixes the secondary has not leased (RFC 8156 section 4.2.2).

Unit tests drive one L{PrefixTakeback} over a L{MemoryLeaseStore} on a
L{Clock}; the pair tests run a primary and a secondary relationship in
NORMAL over iosim (L{tests.test_relationship.MemoryPair}), with the
primary's engine granting prefixes to clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.config import PrefixPool
from dhcp6ha.failover.balance import PrefixTakeback, isTakeback, takebackOf
from dhcp6ha.failover.conflict import Verdict, acknowledged, resolve
from dhcp6ha.failover.machine import EndpointState, Role
from dhcp6ha.failover.policy import FailoverPolicy
from dhcp6ha.failover.protocol import PrefixShare
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IAPD,
    ClientId,
    ElapsedTime,
    IAPrefix,
    Message,
    MessageType,
    ServerId,
    StatusCodeOption,
)
from dhcp6ha.testing import FakeUpdateQueue, MemoryLeaseStore
from tests.test_relationship import NAME, PRIMARY_DUID, MemoryPair, serverConfig, subnet

T0 = 1_700_000_000.0
POOL = PrefixPool(IPv6Network("2001:db8:100::/52"), 56)
BIG = PrefixPool(IPv6Network("2001:db8:200::/40"), 56)
CLIENT = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x07"

FREE = BindingState.FREE
FREE_BACKUP = BindingState.FREE_BACKUP
ACTIVE = BindingState.ACTIVE


def backup(address: IPv6Address, at: float = T0, acked: bool = True) -> Lease:
    """A FREE-BACKUP record handed at C{at}, acked by the secondary or not."""
    return Lease(
        lease_type=LeaseType.PD,
        address=address,
        prefix_length=56,
        state=FREE_BACKUP,
        duid=b"",
        iaid=0,
        start_time_of_state=at,
        cltt=0.0,
        preferred_lifetime=0,
        valid_lifetime=0,
        expires=0.0,
        partner_state_acked=FREE_BACKUP if acked else None,
        partner_stos_acked=at if acked else 0.0,
    )


def prefixAt(pool: PrefixPool, depth: int) -> IPv6Address:
    """The prefix C{depth} from the top of C{pool} (1: the top one)."""
    step = 1 << (128 - pool.delegated_length)
    return IPv6Address(int(pool.prefix.network_address) + (pool.size - depth) * step)


def records(store: MemoryLeaseStore, state: BindingState) -> list[Lease]:
    return [found for found in store.iterLeases(100) if found.state is state]


class CountingStore(MemoryLeaseStore):
    """Counts reads."""

    reads = 0

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        self.reads += 1
        return super().get(address, prefix_length)


@dataclass
class Setup:
    clock: Clock
    store: MemoryLeaseStore
    share: PrefixShare
    takeback: PrefixTakeback
    taken: list[list[Lease]]


def setup(
    pool: PrefixPool = POOL,
    share: float = 0.5,
    maxBackup: int = 8,
    store: MemoryLeaseStore | None = None,
    **kw: Any,
) -> Setup:
    """A pool whose reserve is handed (and acked) at T0; the clock at T0."""
    clock = Clock()
    clock.advance(T0)
    store = store if store is not None else MemoryLeaseStore(replicate=lambda lease: NAME)
    prefixShare = PrefixShare([pool], share, clock, maxBackup=maxBackup)
    handed: list[list[Lease]] = []
    prefixShare.hand(store).addCallback(handed.append)
    ackAll(store)
    taken: list[list[Lease]] = []
    takeback = PrefixTakeback(prefixShare, clock, store, taken=taken.append, **kw)
    return Setup(clock, store, prefixShare, takeback, taken)


def ackAll(store: MemoryLeaseStore) -> None:
    """The partner acks everything pending."""
    pending = store.pendingUpdates(NAME, 0, 100_000)
    store.acknowledge(
        NAME, [(acknowledged(record, record), version) for version, record in pending]
    )


def ran(d: Deferred[list[Lease]]) -> list[Lease]:
    result: list[list[Lease]] = []
    d.addCallback(result.append)
    assert result, "the pass did not end"
    return result[0]


class TakebackRecordTests(SynchronousTestCase):
    """What a takeback record is, and how the policy reads it."""

    def test_record(self) -> None:
        """
        L{takebackOf}: FREE from C{now}, the acknowledged state left at
        FREE-BACKUP (a pending takeback), the client time the handover's.
        """
        handed = backup(prefixAt(POOL, 1))
        taken = takebackOf(handed, T0 + 100)
        self.assertEqual((taken.state, taken.start_time_of_state), (FREE, T0 + 100))
        self.assertEqual(taken.cltt, T0)
        self.assertEqual((taken.partner_state_acked, taken.partner_stos_acked), (FREE_BACKUP, T0))
        self.assertTrue(isTakeback(taken))
        self.assertFalse(taken.stateAcked)
        # An older client time carried by the record does not move it back.
        self.assertEqual(takebackOf(evolve(handed, cltt=T0 - 50), T0 + 100).cltt, T0)

    def test_predicate(self) -> None:
        """
        Only a FREE prefix whose acknowledged state is FREE-BACKUP is a
        pending takeback: once the secondary acks the FREE, no longer.
        """
        taken = takebackOf(backup(prefixAt(POOL, 1)), T0 + 100)
        self.assertFalse(isTakeback(backup(prefixAt(POOL, 1))))
        self.assertFalse(isTakeback(acknowledged(taken, taken)))
        self.assertFalse(isTakeback(evolve(taken, lease_type=LeaseType.NA, prefix_length=128)))
        self.assertFalse(isTakeback(evolve(taken, state=ACTIVE)))

    def policy(self, role: Role, state: EndpointState = EndpointState.NORMAL) -> FailoverPolicy:
        @dataclass
        class View:
            role: Role
            state: EndpointState
            startTimeOfState: float = T0
            mclt: float = 3600.0

        return FailoverPolicy(View(role, state), FakeUpdateQueue())

    def test_policy(self) -> None:
        """
        The primary may not allocate a pending takeback (it is still the
        secondary's) in NORMAL nor COMMUNICATIONS-INTERRUPTED; once the
        secondary acks the FREE it may.  In PARTNER-DOWN it is the
        partner's free prefix: after MCLT only.
        """
        address = prefixAt(POOL, 1)
        taken = takebackOf(backup(address), T0 + 100)
        now = T0 + 200

        def may(policy: FailoverPolicy, existing: Lease, at: float = now) -> bool:
            return policy.mayAllocate(LeaseType.PD, address, 56, existing, CLIENT, 1, at)

        primary = self.policy(Role.PRIMARY)
        self.assertFalse(primary.isOwn(LeaseType.PD, address, 56, taken))
        self.assertFalse(may(primary, taken))
        self.assertFalse(
            may(self.policy(Role.PRIMARY, EndpointState.COMMUNICATIONS_INTERRUPTED), taken)
        )
        acked = acknowledged(taken, taken)
        self.assertTrue(primary.isOwn(LeaseType.PD, address, 56, acked))
        self.assertTrue(may(primary, acked))
        down = self.policy(Role.PRIMARY, EndpointState.PARTNER_DOWN)
        self.assertFalse(may(down, taken, T0 + 3599))
        self.assertTrue(may(down, taken, T0 + 3600))
        # The secondary's view (it never holds such a record): still its own.
        self.assertTrue(self.policy(Role.SECONDARY).isOwn(LeaseType.PD, address, 56, taken))

    def test_notHandedAgain(self) -> None:
        """
        A pass of L{PrefixShare} counts a pending takeback as the
        secondary's: it does not hand it again, nor another in its place.
        """
        s = setup(maxBackup=1)
        [handed] = records(s.store, FREE_BACKUP)
        s.store.commit([takebackOf(handed, T0 + 100)])
        again = ran(s.share.hand(s.store))
        self.assertEqual(again, [])
        [taken] = records(s.store, FREE)
        self.assertTrue(isTakeback(taken))


class ConflictTests(SynchronousTestCase):
    """
    The takeback through the conflict rules (L{conflict.resolve}): later
    wins, and on the primary the secondary's ACTIVE binding over a
    FREE-BACKUP or pending-takeback record whatever the times.
    """

    address = prefixAt(POOL, 1)

    def leased(self, at: float) -> Lease:
        """The secondary's binding of the prefix, made at C{at}."""
        return evolve(
            backup(self.address),
            state=ACTIVE,
            duid=CLIENT,
            iaid=1,
            start_time_of_state=at,
            cltt=at,
            valid_lifetime=3600,
            preferred_lifetime=1800,
            expires=at + 3600,
            partner_state_acked=None,
            partner_stos_acked=0.0,
        )

    def test_secondaryAccepts(self) -> None:
        """The secondary accepts the FREE over its (unleased) FREE-BACKUP record."""
        handed = backup(self.address)
        taken = takebackOf(handed, T0 + 60)
        resolution = resolve(handed, taken, Role.SECONDARY, T0 + 60)
        self.assertIs(resolution.verdict, Verdict.ACCEPT)
        assert resolution.record is not None
        self.assertIs(resolution.record.state, FREE)

    def test_secondaryRefuses(self) -> None:
        """
        The secondary refuses the FREE of a prefix it leased (its binding
        stands until it expires) and sends its binding.
        """
        taken = takebackOf(backup(self.address), T0 + 100)
        resolution = resolve(self.leased(T0 + 99), taken, Role.SECONDARY, T0 + 100)
        self.assertFalse(resolution.accepted)
        self.assertTrue(resolution.sendLocal)
        self.assertIsNotNone(resolution.status)

    def test_primaryAcceptsBinding(self) -> None:
        """
        The primary accepts the secondary's binding over its pending
        takeback, even one made well before the takeback (its update late)
        or at the same time.
        """
        taken = takebackOf(backup(self.address), T0 + 100)
        for at in (T0 + 10, T0 + 60, T0 + 99, T0 + 100, T0 + 104):
            resolution = resolve(taken, self.leased(at), Role.PRIMARY, T0 + 110)
            self.assertIs(resolution.verdict, Verdict.ACCEPT, (at, resolution.rule))

    def test_primaryAcceptsBindingAtHandover(self) -> None:
        """
        The tie race: the secondary leased the prefix within the tolerance
        of receiving it (its clock ahead or behind), and its update reaches
        the primary only after the takeback.  The binding's client time is
        the takeback's (the handover's) and the takeback's start time of
        state is later, yet the primary accepts it: the secondary was
        entitled to lease it.  So it does over the FREE-BACKUP record
        itself, before any takeback.
        """
        handed = backup(self.address)
        taken = takebackOf(handed, T0 + 100)
        for at in (T0 - 4.9, T0 - 1, T0, T0 + 0.5, T0 + 2, T0 + 4.9):
            for local in (taken, handed):
                resolution = resolve(local, self.leased(at), Role.PRIMARY, T0 + 110)
                self.assertIs(resolution.verdict, Verdict.ACCEPT, (at, resolution.rule))
                assert resolution.record is not None
                self.assertEqual(resolution.record.duid, CLIENT)

    def test_expiredBindingTakenBack(self) -> None:
        """
        Once the secondary's binding has expired, the primary keeps its
        takeback and the secondary accepts the FREE: both end FREE.
        """
        taken = takebackOf(backup(self.address), T0 + 100)
        leased = self.leased(T0 + 2)
        onPrimary = resolve(taken, leased, Role.PRIMARY, leased.expires)
        self.assertFalse(onPrimary.accepted, onPrimary.rule)
        onSecondary = resolve(leased, taken, Role.SECONDARY, leased.expires)
        self.assertIs(onSecondary.verdict, Verdict.ACCEPT, onSecondary.rule)


class PassTests(SynchronousTestCase):
    """One L{PrefixTakeback} pass over a store."""

    def test_balanced(self) -> None:
        """A reserve at its target: nothing taken back."""
        s = setup()
        s.clock.advance(100)
        self.assertEqual(ran(s.takeback.run()), [])
        self.assertEqual(s.takeback.targets, {POOL: 8})
        self.assertEqual(s.takeback.excess, {POOL: 0})
        self.assertEqual(s.takeback.ownFree, {POOL: 8})

    def test_shareLowered(self) -> None:
        """
        The share lowered from 1/2 to 1/4 (a restart with a new
        configuration): the reserve of 8 is 4 above its target of 16/4;
        the 4 deepest FREE-BACKUP prefixes are stored FREE (pending for the
        partner), the rest stays.
        """
        s = setup()
        s.share.share = 0.25
        s.clock.advance(100)
        taken = ran(s.takeback.run())
        self.assertEqual(len(taken), 4)
        self.assertTrue(all(isTakeback(record) for record in taken))
        self.assertEqual(len(records(s.store, FREE_BACKUP)), 4)
        depths = sorted(POOL.size - ((int(r.address) >> 72) & 0xFFF) for r in taken)
        handed = sorted(
            POOL.size - ((int(r.address) >> 72) & 0xFFF) for r in records(s.store, FREE_BACKUP)
        )
        self.assertLess(max(handed), min(depths))
        self.assertEqual(s.store.pendingCount(NAME), 4)
        self.assertEqual((s.share.held, s.share.targets), ({POOL: 4}, {POOL: 4}))
        # A second pass: balanced (the pending ones are leaving the reserve).
        self.assertEqual(ran(s.takeback.run()), [])

    def test_capLowered(self) -> None:
        """max-backup-prefixes lowered from 8 to 3: 5 taken back."""
        s = setup()
        s.share.maxBackup = 3
        s.clock.advance(100)
        self.assertEqual(len(ran(s.takeback.run())), 5)

    def test_shareZero(self) -> None:
        """prefix-share 0: the whole reserve goes back."""
        s = setup()
        s.share.share = 0.0
        s.clock.advance(100)
        self.assertEqual(len(ran(s.takeback.run())), 8)
        self.assertEqual(records(s.store, FREE_BACKUP), [])

    def test_onlyAckedAndOldEnough(self) -> None:
        """
        A FREE-BACKUP record the secondary has not acked, or younger than
        C{minAge}, is not taken back: the excess is left for a later pass.
        """
        s = setup()
        s.share.share = 0.0
        young = backup(prefixAt(POOL, 1), at=T0 + 50)
        unacked = backup(prefixAt(POOL, 3), acked=False)
        s.store.commit([young, unacked])
        s.clock.advance(100)
        taken = ran(s.takeback.run())
        self.assertEqual(len(taken), 8)
        self.assertNotIn(young.address, [r.address for r in taken])
        self.assertNotIn(unacked.address, [r.address for r in taken])
        self.assertEqual(s.takeback.excess, {POOL: 2})
        s.clock.advance(10)
        self.assertEqual([r.address for r in ran(s.takeback.run())], [young.address])

    def test_batch(self) -> None:
        """At most C{batch} per pool and pass."""
        s = setup(batch=3)
        s.share.share = 0.0
        s.clock.advance(100)
        self.assertEqual(len(ran(s.takeback.run())), 3)
        self.assertEqual(s.takeback.excess, {POOL: 5})

    def test_readsWhatItNeeds(self) -> None:
        """
        A /40 of /56s (65,536 prefixes) with a reserve of 4: a pass reads
        the reach of the reserve and a few more, not the pool.
        """
        store = CountingStore(replicate=lambda lease: NAME)
        s = setup(pool=BIG, maxBackup=4, store=store)
        s.clock.advance(100)
        store.reads = 0
        self.assertEqual(ran(s.takeback.run()), [])
        self.assertLess(store.reads, 20)
        self.assertEqual(s.takeback.excess, {BIG: 0})
        # The cap lowered to 1: 3 back, still without reading the pool.
        s.share.maxBackup = 1
        store.reads = 0
        self.assertEqual(len(ran(s.takeback.run())), 3)
        self.assertLess(store.reads, 20)

    def test_chunked(self) -> None:
        """At most C{chunk} reads per reactor turn."""
        s = setup(chunk=4)
        s.share.share = 0.0
        s.clock.advance(100)
        d = s.takeback.run()
        self.assertNoResult(d)
        for _ in range(4):
            s.clock.advance(0)
        self.assertEqual(len(self.successResultOf(d)), 8)


class TriggerTests(SynchronousTestCase):
    """When passes run: requests, low water, intervals, backoff."""

    def grant(self, s: Setup, depth: int, renewal: bool = False) -> None:
        """The primary grants the prefix C{depth} from the top (or renews it)."""
        now = s.clock.seconds()
        lease = evolve(
            backup(prefixAt(POOL, depth)),
            state=ACTIVE,
            duid=CLIENT,
            iaid=depth,
            start_time_of_state=now - 100 if renewal else now,
            cltt=now,
            expires=now + 3600,
        )
        s.store.commit([lease])
        s.takeback.granted(lease)

    def test_request(self) -> None:
        """
        A request runs a pass at once; the records go to C{taken} once
        durable; another request within C{interval} waits for it.
        """
        s = setup(interval=30.0)
        s.share.maxBackup = 6
        s.clock.advance(100)
        s.takeback.request("test")
        self.assertEqual(len(s.taken), 1)
        self.assertEqual(len(s.taken[0]), 2)
        s.share.maxBackup = 5
        s.takeback.request("test")
        self.assertEqual(len(s.taken), 1)
        s.clock.advance(29)
        self.assertEqual(len(s.taken), 1)
        s.clock.advance(1)
        self.assertEqual(len(s.taken), 2)
        self.assertEqual(s.takeback.passes, 2)

    def test_notNow(self) -> None:
        """C{mayRun} false (not NORMAL, not connected): no pass."""
        s = setup(mayRun=lambda: False)
        s.share.maxBackup = 6
        s.clock.advance(100)
        s.takeback.request("test")
        self.assertEqual((s.takeback.passes, s.taken), (0, []))

    def test_notDurable(self) -> None:
        """The records reach C{taken} only once they are durable."""
        s = setup()
        store = MemoryLeaseStore(autoFlush=False, replicate=lambda lease: NAME)
        for record in s.store.iterLeases(100):
            store.commit([record])
        store.flush()
        takeback = PrefixTakeback(s.share, s.clock, store, taken=s.taken.append)
        s.share.maxBackup = 6
        s.clock.advance(100)
        takeback.request("test")
        self.assertEqual(s.taken, [])
        store.flush()
        self.assertEqual(len(s.taken[0]), 2)

    def test_lowWater(self) -> None:
        """
        16 prefixes, share 1/2: 8 each.  The primary grants one: its own
        free prefixes (7) fall below the low-water mark (the target, 8): a
        pass takes back the one above the new target (15 available: 7).
        Renewals do not count as grants.
        """
        s = setup()
        s.clock.advance(100)
        ran(s.takeback.run())
        self.assertEqual(s.takeback.ownFree, {POOL: 8})
        self.assertEqual(s.takeback.lowWaterOf(POOL), 8)
        own = [depth for depth in range(1, 17) if s.store.get(prefixAt(POOL, depth), 56) is None]
        self.grant(s, own[0], renewal=True)
        self.assertEqual(s.taken, [])
        s.clock.advance(100)
        self.grant(s, own[0])
        self.assertEqual(len(s.taken), 1)
        self.assertEqual(len(s.taken[0]), 1)
        self.assertEqual(s.takeback.targets, {POOL: 7})
        self.assertEqual(s.takeback.ownFree, {POOL: 8})

    def test_lowWaterConfigured(self) -> None:
        """
        With C{lowWater} 2 the primary's grants trigger nothing until its
        own free prefixes fall below 2; the pass then takes back the excess
        over the target of what is available then.
        """
        s = setup(lowWater=2)
        s.clock.advance(100)
        ran(s.takeback.run())
        own = [d for d in range(1, 17) if s.store.get(prefixAt(POOL, d), 56) is None]
        for depth in own[:6]:
            s.clock.advance(31)
            self.grant(s, depth)
        self.assertEqual(s.taken, [])
        s.clock.advance(31)
        self.grant(s, own[6])
        # 1 own + 8 reserve = 9 available: target 4, 4 back.
        self.assertEqual([len(batch) for batch in s.taken], [4])

    def test_exhaustion(self) -> None:
        """
        Share 3/4: 12 prefixes for the secondary, 4 for the primary, which
        is below its low-water mark (the target, 12) from the start.  The
        primary grants prefixes one by one (acks of takebacks arriving in
        between): a pass runs only when half of what it had at the last
        one is gone, each leaves the reserve at the target of what is
        available then, and all 16 prefixes get granted, with fewer passes
        than grants.
        """
        s = setup(share=0.75, maxBackup=100)
        s.clock.advance(100)
        ran(s.takeback.run())
        self.assertEqual(s.takeback.ownFree, {POOL: 4})
        passes = s.takeback.passes
        granted = 0

        def ownFree() -> list[int]:
            return [
                depth
                for depth in range(1, 17)
                if (found := s.store.get(prefixAt(POOL, depth), 56)) is None
                or (found.state is FREE and not isTakeback(found))
            ]

        while True:
            own = ownFree()
            if not own:
                break
            before = s.takeback.passes
            s.clock.advance(31)
            self.grant(s, own[0])
            granted += 1
            ackAll(s.store)
            if s.takeback.passes != before:
                # The reserve is down to the target of what is available now.
                available = len(records(s.store, FREE_BACKUP)) + len(ownFree())
                self.assertEqual(s.takeback.excess, {POOL: 0})
                self.assertEqual(s.takeback.targets, {POOL: int(available * 0.75)})
                self.assertEqual(s.share.held, {POOL: int(available * 0.75)})
        self.assertEqual(granted, 16)
        self.assertLess(s.takeback.passes - passes, 10)
        self.assertEqual(records(s.store, FREE_BACKUP), [])

    def test_excessLeftBacksOff(self) -> None:
        """
        A pass that leaves an excess it cannot take back (not acked yet)
        runs again later, at growing intervals while nothing changes; once
        the records are acked, they go.
        """
        s = setup(interval=30.0, maxInterval=240.0)
        s.share.share = 0.0
        unacked = [
            evolve(record, partner_state_acked=None) for record in records(s.store, FREE_BACKUP)
        ]
        s.store.amend(unacked)
        s.clock.advance(100)
        s.takeback.request("test")
        starts = []
        for _ in range(8):
            before = s.takeback.passes
            s.clock.advance(30)
            if s.takeback.passes != before:
                starts.append(s.clock.seconds() - T0 - 100)
        self.assertEqual(starts, [60, 180])
        s.store.acknowledge(NAME, [(r, 0) for r in unacked])
        s.clock.advance(240)
        self.assertEqual(sum(map(len, s.taken)), 8)

    def test_stop(self) -> None:
        """After L{PrefixTakeback.stop}, no pass and no timer."""
        s = setup()
        s.share.maxBackup = 6
        s.clock.advance(100)
        s.takeback.request("test")
        s.share.maxBackup = 5
        s.takeback.request("test")
        s.takeback.stop()
        self.assertEqual(s.clock.getDelayedCalls(), [])
        s.clock.advance(100)
        s.takeback.request("test")
        self.assertEqual(s.takeback.passes, 1)

    def test_failure(self) -> None:
        """A pass that fails is logged; the next request runs one again."""

        class Broken(MemoryLeaseStore):
            broken = True

            def commit(self, changes: Any, *, pending: bool = True) -> Deferred[None]:
                if self.broken:
                    raise OSError("disk gone")
                return super().commit(changes, pending=pending)

        store = Broken(replicate=lambda lease: NAME)
        store.broken = False
        s = setup(store=store, interval=0.0)
        s.share.maxBackup = 6
        s.clock.advance(100)
        store.broken = True
        with capturedLogs() as events:
            s.takeback.request("test")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertTrue(any("failed" in e.get("log_format", "") for e in events))
        store.broken = False
        s.takeback.request("test")
        self.assertEqual(len(s.taken[0]), 2)


# --- a primary and a secondary in NORMAL ------------------------------------------------


def request(n: int, hint: IPv6Address | None = None) -> Message:
    """Client C{n}'s Request for one prefix (IA_PD), naming the primary."""
    duid = b"\x00\x03\x00\x01\x02\x00\x00\x00\x01" + bytes([n])
    hints = () if hint is None else (IAPrefix(0, 0, 56, hint),)
    return Message(
        MessageType.REQUEST,
        0x100 + n,
        (ClientId(duid), ServerId(PRIMARY_DUID), ElapsedTime(0), IAPD(1, 0, 0, hints)),
    )


def grantedPrefix(reply: Message) -> IPv6Address | None:
    """The prefix a reply grants, or C{None} (NoPrefixAvail)."""
    [pd] = [o for o in reply.options if isinstance(o, IAPD)]
    prefixes = [o.prefix for o in pd.options if isinstance(o, IAPrefix) and o.valid_lifetime]
    if not prefixes:
        assert any(isinstance(o, StatusCodeOption) for o in pd.options)
        return None
    [prefix] = prefixes
    return prefix


class PairTests(SynchronousTestCase):
    """
    Two relationships in NORMAL: pool 2001:db8:100::/52 of /56s (16
    prefixes), the secondary's reserve handed at the first PoolRequest.
    """

    def start(self, **changes: Any) -> MemoryPair:
        changes.setdefault("prefix_share", 0.5)
        pair = MemoryPair(serverConfig(subnet(pools=())), **changes)
        pair.start()
        self.addCleanup(pair.stop)
        self.assertEqual(pair.primary.status().state, "normal")
        self.assertEqual(pair.secondary.status().state, "normal")
        return pair

    def takeback(self, pair: MemoryPair) -> PrefixTakeback:
        takeback = pair.primary.takeback
        assert takeback is not None
        return takeback

    def mayAllocate(self, pair: MemoryPair, address: IPv6Address) -> bool:
        """May the primary give C{address} to a new client now?"""
        policy = pair.primary.policy
        assert policy is not None
        existing = pair.primaryStore.get(address, 56)
        return policy.mayAllocate(
            LeaseType.PD, address, 56, existing, b"\x00\x03another", 9, pair.clock.seconds()
        )

    def test_unleased(self) -> None:
        """
        The cap lowered from 8 to 6: the primary takes 2 back.  Before the
        secondary's ack they are FREE on the primary but not allocatable
        (and not given to a client asking for one); after the ack they are
        the primary's, FREE on both sides, nothing left pending.
        """
        pair = self.start(max_backup_prefixes=8)
        self.assertEqual(len(records(pair.secondaryStore, FREE_BACKUP)), 8)
        pair.advance(100)
        takeback = self.takeback(pair)
        share = pair.primary.prefixShare
        assert share is not None
        share.maxBackup = 6
        takeback.request("test")
        taken = [r.address for r in records(pair.primaryStore, FREE)]
        self.assertEqual(len(taken), 2)
        for address in taken:
            self.assertFalse(self.mayAllocate(pair, address))
        self.assertEqual(len(records(pair.secondaryStore, FREE_BACKUP)), 8)

        pair.flush()
        for address in taken:
            self.assertTrue(self.mayAllocate(pair, address))
            mirror = pair.secondaryStore.get(address, 56)
            assert mirror is not None
            self.assertIs(mirror.state, FREE)
        self.assertEqual(len(records(pair.secondaryStore, FREE_BACKUP)), 6)
        self.assertEqual(pair.primaryStore.pendingCount(NAME), 0)
        self.assertEqual(pair.secondaryStore.pendingCount(NAME), 0)
        secondaryPolicy = pair.secondary.policy
        assert secondaryPolicy is not None
        self.assertFalse(
            secondaryPolicy.mayAllocate(
                LeaseType.PD,
                taken[0],
                56,
                pair.secondaryStore.get(taken[0], 56),
                CLIENT,
                1,
                pair.clock.seconds(),
            )
        )

    def test_notGrantedBeforeAck(self) -> None:
        """
        A client asking for the prefix being taken back (a hint) before
        the secondary's ack gets another one; a client asking after the
        ack gets it.
        """
        pair = self.start(max_backup_prefixes=8)
        pair.advance(100)
        share = pair.primary.prefixShare
        assert share is not None
        share.maxBackup = 7
        self.takeback(pair).request("test")
        [taken] = records(pair.primaryStore, FREE)
        first = grantedPrefix(pair.decide(request(1, taken.address)))
        self.assertIsNotNone(first)
        self.assertNotEqual(first, taken.address)
        pair.flush()
        self.assertEqual(grantedPrefix(pair.decide(request(2, taken.address))), taken.address)

    def test_leased(self) -> None:
        """
        The secondary has just leased a FREE-BACKUP prefix (its update not
        sent yet) when the primary takes it back: the secondary refuses and
        sends its binding, which the primary stores.  Both end with the
        secondary's ACTIVE binding, the prefix is not allocatable by the
        primary, and the FREE is not resent (not pending any more).
        """
        pair = self.start(max_backup_prefixes=8, prefix_share=0.5)
        pair.advance(100)
        share = pair.primary.prefixShare
        assert share is not None
        share.share = 0.0  # take everything back
        now = pair.clock.seconds()
        leased = evolve(
            records(pair.secondaryStore, FREE_BACKUP)[0],
            state=ACTIVE,
            duid=CLIENT,
            iaid=1,
            start_time_of_state=now,
            cltt=now,
            valid_lifetime=3600,
            preferred_lifetime=1800,
            expires=now + 3600,
        )
        # Stored, not yet sent (the secondary's queue is not woken).
        pair.successResultOf(pair.secondaryStore.commit([leased]))
        pair.clock.advance(1)
        with capturedLogs():
            self.takeback(pair).request("test")
            pair.flush()
            pair.advance(3600 - 10)
        self.assertBothActive(pair, leased)
        assert pair.primary.queue is not None
        self.assertEqual(pair.primary.queue.rejected, 1)
        self.assertEqual(len(records(pair.secondaryStore, FREE_BACKUP)), 0)
        self.assertEqual(len(records(pair.primaryStore, FREE)), 7)

    def test_leasedUpdateCrosses(self) -> None:
        """
        The secondary leased the prefix 30 s before the takeback and its
        update crosses the FREE: the primary accepts the binding over its
        pending takeback, the secondary refuses the FREE; both end with the
        binding.
        """
        pair = self.start(max_backup_prefixes=8)
        pair.advance(100)
        share = pair.primary.prefixShare
        assert share is not None
        share.share = 0.0
        now = pair.clock.seconds()
        leased = evolve(
            records(pair.secondaryStore, FREE_BACKUP)[0],
            state=ACTIVE,
            duid=CLIENT,
            iaid=1,
            start_time_of_state=now,
            cltt=now,
            valid_lifetime=3600,
            preferred_lifetime=1800,
            expires=now + 3600,
        )
        pair.successResultOf(pair.secondaryStore.commit([leased]))
        pair.clock.advance(30)
        self.takeback(pair).request("test")
        assert pair.secondary.policy is not None
        pair.secondary.policy.bindingChanged(leased)
        with capturedLogs():
            pair.flush()
            pair.advance(120)
        self.assertBothActive(pair, leased)

    def test_leasedAtHandover(self) -> None:
        """
        The tie race: the secondary leases a FREE-BACKUP prefix 2 s after
        it received it (within the conflict tolerance), and its update
        reaches the primary only after the primary started taking the
        prefix back.  The secondary refuses the FREE and sends its
        binding; the primary accepts it over its pending takeback.  Both
        end with the secondary's ACTIVE binding, nothing pending, the
        prefix not the primary's to allocate: no disagreement for a lease
        lifetime.
        """
        pair = self.start(max_backup_prefixes=8)
        handed = records(pair.secondaryStore, FREE_BACKUP)[0]
        pair.clock.advance(handed.start_time_of_state + 2 - pair.clock.seconds())
        now = pair.clock.seconds()
        leased = evolve(
            handed,
            state=ACTIVE,
            duid=CLIENT,
            iaid=1,
            start_time_of_state=now,
            cltt=now,
            valid_lifetime=3600,
            preferred_lifetime=1800,
            expires=now + 3600,
        )
        # Stored, not yet sent (the secondary's queue is not woken).
        pair.successResultOf(pair.secondaryStore.commit([leased]))
        pair.advance(100)
        before = pair.primaryStore.get(leased.address, 56)
        assert before is not None
        self.assertIs(before.state, FREE_BACKUP)
        share = pair.primary.prefixShare
        assert share is not None
        share.share = 0.0
        with capturedLogs():
            self.takeback(pair).request("test")
            taken = pair.primaryStore.get(leased.address, 56)
            assert taken is not None
            self.assertTrue(isTakeback(taken))
            self.assertLessEqual(abs(taken.cltt - leased.cltt), 5.0)
            pair.flush()
            pair.advance(120)
        self.assertBothActive(pair, leased)
        assert pair.primary.queue is not None and pair.secondary.queue is not None
        self.assertEqual(pair.primary.queue.rejected, 1)
        self.assertEqual(pair.secondary.queue.rejected, 0)

    def assertBothActive(self, pair: MemoryPair, leased: Lease) -> None:
        """Both stores hold C{leased}'s binding, acked; the primary may not give it away."""
        for store in (pair.primaryStore, pair.secondaryStore):
            found = store.get(leased.address, 56)
            assert found is not None
            self.assertEqual((found.state, found.duid, found.iaid), (ACTIVE, CLIENT, 1))
            self.assertEqual(len(records(store, ACTIVE)), 1)
            self.assertEqual(store.pendingCount(NAME), 0)
        self.assertFalse(self.mayAllocate(pair, leased.address))

    def test_lowWater(self) -> None:
        """
        Share 1/2, cap 8: the primary grants prefixes to 16 clients, one
        every 31 s.  Each time its own free prefixes run low it takes back
        the reserve's excess, so every client gets a prefix, all different,
        and the secondary ends with no FREE-BACKUP prefix left, all 16
        bindings replicated.
        """
        pair = self.start(max_backup_prefixes=8)
        pair.advance(100)
        granted = []
        with capturedLogs():
            for n in range(16):
                pair.advance(31)
                granted.append(grantedPrefix(pair.decide(request(n))))
                pair.flush()
        self.assertNotIn(None, granted)
        self.assertEqual(len(set(granted)), 16)
        self.assertEqual(records(pair.secondaryStore, FREE_BACKUP), [])
        self.assertEqual(len(records(pair.secondaryStore, ACTIVE)), 16)
        self.assertEqual(pair.primaryStore.pendingCount(NAME), 0)
        self.assertGreater(self.takeback(pair).takenBack, 0)

    def test_poolRequestAfterRestart(self) -> None:
        """
        The primary restarts with max-backup-prefixes lowered from 8 to 3:
        the secondary's PoolRequest on entering NORMAL again makes the
        primary take 5 back.
        """
        config = serverConfig(subnet(pools=()))
        first = MemoryPair(config, prefix_share=0.5, max_backup_prefixes=8)
        first.start()
        self.assertEqual(len(records(first.secondaryStore, FREE_BACKUP)), 8)
        first.advance(100)
        first.stop()
        second = MemoryPair(config, prefix_share=0.5, max_backup_prefixes=3)
        second.primaryStore, second.secondaryStore = first.primaryStore, first.secondaryStore
        second.clock.advance(first.clock.seconds() - second.clock.seconds())
        with capturedLogs():
            second.start()
            self.addCleanup(second.stop)
            second.advance(60)
        self.assertEqual(second.primary.status().state, "normal")
        self.assertEqual(len(records(second.secondaryStore, FREE_BACKUP)), 3)
        self.assertEqual(len(records(second.primaryStore, FREE_BACKUP)), 3)
        self.assertEqual(len(records(second.secondaryStore, FREE)), 5)
        self.assertEqual(second.primaryStore.pendingCount(NAME), 0)
