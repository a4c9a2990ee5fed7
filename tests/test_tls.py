"""
Tests for L{dhcp6ha.failover.tls}: partner identities, TLS material, and the
authentication layer, first in memory (Clock, StringTransport, TLS memory
BIOs), then on real loopback sockets with every kind of bad peer.

Certificates are made by the tests themselves (L{tests.certs}).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from typing import Any

from OpenSSL import crypto
from service_identity import CertificateError
from twisted.application.internet import ClientService
from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.failover.tls import (
    DEFAULT_EXPIRY_WARNING,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    AuthenticatedPartnerAddress,
    AuthenticatedPartnerFactory,
    AuthenticatedPartnerProtocol,
    PartnerAuthenticationError,
    PartnerConnectionError,
    PartnerHandshakeError,
    PartnerIdentity,
    PartnerTimeout,
    TLSMaterial,
    TLSMaterialError,
    partnerClientEndpoint,
    partnerServerEndpoint,
)
from tests.certs import (
    CLIENT_ONLY,
    SERVER_ONLY,
    CertificateAuthority,
    Issued,
    expired,
    makeKey,
    writeFiles,
)

reactor: Any = globalReactor

CONNECTION_DONE = Failure(ConnectionDone())

PRIMARY = "primary.test"
SECONDARY = "secondary.test"


def material(
    leaf: Issued, ca: CertificateAuthority | Sequence[CertificateAuthority]
) -> TLSMaterial:
    """TLS material for C{leaf}, trusting C{ca} (one CA or several)."""
    cas = [ca] if isinstance(ca, CertificateAuthority) else list(ca)
    return TLSMaterial.fromPEM(leaf.certPEM, leaf.keyPEM, b"".join(c.pem for c in cas))


# ---------------------------------------------------------------------------
# Application-side test protocol


class Recorder(Protocol):
    """
    The wrapped (application) protocol: records what happens to it, writes
    C{greeting} as soon as it is connected.
    """

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.events: list[tuple[str, object]] = []
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self.handshakes = 0

    def connectionMade(self) -> None:
        self.events.append(("connectionMade", None))
        if self.greeting:
            assert self.transport is not None
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("dataReceived", data))
        self.received += data

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.events.append(("connectionLost", reason))
        self.lost.callback(None)


class RecordingFactory(Factory):
    """Builds L{Recorder}s and remembers the addresses it was given."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.addresses: list[IAddress] = []
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: IAddress) -> Recorder:
        self.addresses.append(addr)
        protocol = Recorder(self.greeting)
        protocol.factory = self
        self.built.append(protocol)
        return protocol


class DecliningFactory(Factory):
    """A factory that turns every connection down."""

    def buildProtocol(self, addr: IAddress) -> None:
        return None


class StartStopFactory(RecordingFactory):
    """Records C{startFactory} and C{stopFactory}."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def startFactory(self) -> None:
        self.calls.append("start")

    def stopFactory(self) -> None:
        self.calls.append("stop")


@implementer(IHandshakeListener)
class HandshakeRecorder(Recorder):
    """A wrapped protocol that also wants C{handshakeCompleted}."""

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


# ---------------------------------------------------------------------------
# Identities


class PartnerIdentityTests(SynchronousTestCase):
    """
    L{PartnerIdentity.parse} accepts a DNS name or an IP address and refuses
    anything else with a reason.
    """

    def test_dnsName(self) -> None:
        """A DNS name is kept lower-cased, without its trailing dot."""
        identity = PartnerIdentity.parse("Partner.Example.NET.")
        self.assertEqual(identity, PartnerIdentity("partner.example.net", None))
        self.assertFalse(identity.isIPAddress)
        self.assertEqual(str(identity), "partner.example.net")

    def test_singleLabelAndDigits(self) -> None:
        """A single label, and labels with digits and inner hyphens, are names."""
        self.assertEqual(PartnerIdentity.parse("dhcp-2").name, "dhcp-2")
        self.assertEqual(PartnerIdentity.parse("2nd.example").name, "2nd.example")

    def test_ipv4(self) -> None:
        """An IPv4 address is an IP identity."""
        identity = PartnerIdentity.parse("192.0.2.7")
        self.assertTrue(identity.isIPAddress)
        self.assertEqual(str(identity.address), "192.0.2.7")

    def test_ipv6Compressed(self) -> None:
        """An IPv6 address is an IP identity, in its compressed form."""
        self.assertEqual(PartnerIdentity.parse("2001:DB8:0::7").name, "2001:db8::7")
        self.assertEqual(PartnerIdentity.parse("::1").name, "::1")

    def assertRefused(self, text: str, *fragments: str) -> None:
        with self.assertRaises(ValueError) as caught:
            PartnerIdentity.parse(text)
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_refused(self) -> None:
        """Everything that is neither a DNS name nor an IP address is refused, with why."""
        self.assertRefused("", "empty")
        self.assertRefused("partner example", "whitespace")
        self.assertRefused(" partner", "whitespace")
        self.assertRefused("[2001:db8::7]", "brackets")
        self.assertRefused("fe80::1%eth0", "zone index")
        self.assertRefused("partner:647", "no port")
        self.assertRefused("2001:db8::7::8", "not a valid IPv6 address")
        self.assertRefused("192.0.2.300", "looks like an IPv4 address")
        self.assertRefused("192.000.2.7", "looks like an IPv4 address")
        self.assertRefused("10", "looks like an IPv4 address")
        self.assertRefused("*.example.net", "wildcard")
        self.assertRefused("192.0.2.0/24", "network")
        self.assertRefused("part_ner.example", "label 'part_ner'")
        self.assertRefused("-partner.example", "hyphen")
        self.assertRefused("partner..example", "empty label")
        self.assertRefused(".example", "empty label")
        self.assertRefused("a" * 64 + ".example", "over 63")
        self.assertRefused(".".join(["a" * 60] * 5), "253")
        self.assertRefused("bücher.example", "A-label")


# ---------------------------------------------------------------------------
# TLS material


class TLSMaterialTests(SynchronousTestCase):
    """
    L{TLSMaterial.load} reads the certificate, key and CA files and says
    which file is wrong, and how.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.leaf = self.ca.issue(dns=[PRIMARY])
        self.directory = self.mktemp()

    def files(self, **contents: bytes) -> dict[str, str]:
        defaults = {"cert": self.leaf.certPEM, "key": self.leaf.keyPEM, "ca": self.ca.pem}
        defaults.update(contents)
        return writeFiles(self.directory, {name + ".pem": data for name, data in defaults.items()})

    def load(self, **contents: bytes) -> TLSMaterial:
        paths = self.files(**contents)
        return TLSMaterial.load(paths["cert.pem"], paths["key.pem"], paths["ca.pem"])

    def assertError(self, which: str, fragment: str, **contents: bytes) -> TLSMaterialError:
        with self.assertRaises(TLSMaterialError) as caught:
            self.load(**contents)
        error = caught.exception
        self.assertEqual(error.path, os.path.join(self.directory, which + ".pem"))
        self.assertIn(fragment, error.reason)
        self.assertEqual(str(error), error.path + ": " + error.reason)
        return error

    def test_load(self) -> None:
        """Good files load; the material carries our certificate and the CA."""
        loaded = self.load()
        self.assertEqual(loaded.certificate.original.to_cryptography(), self.leaf.certificate)
        self.assertEqual(
            [a.original.to_cryptography() for a in loaded.authorities], [self.ca.certificate]
        )
        self.assertEqual(loaded.chain, ())
        self.assertEqual(loaded.notValidAfter, self.leaf.certificate.not_valid_after_utc)
        self.assertIn("CN=partner", repr(loaded))

    def test_keyAndCertificateInOneFile(self) -> None:
        """The key may sit in the certificate's file."""
        combined = self.leaf.certPEM + self.leaf.keyPEM
        paths = self.files(cert=combined)
        loaded = TLSMaterial.load(paths["cert.pem"], paths["cert.pem"], paths["ca.pem"])
        self.assertEqual(loaded.certificate.original.to_cryptography(), self.leaf.certificate)

    def test_intermediateChain(self) -> None:
        """Intermediates after the certificate are kept and make the chain to the CA."""
        intermediate = self.ca.intermediate("intermediate")
        leaf = intermediate.issue(dns=[PRIMARY])
        loaded = self.load(cert=leaf.certPEM, key=leaf.keyPEM)
        self.assertEqual(
            [c.original.to_cryptography() for c in loaded.chain], [intermediate.certificate]
        )

    def test_caBundle(self) -> None:
        """Every certificate of the CA file is trusted."""
        other = CertificateAuthority("other")
        loaded = self.load(ca=other.pem + self.ca.pem)
        self.assertEqual(len(loaded.authorities), 2)

    def test_missingFile(self) -> None:
        """A missing file is named."""
        paths = self.files()
        for which in ("cert", "key", "ca"):
            arguments = [paths["cert.pem"], paths["key.pem"], paths["ca.pem"]]
            missing = os.path.join(self.directory, "missing-" + which + ".pem")
            arguments[["cert", "key", "ca"].index(which)] = missing
            with self.assertRaises(TLSMaterialError) as caught:
                TLSMaterial.load(*arguments)
            self.assertEqual(caught.exception.path, missing)
            self.assertEqual(caught.exception.reason, "no such file")

    def test_directory(self) -> None:
        """A directory where a file should be is named."""
        paths = self.files()
        with self.assertRaises(TLSMaterialError) as caught:
            TLSMaterial.load(paths["cert.pem"], self.directory, paths["ca.pem"])
        self.assertEqual(caught.exception.path, self.directory)
        self.assertIn("is a directory", caught.exception.reason)

    def test_unreadable(self) -> None:
        """A file we may not read is named."""
        if os.getuid() == 0:
            raise self.skipTest("root reads every file")
        paths = self.files()
        os.chmod(paths["key.pem"], 0)
        self.assertError("key", "permission denied")

    def test_notPEM(self) -> None:
        """Garbage in any file is reported for that file."""
        self.assertError("cert", "no PEM certificate", cert=b"hello")
        self.assertError("key", "no PEM private key", key=b"hello")
        self.assertError("ca", "no PEM certificate", ca=b"")

    def test_brokenPEM(self) -> None:
        """A PEM block that does not parse is reported."""
        broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        self.assertError("cert", "cannot parse", cert=broken)
        brokenKey = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        self.assertError("key", "cannot parse the private key", key=brokenKey)

    def test_swapped(self) -> None:
        """A certificate and key given the wrong way round are recognised."""
        self.assertError("cert", "swapped", cert=self.leaf.keyPEM, key=self.leaf.certPEM)
        self.assertError("key", "swapped", key=self.leaf.certPEM)

    def test_encryptedKey(self) -> None:
        """An encrypted key is refused: the daemon has nobody to ask for the password."""
        self.assertError("key", "encrypted", key=self.leaf.encryptedKeyPEM(b"secret"))

    def test_mismatchedKey(self) -> None:
        """A key that is not the certificate's is refused."""
        other = self.ca.issue(dns=[PRIMARY])
        error = self.assertError("key", "does not match", key=other.keyPEM)
        self.assertIn("cert.pem", error.reason)

    def test_notIssuedByCA(self) -> None:
        """Our certificate must chain to the configured CA."""
        other = CertificateAuthority("other")
        error = self.assertError("cert", "not issued by a CA in", ca=other.pem)
        self.assertIn("ca.pem", error.reason)

    def test_missingIntermediate(self) -> None:
        """A certificate from an intermediate, given without it, does not chain."""
        leaf = self.ca.intermediate("intermediate").issue(dns=[PRIMARY])
        self.assertError(
            "cert",
            "not issued",
            cert=leaf.certPEM.split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n",
            key=leaf.keyPEM,
        )

    def test_weakKey(self) -> None:
        """OpenSSL's default security level refuses an RSA-1024 certificate; so do we, at load."""
        leaf = self.ca.issue(dns=[PRIMARY], key=makeKey("rsa", 1024))
        self.assertError(
            "cert", "OpenSSL refuses the certificate", cert=leaf.certPEM, key=leaf.keyPEM
        )

    def test_validityProblem(self) -> None:
        """Validity is reported against the injected time, for a startup warning."""
        loaded = self.load()
        before = loaded.notValidBefore.timestamp()
        after = loaded.notValidAfter.timestamp()
        self.assertIsNone(loaded.validityProblem((before + after) / 2))
        problem = loaded.validityProblem(after + 1)
        assert problem is not None
        self.assertIn("expired", problem)
        problem = loaded.validityProblem(before - 1)
        assert problem is not None
        self.assertIn("not valid before", problem)

    def test_validityProblemExpiringSoon(self) -> None:
        """
        With C{warnWithin}, a certificate that ends within that many seconds
        is reported, with the days left; without it, it is not.
        """
        notBefore = self.ca.certificate.not_valid_before_utc
        leaf = self.ca.issue(
            dns=[PRIMARY], notBefore=notBefore, notAfter=notBefore + datetime.timedelta(days=90)
        )
        loaded = self.load(cert=leaf.certPEM, key=leaf.keyPEM)
        after = loaded.notValidAfter.timestamp()
        month = DEFAULT_EXPIRY_WARNING
        self.assertEqual(month, 30 * 86400)
        self.assertIsNone(loaded.validityProblem(after - 3 * 86400))
        self.assertIsNone(loaded.validityProblem(after - month - 1, warnWithin=month))
        self.assertEqual(
            loaded.validityProblem(after - month, warnWithin=month),
            "this server's certificate expires in 30 days, at " + loaded.notValidAfter.isoformat(),
        )
        problem = loaded.validityProblem(after - 86400 - 1, warnWithin=month)
        assert problem is not None
        self.assertIn("expires in 1 day, at", problem)
        problem = loaded.validityProblem(after - 10, warnWithin=month)
        assert problem is not None
        self.assertIn("expires in less than a day, at", problem)
        problem = loaded.validityProblem(after + 1, warnWithin=month)
        assert problem is not None
        self.assertIn("expired at", problem)

    def test_expiredOwnCertificateLoads(self) -> None:
        """An expired certificate of ours loads: the server can still serve clients."""
        leaf = expired(self.ca, dns=[PRIMARY])
        loaded = self.load(cert=leaf.certPEM, key=leaf.keyPEM)
        self.assertIsNotNone(loaded.validityProblem(Clock().seconds() + 2e9))

    def test_serverOptionsInterface(self) -> None:
        """The server options are a server connection creator."""
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, self.load().serverOptions()))


# ---------------------------------------------------------------------------
# In memory: two TLSMemoryBIOProtocols joined by hand


SERVER_ADDRESS = IPv4Address("TCP", "192.0.2.2", 647)
CLIENT_ADDRESS = IPv4Address("TCP", "192.0.2.1", 50000)


class MemoryPair:
    """
    A partner connection in memory: the secondary's TLS stack (server) and
    the primary's (client) over two L{StringTransport}s, with one L{Clock}.
    Bytes move only when the test calls L{pump} or L{deliver}.
    """

    def __init__(
        self,
        serverMaterial: TLSMaterial,
        serverAccepts: Sequence[str],
        clientMaterial: TLSMaterial,
        clientExpects: str,
        *,
        serverGreeting: bytes = b"",
        clientGreeting: bytes = b"",
        idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
        serverFactory: IProtocolFactory | None = None,
        allowedSources: Sequence[str] | None = None,
        clientAddress: IAddress = CLIENT_ADDRESS,
    ) -> None:
        self.clock = Clock()
        self.serverApp = RecordingFactory(serverGreeting)
        self.clientApp = RecordingFactory(clientGreeting)
        self.serverAuth = AuthenticatedPartnerFactory(
            serverFactory if serverFactory is not None else self.serverApp,
            [PartnerIdentity.parse(a) for a in serverAccepts],
            self.clock,
            idleTimeout=idleTimeout,
            allowedSources=(
                None if allowedSources is None else [ip_address(a) for a in allowedSources]
            ),
        )
        identity = PartnerIdentity.parse(clientExpects)
        self.clientAuth = AuthenticatedPartnerFactory(
            self.clientApp, [identity], self.clock, idleTimeout=idleTimeout, outgoing=True
        )
        serverTLSFactory = TLSMemoryBIOFactory(
            serverMaterial.serverOptions(), False, self.serverAuth, clock=self.clock
        )
        clientTLSFactory = TLSMemoryBIOFactory(
            clientMaterial.clientOptions(identity), True, self.clientAuth, clock=self.clock
        )
        self.serverTLS: TLSMemoryBIOProtocol = serverTLSFactory.buildProtocol(clientAddress)
        self.clientTLS: TLSMemoryBIOProtocol = clientTLSFactory.buildProtocol(SERVER_ADDRESS)
        self.serverWire = StringTransport(hostAddress=SERVER_ADDRESS, peerAddress=clientAddress)
        self.clientWire = StringTransport(hostAddress=clientAddress, peerAddress=SERVER_ADDRESS)
        self.serverTLS.makeConnection(self.serverWire)
        self.clientTLS.makeConnection(self.clientWire)

    @property
    def server(self) -> AuthenticatedPartnerProtocol:
        protocol = self.serverTLS.wrappedProtocol
        assert isinstance(protocol, AuthenticatedPartnerProtocol)
        return protocol

    @property
    def client(self) -> AuthenticatedPartnerProtocol:
        protocol = self.clientTLS.wrappedProtocol
        assert isinstance(protocol, AuthenticatedPartnerProtocol)
        return protocol

    def deliver(self, toServer: bool) -> bytes:
        """Move everything one side has written to the other in a single read."""
        self.clock.advance(0)  # BufferingTLSTransport batches writes on the clock
        source, target = (
            (self.clientWire, self.serverTLS) if toServer else (self.serverWire, self.clientTLS)
        )
        data = source.value()
        source.clear()
        if data and not source.disconnecting:
            target.dataReceived(data)
        return data

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to say."""
        for _ in range(20):
            if not self.deliver(True) and not self.deliver(False):
                return
        raise AssertionError("the TLS conversation does not end")

    def lose(self) -> None:
        """Tell both stacks their transport is gone (what a reactor would do after an abort)."""
        for tls in (self.serverTLS, self.clientTLS):
            if tls.connected:
                tls.connectionLost(Failure(ConnectionAbortedForTests()))


class ConnectionAbortedForTests(Exception):
    """The in-memory stand-in for a closed socket."""


def partnerEvents(events: Sequence[LogEvent], kind: str | None = None) -> list[LogEvent]:
    return [
        e for e in events if "partnerEvent" in e and (kind is None or e["partnerEvent"] == kind)
    ]


class MemoryHandshakeTests(SynchronousTestCase):
    """
    The authentication layer over real TLS (OpenSSL memory BIOs) but no
    sockets and no wall clock.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.secondary = material(self.ca.issue("secondary", dns=[SECONDARY]), self.ca)
        self.primary = material(self.ca.issue("primary", ips=["192.0.2.1"]), self.ca)

    def test_authenticatedBothWays(self) -> None:
        """
        Each side checks the other's identity; only then is the wrapped
        protocol built, given an L{AuthenticatedPartnerAddress} naming the
        identity proved, and connected; bytes then flow both ways.
        """
        with capturedLogs() as events:
            pair = MemoryPair(
                self.secondary,
                ["192.0.2.1"],
                self.primary,
                SECONDARY,
                serverGreeting=b"from secondary",
                clientGreeting=b"from primary",
            )
            pair.pump()
        self.assertEqual(pair.server.identity, PartnerIdentity.parse("192.0.2.1"))
        self.assertEqual(pair.client.identity, PartnerIdentity.parse(SECONDARY))
        [serverApp] = pair.serverApp.built
        [clientApp] = pair.clientApp.built
        self.assertEqual(serverApp.received, b"from primary")
        self.assertEqual(clientApp.received, b"from secondary")
        self.assertEqual(
            pair.serverApp.addresses,
            [AuthenticatedPartnerAddress(PartnerIdentity.parse("192.0.2.1"), CLIENT_ADDRESS)],
        )
        self.assertEqual(
            pair.clientApp.addresses,
            [AuthenticatedPartnerAddress(PartnerIdentity.parse(SECONDARY), SERVER_ADDRESS)],
        )
        # The application sees the TLS transport itself.
        self.assertIs(serverApp.transport, pair.serverTLS)
        self.assertEqual(pair.serverAuth.stats.authenticated, 1)
        self.assertEqual(pair.clientAuth.stats.authenticated, 1)
        authenticated = partnerEvents(events, "authenticated")
        self.assertEqual(
            sorted((e["direction"], e["peer"], e["identity"]) for e in authenticated),
            [
                ("incoming", "192.0.2.1:50000", "192.0.2.1"),
                ("outgoing", "192.0.2.2:647", SECONDARY),
            ],
        )

    def test_tls13(self) -> None:
        """Twisted's defaults negotiate TLS 1.3 here (the case the next tests are about)."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        pair.pump()
        self.assertEqual(pair.serverTLS.getHandle().get_protocol_version_name(), "TLSv1.3")

    def driveToClientFinished(self, pair: MemoryPair) -> bytes:
        """
        Run the handshake up to the client's Finished, which the client
        sends together with its first application record, and return those
        bytes undelivered.
        """
        pair.deliver(True)  # ClientHello
        pair.deliver(False)  # ServerHello ... server Finished: the client is done
        self.assertEqual(len(pair.clientApp.built), 1, "the client authenticated the server")
        self.assertEqual(pair.serverApp.built, [], "the server has not finished")
        pair.clock.advance(0)
        flight = pair.clientWire.value()
        pair.clientWire.clear()
        return flight

    def test_finishedAndFirstBoxInOneRead(self) -> None:
        """
        With TLS 1.3 the client's Finished and its first box can arrive in one
        read: the server's wrapped protocol is built (identity checked) before
        the box is delivered, and nothing is delivered before authentication.
        """
        box = b"\x00\x04_ask\x00\x011\x00\x00"
        pair = MemoryPair(
            self.secondary, ["192.0.2.1"], self.primary, SECONDARY, clientGreeting=box
        )
        flight = self.driveToClientFinished(pair)
        # One read completes the server's handshake and carries the box.
        pair.serverTLS.dataReceived(flight)
        [serverApp] = pair.serverApp.built
        self.assertEqual(serverApp.events[0], ("connectionMade", None))
        self.assertEqual(serverApp.received, box)
        self.assertEqual(pair.serverAuth.stats.receivedBeforeAuthentication, 0)
        self.assertEqual(pair.serverAuth.stats.deliveredBeforeAuthentication, 0)
        self.assertEqual(pair.serverAuth.stats.authenticated, 1)

    def test_finishedAndFirstBoxInOneReadRefused(self) -> None:
        """
        The same single read from a peer that fails the identity check: the
        wrapped protocol is never built, the box never delivered, and the
        connection aborted with the reason logged.
        """
        box = b"\x00\x04_ask\x00\x011\x00\x00"
        pair = MemoryPair(
            self.secondary, ["192.0.2.99"], self.primary, SECONDARY, clientGreeting=box
        )
        flight = self.driveToClientFinished(pair)
        with capturedLogs() as events:
            pair.serverTLS.dataReceived(flight)
        self.assertEqual(pair.serverApp.built, [])
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(pair.serverAuth.stats.refused, 1)
        self.assertEqual(pair.serverAuth.stats.receivedBeforeAuthentication, 0)
        self.assertEqual(pair.serverAuth.stats.deliveredBeforeAuthentication, 0)
        [refused] = partnerEvents(events, "refused")
        self.assertEqual(refused["peer"], "192.0.2.1:50000")
        self.assertIn("IP:192.0.2.1", refused["reason"])
        self.assertIn("IP address 192.0.2.99", refused["reason"])
        pair.lose()
        self.assertEqual(pair.serverApp.built, [])

    def test_secondIdentityChosen(self) -> None:
        """
        A listener accepting several partners (m-to-1) tells the wrapped
        factory which one connected.
        """
        pair = MemoryPair(self.secondary, ["other.test", "192.0.2.1"], self.primary, SECONDARY)
        pair.pump()
        [address] = pair.serverApp.addresses
        assert isinstance(address, AuthenticatedPartnerAddress)
        self.assertEqual(address.identity, PartnerIdentity.parse("192.0.2.1"))

    def test_sourceAddressRefused(self) -> None:
        """
        A listener told where its partner connects from drops any other
        source as soon as TCP connects, before any TLS work.
        """
        with capturedLogs() as events:
            pair = MemoryPair(
                self.secondary, ["192.0.2.1"], self.primary, SECONDARY, allowedSources=["192.0.2.9"]
            )
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(pair.serverWire.value(), b"")
        [refused] = partnerEvents(events, "refused")
        self.assertIn("connection from 192.0.2.1", refused["reason"])
        self.assertIn("only from 192.0.2.9", refused["reason"])
        self.assertEqual(pair.serverAuth.stats.refused, 1)
        pair.deliver(True)
        self.assertEqual(pair.serverApp.built, [])
        pair.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertEqual(pair.serverAuth.stats.handshakeTimeouts, 0, "no timer was started")

    def test_sourceAddressMapped(self) -> None:
        """An IPv4-mapped IPv6 source (a dual-stack listener) counts as its IPv4 address."""
        pair = MemoryPair(
            self.secondary,
            ["192.0.2.1"],
            self.primary,
            SECONDARY,
            allowedSources=["192.0.2.1"],
            clientAddress=IPv6Address("TCP", "::ffff:192.0.2.1", 50000),
        )
        pair.pump()
        self.assertEqual(len(pair.serverApp.built), 1)

    def test_handshakeListenerForwarded(self) -> None:
        """A wrapped protocol that listens for the handshake hears of it after connectionMade."""
        factory = Factory.forProtocol(lambda: HandshakeRecorder(b""))
        pair = MemoryPair(
            self.secondary, ["192.0.2.1"], self.primary, SECONDARY, serverFactory=factory
        )
        pair.pump()
        wrapped = pair.server.wrappedProtocol
        assert isinstance(wrapped, HandshakeRecorder)
        self.assertEqual(wrapped.handshakes, 1)

    def test_factoryDeclines(self) -> None:
        """A wrapped factory returning None closes the authenticated connection."""
        declining = DecliningFactory()
        with capturedLogs() as events:
            pair = MemoryPair(
                self.secondary, ["192.0.2.1"], self.primary, SECONDARY, serverFactory=declining
            )
            pair.pump()
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(len(partnerEvents(events, "declined")), 1)

    def test_handshakeTimeout(self) -> None:
        """
        A peer that connects and says nothing is dropped after the
        handshake timeout, logged; no wrapped protocol was ever built.
        """
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        waiting = pair.server.whenAuthenticated()
        with capturedLogs() as events:
            pair.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT - 0.1)
            self.assertFalse(pair.serverWire.disconnecting)
            pair.clock.advance(0.1)
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(
            sorted((e["direction"], e["peer"]) for e in partnerEvents(events, "handshakeTimeout")),
            [("incoming", "192.0.2.1:50000"), ("outgoing", "192.0.2.2:647")],
        )
        self.assertEqual(pair.serverAuth.stats.handshakeTimeouts, 1)
        pair.serverTLS.connectionLost(Failure(ConnectionAbortedForTests()))
        failure = self.failureResultOf(waiting, PartnerTimeout)
        self.assertIn("TLS handshake not done", str(failure.value))
        self.assertEqual(pair.serverApp.built, [])
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def test_slowHandshakeTimeout(self) -> None:
        """The handshake timeout bounds the whole handshake, not each silence."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        pair.deliver(True)
        pair.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT / 2)
        pair.deliver(False)
        pair.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT / 2)
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(pair.serverAuth.stats.handshakeTimeouts, 1)

    def test_timerCancelledOnAuthentication(self) -> None:
        """Once authenticated only the idle timer is pending."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY, idleTimeout=None)
        pair.pump()
        pair.clock.advance(0)
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        pair.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT * 100)
        self.assertFalse(pair.serverWire.disconnecting)

    def test_idleTimeout(self) -> None:
        """
        An authenticated partner that sends nothing for the idle timeout is
        disconnected; any received byte restarts the count; the wrapped
        protocol learns why.
        """
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY, idleTimeout=30)
        pair.pump()
        [serverApp] = pair.serverApp.built
        [clientApp] = pair.clientApp.built
        pair.clock.advance(29)
        assert clientApp.transport is not None
        clientApp.transport.write(b"contact")
        pair.pump()
        self.assertEqual(serverApp.received, b"contact")
        pair.clock.advance(29)
        self.assertFalse(pair.serverWire.disconnecting)
        with capturedLogs() as events:
            pair.clock.advance(1)
        self.assertTrue(pair.serverWire.disconnecting)
        self.assertEqual(pair.serverAuth.stats.idleTimeouts, 1)
        self.assertEqual(len(partnerEvents(events, "idleTimeout")), 1)
        pair.serverTLS.connectionLost(Failure(ConnectionAbortedForTests()))
        kind, reason = serverApp.events[-1]
        self.assertEqual(kind, "connectionLost")
        assert isinstance(reason, Failure)
        self.assertIsInstance(reason.value, PartnerTimeout)

    def test_closedLogged(self) -> None:
        """Every connection's end is logged once, with its peer and reason."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        pair.pump()
        with capturedLogs() as events:
            pair.lose()
        closed = partnerEvents(events, "closed")
        self.assertEqual(len(closed), 2)
        [serverApp] = pair.serverApp.built
        self.assertEqual(serverApp.events[-1][0], "connectionLost")

    def test_whenAuthenticated(self) -> None:
        """whenAuthenticated fires with the wrapped protocol, before or after the fact."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        early = pair.client.whenAuthenticated()
        self.assertNoResult(early)
        pair.pump()
        [clientApp] = pair.clientApp.built
        self.assertIs(self.successResultOf(early), clientApp)
        self.assertIs(self.successResultOf(pair.client.whenAuthenticated()), clientApp)

    def test_whenAuthenticatedCancelled(self) -> None:
        """Cancelling the wait aborts the connection."""
        pair = MemoryPair(self.secondary, ["192.0.2.1"], self.primary, SECONDARY)
        waiting = pair.client.whenAuthenticated()
        waiting.cancel()
        self.assertTrue(pair.clientWire.disconnecting)
        self.failureResultOf(waiting)
        pair.lose()
        self.assertEqual(pair.clientApp.built, [])

    def test_failedHandshakeReported(self) -> None:
        """
        A handshake OpenSSL refuses is logged with OpenSSL's reason and the
        X.509 error found, and waiters get a L{PartnerHandshakeError}.
        """
        stranger = CertificateAuthority("stranger")
        pair = MemoryPair(
            self.secondary,
            ["192.0.2.1"],
            material(stranger.issue("primary", ips=["192.0.2.1"]), [stranger, self.ca]),
            SECONDARY,
        )
        waiting = pair.server.whenAuthenticated()
        with capturedLogs() as events:
            pair.pump()
            pair.lose()
        [failed] = partnerEvents(events, "handshakeFailed")
        self.assertEqual(failed["direction"], "incoming")
        self.assertIn("certificate verify failed", failed["reason"])
        self.assertIn("CN=stranger", failed["reason"])
        error = self.failureResultOf(waiting, PartnerHandshakeError).value
        self.assertEqual(error.reason, failed["reason"])
        self.assertEqual(pair.serverApp.built, [])


class FakeConnection:
    """The part of C{OpenSSL.SSL.Connection} the identity check uses."""

    def __init__(self, certificate: Issued | None) -> None:
        self._certificate = (
            None if certificate is None else crypto.X509.from_cryptography(certificate.certificate)
        )

    def get_peer_certificate(self) -> object:
        return self._certificate


class FakeTLSTransport(StringTransport):
    """A transport that looks like a finished TLS connection to a given peer."""

    def __init__(self, certificate: Issued | None) -> None:
        super().__init__(peerAddress=CLIENT_ADDRESS)
        self.connection = FakeConnection(certificate)
        self.aborted = False

    def getHandle(self) -> object:
        return self.connection

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class AuthenticatedPartnerProtocolTests(SynchronousTestCase):
    """
    The layer alone, over a fake TLS transport: bytes that (with some other
    TLS transport than Twisted's) arrived before the check are held, never
    delivered early, delivered after a passed check and dropped after a
    failed one.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.clock = Clock()
        self.app = RecordingFactory()
        self.factory = AuthenticatedPartnerFactory(
            self.app, [PartnerIdentity.parse(PRIMARY)], self.clock
        )

    def connect(
        self, certificate: Issued | None
    ) -> tuple[AuthenticatedPartnerProtocol, FakeTLSTransport]:
        protocol = self.factory.buildProtocol(CLIENT_ADDRESS)
        transport = FakeTLSTransport(certificate)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_interfaces(self) -> None:
        """The factory and protocol provide what TLSMemoryBIOFactory expects."""
        protocol, _ = self.connect(None)
        self.assertTrue(verifyObject(IProtocolFactory, self.factory))
        self.assertTrue(verifyObject(IProtocol, protocol))
        self.assertTrue(verifyObject(IHandshakeListener, protocol))
        self.assertTrue(
            verifyObject(
                IAddress,
                AuthenticatedPartnerAddress(PartnerIdentity.parse(PRIMARY), CLIENT_ADDRESS),
            )
        )

    def test_heldUntilAuthenticated(self) -> None:
        """Early bytes are counted and held, then delivered after connectionMade."""
        protocol, _ = self.connect(self.ca.issue(dns=[PRIMARY]))
        protocol.dataReceived(b"early")
        self.assertEqual(self.app.built, [])
        self.assertEqual(self.factory.stats.receivedBeforeAuthentication, 5)
        protocol.handshakeCompleted()
        [app] = self.app.built
        self.assertEqual(app.events, [("connectionMade", None), ("dataReceived", b"early")])
        self.assertEqual(self.factory.stats.deliveredBeforeAuthentication, 0)

    def test_droppedWhenRefused(self) -> None:
        """Early bytes from a peer that fails the check are dropped with it."""
        protocol, transport = self.connect(self.ca.issue(dns=["intruder.test"]))
        protocol.dataReceived(b"early")
        protocol.handshakeCompleted()
        protocol.dataReceived(b"late")
        self.assertTrue(transport.aborted)
        protocol.connectionLost(Failure(ConnectionAbortedForTests()))
        self.assertEqual(self.app.built, [])
        self.assertEqual(self.factory.stats.refused, 1)

    def test_noCertificate(self) -> None:
        """A peer with no certificate at all is refused (defence in depth)."""
        protocol, transport = self.connect(None)
        with capturedLogs() as events:
            protocol.handshakeCompleted()
        self.assertTrue(transport.aborted)
        [refused] = partnerEvents(events, "refused")
        self.assertIn("no certificate", refused["reason"])

    def test_tooMuchBeforeAuthentication(self) -> None:
        """Holding is bounded: a flood before the check closes the connection."""
        protocol, transport = self.connect(self.ca.issue(dns=[PRIMARY]))
        for _ in range(300):
            protocol.dataReceived(b"x" * 1024)
        self.assertTrue(transport.aborted)
        protocol.handshakeCompleted()
        self.assertEqual(self.app.built, [])

    def test_invalidArguments(self) -> None:
        """Timeouts must be positive and at least one identity given."""
        with self.assertRaises(ValueError):
            AuthenticatedPartnerFactory(self.app, [], self.clock)
        with self.assertRaises(ValueError):
            partnerServerEndpoint(
                self.clock,
                material(self.ca.issue(dns=[SECONDARY]), self.ca),
                [],
                TCP4ServerEndpoint(reactor, 0),
            )
        with self.assertRaises(ValueError):
            AuthenticatedPartnerFactory(
                self.app, [PartnerIdentity.parse(PRIMARY)], self.clock, handshakeTimeout=0
            )
        with self.assertRaises(ValueError):
            AuthenticatedPartnerFactory(
                self.app, [PartnerIdentity.parse(PRIMARY)], self.clock, idleTimeout=-1
            )

    def test_startStopForwarded(self) -> None:
        """Starting and stopping the factory starts and stops the wrapped one."""
        app = StartStopFactory()
        factory = AuthenticatedPartnerFactory(app, [PartnerIdentity.parse(PRIMARY)], self.clock)
        factory.doStart()
        factory.doStop()
        self.assertEqual(app.calls, ["start", "stop"])


# ---------------------------------------------------------------------------
# Real sockets


class PlainGreeter(Protocol):
    """A peer that does not speak TLS: says something in clear, records the end."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.greeting)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.lost.callback(None)


class LoopbackTests(TestCase):
    """
    Both sides on real loopback TCP sockets with the real reactor: the
    secondary listens, the primary connects; each refusal is logged with its
    reason on the refusing side, whose wrapped protocol never runs.
    """

    timeout = 30

    def setUp(self) -> None:
        self.ca = CertificateAuthority("pair CA")
        self.stranger = CertificateAuthority("stranger CA")
        self.secondaryLeaf = self.ca.issue("secondary", dns=[SECONDARY], ips=["127.0.0.1", "::1"])
        self.primaryLeaf = self.ca.issue("primary", dns=[PRIMARY])
        self.events: list[LogEvent] = []
        self.waiters: list[tuple[Callable[[list[LogEvent]], bool], Deferred[None]]] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: LogEvent) -> None:
        if "partnerEvent" not in event:
            return
        self.events.append(event)
        for waiter in list(self.waiters):
            predicate, d = waiter
            if predicate(self.events):
                self.waiters.remove(waiter)
                d.callback(None)

    def waitFor(self, predicate: Callable[[list[LogEvent]], bool]) -> Deferred[None]:
        if predicate(self.events):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.waiters.append((predicate, d))
        return d.addTimeout(10, reactor)

    def closed(self, direction: str, count: int = 1) -> Deferred[None]:
        """Wait until C{count} connections in C{direction} have ended."""
        return self.waitFor(
            lambda events: (
                len([e for e in partnerEvents(events, "closed") if e["direction"] == direction])
                >= count
            )
        )

    def event(self, direction: str) -> LogEvent:
        """The one outcome event (not 'closed') logged for C{direction}."""
        [found] = [
            e for e in self.events if e["direction"] == direction and e["partnerEvent"] != "closed"
        ]
        return found

    async def listen(
        self,
        leaf: Issued,
        accepts: Sequence[str],
        *,
        host: str = "127.0.0.1",
        trusted: Sequence[CertificateAuthority] | None = None,
        handshakeTimeout: float = 5.0,
    ) -> tuple[RecordingFactory, int]:
        tcp = (TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint)(
            reactor, 0, interface=host
        )
        endpoint = partnerServerEndpoint(
            reactor,
            material(leaf, trusted if trusted is not None else [self.ca]),
            [PartnerIdentity.parse(a) for a in accepts],
            tcp,
            handshakeTimeout=handshakeTimeout,
        )
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        factory = RecordingFactory(b"secondary here")
        port: IListeningPort = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def connect(
        self,
        leaf: Issued,
        expects: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        trusted: Sequence[CertificateAuthority] | None = None,
    ) -> tuple[RecordingFactory, Recorder | PartnerConnectionError]:
        tcp = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(reactor, host, port)
        endpoint = partnerClientEndpoint(
            reactor,
            material(leaf, trusted if trusted is not None else [self.ca]),
            PartnerIdentity.parse(expects),
            tcp,
        )
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        factory = RecordingFactory(b"primary here")
        try:
            protocol = await endpoint.connect(factory)
        except PartnerConnectionError as e:
            return factory, e
        assert isinstance(protocol, Recorder)
        return factory, protocol

    async def assertExchange(self, host: str, clientExpects: str, serverAccepts: str) -> None:
        server, port = await self.listen(self.secondaryLeaf, [serverAccepts], host=host)
        client, result = await self.connect(self.primaryLeaf, clientExpects, port, host=host)
        assert isinstance(result, Recorder), result
        await self.waitFor(lambda events: len(partnerEvents(events, "authenticated")) == 2)
        [serverApp] = server.built
        while serverApp.received != b"primary here" or result.received != b"secondary here":
            await deferLaterZero()
        [address] = server.addresses
        assert isinstance(address, AuthenticatedPartnerAddress)
        self.assertEqual(address.identity, PartnerIdentity.parse(serverAccepts))
        [clientAddress] = client.addresses
        assert isinstance(clientAddress, AuthenticatedPartnerAddress)
        self.assertEqual(clientAddress.identity, PartnerIdentity.parse(clientExpects))
        assert result.transport is not None
        result.transport.loseConnection()
        await result.lost
        await serverApp.lost
        await self.closed("incoming")
        await self.closed("outgoing")

    async def test_successIPv4(self) -> None:
        """Over IPv4 the primary checks an IP identity, the secondary a DNS one."""
        await self.assertExchange("127.0.0.1", "127.0.0.1", PRIMARY)

    async def test_successIPv6(self) -> None:
        """Over IPv6 the primary checks ::1 and the secondary a DNS identity."""
        await self.assertExchange("::1", "::1", PRIMARY)

    async def test_successDNS(self) -> None:
        """Both sides can use DNS identities."""
        await self.assertExchange("127.0.0.1", SECONDARY, PRIMARY)

    async def test_clientService(self) -> None:
        """
        The client endpoint works under a C{ClientService}: it connects once
        the partner is authenticated, and a partner refused by identity counts
        as a failed attempt (retried with the retry policy).
        """
        server, port = await self.listen(self.secondaryLeaf, [PRIMARY])
        tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        good = ClientService(
            partnerClientEndpoint(
                reactor, material(self.primaryLeaf, self.ca), PartnerIdentity.parse(SECONDARY), tcp
            ),
            RecordingFactory(b"primary here"),
            retryPolicy=lambda attempt: 0.05,
        )
        good.startService()
        await good.whenConnected(failAfterFailures=1)
        await self.waitFor(
            lambda events: (
                len(
                    [
                        e
                        for e in partnerEvents(events, "authenticated")
                        if e["direction"] == "incoming"
                    ]
                )
                == 1
            )
        )
        await good.stopService()
        await self.closed("incoming")
        await self.closed("outgoing")
        self.assertEqual(len(server.built), 1)

        wrong = ClientService(
            partnerClientEndpoint(
                reactor,
                material(self.primaryLeaf, self.ca),
                PartnerIdentity.parse("other.test"),
                tcp,
            ),
            RecordingFactory(b"primary here"),
            # A quick retry after the first failure, then one far away.
            retryPolicy=lambda failures: 0.05 if failures < 2 else 1000.0,
        )
        wrong.startService()
        with self.assertRaises(PartnerAuthenticationError):
            await wrong.whenConnected(failAfterFailures=2)
        await deferLaterZero()  # out of ClientService's state machine before stopping it
        await wrong.stopService()
        await self.closed("incoming", 3)
        await self.closed("outgoing", 3)
        self.assertEqual(len(server.built), 1)
        self.assertEqual(
            len([e for e in partnerEvents(self.events, "refused") if e["direction"] == "outgoing"]),
            2,
        )

    async def assertServerRefuses(
        self,
        clientLeaf: Issued,
        fragments: Sequence[str],
        *,
        accepts: str = PRIMARY,
        clientTrusted: Sequence[CertificateAuthority] | None = None,
        kind: str = "handshakeFailed",
    ) -> LogEvent:
        """
        The primary presents C{clientLeaf}; the secondary must refuse it
        before its wrapped protocol runs, logging C{fragments}.
        """
        server, port = await self.listen(self.secondaryLeaf, [accepts])
        client, result = await self.connect(clientLeaf, SECONDARY, port, trusted=clientTrusted)
        await self.closed("incoming")
        if isinstance(result, Recorder):
            # TLS 1.3: the client finished before the server judged it; the
            # refusal reaches it as an alert or a reset.
            await result.lost
        await self.closed("outgoing")
        self.assertEqual(server.built, [])
        event = self.event("incoming")
        self.assertEqual(event["partnerEvent"], kind)
        self.assertTrue(event["peer"].startswith("127.0.0.1:"))
        for fragment in fragments:
            self.assertIn(fragment, event["reason"])
        return event

    async def test_otherCA(self) -> None:
        """A client certificate from another CA is refused by the chain check."""
        leaf = self.stranger.issue("primary", dns=[PRIMARY])
        await self.assertServerRefuses(
            leaf,
            ["certificate verify failed", "CN=stranger CA"],
            clientTrusted=[self.stranger, self.ca],
        )

    async def test_expired(self) -> None:
        """An expired client certificate is refused, and said to be expired."""
        await self.assertServerRefuses(
            expired(self.ca, dns=[PRIMARY]), ["certificate verify failed", "has expired"]
        )

    async def test_wrongEKU(self) -> None:
        """A client certificate only good for servers is refused (Twisted's default, kept)."""
        leaf = self.ca.issue("primary", dns=[PRIMARY], extendedKeyUsage=SERVER_ONLY)
        await self.assertServerRefuses(leaf, ["certificate verify failed", "purpose"])

    async def test_wrongDNSIdentity(self) -> None:
        """A client from the right CA with another DNS name is refused."""
        leaf = self.ca.issue("impostor", dns=["impostor.test"])
        await self.assertServerRefuses(
            leaf, ["DNS:impostor.test", "DNS name " + PRIMARY], kind="refused"
        )

    async def test_wrongIPIdentity(self) -> None:
        """A client with another IP address than the configured one is refused."""
        leaf = self.ca.issue("impostor", ips=["127.0.0.2"])
        await self.assertServerRefuses(
            leaf, ["IP:127.0.0.2", "IP address 127.0.0.1"], accepts="127.0.0.1", kind="refused"
        )

    async def test_noSubjectAltName(self) -> None:
        """A client certificate with only a common name is refused."""
        leaf = self.ca.issue(PRIMARY)
        await self.assertServerRefuses(leaf, ["no subjectAltName", "CN=" + PRIMARY], kind="refused")

    async def test_ipAsDNSName(self) -> None:
        """An IP address written as a DNS subjectAltName is refused (CertificateError)."""
        leaf = self.ca.issue("primary", ipsAsDNS=["127.0.0.1"])
        await self.assertServerRefuses(
            leaf, ["DNS:127.0.0.1", "Invalid DNS pattern"], accepts="127.0.0.1", kind="refused"
        )

    async def test_noClientCertificate(self) -> None:
        """A client that presents no certificate is refused by the handshake."""
        server, port = await self.listen(self.secondaryLeaf, [PRIMARY])
        options = optionsForClientTLS(
            SECONDARY, trustRoot=material(self.secondaryLeaf, self.ca).authorities[0]
        )
        factory = RecordingFactory(b"primary here")
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        protocol = await endpoint.connect(factory)
        assert isinstance(protocol, Recorder)
        await self.closed("incoming")
        await protocol.lost
        self.assertEqual(server.built, [])
        event = self.event("incoming")
        self.assertEqual(event["partnerEvent"], "handshakeFailed")
        self.assertIn("certificate", event["reason"])

    async def test_plaintextClient(self) -> None:
        """A client that talks AMP in clear to the TLS listener is refused."""
        server, port = await self.listen(self.secondaryLeaf, [PRIMARY])
        plain = PlainGreeter(b"\x00\x04_ask\x00\x011\x00\x08_command\x00\x07Connect\x00\x00")
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: plain)
        )
        await self.closed("incoming")
        await plain.lost
        self.assertEqual(server.built, [])
        event = self.event("incoming")
        self.assertEqual(event["partnerEvent"], "handshakeFailed")
        self.assertIn("TLS error", event["reason"])

    async def test_silentClient(self) -> None:
        """A client that connects and says nothing is dropped after the handshake timeout."""
        server, port = await self.listen(self.secondaryLeaf, [PRIMARY], handshakeTimeout=0.3)
        silent = PlainGreeter(b"")
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: silent)
        )
        await self.closed("incoming")
        await silent.lost
        self.assertEqual(server.built, [])
        self.assertEqual(self.event("incoming")["partnerEvent"], "handshakeTimeout")

    async def assertClientRefuses(
        self,
        serverLeaf: Issued,
        fragments: Sequence[str],
        *,
        expects: str = SECONDARY,
        serverTrusted: Sequence[CertificateAuthority] | None = None,
        kind: str = "handshakeFailed",
        error: type[PartnerConnectionError] = PartnerHandshakeError,
    ) -> None:
        """
        The secondary presents C{serverLeaf}; the primary must refuse it:
        C{connect} fails, its wrapped protocol never runs, the reason is
        logged.
        """
        server, port = await self.listen(serverLeaf, [PRIMARY], trusted=serverTrusted)
        client, result = await self.connect(self.primaryLeaf, expects, port)
        self.assertIsInstance(result, error)
        await self.closed("outgoing")
        await self.closed("incoming")
        self.assertEqual(client.built, [])
        self.assertEqual(server.built, [])
        event = self.event("outgoing")
        self.assertEqual(event["partnerEvent"], kind)
        for fragment in fragments:
            self.assertIn(fragment, event["reason"])
        assert isinstance(result, PartnerConnectionError)
        self.assertEqual(result.reason, event["reason"])

    async def test_serverWrongIdentity(self) -> None:
        """A secondary with another name is refused by the primary."""
        leaf = self.ca.issue("impostor", dns=["impostor.test"])
        await self.assertClientRefuses(
            leaf, ["DNS name " + SECONDARY], kind="refused", error=PartnerAuthenticationError
        )

    async def test_serverWrongIP(self) -> None:
        """A secondary without the expected IP address is refused by the primary."""
        await self.assertClientRefuses(
            self.ca.issue("impostor", dns=[SECONDARY]),
            ["IP address 127.0.0.1"],
            expects="127.0.0.1",
            kind="refused",
            error=PartnerAuthenticationError,
        )

    async def test_serverNoSubjectAltName(self) -> None:
        """
        A secondary whose certificate has no subjectAltName is refused by the
        primary, although Twisted's own check only logs it.
        """
        await self.assertClientRefuses(
            self.ca.issue(SECONDARY),
            ["no subjectAltName"],
            kind="refused",
            error=PartnerAuthenticationError,
        )
        self.assertEqual(len(self.flushLoggedErrors(CertificateError)), 1)

    async def test_serverIPAsDNSName(self) -> None:
        """A secondary with its IP address as a DNS name is refused by the primary."""
        await self.assertClientRefuses(
            self.ca.issue("secondary", ipsAsDNS=["127.0.0.1"]),
            ["Invalid DNS pattern"],
            expects="127.0.0.1",
            kind="refused",
            error=PartnerAuthenticationError,
        )
        self.assertEqual(len(self.flushLoggedErrors(CertificateError)), 1)

    async def test_serverExpired(self) -> None:
        """An expired secondary certificate fails the primary's handshake."""
        await self.assertClientRefuses(
            expired(self.ca, dns=[SECONDARY]), ["certificate verify failed"]
        )

    async def test_serverOtherCA(self) -> None:
        """A secondary certified by another CA fails the primary's handshake."""
        await self.assertClientRefuses(
            self.stranger.issue("secondary", dns=[SECONDARY]),
            ["certificate verify failed"],
            serverTrusted=[self.stranger, self.ca],
        )

    async def test_serverWrongEKU(self) -> None:
        """A secondary certificate only good for clients fails the primary's handshake."""
        await self.assertClientRefuses(
            self.ca.issue("secondary", dns=[SECONDARY], extendedKeyUsage=CLIENT_ONLY),
            ["certificate verify failed"],
        )

    async def test_plaintextServer(self) -> None:
        """A listener that answers in clear fails the primary's handshake."""
        plain = PlainGreeter(b"220 dhcp6ha partner port, no TLS here\r\n")
        port: IListeningPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: plain)
        )
        self.addCleanup(port.stopListening)
        client, result = await self.connect(self.primaryLeaf, SECONDARY, port.getHost().port)
        self.assertIsInstance(result, PartnerHandshakeError)
        await self.closed("outgoing")
        await plain.lost
        self.assertEqual(client.built, [])
        event = self.event("outgoing")
        self.assertEqual(event["partnerEvent"], "handshakeFailed")
        self.assertIn("TLS error", event["reason"])


def deferLaterZero() -> Deferred[None]:
    """Let the reactor turn once."""
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d
