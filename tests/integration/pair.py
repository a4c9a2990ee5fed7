# -*- test-case-name: tests.integration.test_failover -*-
"""
Failover pairs (and triples) of real dhcp6ha processes for the integration
tests: certificates made per test, ini files with C{[failover:NAME]}
sections, starting, SIGKILLing and restarting the processes, waiting for
relationship states through the control socket, and reading each server's
SQLite database from this process (with the replication marks:
C{pending_for}).

    pki = PKI(directory / "pki")
    servers = await startPair(self, directory)          # primary + secondary on ::1
    await servers.waitNormal()
    clients = servers.primary.relayedClients(self, LINK)  # RELAY-FORW to the primary
    ...
    servers.secondary.kill9(); servers.secondary.start(); await servers.secondary.ready()
    await waitAgree(self, servers.primary, servers.secondary, "pair")

Every server of a test runs in one network namespace of its own when we are
root (so fixed ports and C{::1} are ours alone), else on C{::1} in the
current namespace on free ports.  Each server has its own directory (its
ini file, database, logs: C{server-N.log}, one per start); control sockets
live in a short directory under C{/tmp} (the UNIX socket path limit), removed
at cleanup.

Status is read with L{dhcp6ha.ctl.request} (the library under
C{dhcp6ha-ctl}: the same JSON line protocol, without starting a Python
process for every poll); L{FailoverServer.ctl} runs the real command line
(C{dhcp6ha-ctl --socket PATH --json status}) when a test wants it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults

from tests.certs import CertificateAuthority, Issued, expired
from tests.integration import wire
from tests.integration.netns import (
    CleanupRegistry,
    ConditionTimeout,
    Namespace,
    netnsProblem,
    run,
    sleep,
    veth,
    waitFor,
)
from tests.integration.relayclient import Hop, Lease, RelayedClients, leasesOf
from tests.integration.serverproc import LeaseDB, ServerProcess, Subnet, poolOf, serverTree

#: Relationship states, as C{dhcp6ha-ctl --json status} spells them.
NORMAL = "normal"
COMMUNICATIONS_INTERRUPTED = "communications-interrupted"


# --- certificates ------------------------------------------------------------------------


class PKI:
    """
    A CA of our own and the certificates of one test, as PEM files in
    C{directory} (keys mode 0600).  L{tests.certs} makes them.
    """

    def __init__(self, directory: Path, commonName: str = "d6ha integration CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(commonName)
        self.caPath = self._write("ca.pem", self.ca.pem)

    def _write(self, name: str, data: bytes, private: bool = False) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        if private:
            path.chmod(0o600)
        return path

    def files(self, name: str, issued: Issued) -> tuple[Path, Path]:
        """Write C{issued} as C{NAME.pem} and C{NAME-key.pem}; return both paths."""
        return (
            self._write(name + ".pem", issued.certPEM),
            self._write(name + "-key.pem", issued.keyPEM, private=True),
        )

    def server(
        self,
        name: str,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        *,
        ca: CertificateAuthority | None = None,
        isExpired: bool = False,
    ) -> tuple[Path, Path]:
        """
        A server certificate (serverAuth and clientAuth) for these
        identities, from our CA or from C{ca}, possibly expired since
        yesterday; return (certificate, key) paths.
        """
        issuer = ca if ca is not None else self.ca
        if isExpired:
            issued = expired(issuer, dns=dns, ips=ips)
        else:
            issued = issuer.issue(name, dns=dns, ips=ips)
        return self.files(name, issued)

    def bundle(self, name: str, *cas: CertificateAuthority) -> Path:
        """A CA file holding several CA certificates (ours first)."""
        return self._write(name, self.ca.pem + b"".join(c.pem for c in cas))


# --- configuration -----------------------------------------------------------------------


@dataclass
class Relationship:
    """
    One C{[failover:NAME]} section.  Short timers by default, so that a
    dead partner is noticed quickly (a killed process closes its TCP
    connection anyway).
    """

    name: str
    role: str
    subnets: Sequence[str]
    certificate: Path
    key: Path
    ca: Path
    partnerIdentity: str
    partnerAddress: str | None = None
    partnerPort: int | None = None
    listenAddress: str | None = None
    listenPort: int | None = None
    mclt: int = 30
    heartbeat: float = 1.0
    unreachableAfter: float = 3.0
    idleTimeout: float = 10.0
    handshakeTimeout: float = 5.0
    maxUnacked: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"[failover:{self.name}]",
            f"role = {self.role}",
            "subnets = " + ", ".join(self.subnets),
            f"certificate = {self.certificate}",
            f"key = {self.key}",
            f"ca = {self.ca}",
            f"partner-identity = {self.partnerIdentity}",
            f"mclt = {self.mclt}",
            f"heartbeat-interval = {self.heartbeat:g}",
            f"unreachable-after = {self.unreachableAfter:g}",
            f"idle-timeout = {self.idleTimeout:g}",
            f"handshake-timeout = {self.handshakeTimeout:g}",
        ]
        if self.partnerAddress is not None:
            lines.append(f"partner-address = {self.partnerAddress}")
        if self.partnerPort is not None:
            lines.append(f"partner-port = {self.partnerPort}")
        if self.listenAddress is not None:
            lines.append(f"listen-address = {self.listenAddress}")
        if self.listenPort is not None:
            lines.append(f"listen-port = {self.listenPort}")
        if self.maxUnacked is not None:
            lines.append(f"max-unacked = {self.maxUnacked}")
        lines += [f"{k} = {v}" for k, v in self.extra.items()]
        return "\n".join(lines) + "\n"


def writeFailoverConfig(
    path: Path,
    database: Path,
    subnets: Sequence[Subnet],
    relationships: Sequence[Relationship],
    *,
    address: str = "::1",
    port: int = 547,
    interfaces: Sequence[str] = (),
    controlSocket: Path | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write a server's ini file: C{[server]}, its subnets, its relationships."""
    lines = [
        "; written by tests/integration/pair.py",
        "[server]",
        "interfaces = " + ", ".join(interfaces),
        f"address = {address}",
        f"port = {port}",
        f"database = {database}",
        "commit-delay = 0",
    ]
    if controlSocket is not None:
        lines.append(f"control-socket = {controlSocket}")
    lines += [f"{k} = {v}" for k, v in (extra or {}).items()]
    text = "\n".join(lines) + "\n\n" + "\n".join(s.text() for s in subnets)
    text += "\n" + "\n".join(r.text() for r in relationships)
    path.write_text(text)
    return path


def shortDirectory(testCase: CleanupRegistry) -> Path:
    """
    A new directory under C{/tmp} with a short name, for UNIX sockets
    (at most 107 bytes of path; trial's temporary directories are deeper);
    removed at cleanup.
    """
    path = Path(tempfile.mkdtemp(prefix="d6ha-"))
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def freeTCPPort() -> int:
    """A TCP port free on ::1 right now."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


# --- the database, with the replication marks ---------------------------------------------

#: What two partners' records of one lease must agree on:
#: (lease type, state, client DUID in hex, IAID).
Binding = tuple[str, str, str, int]
#: A lease's key: (address or prefix, prefix length).
LeaseKey = tuple[IPv6Address, int]


class ReplicaDB(LeaseDB):
    """L{LeaseDB} plus the failover columns (schema 2)."""

    def pendingCount(self, relationship: str | None = None) -> int:
        """Bindings marked as not yet acknowledged by a partner (of C{relationship})."""
        if relationship is None:
            rows = self._query("SELECT count(*) FROM leases WHERE pending_for IS NOT NULL")
        else:
            rows = self._query("SELECT count(*) FROM leases WHERE pending_for = ?", (relationship,))
        return int(rows[0][0])

    def pendingKeys(self, relationship: str) -> set[LeaseKey]:
        """The keys of the bindings not yet acknowledged by C{relationship}'s partner."""
        rows = self._query(
            "SELECT address, prefix_length FROM leases WHERE pending_for = ?", (relationship,)
        )
        return {(IPv6Address(bytes(r[0])), int(r[1])) for r in rows}

    def bindings(self, where: Callable[[LeaseKey], bool] | None = None) -> dict[LeaseKey, Binding]:
        """Every record (or those whose key passes C{where}), by key."""
        out: dict[LeaseKey, Binding] = {}
        for x in self.leases():
            key = (x.address, x.prefix_length)
            if where is None or where(key):
                out[key] = (x.lease_type, x.state, x.duid.hex(), x.iaid)
        return out

    def safeBindings(self) -> dict[LeaseKey, Binding] | None:
        """L{bindings}, or C{None} while the database cannot be read (not created yet)."""
        try:
            return self.bindings()
        except Exception:  # noqa: BLE001 - sqlite3.Error, missing file: not there yet
            return None


def describeDB(db: LeaseDB, limit: int = 80) -> str:
    """
    The records of C{db} for a failure message, without the FREE and
    FREE-BACKUP ones (only counted: the primary lends half its prefixes).
    """
    try:
        leases = db.leases()
    except Exception as e:  # noqa: BLE001 - diagnostics only
        return f"(cannot read {db.path}: {e})"
    shown = [x for x in leases if x.state not in ("free", "free-backup")]
    lines = [
        f"{x.address}/{x.prefix_length} {x.lease_type} {x.state} duid={x.duid.hex()}"
        f" iaid={x.iaid:#x} cltt={x.cltt:.2f} stos={x.start_time_of_state:.2f}"
        f" expires={x.expires:.1f}"
        for x in shown[:limit]
    ]
    hidden = len(leases) - len(shown)
    return (
        f"--- leases in {db.path.parent.name} ({len(leases)}; {hidden} free/free-backup"
        " not shown) ---\n" + "\n".join(lines)
    )


def describeDifferences(
    left: dict[LeaseKey, Binding], right: dict[LeaseKey, Binding], names: tuple[str, str]
) -> list[str]:
    """The keys on which two binding tables differ, in words."""
    out = []
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key), right.get(key)
        if a != b:
            out.append(f"{key[0]}/{key[1]}: {names[0]} {a}, {names[1]} {b}")
    return out


# --- one server process --------------------------------------------------------------------


class FailoverServer:
    """
    One dhcp6ha process of a failover pair or triple: its files, its process
    (a L{ServerProcess}), its database and its control socket.
    """

    def __init__(
        self,
        testCase: CleanupRegistry,
        name: str,
        directory: Path,
        sockets: Path,
        *,
        subnets: Sequence[Subnet],
        relationships: Sequence[Relationship],
        ns: Namespace | None,
        address: str = "::1",
        port: int = 547,
        interfaces: Sequence[str] = (),
    ) -> None:
        self.testCase = testCase
        self.name = name
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.database = directory / "leases.sqlite"
        self.controlSocket = sockets / (name + ".ctl")
        self.subnets = list(subnets)
        self.relationships = list(relationships)
        self.ns = ns
        self.address = address
        self.port = port
        self.interfaces = list(interfaces)
        self.config = self.writeConfig()
        self.process = ServerProcess(testCase, self.config, directory, ns=ns, port=port)
        self.db = ReplicaDB(self.database)
        #: Every relationship state seen by L{poll}, in order, by relationship.
        self.seen: dict[str, list[str]] = {}

    def writeConfig(self) -> Path:
        """(Re)write the ini file from C{subnets} and C{relationships}."""
        return writeFailoverConfig(
            self.directory / "server.ini",
            self.database,
            self.subnets,
            self.relationships,
            address=self.address,
            port=self.port,
            interfaces=self.interfaces,
            controlSocket=self.controlSocket,
        )

    # -- process

    def start(self) -> None:
        self.process.start()

    async def ready(self, timeout: float = 30.0) -> None:
        """
        Wait until the process answers C{status} on its control socket and
        listens on its UDP port (fail at once if it exits).
        """
        proc = self.process.process
        assert proc is not None

        def check() -> bool:
            if not proc.running():
                raise AssertionError(
                    f"{self.name} exited with status {proc.returncode}\n{proc.logTail(60)}"
                )
            try:
                self.status()
            except Exception:  # noqa: BLE001 - not up yet
                return False
            return self.process.listening()

        await waitFor(check, timeout, f"{self.name} to start", interval=0.1, details=self.logTail)

    def kill9(self) -> None:
        """SIGKILL (and reap) the process."""
        self.process.kill9()

    def stop(self) -> int | None:
        return self.process.stop()

    def running(self) -> bool:
        return self.process.process is not None and self.process.process.running()

    # -- logs

    def log(self) -> str:
        """Every start's log, in order."""
        parts = []
        for n in range(1, self.process.starts + 1):
            path = self.directory / f"server-{n}.log"
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(parts)

    def logTail(self, lines: int = 60) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def logLines(self, *needles: str) -> list[str]:
        """The log lines containing every one of C{needles}."""
        return [line for line in self.log().splitlines() if all(n in line for n in needles)]

    # -- control socket

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """C{status} over the control socket (L{dhcp6ha.ctl.request})."""
        from dhcp6ha.ctl import request

        result = request(str(self.controlSocket), {"command": "status"}, timeout=timeout)
        assert isinstance(result, dict)
        return result

    def relationship(self, name: str) -> dict[str, Any] | None:
        """One relationship's entry of C{status}, or C{None} if absent."""
        for entry in self.status().get("relationships") or []:
            if entry.get("name") == name:
                self._note(name, entry)
                return dict(entry)
        return None

    def _note(self, name: str, entry: dict[str, Any]) -> None:
        state = entry.get("state")
        seen = self.seen.setdefault(name, [])
        if isinstance(state, str) and (not seen or seen[-1] != state):
            seen.append(state)

    def ctl(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run the real C{dhcp6ha-ctl --socket PATH ARGS...} and return its result."""
        env = dict(os.environ)
        tree = serverTree()
        env["PYTHONPATH"] = str(tree) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        args_ = [sys.executable, "-m", "dhcp6ha.ctl", "--socket", str(self.controlSocket), *args]
        return subprocess.run(
            args_, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )

    def ctlStatus(self) -> dict[str, Any]:
        """C{dhcp6ha-ctl --socket PATH --json status}, parsed."""
        done = self.ctl("--json", "status")
        if done.returncode != 0:
            raise AssertionError(f"dhcp6ha-ctl exited {done.returncode}: {done.stderr}")
        result = json.loads(done.stdout)
        assert isinstance(result, dict)
        return result

    async def waitRelationship(
        self,
        name: str,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        details: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """
        Poll C{status} until relationship C{name}'s entry satisfies
        C{condition}; return the entry.  A process that exits fails at once.
        """

        def check() -> dict[str, Any] | None:
            if not self.running():
                raise AssertionError(f"{self.name} is not running\n{self.logTail()}")
            try:
                entry = self.relationship(name)
            except Exception:  # noqa: BLE001 - control socket not up yet
                return None
            if entry is not None and condition(entry):
                return entry
            return None

        return await waitFor(
            check,
            timeout,
            f"{self.name}: relationship {name}: {what} (states seen: {self.seen.get(name)})",
            interval=0.1,
            details=details or self.logTail,
        )

    async def waitState(
        self,
        name: str,
        state: str,
        timeout: float,
        *,
        connected: bool | None = None,
        details: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Wait until relationship C{name} is in C{state} (and C{connected}, if given)."""

        def condition(entry: dict[str, Any]) -> bool:
            if entry.get("state") != state:
                return False
            return connected is None or entry.get("connected") is connected

        return await self.waitRelationship(name, condition, timeout, state, details)

    # -- clients

    def relayedClients(
        self,
        testCase: CleanupRegistry,
        linkAddress: IPv6Address,
        interfaceId: bytes | None = None,
    ) -> RelayedClients:
        """Simulated relayed clients talking to this server (from its namespace)."""
        return RelayedClients(
            testCase,
            (self.address, self.port),
            [Hop(linkAddress, interfaceId)],
            ns=self.ns,
            bindAddress=self.address,
            details=self.logTail,
        )

    def serverDuid(self) -> bytes:
        """This server's DUID, as its database keeps it."""
        from dhcp6ha.message import duidFromText

        return duidFromText(self.db.metadata()["server-duid"])


# --- several servers ------------------------------------------------------------------------


@dataclass
class Servers:
    """The servers of one test, by name, and what they share."""

    directory: Path
    ns: Namespace | None
    pki: PKI
    servers: dict[str, FailoverServer]

    def __getitem__(self, name: str) -> FailoverServer:
        return self.servers[name]

    @property
    def primary(self) -> FailoverServer:
        return self.servers["primary"]

    @property
    def secondary(self) -> FailoverServer:
        return self.servers["secondary"]

    def details(self) -> str:
        """Every server's log tail and database, for failure messages."""
        parts = []
        for server in self.servers.values():
            parts.append(server.logTail(40))
            parts.append(describeDB(server.db))
        return "\n".join(parts)

    async def waitNormal(self, relationship: str, *names: str, timeout: float = 30.0) -> None:
        """Wait until C{relationship} is NORMAL and connected on each of C{names}."""
        for name in names:
            await self.servers[name].waitState(
                relationship, NORMAL, timeout, connected=True, details=self.details
            )

    async def startNormal(self, relationship: str, timeout: float = 30.0) -> None:
        """
        Start the secondary, then the primary; wait until both are ready and
        C{relationship} is NORMAL and connected on both.
        """
        self.secondary.start()
        self.primary.start()
        await self.secondary.ready()
        await self.primary.ready()
        await self.waitNormal(relationship, "primary", "secondary", timeout=timeout)


def useNamespace(testCase: CleanupRegistry, role: str) -> Namespace | None:
    """A namespace of our own when we are root, else C{None} (the current one)."""
    if netnsProblem() is None:
        return Namespace.create(testCase, role)
    return None


@dataclass
class Ports:
    """The UDP and TCP ports of one test's servers (fixed in a private namespace)."""

    udp: list[int]
    tcp: list[int]

    @classmethod
    def choose(cls, ns: Namespace | None, count: int) -> Ports:
        if ns is not None:
            return cls([5547 + i for i in range(count)], [6647 + i for i in range(count)])
        from tests.integration.serverproc import freePort

        return cls([freePort() for _ in range(count)], [freeTCPPort() for _ in range(count)])


def identityOf(name: str) -> str:
    """The DNS name a server's certificate carries (under .test, never resolved)."""
    return f"{name}.d6ha.test"


async def startPair(
    testCase: CleanupRegistry,
    directory: Path,
    subnets: Sequence[Subnet],
    *,
    relationship: str = "pair",
    mclt: int = 30,
    maxUnacked: int | None = None,
    start: bool = True,
) -> Servers:
    """
    A primary and a secondary on C{::1} (in a namespace of their own when
    we are root), both serving C{subnets}, one relationship covering them
    all; started (secondary first), not yet waited for NORMAL.
    """
    ns = useNamespace(testCase, "pair")
    ports = Ports.choose(ns, 2)
    pki = PKI(directory / "pki")
    sockets = shortDirectory(testCase)
    names = [s.name for s in subnets]
    pCert, pKey = pki.server("primary", dns=[identityOf("primary")])
    sCert, sKey = pki.server("secondary", dns=[identityOf("secondary")])
    primary = FailoverServer(
        testCase,
        "primary",
        directory / "primary",
        sockets,
        subnets=subnets,
        relationships=[
            Relationship(
                relationship,
                "primary",
                names,
                pCert,
                pKey,
                pki.caPath,
                identityOf("secondary"),
                partnerAddress="::1",
                partnerPort=ports.tcp[0],
                mclt=mclt,
                maxUnacked=maxUnacked,
            )
        ],  # fmt: skip
        ns=ns,
        port=ports.udp[0],
    )
    secondary = FailoverServer(
        testCase,
        "secondary",
        directory / "secondary",
        sockets,
        subnets=subnets,
        relationships=[
            Relationship(
                relationship,
                "secondary",
                names,
                sCert,
                sKey,
                pki.caPath,
                identityOf("primary"),
                listenAddress="::1",
                listenPort=ports.tcp[0],
                mclt=mclt,
                maxUnacked=maxUnacked,
            )
        ],  # fmt: skip
        ns=ns,
        port=ports.udp[1],
    )
    servers = Servers(directory, ns, pki, {"primary": primary, "secondary": secondary})
    if start:
        secondary.start()
        primary.start()
        await secondary.ready()
        await primary.ready()
    return servers


async def waitAgree(
    left: FailoverServer,
    right: FailoverServer,
    relationship: str,
    timeout: float,
    where: Callable[[LeaseKey], bool] | None = None,
    details: Callable[[], str] | None = None,
) -> dict[LeaseKey, Binding]:
    """
    Wait until both databases hold the same bindings (those passing
    C{where}) and neither has an unacknowledged update for C{relationship};
    return the bindings.
    """
    last: list[str] = []
    agreed: dict[LeaseKey, Binding] = {}

    def check() -> bool:
        a, b = left.db.safeBindings(), right.db.safeBindings()
        if a is None or b is None:
            return False
        if where is not None:
            a = {k: v for k, v in a.items() if where(k)}
            b = {k: v for k, v in b.items() if where(k)}
        diff = describeDifferences(a, b, (left.name, right.name))
        pending = (left.db.pendingCount(relationship), right.db.pendingCount(relationship))
        last[:] = diff[:20] + [f"pending: {left.name} {pending[0]}, {right.name} {pending[1]}"]
        if diff or any(pending):
            return False
        agreed.update(a)
        return True

    def explain() -> str:
        return "\n".join(last) + ("\n" + details() if details is not None else "")

    await waitFor(
        check, timeout, f"{left.name} and {right.name} to agree", interval=0.2, details=explain
    )
    return agreed


# --- one link shared by several namespaces -------------------------------------------------


@dataclass
class SharedLink:
    """
    A bridge (C{br0}, multicast snooping off, so that ff02::1:2 reaches
    every port) in a namespace of its own, and one namespace per member
    joined to it by a veth pair: two servers and a client on one link
    (TESTING-NOTES.md: loopback is not enough for real clients).

    @ivar members: member name to (namespace, interface on the link).
    """

    bridge: Namespace
    members: dict[str, tuple[Namespace, str]]

    def __getitem__(self, name: str) -> tuple[Namespace, str]:
        return self.members[name]


async def sharedLink(
    testCase: CleanupRegistry, members: Sequence[tuple[str, str, str | None]]
) -> SharedLink:
    """
    Build a L{SharedLink}: for each (name, interface, MAC or C{None} for a
    random one), a namespace C{name} whose C{interface} is a port of the
    bridge.
    """
    bridge = Namespace.create(testCase, "br")
    bridge.run("ip", "link", "add", "br0", "type", "bridge")
    bridge.run("ip", "link", "set", "dev", "br0", "type", "bridge", "mcast_snooping", "0",
               "stp_state", "0")  # fmt: skip
    bridge.run("ip", "link", "set", "br0", "up")
    out: dict[str, tuple[Namespace, str]] = {}
    for index, (name, iface, mac) in enumerate(members):
        ns = Namespace.create(testCase, name)
        port = f"b{index}"
        await veth(bridge, port, ns, iface, macB=mac)
        bridge.run("ip", "link", "set", port, "master", "br0")
        out[name] = (ns, iface)
    return SharedLink(bridge, out)


@dataclass
class LinkedPair:
    """
    A failover pair on a link shared with clients (L{pairOnSharedLink});
    tests extend it with their captures and diagnostics.
    """

    directory: Path
    link: SharedLink
    servers: Servers

    @property
    def primary(self) -> FailoverServer:
        return self.servers.primary

    @property
    def secondary(self) -> FailoverServer:
        return self.servers.secondary


async def pairOnSharedLink(
    testCase: CleanupRegistry,
    directory: Path,
    clients: Sequence[tuple[str, str, str | None]],
    *,
    lan: IPv6Network,
    lanPD: IPv6Network,
    preferred: int,
    valid: int,
    t1: int,
    t2: int,
    relationship: str,
    partnerLink: IPv6Network | None = None,
    **options: Any,
) -> LinkedPair:
    """
    A failover pair on a link shared with real or simulated clients
    (L{sharedLink}): the primary in the member C{prim}, the secondary in
    C{sec}, each with C{lan0} on the bridge at C{lan}::1 and ::2 (bridge
    ports C{b0} and C{b1}), then the C{clients} members.  Both serve one
    subnet C{lan} on C{lan0} (addresses C{::1000-::1fff} of C{lan}, /56
    prefixes of C{lanPD}, the lifetimes and timers given) with one
    relationship C{relationship} covering it, the secondary listening on
    port 647.  The partners talk over the client link, or, given a
    C{partnerLink}, over a veth pair C{fo0} of their own between the two
    namespaces, at C{partnerLink}::1 and ::2.

    Configured, not started (L{Servers.startNormal}): the test can start
    its captures first.

    @param options: further L{Relationship} fields, the same on both sides
        (C{mclt}, C{heartbeat}, C{unreachableAfter}...).
    """
    link = await sharedLink(testCase, [("prim", "lan0", None), ("sec", "lan0", None), *clients])
    primNs, _ = link["prim"]
    secNs, _ = link["sec"]
    primNs.addAddress("lan0", f"{lan.network_address + 1}/64")
    secNs.addAddress("lan0", f"{lan.network_address + 2}/64")
    partners = lan
    if partnerLink is not None:
        partners = partnerLink
        await veth(primNs, "fo0", secNs, "fo0", macB=None)
        primNs.addAddress("fo0", f"{partnerLink.network_address + 1}/64")
        secNs.addAddress("fo0", f"{partnerLink.network_address + 2}/64")
    primaryAddress, secondaryAddress = partners.network_address + 1, partners.network_address + 2
    pki = PKI(directory / "pki")
    sockets = shortDirectory(testCase)
    subnet = Subnet(
        "lan",
        lan,
        interface="lan0",
        pools=[poolOf(lan, 0x1000, 0x1FFF)],
        pdPools=[(lanPD, 56)],
        preferred=preferred,
        valid=valid,
        t1=t1,
        t2=t2,
    )
    pCert, pKey = pki.server("primary", dns=[identityOf("primary")])
    sCert, sKey = pki.server("secondary", dns=[identityOf("secondary")])
    primary = FailoverServer(
        testCase, "primary", directory / "primary", sockets, subnets=[subnet],
        relationships=[Relationship(relationship, "primary", ["lan"], pCert, pKey, pki.caPath,
                                    identityOf("secondary"), partnerAddress=str(secondaryAddress),
                                    partnerPort=647, **options)],
        ns=primNs, address="::", port=547, interfaces=["lan0"],
    )  # fmt: skip
    secondary = FailoverServer(
        testCase, "secondary", directory / "secondary", sockets, subnets=[subnet],
        relationships=[Relationship(relationship, "secondary", ["lan"], sCert, sKey, pki.caPath,
                                    identityOf("primary"), partnerAddress=str(primaryAddress),
                                    listenAddress=str(secondaryAddress), listenPort=647,
                                    **options)],
        ns=secNs, address="::", port=547, interfaces=["lan0"],
    )  # fmt: skip
    servers = Servers(directory, None, pki, {"primary": primary, "secondary": secondary})
    return LinkedPair(directory, link, servers)


# --- relayed clients: many at once ----------------------------------------------------------

DECLINE = 9


@dataclass
class Grant:
    """What a Reply granted to one client IA, and from which server."""

    duid: bytes
    iaid: int
    pd: bool
    serverId: bytes
    leases: list[Lease]

    @property
    def keys(self) -> list[LeaseKey]:
        return [(x.address, x.prefixLength) for x in self.leases]


def clientDuid(n: int) -> bytes:
    """The DUID of simulated client C{n} (DUID-LL, distinct per C{n})."""
    return wire.duidLL(0x5E0000 + n)


async def concurrently(
    items: Sequence[Any], work: Callable[[Any], Awaitable[None]], concurrency: int = 8
) -> None:
    """Run C{work(item)} for every item, C{concurrency} at a time."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    await gatherResults(
        [Deferred.fromCoroutine(worker()) for _ in range(concurrency)], consumeErrors=True
    )


async def bindMany(
    clients: RelayedClients,
    numbers: Sequence[int],
    pdEvery: int = 3,
    concurrency: int = 8,
    onReply: Callable[[Grant], None] | None = None,
) -> dict[int, Grant]:
    """
    Solicit/Request for simulated clients C{numbers} (client C{n} asks for a
    prefix when C{n % pdEvery == 0}, else for an address; IAID C{n}); every
    one must be granted something.  Return the grants by client number.
    """
    grants: dict[int, Grant] = {}

    async def bind(n: int) -> None:
        duid, pd = clientDuid(n), n % pdEvery == 0
        _, reply = await clients.solicitRequest(duid, n, pd=pd, timeout=1.0, attempts=4)
        if reply.reply.msgType != wire.REPLY:
            raise AssertionError(f"client {n}: expected REPLY, got {reply.reply.msgType}")
        leases = leasesOf(reply.reply)
        serverId = reply.reply.get(wire.OPT_SERVERID)
        if not leases or serverId is None:
            raise AssertionError(f"client {n}: nothing granted: {reply.reply}")
        grant = Grant(duid, n, pd, serverId, leases)
        grants[n] = grant
        if onReply is not None:
            onReply(grant)

    await concurrently(numbers, bind, concurrency)
    return grants


async def clientMessage(
    clients: RelayedClients, msgType: int, grant: Grant, timeout: float = 1.0
) -> wire.Parsed:
    """
    Send Renew, Release or Decline (C{msgType}) for C{grant}'s leases to the
    server that granted them (its Server Identifier); return the Reply.
    """
    if grant.pd:
        ia = wire.iaPD(grant.iaid, [(x.address, x.prefixLength) for x in grant.leases])
    else:
        ia = wire.iaNA(grant.iaid, [x.address for x in grant.leases])
    exchange = await clients.exchange(
        msgType,
        [
            wire.option(wire.OPT_CLIENTID, grant.duid),
            wire.option(wire.OPT_SERVERID, grant.serverId),
            ia,
        ],
        clients.newPeerAddress(),
        timeout,
        attempts=4,
    )
    if exchange.reply.msgType != wire.REPLY:
        raise AssertionError(f"expected REPLY to {msgType}, got {exchange.reply.msgType}")
    return exchange.reply


def expectedBindings(grants: dict[int, Grant], states: dict[int, str]) -> dict[LeaseKey, Binding]:
    """
    The records the servers must hold for these grants: each lease for its
    client, in C{states[n]} (default C{"active"}).
    """
    out: dict[LeaseKey, Binding] = {}
    for n, g in grants.items():
        for key in g.keys:
            out[key] = ("pd" if g.pd else "na", states.get(n, "active"), g.duid.hex(), g.iaid)
    return out


# --- captures ----------------------------------------------------------------------------


@dataclass
class Captured:
    """One DHCPv6 message read from a pcap file."""

    time: float
    source: IPv6Address
    destination: IPv6Address
    sourcePort: int
    message: wire.Parsed

    @property
    def serverId(self) -> bytes | None:
        return self.message.get(wire.OPT_SERVERID)


def pcapMessages(path: Path) -> list[Captured]:
    """
    Every DHCPv6 message (UDP 546/547 over IPv6 over Ethernet, no extension
    headers) in a classic pcap file written by tcpdump; a truncated last
    record (tcpdump still writing) is ignored.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian, nano = "<", magic[0] == 0x4D
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian, nano = ">", magic[3] == 0x4D
    else:
        raise ValueError(f"{path}: not a pcap file")
    linkType = struct.unpack_from(endian + "I", data, 20)[0]
    out = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, caplen, _ = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        if offset + caplen > len(data):
            break
        frame = data[offset : offset + caplen]
        offset += caplen
        when = seconds + fraction / (1e9 if nano else 1e6)
        if linkType == 1:  # Ethernet
            if len(frame) < 14 or frame[12:14] != b"\x86\xdd":
                continue
            packet = frame[14:]
        elif linkType == 113:  # Linux cooked (tcpdump -i any)
            if len(frame) < 16 or frame[14:16] != b"\x86\xdd":
                continue
            packet = frame[16:]
        else:
            continue
        if len(packet) < 48 or packet[6] != 17:  # UDP, no extension headers
            continue
        source, destination = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
        sport, dport = struct.unpack_from("!HH", packet, 40)
        if not {sport, dport} & {546, 547}:
            continue
        try:
            message = wire.parse(packet[48:])
        except ValueError:
            continue
        out.append(Captured(when, source, destination, sport, message))
    return out


async def pause(seconds: float) -> None:
    """Let wall-clock time pass (for 'nothing happens' checks only)."""
    await sleep(seconds)


def elapsed(since: float) -> float:
    return time.monotonic() - since


__all__ = [
    "COMMUNICATIONS_INTERRUPTED",
    "DECLINE",
    "NORMAL",
    "PKI",
    "Binding",
    "Captured",
    "Grant",
    "LinkedPair",
    "bindMany",
    "clientDuid",
    "clientMessage",
    "concurrently",
    "expectedBindings",
    "pcapMessages",
    "ConditionTimeout",
    "FailoverServer",
    "LeaseKey",
    "Ports",
    "Relationship",
    "ReplicaDB",
    "Servers",
    "SharedLink",
    "pairOnSharedLink",
    "sharedLink",
    "describeDifferences",
    "elapsed",
    "freeTCPPort",
    "identityOf",
    "pause",
    "run",
    "shortDirectory",
    "startPair",
    "useNamespace",
    "waitAgree",
    "writeFailoverConfig",
]
