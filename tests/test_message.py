"""
Tests for L{dhcp6ha.message}: the DHCPv6 wire codec, DUID helpers and option
accessors.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from ipaddress import IPv6Address
from types import ModuleType
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.message import (
    DUID_TIME_EPOCH,
    HARDWARE_TYPE_ETHERNET,
    IANA,
    IAPD,
    IATA,
    MAX_MESSAGE_SIZE,
    MAX_OPTION_NESTING,
    MAX_RELAY_DEPTH,
    ClientFQDN,
    ClientId,
    DNSServers,
    DomainList,
    Duid,
    DuidType,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    InfMaxRt,
    InformationRefreshTime,
    InterfaceId,
    MalformedMessage,
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
    Unicast,
    UnknownOption,
    VendorClass,
    VendorOpts,
    decode,
    describeDuid,
    duidEN,
    duidFromText,
    duidLL,
    duidLLT,
    duidTime,
    duidToText,
    duidUUID,
    encode,
    getOption,
    getOptions,
    getUnknownOption,
    optionCode,
    parseDuid,
)
from tests import strategies as s

# --- helpers ---------------------------------------------------------------

LINK = IPv6Address("2001:db8:1::1")
PEER = IPv6Address("fe80::5054:ff:fe12:3456")
MAC = bytes.fromhex("525400123456")
DUID = bytes.fromhex("000100012c0e7a34525400123456")  # DUID-LLT, Ethernet, MAC above


def h(text: str) -> bytes:
    """Hex with spaces and line breaks ignored."""
    return bytes.fromhex("".join(text.split()))


def opt(code: int, payload: bytes) -> bytes:
    """One option on the wire."""
    return struct.pack("!HH", code, len(payload)) + payload


def solicitWith(*options: bytes) -> bytes:
    """A Solicit (transaction id 0x010203) with these wire options."""
    return b"\x01\x01\x02\x03" + b"".join(options)


def relayForw(inner: bytes, hopCount: int = 0) -> bytes:
    """A RELAY-FORW from LINK/PEER holding C{inner} in a RELAY_MSG."""
    return bytes([12, hopCount]) + LINK.packed + PEER.packed + opt(9, inner)


def lengthFieldOffsets(data: bytes) -> list[int]:
    """
    Offsets of every option length field in a valid encoding (top-level
    options, options inside IAs, IAADDR, IAPREFIX, and relayed messages).
    """
    offsets: list[int] = []
    inner = {3: 12, 4: 4, 25: 12, 5: 24, 26: 25}

    def message(start: int, end: int) -> None:
        options(start + (34 if data[start] in (12, 13) else 4), end)

    def options(pos: int, end: int) -> None:
        while pos < end:
            code, length = struct.unpack_from("!HH", data, pos)
            offsets.append(pos + 2)
            if code in inner:
                options(pos + 4 + inner[code], pos + 4 + length)
            elif code == 9:
                message(pos + 4, pos + 4 + length)
            pos += 4 + length

    message(0, len(data))
    return offsets


class CodecAssertions(SynchronousTestCase):
    """Shared assertions."""

    def assertDecodesTo(self, data: bytes, expected: Message | RelayMessage) -> None:
        """C{data} decodes to C{expected} and C{expected} encodes to C{data}."""
        self.assertEqual(decode(data), expected)
        self.assertEqual(encode(expected), data)

    def assertOption(self, wire: bytes, expected: Option) -> None:
        """One wire option (in a Solicit) decodes to C{expected} and back."""
        self.assertDecodesTo(solicitWith(wire), Message(MessageType.SOLICIT, 0x010203, (expected,)))

    def assertMalformed(self, data: bytes, reasonPart: str) -> MalformedMessage:
        """C{data} is refused with a reason mentioning C{reasonPart}."""
        e: MalformedMessage = self.assertRaises(MalformedMessage, decode, data)
        self.assertIn(reasonPart, str(e.args[0]))
        return e

    def assertDecodesOrMalformed(self, data: bytes) -> None:
        """
        C{decode} either raises L{MalformedMessage} or returns a value that
        encodes back to exactly C{data}.
        """
        try:
            msg = decode(data)
        except MalformedMessage:
            return
        self.assertEqual(encode(msg), data)


# --- properties ------------------------------------------------------------


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, rewritten length fields and overwritten octets of C{data}."""
    offsets = lengthFieldOffsets(data)
    truncated = st.integers(0, len(data) - 1).map(lambda n: data[:n])
    overwritten = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda p: data[: p[0]] + bytes([p[1]]) + data[p[0] + 1 :]
    )
    choices = [truncated, overwritten]
    if offsets:
        choices.append(
            st.tuples(st.sampled_from(offsets), st.integers(0, 0xFFFF)).map(
                lambda p: data[: p[0]] + struct.pack("!H", p[1]) + data[p[0] + 2 :]
            )
        )
    return st.one_of(choices)


@st.composite
def mutatedEncodings(draw: st.DrawFn) -> bytes:
    """Valid encodings of generated messages, then mutated."""
    data = encode(draw(s.anyMessages()))
    return draw(_mutations(data))


@st.composite
def garbledOptions(draw: st.DrawFn) -> bytes:
    """
    A message header followed by options with interpreted codes and random
    payloads (correct option lengths), so that every option parser meets
    garbage.
    """
    codes = sorted(s.INTERPRETED_CODES)
    header = draw(
        st.one_of(
            st.just(b"\x01\x00\x00\x01"),
            st.just(bytes([12, 0]) + LINK.packed + PEER.packed),
        )
    )
    body = draw(
        st.lists(st.tuples(st.sampled_from(codes), st.binary(max_size=40)), min_size=1, max_size=4)
    )
    return header + b"".join(opt(code, payload) for code, payload in body)


class PropertyTests(CodecAssertions):
    """Properties over generated messages and generated bytes."""

    @given(s.messages())
    def test_messageRoundTrip(self, msg: Message) -> None:
        """Every generated client/server message decodes back to itself."""
        self.assertEqual(decode(encode(msg)), msg)

    @given(s.relayMessages())
    def test_relayRoundTrip(self, msg: RelayMessage) -> None:
        """Every generated relay message, nested up to 3 levels, decodes back to itself."""
        self.assertEqual(decode(encode(msg)), msg)

    @given(s.anyMessages())
    def test_bytesRoundTrip(self, msg: Message | RelayMessage) -> None:
        """Decoding then encoding a valid encoding gives the same octets."""
        data = encode(msg)
        self.assertEqual(encode(decode(data)), data)

    @given(st.binary(max_size=300))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes either decode (and then re-encode to the same octets)
        or raise L{MalformedMessage}; nothing else escapes.
        """
        self.assertDecodesOrMalformed(data)

    @given(garbledOptions())
    def test_garbledOptionPayloads(self, data: bytes) -> None:
        """Interpreted options with random payloads never raise another exception."""
        self.assertDecodesOrMalformed(data)

    @given(mutatedEncodings())
    def test_mutatedEncodings(self, data: bytes) -> None:
        """
        Truncated encodings, rewritten length fields and overwritten octets
        raise only L{MalformedMessage}, or decode to something that encodes
        back to the same octets.
        """
        self.assertDecodesOrMalformed(data)

    @given(s.anyMessages(), st.data())
    def test_truncatedHeader(self, msg: Message | RelayMessage, data: st.DataObject) -> None:
        """Any encoding cut inside its fixed header is refused."""
        wire = encode(msg)
        headerSize = 34 if isinstance(msg, RelayMessage) else 4
        cut = data.draw(st.integers(0, headerSize - 1))
        self.assertRaises(MalformedMessage, decode, wire[:cut])

    @given(s.messages(), st.data())
    def test_truncatedInsideOption(self, msg: Message, data: st.DataObject) -> None:
        """An encoding cut strictly inside a top-level option is refused."""
        wire = encode(msg)
        boundaries = {4}
        pos = 4
        while pos < len(wire):
            pos += 4 + struct.unpack_from("!H", wire, pos + 2)[0]
            boundaries.add(pos)
        cuts = [n for n in range(4, len(wire)) if n not in boundaries]
        if cuts:
            cut = data.draw(st.sampled_from(cuts))
            self.assertRaises(MalformedMessage, decode, wire[:cut])


# --- hand-written vectors: messages ----------------------------------------

# A Solicit as ISC dhclient 4.4 ("dhclient -6") sends it, laid out by hand from
# RFC 8415 sections 8, 21.2, 21.4, 21.7 and 21.9: Client Identifier (DUID-LLT
# from the interface MAC), Option Request (DNS servers, domain list, client
# FQDN, SNTP servers), Elapsed Time 0, and one IA_NA whose IAID is the last four
# octets of the MAC, with T1 = T2 = 0 and no address hint.
DHCLIENT_SOLICIT = h(
    """
    01 8f3e21
    0001 000e  0001 0001 2c0e7a34 525400123456
    0006 0008  0017 0018 0027 001f
    0008 0002  0000
    0003 000c  00123456 00000000 00000000
    """
)


class MessageVectorTests(CodecAssertions):
    """Hand-written wire vectors for every message type."""

    def test_dhclientSolicit(self) -> None:
        """A real-world Solicit decodes to the expected values, and back."""
        self.assertDecodesTo(
            DHCLIENT_SOLICIT,
            Message(
                MessageType.SOLICIT,
                0x8F3E21,
                (
                    ClientId(DUID),
                    OptionRequest((23, 24, 39, 31)),
                    ElapsedTime(0),
                    IANA(0x00123456, 0, 0),
                ),
            ),
        )
        msg = decode(DHCLIENT_SOLICIT)
        assert isinstance(msg, Message)
        self.assertIs(msg.msg_type, MessageType.SOLICIT)
        clientId = getOption(msg.options, ClientId)
        assert clientId is not None
        self.assertEqual(
            parseDuid(clientId.duid),
            Duid(DuidType.LLT, hardware_type=1, time=0x2C0E7A34, link_layer_address=MAC),
        )

    def test_everyClientServerType(self) -> None:
        """
        Each client/server message type decodes with its L{MessageType}, the
        24-bit transaction id and its options.
        """
        for msgType in MessageType:
            if msgType in (MessageType.RELAY_FORW, MessageType.RELAY_REPL):
                continue
            wire = bytes([msgType]) + h("abcdef") + opt(1, DUID)
            msg = decode(wire)
            self.assertEqual(msg, Message(msgType, 0xABCDEF, (ClientId(DUID),)))
            self.assertIs(msg.msg_type, msgType)
            self.assertEqual(encode(msg), wire)

    def test_headerOnly(self) -> None:
        """A message may have no options at all."""
        self.assertDecodesTo(h("0b 000000"), Message(MessageType.INFORMATION_REQUEST, 0))

    def test_maximumTransactionId(self) -> None:
        """The transaction id is the 24 bits after the type."""
        self.assertDecodesTo(h("07 ffffff"), Message(MessageType.REPLY, 0xFFFFFF))

    def test_unknownMessageType(self) -> None:
        """
        A message type this module does not know is kept as a plain int with
        the client/server layout (the engine drops it).
        """
        for msgType in (0, 14, 36, 255):
            wire = bytes([msgType]) + h("000001") + opt(300, b"x")
            msg = decode(wire)
            self.assertEqual(msg, Message(msgType, 1, (UnknownOption(300, b"x"),)))
            self.assertNotIsInstance(msg.msg_type, MessageType)
            self.assertEqual(encode(msg), wire)

    def test_relayForward(self) -> None:
        """A RELAY-FORW with an Interface-Id and the relayed dhclient Solicit."""
        wire = (
            bytes([12, 1]) + LINK.packed + PEER.packed + opt(18, b"eth0") + opt(9, DHCLIENT_SOLICIT)
        )
        self.assertDecodesTo(
            wire,
            RelayMessage(
                MessageType.RELAY_FORW,
                1,
                LINK,
                PEER,
                (InterfaceId(b"eth0"), RelayMessageOption(decode(DHCLIENT_SOLICIT))),
            ),
        )

    def test_relayReply(self) -> None:
        """A RELAY-REPL carrying a Reply; options after RELAY_MSG keep their place."""
        reply = h("07 8f3e21") + opt(2, DUID) + opt(13, b"\x00\x00ok")
        wire = bytes([13, 0]) + LINK.packed + PEER.packed + opt(9, reply) + opt(18, b"eth0")
        self.assertDecodesTo(
            wire,
            RelayMessage(
                MessageType.RELAY_REPL,
                0,
                LINK,
                PEER,
                (
                    RelayMessageOption(
                        Message(
                            MessageType.REPLY,
                            0x8F3E21,
                            (ServerId(DUID), StatusCodeOption(StatusCode.SUCCESS, "ok")),
                        )
                    ),
                    InterfaceId(b"eth0"),
                ),
            ),
        )

    def test_relayNesting32(self) -> None:
        """32 nested relay messages (RFC 3315 HOP_COUNT_LIMIT) are accepted."""
        wire = DHCLIENT_SOLICIT
        for hop in range(MAX_RELAY_DEPTH):
            wire = relayForw(wire, hop)
        msg = decode(wire)
        depth = 0
        while isinstance(msg, RelayMessage):
            depth += 1
            inner = getOption(msg.options, RelayMessageOption)
            assert inner is not None
            msg = inner.message
        self.assertEqual(depth, 32)
        self.assertEqual(msg, decode(DHCLIENT_SOLICIT))
        self.assertEqual(encode(decode(wire)), wire)

    def test_relayNesting33(self) -> None:
        """33 nested relay messages are refused."""
        wire = DHCLIENT_SOLICIT
        for hop in range(MAX_RELAY_DEPTH + 1):
            wire = relayForw(wire, hop)
        self.assertMalformed(wire, "nested")

    def test_relayNesting33WithoutClientMessage(self) -> None:
        """
        33 relay levels are refused even when the innermost relay carries no
        RELAY_MSG option.
        """
        wire = bytes([12, 0]) + LINK.packed + PEER.packed
        for hop in range(MAX_RELAY_DEPTH):
            wire = relayForw(wire, hop)
        self.assertMalformed(wire, "nested")

    def test_relayMsgNestingInClientMessages(self) -> None:
        """
        RELAY_MSG inside client messages counts too: a tower of thousands of
        them is refused with L{MalformedMessage}, not C{RecursionError}.
        """
        wire = h("01 000001")
        for _ in range(5000):
            wire = h("01 000001") + opt(9, wire)
            if len(wire) > 60000:
                break
        self.assertMalformed(wire, "nested")

    def test_relayMsgInsideOption(self) -> None:
        """RELAY_MSG is only accepted directly in a message's options."""
        wire = solicitWith(opt(3, h("00000001 00000000 00000000") + opt(9, h("01 000001"))))
        self.assertMalformed(wire, "RELAY_MSG option inside another option")

    def test_optionNesting(self) -> None:
        """
        Options nested L{MAX_OPTION_NESTING} levels below the top are
        accepted; one more level is refused; very deep nesting is refused
        without C{RecursionError}.
        """

        def tower(levels: int) -> bytes:
            wire = b""
            for _ in range(levels):
                wire = opt(3, h("00000001 00000000 00000000") + wire)
            return solicitWith(wire)

        # tower(n) has an IA_NA at the top and n - 1 IA_NAs below it.
        decode(tower(MAX_OPTION_NESTING + 1))
        self.assertMalformed(tower(MAX_OPTION_NESTING + 2), "nested more than")
        self.assertMalformed(tower(4000), "nested more than")

    def test_truncatedHeaders(self) -> None:
        """Messages shorter than their fixed header are refused."""
        self.assertMalformed(b"", "truncated header")
        for n in range(1, 4):
            self.assertMalformed(DHCLIENT_SOLICIT[:n], "truncated message header")
        relay = relayForw(DHCLIENT_SOLICIT)
        for n in (1, 2, 18, 33):
            self.assertMalformed(relay[:n], "truncated relay message header")

    def test_truncatedOptionHeader(self) -> None:
        """An option header cut short is refused."""
        self.assertMalformed(DHCLIENT_SOLICIT + b"\x00\x01\x00", "truncated option header")

    def test_optionOverrunsMessage(self) -> None:
        """An option whose length runs past the end of the message is refused."""
        wire = solicitWith(h("0001 0010") + DUID)  # 16 claimed, 14 present
        self.assertMalformed(wire, "overruns its container by 2 octets")

    def test_subOptionOverrunsContainer(self) -> None:
        """A sub-option running past the end of its IA_NA is refused."""
        address = h("0005 0018") + IPv6Address("2001:db8::1").packed + h("00000e10 00001c20")
        iana = opt(3, h("00000001 00000000 00000000") + address[:-1])
        self.assertMalformed(solicitWith(iana), "overruns its container")

    def test_relayedMessageOverrun(self) -> None:
        """An option overrunning the relayed message (not the datagram) is refused."""
        inner = h("01 000001") + h("0008 0004 0000")  # claims 4, has 2
        wire = relayForw(inner) + opt(18, b"eth0")
        self.assertMalformed(wire, "overruns its container")

    def test_emptyRelayMsg(self) -> None:
        """An empty RELAY_MSG holds no message and is refused."""
        self.assertMalformed(relayForw(b""), "truncated header")

    def test_oversized(self) -> None:
        """More than 65535 octets is refused; exactly 65535 is fine."""
        padding = opt(300, b"\x00" * (MAX_MESSAGE_SIZE - 4 - 4))
        wire = solicitWith(padding)
        self.assertEqual(len(wire), MAX_MESSAGE_SIZE)
        self.assertEqual(encode(decode(wire)), wire)
        self.assertMalformed(wire + b"\x00", "longer than 65535")

    def test_acceptsBytesLike(self) -> None:
        """C{bytearray} and C{memoryview} input decode like C{bytes}."""
        expected = decode(DHCLIENT_SOLICIT)
        self.assertEqual(decode(bytearray(DHCLIENT_SOLICIT)), expected)
        self.assertEqual(decode(memoryview(DHCLIENT_SOLICIT)), expected)
        clientId = getOption(decode(bytearray(DHCLIENT_SOLICIT)).options, ClientId)
        assert clientId is not None
        self.assertIs(type(clientId.duid), bytes)


# --- hand-written vectors: options -----------------------------------------

A1 = IPv6Address("2001:db8::1")
A2 = IPv6Address("2001:db8::2")


class OptionVectorTests(CodecAssertions):
    """Hand-written wire vectors for every option, good and bad."""

    def test_clientId(self) -> None:
        """OPTION_CLIENTID (1) carries the DUID octets as they are."""
        self.assertOption(opt(1, DUID), ClientId(DUID))

    def test_serverId(self) -> None:
        """OPTION_SERVERID (2) carries the DUID octets as they are."""
        self.assertOption(opt(2, duidEN(9, b"ab")), ServerId(h("0002 00000009 6162")))

    def test_duidLengthLimits(self) -> None:
        """A DUID must be 3 to 130 octets (RFC 8415 section 11.1)."""
        self.assertOption(opt(1, b"\x00\x09x"), ClientId(b"\x00\x09x"))
        self.assertOption(opt(2, b"\x00\x02" + b"x" * 128), ServerId(b"\x00\x02" + b"x" * 128))
        self.assertMalformed(solicitWith(opt(1, b"")), "CLIENTID option of length 0")
        self.assertMalformed(solicitWith(opt(1, b"\x00\x01")), "CLIENTID option of length 2")
        self.assertMalformed(solicitWith(opt(2, b"\x00" * 131)), "SERVERID option of length 131")

    def test_iaNA(self) -> None:
        """OPTION_IA_NA (3) with an IAADDR holding a status code."""
        wire = opt(
            3,
            h("00000007 00000708 00000b40")
            + opt(5, A1.packed + h("00000e10 00001c20") + opt(13, h("0000") + b"fine")),
        )
        self.assertOption(
            wire,
            IANA(
                7,
                1800,
                2880,
                (IAAddress(A1, 3600, 7200, (StatusCodeOption(StatusCode.SUCCESS, "fine"),)),),
            ),
        )

    def test_iaNAMalformed(self) -> None:
        """IA_NA shorter than 12 octets, or with bad sub-options, is refused."""
        self.assertMalformed(solicitWith(opt(3, b"\x00" * 11)), "IA_NA option of length 11")
        self.assertMalformed(
            solicitWith(opt(3, b"\x00" * 12 + opt(5, b"\x00" * 23))), "IAADDR option of length 23"
        )
        self.assertMalformed(
            solicitWith(opt(3, b"\x00" * 12 + b"\x00\x05")), "truncated option header"
        )

    def test_iaTA(self) -> None:
        """OPTION_IA_TA (4): IAID and IAADDR sub-options."""
        wire = opt(4, h("00000009") + opt(5, A2.packed + h("00000000 ffffffff")))
        self.assertOption(wire, IATA(9, (IAAddress(A2, 0, 0xFFFFFFFF),)))
        self.assertMalformed(solicitWith(opt(4, b"\x00" * 3)), "IA_TA option of length 3")

    def test_iaAddress(self) -> None:
        """OPTION_IAADDR (5) parses even at the top level (the engine decides)."""
        self.assertOption(opt(5, A1.packed + h("00000001 00000002")), IAAddress(A1, 1, 2))
        self.assertMalformed(
            solicitWith(opt(5, A1.packed + h("00000001 00000002") + b"\x00")),
            "truncated option header",
        )

    def test_iaPD(self) -> None:
        """OPTION_IA_PD (25) with an IAPREFIX (26)."""
        prefix = IPv6Address("2001:db8:100::")
        wire = opt(
            25,
            h("00000001 00000064 000000c8") + opt(26, h("00000e10 00001c20 38") + prefix.packed),
        )
        self.assertOption(wire, IAPD(1, 100, 200, (IAPrefix(3600, 7200, 56, prefix),)))
        self.assertMalformed(solicitWith(opt(25, b"\x00" * 4)), "IA_PD option of length 4")

    def test_iaPrefix(self) -> None:
        """IAPREFIX needs 25 octets and a prefix length of at most 128."""
        self.assertOption(opt(26, h("00000000 00000000 80") + A1.packed), IAPrefix(0, 0, 128, A1))
        self.assertMalformed(
            solicitWith(opt(26, h("00000000 00000000 81") + A1.packed)),
            "prefix length 129",
        )
        self.assertMalformed(solicitWith(opt(26, b"\x00" * 24)), "IAPREFIX option of length 24")

    def test_optionRequest(self) -> None:
        """OPTION_ORO (6): a list of 16-bit codes; an odd length is refused."""
        self.assertOption(opt(6, h("0017 0018 0052")), OptionRequest((23, 24, 82)))
        self.assertOption(opt(6, b""), OptionRequest(()))
        self.assertMalformed(solicitWith(opt(6, h("0017 00"))), "ORO option of length 3")

    def test_preference(self) -> None:
        """OPTION_PREFERENCE (7): exactly one octet."""
        self.assertOption(opt(7, b"\xff"), Preference(255))
        self.assertMalformed(solicitWith(opt(7, b"")), "PREFERENCE option of length 0")
        self.assertMalformed(solicitWith(opt(7, b"\x00\x00")), "PREFERENCE option of length 2")

    def test_elapsedTime(self) -> None:
        """OPTION_ELAPSED_TIME (8): exactly two octets."""
        self.assertOption(opt(8, h("ffff")), ElapsedTime(0xFFFF))
        self.assertMalformed(solicitWith(opt(8, b"\x00")), "ELAPSED_TIME option of length 1")
        self.assertMalformed(solicitWith(opt(8, b"\x00" * 3)), "ELAPSED_TIME option of length 3")

    def test_unicast(self) -> None:
        """OPTION_UNICAST (12): exactly one address."""
        self.assertOption(opt(12, A2.packed), Unicast(A2))
        self.assertMalformed(solicitWith(opt(12, A2.packed[:15])), "UNICAST option of length 15")

    def test_statusCode(self) -> None:
        """OPTION_STATUS_CODE (13): code and UTF-8 message."""
        self.assertOption(
            opt(13, h("0002") + "plus d'adresse ☹".encode()),
            StatusCodeOption(StatusCode.NO_ADDRS_AVAIL, "plus d'adresse ☹"),
        )
        self.assertOption(opt(13, h("0006")), StatusCodeOption(StatusCode.NO_PREFIX_AVAIL))
        self.assertOption(opt(13, h("1234")), StatusCodeOption(0x1234))

    def test_statusCodeMalformed(self) -> None:
        """A status code under two octets, or a message that is not UTF-8, is refused."""
        self.assertMalformed(solicitWith(opt(13, b"\x00")), "STATUS_CODE option of length 1")
        self.assertMalformed(solicitWith(opt(13, b"\x00\x00\xff\xfe")), "not UTF-8")
        # CESU-style surrogates are not UTF-8 either.
        self.assertMalformed(solicitWith(opt(13, b"\x00\x00\xed\xa0\x80")), "not UTF-8")

    def test_rapidCommit(self) -> None:
        """OPTION_RAPID_COMMIT (14): empty."""
        self.assertOption(opt(14, b""), RapidCommit())
        self.assertMalformed(solicitWith(opt(14, b"\x00")), "RAPID_COMMIT option of length 1")

    def test_vendorClass(self) -> None:
        """OPTION_VENDOR_CLASS (16): enterprise number and length-prefixed data."""
        self.assertOption(
            opt(16, h("00000137 0008") + b"MSFT 5.0" + h("0000")),
            VendorClass(311, (b"MSFT 5.0", b"")),
        )
        self.assertOption(opt(16, h("00000137")), VendorClass(311, ()))
        self.assertMalformed(solicitWith(opt(16, h("000001"))), "VENDOR_CLASS option of length 3")
        self.assertMalformed(solicitWith(opt(16, h("00000137 00"))), "truncated data length")
        self.assertMalformed(solicitWith(opt(16, h("00000137 0002 00"))), "overruns")

    def test_vendorOpts(self) -> None:
        """OPTION_VENDOR_OPTS (17): enterprise number and (code, data) sub-options."""
        self.assertOption(
            opt(17, h("0000118b 0001 0002 7878 0002 0000")),
            VendorOpts(4491, ((1, b"xx"), (2, b""))),
        )
        self.assertMalformed(solicitWith(opt(17, h("0000"))), "VENDOR_OPTS option of length 2")
        self.assertMalformed(solicitWith(opt(17, h("0000118b 0001 00"))), "truncated sub-option")
        self.assertMalformed(solicitWith(opt(17, h("0000118b 0001 0003 78"))), "overruns")

    def test_interfaceId(self) -> None:
        """OPTION_INTERFACE_ID (18): opaque octets."""
        self.assertOption(opt(18, b"\x00eth0\xff"), InterfaceId(b"\x00eth0\xff"))
        self.assertOption(opt(18, b""), InterfaceId(b""))

    def test_dnsServers(self) -> None:
        """OPTION_DNS_SERVERS (23): addresses; a length not a multiple of 16 is refused."""
        self.assertOption(opt(23, A1.packed + A2.packed), DNSServers((A1, A2)))
        self.assertOption(opt(23, b""), DNSServers(()))
        self.assertMalformed(solicitWith(opt(23, A1.packed + b"\x00")), "multiple of 16")

    def test_domainList(self) -> None:
        """OPTION_DOMAIN_LIST (24): RFC 1035 names, kept without the trailing dot."""
        self.assertOption(
            opt(24, h("07") + b"example" + h("03") + b"com" + h("00 03") + b"Lab" + h("00")),
            DomainList(("example.com", "Lab")),
        )
        self.assertOption(opt(24, b"\x00"), DomainList(("",)))
        self.assertOption(opt(24, b""), DomainList(()))

    def test_domainListMalformed(self) -> None:
        """
        A name that lacks its root label, is compressed, has a label over 63
        octets, is over 255 octets or holds non-ASCII, a dot or a control
        octet is refused.
        """
        self.assertMalformed(solicitWith(opt(24, b"\x03com")), "does not end with the root label")
        self.assertMalformed(solicitWith(opt(24, b"\x03com\x00\xc0\x00")), "compression pointer")
        self.assertMalformed(solicitWith(opt(24, b"\x40" + b"a" * 64 + b"\x00")), "longer than 63")
        self.assertMalformed(solicitWith(opt(24, b"\x05ab")), "overruns")
        self.assertMalformed(solicitWith(opt(24, b"\x02\xc3\xa9\x00")), "not printable ASCII")
        self.assertMalformed(solicitWith(opt(24, b"\x03a.b\x00")), "not printable ASCII, or a dot")
        self.assertMalformed(solicitWith(opt(24, b"\x02a\n\x00")), "not printable ASCII")
        longest = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"
        self.assertEqual(len(longest), 255)
        self.assertOption(opt(24, longest), DomainList((".".join(["a" * 63] * 3 + ["a" * 61]),)))
        tooLong = (b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"a" * 62 + b"\x00"
        self.assertMalformed(solicitWith(opt(24, tooLong)), "longer than 255")

    def test_clientFQDN(self) -> None:
        """
        OPTION_CLIENT_FQDN (39): flags and a name, partial when it does not
        end with the root label (RFC 4704 section 4.2).
        """
        self.assertOption(
            opt(39, h("01 04") + b"host" + h("07") + b"example" + h("00")),
            ClientFQDN(1, "host.example", partial=False),
        )
        self.assertOption(opt(39, h("00 04") + b"host"), ClientFQDN(0, "host", partial=True))
        self.assertOption(opt(39, h("04")), ClientFQDN(4, "", partial=True))
        self.assertOption(opt(39, h("00 00")), ClientFQDN(0, "", partial=False))
        self.assertOption(opt(39, h("f8 00")), ClientFQDN(0xF8, "", partial=False))

    def test_clientFQDNMalformed(self) -> None:
        """An empty CLIENT_FQDN, data after the root label or a bad label is refused."""
        self.assertMalformed(solicitWith(opt(39, b"")), "CLIENT_FQDN option of length 0")
        self.assertMalformed(solicitWith(opt(39, b"\x00\x01a\x00\x01b")), "after the domain name")
        self.assertMalformed(solicitWith(opt(39, b"\x00\x01\xff")), "not printable ASCII")
        self.assertMalformed(solicitWith(opt(39, b"\x00" + (b"\x3f" + b"a" * 63) * 4)), "255")

    def test_informationRefreshTime(self) -> None:
        """OPTION_INFORMATION_REFRESH_TIME (32): exactly four octets."""
        self.assertOption(opt(32, h("00015180")), InformationRefreshTime(86400))
        self.assertMalformed(solicitWith(opt(32, h("000151"))), "of length 3")

    def test_solMaxRt(self) -> None:
        """OPTION_SOL_MAX_RT (82): exactly four octets."""
        self.assertOption(opt(82, h("00000e10")), SolMaxRt(3600))
        self.assertMalformed(solicitWith(opt(82, h("0000000e10"))), "SOL_MAX_RT option of length 5")

    def test_infMaxRt(self) -> None:
        """OPTION_INF_MAX_RT (83): exactly four octets."""
        self.assertOption(opt(83, h("00000e10")), InfMaxRt(3600))
        self.assertMalformed(solicitWith(opt(83, h("000e10"))), "INF_MAX_RT option of length 3")

    def test_relayMsg(self) -> None:
        """OPTION_RELAY_MSG (9) holds a decoded message."""
        self.assertDecodesTo(
            relayForw(h("0b 000002")),
            RelayMessage(
                MessageType.RELAY_FORW,
                0,
                LINK,
                PEER,
                (RelayMessageOption(Message(MessageType.INFORMATION_REQUEST, 2)),),
            ),
        )

    def test_uninterpretedOptions(self) -> None:
        """
        AUTH, USER_CLASS, RECONF_MSG and RECONF_ACCEPT are deliberately kept as
        L{UnknownOption}, whatever their payload.
        """
        self.assertOption(
            opt(11, b"\x03\x01\x00" + b"\x00" * 8), UnknownOption(11, b"\x03\x01\x00" + b"\x00" * 8)
        )
        self.assertOption(opt(15, h("0004") + b"gold"), UnknownOption(15, h("0004") + b"gold"))
        self.assertOption(opt(19, b"\x05"), UnknownOption(19, b"\x05"))
        self.assertOption(opt(20, b""), UnknownOption(OptionCode.RECONF_ACCEPT, b""))
        self.assertOption(opt(15, b"\xff"), UnknownOption(15, b"\xff"))

    def test_unknownOptions(self) -> None:
        """Unknown codes are kept byte for byte and in order."""
        wire = solicitWith(opt(0, b""), opt(1, DUID), opt(65535, b"\x01\x02"), opt(37, b"rid"))
        self.assertDecodesTo(
            wire,
            Message(
                MessageType.SOLICIT,
                0x010203,
                (
                    UnknownOption(0, b""),
                    ClientId(DUID),
                    UnknownOption(65535, b"\x01\x02"),
                    UnknownOption(37, b"rid"),
                ),
            ),
        )

    def test_unknownSubOptions(self) -> None:
        """Unknown options inside IAs and IAPREFIX (e.g. RFC 6603 PD_EXCLUDE) are kept."""
        prefix = IPv6Address("2001:db8:100::")
        wire = opt(
            25,
            h("00000001 00000000 00000000")
            + opt(26, h("00000000 00000000 38") + prefix.packed + opt(67, h("40 01"))),
        )
        self.assertOption(
            wire, IAPD(1, 0, 0, (IAPrefix(0, 0, 56, prefix, (UnknownOption(67, h("4001")),)),))
        )


class EncodeTests(SynchronousTestCase):
    """What L{encode} refuses."""

    def test_valuesOutOfRange(self) -> None:
        """Numbers that do not fit their wire field raise C{ValueError}."""
        bad: list[Message | RelayMessage] = [
            Message(1, 1 << 24),
            Message(1, -1),
            Message(256, 0),
            Message(-1, 0),
            Message(1, 0, (ElapsedTime(65536),)),
            Message(1, 0, (Preference(-1),)),
            Message(1, 0, (IANA(1 << 32, 0, 0),)),
            Message(1, 0, (IANA(0, 0, 0, (IAAddress(A1, -1, 0),)),)),
            Message(1, 0, (IAPD(0, 0, 0, (IAPrefix(0, 0, 129, A1),)),)),
            Message(1, 0, (OptionRequest((70000,)),)),
            Message(1, 0, (UnknownOption(65536, b""),)),
            Message(1, 0, (StatusCodeOption(-1, ""),)),
            Message(1, 0, (ClientFQDN(256, "a"),)),
            Message(1, 0, (ClientId(b"\x00\x01"),)),
            Message(1, 0, (ServerId(b"\x00" * 131),)),
            Message(1, 0, (VendorClass(1 << 32, ()),)),
            Message(1, 0, (VendorOpts(0, ((65536, b""),)),)),
            Message(1, 0, (UnknownOption(300, b"\x00" * 65536),)),
            Message(1, 0, (UnknownOption(300, b"\x00" * 40000),) * 2),
            RelayMessage(12, 256, A1, A2),
        ]
        for msg in bad:
            self.assertRaises(ValueError, encode, msg)

    def test_badNames(self) -> None:
        """Domain names that cannot be put on the wire raise C{ValueError}."""
        for name in [
            "a..b",
            "example.com.",
            ".",
            "é.example",
            "a" * 64,
            "a\nb",
            ".".join(["a" * 63] * 4),
        ]:
            e = self.assertRaises(ValueError, encode, Message(1, 0, (DomainList((name,)),)))
            self.assertIn(repr(name), str(e))
            self.assertRaises(ValueError, encode, Message(1, 0, (ClientFQDN(0, name),)))

    def test_typeMismatch(self) -> None:
        """A relay type in a L{Message}, or the reverse, raises C{ValueError}."""
        self.assertRaises(ValueError, encode, Message(MessageType.RELAY_FORW, 0))
        self.assertRaises(ValueError, encode, RelayMessage(MessageType.SOLICIT, 0, A1, A2))

    def test_notAnOption(self) -> None:
        """Something that is not an option class raises C{TypeError}."""
        notOption: Any = "CLIENTID"
        self.assertRaises(TypeError, encode, Message(1, 0, (notOption,)))
        notMessage: Any = b"\x01\x00\x00\x00"
        self.assertRaises(TypeError, encode, notMessage)

    def test_enumsAndIntsEncodeAlike(self) -> None:
        """IntEnum members and plain ints encode to the same octets and compare equal."""
        asEnums = Message(
            MessageType.ADVERTISE, 7, (StatusCodeOption(StatusCode.NOT_ON_LINK, "x"),)
        )
        asInts = Message(2, 7, (StatusCodeOption(4, "x"),))
        self.assertEqual(encode(asEnums), encode(asInts))
        self.assertEqual(asEnums, asInts)
        self.assertEqual(hash(asEnums), hash(asInts))
        self.assertEqual(decode(encode(asInts)), asEnums)


# --- accessors ---------------------------------------------------------------


class AccessorTests(SynchronousTestCase):
    """L{getOption}, L{getOptions}, L{getUnknownOption}, L{optionCode}."""

    options: tuple[Option, ...] = (
        ClientId(DUID),
        IANA(1, 0, 0),
        UnknownOption(20, b""),
        IANA(2, 0, 0),
        UnknownOption(15, b"x"),
    )

    def test_getOption(self) -> None:
        """The first option of the class, or None."""
        self.assertEqual(getOption(self.options, IANA), IANA(1, 0, 0))
        self.assertEqual(getOption(self.options, ClientId), ClientId(DUID))
        self.assertIsNone(getOption(self.options, ServerId))
        self.assertIsNone(getOption((), IANA))

    def test_getOptions(self) -> None:
        """Every option of the class, in order."""
        self.assertEqual(getOptions(self.options, IANA), [IANA(1, 0, 0), IANA(2, 0, 0)])
        self.assertEqual(getOptions(self.options, IAPD), [])

    def test_getUnknownOption(self) -> None:
        """Unknown options are found by code."""
        self.assertEqual(
            getUnknownOption(self.options, OptionCode.RECONF_ACCEPT), UnknownOption(20, b"")
        )
        self.assertEqual(getUnknownOption(self.options, 15), UnknownOption(15, b"x"))
        self.assertIsNone(getUnknownOption(self.options, 11))

    def test_optionCode(self) -> None:
        """The wire code of every option class, and of unknown options."""
        self.assertEqual(optionCode(ClientId(DUID)), OptionCode.CLIENTID)
        self.assertEqual(optionCode(SolMaxRt(1)), 82)
        self.assertEqual(optionCode(InfMaxRt(1)), 83)
        self.assertEqual(optionCode(UnknownOption(1234, b"")), 1234)

    @given(s.options())
    def test_optionCodeMatchesWire(self, option: Option) -> None:
        """L{optionCode} is the code L{encode} writes."""
        wire = encode(Message(1, 0, (option,)))
        self.assertEqual(optionCode(option), struct.unpack_from("!H", wire, 4)[0])


# --- DUIDs ---------------------------------------------------------------------


class DuidTests(SynchronousTestCase):
    """DUID builders, parser, description and text forms."""

    def test_duidLLT(self) -> None:
        """DUID-LLT: type 1, hardware type, time since 2000, link-layer address."""
        self.assertEqual(duidLLT(HARDWARE_TYPE_ETHERNET, 0x2C0E7A34, MAC), DUID)
        self.assertEqual(
            parseDuid(DUID),
            Duid(DuidType.LLT, hardware_type=1, time=0x2C0E7A34, link_layer_address=MAC),
        )
        self.assertRaises(ValueError, duidLLT, 1, 1 << 32, MAC)
        self.assertRaises(ValueError, duidLLT, 1, 0, b"")

    def test_duidTime(self) -> None:
        """DUID-LLT time counts seconds from 2000-01-01 UTC, modulo 2**32."""
        self.assertEqual(duidTime(DUID_TIME_EPOCH), 0)
        self.assertEqual(duidTime(DUID_TIME_EPOCH + 86400.7), 86400)
        self.assertEqual(duidTime(DUID_TIME_EPOCH - 1), 0xFFFFFFFF)
        self.assertEqual(duidTime(DUID_TIME_EPOCH + (1 << 32) + 5), 5)

    def test_duidEN(self) -> None:
        """DUID-EN: type 2, enterprise number, identifier (RFC 8415 section 11.3 example)."""
        raw = duidEN(9, h("0c c0 84 d3 03 00 09 12"))
        self.assertEqual(raw, h("0002 00000009 0cc084d303000912"))
        self.assertEqual(
            parseDuid(raw), Duid(DuidType.EN, enterprise=9, identifier=h("0cc084d303000912"))
        )
        self.assertRaises(ValueError, duidEN, 9, b"")
        self.assertRaises(ValueError, duidEN, -1, b"x")

    def test_duidLL(self) -> None:
        """DUID-LL: type 3, hardware type, link-layer address."""
        raw = duidLL(HARDWARE_TYPE_ETHERNET, MAC)
        self.assertEqual(raw, h("0003 0001 525400123456"))
        self.assertEqual(parseDuid(raw), Duid(DuidType.LL, hardware_type=1, link_layer_address=MAC))
        self.assertRaises(ValueError, duidLL, 1 << 16, MAC)

    def test_duidUUID(self) -> None:
        """DUID-UUID (RFC 6355): type 4 and the 16 UUID octets."""
        u = UUID("12345678-9abc-def0-1234-56789abcdef0")
        raw = duidUUID(u)
        self.assertEqual(raw, h("0004 123456789abcdef0123456789abcdef0"))
        self.assertEqual(parseDuid(raw), Duid(DuidType.UUID, uuid=u))
        self.assertRaises(ValueError, parseDuid, raw[:-1])

    def test_unknownType(self) -> None:
        """Unknown DUID types are described by type and the remaining octets."""
        self.assertEqual(parseDuid(h("0009 aabb")), Duid(9, identifier=h("aabb")))
        self.assertEqual(Duid(9, identifier=h("aabb")).toBytes(), h("0009 aabb"))

    def test_parseMalformed(self) -> None:
        """Too short, too long, or a known type whose layout does not fit."""
        for raw in [
            b"",
            b"\x00\x01",
            b"\x00" * 131,
            h("0001 0001 00000000"),
            h("0002 000009"),
            h("0003 0001"),
        ]:
            self.assertRaises(ValueError, parseDuid, raw)

    def test_toBytes(self) -> None:
        """L{Duid.toBytes} rebuilds what L{parseDuid} took apart."""
        for raw in [
            DUID,
            duidEN(311, b"id"),
            duidLL(6, b"\x01\x02"),
            duidUUID(UUID(int=7)),
            h("ffff 01"),
        ]:
            self.assertEqual(parseDuid(raw).toBytes(), raw)
        self.assertRaises(ValueError, Duid(DuidType.LLT).toBytes)
        self.assertRaises(ValueError, Duid(DuidType.EN).toBytes)
        self.assertRaises(ValueError, Duid(DuidType.LL).toBytes)
        self.assertRaises(ValueError, Duid(DuidType.UUID).toBytes)

    @given(s.duids())
    def test_parseRoundTrip(self, raw: bytes) -> None:
        """Every DUID either parses and rebuilds exactly, or raises C{ValueError}."""
        try:
            duid = parseDuid(raw)
        except ValueError:
            return
        self.assertEqual(duid.toBytes(), raw)

    def test_describe(self) -> None:
        """L{describeDuid} is readable and never raises."""
        self.assertEqual(describeDuid(DUID), "DUID-LLT hw=1 time=739146292 ll=52:54:00:12:34:56")
        self.assertEqual(describeDuid(duidEN(9, b"\x01")), "DUID-EN enterprise=9 id=01")
        self.assertEqual(describeDuid(duidLL(1, b"\xaa")), "DUID-LL hw=1 ll=aa")
        self.assertEqual(
            describeDuid(duidUUID(UUID(int=1))), "DUID-UUID 00000000-0000-0000-0000-000000000001"
        )
        self.assertEqual(describeDuid(h("0063 01")), "DUID type 99 01")
        self.assertEqual(describeDuid(b"\x00"), "invalid DUID 00")

    def test_toText(self) -> None:
        """Lowercase colon-separated hex."""
        self.assertEqual(duidToText(DUID), "00:01:00:01:2c:0e:7a:34:52:54:00:12:34:56")
        self.assertEqual(duidToText(b""), "")

    def test_fromText(self) -> None:
        """Colon-separated (one or two digits per octet) or plain hex, either case."""
        self.assertEqual(duidFromText("00:01:00:01:2c:0e:7a:34:52:54:00:12:34:56"), DUID)
        self.assertEqual(duidFromText("000100012C0E7A34525400123456"), DUID)
        self.assertEqual(duidFromText("  0:1:0:1:2c:e:7a:34:52:54:0:12:34:56\n"), DUID)

    def test_fromTextInvalid(self) -> None:
        """Bad text raises C{ValueError} with the reason."""
        for text, reason in [
            ("", "not hex"),
            ("00:01:", "not hex"),
            ("00::01:02", "not hex"),
            ("000:01:02", "not hex"),
            ("0001020", "not hex"),
            ("00 01 02", "not hex"),
            ("0x000102", "not hex"),
            ("00:01:zz", "not hex"),
            ("0001", "has 2 octets"),
            ("00" * 131, "has 131 octets"),
        ]:
            e = self.assertRaises(ValueError, duidFromText, text)
            self.assertIn(reason, str(e))

    @given(s.duids())
    def test_textRoundTrip(self, raw: bytes) -> None:
        """L{duidFromText} reads what L{duidToText} writes."""
        self.assertEqual(duidFromText(duidToText(raw)), raw)
        self.assertEqual(duidFromText(raw.hex()), raw)


# --- scapy cross-check ---------------------------------------------------------

_scapy: ModuleType | None = None


def scapyDhcp6() -> ModuleType:
    """
    Import C{scapy.layers.dhcp6} on first use, with scapy's start-up
    warnings silenced.
    """
    global _scapy
    if _scapy is None:
        for name in ("scapy", "scapy.runtime", "scapy.loading"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from scapy.config import conf

        conf.verb = 0
        from scapy.layers import dhcp6

        _scapy = dhcp6
    return _scapy


View = tuple[Any, ...]


def ourView(msg: Message | RelayMessage) -> View:
    """What the scapy comparison looks at, from our values."""
    if isinstance(msg, RelayMessage):
        header: Any = (msg.hop_count, str(msg.link_address), str(msg.peer_address))
    else:
        header = msg.transaction_id
    return (int(msg.msg_type), header, tuple(_ourOptionView(o) for o in msg.options))


def _ourOptionView(o: Option) -> View:
    code = optionCode(o)
    detail: Any = None
    if isinstance(o, (ClientId, ServerId)):
        detail = o.duid
    elif isinstance(o, (IANA, IAPD)):
        detail = (o.iaid, o.t1, o.t2, tuple(_ourOptionView(x) for x in o.options))
    elif isinstance(o, IATA):
        detail = (o.iaid, tuple(_ourOptionView(x) for x in o.options))
    elif isinstance(o, IAAddress):
        detail = (str(o.address), o.preferred_lifetime, o.valid_lifetime)
    elif isinstance(o, IAPrefix):
        detail = (o.preferred_lifetime, o.valid_lifetime, o.prefix_length, str(o.prefix))
    elif isinstance(o, StatusCodeOption):
        detail = (int(o.code), o.message.encode())
    elif isinstance(o, RelayMessageOption):
        detail = ourView(o.message)
    elif isinstance(o, OptionRequest):
        detail = tuple(o.codes)
    elif isinstance(o, DNSServers):
        detail = tuple(str(a) for a in o.addresses)
    elif isinstance(o, ElapsedTime):
        detail = o.value
    elif isinstance(o, InterfaceId):
        detail = o.value
    elif isinstance(o, DomainList):
        detail = o.domains
    elif isinstance(o, ClientFQDN):
        # scapy does not tell partial names from full ones (RFC 4704 section
        # 4.2): it shows both with a trailing dot, so only the name is compared.
        detail = (o.flags, o.name)
    elif isinstance(o, VendorClass):
        detail = (o.enterprise, o.data)
    elif isinstance(o, VendorOpts):
        detail = (o.enterprise, o.options)
    return (int(code), detail)


def _scapyOptions(first: Any) -> Iterator[Any]:
    """The option layers chained after a scapy DHCPv6 message header."""
    d = scapyDhcp6()
    layer = first
    while layer is not None and layer.__class__.__name__ != "NoPayload":
        if not isinstance(layer, d._DHCP6OptGuessPayload):
            # Raw or Padding: scapy could not parse what follows.
            yield ("unparsed", bytes(layer))
            return
        yield layer
        layer = layer.payload


def _addr(text: str) -> str:
    """scapy writes some addresses its own way (C{::0.1.0.0}): normalise."""
    return str(IPv6Address(text))


def _name(name: str | bytes) -> str:
    """A scapy domain name (C{"example.com."}, C{"."}) as ours."""
    text = name.decode("ascii") if isinstance(name, bytes) else name
    return text[:-1] if text.endswith(".") else text


def scapyView(pkt: Any) -> View:
    """What the scapy comparison looks at, from a scapy packet."""
    d = scapyDhcp6()
    if isinstance(pkt, d.DHCP6_RelayForward):
        header: Any = (pkt.hopcount, _addr(pkt.linkaddr), _addr(pkt.peeraddr))
    else:
        header = pkt.trid
    return (pkt.msgtype, header, tuple(_scapyOptionView(o) for o in _scapyOptions(pkt.payload)))


def _scapySubOptions(layers: list[Any]) -> tuple[View, ...]:
    views: list[View] = []
    for layer in layers:
        views.extend(_scapyOptionView(o) for o in _scapyOptions(layer))
    return tuple(views)


def _scapyOptionView(o: Any) -> View:
    if isinstance(o, tuple):
        return o
    d = scapyDhcp6()
    detail: Any = None
    if isinstance(o, (d.DHCP6OptClientId, d.DHCP6OptServerId)):
        detail = bytes(o.duid)
    elif isinstance(o, d.DHCP6OptIA_NA):
        detail = (o.iaid, o.T1, o.T2, _scapySubOptions(o.ianaopts))
    elif isinstance(o, d.DHCP6OptIA_PD):
        detail = (o.iaid, o.T1, o.T2, _scapySubOptions(o.iapdopt))
    elif isinstance(o, d.DHCP6OptIA_TA):
        detail = (o.iaid, _scapySubOptions(o.iataopts))
    elif isinstance(o, d.DHCP6OptIAAddress):
        detail = (_addr(o.addr), o.preflft, o.validlft)
    elif isinstance(o, d.DHCP6OptIAPrefix):
        detail = (o.preflft, o.validlft, o.plen, _addr(o.prefix))
    elif isinstance(o, d.DHCP6OptStatusCode):
        detail = (o.statuscode, bytes(o.statusmsg))
    elif isinstance(o, d.DHCP6OptRelayMsg):
        detail = scapyView(o.message)
    elif isinstance(o, d.DHCP6OptOptReq):
        detail = tuple(o.reqopts)
    elif isinstance(o, d.DHCP6OptDNSServers):
        detail = tuple(_addr(a) for a in o.dnsservers)
    elif isinstance(o, d.DHCP6OptElapsedTime):
        detail = o.elapsedtime
    elif isinstance(o, d.DHCP6OptIfaceId):
        detail = bytes(o.ifaceid)
    elif isinstance(o, d.DHCP6OptDNSDomains):
        detail = tuple(_name(n) for n in o.dnsdomains)
    elif isinstance(o, d.DHCP6OptClientFQDN):
        detail = ((o.res << 3) | int(o.flags), _name(o.fqdn))
    elif isinstance(o, d.DHCP6OptVendorClass):
        detail = (o.enterprisenum, tuple(bytes(x.data) for x in o.vcdata))
    elif isinstance(o, d.DHCP6OptVendorSpecificInfo):
        detail = (o.enterprisenum, tuple((x.optcode, bytes(x.optdata)) for x in o.vso))
    return (o.optcode, detail)


def scapyParse(data: bytes) -> Any:
    """Parse DHCPv6 octets with scapy, picking the class by message type."""
    d = scapyDhcp6()
    cls = getattr(d, d.dhcp6_cls_by_type[data[0]])
    return cls(data)


def _scapyKnownOptions() -> st.SearchStrategy[Option]:
    """
    Options whose scapy parsing is exact, for the cross-check: scapy's own
    classes for codes we keep opaque (e.g. AUTH, USER_CLASS, or codes like
    21 and 37 that we do not interpret at all) parse random payloads their
    own way, and inside IAs scapy stops at the first sub-option it does not
    know, so unknown options here use codes scapy does not know either and
    IAs hold only IAADDR / IAPREFIX / STATUS_CODE.  Domain names use
    hostname characters only (scapy's DNS name field is for DNS names).
    """
    known = set(scapyDhcp6().dhcp6opts_by_code)
    unknown = st.builds(
        UnknownOption,
        st.integers(0, 0xFFFF).filter(lambda c: c not in known and c not in s.INTERPRETED_CODES),
        st.binary(max_size=16),
    )
    # scapy reads the status message as bytes; any text works.
    status = s.statusCodeOptions()
    address = st.builds(
        IAAddress, s.ipv6Addresses(), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)
    )
    prefix = st.builds(
        IAPrefix,
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 128),
        s.ipv6Addresses(),
    )
    u32 = st.integers(0, 0xFFFFFFFF)
    return st.one_of(
        s.clientIds(),
        s.serverIds(),
        st.builds(IANA, u32, u32, u32, st.lists(st.one_of(address, status), max_size=3).map(tuple)),
        st.builds(IATA, u32, st.lists(st.one_of(address, status), max_size=3).map(tuple)),
        st.builds(IAPD, u32, u32, u32, st.lists(st.one_of(prefix, status), max_size=3).map(tuple)),
        s.optionRequests(),
        s.preferences(),
        s.elapsedTimes(),
        s.unicasts(),
        status,
        s.rapidCommits(),
        s.interfaceIds(),
        s.dnsServers(),
        st.builds(DomainList, st.lists(s.domainNames(hostnames=True), max_size=3).map(tuple)),
        st.builds(ClientFQDN, st.integers(0, 0xFF), s.domainNames(hostnames=True), st.booleans()),
        s.vendorClasses(),
        s.vendorOpts(),
        s.solMaxRts(),
        s.informationRefreshTimes(),
        unknown,
    )


def scapyComparableMessages() -> st.SearchStrategy[Message | RelayMessage]:
    """Messages of known types built from L{_scapyKnownOptions}, relayed or not."""
    types = st.sampled_from([t for t in MessageType if t not in (12, 13)])
    plain = s.messages(types, _scapyKnownOptions())
    return st.one_of(
        plain,
        s.relayMessages(2, inner=plain, extra=st.one_of(s.interfaceIds(), s.vendorOpts())),
    )


class ScapyTests(SynchronousTestCase):
    """
    Cross-check with scapy's independent DHCPv6 implementation (a test-only
    dependency, imported lazily).
    """

    def setUp(self) -> None:
        self.d = scapyDhcp6()

    @settings(max_examples=150)
    @given(scapyComparableMessages())
    def test_scapyReadsOurEncoding(self, msg: Message | RelayMessage) -> None:
        """
        scapy parses our encoding and agrees on message type, transaction id,
        relay fields, option codes and order, DUIDs, IA ids and T1/T2,
        addresses, prefixes, lifetimes, status codes and relayed messages.
        """
        wire = encode(msg)
        self.assertEqual(scapyView(scapyParse(wire)), ourView(msg))

    def test_solicitBuiltByScapy(self) -> None:
        """A Solicit built with scapy decodes to the expected values."""
        d = self.d
        pkt = (
            d.DHCP6_Solicit(trid=0x8F3E21)
            / d.DHCP6OptClientId(
                duid=d.DUID_LLT(hwtype=1, timeval=0x2C0E7A34, lladdr="52:54:00:12:34:56")
            )
            / d.DHCP6OptOptReq(reqopts=[23, 24, 39, 31])
            / d.DHCP6OptElapsedTime(elapsedtime=0)
            / d.DHCP6OptIA_NA(iaid=0x00123456, T1=0, T2=0)
            / d.DHCP6OptIA_PD(
                iaid=1,
                T1=0,
                T2=0,
                iapdopt=[d.DHCP6OptIAPrefix(preflft=0, validlft=0, plen=56, prefix="::")],
            )
            / d.DHCP6OptRapidCommit()
            / d.DHCP6OptReconfAccept()
        )
        wire = bytes(pkt)
        self.assertEqual(
            decode(wire),
            Message(
                MessageType.SOLICIT,
                0x8F3E21,
                (
                    ClientId(DUID),
                    OptionRequest((23, 24, 39, 31)),
                    ElapsedTime(0),
                    IANA(0x00123456, 0, 0),
                    IAPD(1, 0, 0, (IAPrefix(0, 0, 56, IPv6Address("::")),)),
                    RapidCommit(),
                    UnknownOption(OptionCode.RECONF_ACCEPT, b""),
                ),
            ),
        )
        self.assertEqual(wire[: len(DHCLIENT_SOLICIT)], DHCLIENT_SOLICIT)
        self.assertEqual(encode(decode(wire)), wire)

    def test_advertiseBuiltByScapy(self) -> None:
        """An Advertise with most server options, built with scapy, decodes as expected."""
        d = self.d
        pkt = (
            d.DHCP6_Advertise(trid=5)
            / d.DHCP6OptClientId(duid=d.DUID_LL(lladdr="52:54:00:12:34:56"))
            / d.DHCP6OptServerId(duid=d.DUID_EN(enterprisenum=9, id=b"srv1"))
            / d.DHCP6OptIA_NA(
                iaid=7,
                T1=1800,
                T2=2880,
                ianaopts=[
                    d.DHCP6OptIAAddress(addr="2001:db8::1", preflft=3600, validlft=7200),
                    d.DHCP6OptStatusCode(statuscode=0, statusmsg="ok"),
                ],
            )
            / d.DHCP6OptIA_TA(
                iaid=8,
                iataopts=[d.DHCP6OptIAAddress(addr="2001:db8::2", preflft=1, validlft=2)],
            )
            / d.DHCP6OptStatusCode(statuscode=2, statusmsg="none left")
            / d.DHCP6OptPref(prefval=255)
            / d.DHCP6OptServerUnicast(srvaddr="2001:db8::2")
            / d.DHCP6OptDNSServers(dnsservers=["2001:db8::53", "2001:db8::54"])
            / d.DHCP6OptDNSDomains(dnsdomains=["example.com.", "lab."])
            / d.DHCP6OptClientFQDN(flags="S", fqdn="host.example.com.")
            / d.DHCP6OptInfoRefreshTime(reftime=86400)
            / d.DHCP6OptVendorClass(
                enterprisenum=311, vcdata=[d.VENDOR_CLASS_DATA(data=b"MSFT 5.0")]
            )
            / d.DHCP6OptVendorSpecificInfo(
                enterprisenum=4491, vso=[d.VENDOR_SPECIFIC_OPTION(optcode=1, optdata=b"xx")]
            )
        )
        wire = bytes(pkt)
        self.assertEqual(
            decode(wire),
            Message(
                MessageType.ADVERTISE,
                5,
                (
                    ClientId(duidLL(1, MAC)),
                    ServerId(duidEN(9, b"srv1")),
                    IANA(7, 1800, 2880, (IAAddress(A1, 3600, 7200), StatusCodeOption(0, "ok"))),
                    IATA(8, (IAAddress(A2, 1, 2),)),
                    StatusCodeOption(StatusCode.NO_ADDRS_AVAIL, "none left"),
                    Preference(255),
                    Unicast(A2),
                    DNSServers((IPv6Address("2001:db8::53"), IPv6Address("2001:db8::54"))),
                    DomainList(("example.com", "lab")),
                    ClientFQDN(1, "host.example.com", partial=False),
                    InformationRefreshTime(86400),
                    VendorClass(311, (b"MSFT 5.0",)),
                    VendorOpts(4491, ((1, b"xx"),)),
                ),
            ),
        )
        self.assertEqual(encode(decode(wire)), wire)

    def test_solMaxRtBuiltByScapy(self) -> None:
        """SOL_MAX_RT (82), which scapy lacks, decodes from a scapy generic option."""
        d = self.d
        wire = bytes(d.DHCP6_Reply(trid=1) / d.DHCP6OptUnknown(optcode=82, data=h("00000e10")))
        self.assertEqual(decode(wire), Message(MessageType.REPLY, 1, (SolMaxRt(3600),)))

    def test_relayBuiltByScapy(self) -> None:
        """Nested RELAY-FORW built with scapy decode to the expected layers."""
        d = self.d
        solicit = d.DHCP6_Solicit(trid=0x8F3E21) / d.DHCP6OptClientId(duid=DUID)
        inner = (
            d.DHCP6_RelayForward(hopcount=0, linkaddr="2001:db8:1::1", peeraddr=str(PEER))
            / d.DHCP6OptIfaceId(ifaceid=b"eth0")
            / d.DHCP6OptRelayMsg(message=solicit)
        )
        outer = d.DHCP6_RelayForward(
            hopcount=1, linkaddr="::", peeraddr="2001:db8:1::1"
        ) / d.DHCP6OptRelayMsg(message=inner)
        wire = bytes(outer)
        self.assertEqual(
            decode(wire),
            RelayMessage(
                MessageType.RELAY_FORW,
                1,
                IPv6Address("::"),
                LINK,
                (
                    RelayMessageOption(
                        RelayMessage(
                            MessageType.RELAY_FORW,
                            0,
                            LINK,
                            PEER,
                            (
                                InterfaceId(b"eth0"),
                                RelayMessageOption(
                                    Message(MessageType.SOLICIT, 0x8F3E21, (ClientId(DUID),))
                                ),
                            ),
                        )
                    ),
                ),
            ),
        )
        self.assertEqual(encode(decode(wire)), wire)

    @settings(max_examples=100)
    @given(
        trid=st.integers(0, 0xFFFFFF),
        mac=st.binary(min_size=6, max_size=6),
        iaid=st.integers(0, 0xFFFFFFFF),
        t1=st.integers(0, 0xFFFFFFFF),
        t2=st.integers(0, 0xFFFFFFFF),
        address=s.ipv6Addresses(),
        lifetimes=st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
        prefixLength=st.integers(0, 128),
        hops=st.integers(0, 255),
    )
    def test_scapyBuiltMessagesDecode(
        self,
        trid: int,
        mac: bytes,
        iaid: int,
        t1: int,
        t2: int,
        address: IPv6Address,
        lifetimes: tuple[int, int],
        prefixLength: int,
        hops: int,
    ) -> None:
        """Requests built by scapy from generated values decode to those values."""
        d = self.d
        preferred, valid = lifetimes
        macText = mac.hex(":")
        request = (
            d.DHCP6_Request(trid=trid)
            / d.DHCP6OptClientId(duid=d.DUID_LL(lladdr=macText))
            / d.DHCP6OptServerId(duid=d.DUID_LLT(timeval=1, lladdr=macText))
            / d.DHCP6OptIA_NA(
                iaid=iaid,
                T1=t1,
                T2=t2,
                ianaopts=[
                    d.DHCP6OptIAAddress(addr=str(address), preflft=preferred, validlft=valid)
                ],
            )
            / d.DHCP6OptIA_PD(
                iaid=iaid,
                T1=t1,
                T2=t2,
                iapdopt=[
                    d.DHCP6OptIAPrefix(
                        preflft=preferred, validlft=valid, plen=prefixLength, prefix=str(address)
                    )
                ],
            )
        )
        relay = d.DHCP6_RelayForward(
            hopcount=hops, linkaddr=str(address), peeraddr="fe80::1"
        ) / d.DHCP6OptRelayMsg(message=request)
        wire = bytes(relay)
        expected = Message(
            MessageType.REQUEST,
            trid,
            (
                ClientId(duidLL(1, mac)),
                ServerId(duidLLT(1, 1, mac)),
                IANA(iaid, t1, t2, (IAAddress(address, preferred, valid),)),
                IAPD(iaid, t1, t2, (IAPrefix(preferred, valid, prefixLength, address),)),
            ),
        )
        self.assertEqual(
            decode(wire),
            RelayMessage(
                MessageType.RELAY_FORW,
                hops,
                address,
                IPv6Address("fe80::1"),
                (RelayMessageOption(expected),),
            ),
        )
        self.assertEqual(encode(decode(wire)), wire)
