"""
Tests for L{dhcp6ha.pki}: what it writes (and that the server's own loader,
L{TLSMaterial.load}, accepts it), how it keeps, checks and refuses existing
files and directories, its command line, and one real mutual-TLS handshake
on loopback between the two certificates it made.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import stat
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP6ClientEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dhcp6ha.failover.tls import (
    AuthenticatedPartnerAddress,
    PartnerIdentity,
    TLSMaterial,
    partnerClientEndpoint,
    partnerServerEndpoint,
)
from dhcp6ha.pki import (
    DEFAULT_CA_DAYS,
    DEFAULT_DAYS,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    PKIError,
    ServerSpec,
    main,
    makePKI,
    parseServer,
)
from tests.certs import SERVER_ONLY, CertificateAuthority

reactor: Any = globalReactor

PRIMARY = "primary.dhcp6ha.test"
SECONDARY = "secondary.dhcp6ha.test"
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def pair() -> list[ServerSpec]:
    return [parseServer("primary=" + PRIMARY), parseServer("secondary=" + SECONDARY)]


def readCertificate(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def readBytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def contents(directory: str) -> dict[str, bytes]:
    """Every file's content (a symbolic link's target)."""
    found = {}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        found[name] = os.readlink(path).encode() if os.path.islink(path) else readBytes(path)
    return found


FILES = [
    "ca-key.pem",
    "ca.pem",
    "primary-key.pem",
    "primary.pem",
    "secondary-key.pem",
    "secondary.pem",
]


class ParseServerTests(SynchronousTestCase):
    """C{--server NAME=IDENTITY[,IDENTITY...]}."""

    def test_dnsAndIP(self) -> None:
        """Identities are DNS names or IP addresses, canonicalised, without duplicates."""
        spec = parseServer("secondary=Secondary.DHCP6HA.test.,::1,0:0::1,192.0.2.7")
        self.assertEqual(spec.name, "secondary")
        self.assertEqual(
            spec.identities,
            (
                PartnerIdentity.parse(SECONDARY),
                PartnerIdentity.parse("::1"),
                PartnerIdentity.parse("192.0.2.7"),
            ),
        )
        self.assertEqual(
            (spec.certificateFile, spec.keyFile), ("secondary.pem", "secondary-key.pem")
        )

    def test_refused(self) -> None:
        """Bad names and identities are refused with the reason."""
        for text, fragment in [
            ("primary", "expected NAME=IDENTITY"),
            ("=a.test", "server name ''"),
            ("../x=a.test", "server name '../x'"),
            ("ca=a.test", "clash"),
            ("CA=a.test", "clash"),
            ("primary-key=a.test", "clash"),
            ("primary=", "empty"),
            ("primary=*.test", "wildcard"),
            ("primary=[::1]", "brackets"),
            ("primary=a.test,,b.test", "empty"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parseServer(text)
            self.assertIn(fragment, str(raised.exception), text)


class MakeTests(SynchronousTestCase):
    """A new directory: a CA and a certificate per server, as the server wants them."""

    def setUp(self) -> None:
        self.directory = os.path.join(self.mktemp(), "pki")
        self.results = makePKI(self.directory, pair(), now=NOW)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def test_files(self) -> None:
        """Six files; a 0700 directory, 0600 keys, 0644 certificates; nothing else left."""
        self.assertEqual(sorted(os.listdir(self.directory)), FILES)
        self.assertEqual(mode(self.directory), 0o700)
        for name in FILES:
            self.assertEqual(mode(self.path(name)), 0o600 if "key" in name else 0o644, name)
        self.assertEqual(
            [(os.path.basename(r.path), r.action) for r in self.results],
            [
                ("ca.pem", "created"),
                ("ca-key.pem", "created"),
                ("primary.pem", "created"),
                ("primary-key.pem", "created"),
                ("secondary.pem", "created"),
                ("secondary-key.pem", "created"),
            ],
        )

    def test_loadedByServer(self) -> None:
        """L{TLSMaterial.load}, as the server calls it, accepts each server's files."""
        for name in ("primary", "secondary"):
            material = TLSMaterial.load(
                self.path(name + ".pem"), self.path(name + "-key.pem"), self.path("ca.pem")
            )
            self.assertEqual(material.chain, ())
            self.assertEqual(len(material.authorities), 1)
            self.assertIsNone(material.validityProblem(NOW.timestamp()))

    def test_serverCertificate(self) -> None:
        """P-256, SHA-256, SAN DNS, EKU serverAuth+clientAuth, not a CA, validity as asked."""
        certificate = readCertificate(self.path("primary.pem"))
        ca = readCertificate(self.path("ca.pem"))
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.assertEqual(key.curve.name, "secp256r1")
        assert certificate.signature_hash_algorithm is not None
        self.assertEqual(certificate.signature_hash_algorithm.name, hashes.SHA256.name)
        certificate.verify_directly_issued_by(ca)
        extensions = certificate.extensions
        self.assertEqual(
            extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName),
            [PRIMARY],
        )
        self.assertEqual(
            list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        constraints = extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertFalse(constraints.value.ca)
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature)
        self.assertFalse(usage.key_cert_sign)
        self.assertLess(certificate.not_valid_before_utc, NOW)
        self.assertEqual(certificate.not_valid_after_utc, NOW + DEFAULT_DAYS * DAY)
        self.assertNotEqual(
            certificate.serial_number, readCertificate(self.path("secondary.pem")).serial_number
        )

    def test_caCertificate(self) -> None:
        """The CA: self-signed, P-256, CA:TRUE with path length 0, signs certificates."""
        ca = readCertificate(self.path("ca.pem"))
        ca.verify_directly_issued_by(ca)
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertTrue(constraints.value.ca)
        self.assertEqual(constraints.value.path_length, 0)
        self.assertTrue(ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
        self.assertEqual(ca.not_valid_after_utc, NOW + DEFAULT_CA_DAYS * DAY)
        key = serialization.load_pem_private_key(readBytes(self.path("ca-key.pem")), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.assertEqual(key.public_key(), ca.public_key())

    def test_keysUnencryptedPKCS8(self) -> None:
        """Keys are unencrypted PKCS#8 PEM (the server refuses encrypted keys)."""
        for name in ("ca-key.pem", "primary-key.pem", "secondary-key.pem"):
            data = readBytes(self.path(name))
            self.assertTrue(data.startswith(b"-----BEGIN PRIVATE KEY-----\n"), name)

    def test_keptAsTheyAre(self) -> None:
        """A second run changes nothing and says each file was kept."""
        before = contents(self.directory)
        results = makePKI(self.directory, pair(), now=NOW + DAY)
        self.assertEqual(contents(self.directory), before)
        self.assertEqual({r.action for r in results}, {"kept"})
        self.assertIn("DNS:" + PRIMARY, str(results[2]))

    def test_missingServerMadeWithSameCA(self) -> None:
        """A server whose files are gone gets new ones from the CA that is there."""
        before = contents(self.directory)
        os.unlink(self.path("secondary.pem"))
        os.unlink(self.path("secondary-key.pem"))
        results = makePKI(self.directory, pair(), now=NOW + DAY)
        after = contents(self.directory)
        for name in ("ca.pem", "ca-key.pem", "primary.pem", "primary-key.pem"):
            self.assertEqual(after[name], before[name], name)
        self.assertNotEqual(after["secondary-key.pem"], before["secondary-key.pem"])
        self.assertEqual(
            [r.action for r in results], ["kept", "kept", "kept", "kept", "created", "created"]
        )
        TLSMaterial.load(
            self.path("secondary.pem"), self.path("secondary-key.pem"), self.path("ca.pem")
        )

    def test_thirdServer(self) -> None:
        """Another server can be added later; the others are kept."""
        servers = [*pair(), parseServer("spare=spare.dhcp6ha.test,2001:db8::7")]
        makePKI(self.directory, servers, now=NOW)
        certificate = readCertificate(self.path("spare.pem"))
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            sans.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("2001:db8::7")]
        )

    def test_force(self) -> None:
        """C{force} replaces everything: a new CA and new keys, still loadable."""
        before = contents(self.directory)
        results = makePKI(self.directory, pair(), force=True, now=NOW)
        after = contents(self.directory)
        self.assertEqual(sorted(after), FILES)
        for name in FILES:
            self.assertNotEqual(after[name], before[name], name)
        self.assertEqual({r.action for r in results}, {"replaced"})
        TLSMaterial.load(
            self.path("primary.pem"), self.path("primary-key.pem"), self.path("ca.pem")
        )

    def test_withoutCAKey(self) -> None:
        """
        With the CA key put away, a complete directory is still fine; a
        missing certificate cannot be made, and nothing is written.
        """
        os.unlink(self.path("ca-key.pem"))
        results = makePKI(self.directory, pair(), now=NOW)
        self.assertEqual(results[1].action, "absent")
        os.unlink(self.path("secondary.pem"))
        os.unlink(self.path("secondary-key.pem"))
        before = contents(self.directory)
        with self.assertRaises(PKIError) as raised:
            makePKI(self.directory, pair(), now=NOW)
        self.assertIn(
            "ca-key.pem: not there, so no certificate can be issued for secondary",
            str(raised.exception),
        )
        self.assertEqual(contents(self.directory), before)

    def assertRefused(
        self, fragment: str, servers: list[ServerSpec] | None = None, **kwargs: Any
    ) -> None:
        """makePKI refuses, naming C{fragment}, and writes nothing."""
        before = contents(self.directory)
        with self.assertRaises(PKIError) as raised:
            makePKI(self.directory, pair() if servers is None else servers, **kwargs)
        self.assertIn(fragment, str(raised.exception))
        self.assertEqual(contents(self.directory), before)

    def test_newIdentityRefused(self) -> None:
        """An existing certificate without an identity now asked for is refused, not kept."""
        servers = [
            parseServer("primary=" + PRIMARY + ",::1"),
            parseServer("secondary=" + SECONDARY),
        ]
        self.assertRefused("primary.pem: does not carry IP:::1; remove", servers, now=NOW)

    def test_expiredRefused(self) -> None:
        """An expired certificate, or CA, is refused."""
        self.assertRefused("primary.pem: expired at", now=NOW + (DEFAULT_DAYS + 1) * DAY)
        self.assertRefused("ca.pem: expired at", now=NOW + (DEFAULT_CA_DAYS + 1) * DAY)

    def test_onlyOneOfAPairRefused(self) -> None:
        """A certificate without its key (or a key without its certificate) is refused."""
        os.unlink(self.path("primary-key.pem"))
        self.assertRefused("primary.pem: there, but not", now=NOW)
        os.unlink(self.path("ca.pem"))
        self.assertRefused("ca-key.pem: a CA key without its certificate", now=NOW)

    def test_serverWithoutCARefused(self) -> None:
        """Server files with no CA: refused rather than a CA they do not chain to."""
        os.unlink(self.path("ca.pem"))
        os.unlink(self.path("ca-key.pem"))
        self.assertRefused("primary.pem: there, but there is no CA", now=NOW)

    def test_foreignCARefused(self) -> None:
        """A certificate that does not chain to ca.pem is refused."""
        other = os.path.join(self.mktemp(), "pki")
        makePKI(other, pair(), now=NOW)
        for name in ("primary.pem", "primary-key.pem"):
            os.replace(os.path.join(other, name), self.path(name))
        self.assertRefused("was not issued by a CA in", now=NOW)

    def test_mismatchedKeyRefused(self) -> None:
        """A key that does not belong to its certificate is refused."""
        os.replace(self.path("secondary-key.pem"), self.path("primary-key.pem"))
        os.unlink(self.path("secondary.pem"))
        self.assertRefused("does not match the certificate", now=NOW)

    def test_serverOnlyUsageRefused(self) -> None:
        """A certificate with serverAuth only (the primary is also a TLS client) is refused."""
        ca = CertificateAuthority()
        leaf = ca.issue(dns=[PRIMARY], extendedKeyUsage=SERVER_ONLY)
        for name, data in [
            ("ca.pem", ca.pem),
            ("primary.pem", leaf.certPEM),
            ("primary-key.pem", leaf.keyPEM),
        ]:
            with open(self.path(name), "wb") as f:
                f.write(data)
        os.chmod(self.path("primary-key.pem"), 0o600)
        os.unlink(self.path("ca-key.pem"))
        self.assertRefused(
            "extended key usage lacks serverAuth or clientAuth",
            [parseServer("primary=" + PRIMARY)],
        )

    def test_openKeyRefused(self) -> None:
        """A key readable by group or others is refused with the fix."""
        os.chmod(self.path("primary-key.pem"), 0o640)
        self.assertRefused("primary-key.pem: a private key readable by others", now=NOW)
        self.assertRefused("chmod 600", now=NOW)

    def test_writableFileRefused(self) -> None:
        """A certificate that others may rewrite (the CA most of all) is refused."""
        os.chmod(self.path("ca.pem"), 0o666)
        self.assertRefused("ca.pem: writable by others than its owner", now=NOW)

    def test_symlinkNotWrittenThrough(self) -> None:
        """A dangling symbolic link where a file should go is refused, never followed."""
        os.unlink(self.path("secondary.pem"))
        os.unlink(self.path("secondary-key.pem"))
        target = os.path.abspath(self.mktemp())
        os.symlink(target, self.path("secondary-key.pem"))
        self.assertRefused("secondary-key.pem: a symbolic link to nothing", now=NOW)
        self.assertFalse(os.path.lexists(target))

    def test_capByCA(self) -> None:
        """A certificate issued late in the CA's life ends with the CA."""
        os.unlink(self.path("secondary.pem"))
        os.unlink(self.path("secondary-key.pem"))
        later = NOW + (DEFAULT_CA_DAYS - 10) * DAY
        results = makePKI(self.directory, [parseServer("secondary=" + SECONDARY)], now=later)
        ca = readCertificate(self.path("ca.pem"))
        self.assertEqual(
            readCertificate(self.path("secondary.pem")).not_valid_after_utc, ca.not_valid_after_utc
        )
        self.assertIn("cut short", str(results[2]))


class DirectoryTests(SynchronousTestCase):
    """Where the files may go."""

    def test_worldWritableRefused(self) -> None:
        """A directory others may write in is refused, sticky bit or not; nothing is written."""
        for directoryMode in (0o777, 0o1777, 0o770):
            directory = self.mktemp()
            os.mkdir(directory)
            os.chmod(directory, directoryMode)
            with self.assertRaises(PKIError) as raised:
                makePKI(directory, pair(), now=NOW)
            self.assertIn("could plant their own CA", str(raised.exception))
            if directoryMode & stat.S_ISVTX:
                self.assertIn("sticky bit does not prevent that", str(raised.exception))
            self.assertEqual(os.listdir(directory), [])

    def test_existingDirectoryKeptMode(self) -> None:
        """An existing private directory is used as it is."""
        directory = self.mktemp()
        os.mkdir(directory)
        os.chmod(directory, 0o755)
        makePKI(directory, pair(), now=NOW)
        self.assertEqual(mode(directory), 0o755)
        self.assertEqual(sorted(os.listdir(directory)), FILES)

    def test_otherOwnerRefused(self) -> None:
        """A directory that belongs to another user is refused."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to give a directory to another user")
        directory = self.mktemp()
        os.mkdir(directory, 0o700)
        os.chown(directory, 54321, -1)
        with self.assertRaises(PKIError) as raised:
            makePKI(directory, pair(), now=NOW)
        self.assertIn("belongs to uid 54321", str(raised.exception))

    def test_notADirectory(self) -> None:
        """A file where the directory should be is refused."""
        path = self.mktemp()
        with open(path, "w"):
            pass
        with self.assertRaises(PKIError) as raised:
            makePKI(path, pair(), now=NOW)
        self.assertIn("is not a directory", str(raised.exception))

    def test_requestChecked(self) -> None:
        """Contradictory requests are refused before the directory is made."""
        directory = self.mktemp()
        for servers, kwargs, fragment in [
            ([], {}, "at least one server"),
            (pair() + [parseServer("primary=other.test")], {}, "given twice"),
            ([parseServer("a=same.test"), parseServer("b=same.test")], {}, "given to both a and b"),
            (pair(), {"days": 0}, "days must be from 1"),
            (pair(), {"caDays": 36501}, "CA days must be from 1"),
        ]:
            with self.assertRaises(ValueError) as raised:
                makePKI(directory, servers, now=NOW, **kwargs)
            self.assertIn(fragment, str(raised.exception))
        self.assertFalse(os.path.exists(directory))
        with self.assertRaises(ValueError) as raised:
            makePKI(directory, pair(), days=400, caDays=300, now=NOW)
        self.assertIn("CA must be valid at least as long", str(raised.exception))


class MainTests(SynchronousTestCase):
    """The command line."""

    def pki(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=out, stderr=err, now=NOW)
        return status, out.getvalue(), err.getvalue()

    def test_makeThenQuiet(self) -> None:
        """It says what it made; with --quiet, a run that makes nothing says nothing."""
        directory = os.path.join(self.mktemp(), "pki")
        argv = [directory, "--server", "primary=" + PRIMARY, "--server", "secondary=" + SECONDARY]
        status, out, err = self.pki(*argv, "--ip", "secondary=::1", "--days", "30")
        self.assertEqual((status, err), (EXIT_OK, ""))
        self.assertEqual(len(out.splitlines()), 6)
        self.assertIn(
            os.path.join(directory, "secondary.pem") + ": created, DNS:" + SECONDARY + ", IP:::1",
            out,
        )
        certificate = readCertificate(os.path.join(directory, "primary.pem"))
        self.assertEqual(certificate.not_valid_after_utc, NOW + 30 * DAY)
        self.assertEqual(self.pki(*argv, "--quiet"), (EXIT_OK, "", ""))
        status, out, err = self.pki(*argv)
        self.assertEqual(status, EXIT_OK)
        self.assertIn(": kept, ", out)

    def test_problem(self) -> None:
        """A problem with the directory: status 1 and the reason."""
        directory = self.mktemp()
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        status, out, err = self.pki(directory, "--server", "primary=" + PRIMARY)
        self.assertEqual(status, EXIT_PROBLEM)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("dhcp6ha-pki: " + directory + ": writable by others"), err)

    def test_usage(self) -> None:
        """Usage errors: status 2, the reason, nothing made."""
        directory = self.mktemp()
        for argv, fragment in [
            ([directory], "--server"),
            ([directory, "--server", "primary"], "expected NAME=IDENTITY"),
            (
                [directory, "--server", "primary=a.test", "--ip", "primary=a.test"],
                "not an IP address",
            ),
            ([directory, "--server", "primary=a.test", "--ip", "other=::1"], "no --server other"),
            ([directory, "--server", "a=x.test", "--server", "b=x.test"], "given to both"),
            ([directory, "--server", "a=x.test", "--days", "0"], "days must be from 1"),
        ]:
            status, out, err = self.pki(*argv)
            self.assertEqual(status, EXIT_USAGE, argv)
            self.assertIn(fragment, err)
        self.assertFalse(os.path.exists(directory))


class Recorder(Protocol):
    """Says C{greeting} once connected, records what it receives."""

    def __init__(self, greeting: bytes, expected: bytes) -> None:
        self.greeting = greeting
        self.expected = expected
        self.received = b""
        self.heard: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == self.expected and not self.heard.called:
            self.heard.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


class RecordingFactory(Factory):
    def __init__(self, greeting: bytes, expected: bytes) -> None:
        self.greeting = greeting
        self.expected = expected
        self.built: list[Recorder] = []
        self.addresses: list[IAddress] = []

    def buildProtocol(self, addr: IAddress) -> Recorder:
        self.addresses.append(addr)
        protocol = Recorder(self.greeting, self.expected)
        protocol.factory = self
        self.built.append(protocol)
        return protocol


class HandshakeTests(TestCase):
    """
    The certificates written authenticate the pair to each other over real
    TLS on [::1], through the partner endpoints the failover service uses.
    """

    timeout = 30

    async def test_pairAuthenticates(self) -> None:
        """The secondary accepts the primary by DNS name, and the primary the secondary."""
        directory = os.path.join(self.mktemp(), "pki")
        makePKI(directory, pair())

        def load(name: str) -> TLSMaterial:
            return TLSMaterial.load(
                os.path.join(directory, name + ".pem"),
                os.path.join(directory, name + "-key.pem"),
                os.path.join(directory, "ca.pem"),
            )

        serverFactory = RecordingFactory(b"secondary here", b"primary here")
        listening = partnerServerEndpoint(
            reactor,
            load("secondary"),
            [PartnerIdentity.parse(PRIMARY)],
            TCP6ServerEndpoint(reactor, 0, interface="::1"),
            handshakeTimeout=5,
        )
        port = await listening.listen(serverFactory)
        self.addCleanup(port.stopListening)
        connecting = partnerClientEndpoint(
            reactor,
            load("primary"),
            PartnerIdentity.parse(SECONDARY),
            TCP6ClientEndpoint(reactor, "::1", port.getHost().port, timeout=5),
            handshakeTimeout=5,
        )
        clientFactory = RecordingFactory(b"primary here", b"secondary here")
        client = await connecting.connect(clientFactory).addTimeout(10, reactor)
        assert isinstance(client, Recorder)
        await client.heard.addTimeout(10, reactor)
        while not serverFactory.built:
            await deferLater()
        [server] = serverFactory.built
        await server.heard.addTimeout(10, reactor)
        [serverSees] = serverFactory.addresses
        assert isinstance(serverSees, AuthenticatedPartnerAddress)
        self.assertEqual(serverSees.identity, PartnerIdentity.parse(PRIMARY))
        [clientSees] = clientFactory.addresses
        assert isinstance(clientSees, AuthenticatedPartnerAddress)
        self.assertEqual(clientSees.identity, PartnerIdentity.parse(SECONDARY))
        assert client.transport is not None
        client.transport.loseConnection()
        await client.lost.addTimeout(10, reactor)
        await server.lost.addTimeout(10, reactor)


def deferLater() -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d
