# -*- test-case-name: tests.test_testing -*-
"""
Tests for L{dhcp6ha.testing}: the public test doubles behave like the real
things they stand for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from dhcp6ha.interfaces import ILeaseStore, Replicate
from dhcp6ha.testing import MemoryLeaseStore
from tests.storetests import LeaseStoreTestsMixin, ReplicationMarksTestsMixin, makeLease, oddEven


class MemoryLeaseStoreContractTests(LeaseStoreTestsMixin, ReplicationMarksTestsMixin, TestCase):
    """L{MemoryLeaseStore} passes the tests the SQLite store passes."""

    def makeStore(self, replicate: Replicate | None = None) -> ILeaseStore:
        return MemoryLeaseStore(replicate=replicate)


class MemoryLeaseStoreTests(SynchronousTestCase):
    """What L{MemoryLeaseStore} adds for tests."""

    def test_interface(self) -> None:
        """Both flavours provide L{ILeaseStore}."""
        self.assertTrue(verifyObject(ILeaseStore, MemoryLeaseStore()))
        self.assertTrue(verifyObject(ILeaseStore, MemoryLeaseStore(autoFlush=False)))

    def test_autoFlush(self) -> None:
        """By default a commit is durable at once."""
        store = MemoryLeaseStore()
        self.assertIsNone(self.successResultOf(store.commit([makeLease(1)])))

    def test_heldUntilFlush(self) -> None:
        """
        With C{autoFlush=False}, commits are visible at once but their
        Deferreds fire only at L{MemoryLeaseStore.flush}, in order.
        """
        store = MemoryLeaseStore(autoFlush=False)
        fired: list[int] = []
        first = makeLease(1)
        store.commit([first]).addCallback(lambda _: fired.append(1))
        store.commit([makeLease(2)]).addCallback(lambda _: fired.append(2))
        self.assertEqual(store.get(first.address, 128), first)
        self.assertEqual(fired, [])
        store.flush()
        self.assertEqual(fired, [1, 2])

    def test_committed(self) -> None:
        """C{committed} records every batch, in order."""
        store = MemoryLeaseStore()
        one, two, three = makeLease(1), makeLease(2), makeLease(3)
        store.commit([one, two])
        store.commit([three])
        self.assertEqual(store.committed, [(one, two), (three,)])

    def test_closeFlushes(self) -> None:
        """C{close} fires pending commits and marks the store closed."""
        store = MemoryLeaseStore(autoFlush=False)
        d = store.commit([makeLease(1)])
        self.assertFalse(store.closed)
        self.successResultOf(store.close())
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(store.closed)

    def test_pendingWaitsForFlush(self) -> None:
        """
        With C{autoFlush=False}, a pending binding is not returned by
        C{pendingUpdates} until its commit is flushed (like the SQLite
        store's durable-only rule); C{pendingCount} counts it at once.
        """
        store = MemoryLeaseStore(autoFlush=False, replicate=oddEven)
        one = makeLease(1)
        store.commit([one])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        self.assertEqual(store.pendingCount("odd"), 1)
        store.flush()
        [(version, lease)] = store.pendingUpdates("odd", 0, 10)
        self.assertEqual(lease, one)
        d = store.acknowledge("odd", [(one, version)])
        self.assertNoResult(d)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        store.flush()
        self.successResultOf(d)
