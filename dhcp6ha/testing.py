# -*- test-case-name: tests.test_testing -*-
"""
Public test doubles, checked against their interfaces with C{verifyObject}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from dhcp6ha.failover.conflict import acknowledged
from dhcp6ha.interfaces import IFailoverPeer, ILeaseStore, IUpdateQueue, Replicate
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.failover.machine import StateMessage

Sender = Callable[[list[dict[str, Any]]], Deferred[list[dict[str, Any]]]]
"""Sends one BindingUpdate batch; fires with the per-binding results."""


@implementer(ILeaseStore)
class MemoryLeaseStore:
    """
    An in-memory L{ILeaseStore}.

    By default every commit is durable at once.  With C{autoFlush=False}
    commits (and C{amend}, C{acknowledge}, C{markPending}) stay pending
    until L{flush}, so tests can observe what happens between "decided" and
    "durable"; like the real store, L{pendingUpdates} does not return a
    version before it is durable.

    Replication marks follow L{dhcp6ha.leases.sqlite.SQLiteLeaseStore}
    exactly (the shared contract tests in C{tests.storetests} run against
    both).

    Like the real store, L{count} scans nothing: the counts per state are
    kept up to date as bindings are stored.

    @ivar committed: every batch passed to L{commit}, in order.
    """

    log = Logger()

    def __init__(self, autoFlush: bool = True, replicate: Replicate | None = None) -> None:
        self._leases: dict[tuple[IPv6Address, int], Lease] = {}
        # Per key: (version, relationship it is pending for, or None).
        self._marks: dict[tuple[IPv6Address, int], tuple[int, str | None]] = {}
        self._metadata: dict[str, str] = {}
        # Bindings per state name.
        self._counts: dict[str, int] = {}
        self._autoFlush = autoFlush
        self._replicate = replicate
        self._version = 0
        self._durableVersion = 0
        self._pending: list[tuple[Deferred[None], int, Callable[[], None] | None]] = []
        self.committed: list[tuple[Lease, ...]] = []
        self.closed = False

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        return self._leases.get((address, prefix_length))

    def byClient(self, duid: bytes, iaid: int, lease_type: LeaseType) -> list[Lease]:
        return [
            lease
            for lease in self._leases.values()
            if lease.duid == duid and lease.iaid == iaid and lease.lease_type is lease_type
        ]

    def commit(
        self,
        changes: Sequence[Lease],
        *,
        pending: bool = True,
        whenDurable: Callable[[], None] | None = None,
    ) -> Deferred[None]:
        try:
            marks = [self._classify(lease) if pending else None for lease in changes]
        except Exception as e:
            return fail(e)
        self.committed.append(tuple(changes))
        for lease, relationship in zip(changes, marks, strict=True):
            self._version += 1
            self._store(lease)
            self._marks[lease.key] = (self._version, relationship)
        return self._written(self._version, whenDurable)

    def amend(self, changes: Sequence[Lease]) -> Deferred[None]:
        for lease in changes:
            if lease.key in self._leases:
                self._store(lease)
        return self._written()

    def acknowledge(
        self, relationship: str, acks: Sequence[tuple[Lease, int | None]]
    ) -> Deferred[None]:
        for sent, version in acks:
            stored = self._leases.get(sent.key)
            if stored is None:
                continue
            self._store(acknowledged(stored, sent))
            current, pendingFor = self._marks[sent.key]
            if pendingFor == relationship and current == version:
                self._marks[sent.key] = (current, None)
        return self._written()

    def markPending(self, keys: Sequence[tuple[IPv6Address, int]]) -> Deferred[None]:
        found: dict[tuple[IPv6Address, int], str] = {}
        for key in keys:
            lease = self._leases.get(key)
            if lease is None:
                continue
            try:
                relationship = self._classify(lease)
            except Exception as e:
                return fail(e)
            if relationship is not None and self._marks[key][1] != relationship:
                found[key] = relationship
        for key, relationship in found.items():
            self._version += 1
            self._marks[key] = (self._version, relationship)
        return self._written(self._version)

    def pendingUpdates(
        self, relationship: str, afterVersion: int, limit: int
    ) -> list[tuple[int, Lease]]:
        found = sorted(
            (version, self._leases[key])
            for key, (version, pendingFor) in self._marks.items()
            if pendingFor == relationship and afterVersion < version <= self._durableVersion
        )
        return found[: max(0, limit)]

    def pendingCount(self, relationship: str) -> int:
        return sum(1 for _, pendingFor in self._marks.values() if pendingFor == relationship)

    def _classify(self, lease: Lease) -> str | None:
        return None if self._replicate is None else self._replicate(lease)

    def _store(self, lease: Lease) -> None:
        """Store C{lease} under its key, moving it between the counts."""
        previous = self._leases.get(lease.key)
        self._leases[lease.key] = lease
        counts = self._counts
        if previous is not None:
            counts[previous.state.value] -= 1
        counts[lease.state.value] = counts.get(lease.state.value, 0) + 1

    def _written(
        self, version: int = 0, whenDurable: Callable[[], None] | None = None
    ) -> Deferred[None]:
        """
        A write's Deferred: fired now, or at L{flush}, with its version
        durable then (and C{whenDurable} called just before).
        """
        if self._autoFlush:
            self._durable(version, whenDurable)
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._pending.append((d, version, whenDurable))
        return d

    def _durable(self, version: int, whenDurable: Callable[[], None] | None) -> None:
        self._durableVersion = max(self._durableVersion, version)
        if whenDurable is not None:
            try:
                whenDurable()
            except Exception:
                self.log.failure("Work on durable lease changes failed")

    def flush(self) -> None:
        """Make every pending write durable, firing their Deferreds in order."""
        pending, self._pending = self._pending, []
        for d, version, whenDurable in pending:
            self._durable(version, whenDurable)
            d.callback(None)

    def expiredBefore(self, now: float, limit: int) -> list[Lease]:
        found = [
            lease
            for lease in self._leases.values()
            if lease.expires <= now and lease.state in (BindingState.ACTIVE, BindingState.ABANDONED)
        ]
        found.sort(key=lambda lease: lease.expires)
        return found[:limit]

    def iterLeases(self, batch: int) -> Iterator[Lease]:
        return iter(sorted(self._leases.values(), key=lambda lease: lease.key))

    def getMetadata(self, key: str) -> str | None:
        return self._metadata.get(key)

    def setMetadata(self, key: str, value: str) -> Deferred[None]:
        self._metadata[key] = value
        return succeed(None)

    def count(self) -> dict[str, int]:
        return {state: n for state, n in self._counts.items() if n}

    def close(self) -> Deferred[None]:
        self.flush()
        self.closed = True
        return succeed(None)


@implementer(IFailoverPeer)
class FakePeer:
    """
    An L{IFailoverPeer} (one partner connection) that records every call.

    @ivar calls: every call, in order, as C{(method name, *arguments)}; pass
        a list shared with other recorders to check the order of effects
        across objects.
    @ivar failure: when set, every send fails with it (the call is still
        recorded).
    @ivar hold: names of methods whose Deferreds are not fired but kept in
        L{held}, for the test to fire.
    @ivar held: C{(method name, Deferred)} of the held calls, in order.
    @ivar disconnected: the reason given to L{disconnect}, if called.
    """

    def __init__(self, calls: list[tuple[object, ...]] | None = None) -> None:
        self.calls: list[tuple[object, ...]] = [] if calls is None else calls
        self.failure: Exception | None = None
        self.hold: set[str] = set()
        self.held: list[tuple[str, Deferred[None]]] = []
        self.disconnected: str | None = None

    def _sent(self, *call: object) -> Deferred[None]:
        self.calls.append(call)
        if self.failure is not None:
            return fail(self.failure)
        if call[0] in self.hold:
            d: Deferred[None] = Deferred()
            self.held.append((str(call[0]), d))
            return d
        return succeed(None)

    def sendState(self, message: StateMessage) -> Deferred[None]:
        return self._sent("sendState", message)

    def sendUpdateRequest(self) -> Deferred[None]:
        return self._sent("sendUpdateRequest")

    def sendUpdateRequestAll(self) -> Deferred[None]:
        return self._sent("sendUpdateRequestAll")

    def sendUnackedUpdates(self) -> Deferred[None]:
        return self._sent("sendUnackedUpdates")

    def sendPoolRequest(self) -> Deferred[None]:
        return self._sent("sendPoolRequest")

    def sendContact(self) -> Deferred[None]:
        return self._sent("sendContact")

    def disconnect(self, reason: str) -> None:
        self.calls.append(("disconnect", reason))
        self.disconnected = reason


@implementer(IUpdateQueue)
class FakeUpdateQueue:
    """
    An L{IUpdateQueue} that keeps what it is given.

    @ivar enqueued: every binding passed to L{enqueue}, in order.
    @ivar calls: every other call, in order, as C{(method name, *arguments)}.
    @ivar sender: the sender of the last L{attach}, until L{detach}.
    @ivar paused: whether L{pause} was called more recently than L{resume}.
    @ivar flushes: the Deferreds L{flush} returned that the test has not
        fired; likewise L{sendAlls} for L{sendAll}.
    """

    def __init__(self) -> None:
        self.enqueued: list[Lease] = []
        self.calls: list[tuple[object, ...]] = []
        self.sender: Sender | None = None
        self.paused = False
        self.flushes: list[Deferred[None]] = []
        self.sendAlls: list[Deferred[None]] = []

    def enqueue(self, lease: Lease) -> None:
        self.enqueued.append(lease)

    def attach(self, sender: Sender) -> None:
        self.calls.append(("attach", sender))
        self.sender = sender

    def detach(self) -> None:
        self.calls.append(("detach",))
        self.sender = None

    def flush(self) -> Deferred[None]:
        self.calls.append(("flush",))
        d: Deferred[None] = Deferred()
        self.flushes.append(d)
        return d

    def sendAll(self) -> Deferred[None]:
        self.calls.append(("sendAll",))
        d: Deferred[None] = Deferred()
        self.sendAlls.append(d)
        return d

    def pause(self) -> None:
        self.calls.append(("pause",))
        self.paused = True

    def resume(self) -> None:
        self.calls.append(("resume",))
        self.paused = False
