# -*- test-case-name: tests.test_tap -*-
"""The C{twistd dhcp6ha} plugin: C{twistd -n dhcp6ha --config etc/dhcp6ha.ini}."""

from collections.abc import Callable
from typing import cast

from twisted.application.service import ServiceMaker

# ServiceMaker(name, module, description, tapname), whose constructor is
# untyped (mypy --strict): called through this typed view of the class.
_serviceMaker = cast(Callable[[str, str, str, str], ServiceMaker], ServiceMaker)

dhcp6ha = _serviceMaker("dhcp6ha", "dhcp6ha.tap", "DHCPv6 failover server", "dhcp6ha")
