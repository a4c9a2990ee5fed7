"""
Tests for L{dhcp6ha.failover.commands}: the AMP schemas of the failover protocol.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.failover.commands import (
    BindingUpdate,
    Connect,
    Contact,
    batches,
    bindingFromBox,
    bindingToBox,
)
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType


def _lease(n: int, duid: bytes = b"\x00\x03\x00\x01" + b"\x02" * 6) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(int(IPv6Address("2001:db8::")) + n),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=duid,
        iaid=n,
        start_time_of_state=1000.5,
        cltt=1001.25,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=1601.25,
        fqdn="host.example.com" if n % 2 else None,
        fqdn_flags=1 if n % 2 else 0,
    )


def _roundTrip(command: type[amp.Command], **kwargs: object) -> dict[str, object]:
    """Serialize C{kwargs} as C{command}'s arguments and parse them back."""
    strings = command.makeArguments(kwargs, None)
    wire = amp.AmpBox(strings).serialize()
    box = amp.parseString(wire)[0]
    parsed: dict[str, object] = command.parseArguments(box, None)
    return parsed


class BindingWireTests(SynchronousTestCase):
    """Bindings survive the trip through a BindingUpdate box unchanged."""

    def test_roundTrip(self) -> None:
        """
        Every field of a binding, FQDN or not, decodes to an equal L{Lease}
        and the proposed partner lifetime travels with it.
        """
        leases = [_lease(n) for n in range(4)]
        parsed = _roundTrip(
            BindingUpdate, bindings=[bindingToBox(lease, 2000.0) for lease in leases]
        )
        boxes = parsed["bindings"]
        assert isinstance(boxes, list)
        self.assertEqual([bindingFromBox(box) for box in boxes], leases)
        self.assertEqual({box["partner_lifetime"] for box in boxes}, {2000.0})

    def test_prefixBinding(self) -> None:
        """A delegated prefix keeps its type and length."""
        lease = Lease(
            lease_type=LeaseType.PD,
            address=IPv6Address("2001:db8:100:ff00::"),
            prefix_length=56,
            state=BindingState.FREE_BACKUP,
            duid=b"",
            iaid=0,
            start_time_of_state=5.0,
            cltt=0.0,
            preferred_lifetime=0,
            valid_lifetime=0,
            expires=0.0,
        )
        parsed = _roundTrip(BindingUpdate, bindings=[bindingToBox(lease, 0.0)])
        boxes = parsed["bindings"]
        assert isinstance(boxes, list)
        self.assertEqual(bindingFromBox(boxes[0]), lease)


class BatchTests(SynchronousTestCase):
    """L{batches} keeps every AmpList value under AMP's 64 KiB limit."""

    def test_underLimit(self) -> None:
        """
        Thousands of bindings with the longest DUIDs (130 bytes) are cut into
        batches whose serialized value fits in one AMP value, losing none.
        """
        leases = [_lease(n, duid=bytes([n % 256]) * 130) for n in range(3000)]
        cut = list(batches(bindingToBox(lease, 0.0) for lease in leases))
        self.assertGreater(len(cut), 1)
        self.assertEqual(sum(len(batch) for batch in cut), len(leases))
        for batch in cut:
            strings = BindingUpdate.makeArguments({"bindings": batch}, None)
            self.assertLess(len(strings[b"bindings"]), 0xFFFF)
            # serializing the box raises TooLong if any value is too big
            amp.AmpBox(strings).serialize()

    def test_empty(self) -> None:
        """No bindings, no batches."""
        self.assertEqual(list(batches([])), [])


class ExtensibilityTests(SynchronousTestCase):
    """RFC 7031 requirement 10: unknown optional arguments are ignored."""

    def test_unknownArgumentIgnored(self) -> None:
        """
        A Contact box from a newer partner carrying an argument this version
        does not know parses, and the unknown key is dropped.
        """
        strings = Contact.makeArguments({"sender_time": 12.5}, None)
        strings[b"future_extension"] = b"whatever"
        box = amp.parseString(amp.AmpBox(strings).serialize())[0]
        parsed = Contact.parseArguments(box, None)
        self.assertEqual(parsed, {"sender_time": 12.5, "clients_seen": None})

    def test_connectFields(self) -> None:
        """Connect carries version, relationship, role, MCLT and the sender's time."""
        parsed = _roundTrip(
            Connect,
            protocol_version=1,
            relationship="lan",
            role="primary",
            mclt=3600,
            sender_time=1.5,
            max_unacked=100,
            keepalive=10.0,
        )
        self.assertEqual(parsed["relationship"], "lan")
        self.assertEqual(parsed["mclt"], 3600)
