#!/usr/bin/env python
# -*- test-case-name: tests.integration.test_netns -*-
"""
Throughput and latency of dhcp6ha under perfdhcp (Kea 2.2): one server
alone, and the primary of a failover pair in NORMAL, in the same run.

Run by hand, as root, from the repository (not a test)::

    sudo .venv/bin/python bench/bench_perfdhcp.py              # alone + pair, IA_NA + IA_PD
    sudo .venv/bin/python bench/bench_perfdhcp.py --types na --period 5
    sudo .venv/bin/python bench/bench_perfdhcp.py --setups alone --tree before=/tmp/old
                                    # this checkout against another, one run

Each setup has its own network namespaces: a server namespace and a client
namespace joined by a veth pair, perfdhcp in the client namespace sending
relayed traffic (C{-A1}: RELAY-FORW from port 547) to the server's unicast
address, as a relay would.  The servers run their default, durable
configuration (WAL, synchronous=FULL, group commit).

  - C{alone}: one server, no failover.
  - C{pair}: a primary and a secondary in one namespace (the secondary on
    C{::1} only: perfdhcp talks to the primary), certificates made with
    C{dhcp6ha-pki}, one C{[failover:bench]} relationship with the default
    timers and MCLT; measured once both are NORMAL and nothing is left to
    replicate (the initial FREE-BACKUP prefix handover included).
  - C{alone@LABEL}, for each C{--tree LABEL=PATH}: a server alone run from
    another checkout (e.g. C{git archive} of an older commit), to compare
    in one run: two runs on this shared machine are not comparable.
  - C{pair@LABEL}, for each C{--pair-tree LABEL=PATH}: a pair (both
    servers) run from another checkout, to compare a change of the
    replication with the code before it in one run.  Its ratios to
    C{alone} are printed as well.
  - C{pair@NAME}, for each C{--pair-ablation NAME}: a pair run from this
    checkout's C{HEAD} with C{bench/ablations/NAME.patch} applied, which
    leaves out one part of failover to measure what that part costs (see
    C{bench/ablations/README.rst})::

        --pair-ablation policy-only --pair-ablation nosend

For each lease type, every setup's offered rate is stepped up, then
bisected, to find the highest rate at which fewer than 1% of the 4-message
exchanges (Solicit-Advertise-Request-Reply) are lost; the setups take turns
run by run, so that they share the same background load.  Then every setup
runs C{--compare-runs} more times, in turns, at one common rate (70% of the
lowest of their best rates, C{--compare-fraction} or C{--compare-rate} to
choose it: at a setup's best rate its latency is mostly queueing), or at
each of several (C{--compare-rate 700,1400}: how the ratios change with the
load), for latencies at equal load.  For every setup, the server's own response time (from reading a datagram
to sending its reply, every reply: the C{response_time_histogram} of
C{dhcp6ha-ctl status}, before and after each run) is read as well: what
the server's work adds, without perfdhcp's delays and without the time a
datagram waits in the server's socket buffer (which perfdhcp's figures
include); that wait is read too (C{queue_wait_histogram}: the kernel's
arrival time to the server's read, every datagram).  For the pair, the
replication lag of each run (a binding's
Reply sent to the partner's ack, from the primary's update-queue histogram
in C{dhcp6ha-ctl status}: its buckets before and after the run, within
about 9%) is read once the run's updates are all acked.

C{--pin}: the two CPUs of a small machine shared as two hosts would be.
The server alone and the primary run on CPU 1 (every thread of the
process), perfdhcp and the secondary on CPU 0.  Without it the primary, the
secondary and perfdhcp share every CPU, and the pair's latency is mostly
the secondary's work waiting for a CPU: even Solicit-Advertise, which
neither writes nor replicates, is slower.  With it the primary has a CPU to
itself in both setups, as in a deployment with the partner on another host;
what the pair costs the primary (the marks, reads, sends and acks of
replication) is what differs.  Needs two CPUs.  But the secondary then
shares perfdhcp's CPU, and a Reply that arrives while the secondary runs
waits for perfdhcp to be scheduled: perfdhcp's delays grow, not the
primary's.  C{--secondary-idle} puts the secondary in C{SCHED_IDLE}, so
that it uses only the time perfdhcp leaves (as on a host of its own).
Likewise both servers of a pair fsync to the same disk unless
C{--secondary-dir} puts the secondary's database on another.

Printed at the end: per setup the best rate and its delays, the common-rate
table with the Request-Reply median and p99 and the lag, and the pair/alone
ratios against the targets of RFC 7031 req. 6 (latency <= 1.10, rate >=
0.90).

Each lease type gets fresh servers and databases (under C{--workdir},
default C{$TMPDIR}: mind its file system, fsync cost is what durability
costs; the databases are deleted at the end unless C{--keep-db}, the logs
stay); perfdhcp uses many distinct clients (C{-R}), so nearly every
exchange allocates and commits a new lease.  Everything else is removed at
the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.netns import (  # noqa: E402
    Namespace,
    Process,
    run,
    skipReason,
    sleep,
    veth,
)
from tests.integration.pair import (  # noqa: E402
    FailoverServer,
    Relationship,
)
from tests.integration.serverproc import (  # noqa: E402
    LAN,
    ServerProcess,
    Subnet,
    poolOf,
    serverSkipReason,
    serverTree,
    twistdCommand,
    writeConfig,
)

PERFDHCP = "/usr/sbin/perfdhcp"
ABLATIONS = Path(__file__).resolve().parent / "ablations"
BENCH_PD = IPv6Network("fd6b:5e1f::/32")  # 2^24 /56 prefixes: never runs out here
SERVER = LAN.network_address + 1
CLIENT = LAN.network_address + 2
RELATIONSHIP = "bench"
LATENCY_TARGET = 1.10
RATE_TARGET = 0.90


class Cleanups:
    """What a trial TestCase's addCleanup does, for a script: LIFO, always."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def addCleanup(self, f: Callable[..., object], *args: object, **kwargs: object) -> None:
        self._calls.append((f, args))

    def run(self) -> None:
        while self._calls:
            f, args = self._calls.pop()
            try:
                f(*args)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"cleanup {f!r} failed: {e!r}", file=sys.stderr)

    def mktemp(self, parent: str | None = None) -> str:
        return tempfile.mkdtemp(prefix="d6ha-bench-", dir=parent)


# --- perfdhcp -------------------------------------------------------------------------


@dataclass
class Durations:
    """
    Durations of one interval (seconds) from two snapshots of a
    L{dhcp6ha.histogram.DurationHistogram}: the replication lag, or the
    server's own response time.
    """

    count: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    unacked: int = 0  # updates still not acked when the interval was closed

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> Durations:
        """What was recorded between two snapshots."""
        lowest = float(after["lowest"])
        perDoubling = int(after["per_doubling"])
        counts = {int(i): int(n) for i, n in after["counts"].items()}
        for i, n in before["counts"].items():
            counts[int(i)] = counts.get(int(i), 0) - int(n)
        buckets = sorted((i, n) for i, n in counts.items() if n > 0)
        total = sum(n for _, n in buckets)
        lag = cls(total)
        if total:
            lag.p50 = _bucketPercentile(buckets, total, 50, lowest, perDoubling)
            lag.p99 = _bucketPercentile(buckets, total, 99, lowest, perDoubling)
        return lag


def _bucketPercentile(
    buckets: list[tuple[int, int]], total: int, p: float, lowest: float, perDoubling: int
) -> float:
    """The upper bound of the bucket holding the C{p}th percentile."""
    rank = max(1, math.ceil(total * p / 100.0))
    seen = 0
    for index, n in buckets:
        seen += n
        if seen >= rank:
            return lowest * 2 ** (index / perDoubling)
    return lowest * 2 ** (buckets[-1][0] / perDoubling)


@dataclass
class CPU:
    """
    What one server process got of the CPUs during a run (C{/proc}).

    @ivar seconds: user and system time, all threads.
    @ivar onCPU: share of the run its main (reactor) thread ran.
    @ivar waiting: share of the run its main thread was runnable but waited
        for a CPU (other processes had them: on a shared machine, the
        throughput measured is bounded by this, not by the server).
    """

    seconds: float
    onCPU: float
    waiting: float


def cpuSample(pid: int) -> tuple[float, int, int]:
    """(CPU seconds of the process, ns on CPU and ns waiting of its main thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        onCPU, waiting, _ = (int(x) for x in f.read().split())
    return seconds, onCPU, waiting


def cpuBetween(before: tuple[float, int, int], after: tuple[float, int, int],
               wall: float) -> CPU:  # fmt: skip
    return CPU(
        after[0] - before[0],
        (after[1] - before[1]) / 1e9 / wall,
        (after[2] - before[2]) / 1e9 / wall,
    )


@dataclass
class Result:
    """One perfdhcp run."""

    rate: int
    period: float
    setup: str = ""
    sent: dict[str, int] = field(default_factory=dict)  # per message kind
    received: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    delays: dict[str, dict[str, float]] = field(default_factory=dict)  # ms
    output: str = ""
    reportedRate: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)  # ms, from -x t
    lag: Durations | None = None
    lagSnapshots: tuple[dict[str, Any], dict[str, Any]] | None = None
    # The server perfdhcp talks to: datagram received to reply sent, all replies.
    serverTime: Durations | None = None
    serverSnapshots: tuple[dict[str, Any], dict[str, Any]] | None = None
    # The same server: each datagram's wait in its socket buffer before it was read.
    queueWait: Durations | None = None
    queueSnapshots: tuple[dict[str, Any], dict[str, Any]] | None = None
    cpu: dict[str, CPU] = field(default_factory=dict)  # per server process
    batchMean: float | None = None  # the pair's bindings per BindingUpdate batch

    @property
    def exchanges(self) -> int:
        """Completed 4-message exchanges (Replies received)."""
        return self.received.get("RR", 0)

    @property
    def lossRatio(self) -> float:
        """Lost exchanges over started exchanges (Solicits sent)."""
        started = self.sent.get("SA", 0)
        if started == 0:
            return 1.0
        return 1.0 - self.exchanges / started

    @property
    def exchangeRate(self) -> float:
        """perfdhcp's own figure of completed exchanges per second."""
        return self.reportedRate or self.exchanges / self.period

    def percentile(self, kind: str, q: float) -> float:
        return percentile(self.samples.get(kind, []), q)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


_SECTION = re.compile(r"^\*+\s*Statistics for:\s*([A-Z-]+)\s*\*+$")
_KINDS = {"SOLICIT-ADVERTISE": "SA", "REQUEST-REPLY": "RR"}


def parsePerfdhcp(text: str, rate: int, period: float) -> Result:
    """
    Read perfdhcp's final report: per exchange kind (C{SA} = Solicit /
    Advertise, C{RR} = Request / Reply) the packets sent, received and
    dropped, and min/avg/max/std-dev of the delay.
    """
    result = Result(rate, period, output=text)
    kind = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _SECTION.match(line)
        if m:
            kind = _KINDS.get(m.group(1), m.group(1))
            result.delays[kind] = {}
            continue
        m = re.match(r"^\*+\s*Timestamps for packets:\s*([A-Z-]+)\s*\*+$", line)
        if m:
            kind = "t:" + _KINDS.get(m.group(1), m.group(1))
            result.samples[kind[2:]] = []
            continue
        m = re.match(r"^sent / received:\s*([0-9.]+)\s*/\s*([0-9.]+)", line)
        if m and kind is not None and kind.startswith("t:"):
            result.samples[kind[2:]].append(1000 * (float(m.group(2)) - float(m.group(1))))
            continue
        m = re.match(r"^Rate:\s*([0-9.]+) 4-way exchanges/second", line)
        if m:
            result.reportedRate = float(m.group(1))
            continue
        if kind is None:
            continue
        if kind.startswith("t:"):
            continue
        m = re.match(r"^(sent packets|received packets|drops):\s*(\d+)", line)
        if m:
            target = {"sent packets": result.sent, "received packets": result.received,
                      "drops": result.drops}[m.group(1)]  # fmt: skip
            target[kind] = int(m.group(2))
            continue
        m = re.match(r"^(min|avg|max) delay:\s*([0-9.]+) ms", line)
        if m:
            result.delays[kind][m.group(1)] = float(m.group(2))
            continue
        m = re.match(r"^std deviation:\s*([0-9.]+) ms", line)
        if m:
            result.delays[kind]["std"] = float(m.group(1))
    return result


#: C{--pin}: the CPU of the server alone and of the primary, and the CPU of
#: perfdhcp and of the secondary.
SERVER_CPU = 1
OTHER_CPU = 0


def pinProcess(pid: int, cpu: int, idle: bool = False) -> None:
    """
    Every thread of process C{pid} on CPU C{cpu} only (threads started
    later inherit it); with C{idle}, in C{SCHED_IDLE}: it runs only when
    nothing else on that CPU wants to.
    """
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})
        if idle:
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))


async def runPerfdhcp(
    ns: Namespace,
    log: Path,
    leaseType: str,
    rate: int,
    period: float,
    clients: int,
    cpu: int | None = None,
) -> Result:
    """One bounded perfdhcp run at C{rate} exchanges per second (on C{cpu} if given)."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    args = [
        *pin, PERFDHCP, "-6", "-A1", "-l", "b0",
        "-e", leaseType,
        "-r", str(rate),
        "-R", str(clients),
        "-p", str(int(period)),
        "-W", "100000",
        "-x", "t",
        str(SERVER),
    ]  # fmt: skip
    proc = Process(ns.command(*args), log)
    deadline = time.monotonic() + period + 30
    try:
        while proc.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"perfdhcp did not finish:\n{proc.logTail()}")
            await sleep(0.2)
    finally:
        proc.stop()
    return parsePerfdhcp(proc.log(), rate, period)


def describe(r: Result, long: bool = False) -> str:
    text = (
        f"offered {r.rate:6d}/s  completed {r.exchangeRate:8.1f}/s  lost {100 * r.lossRatio:5.2f}%"
    )
    for kind in ("SA", "RR"):
        d = r.delays.get(kind, {})
        text += (
            f"  {kind} ms min/avg/med/p99/max {d.get('min', 0):.2f}/{d.get('avg', 0):.2f}/"
            f"{r.percentile(kind, 0.5):.2f}/{r.percentile(kind, 0.99):.2f}/{d.get('max', 0):.1f}"
        )
        if long:
            text += f" (std {d.get('std', 0):.2f})"
    if r.serverTime is not None and r.serverTime.count:
        text += f"  server ms p50/p99 {1000 * r.serverTime.p50:.2f}/{1000 * r.serverTime.p99:.2f}"
    if r.queueWait is not None and r.queueWait.count:
        text += f"  queued ms p50/p99 {1000 * r.queueWait.p50:.2f}/{1000 * r.queueWait.p99:.2f}"
    if r.lag is not None:
        text += f"  lag ms p50/p99 {describeLag(r.lag)}"
    if r.batchMean is not None:
        text += f"  {r.batchMean:.1f} updates/batch"
    if r.cpu:
        text += "  " + describeCPU(r.cpu, r.exchanges)
    return text


def describeCPU(cpu: dict[str, CPU], exchanges: int) -> str:
    """CPU per exchange of each process, and how much its main thread got."""
    return "; ".join(
        f"{name} CPU {1e6 * c.seconds / max(1, exchanges):.0f} us/exchange"
        f" (main thread ran {100 * c.onCPU:.0f}%, waited for a CPU {100 * c.waiting:.0f}%)"
        for name, c in cpu.items()
    )


def describeLag(lag: Durations) -> str:
    text = f"{1000 * lag.p50:.1f}/{1000 * lag.p99:.1f} ({lag.count} acked"
    if lag.unacked:
        text += f", {lag.unacked} not yet"
    return text + ")"


# --- setups ---------------------------------------------------------------------------


def benchSubnet(interface: str | None) -> Subnet:
    """The served link: a huge address pool and 2^24 /56 prefixes, long lifetimes."""
    return Subnet(
        "lan",
        LAN,
        interface=interface,
        pools=[poolOf(LAN, 0x10000, 0xFFFFFFFFFFFF)],
        pdPools=[(BENCH_PD, 56)],
        preferred=3600,
        valid=7200,
        t1=1800,
        t2=2880,
    )


class TreeServerProcess(ServerProcess):
    """A L{ServerProcess} run from a given checkout instead of L{serverTree}."""

    def __init__(self, *args: Any, tree: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tree = tree

    def start(self) -> Process:
        self.starts += 1
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.tree) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["PYTHONUNBUFFERED"] = "1"
        log = self.directory / f"server-{self.starts}.log"
        assert self.ns is not None
        self.process = self.ns.spawn(
            self.testCase, twistdCommand(self.config), log, env=env, cwd=self.tree
        )
        return self.process


class Setup:
    """One thing measured: its client namespace and the server(s) behind it."""

    name: str
    client: Namespace
    directory: Path

    async def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> str | None:
        """C{None}, or what died (with its log tail)."""
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """The server processes, by name."""
        raise NotImplementedError

    def servedStatus(self) -> dict[str, Any]:
        """C{status} of the server perfdhcp talks to (its control socket)."""
        raise NotImplementedError

    def _histograms(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Its response-time and socket-buffer wait histograms (C{None}
        from a server without one)."""
        status = self.servedStatus()
        response, queued = status.get("response_time_histogram"), status.get("queue_wait_histogram")
        return (
            response if isinstance(response, dict) else None,
            queued if isinstance(queued, dict) else None,
        )

    async def beforeRun(self) -> None:
        """Called before each perfdhcp run."""
        self._histogramsBefore = self._histograms()

    async def afterRun(self, result: Result) -> None:
        """Called after each perfdhcp run (the pair reads the lag here)."""
        (responseBefore, queuedBefore), (response, queued) = (
            self._histogramsBefore,
            self._histograms(),
        )
        if responseBefore is not None and response is not None:
            result.serverSnapshots = (responseBefore, response)
            result.serverTime = Durations.between(responseBefore, response)
        if queuedBefore is not None and queued is not None:
            result.queueSnapshots = (queuedBefore, queued)
            result.queueWait = Durations.between(queuedBefore, queued)

    def stop(self) -> None:
        raise NotImplementedError

    async def link(self, cleanups: Cleanups, server: Namespace) -> None:
        """The client namespace, joined to C{server}'s by veth (b0 / s0)."""
        self.client = Namespace.create(cleanups, "bcli")
        await veth(server, "s0", self.client, "b0")
        server.addAddress("s0", f"{SERVER}/64")
        self.client.addAddress("b0", f"{CLIENT}/64")


class Alone(Setup):
    """One server alone."""

    def __init__(
        self, cleanups: Cleanups, directory: Path, name: str, tree: Path, controlSocket: Path
    ) -> None:
        self.cleanups = cleanups
        self.directory = directory
        self.name = name
        self.tree = tree
        self.controlSocket = controlSocket
        self.proc: ServerProcess | None = None

    async def start(self) -> None:
        server = Namespace.create(self.cleanups, "bsrv")
        await self.link(self.cleanups, server)
        self.directory.mkdir(parents=True)
        config = writeConfig(self.directory / "server.ini", self.directory / "leases.sqlite",
                             [benchSubnet("s0")], interfaces=["s0"],
                             extra={"control-socket": str(self.controlSocket)})  # fmt: skip
        self.proc = TreeServerProcess(self.cleanups, config, self.directory, ns=server,
                                      tree=self.tree)  # fmt: skip
        self.proc.start()
        await self.proc.ready()

    def alive(self) -> str | None:
        if self.proc is None or self.proc.process is None or not self.proc.process.running():
            return f"{self.name}: the server died:\n" + (self.proc.logTail() if self.proc else "")
        return None

    def pids(self) -> dict[str, int]:
        assert self.proc is not None and self.proc.process is not None
        return {"server": self.proc.process.pid}

    def servedStatus(self) -> dict[str, Any]:
        from dhcp6ha.ctl import request

        result = request(str(self.controlSocket), {"command": "status"}, timeout=5.0)
        assert isinstance(result, dict)
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.process is not None:
            self.proc.stop()


class Pair(Setup):
    """A primary and a secondary in NORMAL; perfdhcp talks to the primary."""

    def __init__(
        self,
        cleanups: Cleanups,
        directory: Path,
        name: str,
        sockets: Path,
        settle: float,
        tree: Path | None = None,
        secondaryDirectory: Path | None = None,
    ) -> None:
        self.cleanups = cleanups
        self.directory = directory
        self.secondaryDirectory = secondaryDirectory or directory / "secondary"
        self.name = name
        self.sockets = sockets
        self.settleTimeout = settle
        self.tree = tree
        self.primary: FailoverServer | None = None
        self.secondary: FailoverServer | None = None
        self._before: dict[str, Any] | None = None
        self._counts: tuple[int, int | None] = (0, None)

    async def start(self) -> None:
        ns = Namespace.create(self.cleanups, "bpair")
        await self.link(self.cleanups, ns)
        self.directory.mkdir(parents=True)
        pki = self.directory / "pki"
        identities = {"primary": "primary.bench.test", "secondary": "secondary.bench.test"}
        made = subprocess.run(
            [sys.executable, "-m", "dhcp6ha.pki", str(pki), "--quiet"]
            + [f"--server={name}={identity}" for name, identity in identities.items()],
            capture_output=True, text=True, cwd=serverTree(), check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"dhcp6ha-pki failed: {made.stderr}")

        def relationship(role: str, partner: str, **where: Any) -> Relationship:
            # The defaults of a real deployment, not the integration tests' short timers.
            return Relationship(
                RELATIONSHIP, role, ["lan"], pki / f"{role}.pem", pki / f"{role}-key.pem",
                pki / "ca.pem", identities[partner], mclt=3600, heartbeat=10,
                unreachableAfter=30, idleTimeout=60, handshakeTimeout=10, **where,
            )  # fmt: skip

        self.secondaryDirectory.parent.mkdir(parents=True, exist_ok=True)
        self.secondary = FailoverServer(
            self.cleanups, "secondary", self.secondaryDirectory, self.sockets,
            subnets=[benchSubnet(None)],
            relationships=[relationship("secondary", "primary", listenAddress="::1",
                                        listenPort=6647)],
            ns=ns, address="::1", port=5548,
        )  # fmt: skip
        self.primary = FailoverServer(
            self.cleanups, "primary", self.directory / "primary", self.sockets,
            subnets=[benchSubnet("s0")],
            relationships=[relationship("primary", "secondary", partnerAddress="::1",
                                        partnerPort=6647)],
            ns=ns, address="::", port=547, interfaces=["s0"],
        )  # fmt: skip
        if self.tree is not None:
            for server in (self.primary, self.secondary):
                server.process = TreeServerProcess(
                    self.cleanups, server.config, server.directory, ns=ns, port=server.port,
                    tree=self.tree,
                )  # fmt: skip
        self.secondary.start()
        await self.secondary.ready()
        self.primary.start()
        await self.primary.ready()
        for server in (self.primary, self.secondary):
            await server.waitState(RELATIONSHIP, "normal", 60, connected=True)
        started = time.monotonic()
        # The secondary's PoolRequest (FREE-BACKUP prefixes) follows NORMAL:
        # wait until nothing is unacked and nothing new was sent for 2 s.
        deadline = started + self.settleTimeout
        quietSince, sent = time.monotonic(), self.replication()["sent"]
        while time.monotonic() - quietSince < 2.0 and time.monotonic() < deadline:
            await self.settled(max(0.0, deadline - time.monotonic()))
            await sleep(0.2)
            now = self.replication()["sent"]
            if now != sent or self.unacked():
                quietSince, sent = time.monotonic(), now
        print(f"  {self.name}: NORMAL, settled in {time.monotonic() - started:.1f} s"
              f" (initial updates: {self.replication()['acked']})", flush=True)  # fmt: skip

    def replication(self, server: FailoverServer | None = None) -> dict[str, Any]:
        entry = (server or self.primary).relationship(RELATIONSHIP)  # type: ignore[union-attr]
        if entry is None or entry.get("replication") is None:
            raise RuntimeError(f"{self.name}: no replication status (an older server?)")
        return dict(entry["replication"])

    def unacked(self) -> int:
        total = 0
        for server in (self.primary, self.secondary):
            entry = server.relationship(RELATIONSHIP)  # type: ignore[union-attr]
            assert entry is not None
            total += int(entry.get("unacked_updates", 0))
        return total

    async def settled(self, timeout: float) -> bool:
        """Wait until neither side has unacked updates; C{False} on timeout."""
        deadline = time.monotonic() + timeout
        while self.unacked():
            if time.monotonic() > deadline:
                return False
            await sleep(0.2)
        return True

    def servedStatus(self) -> dict[str, Any]:
        assert self.primary is not None
        return self.primary.status()

    async def beforeRun(self) -> None:
        await super().beforeRun()
        before = self.replication()
        self._before = before["lag_histogram"]
        self._counts = (before["sent"], before.get("batches_sent"))

    async def afterRun(self, result: Result) -> None:
        if self.alive() is not None:
            return
        done = await self.settled(self.settleTimeout)
        replication = self.replication()
        after = replication["lag_histogram"]
        sent, batches = self._counts
        if batches is not None and replication.get("batches_sent", batches) > batches:
            result.batchMean = (replication["sent"] - sent) / (
                replication["batches_sent"] - batches
            )
        assert self._before is not None
        await super().afterRun(result)
        result.lagSnapshots = (self._before, after)
        result.lag = Durations.between(self._before, after)
        if not done:
            result.lag.unacked = self.unacked()

    def alive(self) -> str | None:
        for server in (self.primary, self.secondary):
            if server is None or not server.running():
                name = server.name if server is not None else "?"
                return f"{self.name}: the {name} died:\n" + (server.logTail() if server else "")
        return None

    def pids(self) -> dict[str, int]:
        found = {}
        for server in (self.primary, self.secondary):
            assert server is not None and server.process.process is not None
            found[server.name] = server.process.process.pid
        return found

    def stop(self) -> None:
        for server in (self.primary, self.secondary):
            if server is not None and server.running():
                server.stop()


# --- the search -----------------------------------------------------------------------


@dataclass
class Search:
    """The rate search of one setup: step up by doubling, then bisect."""

    setup: Setup
    rate: int
    maxRuns: int
    best: Result | None = None
    lowestBad: int | None = None
    runs: int = 0
    done: bool = False
    failure: str | None = None

    def record(self, r: Result) -> None:
        self.runs += 1
        if r.lossRatio < 0.01 and r.exchanges > 0:
            self.best = r
            if self.lowestBad is None:
                self.rate *= 2
            elif self.lowestBad - self.rate <= max(25, self.rate // 20):
                self.done = True
            else:
                self.rate = (self.rate + self.lowestBad) // 2
        else:
            self.lowestBad = self.rate if self.lowestBad is None else min(self.lowestBad, self.rate)
            low = self.best.rate if self.best else 0
            if self.lowestBad - low <= max(25, low // 20):
                self.done = True
            else:
                self.rate = (low + self.lowestBad) // 2
        if self.rate < 10 or self.runs >= self.maxRuns:
            self.done = True


async def measure(setup: Setup, leaseType: str, rate: int, args: argparse.Namespace,
                  n: int) -> Result:  # fmt: skip
    await setup.beforeRun()
    log = setup.directory / f"perfdhcp-{rate}-{n}.log"
    pids = setup.pids()
    before = {name: cpuSample(pid) for name, pid in pids.items()}
    started = time.monotonic()
    r = await runPerfdhcp(
        setup.client, log, leaseType, rate, args.period, args.clients,
        OTHER_CPU if args.pin else None,
    )  # fmt: skip
    r.setup = setup.name
    await setup.afterRun(r)
    # After the pair has settled: the replication work of the run included.
    wall = time.monotonic() - started
    try:
        r.cpu = {name: cpuBetween(before[name], cpuSample(pid), wall) for name, pid in pids.items()}
    except OSError:
        pass  # a server died: alive() says so
    return r


@dataclass
class Comparison:
    """The common-rate runs of every setup."""

    rate: int
    runs: dict[str, list[Result]]


def pooled(results: list[Result], kind: str, q: float) -> float:
    return percentile([v for r in results for v in r.samples.get(kind, [])], q)


def pooledLoss(results: list[Result]) -> float:
    started = sum(r.sent.get("SA", 0) for r in results)
    done = sum(r.exchanges for r in results)
    return 1.0 - done / started if started else 1.0


def pooledLag(results: list[Result]) -> Durations | None:
    lag = pooledDurations([r.lagSnapshots for r in results])
    if lag is not None:
        lag.unacked = max(r.lag.unacked for r in results if r.lag is not None)
    return lag


def pooledServerTime(results: list[Result]) -> Durations | None:
    return pooledDurations([r.serverSnapshots for r in results])


def pooledQueueWait(results: list[Result]) -> Durations | None:
    return pooledDurations([r.queueSnapshots for r in results])


def pooledDurations(
    intervals: list[tuple[dict[str, Any], dict[str, Any]] | None],
) -> Durations | None:
    """The durations of several intervals of one histogram, pooled."""
    snapshots = [interval for interval in intervals if interval is not None]
    if not snapshots:
        return None
    # The runs are consecutive intervals of one histogram: first before, last after
    # minus whatever came in between (other setups' runs add nothing to it).
    counts: dict[str, int] = {}
    for before, after in snapshots:
        for i, n in after["counts"].items():
            counts[i] = counts.get(i, 0) + int(n)
        for i, n in before["counts"].items():
            counts[i] = counts.get(i, 0) - int(n)
    shape = snapshots[0][1]
    return Durations.between({"counts": {}}, {**shape, "counts": counts})


async def benchType(
    cleanups: Cleanups, workdir: Path, leaseType: str, args: argparse.Namespace
) -> tuple[dict[str, Search], list[Comparison]]:
    base = workdir / leaseType
    sockets = Path(tempfile.mkdtemp(prefix="d6hab-"))  # short: UNIX socket paths
    cleanups.addCleanup(shutil.rmtree, sockets, True)
    secondaries: Path | None = None
    if args.secondary_dir:
        secondaries = Path(tempfile.mkdtemp(prefix="d6hab-", dir=args.secondary_dir))
        cleanups.addCleanup(shutil.rmtree, secondaries, True)

    def secondaryDirectory(name: str) -> Path | None:
        return None if secondaries is None else secondaries / name / "secondary"

    setups: list[Setup] = []
    for name in args.setups:
        if name == "alone":
            setups.append(Alone(cleanups, base / "alone", "alone", serverTree(),
                                sockets / "alone.ctl"))  # fmt: skip
        elif name == "pair":
            setups.append(Pair(cleanups, base / "pair", "pair", sockets, args.settle,
                               secondaryDirectory=secondaryDirectory("pair")))  # fmt: skip
    for label, tree in args.tree:
        setups.append(Alone(cleanups, base / f"alone-{label}", f"alone@{label}", Path(tree),
                            sockets / f"alone-{len(setups)}.ctl"))  # fmt: skip
    for i, (label, tree) in enumerate(args.pair_tree):
        # Its own control sockets: the servers are named primary and secondary too.
        own = sockets / f"p{i}"
        own.mkdir()
        setups.append(Pair(cleanups, base / f"pair-{label}", f"pair@{label}", own, args.settle,
                           Path(tree), secondaryDirectory(f"pair-{label}")))  # fmt: skip
    for setup in setups:
        await setup.start()
        if args.pin:
            for name, pid in setup.pids().items():
                secondary = name == "secondary"
                pinProcess(
                    pid, OTHER_CPU if secondary else SERVER_CPU, secondary and args.secondary_idle
                )
    searches = {s.name: Search(s, args.start, args.max_runs) for s in setups}
    n = 0
    # Round-robin: one run of each setup still searching, in turn.
    while any(not s.done for s in searches.values()):
        for search in searches.values():
            if search.done:
                continue
            n += 1
            r = await measure(search.setup, leaseType, search.rate, args, n)
            print(f"  {leaseType:13s} {search.setup.name:14s} {describe(r)}", flush=True)
            problem = search.setup.alive()
            if problem:
                print("  " + problem, flush=True)
                search.failure = problem
                search.done = True
                continue
            search.record(r)
    comparisons: list[Comparison] = []
    alive = [s for s in setups if searches[s.name].failure is None]
    bests = [searches[s.name].best for s in alive]
    if args.compare_runs and alive and all(b is not None for b in bests):
        # The pair against the server alone, when both run; else every setup.
        main = [b for s, b in zip(alive, bests, strict=True) if not isinstance(s, Alone)
                or s.name == "alone"] if len(args.setups) > 1 else bests  # fmt: skip
        lowest = min(b.rate for b in (main or bests) if b is not None)
        rates = args.compare_rate or [max(10, int(lowest * args.compare_fraction))]
        for rate in rates:
            comparison = Comparison(rate, {s.name: [] for s in alive})
            comparisons.append(comparison)
            print(f"  {leaseType}: every setup at {rate}/s, {args.compare_runs} runs each,"
                  " in turns", flush=True)  # fmt: skip
            for _ in range(args.compare_runs):
                for setup in alive:
                    n += 1
                    r = await measure(setup, leaseType, rate, args, n)
                    print(f"  {leaseType:13s} {setup.name:14s} {describe(r)}", flush=True)
                    comparison.runs[setup.name].append(r)
    for setup in setups:
        setup.stop()
    if not args.keep_db:
        for path in base.glob("**/leases.sqlite*"):
            path.unlink()
    return searches, comparisons


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def report(leaseType: str, searches: dict[str, Search], comparisons: list[Comparison],
           args: argparse.Namespace) -> None:  # fmt: skip
    print(f"\n{leaseType}: highest rate with < 1% lost exchanges ({args.clients} distinct"
          " clients, relayed, durable leases):")  # fmt: skip
    for name, search in searches.items():
        if search.failure:
            print(f"  {name:14s} failed: {search.failure.splitlines()[0]}")
        elif search.best is None:
            print(f"  {name:14s} no rate below 1% loss")
        else:
            print(f"  {name:14s} {describe(search.best, long=True)}")
    for comparison in comparisons:
        print(f"{leaseType}: at {comparison.rate}/s, {args.compare_runs} runs each"
              " (delays pooled over the runs, ms):")  # fmt: skip
        print(f"  {'setup':14s} {'completed/s':>11s} {'lost':>6s} {'SA med':>7s} {'SA p99':>7s}"
              f" {'RR med':>7s} {'RR p99':>7s} {'srv med':>7s} {'srv p99':>7s}"
              "  lag ms p50/p99")  # fmt: skip
        for name, results in comparison.runs.items():
            rate = sum(r.exchangeRate for r in results) / len(results)
            lag = pooledLag(results)
            served = pooledServerTime(results)
            print(
                f"  {name:14s} {rate:11.1f} {100 * pooledLoss(results):5.2f}%"
                f" {pooled(results, 'SA', 0.5):7.2f} {pooled(results, 'SA', 0.99):7.2f}"
                f" {pooled(results, 'RR', 0.5):7.2f} {pooled(results, 'RR', 0.99):7.2f}"
                + (
                    f" {1000 * served.p50:7.2f} {1000 * served.p99:7.2f}"
                    if served is not None and served.count
                    else f" {'-':>7s} {'-':>7s}"
                )
                + f"  {describeLag(lag) if lag is not None else '-'}"
            )
    for pairName in [name for name in searches if name == "pair" or name.startswith("pair@")]:
        if "alone" not in searches:
            break
        alone, pair = searches["alone"].best, searches[pairName].best
        print(f"{leaseType}: {pairName} / alone (targets: latency <= {LATENCY_TARGET:.2f},"
              f" rate >= {RATE_TARGET:.2f}):")  # fmt: skip
        if alone is not None and pair is not None:
            r = ratio(pair.exchangeRate, alone.exchangeRate)
            print(f"  best rate {pair.exchangeRate:.0f} / {alone.exchangeRate:.0f} = {r:.3f}"
                  f"  {'ok' if r >= RATE_TARGET else 'MISSED'}")  # fmt: skip
        for comparison in comparisons:
            if not {"alone", pairName} <= set(comparison.runs):
                continue
            a, p = comparison.runs["alone"], comparison.runs[pairName]
            for kind, q, label in (("RR", 0.5, "RR median"), ("RR", 0.99, "RR p99"),
                                   ("SA", 0.5, "SA median"), ("SA", 0.99, "SA p99")):  # fmt: skip
                r = ratio(pooled(p, kind, q), pooled(a, kind, q))
                verdict = "" if kind == "SA" else ("  ok" if r <= LATENCY_TARGET else "  MISSED")
                print(f"  {label:9s} at {comparison.rate}/s {pooled(p, kind, q):7.2f} /"
                      f" {pooled(a, kind, q):7.2f} ms = {r:.3f}{verdict}")  # fmt: skip
            for what, mine, theirs in (
                (
                    "server's own response time (datagram read -> reply sent, every reply)",
                    pooledServerTime(p),
                    pooledServerTime(a),
                ),
                (
                    "wait in the server's socket buffer (arrival -> read, every datagram)",
                    pooledQueueWait(p),
                    pooledQueueWait(a),
                ),
            ):
                if mine is None or theirs is None or not theirs.count:
                    continue
                for label, x, y in (
                    ("median", mine.p50, theirs.p50),
                    ("p99", mine.p99, theirs.p99),
                ):
                    print(f"  {what} {label} at {comparison.rate}/s {1000 * x:.3f} /"
                          f" {1000 * y:.3f} ms = {ratio(x, y):.3f}")  # fmt: skip
            lag = pooledLag(p)
            if lag is not None:
                print(f"  replication lag (Reply sent -> partner ack) at {comparison.rate}/s:"
                      f" median {1000 * lag.p50:.1f} ms, p99 {1000 * lag.p99:.1f} ms"
                      f" over {lag.count} updates")  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    reason = skipReason(PERFDHCP) or serverSkipReason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    cleanups = Cleanups()
    # Also on Ctrl-C / SIGTERM, when the reactor stops under the coroutine.
    reactor.addSystemEventTrigger("before", "shutdown", cleanups.run)
    workdir = Path(cleanups.mktemp(args.workdir))
    fsType = run(["stat", "-f", "-c", "%T", str(workdir)], check=False).stdout.strip()
    for name in args.pair_ablation:
        args.pair_tree.append((name, str(ablationTree(workdir, name))))
    trees = ", ".join(f"{label} from {tree}" for label, tree in args.tree + args.pair_tree)
    print(f"server from {serverTree()}{'; ' + trees if trees else ''};"
          f" files in {workdir} ({fsType}); load average {os.getloadavg()[0]:.2f}",
          flush=True)  # fmt: skip
    results: dict[str, tuple[dict[str, Search], list[Comparison]]] = {}
    try:
        for leaseType in args.types:
            name = {"na": "address-only", "pd": "prefix-only"}[leaseType]
            print(f"{name}: stepping the rate (each run {args.period:.0f} s)", flush=True)
            results[name] = await benchType(cleanups, workdir, name, args)
    finally:
        cleanups.run()
    for name, (searches, comparisons) in results.items():
        report(name, searches, comparisons, args)
    print(f"\nlogs in {workdir}; load average {os.getloadavg()[0]:.2f}")
    return 0


def ablationTree(workdir: Path, name: str) -> Path:
    """This checkout's C{HEAD} with C{bench/ablations/NAME.patch} applied, under C{workdir}."""
    tree = workdir / f"ablation-{name}"
    tree.mkdir()
    archive = workdir / f"ablation-{name}.tar"
    # run(): a command that fails (a patch that no longer applies) says why.
    run(["git", "-C", str(serverTree()), "archive", "--output", str(archive), "HEAD"])
    run(["tar", "-x", "-f", str(archive), "-C", str(tree)])
    archive.unlink()
    run(["patch", "-s", "-p1", "-d", str(tree), "-i", str(ABLATIONS / f"{name}.patch")])
    return tree


def parseRates(text: str) -> list[int]:
    try:
        rates = [int(rate) for rate in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: rates per second, comma-separated") from None
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: rates per second, comma-separated")
    return rates


def parseTree(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path, "dhcp6ha").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: LABEL=PATH of a dhcp6ha checkout")
    return label, path


def parseArgs(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--types", nargs="+", default=["na", "pd"], choices=["na", "pd"])
    p.add_argument("--setups", nargs="*", default=["alone", "pair"], choices=["alone", "pair"])
    p.add_argument("--tree", action="append", type=parseTree, default=[],
                   metavar="LABEL=PATH", help="also a server alone from this checkout")  # fmt: skip
    p.add_argument("--pair-tree", action="append", type=parseTree, default=[],
                   metavar="LABEL=PATH", help="also a pair from this checkout")  # fmt: skip
    p.add_argument("--pair-ablation", action="append", default=[],
                   choices=sorted(patch.stem for patch in ABLATIONS.glob("*.patch")),
                   metavar="NAME", help="also a pair from HEAD with bench/ablations/NAME.patch")  # fmt: skip
    p.add_argument("--period", type=float, default=8.0, help="seconds per perfdhcp run")
    p.add_argument("--start", type=int, default=500, help="first offered rate (exchanges/s)")
    p.add_argument("--clients", type=int, default=1_000_000, help="perfdhcp -R")
    p.add_argument("--max-runs", type=int, default=8, help="search runs per setup and type")
    p.add_argument("--compare-runs", type=int, default=2,
                   help="runs per setup at the common rate (0: none)")  # fmt: skip
    p.add_argument("--compare-rate", type=parseRates, default=[],
                   help="the common rate, or several, comma-separated (default:"
                        " --compare-fraction of the lowest best rate)")  # fmt: skip
    p.add_argument("--compare-fraction", type=float, default=0.7,
                   help="the common rate as a fraction of the lowest best rate: below"
                        " saturation, where latency is the replication's, not queueing")  # fmt: skip
    p.add_argument("--settle", type=float, default=120.0,
                   help="longest wait for the pair's updates to be acked (s)")  # fmt: skip
    p.add_argument("--workdir", default=None, help="parent directory of the run's files")
    p.add_argument("--keep-db", action="store_true", help="keep the lease databases")
    p.add_argument("--pin", action="store_true",
                   help="server alone and primary on CPU 1, perfdhcp and secondary on CPU 0"
                        " (the partner as on another host; see the module docstring)")  # fmt: skip
    p.add_argument("--secondary-dir", default=None,
                   help="parent directory of the secondaries' files, databases included"
                        " (e.g. another disk: the partner's fsyncs then do not queue with"
                        " the primary's)")  # fmt: skip
    p.add_argument("--secondary-idle", action="store_true",
                   help="with --pin, the secondary in SCHED_IDLE: it never delays perfdhcp,"
                        " which shares its CPU (see the module docstring)")  # fmt: skip
    args = p.parse_args(argv)
    if args.pin and (os.cpu_count() or 1) < 2:
        p.error("--pin needs two CPUs")
    if args.secondary_idle and not args.pin:
        p.error("--secondary-idle goes with --pin")
    return args


def cli(argv: list[str]) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    args = parseArgs(argv)

    def start(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(_exit(args))

    react(start)


async def _exit(args: argparse.Namespace) -> None:
    code = await main(args)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    cli(sys.argv[1:])
