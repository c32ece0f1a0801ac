"""Buffer benchmark: the SQLite ceiling vs the buffer's durable append and claim+ack.

    .venv/bin/python bench/buffer_bench.py [--events 200000] [--appenders 50] [--batch 100]
                                           [--claim 500] [--destinations 1] [--synchronous full]

Prints, in one run (compare ratios; the machine is shared):
- ceiling: raw sqlite3 executemany of 1,000-row transactions into an events-like table,
  WAL + the chosen synchronous mode;
- append: many concurrent appenders of ``--batch`` events each, every append awaited until
  durably committed (group commit), with p50/p99 append latency;
- claim+ack: claim ``--claim`` events, ack them, until the destination is empty;
and the ratio of each to the ceiling. Targets: append and claim+ack >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buffer import EventRow, SqliteBuffer

PAYLOAD = (
    b'{"specversion":"1.0","id":"%s","source":"/site/area/line-1/press-07",'
    b'"type":"production.count","time":"2025-01-01T00:00:00+00:00","sequence":"00000000000000000042",'
    b'"agentid":"gw-1","data":{"machine":"press-07","kind":"good","quantity":12,'
    b'"window_start":"2025-01-01T00:00:00+00:00","window_end":"2025-01-01T00:00:10+00:00"}}'
)


class Ids:
    """Time-ordered ids (UUIDv7-like text): what the agent stores."""

    def __init__(self) -> None:
        self._n = 0

    def next(self) -> str:
        self._n += 1
        ms = time.time_ns() // 1_000_000
        return f"{ms:012x}-7{self._n:015x}"


def make_rows(ids: Ids, count: int, destinations: tuple[str, ...]) -> list[EventRow]:
    rows = []
    for i in range(count):
        event_id = ids.next()
        rows.append(
            EventRow(
                id=event_id,
                type="production.count",
                key=f"press-{i % 16:02d}",
                time="2025-01-01T00:00:00+00:00",
                payload=PAYLOAD % event_id.encode(),
                destinations=destinations,
            )
        )
    return rows


def ceiling(path: Path, events: int, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " type TEXT, key TEXT, time TEXT, payload BLOB, size INTEGER, created REAL)"
    )
    ids = Ids()
    batches = [make_rows(ids, 1000, ()) for _ in range(max(1, events // 1000))]
    start = time.perf_counter()
    for batch in batches:
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, type, key, time, payload, size, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.type, r.key, r.time, r.payload, len(r.payload), now) for r in batch],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(batches) * 1000 / elapsed


async def append_rate(
    buffer: SqliteBuffer, events: int, appenders: int, batch: int, destinations: tuple[str, ...]
) -> tuple[float, list[float]]:
    ids = Ids()
    work = [make_rows(ids, batch, destinations) for _ in range(max(1, events // batch))]
    latencies: list[float] = []

    async def appender() -> None:
        while work:
            rows = work.pop()
            t0 = time.perf_counter()
            await buffer.append(rows, {"sequence": rows[-1].id})
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    elapsed = time.perf_counter() - start
    return len(latencies) * batch / elapsed, latencies


async def claim_ack_rate(buffer: SqliteBuffer, destination: str, claim: int) -> float:
    done = 0
    start = time.perf_counter()
    while batch := await buffer.claim(destination, claim):
        await buffer.ack(destination, [event.seq for event in batch])
        done += len(batch)
    return done / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace) -> None:
    destinations = tuple(f"dest-{i}" for i in range(args.destinations))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ceil = ceiling(Path(tmp) / "ceiling.db", args.events, args.synchronous)
        mode = args.synchronous.upper()
        print(f"ceiling   raw executemany 1,000/tx, WAL+{mode}: {ceil:>9,.0f} rows/s")
        buffer = await SqliteBuffer.open(Path(tmp) / "buffer.db", synchronous=args.synchronous)
        try:
            rate, latencies = await append_rate(
                buffer, args.events, args.appenders, args.batch, destinations
            )
            commits = buffer.commits
            t0 = time.perf_counter()
            stats = await buffer.stats()
            stats_ms = (time.perf_counter() - t0) * 1000
            rates = [await claim_ack_rate(buffer, dest, args.claim) for dest in destinations]
            t0 = time.perf_counter()
            await buffer.stats()
            stats_done_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            pruned = await buffer.prune(time.time() + 1)
            prune_rate = pruned / (time.perf_counter() - t0)
        finally:
            await buffer.close()
    print(
        f"append    {args.appenders} appenders x {args.batch} events, {len(destinations)} "
        f"destination(s): {rate:>9,.0f} events/s  ({rate / ceil:.0%} of ceiling)"
        f"  commits={commits} ({stats.events / max(commits, 1):.0f} events/commit)"
    )
    print(
        f"          append latency p50={percentile(latencies, 50) * 1000:.1f} ms"
        f"  p99={percentile(latencies, 99) * 1000:.1f} ms"
    )
    for dest, claim_rate in zip(destinations, rates, strict=True):
        print(
            f"claim+ack {args.claim}/batch ({dest}): {claim_rate:>9,.0f} events/s"
            f"  ({claim_rate / ceil:.0%} of ceiling)"
        )
    print(
        f"stats()   {stats.events:,} events pending: {stats_ms:.2f} ms;"
        f" all delivered: {stats_done_ms:.2f} ms; database+WAL {stats.size_bytes:,} bytes"
    )
    print(f"prune     {pruned:,} delivered events: {prune_rate:>9,.0f} events/s")
    worst = min([rate, *rates])
    print(f"target    50,000 events/s: {'met' if worst >= 50_000 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--appenders", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--claim", type=int, default=500)
    parser.add_argument("--destinations", type=int, default=1)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--dir", default=None, help="where the temporary databases go")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
