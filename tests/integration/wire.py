# -*- test-case-name: tests.integration.test_netns -*-
"""
A deliberately small DHCPv6 codec for the integration tests.

It is written independently of L{dhcp6ha.message} so that the tests do not
share the server's own encoding mistakes: what goes on the wire here is built
by hand from RFC 8415 sections 8, 9 and 21.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
RELAY_FORW = 12
RELAY_REPL = 13

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IAADDR = 5
OPT_ORO = 6
OPT_ELAPSED_TIME = 8
OPT_RELAY_MSG = 9
OPT_STATUS_CODE = 13
OPT_INTERFACE_ID = 18
OPT_IA_PD = 25
OPT_IAPREFIX = 26


def option(code: int, data: bytes) -> bytes:
    """One option: code, length, data."""
    return struct.pack("!HH", code, len(data)) + data


def duidLL(n: int) -> bytes:
    """A DUID-LL (type 3, hardware type 1) with a MAC derived from C{n}."""
    return struct.pack("!HH", 3, 1) + b"\x02\x6a" + n.to_bytes(4, "big")


def iaNA(iaid: int, addresses: Iterable[IPv6Address] = ()) -> bytes:
    inner = b"".join(option(OPT_IAADDR, a.packed + struct.pack("!II", 0, 0)) for a in addresses)
    return option(OPT_IA_NA, struct.pack("!III", iaid, 0, 0) + inner)


def iaPD(iaid: int, prefixes: Iterable[tuple[IPv6Address, int]] = ()) -> bytes:
    inner = b"".join(
        option(OPT_IAPREFIX, struct.pack("!IIB", 0, 0, length) + p.packed) for p, length in prefixes
    )
    return option(OPT_IA_PD, struct.pack("!III", iaid, 0, 0) + inner)


def message(msgType: int, xid: int, *options: bytes) -> bytes:
    """A client message; an Elapsed Time option of 0 is added."""
    return (
        bytes([msgType])
        + xid.to_bytes(3, "big")
        + b"".join(options)
        + option(OPT_ELAPSED_TIME, b"\x00\x00")
    )


def relayForward(
    inner: bytes,
    linkAddress: IPv6Address,
    peerAddress: IPv6Address,
    interfaceId: bytes | None = None,
    hopCount: int = 0,
) -> bytes:
    """Wrap C{inner} in a RELAY-FORW (RFC 8415 section 9)."""
    out = bytes([RELAY_FORW, hopCount]) + linkAddress.packed + peerAddress.packed
    if interfaceId is not None:
        out += option(OPT_INTERFACE_ID, interfaceId)
    return out + option(OPT_RELAY_MSG, inner)


def parseOptions(data: bytes) -> list[tuple[int, bytes]]:
    """Split an options area; raise C{ValueError} on a truncated option."""
    out = []
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError("truncated option header")
        code, length = struct.unpack_from("!HH", data, i)
        if i + 4 + length > len(data):
            raise ValueError(f"option {code} overruns the message")
        out.append((code, data[i + 4 : i + 4 + length]))
        i += 4 + length
    return out


@dataclass
class IAResult:
    """What one IA_NA or IA_PD in a reply holds."""

    iaid: int
    t1: int
    t2: int
    status: int | None = None
    # (address, prefix length, preferred, valid, status-or-None)
    leases: list[tuple[IPv6Address, int, int, int, int | None]] = field(default_factory=list)


@dataclass
class Parsed:
    """A decoded message; for relay messages, the relay fields are set too."""

    msgType: int
    xid: int = 0
    options: list[tuple[int, bytes]] = field(default_factory=list)
    hopCount: int = 0
    linkAddress: IPv6Address | None = None
    peerAddress: IPv6Address | None = None

    def get(self, code: int) -> bytes | None:
        for c, d in self.options:
            if c == code:
                return d
        return None

    def all(self, code: int) -> list[bytes]:
        return [d for c, d in self.options if c == code]

    @property
    def status(self) -> int | None:
        data = self.get(OPT_STATUS_CODE)
        return None if data is None else struct.unpack_from("!H", data)[0]

    def ias(self) -> list[IAResult]:
        """Every IA_NA and IA_PD, decoded."""
        out = []
        for code, data in self.options:
            if code not in (OPT_IA_NA, OPT_IA_PD):
                continue
            iaid, t1, t2 = struct.unpack_from("!III", data)
            ia = IAResult(iaid, t1, t2)
            for sub, sdata in parseOptions(data[12:]):
                if sub == OPT_STATUS_CODE:
                    ia.status = struct.unpack_from("!H", sdata)[0]
                elif sub == OPT_IAADDR and code == OPT_IA_NA:
                    addr = IPv6Address(sdata[:16])
                    pref, valid = struct.unpack_from("!II", sdata, 16)
                    ia.leases.append((addr, 128, pref, valid, _status(sdata[24:])))
                elif sub == OPT_IAPREFIX and code == OPT_IA_PD:
                    pref, valid, length = struct.unpack_from("!IIB", sdata)
                    prefix = IPv6Address(sdata[9:25])
                    ia.leases.append((prefix, length, pref, valid, _status(sdata[25:])))
            out.append(ia)
        return out


def _status(data: bytes) -> int | None:
    for code, sdata in parseOptions(data):
        if code == OPT_STATUS_CODE:
            return int(struct.unpack_from("!H", sdata)[0])
    return None


def parse(data: bytes) -> Parsed:
    """Decode a client/server or relay message; C{ValueError} if malformed."""
    if not data:
        raise ValueError("empty datagram")
    if data[0] in (RELAY_FORW, RELAY_REPL):
        if len(data) < 34:
            raise ValueError("short relay message")
        return Parsed(
            data[0],
            options=parseOptions(data[34:]),
            hopCount=data[1],
            linkAddress=IPv6Address(data[2:18]),
            peerAddress=IPv6Address(data[18:34]),
        )
    if len(data) < 4:
        raise ValueError("short message")
    return Parsed(data[0], int.from_bytes(data[1:4], "big"), parseOptions(data[4:]))
