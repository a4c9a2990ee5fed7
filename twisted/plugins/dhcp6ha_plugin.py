# -*- test-case-name: tests.test_tap -*-
"""The C{twistd dhcp6ha} plugin: C{twistd -n dhcp6ha --config etc/dhcp6ha.ini}."""

from twisted.application.service import ServiceMaker

dhcp6ha = ServiceMaker("dhcp6ha", "dhcp6ha.tap", "DHCPv6 failover server", "dhcp6ha")
