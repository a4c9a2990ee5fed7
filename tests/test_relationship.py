"""
Tests for L{dhcp6ha.failover.relationship}: the relationship service, its
operator control, the Connect exchange inside the primary's endpoint, and
one pair of relationships over real TLS on loopback.
"""

from __future__ import annotations

import datetime
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.test.iosim import IOPump, connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.config import (
    AddressPool,
    FailoverConfig,
    FailoverRole,
    IdentityKind,
    PrefixPool,
    Reservation,
    ServerConfig,
    ServerSection,
    SubnetConfig,
)
from dhcp6ha.control import ControlError, RelationshipStatus
from dhcp6ha.engine import Engine, Received
from dhcp6ha.failover.machine import EndpointState, FailoverRecord
from dhcp6ha.failover.protocol import PartnerFactory
from dhcp6ha.failover.relationship import (
    CERTIFICATE_CHECK_INTERVAL,
    Coverage,
    DesiredLifetimes,
    FailoverRelationship,
)
from dhcp6ha.failover.tls import TLSMaterial
from dhcp6ha.interfaces import IRelationshipControl
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IANA,
    IAPD,
    ClientId,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    Message,
    MessageType,
    ServerId,
)
from dhcp6ha.service import StartupError
from dhcp6ha.testing import FakePeer, MemoryLeaseStore
from tests.certs import CertificateAuthority, Issued, expired

reactor: Any = globalReactor

S = EndpointState
NAME = "lan"
PRIMARY = "primary.test"
CLIENT = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x07"


def material(leaf: Issued, ca: CertificateAuthority) -> TLSMaterial:
    return TLSMaterial.fromPEM(leaf.certPEM, leaf.keyPEM, ca.pem)


def failoverConfig(role: FailoverRole, **changes: Any) -> FailoverConfig:
    config = FailoverConfig(
        name=NAME,
        role=role,
        partner_address=IPv6Address("::1"),
        partner_port=647,
        listen_address=IPv6Address("::1"),
        listen_port=0,
        certificate="unused",
        key="unused",
        ca="unused",
        partner_identity="::1" if role is FailoverRole.PRIMARY else PRIMARY,
        partner_identity_kind=IdentityKind.IP_ADDRESS
        if role is FailoverRole.PRIMARY
        else IdentityKind.DNS_NAME,
        mclt=3600,
        heartbeat_interval=1.0,
        unreachable_after=5.0,
        max_unacked=100,
        # The pair simulations run their turns at once: no gathering
        # (its own tests in test_queue).
        lazy_update_delay=0.0,
        max_clock_skew=5.0,
        auto_partner_down=0,
        prefix_share=0.5,
        handshake_timeout=5.0,
        idle_timeout=10.0,
        subnets=(),
    )
    return evolve(config, **changes)


@implementer(IStreamClientEndpoint)
class NeverConnects:
    """A client endpoint whose attempts never complete (cancellable)."""

    def __init__(self) -> None:
        self.attempts: list[Deferred[IProtocol]] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        d: Deferred[IProtocol] = Deferred()
        self.attempts.append(d)
        return d


def lease(address: str, lease_type: LeaseType = LeaseType.NA, length: int = 128) -> Lease:
    return Lease(
        lease_type=lease_type,
        address=IPv6Address(address),
        prefix_length=length,
        state=BindingState.ACTIVE,
        duid=CLIENT,
        iaid=1,
        start_time_of_state=1000.0,
        cltt=1000.0,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=1600.0,
    )


@implementer(IStreamServerEndpoint)
class PortInUse:
    """A server endpoint that cannot listen."""

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return fail(CannotListenError("::1", 647, OSError(98, "Address already in use")))


class CoverageTests(SynchronousTestCase):
    """What a relationship replicates: its subnets' pools and reservations."""

    def test_covers(self) -> None:
        """Addresses in the pools, prefixes of the delegated length, reservations."""
        coverage = Coverage(
            pools=(AddressPool(IPv6Address("2001:db8::100"), IPv6Address("2001:db8::1ff")),),
            pdPools=(PrefixPool(IPv6Network("2001:db8:100::/48"), 56),),
            addresses=frozenset({IPv6Address("2001:db8::5")}),
            prefixes=frozenset({IPv6Network("2001:db8:200::/56")}),
        )
        self.assertTrue(coverage.covers(lease("2001:db8::150")))
        self.assertTrue(coverage.covers(lease("2001:db8::5")))
        self.assertFalse(coverage.covers(lease("2001:db8::6")))
        self.assertTrue(coverage.covers(lease("2001:db8:100:1200::", LeaseType.PD, 56)))
        self.assertFalse(coverage.covers(lease("2001:db8:100:1200::", LeaseType.PD, 60)))
        self.assertTrue(coverage.covers(lease("2001:db8:200::", LeaseType.PD, 56)))
        self.assertFalse(coverage.covers(lease("2001:db8:300::", LeaseType.PD, 56)))
        self.assertTrue(Coverage(everything=True).covers(lease("2001:db8::6")))

    def test_canonical(self) -> None:
        """
        The canonical text (and digest) depends on what is covered, not on
        how the pools are written: order, overlaps and adjacent pieces do
        not change it; another range, delegated length or reservation does.
        """
        base = Coverage(
            pools=(AddressPool(IPv6Address("2001:db8::100"), IPv6Address("2001:db8::1ff")),),
            pdPools=(PrefixPool(IPv6Network("2001:db8:100::/47"), 56),),
            addresses=frozenset({IPv6Address("2001:db8::5")}),
            prefixes=frozenset({IPv6Network("2001:db8:200::/56")}),
        )
        self.assertEqual(
            base.canonical(),
            "na 2001:db8::100-2001:db8::1ff\n"
            "pd 2001:db8:100::-2001:db8:101:ffff:ffff:ffff:ffff:ffff/56\n"
            "reserved 2001:db8::5\n"
            "reserved 2001:db8:200::/56",
        )
        same = Coverage(
            pools=(
                AddressPool(IPv6Address("2001:db8::180"), IPv6Address("2001:db8::1ff")),
                AddressPool(IPv6Address("2001:db8::100"), IPv6Address("2001:db8::190")),
            ),
            pdPools=(
                PrefixPool(IPv6Network("2001:db8:101::/48"), 56),
                PrefixPool(IPv6Network("2001:db8:100::/48"), 56),
            ),
            addresses=base.addresses,
            prefixes=base.prefixes,
        )
        self.assertEqual(same.digest(), base.digest())
        others = [
            evolve(
                base,
                pools=(AddressPool(IPv6Address("2001:db8::100"), IPv6Address("2001:db8::1fe")),),
            ),
            evolve(base, pdPools=(PrefixPool(IPv6Network("2001:db8:100::/47"), 60),)),
            evolve(base, addresses=frozenset()),
            evolve(base, prefixes=frozenset({IPv6Network("2001:db8:200::/60")})),
        ]
        digests = {other.digest() for other in others} | {base.digest()}
        self.assertEqual(len(digests), 5)
        self.assertEqual(len(base.digest()), 32)
        self.assertEqual(Coverage(everything=True).canonical(), "everything")

    def test_sameAsPools(self) -> None:
        """
        Around the edges of overlapping, adjacent and separate pools, and of
        reservations, C{covers} answers what the pools themselves say.
        """
        pools = (
            AddressPool(IPv6Address("2001:db8::100"), IPv6Address("2001:db8::1ff")),
            AddressPool(IPv6Address("2001:db8::180"), IPv6Address("2001:db8::2ff")),
            AddressPool(IPv6Address("2001:db8::300"), IPv6Address("2001:db8::3ff")),
            AddressPool(IPv6Address("2001:db8::500"), IPv6Address("2001:db8::500")),
        )
        pdPools = (
            PrefixPool(IPv6Network("2001:db8:100::/48"), 56),
            PrefixPool(IPv6Network("2001:db8:100::/52"), 60),
            PrefixPool(IPv6Network("2001:db8:101::/48"), 56),
            PrefixPool(IPv6Network("2001:db8:200::/40"), 64),
        )
        addresses = frozenset({IPv6Address("2001:db8::5"), IPv6Address("2001:db8::400")})
        prefixes = frozenset({IPv6Network("2001:db8:300::/56"), IPv6Network("2001:db8:300::/64")})
        coverage = Coverage(pools, pdPools, addresses, prefixes)

        def expected(one: Lease) -> bool:
            if one.lease_type is LeaseType.PD:
                return one.prefix in prefixes or any(
                    one.prefix_length == pool.delegated_length and one.address in pool.prefix
                    for pool in pdPools
                )
            return one.prefix_length == 128 and (
                one.address in addresses or any(one.address in pool for pool in pools)
            )

        candidates: list[Lease] = []
        for edge in (0x0, 0x5, 0xFF, 0x100, 0x17F, 0x180, 0x1FF, 0x200, 0x2FF, 0x300, 0x3FF):
            for delta in (-1, 0, 1):
                text = str(IPv6Address(int(IPv6Address("2001:db8::")) + edge + delta))
                candidates.append(lease(text))
                candidates.append(lease(text, LeaseType.NA, 64))
        candidates += [lease("2001:db8::400"), lease("2001:db8::4ff"), lease("2001:db8::500")]
        for network in (
            "2001:db8:ff::/56",
            "2001:db8:100::/56",
            "2001:db8:100:ff00::/56",
            "2001:db8:101:ff00::/56",
            "2001:db8:102::/56",
            "2001:db8:100:fff0::/60",
            "2001:db8:100:ff0::/60",
            "2001:db8:100:1000::/60",
            "2001:db8:2ff:ffff::/64",
            "2001:db8:300::/64",
            "2001:db8:300::/56",
            "2001:db8:300::/60",
            "2001:db8:1ff::/56",
        ):
            prefix = IPv6Network(network)
            for length in (prefix.prefixlen, 56, 60, 64):
                if length >= prefix.prefixlen:
                    candidates.append(lease(str(prefix.network_address), LeaseType.PD, length))
        for one in candidates:
            self.assertEqual(coverage.covers(one), expected(one), (one.address, one.prefix_length))

    def test_hostBits(self) -> None:
        """A delegated prefix with host bits set is no prefix of a pool."""
        coverage = Coverage(pdPools=(PrefixPool(IPv6Network("2001:db8:100::/48"), 56),))
        self.assertFalse(coverage.covers(lease("2001:db8:100:1201::", LeaseType.PD, 56)))
        self.assertTrue(coverage.covers(lease("2001:db8:100:1200::", LeaseType.PD, 56)))

    def test_equality(self) -> None:
        """Coverages of the same pools are equal, hash alike and show only the pools."""
        one = Coverage(pdPools=(PrefixPool(IPv6Network("2001:db8:100::/48"), 56),))
        two = Coverage(pdPools=(PrefixPool(IPv6Network("2001:db8:100::/48"), 56),))
        self.assertEqual(one, two)
        self.assertEqual(hash(one), hash(two))
        self.assertNotIn("_prefixRanges", repr(one))


DAY = 86400
T0 = 1_700_000_000.0
PRIMARY_DUID = b"\x00\x04" + b"\x01" * 16
SECONDARY_DUID = b"\x00\x04" + b"\x02" * 16
DIRECT = Received(IPv6Address("fe80::1:2:3:4"), 546, "eth0", True)


def subnet(name: str = "lan", **changes: Any) -> SubnetConfig:
    """
    A subnet 2001:db8:1::/64 on eth0: addresses ::100 to ::1ff, /56s of
    2001:db8:100::/52, valid lifetime 3 days (section 4.4.1's example),
    PD valid lifetime 2 days.
    """
    values: dict[str, Any] = {
        "name": name,
        "prefix": IPv6Network("2001:db8:1::/64"),
        "interface": "eth0",
        "pools": (AddressPool(IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:1::1ff")),),
        "pd_pools": (PrefixPool(IPv6Network("2001:db8:100::/52"), 56),),
        "reservations": (),
        "preferred_lifetime": 2 * DAY,
        "valid_lifetime": 3 * DAY,
        "t1": 0,
        "t2": 0,
        "pd_preferred_lifetime": DAY,
        "pd_valid_lifetime": 2 * DAY,
        "rapid_commit": False,
        "preference": 0,
        "dns_servers": (),
        "domain_search": (),
        "sol_max_rt": None,
        "information_refresh_time": None,
    }
    values.update(changes)
    return SubnetConfig(**values)


def serverConfig(*subnets: SubnetConfig, failover: tuple[FailoverConfig, ...] = ()) -> ServerConfig:
    return ServerConfig(
        path="test.ini",
        server=ServerSection(
            interfaces=("eth0",),
            address=IPv6Address("::"),
            port=547,
            database=":memory:",
            duid=None,
            decline_quarantine=600,
            reclaim_interval=10.0,
            commit_delay=0.0,
        ),
        subnets=subnets or (subnet(),),
        failover=failover,
    )


@implementer(IStreamServerEndpoint)
class NeverListens:
    """A server endpoint whose listening never completes."""

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return Deferred()


class MemoryPair:
    """
    A primary and a secondary L{FailoverRelationship} on one L{Clock},
    their sessions connected through iosim (no TLS, no sockets), and an
    L{Engine} deciding for the primary's clients with the relationship's
    policy, committing and notifying like the DHCPv6 adapter.
    """

    def __init__(self, config: ServerConfig, **changes: Any) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        ca = CertificateAuthority()
        changes.setdefault("heartbeat_interval", 30.0)
        changes.setdefault("unreachable_after", 300.0)
        changes.setdefault("idle_timeout", 600.0)
        changes.setdefault("subnets", tuple(s.name for s in config.subnets))
        self.config = config
        self.primaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        self.secondaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        self.primary = FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY, **changes),
            self.clock,
            lambda: self.primaryStore,
            serverConfig=config,
            serverDuid=lambda: PRIMARY_DUID,
            material=material(ca.issue(dns=[PRIMARY]), ca),
            tcpEndpoint=NeverConnects(),
        )
        self.secondary = FailoverRelationship(
            failoverConfig(FailoverRole.SECONDARY, **changes),
            self.clock,
            lambda: self.secondaryStore,
            serverConfig=config,
            serverDuid=lambda: SECONDARY_DUID,
            material=material(ca.issue(ips=["::1"]), ca),
            tcpEndpoint=NeverListens(),
        )
        self.pump: IOPump | None = None
        self.engine: Engine | None = None

    def start(self) -> None:
        """Start both, connect them, and let them reach NORMAL."""
        self.secondary.startService()
        self.primary.startService()
        assert self.primary.session is not None and self.secondary.session is not None
        client = PartnerFactory(self.primary.session, initiator=True).buildProtocol(None)
        server = PartnerFactory(self.secondary.session, initiator=False).buildProtocol(None)
        self.pump = connect(
            server,
            makeFakeServer(server),
            client,
            makeFakeClient(client),
            greet=False,
            clock=self.clock,
        )
        client.startConnect()
        self.flush()
        assert self.primary.policy is not None
        self.engine = Engine(self.config, self.primaryStore, self.primary.policy, PRIMARY_DUID)

    def flush(self) -> None:
        assert self.pump is not None
        self.pump.flush()

    def advance(self, seconds: float, step: float = 10.0) -> None:
        """Let C{seconds} pass, the connection carrying CONTACTs meanwhile."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
            self.flush()

    def stop(self) -> None:
        self.primary.stopService()
        self.flush()
        self.secondary.stopService()
        self.flush()

    def decide(self, message: Message) -> Message:
        """The primary's reply to C{message}, its changes committed and notified."""
        engine = self.engine
        assert engine is not None
        decision = engine.handle(message, DIRECT, self.clock.seconds())
        assert decision is not None, engine.counters
        if decision.changes:
            self.successResultOf(self.primaryStore.commit(decision.changes))
        assert self.primary.policy is not None
        for lease, policy in decision.notifications(self.primary.policy):
            policy.bindingChanged(lease)
        assert isinstance(decision.reply, Message)
        return decision.reply

    @staticmethod
    def successResultOf(d: Deferred[Any]) -> Any:
        result: list[Any] = []
        d.addBoth(result.append)
        assert result, "not fired"
        return result[0]


def clientMessage(msg_type: MessageType, *options: Any, server: bytes | None = None) -> Message:
    head: list[Any] = [ClientId(CLIENT)]
    if server is not None:
        head.append(ServerId(server))
    head.append(ElapsedTime(0))
    return Message(msg_type, 0x123456, tuple(head) + options)


def granted(reply: Message) -> tuple[IAAddress, IAPrefix]:
    """The address and prefix a reply grants (one IA_NA, one IA_PD)."""
    [na] = [o for o in reply.options if isinstance(o, IANA)]
    [pd] = [o for o in reply.options if isinstance(o, IAPD)]
    [address] = [o for o in na.options if isinstance(o, IAAddress)]
    [prefix] = [o for o in pd.options if isinstance(o, IAPrefix)]
    return address, prefix


class DesiredLifetimeTests(SynchronousTestCase):
    """
    RFC 8156 section 4.4: the partner lifetime proposed is built from the
    configured (desired) lifetime, so that the first lease gets MCLT and,
    once the partner acked the proposal, the next renewal the configured
    lifetime.
    """

    def test_lookup(self) -> None:
        """
        The subnet holding the binding decides: valid-lifetime for an
        address (pool, reservation, on-link), pd-valid-lifetime for a
        prefix (pool, reservation); never less than what the binding got;
        a binding of no subnet keeps its own.
        """
        other = subnet(
            "other",
            prefix=IPv6Network("2001:db8:2::/64"),
            interface="eth1",
            pools=(AddressPool(IPv6Address("2001:db8:2::100"), IPv6Address("2001:db8:2::1ff")),),
            pd_pools=(),
            reservations=(
                Reservation(
                    "r",
                    CLIENT,
                    (IPv6Address("2001:db8:2::5"),),
                    (IPv6Network("2001:db8:300::/56"),),
                ),
            ),
            valid_lifetime=1000,
            pd_valid_lifetime=2000,
        )
        desired = DesiredLifetimes((subnet(), other))
        self.assertEqual(desired(lease("2001:db8:1::150")), 3 * DAY)
        self.assertEqual(desired(lease("2001:db8:1::5")), 3 * DAY)  # on-link
        self.assertEqual(desired(lease("2001:db8:2::150")), 1000)
        self.assertEqual(desired(lease("2001:db8:2::5")), 1000)
        self.assertEqual(desired(lease("2001:db8:100:300::", LeaseType.PD, 56)), 2 * DAY)
        self.assertEqual(desired(lease("2001:db8:300::", LeaseType.PD, 56)), 2000)
        # A /60 is not a /56 of the pool; a prefix of no subnet: its own lifetime.
        self.assertEqual(desired(lease("2001:db8:100:300::", LeaseType.PD, 60)), 600)
        self.assertEqual(desired(lease("2001:db8:77::1")), 600)
        # Longer than configured (the configuration shortened it): kept.
        self.assertEqual(desired(evolve(lease("2001:db8:2::150"), valid_lifetime=5000)), 5000)
        config = serverConfig(subnet(), other)
        self.assertEqual(
            DesiredLifetimes.of(config, failoverConfig(FailoverRole.PRIMARY, subnets=("other",))),
            DesiredLifetimes((other,)),
        )

    def test_policyProposesDesired(self) -> None:
        """A started relationship's policy proposes from the subnet's lifetimes."""
        pair = MemoryPair(serverConfig())
        pair.primary.startService()
        self.addCleanup(pair.primary.stopService)
        policy = pair.primary.policy
        assert policy is not None
        first = evolve(lease("2001:db8:1::150"), valid_lifetime=3600, cltt=T0)
        self.assertEqual(policy.partnerLifetime(first), T0 + 1800 + 3 * DAY)
        prefix = evolve(lease("2001:db8:100:300::", LeaseType.PD, 56), valid_lifetime=3600, cltt=T0)
        self.assertEqual(policy.partnerLifetime(prefix), T0 + 1800 + 2 * DAY)
        assert pair.primary.queue is not None
        self.assertEqual(pair.primary.queue.partnerLifetime, policy.partnerLifetime)

    def test_mcltExample(self) -> None:
        """
        Section 4.4.1 with MCLT 1 hour and a desired lifetime of 3 days
        (2 for prefixes), between a primary and a secondary in NORMAL: the
        first Reply grants MCLT; the binding update proposes 1/2 hour + 3
        days and the secondary acks it; the Renew at T1 (1/2 hour later)
        gets the full 3 days, within acked + MCLT; the next update proposes
        1.5 + 3 days.  Every lifetime sent stays within max(acked, now) +
        MCLT.
        """
        pair = MemoryPair(serverConfig(), prefix_share=0.0, mclt=3600)
        pair.start()
        self.addCleanup(pair.stop)
        self.assertEqual(pair.primary.status().state, "normal")
        self.assertEqual(pair.secondary.status().state, "normal")

        reply = pair.decide(
            clientMessage(MessageType.REQUEST, IANA(1, 0, 0), IAPD(2, 0, 0), server=PRIMARY_DUID)
        )
        address, prefix = granted(reply)
        self.assertEqual((address.valid_lifetime, prefix.valid_lifetime), (3600, 3600))
        pair.flush()
        na = pair.primaryStore.get(address.address, 128)
        pd = pair.primaryStore.get(prefix.prefix, prefix.prefix_length)
        assert na is not None and pd is not None
        self.assertEqual(pair.primaryStore.pendingCount(NAME), 0)
        self.assertEqual(na.partner_lifetime_acked, T0 + 1800 + 3 * DAY)
        self.assertEqual(pd.partner_lifetime_acked, T0 + 1800 + 2 * DAY)
        mirror = pair.secondaryStore.get(address.address, 128)
        assert mirror is not None
        self.assertEqual((mirror.state, mirror.expires), (BindingState.ACTIVE, T0 + 3600))

        pair.advance(1800)
        now = pair.clock.seconds()
        renewal = pair.decide(
            clientMessage(
                MessageType.RENEW,
                IANA(1, 0, 0, (IAAddress(address.address, 0, 0),)),
                IAPD(2, 0, 0, (IAPrefix(0, 0, prefix.prefix_length, prefix.prefix),)),
                server=PRIMARY_DUID,
            )
        )
        address2, prefix2 = granted(renewal)
        self.assertEqual(address2.address, address.address)
        self.assertEqual((address2.valid_lifetime, prefix2.valid_lifetime), (3 * DAY, 2 * DAY))
        self.assertLessEqual(now + address2.valid_lifetime, na.partner_lifetime_acked + 3600)
        self.assertLessEqual(now + prefix2.valid_lifetime, pd.partner_lifetime_acked + 3600)
        pair.flush()
        na = pair.primaryStore.get(address.address, 128)
        pd = pair.primaryStore.get(prefix.prefix, prefix.prefix_length)
        assert na is not None and pd is not None
        self.assertEqual(na.partner_lifetime_acked, now + 1.5 * DAY + 3 * DAY)
        self.assertEqual(pd.partner_lifetime_acked, now + 1 * DAY + 2 * DAY)


class PrefixReserveTests(SynchronousTestCase):
    """
    The secondary's reserve of delegable prefixes between two relationships
    in NORMAL: capped by max-backup-prefixes, topped up by a later
    PoolRequest, and by the primary itself once half of it is used.
    """

    def backups(self, store: MemoryLeaseStore) -> list[IPv6Address]:
        return [
            found.address
            for found in store.iterLeases(100)
            if found.state is BindingState.FREE_BACKUP
        ]

    def secondaryLeases(self, pair: MemoryPair, address: IPv6Address) -> None:
        """The secondary leases one of its FREE-BACKUP prefixes (and tells the primary)."""
        pair.advance(10)
        now = pair.clock.seconds()
        leased = evolve(
            lease(str(address), LeaseType.PD, 56),
            start_time_of_state=now,
            cltt=now,
            expires=now + 600,
        )
        pair.successResultOf(pair.secondaryStore.commit([leased]))
        assert pair.secondary.policy is not None
        pair.secondary.policy.bindingChanged(leased)
        pair.flush()

    def test_reserve(self) -> None:
        """
        16 prefixes, share 0.5, max-backup-prefixes 4: the secondary holds
        4 (not 8).  It leases one: 3 left, above half, the primary waits;
        the secondary's next PoolRequest tops it up to 4.  It leases three
        more: 1 left, below half: the primary tops it up to 4 at once.  The
        reserve is never above the cap.
        """
        pair = MemoryPair(serverConfig(), prefix_share=0.5, max_backup_prefixes=4)
        pair.start()
        self.addCleanup(pair.stop)
        share = pair.primary.prefixShare
        assert share is not None
        self.assertEqual(share.maxBackup, 4)
        held = self.backups(pair.secondaryStore)
        self.assertEqual(len(held), 4)
        self.assertEqual(sorted(self.backups(pair.primaryStore)), sorted(held))
        self.assertIsNotNone(pair.primaryStore.getMetadata(share.reachKey(share.pools[0]) or ""))

        self.secondaryLeases(pair, held[0])
        self.assertEqual(len(self.backups(pair.secondaryStore)), 3)
        self.assertEqual(list(share.held.values()), [3])
        assert pair.secondary.session is not None
        protocol = pair.secondary.session.current
        assert protocol is not None
        protocol.sendPoolRequest()
        pair.flush()
        refilled = self.backups(pair.secondaryStore)
        self.assertEqual(len(refilled), 4)
        self.assertNotIn(held[0], refilled)

        for address in refilled[:3]:
            self.secondaryLeases(pair, address)
        pair.flush()
        final = self.backups(pair.secondaryStore)
        self.assertEqual(len(final), 4)
        self.assertEqual(sorted(self.backups(pair.primaryStore)), sorted(final))
        self.assertEqual(list(share.held.values()), [4])
        self.assertEqual(pair.primaryStore.pendingCount(NAME), 0)
        self.assertEqual(pair.secondaryStore.pendingCount(NAME), 0)


class ControlTests(SynchronousTestCase):
    """The operator's view of a relationship whose partner is not there."""

    def setUp(self) -> None:
        ca = CertificateAuthority()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryLeaseStore(replicate=lambda lease: NAME)
        self.never = NeverConnects()
        self.relationship = FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY),
            self.clock,
            lambda: self.store,
            material=material(ca.issue(dns=[PRIMARY]), ca),
            tcpEndpoint=self.never,
        )

    def test_interface(self) -> None:
        """It is an IRelationshipControl named after the relationship."""
        self.assertTrue(verifyObject(IRelationshipControl, self.relationship))
        self.assertEqual(self.relationship.name, NAME)

    def test_statusBeforeStart(self) -> None:
        """Not started: state init."""
        self.assertEqual(
            self.relationship.status(),
            RelationshipStatus(name=NAME, role="primary", state="init", state_since=0.0),
        )

    def test_statusStarted(self) -> None:
        """Started, connecting: STARTUP, not connected, a connection attempt made."""
        self.relationship.startService()
        status = self.relationship.status()
        self.assertEqual(status.state, "startup")
        self.assertFalse(status.connected)
        self.assertEqual(status.unacked_updates, 0)
        assert status.replication is not None
        self.assertEqual((status.replication["sent"], status.replication["lag"]["count"]), (0, 0))
        self.assertEqual(len(self.never.attempts), 1)
        self.clock.advance(10)
        self.assertEqual(self.relationship.status().state, "recover")

    def test_partnerDown(self) -> None:
        """partner-down from STARTUP: PARTNER-DOWN, stored, described."""
        self.relationship.startService()
        result = self.successResultOf(self.relationship.partnerDown())
        self.assertEqual(result, {"state": "partner-down", "since": self.clock.seconds()})
        endpoint = self.relationship.endpoint
        assert endpoint is not None
        self.assertIn('"partner-down"', self.store.getMetadata(endpoint.metadataKey) or "")

    def serving(self, config: FailoverConfig) -> tuple[MemoryLeaseStore, str]:
        """
        Start a relationship of C{config} and take it to PARTNER-DOWN (a
        serving state).

        @return: its store and the metadata key of its endpoint's record.
        """
        ca = CertificateAuthority()
        store = MemoryLeaseStore(replicate=lambda lease: NAME)
        relationship = FailoverRelationship(
            config,
            self.clock,
            lambda: store,
            material=material(ca.issue(dns=[PRIMARY]), ca),
            tcpEndpoint=NeverConnects(),
        )
        relationship.startService()
        self.addCleanup(relationship.stopService)
        self.successResultOf(relationship.partnerDown())
        endpoint = relationship.endpoint
        assert endpoint is not None
        return store, endpoint.metadataKey

    def test_operationRecordInterval(self) -> None:
        """
        C{operation-record-interval} is how often the serving endpoint
        stores its time of operation, and is stored with it.
        """
        store, key = self.serving(
            failoverConfig(FailoverRole.PRIMARY, operation_record_interval=7.0)
        )
        entered = self.clock.seconds()
        record = FailoverRecord.fromJSON(store.getMetadata(key) or "")
        self.assertEqual((record.last_operation, record.record_interval), (entered, 7.0))
        self.clock.advance(6)
        record = FailoverRecord.fromJSON(store.getMetadata(key) or "")
        self.assertEqual(record.last_operation, entered)
        self.clock.advance(1)
        record = FailoverRecord.fromJSON(store.getMetadata(key) or "")
        self.assertEqual(record.last_operation, entered + 7)

    def test_operationRecordIntervalDefault(self) -> None:
        """By default the time of operation is stored every 60 s."""
        config = failoverConfig(FailoverRole.PRIMARY)
        self.assertEqual(config.operation_record_interval, 60.0)
        store, key = self.serving(config)
        entered = self.clock.seconds()
        self.clock.advance(59)
        record = FailoverRecord.fromJSON(store.getMetadata(key) or "")
        self.assertEqual((record.last_operation, record.record_interval), (entered, 60.0))
        self.clock.advance(1)
        record = FailoverRecord.fromJSON(store.getMetadata(key) or "")
        self.assertEqual(record.last_operation, entered + 60)

    def test_partnerDownRefused(self) -> None:
        """In POTENTIAL-CONFLICT, partner-down is refused with a ControlError naming the state."""
        self.relationship.startService()
        endpoint = self.relationship.endpoint
        assert endpoint is not None
        endpoint.connected(FakePeer())
        endpoint.stateReceived(S.POTENTIAL_CONFLICT, self.clock.seconds())
        self.assertEqual(endpoint.state, S.POTENTIAL_CONFLICT)
        with capturedLogs():
            failure = self.failureResultOf(self.relationship.partnerDown(), ControlError)
        self.assertIn("refused in state potential-conflict", str(failure.value))

    def test_notRunning(self) -> None:
        """partner-down and sync before start: ControlError."""
        self.failureResultOf(self.relationship.partnerDown(), ControlError)
        self.failureResultOf(self.relationship.sync(), ControlError)

    def test_syncNotConnected(self) -> None:
        """sync without a partner connection: ControlError."""
        self.relationship.startService()
        failure = self.failureResultOf(self.relationship.sync(), ControlError)
        self.assertEqual(str(failure.value), "not connected to the partner")

    def test_stop(self) -> None:
        """Stopping stores PAUSED and cancels the connection attempt."""
        self.relationship.startService()
        self.successResultOf(self.relationship.stopService())
        endpoint = self.relationship.endpoint
        assert endpoint is not None
        self.assertEqual(endpoint.state, S.PAUSED)
        self.assertIn('"paused"', self.store.getMetadata(endpoint.metadataKey) or "")
        self.assertTrue(self.never.attempts[0].called)  # cancelled
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_listenFailure(self) -> None:
        """
        A secondary that cannot bind its port fails to start with a
        StartupError naming the address; its endpoint never started.
        """
        ca = CertificateAuthority()
        secondary = FailoverRelationship(
            failoverConfig(FailoverRole.SECONDARY, listen_port=647),
            self.clock,
            lambda: self.store,
            material=material(ca.issue(ips=["::1"]), ca),
            tcpEndpoint=PortInUse(),
        )
        with self.assertRaises(StartupError) as raised:
            secondary.startService()
        self.assertIn("failover lan: cannot listen on [::1]:647", str(raised.exception))
        self.assertIn("Address already in use", str(raised.exception))
        endpoint = secondary.endpoint
        assert endpoint is not None
        self.assertEqual(endpoint.state, S.INIT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_storedPartnerDuid(self) -> None:
        """A partner DUID learnt before a restart is known to the policy at once."""
        self.store.setMetadata("failover.lan.partner-duid", "000401020304")
        self.relationship.startService()
        policy = self.relationship.policy
        assert policy is not None
        self.assertEqual(policy.partnerDuid, bytes.fromhex("000401020304"))

    def test_partnerWithOurDuid(self) -> None:
        """A partner announcing this server's own DUID is reported as an error."""
        ours = bytes.fromhex("000401020304")
        ca = CertificateAuthority()
        relationship = FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY),
            self.clock,
            lambda: self.store,
            material=material(ca.issue(dns=[PRIMARY]), ca),
            tcpEndpoint=self.never,
            serverDuid=lambda: ours,
        )
        relationship.startService()
        with capturedLogs() as events:
            # What the session calls when Connect(reply) names the partner's DUID.
            relationship._partnerDuidLearnt(bytes.fromhex("000401020305"))
            self.assertEqual(events, [])
            relationship._partnerDuidLearnt(ours)
        [error] = events
        self.assertIn("the partner has this server's own DUID", error["log_format"])
        self.assertEqual(error["duid"], ours.hex())


class CertificateCheckTests(SynchronousTestCase):
    """
    A relationship checks this server's own certificate when it starts and
    daily while it runs, and warns (naming the relationship and the file) if
    it has expired, is not yet valid or expires within 30 days.

    The certificates' validity is relative to the wall clock (L{tests.certs}):
    the L{Clock} is set from each certificate's own dates.
    """

    CERTIFICATE = "/etc/dhcp6ha/primary.pem"

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.clock = Clock()
        self.store = MemoryLeaseStore(replicate=lambda lease: NAME)

    def relationship(self, leaf: Issued) -> FailoverRelationship:
        return FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY, certificate=self.CERTIFICATE),
            self.clock,
            lambda: self.store,
            material=material(leaf, self.ca),
            tcpEndpoint=NeverConnects(),
        )

    def warnings(self, events: list[LogEvent]) -> list[LogEvent]:
        return [event for event in events if event["log_level"] is LogLevel.warn]

    def test_expiredAtStart(self) -> None:
        """An expired certificate is a warning at start, with the file and the problem."""
        relationship = self.relationship(expired(self.ca, dns=[PRIMARY]))
        self.clock.advance(relationship.material.notValidAfter.timestamp() + 3600)
        with capturedLogs() as events:
            relationship.startService()
        [warning] = self.warnings(events)
        self.assertEqual(warning["relationship"], NAME)
        self.assertEqual(warning["certificate"], self.CERTIFICATE)
        self.assertEqual(
            warning["problem"],
            "this server's certificate expired at "
            + relationship.material.notValidAfter.isoformat(),
        )
        text = formatEvent(warning)
        self.assertIn("Failover lan: this server's certificate expired at", text)
        self.assertIn(self.CERTIFICATE, text)
        # It still starts: the server serves its clients.
        self.assertTrue(relationship.running)
        self.assertEqual(relationship.status().state, "startup")

    def test_notYetValid(self) -> None:
        """A certificate that is not valid yet is a warning at start."""
        relationship = self.relationship(self.ca.issue(dns=[PRIMARY]))
        self.clock.advance(relationship.material.notValidBefore.timestamp() - 60)
        with capturedLogs() as events:
            relationship.startService()
        [warning] = self.warnings(events)
        self.assertIn("not valid before", warning["problem"])

    def test_validCertificate(self) -> None:
        """A certificate valid for more than 30 days is not mentioned."""
        now = datetime.datetime.now(datetime.UTC)
        leaf = self.ca.issue(dns=[PRIMARY], notAfter=now + datetime.timedelta(days=400))
        relationship = self.relationship(leaf)
        self.clock.advance(relationship.material.notValidBefore.timestamp() + 86400)
        with capturedLogs() as events:
            relationship.startService()
        self.assertEqual(self.warnings(events), [])
        self.assertIsNone(relationship.checkCertificate())

    def test_dailyRecheck(self) -> None:
        """
        A running relationship checks again every day: the warning starts
        30 days before the end, comes daily, and says when it has expired;
        stopping ends the checks.
        """
        now = datetime.datetime.now(datetime.UTC)
        leaf = self.ca.issue(dns=[PRIMARY], notAfter=now + datetime.timedelta(days=400))
        relationship = self.relationship(leaf)
        end = relationship.material.notValidAfter.timestamp()
        self.clock.advance(end - 32 * 86400)
        with capturedLogs() as events:
            relationship.startService()
            self.clock.advance(CERTIFICATE_CHECK_INTERVAL)
        self.assertEqual(self.warnings(events), [])
        with capturedLogs() as events:
            self.clock.advance(CERTIFICATE_CHECK_INTERVAL)
        [warning] = self.warnings(events)
        self.assertIn("expires in 30 days", warning["problem"])
        with capturedLogs() as events:
            self.clock.advance(CERTIFICATE_CHECK_INTERVAL)
        [warning] = self.warnings(events)
        self.assertIn("expires in 29 days", warning["problem"])
        with capturedLogs() as events:
            for _ in range(30):
                self.clock.advance(CERTIFICATE_CHECK_INTERVAL)
        warnings = self.warnings(events)
        self.assertEqual(len(warnings), 30)
        self.assertIn("expired at", warnings[-1]["problem"])
        with capturedLogs():
            self.successResultOf(relationship.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        with capturedLogs() as events:
            self.clock.advance(10 * CERTIFICATE_CHECK_INTERVAL)
        self.assertEqual(events, [])


class LoopbackTests(TestCase):
    """
    Two relationships, primary and secondary, over real TLS on ::1 with the
    real reactor: they connect, reach NORMAL, replicate, and the survivor
    of a stop goes to COMMUNICATIONS-INTERRUPTED.
    """

    timeout = 30

    def setUp(self) -> None:
        self.ca = CertificateAuthority("pair CA")
        self.primaryLeaf = self.ca.issue("primary", dns=[PRIMARY])
        self.secondaryLeaf = self.ca.issue("secondary", ips=["::1"])

    async def waitFor(self, condition: Any, what: str, seconds: float = 10.0) -> None:
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail("timed out waiting for " + what)

    async def test_pair(self) -> None:
        """
        The primary connects, both go to NORMAL (first start), a binding
        replicates, the control status shows the partner, and when the
        primary stops the secondary is in COMMUNICATIONS-INTERRUPTED.
        """
        secondaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        primaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        secondary = FailoverRelationship(
            failoverConfig(FailoverRole.SECONDARY),
            reactor,
            lambda: secondaryStore,
            material=material(self.secondaryLeaf, self.ca),
            serverDuid=lambda: b"\x00\x04" + b"\x02" * 16,
        )
        secondary.startService()
        self.addCleanup(secondary.stopService)
        port = await secondary.whenListening()
        primary = FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY, partner_port=port.getHost().port),
            reactor,
            lambda: primaryStore,
            material=material(self.primaryLeaf, self.ca),
            serverDuid=lambda: b"\x00\x04" + b"\x01" * 16,
            retryPolicy=lambda attempt: 0.1,
        )
        primary.startService()
        self.addCleanup(primary.stopService)

        def normal() -> bool:
            return primary.status().state == "normal" and secondary.status().state == "normal"

        await self.waitFor(normal, "both NORMAL")
        status = primary.status()
        self.assertTrue(status.connected)
        self.assertEqual(status.partner_state, "normal")
        assert primary.policy is not None and secondary.policy is not None
        self.assertEqual(primary.policy.partnerDuid, b"\x00\x04" + b"\x02" * 16)
        self.assertEqual(secondary.policy.partnerDuid, b"\x00\x04" + b"\x01" * 16)
        self.assertEqual(primary.stats.authenticated, 1)
        self.assertEqual(secondary.stats.authenticated, 1)

        granted = lease("2001:db8::10")
        await primaryStore.commit([granted])
        assert primary.queue is not None
        primary.queue.enqueue(granted)
        await self.waitFor(
            lambda: (
                secondaryStore.get(granted.address, 128) is not None
                and primaryStore.pendingCount(NAME) == 0
            ),
            "the binding replicated and acked",
        )
        result = await secondary.sync()
        self.assertEqual(result, {"requested": True, "unacked_updates": 0})

        await primary.stopService()
        await self.waitFor(
            lambda: secondary.status().state == "communications-interrupted",
            "the secondary in COMMUNICATIONS-INTERRUPTED",
        )
        self.assertFalse(secondary.status().connected)
        self.assertEqual(secondary.status().partner_state, "paused")
        await secondary.stopService()
        # Let the queues' and TLS's last calls run.
        await deferLater(reactor, 0.05, lambda: None)

    async def test_refusedConnectRetried(self) -> None:
        """
        A secondary with another MCLT refuses every Connect: the primary
        counts each as a failed attempt and tries again (its ClientService
        never sees an established connection), and neither side leaves
        STARTUP's successor states for NORMAL.
        """
        secondaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        primaryStore = MemoryLeaseStore(replicate=lambda lease: NAME)
        secondary = FailoverRelationship(
            failoverConfig(FailoverRole.SECONDARY, mclt=1800),
            reactor,
            lambda: secondaryStore,
            material=material(self.secondaryLeaf, self.ca),
        )
        secondary.startService()
        self.addCleanup(secondary.stopService)
        port = await secondary.whenListening()
        attempts: list[int] = []

        def retry(failures: int) -> float:
            attempts.append(failures)
            return 0.05

        primary = FailoverRelationship(
            failoverConfig(FailoverRole.PRIMARY, partner_port=port.getHost().port),
            reactor,
            lambda: primaryStore,
            material=material(self.primaryLeaf, self.ca),
            retryPolicy=retry,
        )
        primary.startService()
        self.addCleanup(primary.stopService)
        assert secondary.session is not None and primary.session is not None
        # Wait on the primary's side, not the secondary's: the secondary
        # counts a refusal before its answer is written, and the primary's
        # attempt fails (and the retry policy is called) only once that
        # answer has crossed the connection, a reactor turn or more later.
        await self.waitFor(lambda: len(attempts) >= 3, "three failed attempts")
        self.assertGreaterEqual(secondary.session.refusals, 3)
        self.assertGreaterEqual(primary.session.refusals, 3)
        # Failed attempts in a row: the retry policy sees 1, 2, 3...
        self.assertEqual(attempts[:3], [1, 2, 3])
        self.assertFalse(primary.status().connected)
        self.assertNotEqual(primary.status().state, "normal")
        self.assertNotEqual(secondary.status().state, "normal")
        await primary.stopService()
        await secondary.stopService()
        await deferLater(reactor, 0.05, lambda: None)
