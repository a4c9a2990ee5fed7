# -*- test-case-name: tests.test_testing,tests.test_sqlite -*-
"""
The behaviour every L{ILeaseStore} shares, as a mixin run against both the
real store (L{tests.test_sqlite}) and the fake (L{tests.test_testing}), so
the fake cannot drift from the real thing.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from dhcp6ha.interfaces import ILeaseStore, Replicate
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object


def makeLease(
    n: int,
    *,
    prefix_length: int = 128,
    lease_type: LeaseType = LeaseType.NA,
    state: BindingState = BindingState.ACTIVE,
    duid: bytes = b"\x00\x03\x00\x01client",
    iaid: int = 1,
    expires: float = 1000.0,
    **kwargs: Any,
) -> Lease:
    """
    A binding for address C{2001:db8::n}, or for a shorter C{prefix_length}
    the C{n}th prefix of that length in C{2001:db8::/32}.
    """
    return Lease(
        lease_type=lease_type,
        address=IPv6Address(0x20010DB8 << 96 | n << (128 - prefix_length)),
        prefix_length=prefix_length,
        state=state,
        duid=duid,
        iaid=iaid,
        start_time_of_state=100.0,
        cltt=100.0,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=expires,
        **kwargs,
    )


def byKey(leases: list[Lease]) -> list[Lease]:
    """C{leases} sorted by their store key."""
    return sorted(leases, key=lambda lease: lease.key)


def oddEven(lease: Lease) -> str | None:
    """
    A replication classifier for tests: addresses with an odd last bit go to
    relationship C{"odd"}, even ones to C{"even"}; prefixes to none.
    """
    if lease.prefix_length != 128:
        return None
    return "odd" if int(lease.address) & 1 else "even"


def allPending(store: ILeaseStore, relationship: str, page: int = 1000) -> list[tuple[int, Lease]]:
    """Every pending update of C{relationship}, read in pages of C{page}."""
    found: list[tuple[int, Lease]] = []
    after = 0
    while True:
        batch = store.pendingUpdates(relationship, after, page)
        found.extend(batch)
        if len(batch) < page:
            return found
        after = batch[-1][0]


class LeaseStoreTestsMixin(_Base):
    """
    Tests of the L{ILeaseStore} contract.

    Subclasses provide L{makeStore}, which returns a new, empty, open store
    (with this replication classifier, if given) and arranges for it to be
    closed when the test ends.  Every test reads both right after C{commit}
    (before durability, for stores that are not durable at once) and after
    its Deferred has fired.
    """

    def makeStore(self, replicate: Replicate | None = None) -> ILeaseStore:
        raise NotImplementedError()

    async def test_interface(self) -> None:
        """The store provides L{ILeaseStore}."""
        self.assertTrue(verifyObject(ILeaseStore, self.makeStore()))

    async def test_getMissing(self) -> None:
        """C{get} of a key with no binding is C{None}."""
        store = self.makeStore()
        self.assertIsNone(store.get(IPv6Address("2001:db8::1"), 128))

    async def test_commitThenGet(self) -> None:
        """A committed binding is readable at once and after it is durable."""
        store = self.makeStore()
        lease = makeLease(1, fqdn="host.example.", fqdn_flags=1, dns_update_state="done")
        d = store.commit([lease])
        self.assertEqual(store.get(lease.address, 128), lease)
        await d
        self.assertEqual(store.get(lease.address, 128), lease)

    async def test_replace(self) -> None:
        """A second commit of the same key replaces the binding."""
        store = self.makeStore()
        first = makeLease(1)
        await store.commit([first])
        second = evolve(first, state=BindingState.EXPIRED, cltt=200.0)
        d = store.commit([second])
        self.assertEqual(store.get(first.address, 128), second)
        await d
        self.assertEqual(store.get(first.address, 128), second)
        self.assertEqual(store.count(), {"expired": 1})

    async def test_keyIncludesPrefixLength(self) -> None:
        """An address and a prefix starting at it are different bindings."""
        store = self.makeStore()
        address = makeLease(0, prefix_length=128, iaid=1)
        prefix = evolve(address, prefix_length=56, lease_type=LeaseType.PD, iaid=2)
        await store.commit([address, prefix])
        self.assertEqual(store.get(address.address, 128), address)
        self.assertEqual(store.get(address.address, 56), prefix)
        self.assertIsNone(store.get(address.address, 64))
        self.assertEqual(byKey(list(store.iterLeases(10))), byKey([address, prefix]))

    async def test_byClient(self) -> None:
        """C{byClient} returns exactly the bindings of that DUID, IAID and type."""
        store = self.makeStore()
        mine = [makeLease(1), makeLease(2)]
        otherIAID = makeLease(3, iaid=2)
        otherDUID = makeLease(4, duid=b"other")
        otherType = makeLease(5, lease_type=LeaseType.TA)
        prefix = makeLease(1, prefix_length=56, lease_type=LeaseType.PD)
        d = store.commit([*mine, otherIAID, otherDUID, otherType, prefix])
        duid = mine[0].duid
        for _ in range(2):
            self.assertEqual(byKey(store.byClient(duid, 1, LeaseType.NA)), mine)
            self.assertEqual(store.byClient(duid, 2, LeaseType.NA), [otherIAID])
            self.assertEqual(store.byClient(b"other", 1, LeaseType.NA), [otherDUID])
            self.assertEqual(store.byClient(duid, 1, LeaseType.TA), [otherType])
            self.assertEqual(store.byClient(duid, 1, LeaseType.PD), [prefix])
            self.assertEqual(store.byClient(b"nobody", 1, LeaseType.NA), [])
            await d

    async def test_byClientMoved(self) -> None:
        """A binding given to another client leaves the first one's list."""
        store = self.makeStore()
        lease = makeLease(1)
        await store.commit([lease])
        moved = evolve(lease, duid=b"new owner", iaid=7)
        d = store.commit([moved])
        for _ in range(2):
            self.assertEqual(store.byClient(lease.duid, 1, LeaseType.NA), [])
            self.assertEqual(store.byClient(b"new owner", 7, LeaseType.NA), [moved])
            await d

    async def test_expiredBefore(self) -> None:
        """
        C{expiredBefore} returns ACTIVE and ABANDONED bindings expiring at
        or before C{now}, soonest first, at most C{limit} of them.
        """
        store = self.makeStore()
        active = [makeLease(n, expires=float(50 - n)) for n in range(1, 6)]
        abandoned = makeLease(10, state=BindingState.ABANDONED, expires=10.0)
        notYet = makeLease(11, expires=60.0)
        others = [
            makeLease(20 + i, state=state, expires=1.0)
            for i, state in enumerate(BindingState)
            if state not in (BindingState.ACTIVE, BindingState.ABANDONED)
        ]
        d = store.commit([*active, abandoned, notYet, *others])
        for _ in range(2):
            self.assertEqual(store.expiredBefore(50.0, 100), [abandoned, *reversed(active)])
            self.assertEqual(store.expiredBefore(46.0, 2), [abandoned, active[-1]])
            # "at or before": expires == now counts.
            self.assertEqual(store.expiredBefore(45.0, 100), [abandoned, active[-1]])
            self.assertEqual(store.expiredBefore(9.0, 100), [])
            self.assertEqual(store.expiredBefore(50.0, 0), [])
            await d

    async def test_expiredBeforeSeesChanges(self) -> None:
        """A binding renewed or freed is no longer a reclamation candidate."""
        store = self.makeStore()
        leases = [makeLease(n, expires=float(n)) for n in range(1, 5)]
        await store.commit(leases)
        renewed = evolve(leases[0], expires=100.0)
        freed = evolve(leases[1], state=BindingState.FREE)
        expiring = makeLease(9, expires=2.5)
        d = store.commit([renewed, freed, expiring])
        for _ in range(2):
            self.assertEqual(store.expiredBefore(10.0, 2), [expiring, leases[2]])
            self.assertEqual(store.expiredBefore(10.0, 10), [expiring, *leases[2:]])
            await d

    async def test_iterLeases(self) -> None:
        """
        C{iterLeases} yields every binding once, in key order, whatever the
        batch size.
        """
        store = self.makeStore()
        leases = [makeLease(n) for n in (7, 3, 11, 1, 5)]
        leases.append(makeLease(1, prefix_length=64, lease_type=LeaseType.PD))
        await store.commit(leases[:3])
        d = store.commit(leases[3:])
        for _ in range(2):
            for batch in (1, 2, 5, 6, 100):
                self.assertEqual(list(store.iterLeases(batch)), byKey(leases))
            await d

    async def test_iterLeasesEmpty(self) -> None:
        """An empty store yields nothing."""
        self.assertEqual(list(self.makeStore().iterLeases(10)), [])

    async def test_count(self) -> None:
        """C{count} gives the number of bindings per state name."""
        store = self.makeStore()
        self.assertEqual(store.count(), {})
        await store.commit([makeLease(1), makeLease(2)])
        d = store.commit(
            [
                evolve(makeLease(2), state=BindingState.RELEASED),
                makeLease(3, state=BindingState.FREE_BACKUP),
                makeLease(4),
            ]
        )
        for _ in range(2):
            self.assertEqual(store.count(), {"active": 2, "released": 1, "free-backup": 1})
            await d

    async def test_countFollowsEveryChange(self) -> None:
        """
        C{count} follows every change as reads see it, durable or not:
        commits (new bindings, replaced ones, the same key twice in one
        call), C{amend} and C{acknowledge} that change a state, and
        C{markPending}, which changes none; it always equals a count of
        what C{iterLeases} yields.
        """
        store = self.makeStore(oddEven)

        def check(expected: dict[str, int]) -> None:
            self.assertEqual(store.count(), expected)
            counted: dict[str, int] = {}
            for lease in store.iterLeases(7):
                counted[lease.state.value] = counted.get(lease.state.value, 0) + 1
            self.assertEqual(counted, expected)

        check({})
        d = store.commit([makeLease(n) for n in range(1, 6)])
        check({"active": 5})
        await d
        check({"active": 5})
        d = store.commit(
            [
                evolve(makeLease(1), state=BindingState.EXPIRED),
                evolve(makeLease(1), state=BindingState.RELEASED),
                makeLease(6, state=BindingState.FREE),
                makeLease(1, prefix_length=56, lease_type=LeaseType.PD),
            ]
        )
        check({"active": 5, "released": 1, "free": 1})
        await d
        check({"active": 5, "released": 1, "free": 1})
        d = store.amend([evolve(makeLease(2), state=BindingState.ABANDONED), makeLease(99)])
        check({"active": 4, "released": 1, "free": 1, "abandoned": 1})
        await d
        (version, three), *_ = [
            (version, lease)
            for version, lease in store.pendingUpdates("odd", 0, 10)
            if lease.key == makeLease(3).key
        ]
        # An ack changes no state.
        d = store.acknowledge("odd", [(three, version)])
        check({"active": 4, "released": 1, "free": 1, "abandoned": 1})
        await d
        check({"active": 4, "released": 1, "free": 1, "abandoned": 1})
        await store.markPending([makeLease(n).key for n in range(1, 7)])
        check({"active": 4, "released": 1, "free": 1, "abandoned": 1})

    async def test_commitEmpty(self) -> None:
        """Committing nothing succeeds."""
        await self.makeStore().commit([])

    async def test_metadata(self) -> None:
        """Metadata is read back at once, replaced by a later value."""
        store = self.makeStore()
        self.assertIsNone(store.getMetadata("server-duid"))
        d = store.setMetadata("server-duid", "000100011234")
        self.assertEqual(store.getMetadata("server-duid"), "000100011234")
        await d
        self.assertEqual(store.getMetadata("server-duid"), "000100011234")
        d = store.setMetadata("server-duid", "other")
        self.assertEqual(store.getMetadata("server-duid"), "other")
        await d
        self.assertEqual(store.getMetadata("server-duid"), "other")
        self.assertIsNone(store.getMetadata("failover-state"))

    async def test_close(self) -> None:
        """C{close} fires once what was committed is flushed."""
        store = self.makeStore()
        d = store.commit([makeLease(1)])
        closed = store.close()
        await closed
        self.assertTrue(d.called)
        await d

    async def test_whenDurable(self) -> None:
        """
        A commit's C{whenDurable} is called once per commit, in commit
        order, each before its Deferred fires.
        """
        store = self.makeStore()
        events: list[tuple[str, int]] = []
        ds: list[Deferred[None]] = []
        for n in range(5):
            d = store.commit([makeLease(n)], whenDurable=lambda n=n: events.append(("durable", n)))
            d.addCallback(lambda _, n: events.append(("fired", n)), n)
            ds.append(d)
        for d in ds:
            await d
        for n in range(5):
            self.assertLess(events.index(("durable", n)), events.index(("fired", n)))
        self.assertEqual([n for kind, n in events if kind == "durable"], list(range(5)))
        self.assertEqual(len(events), 10)

    async def test_whenDurableRaising(self) -> None:
        """
        What C{whenDurable} raises is logged; the changes are still stored
        and the Deferred still fires.
        """
        store = self.makeStore()

        def broken() -> None:
            raise ZeroDivisionError()

        await store.commit([makeLease(1)], whenDurable=broken)
        self.assertEqual(store.get(makeLease(1).address, 128), makeLease(1))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_commitsFireInOrder(self) -> None:
        """Commits become durable, and their Deferreds fire, in call order."""
        store = self.makeStore()
        fired: list[int] = []
        ds: list[Deferred[None]] = []
        for n in range(20):
            d = store.commit([makeLease(n % 7, iaid=n)])
            d.addCallback(lambda _, n: fired.append(n), n)
            ds.append(d)
        for d in ds:
            await d
        self.assertEqual(fired, list(range(20)))
        self.assertEqual(
            [lease.iaid for lease in store.iterLeases(3)], [14, 15, 16, 17, 18, 19, 13]
        )


class ReplicationMarksTestsMixin(_Base):
    """
    Tests of the replication marks of the L{ILeaseStore} contract (failover
    lazy updates): versions, pending marks, acknowledgements.  Reads of
    C{pendingUpdates} are checked once commits are durable (a store may
    hide versions that are not).
    """

    def makeStore(self, replicate: Replicate | None = None) -> ILeaseStore:
        raise NotImplementedError()

    async def test_ackFieldsStored(self) -> None:
        """The failover acknowledgement fields of a binding are stored."""
        store = self.makeStore(oddEven)
        lease = makeLease(
            1,
            partner_lifetime_sent=2000.5,
            partner_lifetime_acked=1500.25,
            partner_state_acked=BindingState.EXPIRED,
            partner_stos_acked=90.5,
        )
        d = store.commit([lease])
        self.assertEqual(store.get(lease.address, 128), lease)
        await d
        self.assertEqual(store.get(lease.address, 128), lease)
        self.assertEqual(list(store.iterLeases(10)), [lease])

    async def test_pendingByRelationship(self) -> None:
        """
        Each committed binding the classifier assigns to a relationship is
        pending for it, with increasing versions in commit order; bindings
        it assigns to none are not pending anywhere.
        """
        store = self.makeStore(oddEven)
        leases = [makeLease(n) for n in (4, 1, 2, 3)]
        prefix = makeLease(1, prefix_length=56, lease_type=LeaseType.PD)
        d = store.commit([*leases, prefix])
        self.assertEqual((store.pendingCount("odd"), store.pendingCount("even")), (2, 2))
        await d
        odd = store.pendingUpdates("odd", 0, 10)
        even = store.pendingUpdates("even", 0, 10)
        self.assertEqual([lease for _, lease in odd], [leases[1], leases[3]])
        self.assertEqual([lease for _, lease in even], [leases[0], leases[2]])
        versions = [even[0][0], odd[0][0], even[1][0], odd[1][0]]
        self.assertEqual(versions, sorted(set(versions)))
        self.assertEqual(store.pendingUpdates("other", 0, 10), [])
        self.assertEqual(store.pendingCount("other"), 0)

    async def test_newVersionPerCommit(self) -> None:
        """A binding committed again gets a newer version and moves to the end."""
        store = self.makeStore(oddEven)
        one, three = makeLease(1), makeLease(3)
        await store.commit([one, three])
        [(v1, _), (v3, _)] = store.pendingUpdates("odd", 0, 10)
        changed = evolve(one, cltt=150.0)
        await store.commit([changed])
        [(w3, l3), (w1, l1)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual((w3, l3, l1), (v3, three, changed))
        self.assertGreater(w1, v3)
        self.assertEqual(store.pendingCount("odd"), 2)

    async def test_pagination(self) -> None:
        """
        C{pendingUpdates} pages by version: C{afterVersion} and C{limit}
        give every pending binding once, in order, whatever the page size.
        """
        store = self.makeStore(oddEven)
        for n in range(1, 40, 2):
            await store.commit([makeLease(n)])
        await store.commit([makeLease(n) for n in range(41, 60, 2)])
        expected = store.pendingUpdates("odd", 0, 1000)
        self.assertEqual(len(expected), 30)
        for page in (1, 2, 7, 29, 30, 31):
            self.assertEqual(allPending(store, "odd", page), expected, page)
        self.assertEqual(store.pendingUpdates("odd", expected[9][0], 3), expected[10:13])
        self.assertEqual(store.pendingUpdates("odd", expected[-1][0], 3), [])
        self.assertEqual(store.pendingUpdates("odd", 0, 0), [])

    async def test_notPending(self) -> None:
        """
        C{pending=False} (a binding received from the partner) stores the
        binding without a mark, and clears an older one.
        """
        store = self.makeStore(oddEven)
        one, three = makeLease(1), makeLease(3)
        await store.commit([one])
        d = store.commit([evolve(one, iaid=9), three], pending=False)
        self.assertEqual(store.pendingCount("odd"), 0)
        await d
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        self.assertEqual(store.get(one.address, 128), evolve(one, iaid=9))
        # It still took a version: a later local change comes after it.
        await store.commit([three])
        [(version, lease)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual(lease, three)
        self.assertGreater(version, 2)

    async def test_noClassifier(self) -> None:
        """Without a classifier nothing is ever pending."""
        store = self.makeStore()
        await store.commit([makeLease(1), makeLease(2)])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        self.assertEqual(store.pendingCount("odd"), 0)
        await store.markPending([makeLease(1).key])
        self.assertEqual(store.pendingCount("odd"), 0)

    async def test_acknowledge(self) -> None:
        """
        An ack applies the ack rule to the stored binding in place (the
        partner lifetime proposed is acked, and the state sent) and clears
        the pending mark when the binding is still at the version sent; the
        binding is no longer pending at once, the acked fields are read
        once durable.
        """
        store = self.makeStore(oddEven)
        one, three = makeLease(1), makeLease(3)
        await store.commit([one, three])
        [(v1, _), (v3, _)] = store.pendingUpdates("odd", 0, 10)
        sent = evolve(one, partner_lifetime_sent=900.0)
        acked = evolve(
            one,
            partner_lifetime_acked=900.0,
            partner_state_acked=one.state,
            partner_stos_acked=one.start_time_of_state,
        )
        d = store.acknowledge("odd", [(sent, v1)])
        self.assertEqual(store.pendingCount("odd"), 1)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(v3, three)])
        await d
        self.assertEqual(store.get(one.address, 128), acked)
        self.assertEqual(store.pendingCount("odd"), 1)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(v3, three)])
        # No new version: a later change of another binding is still later.
        await store.commit([makeLease(5)])
        [_, (v5, _)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual(v5, v3 + 1)

    async def test_acknowledgeOlderVersion(self) -> None:
        """
        An ack of a version that is no longer the binding's applies to the
        newer record (the same client's, in the same state) but leaves it
        pending, with its version.
        """
        store = self.makeStore(oddEven)
        one = makeLease(1)
        await store.commit([one])
        [(version, _)] = store.pendingUpdates("odd", 0, 10)
        newer = evolve(one, cltt=200.0)
        await store.commit([newer])
        [(current, _)] = store.pendingUpdates("odd", 0, 10)
        await store.acknowledge("odd", [(evolve(one, partner_lifetime_sent=700.0), version)])
        record = evolve(
            newer,
            partner_lifetime_acked=700.0,
            partner_state_acked=newer.state,
            partner_stos_acked=newer.start_time_of_state,
        )
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(current, record)])
        self.assertEqual(store.get(one.address, 128), record)
        await store.acknowledge("odd", [(record, current)])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])

    async def test_acknowledgeChangedBinding(self) -> None:
        """
        The ack rule looks at the binding as stored: a binding now another
        client's acks nothing; one whose state changed since it was sent
        gets the partner lifetime acked but not the state.
        """
        store = self.makeStore(oddEven)
        one, three = makeLease(1), makeLease(3)
        await store.commit([one, three])
        [(v1, _), (v3, _)] = store.pendingUpdates("odd", 0, 10)
        other = evolve(one, duid=b"someone else")
        expired = evolve(three, state=BindingState.EXPIRED, start_time_of_state=150.0)
        await store.commit([other, expired])
        await store.acknowledge(
            "odd",
            [
                (evolve(one, partner_lifetime_sent=700.0), v1),
                (evolve(three, partner_lifetime_sent=800.0), v3),
            ],
        )
        self.assertEqual(store.get(one.address, 128), other)
        self.assertEqual(
            store.get(three.address, 128), evolve(expired, partner_lifetime_acked=800.0)
        )
        self.assertEqual(store.pendingCount("odd"), 2)

    async def test_markPendingAfterAcknowledge(self) -> None:
        """
        C{markPending} right after an ack of the pending version, before
        that ack is durable, queues the binding again with a new version:
        the partner acked that version, and should now get ours again.
        """
        store = self.makeStore(oddEven)
        one = makeLease(1)
        await store.commit([one])
        [(v1, _)] = store.pendingUpdates("odd", 0, 10)
        acked = store.acknowledge("odd", [(one, v1)])
        marked = store.markPending([one.key])
        self.assertEqual(store.pendingCount("odd"), 1)
        await acked
        await marked
        [(version, lease)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual((lease.key, version > v1), (one.key, True))
        self.assertEqual(store.pendingCount("odd"), 1)

    async def test_acknowledgeThenChange(self) -> None:
        """
        A change passed after an ack replaces the acked record, even in the
        same transaction: the ack applies to the binding as it was when
        the ack was passed.
        """
        store = self.makeStore(oddEven)
        one = makeLease(1)
        await store.commit([one])
        [(v1, _)] = store.pendingUpdates("odd", 0, 10)
        newer = evolve(one, cltt=300.0)
        acked = store.acknowledge("odd", [(evolve(one, partner_lifetime_sent=700.0), v1)])
        await store.commit([newer])
        await acked
        self.assertEqual(store.get(one.address, 128), newer)
        [(version, lease)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual((lease, version > v1), (newer, True))

    async def test_acknowledgeOtherRelationship(self) -> None:
        """An ack names its relationship: another's does not clear the mark."""
        store = self.makeStore(oddEven)
        one = makeLease(1)
        await store.commit([one])
        [(version, _)] = store.pendingUpdates("odd", 0, 10)
        await store.acknowledge("even", [(one, version)])
        self.assertEqual(
            store.pendingUpdates("odd", 0, 10), [(version, store.get(one.address, 128))]
        )

    async def test_acknowledgeMissing(self) -> None:
        """An ack of a binding the store does not have is ignored."""
        store = self.makeStore(oddEven)
        await store.acknowledge("odd", [(makeLease(1), 1)])
        self.assertIsNone(store.get(makeLease(1).address, 128))

    async def test_amend(self) -> None:
        """C{amend} replaces a binding in place: same version, same mark."""
        store = self.makeStore(oddEven)
        one, two = makeLease(1), makeLease(2)
        await store.commit([one, two])
        await store.acknowledge("even", [(two, store.pendingUpdates("even", 0, 1)[0][0])])
        [(version, _)] = store.pendingUpdates("odd", 0, 10)
        amended = evolve(one, partner_lifetime_sent=5000.0)
        d = store.amend([amended, evolve(two, fqdn="x."), makeLease(7)])
        self.assertEqual(store.get(one.address, 128), amended)
        await d
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(version, amended)])
        self.assertEqual(store.pendingCount("even"), 0)
        self.assertEqual(store.get(two.address, 128), evolve(two, fqdn="x."))
        self.assertIsNone(store.get(makeLease(7).address, 128))

    async def test_markPending(self) -> None:
        """
        C{markPending} queues a binding again with a new version unless it is
        pending already (then its version stays); bindings with no record or
        no relationship are skipped.
        """
        store = self.makeStore(oddEven)
        one, three = makeLease(1), makeLease(3)
        prefix = makeLease(1, prefix_length=56, lease_type=LeaseType.PD)
        await store.commit([one, three, prefix])
        [(v1, _), (v3, _)] = store.pendingUpdates("odd", 0, 10)
        await store.acknowledge("odd", [(one, v1)])
        d = store.markPending([one.key, three.key, prefix.key, makeLease(9).key])
        self.assertEqual(store.pendingCount("odd"), 2)
        await d
        [(w3, l3), (w1, l1)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual((w3, l3, l1), (v3, three, store.get(one.address, 128)))
        self.assertGreater(w1, v3)
        self.assertIsNone(store.get(makeLease(9).address, 128))
