"""
Tests for L{dhcp6ha.engine}: RFC 8415 server decisions, sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

from attrs import define, evolve
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.allocation import StandalonePolicy, SubnetPolicies
from dhcp6ha.config import (
    PrefixPool,
    Reservation,
    ServerConfig,
    ServerSection,
    SubnetConfig,
)
from dhcp6ha.engine import (
    DROP_LOG_INTERVAL,
    MAX_RELAY_DEPTH,
    Decision,
    Engine,
    Received,
    timers,
)
from dhcp6ha.failover.machine import EndpointState, Role
from dhcp6ha.failover.policy import FailoverPolicy
from dhcp6ha.interfaces import IAllocationPolicy, IFailoverPolicy, IRenewalPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IANA,
    IAPD,
    IATA,
    ClientFQDN,
    ClientId,
    DNSServers,
    DomainList,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    InfMaxRt,
    InformationRefreshTime,
    InterfaceId,
    Message,
    MessageType,
    Option,
    OptionCode,
    OptionRequest,
    Preference,
    RapidCommit,
    RelayMessage,
    RelayMessageOption,
    ServerId,
    SolMaxRt,
    StatusCode,
    StatusCodeOption,
    decode,
    encode,
)
from dhcp6ha.testing import FakeUpdateQueue, MemoryLeaseStore
from tests.test_allocation import activeLease, addressPool, clientDuid, makeSubnet

NOW = 1_700_000_000.0
SERVER_DUID = b"\x00\x02\x00\x00\x00\x09dhcp6ha-test"
OTHER_SERVER = b"\x00\x02\x00\x00\x00\x09other-server"
PARTNER = b"\x00\x02\x00\x00\x00\x09the-partner!"
CLIENT = clientDuid(1)
DIRECT = Received(IPv6Address("fe80::1:2:3:4"), 546, "eth0", True)
RELAY = Received(IPv6Address("2001:db8:ffff::1"), 547, "eth1", False)
LAN = IPv6Network("2001:db8:1::/64")

_O = TypeVar("_O")


def makeConfig(*subnets: SubnetConfig, quarantine: int = 600) -> ServerConfig:
    return ServerConfig(
        path="test.ini",
        server=ServerSection(
            interfaces=("eth0",),
            address=IPv6Address("::"),
            port=547,
            database=":memory:",
            duid=SERVER_DUID,
            decline_quarantine=quarantine,
            reclaim_interval=10.0,
            commit_delay=0.005,
        ),
        subnets=subnets or (makeSubnet(),),
    )


def message(
    msg_type: int,
    *options: Option,
    duid: bytes | None = CLIENT,
    server: bytes | None = None,
    xid: int = 0x123456,
) -> Message:
    """A client message with a Client Identifier (unless C{duid} is None)."""
    head: list[Option] = []
    if duid is not None:
        head.append(ClientId(duid))
    if server is not None:
        head.append(ServerId(server))
    head.append(ElapsedTime(0))
    return Message(msg_type, xid, tuple(head) + options)


def na(iaid: int = 1, *addresses: str) -> IANA:
    return IANA(iaid, 0, 0, tuple(IAAddress(IPv6Address(a), 0, 0) for a in addresses))


def pd(iaid: int = 1, *prefixes: str) -> IAPD:
    out = []
    for text in prefixes:
        network = IPv6Network(text)
        out.append(IAPrefix(0, 0, network.prefixlen, network.network_address))
    return IAPD(iaid, 0, 0, tuple(out))


def find(options: Sequence[Option], kind: type[_O]) -> list[_O]:
    return [o for o in options if isinstance(o, kind)]


def one(options: Sequence[Option], kind: type[_O]) -> _O:
    found = find(options, kind)
    assert len(found) == 1, (kind, options)
    return found[0]


def statusOf(options: Sequence[Option]) -> int | None:
    found = find(options, StatusCodeOption)
    return found[0].code if found else None


@implementer(IAllocationPolicy)
class FakePolicy:
    """
    A policy that refuses odd addresses, caps lifetimes, can refuse to
    answer, and records every call.
    """

    def __init__(self, cap: int | None = None, answer: bool = True) -> None:
        self.cap = cap
        self.answer = answer
        self.answerOthers: set[int] = set()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

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
        self.calls.append(("mayAllocate", (address, prefix_length, existing, duid, iaid, now)))
        return int(address) % 2 == 0 if prefix_length == 128 else True

    def maxValidLifetime(self, existing: Lease | None, desired: int, now: float) -> int:
        self.calls.append(("maxValidLifetime", (existing, desired, now)))
        return desired if self.cap is None else min(desired, self.cap)

    def respondsTo(self, msg_type: int, addressed_to_us: bool) -> bool:
        self.calls.append(("respondsTo", (msg_type, addressed_to_us)))
        if not addressed_to_us and msg_type in (3, 5, 8, 9):
            return msg_type in self.answerOthers
        return self.answer

    def bindingChanged(self, lease: Lease) -> None:
        self.calls.append(("bindingChanged", (lease,)))


@implementer(IFailoverPolicy)
class FakeFailoverPolicy(FakePolicy):
    """
    A L{FakePolicy} that is also a failover policy: it answers messages
    naming the partner's Server Identifier while C{takeover} is set (as in
    COMMUNICATIONS-INTERRUPTED), never an unknown server's.
    """

    def __init__(self, cap: int | None = None, takeover: bool = True) -> None:
        super().__init__(cap)
        self.takeover = takeover

    def respondsToServer(self, msg_type: int, server_id: bytes) -> bool:
        self.calls.append(("respondsToServer", (msg_type, server_id)))
        return self.takeover and server_id == PARTNER

    def isOwn(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
    ) -> bool:
        return True


@define
@implementer(IRenewalPolicy)
class PartnersLeasesPolicy(FakePolicy):
    """
    Renews no listed lease it has no record of for the client
    (C{mayRenew}); with C{withdraw} false it leaves such a lease out of
    the Reply, as a failover server does with its partner's leases.
    """

    def __init__(self, withdraw: bool) -> None:
        super().__init__()
        self.withdraw = withdraw

    def mayRenew(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        return False

    def mayWithdraw(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        return self.withdraw


class Endpoint:
    """What L{FailoverPolicy} reads of a failover endpoint."""

    role: Role = Role.PRIMARY
    mclt: float = 600.0
    state: EndpointState = EndpointState.NORMAL
    startTimeOfState: float = NOW - 100_000


def innerReply(decision: Decision) -> Message:
    """The client message of a decision's reply, relayed or not."""
    reply = decision.reply
    while isinstance(reply, RelayMessage):
        reply = one(reply.options, RelayMessageOption).message
    return reply


class EngineTestCase(SynchronousTestCase):
    """Shared set-up: one subnet on eth0, a memory store, the standalone policy."""

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.policy: IAllocationPolicy | SubnetPolicies = StandalonePolicy()
        self.configure()

    def configure(self, *subnets: SubnetConfig, quarantine: int = 600) -> None:
        self.config = makeConfig(*subnets, quarantine=quarantine)
        self.engine = Engine(self.config, self.store, self.policy, SERVER_DUID)

    def decide(
        self,
        msg: Message | RelayMessage,
        received: Received = DIRECT,
        now: float = NOW,
    ) -> Decision:
        """Handle C{msg}, expect a decision, and commit its changes like the adapter."""
        decision = self.engine.handle(msg, received, now)
        assert decision is not None, self.engine.counters
        if decision.changes:
            self.store.commit(decision.changes)
        return decision

    def reply(
        self, msg: Message | RelayMessage, received: Received = DIRECT, now: float = NOW
    ) -> Message:
        decision = self.decide(msg, received, now)
        assert isinstance(decision.reply, Message)
        return decision.reply

    def dropped(
        self, msg: Message | RelayMessage, reason: str, received: Received = DIRECT
    ) -> None:
        """C{msg} is dropped and counted under C{dropped.<reason>}."""
        before = self.engine.counters["dropped." + reason]
        self.assertIsNone(self.engine.handle(msg, received, NOW))
        self.assertEqual(self.engine.counters["dropped." + reason], before + 1)

    def stored(self, address: IPv6Address, prefix_length: int = 128) -> Lease:
        lease = self.store.get(address, prefix_length)
        assert lease is not None
        return lease

    def bind(self, iaid: int = 1, duid: bytes = CLIENT, now: float = NOW) -> IPv6Address:
        """Solicit then Request an address for the IA; return it."""
        advertise = self.reply(message(MessageType.SOLICIT, na(iaid), duid=duid), now=now)
        offered = one(one(advertise.options, IANA).options, IAAddress).address
        reply = self.reply(
            message(MessageType.REQUEST, na(iaid, str(offered)), duid=duid, server=SERVER_DUID),
            now=now,
        )
        granted = one(one(reply.options, IANA).options, IAAddress)
        self.assertEqual(granted.address, offered)
        return granted.address


class SolicitTests(EngineTestCase):
    """Solicit: Advertise, nothing committed (RFC 8415 section 18.3.1)."""

    def test_advertise(self) -> None:
        """
        The Advertise echoes the transaction ID and Client Identifier, names
        this server, and offers one pool address with the configured
        lifetimes and T1/T2; nothing is to be committed; the reply goes back
        to the datagram's source.
        """
        decision = self.decide(message(MessageType.SOLICIT, na(7)))
        reply = decision.reply
        assert isinstance(reply, Message)
        self.assertEqual(reply.msg_type, MessageType.ADVERTISE)
        self.assertEqual(reply.transaction_id, 0x123456)
        self.assertEqual(one(reply.options, ClientId).duid, CLIENT)
        self.assertEqual(one(reply.options, ServerId).duid, SERVER_DUID)
        ia = one(reply.options, IANA)
        self.assertEqual((ia.iaid, ia.t1, ia.t2), (7, 1000, 1600))
        address = one(ia.options, IAAddress)
        self.assertIn(address.address, self.config.subnets[0].pools[0])
        self.assertEqual((address.preferred_lifetime, address.valid_lifetime), (3000, 4000))
        self.assertEqual(decision.changes, ())
        self.assertEqual(decision.destination, (DIRECT.source, 546, "eth0"))
        self.assertEqual(self.store.committed, [])
        self.assertEqual(self.engine.counters["received.SOLICIT"], 1)
        self.assertEqual(self.engine.counters["sent.ADVERTISE"], 1)
        self.assertEqual(find(reply.options, Preference), [])

    def test_preference(self) -> None:
        """A nonzero configured preference is sent in the Advertise."""
        self.configure(makeSubnet(preference=255))
        reply = self.reply(message(MessageType.SOLICIT, na()))
        self.assertEqual(one(reply.options, Preference).value, 255)

    def test_solicitTwice(self) -> None:
        """A client that solicits twice is offered the same address, and is granted it."""
        first = self.reply(message(MessageType.SOLICIT, na()))
        second = self.reply(message(MessageType.SOLICIT, na()))
        self.assertEqual(one(first.options, IANA), one(second.options, IANA))
        address = self.bind()
        self.assertEqual(address, one(one(first.options, IANA).options, IAAddress).address)
        third = self.reply(message(MessageType.SOLICIT, na()))
        self.assertEqual(one(one(third.options, IANA).options, IAAddress).address, address)

    def test_prefix(self) -> None:
        """An IA_PD is offered an aligned /56 of the PD pool with the PD lifetimes."""
        reply = self.reply(message(MessageType.SOLICIT, pd(3)))
        ia = one(reply.options, IAPD)
        prefix = one(ia.options, IAPrefix)
        self.assertEqual(prefix.prefix_length, 56)
        self.assertTrue(
            IPv6Network((prefix.prefix, 56)).subnet_of(IPv6Network("2001:db8:100::/40"))
        )
        self.assertEqual((prefix.preferred_lifetime, prefix.valid_lifetime), (5000, 7000))
        self.assertEqual((ia.t1, ia.t2), (1000, 1600))

    def test_noAddrsAvail(self) -> None:
        """With the pool full, the IA_NA comes back with NoAddrsAvail and no address."""
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),)))
        self.bind(duid=clientDuid(2))
        reply = self.reply(message(MessageType.SOLICIT, na(1)))
        ia = one(reply.options, IANA)
        self.assertEqual(statusOf(ia.options), StatusCode.NO_ADDRS_AVAIL)
        self.assertEqual(find(ia.options, IAAddress), [])
        self.assertEqual((ia.t1, ia.t2), (0, 0))

    def test_noPrefixAvail(self) -> None:
        """With no PD pool, the IA_PD comes back with NoPrefixAvail; the IA_NA is served."""
        self.configure(makeSubnet(pd_pools=()))
        reply = self.reply(message(MessageType.SOLICIT, na(1), pd(2)))
        self.assertEqual(statusOf(one(reply.options, IAPD).options), StatusCode.NO_PREFIX_AVAIL)
        self.assertEqual(len(find(one(reply.options, IANA).options, IAAddress)), 1)

    def test_temporary(self) -> None:
        """Temporary addresses are not served: IA_TA gets NoAddrsAvail."""
        reply = self.reply(message(MessageType.SOLICIT, IATA(9)))
        ia = one(reply.options, IATA)
        self.assertEqual(ia.iaid, 9)
        self.assertEqual(statusOf(ia.options), StatusCode.NO_ADDRS_AVAIL)
        self.assertEqual(find(ia.options, IAAddress), [])

    def test_offLinkHintIgnored(self) -> None:
        """A Solicit's hint off the link is ignored (no NotOnLink for Solicit)."""
        reply = self.reply(message(MessageType.SOLICIT, na(1, "2001:db8:99::1")))
        address = one(one(reply.options, IANA).options, IAAddress).address
        self.assertIn(address, LAN)

    def test_hintHonoured(self) -> None:
        """A free pool address the client hints at is offered."""
        reply = self.reply(message(MessageType.SOLICIT, na(1, "2001:db8:1::1a0")))
        address = one(one(reply.options, IANA).options, IAAddress)
        self.assertEqual(address.address, IPv6Address("2001:db8:1::1a0"))


class RapidCommitTests(EngineTestCase):
    """Rapid Commit (RFC 8415 section 18.3.1, 21.14)."""

    def test_rapidCommit(self) -> None:
        """Configured and requested: a Reply with Rapid Commit, and the binding to commit."""
        self.configure(makeSubnet(rapid_commit=True))
        decision = self.decide(message(MessageType.SOLICIT, na(1), RapidCommit()))
        reply = decision.reply
        assert isinstance(reply, Message)
        self.assertEqual(reply.msg_type, MessageType.REPLY)
        one(reply.options, RapidCommit)
        self.assertEqual(find(reply.options, Preference), [])
        (lease,) = decision.changes
        address = one(one(reply.options, IANA).options, IAAddress).address
        self.assertEqual(lease.address, address)
        self.assertEqual(lease.state, BindingState.ACTIVE)
        self.assertEqual(self.engine.counters["sent.REPLY"], 1)

    def test_notConfigured(self) -> None:
        """Requested but not configured: an ordinary Advertise, nothing committed."""
        decision = self.decide(message(MessageType.SOLICIT, na(1), RapidCommit()))
        assert isinstance(decision.reply, Message)
        self.assertEqual(decision.reply.msg_type, MessageType.ADVERTISE)
        self.assertEqual(find(decision.reply.options, RapidCommit), [])
        self.assertEqual(decision.changes, ())

    def test_notRequested(self) -> None:
        """Configured but not requested: an ordinary Advertise."""
        self.configure(makeSubnet(rapid_commit=True))
        decision = self.decide(message(MessageType.SOLICIT, na(1)))
        assert isinstance(decision.reply, Message)
        self.assertEqual(decision.reply.msg_type, MessageType.ADVERTISE)
        self.assertEqual(decision.changes, ())


class RequestTests(EngineTestCase):
    """Request: Reply, bindings committed (RFC 8415 section 18.3.2)."""

    def test_grant(self) -> None:
        """The Reply grants the address; the change is an ACTIVE binding with every field set."""
        decision = self.decide(
            message(MessageType.REQUEST, na(5, "2001:db8:1::123"), server=SERVER_DUID)
        )
        assert isinstance(decision.reply, Message)
        self.assertEqual(decision.reply.msg_type, MessageType.REPLY)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(
            one(ia.options, IAAddress), IAAddress(IPv6Address("2001:db8:1::123"), 3000, 4000)
        )
        (lease,) = decision.changes
        self.assertEqual(
            lease,
            Lease(
                lease_type=LeaseType.NA,
                address=IPv6Address("2001:db8:1::123"),
                prefix_length=128,
                state=BindingState.ACTIVE,
                duid=CLIENT,
                iaid=5,
                start_time_of_state=NOW,
                cltt=NOW,
                preferred_lifetime=3000,
                valid_lifetime=4000,
                expires=NOW + 4000,
            ),
        )

    def test_notOnLink(self) -> None:
        """An address off the link in the IA: the IA gets NotOnLink, nothing is bound."""
        decision = self.decide(
            message(MessageType.REQUEST, na(1, "2001:db8:77::1"), server=SERVER_DUID)
        )
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(statusOf(ia.options), StatusCode.NOT_ON_LINK)
        self.assertEqual(find(ia.options, IAAddress), [])
        self.assertEqual(decision.changes, ())

    def test_noAddrsAvail(self) -> None:
        """Nothing free: NoAddrsAvail in the IA, nothing to commit."""
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),)))
        self.bind(duid=clientDuid(2))
        decision = self.decide(message(MessageType.REQUEST, na(1), server=SERVER_DUID))
        assert isinstance(decision.reply, Message)
        self.assertEqual(
            statusOf(one(decision.reply.options, IANA).options), StatusCode.NO_ADDRS_AVAIL
        )
        self.assertEqual(decision.changes, ())

    def test_takenHintZeroed(self) -> None:
        """
        A hint held by another client is not granted: the client gets
        another address, and the hint back with lifetimes 0.
        """
        taken = self.bind(duid=clientDuid(2))
        reply = self.reply(message(MessageType.REQUEST, na(1, str(taken)), server=SERVER_DUID))
        addresses = one(reply.options, IANA).options
        self.assertEqual(len(addresses), 2)
        granted, zero = addresses
        assert isinstance(granted, IAAddress) and isinstance(zero, IAAddress)
        self.assertNotEqual(granted.address, taken)
        self.assertEqual(zero, IAAddress(taken, 0, 0))
        self.assertEqual(self.stored(taken).duid, clientDuid(2))

    def test_multipleIAs(self) -> None:
        """Two IA_NA and one IA_PD in one Request: two addresses, one prefix, three bindings."""
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::11"),)))
        decision = self.decide(
            message(MessageType.REQUEST, na(1), na(2), pd(3), server=SERVER_DUID)
        )
        assert isinstance(decision.reply, Message)
        nas = find(decision.reply.options, IANA)
        self.assertEqual([ia.iaid for ia in nas], [1, 2])
        addresses = {one(ia.options, IAAddress).address for ia in nas}
        self.assertEqual(addresses, {IPv6Address("2001:db8:1::10"), IPv6Address("2001:db8:1::11")})
        prefix = one(one(decision.reply.options, IAPD).options, IAPrefix)
        self.assertEqual(len(decision.changes), 3)
        self.assertEqual(
            {(lease.lease_type, lease.iaid) for lease in decision.changes},
            {(LeaseType.NA, 1), (LeaseType.NA, 2), (LeaseType.PD, 3)},
        )
        pd_lease = [lease for lease in decision.changes if lease.lease_type is LeaseType.PD][0]
        self.assertEqual(pd_lease.key, (prefix.prefix, 56))
        # A third IA does not fit.
        reply = self.reply(message(MessageType.REQUEST, na(1), na(2), na(3), server=SERVER_DUID))
        self.assertEqual(
            [statusOf(ia.options) for ia in find(reply.options, IANA)],
            [None, None, StatusCode.NO_ADDRS_AVAIL],
        )

    def test_requestAgain(self) -> None:
        """A second Request for a bound IA keeps the address and the start time of state."""
        address = self.bind()
        decision = self.decide(
            message(MessageType.REQUEST, na(1), server=SERVER_DUID), now=NOW + 100
        )
        (lease,) = decision.changes
        self.assertEqual(lease.address, address)
        self.assertEqual(lease.start_time_of_state, NOW)
        self.assertEqual(lease.cltt, NOW + 100)

    def test_requestedPrefix(self) -> None:
        """An IA_PD Request binds the prefix with PD lifetimes."""
        decision = self.decide(
            message(MessageType.REQUEST, pd(1, "2001:db8:100:4200::/56"), server=SERVER_DUID)
        )
        (lease,) = decision.changes
        self.assertEqual(lease.key, (IPv6Address("2001:db8:100:4200::"), 56))
        self.assertEqual(lease.lease_type, LeaseType.PD)
        self.assertEqual((lease.preferred_lifetime, lease.valid_lifetime), (5000, 7000))
        self.assertEqual(lease.expires, NOW + 7000)


class RenewRebindTests(EngineTestCase):
    """Renew and Rebind (RFC 8415 sections 18.3.4, 18.3.5)."""

    def test_renew(self) -> None:
        """
        Renew extends the binding: CLT and expiry move, the start time of
        state stays, the Reply carries the new lifetimes.
        """
        address = self.bind()
        later = NOW + 1000
        decision = self.decide(
            message(MessageType.RENEW, na(1, str(address)), server=SERVER_DUID), now=later
        )
        assert isinstance(decision.reply, Message)
        self.assertEqual(decision.reply.msg_type, MessageType.REPLY)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(one(ia.options, IAAddress), IAAddress(address, 3000, 4000))
        self.assertEqual((ia.t1, ia.t2), (1000, 1600))
        (lease,) = decision.changes
        self.assertEqual(lease.cltt, later)
        self.assertEqual(lease.expires, later + 4000)
        self.assertEqual(lease.start_time_of_state, NOW)
        self.assertEqual(lease.state, BindingState.ACTIVE)

    def test_renewKeepsPartnerLifetimes(self) -> None:
        """The partner lifetimes stored on the binding are kept."""
        address = self.bind()
        stored = self.store.get(address, 128)
        assert stored is not None
        from attrs import evolve

        self.store.commit(
            [evolve(stored, partner_lifetime_sent=NOW + 9000, partner_lifetime_acked=NOW + 8000)]
        )
        decision = self.decide(message(MessageType.RENEW, na(1), server=SERVER_DUID))
        (lease,) = decision.changes
        self.assertEqual(
            (lease.partner_lifetime_sent, lease.partner_lifetime_acked), (NOW + 9000, NOW + 8000)
        )

    def test_renewNoBinding(self) -> None:
        """Renew of an IA with no binding and nothing to re-create: NoBinding."""
        decision = self.decide(message(MessageType.RENEW, na(4), server=SERVER_DUID))
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(statusOf(ia.options), StatusCode.NO_BINDING)
        self.assertEqual(find(ia.options, IAAddress), [])
        self.assertEqual(decision.changes, ())

    def test_renewOtherClientsAddress(self) -> None:
        """Renewing an address another client holds: NoBinding, the owner keeps it."""
        address = self.bind(duid=clientDuid(2))
        decision = self.decide(message(MessageType.RENEW, na(1, str(address)), server=SERVER_DUID))
        assert isinstance(decision.reply, Message)
        self.assertEqual(statusOf(one(decision.reply.options, IANA).options), StatusCode.NO_BINDING)
        self.assertEqual(decision.changes, ())

    def test_renewRecreates(self) -> None:
        """
        Renew of an address the server has no record of (a lost update or
        database), free and in the pool: the binding is re-created, same
        address.
        """
        decision = self.decide(
            message(MessageType.RENEW, na(1, "2001:db8:1::155"), server=SERVER_DUID)
        )
        (lease,) = decision.changes
        self.assertEqual(lease.address, IPv6Address("2001:db8:1::155"))
        self.assertEqual(lease.start_time_of_state, NOW)

    def test_renewNotAppropriate(self) -> None:
        """An address off the link comes back with lifetimes 0 (no NoBinding)."""
        decision = self.decide(
            message(MessageType.RENEW, na(1, "2001:db8:77::5"), server=SERVER_DUID)
        )
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(ia.options, (IAAddress(IPv6Address("2001:db8:77::5"), 0, 0),))
        self.assertEqual(decision.changes, ())

    def test_renewWithdrawsOutOfPool(self) -> None:
        """
        A binding whose address left the pools (configuration changed) is
        returned with lifetimes 0 and becomes EXPIRED.
        """
        address = self.bind()
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::1000", "2001:db8:1::10ff"),)))
        decision = self.decide(
            message(MessageType.RENEW, na(1, str(address)), server=SERVER_DUID),
            now=NOW + 10,
        )
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(ia.options, (IAAddress(address, 0, 0),))
        (lease,) = decision.changes
        self.assertEqual((lease.address, lease.state), (address, BindingState.EXPIRED))
        self.assertEqual(lease.expires, NOW + 10)

    def test_renewReservationWins(self) -> None:
        """
        A reservation added for a client with a dynamic binding: the Renew
        grants the reserved address and withdraws the old one.
        """
        address = self.bind()
        reserved = IPv6Address("2001:db8:1::8888")
        self.configure(makeSubnet(reservations=(Reservation("me", CLIENT, (reserved,), ()),)))
        decision = self.decide(message(MessageType.RENEW, na(1, str(address)), server=SERVER_DUID))
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(ia.options, (IAAddress(reserved, 3000, 4000), IAAddress(address, 0, 0)))
        states = {lease.address: lease.state for lease in decision.changes}
        self.assertEqual(states, {reserved: BindingState.ACTIVE, address: BindingState.EXPIRED})

    def test_renewPrefix(self) -> None:
        """Renewing a delegated prefix extends it."""
        self.reply(message(MessageType.REQUEST, pd(2), server=SERVER_DUID))
        (held,) = self.store.byClient(CLIENT, 2, LeaseType.PD)
        decision = self.decide(message(MessageType.RENEW, pd(2), server=SERVER_DUID), now=NOW + 50)
        (lease,) = decision.changes
        self.assertEqual(lease.key, held.key)
        self.assertEqual(lease.expires, NOW + 50 + 7000)

    def heldLease(
        self, key: str, lease_type: LeaseType = LeaseType.NA, duid: bytes = CLIENT
    ) -> Lease:
        """An unexpired ACTIVE binding of IA 1 stored as if granted at C{NOW}."""
        network = IPv6Network(key)
        return Lease(
            lease_type=lease_type,
            address=network.network_address,
            prefix_length=network.prefixlen,
            state=BindingState.ACTIVE,
            duid=duid,
            iaid=1,
            start_time_of_state=NOW,
            cltt=NOW,
            preferred_lifetime=30,
            valid_lifetime=40,
            expires=NOW + 40,
        )

    def test_renewEveryHeldAddress(self) -> None:
        """
        An IA holding two addresses (two servers of a pair, cut off from
        each other, each granted it one) renews both: neither is taken away
        while its lifetime runs (RFC 8415 section 18.3.4).  An address
        another client holds still comes back with lifetimes 0.
        """
        self.store.commit(
            [
                self.heldLease("2001:db8:1::120"),
                self.heldLease("2001:db8:1::131"),
                self.heldLease("2001:db8:1::142", duid=clientDuid(2)),
            ]
        )
        later = NOW + 10
        for msg_type, server in ((MessageType.RENEW, SERVER_DUID), (MessageType.REBIND, None)):
            decision = self.decide(
                message(
                    msg_type,
                    na(1, "2001:db8:1::131", "2001:db8:1::120", "2001:db8:1::142"),
                    server=server,
                ),
                now=later,
            )
            assert isinstance(decision.reply, Message)
            ia = one(decision.reply.options, IANA)
            self.assertEqual(
                ia.options,
                (
                    IAAddress(IPv6Address("2001:db8:1::131"), 3000, 4000),
                    IAAddress(IPv6Address("2001:db8:1::120"), 3000, 4000),
                    IAAddress(IPv6Address("2001:db8:1::142"), 0, 0),
                ),
            )
            self.assertEqual(
                {(lease.address, lease.state, lease.expires) for lease in decision.changes},
                {
                    (IPv6Address("2001:db8:1::131"), BindingState.ACTIVE, later + 4000),
                    (IPv6Address("2001:db8:1::120"), BindingState.ACTIVE, later + 4000),
                },
            )
            self.assertEqual(self.stored(IPv6Address("2001:db8:1::142")).duid, clientDuid(2))

    def test_renewEveryHeldPrefix(self) -> None:
        """The same for an IA_PD holding two prefixes."""
        self.store.commit(
            [
                self.heldLease("2001:db8:100:b200::/56", LeaseType.PD),
                self.heldLease("2001:db8:100:f000::/56", LeaseType.PD),
            ]
        )
        reply = self.reply(
            message(
                MessageType.RENEW,
                pd(1, "2001:db8:100:b200::/56", "2001:db8:100:f000::/56"),
                server=SERVER_DUID,
            ),
            now=NOW + 10,
        )
        ia = one(reply.options, IAPD)
        self.assertEqual(
            ia.options,
            (
                IAPrefix(5000, 7000, 56, IPv6Address("2001:db8:100:b200::")),
                IAPrefix(5000, 7000, 56, IPv6Address("2001:db8:100:f000::")),
            ),
        )

    def test_renewLeavesPartnersLeaseOut(self) -> None:
        """
        A listed lease this server does not renew, which the policy says is
        not its to withdraw (a failover partner's, chaos seed 53002), is left
        out of the Reply, in a Renew and in a Rebind: the client keeps it
        as it is.  When the policy may withdraw it, it gets lifetimes 0.
        """
        for withdraw, expected in (
            (False, ()),
            (True, (IAAddress(IPv6Address("2001:db8:1::131"), 0, 0),)),
        ):
            self.store = MemoryLeaseStore()
            self.policy = PartnersLeasesPolicy(withdraw)
            self.configure()
            self.store.commit([self.heldLease("2001:db8:1::120")])
            for msg_type, server in ((MessageType.RENEW, SERVER_DUID), (MessageType.REBIND, None)):
                reply = self.reply(
                    message(msg_type, na(1, "2001:db8:1::120", "2001:db8:1::131"), server=server),
                    now=NOW + 10,
                )
                ia = one(reply.options, IANA)
                self.assertEqual(
                    ia.options,
                    (IAAddress(IPv6Address("2001:db8:1::120"), 3000, 4000), *expected),
                    (withdraw, msg_type),
                )
            self.assertIsNone(self.store.get(IPv6Address("2001:db8:1::131"), 128))

    def test_renewOnlyListedHeld(self) -> None:
        """
        A held address the Renew does not list is withdrawn as before
        (lifetimes 0, EXPIRED): the client let it go.  A listed address
        another client holds comes back with lifetimes 0.
        """
        self.store.commit(
            [
                self.heldLease("2001:db8:1::120"),
                self.heldLease("2001:db8:1::131"),
                self.heldLease("2001:db8:1::153", duid=clientDuid(2)),
            ]
        )
        decision = self.decide(
            message(
                MessageType.RENEW, na(1, "2001:db8:1::131", "2001:db8:1::153"), server=SERVER_DUID
            ),
            now=NOW + 10,
        )
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        self.assertEqual(
            ia.options,
            (
                IAAddress(IPv6Address("2001:db8:1::131"), 3000, 4000),
                IAAddress(IPv6Address("2001:db8:1::153"), 0, 0),
                IAAddress(IPv6Address("2001:db8:1::120"), 0, 0),
            ),
        )
        states = {lease.address: lease.state for lease in decision.changes}
        self.assertEqual(
            states,
            {
                IPv6Address("2001:db8:1::131"): BindingState.ACTIVE,
                IPv6Address("2001:db8:1::120"): BindingState.EXPIRED,
            },
        )

    def test_renewListedUnknown(self) -> None:
        """
        A second listed prefix this server has no record of (the partner
        granted it and the update never came: chaos seed 6012) is renewed
        beside the IA's binding, as it would be if listed first.
        """
        self.store.commit([self.heldLease("2001:db8:100:e900::/56", LeaseType.PD)])
        reply = self.reply(
            message(
                MessageType.RENEW,
                pd(1, "2001:db8:100:e900::/56", "2001:db8:100:6c00::/56"),
                server=SERVER_DUID,
            ),
            now=NOW + 10,
        )
        ia = one(reply.options, IAPD)
        self.assertEqual(
            ia.options,
            (
                IAPrefix(5000, 7000, 56, IPv6Address("2001:db8:100:e900::")),
                IAPrefix(5000, 7000, 56, IPv6Address("2001:db8:100:6c00::")),
            ),
        )
        stored = self.store.get(IPv6Address("2001:db8:100:6c00::"), 56)
        assert stored is not None
        self.assertEqual((stored.duid, stored.iaid, stored.state), (CLIENT, 1, BindingState.ACTIVE))

    def test_requestStillOneLease(self) -> None:
        """A Request listing two held addresses gets one; the other is withdrawn."""
        self.store.commit([self.heldLease("2001:db8:1::120"), self.heldLease("2001:db8:1::131")])
        reply = self.reply(
            message(
                MessageType.REQUEST, na(1, "2001:db8:1::131", "2001:db8:1::120"), server=SERVER_DUID
            ),
            now=NOW + 10,
        )
        ia = one(reply.options, IANA)
        lifetimes = sorted(
            (option.valid_lifetime, str(option.address)) for option in find(ia.options, IAAddress)
        )
        self.assertEqual([valid for valid, _ in lifetimes], [0, 4000])
        self.assertEqual(
            {address for _, address in lifetimes}, {"2001:db8:1::120", "2001:db8:1::131"}
        )

    def test_renewPrefixNoBinding(self) -> None:
        """A Renew of an unknown IA_PD gets NoBinding."""
        reply = self.reply(message(MessageType.RENEW, pd(2), server=SERVER_DUID))
        self.assertEqual(statusOf(one(reply.options, IAPD).options), StatusCode.NO_BINDING)

    def test_rebind(self) -> None:
        """Rebind (no Server Identifier) extends the binding; the Reply names this server."""
        address = self.bind()
        decision = self.decide(message(MessageType.REBIND, na(1, str(address))), now=NOW + 3000)
        assert isinstance(decision.reply, Message)
        self.assertEqual(one(decision.reply.options, ServerId).duid, SERVER_DUID)
        self.assertEqual(one(one(decision.reply.options, IANA).options, IAAddress).address, address)
        (lease,) = decision.changes
        self.assertEqual(lease.expires, NOW + 3000 + 4000)

    def test_rebindNoBinding(self) -> None:
        """Rebind of an unknown IA with nothing to re-create: NoBinding."""
        reply = self.reply(message(MessageType.REBIND, na(3)))
        self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_BINDING)

    def test_rebindNotAppropriate(self) -> None:
        """Rebind with addresses off the link: lifetimes 0."""
        reply = self.reply(message(MessageType.REBIND, na(3, "2001:db8:55::1")))
        self.assertEqual(
            one(reply.options, IANA).options, (IAAddress(IPv6Address("2001:db8:55::1"), 0, 0),)
        )

    def test_renewTemporary(self) -> None:
        """An IA_TA in a Renew gets NoBinding."""
        reply = self.reply(message(MessageType.RENEW, IATA(1), server=SERVER_DUID))
        self.assertEqual(statusOf(one(reply.options, IATA).options), StatusCode.NO_BINDING)

    def test_expiredClientGetsItBack(self) -> None:
        """After reclamation, the same client renewing gets its own address back."""
        address = self.bind()
        changes = self.engine.reclaim(NOW + 4000, 10)
        self.store.commit(changes)
        self.assertEqual(self.stored(address).state, BindingState.EXPIRED)
        decision = self.decide(
            message(MessageType.RENEW, na(1), server=SERVER_DUID), now=NOW + 5000
        )
        (lease,) = decision.changes
        self.assertEqual((lease.address, lease.state), (address, BindingState.ACTIVE))
        self.assertEqual(lease.start_time_of_state, NOW + 5000)


class ConfirmTests(EngineTestCase):
    """Confirm (RFC 8415 section 18.3.3)."""

    def test_success(self) -> None:
        """Addresses on the link: Success."""
        reply = self.reply(message(MessageType.CONFIRM, na(1, "2001:db8:1::5", "2001:db8:1::6")))
        self.assertEqual(statusOf(reply.options), StatusCode.SUCCESS)
        self.assertEqual(find(reply.options, IANA), [])

    def test_notOnLink(self) -> None:
        """Any address off the link: NotOnLink."""
        reply = self.reply(
            message(
                MessageType.CONFIRM,
                na(1, "2001:db8:1::5"),
                IATA(2, (IAAddress(IPv6Address("2001:db8:2::1"), 0, 0),)),
            )
        )
        self.assertEqual(statusOf(reply.options), StatusCode.NOT_ON_LINK)

    def test_noAddresses(self) -> None:
        """No addresses at all: no reply."""
        self.dropped(message(MessageType.CONFIRM, na(1)), "confirmWithoutAddresses")

    def test_unknownLink(self) -> None:
        """The server cannot tell the link: no reply."""
        self.dropped(
            message(MessageType.CONFIRM, na(1, "2001:db8:1::5")),
            "noSubnet",
            Received(IPv6Address("fe80::1"), 546, "eth9", True),
        )

    def test_serverId(self) -> None:
        """A Confirm naming a server is discarded."""
        self.dropped(
            message(MessageType.CONFIRM, na(1, "2001:db8:1::5"), server=SERVER_DUID),
            "unexpectedServerId",
        )


class ReleaseDeclineTests(EngineTestCase):
    """Release and Decline (RFC 8415 sections 18.3.7, 18.3.8)."""

    def test_release(self) -> None:
        """
        Release: Success at the top level; the binding becomes RELEASED at
        this time; another client may have it (standalone).
        """
        address = self.bind()
        decision = self.decide(
            message(MessageType.RELEASE, na(1, str(address)), server=SERVER_DUID), now=NOW + 60
        )
        assert isinstance(decision.reply, Message)
        self.assertEqual(statusOf(decision.reply.options), StatusCode.SUCCESS)
        self.assertEqual(find(decision.reply.options, IANA), [])
        (lease,) = decision.changes
        self.assertEqual(lease.state, BindingState.RELEASED)
        self.assertEqual(lease.start_time_of_state, NOW + 60)
        reply = self.reply(message(MessageType.SOLICIT, na(1, str(address)), duid=clientDuid(2)))
        self.assertEqual(one(one(reply.options, IANA).options, IAAddress).address, address)

    def test_releaseNoBinding(self) -> None:
        """An IA with no binding: NoBinding in that IA, Success at the top."""
        self.bind()
        reply = self.reply(
            message(MessageType.RELEASE, na(9, "2001:db8:1::1"), pd(4), IATA(5), server=SERVER_DUID)
        )
        self.assertEqual(statusOf(reply.options), StatusCode.SUCCESS)
        self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_BINDING)
        self.assertEqual(one(reply.options, IANA).iaid, 9)
        self.assertEqual(statusOf(one(reply.options, IAPD).options), StatusCode.NO_BINDING)
        self.assertEqual(statusOf(one(reply.options, IATA).options), StatusCode.NO_BINDING)

    def test_releaseOthersAddressIgnored(self) -> None:
        """An address of another client listed in a Release is left alone."""
        mine = self.bind()
        theirs = self.bind(duid=clientDuid(2))
        decision = self.decide(
            message(MessageType.RELEASE, na(1, str(mine), str(theirs)), server=SERVER_DUID)
        )
        self.assertEqual([lease.address for lease in decision.changes], [mine])

    def test_releasePrefix(self) -> None:
        """A delegated prefix is released."""
        self.reply(message(MessageType.REQUEST, pd(2), server=SERVER_DUID))
        (held,) = self.store.byClient(CLIENT, 2, LeaseType.PD)
        decision = self.decide(
            message(
                MessageType.RELEASE,
                pd(2, str(IPv6Network((held.address, held.prefix_length)))),
                server=SERVER_DUID,
            )
        )
        (lease,) = decision.changes
        self.assertEqual((lease.key, lease.state), (held.key, BindingState.RELEASED))

    def test_releaseWithoutSubnet(self) -> None:
        """Release needs no subnet: a relayed Release from an unknown link is processed."""
        address = self.bind()
        relayed = RelayMessage(
            MessageType.RELAY_FORW,
            0,
            IPv6Address("2001:db8:4444::1"),
            IPv6Address("fe80::5"),
            (
                RelayMessageOption(
                    message(MessageType.RELEASE, na(1, str(address)), server=SERVER_DUID)
                ),
            ),
        )
        decision = self.decide(relayed, RELAY)
        self.assertEqual(decision.changes[0].state, BindingState.RELEASED)

    def test_decline(self) -> None:
        """
        Decline: Success; the address is ABANDONED until the quarantine ends,
        not given to anyone meanwhile, then reclaimed to FREE and reusable.
        """
        self.configure(
            makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),)),
            quarantine=900,
        )
        address = self.bind()
        decision = self.decide(
            message(MessageType.DECLINE, na(1, str(address)), server=SERVER_DUID), now=NOW + 5
        )
        assert isinstance(decision.reply, Message)
        self.assertEqual(statusOf(decision.reply.options), StatusCode.SUCCESS)
        (lease,) = decision.changes
        self.assertEqual(lease.state, BindingState.ABANDONED)
        self.assertEqual(lease.expires, NOW + 5 + 900)
        self.assertEqual(lease.start_time_of_state, NOW + 5)
        # Nobody gets it during the quarantine, not even the same client.
        for duid in (CLIENT, clientDuid(2)):
            reply = self.reply(message(MessageType.SOLICIT, na(1), duid=duid), now=NOW + 10)
            self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_ADDRS_AVAIL)
        self.assertEqual(self.engine.reclaim(NOW + 5 + 899, 10), ())
        (freed,) = self.engine.reclaim(NOW + 5 + 900, 10)
        self.assertEqual((freed.state, freed.duid, freed.iaid), (BindingState.FREE, b"", 0))
        self.assertEqual(freed.start_time_of_state, NOW + 905)
        self.store.commit([freed])
        reply = self.reply(message(MessageType.SOLICIT, na(1), duid=clientDuid(2)), now=NOW + 1000)
        self.assertEqual(one(one(reply.options, IANA).options, IAAddress).address, address)

    def test_declineNoBinding(self) -> None:
        """Decline of an unknown IA: NoBinding in it; an IA_PD is ignored."""
        reply = self.reply(
            message(MessageType.DECLINE, na(3, "2001:db8:1::1"), pd(4), server=SERVER_DUID)
        )
        self.assertEqual(statusOf(reply.options), StatusCode.SUCCESS)
        self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_BINDING)
        self.assertEqual(find(reply.options, IAPD), [])


class ReclaimTests(EngineTestCase):
    """Expiry reclamation with times."""

    def test_expire(self) -> None:
        """
        An ACTIVE binding is reclaimed once its valid lifetime has run out
        (not before), becoming EXPIRED for its client; another client may
        then have it (standalone).
        """
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),)))
        address = self.bind()
        self.assertEqual(self.engine.reclaim(NOW + 3999, 10), ())
        (expired,) = self.engine.reclaim(NOW + 4000, 10)
        self.assertEqual(expired.state, BindingState.EXPIRED)
        self.assertEqual(expired.start_time_of_state, NOW + 4000)
        self.assertEqual(expired.duid, CLIENT)
        self.assertEqual(self.engine.counters["reclaimed.expired"], 1)
        # Before the change is committed, the address is still taken.
        reply = self.reply(message(MessageType.SOLICIT, na(1), duid=clientDuid(2)), now=NOW + 4001)
        self.assertEqual(statusOf(one(reply.options, IANA).options), StatusCode.NO_ADDRS_AVAIL)
        self.store.commit([expired])
        reply = self.reply(message(MessageType.SOLICIT, na(1), duid=clientDuid(2)), now=NOW + 4001)
        self.assertEqual(one(one(reply.options, IANA).options, IAAddress).address, address)

    def test_limit(self) -> None:
        """At most C{limit} changes per call."""
        for n in range(5):
            self.bind(duid=clientDuid(n))
        self.assertEqual(len(self.engine.reclaim(NOW + 5000, 3)), 3)
        self.assertEqual(len(self.engine.reclaim(NOW + 5000, 10)), 5)


class InformationRequestTests(EngineTestCase):
    """Information-request and requested options (RFC 8415 sections 18.3.6, 21)."""

    def setUp(self) -> None:
        super().setUp()
        self.configure(
            makeSubnet(
                dns_servers=(IPv6Address("2001:db8::53"),),
                domain_search=("example.com", "example.net"),
                sol_max_rt=7200,
                information_refresh_time=43200,
                inf_max_rt=3600,
            )
        )

    ALL = OptionRequest(
        (
            OptionCode.DNS_SERVERS,
            OptionCode.DOMAIN_LIST,
            OptionCode.SOL_MAX_RT,
            OptionCode.INFORMATION_REFRESH_TIME,
            OptionCode.INF_MAX_RT,
        )
    )

    def test_requestedOnly(self) -> None:
        """Only the requested options come back; never an IA."""
        reply = self.reply(
            message(
                MessageType.INFORMATION_REQUEST,
                OptionRequest((OptionCode.DNS_SERVERS,)),
            )
        )
        self.assertEqual(reply.msg_type, MessageType.REPLY)
        self.assertEqual(one(reply.options, DNSServers).addresses, (IPv6Address("2001:db8::53"),))
        self.assertEqual(find(reply.options, DomainList), [])
        self.assertEqual(find(reply.options, InformationRefreshTime), [])
        self.assertEqual(find(reply.options, InfMaxRt), [])
        self.assertEqual(find(reply.options, IANA), [])

    def test_all(self) -> None:
        """Every configured option requested comes back, IRT and INF_MAX_RT included."""
        reply = self.reply(message(MessageType.INFORMATION_REQUEST, self.ALL))
        self.assertEqual(one(reply.options, DomainList).domains, ("example.com", "example.net"))
        self.assertEqual(one(reply.options, SolMaxRt).value, 7200)
        self.assertEqual(one(reply.options, InformationRefreshTime).value, 43200)
        self.assertEqual(one(reply.options, InfMaxRt).value, 3600)
        self.assertEqual(one(reply.options, ServerId).duid, SERVER_DUID)

    def test_noClientId(self) -> None:
        """An anonymous Information-request is answered without a Client Identifier."""
        reply = self.reply(message(MessageType.INFORMATION_REQUEST, self.ALL, duid=None))
        self.assertEqual(find(reply.options, ClientId), [])
        one(reply.options, DNSServers)

    def test_ourServerId(self) -> None:
        """An Information-request naming this server is answered."""
        reply = self.reply(message(MessageType.INFORMATION_REQUEST, self.ALL, server=SERVER_DUID))
        one(reply.options, DNSServers)

    def test_otherServerId(self) -> None:
        """An Information-request naming another server is discarded."""
        self.dropped(
            message(MessageType.INFORMATION_REQUEST, self.ALL, server=OTHER_SERVER), "notForUs"
        )

    def test_withIA(self) -> None:
        """An Information-request with an IA is discarded."""
        self.dropped(message(MessageType.INFORMATION_REQUEST, na(1)), "iaInInformationRequest")

    def test_notConfigured(self) -> None:
        """Requested but not configured: not sent."""
        self.configure(makeSubnet())
        reply = self.reply(message(MessageType.INFORMATION_REQUEST, self.ALL))
        self.assertEqual([type(o) for o in reply.options], [ClientId, ServerId])

    def test_oroInAdvertise(self) -> None:
        """
        Requested options come with the Advertise and the Reply to Request,
        but Information Refresh Time and INF_MAX_RT only with the Reply to
        Information-request.
        """
        for msg_type, server in (
            (MessageType.SOLICIT, None),
            (MessageType.REQUEST, SERVER_DUID),
            (MessageType.RENEW, SERVER_DUID),
        ):
            reply = self.reply(message(msg_type, na(1), self.ALL, server=server))
            one(reply.options, DNSServers)
            one(reply.options, DomainList)
            one(reply.options, SolMaxRt)
            self.assertEqual(find(reply.options, InformationRefreshTime), [])
            self.assertEqual(find(reply.options, InfMaxRt), [])
        reply = self.reply(message(MessageType.SOLICIT, na(1)))
        self.assertEqual(find(reply.options, DNSServers), [])


class FQDNTests(EngineTestCase):
    """Client FQDN (RFC 4704): recorded, answered, no DNS updates."""

    def test_recorded(self) -> None:
        """The name and flags are recorded on the lease; the reply says N, and O for S."""
        fqdn = ClientFQDN(0x01, "host.example.com")
        decision = self.decide(message(MessageType.REQUEST, na(1), fqdn, server=SERVER_DUID))
        (lease,) = decision.changes
        self.assertEqual((lease.fqdn, lease.fqdn_flags), ("host.example.com", 0x01))
        assert isinstance(decision.reply, Message)
        answer = one(decision.reply.options, ClientFQDN)
        self.assertEqual(answer, ClientFQDN(0x04 | 0x02, "host.example.com"))

    def test_noUpdateWanted(self) -> None:
        """A client not asking for server updates gets N set and O clear."""
        reply = self.reply(
            message(MessageType.SOLICIT, na(1), ClientFQDN(0x00, "host", partial=True))
        )
        self.assertEqual(one(reply.options, ClientFQDN), ClientFQDN(0x04, "host", partial=True))

    def test_keptOnRenew(self) -> None:
        """A Renew without the option keeps the recorded name."""
        self.decide(
            message(MessageType.REQUEST, na(1), ClientFQDN(0, "a.example"), server=SERVER_DUID)
        )
        decision = self.decide(message(MessageType.RENEW, na(1), server=SERVER_DUID))
        self.assertEqual(decision.changes[0].fqdn, "a.example")
        assert isinstance(decision.reply, Message)
        self.assertEqual(find(decision.reply.options, ClientFQDN), [])

    def test_absent(self) -> None:
        """No option from the client, none in the reply, none recorded."""
        decision = self.decide(message(MessageType.REQUEST, na(1), server=SERVER_DUID))
        self.assertIsNone(decision.changes[0].fqdn)


class ReservationTests(EngineTestCase):
    """Reservations by DUID through the engine."""

    def setUp(self) -> None:
        super().setUp()
        self.fixed = IPv6Address("2001:db8:1::f00d")
        self.fixedPrefix = IPv6Network("2001:db8:200:1200::/56")
        self.configure(
            makeSubnet(
                pools=(addressPool("2001:db8:1::10", "2001:db8:1::11"),),
                reservations=(
                    Reservation("printer", clientDuid(50), (self.fixed,), (self.fixedPrefix,)),
                ),
            )
        )

    def test_reserved(self) -> None:
        """The reserved client is offered and granted its address and prefix."""
        reply = self.reply(message(MessageType.SOLICIT, na(1), pd(2), duid=clientDuid(50)))
        self.assertEqual(one(one(reply.options, IANA).options, IAAddress).address, self.fixed)
        prefix = one(one(reply.options, IAPD).options, IAPrefix)
        self.assertEqual(
            (prefix.prefix, prefix.prefix_length), (self.fixedPrefix.network_address, 56)
        )
        decision = self.decide(
            message(MessageType.REQUEST, na(1), pd(2), duid=clientDuid(50), server=SERVER_DUID)
        )
        self.assertEqual(
            {lease.key for lease in decision.changes},
            {(self.fixed, 128), (self.fixedPrefix.network_address, 56)},
        )
        # Renewing the reserved address (outside every pool) works.
        decision = self.decide(
            message(
                MessageType.RENEW, na(1, str(self.fixed)), duid=clientDuid(50), server=SERVER_DUID
            )
        )
        self.assertEqual(decision.changes[0].key, (self.fixed, 128))

    def test_othersNot(self) -> None:
        """Another client hinting at the reserved address does not get it."""
        reply = self.reply(message(MessageType.SOLICIT, na(1, str(self.fixed))))
        self.assertNotEqual(one(one(reply.options, IANA).options, IAAddress).address, self.fixed)
        decision = self.decide(
            message(MessageType.RENEW, na(1, str(self.fixed)), server=SERVER_DUID)
        )
        assert isinstance(decision.reply, Message)
        # Not appropriate for this client: lifetimes 0.
        self.assertEqual(one(decision.reply.options, IANA).options, (IAAddress(self.fixed, 0, 0),))


class ValidationTests(EngineTestCase):
    """RFC 8415 section 16 and unicast checks; counters."""

    def test_serverMessages(self) -> None:
        """Advertise, Reply, Reconfigure and Relay-reply sent to a server are dropped."""
        for msg_type in (MessageType.ADVERTISE, MessageType.REPLY, MessageType.RECONFIGURE):
            self.dropped(message(msg_type, na(1), server=SERVER_DUID), "serverMessage")
        self.dropped(
            RelayMessage(MessageType.RELAY_REPL, 0, IPv6Address("::"), IPv6Address("fe80::1")),
            "serverMessage",
            RELAY,
        )
        self.assertEqual(self.engine.counters["dropped.serverMessage"], 4)
        self.assertEqual(self.engine.counters["received.REPLY"], 1)

    def test_dropsLoggedOncePerInterval(self) -> None:
        """
        A dropped message is logged at debug level, at most once per
        C{DROP_LOG_INTERVAL} for each reason, with the number of drops not
        logged since the previous line.
        """
        unknown = Message(99, 1, (ClientId(CLIENT),))
        noClient = message(MessageType.SOLICIT, na(1), duid=None)
        with capturedLogs() as events:
            for _ in range(3):
                self.engine.handle(unknown, DIRECT, NOW)
            self.engine.handle(noClient, DIRECT, NOW + 1)
            self.engine.handle(unknown, DIRECT, NOW + DROP_LOG_INTERVAL - 1)
            self.engine.handle(unknown, DIRECT, NOW + DROP_LOG_INTERVAL)
        self.assertEqual(
            [(e["log_level"], e["reason"], e["suppressed"]) for e in events],
            [
                (LogLevel.debug, "unknownType", 0),
                (LogLevel.debug, "missingClientId", 0),
                (LogLevel.debug, "unknownType", 3),
            ],
        )
        self.assertEqual(self.engine.counters["dropped.unknownType"], 5)

    def test_unknownType(self) -> None:
        """An unknown message type is dropped."""
        self.dropped(Message(99, 1, (ClientId(CLIENT),)), "unknownType")
        self.assertEqual(self.engine.counters["received.UNKNOWN"], 1)

    def test_missingClientId(self) -> None:
        """Every message but Information-request needs a Client Identifier."""
        for msg_type, server in (
            (MessageType.SOLICIT, None),
            (MessageType.REQUEST, SERVER_DUID),
            (MessageType.RENEW, SERVER_DUID),
            (MessageType.REBIND, None),
            (MessageType.CONFIRM, None),
            (MessageType.RELEASE, SERVER_DUID),
            (MessageType.DECLINE, SERVER_DUID),
        ):
            self.dropped(message(msg_type, na(1), duid=None, server=server), "missingClientId")

    def test_unexpectedServerId(self) -> None:
        """Solicit, Rebind and Confirm naming a server are dropped."""
        for msg_type in (MessageType.SOLICIT, MessageType.REBIND, MessageType.CONFIRM):
            self.dropped(message(msg_type, na(1), server=SERVER_DUID), "unexpectedServerId")

    def test_missingServerId(self) -> None:
        """Request, Renew, Release and Decline without a Server Identifier are dropped."""
        for msg_type in (
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        ):
            self.dropped(message(msg_type, na(1)), "missingServerId")

    def test_notForUs(self) -> None:
        """Request, Renew, Release and Decline naming another server are dropped."""
        for msg_type in (
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        ):
            self.dropped(message(msg_type, na(1), server=OTHER_SERVER), "notForUs")

    def test_useMulticast(self) -> None:
        """
        Request, Renew, Release and Decline sent by unicast straight from the
        client: a Reply with UseMulticast and nothing else; nothing changes.
        """
        address = self.bind()
        unicast = Received(IPv6Address("2001:db8:1::99"), 546, "eth0", False)
        for msg_type in (
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        ):
            decision = self.decide(
                message(msg_type, na(1, str(address)), server=SERVER_DUID), unicast
            )
            self.assertEqual(decision.changes, ())
            assert isinstance(decision.reply, Message)
            self.assertEqual(decision.reply.msg_type, MessageType.REPLY)
            self.assertEqual(
                decision.reply.options,
                (
                    ClientId(CLIENT),
                    ServerId(SERVER_DUID),
                    StatusCodeOption(StatusCode.USE_MULTICAST, "send this message to ff02::1:2"),
                ),
            )
            self.assertEqual(decision.destination, (unicast.source, 546, "eth0"))

    def test_unicastSolicit(self) -> None:
        """A Solicit sent by unicast straight from the client is dropped."""
        self.dropped(
            message(MessageType.SOLICIT, na(1)),
            "unicastSolicit",
            Received(IPv6Address("fe80::1"), 546, "eth0", False),
        )

    def test_unicastRelayed(self) -> None:
        """A relayed Request reaches us by unicast from the relay: it is served."""
        relayed = RelayMessage(
            MessageType.RELAY_FORW,
            0,
            IPv6Address("2001:db8:1::1"),
            IPv6Address("fe80::5"),
            (RelayMessageOption(message(MessageType.REQUEST, na(1), server=SERVER_DUID)),),
        )
        decision = self.decide(relayed, RELAY)
        self.assertEqual(len(decision.changes), 1)

    def test_counters(self) -> None:
        """Received, sent and dropped messages are counted by type and reason."""
        self.bind()
        self.dropped(message(MessageType.SOLICIT, na(1), server=SERVER_DUID), "unexpectedServerId")
        self.assertEqual(self.engine.counters["received.SOLICIT"], 2)
        self.assertEqual(self.engine.counters["received.REQUEST"], 1)
        self.assertEqual(self.engine.counters["sent.ADVERTISE"], 1)
        self.assertEqual(self.engine.counters["sent.REPLY"], 1)


class SubnetSelectionTests(EngineTestCase):
    """Which subnet a message is answered from."""

    def setUp(self) -> None:
        super().setUp()
        self.lan = makeSubnet()
        self.remote = makeSubnet(
            name="remote",
            prefix=IPv6Network("2001:db8:2::/64"),
            interface=None,
            pools=(addressPool("2001:db8:2::100", "2001:db8:2::1ff"),),
        )
        self.configure(self.lan, self.remote)

    def offered(self, msg: Message | RelayMessage, received: Received) -> IPv6Address:
        reply = self.decide(msg, received).reply
        while isinstance(reply, RelayMessage):
            reply = one(reply.options, RelayMessageOption).message
        return one(one(reply.options, IANA).options, IAAddress).address

    def test_byInterface(self) -> None:
        """A direct message on eth0 is answered from eth0's subnet."""
        self.assertIn(self.offered(message(MessageType.SOLICIT, na(1)), DIRECT), LAN)

    def test_unknownInterface(self) -> None:
        """A direct message on an interface with no subnet is dropped."""
        self.dropped(
            message(MessageType.SOLICIT, na(1)),
            "noSubnet",
            Received(IPv6Address("fe80::1"), 546, "eth7", True),
        )

    def test_interfaceUnknownSingle(self) -> None:
        """Interface unknown, one subnet with an interface: that one."""
        self.assertIn(
            self.offered(
                message(MessageType.SOLICIT, na(1)), Received(IPv6Address("fe80::1"), 546)
            ),
            LAN,
        )

    def test_bySource(self) -> None:
        """Interface unknown, a global source address inside a subnet: that subnet."""
        self.assertIn(
            self.offered(
                message(MessageType.SOLICIT, na(1)), Received(IPv6Address("2001:db8:2::77"), 546)
            ),
            IPv6Network("2001:db8:2::/64"),
        )

    def test_interfaceUnknownSeveral(self) -> None:
        """Interface unknown, several interface subnets, link-local source: dropped."""
        other = makeSubnet(name="other", prefix=IPv6Network("2001:db8:3::/64"), interface="eth3")
        self.configure(self.lan, self.remote, other)
        self.dropped(
            message(MessageType.SOLICIT, na(1)), "noSubnet", Received(IPv6Address("fe80::1"), 546)
        )

    def test_relayLongestPrefix(self) -> None:
        """A relay's link-address picks the subnet with the longest matching prefix."""
        wide = makeSubnet(
            name="wide",
            prefix=IPv6Network("2001:db8::/32"),
            interface=None,
            pools=(addressPool("2001:db8:ffff::100", "2001:db8:ffff::1ff"),),
        )
        self.configure(wide, self.lan, self.remote)
        relayed = RelayMessage(
            MessageType.RELAY_FORW,
            0,
            IPv6Address("2001:db8:2::1"),
            IPv6Address("fe80::5"),
            (RelayMessageOption(message(MessageType.SOLICIT, na(1))),),
        )
        self.assertIn(self.offered(relayed, RELAY), IPv6Network("2001:db8:2::/64"))


def relay(
    inner: Message | RelayMessage, hops: int, link: str, peer: str, iid: bytes | None
) -> RelayMessage:
    options: tuple[Option, ...] = (RelayMessageOption(inner),)
    if iid is not None:
        options = (InterfaceId(iid),) + options
    return RelayMessage(MessageType.RELAY_FORW, hops, IPv6Address(link), IPv6Address(peer), options)


class RelayTests(EngineTestCase):
    """Relayed messages (RFC 8415 sections 19, 20.3): unwrap, answer, wrap."""

    def setUp(self) -> None:
        super().setUp()
        self.remote = makeSubnet(
            name="remote",
            prefix=IPv6Network("2001:db8:2::/64"),
            interface=None,
            pools=(addressPool("2001:db8:2::100", "2001:db8:2::1ff"),),
        )
        self.configure(makeSubnet(), self.remote)

    def test_oneLevel(self) -> None:
        """
        One relay: the Relay-reply mirrors hop count, link and peer
        addresses, echoes the Interface-ID, carries the Advertise, and goes
        to the relay's address and port.
        """
        forw = relay(message(MessageType.SOLICIT, na(1)), 0, "2001:db8:2::1", "fe80::c1", b"port-7")
        decision = self.decide(forw, RELAY)
        self.assertEqual(decision.destination, (RELAY.source, 547, "eth1"))
        reply = decision.reply
        assert isinstance(reply, RelayMessage)
        self.assertEqual(reply.msg_type, MessageType.RELAY_REPL)
        self.assertEqual(
            (reply.hop_count, reply.link_address, reply.peer_address),
            (0, IPv6Address("2001:db8:2::1"), IPv6Address("fe80::c1")),
        )
        self.assertEqual(one(reply.options, InterfaceId).value, b"port-7")
        inner = one(reply.options, RelayMessageOption).message
        assert isinstance(inner, Message)
        self.assertEqual(inner.msg_type, MessageType.ADVERTISE)
        self.assertIn(
            one(one(inner.options, IANA).options, IAAddress).address, self.remote.pools[0]
        )
        self.assertEqual(self.engine.counters["received.RELAY_FORW"], 1)
        self.assertEqual(self.engine.counters["sent.RELAY_REPL"], 1)

    def test_noInterfaceId(self) -> None:
        """No Interface-ID in the Relay-forward, none in the Relay-reply."""
        forw = relay(message(MessageType.SOLICIT, na(1)), 0, "2001:db8:2::1", "fe80::c1", None)
        reply = self.decide(forw, RELAY).reply
        assert isinstance(reply, RelayMessage)
        self.assertEqual(find(reply.options, InterfaceId), [])
        self.assertEqual(len(reply.options), 1)

    def test_threeLevels(self) -> None:
        """
        Three relays: the innermost relay's link-address picks the subnet,
        and the reply chain mirrors every level in order, each with its own
        Interface-ID when it had one.
        """
        inner = message(MessageType.REQUEST, na(1), server=SERVER_DUID)
        forw = relay(
            relay(
                relay(inner, 0, "2001:db8:2::1", "fe80::c1", b"inner"),
                1,
                "2001:db8:9::1",
                "2001:db8:9::2",
                None,
            ),
            2,
            "2001:db8:8::1",
            "2001:db8:8::2",
            b"outer",
        )
        decision = self.decide(forw, RELAY)
        levels = []
        reply: Message | RelayMessage = decision.reply
        while isinstance(reply, RelayMessage):
            iids = [o.value for o in find(reply.options, InterfaceId)]
            levels.append(
                (
                    reply.msg_type,
                    reply.hop_count,
                    str(reply.link_address),
                    str(reply.peer_address),
                    iids,
                )
            )
            reply = one(reply.options, RelayMessageOption).message
        self.assertEqual(
            levels,
            [
                (MessageType.RELAY_REPL, 2, "2001:db8:8::1", "2001:db8:8::2", [b"outer"]),
                (MessageType.RELAY_REPL, 1, "2001:db8:9::1", "2001:db8:9::2", []),
                (MessageType.RELAY_REPL, 0, "2001:db8:2::1", "fe80::c1", [b"inner"]),
            ],
        )
        self.assertEqual(reply.msg_type, MessageType.REPLY)
        self.assertEqual(reply.transaction_id, inner.transaction_id)
        self.assertEqual(self.engine.counters["received.RELAY_FORW"], 1)
        self.assertEqual(self.engine.counters["received.REQUEST"], 1)
        self.assertEqual(self.engine.counters["sent.RELAY_REPL"], 1)
        (lease,) = decision.changes
        self.assertIn(lease.address, self.remote.pools[0])
        self.assertEqual(decision.destination, (RELAY.source, 547, "eth1"))

    def test_lightweightRelay(self) -> None:
        """
        An innermost relay with an unspecified link-address (RFC 6221): the
        next relay's link-address picks the subnet.
        """
        forw = relay(
            relay(message(MessageType.SOLICIT, na(1)), 0, "::", "fe80::c1", b"ldra"),
            1,
            "2001:db8:2::1",
            "fe80::99",
            None,
        )
        reply = self.decide(forw, RELAY).reply
        assert isinstance(reply, RelayMessage)
        middle = one(reply.options, RelayMessageOption).message
        assert isinstance(middle, RelayMessage)
        self.assertEqual(one(middle.options, InterfaceId).value, b"ldra")
        advertise = one(middle.options, RelayMessageOption).message
        assert isinstance(advertise, Message)
        self.assertIn(
            one(one(advertise.options, IANA).options, IAAddress).address, self.remote.pools[0]
        )

    def test_unknownLink(self) -> None:
        """A link-address in no subnet: dropped."""
        forw = relay(message(MessageType.SOLICIT, na(1)), 0, "2001:db8:77::1", "fe80::c1", None)
        self.dropped(forw, "noSubnet", RELAY)

    def test_noRelayMessage(self) -> None:
        """A Relay-forward without a Relay Message option is dropped."""
        forw = RelayMessage(
            MessageType.RELAY_FORW, 0, IPv6Address("2001:db8:2::1"), IPv6Address("fe80::1")
        )
        self.dropped(forw, "noRelayMessage", RELAY)

    def test_tooDeep(self) -> None:
        """More than 32 nested relays: dropped."""
        inner: Message | RelayMessage = message(MessageType.SOLICIT, na(1))
        for hop in range(MAX_RELAY_DEPTH + 1):
            inner = relay(inner, hop, "2001:db8:2::1", "fe80::1", None)
        self.dropped(inner, "relayTooDeep", RELAY)

    def test_maxDepth(self) -> None:
        """Exactly 32 nested relays are served."""
        inner: Message | RelayMessage = message(MessageType.SOLICIT, na(1))
        for hop in range(MAX_RELAY_DEPTH):
            inner = relay(inner, hop, "2001:db8:2::1", "fe80::1", None)
        self.assertIsInstance(self.decide(inner, RELAY).reply, RelayMessage)


class PolicyTests(EngineTestCase):
    """The engine obeys the allocation policy, and never reports changes to it."""

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.fake = FakePolicy(cap=600)
        self.policy = self.fake
        self.configure(makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),)))

    def test_verify(self) -> None:
        """Both policies provide L{IAllocationPolicy}."""
        self.assertTrue(verifyObject(IAllocationPolicy, StandalonePolicy()))
        self.assertTrue(verifyObject(IAllocationPolicy, self.fake))

    def test_refusedAddresses(self) -> None:
        """Addresses the policy refuses (odd ones) are never offered or granted."""
        granted = []
        for n in range(10):
            reply = self.reply(
                message(MessageType.REQUEST, na(1), duid=clientDuid(n), server=SERVER_DUID)
            )
            ia = one(reply.options, IANA)
            if statusOf(ia.options) is None:
                granted.append(one(ia.options, IAAddress).address)
            else:
                self.assertEqual(statusOf(ia.options), StatusCode.NO_ADDRS_AVAIL)
        self.assertEqual(len(granted), 8)
        self.assertTrue(all(int(a) % 2 == 0 for a in granted))

    def test_cappedLifetimes(self) -> None:
        """
        A capped valid lifetime is granted and stored; preferred is no more
        than valid; T1 and T2 are scaled from the granted preferred lifetime.
        """
        decision = self.decide(message(MessageType.REQUEST, na(1), pd(2), server=SERVER_DUID))
        assert isinstance(decision.reply, Message)
        ia = one(decision.reply.options, IANA)
        address = one(ia.options, IAAddress)
        self.assertEqual((address.preferred_lifetime, address.valid_lifetime), (600, 600))
        self.assertEqual((ia.t1, ia.t2), (300, 480))
        prefix_ia = one(decision.reply.options, IAPD)
        self.assertEqual((prefix_ia.t1, prefix_ia.t2), (300, 480))
        for lease in decision.changes:
            self.assertEqual(lease.valid_lifetime, 600)
            self.assertEqual(lease.expires, NOW + 600)
        asked = [args for name, args in self.fake.calls if name == "maxValidLifetime"]
        self.assertEqual({args[1] for args in asked}, {4000, 7000})

    def test_respondsTo(self) -> None:
        """A policy that does not answer now: every message is dropped as 'policy'."""
        self.fake.answer = False
        self.dropped(message(MessageType.SOLICIT, na(1)), "policy")
        self.dropped(message(MessageType.RENEW, na(1), server=SERVER_DUID), "policy")
        self.assertIn(("respondsTo", (MessageType.SOLICIT, False)), self.fake.calls)
        self.assertIn(("respondsTo", (MessageType.RENEW, True)), self.fake.calls)

    def test_renewNamingPartner(self) -> None:
        """
        A policy that answers Renews naming another server (failover
        renewing the partner's clients): the Renew is served.
        """
        self.dropped(message(MessageType.RENEW, na(1), server=OTHER_SERVER), "notForUs")
        self.fake.answerOthers.add(MessageType.RENEW)
        reply = self.reply(message(MessageType.RENEW, na(1, "2001:db8:1::12"), server=OTHER_SERVER))
        self.assertEqual(
            one(one(reply.options, IANA).options, IAAddress).address,
            IPv6Address("2001:db8:1::12"),
        )
        self.assertEqual(one(reply.options, ServerId).duid, SERVER_DUID)

    def test_mayAllocateArguments(self) -> None:
        """mayAllocate is told the stored binding, the client and the time."""
        self.bind(duid=clientDuid(2))
        (held,) = self.store.byClient(clientDuid(2), 1, LeaseType.NA)
        released = self.decide(
            message(
                MessageType.RELEASE,
                na(1, str(held.address)),
                duid=clientDuid(2),
                server=SERVER_DUID,
            )
        ).changes[0]
        self.fake.calls.clear()
        self.reply(message(MessageType.SOLICIT, na(3, str(held.address))), now=NOW + 7)
        self.assertIn(
            ("mayAllocate", (held.address, 128, released, CLIENT, 3, NOW + 7)), self.fake.calls
        )

    def test_noBindingChanged(self) -> None:
        """The engine never calls bindingChanged: the adapter does, after commit and send."""
        address = self.bind()
        self.decide(message(MessageType.RENEW, na(1), server=SERVER_DUID))
        self.decide(message(MessageType.RELEASE, na(1, str(address)), server=SERVER_DUID))
        self.engine.reclaim(NOW + 100_000, 100)
        self.assertNotIn("bindingChanged", [name for name, _ in self.fake.calls])


class TimersTests(SynchronousTestCase):
    """L{timers}."""

    def test_configured(self) -> None:
        """Configured T1/T2 that fit the preferred lifetime are used."""
        self.assertEqual(timers(1000, 1600, 3000), (1000, 1600))

    def test_scaled(self) -> None:
        """T1/T2 beyond the granted preferred lifetime, or unset: 0.5 and 0.8 of it."""
        self.assertEqual(timers(1000, 1600, 1000), (500, 800))
        self.assertEqual(timers(0, 0, 3000), (1500, 2400))

    def test_zero(self) -> None:
        """Nothing preferred: zero timers."""
        self.assertEqual(timers(1000, 1600, 0), (0, 0))


class NoScanStore(MemoryLeaseStore):
    """A store that fails the test if anything reads it whole."""

    def iterLeases(self, batch: int) -> Iterator[Lease]:
        raise AssertionError("the store was scanned")


class CostTests(EngineTestCase):
    """Many exchanges on a /64 pool: bounded store work per exchange."""

    def setUp(self) -> None:
        self.store = NoScanStore()
        self.policy = StandalonePolicy()

    def test_manyClients(self) -> None:
        """
        Five hundred clients each Solicit and Request from a /64 range; every
        one gets a distinct address; the store is never scanned.
        """
        self.configure(
            makeSubnet(pools=(addressPool("2001:db8:1::", "2001:db8:1:0:ffff:ffff:ffff:ffff"),))
        )
        addresses = {self.bind(duid=clientDuid(n)) for n in range(500)}
        self.assertEqual(len(addresses), 500)


class WireTests(EngineTestCase):
    """Engine decisions survive the codec: datagrams in, datagrams out."""

    def roundTrip(self, msg: Message | RelayMessage, received: Received = DIRECT) -> Decision:
        """Encode and decode C{msg}, decide, and check the reply encodes and decodes back."""
        decoded = decode(encode(msg))
        self.assertEqual(decoded, msg)
        decision = self.decide(decoded, received)
        self.assertEqual(decode(encode(decision.reply)), decision.reply)
        return decision

    def test_exchanges(self) -> None:
        """A full client life: Solicit, Request, Renew, Rebind, Confirm, Decline, Release, IR."""
        self.configure(
            makeSubnet(
                dns_servers=(IPv6Address("2001:db8::53"),),
                domain_search=("example.com",),
                sol_max_rt=3600,
                information_refresh_time=86400,
                preference=10,
            )
        )
        oro = OptionRequest(
            (
                OptionCode.DNS_SERVERS,
                OptionCode.DOMAIN_LIST,
                OptionCode.SOL_MAX_RT,
                OptionCode.INFORMATION_REFRESH_TIME,
            )
        )
        fqdn = ClientFQDN(0x01, "host.example.com")
        self.roundTrip(message(MessageType.SOLICIT, na(1), pd(2), IATA(3), oro, fqdn))
        decision = self.roundTrip(
            message(MessageType.REQUEST, na(1), pd(2), oro, fqdn, server=SERVER_DUID)
        )
        address = [lease for lease in decision.changes if lease.prefix_length == 128][0].address
        self.roundTrip(message(MessageType.RENEW, na(1), pd(2), na(9), server=SERVER_DUID))
        self.roundTrip(message(MessageType.REBIND, na(1, str(address), "2001:db8:9::1"), pd(2)))
        self.roundTrip(message(MessageType.CONFIRM, na(1, str(address))))
        self.roundTrip(message(MessageType.INFORMATION_REQUEST, oro))
        self.roundTrip(message(MessageType.DECLINE, na(1, str(address)), server=SERVER_DUID))
        self.roundTrip(message(MessageType.RELEASE, pd(2), na(7), server=SERVER_DUID))
        self.roundTrip(
            message(MessageType.RENEW, na(1), server=SERVER_DUID),
            Received(IPv6Address("2001:db8:1::5"), 546, "eth0", False),
        )

    def test_relayed(self) -> None:
        """A two-level relayed Solicit and its Relay-reply chain go through the codec."""
        forw = relay(
            relay(message(MessageType.SOLICIT, na(1)), 0, "2001:db8:1::1", "fe80::c1", b"p1"),
            1,
            "2001:db8:8::1",
            "2001:db8:8::2",
            b"p2",
        )
        self.roundTrip(forw, RELAY)


FAR = IPv6Network("2001:db8:2::/64")
FAR_LINK = "2001:db8:2::1"


def farSubnet() -> SubnetConfig:
    """A relayed subnet with its own address and prefix pools and a reservation."""
    return makeSubnet(
        name="far",
        prefix=FAR,
        interface=None,
        pools=(addressPool("2001:db8:2::10", "2001:db8:2::1f"),),
        pd_pools=(PrefixPool(IPv6Network("2001:db8:200::/40"), 56),),
        reservations=(
            Reservation("router", clientDuid(99), prefixes=(IPv6Network("2001:db8:300::/48"),)),
        ),
    )


def toFar(msg: Message) -> RelayMessage:
    """C{msg} relayed from the far link."""
    return relay(msg, 0, FAR_LINK, "fe80::c1", None)


class SubnetPolicyTests(EngineTestCase):
    """
    One policy per subnet (RFC 7031 section 7 requirement 3, m-to-1): the
    subnet of a message chooses the policy asked, and each binding change
    names the policy of its own subnet.
    """

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.lanPolicy = FakePolicy()
        self.farPolicy = FakePolicy(cap=600)
        self.policy = SubnetPolicies(self.lanPolicy, {"far": self.farPolicy})
        self.configure(makeSubnet(), farSubnet())

    def names(self, policy: FakePolicy) -> set[str]:
        return {name for name, _ in policy.calls}

    def test_eachSubnetItsPolicy(self) -> None:
        """
        A Request on the far link is put to the far policy only (respondsTo,
        mayAllocate, maxValidLifetime), and its lifetimes are capped by it;
        one on eth0 to the default policy only.
        """
        decision = self.decide(
            toFar(message(MessageType.REQUEST, na(1), pd(2), server=SERVER_DUID)), RELAY
        )
        self.assertEqual(
            self.names(self.farPolicy), {"respondsTo", "mayAllocate", "maxValidLifetime"}
        )
        self.assertEqual(self.lanPolicy.calls, [])
        self.assertEqual(len(decision.changes), 2)
        self.assertEqual({lease.valid_lifetime for lease in decision.changes}, {600})
        self.assertEqual(decision.policies, (self.farPolicy, self.farPolicy))
        self.assertIn(decision.changes[0].address, FAR)

        self.farPolicy.calls.clear()
        decision = self.decide(
            message(MessageType.REQUEST, na(1), duid=clientDuid(5), server=SERVER_DUID)
        )
        self.assertEqual(self.farPolicy.calls, [])
        self.assertEqual(
            self.names(self.lanPolicy), {"respondsTo", "mayAllocate", "maxValidLifetime"}
        )
        self.assertEqual(decision.changes[0].valid_lifetime, 4000)
        self.assertEqual(decision.policies, (self.lanPolicy,))

    def test_respondsToPerSubnet(self) -> None:
        """The far policy not answering drops far messages only."""
        self.farPolicy.answer = False
        self.dropped(toFar(message(MessageType.SOLICIT, na(1))), "policy", RELAY)
        self.reply(message(MessageType.SOLICIT, na(1)))

    def test_noSubnetDefault(self) -> None:
        """
        A Release relayed from a link with no subnet is put to the default
        policy; the released far binding is reported to the far policy.
        """
        self.decide(toFar(message(MessageType.REQUEST, na(1), server=SERVER_DUID)), RELAY)
        (held,) = self.store.byClient(CLIENT, 1, LeaseType.NA)
        self.farPolicy.calls.clear()
        release = relay(
            message(MessageType.RELEASE, na(1, str(held.address)), server=SERVER_DUID),
            0,
            "2001:db8:77::1",
            "fe80::c1",
            None,
        )
        decision = self.decide(release, RELAY)
        self.assertIn(("respondsTo", (MessageType.RELEASE, True)), self.lanPolicy.calls)
        self.assertEqual(self.farPolicy.calls, [])
        self.assertEqual([lease.state for lease in decision.changes], [BindingState.RELEASED])
        self.assertEqual(decision.policies, (self.farPolicy,))

    def test_movedClient(self) -> None:
        """
        A client that moves from the far link to eth0 has its far binding
        withdrawn: that change names the far policy, the new binding the
        default one.
        """
        self.decide(toFar(message(MessageType.REQUEST, na(1), server=SERVER_DUID)), RELAY)
        decision = self.decide(message(MessageType.REQUEST, na(1), server=SERVER_DUID))
        byPolicy = {
            (lease.state, lease.address in FAR): policy
            for lease, policy in decision.notifications(StandalonePolicy())
        }
        self.assertEqual(
            byPolicy,
            {
                (BindingState.EXPIRED, True): self.farPolicy,
                (BindingState.ACTIVE, False): self.lanPolicy,
            },
        )

    def test_policyForLease(self) -> None:
        """
        Addresses by subnet prefix, delegated prefixes by pd-pool or
        reservation; anything else (configuration changed) the default.
        """
        cases = [
            (activeLease(IPv6Address("2001:db8:2::99"), CLIENT), self.farPolicy, "far"),
            (
                activeLease(IPv6Address("2001:db8:2ff:ff00::"), CLIENT, prefix_length=56),
                self.farPolicy,
                "far",
            ),
            (
                activeLease(IPv6Address("2001:db8:300::"), CLIENT, prefix_length=48),
                self.farPolicy,
                "far",
            ),
            (
                activeLease(IPv6Address("2001:db8:100:1200::"), CLIENT, prefix_length=56),
                self.lanPolicy,
                "lan",
            ),
            (activeLease(IPv6Address("2001:db8:1::1"), CLIENT), self.lanPolicy, "lan"),
            (activeLease(IPv6Address("2001:db8:9::1"), CLIENT), self.lanPolicy, None),
            (
                activeLease(IPv6Address("2001:db8:900::"), CLIENT, prefix_length=56),
                self.lanPolicy,
                None,
            ),
        ]
        for lease, policy, name in cases:
            subnet = self.engine.subnetOfLease(lease)
            self.assertEqual(subnet.name if subnet is not None else None, name, lease)
            self.assertIs(self.engine.policyForLease(lease), policy, lease)

    def test_unknownSubnet(self) -> None:
        """A policy for a subnet the configuration does not have is an error."""
        self.policy = SubnetPolicies(self.lanPolicy, {"nosuch": self.farPolicy})
        self.assertRaises(ValueError, self.configure, makeSubnet())

    def test_singlePolicy(self) -> None:
        """One policy for every subnet: it decides and is named for every change."""
        self.policy = self.lanPolicy
        self.configure(makeSubnet(), farSubnet())
        self.assertIs(self.engine.policy, self.lanPolicy)
        self.assertIs(self.engine.policies.default, self.lanPolicy)
        decision = self.decide(
            toFar(message(MessageType.REQUEST, na(1), pd(2), server=SERVER_DUID)), RELAY
        )
        self.assertEqual(decision.policies, (self.lanPolicy, self.lanPolicy))

    def test_decisionPolicies(self) -> None:
        """
        L{Decision.policies} names one policy per change, or none: then
        L{Decision.notifications} gives the default for each.
        """
        reply = Message(MessageType.REPLY, 1, ())
        lease = activeLease(IPv6Address("2001:db8:1::1"), CLIENT)
        self.assertRaises(
            ValueError,
            Decision,
            reply,
            (IPv6Address("::1"), 546, None),
            (lease,),
            (self.lanPolicy, self.farPolicy),
        )
        decision = Decision(reply, (IPv6Address("::1"), 546, None), (lease,))
        self.assertEqual(list(decision.notifications(self.farPolicy)), [(lease, self.farPolicy)])


class ServerIdentifierTests(EngineTestCase):
    """
    A failover policy tells the partner's Server Identifier from an unknown
    server's (L{IFailoverPolicy.respondsToServer}; RFC 8156 section 8).
    """

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.fake = FakeFailoverPolicy()
        self.policy = self.fake
        self.configure()
        self.assertTrue(verifyObject(IFailoverPolicy, self.fake))

    def test_renewNamingPartner(self) -> None:
        """
        In takeover, a Renew naming the partner renews the binding the
        partner granted (known from its update), and the Reply carries our
        Server Identifier, so the client talks to us from now on.
        """
        granted = activeLease(IPv6Address("2001:db8:1::120"), CLIENT, now=NOW - 1000)
        self.store.commit([granted])
        decision = self.decide(message(MessageType.RENEW, na(1, "2001:db8:1::120"), server=PARTNER))
        reply = innerReply(decision)
        self.assertEqual(one(reply.options, ServerId).duid, SERVER_DUID)
        self.assertEqual(one(one(reply.options, IANA).options, IAAddress).address, granted.address)
        self.assertEqual(decision.changes[0].cltt, NOW)
        self.assertIn(("respondsToServer", (MessageType.RENEW, PARTNER)), self.fake.calls)
        self.assertNotIn(("respondsTo", (MessageType.RENEW, False)), self.fake.calls)

    def test_unknownServer(self) -> None:
        """A Renew naming an unknown server is not ours, even in takeover."""
        self.dropped(message(MessageType.RENEW, na(1), server=OTHER_SERVER), "notForUs")
        self.assertIn(("respondsToServer", (MessageType.RENEW, OTHER_SERVER)), self.fake.calls)

    def test_notInTakeover(self) -> None:
        """Outside takeover, a message naming the partner is the partner's."""
        self.fake.takeover = False
        for msg_type in (
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        ):
            self.dropped(message(msg_type, na(1), server=PARTNER), "notForUs")
            self.assertIn(("respondsToServer", (msg_type, PARTNER)), self.fake.calls)

    def test_oursAndNone(self) -> None:
        """
        A message naming us is put to C{respondsTo(t, True)}, not
        C{respondsToServer}; one that must name a server and names none is
        dropped before any policy is asked.
        """
        self.reply(message(MessageType.RENEW, na(1), server=SERVER_DUID))
        self.assertIn(("respondsTo", (MessageType.RENEW, True)), self.fake.calls)
        self.dropped(message(MessageType.RENEW, na(1)), "missingServerId")
        self.assertNotIn("respondsToServer", [name for name, _ in self.fake.calls])

    def test_releaseNamingPartner(self) -> None:
        """In takeover, the partner's client may release its binding here."""
        granted = activeLease(IPv6Address("2001:db8:1::120"), CLIENT, now=NOW - 1000)
        self.store.commit([granted])
        decision = self.decide(
            message(MessageType.RELEASE, na(1, "2001:db8:1::120"), server=PARTNER)
        )
        self.assertEqual([lease.state for lease in decision.changes], [BindingState.RELEASED])

    def test_perSubnet(self) -> None:
        """
        The policy of the message's subnet decides: a subnet served alone
        does not answer a Renew naming the partner; the relationship's does.
        """
        self.policy = SubnetPolicies(StandalonePolicy(), {"far": self.fake})
        self.configure(makeSubnet(), farSubnet())
        self.dropped(message(MessageType.RENEW, na(1), server=PARTNER), "notForUs")
        self.assertEqual(self.fake.calls, [])
        reply = innerReply(
            self.decide(toFar(message(MessageType.RENEW, na(1), server=PARTNER)), RELAY)
        )
        self.assertEqual(one(reply.options, ServerId).duid, SERVER_DUID)
        self.assertIn(("respondsToServer", (MessageType.RENEW, PARTNER)), self.fake.calls)


ADDRESS = IPv6Address("2001:db8:1::151")


class AckFieldsTests(EngineTestCase):
    """
    What the partner acknowledged of a binding (partner lifetimes sent and
    acked, acknowledged state and its start time) survives the same IA's
    renewal and is dropped when the binding goes to another client.
    """

    def acked(self, lease: Lease, stos: float | None = None) -> Lease:
        """C{lease} as acknowledged by the partner, with partner lifetimes."""
        return evolve(
            lease,
            partner_lifetime_sent=NOW + 9000,
            partner_lifetime_acked=NOW + 8000,
            partner_state_acked=lease.state,
            partner_stos_acked=lease.start_time_of_state if stos is None else stos,
        )

    def test_renewKeepsAcks(self) -> None:
        """
        Renewing an ACTIVE binding keeps its start time of state and every
        ack field: the partner still knows its current state.
        """
        stored = self.acked(activeLease(ADDRESS, CLIENT, now=NOW - 100))
        self.store.commit([stored])
        (renewed,) = self.decide(
            message(MessageType.RENEW, na(1, str(ADDRESS)), server=SERVER_DUID)
        ).changes
        self.assertEqual(renewed.cltt, NOW)
        self.assertEqual(renewed.start_time_of_state, NOW - 100)
        self.assertEqual(
            (
                renewed.partner_lifetime_sent,
                renewed.partner_lifetime_acked,
                renewed.partner_state_acked,
                renewed.partner_stos_acked,
            ),
            (NOW + 9000, NOW + 8000, BindingState.ACTIVE, NOW - 100),
        )
        self.assertTrue(renewed.stateAcked)

    def test_reactivationNewState(self) -> None:
        """
        The same IA getting its EXPIRED binding back: a change of state, so
        the start time of state is now and the partner no longer knows the
        state; the ack fields are still the partner's word on this binding.
        """
        stored = self.acked(
            evolve(activeLease(ADDRESS, CLIENT, now=NOW - 9000), state=BindingState.EXPIRED)
        )
        self.store.commit([stored])
        (granted,) = self.decide(
            message(MessageType.REQUEST, na(1, str(ADDRESS)), server=SERVER_DUID)
        ).changes
        self.assertEqual((granted.state, granted.start_time_of_state), (BindingState.ACTIVE, NOW))
        self.assertEqual(
            (granted.partner_lifetime_acked, granted.partner_state_acked),
            (NOW + 8000, BindingState.EXPIRED),
        )
        self.assertFalse(granted.stateAcked)

    def test_otherClientResets(self) -> None:
        """
        Another client taking over a RELEASED binding starts with none of
        the previous client's ack fields, and a new start time of state.
        """
        previous = self.acked(
            evolve(
                activeLease(ADDRESS, clientDuid(2), now=NOW - 9000),
                state=BindingState.RELEASED,
            )
        )
        self.store.commit([previous])
        (granted,) = self.decide(
            message(MessageType.REQUEST, na(1, str(ADDRESS)), server=SERVER_DUID)
        ).changes
        self.assertEqual((granted.duid, granted.start_time_of_state), (CLIENT, NOW))
        self.assertEqual(
            (
                granted.partner_lifetime_sent,
                granted.partner_lifetime_acked,
                granted.partner_state_acked,
                granted.partner_stos_acked,
            ),
            (0.0, 0.0, None, 0.0),
        )

    def test_otherIAResets(self) -> None:
        """Another IA of the same client is another client for the binding."""
        previous = self.acked(
            evolve(activeLease(ADDRESS, CLIENT, iaid=2, now=NOW - 9000), state=BindingState.EXPIRED)
        )
        self.store.commit([previous])
        (granted,) = self.decide(
            message(MessageType.REQUEST, na(1, str(ADDRESS)), server=SERVER_DUID)
        ).changes
        self.assertEqual((granted.iaid, granted.partner_lifetime_acked), (1, 0.0))
        self.assertIsNone(granted.partner_state_acked)

    def test_mcltAfterAck(self) -> None:
        """
        With the real failover policy (NORMAL, MCLT 600): a new binding gets
        MCLT; once the partner has acked a partner lifetime, the renewal
        gets the desired lifetime, and stays acknowledged for the next one.
        """
        endpoint = Endpoint()
        self.policy = FailoverPolicy(endpoint, FakeUpdateQueue())
        self.configure()
        (granted,) = self.decide(message(MessageType.REQUEST, na(1), server=SERVER_DUID)).changes
        self.assertEqual(granted.valid_lifetime, 600)
        # The partner acks the update (what the failover queue records).
        self.store.commit(
            [
                evolve(
                    granted,
                    partner_lifetime_sent=NOW + 4300,
                    partner_lifetime_acked=NOW + 4300,
                    partner_state_acked=BindingState.ACTIVE,
                    partner_stos_acked=granted.start_time_of_state,
                )
            ]
        )
        renew = message(MessageType.RENEW, na(1, str(granted.address)), server=SERVER_DUID)
        (renewed,) = self.decide(renew, now=NOW + 300).changes
        self.assertEqual(renewed.valid_lifetime, 4000)
        self.assertTrue(renewed.stateAcked)
        (again,) = self.decide(renew, now=NOW + 2000).changes
        # max(acked, now) + MCLT - now: 4300 + 600 - 2000.
        self.assertEqual(again.valid_lifetime, 2900)
