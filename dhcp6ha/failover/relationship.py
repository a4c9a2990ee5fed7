# -*- test-case-name: tests.test_relationship -*-
"""
One failover relationship at run time: the service that ties the endpoint
state machine, the update queue, the allocation policy and the partner
connection of one C{[failover:NAME]} section together.

    relationship = FailoverRelationship(
        failoverConfig, reactor, lambda: leases.store,
        serverConfig=serverConfig,            # pools: coverage, prefix share
        serverDuid=lambda: dhcpv6.serverDuid,
    )
    relationship.setServiceParent(top)    # after "leases", before "dhcpv6"
                                          # (makeService: in its "failover" child)
    relationship.covers(lease)            # for the store's replication classifier
    relationship.policy                   # the IFailoverPolicy, once started

What it runs, once started (nothing is built or bound before
C{startService}, which needs the open lease store):

  - a L{FailoverEndpoint} (RFC 8156 section 8) on the store and the reactor,
    with the configured MCLT, keepalive (C{unreachable-after}; CONTACT every
    C{heartbeat-interval}), auto-partner-down and skew bound;
  - the update queue (L{dhcp6ha.failover.queue.UpdateQueue}, bounded by the
    smaller of both sides' C{max-unacked}, proposing the policy's partner
    lifetimes: C{cltt + T1 fraction * valid + desired}, the desired lifetime
    being the subnet's configured one, L{DesiredLifetimes}, so that the
    first grant gets MCLT and, once the partner acked that proposal, the
    next renewal the configured lifetime, section 4.4.1) and a
    L{FailoverPolicy} over both, whose C{partnerDuid} is
    learnt at Connect (and kept in the store's metadata, so a restarted
    server that cannot reach its partner still recognises the partner's
    Server Identifier).  Received binding updates go through
    L{dhcp6ha.failover.queue.receiveBindings}; bindings outside the
    relationship's pools are refused (ConfigurationConflict);
  - on the primary, the secondary's reserve of delegable prefixes
    (L{PrefixShare}: C{min(floor(free * prefix-share), max-backup-prefixes)}
    FREE-BACKUP prefixes per pd-pool), handed on the secondary's PoolRequest
    and topped up by the primary in NORMAL once the secondary's binding
    updates show that half of a pool's reserve has been leased; and taken
    back down to that target in NORMAL (L{PrefixTakeback}: after each
    PoolRequest, e.g. when the configuration lowered the share or the cap,
    and when the primary's own free prefixes of a pool run low);
  - the partner connection, mutual TLS with the partner identity checked
    (L{dhcp6ha.failover.tls}), AMP inside (L{dhcp6ha.failover.protocol}):
      - the primary connects to C{partner-address}:C{partner-port} with a
        C{ClientService} that retries with exponential backoff; a connection
        counts as made only once the Connect exchange succeeded, so a
        refused Connect is a failed attempt and the retries slow down
        (section 6.1);
      - the secondary listens on C{listen-address}:C{listen-port}, accepting
        only C{partner-address} as source when it is configured.  At most one
        connection is live: a newer one that completes Connect replaces the
        older (a restarted primary comes back before the secondary notices
        that the old TCP connection died), which is closed and logged.

A partner process that dies closes its TCP connection, so the survivor sees
the loss at once and goes to COMMUNICATIONS-INTERRUPTED (the machine's
transition); a partner that hangs or a network that drops everything is
detected by the keepalive (C{unreachable-after}).  The machine logs every
state change.

Why not C{ClientService}'s C{prepareConnection} for the Connect exchange:
with Twisted 26.10 a connection lost while C{prepareConnection} runs, or
after it failed, makes C{ClientService} raise C{NoTransition} (its machine
has no transition for a disconnection in the Connecting or Waiting states).
So the exchange runs inside the endpoint (L{ConnectExchangeEndpoint}), and
C{ClientService} sees a connection only once it is established.

This server's own certificate is checked at start and then daily
(L{CERTIFICATE_CHECK_INTERVAL}) against the reactor's time: one expired, not
yet valid or expiring within 30 days (L{DEFAULT_EXPIRY_WARNING}) is logged as
a warning naming the relationship and the certificate file
(L{FailoverRelationship.checkCertificate}).  It does not stop the start: the
server still serves its clients, and the partner refuses what it must.

Stopping (C{stopService}): the endpoint goes to PAUSED, stored and announced
(RFC 8156 section 8.3.1), the connection is closed with a Disconnect, the
client service or listener stops.  Unacked updates are durable in the store
and go again after the restart.

Operator control (L{IRelationshipControl}):

  - C{status()}: the endpoint's state and the partner's, unacked updates,
    last contact, clock skew, connected;
  - C{partnerDown()}: the operator's partner-down, refused (C{ControlError})
    in the states RFC 8156 does not allow it in;
  - C{sync()}: when connected, ask the partner for the updates we have not
    received (UPDREQ, tagged so its UPDDONE is not taken as the endpoint's
    own request's) and send ours that it has not acked; fires once the
    partner has taken the request.
"""

from __future__ import annotations

import hashlib
import ipaddress
from bisect import bisect_right
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, cast

from attrs import field, frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha._typedtwisted import multiServiceInit, multiServiceStart, multiServiceStop
from dhcp6ha.config import (
    AddressPool,
    FailoverConfig,
    FailoverRole,
    PrefixPool,
    ServerConfig,
    SubnetConfig,
)
from dhcp6ha.control import ControlError, RelationshipStatus
from dhcp6ha.failover.balance import PrefixTakeback
from dhcp6ha.failover.commands import FailoverStatus
from dhcp6ha.failover.machine import EndpointState, FailoverEndpoint, Role
from dhcp6ha.failover.policy import FailoverPolicy
from dhcp6ha.failover.protocol import (
    LocalParameters,
    PartnerFactory,
    PartnerProtocol,
    PartnerSession,
    PrefixShare,
)
from dhcp6ha.failover.queue import UpdateQueue, receiveBindings
from dhcp6ha.failover.tls import (
    DEFAULT_EXPIRY_WARNING,
    PartnerConnectionStats,
    PartnerIdentity,
    TLSMaterial,
    partnerClientEndpoint,
    partnerServerEndpoint,
)
from dhcp6ha.interfaces import IRelationshipControl
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.interfaces import ILeaseStore

__all__ = [
    "CERTIFICATE_CHECK_INTERVAL",
    "ConnectExchangeEndpoint",
    "Coverage",
    "DesiredLifetimes",
    "FailoverRelationship",
]

CERTIFICATE_CHECK_INTERVAL = 86400.0
"""Seconds between two checks of this server's own certificate while running."""

# Typed views of the untyped Twisted endpoint API used here (mypy --strict);
# those of the service API are in dhcp6ha._typedtwisted.
_tcp6Client = cast(Callable[..., IStreamClientEndpoint], TCP6ClientEndpoint)
_tcp4Client = cast(Callable[..., IStreamClientEndpoint], TCP4ClientEndpoint)
_tcp6Server = cast(Callable[..., IStreamServerEndpoint], TCP6ServerEndpoint)
_tcp4Server = cast(Callable[..., IStreamServerEndpoint], TCP4ServerEndpoint)

_PARTNER_DUID_KEY = "failover.{name}.partner-duid"
_BACKUP_REACH_KEY = "failover.{name}.backup-reach"


def _merged(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Inclusive integer ranges merged into sorted disjoint ones: (starts, ends)."""
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted(ranges):
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


def _within(ranges: tuple[list[int], list[int]], value: int) -> bool:
    """Is C{value} in one of these merged ranges?"""
    starts, ends = ranges
    i = bisect_right(starts, value) - 1
    return i >= 0 and value <= ends[i]


@frozen
class Coverage:
    """
    The addresses and prefixes one relationship covers: the pools and
    reservations of its subnets (RFC 7031 section 7 requirement 2: a pool
    belongs to at most one relationship).

    L{covers} runs for every binding stored or received (a resync asks it a
    million times): it looks integers up in sets and sorted ranges made once
    from the pools and reservations.

    @ivar pools: the address pools.
    @ivar pdPools: the delegable prefix pools.
    @ivar addresses: reserved addresses.
    @ivar prefixes: reserved delegated prefixes.
    @ivar everything: cover every binding (no configuration given).
    """

    pools: tuple[AddressPool, ...] = ()
    pdPools: tuple[PrefixPool, ...] = ()
    addresses: frozenset[IPv6Address] = frozenset()
    prefixes: frozenset[IPv6Network] = frozenset()
    everything: bool = False
    # Made from the above: address ranges; reserved addresses; prefix
    # ranges by delegated length; reserved prefixes as (network, length).
    _addressRanges: tuple[list[int], list[int]] = field(init=False, eq=False, repr=False)
    _reservedAddresses: frozenset[int] = field(init=False, eq=False, repr=False)
    _prefixRanges: dict[int, tuple[list[int], list[int]]] = field(init=False, eq=False, repr=False)
    _reservedPrefixes: frozenset[tuple[int, int]] = field(init=False, eq=False, repr=False)

    @_addressRanges.default
    def _addressRangesDefault(self) -> tuple[list[int], list[int]]:
        return _merged([(int(pool.first), int(pool.last)) for pool in self.pools])

    @_reservedAddresses.default
    def _reservedAddressesDefault(self) -> frozenset[int]:
        return frozenset(int(address) for address in self.addresses)

    @_prefixRanges.default
    def _prefixRangesDefault(self) -> dict[int, tuple[list[int], list[int]]]:
        byLength: dict[int, list[tuple[int, int]]] = {}
        for pool in self.pdPools:
            byLength.setdefault(pool.delegated_length, []).append(
                (int(pool.prefix.network_address), int(pool.prefix.broadcast_address))
            )
        return {length: _merged(ranges) for length, ranges in byLength.items()}

    @_reservedPrefixes.default
    def _reservedPrefixesDefault(self) -> frozenset[tuple[int, int]]:
        return frozenset(
            (int(prefix.network_address), prefix.prefixlen) for prefix in self.prefixes
        )

    @classmethod
    def of(cls, config: ServerConfig, failover: FailoverConfig) -> Coverage:
        """The coverage of C{failover}'s subnets in C{config}."""
        pools: list[AddressPool] = []
        pdPools: list[PrefixPool] = []
        addresses: set[IPv6Address] = set()
        prefixes: set[IPv6Network] = set()
        for name in failover.subnets:
            subnet = config.subnetByName(name)
            pools.extend(subnet.pools)
            pdPools.extend(subnet.pd_pools)
            for reservation in subnet.reservations:
                addresses.update(reservation.addresses)
                prefixes.update(reservation.prefixes)
        return cls(tuple(pools), tuple(pdPools), frozenset(addresses), frozenset(prefixes))

    def canonical(self) -> str:
        """
        What this coverage is, as text that does not depend on how it was
        written: merged address ranges, prefix ranges per delegated length,
        reserved addresses and prefixes, each sorted.  Two servers whose
        configurations cover the same addresses and prefixes get the same
        text, whatever their subnet names, pool order or pool boundaries.
        """
        if self.everything:
            return "everything"
        starts, ends = self._addressRanges
        lines = [f"na {IPv6Address(a)}-{IPv6Address(b)}" for a, b in zip(starts, ends, strict=True)]
        for length in sorted(self._prefixRanges):
            starts, ends = self._prefixRanges[length]
            lines += [
                f"pd {IPv6Address(a)}-{IPv6Address(b)}/{length}"
                for a, b in zip(starts, ends, strict=True)
            ]
        lines += [f"reserved {IPv6Address(a)}" for a in sorted(self._reservedAddresses)]
        lines += [
            f"reserved {IPv6Address(a)}/{length}" for a, length in sorted(self._reservedPrefixes)
        ]
        return "\n".join(lines)

    def digest(self) -> bytes:
        """SHA-256 of L{canonical}: what Connect carries (partners must agree)."""
        return hashlib.sha256(self.canonical().encode("ascii")).digest()

    def summary(self) -> str:
        """L{canonical} in a few words, for a log line."""
        if self.everything:
            return "every binding"
        ranges = len(self._addressRanges[0])
        prefixRanges = sum(len(starts) for starts, _ in self._prefixRanges.values())
        return (
            f"{ranges} address range(s) of"
            f" {sum(b - a + 1 for a, b in zip(*self._addressRanges, strict=True))} addresses,"
            f" {prefixRanges} prefix range(s), {len(self.addresses)} reserved address(es),"
            f" {len(self.prefixes)} reserved prefix(es)"
        )

    def covers(self, lease: Lease) -> bool:
        """
        Is C{lease} an address or prefix of this relationship?  An address
        binding (prefix length 128) in an address pool or reserved; a
        delegated prefix reserved, or of a prefix pool's delegated length
        inside it and without host bits set.
        """
        if self.everything:
            return True
        address = int(lease.address)
        length = lease.prefix_length
        if lease.lease_type is LeaseType.PD:
            if (address, length) in self._reservedPrefixes:
                return True
            ranges = self._prefixRanges.get(length)
            return (
                ranges is not None
                and 0 <= length <= 128
                and not address & ((1 << (128 - length)) - 1)
                and _within(ranges, address)
            )
        if length != 128:
            return False
        return address in self._reservedAddresses or _within(self._addressRanges, address)


@frozen
class DesiredLifetimes:
    """
    The desired lifetime of RFC 8156 section 4.4 for each binding of one
    relationship: the valid lifetime the configuration wants for it, that of
    the subnet whose pools or reservations hold it (C{valid-lifetime} for an
    address, C{pd-valid-lifetime} for a delegated prefix), as the engine
    asks for it before the MCLT cap.  The policy proposes partner lifetimes
    from it (L{FailoverPolicy.partnerLifetime}, the only place they are
    computed; the update queue calls it), so that once the partner acks one,
    the client's next renewal gets the configured lifetime.

    Never less than the lifetime the binding holds: a binding granted before
    the configuration shortened its lifetime keeps a partner lifetime beyond
    its expiry.  A binding of no subnet (the configuration changed) gets the
    lifetime it holds.

    @ivar subnets: the relationship's subnets.
    """

    subnets: tuple[SubnetConfig, ...]

    @classmethod
    def of(cls, config: ServerConfig, failover: FailoverConfig) -> DesiredLifetimes:
        """The desired lifetimes of C{failover}'s subnets in C{config}."""
        return cls(tuple(config.subnetByName(name) for name in failover.subnets))

    def subnetOf(self, lease: Lease) -> SubnetConfig | None:
        """The subnet whose pools or reservations hold C{lease}, if any."""
        for subnet in self.subnets:
            if lease.lease_type is LeaseType.PD:
                if any(lease.prefix in r.prefixes for r in subnet.reservations) or any(
                    lease.prefix_length == pool.delegated_length and lease.address in pool.prefix
                    for pool in subnet.pd_pools
                ):
                    return subnet
            elif lease.prefix_length == 128 and (
                lease.address in subnet.prefix
                or any(lease.address in pool for pool in subnet.pools)
                or any(lease.address in r.addresses for r in subnet.reservations)
            ):
                return subnet
        return None

    def __call__(self, lease: Lease) -> int:
        """The desired valid lifetime for C{lease}."""
        subnet = self.subnetOf(lease)
        if subnet is None:
            return lease.valid_lifetime
        if lease.lease_type is LeaseType.PD:
            return max(subnet.pd_valid_lifetime, lease.valid_lifetime)
        return max(subnet.valid_lifetime, lease.valid_lifetime)


# --- the primary's connection: Connect inside the endpoint ------------------------------


class _LiveConnection(Protocol):
    """
    What C{ClientService} holds for an established partner connection: it
    learns the transport (to close it on stop) and the connection's loss.
    (The L{PartnerProtocol} itself is the session's C{current}.)
    """


@implementer(IStreamClientEndpoint)
class ConnectExchangeEndpoint:
    """
    An endpoint whose C{connect} fires only once the partner is
    authenticated (the TLS endpoint) and the Connect exchange succeeded;
    it fails (and the connection is closed) when Connect is refused.

    The protocol C{ClientService} gets is a placeholder built from its
    factory, connected to the same transport and told of the connection's
    loss; the L{PartnerProtocol} is built from C{partnerFactory}.
    """

    def __init__(
        self, authenticated: IStreamClientEndpoint, partnerFactory: PartnerFactory
    ) -> None:
        self.authenticated = authenticated
        self.partnerFactory = partnerFactory

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        attempt: Deferred[IProtocol] = self.authenticated.connect(self.partnerFactory)
        partner: list[PartnerProtocol] = []

        def cancel(result: Deferred[IProtocol]) -> None:
            if partner:
                partner[0].close("connection attempt cancelled")
            else:
                attempt.cancel()

        result: Deferred[IProtocol] = Deferred(cancel)

        def authenticated(protocol: IProtocol) -> Deferred[PartnerProtocol]:
            assert isinstance(protocol, PartnerProtocol)
            partner.append(protocol)
            return protocol.startConnect()

        def established(protocol: PartnerProtocol) -> IProtocol:
            transport = protocol.transport
            assert transport is not None
            live = protocolFactory.buildProtocol(transport.getPeer())
            if live is None:
                protocol.close("declined by the connection service")
                raise ValueError("the connection service declined the connection")
            live.makeConnection(transport)
            protocol.onLost(live.connectionLost)
            return live

        def forward(outcome: IProtocol | Failure) -> None:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        attempt.addCallback(authenticated).addCallback(established).addBoth(forward)
        return result


# --- the relationship -------------------------------------------------------------------


@implementer(IRelationshipControl)
class FailoverRelationship(MultiService):
    """
    One C{[failover:NAME]} relationship, as a service.  Its service name is
    the relationship name (L{IRelationshipControl.name}); do not rename it.

    @ivar config: the relationship's configuration.
    @ivar role: this server's role.
    @ivar coverage: the addresses and prefixes of the relationship.
    @ivar desiredLifetimes: the configured lifetimes the policy proposes
        partner lifetimes from (C{None} without a server configuration: the
        lifetime each binding got).
    @ivar material: our TLS certificate, key and CA.
    @ivar identity: the partner identity its certificate must prove.
    @ivar store: the lease store, once started.
    @ivar endpoint: the state machine, once started.
    @ivar queue: the update queue, once started.
    @ivar policy: the L{FailoverPolicy} for the engine, once started.
    @ivar session: the L{PartnerSession}, once started.
    @ivar prefixShare: the primary's L{PrefixShare} (the secondary's reserve
        of delegable prefixes), once started, if it has pd-pools.
    @ivar takeback: the primary's L{PrefixTakeback} (taking FREE-BACKUP
        prefixes back above the reserve's target), with C{prefixShare}.
    @ivar stats: TLS counters of the partner connections.
    @ivar port: the secondary's listening port, while listening.
    @ivar connectionService: the primary's C{ClientService}, while running.
    """

    log = Logger()

    def __init__(
        self,
        config: FailoverConfig,
        reactor: Any,
        store: Callable[[], ILeaseStore],
        *,
        serverConfig: ServerConfig | None = None,
        serverDuid: Callable[[], bytes | None] = lambda: None,
        clientsSeen: Callable[[], int] | None = None,
        material: TLSMaterial | None = None,
        retryPolicy: Callable[[int], float] | None = None,
        startupTime: float = 10.0,
        tcpEndpoint: IStreamClientEndpoint | IStreamServerEndpoint | None = None,
    ) -> None:
        """
        @param config: the C{[failover:NAME]} section.
        @param reactor: the reactor (clock, TCP, TLS).
        @param store: returns the open lease store (called by C{startService}).
        @param serverConfig: the whole configuration, for the pools of the
            relationship's subnets (what it covers, the prefixes the primary
            shares); without it every binding counts as covered and no
            prefix is shared.
        @param serverDuid: our server DUID (sent at Connect; read then).
        @param clientsSeen: the count of client messages received, for CONTACT.
        @param material: TLS material; loaded from the configured files if
            not given.
        @param retryPolicy: the primary's reconnection delays (default:
            exponential backoff from 1 s to 60 s).
        @param startupTime: how long STARTUP waits for the partner.
        @param tcpEndpoint: the TCP endpoint under TLS (default: from the
            configured addresses and ports).

        @raise dhcp6ha.failover.tls.TLSMaterialError: the certificate, key
            or CA cannot be used.
        @raise ValueError: the partner identity does not parse.
        """
        multiServiceInit(self)
        self.name = config.name
        self.config = config
        self.reactor = reactor
        self._openStore = store
        self._serverDuid = serverDuid
        self._clientsSeen = clientsSeen
        self.coverage = (
            Coverage(everything=True) if serverConfig is None else Coverage.of(serverConfig, config)
        )
        self._reserved: frozenset[IPv6Network] = self.coverage.prefixes
        self.desiredLifetimes = (
            None if serverConfig is None else DesiredLifetimes.of(serverConfig, config)
        )
        self.material = (
            material
            if material is not None
            else TLSMaterial.load(config.certificate, config.key, config.ca)
        )
        self.identity = PartnerIdentity.parse(config.partner_identity)
        self._retryPolicy = (
            retryPolicy
            if retryPolicy is not None
            else backoffPolicy(initialDelay=1.0, maxDelay=60.0)
        )
        self._startupTime = startupTime
        self._tcpEndpoint = tcpEndpoint
        self.role = Role.PRIMARY if config.role is FailoverRole.PRIMARY else Role.SECONDARY
        self.store: ILeaseStore | None = None
        self.endpoint: FailoverEndpoint | None = None
        self.queue: UpdateQueue | None = None
        self.policy: FailoverPolicy | None = None
        self.session: PartnerSession | None = None
        self.prefixShare: PrefixShare | None = None
        self.takeback: PrefixTakeback | None = None
        self.stats = PartnerConnectionStats()
        self.port: IListeningPort | None = None
        self.connectionService: ClientService | None = None
        self._listening: Deferred[IListeningPort] | None = None
        self._certificateCheck = LoopingCall(self.checkCertificate)
        self._certificateCheck.clock = reactor

    # --- what the wiring reads ---------------------------------------------------------

    def covers(self, lease: Lease) -> bool:
        """
        Is C{lease} replicated by this relationship?  (The store's
        replication classifier should answer this relationship's name for it.)
        """
        return self.coverage.covers(lease)

    @property
    def parameters(self) -> LocalParameters:
        """Our side of the Connect exchange."""
        config = self.config
        return LocalParameters(
            relationship=config.name,
            role=self.role,
            mclt=config.mclt,
            maxUnacked=config.max_unacked,
            keepalive=config.unreachable_after,
            maxClockSkew=config.max_clock_skew,
            coverage=None if self.coverage.everything else self.coverage.digest(),
            coverageSummary=self.coverage.summary(),
        )

    # --- service ---------------------------------------------------------------------

    def startService(self) -> None:
        """Build the endpoint, queue, policy and session; connect or listen."""
        config = self.config
        reactor = self.reactor
        store = self._openStore()
        endpoint = FailoverEndpoint(
            config.name,
            self.role,
            reactor,
            store,
            mclt=config.mclt,
            startupTime=self._startupTime,
            autoPartnerDown=float(config.auto_partner_down) if config.auto_partner_down else None,
            keepaliveTime=config.unreachable_after,
            contactsPerKeepalive=max(1, int(config.unreachable_after // config.heartbeat_interval)),
            recordInterval=config.operation_record_interval,
            maxSkew=config.max_clock_skew,
        )
        queue = UpdateQueue(
            config.name,
            store,
            reactor,
            maxUnacked=config.max_unacked,
            gatherDelay=config.lazy_update_delay,
        )
        policy = FailoverPolicy(
            endpoint,
            queue,
            partnerDuid=self._storedPartnerDuid(store),
            desiredLifetime=self.desiredLifetimes,
        )
        # The partner lifetime is proposed here only (section 4.4.1).
        queue.partnerLifetime = policy.partnerLifetime
        share: PrefixShare | None = None
        takeback: PrefixTakeback | None = None
        # Also with a share of 0: what the secondary holds is taken back.
        if self.role is Role.PRIMARY and self.coverage.pdPools:
            share = PrefixShare(
                self.coverage.pdPools,
                config.prefix_share,
                reactor,
                reserved=self._reserved,
                maxBackup=config.max_backup_prefixes,
                metadataKey=_BACKUP_REACH_KEY.format(name=config.name),
            )
            takeback = PrefixTakeback(
                share,
                reactor,
                store,
                reserved=self._reserved,
                mayRun=self._mayTakeBack,
                taken=self._takenBack,
                relationship=config.name,
            )
            policy.bindingObservers.append(takeback.granted)
        self.prefixShare = share
        self.takeback = takeback
        coverage = self.coverage

        def receive(
            store: ILeaseStore, role: Role, boxes: list[dict[str, Any]], now: float
        ) -> Deferred[list[dict[str, Any]]]:
            if share is None:
                return receiveBindings(
                    store, role, boxes, now, configured=coverage.covers, queue=queue
                )
            # Read before the bindings are applied.
            ends = self._watchReserve(share, store, boxes)
            d = receiveBindings(store, role, boxes, now, configured=coverage.covers, queue=queue)
            return d.addCallback(self._topUpReserve, share, ends)

        session = PartnerSession(
            self.parameters,
            endpoint,
            queue,
            store,
            reactor,
            receive,
            serverDuid=self._serverDuid,
            clientsSeen=self._clientsSeen,
            prefixShare=share,
            partnerDuidLearnt=self._partnerDuidLearnt,
            connectedHook=self._connected,
            prefixesHanded=None if takeback is None else lambda: takeback.request("pool request"),
        )
        self.store, self.endpoint, self.queue = store, endpoint, queue
        self.policy, self.session = policy, session
        if self.role is Role.SECONDARY:
            # Before the endpoint starts: a port that cannot be bound stops
            # the start here, with nothing to undo.
            self._startListening(session)
        endpoint.start()
        multiServiceStart(self)
        if self.role is Role.PRIMARY:
            self._startConnecting(session)
        # Now, then daily: a server runs for longer than a certificate's
        # last 30 days.
        self._certificateCheck.start(CERTIFICATE_CHECK_INTERVAL, now=True).addErrback(
            lambda failure: self.log.failure(
                "Failover {relationship}: checking the certificate failed",
                failure,
                relationship=self.config.name,
            )
        )

    def checkCertificate(self) -> str | None:
        """
        Check this server's own certificate at the reactor's time; log a
        warning if it has expired, is not yet valid or expires within
        L{DEFAULT_EXPIRY_WARNING}.

        @return: the problem in words, or C{None}.
        """
        problem = self.material.validityProblem(
            self.reactor.seconds(), warnWithin=DEFAULT_EXPIRY_WARNING
        )
        if problem is not None:
            self.log.warn(
                "Failover {relationship}: {problem} (certificate file {certificate})",
                relationship=self.config.name,
                problem=problem,
                certificate=self.config.certificate,
            )
        return problem

    # --- the secondary's reserve of prefixes (the primary's side) ---------------------

    @staticmethod
    def _watchReserve(
        share: PrefixShare, store: ILeaseStore, boxes: list[dict[str, Any]]
    ) -> list[bool]:
        """
        Before received bindings are applied: note FREE-BACKUP records the
        partner sends us (after we lost our database), and tell, per
        binding, whether it ends a FREE-BACKUP prefix (the secondary leased
        it), which counts once it is accepted.
        """
        ends: list[bool] = []
        for box in boxes:
            ended = False
            try:
                if box["lease_type"] is LeaseType.PD:
                    address, length = box["address"], box["prefix_length"]
                    if box["state"] is BindingState.FREE_BACKUP:
                        share.backupSeen(address, length)
                    else:
                        existing = store.get(address, length)
                        ended = existing is not None and existing.state is BindingState.FREE_BACKUP
            except Exception:
                pass  # receiveBindings reports what it cannot read
            ends.append(ended)
        return ends

    def _topUpReserve(
        self, results: list[dict[str, Any]], share: PrefixShare, ends: list[bool]
    ) -> list[dict[str, Any]]:
        """
        After received bindings are stored: count the FREE-BACKUP prefixes
        that left the reserve and, in NORMAL, top the reserve up once a
        pool's has fallen below half its target (section 4.2.2: the primary
        may send FREE-BACKUP prefixes at any time).
        """
        for ended, result in zip(ends, results, strict=False):
            if ended and result.get("status") == int(FailoverStatus.SUCCESS):
                share.backupEnded(result["address"], result["prefix_length"])
        endpoint, session = self.endpoint, self.session
        if (
            share.wantsTopUp()
            and endpoint is not None
            and endpoint.state is EndpointState.NORMAL
            and session is not None
            and session.current is not None
        ):

            def failed(failure: Failure) -> None:
                self.log.failure(
                    "Failover {relationship}: topping up the secondary's prefixes failed",
                    failure,
                    relationship=self.config.name,
                )

            session.handPrefixes().addErrback(failed)
        return results

    def _mayTakeBack(self) -> bool:
        """Take FREE-BACKUP prefixes back only in NORMAL, connected."""
        endpoint, session = self.endpoint, self.session
        return (
            endpoint is not None
            and endpoint.state is EndpointState.NORMAL
            and session is not None
            and session.current is not None
        )

    def _takenBack(self, records: list[Lease]) -> None:
        """FREE records of a takeback are durable: send them (lazy updates)."""
        queue = self.queue
        if queue is not None:
            for record in records:
                queue.enqueue(record)

    def _connected(self, protocol: PartnerProtocol) -> None:
        """Bound what we send by what the partner accepts unacked (section 6.1.3)."""
        queue = self.queue
        if queue is not None and protocol.partnerMaxUnacked is not None:
            queue.maxUnacked = max(1, min(self.config.max_unacked, protocol.partnerMaxUnacked))

    def _startConnecting(self, session: PartnerSession) -> None:
        config = self.config
        tcp = self._tcpEndpoint
        if tcp is None:
            address = config.partner_address
            if address is None:
                raise ValueError("failover " + config.name + ": the primary needs partner-address")
            if address.version == 6:
                tcp = _tcp6Client(
                    self.reactor,
                    str(address),
                    config.partner_port,
                    timeout=config.handshake_timeout,
                )
            else:
                tcp = _tcp4Client(
                    self.reactor,
                    str(address),
                    config.partner_port,
                    timeout=config.handshake_timeout,
                )
        tls = partnerClientEndpoint(
            self.reactor,
            self.material,
            self.identity,
            cast(IStreamClientEndpoint, tcp),
            handshakeTimeout=config.handshake_timeout,
            idleTimeout=config.idle_timeout,
        )
        tls.stats = self.stats
        service = ClientService(
            ConnectExchangeEndpoint(tls, PartnerFactory(session, initiator=True)),
            Factory.forProtocol(_LiveConnection),
            retryPolicy=self._retryPolicy,
            clock=self.reactor,
        )
        self.connectionService = service
        service.startService()
        self.log.info(
            "Failover {relationship}: primary; connecting to the secondary {identity}",
            relationship=config.name,
            identity=self.identity.name,
        )

    def _startListening(self, session: PartnerSession) -> None:
        config = self.config
        tcp = self._tcpEndpoint
        if tcp is None:
            listen = config.listen_address
            if listen.version == 6:
                tcp = _tcp6Server(self.reactor, config.listen_port, interface=str(listen))
            else:
                tcp = _tcp4Server(self.reactor, config.listen_port, interface=str(listen))
        allowed = None if config.partner_address is None else [config.partner_address]
        tls = partnerServerEndpoint(
            self.reactor,
            self.material,
            [self.identity],
            cast(IStreamServerEndpoint, tcp),
            handshakeTimeout=config.handshake_timeout,
            idleTimeout=config.idle_timeout,
            allowedSources=allowed,
        )
        tls.stats = self.stats
        listening = tls.listen(PartnerFactory(session, initiator=False))
        early: list[Failure] = []
        synchronous = True

        def synchronousFailure(failure: Failure) -> Failure | None:
            if not synchronous:
                return failure
            early.append(failure)
            return None

        # TCP endpoints listen at once: a port that cannot be bound fails the
        # start (the wiring reports it), it is not only logged.
        listening.addErrback(synchronousFailure)
        synchronous = False
        if early:
            from dhcp6ha.service import StartupError

            raise StartupError(
                "failover "
                + config.name
                + ": cannot listen on ["
                + str(config.listen_address)
                + "]:"
                + str(config.listen_port)
                + ": "
                + str(early[0].value)
            )
        self._listening = listening

        def listened(port: IListeningPort | None) -> IListeningPort | None:
            if port is None:
                return None
            self.port = port
            self.log.info(
                "Failover {relationship}: secondary; listening for the primary {identity}"
                " on {address}",
                relationship=config.name,
                identity=self.identity.name,
                address=_describeHost(port.getHost()),
            )
            return port

        def failed(failure: Failure) -> Failure:
            self.log.failure(
                "Failover {relationship}: cannot listen on [{address}]:{port}",
                failure,
                relationship=config.name,
                address=str(config.listen_address),
                port=config.listen_port,
            )
            return failure

        listening.addCallbacks(listened, failed)

    def whenListening(self) -> Deferred[IListeningPort]:
        """The secondary's listening port, once it listens (fails if it cannot)."""
        listening = self._listening
        if listening is None:
            return fail(RuntimeError("not listening (not started, or the primary)"))
        if self.port is not None:
            return succeed(self.port)
        d: Deferred[IListeningPort] = Deferred()

        def relay(result: IListeningPort | Failure) -> IListeningPort | None:
            if isinstance(result, Failure):
                d.errback(result)
                return None
            d.callback(result)
            return result

        listening.addBoth(relay)
        return d

    def stopService(self) -> Deferred[None]:
        """
        PAUSED stored and announced, Disconnect sent, connection closed,
        connecting or listening stopped.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._certificateCheck.running:
            self._certificateCheck.stop()
        endpoint, session = self.endpoint, self.session
        if session is not None:
            session.accepting = False
        if self.takeback is not None:
            self.takeback.stop()
        if endpoint is not None:
            # PAUSED, stored, then announced (RFC 8156 section 8.3.1).
            await endpoint.stop()
        closing: Deferred[None] = succeed(None)
        if session is not None:
            # Disconnect is written before the connection closes...
            closing = session.closeAll("server shutting down", FailoverStatus.SERVER_SHUTTING_DOWN)
        connection, self.connectionService = self.connectionService, None
        if connection is not None:
            # ...and the client service, stopped now, does not reconnect.
            await connection.stopService()
        await closing
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        elif listening is not None:
            listening.addErrback(lambda _: None)
        if self.queue is not None:
            self.queue.detach()
        await multiServiceStop(self)

    # --- the partner's DUID ------------------------------------------------------------

    def _storedPartnerDuid(self, store: ILeaseStore) -> bytes | None:
        text = store.getMetadata(_PARTNER_DUID_KEY.format(name=self.config.name))
        if not text:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None

    def _partnerDuidLearnt(self, duid: bytes) -> None:
        if duid == self._serverDuid():
            # Clients could not tell the two servers apart (Server Identifier).
            self.log.error(
                "Failover {relationship}: the partner has this server's own DUID {duid};"
                " give each server its own ([server] duid, or remove the stored one)",
                relationship=self.config.name,
                duid=duid.hex(),
            )
        policy, store = self.policy, self.store
        if policy is not None:
            policy.partnerDuid = duid
        if store is None:
            return
        key = _PARTNER_DUID_KEY.format(name=self.config.name)
        if store.getMetadata(key) == duid.hex():
            return

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Failover {relationship}: storing the partner's DUID failed",
                failure,
                relationship=self.config.name,
            )

        store.setMetadata(key, duid.hex()).addErrback(failed)

    # --- IRelationshipControl ----------------------------------------------------------

    def status(self) -> RelationshipStatus:
        """A snapshot for C{dhcp6ha-ctl status}."""
        endpoint, session, store = self.endpoint, self.session, self.store
        if endpoint is None or session is None or store is None:
            return RelationshipStatus(
                name=self.config.name, role=self.role.value, state="init", state_since=0.0
            )
        snapshot = endpoint.status()
        return RelationshipStatus(
            name=self.config.name,
            role=self.role.value,
            state=snapshot.state.value,
            state_since=snapshot.start_time,
            partner_state=None if snapshot.partner_state is None else snapshot.partner_state.value,
            partner_state_since=snapshot.partner_start_time,
            unacked_updates=store.pendingCount(self.config.name),
            last_contact=session.lastContact,
            clock_skew=session.clockSkew,
            connected=session.current is not None,
            service=snapshot.service.value,
            replication=None if self.queue is None else self.queue.status(),
        )

    def partnerDown(self) -> Deferred[object]:
        """The operator's partner-down; fires once PARTNER-DOWN is stored."""
        endpoint = self.endpoint
        if endpoint is None:
            return fail(ControlError("relationship " + self.config.name + " is not running"))
        if not endpoint.operatorPartnerDown():
            return fail(
                ControlError(
                    "partner-down refused in state "
                    + endpoint.state.value
                    + " (RFC 8156 allows it only while the partner is not communicating,"
                    " or before this server has synchronised)"
                )
            )

        def done(_: object) -> object:
            return {"state": endpoint.state.value, "since": endpoint.startTimeOfState}

        return endpoint.whenIdle().addCallback(done)

    def sync(self) -> Deferred[object]:
        """
        Ask the partner for the updates we lack (UPDREQ) and send ours it
        has not acked; fires once the partner has taken the request.
        """
        session, queue = self.session, self.queue
        protocol = None if session is None else session.current
        if queue is None or protocol is None:
            return fail(ControlError("not connected to the partner"))
        requested = protocol.requestUpdatesForOperator()
        # Ours go now; the queue reports its own failures.
        queue.flush().addErrback(lambda _: None)

        def done(_: object) -> object:
            return {"requested": True, "unacked_updates": self.status().unacked_updates}

        return requested.addCallback(done)


def _describeHost(host: IAddress) -> str:
    address = getattr(host, "host", None)
    port = getattr(host, "port", None)
    if isinstance(address, str) and isinstance(port, int):
        try:
            text = str(ipaddress.ip_address(address.split("%")[0]))
        except ValueError:
            text = address
        return ("[" + text + "]" if ":" in text else text) + ":" + str(port)
    return str(host)
