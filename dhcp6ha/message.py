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
"""

from __future__ import annotations

import enum
from ipaddress import IPv6Address
from typing import Union

from attrs import field, frozen


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

    message: Union[Message, RelayMessage]


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


Option = Union[
    UnknownOption,
    ClientId,
    ServerId,
    StatusCodeOption,
    IAAddress,
    IAPrefix,
    IANA,
    IATA,
    IAPD,
    OptionRequest,
    Preference,
    ElapsedTime,
    RelayMessageOption,
    Unicast,
    RapidCommit,
    InterfaceId,
    DNSServers,
    DomainList,
    ClientFQDN,
    SolMaxRt,
    InformationRefreshTime,
    VendorClass,
    VendorOpts,
]


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
