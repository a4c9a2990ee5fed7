"""
Hypothesis strategies for dhcp6ha values, shared by the test modules.

Importing this module registers and loads the deterministic C{"dhcp6ha"}
Hypothesis profile (derandomized, no example database, no deadline), so every
property test that uses these strategies is reproducible run after run.

Every strategy here builds values that L{dhcp6ha.message.encode} accepts and
that L{dhcp6ha.message.decode} gives back equal: C{decode(encode(m)) == m}.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from dhcp6ha.message import (
    IANA,
    IAPD,
    IATA,
    MAX_DUID_LENGTH,
    MIN_DUID_LENGTH,
    UNINTERPRETED_CODES,
    ClientFQDN,
    ClientId,
    DNSServers,
    DomainList,
    ElapsedTime,
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
    Unicast,
    UnknownOption,
    VendorClass,
    VendorOpts,
    duidEN,
    duidLL,
    duidLLT,
    duidUUID,
)

__all__ = [
    "INTERPRETED_CODES",
    "anyMessages",
    "clientFQDNs",
    "clientIds",
    "dnsServers",
    "domainLists",
    "domainNames",
    "duids",
    "elapsedTimes",
    "iaAddresses",
    "iaNAs",
    "iaPDs",
    "iaPrefixes",
    "iaTAs",
    "informationRefreshTimes",
    "interfaceIds",
    "ipv6Addresses",
    "messages",
    "optionRequests",
    "options",
    "preferences",
    "rapidCommits",
    "relayMessageOptions",
    "relayMessages",
    "serverIds",
    "solMaxRts",
    "statusCodeOptions",
    "unicasts",
    "unknownOptions",
    "vendorClasses",
    "vendorOpts",
]

settings.register_profile(
    "dhcp6ha",
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("dhcp6ha")


INTERPRETED_CODES = frozenset(int(c) for c in OptionCode) - {int(c) for c in UNINTERPRETED_CODES}
"""Option codes the codec decodes into their own classes."""

_u8 = st.integers(0, 0xFF)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
_lifetimes = st.one_of(st.sampled_from([0, 3600, 7200, 0xFFFFFFFF]), _u32)

# The non-relay message types: known ones as enum members, unknown ones as ints.
_CLIENT_SERVER_TYPES = [t for t in MessageType if t not in (12, 13)]

# Label characters: printable ASCII without the dot (what the codec accepts).
_LABEL_ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x2E)
_HOSTNAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"


def ipv6Addresses() -> st.SearchStrategy[IPv6Address]:
    """IPv6 addresses, biased towards ::, link-local and documentation space."""
    return st.one_of(
        st.sampled_from([IPv6Address("::"), IPv6Address("fe80::1"), IPv6Address("2001:db8::1")]),
        st.builds(IPv6Address, st.integers(0, (1 << 128) - 1)),
    )


def duids() -> st.SearchStrategy[bytes]:
    """DUIDs: well-formed LLT, EN, LL and UUID ones, and arbitrary octets."""
    mac = st.binary(min_size=6, max_size=6)
    return st.one_of(
        st.builds(duidLLT, st.just(1), _u32, mac),
        st.builds(duidEN, _u32, st.binary(min_size=1, max_size=16)),
        st.builds(duidLL, _u16, st.binary(min_size=1, max_size=20)),
        st.builds(duidUUID, st.builds(UUID, int=st.integers(0, (1 << 128) - 1))),
        st.binary(min_size=MIN_DUID_LENGTH, max_size=MAX_DUID_LENGTH),
    )


def clientIds() -> st.SearchStrategy[ClientId]:
    return st.builds(ClientId, duids())


def serverIds() -> st.SearchStrategy[ServerId]:
    return st.builds(ServerId, duids())


def statusCodeOptions() -> st.SearchStrategy[StatusCodeOption]:
    return st.builds(
        StatusCodeOption,
        st.one_of(st.sampled_from(list(StatusCode)), _u16),
        st.text(max_size=24),
    )


def unknownOptions() -> st.SearchStrategy[UnknownOption]:
    """Options with a code the codec does not interpret, with any payload."""
    return st.builds(
        UnknownOption,
        st.one_of(
            st.sampled_from(sorted(int(c) for c in UNINTERPRETED_CODES)),
            _u16.filter(lambda c: c not in INTERPRETED_CODES),
        ),
        st.binary(max_size=32),
    )


def _leafOptions() -> st.SearchStrategy[Option]:
    """What may sit inside IAADDR / IAPREFIX in these strategies."""
    return st.one_of(statusCodeOptions(), unknownOptions())


def iaAddresses() -> st.SearchStrategy[IAAddress]:
    return st.builds(
        IAAddress,
        ipv6Addresses(),
        _lifetimes,
        _lifetimes,
        st.lists(_leafOptions(), max_size=2).map(tuple),
    )


def iaPrefixes() -> st.SearchStrategy[IAPrefix]:
    return st.builds(
        IAPrefix,
        _lifetimes,
        _lifetimes,
        st.integers(0, 128),
        ipv6Addresses(),
        st.lists(_leafOptions(), max_size=2).map(tuple),
    )


def _iaOptions(inner: st.SearchStrategy[Option]) -> st.SearchStrategy[tuple[Option, ...]]:
    return st.lists(st.one_of(inner, _leafOptions()), max_size=3).map(tuple)


def iaNAs() -> st.SearchStrategy[IANA]:
    return st.builds(IANA, _u32, _u32, _u32, _iaOptions(iaAddresses()))


def iaTAs() -> st.SearchStrategy[IATA]:
    return st.builds(IATA, _u32, _iaOptions(iaAddresses()))


def iaPDs() -> st.SearchStrategy[IAPD]:
    return st.builds(IAPD, _u32, _u32, _u32, _iaOptions(iaPrefixes()))


def optionRequests() -> st.SearchStrategy[OptionRequest]:
    return st.builds(
        OptionRequest,
        st.lists(st.one_of(st.sampled_from(list(OptionCode)), _u16), max_size=8).map(tuple),
    )


def preferences() -> st.SearchStrategy[Preference]:
    return st.builds(Preference, _u8)


def elapsedTimes() -> st.SearchStrategy[ElapsedTime]:
    return st.builds(ElapsedTime, _u16)


def unicasts() -> st.SearchStrategy[Unicast]:
    return st.builds(Unicast, ipv6Addresses())


def rapidCommits() -> st.SearchStrategy[RapidCommit]:
    return st.just(RapidCommit())


def interfaceIds() -> st.SearchStrategy[InterfaceId]:
    return st.builds(InterfaceId, st.binary(max_size=16))


def dnsServers() -> st.SearchStrategy[DNSServers]:
    return st.builds(DNSServers, st.lists(ipv6Addresses(), max_size=3).map(tuple))


def domainNames(hostnames: bool = False) -> st.SearchStrategy[str]:
    """
    Dotted domain names without a trailing dot, at most 3 labels of at most
    63 octets (so never over 255 octets on the wire); C{""} is the root.

    @param hostnames: only letters, digits and hyphens (what other DNS
        implementations such as scapy's accept without fuss).
    """
    alphabet = _HOSTNAME_ALPHABET if hostnames else _LABEL_ALPHABET
    label = st.one_of(
        st.text(alphabet, min_size=1, max_size=12),
        st.text(alphabet, min_size=60, max_size=63),
    )
    return st.lists(label, max_size=3).map(".".join)


def domainLists() -> st.SearchStrategy[DomainList]:
    return st.builds(DomainList, st.lists(domainNames(), max_size=3).map(tuple))


def clientFQDNs() -> st.SearchStrategy[ClientFQDN]:
    return st.builds(ClientFQDN, _u8, domainNames(), st.booleans())


def solMaxRts() -> st.SearchStrategy[SolMaxRt]:
    return st.builds(SolMaxRt, _u32)


def infMaxRts() -> st.SearchStrategy[InfMaxRt]:
    return st.builds(InfMaxRt, _u32)


def informationRefreshTimes() -> st.SearchStrategy[InformationRefreshTime]:
    return st.builds(InformationRefreshTime, _u32)


def vendorClasses() -> st.SearchStrategy[VendorClass]:
    return st.builds(VendorClass, _u32, st.lists(st.binary(max_size=16), max_size=3).map(tuple))


def vendorOpts() -> st.SearchStrategy[VendorOpts]:
    return st.builds(
        VendorOpts,
        _u32,
        st.lists(st.tuples(_u16, st.binary(max_size=16)), max_size=3).map(tuple),
    )


def options() -> st.SearchStrategy[Option]:
    """
    Any option that may appear in a client/server message's options (every
    option class except L{RelayMessageOption}, and except bare IAADDR /
    IAPREFIX, which appear inside the IAs).
    """
    return st.one_of(
        clientIds(),
        serverIds(),
        iaNAs(),
        iaTAs(),
        iaPDs(),
        optionRequests(),
        preferences(),
        elapsedTimes(),
        unicasts(),
        statusCodeOptions(),
        rapidCommits(),
        interfaceIds(),
        dnsServers(),
        domainLists(),
        clientFQDNs(),
        solMaxRts(),
        infMaxRts(),
        informationRefreshTimes(),
        vendorClasses(),
        vendorOpts(),
        unknownOptions(),
    )


def messages(
    msgTypes: st.SearchStrategy[int] | None = None,
    optionStrategy: st.SearchStrategy[Option] | None = None,
) -> st.SearchStrategy[Message]:
    """
    Client/server messages.

    @param msgTypes: message types to draw from; by default the known
        client/server types and, now and then, an unknown one (0, 14-255).
    @param optionStrategy: the options to draw from; by default L{options}.
    """
    if msgTypes is None:
        msgTypes = st.one_of(
            st.sampled_from(_CLIENT_SERVER_TYPES),
            st.sampled_from([0, *range(14, 256)]),
        )
    return st.builds(
        Message,
        msgTypes,
        st.integers(0, 0xFFFFFF),
        st.lists(optionStrategy if optionStrategy is not None else options(), max_size=6).map(
            tuple
        ),
    )


def _relayOptions() -> st.SearchStrategy[Option]:
    """Options a relay agent adds besides RELAY_MSG."""
    return st.one_of(interfaceIds(), unknownOptions(), vendorOpts())


@st.composite
def _relayMessage(
    draw: st.DrawFn,
    inner: st.SearchStrategy[Message | RelayMessage],
    extra: st.SearchStrategy[Option],
) -> RelayMessage:
    others = draw(st.lists(extra, max_size=2))
    position = draw(st.integers(0, len(others)))
    others.insert(position, RelayMessageOption(draw(inner)))
    return RelayMessage(
        draw(st.sampled_from([MessageType.RELAY_FORW, MessageType.RELAY_REPL])),
        draw(_u8),
        draw(ipv6Addresses()),
        draw(ipv6Addresses()),
        tuple(others),
    )


def relayMessages(
    maxDepth: int = 3,
    inner: st.SearchStrategy[Message] | None = None,
    extra: st.SearchStrategy[Option] | None = None,
) -> st.SearchStrategy[RelayMessage]:
    """
    Relay messages holding exactly one RELAY_MSG option, itself holding a
    client/server message or another relay message, nested 1 to C{maxDepth}
    relay levels deep.

    @param inner: the innermost messages; by default L{messages}.
    @param extra: other options of each relay level (INTERFACE_ID, unknown
        options, vendor options by default).
    """
    innermost: st.SearchStrategy[Message] = inner if inner is not None else messages()
    extraOptions = extra if extra is not None else _relayOptions()
    level: st.SearchStrategy[RelayMessage] = _relayMessage(innermost, extraOptions)
    for _ in range(maxDepth - 1):
        level = _relayMessage(st.one_of(innermost, level), extraOptions)
    return level


def relayMessageOptions() -> st.SearchStrategy[RelayMessageOption]:
    return st.builds(RelayMessageOption, st.one_of(messages(), relayMessages(2)))


def anyMessages() -> st.SearchStrategy[Message | RelayMessage]:
    """Client/server messages and relay messages."""
    return st.one_of(messages(), relayMessages())
