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
from collections.abc import Iterable, Iterator
from ipaddress import IPv6Address
from typing import Any

from twisted.protocols import amp

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

PROTOCOL_VERSION = 1

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

    def fromString(self, inString: bytes) -> IPv6Address:
        if len(inString) != 16:
            raise ValueError("an IPv6 address is 16 bytes, got " + str(len(inString)))
        return IPv6Address(inString)

    def toString(self, inObject: IPv6Address) -> bytes:
        return inObject.packed


class Enum(amp.Argument):
    """A member of an C{enum.Enum} whose values are text."""

    def __init__(self, enumType: type[enum.Enum], optional: bool = False) -> None:
        amp.Argument.__init__(self, optional)
        self.enumType = enumType

    def fromString(self, inString: bytes) -> enum.Enum:
        return self.enumType(inString.decode("ascii"))

    def toString(self, inObject: enum.Enum) -> bytes:
        return str(inObject.value).encode("ascii")


# One binding as it travels in a BindingUpdate (RFC 8156 section 7.2, with
# OPTION_F_* fields as named arguments).
BINDING_FIELDS: list[tuple[bytes, amp.Argument]] = [
    (b"lease_type", Enum(LeaseType)),
    (b"address", Address()),
    (b"prefix_length", amp.Integer()),
    (b"state", Enum(BindingState)),
    (b"duid", amp.String()),
    (b"iaid", amp.Integer()),
    (b"start_time_of_state", amp.Float()),
    (b"cltt", amp.Float()),
    (b"preferred_lifetime", amp.Integer()),
    (b"valid_lifetime", amp.Integer()),
    (b"expires", amp.Float()),
    # OPTION_F_PARTNER_LIFETIME: the expiry the sender proposes the receiver
    # may allow (the receiver acks it; the sender's MCLT cap then moves on).
    (b"partner_lifetime", amp.Float()),
    (b"fqdn", amp.Unicode(optional=True)),
    (b"fqdn_flags", amp.Integer(optional=True)),
]

BINDING_RESULT_FIELDS: list[tuple[bytes, amp.Argument]] = [
    (b"address", Address()),
    (b"prefix_length", amp.Integer()),
    (b"status", amp.Integer()),
    (b"message", amp.Unicode(optional=True)),
]


def bindingToBox(lease: Lease, partner_lifetime: float) -> dict[str, Any]:
    """The AmpList element for one binding."""
    box: dict[str, Any] = {
        "lease_type": lease.lease_type,
        "address": lease.address,
        "prefix_length": lease.prefix_length,
        "state": lease.state,
        "duid": lease.duid,
        "iaid": lease.iaid,
        "start_time_of_state": lease.start_time_of_state,
        "cltt": lease.cltt,
        "preferred_lifetime": lease.preferred_lifetime,
        "valid_lifetime": lease.valid_lifetime,
        "expires": lease.expires,
        "partner_lifetime": partner_lifetime,
    }
    if lease.fqdn is not None:
        box["fqdn"] = lease.fqdn
        box["fqdn_flags"] = lease.fqdn_flags
    return box


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


def _encodedSize(box: dict[str, Any]) -> int:
    """Bytes this element adds to the AmpList value (keys, values, framing)."""
    size = 2  # the terminating empty key of the element's sub-box
    for name, argument in BINDING_FIELDS:
        key = name.decode("ascii")
        if key in box:
            size += 4 + len(name) + len(argument.toString(box[key]))
    return size


def batches(
    boxes: Iterable[dict[str, Any]], limit: int = MAX_BATCH_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """
    Cut binding boxes into lists whose AmpList encoding stays under C{limit}
    bytes, so no AMP value exceeds its 64 KiB bound.
    """
    batch: list[dict[str, Any]] = []
    size = 0
    for box in boxes:
        boxSize = _encodedSize(box)
        if batch and size + boxSize > limit:
            yield batch
            batch, size = [], 0
        batch.append(box)
        size += boxSize
    if batch:
        yield batch


class Connect(amp.Command):
    """
    RFC 8156 CONNECT / CONNECTREPLY: sent by the primary once TLS (with both
    identities checked) is up.  Refused on a version, relationship, role or
    MCLT mismatch, or a clock skew beyond the bound.
    """

    arguments = [
        (b"protocol_version", amp.Integer()),
        (b"relationship", amp.Unicode()),
        (b"role", amp.Unicode()),
        (b"mclt", amp.Integer()),
        (b"sender_time", amp.Float()),
        (b"max_unacked", amp.Integer()),
        (b"keepalive", amp.Float()),
        # The sender's server DUID, so the partner can recognise a client
        # message naming it (Server Identifier) when it takes over.
        (b"server_duid", amp.String(optional=True)),
    ]
    response = [
        (b"protocol_version", amp.Integer()),
        (b"role", amp.Unicode()),
        (b"sender_time", amp.Float()),
        (b"max_unacked", amp.Integer()),
        # Section 6.1.2: CONNECTREPLY carries the MCLT in use (which must
        # equal the CONNECT's) and the responder's FO_KEEPALIVE_TIME.
        (b"mclt", amp.Integer(optional=True)),
        (b"keepalive", amp.Float(optional=True)),
        (b"server_duid", amp.String(optional=True)),
    ]
    errors = {ConnectRefused: b"CONNECT_REFUSED"}
    fatalErrors = {ConnectRefused: b"CONNECT_REFUSED"}


class State(amp.Command):
    """RFC 8156 STATE: the sender's endpoint state and when it began."""

    arguments = [
        (b"state", amp.Unicode()),
        (b"start_time_of_state", amp.Float()),
        (b"partner_down_time", amp.Float(optional=True)),
        (b"has_database", amp.Boolean(optional=True)),
        # The STARTUP flag (section 5.5.18): the sender is in STARTUP and
        # C{state} is the state it will resume.
        (b"startup", amp.Boolean(optional=True)),
    ]
    response: list[tuple[bytes, amp.Argument]] = []


class Contact(amp.Command):
    """
    RFC 8156 CONTACT (heartbeat).  C{clients_seen} reports the client traffic
    the sender sees (RFC 7031 section 4.7), so a partner can tell when the
    sender has lost its client-facing link.
    """

    arguments = [
        (b"sender_time", amp.Float()),
        (b"clients_seen", amp.Integer(optional=True)),
    ]
    response: list[tuple[bytes, amp.Argument]] = []


class Disconnect(amp.Command):
    """RFC 8156 DISCONNECT: the sender is closing the connection, and why."""

    arguments = [
        (b"status", amp.Integer()),
        (b"reason", amp.Unicode()),
    ]
    requiresAnswer = False


class BindingUpdate(amp.Command):
    """
    RFC 8156 BNDUPD / BNDREPLY: a batch of bindings.  The receiver answers
    only once its accepted changes are durable, with one result per binding.
    """

    arguments = [(b"bindings", amp.AmpList(BINDING_FIELDS))]
    response = [(b"results", amp.AmpList(BINDING_RESULT_FIELDS))]
    errors = {NotInState: b"NOT_IN_STATE"}


class PoolRequest(amp.Command):
    """
    RFC 8156 POOLREQ / POOLRESP: the secondary asks for its share of free
    prefixes; the answer acknowledges the task (the FREE-BACKUP bindings
    follow as BindingUpdates).
    """

    arguments: list[tuple[bytes, amp.Argument]] = []
    response = [(b"pending", amp.Integer())]
    errors = {NotInState: b"NOT_IN_STATE"}


class UpdateRequest(amp.Command):
    """
    RFC 8156 UPDREQ: send me every binding change I have not acked.

    C{request_id}, when present, is echoed in the L{UpdateDone} that ends
    the answer, so the requester can tell which request it ends.
    """

    arguments = [(b"request_id", amp.Integer(optional=True))]
    response: list[tuple[bytes, amp.Argument]] = []


class UpdateRequestAll(amp.Command):
    """
    RFC 8156 UPDREQALL: send me every binding you have.

    C{request_id}, when present, is echoed in the L{UpdateDone} that ends
    the answer, so the requester can tell which request it ends.
    """

    arguments = [(b"request_id", amp.Integer(optional=True))]
    response: list[tuple[bytes, amp.Argument]] = []


class UpdateDone(amp.Command):
    """
    RFC 8156 UPDDONE: every update asked for was sent and acked.
    C{request_id} echoes the request's, when it had one.
    """

    arguments = [(b"request_id", amp.Integer(optional=True))]
    response: list[tuple[bytes, amp.Argument]] = []
