"""
Tests for L{dhcp6ha.tap} (the twistd options) and the twistd plugin.
"""

from __future__ import annotations

import gc
import io
import os
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.config import parseConfig
from dhcp6ha.service import ServerService
from dhcp6ha.tap import GC_THRESHOLDS, Options, makeService, tuneGarbageCollector
from tests.test_service import failoverConfigText, writePairCertificates

GOOD = """\
[server]
address = ::1
port = 5547
database = {database}

[subnet:lab]
prefix = 2001:db8:1::/64
pools = 2001:db8:1::1000-2001:db8:1::1fff
"""


class OptionsTests(SynchronousTestCase):
    """C{twistd dhcp6ha} option parsing."""

    def writeConfig(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_config(self) -> None:
        """C{--config} reads and validates the file while parsing options."""
        database = os.path.join(self.mktemp(), "leases.sqlite")
        path = self.writeConfig(GOOD.format(database=database))
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["config"], path)
        assert options.serverConfig is not None
        self.assertEqual(options.serverConfig.path, path)
        self.assertEqual(options.serverConfig.server.port, 5547)
        self.assertEqual(options.serverConfig.server.database, database)
        self.assertFalse(options["log-exchanges"])

    def test_shortOptionAndFlag(self) -> None:
        """C{-c} is C{--config}; C{--log-exchanges} is a flag."""
        path = self.writeConfig(GOOD.format(database="x.sqlite"))
        options = Options()
        options.parseOptions(["-c", path, "--log-exchanges"])
        self.assertEqual(options["config"], path)
        self.assertTrue(options["log-exchanges"])

    def test_configRequired(self) -> None:
        """Without C{--config}, parsing fails with a usage error saying so."""
        error = self.assertRaises(UsageError, Options().parseOptions, [])
        self.assertEqual(str(error), "--config FILE is required")

    def test_brokenConfig(self) -> None:
        """
        A configuration error becomes a usage error whose message names the
        file, the section and the key.
        """
        path = self.writeConfig(GOOD.format(database="x.sqlite").replace("5547", "99999"))
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", path])
        message = str(error)
        self.assertTrue(message.startswith(path + ": [server] port: "), message)
        self.assertIn("99999", message)

    def test_missingConfigFile(self) -> None:
        """A file that cannot be read is a usage error naming it."""
        path = self.mktemp()
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", path])
        self.assertTrue(str(error).startswith(path + ": "), str(error))

    def test_makeServiceBindsNothing(self) -> None:
        """
        C{makeService} builds the server without opening or binding
        anything, and asks it to exit cleanly on a start-up error.
        """
        directory = self.mktemp()
        database = os.path.join(directory, "leases.sqlite")
        options = Options()
        options.parseOptions(["--config", self.writeConfig(GOOD.format(database=database))])
        service = makeService(options)
        self.assertIsInstance(service, ServerService)
        self.assertTrue(service.exitOnStartupError)
        self.assertIs(service.onStarted, tuneGarbageCollector)
        self.assertEqual(sorted(s.name for s in service), ["dhcpv6", "leases"])
        self.assertFalse(service.running)
        self.assertFalse(os.path.exists(directory))


class FailoverOptionsTests(SynchronousTestCase):
    """
    A configuration with C{[failover:NAME]}: the pair member's TLS files are
    read and checked while the options are parsed.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        self.pki = writePairCertificates(os.path.join(directory, "pki"))
        self.database = os.path.join(directory, "db", "primary.sqlite")
        self.path = os.path.join(directory, "primary.ini")
        with open(self.path, "w") as f:
            f.write(failoverConfigText(self.pki, "primary", self.database))

    def test_pairMember(self) -> None:
        """
        The TLS material is loaded with the options; makeService builds the
        relationship with it, and binds nothing.
        """
        options = Options()
        options.parseOptions(["--config", self.path])
        assert options.tlsMaterial is not None
        self.assertEqual(sorted(options.tlsMaterial), ["lab-pair"])
        service = makeService(options)
        self.assertEqual([s.name for s in service], ["leases", "failover", "dhcpv6"])
        self.assertIs(service.relationships["lab-pair"].material, options.tlsMaterial["lab-pair"])
        self.assertFalse(service.running)
        self.assertFalse(os.path.exists(os.path.dirname(self.database)))

    def test_badKey(self) -> None:
        """
        A key file that cannot be used is a usage error naming the
        configuration, the relationship, the file and what is wrong.
        """
        key = self.pki["primary-key.pem"]
        with open(key, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", self.path])
        message = str(error)
        self.assertTrue(
            message.startswith(self.path + ": [failover:lab-pair]: cannot use " + key + ": "),
            message,
        )

    def test_keyOfAnotherCertificate(self) -> None:
        """A key that does not match the certificate is refused too."""
        with open(self.pki["secondary-key.pem"], "rb") as f:
            other = f.read()
        with open(self.pki["primary-key.pem"], "wb") as f:
            f.write(other)
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", self.path])
        self.assertIn("[failover:lab-pair]", str(error))

    def test_makeServiceStartupError(self) -> None:
        """
        If makeService itself cannot build the server (options filled in
        without parsing, files broken since), twistd exits with status 1 and
        a one-line reason on stderr, not a traceback.
        """
        options = Options()
        options["config"] = self.path
        options.serverConfig = parseConfig(self.path)
        with open(self.pki["ca.pem"], "w") as f:
            f.write("no CA here\n")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        error = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(error.code, 1)
        self.assertTrue(
            stderr.getvalue().startswith("dhcp6ha cannot start: " + self.path), stderr.getvalue()
        )
        self.assertIn(self.pki["ca.pem"], stderr.getvalue())


class GarbageCollectorTests(SynchronousTestCase):
    """L{tuneGarbageCollector}, which twistd's server runs once started."""

    def test_tune(self) -> None:
        """
        What exists is frozen (left out of collections) and the thresholds
        are L{GC_THRESHOLDS}.
        """
        thresholds = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *thresholds)
        self.addCleanup(gc.unfreeze)
        tuneGarbageCollector()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        self.assertGreater(gc.get_freeze_count(), 0)


class PluginTests(SynchronousTestCase):
    """The twistd plugin is found and points at L{dhcp6ha.tap}."""

    def test_plugin(self) -> None:
        """One L{IServiceMaker} named C{dhcp6ha} uses L{dhcp6ha.tap}."""
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "dhcp6ha"]
        self.assertEqual(len(makers), 1)
        maker = makers[0]
        self.assertEqual(maker.description, "DHCPv6 failover server")
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)
