# -*- test-case-name: tests.test_chaos_history -*-
"""
The record of one chaos run, and its JSON-lines form.

A history is a sequence of events, each a frozen attrs value holding only
data (numbers, text, C{bytes}, addresses): nothing refers to a live object,
so a history written by one process is read back equal by another, and the
checker (L{dhcp6ha.chaos.checker}) needs nothing but a history.

Events:

  - L{RunHeader}: first, once.  The seed and every parameter of the run (so
    that the same seed and parameters replay the same fault schedule), the
    servers (name, DUID), the MCLT and lifetime limits the checker needs.
  - L{ClientSent}: one transmission of a client message (retransmissions
    are separate events with the same transaction id and a higher
    C{attempt}).
  - L{ClientReceived}: one Advertise or Reply received by a simulated
    client, whether or not the client acted on it (C{accepted}).
  - L{FaultEvent}: one fault the scheduler injected (kind, target, start
    and end).
  - L{ServerStateObserved}: the failover state a server reported when the
    harness polled it.
  - L{DatabaseDump}: every binding of one server's database, as read after
    the run.
  - L{Note}: free text from the harness, for the report.

Times are C{clock.seconds()} of the recording process (for the harness, the
wall clock of the machine both servers run on).

The history is append-only: a fault is recorded once its end is known (when
it is healed; instantaneous ones, such as the partner-down command, at
once; one never healed at the end of the run with C{end=None}).  Events of
equal time are read in the order recorded, so a client records what it
received before what it sends in answer.

Replay: the header holds the seed and every parameter (and the command
line) from which the fault scheduler derives its schedule and the clients
their identities and choices; running the same command again replays the
same schedule.  The report (L{dhcp6ha.chaos.checker.formatReport}) prints
them first.

The JSON-lines form has one JSON object per line, with a C{"type"} key
(C{"header"}, C{"sent"}, C{"received"}, C{"fault"}, C{"state"}, C{"dump"},
C{"note"}) and one key per field; C{bytes} are written as hex, addresses as
text.  L{loads} refuses anything else with L{HistoryFormatError}, naming the
line.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterable, Sequence
from ipaddress import IPv6Address
from typing import IO, Any, TypeAlias, Union, get_args, get_origin

import attrs
from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from dhcp6ha.leases.lease import Lease
from dhcp6ha.message import (
    IANA,
    IAPD,
    IATA,
    ClientId,
    IAAddress,
    IAPrefix,
    Message,
    MessageType,
    Option,
    RapidCommit,
    ServerId,
    StatusCodeOption,
)

__all__ = [
    "FAULT_CLOCK_JUMP",
    "FAULT_KILL",
    "FAULT_LOSE_DATABASE",
    "FAULT_PARTITION",
    "FAULT_PARTNER_DOWN",
    "FAULT_STOP",
    "NA",
    "PD",
    "TA",
    "BindingRecord",
    "ClientReceived",
    "ClientSent",
    "DatabaseDump",
    "Event",
    "FaultEvent",
    "HistoryFormatError",
    "HistoryRecorder",
    "IAEntry",
    "LeaseEntry",
    "Note",
    "RunHeader",
    "ServerInfo",
    "ServerStateObserved",
    "bindingRecord",
    "dumpEvent",
    "dumps",
    "eventTime",
    "iaEntries",
    "loads",
    "messageTypeName",
    "parseEvent",
    "readHistory",
    "receivedEvent",
    "sentEvent",
    "sortedByTime",
    "writeHistory",
]

NA = "na"
"""IA kind of an IA_NA (addresses)."""
PD = "pd"
"""IA kind of an IA_PD (delegated prefixes)."""
TA = "ta"
"""IA kind of an IA_TA (temporary addresses)."""

FAULT_KILL = "kill"
"""C{kill -9} of the target server; C{end}: when it was started again."""
FAULT_STOP = "stop"
"""Clean stop of the target server; C{end}: when it was started again."""
FAULT_LOSE_DATABASE = "lose-database"
"""
The target server was killed and its database (and update queue) deleted
before it was started again at C{end}.
"""
FAULT_PARTITION = "partition"
"""
Traffic cut between the two ends named by the target (e.g.
C{"primary/secondary"}, C{"clients/primary"}) from C{start} to C{end}.
"""
FAULT_PARTNER_DOWN = "partner-down"
"""The operator's partner-down command given to the target server at C{start}."""
FAULT_CLOCK_JUMP = "clock-jump"
"""The target server's clock was moved (C{detail} says by how much)."""


class HistoryFormatError(ValueError):
    """A history line that is not a valid event; the message names the line."""


# --- the events ---------------------------------------------------------------


@frozen
class LeaseEntry:
    """
    One IA Address (IA_NA, IA_TA) or IA Prefix (IA_PD) option.

    @ivar prefix_length: 128 for an address.
    @ivar status: the status code inside the option, if it carried one.
    """

    address: IPv6Address
    prefix_length: int
    preferred: int
    valid: int
    status: int | None = None

    @property
    def key(self) -> tuple[IPv6Address, int]:
        """The lease as the stores key it: (address, prefix length)."""
        return (self.address, self.prefix_length)


@frozen
class IAEntry:
    """
    One IA option (IA_NA, IA_TA or IA_PD) of a message.

    @ivar kind: L{NA}, L{TA} or L{PD}.
    @ivar status: the status code directly inside the IA, if any.
    @ivar leases: its IA Address or IA Prefix options, in order.
    """

    kind: str
    iaid: int
    t1: int = 0
    t2: int = 0
    status: int | None = None
    leases: tuple[LeaseEntry, ...] = ()


@frozen
class ServerInfo:
    """
    One server of the run.

    @ivar name: the name fault targets use (C{"primary"}, C{"secondary"}).
    @ivar duid: its server DUID (what Replies carry).
    @ivar address: where clients or the relay reach it, for the report.
    """

    name: str
    duid: bytes
    address: str = ""


@frozen
class RunHeader:
    """
    What a run was: enough to replay its schedule and to check it.

    @ivar seed: the seed of the fault schedule and of the clients.
    @ivar started: C{clock.seconds()} at the start of the run.
    @ivar mclt: the relationship's MCLT (C{None}: no failover).
    @ivar max_valid_lifetime: the longest valid lifetime any subnet of the
        configuration gives (addresses and prefixes), if known.
    @ivar servers: the servers of the run.
    @ivar fresh_databases: both servers started the run with no bindings.
    @ivar auto_partner_down: the servers may enter PARTNER-DOWN by
        themselves (a timer), not only by the operator's command.
    @ivar parameters: every other parameter, as text, for the report and
        for replay.
    @ivar command: the command line that replays this run.
    """

    seed: int
    started: float
    mclt: float | None = None
    max_valid_lifetime: int | None = None
    servers: tuple[ServerInfo, ...] = ()
    fresh_databases: bool = True
    auto_partner_down: bool = False
    parameters: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()

    def serverNamed(self, name: str) -> ServerInfo | None:
        """The server whose name (or DUID as hex) is C{name}, if any."""
        for server in self.servers:
            if server.name == name or server.duid.hex() == name:
                return server
        return None


@frozen
class ClientSent:
    """
    One transmission of a client message.

    @ivar client: the client's DUID.
    @ivar msg_type: the message type's name (C{"SOLICIT"}, C{"RENEW"}, ...).
    @ivar xid: the transaction id.
    @ivar attempt: 0 for the first transmission, then 1, 2, ...
    @ivar server: the Server Identifier the message carried, if any.
    @ivar ias: its IA options, with the leases the client listed.
    @ivar rapid_commit: it carried the Rapid Commit option.
    @ivar destination: where it went, for the report.
    """

    time: float
    client: bytes
    msg_type: str
    xid: int
    attempt: int = 0
    server: bytes | None = None
    ias: tuple[IAEntry, ...] = ()
    rapid_commit: bool = False
    destination: str = ""


@frozen
class ClientReceived:
    """
    One Advertise or Reply received by a client.

    @ivar client: the client's DUID (the Client Identifier it carried).
    @ivar server: the Server Identifier it carried (the sender).
    @ivar status: its top-level status code, if any.
    @ivar ias: its IA options.
    @ivar accepted: the client acted on it (C{False}: it came late, or
        after another answer to the same transaction).
    @ivar source: where it came from, for the report.
    """

    time: float
    client: bytes
    msg_type: str
    xid: int
    server: bytes | None
    status: int | None = None
    ias: tuple[IAEntry, ...] = ()
    rapid_commit: bool = False
    accepted: bool = True
    source: str = ""


@frozen
class FaultEvent:
    """
    One injected fault (kinds: the C{FAULT_*} constants).

    @ivar target: the server name, or the two ends of a partition.
    @ivar end: when it was healed, or C{None} (instantaneous, or never).
    """

    kind: str
    target: str
    start: float
    end: float | None = None
    detail: str = ""


@frozen
class ServerStateObserved:
    """The failover state a server reported at C{time} (C{"NORMAL"}, ...)."""

    time: float
    server: bytes
    state: str


@frozen
class BindingRecord:
    """
    One binding of a database dump: only the fields the checker reads.

    @ivar lease_type: L{NA}, L{TA} or L{PD}.
    @ivar state: the binding state's name as the store writes it
        (C{"active"}, C{"expired"}, ...).
    @ivar partner_lifetime_acked: the acked partner lifetime, C{None} when
        the dump does not carry it.
    """

    lease_type: str
    address: IPv6Address
    prefix_length: int
    state: str
    duid: bytes
    iaid: int
    expires: float
    cltt: float
    partner_lifetime_acked: float | None = None

    @property
    def key(self) -> tuple[IPv6Address, int]:
        return (self.address, self.prefix_length)


@frozen
class DatabaseDump:
    """Every binding of one server (C{server}: its DUID) read at C{time}."""

    time: float
    server: bytes
    bindings: tuple[BindingRecord, ...] = ()
    name: str = ""


@frozen
class Note:
    """Free text from the harness."""

    time: float
    text: str


Event: TypeAlias = (
    RunHeader | ClientSent | ClientReceived | FaultEvent | ServerStateObserved | DatabaseDump | Note
)

_TAGS: dict[str, type[Any]] = {
    "header": RunHeader,
    "sent": ClientSent,
    "received": ClientReceived,
    "fault": FaultEvent,
    "state": ServerStateObserved,
    "dump": DatabaseDump,
    "note": Note,
}
_TAG_OF: dict[type[Any], str] = {cls: tag for tag, cls in _TAGS.items()}


def eventTime(event: Event) -> float:
    """When an event happened (a header: the run's start; a fault: its start)."""
    if isinstance(event, RunHeader):
        return event.started
    if isinstance(event, FaultEvent):
        return event.start
    return event.time


# --- events from messages and leases ----------------------------------------


def messageTypeName(msg_type: int) -> str:
    """The name of a message type (C{"REPLY"}), or its number as text."""
    try:
        return MessageType(msg_type).name
    except ValueError:
        return str(int(msg_type))


def _status(options: Iterable[Option]) -> int | None:
    for option in options:
        if isinstance(option, StatusCodeOption):
            return int(option.code)
    return None


def _leases(options: Iterable[Option]) -> tuple[LeaseEntry, ...]:
    out: list[LeaseEntry] = []
    for option in options:
        if isinstance(option, IAAddress):
            out.append(
                LeaseEntry(
                    option.address,
                    128,
                    option.preferred_lifetime,
                    option.valid_lifetime,
                    _status(option.options),
                )
            )
        elif isinstance(option, IAPrefix):
            out.append(
                LeaseEntry(
                    option.prefix,
                    option.prefix_length,
                    option.preferred_lifetime,
                    option.valid_lifetime,
                    _status(option.options),
                )
            )
    return tuple(out)


def iaEntries(options: Iterable[Option]) -> tuple[IAEntry, ...]:
    """The IA options among C{options}, as history entries."""
    out: list[IAEntry] = []
    for option in options:
        if isinstance(option, IANA):
            out.append(
                IAEntry(
                    NA,
                    option.iaid,
                    option.t1,
                    option.t2,
                    _status(option.options),
                    _leases(option.options),
                )
            )
        elif isinstance(option, IAPD):
            out.append(
                IAEntry(
                    PD,
                    option.iaid,
                    option.t1,
                    option.t2,
                    _status(option.options),
                    _leases(option.options),
                )
            )
        elif isinstance(option, IATA):
            out.append(
                IAEntry(TA, option.iaid, 0, 0, _status(option.options), _leases(option.options))
            )
    return tuple(out)


def _duid(options: Iterable[Option], cls: type[ClientId] | type[ServerId]) -> bytes | None:
    for option in options:
        if isinstance(option, cls):
            return option.duid
    return None


def sentEvent(time: float, message: Message, attempt: int = 0, destination: str = "") -> ClientSent:
    """
    The event for one transmission of a client message.

    @raise ValueError: if the message has no Client Identifier.
    """
    client = _duid(message.options, ClientId)
    if client is None:
        raise ValueError("a client message without a Client Identifier")
    return ClientSent(
        time=time,
        client=client,
        msg_type=messageTypeName(message.msg_type),
        xid=message.transaction_id,
        attempt=attempt,
        server=_duid(message.options, ServerId),
        ias=iaEntries(message.options),
        rapid_commit=any(isinstance(o, RapidCommit) for o in message.options),
        destination=destination,
    )


def receivedEvent(
    time: float, message: Message, accepted: bool = True, source: str = ""
) -> ClientReceived:
    """
    The event for one server message received by a client.

    @raise ValueError: if the message has no Client Identifier.
    """
    client = _duid(message.options, ClientId)
    if client is None:
        raise ValueError("a server message without a Client Identifier")
    return ClientReceived(
        time=time,
        client=client,
        msg_type=messageTypeName(message.msg_type),
        xid=message.transaction_id,
        server=_duid(message.options, ServerId),
        status=_status(message.options),
        ias=iaEntries(message.options),
        rapid_commit=any(isinstance(o, RapidCommit) for o in message.options),
        accepted=accepted,
        source=source,
    )


def bindingRecord(lease: Lease) -> BindingRecord:
    """A store's binding as a dump record."""
    return BindingRecord(
        lease_type=lease.lease_type.value,
        address=lease.address,
        prefix_length=lease.prefix_length,
        state=lease.state.value,
        duid=lease.duid,
        iaid=lease.iaid,
        expires=lease.expires,
        cltt=lease.cltt,
        partner_lifetime_acked=lease.partner_lifetime_acked,
    )


# --- JSON lines -----------------------------------------------------------------

_resolved: set[type[Any]] = set()


def _fields(cls: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    if cls not in _resolved:
        attrs.resolve_types(cls, globals())
        _resolved.add(cls)
    return tuple(attrs.fields(cls))


def _isUnion(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _encode(value: Any, tp: Any) -> Any:
    if _isUnion(tp):
        if value is None:
            return None
        (inner,) = [t for t in get_args(tp) if t is not type(None)]
        return _encode(value, inner)
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return [_encode(v, args[0]) for v in value]
        return [_encode(v, t) for v, t in zip(value, args, strict=True)]
    if tp is bytes:
        return bytes(value).hex()
    if tp is IPv6Address:
        return str(value)
    if attrs.has(tp):
        return {f.name: _encode(getattr(value, f.name), f.type) for f in _fields(tp)}
    if tp is float:
        return float(value)
    return value


def _decode(obj: Any, tp: Any, where: str) -> Any:
    if _isUnion(tp):
        if obj is None:
            return None
        (inner,) = [t for t in get_args(tp) if t is not type(None)]
        return _decode(obj, inner, where)
    if get_origin(tp) is tuple:
        if not isinstance(obj, list):
            raise HistoryFormatError(f"{where}: expected a list, got {obj!r:.60}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(obj))
        if len(obj) != len(args):
            raise HistoryFormatError(f"{where}: expected {len(args)} items, got {len(obj)}")
        return tuple(
            _decode(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(obj, args, strict=True))
        )
    if tp is bytes:
        if not isinstance(obj, str):
            raise HistoryFormatError(f"{where}: expected hex text, got {obj!r:.60}")
        try:
            return bytes.fromhex(obj)
        except ValueError:
            raise HistoryFormatError(f"{where}: not hex: {obj!r:.60}") from None
    if tp is IPv6Address:
        if not isinstance(obj, str):
            raise HistoryFormatError(f"{where}: expected an IPv6 address, got {obj!r:.60}")
        try:
            return IPv6Address(obj)
        except ValueError:
            raise HistoryFormatError(f"{where}: not an IPv6 address: {obj!r:.60}") from None
    if attrs.has(tp):
        return _decodeObject(obj, tp, where)
    if tp is bool:
        if not isinstance(obj, bool):
            raise HistoryFormatError(f"{where}: expected true or false, got {obj!r:.60}")
        return obj
    if tp is int:
        if not isinstance(obj, int) or isinstance(obj, bool):
            raise HistoryFormatError(f"{where}: expected an integer, got {obj!r:.60}")
        return obj
    if tp is float:
        if not isinstance(obj, int | float) or isinstance(obj, bool):
            raise HistoryFormatError(f"{where}: expected a number, got {obj!r:.60}")
        return float(obj)
    if tp is str:
        if not isinstance(obj, str):
            raise HistoryFormatError(f"{where}: expected text, got {obj!r:.60}")
        return obj
    raise TypeError(f"no JSON form for {tp!r}")  # pragma: no cover - a programming error


def _decodeObject(obj: Any, cls: type[Any], where: str, skip: str | None = None) -> Any:
    if not isinstance(obj, dict):
        raise HistoryFormatError(f"{where}: expected an object, got {obj!r:.60}")
    fields = _fields(cls)
    names = {f.name for f in fields}
    unknown = set(obj) - names - ({skip} if skip else set())
    if unknown:
        raise HistoryFormatError(f"{where}: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in fields:
        if f.name in obj:
            values[f.name] = _decode(obj[f.name], f.type, f"{where}.{f.name}")
        elif f.default is attrs.NOTHING:
            raise HistoryFormatError(f"{where}: missing key {f.name!r}")
    return cls(**values)


def dumpEvent(event: Event) -> str:
    """One event as one line of JSON (no newline)."""
    tag = _TAG_OF.get(type(event))
    if tag is None:
        raise TypeError(f"not a history event: {event!r:.80}")
    obj = {"type": tag}
    obj.update(_encode(event, type(event)))
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def parseEvent(line: str, where: str = "event") -> Event:
    """
    One line of JSON as an event.

    @raise HistoryFormatError: if it is not one.
    """
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise HistoryFormatError(f"{where}: not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise HistoryFormatError(f"{where}: not a JSON object")
    tag = obj.get("type")
    cls = _TAGS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise HistoryFormatError(f"{where}: unknown event type {tag!r:.40}")
    event: Event = _decodeObject(obj, cls, f"{where} ({tag})", skip="type")
    return event


def writeHistory(events: Iterable[Event], out: IO[str]) -> None:
    """Write events to a text file, one line each."""
    for event in events:
        out.write(dumpEvent(event))
        out.write("\n")


def readHistory(lines: Iterable[str]) -> list[Event]:
    """
    Read events written by L{writeHistory} (blank lines are skipped).

    @raise HistoryFormatError: naming the first bad line.
    """
    events: list[Event] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            events.append(parseEvent(line, f"line {number}"))
    return events


def dumps(events: Iterable[Event]) -> str:
    """Events as JSON-lines text."""
    return "".join(dumpEvent(event) + "\n" for event in events)


def loads(text: str) -> list[Event]:
    """JSON-lines text as events (L{readHistory})."""
    return readHistory(text.splitlines())


# --- recording -------------------------------------------------------------------


class HistoryRecorder:
    """
    Collects the events of a run, in the order they happen, and optionally
    writes each one to a file as it is recorded.

    @ivar events: every event recorded, in order.
    """

    def __init__(self, clock: IReactorTime, out: IO[str] | None = None) -> None:
        """
        @param clock: gives the time of events (C{clock.seconds()}).
        @param out: a text file each event is also written to, one line
            each.
        """
        self.clock = clock
        self.out = out
        self.events: list[Event] = []

    def now(self) -> float:
        """The time, for a new event."""
        return self.clock.seconds()

    def record(self, event: Event) -> None:
        """Add an event."""
        self.events.append(event)
        if self.out is not None:
            self.out.write(dumpEvent(event))
            self.out.write("\n")

    def flush(self) -> None:
        """Flush the output file, if any."""
        if self.out is not None:
            self.out.flush()

    def ofType(self, cls: type[Any]) -> list[Any]:
        """Every event of one class, in order."""
        return [event for event in self.events if isinstance(event, cls)]


def sortedByTime(events: Sequence[Event]) -> list[Event]:
    """The events in time order (stable: equal times keep their order)."""
    return sorted(events, key=eventTime)
