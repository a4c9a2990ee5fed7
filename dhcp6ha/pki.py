# -*- test-case-name: tests.test_pki -*-
"""
C{dhcp6ha-pki}: make a small certificate authority and the certificates a
failover pair authenticates itself with (L{dhcp6ha.failover.tls})::

    dhcp6ha-pki var/pki --server primary=primary.dhcp6ha.test \\
                        --server secondary=secondary.dhcp6ha.test

(or C{python -m dhcp6ha.pki ...}) writes, in C{var/pki}::

    ca.pem               the CA certificate: each partner's [failover:] ca
    ca-key.pem           the CA's private key (mode 0600); needed only to
                         issue more certificates: keep it elsewhere, or
                         delete it, once the pair has its certificates
    primary.pem          a certificate for DNS:primary.dhcp6ha.test
    primary-key.pem      its private key (mode 0600)
    secondary.pem, secondary-key.pem

Keys are ECDSA P-256, signatures SHA-256.  Each server certificate carries
its identities as subjectAltNames (DNS names and/or IP addresses: what the
partner's C{partner-identity} names) and the extended key usages serverAuth
and clientAuth, since a failover server is a TLS client (the primary
connects) as much as a TLS server (the secondary listens).  Certificates are
valid from an hour ago (partners' clocks may differ a little) for C{--days}
(default 825), the CA for C{--ca-days} (default 3650); a certificate never
outlives its CA.

Running it again is safe: a file that exists is kept, never overwritten
(unless C{--force}), and only what is missing is made, with the CA that is
there.  What is kept is checked as the server will check it (chain to
C{ca.pem}, key matching its certificate, validity, every identity asked for
present, key usages), and refused with the reason if it would not work, so
that a run of C{make run} finds out before the servers do.  C{--force}
makes everything anew: a new CA, and new keys and certificates for every
C{--server} given (other certificates in the directory then no longer chain
to C{ca.pem}).

Care taken: the directory is created with mode 0700; an existing one must
belong to the user running the tool (or root) and be writable by no one
else, because whoever can add a file there could plant their own CA; a kept
key file must be readable by its owner only.  Every file is written to a
temporary file, synced, then linked into place (so that a file is either
complete or absent, and an existing file, or a symbolic link planted at its
name, is never written through), and the directory is synced.  Each
certificate written is loaded back with L{TLSMaterial.fromPEM
<dhcp6ha.failover.tls.TLSMaterial.fromPEM>}, like the server loads it,
before anything is written.

This is a lab tool: the CA key lives on the same disk, unencrypted.  For
production use the organisation's own CA; the server only needs the PEM
files.

Exit status: 0 done; 1 the directory or a file in it is unusable (nothing
more was written once that was found); 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import ipaddress
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import IO

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dhcp6ha._cli import EXIT_USAGE, Exit, Parser
from dhcp6ha.failover.tls import PartnerIdentity, TLSMaterial, TLSMaterialError

__all__ = [
    "CA_CERTIFICATE",
    "CA_KEY",
    "DEFAULT_CA_DAYS",
    "DEFAULT_DAYS",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "FileResult",
    "PKIError",
    "ServerSpec",
    "main",
    "makePKI",
    "parseServer",
]

EXIT_OK = 0
EXIT_PROBLEM = 1

#: Days a server certificate is valid for, unless C{--days} says otherwise.
DEFAULT_DAYS = 825

#: Days a new CA certificate is valid for, unless C{--ca-days} says otherwise.
DEFAULT_CA_DAYS = 3650

#: Longest validity accepted (about 100 years).
MAX_DAYS = 36500

#: File names of the CA certificate and key in the directory.
CA_CERTIFICATE = "ca.pem"
CA_KEY = "ca-key.pem"

#: How far back validity starts: partners' clocks may differ a little (and
#: the server refuses a skew above a few seconds anyway).
_BACKDATE = datetime.timedelta(hours=1)

_ORGANIZATION = "dhcp6ha lab"

#: A server name: becomes a file name, NAME.pem and NAME-key.pem.
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")

#: A failover server is a TLS client and a TLS server.
_BOTH_USAGES = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})

_KEY_MODE = 0o600
_CERTIFICATE_MODE = 0o644
_DIRECTORY_MODE = 0o700


class PKIError(Exception):
    """
    The directory, or a file in it, cannot be used, or the request is
    contradictory: the message says what and how to fix it.
    """


@frozen
class ServerSpec:
    """
    One server of the pair: its name and identities.

    @ivar name: the file name stem (C{NAME.pem}, C{NAME-key.pem}).
    @ivar identities: DNS names and IP addresses its certificate carries as
        subjectAltNames, in the order given, without duplicates.
    """

    name: str
    identities: tuple[PartnerIdentity, ...]

    @property
    def certificateFile(self) -> str:
        """The certificate's file name."""
        return self.name + ".pem"

    @property
    def keyFile(self) -> str:
        """The private key's file name."""
        return self.name + "-key.pem"


@frozen
class FileResult:
    """
    What was done to one file.

    @ivar path: the file.
    @ivar action: C{"created"}, C{"replaced"} (C{force}) or C{"kept"}.
    @ivar description: what it holds, in words.
    """

    path: str
    action: str
    description: str

    def __str__(self) -> str:
        return self.path + ": " + self.action + ", " + self.description


def _checkName(name: str) -> str:
    if not _SERVER_NAME.match(name):
        raise ValueError(
            "server name "
            + repr(name)
            + " must be 1 to 63 letters, digits, '.', '_' or '-', beginning with a letter"
            " or digit (it names the files NAME.pem and NAME-key.pem)"
        )
    if name.lower() == "ca" or name.lower().endswith("-key"):
        raise ValueError(
            "server name "
            + repr(name)
            + " would clash with another file name (ca.pem, or a key's NAME-key.pem)"
        )
    return name


def parseServer(text: str) -> ServerSpec:
    """
    Parse a C{--server} argument: C{NAME=IDENTITY[,IDENTITY...]}, each
    identity a DNS name or an IP address, with the rules the server applies
    to C{partner-identity} (L{PartnerIdentity.parse}).

    @raise ValueError: with the reason.
    """
    name, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(
            repr(text) + ": expected NAME=IDENTITY[,IDENTITY...], e.g. primary=primary.example.net"
        )
    _checkName(name)
    return ServerSpec(name, _parseIdentities(name, rest, ipOnly=False))


def _parseIdentities(name: str, text: str, *, ipOnly: bool) -> tuple[PartnerIdentity, ...]:
    identities: list[PartnerIdentity] = []
    for item in text.split(","):
        item = item.strip()
        try:
            identity = PartnerIdentity.parse(item)
        except ValueError as e:
            raise ValueError("server " + name + ": " + str(e)) from None
        if ipOnly and not identity.isIPAddress:
            raise ValueError("server " + name + ": " + repr(item) + " is not an IP address")
        if identity not in identities:
            identities.append(identity)
    return tuple(identities)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ---------------------------------------------------------------------------
# Making certificates


def _newKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificatePEM(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _makeCA(
    now: datetime.datetime, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _newKey()
    # A distinct name per CA: two labs' CAs never look alike in a log.
    subject = _name("dhcp6ha lab CA " + os.urandom(4).hex())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # Issues server certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _authorityKeyIdentifier(
    ca: x509.Certificate, caKey: ec.EllipticCurvePrivateKey
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issue(
    server: ServerSpec,
    ca: x509.Certificate,
    caKey: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """
    Issue C{server}'s certificate.

    @return: the certificate, its key, and whether its validity was cut
        short to end with the CA's.
    """
    key = _newKey()
    notBefore = max(now - _BACKDATE, ca.not_valid_before_utc)
    notAfter = now + datetime.timedelta(days=days)
    capped = notAfter > ca.not_valid_after_utc
    if capped:
        notAfter = ca.not_valid_after_utc
    first = server.identities[0].name
    names: list[x509.GeneralName] = [
        x509.DNSName(i.name) if i.address is None else x509.IPAddress(i.address)
        for i in server.identities
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(first if len(first) <= 64 else server.name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authorityKeyIdentifier(ca, caKey), critical=False)
        .sign(caKey, hashes.SHA256())
    )
    return certificate, key, capped


# ---------------------------------------------------------------------------
# Checking what is there


def _describeIdentities(identities: Iterable[PartnerIdentity]) -> str:
    return ", ".join(("IP:" if i.isIPAddress else "DNS:") + i.name for i in identities)


def _until(certificate: x509.Certificate) -> str:
    return "valid until " + certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")


def _checkDirectory(path: str, status: os.stat_result) -> None:
    if not stat.S_ISDIR(status.st_mode):
        raise PKIError(path + ": exists and is not a directory")
    uid = os.geteuid()
    if status.st_uid not in (uid, 0):
        raise PKIError(
            path
            + ": belongs to uid "
            + str(status.st_uid)
            + ", not to you (uid "
            + str(uid)
            + ") or root: its owner could replace the CA or a key; use a directory of your own"
        )
    if status.st_mode & 0o022:
        raise PKIError(
            path
            + ": writable by "
            + ("others" if status.st_mode & 0o002 else "its group")
            + " (mode "
            + format(stat.S_IMODE(status.st_mode), "04o")
            + "): anyone who can add a file there could plant their own CA or key"
            + (" (the sticky bit does not prevent that)" if status.st_mode & stat.S_ISVTX else "")
            + "; chmod go-w "
            + path
            + ", or use another directory"
        )


def _existing(path: str, *, secret: bool) -> bytes | None:
    """
    Read a file that is there, after checking who may change (and, when
    C{secret}, read) it; C{None} if there is none.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise PKIError(path + ": a symbolic link to nothing; remove it") from None
        return None
    except OSError as e:
        raise PKIError(path + ": " + (e.strerror or str(e))) from None
    if not stat.S_ISREG(status.st_mode):
        raise PKIError(path + ": exists and is not a regular file")
    uid = os.geteuid()
    if status.st_uid not in (uid, 0):
        raise PKIError(
            path + ": belongs to uid " + str(status.st_uid) + ", not to you (uid " + str(uid) + ")"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        raise PKIError(
            path
            + ": writable by others than its owner (mode "
            + format(mode, "04o")
            + "); chmod go-w "
            + path
        )
    if secret and mode & 0o077:
        raise PKIError(
            path
            + ": a private key readable by others than its owner (mode "
            + format(mode, "04o")
            + "); chmod 600 "
            + path
            + " (and make a new one with --force if others may have read it)"
        )
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PKIError(path + ": cannot read it: " + (e.strerror or str(e))) from None


def _subjectAltNames(
    certificate: x509.Certificate,
) -> tuple[set[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The DNS names (canonical) and IP addresses a certificate carries."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dnsNames = {n.lower().rstrip(".") for n in sans.get_values_for_type(x509.DNSName)}
    addresses = {
        a
        for a in sans.get_values_for_type(x509.IPAddress)
        if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)
    }
    return dnsNames, addresses


def _checkValidity(
    path: str,
    certificate: x509.Certificate,
    now: datetime.datetime,
    remedy: str = "; make everything anew with --force",
) -> None:
    if now > certificate.not_valid_after_utc:
        raise PKIError(
            path + ": expired at " + certificate.not_valid_after_utc.isoformat() + remedy
        )
    if now < certificate.not_valid_before_utc:
        raise PKIError(
            path
            + ": not valid before "
            + certificate.not_valid_before_utc.isoformat()
            + " (is the clock right?)"
        )


def _publicKeyBytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _loadCA(
    directory: str, now: datetime.datetime
) -> tuple[x509.Certificate, bytes, ec.EllipticCurvePrivateKey | None] | None:
    """
    The CA in C{directory}: its certificate, the whole file, and its key if
    that is there; C{None} if there is no CA at all.
    """
    certPath = os.path.join(directory, CA_CERTIFICATE)
    keyPath = os.path.join(directory, CA_KEY)
    certPEM = _existing(certPath, secret=False)
    keyPEM = _existing(keyPath, secret=True)
    if certPEM is None:
        if keyPEM is not None:
            raise PKIError(
                keyPath + ": a CA key without its certificate " + certPath + "; remove it, or"
                " make everything anew with --force"
            )
        return None
    try:
        certificates = x509.load_pem_x509_certificates(certPEM)
    except ValueError as e:
        raise PKIError(certPath + ": not a PEM certificate: " + str(e)) from None
    ca = certificates[0]
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PKIError(certPath + ": its (first) certificate is not a CA certificate")
    _checkValidity(certPath, ca, now)
    if keyPEM is None:
        return ca, certPEM, None
    try:
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except (TypeError, ValueError) as e:
        raise PKIError(keyPath + ": not an unencrypted PEM private key: " + str(e)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(keyPath + ": not an ECDSA key (this tool makes and uses ECDSA P-256 only)")
    if _publicKeyBytes(key.public_key()) != _publicKeyBytes(ca.public_key()):
        raise PKIError(keyPath + ": does not match the CA certificate in " + certPath)
    return ca, certPEM, key


def _checkServer(
    directory: str, server: ServerSpec, caPEM: bytes, now: datetime.datetime
) -> FileResult | None:
    """
    Check C{server}'s existing certificate and key, or find that it has
    neither (C{None}: to be made).

    @return: the result for the certificate (the key is kept with it).
    """
    certPath = os.path.join(directory, server.certificateFile)
    keyPath = os.path.join(directory, server.keyFile)
    remedy = (
        "; remove "
        + certPath
        + " and "
        + keyPath
        + " to have them made again with this CA (or make everything anew with --force)"
    )
    certPEM = _existing(certPath, secret=False)
    keyPEM = _existing(keyPath, secret=True)
    if certPEM is None and keyPEM is None:
        return None
    if certPEM is None or keyPEM is None:
        there, missing = (certPath, keyPath) if keyPEM is None else (keyPath, certPath)
        raise PKIError(there + ": there, but not " + missing + remedy)
    try:
        TLSMaterial.fromPEM(
            certPEM,
            keyPEM,
            caPEM,
            certSource=certPath,
            keySource=keyPath,
            caSource=os.path.join(directory, CA_CERTIFICATE),
        )
    except TLSMaterialError as e:
        raise PKIError(str(e) + remedy) from None
    certificate = x509.load_pem_x509_certificates(certPEM)[0]
    _checkValidity(certPath, certificate, now, remedy)
    dnsNames, addresses = _subjectAltNames(certificate)
    missingIdentities = [
        i
        for i in server.identities
        if (i.name not in dnsNames if i.address is None else i.address not in addresses)
    ]
    if missingIdentities:
        raise PKIError(
            certPath + ": does not carry " + _describeIdentities(missingIdentities) + remedy
        )
    try:
        usages = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and not _BOTH_USAGES <= usages:
        raise PKIError(
            certPath + ": its extended key usage lacks serverAuth or clientAuth (a failover"
            " server needs both)" + remedy
        )
    carried = ["DNS:" + n for n in sorted(dnsNames)] + [
        "IP:" + str(a) for a in sorted(addresses, key=lambda a: (a.version, int(a)))
    ]
    return FileResult(certPath, "kept", ", ".join(carried) + ", " + _until(certificate))


# ---------------------------------------------------------------------------
# Writing


def _syncDirectory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write(path: str, data: bytes, mode: int, replace: bool) -> None:
    """
    Write C{data} to C{path} with C{mode}, whole or not at all: through a
    temporary file in the same directory, synced, then linked into place
    (C{replace}: renamed over what is there).

    @raise PKIError: if C{path} exists (and not C{replace}) or cannot be
        written.
    """
    directory, name = os.path.split(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix="." + name + ".", dir=directory or ".")
    except OSError as e:
        raise PKIError(
            path + ": cannot write in its directory: " + (e.strerror or str(e))
        ) from None
    try:
        try:
            os.fchmod(descriptor, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise PKIError(
                    path + ": appeared while this tool ran (another run at the same time?)"
                ) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # A file system without hard links: create exclusively.
                _writeExclusive(path, data, mode)
    except OSError as e:
        raise PKIError(path + ": cannot write it: " + (e.strerror or str(e))) from None
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def _writeExclusive(path: str, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, mode)
    except FileExistsError:
        raise PKIError(path + ": appeared while this tool ran") from None
    try:
        os.fchmod(descriptor, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        os.unlink(path)
        raise
    os.close(descriptor)


def _prepareDirectory(directory: str) -> None:
    try:
        status = os.stat(directory)
    except FileNotFoundError:
        try:
            os.makedirs(directory, mode=_DIRECTORY_MODE)
            os.chmod(directory, _DIRECTORY_MODE)
        except OSError as e:
            raise PKIError(directory + ": cannot create it: " + (e.strerror or str(e))) from None
        status = os.stat(directory)
    except OSError as e:
        raise PKIError(directory + ": " + (e.strerror or str(e))) from None
    _checkDirectory(directory, status)


def makePKI(
    directory: str,
    servers: Sequence[ServerSpec],
    *,
    days: int = DEFAULT_DAYS,
    caDays: int = DEFAULT_CA_DAYS,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> list[FileResult]:
    """
    Make (or check) the CA and the certificates of C{servers} in
    C{directory}; see the module docstring.

    Everything is checked and made in memory first, so that a problem found
    with one file leaves the directory as it was.

    @param now: the time to issue at and check validity against; the wall
        clock by default (OpenSSL checks certificates against it).
    @return: what was done, file by file: the CA certificate and key first,
        then each server's certificate and key.
    @raise PKIError: if the request is contradictory, or the directory or a
        file in it cannot be used.
    @raise ValueError: if C{days}, C{caDays} or C{servers} are out of range.
    """
    when = _now() if now is None else now
    if not servers:
        raise ValueError("at least one server is needed")
    for value, what in ((days, "days"), (caDays, "CA days")):
        if not 1 <= value <= MAX_DAYS:
            raise ValueError(what + " must be from 1 to " + str(MAX_DAYS) + ", not " + str(value))
    _checkServers(servers)
    _prepareDirectory(directory)

    results: list[FileResult] = []
    writes: list[tuple[str, bytes, int]] = []
    caKey: ec.EllipticCurvePrivateKey | None
    loaded = None if force else _loadCA(directory, when)
    caCertPath = os.path.join(directory, CA_CERTIFICATE)
    caKeyPath = os.path.join(directory, CA_KEY)
    action = "replaced" if force else "created"
    if loaded is None:
        if caDays < days:
            raise ValueError(
                "the CA must be valid at least as long as the certificates it issues: CA days "
                + str(caDays)
                + " < days "
                + str(days)
            )
        ca, caKey = _makeCA(when, caDays)
        caPEM = _certificatePEM(ca)
        writes += [(caKeyPath, _keyPEM(caKey), _KEY_MODE), (caCertPath, caPEM, _CERTIFICATE_MODE)]
        caWhat = "CA " + ca.subject.rfc4514_string() + ", " + _until(ca)
        results += [
            FileResult(caCertPath, _actual(action, caCertPath), caWhat),
            FileResult(caKeyPath, _actual(action, caKeyPath), "its private key, mode 0600"),
        ]
        # Server files without a CA would chain to none: refused, unless force.
        for server in () if force else servers:
            for name in (server.certificateFile, server.keyFile):
                if os.path.lexists(os.path.join(directory, name)):
                    raise PKIError(
                        os.path.join(directory, name)
                        + ": there, but there is no CA ("
                        + caCertPath
                        + ") it could chain to; remove it, or make everything anew with --force"
                    )
        kept: dict[str, FileResult] = {}
    else:
        ca, caPEM, maybeKey = loaded
        caWhat = "CA " + ca.subject.rfc4514_string() + ", " + _until(ca)
        results.append(FileResult(caCertPath, "kept", caWhat))
        results.append(
            FileResult(caKeyPath, "kept", "its private key")
            if maybeKey is not None
            else FileResult(caKeyPath, "absent", "no more certificates can be issued with this CA")
        )
        kept = {}
        for server in servers:
            result = _checkServer(directory, server, caPEM, when)
            if result is not None:
                kept[server.name] = result
        missing = [s.name for s in servers if s.name not in kept]
        if missing and maybeKey is None:
            raise PKIError(
                caKeyPath
                + ": not there, so no certificate can be issued for "
                + ", ".join(missing)
                + " with the CA in "
                + caCertPath
                + "; put the CA key back, or make everything anew with --force"
            )
        caKey = maybeKey

    for server in servers:
        certPath = os.path.join(directory, server.certificateFile)
        keyPath = os.path.join(directory, server.keyFile)
        if server.name in kept:
            results.append(kept[server.name])
            results.append(FileResult(keyPath, "kept", "its private key"))
            continue
        # Checked above: no CA key only when nothing is to be issued.
        assert caKey is not None
        certificate, key, capped = _issue(server, ca, caKey, when, days)
        certPEM, keyPEM = _certificatePEM(certificate), _keyPEM(key)
        # Load it as the server will, before anything is written.
        try:
            TLSMaterial.fromPEM(certPEM, keyPEM, caPEM, certSource=certPath, keySource=keyPath)
        except TLSMaterialError as e:
            raise PKIError("the certificate made is refused: " + str(e)) from None
        writes += [(keyPath, keyPEM, _KEY_MODE), (certPath, certPEM, _CERTIFICATE_MODE)]
        what = _describeIdentities(server.identities) + ", " + _until(certificate)
        if capped:
            what += " (cut short: a certificate cannot outlive its CA)"
        results.append(FileResult(certPath, _actual(action, certPath), what))
        results.append(FileResult(keyPath, _actual(action, keyPath), "its private key, mode 0600"))

    for path, data, mode in writes:
        _write(path, data, mode, replace=force)
    if writes:
        _syncDirectory(directory)
    return results


def _actual(action: str, path: str) -> str:
    """C{"replaced"} only for a file that is really there."""
    return action if action == "created" or os.path.lexists(path) else "created"


def _checkServers(servers: Sequence[ServerSpec]) -> None:
    seen: dict[str, str] = {}
    owners: dict[PartnerIdentity, str] = {}
    for server in servers:
        _checkName(server.name)
        if not server.identities:
            raise ValueError("server " + server.name + ": give at least one DNS name or IP address")
        if server.name.lower() in seen:
            raise ValueError("server " + server.name + " is given twice")
        seen[server.name.lower()] = server.name
        for identity in server.identities:
            other = owners.setdefault(identity, server.name)
            if other != server.name:
                raise ValueError(
                    _describeIdentities([identity])
                    + " is given to both "
                    + other
                    + " and "
                    + server.name
                    + ": a certificate carrying its partner's identity could pose as the partner"
                )


# ---------------------------------------------------------------------------
# Command line


def _serverArgument(text: str) -> ServerSpec:
    try:
        return parseServer(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ipArgument(text: str) -> tuple[str, tuple[PartnerIdentity, ...]]:
    name, sep, rest = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(repr(text) + ": expected NAME=ADDRESS[,ADDRESS...]")
    try:
        return name, _parseIdentities(name, rest, ipOnly=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _build(out: IO[str], err: IO[str]) -> Parser:
    parser = Parser(
        prog="dhcp6ha-pki",
        description=(
            "Make a lab CA and the TLS certificates of a dhcp6ha failover pair in DIRECTORY"
            " (ca.pem, ca-key.pem, NAME.pem, NAME-key.pem).  Files already there are kept"
            " (and checked); only what is missing is made."
        ),
        epilog=(
            "Example: dhcp6ha-pki var/pki --server primary=primary.dhcp6ha.test"
            " --server secondary=secondary.dhcp6ha.test.  Exit status: 0 done; 1 the"
            " directory or a file in it is unusable; 2 usage error."
        ),
    )
    parser.out, parser.err = out, err
    parser.add_argument("directory", metavar="DIRECTORY", help="where the files are (made 0700)")
    parser.add_argument(
        "--server",
        dest="servers",
        action="append",
        type=_serverArgument,
        required=True,
        metavar="NAME=IDENTITY[,IDENTITY...]",
        help=(
            "a server and the DNS names or IP addresses its certificate carries (what its"
            " partner's partner-identity names); repeat for each server"
        ),
    )
    parser.add_argument(
        "--ip",
        dest="ips",
        action="append",
        type=_ipArgument,
        default=[],
        metavar="NAME=ADDRESS[,ADDRESS...]",
        help="also put these IP addresses in server NAME's certificate",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"validity of new server certificates, in days (default {DEFAULT_DAYS})",
    )
    parser.add_argument(
        "--ca-days",
        type=int,
        default=DEFAULT_CA_DAYS,
        metavar="N",
        help=f"validity of a new CA, in days (default {DEFAULT_CA_DAYS})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=(
            "make everything anew, replacing what is there: a new CA, and new keys and"
            " certificates for every --server given"
        ),
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="say only what was made or replaced"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """
    Run C{dhcp6ha-pki} with these arguments (default: C{sys.argv[1:]}).

    @return: the exit status.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = _build(out, err)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except Exit as e:
        return e.report(err)
    servers: list[ServerSpec] = list(args.servers)
    for name, addresses in args.ips:
        for index, server in enumerate(servers):
            if server.name == name:
                extra = tuple(a for a in addresses if a not in server.identities)
                servers[index] = ServerSpec(name, server.identities + extra)
                break
        else:
            err.write("dhcp6ha-pki: error: --ip " + name + "=...: no --server " + name + "\n")
            return EXIT_USAGE
    try:
        results = makePKI(
            args.directory, servers, days=args.days, caDays=args.ca_days, force=args.force, now=now
        )
    except ValueError as e:
        err.write("dhcp6ha-pki: error: " + str(e) + "\n")
        return EXIT_USAGE
    except PKIError as e:
        err.write("dhcp6ha-pki: " + str(e) + "\n")
        return EXIT_PROBLEM
    for result in results:
        if not args.quiet or result.action in ("created", "replaced"):
            out.write(str(result) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
