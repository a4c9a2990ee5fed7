# -*- test-case-name: tests.test_config -*-
"""
Configuration: ini files to a validated, typed, frozen L{ServerConfig}.

Only this module reads configuration files.  Every error is a L{ConfigError}
naming the file, section and key and saying what is wrong; the process exits
non-zero on it before any socket is bound.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from attrs import frozen


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
    """

    interfaces: tuple[str, ...]
    address: IPv6Address
    port: int
    database: str
    duid: bytes | None
    decline_quarantine: int
    reclaim_interval: float
    commit_delay: float


@frozen
class ServerConfig:
    """The whole validated configuration, as read from C{path}."""

    path: str
    server: ServerSection
    subnets: tuple[SubnetConfig, ...]
