"""
Tests for L{dhcp6ha.config}.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.config import (
    AddressPool,
    ConfigError,
    FailoverConfig,
    FailoverRole,
    IdentityKind,
    PrefixPool,
    Reservation,
    ServerConfig,
    ServerSection,
    SubnetConfig,
    parseConfig,
    parseConfigText,
)

_ETC = FilePath(__file__).parent().parent().child("etc")

_Keys = Mapping[str, str | None]


def _ini(
    server: _Keys | None = None,
    subnets: Mapping[str, _Keys] | None = None,
    reservations: Mapping[str, _Keys] | None = None,
    extra: str = "",
    failovers: Mapping[str, _Keys] | None = None,
) -> str:
    """
    The text of a configuration: a [server] with a database, subnets (by
    default one, C{lan}, on 2001:db8:1::/64; the Nth subnet's prefix defaults
    to 2001:db8:N::/64), reservations and failover sections (given in full).
    A key given as C{None} is left out.
    """

    def section(title: str, base: Mapping[str, str], keys: _Keys) -> str:
        merged: dict[str, str | None] = {**base, **keys}
        lines = [f"[{title}]"] + [f"{k} = {v}" for k, v in merged.items() if v is not None]
        return "\n".join(lines) + "\n"

    parts = [section("server", {"database": "var/test.sqlite"}, server or {})]
    for index, (name, keys) in enumerate((subnets if subnets is not None else {"lan": {}}).items()):
        parts.append(section("subnet:" + name, {"prefix": f"2001:db8:{index + 1}::/64"}, keys))
    for name, keys in (reservations or {}).items():
        parts.append(section("reservation:" + name, {}, keys))
    for name, keys in (failovers or {}).items():
        parts.append(section("failover:" + name, {}, keys))
    return "\n".join(parts) + extra


class _ConfigTestMixin(SynchronousTestCase):
    """Helpers shared by the test cases below."""

    def parse(self, text: str) -> ServerConfig:
        return parseConfigText(text, "test.ini")

    def lan(self, **keys: str | None) -> SubnetConfig:
        """Parse a config whose only subnet, lan, has these keys (C{_} for C{-})."""
        config = self.parse(
            _ini(subnets={"lan": {k.replace("_", "-"): v for k, v in keys.items()}})
        )
        return config.subnets[0]

    def assertConfigError(
        self, text: str, section: str | None, key: str | None, *fragments: str
    ) -> ConfigError:
        """
        Parsing C{text} fails with a L{ConfigError} for this section and key,
        whose reason contains every fragment.
        """
        error = self.assertRaises(ConfigError, parseConfigText, text, "test.ini")
        self.assertEqual((error.path, error.section, error.key), ("test.ini", section, key))
        for fragment in fragments:
            self.assertIn(fragment, error.reason)
        return error

    def assertLanError(self, key: str, value: str, *fragments: str) -> ConfigError:
        """C{[subnet:lan] key = value} is refused, with these words in the reason."""
        return self.assertConfigError(
            _ini(subnets={"lan": {key: value}}), "subnet:lan", key, *fragments
        )

    def assertServerError(self, key: str, value: str, *fragments: str) -> ConfigError:
        """C{[server] key = value} is refused, with these words in the reason."""
        return self.assertConfigError(_ini(server={key: value}), "server", key, *fragments)


class ConfigErrorTests(SynchronousTestCase):
    """
    L{ConfigError} names the file, section and key.
    """

    def test_str(self) -> None:
        """The message is 'path: [section] key: reason'."""
        self.assertEqual(
            str(ConfigError("a.ini", "server", "port", "bad")), "a.ini: [server] port: bad"
        )

    def test_strWithoutKey(self) -> None:
        """A section-level error has no key."""
        self.assertEqual(str(ConfigError("a.ini", "server", None, "bad")), "a.ini: [server]: bad")

    def test_strFileLevel(self) -> None:
        """A file-level error has neither section nor key."""
        self.assertEqual(str(ConfigError("a.ini", None, None, "bad")), "a.ini: bad")


class ReadFileTests(SynchronousTestCase):
    """
    L{parseConfig} reads a file, and turns every reading problem into a
    L{ConfigError} naming the path.
    """

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_readsFile(self) -> None:
        """The file is parsed and its path kept in the result."""
        path = self.write(_ini().encode("utf-8"))
        config = parseConfig(path)
        self.assertEqual(config.path, path)
        self.assertEqual(config.subnets[0].name, "lan")

    def test_missingFile(self) -> None:
        """A missing file is a file-level error naming the path."""
        path = self.mktemp()
        error = self.assertRaises(ConfigError, parseConfig, path)
        self.assertEqual((error.path, error.section, error.key), (path, None, None))
        self.assertIn("cannot read", error.reason)
        self.assertIn("No such file", error.reason)
        self.assertIn(path, str(error))

    def test_directory(self) -> None:
        """A directory is refused as such."""
        path = self.mktemp()
        os.mkdir(path)
        error = self.assertRaises(ConfigError, parseConfig, path)
        self.assertEqual((error.path, error.section, error.key), (path, None, None))
        self.assertIn("is a directory", error.reason)

    def test_unreadable(self) -> None:
        """A file the process may not read is refused, naming the path."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads every file")
        path = self.write(_ini().encode("utf-8"))
        os.chmod(path, 0)
        error = self.assertRaises(ConfigError, parseConfig, path)
        self.assertIn("Permission denied", error.reason)

    def test_pathThroughAFile(self) -> None:
        """Any other reading problem is refused with the system's words for it."""
        path = self.write(b"")
        error = self.assertRaises(ConfigError, parseConfig, os.path.join(path, "x.ini"))
        self.assertEqual((error.section, error.key), (None, None))
        self.assertIn("cannot read the configuration file: Not a directory", error.reason)

    def test_notUtf8(self) -> None:
        """Bytes that are not UTF-8 are refused, with the line they are on."""
        path = self.write(b"[server]\ndatabase = var/\xff.sqlite\n")
        error = self.assertRaises(ConfigError, parseConfig, path)
        self.assertEqual((error.path, error.section, error.key), (path, None, None))
        self.assertIn("not UTF-8", error.reason)
        self.assertIn("0xff", error.reason)
        self.assertIn("line 2", error.reason)

    def test_utf8ByteOrderMark(self) -> None:
        """A UTF-8 byte order mark (some editors write one) is skipped."""
        path = self.write(b"\xef\xbb\xbf" + _ini().encode("utf-8"))
        self.assertEqual(parseConfig(path).server.database, "var/test.sqlite")

    def test_utf8Text(self) -> None:
        """Non-ASCII UTF-8 text is read as such (in a path, say)."""
        path = self.write(_ini(server={"database": "var/d\u00e9j\u00e0.sqlite"}).encode("utf-8"))
        self.assertEqual(parseConfig(path).server.database, "var/d\u00e9j\u00e0.sqlite")

    def test_emptyFile(self) -> None:
        """An empty file lacks the [server] section."""
        path = self.write(b"")
        error = self.assertRaises(ConfigError, parseConfig, path)
        self.assertEqual((error.section, error.key), ("server", None))
        self.assertIn("missing", error.reason)


class ExampleTests(SynchronousTestCase):
    """
    The example files in etc/ are valid.
    """

    def test_dhcp6haIni(self) -> None:
        """
        etc/dhcp6ha.ini (what C{make run} uses) needs no privileges: loopback,
        a high port, relayed clients only, one subnet with an address pool
        and a /40 delegated in /56 pieces.
        """
        config = parseConfig(_ETC.child("dhcp6ha.ini").path)
        self.assertEqual(config.server.address, IPv6Address("::1"))
        self.assertEqual(config.server.port, 5547)
        self.assertEqual(config.server.interfaces, ())
        self.assertEqual(config.server.database, "var/dhcp6ha.sqlite")
        self.assertEqual(config.server.control_socket, "var/dhcp6ha.ctl")
        [subnet] = config.subnets
        self.assertEqual(subnet.prefix, IPv6Network("2001:db8:1::/64"))
        self.assertEqual(subnet.interface, None)
        self.assertTrue(subnet.pools)
        self.assertEqual(subnet.pd_pools, (PrefixPool(IPv6Network("2001:db8:100::/40"), 56),))

    def test_controlSockets(self) -> None:
        """Every example has a control socket, each its own (a pair runs side by side)."""
        sockets = [
            parseConfig(_ETC.child(name).path, checkFiles=False).server.control_socket
            for name in ("dhcp6ha.ini", "relayed.ini", "primary.ini", "secondary.ini")
        ]
        self.assertNotIn(None, sockets)
        self.assertEqual(len(set(sockets)), len(sockets))

    def test_relayedIni(self) -> None:
        """
        etc/relayed.ini has several relayed subnets, pd-pools and
        reservations, each under its subnet.
        """
        config = parseConfig(_ETC.child("relayed.ini").path)
        self.assertGreater(len(config.subnets), 1)
        self.assertTrue(all(subnet.interface is None for subnet in config.subnets))
        self.assertTrue(any(subnet.pd_pools for subnet in config.subnets))
        printers = config.subnetByName("printers")
        self.assertEqual(
            [r.addresses for r in printers.reservations],
            [(IPv6Address("2001:db8:30::10"),), (IPv6Address("2001:db8:30::11"),)],
        )
        self.assertEqual(len(config.subnetByName("office").reservations), 1)


class SyntaxTests(_ConfigTestMixin):
    """
    The ini syntax: configparser's errors become L{ConfigError}s.
    """

    def test_noSectionHeader(self) -> None:
        """A key before any section header is a file-level error."""
        self.assertConfigError(
            "database = x\n[server]\n", None, None, "line 1", "before any [section] header"
        )

    def test_duplicateKey(self) -> None:
        """A key given twice in a section names the section, the key and the line."""
        self.assertConfigError(
            "[server]\ndatabase = a\nport = 5\ndatabase = b\n",
            "server",
            "database",
            "appears twice",
            "line 4",
        )

    def test_duplicateKeyOtherCase(self) -> None:
        """Keys are case-insensitive, so PORT and port are the same key."""
        self.assertConfigError(
            "[server]\ndatabase = a\nport = 5\nPORT = 6\n", "server", "port", "appears twice"
        )

    def test_keysCaseInsensitive(self) -> None:
        """A key in capitals is the same key."""
        self.assertEqual(self.parse(_ini(server={"PORT": "5547"})).server.port, 5547)

    def test_duplicateSection(self) -> None:
        """A section given twice is an error naming it."""
        self.assertConfigError(
            _ini(extra="\n[subnet:lan]\nprefix = 2001:db8:9::/64\n"),
            "subnet:lan",
            None,
            "appears twice",
        )

    def test_lineWithoutEquals(self) -> None:
        """A line that is neither a key = value, a header nor a comment is an error."""
        self.assertConfigError(
            "[server]\ndatabase = a\nthis is wrong\n", None, None, "line 3", "'this is wrong'"
        )

    def test_colonIsNotADelimiter(self) -> None:
        """Only '=' separates keys from values: 'key: value' is not understood."""
        self.assertConfigError("[server]\ndatabase: a\n", None, None, "line 2")

    def test_inlineComments(self) -> None:
        """';' and '#' after white space start a comment, also after a value."""
        config = self.parse(
            "; comment\n# comment\n[server]\ndatabase = a.sqlite ; comment\n"
            "port = 5547 # comment\n[subnet:lan] ; comment\nprefix = 2001:db8:1::/64\n"
        )
        self.assertEqual(config.server.database, "a.sqlite")
        self.assertEqual(config.server.port, 5547)

    def test_noInterpolation(self) -> None:
        """'%' has no special meaning."""
        config = self.parse(_ini(server={"database": "var/%(name)s%.sqlite"}))
        self.assertEqual(config.server.database, "var/%(name)s%.sqlite")

    def test_noDefaultSection(self) -> None:
        """[DEFAULT] is not special: it is an unknown section."""
        self.assertConfigError(
            "[DEFAULT]\nport = 5\n" + _ini(), "DEFAULT", None, "unknown section [DEFAULT]"
        )

    def test_crlf(self) -> None:
        """Files with CRLF line ends parse."""
        config = self.parse(_ini(server={"port": "5547"}).replace("\n", "\r\n"))
        self.assertEqual(config.server.port, 5547)

    def test_continuationLines(self) -> None:
        """A list may go on over indented continuation lines."""
        config = self.parse(
            "[server]\ndatabase = a\n[subnet:lan]\nprefix = 2001:db8:1::/64\n"
            "pools = 2001:db8:1::10-2001:db8:1::1f,\n    2001:db8:1::100/120\n"
            "dns-servers = 2001:db8::53\n    2001:db8::54\n"
        )
        self.assertEqual(len(config.subnets[0].pools), 2)
        self.assertEqual(len(config.subnets[0].dns_servers), 2)


class SectionTests(_ConfigTestMixin):
    """
    The table of sections and keys: unknown ones are refused.
    """

    def test_unknownSection(self) -> None:
        """An unknown section is refused, listing the allowed ones."""
        self.assertConfigError(
            _ini(extra="\n[clients]\n"),
            "clients",
            None,
            "unknown section [clients]",
            "[server], [subnet:NAME], [reservation:NAME], [failover:NAME]",
        )

    def test_failoverKnown(self) -> None:
        """[failover:NAME] is understood: an empty one lacks its first required key."""
        self.assertConfigError(
            _ini(extra="\n[failover:pair]\n"), "failover:pair", "role", "required key 'role'"
        )

    def test_failoverWithoutName(self) -> None:
        """[failover] needs a name: the relationship's."""
        self.assertConfigError(
            _ini(extra="\n[failover]\n"), "failover", None, "needs a name: [failover:NAME]"
        )

    def test_sectionNamesCaseSensitive(self) -> None:
        """[Server] is not [server]."""
        self.assertConfigError(_ini(extra="\n[Server]\n"), "Server", None, "unknown section")

    def test_subnetWithoutName(self) -> None:
        """[subnet] needs a name."""
        self.assertConfigError(
            _ini(extra="\n[subnet]\nprefix = 2001:db8:9::/64\n"),
            "subnet",
            None,
            "needs a name",
            "[subnet:NAME]",
        )

    def test_subnetEmptyName(self) -> None:
        """[subnet:] needs a name."""
        self.assertConfigError(
            _ini(extra="\n[subnet:]\nprefix = 2001:db8:9::/64\n"), "subnet:", None, "needs a name"
        )

    def test_badName(self) -> None:
        """A name with other characters than letters, digits, '_', '.', '-' is refused."""
        self.assertConfigError(
            _ini(extra="\n[subnet:a b]\nprefix = 2001:db8:9::/64\n"),
            "subnet:a b",
            None,
            "'a b'",
            "letters, digits",
        )

    def test_goodNames(self) -> None:
        """Letters, digits, '_', '.' and '-' make a name."""
        config = self.parse(_ini(subnets={"Lab_2.east-1": {}}))
        self.assertEqual(config.subnets[0].name, "Lab_2.east-1")

    def test_serverTakesNoName(self) -> None:
        """[server:x] is refused."""
        self.assertConfigError(
            "[server:x]\ndatabase = a\n", "server:x", None, "[server] takes no name"
        )

    def test_unknownServerKey(self) -> None:
        """An unknown key is refused, listing the allowed keys."""
        error = self.assertServerError("colour", "blue", "unknown key 'colour'", "allowed keys:")
        for key in ("interfaces", "address", "port", "database", "duid", "decline-quarantine"):
            self.assertIn(key, error.reason)

    def test_unknownKeySuggestion(self) -> None:
        """A misspelt key gets a suggestion."""
        self.assertLanError("pd-pool", "2001:db8:100::/40 delegate /56", "did you mean 'pd-pools'?")

    def test_unknownSubnetKey(self) -> None:
        """Subnet keys are checked too."""
        error = self.assertLanError("router", "2001:db8:1::1", "unknown key 'router'")
        self.assertIn("information-refresh-time", error.reason)

    def test_unknownReservationKey(self) -> None:
        """Reservation keys are checked too."""
        self.assertConfigError(
            _ini(reservations={"r": {"duid": "000300010200000000aa", "subnet": "lan", "mac": "x"}}),
            "reservation:r",
            "mac",
            "unknown key 'mac'",
            "duid, subnet, addresses, prefixes",
        )

    def test_serverKeyInSubnet(self) -> None:
        """A key of another section is unknown here."""
        self.assertLanError("port", "547", "unknown key 'port'")

    def test_missingServer(self) -> None:
        """Without [server] there is no database: refused."""
        self.assertConfigError(
            "[subnet:lan]\nprefix = 2001:db8:1::/64\n",
            "server",
            None,
            "[server] section is missing",
        )

    def test_missingDatabase(self) -> None:
        """database is required."""
        self.assertConfigError(
            _ini(server={"database": None, "port": "5547"}),
            "server",
            "database",
            "required key 'database' is missing",
        )

    def test_noSubnet(self) -> None:
        """At least one subnet is required."""
        self.assertConfigError(_ini(subnets={}), None, None, "at least one is required")

    def test_missingPrefix(self) -> None:
        """A subnet needs its prefix."""
        self.assertConfigError(
            _ini(subnets={"lan": {"prefix": None}}), "subnet:lan", "prefix", "'prefix' is missing"
        )

    def test_reservationMissingDuid(self) -> None:
        """A reservation needs a DUID."""
        self.assertConfigError(
            _ini(reservations={"r": {"subnet": "lan", "addresses": "2001:db8:1::5"}}),
            "reservation:r",
            "duid",
            "'duid' is missing",
        )

    def test_reservationMissingSubnet(self) -> None:
        """A reservation needs a subnet."""
        self.assertConfigError(
            _ini(
                reservations={"r": {"duid": "000300010200000000aa", "addresses": "2001:db8:1::5"}}
            ),
            "reservation:r",
            "subnet",
            "'subnet' is missing",
        )


class ServerSectionTests(_ConfigTestMixin):
    """
    Every key of [server]: its value, default and errors.
    """

    def server(self, **keys: str) -> ServerConfig:
        return self.parse(_ini(server={k.replace("_", "-"): v for k, v in keys.items()}))

    def test_defaults(self) -> None:
        """Only database is required; everything else has a default."""
        server = self.server().server
        self.assertEqual(server.interfaces, ())
        self.assertEqual(server.address, IPv6Address("::"))
        self.assertEqual(server.port, 547)
        self.assertEqual(server.database, "var/test.sqlite")
        self.assertIsNone(server.duid)
        self.assertEqual(server.decline_quarantine, 86400)
        self.assertEqual(server.reclaim_interval, 10.0)
        self.assertEqual(server.commit_delay, 0.0)
        self.assertIsNone(server.control_socket)

    def test_interfaces(self) -> None:
        """interfaces is a comma-separated list of names, each some subnet's interface."""
        config = self.parse(
            _ini(
                server={"interfaces": "veth0, eth1"},
                subnets={"a": {"interface": "veth0"}, "b": {"interface": "eth1"}},
            )
        )
        self.assertEqual(config.server.interfaces, ("veth0", "eth1"))

    def test_interfacesEmpty(self) -> None:
        """An empty interfaces means relayed clients only."""
        self.assertEqual(self.server(interfaces="").server.interfaces, ())

    def test_interfaceNameTooLong(self) -> None:
        """Linux interface names have at most 15 characters."""
        self.assertServerError("interfaces", "a234567890123456", "'a234567890123456'", "15")

    def test_interfaceNameWithSlash(self) -> None:
        """'/' cannot be in an interface name."""
        self.assertServerError("interfaces", "eth/0", "network interface name")

    def test_interfaceDuplicate(self) -> None:
        """An interface listed twice is refused."""
        self.assertServerError("interfaces", "veth0, veth0", "veth0 is listed twice")

    def test_address(self) -> None:
        """address is the IPv6 address to bind."""
        self.assertEqual(self.server(address="::1").server.address, IPv6Address("::1"))

    def test_addressLinkLocalWithZone(self) -> None:
        """A link-local address with its zone may be bound."""
        address = self.server(address="fe80::1%eth0").server.address
        self.assertEqual(address, IPv6Address("fe80::1%eth0"))

    def test_addressNotAnAddress(self) -> None:
        """Garbage is refused."""
        self.assertServerError("address", "localhost", "expected an IPv6 address", "'localhost'")

    def test_addressIPv4(self) -> None:
        """An IPv4 address is refused."""
        self.assertServerError("address", "127.0.0.1", "expected an IPv6 address")

    def test_addressMulticast(self) -> None:
        """Binding to ff02::1:2 is refused, with the way to do it instead."""
        self.assertServerError("address", "ff02::1:2", "multicast", "interfaces")

    def test_port(self) -> None:
        """port is the UDP port."""
        self.assertEqual(self.server(port="5547").server.port, 5547)

    def test_portBounds(self) -> None:
        """1 and 65535 are ports."""
        self.assertEqual(self.server(port="1").server.port, 1)
        self.assertEqual(self.server(port="65535").server.port, 65535)

    def test_portZero(self) -> None:
        """0 is not a port."""
        self.assertServerError("port", "0", "from 1 to 65535", "'0'")

    def test_portTooLarge(self) -> None:
        """65536 is not a port."""
        self.assertServerError("port", "65536", "from 1 to 65535")

    def test_portNotANumber(self) -> None:
        """Text is not a port."""
        self.assertServerError("port", "dhcp", "expected a whole number", "'dhcp'")

    def test_portSigned(self) -> None:
        """Signs, underscores and fractions are not accepted."""
        for value in ("+547", "-1", "5_47", "547.0"):
            self.assertServerError("port", value, "expected a whole number")

    def test_portEmpty(self) -> None:
        """An empty value is not a port."""
        self.assertServerError("port", "", "expected a whole number", "''")

    def test_databaseKeptAsGiven(self) -> None:
        """A relative database path is kept relative (to the current directory)."""
        self.assertEqual(self.server(database="db/x.sqlite").server.database, "db/x.sqlite")

    def test_databaseEmpty(self) -> None:
        """An empty database path is refused."""
        self.assertServerError("database", "", "expected a file path")

    def test_duidColons(self) -> None:
        """A DUID in colon-separated hex."""
        duid = self.server(duid="00:01:00:01:2C:3D:4E:5F:02:00:00:00:00:01").server.duid
        self.assertEqual(duid, bytes.fromhex("000100012c3d4e5f020000000001"))

    def test_duidPlainHex(self) -> None:
        """A DUID in plain hex."""
        self.assertEqual(
            self.server(duid="0003000102000000aaff").server.duid,
            bytes.fromhex("0003000102000000aaff"),
        )

    def test_duidNotHex(self) -> None:
        """Non-hex digits are refused."""
        self.assertServerError("duid", "00:03:00:01:zz:00", "expected a DUID in hex")

    def test_duidOddLength(self) -> None:
        """Plain hex must have whole bytes."""
        self.assertServerError("duid", "000300010", "expected a DUID in hex")

    def test_duidBadGroup(self) -> None:
        """Colon-separated groups are two hex digits."""
        self.assertServerError("duid", "0:3:0:1:2:0", "expected a DUID in hex")

    def test_duidTooShort(self) -> None:
        """A DUID has at least 3 bytes (RFC 8415 section 11.1)."""
        self.assertServerError("duid", "00:03", "3 to 130 bytes", "got 2")

    def test_duidTooLong(self) -> None:
        """A DUID has at most 130 bytes."""
        self.assertServerError("duid", "00" * 131, "3 to 130 bytes", "got 131")

    def test_declineQuarantine(self) -> None:
        """decline-quarantine is whole seconds, 0 included."""
        self.assertEqual(self.server(decline_quarantine="600").server.decline_quarantine, 600)
        self.assertEqual(self.server(decline_quarantine="0").server.decline_quarantine, 0)

    def test_declineQuarantineNegative(self) -> None:
        """A negative quarantine is refused."""
        self.assertServerError("decline-quarantine", "-1", "whole number of seconds", "'-1'")

    def test_declineQuarantineFraction(self) -> None:
        """A fraction of a second is refused."""
        self.assertServerError("decline-quarantine", "1.5", "whole number")

    def test_reclaimInterval(self) -> None:
        """reclaim-interval is seconds, fractions allowed."""
        self.assertEqual(self.server(reclaim_interval="0.5").server.reclaim_interval, 0.5)
        self.assertEqual(self.server(reclaim_interval="30").server.reclaim_interval, 30.0)

    def test_reclaimIntervalZero(self) -> None:
        """Reclaiming continuously is refused."""
        self.assertServerError("reclaim-interval", "0", "above 0", "'0'")

    def test_reclaimIntervalNotANumber(self) -> None:
        """Text is refused."""
        self.assertServerError("reclaim-interval", "often", "number of seconds")

    def test_commitDelay(self) -> None:
        """commit-delay is seconds, fractions allowed."""
        self.assertEqual(self.server(commit_delay="0.005").server.commit_delay, 0.005)
        self.assertEqual(self.server(commit_delay="1").server.commit_delay, 1.0)

    def test_commitDelayNegative(self) -> None:
        """A negative delay is refused."""
        self.assertServerError("commit-delay", "-0.1", "from 0 to 1")

    def test_commitDelayTooLong(self) -> None:
        """Longer than a client's first retransmission timeout is refused."""
        self.assertServerError("commit-delay", "2", "from 0 to 1", "'2'")

    def test_commitDelayNotFinite(self) -> None:
        """nan, inf and exponents are refused."""
        for value in ("nan", "inf", "1e-3"):
            self.assertServerError("commit-delay", value, "number of seconds")

    def test_controlSocket(self) -> None:
        """control-socket is a path, kept as written (relative or absolute)."""
        self.assertEqual(
            self.server(control_socket="var/dhcp6ha.ctl").server.control_socket, "var/dhcp6ha.ctl"
        )
        self.assertEqual(
            self.server(control_socket="/run/dhcp6ha/ctl").server.control_socket,
            "/run/dhcp6ha/ctl",
        )

    def test_controlSocketEmpty(self) -> None:
        """An empty control-socket is refused (leave the key out for none)."""
        self.assertServerError("control-socket", "", "expected a file path", "var/dhcp6ha.ctl")

    def test_controlSocketTooLong(self) -> None:
        """A path longer than a UNIX socket address can hold is refused."""
        self.assertServerError("control-socket", "/" + "x" * 107, "108 bytes long", "at most 107")
        self.assertEqual(
            self.server(control_socket="/" + "x" * 106).server.control_socket, "/" + "x" * 106
        )


class SubnetPrefixTests(_ConfigTestMixin):
    """
    [subnet:NAME] prefix and interface.
    """

    def test_prefix(self) -> None:
        """prefix is an IPv6 network."""
        self.assertEqual(self.lan().prefix, IPv6Network("2001:db8:1::/64"))
        self.assertEqual(self.lan(prefix="2001:db8::/48").prefix, IPv6Network("2001:db8::/48"))

    def test_prefixHostBits(self) -> None:
        """Host bits set are refused, with what was probably meant."""
        self.assertLanError(
            "prefix",
            "2001:db8:1::1/64",
            "2001:db8:1::1/64 has host bits set",
            "did you mean 2001:db8:1::/64?",
        )

    def test_prefixWithoutLength(self) -> None:
        """An address is not a prefix."""
        self.assertLanError(
            "prefix", "2001:db8:1::", "expected an IPv6 prefix like 2001:db8::/64", "no /LENGTH"
        )

    def test_prefixGarbage(self) -> None:
        """Garbage is refused, quoted."""
        self.assertLanError(
            "prefix", "lan/64", "expected an IPv6 prefix like 2001:db8::/64, got 'lan/64'"
        )

    def test_prefixIPv4(self) -> None:
        """An IPv4 network is refused."""
        self.assertLanError("prefix", "192.0.2.0/24", "expected an IPv6 prefix")

    def test_prefixWithZone(self) -> None:
        """A zone index has no place in a prefix."""
        self.assertLanError("prefix", "fe80::%eth0/64", "expected an IPv6 prefix")

    def test_prefixLengthTooLong(self) -> None:
        """/129 is refused."""
        self.assertLanError("prefix", "2001:db8:1::/129", "expected an IPv6 prefix")

    def test_interface(self) -> None:
        """interface names the interface of directly attached clients."""
        config = self.parse(
            _ini(server={"interfaces": "veth0"}, subnets={"lan": {"interface": "veth0"}})
        )
        self.assertEqual(config.subnets[0].interface, "veth0")

    def test_noInterface(self) -> None:
        """Without interface, the subnet is relayed only."""
        self.assertIsNone(self.lan().interface)

    def test_interfaceBadName(self) -> None:
        """An interface name with a space is refused."""
        self.assertConfigError(
            _ini(server={"interfaces": "veth0"}, subnets={"lan": {"interface": "veth 0"}}),
            "subnet:lan",
            "interface",
            "network interface name",
        )


class PoolTests(_ConfigTestMixin):
    """
    [subnet:NAME] pools.
    """

    def test_range(self) -> None:
        """FIRST-LAST is an inclusive range."""
        [pool] = self.lan(pools="2001:db8:1::1000-2001:db8:1::1fff").pools
        self.assertEqual(
            pool, AddressPool(IPv6Address("2001:db8:1::1000"), IPv6Address("2001:db8:1::1fff"))
        )
        self.assertEqual(pool.size, 0x1000)

    def test_rangeWithSpaces(self) -> None:
        """Spaces around '-' are allowed."""
        [pool] = self.lan(pools="2001:db8:1::10 - 2001:db8:1::20").pools
        self.assertEqual(pool.size, 17)

    def test_singleAddressRange(self) -> None:
        """A range of one address is a pool."""
        [pool] = self.lan(pools="2001:db8:1::10-2001:db8:1::10").pools
        self.assertEqual(pool.size, 1)

    def test_cidr(self) -> None:
        """A CIDR block is the range of all its addresses."""
        [pool] = self.lan(pools="2001:db8:1::8000/113").pools
        self.assertEqual(
            pool, AddressPool(IPv6Address("2001:db8:1::8000"), IPv6Address("2001:db8:1::ffff"))
        )

    def test_several(self) -> None:
        """Pools are comma-separated, kept in order."""
        pools = self.lan(pools="2001:db8:1::8000/113, 2001:db8:1::1000-2001:db8:1::1fff").pools
        self.assertEqual(
            [p.first for p in pools],
            [IPv6Address("2001:db8:1::8000"), IPv6Address("2001:db8:1::1000")],
        )

    def test_none(self) -> None:
        """No pools, or an empty value: no pools."""
        self.assertEqual(self.lan().pools, ())
        self.assertEqual(self.lan(pools="").pools, ())

    def test_outsidePrefix(self) -> None:
        """A pool outside the subnet prefix is refused."""
        self.assertLanError(
            "pools",
            "2001:db8:2::1-2001:db8:2::ff",
            "pool 2001:db8:2::1-2001:db8:2::ff is outside subnet prefix 2001:db8:1::/64",
        )

    def test_partlyOutsidePrefix(self) -> None:
        """A pool reaching past the end of the prefix is refused."""
        self.assertLanError(
            "pools",
            "2001:db8:1:0:ffff:ffff:ffff:ff00-2001:db8:1:1::ff",
            "reaches outside subnet prefix 2001:db8:1::/64",
        )

    def test_firstAfterLast(self) -> None:
        """first <= last."""
        self.assertLanError(
            "pools",
            "2001:db8:1::ff-2001:db8:1::1",
            "first address 2001:db8:1::ff is after the last",
        )

    def test_cidrHostBits(self) -> None:
        """A CIDR pool with host bits set is refused."""
        self.assertLanError("pools", "2001:db8:1::8001/113", "has host bits set")

    def test_subnetRouterAnycast(self) -> None:
        """A pool may not hand out the Subnet-Router anycast address."""
        self.assertLanError(
            "pools", "2001:db8:1::/112", "includes 2001:db8:1::", "Subnet-Router anycast"
        )

    def test_garbage(self) -> None:
        """Garbage is refused, with both accepted forms."""
        self.assertLanError(
            "pools", "2001:db8:1::10", "expected an address range like", "or a prefix like"
        )

    def test_badAddress(self) -> None:
        """A range of non-addresses is refused."""
        self.assertLanError("pools", "a-b", "expected an IPv6 address", "'a'")

    def test_overlapSameSubnet(self) -> None:
        """Two pools of one subnet may not overlap."""
        self.assertLanError(
            "pools",
            "2001:db8:1::1000-2001:db8:1::1fff, 2001:db8:1::1800/120",
            "pool 2001:db8:1::1800-2001:db8:1::18ff overlaps pool 2001:db8:1::1000-2001:db8:1::1fff of subnet lan",
        )

    def test_overlapIdentical(self) -> None:
        """The same pool twice overlaps itself."""
        self.assertLanError(
            "pools",
            "2001:db8:1::100/120, 2001:db8:1::100-2001:db8:1::1ff",
            "overlaps pool 2001:db8:1::100-2001:db8:1::1ff",
        )

    def test_adjacentPools(self) -> None:
        """Pools that touch without overlapping are fine."""
        pools = self.lan(
            pools="2001:db8:1::100-2001:db8:1::1ff, 2001:db8:1::200-2001:db8:1::2ff"
        ).pools
        self.assertEqual(len(pools), 2)


class PrefixPoolTests(_ConfigTestMixin):
    """
    [subnet:NAME] pd-pools.
    """

    def test_pdPools(self) -> None:
        """'PREFIX delegate /LEN', comma-separated."""
        pools = self.lan(
            pd_pools="2001:db8:100::/40 delegate /56, 2001:db8:200::/48 delegate /64"
        ).pd_pools
        self.assertEqual(
            pools,
            (
                PrefixPool(IPv6Network("2001:db8:100::/40"), 56),
                PrefixPool(IPv6Network("2001:db8:200::/48"), 64),
            ),
        )
        self.assertEqual(pools[0].size, 65536)

    def test_delegateWithoutSlash(self) -> None:
        """The '/' before the length may be left out."""
        [pool] = self.lan(pd_pools="2001:db8:100::/40 delegate 56").pd_pools
        self.assertEqual(pool.delegated_length, 56)

    def test_none(self) -> None:
        """No pd-pools: none."""
        self.assertEqual(self.lan().pd_pools, ())

    def test_garbage(self) -> None:
        """Without 'delegate' the value is refused with the expected form."""
        self.assertLanError(
            "pd-pools", "2001:db8:100::/40 /56", "expected 'PREFIX delegate /LENGTH'"
        )

    def test_badPrefix(self) -> None:
        """The prefix must be an IPv6 prefix."""
        self.assertLanError(
            "pd-pools", "2001:db8:100::1/40 delegate /56", "has host bits set", "2001:db8:100::/40"
        )

    def test_delegateNotLonger(self) -> None:
        """The delegated length must be longer than the pool's."""
        self.assertLanError(
            "pd-pools", "2001:db8:100::/40 delegate /40", "/40 must be longer than /40"
        )

    def test_delegateTooLong(self) -> None:
        """The delegated length is at most 128."""
        self.assertLanError("pd-pools", "2001:db8:100::/40 delegate /129", "at most /128")

    def test_delegate128(self) -> None:
        """/128 may be delegated."""
        [pool] = self.lan(pd_pools="2001:db8:100::/120 delegate /128").pd_pools
        self.assertEqual(pool.size, 256)

    def test_overlapPdPool(self) -> None:
        """pd-pools may not overlap one another, in any subnet."""
        self.assertConfigError(
            _ini(
                subnets={
                    "a": {"pd-pools": "2001:db8:100::/40 delegate /56"},
                    "b": {"pd-pools": "2001:db8:180::/48 delegate /64"},
                }
            ),
            "subnet:b",
            "pd-pools",
            "pd-pool 2001:db8:180::/48 delegate /64 overlaps pd-pool 2001:db8:100::/40 delegate /56 of subnet a",
        )

    def test_overlapAddressPool(self) -> None:
        """A pd-pool may not overlap an address pool."""
        self.assertConfigError(
            _ini(
                subnets={
                    "a": {"prefix": "2001:db8:1::/64", "pools": "2001:db8:1::100/120"},
                    "b": {
                        "prefix": "2001:db8:2::/64",
                        "pd-pools": "2001:db8:1::100/120 delegate /124",
                    },
                }
            ),
            "subnet:b",
            "pd-pools",
            "overlaps pool 2001:db8:1::100-2001:db8:1::1ff of subnet a",
        )

    def test_overlapOnLinkPrefix(self) -> None:
        """A pd-pool may not overlap a subnet's on-link prefix."""
        self.assertLanError(
            "pd-pools",
            "2001:db8:1::/64 delegate /80",
            "overlaps prefix 2001:db8:1::/64 of subnet lan",
            "routed",
        )


class LifetimeTests(_ConfigTestMixin):
    """
    Lifetimes and T1/T2: values, defaults, T1 <= T2 <= preferred <= valid.
    """

    def test_defaults(self) -> None:
        """3600/7200, T1 half and T2 0.8 of preferred, PD the same as addresses."""
        subnet = self.lan()
        self.assertEqual(
            (subnet.preferred_lifetime, subnet.valid_lifetime, subnet.t1, subnet.t2),
            (3600, 7200, 1800, 2880),
        )
        self.assertEqual((subnet.pd_preferred_lifetime, subnet.pd_valid_lifetime), (3600, 7200))

    def test_derivedDefaults(self) -> None:
        """T1, T2 and the PD lifetimes follow the configured address lifetimes."""
        subnet = self.lan(preferred_lifetime="1000", valid_lifetime="1500")
        self.assertEqual((subnet.t1, subnet.t2), (500, 800))
        self.assertEqual((subnet.pd_preferred_lifetime, subnet.pd_valid_lifetime), (1000, 1500))

    def test_explicit(self) -> None:
        """Every value may be given."""
        subnet = self.lan(
            preferred_lifetime="300",
            valid_lifetime="600",
            t1="100",
            t2="200",
            pd_preferred_lifetime="900",
            pd_valid_lifetime="1800",
        )
        self.assertEqual(
            (
                subnet.preferred_lifetime,
                subnet.valid_lifetime,
                subnet.t1,
                subnet.t2,
                subnet.pd_preferred_lifetime,
                subnet.pd_valid_lifetime,
            ),
            (300, 600, 100, 200, 900, 1800),
        )

    def test_t1t2Zero(self) -> None:
        """T1 = T2 = 0 leaves renewal times to the client: allowed."""
        subnet = self.lan(t1="0", t2="0")
        self.assertEqual((subnet.t1, subnet.t2), (0, 0))

    def test_infinity(self) -> None:
        """0xffffffff (infinity) is a valid lifetime."""
        self.assertEqual(self.lan(valid_lifetime="4294967295").valid_lifetime, 0xFFFFFFFF)

    def test_tooLarge(self) -> None:
        """Lifetimes are 32-bit."""
        self.assertLanError("valid-lifetime", "4294967296", "from 1 to 4294967295")

    def test_negative(self) -> None:
        """Negative lifetimes are refused."""
        self.assertLanError("preferred-lifetime", "-1", "whole number of seconds from 0")

    def test_validZero(self) -> None:
        """A valid lifetime of 0 would make every lease invalid."""
        self.assertLanError("valid-lifetime", "0", "from 1 to")

    def test_pdValidZero(self) -> None:
        """A PD valid lifetime of 0 is refused too."""
        self.assertLanError("pd-valid-lifetime", "0", "from 1 to")

    def test_t1NotANumber(self) -> None:
        """T1 must be a number."""
        self.assertLanError("t1", "half", "whole number of seconds", "'half'")

    def test_t1AboveT2(self) -> None:
        """T1 > T2 is refused, blaming t1."""
        error = self.assertConfigError(
            _ini(subnets={"lan": {"t1": "2000", "t2": "1000"}}),
            "subnet:lan",
            "t1",
            "t1 (2000) must not be greater than t2 (1000)",
        )
        self.assertIn("RFC 8415", error.reason)

    def test_t1AboveDefaultT2(self) -> None:
        """When T2 is a default the reason says so."""
        self.assertLanError(
            "t1", "3000", "t1 (3000) must not be greater than t2 (2880, the default: 0.8 times"
        )

    def test_t2AbovePreferred(self) -> None:
        """T2 > preferred lifetime is refused."""
        self.assertConfigError(
            _ini(subnets={"lan": {"t1": "100", "t2": "4000"}}),
            "subnet:lan",
            "t2",
            "t2 (4000) must not be greater than preferred-lifetime (3600, the default)",
        )

    def test_preferredAboveValid(self) -> None:
        """Preferred > valid is refused."""
        self.assertConfigError(
            _ini(subnets={"lan": {"preferred-lifetime": "7200", "valid-lifetime": "3600"}}),
            "subnet:lan",
            "preferred-lifetime",
            "preferred-lifetime (7200) must not be greater than valid-lifetime (3600)",
        )

    def test_preferredAboveDefaultValid(self) -> None:
        """Raising only the preferred lifetime past the default valid one is refused."""
        self.assertLanError("preferred-lifetime", "10000", "valid-lifetime (7200, the default)")

    def test_validBelowDefaultPreferred(self) -> None:
        """Lowering only the valid lifetime blames valid-lifetime."""
        self.assertLanError(
            "valid-lifetime",
            "1000",
            "preferred-lifetime (3600, the default) must not be greater than valid-lifetime (1000)",
        )

    def test_pdPreferredBelowT2(self) -> None:
        """The PD preferred lifetime must not be shorter than T2 (RFC 8415 21.21)."""
        self.assertLanError(
            "pd-preferred-lifetime",
            "1000",
            "t2 (2880, the default: 0.8 times preferred-lifetime) must not be greater than"
            " pd-preferred-lifetime (1000)",
        )

    def test_pdPreferredAbovePdValid(self) -> None:
        """PD preferred > PD valid is refused."""
        self.assertConfigError(
            _ini(subnets={"lan": {"pd-preferred-lifetime": "9000", "pd-valid-lifetime": "8000"}}),
            "subnet:lan",
            "pd-preferred-lifetime",
            "pd-preferred-lifetime (9000) must not be greater than pd-valid-lifetime (8000)",
        )

    def test_pdPreferredAboveDefaultPdValid(self) -> None:
        """The PD valid lifetime defaults to the address one, and says so."""
        self.assertLanError(
            "pd-preferred-lifetime",
            "9000",
            "pd-valid-lifetime (7200, the default: valid-lifetime)",
        )


class OptionKeyTests(_ConfigTestMixin):
    """
    rapid-commit, preference, dns-servers, domain-search, sol-max-rt,
    information-refresh-time and inf-max-rt.
    """

    def test_defaults(self) -> None:
        """Without these keys: no rapid commit, preference 0, no options."""
        subnet = self.lan()
        self.assertFalse(subnet.rapid_commit)
        self.assertEqual(subnet.preference, 0)
        self.assertEqual(subnet.dns_servers, ())
        self.assertEqual(subnet.domain_search, ())
        self.assertIsNone(subnet.sol_max_rt)
        self.assertIsNone(subnet.information_refresh_time)
        self.assertIsNone(subnet.inf_max_rt)

    def test_rapidCommit(self) -> None:
        """Every spelling of yes and no, any case."""
        for value in ("yes", "true", "on", "1", "YES", "True"):
            self.assertTrue(self.lan(rapid_commit=value).rapid_commit, value)
        for value in ("no", "false", "off", "0", "No"):
            self.assertFalse(self.lan(rapid_commit=value).rapid_commit, value)

    def test_rapidCommitBad(self) -> None:
        """Anything else is refused, listing the spellings."""
        self.assertLanError(
            "rapid-commit", "maybe", "expected yes/no, true/false, on/off or 1/0", "'maybe'"
        )

    def test_preference(self) -> None:
        """0 to 255."""
        self.assertEqual(self.lan(preference="0").preference, 0)
        self.assertEqual(self.lan(preference="255").preference, 255)

    def test_preferenceTooLarge(self) -> None:
        """256 does not fit the option."""
        self.assertLanError("preference", "256", "from 0 to 255", "'256'")

    def test_preferenceNegative(self) -> None:
        """-1 is refused."""
        self.assertLanError("preference", "-1", "from 0 to 255")

    def test_dnsServers(self) -> None:
        """A comma-separated list of addresses."""
        self.assertEqual(
            self.lan(dns_servers="2001:db8::53, 2001:db8::54").dns_servers,
            (IPv6Address("2001:db8::53"), IPv6Address("2001:db8::54")),
        )

    def test_dnsServersBad(self) -> None:
        """A name is not an address."""
        self.assertLanError("dns-servers", "2001:db8::53, ns1", "expected an IPv6 address", "'ns1'")

    def test_dnsServersMulticast(self) -> None:
        """A multicast address is no DNS server."""
        self.assertLanError("dns-servers", "ff02::1", "unicast")

    def test_dnsServersZone(self) -> None:
        """A zone index means nothing to a client."""
        self.assertLanError("dns-servers", "fe80::53%eth0", "zone index")

    def test_dnsServersDuplicate(self) -> None:
        """The same server twice is refused."""
        self.assertLanError(
            "dns-servers", "2001:db8::53, 2001:db8::53", "2001:db8::53 is listed twice"
        )

    def test_domainSearch(self) -> None:
        """Domain names, any trailing dot removed."""
        self.assertEqual(
            self.lan(
                domain_search="example.com, corp.example.com., _srv.x-y.example"
            ).domain_search,
            ("example.com", "corp.example.com", "_srv.x-y.example"),
        )

    def test_domainLabelTooLong(self) -> None:
        """Labels have at most 63 characters."""
        label = "a" * 64
        self.assertLanError("domain-search", label + ".com", "longer than 63 characters")

    def test_domainLabel63(self) -> None:
        """63 characters are fine."""
        label = "a" * 63
        self.assertEqual(self.lan(domain_search=label + ".com").domain_search, (label + ".com",))

    def test_domainTooLong(self) -> None:
        """A name has at most 253 characters."""
        name = ".".join(["a" * 63] * 4)
        self.assertLanError("domain-search", name, "longer than 253 characters")

    def test_domainNotAscii(self) -> None:
        """Internationalized names must be written in their xn-- form."""
        self.assertLanError("domain-search", "b\u00fccher.example", "not ASCII", "xn--")

    def test_domainEmptyLabel(self) -> None:
        """Two dots in a row are refused."""
        self.assertLanError("domain-search", "example..com", "empty label")

    def test_domainBadCharacter(self) -> None:
        """Spaces and other characters are refused."""
        self.assertLanError("domain-search", "exa mple.com", "may contain only letters")

    def test_domainLeadingHyphen(self) -> None:
        """A label may not start with '-'."""
        self.assertLanError("domain-search", "-example.com", "may not start or end with '-'")

    def test_domainRoot(self) -> None:
        """The root alone is not a search domain."""
        self.assertLanError("domain-search", ".", "expected a domain name")

    def test_domainDuplicate(self) -> None:
        """The same domain twice is refused."""
        self.assertLanError(
            "domain-search", "example.com, example.com.", "example.com is listed twice"
        )

    def test_solMaxRt(self) -> None:
        """60 to 86400 seconds."""
        self.assertEqual(self.lan(sol_max_rt="60").sol_max_rt, 60)
        self.assertEqual(self.lan(sol_max_rt="86400").sol_max_rt, 86400)

    def test_solMaxRtTooSmall(self) -> None:
        """Below 60 is refused (RFC 8415 21.24)."""
        self.assertLanError("sol-max-rt", "59", "from 60 to 86400")

    def test_solMaxRtTooLarge(self) -> None:
        """Above 86400 is refused."""
        self.assertLanError("sol-max-rt", "86401", "from 60 to 86400")

    def test_infMaxRt(self) -> None:
        """60 to 86400 seconds; outside that range refused (RFC 8415 21.25)."""
        self.assertEqual(self.lan(inf_max_rt="60").inf_max_rt, 60)
        self.assertEqual(self.lan(inf_max_rt="86400").inf_max_rt, 86400)
        self.assertLanError("inf-max-rt", "59", "from 60 to 86400")
        self.assertLanError("inf-max-rt", "86401", "from 60 to 86400")

    def test_informationRefreshTime(self) -> None:
        """At least 600 seconds."""
        self.assertEqual(self.lan(information_refresh_time="600").information_refresh_time, 600)

    def test_informationRefreshTimeTooSmall(self) -> None:
        """Below IRT_MINIMUM (600) is refused (RFC 8415 21.23)."""
        self.assertLanError("information-refresh-time", "599", "from 600 to 4294967295")


class SubnetsTests(_ConfigTestMixin):
    """
    Checks across subnets, and the lookups of L{ServerConfig}.
    """

    def test_prefixesOverlap(self) -> None:
        """Two subnets' prefixes may not overlap."""
        self.assertConfigError(
            _ini(subnets={"a": {"prefix": "2001:db8::/48"}, "b": {"prefix": "2001:db8:0:5::/64"}}),
            "subnet:b",
            "prefix",
            "prefix 2001:db8:0:5::/64 overlaps prefix 2001:db8::/48 of subnet a",
        )

    def test_samePrefix(self) -> None:
        """The same prefix twice overlaps."""
        self.assertConfigError(
            _ini(subnets={"a": {"prefix": "2001:db8::/64"}, "b": {"prefix": "2001:db8::/64"}}),
            "subnet:b",
            "prefix",
            "overlaps prefix 2001:db8::/64 of subnet a",
        )

    def test_sameInterface(self) -> None:
        """At most one subnet per interface."""
        self.assertConfigError(
            _ini(
                server={"interfaces": "veth0"},
                subnets={"a": {"interface": "veth0"}, "b": {"interface": "veth0"}},
            ),
            "subnet:b",
            "interface",
            "interface veth0 is already used by subnet a",
        )

    def test_interfaceNotListed(self) -> None:
        """A subnet's interface must be one the server listens on."""
        self.assertConfigError(
            _ini(subnets={"lan": {"interface": "veth0"}}),
            "subnet:lan",
            "interface",
            "veth0 is not listed in [server] interfaces",
        )

    def test_listedInterfaceWithoutSubnet(self) -> None:
        """An interface the server listens on needs a subnet."""
        self.assertConfigError(
            _ini(server={"interfaces": "veth0"}),
            "server",
            "interfaces",
            "no subnet has interface = veth0",
        )

    def test_emptySubnetAllowed(self) -> None:
        """A subnet without pools, pd-pools or reservations serves Information-request only."""
        subnet = self.lan(dns_servers="2001:db8::53")
        self.assertEqual((subnet.pools, subnet.pd_pools, subnet.reservations), ((), (), ()))

    def test_fileOrder(self) -> None:
        """Subnets are kept in file order."""
        config = self.parse(_ini(subnets={"z": {}, "a": {}, "m": {}}))
        self.assertEqual([s.name for s in config.subnets], ["z", "a", "m"])

    def test_subnetByName(self) -> None:
        """subnetByName finds a subnet, or raises KeyError."""
        config = self.parse(_ini(subnets={"a": {}, "b": {}}))
        self.assertIs(config.subnetByName("b"), config.subnets[1])
        self.assertRaises(KeyError, config.subnetByName, "c")

    def test_subnetContaining(self) -> None:
        """subnetContaining finds the subnet of a relay's link-address."""
        config = self.parse(_ini(subnets={"a": {}, "b": {}}))
        self.assertIs(config.subnetContaining(IPv6Address("2001:db8:2::1")), config.subnets[1])
        self.assertIsNone(config.subnetContaining(IPv6Address("2001:db8:3::1")))

    def test_subnetForInterface(self) -> None:
        """subnetForInterface finds the subnet of directly attached clients."""
        config = self.parse(
            _ini(server={"interfaces": "veth0"}, subnets={"a": {}, "b": {"interface": "veth0"}})
        )
        self.assertIs(config.subnetForInterface("veth0"), config.subnets[1])
        self.assertIsNone(config.subnetForInterface("eth1"))

    def test_frozen(self) -> None:
        """The configuration cannot be changed."""
        config = self.parse(_ini())
        self.assertRaises(AttributeError, setattr, config, "path", "x")


_DUID_A = "00:03:00:01:02:00:00:00:00:01"
_DUID_B = "00:03:00:01:02:00:00:00:00:02"


class ReservationTests(_ConfigTestMixin):
    """
    [reservation:NAME]: values, and checks against subnets and each other.
    """

    def test_reservation(self) -> None:
        """A reservation goes into its subnet's reservations."""
        config = self.parse(
            _ini(
                subnets={"a": {}, "b": {"pd-pools": "2001:db8:100::/40 delegate /56"}},
                reservations={
                    "r1": {
                        "duid": _DUID_A,
                        "subnet": "b",
                        "addresses": "2001:db8:2::5, 2001:db8:2::6",
                        "prefixes": "2001:db8:100:100::/56, 2001:db8:300::/48",
                    },
                    "r2": {"duid": _DUID_B, "subnet": "b", "addresses": "2001:db8:2::7"},
                },
            )
        )
        self.assertEqual(config.subnetByName("a").reservations, ())
        self.assertEqual(
            config.subnetByName("b").reservations,
            (
                Reservation(
                    "r1",
                    bytes.fromhex("00030001020000000001"),
                    (IPv6Address("2001:db8:2::5"), IPv6Address("2001:db8:2::6")),
                    (IPv6Network("2001:db8:100:100::/56"), IPv6Network("2001:db8:300::/48")),
                ),
                Reservation(
                    "r2", bytes.fromhex("00030001020000000002"), (IPv6Address("2001:db8:2::7"),)
                ),
            ),
        )

    def assertReservationError(self, keys: _Keys, key: str | None, *fragments: str) -> None:
        """A single reservation r on subnet lan, with these keys, is refused."""
        self.assertConfigError(
            _ini(
                subnets={"lan": {"pd-pools": "2001:db8:100::/40 delegate /56"}},
                reservations={"r": {"duid": _DUID_A, "subnet": "lan", **keys}},
            ),
            "reservation:r",
            key,
            *fragments,
        )

    def test_nothingReserved(self) -> None:
        """A reservation reserves something."""
        self.assertReservationError({}, None, "needs addresses, prefixes or both")

    def test_unknownSubnet(self) -> None:
        """The subnet must exist; the reason lists those that do."""
        self.assertReservationError(
            {"subnet": "wan", "addresses": "2001:db8:1::5"},
            "subnet",
            "there is no [subnet:wan]",
            "lan",
        )

    def test_badSubnetName(self) -> None:
        """The subnet is a name."""
        self.assertReservationError(
            {"subnet": "subnet:lan", "addresses": "2001:db8:1::5"}, "subnet", "expected a name"
        )

    def test_badDuid(self) -> None:
        """The DUID is hex."""
        self.assertReservationError(
            {"duid": "client-1", "addresses": "2001:db8:1::5"}, "duid", "expected a DUID in hex"
        )

    def test_duplicateDuid(self) -> None:
        """A DUID may be reserved once, whatever its spelling."""
        self.assertConfigError(
            _ini(
                reservations={
                    "r1": {"duid": _DUID_A, "subnet": "lan", "addresses": "2001:db8:1::5"},
                    "r2": {
                        "duid": _DUID_A.replace(":", ""),
                        "subnet": "lan",
                        "addresses": "2001:db8:1::6",
                    },
                }
            ),
            "reservation:r2",
            "duid",
            f"DUID {_DUID_A} is already reserved by reservation r1",
        )

    def test_addressOutsidePrefix(self) -> None:
        """Reserved addresses lie inside the subnet prefix."""
        self.assertReservationError(
            {"addresses": "2001:db8:2::5"},
            "addresses",
            "address 2001:db8:2::5 is outside prefix 2001:db8:1::/64 of subnet lan",
        )

    def test_addressBad(self) -> None:
        """Reserved addresses are addresses."""
        self.assertReservationError(
            {"addresses": "2001:db8:1::/64"}, "addresses", "expected an IPv6 address"
        )

    def test_addressAnycast(self) -> None:
        """The Subnet-Router anycast address cannot be reserved."""
        self.assertReservationError(
            {"addresses": "2001:db8:1::"}, "addresses", "Subnet-Router anycast"
        )

    def test_addressTwiceInOne(self) -> None:
        """An address listed twice in one reservation is refused."""
        self.assertReservationError(
            {"addresses": "2001:db8:1::5, 2001:db8:1::5"}, "addresses", "listed twice"
        )

    def test_addressReservedTwice(self) -> None:
        """An address may be reserved for one client only."""
        self.assertConfigError(
            _ini(
                reservations={
                    "r1": {"duid": _DUID_A, "subnet": "lan", "addresses": "2001:db8:1::5"},
                    "r2": {"duid": _DUID_B, "subnet": "lan", "addresses": "2001:db8:1::5"},
                }
            ),
            "reservation:r2",
            "addresses",
            "address 2001:db8:1::5 is already reserved by reservation r1",
        )

    def test_addressInPoolAllowed(self) -> None:
        """A reserved address may lie inside a pool (the allocator skips it)."""
        config = self.parse(
            _ini(
                subnets={"lan": {"pools": "2001:db8:1::100/120"}},
                reservations={
                    "r": {"duid": _DUID_A, "subnet": "lan", "addresses": "2001:db8:1::105"}
                },
            )
        )
        self.assertEqual(len(config.subnets[0].reservations), 1)

    def test_prefixHostBits(self) -> None:
        """Reserved prefixes have their host bits zero."""
        self.assertReservationError(
            {"prefixes": "2001:db8:300::1/48"}, "prefixes", "has host bits set"
        )

    def test_prefixReservedTwice(self) -> None:
        """A prefix may be reserved for one client only; overlapping counts."""
        self.assertConfigError(
            _ini(
                reservations={
                    "r1": {"duid": _DUID_A, "subnet": "lan", "prefixes": "2001:db8:300::/48"},
                    "r2": {"duid": _DUID_B, "subnet": "lan", "prefixes": "2001:db8:300:100::/56"},
                }
            ),
            "reservation:r2",
            "prefixes",
            "prefix 2001:db8:300:100::/56 overlaps prefix 2001:db8:300::/48 of reservation r1",
        )

    def test_prefixOnLink(self) -> None:
        """A reserved prefix may not overlap an on-link prefix."""
        self.assertReservationError(
            {"prefixes": "2001:db8:1::/80"},
            "prefixes",
            "overlaps prefix 2001:db8:1::/64 of subnet lan",
        )

    def test_prefixInPdPool(self) -> None:
        """A reserved prefix inside a pd-pool must be one of its pieces."""
        self.assertReservationError(
            {"prefixes": "2001:db8:100::/48"},
            "prefixes",
            "prefix 2001:db8:100::/48 overlaps pd-pool 2001:db8:100::/40 delegate /56 of subnet lan",
            "delegated length",
        )

    def test_prefixPieceOfPdPool(self) -> None:
        """A piece of a pd-pool of the delegated length may be reserved."""
        config = self.parse(
            _ini(
                subnets={"lan": {"pd-pools": "2001:db8:100::/40 delegate /56"}},
                reservations={
                    "r": {"duid": _DUID_A, "subnet": "lan", "prefixes": "2001:db8:1ff:ff00::/56"}
                },
            )
        )
        self.assertEqual(
            config.subnets[0].reservations[0].prefixes, (IPv6Network("2001:db8:1ff:ff00::/56"),)
        )

    def test_prefixInOtherSubnetsPdPool(self) -> None:
        """A reserved prefix inside a pd-pool belongs to that pool's subnet."""
        self.assertConfigError(
            _ini(
                subnets={"a": {}, "b": {"pd-pools": "2001:db8:100::/40 delegate /56"}},
                reservations={
                    "r": {"duid": _DUID_A, "subnet": "a", "prefixes": "2001:db8:100::/56"}
                },
            ),
            "reservation:r",
            "prefixes",
            "lies in pd-pool 2001:db8:100::/40 delegate /56 of subnet b",
            "for subnet a",
        )

    def test_prefixOutsidePdPools(self) -> None:
        """A prefix outside every pd-pool may be reserved, of any length."""
        config = self.parse(
            _ini(
                reservations={
                    "r": {"duid": _DUID_A, "subnet": "lan", "prefixes": "2001:db8:300::/48"}
                }
            )
        )
        self.assertEqual(
            config.subnets[0].reservations[0].prefixes, (IPv6Network("2001:db8:300::/48"),)
        )


# --- [failover:NAME] -------------------------------------------------------------


@contextmanager
def _workingDirectory(path: str) -> Iterator[None]:
    """Run the body with C{path} as the current directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class _FailoverTestMixin(_ConfigTestMixin):
    """
    Failover sections whose TLS files exist: C{self.cert}, C{self.key} and
    C{self.ca} are empty files in a fresh directory (the parser checks that
    they are readable, not what they hold).
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.cert = self.touch("cert.pem")
        self.key = self.touch("key.pem")
        self.ca = self.touch("ca.pem")

    def touch(self, name: str) -> str:
        path = os.path.join(os.path.abspath(self.directory), name)
        with open(path, "wb"):
            pass
        return path

    def primary(self, **keys: str | None) -> dict[str, str | None]:
        """The keys of a valid primary relationship covering lan (C{_} for C{-})."""
        base: dict[str, str | None] = {
            "role": "primary",
            "partner-address": "2001:db8::2",
            "certificate": self.cert,
            "key": self.key,
            "ca": self.ca,
            "partner-identity": "secondary.example.net",
            "subnets": "lan",
        }
        base.update({k.replace("_", "-"): v for k, v in keys.items()})
        return base

    def secondary(self, **keys: str | None) -> dict[str, str | None]:
        """The keys of a valid secondary relationship covering lan (C{_} for C{-})."""
        base = {"role": "secondary", "partner_address": None, "partner_identity": "p.example.net"}
        return self.primary(**{**base, **keys})

    def relationship(
        self, keys: _Keys, subnets: Mapping[str, _Keys] | None = None
    ) -> FailoverConfig:
        """Parse a config with one relationship, C{pair}, and return it."""
        config = self.parse(_ini(subnets=subnets, failovers={"pair": keys}))
        [relationship] = config.failover
        return relationship

    def assertPairError(self, keys: _Keys, key: str | None, *fragments: str) -> ConfigError:
        """A config whose only relationship, C{pair}, has these keys is refused."""
        return self.assertConfigError(
            _ini(failovers={"pair": keys}), "failover:pair", key, *fragments
        )


class FailoverSectionTests(_FailoverTestMixin):
    """
    One C{[failover:NAME]} section: its keys, their defaults and their
    checks.
    """

    def test_defaults(self) -> None:
        """A primary with only the required keys gets every default."""
        self.assertEqual(
            self.relationship(self.primary()),
            FailoverConfig(
                name="pair",
                role=FailoverRole.PRIMARY,
                partner_address=IPv6Address("2001:db8::2"),
                partner_port=647,
                listen_address=IPv6Address("::"),
                listen_port=647,
                certificate=self.cert,
                key=self.key,
                ca=self.ca,
                partner_identity="secondary.example.net",
                partner_identity_kind=IdentityKind.DNS_NAME,
                mclt=3600,
                heartbeat_interval=10.0,
                unreachable_after=30.0,
                max_unacked=2000,
                max_clock_skew=5.0,
                auto_partner_down=0,
                prefix_share=0.5,
                handshake_timeout=10.0,
                idle_timeout=60.0,
                subnets=("lan",),
                max_backup_prefixes=1024,
                operation_record_interval=60.0,
            ),
        )

    def test_everyKey(self) -> None:
        """Every key is read into its field."""
        relationship = self.relationship(
            self.primary(
                partner_address="192.0.2.2",
                partner_port="6647",
                mclt="300",
                heartbeat_interval="2.5",
                unreachable_after="7.5",
                max_unacked="1",
                max_clock_skew="0.5",
                auto_partner_down="600",
                prefix_share="0.25",
                handshake_timeout="3",
                idle_timeout="7.5",
                max_backup_prefixes="64",
                operation_record_interval="2.5",
            )
        )
        self.assertEqual(relationship.partner_address, IPv4Address("192.0.2.2"))
        self.assertEqual(relationship.partner_port, 6647)
        self.assertEqual(relationship.mclt, 300)
        self.assertEqual(relationship.heartbeat_interval, 2.5)
        self.assertEqual(relationship.unreachable_after, 7.5)
        self.assertEqual(relationship.max_unacked, 1)
        self.assertEqual(relationship.max_clock_skew, 0.5)
        self.assertEqual(relationship.auto_partner_down, 600)
        self.assertEqual(relationship.prefix_share, 0.25)
        self.assertEqual(relationship.handshake_timeout, 3.0)
        self.assertEqual(relationship.idle_timeout, 7.5)
        self.assertEqual(relationship.max_backup_prefixes, 64)
        self.assertEqual(relationship.operation_record_interval, 2.5)

    def test_noFailover(self) -> None:
        """Without [failover:NAME] sections the server runs alone."""
        config = self.parse(_ini())
        self.assertEqual(config.failover, ())
        self.assertIsNone(config.relationshipFor("lan"))

    def test_serverConfigDefault(self) -> None:
        """ServerConfig built without failover (as older code does) has none."""
        config = self.parse(_ini())
        built = ServerConfig(path="x", server=config.server, subnets=config.subnets)
        self.assertEqual(built.failover, ())
        self.assertIsInstance(built.server, ServerSection)

    def test_frozen(self) -> None:
        """A relationship cannot be changed."""
        relationship = self.relationship(self.primary())
        self.assertRaises(AttributeError, setattr, relationship, "mclt", 1)

    def test_unknownKey(self) -> None:
        """An unknown key is refused, with a suggestion."""
        self.assertPairError(
            {**self.primary(), "partner-adress": "::1"},
            "partner-adress",
            "did you mean 'partner-address'?",
        )

    def test_badName(self) -> None:
        """The relationship name is sent in Connect: letters, digits, '_', '.', '-'."""
        self.assertConfigError(
            _ini(failovers={"a/b": self.primary()}), "failover:a/b", None, "may contain only"
        )

    # role

    def test_roleSecondary(self) -> None:
        """role = secondary; the partner address is optional there."""
        relationship = self.relationship(self.secondary())
        self.assertEqual(relationship.role, FailoverRole.SECONDARY)
        self.assertIsNone(relationship.partner_address)
        self.assertEqual(relationship.role, "secondary")

    def test_roleCaseInsensitive(self) -> None:
        """role is read without regard to case."""
        self.assertEqual(self.relationship(self.primary(role="Primary")).role, FailoverRole.PRIMARY)

    def test_roleMissing(self) -> None:
        """role is required."""
        self.assertPairError(self.primary(role=None), "role", "required key 'role' is missing")

    def test_roleInvalid(self) -> None:
        """role is primary or secondary (RFC 7031 requirement 1)."""
        self.assertPairError(
            self.primary(role="backup"), "role", "expected primary or secondary, got 'backup'"
        )

    def test_primaryWithoutPartnerAddress(self) -> None:
        """The primary connects, so it needs the partner's address."""
        self.assertPairError(
            self.primary(partner_address=None),
            "partner-address",
            "required with role = primary",
            "give the secondary's IP address",
        )

    def test_primaryDoesNotListen(self) -> None:
        """listen-address and listen-port on a primary are refused, not ignored."""
        for key, value in (("listen-address", "::1"), ("listen-port", "6647")):
            self.assertPairError(
                {**self.primary(), key: value},
                key,
                "role = primary connects to its partner and does not listen",
                f"remove {key}",
            )

    def test_secondaryDoesNotConnect(self) -> None:
        """partner-port on a secondary is refused, not ignored."""
        self.assertPairError(
            self.secondary(partner_port="647"),
            "partner-port",
            "role = secondary does not connect",
            "remove partner-port and set listen-port",
        )

    def test_secondaryPartnerAddress(self) -> None:
        """A secondary may name its partner's address."""
        relationship = self.relationship(self.secondary(partner_address="::1"))
        self.assertEqual(relationship.partner_address, IPv6Address("::1"))

    # addresses and ports

    def test_partnerAddressHostName(self) -> None:
        """A host name is refused: no DNS lookups at start-up."""
        self.assertPairError(
            self.primary(partner_address="partner.example.net"),
            "partner-address",
            "expected an IPv4 or IPv6 address",
            "host names are not accepted here",
            "no DNS lookups at start-up",
        )

    def test_partnerAddressWithPort(self) -> None:
        """An address with a port or brackets is refused, saying so."""
        for value in ("192.0.2.2:647", "[2001:db8::2]", "[2001:db8::2]:647"):
            self.assertPairError(
                self.primary(partner_address=value),
                "partner-address",
                "without brackets or a port",
            )

    def test_partnerAddressGarbage(self) -> None:
        """Anything else is simply not an address."""
        for value in ("192.0.2.300", "2001:db8::g", "a b"):
            error = self.assertPairError(
                self.primary(partner_address=value),
                "partner-address",
                f"expected an IPv4 or IPv6 address like 2001:db8::2 or 192.0.2.2, got {value!r}",
            )
            self.assertNotIn("DNS", error.reason)

    def test_partnerAddressNotUnicast(self) -> None:
        """The partner's address is a unicast one."""
        for value in ("::", "0.0.0.0", "ff02::1", "224.0.0.1"):
            self.assertPairError(
                self.primary(partner_address=value), "partner-address", "unicast address"
            )

    def test_partnerAddressZone(self) -> None:
        """A link-local partner address may carry its zone."""
        relationship = self.relationship(self.primary(partner_address="fe80::2%eth0"))
        self.assertEqual(str(relationship.partner_address), "fe80::2%eth0")

    def test_listen(self) -> None:
        """A secondary listens on listen-address and listen-port, IPv4 or IPv6."""
        for address, expected in (
            ("::1", IPv6Address("::1")),
            ("127.0.0.1", IPv4Address("127.0.0.1")),
            ("0.0.0.0", IPv4Address("0.0.0.0")),
        ):
            relationship = self.relationship(
                self.secondary(listen_address=address, listen_port="6647")
            )
            self.assertEqual(
                (relationship.listen_address, relationship.listen_port), (expected, 6647)
            )

    def test_listenAddressMulticast(self) -> None:
        """No listening on a multicast address."""
        self.assertPairError(
            self.secondary(listen_address="ff02::1"), "listen-address", "multicast"
        )

    def test_listenAddressHostName(self) -> None:
        """listen-address is a literal too."""
        self.assertPairError(
            self.secondary(listen_address="localhost"), "listen-address", "no DNS lookups"
        )

    def test_ports(self) -> None:
        """Ports are 1 to 65535."""
        for key, keys in (("partner-port", self.primary()), ("listen-port", self.secondary())):
            for value in ("0", "65536", "-1", "x"):
                self.assertPairError(
                    {**keys, key: value}, key, "expected a whole number from 1 to 65535"
                )

    # TLS files

    def test_tlsFilesRequired(self) -> None:
        """certificate, key and ca are required."""
        for key in ("certificate", "key", "ca"):
            self.assertPairError(
                {**self.primary(), key: None}, key, f"required key {key!r} is missing"
            )

    def test_tlsFileEmptyValue(self) -> None:
        """An empty path is refused."""
        self.assertPairError(self.primary(key=""), "key", "expected a file path")

    def test_tlsFileMissing(self) -> None:
        """A file that does not exist is refused, naming it and the fix."""
        missing = os.path.join(os.path.abspath(self.directory), "missing.pem")
        for key in ("certificate", "key", "ca"):
            error = self.assertPairError(
                {**self.primary(), key: missing},
                key,
                f"file {missing} does not exist",
                "create it, or correct the path",
            )
            self.assertNotIn("current directory", error.reason)

    def test_tlsFileRelative(self) -> None:
        """A relative path is relative to the current directory, which the reason names."""
        self.assertPairError(
            self.primary(ca="var/pki/nowhere.pem"),
            "ca",
            "file var/pki/nowhere.pem does not exist",
            "(relative to the current directory " + os.getcwd() + ")",
        )

    def test_tlsFileRelativeFound(self) -> None:
        """A relative path is found from the current directory, and kept as given."""
        with _workingDirectory(self.directory):
            relationship = self.relationship(self.primary(ca="ca.pem"))
        self.assertEqual(relationship.ca, "ca.pem")

    def test_tlsFileDirectory(self) -> None:
        """A directory is not a PEM file."""
        self.assertPairError(
            self.primary(certificate=self.directory), "certificate", "is a directory"
        )

    def test_tlsFileNotRegular(self) -> None:
        """A FIFO (or device) is refused without being opened, which could block."""
        fifo = os.path.join(self.directory, "fifo.pem")
        os.mkfifo(fifo)
        self.assertPairError(self.primary(key=fifo), "key", "is not a regular file")

    def test_tlsFileThroughAFile(self) -> None:
        """A path that goes through a file is refused with the system's words."""
        self.assertPairError(
            self.primary(ca=os.path.join(self.ca, "x.pem")),
            "ca",
            "cannot reach file",
            "Not a directory",
        )

    def test_tlsFileUnreadable(self) -> None:
        """
        A file the process may not read is refused, saying what to do.  (Run
        as root, the check runs with the effective user id of nobody.)
        """
        os.chmod(self.key, 0)
        text = _ini(failovers={"pair": self.primary()})
        if os.geteuid() == 0:
            # Let nobody reach the other files: trial's temporary directories
            # are private to their owner.
            directory = os.path.abspath(self.directory)
            while directory != os.getcwd() and directory != os.path.dirname(directory):
                os.chmod(directory, 0o711)
                directory = os.path.dirname(directory)
            try:
                os.seteuid(65534)
            except OSError as e:
                raise self.skipTest(
                    f"root reads every file, and cannot become nobody: {e}"
                ) from None
            try:
                error = self.assertRaises(ConfigError, parseConfigText, text, "test.ini")
            finally:
                os.seteuid(0)
        else:
            error = self.assertRaises(ConfigError, parseConfigText, text, "test.ini")
        self.assertEqual((error.section, error.key), ("failover:pair", "key"))
        self.assertIn("Permission denied", error.reason)
        self.assertIn("make it readable by the user the server runs as", error.reason)

    def test_tlsFilesNotRead(self) -> None:
        """Only existence and readability are checked: the content is the TLS layer's."""
        with open(self.cert, "wb") as f:
            f.write(b"not PEM at all")
        self.assertEqual(self.relationship(self.primary()).certificate, self.cert)

    def test_certificateAndKeyInOneFile(self) -> None:
        """The key may be in the certificate's file."""
        relationship = self.relationship(self.primary(key=self.cert))
        self.assertEqual(relationship.key, relationship.certificate)

    def test_checkFilesOff(self) -> None:
        """With checkFiles=False, missing TLS files are accepted, paths kept as given."""
        text = _ini(failovers={"pair": self.primary(certificate="var/pki/none.pem")})
        self.assertRaises(ConfigError, parseConfigText, text, "test.ini")
        config = parseConfigText(text, "test.ini", checkFiles=False)
        self.assertEqual(config.failover[0].certificate, "var/pki/none.pem")

    def test_checkFilesOffParseConfig(self) -> None:
        """parseConfig passes checkFiles on."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_ini(failovers={"pair": self.primary(ca="var/pki/none.pem")}))
        self.assertRaises(ConfigError, parseConfig, path)
        self.assertEqual(parseConfig(path, checkFiles=False).failover[0].ca, "var/pki/none.pem")

    # partner-identity

    def test_identityRequired(self) -> None:
        """partner-identity is required."""
        self.assertPairError(
            self.primary(partner_identity=None),
            "partner-identity",
            "required key 'partner-identity' is missing",
        )

    def identity(self, text: str) -> tuple[str, IdentityKind]:
        relationship = self.relationship(self.primary(partner_identity=text))
        return relationship.partner_identity, relationship.partner_identity_kind

    def test_identityDNSName(self) -> None:
        """A DNS name is kept in lower case without its trailing dot."""
        self.assertEqual(
            self.identity("Secondary.Example.NET."),
            ("secondary.example.net", IdentityKind.DNS_NAME),
        )
        self.assertEqual(
            self.identity("xn--bcher-kva.example"),
            ("xn--bcher-kva.example", IdentityKind.DNS_NAME),
        )

    def test_identitySingleLabel(self) -> None:
        """A single-label name such as localhost is allowed."""
        self.assertEqual(self.identity("localhost"), ("localhost", IdentityKind.DNS_NAME))

    def test_identityIPAddress(self) -> None:
        """An IP address is kept in its compressed form."""
        self.assertEqual(self.identity("192.0.2.2"), ("192.0.2.2", IdentityKind.IP_ADDRESS))
        self.assertEqual(self.identity("2001:DB8:0:0::2"), ("2001:db8::2", IdentityKind.IP_ADDRESS))
        self.assertEqual(self.identity("::1"), ("::1", IdentityKind.IP_ADDRESS))

    def test_identityLongest(self) -> None:
        """Labels of 63 characters and names of 253 are allowed."""
        name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
        self.assertEqual(len(name), 253)
        self.assertEqual(self.identity(name), (name, IdentityKind.DNS_NAME))

    def test_identityInvalid(self) -> None:
        """Anything else is refused as 'not a DNS name or IP address', with why."""
        for text, why in (
            ("under_score.example", "may hold only letters, digits and '-'"),
            ("-lead.example", "may not begin"),
            ("trail-.example", "or end with '-'"),
            ("a..example", "empty label"),
            (".example", "empty label"),
            ("*.example.net", "wildcard"),
            ("partner.example.net:647", "no port or brackets"),
            ("[::1]", "no port or brackets"),
            ("fe80::1%eth0", "zone index"),
            ("192.0.2.300", "numeric label"),
            ("b\u00fccher.example", "xn--"),
            ("a" * 64 + ".example", "longer than 63 characters"),
            (".".join(["a" * 63] * 4), "longer than 253 characters"),
            ("2001:db8::/64", "no port or brackets"),
        ):
            self.assertPairError(
                self.primary(partner_identity=text),
                "partner-identity",
                "is not a DNS name or IP address",
                why,
            )

    def test_identityEmpty(self) -> None:
        """An empty identity is refused."""
        self.assertPairError(
            self.primary(partner_identity=""),
            "partner-identity",
            "is not a DNS name or IP address (it is empty)",
        )

    def test_identityAgreesWithTLS(self) -> None:
        """
        What the config accepts, the TLS layer's PartnerIdentity.parse accepts
        and reads the same way; what it refuses, PartnerIdentity refuses too.
        """
        try:
            from dhcp6ha.failover.tls import PartnerIdentity
        except ImportError as e:
            raise self.skipTest(f"dhcp6ha.failover.tls is not importable: {e}") from None
        accepted = [
            "Secondary.Example.NET.",
            "localhost",
            "192.0.2.2",
            "2001:DB8::2",
            "xn--bcher-kva.example",
        ]
        for text in accepted:
            name, kind = self.identity(text)
            identity = PartnerIdentity.parse(text)
            self.assertEqual(
                (identity.name, identity.isIPAddress), (name, kind is IdentityKind.IP_ADDRESS)
            )
        for text in ["under_score.example", "*.example", "192.0.2.300", "fe80::1%eth0", "a..b"]:
            self.assertRaises(ValueError, PartnerIdentity.parse, text)
            self.assertRaises(ConfigError, self.identity, text)

    # timers and limits

    def test_mclt(self) -> None:
        """mclt is a whole number of seconds above 0."""
        for value in ("0", "-1", "1.5", "x"):
            self.assertPairError(
                self.primary(mclt=value), "mclt", "expected a whole number of seconds from 1"
            )
        self.assertEqual(self.relationship(self.primary(mclt="1")).mclt, 1)

    def test_heartbeatInterval(self) -> None:
        """heartbeat-interval is a number of seconds above 0."""
        for value in ("0", "-1", "x"):
            self.assertPairError(
                self.primary(heartbeat_interval=value),
                "heartbeat-interval",
                "expected a number of seconds above 0",
            )

    def test_unreachableNotAboveHeartbeat(self) -> None:
        """unreachable-after must exceed heartbeat-interval; equal is refused."""
        self.assertPairError(
            self.primary(heartbeat_interval="10", unreachable_after="10"),
            "heartbeat-interval",
            "unreachable-after (10) must be more than heartbeat-interval (10)",
            "missed a heartbeat",
        )

    def test_unreachableBelowDefaultHeartbeat(self) -> None:
        """unreachable-after alone below the default heartbeat is blamed, saying so."""
        self.assertPairError(
            self.primary(unreachable_after="5"),
            "unreachable-after",
            "unreachable-after (5) must be more than heartbeat-interval (10, the default)",
        )

    def test_heartbeatAboveDefaultUnreachable(self) -> None:
        """heartbeat-interval alone above the default unreachable-after is blamed."""
        self.assertPairError(
            self.primary(heartbeat_interval="40"),
            "heartbeat-interval",
            "unreachable-after (30, the default) must be more than heartbeat-interval (40)",
        )

    def test_idleTimeoutBelowUnreachable(self) -> None:
        """idle-timeout may not be shorter than unreachable-after."""
        self.assertPairError(
            self.primary(idle_timeout="20"),
            "idle-timeout",
            "idle-timeout (20) must be at least unreachable-after (30, the default)",
        )
        self.assertPairError(
            self.primary(unreachable_after="90"),
            "unreachable-after",
            "idle-timeout (60, the default) must be at least unreachable-after (90)",
        )

    def test_idleTimeoutEqualUnreachable(self) -> None:
        """idle-timeout equal to unreachable-after is allowed."""
        relationship = self.relationship(self.primary(unreachable_after="60"))
        self.assertEqual((relationship.unreachable_after, relationship.idle_timeout), (60, 60))

    def test_handshakeTimeout(self) -> None:
        """handshake-timeout is above 0."""
        self.assertPairError(self.primary(handshake_timeout="0"), "handshake-timeout", "above 0")

    def test_maxUnacked(self) -> None:
        """max-unacked is at least 1."""
        for value in ("0", "100001", "-5", "x"):
            self.assertPairError(
                self.primary(max_unacked=value),
                "max-unacked",
                "expected a whole number from 1 to 100000",
            )

    def test_lazyUpdateDelay(self) -> None:
        """lazy-update-delay is a number of seconds from 0 to 1, 0.01 by default."""
        self.assertEqual(self.relationship(self.primary()).lazy_update_delay, 0.01)
        for value, expected in (("0", 0.0), ("0.05", 0.05), ("1", 1.0)):
            self.assertEqual(
                self.relationship(self.primary(lazy_update_delay=value)).lazy_update_delay,
                expected,
            )
        for value in ("-0.01", "1.5", "x", ""):
            self.assertPairError(
                self.primary(lazy_update_delay=value),
                "lazy-update-delay",
                "expected a number of seconds from 0 to 1",
            )

    def test_maxClockSkew(self) -> None:
        """max-clock-skew is above 0."""
        self.assertPairError(self.primary(max_clock_skew="0"), "max-clock-skew", "above 0")

    def test_operationRecordInterval(self) -> None:
        """
        operation-record-interval is a number of seconds above 0 and at
        most a day, unrelated to mclt (it may exceed it).
        """
        for value, expected in (("5", 5.0), ("0.5", 0.5), ("86400", 86400.0)):
            self.assertEqual(
                self.relationship(
                    self.primary(operation_record_interval=value)
                ).operation_record_interval,
                expected,
            )
        self.assertEqual(
            self.relationship(
                self.primary(mclt="30", operation_record_interval="600")
            ).operation_record_interval,
            600.0,
        )
        for value in ("0", "-1", "86401", "x", ""):
            self.assertPairError(
                self.primary(operation_record_interval=value),
                "operation-record-interval",
                "expected a number of seconds above 0 and at most 86400",
            )

    def test_autoPartnerDown(self) -> None:
        """auto-partner-down is a whole number of seconds; 0 (off) is allowed."""
        self.assertEqual(
            self.relationship(self.primary(auto_partner_down="0")).auto_partner_down, 0
        )
        self.assertPairError(
            self.primary(auto_partner_down="-1"), "auto-partner-down", "whole number of seconds"
        )

    def test_prefixShare(self) -> None:
        """prefix-share is a fraction from 0 to 1."""
        for value, expected in (("0", 0.0), ("1", 1.0), (".75", 0.75), ("1.0", 1.0)):
            self.assertEqual(
                self.relationship(self.primary(prefix_share=value)).prefix_share, expected
            )
        for value in ("1.5", "-0.1", "half", "50%", ""):
            self.assertPairError(
                self.primary(prefix_share=value),
                "prefix-share",
                "expected a fraction from 0 to 1",
            )

    def test_maxBackupPrefixes(self) -> None:
        """max-backup-prefixes is a whole number from 1 to 1000000 (default 1024)."""
        self.assertEqual(self.relationship(self.primary()).max_backup_prefixes, 1024)
        for value, expected in (("1", 1), ("4096", 4096), ("1000000", 1_000_000)):
            self.assertEqual(
                self.relationship(self.primary(max_backup_prefixes=value)).max_backup_prefixes,
                expected,
            )
        for value in ("0", "-1", "1000001", "1k", "0.5", ""):
            self.assertPairError(
                self.primary(max_backup_prefixes=value),
                "max-backup-prefixes",
                "expected a whole number from 1 to 1000000",
            )

    # subnets

    def test_subnetsRequired(self) -> None:
        """subnets is required."""
        self.assertPairError(
            self.primary(subnets=None), "subnets", "required key 'subnets' is missing"
        )

    def test_subnetsEmpty(self) -> None:
        """A relationship covers at least one subnet."""
        self.assertPairError(self.primary(subnets=""), "subnets", "at least one")

    def test_subnetsUnknown(self) -> None:
        """Each subnet must exist; the reason lists those that do."""
        self.assertPairError(
            self.primary(subnets="lan, wan"),
            "subnets",
            "there is no [subnet:wan]; the subnets are: lan",
        )

    def test_subnetsDuplicate(self) -> None:
        """A subnet is listed once."""
        self.assertPairError(self.primary(subnets="lan, lan"), "subnets", "lan is listed twice")

    def test_subnetsBadName(self) -> None:
        """A subnet name is a section name."""
        self.assertPairError(self.primary(subnets="l a n"), "subnets", "expected a name")

    def test_subnetsSeveral(self) -> None:
        """A relationship may cover several subnets, kept in the order given."""
        relationship = self.relationship(
            self.primary(subnets="guest,\n  lan"), subnets={"lan": {}, "guest": {}}
        )
        self.assertEqual(relationship.subnets, ("guest", "lan"))


class FailoverRelationshipsTests(_FailoverTestMixin):
    """
    Several relationships on one server (RFC 7031 section 7, requirements 2
    and 3).
    """

    def test_mToOne(self) -> None:
        """
        A server may be primary of one relationship and secondary of another,
        each with its own partner and subnets; relationshipFor finds each
        subnet's relationship, or None for a subnet served alone.
        """
        config = self.parse(
            _ini(
                subnets={"lan": {}, "guest": {}, "alone": {}},
                failovers={
                    "one": self.primary(subnets="lan"),
                    "two": self.secondary(
                        subnets="guest",
                        partner_identity="other.example.net",
                        listen_port="6647",
                    ),
                },
            )
        )
        self.assertEqual([r.name for r in config.failover], ["one", "two"])
        self.assertEqual(
            [r.role for r in config.failover], [FailoverRole.PRIMARY, FailoverRole.SECONDARY]
        )
        self.assertIs(config.relationshipFor("lan"), config.failover[0])
        self.assertIs(config.relationshipFor("guest"), config.failover[1])
        self.assertIsNone(config.relationshipFor("alone"))

    def test_relationshipForUnknownSubnet(self) -> None:
        """relationshipFor a subnet that does not exist raises KeyError."""
        config = self.parse(_ini(failovers={"pair": self.primary()}))
        self.assertRaises(KeyError, config.relationshipFor, "wan")

    def test_subnetInTwoRelationships(self) -> None:
        """A subnet in two relationships is refused, naming both (requirement 2)."""
        self.assertConfigError(
            _ini(
                subnets={"lan": {}, "guest": {}},
                failovers={
                    "one": self.primary(subnets="lan"),
                    "two": self.primary(subnets="guest, lan"),
                },
            ),
            "failover:two",
            "subnets",
            "subnet lan is already covered by relationship one",
            "at most one failover relationship (RFC 7031 section 7, requirement 2)",
            "remove it from one or from two",
        )

    def assertListenConflict(self, first: tuple[str, str], second: tuple[str, str]) -> None:
        self.assertConfigError(
            _ini(
                subnets={"lan": {}, "guest": {}},
                failovers={
                    "one": self.secondary(
                        subnets="lan", listen_address=first[0], listen_port=first[1]
                    ),
                    "two": self.secondary(
                        subnets="guest", listen_address=second[0], listen_port=second[1]
                    ),
                },
            ),
            "failover:two",
            "listen-port",
            "relationship two would listen on",
            "relationship one already listens on",
            "each listening (secondary) relationship needs its own listen-port",
        )

    def test_twoSecondariesSameSocket(self) -> None:
        """Two secondaries on one address and port are refused."""
        self.assertListenConflict(("::1", "6647"), ("::1", "6647"))

    def test_twoSecondariesDefaultSocket(self) -> None:
        """Two secondaries left at the default [::]:647 are refused, showing it."""
        error = self.assertConfigError(
            _ini(
                subnets={"lan": {}, "guest": {}},
                failovers={
                    "one": self.secondary(subnets="lan"),
                    "two": self.secondary(subnets="guest"),
                },
            ),
            "failover:two",
            "listen-port",
        )
        self.assertIn("would listen on [::]:647", error.reason)

    def test_twoSecondariesWildcard(self) -> None:
        """A wildcard address takes the port on every address, of both families."""
        self.assertListenConflict(("::", "6647"), ("::1", "6647"))
        self.assertListenConflict(("127.0.0.1", "6647"), ("::", "6647"))
        self.assertListenConflict(("0.0.0.0", "6647"), ("::", "6647"))
        self.assertListenConflict(("0.0.0.0", "6647"), ("127.0.0.1", "6647"))

    def test_twoSecondariesApart(self) -> None:
        """Secondaries on different ports, or on different specific addresses, are fine."""
        for first, second in (
            (("::", "6647"), ("::", "6648")),
            (("::1", "6647"), ("127.0.0.1", "6647")),
            (("::1", "6647"), ("2001:db8::1", "6647")),
        ):
            config = self.parse(
                _ini(
                    subnets={"lan": {}, "guest": {}},
                    failovers={
                        "one": self.secondary(
                            subnets="lan", listen_address=first[0], listen_port=first[1]
                        ),
                        "two": self.secondary(
                            subnets="guest", listen_address=second[0], listen_port=second[1]
                        ),
                    },
                )
            )
            self.assertEqual(len(config.failover), 2)

    def test_primariesDoNotListen(self) -> None:
        """Two primaries never clash: they connect, they do not listen."""
        config = self.parse(
            _ini(
                subnets={"lan": {}, "guest": {}},
                failovers={
                    "one": self.primary(subnets="lan"),
                    "two": self.primary(subnets="guest"),
                },
            )
        )
        self.assertEqual(len(config.failover), 2)


class FailoverExampleTests(SynchronousTestCase):
    """
    etc/primary.ini and etc/secondary.ini are a failover pair on loopback.
    """

    _PKI = ("ca.pem", "primary.pem", "primary-key.pem", "secondary.pem", "secondary-key.pem")

    def pair(self, checkFiles: bool = False) -> tuple[ServerConfig, ServerConfig]:
        return (
            parseConfig(_ETC.child("primary.ini").path, checkFiles=checkFiles),
            parseConfig(_ETC.child("secondary.ini").path, checkFiles=checkFiles),
        )

    def test_primaryIni(self) -> None:
        """The primary: clients on [::1]:5547, connects to the secondary at [::1]:6647."""
        primary, _ = self.pair()
        self.assertEqual((primary.server.address, primary.server.port), (IPv6Address("::1"), 5547))
        self.assertEqual(primary.server.database, "var/primary.sqlite")
        [relationship] = primary.failover
        self.assertEqual(relationship.role, FailoverRole.PRIMARY)
        self.assertEqual(
            (relationship.partner_address, relationship.partner_port), (IPv6Address("::1"), 6647)
        )
        self.assertEqual(
            (relationship.certificate, relationship.key, relationship.ca),
            ("var/pki/primary.pem", "var/pki/primary-key.pem", "var/pki/ca.pem"),
        )
        self.assertEqual(
            (relationship.partner_identity, relationship.partner_identity_kind),
            ("secondary.dhcp6ha.test", IdentityKind.DNS_NAME),
        )

    def test_secondaryIni(self) -> None:
        """The secondary: clients on [::1]:5548, listens for the primary on [::1]:6647."""
        _, secondary = self.pair()
        self.assertEqual(
            (secondary.server.address, secondary.server.port), (IPv6Address("::1"), 5548)
        )
        self.assertEqual(secondary.server.database, "var/secondary.sqlite")
        [relationship] = secondary.failover
        self.assertEqual(relationship.role, FailoverRole.SECONDARY)
        self.assertEqual(
            (relationship.listen_address, relationship.listen_port), (IPv6Address("::1"), 6647)
        )
        self.assertEqual(
            (relationship.certificate, relationship.key, relationship.ca),
            ("var/pki/secondary.pem", "var/pki/secondary-key.pem", "var/pki/ca.pem"),
        )
        self.assertEqual(relationship.partner_identity, "primary.dhcp6ha.test")

    def test_partnersAgree(self) -> None:
        """
        The two files describe one relationship: same name, MCLT and subnets;
        the primary connects where the secondary listens; each names the
        other; they share no port or database.
        """
        primary, secondary = self.pair()
        [p], [s] = primary.failover, secondary.failover
        self.assertEqual((p.name, p.mclt, p.subnets), (s.name, s.mclt, s.subnets))
        self.assertEqual(primary.subnets, secondary.subnets)
        self.assertEqual((p.partner_address, p.partner_port), (s.listen_address, s.listen_port))
        self.assertEqual(p.partner_identity, "secondary.dhcp6ha.test")
        self.assertEqual(s.partner_identity, "primary.dhcp6ha.test")
        self.assertEqual(p.ca, s.ca)
        self.assertNotEqual(primary.server.port, secondary.server.port)
        self.assertNotEqual(primary.server.database, secondary.server.database)
        self.assertEqual(primary.relationshipFor("lab"), p)

    def test_needsPKI(self) -> None:
        """Without var/pki/, the files are refused, naming the first missing one."""
        directory = self.mktemp()
        os.mkdir(directory)
        with _workingDirectory(directory):
            error = self.assertRaises(ConfigError, parseConfig, _ETC.child("primary.ini").path)
        self.assertEqual((error.section, error.key), ("failover:lab-pair", "certificate"))
        self.assertIn("var/pki/primary.pem does not exist", error.reason)

    def test_withPKI(self) -> None:
        """With var/pki/ in place (the files' content is not read here), both start."""
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "var", "pki"))
        for name in self._PKI:
            with open(os.path.join(directory, "var", "pki", name), "wb"):
                pass
        with _workingDirectory(directory):
            primary, secondary = self.pair(checkFiles=True)
        self.assertEqual(len(primary.failover) + len(secondary.failover), 2)

    def test_operationRecordIntervalDocumented(self) -> None:
        """
        Both files show operation-record-interval (each partner has its
        own) commented out in their failover section; uncommented, it
        parses to the default.
        """
        for name in ("primary.ini", "secondary.ini"):
            text = _ETC.child(name).getContent().decode("utf-8")
            commented = ";   operation-record-interval = 60\n"
            self.assertEqual(text.count(commented), 1)
            text = text.replace(commented, "operation-record-interval = 60\n")
            config = parseConfigText(text, name, checkFiles=False)
            [relationship] = config.failover
            self.assertEqual(relationship.operation_record_interval, 60.0)
            self.assertEqual(
                relationship, parseConfig(_ETC.child(name).path, checkFiles=False).failover[0]
            )

    def test_dhcp6haIniUnchanged(self) -> None:
        """etc/dhcp6ha.ini still parses, as a server with no failover."""
        self.assertEqual(parseConfig(_ETC.child("dhcp6ha.ini").path).failover, ())
