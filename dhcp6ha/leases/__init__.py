# -*- test-case-name: tests.test_lease -*-
"""
Bindings (leases) and their stable storage.
"""

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

__all__ = ["BindingState", "Lease", "LeaseType"]
