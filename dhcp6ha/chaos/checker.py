# -*- test-case-name: tests.test_chaos_checker -*-
"""
The invariants of DESIGN.md ("What never happens, whatever the fault"),
checked on a run's history (L{dhcp6ha.chaos.history}) once the schedule has
healed and both servers are back in NORMAL.

L{check} reads only what the clients saw (every transmission and every
Advertise/Reply, with times), the faults, the servers' observed states and
the two final database dumps.  It must never report a violation that did
not happen: where the history cannot tell, it does not report.  The rules
below say exactly what is checked and why each is sound.

Terms
=====

  - A I{holder} is one IA of one client: (client DUID, IA kind, IAID).  Two
    holders are "different clients" (DESIGN.md: "(DUID, IAID)").
  - A I{transaction} is every transmission of one message (same client,
    transaction id and type); its I{first send} time is C{lo}.  A server
    decides a transaction at some time C{s} with C{lo <= s <= r}, where
    C{r} is when the client received the Reply: the server cannot answer
    before the first transmission, and the Reply leaves only after the
    decision.
  - A I{grant} is a lease (address or prefix) with valid lifetime C{v > 0}
    and no error status in a Reply's IA.  The client's (nominal) lifetime
    runs from C{r} to C{r + v}.  A Release or Decline ends it at its first
    send time; a Reply with valid lifetime 0 for it ends it.

Certain holding intervals
-------------------------

The granting server's binding runs until C{s + v} on its clock, which may
be up to a round trip earlier than the client's C{r + v}.  Checks 1, 2 and
5 therefore use the part of the client's lifetime during which the server's
binding certainly ran, for each (holder, lease):

  - a grant opens (or extends) it: certainly held from C{r} until
    C{lo + v} (C{s + v >= lo + v});
  - a later grant of the same lease extends it: if it was sent before the
    previous certain end, the interval continues without a gap as long as
    both bounds allow (up to the new Reply's C{r}, at most C{lo' + v'}),
    and its end becomes C{lo' + v'} (the new expiry replaces the old one,
    even when shorter); otherwise a new interval starts at C{r'};
  - it is cut at the first send of: a Release or Decline listing the
    lease; a Request or a Solicit with Rapid Commit carrying the IA (a
    server may move the IA to another lease there, and the Reply may be
    lost); any transaction whose Reply gives the lease valid lifetime 0;
  - a Reply received after such a cut, to a transaction first sent before
    it (a late answer, e.g. to a retransmission, that crossed the Release),
    opens or extends nothing: the server may have decided it before it
    processed the cutting message.
    A Renew or Rebind does not cut it: answered or not, a Renew never
    legitimately takes a running lease away (that is invariant 2 itself).

Every interval so built lies inside the span during which the server that
granted the lease held it ACTIVE for that holder, unless the server broke
an invariant.

The five checks
===============

1. B{No lease granted to two different holders with overlapping
   lifetimes.}  Two certain intervals of one lease (address and prefix
   length) of different holders overlap (C{a.start < b.end} and
   C{b.start < a.end}): a violation.  Back-to-back intervals (one ends
   where or before the other starts) are fine.  Sound: both servers' records
   had the lease ACTIVE for both holders at a common instant.

2. B{Lease stability.}  For every Reply (not carrying a top-level
   UnspecFail or UseMulticast status, which mean "not processed") to a
   Renew or Rebind: every lease the client listed in an IA that it held
   with a certain interval still running at the Reply's receive time must
   come back in that IA with valid lifetime > 0 and no error status.
   Anything else (a missing IA, NoBinding, lifetime 0, another lease) is a
   violation.  Sound: the server held the binding then, so the renewal was
   answered while the lifetime ran by the server's own clock.

3. B{Lifetimes (MCLT).}  The acked partner lifetime is invisible to clients
   and the final dumps do not say what it was when a Reply was sent, so
   three sound checks stand in for the rule:

   a. No valid lifetime in any Advertise or Reply exceeds
      C{max_valid_lifetime} (the configuration's longest valid lifetime,
      when given): the engine never gives more than configured, in any
      state.  No preferred lifetime exceeds its valid lifetime (RFC 8415
      section 21.6).
   b. I{Pristine grants}: a holder's first transaction able to create a
      binding (Request, Renew, Rebind, or Solicit with Rapid Commit) that
      was transmitted once before its first Reply arrived, answered by a
      server certainly not in PARTNER-DOWN between the first send and the
      Reply: every valid lifetime that Reply grants the holder is at most
      the MCLT.  Sound: the server processed exactly one message of this
      holder before answering, so no binding of this holder existed there
      (the databases were fresh at the start of the run: C{fresh_databases})
      and no acked partner lifetime could apply to it.  DESIGN.md: "A new
      lease therefore first gets at most MCLT" (the partner lifetime acked
      belongs to a binding, i.e. to one client and one lease;
      L{dhcp6ha.failover.policy}).  Later grants are not checked: a Reply
      the client never saw may have started a binding whose partner
      lifetime was acked.
   c. The final dumps' C{partner_lifetime_acked} is B{not} used: after the
      schedule has healed every update is acked, so the acked value then
      is the partner lifetime proposed after the last grant (always beyond
      that grant's expiry), not the one in force when the Reply was sent;
      it is replaced by each ack, reset by a lost database and not
      attributable to the granting server.  Any bound derived from it
      would either never fail or fail on correct runs.

   "Certainly not in PARTNER-DOWN": between two consecutive observations
   of that server that were both in another state, with no partner-down
   command given to it in between and none pending (a command is pending
   from when it was given until the server has been seen in PARTNER-DOWN
   and then in another state).  This assumes the servers enter
   PARTNER-DOWN only by the operator's command (the harness records it as
   a L{FAULT_PARTNER_DOWN} fault): with C{auto_partner_down}, 3b is not
   checked.  A server never observed is never certainly outside
   PARTNER-DOWN.

4. B{The two databases agree.}  Per lease key, taking each server's last
   dump: if both are ACTIVE they name the same (DUID, IAID, lease type);
   if only one is ACTIVE (the other not ACTIVE, or absent, which means
   FREE) that is a violation, unless the ACTIVE one had already run out at
   its dump time (expiry reclamation runs on a timer: a few seconds of lag
   is not a disagreement) or was written within C{settle} seconds before
   the dump (an update still in flight).  Expiry times are not compared:
   the partner's record may carry the partner lifetime instead of the
   client's expiry (RFC 8156 section 7.5).  Records neither ACTIVE may
   differ in everything (EXPIRED, RELEASED, FREE, ABANDONED are all "not
   ACTIVE").

5. B{A lease in a Reply is in its sender's database.}  For each (holder,
   lease) whose certain interval was never cut, the Replies of the latest
   transaction that granted it: when the grant certainly runs past the
   sender's dump time (C{lo + v > dump time + clock_slack}), the sender's
   dump must hold the lease ACTIVE for that holder.  Not checked when the
   sender lost its database (L{FAULT_LOSE_DATABASE}) after the grant may
   have been made (what was not yet sent to the partner is lost with the
   disk, by design), or when there is no dump of the sender.  Earlier
   grants are not checked: a later renewal by either server legitimately
   replaces their expiry.

Times: client times and dump times are the harness's clock; a server's
clock only enters through lifetimes (durations).  C{clock_slack} (the
largest clock jump injected) loosens check 5 only; an overlap (1) is an
overlap in the clients' view whatever the servers' clocks did.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv6Address

import attrs
from attrs import frozen

from dhcp6ha.chaos.history import (
    FAULT_LOSE_DATABASE,
    FAULT_PARTNER_DOWN,
    BindingRecord,
    ClientReceived,
    ClientSent,
    DatabaseDump,
    Event,
    FaultEvent,
    IAEntry,
    LeaseEntry,
    Note,
    RunHeader,
    ServerStateObserved,
    eventTime,
)
from dhcp6ha.message import duidToText

__all__ = [
    "Invariant",
    "Violation",
    "check",
    "checkHistory",
    "describeEvent",
    "formatReport",
]

_INF = float("inf")

#: Top-level status codes meaning the server did not process the message
#: (RFC 8415 section 18.2.10): UnspecFail, UseMulticast.
_NOT_PROCESSED = frozenset({1, 5})

#: Status code NoBinding (RFC 8415 section 21.13).
_NO_BINDING = 3

_BINDING_TYPES = frozenset({"REQUEST", "RENEW", "REBIND"})
_CUTTING_TYPES = frozenset({"REQUEST"})
_LEAVING_TYPES = frozenset({"RELEASE", "DECLINE"})
_RENEWING_TYPES = frozenset({"RENEW", "REBIND"})


class Invariant(enum.IntEnum):
    """The five checks (DESIGN.md "What never happens" 1-4, issue 5)."""

    OVERLAP = 1
    STABILITY = 2
    LIFETIME = 3
    AGREEMENT = 4
    DURABILITY = 5


_TITLES = {
    Invariant.OVERLAP: "a lease granted to two different clients with overlapping lifetimes",
    Invariant.STABILITY: "a renew or rebind answered without the lease the client held",
    Invariant.LIFETIME: "a lifetime beyond what the MCLT rule or the configuration allows",
    Invariant.AGREEMENT: "the two databases disagree",
    Invariant.DURABILITY: "a lease in a Reply is not in its sender's database",
}


@frozen
class Violation:
    """
    One broken invariant.

    @ivar kind: which check (1-5).
    @ivar description: what happened, for a human.
    @ivar events: the events involved (for database records: a
        L{DatabaseDump} holding only the records concerned).
    """

    kind: Invariant
    description: str
    events: tuple[Event, ...] = ()


# --- the history, taken apart -------------------------------------------------

Holder = tuple[bytes, str, int]
Key = tuple[IPv6Address, int]


@attrs.define
class _Transaction:
    """
    @ivar seq: the position of the first send in the history (sorted by
        time, stably: events of equal time keep their recorded order).
    @ivar receivedSeq: the positions of C{received}.
    """

    sends: list[ClientSent]
    seq: int
    received: list[ClientReceived] = attrs.field(factory=list)
    receivedSeq: list[int] = attrs.field(factory=list)

    @property
    def first(self) -> ClientSent:
        return self.sends[0]

    @property
    def lo(self) -> float:
        return self.sends[0].time

    @property
    def msgType(self) -> str:
        return self.sends[0].msg_type

    @property
    def bindingCapable(self) -> bool:
        first = self.sends[0]
        return first.msg_type in _BINDING_TYPES or (
            first.msg_type == "SOLICIT" and first.rapid_commit
        )

    @property
    def cutting(self) -> bool:
        first = self.sends[0]
        return first.msg_type in _CUTTING_TYPES or (
            first.msg_type == "SOLICIT" and first.rapid_commit
        )

    def replies(self) -> list[ClientReceived]:
        return [m for _, m in self.numberedReplies()]

    def numberedReplies(self) -> list[tuple[int, ClientReceived]]:
        """The Replies that processed the message, with their positions."""
        return [
            (n, m)
            for n, m in zip(self.receivedSeq, self.received, strict=True)
            if m.msg_type == "REPLY" and m.status not in _NOT_PROCESSED
        ]


def _transactions(events: Iterable[Event]) -> list[_Transaction]:
    """
    Group transmissions into transactions and attach what was received.

    A received message joins the latest transaction of that client with
    that transaction id whose first send is not later; one with none is
    ignored (it cannot be placed in time).  Events of equal time keep the
    order in which they were recorded (a client records what it received
    before what it sends in answer).
    """
    byKey: dict[tuple[bytes, int, str], _Transaction] = {}
    byXid: dict[tuple[bytes, int], list[_Transaction]] = defaultdict(list)
    out: list[_Transaction] = []
    ordered = sorted(
        (e for e in events if isinstance(e, ClientSent | ClientReceived)), key=eventTime
    )
    for seq, event in enumerate(ordered):
        if isinstance(event, ClientSent):
            key = (event.client, event.xid, event.msg_type)
            tx = byKey.get(key)
            if tx is None or tx.received:
                tx = _Transaction([event], seq)
                byKey[key] = tx
                byXid[(event.client, event.xid)].append(tx)
                out.append(tx)
            else:
                tx.sends.append(event)
        else:
            candidates = [
                tx for tx in byXid.get((event.client, event.xid), []) if tx.lo <= event.time
            ]
            if candidates:
                candidates[-1].received.append(event)
                candidates[-1].receivedSeq.append(seq)
    return out


def _ok(status: int | None) -> bool:
    return status is None or status == 0


def _grantsIn(ia: IAEntry) -> list[LeaseEntry]:
    """The leases an IA of a Reply grants (valid > 0, no error status)."""
    if not _ok(ia.status):
        return []
    return [e for e in ia.leases if e.valid > 0 and _ok(e.status)]


def _findIA(ias: Iterable[IAEntry], kind: str, iaid: int) -> IAEntry | None:
    for ia in ias:
        if ia.kind == kind and ia.iaid == iaid:
            return ia
    return None


def _describeKey(key: Key) -> str:
    address, length = key
    return str(address) if length == 128 else f"{address}/{length}"


def _describeHolder(holder: Holder) -> str:
    duid, kind, iaid = holder
    return f"client {duidToText(duid)} IA_{kind.upper()} {iaid}"


@attrs.define
class _Segment:
    holder: Holder
    key: Key
    start: float
    end: float
    events: tuple[Event, ...]


@attrs.define
class _Holding:
    start: float
    end: float
    events: list[Event]
    lastTx: _Transaction
    lastGrants: list[tuple[ClientReceived, float, int]]


class _Sweep:
    """
    Build the certain holding intervals (checks 1 and 5) and check lease
    stability (check 2) on the way.
    """

    def __init__(self) -> None:
        self.open: dict[tuple[Holder, Key], _Holding] = {}
        self.segments: list[_Segment] = []
        self.violations: list[Violation] = []
        # When each (holder, lease) was last cut by a Release or Decline,
        # and each holder by a Request (or rapid-commit Solicit).
        self.cuts: dict[tuple[Holder, Key], float] = {}
        self.holderCuts: dict[Holder, float] = {}

    def run(self, transactions: Sequence[_Transaction]) -> None:
        # Steps: (time, position in the history, transaction, reply or
        # None for the transaction's start), in time and then history order.
        steps: list[tuple[float, int, _Transaction, ClientReceived | None]] = []
        for tx in transactions:
            steps.append((tx.lo, tx.seq, tx, None))
            for seq, answer in tx.numberedReplies():
                steps.append((answer.time, seq, tx, answer))
        steps.sort(key=lambda step: (step[0], step[1]))
        for _, _, tx, received in steps:
            if received is None:
                self._start(tx)
            else:
                self._reply(tx, received)
        # What is still open stays in self.open (check 5 reads it).
        for (holder, key), holding in self.open.items():
            self._emit(holder, key, holding, holding.end)

    def _holders(self, tx: _Transaction) -> list[tuple[Holder, IAEntry]]:
        client = tx.first.client
        return [((client, ia.kind, ia.iaid), ia) for ia in tx.first.ias]

    def _emit(self, holder: Holder, key: Key, holding: _Holding, end: float) -> None:
        end = min(end, holding.end)
        if end > holding.start:
            self.segments.append(_Segment(holder, key, holding.start, end, tuple(holding.events)))

    def _close(self, holder: Holder, key: Key, at: float) -> None:
        holding = self.open.pop((holder, key), None)
        if holding is not None:
            self._emit(holder, key, holding, at)

    def _start(self, tx: _Transaction) -> None:
        if tx.msgType in _LEAVING_TYPES:
            for holder, ia in self._holders(tx):
                for entry in ia.leases:
                    self.cuts[(holder, entry.key)] = tx.lo
                    self._close(holder, entry.key, tx.lo)
        elif tx.cutting:
            for holder, _ in self._holders(tx):
                self.holderCuts[holder] = tx.lo
                for openHolder, key in [k for k in self.open if k[0] == holder]:
                    self._close(openHolder, key, tx.lo)

    def _reply(self, tx: _Transaction, reply: ClientReceived) -> None:
        if tx.msgType in _RENEWING_TYPES:
            self._checkStability(tx, reply)
        for holder, _ in self._holders(tx):
            ia = _findIA(reply.ias, holder[1], holder[2])
            if ia is None:
                continue
            granted = {entry.key: entry for entry in _grantsIn(ia)}
            for entry in ia.leases:
                if entry.valid == 0 and entry.key not in granted:
                    self._close(holder, entry.key, tx.lo)
            for key, entry in granted.items():
                self._grant(holder, key, tx, reply, entry.valid)

    def _grant(
        self, holder: Holder, key: Key, tx: _Transaction, reply: ClientReceived, valid: int
    ) -> None:
        lo, r = tx.lo, reply.time
        if max(self.cuts.get((holder, key), -_INF), self.holderCuts.get(holder, -_INF)) > lo:
            # A late answer that crossed a Release, Decline or Request.
            return
        end = lo + valid
        holding = self.open.get((holder, key))
        if holding is not None:
            if holding.lastTx is tx:
                holding.lastGrants.append((reply, lo, valid))
            else:
                holding.lastTx = tx
                holding.lastGrants = [(reply, lo, valid)]
            if lo < holding.end:
                bridge = min(holding.end, max(lo, min(r, end)))
                if bridge >= r:
                    holding.end = end
                    holding.events.append(reply)
                    return
                self._emit(holder, key, holding, bridge)
            else:
                self._emit(holder, key, holding, holding.end)
            holding.start = r
            holding.end = end
            holding.events = [reply]
            return
        self.open[(holder, key)] = _Holding(r, end, [reply], tx, [(reply, lo, valid)])

    def _checkStability(self, tx: _Transaction, reply: ClientReceived) -> None:
        for holder, ia in self._holders(tx):
            answer = _findIA(reply.ias, holder[1], holder[2])
            granted = {e.key for e in _grantsIn(answer)} if answer is not None else set()
            for entry in ia.leases:
                holding = self.open.get((holder, entry.key))
                if holding is None or not reply.time < holding.end:
                    continue
                if entry.key in granted:
                    continue
                if answer is None:
                    what = "the Reply has no such IA"
                elif not _ok(answer.status):
                    what = f"the IA has status {answer.status}"
                else:
                    got = ", ".join(
                        f"{_describeKey(e.key)} valid {e.valid}"
                        + ("" if _ok(e.status) else f" status {e.status}")
                        for e in answer.leases
                    )
                    what = f"the IA holds {got or 'no lease'}"
                self.violations.append(
                    Violation(
                        Invariant.STABILITY,
                        f"{_describeHolder(holder)} held {_describeKey(entry.key)} until at "
                        f"least {holding.end:.3f} and sent {tx.msgType} (xid {tx.first.xid:#x}); "
                        f"the Reply from {_serverText(reply.server)} at {reply.time:.3f}: "
                        f"{what}",
                        tuple(holding.events) + tuple(tx.sends) + (reply,),
                    )
                )


def _serverText(duid: bytes | None) -> str:
    return "an unnamed server" if duid is None else f"server {duidToText(duid)}"


# --- check 1 -------------------------------------------------------------------


def _overlaps(segments: Sequence[_Segment]) -> list[Violation]:
    byKey: dict[Key, list[_Segment]] = defaultdict(list)
    for segment in segments:
        byKey[segment.key].append(segment)
    out: list[Violation] = []
    for key, found in byKey.items():
        found.sort(key=lambda s: (s.start, s.end))
        reported: set[frozenset[Holder]] = set()
        for i, a in enumerate(found):
            for b in found[i + 1 :]:
                if b.start >= a.end:
                    break
                pair = frozenset({a.holder, b.holder})
                if a.holder == b.holder or pair in reported:
                    continue
                reported.add(pair)
                out.append(
                    Violation(
                        Invariant.OVERLAP,
                        f"{_describeKey(key)} held by {_describeHolder(a.holder)} from "
                        f"{a.start:.3f} to at least {a.end:.3f} and by "
                        f"{_describeHolder(b.holder)} from {b.start:.3f} to at least "
                        f"{b.end:.3f}",
                        a.events + b.events,
                    )
                )
    return out


# --- check 3 -------------------------------------------------------------------


def _isPartnerDown(state: str) -> bool:
    return state.strip().lower().replace("_", "-") == "partner-down"


def _notPartnerDown(
    observations: Sequence[ServerStateObserved], commands: Sequence[float]
) -> list[tuple[float, float]]:
    """
    The intervals during which a server was certainly not in PARTNER-DOWN
    (see the module docstring), merged.
    """
    obs = sorted(observations, key=lambda o: o.time)
    pending: list[tuple[float, float]] = []
    for t in commands:
        seenDown = False
        until = _INF
        for o in obs:
            if o.time < t:
                continue
            if _isPartnerDown(o.state):
                seenDown = True
            elif seenDown:
                until = o.time
                break
        pending.append((t, until))
    intervals: list[tuple[float, float]] = []
    for a, b in zip(obs, obs[1:], strict=False):
        if _isPartnerDown(a.state) or _isPartnerDown(b.state):
            continue
        lo, hi = a.time, b.time
        if any(lo < end and start <= hi for start, end in pending):
            continue
        if intervals and intervals[-1][1] >= lo:
            intervals[-1] = (intervals[-1][0], max(intervals[-1][1], hi))
        else:
            intervals.append((lo, hi))
    return intervals


def _lifetimes(
    transactions: Sequence[_Transaction],
    events: Sequence[Event],
    header: RunHeader | None,
    mclt: float | None,
    maxValidLifetime: int | None,
    freshDatabases: bool,
    autoPartnerDown: bool,
) -> list[Violation]:
    out: list[Violation] = []
    # 3a: every lifetime sent.
    for event in events:
        if not isinstance(event, ClientReceived) or event.msg_type not in ("REPLY", "ADVERTISE"):
            continue
        for ia in event.ias:
            for entry in ia.leases:
                if maxValidLifetime is not None and entry.valid > maxValidLifetime:
                    out.append(
                        Violation(
                            Invariant.LIFETIME,
                            f"{event.msg_type} from {_serverText(event.server)} gave "
                            f"{_describeKey(entry.key)} a valid lifetime of {entry.valid} s, "
                            f"more than the configured {maxValidLifetime} s",
                            (event,),
                        )
                    )
                if entry.preferred > entry.valid:
                    out.append(
                        Violation(
                            Invariant.LIFETIME,
                            f"{event.msg_type} from {_serverText(event.server)} gave "
                            f"{_describeKey(entry.key)} a preferred lifetime of "
                            f"{entry.preferred} s, more than its valid lifetime {entry.valid} s",
                            (event,),
                        )
                    )
    # 3b: pristine grants.
    if mclt is None or not freshDatabases or autoPartnerDown:
        return out
    states: dict[bytes, list[ServerStateObserved]] = defaultdict(list)
    for event in events:
        if isinstance(event, ServerStateObserved):
            states[event.server].append(event)
    commands: dict[bytes | None, list[float]] = defaultdict(list)
    for event in events:
        if isinstance(event, FaultEvent) and event.kind == FAULT_PARTNER_DOWN:
            commands[_targetDuid(event.target, header)].append(event.start)
    calm = {
        server: _notPartnerDown(obs, commands.get(server, []) + commands.get(None, []))
        for server, obs in states.items()
    }
    seen: set[Holder] = set()
    for tx in sorted(transactions, key=lambda t: t.lo):
        if not tx.bindingCapable:
            continue
        holders = [(tx.first.client, ia.kind, ia.iaid) for ia in tx.first.ias]
        fresh = [h for h in holders if h not in seen]
        seen.update(holders)
        if not fresh:
            continue
        replies = tx.replies()
        if not replies:
            continue
        reply = replies[0]
        if sum(1 for s in tx.sends if s.time <= reply.time) != 1 or reply.server is None:
            continue
        if not any(a <= tx.lo and reply.time <= b for a, b in calm.get(reply.server, [])):
            continue
        for holder in fresh:
            answer = _findIA(reply.ias, holder[1], holder[2])
            if answer is None:
                continue
            for entry in _grantsIn(answer):
                if entry.valid > mclt:
                    out.append(
                        Violation(
                            Invariant.LIFETIME,
                            f"{_describeHolder(holder)}'s first binding exchange "
                            f"({tx.msgType} xid {tx.first.xid:#x}, sent once) got "
                            f"{_describeKey(entry.key)} for {entry.valid} s from "
                            f"{_serverText(reply.server)}, not in PARTNER-DOWN: more than "
                            f"the MCLT of {mclt:g} s",
                            (*tx.sends, reply),
                        )
                    )
    return out


def _targetDuid(target: str, header: RunHeader | None) -> bytes | None:
    """The DUID of a fault's target server; C{None}: unknown (any server)."""
    if header is not None:
        server = header.serverNamed(target)
        if server is not None:
            return server.duid
    try:
        return bytes.fromhex(target)
    except ValueError:
        return None


# --- check 4 -------------------------------------------------------------------


def _lastDumps(dumps: Iterable[DatabaseDump]) -> dict[bytes, DatabaseDump]:
    last: dict[bytes, DatabaseDump] = {}
    for dump in sorted(dumps, key=lambda d: d.time):
        last[dump.server] = dump
    return last


def _active(record: BindingRecord | None) -> bool:
    return record is not None and record.state.strip().lower() == "active"


def _agreement(dumps: Mapping[bytes, DatabaseDump], settle: float) -> list[Violation]:
    out: list[Violation] = []
    servers = sorted(dumps)
    for i, a in enumerate(servers):
        for b in servers[i + 1 :]:
            out += _agree(dumps[a], dumps[b], settle)
    return out


def _agree(a: DatabaseDump, b: DatabaseDump, settle: float) -> list[Violation]:
    out: list[Violation] = []
    ra = {record.key: record for record in a.bindings}
    rb = {record.key: record for record in b.bindings}
    for key in sorted(set(ra) | set(rb)):
        x, y = ra.get(key), rb.get(key)
        involved = tuple(
            DatabaseDump(dump.time, dump.server, (record,), dump.name)
            for dump, record in ((a, x), (b, y))
            if record is not None
        )
        if _active(x) and _active(y):
            assert x is not None and y is not None
            if (x.duid, x.iaid, x.lease_type) != (y.duid, y.iaid, y.lease_type):
                out.append(
                    Violation(
                        Invariant.AGREEMENT,
                        f"{_describeKey(key)} is ACTIVE for client {duidToText(x.duid)} "
                        f"IA_{x.lease_type.upper()} {x.iaid} on {_dumpName(a)} and for client "
                        f"{duidToText(y.duid)} IA_{y.lease_type.upper()} {y.iaid} on "
                        f"{_dumpName(b)}",
                        involved,
                    )
                )
        elif _active(x) or _active(y):
            dump, record, other, otherRecord = (a, x, b, y) if _active(x) else (b, y, a, x)
            assert record is not None
            if record.expires <= dump.time or record.cltt >= dump.time - settle:
                continue
            there = "has no record" if otherRecord is None else f"has it {otherRecord.state}"
            out.append(
                Violation(
                    Invariant.AGREEMENT,
                    f"{_describeKey(key)} is ACTIVE for client {duidToText(record.duid)} "
                    f"IA_{record.lease_type.upper()} {record.iaid} until {record.expires:.3f} "
                    f"on {_dumpName(dump)}; {_dumpName(other)} {there}",
                    involved,
                )
            )
    return out


def _dumpName(dump: DatabaseDump) -> str:
    return dump.name or f"server {duidToText(dump.server)}"


# --- check 5 -------------------------------------------------------------------


def _durability(
    sweep: _Sweep,
    dumps: Mapping[bytes, DatabaseDump],
    events: Sequence[Event],
    header: RunHeader | None,
    clockSlack: float,
) -> list[Violation]:
    losses: dict[bytes | None, list[float]] = defaultdict(list)
    for event in events:
        if isinstance(event, FaultEvent) and event.kind == FAULT_LOSE_DATABASE:
            losses[_targetDuid(event.target, header)].append(
                _INF if event.end is None else event.end
            )
    out: list[Violation] = []
    for (holder, key), holding in sweep.open.items():
        for reply, lo, valid in holding.lastGrants:
            server = reply.server
            if server is None:
                continue
            dump = dumps.get(server)
            if dump is None or not lo + valid > dump.time + clockSlack:
                continue
            if any(end >= lo for end in losses.get(server, []) + losses.get(None, [])):
                continue
            record = next((r for r in dump.bindings if r.key == key), None)
            if (
                record is not None
                and _active(record)
                and (record.duid, record.lease_type, record.iaid) == holder
            ):
                continue
            if record is None:
                there = "has no record of it"
            else:
                there = (
                    f"has it {record.state} for client {duidToText(record.duid)} "
                    f"IA_{record.lease_type.upper()} {record.iaid}"
                )
            involved: tuple[Event, ...] = (reply,)
            if record is not None:
                involved += (DatabaseDump(dump.time, dump.server, (record,), dump.name),)
            out.append(
                Violation(
                    Invariant.DURABILITY,
                    f"{_describeHolder(holder)} got {_describeKey(key)} for {valid} s at "
                    f"{reply.time:.3f} from {_serverText(server)}, running past its dump at "
                    f"{dump.time:.3f}; the dump {there}",
                    involved,
                )
            )
    return out


# --- entry points --------------------------------------------------------------


def check(
    history: Sequence[Event],
    dumps: Sequence[DatabaseDump],
    mclt: float | None,
    *,
    maxValidLifetime: int | None = None,
    freshDatabases: bool = True,
    autoPartnerDown: bool = False,
    settle: float = 0.0,
    clockSlack: float = 0.0,
) -> list[Violation]:
    """
    Check the five invariants (see the module docstring).

    @param history: the run's events (the header, if there, names the
        servers that fault targets name; dumps in it are ignored: pass them
        as C{dumps}).
    @param dumps: the servers' database dumps after the run (the last one
        of each server counts).
    @param mclt: the MCLT, or C{None} (no failover: check 3b is skipped).
    @param maxValidLifetime: the configuration's longest valid lifetime, if
        known (check 3a).
    @param freshDatabases: both databases were empty at the start (needed
        by check 3b).
    @param autoPartnerDown: servers may enter PARTNER-DOWN by themselves
        (check 3b is then skipped).
    @param settle: check 4 tolerates a disagreement on a binding written
        this many seconds or less before its dump.
    @param clockSlack: the largest server clock jump injected (check 5).
    @return: the violations, by check, then in time order.
    """
    header = next((e for e in history if isinstance(e, RunHeader)), None)
    events = [e for e in history if not isinstance(e, DatabaseDump | Note)]
    transactions = _transactions(events)
    sweep = _Sweep()
    sweep.run(transactions)
    last = _lastDumps(dumps)
    violations: list[Violation] = []
    violations += _overlaps(sweep.segments)
    violations += sweep.violations
    violations += _lifetimes(
        transactions, events, header, mclt, maxValidLifetime, freshDatabases, autoPartnerDown
    )
    violations += _agreement(last, settle)
    violations += _durability(sweep, last, events, header, clockSlack)
    violations.sort(key=lambda v: (v.kind, min((eventTime(e) for e in v.events), default=0.0)))
    return violations


def checkHistory(
    history: Sequence[Event], *, settle: float = 0.0, clockSlack: float = 0.0
) -> list[Violation]:
    """
    L{check} a complete history: its L{RunHeader} gives the MCLT, the
    longest valid lifetime and the other flags, and its L{DatabaseDump}
    events are the dumps.
    """
    header = next((e for e in history if isinstance(e, RunHeader)), None)
    dumps = [e for e in history if isinstance(e, DatabaseDump)]
    return check(
        history,
        dumps,
        header.mclt if header is not None else None,
        maxValidLifetime=header.max_valid_lifetime if header is not None else None,
        freshDatabases=header.fresh_databases if header is not None else False,
        autoPartnerDown=header.auto_partner_down if header is not None else True,
        settle=settle,
        clockSlack=clockSlack,
    )


# --- the report ----------------------------------------------------------------


def _names(header: RunHeader | None) -> dict[bytes, str]:
    return {} if header is None else {server.duid: server.name for server in header.servers}


def _server(duid: bytes | None, names: Mapping[bytes, str]) -> str:
    if duid is None:
        return "-"
    return names.get(duid) or duidToText(duid)


def _ias(ias: Iterable[IAEntry]) -> str:
    parts = []
    for ia in ias:
        text = f"IA_{ia.kind.upper()} {ia.iaid}"
        if ia.t1 or ia.t2:
            text += f" T1 {ia.t1} T2 {ia.t2}"
        if ia.status is not None:
            text += f" status {ia.status}"
        leases = []
        for entry in ia.leases:
            lease = _describeKey(entry.key)
            if entry.valid or entry.preferred:
                lease += f" {entry.preferred}/{entry.valid}s"
            elif ia.leases:
                lease += " 0/0s"
            if entry.status is not None:
                lease += f" status {entry.status}"
            leases.append(lease)
        if leases:
            text += " [" + ", ".join(leases) + "]"
        parts.append(text)
    return "; ".join(parts) or "no IA"


def describeEvent(
    event: Event, origin: float = 0.0, names: Mapping[bytes, str] | None = None
) -> str:
    """
    One line (a dump: one line per binding after the first) describing an
    event, times relative to C{origin}, servers by name when C{names} has
    them.
    """
    names = names or {}

    def at(t: float) -> str:
        return f"t{t - origin:+.3f}"

    if isinstance(event, RunHeader):
        return f"{at(event.started)} run with seed {event.seed}"
    if isinstance(event, ClientSent):
        to = f" to {_server(event.server, names)}" if event.server is not None else ""
        rapid = " rapid-commit" if event.rapid_commit else ""
        return (
            f"{at(event.time)} client {duidToText(event.client)} sent {event.msg_type}"
            f" xid {event.xid:#08x} #{event.attempt}{to}{rapid}: {_ias(event.ias)}"
        )
    if isinstance(event, ClientReceived):
        status = f" status {event.status}" if event.status is not None else ""
        late = "" if event.accepted else " (not acted on)"
        return (
            f"{at(event.time)} client {duidToText(event.client)} received {event.msg_type}"
            f" xid {event.xid:#08x} from {_server(event.server, names)}{status}{late}:"
            f" {_ias(event.ias)}"
        )
    if isinstance(event, FaultEvent):
        end = "" if event.end is None else f" until {at(event.end)}"
        detail = f" ({event.detail})" if event.detail else ""
        return f"{at(event.start)}{end} fault {event.kind} {event.target}{detail}"
    if isinstance(event, ServerStateObserved):
        return f"{at(event.time)} {_server(event.server, names)} is {event.state}"
    if isinstance(event, DatabaseDump):
        name = event.name or _server(event.server, names)
        lines = [f"{at(event.time)} dump of {name}: {len(event.bindings)} bindings"]
        for record in event.bindings[:50]:
            acked = (
                ""
                if record.partner_lifetime_acked is None
                else f" acked {at(record.partner_lifetime_acked)}"
            )
            lines.append(
                f"    {_describeKey(record.key)} {record.state} client "
                f"{duidToText(record.duid) or '-'} IA_{record.lease_type.upper()} {record.iaid}"
                f" cltt {at(record.cltt)} expires {at(record.expires)}{acked}"
            )
        if len(event.bindings) > 50:
            lines.append(f"    ... {len(event.bindings) - 50} more")
        return "\n".join(lines)
    return f"{at(event.time)} note: {event.text}"


def formatReport(
    history: Sequence[Event], violations: Sequence[Violation], *, maxClients: int = 10
) -> str:
    """
    The report of a checked run: its seed and how to replay it, the fault
    schedule, each violation with the events involved, then the whole
    history of the clients involved (at most C{maxClients} of them) with
    the faults and server states interleaved.
    """
    header = next((e for e in history if isinstance(e, RunHeader)), None)
    names = _names(header)
    if header is not None:
        origin = header.started
    else:
        origin = min((eventTime(e) for e in history), default=0.0)
    lines: list[str] = []
    if header is not None:
        lines.append(f"chaos run, seed {header.seed}")
        if header.command:
            lines.append("replay: " + " ".join(header.command))
        for key, value in header.parameters:
            lines.append(f"  {key} = {value}")
        if header.mclt is not None:
            lines.append(f"  mclt = {header.mclt:g}")
        for server in header.servers:
            address = f" at {server.address}" if server.address else ""
            lines.append(f"  server {server.name}: DUID {duidToText(server.duid)}{address}")
    else:
        lines.append("chaos run (no header: seed unknown)")
    faults = [e for e in history if isinstance(e, FaultEvent)]
    lines.append(f"faults ({len(faults)}):")
    lines += ["  " + describeEvent(f, origin, names) for f in sorted(faults, key=eventTime)]
    if not violations:
        lines.append("no violations")
        return "\n".join(lines) + "\n"
    lines.append(f"{len(violations)} violation(s):")
    clients: list[bytes] = []
    for n, violation in enumerate(violations, 1):
        lines.append(
            f"--- violation {n}: invariant {int(violation.kind)} ({_TITLES[violation.kind]})"
        )
        lines.append(violation.description)
        for event in violation.events:
            lines.append("  " + describeEvent(event, origin, names))
            if isinstance(event, ClientSent | ClientReceived) and event.client not in clients:
                clients.append(event.client)
    shown = set(clients[:maxClients])
    if shown:
        lines.append(
            f"--- history of the {len(shown)} client(s) involved, with faults and server states"
        )
        for event in sorted(history, key=eventTime):
            if (
                isinstance(event, ClientSent | ClientReceived) and event.client in shown
            ) or isinstance(event, FaultEvent | ServerStateObserved | Note):
                lines.append("  " + describeEvent(event, origin, names))
    return "\n".join(lines) + "\n"
