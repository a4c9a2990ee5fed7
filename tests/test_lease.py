# -*- test-case-name: tests.test_lease -*-
"""
Tests for L{dhcp6ha.leases.lease}: the binding record.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import attrs
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.leases import BindingState as ReexportedState
from dhcp6ha.leases import Lease as ReexportedLease
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType, evolve, withPartnerLifetimeSent
from tests.storetests import makeLease


class LeaseTests(SynchronousTestCase):
    """The binding record."""

    def test_key(self) -> None:
        """A binding is keyed by its address and prefix length."""
        lease = makeLease(1)
        self.assertEqual(lease.key, (IPv6Address("2001:db8::1"), 128))
        prefix = makeLease(1, prefix_length=56, lease_type=LeaseType.PD)
        self.assertEqual(prefix.key, (IPv6Address("2001:db8:0:100::"), 56))

    def test_prefix(self) -> None:
        """C{prefix} is the binding as a network: /128 for an address."""
        self.assertEqual(makeLease(1).prefix, IPv6Network("2001:db8::1/128"))
        self.assertEqual(
            makeLease(1, prefix_length=56, lease_type=LeaseType.PD).prefix,
            IPv6Network("2001:db8:0:100::/56"),
        )

    def test_heldBy(self) -> None:
        """C{heldBy} matches both the DUID and the IAID."""
        lease = makeLease(1, duid=b"a", iaid=7)
        self.assertTrue(lease.heldBy(b"a", 7))
        self.assertFalse(lease.heldBy(b"a", 8))
        self.assertFalse(lease.heldBy(b"b", 7))

    def test_defaults(self) -> None:
        """The failover and DNS fields default to 'nothing yet'."""
        lease = makeLease(1)
        self.assertEqual(
            (
                lease.partner_lifetime_sent,
                lease.partner_lifetime_acked,
                lease.fqdn,
                lease.fqdn_flags,
                lease.dns_update_state,
            ),
            (0.0, 0.0, None, 0, None),
        )

    def test_frozen(self) -> None:
        """A binding cannot be changed in place; L{evolve} makes a new one."""
        lease = makeLease(1)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, lease, "iaid", 2)
        changed = evolve(lease, state=BindingState.EXPIRED)
        self.assertEqual(changed.state, BindingState.EXPIRED)
        self.assertEqual(lease.state, BindingState.ACTIVE)
        self.assertEqual(evolve(changed, state=BindingState.ACTIVE), lease)

    def test_valueSemantics(self) -> None:
        """Bindings with equal fields are equal and hash alike."""
        self.assertEqual(makeLease(1), makeLease(1))
        self.assertEqual(hash(makeLease(1)), hash(makeLease(1)))
        self.assertNotEqual(makeLease(1), makeLease(1, iaid=2))
        self.assertEqual(len({makeLease(1), makeLease(1), makeLease(2)}), 2)

    def test_storedNames(self) -> None:
        """
        The enum values are what the lease database stores: they must not
        change without a schema migration.
        """
        self.assertEqual([t.value for t in LeaseType], ["na", "ta", "pd"])
        self.assertEqual(
            [s.value for s in BindingState],
            [
                "active",
                "expired",
                "released",
                "pending-free",
                "free",
                "free-backup",
                "abandoned",
                "reset",
            ],
        )

    def test_package(self) -> None:
        """C{dhcp6ha.leases} re-exports the record."""
        self.assertIs(ReexportedLease, Lease)
        self.assertIs(ReexportedState, BindingState)


class WithPartnerLifetimeSentTests(SynchronousTestCase):
    """L{withPartnerLifetimeSent} is C{evolve} of that one field."""

    def test_sameAsEvolve(self) -> None:
        """
        Every field but C{partner_lifetime_sent} is copied, that one is the
        proposal: the record equals what C{evolve} makes of it.
        """
        lease = makeLease(
            1,
            prefix_length=56,
            lease_type=LeaseType.PD,
            partner_lifetime_sent=650.0,
            partner_lifetime_acked=640.0,
            fqdn="host.example.",
            fqdn_flags=1,
            dns_update_state="done",
            partner_state_acked=BindingState.ACTIVE,
            partner_stos_acked=100.0,
        )
        proposed = withPartnerLifetimeSent(lease, 1234.5)
        self.assertEqual(proposed, evolve(lease, partner_lifetime_sent=1234.5))
        self.assertEqual(proposed.partner_lifetime_sent, 1234.5)
        self.assertEqual(lease.partner_lifetime_sent, 650.0)
