# -*- test-case-name: tests.test_sqlite -*-
"""
The durable lease store: SQLite in WAL mode, one writer thread, group commit.

Design
======

Durability.  The database runs in WAL mode with C{synchronous=FULL}: every
COMMIT fsyncs the write-ahead log before it returns, so a transaction that
has committed survives C{kill -9} and power loss.  A L{commit} Deferred fires
only after the transaction holding its changes has committed.

One writer thread.  A single C{threading.Thread} owns the write connection
and runs one job at a time from a C{queue.SimpleQueue}; results come back to
the reactor thread with C{reactor.callFromThread}.  The reactor thread never
waits for the disk.

Group commit.  All bookkeeping lives in the reactor thread.  L{commit} puts
its changes on a queue; when the writer is idle, a flush is scheduled
C{commit_delay} seconds later (C{callLater(0)} by default, so every commit of
the current reactor turn shares the transaction).  While a transaction is
being written, everything that arrives waits, and the moment it has
committed the next transaction takes all of it (up to C{maxBatch} changes;
the changes of one L{commit} call are never split, so each call is atomic).
Under load the fsync time itself gathers the next batch: the more clients,
the more changes per fsync.  If a transaction of several calls fails, each
call is retried in its own transaction, so one bad call cannot fail the
calls that merely shared its transaction; whatever fails is logged as a
warning and its Deferred fails with the exception.  Nothing is dropped.

Read-your-writes.  Reads are synchronous, in the reactor thread.  Changes
passed to L{commit} but not yet durable sit in an in-memory overlay keyed by
L{Lease.key} (with an index by client), which reads consult first; then a
separate read connection, in autocommit mode so each statement sees the
latest committed snapshot (WAL lets it read while the writer writes).  Every
change gets a sequence number; when a transaction ends, an overlay entry is
removed only if it still holds that change's number, because a later change
to the same key may be waiting for the next transaction.  On failure the
entry is removed too, so reads fall back to what is really stored.  The
overlay holds only what is in flight, so memory stays flat with a million
bindings on disk (a full in-memory cache would not); reads use indexes:
the primary key C{(address, prefix_length)}, C{(duid, iaid, lease_type)} for
L{SQLiteLeaseStore.byClient} and a partial index on C{expires} over ACTIVE
and ABANDONED bindings for L{SQLiteLeaseStore.expiredBefore}.

Storage format.  Addresses are 16-byte big-endian BLOBs (compact, and their
byte order is their numeric order), DUIDs BLOBs, enums their text values,
times REAL.  The C{leases} table is C{WITHOUT ROWID}, clustered by its key.
A C{metadata} table holds C{schema_version} and the values of
L{SQLiteLeaseStore.setMetadata}.

The reactor must provide C{IReactorTime} and C{IReactorFromThreads} (which
every C{IReactorThreads} does).  Call L{SQLiteLeaseStore.close} when done
(the service does it in C{stopService}); the writer thread is a daemon
thread so a process that forgets cannot hang on exit, and SQLite's atomic
commit makes a half-written transaction harmless.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv6Address
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha.interfaces import ILeaseStore
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

__all__ = ["SCHEMA_VERSION", "SQLiteLeaseStore", "SchemaError", "StoreClosed"]

SCHEMA_VERSION = 1
"""The version of the schema this code writes, kept in C{metadata}."""

_SCHEMA_KEY = "schema_version"

_T = TypeVar("_T")

_Key = tuple[IPv6Address, int]
_ClientKey = tuple[bytes, int, LeaseType]
_Row = tuple[Any, ...]

_LEASE_COLUMNS = (
    "address, prefix_length, lease_type, state, duid, iaid, start_time_of_state, cltt, "
    "preferred_lifetime, valid_lifetime, expires, partner_lifetime_sent, "
    "partner_lifetime_acked, fqdn, fqdn_flags, dns_update_state"
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS metadata (
        key TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        address BLOB NOT NULL CHECK (length(address) = 16),
        prefix_length INTEGER NOT NULL CHECK (prefix_length BETWEEN 0 AND 128),
        lease_type TEXT NOT NULL,
        state TEXT NOT NULL,
        duid BLOB NOT NULL,
        iaid INTEGER NOT NULL,
        start_time_of_state REAL NOT NULL,
        cltt REAL NOT NULL,
        preferred_lifetime INTEGER NOT NULL,
        valid_lifetime INTEGER NOT NULL,
        expires REAL NOT NULL,
        partner_lifetime_sent REAL NOT NULL,
        partner_lifetime_acked REAL NOT NULL,
        fqdn TEXT,
        fqdn_flags INTEGER NOT NULL,
        dns_update_state TEXT,
        PRIMARY KEY (address, prefix_length)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS leases_by_client ON leases (duid, iaid, lease_type)",
    # Partial: only the bindings reclamation looks at.  Queries must repeat
    # this WHERE clause for the planner to use it.
    """CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires)
        WHERE state IN ('active', 'abandoned')""",
)

# The statements, module-level so the tests can check their query plans.
SQL_UPSERT = f"INSERT OR REPLACE INTO leases ({_LEASE_COLUMNS}) VALUES ({', '.join('?' * 16)})"
SQL_GET = f"SELECT {_LEASE_COLUMNS} FROM leases WHERE address = ? AND prefix_length = ?"
SQL_GET_STATE = "SELECT state FROM leases WHERE address = ? AND prefix_length = ?"
SQL_BY_CLIENT = (
    f"SELECT {_LEASE_COLUMNS} FROM leases WHERE duid = ? AND iaid = ? AND lease_type = ?"
    " ORDER BY address, prefix_length"
)
SQL_EXPIRED = (
    f"SELECT {_LEASE_COLUMNS} FROM leases"
    " WHERE state IN ('active', 'abandoned') AND expires <= ?"
    " ORDER BY expires, address, prefix_length LIMIT ?"
)
SQL_PAGE_FIRST = f"SELECT {_LEASE_COLUMNS} FROM leases ORDER BY address, prefix_length LIMIT ?"
SQL_PAGE_NEXT = (
    f"SELECT {_LEASE_COLUMNS} FROM leases WHERE (address, prefix_length) > (?, ?)"
    " ORDER BY address, prefix_length LIMIT ?"
)
SQL_COUNT = "SELECT state, count(*) FROM leases GROUP BY state"
SQL_GET_METADATA = "SELECT value FROM metadata WHERE key = ?"
SQL_SET_METADATA = "INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)"

_RECLAIMABLE = (BindingState.ACTIVE, BindingState.ABANDONED)


class StoreClosed(Exception):
    """The store was closed (or is closing): it takes no more changes or reads."""


class SchemaError(Exception):
    """The database was written by an incompatible version of dhcp6ha."""


def _toRow(lease: Lease) -> _Row:
    """
    The database row of a binding, checking what SQLite would not.

    @raise TypeError: a field has the wrong type.
    @raise ValueError: a field is out of range.
    """
    if not isinstance(lease, Lease):
        raise TypeError(f"not a Lease: {lease!r}")
    if not isinstance(lease.address, IPv6Address):
        raise TypeError(f"address must be an IPv6Address, not {lease.address!r}")
    if not isinstance(lease.lease_type, LeaseType):
        raise TypeError(f"lease_type must be a LeaseType, not {lease.lease_type!r}")
    if not isinstance(lease.state, BindingState):
        raise TypeError(f"state must be a BindingState, not {lease.state!r}")
    if not isinstance(lease.duid, bytes):
        raise TypeError(f"duid must be bytes, not {lease.duid!r}")
    if not 0 <= lease.prefix_length <= 128:
        raise ValueError(f"prefix length out of range: {lease.prefix_length!r}")
    if not 0 <= lease.iaid <= 0xFFFFFFFF:
        raise ValueError(f"IAID out of range: {lease.iaid!r}")
    return (
        lease.address.packed,
        int(lease.prefix_length),
        lease.lease_type.value,
        lease.state.value,
        lease.duid,
        int(lease.iaid),
        float(lease.start_time_of_state),
        float(lease.cltt),
        int(lease.preferred_lifetime),
        int(lease.valid_lifetime),
        float(lease.expires),
        float(lease.partner_lifetime_sent),
        float(lease.partner_lifetime_acked),
        None if lease.fqdn is None else str(lease.fqdn),
        int(lease.fqdn_flags),
        None if lease.dns_update_state is None else str(lease.dns_update_state),
    )


def _fromRow(row: _Row) -> Lease:
    """The binding stored in a row of C{_LEASE_COLUMNS}."""
    return Lease(
        lease_type=LeaseType(row[2]),
        address=IPv6Address(row[0]),
        prefix_length=row[1],
        state=BindingState(row[3]),
        duid=row[4],
        iaid=row[5],
        start_time_of_state=row[6],
        cltt=row[7],
        preferred_lifetime=row[8],
        valid_lifetime=row[9],
        expires=row[10],
        partner_lifetime_sent=row[11],
        partner_lifetime_acked=row[12],
        fqdn=row[13],
        fqdn_flags=row[14],
        dns_update_state=row[15],
    )


def _rowKey(row: _Row) -> tuple[bytes, int]:
    """The sort key of a row: its packed address, then its prefix length."""
    return (row[0], row[1])


def _sortKey(key: _Key) -> tuple[bytes, int]:
    """The sort key of a L{Lease.key}, comparable with L{_rowKey}."""
    return (key[0].packed, key[1])


@define
class _Request:
    """
    The changes of one L{SQLiteLeaseStore.commit} or C{setMetadata} call.

    @ivar leases: C{(sequence number, lease, row)} per change.
    @ivar metadata: C{(sequence number, key, value)} per metadata change.
    @ivar deferred: fired once the transaction holding them has committed.
    """

    leases: list[tuple[int, Lease, _Row]]
    metadata: list[tuple[int, str, str]]
    deferred: Deferred[None] = field(factory=Deferred)

    @property
    def size(self) -> int:
        return len(self.leases) + len(self.metadata)


_Work = list[tuple[list[_Row], list[tuple[str, str]]]]
"""What the writer thread gets for a transaction: rows and metadata per request."""


def _rollback(connection: sqlite3.Connection) -> None:
    """Abandon the open transaction, if there is one."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _writeTransaction(connection: sqlite3.Connection, work: _Work) -> None:
    """Write these requests in one transaction, in order (writer thread)."""
    rows = [row for requestRows, _ in work for row in requestRows]
    metadata = [item for _, requestMetadata in work for item in requestMetadata]
    connection.execute("BEGIN IMMEDIATE")
    try:
        if rows:
            connection.executemany(SQL_UPSERT, rows)
        if metadata:
            connection.executemany(SQL_SET_METADATA, metadata)
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise


def _writeBatch(
    connection: sqlite3.Connection, work: _Work
) -> tuple[list[BaseException | None], int]:
    """
    Write a group of requests (writer thread): all in one transaction, or if
    that fails and there are several, each in its own.

    @return: the outcome of each request (C{None} when durable, else the
        exception) and the number of transactions committed.
    """
    if not any(rows or metadata for rows, metadata in work):
        return [None] * len(work), 0
    try:
        _writeTransaction(connection, work)
    except Exception as e:
        if len(work) == 1:
            return [e], 0
    else:
        return [None] * len(work), 1
    outcomes: list[BaseException | None] = []
    committed = 0
    for request in work:
        try:
            _writeTransaction(connection, [request])
        except Exception as e:
            outcomes.append(e)
        else:
            outcomes.append(None)
            committed += 1
    return outcomes, committed


class _WriterThread:
    """
    One thread that owns a connection and runs jobs against it in order.

    @ivar thread: the thread.
    """

    def __init__(
        self, reactor: IReactorFromThreads, connection: sqlite3.Connection, name: str
    ) -> None:
        self._reactor = reactor
        self._connection = connection
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], Deferred[Any]] | None
        ] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[sqlite3.Connection], _T]) -> Deferred[_T]:
        """Run C{job(connection)} in the thread; the result comes back in the reactor."""
        d: Deferred[_T] = Deferred()
        self._jobs.put((job, d))
        return d

    def stop(self) -> Deferred[None]:
        """Close the connection and end the thread once every job before has run."""
        d = self.submit(lambda connection: connection.close())
        self._jobs.put(None)
        return d.addCallback(lambda _: self.thread.join())

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, d = item
            try:
                result = job(self._connection)
            except BaseException as e:
                # The exception keeps its traceback; errback wraps it in the
                # reactor thread.
                self._reactor.callFromThread(d.errback, e)
            else:
                self._reactor.callFromThread(d.callback, result)


@implementer(ILeaseStore)
class SQLiteLeaseStore:
    """
    An L{ILeaseStore} in an SQLite database, durable, with group commit.

    Constructing one opens (creating if need be) the database synchronously,
    so that start-up code can read metadata such as the server DUID at once.

    @ivar transactions: the number of transactions committed (one fsync
        each) since the store was opened.
    @ivar changesWritten: the number of changes (bindings and metadata)
        made durable since the store was opened.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: IReactorTime,
        commit_delay: float = 0.0,
        maxBatch: int = 2000,
    ) -> None:
        """
        @param path: the database file (created if missing).  Not
            C{":memory:"}: the store needs two connections to one database.
        @param reactor: provides C{IReactorTime} and C{IReactorFromThreads}
            (as every C{IReactorThreads} does; checked by adaptation, so the
            global reactor, statically typed without threads, is accepted).
        @param commit_delay: how long an idle writer waits after the first
            change before it starts a transaction, to gather more (seconds).
            Under load the previous transaction's duration does the gathering.
        @param maxBatch: the most changes written in one transaction (the
            changes of one L{commit} call are never split, so a single larger
            call makes a larger transaction).
        @raise sqlite3.Error: the database cannot be opened or set up.
        @raise SchemaError: it was written by an incompatible version.
        @raise TypeError: the reactor does not provide C{IReactorFromThreads}.
        """
        if maxBatch < 1:
            raise ValueError("maxBatch must be at least 1")
        threads = IReactorFromThreads(reactor)
        self._reactor = reactor
        self._commitDelay = commit_delay
        self._maxBatch = maxBatch
        self.transactions = 0
        self.changesWritten = 0

        writer = _connect(path, check_same_thread=False)
        try:
            _setUp(writer)
            reader = _connect(path, check_same_thread=True)
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            writer.close()
            raise
        self._reader: sqlite3.Connection | None = reader
        self._writer = _WriterThread(threads, writer, f"dhcp6ha-lease-writer:{path}")

        self._sequence = 0
        self._overlay: dict[_Key, tuple[int, Lease]] = {}
        self._overlayByClient: dict[_ClientKey, set[_Key]] = {}
        self._metadataOverlay: dict[str, tuple[int, str]] = {}
        self._queue: deque[_Request] = deque()
        self._inFlight: list[_Request] | None = None
        self._scheduled: IDelayedCall | None = None
        self._closing = False
        self._closeResult: Failure | bool | None = None
        self._closeWaiters: list[Deferred[None]] = []

    # Reads -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bindings passed to L{commit} that are not durable yet (distinct keys)."""
        return len(self._overlay)

    def _checkOpen(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreClosed("the lease store is closed")
        return self._reader

    def _read(self, sql: str, parameters: Sequence[object]) -> list[_Row]:
        reader = self._checkOpen()
        # fetchall() runs each statement to its end, so no read transaction
        # is left open: the next statement sees the latest commit.
        rows: list[_Row] = reader.execute(sql, parameters).fetchall()
        return rows

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        self._checkOpen()
        pending = self._overlay.get((address, prefix_length))
        if pending is not None:
            return pending[1]
        rows = self._read(SQL_GET, (address.packed, prefix_length))
        return _fromRow(rows[0]) if rows else None

    def byClient(self, duid: bytes, iaid: int, lease_type: LeaseType) -> list[Lease]:
        rows = self._read(SQL_BY_CLIENT, (duid, iaid, lease_type.value))
        found: dict[_Key, Lease] = {}
        for row in rows:
            lease = _fromRow(row)
            if lease.key not in self._overlay:
                found[lease.key] = lease
        for key in self._overlayByClient.get((duid, iaid, lease_type), ()):
            found[key] = self._overlay[key][1]
        return [found[key] for key in sorted(found, key=_sortKey)]

    def expiredBefore(self, now: float, limit: int) -> list[Lease]:
        self._checkOpen()
        if limit <= 0:
            return []
        # Each pending change can hide at most one stored row.
        rows = self._read(SQL_EXPIRED, (now, limit + len(self._overlay)))
        found = [_fromRow(row) for row in rows]
        found = [lease for lease in found if lease.key not in self._overlay]
        found.extend(
            lease
            for _, lease in self._overlay.values()
            if lease.expires <= now and lease.state in _RECLAIMABLE
        )
        found.sort(key=lambda lease: (lease.expires, _sortKey(lease.key)))
        return found[:limit]

    def iterLeases(self, batch: int) -> Iterator[Lease]:
        """
        Every binding in key order, read C{batch} rows at a time (keyset
        pagination: each page is one short query, no read transaction is
        held between pages).  Changes made while iterating may or may not
        be seen, but each key is yielded at most once.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._checkOpen()  # fail now, not at the first next()
        return self._iterLeases(batch)

    def _iterLeases(self, batch: int) -> Iterator[Lease]:
        after: tuple[bytes, int] | None = None
        while True:
            if after is None:
                rows = self._read(SQL_PAGE_FIRST, (batch,))
            else:
                rows = self._read(SQL_PAGE_NEXT, (after[0], after[1], batch))
            last = len(rows) < batch
            upTo = None if last else _rowKey(rows[-1])
            page: dict[tuple[bytes, int], Lease] = {}
            for row in rows:
                lease = _fromRow(row)
                if lease.key not in self._overlay:
                    page[_rowKey(row)] = lease
            for key, (_, lease) in self._overlay.items():
                sortKey = _sortKey(key)
                if (after is None or sortKey > after) and (upTo is None or sortKey <= upTo):
                    page[sortKey] = lease
            for sortKey in sorted(page):
                yield page[sortKey]
            if last:
                return
            after = upTo

    def count(self) -> dict[str, int]:
        """Bindings per state name (a scan of the table: for status and tests)."""
        reader = self._checkOpen()
        # One read transaction, so that the totals and the stored states of
        # the pending keys come from the same snapshot even if the writer
        # commits meanwhile.
        reader.execute("BEGIN")
        try:
            counts: dict[str, int] = dict(self._read(SQL_COUNT, ()))
            for key, (_, lease) in self._overlay.items():
                rows = self._read(SQL_GET_STATE, (key[0].packed, key[1]))
                if rows:
                    counts[rows[0][0]] -= 1
                counts[lease.state.value] = counts.get(lease.state.value, 0) + 1
        finally:
            reader.execute("COMMIT")
        return {state: n for state, n in counts.items() if n}

    def getMetadata(self, key: str) -> str | None:
        self._checkOpen()
        if key in self._metadataOverlay:
            return self._metadataOverlay[key][1]
        rows = self._read(SQL_GET_METADATA, (key,))
        return str(rows[0][0]) if rows else None

    # Writes ------------------------------------------------------------

    def _nextSequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def commit(self, changes: Sequence[Lease]) -> Deferred[None]:
        """
        Insert or replace these bindings, atomically.

        Visible to reads at once.  The Deferred fires once they are durable;
        it fails with L{StoreClosed} after L{close}, with C{TypeError} or
        C{ValueError} for a malformed binding (nothing is stored), or with
        the database's exception if the transaction failed (then reads no
        longer show them).  Cancelling it only stops the wait: the changes
        are still written.
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        try:
            entries = [(self._nextSequence(), lease, _toRow(lease)) for lease in changes]
        except (TypeError, ValueError, AttributeError) as e:
            self.log.warn("Refused malformed lease change: {error}", error=e)
            return fail(e)
        request = _Request(entries, [])
        for sequence, lease, _ in entries:
            self._overlayPut(sequence, lease)
        return self._enqueue(request)

    def setMetadata(self, key: str, value: str) -> Deferred[None]:
        """
        Store C{value} under C{key} durably, in the same group commit as
        lease changes.  C{schema_version} is reserved.
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        if key == _SCHEMA_KEY:
            return fail(ValueError(f"metadata key {key!r} is reserved"))
        if not isinstance(key, str) or not isinstance(value, str):
            return fail(TypeError("metadata keys and values are str"))
        sequence = self._nextSequence()
        self._metadataOverlay[key] = (sequence, value)
        return self._enqueue(_Request([], [(sequence, key, value)]))

    def _overlayPut(self, sequence: int, lease: Lease) -> None:
        key = lease.key
        previous = self._overlay.get(key)
        if previous is not None:
            self._clientIndexDiscard(previous[1])
        self._overlay[key] = (sequence, lease)
        self._overlayByClient.setdefault((lease.duid, lease.iaid, lease.lease_type), set()).add(key)

    def _clientIndexDiscard(self, lease: Lease) -> None:
        clientKey = (lease.duid, lease.iaid, lease.lease_type)
        keys = self._overlayByClient.get(clientKey)
        if keys is not None:
            keys.discard(lease.key)
            if not keys:
                del self._overlayByClient[clientKey]

    def _overlayRelease(self, request: _Request) -> None:
        """The transaction of C{request} is over: drop its overlay entries
        unless a later change to the same key has replaced them."""
        for sequence, lease, _ in request.leases:
            current = self._overlay.get(lease.key)
            if current is not None and current[0] == sequence:
                del self._overlay[lease.key]
                self._clientIndexDiscard(lease)
        for sequence, key, _ in request.metadata:
            currentMeta = self._metadataOverlay.get(key)
            if currentMeta is not None and currentMeta[0] == sequence:
                del self._metadataOverlay[key]

    def _enqueue(self, request: _Request) -> Deferred[None]:
        self._queue.append(request)
        if self._inFlight is None and self._scheduled is None:
            self._scheduled = self._reactor.callLater(self._commitDelay, self._flush)
        return request.deferred

    def _flush(self) -> None:
        """Hand the next group of queued requests to the writer thread."""
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        if self._inFlight is not None or not self._queue:
            return
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and size + self._queue[0].size <= self._maxBatch:
            request = self._queue.popleft()
            batch.append(request)
            size += request.size
        self._inFlight = batch
        work: _Work = [
            ([row for _, _, row in r.leases], [(k, v) for _, k, v in r.metadata]) for r in batch
        ]
        self._writer.submit(lambda connection: _writeBatch(connection, work)).addCallbacks(
            self._written,
            self._writerCrashed,
            callbackArgs=(batch,),
            errbackArgs=(batch,),
        )

    def _writerCrashed(self, failure: Failure, batch: list[_Request]) -> None:
        """The write job itself raised (a bug, or MemoryError): fail the batch."""
        exception = failure.value
        assert isinstance(exception, BaseException)
        self._written(([exception] * len(batch), 0), batch)

    def _written(
        self, result: tuple[list[BaseException | None], int], batch: list[_Request]
    ) -> None:
        """The writer is done with C{batch}: release the overlay, start the
        next transaction, then tell the callers."""
        outcomes, committed = result
        self._inFlight = None
        self.transactions += committed
        for request, outcome in zip(batch, outcomes, strict=True):
            self._overlayRelease(request)
            if outcome is None:
                self.changesWritten += request.size
        if self._queue:
            self._flush()
        elif self._closing:
            self._shutDown()
        for request, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                if not request.deferred.called:
                    request.deferred.callback(None)
            else:
                self.log.warn(
                    "Lease store commit of {changes} changes failed: {error!r}",
                    changes=request.size,
                    error=outcome,
                )
                if not request.deferred.called:
                    request.deferred.errback(outcome)

    # Closing -----------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Write every change already passed to L{commit}, wait for the writer
        thread to finish and close the database.  Later commits fail with
        L{StoreClosed}; so do reads once the returned Deferred has fired.
        Closing twice is harmless: both Deferreds fire when it is closed.
        """
        if self._closeResult is not None:
            if isinstance(self._closeResult, Failure):
                return fail(self._closeResult)
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closeWaiters.append(d)
        if not self._closing:
            self._closing = True
            if self._inFlight is None and self._scheduled is None:
                self._shutDown()
        return d

    def _shutDown(self) -> None:
        if self._reader is not None:
            # Close the reader first: the last connection to close
            # checkpoints the WAL, and that is the writer thread's job.
            self._reader.close()
            self._reader = None
        self._writer.stop().addBoth(self._stopped)

    def _stopped(self, result: object) -> None:
        if isinstance(result, Failure):
            self.log.failure("Closing the lease database failed", result)
            self._closeResult = result
        else:
            self._closeResult = True
        waiters, self._closeWaiters = self._closeWaiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)


def _connect(path: str, check_same_thread: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit)."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=5.0
    )
    try:
        # 16 MiB of page cache per connection: interior B-tree pages of a
        # million bindings stay cached, well inside the memory budget.
        connection.execute("PRAGMA cache_size = -16384")
        connection.execute("PRAGMA foreign_keys = OFF")
    except BaseException:
        connection.close()
        raise
    return connection


def _setUp(connection: sqlite3.Connection) -> None:
    """
    Put the database in WAL mode with full sync, create the schema if it is
    missing and check its version.

    @raise SchemaError: the database has an unknown schema version.
    @raise sqlite3.Error: SQLite could not do it, or refuses WAL mode.
    """
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot put the lease database in WAL mode (got {mode})")
    connection.execute("PRAGMA synchronous = FULL")
    # Checkpoint (copy the WAL back into the database, in the writer thread,
    # as part of the commit that crosses the mark) every 10,000 pages rather
    # than SQLite's 1,000: with a million bindings most changes dirty pages
    # of their own, and fewer, larger checkpoints gave about 20% more changes
    # per second (bench/bench_store.py) for a WAL of up to ~40 MB and a p99
    # commit time of ~80 ms while one runs.
    connection.execute("PRAGMA wal_autocheckpoint = 10000")
    # Truncate the WAL back to this size after a checkpoint.
    connection.execute("PRAGMA journal_size_limit = 67108864")
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute(
            "INSERT OR IGNORE INTO metadata (key, value) VALUES (?, ?)",
            (_SCHEMA_KEY, str(SCHEMA_VERSION)),
        )
        rows = connection.execute(SQL_GET_METADATA, (_SCHEMA_KEY,)).fetchall()
        version = rows[0][0]
        if version != str(SCHEMA_VERSION):
            raise SchemaError(
                f"lease database schema version {version!r}, this dhcp6ha reads "
                f"version {SCHEMA_VERSION}"
            )
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
