# -*- test-case-name: tests.test_sqlite -*-
"""
Tests for L{dhcp6ha.leases.sqlite}.

The store needs its writer thread, so these tests run on the real reactor
(trial's asynchronous L{TestCase}); every database lives in C{self.mktemp()}.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import threading
from collections.abc import Sequence
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, TypeVar, cast

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from dhcp6ha.failover.conflict import acknowledged
from dhcp6ha.interfaces import ILeaseStore, Replicate
from dhcp6ha.leases import sqlite as sqlitemodule
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SCHEMA_VERSION, SchemaError, SQLiteLeaseStore, StoreClosed
from dhcp6ha.testing import MemoryLeaseStore
from tests.storetests import (
    LeaseStoreTestsMixin,
    ReplicationMarksTestsMixin,
    allPending,
    byKey,
    makeLease,
    oddEven,
)

# The tests and the store run on the real reactor: the store's writer thread
# reports back with callFromThread.
reactor: Any = globalReactor


_E = TypeVar("_E", bound=BaseException)


async def failureOf(d: Deferred[Any], kind: type[_E]) -> _E:
    """Wait for C{d} to fail with C{kind}; return the exception."""
    try:
        await d
    except kind as e:
        return e
    raise AssertionError(f"{d!r} did not fail with {kind!r}")


def turn() -> Deferred[None]:
    """Let the reactor run one more iteration."""
    return deferLater(reactor, 0, lambda: None)


class StoreFixture(TestCase):
    """Opens stores in a fresh directory and closes them after the test."""

    def databasePath(self) -> str:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        return str(directory / "leases.sqlite")

    def openStore(self, path: str | None = None, **kwargs: Any) -> SQLiteLeaseStore:
        store = SQLiteLeaseStore(path or self.databasePath(), reactor, **kwargs)
        self.addCleanup(store.close)
        return store

    async def reopen(self, store: SQLiteLeaseStore, path: str, **kwargs: Any) -> SQLiteLeaseStore:
        """Close C{store} and open the same database again."""
        await store.close()
        return self.openStore(path, **kwargs)


class SQLiteLeaseStoreContractTests(LeaseStoreTestsMixin, ReplicationMarksTestsMixin, StoreFixture):
    """L{SQLiteLeaseStore} passes the tests L{dhcp6ha.testing.MemoryLeaseStore} passes."""

    def makeStore(self, replicate: Replicate | None = None) -> ILeaseStore:
        return self.openStore(replicate=replicate)


class PersistenceTests(StoreFixture):
    """What is committed is on disk, in the documented format."""

    async def test_roundTrip(self) -> None:
        """Every field of every kind of binding survives a close and reopen."""
        path = self.databasePath()
        store = self.openStore(path)
        leases = [
            makeLease(
                1,
                iaid=0xFFFFFFFF,
                duid=b"\x00\x01" + bytes(range(256))[:126],
                expires=1700000000.125,
                partner_lifetime_sent=1700000100.5,
                partner_lifetime_acked=1700000050.25,
                fqdn="host.example.com.",
                fqdn_flags=5,
                dns_update_state="pending",
                partner_state_acked=BindingState.ACTIVE,
                partner_stos_acked=1699999000.5,
            ),
            makeLease(2, lease_type=LeaseType.TA, iaid=0, duid=b""),
            makeLease(3, prefix_length=56, lease_type=LeaseType.PD, state=BindingState.FREE),
            makeLease(0, prefix_length=0, lease_type=LeaseType.PD),
            makeLease(4, state=BindingState.ABANDONED, fqdn="", dns_update_state=""),
        ]
        leases += [makeLease(10 + i, state=state) for i, state in enumerate(BindingState)]
        leases += [
            makeLease(30 + i, partner_state_acked=state, partner_stos_acked=float(i))
            for i, state in enumerate(BindingState)
        ]
        await store.commit(leases)
        store = await self.reopen(store, path)
        for lease in leases:
            self.assertEqual(store.get(lease.address, lease.prefix_length), lease)
        self.assertEqual(list(store.iterLeases(4)), byKey(leases))

    async def test_metadataDurable(self) -> None:
        """Metadata survives a reopen and can be read right after opening."""
        path = self.databasePath()
        store = self.openStore(path)
        await store.setMetadata("server-duid", "00030001020304050607")
        store = await self.reopen(store, path)
        self.assertEqual(store.getMetadata("server-duid"), "00030001020304050607")

    async def test_schemaVersion(self) -> None:
        """
        A new database records its schema version in the metadata table;
        the key is reserved.
        """
        path = self.databasePath()
        store = self.openStore(path)
        self.assertEqual(store.getMetadata("schema_version"), str(SCHEMA_VERSION))
        failure = await failureOf(store.setMetadata("schema_version", "2"), ValueError)
        self.assertIn("reserved", str(failure))
        with sqlite3.connect(path) as raw:
            rows = raw.execute("SELECT value FROM metadata WHERE key = 'schema_version'")
            self.assertEqual(rows.fetchall(), [(str(SCHEMA_VERSION),)])

    async def test_newerSchemaRefused(self) -> None:
        """A database with another schema version is refused, untouched."""
        path = self.databasePath()
        await self.openStore(path).close()
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("UPDATE metadata SET value = '99' WHERE key = 'schema_version'")
        raw.close()
        error = self.assertRaises(SchemaError, SQLiteLeaseStore, path, reactor)
        self.assertIn("'99'", str(error))
        raw = sqlite3.connect(path)
        self.assertEqual(
            raw.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchall(),
            [("99",)],
        )
        raw.close()

    async def test_openFailure(self) -> None:
        """A database that cannot be created is an error at construction."""
        path = os.path.join(self.mktemp(), "missing", "leases.sqlite")
        self.assertRaises(sqlite3.OperationalError, SQLiteLeaseStore, path, reactor)

    def test_reactorWithoutThreads(self) -> None:
        """A reactor that cannot take calls from threads is refused at once."""
        self.assertRaises(TypeError, SQLiteLeaseStore, self.databasePath(), Clock())

    async def test_walAndFullSync(self) -> None:
        """The database is in WAL mode and the writer syncs fully (fsync per commit)."""
        path = self.databasePath()
        store = self.openStore(path)
        await store.commit([makeLease(1)])
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        self.assertEqual(raw.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        synchronous = await store._writer.submit(
            lambda connection: connection.execute("PRAGMA synchronous").fetchone()[0]
        )
        self.assertEqual(synchronous, 2)  # FULL

    async def test_storageFormat(self) -> None:
        """Addresses are 16-byte BLOBs, DUIDs BLOBs, enums text."""
        path = self.databasePath()
        store = self.openStore(path)
        lease = makeLease(1, prefix_length=48, lease_type=LeaseType.PD, duid=b"\x00\x01dd")
        await store.commit([lease])
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        row = raw.execute(
            "SELECT address, typeof(address), duid, typeof(duid), lease_type, state FROM leases"
        ).fetchone()
        self.assertEqual(row, (lease.address.packed, "blob", b"\x00\x01dd", "blob", "pd", "active"))

    def test_queryPlans(self) -> None:
        """Every read the server does per exchange uses an index, never a scan."""
        path = self.databasePath()
        self.openStore(path)
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        plans = {
            sqlitemodule.SQL_GET: ((b"\0" * 16, 128), "USING PRIMARY KEY"),
            sqlitemodule.SQL_BY_CLIENT: ((b"d", 1, "na"), "USING INDEX leases_by_client"),
            sqlitemodule.SQL_EXPIRED: ((1.0, 10), "USING INDEX leases_by_expiry"),
            sqlitemodule.SQL_PAGE_NEXT: ((b"\0" * 16, 128, 10), "USING PRIMARY KEY"),
            sqlitemodule.SQL_GET_METADATA: (("k",), "USING PRIMARY KEY"),
            sqlitemodule.SQL_PENDING: (("rel", 0, 10, 10), "USING INDEX leases_pending"),
            sqlitemodule.SQL_PENDING_KEYS: (
                ("rel", 0, 10, 10),
                "USING COVERING INDEX leases_pending",
            ),
            sqlitemodule.SQL_PENDING_COUNT: (("rel",), "USING COVERING INDEX leases_pending"),
            sqlitemodule.SQL_GET_CURRENT: ((b"\0" * 16, 128), "USING PRIMARY KEY"),
        }
        for sql, (parameters, expected) in plans.items():
            plan = " ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, parameters))
            self.assertIn(expected, plan, sql)
            self.assertNotIn("TEMP B-TREE", plan, sql)


V1_SCHEMA = (
    "CREATE TABLE metadata (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE leases (
        address BLOB NOT NULL CHECK (length(address) = 16),
        prefix_length INTEGER NOT NULL CHECK (prefix_length BETWEEN 0 AND 128),
        lease_type TEXT NOT NULL, state TEXT NOT NULL, duid BLOB NOT NULL,
        iaid INTEGER NOT NULL, start_time_of_state REAL NOT NULL, cltt REAL NOT NULL,
        preferred_lifetime INTEGER NOT NULL, valid_lifetime INTEGER NOT NULL,
        expires REAL NOT NULL, partner_lifetime_sent REAL NOT NULL,
        partner_lifetime_acked REAL NOT NULL, fqdn TEXT, fqdn_flags INTEGER NOT NULL,
        dns_update_state TEXT, PRIMARY KEY (address, prefix_length)
    ) WITHOUT ROWID""",
    "CREATE INDEX leases_by_client ON leases (duid, iaid, lease_type)",
    """CREATE INDEX leases_by_expiry ON leases (expires)
        WHERE state IN ('active', 'abandoned')""",
    "INSERT INTO metadata VALUES ('schema_version', '1')",
)


class ReplicationMarksTests(StoreFixture):
    """What the SQLite store adds to the replication contract: durability."""

    async def test_survivesReopen(self) -> None:
        """
        Pending marks and versions survive a close and reopen; new versions
        continue after the largest stored one.
        """
        path = self.databasePath()
        store = self.openStore(path, replicate=oddEven)
        await store.commit([makeLease(n) for n in range(1, 8)])
        [(v1, one), *_] = store.pendingUpdates("odd", 0, 10)
        await store.acknowledge("odd", [(one, v1)])
        before = (allPending(store, "odd"), allPending(store, "even"))
        self.assertEqual((len(before[0]), len(before[1])), (3, 3))
        store = await self.reopen(store, path, replicate=oddEven)
        self.assertEqual((allPending(store, "odd"), allPending(store, "even")), before)
        self.assertEqual(store.pendingCount("odd"), 3)
        await store.commit([makeLease(9)])
        self.assertEqual(allPending(store, "odd")[-1], (8, makeLease(9)))
        # Without the classifier the marks are still there to read.
        store = await self.reopen(store, path)
        self.assertEqual(store.pendingCount("odd"), 4)

    async def test_notBeforeDurable(self) -> None:
        """
        C{pendingUpdates} never returns a version that is not durable yet,
        nor the older version of a binding whose newer change is not
        durable (it comes with the newer one); C{pendingCount} counts it.
        """
        store = self.openStore(replicate=oddEven)
        one, three = makeLease(1), makeLease(3)
        d = store.commit([one])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        self.assertEqual(store.pendingCount("odd"), 1)
        await d
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(1, one)])
        newer = evolve(one, cltt=300.0)
        d = store.commit([newer, three])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [])
        self.assertEqual(store.pendingCount("odd"), 2)
        await d
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(2, newer), (3, three)])

    async def test_hiddenRowsAcrossPages(self) -> None:
        """
        Stored pending rows hidden by changes waiting for their transaction
        do not shorten a page: the store reads on.
        """
        store = self.openStore(replicate=oddEven, maxBatch=1)
        leases = [makeLease(n) for n in range(1, 40, 2)]
        await store.commit(leases)
        # Acks in flight hide the first 12 rows (they are no longer pending
        # once acked), then a commit waits behind them.
        acks = store.acknowledge("odd", [(lease, n + 1) for n, lease in enumerate(leases[:12])])
        self.assertEqual(
            store.pendingUpdates("odd", 0, 5), [(n + 1, leases[n]) for n in range(12, 17)]
        )
        self.assertEqual(allPending(store, "odd", 3), [(n + 1, leases[n]) for n in range(12, 20)])
        await acks
        self.assertEqual(allPending(store, "odd", 3), [(n + 1, leases[n]) for n in range(12, 20)])

    def recordReads(self, store: SQLiteLeaseStore) -> list[str]:
        """The SQL of every read C{store} makes from now on."""
        statements: list[str] = []
        read = store._read

        def recording(sql: str, parameters: Sequence[object]) -> list[Any]:
            statements.append(sql)
            return read(sql, parameters)

        store._read = recording  # type: ignore[method-assign]
        return statements

    async def test_pendingFromKeptChanges(self) -> None:
        """
        The bindings of changes just made durable come from the store's own
        memory: C{pendingUpdates} reads the pending index only.
        """
        store = self.openStore(replicate=oddEven)
        leases = [makeLease(n) for n in range(1, 20, 2)]
        for lease in leases:
            await store.commit([lease])
        statements = self.recordReads(store)
        self.assertEqual(
            store.pendingUpdates("odd", 0, 100), [(n + 1, lease) for n, lease in enumerate(leases)]
        )
        self.assertEqual(statements, [sqlitemodule.SQL_PENDING_KEYS])

    async def test_pendingBacklogReadAsPages(self) -> None:
        """
        Bindings the store does not keep (here: after a reopen) are read
        from the table a page at a time, not one by one.
        """
        path = self.databasePath()
        store = self.openStore(path, replicate=oddEven)
        leases = [makeLease(n) for n in range(1, 40, 2)]
        await store.commit(leases)
        store = await self.reopen(store, path, replicate=oddEven)
        statements = self.recordReads(store)
        self.assertEqual(
            allPending(store, "odd", 8), [(n + 1, lease) for n, lease in enumerate(leases)]
        )
        self.assertEqual(statements.count(sqlitemodule.SQL_PENDING), 3)
        self.assertNotIn(sqlitemodule.SQL_GET_CURRENT, statements)

    async def test_pendingSomeNotKept(self) -> None:
        """
        Beyond C{MAX_RECENT} the oldest kept changes are dropped; a page
        with a few of those reads just them from the table.
        """
        self.patch(sqlitemodule, "MAX_RECENT", 8)
        store = self.openStore(replicate=oddEven)
        leases = [makeLease(n) for n in range(1, 20, 2)]
        for lease in leases:
            await store.commit([lease])
        self.assertEqual(
            list(store._recent),
            [(lease.address.packed, lease.prefix_length) for lease in leases[2:]],
        )
        statements = self.recordReads(store)
        self.assertEqual(
            store.pendingUpdates("odd", 0, 100), [(n + 1, lease) for n, lease in enumerate(leases)]
        )
        self.assertEqual(
            statements,
            [sqlitemodule.SQL_PENDING_KEYS] + [sqlitemodule.SQL_GET_CURRENT] * 2,
        )

    async def test_acknowledgementRewritesKept(self) -> None:
        """
        An ack of an older version leaves the binding pending but rewrites
        its acknowledgement fields: C{pendingUpdates} returns the binding
        as stored, not the change kept before the ack.
        """
        store = self.openStore(replicate=oddEven)
        one = makeLease(1)
        await store.commit([one])
        newer = evolve(one, cltt=200.0)
        await store.commit([newer])
        sent = evolve(one, partner_lifetime_sent=5000.0)
        await store.acknowledge("odd", [(sent, 1)])
        acked = acknowledged(newer, sent)
        self.assertEqual(acked.partner_lifetime_acked, 5000.0)
        self.assertEqual(store.get(one.address, 128), acked)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(2, acked)])

    async def test_acknowledgementAfterChangeInOneTransaction(self) -> None:
        """
        A change and then an ack of the binding's older version, written in
        one transaction: the row is the change with the ack applied, and
        that is what C{pendingUpdates} returns.
        """
        store = self.openStore(replicate=oddEven)
        one = makeLease(1)
        await store.commit([one])
        newer = evolve(one, cltt=200.0)
        sent = evolve(one, partner_lifetime_sent=5000.0)
        changed = store.commit([newer])
        await store.acknowledge("odd", [(sent, 1)])
        await changed
        self.assertEqual(store.transactions, 2)
        acked = acknowledged(newer, sent)
        self.assertEqual(acked.partner_lifetime_acked, 5000.0)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(2, acked)])

    def holdResults(self, store: SQLiteLeaseStore) -> list[tuple[Any, tuple[Any, ...]]]:
        """
        Hold what the writer thread sends back to the reactor, so that the
        test can read between a commit and the store's hearing of it.
        """
        held: list[tuple[Any, tuple[Any, ...]]] = []
        lock = threading.Lock()

        class Holding:
            def callFromThread(self, f: Any, *args: Any) -> None:
                with lock:
                    held.append((f, args))

        original = store._writer._reactor
        store._writer._reactor = Holding()  # type: ignore[assignment]

        def release() -> None:
            store._writer._reactor = original
            for f, args in held:
                original.callFromThread(f, *args)

        self.addCleanup(release)
        return held

    async def nextHeld(self, held: list[tuple[Any, tuple[Any, ...]]]) -> tuple[Any, Any]:
        """Wait for the writer's next result, and take it."""
        for _ in range(500):
            if held:
                return held.pop(0)
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("the writer sent nothing back")

    async def test_acknowledgementCommittedNotHeard(self) -> None:
        """
        Between an ack's commit and the store's hearing of it, reads see the
        ack (a new snapshot): C{pendingUpdates} too, not the change kept
        from before.
        """
        store = self.openStore(replicate=oddEven, ackDelay=0)
        one = makeLease(1)
        await store.commit([one])
        newer = evolve(one, cltt=200.0)
        await store.commit([newer])
        held = self.holdResults(store)
        sent = evolve(one, partner_lifetime_sent=5000.0)
        d = store.acknowledge("odd", [(sent, 1)])
        f, args = await self.nextHeld(held)
        store._endSnapshot()
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(2, acknowledged(newer, sent))])
        f(*args)
        await d

    async def test_changeHeardBeforeLaterAcknowledgement(self) -> None:
        """
        A change made durable while an ack of the binding waits for the next
        transaction is not kept: once that ack is committed, reads see the
        change with the ack applied.
        """
        store = self.openStore(replicate=oddEven, ackDelay=0)
        one = makeLease(1)
        await store.commit([one])
        held = self.holdResults(store)
        newer = evolve(one, cltt=200.0)
        changed = store.commit([newer])
        f, args = await self.nextHeld(held)
        sent = evolve(one, partner_lifetime_sent=5000.0)
        acked = store.acknowledge("odd", [(sent, 1)])
        f(*args)  # the change is heard; the ack's transaction starts
        await changed
        g, more = await self.nextHeld(held)
        store._endSnapshot()
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(2, acknowledged(newer, sent))])
        g(*more)
        await acked

    async def test_failedCommitNotPending(self) -> None:
        """
        A commit the database refuses leaves no mark; the binding's stored
        version stays pending and later versions are returned normally.
        """
        path = self.databasePath()
        store = self.openStore(path, replicate=oddEven)
        one = makeLease(1)
        await store.commit([one])
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(
            "CREATE TRIGGER injected BEFORE INSERT ON leases WHEN NEW.iaid = 666"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        raw.close()
        with capturedLogs():
            await failureOf(store.commit([evolve(one, iaid=666)]), sqlite3.IntegrityError)
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(1, one)])
        await store.commit([makeLease(3)])
        self.assertEqual(store.pendingUpdates("odd", 1, 10), [(3, makeLease(3))])

    async def test_classifierFailure(self) -> None:
        """A classifier that raises fails the commit; nothing is stored."""

        def broken(lease: Lease) -> str | None:
            raise RuntimeError("no such subnet")

        store = self.openStore(replicate=broken)
        self.failureResultOf(store.commit([makeLease(1)]), RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(store.get(makeLease(1).address, 128))
        await store.commit([makeLease(1)], pending=False)
        self.assertEqual(store.get(makeLease(1).address, 128), makeLease(1))

    async def test_closed(self) -> None:
        """After close, the replication writes fail and reads raise."""
        store = self.openStore(replicate=oddEven)
        await store.close()
        for d in (
            store.amend([makeLease(1)]),
            store.acknowledge("odd", [(makeLease(1), 1)]),
            store.markPending([makeLease(1).key]),
        ):
            self.failureResultOf(d, StoreClosed)
        self.assertRaises(StoreClosed, store.pendingUpdates, "odd", 0, 1)
        self.assertRaises(StoreClosed, store.pendingCount, "odd")

    async def test_storedInTheRow(self) -> None:
        """The version and the mark are columns of the binding's own row."""
        path = self.databasePath()
        store = self.openStore(path, replicate=oddEven)
        await store.commit([makeLease(1), makeLease(2)])
        await store.commit([makeLease(4)], pending=False)
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        rows = raw.execute("SELECT version, pending_for FROM leases ORDER BY address").fetchall()
        self.assertEqual(rows, [(1, "odd"), (2, "even"), (3, None)])

    async def test_migrateVersion1(self) -> None:
        """
        A version 1 database is migrated when opened: its bindings are kept,
        with no acknowledgement fields and no pending mark.
        """
        path = self.databasePath()
        raw = sqlite3.connect(path, isolation_level=None)
        for statement in V1_SCHEMA:
            raw.execute(statement)
        lease = makeLease(1, partner_lifetime_sent=7.0, partner_lifetime_acked=6.0)
        raw.execute(
            "INSERT INTO leases VALUES (?, 128, 'na', 'active', ?, 1, 100, 100, 300, 600, 1000,"
            " 7, 6, NULL, 0, NULL)",
            (lease.address.packed, lease.duid),
        )
        raw.close()
        store = self.openStore(path, replicate=oddEven)
        self.assertEqual(store.get(lease.address, 128), lease)
        self.assertEqual(store.getMetadata("schema_version"), str(SCHEMA_VERSION))
        self.assertEqual(store.pendingCount("odd"), 0)
        await store.commit([makeLease(3)])
        self.assertEqual(store.pendingUpdates("odd", 0, 10), [(1, makeLease(3))])
        store = await self.reopen(store, path)
        self.assertEqual(store.get(lease.address, 128), lease)


class GroupCommitTests(StoreFixture):
    """Many changes share one transaction (one fsync)."""

    async def test_sameTurnOneTransaction(self) -> None:
        """Commits made in the same reactor turn are written in one transaction."""
        store = self.openStore()
        await gatherResults([store.commit([makeLease(n)]) for n in range(200)])
        self.assertEqual((store.transactions, store.changesWritten), (1, 200))
        await gatherResults(
            [store.commit([makeLease(n)]) for n in range(50)] + [store.setMetadata("k", "v")]
        )
        self.assertEqual((store.transactions, store.changesWritten), (2, 251))

    async def test_arrivingWhileWriting(self) -> None:
        """
        Commits that arrive while a transaction is being written go together
        into the next one: 50 clients committing 10 times each, every new
        commit made when the previous one is durable, take about 10
        transactions, not 500.
        """
        store = self.openStore()

        async def client(n: int) -> None:
            for i in range(10):
                await store.commit([makeLease(n, iaid=i)])

        done = [Deferred.fromCoroutine(client(n)) for n in range(50)]
        await gatherResults(done)
        self.assertEqual(store.changesWritten, 500)
        self.assertLessEqual(store.transactions, 20)

    async def test_maxBatch(self) -> None:
        """
        A transaction holds at most C{maxBatch} changes, but the changes of
        one commit call are never split.
        """
        store = self.openStore(maxBatch=50)
        await gatherResults([store.commit([makeLease(n)]) for n in range(200)])
        self.assertEqual(store.transactions, 4)
        await store.commit([makeLease(n) for n in range(120)])
        self.assertEqual(store.transactions, 5)

    async def test_commitDelay(self) -> None:
        """An idle writer waits C{commit_delay} to gather changes of later turns."""
        store = self.openStore(commit_delay=0.2)
        first = store.commit([makeLease(1)])
        await turn()
        await turn()
        self.assertFalse(first.called)
        second = store.commit([makeLease(2)])
        await gatherResults([first, second])
        self.assertEqual(store.transactions, 1)


class LazyAcknowledgeTests(StoreFixture):
    """
    An acknowledge starts no transaction of its own before C{ackDelay}: it
    rides along with the next commit's, and fires only once durable.
    """

    async def pendingOne(self, store: SQLiteLeaseStore) -> int:
        """Commit one pending binding; its version."""
        await store.commit([makeLease(1)])
        await turn()
        [(version, _)] = store.pendingUpdates("rel", 0, 10)
        return version

    async def waitingAck(self, ackDelay: float) -> tuple[SQLiteLeaseStore, Deferred[None], int]:
        """
        A store with one acknowledged binding whose ack has not been
        written after two reactor turns: the store, the ack's Deferred and
        the transaction count before it.
        """
        store = self.openStore(replicate=lambda lease: "rel", ackDelay=ackDelay)
        version = await self.pendingOne(store)
        before = store.transactions
        ack = store.acknowledge("rel", [(makeLease(1), version)])
        await turn()
        await turn()
        self.assertFalse(ack.called)
        return store, ack, before

    async def test_ridesAlong(self) -> None:
        """An ack and a later commit share one transaction; the ack is durable with it."""
        store, ack, before = await self.waitingAck(60.0)
        self.assertEqual(store.pendingUpdates("rel", 0, 10), [])
        await store.commit([makeLease(2)])
        self.assertTrue(ack.called)
        self.assertEqual(store.transactions, before + 1)

    async def test_alone(self) -> None:
        """With no commit to ride along with, the ack is written after C{ackDelay}."""
        store, ack, before = await self.waitingAck(0.2)
        await ack
        self.assertEqual(store.transactions, before + 1)
        self.assertEqual(store.pendingCount("rel"), 0)

    async def test_afterBusyWriter(self) -> None:
        """
        An ack queued while a transaction is written waits for the next
        commit too, instead of following at once in a transaction of its own.
        """
        store = self.openStore(replicate=lambda lease: "rel", ackDelay=60.0)
        version = await self.pendingOne(store)
        busy = store.commit([makeLease(3)])
        await turn()
        self.assertIsNotNone(store._inFlight)
        ack = store.acknowledge("rel", [(makeLease(1), version)])
        await busy
        await turn()
        await turn()
        self.assertFalse(ack.called)
        before = store.transactions
        await store.commit([makeLease(4)])
        self.assertTrue(ack.called)
        self.assertEqual(store.transactions, before + 1)

    async def test_closeWrites(self) -> None:
        """Closing writes a waiting ack at once; it is stored after reopening."""
        path = self.databasePath()
        store = self.openStore(path, replicate=lambda lease: "rel", ackDelay=60.0)
        version = await self.pendingOne(store)
        ack = store.acknowledge("rel", [(makeLease(1), version)])
        await store.close()
        self.assertTrue(ack.called)
        again = self.openStore(path, replicate=lambda lease: "rel")
        self.assertEqual(again.pendingCount("rel"), 0)


class ReadYourWritesTests(StoreFixture):
    """Reads see changes passed to commit() before they are durable."""

    async def test_beforeDurable(self) -> None:
        """Right after commit() the change is pending, not durable, yet visible."""
        path = self.databasePath()
        store = self.openStore(path)
        lease = makeLease(1)
        d = store.commit([lease])
        self.assertFalse(d.called)
        self.assertEqual(store.pending, 1)
        self.assertEqual(store.get(lease.address, 128), lease)
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        self.assertEqual(raw.execute("SELECT count(*) FROM leases").fetchone(), (0,))
        await d
        self.assertEqual(store.pending, 0)
        self.assertEqual(raw.execute("SELECT count(*) FROM leases").fetchone(), (1,))
        self.assertEqual(store.get(lease.address, 128), lease)

    async def test_getMany(self) -> None:
        """
        C{getMany} finds what C{get} finds for each key, stored or pending,
        however many keys (several queries), and leaves out keys with no
        binding, including another prefix length at a stored address.
        """
        store = self.openStore()
        stored = [makeLease(n) for n in range(1, 1201)]
        await store.commit(stored)
        changed = evolve(stored[0], iaid=7)
        pending = makeLease(5000)
        store.commit([changed, pending])
        keys = [one.key for one in stored] + [
            pending.key,
            makeLease(9999).key,
            (stored[1].address, 64),
        ]
        found = store.getMany(keys)
        self.assertEqual(found, {key: store.get(*key) for key in keys if store.get(*key)})
        self.assertEqual(len(found), 1201)
        self.assertEqual(found[changed.key], changed)
        self.assertEqual(store.getMany([]), {})

    async def test_laterChangeSurvivesEarlierCommit(self) -> None:
        """
        When a transaction commits, a later change to the same key that is
        still waiting for the next transaction stays visible: the overlay
        entry is dropped only when the committed row is the one it holds.
        """
        path = self.databasePath()
        store = self.openStore(path, maxBatch=1)
        first = makeLease(1, iaid=1)
        second = evolve(first, iaid=2)
        seen: list[tuple[Lease | None, int, list[Lease]]] = []
        d1 = store.commit([first])
        d2 = store.commit([second])
        d1.addCallback(
            lambda _: seen.append(
                (
                    store.get(first.address, 128),
                    store.pending,
                    store.byClient(first.duid, 1, LeaseType.NA),
                )
            )
        )
        await gatherResults([d1, d2])
        self.assertEqual(seen, [(second, 1, [])])
        self.assertEqual(store.transactions, 2)
        self.assertEqual(store.pending, 0)
        self.assertEqual(store.get(first.address, 128), second)
        store = await self.reopen(store, path)
        self.assertEqual(store.get(first.address, 128), second)

    async def test_laterMetadataSurvivesEarlierCommit(self) -> None:
        """The same holds for metadata."""
        store = self.openStore(maxBatch=1)
        seen: list[str | None] = []
        d1 = store.setMetadata("state", "recover")
        d2 = store.setMetadata("state", "normal")
        d1.addCallback(lambda _: seen.append(store.getMetadata("state")))
        await gatherResults([d1, d2])
        self.assertEqual(seen, ["normal"])
        self.assertEqual(store.getMetadata("state"), "normal")

    async def test_iterLeasesMergesPending(self) -> None:
        """
        C{iterLeases} merges pending changes into the stored rows, in key
        order, across page boundaries.
        """
        store = self.openStore()
        stored = [makeLease(n) for n in range(0, 40, 2)]
        await store.commit(stored)
        changed = evolve(stored[5], state=BindingState.EXPIRED)
        added = [makeLease(5), makeLease(39), makeLease(41), makeLease(0, prefix_length=64)]
        d = store.commit([changed, *added])
        expected = byKey([*stored[:5], changed, *stored[6:], *added])
        for batch in (1, 3, 7, 20, 21, 100):
            self.assertEqual(list(store.iterLeases(batch)), expected, batch)
        await d
        self.assertEqual(list(store.iterLeases(3)), expected)

    async def test_countWithPending(self) -> None:
        """C{count} moves a pending change from its stored state to its new one."""
        store = self.openStore()
        await store.commit([makeLease(1), makeLease(2)])
        store.commit([evolve(makeLease(1), state=BindingState.EXPIRED), makeLease(3)])
        self.assertEqual(store.count(), {"active": 2, "expired": 1})
        store.commit([evolve(makeLease(2), state=BindingState.EXPIRED)])
        self.assertEqual(store.count(), {"active": 1, "expired": 2})


class CountTests(StoreFixture):
    """
    L{SQLiteLeaseStore.count} scans nothing: counted once at open, then
    kept up to date by every change, also when a transaction fails.
    """

    def statements(self, store: SQLiteLeaseStore) -> list[str]:
        """The statements the store's read connection runs from now on."""
        seen: list[str] = []
        reader = store._reader
        assert reader is not None
        reader.set_trace_callback(seen.append)
        return seen

    async def test_noScan(self) -> None:
        """C{count} runs no SQL statement, with changes pending or not."""
        store = self.openStore()
        await store.commit([makeLease(n) for n in range(10)])
        store.commit([evolve(makeLease(1), state=BindingState.EXPIRED)])
        seen = self.statements(store)
        self.assertEqual(store.count(), {"active": 9, "expired": 1})
        self.assertEqual(seen, [])

    async def test_countedAtOpen(self) -> None:
        """A database opened again gives the counts it held."""
        path = self.databasePath()
        store = self.openStore(path)
        await store.commit(
            [
                makeLease(n, state=BindingState.FREE if n % 3 else BindingState.ACTIVE)
                for n in range(9)
            ]
        )
        store = await self.reopen(store, path)
        self.assertEqual(store.count(), {"active": 3, "free": 6})

    async def test_readStatesNotReadAgain(self) -> None:
        """
        A commit of bindings just read (C{get}, C{getMany}, C{byClient})
        reads nothing more for the counts; others it reads with one query.
        """
        store = self.openStore()
        await store.commit([makeLease(n) for n in range(4)])
        await turn()
        store.get(makeLease(0).address, 128)
        store.getMany([makeLease(1).key, makeLease(7).key])
        store.byClient(makeLease(2).duid, 1, LeaseType.NA)
        seen = self.statements(store)
        d = store.commit(
            [evolve(makeLease(n), state=BindingState.RELEASED) for n in (0, 1, 2, 3)]
            + [makeLease(7)]
        )
        self.assertEqual(seen, [])
        self.assertEqual(store.count(), {"released": 4, "active": 1})
        await d
        await turn()
        seen = self.statements(store)
        d = store.commit([makeLease(n, state=BindingState.EXPIRED) for n in (0, 1, 8)])
        self.assertEqual(len([sql for sql in seen if "IN (" in sql]), 1, seen)
        self.assertEqual(store.count(), {"released": 2, "active": 1, "expired": 3})
        await d

    async def test_acknowledgeAfterGetManyReadsNothing(self) -> None:
        """
        An acknowledge (or amend) of bindings C{getMany} has just read (the
        update queue's answer to a batch) reads nothing more: C{getMany}
        keeps their version and pending mark too.  The mark is cleared as
        with a fresh read; a key C{getMany} found no binding for is skipped.
        """
        store = self.openStore(replicate=lambda lease: "rel")
        await store.commit([makeLease(n) for n in range(3)])
        await turn()
        [(v0, _), (v1, _), (v2, _)] = store.pendingUpdates("rel", 0, 10)
        await turn()
        store.getMany([makeLease(0).key, makeLease(1).key, makeLease(9).key])
        seen = self.statements(store)
        d = store.acknowledge(
            "rel",
            [(makeLease(0), v0), (makeLease(1), v1 - 1), (makeLease(9), 1)],
        )
        self.assertEqual(seen, [])
        await d
        await turn()
        self.assertEqual([v for v, _ in store.pendingUpdates("rel", 0, 10)], [v1, v2])

    async def test_failedChangesUncounted(self) -> None:
        """
        Changes whose transaction failed leave the counts as what is stored:
        a state changed by a failed commit comes back, a new binding of a
        failed commit goes, a later successful change of the same key stays.
        """
        path = self.databasePath()
        store = self.openStore(path, maxBatch=1)
        await store.commit([makeLease(1), makeLease(2), makeLease(3)])
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(
            "CREATE TRIGGER injected BEFORE INSERT ON leases WHEN NEW.iaid = 666"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        raw.close()
        bad = store.commit(
            [
                evolve(makeLease(1), state=BindingState.EXPIRED, iaid=666),
                makeLease(4, state=BindingState.FREE, iaid=666),
                evolve(makeLease(2), state=BindingState.EXPIRED, iaid=666),
            ]
        )
        later = store.commit([evolve(makeLease(2), state=BindingState.RELEASED)])
        badAgain = store.commit([evolve(makeLease(3), state=BindingState.ABANDONED, iaid=666)])
        self.assertEqual(store.count(), {"expired": 1, "free": 1, "released": 1, "abandoned": 1})
        with capturedLogs():
            await failureOf(bad, sqlite3.IntegrityError)
            await later
            await failureOf(badAgain, sqlite3.IntegrityError)
        self.assertEqual(store.count(), {"active": 2, "released": 1})
        self.assertEqual(store.count(), {"active": 2, "released": 1})
        store = await self.reopen(store, path)
        self.assertEqual(store.count(), {"active": 2, "released": 1})

    async def test_staleCountsRescanned(self) -> None:
        """
        When a read for the counts failed (the counts are marked stale),
        the next C{count} counts with a scan and goes on from there.
        """
        store = self.openStore()
        await store.commit([makeLease(n) for n in range(3)])
        store._counts = {"active": 99}
        store._countsStale = True
        store.commit([makeLease(5, state=BindingState.FREE)])
        self.assertEqual(store.count(), {"active": 3, "free": 1})
        store.commit([evolve(makeLease(0), state=BindingState.FREE)])
        self.assertEqual(store.count(), {"active": 2, "free": 2})


class DifferentialTests(StoreFixture):
    """
    Random commits, with the writer at random points of its work, read the
    same from the SQLite store as from L{MemoryLeaseStore}.
    """

    def compare(self, store: SQLiteLeaseStore, model: MemoryLeaseStore, keys: int) -> None:
        for n in range(keys):
            for length in (128, 64):
                address = makeLease(n, prefix_length=length).address
                self.assertEqual(store.get(address, length), model.get(address, length))
        for duid in (b"a", b"b", b"c"):
            for iaid in (1, 2):
                for leaseType in LeaseType:
                    self.assertEqual(
                        store.byClient(duid, iaid, leaseType),
                        byKey(model.byClient(duid, iaid, leaseType)),
                    )
        for now in (0.0, 5.0, 10.0, 20.0):
            expected = sorted(
                model.expiredBefore(now, 1000), key=lambda lease: (lease.expires, lease.key)
            )
            self.assertEqual(store.expiredBefore(now, 1000), expected)
            self.assertEqual(store.expiredBefore(now, 3), expected[:3])
        self.assertEqual(list(store.iterLeases(4)), list(model.iterLeases(4)))
        self.assertEqual(store.count(), model.count())
        for relationship in ("odd", "even"):
            self.assertEqual(store.pendingCount(relationship), model.pendingCount(relationship))

    async def test_random(self) -> None:
        """Reads agree after every step of random workloads."""
        for seed in range(4):
            rng = random.Random(seed)
            store = self.openStore(
                maxBatch=rng.choice([1, 3, 10]), replicate=oddEven, ackDelay=rng.choice([0, 0.005])
            )
            model = MemoryLeaseStore(replicate=oddEven)
            keys = 12
            pending: list[Deferred[None]] = []
            for step in range(150):
                replication = rng.random()
                if replication < 0.3:
                    d, ack = self.replicationStep(rng, store, model, keys, step)
                    pending.append(d)
                    if ack:
                        # The model applies an ack at once, the store once
                        # it is durable (pending marks at once in both).
                        self.assertEqual(
                            store.pendingCount("odd") + store.pendingCount("even"),
                            model.pendingCount("odd") + model.pendingCount("even"),
                        )
                        await d
                    self.compare(store, model, keys)
                    continue
                changes = [
                    makeLease(
                        rng.randrange(keys),
                        prefix_length=rng.choice([128, 64]),
                        lease_type=rng.choice(list(LeaseType)),
                        duid=rng.choice([b"a", b"b", b"c"]),
                        iaid=rng.choice([1, 2]),
                        state=rng.choice(list(BindingState)),
                        expires=float(rng.randrange(20)),
                    )
                    for _ in range(rng.randrange(4))
                ]
                notPending = rng.random() < 0.2
                pending.append(store.commit(changes, pending=not notPending))
                model.commit(changes, pending=not notPending)
                action = rng.random()
                if action < 0.3:
                    await turn()
                elif action < 0.4:
                    await pending[rng.randrange(len(pending))]
                elif action < 0.5:
                    # Everything durable: the pending updates as the model
                    # has them, acks included.
                    await gatherResults(pending)
                    for relationship in ("odd", "even"):
                        self.assertEqual(
                            allPending(store, relationship, 3), allPending(model, relationship, 3)
                        )
                self.compare(store, model, keys)
            await gatherResults(pending)
            self.assertEqual(store.pending, 0)
            self.compare(store, model, keys)
            for relationship in ("odd", "even"):
                self.assertEqual(
                    allPending(store, relationship, 3), allPending(model, relationship, 3)
                )

    def replicationStep(
        self,
        rng: random.Random,
        store: SQLiteLeaseStore,
        model: MemoryLeaseStore,
        keys: int,
        step: int,
    ) -> tuple[Deferred[None], bool]:
        """
        Ack, amend or mark pending random bindings in both stores alike.

        @return: the store's Deferred, and whether it was an ack.
        """
        picked = [
            makeLease(rng.randrange(keys), prefix_length=rng.choice([128, 64])).key
            for _ in range(rng.randrange(1, 4))
        ]
        existing = [lease for lease in map(lambda key: model.get(*key), picked) if lease]
        action = rng.choice(["ack", "amend", "mark"])
        if action == "mark":
            model.markPending(picked)
            return store.markPending(picked), False
        if action == "amend":
            records = [evolve(lease, partner_lifetime_acked=float(step)) for lease in existing]
            model.amend(records)
            return store.amend(records), False
        # The records as sent: some since changed (another client, another
        # state), some acked at a version no longer theirs.
        relationship = rng.choice(["odd", "even"])
        acks: list[tuple[Lease, int | None]] = [
            (
                evolve(
                    lease,
                    partner_lifetime_sent=float(step),
                    duid=rng.choice([lease.duid, lease.duid, b"other"]),
                    state=rng.choice([lease.state, lease.state, BindingState.EXPIRED]),
                ),
                rng.choice([None, rng.randrange(step + 5)]),
            )
            for lease in existing
        ]
        model.acknowledge(relationship, acks)
        return store.acknowledge(relationship, acks), True


class FailureTests(StoreFixture):
    """A change that cannot be written fails its Deferred; nothing is dropped silently."""

    def injectFailure(self, path: str, when: str) -> None:
        """Make the database refuse rows matching the SQL condition C{when}."""
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(
            "CREATE TRIGGER injected BEFORE INSERT ON leases WHEN "
            + when
            + " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        raw.close()

    async def test_failingChangeFailsAlone(self) -> None:
        """
        A commit the database refuses fails with the database's exception and
        a warning; the commits that shared its transaction are still written
        and reads fall back to what is stored.
        """
        path = self.databasePath()
        store = self.openStore(path)
        before = makeLease(2, iaid=1)
        await store.commit([before])
        self.injectFailure(path, "NEW.iaid = 666")
        good1 = store.commit([makeLease(1)])
        bad = store.commit([makeLease(3), evolve(before, iaid=666)])
        good2 = store.commit([makeLease(4)])
        self.assertEqual(store.get(before.address, 128), evolve(before, iaid=666))
        with capturedLogs() as events:
            failure = await failureOf(bad, sqlite3.IntegrityError)
            await gatherResults([good1, good2])
        self.assertIn("injected failure", str(failure))
        self.assertEqual(store.get(before.address, 128), before)
        self.assertIsNone(store.get(makeLease(3).address, 128))
        self.assertEqual(store.pending, 0)
        self.assertEqual(store.count(), {"active": 3})
        self.assertEqual(store.transactions, 1 + 2)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["changes"], 2)
        self.assertIsInstance(warnings[0]["error"], sqlite3.IntegrityError)

    async def test_whenDurableNotCalledOnFailure(self) -> None:
        """
        C{whenDurable} is called, in the writer thread, for the commits that
        are written, and never for one the database refuses.
        """
        path = self.databasePath()
        store = self.openStore(path)
        self.injectFailure(path, "NEW.iaid = 666")
        threads: dict[str, str] = {}

        def durable(name: str) -> None:
            threads[name] = threading.current_thread().name

        good = store.commit([makeLease(1)], whenDurable=lambda: durable("good"))
        bad = store.commit([makeLease(2, iaid=666)], whenDurable=lambda: durable("bad"))
        alone = store.commit([makeLease(3, iaid=666)], whenDurable=lambda: durable("alone"))
        await good
        await failureOf(bad, sqlite3.IntegrityError)
        await failureOf(alone, sqlite3.IntegrityError)
        self.assertEqual(list(threads), ["good"])
        self.assertEqual(threads["good"], store._writer.thread.name)

    async def test_everythingFails(self) -> None:
        """When the database refuses every write, every Deferred fails."""
        path = self.databasePath()
        store = self.openStore(path)
        self.injectFailure(path, "1")
        ds = [store.commit([makeLease(n)]) for n in range(3)]
        for d in ds:
            await failureOf(d, sqlite3.IntegrityError)
        self.assertEqual((store.transactions, store.changesWritten, store.pending), (0, 0, 0))
        self.assertEqual(store.count(), {})
        # Metadata is not affected by the trigger and still works.
        await store.setMetadata("k", "v")

    async def test_diskFull(self) -> None:
        """
        When the database cannot grow (SQLITE_FULL, as on a full disk) the
        commits fail and are not visible; once there is room again, the
        store works on.
        """
        path = self.databasePath()
        store = self.openStore(path)
        await store.commit([makeLease(0)])
        await store._writer.submit(
            lambda connection: connection.execute(
                "PRAGMA max_page_count = "
                + str(connection.execute("PRAGMA page_count").fetchone()[0])
            ).fetchall()
        )
        many = [makeLease(n, duid=os.urandom(100)) for n in range(1, 2001)]
        with capturedLogs() as events:
            error = await failureOf(store.commit(many), sqlite3.OperationalError)
        self.assertIn("full", str(error))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertEqual(store.count(), {"active": 1})
        self.assertIsNone(store.get(many[0].address, 128))
        await store._writer.submit(
            lambda connection: connection.execute("PRAGMA max_page_count = 1073741823").fetchall()
        )
        await store.commit(many)
        store = await self.reopen(store, path)
        self.assertEqual(store.count(), {"active": 2001})

    async def test_malformedLease(self) -> None:
        """A binding the database could not store faithfully is refused at once."""
        store = self.openStore()
        bad = [
            evolve(makeLease(1), prefix_length=129),
            evolve(makeLease(1), address=cast(Any, "2001:db8::1")),
            evolve(makeLease(1), iaid=2**32),
            evolve(makeLease(1), duid=cast(Any, "text")),
            evolve(makeLease(1), state=cast(Any, "active")),
        ]
        for lease in bad:
            d = store.commit([makeLease(7), lease])
            self.assertTrue(d.called)
            self.failureResultOf(d, TypeError, ValueError)
        self.assertEqual(store.pending, 0)
        self.assertIsNone(store.get(makeLease(7).address, 128))
        await store.commit([makeLease(7)])
        self.assertEqual(store.count(), {"active": 1})

    async def test_commitAfterClose(self) -> None:
        """After close, commits and metadata changes fail and reads raise StoreClosed."""
        store = self.openStore()
        await store.close()
        self.failureResultOf(store.commit([makeLease(1)]), StoreClosed)
        self.failureResultOf(store.setMetadata("k", "v"), StoreClosed)
        self.assertRaises(StoreClosed, store.get, makeLease(1).address, 128)
        self.assertRaises(StoreClosed, store.byClient, b"", 1, LeaseType.NA)
        self.assertRaises(StoreClosed, store.expiredBefore, 1.0, 1)
        self.assertRaises(StoreClosed, store.iterLeases, 1)
        self.assertRaises(StoreClosed, store.count)
        self.assertRaises(StoreClosed, store.getMetadata, "k")
        await store.close()

    async def test_commitWhileClosing(self) -> None:
        """A commit made after close() was called fails, earlier ones are written."""
        path = self.databasePath()
        store = self.openStore(path)
        before = store.commit([makeLease(1)])
        closing = store.close()
        after = store.commit([makeLease(2)])
        self.failureResultOf(after, StoreClosed)
        await closing
        await before
        self.assertFalse(store._writer.thread.is_alive())
        store = self.openStore(path)
        self.assertEqual(store.count(), {"active": 1})

    async def test_closeFlushesEverything(self) -> None:
        """close() waits for every queued transaction, not just the one in flight."""
        path = self.databasePath()
        store = self.openStore(path, maxBatch=10)
        ds = [store.commit([makeLease(n)]) for n in range(95)]
        await store.close()
        self.assertTrue(all(d.called for d in ds))
        self.assertEqual(store.transactions, 10)
        store = self.openStore(path)
        self.assertEqual(store.count(), {"active": 95})

    async def test_cancel(self) -> None:
        """Cancelling a commit stops the wait only: the change is still written."""
        path = self.databasePath()
        store = self.openStore(path)
        d = store.commit([makeLease(1)])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        await store.commit([])
        store = await self.reopen(store, path)
        self.assertEqual(store.get(makeLease(1).address, 128), makeLease(1))


class VolumeTests(StoreFixture):
    """A database of a useful size works, read in pages."""

    async def test_twentyThousand(self) -> None:
        """20,000 bindings are written in few transactions and read back in pages."""
        path = self.databasePath()
        store = self.openStore(path)
        leases = [
            makeLease(n, duid=b"client-%d" % (n % 1000), iaid=n % 3, expires=float(n))
            for n in range(20000)
        ]
        await gatherResults([store.commit(leases[i : i + 100]) for i in range(0, len(leases), 100)])
        self.assertLessEqual(store.transactions, 12)
        store = await self.reopen(store, path)
        self.assertEqual(store.count(), {"active": 20000})
        seen = 0
        previous = None
        for lease in store.iterLeases(997):
            self.assertEqual(lease, leases[seen])
            if previous is not None:
                self.assertLess(previous.key, lease.key)
            previous = lease
            seen += 1
        self.assertEqual(seen, 20000)
        self.assertEqual(store.expiredBefore(19999.0, 5), leases[:5])
        self.assertEqual(len(store.expiredBefore(1e9, 1000)), 1000)
        self.assertEqual(store.byClient(b"client-7", 7 % 3, LeaseType.NA), leases[7::3000])


@implementer(IReactorTime, IReactorFromThreads)
class ClockWithThreads:
    """
    A L{Clock} for the store's timers, the real reactor for its writer
    thread's results: turns end only when the test advances the clock.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
        return self.clock.callLater(delay, f, *args, **kwargs)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self.clock.getDelayedCalls()

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        reactor.callFromThread(f, *args, **kwargs)


class SnapshotTests(StoreFixture):
    """The reads of one reactor turn share one read transaction."""

    async def test_oneTurn(self) -> None:
        """A read opens a read transaction that ends with the reactor turn."""
        store = self.openStore()
        reader = store._reader
        assert reader is not None
        self.assertIsNone(store.get(makeLease(1).address, 128))
        self.assertTrue(reader.in_transaction)
        self.assertEqual(store.byClient(b"nobody", 1, LeaseType.NA), [])
        await turn()
        self.assertFalse(reader.in_transaction)

    async def test_endsBeforeOverlayRelease(self) -> None:
        """
        A snapshot taken before a transaction committed ends before that
        transaction's changes leave the overlay, even within one turn: a
        read in the commit's callback sees the change.
        """
        clock = Clock()
        store = SQLiteLeaseStore(self.databasePath(), ClockWithThreads(clock))
        self.addCleanup(store.close)
        gate = threading.Event()
        busy = store._writer.submit(lambda connection: gate.wait(10))
        lease = makeLease(1)
        committed = store.commit([lease])
        clock.advance(0)  # the batch goes to the writer, still busy
        self.assertIsNone(store.get(makeLease(2).address, 128))  # a snapshot, before it
        seen: list[Lease | None] = []
        committed.addCallback(lambda _: seen.append(store.get(lease.address, 128)))
        gate.set()
        await busy
        await committed
        self.assertEqual((seen, store.pending), ([lease], 0))

    async def test_readsOfOneTurn(self) -> None:
        """
        Within a turn, get() and byClient() answer from the turn's snapshot
        (a row another connection writes meanwhile shows the next turn);
        commit() is seen at once all the same.
        """
        path = self.databasePath()
        store = self.openStore(path)
        one, two = makeLease(1), makeLease(2)
        self.assertIsNone(store.get(one.address, 128))
        self.assertEqual(store.byClient(one.duid, one.iaid, LeaseType.NA), [])
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute(sqlitemodule.SQL_UPSERT, sqlitemodule._toRow(one))
        self.assertIsNone(store.get(one.address, 128))
        self.assertEqual(store.byClient(one.duid, one.iaid, LeaseType.NA), [])
        committed = store.commit([two])
        self.assertEqual(store.get(two.address, 128), two)
        self.assertEqual(store.byClient(one.duid, one.iaid, LeaseType.NA), [two])
        await turn()
        self.assertEqual(store.get(one.address, 128), one)
        self.assertEqual(store.byClient(one.duid, one.iaid, LeaseType.NA), [one, two])
        await committed
        self.assertEqual(store.byClient(one.duid, one.iaid, LeaseType.NA), [one, two])

    async def test_storedReadsEndWithTransaction(self) -> None:
        """
        What a turn read before a transaction's changes leave the overlay
        is not used after: a read in the commit's callback sees the change.
        """
        clock = Clock()
        store = SQLiteLeaseStore(self.databasePath(), ClockWithThreads(clock))
        self.addCleanup(store.close)
        gate = threading.Event()
        busy = store._writer.submit(lambda connection: gate.wait(10))
        lease = makeLease(1)
        committed = store.commit([lease])
        clock.advance(0)  # the batch goes to the writer, still busy
        # Read in a snapshot taken before the transaction: no stored binding.
        self.assertEqual(store.byClient(lease.duid, lease.iaid, LeaseType.NA), [lease])
        seen: list[object] = []
        committed.addCallback(
            lambda _: seen.append(store.byClient(lease.duid, lease.iaid, LeaseType.NA))
        )
        gate.set()
        await busy
        await committed
        self.assertEqual((seen, store.pending), ([[lease]], 0))

    async def test_pendingReadOnce(self) -> None:
        """
        Amending and acknowledging bindings that pendingUpdates() has just
        read (the update queue's send and ack) reads nothing more; the
        changes are seen at once, and in the next turn's reads.
        """
        store = self.openStore(replicate=lambda lease: "rel")
        leases = [makeLease(n) for n in range(3)]
        await store.commit(leases)
        await turn()
        reader = store._reader
        assert reader is not None
        statements: list[str] = []
        reader.set_trace_callback(statements.append)
        pending = store.pendingUpdates("rel", 0, 10)
        self.assertEqual([lease for _, lease in pending], leases)
        proposed = [evolve(lease, partner_lifetime_sent=5000.0) for lease in leases]
        amended = store.amend(proposed)
        acked = store.acknowledge("rel", [(proposed[0], pending[0][0])])
        self.assertEqual(statements, ["BEGIN", statements[1]])
        self.assertIn("pending_for = ", statements[1])
        reader.set_trace_callback(None)
        await gatherResults([amended, acked])
        await turn()
        self.assertEqual(store.get(leases[1].address, 128), proposed[1])
        self.assertEqual(store.pendingCount("rel"), 2)
        self.assertEqual([lease for _, lease in store.pendingUpdates("rel", 0, 10)], proposed[1:])

    async def test_countsInOneSnapshot(self) -> None:
        """count() and pendingCount() work inside a turn that has read already."""
        store = self.openStore(replicate=lambda lease: "rel")
        await store.commit([makeLease(1), makeLease(2)])
        store.get(makeLease(1).address, 128)
        store.commit([makeLease(3)])
        self.assertEqual(store.count(), {"active": 3})
        self.assertEqual(store.pendingCount("rel"), 3)


_states = st.sampled_from(list(BindingState))


@st.composite
def _ackCases(draw: st.DrawFn) -> tuple[Lease, Lease, int, int | None, str]:
    """
    A stored binding, the record sent for it (the same, or since changed:
    another client, state, start time of state, partner lifetime), its
    version and pending mark, and the version and relationship acked.
    """
    stored = makeLease(
        1,
        duid=draw(st.sampled_from([b"a", b"b"])),
        iaid=draw(st.sampled_from([1, 2])),
        state=draw(_states),
    )
    stored = evolve(
        stored,
        start_time_of_state=draw(st.sampled_from([100.0, 150.5])),
        partner_lifetime_acked=draw(st.sampled_from([0.0, 500.0, 900.0])),
        partner_state_acked=draw(st.one_of(st.none(), _states)),
        partner_stos_acked=draw(st.sampled_from([0.0, 100.0])),
    )
    sent = evolve(
        stored,
        duid=draw(st.sampled_from([stored.duid, b"a", b"b"])),
        iaid=draw(st.sampled_from([stored.iaid, 1, 2])),
        state=draw(st.one_of(st.just(stored.state), _states)),
        start_time_of_state=draw(st.sampled_from([stored.start_time_of_state, 100.0, 150.5])),
        partner_lifetime_sent=draw(st.sampled_from([0.0, 300.0, 700.0, 1000.0])),
    )
    version = draw(st.sampled_from([3, 4]))
    acked = draw(st.one_of(st.none(), st.sampled_from([3, 4])))
    return stored, sent, version, acked, draw(st.sampled_from(["odd", "even"]))


class AcknowledgeStatementTests(SynchronousTestCase):
    """
    L{sqlitemodule.SQL_ACKNOWLEDGE} applies the ack rule exactly as
    L{dhcp6ha.failover.conflict.acknowledged} does, and clears the mark
    only at the version sent.
    """

    def setUp(self) -> None:
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        for statement in sqlitemodule._SCHEMA:
            self.connection.execute(statement)
        self.addCleanup(self.connection.close)

    @given(_ackCases())
    @settings(max_examples=300, deadline=None)
    def test_sameAsAcknowledged(self, case: tuple[Lease, Lease, int, int | None, str]) -> None:
        """The row acked is C{acknowledged(stored, sent)}, its mark cleared at the version."""
        stored, sent, version, ackedVersion, relationship = case
        self.connection.execute("DELETE FROM leases")
        self.connection.execute(
            sqlitemodule.SQL_UPSERT, sqlitemodule._toRow(stored, version, "odd")
        )
        self.connection.execute(
            sqlitemodule.SQL_ACKNOWLEDGE,
            sqlitemodule.ackParameters(relationship, sent, ackedVersion),
        )
        [row] = self.connection.execute(
            f"SELECT {sqlitemodule._ALL_COLUMNS} FROM leases"
        ).fetchall()
        cleared = relationship == "odd" and ackedVersion == version
        self.assertEqual(
            (sqlitemodule._fromRow(row), row[-2], row[-1]),
            (acknowledged(stored, sent), version, None if cleared else "odd"),
        )


class MultiRowUpsertTests(StoreFixture):
    """The writer writes many rows per statement, in order."""

    async def test_manyRowsLastWins(self) -> None:
        """
        One commit of 300 bindings (several statements of different sizes)
        in which some keys come twice stores every key once, as its last
        change.
        """
        path = self.databasePath()
        store = self.openStore(path)
        first = [makeLease(n, iaid=1) for n in range(290)]
        again = [makeLease(n, iaid=2) for n in range(0, 290, 29)]
        await store.commit(first + again)
        self.assertEqual(store.transactions, 1)
        store = await self.reopen(store, path)
        stored = list(store.iterLeases(1000))
        self.assertEqual(len(stored), 290)
        self.assertEqual([lease for lease in stored if lease.iaid == 2], byKey(again))

    def test_statementLimit(self) -> None:
        """
        With a small limit of SQL variables, statements hold fewer rows; the
        rows are still written in order.
        """
        connection = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(connection.close)
        for statement in sqlitemodule._SCHEMA:
            connection.execute(statement)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)  # 2 rows
        rows = [sqlitemodule._toRow(makeLease(n % 4, iaid=n), n) for n in range(7)]
        sqlitemodule._upsertRows(connection, rows)
        self.assertEqual(
            connection.execute("SELECT iaid, version FROM leases ORDER BY address").fetchall(),
            [(4, 4), (5, 5), (6, 6), (3, 3)],
        )

    def test_statements(self) -> None:
        """Statements of 1 and 3 rows have 1 and 3 rows of placeholders."""
        self.assertEqual(sqlitemodule.upsertStatement(1), sqlitemodule.SQL_UPSERT)
        self.assertEqual(
            sqlitemodule.upsertStatement(3).count("?"), 3 * sqlitemodule.SQL_UPSERT.count("?")
        )


CHILD = """
import sys
from ipaddress import IPv6Address

from twisted.internet import reactor

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SQLiteLeaseStore

path, first = sys.argv[1], int(sys.argv[2])
store = SQLiteLeaseStore(path, reactor, replicate=lambda lease: "rel")
nextBatch = first


def lease(batch, i):
    address = IPv6Address(0x20010DB8 << 96 | batch << 16 | i)
    return Lease(LeaseType.NA, address, 128, BindingState.ACTIVE, b"c%d" % batch, batch,
                 1.0, 1.0, 300, 600, float(batch))


def start():
    global nextBatch
    batch, nextBatch = nextBatch, nextBatch + 1
    counter = lease(0xFFFF, 0)
    changes = [lease(batch, i) for i in range({perBatch})]
    changes.append(Lease(LeaseType.NA, counter.address, 128, BindingState.ACTIVE, b"counter",
                         batch, 1.0, 1.0, 300, 600, 0.0))
    store.commit(changes).addCallbacks(acked, failed, callbackArgs=(batch,))


def acked(_, batch):
    sys.stdout.write("c %d\\n" % batch)
    sys.stdout.flush()
    # The partner acks the batch's first binding (never the counter, which
    # keeps changing): the ack is written in a later transaction.
    first = lease(batch, 0)
    version = store._current(first.key).version
    record = Lease(LeaseType.NA, first.address, 128, BindingState.ACTIVE, first.duid, batch,
                   1.0, 1.0, 300, 600, float(batch), partner_lifetime_sent=1.0)
    store.acknowledge("rel", [(record, version)]).addCallbacks(
        ackDurable, failed, callbackArgs=(batch,))
    start()


def ackDurable(_, batch):
    sys.stdout.write("a %d\\n" % batch)
    sys.stdout.flush()


def failed(failure):
    sys.stderr.write(failure.getTraceback())
    reactor.stop()


reactor.callWhenRunning(lambda: [start() for _ in range({concurrency})])
reactor.run()
"""


class _Child(ProcessProtocol):
    """
    Counts the batch ids a child reports durable (C{acked}) and those whose
    partner ack it reports durable (C{partnerAcked}), and kills it after
    C{killAfter} batches.
    """

    def __init__(self, killAfter: int) -> None:
        self.killAfter = killAfter
        self.buffer = b""
        self.acked: list[int] = []
        self.partnerAcked: list[int] = []
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            kind, batch = line.split()
            (self.acked if kind == b"c" else self.partnerAcked).append(int(batch))
        if len(self.acked) >= self.killAfter and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass  # already dead or dying
            self.killAfter = sys.maxsize

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class CrashTests(StoreFixture):
    """kill -9 at any moment loses no change whose commit() Deferred fired."""

    timeout = 60

    PER_BATCH = 5
    CONCURRENCY = 20

    async def runChild(self, script: str, path: str, first: int, killAfter: int) -> _Child:
        child = _Child(killAfter)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
        )
        reactor.spawnProcess(
            child, sys.executable, [sys.executable, script, path, str(first)], env=env
        )
        await child.ended
        self.assertGreaterEqual(len(child.acked), killAfter, child.stderr.decode())
        return child

    async def test_killNine(self) -> None:
        """
        A child process commits batches through the store on a real reactor
        and prints each batch id once its Deferred has fired; it is killed
        with SIGKILL mid-run, three times over the same database.  Every
        acknowledged batch is then present, whole; every batch is all or
        nothing; the shared counter is at least the last acknowledged id;
        the database passes SQLite's integrity check.

        Replication marks: every binding is marked pending for the child's
        relationship in the transaction that stores it, so every binding of
        a durable batch is pending unless the partner's ack of it is
        durable; the child acks each batch's first binding once the batch
        is durable, and an ack's record and the clearing of the mark are
        one write: a binding carries the acked record if and only if it is
        no longer pending.
        """
        path = self.databasePath()
        script = os.path.join(os.path.dirname(path), "child.py")
        with open(script, "w") as f:
            f.write(CHILD.format(perBatch=self.PER_BATCH, concurrency=self.CONCURRENCY))
        acked: list[int] = []
        partnerAcked: list[int] = []
        started = 0
        for killAfter in (150, 231, 307):
            child = await self.runChild(script, path, started, killAfter)
            acked += child.acked
            partnerAcked += child.partnerAcked
            # A child starts at most CONCURRENCY batches past the last ack.
            started = max(acked) + self.CONCURRENCY + 1
        self.assertEqual(len(acked), len(set(acked)))
        self.assertGreater(len(partnerAcked), 0)

        raw = sqlite3.connect(path)
        self.assertEqual(raw.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        raw.close()
        store = self.openStore(path)
        present: dict[int, int] = {}
        for lease in store.iterLeases(500):
            if lease.duid != b"counter":
                present[lease.iaid] = present.get(lease.iaid, 0) + 1
        missing = [batch for batch in acked if present.get(batch) != self.PER_BATCH]
        self.assertEqual(missing, [])
        self.assertEqual([batch for batch, n in present.items() if n != self.PER_BATCH], [])
        counter = store.get(IPv6Address(0x20010DB8 << 96 | 0xFFFF << 16), 128)
        assert counter is not None
        self.assertGreaterEqual(counter.iaid, max(acked))

        pending = {lease.key: version for version, lease in allPending(store, "rel", 700)}
        self.assertEqual(len(pending), store.pendingCount("rel"))
        self.assertIn(counter.key, pending)
        self.assertEqual(max(pending.values()), pending[counter.key])
        for lease in store.iterLeases(500):
            ackedRecord = lease.partner_lifetime_acked == 1.0
            self.assertEqual(lease.key not in pending, ackedRecord, lease)
            isFirst = int(lease.address) & 0xFFFF == 0
            if ackedRecord:
                self.assertTrue(isFirst, lease)
        for batch in partnerAcked:
            first = IPv6Address(0x20010DB8 << 96 | batch << 16)
            self.assertNotIn((first, 128), pending, batch)
        for batch in acked:
            for i in range(1, self.PER_BATCH):
                self.assertIn((IPv6Address(0x20010DB8 << 96 | batch << 16 | i), 128), pending)
        # New versions go on after the largest stored one.
        store = await self.reopen(store, path, replicate=lambda lease: "rel")
        await store.commit([makeLease(1)])
        self.assertEqual(allPending(store, "rel", 700)[-1][0], max(pending.values()) + 1)
