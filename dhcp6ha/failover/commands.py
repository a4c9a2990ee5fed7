# -*- test-case-name: tests.test_commands -*-
"""
AMP command schemas of the failover protocol (RFC 8156 section 5.3 messages,
carried over AMP on TLS instead of RFC 8156's own TCP framing).

Schemas only: the responders live in L{dhcp6ha.failover.protocol}.

Extensibility (RFC 7031 requirement 10): AMP ignores arguments a command's
schema does not list, so a newer partner may add optional arguments; the
protocol version is negotiated at L{Connect}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv6Address
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast

from twisted.protocols import amp

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

PROTOCOL_VERSION = 1

# Typed views of the untyped AMP API used here (mypy --strict).
_ampListInit = cast(Callable[..., None], amp.AmpList.__init__)
_tooLong = cast(Callable[..., Exception], amp.TooLong)
_pythonIdentifier = cast(Callable[[bytes], str], amp._wireNameToPythonIdentifier)
_argumentInit = cast(Callable[[amp.Argument, bool], None], amp.Argument.__init__)

_A_co = TypeVar("_A_co", bound=amp.Argument, covariant=True)


class _ArgumentClass(Protocol[_A_co]):
    """An AMP argument class, as called to make an argument."""

    def __call__(self, optional: bool = False) -> _A_co: ...


# The AMP argument classes the schemas use, typed (their constructor is not):
# each is the class itself, so the arguments are exactly those classes.
_Integer = cast(_ArgumentClass[amp.Integer], amp.Integer)
_Float = cast(_ArgumentClass[amp.Float], amp.Float)
_String = cast(_ArgumentClass[amp.String], amp.String)
_Unicode = cast(_ArgumentClass[amp.Unicode], amp.Unicode)
_Boolean = cast(_ArgumentClass[amp.Boolean], amp.Boolean)

# AMP limits one value to 65,535 bytes; a binding batch is one AmpList value,
# so batches are cut well below that (room for the box's own framing).
MAX_BATCH_BYTES = 60_000


class FailoverStatus(enum.IntEnum):
    """
    Status codes of a binding or a command result: RFC 8415 SUCCESS plus the
    RFC 8156 section 5.6 codes, with the values IANA assigned them.
    """

    SUCCESS = 0
    UNSPEC_FAIL = 1
    ADDRESS_IN_USE = 16
    CONFIGURATION_CONFLICT = 17
    MISSING_BINDING_INFORMATION = 18
    OUTDATED_BINDING_INFORMATION = 19
    SERVER_SHUTTING_DOWN = 20
    DNS_UPDATE_NOT_SUPPORTED = 21
    EXCESSIVE_TIME_SKEW = 22


class ConnectRefused(Exception):
    """The partner refused the connection (version, relationship, role, MCLT or time skew)."""


class NotInState(Exception):
    """The command is not allowed in the receiver's current state."""


class Address(amp.Argument):
    """An IPv6 address as its 16 raw bytes."""

    def __init__(self, optional: bool = False) -> None:
        _argumentInit(self, optional)

    def fromString(self, inString: bytes) -> IPv6Address:
        if len(inString) != 16:
            raise ValueError("an IPv6 address is 16 bytes, got " + str(len(inString)))
        return IPv6Address(inString)

    def toString(self, inObject: IPv6Address) -> bytes:
        return inObject.packed


class Enum(amp.Argument):
    """A member of an C{enum.Enum} whose values are text."""

    def __init__(self, enumType: type[enum.Enum], optional: bool = False) -> None:
        _argumentInit(self, optional)
        self.enumType = enumType
        # Both directions by dict lookup (a resync converts a million).
        self._members = {str(member.value).encode("ascii"): member for member in enumType}
        self._wire = {member: wire for wire, member in self._members.items()}

    def fromString(self, inString: bytes) -> enum.Enum:
        member = self._members.get(inString)
        if member is None:
            return self.enumType(inString.decode("ascii"))  # raises ValueError
        return member

    def toString(self, inObject: enum.Enum) -> bytes:
        wire = self._wire.get(inObject)
        if wire is None:
            return str(inObject.value).encode("ascii")
        return wire


def _converter(argument: amp.Argument) -> tuple[Callable[..., Any], bool]:
    """
    What decodes a value of C{argument} as C{argument.fromStringProto}
    does, and whether it takes the protocol too: a plain Argument's
    C{fromString} (C{int} for an Integer, C{float} for a Float), called
    directly.
    """
    if type(argument).fromStringProto is amp.Argument.fromStringProto:
        fromString: Callable[[bytes], Any] = argument.fromString
        return fromString, False
    fromStringProto: Callable[[bytes, Any], Any] = argument.fromStringProto
    return fromStringProto, True


def _encoder(argument: amp.Argument) -> tuple[Callable[..., bytes], bool]:
    """
    What encodes a value of C{argument} as C{argument.toStringProto}
    does, and whether it takes the protocol too.
    """
    if type(argument).toStringProto is amp.Argument.toStringProto:
        if type(argument) is amp.Integer:
            # Integer.toString is b"%d" % (value,)
            integer: Callable[[Any], bytes] = b"%d".__mod__
            return integer, False
        toString: Callable[[Any], bytes] = argument.toString
        return toString, False
    toStringProto: Callable[[Any, Any], bytes] = argument.toStringProto
    return toStringProto, True


class FastAmpList(amp.AmpList):
    """
    An L{amp.AmpList} with the same wire format, encoded and decoded in one
    loop per element instead of through AMP's generic machinery (a box
    parser and a dictionary copy per element, a name conversion per field):
    a resync moves a million bindings through it.

    The wire format is AmpList's: each element is an AMP box, its keys in
    sorted order, each key and value preceded by its 16-bit length, the box
    ended by an empty key.  Decoding is at least as strict as AmpList's: a
    missing required field, a value a field cannot convert, a key longer
    than AMP allows (255 bytes) or a truncated element raise (C{KeyError},
    C{ValueError}, C{TypeError}: the protocol turns any of them into a
    violation); keys the schema does not know are ignored, as AmpList does.
    A field given twice keeps its last value.

    L{BindingBox} elements made by L{batches} carry their encoding, made
    once to measure the batch and used as is when the batch is sent.
    """

    def __init__(self, subargs: list[tuple[bytes, amp.Argument]], optional: bool = False) -> None:
        _ampListInit(self, subargs, optional)
        self.subargs: list[tuple[bytes, amp.Argument]]
        fields = sorted(subargs, key=lambda item: item[0])
        for name, _ in fields:
            if not 0 < len(name) <= amp.MAX_KEY_LENGTH:
                raise ValueError("an AmpList field name must be 1 to 255 bytes: " + repr(name))
        # name -> (identifier, converter, takes the protocol), for decoding
        self._decoders = {
            name: (_identifier(name), *_converter(argument)) for name, argument in fields
        }
        # The values of the optional fields when absent; with the required
        # ones present, an element's dict has exactly len(subargs) keys.
        self._absent = {_identifier(name): None for name, argument in fields if argument.optional}
        self._required = [_identifier(name) for name, argument in fields if not argument.optional]
        # (wire prefix, its length, identifier, converter, takes the
        # protocol, optional) in key order, for decoding what we write
        self._ordered = [
            (
                len(name).to_bytes(2, "big") + name,
                2 + len(name),
                _identifier(name),
                *_converter(argument),
                bool(argument.optional),
            )
            for name, argument in fields
        ]
        # (identifier, wire prefix, encoder, takes the protocol, optional,
        # name) in key order, for encoding
        self._encoders = [
            (
                _identifier(name),
                len(name).to_bytes(2, "big") + name,
                *_encoder(argument),
                bool(argument.optional),
                name,
            )
            for name, argument in fields
        ]

    def fromStringProto(self, inString: bytes, proto: Any) -> list[dict[str, Any]]:
        data = inString
        end = len(data)
        values: list[dict[str, Any]] = []
        i = 0
        while i < end:
            found = self._canonical(data, i, end, proto)
            if found is None:
                found = self._element(data, i, end, proto)
            objects, i = found
            values.append(objects)
        return values

    def _canonical(
        self, data: bytes, i: int, end: int, proto: Any
    ) -> tuple[dict[str, Any], int] | None:
        """
        The element at C{i} if it is as this class (and AmpList) writes it:
        the schema's keys in sorted order, each at most once, no other key;
        else C{None} (L{_element} then reads it, or says what is wrong).

        @return: the element and where the next one starts.
        """
        objects: dict[str, Any] = {}
        for prefix, skip, identifier, convert, withProto, optional in self._ordered:
            if data.startswith(prefix, i):
                i += skip
                if i + 2 > end:
                    return None
                stop = i + 2 + ((data[i] << 8) | data[i + 1])
                if stop > end:
                    return None
                if withProto:
                    objects[identifier] = convert(data[i + 2 : stop], proto)
                else:
                    objects[identifier] = convert(data[i + 2 : stop])
                i = stop
            elif optional:
                objects[identifier] = None
            else:
                return None
        if data.startswith(b"\x00\x00", i):
            return objects, i + 2
        return None

    def _element(self, data: bytes, i: int, end: int, proto: Any) -> tuple[dict[str, Any], int]:
        """
        The element at C{i}, whatever the order of its keys.

        @return: the element and where the next one starts.
        @raise ValueError: it is cut short or has a key longer than AMP allows.
        @raise KeyError: it lacks a required field.
        """
        decoders = self._decoders
        objects = dict(self._absent)
        while i + 2 <= end:
            length = (data[i] << 8) | data[i + 1]
            i += 2
            if not length:
                if len(objects) != len(self.subargs):
                    self._missing(objects)
                return objects, i
            if length > amp.MAX_KEY_LENGTH:
                raise ValueError("an AmpList key of " + str(length) + " bytes")
            key = data[i : i + length]
            i += length
            if i + 2 > end:
                raise ValueError("an AmpList element cut in a value length")
            length = (data[i] << 8) | data[i + 1]
            i += 2
            if i + length > end:
                raise ValueError("an AmpList element cut in a value")
            decoder = decoders.get(key)
            if decoder is not None:
                identifier, convert, withProto = decoder
                if withProto:
                    objects[identifier] = convert(data[i : i + length], proto)
                else:
                    objects[identifier] = convert(data[i : i + length])
            i += length
        raise ValueError("an AmpList element without its end")

    def _missing(self, objects: dict[str, Any]) -> None:
        """Raise the C{KeyError} of the first required field C{objects} lacks."""
        for identifier in self._required:
            if identifier not in objects:
                raise KeyError(identifier)

    def toStringProto(self, inObject: Iterable[dict[str, Any]], proto: Any) -> bytes:
        parts: list[bytes] = []
        for objects in inObject:
            if type(objects) is BindingBox and objects.encodedBy is self:
                encoded = objects.encoded
                if encoded is not None:
                    parts.append(encoded)
                    continue
            parts.append(self.encodeElement(objects, proto))
        return b"".join(parts)

    def encodeElement(self, objects: dict[str, Any], proto: Any = None) -> bytes:
        """
        One element as it goes on the wire (what C{AmpList} would make of
        C{[objects]}).

        @raise KeyError: a required field is missing.
        @raise amp.TooLong: a value is longer than AMP allows.
        """
        parts: list[bytes] = []
        append = parts.append
        get = objects.get
        for identifier, prefix, encode, withProto, optional, name in self._encoders:
            value = get(identifier)
            if value is None:
                if optional:
                    continue
                raise KeyError(identifier)
            encoded = encode(value, proto) if withProto else encode(value)
            length = len(encoded)
            if length > 0xFFFF:
                raise _tooLong(False, True, encoded, name)
            append(prefix)
            append(length.to_bytes(2, "big"))
            append(encoded)
        append(b"\x00\x00")
        return b"".join(parts)


def _identifier(name: bytes) -> str:
    """The Python name AMP gives an argument."""
    return _pythonIdentifier(name)


class BindingBox(dict[str, Any]):
    """
    A binding box (L{bindingToBox}) that can carry its wire encoding:
    L{batches} encodes each element once, to measure the batch, and
    L{FastAmpList} sends that encoding.  Any change to the box drops it.

    @ivar encoded: the element's encoding, or C{None}.
    @ivar encodedBy: the L{FastAmpList} that made it.
    """

    encoded: bytes | None = None
    encodedBy: FastAmpList | None = None

    def _changed(self) -> None:
        self.encoded = None
        self.encodedBy = None

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        dict.__delitem__(self, key)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self._changed()
        dict.update(self, other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        dict.update(self, *args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed()
        return dict.setdefault(self, key, default)

    def pop(self, key: str, *default: Any) -> Any:
        self._changed()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return dict.popitem(self)

    def clear(self) -> None:
        self._changed()
        dict.clear(self)


# One binding as it travels in a BindingUpdate (RFC 8156 section 7.2, with
# OPTION_F_* fields as named arguments).
BINDING_FIELDS: list[tuple[bytes, amp.Argument]] = [
    (b"lease_type", Enum(LeaseType)),
    (b"address", Address()),
    (b"prefix_length", _Integer()),
    (b"state", Enum(BindingState)),
    (b"duid", _String()),
    (b"iaid", _Integer()),
    (b"start_time_of_state", _Float()),
    (b"cltt", _Float()),
    (b"preferred_lifetime", _Integer()),
    (b"valid_lifetime", _Integer()),
    (b"expires", _Float()),
    # OPTION_F_PARTNER_LIFETIME: the expiry the sender proposes the receiver
    # may allow (the receiver acks it; the sender's MCLT cap then moves on).
    (b"partner_lifetime", _Float()),
    (b"fqdn", _Unicode(optional=True)),
    (b"fqdn_flags", _Integer(optional=True)),
]

BINDING_RESULT_FIELDS: list[tuple[bytes, amp.Argument]] = [
    (b"address", Address()),
    (b"prefix_length", _Integer()),
    (b"status", _Integer()),
    (b"message", _Unicode(optional=True)),
]


def bindingToBox(lease: Lease, partner_lifetime: float) -> BindingBox:
    """
    The AmpList element for one binding, carrying its encoding in
    L{BINDINGS} (L{encodeBinding}) when it has one: a binding AMP cannot
    encode is refused where the box is encoded (L{batches}, or sending).
    """
    box = BindingBox(
        lease_type=lease.lease_type,
        address=lease.address,
        prefix_length=lease.prefix_length,
        state=lease.state,
        duid=lease.duid,
        iaid=lease.iaid,
        start_time_of_state=lease.start_time_of_state,
        cltt=lease.cltt,
        preferred_lifetime=lease.preferred_lifetime,
        valid_lifetime=lease.valid_lifetime,
        expires=lease.expires,
        partner_lifetime=partner_lifetime,
    )
    if lease.fqdn is not None:
        box["fqdn"] = lease.fqdn
        box["fqdn_flags"] = lease.fqdn_flags
    try:
        encoded = encodeBinding(lease, partner_lifetime)
    except (ValueError, amp.TooLong):
        return box
    box.encoded = encoded
    box.encodedBy = BINDINGS
    return box


def _key(name: bytes) -> bytes:
    """An AMP key as it goes on the wire: its 16-bit length, then the name."""
    return len(name).to_bytes(2, "big") + name


# The keys of BINDING_FIELDS in the order an AMP box sorts them.
_ADDRESS = _key(b"address") + (16).to_bytes(2, "big")  # a packed IPv6 address
_CLTT = _key(b"cltt")
_DUID = _key(b"duid")
_EXPIRES = _key(b"expires")
_FQDN = _key(b"fqdn")
_FQDN_FLAGS = _key(b"fqdn_flags")
_IAID = _key(b"iaid")
_LEASE_TYPE = _key(b"lease_type")
_PARTNER_LIFETIME = _key(b"partner_lifetime")
_PREFERRED = _key(b"preferred_lifetime")
_PREFIX_LENGTH = _key(b"prefix_length")
_START_TIME = _key(b"start_time_of_state")
_STATE = _key(b"state")
_VALID = _key(b"valid_lifetime")
_LEASE_TYPES = {member: str(member.value).encode("ascii") for member in LeaseType}
_STATES = {member: str(member.value).encode("ascii") for member in BindingState}


def _float(value: float) -> bytes:
    """C{amp.Float.toString}."""
    if not isinstance(value, float):
        raise ValueError(f"Bad float value {value!r}")
    return str(value).encode("ascii")


def _value(encoded: bytes, name: bytes) -> bytes:
    """A variable-length value with its 16-bit length."""
    if len(encoded) > 0xFFFF:
        raise _tooLong(False, True, encoded, name)
    return len(encoded).to_bytes(2, "big") + encoded


def encodeBinding(lease: Lease, partner_lifetime: float) -> bytes:
    """
    What C{BINDINGS.encodeElement(bindingToBox(lease, partner_lifetime))}
    gives, made from the lease directly: every lazy update and every
    binding of a resync is encoded once, and the generic loop over the
    fields costs half again as much.

    @raise ValueError: a time that is not a float.
    @raise amp.TooLong: a DUID or FQDN longer than an AMP value may be.
    """
    cltt = _float(lease.cltt)
    expires = _float(lease.expires)
    partner = _float(partner_lifetime)
    start = _float(lease.start_time_of_state)
    iaid = b"%d" % (lease.iaid,)
    preferred = b"%d" % (lease.preferred_lifetime,)
    length = b"%d" % (lease.prefix_length,)
    valid = b"%d" % (lease.valid_lifetime,)
    leaseType = _LEASE_TYPES[lease.lease_type]
    state = _STATES[lease.state]
    parts = [
        _ADDRESS,
        lease.address.packed,
        _CLTT,
        len(cltt).to_bytes(2, "big"),
        cltt,
        _DUID,
        _value(lease.duid, b"duid"),
        _EXPIRES,
        len(expires).to_bytes(2, "big"),
        expires,
    ]
    if lease.fqdn is not None:
        flags = b"%d" % (lease.fqdn_flags,)
        parts += (
            _FQDN,
            _value(lease.fqdn.encode("utf-8"), b"fqdn"),
            _FQDN_FLAGS,
            len(flags).to_bytes(2, "big"),
            flags,
        )
    parts += (
        _IAID,
        len(iaid).to_bytes(2, "big"),
        iaid,
        _LEASE_TYPE,
        len(leaseType).to_bytes(2, "big"),
        leaseType,
        _PARTNER_LIFETIME,
        len(partner).to_bytes(2, "big"),
        partner,
        _PREFERRED,
        len(preferred).to_bytes(2, "big"),
        preferred,
        _PREFIX_LENGTH,
        len(length).to_bytes(2, "big"),
        length,
        _START_TIME,
        len(start).to_bytes(2, "big"),
        start,
        _STATE,
        len(state).to_bytes(2, "big"),
        state,
        _VALID,
        len(valid).to_bytes(2, "big"),
        valid,
        b"\x00\x00",
    )
    return b"".join(parts)


def bindingFromBox(box: dict[str, Any]) -> Lease:
    """
    The L{Lease} a received binding describes, as the sender holds it.

    The receiver's own partner-lifetime fields are not part of the wire form:
    the incoming C{partner_lifetime} is returned to the caller separately via
    the box.
    """
    return Lease(
        lease_type=box["lease_type"],
        address=box["address"],
        prefix_length=box["prefix_length"],
        state=box["state"],
        duid=box["duid"],
        iaid=box["iaid"],
        start_time_of_state=box["start_time_of_state"],
        cltt=box["cltt"],
        preferred_lifetime=box["preferred_lifetime"],
        valid_lifetime=box["valid_lifetime"],
        expires=box["expires"],
        fqdn=box.get("fqdn"),
        fqdn_flags=box.get("fqdn_flags") or 0,
    )


#: The AmpList of bindings in L{BindingUpdate}, and of its results.
BINDINGS = FastAmpList(BINDING_FIELDS)
BINDING_RESULTS = FastAmpList(BINDING_RESULT_FIELDS)


def _encoded(box: dict[str, Any]) -> BindingBox:
    """C{box} as a L{BindingBox} carrying its encoding in L{BINDINGS}."""
    element = box if type(box) is BindingBox else BindingBox(box)
    if element.encodedBy is not BINDINGS or element.encoded is None:
        encoded = BINDINGS.encodeElement(element)
        element.encoded = encoded
        element.encodedBy = BINDINGS
    return element


def _encodedSize(box: dict[str, Any]) -> int:
    """Bytes this element adds to the AmpList value (keys, values, framing)."""
    encoded = _encoded(box).encoded
    assert encoded is not None
    return len(encoded)


def batches(
    boxes: Iterable[dict[str, Any]], limit: int = MAX_BATCH_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """
    Cut binding boxes into lists whose AmpList encoding stays under C{limit}
    bytes, so no AMP value exceeds its 64 KiB bound.

    Each box is encoded once, here: the batches hold L{BindingBox}es (the
    boxes given, or copies of plain dicts) that carry their encoding, which
    L{BindingUpdate} then sends as it is.

    @raise KeyError: a box lacks a required field.
    @raise amp.TooLong: one of its values is longer than AMP allows.
    @raise ValueError: a value its field cannot encode.
    """
    batch: list[dict[str, Any]] = []
    size = 0
    for box in boxes:
        element = _encoded(box)
        encoded = element.encoded
        assert encoded is not None
        boxSize = len(encoded)
        if batch and size + boxSize > limit:
            yield batch
            batch, size = [], 0
        batch.append(element)
        size += boxSize
    if batch:
        yield batch


class Connect(amp.Command):
    """
    RFC 8156 CONNECT / CONNECTREPLY: sent by the primary once TLS (with both
    identities checked) is up.  Refused on a version, relationship, role,
    MCLT or coverage (pools and reservations) mismatch, or a clock skew
    beyond the bound.
    """

    arguments = [
        (b"protocol_version", _Integer()),
        (b"relationship", _Unicode()),
        (b"role", _Unicode()),
        (b"mclt", _Integer()),
        (b"sender_time", _Float()),
        (b"max_unacked", _Integer()),
        (b"keepalive", _Float()),
        # The sender's server DUID, so the partner can recognise a client
        # message naming it (Server Identifier) when it takes over.
        (b"server_duid", _String(optional=True)),
        # A digest of the pools and reservations the relationship covers
        # (L{dhcp6ha.failover.relationship.Coverage.digest}): partners that
        # split different pools would hand out the same address twice.
        (b"coverage", _String(optional=True)),
    ]
    response = [
        (b"protocol_version", _Integer()),
        (b"role", _Unicode()),
        (b"sender_time", _Float()),
        (b"max_unacked", _Integer()),
        # Section 6.1.2: CONNECTREPLY carries the MCLT in use (which must
        # equal the CONNECT's) and the responder's FO_KEEPALIVE_TIME.
        (b"mclt", _Integer(optional=True)),
        (b"keepalive", _Float(optional=True)),
        (b"server_duid", _String(optional=True)),
        (b"coverage", _String(optional=True)),
    ]
    errors = {ConnectRefused: b"CONNECT_REFUSED"}
    fatalErrors = {ConnectRefused: b"CONNECT_REFUSED"}


class State(amp.Command):
    """RFC 8156 STATE: the sender's endpoint state and when it began."""

    arguments = [
        (b"state", _Unicode()),
        (b"start_time_of_state", _Float()),
        (b"partner_down_time", _Float(optional=True)),
        (b"has_database", _Boolean(optional=True)),
        # The STARTUP flag (section 5.5.18): the sender is in STARTUP and
        # C{state} is the state it will resume.
        (b"startup", _Boolean(optional=True)),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class Contact(amp.Command):
    """
    RFC 8156 CONTACT (heartbeat).  C{clients_seen} reports the client traffic
    the sender sees (RFC 7031 section 4.7), so a partner can tell when the
    sender has lost its client-facing link.
    """

    arguments = [
        (b"sender_time", _Float()),
        (b"clients_seen", _Integer(optional=True)),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class Disconnect(amp.Command):
    """RFC 8156 DISCONNECT: the sender is closing the connection, and why."""

    arguments = [
        (b"status", _Integer()),
        (b"reason", _Unicode()),
    ]
    requiresAnswer = False


class BindingUpdate(amp.Command):
    """
    RFC 8156 BNDUPD / BNDREPLY: a batch of bindings.  The receiver answers
    only once its accepted changes are durable, with one result per binding.
    """

    arguments = [(b"bindings", BINDINGS)]
    response = [(b"results", BINDING_RESULTS)]
    errors = {NotInState: b"NOT_IN_STATE"}


class PoolRequest(amp.Command):
    """
    RFC 8156 POOLREQ / POOLRESP: the secondary asks for its share of free
    prefixes; the answer acknowledges the task (the FREE-BACKUP bindings
    follow as BindingUpdates).
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"pending", _Integer())]
    errors = {NotInState: b"NOT_IN_STATE"}


class UpdateRequest(amp.Command):
    """
    RFC 8156 UPDREQ: send me every binding change I have not acked.

    C{request_id}, when present, is echoed in the L{UpdateDone} that ends
    the answer, so the requester can tell which request it ends.
    """

    arguments = [(b"request_id", _Integer(optional=True))]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class UpdateRequestAll(amp.Command):
    """
    RFC 8156 UPDREQALL: send me every binding you have.

    C{request_id}, when present, is echoed in the L{UpdateDone} that ends
    the answer, so the requester can tell which request it ends.
    """

    arguments = [(b"request_id", _Integer(optional=True))]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class UpdateDone(amp.Command):
    """
    RFC 8156 UPDDONE: every update asked for was sent and acked.
    C{request_id} echoes the request's, when it had one.
    """

    arguments = [(b"request_id", _Integer(optional=True))]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
