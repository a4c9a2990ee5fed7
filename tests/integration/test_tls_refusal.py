"""
Partner authentication at process level (RFC 7031 section 8; DESIGN.md
"Partner authentication"): one secondary process, then, in sequence,
primaries it must refuse (real dhcp6ha processes with a certificate from
another CA, with another identity, with an expired certificate) and a
plaintext TCP client sending an AMP box.

Each refusal is in the secondary's log with its reason; the relationship
never reaches NORMAL and no AMP command runs (no partner is ever
authenticated, no Connect is answered).  Finally the right primary
connects and the pair reaches NORMAL: the refusals were the certificates',
not the set-up's.
"""

from __future__ import annotations

import errno
import socket
import time
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.integration.netns import tempDir, waitFor
from tests.integration.pair import (
    NORMAL,
    PKI,
    FailoverServer,
    Ports,
    Relationship,
    identityOf,
    shortDirectory,
    useNamespace,
)
from tests.integration.serverproc import Subnet, poolOf, serverSkipReason

RELATIONSHIP = "pair"
LINK_NET = IPv6Network("fd6a:5e1f:e::/64")
LINK_PD = IPv6Network("fd6a:5e1f:e100::/48")

#: Log lines that would show a partner got past authentication, or that an
#: AMP command (Connect, ...) was handled.
AUTHENTICATED = (
    "authenticated as",
    "connected to the partner",
    "refused Connect",
    "protocol violation",
    "partner connected",
    "the partner rejected",
)


def ampBox(**fields: str) -> bytes:
    """An AMP box: length-prefixed keys and values, ended by an empty key."""
    out = b""
    for key, value in fields.items():
        k, v = key.encode(), value.encode()
        out += len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
    return out + b"\x00\x00"


class TLSRefusalTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        reason = serverSkipReason()
        if reason:
            raise self.skipTest(reason)

    async def test_badPrimariesRefused(self) -> None:
        """
        Four bad partners in turn, then the good one; see the module docstring.
        """
        directory = tempDir(self)
        ns = useNamespace(self, "tls")
        ports = Ports.choose(ns, 6)
        pki = PKI(directory / "pki")
        sockets = shortDirectory(self)
        subnet = Subnet(
            "link",
            LINK_NET,
            pools=[poolOf(LINK_NET, 0x1000, 0x1FFF)],
            pdPools=[(LINK_PD, 56)],
            preferred=200,
            valid=300,
            t1=100,
            t2=160,
        )
        sCert, sKey = pki.server("secondary", dns=[identityOf("secondary")])
        tcpPort = ports.tcp[0]
        secondary = FailoverServer(
            self, "secondary", directory / "secondary", sockets, subnets=[subnet],
            relationships=[Relationship(RELATIONSHIP, "secondary", ["link"], sCert, sKey,
                                        pki.caPath, identityOf("primary"),
                                        partnerAddress="::1", listenAddress="::1",
                                        listenPort=tcpPort, mclt=600)],
            ns=ns, port=ports.udp[0],
        )  # fmt: skip
        secondary.start()
        await secondary.ready()

        def primary(name: str, cert: Path, key: Path, ca: Path, udp: int) -> FailoverServer:
            return FailoverServer(
                self, name, directory / name, sockets, subnets=[subnet],
                relationships=[Relationship(RELATIONSHIP, "primary", ["link"], cert, key, ca,
                                            identityOf("secondary"), partnerAddress="::1",
                                            partnerPort=tcpPort, mclt=600)],
                ns=ns, port=udp,
            )  # fmt: skip

        otherCA = CertificateAuthority("another CA")
        cases: list[tuple[str, FailoverServer | None, tuple[str, ...]]] = []
        # 1. A certificate with the right name from a CA the secondary does
        #    not trust (the primary trusts both, so that it is the secondary
        #    that judges).
        cert, key = pki.server("otherca", dns=[identityOf("primary")], ca=otherCA)
        cases.append(
            (
                "certificate from another CA",
                primary("otherca", cert, key, pki.bundle("both-cas.pem", otherCA), ports.udp[1]),
                ("TLS handshake (incoming)", "failed", "certificate verify failed"),
            )
        )
        # 2. Our CA, but another identity.
        cert, key = pki.server("intruder", dns=[identityOf("intruder")])
        cases.append(
            (
                "wrong identity",
                primary("intruder", cert, key, pki.caPath, ports.udp[2]),
                ("Refused partner connection (incoming)", "intruder.d6ha.test", "not valid"),
            )
        )
        # 3. Our CA, the right identity, expired yesterday.
        cert, key = pki.server("expired", dns=[identityOf("primary")], isExpired=True)
        cases.append(
            (
                "expired certificate",
                primary("expired", cert, key, pki.caPath, ports.udp[3]),
                ("TLS handshake (incoming)", "failed", "expired"),
            )
        )
        # 4. No TLS at all: an AMP Connect box in plaintext.
        cases.append(("plaintext AMP", None, ("TLS handshake (incoming)", "failed")))

        seenReasons: list[str] = []
        for what, bad, expected in cases:
            before = len(secondary.logLines())
            started = time.monotonic()
            extra = ""
            if bad is not None:
                bad.start()
                await bad.ready()
            else:
                extra = await self.plaintext(ns, tcpPort)

            def refused(expected: tuple[str, ...] = expected, before: int = before) -> list[str]:
                lines = secondary.log().splitlines()[before:]
                return [line for line in lines if all(e in line for e in expected)]

            def details(bad: FailoverServer | None = bad) -> str:
                return secondary.logTail() + ("\n" + bad.logTail() if bad is not None else "")

            lines = await waitFor(
                refused, 15, f"the secondary to refuse the {what}", details=details
            )
            took = time.monotonic() - started
            seenReasons.append(f"{what} ({took:.1f}s): {lines[0].split('] ', 1)[-1]}{extra}")
            if bad is not None:
                entry = bad.relationship(RELATIONSHIP)
                assert entry is not None
                self.assertNotEqual(entry["state"], NORMAL, bad.logTail())
                self.assertFalse(entry["connected"], bad.logTail())
                peerView = [
                    line.split("] ", 1)[-1]
                    for line in bad.log().splitlines()
                    if "partner connection (outgoing)" in line.lower()
                    or "TLS handshake (outgoing)" in line
                ]
                seenReasons.append(f"  the {bad.name} primary saw: {peerView[:2]}")
                bad.stop()
            entry = secondary.relationship(RELATIONSHIP)
            assert entry is not None
            self.assertNotEqual(entry["state"], NORMAL, secondary.logTail())
            self.assertFalse(entry["connected"])
            self.assertIsNone(entry.get("partner_state"), secondary.logTail())

        leaked = [
            line for line in secondary.log().splitlines() if any(a in line for a in AUTHENTICATED)
        ]
        self.assertEqual(leaked, [], "a bad partner got past authentication")
        self.assertNotIn(NORMAL, secondary.seen.get(RELATIONSHIP, []))
        statesWhileRefusing = list(secondary.seen.get(RELATIONSHIP, []))

        # The right primary is accepted: the set-up was not the problem.
        cert, key = pki.server("primary", dns=[identityOf("primary")])
        good = primary("primary", cert, key, pki.caPath, ports.udp[4])
        good.start()
        await good.ready()
        await secondary.waitState(RELATIONSHIP, NORMAL, 30, connected=True)
        await good.waitState(RELATIONSHIP, NORMAL, 10, connected=True)
        print("\nTLS refusals seen by the secondary:\n" + "\n".join(seenReasons))
        print(f"secondary states while refusing: {statesWhileRefusing}")

    async def plaintext(self, ns: Any, port: int) -> str:
        """
        Connect with a plain TCP socket, send an AMP Connect box, and see
        how the secondary answers (a TLS alert, or the connection closed).
        """
        sock = ns.socket(socket.AF_INET6, socket.SOCK_STREAM) if ns is not None else (
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        )  # fmt: skip
        self.addCleanup(sock.close)
        sock.settimeout(5)
        sock.connect(("::1", port))
        sock.sendall(
            ampBox(
                _ask="1",
                _command="Connect",
                version="1",
                relationship=RELATIONSHIP,
                role="primary",
                mclt="600",
            )  # fmt: skip
        )
        sock.setblocking(False)
        received: list[bytes] = []
        closed: list[str] = []

        def answered() -> bool:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return False
            except OSError as e:
                closed.append(errno.errorcode.get(e.errno or 0, str(e)))
                return True
            if not data:
                closed.append("EOF")
                return True
            received.append(data)
            return False

        await waitFor(answered, 15, "the secondary to close the plaintext connection")
        data = b"".join(received)
        kind = "a TLS alert" if data[:1] == b"\x15" else ("nothing" if not data else "other bytes")
        return f"; the client got {kind} ({data[:16].hex()}) then {closed[0]}"
