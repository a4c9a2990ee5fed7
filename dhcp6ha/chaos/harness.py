# -*- test-case-name: tests.integration.test_chaos -*-
"""
One chaos run: a dhcp6ha failover pair in network namespaces, simulated
clients on their link, a seeded fault schedule played against them, and
the history checked once everything has healed.

The run (L{ChaosRun.run}), in order:

  1. the namespaces (L{dhcp6ha.chaos.topology}), the pair's certificates,
     and each server's ini file: short lifetimes (valid 20 s, T1 5 s, T2
     8 s) and MCLT (10 s) so that renewals, MCLT caps and RECOVER-WAIT all
     happen within a run; a fixed server DUID each, so that a server that
     lost its database still answers to its clients' Server Identifier;
  2. both servers started with C{twistd -n dhcp6ha} in their namespaces,
     the secondary first; the run waits until both report NORMAL (a first
     start of the pair);
  3. the clients (L{dhcp6ha.chaos.clients}, one L{ClientPool} on a
     L{LinkTransport}, NA and PD) start on the client link, every exchange
     recorded into the history; the harness polls both servers' control
     sockets (C{status}) every half second and records each state seen;
  4. after a warm-up, the schedule (L{dhcp6ha.chaos.faults}) is played:
     each fault at its time, undone at its end; each is recorded in the
     history when it ends;
  5. when the window is over, everything is healed (network, clocks, any
     server down is started), and the run waits (bounded) until both
     servers report NORMAL, connected, each seeing the other in NORMAL;
     not getting there is a failure of the run;
  6. the clients go on for a few seconds, then stop; the run waits until
     neither server has unacknowledged updates, stops both (SIGTERM),
     reads both databases read-only and records them
     (L{DatabaseDump}), and checks the history
     (L{dhcp6ha.chaos.checker.check});
  7. the history (JSON lines), the report and the servers' logs stay in
     the run's directory; the namespaces are removed.

Clock steps use libfaketime (Debian package C{faketime}): each server runs
with it preloaded, reading its offset from a file of its own
(C{FAKETIME_TIMESTAMP_FILE}, re-read at most every second), so that the
harness steps a running server's wall clock (C{reactor.seconds()}) by
writing the file, without touching the machine's clock.  The monotonic
clock is left alone, as an NTP step would.  Without libfaketime, clock
steps are skipped and counted as skipped; the schedule stays the same.

Invariant 5 of DESIGN.md ("never a crash") is watched too: a server that
exits when it was not killed is a failure of the run (it is started again
so that the run can go on), and the lines of the servers' logs that carry
a traceback are counted.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address
from pathlib import Path
from typing import IO, Any

import attrs
from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

import dhcp6ha
from dhcp6ha.chaos.checker import Violation, check, describeEvent, formatReport
from dhcp6ha.chaos.clients import Behaviour, ClientPool, LinkTransport, Timing
from dhcp6ha.chaos.faults import (
    CLIENT_CUT,
    CLOCK_STEP,
    DROP,
    KILL,
    LINK_DOWN,
    LOSE_DATABASE,
    ONE_WAY,
    PARTITION,
    PARTNER_DOWN,
    Fault,
    Schedule,
    ScheduleParameters,
    makeSchedule,
)
from dhcp6ha.chaos.history import (
    BindingRecord,
    ClientReceived,
    ClientSent,
    DatabaseDump,
    Event,
    FaultEvent,
    HistoryRecorder,
    Note,
    RunHeader,
    ServerInfo,
    ServerStateObserved,
    eventTime,
)
from dhcp6ha.chaos.topology import (
    CLIENT_IFACE,
    LAN,
    LAN_PD,
    SERVER_IFACE,
    SERVERS,
    Namespace,
    Topology,
)
from dhcp6ha.ctl import ConnectionProblem, ServerError, request

__all__ = [
    "RELATIONSHIP",
    "ChaosRun",
    "RunConfig",
    "RunResult",
    "ServerProcess",
    "faketimeLibrary",
    "makeCertificates",
    "readDatabase",
    "serverConfig",
]

RELATIONSHIP = "chaos"
"""The name of the pair's relationship ([failover:chaos])."""

_DUIDS = {
    "primary": bytes.fromhex("0003000102c5c0000001"),
    "secondary": bytes.fromhex("0003000102c5c0000002"),
}
_IDENTITIES = {"primary": "primary.chaos.test", "secondary": "secondary.chaos.test"}

_REPO = Path(dhcp6ha.__file__).resolve().parents[1]


#: Where libfaketime leaves a shared-memory segment and a semaphore for every
#: process it runs in, even one that exits cleanly (C{faketime_shm_PID},
#: C{sem.faketime_sem_PID}): removed once the server is reaped.
_SHM = Path("/dev/shm")


def faketimeLibrary() -> str | None:
    """The path of libfaketime (multi-threaded variant), if installed."""
    for pattern in (
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@frozen
class RunConfig:
    """
    Everything about a run except its seed.

    @ivar clients: simulated clients (each with one IA_NA and one IA_PD).
    @ivar warmup: seconds of clients before the fault window opens.
    @ivar schedule: what the fault schedule is made from.
    @ivar preferred: preferred lifetime (addresses and prefixes).
    @ivar valid: valid lifetime.
    @ivar t1: T1.
    @ivar t2: T2.
    @ivar mclt: the pair's MCLT.
    @ivar maxSkew: the pair's max-clock-skew.
    @ivar settle: seconds the clients go on once the pair is back in NORMAL.
    @ivar normalTimeout: longest wait for the pair to be back in NORMAL.
    @ivar quiesceTimeout: longest wait for the updates to be acknowledged.
    @ivar startTimeout: longest wait for the pair's first NORMAL.
    @ivar pollInterval: seconds between two status polls of a server.
    @ivar releaseProbability: see L{Behaviour}.
    @ivar declineProbability: see L{Behaviour}.
    """

    clients: int = 40
    warmup: float = 6.0
    schedule: ScheduleParameters = ScheduleParameters()
    preferred: int = 12
    valid: int = 20
    t1: int = 5
    t2: int = 8
    mclt: int = 10
    maxSkew: float = 5.0
    settle: float = 6.0
    normalTimeout: float = 120.0
    quiesceTimeout: float = 8.0
    startTimeout: float = 40.0
    pollInterval: float = 0.5
    releaseProbability: float = 0.05
    declineProbability: float = 0.02

    def parameters(self) -> list[tuple[str, str]]:
        """The parameters, for the run's header and the replay command."""
        return [
            ("clients", str(self.clients)),
            ("warmup", f"{self.warmup:g}"),
            *self.schedule.describe(),
            (
                "lifetimes",
                f"preferred {self.preferred} valid {self.valid} T1 {self.t1} T2 {self.t2}",
            ),
            ("max-clock-skew", f"{self.maxSkew:g}"),
        ]


@frozen
class RunResult:
    """
    What one run found.

    @ivar injected: faults injected, by kind.
    @ivar skipped: faults of the schedule not injected, by kind (clock
        steps without libfaketime, a partner-down the server could not be
        asked for).
    @ivar replies: Replies the clients received (every one is checked).
    @ivar failures: what went wrong besides invariants: the pair not back
        in NORMAL, a server that exited by itself, an error of the harness.
    @ivar serverErrors: log lines of the servers reporting a traceback.
    @ivar directory: where the history, report and logs are.
    @ivar report: the checker's report (schedule, violations, histories).
    """

    seed: int
    schedule: Schedule
    injected: Counter[str]
    skipped: Counter[str]
    clients: int
    replies: int
    violations: tuple[Violation, ...]
    failures: tuple[str, ...]
    serverErrors: int
    directory: str
    report: str
    replay: str

    @property
    def ok(self) -> bool:
        return not self.violations and not self.failures


# --- files of the pair ---------------------------------------------------------------


def makeCertificates(directory: Path) -> Path:
    """The pair's CA and certificates in C{directory} (made once, then reused)."""
    from dhcp6ha.pki import makePKI, parseServer

    makePKI(
        str(directory),
        [parseServer(f"{name}={identity}") for name, identity in _IDENTITIES.items()],
    )
    return directory


def serverConfig(
    name: str,
    directory: Path,
    pki: Path,
    config: RunConfig,
    topology: Topology,
    controlSocket: str | None = None,
) -> str:
    """
    The ini text of one server of the pair.

    @param controlSocket: the control socket's path (default: in
        C{directory}; a UNIX socket path is at most 107 bytes long).
    """
    partner = topology.partnerOf(name)
    pool = max(64, 4 * config.clients)
    first = LAN.network_address + 0x1000
    last = first + pool - 1
    pdPool = f"{LAN_PD.network_address}/48"
    lines = [
        f"; dhcp6ha chaos run: the {name}",
        "[server]",
        f"interfaces = {SERVER_IFACE}",
        "address = ::",
        "port = 547",
        f"database = {directory / 'leases.sqlite'}",
        f"duid = {_DUIDS[name].hex(':')}",
        f"control-socket = {controlSocket or directory / 'control.sock'}",
        "commit-delay = 0",
        "reclaim-interval = 1",
        "",
        "[subnet:chaos]",
        f"prefix = {LAN}",
        f"interface = {SERVER_IFACE}",
        f"pools = {first}-{last}",
        f"pd-pools = {pdPool} delegate /56",
        f"preferred-lifetime = {config.preferred}",
        f"valid-lifetime = {config.valid}",
        f"t1 = {config.t1}",
        f"t2 = {config.t2}",
        "rapid-commit = no",
        "",
        f"[failover:{RELATIONSHIP}]",
        f"role = {name}",
    ]
    if name == "primary":
        lines += [f"partner-address = {topology.peerAddress(partner)}", "partner-port = 647"]
    else:
        lines += [
            f"listen-address = {topology.peerAddress(name)}",
            "listen-port = 647",
            f"partner-address = {topology.peerAddress(partner)}",
        ]
    lines += [
        f"certificate = {pki / (name + '.pem')}",
        f"key = {pki / (name + '-key.pem')}",
        f"ca = {pki / 'ca.pem'}",
        f"partner-identity = {_IDENTITIES[partner]}",
        "subnets = chaos",
        f"mclt = {config.mclt}",
        "heartbeat-interval = 1",
        "unreachable-after = 3",
        f"max-clock-skew = {config.maxSkew:g}",
        "auto-partner-down = 0",
        "handshake-timeout = 5",
        "idle-timeout = 5",
    ]
    return "\n".join(lines) + "\n"


def readDatabase(path: Path) -> tuple[list[BindingRecord], int]:
    """
    Every binding of a server's SQLite database, read read-only, and how
    many of them still wait for the partner's acknowledgement.  A missing
    file has no bindings.
    """
    if not path.exists():
        return [], 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute(
            "SELECT lease_type, address, prefix_length, state, duid, iaid, expires, cltt,"
            " partner_lifetime_acked, pending_for FROM leases ORDER BY address, prefix_length"
        ).fetchall()
    finally:
        conn.close()
    records = [
        BindingRecord(
            lease_type=str(r[0]),
            address=IPv6Address(bytes(r[1])),
            prefix_length=int(r[2]),
            state=str(r[3]),
            duid=bytes(r[4]),
            iaid=int(r[5]),
            expires=float(r[6]),
            cltt=float(r[7]),
            partner_lifetime_acked=float(r[8]),
        )
        for r in rows
    ]
    return records, sum(1 for r in rows if r[9] is not None)


# --- one server -------------------------------------------------------------------


class ServerProcess:
    """
    One server of the pair: its files, its process in its namespace, its
    clock offset and its control socket.

    @ivar expected: whether it should be running now (C{False} while a
        fault holds it down).
    """

    def __init__(
        self,
        name: str,
        ns: Namespace,
        directory: Path,
        configText: str,
        faketime: str | None,
        controlSocket: str | None = None,
    ) -> None:
        self.name = name
        self.ns = ns
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "server.ini"
        self.config.write_text(configText)
        self.database = directory / "leases.sqlite"
        self.socket = controlSocket or str(directory / "control.sock")
        self.clockFile = directory / "faketime"
        self.clockFile.write_text("+0s\n")
        self.offset = 0
        self.faketime = faketime
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0
        self.expected = False
        self.duid = _DUIDS[name]

    def command(self) -> list[str]:
        twistd = Path(sys.executable).parent / "twistd"
        prefix = (
            [str(twistd)]
            if twistd.exists()
            else [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        )
        args = [*prefix, "-n", "--pidfile=", "dhcp6ha", "--config", str(self.config)]
        env = [
            f"PYTHONPATH={_REPO}"
            + (f":{os.environ['PYTHONPATH']}" if "PYTHONPATH" in os.environ else ""),
            "PYTHONUNBUFFERED=1",
        ]
        if self.faketime is not None:
            env += [
                f"LD_PRELOAD={self.faketime}",
                f"FAKETIME_TIMESTAMP_FILE={self.clockFile}",
                "FAKETIME_CACHE_DURATION=1",
                "FAKETIME_DONT_FAKE_MONOTONIC=1",
                # libfaketime 0.9.10 otherwise rewrites the deadline of every
                # pthread_cond_timedwait: CPython's GIL hand-off wait (5 ms)
                # returned at once (measured: 0.2 ms), so the two threads of a
                # server (reactor, SQLite writer) were scheduled unlike anywhere
                # in production.
                "FAKETIME_FORCE_MONOTONIC_FIX=0",
            ]
        return ["env", *env, *args]

    def logPath(self, start: int | None = None) -> Path:
        return self.directory / f"server-{self.starts if start is None else start}.log"

    def start(self) -> None:
        """Start the server (its log: C{server-N.log}, N counting starts)."""
        self.starts += 1
        self._closeLog()
        self._removeFaketimeFiles()  # of a run that exited by itself
        self._log = open(self.logPath(), "ab")  # noqa: SIM115 - closed by _closeLog
        self.popen = self.ns.spawn(self.command(), self._log, cwd=_REPO)
        self.expected = True

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill(self) -> None:
        """C{kill -9}, and reap it."""
        self.expected = False
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._closeLog()
        self._removeFaketimeFiles()

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after C{grace} seconds; the exit status."""
        self.expected = False
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._closeLog()
        self._removeFaketimeFiles()
        return self.popen.returncode

    def _removeFaketimeFiles(self) -> None:
        """Remove what libfaketime left in C{/dev/shm} for the last run, once reaped."""
        if self.faketime is None or self.popen is None or self.popen.poll() is None:
            return
        pid = self.popen.pid
        for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
            with contextlib.suppress(FileNotFoundError):
                (_SHM / name).unlink()

    def loseDatabase(self) -> None:
        """Delete the database (with its WAL and shared-memory files)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.database}{suffix}")

    def setOffset(self, seconds: int) -> None:
        """Step the server's wall clock to C{seconds} from the real one."""
        tmp = self.clockFile.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+d}s\n")
        os.replace(tmp, self.clockFile)
        self.offset = seconds

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        """The C{status} result (blocking: call in a thread)."""
        result = request(self.socket, {"command": "status"}, timeout)
        if not isinstance(result, dict):
            raise ConnectionProblem(f"status is not an object: {result!r:.80}")
        return result

    def partnerDown(self) -> subprocess.CompletedProcess[str]:
        """The operator's command, with C{dhcp6ha-ctl} (blocking)."""
        args = [sys.executable, "-m", "dhcp6ha.ctl", "--socket", self.socket, "--timeout", "10",
                "partner-down", RELATIONSHIP, "--yes"]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return subprocess.run(
            args, capture_output=True, text=True, timeout=30, env=env, check=False
        )

    def tracebacks(self) -> int:
        """Lines of its logs (every start) that begin a traceback."""
        n = 0
        for start in range(1, self.starts + 1):
            try:
                text = self.logPath(start).read_text(errors="replace")
            except OSError:
                continue
            n += text.count("Traceback (most recent call last)")
        return n

    def logTail(self, lines: int = 30) -> str:
        try:
            text = self.logPath().read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _closeLog(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@frozen
class _Observed:
    """The relationship as a server last reported it."""

    time: float
    state: str
    partner: str | None
    connected: bool
    unacked: int
    clock: float = 0.0
    """The server's clock ("now" of its status) minus ours when we asked."""


def _cancelled(failure: Failure) -> Failure | None:
    """Swallow the cancellation of a fault cut short by the end of a run."""
    return None if isinstance(failure.value, CancelledError) else failure


def _relationship(status: dict[str, Any]) -> dict[str, Any] | None:
    for entry in status.get("relationships") or []:
        if isinstance(entry, dict) and entry.get("name") == RELATIONSHIP:
            return entry
    return None


def _dumpedClients(events: Sequence[Event], violations: Sequence[Violation]) -> str:
    """
    The history of the clients named only by database records of the
    violations (the checker's report shows the clients of the Replies
    involved; a disagreement of the databases involves none).
    """
    shown: set[bytes] = set()
    for violation in violations:
        for event in violation.events:
            if isinstance(event, ClientSent | ClientReceived):
                shown.add(event.client)
    wanted: list[bytes] = []
    for violation in violations:
        for event in violation.events:
            if isinstance(event, DatabaseDump):
                for record in event.bindings:
                    if record.duid and record.duid not in shown and record.duid not in wanted:
                        wanted.append(record.duid)
    wanted = wanted[:10]
    if not wanted:
        return ""
    header = next((e for e in events if isinstance(e, RunHeader)), None)
    origin = header.started if header is not None else 0.0
    names = {server.duid: server.name for server in header.servers} if header else {}
    lines = [
        f"--- history of the {len(wanted)} client(s) of the database records involved,"
        " with faults and server state changes"
    ]
    last: dict[bytes, str] = {}
    for event in sorted(events, key=eventTime):
        if isinstance(event, ServerStateObserved):
            if last.get(event.server) == event.state:
                continue
            last[event.server] = event.state
        elif isinstance(event, ClientSent | ClientReceived):
            if event.client not in wanted:
                continue
        elif not isinstance(event, FaultEvent | Note):
            continue
        lines.append("  " + describeEvent(event, origin, names))
    return "\n".join(lines) + "\n"


# --- the run ------------------------------------------------------------------------


class ChaosRun:
    """
    One run of one seed (see the module docstring).

    @ivar recorder: the history.
    @ivar failures: what went wrong besides invariants.
    """

    def __init__(
        self,
        reactor: Any,
        seed: int,
        config: RunConfig,
        directory: Path,
        pki: Path,
        *,
        say: Callable[[str], None] = print,
        replay: Sequence[str] = (),
        prefix: str | None = None,
        keep: bool = False,
    ) -> None:
        """
        @param reactor: the global reactor (the clients' sockets, timers and
            threads).
        @param directory: where this run's files go (made if needed).
        @param pki: the pair's certificates (L{makeCertificates}).
        @param say: progress lines go there.
        @param replay: the command line that replays this run.
        @param prefix: the namespaces' prefix (default: per process).
        @param keep: leave the namespaces (and servers) when the run ends.
        """
        self.reactor = reactor
        self.seed = seed
        self.config = config
        self.directory = directory
        self.pki = pki
        self.say = say
        self.replay = tuple(replay)
        self.keep = keep
        self.schedule = makeSchedule(seed, config.schedule)
        self.topology = Topology(prefix)
        self.faketime = faketimeLibrary()
        self.servers: dict[str, ServerProcess] = {}
        self.recorder: HistoryRecorder | None = None
        self.failures: list[str] = []
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.observed: dict[str, _Observed] = {}
        self.crashes: Counter[str] = Counter()
        self._sockets: str | None = None
        self._aborted = False
        self.pool: ClientPool | None = None
        self._port: IListeningPort | None = None
        self._poller: LoopingCall | None = None
        self._polling: set[str] = set()
        self._origin = 0.0
        self._pending: list[Deferred[None]] = []
        self._calls: list[IDelayedCall] = []
        self._historyFile: IO[str] | None = None
        self._lastState: dict[str, str] = {}
        self._clientsStopped = 0.0
        self._debug = bool(os.environ.get("D6HA_CHAOS_DEBUG"))

    # --- helpers ----------------------------------------------------------------

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _t(self) -> str:
        return f"t{self._now() - self._origin:+7.1f}s"

    def _note(self, text: str) -> None:
        self.say(f"  {self._t()} {text}")
        if self.recorder is not None:
            self.recorder.record(Note(self._now(), text))

    def _sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self.reactor, max(0.0, seconds), lambda: None)

    async def _until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = self._now() + timeout
        while not predicate():
            if self._now() >= deadline:
                return False
            await self._sleep(0.25)
        return True

    def _thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThread(f, *args)

    # --- polling ------------------------------------------------------------------

    def _poll(self) -> None:
        for name, server in self.servers.items():
            if server.expected and not server.running():
                self._crashed(server)
                continue
            if name in self._polling or not server.running():
                continue
            self._polling.add(name)
            Deferred.fromCoroutine(self._pollOne(name, server))

    async def _pollOne(self, name: str, server: ServerProcess) -> None:
        sent = self._now()
        try:
            status = await self._thread(server.status)
        except (ConnectionProblem, ServerError, OSError):
            return
        finally:
            self._polling.discard(name)
        self._statusSeen(name, sent, status)

    def _statusSeen(self, name: str, sent: float, status: dict[str, Any]) -> None:
        entry = _relationship(status)
        if entry is None or "state" not in entry:
            return
        state = str(entry["state"])
        self.observed[name] = _Observed(
            sent,
            state,
            None if entry.get("partner_state") is None else str(entry["partner_state"]),
            bool(entry.get("connected")),
            int(entry.get("unacked_updates") or 0),
            float(status.get("now") or sent) - sent,
        )
        previous = self._lastState.get(name)
        shown = f"{state}, {entry.get('unacked_updates')} unacked" if self._debug else state
        if previous != shown:
            self._lastState[name] = shown
            self.say(f"  {self._t()} {name} is {shown}")
        if self.recorder is not None:
            self.recorder.record(ServerStateObserved(sent, self.servers[name].duid, state.upper()))

    def _crashed(self, server: ServerProcess) -> None:
        code = server.returncode()
        self.crashes[server.name] += 1
        again = self.crashes[server.name] <= 3
        text = f"{server.name} exited by itself with status {code} (log {server.logPath()}); " + (
            "started again" if again else "not started again (it keeps exiting)"
        )
        self.failures.append(f"{self._t()} {text}")
        self._note(text)
        tail = server.logTail(15)
        if tail:
            self.say("    " + tail.replace("\n", "\n    "))
        if again:
            server.start()
        else:
            server.expected = False

    def _normal(self) -> bool:
        now = self._now()
        for name, server in self.servers.items():
            seen = self.observed.get(name)
            if (
                not server.running()
                or seen is None
                or now - seen.time > 3.0
                or seen.state != "normal"
                or seen.partner != "normal"
                or not seen.connected
            ):
                return False
        return True

    def _quiet(self) -> bool:
        # Only what the servers said a second after the last client message
        # counts (a Release sent just before the clients stopped must have
        # been answered and its update acknowledged).
        since = self._clientsStopped + 1.0
        return all(
            (seen := self.observed.get(name)) is not None
            and seen.time >= since
            and seen.unacked == 0
            and seen.state == "normal"
            for name in self.servers
        )

    def _describeStates(self) -> str:
        parts = []
        for name in SERVERS:
            seen = self.observed.get(name)
            server = self.servers.get(name)
            if server is None or not server.running():
                parts.append(f"{name} not running")
            elif seen is None:
                parts.append(f"{name} never answered")
            else:
                parts.append(
                    f"{name} {seen.state} (partner {seen.partner}, "
                    f"{'connected' if seen.connected else 'not connected'}, "
                    f"{seen.unacked} unacked, seen {self._now() - seen.time:.1f} s ago)"
                )
        return "; ".join(parts)

    # --- faults -------------------------------------------------------------------

    def _play(self, fault: Fault, start: float) -> None:
        """Schedule C{fault}'s start and end from the window's C{start}."""
        now = self._now()

        def begin() -> None:
            d = Deferred.fromCoroutine(self._begin(fault))
            d.addErrback(_cancelled)
            self._pending.append(d)

        self._calls.append(self.reactor.callLater(max(0.0, start + fault.at - now), begin))

    async def _begin(self, fault: Fault) -> None:
        started = self._now()
        self.say(f"  {self._t()} fault: {fault.describe().split(None, 2)[2]}")
        try:
            injected = await self._inject(fault)
        except Exception as e:
            self.failures.append(f"{self._t()} injecting {fault.describe()} failed: {e}")
            self._note(f"injecting {fault.kind} on {fault.target} failed: {e}")
            self.skipped[fault.kind] += 1
            return
        if not injected:
            self.skipped[fault.kind] += 1
            return
        self.injected[fault.kind] += 1
        if fault.duration <= 0:
            self._recordFault(fault, started, None)
            return
        await self._sleep(started + fault.duration - self._now())
        try:
            await self._undo(fault)
        except Exception as e:
            self.failures.append(f"{self._t()} undoing {fault.describe()} failed: {e}")
        self._recordFault(fault, started, self._now())

    def _recordFault(self, fault: Fault, start: float, end: float | None) -> None:
        if self.recorder is not None:
            self.recorder.record(
                FaultEvent(fault.historyKind, fault.historyTarget, start, end, fault.detail)
            )

    async def _inject(self, fault: Fault) -> bool:
        topology = self.topology
        if fault.kind in (KILL, LOSE_DATABASE):
            server = self.servers[fault.target]
            await self._thread(server.kill)
            if fault.kind == LOSE_DATABASE:
                server.loseDatabase()
        elif fault.kind == PARTITION:
            if fault.mode == LINK_DOWN:
                await self._thread(topology.partnerLinkDown)
            else:
                assert fault.mode == DROP
                for name in SERVERS:
                    await self._thread(topology.blackhole, name)
        elif fault.kind == ONE_WAY:
            await self._thread(topology.blackhole, fault.target)
        elif fault.kind == CLIENT_CUT:
            await self._thread(topology.cutClients, fault.target)
        elif fault.kind == CLOCK_STEP:
            if self.faketime is None:
                self._note(f"clock step on {fault.target} skipped: libfaketime is not installed")
                return False
            self.servers[fault.target].setOffset(fault.offset)
            await self._confirmClock(fault.target, fault.offset)
        elif fault.kind == PARTNER_DOWN:
            server = self.servers[fault.target]
            result = await self._thread(server.partnerDown)
            output = (result.stdout + result.stderr).strip().replace("\n", " ")
            # Status 2 is "nothing done" for dhcp6ha-ctl, but an answer lost
            # with a server killed at that moment may follow a command that
            # took effect: only a connection that never opened is certain.
            if result.returncode == 2 and any(
                words in output
                for words in ("no control socket", "nothing listens", "cannot connect")
            ):
                self._note(f"partner-down on {fault.target} not given: {output[-200:]}")
                return False
            verdict = {0: "done", 1: "refused"}.get(result.returncode, "answer lost")
            said = result.stdout.strip() or output
            self._note(f"partner-down on {fault.target}: {verdict}: {said[-200:]}")
        else:  # pragma: no cover - the scheduler makes no other kind
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        return True

    async def _confirmClock(self, name: str, offset: int) -> None:
        """Note whether the server's clock shows the step (libfaketime re-reads each second)."""
        asked = self._now()

        def shows() -> bool:
            seen = self.observed.get(name)
            return seen is not None and seen.time > asked + 1.0 and abs(seen.clock - offset) < 0.5

        if await self._until(shows, 4.0):
            self._note(f"{name}'s clock measured at {self.observed[name].clock:+.2f} s")
        else:
            seen = self.observed.get(name)
            measured = "unknown" if seen is None else f"{seen.clock:+.2f} s"
            self._note(f"{name}'s clock step to {offset:+d} s not seen yet (measured {measured})")

    async def _undo(self, fault: Fault) -> None:
        topology = self.topology
        if fault.kind in (KILL, LOSE_DATABASE):
            self.servers[fault.target].start()
        elif fault.kind == PARTITION:
            if fault.mode == LINK_DOWN:
                await self._thread(topology.partnerLinkUp)
            else:
                for name in SERVERS:
                    await self._thread(topology.unblackhole, name)
        elif fault.kind == ONE_WAY:
            await self._thread(topology.unblackhole, fault.target)
        elif fault.kind == CLIENT_CUT:
            await self._thread(topology.restoreClients, fault.target)
        elif fault.kind == CLOCK_STEP:
            self.servers[fault.target].setOffset(0)

    # --- the run --------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Play the run; never raises for what goes wrong inside it."""
        # A fresh directory: the servers' databases must start empty.
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self._origin = self._now()
        self.say(self.schedule.describe())
        violations: list[Violation] = []
        try:
            violations = await self._run()
        except Exception as e:
            import traceback

            self.failures.append(f"the harness failed: {e!r}")
            self.say(traceback.format_exc())
        finally:
            # Aborted (the reactor stopped; the coroutine is being closed):
            # abort() has already killed the servers and removed the
            # namespaces, and the history file may be closed.
            if not self._aborted:
                await self._teardown()
        return self._result(violations)

    async def _run(self) -> list[Violation]:
        config = self.config
        self._historyFile = open(self.directory / "history.jsonl", "w", buffering=1)  # noqa: SIM115
        self.recorder = HistoryRecorder(self.reactor, self._historyFile)
        await self._thread(self.topology.create)
        # Control sockets in a short directory of their own: the run's
        # directory may be too deep for a UNIX socket path (107 bytes).
        self._sockets = tempfile.mkdtemp(prefix="d6chaos-")
        for name in SERVERS:
            socketPath = os.path.join(self._sockets, f"{name}.sock")
            text = serverConfig(
                name, self.directory / name, self.pki, config, self.topology, socketPath
            )
            self.servers[name] = ServerProcess(
                name,
                self.topology.servers[name],
                self.directory / name,
                text,
                self.faketime,
                socketPath,
            )
        self.recorder.record(self._header())
        if self.faketime is None:
            self._note("libfaketime is not installed: clock steps will be skipped")
        self.servers["secondary"].start()
        self.servers["primary"].start()
        self._poller = LoopingCall(self._poll)
        self._poller.clock = self.reactor
        self._poller.start(config.pollInterval)
        if not await self._until(self._normal, config.startTimeout):
            self.failures.append(
                f"the pair did not reach NORMAL within {config.startTimeout:g} s of its first"
                f" start: {self._describeStates()}"
            )
            return []
        self._startClients()
        await self._sleep(config.warmup)
        window = self._now()
        self._note("fault window opens")
        for fault in self.schedule.faults:
            self._play(fault, window)
        await self._sleep(window + config.schedule.window - self._now())
        # Every fault ends within the window; wait for the last undo.
        for d in list(self._pending):
            await d
        self._note("fault window over: healing everything")
        await self._healAll()
        healed = self._now()
        if await self._until(self._normal, config.normalTimeout):
            self._note(f"pair back in NORMAL after {self._now() - healed:.1f} s")
        else:
            self.failures.append(
                f"the pair was not back in NORMAL {config.normalTimeout:g} s after the"
                f" schedule healed: {self._describeStates()}"
            )
            self._note("pair NOT back in NORMAL: " + self._describeStates())
        await self._sleep(config.settle)
        self._stopClients()
        quiesce = self._now()
        if await self._until(self._quiet, config.quiesceTimeout):
            self._note(f"no update unacknowledged after {self._now() - quiesce:.1f} s")
        else:
            self._note("updates still unacknowledged: " + self._describeStates())
        return await self._finish()

    def _header(self) -> RunHeader:
        config = self.config
        return RunHeader(
            seed=self.seed,
            started=self._now(),
            mclt=float(config.mclt),
            max_valid_lifetime=config.valid,
            servers=tuple(
                ServerInfo(name, _DUIDS[name], f"[{self.topology.lanAddress(name)}]:547")
                for name in SERVERS
            ),
            fresh_databases=True,
            auto_partner_down=False,
            parameters=tuple(config.parameters()),
            command=self.replay,
        )

    def _startClients(self) -> None:
        assert self.recorder is not None
        config = self.config
        ns = self.topology.clients
        transport = LinkTransport(str(ns.ifindex(CLIENT_IFACE)))
        with ns.entered():
            self._port = self.reactor.listenUDP(546, transport, interface="::")
        timing = attrs.evolve(
            Timing().scaled(0.2), sol_max_rt=4.0, req_max_rt=4.0, ren_max_rt=4.0, reb_max_rt=4.0
        )
        self.pool = ClientPool(
            self.reactor,
            transport,
            self.recorder,
            seed=self.seed,
            count=config.clients,
            behaviour=Behaviour(
                na=True,
                pd=True,
                release_probability=config.releaseProbability,
                decline_probability=config.declineProbability,
                off_time=(1.0, 3.0),
                start_spread=config.warmup * 0.7,
            ),
            timing=timing,
        )
        self.pool.start()
        self._note(f"{config.clients} clients started")

    def _stopClients(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
            self._clientsStopped = self._now()
            self._note("clients stopped")
        if self._port is not None:
            self._port.stopListening()
            self._port = None

    async def _healAll(self) -> None:
        await self._thread(self.topology.healAll)
        for server in self.servers.values():
            if server.offset:
                server.setOffset(0)
            if not server.running():
                self._note(f"{server.name} was down at the end of the window: started")
                server.start()

    async def _finish(self) -> list[Violation]:
        assert self.recorder is not None
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        # Both stop together, then both are read: a dump is the database as
        # of the moment both servers had stopped (nothing changes it after),
        # so both dumps carry that one time (a binding that expires between
        # two stops is then expired in both).
        codes = await gatherResults([self._thread(self.servers[name].stop) for name in SERVERS])
        stopped = self._now()
        dumps: list[DatabaseDump] = []
        for name, code in zip(SERVERS, codes, strict=True):
            server = self.servers[name]
            # twistd ends a SIGTERM shutdown by raising the signal again.
            if code not in (0, None, -signal.SIGTERM):
                self._note(f"{name} exited with status {code} when stopped")
            records, pending = await self._thread(readDatabase, server.database)
            if pending:
                self._note(f"{name}'s database still has {pending} bindings marked pending")
            dump = DatabaseDump(stopped, server.duid, tuple(records), name)
            self.recorder.record(dump)
            dumps.append(dump)
        history = list(self.recorder.events)
        clockSlack = (self.config.schedule.maxOffset + 1.5) if self.faketime else 0.5
        return check(
            history,
            dumps,
            float(self.config.mclt),
            maxValidLifetime=self.config.valid,
            freshDatabases=True,
            autoPartnerDown=False,
            settle=2.0,
            clockSlack=clockSlack,
        )

    async def _teardown(self) -> None:
        # Faults not played yet, or still in force, when the run ends early.
        for call in self._calls:
            if call.active():
                call.cancel()
        for d in self._pending:
            d.cancel()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._stopClients()
        # Status requests still in flight record into the history.
        await self._until(lambda: not self._polling, 5.0)
        for server in self.servers.values():
            if server.running():
                await self._thread(server.stop, 5.0)
        if self.recorder is not None:
            self.recorder.flush()
        if self._historyFile is not None:
            if self.recorder is not None:
                self.recorder.out = None
            self._historyFile.close()
            self._historyFile = None
        if not self.keep:
            await self._thread(self.topology.destroy)
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)

    def abort(self) -> None:
        """Stop at once (the reactor is stopping): kill the servers, remove the namespaces."""
        self._aborted = True
        for server in self.servers.values():
            server.kill()
        if not self.keep:
            self.topology.destroy()

    def _result(self, violations: list[Violation]) -> RunResult:
        events = self.recorder.events if self.recorder is not None else []
        replies = sum(1 for e in events if isinstance(e, ClientReceived) and e.msg_type == "REPLY")
        report = formatReport(events, violations) if events else "(no history)\n"
        report += _dumpedClients(events, violations)
        serverErrors = sum(server.tracebacks() for server in self.servers.values())
        (self.directory / "report.txt").write_text(report)
        summary = {
            "seed": self.seed,
            "injected": dict(self.injected),
            "skipped": dict(self.skipped),
            "clients": self.config.clients,
            "replies": replies,
            "violations": len(violations),
            "failures": self.failures,
            "server_errors": serverErrors,
        }
        (self.directory / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        return RunResult(
            seed=self.seed,
            schedule=self.schedule,
            injected=Counter(self.injected),
            skipped=Counter(self.skipped),
            clients=self.config.clients,
            replies=replies,
            violations=tuple(violations),
            failures=tuple(self.failures),
            serverErrors=serverErrors,
            directory=str(self.directory),
            report=report,
            replay=shlex.join(self.replay),
        )
