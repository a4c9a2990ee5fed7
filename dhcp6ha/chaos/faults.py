# -*- test-case-name: tests.test_chaos_faults -*-
"""
The fault scheduler: a seed gives a list of timed faults, always the same
list for the same seed and parameters, printable, and sound: it never
schedules what DESIGN.md says no server can survive.

A L{Fault} starts C{at} seconds after the fault window opens and lasts
C{duration} seconds (0 for the instantaneous partner-down command).  Kinds:

  - L{KILL}: C{kill -9} of a server, started again after C{duration}.
  - L{LOSE_DATABASE}: C{kill -9}, its database deleted (lease store,
    update queue, failover state: one SQLite file), started again after
    C{duration}.
  - L{PARTITION}: the partner link cut in both directions, by setting the
    link down (C{mode} L{LINK_DOWN}: connects fail at once) or by dropping
    every packet silently (L{DROP}: connections time out).
  - L{ONE_WAY}: what the target server sends its partner is dropped; what
    the partner sends still arrives.
  - L{CLIENT_CUT}: the target server is cut off from the clients while it
    still talks to its partner (RFC 7031 section 4.7).
  - L{CLOCK_STEP}: the target server's clock is stepped by C{offset}
    seconds (within the pair's allowed skew) for C{duration}, then stepped
    back.
  - L{PARTNER_DOWN}: the operator's C{partner-down} command given to the
    target server while its partner is alive (or killed: the case the
    command exists for).

Faults overlap freely, except where the combination is an operator error
or a double failure that the design does not promise to survive (each rule
is in L{conflict}, with its reason):

  - one server's process faults do not overlap (a dead server cannot be
    killed again);
  - the two databases are never both lost within one recovery (C{guard}
    seconds after the restart: a pair that lost both disks has lost its
    leases);
  - no partner-down to a server from its database loss until C{guard}
    after its restart (it would serve from a database it has not
    recovered: DESIGN.md makes recovery come first), nor while it is
    itself down;
  - no partner-down within C{guard} of a partner-link partition (a partner
    that is alive and unreachable may still be serving: declaring it down
    is the operator error RFC 8156 section 8.4 warns about), nor to both
    servers within C{guard} of each other;
  - the same network element is not cut twice at once (the partner link,
    one direction of it, one server's client port), and one server's
    clock is stepped once at a time; two steps in force together stay
    within the allowed skew (C{2 * maxOffset < maxSkew}).

C{guard} defaults to twice the MCLT plus 5 s: the time a server needs to
recover (RECOVER, RECOVER-WAIT for MCLT, RECOVER-DONE) with some margin.

Everything ends by the end of the window; times are rounded to 0.1 s so
that the printed schedule is the schedule.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from attrs import frozen

from dhcp6ha.chaos.history import (
    FAULT_CLOCK_JUMP,
    FAULT_KILL,
    FAULT_LOSE_DATABASE,
    FAULT_PARTITION,
    FAULT_PARTNER_DOWN,
)

__all__ = [
    "CLIENT_CUT",
    "CLOCK_STEP",
    "DROP",
    "KILL",
    "KINDS",
    "LINK_DOWN",
    "LOSE_DATABASE",
    "ONE_WAY",
    "PARTITION",
    "PARTNER_DOWN",
    "SERVERS",
    "Fault",
    "Schedule",
    "ScheduleParameters",
    "conflict",
    "makeSchedule",
    "parseKinds",
    "totalCounts",
]

SERVERS = ("primary", "secondary")

KILL = "kill"
LOSE_DATABASE = "lose-database"
PARTITION = "partition"
ONE_WAY = "one-way-partition"
CLIENT_CUT = "client-cut"
CLOCK_STEP = "clock-step"
PARTNER_DOWN = "partner-down"

KINDS = (KILL, LOSE_DATABASE, PARTITION, ONE_WAY, CLIENT_CUT, CLOCK_STEP, PARTNER_DOWN)
"""Every kind, in the order reports list them."""

LINK_DOWN = "link-down"
"""L{PARTITION} mode: the partner link's veth set down."""
DROP = "drop"
"""L{PARTITION} mode: every packet on the partner link dropped silently."""

_HISTORY_KIND = {
    KILL: FAULT_KILL,
    LOSE_DATABASE: FAULT_LOSE_DATABASE,
    PARTITION: FAULT_PARTITION,
    ONE_WAY: FAULT_PARTITION,
    CLIENT_CUT: FAULT_PARTITION,
    CLOCK_STEP: FAULT_CLOCK_JUMP,
    PARTNER_DOWN: FAULT_PARTNER_DOWN,
}

#: How long each kind lasts: (shortest, longest) seconds.
_DURATIONS = {
    KILL: (1.0, 6.0),
    LOSE_DATABASE: (1.0, 4.0),
    PARTITION: (3.0, 12.0),
    ONE_WAY: (3.0, 12.0),
    CLIENT_CUT: (3.0, 12.0),
    CLOCK_STEP: (4.0, 15.0),
    PARTNER_DOWN: (0.0, 0.0),
}

_PROCESS = frozenset({KILL, LOSE_DATABASE})
_PARTITIONS = frozenset({PARTITION, ONE_WAY})


def _other(server: str) -> str:
    return SERVERS[1 - SERVERS.index(server)]


@frozen
class Fault:
    """
    One fault of a schedule.

    @ivar at: seconds after the fault window opens.
    @ivar kind: one of L{KINDS}.
    @ivar target: the server it is done to (C{"primary"}, C{"secondary"});
        for L{PARTITION}, C{"primary/secondary"}; for L{ONE_WAY}, the
        server whose packets are dropped.
    @ivar duration: seconds until it is undone (0: instantaneous).
    @ivar mode: L{PARTITION}: L{LINK_DOWN} or L{DROP}.
    @ivar offset: L{CLOCK_STEP}: the step, in whole seconds.
    """

    at: float
    kind: str
    target: str
    duration: float = 0.0
    mode: str = ""
    offset: int = 0

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def historyKind(self) -> str:
        """The kind as the history records it (L{dhcp6ha.chaos.history})."""
        return _HISTORY_KIND[self.kind]

    @property
    def historyTarget(self) -> str:
        """The target as the history records it."""
        if self.kind == ONE_WAY:
            return f"{self.target}->{_other(self.target)}"
        if self.kind == CLIENT_CUT:
            return f"clients/{self.target}"
        return self.target

    @property
    def detail(self) -> str:
        """What else the history records about it."""
        if self.kind == PARTITION:
            return self.mode
        if self.kind == ONE_WAY:
            return f"{self.target} to {_other(self.target)} dropped"
        if self.kind == CLIENT_CUT:
            return f"{self.target} cut off from the clients, still talking to its partner"
        if self.kind == CLOCK_STEP:
            return f"clock stepped by {self.offset:+d} s"
        if self.kind == LOSE_DATABASE:
            return "database deleted before the restart"
        return ""

    def servers(self) -> frozenset[str]:
        """The servers it touches."""
        if self.kind == PARTITION:
            return frozenset(SERVERS)
        return frozenset({self.target})

    def describe(self) -> str:
        """One line for the printed schedule."""
        d = f"{self.duration:.1f} s"
        if self.kind == KILL:
            what = f"kill -9 {self.target}, restart after {d}"
        elif self.kind == LOSE_DATABASE:
            what = f"kill -9 {self.target}, delete its database, restart after {d}"
        elif self.kind == PARTITION:
            what = f"partition the partner link ({self.mode}) for {d}"
        elif self.kind == ONE_WAY:
            what = f"drop {self.target} -> {_other(self.target)} on the partner link for {d}"
        elif self.kind == CLIENT_CUT:
            what = f"cut {self.target} off from the clients for {d}"
        elif self.kind == CLOCK_STEP:
            what = f"step {self.target}'s clock by {self.offset:+d} s for {d}"
        else:
            what = f"operator: partner-down on {self.target}"
        return f"t+{self.at:5.1f}s  {self.kind:<18} {what}"


@frozen
class ScheduleParameters:
    """
    What a schedule is made from (with the seed).

    @ivar window: faults start and end within C{[0, window]} seconds.
    @ivar faults: how many faults to draw: (fewest, most).
    @ivar kinds: the kinds drawn from.
    @ivar mclt: the pair's MCLT (for C{guard}).
    @ivar maxSkew: the clock skew the pair accepts.
    @ivar maxOffset: the largest clock step, seconds.
    @ivar guard: seconds a server needs to recover (default: twice the
        MCLT plus 5 s).
    """

    window: float = 40.0
    faults: tuple[int, int] = (3, 6)
    kinds: tuple[str, ...] = KINDS
    mclt: float = 10.0
    maxSkew: float = 5.0
    maxOffset: int = 2
    guard: float | None = None

    def __attrs_post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {unknown}: choose from {', '.join(KINDS)}")
        low, high = self.faults
        if not 0 <= low <= high:
            raise ValueError(f"fault count range {low}-{high} is empty")
        if self.window < max(_DURATIONS[k][0] for k in self.kinds) + 1:
            raise ValueError(f"a window of {self.window:g} s is too short for these faults")
        if not 1 <= self.maxOffset or not 2 * self.maxOffset < self.maxSkew:
            raise ValueError(
                f"clock steps of up to {self.maxOffset} s on both servers could exceed the"
                f" allowed skew of {self.maxSkew:g} s"
            )

    @property
    def recovery(self) -> float:
        """C{guard}, or its default."""
        return self.guard if self.guard is not None else 2 * self.mclt + 5.0

    def describe(self) -> list[tuple[str, str]]:
        """The parameters as (name, text) pairs, for the run's header."""
        return [
            ("window", f"{self.window:g}"),
            ("faults", f"{self.faults[0]}-{self.faults[1]}"),
            ("kinds", ",".join(self.kinds)),
            ("max-clock-step", str(self.maxOffset)),
            ("guard", f"{self.recovery:g}"),
        ]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _span(f: Fault) -> tuple[float, float]:
    # An instantaneous fault still occupies a moment.
    return (f.at, max(f.end, f.at + 0.1))


def conflict(a: Fault, b: Fault, guard: float) -> str | None:
    """
    Why faults C{a} and C{b} may not both be in one schedule, or C{None}
    if they may (symmetric).
    """
    for x, y in ((a, b), (b, a)):
        reason = _conflict(x, y, guard)
        if reason is not None:
            return reason
    return None


def _conflict(a: Fault, b: Fault, guard: float) -> str | None:
    sa, sb = _span(a), _span(b)
    if a.kind in _PROCESS and b.kind in _PROCESS and a.target == b.target:
        if _overlap((sa[0], sa[1] + 1.0), sb):
            return "a server's process faults do not overlap"
    if a.kind == LOSE_DATABASE and b.kind == LOSE_DATABASE and a.target != b.target:
        if _overlap((sa[0], sa[1] + guard), (sb[0], sb[1] + guard)):
            return "both databases lost within one recovery"
    if a.kind == LOSE_DATABASE and b.kind == PARTNER_DOWN and a.target == b.target:
        if _overlap((sa[0], sa[1] + guard), sb):
            return "partner-down on a server that has not recovered its lost database"
    if a.kind == KILL and b.kind == PARTNER_DOWN and a.target == b.target:
        if _overlap((sa[0], sa[1] + 5.0), sb):
            return "partner-down on a server that is down"
    if a.kind in _PARTITIONS and b.kind == PARTNER_DOWN:
        if _overlap((sa[0] - guard, sa[1] + guard), sb):
            return "partner-down while the partner may be alive and unreachable"
    if a.kind == PARTNER_DOWN and b.kind == PARTNER_DOWN:
        if _overlap((sa[0] - guard, sa[1] + guard), sb):
            return "partner-down on both servers within one recovery"
    if _overlap(sa, sb) and _sameElement(a, b):
        return "the same element faulted twice at once"
    if a.kind == CLOCK_STEP and b.kind == CLOCK_STEP and _overlap(sa, sb):
        if a.target == b.target:
            return "one server's clock stepped twice at once"
    return None


def _elements(f: Fault) -> frozenset[str]:
    """The network elements a fault cuts (L{Topology <dhcp6ha.chaos.topology.Topology>})."""
    if f.kind == PARTITION:
        return frozenset({"link"} if f.mode == LINK_DOWN else {f"drop:{s}" for s in SERVERS})
    if f.kind == ONE_WAY:
        return frozenset({f"drop:{f.target}"})
    if f.kind == CLIENT_CUT:
        return frozenset({f"port:{f.target}"})
    return frozenset()


def _sameElement(a: Fault, b: Fault) -> bool:
    return bool(_elements(a) & _elements(b))


@frozen
class Schedule:
    """
    The faults of one run, in order of their start.

    @ivar rejected: how many drawn faults were dropped because they
        conflicted with an earlier one (L{conflict}).
    """

    seed: int
    parameters: ScheduleParameters
    faults: tuple[Fault, ...]
    rejected: int = 0

    def counts(self) -> Counter[str]:
        """Faults by kind."""
        return Counter(f.kind for f in self.faults)

    def overlaps(self) -> int:
        """How many pairs of faults are in force at the same time."""
        n = 0
        for i, a in enumerate(self.faults):
            for b in self.faults[i + 1 :]:
                if _overlap(_span(a), _span(b)):
                    n += 1
        return n

    def describe(self) -> str:
        """The printable schedule (what a replay will do)."""
        lines = [
            f"schedule of seed {self.seed}: {len(self.faults)} faults in"
            f" {self.parameters.window:g} s, {self.overlaps()} overlapping pairs"
        ]
        lines += ["  " + f.describe() for f in self.faults]
        return "\n".join(lines)


def _draw(rng: random.Random, kind: str, window: float, maxOffset: int) -> Fault:
    low, high = _DURATIONS[kind]
    duration = round(rng.uniform(low, high), 1)
    at = round(rng.uniform(0.0, window - duration), 1)
    if kind == PARTITION:
        return Fault(at, kind, "primary/secondary", duration, rng.choice((LINK_DOWN, DROP)))
    target = rng.choice(SERVERS)
    if kind == CLOCK_STEP:
        offset = rng.choice([o for o in range(-maxOffset, maxOffset + 1) if o != 0])
        return Fault(at, kind, target, duration, offset=offset)
    return Fault(at, kind, target, duration)


def makeSchedule(seed: int, parameters: ScheduleParameters | None = None) -> Schedule:
    """
    The schedule of a seed: the same seed and parameters give the same
    schedule, on any machine (only C{random.Random} seeded with text).

    Each fault is drawn (kind, target, time, duration) and kept unless it
    conflicts with one kept before (L{conflict}); a draw that conflicts is
    retried up to 20 times, then given up.
    """
    parameters = parameters or ScheduleParameters()
    rng = random.Random(f"dhcp6ha-chaos-faults:{seed}")
    count = rng.randint(*parameters.faults)
    kept: list[Fault] = []
    rejected = 0
    for _ in range(count):
        for _attempt in range(20):
            kind = rng.choice(parameters.kinds)
            fault = _draw(rng, kind, parameters.window, parameters.maxOffset)
            if all(conflict(fault, other, parameters.recovery) is None for other in kept):
                kept.append(fault)
                break
            rejected += 1
    kept.sort(key=lambda f: (f.at, KINDS.index(f.kind), f.target))
    return Schedule(seed, parameters, tuple(kept), rejected)


def parseKinds(text: str) -> tuple[str, ...]:
    """
    A comma-separated list of kinds (C{"all"}: every kind; a kind prefixed
    with C{-} is taken out).

    @raise ValueError: naming an unknown kind.
    """
    chosen: list[str] = []
    removed: set[str] = set()
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        if word == "all":
            chosen += KINDS
        elif word.startswith("-") and word[1:] in KINDS:
            removed.add(word[1:])
        elif word in KINDS:
            chosen.append(word)
        else:
            raise ValueError(f"unknown fault kind {word!r}: choose from {', '.join(KINDS)}")
    if not chosen:
        chosen = list(KINDS)
    out = tuple(dict.fromkeys(k for k in chosen if k not in removed))
    if not out:
        raise ValueError("no fault kind left")
    return out


def totalCounts(schedules: Iterable[Schedule]) -> Counter[str]:
    """Faults by kind over several schedules."""
    total: Counter[str] = Counter()
    for schedule in schedules:
        total.update(schedule.counts())
    return total
