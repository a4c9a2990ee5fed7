# -*- test-case-name: tests.test_engine -*-
"""
The server's decisions (RFC 8415 sections 16, 18.3, 19 and 21), sans-IO.

L{Engine.handle} takes one decoded client message (possibly wrapped in
RELAY-FORW messages), where it came from and the time, and returns a
L{Decision}: the reply to send, where to send it, and the bindings that must
be durable before it is sent.  It never reads a clock, never touches a
socket and never writes to the store: the I/O adapter commits
L{Decision.changes}, waits for the commit, sends L{Decision.reply}, then calls
C{bindingChanged} of each change's policy (L{Decision.policies}).

Policies per subnet: one server may be in several failover relationships,
each covering some subnets, and serve other subnets alone (RFC 7031 section
7, requirement 3).  The engine takes one L{IAllocationPolicy} for every
subnet or a L{SubnetPolicies}; it selects the subnet of a message first and
puts the message to that subnet's policy (C{respondsTo}, C{mayAllocate}
through the allocator, C{maxValidLifetime}).  A message with no subnet is
put to the default policy.  A binding change is reported to the policy of
the subnet the binding belongs to (L{Engine.policyForLease}), which need not
be the exchange's: a client that moved to another link releases, or has
withdrawn, a binding of its former link.

The adapter must pass the changes to L{ILeaseStore.commit} before it hands
the engine the next message: the allocator relies on the store's
read-your-writes reads to never offer a lease twice.

Behaviour chosen where RFC 8415 leaves room (each one deliberate):

  - Subnet selection.  Relayed: the link-address of the innermost relay that
    has one (unspecified and link-local link-addresses are skipped, as a
    lightweight relay (RFC 6221) leaves it unspecified), matched
    longest-prefix against the subnets' prefixes; no match is no subnet.
    Direct: the subnet configured on C{received.interface}; else the subnet
    whose prefix holds the (non-link-local) source address; else, when the
    interface is unknown and exactly one subnet names an interface, that one.
    With no subnet, everything but Release and Decline (which only need the
    client's bindings) is dropped (C{dropped.noSubnet}); a Confirm thus gets
    no reply, as section 18.3.3 requires when the server cannot tell.
  - One address per IA_NA and one prefix per IA_PD is given out; other
    addresses or prefixes the client lists come back with lifetimes 0,
    except in a Renew or Rebind those it may keep (by the test of the lease
    listed first: its ACTIVE bindings, or leases the policy lets this
    server renew, appropriate on the link): they are renewed too (section
    18.3.4).  An IA holds two after the servers of a failover pair,
    cut off from each other, each granted it one.
  - IA_TA: temporary addresses are not served: an IA_TA is answered with
    NoAddrsAvail (Solicit, Request) or NoBinding (Renew, Rebind, Release,
    Decline).
  - Renew and Rebind of an IA with no usable binding (section 18.3.4/18.3.5):
    the binding is re-created when one of the leases the client lists (or
    the client's own expired/released one, or its reservation) can be given
    to it (this keeps a client's lease stable after a lost update or
    database); a fresh lease is never picked from the pools there.  If
    nothing can be re-created: leases the client lists that are not
    appropriate for the link come back with lifetimes 0, else the IA gets
    NoBinding (the client then sends a Request).
  - A client's ACTIVE binding in an IA that the server replaces (a new
    reservation, a pool no longer configured) becomes EXPIRED at once and is
    returned with lifetimes 0 (Request, Renew, Rebind, rapid commit).
  - Request naming an address off the link: the IA gets NotOnLink
    (section 18.3.2).
  - Preference is sent in Advertise when the subnet's preference is nonzero.
  - Requested options (ORO): DNS servers, domain list and SOL_MAX_RT when
    configured, in Advertise and in the Reply to Solicit, Request, Renew,
    Rebind and Information-request; Information Refresh Time and INF_MAX_RT
    only in the Reply to Information-request.
  - Client FQDN (RFC 4704): this server performs no DNS updates.  The name
    and flags the client sent are recorded on the leases of the exchange,
    and the reply carries the client's name with N set, S clear, and O set
    when the client had asked for S (section 4.1).
  - The Reply to Rebind carries our Server Identifier like every Reply.
  - Every client message is first put to C{policy.respondsTo}; a
    Request/Renew/Release/Decline naming another server is dropped as
    C{dropped.notForUs} unless the policy answers it (failover renewing the
    partner's clients).  A policy that provides L{IFailoverPolicy} is asked
    C{respondsToServer(msg_type, server_id)} instead for these, so that it
    can tell the partner's Server Identifier from an unknown server's (RFC
    8156 section 8: in COMMUNICATIONS-INTERRUPTED a Renew naming the partner
    is answered, with our own Server Identifier, so the client then talks
    to us).
  - Failover bookkeeping on a granted binding: when the same IA gets its
    binding again, the partner lifetimes sent and acked and the
    acknowledged state (C{partner_state_acked}, C{partner_stos_acked}) are
    carried over, so that the MCLT rule can count the partner's ack; a
    binding that goes to a different client starts with none of them.  The
    start time of state is kept when an ACTIVE binding of the same IA is
    renewed, and is now on any change of state or of client.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv6Address

from attrs import evolve, field, frozen
from twisted.logger import Logger

from dhcp6ha.allocation import Allocator, StandalonePolicy, SubnetPolicies
from dhcp6ha.config import ServerConfig, SubnetConfig
from dhcp6ha.interfaces import (
    IAllocationPolicy,
    IFailoverPolicy,
    ILeaseStore,
    IPartnerLifetimePolicy,
)
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IANA,
    IAPD,
    IATA,
    ClientFQDN,
    ClientId,
    DNSServers,
    DomainList,
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
)

__all__ = [
    "DROP_LOG_INTERVAL",
    "MAX_RELAY_DEPTH",
    "Decision",
    "Engine",
    "Received",
    "StandalonePolicy",
    "SubnetPolicies",
]

#: The deepest RELAY-FORW nesting accepted (HOP_COUNT_LIMIT, RFC 8415 section 7.6).
MAX_RELAY_DEPTH = 32

#: Seconds between two log lines about dropped messages of one reason: a
#: secondary in NORMAL drops every message not for it, a misconfigured relay
#: every message it sends, and a line per message would flood the log.
DROP_LOG_INTERVAL = 60.0

#: RFC 4704 section 4.1 flag bits.
FQDN_S = 0x01
FQDN_O = 0x02
FQDN_N = 0x04

_SERVER_TYPES = frozenset(
    {
        MessageType.ADVERTISE,
        MessageType.REPLY,
        MessageType.RECONFIGURE,
        MessageType.RELAY_REPL,
    }
)

#: Messages that must name this server (RFC 8415 section 16).
_NEED_SERVER_ID = frozenset(
    {MessageType.REQUEST, MessageType.RENEW, MessageType.RELEASE, MessageType.DECLINE}
)

#: Messages that must not name any server (RFC 8415 section 16).
_NO_SERVER_ID = frozenset({MessageType.SOLICIT, MessageType.REBIND, MessageType.CONFIRM})

#: Messages that need a subnet to be answered.
_NEED_SUBNET = frozenset(
    {
        MessageType.SOLICIT,
        MessageType.REQUEST,
        MessageType.CONFIRM,
        MessageType.RENEW,
        MessageType.REBIND,
        MessageType.INFORMATION_REQUEST,
    }
)

_RELEASE_HELD = frozenset({BindingState.ACTIVE, BindingState.RELEASED})
_DECLINE_HELD = frozenset({BindingState.ACTIVE, BindingState.ABANDONED})


@frozen
class Received:
    """
    Where a datagram came from.

    @ivar source: the datagram's source address (a relay's, when relayed).
    @ivar port: the datagram's source port.
    @ivar interface: the receiving interface's name, or C{None} if unknown.
    @ivar multicast: C{True} when the datagram was sent to ff02::1:2, or
        when the adapter cannot tell.
    """

    source: IPv6Address
    port: int
    interface: str | None = None
    multicast: bool = True


@frozen
class Decision:
    """
    What to do about one client message.

    @ivar reply: the top-level message to send (a RELAY-REPL when the
        request was relayed).
    @ivar destination: (address, port, interface scope): the datagram's
        source (the outermost relay's, for relayed messages).
    @ivar changes: bindings to commit durably before the reply is sent
        (empty: send at once).
    @ivar policies: the policy to tell about each change (C{bindingChanged})
        once it is durable and the reply sent, in the order of C{changes};
        empty: the adapter's own policy for every change.
    """

    reply: Message | RelayMessage
    destination: tuple[IPv6Address, int, str | None]
    changes: tuple[Lease, ...] = ()
    policies: tuple[IAllocationPolicy, ...] = field(default=())

    @policies.validator
    def _checkPolicies(self, attribute: object, value: tuple[IAllocationPolicy, ...]) -> None:
        if value and len(value) != len(self.changes):
            raise ValueError(
                f"{len(value)} policies for {len(self.changes)} changes: one per change, or none"
            )

    def notifications(
        self, default: IAllocationPolicy
    ) -> Iterator[tuple[Lease, IAllocationPolicy]]:
        """Each change with the policy to tell about it (C{default} if none is named)."""
        if self.policies:
            yield from zip(self.changes, self.policies, strict=True)
        else:
            for lease in self.changes:
                yield lease, default


class _Drop(Exception):
    """Internal: the message is dropped for C{reason} (a counter suffix)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Mode(enum.Enum):
    """How IAs are assigned in this exchange."""

    ADVERTISE = "advertise"  # Solicit: candidates, nothing committed
    RAPID = "rapid"  # Solicit with rapid commit
    REQUEST = "request"
    RENEW = "renew"  # Renew and Rebind


class _Exchange:
    """The state of one exchange while it is decided."""

    __slots__ = (
        "message",
        "duid",
        "subnet",
        "policy",
        "now",
        "oro",
        "fqdn",
        "taken",
        "changes",
    )

    def __init__(
        self,
        message: Message,
        duid: bytes | None,
        subnet: SubnetConfig | None,
        policy: IAllocationPolicy,
        now: float,
    ) -> None:
        self.message = message
        self.duid = duid
        self.subnet = subnet
        self.policy = policy
        self.now = now
        oro: set[int] = set()
        fqdn: ClientFQDN | None = None
        for option in message.options:
            if isinstance(option, OptionRequest):
                oro.update(option.codes)
            elif isinstance(option, ClientFQDN) and fqdn is None:
                fqdn = option
        self.oro = frozenset(oro)
        self.fqdn = fqdn
        self.taken: set[tuple[IPv6Address, int]] = set()
        self.changes: dict[tuple[IPv6Address, int], Lease] = {}


_TYPE_NAMES: dict[int, str] = {int(t): t.name for t in MessageType}
_RECEIVED = {code: "received." + name for code, name in _TYPE_NAMES.items()}
_SENT = {code: "sent." + name for code, name in _TYPE_NAMES.items()}


def _status(code: StatusCode, text: str) -> StatusCodeOption:
    return StatusCodeOption(int(code), text)


def timers(t1: int, t2: int, preferred: int) -> tuple[int, int]:
    """
    T1 and T2 for an IA whose lease got C{preferred}: the configured ones
    when they are set and fit (0 < t1 <= t2 <= preferred), else 0.5 and 0.8
    of the preferred lifetime actually granted (RFC 8415 section 21.4).
    """
    if 0 < t1 <= t2 <= preferred:
        return t1, t2
    return preferred // 2, preferred * 4 // 5


class Engine:
    """
    RFC 8415 server behaviour for every client message type.

    @ivar counters: C{received.<TYPE>}, C{sent.<TYPE>}, C{dropped.<reason>}
        and C{reclaimed.<state>} counts.
    @ivar allocator: the L{Allocator} choosing leases.
    @ivar policies: the allocation policy of each subnet.
    @ivar policy: the default policy (the only one, unless per-subnet
        policies were given).
    """

    log = Logger()

    def __init__(
        self,
        config: ServerConfig,
        store: ILeaseStore,
        policy: IAllocationPolicy | SubnetPolicies,
        server_duid: bytes,
    ) -> None:
        """
        @param policy: one policy for every subnet, or one per subnet.
        @raise ValueError: if C{policy} names a subnet C{config} does not have.
        """
        self.config = config
        self.store = store
        self.policies = SubnetPolicies.of(policy)
        self.policy = self.policies.default
        names = {subnet.name for subnet in config.subnets}
        unknown = sorted(set(self.policies.bySubnet) - names)
        if unknown:
            raise ValueError(f"policies for unknown subnets: {', '.join(unknown)}")
        self.server_duid = server_duid
        self.allocator = Allocator(store, self.policies)
        self.counters: collections.Counter[str] = collections.Counter()
        # Per drop reason: when it was last logged, and drops since.
        self._dropsLogged: dict[str, tuple[float, int]] = {}
        self._byInterface: dict[str, SubnetConfig] = {}
        for subnet in config.subnets:
            if subnet.interface is not None:
                self._byInterface.setdefault(subnet.interface, subnet)
        self._onlyInterfaceSubnet = (
            next(iter(self._byInterface.values())) if len(self._byInterface) == 1 else None
        )
        byLength: dict[int, dict[int, SubnetConfig]] = {}
        for subnet in config.subnets:
            table = byLength.setdefault(subnet.prefix.prefixlen, {})
            table.setdefault(int(subnet.prefix.network_address), subnet)
        # Longest prefix first.
        self._byPrefix = sorted(byLength.items(), reverse=True)
        # Delegated prefixes: the subnet whose pd-pool or reservation holds
        # them (disjoint, config.py checks it).
        delegated: dict[int, dict[int, SubnetConfig]] = {}
        for subnet in config.subnets:
            networks = [pool.prefix for pool in subnet.pd_pools]
            for reservation in subnet.reservations:
                networks.extend(reservation.prefixes)
            for network in networks:
                table = delegated.setdefault(network.prefixlen, {})
                table.setdefault(int(network.network_address), subnet)
        self._byDelegated = sorted(delegated.items(), reverse=True)
        self._handlers: dict[int, Callable[[_Exchange], tuple[int, list[Option]]]] = {
            MessageType.SOLICIT: self._solicit,
            MessageType.REQUEST: self._request,
            MessageType.CONFIRM: self._confirm,
            MessageType.RENEW: self._renew,
            MessageType.REBIND: self._renew,
            MessageType.RELEASE: self._release,
            MessageType.DECLINE: self._decline,
            MessageType.INFORMATION_REQUEST: self._informationRequest,
        }

    # --- entry points -------------------------------------------------------

    def handle(
        self, message: Message | RelayMessage, received: Received, now: float
    ) -> Decision | None:
        """
        Decide what to do about one received message.

        @return: the L{Decision}, or C{None} when the message is dropped
            (counted in L{counters} as C{dropped.<reason>}, logged at debug
            level at most once per L{DROP_LOG_INTERVAL} per reason).
        """
        try:
            return self._handle(message, received, now)
        except _Drop as drop:
            reason = drop.reason
            self.counters["dropped." + reason] += 1
            logged = self._dropsLogged.get(reason)
            if logged is not None and 0 <= now - logged[0] < DROP_LOG_INTERVAL:
                self._dropsLogged[reason] = (logged[0], logged[1] + 1)
            else:
                self._dropsLogged[reason] = (now, 0)
                self.log.debug(
                    "Dropped a message from {source}: {reason}"
                    " ({suppressed} more dropped for this reason since the last line)",
                    source=received.source,
                    reason=reason,
                    suppressed=0 if logged is None else logged[1],
                )
            return None

    def reclaim(self, now: float, limit: int) -> tuple[Lease, ...]:
        """
        Expiry reclamation: up to C{limit} ACTIVE bindings whose valid
        lifetime has run out become EXPIRED (keeping the client, who may
        have it back; another client may get it when C{policy.mayAllocate}
        agrees, at once for a standalone server), and ABANDONED (declined)
        ones whose quarantine has ended become FREE.

        @return: the changes, to be committed by the caller.
        """
        changes: list[Lease] = []
        for lease in self.store.expiredBefore(now, limit):
            if lease.expires > now:
                continue
            if lease.state is BindingState.ACTIVE:
                changes.append(evolve(lease, state=BindingState.EXPIRED, start_time_of_state=now))
                self.counters["reclaimed.expired"] += 1
            elif lease.state is BindingState.ABANDONED:
                changes.append(
                    evolve(
                        lease,
                        state=BindingState.FREE,
                        start_time_of_state=now,
                        duid=b"",
                        iaid=0,
                        fqdn=None,
                        fqdn_flags=0,
                        dns_update_state=None,
                    )
                )
                self.counters["reclaimed.abandoned"] += 1
        return tuple(changes)

    # --- policies -----------------------------------------------------------

    def policyFor(self, subnet: SubnetConfig | None) -> IAllocationPolicy:
        """The policy deciding for C{subnet} (C{None}: the default)."""
        return self.policies.policyFor(subnet)

    def subnetOfLease(self, lease: Lease) -> SubnetConfig | None:
        """
        The subnet a binding belongs to: for an address, the subnet whose
        prefix holds it; for a delegated prefix, the subnet whose pd-pool or
        reservation holds it.  C{None} if none does (any more).
        """
        if lease.prefix_length == 128 and lease.lease_type is not LeaseType.PD:
            return self._subnetContaining(lease.address)
        return _longestMatch(self._byDelegated, lease.address, lease.prefix_length)

    def policyForLease(self, lease: Lease) -> IAllocationPolicy:
        """
        The policy to tell about a change of C{lease}: its subnet's
        (L{subnetOfLease}), or the default one if it has none.
        """
        if not self.policies.bySubnet:
            return self.policies.default
        return self.policies.policyFor(self.subnetOfLease(lease))

    # --- framing: relays, validation, subnet --------------------------------

    def _handle(self, message: Message | RelayMessage, received: Received, now: float) -> Decision:
        relays: list[RelayMessage] = []
        inner: Message | RelayMessage = message
        if isinstance(message, RelayMessage):
            # One count per datagram, whatever the nesting.
            self.counters[_RECEIVED.get(message.msg_type) or "received.UNKNOWN"] += 1
        while isinstance(inner, RelayMessage):
            if inner.msg_type != MessageType.RELAY_FORW:
                raise _Drop("serverMessage")
            if len(relays) >= MAX_RELAY_DEPTH:
                raise _Drop("relayTooDeep")
            relays.append(inner)
            relayed = next((o for o in inner.options if isinstance(o, RelayMessageOption)), None)
            if relayed is None:
                raise _Drop("noRelayMessage")
            inner = relayed.message

        msg_type = inner.msg_type
        self.counters[_RECEIVED.get(msg_type) or "received.UNKNOWN"] += 1
        if msg_type in _SERVER_TYPES:
            raise _Drop("serverMessage")
        handler = self._handlers.get(msg_type)
        if handler is None:
            raise _Drop("unknownType")

        # The subnet first: its policy decides whether we answer.
        subnet = self._selectSubnet(relays, received)
        policy = self.policies.policyFor(subnet)
        duid = self._validate(inner, policy)

        if not relays and not received.multicast:
            if msg_type == MessageType.SOLICIT:
                raise _Drop("unicastSolicit")
            if msg_type in _NEED_SERVER_ID:
                # No Unicast option is ever sent, so the client must multicast
                # (RFC 8415 sections 18.3.2, 18.3.4, 18.3.7, 18.3.8).
                ex = _Exchange(inner, duid, None, policy, now)
                options: list[Option] = [
                    _status(StatusCode.USE_MULTICAST, "send this message to ff02::1:2")
                ]
                return self._decision(ex, MessageType.REPLY, options, relays, received)

        if subnet is None and msg_type in _NEED_SUBNET:
            raise _Drop("noSubnet")
        ex = _Exchange(inner, duid, subnet, policy, now)
        reply_type, options = handler(ex)
        return self._decision(ex, reply_type, options, relays, received)

    def _validate(self, message: Message, policy: IAllocationPolicy) -> bytes | None:
        """
        RFC 8415 section 16 checks, then the subnet's policy's C{respondsTo}
        (or, for a message naming another server, C{respondsToServer} of a
        failover policy).

        @return: the client DUID (C{None} only for an Information-request
            without one).
        """
        msg_type = message.msg_type
        client: bytes | None = None
        server: bytes | None = None
        has_ia = False
        for option in message.options:
            if isinstance(option, ClientId):
                if client is None:
                    client = option.duid
            elif isinstance(option, ServerId):
                if server is None:
                    server = option.duid
            elif isinstance(option, IANA | IATA | IAPD):
                has_ia = True
        if not client and msg_type != MessageType.INFORMATION_REQUEST:
            raise _Drop("missingClientId")
        ours = server == self.server_duid
        if msg_type in _NO_SERVER_ID:
            if server is not None:
                raise _Drop("unexpectedServerId")
        elif msg_type in _NEED_SERVER_ID:
            if server is None:
                raise _Drop("missingServerId")
            if not ours:
                failover = IFailoverPolicy(policy, None)
                if failover is not None:
                    answered = failover.respondsToServer(msg_type, server)
                else:
                    answered = policy.respondsTo(msg_type, False)
                if not answered:
                    raise _Drop("notForUs")
                return client
        else:  # Information-request (section 16.12)
            if server is not None and not ours:
                raise _Drop("notForUs")
            if has_ia:
                raise _Drop("iaInInformationRequest")
        if not policy.respondsTo(msg_type, ours):
            raise _Drop("policy")
        return client or None

    def _selectSubnet(self, relays: list[RelayMessage], received: Received) -> SubnetConfig | None:
        if relays:
            for relay in reversed(relays):
                link = relay.link_address
                if link.is_unspecified or link.is_link_local:
                    continue
                return self._subnetContaining(link)
            return None
        if received.interface is not None:
            subnet = self._byInterface.get(received.interface)
            if subnet is not None:
                return subnet
        if not received.source.is_link_local and not received.source.is_unspecified:
            subnet = self._subnetContaining(received.source)
            if subnet is not None:
                return subnet
        if received.interface is None:
            return self._onlyInterfaceSubnet
        return None

    def _subnetContaining(self, address: IPv6Address) -> SubnetConfig | None:
        return _longestMatch(self._byPrefix, address, 128)

    def _decision(
        self,
        ex: _Exchange,
        reply_type: int,
        options: list[Option],
        relays: list[RelayMessage],
        received: Received,
    ) -> Decision:
        head: list[Option] = []
        if ex.duid is not None:
            head.append(ClientId(ex.duid))
        head.append(ServerId(self.server_duid))
        reply: Message | RelayMessage = Message(
            reply_type, ex.message.transaction_id, tuple(head + options)
        )
        self.counters[_SENT.get(reply_type) or "sent.UNKNOWN"] += 1
        for relay in reversed(relays):
            # RFC 8415 section 19.3: the Interface-ID option is echoed.
            interface_id = next((o for o in relay.options if isinstance(o, InterfaceId)), None)
            relay_options: list[Option] = [] if interface_id is None else [interface_id]
            relay_options.append(RelayMessageOption(reply))
            reply = RelayMessage(
                MessageType.RELAY_REPL,
                relay.hop_count,
                relay.link_address,
                relay.peer_address,
                tuple(relay_options),
            )
        if relays:
            self.counters["sent.RELAY_REPL"] += 1
        changes = tuple(ex.changes.values())
        return Decision(
            reply,
            (received.source, received.port, received.interface),
            changes,
            tuple(self.policyForLease(lease) for lease in changes),
        )

    # --- options common to replies -----------------------------------------

    def _configOptions(self, ex: _Exchange, information: bool = False) -> list[Option]:
        subnet = ex.subnet
        out: list[Option] = []
        if subnet is None or not ex.oro:
            return out
        if OptionCode.DNS_SERVERS in ex.oro and subnet.dns_servers:
            out.append(DNSServers(subnet.dns_servers))
        if OptionCode.DOMAIN_LIST in ex.oro and subnet.domain_search:
            out.append(DomainList(subnet.domain_search))
        if OptionCode.SOL_MAX_RT in ex.oro and subnet.sol_max_rt is not None:
            out.append(SolMaxRt(subnet.sol_max_rt))
        if (
            information
            and OptionCode.INFORMATION_REFRESH_TIME in ex.oro
            and subnet.information_refresh_time is not None
        ):
            out.append(InformationRefreshTime(subnet.information_refresh_time))
        if information and OptionCode.INF_MAX_RT in ex.oro and subnet.inf_max_rt is not None:
            out.append(InfMaxRt(subnet.inf_max_rt))
        return out

    def _fqdnOptions(self, ex: _Exchange) -> list[Option]:
        if ex.fqdn is None:
            return []
        flags = FQDN_N | (FQDN_O if ex.fqdn.flags & FQDN_S else 0)
        return [ClientFQDN(flags, ex.fqdn.name, ex.fqdn.partial)]

    # --- message handlers ---------------------------------------------------

    def _solicit(self, ex: _Exchange) -> tuple[int, list[Option]]:
        assert ex.subnet is not None
        rapid = ex.subnet.rapid_commit and any(
            isinstance(o, RapidCommit) for o in ex.message.options
        )
        options = self._assignIAs(ex, _Mode.RAPID if rapid else _Mode.ADVERTISE)
        if rapid:
            options.append(RapidCommit())
            reply_type = MessageType.REPLY
        else:
            if ex.subnet.preference:
                options.append(Preference(ex.subnet.preference))
            reply_type = MessageType.ADVERTISE
        options += self._configOptions(ex)
        options += self._fqdnOptions(ex)
        return reply_type, options

    def _request(self, ex: _Exchange) -> tuple[int, list[Option]]:
        options = self._assignIAs(ex, _Mode.REQUEST)
        options += self._configOptions(ex)
        options += self._fqdnOptions(ex)
        return MessageType.REPLY, options

    def _renew(self, ex: _Exchange) -> tuple[int, list[Option]]:
        options = self._assignIAs(ex, _Mode.RENEW)
        options += self._configOptions(ex)
        options += self._fqdnOptions(ex)
        return MessageType.REPLY, options

    def _confirm(self, ex: _Exchange) -> tuple[int, list[Option]]:
        assert ex.subnet is not None
        addresses = [
            sub.address
            for option in ex.message.options
            if isinstance(option, IANA | IATA)
            for sub in option.options
            if isinstance(sub, IAAddress)
        ]
        if not addresses:
            raise _Drop("confirmWithoutAddresses")
        prefix = ex.subnet.prefix
        if all(address in prefix for address in addresses):
            return MessageType.REPLY, [_status(StatusCode.SUCCESS, "all addresses on link")]
        return MessageType.REPLY, [_status(StatusCode.NOT_ON_LINK, "not on this link")]

    def _informationRequest(self, ex: _Exchange) -> tuple[int, list[Option]]:
        return MessageType.REPLY, self._configOptions(ex, information=True)

    def _release(self, ex: _Exchange) -> tuple[int, list[Option]]:
        options: list[Option] = [_status(StatusCode.SUCCESS, "released")]
        for ia in ex.message.options:
            if isinstance(ia, IANA):
                found = self._leaveIA(ex, ia.iaid, LeaseType.NA, ia.options, release=True)
                if not found:
                    options.append(IANA(ia.iaid, 0, 0, (_noBinding(),)))
            elif isinstance(ia, IAPD):
                found = self._leaveIA(ex, ia.iaid, LeaseType.PD, ia.options, release=True)
                if not found:
                    options.append(IAPD(ia.iaid, 0, 0, (_noBinding(),)))
            elif isinstance(ia, IATA):
                options.append(IATA(ia.iaid, (_noBinding(),)))
        return MessageType.REPLY, options

    def _decline(self, ex: _Exchange) -> tuple[int, list[Option]]:
        # Decline is for addresses only (RFC 8415 section 18.2.8): IA_PD is ignored.
        options: list[Option] = [_status(StatusCode.SUCCESS, "declined")]
        for ia in ex.message.options:
            if isinstance(ia, IANA):
                found = self._leaveIA(ex, ia.iaid, LeaseType.NA, ia.options, release=False)
                if not found:
                    options.append(IANA(ia.iaid, 0, 0, (_noBinding(),)))
            elif isinstance(ia, IATA):
                options.append(IATA(ia.iaid, (_noBinding(),)))
        return MessageType.REPLY, options

    def _leaveIA(
        self,
        ex: _Exchange,
        iaid: int,
        lease_type: LeaseType,
        listed: Iterable[Option],
        release: bool,
    ) -> bool:
        """
        Release or decline the leases of one IA that the client lists and
        holds.

        @return: whether the IA has a binding here at all.
        """
        assert ex.duid is not None
        held = _RELEASE_HELD if release else _DECLINE_HELD
        bindings = {
            lease.key: lease
            for lease in self.store.byClient(ex.duid, iaid, lease_type)
            if lease.state in held
        }
        if not bindings:
            return False
        for sub in listed:
            if isinstance(sub, IAAddress):
                key = (sub.address, 128)
            elif isinstance(sub, IAPrefix):
                key = (sub.prefix, sub.prefix_length)
            else:
                continue
            if key not in bindings:
                continue  # not this IA's: ignored (section 18.3.7)
            lease = ex.changes.get(key, bindings[key])
            if lease.state is not BindingState.ACTIVE:
                continue
            if release:
                ex.changes[key] = evolve(
                    lease, state=BindingState.RELEASED, start_time_of_state=ex.now, cltt=ex.now
                )
            else:
                ex.changes[key] = evolve(
                    lease,
                    state=BindingState.ABANDONED,
                    start_time_of_state=ex.now,
                    cltt=ex.now,
                    expires=ex.now + self.config.server.decline_quarantine,
                )
        return True

    # --- IA assignment ------------------------------------------------------

    def _assignIAs(self, ex: _Exchange, mode: _Mode) -> list[Option]:
        out: list[Option] = []
        for option in ex.message.options:
            if isinstance(option, IANA):
                out.append(self._assignNA(ex, option, mode))
            elif isinstance(option, IAPD):
                out.append(self._assignPD(ex, option, mode))
            elif isinstance(option, IATA):
                if mode is _Mode.RENEW:
                    out.append(IATA(option.iaid, (_noBinding(),)))
                else:
                    out.append(
                        IATA(
                            option.iaid,
                            (_status(StatusCode.NO_ADDRS_AVAIL, "temporary addresses not served"),),
                        )
                    )
        return out

    def _assignNA(self, ex: _Exchange, ia: IANA, mode: _Mode) -> IANA:
        subnet = ex.subnet
        duid = ex.duid
        assert subnet is not None and duid is not None
        listed = [
            o.address
            for o in ia.options
            if isinstance(o, IAAddress) and not o.address.is_unspecified
        ]
        if mode is _Mode.REQUEST and any(address not in subnet.prefix for address in listed):
            return IANA(ia.iaid, 0, 0, (_status(StatusCode.NOT_ON_LINK, "not on this link"),))
        hint = next((address for address in listed if address in subnet.prefix), None)
        address = self.allocator.addressFor(
            subnet,
            duid,
            ia.iaid,
            hint,
            ex.now,
            exclude=ex.taken,
            probe=mode is not _Mode.RENEW,
        )
        lease = None
        if address is not None:
            lease = self._grant(
                ex,
                LeaseType.NA,
                (address, 128),
                ia.iaid,
                subnet.valid_lifetime,
                subnet.preferred_lifetime,
                commit=mode is not _Mode.ADVERTISE,
            )
        keys = [(a, 128) for a in listed]
        leases = self._alsoHeld(
            ex, LeaseType.NA, ia.iaid, keys, lease, mode, subnet.valid_lifetime,
            subnet.preferred_lifetime,
        )  # fmt: skip
        zeros, withdrawn = self._zeros(ex, LeaseType.NA, ia.iaid, keys, leases, mode)
        zero_options = tuple(IAAddress(key[0], 0, 0) for key in zeros)
        if leases:
            t1, t2 = timers(subnet.t1, subnet.t2, min(x.preferred_lifetime for x in leases))
            granted = tuple(
                IAAddress(x.address, x.preferred_lifetime, x.valid_lifetime) for x in leases
            )
            return IANA(ia.iaid, t1, t2, granted + zero_options)
        if mode is _Mode.RENEW:
            if withdrawn or any(
                not self.allocator.addressAppropriate(subnet, key[0], duid) for key in zeros
            ):
                return IANA(ia.iaid, 0, 0, zero_options)
            return IANA(ia.iaid, 0, 0, (_noBinding(),))
        return IANA(ia.iaid, 0, 0, (_status(StatusCode.NO_ADDRS_AVAIL, "no addresses available"),))

    def _assignPD(self, ex: _Exchange, ia: IAPD, mode: _Mode) -> IAPD:
        subnet = ex.subnet
        duid = ex.duid
        assert subnet is not None and duid is not None
        prefixes = [o for o in ia.options if isinstance(o, IAPrefix)]
        listed = [(o.prefix, o.prefix_length) for o in prefixes if not o.prefix.is_unspecified]
        hint = (
            listed[0]
            if listed
            else ((prefixes[0].prefix, prefixes[0].prefix_length) if prefixes else None)
        )
        key = self.allocator.prefixFor(
            subnet,
            duid,
            ia.iaid,
            hint,
            ex.now,
            exclude=ex.taken,
            probe=mode is not _Mode.RENEW,
        )
        lease = None
        if key is not None:
            lease = self._grant(
                ex,
                LeaseType.PD,
                key,
                ia.iaid,
                subnet.pd_valid_lifetime,
                subnet.pd_preferred_lifetime,
                commit=mode is not _Mode.ADVERTISE,
            )
        leases = self._alsoHeld(
            ex, LeaseType.PD, ia.iaid, listed, lease, mode, subnet.pd_valid_lifetime,
            subnet.pd_preferred_lifetime,
        )  # fmt: skip
        zeros, withdrawn = self._zeros(ex, LeaseType.PD, ia.iaid, listed, leases, mode)
        zero_options = tuple(IAPrefix(0, 0, length, address) for address, length in zeros)
        if leases:
            t1, t2 = timers(subnet.t1, subnet.t2, min(x.preferred_lifetime for x in leases))
            granted_pd = tuple(
                IAPrefix(x.preferred_lifetime, x.valid_lifetime, x.prefix_length, x.address)
                for x in leases
            )
            return IAPD(ia.iaid, t1, t2, granted_pd + zero_options)
        if mode is _Mode.RENEW:
            if withdrawn or any(
                not self.allocator.prefixAppropriate(subnet, address, length, duid)
                for address, length in zeros
            ):
                return IAPD(ia.iaid, 0, 0, zero_options)
            return IAPD(ia.iaid, 0, 0, (_noBinding(),))
        return IAPD(ia.iaid, 0, 0, (_status(StatusCode.NO_PREFIX_AVAIL, "no prefixes available"),))

    def _grant(
        self,
        ex: _Exchange,
        lease_type: LeaseType,
        key: tuple[IPv6Address, int],
        iaid: int,
        desired_valid: int,
        configured_preferred: int,
        commit: bool,
    ) -> Lease:
        """The binding this IA gets for C{key}, with lifetimes the policy allows."""
        assert ex.duid is not None
        now = ex.now
        existing = self.store.get(*key)
        valid = max(0, min(desired_valid, ex.policy.maxValidLifetime(existing, desired_valid, now)))
        preferred = min(configured_preferred, valid)
        # The same IA's binding again: what the partner acknowledged of it
        # still holds (the MCLT rule and reuse rules read it).  Another
        # client's: nothing the partner acknowledged is about this binding.
        kept = existing if existing is not None and existing.heldBy(ex.duid, iaid) else None
        if kept is not None and kept.state is BindingState.ACTIVE:
            start = kept.start_time_of_state
        else:
            start = now
        if ex.fqdn is not None:
            fqdn: str | None = ex.fqdn.name
            fqdn_flags = ex.fqdn.flags
        elif kept is not None:
            fqdn, fqdn_flags = kept.fqdn, kept.fqdn_flags
        else:
            fqdn, fqdn_flags = None, 0
        lease = Lease(
            lease_type=lease_type,
            address=key[0],
            prefix_length=key[1],
            state=BindingState.ACTIVE,
            duid=ex.duid,
            iaid=iaid,
            start_time_of_state=start,
            cltt=now,
            preferred_lifetime=preferred,
            valid_lifetime=valid,
            expires=now + valid,
            partner_lifetime_sent=kept.partner_lifetime_sent if kept is not None else 0.0,
            partner_lifetime_acked=kept.partner_lifetime_acked if kept is not None else 0.0,
            fqdn=fqdn,
            fqdn_flags=fqdn_flags,
            dns_update_state=kept.dns_update_state if kept is not None else None,
            partner_state_acked=kept.partner_state_acked if kept is not None else None,
            partner_stos_acked=kept.partner_stos_acked if kept is not None else 0.0,
        )
        lifetimes = IPartnerLifetimePolicy(ex.policy, None) if commit else None
        if lifetimes is not None:
            # Stored with the change: the update queue need not store the
            # proposal in a second write before sending it.
            lease = lifetimes.withPartnerLifetime(lease)
        ex.taken.add(key)
        if commit:
            ex.changes[key] = lease
        return lease

    def _alsoHeld(
        self,
        ex: _Exchange,
        lease_type: LeaseType,
        iaid: int,
        listed: list[tuple[IPv6Address, int]],
        granted: Lease | None,
        mode: _Mode,
        desired_valid: int,
        configured_preferred: int,
    ) -> list[Lease]:
        """
        The IA's leases in this Reply: the one it gets and, in a Renew or
        Rebind, every other lease it lists that it may keep
        (L{Allocator.renewable}: the test of the lease listed first), renewed too (RFC 8415 section 18.3.4:
        the server renews the addresses it finds in the IA).  One lease per
        IA is how leases are given out, not a reason to take one away while
        its lifetime runs: an IA holds two after the servers of a pair, cut
        off from each other, each granted it one.
        """
        if granted is None:
            return []
        leases = [granted]
        if mode is not _Mode.RENEW:
            return leases
        assert ex.subnet is not None and ex.duid is not None
        for key in listed:
            if key in ex.taken:
                continue
            if self.allocator.renewable(ex.subnet, lease_type, *key, ex.duid, iaid, ex.now):
                leases.append(
                    self._grant(
                        ex,
                        lease_type,
                        key,
                        iaid,
                        desired_valid,
                        configured_preferred,
                        commit=True,
                    )  # fmt: skip
                )
        return leases

    def _zeros(
        self,
        ex: _Exchange,
        lease_type: LeaseType,
        iaid: int,
        listed: list[tuple[IPv6Address, int]],
        granted: list[Lease],
        mode: _Mode,
    ) -> tuple[list[tuple[IPv6Address, int]], bool]:
        """
        The leases to return with lifetimes 0 in this IA: those the client
        listed that it does not get (in a Renew or Rebind, only those
        L{Allocator.withdrawable}: a lease of a failover partner's pool that
        our record stops us renewing may be left out), and the IA's other
        ACTIVE bindings,
        which become EXPIRED now (not when a Request gets nothing at all:
        those are left to run out).

        @return: the keys, and whether any binding was withdrawn.
        """
        if mode is _Mode.ADVERTISE:
            return [], False
        assert ex.duid is not None
        granted_keys = {lease.key for lease in granted}
        zeros: dict[tuple[IPv6Address, int], None] = {}
        for key in listed:
            if key in granted_keys:
                continue
            if mode is _Mode.RENEW:
                assert ex.subnet is not None
                if not self.allocator.withdrawable(
                    ex.subnet, lease_type, *key, ex.duid, iaid, ex.now
                ):
                    continue
            zeros[key] = None
        withdrawn = False
        if granted or mode is _Mode.RENEW:
            for lease in self.store.byClient(ex.duid, iaid, lease_type):
                if (
                    lease.state is BindingState.ACTIVE
                    and lease.key not in granted_keys
                    and lease.key not in ex.changes
                ):
                    ex.changes[lease.key] = evolve(
                        lease,
                        state=BindingState.EXPIRED,
                        start_time_of_state=ex.now,
                        cltt=ex.now,
                        preferred_lifetime=0,
                        valid_lifetime=0,
                        expires=ex.now,
                    )
                    zeros[lease.key] = None
                    withdrawn = True
        return list(zeros), withdrawn


def _longestMatch(
    tables: list[tuple[int, dict[int, SubnetConfig]]], address: IPv6Address, length: int
) -> SubnetConfig | None:
    """
    The subnet of the longest prefix of C{tables} (by length, longest
    first) holding C{address}/C{length}.
    """
    value = int(address)
    for prefixlen, table in tables:
        if prefixlen > length:
            continue
        mask = ((1 << prefixlen) - 1) << (128 - prefixlen)
        subnet = table.get(value & mask)
        if subnet is not None:
            return subnet
    return None


def _noBinding() -> StatusCodeOption:
    return _status(StatusCode.NO_BINDING, "no binding for this IA")
