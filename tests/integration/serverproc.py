# -*- test-case-name: tests.integration.test_clients -*-
"""
The dhcp6ha server as a real process for the integration tests: its ini
file, starting it with twistd (in a namespace or not), waiting until it
listens, killing it, and reading its SQLite lease database read-only.

The database is read with plain C{sqlite3} and SQL of our own (schema of
L{dhcp6ha.leases.sqlite}, version 1) rather than through the store, so the
test sees exactly what is on disk, from another process, as a crash would
leave it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from tests.integration.netns import (
    REPO,
    Capture,
    CleanupRegistry,
    Namespace,
    Process,
    run,
    veth,
    waitFor,
)

#: Prefixes of our own (ULA), unlikely to clash with other test runs.
LAN = IPv6Network("fd6a:5e1f:1::/64")
FAR = IPv6Network("fd6a:5e1f:2::/64")
LOOP = IPv6Network("fd6a:5e1f:3::/64")
LAN_PD = IPv6Network("fd6a:5e1f:ff00::/40")
FAR_PD = IPv6Network("fd6a:5e1f:fe00::/40")
LOOP_PD = IPv6Network("fd6a:5e1f:fd00::/40")
LAN_DNS = LAN.network_address + 0x53
LAN_DOMAIN = "d6ha.test"


@dataclass
class Subnet:
    """One C{[subnet:NAME]} section; short lifetimes so that renewals come quickly."""

    name: str
    prefix: IPv6Network
    interface: str | None = None
    pools: Sequence[tuple[IPv6Address, IPv6Address]] = ()
    pdPools: Sequence[tuple[IPv6Network, int]] = ()
    preferred: int = 6
    valid: int = 10
    t1: int = 2
    t2: int = 3
    extra: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"[subnet:{self.name}]", f"prefix = {self.prefix}"]
        if self.interface:
            lines.append(f"interface = {self.interface}")
        if self.pools:
            lines.append("pools = " + ", ".join(f"{a}-{b}" for a, b in self.pools))
        if self.pdPools:
            lines.append(
                "pd-pools = " + ", ".join(f"{p} delegate /{length}" for p, length in self.pdPools)
            )
        lines += [
            f"preferred-lifetime = {self.preferred}",
            f"valid-lifetime = {self.valid}",
            f"pd-preferred-lifetime = {self.preferred}",
            f"pd-valid-lifetime = {self.valid}",
            f"t1 = {self.t1}",
            f"t2 = {self.t2}",
            "rapid-commit = no",
        ]
        lines += [f"{k} = {v}" for k, v in self.extra.items()]
        return "\n".join(lines) + "\n"


def poolOf(prefix: IPv6Network, first: int, last: int) -> tuple[IPv6Address, IPv6Address]:
    """The pool C{prefix + first} to C{prefix + last}."""
    base = prefix.network_address
    return (base + first, base + last)


def writeConfig(
    path: Path,
    database: Path,
    subnets: Sequence[Subnet],
    interfaces: Sequence[str] = (),
    address: str = "::",
    port: int = 547,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write the server's ini file."""
    lines = [
        "; written by tests/integration/serverproc.py",
        "[server]",
        "interfaces = " + ", ".join(interfaces),
        f"address = {address}",
        f"port = {port}",
        f"database = {database}",
    ]
    lines += [f"{k} = {v}" for k, v in (extra or {}).items()]
    path.write_text("\n".join(lines) + "\n\n" + "\n".join(s.text() for s in subnets))
    return path


def serverTree() -> Path:
    """
    The checkout the server runs from: this one, or C{$D6HA_SERVER_TREE}
    (e.g. a C{git archive} of another commit, to compare or bisect).
    """
    return Path(os.environ.get("D6HA_SERVER_TREE") or REPO)


def twistdCommand(config: Path) -> list[str]:
    """C{twistd -n --pidfile= dhcp6ha --config FILE} with this venv's Python."""
    twistd = Path(sys.executable).parent / "twistd"
    prefix = (
        [str(twistd)]
        if twistd.exists()
        else [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    )
    return [*prefix, "-n", "--pidfile=", "dhcp6ha", "--config", str(config)]


def serverSkipReason() -> str | None:
    """Skip when the server cannot be started from this checkout yet."""
    tree = serverTree()
    if not (tree / "twisted" / "plugins" / "dhcp6ha_plugin.py").exists():
        return "the dhcp6ha twistd plugin (twisted/plugins/dhcp6ha_plugin.py) is missing"
    if not (tree / "dhcp6ha" / "tap.py").exists():
        return "dhcp6ha/tap.py is missing"
    return None


def freePort() -> int:
    """An unprivileged UDP port free on ::1 right now."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """
    One dhcp6ha server process, started with twistd from the repository
    (C{PYTHONPATH} = the checkout, so its C{twisted/plugins} is found).
    """

    def __init__(
        self,
        testCase: CleanupRegistry,
        config: Path,
        directory: Path,
        ns: Namespace | None = None,
        port: int = 547,
    ) -> None:
        self.testCase = testCase
        self.config = config
        self.directory = directory
        self.ns = ns
        self.port = port
        self.process: Process | None = None
        self.starts = 0

    def start(self) -> Process:
        self.starts += 1
        env = dict(os.environ)
        tree = serverTree()
        env["PYTHONPATH"] = str(tree) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["PYTHONUNBUFFERED"] = "1"
        log = self.directory / f"server-{self.starts}.log"
        args = twistdCommand(self.config)
        if self.ns is not None:
            self.process = self.ns.spawn(self.testCase, args, log, env=env, cwd=tree)
        else:
            self.process = Process(args, log, env=env, cwd=tree)
            self.testCase.addCleanup(self.process.stop)
        return self.process

    def listening(self) -> bool:
        cmd = ["ss", "-H", "-u", "-a", "-n", f"sport = :{self.port}"]
        if self.ns is not None:
            cmd = self.ns.command(*cmd)
        out = run(cmd, check=False).stdout
        return bool(out.strip())

    async def ready(self, timeout: float = 20.0) -> None:
        """Wait until the server process listens on its port (fail if it dies)."""
        proc = self.process
        assert proc is not None

        def check() -> bool:
            if not proc.running():
                raise AssertionError(
                    f"the server exited with status {proc.returncode}\n{proc.logTail(60)}"
                )
            return self.listening()

        await waitFor(check, timeout, "the server to listen", details=proc.logTail)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> int | None:
        assert self.process is not None
        return self.process.stop()

    def logTail(self, lines: int = 60) -> str:
        return self.process.logTail(lines) if self.process else ""


@dataclass(frozen=True)
class DBLease:
    """One row of the C{leases} table, as the tests need it."""

    address: IPv6Address
    prefix_length: int
    lease_type: str
    state: str
    duid: bytes
    iaid: int
    start_time_of_state: float
    cltt: float
    preferred_lifetime: int
    valid_lifetime: int
    expires: float


class LeaseDB:
    """The server's SQLite database, opened read-only for each query."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        uri = "file:" + str(self.path) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            return list(conn.execute(sql, tuple(params)).fetchall())
        finally:
            conn.close()

    def leases(self) -> list[DBLease]:
        rows = self._query(
            "SELECT address, prefix_length, lease_type, state, duid, iaid,"
            " start_time_of_state, cltt, preferred_lifetime, valid_lifetime, expires"
            " FROM leases ORDER BY address, prefix_length"
        )
        return [
            DBLease(
                IPv6Address(bytes(r[0])),
                int(r[1]),
                str(r[2]),
                str(r[3]),
                bytes(r[4]),
                int(r[5]),
                float(r[6]),
                float(r[7]),
                int(r[8]),
                int(r[9]),
                float(r[10]),
            )
            for r in rows
        ]

    def get(self, address: IPv6Address, prefix_length: int = 128) -> DBLease | None:
        for lease in self.leases():
            if lease.address == address and lease.prefix_length == prefix_length:
                return lease
        return None

    def byClient(self, duid: bytes, iaid: int | None = None) -> list[DBLease]:
        return [x for x in self.leases() if x.duid == duid and (iaid is None or x.iaid == iaid)]

    def metadata(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._query("SELECT key, value FROM metadata")}

    def describe(self) -> str:
        """The whole table, for failure messages."""
        try:
            return "--- leases ---\n" + "\n".join(
                f"{x.address}/{x.prefix_length} {x.lease_type} {x.state} duid={x.duid.hex()}"
                f" iaid={x.iaid:#x} cltt={x.cltt:.1f} expires={x.expires:.1f}"
                for x in self.leases()
            )
        except sqlite3.Error as e:
            return f"(cannot read {self.path}: {e})"


@dataclass
class Lan:
    """A server namespace and a client namespace on one link, the server running."""

    directory: Path
    serverNs: Namespace
    clientNs: Namespace
    serverIface: str
    clientIface: str
    server: ServerProcess
    db: LeaseDB
    capture: Capture

    def details(self) -> str:
        return "\n".join([self.server.logTail(), self.db.describe(), self.capture.text()])


async def startLan(
    testCase: CleanupRegistry,
    directory: Path,
    clientIface: str = "c0",
    subnet: Subnet | None = None,
) -> Lan:
    """
    Namespaces C{srv} and C{cli} joined by veth (C{s0} / C{clientIface}),
    the server on C{s0} (address C{LAN::1}) serving L{LAN} with an address
    pool, the prefix pool L{LAN_PD} (/56), DNS server L{LAN_DNS} and search
    domain L{LAN_DOMAIN}; a capture on the client side.
    """
    serverNs = Namespace.create(testCase, "srv")
    clientNs = Namespace.create(testCase, "cli")
    await veth(serverNs, "s0", clientNs, clientIface)
    serverNs.addAddress("s0", f"{LAN.network_address + 1}/64")
    capture = Capture(testCase, clientNs, clientIface, directory / "client.pcap")
    await capture.started()
    if subnet is None:
        subnet = Subnet(
            "lan",
            LAN,
            interface="s0",
            pools=[poolOf(LAN, 0x1000, 0x1FFF)],
            pdPools=[(LAN_PD, 56)],
            extra={"dns-servers": str(LAN_DNS), "domain-search": LAN_DOMAIN},
        )
    database = directory / "leases.sqlite"
    config = writeConfig(directory / "server.ini", database, [subnet], interfaces=["s0"])
    server = ServerProcess(testCase, config, directory, ns=serverNs)
    server.start()
    await server.ready()
    return Lan(directory, serverNs, clientNs, "s0", clientIface, server, LeaseDB(database),
               capture)  # fmt: skip
