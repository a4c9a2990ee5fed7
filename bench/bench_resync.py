# -*- test-case-name: tests.test_queue -*-
"""
Resynchronisation of a large database (UPDREQALL), run by hand (not a test):

    .venv/bin/python bench/bench_resync.py [pair] [--bindings 1000000] [--pd 10000]
    .venv/bin/python bench/bench_resync.py inprocess [--transport amp|direct] [--profile]

C{pair} (the default) is the real thing: a database of C{--bindings} ACTIVE
IA_NA bindings plus C{--pd} delegated prefixes, all in the pools of the
relationship and all acked (no pending marks), is written straight into
SQLite through the store's own schema, for the server C{--full} (the
secondary by default), with a stored failover state of NORMAL, synced.
Then the pair is started as two real processes (C{twistd -n dhcp6ha},
loopback, mutual TLS with certificates from C{dhcp6ha-pki}, control
sockets), the other server with no database at all: it starts in RECOVER,
asks UPDREQALL, the full server streams every binding (L{UpdateQueue.sendAll},
pipelined BindingUpdate batches), UPDDONE, RECOVER-WAIT (MCLT is 1 s here),
RECOVER-DONE, NORMAL.  The bench polls both control sockets
(C{dhcp6ha-ctl --json status}) and the recovering server's SQLite file, and
prints the time from the start to UPDDONE (the recovering server leaves
RECOVER), to all bindings stored, to NORMAL; the bindings per second; and
the peak RSS (C{VmHWM}) of both processes.

C{inprocess} measures the same streaming without processes, TLS or
failover states, to find bottlenecks: the same generated database, an
L{UpdateQueue} over it calling L{receiveBindings} into a second, empty
store, either directly (C{--transport direct}: queue and stores only) or
through a loopback TCP AMP connection carrying the real L{BindingUpdate}
command (C{--transport amp}); both sides run in this one process (one
core), so its time is the sum of both servers' work.  C{--profile} prints
the top of a C{cProfile}.

C{--max-unacked N} sets both servers' C{max-unacked} (C{pair}: by default
the configuration's default, 2000 bindings in flight, which lets the
batches pipeline so that the recovering server commits, and fsyncs, about
2000 bindings per transaction; 100 makes it commit about 100 bindings per
round trip; C{inprocess}: 100 by default).  C{--full primary} gives the
database to the primary instead.  C{--profile ROLE} runs that server under cProfile
(its main thread) and prints the top; C{SORT} and C{TOP} in the
environment choose the order and the length.  Other work on the machine
slows both servers: the CPU seconds of each are printed too.

Everything lives in a temporary directory under C{--dir} (default
C{$TMPDIR}), removed at the end (C{--keep} keeps it); the servers are
stopped (SIGTERM, then SIGKILL) also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dhcp6ha.config import DEFAULT_MAX_UNACKED  # noqa: E402
from dhcp6ha.failover.machine import EndpointState, FailoverRecord  # noqa: E402
from dhcp6ha.failover.policy import partnerLifetime  # noqa: E402
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType  # noqa: E402
from dhcp6ha.leases.sqlite import SQL_UPSERT, _setUp, _toRow  # noqa: E402

RELATIONSHIP = "bench-pair"
SUBNET_PREFIX = "2001:db8:1::/64"
POOL_FIRST = IPv6Address("2001:db8:1::10:0")
POOL_SIZE = 1 << 21  # 2,097,152 addresses: room for 2 million bindings
PD_PREFIX = "2001:db8:100::/40"
PD_LENGTH = 56
VALID = 7200
PREFERRED = 3600

# --- the database -------------------------------------------------------------------------


def _rows(na: int, pd: int, now: float) -> Iterator[tuple[Any, ...]]:
    """
    The SQL_UPSERT rows of C{na} address and C{pd} prefix bindings, in key
    order: ACTIVE, one client each, acked by the partner as proposed
    (partner lifetime sent = acked = what the failover policy proposes),
    not pending.
    """
    pdBase = int(IPv6Address("2001:db8:100::"))
    version = 0
    for kind, count in ((LeaseType.NA, na), (LeaseType.PD, pd)):
        for i in range(count):
            version += 1
            if kind is LeaseType.NA:
                address = (int(POOL_FIRST) + i).to_bytes(16, "big")
                length = 128
            else:
                address = (pdBase + (i << (128 - PD_LENGTH))).to_bytes(16, "big")
                length = PD_LENGTH
            cltt = now - (i % 1800)
            proposed = partnerLifetime(cltt, VALID, VALID)
            yield (
                address,
                length,
                kind.value,
                "active",
                b"\x00\x01\x00\x01\x5e\x00\x00\x00" + version.to_bytes(6, "big"),
                1 if kind is LeaseType.NA else 2,
                cltt,
                cltt,
                PREFERRED,
                VALID,
                cltt + VALID,
                proposed,
                proposed,
                None,
                0,
                None,
                "active",
                cltt,
                version,
                None,
            )


def generate(path: str, na: int, pd: int, now: float, *, withState: bool = True) -> float:
    """
    Write a lease database of C{na} + C{pd} bindings at C{path} (the
    store's own schema, C{_setUp}), with a stored failover record (NORMAL,
    synced) when C{withState}; return the seconds it took.
    """
    started = time.perf_counter()
    first = next(_rows(1, 0, now))
    lease = Lease(
        lease_type=LeaseType.NA,
        address=POOL_FIRST,
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=first[4],
        iaid=1,
        start_time_of_state=now,
        cltt=now,
        preferred_lifetime=PREFERRED,
        valid_lifetime=VALID,
        expires=now + VALID,
        partner_lifetime_sent=first[11],
        partner_lifetime_acked=first[12],
        partner_state_acked=BindingState.ACTIVE,
        partner_stos_acked=now,
    )
    assert _toRow(lease, 1) == first, "the generated rows no longer match the schema"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        _setUp(connection)
        # A bulk load: durability of the load itself does not matter (the
        # file is checkpointed and synced at the end).
        connection.execute("PRAGMA synchronous = OFF")
        rows = _rows(na, pd, now)
        while True:
            chunk = [row for _, row in zip(range(100_000), rows, strict=False)]
            if not chunk:
                break
            connection.execute("BEGIN")
            connection.executemany(SQL_UPSERT, chunk)
            connection.execute("COMMIT")
        if withState:
            record = FailoverRecord(
                state=EndpointState.NORMAL,
                start_time=now - 3600,
                previous_state=EndpointState.COMMUNICATIONS_INTERRUPTED,
                previous_start_time=now - 7200,
                partner_state=EndpointState.NORMAL,
                partner_start_time=now - 3600,
                last_operation=now - 60,
                has_state=True,
                synced=True,
            )
            connection.execute(
                "INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)",
                ("failover." + RELATIONSHIP + ".state", record.toJSON()),
            )
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return time.perf_counter() - started


def countBindings(path: str) -> int:
    """The bindings in the database at C{path} (0 if there is none yet)."""
    if not os.path.exists(path):
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return 0
    try:
        ((count,),) = connection.execute("SELECT count(*) FROM leases").fetchall()
        return int(count)
    except sqlite3.Error:
        return 0
    finally:
        connection.close()


def peakRSS() -> int:
    """This process's peak RSS, in kB."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# --- in process ---------------------------------------------------------------------------


def runInProcess(args: argparse.Namespace, workdir: str) -> int:
    """Stream the generated database from one store into another, in this process."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
    from twisted.internet.protocol import Factory
    from twisted.protocols import amp

    from dhcp6ha.config import AddressPool, PrefixPool
    from dhcp6ha.failover.commands import BindingUpdate
    from dhcp6ha.failover.machine import Role
    from dhcp6ha.failover.protocol import checkBinding
    from dhcp6ha.failover.queue import UpdateQueue, receiveBindings
    from dhcp6ha.failover.relationship import Coverage
    from dhcp6ha.leases.sqlite import SQLiteLeaseStore

    now = time.time()
    source = os.path.join(workdir, "full.sqlite")
    target = os.path.join(workdir, "empty.sqlite")
    took = generate(source, args.bindings, args.pd, now, withState=False)
    total = args.bindings + args.pd
    print(f"generated {total} bindings in {took:.1f} s", flush=True)

    from ipaddress import IPv6Network

    coverage = Coverage(
        (AddressPool(POOL_FIRST, IPv6Address(int(POOL_FIRST) + POOL_SIZE - 1)),),
        (PrefixPool(IPv6Network(PD_PREFIX), PD_LENGTH),),
    )
    full = SQLiteLeaseStore(source, reactor)
    empty = SQLiteLeaseStore(target, reactor, replicate=lambda lease: RELATIONSHIP)
    queue = UpdateQueue(
        RELATIONSHIP,
        full,
        reactor,
        maxUnacked=args.max_unacked,
        partnerLifetime=lambda lease: partnerLifetime(
            lease.cltt, lease.valid_lifetime, lease.valid_lifetime
        ),
    )

    def receive(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        for box in boxes:
            problem = checkBinding(box)
            if problem is not None:
                raise ValueError(problem)
        return receiveBindings(
            empty, Role.PRIMARY, boxes, reactor.seconds(), configured=coverage.covers
        )

    class Receiver(amp.AMP):
        @BindingUpdate.responder
        def bindingUpdate(self, bindings: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
            return receive(bindings).addCallback(lambda results: {"results": results})

    result: dict[str, Any] = {}

    async def run() -> None:
        if args.transport == "amp":
            serverEndpoint: Any = TCP4ServerEndpoint
            port = await serverEndpoint(reactor, 0, interface="127.0.0.1").listen(
                Factory.forProtocol(Receiver)
            )
            client: Any = await TCP4ClientEndpoint(
                reactor, "127.0.0.1", port.getHost().port
            ).connect(Factory.forProtocol(amp.AMP))

            def send(boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
                d: Deferred[dict[str, Any]] = client.callRemote(BindingUpdate, bindings=boxes)
                return d.addCallback(lambda answer: answer["results"])

            queue.attach(send)
        else:
            queue.attach(receive)
        started = time.perf_counter()
        cpu = time.process_time()
        await queue.sendAll()
        result["seconds"] = time.perf_counter() - started
        result["cpu"] = time.process_time() - cpu
        queue.detach()
        if args.transport == "amp":
            client.transport.loseConnection()
            await port.stopListening()
        await full.close()
        await empty.close()

    failures: list[Any] = []

    def go() -> None:
        d = Deferred.fromCoroutine(run())
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    reactor.callWhenRunning(go)
    reactor.run()
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
            int(os.environ.get("TOP", "35"))
        )
    if failures:
        print(failures[0].getTraceback(), file=sys.stderr)
        return 1
    stored = countBindings(target)
    seconds = result["seconds"]
    print(
        f"transport {args.transport}, max-unacked {args.max_unacked}: {stored} of {total}"
        f" bindings stored in {seconds:.1f} s ({total / seconds:,.0f} bindings/s,"
        f" CPU {result['cpu']:.1f} s), sent {queue.sent}, acked {queue.acked},"
        f" rejected {queue.rejected}; peak RSS {peakRSS() / 1024:.0f} MB",
        flush=True,
    )
    return 0 if stored == total and queue.rejected == 0 else 1


# --- the main program -----------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=("pair", "inprocess"), default="pair")
    parser.add_argument("--bindings", type=int, default=1_000_000, help="IA_NA bindings")
    parser.add_argument("--pd", type=int, default=10_000, help="delegated prefixes")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--max-unacked",
        type=int,
        default=None,
        help=(
            "max-unacked of both servers (default: pair, the configuration's default,"
            f" {DEFAULT_MAX_UNACKED}; inprocess, 100)"
        ),
    )
    parser.add_argument(
        "--full",
        choices=ROLES,
        default="secondary",
        help="the server with the database (pair); the other recovers",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (pair)")
    parser.add_argument("--report", type=float, default=5.0, help="progress every (pair)")
    parser.add_argument("--transport", choices=("amp", "direct"), default="amp")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="both",
        default=None,
        choices=("primary", "secondary", "both"),
        help="print the top of a cProfile (inprocess: this process; pair: that server's"
        " main thread, under twistd --profiler=cprofile)",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-resync-", dir=args.dir)
    try:
        if args.mode == "inprocess":
            if args.max_unacked is None:
                args.max_unacked = 100
            return runInProcess(args, workdir)
        return runPair(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- the pair -----------------------------------------------------------------------------

ROLES = ("primary", "secondary")
IDENTITIES = {"primary": "primary.bench.test", "secondary": "secondary.bench.test"}


def freePort(kind: int) -> int:
    """A port on ::1 free now (C{socket.SOCK_STREAM} or C{SOCK_DGRAM})."""
    import socket

    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def writeConfig(
    path: Path,
    role: str,
    database: Path,
    control: Path,
    pki: Path,
    clientPort: int,
    partnerPort: int,
    maxUnacked: int | None,
) -> None:
    """The ini file of one server of the pair."""
    other = "secondary" if role == "primary" else "primary"
    last = IPv6Address(int(POOL_FIRST) + POOL_SIZE - 1)
    lines = [
        "; written by bench/bench_resync.py",
        "[server]",
        "address = ::1",
        f"port = {clientPort}",
        f"database = {database}",
        f"control-socket = {control}",
        "commit-delay = 0",
        "reclaim-interval = 10",
        "",
        "[subnet:bench]",
        f"prefix = {SUBNET_PREFIX}",
        f"pools = {POOL_FIRST}-{last}",
        f"pd-pools = {PD_PREFIX} delegate /{PD_LENGTH}",
        f"preferred-lifetime = {PREFERRED}",
        f"valid-lifetime = {VALID}",
        "",
        f"[failover:{RELATIONSHIP}]",
        f"role = {role}",
    ]
    if role == "primary":
        lines += ["partner-address = ::1", f"partner-port = {partnerPort}"]
    else:
        lines += ["listen-address = ::1", f"listen-port = {partnerPort}", "partner-address = ::1"]
    lines += [
        f"certificate = {pki / (role + '.pem')}",
        f"key = {pki / (role + '-key.pem')}",
        f"ca = {pki / 'ca.pem'}",
        f"partner-identity = {IDENTITIES[other]}",
        "subnets = bench",
        # RECOVER-WAIT lasts MCLT: 1 s, so that NORMAL follows the resync.
        "mclt = 1",
        # No prefixes handed to the secondary once NORMAL: the count of
        # bindings stays the one generated.
        "prefix-share = 0",
    ]
    if maxUnacked is not None:
        lines.append(f"max-unacked = {maxUnacked}")
    path.write_text("\n".join(lines) + "\n")


class Server:
    """One twistd process of the pair, its files and what the bench saw of it."""

    def __init__(self, role: str, directory: Path) -> None:
        self.role = role
        self.directory = directory
        self.config = directory / (role + ".ini")
        self.database = directory / (role + ".sqlite")
        self.control = directory / (role + ".ctl")
        self.logPath = directory / (role + ".log")
        self.profilePath = directory / (role + ".pstats")
        self.process: subprocess.Popen[bytes] | None = None
        self._logOffset = 0
        self._logTail = b""
        self.transitions: list[tuple[float, str]] = []
        self.maxRSS = 0

    def start(self, profile: bool = False) -> None:
        """Start C{twistd -n dhcp6ha} (under cProfile if C{profile})."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [twistd, "-n", "--pidfile="]
                + (
                    ["--profiler=cprofile", "--savestats", f"--profile={self.profilePath}"]
                    if profile
                    else []
                )
                + ["dhcp6ha", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.directory),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def procStatus(self) -> dict[str, int]:
        """VmRSS and VmHWM (kB) of the process, from /proc."""
        found: dict[str, int] = {}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        found[key] = int(value.split()[0])
        except OSError:
            pass
        self.maxRSS = max(self.maxRSS, found.get("VmRSS", 0))
        return found

    def cpuSeconds(self) -> float:
        """User + system CPU time of the process so far."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def readLog(self, now: float) -> None:
        """Note the state changes logged since the last call, at C{now}."""
        try:
            with open(self.logPath, "rb") as f:
                f.seek(self._logOffset)
                data = f.read()
        except OSError:
            return
        self._logOffset += len(data)
        lines = (self._logTail + data).split(b"\n")
        self._logTail = lines.pop()
        marker = f"Failover {RELATIONSHIP}: ".encode()
        for line in lines:
            at = line.find(marker)
            if at >= 0 and b" -> " in line[at:]:
                self.transitions.append((now, line[at + len(marker) :].decode().strip()))

    def entered(self, state: str) -> float | None:
        """When the log first showed this server entering C{state}."""
        for at, text in self.transitions:
            if text.endswith("-> " + state):
                return at
        return None

    def ctlStatus(self) -> dict[str, Any]:
        """C{dhcp6ha-ctl --socket PATH --json status}, the real command line."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dhcp6ha.ctl",
                "--socket",
                str(self.control),
                "--json",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        if done.returncode != 0:
            raise RuntimeError(f"dhcp6ha-ctl status of the {self.role}: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after C{timeout}; the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def logTail(self, lines: int = 30) -> str:
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def progress(path: Path) -> int:
    """
    How many address bindings the recovering server has stored, estimated
    cheaply: the bindings arrive in key order, so the largest address in
    the pool tells (an index seek, not a count).
    """
    if not path.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return 0
    try:
        rows = connection.execute(
            "SELECT address FROM leases WHERE prefix_length = 128 ORDER BY address DESC LIMIT 1"
        ).fetchall()
    except sqlite3.Error:
        return 0
    finally:
        connection.close()
    if not rows:
        return 0
    return int.from_bytes(rows[0][0], "big") - int(POOL_FIRST) + 1


def runPair(args: argparse.Namespace, workdir: str) -> int:
    """Generate, start the pair, watch the resync, print the figures."""
    directory = Path(workdir)
    pki = directory / "pki"
    subprocess.run(
        [sys.executable, "-m", "dhcp6ha.pki", "--quiet", str(pki)]
        + [f"--server={role}={IDENTITIES[role]}" for role in ROLES],
        check=True,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    servers = {role: Server(role, directory) for role in ROLES}
    full = servers[args.full]
    empty = servers["primary" if args.full == "secondary" else "secondary"]
    partnerPort = freePort(__import__("socket").SOCK_STREAM)
    for role, server in servers.items():
        writeConfig(
            server.config,
            role,
            server.database,
            server.control,
            pki,
            freePort(__import__("socket").SOCK_DGRAM),
            partnerPort,
            args.max_unacked,
        )
    total = args.bindings + args.pd
    took = generate(str(full.database), args.bindings, args.pd, time.time())
    size = full.database.stat().st_size / 1e6
    print(
        f"generated {total:,} bindings ({args.bindings:,} IA_NA + {args.pd:,} IA_PD) for the"
        f" {full.role} in {took:.1f} s ({size:.0f} MB); the {empty.role} has no database;"
        f" max-unacked {args.max_unacked if args.max_unacked is not None else 'default'}",
        flush=True,
    )
    try:
        return _watch(args, servers, full, empty, total)
    finally:
        for server in servers.values():
            server.stop()
        if args.profile:
            import pstats

            for server in servers.values():
                if server.profilePath.exists():
                    print(f"--- profile of the {server.role} (main thread) ---")
                    pstats.Stats(str(server.profilePath)).sort_stats(
                        os.environ.get("SORT", "tottime")
                    ).print_stats(int(os.environ.get("TOP", "35")))


def _watch(
    args: argparse.Namespace, servers: dict[str, Server], full: Server, empty: Server, total: int
) -> int:
    print(f"load average before the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    # The secondary listens, the primary connects: secondary first.
    started = time.monotonic()
    servers["secondary"].start(profile=args.profile in ("secondary", "both"))
    servers["primary"].start(profile=args.profile in ("primary", "both"))
    deadline = started + args.timeout
    lastReport = started
    left: float | None = None
    normal: float | None = None
    storedAtDone = 0
    cpuAtDone: dict[str, float] = {}
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        for server in servers.values():
            server.readLog(now - started)
            server.procStatus()
            if not server.alive():
                print(f"the {server.role} exited ({server.process and server.process.returncode}):")
                print(server.logTail())
                return 1
        if left is None:
            left = empty.entered("recover-wait")
            if left is not None:
                storedAtDone = progress(empty.database)
                cpuAtDone = {role: server.cpuSeconds() for role, server in servers.items()}
        if normal is None:
            normal = empty.entered("normal")
        if left is not None and normal is not None and full.entered("normal") is not None:
            break
        if now > deadline:
            print(f"timed out after {args.timeout:.0f} s")
            for server in servers.values():
                print(f"--- {server.role} ---\n{server.logTail()}")
            return 1
        if now - lastReport >= args.report:
            lastReport = now
            rss = {role: server.procStatus().get("VmRSS", 0) for role, server in servers.items()}
            print(
                f"{now - started:6.1f} s: {empty.role} has ~{progress(empty.database):,} bindings;"
                f" RSS primary {rss['primary'] / 1024:.0f} MB,"
                f" secondary {rss['secondary'] / 1024:.0f} MB",
                flush=True,
            )
    peaks = {role: server.procStatus().get("VmHWM", 0) for role, server in servers.items()}
    cpu = {role: server.cpuSeconds() for role, server in servers.items()}
    statuses = {role: server.ctlStatus() for role, server in servers.items()}
    stored = countBindings(str(empty.database))
    firstStream = empty.entered("recover")
    print()
    for server in servers.values():
        print(
            f"{server.role} transitions: "
            + "; ".join(f"{at:.1f} s {t}" for at, t in server.transitions)
        )
    for role, status in statuses.items():
        relationships = status.get("relationships") or status.get("failover") or status
        print(
            f"dhcp6ha-ctl --json status ({role}): leases {status.get('leases')};"
            f" relationships {json.dumps(relationships)[:400]}"
        )
    print()
    assert left is not None
    print(
        f"UPDREQALL of {total:,} bindings: UPDDONE (the {empty.role} leaves RECOVER)"
        f" {left:.1f} s after the start"
        + (f" ({left - firstStream:.1f} s after it entered RECOVER)" if firstStream else "")
        + f"; NORMAL at {normal:.1f} s"
    )
    window = left - (firstStream or 0.0)
    print(
        f"  {total / window:,.0f} bindings/s over RECOVER, {total / left:,.0f} bindings/s from the start"
    )
    print(
        f"  bindings stored by the {empty.role}: {stored:,} of {total:,}"
        f" (~{storedAtDone:,} IA_NA seen at UPDDONE)"
    )
    print(
        "  peak RSS (VmHWM): " + ", ".join(f"{role} {peaks[role] / 1024:.0f} MB" for role in ROLES)
    )
    print(
        "  CPU to UPDDONE: "
        + ", ".join(f"{role} {cpuAtDone.get(role, 0):.1f} s" for role in ROLES)
        + "; to the end: "
        + ", ".join(f"{role} {cpu[role]:.1f} s" for role in ROLES)
    )
    print(
        f"  target (1,000,000 in under 60 s, each process under 500 MB):"
        f" {total / window * 60:,.0f} bindings in 60 s at this rate,"
        f" peak RSS {max(peaks.values()) / 1024:.0f} MB;"
        f" load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        " (other work on this machine slows both servers)"
    )
    ok = stored == total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
