# -*- test-case-name: tests.test_tls -*-
"""
Partner authentication: the failover connection is AMP inside mutual TLS
(RFC 7031 section 8: each peer identifies the other, authenticates that
identification and validates that it is the partner it means to talk to).

Both sides present a certificate, both check the other's chain against the
configured CA and then, once the handshake has completed, check the other's
I{identity} (a DNS name or an IP address, with C{service_identity}) against
the configured partner identity.  Twisted does the chain; the identity check
is ours on both sides, because (DESIGN.md, "Partner authentication"):

  - on the client side C{optionsForClientTLS} only I{logs} a
    C{service_identity.CertificateError} (no subjectAltName at all, an IP
    address written as a DNS name) and lets the connection through;
  - on the server side Twisted checks the client's chain, never its identity.

Layering, from the socket up::

    TCP transport
      TLSMemoryBIOProtocol          (Twisted: chain, TLS >= 1.2, EKU per role)
        AuthenticatedPartnerProtocol (this module: timeouts, identity check)
          the wrapped protocol       (AMP), built only after the check passed

The wrapped protocol does not exist before the identity check has passed: its
factory's C{buildProtocol} is called from C{handshakeCompleted}, so no byte,
and no AMP box, can reach it earlier, even when (TLS 1.3) the client's
Finished and its first box arrive in one read.  Authentication needs nothing
but the local files: no CRL or OCSP fetch that a network partition could
block (RFC 7031 section 8, second paragraph).

With TLS 1.3 the client finishes its handshake one flight before the
server: a secondary that refuses the primary's certificate does so after the
primary's C{connect} has fired, and the primary's protocol then sees
C{connectionLost} (logged here as a C{tlsError} with the peer's alert).  The
failover protocol's own greeting (Connect / ConnectReply) is what tells the
primary it was accepted.

Public API::

    identity = PartnerIdentity.parse("partner.example.net")   # or "192.0.2.7", "::1"
    material = TLSMaterial.load(certPath, keyPath, caPath)
    client = partnerClientEndpoint(reactor, material, identity, TCP6ClientEndpoint(...))
    client.connect(ampFactory)   # fires with the AMP protocol once authenticated
    server = partnerServerEndpoint(reactor, material, [identity], TCP6ServerEndpoint(...))
    server.listen(ampFactory)    # ampFactory.buildProtocol gets an AuthenticatedPartnerAddress
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from attrs import define, field, frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import wrapClientTLS, wrapServerTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    ILoggingContext,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    # Public through optionsForClientTLS's signature, defined only here.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "DEFAULT_EXPIRY_WARNING",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "AuthenticatedPartnerAddress",
    "AuthenticatedPartnerFactory",
    "AuthenticatedPartnerProtocol",
    "PartnerAuthenticationError",
    "PartnerClientEndpoint",
    "PartnerConnectionError",
    "PartnerConnectionStats",
    "PartnerHandshakeError",
    "PartnerIdentity",
    "PartnerServerEndpoint",
    "PartnerTimeout",
    "TLSMaterial",
    "TLSMaterialError",
    "partnerClientEndpoint",
    "partnerServerEndpoint",
    "verifyPartner",
]

#: Seconds from TCP connection to a passed identity check.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: Seconds without a received byte, once authenticated, before the connection
#: is closed; RFC 8156 FO_KEEPALIVE_TIME.  The failover protocol must send
#: something (CONTACT) well within it.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Seconds before its end from which this server's own certificate is
#: reported as expiring soon (L{TLSMaterial.validityProblem}): 30 days.
DEFAULT_EXPIRY_WARNING = 30 * 86400.0

#: Bytes held, before the identity check, for later delivery.  With Twisted's
#: TLSMemoryBIOProtocol nothing arrives before the check at all (see
#: L{AuthenticatedPartnerProtocol.dataReceived}); the cap bounds what a
#: different TLS transport could make us hold.
_MAX_HELD_BEFORE_AUTHENTICATION = 256 * 1024


# Typed views of the untyped Twisted constructors used here (mypy --strict).
_failure = cast(Callable[[BaseException], Failure], Failure)
_privateCertificate = cast(
    Callable[[Certificate, KeyPair], PrivateCertificate],
    PrivateCertificate.fromCertificateAndKeyPair,
)
_trustRoot = cast("Callable[[list[Certificate]], IOpenSSLTrustRoot]", trustRootFromCertificates)


def _twistedCertificate(certificate: x509.Certificate) -> Certificate:
    return Certificate.load(
        certificate.public_bytes(serialization.Encoding.DER), crypto.FILETYPE_ASN1
    )


# ---------------------------------------------------------------------------
# Errors


class PartnerConnectionError(Exception):
    """
    A partner connection that did not become, or stopped being, usable.

    @ivar peer: the peer's address, as text (C{"192.0.2.7:647"},
        C{"[::1]:647"}).
    @ivar reason: what went wrong, in words.
    """

    def __init__(self, peer: str, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(peer, reason)

    def __str__(self) -> str:
        return self.peer + ": " + self.reason


class PartnerAuthenticationError(PartnerConnectionError):
    """The TLS handshake completed but the peer is not the configured partner."""


class PartnerHandshakeError(PartnerConnectionError):
    """
    The TLS handshake failed (no or untrusted certificate, expired
    certificate, a peer that does not speak TLS, ...) or the connection was
    lost before it completed.
    """


class PartnerTimeout(PartnerConnectionError):
    """The TLS handshake took too long, or an authenticated partner went idle."""


class TLSMaterialError(Exception):
    """
    A certificate, key or CA file that cannot be used.

    @ivar path: the file (or, with L{TLSMaterial.fromPEM}, the name given for
        it).
    @ivar reason: what is wrong, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(path, reason)

    def __str__(self) -> str:
        return self.path + ": " + self.reason


# ---------------------------------------------------------------------------
# Partner identity

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@frozen
class PartnerIdentity:
    """
    Who the partner must be: a DNS name or an IP address that its certificate
    must carry as a subjectAltName of that type.

    @ivar name: the canonical text: a lower-case DNS name without trailing
        dot, or an IP address in its compressed form.
    @ivar address: the IP address, or C{None} for a DNS name.
    """

    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @classmethod
    def parse(cls, text: str) -> PartnerIdentity:
        """
        Parse a configured partner identity.

        @param text: a DNS name (C{partner.example.net}) or an IPv4 or IPv6
            address (C{192.0.2.7}, C{2001:db8::7}).
        @raise ValueError: with the reason, when C{text} is neither.
        """
        if not text:
            raise ValueError("empty: give the partner's DNS name or IP address")
        if any(c.isspace() for c in text):
            raise ValueError(repr(text) + " contains whitespace")
        if text.startswith("[") or text.endswith("]"):
            raise ValueError(repr(text) + ": write an IPv6 address without brackets")
        if "%" in text:
            raise ValueError(
                repr(text) + ": a zone index (%...) cannot appear in a certificate;"
                " give the address without it"
            )
        if "/" in text:
            raise ValueError(repr(text) + " is a network or a path, not a name or an address")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return cls(str(address), address)
        if ":" in text:
            raise ValueError(
                repr(text) + " is not a valid IPv6 address"
                " (a DNS name cannot contain ':', and no port goes here)"
            )
        if not text.isascii():
            raise ValueError(
                repr(text) + ": a non-ASCII DNS name must be given in its A-label form (xn--...)"
            )
        if "*" in text:
            raise ValueError(repr(text) + ": a wildcard cannot identify one partner")
        name = text.lower()
        if name.endswith("."):
            name = name[:-1]
        if len(name) > 253:
            raise ValueError(repr(text) + ": a DNS name is at most 253 characters long")
        labels = name.split(".")
        for label in labels:
            if not label:
                raise ValueError(repr(text) + ": empty label (leading dot or two dots in a row)")
            if len(label) > 63:
                raise ValueError(repr(text) + ": label " + repr(label) + " is over 63 characters")
            if not _LABEL.match(label):
                raise ValueError(
                    repr(text) + ": label " + repr(label) + " may hold only letters,"
                    " digits and hyphens, and may not begin or end with a hyphen"
                )
        if labels[-1].isdigit():
            raise ValueError(
                repr(text) + " looks like an IPv4 address but is not a valid one"
                " (and a DNS name cannot end in an all-numeric label)"
            )
        return cls(name, None)

    def __str__(self) -> str:
        return self.name

    @property
    def isIPAddress(self) -> bool:
        """C{True} for an IP address identity, C{False} for a DNS name."""
        return self.address is not None

    def verify(self, connection: SSL.Connection) -> None:
        """
        Check the peer certificate of an established TLS connection against
        this identity, with C{service_identity}.

        @raise PartnerAuthenticationError: (with an empty C{peer}) if the peer
            has no certificate, if the certificate is not valid for this
            identity (C{VerificationError}), or if C{service_identity} finds it
            malformed (C{CertificateError}: no subjectAltName, an IP address
            written as a DNS name, ...).
        """
        verifyPartner(connection, [self])


def _describeNames(certificate: x509.Certificate) -> str:
    """
    The identities a certificate carries, for log messages:
    C{"DNS:a.example, IP:192.0.2.7"}, or a note that it has none.
    """
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName (subject " + certificate.subject.rfc4514_string() + ")"
    parts = []
    for entry in sans:
        if isinstance(entry, x509.DNSName):
            parts.append("DNS:" + entry.value)
        elif isinstance(entry, x509.IPAddress):
            parts.append("IP:" + str(entry.value))
        else:
            parts.append(type(entry).__name__ + ":" + str(entry.value))
    return ", ".join(parts) if parts else "an empty subjectAltName"


def verifyPartner(
    connection: SSL.Connection, identities: Sequence[PartnerIdentity]
) -> PartnerIdentity:
    """
    Find which of C{identities} the peer of C{connection} proves to be.

    C{CertificateError} is treated exactly like C{VerificationError}: the
    peer is refused.

    @return: the first identity the peer certificate is valid for.
    @raise PartnerAuthenticationError: (with an empty C{peer}) if there is no
        peer certificate or it is valid for none of C{identities}.
    """
    peerCertificate = connection.get_peer_certificate()
    if peerCertificate is None:
        raise PartnerAuthenticationError("", "the peer presented no certificate")
    names = _describeNames(peerCertificate.to_cryptography())
    for identity in identities:
        try:
            if identity.address is None:
                verify_hostname(connection, identity.name)
            else:
                verify_ip_address(connection, identity.name)
        except CertificateError as e:
            raise PartnerAuthenticationError(
                "", "service_identity refuses the certificate (" + names + "): " + str(e)
            ) from e
        except VerificationError:
            continue
        return identity
    expected = " or ".join(
        ("IP address " if i.address is not None else "DNS name ") + i.name for i in identities
    )
    raise PartnerAuthenticationError(
        "", "certificate (" + names + ") is not valid for the partner's " + expected
    )


# ---------------------------------------------------------------------------
# Certificates and keys

_SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


def _readFile(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSMaterialError(path, "no such file") from None
    except IsADirectoryError:
        raise TLSMaterialError(path, "is a directory, not a file") from None
    except PermissionError:
        raise TLSMaterialError(path, "permission denied (cannot read it)") from None
    except OSError as e:
        raise TLSMaterialError(path, "cannot read it: " + (e.strerror or str(e))) from None


def _parseCertificates(source: str, data: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        if b"PRIVATE KEY-----" in data:
            raise TLSMaterialError(
                source, "holds a private key, not " + what + " (are the files swapped?)"
            )
        raise TLSMaterialError(
            source, "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSMaterialError(source, "cannot parse the PEM certificate: " + str(e)) from None


def _parseKey(source: str, data: bytes) -> _SigningKey:
    if b"PRIVATE KEY-----" not in data:
        if b"-----BEGIN CERTIFICATE-----" in data:
            raise TLSMaterialError(
                source, "holds a certificate, not a private key (are the files swapped?)"
            )
        raise TLSMaterialError(
            source, "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSMaterialError(
            source,
            "the private key is encrypted; give it unencrypted and protect the file"
            " with its permissions",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise TLSMaterialError(source, "cannot parse the private key: " + str(e)) from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | dsa.DSAPrivateKey,
    ):
        raise TLSMaterialError(source, "a " + type(key).__name__ + " cannot sign TLS handshakes")
    return key


def _issuedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chainsTo(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    authorities: Sequence[x509.Certificate],
) -> bool:
    """
    Whether C{leaf}, through some of C{intermediates}, was signed by one of
    C{authorities}.  Names and signatures only: validity periods and
    extensions are checked by OpenSSL during each handshake.
    """
    current = leaf
    remaining = list(intermediates)
    while True:
        if any(current == a or _issuedBy(current, a) for a in authorities):
            return True
        for index, candidate in enumerate(remaining):
            if _issuedBy(current, candidate):
                current = remaining.pop(index)
                break
        else:
            return False


def _publicKeyBytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _describeSSLError(error: SSL.Error) -> str:
    """The reasons inside an OpenSSL error, e.g. C{"certificate verify failed"}."""
    reasons = []
    if error.args and isinstance(error.args[0], list):
        for entry in error.args[0]:
            if isinstance(entry, tuple) and len(entry) == 3 and entry[2]:
                reasons.append(str(entry[2]))
    return "; ".join(reasons) if reasons else (str(error) or type(error).__name__)


@frozen(eq=False, repr=False)
class TLSMaterial:
    """
    This server's certificate and key, and the authorities its partner's
    certificate must chain to.

    @ivar certificate: this server's certificate with its private key.
    @ivar chain: intermediate certificates sent after it (the certificate
        file's second and later certificates).
    @ivar authorities: the trusted CA certificates (all those in the CA file).
    @ivar notValidBefore: start of this server's certificate validity (UTC).
    @ivar notValidAfter: end of this server's certificate validity (UTC).
    """

    certificate: PrivateCertificate
    chain: tuple[Certificate, ...]
    authorities: tuple[Certificate, ...]
    notValidBefore: datetime.datetime
    notValidAfter: datetime.datetime

    @classmethod
    def load(cls, certPath: str, keyPath: str, caPath: str) -> TLSMaterial:
        """
        Read and check the PEM files.

        @param certPath: this server's certificate, optionally followed by
            intermediate CA certificates.
        @param keyPath: its private key, unencrypted (PKCS#8, PKCS#1 or SEC1
            PEM); it may be the same file as C{certPath}.
        @param caPath: the CA certificate(s) the partner's certificate must
            chain to; this server's certificate must chain to one of them too
            (the pair shares its CA).
        @raise TLSMaterialError: naming the file and what is wrong with it.
        """
        certPEM = _readFile(certPath)
        keyPEM = _readFile(keyPath)
        caPEM = _readFile(caPath)
        return cls.fromPEM(
            certPEM, keyPEM, caPEM, certSource=certPath, keySource=keyPath, caSource=caPath
        )

    @classmethod
    def fromPEM(
        cls,
        certPEM: bytes,
        keyPEM: bytes,
        caPEM: bytes,
        *,
        certSource: str = "certificate",
        keySource: str = "private key",
        caSource: str = "CA certificate",
    ) -> TLSMaterial:
        """
        Like L{load}, from the files' contents; the C{*Source} names are used
        in errors.

        @raise TLSMaterialError: naming the source and what is wrong.
        """
        certificates = _parseCertificates(certSource, certPEM, "a certificate")
        leaf, intermediates = certificates[0], certificates[1:]
        key = _parseKey(keySource, keyPEM)
        authorities = _parseCertificates(caSource, caPEM, "a CA certificate")
        if _publicKeyBytes(leaf.public_key()) != _publicKeyBytes(key.public_key()):
            raise TLSMaterialError(
                keySource,
                "the private key does not match the certificate in "
                + certSource
                + " ("
                + leaf.subject.rfc4514_string()
                + ")",
            )
        if not _chainsTo(leaf, intermediates, authorities):
            raise TLSMaterialError(
                certSource,
                "the certificate ("
                + leaf.subject.rfc4514_string()
                + ", issuer "
                + leaf.issuer.rfc4514_string()
                + ") was not issued by a CA in "
                + caSource
                + "; both partners' certificates must chain to it",
            )
        openSSLCertificate = crypto.X509.from_cryptography(leaf)
        openSSLKey = crypto.PKey.from_cryptography_key(key)
        # Let OpenSSL judge, at its default security level, what it will
        # refuse in every handshake anyway (RSA-1024, SHA-1 signatures, ...).
        context = SSL.Context(SSL.TLS_METHOD)
        try:
            context.use_certificate(openSSLCertificate)
        except SSL.Error as e:
            raise TLSMaterialError(
                certSource, "OpenSSL refuses the certificate: " + _describeSSLError(e)
            ) from None
        try:
            context.use_privatekey(openSSLKey)
            context.check_privatekey()
        except SSL.Error as e:
            raise TLSMaterialError(
                keySource, "OpenSSL refuses the private key: " + _describeSSLError(e)
            ) from None
        return cls(
            certificate=_privateCertificate(
                _twistedCertificate(leaf),
                KeyPair.load(
                    key.private_bytes(
                        serialization.Encoding.DER,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                    crypto.FILETYPE_ASN1,
                ),
            ),
            chain=tuple(_twistedCertificate(c) for c in intermediates),
            authorities=tuple(_twistedCertificate(c) for c in authorities),
            notValidBefore=leaf.not_valid_before_utc,
            notValidAfter=leaf.not_valid_after_utc,
        )

    def __repr__(self) -> str:
        # Not Twisted's Certificate repr: it str()s bytes (BytesWarning).
        leaf: crypto.X509 = self.certificate.original
        subject = leaf.to_cryptography().subject.rfc4514_string()
        return (
            "<TLSMaterial "
            + subject
            + ", valid until "
            + self.notValidAfter.isoformat()
            + ", "
            + str(len(self.authorities))
            + " CA(s)>"
        )

    def validityProblem(self, now: float, *, warnWithin: float = 0.0) -> str | None:
        """
        Whether this server's own certificate is outside its validity period
        at C{now} (POSIX seconds, from the injected clock), or ends within
        C{warnWithin} seconds of it, for a warning at start and now and then
        while running: the partner will refuse an expired or not yet valid
        certificate, but the server can still serve its clients.

        @param warnWithin: also report a certificate that is still valid
            but expires at most this many seconds after C{now}
            (L{DEFAULT_EXPIRY_WARNING}, say); C{0} for expired or not yet
            valid only.
        @return: the problem in words, or C{None}.
        """
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        if moment < self.notValidBefore:
            return (
                "this server's certificate is not valid before " + self.notValidBefore.isoformat()
            )
        if moment > self.notValidAfter:
            return "this server's certificate expired at " + self.notValidAfter.isoformat()
        remaining = (self.notValidAfter - moment).total_seconds()
        if remaining <= warnWithin:
            days = int(remaining // 86400)
            within = (
                "in less than a day"
                if days == 0
                else "in 1 day"
                if days == 1
                else "in " + str(days) + " days"
            )
            return (
                "this server's certificate expires "
                + within
                + ", at "
                + self.notValidAfter.isoformat()
            )
        return None

    def clientOptions(self, identity: PartnerIdentity) -> IOpenSSLClientConnectionCreator:
        """
        TLS options for connecting to the partner: our certificate, the CA as
        the only trust root, C{identity} for Twisted's own check and for SNI
        (DNS names only).  Twisted's defaults otherwise (TLS >= 1.2, its
        cipher list, no session tickets).
        """
        extra: dict[str, object] = {}
        if self.chain:
            extra["extraCertChain"] = [c.original for c in self.chain]
        return optionsForClientTLS(
            identity.name,
            trustRoot=_trustRoot(list(self.authorities)),
            clientCertificate=self.certificate,
            extraCertificateOptions=extra,
        )

    def serverOptions(self) -> IOpenSSLServerConnectionCreator:
        """
        TLS options for the partner listener: our certificate, and a client
        certificate required and checked against the CA (what
        C{PrivateCertificate.options(ca)} builds, plus our intermediates).

        OpenSSL's verdict on the client's chain is left as it is; each
        connection only records why a chain was refused (expired, unknown
        CA, wrong key usage, ...), for the log of a refused handshake.  Use it
        through L{partnerServerEndpoint} or C{wrapServerTLS}: it provides
        C{IOpenSSLServerConnectionCreator}, not the older context-factory
        interface C{SSL4ServerEndpoint} wants.
        """
        return _RecordingServerOptions(
            CertificateOptions(
                privateKey=self.certificate.privateKey.original,
                certificate=self.certificate.original,
                verify=True,
                caCerts=[a.original for a in self.authorities],
                requireCertificate=True,
                extraCertChain=[c.original for c in self.chain] or None,
            )
        )


_VERIFY_CODES = {
    value: name
    for name, value in vars(SSL.X509VerificationCodes).items()
    if name.startswith("ERR_") and isinstance(value, int)
}


def _describeVerifyError(code: int, depth: int, certificate: crypto.X509) -> str:
    name = _VERIFY_CODES.get(code)
    what = name[4:].lower().replace("_", " ") if name else "X.509 error " + str(code)
    return (
        what
        + " (depth "
        + str(depth)
        + ": "
        + certificate.to_cryptography().subject.rfc4514_string()
        + ")"
    )


@implementer(IOpenSSLServerConnectionCreator)
class _RecordingServerOptions:
    """
    Server connection creator around L{CertificateOptions} whose connections
    tell their L{AuthenticatedPartnerProtocol} why OpenSSL refused the
    client's chain.  The verify mode is the context's, unchanged, and the
    callback returns OpenSSL's own verdict.
    """

    def __init__(self, options: CertificateOptions) -> None:
        self._options = options

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection: SSL.Connection = self._options.serverConnectionForTLS(tlsProtocol)
        partner = getattr(tlsProtocol, "wrappedProtocol", None)
        if isinstance(partner, AuthenticatedPartnerProtocol):
            record = partner.noteVerifyError

            def verify(
                conn: SSL.Connection, certificate: crypto.X509, code: int, depth: int, ok: int
            ) -> bool:
                if not ok:
                    record(_describeVerifyError(code, depth, certificate))
                return bool(ok)

            connection.set_verify(connection.get_context().get_verify_mode(), verify)
        return connection


# ---------------------------------------------------------------------------
# The authentication layer


@define
class PartnerConnectionStats:
    """
    Counters over the connections of one endpoint (or factory).

    @ivar authenticated: connections whose partner identity check passed.
    @ivar refused: connections whose TLS handshake completed but whose peer
        failed the identity check.
    @ivar handshakeFailed: connections lost before the TLS handshake
        completed (refused by OpenSSL, by the peer, or simply closed).
    @ivar handshakeTimeouts: connections closed because the handshake and
        identity check did not finish in time.
    @ivar idleTimeouts: authenticated connections closed for silence.
    @ivar receivedBeforeAuthentication: application bytes that reached the
        authentication layer before the identity check had passed (held or
        dropped, never delivered early).  Always 0 with Twisted's TLS.
    @ivar deliveredBeforeAuthentication: application bytes given to a wrapped
        protocol before the identity check had passed.  Must stay 0.
    """

    authenticated: int = 0
    refused: int = 0
    handshakeFailed: int = 0
    handshakeTimeouts: int = 0
    idleTimeouts: int = 0
    receivedBeforeAuthentication: int = 0
    deliveredBeforeAuthentication: int = 0


@implementer(IAddress)
@frozen
class AuthenticatedPartnerAddress:
    """
    What the wrapped factory's C{buildProtocol} receives: the peer's
    transport address and the identity it has proved.  A listener serving
    several relationships (m-to-1) picks the relationship from C{identity}.
    """

    identity: PartnerIdentity
    address: IAddress


def describeAddress(address: object) -> str:
    """C{"192.0.2.7:647"} / C{"[2001:db8::7]:647"} for TCP addresses, C{str()} otherwise."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return ("[" + host + "]" if ":" in host else host) + ":" + str(port)
    return str(address)


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(str(address).split("%")[0])
    return address


def _hostAddress(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a TCP address (unmapped, without zone), or C{None}."""
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        return _unmapped(ipaddress.ip_address(host.split("%")[0]))
    except ValueError:
        return None


def _describeMismatch(mismatch: object) -> str:
    serviceID = getattr(mismatch, "mismatched_id", None)
    hostname = getattr(serviceID, "hostname", None)
    if isinstance(hostname, bytes):
        return "DNS name " + hostname.decode("ascii", "replace")
    ip = getattr(serviceID, "ip", None)
    if ip is not None:
        return "IP address " + str(ip)
    return str(mismatch)


def describeFailure(reason: Failure) -> str:
    """A connection-loss reason in words, OpenSSL's reasons extracted."""
    value = reason.value
    if isinstance(value, PartnerConnectionError):
        return value.reason
    if isinstance(value, SSL.Error):
        return "TLS error: " + _describeSSLError(value)
    if isinstance(value, VerificationError):
        return "the peer's certificate is not valid for the partner's " + " or ".join(
            _describeMismatch(e) for e in value.errors
        )
    if isinstance(value, ConnectionDone):
        return "connection closed by the peer"
    if isinstance(value, ConnectionLost):
        return "connection lost"
    return str(value) or type(value).__name__


class _TLSTransport(Protocol):
    """What we use of C{TLSMemoryBIOProtocol} as our transport."""

    def getHandle(self) -> SSL.Connection: ...

    def abortConnection(self) -> None: ...


@implementer(IProtocol, IHandshakeListener)
class AuthenticatedPartnerProtocol:
    """
    Sits between C{TLSMemoryBIOProtocol} and the application protocol (AMP):
    bounds the handshake in time, checks the partner identity when the
    handshake completes, and only then builds and connects the application
    protocol; afterwards passes bytes through and closes an idle connection.

    Its C{transport} is the C{TLSMemoryBIOProtocol}; the application
    protocol gets that same transport (so C{getPeerCertificate},
    C{getHandle}, C{getPeer} work on it).

    @ivar identity: the identity the peer proved, or C{None} before (or
        without) a passed check.
    @ivar wrappedProtocol: the application protocol, or C{None} before
        authentication.
    """

    log = Logger()

    def __init__(self, factory: AuthenticatedPartnerFactory, address: IAddress) -> None:
        self.factory = factory
        self.address = address
        self.transport: ITransport | None = None
        self._tls: _TLSTransport | None = None
        self.identity: PartnerIdentity | None = None
        self.wrappedProtocol: IProtocol | None = None
        self._held: list[bytes] = []
        self._heldSize = 0
        self._handshakeTimer: IDelayedCall | None = None
        self._idleTimer: IDelayedCall | None = None
        self._closing: PartnerConnectionError | None = None
        self._lost: Failure | None = None
        self._waiting: list[Deferred[IProtocol]] = []
        self._verifyErrors: list[str] = []

    # -- helpers

    @property
    def _peer(self) -> str:
        return describeAddress(self.address)

    @property
    def _direction(self) -> str:
        return "outgoing" if self.factory.outgoing else "incoming"

    def _cancelTimers(self) -> None:
        for timer in (self._handshakeTimer, self._idleTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._handshakeTimer = None
        self._idleTimer = None

    def _close(self, error: PartnerConnectionError) -> None:
        """Abort the connection for C{error}, which waiters and the wrapped protocol get."""
        if self._closing is not None:
            return
        self._closing = error
        self._held = []
        self._heldSize = 0
        self._cancelTimers()
        assert self._tls is not None
        self._tls.abortConnection()

    def _fireWaiters(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if self.wrappedProtocol is not None and self._lost is None:
                d.callback(self.wrappedProtocol)
            else:
                d.errback(self._failureForWaiters())

    def _failureForWaiters(self) -> Failure:
        if self._closing is not None:
            return _failure(self._closing)
        assert self._lost is not None
        return self._lost

    def _refused(self, reason: str) -> PartnerAuthenticationError:
        """Count and log a peer that failed the identity check."""
        self.factory.stats.refused += 1
        self.log.warn(
            "Refused partner connection ({direction}) with {peer}: {reason}",
            direction=self._direction,
            peer=self._peer,
            reason=reason,
            partnerEvent="refused",
        )
        return PartnerAuthenticationError(self._peer, reason)

    def _logClosed(self, reason: Failure) -> None:
        self.log.info(
            "Partner connection ({direction}) with {peer} closed: {reason}",
            direction=self._direction,
            peer=self._peer,
            reason=self._closing.reason if self._closing is not None else describeFailure(reason),
            partnerEvent="closed",
        )

    def noteVerifyError(self, description: str) -> None:
        """
        Record why OpenSSL refused the peer's chain (called during the
        handshake by L{TLSMaterial.serverOptions}' connections), for the log.
        """
        self._verifyErrors.append(description)

    # -- IProtocol

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        self._tls = cast(_TLSTransport, transport)
        self.connectionMade()

    def connectionMade(self) -> None:
        allowed = self.factory.allowedSources
        if allowed is not None:
            source = _hostAddress(self.address)
            if source not in allowed:
                # Before the handshake: not one TLS operation for a stranger.
                self._close(
                    self._refused(
                        "connection from "
                        + (str(source) if source is not None else describeAddress(self.address))
                        + "; the partner connects only from "
                        + ", ".join(str(a) for a in sorted(allowed, key=str))
                    )
                )
                return
        self._handshakeTimer = self.factory.clock.callLater(
            self.factory.handshakeTimeout, self._handshakeTimedOut
        )

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is complete: check the partner identity, then build
        and connect the wrapped protocol and hand it what was held.
        """
        if self._closing is not None or self._lost is not None:
            return
        assert self._tls is not None and self.transport is not None
        try:
            identity = verifyPartner(self._tls.getHandle(), self.factory.identities)
        except PartnerAuthenticationError as e:
            self._close(self._refused(e.reason))
            return
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        self._handshakeTimer = None
        self.identity = identity
        wrapped = self.factory.wrappedFactory.buildProtocol(
            AuthenticatedPartnerAddress(identity, self.address)
        )
        if wrapped is None:
            self.log.info(
                "Partner {peer} authenticated as {identity}, but the protocol factory"
                " declined the connection",
                peer=self._peer,
                identity=identity.name,
                partnerEvent="declined",
            )
            self._close(PartnerConnectionError(self._peer, "declined by the protocol factory"))
            return
        self.factory.stats.authenticated += 1
        self.log.info(
            "Partner connection ({direction}) with {peer} authenticated as {identity}",
            direction=self._direction,
            peer=self._peer,
            identity=identity.name,
            partnerEvent="authenticated",
        )
        self.wrappedProtocol = wrapped
        if self.factory.idleTimeout is not None:
            self._idleTimer = self.factory.clock.callLater(
                self.factory.idleTimeout, self._idleTimedOut
            )
        wrapped.makeConnection(self.transport)
        if IHandshakeListener.providedBy(wrapped):
            wrapped.handshakeCompleted()
        self._fireWaiters()
        held, self._held, self._heldSize = self._held, [], 0
        for data in held:
            self._deliver(data)

    def dataReceived(self, data: bytes) -> None:
        """
        Pass application bytes to the wrapped protocol once authenticated.

        Before that, Twisted's C{TLSMemoryBIOProtocol} delivers nothing: it
        calls L{handshakeCompleted} before it reads any application data out
        of OpenSSL, and drops what follows an abort.  Bytes arriving before the
        check anyway (another TLS transport) are counted and held, to be
        delivered only if the check passes.
        """
        if self.wrappedProtocol is None:
            self.factory.stats.receivedBeforeAuthentication += len(data)
            if self._closing is not None:
                return
            self._heldSize += len(data)
            if self._heldSize > _MAX_HELD_BEFORE_AUTHENTICATION:
                self._close(self._refused("too much data before authentication"))
                return
            self._held.append(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._closing is not None or self._lost is not None:
            return
        if self.identity is None:  # pragma: no cover - the invariant this counter guards
            self.factory.stats.deliveredBeforeAuthentication += len(data)
        if self._idleTimer is not None and self._idleTimer.active():
            assert self.factory.idleTimeout is not None
            self._idleTimer.reset(self.factory.idleTimeout)
        assert self.wrappedProtocol is not None
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        self._cancelTimers()
        self._held = []
        if self.wrappedProtocol is None:
            if self._closing is None and isinstance(reason.value, VerificationError):
                # Twisted's own check (client side, optionsForClientTLS)
                # refused the server's identity during the handshake.
                self._closing = self._refused(describeFailure(reason))
            if self._closing is None:
                description = describeFailure(reason)
                if self._verifyErrors:
                    description += " (" + "; ".join(self._verifyErrors) + ")"
                self.factory.stats.handshakeFailed += 1
                self.log.warn(
                    "TLS handshake ({direction}) with partner {peer} failed: {reason}",
                    direction=self._direction,
                    peer=self._peer,
                    reason=description,
                    partnerEvent="handshakeFailed",
                )
                self._closing = PartnerHandshakeError(self._peer, description)
            self._logClosed(reason)
            self._fireWaiters()
            return
        self._logClosed(reason)
        if self._closing is None and isinstance(reason.value, SSL.Error):
            # E.g. with TLS 1.3 the client finishes its handshake before the
            # server has judged its certificate: the server's refusal arrives
            # here, as an alert, after authentication.
            self.log.warn(
                "TLS error on the partner connection ({direction}) with {peer}: {reason}",
                direction=self._direction,
                peer=self._peer,
                reason=describeFailure(reason),
                partnerEvent="tlsError",
            )
        self.wrappedProtocol.connectionLost(
            _failure(self._closing) if self._closing is not None else reason
        )

    # -- timers

    def _handshakeTimedOut(self) -> None:
        self._handshakeTimer = None
        timeout = self.factory.handshakeTimeout
        self.factory.stats.handshakeTimeouts += 1
        self.log.warn(
            "TLS handshake ({direction}) with partner {peer} timed out after {timeout} seconds",
            direction=self._direction,
            peer=self._peer,
            timeout=timeout,
            reason="handshake timeout",
            partnerEvent="handshakeTimeout",
        )
        self._close(
            PartnerTimeout(self._peer, "TLS handshake not done after " + str(timeout) + " seconds")
        )

    def _idleTimedOut(self) -> None:
        self._idleTimer = None
        timeout = self.factory.idleTimeout
        self.factory.stats.idleTimeouts += 1
        self.log.warn(
            "Closing partner connection ({direction}) with {peer}: nothing received for"
            " {timeout} seconds",
            direction=self._direction,
            peer=self._peer,
            timeout=timeout,
            reason="idle timeout",
            partnerEvent="idleTimeout",
        )
        self._close(PartnerTimeout(self._peer, "nothing received for " + str(timeout) + " seconds"))

    # -- for endpoints

    def whenAuthenticated(self) -> Deferred[IProtocol]:
        """
        A L{Deferred} that fires with the wrapped protocol once the identity
        check has passed, or fails with a L{PartnerConnectionError} (L{PartnerHandshakeError},
        L{PartnerAuthenticationError}, L{PartnerTimeout}) if the connection is
        lost first.  Cancelling it aborts the connection.
        """
        if self.wrappedProtocol is not None and self._lost is None:
            return succeed(self.wrappedProtocol)
        if self._lost is not None or self._closing is not None:
            if self._lost is not None:
                return fail(self._failureForWaiters())
            assert self._closing is not None
            return fail(self._closing)

        def cancel(d: Deferred[IProtocol]) -> None:
            if d in self._waiting:
                self._waiting.remove(d)
            self.log.info(
                "Partner connection ({direction}) with {peer} cancelled before authentication",
                direction=self._direction,
                peer=self._peer,
                partnerEvent="cancelled",
            )
            self._close(PartnerConnectionError(self._peer, "cancelled"))

        d: Deferred[IProtocol] = Deferred(cancel)
        self._waiting.append(d)
        return d


@implementer(IProtocolFactory, ILoggingContext)
class AuthenticatedPartnerFactory:
    """
    Wraps the application's protocol factory for use inside a
    C{TLSMemoryBIOFactory}: each connection gets an
    L{AuthenticatedPartnerProtocol}; C{wrappedFactory.buildProtocol} is
    called only once the peer has proved one of C{identities}, with an
    L{AuthenticatedPartnerAddress}.

    @ivar stats: counters over all connections of this factory.
    """

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        identities: Iterable[PartnerIdentity],
        clock: IReactorTime,
        *,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
        outgoing: bool = False,
        stats: PartnerConnectionStats | None = None,
        allowedSources: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None,
    ) -> None:
        """
        @param wrappedFactory: builds the application protocol (AMP).
        @param identities: the partner identities accepted; the first the
            peer's certificate is valid for is the one it proved.
        @param clock: for the timeouts.
        @param handshakeTimeout: seconds from TCP connection to a passed check.
        @param idleTimeout: seconds without a received byte, once
            authenticated, before closing; C{None} for no limit.
        @param outgoing: C{True} when we connected (only changes log text).
        @param stats: counters to update; a new L{PartnerConnectionStats} by
            default.
        @param allowedSources: if given, the only source addresses accepted
            (an IPv4-mapped IPv6 source counts as its IPv4 address, a zone
            index is ignored); others are refused as soon as TCP connects,
            before any TLS work.
        """
        self.wrappedFactory = wrappedFactory
        self.identities: tuple[PartnerIdentity, ...] = tuple(identities)
        if not self.identities:
            raise ValueError("at least one partner identity is required")
        if handshakeTimeout <= 0:
            raise ValueError("handshakeTimeout must be positive")
        if idleTimeout is not None and idleTimeout <= 0:
            raise ValueError("idleTimeout must be positive or None")
        self.clock = clock
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.outgoing = outgoing
        self.stats = stats if stats is not None else PartnerConnectionStats()
        self.allowedSources: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = (
            None if allowedSources is None else frozenset(_unmapped(a) for a in allowedSources)
        )

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress) -> AuthenticatedPartnerProtocol:
        return AuthenticatedPartnerProtocol(self, addr)

    def logPrefix(self) -> str:
        return "AuthenticatedPartner"


# ---------------------------------------------------------------------------
# Endpoints


@implementer(IStreamClientEndpoint)
@define
class PartnerClientEndpoint:
    """
    Connects to the partner (the primary's side): TCP, then TLS with our
    certificate, then the identity check.  C{connect} fires with the
    application protocol only once the partner is authenticated, and fails
    with a L{PartnerConnectionError} otherwise, so that a C{ClientService}
    counts a refused partner as a failed attempt and backs off.

    @ivar stats: counters over all connections made through this endpoint.
    """

    clock: IReactorTime
    material: TLSMaterial
    identity: PartnerIdentity
    tcpEndpoint: IStreamClientEndpoint
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT
    stats: PartnerConnectionStats = field(factory=PartnerConnectionStats)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect, authenticate, and fire with C{protocolFactory}'s protocol.
        """
        factory = AuthenticatedPartnerFactory(
            protocolFactory,
            [self.identity],
            self.clock,
            handshakeTimeout=self.handshakeTimeout,
            idleTimeout=self.idleTimeout,
            outgoing=True,
            stats=self.stats,
        )
        tls = wrapClientTLS(
            self.material.clientOptions(self.identity), self.tcpEndpoint, self.clock
        )
        connecting: Deferred[IProtocol] = tls.connect(factory)
        return connecting.addCallback(
            lambda protocol: cast(AuthenticatedPartnerProtocol, protocol).whenAuthenticated()
        )


@implementer(IStreamServerEndpoint)
@define
class PartnerServerEndpoint:
    """
    Listens for the partner (the secondary's side): TLS requiring a client
    certificate from the CA, then the identity check; the application
    factory's C{buildProtocol} is called only for authenticated partners,
    with an L{AuthenticatedPartnerAddress}.

    @ivar stats: counters over all connections accepted by this endpoint.
    """

    clock: IReactorTime
    material: TLSMaterial
    identities: tuple[PartnerIdentity, ...]
    tcpEndpoint: IStreamServerEndpoint
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT
    allowedSources: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None = None
    stats: PartnerConnectionStats = field(factory=PartnerConnectionStats)

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Start listening; C{protocolFactory} sees authenticated partners only."""
        factory = AuthenticatedPartnerFactory(
            protocolFactory,
            self.identities,
            self.clock,
            handshakeTimeout=self.handshakeTimeout,
            idleTimeout=self.idleTimeout,
            outgoing=False,
            stats=self.stats,
            allowedSources=self.allowedSources,
        )
        tls = wrapServerTLS(self.material.serverOptions(), self.tcpEndpoint, self.clock)
        listening: Deferred[IListeningPort] = tls.listen(factory)
        return listening


def partnerClientEndpoint(
    reactor: IReactorTime,
    material: TLSMaterial,
    identity: PartnerIdentity,
    tcpEndpoint: IStreamClientEndpoint,
    *,
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> PartnerClientEndpoint:
    """
    The endpoint the primary connects to its partner with.

    @param reactor: the clock for timeouts and TLS write batching.
    @param tcpEndpoint: e.g. C{TCP6ClientEndpoint(reactor, "2001:db8::7", 647)}.
    """
    return PartnerClientEndpoint(
        reactor,
        material,
        identity,
        tcpEndpoint,
        handshakeTimeout=handshakeTimeout,
        idleTimeout=idleTimeout,
    )


def partnerServerEndpoint(
    reactor: IReactorTime,
    material: TLSMaterial,
    identities: Iterable[PartnerIdentity],
    tcpEndpoint: IStreamServerEndpoint,
    *,
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
    allowedSources: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None,
) -> PartnerServerEndpoint:
    """
    The endpoint the secondary listens for its partner(s) on.

    @param identities: every partner identity this listener accepts (one
        per relationship in which this server is the secondary).
    @param tcpEndpoint: e.g. C{TCP6ServerEndpoint(reactor, 647, interface="::")}.
    @param allowedSources: if given, the only source addresses accepted
        (config's C{partner-address} on the secondary); see
        L{AuthenticatedPartnerFactory}.
    """
    accepted = tuple(identities)
    if not accepted:
        raise ValueError("at least one partner identity is required")
    return PartnerServerEndpoint(
        reactor,
        material,
        accepted,
        tcpEndpoint,
        handshakeTimeout=handshakeTimeout,
        idleTimeout=idleTimeout,
        allowedSources=None if allowedSources is None else tuple(allowedSources),
    )
