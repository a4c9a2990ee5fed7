# -*- test-case-name: tests.test_message -*-
"""
DHCPv6 wire format (RFC 8415 sections 8, 9 and 21; RFC 4704 client FQDN).

Pure: L{decode} turns bytes into immutable values or raises
L{MalformedMessage}; L{encode} turns values back into bytes.  Unknown options
are kept as L{UnknownOption} and re-encoded byte for byte.

Data model contract (shared by the whole package):

  - A datagram decodes to a L{Message} (client/server messages) or a
    L{RelayMessage} (RELAY-FORW / RELAY-REPL).
  - C{options} is always a tuple of option values, in wire order.
  - Addresses are L{ipaddress.IPv6Address}; DUIDs are raw C{bytes} (use
    L{Duid} helpers to describe them).

Decoding rules (what L{decode} accepts and refuses):

  - Any message type other than RELAY-FORW (12) and RELAY-REPL (13) is read
    with the client/server layout (type, 24-bit transaction id, options).  A
    type this package does not know (0, 14-255) is kept as a plain C{int} in
    L{Message.msg_type}; the engine drops it (RFC 8415 section 16).  Known
    types come back as L{MessageType} members, which compare equal to ints.
  - Options whose code is not interpreted become L{UnknownOption} and are
    re-encoded byte for byte.  Besides codes unknown to this module, the
    codes in L{UNINTERPRETED_CODES} (AUTH, USER_CLASS, RECONF_MSG,
    RECONF_ACCEPT) deliberately stay L{UnknownOption}.  An interpreted option
    whose payload is wrong (bad length, bad sub-options, bad name, bad UTF-8)
    makes the whole message malformed.
  - Sub-options (inside IA_NA, IA_TA, IA_PD, IAADDR, IAPREFIX) are decoded
    like top-level options, at most L{MAX_OPTION_NESTING} levels deep.
    RELAY_MSG is only accepted directly in a message's options, and at most
    L{MAX_RELAY_DEPTH} relay messages may be nested.
  - Input longer than L{MAX_MESSAGE_SIZE} octets is refused.

L{encode} raises C{ValueError} (never L{MalformedMessage}) for values that
cannot be put on the wire: numbers out of range, an option longer than 65535
octets, a bad domain name, a relay type in a L{Message} or the reverse.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

from attrs import field, frozen

__all__ = [
    "DUID_TIME_EPOCH",
    "HARDWARE_TYPE_ETHERNET",
    "MAX_DUID_LENGTH",
    "MAX_MESSAGE_SIZE",
    "MAX_OPTION_NESTING",
    "MAX_RELAY_DEPTH",
    "MIN_DUID_LENGTH",
    "UNINTERPRETED_CODES",
    "ClientFQDN",
    "ClientId",
    "DNSServers",
    "DomainList",
    "Duid",
    "DuidType",
    "ElapsedTime",
    "IAAddress",
    "IANA",
    "IAPD",
    "IAPrefix",
    "IATA",
    "InfMaxRt",
    "InformationRefreshTime",
    "InterfaceId",
    "MalformedMessage",
    "Message",
    "MessageType",
    "Option",
    "OptionCode",
    "OptionRequest",
    "Preference",
    "RapidCommit",
    "RelayMessage",
    "RelayMessageOption",
    "ServerId",
    "SolMaxRt",
    "StatusCode",
    "StatusCodeOption",
    "Unicast",
    "UnknownOption",
    "VendorClass",
    "VendorOpts",
    "decode",
    "describeDuid",
    "duidEN",
    "duidFromText",
    "duidLL",
    "duidLLT",
    "duidTime",
    "duidToText",
    "duidUUID",
    "encode",
    "getOption",
    "getOptions",
    "getUnknownOption",
    "optionCode",
    "parseDuid",
]


class MalformedMessage(ValueError):
    """
    The one error raised for bytes that are not a valid DHCPv6 message.

    The first argument is a short human-readable reason.
    """


class MessageType(enum.IntEnum):
    """RFC 8415 section 7.3."""

    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11
    RELAY_FORW = 12
    RELAY_REPL = 13


class OptionCode(enum.IntEnum):
    """Option codes this package understands (RFC 8415 section 21, RFC 4704)."""

    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IA_TA = 4
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    RELAY_MSG = 9
    AUTH = 11
    UNICAST = 12
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    USER_CLASS = 15
    VENDOR_CLASS = 16
    VENDOR_OPTS = 17
    INTERFACE_ID = 18
    RECONF_MSG = 19
    RECONF_ACCEPT = 20
    DNS_SERVERS = 23
    DOMAIN_LIST = 24
    IA_PD = 25
    IAPREFIX = 26
    INFORMATION_REFRESH_TIME = 32
    CLIENT_FQDN = 39
    SOL_MAX_RT = 82
    INF_MAX_RT = 83


class StatusCode(enum.IntEnum):
    """RFC 8415 section 21.13."""

    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


class DuidType(enum.IntEnum):
    """RFC 8415 section 11."""

    LLT = 1
    EN = 2
    LL = 3
    UUID = 4


# --- options ---------------------------------------------------------------


@frozen
class UnknownOption:
    """An option this codec does not interpret; kept byte for byte."""

    code: int
    data: bytes


@frozen
class ClientId:
    duid: bytes


@frozen
class ServerId:
    duid: bytes


@frozen
class StatusCodeOption:
    """C{code} is an C{int} (usually a L{StatusCode}); C{message} is UTF-8 text."""

    code: int
    message: str = ""


@frozen
class IAAddress:
    address: IPv6Address
    preferred_lifetime: int
    valid_lifetime: int
    options: tuple[Option, ...] = ()


@frozen
class IAPrefix:
    preferred_lifetime: int
    valid_lifetime: int
    prefix_length: int
    prefix: IPv6Address
    options: tuple[Option, ...] = ()


@frozen
class IANA:
    iaid: int
    t1: int
    t2: int
    options: tuple[Option, ...] = ()


@frozen
class IATA:
    iaid: int
    options: tuple[Option, ...] = ()


@frozen
class IAPD:
    iaid: int
    t1: int
    t2: int
    options: tuple[Option, ...] = ()


@frozen
class OptionRequest:
    codes: tuple[int, ...]


@frozen
class Preference:
    value: int


@frozen
class ElapsedTime:
    """Hundredths of a second."""

    value: int


@frozen
class RelayMessageOption:
    """OPTION_RELAY_MSG: the encapsulated message, decoded."""

    message: Message | RelayMessage


@frozen
class Unicast:
    address: IPv6Address


@frozen
class RapidCommit:
    pass


@frozen
class InterfaceId:
    value: bytes


@frozen
class DNSServers:
    addresses: tuple[IPv6Address, ...]


@frozen
class DomainList:
    """Domain names as dotted text without a trailing dot (RFC 1035 encoding on the wire)."""

    domains: tuple[str, ...]


@frozen
class ClientFQDN:
    """
    RFC 4704.  C{name} is the dotted name; C{partial} is True when the wire
    form did not end with the root label (a partial name).
    """

    flags: int
    name: str
    partial: bool = False


@frozen
class SolMaxRt:
    value: int


@frozen
class InfMaxRt:
    value: int


@frozen
class InformationRefreshTime:
    value: int


@frozen
class VendorClass:
    enterprise: int
    data: tuple[bytes, ...]


@frozen
class VendorOpts:
    """Vendor-specific information: C{options} are (code, data) pairs."""

    enterprise: int
    options: tuple[tuple[int, bytes], ...]


Option: TypeAlias = (
    UnknownOption
    | ClientId
    | ServerId
    | StatusCodeOption
    | IAAddress
    | IAPrefix
    | IANA
    | IATA
    | IAPD
    | OptionRequest
    | Preference
    | ElapsedTime
    | RelayMessageOption
    | Unicast
    | RapidCommit
    | InterfaceId
    | DNSServers
    | DomainList
    | ClientFQDN
    | SolMaxRt
    | InfMaxRt
    | InformationRefreshTime
    | VendorClass
    | VendorOpts
)


# --- messages --------------------------------------------------------------


@frozen
class Message:
    """A client/server message (RFC 8415 section 8)."""

    msg_type: int
    transaction_id: int  # 24 bits
    options: tuple[Option, ...] = field(default=())


@frozen
class RelayMessage:
    """A relay agent/server message (RFC 8415 section 9)."""

    msg_type: int  # RELAY_FORW or RELAY_REPL
    hop_count: int
    link_address: IPv6Address
    peer_address: IPv6Address
    options: tuple[Option, ...] = field(default=())


# --- limits ----------------------------------------------------------------

MAX_MESSAGE_SIZE = 65535
"""The largest datagram L{decode} accepts and L{encode} produces, in octets."""

MAX_RELAY_DEPTH = 32
"""
The most relay messages L{decode} accepts nested in one datagram (RELAY_MSG
encapsulation levels).  This is a decoding safety bound, RFC 3315's
HOP_COUNT_LIMIT; RFC 8415 section 7.6 lowered the relay agents'
HOP_COUNT_LIMIT to 8, which is a forwarding policy, not a codec rule.
"""

MAX_OPTION_NESTING = 4
"""
How many levels of options inside options L{decode} accepts (IA_NA holding
IAADDR holding STATUS_CODE is two levels).
"""

MIN_DUID_LENGTH = 3
"""A DUID is a 2-octet type followed by at least one octet (RFC 8415 section 11)."""

MAX_DUID_LENGTH = 130
"""At most 128 octets after the 2-octet type (RFC 8415 section 11.1)."""

MAX_NAME_LENGTH = 255
"""The longest domain name on the wire, length octets included (RFC 1035)."""

UNINTERPRETED_CODES = frozenset(
    {
        OptionCode.AUTH,
        OptionCode.USER_CLASS,
        OptionCode.RECONF_MSG,
        OptionCode.RECONF_ACCEPT,
    }
)
"""Known option codes that this codec deliberately keeps as L{UnknownOption}."""

_RELAY_TYPES = frozenset({MessageType.RELAY_FORW, MessageType.RELAY_REPL})
_MESSAGE_TYPES: dict[int, int] = {int(t): t for t in MessageType}
_STATUS_CODES: dict[int, int] = {int(s): s for s in StatusCode}

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_OPTION_HEADER = struct.Struct("!HH")
_RELAY_HEADER = struct.Struct("!BB16s16s")
_IA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")
_IAPREFIX = struct.Struct("!IIB16s")
_STATUS = struct.Struct("!H")

# Label octets allowed in domain names: printable ASCII (space included) but
# not the dot, which could not be told apart from a label separator.
_LABEL_OCTETS = bytes(b for b in range(0x20, 0x7F) if b != 0x2E)


# --- decoding --------------------------------------------------------------

_Parser = Callable[[bytes, int, int, int, int], "Option"]


def decode(data: bytes | bytearray | memoryview) -> Message | RelayMessage:
    """
    Decode one DHCPv6 datagram.

    @param data: the UDP payload (C{bytes}, C{bytearray} or C{memoryview}).
    @return: a L{Message} or, for RELAY-FORW / RELAY-REPL, a L{RelayMessage}.
    @raise MalformedMessage: for any input that is not a well-formed
        message; the first argument says what is wrong.  No other exception
        is raised for any C{bytes} input.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise MalformedMessage(f"message of {len(data)} octets is longer than {MAX_MESSAGE_SIZE}")
    return _decodeMessage(data, 0, len(data), 0)


def _decodeMessage(buf: bytes, start: int, end: int, depth: int) -> Message | RelayMessage:
    """
    Decode the message in C{buf[start:end]}, C{depth} RELAY_MSG levels deep.
    """
    size = end - start
    if size < 1:
        raise MalformedMessage("truncated header: empty message")
    msgType = buf[start]
    if msgType == 12 or msgType == 13:
        if depth >= MAX_RELAY_DEPTH:
            raise MalformedMessage(f"more than {MAX_RELAY_DEPTH} nested relay messages")
        if size < 34:
            raise MalformedMessage(f"truncated relay message header ({size} of 34 octets)")
        _, hopCount, link, peer = _RELAY_HEADER.unpack_from(buf, start)
        return RelayMessage(
            _MESSAGE_TYPES[msgType],
            hopCount,
            IPv6Address(link),
            IPv6Address(peer),
            _decodeOptions(buf, start + 34, end, depth, 0),
        )
    if size < 4:
        raise MalformedMessage(f"truncated message header ({size} of 4 octets)")
    return Message(
        _MESSAGE_TYPES.get(msgType, msgType),
        _U32.unpack_from(buf, start)[0] & 0xFFFFFF,
        _decodeOptions(buf, start + 4, end, depth, 0),
    )


def _decodeOptions(buf: bytes, pos: int, end: int, depth: int, nest: int) -> tuple[Option, ...]:
    """
    Decode the options in C{buf[pos:end]}.

    @param depth: how many RELAY_MSG levels enclose these options.
    @param nest: how many options enclose these options (0 at the top).
    """
    options: list[Option] = []
    append = options.append
    unpackHeader = _OPTION_HEADER.unpack_from
    parsers = _PARSERS
    while pos < end:
        if end - pos < 4:
            raise MalformedMessage(
                f"truncated option header ({end - pos} octets left at offset {pos})"
            )
        code, length = unpackHeader(buf, pos)
        pos += 4
        optionEnd = pos + length
        if optionEnd > end:
            raise MalformedMessage(
                f"option {code} of length {length} overruns its container by "
                f"{optionEnd - end} octets"
            )
        parser = parsers.get(code)
        if parser is None:
            append(UnknownOption(code, buf[pos:optionEnd]))
        else:
            append(parser(buf, pos, optionEnd, depth, nest))
        pos = optionEnd
    return tuple(options)


def _subOptions(buf: bytes, pos: int, end: int, depth: int, nest: int) -> tuple[Option, ...]:
    """Decode the options encapsulated in an option at level C{nest}."""
    if pos == end:
        return ()
    if nest >= MAX_OPTION_NESTING:
        raise MalformedMessage(f"options nested more than {MAX_OPTION_NESTING} levels deep")
    return _decodeOptions(buf, pos, end, depth, nest + 1)


def _wrongLength(name: str, length: int, expected: str) -> MalformedMessage:
    return MalformedMessage(f"{name} option of length {length}, expected {expected}")


def _parseDuidOption(name: str, buf: bytes, start: int, end: int) -> bytes:
    length = end - start
    if length < MIN_DUID_LENGTH or length > MAX_DUID_LENGTH:
        raise _wrongLength(name, length, f"{MIN_DUID_LENGTH} to {MAX_DUID_LENGTH} (a DUID)")
    return buf[start:end]


def _parseClientId(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return ClientId(_parseDuidOption("CLIENTID", buf, start, end))


def _parseServerId(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return ServerId(_parseDuidOption("SERVERID", buf, start, end))


def _parseIANA(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 12:
        raise _wrongLength("IA_NA", end - start, "at least 12")
    iaid, t1, t2 = _IA.unpack_from(buf, start)
    return IANA(iaid, t1, t2, _subOptions(buf, start + 12, end, depth, nest))


def _parseIATA(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 4:
        raise _wrongLength("IA_TA", end - start, "at least 4")
    return IATA(_U32.unpack_from(buf, start)[0], _subOptions(buf, start + 4, end, depth, nest))


def _parseIAPD(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 12:
        raise _wrongLength("IA_PD", end - start, "at least 12")
    iaid, t1, t2 = _IA.unpack_from(buf, start)
    return IAPD(iaid, t1, t2, _subOptions(buf, start + 12, end, depth, nest))


def _parseIAAddress(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 24:
        raise _wrongLength("IAADDR", end - start, "at least 24")
    address, preferred, valid = _IAADDR.unpack_from(buf, start)
    return IAAddress(
        IPv6Address(address), preferred, valid, _subOptions(buf, start + 24, end, depth, nest)
    )


def _parseIAPrefix(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 25:
        raise _wrongLength("IAPREFIX", end - start, "at least 25")
    preferred, valid, prefixLength, prefix = _IAPREFIX.unpack_from(buf, start)
    if prefixLength > 128:
        raise MalformedMessage(f"IAPREFIX prefix length {prefixLength} is more than 128")
    return IAPrefix(
        preferred,
        valid,
        prefixLength,
        IPv6Address(prefix),
        _subOptions(buf, start + 25, end, depth, nest),
    )


def _parseOptionRequest(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    length = end - start
    if length & 1:
        raise _wrongLength("ORO", length, "an even number")
    return OptionRequest(struct.unpack_from(f"!{length >> 1}H", buf, start))


def _parsePreference(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start != 1:
        raise _wrongLength("PREFERENCE", end - start, "1")
    return Preference(buf[start])


def _parseElapsedTime(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start != 2:
        raise _wrongLength("ELAPSED_TIME", end - start, "2")
    return ElapsedTime(_U16.unpack_from(buf, start)[0])


def _parseRelayMsg(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if nest:
        raise MalformedMessage("RELAY_MSG option inside another option")
    if depth >= MAX_RELAY_DEPTH:
        raise MalformedMessage(f"RELAY_MSG options nested more than {MAX_RELAY_DEPTH} deep")
    return RelayMessageOption(_decodeMessage(buf, start, end, depth + 1))


def _parseUnicast(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start != 16:
        raise _wrongLength("UNICAST", end - start, "16")
    return Unicast(IPv6Address(buf[start:end]))


def _parseStatusCode(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 2:
        raise _wrongLength("STATUS_CODE", end - start, "at least 2")
    code = _STATUS.unpack_from(buf, start)[0]
    try:
        text = buf[start + 2 : end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedMessage(f"STATUS_CODE message is not UTF-8: {e.reason}") from None
    return StatusCodeOption(_STATUS_CODES.get(code, code), text)


def _parseRapidCommit(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end != start:
        raise _wrongLength("RAPID_COMMIT", end - start, "0")
    return RapidCommit()


def _parseInterfaceId(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return InterfaceId(buf[start:end])


def _parseDNSServers(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    length = end - start
    if length % 16:
        raise _wrongLength("DNS_SERVERS", length, "a multiple of 16")
    return DNSServers(tuple(IPv6Address(buf[p : p + 16]) for p in range(start, end, 16)))


def _decodeName(buf: bytes, pos: int, end: int) -> tuple[str, int, bool]:
    """
    Decode one RFC 1035 domain name (no compression) from C{buf[pos:end]}.

    @return: the dotted name (no trailing dot), the offset after it, and
        whether it ended with the root label (False: the name ran to C{end}).
    """
    labels: list[str] = []
    start = pos
    while pos < end:
        length = buf[pos]
        pos += 1
        if length == 0:
            if pos - start > MAX_NAME_LENGTH:
                raise MalformedMessage(f"domain name longer than {MAX_NAME_LENGTH} octets")
            return ".".join(labels), pos, True
        if length > 63:
            raise MalformedMessage(
                f"domain name label length {length}: longer than 63 (or a compression pointer)"
            )
        labelEnd = pos + length
        if labelEnd > end:
            raise MalformedMessage("domain name label overruns its option")
        label = buf[pos:labelEnd]
        if label.translate(None, _LABEL_OCTETS):
            raise MalformedMessage(
                "domain name label has an octet that is not printable ASCII, or a dot"
            )
        labels.append(label.decode("ascii"))
        pos = labelEnd
        if pos - start > MAX_NAME_LENGTH:
            raise MalformedMessage(f"domain name longer than {MAX_NAME_LENGTH} octets")
    return ".".join(labels), pos, False


def _parseDomainList(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    names: list[str] = []
    pos = start
    while pos < end:
        name, pos, complete = _decodeName(buf, pos, end)
        if not complete:
            raise MalformedMessage("DOMAIN_LIST name does not end with the root label")
        names.append(name)
    return DomainList(tuple(names))


def _parseClientFQDN(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 1:
        raise _wrongLength("CLIENT_FQDN", end - start, "at least 1")
    name, pos, complete = _decodeName(buf, start + 1, end)
    if pos != end:
        raise MalformedMessage("CLIENT_FQDN has data after the domain name")
    return ClientFQDN(buf[start], name, not complete)


def _parseU32(name: str, buf: bytes, start: int, end: int) -> int:
    if end - start != 4:
        raise _wrongLength(name, end - start, "4")
    value: int = _U32.unpack_from(buf, start)[0]
    return value


def _parseSolMaxRt(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return SolMaxRt(_parseU32("SOL_MAX_RT", buf, start, end))


def _parseInfMaxRt(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return InfMaxRt(_parseU32("INF_MAX_RT", buf, start, end))


def _parseInformationRefreshTime(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    return InformationRefreshTime(_parseU32("INFORMATION_REFRESH_TIME", buf, start, end))


def _parseVendorClass(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 4:
        raise _wrongLength("VENDOR_CLASS", end - start, "at least 4")
    enterprise = _U32.unpack_from(buf, start)[0]
    items: list[bytes] = []
    pos = start + 4
    while pos < end:
        if end - pos < 2:
            raise MalformedMessage("VENDOR_CLASS has a truncated data length")
        itemEnd = pos + 2 + _U16.unpack_from(buf, pos)[0]
        if itemEnd > end:
            raise MalformedMessage("VENDOR_CLASS data overruns the option")
        items.append(buf[pos + 2 : itemEnd])
        pos = itemEnd
    return VendorClass(enterprise, tuple(items))


def _parseVendorOpts(buf: bytes, start: int, end: int, depth: int, nest: int) -> Option:
    if end - start < 4:
        raise _wrongLength("VENDOR_OPTS", end - start, "at least 4")
    enterprise = _U32.unpack_from(buf, start)[0]
    items: list[tuple[int, bytes]] = []
    pos = start + 4
    while pos < end:
        if end - pos < 4:
            raise MalformedMessage("VENDOR_OPTS has a truncated sub-option header")
        code, length = _OPTION_HEADER.unpack_from(buf, pos)
        pos += 4
        itemEnd = pos + length
        if itemEnd > end:
            raise MalformedMessage(f"VENDOR_OPTS sub-option {code} overruns the option")
        items.append((code, buf[pos:itemEnd]))
        pos = itemEnd
    return VendorOpts(enterprise, tuple(items))


_PARSERS: dict[int, _Parser] = {
    OptionCode.CLIENTID: _parseClientId,
    OptionCode.SERVERID: _parseServerId,
    OptionCode.IA_NA: _parseIANA,
    OptionCode.IA_TA: _parseIATA,
    OptionCode.IAADDR: _parseIAAddress,
    OptionCode.ORO: _parseOptionRequest,
    OptionCode.PREFERENCE: _parsePreference,
    OptionCode.ELAPSED_TIME: _parseElapsedTime,
    OptionCode.RELAY_MSG: _parseRelayMsg,
    OptionCode.UNICAST: _parseUnicast,
    OptionCode.STATUS_CODE: _parseStatusCode,
    OptionCode.RAPID_COMMIT: _parseRapidCommit,
    OptionCode.VENDOR_CLASS: _parseVendorClass,
    OptionCode.VENDOR_OPTS: _parseVendorOpts,
    OptionCode.INTERFACE_ID: _parseInterfaceId,
    OptionCode.DNS_SERVERS: _parseDNSServers,
    OptionCode.DOMAIN_LIST: _parseDomainList,
    OptionCode.IA_PD: _parseIAPD,
    OptionCode.IAPREFIX: _parseIAPrefix,
    OptionCode.INFORMATION_REFRESH_TIME: _parseInformationRefreshTime,
    OptionCode.CLIENT_FQDN: _parseClientFQDN,
    OptionCode.SOL_MAX_RT: _parseSolMaxRt,
    OptionCode.INF_MAX_RT: _parseInfMaxRt,
}
# Plain int keys make the lookup by the decoded code as cheap as it gets.
_PARSERS = {int(code): parser for code, parser in _PARSERS.items()}


# --- encoding --------------------------------------------------------------


def encode(msg: Message | RelayMessage) -> bytes:
    """
    Encode a message for the wire.

    Options are written in the order of C{options}; an L{UnknownOption} is
    written as it is, whatever its code.  Nesting depth is not checked here:
    a value nested deeper than L{decode} accepts still encodes.

    @raise ValueError: if a value cannot be represented on the wire (numbers
        out of range, an option or message too long, a bad domain name, a
        relay type in a L{Message} or a non-relay type in a L{RelayMessage}).
    @raise TypeError: if an option is not one of the option classes.
    """
    try:
        data = _encodeMessage(msg)
    except struct.error as e:
        raise ValueError(f"value out of range for its wire field: {e}") from None
    if len(data) > MAX_MESSAGE_SIZE:
        raise ValueError(f"encoded message of {len(data)} octets exceeds {MAX_MESSAGE_SIZE}")
    return data


def _encodeMessage(msg: Message | RelayMessage) -> bytes:
    if not isinstance(msg, (Message, RelayMessage)):
        raise TypeError(f"not a DHCPv6 message: {msg!r}")
    msgType = msg.msg_type
    if isinstance(msg, RelayMessage):
        if msgType not in _RELAY_TYPES:
            raise ValueError(f"RelayMessage with non-relay message type {msgType}")
        return _RELAY_HEADER.pack(
            msgType, msg.hop_count, msg.link_address.packed, msg.peer_address.packed
        ) + _encodeOptions(msg.options)
    if msgType in _RELAY_TYPES:
        raise ValueError(f"Message with relay message type {msgType}; use RelayMessage")
    if not 0 <= msgType <= 255:
        raise ValueError(f"message type {msgType} out of range 0-255")
    if not 0 <= msg.transaction_id <= 0xFFFFFF:
        raise ValueError(f"transaction id {msg.transaction_id} out of range (24 bits)")
    return _U32.pack((msgType << 24) | msg.transaction_id) + _encodeOptions(msg.options)


def _encodeOptions(options: Iterable[Option]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    encoders = _ENCODERS
    pack = _OPTION_HEADER.pack
    for option in options:
        encoder = encoders.get(type(option))
        if encoder is None:
            raise TypeError(f"not a DHCPv6 option: {option!r}")
        code, payload = encoder(option)
        length = len(payload)
        if length > 0xFFFF:
            raise ValueError(f"option {code} payload of {length} octets exceeds 65535")
        append(pack(code, length))
        append(payload)
    return b"".join(parts)


def _encodeName(name: str, complete: bool) -> bytes:
    """
    Encode a dotted domain name (no trailing dot) in RFC 1035 form.

    @param complete: end the name with the root label.
    """
    if name == "":
        return b"\x00" if complete else b""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"domain name {name!r} is not ASCII") from None
    parts: list[bytes] = []
    for label in raw.split(b"."):
        length = len(label)
        if length == 0:
            raise ValueError(f"domain name {name!r} has an empty label")
        if length > 63:
            raise ValueError(f"domain name {name!r} has a label longer than 63 octets")
        if label.translate(None, _LABEL_OCTETS):
            raise ValueError(f"domain name {name!r} has a control character")
        parts.append(_U8.pack(length))
        parts.append(label)
    if complete:
        parts.append(b"\x00")
    wire = b"".join(parts)
    if len(wire) > MAX_NAME_LENGTH:
        raise ValueError(f"domain name {name!r} is longer than {MAX_NAME_LENGTH} octets")
    return wire


def _checkDuid(duid: bytes) -> bytes:
    if not MIN_DUID_LENGTH <= len(duid) <= MAX_DUID_LENGTH:
        raise ValueError(
            f"DUID of {len(duid)} octets; a DUID has {MIN_DUID_LENGTH} to {MAX_DUID_LENGTH}"
        )
    return bytes(duid)


def _encodeUnknown(o: UnknownOption) -> tuple[int, bytes]:
    return o.code, bytes(o.data)


def _encodeClientId(o: ClientId) -> tuple[int, bytes]:
    return 1, _checkDuid(o.duid)


def _encodeServerId(o: ServerId) -> tuple[int, bytes]:
    return 2, _checkDuid(o.duid)


def _encodeIANA(o: IANA) -> tuple[int, bytes]:
    return 3, _IA.pack(o.iaid, o.t1, o.t2) + _encodeOptions(o.options)


def _encodeIATA(o: IATA) -> tuple[int, bytes]:
    return 4, _U32.pack(o.iaid) + _encodeOptions(o.options)


def _encodeIAAddress(o: IAAddress) -> tuple[int, bytes]:
    return 5, _IAADDR.pack(
        o.address.packed, o.preferred_lifetime, o.valid_lifetime
    ) + _encodeOptions(o.options)


def _encodeOptionRequest(o: OptionRequest) -> tuple[int, bytes]:
    return 6, struct.pack(f"!{len(o.codes)}H", *o.codes)


def _encodePreference(o: Preference) -> tuple[int, bytes]:
    return 7, _U8.pack(o.value)


def _encodeElapsedTime(o: ElapsedTime) -> tuple[int, bytes]:
    return 8, _U16.pack(o.value)


def _encodeRelayMessageOption(o: RelayMessageOption) -> tuple[int, bytes]:
    return 9, _encodeMessage(o.message)


def _encodeUnicast(o: Unicast) -> tuple[int, bytes]:
    return 12, o.address.packed


def _encodeStatusCode(o: StatusCodeOption) -> tuple[int, bytes]:
    return 13, _STATUS.pack(o.code) + o.message.encode("utf-8")


def _encodeRapidCommit(o: RapidCommit) -> tuple[int, bytes]:
    return 14, b""


def _encodeVendorClass(o: VendorClass) -> tuple[int, bytes]:
    parts = [_U32.pack(o.enterprise)]
    for item in o.data:
        parts.append(_U16.pack(len(item)))
        parts.append(item)
    return 16, b"".join(parts)


def _encodeVendorOpts(o: VendorOpts) -> tuple[int, bytes]:
    parts = [_U32.pack(o.enterprise)]
    for code, data in o.options:
        parts.append(_OPTION_HEADER.pack(code, len(data)))
        parts.append(data)
    return 17, b"".join(parts)


def _encodeInterfaceId(o: InterfaceId) -> tuple[int, bytes]:
    return 18, bytes(o.value)


def _encodeDNSServers(o: DNSServers) -> tuple[int, bytes]:
    return 23, b"".join([a.packed for a in o.addresses])


def _encodeDomainList(o: DomainList) -> tuple[int, bytes]:
    return 24, b"".join([_encodeName(name, True) for name in o.domains])


def _encodeIAPD(o: IAPD) -> tuple[int, bytes]:
    return 25, _IA.pack(o.iaid, o.t1, o.t2) + _encodeOptions(o.options)


def _encodeIAPrefix(o: IAPrefix) -> tuple[int, bytes]:
    if not 0 <= o.prefix_length <= 128:
        raise ValueError(f"IAPREFIX prefix length {o.prefix_length} out of range 0-128")
    return 26, _IAPREFIX.pack(
        o.preferred_lifetime, o.valid_lifetime, o.prefix_length, o.prefix.packed
    ) + _encodeOptions(o.options)


def _encodeInformationRefreshTime(o: InformationRefreshTime) -> tuple[int, bytes]:
    return 32, _U32.pack(o.value)


def _encodeClientFQDN(o: ClientFQDN) -> tuple[int, bytes]:
    return 39, _U8.pack(o.flags) + _encodeName(o.name, not o.partial)


def _encodeSolMaxRt(o: SolMaxRt) -> tuple[int, bytes]:
    return 82, _U32.pack(o.value)


def _encodeInfMaxRt(o: InfMaxRt) -> tuple[int, bytes]:
    return 83, _U32.pack(o.value)


_ENCODERS: dict[type, Callable[[Any], tuple[int, bytes]]] = {
    UnknownOption: _encodeUnknown,
    ClientId: _encodeClientId,
    ServerId: _encodeServerId,
    IANA: _encodeIANA,
    IATA: _encodeIATA,
    IAAddress: _encodeIAAddress,
    OptionRequest: _encodeOptionRequest,
    Preference: _encodePreference,
    ElapsedTime: _encodeElapsedTime,
    RelayMessageOption: _encodeRelayMessageOption,
    Unicast: _encodeUnicast,
    StatusCodeOption: _encodeStatusCode,
    RapidCommit: _encodeRapidCommit,
    VendorClass: _encodeVendorClass,
    VendorOpts: _encodeVendorOpts,
    InterfaceId: _encodeInterfaceId,
    DNSServers: _encodeDNSServers,
    DomainList: _encodeDomainList,
    IAPD: _encodeIAPD,
    IAPrefix: _encodeIAPrefix,
    InformationRefreshTime: _encodeInformationRefreshTime,
    ClientFQDN: _encodeClientFQDN,
    SolMaxRt: _encodeSolMaxRt,
    InfMaxRt: _encodeInfMaxRt,
}

_CODES: dict[type, int] = {
    ClientId: OptionCode.CLIENTID,
    ServerId: OptionCode.SERVERID,
    IANA: OptionCode.IA_NA,
    IATA: OptionCode.IA_TA,
    IAAddress: OptionCode.IAADDR,
    OptionRequest: OptionCode.ORO,
    Preference: OptionCode.PREFERENCE,
    ElapsedTime: OptionCode.ELAPSED_TIME,
    RelayMessageOption: OptionCode.RELAY_MSG,
    Unicast: OptionCode.UNICAST,
    StatusCodeOption: OptionCode.STATUS_CODE,
    RapidCommit: OptionCode.RAPID_COMMIT,
    VendorClass: OptionCode.VENDOR_CLASS,
    VendorOpts: OptionCode.VENDOR_OPTS,
    InterfaceId: OptionCode.INTERFACE_ID,
    DNSServers: OptionCode.DNS_SERVERS,
    DomainList: OptionCode.DOMAIN_LIST,
    IAPD: OptionCode.IA_PD,
    IAPrefix: OptionCode.IAPREFIX,
    InformationRefreshTime: OptionCode.INFORMATION_REFRESH_TIME,
    ClientFQDN: OptionCode.CLIENT_FQDN,
    SolMaxRt: OptionCode.SOL_MAX_RT,
    InfMaxRt: OptionCode.INF_MAX_RT,
}


# --- option accessors ------------------------------------------------------

_O = TypeVar("_O")


def optionCode(option: Option) -> int:
    """
    The wire code of an option value (an L{OptionCode} member, or the
    C{code} of an L{UnknownOption}).
    """
    if isinstance(option, UnknownOption):
        return option.code
    return _CODES[type(option)]


def getOption(options: Iterable[Option], cls: type[_O]) -> _O | None:
    """
    The first option of class C{cls} in C{options}, or C{None}.
    """
    for option in options:
        if isinstance(option, cls):
            return option
    return None


def getOptions(options: Iterable[Option], cls: type[_O]) -> list[_O]:
    """
    Every option of class C{cls} in C{options}, in order.
    """
    return [option for option in options if isinstance(option, cls)]


def getUnknownOption(options: Iterable[Option], code: int) -> UnknownOption | None:
    """
    The first L{UnknownOption} with this code (for instance
    C{OptionCode.RECONF_ACCEPT} or C{OptionCode.USER_CLASS}), or C{None}.
    """
    for option in options:
        if isinstance(option, UnknownOption) and option.code == code:
            return option
    return None


# --- DUIDs -----------------------------------------------------------------

DUID_TIME_EPOCH = 946684800
"""Midnight, 1 January 2000 UTC, as a POSIX time: the origin of DUID-LLT times."""

HARDWARE_TYPE_ETHERNET = 1
"""The IANA hardware type of Ethernet (RFC 826), for DUID-LLT and DUID-LL."""

_DUID_LLT = struct.Struct("!HHI")
_DUID_EN = struct.Struct("!HI")
_DUID_LL = struct.Struct("!HH")
_DUID_TYPES: dict[int, int] = {int(t): t for t in DuidType}
_HEX_PLAIN = re.compile(r"(?:[0-9a-fA-F]{2})+")
_HEX_COLONS = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2})+")


@frozen
class Duid:
    """
    A DUID taken apart (RFC 8415 section 11, RFC 6355).

    Fields that do not apply to the type are C{None}.

    @ivar duid_type: the DUID type (a L{DuidType} member when known).
    @ivar hardware_type: LLT and LL: the IANA hardware type.
    @ivar time: LLT: seconds since 2000-01-01 UTC, modulo 2**32.
    @ivar link_layer_address: LLT and LL: the link-layer address.
    @ivar enterprise: EN: the vendor's enterprise number.
    @ivar identifier: EN: the vendor's identifier; unknown types: every
        octet after the type.
    @ivar uuid: UUID: the UUID.
    """

    duid_type: int
    hardware_type: int | None = None
    time: int | None = None
    link_layer_address: bytes | None = None
    enterprise: int | None = None
    identifier: bytes | None = None
    uuid: UUID | None = None

    def toBytes(self) -> bytes:
        """
        The DUID's wire form.

        @raise ValueError: if the fields do not make a valid DUID.
        """
        t = self.duid_type
        if t == DuidType.LLT:
            if self.hardware_type is None or self.time is None or self.link_layer_address is None:
                raise ValueError("DUID-LLT needs hardware_type, time and link_layer_address")
            return duidLLT(self.hardware_type, self.time, self.link_layer_address)
        if t == DuidType.EN:
            if self.enterprise is None or self.identifier is None:
                raise ValueError("DUID-EN needs enterprise and identifier")
            return duidEN(self.enterprise, self.identifier)
        if t == DuidType.LL:
            if self.hardware_type is None or self.link_layer_address is None:
                raise ValueError("DUID-LL needs hardware_type and link_layer_address")
            return duidLL(self.hardware_type, self.link_layer_address)
        if t == DuidType.UUID:
            if self.uuid is None:
                raise ValueError("DUID-UUID needs uuid")
            return duidUUID(self.uuid)
        if not 0 <= t <= 0xFFFF:
            raise ValueError(f"DUID type {t} out of range 0-65535")
        return _checkDuid(_U16.pack(t) + (self.identifier or b""))

    def __str__(self) -> str:
        t = self.duid_type
        if t == DuidType.LLT:
            return (
                f"DUID-LLT hw={self.hardware_type} time={self.time} "
                f"ll={duidToText(self.link_layer_address or b'')}"
            )
        if t == DuidType.EN:
            return f"DUID-EN enterprise={self.enterprise} id={duidToText(self.identifier or b'')}"
        if t == DuidType.LL:
            return (
                f"DUID-LL hw={self.hardware_type} ll={duidToText(self.link_layer_address or b'')}"
            )
        if t == DuidType.UUID:
            return f"DUID-UUID {self.uuid}"
        return f"DUID type {t} {duidToText(self.identifier or b'')}"


def parseDuid(raw: bytes) -> Duid:
    """
    Take a DUID apart.

    A DUID of a type this module does not know is described by its type and
    the octets after it (C{identifier}).

    @raise ValueError: if C{raw} is not a valid DUID (length outside
        L{MIN_DUID_LENGTH}..L{MAX_DUID_LENGTH}, or a known type whose layout
        does not fit, e.g. a DUID-UUID that is not 16 octets of UUID).
    """
    raw = _checkDuid(raw)
    t = _U16.unpack_from(raw)[0]
    t = _DUID_TYPES.get(t, t)
    if t == DuidType.LLT:
        if len(raw) < 9:
            raise ValueError(f"DUID-LLT of {len(raw)} octets has no link-layer address")
        _, hw, time = _DUID_LLT.unpack_from(raw)
        return Duid(t, hardware_type=hw, time=time, link_layer_address=raw[8:])
    if t == DuidType.EN:
        if len(raw) < 7:
            raise ValueError(f"DUID-EN of {len(raw)} octets has no identifier")
        return Duid(t, enterprise=_DUID_EN.unpack_from(raw)[1], identifier=raw[6:])
    if t == DuidType.LL:
        if len(raw) < 5:
            raise ValueError(f"DUID-LL of {len(raw)} octets has no link-layer address")
        return Duid(t, hardware_type=_DUID_LL.unpack_from(raw)[1], link_layer_address=raw[4:])
    if t == DuidType.UUID:
        if len(raw) != 18:
            raise ValueError(f"DUID-UUID of {len(raw)} octets, expected 18")
        return Duid(t, uuid=UUID(bytes=raw[2:]))
    return Duid(t, identifier=raw[2:])


def describeDuid(raw: bytes) -> str:
    """
    A human-readable description of a DUID, for logs; never raises.
    """
    try:
        return str(parseDuid(raw))
    except ValueError:
        return f"invalid DUID {duidToText(raw)}"


def duidTime(posixSeconds: float) -> int:
    """
    The DUID-LLT time field for a POSIX time (e.g. C{clock.seconds()}):
    seconds since 2000-01-01 UTC, modulo 2**32 (RFC 8415 section 11.2).
    """
    return (int(posixSeconds) - DUID_TIME_EPOCH) % (1 << 32)


def duidLLT(hardwareType: int, time: int, linkLayerAddress: bytes) -> bytes:
    """
    Build a DUID-LLT (RFC 8415 section 11.2).

    @param hardwareType: e.g. L{HARDWARE_TYPE_ETHERNET}.
    @param time: see L{duidTime}.
    @param linkLayerAddress: e.g. a 6-octet MAC address.
    @raise ValueError: for out-of-range fields or a bad address length.
    """
    if not 1 <= len(linkLayerAddress) <= 122:
        raise ValueError("DUID-LLT link-layer address must be 1 to 122 octets")
    try:
        return _DUID_LLT.pack(DuidType.LLT, hardwareType, time) + bytes(linkLayerAddress)
    except struct.error as e:
        raise ValueError(f"DUID-LLT field out of range: {e}") from None


def duidEN(enterprise: int, identifier: bytes) -> bytes:
    """
    Build a DUID-EN (RFC 8415 section 11.3).

    @raise ValueError: for an out-of-range enterprise number or an
        identifier that is empty or longer than 124 octets.
    """
    if not 1 <= len(identifier) <= 124:
        raise ValueError("DUID-EN identifier must be 1 to 124 octets")
    try:
        return _DUID_EN.pack(DuidType.EN, enterprise) + bytes(identifier)
    except struct.error as e:
        raise ValueError(f"DUID-EN enterprise number out of range: {e}") from None


def duidLL(hardwareType: int, linkLayerAddress: bytes) -> bytes:
    """
    Build a DUID-LL (RFC 8415 section 11.4).

    @raise ValueError: for out-of-range fields or a bad address length.
    """
    if not 1 <= len(linkLayerAddress) <= 126:
        raise ValueError("DUID-LL link-layer address must be 1 to 126 octets")
    try:
        return _DUID_LL.pack(DuidType.LL, hardwareType) + bytes(linkLayerAddress)
    except struct.error as e:
        raise ValueError(f"DUID-LL hardware type out of range: {e}") from None


def duidUUID(uuid: UUID) -> bytes:
    """
    Build a DUID-UUID (RFC 6355): the type, then the UUID's 16 octets in
    network order.
    """
    return _U16.pack(DuidType.UUID) + uuid.bytes


def duidToText(duid: bytes) -> str:
    """
    A DUID (or any octets) as lowercase colon-separated hex, e.g.
    C{"00:01:00:01:2b:3c:4d:5e:00:11:22:33:44:55"}.
    """
    return bytes(duid).hex(":")


def duidFromText(text: str) -> bytes:
    """
    Parse a DUID written as colon-separated hex (one or two digits per
    octet, C{"0:1:0:1:..."} is accepted) or as plain hex with an even number
    of digits.  Leading and trailing white space is ignored.

    @raise ValueError: with the reason, for anything else or for a DUID
        shorter than L{MIN_DUID_LENGTH} or longer than L{MAX_DUID_LENGTH}
        octets.
    """
    stripped = text.strip()
    if _HEX_COLONS.fullmatch(stripped):
        raw = bytes(int(part, 16) for part in stripped.split(":"))
    elif _HEX_PLAIN.fullmatch(stripped):
        raw = bytes.fromhex(stripped)
    else:
        raise ValueError(
            f"DUID {text!r} is not hex octets separated by colons nor an even number of hex digits"
        )
    if not MIN_DUID_LENGTH <= len(raw) <= MAX_DUID_LENGTH:
        raise ValueError(
            f"DUID {text!r} has {len(raw)} octets; a DUID has {MIN_DUID_LENGTH} to "
            f"{MAX_DUID_LENGTH}"
        )
    return raw
