"""
Tests for L{dhcp6ha.server}: the datagram adapter, reclamation timer and port.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address
from typing import Any

from twisted.internet import udp
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dhcp6ha import server
from dhcp6ha.engine import Decision, Received
from dhcp6ha.interfaces import IAllocationPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    MAX_MESSAGE_SIZE,
    ClientId,
    Message,
    MessageType,
    RelayMessage,
    RelayMessageOption,
    ServerId,
    encode,
)
from dhcp6ha.server import (
    _ADDRESS_CACHE_SIZE,
    INTERFACE_NAMES_TTL,
    SO_TIMESTAMPNS,
    DHCPv6Port,
    DHCPv6ServerProtocol,
    LogThrottle,
    PacketInfo,
    Reclaimer,
)
from dhcp6ha.testing import MemoryLeaseStore

CLIENT = IPv6Address("2001:db8::10")
RELAY = IPv6Address("2001:db8::1")
SOLICIT = Message(MessageType.SOLICIT, 0x123456, (ClientId(b"\x00\x03\x00\x01abcdef"),))
ADVERTISE = Message(
    MessageType.ADVERTISE,
    0x123456,
    (ClientId(b"\x00\x03\x00\x01abcdef"), ServerId(b"\x00\x03\x00\x01server")),
)
REPLY = Message(MessageType.REPLY, 0x123456, ADVERTISE.options)


def makeLease(address: str = "2001:db8:1::1000", expires: float = 1600.0) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(address),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=b"\x00\x03\x00\x01abcdef",
        iaid=7,
        start_time_of_state=1000.0,
        cltt=1000.0,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=expires,
    )


class FakeEngine:
    """
    Answers every message with C{decision}, or raises C{error}; records
    the calls.  A binding's policy is C{leasePolicies[key]}, else C{policy}.
    """

    def __init__(
        self, decision: Decision | None = None, policy: IAllocationPolicy | None = None
    ) -> None:
        self.decision = decision
        self.policy = policy if policy is not None else RecordingPolicy()
        self.leasePolicies: dict[tuple[IPv6Address, int], IAllocationPolicy] = {}
        self.error: Exception | None = None
        self.handled: list[tuple[Message | RelayMessage, Received, float]] = []
        self.reclaimable: list[Lease] = []
        self.reclaimCalls: list[tuple[float, int]] = []

    def handle(
        self, message: Message | RelayMessage, received: Received, now: float
    ) -> Decision | None:
        self.handled.append((message, received, now))
        if self.error is not None:
            raise self.error
        return self.decision

    def reclaim(self, now: float, limit: int) -> Sequence[Lease]:
        self.reclaimCalls.append((now, limit))
        if self.error is not None:
            raise self.error
        batch, self.reclaimable = self.reclaimable[:limit], self.reclaimable[limit:]
        return tuple(batch)

    def policyForLease(self, lease: Lease) -> IAllocationPolicy:
        return self.leasePolicies.get(lease.key, self.policy)


@implementer(IAllocationPolicy)
class RecordingPolicy:
    """Allows everything and records C{bindingChanged} calls."""

    def __init__(self, events: list[object] | None = None) -> None:
        self.changed: list[Lease] = []
        self.events = events if events is not None else []
        self.error: Exception | None = None

    def mayAllocate(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        return True

    def maxValidLifetime(self, existing: Lease | None, desired: int, now: float) -> int:
        return desired

    def respondsTo(self, msg_type: int, addressed_to_us: bool) -> bool:
        return True

    def bindingChanged(self, lease: Lease) -> None:
        self.changed.append(lease)
        self.events.append(("changed", lease))
        if self.error is not None:
            raise self.error


class FailingStore(MemoryLeaseStore):
    """A store whose commits all fail."""

    def commit(self, changes: Sequence[Lease], **kwargs: Any) -> Deferred[None]:
        return fail(OSError(errno.ENOSPC, "No space left on device"))


class HeldStore(MemoryLeaseStore):
    """
    A store whose commits stay pending until the test makes them durable,
    as the real one does: C{whenDurable} first, then, separately, the
    Deferred (in the real store, in another thread and then in the
    reactor's next turn).
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Deferred[None], Callable[[], None] | None]] = []

    def commit(
        self,
        changes: Sequence[Lease],
        *,
        pending: bool = True,
        whenDurable: Callable[[], None] | None = None,
    ) -> Deferred[None]:
        super().commit(changes, pending=pending)
        d: Deferred[None] = Deferred()
        self.held.append((d, whenDurable))
        return d


class RecordingTransport(FakeDatagramTransport):
    """Records writes into a shared event list too; may raise."""

    def __init__(self, events: list[object]) -> None:
        super().__init__()
        self.events = events
        self.error: Exception | None = None

    def write(self, packet: bytes, addr: Any = FakeDatagramTransport.noAddr) -> None:
        if self.error is not None:
            raise self.error
        super().write(packet, addr)
        self.events.append(("sent", packet, addr))


class ProtocolTestsMixin:
    """Builds a protocol on fakes."""

    def setUpProtocol(
        self, decision: Decision | None, store: MemoryLeaseStore | None = None
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.events: list[object] = []
        self.policy = RecordingPolicy(self.events)
        self.engine = FakeEngine(decision, self.policy)
        self.store = store if store is not None else MemoryLeaseStore(autoFlush=False)
        self.protocol = DHCPv6ServerProtocol(
            self.engine,
            self.store,
            self.policy,
            self.clock,
            logInterval=60,
            ifIndexToName={7: "eth7"}.__getitem__,
        )
        self.transport = RecordingTransport(self.events)
        self.protocol.makeConnection(self.transport)


class DurableBeforeVisibleTests(ProtocolTestsMixin, SynchronousTestCase):
    """A reply that changes bindings leaves only once they are durable."""

    def setUp(self) -> None:
        self.lease = makeLease()
        self.setUpProtocol(Decision(REPLY, (CLIENT, 546, None), (self.lease,)))

    def test_replyWaitsForCommit(self) -> None:
        """
        Nothing is sent while the commit is pending; once the store has made
        it durable, the encoded reply goes to the decision's destination.
        """
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.store.committed, [(self.lease,)])
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.policy.changed, [])
        self.store.flush()
        self.assertEqual(self.transport.written, [(encode(REPLY), (str(CLIENT), 546))])
        self.assertEqual(self.protocol.counters["sent"], 1)

    def test_policyToldAfterReply(self) -> None:
        """
        The policy hears of each change after the reply is sent (lazy
        update: the partner never delays the client).
        """
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.store.flush()
        self.assertEqual(
            self.events,
            [("sent", encode(REPLY), (str(CLIENT), 546)), ("changed", self.lease)],
        )

    def test_policiesPerChange(self) -> None:
        """
        A decision that names a policy per change (one relationship per
        subnet): each change is told to its own policy, after the reply;
        the protocol's own policy hears nothing.
        """
        other = makeLease("2001:db8:2::1000")
        first, second = RecordingPolicy(self.events), RecordingPolicy(self.events)
        self.engine.decision = Decision(
            REPLY, (CLIENT, 546, None), (self.lease, other), (second, first)
        )
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.store.flush()
        self.assertEqual(first.changed, [other])
        self.assertEqual(second.changed, [self.lease])
        self.assertEqual(self.policy.changed, [])
        self.assertEqual(
            self.events,
            [
                ("sent", encode(REPLY), (str(CLIENT), 546)),
                ("changed", self.lease),
                ("changed", other),
            ],
        )

    def test_replySentWhenDurable(self) -> None:
        """
        The reply is sent by the store's C{whenDurable}, as soon as the
        changes are durable, without waiting for the commit's Deferred: it
        is counted, and the policy told, once that fires, and its response
        time ends when it was sent.
        """
        store = HeldStore()
        self.setUpProtocol(Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=store)
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        [(d, whenDurable)] = store.held
        self.assertEqual(self.transport.written, [])
        self.clock.advance(0.002)
        assert whenDurable is not None
        whenDurable()
        self.assertEqual(self.transport.written, [(encode(REPLY), (str(CLIENT), 546))])
        self.assertEqual(self.protocol.counters["sent"], 0)
        self.assertEqual(self.policy.changed, [])
        self.clock.advance(0.5)
        d.callback(None)
        self.assertEqual(self.transport.written, [(encode(REPLY), (str(CLIENT), 546))])
        self.assertEqual(self.protocol.counters["sent"], 1)
        self.assertEqual(self.policy.changed, [self.lease])
        self.assertLess(self.protocol.responseTime.percentile(0.5), 0.01)

    def test_durableReplyWriteError(self) -> None:
        """
        A reply the transport refuses in C{whenDurable} is a counted,
        logged send error once the commit's Deferred fires; the changes are
        durable, so the policy is told all the same.
        """
        store = HeldStore()
        self.setUpProtocol(Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=store)
        self.transport.error = OSError(errno.ENETUNREACH, "Network is unreachable")
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        [(d, whenDurable)] = store.held
        assert whenDurable is not None
        whenDurable()
        self.assertEqual(self.protocol.counters["send-error"], 0)
        d.callback(None)
        self.assertEqual(self.protocol.counters["send-error"], 1)
        self.assertEqual(self.protocol.counters["sent"], 0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.policy.changed, [self.lease])

    def test_storeIgnoringWhenDurable(self) -> None:
        """
        With a store that does not call C{whenDurable}, the reply is sent
        when the commit's Deferred fires.
        """
        store = HeldStore()
        self.setUpProtocol(Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=store)
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        [(d, _)] = store.held
        d.callback(None)
        self.assertEqual(
            self.events,
            [("sent", encode(REPLY), (str(CLIENT), 546)), ("changed", self.lease)],
        )
        self.assertEqual(self.protocol.counters["sent"], 1)

    def test_leaseChangeLogged(self) -> None:
        """Each committed change is logged at info level with its details."""
        with capturedLogs() as events:
            self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
            self.store.flush()
        infos = [e for e in events if e["log_level"] is LogLevel.info]
        self.assertEqual(len(infos), 1)
        self.assertEqual(
            infos[0]["log_format"],
            "Lease {address}/{length} {state} for {duid} iaid {iaid} until {expires}",
        )
        self.assertEqual(infos[0]["address"], "2001:db8:1::1000")
        self.assertEqual(infos[0]["length"], 128)
        self.assertEqual(infos[0]["state"], "active")
        self.assertEqual(infos[0]["duid"], b"\x00\x03\x00\x01abcdef".hex())
        self.assertEqual(infos[0]["iaid"], 7)
        self.assertEqual(infos[0]["expires"], "1970-01-01T00:26:40+00:00")

    def test_failedCommitSendsNothing(self) -> None:
        """
        When the store cannot make the changes durable, no reply is sent,
        the policy hears nothing, and the failure is counted and logged.
        """
        self.setUpProtocol(
            Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=FailingStore()
        )
        with capturedLogs() as events:
            self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.policy.changed, [])
        self.assertEqual(self.protocol.counters["commit-failed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual([e["count"] for e in events if "log_failure" in e], [1])

    def test_commitRaising(self) -> None:
        """A store whose commit raises at once is a failed commit like any other."""

        class RaisingStore(MemoryLeaseStore):
            def commit(self, changes: Sequence[Lease], **kwargs: Any) -> Deferred[None]:
                raise OSError(errno.EIO, "Input/output error")

        self.setUpProtocol(
            Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=RaisingStore()
        )
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.protocol.counters["commit-failed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.successResultOf(self.protocol.drain())

    def test_failedCommitsThrottled(self) -> None:
        """Repeated commit failures are logged once per interval."""
        self.setUpProtocol(
            Decision(REPLY, (CLIENT, 546, None), (self.lease,)), store=FailingStore()
        )
        for _ in range(5):
            self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["commit-failed"], 5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(60)
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_drainWaitsForCommits(self) -> None:
        """
        L{DHCPv6ServerProtocol.drain} stops serving and fires once the
        commits in flight are done and their replies sent.
        """
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        drained = self.protocol.drain()
        self.assertNoResult(drained)
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(len(self.store.committed), 1)
        self.assertEqual(self.protocol.counters["not-serving"], 1)
        self.store.flush()
        self.successResultOf(drained)
        self.assertEqual(len(self.transport.written), 1)

    def test_drainIdle(self) -> None:
        """With nothing in flight, C{drain} fires at once."""
        self.successResultOf(self.protocol.drain())

    def test_policyErrorDoesNotStopReply(self) -> None:
        """A policy that raises is logged and counted; the reply was sent."""
        self.policy.error = RuntimeError("boom")
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.store.flush()
        self.assertEqual(len(self.transport.written), 1)
        self.assertEqual(self.protocol.counters["policy-error"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ExchangeTests(ProtocolTestsMixin, SynchronousTestCase):
    """What the protocol passes to the engine and does with its decision."""

    def test_noChangesSentAtOnce(self) -> None:
        """A decision with no binding changes is answered immediately."""
        self.setUpProtocol(Decision(ADVERTISE, (CLIENT, 546, None), ()))
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.store.committed, [])
        self.assertEqual(self.transport.written, [(encode(ADVERTISE), (str(CLIENT), 546))])

    def test_responseTime(self) -> None:
        """
        The response time runs from reading the datagram to sending its
        reply, the durable commit included; a datagram not answered, or whose
        commit failed, adds nothing.
        """
        self.setUpProtocol(Decision(REPLY, (CLIENT, 546, None), (makeLease(),)))
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.clock.advance(0.004)
        self.store.flush()
        self.engine.decision = Decision(ADVERTISE, (CLIENT, 546, None), ())
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.engine.decision = None
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        summary = self.protocol.responseTime.summary()
        self.assertEqual(summary["count"], 2)
        self.assertAlmostEqual(summary["max"], 0.004)
        self.assertEqual(self.protocol.responseTime.snapshot()["counts"]["0"], 1)
        self.setUpProtocol(
            Decision(REPLY, (CLIENT, 546, None), (makeLease(),)), store=FailingStore()
        )
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.flushLoggedErrors(OSError)
        self.assertEqual(self.protocol.responseTime.count, 0)

    def test_queueWait(self) -> None:
        """
        The time each datagram waited in the socket buffer
        (L{PacketInfo.waited}) is recorded for every datagram read, the
        ones dropped or not answered included; a datagram whose socket does
        not say adds nothing.
        """
        self.setUpProtocol(None)
        for waited in (0.00002, 0.00003):
            self.protocol.packetReceived(
                encode(SOLICIT), (str(CLIENT), 546, 0, 0), PacketInfo(None, None, waited)
            )
        self.protocol.packetReceived(b"\x01", (str(CLIENT), 546, 0, 0), PacketInfo(None, None, 0.5))
        self.protocol.packetReceived(
            encode(SOLICIT), (str(CLIENT), 546, 0, 0), PacketInfo(None, None)
        )
        summary = self.protocol.queueWait.summary()
        self.assertEqual(summary["count"], 3)
        self.assertAlmostEqual(summary["max"], 0.5)
        # Resolved below 0.1 ms, where a server keeping up reads most.
        self.assertLess(self.protocol.queueWait.percentile(50), 0.00004)
        self.assertEqual(self.protocol.counters["malformed"], 1)
        self.assertEqual(self.protocol.responseTime.count, 0)

    def test_receivedDescribesDatagram(self) -> None:
        """
        The engine gets the decoded message, the source (without scope),
        port, interface and whether it was multicast, and the clock's time.
        """
        self.setUpProtocol(None)
        self.protocol.packetReceived(
            encode(SOLICIT),
            ("fe80::1%eth7", 546, 0, 7),
            PacketInfo(IPv6Address("ff02::1:2"), "eth7"),
        )
        self.assertEqual(
            self.engine.handled,
            [(SOLICIT, Received(IPv6Address("fe80::1"), 546, "eth7", True), 1000.0)],
        )
        self.assertEqual(self.protocol.counters["no-reply"], 1)
        self.assertEqual(self.transport.written, [])

    def test_unicastDestination(self) -> None:
        """A datagram sent to a unicast address is not multicast."""
        self.setUpProtocol(None)
        self.protocol.packetReceived(
            encode(SOLICIT), (str(CLIENT), 546, 0, 0), PacketInfo(IPv6Address("::1"), "lo")
        )
        self.assertEqual(self.engine.handled[0][1], Received(CLIENT, 546, "lo", False))

    def test_unknownDestinationCountsAsMulticast(self) -> None:
        """
        Through plain C{datagramReceived} the destination is unknown: the
        message counts as multicast, and the interface comes from the
        source's scope id.
        """
        self.setUpProtocol(None)
        self.protocol.datagramReceived(encode(SOLICIT), ("fe80::1%eth7", 546, 0, 7))
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(
            [h[1] for h in self.engine.handled],
            [
                Received(IPv6Address("fe80::1"), 546, "eth7", True),
                Received(CLIENT, 546, None, True),
            ],
        )

    def test_replyToLinkLocalUsesScope(self) -> None:
        """
        A destination with an interface is written with that interface as
        the address's scope.
        """
        self.setUpProtocol(Decision(ADVERTISE, (IPv6Address("fe80::1"), 546, "eth7"), ()))
        self.protocol.datagramReceived(encode(SOLICIT), ("fe80::1", 546, 0, 7))
        self.assertEqual(self.transport.written, [(encode(ADVERTISE), ("fe80::1%eth7", 546))])

    def test_globalDestinationUnscoped(self) -> None:
        """A global destination is written without a scope, whatever the interface."""
        self.setUpProtocol(Decision(ADVERTISE, (RELAY, 547, "eth7"), ()))
        self.protocol.datagramReceived(encode(SOLICIT), (str(RELAY), 547))
        self.assertEqual(self.transport.written, [(encode(ADVERTISE), (str(RELAY), 547))])

    def test_relayForwarded(self) -> None:
        """A Relay-forward goes to the engine; its reply goes to the relay."""
        relayed = RelayMessage(
            MessageType.RELAY_FORW, 0, RELAY, CLIENT, (RelayMessageOption(SOLICIT),)
        )
        answer = RelayMessage(
            MessageType.RELAY_REPL, 0, RELAY, CLIENT, (RelayMessageOption(ADVERTISE),)
        )
        self.setUpProtocol(Decision(answer, (RELAY, 547, None), ()))
        self.protocol.datagramReceived(encode(relayed), (str(RELAY), 547))
        self.assertEqual(self.engine.handled[0][0], relayed)
        self.assertEqual(self.transport.written, [(encode(answer), (str(RELAY), 547))])

    def test_writeErrorCounted(self) -> None:
        """A transport that refuses the write is a counted, logged send error."""
        self.setUpProtocol(Decision(ADVERTISE, (CLIENT, 546, None), ()))
        self.transport.error = OSError(errno.ENETUNREACH, "Network is unreachable")
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["send-error"], 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_addressCachesBounded(self) -> None:
        """
        Source strings and destinations are remembered to save parsing and
        printing, at most C{_ADDRESS_CACHE_SIZE} of each; every datagram
        still gets its own source and reply destination.
        """
        self.setUpProtocol(None)
        for n in range(_ADDRESS_CACHE_SIZE + 10):
            self.protocol.datagramReceived(encode(SOLICIT), (f"2001:db8::{n:x}", 546))
        self.protocol.datagramReceived(encode(SOLICIT), ("2001:db8::5", 546))
        self.assertLessEqual(len(self.protocol._sources), _ADDRESS_CACHE_SIZE)
        self.assertEqual(
            [h[1].source for h in self.engine.handled],
            [IPv6Address(0x20010DB8 << 96 | n) for n in range(_ADDRESS_CACHE_SIZE + 10)]
            + [IPv6Address("2001:db8::5")],
        )

    def test_badSourceDropped(self) -> None:
        """A source that is not an IPv6 address is a counted drop, every time."""
        self.setUpProtocol(Decision(ADVERTISE, (CLIENT, 546, None), ()))
        self.protocol.datagramReceived(encode(SOLICIT), ("192.0.2.1", 546))
        self.protocol.datagramReceived(encode(SOLICIT), ("192.0.2.1", 546))
        self.assertEqual(self.protocol.counters["bad-source"], 2)
        self.assertEqual(self.engine.handled, [])

    def test_notServing(self) -> None:
        """While not serving, datagrams are counted and dropped."""
        self.setUpProtocol(Decision(ADVERTISE, (CLIENT, 546, None), ()))
        self.protocol.serving = False
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.engine.handled, [])
        self.assertEqual(self.protocol.counters["not-serving"], 1)


class BadInputTests(ProtocolTestsMixin, SynchronousTestCase):
    """Bad datagrams and failures are counted drops; the protocol goes on."""

    def setUp(self) -> None:
        self.setUpProtocol(Decision(ADVERTISE, (CLIENT, 546, None), ()))

    def assertStillServing(self) -> None:
        before = len(self.transport.written)
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(len(self.transport.written), before + 1)

    def test_malformedCounted(self) -> None:
        """A malformed datagram is counted, not answered, and logged."""
        with capturedLogs() as events:
            self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["malformed"], 1)
        self.assertEqual(self.engine.handled, [])
        self.assertEqual(self.transport.written, [])
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["source"], str(CLIENT))
        self.assertIn("truncated", warnings[0]["reason"])
        self.assertStillServing()

    def test_malformedLogThrottled(self) -> None:
        """
        The first malformed datagram of a reason is logged; others within
        the interval are only counted; the next one after it is logged with
        the number left out.
        """
        with capturedLogs() as events:
            for _ in range(10):
                self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
            self.clock.advance(59)
            self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
            self.clock.advance(1)
            self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual([e["suppressed"] for e in warnings], [0, 10])
        self.assertEqual(self.protocol.counters["malformed"], 12)

    def test_malformedReasonsThrottledApart(self) -> None:
        """Different reasons are throttled separately."""
        with capturedLogs() as events:
            self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
            self.protocol.datagramReceived(b"", (str(CLIENT), 546))
            self.protocol.datagramReceived(b"\x01\x00", (str(CLIENT), 546))
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 2)

    def test_oversized(self) -> None:
        """A datagram longer than the codec accepts is a counted drop."""
        with capturedLogs():
            self.protocol.datagramReceived(b"\x01" * (MAX_MESSAGE_SIZE + 1), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["oversized"], 1)
        self.assertEqual(self.engine.handled, [])
        self.assertStillServing()

    def test_serverMessageTypeDropped(self) -> None:
        """Messages only servers send (Advertise, Reply, Relay-reply...) are dropped."""
        with capturedLogs():
            for message in (ADVERTISE, REPLY):
                self.protocol.datagramReceived(encode(message), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["unexpected-type"], 2)
        self.assertEqual(self.engine.handled, [])
        self.assertStillServing()

    def test_unknownMessageTypeDropped(self) -> None:
        """A message type this server does not know is a counted drop."""
        with capturedLogs():
            self.protocol.datagramReceived(b"\xc8\x00\x00\x01", (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["unexpected-type"], 1)
        self.assertStillServing()

    def test_engineErrorCounted(self) -> None:
        """An engine that raises is logged and counted, and does not stop the protocol."""
        self.engine.error = ZeroDivisionError("bug")
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["engine-error"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.engine.error = None
        self.assertStillServing()

    def test_encodeErrorCounted(self) -> None:
        """
        A reply that cannot be encoded is logged and counted; nothing is
        committed or sent.
        """
        bad = Message(MessageType.ADVERTISE, 1 << 30)
        self.setUpProtocol(Decision(bad, (CLIENT, 546, None), (makeLease(),)))
        self.protocol.datagramReceived(encode(SOLICIT), (str(CLIENT), 546))
        self.assertEqual(self.protocol.counters["encode-error"], 1)
        self.assertEqual(self.store.committed, [])
        self.assertEqual(self.transport.written, [])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LogThrottleTests(SynchronousTestCase):
    """L{LogThrottle} admits one event per key per interval."""

    def test_firstAdmitted(self) -> None:
        """The first event of each key is admitted with nothing suppressed."""
        throttle = LogThrottle(Clock(), 10)
        self.assertEqual(throttle.admit("a"), 0)
        self.assertEqual(throttle.admit("b"), 0)
        self.assertIsNone(throttle.admit("a"))

    def test_countsSuppressed(self) -> None:
        """After the interval, the next event reports how many were left out."""
        clock = Clock()
        throttle = LogThrottle(clock, 10)
        throttle.admit("a")
        throttle.admit("a")
        throttle.admit("a")
        clock.advance(10)
        self.assertEqual(throttle.admit("a"), 2)
        self.assertIsNone(throttle.admit("a"))

    def test_keysBounded(self) -> None:
        """Past C{maxKeys} keys, new keys share the overflow key."""
        throttle = LogThrottle(Clock(), 10, maxKeys=2)
        throttle.admit("a")
        throttle.admit("b")
        self.assertEqual(throttle.admit("c", "other"), 0)
        self.assertIsNone(throttle.admit("d", "other"))


class ReclaimerTests(SynchronousTestCase):
    """L{Reclaimer} runs reclamation on the clock and commits the changes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(5000)
        self.policy = RecordingPolicy()
        self.engine = FakeEngine(policy=self.policy)
        self.store = MemoryLeaseStore(autoFlush=False)
        self.reclaimer = Reclaimer(
            self.engine, self.store, self.policy, self.clock, interval=10, limit=2
        )

    def test_runsOnTimer(self) -> None:
        """It runs at start, then every interval, with the clock's time."""
        self.reclaimer.start()
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(self.engine.reclaimCalls, [(5000.0, 2), (5010.0, 2), (5020.0, 2)])

    def test_commitsThenTellsPolicy(self) -> None:
        """Reclaimed bindings are committed; the policy hears after durability."""
        expired = makeLease(expires=4000)
        self.engine.reclaimable = [expired]
        self.reclaimer.start()
        self.assertEqual(self.store.committed, [(expired,)])
        self.assertEqual(self.policy.changed, [])
        self.store.flush()
        self.assertEqual(self.policy.changed, [expired])
        self.assertEqual(self.reclaimer.counters["reclaimed"], 1)

    def test_policyPerBinding(self) -> None:
        """Each reclaimed binding is told to the policy the engine names for it."""
        mine, theirs = makeLease(expires=4000), makeLease("2001:db8:2::1", expires=4000)
        relationship = RecordingPolicy()
        self.engine.leasePolicies[theirs.key] = relationship
        self.engine.reclaimable = [mine, theirs]
        self.reclaimer.start()
        self.store.flush()
        self.assertEqual(self.policy.changed, [mine])
        self.assertEqual(relationship.changed, [theirs])

    def test_fullBatchesContinue(self) -> None:
        """A full batch is followed by another in the same run."""
        leases = [makeLease(f"2001:db8:1::{i:x}", expires=4000) for i in range(1, 6)]
        self.engine.reclaimable = list(leases)
        self.store = MemoryLeaseStore()
        self.reclaimer = Reclaimer(
            self.engine, self.store, self.policy, self.clock, interval=10, limit=2
        )
        self.reclaimer.start()
        self.assertEqual(
            self.store.committed, [tuple(leases[:2]), tuple(leases[2:4]), (leases[4],)]
        )

    def test_failuresKeepTimer(self) -> None:
        """A failing engine or commit is logged and the timer goes on."""
        self.engine.error = RuntimeError("bug")
        self.reclaimer.start()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.engine.error = None
        self.engine.reclaimable = [makeLease(expires=4000)]
        self.store.commit = lambda changes: fail(OSError("disk"))  # type: ignore[method-assign]
        self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.reclaimer.counters["commit-failed"], 1)
        self.clock.advance(10)
        self.assertEqual(len(self.engine.reclaimCalls), 3)

    def test_stopWaitsForRun(self) -> None:
        """C{stop} fires once the run in progress has committed."""
        self.engine.reclaimable = [makeLease(expires=4000)]
        self.reclaimer.start()
        stopped = self.reclaimer.stop()
        self.assertNoResult(stopped)
        self.store.flush()
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(len(self.engine.reclaimCalls), 1)

    def test_stopNotStarted(self) -> None:
        """Stopping a reclaimer that never started fires at once."""
        self.successResultOf(self.reclaimer.stop())


class FakeSocket:
    """Answers C{recvmsg} from a list, then EAGAIN; records C{setsockopt}."""

    def __init__(self, reads: list[tuple[bytes, list[tuple[int, int, bytes]], int, Any]]) -> None:
        self.reads = reads
        self.options: list[tuple[int, int, Any]] = []
        self.sent: list[tuple[bytes, Any]] = []
        self.sendError: OSError | None = None
        self.refuse: set[tuple[int, int]] = set()

    def recvmsg(self, size: int, ancillary: int) -> tuple[bytes, list[Any], int, Any]:
        if not self.reads:
            raise BlockingIOError(errno.EAGAIN, "try again")
        return self.reads.pop(0)

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        if (level, option) in self.refuse:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        self.options.append((level, option, value))

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.sendError is not None:
            raise self.sendError
        self.sent.append((data, addr))
        return len(data)


class RecordingProtocol(DHCPv6ServerProtocol):
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, Any, PacketInfo]] = []

    def packetReceived(self, datagram: bytes, addr: Any, info: PacketInfo) -> None:
        self.packets.append((datagram, addr, info))


class DHCPv6PortTests(SynchronousTestCase):
    """L{DHCPv6Port} reports where each datagram went; it is tested with a fake socket."""

    def makePort(self, reads: list[Any]) -> tuple[DHCPv6Port, RecordingProtocol, FakeSocket]:
        protocol = RecordingProtocol()
        port = DHCPv6Port(0, protocol, "::", reactor=Clock())
        fake = FakeSocket(reads)
        port.socket = fake
        return port, protocol, fake

    def test_packetInfo(self) -> None:
        """
        The destination and interface index of C{IPV6_PKTINFO} become the
        L{PacketInfo} given to the protocol.
        """
        info = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack("=I", 1)
        port, protocol, _ = self.makePort(
            [
                (
                    b"hello",
                    [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                    0,
                    ("fe80::1%lo", 546, 0, 1),
                ),
                (b"bye", [], 0, ("::1", 547, 0, 0)),
            ]
        )
        port.doRead()
        self.assertEqual(
            protocol.packets,
            [
                (
                    b"hello",
                    ("fe80::1%lo", 546, 0, 1),
                    PacketInfo(IPv6Address("ff02::1:2"), socket.if_indextoname(1)),
                ),
                (b"bye", ("::1", 547, 0, 0), PacketInfo(None, None)),
            ],
        )

    def createdSocket(
        self, refuse: frozenset[tuple[int, int]] = frozenset()
    ) -> tuple[DHCPv6Port, FakeSocket]:
        """A port and the fake socket its C{createInternetSocket} set up."""
        fake = FakeSocket([])
        fake.refuse = set(refuse)
        self.patch(udp.Port, "createInternetSocket", lambda self: fake)
        port = DHCPv6Port(0, RecordingProtocol(), "::1", reactor=Clock())
        self.assertIs(port.createInternetSocket(), fake)
        return port, fake

    def test_socketOptions(self) -> None:
        """
        The socket asks for C{IPV6_RECVPKTINFO}, for arrival times
        (L{SO_TIMESTAMPNS}) and for C{receiveBufferSize} bytes of receive
        buffer (the kernel caps it at C{rmem_max}).
        """
        port, fake = self.createdSocket()
        self.assertEqual(
            fake.options,
            [
                (socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1),
                (socket.SOL_SOCKET, SO_TIMESTAMPNS, 1),
                (socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20),
            ],
        )
        port.receiveBufferSize = 0
        fake.options.clear()
        port.createInternetSocket()
        self.assertEqual(
            fake.options,
            [
                (socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1),
                (socket.SOL_SOCKET, SO_TIMESTAMPNS, 1),
            ],
        )

    def test_noArrivalTimes(self) -> None:
        """
        A system that refuses L{SO_TIMESTAMPNS} still gets its socket (with
        no arrival times, L{PacketInfo.waited} stays C{None}).
        """
        _, fake = self.createdSocket(refuse=frozenset({(socket.SOL_SOCKET, SO_TIMESTAMPNS)}))
        self.assertEqual(
            fake.options,
            [
                (socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1),
                (socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20),
            ],
        )

    def test_waited(self) -> None:
        """
        The arrival time of C{SCM_TIMESTAMPNS} (real-time clock) becomes
        L{PacketInfo.waited}, the time to the read; an arrival after the
        read (the clock stepped back) waited 0; a truncated one is ignored.
        """
        self.patch(server, "_wallClock", lambda: 1_700_000_010.25)
        arrived = struct.pack("@ll", 1_700_000_010, 200_000_000)
        later = struct.pack("@ll", 1_700_000_011, 0)
        port, protocol, _ = self.makePort(
            [
                (b"a", [(socket.SOL_SOCKET, SO_TIMESTAMPNS, arrived)], 0, ("::1", 547, 0, 0)),
                (b"b", [(socket.SOL_SOCKET, SO_TIMESTAMPNS, later)], 0, ("::1", 547, 0, 0)),
                (b"c", [(socket.SOL_SOCKET, SO_TIMESTAMPNS, arrived[:8])], 0, ("::1", 547, 0, 0)),
            ]
        )
        port.doRead()
        waited = [p[2].waited for p in protocol.packets]
        assert waited[0] is not None
        self.assertAlmostEqual(waited[0], 0.05, places=6)
        self.assertEqual(waited[1:], [0.0, None])

    def test_waitedOnRealSocket(self) -> None:
        """
        On a real socket (Linux), a datagram left unread for 20 ms comes
        with a wait of at least that.  Linux times datagrams on arrival
        only once its deferred switch for timestamps, which the first
        socket asking turns on, is on; until then it times them when read
        (a wait of about 0).  So a few datagrams are tried, each left
        unread 20 ms: one must show it, and none may be negative.
        """
        protocol = RecordingProtocol()
        port = DHCPv6Port(0, protocol, "::1", reactor=Clock())
        port._bindSocket()  # bound, read by hand: the Clock is no reactor
        self.addCleanup(port.socket.close)
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        waits: list[float | None] = []
        for attempt in range(20):
            sender.sendto(b"%d" % attempt, ("::1", port.getHost().port))
            readable, _, _ = select.select([port.socket], [], [], 5)
            self.assertTrue(readable)
            time.sleep(0.02)  # left unread
            port.doRead()
            waits.append(protocol.packets[-1][2].waited)
            if (waits[-1] or 0) >= 0.02:
                break
        self.assertEqual(len(protocol.packets), len(waits))
        self.assertNotIn(None, waits)
        self.assertTrue(all(w is not None and w >= 0 for w in waits), waits)
        self.assertGreaterEqual(waits[-1] or 0, 0.02, waits)
        self.assertLess(waits[-1] or 0, 5.0)

    def test_readsAtMostMaxDatagrams(self) -> None:
        """
        One C{doRead} delivers at most C{maxDatagramsPerRead} datagrams, so
        that the reactor runs other work (replies whose commit is durable)
        between reads; the next call goes on.
        """
        port, protocol, fake = self.makePort(
            [(b"%d" % n, [], 0, ("::1", 547, 0, 0)) for n in range(5)]
        )
        port.maxDatagramsPerRead = 2
        port.doRead()
        self.assertEqual([p[0] for p in protocol.packets], [b"0", b"1"])
        port.doRead()
        port.doRead()
        port.doRead()
        self.assertEqual([p[0] for p in protocol.packets], [b"0", b"1", b"2", b"3", b"4"])

    def test_interfaceNamesRemembered(self) -> None:
        """
        An interface index is looked up once per C{INTERFACE_NAMES_TTL}
        seconds; an index with no interface has no name.
        """
        clock = Clock()
        lookups: list[int] = []

        def name(index: int) -> str:
            lookups.append(index)
            if index == 9:
                raise OSError(errno.ENXIO, "No such device or address")
            return f"eth{index}"

        protocol = RecordingProtocol()
        port = DHCPv6Port(0, protocol, "::", reactor=clock, ifIndexToName=name)

        def read(index: int) -> None:
            info = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack("=I", index)
            ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
            port.socket = FakeSocket([(b"x", ancillary, 0, ("fe80::1", 546, 0, index))])
            port.doRead()

        for index in (3, 3, 9, 9):
            read(index)
        self.assertEqual(lookups, [3, 9])
        clock.advance(INTERFACE_NAMES_TTL)
        read(3)
        self.assertEqual(lookups, [3, 9, 3])
        self.assertEqual(
            [p[2].interface for p in protocol.packets], ["eth3", "eth3", None, None, "eth3"]
        )

    def test_write(self) -> None:
        """C{write} sends to the C{(host, port)} given."""
        port, _, fake = self.makePort([])
        port.write(b"reply", ("2001:db8::1", 547))
        port.write(b"reply", ("fe80::1%lo", 546))
        self.assertEqual(
            fake.sent, [(b"reply", ("2001:db8::1", 547)), (b"reply", ("fe80::1%lo", 546))]
        )

    def test_writeErrors(self) -> None:
        """
        As with C{udp.Port.write}: too long a datagram raises
        L{MessageLengthError}, a refused one is ignored, other errors are
        raised.
        """
        port, _, fake = self.makePort([])
        fake.sendError = OSError(errno.EMSGSIZE, "Message too long")
        self.assertRaises(MessageLengthError, port.write, b"x", ("::1", 547))
        fake.sendError = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        port.write(b"x", ("::1", 547))
        fake.sendError = OSError(errno.ENETUNREACH, "Network is unreachable")
        error = self.assertRaises(OSError, port.write, b"x", ("::1", 547))
        self.assertEqual(error.errno, errno.ENETUNREACH)

    def test_truncatedIsOversized(self) -> None:
        """A truncated read reaches the protocol longer than the limit."""
        port, protocol, _ = self.makePort(
            [(b"x" * (MAX_MESSAGE_SIZE + 1), [], socket.MSG_TRUNC, ("::1", 547, 0, 0))]
        )
        port.doRead()
        self.assertGreater(len(protocol.packets[0][0]), MAX_MESSAGE_SIZE)

    def test_joinGroupOn(self) -> None:
        """C{joinGroupOn} sets C{IPV6_JOIN_GROUP} with the interface's index."""
        port, _, fake = self.makePort([])
        port.joinGroupOn("ff02::1:2", "lo")
        port.leaveGroupOn("ff02::1:2", "lo")
        request = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack(
            "@I", socket.if_nametoindex("lo")
        )
        self.assertEqual(
            fake.options,
            [
                (socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request),
                (socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, request),
            ],
        )

    def test_joinUnknownInterface(self) -> None:
        """Joining on an interface that does not exist raises C{OSError}."""
        port, _, _ = self.makePort([])
        self.assertRaises(OSError, port.joinGroupOn, "ff02::1:2", "nosuch0")

    def test_ipv4Refused(self) -> None:
        """The port is IPv6 only."""
        self.assertRaises(ValueError, DHCPv6Port, 0, RecordingProtocol(), "127.0.0.1")


class RaisingProtocol(RecordingProtocol):
    def packetReceived(self, datagram: bytes, addr: Any, info: PacketInfo) -> None:
        super().packetReceived(datagram, addr, info)
        raise RuntimeError("bug")


class DHCPv6PortErrorTests(SynchronousTestCase):
    """A protocol error is logged and the port goes on reading."""

    def test_protocolErrorLogged(self) -> None:
        """Every waiting datagram is still delivered after an error."""
        protocol = RaisingProtocol()
        port = DHCPv6Port(0, protocol, "::", reactor=Clock())
        port.socket = FakeSocket(
            [(b"a", [], 0, ("::1", 547, 0, 0)), (b"b", [], 0, ("::1", 547, 0, 0))]
        )
        port.doRead()
        self.assertEqual([p[0] for p in protocol.packets], [b"a", b"b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
