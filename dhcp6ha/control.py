# -*- test-case-name: tests.test_control -*-
"""
The operator control channel, server side: a UNIX stream socket that only
this server's user (and root) may use, read by C{dhcp6ha-ctl}
(L{dhcp6ha.ctl}).

The protocol is one JSON object per line, in both directions (UTF-8, lines
end with C{\\n}; a C{\\r} before it is ignored, blank lines are skipped).
A request names a C{command} and its arguments::

    {"command": "status"}
    {"command": "leases", "address": "2001:db8:1::1000"}
    {"command": "leases", "prefix": "2001:db8:100::/56"}
    {"command": "leases", "duid": "00:03:00:01:02:00:00:00:00:09", "limit": 100}
    {"command": "leases"}                       (every binding, up to limit)
    {"command": "leases", "state": ["active", "expired"]}   (only these states)
    {"command": "partner-down", "relationship": "lab-pair"}
    {"command": "sync", "relationship": "lab-pair"}

Every request gets exactly one response, in the order of the requests::

    {"ok": true, "result": ...}
    {"ok": false, "error": "no relationship named 'x' (this server has: lab-pair)"}

A request may carry an C{"id"} (any JSON value): the response carries it
back.  A malformed request (not UTF-8, not JSON, not an object, an unknown
command or argument, a bad value) gets an error response and the connection
stays usable; a line longer than L{MAX_REQUEST_LENGTH} gets an error
response and the connection is closed.  Every error is counted in
L{ControlFactory.counters}; none stops the server.

L{ControlService} owns the socket (mode 0600; a stale socket file left by a
crash is removed at start), L{ControlFactory} and L{ControlProtocol} speak
the protocol, and L{ControlTarget} answers from the running server: it
implements L{IControlTarget} for the services of
L{dhcp6ha.service.makeService}.  Failover relationships plug in as
L{IRelationshipControl} providers registered with
L{ControlTarget.addRelationship}.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Protocol, cast

import attrs
from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime, ITransport
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha import __version__
from dhcp6ha._typedtwisted import serviceStart, serviceStop
from dhcp6ha.config import ServerConfig
from dhcp6ha.histogram import DurationHistogram
from dhcp6ha.interfaces import IControlTarget, ILeaseStore, IRelationshipControl
from dhcp6ha.leases.lease import BindingState, Lease
from dhcp6ha.message import describeDuid, duidFromText, duidToText

__all__ = [
    "COMMANDS",
    "DEFAULT_LEASE_LIMIT",
    "DROPPED_COUNTERS",
    "MAX_LEASE_LIMIT",
    "MAX_REQUEST_LENGTH",
    "ControlError",
    "ControlFactory",
    "ControlProtocol",
    "ControlService",
    "ControlTarget",
    "PeerCredentials",
    "RelationshipStatus",
    "leaseToJSON",
    "listenControl",
    "peerCredentials",
    "removeStaleSocket",
]

MAX_REQUEST_LENGTH = 64 * 1024
"""Longest request line, in bytes (without its line end)."""

DEFAULT_LEASE_LIMIT = 1000
"""Bindings returned by C{leases} when the request gives no C{limit}."""

MAX_LEASE_LIMIT = 10000
"""Largest C{limit} a C{leases} request may ask for."""

SCAN_BATCH = 500
"""Bindings read per reactor turn when C{leases} has to scan the store."""

IDLE_TIMEOUT = 300.0
"""Seconds a control connection may stay silent (between requests)."""

MAX_CONNECTIONS = 16
"""Control connections open at once; more are answered with an error and closed."""

SOCKET_MODE = 0o600
"""The control socket's mode: its owner (the server's user) only."""

DROPPED_COUNTERS = (
    "bad-source",
    "commit-failed",
    "encode-error",
    "engine-error",
    "malformed",
    "not-serving",
    "oversized",
    "send-error",
    "unexpected-type",
)
"""
The counters of L{dhcp6ha.server.DHCPv6ServerProtocol} that are datagrams
received and not answered because of a problem (C{no-reply}, a message the
server has nothing to say to, is not one of them).
"""

# Typed calls of the untyped Twisted protocol API used here (mypy --strict),
# through the instance as before (an override still applies); those of the
# service API are in dhcp6ha._typedtwisted.


def _setTimeout(protocol: TimeoutMixin, period: float | None) -> None:
    cast(Callable[[float | None], object], protocol.setTimeout)(period)


def _resetTimeout(protocol: TimeoutMixin) -> None:
    cast(Callable[[], None], protocol.resetTimeout)()


def _pauseProducing(protocol: LineReceiver) -> None:
    cast(Callable[[], None], protocol.pauseProducing)()


def _resumeProducing(protocol: LineReceiver) -> None:
    cast(Callable[[], None], protocol.resumeProducing)()


def _sendLine(protocol: LineReceiver, line: bytes) -> None:
    cast(Callable[[bytes], None], protocol.sendLine)(line)


#: Every command and the arguments it accepts (besides "command" and "id").
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "status": (),
    "leases": ("address", "prefix", "duid", "limit", "state"),
    "partner-down": ("relationship",),
    "sync": ("relationship",),
}

#: Commands that change something: logged at info level, with the peer.
_OPERATOR_COMMANDS = frozenset({"partner-down", "sync"})


class ControlError(Exception):
    """
    A control request cannot be carried out; the message, for the operator,
    is sent back as the response's C{"error"}.
    """


class _BadRequest(ControlError):
    """The request itself is malformed (counted apart from failed commands)."""

    def __init__(self, counter: str, message: str, ident: object = None) -> None:
        super().__init__(message)
        self.counter = counter
        self.ident = ident


@frozen
class RelationshipStatus:
    """
    One failover relationship, as C{dhcp6ha-ctl status} shows it.  The
    failover wiring builds one in L{IRelationshipControl.status}.

    Times are absolute (seconds since the epoch, from the server's clock);
    C{dhcp6ha-ctl} shows them relative to the status's C{"now"}.

    @ivar name: the relationship's name.
    @ivar role: C{"primary"} or C{"secondary"}.
    @ivar state: this server's endpoint state, as RFC 8156 names it in
        lower case with dashes (C{"normal"}, C{"communications-interrupted"},
        ...: L{dhcp6ha.failover.machine.EndpointState} values).
    @ivar state_since: when this server entered C{state}.
    @ivar partner_state: the partner's last known state, or C{None}.
    @ivar partner_state_since: when the partner entered it, or C{None}.
    @ivar unacked_updates: binding updates sent or queued that the partner
        has not acknowledged.
    @ivar last_contact: when the last message from the partner arrived, or
        C{None} if never.
    @ivar clock_skew: the partner's clock minus ours, in seconds, measured
        at the last connect, or C{None}.
    @ivar connected: whether an authenticated connection to the partner is
        up now.
    @ivar service: what clients get in this state (C{"responsive"},
        C{"renew-responsive"}, C{"unresponsive"}), or C{None}.
    @ivar replication: the update queue's counters
        (L{dhcp6ha.failover.queue.UpdateQueue.status}: updates sent, acked,
        rejected, in flight; the replication lag from a change's reply to
        the partner's ack, C{"lag"} (count, mean, p50, p90, p99, max in
        seconds) and C{"lag_histogram"}), or C{None} before it runs.
    """

    name: str
    role: str
    state: str
    state_since: float
    partner_state: str | None = None
    partner_state_since: float | None = None
    unacked_updates: int = 0
    last_contact: float | None = None
    clock_skew: float | None = None
    connected: bool = False
    service: str | None = None
    replication: dict[str, Any] | None = None

    def asDict(self) -> dict[str, object]:
        """The JSON shape sent in C{status}' C{"relationships"} list."""
        return attrs.asdict(self)


def leaseToJSON(lease: Lease) -> dict[str, object]:
    """
    One binding as sent in C{leases}' result: every field of L{Lease}, the
    enums by value, the DUID as colon hex, plus C{"prefix"}
    (C{address/prefix_length}).
    """
    return {
        "lease_type": lease.lease_type.value,
        "address": str(lease.address),
        "prefix_length": lease.prefix_length,
        "prefix": str(lease.prefix),
        "state": lease.state.value,
        "duid": duidToText(lease.duid),
        "iaid": lease.iaid,
        "start_time_of_state": lease.start_time_of_state,
        "cltt": lease.cltt,
        "preferred_lifetime": lease.preferred_lifetime,
        "valid_lifetime": lease.valid_lifetime,
        "expires": lease.expires,
        "partner_lifetime_sent": lease.partner_lifetime_sent,
        "partner_lifetime_acked": lease.partner_lifetime_acked,
        "partner_state_acked": None
        if lease.partner_state_acked is None
        else lease.partner_state_acked.value,
        "partner_stos_acked": lease.partner_stos_acked,
        "fqdn": lease.fqdn,
        "fqdn_flags": lease.fqdn_flags,
        "dns_update_state": lease.dns_update_state,
    }


# --- the target: answers from the running server ------------------------------------


class StoreHolder(Protocol):
    """What L{ControlTarget} needs of L{dhcp6ha.service.LeaseStoreService}."""

    @property
    def store(self) -> ILeaseStore | None: ...


class ProtocolView(Protocol):
    """What L{ControlTarget} reads of L{dhcp6ha.server.DHCPv6ServerProtocol}."""

    @property
    def counters(self) -> Mapping[str, int]: ...

    @property
    def serving(self) -> bool: ...

    @property
    def responseTime(self) -> DurationHistogram: ...

    @property
    def queueWait(self) -> DurationHistogram: ...


class PortView(Protocol):
    """A listening port: L{ControlTarget} reads the port number bound."""

    def getHost(self) -> Any: ...


class ServerView(Protocol):
    """What L{ControlTarget} reads of L{dhcp6ha.service.DHCPv6Service}."""

    @property
    def serverDuid(self) -> bytes | None: ...

    @property
    def started(self) -> float | None: ...

    @property
    def protocol(self) -> ProtocolView | None: ...

    @property
    def port(self) -> PortView | None: ...


@implementer(IControlTarget)
class ControlTarget:
    """
    L{IControlTarget} for the services of L{dhcp6ha.service.makeService}.

    Leases by DUID: L{ILeaseStore} has no index by DUID alone, so they are
    found by scanning every binding with L{ILeaseStore.iterLeases},
    L{SCAN_BATCH} at a time, giving the reactor a turn between batches.  On
    a large database that takes a while but never blocks the server for
    long; a store lookup by DUID can replace it without changing the
    protocol.
    """

    log = Logger()

    def __init__(
        self,
        config: ServerConfig,
        clock: IReactorTime,
        leases: StoreHolder,
        server: ServerView,
        relationships: Iterable[IRelationshipControl] = (),
        *,
        scanBatch: int = SCAN_BATCH,
    ) -> None:
        """
        @param leases: holds the lease store while it is open.
        @param server: the DHCPv6 service (DUID, counters, port).
        @param relationships: failover relationships to control; more can
            be added with L{addRelationship}.
        @param scanBatch: bindings read per reactor turn in a scan.
        """
        self.config = config
        self.clock = clock
        self._leases = leases
        self._server = server
        self._relationships: dict[str, IRelationshipControl] = {}
        self._scanBatch = scanBatch
        for relationship in relationships:
            self.addRelationship(relationship)

    # --- relationships -------------------------------------------------------

    def addRelationship(self, relationship: IRelationshipControl) -> None:
        """
        Make a failover relationship visible to the control channel.

        @raise ValueError: one with this name is already registered.
        """
        name = str(relationship.name)
        if name in self._relationships:
            raise ValueError(f"relationship {name!r} is already registered")
        self._relationships[name] = relationship

    def removeRelationship(self, name: str) -> None:
        """Forget the relationship named C{name}, if registered."""
        self._relationships.pop(name, None)

    def _relationship(self, name: str) -> IRelationshipControl:
        found = self._relationships.get(name)
        if found is not None:
            return found
        configured = [r.name for r in self.config.failover]
        if name in configured:
            raise ControlError(
                f"relationship {name!r} is configured in {self.config.path} but its failover"
                " endpoint is not running"
            )
        have = sorted(self._relationships)
        if have:
            which = "this server has: " + ", ".join(have)
        else:
            which = "this server has none: it runs without failover"
        raise ControlError(f"no relationship named {name!r} ({which})")

    # --- IControlTarget --------------------------------------------------------

    def status(self) -> dict[str, object]:
        """
        The status, a dict with the keys:

          - C{"version"}: dhcp6ha's version;
          - C{"now"}: the server's clock, for relative times;
          - C{"server"}: C{duid} (colon hex, C{None} before start),
            C{duid_description}, C{started} (time the DHCPv6 service
            started), C{uptime} (seconds), C{address}, C{port} (the port
            bound), C{interfaces}, C{serving}, C{config} (the ini path),
            C{database};
          - C{"datagrams"}: C{received}, C{sent} and C{dropped} (the sum of
            the L{DROPPED_COUNTERS});
          - C{"counters"}: every counter of the DHCPv6 protocol;
          - C{"response_time"}: the time from reading a datagram to
            sending its reply, in seconds (L{DurationHistogram.summary}: count,
            mean, p50, p90, p99, max), and C{"response_time_histogram"}
            (L{DurationHistogram.snapshot}, for the percentiles of an
            interval); both C{None} before the DHCPv6 service starts;
          - C{"queue_wait"} and C{"queue_wait_histogram"}: the same for
            the time each datagram waited in the socket's receive buffer
            before it was read (what C{"response_time"} leaves out);
          - C{"leases"}: bindings per state name (C{None} if the store is
            closed, with C{"leases_error"} saying why), from
            L{ILeaseStore.count}, which the stores keep up to date as
            bindings change: no scan of the database per status;
          - C{"relationships"}: L{RelationshipStatus.asDict} of each
            registered relationship, by name (an entry that failed is
            C{{"name": ..., "error": ...}}).

        The control protocol adds C{"control"}, its own counters
        (L{ControlFactory.counters}).
        """
        now = self.clock.seconds()
        server = self.config.server
        duid = self._server.serverDuid
        started = self._server.started
        protocol = self._server.protocol
        port = self._server.port
        counters: dict[str, int] = dict(protocol.counters) if protocol is not None else {}
        boundPort = server.port
        if port is not None:
            try:
                boundPort = int(port.getHost().port)
            except Exception:
                pass
        result: dict[str, object] = {
            "version": __version__,
            "now": now,
            "server": {
                "duid": None if duid is None else duidToText(duid),
                "duid_description": None if duid is None else describeDuid(duid),
                "started": started,
                "uptime": None if started is None else max(0.0, now - started),
                "address": str(server.address),
                "port": boundPort,
                "interfaces": list(server.interfaces),
                "serving": bool(protocol is not None and protocol.serving),
                "config": self.config.path,
                "database": server.database,
            },
            "datagrams": {
                "received": counters.get("received", 0),
                "sent": counters.get("sent", 0),
                "dropped": sum(counters.get(name, 0) for name in DROPPED_COUNTERS),
            },
            "counters": counters,
            "response_time": None if protocol is None else protocol.responseTime.summary(),
            "response_time_histogram": (
                None if protocol is None else protocol.responseTime.snapshot()
            ),
            "queue_wait": None if protocol is None else protocol.queueWait.summary(),
            "queue_wait_histogram": None if protocol is None else protocol.queueWait.snapshot(),
        }
        store = self._leases.store
        if store is None:
            result["leases"] = None
            result["leases_error"] = "the lease database is not open"
        else:
            try:
                result["leases"] = dict(store.count())
            except Exception as e:
                self.log.failure("Counting leases for a status request failed")
                result["leases"] = None
                result["leases_error"] = f"counting leases failed: {e}"
        relationships: list[dict[str, object]] = []
        for name in sorted(self._relationships):
            try:
                relationships.append(self._relationships[name].status().asDict())
            except Exception as e:
                self.log.failure("Status of relationship {relationship} failed", relationship=name)
                relationships.append({"name": name, "error": f"status failed: {e}"})
        result["relationships"] = relationships
        return result

    def leases(
        self,
        address: IPv6Address | None,
        prefix: IPv6Network | None,
        duid: bytes | None,
        limit: int,
        states: Collection[BindingState] | None = None,
    ) -> Deferred[list[Lease]]:
        store = self._leases.store
        if store is None:
            return fail(ControlError("the lease database is not open (the server is stopping?)"))
        wanted = None if states is None else frozenset(states)
        if address is not None or prefix is not None:
            if address is not None:
                lease = store.get(address, 128)
            else:
                assert prefix is not None
                lease = store.get(prefix.network_address, prefix.prefixlen)
            if lease is None or (wanted is not None and lease.state not in wanted):
                return succeed([])
            return succeed([lease])
        return Deferred.fromCoroutine(self._scan(store, duid, limit, wanted))

    async def _scan(
        self,
        store: ILeaseStore,
        duid: bytes | None,
        limit: int,
        states: frozenset[BindingState] | None,
    ) -> list[Lease]:
        found: list[Lease] = []
        read = 0
        for lease in store.iterLeases(self._scanBatch):
            if (duid is None or lease.duid == duid) and (states is None or lease.state in states):
                found.append(lease)
                if len(found) >= limit:
                    break
            read += 1
            if read % self._scanBatch == 0:
                # Give the reactor a turn: a scan never holds it for long.
                await deferLater(self.clock, 0, lambda: None)
                if self._leases.store is not store:
                    raise ControlError("the lease database was closed during the search")
        return found

    def partnerDown(self, relationship: str) -> Deferred[object]:
        return maybeDeferred(lambda: self._relationship(relationship).partnerDown())

    def sync(self, relationship: str) -> Deferred[object]:
        return maybeDeferred(lambda: self._relationship(relationship).sync())


# --- the protocol ---------------------------------------------------------------------


@frozen
class PeerCredentials:
    """Who is at the other end of a UNIX socket (C{SO_PEERCRED})."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} pid {self.pid}"


def peerCredentials(transport: ITransport) -> PeerCredentials | None:
    """
    The credentials of the process at the other end of a UNIX socket
    transport, or C{None} when they cannot be known (not Linux, not a
    socket, a test transport).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    getHandle = getattr(transport, "getHandle", None)
    if option is None or getHandle is None:
        return None
    try:
        handle = getHandle()
        raw = handle.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("iII"))
        pid, uid, gid = struct.unpack("iII", raw)
    except (OSError, AttributeError, struct.error):
        return None
    return PeerCredentials(pid, uid, gid)


def _jsonLine(response: Mapping[str, object]) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode("ascii")


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _BadRequest("bad-arguments", f"{name!r} must be a string, got {_kind(value)}")
    return value


def _states(value: object) -> frozenset[BindingState] | None:
    """
    The C{state} argument of C{leases}: a state name or a list of them
    (C{None}: every state).
    """
    if value is None:
        return None
    names = value if isinstance(value, list) else [value]
    if not names:
        raise _BadRequest("bad-arguments", "'state' must name at least one binding state")
    known = ", ".join(state.value for state in BindingState)
    states: set[BindingState] = set()
    for name in names:
        text = _text(name, "state")
        try:
            states.add(BindingState(text))
        except ValueError:
            raise _BadRequest(
                "bad-arguments", f"unknown binding state {text!r} (the states: {known})"
            ) from None
    return frozenset(states)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class ControlProtocol(LineReceiver, TimeoutMixin):
    """
    One control connection.  Requests are handled one at a time: while one
    waits (a scan, a partner-down), reading stops, so responses come back in
    order.

    @ivar peer: the peer's credentials, if known.
    """

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST_LENGTH

    def __init__(self, factory: ControlFactory) -> None:
        self.factory = factory
        self.peer: PeerCredentials | None = None
        self._current: Deferred[object] | None = None
        self._cancellable = False
        self._closed = False

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        """L{TimeoutMixin}'s timer, on the factory's clock."""
        return self.factory.clock.callLater(period, func)

    # --- connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        factory.counters["connections"] += 1
        self.peer = factory.credentials(self.transport)
        if self.peer is not None and self.peer.uid not in factory.allowedUids:
            factory.counters["refused-peer"] += 1
            self.log.warn(
                "Control connection from {peer} refused: only uids {uids} may connect",
                peer=str(self.peer),
                uids=", ".join(str(u) for u in sorted(factory.allowedUids)),
            )
            self._error("permission denied: this control socket is for the server's user only")
            self._close()
            return
        if len(factory.connections) >= factory.maxConnections:
            factory.counters["too-many-connections"] += 1
            self._error(f"too many control connections (at most {factory.maxConnections})")
            self._close()
            return
        factory.connections.add(self)
        _setTimeout(self, factory.idleTimeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        _setTimeout(self, None)
        self.factory.connectionClosed(self)
        current, self._current = self._current, None
        if current is not None and self._cancellable:
            current.cancel()

    def timeoutConnection(self) -> None:
        self.factory.counters["idle-timeout"] += 1
        self._close()

    # --- requests -----------------------------------------------------------------

    def lineLengthExceeded(self, line: bytes) -> None:
        self.factory.counters["requests"] += 1
        self._count("too-long")
        self._error(f"request longer than {self.MAX_LENGTH} bytes: closing the connection")
        self._close()

    def lineReceived(self, line: bytes) -> None:
        if self._closed:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        self.factory.counters["requests"] += 1
        _resetTimeout(self)
        try:
            request = self._parse(line)
        except _BadRequest as e:
            self._count(e.counter)
            self._error(str(e), e.ident)
            return
        command = request["command"]
        assert isinstance(command, str)
        ident = request.get("id")
        _setTimeout(self, None)
        d = Deferred.fromCoroutine(self._run(command, request))
        d.addCallback(self._respond, ident, command)
        d.addErrback(self._failed, ident, command)
        d.addBoth(self._done)
        if not d.called:
            self._current = d
            self._cancellable = command == "leases"
            _pauseProducing(self)

    def _parse(self, line: bytes) -> dict[str, object]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest("not-utf8", "request is not UTF-8 text") from None
        try:
            request = json.loads(text)
        except (ValueError, RecursionError) as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise _BadRequest("not-json", f"request is not JSON: {reason}") from None
        if not isinstance(request, dict):
            raise _BadRequest(
                "not-object",
                f'a request is a JSON object like {{"command": "status"}}, got {_kind(request)}',
            )
        ident = request.get("id")
        command = request.get("command")
        if command is None:
            raise _BadRequest("bad-arguments", "request has no 'command'", ident)
        if not isinstance(command, str):
            raise _BadRequest(
                "bad-arguments", f"'command' must be a string, got {_kind(command)}", ident
            )
        allowed = COMMANDS.get(command)
        if allowed is None:
            raise _BadRequest(
                "unknown-command",
                f"unknown command {command!r}; the commands are: " + ", ".join(COMMANDS),
                ident,
            )
        for key in request:
            if key not in allowed and key not in ("command", "id"):
                expected = ", ".join(allowed) if allowed else "none"
                raise _BadRequest(
                    "bad-arguments",
                    f"unknown argument {key!r} for {command} (its arguments: {expected})",
                    ident,
                )
        return request

    async def _run(self, command: str, request: Mapping[str, object]) -> object:
        target = self.factory.target
        if command == "status":
            status = target.status()
            status["control"] = dict(self.factory.counters)
            return status
        if command == "leases":
            address, prefix, duid, limit, states = self._leaseArguments(request)
            found = await target.leases(address, prefix, duid, limit + 1, states)
            return {
                "now": self.factory.clock.seconds(),
                "leases": [leaseToJSON(lease) for lease in found[:limit]],
                "truncated": len(found) > limit,
            }
        relationship = request.get("relationship")
        if relationship is None:
            raise _BadRequest("bad-arguments", f"{command} needs 'relationship' (its name)")
        name = _text(relationship, "relationship")
        self.log.info(
            "Operator command {command} for relationship {relationship} from {peer}",
            command=command,
            relationship=name,
            peer=str(self.peer) if self.peer is not None else "an unknown peer",
        )
        try:
            if command == "partner-down":
                outcome = await target.partnerDown(name)
            else:
                outcome = await target.sync(name)
        except ControlError as e:
            self.log.warn(
                "Operator command {command} for relationship {relationship} refused: {error}",
                command=command,
                relationship=name,
                error=str(e),
            )
            raise
        self.log.info(
            "Operator command {command} for relationship {relationship}: {outcome}",
            command=command,
            relationship=name,
            outcome=outcome,
        )
        return outcome

    def _leaseArguments(
        self, request: Mapping[str, object]
    ) -> tuple[
        IPv6Address | None, IPv6Network | None, bytes | None, int, frozenset[BindingState] | None
    ]:
        given = [key for key in ("address", "prefix", "duid") if request.get(key) is not None]
        if len(given) > 1:
            raise _BadRequest(
                "bad-arguments",
                "give at most one of address, prefix and duid, not " + " and ".join(given),
            )
        address = prefix = duid = None
        value = request.get("address")
        if value is not None:
            text = _text(value, "address")
            try:
                address = IPv6Address(text)
            except ValueError:
                raise _BadRequest(
                    "bad-arguments", f"expected an IPv6 address like 2001:db8::1, got {text!r}"
                ) from None
        value = request.get("prefix")
        if value is not None:
            text = _text(value, "prefix")
            try:
                prefix = IPv6Network(text, strict=True)
            except ValueError as e:
                raise _BadRequest(
                    "bad-arguments",
                    f"expected an IPv6 prefix like 2001:db8:100::/56, got {text!r} ({e})",
                ) from None
        value = request.get("duid")
        if value is not None:
            text = _text(value, "duid")
            try:
                duid = duidFromText(text)
            except ValueError as e:
                raise _BadRequest("bad-arguments", f"bad DUID {text!r}: {e}") from None
        value = request.get("limit", DEFAULT_LEASE_LIMIT)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= self.factory.maxLeaseLimit
        ):
            raise _BadRequest(
                "bad-arguments",
                f"'limit' must be a whole number from 1 to {self.factory.maxLeaseLimit},"
                f" got {json.dumps(value)}",
            )
        return address, prefix, duid, value, _states(request.get("state"))

    # --- responses ------------------------------------------------------------

    def _respond(self, result: object, ident: object, command: str) -> None:
        response: dict[str, object] = {"ok": True, "result": result}
        if ident is not None:
            response["id"] = ident
        try:
            line = _jsonLine(response)
        except (TypeError, ValueError) as e:
            self._count("internal-error")
            self.log.error(
                "The result of {command} cannot be sent as JSON: {error}",
                command=command,
                error=str(e),
            )
            self._error(f"internal error: the result of {command} is not JSON ({e})", ident)
            return
        self.factory.counters["ok"] += 1
        self._send(line)

    def _failed(self, failure: Failure, ident: object, command: str) -> None:
        if isinstance(failure.value, _BadRequest):
            self._count(failure.value.counter)
            self._error(str(failure.value), ident)
        elif isinstance(failure.value, ControlError):
            self._count("failed")
            self._error(str(failure.value), ident)
        elif isinstance(failure.value, CancelledError) and self._closed:
            self._count("cancelled")
        else:
            self._count("internal-error")
            self.log.failure("Control command {command} failed", failure, command=command)
            self._error(f"internal error in {command}: {failure.getErrorMessage()}", ident)

    def _done(self, _: object) -> None:
        self._current = None
        if self._closed:
            return
        _setTimeout(self, self.factory.idleTimeout)
        if self.paused and not getattr(self.transport, "disconnecting", True):
            _resumeProducing(self)

    def _count(self, kind: str) -> None:
        self.factory.counters["errors"] += 1
        self.factory.counters[kind] += 1

    def _error(self, message: str, ident: object = None) -> None:
        response: dict[str, object] = {"ok": False, "error": message}
        if ident is not None:
            response["id"] = ident
        self._send(_jsonLine(response))

    def _send(self, line: bytes) -> None:
        if not self._closed:
            _sendLine(self, line)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Close the connection now, dropping whatever is not sent yet."""
        if self.transport is None or self._closed:
            return
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()


class ControlFactory(Factory):
    """
    Builds L{ControlProtocol}s for one control socket.

    @ivar counters: C{connections}, C{requests}, C{ok}, C{errors} and one
        counter per kind of error: C{too-long}, C{not-utf8}, C{not-json},
        C{not-object}, C{unknown-command}, C{bad-arguments}, C{failed} (the
        command refused, L{ControlError}), C{internal-error},
        C{cancelled}, C{refused-peer}, C{too-many-connections}; and
        C{idle-timeout}.
    @ivar connections: the open connections.
    """

    noisy = False

    def __init__(
        self,
        target: IControlTarget,
        clock: IReactorTime,
        *,
        credentials: Callable[[ITransport], PeerCredentials | None] = peerCredentials,
        allowedUids: Iterable[int] | None = None,
        idleTimeout: float = IDLE_TIMEOUT,
        maxConnections: int = MAX_CONNECTIONS,
        maxLeaseLimit: int = MAX_LEASE_LIMIT,
    ) -> None:
        """
        @param credentials: finds who is connecting (C{SO_PEERCRED}).
        @param allowedUids: who may connect, when C{credentials} can tell;
            default: root and this process's effective uid.  Besides the
            socket's mode, this shuts out anyone who connected in the
            moment between the socket's creation and its C{chmod}.
        """
        self.target = target
        self.clock = clock
        self.credentials = credentials
        self.allowedUids = frozenset(allowedUids if allowedUids is not None else {0, os.geteuid()})
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxLeaseLimit = maxLeaseLimit
        self.counters: Counter[str] = Counter()
        self.connections: set[ControlProtocol] = set()
        self._whenEmpty: list[Deferred[None]] = []

    def buildProtocol(self, addr: object) -> ControlProtocol:
        return ControlProtocol(self)

    def connectionClosed(self, protocol: ControlProtocol) -> None:
        """C{protocol}'s connection is gone."""
        self.connections.discard(protocol)
        if not self.connections:
            waiting, self._whenEmpty = self._whenEmpty, []
            for d in waiting:
                d.callback(None)

    def disconnectAll(self) -> Deferred[None]:
        """
        Close every open connection at once (the service is stopping).

        @return: fires when every connection is closed.
        """
        for protocol in list(self.connections):
            protocol.abort()
        d: Deferred[None] = Deferred()
        if self.connections:
            self._whenEmpty.append(d)
        else:
            d.callback(None)
        return d


# --- the socket -----------------------------------------------------------------------


def removeStaleSocket(path: str) -> bool:
    """
    Make room for a control socket at C{path}: remove a socket file that
    nothing listens on any more (left by a server that was killed).

    @return: whether a stale socket was removed.
    @raise OSError: with a message for the operator, when C{path} is
        something else than a socket, or a live process listens on it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise OSError(
            f"{path} exists and is not a socket: not replacing it (remove it, or set another"
            " control-socket)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.remove(path)
        return True
    except OSError as e:
        raise OSError(f"cannot tell whether {path} is in use: {e.strerror or e}") from None
    finally:
        probe.close()
    raise OSError(f"another process already listens on {path} (is another dhcp6ha running?)")


def listenControl(reactor: Any, path: str, factory: ControlFactory) -> IListeningPort:
    """Listen on the UNIX socket C{path}, mode 0600 (owner only)."""
    port: IListeningPort = reactor.listenUNIX(path, factory, backlog=16, mode=SOCKET_MODE)
    return port


class ControlService(Service):
    """
    The control socket: created (mode 0600, a stale one removed) on start;
    on stop, it stops listening, removes the socket file and closes every
    control connection.

    A command in progress (a partner-down) goes on after its connection
    is closed; its outcome is logged.

    Twisted's C{wantPID} lock file is not used: it takes a live process
    with the dead server's PID (PID 1 in a container, every time) for the
    owner and would refuse to start; connecting to the old socket answers
    the question exactly.

    @ivar factory: the L{ControlFactory} while running.
    @ivar port: the listening port while running.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        target: IControlTarget,
        reactor: Any,
        *,
        listen: Callable[[Any, str, ControlFactory], IListeningPort] = listenControl,
        prepare: Callable[[str], bool] = removeStaleSocket,
        factoryOptions: Mapping[str, Any] | None = None,
    ) -> None:
        """
        @param path: the socket's path.
        @param reactor: provides C{listenUNIX} (for the default C{listen})
            and the clock.
        @param listen: binds the socket: C{listen(reactor, path, factory)}.
        @param prepare: makes room at C{path} (L{removeStaleSocket}).
        @param factoryOptions: keyword arguments for L{ControlFactory}.
        """
        self.path = path
        self.target = target
        self.reactor = reactor
        self._listen = listen
        self._prepare = prepare
        self._factoryOptions = dict(factoryOptions or {})
        self.factory: ControlFactory | None = None
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        from dhcp6ha.service import StartupError

        try:
            if self._prepare(self.path):
                self.log.info("Removed a stale control socket {path}", path=self.path)
        except OSError as e:
            raise StartupError(f"control socket: {e}") from e
        factory = ControlFactory(self.target, self.reactor, **self._factoryOptions)
        try:
            port = self._listen(self.reactor, self.path, factory)
        except Exception as e:
            reason: object = e
            if isinstance(e, CannotListenError):
                reason = e.socketError
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise StartupError(f"cannot listen on the control socket {self.path}: {reason}") from e
        self.factory = factory
        self.port = port
        serviceStart(self)
        self.log.info("Control socket {path} ready (mode 0600)", path=self.path)

    def stopService(self) -> Deferred[None]:
        serviceStop(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        port, self.port = self.port, None
        factory, self.factory = self.factory, None
        if port is not None:
            await maybeDeferred(port.stopListening)
        if factory is not None:
            await factory.disconnectAll()
        self.log.info("Control socket {path} closed", path=self.path)
