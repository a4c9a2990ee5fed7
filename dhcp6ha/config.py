# -*- test-case-name: tests.test_config -*-
"""
Configuration: ini files to a validated, typed, frozen L{ServerConfig}.

Only this module reads configuration files.  Every error is a L{ConfigError}
naming the file, section and key and saying what is wrong; the process exits
non-zero on it before any socket is bound.

The format (C{etc/dhcp6ha.ini}, C{etc/relayed.ini}, and the failover pair
C{etc/primary.ini} and C{etc/secondary.ini}, are commented examples)::

    [server]            ; exactly one
    [subnet:NAME]       ; one or more
    [reservation:NAME]  ; any number
    [failover:NAME]     ; any number: failover relationships (RFC 7031 section 7)

C{NAME} is made of letters, digits, C{_}, C{.} and C{-}.  Lines are
C{key = value} (only C{=} separates a key from its value); C{;} and C{#}
start comments, also after a value when preceded by white space.  Keys are
case-insensitive, section names are not.  List values are separated by
commas (or by line breaks, on indented continuation lines).  Unknown
sections and unknown keys are errors, and so is a key given twice.

Notes for operators:
  - C{database} is a path relative to the I{current directory} of the
    process, not to the directory of the ini file.
  - A subnet with neither pools, pd-pools nor reservations is allowed: it
    then serves only Information-request (DNS servers, domain list, ...).
  - C{interface} on a subnet must also be listed in C{[server] interfaces},
    and every interface listed there must be some subnet's C{interface}.
  - C{control-socket} (optional) is the path of the operator control socket
    used by C{dhcp6ha-ctl}, relative like C{database}; the server creates it
    with mode 0600 (only its own user, and root, may connect).
  - C{t1 = 0} and C{t2 = 0} are allowed: they leave the renewal times to
    the client (RFC 8415 section 21.4).

Failover (C{[failover:NAME]}, see L{FailoverConfig} for every key):
  - C{NAME} is the relationship's name, sent in Connect: both partners'
    sections must carry the same name, subnets, C{mclt}; one has
    C{role = primary}, the other C{role = secondary}.
  - A subnet belongs to at most one relationship (RFC 7031 section 7,
    requirement 2); a server may hold several relationships, each with its
    own partner and role (requirement 3).  Subnets in no relationship are
    served by this server alone.
  - The primary connects to C{partner-address}:C{partner-port}; the
    secondary listens on C{listen-address}:C{listen-port}.  Addresses are IP
    literals only: the server does no DNS lookups at start-up.
  - C{partner-identity} is what the partner's certificate must carry as a
    subjectAltName: a DNS name (single labels such as C{localhost} are
    allowed) or an IP address.
  - C{certificate}, C{key} and C{ca} are paths relative to the current
    directory of the process (like C{database}).  L{parseConfig} checks that
    they are readable regular files; it does not read them (the TLS layer
    does, when the service starts).
"""

from __future__ import annotations

import bisect
import configparser
import difflib
import enum
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv6Address,
    IPv6Network,
    NetmaskValueError,
    ip_address,
)
from typing import TypeAlias, TypeVar

from attrs import evolve, frozen

__all__ = [
    "AddressPool",
    "ConfigError",
    "FailoverConfig",
    "FailoverRole",
    "IdentityKind",
    "PrefixPool",
    "Reservation",
    "ServerConfig",
    "ServerSection",
    "SubnetConfig",
    "parseConfig",
    "parseConfigText",
]

_T = TypeVar("_T")

IPAddress: TypeAlias = IPv4Address | IPv6Address

_UINT32 = 0xFFFFFFFF

DEFAULT_ADDRESS = IPv6Address("::")
DEFAULT_PORT = 547
DEFAULT_DECLINE_QUARANTINE = 86400
DEFAULT_RECLAIM_INTERVAL = 10.0
DEFAULT_COMMIT_DELAY = 0.0
#: Longest allowed commit-delay: clients retransmit Solicit and Request after
#: one second (RFC 8415 section 7.6, SOL_TIMEOUT and REQ_TIMEOUT).
MAX_COMMIT_DELAY = 1.0
DEFAULT_PREFERRED_LIFETIME = 3600
DEFAULT_VALID_LIFETIME = 7200

#: Failover defaults (RFC 8156: port 647, MCLT 3600 s).
DEFAULT_FAILOVER_PORT = 647
DEFAULT_FAILOVER_LISTEN_ADDRESS: IPAddress = IPv6Address("::")
DEFAULT_MCLT = 3600
DEFAULT_HEARTBEAT_INTERVAL = 10.0
DEFAULT_UNREACHABLE_AFTER = 30.0
#: Bindings sent to the partner and not yet acknowledged, at most (ours,
#: or the partner's smaller one from Connect).  RFC 8156's
#: OPTION_F_MAX_UNACKED_BNDUPD counts BNDUPD messages; we count bindings, a
#: stricter bound on memory whatever the batch size: 2000 is about 500 KB of
#: encoded batches (each at most 60 KB, a few hundred bindings) on the way.
#: Enough for the batches of a resync to pipeline, so that the receiver
#: stores about 2000 bindings per transaction (one fsync) instead of 100.
DEFAULT_MAX_UNACKED = 2000
MAX_MAX_UNACKED = 100000
#: Seconds the update queue gathers binding changes before it sends a batch
#: (L{dhcp6ha.failover.queue.UpdateQueue}'s C{gatherDelay}).
DEFAULT_LAZY_UPDATE_DELAY = 0.01
MAX_LAZY_UPDATE_DELAY = 1.0
DEFAULT_MAX_CLOCK_SKEW = 5.0
DEFAULT_AUTO_PARTNER_DOWN = 0
DEFAULT_PREFIX_SHARE = 0.5
#: The secondary's FREE-BACKUP reserve per pd-pool is at most this many
#: prefixes (a working reserve, not a share of the space in records).
DEFAULT_MAX_BACKUP_PREFIXES = 1024
MAX_MAX_BACKUP_PREFIXES = 1_000_000
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0
#: How often a serving endpoint stores its time of operation (RFC 8156
#: section 8.3.2 step 5); see L{FailoverConfig.operation_record_interval}.
DEFAULT_OPERATION_RECORD_INTERVAL = 60.0
MAX_OPERATION_RECORD_INTERVAL = 86400.0


class ConfigError(Exception):
    """
    A configuration problem.

    @ivar path: the file.
    @ivar section: the section, or C{None} for file-level errors.
    @ivar key: the key, or C{None} for section-level errors.
    @ivar reason: what is wrong, in words.
    """

    def __init__(self, path: str, section: str | None, key: str | None, reason: str) -> None:
        self.path = path
        self.section = section
        self.key = key
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path
        if self.section is not None:
            where += ": [" + self.section + "]"
        if self.key is not None:
            where += " " + self.key
        return where + ": " + self.reason


@frozen
class AddressPool:
    """An inclusive range of addresses, never enumerated."""

    first: IPv6Address
    last: IPv6Address

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv6Address) and self.first <= address <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@frozen
class PrefixPool:
    """A prefix (e.g. 2001:db8:100::/40) delegated in pieces of C{delegated_length} (e.g. 56)."""

    prefix: IPv6Network
    delegated_length: int

    @property
    def size(self) -> int:
        """Number of delegable prefixes: 2 ** (delegated_length - prefix length)."""
        return 1 << (self.delegated_length - self.prefix.prefixlen)


@frozen
class Reservation:
    """Fixed addresses and prefixes for one client DUID."""

    name: str
    duid: bytes
    addresses: tuple[IPv6Address, ...] = ()
    prefixes: tuple[IPv6Network, ...] = ()


@frozen
class SubnetConfig:
    """
    One link's configuration.

    @ivar name: from the section name C{[subnet:NAME]}.
    @ivar prefix: the on-link prefix; a relay's link-address inside it
        selects this subnet.
    @ivar interface: the interface name whose directly attached clients are
        on this link, or C{None} for relayed-only subnets.
    """

    name: str
    prefix: IPv6Network
    interface: str | None
    pools: tuple[AddressPool, ...]
    pd_pools: tuple[PrefixPool, ...]
    reservations: tuple[Reservation, ...]
    preferred_lifetime: int
    valid_lifetime: int
    t1: int
    t2: int
    pd_preferred_lifetime: int
    pd_valid_lifetime: int
    rapid_commit: bool
    preference: int
    dns_servers: tuple[IPv6Address, ...]
    domain_search: tuple[str, ...]
    sol_max_rt: int | None
    information_refresh_time: int | None
    inf_max_rt: int | None = None


@frozen
class ServerSection:
    """
    The C{[server]} section.

    @ivar interfaces: interfaces on which to join ff02::1:2 for directly
        attached clients (may be empty: relayed clients only).
    @ivar address: unicast address to bind (C{::} for all).
    @ivar port: UDP port to listen on (547).
    @ivar database: path of the SQLite lease database.
    @ivar duid: this server's DUID, or C{None} to generate one (DUID-LLT)
        and keep it in the database.
    @ivar decline_quarantine: seconds a declined address stays ABANDONED.
    @ivar reclaim_interval: seconds between expiry reclamation runs.
    @ivar commit_delay: longest time (seconds) a change waits for others to
        share its transaction (group commit).
    @ivar control_socket: path of the operator control socket (a UNIX
        socket, mode 0600, for C{dhcp6ha-ctl}), or C{None}: no control
        channel.
    """

    interfaces: tuple[str, ...]
    address: IPv6Address
    port: int
    database: str
    duid: bytes | None
    decline_quarantine: int
    reclaim_interval: float
    commit_delay: float
    control_socket: str | None = None


class FailoverRole(enum.StrEnum):
    """This server's role in a failover relationship (RFC 7031 requirement 1)."""

    #: Connects to its partner; owns every free delegable prefix.
    PRIMARY = "primary"
    #: Listens for its partner.
    SECONDARY = "secondary"


class IdentityKind(enum.StrEnum):
    """
    The kind of a C{partner-identity}: which subjectAltName type the
    partner's certificate must carry it as.
    """

    DNS_NAME = "dns"
    IP_ADDRESS = "ip"


@frozen
class FailoverConfig:
    """
    One failover relationship, from a C{[failover:NAME]} section.

    @ivar name: the relationship's name (the section's C{NAME}); it is sent
        in Connect and must be the same on both partners.
    @ivar role: this server's role in it.
    @ivar partner_address: the partner's IP address: where the primary
        connects (required for the primary).  Optional on the secondary, where
        it names the only source address the partner may connect from.
    @ivar partner_port: the TCP port the primary connects to (647).
    @ivar listen_address: where the secondary listens (C{::}); unused by the
        primary.
    @ivar listen_port: the TCP port the secondary listens on (647); unused
        by the primary.
    @ivar certificate: path of this server's PEM certificate (optionally
        followed by intermediates).
    @ivar key: path of its PEM private key (may be the same file).
    @ivar ca: path of the PEM CA certificate(s) the partner's certificate
        must chain to.
    @ivar partner_identity: what the partner's certificate must carry as a
        subjectAltName: a lower-case DNS name without trailing dot, or an IP
        address in its compressed form.
    @ivar partner_identity_kind: whether C{partner_identity} is a DNS name or
        an IP address.
    @ivar mclt: maximum client lead time, seconds (RFC 8156 section 4.4).
    @ivar heartbeat_interval: seconds between two Contact messages.
    @ivar unreachable_after: seconds without a message from the partner
        before it is taken to be unreachable; more than C{heartbeat_interval}.
    @ivar max_unacked: most bindings sent to the partner and not yet
        acknowledged (see L{DEFAULT_MAX_UNACKED}).
    @ivar lazy_update_delay: seconds a binding change waits before it is
        sent to the partner, so that the changes of that time go as one
        batch (less work per binding for this server's one thread, a longer
        replication lag); C{0}: at once.
    @ivar max_clock_skew: largest difference, in seconds, between the two
        servers' clocks accepted at Connect.
    @ivar auto_partner_down: seconds in COMMUNICATIONS-INTERRUPTED before
        going to PARTNER-DOWN on its own; C{0} means never (only an operator
        command does).
    @ivar prefix_share: fraction (0 to 1) of the free delegable prefixes the
        primary hands to the secondary as FREE-BACKUP.
    @ivar max_backup_prefixes: the most FREE-BACKUP prefixes the secondary
        holds per pd-pool: its reserve is C{min(floor(free * prefix_share),
        max_backup_prefixes)}, where C{free} counts the pool's available
        prefixes (no record, FREE, PENDING-FREE, FREE-BACKUP; reserved ones
        excluded).  Each is a record the primary writes and replicates, so
        this bounds the work of the first connection and of every top-up.
        Read by the primary only.
    @ivar handshake_timeout: seconds from TCP connection to an authenticated
        partner before the connection is dropped.
    @ivar idle_timeout: seconds without a received byte on an authenticated
        connection before it is closed; at least C{unreachable_after}.
    @ivar subnets: the names of the subnets (C{[subnet:NAME]}) whose pools
        this relationship covers.
    @ivar operation_record_interval: seconds between two writes of "the last
        recorded time of operation" (RFC 8156 section 8.3.2 step 5) while
        this server serves clients (it is also written at every change into
        or out of a serving state).  It bounds how stale that stored time
        can be: after a crash, this server may have served until the stored
        time plus this interval, so at restart it counts itself as possibly
        operating until then plus C{max-clock-skew}: a partner that entered
        PARTNER-DOWN before that makes it go to POTENTIAL-CONFLICT rather
        than RECOVER, and RECOVER-WAIT lasts MCLT from then.  Shorter: those
        windows shrink, for one more small write per interval.  No relation
        to C{mclt} is required for safety (the interval is added to every
        bound).  The interval in force is stored with the time, so changing
        it across a restart keeps the bound of the time already stored.
    """

    name: str
    role: FailoverRole
    partner_address: IPAddress | None
    partner_port: int
    listen_address: IPAddress
    listen_port: int
    certificate: str
    key: str
    ca: str
    partner_identity: str
    partner_identity_kind: IdentityKind
    mclt: int
    heartbeat_interval: float
    unreachable_after: float
    max_unacked: int
    max_clock_skew: float
    auto_partner_down: int
    prefix_share: float
    handshake_timeout: float
    idle_timeout: float
    subnets: tuple[str, ...]
    max_backup_prefixes: int = DEFAULT_MAX_BACKUP_PREFIXES
    operation_record_interval: float = DEFAULT_OPERATION_RECORD_INTERVAL
    lazy_update_delay: float = DEFAULT_LAZY_UPDATE_DELAY


@frozen
class ServerConfig:
    """
    The whole validated configuration, as read from C{path}.

    @ivar failover: the failover relationships, in file order; empty for a
        server that runs alone.
    """

    path: str
    server: ServerSection
    subnets: tuple[SubnetConfig, ...]
    failover: tuple[FailoverConfig, ...] = ()

    def subnetByName(self, name: str) -> SubnetConfig:
        """
        The subnet of section C{[subnet:NAME]}.

        @raise KeyError: if there is no such subnet.
        """
        for subnet in self.subnets:
            if subnet.name == name:
                return subnet
        raise KeyError(name)

    def subnetContaining(self, address: IPv6Address) -> SubnetConfig | None:
        """
        The subnet whose on-link prefix contains C{address} (for example a
        relay's link-address), or C{None}.  Subnet prefixes never overlap, so
        there is at most one.
        """
        for subnet in self.subnets:
            if address in subnet.prefix:
                return subnet
        return None

    def subnetForInterface(self, interface: str) -> SubnetConfig | None:
        """
        The subnet of clients directly attached to C{interface}, or C{None}.
        """
        for subnet in self.subnets:
            if subnet.interface == interface:
                return subnet
        return None

    def relationshipFor(self, subnetName: str) -> FailoverConfig | None:
        """
        The failover relationship covering the subnet C{[subnet:NAME]}, or
        C{None} if this server serves it alone.  There is at most one.

        @raise KeyError: if there is no such subnet.
        """
        self.subnetByName(subnetName)
        for relationship in self.failover:
            if subnetName in relationship.subnets:
                return relationship
        return None


# --- the table of sections and keys (Tahoe's ValidConfiguration) ----------

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@frozen
class _SectionKind:
    """
    One kind of section: its title, whether it carries a name, its keys.

    @ivar kind: C{server} for C{[server]}, C{subnet} for C{[subnet:NAME]}.
    @ivar named: whether the title is C{KIND:NAME} rather than C{KIND}.
    @ivar keys: every allowed key, in the order the documentation lists them.
    @ivar required: the keys that must be present.
    """

    kind: str
    named: bool
    keys: tuple[str, ...]
    required: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return "[" + self.kind + (":NAME]" if self.named else "]")


#: Every section this version understands.  A new kind of section is one more
#: entry here plus a builder.
_SECTION_KINDS: Mapping[str, _SectionKind] = {
    kind.kind: kind
    for kind in (
        _SectionKind(
            "server",
            named=False,
            keys=(
                "interfaces",
                "address",
                "port",
                "database",
                "duid",
                "decline-quarantine",
                "reclaim-interval",
                "commit-delay",
                "control-socket",
            ),
            required=("database",),
        ),
        _SectionKind(
            "subnet",
            named=True,
            keys=(
                "prefix",
                "interface",
                "pools",
                "pd-pools",
                "preferred-lifetime",
                "valid-lifetime",
                "t1",
                "t2",
                "pd-preferred-lifetime",
                "pd-valid-lifetime",
                "rapid-commit",
                "preference",
                "dns-servers",
                "domain-search",
                "sol-max-rt",
                "information-refresh-time",
                "inf-max-rt",
            ),
            required=("prefix",),
        ),
        _SectionKind(
            "reservation",
            named=True,
            keys=("duid", "subnet", "addresses", "prefixes"),
            required=("duid", "subnet"),
        ),
        _SectionKind(
            "failover",
            named=True,
            keys=(
                "role",
                "partner-address",
                "partner-port",
                "listen-address",
                "listen-port",
                "certificate",
                "key",
                "ca",
                "partner-identity",
                "mclt",
                "heartbeat-interval",
                "unreachable-after",
                "max-unacked",
                "lazy-update-delay",
                "max-clock-skew",
                "auto-partner-down",
                "prefix-share",
                "max-backup-prefixes",
                "handshake-timeout",
                "idle-timeout",
                "operation-record-interval",
                "subnets",
            ),
            required=("role", "certificate", "key", "ca", "partner-identity", "subnets"),
        ),
    )
}


class _Invalid(Exception):
    """A value parser's complaint; L{_Section} turns it into a L{ConfigError}."""


class _Section:
    """
    The raw values of one section, with typed access that turns a bad value
    into a L{ConfigError} naming the file, the section and the key.
    """

    def __init__(
        self, path: str, title: str, kind: _SectionKind, name: str | None, values: Mapping[str, str]
    ) -> None:
        self.path = path
        self.title = title
        self.kind = kind
        self.name = name
        self.values = values

    def error(self, key: str | None, reason: str) -> ConfigError:
        return ConfigError(self.path, self.title, key, reason)

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, parse: Callable[[str], _T], default: _T) -> _T:
        """The value of C{key} as C{parse} reads it, or C{default} when absent."""
        if key not in self.values:
            return default
        return self.require(key, parse)

    def getList(self, key: str, parse: Callable[[str], _T]) -> tuple[_T, ...]:
        """A comma-separated list; absent or empty is C{()}."""
        return self.get(key, _list(parse), ())

    def require(self, key: str, parse: Callable[[str], _T]) -> _T:
        """The value of C{key} as C{parse} reads it; the key must be present."""
        if key not in self.values:
            raise self.error(key, f"required key {key!r} is missing")
        try:
            return parse(self.values[key])
        except _Invalid as e:
            raise self.error(key, str(e)) from None


def _classify(path: str, title: str, values: Mapping[str, str]) -> _Section:
    """
    Check a section's title and keys against L{_SECTION_KINDS}.

    @raise ConfigError: for an unknown or badly named section, an unknown key
        or a missing required key.
    """
    kindName, colon, name = title.partition(":")
    kind = _SECTION_KINDS.get(kindName)
    if kind is None:
        allowed = ", ".join(k.title for k in _SECTION_KINDS.values())
        raise ConfigError(
            path, title, None, f"unknown section [{title}]; allowed sections: {allowed}"
        )
    if not kind.named and colon:
        raise ConfigError(path, title, None, f"[{kind.kind}] takes no name, got [{title}]")
    if kind.named:
        if not name:
            raise ConfigError(path, title, None, f"this section needs a name: {kind.title}")
        if _NAME.match(name) is None:
            raise ConfigError(
                path,
                title,
                None,
                f"section name {name!r} may contain only letters, digits, '_', '.' and '-'",
            )
    for key in values:
        if key not in kind.keys:
            reason = f"unknown key {key!r} in {kind.title}"
            close = difflib.get_close_matches(key, kind.keys, n=1)
            if close:
                reason += f" (did you mean {close[0]!r}?)"
            raise ConfigError(path, title, key, reason + "; allowed keys: " + ", ".join(kind.keys))
    for key in kind.required:
        if key not in values:
            raise ConfigError(path, title, key, f"required key {key!r} is missing")
    return _Section(path, title, kind, name if kind.named else None, values)


# --- value parsers: text -> value, or _Invalid(reason) ----------------------


def _integer(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        # A bare run of digits: int() would also take "+5", " 5" and "1_000".
        if len(text) > 20 or re.fullmatch(r"[0-9]+", text) is None or not low <= int(text) <= high:
            raise _Invalid(f"expected a whole number{unit} from {low} to {high}, got {text!r}")
        return int(text)

    return parse


_SECONDS = _integer(0, _UINT32, " of seconds")


def _seconds(low: float, high: float, lowIncluded: bool, example: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if len(text) > 20 or re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text) is None:
            value = None
        else:
            value = float(text)
        if value is None or not (low <= value if lowIncluded else low < value) or value > high:
            if lowIncluded:
                bounds = f"from {low:g} to {high:g}"
            else:
                bounds = f"above {low:g} and at most {high:g}"
            raise _Invalid(f"expected a number of seconds {bounds} (like {example}), got {text!r}")
        return value

    return parse


_BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


def _boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise _Invalid(f"expected yes/no, true/false, on/off or 1/0, got {text!r}") from None


def _address(text: str) -> IPv6Address:
    try:
        return IPv6Address(text)
    except ValueError:
        raise _Invalid(f"expected an IPv6 address like 2001:db8::1, got {text!r}") from None


def _bindAddress(text: str) -> IPv6Address:
    address = _address(text)
    if address.is_multicast:
        raise _Invalid(
            f"cannot bind to the multicast address {text}: use :: and list the"
            " interfaces of directly attached clients in 'interfaces'"
        )
    return address


def _unicastAddress(text: str) -> IPv6Address:
    """An address given to clients: no zone index, not multicast, not ::."""
    address = _address(text)
    if address.scope_id is not None:
        raise _Invalid(f"{text!r}: a zone index (%{address.scope_id}) is not allowed here")
    if address.is_multicast or address.is_unspecified:
        raise _Invalid(f"expected a unicast IPv6 address like 2001:db8::1, got {text!r}")
    return address


def _prefix(text: str) -> IPv6Network:
    """An IPv6 network written PREFIX/LENGTH with every host bit zero."""
    expected = f"expected an IPv6 prefix like 2001:db8::/64, got {text!r}"
    if "/" not in text:
        raise _Invalid(expected + " (no /LENGTH)")
    if "%" in text or re.fullmatch(r"[^/]+/[0-9]{1,3}", text) is None:
        raise _Invalid(expected)
    try:
        return IPv6Network(text, strict=True)
    except (AddressValueError, NetmaskValueError):
        raise _Invalid(expected) from None
    except ValueError:
        pass
    try:
        network = IPv6Network(text, strict=False)
    except ValueError:
        raise _Invalid(expected) from None
    raise _Invalid(
        f"{text} has host bits set (every bit after the first {network.prefixlen} must be"
        f" zero): did you mean {network}?"
    )


def _duid(text: str) -> bytes:
    expected = f"expected a DUID in hex like 00:03:00:01:02:00:00:00:00:01, got {text!r}"
    if ":" in text:
        parts = text.split(":")
        if any(re.fullmatch(r"[0-9A-Fa-f]{2}", part) is None for part in parts):
            raise _Invalid(expected)
        data = bytes(int(part, 16) for part in parts)
    else:
        if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text) is None:
            raise _Invalid(expected)
        data = bytes.fromhex(text)
    # RFC 8415 section 11.1: a 2-octet type and up to 128 octets.
    if not 3 <= len(data) <= 130:
        raise _Invalid(f"a DUID is 3 to 130 bytes long (RFC 8415 section 11.1), got {len(data)}")
    return data


def _interfaceName(text: str) -> str:
    # Linux dev_valid_name(): shorter than IFNAMSIZ (16), no '/', ':' or space.
    if (
        not 1 <= len(text) <= 15
        or text in (".", "..")
        or not text.isascii()
        or not text.isprintable()
        or re.search(r"[/:\s]", text) is not None
    ):
        raise _Invalid(
            "expected a network interface name like eth0 (1 to 15 characters,"
            f" no '/', ':' or spaces), got {text!r}"
        )
    return text


def _name(text: str) -> str:
    if _NAME.match(text) is None:
        raise _Invalid(f"expected a name made of letters, digits, '_', '.' and '-', got {text!r}")
    return text


def _path(text: str) -> str:
    if not text or "\0" in text:
        raise _Invalid(f"expected a file path like var/dhcp6ha.sqlite, got {text!r}")
    return text


#: Longest path of a UNIX socket: C{sun_path} holds 108 bytes on Linux,
#: the terminating NUL included.
MAX_SOCKET_PATH = 107


def _socketPath(text: str) -> str:
    if not text or "\0" in text:
        raise _Invalid(f"expected a file path like var/dhcp6ha.ctl, got {text!r}")
    size = len(os.fsencode(text))
    if size > MAX_SOCKET_PATH:
        raise _Invalid(
            f"{text!r} is {size} bytes long; the path of a UNIX socket can be at most"
            f" {MAX_SOCKET_PATH}: choose a shorter one"
        )
    return text


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\Z")


def _domain(text: str) -> str:
    """A domain name, returned without its trailing dot (as L{DomainList} wants)."""
    if not text.isascii():
        raise _Invalid(
            f"domain name {text!r} is not ASCII: write internationalized names in their"
            " xn-- (punycode) form"
        )
    name = text[:-1] if text.endswith(".") else text
    if not name:
        raise _Invalid(f"expected a domain name like example.com, got {text!r}")
    for label in name.split("."):
        if not label:
            raise _Invalid(f"domain name {text!r} has an empty label (two dots in a row?)")
        if len(label) > 63:
            raise _Invalid(f"domain name {text!r}: label {label!r} is longer than 63 characters")
        if _LABEL.match(label) is None:
            raise _Invalid(
                f"domain name {text!r}: label {label!r} may contain only letters, digits,"
                " '-' and '_', and may not start or end with '-'"
            )
    # Wire form: one length octet per label plus the root octet, at most 255.
    if len(name) + 2 > 255:
        raise _Invalid(f"domain name {text!r} is longer than 253 characters")
    return name


def _list(parse: Callable[[str], _T]) -> Callable[[str], tuple[_T, ...]]:
    """Comma-separated (or one per continuation line); empty items are skipped."""

    def parseList(text: str) -> tuple[_T, ...]:
        return tuple(parse(item.strip()) for item in re.split(r"[,\n]", text) if item.strip())

    return parseList


def _poolText(pool: AddressPool) -> str:
    return f"{pool.first}-{pool.last}"


def _prefixPoolText(pool: PrefixPool) -> str:
    return f"{pool.prefix} delegate /{pool.delegated_length}"


def _addressPool(text: str) -> AddressPool:
    if "/" in text:
        network = _prefix(text)
        return AddressPool(network.network_address, network.broadcast_address)
    firstText, dash, lastText = text.partition("-")
    if not dash:
        raise _Invalid(
            "expected an address range like 2001:db8:1::1000-2001:db8:1::1fff or a prefix"
            f" like 2001:db8:1::8000/113, got {text!r}"
        )
    first = _unicastAddress(firstText.strip())
    last = _unicastAddress(lastText.strip())
    if first > last:
        raise _Invalid(f"pool {text}: the first address {first} is after the last {last}")
    return AddressPool(first, last)


_PD_POOL = re.compile(r"(?P<prefix>\S+)\s+delegate\s+/?(?P<length>[0-9]{1,3})\Z", re.IGNORECASE)


def _prefixPool(text: str) -> PrefixPool:
    match = _PD_POOL.match(text)
    if match is None:
        raise _Invalid(
            "expected 'PREFIX delegate /LENGTH' like '2001:db8:100::/40 delegate /56',"
            f" got {text!r}"
        )
    prefix = _prefix(match["prefix"])
    length = int(match["length"])
    if not prefix.prefixlen < length <= 128:
        raise _Invalid(
            f"pd-pool {prefix}: the delegated length /{length} must be longer than"
            f" /{prefix.prefixlen} and at most /128"
        )
    return PrefixPool(prefix, length)


def _role(text: str) -> FailoverRole:
    try:
        return FailoverRole(text.lower())
    except ValueError:
        raise _Invalid(f"expected primary or secondary, got {text!r}") from None


def _ipAddress(text: str) -> IPAddress:
    """An IPv4 or IPv6 literal; never a host name (no DNS lookups at start-up)."""
    expected = f"expected an IPv4 or IPv6 address like 2001:db8::2 or 192.0.2.2, got {text!r}"
    try:
        return ip_address(text)
    except ValueError:
        pass
    if text.startswith("[") or re.fullmatch(r"[0-9.]+:[0-9]+", text) is not None:
        raise _Invalid(expected + ": write the address alone, without brackets or a port")
    if text and re.fullmatch(r"[A-Za-z0-9.-]+", text) is not None and not text[-1].isdigit():
        raise _Invalid(
            expected + ": host names are not accepted here, the server does no DNS lookups"
            " at start-up; give the address"
        )
    raise _Invalid(expected)


def _partnerAddress(text: str) -> IPAddress:
    address = _ipAddress(text)
    if address.is_unspecified or address.is_multicast:
        raise _Invalid(f"expected the partner's unicast address, got {text!r}")
    return address


def _listenAddress(text: str) -> IPAddress:
    address = _ipAddress(text)
    if address.is_multicast:
        raise _Invalid(
            f"cannot listen on the multicast address {text}: give an address of this host,"
            " or :: for all"
        )
    return address


#: An RFC 1123 host name label (no '_': a certificate's dNSName is a host name).
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def _partnerIdentity(text: str) -> tuple[str, IdentityKind]:
    """
    A DNS name or an IP address, as the partner's certificate must carry it.

    @return: the canonical text (lower case and no trailing dot for a name,
        compressed form for an address) and its kind.
    """

    def invalid(why: str) -> _Invalid:
        return _Invalid(
            f"{text!r} is not a DNS name or IP address ({why}); give the name or address"
            " the partner's certificate carries as a subjectAltName, like"
            " partner.example.net or 192.0.2.2"
        )

    try:
        address = ip_address(text)
    except ValueError:
        pass
    else:
        if address.version == 6 and address.scope_id is not None:
            raise invalid("a zone index cannot appear in a certificate")
        return str(address), IdentityKind.IP_ADDRESS
    if not text:
        raise invalid("it is empty")
    if ":" in text or "[" in text or "/" in text:
        raise invalid("neither a valid IP address nor a name; no port or brackets here")
    if not text.isascii():
        raise invalid("write an internationalized name in its xn-- (punycode) form")
    if "*" in text:
        raise invalid("a wildcard cannot identify one partner")
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if len(name) > 253:
        raise invalid("longer than 253 characters")
    for label in labels:
        if not label:
            raise invalid("empty label: a leading dot, or two dots in a row")
        if len(label) > 63:
            raise invalid(f"label {label!r} is longer than 63 characters")
        if _HOST_LABEL.match(label) is None:
            raise invalid(
                f"label {label!r} may hold only letters, digits and '-', and may not begin"
                " or end with '-'"
            )
    if labels[-1].isdigit():
        raise invalid("not a valid IPv4 address, and a DNS name cannot end in a numeric label")
    return name, IdentityKind.DNS_NAME


def _fraction(text: str) -> float:
    if len(text) > 20 or re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text) is None:
        value = None
    else:
        value = float(text)
    if value is None or not 0 <= value <= 1:
        raise _Invalid(f"expected a fraction from 0 to 1 (like 0.5), got {text!r}")
    return value


def _socketText(address: IPAddress, port: int) -> str:
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def _noDuplicates(section: _Section, key: str, values: Sequence[object]) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise section.error(key, f"{value} is listed twice")
        seen.add(value)


# --- sections -> model --------------------------------------------------------


def _buildServer(section: _Section) -> ServerSection:
    interfaces = section.getList("interfaces", _interfaceName)
    _noDuplicates(section, "interfaces", interfaces)
    return ServerSection(
        interfaces=interfaces,
        address=section.get("address", _bindAddress, DEFAULT_ADDRESS),
        port=section.get("port", _integer(1, 65535), DEFAULT_PORT),
        database=section.require("database", _path),
        duid=section.get("duid", _duid, None),
        decline_quarantine=section.get("decline-quarantine", _SECONDS, DEFAULT_DECLINE_QUARANTINE),
        reclaim_interval=section.get(
            "reclaim-interval", _seconds(0, 86400, False, "10 or 0.5"), DEFAULT_RECLAIM_INTERVAL
        ),
        commit_delay=section.get(
            "commit-delay", _seconds(0, MAX_COMMIT_DELAY, True, "0.005"), DEFAULT_COMMIT_DELAY
        ),
        control_socket=section.get("control-socket", _socketPath, None),
    )


#: For lifetimes left at their default: how the default was derived.
_DEFAULT_NOTES = {
    "preferred-lifetime": "the default",
    "valid-lifetime": "the default",
    "t1": "the default: half of preferred-lifetime",
    "t2": "the default: 0.8 times preferred-lifetime",
    "pd-preferred-lifetime": "the default: preferred-lifetime",
    "pd-valid-lifetime": "the default: valid-lifetime",
}

#: (shorter, longer) pairs: RFC 8415 sections 21.4 and 21.21.
_LIFETIME_ORDER = (
    ("t1", "t2"),
    ("t2", "preferred-lifetime"),
    ("preferred-lifetime", "valid-lifetime"),
    ("t2", "pd-preferred-lifetime"),
    ("pd-preferred-lifetime", "pd-valid-lifetime"),
)


def _checkLifetimes(section: _Section, values: Mapping[str, int]) -> None:
    def describe(key: str) -> str:
        if section.has(key):
            return f"{key} ({values[key]})"
        return f"{key} ({values[key]}, {_DEFAULT_NOTES[key]})"

    for shorter, longer in _LIFETIME_ORDER:
        if values[shorter] > values[longer]:
            blamed = longer if section.has(longer) and not section.has(shorter) else shorter
            raise section.error(
                blamed,
                f"{describe(shorter)} must not be greater than {describe(longer)}:"
                " T1 <= T2 <= preferred lifetime <= valid lifetime (RFC 8415 section 21.4)",
            )


def _subnetRouterAnycast(prefix: IPv6Network) -> IPv6Address | None:
    """RFC 4291 section 2.6.1: the all-zero interface identifier of the link."""
    return prefix.network_address if prefix.prefixlen < 127 else None


def _buildSubnet(section: _Section) -> SubnetConfig:
    assert section.name is not None
    prefix = section.require("prefix", _prefix)
    anycast = _subnetRouterAnycast(prefix)

    pools = section.getList("pools", _addressPool)
    for pool in pools:
        inside = (pool.first in prefix, pool.last in prefix)
        if inside == (False, False):
            raise section.error(
                "pools", f"pool {_poolText(pool)} is outside subnet prefix {prefix}"
            )
        if inside != (True, True):
            raise section.error(
                "pools", f"pool {_poolText(pool)} reaches outside subnet prefix {prefix}"
            )
        if anycast is not None and anycast in pool:
            raise section.error(
                "pools",
                f"pool {_poolText(pool)} includes {anycast}, the Subnet-Router anycast address"
                f" of {prefix} (RFC 4291 section 2.6.1): start the pool above it",
            )
    pdPools = section.getList("pd-pools", _prefixPool)

    preferred = section.get("preferred-lifetime", _SECONDS, DEFAULT_PREFERRED_LIFETIME)
    valid = section.get(
        "valid-lifetime", _integer(1, _UINT32, " of seconds"), DEFAULT_VALID_LIFETIME
    )
    lifetimes = {
        "preferred-lifetime": preferred,
        "valid-lifetime": valid,
        "t1": section.get("t1", _SECONDS, preferred // 2),
        "t2": section.get("t2", _SECONDS, preferred * 4 // 5),
        "pd-preferred-lifetime": section.get("pd-preferred-lifetime", _SECONDS, preferred),
        "pd-valid-lifetime": section.get(
            "pd-valid-lifetime", _integer(1, _UINT32, " of seconds"), valid
        ),
    }
    _checkLifetimes(section, lifetimes)

    dnsServers = section.getList("dns-servers", _unicastAddress)
    _noDuplicates(section, "dns-servers", dnsServers)
    domains = section.getList("domain-search", _domain)
    _noDuplicates(section, "domain-search", domains)

    return SubnetConfig(
        name=section.name,
        prefix=prefix,
        interface=section.get("interface", _interfaceName, None),
        pools=pools,
        pd_pools=pdPools,
        reservations=(),
        preferred_lifetime=preferred,
        valid_lifetime=valid,
        t1=lifetimes["t1"],
        t2=lifetimes["t2"],
        pd_preferred_lifetime=lifetimes["pd-preferred-lifetime"],
        pd_valid_lifetime=lifetimes["pd-valid-lifetime"],
        rapid_commit=section.get("rapid-commit", _boolean, False),
        preference=section.get("preference", _integer(0, 255), 0),
        dns_servers=dnsServers,
        domain_search=domains,
        # RFC 8415 sections 21.24 (SOL_MAX_RT), 21.23 (IRT_MINIMUM 600) and
        # 21.25 (INF_MAX_RT).
        sol_max_rt=section.get("sol-max-rt", _integer(60, 86400, " of seconds"), None),
        information_refresh_time=section.get(
            "information-refresh-time", _integer(600, _UINT32, " of seconds"), None
        ),
        inf_max_rt=section.get("inf-max-rt", _integer(60, 86400, " of seconds"), None),
    )


def _buildReservation(section: _Section) -> tuple[str, Reservation]:
    """@return: the name of the reservation's subnet, and the reservation."""
    assert section.name is not None
    duid = section.require("duid", _duid)
    subnet = section.require("subnet", _name)
    addresses = section.getList("addresses", _unicastAddress)
    _noDuplicates(section, "addresses", addresses)
    prefixes = section.getList("prefixes", _prefix)
    _noDuplicates(section, "prefixes", prefixes)
    if not addresses and not prefixes:
        raise section.error(None, "a reservation needs addresses, prefixes or both")
    return subnet, Reservation(section.name, duid, addresses, prefixes)


def _checkReadable(section: _Section, key: str, path: str) -> None:
    """
    Refuse a TLS file that does not exist, is not a regular file, or that
    this process may not open for reading.  The content is not read here.
    """
    where = "" if os.path.isabs(path) else f" (relative to the current directory {os.getcwd()})"
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise section.error(
            key, f"file {path} does not exist{where}: create it, or correct the path"
        ) from None
    except OSError as e:
        raise section.error(
            key, f"cannot reach file {path}{where}: {e.strerror or e}; correct the path"
        ) from None
    if stat.S_ISDIR(status.st_mode):
        raise section.error(key, f"{path} is a directory: give the path of a PEM file")
    if not stat.S_ISREG(status.st_mode):
        raise section.error(key, f"{path} is not a regular file: give the path of a PEM file")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise section.error(
            key,
            f"cannot read file {path}: {e.strerror or e}; make it readable by the user the"
            " server runs as",
        ) from None
    os.close(descriptor)


def _mustExceed(
    section: _Section,
    shorter: tuple[str, float],
    longer: tuple[str, float],
    orEqual: bool,
    why: str,
) -> None:
    """
    Refuse C{shorter} > C{longer} (or >= unless C{orEqual}), blaming the key
    that was given when the other was left at its default.
    """
    (shortKey, shortValue), (longKey, longValue) = shorter, longer
    if shortValue < longValue or (orEqual and shortValue == longValue):
        return

    def describe(key: str, value: float) -> str:
        return f"{key} ({value:g})" if section.has(key) else f"{key} ({value:g}, the default)"

    blamed = longKey if section.has(longKey) and not section.has(shortKey) else shortKey
    relation = "at least" if orEqual else "more than"
    raise section.error(
        blamed,
        f"{describe(longKey, longValue)} must be {relation} {describe(shortKey, shortValue)}: "
        + why,
    )


def _buildFailover(section: _Section, checkFiles: bool) -> FailoverConfig:
    assert section.name is not None
    role = section.require("role", _role)
    if role is FailoverRole.PRIMARY:
        if not section.has("partner-address"):
            raise section.error(
                "partner-address",
                "required with role = primary, which connects to its partner: give the"
                " secondary's IP address",
            )
        for key in ("listen-address", "listen-port"):
            if section.has(key):
                raise section.error(
                    key,
                    f"role = primary connects to its partner and does not listen: remove {key}"
                    " (the secondary's listen-address and listen-port are the primary's"
                    " partner-address and partner-port)",
                )
    elif section.has("partner-port"):
        raise section.error(
            "partner-port",
            "role = secondary does not connect, its partner connects to it: remove"
            " partner-port and set listen-port",
        )

    files = {key: section.require(key, _path) for key in ("certificate", "key", "ca")}
    if checkFiles:
        for key, path in files.items():
            _checkReadable(section, key, path)
    identity, identityKind = section.require("partner-identity", _partnerIdentity)

    heartbeat = section.get(
        "heartbeat-interval", _seconds(0, 3600, False, "10 or 2.5"), DEFAULT_HEARTBEAT_INTERVAL
    )
    unreachable = section.get(
        "unreachable-after", _seconds(0, 86400, False, "30"), DEFAULT_UNREACHABLE_AFTER
    )
    _mustExceed(
        section,
        ("heartbeat-interval", heartbeat),
        ("unreachable-after", unreachable),
        orEqual=False,
        why="the partner is declared unreachable only after it has missed a heartbeat",
    )
    idle = section.get("idle-timeout", _seconds(0, 86400, False, "60"), DEFAULT_IDLE_TIMEOUT)
    _mustExceed(
        section,
        ("unreachable-after", unreachable),
        ("idle-timeout", idle),
        orEqual=True,
        why="a silent connection is closed only after the partner has been declared unreachable",
    )

    subnets = section.require("subnets", _list(_name))
    if not subnets:
        raise section.error(
            "subnets", "list the [subnet:NAME] sections this relationship covers (at least one)"
        )
    _noDuplicates(section, "subnets", subnets)

    return FailoverConfig(
        name=section.name,
        role=role,
        partner_address=section.get("partner-address", _partnerAddress, None),
        partner_port=section.get("partner-port", _integer(1, 65535), DEFAULT_FAILOVER_PORT),
        listen_address=section.get(
            "listen-address", _listenAddress, DEFAULT_FAILOVER_LISTEN_ADDRESS
        ),
        listen_port=section.get("listen-port", _integer(1, 65535), DEFAULT_FAILOVER_PORT),
        certificate=files["certificate"],
        key=files["key"],
        ca=files["ca"],
        partner_identity=identity,
        partner_identity_kind=identityKind,
        mclt=section.get("mclt", _integer(1, _UINT32, " of seconds"), DEFAULT_MCLT),
        heartbeat_interval=heartbeat,
        unreachable_after=unreachable,
        max_unacked=section.get("max-unacked", _integer(1, MAX_MAX_UNACKED), DEFAULT_MAX_UNACKED),
        lazy_update_delay=section.get(
            "lazy-update-delay",
            _seconds(0, MAX_LAZY_UPDATE_DELAY, True, "0.01 or 0"),
            DEFAULT_LAZY_UPDATE_DELAY,
        ),
        max_clock_skew=section.get(
            "max-clock-skew", _seconds(0, 3600, False, "5"), DEFAULT_MAX_CLOCK_SKEW
        ),
        auto_partner_down=section.get("auto-partner-down", _SECONDS, DEFAULT_AUTO_PARTNER_DOWN),
        prefix_share=section.get("prefix-share", _fraction, DEFAULT_PREFIX_SHARE),
        handshake_timeout=section.get(
            "handshake-timeout", _seconds(0, 3600, False, "10"), DEFAULT_HANDSHAKE_TIMEOUT
        ),
        idle_timeout=idle,
        subnets=subnets,
        max_backup_prefixes=section.get(
            "max-backup-prefixes",
            _integer(1, MAX_MAX_BACKUP_PREFIXES),
            DEFAULT_MAX_BACKUP_PREFIXES,
        ),
        operation_record_interval=section.get(
            "operation-record-interval",
            _seconds(0, MAX_OPERATION_RECORD_INTERVAL, False, "60 or 5"),
            DEFAULT_OPERATION_RECORD_INTERVAL,
        ),
    )


# --- checks across sections ---------------------------------------------------


@frozen
class _Span:
    """An inclusive range of 128-bit integers, with words for error messages."""

    low: int
    high: int
    text: str
    owner: str
    pdPool: PrefixPool | None = None
    subnet: str | None = None

    @classmethod
    def ofPrefix(
        cls,
        prefix: IPv6Network,
        text: str,
        owner: str,
        pdPool: PrefixPool | None = None,
        subnet: str | None = None,
    ) -> _Span:
        return cls(
            int(prefix.network_address),
            int(prefix.broadcast_address),
            text,
            owner,
            pdPool,
            subnet,
        )


class _SpanSet:
    """Disjoint spans, sorted, so that an overlap is found by bisection."""

    def __init__(self) -> None:
        self._spans: list[_Span] = []
        self._lows: list[int] = []

    def overlapping(self, low: int, high: int) -> _Span | None:
        index = bisect.bisect_right(self._lows, high) - 1
        if index >= 0 and self._spans[index].high >= low:
            return self._spans[index]
        return None

    def add(self, span: _Span) -> None:
        index = bisect.bisect_right(self._lows, span.low)
        self._lows.insert(index, span.low)
        self._spans.insert(index, span)


def _checkSpans(
    path: str,
    section: str,
    key: str,
    span: _Span,
    against: Iterable[tuple[_SpanSet, str]],
) -> None:
    """
    Raise if C{span} overlaps any span of the given sets.

    @param against: pairs of a set and a suffix for the reason.
    """
    for spans, why in against:
        other = spans.overlapping(span.low, span.high)
        if other is not None:
            raise ConfigError(
                path, section, key, f"{span.text} overlaps {other.text} of {other.owner}{why}"
            )


@frozen
class _Spaces:
    """What L{_checkReservations} checks reserved prefixes against."""

    onLink: _SpanSet
    pdPools: _SpanSet


def _checkSubnets(path: str, server: ServerSection, subnets: Sequence[SubnetConfig]) -> _Spaces:
    onLink = _SpanSet()
    for subnet in subnets:
        span = _Span.ofPrefix(subnet.prefix, f"prefix {subnet.prefix}", f"subnet {subnet.name}")
        _checkSpans(path, "subnet:" + subnet.name, "prefix", span, [(onLink, "")])
        onLink.add(span)

    byInterface: dict[str, str] = {}
    for subnet in subnets:
        title = "subnet:" + subnet.name
        if subnet.interface is None:
            continue
        if subnet.interface in byInterface:
            raise ConfigError(
                path,
                title,
                "interface",
                f"interface {subnet.interface} is already used by subnet"
                f" {byInterface[subnet.interface]}: at most one subnet per interface",
            )
        byInterface[subnet.interface] = subnet.name
        if subnet.interface not in server.interfaces:
            raise ConfigError(
                path,
                title,
                "interface",
                f"interface {subnet.interface} is not listed in [server] interfaces, so no"
                " directly attached client can arrive on it: add it there",
            )
    for interface in server.interfaces:
        if interface not in byInterface:
            raise ConfigError(
                path,
                "server",
                "interfaces",
                f"no subnet has interface = {interface}, so clients attached to it could"
                " not be served: add it to the [subnet:NAME] of that link",
            )

    pools = _SpanSet()
    for subnet in subnets:
        for pool in subnet.pools:
            span = _Span(
                int(pool.first), int(pool.last), f"pool {_poolText(pool)}", f"subnet {subnet.name}"
            )
            _checkSpans(path, "subnet:" + subnet.name, "pools", span, [(pools, "")])
            pools.add(span)

    pdPools = _SpanSet()
    routed = (
        ": delegated prefixes are routed to the requesting router, they cannot also be on a link"
    )
    for subnet in subnets:
        for pdPool in subnet.pd_pools:
            span = _Span.ofPrefix(
                pdPool.prefix,
                f"pd-pool {_prefixPoolText(pdPool)}",
                f"subnet {subnet.name}",
                pdPool,
                subnet.name,
            )
            _checkSpans(
                path,
                "subnet:" + subnet.name,
                "pd-pools",
                span,
                [(pdPools, ""), (pools, ""), (onLink, routed)],
            )
            pdPools.add(span)
    return _Spaces(onLink, pdPools)


def _checkReservations(
    path: str,
    subnets: Sequence[SubnetConfig],
    reservations: Sequence[tuple[str, Reservation]],
    spaces: _Spaces,
) -> None:
    byName = {subnet.name: subnet for subnet in subnets}
    byDuid: dict[bytes, str] = {}
    byAddress: dict[IPv6Address, str] = {}
    reservedPrefixes = _SpanSet()
    for subnetName, reservation in reservations:
        title = "reservation:" + reservation.name
        subnet = byName.get(subnetName)
        if subnet is None:
            raise ConfigError(
                path,
                title,
                "subnet",
                f"there is no [subnet:{subnetName}]; the subnets are: " + ", ".join(byName),
            )
        if reservation.duid in byDuid:
            raise ConfigError(
                path,
                title,
                "duid",
                f"DUID {reservation.duid.hex(':')} is already reserved by reservation"
                f" {byDuid[reservation.duid]}",
            )
        byDuid[reservation.duid] = reservation.name

        anycast = _subnetRouterAnycast(subnet.prefix)
        for address in reservation.addresses:
            if address not in subnet.prefix:
                raise ConfigError(
                    path,
                    title,
                    "addresses",
                    f"address {address} is outside prefix {subnet.prefix} of subnet {subnet.name}",
                )
            if address == anycast:
                raise ConfigError(
                    path,
                    title,
                    "addresses",
                    f"address {address} is the Subnet-Router anycast address of"
                    f" {subnet.prefix} (RFC 4291 section 2.6.1)",
                )
            if address in byAddress:
                raise ConfigError(
                    path,
                    title,
                    "addresses",
                    f"address {address} is already reserved by reservation {byAddress[address]}",
                )
            byAddress[address] = reservation.name

        for prefix in reservation.prefixes:
            span = _Span.ofPrefix(prefix, f"prefix {prefix}", f"reservation {reservation.name}")
            _checkSpans(
                path,
                title,
                "prefixes",
                span,
                [
                    (reservedPrefixes, ""),
                    (spaces.onLink, ": reserve on-link addresses with 'addresses'"),
                ],
            )
            reservedPrefixes.add(span)
            inPool = spaces.pdPools.overlapping(span.low, span.high)
            if inPool is None:
                continue
            assert inPool.pdPool is not None
            if not (
                prefix.subnet_of(inPool.pdPool.prefix)
                and prefix.prefixlen == inPool.pdPool.delegated_length
            ):
                raise ConfigError(
                    path,
                    title,
                    "prefixes",
                    f"prefix {prefix} overlaps {inPool.text} of {inPool.owner} without being one"
                    " of its delegated prefixes: reserve a prefix of the delegated length"
                    " inside the pool, or one outside every pd-pool",
                )
            if inPool.subnet != subnet.name:
                raise ConfigError(
                    path,
                    title,
                    "prefixes",
                    f"prefix {prefix} lies in {inPool.text} of {inPool.owner}, but this"
                    f" reservation is for subnet {subnet.name}",
                )


def _checkFailover(
    path: str, subnets: Sequence[SubnetConfig], relationships: Sequence[FailoverConfig]
) -> None:
    """
    Each relationship's subnets exist and belong to no other relationship
    (RFC 7031 section 7, requirement 2); no two secondaries listen on the
    same address and port.
    """
    names = [subnet.name for subnet in subnets]
    coveredBy: dict[str, str] = {}
    listeners: list[FailoverConfig] = []
    for relationship in relationships:
        title = "failover:" + relationship.name
        for subnetName in relationship.subnets:
            if subnetName not in names:
                raise ConfigError(
                    path,
                    title,
                    "subnets",
                    f"there is no [subnet:{subnetName}]; the subnets are: " + ", ".join(names),
                )
            if subnetName in coveredBy:
                first = coveredBy[subnetName]
                raise ConfigError(
                    path,
                    title,
                    "subnets",
                    f"subnet {subnetName} is already covered by relationship {first}: a subnet"
                    " (its pools) may belong to at most one failover relationship (RFC 7031"
                    f" section 7, requirement 2); remove it from {first} or from"
                    f" {relationship.name}",
                )
            coveredBy[subnetName] = relationship.name
        if relationship.role is not FailoverRole.SECONDARY:
            continue
        here = _socketText(relationship.listen_address, relationship.listen_port)
        for other in listeners:
            if other.listen_port != relationship.listen_port:
                continue
            if (
                other.listen_address == relationship.listen_address
                or other.listen_address.is_unspecified
                or relationship.listen_address.is_unspecified
            ):
                there = _socketText(other.listen_address, other.listen_port)
                raise ConfigError(
                    path,
                    title,
                    "listen-port",
                    f"relationship {relationship.name} would listen on {here}, and relationship"
                    f" {other.name} already listens on {there}: each listening (secondary)"
                    " relationship needs its own listen-port (or its own, specific"
                    " listen-address)",
                )
        listeners.append(relationship)


def _buildConfig(path: str, parser: configparser.ConfigParser, checkFiles: bool) -> ServerConfig:
    found: dict[str, list[_Section]] = {kind: [] for kind in _SECTION_KINDS}
    for title in parser.sections():
        section = _classify(path, title, dict(parser[title]))
        found[section.kind.kind].append(section)

    if not found["server"]:
        raise ConfigError(
            path, "server", None, "the [server] section is missing; it needs at least 'database'"
        )
    server = _buildServer(found["server"][0])
    if not found["subnet"]:
        raise ConfigError(path, None, None, "no [subnet:NAME] section: at least one is required")
    subnets = [_buildSubnet(section) for section in found["subnet"]]
    spaces = _checkSubnets(path, server, subnets)
    reservations = [_buildReservation(section) for section in found["reservation"]]
    _checkReservations(path, subnets, reservations, spaces)
    relationships = [_buildFailover(section, checkFiles) for section in found["failover"]]
    _checkFailover(path, subnets, relationships)

    return ServerConfig(
        path=path,
        server=server,
        subnets=tuple(
            evolve(
                subnet,
                reservations=tuple(r for name, r in reservations if name == subnet.name),
            )
            for subnet in subnets
        ),
        failover=tuple(relationships),
    )


# --- entry points ---------------------------------------------------------------

#: configparser's DEFAULT section would silently feed its keys into every
#: section; with this name no file can have one, and [DEFAULT] is unknown.
_NO_DEFAULT_SECTION = "\0no default section"


def _atLine(lineno: int | None) -> str:
    return "" if lineno is None else f" (the second time on line {lineno})"


def parseConfigText(text: str, path: str = "<string>", *, checkFiles: bool = True) -> ServerConfig:
    """
    Parse and validate the text of an ini file.

    @param path: the file name to put in error messages and in
        L{ServerConfig.path}.
    @param checkFiles: whether to check that the TLS files of C{[failover:NAME]}
        sections (certificate, key, ca) exist and are readable.  Leave it on
        except to look at a configuration meant for another machine.
    @raise ConfigError: naming the file, section and key of the first
        problem found, and what is wrong.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        strict=True,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
        default_section=_NO_DEFAULT_SECTION,
    )
    try:
        parser.read_string(text.replace("\r\n", "\n"), source=path)
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            path,
            None,
            None,
            f"line {e.lineno}: {e.line.strip()!r} comes before any [section] header;"
            " the file must start with a section such as [server]",
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(
            path, e.section, None, f"section [{e.section}] appears twice{_atLine(e.lineno)}"
        ) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            path,
            e.section,
            e.option,
            f"key {e.option!r} appears twice in this section{_atLine(e.lineno)}",
        ) from None
    except configparser.ParsingError as e:
        lineno = e.errors[0][0]
        lines = text.splitlines()
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else "?"
        raise ConfigError(
            path,
            None,
            None,
            f"line {lineno}: cannot parse {line!r}: expected 'key = value', a [section]"
            " header or a comment",
        ) from None
    except configparser.Error as e:
        raise ConfigError(path, None, None, f"cannot parse the file: {e.message}") from None
    return _buildConfig(path, parser, checkFiles)


def parseConfig(path: str, *, checkFiles: bool = True) -> ServerConfig:
    """
    Read, parse and validate the ini file at C{path} (UTF-8).

    @param checkFiles: as for L{parseConfigText}.

    @raise ConfigError: if the file cannot be read, is not UTF-8, or is not
        a valid configuration.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ConfigError(path, None, None, "is a directory, not a configuration file") from None
    except OSError as e:
        raise ConfigError(
            path, None, None, f"cannot read the configuration file: {e.strerror or e}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            path,
            None,
            None,
            f"is not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} cannot be decoded",
        ) from None
    return parseConfigText(text, path, checkFiles=checkFiles)
