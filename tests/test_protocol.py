"""
Tests for L{dhcp6ha.failover.protocol}: two L{PartnerProtocol}s joined with
C{twisted.test.iosim}, each side with its own L{FailoverEndpoint} on a
L{MemoryLeaseStore}, all on one L{Clock}: the Connect exchange and its
refusals, replication, loss and reconnection, keepalive, and every kind of
hostile box (fed as raw bytes) ending the connection with a logged reason.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dhcp6ha.config import PrefixPool
from dhcp6ha.failover.commands import (
    BindingUpdate,
    Connect,
    ConnectRefused,
    Contact,
    FailoverStatus,
    State,
    UpdateRequest,
    bindingToBox,
)
from dhcp6ha.failover.machine import EndpointState, FailoverEndpoint, Role
from dhcp6ha.failover.protocol import (
    CLOSE_GRACE,
    LocalParameters,
    PartnerFactory,
    PartnerProtocol,
    PartnerSession,
    PrefixShare,
    checkBinding,
)
from dhcp6ha.failover.queue import UpdateQueue, receiveBindings
from dhcp6ha.interfaces import IFailoverPeer, ILeaseStore
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.testing import MemoryLeaseStore

S = EndpointState
T0 = 1_700_000_000.0
NAME = "lan"
MCLT = 3600
KEEPALIVE = 60.0
PRIMARY_DUID = b"\x00\x04" + b"\x01" * 16
SECONDARY_DUID = b"\x00\x04" + b"\x02" * 16
CLIENT = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x07"


# --- one side of a pair -------------------------------------------------------------------


class Side:
    """One server of the pair: store, endpoint, queue, session."""

    def __init__(
        self,
        role: Role,
        clock: Clock,
        *,
        name: str = NAME,
        mclt: int = MCLT,
        version: int = 1,
        minVersion: int = 1,
        maxSkew: float = 5.0,
        keepalive: float = KEEPALIVE,
        duid: bytes | None = None,
        prefixShare: PrefixShare | None = None,
        store: MemoryLeaseStore | None = None,
        coverage: bytes | None = None,
    ) -> None:
        self.role = role
        self.clock = clock
        self.store = MemoryLeaseStore(replicate=lambda lease: name) if store is None else store
        self.endpoint = FailoverEndpoint(
            name, role, clock, self.store, mclt=mclt, keepaliveTime=keepalive, maxSkew=maxSkew
        )
        self.queue = UpdateQueue(name, self.store, clock, maxUnacked=100, gatherDelay=0.0)
        self.name = name
        self.learnt: list[bytes] = []
        self.duid = (
            duid if duid is not None else (PRIMARY_DUID if role is Role.PRIMARY else SECONDARY_DUID)
        )
        self.session = PartnerSession(
            LocalParameters(
                relationship=name,
                role=role,
                mclt=mclt,
                maxUnacked=100,
                keepalive=keepalive,
                maxClockSkew=maxSkew,
                version=version,
                minVersion=minVersion,
                coverage=coverage,
                coverageSummary="1 address range(s)",
            ),
            self.endpoint,
            self.queue,
            self.store,
            clock,
            self.receive,
            serverDuid=lambda: self.duid,
            clientsSeen=lambda: 42,
            prefixShare=prefixShare,
            partnerDuidLearnt=self.learnt.append,
        )

    def receive(
        self, store: ILeaseStore, role: Role, boxes: list[dict[str, Any]], now: float
    ) -> Deferred[list[dict[str, Any]]]:
        return receiveBindings(store, role, boxes, now, queue=self.queue)

    @property
    def unacked(self) -> int:
        return self.store.pendingCount(self.name)


class Pair:
    """A primary and a secondary, connected through iosim."""

    def __init__(self, testCase: SynchronousTestCase, primary: Side, secondary: Side) -> None:
        self.primary = primary
        self.secondary = secondary
        self.clock = primary.clock
        self.test = testCase

    def connect(self) -> tuple[PartnerProtocol, PartnerProtocol, IOPump, list[object]]:
        """Connect and run the Connect exchange; C{outcome} holds its result."""
        client = PartnerFactory(self.primary.session, initiator=True).buildProtocol(None)
        server = PartnerFactory(self.secondary.session, initiator=False).buildProtocol(None)
        pump = connect(
            server,
            makeFakeServer(server),
            client,
            makeFakeClient(client),
            greet=False,
            clock=self.clock,
        )
        outcome: list[object] = []
        client.startConnect().addBoth(outcome.append)
        pump.flush()
        return client, server, pump, outcome


def lease(n: int, *, start: float = T0, valid: int = 600) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(int(IPv6Address("2001:db8::")) + n),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=CLIENT,
        iaid=n,
        start_time_of_state=start,
        cltt=start,
        preferred_lifetime=valid // 2,
        valid_lifetime=valid,
        expires=start + valid,
        partner_lifetime_sent=start + valid + 3600,
    )


def messages(events: list[LogEvent], kind: str) -> list[LogEvent]:
    return [e for e in events if e.get("failoverEvent") == kind]


# --- the tests ----------------------------------------------------------------------------------


class ConnectTests(SynchronousTestCase):
    """Section 6.1: the Connect exchange, accepted and refused."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)

    def pair(self, **secondary: Any) -> Pair:
        primary = Side(Role.PRIMARY, self.clock)
        other = Side(Role.SECONDARY, self.clock, **secondary)
        primary.endpoint.start()
        other.endpoint.start()
        return Pair(self, primary, other)

    def test_interfaces(self) -> None:
        """A PartnerProtocol is an IFailoverPeer."""
        pair = self.pair()
        client, server, pump, outcome = pair.connect()
        self.assertTrue(verifyObject(IFailoverPeer, client))
        self.assertTrue(verifyObject(IFailoverPeer, server))

    def test_firstStartBothNormal(self) -> None:
        """
        Two servers with no state connect: Connect succeeds, each learns the
        other's DUID, and both go to NORMAL at once (the pair's first start).
        """
        pair = self.pair()
        client, server, pump, outcome = pair.connect()
        self.assertEqual(outcome, [client])
        self.assertTrue(client.established and server.established)
        self.assertEqual(pair.primary.endpoint.state, S.NORMAL)
        self.assertEqual(pair.secondary.endpoint.state, S.NORMAL)
        self.assertEqual(pair.primary.endpoint.partnerState, S.NORMAL)
        self.assertEqual(pair.secondary.endpoint.partnerState, S.NORMAL)
        self.assertEqual(pair.primary.learnt, [SECONDARY_DUID])
        self.assertEqual(pair.secondary.learnt, [PRIMARY_DUID])
        self.assertIs(pair.primary.session.current, client)
        self.assertIs(pair.secondary.session.current, server)
        self.assertEqual(pair.primary.session.clockSkew, 0.0)
        self.assertTrue(pair.primary.queue.attached)
        self.assertTrue(pair.secondary.queue.attached)
        self.assertEqual(client.version, 1)
        self.assertEqual(server.partnerMaxUnacked, 100)

    def test_stateFollowsConnectReply(self) -> None:
        """
        Section 6.1: each side's first message after the Connect exchange
        is its STATE (the secondary's answer, then its STATE; the primary's
        Connect, then its STATE once answered).
        """
        pair = self.pair()
        client = PartnerFactory(pair.primary.session, initiator=True).buildProtocol(None)
        server = PartnerFactory(pair.secondary.session, initiator=False).buildProtocol(None)
        clientIO, serverIO = makeFakeClient(client), makeFakeServer(server)
        written: dict[str, bytes] = {"primary": b"", "secondary": b""}
        for name, io in (("primary", clientIO), ("secondary", serverIO)):
            original = io.write

            def record(data: bytes, name: str = name, original: Any = original) -> None:
                written[name] += data
                original(data)

            io.write = record  # type: ignore[method-assign]
        pump = connect(server, serverIO, client, clientIO, greet=False, clock=self.clock)
        client.startConnect()
        pump.flush()
        primaryBoxes = amp.parseString(written["primary"])
        secondaryBoxes = amp.parseString(written["secondary"])
        self.assertEqual(primaryBoxes[0][b"_command"], b"Connect")
        self.assertEqual(primaryBoxes[1][b"_command"], b"State")
        self.assertIn(b"_answer", secondaryBoxes[0])
        self.assertEqual(secondaryBoxes[1][b"_command"], b"State")
        self.assertEqual(secondaryBoxes[1][b"startup"], b"True")

    def test_versionNegotiated(self) -> None:
        """A secondary speaking versions 1-3 answers the primary's 1: the lower."""
        pair = self.pair(version=3)
        client, server, pump, outcome = pair.connect()
        self.assertEqual(outcome, [client])
        self.assertEqual(server.version, 1)
        self.assertEqual(client.version, 1)

    def assertRefused(self, fragment: str, **secondary: Any) -> tuple[Pair, list[LogEvent]]:
        """
        Connect is refused with a reason containing C{fragment}, logged on
        both sides; the connection is closed and neither endpoint gets it.
        """
        pair = self.pair(**secondary)
        with capturedLogs() as events:
            client, server, pump, outcome = pair.connect()
        [failure] = outcome
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(ConnectRefused), failure)
        self.assertIn(fragment, str(failure.value))
        refusals = messages(events, "connectRefused")
        self.assertEqual(len(refusals), 2, refusals)
        for event in refusals:
            self.assertIn(fragment, event["reason"])
        self.assertEqual(client.phase, "closed")
        self.assertEqual(server.phase, "closed")
        self.assertFalse(pair.primary.endpoint.communicating)
        self.assertFalse(pair.secondary.endpoint.communicating)
        self.assertEqual(pair.primary.endpoint.state, S.STARTUP)
        self.assertFalse(pair.secondary.queue.attached)
        return pair, events

    def connectAnswering(
        self, pair: Pair, **lies: Any
    ) -> tuple[PartnerProtocol, Failure, list[LogEvent]]:
        """
        Connect the pair with a secondary that accepts and answers with
        C{lies} in its answer; the primary's Connect fails: return the
        primary's protocol, the failure and the events logged.
        """
        server = PartnerFactory(pair.secondary.session, initiator=False).buildProtocol(None)
        client = PartnerFactory(pair.primary.session, initiator=True).buildProtocol(None)
        accept = server._connectReceived

        def lying(**kw: Any) -> Any:
            then = accept(**kw)
            then.response.update(lies)
            return then

        server._connectReceived = lying  # type: ignore[method-assign]
        pump = connect(
            server,
            makeFakeServer(server),
            client,
            makeFakeClient(client),
            greet=False,
            clock=self.clock,
        )
        outcome: list[object] = []
        client.startConnect().addBoth(outcome.append)
        with capturedLogs() as events:
            pump.flush()
        [failure] = outcome
        assert isinstance(failure, Failure)
        return client, failure, events

    def test_refusedRelationship(self) -> None:
        """A relationship name the secondary does not serve is refused."""
        self.assertRefused("relationship 'lan' is not served here", name="other")

    def test_refusedRole(self) -> None:
        """Two primaries: refused."""
        pair = self.pair()
        pair.secondary = Side(Role.PRIMARY, self.clock)
        pair.secondary.endpoint.start()
        with capturedLogs() as events:
            client, server, pump, outcome = pair.connect()
        [failure] = outcome
        assert isinstance(failure, Failure)
        self.assertIn("both servers are primary", str(failure.value))
        self.assertEqual(len(messages(events, "connectRefused")), 2)

    def test_refusedMCLT(self) -> None:
        """Different MCLTs: refused, both values named."""
        self.assertRefused("MCLT mismatch: the primary has 3600 s, this server 1800 s", mclt=1800)

    def test_refusedCoverage(self) -> None:
        """
        Partners covering different pools or reservations (their Connect
        digests differ): refused as a configuration conflict, naming both
        digests and our pools, so that the operator can compare the logs.
        """
        pair = self.pair(coverage=b"\x02" * 32)
        pair.primary.session.parameters = evolve(
            pair.primary.session.parameters, coverage=b"\x01" * 32
        )
        with capturedLogs() as events:
            client, server, pump, outcome = pair.connect()
        [failure] = outcome
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(ConnectRefused), failure)
        self.assertIn(
            "the two servers cover different pools or reservations (digest 0101010101010101"
            " there, 0202020202020202 here: 1 address range(s))",
            str(failure.value),
        )
        self.assertEqual(len(messages(events, "connectRefused")), 2)
        self.assertFalse(pair.secondary.endpoint.communicating)

    def test_coverageAgreed(self) -> None:
        """
        The same digest on both sides, or none from one side (a version
        that does not send it): accepted.
        """
        for primary, secondary in ((b"\x01" * 32, b"\x01" * 32), (None, b"\x01" * 32),
                                   (b"\x01" * 32, None)):  # fmt: skip
            pair = self.pair(coverage=secondary)
            pair.primary.session.parameters = evolve(
                pair.primary.session.parameters, coverage=primary
            )
            client, server, pump, outcome = pair.connect()
            self.assertEqual(outcome, [client], (primary, secondary))

    def test_primaryChecksCoverage(self) -> None:
        """A secondary that (wrongly) accepts other pools is disconnected by the primary."""
        pair = self.pair(coverage=b"\x01" * 32)
        pair.primary.session.parameters = evolve(
            pair.primary.session.parameters, coverage=b"\x01" * 32
        )
        client, failure, events = self.connectAnswering(pair, coverage=b"\x03" * 32)
        self.assertIn("cover different pools or reservations", str(failure.value))
        self.assertEqual(client.phase, "closed")
        self.assertEqual(len(messages(events, "connectRefused")), 1)

    def test_refusedVersion(self) -> None:
        """A secondary that needs version 2 or later refuses a version 1 primary."""
        self.assertRefused("protocol version 1 is not supported", version=3, minVersion=2)

    def test_refusedSkew(self) -> None:
        """
        A primary whose clock is 30 s ahead is refused (the secondary's
        bound is 5 s), with the measured skew in the reason.
        """
        pair = self.pair()
        primaryClock = Clock()
        primaryClock.advance(T0 + 30)
        pair.primary.session.clock = primaryClock
        with capturedLogs() as events:
            client, server, pump, outcome = pair.connect()
        [failure] = outcome
        assert isinstance(failure, Failure)
        self.assertIn("its clock is 30.000 s off ours, beyond the 5 s bound", str(failure.value))
        self.assertEqual(len(messages(events, "connectRefused")), 2)
        self.assertEqual(pair.secondary.session.refusals, 1)

    def test_primaryChecksAnswer(self) -> None:
        """
        The primary checks the answer too: a secondary with a 1800 s MCLT
        that (wrongly) accepts is disconnected by the primary.
        """
        pair = self.pair()
        client, failure, events = self.connectAnswering(pair, mclt=1800)
        self.assertIn("its MCLT is 1800 s and ours 3600 s", str(failure.value))
        self.assertEqual(client.phase, "closed")
        self.assertFalse(pair.primary.endpoint.communicating)
        [event] = messages(events, "connectRefused")
        self.assertIn(
            "accepted Connect, but its MCLT is 1800 s and ours 3600 s; disconnecting",
            formatEvent(event),
        )
        # The secondary hears why.
        self.assertFalse(pair.secondary.endpoint.communicating)

    def test_commandBeforeConnect(self) -> None:
        """A State sent to the secondary before Connect is a violation: dropped."""
        pair = self.pair()
        server = PartnerFactory(pair.secondary.session, initiator=False).buildProtocol(None)
        transport = FakeTransport(server, isServer=True)
        server.makeConnection(transport)
        box = amp.AmpBox(State.makeArguments({"state": "normal", "start_time_of_state": T0}, None))
        box[amp.COMMAND] = b"State"
        box[amp.ASK] = b"1"
        with capturedLogs() as events:
            server.dataReceived(box.serialize())
        [event] = messages(events, "violation")
        self.assertEqual(event["reason"], "State before Connect completed")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(pair.secondary.endpoint.partnerState, None)


class ReplicationTests(SynchronousTestCase):
    """Bindings flow, connections fail and come back."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.primary = Side(Role.PRIMARY, self.clock)
        self.secondary = Side(Role.SECONDARY, self.clock)
        self.primary.endpoint.start()
        self.secondary.endpoint.start()
        self.pair = Pair(self, self.primary, self.secondary)
        self.client, self.server, self.pump, outcome = self.pair.connect()
        self.assertEqual(outcome, [self.client])

    def test_bindingReplicated(self) -> None:
        """
        A binding the primary enqueues reaches the secondary's store; the
        ack clears it from the primary's queue and records the acked
        partner lifetime and state on the primary's record.
        """
        granted = lease(1)
        self.primary.store.commit([granted])
        self.primary.queue.enqueue(granted)
        self.pump.flush()
        self.assertEqual(self.primary.unacked, 0)
        self.assertEqual(self.secondary.unacked, 0)  # never echoed back
        there = self.secondary.store.get(granted.address, 128)
        assert there is not None
        self.assertEqual(there.state, BindingState.ACTIVE)
        self.assertEqual(there.duid, CLIENT)
        self.assertEqual(there.partner_lifetime_acked, granted.partner_lifetime_sent)
        here = self.primary.store.get(granted.address, 128)
        assert here is not None
        self.assertEqual(here.partner_lifetime_acked, granted.partner_lifetime_sent)
        self.assertTrue(here.stateAcked)

    def test_connectionLost(self) -> None:
        """
        Losing the connection takes both sides to COMMUNICATIONS-INTERRUPTED
        at once and detaches both queues.
        """
        self.client.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(self.primary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(self.secondary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertIsNone(self.primary.session.current)
        self.assertIsNone(self.secondary.session.current)
        self.assertFalse(self.primary.queue.attached)
        self.assertFalse(self.secondary.queue.attached)

    def test_lostWithBatchInFlight(self) -> None:
        """
        A connection lost while a batch is unanswered: the binding stays
        pending, and the queue does not count the batch as failed (it went
        with the connection).
        """
        granted = lease(4)
        self.primary.store.commit([granted])
        self.primary.queue.enqueue(granted)
        self.clock.advance(0)  # the queue sends; nothing is pumped
        self.assertEqual(self.primary.queue.inFlight, 1)
        with capturedLogs() as events:
            self.client.connectionLost(Failure(ConnectionLost("cable cut")))
        self.assertEqual(self.primary.queue.failedBatches, 0)
        self.assertEqual(self.primary.unacked, 1)
        self.assertFalse(any("failed" in e["log_format"] for e in events), events)
        self.assertEqual(self.primary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)

    def test_reconnectFlushes(self) -> None:
        """
        An update made while the link is down stays queued; after the
        reconnection both go back to NORMAL and the update is sent.
        """
        self.client.transport.loseConnection()
        self.pump.flush()
        self.clock.advance(30)
        granted = lease(2, start=self.clock.seconds())
        self.primary.store.commit([granted])
        self.primary.queue.enqueue(granted)
        self.pump.flush()
        self.assertEqual(self.primary.unacked, 1)
        client, server, pump, outcome = self.pair.connect()
        self.assertEqual(outcome, [client])
        self.assertEqual(self.primary.endpoint.state, S.NORMAL)
        self.assertEqual(self.secondary.endpoint.state, S.NORMAL)
        self.assertEqual(self.primary.unacked, 0)
        self.assertIsNotNone(self.secondary.store.get(granted.address, 128))

    def test_silentPartnerUnreachable(self) -> None:
        """
        A partner that stops sending anything (its process hangs, the
        network drops packets) is unreachable after the keepalive time:
        the connection is dropped, COMMUNICATIONS-INTERRUPTED.
        """
        # The secondary goes silent: nothing it writes reaches the primary.
        self.server.transport.write = lambda data: None  # type: ignore[method-assign]
        for _ in range(int(KEEPALIVE) - 1):
            self.clock.advance(1)
            self.pump.flush()
        self.assertEqual(self.primary.endpoint.state, S.NORMAL)
        with capturedLogs() as events:
            self.clock.advance(1)
            self.pump.flush()
        self.assertEqual(self.primary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertTrue(any("nothing from the partner" in e["log_format"] for e in events))

    def test_heartbeatsKeepAlive(self) -> None:
        """Both sides send Contact in time: hours pass, still NORMAL."""
        for _ in range(3 * 3600 // 5):
            self.clock.advance(5)
            self.pump.flush()
        self.assertEqual(self.primary.endpoint.state, S.NORMAL)
        self.assertEqual(self.secondary.endpoint.state, S.NORMAL)
        self.assertEqual(self.primary.session.partnerClientsSeen, 42)
        self.assertEqual(self.primary.session.lastContact, self.clock.seconds())

    def test_clientsSeenReachesEndpoint(self) -> None:
        """
        RFC 7031 section 4.7 over the wire: the primary's client count in
        its Contacts reaches the secondary's endpoint; while the count stays
        flat and client messages for the primary keep reaching the
        secondary, the secondary serves for it after the window (the
        keepalive time), and stops once the count grows.
        """
        seen = [500]
        self.primary.session.clientsSeen = lambda: seen[0]
        self.client.sendContact()
        self.pump.flush()
        endpoint = self.secondary.endpoint
        self.assertEqual(endpoint.partnerTraffic.count, 500)
        self.assertEqual(self.secondary.session.partnerClientsSeen, 500)
        for _ in range(3):
            endpoint.clientMessageForPartner()
        for _ in range(int(KEEPALIVE // 5)):
            self.clock.advance(5)
            self.pump.flush()
        self.assertTrue(endpoint.servingForPartner)
        self.assertEqual(self.secondary.endpoint.state, S.NORMAL)
        seen[0] += 1
        for _ in range(int(KEEPALIVE // 5)):
            self.clock.advance(5)
            self.pump.flush()
        self.assertFalse(endpoint.servingForPartner)
        self.assertEqual(endpoint.partnerTraffic.count, 501)

    def test_noClientsSeen(self) -> None:
        """A partner that sends no client count never makes us serve for it."""
        self.primary.session.clientsSeen = None
        endpoint = self.secondary.endpoint
        for _ in range(3):
            endpoint.clientMessageForPartner()
        for _ in range(int(3 * KEEPALIVE // 5)):
            self.clock.advance(5)
            self.pump.flush()
        self.assertIsNone(endpoint.partnerTraffic.count)
        self.assertIsNone(self.secondary.session.partnerClientsSeen)
        self.assertFalse(endpoint.servingForPartner)

    def test_contactSkewWarned(self) -> None:
        """
        A partner whose clock drifts beyond the bound after Connect is
        reported once (section 7.1), and its skew shows in the session.
        """
        ahead = Clock()
        ahead.advance(self.clock.seconds() + 30)
        self.primary.session.clock = ahead
        with capturedLogs() as events:
            self.client.sendContact()
            self.client.sendContact()
            self.pump.flush()
        self.assertEqual(self.secondary.session.clockSkew, 30.0)
        warnings = [e for e in events if "beyond the" in e["log_format"]]
        self.assertEqual(len(warnings), 1)

    def test_disconnect(self) -> None:
        """
        The endpoint's disconnect() sends Disconnect with the reason; the
        partner logs it and both end in COMMUNICATIONS-INTERRUPTED.
        """
        with capturedLogs() as events:
            self.client.disconnect("keepalive timeout")
            self.pump.flush()
        [event] = messages(events, "partnerDisconnect")
        self.assertEqual(event["reason"], "keepalive timeout")
        self.assertEqual(self.secondary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(self.client.phase, "closed")

    def test_replacedConnection(self) -> None:
        """
        A second connection that completes Connect replaces the first (a
        restarted primary), which is closed; the secondary ends in NORMAL
        on the new one.
        """
        with capturedLogs() as events:
            client, server, pump, outcome = self.pair.connect()
            self.pump.flush()
            pump.flush()
        self.assertEqual(outcome, [client])
        self.assertIs(self.secondary.session.current, server)
        self.assertEqual(self.server.phase, "closed")
        self.assertEqual(self.secondary.endpoint.state, S.NORMAL)
        self.assertTrue(any("replaces" in e["log_format"] for e in events))

    def test_operatorSync(self) -> None:
        """
        An operator's UpdateRequest is answered with the partner's unacked
        updates and UpdateDone, which does not reach the endpoint.
        """
        granted = lease(3)
        self.secondary.store.commit([granted])  # pending, but the queue is not woken
        self.pump.flush()
        self.assertEqual(self.secondary.unacked, 1)
        with capturedLogs() as events:
            self.client.requestUpdatesForOperator()
            self.pump.flush()
        self.assertIsNotNone(self.primary.store.get(granted.address, 128))
        self.assertTrue(any("operator sync" in e["log_format"] for e in events))
        self.assertFalse(any("no update request outstanding" in e["log_format"] for e in events))


class PoolRequestTests(SynchronousTestCase):
    """The secondary's share of delegable prefixes (proportional allocation)."""

    def test_share(self) -> None:
        """
        On reaching NORMAL the secondary asks; the primary hands a quarter
        of the 14 available prefixes of a 16-prefix pool (one leased, one
        reserved): floor(14 / 4) = 3, made FREE-BACKUP as the count of
        available prefixes read from the top allows, and the bindings reach
        the secondary.
        """
        clock = Clock()
        clock.advance(T0)
        pool = PrefixPool(IPv6Network("2001:db8:100::/52"), 56)
        top = IPv6Address("2001:db8:100:f00::")
        reserved = IPv6Network("2001:db8:100:e00::/56")
        share = PrefixShare([pool], 0.25, clock, reserved=[reserved], chunk=3)
        primary = Side(Role.PRIMARY, clock, prefixShare=share)
        primary.store.commit([prefixLease(top)])
        secondary = Side(Role.SECONDARY, clock)
        primary.endpoint.start()
        secondary.endpoint.start()
        client, server, pump, outcome = Pair(self, primary, secondary).connect()
        self.assertEqual(outcome, [client])
        pump.flush()
        backups = sorted(backupsOf(secondary.store))
        self.assertEqual(
            [str(a) for a in backups],
            ["2001:db8:100:200::", "2001:db8:100:600::", "2001:db8:100:a00::"],
        )
        self.assertEqual(sorted(backupsOf(primary.store)), backups)
        self.assertEqual(primary.unacked, 0)
        self.assertEqual((share.held, share.targets), ({pool: 3}, {pool: 3}))
        # Asked again: the share is complete, nothing more.
        again = primary.session.handPrefixes()
        pump.flush()
        self.assertEqual(self.successResultOf(again), 0)

    def test_secondaryRefuses(self) -> None:
        """A PoolRequest sent to a secondary is answered NotInState, not a violation."""
        clock = Clock()
        clock.advance(T0)
        primary = Side(Role.PRIMARY, clock)
        secondary = Side(Role.SECONDARY, clock)
        primary.endpoint.start()
        secondary.endpoint.start()
        client, server, pump, outcome = Pair(self, primary, secondary).connect()
        with capturedLogs() as events:
            client.sendPoolRequest()
            pump.flush()
        self.assertTrue(any("hands no prefixes" in e["log_format"] for e in events))
        self.assertTrue(client.established)


def prefixLease(
    address: IPv6Address, state: BindingState = BindingState.ACTIVE, length: int = 56
) -> Lease:
    """A delegated prefix held by CLIENT (or in C{state})."""
    held = state is not BindingState.FREE and state is not BindingState.FREE_BACKUP
    return Lease(
        lease_type=LeaseType.PD,
        address=address,
        prefix_length=length,
        state=state,
        duid=CLIENT if held else b"",
        iaid=9 if held else 0,
        start_time_of_state=T0,
        cltt=T0 if held else 0.0,
        preferred_lifetime=300 if held else 0,
        valid_lifetime=600 if held else 0,
        expires=T0 + 600 if held else 0.0,
    )


def backupsOf(store: MemoryLeaseStore) -> list[IPv6Address]:
    return [
        lease.address for lease in store.iterLeases(1000) if lease.state is BindingState.FREE_BACKUP
    ]


class CountingStore(MemoryLeaseStore):
    """A L{MemoryLeaseStore} counting its point reads."""

    def __init__(self) -> None:
        super().__init__(replicate=lambda lease: NAME)
        self.gets = 0

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        self.gets += 1
        return super().get(address, prefix_length)


class PrefixShareTests(SynchronousTestCase):
    """
    L{PrefixShare} passes on their own: the secondary's reserve is
    min(floor(free x share), maxBackup) per pool, read and written only as
    far as that needs, counted whole across passes and restarts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = CountingStore()
        # 2001:db8:100::/40 delegating /56s: 65,536 prefixes.
        self.pool = PrefixPool(IPv6Network("2001:db8:100::/40"), 56)

    def share(self, **kwargs: Any) -> PrefixShare:
        kwargs.setdefault("metadataKey", "failover.lan.backup-reach")
        return PrefixShare([self.pool], kwargs.pop("share", 0.5), self.clock, **kwargs)

    def hand(self, share: PrefixShare) -> list[Lease]:
        d = share.hand(self.store)
        while not d.called:
            self.clock.advance(0)
        records: list[Lease] = self.successResultOf(d)
        return records

    def prefix(self, depth: int) -> IPv6Address:
        """The prefix C{depth} from the top of the pool (1: the top one)."""
        return IPv6Address(
            int(self.pool.prefix.network_address) + (self.pool.size - depth) * (1 << 72)
        )

    def lease(self, depth: int, state: BindingState = BindingState.ACTIVE) -> None:
        self.store.commit([prefixLease(self.prefix(depth), state)])

    def test_cap(self) -> None:
        """
        A /40 of /56s with share 0.5 and a cap of 16: 16 FREE-BACKUP records,
        not 32,768, and only the top of the pool read.
        """
        share = self.share(maxBackup=16)
        records = self.hand(share)
        self.assertEqual(len(records), 16)
        self.assertEqual(len(backupsOf(self.store)), 16)
        self.assertLessEqual(self.store.gets, 40)
        self.assertEqual((share.held, share.targets), ({self.pool: 16}, {self.pool: 16}))
        self.assertEqual(self.store.getMetadata(share.reachKey(self.pool) or ""), "32")
        # Full: a second pass reads the reach and hands nothing.
        self.store.gets = 0
        self.assertEqual(self.hand(share), [])
        self.assertLessEqual(self.store.gets, 32)

    def test_defaultCap(self) -> None:
        """The default cap is max-backup-prefixes' default, 1024."""
        self.assertEqual(len(self.hand(self.share(chunk=256))), 1024)

    def test_fractionOfFree(self) -> None:
        """
        A nearly exhausted pool: the reserve is the share of what is free,
        not of the pool (16 prefixes, 12 leased, share 0.5: 2).
        """
        self.pool = PrefixPool(IPv6Network("2001:db8:100::/52"), 56)
        for depth in (1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15):
            self.lease(depth)
        share = self.share()
        self.assertEqual(len(self.hand(share)), 2)
        self.assertEqual(share.targets, {self.pool: 2})
        self.assertEqual(sorted(backupsOf(self.store)), sorted([self.prefix(8), self.prefix(16)]))
        # The primary leases its last two: 2 available, the secondary's 2
        # are above its target of 1 and stay (nothing is taken back).
        self.lease(4)
        self.lease(12)
        self.assertEqual(self.hand(share), [])
        self.assertEqual(share.targets, {self.pool: 1})
        self.assertEqual(len(backupsOf(self.store)), 2)

    def test_topUp(self) -> None:
        """
        The secondary leases some of its reserve: the next pass tops it up
        to the cap again, with prefixes it did not hold, and the reserve is
        never above the cap.
        """
        share = self.share(maxBackup=8)
        first = self.hand(share)
        for record in first[:5]:
            self.store.commit([evolve(prefixLease(record.address), duid=CLIENT)])
            share.backupEnded(record.address, 56)
        self.assertEqual(share.held, {self.pool: 3})
        self.assertTrue(share.wantsTopUp())
        second = self.hand(share)
        self.assertEqual(len(second), 5)
        self.assertFalse({r.address for r in second} & {r.address for r in first})
        self.assertEqual(len(backupsOf(self.store)), 8)
        self.assertFalse(share.wantsTopUp())

    def test_noDrift(self) -> None:
        """
        Prefixes of the reserve leased, then freed: a top-up fills the freed
        ones near the top and still counts the reserve further down, so the
        secondary never holds more than the cap (FREE-BACKUP records below
        the point where a pass stops converting are counted).
        """
        share = self.share(maxBackup=8)
        first = self.hand(share)
        for record in first[:4]:
            self.store.commit([evolve(prefixLease(record.address), duid=CLIENT)])
        self.hand(share)
        self.assertEqual(len(backupsOf(self.store)), 8)
        for record in first[:4]:
            self.store.commit([prefixLease(record.address, BindingState.FREE)])
        for _ in range(3):
            self.assertEqual(self.hand(share), [])
        self.assertEqual(len(backupsOf(self.store)), 8)

    def test_restart(self) -> None:
        """
        A restarted primary (a new PrefixShare on the same store) reads the
        reach from the store's metadata and counts the whole reserve.
        """
        share = self.share(maxBackup=8)
        first = self.hand(share)
        for record in first[:4]:
            self.store.commit([evolve(prefixLease(record.address), duid=CLIENT)])
        self.hand(share)
        for record in first[:4]:
            self.store.commit([prefixLease(record.address, BindingState.FREE)])
        restarted = self.share(maxBackup=8)
        self.assertEqual(self.hand(restarted), [])
        self.assertEqual(len(backupsOf(self.store)), 8)

    def test_backupSeen(self) -> None:
        """
        A FREE-BACKUP record received from the partner (after the primary
        lost its database) below the reach is counted from then on.
        """
        share = self.share(maxBackup=4, metadataKey=None)
        self.lease(100, BindingState.FREE_BACKUP)
        share.backupSeen(self.prefix(100), 56)
        share.backupSeen(IPv6Address("2001:db8:77::"), 56)  # no pool: ignored
        self.assertEqual(len(self.hand(share)), 3)
        self.assertEqual(share.held, {self.pool: 4})

    def test_reservedAndTaken(self) -> None:
        """Reserved prefixes and taken ones are never handed, nor counted as free."""
        self.pool = PrefixPool(IPv6Network("2001:db8:100::/54"), 56)
        self.lease(1, BindingState.EXPIRED)
        self.lease(2, BindingState.ABANDONED)
        reserved = IPv6Network((self.prefix(3), 56))
        share = self.share(share=1.0, reserved=[reserved])
        self.assertEqual([r.address for r in self.hand(share)], [self.prefix(4)])
        self.assertEqual(share.targets, {self.pool: 1})

    def test_limit(self) -> None:
        """One pass creates at most C{limit} records; the next goes on."""
        share = self.share(maxBackup=10, limit=4)
        self.assertEqual(len(self.hand(share)), 4)
        self.assertEqual(len(self.hand(share)), 4)
        self.assertEqual(len(self.hand(share)), 2)
        self.assertEqual(self.hand(share), [])

    def test_turns(self) -> None:
        """At most C{chunk} reads per reactor turn, each turn's records committed in it."""
        share = self.share(maxBackup=8, chunk=4)
        d = share.hand(self.store)
        self.assertFalse(d.called)
        self.assertEqual(self.store.gets, 4)
        self.assertEqual(len(backupsOf(self.store)), 2)
        while not d.called:
            self.clock.advance(0)
        self.assertEqual(len(self.successResultOf(d)), 8)

    def test_arguments(self) -> None:
        """A share outside [0, 1] or a limit, chunk or cap below 1 is refused."""
        for bad in ({"share": 1.5}, {"limit": 0}, {"chunk": 0}, {"maxBackup": 0}):
            with self.assertRaises(ValueError):
                self.share(**bad)


# --- hostile input --------------------------------------------------------------------------


def frame(*pairs: tuple[bytes, bytes]) -> bytes:
    """A raw AMP box: key/value pairs with 16-bit length prefixes, then the end."""
    out = b""
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


def command(name: type[amp.Command], tag: bytes = b"99", **arguments: Any) -> bytes:
    strings = name.makeArguments(arguments, None)
    box = amp.AmpBox(strings)
    box[amp.COMMAND] = name.commandName
    box[amp.ASK] = tag
    return box.serialize()


class HostileInputTests(SynchronousTestCase):
    """
    Whatever an authenticated partner sends, the connection ends with a
    logged reason, nothing raises, and the endpoint sees the loss.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.primary = Side(Role.PRIMARY, self.clock)
        self.secondary = Side(Role.SECONDARY, self.clock)
        self.primary.endpoint.start()
        self.secondary.endpoint.start()
        client, self.server, self.pump, outcome = Pair(self, self.primary, self.secondary).connect()
        self.assertEqual(outcome, [client])

    @contextmanager
    def violation(self, fragment: str) -> Iterator[None]:
        with capturedLogs() as events:
            yield
            self.pump.flush()
        found = messages(events, "violation")
        self.assertEqual(len(found), 1, [e.get("reason") for e in events])
        self.assertIn(fragment, found[0]["reason"])
        self.assertEqual(self.server.phase, "closed")
        self.assertEqual(self.secondary.endpoint.state, S.COMMUNICATIONS_INTERRUPTED)
        self.assertEqual(self.secondary.session.violations, 1)

    def feed(self, data: bytes) -> None:
        """Bytes from the primary's side, as raw as they come."""
        self.server.dataReceived(data)

    def test_unknownCommand(self) -> None:
        """An unknown command (AMP's own StartTLS included) is a violation."""
        with self.violation("unknown command b'StartTLS'"):
            self.feed(frame((b"_command", b"StartTLS"), (b"_ask", b"1")))

    def test_badArgumentType(self) -> None:
        """A State whose start time is not a float."""
        with self.violation("malformed State"):
            self.feed(
                frame(
                    (b"_command", b"State"),
                    (b"_ask", b"1"),
                    (b"state", b"normal"),
                    (b"start_time_of_state", b"yesterday"),
                )
            )

    def test_missingArgument(self) -> None:
        """A State without its start time."""
        with self.violation("malformed State"):
            self.feed(frame((b"_command", b"State"), (b"_ask", b"1"), (b"state", b"normal")))

    def test_unknownState(self) -> None:
        """A State naming no RFC 8156 state."""
        with self.violation("unknown state 'happy'"):
            self.feed(command(State, state="happy", start_time_of_state=T0))

    def test_nanTime(self) -> None:
        """A Contact whose time is NaN."""
        with self.violation("not a number"):
            self.feed(command(Contact, sender_time=float("nan")))

    def test_prefixLength200(self) -> None:
        """A binding of prefix length 200 (it parses as an integer)."""
        box = bindingToBox(evolve(lease(1), lease_type=LeaseType.PD), 0.0)
        box["prefix_length"] = 200
        with self.violation("prefix length 200 out of range"):
            self.feed(command(BindingUpdate, bindings=[box]))
        self.assertIsNone(self.secondary.store.get(box["address"], 200))

    def test_addressWithPrefixLength(self) -> None:
        """An NA binding with a prefix length other than 128."""
        box = bindingToBox(lease(1), 0.0)
        box["prefix_length"] = 64
        with self.violation("an address binding"):
            self.feed(command(BindingUpdate, bindings=[box]))

    def test_hugeDuid(self) -> None:
        """A binding carrying a 60,000-byte DUID."""
        box = bindingToBox(evolve(lease(1), duid=b"x" * 60_000), 0.0)
        with self.violation("a DUID of 60000 bytes"):
            self.feed(command(BindingUpdate, bindings=[box]))

    def test_badBindingField(self) -> None:
        """A BindingUpdate whose one element has a lease type that does not exist."""
        element = amp.AmpBox(
            BindingUpdate.makeArguments({"bindings": [bindingToBox(lease(1), 0.0)]}, None)
        )[b"bindings"].replace(b"\x00\x02na", b"\x00\x02zz")
        with self.violation("malformed BindingUpdate"):
            self.feed(
                frame((b"_command", b"BindingUpdate"), (b"_ask", b"1"), (b"bindings", element))
            )

    def bindingsValue(self) -> bytes:
        """The AmpList value of a BindingUpdate of two good bindings."""
        strings = BindingUpdate.makeArguments(
            {"bindings": [bindingToBox(lease(n), 0.0) for n in (1, 2)]}, None
        )
        value: bytes = strings[b"bindings"]
        return value

    def test_malformedBindingList(self) -> None:
        """
        A BindingUpdate whose AmpList value is malformed (an element cut
        short, a field missing, a key longer than AMP allows inside an
        element) is a violation each time, stored nothing and raised nothing.
        """
        good = self.bindingsValue()
        for bad in (
            good[:-1],
            good + b"\x00",
            good.replace(b"\x00\x04iaid", b"\x00\x04xxxx"),
            b"\x01\x2c" + b"k" * 300 + b"\x00\x01v\x00\x00" + good,
        ):
            self.setUp()
            with self.violation("malformed BindingUpdate"):
                self.feed(
                    frame((b"_command", b"BindingUpdate"), (b"_ask", b"1"), (b"bindings", bad))
                )
            self.assertIsNone(self.secondary.store.get(lease(1).address, 128))

    def test_malformedResults(self) -> None:
        """
        An answer to our BindingUpdate whose results do not parse is a
        violation on the sender's side: logged, the connection closed.
        """
        client = self.primary.session.current
        assert client is not None
        with capturedLogs() as events:
            sent = client.sendBindings([bindingToBox(lease(1), 0.0)])
            tag = b"%x" % (client._counter,)
            client.dataReceived(frame((b"_answer", tag), (b"results", b"\x00\x07address")))
        found = messages(events, "violation")
        self.assertEqual(len(found), 1, [e.get("reason") for e in events])
        self.assertIn("malformed answer to BindingUpdate", found[0]["reason"])
        self.assertIn("ValueError", found[0]["reason"])
        self.assertIsNotNone(client.closing)
        # AMP's own last errback logs the failure it is handed once more.
        self.assertTrue(sent.called)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_keyTooLong(self) -> None:
        """A key of 300 bytes (AMP allows 255)."""
        with self.violation("a key of 300 bytes"):
            self.feed(struct.pack("!H", 300) + b"k" * 300)

    def test_tooManyKeys(self) -> None:
        """A box with 40 keys."""
        with self.violation("more than 32 keys"):
            self.feed(frame(*((b"k%d" % i, b"v") for i in range(40))))

    def test_emptyBox(self) -> None:
        """A box with nothing in it."""
        with self.violation("neither a command nor an answer"):
            self.feed(b"\x00\x00")

    def test_answerToNothing(self) -> None:
        """An answer to a question never asked."""
        with self.violation("an answer to no request"):
            self.feed(frame((b"_answer", b"12345")))

    def test_errorWithoutCode(self) -> None:
        """An error answer without its code."""
        # A real outstanding question: the secondary asks for updates.
        self.server.callRemote(UpdateRequest)
        tag = b"%x" % (self.server._counter,)
        with self.violation("without code"):
            self.feed(frame((b"_error", tag)))

    def test_secondConnect(self) -> None:
        """A Connect on a connection that already completed one."""
        with self.violation("a second Connect"):
            self.feed(
                command(
                    Connect,
                    protocol_version=1,
                    relationship=NAME,
                    role="primary",
                    mclt=MCLT,
                    sender_time=T0,
                    max_unacked=10,
                    keepalive=60.0,
                )
            )

    def test_longDisconnectReason(self) -> None:
        """A Disconnect whose reason is 5000 characters."""
        strings = amp.AmpBox(
            {b"_command": b"Disconnect", b"status": b"1", b"reason": b"x" * 5000}
        ).serialize()
        with self.violation("a Disconnect reason of 5000 characters"):
            self.feed(strings)

    def test_bytesAfterViolationIgnored(self) -> None:
        """Boxes after the offending one (same read) are not acted on."""
        data = frame((b"_command", b"Nope"), (b"_ask", b"1")) + command(
            State, state="partner-down", start_time_of_state=T0
        )
        with self.violation("unknown command"):
            self.feed(data)
        self.assertEqual(self.secondary.endpoint.partnerState, S.NORMAL)

    def test_abortAfterGrace(self) -> None:
        """A peer that does not let the connection close is aborted after the grace time."""
        aborted: list[bool] = []
        transport = self.server.transport
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        with capturedLogs():
            self.feed(frame((b"_command", b"Nope"), (b"_ask", b"1")))
        self.assertTrue(transport.disconnecting)
        self.clock.advance(CLOSE_GRACE)
        self.assertEqual(aborted, [True])


class CheckBindingTests(SynchronousTestCase):
    """L{checkBinding} accepts sane bindings."""

    def test_sane(self) -> None:
        """An address and a delegated prefix pass."""
        self.assertIsNone(checkBinding(bindingToBox(lease(1), T0)))
        prefix = evolve(
            lease(1),
            lease_type=LeaseType.PD,
            address=IPv6Address("2001:db8:1:100::"),
            prefix_length=56,
        )
        self.assertIsNone(checkBinding(bindingToBox(prefix, T0)))

    def test_problems(self) -> None:
        """Each field out of range is named, with the binding it is on."""
        box = bindingToBox(lease(1), T0)
        where = "2001:db8::1/128: "
        cases: list[tuple[dict[str, Any], str]] = [
            ({"prefix_length": 64}, "an address binding (2001:db8::1) with prefix length 64"),
            ({"lease_type": LeaseType.PD, "prefix_length": 0}, "prefix length 0 out of range"),
            ({"duid": b"x" * 131}, where + "a DUID of 131 bytes"),
            ({"iaid": -1}, where + "IAID out of range"),
            ({"iaid": 2**32}, where + "IAID out of range"),
            ({"preferred_lifetime": -1}, where + "preferred_lifetime out of range"),
            ({"valid_lifetime": 2**32}, where + "valid_lifetime out of range"),
            ({"start_time_of_state": float("nan")}, where + "start_time_of_state is not a time"),
            ({"cltt": float("inf")}, where + "cltt is not a time"),
            ({"expires": -1.0}, where + "expires is not a time"),
            ({"partner_lifetime": float("-inf")}, where + "partner_lifetime is not a time"),
            ({"fqdn": "x" * 256, "fqdn_flags": 0}, where + "an FQDN of 256 characters"),
            ({"fqdn": "host", "fqdn_flags": 256}, where + "FQDN flags out of range"),
        ]
        for changes, problem in cases:
            self.assertEqual(checkBinding({**box, **changes}), problem, changes)
        self.assertIsNone(checkBinding({**box, "fqdn": "x" * 255, "fqdn_flags": 255}))
        self.assertIsNone(checkBinding({**box, "expires": 0.0, "iaid": 2**32 - 1}))

    def test_hostBits(self) -> None:
        """A delegated prefix with host bits set does not."""
        prefix = evolve(
            lease(1),
            lease_type=LeaseType.PD,
            address=IPv6Address("2001:db8:1:101::"),
            prefix_length=56,
        )
        self.assertIn("host bits", checkBinding(bindingToBox(prefix, T0)) or "")


class FailureStatusTests(SynchronousTestCase):
    """Status codes used in Disconnect."""

    def test_codes(self) -> None:
        """The skew refusal uses the RFC 8156 code."""
        self.assertEqual(FailoverStatus.EXCESSIVE_TIME_SKEW, 22)
