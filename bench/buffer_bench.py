"""Buffer benchmark: the SQLite ceiling vs the buffer's durable append, claim+ack, memory.

    .venv/bin/python bench/buffer_bench.py [--quick] [--json PATH] [--synchronous full]
                                           [--backlog 1000000] [--crash-rounds 0]

In one run, on the same machine (compare ratios; the machine is shared):
- ceiling: raw sqlite3 executemany of 1,000-row transactions into an events-like table,
  WAL + the chosen synchronous mode;
- append, one sequential appender of 1,000 events: the agent's pattern in a flood (the
  engine is the only appender and hands over a round of up to a few thousand events
  once the previous one is committed);
- append, concurrent: 50 appenders of 100 events, each append awaited until durably
  committed (one transaction each, one after another), p50/p99 append latency;
- append, one sequential appender of 10 events: what a lone producer pays per append;
- claim+ack: claim 500, ack them, until the destination is empty; the same for samples
  with ``sample_retention: 0s``, where each ack also deletes what it completes;
- RSS: a fresh process opens an empty buffer, appends a backlog of --backlog events
  (default 1,000,000), then claims a batch; the growth must stay < 20 MiB (the backlog
  lives on disk);
- with --crash-rounds N: N SIGKILLs of a writer process at random moments (the test
  suite's crash test, longer), every acknowledged event checked present exactly once;
- flash: bytes written to disk per delivered event (this process's /proc/self/io
  write_bytes less cancelled_write_bytes) in a steady loop of appends of 300 sample
  events (a plant's round at ~1,000 events/s), each delivered (claim 500 + ack): pruned
  by the ack as ``sample_retention: 0s`` does, with synchronous full and normal, with
  SQLite's default checkpoint (1,000 pages) instead of the buffer's; pruned by the
  sample_retention pass every 7 appends (the agent's 2 s); and kept (the old 7-day
  default) while the file grows and once it lives at its max_size (evicting for room).
  The loop runs as fast as it can: with ``normal`` the kernel's writeback timing differs
  from a plant's, but the WAL is synced before every checkpoint, so its bytes reach the
  disk either way.
  The daily volume is given at 1,000 events/s.
Targets: append (1 x 1,000) and claim+ack >= 50,000 events/s; RSS growth < 20 MiB.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    MIB,
    Row,
    disk_written,
    finish,
    io_counters,
    memory,
    parser,
    percentile,
    raw_sqlite_rate,
    row,
)
from buffer import EventRow, SqliteBuffer, blocks

SCENARIO = "buffer"
TARGET_RATE = 50_000
TARGET_RSS_MIB = 20
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


def make_rows(
    ids: Ids, count: int, destinations: tuple[str, ...], event_type: str = "production.count"
) -> list[EventRow]:
    rows = []
    for i in range(count):
        event_id = ids.next()
        rows.append(
            EventRow(
                id=event_id,
                type=event_type,
                key=f"press-{i % 16:02d}",
                time="2025-01-01T00:00:00+00:00",
                payload=PAYLOAD % event_id.encode(),
                destinations=destinations,
            )
        )
    return rows


def ceiling(path: Path, events: int, synchronous: str) -> float:
    ids = Ids()
    batches = [
        [(r.id, r.type, r.key, r.time, r.payload, len(r.payload)) for r in make_rows(ids, 1000, ())]
        for _ in range(max(1, events // 1000))
    ]
    return raw_sqlite_rate(path, batches, synchronous)


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


async def throughput(tmp: Path, events: int, synchronous: str) -> list[Row]:
    ceil = ceiling(tmp / "ceiling.db", events, synchronous)
    label = f"raw executemany 1,000/tx, WAL+{synchronous.upper()}"
    buffer = await SqliteBuffer.open(tmp / "buffer.db", synchronous=synchronous)
    try:
        round_rate, _ = await append_rate(buffer, events, 1, 1000, ("dest-0",))
        rate, latencies = await append_rate(buffer, events, 50, 100, ("dest-0",))
        lone_events = max(2_000, events // 100)
        lone_rate, lone_latencies = await append_rate(buffer, lone_events, 1, 10, ("dest-0",))
        claim_rate = await claim_ack_rate(buffer, "dest-0", 500)
        t0 = time.perf_counter()
        pruned = await buffer.prune(time.time() + 1)
        prune_rate = pruned / (time.perf_counter() - t0)
    finally:
        await buffer.close()
    # A backlog of samples drained as the agent does by default (sample_retention 0s):
    # each ack also deletes the samples it completes.
    buffer = await SqliteBuffer.open(tmp / "drain.db", synchronous=synchronous)
    try:
        ids = Ids()
        for _ in range(max(1, events // 1000)):
            await buffer.append(make_rows(ids, 1000, ("dest-0",), "sample"))
        buffer.keep_samples(0)
        deleting_rate = await claim_ack_rate(buffer, "dest-0", 500)
    finally:
        await buffer.close()
    return [
        row(SCENARIO, f"ceiling: {label}", ceil, "rows/s"),
        row(
            SCENARIO,
            "durable append, 1 sequential appender x 1,000 events (the engine in a flood)",
            round_rate,
            "events/s",
            ceiling=ceil,
            ceiling_label="raw SQLite",
            target=">= 50,000/s",
            met=round_rate >= TARGET_RATE,
        ),
        row(
            SCENARIO,
            "durable append, 50 appenders x 100 events (a commit each)",
            rate,
            "events/s",
            ceiling=ceil,
            ceiling_label="raw SQLite",
        ),
        row(SCENARIO, "append latency p50 (50 appenders)", percentile(latencies, 50) * 1e3, "ms"),
        row(SCENARIO, "append latency p99 (50 appenders)", percentile(latencies, 99) * 1e3, "ms"),
        row(
            SCENARIO,
            "durable append, 1 sequential appender x 10 events",
            lone_rate,
            "events/s",
            ceiling=ceil,
            ceiling_label="raw SQLite",
        ),
        row(
            SCENARIO,
            "append latency p50 (1 appender)",
            percentile(lone_latencies, 50) * 1e3,
            "ms",
            target="< 20 ms",
            met=percentile(lone_latencies, 50) < 20,
        ),
        row(
            SCENARIO,
            "append latency p99 (1 appender)",
            percentile(lone_latencies, 99) * 1e3,
            "ms",
        ),
        row(
            SCENARIO,
            "claim 500 + ack",
            claim_rate,
            "events/s",
            ceiling=ceil,
            ceiling_label="raw SQLite",
            target=">= 50,000/s",
            met=claim_rate >= TARGET_RATE,
        ),
        row(
            SCENARIO,
            "claim 500 + ack of samples, each ack deleting them (sample_retention 0s)",
            deleting_rate,
            "events/s",
            ceiling=ceil,
            ceiling_label="raw SQLite",
        ),
        row(SCENARIO, "prune of delivered events", prune_rate, "events/s"),
    ]


# -- memory with a large backlog (in a fresh process) ----------------------------------


def rss_rows(tmp: Path, backlog: int, synchronous: str) -> list[Row]:
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(backlog), str(tmp / "rss.db"), synchronous],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth = (figures["rss_full"] - figures["rss_empty"]) / MIB
    after_claim = (figures["rss_claimed"] - figures["rss_empty"]) / MIB
    return [
        row(SCENARIO, "RSS with an empty buffer open", figures["rss_empty"] / MIB, "MiB"),
        row(
            SCENARIO,
            f"RSS growth, empty -> {backlog:,} events pending",
            growth,
            "MiB",
            target=f"< {TARGET_RSS_MIB} MiB",
            met=growth < TARGET_RSS_MIB,
        ),
        row(SCENARIO, "RSS growth after claiming 500 of them", after_claim, "MiB"),
        row(SCENARIO, f"file size with {backlog:,} events", figures["size"] / MIB, "MiB"),
        row(SCENARIO, "backlog append rate (1,000/append)", figures["rate"], "events/s"),
    ]


def _generate(backlog: int) -> Iterator[list[EventRow]]:
    ids = Ids()
    for _ in range(backlog // 1000):
        yield make_rows(ids, 1000, ("dest-0",))


async def rss_child(backlog: int, path: Path, synchronous: str) -> None:
    buffer = await SqliteBuffer.open(path, synchronous=synchronous)
    try:
        for rows in _generate(2000):  # warm every code path once before the first reading
            await buffer.append(rows)
        await buffer.claim("dest-0", 500)
        await buffer.stats()
        empty = memory_now()
        start = time.perf_counter()
        for rows in _generate(backlog):
            await buffer.append(rows)
        rate = backlog / (time.perf_counter() - start)
        full = memory_now()
        await buffer.claim("dest-0", 500)
        stats = await buffer.stats()
        claimed = memory_now()
    finally:
        await buffer.close()
    figures = {
        "rss_empty": empty,
        "rss_full": full,
        "rss_claimed": claimed,
        "rate": rate,
        "size": stats.size_bytes,
    }
    print(json.dumps(figures))


def memory_now() -> int:
    import os

    return memory(os.getpid())["VmRSS"]


# -- the long crash run ------------------------------------------------------------------


def crash_rows(tmp: Path, rounds: int) -> list[Row]:
    from tests.buffer.test_crash import check_database, run_and_kill

    rng = random.Random(int(time.time()))
    path = tmp / "crash.db"
    acknowledged, stored = -1, 0
    start = time.perf_counter()
    for round_ in range(rounds):
        lines = run_and_kill(path, acknowledged + 1, ("full", "normal")[round_ % 2], rng)
        for line in lines:
            if line.startswith("ack ") and line.endswith("\n"):
                acknowledged = max(acknowledged, int(line.split()[2]))
        stored = check_database(path, acknowledged)  # raises on any loss or double
    elapsed = time.perf_counter() - start
    return [
        row(
            SCENARIO,
            f"SIGKILL rounds, every acknowledged event once ({stored:,} events, {elapsed:.0f} s)",
            rounds,
            "kills",
            target="no loss, no double, integrity ok",
            met=True,
        )
    ]


# -- flash: bytes written per delivered event ----------------------------------------

# A sample event as the engine makes it (330 bytes).
SAMPLE = (
    b'{"specversion":"1.0","id":"%s","source":"/plant/area/line/tags003","type":"sample",'
    b'"time":"2026-12-02T07:03:24.777287Z","datacontenttype":"application/json",'
    b'"sequence":"%020d","agentid":"bench-plant","data":{"machine":"tags003",'
    b'"signal":"tag.%05d","value":%d.0,"quality":"good"}}'
)
ROUND = 300  # events per append
PRUNE_EVERY = 7  # appends between prunes: ~2 s at 1,000 events/s
DAILY_RATE = 1000
GB = 1e9


def written_now() -> int:
    import os

    found = io_counters(os.getpid())
    return disk_written(found) if found else 0


# Sample blocks as the engine hands them over with its default commit_interval (2 s at
# 1,000 samples/s), over this many signals; the head of each is its CloudEvent with slots.
BLOCK = 2000
SIGNALS = 1000
HEAD = (
    b'{"specversion":"1.0","id":"\x00I","source":"/plant/area/line/tags003","type":"sample",'
    b'"time":\x00T,"datacontenttype":"application/json","sequence":"\x00S",'
    b'"agentid":"bench-plant","data":{"machine":"tags003","signal":"tag.%05d","value":\x00V,'
    b'"quality":"good"}}'
)


async def block_loop(path: Path, events: int) -> dict[str, float]:
    """``flash_loop`` for sample blocks: a block of BLOCK samples per append, acked in the
    next append's transaction (ack_with_appends), as the agent runs by default."""
    buffer = await SqliteBuffer.open(path, synchronous="full")
    buffer.keep_samples(0)
    buffer.ack_with_appends(60.0)
    heads = {
        f"{blocks.HEAD_KEY}{i}": blocks.Head("sample", "tags003", HEAD % i).to_text()
        for i in range(SIGNALS)
    }
    rng = random.Random(7)
    n = 0
    acking: list[asyncio.Future[None]] = []

    async def rounds(count: int) -> int:
        nonlocal n
        first = n
        for _ in range(max(1, count // BLOCK)):
            at_us = blocks.time_us(datetime.now(UTC))
            samples = [
                blocks.BlockSample(
                    k % SIGNALS, at_us + (k // SIGNALS) * 1_000_000, b"%.2f" % rng.uniform(0, 100)
                )
                for k in range(BLOCK)
            ]
            payload, base = blocks.encode(n + 1, samples)
            n += BLOCK
            block = EventRow(
                blocks.block_id(f"{n:08x}-0000-7000-8000-{n:012x}"),
                "sample",
                "",
                blocks.iso(base).isoformat(),
                payload,
                ("receiver",),
                BLOCK,
            )
            await buffer.append([block], {"sequence": str(n), **heads})
            heads.clear()  # written once, with the first block
            await asyncio.gather(*acking)  # committed with that append
            acking.clear()
            while batch := await buffer.claim("receiver", 500, after_seq=acked_to[0]):
                acked_to[0] = batch[-1].seq
                acking.append(asyncio.ensure_future(buffer.ack("receiver", [e.seq for e in batch])))
        return n - first

    acked_to = [0]
    return await written_per_event(buffer, rounds, events)


async def written_per_event(
    buffer: SqliteBuffer, rounds: Callable[[int], Awaitable[int]], events: int, fill: int = 0
) -> dict[str, float]:
    """Bytes written per event over ``rounds(events)`` (each returns the events it
    appended and delivered), after ``fill`` events and a warm-up that lets the WAL reach
    its size; and the file's size then. Closes the buffer."""
    try:
        await rounds(fill)
        await rounds(events // 2)
        written = written_now()
        made = await rounds(events)
        written = written_now() - written
        stats = await buffer.stats()
    finally:
        await buffer.close()
    return {"per_event": written / made, "file": stats.size_bytes}


async def flash_loop(
    path: Path,
    synchronous: str,
    events: int,
    *,
    prune: str = "ack",
    max_size: int | None = None,
    fill: int = 0,
    checkpoint: int | None = None,
) -> dict[str, float]:
    """Bytes written per delivered event over ``events`` events after a warm-up (and after
    ``fill`` events, to reach max_size), each a row of its own, as states, counts and
    alarms are (and samples were before blocks). ``prune``: "ack" (sample_retention 0s:
    each ack deletes what it completes), "pass" (the sample_retention pass every
    PRUNE_EVERY appends, as once samples are past a sample_retention above 0) or "keep"
    (none)."""
    buffer = await SqliteBuffer.open(path, synchronous=synchronous, max_size=max_size)
    if prune == "ack":
        buffer.keep_samples(0)
    if checkpoint is not None:
        await buffer._writer.call(
            lambda conn: conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint}")
        )
    n = 0

    async def rounds(count: int) -> int:
        nonlocal n
        first = n
        for i in range(max(1, count // ROUND)):
            rows = []
            for k in range(ROUND):
                n += 1
                event_id = f"{n:032x}"
                payload = SAMPLE % (event_id.encode(), n, k, n)
                rows.append(EventRow(event_id, "sample", "tags003", "t", payload, ("receiver",)))
            await buffer.append(rows, {"sequence": str(n)})
            while batch := await buffer.claim("receiver", 500):
                await buffer.ack("receiver", [e.seq for e in batch])
            if prune == "pass" and (i + 1) % PRUNE_EVERY == 0:
                await buffer.prune_samples(time.time() + 1)
        return n - first

    return await written_per_event(buffer, rounds, events, fill)


async def flash_rows(tmp: Path, quick: bool) -> list[Row]:
    events = 20_000 if quick else 40_000
    cap = 16 * MIB
    defaults = "sample_retention 0s"
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (f"synchronous full, {defaults}", "full", {}),
        (f"synchronous normal, {defaults}", "normal", {}),
        (
            f"synchronous full, {defaults}, SQLite's checkpoint (1,000 pages)",
            "full",
            {"checkpoint": 1000},
        ),
        (
            "synchronous full, samples pruned every 2 s (sample_retention > 0s)",
            "full",
            {"prune": "pass"},
        ),
        (
            "synchronous full, samples kept 7 d (old default), file growing",
            "full",
            {"prune": "keep"},
        ),
        (
            "synchronous full, samples kept 7 d (old default), at max_size (16 MiB here)",
            "full",
            {"prune": "keep", "max_size": cap, "fill": 2 * cap // 550},
        ),
    ]
    found = await block_loop(tmp / "flash-blocks.db", events)
    label = f"sample blocks of {BLOCK:,}, acks in the appends (the defaults)"
    per_event = found["per_event"]
    daily = per_event * DAILY_RATE * 86400 / GB
    rows = [
        row(SCENARIO, f"flash: bytes written per delivered event, {label}", per_event, "B"),
        row(
            SCENARIO,
            f"flash: at {DAILY_RATE:,} events/s, {label}",
            daily,
            "GB/day",
            target="<= 2 GB/day",
            met=daily <= 2,
        ),
        row(SCENARIO, f"flash: buffer.db + WAL at the end, {label}", found["file"] / MIB, "MiB"),
    ]
    # Events as rows of their own (states, counts, alarms; samples before blocks): no
    # target, a plant's few such events are not what fills the disk.
    for n, (label, synchronous, options) in enumerate(cases):
        found = await flash_loop(tmp / f"flash-{n}.db", synchronous, events, **options)
        label = f"a row per event, {label}"
        per_event = found["per_event"]
        rows += [
            row(SCENARIO, f"flash: bytes written per delivered event, {label}", per_event, "B"),
            row(
                SCENARIO,
                f"flash: at {DAILY_RATE:,} events/s, {label}",
                per_event * DAILY_RATE * 86400 / GB,
                "GB/day",
            ),
            row(
                SCENARIO, f"flash: buffer.db + WAL at the end, {label}", found["file"] / MIB, "MiB"
            ),
        ]
    return rows


async def run_all(args: object) -> list[Row]:
    quick = bool(getattr(args, "quick", False))
    synchronous = str(getattr(args, "synchronous", "full"))
    backlog = int(getattr(args, "backlog", 1_000_000))
    rounds = int(getattr(args, "crash_rounds", 0))
    with tempfile.TemporaryDirectory(dir=getattr(args, "dir", None)) as name:
        tmp = Path(name)
        rows = await throughput(tmp, 50_000 if quick else 200_000, synchronous)
        rows += rss_rows(tmp, 100_000 if quick else backlog, synchronous)
        rows += await flash_rows(tmp, quick)
        if rounds:
            rows += crash_rows(tmp, rounds)
    return rows


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
        asyncio.run(rss_child(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]))
        return
    cli = parser(__doc__)
    cli.add_argument("--synchronous", choices=["full", "normal"], default="full")
    cli.add_argument("--backlog", type=int, default=1_000_000, help="events for the RSS figure")
    cli.add_argument("--crash-rounds", type=int, default=0, help="SIGKILL rounds (e.g. 300)")
    cli.add_argument("--dir", default=None, help="where the temporary databases go")
    args = cli.parse_args()
    finish(asyncio.run(run_all(args)), args.json)


if __name__ == "__main__":
    main()
