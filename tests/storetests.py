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

from dhcp6ha.interfaces import ILeaseStore
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


class LeaseStoreTestsMixin(_Base):
    """
    Tests of the L{ILeaseStore} contract.

    Subclasses provide L{makeStore}, which returns a new, empty, open store
    and arranges for it to be closed when the test ends.  Every test reads
    both right after C{commit} (before durability, for stores that are not
    durable at once) and after its Deferred has fired.
    """

    def makeStore(self) -> ILeaseStore:
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
