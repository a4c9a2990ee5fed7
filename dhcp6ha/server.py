# -*- test-case-name: tests.test_server -*-
"""
Client I/O: the thin adapter between UDP datagrams and the sans-IO engine.

L{DHCPv6ServerProtocol} decodes a datagram, asks the engine for a decision,
makes the decision's binding changes durable and only then sends the reply
(durable before visible, DESIGN.md).  L{Reclaimer} runs expiry reclamation on
a timer.  L{DHCPv6Port} is a UDP port that also reports, for each datagram,
the interface it arrived on and the address it was sent to
(C{IPV6_RECVPKTINFO}), and joins C{ff02::1:2} on named interfaces.

Nothing here makes a protocol decision: that is the engine's job.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv6Address
from typing import Any, Protocol, cast

from attrs import frozen
from twisted.internet import error, udp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from dhcp6ha._typedtwisted import failureOf
from dhcp6ha.engine import Decision, Received
from dhcp6ha.histogram import DurationHistogram
from dhcp6ha.interfaces import IAllocationPolicy, ILeaseStore
from dhcp6ha.leases.lease import Lease
from dhcp6ha.message import (
    MAX_MESSAGE_SIZE,
    MalformedMessage,
    Message,
    MessageType,
    RelayMessage,
    decode,
    encode,
)

__all__ = [
    "ALL_DHCP_RELAY_AGENTS_AND_SERVERS",
    "MAX_DATAGRAM_SIZE",
    "DHCPv6Port",
    "DHCPv6ServerProtocol",
    "LogThrottle",
    "PacketInfo",
    "Reclaimer",
    "ServerEngine",
    "listenDHCPv6",
]

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")
"""The link-scoped multicast group clients send to (RFC 8415 section 7.1)."""

MAX_DATAGRAM_SIZE = MAX_MESSAGE_SIZE
"""
Largest datagram accepted: the codec's limit (RFC 8415 puts none below the
UDP one).  The port reads with a buffer one byte larger, so that a
truncated read is seen as oversized rather than parsed.
"""

SERVER_PORT_MESSAGE_TYPES = frozenset(
    {
        MessageType.SOLICIT,
        MessageType.REQUEST,
        MessageType.CONFIRM,
        MessageType.RENEW,
        MessageType.REBIND,
        MessageType.RELEASE,
        MessageType.DECLINE,
        MessageType.INFORMATION_REQUEST,
        MessageType.RELAY_FORW,
    }
)
"""Message types a server accepts on its port; anything else is dropped."""


class ServerEngine(Protocol):
    """What the adapters need of L{dhcp6ha.engine.Engine}."""

    def handle(
        self, message: Message | RelayMessage, received: Received, now: float
    ) -> Decision | None: ...

    def reclaim(self, now: float, limit: int) -> Sequence[Lease]: ...

    def policyForLease(self, lease: Lease) -> IAllocationPolicy:
        """The policy to tell about a change of C{lease} (its subnet's)."""
        ...


@frozen
class PacketInfo:
    """
    What the socket told us about a datagram beyond its source.

    @ivar destination: the address it was sent to, or C{None} if unknown.
    @ivar interface: the name of the interface it arrived on, or C{None}.
    @ivar waited: how long it waited in the socket's receive buffer before
        it was read (seconds, from the kernel's arrival time), or C{None}
        if the socket does not say.  (Linux times datagrams on arrival once
        a switch it turns on, deferred, for the first socket asking is on;
        the first ones after start-up may be timed when read: about 0.)
    """

    destination: IPv6Address | None
    interface: str | None
    waited: float | None = None


class LogThrottle:
    """
    Decide when a repeated event may be logged again.

    The first event of a key is logged; after that at most one per
    C{interval} seconds, reporting how many were suppressed in between.  At
    most C{maxKeys} keys are tracked; further keys share C{overflowKey}.
    """

    def __init__(self, clock: IReactorTime, interval: float, maxKeys: int = 64) -> None:
        self._clock = clock
        self.interval = interval
        self._maxKeys = maxKeys
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def admit(self, key: str, overflowKey: str = "other") -> int | None:
        """
        Record one event.

        @return: C{None} if it must not be logged now; otherwise the number
            of events of this key suppressed since the last one logged.
        """
        if key not in self._last and len(self._last) >= self._maxKeys:
            key = overflowKey
        now = self._clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] += 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


def _expiry(when: float) -> str:
    try:
        return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return repr(when)


def logLeaseChange(log: Logger, lease: Lease) -> None:
    """Log one binding change at info level."""
    log.info(
        "Lease {address}/{length} {state} for {duid} iaid {iaid} until {expires}",
        address=str(lease.address),
        length=lease.prefix_length,
        state=lease.state.value,
        duid=lease.duid.hex(),
        iaid=lease.iaid,
        expires=_expiry(lease.expires),
        lease=lease,
    )


_ADDRESS_CACHE_SIZE = 4096
"""The most source strings and destination addresses remembered (then forgotten at once)."""


def _describe(message: Message | RelayMessage) -> str:
    try:
        return MessageType(message.msg_type).name
    except ValueError:
        return str(message.msg_type)


class DHCPv6ServerProtocol(DatagramProtocol):
    """
    The server's side of one UDP socket.

    Replies whose decision changes bindings are sent only once the store's
    commit has fired (durable); if it fails, nothing is sent.  No datagram,
    engine bug or store failure stops the protocol: each is counted in
    L{counters} and logged, repeated ones throttled per reason.

    @ivar counters: event counts: C{received}, C{sent}, C{malformed},
        C{oversized}, C{unexpected-type}, C{not-serving}, C{no-reply},
        C{engine-error}, C{encode-error}, C{commit-failed}, C{send-error},
        C{policy-error}, C{leases-changed}.
    @ivar serving: when false, datagrams are counted (C{not-serving}) and
        dropped; the service keeps it false until the server DUID is
        durable and while it is stopping.
    @ivar responseTime: the time from reading a datagram to sending its
        reply (engine, durable commit, send), for every reply sent: the
        server's own share of what a client waits, not counting the time
        the datagram waited in the socket's buffer to be read.
    @ivar queueWait: that time, for every datagram read from a socket that
        reports arrival times (L{PacketInfo.waited}): it grows when the
        server falls behind its clients, before the buffer overflows and
        datagrams are lost.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        engine: ServerEngine,
        store: ILeaseStore,
        policy: IAllocationPolicy,
        clock: IReactorTime,
        *,
        logInterval: float = 60.0,
        logExchanges: bool = False,
        ifIndexToName: Callable[[int], str] = socket.if_indextoname,
    ) -> None:
        """
        @param policy: told about the changes of a decision that names no
            policy for them (L{Decision.policies}); the engine's decisions
            name each change's own subnet policy.
        @param logInterval: at most one log line per this many seconds for
            each kind of repeated problem (malformed datagrams, failures).
        @param logExchanges: log every exchange at debug level.
        @param ifIndexToName: maps interface indexes to names.
        """
        self.engine = engine
        self.store = store
        self.policy = policy
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.responseTime = DurationHistogram()
        # From 1 µs: a server keeping up reads most datagrams within 0.1 ms,
        # the response time's lowest bucket.
        self.queueWait = DurationHistogram(lowest=1e-6)
        self.serving = True
        self.logExchanges = logExchanges
        self._throttle = LogThrottle(clock, logInterval)
        self._ifIndexToName = ifIndexToName
        self._inFlight = 0
        self._idle: list[Deferred[None]] = []
        # Source strings as the socket gives them -> addresses, and
        # addresses -> the text written back: few relays send most
        # datagrams, and parsing or printing an address costs microseconds.
        self._sources: dict[str, IPv6Address] = {}
        self._hosts: dict[IPv6Address, str] = {}

    # --- receiving ---------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        A datagram from a port that reports only its source.

        The interface comes from the source's scope if there is one; the
        destination is unknown, so non-relayed messages count as multicast.
        """
        scope = addr[3] if len(addr) >= 4 else 0
        self.packetReceived(datagram, addr, PacketInfo(None, self._interfaceName(scope)))

    def packetReceived(self, datagram: bytes, addr: Any, info: PacketInfo) -> None:
        """
        A datagram from C{addr} (C{(host, port[, flowinfo, scope_id])}).
        """
        read = self.clock.seconds()
        self.counters["received"] += 1
        if info.waited is not None:
            self.queueWait.record(info.waited)
        if not self.serving:
            self.counters["not-serving"] += 1
            return
        source = self._sources.get(addr[0])
        if source is None:
            host = str(addr[0]).partition("%")[0]
            try:
                source = IPv6Address(host)
            except ValueError:
                self._drop(
                    "bad-source", "bad-source", "Dropped datagram from non-IPv6 {source}", host
                )
                return
            if len(self._sources) >= _ADDRESS_CACHE_SIZE:
                self._sources.clear()
            self._sources[addr[0]] = source
        sourcePort = int(addr[1])
        if len(datagram) > MAX_DATAGRAM_SIZE:
            self._drop("oversized", "oversized", "Dropped oversized datagram from {source}", source)
            return
        try:
            message = decode(datagram)
        except MalformedMessage as e:
            reason = str(e.args[0]) if e.args else "malformed"
            self.counters["malformed"] += 1
            suppressed = self._throttle.admit("malformed:" + reason, "malformed")
            if suppressed is not None:
                self.log.warn(
                    "Dropped malformed datagram from {source} port {port}: {reason}"
                    " ({suppressed} malformed datagrams not logged before this one)",
                    source=str(source),
                    port=sourcePort,
                    reason=reason,
                    suppressed=suppressed,
                )
            return
        if message.msg_type not in SERVER_PORT_MESSAGE_TYPES:
            self._drop(
                "unexpected-type",
                "type:" + _describe(message),
                "Dropped {msgtype} from {source}: not a message for a server",
                source,
                msgtype=_describe(message),
            )
            return
        # ff00::/8 (is_multicast, without building the network to test).
        multicast = info.destination is None or int(info.destination) >> 120 == 0xFF
        received = Received(
            source=source, port=sourcePort, interface=info.interface, multicast=multicast
        )
        try:
            decision = self.engine.handle(message, received, read)
        except Exception:
            self._failure(
                "engine-error", "Engine failed on {msgtype} from {source}", message, source
            )
            return
        if decision is None:
            self.counters["no-reply"] += 1
            if self.logExchanges:
                self.log.debug(
                    "{msgtype} from {source} on {interface}: no reply",
                    msgtype=_describe(message),
                    source=str(source),
                    interface=info.interface,
                )
            return
        try:
            payload = encode(decision.reply)
        except Exception:
            self._failure(
                "encode-error",
                "Could not encode the reply to {msgtype} from {source}",
                message,
                source,
            )
            return
        if self.logExchanges:
            self.log.debug(
                "{msgtype} from {source} on {interface}: {reply} to {destination}"
                " with {changes} binding changes",
                msgtype=_describe(message),
                source=str(source),
                interface=info.interface,
                reply=_describe(decision.reply),
                destination=decision.destination,
                changes=len(decision.changes),
            )
        if not decision.changes:
            self._send(payload, decision, read)
            return
        changes = tuple(decision.changes)
        try:
            reply = _DurableReply(self._writer(), payload, self._destination(decision), self.clock)
            d: Deferred[None] = self.store.commit(changes, whenDurable=reply)
        except Exception:
            d = fail()
        if not isinstance(d, Deferred):
            d = succeed(None)
        self._inFlight += 1

        def committed(_: None) -> None:
            if not reply.called:
                reply()  # a store that does not call whenDurable
            if reply.sentAt is None:
                self._failure(
                    "send-error",
                    "Could not send {msgtype} to {source}",
                    decision.reply,
                    decision.destination[0],
                    failureOf(reply.error or RuntimeError("not sent")),
                )
            else:
                self._sent(read, reply.sentAt)
            # Each change goes to its own subnet's policy (its relationship).
            self._bindingsChanged(tuple(decision.notifications(self.policy)))

        def failed(f: Failure) -> None:
            self.counters["commit-failed"] += 1
            suppressed = self._throttle.admit("commit-failed")
            if suppressed is not None:
                self.log.failure(
                    "Commit of {count} binding changes failed: reply to {source} not sent"
                    " ({suppressed} failed commits not logged before this one)",
                    f,
                    count=len(changes),
                    source=str(source),
                    suppressed=suppressed,
                )

        def done(result: object) -> object:
            self._inFlight -= 1
            if not self._inFlight:
                idle, self._idle = self._idle, []
                for waiter in idle:
                    waiter.callback(None)
            return result

        d.addCallbacks(committed, failed)
        d.addBoth(done)

    # --- sending and after-commit work ------------------------------------

    def _writer(self) -> Callable[[bytes, tuple[str, int]], None]:
        """The transport's C{write}; C{RuntimeError} if the port is closed."""
        if self.transport is None:
            raise RuntimeError("the port is closed")
        write: Callable[[bytes, tuple[str, int]], None] = self.transport.write
        return write

    def _destination(self, decision: Decision) -> tuple[str, int]:
        """The C{(host, port)} to send C{decision}'s reply to."""
        address, port, interface = decision.destination
        host = self._hosts.get(address)
        if host is None:
            if len(self._hosts) >= _ADDRESS_CACHE_SIZE:
                self._hosts.clear()
            host = self._hosts[address] = str(address)
        if interface is not None and (address.is_link_local or address.is_multicast):
            # Link-scoped: the scope says which link (RFC 4007 section 11).
            host += "%" + interface
        return host, port

    def _send(self, payload: bytes, decision: Decision, read: float) -> None:
        """Send a reply that changed no binding, now."""
        try:
            self._writer()(payload, self._destination(decision))
        except Exception:
            self._failure(
                "send-error",
                "Could not send {msgtype} to {source}",
                decision.reply,
                decision.destination[0],
            )
            return
        self._sent(read, self.clock.seconds())

    def _sent(self, read: float, sentAt: float) -> None:
        self.counters["sent"] += 1
        self.responseTime.record(sentAt - read)

    def _bindingsChanged(self, changes: Sequence[tuple[Lease, IAllocationPolicy]]) -> None:
        for lease, policy in changes:
            self.counters["leases-changed"] += 1
            logLeaseChange(self.log, lease)
            try:
                policy.bindingChanged(lease)
            except Exception:
                self._failure(
                    "policy-error",
                    "Allocation policy failed on a {msgtype} for {source}",
                    None,
                    lease.address,
                )

    def drain(self) -> Deferred[None]:
        """
        Stop serving and wait for every commit in flight (and its reply).
        """
        self.serving = False
        waiter: Deferred[None] = Deferred()
        if self._inFlight:
            self._idle.append(waiter)
        else:
            waiter.callback(None)
        return waiter

    # --- helpers -----------------------------------------------------------

    def _interfaceName(self, index: int) -> str | None:
        if not index:
            return None
        try:
            return self._ifIndexToName(index)
        except OSError:
            return None

    def _drop(self, counter: str, key: str, text: str, source: object, **fields: object) -> None:
        self.counters[counter] += 1
        suppressed = self._throttle.admit(key, counter)
        if suppressed is not None:
            self.log.warn(
                text + " ({suppressed} similar not logged before this one)",
                source=str(source),
                suppressed=suppressed,
                **fields,
            )

    def _failure(
        self,
        counter: str,
        text: str,
        about: Message | RelayMessage | None,
        source: object,
        failure: Failure | None = None,
    ) -> None:
        """Count and log (throttled) C{failure}, by default the exception being handled."""
        self.counters[counter] += 1
        suppressed = self._throttle.admit(counter)
        if suppressed is not None:
            self.log.failure(
                text + " ({suppressed} similar not logged before this one)",
                failure,
                level=LogLevel.error,
                msgtype=_describe(about) if about is not None else "binding change",
                source=str(source),
                suppressed=suppressed,
            )


class _DurableReply:
    """
    The Reply of an exchange that changed bindings, sent as soon as the
    store has made the changes durable (L{ILeaseStore.commit}'s
    C{whenDurable}): from the store's writer thread, so that it does not
    wait for the reactor thread, busy with other datagrams and with
    replication, to run the commit's callback.  The transport's C{write}
    must be safe to call from another thread: L{DHCPv6Port.write} is (one
    C{sendto}, no reactor state).  The outcome is kept for the reactor
    thread to count, once the commit's Deferred fires.

    @ivar called: has it been called?
    @ivar sentAt: when the Reply was sent (the clock's time), or C{None}.
    @ivar error: what the send raised, or C{None}.
    """

    __slots__ = ("_write", "_payload", "_destination", "_clock", "called", "sentAt", "error")

    def __init__(
        self,
        write: Callable[[bytes, tuple[str, int]], None],
        payload: bytes,
        destination: tuple[str, int],
        clock: IReactorTime,
    ) -> None:
        self._write = write
        self._payload = payload
        self._destination = destination
        self._clock = clock
        self.called = False
        self.sentAt: float | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        self.called = True
        try:
            self._write(self._payload, self._destination)
        except Exception as e:
            self.error = e
        else:
            self.sentAt = self._clock.seconds()


class Reclaimer:
    """
    Expiry reclamation on a timer: asks the engine which bindings expire,
    commits them, then tells each binding's policy
    (L{ServerEngine.policyForLease}), like a client exchange does.

    @ivar counters: C{reclaimed}, C{reclaim-error}, C{commit-failed}.
    """

    log = Logger()

    def __init__(
        self,
        engine: ServerEngine,
        store: ILeaseStore,
        policy: IAllocationPolicy,
        clock: IReactorTime,
        interval: float,
        limit: int = 1000,
        maxBatches: int = 10,
    ) -> None:
        """
        @param policy: kept for callers; the engine chooses the policy of
            each reclaimed binding (L{ServerEngine.policyForLease}).
        @param interval: seconds between runs.
        @param limit: most bindings reclaimed per batch (one commit).
        @param maxBatches: most batches in one run; a run goes on to the
            next batch only while batches come back full.
        """
        self.engine = engine
        self.store = store
        self.policy = policy
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self.maxBatches = maxBatches
        self.counters: Counter[str] = Counter()
        self._loop = LoopingCall(self.reclaimOnce)
        self._loop.clock = clock
        self._loopDone: Deferred[LoopingCall] | None = None

    def start(self) -> None:
        """Run now, then every C{interval} seconds."""
        self._loopDone = self._loop.start(self.interval, now=True)

    def stop(self) -> Deferred[None]:
        """Stop the timer; fires once a run in progress has finished."""
        done, self._loopDone = self._loopDone, None
        if self._loop.running:
            self._loop.stop()
        result: Deferred[None] = Deferred()
        if done is None:
            result.callback(None)
        else:
            done.addBoth(lambda _: result.callback(None))
        return result

    def reclaimOnce(self) -> Deferred[None]:
        """One run: reclaim batches until one comes back short.  Never fails."""
        return Deferred.fromCoroutine(self._reclaim())

    async def _reclaim(self) -> None:
        for _ in range(self.maxBatches):
            try:
                changes = tuple(self.engine.reclaim(self.clock.seconds(), self.limit))
            except Exception:
                self.counters["reclaim-error"] += 1
                self.log.failure("Expiry reclamation failed")
                return
            if not changes:
                return
            try:
                await self.store.commit(changes)
            except Exception:
                self.counters["commit-failed"] += 1
                self.log.failure("Commit of {count} reclaimed bindings failed", count=len(changes))
                return
            for lease in changes:
                self.counters["reclaimed"] += 1
                logLeaseChange(self.log, lease)
                try:
                    self.engine.policyForLease(lease).bindingChanged(lease)
                except Exception:
                    self.log.failure("Allocation policy failed on a reclaimed binding")
            if len(changes) < self.limit:
                return


# --- the port ----------------------------------------------------------------

_READ_IGNORE = (errno.EAGAIN, errno.EINTR, errno.EWOULDBLOCK)
_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo
# Plain ints: an IntFlag operand would run enum code for every datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)
_IPPROTO_IPV6 = int(socket.IPPROTO_IPV6)
_IPV6_PKTINFO = int(socket.IPV6_PKTINFO)
_SOL_SOCKET = int(socket.SOL_SOCKET)
# Linux's SO_TIMESTAMPNS, which the socket module does not name (35 is
# asm-generic's number, x86 and ARM included): each datagram comes with its
# arrival time as an SCM_TIMESTAMPNS message (the same number), a struct
# timespec of the real-time clock.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(_TIMESPEC.size)
_wallClock = time.time

INTERFACE_NAMES_TTL = 5.0
"""Seconds an interface index's name is remembered by L{DHCPv6Port}."""


class DHCPv6Port(udp.Port):
    """
    An IPv6 UDP port that tells its protocol where each datagram went.

    Reads use C{recvmsg} with C{IPV6_RECVPKTINFO} and (on Linux)
    L{SO_TIMESTAMPNS}, and hand the protocol C{packetReceived(data, (host,
    port, flowinfo, scope_id), PacketInfo)}: the destination address
    (multicast or not), the name of the receiving interface, and how long
    the datagram waited to be read.  Twisted's own C{udp.Port} reads with
    C{recvfrom} and drops the scope, so none of these is available there.

    L{joinGroupOn} joins a group on an interface given by name.  Twisted 26.10's
    C{joinGroup(addr, interface)} takes an IPv6 I{address literal} for the
    interface and passes its bytes as the C{ipv6_mreq} interface index, so
    it cannot name an interface; this class sets C{IPV6_JOIN_GROUP} itself.

    One call of L{doRead} delivers at most L{maxDatagramsPerRead}
    datagrams (Twisted's C{udp.Port} reads up to 256 KiB, thousands of
    small datagrams): between two reads the reactor runs what the lease
    store's writer thread has finished, so replies whose leases are durable
    leave, and the next group commit starts, while clients keep sending.
    Interface names are remembered by index for L{INTERFACE_NAMES_TTL}
    seconds.

    The socket's receive buffer is L{receiveBufferSize}: Linux's default
    (208 KiB, about 200 small datagrams with their overhead) overflows
    when the process is kept off the CPU for a few tens of milliseconds
    under load; 1 MiB holds a few hundred milliseconds of a busy server's
    traffic, still less than a client's first retransmission timeout (RFC
    8415: 1 s for Solicit and Request).

    @ivar maxDatagramsPerRead: the most datagrams one L{doRead} delivers.
    @ivar receiveBufferSize: C{SO_RCVBUF} asked for (bytes; the kernel caps
        it at C{net.core.rmem_max}), or 0 for the system's default.
    """

    addressFamily = socket.AF_INET6
    log = Logger()
    maxDatagramsPerRead = 32
    receiveBufferSize = 1 << 20

    def __init__(
        self,
        port: int,
        proto: DHCPv6ServerProtocol,
        interface: str = "::",
        maxPacketSize: int = MAX_DATAGRAM_SIZE + 1,
        reactor: Any = None,
        ifIndexToName: Callable[[int], str] = socket.if_indextoname,
    ) -> None:
        """
        @param ifIndexToName: maps interface indexes to names.
        """
        # udp.Port.__init__ is untyped (mypy --strict): called through a typed view.
        cast(Callable[..., None], super().__init__)(port, proto, interface, maxPacketSize, reactor)
        self._ifIndexToName = ifIndexToName
        if self.addressFamily != socket.AF_INET6:
            raise ValueError("DHCPv6Port needs an IPv6 address to bind, not " + repr(interface))
        self._clock = cast(IReactorTime, self.reactor)
        self._names: dict[int, str | None] = {}
        self._namesUntil = 0.0

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        try:
            skt.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass  # Not Linux: no arrival times, PacketInfo.waited stays None.
        if self.receiveBufferSize:
            # The kernel caps it at net.core.rmem_max.
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receiveBufferSize)
        return skt

    def doRead(self) -> None:
        """
        Read the datagrams waiting, up to L{maxDatagramsPerRead} of them and
        C{maxThroughput} bytes.
        """
        read = 0
        datagrams = 0
        recvmsg = self.socket.recvmsg
        while read < self.maxThroughput and datagrams < self.maxDatagramsPerRead:
            try:
                data, ancillary, flags, addr = recvmsg(self.maxPacketSize, _ANCILLARY_SIZE)
            except OSError as se:
                if se.errno in _READ_IGNORE or se.errno == errno.ECONNREFUSED:
                    return
                raise
            read += len(data)
            datagrams += 1
            destination: IPv6Address | None = None
            interface: str | None = None
            waited: float | None = None
            for level, kind, value in ancillary:
                if level == _IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(value) >= _PKTINFO.size:
                    packed, index = _PKTINFO.unpack_from(value)
                    destination = IPv6Address(packed)
                    interface = self._indexToName(index)
                elif (
                    level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size
                ):
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    # The kernel's clock is the real-time one: so is this.
                    # A step back between arrival and now reads as 0.
                    waited = max(0.0, _wallClock() - seconds - nanoseconds * 1e-9)
            if flags & _MSG_TRUNC:
                # Longer than the buffer: the protocol counts it as oversized.
                data = data + b"\0"
            try:
                self.protocol.packetReceived(data, addr, PacketInfo(destination, interface, waited))
            except Exception:
                self.log.failure("Unhandled error in {protocol}", protocol=self.protocol)

    def _indexToName(self, index: int) -> str | None:
        if not index:
            return None
        now = self._clock.seconds()
        if now >= self._namesUntil:
            self._names.clear()
            self._namesUntil = now + INTERFACE_NAMES_TTL
        try:
            return self._names[index]
        except KeyError:
            pass
        try:
            name: str | None = self._ifIndexToName(index)
        except OSError:
            name = None
        self._names[index] = name
        return name

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        Send C{datagram} to C{addr}, an IPv6 C{(host, port)}.

        Unlike C{udp.Port.write}, the host string is not parsed four times
        to check its family first (the protocol writes IPv6 literals only;
        anything else fails in C{sendto} with C{OSError}).

        Safe to call from any thread (one C{sendto}, no reactor state): the
        protocol sends the Replies of exchanges that change bindings from
        the lease store's writer thread (L{_DurableReply}).

        @raise twisted.internet.error.MessageLengthError: it is too long.
        """
        if addr is None:
            super().write(datagram)
            return
        try:
            self.socket.sendto(datagram, addr)
        except OSError as se:
            if se.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("message too long") from None
            if se.errno != errno.ECONNREFUSED:
                raise

    def _membership(self, option: int, group: str, interface: str) -> None:
        request = socket.inet_pton(socket.AF_INET6, group) + struct.pack(
            "@I", socket.if_nametoindex(interface)
        )
        self.socket.setsockopt(socket.IPPROTO_IPV6, option, request)

    def joinGroupOn(self, group: str, interface: str) -> None:
        """
        Join multicast C{group} on the interface named C{interface}.

        @raise OSError: the interface does not exist or the join failed.
        """
        self._membership(socket.IPV6_JOIN_GROUP, group, interface)

    def leaveGroupOn(self, group: str, interface: str) -> None:
        """Leave multicast C{group} on the interface named C{interface}."""
        self._membership(socket.IPV6_LEAVE_GROUP, group, interface)


def listenDHCPv6(
    reactor: Any, port: int, protocol: DHCPv6ServerProtocol, interface: str
) -> DHCPv6Port:
    """
    Bind a L{DHCPv6Port} on a reactor that manages file descriptors (every
    POSIX reactor).

    @raise twisted.internet.error.CannotListenError: the bind failed.
    """
    listening = DHCPv6Port(port, protocol, interface, reactor=reactor)
    cast(Callable[[], None], listening.startListening)()  # untyped in Twisted
    return listening
