# -*- test-case-name: tests.test_chaos_clients -*-
"""
Many simulated DHCPv6 clients in one process, speaking real DHCPv6 over UDP
(the codec of L{dhcp6ha.message}) and recording every transmission and every
Advertise/Reply received into a L{HistoryRecorder}.

Each L{SimulatedClient} has its own DUID (DUID-LL, or DUID-LLT, derived from
the seed and its index) and one IA_NA and/or one IA_PD (IAIDs from the
seed), and follows RFC 8415 section 18.2:

  - Solicit (with Rapid Commit when asked), Request to the first server
    whose Advertise offers something (a simplification: RFC 8415 lets a
    client wait for the first retransmission timeout to compare
    preferences; the chaos harness gains nothing from it);
  - Renew at T1 to the server that answered last (its Server Identifier),
    until T2; then Rebind (no Server Identifier) until every lease has
    expired; a lease whose valid lifetime runs out is dropped, and a client
    left with none starts again with a Solicit;
  - an IA answered with NoBinding in a Renew or Rebind Reply makes the
    client send a Request for its leases (RFC 8415 section 18.2.10.1);
  - sometimes (seeded) a Release at a random time before T1, or a Decline
    of its addresses right after a Request is answered (as if Duplicate
    Address Detection had failed), then a Solicit after an off time;
  - retransmissions follow RFC 8415 section 15 (RT doubling from IRT up to
    MRT, +/-10% randomisation, MRC and MRD bounds) with the section 7.6
    constants of L{Timing}, which can be scaled down for tests.

One exchange is in flight per client at a time.  Everything a client
receives for it is recorded, also what comes late or from a second server
(C{accepted=False}): the checker counts every Reply a server sent.

Transport: a L{ClientTransport} carries the clients' messages and hands the
answers back to the L{ClientPool}, which finds the client by transaction id
(unique across the pool) and checks the Client Identifier.  One socket
serves every client: servers tell clients apart by DUID, not by address.

  - L{RelayTransport}: as a relay agent, wraps each message in RELAY-FORW
    (link-address: the simulated link; peer-address: the client's
    link-local address) and sends it to every configured server by unicast;
    unwraps RELAY-REPL.  Works on loopback.
  - L{LinkTransport}: as clients on a link, sends to ff02::1:2 on one
    interface (from the socket's link-local address, port 546 for real
    clients); servers answer to that address and port.  Needs a network
    namespace with a real link (multicast does not work on C{lo}).

Wiring (the transport is a C{DatagramProtocol}; the pool owns the clients)::

    transport = RelayTransport([("::1", 547)], IPv6Address("2001:db8:1::1"))
    reactor.listenUDP(0, transport, interface="::1")
    pool = ClientPool(reactor, transport, recorder, seed=7, count=100)
    pool.start()
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address
from typing import Any, Protocol

import attrs
from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from dhcp6ha.chaos.history import (
    NA,
    PD,
    HistoryRecorder,
    IAEntry,
    iaEntries,
    receivedEvent,
    sentEvent,
)
from dhcp6ha.message import (
    HARDWARE_TYPE_ETHERNET,
    IANA,
    IAPD,
    ClientId,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    InterfaceId,
    MalformedMessage,
    Message,
    MessageType,
    Option,
    RapidCommit,
    RelayMessage,
    RelayMessageOption,
    ServerId,
    StatusCodeOption,
    decode,
    duidLL,
    duidLLT,
    encode,
)

__all__ = [
    "ALL_DHCP_RELAY_AGENTS_AND_SERVERS",
    "Behaviour",
    "ClientPool",
    "ClientTransport",
    "LinkTransport",
    "RelayTransport",
    "SimulatedClient",
    "Timing",
    "clientDuid",
    "nextTimeout",
]

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")

Key = tuple[IPv6Address, int]
IAKey = tuple[str, int]

_NO_ADDRS_AVAIL = 2
_NO_BINDING = 3
_NOT_PROCESSED = frozenset({1, 5})  # UnspecFail, UseMulticast: as if unanswered


@frozen
class Timing:
    """
    The client transmission parameters of RFC 8415 section 7.6, in
    seconds (C{*_max_rc}: transmissions).  L{scaled} shortens them all.
    """

    sol_max_delay: float = 1.0
    sol_timeout: float = 1.0
    sol_max_rt: float = 3600.0
    req_timeout: float = 1.0
    req_max_rt: float = 30.0
    req_max_rc: int = 10
    ren_timeout: float = 10.0
    ren_max_rt: float = 600.0
    reb_timeout: float = 10.0
    reb_max_rt: float = 600.0
    rel_timeout: float = 1.0
    rel_max_rc: int = 4
    dec_timeout: float = 1.0
    dec_max_rc: int = 4

    def scaled(self, factor: float) -> Timing:
        """Every time multiplied by C{factor}; counts unchanged."""
        return attrs.evolve(
            self,
            **{
                f.name: getattr(self, f.name) * factor
                for f in attrs.fields(Timing)
                if f.type in (float, "float")
            },
        )


@frozen
class Behaviour:
    """
    What the clients of a pool do.

    @ivar na: ask for an address (one IA_NA).
    @ivar pd: ask for a delegated prefix (one IA_PD).
    @ivar rapid_commit: put Rapid Commit in Solicit.
    @ivar release_probability: after each Reply that leaves the client
        bound, the chance that it releases everything before T1.
    @ivar decline_probability: after each Reply to a Request (or a rapid
        commit) granting addresses, the chance that it declines them.
    @ivar off_time: after a Release or Decline, or when nothing could be
        had, the client waits a time drawn uniformly from this range
        before it solicits again.
    @ivar start_spread: clients start at a time drawn uniformly from
        C{[0, start_spread)}, plus RFC 8415's random Solicit delay.
    @ivar duid_type: C{"ll"} (DUID-LL) or C{"llt"} (DUID-LLT).
    """

    na: bool = True
    pd: bool = False
    rapid_commit: bool = False
    release_probability: float = 0.0
    decline_probability: float = 0.0
    off_time: tuple[float, float] = (1.0, 5.0)
    start_spread: float = 0.0
    duid_type: str = "ll"


def nextTimeout(
    previous: float | None, irt: float, mrt: float, rand: float, solicit: bool = False
) -> float:
    """
    The next retransmission timeout (RFC 8415 section 15).

    @param previous: the previous RT, or C{None} for the first.
    @param rand: a number drawn uniformly from [-0.1, 0.1]; for the first
        Solicit its absolute value is used (RAND must be positive there).
    @param mrt: the maximum RT, 0 for none.
    """
    if previous is None:
        rt = irt + (abs(rand) if solicit else rand) * irt
    else:
        rt = 2 * previous + rand * previous
    if mrt and rt > mrt:
        rt = mrt + rand * mrt
    return rt


def clientDuid(seed: int, index: int, duidType: str = "ll") -> bytes:
    """
    The DUID of client C{index} of a pool with this seed: a locally
    administered MAC address (unique per index below 2**24, seed-dependent
    otherwise) in a DUID-LL, or a DUID-LLT with a seed-derived time.
    """
    digest = hashlib.sha256(f"dhcp6ha-chaos:{seed}".encode()).digest()
    mac = bytes([0x02]) + digest[:2] + index.to_bytes(3, "big")
    if duidType == "llt":
        return duidLLT(HARDWARE_TYPE_ETHERNET, int.from_bytes(digest[2:6], "big"), mac)
    if duidType != "ll":
        raise ValueError(f"unknown DUID type {duidType!r}: 'll' or 'llt'")
    return duidLL(HARDWARE_TYPE_ETHERNET, mac)


def _linkLocal(mac: bytes) -> IPv6Address:
    """The modified EUI-64 link-local address of a MAC (RFC 4291 appendix A)."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


# --- transports -----------------------------------------------------------------

Receiver = Callable[[Message, str], None]


class ClientTransport(Protocol):
    """How a L{ClientPool} reaches the servers."""

    def setReceiver(self, receiver: Receiver) -> None:
        """Hand every server message received to C{receiver(message, source)}."""

    def sendMessage(self, message: Message, peer: IPv6Address) -> str:
        """
        Send one client message from the client whose link-local address
        is C{peer}.

        @return: where it went, for the history.
        """


class _TransportBase(DatagramProtocol):
    log = Logger()
    noisy = False

    def __init__(self) -> None:
        self._receiver: Receiver | None = None
        self.counters: Counter[str] = Counter()

    def setReceiver(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def _write(self, data: bytes, address: tuple[str, int]) -> None:
        if self.transport is None:
            self.counters["not-connected"] += 1
            return
        try:
            self.transport.write(data, address)
        except OSError as e:
            self.counters["send-error"] += 1
            self.log.warn("Could not send to {address}: {error}", address=address, error=e)
        else:
            self.counters["sent"] += 1

    def _deliver(self, message: Message, source: str) -> None:
        if message.msg_type not in (MessageType.ADVERTISE, MessageType.REPLY):
            self.counters["unexpected-type"] += 1
            return
        if self._receiver is None:
            self.counters["no-receiver"] += 1
            return
        self.counters["received"] += 1
        self._receiver(message, source)

    def _decode(self, data: bytes) -> Message | RelayMessage | None:
        try:
            return decode(data)
        except MalformedMessage:
            self.counters["malformed"] += 1
            return None


class RelayTransport(_TransportBase):
    """
    Clients behind a relay agent: RELAY-FORW to every server by unicast.

    @ivar counters: C{sent} (datagrams), C{received}, C{malformed},
        C{not-relayed}, C{unexpected-type}, C{send-error}, ...
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        linkAddress: IPv6Address,
        *,
        interfaceId: bytes | None = None,
    ) -> None:
        """
        @param servers: (address, port) of every server the relay forwards to.
        @param linkAddress: the link-address of the relayed messages: an
            address on the simulated link, which selects the subnet.
        @param interfaceId: an Interface-ID option to add, if any.
        """
        super().__init__()
        self.servers = list(servers)
        self.linkAddress = linkAddress
        self.interfaceId = interfaceId

    def sendMessage(self, message: Message, peer: IPv6Address) -> str:
        options: list[Option] = []
        if self.interfaceId is not None:
            options.append(InterfaceId(self.interfaceId))
        options.append(RelayMessageOption(message))
        data = encode(
            RelayMessage(MessageType.RELAY_FORW, 0, self.linkAddress, peer, tuple(options))
        )
        for host, port in self.servers:
            self._write(data, (host, port))
        return ", ".join(f"[{host}]:{port}" for host, port in self.servers)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message = self._decode(datagram)
        if message is None:
            return
        while isinstance(message, RelayMessage):
            if message.msg_type != MessageType.RELAY_REPL:
                self.counters["unexpected-type"] += 1
                return
            inner = next((o for o in message.options if isinstance(o, RelayMessageOption)), None)
            if inner is None:
                self.counters["not-relayed"] += 1
                return
            message = inner.message
        self._deliver(message, f"[{addr[0]}]:{addr[1]}")


class LinkTransport(_TransportBase):
    """
    Clients on a link: every message to ff02::1:2 on one interface.

    Listen on port 546 (real clients' port; servers answer to the source
    port anyway) in the namespace of the link, e.g.
    C{reactor.listenUDP(546, transport, interface="::")}.
    """

    def __init__(
        self,
        interface: str,
        *,
        group: IPv6Address = ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
        serverPort: int = 547,
    ) -> None:
        super().__init__()
        self.interface = interface
        self.group = group
        self.serverPort = serverPort

    def sendMessage(self, message: Message, peer: IPv6Address) -> str:
        host = f"{self.group}%{self.interface}"
        self._write(encode(message), (host, self.serverPort))
        return f"[{host}]:{self.serverPort}"

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message = self._decode(datagram)
        if message is None:
            return
        if isinstance(message, RelayMessage):
            self.counters["unexpected-type"] += 1
            return
        self._deliver(message, f"[{addr[0]}]:{addr[1]}")


# --- clients --------------------------------------------------------------------


class State(enum.Enum):
    """Where a simulated client is."""

    IDLE = "idle"
    SOLICITING = "soliciting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    RELEASING = "releasing"
    DECLINING = "declining"
    STOPPED = "stopped"


@attrs.define
class HeldLease:
    """A lease a client holds: lifetimes as granted, absolute expiry."""

    key: Key
    preferred: int
    valid: int
    expires: float


@attrs.define
class _Exchange:
    msg_type: int
    xid: int
    options: tuple[Option, ...]
    irt: float
    mrt: float
    mrc: int
    deadline: float | None
    onAnswer: Callable[[Message], Callable[[], None] | None]
    onFail: Callable[[], None]
    solicit: bool = False
    first: float = 0.0
    attempts: int = 0
    rt: float | None = None
    timer: IDelayedCall | None = None


def _ok(status: int | None) -> bool:
    return status is None or status == 0


def _statusOf(options: Sequence[Option]) -> int | None:
    for option in options:
        if isinstance(option, StatusCodeOption):
            return int(option.code)
    return None


def _serverId(message: Message) -> bytes | None:
    for option in message.options:
        if isinstance(option, ServerId):
            return option.duid
    return None


class SimulatedClient:
    """
    One simulated client (see the module docstring for what it does).

    @ivar duid: its DUID.
    @ivar ias: its IAs, as (kind, IAID).
    @ivar linkLocal: its link-local address (the relay's peer-address).
    @ivar state: where it is.
    @ivar leases: what it holds, per IA.
    @ivar server: the Server Identifier of the server it talks to.
    @ivar bindings: how many times it got bound (a Reply left it holding
        leases).
    """

    log = Logger()

    def __init__(
        self,
        pool: ClientPool,
        index: int,
        duid: bytes,
        ias: Sequence[IAKey],
        rng: random.Random,
        linkLocal: IPv6Address,
    ) -> None:
        self.pool = pool
        self.index = index
        self.duid = duid
        self.ias = list(ias)
        self.rng = rng
        self.linkLocal = linkLocal
        self.state = State.IDLE
        self.leases: dict[IAKey, dict[Key, HeldLease]] = {ia: {} for ia in self.ias}
        self.server: bytes | None = None
        self.bindings = 0
        self._t1: dict[IAKey, float] = {}
        self._t2: dict[IAKey, float] = {}
        self._exchange: _Exchange | None = None
        self._timers: dict[str, IDelayedCall] = {}

    # --- timers -------------------------------------------------------------

    @property
    def _clock(self) -> IReactorTime:
        return self.pool.clock

    def _now(self) -> float:
        return self._clock.seconds()

    def _later(self, name: str, delay: float, f: Callable[[], None]) -> None:
        self._cancel(name)

        def fire() -> None:
            self._timers.pop(name, None)
            f()

        self._timers[name] = self._clock.callLater(max(0.0, delay), fire)

    def _cancel(self, *names: str) -> None:
        for name in names:
            call = self._timers.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    # --- life cycle ------------------------------------------------------------

    def start(self, delay: float) -> None:
        """Solicit after C{delay} plus RFC 8415's random delay (SOL_MAX_DELAY)."""
        self._later(
            "restart", delay + self.rng.uniform(0, self.pool.timing.sol_max_delay), self._solicit
        )

    def stop(self) -> None:
        """Stop at once: no more messages, every timer cancelled."""
        self._abort()
        self._cancel(*list(self._timers))
        self.state = State.STOPPED

    def _restart(self, delay: float | None = None) -> None:
        self._abort()
        self._cancel("t1", "t2", "release")
        self.state = State.IDLE
        if delay is None:
            low, high = self.pool.behaviour.off_time
            delay = self.rng.uniform(low, high)
        self._later("restart", delay, self._solicit)

    # --- exchanges ------------------------------------------------------------

    def _begin(
        self,
        msg_type: int,
        options: Sequence[Option],
        irt: float,
        mrt: float,
        mrc: int,
        deadline: float | None,
        onAnswer: Callable[[Message], Callable[[], None] | None],
        onFail: Callable[[], None],
        solicit: bool = False,
    ) -> None:
        self._abort()
        exchange = _Exchange(
            msg_type,
            self.pool.newXid(self),
            tuple(options),
            irt,
            mrt,
            mrc,
            deadline,
            onAnswer,
            onFail,
            solicit,
            first=self._now(),
        )
        self._exchange = exchange
        self._transmit(exchange)

    def _abort(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None and exchange.timer is not None and exchange.timer.active():
            exchange.timer.cancel()

    def _transmit(self, exchange: _Exchange) -> None:
        now = self._now()
        elapsed = min(0xFFFF, round((now - exchange.first) * 100))
        message = Message(
            exchange.msg_type,
            exchange.xid,
            (ClientId(self.duid), ElapsedTime(elapsed)) + exchange.options,
        )
        destination = self.pool.transport.sendMessage(message, self.linkLocal)
        self.pool.record(sentEvent(now, message, exchange.attempts, destination))
        exchange.attempts += 1
        exchange.rt = nextTimeout(
            exchange.rt, exchange.irt, exchange.mrt, self.rng.uniform(-0.1, 0.1), exchange.solicit
        )
        delay = exchange.rt
        if exchange.deadline is not None:
            delay = min(delay, exchange.deadline - now)
        exchange.timer = self._clock.callLater(max(0.0, delay), self._timeout, exchange)

    def _timeout(self, exchange: _Exchange) -> None:
        if exchange is not self._exchange:
            return
        exchange.timer = None
        now = self._now()
        if (exchange.mrc and exchange.attempts >= exchange.mrc) or (
            exchange.deadline is not None and now >= exchange.deadline
        ):
            self._exchange = None
            exchange.onFail()
            return
        self._transmit(exchange)

    def received(self, message: Message, source: str) -> None:
        """
        A server message with this client's DUID: recorded, then acted on
        if it answers the exchange in flight.
        """
        exchange = self._exchange
        action = None
        if exchange is not None and message.transaction_id == exchange.xid:
            action = exchange.onAnswer(message)
        self.pool.record(receivedEvent(self._now(), message, action is not None, source))
        if action is not None:
            self._abort()
            action()

    # --- IA options ------------------------------------------------------------

    def _iaOptions(
        self, listed: dict[IAKey, list[Key]], only: set[str] | None = None
    ) -> list[Option]:
        """One IA option per IA of this client (of the kinds C{only}), listing C{listed}."""
        options: list[Option] = []
        for kind, iaid in self.ias:
            if only is not None and kind not in only:
                continue
            keys = listed.get((kind, iaid), [])
            if kind == NA:
                options.append(IANA(iaid, 0, 0, tuple(IAAddress(a, 0, 0) for a, _ in keys)))
            else:
                options.append(IAPD(iaid, 0, 0, tuple(IAPrefix(0, 0, n, a) for a, n in keys)))
        return options

    def _held(self) -> dict[IAKey, list[Key]]:
        return {ia: list(held) for ia, held in self.leases.items() if held}

    def holding(self) -> bool:
        """Does it hold any lease?"""
        return any(self.leases.values())

    # --- Solicit, Request ----------------------------------------------------------

    def _solicit(self) -> None:
        self.state = State.SOLICITING
        timing = self.pool.timing
        options = self._iaOptions(self._held())
        rapid = self.pool.behaviour.rapid_commit
        if rapid:
            options.append(RapidCommit())
        self._begin(
            MessageType.SOLICIT,
            options,
            timing.sol_timeout,
            timing.sol_max_rt,
            0,
            None,
            self._onAdvertise,
            self._solicit,
            solicit=True,
        )

    def _onAdvertise(self, message: Message) -> Callable[[], None] | None:
        server = _serverId(message)
        if server is None:
            return None
        if message.msg_type == MessageType.REPLY:
            if not (
                self.pool.behaviour.rapid_commit
                and any(isinstance(o, RapidCommit) for o in message.options)
            ):
                return None
            return lambda: self._answered(message, decline=True)
        if message.msg_type != MessageType.ADVERTISE:
            return None
        if _statusOf(message.options) == _NO_ADDRS_AVAIL:
            return None
        offered: dict[IAKey, list[Key]] = {}
        for ia in iaEntries(message.options):
            if (ia.kind, ia.iaid) in self.leases and _ok(ia.status):
                keys = [e.key for e in ia.leases if e.valid > 0 and _ok(e.status)]
                if keys:
                    offered[(ia.kind, ia.iaid)] = keys
        if not offered:
            return None
        return lambda: self._request(server, offered)

    def _request(self, server: bytes, listed: dict[IAKey, list[Key]]) -> None:
        self.state = State.REQUESTING
        self.server = server
        timing = self.pool.timing
        self._begin(
            MessageType.REQUEST,
            [ServerId(server), *self._iaOptions(listed)],
            timing.req_timeout,
            timing.req_max_rt,
            timing.req_max_rc,
            None,
            lambda message: self._onReply(message, decline=True),
            self._requestFailed,
        )

    def _requestFailed(self) -> None:
        if self.holding():
            # Still holding leases (NoBinding path): keep them, solicit again.
            self._restart(0.0)
        else:
            self._solicit()

    def _onReply(self, message: Message, decline: bool = False) -> Callable[[], None] | None:
        if message.msg_type != MessageType.REPLY or _statusOf(message.options) in _NOT_PROCESSED:
            return None
        if _serverId(message) is None:
            return None
        return lambda: self._answered(message, decline)

    # --- applying a Reply --------------------------------------------------------

    def _apply(self, message: Message) -> bool:
        """
        Update the leases from a Reply (RFC 8415 section 18.2.10.1).

        @return: whether some IA this client held leases in was answered
            NoBinding.
        """
        now = self._now()
        noBinding = False
        for ia in iaEntries(message.options):
            iaKey = (ia.kind, ia.iaid)
            held = self.leases.get(iaKey)
            if held is None:
                continue
            if ia.status == _NO_BINDING:
                noBinding = noBinding or bool(held)
                continue
            if not _ok(ia.status):
                continue
            for entry in ia.leases:
                if not _ok(entry.status):
                    continue
                if entry.valid == 0:
                    held.pop(entry.key, None)
                else:
                    held[entry.key] = HeldLease(
                        entry.key, entry.preferred, entry.valid, now + entry.valid
                    )
            if held:
                self._timersFor(iaKey, ia, held, now)
        return noBinding

    def _timersFor(self, iaKey: IAKey, ia: IAEntry, held: dict[Key, HeldLease], now: float) -> None:
        shortest = min(lease.preferred or lease.valid for lease in held.values())
        t1: float = ia.t1
        t2: float = ia.t2
        if not (0 < t1 <= t2) or t1 == 0xFFFFFFFF:
            t1, t2 = shortest * 0.5, shortest * 0.8
        self._t1[iaKey] = now + t1
        self._t2[iaKey] = now + t2

    def _answered(self, message: Message, decline: bool) -> None:
        server = _serverId(message)
        noBinding = self._apply(message)
        if server is not None:
            self.server = server
        if noBinding and server is not None:
            self._request(server, self._held())
            return
        if not self.holding():
            self._restart()
            return
        self._bound()
        behaviour = self.pool.behaviour
        if (
            decline
            and self.leases.get((NA, self._iaid(NA)))
            and behaviour.decline_probability
            and self.rng.random() < behaviour.decline_probability
        ):
            self._decline()

    def _iaid(self, kind: str) -> int:
        return next((iaid for k, iaid in self.ias if k == kind), -1)

    # --- bound, Renew, Rebind ------------------------------------------------------

    def _bound(self) -> None:
        self.state = State.BOUND
        self.bindings += 1
        now = self._now()
        held = [ia for ia, leases in self.leases.items() if leases]
        t1 = min(self._t1.get(ia, now) for ia in held)
        t2 = min(self._t2.get(ia, now) for ia in held)
        if t1 <= now:
            # An IA the last Reply did not mention has stale timers: renew
            # at half, rebind at 0.8 of the shortest remaining lifetime.
            remaining = min(
                lease.expires - now for leases in self.leases.values() for lease in leases.values()
            )
            t1, t2 = now + remaining * 0.5, now + remaining * 0.8
        self._cancel("t1", "t2", "release")
        if t1 < t2:
            self._later("t1", t1 - now, self._renew)
        self._later("t2", t2 - now, self._rebind)
        self._scheduleExpiry()
        behaviour = self.pool.behaviour
        if behaviour.release_probability and self.rng.random() < behaviour.release_probability:
            self._later("release", self.rng.uniform(0, max(0.0, t1 - now)), self._release)

    def _scheduleExpiry(self) -> None:
        expiries = [lease.expires for held in self.leases.values() for lease in held.values()]
        if expiries:
            self._later("expiry", min(expiries) - self._now(), self._expired)
        else:
            self._cancel("expiry")

    def _expired(self) -> None:
        now = self._now()
        for held in self.leases.values():
            for key in [k for k, lease in held.items() if lease.expires <= now]:
                del held[key]
        if self.holding():
            self._scheduleExpiry()
        elif self.state in (State.BOUND, State.RENEWING, State.REBINDING):
            self._restart(0.0)

    def _renew(self) -> None:
        if self.server is None:
            self._rebind()
            return
        self.state = State.RENEWING
        self._cancel("t1")
        timing = self.pool.timing
        deadline = self._timers["t2"].getTime() if "t2" in self._timers else None
        self._begin(
            MessageType.RENEW,
            [ServerId(self.server), *self._iaOptions(self._held(), only=self._heldKinds())],
            timing.ren_timeout,
            timing.ren_max_rt,
            0,
            deadline,
            self._onReply,
            self._rebind,
        )

    def _rebind(self) -> None:
        if not self.holding():
            self._restart(0.0)
            return
        self.state = State.REBINDING
        self._cancel("t1", "t2")
        timing = self.pool.timing
        deadline = max(lease.expires for held in self.leases.values() for lease in held.values())
        self._begin(
            MessageType.REBIND,
            self._iaOptions(self._held(), only=self._heldKinds()),
            timing.reb_timeout,
            timing.reb_max_rt,
            0,
            deadline,
            self._onReply,
            self._lost,
        )

    def _heldKinds(self) -> set[str]:
        return {kind for (kind, _), held in self.leases.items() if held}

    def _lost(self) -> None:
        for held in self.leases.values():
            held.clear()
        self._cancel("expiry")
        self._restart(0.0)

    # --- Release, Decline ------------------------------------------------------------

    def _release(self) -> None:
        if not self.holding() or self.server is None:
            return
        self.state = State.RELEASING
        self._cancel("t1", "t2", "expiry", "release")
        listed = self._held()
        kinds = self._heldKinds()
        for held in self.leases.values():
            held.clear()
        timing = self.pool.timing
        self._begin(
            MessageType.RELEASE,
            [ServerId(self.server), *self._iaOptions(listed, only=kinds)],
            timing.rel_timeout,
            0,
            timing.rel_max_rc,
            None,
            self._onLeft,
            self._restart,
        )

    def _decline(self) -> None:
        if self.server is None:
            return
        self.state = State.DECLINING
        self._cancel("t1", "t2", "release")
        iaKey = (NA, self._iaid(NA))
        listed = {iaKey: list(self.leases[iaKey])}
        self.leases[iaKey].clear()
        self._scheduleExpiry()
        timing = self.pool.timing
        self._begin(
            MessageType.DECLINE,
            [ServerId(self.server), *self._iaOptions(listed, only={NA})],
            timing.dec_timeout,
            0,
            timing.dec_max_rc,
            None,
            self._onLeft,
            self._restart,
        )

    def _onLeft(self, message: Message) -> Callable[[], None] | None:
        if message.msg_type != MessageType.REPLY or _statusOf(message.options) in _NOT_PROCESSED:
            return None
        return self._restart


class ClientPool:
    """
    N simulated clients sharing one transport, their answers found by
    transaction id.

    @ivar clients: the clients, by index.
    @ivar counters: C{unmatched} (no client has that transaction id),
        C{foreign} (the Client Identifier is not the client's).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        transport: ClientTransport,
        recorder: HistoryRecorder,
        *,
        seed: int,
        count: int,
        behaviour: Behaviour | None = None,
        timing: Timing | None = None,
        firstIndex: int = 0,
    ) -> None:
        """
        @param clock: time and timers (the reactor).
        @param recorder: where every transmission and answer goes.
        @param seed: makes the DUIDs, IAIDs, transaction ids and every
            random choice of the clients.
        @param firstIndex: the index of the first client (pools with the
            same seed and disjoint index ranges have distinct DUIDs).
        """
        self.behaviour = behaviour or Behaviour()
        if not (self.behaviour.na or self.behaviour.pd):
            raise ValueError("clients must ask for an address, a prefix or both")
        self.clock = clock
        self.transport = transport
        self.recorder = recorder
        self.seed = seed
        self.timing = timing or Timing()
        self.counters: Counter[str] = Counter()
        self._rng = random.Random(f"dhcp6ha-chaos-pool:{seed}:{firstIndex}")
        self._xids: dict[int, SimulatedClient] = {}
        self.clients: list[SimulatedClient] = []
        for index in range(firstIndex, firstIndex + count):
            rng = random.Random(f"dhcp6ha-chaos-client:{seed}:{index}")
            duid = clientDuid(seed, index, self.behaviour.duid_type)
            ias: list[IAKey] = []
            if self.behaviour.na:
                ias.append((NA, rng.getrandbits(32)))
            if self.behaviour.pd:
                ias.append((PD, rng.getrandbits(32)))
            mac = duid[-6:]
            self.clients.append(SimulatedClient(self, index, duid, ias, rng, _linkLocal(mac)))
        transport.setReceiver(self.messageReceived)

    def start(self) -> None:
        """Start every client (spread over C{behaviour.start_spread})."""
        for client in self.clients:
            client.start(self._rng.uniform(0, self.behaviour.start_spread))

    def stop(self) -> None:
        """Stop every client at once (nothing is released)."""
        for client in self.clients:
            client.stop()

    def newXid(self, client: SimulatedClient) -> int:
        """A transaction id never used before in this pool, now C{client}'s."""
        while True:
            xid = self._rng.getrandbits(24)
            if xid not in self._xids:
                self._xids[xid] = client
                return xid

    def record(self, event: Any) -> None:
        self.recorder.record(event)

    def messageReceived(self, message: Message, source: str) -> None:
        """A server message from the transport: to the client whose transaction it is."""
        client = self._xids.get(message.transaction_id)
        if client is None:
            self.counters["unmatched"] += 1
            return
        duid = next((o.duid for o in message.options if isinstance(o, ClientId)), None)
        if duid != client.duid:
            self.counters["foreign"] += 1
            return
        client.received(message, source)
