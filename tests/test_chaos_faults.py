"""
Tests for L{dhcp6ha.chaos.faults} (the seeded fault scheduler), the pieces
of L{dhcp6ha.chaos.harness} that need no namespace (the servers' ini files,
reading a database dump) and the command line of L{dhcp6ha.chaos.__main__}
(schedules printed, replay line, summary).  Nothing here starts a process
or touches the network.
"""

from __future__ import annotations

import io
import sqlite3
from collections import Counter
from ipaddress import IPv6Address
from pathlib import Path

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.chaos import harness
from dhcp6ha.chaos.__main__ import main, summary
from dhcp6ha.chaos.faults import (
    CLIENT_CUT,
    CLOCK_STEP,
    DROP,
    KILL,
    KINDS,
    LINK_DOWN,
    LOSE_DATABASE,
    ONE_WAY,
    PARTITION,
    PARTNER_DOWN,
    SERVERS,
    Fault,
    Schedule,
    ScheduleParameters,
    conflict,
    makeSchedule,
    parseKinds,
    totalCounts,
)
from dhcp6ha.chaos.harness import RunConfig, RunResult, readDatabase, serverConfig
from dhcp6ha.chaos.history import (
    FAULT_CLOCK_JUMP,
    FAULT_KILL,
    FAULT_LOSE_DATABASE,
    FAULT_PARTITION,
    FAULT_PARTNER_DOWN,
)
from dhcp6ha.chaos.topology import Topology
from dhcp6ha.config import FailoverRole, parseConfigText
from dhcp6ha.leases import sqlite as leaseSQL
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

GUARD = ScheduleParameters().recovery


def _spans(schedule: Schedule) -> list[tuple[Fault, Fault]]:
    """Every pair of faults of a schedule."""
    faults = schedule.faults
    return [(a, b) for i, a in enumerate(faults) for b in faults[i + 1 :]]


class ScheduleTests(SynchronousTestCase):
    """L{makeSchedule}: seeded, deterministic, within its parameters."""

    def test_sameSeedSameSchedule(self) -> None:
        """The same seed and parameters give the same schedule, also as text."""
        for seed in (0, 1, 7, 123456):
            a, b = makeSchedule(seed), makeSchedule(seed)
            self.assertEqual(a, b)
            self.assertEqual(a.describe(), b.describe())

    def test_knownSchedule(self) -> None:
        """
        A schedule does not depend on the machine or the Python hash seed:
        seed 3 is always this one (a change here breaks every recorded
        replay command).
        """
        self.assertEqual(
            makeSchedule(3).describe(),
            "schedule of seed 3: 3 faults in 40 s, 1 overlapping pairs\n"
            "  t+ 15.9s  client-cut         cut primary off from the clients for 11.5 s\n"
            "  t+ 23.8s  lose-database      kill -9 primary, delete its database, restart after"
            " 3.5 s\n"
            "  t+ 31.9s  partner-down       operator: partner-down on secondary",
        )

    def test_differentSeeds(self) -> None:
        """Different seeds give different schedules."""
        schedules = {makeSchedule(seed).faults for seed in range(30)}
        self.assertGreater(len(schedules), 25)

    def test_withinWindow(self) -> None:
        """Every fault starts and ends within the window, in order of start."""
        for seed in range(200):
            schedule = makeSchedule(seed, ScheduleParameters(window=30.0))
            starts = [f.at for f in schedule.faults]
            self.assertEqual(starts, sorted(starts))
            for fault in schedule.faults:
                self.assertGreaterEqual(fault.at, 0.0)
                self.assertLessEqual(fault.end, 30.0 + 1e-9)
                self.assertEqual(round(fault.at, 1), fault.at)
                self.assertEqual(round(fault.duration, 1), fault.duration)

    def test_count(self) -> None:
        """The number of faults stays within the range asked for."""
        parameters = ScheduleParameters(faults=(2, 4))
        counts = {len(makeSchedule(seed, parameters).faults) for seed in range(200)}
        self.assertTrue(counts <= {2, 3, 4}, counts)
        self.assertIn(4, counts)
        self.assertEqual(makeSchedule(5, ScheduleParameters(faults=(0, 0))).faults, ())

    def test_everyKindAndOverlaps(self) -> None:
        """Over a few dozen seeds every kind comes up, and faults overlap."""
        schedules = [makeSchedule(seed) for seed in range(60)]
        counts = totalCounts(schedules)
        self.assertEqual(set(counts), set(KINDS))
        self.assertGreater(sum(s.overlaps() for s in schedules), 60)

    def test_kindsChosen(self) -> None:
        """Only the kinds asked for are drawn."""
        parameters = ScheduleParameters(kinds=(KILL, CLOCK_STEP))
        for seed in range(50):
            for fault in makeSchedule(seed, parameters).faults:
                self.assertIn(fault.kind, (KILL, CLOCK_STEP))

    def test_faultShapes(self) -> None:
        """Targets, modes and offsets fit each kind."""
        for seed in range(200):
            for fault in makeSchedule(seed).faults:
                if fault.kind == PARTITION:
                    self.assertEqual(fault.target, "primary/secondary")
                    self.assertIn(fault.mode, (LINK_DOWN, DROP))
                else:
                    self.assertIn(fault.target, SERVERS)
                if fault.kind == CLOCK_STEP:
                    self.assertNotEqual(fault.offset, 0)
                    self.assertLessEqual(abs(fault.offset), 2)
                if fault.kind == PARTNER_DOWN:
                    self.assertEqual(fault.duration, 0.0)
                else:
                    self.assertGreater(fault.duration, 0.0)

    def test_noConflicts(self) -> None:
        """No schedule holds two faults that conflict."""
        for seed in range(300):
            schedule = makeSchedule(seed)
            for a, b in _spans(schedule):
                self.assertIsNone(conflict(a, b, GUARD), (seed, a, b))

    def test_clockSkewBound(self) -> None:
        """Clock steps in force together never differ by the allowed skew or more."""
        for seed in range(300):
            steps = [f for f in makeSchedule(seed).faults if f.kind == CLOCK_STEP]
            for a in steps:
                for b in steps:
                    if a is not b and a.at < b.end and b.at < a.end:
                        self.assertNotEqual(a.target, b.target)
                        self.assertLess(abs(a.offset - b.offset), 5)

    def test_badParameters(self) -> None:
        """Parameters that cannot make a sound schedule are refused."""
        with self.assertRaises(ValueError):
            ScheduleParameters(kinds=("nap",))
        with self.assertRaises(ValueError):
            ScheduleParameters(kinds=())
        with self.assertRaises(ValueError):
            ScheduleParameters(faults=(3, 2))
        with self.assertRaises(ValueError):
            ScheduleParameters(window=3.0)
        with self.assertRaises(ValueError):
            ScheduleParameters(maxOffset=3, maxSkew=5.0)
        self.assertEqual(ScheduleParameters(mclt=20.0).recovery, 45.0)
        self.assertEqual(ScheduleParameters(guard=7.0).recovery, 7.0)


class ConflictTests(SynchronousTestCase):
    """L{conflict}: each rule, both ways round."""

    def assertConflict(self, a: Fault, b: Fault, words: str) -> None:
        for x, y in ((a, b), (b, a)):
            reason = conflict(x, y, GUARD)
            self.assertIsNotNone(reason, (x, y))
            assert reason is not None
            self.assertIn(words, reason)

    def assertFine(self, a: Fault, b: Fault) -> None:
        self.assertIsNone(conflict(a, b, GUARD))
        self.assertIsNone(conflict(b, a, GUARD))

    def test_processFaults(self) -> None:
        """One server is not killed again while it is down (or just restarting)."""
        self.assertConflict(
            Fault(1, KILL, "primary", 3), Fault(4.5, LOSE_DATABASE, "primary", 2), "process"
        )
        self.assertFine(Fault(1, KILL, "primary", 3), Fault(5.5, KILL, "primary", 2))
        self.assertFine(Fault(1, KILL, "primary", 3), Fault(2, KILL, "secondary", 3))

    def test_bothDatabases(self) -> None:
        """The two databases are not lost within one recovery."""
        self.assertConflict(
            Fault(1, LOSE_DATABASE, "primary", 2),
            Fault(3 + GUARD - 1, LOSE_DATABASE, "secondary", 2),
            "both databases",
        )
        self.assertFine(
            Fault(1, LOSE_DATABASE, "primary", 2),
            Fault(3 + GUARD + GUARD + 1, LOSE_DATABASE, "secondary", 2),
        )

    def test_partnerDownAfterLostDatabase(self) -> None:
        """No partner-down to a server still recovering its database."""
        self.assertConflict(
            Fault(1, LOSE_DATABASE, "primary", 2),
            Fault(3 + GUARD - 1, PARTNER_DOWN, "primary"),
            "not recovered",
        )
        self.assertFine(Fault(1, LOSE_DATABASE, "primary", 2), Fault(4, PARTNER_DOWN, "secondary"))

    def test_partnerDownOnDeadServer(self) -> None:
        """No partner-down to a server that is down; to its partner, yes."""
        self.assertConflict(
            Fault(1, KILL, "primary", 3), Fault(2, PARTNER_DOWN, "primary"), "is down"
        )
        self.assertFine(Fault(1, KILL, "primary", 3), Fault(2, PARTNER_DOWN, "secondary"))

    def test_partnerDownAndPartition(self) -> None:
        """No partner-down near a partition of the partner link (either kind)."""
        for partition in (
            Fault(10, PARTITION, "primary/secondary", 5, LINK_DOWN),
            Fault(10, ONE_WAY, "secondary", 5),
        ):
            self.assertConflict(
                partition, Fault(15 + GUARD - 1, PARTNER_DOWN, "primary"), "unreachable"
            )
            self.assertConflict(
                partition, Fault(10 - GUARD + 1, PARTNER_DOWN, "secondary"), "unreachable"
            )
        self.assertFine(Fault(10, CLIENT_CUT, "secondary", 5), Fault(11, PARTNER_DOWN, "primary"))

    def test_partnerDownTwice(self) -> None:
        """Not both servers declared partner-down within one recovery."""
        self.assertConflict(
            Fault(1, PARTNER_DOWN, "primary"), Fault(5, PARTNER_DOWN, "secondary"), "both"
        )
        self.assertFine(
            Fault(1, PARTNER_DOWN, "primary"), Fault(2 + GUARD, PARTNER_DOWN, "secondary")
        )

    def test_sameElement(self) -> None:
        """One network element is not cut twice at once; different ones may be."""
        down = Fault(1, PARTITION, "primary/secondary", 5, LINK_DOWN)
        drop = Fault(2, PARTITION, "primary/secondary", 5, DROP)
        oneWay = Fault(3, ONE_WAY, "primary", 5)
        self.assertConflict(down, evolve(down, at=4.0), "same element")
        self.assertConflict(drop, oneWay, "same element")
        self.assertConflict(oneWay, evolve(oneWay, at=5.0), "same element")
        self.assertFine(down, drop)
        self.assertFine(down, oneWay)
        self.assertFine(oneWay, evolve(oneWay, target="secondary"))
        self.assertFine(oneWay, evolve(oneWay, at=8.5))
        cut = Fault(1, CLIENT_CUT, "primary", 5)
        self.assertConflict(cut, evolve(cut, at=3.0), "same element")
        self.assertFine(cut, evolve(cut, target="secondary"))

    def test_clockSteps(self) -> None:
        """One server's clock is stepped once at a time."""
        step = Fault(1, CLOCK_STEP, "primary", 5, offset=2)
        self.assertConflict(step, evolve(step, at=3.0, offset=-1), "clock")
        self.assertFine(step, evolve(step, target="secondary", offset=-2))
        self.assertFine(step, evolve(step, at=6.5))

    def test_freeOverlaps(self) -> None:
        """Other faults overlap freely."""
        self.assertFine(
            Fault(1, KILL, "primary", 5), Fault(2, PARTITION, "primary/secondary", 5, DROP)
        )
        self.assertFine(Fault(1, KILL, "primary", 5), Fault(2, CLIENT_CUT, "secondary", 5))
        self.assertFine(Fault(1, LOSE_DATABASE, "primary", 3), Fault(2, KILL, "secondary", 5))
        self.assertFine(Fault(1, CLOCK_STEP, "primary", 5, offset=1), Fault(2, KILL, "primary", 2))


class FaultTests(SynchronousTestCase):
    """L{Fault}: how it is printed and recorded in the history."""

    def test_history(self) -> None:
        """Each kind maps to the history's kinds, targets and details."""
        cases = [
            (Fault(1, KILL, "primary", 2), FAULT_KILL, "primary"),
            (Fault(1, LOSE_DATABASE, "secondary", 2), FAULT_LOSE_DATABASE, "secondary"),
            (
                Fault(1, PARTITION, "primary/secondary", 2, DROP),
                FAULT_PARTITION,
                "primary/secondary",
            ),
            (Fault(1, ONE_WAY, "primary", 2), FAULT_PARTITION, "primary->secondary"),
            (Fault(1, CLIENT_CUT, "secondary", 2), FAULT_PARTITION, "clients/secondary"),
            (Fault(1, CLOCK_STEP, "primary", 2, offset=-2), FAULT_CLOCK_JUMP, "primary"),
            (Fault(1, PARTNER_DOWN, "secondary"), FAULT_PARTNER_DOWN, "secondary"),
        ]
        for fault, kind, target in cases:
            self.assertEqual((fault.historyKind, fault.historyTarget), (kind, target))
        self.assertEqual(cases[2][0].detail, DROP)
        self.assertEqual(cases[5][0].detail, "clock stepped by -2 s")
        self.assertEqual(cases[0][0].servers(), frozenset({"primary"}))
        self.assertEqual(cases[2][0].servers(), frozenset(SERVERS))

    def test_describe(self) -> None:
        """One line per fault, starting with its time and kind."""
        self.assertEqual(
            Fault(2.5, ONE_WAY, "secondary", 4.0).describe(),
            "t+  2.5s  one-way-partition  drop secondary -> primary on the partner link for 4.0 s",
        )
        self.assertEqual(
            Fault(12.0, CLOCK_STEP, "primary", 6.0, offset=1).describe(),
            "t+ 12.0s  clock-step         step primary's clock by +1 s for 6.0 s",
        )


class ParseKindsTests(SynchronousTestCase):
    """L{parseKinds}."""

    def test_parse(self) -> None:
        self.assertEqual(parseKinds("kill,clock-step"), (KILL, CLOCK_STEP))
        self.assertEqual(parseKinds("all"), KINDS)
        self.assertEqual(parseKinds(""), KINDS)
        self.assertEqual(parseKinds("-clock-step"), tuple(k for k in KINDS if k != CLOCK_STEP))
        self.assertEqual(parseKinds("kill,kill"), (KILL,))
        with self.assertRaises(ValueError):
            parseKinds("kill,nap")
        with self.assertRaises(ValueError):
            parseKinds("kill,-kill")


class ServerConfigTests(SynchronousTestCase):
    """L{serverConfig}: what the servers of a run are given is a valid pair."""

    def test_pair(self) -> None:
        """Both ini files parse; they form one relationship over the partner link."""
        directory = Path(self.mktemp())
        topology = Topology("test")
        config = RunConfig(clients=10)
        parsed = {
            name: parseConfigText(
                serverConfig(name, directory / name, directory / "pki", config, topology),
                f"{name}.ini",
                checkFiles=False,
            )
            for name in ("primary", "secondary")
        }
        primary, secondary = parsed["primary"], parsed["secondary"]
        self.assertNotEqual(primary.server.duid, secondary.server.duid)
        (p,) = primary.failover
        (s,) = secondary.failover
        self.assertEqual((p.role, s.role), (FailoverRole.PRIMARY, FailoverRole.SECONDARY))
        self.assertEqual((p.name, p.mclt), (s.name, s.mclt))
        self.assertEqual(p.mclt, config.mclt)
        self.assertEqual(p.partner_address, IPv6Address("fd6a:5e1f:cf::2"))
        self.assertEqual(s.listen_address, p.partner_address)
        self.assertEqual(s.partner_address, IPv6Address("fd6a:5e1f:cf::1"))
        self.assertEqual(p.auto_partner_down, 0)
        for server in parsed.values():
            (subnet,) = server.subnets
            self.assertEqual(subnet.valid_lifetime, config.valid)
            self.assertEqual(server.server.interfaces, ("lan",))
            self.assertEqual(server.subnets[0].pools, primary.subnets[0].pools)


class ReadDatabaseTests(SynchronousTestCase):
    """L{readDatabase}: a server's SQLite database as dump records."""

    def test_missing(self) -> None:
        """A database that does not exist (lost) has no bindings."""
        self.assertEqual(readDatabase(Path(self.mktemp())), ([], 0))

    def test_read(self) -> None:
        """Every binding, with the fields the checker reads, and the pending count."""
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        lease = Lease(
            LeaseType.PD,
            IPv6Address("fd6a:5e1f:c500:100::"),
            56,
            BindingState.ACTIVE,
            b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01",
            7,
            100.0,
            100.0,
            12,
            20,
            120.0,
            partner_lifetime_acked=130.0,
        )
        # The store's own schema and row format, written without its threads.
        conn = sqlite3.connect(path)
        leaseSQL._setUp(conn)
        conn.execute(leaseSQL.SQL_UPSERT, leaseSQL._toRow(lease))
        conn.commit()
        conn.close()
        records, pending = readDatabase(path)
        self.assertEqual(pending, 0)
        (record,) = records
        self.assertEqual(
            (record.lease_type, record.key, record.state, record.duid, record.iaid),
            ("pd", (lease.address, 56), "active", lease.duid, 7),
        )
        self.assertEqual(
            (record.expires, record.cltt, record.partner_lifetime_acked), (120.0, 100.0, 130.0)
        )
        conn = sqlite3.connect(path)
        conn.execute("UPDATE leases SET pending_for = 'chaos'")
        conn.commit()
        conn.close()
        self.assertEqual(readDatabase(path)[1], 1)


class CommandLineTests(SynchronousTestCase):
    """L{main} without running anything, and L{summary}."""

    def test_printSchedule(self) -> None:
        """--print-schedule prints each seed's schedule and its replay command."""
        out = io.StringIO()
        status = main(["--seed", "3", "--seed", "4", "--print-schedule"], out)
        self.assertEqual(status, 0)
        text = out.getvalue()
        self.assertIn(makeSchedule(3).describe(), text)
        self.assertIn(makeSchedule(4).describe(), text)
        self.assertIn("-m dhcp6ha.chaos --seed 3 --clients 40 --window 40 --faults 3-6\n", text)

    def test_printScheduleParameters(self) -> None:
        """The schedule follows --window, --faults and --kinds, and so does the replay line."""
        out = io.StringIO()
        status = main(
            ["--seed", "9", "--window", "30", "--faults", "2", "--kinds", "kill,partition",
             "--print-schedule"], out
        )  # fmt: skip
        self.assertEqual(status, 0)
        parameters = ScheduleParameters(window=30.0, faults=(2, 2), kinds=(KILL, PARTITION))
        self.assertIn(makeSchedule(9, parameters).describe(), out.getvalue())
        self.assertIn("--window 30 --faults 2-2 --kinds kill,partition", out.getvalue())

    def test_usage(self) -> None:
        """Bad arguments exit with status 2."""
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        self.assertEqual(main(["--kinds", "nap", "--print-schedule"], io.StringIO()), 2)
        self.assertEqual(main(["--faults", "x", "--print-schedule"], io.StringIO()), 2)
        self.assertEqual(main(["--window", "2", "--print-schedule"], io.StringIO()), 2)

    def test_summary(self) -> None:
        """The summary gives schedules, faults by kind, clients, Replies, violations."""
        results = [
            RunResult(
                seed=seed,
                schedule=makeSchedule(seed),
                injected=Counter({KILL: 2, CLOCK_STEP: 1}),
                skipped=Counter({CLOCK_STEP: 1} if seed == 2 else {}),
                clients=40,
                replies=1000 + seed,
                violations=(),
                failures=("the pair was not back in NORMAL",) if seed == 2 else (),
                serverErrors=0,
                directory="/tmp",
                report="",
                replay="",
            )
            for seed in (1, 2)
        ]
        text = summary(results)
        self.assertIn("schedules run:     2 (seeds 1, 2)\n", text)
        self.assertIn("faults injected:   kill 4, clock-step 2 (total 6)\n", text)
        self.assertIn("faults skipped:    clock-step 1\n", text)
        self.assertIn("clients:           80 (40 per run)\n", text)
        self.assertIn("Replies checked:   2003\n", text)
        self.assertIn("violations:        0\n", text)
        self.assertIn("failures:          1 (seeds 2)\n", text)


class FaketimeFilesTests(SynchronousTestCase):
    """A server run under libfaketime leaves nothing in /dev/shm once reaped."""

    def test_removedWhenStopped(self) -> None:
        """
        Stopping (or killing) a server that ran under libfaketime removes
        the shared-memory segment and semaphore libfaketime made for its
        PID, and nothing else.
        """
        shm = Path(self.mktemp())
        shm.mkdir()
        self.patch(harness, "_SHM", shm)
        for pid in (4242, 4343):
            (shm / f"faketime_shm_{pid}").write_bytes(b"")
            (shm / f"sem.faketime_sem_{pid}").write_bytes(b"")

        class Exited:
            pid = 4242
            returncode = 0

            def poll(self) -> int:
                return 0

        for stop in (harness.ServerProcess.stop, harness.ServerProcess.kill):
            server = harness.ServerProcess(
                "primary",
                None,
                Path(self.mktemp()),
                "",
                "/lib/libfaketimeMT.so.1",  # type: ignore[arg-type]
            )
            server.popen = Exited()  # type: ignore[assignment]
            stop(server)
            self.assertEqual(
                sorted(p.name for p in shm.iterdir()),
                ["faketime_shm_4343", "sem.faketime_sem_4343"],
            )
            (shm / "faketime_shm_4242").write_bytes(b"")
            (shm / "sem.faketime_sem_4242").write_bytes(b"")
