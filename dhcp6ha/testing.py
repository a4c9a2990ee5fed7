# -*- test-case-name: tests.test_testing -*-
"""
Public test doubles, checked against their interfaces with C{verifyObject}.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from dhcp6ha.interfaces import IFailoverPeer, ILeaseStore, IUpdateQueue
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.failover.machine import StateMessage


@implementer(ILeaseStore)
class MemoryLeaseStore:
    """
    An in-memory L{ILeaseStore}.

    By default every commit is durable at once.  With C{autoFlush=False}
    commits stay pending until L{flush}, so tests can observe what happens
    between "decided" and "durable".

    @ivar committed: every batch passed to L{commit}, in order.
    """

    def __init__(self, autoFlush: bool = True) -> None:
        self._leases: dict[tuple[IPv6Address, int], Lease] = {}
        self._metadata: dict[str, str] = {}
        self._autoFlush = autoFlush
        self._pending: list[Deferred[None]] = []
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

    def commit(self, changes: Sequence[Lease]) -> Deferred[None]:
        self.committed.append(tuple(changes))
        for lease in changes:
            self._leases[lease.key] = lease
        if self._autoFlush:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._pending.append(d)
        return d

    def flush(self) -> None:
        """Make every pending commit durable, firing their Deferreds in order."""
        pending, self._pending = self._pending, []
        for d in pending:
            d.callback(None)

    def expiredBefore(self, now: float, limit: int) -> list[Lease]:
        found = [
            lease
            for lease in self._leases.values()
            if lease.expires <= now
            and lease.state in (BindingState.ACTIVE, BindingState.ABANDONED)
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
        counts: dict[str, int] = {}
        for lease in self._leases.values():
            counts[lease.state.value] = counts.get(lease.state.value, 0) + 1
        return counts

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
    """

    def __init__(self) -> None:
        self.enqueued: list[Lease] = []

    def enqueue(self, lease: Lease) -> None:
        self.enqueued.append(lease)
