"""
Tests for L{dhcp6ha.service}: building, starting and stopping the server.

Most tests run on fakes and a L{Clock} (or a L{MemoryReactorClock} for the
failover wiring).  L{RealReactorTests} runs the real service (SQLite store,
UDP on ::1, port 0) through a few exchanges and a restart, and
L{FailoverPairTests} runs two whole servers, primary and secondary, as a
failover pair over real TLS on ::1, in this process; both are bounded by a
timeout.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from typing import Any, cast
from uuid import UUID

from attrs import evolve
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dhcp6ha.allocation import StandalonePolicy
from dhcp6ha.config import ServerConfig, parseConfigText
from dhcp6ha.engine import Engine
from dhcp6ha.failover.machine import Role
from dhcp6ha.failover.relationship import FailoverRelationship
from dhcp6ha.failover.tls import TLSMaterialError
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.leases.sqlite import SQLiteLeaseStore
from dhcp6ha.message import (
    IANA,
    ClientId,
    ElapsedTime,
    IAAddress,
    Message,
    MessageType,
    RelayMessage,
    RelayMessageOption,
    ServerId,
    decode,
    duidLLT,
    duidTime,
    duidToText,
    encode,
    getOption,
)
from dhcp6ha.server import DHCPv6Port, DHCPv6ServerProtocol
from dhcp6ha.service import (
    SERVER_DUID_KEY,
    DHCPv6Service,
    LeaseStoreService,
    ServerService,
    StartupError,
    failoverPolicies,
    findLinkLayerAddress,
    loadServerDuid,
    loadTLSMaterial,
    makeService,
    replicationClassifier,
)
from dhcp6ha.testing import MemoryLeaseStore
from tests.certs import CertificateAuthority, writeFiles

CONFIG = """\
[server]
address = ::1
port = 5547
database = {database}
{extra}

[subnet:lab]
prefix = 2001:db8:1::/64
pools = 2001:db8:1::1000-2001:db8:1::1fff
{subnet}
"""

MAC = bytes.fromhex("020000000001")
CLIENT_DUID = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x09"
LINK = IPv6Address("2001:db8:1::1")


def makeConfig(database: str = "leases.sqlite", extra: str = "", subnet: str = "") -> ServerConfig:
    return parseConfigText(CONFIG.format(database=database, extra=extra, subnet=subnet), "test.ini")


class PendingMetadataStore(MemoryLeaseStore):
    """A store whose C{setMetadata} stays pending until L{finish}."""

    def __init__(self) -> None:
        super().__init__()
        self.metadataWaiting: list[Deferred[None]] = []

    def setMetadata(self, key: str, value: str) -> Deferred[None]:
        super().setMetadata(key, value)
        d: Deferred[None] = Deferred()
        self.metadataWaiting.append(d)
        return d


class ServerDuidTests(SynchronousTestCase):
    """L{loadServerDuid}: configured, stored, or new and stored."""

    def test_configured(self) -> None:
        """A configured DUID wins and nothing is stored."""
        config = makeConfig(extra="duid = 00:03:00:01:02:00:00:00:00:aa")
        store = MemoryLeaseStore()
        store.setMetadata(SERVER_DUID_KEY, "00:03:00:01:02:00:00:00:00:bb")
        duid, storing = loadServerDuid(config, store, 1e9, lambda: MAC)
        self.assertEqual(duid, bytes.fromhex("000300010200000000aa"))
        self.assertIsNone(storing)

    def test_stored(self) -> None:
        """Without a configured DUID, the stored one is used."""
        store = MemoryLeaseStore()
        store.setMetadata(SERVER_DUID_KEY, "00:03:00:01:02:00:00:00:00:bb")
        duid, storing = loadServerDuid(makeConfig(), store, 1e9, lambda: MAC)
        self.assertEqual(duid, bytes.fromhex("000300010200000000bb"))
        self.assertIsNone(storing)

    def test_newLLT(self) -> None:
        """
        With none stored, a DUID-LLT from the machine's MAC and the time is
        made and stored.
        """
        store = MemoryLeaseStore()
        duid, storing = loadServerDuid(makeConfig(), store, 1e9, lambda: MAC)
        self.assertEqual(duid, duidLLT(1, duidTime(1e9), MAC))
        assert storing is not None
        self.successResultOf(storing)
        self.assertEqual(store.getMetadata(SERVER_DUID_KEY), duidToText(duid))

    def test_newUUID(self) -> None:
        """With no MAC to be found, a DUID-UUID is made and stored."""
        store = MemoryLeaseStore()
        duid, storing = loadServerDuid(makeConfig(), store, 1e9, lambda: None)
        self.assertEqual(duid[:2], b"\x00\x04")
        self.assertEqual(UUID(bytes=duid[2:]).version, 4)
        self.assertEqual(store.getMetadata(SERVER_DUID_KEY), duidToText(duid))

    def test_invalidStored(self) -> None:
        """A stored DUID that cannot be read stops the start with a clear error."""
        store = MemoryLeaseStore()
        store.setMetadata(SERVER_DUID_KEY, "zz")
        error = self.assertRaises(
            StartupError, loadServerDuid, makeConfig(), store, 1e9, lambda: MAC
        )
        self.assertIn("stored server DUID is invalid", str(error))
        self.assertIn("test.ini", str(error))


class LinkLayerAddressTests(SynchronousTestCase):
    """L{findLinkLayerAddress} reads Ethernet MACs from sysfs."""

    def makeSysfs(self, interfaces: dict[str, tuple[str, str]]) -> str:
        root = self.mktemp()
        for name, (kind, address) in interfaces.items():
            os.makedirs(os.path.join(root, name))
            with open(os.path.join(root, name, "type"), "w") as f:
                f.write(kind + "\n")
            with open(os.path.join(root, name, "address"), "w") as f:
                f.write(address + "\n")
        return root

    def test_firstEthernetByName(self) -> None:
        """Loopback and all-zero addresses are skipped; names are sorted."""
        root = self.makeSysfs(
            {
                "lo": ("772", "00:00:00:00:00:00"),
                "eth1": ("1", "02:00:00:00:00:02"),
                "eth0": ("1", "02:00:00:00:00:01"),
                "dummy": ("1", "00:00:00:00:00:00"),
            }
        )
        self.assertEqual(findLinkLayerAddress((), root), bytes.fromhex("020000000001"))

    def test_preferred(self) -> None:
        """The configured interfaces are tried first."""
        root = self.makeSysfs(
            {"eth0": ("1", "02:00:00:00:00:01"), "eth1": ("1", "02:00:00:00:00:02")}
        )
        self.assertEqual(findLinkLayerAddress(("eth1",), root), bytes.fromhex("020000000002"))

    def test_none(self) -> None:
        """No sysfs, or no Ethernet interface: C{None}."""
        self.assertIsNone(findLinkLayerAddress((), self.mktemp()))
        root = self.makeSysfs({"lo": ("772", "00:00:00:00:00:00")})
        self.assertIsNone(findLinkLayerAddress((), root))


class FakePort:
    """Stands for a L{DHCPv6Port}: records joins and stopping."""

    def __init__(self, protocol: DHCPv6ServerProtocol, events: list[object]) -> None:
        self.protocol = protocol
        self.events = events
        self.joinError: OSError | None = None
        self.stopped = False

    def joinGroupOn(self, group: str, interface: str) -> None:
        if self.joinError is not None:
            raise self.joinError
        self.events.append(("join", group, interface))

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        self.events.append("port stopped")
        return succeed(None)

    def getHost(self) -> Any:
        class Host:
            port = 5547

        return Host()


class RecordingStore(MemoryLeaseStore):
    """Records when it is closed, and each failover state it stores."""

    def __init__(
        self,
        events: list[object],
        autoFlush: bool = True,
        replicate: Callable[[Lease], str | None] | None = None,
    ) -> None:
        super().__init__(autoFlush, replicate=replicate)
        self.events = events
        self.replicate = replicate

    def setMetadata(self, key: str, value: str) -> Deferred[None]:
        if key.startswith("failover.") and key.endswith(".state"):
            self.events.append(("failover state stored", json.loads(value)["state"]))
        return super().setMetadata(key, value)

    def close(self) -> Deferred[None]:
        self.events.append("store closed")
        return super().close()


class DHCPv6ServiceTests(SynchronousTestCase):
    """The service wiring, on a L{Clock}, a memory store and a fake port."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1e9)
        self.events: list[object] = []
        self.store = RecordingStore(self.events)
        self.listened: list[tuple[Any, int, DHCPv6ServerProtocol, str]] = []
        self.ports: list[FakePort] = []
        self.listenError: Exception | None = None
        self.joinError: OSError | None = None

    def listen(
        self, reactor: Any, port: int, protocol: DHCPv6ServerProtocol, address: str
    ) -> DHCPv6Port:
        if self.listenError is not None:
            raise self.listenError
        self.listened.append((reactor, port, protocol, address))
        fake = FakePort(protocol, self.events)
        fake.joinError = self.joinError
        self.ports.append(fake)
        return fake  # type: ignore[return-value]

    def build(self, config: ServerConfig | None = None) -> tuple[ServerService, DHCPv6Service]:
        config = config or makeConfig()
        top = ServerService()
        leases = LeaseStoreService(lambda: self.store, "test store")
        leases.setName("leases")
        leases.setServiceParent(top)
        dhcpv6 = DHCPv6Service(
            config, self.clock, leases, listen=self.listen, linkLayerAddress=lambda: MAC
        )
        dhcpv6.setName("dhcpv6")
        dhcpv6.setServiceParent(top)
        return top, dhcpv6

    def test_start(self) -> None:
        """
        Starting binds the configured address and port and starts serving
        once the new DUID is stored.
        """
        top, dhcpv6 = self.build()
        top.startService()
        self.assertTrue(dhcpv6.running)
        [(reactor, port, protocol, address)] = self.listened
        self.assertIs(reactor, self.clock)
        self.assertEqual((port, address), (5547, "::1"))
        self.assertIs(dhcpv6.protocol, protocol)
        self.assertTrue(protocol.serving)
        self.assertEqual(dhcpv6.serverDuid, duidLLT(1, duidTime(1e9), MAC))

    def test_joinsGroups(self) -> None:
        """ff02::1:2 is joined on each configured interface."""
        config = makeConfig(
            extra="interfaces = eth0, eth1",
            subnet="interface = eth0\n[subnet:other]\nprefix = 2001:db8:2::/64\ninterface = eth1",
        )
        config = evolve(config, server=evolve(config.server, address=IPv6Address("::")))
        top, _ = self.build(config)
        top.startService()
        self.assertEqual(
            self.events, [("join", "ff02::1:2", "eth0"), ("join", "ff02::1:2", "eth1")]
        )

    def test_joinFailure(self) -> None:
        """
        A group that cannot be joined stops the start with an error naming
        the interface; the port is closed again and the store too.
        """
        config = makeConfig(extra="interfaces = eth0", subnet="interface = eth0")
        self.joinError = OSError(19, "No such device")
        top, _ = self.build(config)
        error = self.assertRaises(StartupError, top.startService)
        self.assertEqual(
            str(error),
            "test.ini: [server] interfaces: cannot join ff02::1:2 on eth0: No such device",
        )
        self.assertTrue(self.ports[0].stopped)
        self.assertEqual(self.events, ["port stopped", "store closed"])
        self.assertFalse(top.running)

    def test_listenFailure(self) -> None:
        """A port that cannot be bound stops the start with a clear error."""
        self.listenError = OSError(98, "Address already in use")
        top, _ = self.build()
        error = self.assertRaises(StartupError, top.startService)
        self.assertIn("cannot listen on [::1]:5547", str(error))
        self.assertEqual(self.events, ["store closed"])

    def test_storeFailure(self) -> None:
        """A store that cannot be opened stops the start with a clear error."""
        top = ServerService()

        def broken() -> MemoryLeaseStore:
            raise OSError(13, "Permission denied")

        LeaseStoreService(broken, "var/x.sqlite").setServiceParent(top)
        error = self.assertRaises(StartupError, top.startService)
        self.assertIn("cannot open the lease database var/x.sqlite", str(error))

    def test_exitOnStartupError(self) -> None:
        """
        With C{exitOnStartupError} (twistd), a start-up error is logged as
        critical and becomes C{SystemExit(1)}.
        """
        self.listenError = OSError(98, "Address already in use")
        top, _ = self.build()
        top.exitOnStartupError = True
        with capturedLogs() as events:
            error = self.assertRaises(SystemExit, top.startService)
        self.assertEqual(error.code, 1)
        [critical] = [e for e in events if e["log_level"] is LogLevel.critical]
        self.assertIn("cannot listen on [::1]:5547", critical["error"])

    def test_onStarted(self) -> None:
        """C{onStarted} is called once every child has started, not on an error."""
        calls: list[bool] = []
        top, dhcpv6 = self.build()
        top.onStarted = lambda: calls.append(dhcpv6.running)
        top.startService()
        self.assertEqual(calls, [True])
        self.listenError = OSError(98, "Address already in use")
        failing, _ = self.build()
        failing.onStarted = lambda: calls.append(False)
        self.assertRaises(StartupError, failing.startService)
        self.assertEqual(calls, [True])

    def test_notServingUntilDuidDurable(self) -> None:
        """A new DUID must be durable before any client is answered."""
        self.store = PendingMetadataStore()  # type: ignore[assignment]
        top, dhcpv6 = self.build()
        top.startService()
        assert dhcpv6.protocol is not None
        self.assertFalse(dhcpv6.protocol.serving)
        self.store.metadataWaiting[0].callback(None)  # type: ignore[attr-defined]
        self.assertTrue(dhcpv6.protocol.serving)

    def test_duidNotStored(self) -> None:
        """If the new DUID cannot be stored, the server never answers."""
        self.store = PendingMetadataStore()  # type: ignore[assignment]
        top, dhcpv6 = self.build()
        top.startService()
        self.store.metadataWaiting[0].errback(OSError("disk"))  # type: ignore[attr-defined]
        assert dhcpv6.protocol is not None
        self.assertFalse(dhcpv6.protocol.serving)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_duidKeptAcrossRestarts(self) -> None:
        """A restart on the same store keeps the DUID."""
        top, dhcpv6 = self.build()
        top.startService()
        first = dhcpv6.serverDuid
        self.successResultOf(top.stopService())
        self.clock.advance(3600)
        top2, dhcpv62 = self.build()
        top2.startService()
        self.assertEqual(dhcpv62.serverDuid, first)

    def test_stopOrder(self) -> None:
        """
        Stopping waits for the commits in flight and sends their replies,
        then closes the port, and only then closes the store.
        """
        self.store = RecordingStore(self.events, autoFlush=False)
        top, dhcpv6 = self.build()
        top.startService()
        protocol = dhcpv6.protocol
        assert protocol is not None
        transport = _Transport(self.events)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        request = Message(
            MessageType.REQUEST,
            1,
            (
                ClientId(CLIENT_DUID),
                ServerId(dhcpv6.serverDuid or b""),
                ElapsedTime(0),
                IANA(1, 0, 0),
            ),
        )
        relayed = RelayMessage(
            MessageType.RELAY_FORW, 0, LINK, IPv6Address("fe80::9"), (RelayMessageOption(request),)
        )
        protocol.datagramReceived(encode(relayed), ("2001:db8:1::1", 547))
        self.assertEqual(len(self.store.committed), 1)
        stopped = top.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(self.events, [])
        self.store.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.events, ["sent", "port stopped", "store closed"])
        self.assertTrue(self.store.closed)

    def test_reclaimsOnTimer(self) -> None:
        """Expired bindings are reclaimed every reclaim-interval."""
        config = makeConfig(extra="reclaim-interval = 5")
        top, dhcpv6 = self.build(config)
        lease = Lease(
            lease_type=LeaseType.NA,
            address=IPv6Address("2001:db8:1::1000"),
            prefix_length=128,
            state=BindingState.ACTIVE,
            duid=CLIENT_DUID,
            iaid=1,
            start_time_of_state=1e9,
            cltt=1e9,
            preferred_lifetime=3,
            valid_lifetime=4,
            expires=1e9 + 4,
        )
        self.store.commit([lease])
        top.startService()
        self.assertEqual(self.store.get(lease.address, 128), lease)
        self.clock.advance(5)
        reclaimed = self.store.get(lease.address, 128)
        assert reclaimed is not None
        self.assertEqual(reclaimed.state, BindingState.EXPIRED)
        self.successResultOf(top.stopService())


class _Transport:
    def __init__(self, events: list[object]) -> None:
        self.events = events

    def write(self, packet: bytes, addr: Any = None) -> None:
        self.events.append("sent")


class MakeServiceTests(SynchronousTestCase):
    """L{makeService} builds the service tree without starting anything."""

    def test_children(self) -> None:
        """The store comes first, the DHCPv6 service second."""
        top = makeService(makeConfig(database=self.mktemp()), Clock())
        self.assertIsInstance(top, ServerService)
        self.assertEqual([s.name for s in top], ["leases", "dhcpv6"])
        self.assertFalse(top.exitOnStartupError)
        self.assertIsNone(top.onStarted)


class _Client(DatagramProtocol):
    """Collects answers in C{self.answers}, firing C{self.waiting}."""

    def __init__(self) -> None:
        self.waiting: Deferred[Message | RelayMessage] | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(decode(datagram))


async def relayedExchange(port: int, message: Message, link: IPv6Address = LINK) -> Message:
    """
    Send C{message} relayed from C{link} to the server on [::1]:C{port},
    retransmitting every 0.2 s like a client, and return the first answer.
    """
    client = _Client()
    listening = globalReactor.listenUDP(0, client, interface="::1")  # type: ignore[attr-defined]
    try:
        relayed = RelayMessage(
            MessageType.RELAY_FORW,
            0,
            link,
            IPv6Address("fe80::9"),
            (RelayMessageOption(message),),
        )
        client.waiting = Deferred()
        waiting = client.waiting
        # Retransmit like a client: the first ones may come before the
        # server answers (its new DUID not yet durable).
        sender = LoopingCall(listening.write, encode(relayed), ("::1", port))
        sender.clock = globalReactor
        sender.start(0.2)
        try:
            answer = await waiting
        finally:
            sender.stop()
    finally:
        await listening.stopListening()
    assert isinstance(answer, RelayMessage)
    relayedAnswer = getOption(answer.options, RelayMessageOption)
    assert relayedAnswer is not None
    assert isinstance(relayedAnswer.message, Message)
    return relayedAnswer.message


def skipWithoutIPv6Loopback(case: SynchronousTestCase) -> None:
    """Skip C{case} when ::1 cannot be bound."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        raise case.skipTest(f"no IPv6 loopback: {e}") from None


class RealReactorTests(TestCase):
    """
    The real service, started and stopped on the global reactor, with an
    SQLite database in a temporary directory and UDP on ::1, port 0.
    """

    timeout = 30

    def setUp(self) -> None:
        skipWithoutIPv6Loopback(self)
        directory = self.mktemp()
        os.makedirs(directory)
        self.database = os.path.join(directory, "leases.sqlite")
        config = makeConfig(database=self.database)
        self.config = evolve(config, server=evolve(config.server, port=0))

    async def exchange(self, port: int, message: Message) -> Message:
        return await relayedExchange(port, message)

    async def test_serveRestartServe(self) -> None:
        """
        A client gets an address through a relay; after a clean stop the
        lease is in the database, and a restart keeps the server DUID.
        """
        top = makeService(self.config, globalReactor)
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        dhcpv6 = top.getServiceNamed("dhcpv6")
        port = dhcpv6.port.getHost().port
        solicit = Message(
            MessageType.SOLICIT, 1, (ClientId(CLIENT_DUID), ElapsedTime(0), IANA(1, 0, 0))
        )
        advertise = await self.exchange(port, solicit)
        self.assertEqual(advertise.msg_type, MessageType.ADVERTISE)
        serverId = getOption(advertise.options, ServerId)
        assert serverId is not None
        self.assertEqual(serverId.duid, dhcpv6.serverDuid)
        ia = getOption(advertise.options, IANA)
        assert ia is not None
        offered = getOption(ia.options, IAAddress)
        assert offered is not None

        request = Message(
            MessageType.REQUEST,
            2,
            (ClientId(CLIENT_DUID), serverId, ElapsedTime(0), IANA(1, 0, 0, (offered,))),
        )
        reply = await self.exchange(port, request)
        self.assertEqual(reply.msg_type, MessageType.REPLY)
        await top.stopService()

        store = SQLiteLeaseStore(self.database, globalReactor)
        try:
            lease = store.get(offered.address, 128)
            assert lease is not None
            self.assertEqual(lease.state, BindingState.ACTIVE)
            self.assertEqual(lease.duid, CLIENT_DUID)
            self.assertEqual(store.getMetadata(SERVER_DUID_KEY), duidToText(serverId.duid))
        finally:
            await store.close()

        again = makeService(self.config, globalReactor)
        again.startService()
        try:
            self.assertEqual(again.getServiceNamed("dhcpv6").serverDuid, serverId.duid)
            port = again.getServiceNamed("dhcpv6").port.getHost().port
            renewed = await self.exchange(
                port,
                Message(
                    MessageType.RENEW,
                    3,
                    (ClientId(CLIENT_DUID), serverId, ElapsedTime(0), IANA(1, 0, 0, (offered,))),
                ),
            )
            self.assertEqual(renewed.msg_type, MessageType.REPLY)
        finally:
            await again.stopService()


# --- failover wiring --------------------------------------------------------------------

PAIR = "lab-pair"
PRIMARY_NAME = "primary.dhcp6ha.test"
SECONDARY_NAME = "secondary.dhcp6ha.test"
LAB_LINK = IPv6Address("2001:db8:1::1")
ALONE_LINK = IPv6Address("2001:db8:2::1")

FAILOVER_CONFIG = """\
[server]
address = ::1
port = 5547
database = {database}
{extra}

[subnet:lab]
prefix = 2001:db8:1::/64
pools = 2001:db8:1::1000-2001:db8:1::1fff
{pdPools}

[subnet:alone]
prefix = 2001:db8:2::/64
pools = 2001:db8:2::1000-2001:db8:2::1fff

[failover:lab-pair]
role = {role}
{roleKeys}
certificate = {certificate}
key = {key}
ca = {ca}
partner-identity = {identity}
subnets = lab
mclt = 300
heartbeat-interval = {heartbeat}
unreachable-after = {unreachable}
idle-timeout = {idle}
"""


def writePairCertificates(directory: str) -> dict[str, str]:
    """
    A CA and the pair's certificates in C{directory}, as C{make pki} names
    them: C{ca.pem}, C{primary.pem}, C{primary-key.pem}, C{secondary.pem},
    C{secondary-key.pem}.

    @return: file name to path.
    """
    ca = CertificateAuthority("pair CA")
    primary = ca.issue("primary", dns=[PRIMARY_NAME])
    secondary = ca.issue("secondary", dns=[SECONDARY_NAME])
    return writeFiles(
        directory,
        {
            "ca.pem": ca.pem,
            "primary.pem": primary.certPEM,
            "primary-key.pem": primary.keyPEM,
            "secondary.pem": secondary.certPEM,
            "secondary-key.pem": secondary.keyPEM,
        },
    )


def failoverConfigText(
    pki: dict[str, str],
    role: str,
    database: str,
    extra: str = "",
    heartbeat: float = 10,
    unreachable: float = 30,
    pdPools: str = "2001:db8:100::/40 delegate /56",
) -> str:
    """The text of one member's configuration (the partner port is 6647)."""
    if role == "primary":
        roleKeys = "partner-address = ::1\npartner-port = 6647"
        identity = SECONDARY_NAME
    else:
        roleKeys = "listen-address = ::1\nlisten-port = 6647\npartner-address = ::1"
        identity = PRIMARY_NAME
    return FAILOVER_CONFIG.format(
        database=database,
        extra=extra,
        role=role,
        roleKeys=roleKeys,
        certificate=pki[role + ".pem"],
        key=pki[role + "-key.pem"],
        ca=pki["ca.pem"],
        identity=identity,
        heartbeat=heartbeat,
        unreachable=unreachable,
        idle=max(60, unreachable),
        pdPools="pd-pools = " + pdPools if pdPools else "",
    )


def addressLease(address: str) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(address),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=CLIENT_DUID,
        iaid=1,
        start_time_of_state=1e9,
        cltt=1e9,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=1e9 + 600,
    )


def relayedRequest(link: IPv6Address, serverDuid: bytes, iaid: int = 1) -> bytes:
    request = Message(
        MessageType.REQUEST,
        iaid,
        (ClientId(CLIENT_DUID), ServerId(serverDuid), ElapsedTime(0), IANA(iaid, 0, 0)),
    )
    return encode(
        RelayMessage(
            MessageType.RELAY_FORW, 0, link, IPv6Address("fe80::9"), (RelayMessageOption(request),)
        )
    )


class PortsInUseReactor(MemoryReactorClock):
    """A memory reactor on which no TCP port can be bound."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class FailoverWiringTests(SynchronousTestCase):
    """
    L{makeService} with C{[failover:NAME]} sections, on a
    L{MemoryReactorClock}, memory stores and a fake DHCPv6 port: the
    relationships' place among the services, the store's classifier, the
    engine's policies, what the relationships read of the DHCPv6 service,
    the start and stop order, and TLS files that cannot be used.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1e9)
        self.events: list[object] = []
        self.stores: list[RecordingStore] = []
        self.listened: list[DHCPv6ServerProtocol] = []
        self.listenError: Exception | None = None
        self.pki = writePairCertificates(self.mktemp())

    def config(self, role: str = "primary", extra: str = "") -> ServerConfig:
        return parseConfigText(
            failoverConfigText(self.pki, role, "unused.sqlite", extra), role + ".ini"
        )

    def openStore(self, replicate: Callable[[Lease], str | None] | None) -> RecordingStore:
        store = RecordingStore(self.events, replicate=replicate)
        self.stores.append(store)
        return store

    def listen(
        self, reactor: Any, port: int, protocol: DHCPv6ServerProtocol, address: str
    ) -> DHCPv6Port:
        if self.listenError is not None:
            raise self.listenError
        self.listened.append(protocol)
        return FakePort(protocol, self.events)  # type: ignore[return-value]

    def build(self, role: str = "primary", extra: str = "") -> ServerService:
        return makeService(
            self.config(role, extra),
            self.reactor,
            openStore=self.openStore,
            listen=self.listen,
        )

    def relationship(self, top: ServerService) -> FailoverRelationship:
        relationship = top.relationships[PAIR]
        self.assertIs(top.getServiceNamed("failover").getServiceNamed(PAIR), relationship)
        return relationship

    def test_children(self) -> None:
        """
        The relationships come between the store and the DHCPv6 service, in
        their own C{"failover"} child, each named after its relationship;
        the control socket stays last.  Nothing is opened or bound yet.
        """
        top = self.build(extra="control-socket = var/x.ctl")
        self.assertEqual([s.name for s in top], ["leases", "failover", "dhcpv6", "control"])
        self.assertEqual([s.name for s in top.getServiceNamed("failover")], [PAIR])
        relationship = self.relationship(top)
        self.assertEqual(relationship.role, Role.PRIMARY)
        self.assertEqual(self.stores, [])
        self.assertEqual(self.listened, [])
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.reactor.tcpServers, [])

    def test_registeredForControl(self) -> None:
        """Every relationship is registered with the control target."""
        top = self.build()
        assert top.controlTarget is not None
        [status] = top.controlTarget.status()["relationships"]  # type: ignore[misc]
        self.assertEqual(
            (status["name"], status["role"], status["state"]), (PAIR, "primary", "init")
        )

    def test_withoutFailover(self) -> None:
        """Without failover there is no C{"failover"} child and no classifier."""
        top = makeService(makeConfig(), self.reactor, openStore=self.openStore, listen=self.listen)
        self.assertEqual([s.name for s in top], ["leases", "dhcpv6"])
        self.assertEqual(top.relationships, {})
        top.startService()
        self.assertIsNone(self.stores[0].replicate)
        self.successResultOf(top.stopService())

    def test_classifier(self) -> None:
        """
        The store marks a binding pending for the relationship whose pools
        or prefix pools hold it, and nothing else.
        """
        top = self.build()
        top.startService()
        [store] = self.stores
        replicate = store.replicate
        assert replicate is not None
        prefix = evolve(
            addressLease("2001:db8:100:100::"), lease_type=LeaseType.PD, prefix_length=56
        )
        self.assertEqual(replicate(addressLease("2001:db8:1::1001")), PAIR)
        self.assertEqual(replicate(prefix), PAIR)
        self.assertIsNone(replicate(addressLease("2001:db8:2::1001")))
        self.assertIsNone(
            replicate(evolve(prefix, address=IPv6Address("2001:db8:100::"), prefix_length=48))
        )
        self.successResultOf(store.commit([addressLease("2001:db8:1::1001")]))
        self.successResultOf(store.commit([addressLease("2001:db8:2::1001")]))
        self.assertEqual(store.pendingCount(PAIR), 1)
        self.successResultOf(top.stopService())

    def test_replicationClassifierAlone(self) -> None:
        """With no relationship there is no classifier at all."""
        self.assertIsNone(replicationClassifier([]))

    def test_enginePolicies(self) -> None:
        """
        Once started, the engine decides for the relationship's subnets with
        its policy and for the others with a standalone one.
        """
        top = self.build()
        top.startService()
        relationship = self.relationship(top)
        [protocol] = self.listened
        engine = cast(Engine, protocol.engine)
        self.assertIsNotNone(relationship.policy)
        self.assertIs(engine.policyFor(engine.config.subnetByName("lab")), relationship.policy)
        self.assertIsInstance(
            engine.policyFor(engine.config.subnetByName("alone")), StandalonePolicy
        )
        self.assertIsInstance(protocol.policy, StandalonePolicy)
        self.successResultOf(top.stopService())

    def test_subnetsFollowTheirPolicy(self) -> None:
        """
        While the relationship cannot serve (STARTUP, no partner yet), its
        subnet gets no answer; the subnet outside it is served alone, and
        its binding is not marked for the partner.
        """
        top = self.build()
        top.startService()
        dhcpv6 = top.getServiceNamed("dhcpv6")
        [protocol] = self.listened
        transport = _Transport(self.events)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        protocol.datagramReceived(relayedRequest(LAB_LINK, dhcpv6.serverDuid), ("::1", 547))
        protocol.datagramReceived(relayedRequest(ALONE_LINK, dhcpv6.serverDuid), ("::1", 547))
        self.assertEqual(self.events.count("sent"), 1)
        [store] = self.stores
        [lease] = store.iterLeases(10)
        self.assertIn(lease.address, IPv6Network("2001:db8:2::/64"))
        self.assertEqual(store.pendingCount(PAIR), 0)
        self.successResultOf(top.stopService())

    def test_serverDuidAndClientsSeen(self) -> None:
        """
        The relationship's session sends the DHCPv6 service's DUID at Connect
        and its count of received client messages in CONTACT.
        """
        top = self.build()
        top.startService()
        session = self.relationship(top).session
        assert session is not None
        dhcpv6 = top.getServiceNamed("dhcpv6")
        self.assertIsNotNone(dhcpv6.serverDuid)
        self.assertEqual(session.serverDuid(), dhcpv6.serverDuid)
        clientsSeen = session.clientsSeen
        assert clientsSeen is not None
        self.assertEqual(clientsSeen(), 0)
        [protocol] = self.listened
        protocol.makeConnection(_Transport(self.events))  # type: ignore[arg-type]
        protocol.datagramReceived(b"\x01garbage", ("::1", 546))
        protocol.datagramReceived(relayedRequest(ALONE_LINK, dhcpv6.serverDuid), ("::1", 547))
        self.assertEqual(clientsSeen(), 2)
        self.successResultOf(top.stopService())
        # Kept across a stop of the DHCPv6 service.
        self.assertEqual(clientsSeen(), 2)

    def test_failoverDuidIsUUID(self) -> None:
        """
        A failover member with no DUID makes a DUID-UUID: two members on one
        machine started in the same second must not share a DUID-LLT.
        """
        first, second = self.build("primary"), self.build("secondary")
        first.startService()
        second.startService()
        duids = [top.getServiceNamed("dhcpv6").serverDuid for top in (first, second)]
        self.assertEqual([duid[:2] for duid in duids], [b"\x00\x04", b"\x00\x04"])
        self.assertNotEqual(duids[0], duids[1])
        self.successResultOf(first.stopService())
        self.successResultOf(second.stopService())

    def test_primaryConnects(self) -> None:
        """The primary connects to its partner-address and partner-port."""
        top = self.build("primary")
        top.startService()
        [(host, port, *_)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("::1", 6647))
        self.assertEqual(self.reactor.tcpServers, [])
        self.successResultOf(top.stopService())

    def test_secondaryListens(self) -> None:
        """The secondary listens on its listen-address and listen-port."""
        top = self.build("secondary")
        top.startService()
        [(port, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (6647, "::1"))
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.relationship(top).role, Role.SECONDARY)
        self.successResultOf(top.stopService())

    def test_stopOrder(self) -> None:
        """
        Stopping stops client traffic first (the port), then the
        relationship (PAUSED stored), and closes the store last.
        """
        top = self.build()
        top.startService()
        del self.events[:]
        self.successResultOf(top.stopService())
        self.assertEqual(
            self.events, ["port stopped", ("failover state stored", "paused"), "store closed"]
        )
        self.assertEqual(self.relationship(top).status().state, "paused")

    def test_startFailureStopsInOrder(self) -> None:
        """
        If the DHCPv6 port cannot be bound, the relationship already started
        is stopped (PAUSED stored) before the store is closed, and the error
        names the port.
        """
        self.listenError = OSError(98, "Address already in use")
        top = self.build("secondary")
        error = self.assertRaises(StartupError, top.startService)
        self.assertIn("cannot listen on [::1]:5547", str(error))
        self.assertEqual(self.events, [("failover state stored", "paused"), "store closed"])
        self.assertFalse(top.running)

    def test_policiesBeforeStart(self) -> None:
        """The policy factory refuses relationships that have not started."""
        top = self.build()
        factory = failoverPolicies([self.relationship(top)])
        error = self.assertRaises(StartupError, factory, top.relationships[PAIR].config, None)
        self.assertIn("not running", str(error))

    def test_badTLSFile(self) -> None:
        """
        A certificate that cannot be used stops makeService with an error
        naming the configuration, the section, the file and what is wrong;
        nothing is opened or bound.
        """
        with open(self.pki["primary.pem"], "wb") as f:
            f.write(b"not a certificate\n")
        error = self.assertRaises(StartupError, self.build)
        message = str(error)
        self.assertTrue(
            message.startswith(
                "primary.ini: [failover:lab-pair]: cannot use " + self.pki["primary.pem"]
            ),
            message,
        )
        self.assertIsInstance(error.__cause__, TLSMaterialError)
        self.assertIn(cast(TLSMaterialError, error.__cause__).reason, message)
        self.assertEqual((self.stores, self.listened), ([], []))

    def test_wrongCA(self) -> None:
        """A certificate that does not chain to the configured CA is refused."""
        other = CertificateAuthority("another CA")
        with open(self.pki["ca.pem"], "wb") as f:
            f.write(other.pem)
        error = self.assertRaises(StartupError, self.build)
        self.assertIn("[failover:lab-pair]", str(error))

    def test_givenMaterial(self) -> None:
        """TLS material already loaded (by the twistd options) is used as it is."""
        config = self.config()
        materials = loadTLSMaterial(config)
        os.remove(self.pki["primary.pem"])
        top = makeService(
            config,
            self.reactor,
            tlsMaterial=materials,
            openStore=self.openStore,
            listen=self.listen,
        )
        self.assertIs(self.relationship(top).material, materials[PAIR])

    def test_exitOnStartupErrorRelationship(self) -> None:
        """
        Under twistd, a relationship that cannot start (its port in use)
        exits with status 1 after the store is closed.
        """
        self.reactor = PortsInUseReactor()
        top = self.build("secondary")
        top.exitOnStartupError = True
        with capturedLogs() as events:
            error = self.assertRaises(SystemExit, top.startService)
        self.assertEqual(error.code, 1)
        [critical] = [e for e in events if e["log_level"] is LogLevel.critical]
        self.assertIn("failover lab-pair: cannot listen on [::1]:6647", critical["error"])
        self.assertEqual(self.events, ["store closed"])
        self.assertEqual(self.listened, [])


class FailoverPairTests(TestCase):
    """
    Two whole servers from L{makeService}, primary and secondary, in this
    process on the real reactor: SQLite databases in a temporary directory,
    DHCPv6 on [::1] port 0, the partner connection over mutual TLS on ::1
    with certificates from L{tests.certs}.
    """

    timeout = 60

    def setUp(self) -> None:
        skipWithoutIPv6Loopback(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.pki = writePairCertificates(os.path.join(directory, "pki"))
        self.directory = directory

    def config(self, role: str, partnerPort: int = 0) -> ServerConfig:
        text = failoverConfigText(
            self.pki,
            role,
            os.path.join(self.directory, role + ".sqlite"),
            heartbeat=0.5,
            unreachable=5,
            # No prefix pool: the primary would hand half of it over to the
            # secondary first (thousands of binding updates).
            pdPools="",
        )
        config = parseConfigText(text, role + ".ini")
        [failover] = config.failover
        if role == "primary":
            failover = evolve(failover, partner_port=partnerPort)
        else:
            failover = evolve(failover, listen_port=0)
        return evolve(config, server=evolve(config.server, port=0), failover=(failover,))

    async def waitFor(self, condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(globalReactor, 0.05, lambda: None)
        self.fail("timed out waiting for " + what)

    def start(self, top: ServerService) -> None:
        top.startService()

        async def stop() -> None:
            if top.running:
                await top.stopService()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))

    async def test_pair(self) -> None:
        """
        Both reach NORMAL (the pair's first start), each knowing the other's
        DUID; a relayed Solicit and Request to the primary get an address
        whose binding reaches the secondary's database for the same client,
        and the secondary's ack clears the primary's pending mark.  CONTACT
        carries the primary's client count.  When the primary stops, the
        secondary goes to COMMUNICATIONS-INTERRUPTED.  Every state change is
        logged once.
        """
        with capturedLogs() as events:
            primary, secondary = await self.runPair()
        chains: dict[object, list[tuple[str, str]]] = {primary: [], secondary: []}
        for event in events:
            source = event.get("log_source")
            if source not in chains:
                continue
            if "old" in event and "new" in event:
                chains[source].append((event["old"], event["new"]))
            elif "partner unreachable" in event["log_format"]:
                chains[source].append(("normal", "communications-interrupted"))
        for endpoint, ending in [
            (primary, [("normal", "paused")]),
            (
                secondary,
                [
                    ("normal", "communications-interrupted"),
                    ("communications-interrupted", "paused"),
                ],
            ),
        ]:
            chain = chains[endpoint]
            # One line per change: each starts where the one before ended.
            self.assertEqual(chain[0][0], "startup", chain)
            for (_, new), (old, _) in zip(chain, chain[1:], strict=False):
                self.assertEqual(new, old, chain)
            self.assertEqual(chain[-len(ending) :], ending, chain)

    async def runPair(self) -> tuple[object, object]:
        """Run the pair; return the primary's and the secondary's endpoints."""
        secondary = makeService(self.config("secondary"), globalReactor)
        self.start(secondary)
        secondaryRelationship = secondary.relationships[PAIR]
        listening = await secondaryRelationship.whenListening()
        primary = makeService(self.config("primary", listening.getHost().port), globalReactor)
        self.start(primary)
        primaryRelationship = primary.relationships[PAIR]

        def normal() -> bool:
            return (
                primaryRelationship.status().state == "normal"
                and secondaryRelationship.status().state == "normal"
            )

        await self.waitFor(normal, "both relationships NORMAL")
        primaryDhcp = primary.getServiceNamed("dhcpv6")
        secondaryDhcp = secondary.getServiceNamed("dhcpv6")
        assert primaryRelationship.policy is not None
        assert secondaryRelationship.policy is not None
        self.assertNotEqual(primaryDhcp.serverDuid, secondaryDhcp.serverDuid)
        self.assertEqual(primaryRelationship.policy.partnerDuid, secondaryDhcp.serverDuid)
        self.assertEqual(secondaryRelationship.policy.partnerDuid, primaryDhcp.serverDuid)

        port = primaryDhcp.port.getHost().port
        solicit = Message(
            MessageType.SOLICIT, 1, (ClientId(CLIENT_DUID), ElapsedTime(0), IANA(1, 0, 0))
        )
        advertise = await relayedExchange(port, solicit, LAB_LINK)
        self.assertEqual(advertise.msg_type, MessageType.ADVERTISE)
        serverId = getOption(advertise.options, ServerId)
        assert serverId is not None
        self.assertEqual(serverId.duid, primaryDhcp.serverDuid)
        ia = getOption(advertise.options, IANA)
        assert ia is not None
        offered = getOption(ia.options, IAAddress)
        assert offered is not None
        request = Message(
            MessageType.REQUEST,
            2,
            (ClientId(CLIENT_DUID), serverId, ElapsedTime(0), IANA(1, 0, 0, (offered,))),
        )
        reply = await relayedExchange(port, request, LAB_LINK)
        self.assertEqual(reply.msg_type, MessageType.REPLY)
        replied = getOption(reply.options, IANA)
        assert replied is not None
        granted = getOption(replied.options, IAAddress)
        assert granted is not None
        self.assertEqual(granted.address, offered.address)
        self.assertIn(granted.address, IPv6Network("2001:db8:1::/64"))
        # Independent allocation: the primary gives addresses of its half.
        self.assertEqual(int(granted.address) & 1, 1)

        primaryStore = primary.getServiceNamed("leases").store
        secondaryStore = secondary.getServiceNamed("leases").store

        def replicated() -> bool:
            # The ack's fields are read once durable.
            ours = primaryStore.get(granted.address, 128)
            return (
                secondaryStore.get(granted.address, 128) is not None
                and primaryStore.pendingCount(PAIR) == 0
                and ours is not None
                and ours.stateAcked
            )

        await self.waitFor(replicated, "the binding on the secondary, acked")
        ours = primaryStore.get(granted.address, 128)
        theirs = secondaryStore.get(granted.address, 128)
        assert ours is not None and theirs is not None
        self.assertEqual((theirs.duid, theirs.iaid), (CLIENT_DUID, 1))
        self.assertEqual(theirs.state, BindingState.ACTIVE)
        self.assertEqual((ours.duid, ours.iaid), (CLIENT_DUID, 1))
        self.assertTrue(ours.stateAcked)
        self.assertEqual(secondaryStore.pendingCount(PAIR), 0)

        session = secondaryRelationship.session
        assert session is not None
        await self.waitFor(
            lambda: (session.partnerClientsSeen or 0) >= 2, "CONTACT with the client count"
        )

        await primary.stopService()
        await self.waitFor(
            lambda: secondaryRelationship.status().state == "communications-interrupted",
            "the secondary in COMMUNICATIONS-INTERRUPTED",
        )
        self.assertEqual(secondaryRelationship.status().partner_state, "paused")
        await secondary.stopService()
        # Let the queues' and TLS's last calls run.
        await deferLater(globalReactor, 0.05, lambda: None)
        return primaryRelationship.endpoint, secondaryRelationship.endpoint
