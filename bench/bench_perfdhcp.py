#!/usr/bin/env python
# -*- test-case-name: tests.integration.test_netns -*-
"""
Throughput and latency of a dhcp6ha server under perfdhcp (Kea 2.2).

Run by hand, as root, from the repository (not a test)::

    sudo .venv/bin/python bench/bench_perfdhcp.py            # IA_NA and IA_PD
    sudo .venv/bin/python bench/bench_perfdhcp.py --types na --period 5

Two network namespaces joined by a veth pair: the server (its default,
durable configuration: WAL, synchronous=FULL, group commit) in one,
perfdhcp in the other sending relayed traffic (C{-A1}: RELAY-FORW from
port 547) to the server's unicast address, as a relay would.  For each
lease type the offered rate is stepped up, then bisected, to find the
highest rate at which fewer than 1% of the 4-message exchanges
(Solicit-Advertise-Request-Reply) are lost; for that rate it prints the
completed exchanges per second and the delays perfdhcp reports.

Each lease type gets a fresh server and database (in a new directory under
C{--workdir}, default C{$TMPDIR}: mind its file system, fsync cost is
what durability costs; the databases are deleted at the end unless
C{--keep-db}, the logs stay); perfdhcp uses many
distinct clients (C{-R}), so nearly every exchange allocates and commits a
new lease.  Everything is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
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
    veth,
)
from tests.integration.serverproc import (  # noqa: E402
    LAN,
    ServerProcess,
    Subnet,
    poolOf,
    serverSkipReason,
    serverTree,
    writeConfig,
)

PERFDHCP = "/usr/sbin/perfdhcp"
BENCH_PD = IPv6Network("fd6b:5e1f::/32")  # 2^24 /56 prefixes: never runs out here
SERVER = LAN.network_address + 1
CLIENT = LAN.network_address + 2


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
        import tempfile

        return tempfile.mkdtemp(prefix="d6ha-bench-", dir=parent)


@dataclass
class Result:
    """One perfdhcp run."""

    rate: int
    period: float
    sent: dict[str, int] = field(default_factory=dict)  # per message kind
    received: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    delays: dict[str, dict[str, float]] = field(default_factory=dict)  # ms
    output: str = ""
    reportedRate: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)  # ms, from -x t

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
        values = sorted(self.samples.get(kind, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]


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


async def runPerfdhcp(
    ns: Namespace, workdir: Path, leaseType: str, rate: int, period: float, clients: int, n: int
) -> Result:
    """One bounded perfdhcp run at C{rate} exchanges per second."""
    from tests.integration.netns import sleep

    log = workdir / f"perfdhcp-{leaseType}-{rate}-{n}.log"
    args = [
        PERFDHCP, "-6", "-A1", "-l", "b0",
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
    return text


async def benchOne(
    cleanups: Cleanups, workdir: Path, leaseType: str, args: argparse.Namespace
) -> Result | None:
    server = Namespace.create(cleanups, "bsrv")
    client = Namespace.create(cleanups, "bcli")
    await veth(server, "s0", client, "b0")
    server.addAddress("s0", f"{SERVER}/64")
    client.addAddress("b0", f"{CLIENT}/64")
    subnet = Subnet(
        "lan",
        LAN,
        interface="s0",
        pools=[poolOf(LAN, 0x10000, 0xFFFFFFFFFFFF)],
        pdPools=[(BENCH_PD, 56)],
        preferred=3600,
        valid=7200,
        t1=1800,
        t2=2880,
    )
    directory = workdir / leaseType
    directory.mkdir()
    config = writeConfig(directory / "server.ini", directory / "leases.sqlite", [subnet],
                         interfaces=["s0"])  # fmt: skip
    proc = ServerProcess(cleanups, config, directory, ns=server)
    proc.start()
    await proc.ready()

    best: Result | None = None
    lowestBad: int | None = None
    rate = args.start
    runs = 0
    # Step up by doubling until the loss passes 1%, then bisect.
    while runs < args.max_runs:
        runs += 1
        r = await runPerfdhcp(client, directory, leaseType, rate, args.period, args.clients, runs)
        print(f"  {leaseType:13s} {describe(r)}", flush=True)
        if not proc.process or not proc.process.running():
            print("  the server died:\n" + proc.logTail(), flush=True)
            return best
        if r.lossRatio < 0.01 and r.exchanges > 0:
            best = r
            if lowestBad is None:
                rate *= 2
            else:
                if lowestBad - rate <= max(25, rate // 20):
                    break
                rate = (rate + lowestBad) // 2
        else:
            lowestBad = rate if lowestBad is None else min(lowestBad, rate)
            low = best.rate if best else 0
            if lowestBad - low <= max(25, low // 20):
                break
            rate = (low + lowestBad) // 2
        if rate < 10:
            break
    proc.stop()
    if not args.keep_db:
        for path in directory.glob("leases.sqlite*"):
            path.unlink()
    return best


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
    print(f"server from {serverTree()}; lease databases in {workdir} ({fsType})", flush=True)
    results: dict[str, Result | None] = {}
    try:
        for leaseType in args.types:
            name = {"na": "address-only", "pd": "prefix-only"}[leaseType]
            print(f"{name}: stepping the rate (each run {args.period:.0f} s)", flush=True)
            results[name] = await benchOne(cleanups, workdir, name, args)
    finally:
        cleanups.run()
    print()
    print(f"Highest rate with < 1% lost exchanges ({args.clients} distinct clients, "
          f"relayed, durable leases; logs in {workdir}):")  # fmt: skip
    for name, r in results.items():
        if r is None:
            print(f"  {name:13s} no rate below 1% loss")
        else:
            print(f"  {name:13s} {describe(r, long=True)}")
    return 0


def parseArgs(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--types", nargs="+", default=["na", "pd"], choices=["na", "pd"])
    p.add_argument("--period", type=float, default=8.0, help="seconds per perfdhcp run")
    p.add_argument("--start", type=int, default=250, help="first offered rate (exchanges/s)")
    p.add_argument("--clients", type=int, default=1_000_000, help="perfdhcp -R")
    p.add_argument("--max-runs", type=int, default=8, help="runs per lease type")
    p.add_argument("--workdir", default=None, help="parent directory of the run's files")
    p.add_argument("--keep-db", action="store_true", help="keep the lease databases")
    return p.parse_args(argv)


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
