"""
Tests for L{dhcp6ha.failover.relationship}: the relationship service, its
operator control, the Connect exchange inside the primary's endpoint, and
one pair of relationships over real TLS on loopback.
"""

from __future__ import annotations

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
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.config import (
    AddressPool,
    FailoverConfig,
    FailoverRole,
    IdentityKind,
    PrefixPool,
)
from dhcp6ha.control import ControlError, RelationshipStatus
from dhcp6ha.failover.machine import EndpointState
from dhcp6ha.failover.relationship import Coverage, FailoverRelationship
from dhcp6ha.failover.tls import TLSMaterial
from dhcp6ha.interfaces import IRelationshipControl
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.service import StartupError
from dhcp6ha.testing import FakePeer, MemoryLeaseStore
from tests.certs import CertificateAuthority, Issued

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
        await self.waitFor(
            lambda: secondary.session is not None and secondary.session.refusals >= 3,
            "three refusals",
        )
        self.assertGreaterEqual(primary.session.refusals, 2)
        # Failed attempts in a row: the retry policy sees 1, 2, 3...
        self.assertEqual(attempts[:3], [1, 2, 3])
        self.assertFalse(primary.status().connected)
        self.assertNotEqual(primary.status().state, "normal")
        self.assertNotEqual(secondary.status().state, "normal")
        await primary.stopService()
        await secondary.stopService()
        await deferLater(reactor, 0.05, lambda: None)
