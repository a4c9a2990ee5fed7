"""
Test-only X.509 material: a small certificate authority that issues the
certificates the partner-authentication tests need (good ones, and every kind
of bad one).

Keys are ECDSA P-256 unless a test asks for RSA: they are generated in
microseconds, so every test can make its own.  Validity periods are relative
to the wall clock on purpose: OpenSSL checks them against the wall clock during
real handshakes.  Nothing here is fit for production use.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Extended key usages of a partner certificate: a failover server is a TLS
#: client (the primary connects) and a TLS server (the secondary listens).
BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
SERVER_ONLY = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT_ONLY = (ExtendedKeyUsageOID.CLIENT_AUTH,)

_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def makeKey(kind: str = "ec", bits: int = 2048) -> PrivateKey:
    """
    Make a private key.

    @param kind: C{"ec"} (P-256) or C{"rsa"}.
    @param bits: the RSA modulus size.
    """
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dhcp6ha tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _pemKey(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _pemCert(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@frozen
class Issued:
    """
    A certificate and its private key, plus the intermediate certificates
    between it and its root (empty when the root issued it directly).
    """

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def certPEM(self) -> bytes:
        """The certificate followed by its intermediates, PEM."""
        return _pemCert(self.certificate) + b"".join(_pemCert(c) for c in self.chain)

    @property
    def keyPEM(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return _pemKey(self.key)

    def encryptedKeyPEM(self, password: bytes) -> bytes:
        """The private key, encrypted with C{password}."""
        return _pemKey(self.key, password)


class CertificateAuthority:
    """
    A self-signed root (or, from L{intermediate}, a subordinate) CA that
    issues leaf certificates for tests.
    """

    def __init__(
        self,
        commonName: str = "dhcp6ha test CA",
        *,
        key: PrivateKey | None = None,
        parent: CertificateAuthority | None = None,
    ) -> None:
        self.key = key if key is not None else makeKey()
        self.parent = parent
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if parent is None:
            self.certificate = builder.issuer_name(_name(commonName)).sign(
                self.key, hashes.SHA256()
            )
            self.chain: tuple[x509.Certificate, ...] = ()
        else:
            self.certificate = (
                builder.issuer_name(parent.certificate.subject)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                    critical=False,
                )
                .sign(parent.key, hashes.SHA256())
            )
            self.chain = (self.certificate, *parent.chain)

    @property
    def pem(self) -> bytes:
        """This CA's own certificate, PEM."""
        return _pemCert(self.certificate)

    def intermediate(self, commonName: str) -> CertificateAuthority:
        """Make a subordinate CA signed by this one."""
        return CertificateAuthority(commonName, parent=self)

    def issue(
        self,
        commonName: str = "partner",
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        ipsAsDNS: Sequence[str] = (),
        extendedKeyUsage: Sequence[x509.ObjectIdentifier] | None = BOTH,
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
        key: PrivateKey | None = None,
    ) -> Issued:
        """
        Issue a leaf certificate.

        @param dns: DNS subjectAltNames.
        @param ips: IP subjectAltNames.
        @param ipsAsDNS: IP addresses written as DNS subjectAltNames (a
            mistake some CAs make; service_identity refuses it).
        @param extendedKeyUsage: the EKU purposes, or C{None} for no EKU
            extension at all.
        @param notBefore: start of validity; default a day ago.
        @param notAfter: end of validity; default in a day.
        @param key: the leaf's key; a fresh P-256 key by default.

        With no C{dns}, C{ips} or C{ipsAsDNS} the certificate has no
        subjectAltName extension at all, only the subject common name.
        """
        now = _now()
        leafKey = key if key is not None else makeKey()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .issuer_name(self.certificate.subject)
            .public_key(leafKey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore if notBefore is not None else now - _DAY)
            .not_valid_after(notAfter if notAfter is not None else now + _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(ip) for ip in ipsAsDNS]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if extendedKeyUsage is not None:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(list(extendedKeyUsage)), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(certificate, leafKey, self.chain)


def expired(
    ca: CertificateAuthority, *, dns: Sequence[str] = (), ips: Sequence[str] = ()
) -> Issued:
    """A certificate from C{ca} whose validity ended yesterday."""
    now = _now()
    return ca.issue(dns=dns, ips=ips, notBefore=now - 10 * _DAY, notAfter=now - _DAY)


def writeFiles(directory: str, files: dict[str, bytes]) -> dict[str, str]:
    """
    Write C{files} (name to content) into C{directory}, creating it.

    @return: name to full path.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, content in files.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(content)
        paths[name] = path
    return paths
