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

Work that must not wait for the reactor.  A L{commit} may carry a
C{whenDurable} callable, which the writer thread calls as soon as the
transaction holding the changes has committed, before the Deferred's
callback is even scheduled: the server sends the client's Reply from
there.  Under load the reactor thread is busy with other datagrams and
with replication, and the Deferred's callback waits for its turn (a median
of about 1 ms on a primary at 1,400 exchanges/s, 0.2-0.3 ms on a server
alone); the Reply need not.

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

Acknowledgements ride along.  An L{SQLiteLeaseStore.acknowledge} (the
partner's acks of binding updates) starts no transaction of its own while
the writer is busy or other changes are queued: it is written with the next
transaction that a commit starts, or C{ackDelay} seconds later when none
does.  Its Deferred still fires only once it is durable.  On a primary at
low load, where each ack batch was a transaction of its own, this halves
the fsyncs (one per exchange instead of two at 400 exchanges/s, and 13%
less CPU, in bench_perfdhcp); under load group commit merged them already.
An ack is not a row: it is an C{UPDATE} of the acknowledgement fields and
the mark (L{SQL_ACKNOWLEDGE}), which applies the ack rule of RFC 8156
section 7.7 to the binding as the changes passed before it left it.  So an
ack needs no read of the binding first, puts nothing in the overlay, and
rewrites no index but the pending one.  Reads see it once it is durable
(seeing an ack late is only cautious: a shorter lifetime under the MCLT
rule, an EXPIRED binding not yet reused), while
L{SQLiteLeaseStore.pendingUpdates} leaves out at once a binding whose mark
it clears.  Nothing is weakened: losing an ack only means sending the update
again.
The writer thread writes a transaction's rows with a few multi-row
C{INSERT} statements (rows prepared in the reactor thread): each statement
is one call into SQLite that releases the GIL once, where a statement per
row would wait for the busy reactor thread to hand the GIL back once per
row.

Read-your-writes.  Reads are synchronous, in the reactor thread.  Changes
passed to L{commit} but not yet durable sit in an in-memory overlay keyed by
L{Lease.key} (with an index by client), which reads consult first; then a
separate read connection, in autocommit mode so each statement sees the
latest committed snapshot (WAL lets it read while the writer writes).  The
reads of one reactor turn share one read transaction (a snapshot): it
begins with the turn's first read and ends when the turn is over, or
earlier, before a finished transaction's changes leave the overlay, so that
a read never misses a change that is neither in the overlay nor in its
snapshot.  Starting and ending a read transaction costs more than a short
query, and an exchange makes several.  What L{SQLiteLeaseStore.get} and
L{SQLiteLeaseStore.byClient} read from a snapshot is kept until it ends (an
exchange reads the same binding more than once; the overlay still comes
first).  Every
change gets a sequence number; when a transaction ends, an overlay entry is
removed only if it still holds that change's number, because a later change
to the same key may be waiting for the next transaction.  On failure the
entry is removed too, so reads fall back to what is really stored.  The
overlay holds only what is in flight, so memory stays flat with a million
bindings on disk (a full in-memory cache would not); reads use indexes:
the primary key C{(address, prefix_length)}, C{(duid, iaid, lease_type)} for
L{SQLiteLeaseStore.byClient} and a partial index on C{expires} over ACTIVE
and ABANDONED bindings for L{SQLiteLeaseStore.expiredBefore}.

Counts.  L{SQLiteLeaseStore.count} (status) scans nothing: the number of
bindings per state, as reads see them, is counted once when the store opens
and then kept up to date by every change put in the overlay (the state it
replaces is the overlay's, or the stored one read in the same snapshot: by
L{SQLiteLeaseStore.get}, L{SQLiteLeaseStore.getMany} or the change's own
read).  A change that becomes durable changes no count; one whose
transaction failed and leaves the overlay gives its key the stored state
back (read then).  Should a read for the counts fail, the next
L{SQLiteLeaseStore.count} counts with a scan again.

Replication marks (failover, RFC 8156 section 4.3 lazy updates).  The store
takes an optional classifier, C{replicate(lease)}, naming the failover
relationship that replicates a binding.  Every change passed to L{commit}
gets a new C{version} (one counter for the store, assigned in the reactor
thread when L{commit} is called, so the overlay and the database agree; on
open it resumes from the largest stored); a change the classifier gives
relationship R is stored with C{pending_for = R}, in the very row, hence the
very transaction, of the change itself: kill -9 cannot lose an update the
partner has not acked.  L{SQLiteLeaseStore.pendingUpdates} pages through the
pending bindings by version (a partial index on C{(pending_for, version)});
L{SQLiteLeaseStore.acknowledge} clears a mark only if the binding is still
at the version that was sent; C{commit(..., pending=False)} stores what the
partner sent us without marking it.  C{amend} and C{acknowledge} write in
place, keeping the version (C{amend} keeps the mark too).  A version
counts as durable once every request up to the one that assigned it has
ended (requests end in order);
L{SQLiteLeaseStore.pendingUpdates} never returns a version that is not.

Pending updates without reading the rows back.  The update queue reads each
binding it sends just after the change became durable.  So the store keeps
the changes of its last transactions that are marked pending (at most
C{MAX_RECENT}), keyed by binding, and L{SQLiteLeaseStore.pendingUpdates}
reads only the versions and keys from the pending index (a covering index:
no table page is read) and takes each binding from there when it is the
version the index has; a binding not kept (older, or evicted) is read from
the table, a page of them at once when there are many (a backlog after a
partner outage).  A kept change is exactly its stored row: a later change
of the binding has a new version, except C{amend}, which replaces the kept
change once it is durable, and C{acknowledge}, which drops the kept change
when it is called, and lets none of the binding be kept until it is
durable (an ack rewrites fields of the row in place).

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
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv6Address
from itertools import chain
from typing import Any, TypeVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha._typedtwisted import failureOf
from dhcp6ha.interfaces import ILeaseStore
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

__all__ = ["DEFAULT_ACK_DELAY", "SCHEMA_VERSION", "SQLiteLeaseStore", "SchemaError", "StoreClosed"]

SCHEMA_VERSION = 2
"""The version of the schema this code writes, kept in C{metadata}.

Version 2 added the failover acknowledgement fields (C{partner_state_acked},
C{partner_stos_acked}) and the replication marks (C{version},
C{pending_for}); a version 1 database is migrated when opened."""

_SCHEMA_KEY = "schema_version"

_T = TypeVar("_T")

_Key = tuple[IPv6Address, int]
_ClientKey = tuple[bytes, int, LeaseType]
_Row = tuple[Any, ...]

_LEASE_COLUMNS = (
    "address, prefix_length, lease_type, state, duid, iaid, start_time_of_state, cltt, "
    "preferred_lifetime, valid_lifetime, expires, partner_lifetime_sent, "
    "partner_lifetime_acked, fqdn, fqdn_flags, dns_update_state, partner_state_acked, "
    "partner_stos_acked"
)
_LEASE_FIELDS = 18
_ALL_COLUMNS = _LEASE_COLUMNS + ", version, pending_for"

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
        partner_state_acked TEXT,
        partner_stos_acked REAL NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        pending_for TEXT,
        PRIMARY KEY (address, prefix_length)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS leases_by_client ON leases (duid, iaid, lease_type)",
    # Partial: only the bindings reclamation looks at.  Queries must repeat
    # this WHERE clause for the planner to use it.
    """CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires)
        WHERE state IN ('active', 'abandoned')""",
    # Partial: only the bindings waiting for a failover partner's ack, in
    # version order (the update queue's keyset pagination).
    """CREATE INDEX IF NOT EXISTS leases_pending ON leases (pending_for, version)
        WHERE pending_for IS NOT NULL""",
)

# Schema version 1 -> 2: the columns version 2 added, with their defaults.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE leases ADD COLUMN partner_state_acked TEXT",
    "ALTER TABLE leases ADD COLUMN partner_stos_acked REAL NOT NULL DEFAULT 0",
    "ALTER TABLE leases ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE leases ADD COLUMN pending_for TEXT",
)

# The statements, module-level so the tests can check their query plans.
_ROW_PLACEHOLDERS = f"({', '.join('?' * (_LEASE_FIELDS + 2))})"
SQL_UPSERT = f"INSERT OR REPLACE INTO leases ({_ALL_COLUMNS}) VALUES {_ROW_PLACEHOLDERS}"
SQL_GET_CURRENT = f"SELECT {_ALL_COLUMNS} FROM leases WHERE address = ? AND prefix_length = ?"
SQL_PENDING = (
    f"SELECT {_ALL_COLUMNS} FROM leases"
    " WHERE pending_for = ? AND version > ? AND version <= ?"
    " ORDER BY version LIMIT ?"
)
# The same as SQL_PENDING from the pending index alone (it covers these).
SQL_PENDING_KEYS = (
    "SELECT version, address, prefix_length FROM leases"
    " WHERE pending_for = ? AND version > ? AND version <= ?"
    " ORDER BY version LIMIT ?"
)
SQL_PENDING_COUNT = "SELECT count(*) FROM leases WHERE pending_for = ?"
# The partner's ack of an update (RFC 8156 section 7.7), applied to the row
# as it is when the ack is written, as dhcp6ha.failover.conflict.acknowledged
# applies it to a record: the partner lifetime proposed becomes the acked one
# (the greatest is kept) if the binding is still the client's that was sent;
# the state sent counts as acked if it is still the state (same start time,
# same client); the mark is cleared if the binding is still at the version
# sent.  Only the acknowledgement fields and the mark change, in place: no
# read first, and of the indexes only the pending one is touched.
# Parameters: ?1 duid, ?2 iaid, ?3 partner lifetime proposed, ?4 state,
# ?5 start time of state, ?6 relationship, ?7 version sent (NULL: none),
# ?8 address, ?9 prefix length.
SQL_ACKNOWLEDGE = (
    "UPDATE leases SET"
    " partner_lifetime_acked = CASE WHEN duid = ?1 AND iaid = ?2 AND ?3 > 0"
    " THEN max(partner_lifetime_acked, ?3) ELSE partner_lifetime_acked END,"
    " partner_state_acked = CASE WHEN state = ?4 AND start_time_of_state = ?5"
    " AND duid = ?1 AND iaid = ?2 THEN ?4 ELSE partner_state_acked END,"
    " partner_stos_acked = CASE WHEN state = ?4 AND start_time_of_state = ?5"
    " AND duid = ?1 AND iaid = ?2 THEN ?5 ELSE partner_stos_acked END,"
    " pending_for = CASE WHEN pending_for = ?6 AND version = ?7"
    " THEN NULL ELSE pending_for END"
    " WHERE address = ?8 AND prefix_length = ?9"
)
SQL_GET_PENDING_FOR = "SELECT pending_for FROM leases WHERE address = ? AND prefix_length = ?"
SQL_MAX_VERSION = "SELECT coalesce(max(version), 0) FROM leases"
SQL_GET = f"SELECT {_LEASE_COLUMNS} FROM leases WHERE address = ? AND prefix_length = ?"
# Bindings of up to _MANY addresses (every prefix length): "{}" is one "?"
# per address.  The IN list is a search of the primary key per address.
# With the version and mark, as _current() reads them.
SQL_GET_MANY = f"SELECT {_ALL_COLUMNS} FROM leases WHERE address IN ({{}})"
_MANY = 500
SQL_GET_STATE = "SELECT state FROM leases WHERE address = ? AND prefix_length = ?"
# The states of the bindings of up to _MANY addresses ("{}" as in SQL_GET_MANY).
SQL_GET_STATES = "SELECT address, prefix_length, state FROM leases WHERE address IN ({})"
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

# Not read in this snapshot (a binding read and found missing is None).
_UNREAD: Any = object()


class StoreClosed(Exception):
    """The store was closed (or is closing): it takes no more changes or reads."""


class SchemaError(Exception):
    """The database was written by an incompatible version of dhcp6ha."""


def _toRow(lease: Lease, version: int = 0, pendingFor: str | None = None) -> _Row:
    """
    The database row of a binding (the parameters of L{SQL_UPSERT}), checking
    what SQLite would not.

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
    if lease.partner_state_acked is not None and not isinstance(
        lease.partner_state_acked, BindingState
    ):
        raise TypeError(
            f"partner_state_acked must be a BindingState or None, not {lease.partner_state_acked!r}"
        )
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
        None if lease.partner_state_acked is None else lease.partner_state_acked.value,
        float(lease.partner_stos_acked),
        version,
        pendingFor,
    )


# Enum members by stored value: a dict lookup rather than an Enum call (a
# resync reads a million rows); unknown values still raise ValueError.
_LEASE_TYPES = {member.value: member for member in LeaseType}
_STATES = {member.value: member for member in BindingState}


def _fromRow(row: _Row) -> Lease:
    """The binding stored in a row of C{_LEASE_COLUMNS}."""
    return Lease(
        lease_type=_LEASE_TYPES.get(row[2]) or LeaseType(row[2]),
        address=IPv6Address(row[0]),
        prefix_length=row[1],
        state=_STATES.get(row[3]) or BindingState(row[3]),
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
        partner_state_acked=None
        if row[16] is None
        else _STATES.get(row[16]) or BindingState(row[16]),
        partner_stos_acked=row[17],
    )


def _rowKey(row: _Row) -> tuple[bytes, int]:
    """The sort key of a row: its packed address, then its prefix length."""
    return (row[0], row[1])


def _sortKey(key: _Key) -> tuple[bytes, int]:
    """The sort key of a L{Lease.key}, comparable with L{_rowKey}."""
    return (key[0].packed, key[1])


@frozen
class _Change:
    """
    One binding change on its way to the database, and its overlay entry
    until then.

    @ivar sequence: orders the changes of this store's lifetime (overlay
        bookkeeping).
    @ivar lease: the binding.
    @ivar version: its replication version (L{SQLiteLeaseStore.commit}
        assigns a new one; C{amend} and C{acknowledge} keep the stored one).
    @ivar pendingFor: the failover relationship it waits to be acked by, or
        C{None}.
    @ivar row: the database row (lease fields, version, pending_for).
    """

    sequence: int
    lease: Lease
    version: int
    pendingFor: str | None
    row: _Row


@define
class _Request:
    """
    The changes of one L{SQLiteLeaseStore.commit}, C{amend},
    C{acknowledge}, C{markPending} or C{setMetadata} call.

    @ivar leases: the binding changes.
    @ivar metadata: C{(sequence number, key, value)} per metadata change.
    @ivar newVersion: the highest version this request assigns (0: none).
    @ivar lazy: starts no transaction of its own before C{ackDelay} (an
        acknowledgement: see "Acknowledgements ride along").
    @ivar acks: the parameters of L{SQL_ACKNOWLEDGE}, one tuple per ack.
    @ivar acking: the C{(relationship, key, version)} whose marks C{acks}
        clear (L{SQLiteLeaseStore.pendingUpdates} skips them meanwhile).
    @ivar deferred: fired once the transaction holding them has committed.
    @ivar whenDurable: called in the writer thread right after that (see
        L{SQLiteLeaseStore.commit}), or C{None}.
    """

    leases: list[_Change]
    metadata: list[tuple[int, str, str]]
    newVersion: int = 0
    lazy: bool = False
    acks: list[tuple[Any, ...]] = field(factory=list)
    acking: list[tuple[str, _Key, int]] = field(factory=list)
    deferred: Deferred[None] = field(factory=Deferred)
    whenDurable: Callable[[], None] | None = None

    @property
    def size(self) -> int:
        return len(self.leases) + len(self.metadata) + len(self.acks)


_Work = list[
    tuple[list[_Row], list[tuple[str, str]], list[tuple[Any, ...]], Callable[[], None] | None]
]
"""What the writer thread gets for a transaction: rows, metadata, acks and
the C{whenDurable} callable per request."""


def _rollback(connection: sqlite3.Connection) -> None:
    """Abandon the open transaction, if there is one."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass


#: The most rows one multi-row upsert writes (a power of two).
MAX_ROWS_PER_STATEMENT = 256

DEFAULT_ACK_DELAY = 0.05
"""The default C{ackDelay} of L{SQLiteLeaseStore} (seconds)."""

MAX_RECENT = 8192
"""The most durable pending changes kept for L{SQLiteLeaseStore.pendingUpdates}
(see "Pending updates without reading the rows back")."""

_StoredKey = tuple[bytes, int]
"""A binding's key as stored: the packed address and the prefix length."""


_upsertStatements: dict[int, str] = {}


def upsertStatement(count: int) -> str:
    """C{INSERT OR REPLACE} of C{count} rows (L{SQL_UPSERT} for one)."""
    sql = _upsertStatements.get(count)
    if sql is None:
        sql = _upsertStatements[count] = (
            f"INSERT OR REPLACE INTO leases ({_ALL_COLUMNS}) VALUES "
            + ", ".join([_ROW_PLACEHOLDERS] * count)
        )
    return sql


def _upsertRows(connection: sqlite3.Connection, rows: Sequence[_Row]) -> None:
    """
    Write C{rows} in order with multi-row upserts (writer thread).

    The rows of one statement are inserted in order, so a later row of a
    key replaces an earlier one as with one statement per row.  Statement
    sizes are powers of two (at most 9 distinct statements, all cached).
    """
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // (_LEASE_FIELDS + 2)
    most = MAX_ROWS_PER_STATEMENT
    while most > max(1, limit):
        most //= 2
    start = 0
    total = len(rows)
    while start < total:
        count = most
        while count > total - start:
            count //= 2
        connection.execute(
            upsertStatement(count), list(chain.from_iterable(rows[start : start + count]))
        )
        start += count


def ackParameters(relationship: str, sent: Lease, version: int | None) -> tuple[Any, ...]:
    """The parameters of L{SQL_ACKNOWLEDGE} for the ack of C{sent} at C{version}."""
    return (
        sent.duid,
        int(sent.iaid),
        float(sent.partner_lifetime_sent),
        sent.state.value,
        float(sent.start_time_of_state),
        relationship,
        version,
        sent.address.packed,
        int(sent.prefix_length),
    )


def _ackedKey(parameters: tuple[Any, ...]) -> _StoredKey:
    """The binding an L{ackParameters} tuple acknowledges (its ?8 and ?9)."""
    return parameters[7], parameters[8]


def _writeTransaction(connection: sqlite3.Connection, work: _Work) -> None:
    """
    Write these requests in one transaction, in order (writer thread): an
    ack applies to a binding as the changes passed before it left it, and a
    change passed after it replaces it (L{SQL_ACKNOWLEDGE}).
    """
    metadata = [item for _, requestMetadata, _, _ in work for item in requestMetadata]
    connection.execute("BEGIN IMMEDIATE")
    try:
        rows: list[_Row] = []
        for requestRows, _, acks, _ in work:
            rows.extend(requestRows)
            if acks:
                if rows:
                    _upsertRows(connection, rows)
                    rows = []
                connection.executemany(SQL_ACKNOWLEDGE, acks)
        if rows:
            _upsertRows(connection, rows)
        if metadata:
            connection.executemany(SQL_SET_METADATA, metadata)
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise


_Written = tuple[list[BaseException | None], int, list[BaseException]]
"""What the writer thread returns for a transaction: the outcome of each
request (C{None} when durable, else the exception), the number of
transactions committed, and what C{whenDurable} callables raised."""


def _durable(work: _Work, errors: list[BaseException]) -> None:
    """
    These requests are durable: call their C{whenDurable} (writer thread),
    keeping what they raise for the reactor thread to log.
    """
    for _, _, _, whenDurable in work:
        if whenDurable is not None:
            try:
                whenDurable()
            except Exception as e:
                errors.append(e)


def _writeBatch(connection: sqlite3.Connection, work: _Work) -> _Written:
    """
    Write a group of requests (writer thread): all in one transaction, or if
    that fails and there are several, each in its own.  Each request's
    C{whenDurable} is called as soon as its transaction has committed.
    """
    errors: list[BaseException] = []
    if not any(rows or metadata or acks for rows, metadata, acks, _ in work):
        _durable(work, errors)
        return [None] * len(work), 0, errors
    try:
        _writeTransaction(connection, work)
    except Exception as e:
        if len(work) == 1:
            return [e], 0, errors
    else:
        _durable(work, errors)
        return [None] * len(work), 1, errors
    outcomes: list[BaseException | None] = []
    committed = 0
    for request in work:
        try:
            _writeTransaction(connection, [request])
        except Exception as e:
            outcomes.append(e)
        else:
            _durable([request], errors)
            outcomes.append(None)
            committed += 1
    return outcomes, committed, errors


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
        replicate: Callable[[Lease], str | None] | None = None,
        ackDelay: float = DEFAULT_ACK_DELAY,
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
        @param replicate: the failover classifier: the name of the
            relationship that replicates a binding (its subnet's), or
            C{None} for a binding no partner shares.  Without it, nothing is
            ever marked pending.
        @param ackDelay: the longest an L{acknowledge} waits for a
            transaction to ride along with before it starts its own
            (seconds).
        @raise sqlite3.Error: the database cannot be opened or set up.
        @raise SchemaError: it was written by an incompatible version.
        @raise TypeError: the reactor does not provide C{IReactorFromThreads}.
        """
        if maxBatch < 1:
            raise ValueError("maxBatch must be at least 1")
        threads = IReactorFromThreads(reactor)
        self._reactor = reactor
        self._commitDelay = commit_delay
        self._ackDelay = max(commit_delay, ackDelay)
        self._maxBatch = maxBatch
        self._replicate = replicate
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
        self._snapshotEnd: IDelayedCall | None = None
        # What get() and byClient() read in the current snapshot.
        self._stored: dict[_Key, Lease | None] = {}
        self._storedByClient: dict[_ClientKey, list[Lease]] = {}
        # Stored bindings with their version and mark, as _current() and
        # pendingUpdates() read them in the current snapshot (the update
        # queue amends what it has just read).
        self._storedCurrent: dict[_Key, _Change | None] = {}
        # Durable changes marked pending, exactly as stored (see "Pending
        # updates without reading the rows back"), oldest first; and per
        # binding, the acknowledgements called and not yet durable.  An
        # OrderedDict: evicting the oldest from a plain dict scans the slots
        # its earlier deletions left (microseconds per change at the bound,
        # where a primary whose partner does not ack stays).
        self._recent: OrderedDict[_StoredKey, _Change] = OrderedDict()
        self._unwrittenAcks: dict[_StoredKey, int] = {}
        self._writer = _WriterThread(threads, writer, f"dhcp6ha-lease-writer:{path}")

        self._sequence = 0
        ((maxVersion,),) = self._read(SQL_MAX_VERSION, ())
        self._version: int = maxVersion
        self._durableVersion: int = maxVersion
        # Bindings per state name as reads see them (see "Counts" above).
        self._counts: dict[str, int] = dict(self._read(SQL_COUNT, ()))
        self._countsStale = False
        self._overlay: dict[_Key, _Change] = {}
        # Marks that acknowledge() clears, not durable yet: (relationship,
        # key, version) -> the number of requests clearing it.
        self._acking: dict[tuple[str, _Key, int], int] = {}
        self._overlayByClient: dict[_ClientKey, set[_Key]] = {}
        self._metadataOverlay: dict[str, tuple[int, str]] = {}
        self._queue: deque[_Request] = deque()
        self._eager = 0  # requests in _queue that are not lazy
        self._inFlight: list[_Request] | None = None
        self._scheduled: IDelayedCall | None = None
        self._scheduledLazy = False
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
        if self._snapshotEnd is None:
            # The turn's first read: its snapshot lasts until the turn ends
            # (or a transaction's changes leave the overlay: _written).
            reader.execute("BEGIN")
            self._snapshotEnd = self._reactor.callLater(0, self._endSnapshot)
        rows: list[_Row] = reader.execute(sql, parameters).fetchall()
        return rows

    def _endSnapshot(self) -> None:
        """End the read transaction of this turn, if one is open."""
        self._stored.clear()
        self._storedByClient.clear()
        self._storedCurrent.clear()
        end, self._snapshotEnd = self._snapshotEnd, None
        if end is None:
            return
        if end.active():
            end.cancel()
        reader = self._reader
        if reader is not None and reader.in_transaction:
            try:
                reader.execute("COMMIT")
            except sqlite3.Error:
                self.log.failure("Ending a read transaction failed")
                _rollback(reader)

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        self._checkOpen()
        key = (address, prefix_length)
        pending = self._overlay.get(key)
        if pending is not None:
            return pending.lease
        try:
            return self._stored[key]
        except KeyError:
            pass
        rows = self._read(SQL_GET, (address.packed, prefix_length))
        lease = _fromRow(rows[0]) if rows else None
        self._stored[key] = lease
        return lease

    def getMany(self, keys: Iterable[_Key]) -> dict[_Key, Lease]:
        """
        The bindings of these keys that exist, as L{get} sees them, read
        with one query per C{_MANY} addresses instead of one per key (a
        failover batch: see L{dhcp6ha.failover.queue}).
        """
        self._checkOpen()
        found: dict[_Key, Lease] = {}
        wanted: dict[bytes, list[int]] = {}
        read: list[_Key] = []
        for key in keys:
            change = self._overlay.get(key)
            if change is not None:
                found[key] = change.lease
            else:
                wanted.setdefault(key[0].packed, []).append(key[1])
                read.append(key)
        addresses = list(wanted)
        stored = self._stored
        current = self._storedCurrent
        for start in range(0, len(addresses), _MANY):
            chunk = addresses[start : start + _MANY]
            sql = SQL_GET_MANY.format(", ".join("?" * len(chunk)))
            for row in self._read(sql, chunk):
                if row[1] in wanted[row[0]]:
                    lease = _fromRow(row)
                    found[lease.key] = lease
                    current[lease.key] = _Change(
                        0, lease, row[_LEASE_FIELDS], row[_LEASE_FIELDS + 1], ()
                    )
        # Kept for this snapshot, as get() and _current() keep what they
        # read (a commit of these keys then knows the states it replaces,
        # an amend the version and mark, without a read).
        for key in read:
            one = found.get(key)
            stored[key] = one
            if one is None:
                current[key] = None
        return found

    def byClient(self, duid: bytes, iaid: int, lease_type: LeaseType) -> list[Lease]:
        self._checkOpen()
        clientKey = (duid, iaid, lease_type)
        stored = self._storedByClient.get(clientKey)
        if stored is None:
            rows = self._read(SQL_BY_CLIENT, (duid, iaid, lease_type.value))
            stored = [_fromRow(row) for row in rows]
            self._storedByClient[clientKey] = stored
            for lease in stored:
                self._stored[lease.key] = lease
        found: dict[_Key, Lease] = {}
        for lease in stored:
            if lease.key not in self._overlay:
                found[lease.key] = lease
        for key in self._overlayByClient.get(clientKey, ()):
            found[key] = self._overlay[key].lease
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
            change.lease
            for change in self._overlay.values()
            if change.lease.expires <= now and change.lease.state in _RECLAIMABLE
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
            for key, change in self._overlay.items():
                sortKey = _sortKey(key)
                if (after is None or sortKey > after) and (upTo is None or sortKey <= upTo):
                    page[sortKey] = change.lease
            for sortKey in sorted(page):
                yield page[sortKey]
            if last:
                return
            after = upTo

    def count(self) -> dict[str, int]:
        """
        Bindings per state name, as reads see them: kept up to date by every
        change, so no scan (see "Counts" in the module documentation).
        """
        self._checkOpen()
        if self._countsStale:
            self._counts = self._scanCounts()
            self._countsStale = False
        return {state: n for state, n in self._counts.items() if n}

    def _scanCounts(self) -> dict[str, int]:
        """Bindings per state name, by a scan of the table."""
        # The totals and the stored states of the pending keys come from the
        # same snapshot (the turn's) even if the writer commits meanwhile.
        counts: dict[str, int] = dict(self._read(SQL_COUNT, ()))
        for key, change in self._overlay.items():
            rows = self._read(SQL_GET_STATE, (key[0].packed, key[1]))
            if rows:
                counts[rows[0][0]] -= 1
            state = change.lease.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def _storedStates(self, keys: Iterable[_Key]) -> dict[_Key, BindingState | None]:
        """
        The stored states of these keys (C{None}: no binding), from what
        this snapshot has read already, else one query per C{_MANY}
        addresses.  For the counts: a failure marks them stale.
        """
        states: dict[_Key, BindingState | None] = {}
        wanted: dict[bytes, list[_Key]] = {}
        stored = self._stored
        for key in keys:
            if key in stored:
                lease = stored[key]
                states[key] = None if lease is None else lease.state
            else:
                wanted.setdefault(key[0].packed, []).append(key)
        if not wanted:
            return states
        try:
            addresses = list(wanted)
            found: dict[tuple[bytes, int], str] = {}
            for start in range(0, len(addresses), _MANY):
                chunk = addresses[start : start + _MANY]
                sql = SQL_GET_STATES.format(", ".join("?" * len(chunk)))
                for row in self._read(sql, chunk):
                    found[(row[0], row[1])] = row[2]
            for packed, sameAddress in wanted.items():
                for key in sameAddress:
                    value = found.get((packed, key[1]))
                    states[key] = (
                        None if value is None else _STATES.get(value) or BindingState(value)
                    )
        except Exception:
            self.log.failure("Reading binding states for the counts failed; they will be rescanned")
            self._countsStale = True
        return states

    def _recount(self, before: BindingState | None, after: BindingState | None) -> None:
        """A key's state, as reads see it, went from C{before} to C{after}."""
        if before is after:
            return
        counts = self._counts
        if before is not None:
            counts[before.value] = counts.get(before.value, 0) - 1
        if after is not None:
            counts[after.value] = counts.get(after.value, 0) + 1

    def getMetadata(self, key: str) -> str | None:
        self._checkOpen()
        if key in self._metadataOverlay:
            return self._metadataOverlay[key][1]
        rows = self._read(SQL_GET_METADATA, (key,))
        return str(rows[0][0]) if rows else None

    # Replication marks (failover) -------------------------------------

    def _current(self, key: _Key) -> _Change | None:
        """The binding under C{key} with its version and pending mark, as
        reads see it (C{row} is not filled in for stored rows)."""
        change = self._overlay.get(key)
        if change is not None:
            return change
        try:
            return self._storedCurrent[key]
        except KeyError:
            pass
        rows = self._read(SQL_GET_CURRENT, (key[0].packed, key[1]))
        if rows:
            row = rows[0]
            change = _Change(0, _fromRow(row), row[_LEASE_FIELDS], row[_LEASE_FIELDS + 1], ())
        self._storedCurrent[key] = change
        return change

    def pendingUpdates(
        self, relationship: str, afterVersion: int, limit: int
    ) -> list[tuple[int, Lease]]:
        """
        Up to C{limit} bindings pending for C{relationship} with a version
        above C{afterVersion}, in version order, each with its version.

        Newer changes are seen at once (read-your-writes), and so are
        acknowledgements: a binding whose mark an L{acknowledge} clears is
        left out before that is durable.  But a version whose L{commit} is
        not durable yet is not returned: nothing reaches the partner before
        it is on our disk (a binding whose newer change is not durable yet
        is left out too; it comes with the newer version).
        """
        self._checkOpen()
        if limit <= 0:
            return []
        upper = self._durableVersion
        acking = self._acking
        overlay = self._overlay
        storedCurrent = self._storedCurrent
        found: list[tuple[int, Lease]] = []
        after = afterVersion
        exhausted = False
        while len(found) < limit:
            page = self._pendingPage(relationship, after, upper, limit)
            for change in page:
                lease = change.lease
                key = lease.key
                if key in overlay:
                    continue
                storedCurrent[key] = change
                if (relationship, key, change.version) not in acking:
                    found.append((change.version, lease))
            if len(page) < limit:
                exhausted = True
                break
            after = page[-1].version
        bound = upper if exhausted else after
        found.extend(
            (change.version, change.lease)
            for change in self._overlay.values()
            if change.pendingFor == relationship
            and afterVersion < change.version <= bound
            and (relationship, change.lease.key, change.version) not in acking
        )
        found.sort(key=lambda item: item[0])
        return found[:limit]

    def _pendingPage(self, relationship: str, after: int, upper: int, limit: int) -> list[_Change]:
        """
        The stored bindings pending for C{relationship} with a version in
        C{(after, upper]}, up to C{limit}, in version order, each as a
        C{_Change} (its C{row} is not filled in for the ones read from the
        table): from the pending index and the kept recent changes, or,
        when more than a quarter are not kept, read from the table.
        """
        keys = self._read(SQL_PENDING_KEYS, (relationship, after, upper, limit))
        recent = self._recent
        kept: list[_Change | None] = []
        missing = 0
        for version, packed, length in keys:
            change = recent.get((packed, length))
            if change is not None and change.version == version:
                kept.append(change)
            else:
                kept.append(None)
                missing += 1
        if missing * 4 > len(keys):
            rows = self._read(SQL_PENDING, (relationship, after, upper, limit))
            return [_Change(0, _fromRow(row), row[_LEASE_FIELDS], relationship, ()) for row in rows]
        page: list[_Change] = []
        for change, (version, packed, length) in zip(kept, keys, strict=True):
            if change is None:
                # The index and the table in one snapshot: the row is there.
                row = self._read(SQL_GET_CURRENT, (packed, length))[0]
                change = _Change(0, _fromRow(row), version, relationship, ())
            page.append(change)
        return page

    def _keepDurable(self, request: _Request) -> None:
        """
        C{request} is durable: keep its changes that are marked pending,
        drop the kept changes its acknowledgements rewrite (in the order of
        its transaction: its rows, then its acks).
        """
        recent = self._recent
        unwritten = self._unwrittenAcks
        for change in request.leases:
            key = (change.row[0], change.row[1])
            recent.pop(key, None)
            if change.pendingFor is not None and key not in unwritten:
                recent[key] = change
        self._acksWritten(request)
        while len(recent) > MAX_RECENT:
            recent.popitem(last=False)

    def _acksWritten(self, request: _Request) -> None:
        """C{request}'s acknowledgements are durable (or failed)."""
        recent = self._recent
        unwritten = self._unwrittenAcks
        for ack in request.acks:
            key = _ackedKey(ack)
            recent.pop(key, None)
            left = unwritten.get(key, 1) - 1
            if left > 0:
                unwritten[key] = left
            else:
                unwritten.pop(key, None)

    def pendingCount(self, relationship: str) -> int:
        """
        The number of bindings pending for C{relationship}, as reads see
        them (changes not durable yet included).  A count over an index:
        for status, not for every exchange.
        """
        # One snapshot (the turn's) for the count and the pending keys.
        ((count,),) = self._read(SQL_PENDING_COUNT, (relationship,))
        for key, change in self._overlay.items():
            rows = self._read(SQL_GET_PENDING_FOR, (key[0].packed, key[1]))
            if rows and rows[0][0] == relationship:
                count -= 1
            if change.pendingFor == relationship:
                count += 1
        # Marks an acknowledgement clears once durable: not pending already,
        # as pendingUpdates() sees it.
        for rel, key, version in self._acking:
            if rel == relationship:
                current = self._current(key)
                if (
                    current is not None
                    and current.pendingFor == relationship
                    and current.version == version
                ):
                    count -= 1
        return int(count)

    # Writes ------------------------------------------------------------

    def _nextSequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def commit(
        self,
        changes: Sequence[Lease],
        *,
        pending: bool = True,
        whenDurable: Callable[[], None] | None = None,
    ) -> Deferred[None]:
        """
        Insert or replace these bindings, atomically.

        Each gets a new version; with C{pending} each one the C{replicate}
        classifier gives a relationship is marked pending for it, in the
        same transaction (C{pending=False}: a binding received from the
        partner, which has it already).  Visible to reads at once.  The
        Deferred fires once they are durable; it fails with L{StoreClosed}
        after L{close}, with C{TypeError} or C{ValueError} for a malformed
        binding (nothing is stored), with the classifier's exception, or
        with the database's exception if the transaction failed (then reads
        no longer show them).  Cancelling it only stops the wait: the
        changes are still written.

        C{whenDurable}, if given, is called in the writer thread as soon as
        they are durable, before the Deferred fires (see "Work that must not
        wait for the reactor" above); never if they are not stored.  It must
        be safe to call from another thread; what it raises is logged.
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        try:
            prepared = [
                (lease, _toRow(lease), self._classify(lease) if pending else None)
                for lease in changes
            ]
        except (TypeError, ValueError, AttributeError) as e:
            self.log.warn("Refused malformed lease change: {error}", error=e)
            return fail(e)
        except Exception as e:
            self.log.failure("The replication classifier failed; nothing stored")
            return fail(e)
        # The states these changes replace, for the counts: the overlay's,
        # else what this snapshot read already, else read now.
        overlay = self._overlay
        stored = self._stored
        unread = [
            key
            for key in [lease.key for lease, _, _ in prepared]
            if key not in overlay and key not in stored
        ]
        states = self._storedStates(unread) if unread else {}
        entries: list[_Change] = []
        for lease, row, rel in prepared:
            key = lease.key
            replaced = overlay.get(key)
            before: BindingState | None
            if replaced is not None:
                before = replaced.lease.state
            else:
                read = stored.get(key, _UNREAD)
                if read is _UNREAD:
                    before = states.get(key)
                else:
                    before = None if read is None else read.state
            entries.append(self._put(lease, row, self._nextVersion(), rel, before))
        request = _Request(entries, [], self._version if entries else 0, whenDurable=whenDurable)
        return self._enqueue(request)

    def amend(self, changes: Sequence[Lease]) -> Deferred[None]:
        """
        Replace stored bindings in place: their version and pending mark
        stay as they are, so the change is not itself replicated (for
        bookkeeping such as the partner lifetime about to be proposed).
        A binding with no record, or whose record is the same, is skipped.
        Fires once durable.
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        try:
            rows = [_toRow(lease) for lease in changes]
        except (TypeError, ValueError, AttributeError) as e:
            self.log.warn("Refused malformed lease change: {error}", error=e)
            return fail(e)
        entries: list[_Change] = []
        for lease, row in zip(changes, rows, strict=True):
            current = self._current(lease.key)
            if current is None or current.lease == lease:
                continue
            entries.append(
                self._put(lease, row, current.version, current.pendingFor, current.lease.state)
            )
        return self._enqueue(_Request(entries, []))

    def acknowledge(
        self, relationship: str, acks: Sequence[tuple[Lease, int | None]]
    ) -> Deferred[None]:
        """
        The partner of C{relationship} acked these updates: for each
        C{(sent, version)}, the record as sent (its C{partner_lifetime_sent}
        the lifetime proposed) and the version read (C{None}: not one of the
        pending updates), apply the ack to the binding as it is stored when
        the ack is written (L{SQL_ACKNOWLEDGE}: no new version, no read).
        Reads see it once it is durable, and L{pendingUpdates} no longer
        returns a binding whose mark it clears from now on.  Fires once
        durable; it starts no transaction of its own before C{ackDelay}
        (see "Acknowledgements ride along" in the module docstring).
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        params: list[tuple[Any, ...]] = []
        acking: list[tuple[str, _Key, int]] = []
        try:
            for sent, version in acks:
                params.append(ackParameters(relationship, sent, version))
                if version is not None:
                    acking.append((relationship, sent.key, version))
        except (TypeError, ValueError, AttributeError) as e:
            self.log.warn("Refused malformed acknowledgement: {error}", error=e)
            return fail(e)
        for item in acking:
            self._acking[item] = self._acking.get(item, 0) + 1
        recent = self._recent
        unwritten = self._unwrittenAcks
        for ack in params:
            key = _ackedKey(ack)
            recent.pop(key, None)
            unwritten[key] = unwritten.get(key, 0) + 1
        return self._enqueue(_Request([], [], lazy=True, acks=params, acking=acking))

    def markPending(self, keys: Sequence[_Key]) -> Deferred[None]:
        """
        Queue these stored bindings for their relationship's partner again
        (a new version, marked pending), unless they are pending already:
        those keep their version, so that two partners that disagree do not
        send each other updates in a tight loop (RFC 8156 section 7.5.4).
        A mark that an L{acknowledge} not yet durable clears does not count:
        the partner has acked that version, not the record it should get
        now.  Keys with no binding or no relationship are skipped.  Fires
        once durable.
        """
        if self._closing:
            return fail(StoreClosed("the lease store is closed"))
        found: dict[_Key, tuple[Lease, str]] = {}
        try:
            for key in keys:
                current = self._current(key)
                if current is None or key in found:
                    continue
                relationship = self._classify(current.lease)
                if relationship is None:
                    continue
                pending = current.pendingFor == relationship and (
                    (relationship, key, current.version) not in self._acking
                )
                if not pending:
                    found[key] = (current.lease, relationship)
        except Exception as e:
            self.log.failure("The replication classifier failed; nothing marked")
            return fail(e)
        entries = [
            self._put(lease, _toRow(lease), self._nextVersion(), relationship, lease.state)
            for lease, relationship in found.values()
        ]
        return self._enqueue(_Request(entries, [], self._version if entries else 0))

    def _classify(self, lease: Lease) -> str | None:
        return None if self._replicate is None else self._replicate(lease)

    def _nextVersion(self) -> int:
        self._version += 1
        return self._version

    def _put(
        self,
        lease: Lease,
        row: _Row,
        version: int,
        pendingFor: str | None,
        before: BindingState | None,
    ) -> _Change:
        """
        A change, put in the overlay at once (later ones of the same call
        see it) and counted; C{before} is the state it replaces as reads
        saw it (C{None}: no binding).
        """
        change = _Change(
            self._nextSequence(),
            lease,
            version,
            pendingFor,
            row[:_LEASE_FIELDS] + (version, pendingFor),
        )
        self._overlayPut(change)
        self._recount(before, lease.state)
        return change

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

    def _overlayPut(self, change: _Change) -> None:
        lease = change.lease
        key = lease.key
        previous = self._overlay.get(key)
        if previous is not None:
            self._clientIndexDiscard(previous.lease)
        self._overlay[key] = change
        self._overlayByClient.setdefault((lease.duid, lease.iaid, lease.lease_type), set()).add(key)

    def _clientIndexDiscard(self, lease: Lease) -> None:
        clientKey = (lease.duid, lease.iaid, lease.lease_type)
        keys = self._overlayByClient.get(clientKey)
        if keys is not None:
            keys.discard(lease.key)
            if not keys:
                del self._overlayByClient[clientKey]

    def _overlayRelease(self, request: _Request) -> list[_Change]:
        """The transaction of C{request} is over: drop its overlay entries
        unless a later change to the same key has replaced them.

        @return: the changes dropped."""
        dropped: list[_Change] = []
        for change in request.leases:
            current = self._overlay.get(change.lease.key)
            if current is not None and current.sequence == change.sequence:
                del self._overlay[change.lease.key]
                self._clientIndexDiscard(change.lease)
                dropped.append(change)
        for sequence, key, _ in request.metadata:
            currentMeta = self._metadataOverlay.get(key)
            if currentMeta is not None and currentMeta[0] == sequence:
                del self._metadataOverlay[key]
        return dropped

    def _enqueue(self, request: _Request) -> Deferred[None]:
        self._queue.append(request)
        if not request.lazy:
            self._eager += 1
        if self._inFlight is None:
            self._schedule()
        return request.deferred

    def _schedule(self) -> None:
        """The writer is idle and requests are queued: schedule their
        transaction, after C{commit_delay}, or after C{ackDelay} when
        all of them are lazy."""
        scheduled = self._scheduled
        if self._eager or self._closing:
            if scheduled is not None:
                if not self._scheduledLazy:
                    return
                if scheduled.active():
                    scheduled.cancel()
            self._scheduled = self._reactor.callLater(self._commitDelay, self._flush)
            self._scheduledLazy = False
        elif scheduled is None:
            self._scheduled = self._reactor.callLater(self._ackDelay, self._flush)
            self._scheduledLazy = True

    def _flush(self) -> None:
        """Hand the next group of queued requests to the writer thread."""
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
            self._scheduledLazy = False
        if self._inFlight is not None or not self._queue:
            return
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and size + self._queue[0].size <= self._maxBatch:
            request = self._queue.popleft()
            batch.append(request)
            size += request.size
        self._eager -= sum(1 for request in batch if not request.lazy)
        self._inFlight = batch
        work: _Work = [
            (
                [change.row for change in r.leases],
                [(k, v) for _, k, v in r.metadata],
                r.acks,
                r.whenDurable,
            )
            for r in batch
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
        self._written(([exception] * len(batch), 0, []), batch)

    def _written(self, result: _Written, batch: list[_Request]) -> None:
        """The writer is done with C{batch}: release the overlay, start the
        next transaction, then tell the callers."""
        outcomes, committed, errors = result
        for error in errors:
            self.log.failure("Work on durable lease changes failed", failureOf(error))
        self._inFlight = None
        self.transactions += committed
        # A snapshot older than this transaction would miss its changes once
        # they leave the overlay: the next read takes a new one.
        self._endSnapshot()
        for request, outcome in zip(batch, outcomes, strict=True):
            for item in request.acking:
                left = self._acking.pop(item, 1) - 1
                if left > 0:
                    self._acking[item] = left
            if outcome is None:
                self._keepDurable(request)
            else:
                self._acksWritten(request)
            dropped = self._overlayRelease(request)
            if outcome is not None and dropped:
                # Not stored: reads see the stored state of these keys again.
                states = self._storedStates([change.lease.key for change in dropped])
                if not self._countsStale:
                    for change in dropped:
                        self._recount(change.lease.state, states.get(change.lease.key))
            # Requests end in order, so every version up to this one is now
            # durable (or failed, and no longer visible).
            self._durableVersion = max(self._durableVersion, request.newVersion)
            if outcome is None:
                self.changesWritten += request.size
        if self._queue:
            if self._eager or self._closing:
                self._flush()
            else:
                self._schedule()
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
            if self._inFlight is None:
                if self._queue:
                    # Written now, lazy acknowledgements included.
                    self._flush()
                elif self._scheduled is None:
                    self._shutDown()
        return d

    def _shutDown(self) -> None:
        self._endSnapshot()
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
    missing, check its version and migrate a version 1 database.

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
        # The metadata table is the same in every version: read the
        # version before touching anything else.
        connection.execute(_SCHEMA[0])
        rows = connection.execute(SQL_GET_METADATA, (_SCHEMA_KEY,)).fetchall()
        version = rows[0][0] if rows else None
        if version == "1":
            # Version 1 -> 2, in this transaction: new columns with their
            # defaults (no binding is pending: version 1 did not replicate).
            for statement in _MIGRATE_1_TO_2:
                connection.execute(statement)
        elif version is not None and version != str(SCHEMA_VERSION):
            raise SchemaError(
                f"lease database schema version {version!r}, this dhcp6ha reads "
                f"versions 1 to {SCHEMA_VERSION}"
            )
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute(
            "INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)",
            (_SCHEMA_KEY, str(SCHEMA_VERSION)),
        )
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
