"""
Tests for L{dhcp6ha.chaos.clients}: simulated clients against the real
engine (L{Engine} with a L{MemoryLeaseStore} behind L{DHCPv6ServerProtocol}),
over an in-memory network driven by a L{Clock}: datagrams are encoded and
decoded for real, nothing touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.allocation import StandalonePolicy
from dhcp6ha.chaos.checker import Invariant, check
from dhcp6ha.chaos.clients import (
    Behaviour,
    ClientPool,
    LinkTransport,
    RelayTransport,
    SimulatedClient,
    State,
    Timing,
    clientDuid,
    nextTimeout,
)
from dhcp6ha.chaos.history import (
    NA,
    PD,
    ClientReceived,
    ClientSent,
    DatabaseDump,
    HistoryRecorder,
    bindingRecord,
    dumps,
)
from dhcp6ha.config import AddressPool, PrefixPool, ServerConfig, ServerSection, SubnetConfig
from dhcp6ha.engine import Engine
from dhcp6ha.leases.lease import BindingState
from dhcp6ha.message import (
    IANA,
    IAPD,
    ClientId,
    DuidType,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    InterfaceId,
    Message,
    MessageType,
    Option,
    RelayMessage,
    RelayMessageOption,
    ServerId,
    StatusCodeOption,
    decode,
    encode,
    parseDuid,
)
from dhcp6ha.server import DHCPv6ServerProtocol
from dhcp6ha.testing import MemoryLeaseStore

START = 1_700_000_000.0
S1 = b"\x00\x02\x00\x00\x00\x09server-1"
S2 = b"\x00\x02\x00\x00\x00\x09server-2"
S1_ADDRESS = "2001:db8:ffff::1"
S2_ADDRESS = "2001:db8:ffff::2"
RELAY_ADDRESS = "2001:db8:ffff::99"
LINK = IPv6Address("2001:db8:1::1")
LAN = IPv6Network("2001:db8:1::/64")
#: Short RFC 8415 timers: a tenth of the real ones.
FAST = Timing().scaled(0.1)


def makeSubnet(rapid: bool = False) -> SubnetConfig:
    """T1 10 s, T2 16 s, addresses valid 40 s, prefixes 60 s."""
    return SubnetConfig(
        name="lan",
        prefix=LAN,
        interface=None,
        pools=(AddressPool(IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:1::1ff")),),
        pd_pools=(PrefixPool(IPv6Network("2001:db8:100::/40"), 56),),
        reservations=(),
        preferred_lifetime=20,
        valid_lifetime=40,
        t1=10,
        t2=16,
        pd_preferred_lifetime=30,
        pd_valid_lifetime=60,
        rapid_commit=rapid,
        preference=0,
        dns_servers=(),
        domain_search=(),
        sol_max_rt=None,
        information_refresh_time=None,
    )


class Network:
    """
    Datagrams between attached protocols, delivered 1 ms later on the
    clock; a host that is down neither sends nor receives.

    @ivar log: every datagram accepted for delivery: (source, data, destination).
    """

    def __init__(self, clock: Clock, latency: float = 0.001) -> None:
        self.clock = clock
        self.latency = latency
        self.endpoints: dict[tuple[str, int], DatagramProtocol] = {}
        self.down: set[str] = set()
        self.dropped = 0
        self.log: list[tuple[tuple[str, int], bytes, tuple[str, int]]] = []

    def attach(self, host: str, port: int, protocol: DatagramProtocol) -> None:
        self.endpoints[(host, port)] = protocol
        protocol.makeConnection(_Port(self, (host, port)))

    def send(self, source: tuple[str, int], data: bytes, destination: tuple[str, int]) -> None:
        target = self.endpoints.get(destination)
        if target is None or source[0] in self.down or destination[0] in self.down:
            self.dropped += 1
            return
        self.log.append((source, data, destination))
        self.clock.callLater(self.latency, self._deliver, source, data, destination)

    def _deliver(self, source: tuple[str, int], data: bytes, destination: tuple[str, int]) -> None:
        if destination[0] in self.down:
            self.dropped += 1
            return
        self.endpoints[destination].datagramReceived(data, source)

    def sentBy(self, host: str) -> list[Message | RelayMessage]:
        return [decode(data) for source, data, _ in self.log if source[0] == host]


class _Port(FakeDatagramTransport):
    def __init__(self, network: Network, address: tuple[str, int]) -> None:
        super().__init__()
        self.network = network
        self.address = address

    def write(self, packet: bytes, addr: Any = None) -> None:
        self.network.send(self.address, packet, (str(addr[0]), int(addr[1])))


def runUntil(clock: Clock, until: float) -> None:
    """Run every timer due until C{until}, each at its own time."""
    while True:
        due = [call.getTime() for call in clock.getDelayedCalls()]
        following = min(due, default=None)
        if following is None or following > until:
            clock.advance(max(0.0, until - clock.seconds()))
            return
        clock.advance(max(0.0, following - clock.seconds()))


class Scripted(DatagramProtocol):
    """
    A tiny relay-aware responder: C{answer(message)} returns the options
    of the answer (or None for no answer, or a list of answers).
    """

    def __init__(
        self,
        duid: bytes,
        answer: Callable[[Message], Sequence[tuple[int, Sequence[Option]]] | None],
    ) -> None:
        self.duid = duid
        self.answer = answer
        self.received: list[Message] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        relay = decode(datagram)
        assert isinstance(relay, RelayMessage)
        inner = relay.options[-1]
        assert isinstance(inner, RelayMessageOption) and isinstance(inner.message, Message)
        message = inner.message
        self.received.append(message)
        client = next(o for o in message.options if isinstance(o, ClientId))
        for msg_type, options in self.answer(message) or []:
            reply = Message(
                msg_type, message.transaction_id, (client, ServerId(self.duid), *options)
            )
            assert self.transport is not None
            self.transport.write(
                encode(
                    RelayMessage(
                        MessageType.RELAY_REPL,
                        0,
                        relay.link_address,
                        relay.peer_address,
                        (RelayMessageOption(reply),),
                    )
                ),
                addr,
            )


ADDRESS = IPv6Address("2001:db8:1::123")


def grant(valid: int = 40) -> list[Option]:
    return [IANA(0, 10, 16, (IAAddress(ADDRESS, valid // 2, valid),))]


def withIAID(options: Sequence[Option], message: Message) -> list[Option]:
    """The options with the IA_NA's IAID set to the message's."""
    ia = next(o for o in message.options if isinstance(o, IANA))
    return [IANA(ia.iaid, o.t1, o.t2, o.options) if isinstance(o, IANA) else o for o in options]


class Harness:
    """Clients behind a relay, one or two engine-backed servers (or scripted ones)."""

    def __init__(self, testCase: SynchronousTestCase, rapid: bool = False) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.network = Network(self.clock)
        self.recorder = HistoryRecorder(self.clock)
        self.stores: dict[bytes, MemoryLeaseStore] = {}
        self.servers: dict[bytes, str] = {}
        self.rapid = rapid
        self.transport = RelayTransport(
            [(S1_ADDRESS, 547), (S2_ADDRESS, 547)], LINK, interfaceId=b"port7"
        )
        self.network.attach(RELAY_ADDRESS, 547, self.transport)
        self.pool: ClientPool | None = None

    def server(self, duid: bytes, address: str) -> MemoryLeaseStore:
        store = MemoryLeaseStore()
        config = ServerConfig(
            path="chaos-test.ini",
            server=ServerSection(
                interfaces=(),
                address=IPv6Address("::"),
                port=547,
                database=":memory:",
                duid=duid,
                decline_quarantine=600,
                reclaim_interval=1.0,
                commit_delay=0.0,
            ),
            subnets=(makeSubnet(self.rapid),),
        )
        policy = StandalonePolicy()
        protocol = DHCPv6ServerProtocol(
            Engine(config, store, policy, duid), store, policy, self.clock
        )
        self.network.attach(address, 547, protocol)
        self.stores[duid] = store
        self.servers[duid] = address
        return store

    def scripted(self, duid: bytes, address: str, answer: Callable[[Message], Any]) -> Scripted:
        protocol = Scripted(duid, answer)
        self.network.attach(address, 547, protocol)
        return protocol

    def clients(self, count: int = 1, seed: int = 1, **behaviour: Any) -> ClientPool:
        behaviour.setdefault("off_time", (1.0, 1.0))
        self.pool = ClientPool(
            self.clock,
            self.transport,
            self.recorder,
            seed=seed,
            count=count,
            behaviour=Behaviour(**behaviour),
            timing=FAST,
        )
        self.pool.start()
        return self.pool

    def run(self, seconds: float) -> None:
        runUntil(self.clock, self.clock.seconds() + seconds)

    def events(
        self, cls: type[Any] = object, msg_type: str | None = None, client: bytes | None = None
    ) -> list[Any]:
        return [
            e
            for e in self.recorder.events
            if isinstance(e, cls)
            and (msg_type is None or getattr(e, "msg_type", None) == msg_type)
            and (client is None or getattr(e, "client", None) == client)
        ]

    def dump(self, duid: bytes) -> DatabaseDump:
        store = self.stores[duid]
        return DatabaseDump(
            self.clock.seconds(),
            duid,
            tuple(bindingRecord(lease) for lease in store.iterLeases(100)),
        )

    def violations(self, *servers: bytes) -> list[Any]:
        return check(self.recorder.events, [self.dump(s) for s in servers], None)


def onlyClient(pool: ClientPool) -> SimulatedClient:
    (client,) = pool.clients
    return client


def address(client: SimulatedClient, kind: str = NA) -> IPv6Address:
    (held,) = [h for (k, _), h in client.leases.items() if k == kind]
    ((key, _),) = held.items()
    return key[0]


class BindTests(SynchronousTestCase):
    """Solicit, Advertise, Request, Reply against the engine."""

    def test_bind(self) -> None:
        """Every client gets an address; the history has each exchange; the store agrees."""
        h = Harness(self)
        store = h.server(S1, S1_ADDRESS)
        pool = h.clients(5)
        h.run(3)
        self.assertEqual({c.state for c in pool.clients}, {State.BOUND})
        for client in pool.clients:
            self.assertEqual(
                [(type(e).__name__, e.msg_type) for e in h.events(client=client.duid)],
                [
                    ("ClientSent", "SOLICIT"),
                    ("ClientReceived", "ADVERTISE"),
                    ("ClientSent", "REQUEST"),
                    ("ClientReceived", "REPLY"),
                ],
            )
            request = h.events(ClientSent, "REQUEST", client.duid)[0]
            self.assertEqual(request.server, S1)
            lease = store.get(address(client), 128)
            assert lease is not None
            self.assertEqual(lease.state, BindingState.ACTIVE)
            self.assertEqual((lease.duid, lease.iaid), (client.duid, client.ias[0][1]))
        self.assertEqual(len({address(c) for c in pool.clients}), 5)
        self.assertEqual(h.violations(S1), [])

    def test_addressAndPrefix(self) -> None:
        """A client may ask for an address and a prefix at once."""
        h = Harness(self)
        store = h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(pd=True))
        h.run(3)
        self.assertEqual(client.state, State.BOUND)
        ((key, _),) = client.leases[(PD, client.ias[1][1])].items()
        self.assertEqual(key[1], 56)
        self.assertIsNotNone(store.get(*key))
        self.assertIsNotNone(store.get(address(client), 128))

    def test_prefixOnly(self) -> None:
        """Or only a prefix."""
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(na=False, pd=True))
        h.run(3)
        self.assertEqual([ia[0] for ia in client.ias], [PD])
        self.assertEqual(client.state, State.BOUND)

    def test_neither(self) -> None:
        """Clients must ask for something."""
        h = Harness(self)
        self.assertRaises(ValueError, h.clients, na=False)

    def test_rapidCommit(self) -> None:
        """With Rapid Commit on both sides, a Solicit is answered by a Reply."""
        h = Harness(self, rapid=True)
        h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(rapid_commit=True))
        h.run(3)
        self.assertEqual(client.state, State.BOUND)
        self.assertEqual([e.msg_type for e in h.events(client=client.duid)], ["SOLICIT", "REPLY"])
        self.assertTrue(h.events(ClientSent)[0].rapid_commit)

    def test_rapidCommitRefused(self) -> None:
        """A server without Rapid Commit advertises; the client then requests."""
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(rapid_commit=True))
        h.run(3)
        self.assertEqual(client.state, State.BOUND)
        self.assertEqual(len(h.events(ClientSent, "REQUEST")), 1)

    def test_relayed(self) -> None:
        """The relay's link-address, the client's peer-address and the Interface-ID go out."""
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients())
        h.run(3)
        relay = h.network.sentBy(RELAY_ADDRESS)[0]
        assert isinstance(relay, RelayMessage)
        self.assertEqual(relay.link_address, LINK)
        self.assertEqual(relay.peer_address, client.linkLocal)
        self.assertEqual(relay.options[0], InterfaceId(b"port7"))
        destinations = {d for source, _, d in h.network.log if source[0] == RELAY_ADDRESS}
        self.assertEqual(destinations, {(S1_ADDRESS, 547)})
        self.assertEqual(h.network.dropped, 2)  # the Solicit and the Request to the absent S2


class RenewRebindTests(SynchronousTestCase):
    """T1, T2, expiry."""

    def test_renewAtT1(self) -> None:
        """At T1 the client renews with the server that granted its lease, and keeps it."""
        h = Harness(self)
        store = h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients())
        h.run(3)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.run(10)
        (renew,) = h.events(ClientSent, "RENEW")
        self.assertAlmostEqual(renew.time, bound + 10, places=6)
        self.assertEqual(renew.server, S1)
        self.assertEqual(renew.ias[0].leases[0].address, address(client))
        replies = h.events(ClientReceived, "REPLY")
        self.assertEqual(len(replies), 2)
        self.assertEqual(replies[1].ias[0].leases[0].address, address(client))
        lease = store.get(address(client), 128)
        assert lease is not None
        self.assertAlmostEqual(lease.expires, renew.time + 0.001 + 40, places=6)
        h.run(60)
        self.assertEqual(len(h.events(ClientSent, "RENEW")), 7)
        self.assertEqual(h.events(ClientSent, "SOLICIT", client.duid)[1:], [])
        self.assertEqual(h.violations(S1), [])

    def test_rebindWhenServerGone(self) -> None:
        """
        The server that granted the lease is gone: Renew is retransmitted
        until T2, then Rebind reaches the other server, which keeps the
        address; later renewals go to it.
        """
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        s2 = h.server(S2, S2_ADDRESS)
        h.network.down.add(S2_ADDRESS)
        client = onlyClient(h.clients())
        h.run(3)
        held = address(client)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.network.down = {S1_ADDRESS}
        h.run(17)
        renews = h.events(ClientSent, "RENEW")
        self.assertEqual([r.attempt for r in renews], [0, 1, 2])
        self.assertTrue(all(bound + 10 <= r.time < bound + 16 for r in renews))
        (rebind,) = h.events(ClientSent, "REBIND")
        self.assertAlmostEqual(rebind.time, bound + 16, places=6)
        self.assertIsNone(rebind.server)
        reply = h.events(ClientReceived, "REPLY")[-1]
        self.assertEqual((reply.server, reply.ias[0].leases[0].address), (S2, held))
        self.assertEqual(client.server, S2)
        self.assertEqual(address(client), held)
        lease = s2.get(held, 128)
        assert lease is not None and lease.duid == client.duid
        h.run(12)
        self.assertEqual(h.events(ClientSent, "RENEW")[-1].server, S2)
        self.assertEqual(h.violations(S2), [])

    def test_lost(self) -> None:
        """With no server left, Rebind runs until the lease expires, then Solicit again."""
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients())
        h.run(3)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.network.down = {S1_ADDRESS}
        h.run(45)
        rebinds = h.events(ClientSent, "REBIND")
        self.assertGreater(len(rebinds), 3)
        self.assertLess(rebinds[-1].time, bound + 40)
        solicits = h.events(ClientSent, "SOLICIT")
        again = [e for e in solicits if e.xid != solicits[0].xid]
        self.assertEqual(again[0].attempt, 0)
        self.assertAlmostEqual(again[0].time, bound + 40, places=6)
        self.assertFalse(client.holding())
        self.assertEqual(client.state, State.SOLICITING)
        h.network.down = set()
        h.run(15)  # the Solicit is in backoff by now
        self.assertEqual(client.state, State.BOUND)

    def test_noBindingThenRequest(self) -> None:
        """An IA answered NoBinding in a Renew Reply makes the client Request its lease."""
        h = Harness(self)

        def answer(message: Message) -> Any:
            t = message.msg_type
            if t == MessageType.SOLICIT:
                return [(MessageType.ADVERTISE, withIAID(grant(), message))]
            if t == MessageType.REQUEST:
                return [(MessageType.REPLY, withIAID(grant(), message))]
            if t == MessageType.RENEW:
                noBinding = [IANA(0, 0, 0, (StatusCodeOption(3),))]
                return [(MessageType.REPLY, withIAID(noBinding, message))]
            return None

        scripted = h.scripted(S1, S1_ADDRESS, answer)
        client = onlyClient(h.clients())
        h.run(12)
        types = [m.msg_type for m in scripted.received]
        self.assertEqual(types[:4], [1, 3, 5, 3])
        request = scripted.received[3]
        ia = next(o for o in request.options if isinstance(o, IANA))
        self.assertEqual(ia.options, (IAAddress(ADDRESS, 0, 0),))
        self.assertIn(ServerId(S1), request.options)
        self.assertEqual(client.state, State.BOUND)

    def test_shortLifetimeChosenTimers(self) -> None:
        """With T1 and T2 0 the client renews at half the preferred lifetime."""
        h = Harness(self)

        def answer(message: Message) -> Any:
            options = [IANA(0, 0, 0, (IAAddress(ADDRESS, 8, 12),))]
            if message.msg_type == MessageType.SOLICIT:
                return [(MessageType.ADVERTISE, withIAID(options, message))]
            return [(MessageType.REPLY, withIAID(options, message))]

        h.scripted(S1, S1_ADDRESS, answer)
        h.clients()
        h.run(3)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.run(5)
        (renew,) = h.events(ClientSent, "RENEW")
        self.assertAlmostEqual(renew.time, bound + 4, places=6)

    def test_iaLeftOut(self) -> None:
        """
        A Reply that leaves one of the client's IAs out does not make it
        renew again at once (that IA's timers are stale).
        """
        h = Harness(self)
        prefix = IPv6Address("2001:db8:100:100::")

        def answer(message: Message) -> Any:
            ias: list[Option] = []
            for option in message.options:
                if isinstance(option, IANA):
                    ias.append(IANA(option.iaid, 10, 16, (IAAddress(ADDRESS, 20, 40),)))
                elif isinstance(option, IAPD) and message.msg_type != MessageType.RENEW:
                    ias.append(IAPD(option.iaid, 10, 16, (IAPrefix(30, 60, 56, prefix),)))
            if message.msg_type == MessageType.SOLICIT:
                return [(MessageType.ADVERTISE, ias)]
            return [(MessageType.REPLY, ias)]

        h.scripted(S1, S1_ADDRESS, answer)
        client = onlyClient(h.clients(pd=True))
        h.run(3)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.run(15)
        renews = h.events(ClientSent, "RENEW")
        self.assertEqual(len(renews), 1)
        self.assertAlmostEqual(renews[0].time, bound + 10, places=6)
        self.assertEqual(client.state, State.BOUND)
        self.assertEqual(len(client.leases[(PD, client.ias[1][1])]), 1)


class LeaveTests(SynchronousTestCase):
    """Release and Decline."""

    def test_release(self) -> None:
        """A client may release before T1; the server records it; it solicits again."""
        h = Harness(self)
        store = h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(release_probability=1.0))
        h.run(3)
        held = address(client)
        bound = h.events(ClientReceived, "REPLY")[0].time
        h.run(10)
        release = h.events(ClientSent, "RELEASE")[0]
        self.assertLess(release.time, bound + 10)
        self.assertEqual(release.server, S1)
        self.assertEqual(release.ias[0].leases[0].address, held)
        self.assertEqual(h.events(ClientSent, "RENEW"), [])
        self.assertIn(
            (held, BindingState.RELEASED),
            [(lease.address, lease.state) for batch in store.committed for lease in batch],
        )
        reply = h.events(ClientReceived, "REPLY")[1]
        self.assertEqual(reply.xid, release.xid)
        solicit = h.events(ClientSent, "SOLICIT")[1]
        self.assertAlmostEqual(solicit.time, reply.time + 1.0, places=6)
        self.assertEqual(h.violations(S1), [])

    def test_decline(self) -> None:
        """A client may decline its address; the server quarantines it; it gets another."""
        h = Harness(self)
        store = h.server(S1, S1_ADDRESS)
        client = onlyClient(h.clients(decline_probability=1.0, pd=True))
        h.run(2)
        decline = h.events(ClientSent, "DECLINE")[0]
        declined = decline.ias[0].leases[0].address
        self.assertEqual([ia.kind for ia in decline.ias], [NA])
        lease = store.get(declined, 128)
        assert lease is not None
        self.assertEqual(lease.state, BindingState.ABANDONED)
        self.assertTrue(client.leases[(PD, client.ias[1][1])])
        h.run(2)
        solicit = h.events(ClientSent, "SOLICIT")[1]
        self.assertEqual(len(solicit.ias[1].leases), 1)  # the prefix it still holds
        second = h.events(ClientReceived, "REPLY")[2]
        self.assertEqual(h.events(ClientSent, "REQUEST")[1].xid, second.xid)
        self.assertNotEqual(second.ias[0].leases[0].address, declined)
        self.assertEqual(h.violations(S1), [])


class TransmissionTests(SynchronousTestCase):
    """RFC 8415 section 15 retransmission."""

    def test_nextTimeout(self) -> None:
        """IRT then doubling, randomised, capped at MRT (randomised)."""
        self.assertAlmostEqual(nextTimeout(None, 1.0, 0, 0.05), 1.05)
        self.assertAlmostEqual(nextTimeout(None, 1.0, 0, -0.05), 0.95)
        self.assertAlmostEqual(nextTimeout(None, 1.0, 0, -0.05, solicit=True), 1.05)
        self.assertAlmostEqual(nextTimeout(2.0, 1.0, 0, 0.1), 4.2)
        self.assertAlmostEqual(nextTimeout(20.0, 1.0, 30.0, -0.1), 27.0)

    def test_solicitBackoff(self) -> None:
        """Solicit is retransmitted with doubling timeouts up to SOL_MAX_RT, forever."""
        h = Harness(self)
        h.clients()
        h.run(60)
        times = [e.time for e in h.events(ClientSent, "SOLICIT")]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        self.assertGreater(gaps[0], 0.1)
        self.assertLessEqual(gaps[0], 0.11)
        for previous, gap in zip(gaps, gaps[1:], strict=False):
            expected = min(2 * previous, 360.0)
            self.assertLessEqual(abs(gap - expected), 0.1 * previous + 1e-9)
        self.assertEqual(len({e.xid for e in h.events(ClientSent, "SOLICIT")}), 1)
        self.assertEqual([e.attempt for e in h.events(ClientSent)], list(range(len(times))))

    def test_elapsedTime(self) -> None:
        """Elapsed Time counts hundredths since the first transmission."""
        h = Harness(self)
        scripted = h.scripted(S1, S1_ADDRESS, lambda message: None)
        h.clients()
        h.run(2)
        elapsed = [
            next(o for o in m.options if isinstance(o, ElapsedTime)).value
            for m in scripted.received
        ]
        self.assertEqual(elapsed[0], 0)
        self.assertEqual(elapsed, sorted(elapsed))
        self.assertGreater(elapsed[-1], 100)

    def test_requestGivesUp(self) -> None:
        """A Request is sent REQ_MAX_RC times, then the client solicits again."""
        h = Harness(self)

        def answer(message: Message) -> Any:
            if message.msg_type == MessageType.SOLICIT:
                return [(MessageType.ADVERTISE, withIAID(grant(), message))]
            return None

        h.scripted(S1, S1_ADDRESS, answer)
        h.clients()
        h.run(60)
        kinds = [e.msg_type for e in h.events(ClientSent)]
        self.assertEqual(kinds[:12], ["SOLICIT"] + ["REQUEST"] * 10 + ["SOLICIT"])

    def test_lateAnswersRecorded(self) -> None:
        """A second Advertise and a second server's answer are recorded, not acted on."""
        h = Harness(self)

        def answer(message: Message) -> Any:
            t = MessageType.ADVERTISE if message.msg_type == MessageType.SOLICIT else 7
            return [(t, withIAID(grant(), message))] * 2

        h.scripted(S1, S1_ADDRESS, answer)
        client = onlyClient(h.clients())
        h.run(2)
        received = h.events(ClientReceived)
        self.assertEqual(
            [(e.msg_type, e.accepted) for e in received],
            [
                ("ADVERTISE", True),
                ("ADVERTISE", False),
                ("REPLY", True),
                ("REPLY", False),
            ],
        )
        self.assertEqual(client.state, State.BOUND)
        self.assertEqual(len(h.events(ClientSent, "REQUEST")), 1)

    def test_ignoredAnswers(self) -> None:
        """Advertises offering nothing, or NoAddrsAvail, are not acted on."""
        h = Harness(self)

        def answer(message: Message) -> Any:
            return [
                (MessageType.ADVERTISE, [StatusCodeOption(2, "none")]),
                (MessageType.ADVERTISE, withIAID([IANA(0, 0, 0, (StatusCodeOption(2),))], message)),
                (MessageType.REPLY, withIAID(grant(), message)),  # not rapid commit
            ]

        h.scripted(S1, S1_ADDRESS, answer)
        client = onlyClient(h.clients())
        h.run(0.5)
        answers = h.events(ClientReceived)
        self.assertGreaterEqual(len(answers), 3)
        self.assertFalse(any(e.accepted for e in answers))
        self.assertEqual(client.state, State.SOLICITING)


class PoolTests(SynchronousTestCase):
    """Identities, multiplexing, determinism."""

    def test_duids(self) -> None:
        """DUID-LL or DUID-LLT, distinct per index, per seed."""
        ll = clientDuid(7, 1)
        llt = clientDuid(7, 1, "llt")
        self.assertEqual(parseDuid(ll).duid_type, DuidType.LL)
        self.assertEqual(parseDuid(llt).duid_type, DuidType.LLT)
        self.assertEqual(parseDuid(ll).link_layer_address, parseDuid(llt).link_layer_address)
        self.assertEqual(len({clientDuid(7, n) for n in range(1000)}), 1000)
        self.assertNotEqual(clientDuid(7, 1), clientDuid(8, 1))
        self.assertRaises(ValueError, clientDuid, 7, 1, "uuid")

    def test_identities(self) -> None:
        """Clients get distinct DUIDs, IAIDs from the seed, EUI-64 link-local addresses."""
        h = Harness(self)
        pool = h.clients(3, duid_type="llt", pd=True)
        self.assertEqual(len({c.duid for c in pool.clients}), 3)
        for client in pool.clients:
            self.assertEqual([k for k, _ in client.ias], [NA, PD])
            self.assertTrue(client.linkLocal.is_link_local)
            self.assertEqual(client.linkLocal.packed[-3:], client.duid[-3:])

    def test_deterministic(self) -> None:
        """The same seed, the same history; another seed, another."""

        def run(seed: int) -> str:
            h = Harness(self)
            h.server(S1, S1_ADDRESS)
            h.clients(10, seed=seed, release_probability=0.3, decline_probability=0.2, pd=True)
            h.run(120)
            return dumps(h.recorder.events)

        first = run(3)
        self.assertEqual(first, run(3))
        self.assertNotEqual(first, run(4))

    def test_unmatched(self) -> None:
        """Answers with an unknown transaction id or another DUID are counted and dropped."""
        h = Harness(self)
        pool = h.clients(2)
        h.run(0.2)
        a, b = pool.clients
        xid = h.events(ClientSent, client=a.duid)[0].xid
        pool.messageReceived(Message(MessageType.REPLY, xid ^ 1, (ClientId(a.duid),)), "x")
        pool.messageReceived(Message(MessageType.REPLY, xid, (ClientId(b.duid),)), "x")
        pool.messageReceived(Message(MessageType.REPLY, xid, ()), "x")
        self.assertEqual(pool.counters, {"unmatched": 1, "foreign": 2})
        self.assertEqual(h.events(ClientReceived), [])

    def test_stop(self) -> None:
        """Stopped clients send nothing more and leave no timer behind."""
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        pool = h.clients(3)
        h.run(3)
        pool.stop()
        h.run(1)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        sent = len(h.events(ClientSent))
        h.run(100)
        self.assertEqual(len(h.events(ClientSent)), sent)
        self.assertEqual({c.state for c in pool.clients}, {State.STOPPED})

    def test_timingScaled(self) -> None:
        """Scaling shortens times, keeps counts."""
        self.assertEqual(FAST.sol_max_rt, 360.0)
        self.assertEqual(FAST.req_max_rc, 10)
        self.assertAlmostEqual(FAST.ren_timeout, 1.0)

    def test_soak(self) -> None:
        """
        Twenty clients (addresses and prefixes, some releasing, some
        declining) for ten minutes with a two-minute server outage: every
        kind of exchange happens, and the checker finds nothing wrong.
        """
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        h.clients(
            20,
            seed=11,
            pd=True,
            release_probability=0.2,
            decline_probability=0.1,
            start_spread=5.0,
        )
        h.run(200)
        h.network.down = {S1_ADDRESS}
        h.run(120)
        h.network.down = set()
        h.run(280)
        assert h.pool is not None
        h.pool.stop()
        h.run(1)
        kinds = {e.msg_type for e in h.events(ClientSent)}
        self.assertEqual(kinds, {"SOLICIT", "REQUEST", "RENEW", "REBIND", "RELEASE", "DECLINE"})
        self.assertEqual(h.violations(S1), [])


class CheckedTests(SynchronousTestCase):
    """The checker on histories these clients record."""

    def test_lostDatabaseCaught(self) -> None:
        """
        A standalone server restarted without its database gives a held
        address to another client, and refuses its holder's renewal: the
        checker sees both.
        """
        h = Harness(self)
        h.server(S1, S1_ADDRESS)
        pool = h.clients(
            40, seed=11, pd=True, release_probability=0.2, decline_probability=0.1, start_spread=5.0
        )
        h.run(100)
        h.server(S1, S1_ADDRESS)  # the same server, its database gone
        h.run(60)
        pool.stop()
        h.run(1)
        kinds = {v.kind for v in h.violations(S1)}
        self.assertEqual(kinds, {Invariant.OVERLAP, Invariant.STABILITY})


class TransportTests(SynchronousTestCase):
    """The two transports on their own."""

    def setUp(self) -> None:
        self.received: list[tuple[Message, str]] = []
        self.message = Message(MessageType.SOLICIT, 5, (ClientId(b"\x00\x03\x00\x01abcdef"),))
        self.reply = Message(MessageType.REPLY, 5, (ClientId(b"\x00\x03\x00\x01abcdef"),))

    def receive(self, message: Message, source: str) -> None:
        self.received.append((message, source))

    def test_relaySend(self) -> None:
        """RELAY-FORW to every server, with link-address, peer-address, Interface-ID."""
        relay = RelayTransport([("::1", 547), ("::2", 5547)], LINK, interfaceId=b"eth3")
        port = FakeDatagramTransport()
        relay.makeConnection(port)
        peer = IPv6Address("fe80::5")
        self.assertEqual(relay.sendMessage(self.message, peer), "[::1]:547, [::2]:5547")
        self.assertEqual([addr for _, addr in port.written], [("::1", 547), ("::2", 5547)])
        wrapped = decode(port.written[0][0])
        self.assertEqual(
            wrapped,
            RelayMessage(
                MessageType.RELAY_FORW,
                0,
                LINK,
                peer,
                (InterfaceId(b"eth3"), RelayMessageOption(self.message)),
            ),
        )
        self.assertEqual(relay.counters["sent"], 2)

    def test_relayReceive(self) -> None:
        """RELAY-REPL, nested or not, is unwrapped; anything else is counted."""
        relay = RelayTransport([("::1", 547)], LINK)
        relay.makeConnection(FakeDatagramTransport())
        relay.setReceiver(self.receive)
        inner = RelayMessage(13, 0, LINK, LINK, (RelayMessageOption(self.reply),))
        outer = RelayMessage(13, 1, LINK, LINK, (RelayMessageOption(inner),))
        relay.datagramReceived(encode(outer), ("::1", 547))
        relay.datagramReceived(encode(inner), ("::1", 547))
        relay.datagramReceived(b"\x0d", ("::1", 547))
        relay.datagramReceived(encode(RelayMessage(12, 0, LINK, LINK, ())), ("::1", 547))
        relay.datagramReceived(encode(RelayMessage(13, 0, LINK, LINK, ())), ("::1", 547))
        relay.datagramReceived(encode(self.message), ("::1", 547))
        self.assertEqual(self.received, [(self.reply, "[::1]:547")] * 2)
        self.assertEqual(
            dict(relay.counters),
            {"received": 2, "malformed": 1, "unexpected-type": 2, "not-relayed": 1},
        )

    def test_link(self) -> None:
        """On a link: to ff02::1:2 on the interface; answers straight from servers."""
        link = LinkTransport("veth7")
        port = FakeDatagramTransport()
        link.makeConnection(port)
        link.setReceiver(self.receive)
        self.assertEqual(
            link.sendMessage(self.message, IPv6Address("fe80::1")), "[ff02::1:2%veth7]:547"
        )
        self.assertEqual(port.written, [(encode(self.message), ("ff02::1:2%veth7", 547))])
        link.datagramReceived(encode(self.reply), ("fe80::2%veth7", 547))
        link.datagramReceived(encode(RelayMessage(13, 0, LINK, LINK, ())), ("fe80::2", 547))
        link.datagramReceived(b"", ("fe80::2", 547))
        self.assertEqual(self.received, [(self.reply, "[fe80::2%veth7]:547")])
        self.assertEqual(link.counters["unexpected-type"], 1)
        self.assertEqual(link.counters["malformed"], 1)

    def test_noReceiver(self) -> None:
        """Answers before a pool is attached are counted."""
        link = LinkTransport("veth7")
        link.makeConnection(FakeDatagramTransport())
        link.datagramReceived(encode(self.reply), ("fe80::2", 547))
        self.assertEqual(link.counters["no-receiver"], 1)

    def test_sendErrors(self) -> None:
        """A send that fails, or no socket at all, is counted, not raised."""

        class Failing(FakeDatagramTransport):
            def write(self, packet: bytes, addr: Any = None) -> None:
                raise OSError("network unreachable")

        link = LinkTransport("veth7")
        link.sendMessage(self.message, IPv6Address("fe80::1"))
        link.makeConnection(Failing())
        link.sendMessage(self.message, IPv6Address("fe80::1"))
        self.assertEqual(link.counters["not-connected"], 1)
        self.assertEqual(link.counters["send-error"], 1)
