"""
Tests for L{dhcp6ha.control}: the control target, the JSON-lines protocol
(on fake transports and a L{Clock}) and the control socket service (a real
UNIX socket in a temporary directory: its mode, stale sockets).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections import Counter
from collections.abc import Callable, Collection
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import capturedLogs
from twisted.protocols.basic import LineReceiver
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.config import ServerConfig, parseConfigText
from dhcp6ha.control import (
    DEFAULT_LEASE_LIMIT,
    MAX_REQUEST_LENGTH,
    ControlError,
    ControlFactory,
    ControlService,
    ControlTarget,
    PeerCredentials,
    RelationshipStatus,
    leaseToJSON,
    listenControl,
    peerCredentials,
    removeStaleSocket,
)
from dhcp6ha.histogram import DurationHistogram
from dhcp6ha.interfaces import IControlTarget, ILeaseStore, IRelationshipControl
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SQLiteLeaseStore
from dhcp6ha.message import duidToText
from dhcp6ha.service import DHCPv6Service, LeaseStoreService, StartupError, makeService
from dhcp6ha.testing import MemoryLeaseStore

NOW = 1_790_000_000.0
SERVER_DUID = bytes.fromhex("000200007ed901020304")
CLIENT = bytes.fromhex("00030001020000000009")
OTHER = bytes.fromhex("00030001020000000010")

CONFIG = """\
[server]
address = ::1
port = 5547
database = leases.sqlite
{extra}

[subnet:lab]
prefix = 2001:db8:1::/64
pools = 2001:db8:1::1000-2001:db8:1::1fff
pd-pools = 2001:db8:100::/40 delegate /56
"""


FAILOVER = """
[failover:lab-pair]
role = primary
partner-address = ::1
certificate = var/pki/primary.pem
key = var/pki/primary-key.pem
ca = var/pki/ca.pem
partner-identity = secondary.dhcp6ha.test
subnets = lab
"""


def makeConfig(extra: str = "") -> ServerConfig:
    return parseConfigText(CONFIG.format(extra=extra), "test.ini")


def lease(
    address: str,
    duid: bytes = CLIENT,
    iaid: int = 1,
    length: int = 128,
    state: BindingState = BindingState.ACTIVE,
) -> Lease:
    return Lease(
        lease_type=LeaseType.NA if length == 128 else LeaseType.PD,
        address=IPv6Address(address),
        prefix_length=length,
        state=state,
        duid=duid,
        iaid=iaid,
        start_time_of_state=NOW - 100,
        cltt=NOW - 100,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=NOW + 500,
    )


class CountingClock(Clock):
    """A L{Clock} that counts the calls scheduled on it."""

    scheduled = 0

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        self.scheduled += 1
        return super().callLater(delay, callable, *args, **kw)


def part(status: dict[str, object], key: str) -> dict[str, Any]:
    """C{status[key]}, a dict."""
    value = status[key]
    assert isinstance(value, dict)
    return value


class RecordingTarget(ControlTarget):
    """A L{ControlTarget} that records the limits asked, or fails its status."""

    statusError: Exception | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: list[int] = []
        self.states: list[frozenset[BindingState] | None] = []

    def leases(
        self,
        address: IPv6Address | None,
        prefix: IPv6Network | None,
        duid: bytes | None,
        limit: int,
        states: Collection[BindingState] | None = None,
    ) -> Deferred[list[Lease]]:
        self.limits.append(limit)
        self.states.append(None if states is None else frozenset(states))
        return super().leases(address, prefix, duid, limit, states)

    def status(self) -> dict[str, object]:
        if self.statusError is not None:
            raise self.statusError
        return super().status()


class FakeHolder:
    """A L{dhcp6ha.control.StoreHolder}."""

    def __init__(self, store: ILeaseStore | None) -> None:
        self.store = store


class FakeProtocol:
    """A L{dhcp6ha.control.ProtocolView}."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter(
            received=10, sent=7, malformed=1, oversized=1, **{"no-reply": 1, "not-serving": 1}
        )
        self.serving = True
        self.responseTime = DurationHistogram()
        for seconds in (0.001, 0.002, 0.004):
            self.responseTime.record(seconds)
        self.queueWait = DurationHistogram()
        for seconds in (0.0001, 0.0003):
            self.queueWait.record(seconds)


class FakeHost:
    port = 40547


class FakePort:
    def getHost(self) -> FakeHost:
        return FakeHost()

    def stopListening(self) -> None:
        pass


class FakeServer:
    """A L{dhcp6ha.control.ServerView}."""

    def __init__(self) -> None:
        self.serverDuid: bytes | None = SERVER_DUID
        self.started: float | None = NOW - 192
        self.protocol: FakeProtocol | None = FakeProtocol()
        self.port: FakePort | None = FakePort()


@implementer(IRelationshipControl)
class FakeRelationship:
    """
    An L{IRelationshipControl}: answers from C{result} (a Deferred or a
    value) and records calls.
    """

    def __init__(self, name: str, result: object = None, broken: bool = False) -> None:
        self.name = name
        self.result = result
        self.broken = broken
        self.connected = False
        self.calls: list[str] = []

    def status(self) -> RelationshipStatus:
        if self.broken:
            raise RuntimeError("machine gone")
        return RelationshipStatus(
            name=self.name,
            role="primary",
            state="communications-interrupted",
            state_since=NOW - 600,
            partner_state="normal",
            partner_state_since=NOW - 3600,
            unacked_updates=12,
            last_contact=NOW - 601,
            clock_skew=0.25,
            connected=self.connected,
            service="responsive",
        )

    def _answer(self) -> Deferred[object]:
        if isinstance(self.result, Deferred):
            return self.result
        if isinstance(self.result, Exception):
            return fail(self.result)
        return succeed(self.result)

    def partnerDown(self) -> Deferred[object]:
        self.calls.append("partnerDown")
        return self._answer()

    def sync(self) -> Deferred[object]:
        self.calls.append("sync")
        return self._answer()


def makeTarget(
    store: ILeaseStore | None = None,
    relationships: tuple[FakeRelationship, ...] = (),
    config: ServerConfig | None = None,
    clock: Clock | None = None,
    scanBatch: int = 2,
) -> tuple[RecordingTarget, Clock, FakeHolder, FakeServer]:
    clock = clock if clock is not None else Clock()
    if clock.seconds() == 0:
        clock.advance(NOW)
    holder = FakeHolder(store if store is not None else MemoryLeaseStore())
    server = FakeServer()
    target = RecordingTarget(
        config if config is not None else makeConfig(),
        clock,
        holder,
        server,
        relationships,
        scanBatch=scanBatch,
    )
    return target, clock, holder, server


def filledStore() -> MemoryLeaseStore:
    store = MemoryLeaseStore()
    store.commit(
        [
            lease("2001:db8:1::1000"),
            lease("2001:db8:1::1001", duid=OTHER),
            lease("2001:db8:1::1002", iaid=2),
            lease("2001:db8:100::", length=56, iaid=7),
            lease("2001:db8:1::1003", duid=OTHER, state=BindingState.EXPIRED),
            lease("2001:db8:1::1004"),
        ]
    )
    return store


class StatusCostTests(TestCase):
    """A status is cheap with the real store, however many bindings it holds."""

    async def test_countsWithoutScan(self) -> None:
        """
        The leases of the status come from the store's kept counts: with
        the SQLite store, a status runs no SQL statement.
        """
        store = SQLiteLeaseStore(self.mktemp() + ".sqlite", globalReactor)
        self.addCleanup(store.close)
        await store.commit(
            [lease("2001:db8:1::1000"), lease("2001:db8:1::1001", state=BindingState.EXPIRED)]
        )
        target, _, _, _ = makeTarget(store)
        seen: list[str] = []
        reader = store._reader
        assert reader is not None
        reader.set_trace_callback(seen.append)
        self.assertEqual(target.status()["leases"], {"active": 1, "expired": 1})
        self.assertEqual(seen, [])


class ControlTargetTests(SynchronousTestCase):
    """
    L{ControlTarget} answers from the services and the relationships.
    """

    def test_interfaces(self) -> None:
        """ControlTarget and the fake relationship provide their interfaces."""
        target, _, _, _ = makeTarget()
        self.assertTrue(verifyObject(IControlTarget, target))
        self.assertTrue(verifyObject(IRelationshipControl, FakeRelationship("a")))

    def test_statusStandalone(self) -> None:
        """A standalone server: DUID, uptime, port bound, counters, leases, no relationships."""
        target, _, _, _ = makeTarget(filledStore())
        status = target.status()
        server = part(status, "server")
        self.assertEqual(status["now"], NOW)
        self.assertIsInstance(status["version"], str)
        self.assertEqual(
            server,
            {
                "duid": duidToText(SERVER_DUID),
                "duid_description": server["duid_description"],
                "started": NOW - 192,
                "uptime": 192.0,
                "address": "::1",
                "port": 40547,
                "interfaces": [],
                "serving": True,
                "config": "test.ini",
                "database": "leases.sqlite",
            },
        )
        self.assertIn("DUID-EN", server["duid_description"])
        self.assertEqual(status["datagrams"], {"received": 10, "sent": 7, "dropped": 3})
        self.assertEqual(part(status, "counters")["no-reply"], 1)
        self.assertEqual(part(status, "response_time")["count"], 3)
        self.assertEqual(part(status, "response_time")["max"], 0.004)
        self.assertEqual(
            part(status, "response_time_histogram"),
            DurationHistogram().snapshot() | {"counts": {"27": 1, "35": 1, "43": 1}},
        )
        self.assertEqual(part(status, "queue_wait")["count"], 2)
        self.assertEqual(part(status, "queue_wait")["max"], 0.0003)
        self.assertEqual(
            part(status, "queue_wait_histogram")["counts"],
            {"0": 1, "13": 1},
        )
        self.assertEqual(status["leases"], {"active": 5, "expired": 1})
        self.assertEqual(status["relationships"], [])
        json.dumps(status)

    def test_statusNotStarted(self) -> None:
        """Before the DHCPv6 service has started: no DUID, no uptime, configured port."""
        target, _, holder, server = makeTarget()
        server.serverDuid = server.started = None
        server.protocol = None
        server.port = None
        holder.store = None
        status = target.status()
        summary = part(status, "server")
        self.assertEqual(
            (summary["duid"], summary["uptime"], summary["port"], summary["serving"]),
            (None, None, 5547, False),
        )
        self.assertEqual(status["datagrams"], {"received": 0, "sent": 0, "dropped": 0})
        self.assertIsNone(status["response_time"])
        self.assertIsNone(status["response_time_histogram"])
        self.assertIsNone(status["queue_wait"])
        self.assertIsNone(status["queue_wait_histogram"])
        self.assertIsNone(status["leases"])
        self.assertEqual(status["leases_error"], "the lease database is not open")

    def test_statusCountFails(self) -> None:
        """A store that cannot count: the rest of the status is still given."""

        class Broken(MemoryLeaseStore):
            def count(self) -> dict[str, int]:
                raise OSError("disk on fire")

        target, _, _, _ = makeTarget(Broken())
        status = target.status()
        self.assertIsNone(status["leases"])
        self.assertIn("disk on fire", str(status["leases_error"]))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_statusRelationships(self) -> None:
        """Each relationship's status, by name, in the documented shape."""
        target, _, _, _ = makeTarget(relationships=(FakeRelationship("b"), FakeRelationship("a")))
        relationships = target.status()["relationships"]
        assert isinstance(relationships, list)
        self.assertEqual([r["name"] for r in relationships], ["a", "b"])
        self.assertEqual(
            relationships[0],
            {
                "name": "a",
                "role": "primary",
                "state": "communications-interrupted",
                "state_since": NOW - 600,
                "partner_state": "normal",
                "partner_state_since": NOW - 3600,
                "unacked_updates": 12,
                "last_contact": NOW - 601,
                "clock_skew": 0.25,
                "connected": False,
                "service": "responsive",
                "replication": None,
            },
        )

    def test_relationshipStatusDefaults(self) -> None:
        """Only name, role, state and state_since are required."""
        self.assertEqual(
            RelationshipStatus("x", "secondary", "recover", 5.0).asDict(),
            {
                "name": "x",
                "role": "secondary",
                "state": "recover",
                "state_since": 5.0,
                "partner_state": None,
                "partner_state_since": None,
                "unacked_updates": 0,
                "last_contact": None,
                "clock_skew": None,
                "connected": False,
                "service": None,
                "replication": None,
            },
        )

    def test_statusRelationshipFails(self) -> None:
        """A relationship whose status raises shows its error; the others are still shown."""
        target, _, _, _ = makeTarget(
            relationships=(FakeRelationship("a", broken=True), FakeRelationship("b"))
        )
        relationships = target.status()["relationships"]
        assert isinstance(relationships, list)
        self.assertEqual(relationships[0], {"name": "a", "error": "status failed: machine gone"})
        self.assertEqual(relationships[1]["name"], "b")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_addRelationship(self) -> None:
        """Relationships can be registered later; a name only once; and removed."""
        target, _, _, _ = makeTarget()
        target.addRelationship(FakeRelationship("a"))
        self.assertRaises(ValueError, target.addRelationship, FakeRelationship("a"))
        self.assertEqual(
            target.status()["relationships"], [FakeRelationship("a").status().asDict()]
        )
        target.removeRelationship("a")
        target.removeRelationship("never")
        self.assertEqual(target.status()["relationships"], [])

    def test_leasesByAddress(self) -> None:
        """By address: the /128 binding, or nothing."""
        store = filledStore()
        target, _, _, _ = makeTarget(store)
        found = self.successResultOf(target.leases(IPv6Address("2001:db8:1::1001"), None, None, 10))
        self.assertEqual(found, [store.get(IPv6Address("2001:db8:1::1001"), 128)])
        self.assertEqual(
            self.successResultOf(target.leases(IPv6Address("2001:db8:1::1"), None, None, 10)), []
        )

    def test_leasesByPrefix(self) -> None:
        """By prefix: the delegated prefix of exactly that length."""
        target, _, _, _ = makeTarget(filledStore())
        [found] = self.successResultOf(
            target.leases(None, IPv6Network("2001:db8:100::/56"), None, 10)
        )
        self.assertEqual(found.iaid, 7)
        self.assertEqual(
            self.successResultOf(target.leases(None, IPv6Network("2001:db8:100::/48"), None, 10)),
            [],
        )

    def test_leasesByDuid(self) -> None:
        """
        By DUID: every binding of the client, whatever the IAID and type,
        found by a scan that gives the reactor a turn between batches.
        """
        clock = CountingClock()
        target, _, _, _ = makeTarget(filledStore(), scanBatch=2, clock=clock)
        d = target.leases(None, None, CLIENT, 10)
        self.assertNoResult(d)
        clock.advance(0)
        found = self.successResultOf(d)
        self.assertEqual(clock.scheduled, 3)
        self.assertEqual(
            [(str(x.address), x.iaid) for x in found],
            [
                ("2001:db8:1::1000", 1),
                ("2001:db8:1::1002", 2),
                ("2001:db8:1::1004", 1),
                ("2001:db8:100::", 7),
            ],
        )

    def test_leasesAllLimited(self) -> None:
        """With no filter: every binding, in key order, at most C{limit}."""
        target, clock, _, _ = makeTarget(filledStore(), scanBatch=100)
        found = self.successResultOf(target.leases(None, None, None, 3))
        self.assertEqual(
            [str(x.address) for x in found],
            ["2001:db8:1::1000", "2001:db8:1::1001", "2001:db8:1::1002"],
        )

    def test_leasesByState(self) -> None:
        """
        Only the bindings in the states asked for: in a scan (the limit
        counting matches only), by DUID, by address and by prefix.
        """
        store = filledStore()
        backup = evolve(
            lease("2001:db8:1::1", duid=b"", iaid=0),
            state=BindingState.FREE_BACKUP,
            expires=0.0,
        )
        store.commit([backup])
        target, _, _, _ = makeTarget(store, scanBatch=100)
        active = {BindingState.ACTIVE}
        found = self.successResultOf(target.leases(None, None, None, 10, active))
        self.assertEqual(len(found), 5)
        self.assertEqual({x.state for x in found}, active)
        found = self.successResultOf(
            target.leases(None, None, None, 10, [BindingState.FREE_BACKUP, BindingState.EXPIRED])
        )
        self.assertEqual([str(x.address) for x in found], ["2001:db8:1::1", "2001:db8:1::1003"])
        found = self.successResultOf(target.leases(None, None, None, 1, active))
        self.assertEqual([str(x.address) for x in found], ["2001:db8:1::1000"])
        found = self.successResultOf(target.leases(None, None, OTHER, 10, active))
        self.assertEqual([str(x.address) for x in found], ["2001:db8:1::1001"])
        address = IPv6Address("2001:db8:1::1")
        self.assertEqual(self.successResultOf(target.leases(address, None, None, 10, active)), [])
        self.assertEqual(
            self.successResultOf(
                target.leases(address, None, None, 10, {BindingState.FREE_BACKUP})
            ),
            [backup],
        )
        prefix = IPv6Network("2001:db8:100::/56")
        self.assertEqual(
            self.successResultOf(target.leases(None, prefix, None, 10, {BindingState.FREE})), []
        )
        self.assertEqual(len(self.successResultOf(target.leases(None, prefix, None, 10, ()))), 0)
        self.assertEqual(len(self.successResultOf(target.leases(None, prefix, None, 10))), 1)

    def test_leasesStoreClosedDuringScan(self) -> None:
        """The store closes while scanning: an error, not a read of a closed store."""
        target, clock, holder, _ = makeTarget(filledStore(), scanBatch=1)
        d = target.leases(None, None, CLIENT, 10)
        holder.store = None
        clock.advance(0)
        self.assertIn("closed", str(self.failureResultOf(d, ControlError).value))

    def test_leasesStoreClosed(self) -> None:
        """No store: a clear error."""
        target, _, holder, _ = makeTarget()
        holder.store = None
        failure = self.failureResultOf(target.leases(None, None, None, 1), ControlError)
        self.assertIn("not open", str(failure.value))

    def test_partnerDownAndSync(self) -> None:
        """Forwarded to the named relationship; its result is the answer."""
        a, b = FakeRelationship("a", {"state": "partner-down"}), FakeRelationship("b", "ok")
        target, _, _, _ = makeTarget(relationships=(a, b))
        self.assertEqual(self.successResultOf(target.partnerDown("a")), {"state": "partner-down"})
        self.assertEqual(self.successResultOf(target.sync("b")), "ok")
        self.assertEqual((a.calls, b.calls), (["partnerDown"], ["sync"]))

    def test_unknownRelationship(self) -> None:
        """An unknown name: the error lists the relationships this server has."""
        target, _, _, _ = makeTarget(relationships=(FakeRelationship("b"), FakeRelationship("a")))
        for method in (target.partnerDown, target.sync):
            failure = self.failureResultOf(method("x"), ControlError)
            self.assertEqual(
                str(failure.value), "no relationship named 'x' (this server has: a, b)"
            )

    def test_noRelationship(self) -> None:
        """A standalone server says it has none."""
        target, _, _, _ = makeTarget()
        failure = self.failureResultOf(target.partnerDown("x"), ControlError)
        self.assertEqual(
            str(failure.value),
            "no relationship named 'x' (this server has none: it runs without failover)",
        )

    def test_configuredNotRunning(self) -> None:
        """A relationship of the configuration whose endpoint is not registered."""
        config = parseConfigText(CONFIG.format(extra="") + FAILOVER, "test.ini", checkFiles=False)
        target, _, _, _ = makeTarget(config=config)
        failure = self.failureResultOf(target.sync("lab-pair"), ControlError)
        self.assertIn(
            "configured in test.ini but its failover endpoint is not running", str(failure.value)
        )


class Peer:
    """A control client on a L{StringTransport}."""

    def __init__(self, factory: ControlFactory) -> None:
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def ask(self, request: object) -> None:
        self.send(json.dumps(request).encode() + b"\n")

    def responses(self) -> list[dict[str, Any]]:
        data = self.transport.value()
        self.transport.clear()
        return [json.loads(line) for line in data.splitlines()]

    def response(self) -> dict[str, Any]:
        [response] = self.responses()
        return response

    @property
    def closed(self) -> bool:
        return not self.transport.connected


class ProtocolTests(SynchronousTestCase):
    """
    L{ControlProtocol}: every command, every malformed request, ordering,
    timeouts, peers.
    """

    def setUp(self) -> None:
        self.a = FakeRelationship("a", {"state": "partner-down", "since": NOW})
        self.store = filledStore()
        self.target, self.clock, self.holder, self.server = makeTarget(
            self.store, relationships=(self.a,), scanBatch=2
        )
        self.factory = ControlFactory(self.target, self.clock, credentials=lambda t: None)
        self.peer = Peer(self.factory)

    def assertError(self, request: bytes | object, counter: str, *fragments: str) -> None:
        """C{request} gets an error response with these words; the connection stays usable."""
        if isinstance(request, bytes):
            self.peer.send(request)
        else:
            self.peer.ask(request)
        response = self.peer.response()
        self.assertEqual(response["ok"], False, response)
        for fragment in fragments:
            self.assertIn(fragment, response["error"])
        self.assertEqual(self.factory.counters[counter], 1)
        self.assertFalse(self.peer.closed)
        self.peer.ask({"command": "status"})
        self.assertEqual(self.peer.response()["ok"], True)

    def test_status(self) -> None:
        """status: the target's status plus the control channel's counters."""
        self.peer.ask({"command": "status"})
        response = self.peer.response()
        self.assertEqual(response["ok"], True)
        result = response["result"]
        self.assertEqual(result["server"]["duid"], duidToText(SERVER_DUID))
        self.assertEqual(result["relationships"][0]["name"], "a")
        self.assertEqual(result["control"]["connections"], 1)
        self.assertEqual(result["control"]["requests"], 1)
        self.assertEqual(self.factory.counters["ok"], 1)

    def test_id(self) -> None:
        """The request's id comes back, on success and on errors."""
        self.peer.ask({"command": "status", "id": 7})
        self.assertEqual(self.peer.response()["id"], 7)
        self.peer.ask({"command": "nope", "id": "x"})
        self.assertEqual(self.peer.response()["id"], "x")

    def test_crlfAndBlankLines(self) -> None:
        """A CR before the LF is ignored, blank lines are skipped."""
        self.peer.send(b'\n\r\n  \n{"command": "status"}\r\n')
        self.assertEqual(self.peer.response()["ok"], True)
        self.assertEqual(self.factory.counters["requests"], 1)

    def test_severalInOneWrite(self) -> None:
        """Requests arriving together are answered in order."""
        self.peer.send(b'{"command":"status","id":1}\n{"command":"bad","id":2}\n')
        self.assertEqual([r["id"] for r in self.peer.responses()], [1, 2])

    def test_overIOSim(self) -> None:
        """
        Over an in-memory connection (iosim): requests split across
        writes and several in one write, answered in order.
        """
        received: list[dict[str, Any]] = []

        class Client(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                received.append(json.loads(line))

        server = self.factory.buildProtocol(None)
        client = Client()
        clientTransport = iosim.makeFakeClient(client)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client, clientTransport)
        clientTransport.write(b'{"command": "sta')
        pump.flush()
        clientTransport.write(b'tus", "id": 1}\n{"command": "leases", "address": "x", "id": 2}')
        pump.flush()
        clientTransport.write(b"\n")
        pump.flush()
        self.assertEqual([(r["id"], r["ok"]) for r in received], [(1, True), (2, False)])
        clientTransport.loseConnection()
        pump.flush()
        self.assertEqual(self.factory.connections, {self.peer.protocol})

    def test_leasesByAddress(self) -> None:
        """leases by address: each binding in full, with the server's time."""
        self.peer.ask({"command": "leases", "address": "2001:db8:1::1001"})
        result = self.peer.response()["result"]
        self.assertEqual(result["now"], NOW)
        self.assertEqual(result["truncated"], False)
        self.assertEqual(result["leases"], [leaseToJSON(lease("2001:db8:1::1001", duid=OTHER))])
        self.assertEqual(result["leases"][0]["duid"], "00:03:00:01:02:00:00:00:00:10")
        self.assertEqual(result["leases"][0]["prefix"], "2001:db8:1::1001/128")

    def test_leasesByPrefix(self) -> None:
        """leases by prefix."""
        self.peer.ask({"command": "leases", "prefix": "2001:db8:100::/56"})
        [found] = self.peer.response()["result"]["leases"]
        self.assertEqual((found["lease_type"], found["prefix"]), ("pd", "2001:db8:100::/56"))

    def test_leasesByDuid(self) -> None:
        """
        leases by DUID (colon hex or plain hex): the scan runs over reactor
        turns, and meanwhile further requests wait their turn.
        """
        self.peer.ask({"command": "leases", "duid": OTHER.hex()})
        self.peer.ask({"command": "status", "id": "after"})
        self.assertEqual(self.peer.responses(), [])
        self.clock.advance(0)
        [first, second] = self.peer.responses()
        self.assertEqual(
            [x["address"] for x in first["result"]["leases"]],
            ["2001:db8:1::1001", "2001:db8:1::1003"],
        )
        self.assertEqual(second["id"], "after")

    def test_leasesTruncated(self) -> None:
        """More bindings than the limit: the first ones, and truncated."""
        self.peer.ask({"command": "leases", "limit": 2})
        self.clock.advance(0)
        result = self.peer.response()["result"]
        self.assertEqual(len(result["leases"]), 2)
        self.assertEqual(result["truncated"], True)

    def test_leasesDefaultLimit(self) -> None:
        """Without a limit, L{DEFAULT_LEASE_LIMIT}."""
        self.peer.ask({"command": "leases", "address": "2001:db8:1::1"})
        self.assertEqual(self.peer.response()["result"]["leases"], [])
        self.assertEqual(self.target.limits, [DEFAULT_LEASE_LIMIT + 1])

    def test_leasesState(self) -> None:
        """
        "state": a state name or a list of them; the target is asked for
        those states only (no "state": every state).
        """
        self.peer.ask({"command": "leases", "state": "expired"})
        self.clock.advance(0)
        result = self.peer.response()["result"]
        self.assertEqual([x["address"] for x in result["leases"]], ["2001:db8:1::1003"])
        self.peer.ask({"command": "leases", "state": ["active", "expired"], "limit": 100})
        self.clock.advance(0)
        self.assertEqual(len(self.peer.response()["result"]["leases"]), 6)
        self.peer.ask({"command": "leases", "address": "2001:db8:1::1001"})
        self.peer.response()
        self.assertEqual(
            self.target.states,
            [
                frozenset({BindingState.EXPIRED}),
                frozenset({BindingState.ACTIVE, BindingState.EXPIRED}),
                None,
            ],
        )

    def test_leasesBadArguments(self) -> None:
        """Bad leases arguments: each an error with the reason."""
        cases: list[tuple[dict[str, object], str]] = [
            ({"address": "2001:db8::zz"}, "expected an IPv6 address"),
            ({"address": 5}, "'address' must be a string, got a number"),
            ({"prefix": "2001:db8:100::1/56"}, "host bits set"),
            ({"prefix": "2001:db8:100::/129"}, "expected an IPv6 prefix"),
            ({"duid": "0x"}, "bad DUID"),
            ({"duid": ["00"]}, "'duid' must be a string, got an array"),
            ({"address": "2001:db8::1", "duid": "00:03:00:01"}, "at most one of"),
            ({"limit": 0}, "'limit' must be a whole number from 1 to 10000, got 0"),
            ({"limit": 10001}, "got 10001"),
            ({"limit": True}, "got true"),
            ({"limit": "5"}, 'got "5"'),
            ({"limit": 1.5}, "got 1.5"),
            ({"mac": "x"}, "unknown argument 'mac' for leases (its arguments: address,"),
            ({"state": "bogus"}, "unknown binding state 'bogus' (the states: active, expired,"),
            ({"state": ["active", "Active"]}, "unknown binding state 'Active'"),
            ({"state": []}, "'state' must name at least one binding state"),
            ({"state": [5]}, "'state' must be a string, got a number"),
            ({"state": {"a": 1}}, "'state' must be a string, got an object"),
        ]
        for arguments, fragment in cases:
            self.peer.ask({"command": "leases", **arguments})
            response = self.peer.response()
            self.assertEqual(response["ok"], False, arguments)
            self.assertIn(fragment, response["error"])
        self.assertEqual(self.factory.counters["bad-arguments"], len(cases))
        self.assertEqual(self.factory.counters["errors"], len(cases))
        self.assertFalse(self.peer.closed)

    def test_partnerDown(self) -> None:
        """partner-down: forwarded, logged with the peer, its outcome answered."""
        with capturedLogs() as events:
            self.peer.ask({"command": "partner-down", "relationship": "a"})
        self.assertEqual(
            self.peer.response(),
            {"ok": True, "result": {"state": "partner-down", "since": NOW}},
        )
        self.assertEqual(self.a.calls, ["partnerDown"])
        texts = [e["log_format"] for e in events]
        self.assertIn(
            "Operator command {command} for relationship {relationship} from {peer}", texts
        )
        self.assertEqual(events[0]["peer"], "an unknown peer")

    def test_sync(self) -> None:
        """sync: forwarded."""
        self.peer.ask({"command": "sync", "relationship": "a"})
        self.assertEqual(self.peer.response()["ok"], True)
        self.assertEqual(self.a.calls, ["sync"])

    def test_unknownRelationship(self) -> None:
        """An unknown relationship: the target's error, counted as a failed command."""
        self.assertError(
            {"command": "partner-down", "relationship": "x"},
            "failed",
            "no relationship named 'x' (this server has: a)",
        )
        self.assertEqual(self.a.calls, [])

    def test_relationshipArgument(self) -> None:
        """partner-down and sync need a relationship name, a string."""
        self.assertError({"command": "sync"}, "bad-arguments", "sync needs 'relationship'")
        self.peer.ask({"command": "partner-down", "relationship": 1})
        self.assertIn("'relationship' must be a string", self.peer.response()["error"])
        self.peer.ask({"command": "partner-down", "relationship": "a", "force": True})
        self.assertIn("unknown argument 'force'", self.peer.response()["error"])
        self.assertEqual(self.a.calls, [])

    def test_refused(self) -> None:
        """A relationship that refuses (ControlError): its reason is the error."""
        self.a.result = ControlError("refused in state recover")
        with capturedLogs() as events:
            self.assertError(
                {"command": "partner-down", "relationship": "a"},
                "failed",
                "refused in state recover",
            )
        [refusal] = [e for e in events if "refused" in e["log_format"]]
        self.assertEqual(refusal["error"], "refused in state recover")

    def test_internalError(self) -> None:
        """Any other failure: an internal error, logged, the connection usable."""
        self.a.result = ZeroDivisionError("oops")
        self.assertError(
            {"command": "sync", "relationship": "a"},
            "internal-error",
            "internal error in sync: oops",
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_resultNotJSON(self) -> None:
        """A result that is not JSON: an internal error, not a crash."""
        self.a.result = {"when": object()}
        self.assertError(
            {"command": "sync", "relationship": "a"},
            "internal-error",
            "internal error: the result of sync is not JSON",
        )

    def test_statusStoreError(self) -> None:
        """The target raising in status: an internal error."""
        self.target.statusError = RuntimeError("boom")
        self.peer.ask({"command": "status"})
        self.assertEqual(
            self.peer.response(), {"ok": False, "error": "internal error in status: boom"}
        )
        self.flushLoggedErrors(RuntimeError)

    def test_notUTF8(self) -> None:
        """Bytes that are not UTF-8."""
        self.assertError(b"\xff\xfe\n", "not-utf8", "not UTF-8")

    def test_notJSON(self) -> None:
        """Text that is not JSON."""
        self.assertError(b"status\n", "not-json", "request is not JSON: Expecting value")

    def test_deeplyNested(self) -> None:
        """JSON nested deeper than the parser's recursion limit."""
        self.assertError(b"[" * 60000 + b"\n", "not-json", "nested too deeply")

    def test_notObject(self) -> None:
        """JSON that is not an object."""
        self.assertError(b'["status"]\n', "not-object", "got an array")
        self.peer.send(b'"status"\n3\nnull\n')
        self.assertEqual(
            [r["error"][-8:] for r in self.peer.responses()],
            ["a string", "a number", "got null"],
        )

    def test_noCommand(self) -> None:
        """An object with no command, or a command that is not a string."""
        self.assertError({"id": 1}, "bad-arguments", "no 'command'")
        self.peer.ask({"command": ["status"]})
        self.assertIn("'command' must be a string, got an array", self.peer.response()["error"])

    def test_unknownCommand(self) -> None:
        """An unknown command: the error lists the commands."""
        self.assertError(
            {"command": "shutdown"},
            "unknown-command",
            "unknown command 'shutdown'; the commands are: status, leases, partner-down, sync",
        )

    def test_statusArguments(self) -> None:
        """status takes no argument."""
        self.assertError(
            {"command": "status", "verbose": True},
            "bad-arguments",
            "unknown argument 'verbose' for status (its arguments: none)",
        )

    def test_tooLong(self) -> None:
        """A line longer than the limit: an error, then the connection is closed."""
        self.peer.send(b" " * (MAX_REQUEST_LENGTH + 1) + b"\n")
        response = self.peer.response()
        self.assertIn("longer than 65536 bytes", response["error"])
        self.assertTrue(self.peer.closed)
        self.assertEqual(self.factory.counters["too-long"], 1)

    def test_tooLongNoNewline(self) -> None:
        """Endless data with no line end is cut off at the limit too."""
        for _ in range(5):
            self.peer.send(b"x" * 20000)
        self.assertTrue(self.peer.closed)
        self.assertEqual(self.factory.counters["too-long"], 1)

    def test_longestAllowed(self) -> None:
        """A request of exactly the limit is read."""
        request = b'{"command": "status"}'
        self.peer.send(request + b" " * (MAX_REQUEST_LENGTH - len(request)) + b"\n")
        self.assertEqual(self.peer.response()["ok"], True)

    def test_inOrderWhileWaiting(self) -> None:
        """
        While partner-down waits, further requests wait too; answers come
        back in the order asked.
        """
        pending: Deferred[object] = Deferred()
        self.a.result = pending
        self.peer.ask({"command": "partner-down", "relationship": "a", "id": 1})
        self.peer.ask({"command": "status", "id": 2})
        self.peer.ask({"command": "status", "id": 3})
        self.assertEqual(self.peer.responses(), [])
        self.assertEqual(self.transportState(), "paused")
        pending.callback("done")
        self.assertEqual([r["id"] for r in self.peer.responses()], [1, 2, 3])
        self.assertEqual(self.transportState(), "producing")

    def transportState(self) -> str:
        return str(self.peer.transport.producerState)

    def test_partnerDownNotCancelled(self) -> None:
        """A client that goes away does not cancel a partner-down in progress."""
        pending: Deferred[object] = Deferred()
        self.a.result = pending
        self.peer.ask({"command": "partner-down", "relationship": "a"})
        self.peer.protocol.connectionLost(None)
        self.assertNoResult(pending)
        with capturedLogs() as events:
            pending.callback("done")
        self.assertEqual(events[-1]["outcome"], "done")
        self.assertEqual(self.peer.transport.value(), b"")

    def test_scanCancelled(self) -> None:
        """A client that goes away cancels its lease scan."""
        self.peer.ask({"command": "leases", "duid": duidToText(CLIENT)})
        self.peer.protocol.connectionLost(None)
        self.clock.advance(0)
        self.assertEqual(self.factory.counters["cancelled"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleTimeout(self) -> None:
        """A silent connection is closed after the idle timeout, counted."""
        self.clock.advance(299)
        self.peer.ask({"command": "status"})
        self.clock.advance(299)
        self.assertFalse(self.peer.closed)
        self.clock.advance(1)
        self.assertTrue(self.peer.closed)
        self.assertEqual(self.factory.counters["idle-timeout"], 1)

    def test_noTimeoutWhileWaiting(self) -> None:
        """No idle timeout while a command is being carried out."""
        pending: Deferred[object] = Deferred()
        self.a.result = pending
        self.peer.ask({"command": "sync", "relationship": "a"})
        self.clock.advance(1000)
        self.assertFalse(self.peer.closed)
        pending.callback(None)
        self.assertEqual(self.peer.response(), {"ok": True, "result": None})
        self.clock.advance(300)
        self.assertTrue(self.peer.closed)

    def test_noTimerAfterClose(self) -> None:
        """A closed connection leaves no timer behind."""
        self.peer.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_peerRefused(self) -> None:
        """A peer of another uid (SO_PEERCRED) is refused at once."""
        factory = ControlFactory(
            self.target,
            self.clock,
            credentials=lambda t: PeerCredentials(4321, 1234, 1234),
            allowedUids={0, 1000},
        )
        with capturedLogs() as events:
            peer = Peer(factory)
        self.assertEqual(
            peer.response(),
            {
                "ok": False,
                "error": "permission denied: this control socket is for the server's user only",
            },
        )
        self.assertTrue(peer.closed)
        self.assertEqual(factory.counters["refused-peer"], 1)
        self.assertEqual(events[0]["peer"], "uid 1234 pid 4321")
        self.assertEqual(factory.connections, set())

    def test_peerAllowed(self) -> None:
        """A peer of an allowed uid is served and named in operator logs."""
        factory = ControlFactory(
            self.target,
            self.clock,
            credentials=lambda t: PeerCredentials(99, 1000, 1000),
            allowedUids={1000},
        )
        peer = Peer(factory)
        with capturedLogs() as events:
            peer.ask({"command": "sync", "relationship": "a"})
        self.assertEqual(peer.response()["ok"], True)
        self.assertEqual(events[0]["peer"], "uid 1000 pid 99")

    def test_defaultAllowedUids(self) -> None:
        """By default root and this process's user may connect."""
        factory = ControlFactory(self.target, self.clock)
        self.assertEqual(factory.allowedUids, frozenset({0, os.geteuid()}))

    def test_tooManyConnections(self) -> None:
        """Beyond the limit, a connection is answered with an error and closed."""
        factory = ControlFactory(
            self.target, self.clock, credentials=lambda t: None, maxConnections=2
        )
        first, second = Peer(factory), Peer(factory)
        third = Peer(factory)
        self.assertIn("too many control connections", third.response()["error"])
        self.assertTrue(third.closed)
        self.assertFalse(first.closed or second.closed)
        first.protocol.connectionLost(None)
        fourth = Peer(factory)
        self.assertFalse(fourth.closed)

    def test_disconnectAll(self) -> None:
        """disconnectAll closes every open connection, and says when they are gone."""
        other = Peer(self.factory)
        self.successResultOf(self.factory.disconnectAll())
        self.assertTrue(self.peer.closed and other.closed)
        self.assertTrue(self.peer.transport.disconnected)
        self.assertEqual(self.factory.connections, set())
        self.successResultOf(self.factory.disconnectAll())

    def test_disconnectAllWaits(self) -> None:
        """disconnectAll fires only once every connection has gone."""
        transport = StringTransport()
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        d = self.factory.disconnectAll()
        self.assertTrue(self.peer.closed)
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        protocol.connectionLost(None)
        self.successResultOf(d)

    def test_peerCredentialsUnknown(self) -> None:
        """A transport with no socket: no credentials."""
        self.assertIsNone(peerCredentials(StringTransport()))


class SocketTests(TestCase):
    """
    The control socket on a real UNIX socket in a temporary directory.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "s.ctl")
        self.target, _, _, _ = makeTarget()

    def service(self, **kwargs: Any) -> ControlService:
        service = ControlService(self.path, self.target, globalReactor, **kwargs)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    def staleSocket(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.close()

    async def test_modeAndCleanStop(self) -> None:
        """
        The socket is created with mode 0600 and answers; stopping removes
        it and closes open connections.
        """
        service = self.service()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)
        self.assertFalse(os.path.exists(self.path + ".lock"))
        response = await self.ask({"command": "status"})
        self.assertEqual(response["result"]["server"]["port"], 40547)
        await service.stopService()
        self.assertFalse(os.path.exists(self.path))

    async def ask(self, request: object) -> dict[str, Any]:
        from twisted.internet.threads import deferToThread

        def blocking() -> dict[str, Any]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(self.path)
                s.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            result: dict[str, Any] = json.loads(data)
            return result

        return await deferToThread(blocking)

    async def test_peerCredentials(self) -> None:
        """On Linux, the connecting process's uid is read from the socket."""
        if not hasattr(socket, "SO_PEERCRED"):
            raise self.skipTest("no SO_PEERCRED on this platform")
        seen: list[PeerCredentials | None] = []

        def credentials(transport: Any) -> PeerCredentials | None:
            found = peerCredentials(transport)
            seen.append(found)
            return found

        self.service(factoryOptions={"credentials": credentials})
        response = await self.ask({"command": "status"})
        self.assertEqual(response["ok"], True)
        [found] = seen
        assert found is not None
        self.assertEqual((found.uid, found.pid), (os.geteuid(), os.getpid()))

    def test_staleSocketRemoved(self) -> None:
        """A socket file nothing listens on (a killed server's) is replaced."""
        self.staleSocket()
        with capturedLogs() as events:
            self.service()
        self.assertIn("Removed a stale control socket {path}", [e["log_format"] for e in events])
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)

    def test_removeStaleSocket(self) -> None:
        """removeStaleSocket: nothing there, or a stale socket removed."""
        self.assertFalse(removeStaleSocket(self.path))
        self.staleSocket()
        self.assertTrue(removeStaleSocket(self.path))
        self.assertFalse(os.path.exists(self.path))

    def test_liveSocketKept(self) -> None:
        """A socket another process listens on is left alone: the server does not start."""
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind(self.path)
        other.listen(1)
        error = self.assertRaises(StartupError, self.service)
        self.assertIn("another process already listens on", str(error))
        self.assertTrue(os.path.exists(self.path))

    def test_notASocket(self) -> None:
        """A regular file at the path is never removed."""
        with open(self.path, "w") as f:
            f.write("precious")
        error = self.assertRaises(StartupError, self.service)
        self.assertIn("exists and is not a socket", str(error))
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_noDirectory(self) -> None:
        """A missing directory: a start-up error naming the path."""
        self.path = os.path.join(self.directory, "missing", "s.ctl")
        error = self.assertRaises(StartupError, self.service)
        self.assertEqual(
            str(error),
            f"cannot listen on the control socket {self.path}: No such file or directory",
        )

    def test_listenControl(self) -> None:
        """listenControl binds with mode 0600 even under a permissive umask."""
        old = os.umask(0)
        try:
            port = listenControl(globalReactor, self.path, ControlFactory(self.target, Clock()))
        finally:
            os.umask(old)
        self.addCleanup(port.stopListening)
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)


class MakeServiceTests(SynchronousTestCase):
    """
    makeService adds the control socket when configured, last, on the
    real services.
    """

    def test_withoutControlSocket(self) -> None:
        """No control-socket: no control child."""
        service = makeService(makeConfig(), Clock())
        self.assertEqual([s.name for s in service], ["leases", "dhcpv6"])
        self.assertIsInstance(service.controlTarget, ControlTarget)

    def test_withControlSocket(self) -> None:
        """control-socket: a third child, started last, stopped first."""
        service = makeService(makeConfig("control-socket = var/x.ctl"), Clock())
        self.assertEqual([s.name for s in service], ["leases", "dhcpv6", "control"])
        control = service.getServiceNamed("control")
        assert isinstance(control, ControlService)
        self.assertEqual(control.path, "var/x.ctl")
        self.assertIs(control.target, service.controlTarget)

    def test_targetOnRealServices(self) -> None:
        """The target reads the real DHCPv6 service: DUID, start time, port, counters."""
        clock = Clock()
        clock.advance(NOW)
        config = makeConfig("duid = " + duidToText(SERVER_DUID))
        store = MemoryLeaseStore()
        leases = LeaseStoreService(lambda: store, "memory")

        def listen(reactor: object, port: int, protocol: object, address: str) -> Any:
            return FakePort()

        dhcpv6 = DHCPv6Service(config, clock, leases, listen=listen, linkLayerAddress=lambda: None)
        target = ControlTarget(config, clock, leases, dhcpv6)
        leases.startService()
        dhcpv6.startService()
        clock.advance(60)
        assert dhcpv6.protocol is not None
        dhcpv6.protocol.counters["received"] += 3
        server = target.status()["server"]
        assert isinstance(server, dict)
        self.assertEqual(
            (
                server["duid"],
                server["started"],
                server["uptime"],
                server["port"],
                server["serving"],
            ),
            (duidToText(SERVER_DUID), NOW, 60.0, 40547, True),
        )
        self.assertEqual(target.status()["datagrams"], {"received": 3, "sent": 0, "dropped": 0})
        dhcpv6.stopService()
