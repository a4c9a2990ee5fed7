# -*- test-case-name: tests.test_sqlite -*-
"""
Throughput of L{dhcp6ha.leases.sqlite.SQLiteLeaseStore}, run by hand (not a test):

    .venv/bin/python bench/bench_store.py [--seconds 3] [--concurrency 1,10,100]
        [--changes 1] [--prefill 0] [--dir DIR | --database PATH] [--no-reads]
        [--acks 0]

For each concurrency C, C simulated exchanges run in a closed loop on the
real reactor: each reads what the engine reads (C{byClient} and C{get} of a
candidate address), commits C{--changes} new bindings and, once its commit()
Deferred has fired (durable: WAL, synchronous=FULL), starts again.  All C
commits of one reactor turn share a transaction (group commit).  Prints
commits/s, changes/s, transactions/s (= fsyncs/s), changes per transaction,
commit latency (median, 99th percentile) and the peak RSS.

C{--acks K} measures what a failover primary's store does besides: every
binding is marked pending for a partner, and after each commit the
exchange acknowledges (L{SQLiteLeaseStore.acknowledge}, not waited for: the
acks ride along with later commits) K bindings committed about 32 commits
before, as the partner's acks come back for the update queue's batches.
Compare a run with C{--acks 0} and one with C{--acks 1} (one ack per change,
as in a pair) in one sitting; changes/s and changes/tx count the acks too.

C{--prefill N} first loads N bindings with a bulk insert, to measure against
a database of realistic size (1,000,000 takes about 30 s); with
C{--database PATH} the file is kept, so later runs can skip the prefill.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from ipaddress import IPv6Address
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from attrs import evolve  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from dhcp6ha.leases.lease import BindingState, Lease, LeaseType  # noqa: E402
from dhcp6ha.leases.sqlite import SQL_UPSERT, SQLiteLeaseStore, _setUp, _toRow  # noqa: E402

PREFIX = 0x20010DB8 << 96
#: The relationship every binding is pending for with C{--acks}.
PARTNER = "partner"
#: How many commits back the acked bindings were committed (a partner's round trip).
ACK_LAG = 32


def newLease(rng: random.Random, now: float) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(PREFIX | rng.getrandbits(64)),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=b"\x00\x01\x00\x01" + rng.randbytes(10),
        iaid=rng.getrandbits(32),
        start_time_of_state=now,
        cltt=now,
        preferred_lifetime=3600,
        valid_lifetime=7200,
        expires=now + 7200,
    )


def prefill(path: str, n: int) -> None:
    """Bulk-load C{n} random bindings straight into the database."""
    rng = random.Random(1)
    connection = sqlite3.connect(path, isolation_level=None)
    _setUp(connection)
    now = time.time()
    started = time.perf_counter()
    for offset in range(0, n, 50000):
        connection.execute("BEGIN")
        connection.executemany(
            SQL_UPSERT, [_toRow(newLease(rng, now)) for _ in range(min(50000, n - offset))]
        )
        connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    print(
        f"prefilled {n} bindings in {time.perf_counter() - started:.1f}s, "
        f"{os.path.getsize(path) / 1e6:.0f} MB",
        flush=True,
    )


async def measure(
    reactor: Any,
    store: SQLiteLeaseStore,
    args: argparse.Namespace,
    rng: random.Random,
    concurrency: int,
) -> None:
    """Run C{concurrency} exchanges in a closed loop for C{args.seconds}; print a line."""
    deadline = time.perf_counter() + args.seconds
    latencies: list[float] = []
    commits = 0
    tx0, ch0 = store.transactions, store.changesWritten
    sent: collections.deque[Lease] = collections.deque()

    async def exchange() -> None:
        nonlocal commits
        while time.perf_counter() < deadline:
            now = reactor.seconds()
            changes = [newLease(rng, now) for _ in range(args.changes)]
            if args.reads:
                first = changes[0]
                store.byClient(first.duid, first.iaid, LeaseType.NA)
                store.get(first.address, 128)
            started = time.perf_counter()
            await store.commit(changes)
            latencies.append(time.perf_counter() - started)
            commits += 1
            if args.acks:
                sent.extend(changes)
                acked = [sent.popleft() for _ in range(min(args.acks, len(sent) - ACK_LAG))]
                if acked:
                    proposal = reactor.seconds() + 3600.0
                    store.acknowledge(
                        PARTNER, [(evolve(x, partner_lifetime_sent=proposal), None) for x in acked]
                    ).addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))

    began = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(exchange()) for _ in range(concurrency)])
    elapsed = time.perf_counter() - began
    transactions = store.transactions - tx0
    changes = store.changesWritten - ch0
    latencies.sort()
    print(
        f"{concurrency:>10} {commits / elapsed:>10.0f} {changes / elapsed:>10.0f} "
        f"{transactions / elapsed:>8.0f} {changes / max(transactions, 1):>10.1f} "
        f"{latencies[len(latencies) // 2] * 1e3:>7.2f} "
        f"{latencies[int(len(latencies) * 0.99)] * 1e3:>7.2f}",
        flush=True,
    )


async def run(reactor: Any, store: SQLiteLeaseStore, args: argparse.Namespace) -> None:
    rng = random.Random(2)
    print(
        f"{'committers':>10} {'commits/s':>10} {'changes/s':>10} {'tx/s':>8} "
        f"{'changes/tx':>10} {'p50 ms':>7} {'p99 ms':>7}",
        flush=True,
    )
    for concurrency in args.concurrency:
        await measure(reactor, store, args, rng, concurrency)
    await store.close()
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 10, 100, 1000],
    )
    parser.add_argument("--changes", type=int, default=1, help="bindings per commit")
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--dir", default=None, help="where to put the database")
    parser.add_argument(
        "--database", default=None, help="use (and keep) this database file instead"
    )
    parser.add_argument("--no-reads", dest="reads", action="store_false")
    parser.add_argument(
        "--acks", type=int, default=0, help="acks per commit, as a failover primary's store"
    )
    args = parser.parse_args()

    from twisted.internet import reactor

    directory = None
    if args.database:
        path = args.database
    else:
        directory = tempfile.mkdtemp(prefix="bench-store-", dir=args.dir)
        path = os.path.join(directory, "leases.sqlite")
    if args.prefill:
        prefill(path, args.prefill)
    store = SQLiteLeaseStore(
        path, reactor, replicate=(lambda lease: PARTNER) if args.acks else None
    )
    failed: list[Failure] = []

    def report(failure: Failure) -> None:
        failed.append(failure)
        print(failure.getTraceback(), file=sys.stderr)

    def go() -> None:
        d = Deferred.fromCoroutine(run(reactor, store, args))
        d.addErrback(report)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if directory is not None:
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
