"""Ingest benchmark: samples -> rules -> durable buffer, against raw SQLite.

    .venv/bin/python bench/ingest_bench.py [--quick] [--json PATH]

The real RuleEngine with a real SqliteBuffer (WAL, synchronous FULL) and a config of
many machines (a state, a counter and ten process samples each, one HTTP destination so
every event also gets its delivery row). Sample batches go straight into
``engine.sink``: no Modbus, so what is measured is rules + event models + the commit.

- throughput: pre-built batches (one sample of every signal, every value changed) fed as
  fast as the engine takes them; events/s from the first batch until all is committed
  (median of three runs);
- latency: batches of ten changed samples paced at 1,000 events/s; for every event the
  time from its batch entering the sink until the commit that holds it returned;
- ceiling: raw sqlite3 ``executemany`` of 1,000-row transactions of the same payload
  size into an events-like table, WAL + synchronous FULL (median of three runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.models import BufferConfig, FloorgateConfig
from agent.pipeline.engine import RuleEngine
from agent.pipeline.events import uuid7
from bench.common import (
    Row,
    finish,
    parser,
    percentile,
    raw_sqlite_rate,
    row,
    thread_cpu_seconds,
)
from buffer.rows import EventRow, Unstorable
from buffer.sqlite import SqliteBuffer
from drivers.base import Quality, Sample

SCENARIO = "ingest"
SAMPLES_PER_MACHINE = 10
TARGET_RATE = 50_000
TARGET_P99_MS = 50.0
RUNS = 3
PACED_RATE = 1000  # events/s
PACED_BATCH = SAMPLES_PER_MACHINE  # events per batch (one machine's samples)


def bench_config(
    machines: int, state_dir: Path, commit_interval: str | None = None
) -> FloorgateConfig:
    """``commit_interval``: the buffer's (None: the default)."""
    signals: list[dict[str, Any]] = []
    machine_configs: list[dict[str, Any]] = []
    for m in range(machines):
        name = f"m{m:03d}"
        base = len(signals)
        signals.append({"name": f"{name}.state", "address": base, "data_type": "uint16"})
        signals.append({"name": f"{name}.good", "address": base + 1, "data_type": "uint32"})
        samples = [f"{name}.t{j}" for j in range(SAMPLES_PER_MACHINE)]
        for j, signal in enumerate(samples):
            signals.append({"name": signal, "address": base + 3 + 2 * j, "data_type": "float32"})
        machine_configs.append(
            {
                "name": name,
                "state": {"signal": f"{name}.state", "map": {0: "stopped", 1: "running"}},
                "counters": [{"signal": f"{name}.good", "report_every": "10s", "report_parts": 10}],
                "samples": [{"signal": s, "deadband": 0.5} for s in samples],
            }
        )
    return FloorgateConfig.model_validate(
        {
            "agent": {"id": "bench", "site": "plant", "state_dir": str(state_dir)},
            "sources": [
                {"name": "plc", "type": "modbus_tcp", "host": "127.0.0.1", "signals": signals}
            ],
            "machines": machine_configs,
            "destinations": [
                {"name": "middleware", "type": "http", "url": "http://127.0.0.1:9/events"}
            ],
            "health": {"enabled": False},
            "buffer": {} if commit_interval is None else {"commit_interval": commit_interval},
        }
    )


def full_batch(machines: int, k: int, when: datetime) -> list[Sample]:
    """One sample of every signal; every process value moved by 1 (deadband 0.5)."""
    batch: list[Sample] = []
    good = Quality.GOOD
    for m in range(machines):
        name = f"m{m:03d}"
        batch.append(Sample(f"{name}.state", 1, good, when))
        batch.append(Sample(f"{name}.good", k, good, when))
        batch.extend(
            Sample(f"{name}.t{j}", float(k + j), good, when) for j in range(SAMPLES_PER_MACHINE)
        )
    return batch


class TimedBuffer(SqliteBuffer):
    """Notes when each committed sample event's append returned (it is durable then)."""

    committed_at: list[float] | None = None  # set to [] to start recording

    def submit(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> asyncio.Future[list[Unstorable]]:
        future = super().submit(rows, state)
        samples = sum(r.samples for r in rows if r.type == "sample")

        def committed(done: asyncio.Future[list[Unstorable]]) -> None:
            now = time.perf_counter()
            if self.committed_at is not None and not done.exception():
                self.committed_at.extend([now] * samples)

        future.add_done_callback(committed)
        return future


async def warmed_up_engine(
    config: FloorgateConfig, buffer: SqliteBuffer, machines: int
) -> tuple[RuleEngine, asyncio.Task[None]]:
    """A running engine that has seen (and committed) the first reading of every signal."""
    committed = asyncio.Event()
    engine = RuleEngine(config, buffer, on_commit=committed.set)
    await engine.restore()
    await engine.sink(full_batch(machines, -1, datetime.now(UTC)))
    task = asyncio.create_task(engine.run())
    async with asyncio.timeout(60):
        await committed.wait()
    return engine, task


async def throughput(
    tmp: Path, machines: int, events: int
) -> tuple[float, float, int, float, float]:
    """Events/s, mean payload bytes, events committed, and CPU µs per event in the
    event-loop thread (rules, event models, JSON) and in the other threads (SQLite)."""
    config = bench_config(machines, tmp)
    per_batch = machines * SAMPLES_PER_MACHINE
    when = datetime.now(UTC)
    batches = [full_batch(machines, k, when) for k in range(max(2, events // per_batch))]
    buffer = await SqliteBuffer.open(tmp / "throughput.db", synchronous="full")
    try:
        engine, task = await warmed_up_engine(config, buffer, machines)
        before = sum(engine.health.events_by_type.values())
        threads = thread_cpu_seconds(os.getpid())
        buffer_cpu = await buffer_threads_cpu(buffer)
        start = time.perf_counter()
        for batch in batches:
            await engine.sink(batch)
        # Let run() take everything, as it does with samples that keep coming; stopping
        # at once would measure stop()'s one-shot drain of the queue instead.
        while not engine.queue.empty():  # noqa: ASYNC110 - a queue has no "drained" event
            await asyncio.sleep(0.001)
        engine.request_stop()
        await task
        await engine.stop()
        elapsed = time.perf_counter() - start
        threads = {
            tid: spent - threads.get(tid, 0.0)
            for tid, spent in thread_cpu_seconds(os.getpid()).items()
        }
        made = sum(engine.health.events_by_type.values()) - before
        buffer_cpu = await buffer_threads_cpu(buffer) - buffer_cpu
        stats = await buffer.stats()
    finally:
        await buffer.close()
    if stats.events < made:
        raise RuntimeError(f"{made} events made, {stats.events} committed")
    with contextlib.closing(sqlite3.connect(tmp / "throughput.db")) as conn:
        size = conn.execute("SELECT avg(size) FROM events").fetchone()[0]  # for the ceiling
    loop_cpu = threads.pop(os.getpid(), 0.0)
    return made / elapsed, float(size), made, loop_cpu / made * 1e6, buffer_cpu / made * 1e6


async def buffer_threads_cpu(buffer: SqliteBuffer) -> float:
    """CPU seconds of the buffer's writer and reader threads, read in each of them
    (/proc counts in 10 ms ticks, too coarse now that a round's samples commit as one
    block)."""
    writer = await buffer._writer.call(lambda _: time.thread_time())
    reader = await buffer._reader.call(lambda _: time.thread_time())
    return writer + reader


async def paced_latency(
    tmp: Path, machines: int, seconds: float, commit_interval: str | None
) -> list[float]:
    """Sample-to-committed latencies (s) of sample events at PACED_RATE events/s."""
    config = bench_config(machines, tmp, commit_interval)
    buffer = await TimedBuffer.open(tmp / f"latency-{commit_interval}.db", synchronous="full")
    put_at: list[float] = []
    committed: list[float] = []
    try:
        engine, task = await warmed_up_engine(config, buffer, machines)
        assert isinstance(buffer, TimedBuffer)
        buffer.committed_at = committed = []
        interval = PACED_BATCH / PACED_RATE
        count = int(seconds / interval)
        next_at = time.perf_counter()
        for k in range(count):
            m = k % machines
            when = datetime.now(UTC)
            batch = [
                Sample(f"m{m:03d}.t{j}", float(k + j), Quality.GOOD, when)
                for j in range(SAMPLES_PER_MACHINE)
            ]
            put_at.append(time.perf_counter())
            await engine.sink(batch)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        engine.request_stop()
        await task
        await engine.stop()
    finally:
        await buffer.close()
    if len(committed) != count * PACED_BATCH:
        raise RuntimeError(f"{count * PACED_BATCH} sample events paced, {len(committed)} committed")
    return [committed[i] - put_at[i // PACED_BATCH] for i in range(len(committed))]


def sqlite_ceiling(path: Path, rows: int, payload_size: int) -> float:
    """Rows/s of raw executemany, 1,000 rows per transaction, WAL + FULL."""
    payload = b"x" * payload_size
    stamp = datetime.now(UTC).isoformat()
    batches = [
        [(uuid7(), "sample", f"m{i % 100:03d}", stamp, payload, payload_size) for i in range(1000)]
        for _ in range(max(1, rows // 1000))
    ]
    return raw_sqlite_rate(path, batches, "FULL")


async def run(quick: bool) -> list[Row]:
    machines = 100
    events = 30_000 if quick else 200_000
    seconds = 3.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="fg-ingest-") as name:
        tmp = Path(name)
        # This machine is a shared VM whose speed drifts by a third from one run to the
        # next: the median of three runs (each into a fresh file) is reported.
        runs = []
        for n in range(RUNS):
            (tmp / str(n)).mkdir()
            runs.append(await throughput(tmp / str(n), machines, events))
        rate, payload_size, made, loop_us, sqlite_us = sorted(runs)[len(runs) // 2]
        # The engine's own latency (each round committed at once), and the defaults' (a
        # commit every commit_interval: up to that long more, by design).
        latencies = await paced_latency(tmp, machines, seconds, "0s")
        default_latencies = await paced_latency(tmp, machines, seconds, None)
        ceilings = sorted(
            sqlite_ceiling(tmp / f"ceiling{n}.db", max(events, 100_000), round(payload_size))
            for n in range(RUNS)
        )
        ceiling = ceilings[len(ceilings) // 2]
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    interval_ms = BufferConfig().commit_interval * 1000
    d50 = percentile(default_latencies, 50) * 1000
    d99 = percentile(default_latencies, 99) * 1000
    label = f"raw executemany 1,000/tx WAL+FULL, {payload_size:.0f} B rows, median of {RUNS}"
    return [
        row(
            SCENARIO,
            f"events/s ({machines} machines, {made:,} events, 1 destination; median of {RUNS})",
            rate,
            "events/s",
            ceiling=ceiling,
            ceiling_label=label,
            target=">= 50,000/s and >= 1/3 of ceiling",
            met=rate >= TARGET_RATE and rate >= ceiling / 3,
        ),
        row(SCENARIO, "CPU per event, event loop (rules, event model, JSON)", loop_us, "µs"),
        row(SCENARIO, "CPU per event, SQLite threads (the durable commit)", sqlite_us, "µs"),
        row(
            SCENARIO,
            f"p50 sample-to-committed at {PACED_RATE:,} events/s, commit_interval 0s",
            p50,
            "ms",
        ),
        row(
            SCENARIO,
            f"p99 sample-to-committed at {PACED_RATE:,} events/s, commit_interval 0s",
            p99,
            "ms",
            target=f"<= {TARGET_P99_MS:g} ms",
            met=p99 <= TARGET_P99_MS,
        ),
        row(
            SCENARIO,
            f"p50 sample-to-committed at {PACED_RATE:,} events/s, the defaults"
            f" (commit_interval {interval_ms / 1000:g}s)",
            d50,
            "ms",
        ),
        row(
            SCENARIO,
            f"p99 sample-to-committed at {PACED_RATE:,} events/s, the defaults",
            d99,
            "ms",
            target=f"<= commit_interval + {TARGET_P99_MS:g} ms",
            met=d99 <= interval_ms + TARGET_P99_MS,
        ),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
