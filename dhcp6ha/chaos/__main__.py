# -*- test-case-name: tests.test_chaos_faults,tests.test_chaos_cli -*-
"""
C{python -m dhcp6ha.chaos}: run fault schedules against a dhcp6ha failover
pair in network namespaces and check every invariant (needs root)::

    python -m dhcp6ha.chaos --seeds 20              # 20 random seeds
    python -m dhcp6ha.chaos --seed 1234             # replay one seed
    python -m dhcp6ha.chaos --seed 1234 --print-schedule   # show, do not run

Each seed's schedule is printed before it runs; a run that breaks an
invariant prints the checker's report (the seed, the command that replays
it, the schedule, each violation with the events involved and the history
of the clients concerned).  At the end, the summary: schedules run, faults
injected by kind, clients, Replies checked, violations and failures.  Each
run's files (history as JSON lines, report, server logs and databases) are
kept under C{--workdir}, in C{seed-N/}.

C{--kinds} takes C{all}, kinds, and C{-KIND} to leave one out; a list that
starts with C{-} may follow C{--kinds} as its own word (C{--kinds
-clock-step}) or be joined to it (C{--kinds=-clock-step}).

Exit status: 0 no violation and no failure; 1 some; 2 usage error, or the
harness cannot run here (not root, no C{ip netns}); 141 (128 + SIGPIPE) when
the reader of the output went away (C{| head}): the output stops there,
without a traceback, and a run in progress is stopped as by Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from dhcp6ha.chaos.faults import KINDS, ScheduleParameters, makeSchedule, parseKinds

__all__ = ["EXIT_BROKEN_PIPE", "main", "summary"]

EXIT_BROKEN_PIPE = 141
"""The exit status when the output's reader went away: 128 + SIGPIPE, as a
shell reports a command that SIGPIPE killed."""


def _faults(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        pair = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    return pair


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return parseKinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _kindsJoined(argv: Sequence[str]) -> list[str]:
    """
    C{argv} with C{--kinds -KIND...} written as C{--kinds=-KIND...}:
    argparse takes a separate value that starts with C{-} for an option
    ("expected one argument").  A short option (C{-q}, C{-h}) or a long
    one after C{--kinds} is left alone, and so is everything after C{--}.
    """
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            joined.append(word)
            joined.extend(words)
            break
        if len(word) > 3 and "--kinds".startswith(word):
            value = next(words, None)
            if value is None:
                joined.append(word)
            elif value.startswith("-") and not value.startswith("--") and len(value) > 2:
                joined.append(word + "=" + value)
            else:
                joined += [word, value]
            continue
        joined.append(word)
    return joined


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dhcp6ha.chaos",
        description=(
            "Fault injection against a dhcp6ha failover pair in network namespaces, with"
            " every Reply and both databases checked against DESIGN.md's invariants."
        ),
        epilog=(
            "Exit status: 0 clean; 1 violations or failures; 2 usage or environment;"
            " 141 the output's reader went away (| head)."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--seed",
        type=int,
        action="append",
        metavar="N",
        help="run (or replay) this seed; may be repeated",
    )
    which.add_argument("--seeds", type=int, metavar="N", help="run N seeds (default 1)")
    parser.add_argument(
        "--first-seed",
        type=int,
        metavar="N",
        help="with --seeds: the first seed (default: a random one, printed)",
    )
    parser.add_argument("--clients", type=int, default=40, help="simulated clients (default 40)")
    parser.add_argument(
        "--window", type=float, default=40.0, help="seconds of faults per run (default 40)"
    )
    parser.add_argument(
        "--faults", type=_faults, default=(3, 6), metavar="MIN-MAX", help="faults per schedule"
    )
    parser.add_argument(
        "--kinds",
        type=_kinds,
        default=KINDS,
        metavar="LIST",
        help=(
            "fault kinds, comma-separated, 'all', '-KIND' to leave one out"
            " (--kinds -clock-step or --kinds=-clock-step: all but clock-step;"
            f" default all: {','.join(KINDS)})"
        ),
    )
    parser.add_argument(
        "--release-probability",
        type=float,
        default=0.05,
        metavar="P",
        help="chance that a client releases after each binding (default 0.05)",
    )
    parser.add_argument(
        "--decline-probability",
        type=float,
        default=0.02,
        metavar="P",
        help="chance that a client declines the addresses it got (default 0.02)",
    )
    parser.add_argument(
        "--workdir", metavar="DIR", help="where runs keep their files (default: a new temp dir)"
    )
    parser.add_argument(
        "--keep-namespaces", action="store_true", help="leave the namespaces after each run"
    )
    parser.add_argument(
        "--print-schedule", action="store_true", help="print the schedules and exit (no run)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    return parser


def _replay(seed: int, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "dhcp6ha.chaos", "--seed", str(seed)]
    command += ["--clients", str(args.clients), "--window", f"{args.window:g}"]
    command += ["--faults", f"{args.faults[0]}-{args.faults[1]}"]
    if tuple(args.kinds) != KINDS:
        command += ["--kinds", ",".join(args.kinds)]
    if args.release_probability != 0.05:
        command += ["--release-probability", f"{args.release_probability:g}"]
    if args.decline_probability != 0.02:
        command += ["--decline-probability", f"{args.decline_probability:g}"]
    return command


def summary(results: Sequence[Any]) -> str:
    """The figures of several runs (L{dhcp6ha.chaos.harness.RunResult}s)."""
    injected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for result in results:
        injected.update(result.injected)
        skipped.update(result.skipped)
    violations = sum(len(r.violations) for r in results)
    failures = sum(len(r.failures) for r in results)
    lines = [
        "=== chaos summary",
        f"schedules run:     {len(results)}"
        + (f" (seeds {', '.join(str(r.seed) for r in results)})" if 0 < len(results) <= 20 else ""),
        "faults injected:   "
        + (", ".join(f"{k} {injected[k]}" for k in KINDS if injected[k]) or "none")
        + f" (total {sum(injected.values())})",
    ]
    if skipped:
        lines.append(
            "faults skipped:    " + ", ".join(f"{k} {skipped[k]}" for k in KINDS if skipped[k])
        )
    lines += [
        f"clients:           {sum(r.clients for r in results)}"
        + (f" ({results[0].clients} per run)" if results else ""),
        f"Replies checked:   {sum(r.replies for r in results)}",
        f"violations:        {violations}"
        + (
            " (seeds " + ", ".join(str(r.seed) for r in results if r.violations) + ")"
            if violations
            else ""
        ),
        f"failures:          {failures}"
        + (
            " (seeds " + ", ".join(str(r.seed) for r in results if r.failures) + ")"
            if failures
            else ""
        ),
        f"server tracebacks: {sum(r.serverErrors for r in results)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """The command line; returns the exit status."""
    out = out or sys.stdout
    parser = _parser()
    try:
        args = parser.parse_args(_kindsJoined(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else 2
    if args.seed:
        seeds = list(args.seed)
    else:
        count = args.seeds if args.seeds is not None else 1
        if count < 1:
            parser.print_usage(sys.stderr)
            print("--seeds: at least 1", file=sys.stderr)
            return 2
        first = args.first_seed
        if first is None:
            first = int.from_bytes(os.urandom(3), "big")
        seeds = list(range(first, first + count))
    try:
        parameters = ScheduleParameters(window=args.window, faults=args.faults, kinds=args.kinds)
    except ValueError as e:
        print(f"python -m dhcp6ha.chaos: {e}", file=sys.stderr)
        return 2
    if args.print_schedule:
        for seed in seeds:
            out.write(makeSchedule(seed, parameters).describe() + "\n")
            out.write("replay: " + shlex.join(_replay(seed, args)) + "\n")
        return 0
    return _run(args, seeds, parameters, out)


def _run(
    args: argparse.Namespace, seeds: list[int], parameters: ScheduleParameters, out: IO[str]
) -> int:
    from dhcp6ha.chaos.topology import namespaceProblem, removeStale

    problem = namespaceProblem()
    if problem is not None:
        print(f"python -m dhcp6ha.chaos: cannot run here: {problem}", file=sys.stderr)
        return 2
    removeStale()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from dhcp6ha.chaos.harness import ChaosRun, RunConfig, makeCertificates

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dhcp6ha-chaos-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        clients=args.clients,
        schedule=parameters,
        releaseProbability=args.release_probability,
        declineProbability=args.decline_probability,
    )

    results: list[Any] = []
    status = [0]
    current: list[Any] = []
    brokenPipe: list[BrokenPipeError] = []

    def write(text: str) -> None:
        if brokenPipe:
            return
        try:
            out.write(text)
            out.flush()
        except BrokenPipeError as e:
            # The reader went away (| head): stop as Ctrl-C would (the
            # current run is aborted), and exit quietly (_command).
            brokenPipe.append(e)
            if reactor.running:
                reactor.stop()

    def say(text: str) -> None:
        if not args.quiet:
            write(text + "\n")

    write(f"chaos: {len(seeds)} seed(s) from {seeds[0]}, files in {workdir}\n")

    async def runAll() -> None:
        pki = makeCertificates(workdir / "pki")
        for seed in seeds:
            if brokenPipe:
                return
            write(f"=== seed {seed}\n")
            run = ChaosRun(
                reactor,
                seed,
                config,
                workdir / f"seed-{seed}",
                pki,
                say=say,
                replay=_replay(seed, args),
                keep=args.keep_namespaces,
            )
            current[:] = [run]
            result = await run.run()
            current[:] = []
            results.append(result)
            verdict = "ok" if result.ok else "FAILED"
            write(
                f"--- seed {seed}: {verdict}: {sum(result.injected.values())} faults,"
                f" {result.replies} Replies, {len(result.violations)} violations,"
                f" {len(result.failures)} failures ({result.directory})\n"
            )
            for failure in result.failures:
                write(f"    failure: {failure}\n")
            if result.violations:
                write(result.report)
            if not result.ok:
                write(f"    replay: {result.replay}\n")

    def done(outcome: object) -> None:
        from twisted.python.failure import Failure

        if isinstance(outcome, Failure):
            status[0] = 1
            if not isinstance(outcome.value, BrokenPipeError):
                write(outcome.getTraceback())
        if reactor.running:
            reactor.stop()

    def start() -> None:
        Deferred.fromCoroutine(runAll()).addBoth(done)

    def interrupted() -> None:
        # Stopped in the middle of a run (Ctrl-C): leave nothing behind.
        for run in current:
            run.abort()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    reactor.run()
    if brokenPipe:
        raise brokenPipe[0]
    out.write(summary(results))
    if len(results) < len(seeds):
        out.write(
            f"not finished:      {len(seeds) - len(results)} (stopped during seed"
            f" {seeds[len(results)]}; that run is not counted)\n"
        )
    if status[0] or any(not r.ok for r in results) or len(results) < len(seeds):
        return 1
    return 0


def _command() -> int:
    """
    C{python -m dhcp6ha.chaos}: L{main} on stdout; when the reader of the
    output goes away (C{| head}), no traceback, L{EXIT_BROKEN_PIPE}.
    """
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The Python docs' recipe (signal module, "Note on SIGPIPE"): stdout
        # to /dev/null, so that the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    sys.exit(_command())
