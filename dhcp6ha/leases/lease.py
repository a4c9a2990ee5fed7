# -*- test-case-name: tests.test_lease -*-
"""
The binding record (RFC 8156 section 7.2 "Information model").

One L{Lease} describes one address (IA_NA / IA_TA) or one delegated prefix
(IA_PD) and everything both failover partners must agree on about it.

All times are absolute, in seconds since the epoch, taken from an injected
C{clock.seconds()}; lifetimes are in seconds.
"""

from __future__ import annotations

import enum
import operator
from ipaddress import IPv6Address, IPv6Network

from attrs import evolve, fields, frozen

__all__ = ["BindingState", "Lease", "LeaseType", "evolve", "withPartnerLifetimeSent"]


class LeaseType(enum.Enum):
    """What kind of IA the binding belongs to."""

    NA = "na"
    TA = "ta"
    PD = "pd"


class BindingState(enum.Enum):
    """RFC 8156 section 4.2 / 7.2 binding states (DESIGN.md)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    RELEASED = "released"
    PENDING_FREE = "pending-free"
    FREE = "free"
    FREE_BACKUP = "free-backup"
    ABANDONED = "abandoned"  # declined by a client (RFC 8415 section 18.3.8)
    RESET = "reset"


@frozen
class Lease:
    """
    One binding.

    @ivar lease_type: NA, TA or PD.
    @ivar address: the address, or for PD the first address of the prefix.
    @ivar prefix_length: 128 for addresses, the delegated length for PD.
    @ivar state: the binding state.
    @ivar duid: the client's DUID (raw bytes); C{b""} for a binding with no
        client (FREE, FREE-BACKUP).
    @ivar iaid: the IAID of the IA holding it.
    @ivar start_time_of_state: when C{state} was entered (RFC 8156 STOS).
    @ivar cltt: client last transaction time (RFC 8156 CLT).
    @ivar preferred_lifetime: preferred lifetime sent to the client.
    @ivar valid_lifetime: valid lifetime sent to the client.
    @ivar expires: absolute time the valid lifetime runs out (for ABANDONED,
        the end of the quarantine).
    @ivar partner_lifetime_sent: absolute expiry time last proposed to the
        failover partner (0 if none).
    @ivar partner_lifetime_acked: absolute expiry time the partner has
        acknowledged (0 if none); the MCLT rule caps client lifetimes at
        C{max(partner_lifetime_acked, now) + MCLT}.
    @ivar fqdn: the client FQDN (RFC 4704) recorded on the lease, or C{None}.
    @ivar fqdn_flags: the FQDN option flags as received.
    @ivar dns_update_state: room for the DNS update state of the lease.
    @ivar partner_state_acked: the binding state the failover partner last
        acknowledged for this binding (C{None}: none): set when the partner
        acks our update of it, or when we accept the partner's update (RFC
        8156 sections 7.5.5, 7.7).  With C{partner_stos_acked} it tells
        whether the partner knows the I{current} state: see L{stateAcked}.
    @ivar partner_stos_acked: the start time of that acknowledged state.
    """

    lease_type: LeaseType
    address: IPv6Address
    prefix_length: int
    state: BindingState
    duid: bytes
    iaid: int
    start_time_of_state: float
    cltt: float
    preferred_lifetime: int
    valid_lifetime: int
    expires: float
    partner_lifetime_sent: float = 0.0
    partner_lifetime_acked: float = 0.0
    fqdn: str | None = None
    fqdn_flags: int = 0
    dns_update_state: str | None = None
    partner_state_acked: BindingState | None = None
    partner_stos_acked: float = 0.0

    @property
    def key(self) -> tuple[IPv6Address, int]:
        """The store key: one binding per (address, prefix length)."""
        return (self.address, self.prefix_length)

    @property
    def prefix(self) -> IPv6Network:
        """The address or prefix as a network (/128 for addresses)."""
        return IPv6Network((self.address, self.prefix_length))

    def heldBy(self, duid: bytes, iaid: int) -> bool:
        """Is this binding the one of this client's IA?"""
        return self.duid == duid and self.iaid == iaid

    @property
    def stateAcked(self) -> bool:
        """
        Does the failover partner know this binding's current state (same
        state, same start time of state)?  A local change of state makes
        it false by itself, whoever builds the new record.
        """
        return (
            self.partner_state_acked is self.state
            and self.partner_stos_acked == self.start_time_of_state
        )


_FIELD_NAMES = tuple(field.name for field in fields(Lease))
_ALL_FIELDS = operator.attrgetter(*_FIELD_NAMES)
_PARTNER_LIFETIME_SENT = _FIELD_NAMES.index("partner_lifetime_sent")


def withPartnerLifetimeSent(lease: Lease, proposal: float) -> Lease:
    """
    C{evolve(lease, partner_lifetime_sent=proposal)}, built positionally:
    every replicated change goes through it once on the failover
    primary, and C{evolve}'s generic walk over the fields costs about
    twice as much.
    """
    values = list(_ALL_FIELDS(lease))
    values[_PARTNER_LIFETIME_SENT] = proposal
    return Lease(*values)
