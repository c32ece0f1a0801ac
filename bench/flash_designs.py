"""A design study for the flash budget: what each way of keeping samples costs the disk,
per sample, at 1,000 samples a second in real time, on this machine.

    .venv/bin/python bench/flash_designs.py [--quick] [--json PATH] [--only N ...]
        [--dir PATH]

Not part of ``make bench`` (it measures candidate layouts, not the product, apart from the
first rows): it is the evidence behind docs/buffer.md's "What 2 GB a day would take".
Issue 17 asks for at most 2 GB a day at 1,000 events/s, i.e. 23 bytes per event.

Every case appends a round of samples ``commits`` times a second (1,000 samples a second
in all), delivers it at once (claim and ack, or a cursor) and frees it, for a warm-up of
8 s and then a window (30 s; ``--quick``: 10 s) in which it reads what this process
wrote to the disk (``write_bytes`` less ``cancelled_write_bytes`` of /proc/self/io, as
the plant bench does). Real time matters: without fsync, a page dirtied again before the
kernel writes it back (after ~30 s) is counted once.

- **rows**: the product's buffer (``SqliteBuffer``, its defaults: samples freed by the ack
  that completes them), every sample a row with its delivery row, a commit per round.
- **JSON blocks**: a round's sample CloudEvents, newline-joined and compressed in one
  Zstandard frame with the buffer's dictionary, as one row of a two-table sketch (the
  block and its delivery row; no id index, no rule state): a floor for "a round's samples
  in one row" inside SQLite.
- **compact blocks**: the same round as columns (signal index, millisecond offset, value;
  the ids and envelopes would be derived when sending), compressed: a sizing sketch of an
  encoding, not a format.
- **own log**: the block appended to a file of its own (fsync per append or none), and a
  destination's cursor updated in SQLite once a second.

The samples look like the realistic plant's: 1,000 signals of 10 machines, values a random
walk with two decimals, UUIDv7 ids from the agent's own generator.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from agent.pipeline.events import uuid7_batch
from bench.common import Row, finish, parser, row
from buffer import payloads
from buffer.diskio import written_bytes
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer

SCENARIO = "flash designs"
RATE = 1000  # samples a second
SIGNALS = 1000
WARMUP = 8.0
WINDOW, QUICK_WINDOW = 30.0, 10.0
GB = 1e9
BUDGET = 2 * GB / 86400 / RATE  # bytes per sample the target allows (23.1)

SAMPLE = (
    '{"specversion":"1.0","id":"%s","source":"/plant/area/line/press%02d","type":"sample",'
    '"time":"%s","datacontenttype":"application/json","sequence":"%020d","agentid":"plant",'
    '"data":{"machine":"press%02d","signal":"press%02d.tag%03d","value":%s,"quality":"good"}}'
)


class Plant:
    """Rounds of samples: ``take(n)`` gives the next n signals' samples, in the realistic
    plant's shapes (JSON for rows and JSON blocks, columns for compact blocks)."""

    def __init__(self) -> None:
        self.values = [round(random.uniform(0, 500), 2) for _ in range(SIGNALS)]
        self.next_signal = 0
        self.seq = 0

    def take(self, count: int) -> list[tuple[int, float, float]]:
        """(signal, value, time) of the next ``count`` samples."""
        now = time.time()
        out = []
        for k in range(count):
            signal = (self.next_signal + k) % SIGNALS
            value = round(self.values[signal] + random.gauss(0, 1.0), 2)
            self.values[signal] = value
            out.append((signal, value, now + k * 1e-5))
        self.next_signal = (self.next_signal + count) % SIGNALS
        return out

    def json(self, samples: list[tuple[int, float, float]]) -> tuple[list[str], list[bytes]]:
        ids = uuid7_batch(len(samples))
        payloads_ = []
        for event_id, (signal, value, at) in zip(ids, samples, strict=True):
            self.seq += 1
            stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
            )
            machine = signal // 100
            text = SAMPLE % (event_id, machine, stamp, self.seq, machine, machine, signal, value)
            payloads_.append(text.encode())
        return ids, payloads_


_dictionary = zstandard.ZstdCompressionDict(
    payloads.DICTIONARY_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT
)
_json_block = zstandard.ZstdCompressor(level=payloads.LEVEL, dict_data=_dictionary)
_compact_block = zstandard.ZstdCompressor(level=payloads.LEVEL)


def json_block(plant: Plant, samples: list[tuple[int, float, float]]) -> bytes:
    return _json_block.compress(b"\n".join(plant.json(samples)[1]))


def compact_block(plant: Plant, samples: list[tuple[int, float, float]]) -> bytes:
    start = samples[0][2]
    head = struct.pack("<16sdI", os.urandom(16), start, len(samples))  # id base, time, count
    body = b"".join(
        struct.pack("<HHd", signal, int((at - start) * 1000), value)
        for signal, value, at in samples
    )
    return _compact_block.compress(head + body)


@dataclass
class Case:
    label: str
    layout: str  # "rows", "sqlite" (blocks in SQLite), "log" (blocks in a file)
    commits: int  # rounds a second
    synchronous: str  # "full" or "normal"
    page_size: int = 4096
    encode: Callable[[Plant, list[tuple[int, float, float]]], bytes] | None = None


CASES = [
    Case("rows, 7 commits/s, full (the product's defaults)", "rows", 7, "full"),
    Case("rows, 7 commits/s, normal", "rows", 7, "normal"),
    Case("rows, 1 commit/s, full", "rows", 1, "full"),
    Case("rows, 1 commit/s, full, 1 KiB pages", "rows", 1, "full", 1024),
    Case("JSON blocks in SQLite, 7/s, full", "sqlite", 7, "full", 4096, json_block),
    Case(
        "JSON blocks in SQLite, 1/s, normal, 1 KiB pages", "sqlite", 1, "normal", 1024, json_block
    ),
    Case("compact blocks in SQLite, 7/s, full", "sqlite", 7, "full", 4096, compact_block),
    Case(
        "compact blocks in SQLite, 7/s, normal, 1 KiB pages",
        "sqlite",
        7,
        "normal",
        1024,
        compact_block,
    ),
    Case("compact blocks in SQLite, 1/s, full", "sqlite", 1, "full", 4096, compact_block),
    Case(
        "compact blocks in SQLite, 2/s, full, 1 KiB pages", "sqlite", 2, "full", 1024, compact_block
    ),
    Case(
        "compact blocks in SQLite, 1/s, full, 1 KiB pages", "sqlite", 1, "full", 1024, compact_block
    ),
    Case(
        "compact blocks in SQLite, 1/s, normal, 1 KiB pages",
        "sqlite",
        1,
        "normal",
        1024,
        compact_block,
    ),
    Case("JSON blocks in an own log, 7/s, no fsync", "log", 7, "normal", 1024, json_block),
    Case("compact blocks in an own log, 7/s, fsync each", "log", 7, "full", 1024, compact_block),
    Case("compact blocks in an own log, 7/s, no fsync", "log", 7, "normal", 1024, compact_block),
    Case("compact blocks in an own log, 1/s, fsync each", "log", 1, "full", 1024, compact_block),
]

Round = Callable[[list[tuple[int, float, float]]], Awaitable[int]]  # bytes of the block


async def paced(
    plant: Plant, commits: int, window: tuple[float, float], one_round: Round
) -> tuple[float, float]:
    """Runs rounds in real time; (bytes written per sample, block bytes per sample) over
    the window after the warm-up."""
    warmup, window_s = window
    plant_rate = RATE // commits
    started = time.monotonic()
    base: int | None = None
    taken = taken_at_start = stored = 0
    rounds = 0
    while (elapsed := time.monotonic() - started) < warmup + window_s:
        if base is None and elapsed >= warmup:
            base, taken_at_start, stored = written_bytes() or 0, taken, 0
        stored += await one_round(plant.take(plant_rate))
        taken += plant_rate
        rounds += 1
        await asyncio.sleep(max(0.0, started + rounds / commits - time.monotonic()))
    count = taken - taken_at_start
    return ((written_bytes() or 0) - (base or 0)) / count, stored / count


def make_sqlite(path: Path, case: Case) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {case.page_size}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {case.synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 4000")  # the product's
    conn.execute("PRAGMA secure_delete = FAST")
    return conn


async def rows_case(path: Path, case: Case, window: tuple[float, float]) -> tuple[float, float]:
    if case.page_size != 4096:  # the page size is the file's: set before SQLite makes it
        make_sqlite(path, case).close()
    buffer = await SqliteBuffer.open(path, synchronous=case.synchronous)
    buffer.keep_samples(0)
    plant = Plant()

    async def one_round(samples: list[tuple[int, float, float]]) -> int:
        ids, texts = plant.json(samples)
        rows = [EventRow(i, "sample", "m", "t", p, ("r",)) for i, p in zip(ids, texts, strict=True)]
        await buffer.append(rows, {"sequence": str(plant.seq)})
        while batch := await buffer.claim("r", 2000):
            await buffer.ack("r", [e.seq for e in batch])
        return 0

    try:
        return await paced(plant, case.commits, window, one_round)
    finally:
        await buffer.close()


async def sqlite_case(path: Path, case: Case, window: tuple[float, float]) -> tuple[float, float]:
    conn = make_sqlite(path, case)
    conn.execute("CREATE TABLE blocks (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    conn.execute(
        "CREATE TABLE deliveries (destination TEXT, seq INTEGER, "
        "PRIMARY KEY (destination, seq)) WITHOUT ROWID"
    )
    plant = Plant()
    encode = case.encode
    assert encode is not None

    async def one_round(samples: list[tuple[int, float, float]]) -> int:
        block = encode(plant, samples)
        conn.execute("BEGIN")
        seq = conn.execute("INSERT INTO blocks (payload) VALUES (?)", (block,)).lastrowid
        conn.execute("INSERT INTO deliveries VALUES ('r', ?)", (seq,))
        conn.execute("COMMIT")
        conn.execute("BEGIN")  # delivered: the ack frees it
        conn.execute("DELETE FROM deliveries WHERE destination = 'r' AND seq = ?", (seq,))
        conn.execute("DELETE FROM blocks WHERE seq = ?", (seq,))
        conn.execute("COMMIT")
        return len(block)

    try:
        return await paced(plant, case.commits, window, one_round)
    finally:
        conn.close()


async def log_case(path: Path, case: Case, window: tuple[float, float]) -> tuple[float, float]:
    conn = make_sqlite(path, case)
    conn.execute("CREATE TABLE cursors (destination TEXT PRIMARY KEY, position INTEGER)")
    conn.execute("INSERT INTO cursors VALUES ('r', 0)")
    plant = Plant()
    cursor_at = time.monotonic()
    encode = case.encode
    assert encode is not None
    # Blocking file calls are what is measured; nothing else runs on this loop.
    with open(path.with_suffix(".log"), "ab") as log:  # noqa: ASYNC230

        async def one_round(samples: list[tuple[int, float, float]]) -> int:
            nonlocal cursor_at
            block = encode(plant, samples)
            log.write(struct.pack("<I", len(block)) + block)
            log.flush()
            if case.synchronous == "full":
                os.fsync(log.fileno())
            if time.monotonic() - cursor_at >= 1.0:  # delivered: the cursor, once a second
                conn.execute(
                    "UPDATE cursors SET position = ? WHERE destination = 'r'", (log.tell(),)
                )
                cursor_at = time.monotonic()
            return len(block)

        try:
            return await paced(plant, case.commits, window, one_round)
        finally:
            conn.close()


LAYOUTS = {"rows": rows_case, "sqlite": sqlite_case, "log": log_case}


async def run_all(
    window: float, only: list[int] | None, where: str | None, warmup: float = WARMUP
) -> list[Row]:
    if written_bytes() is None:
        raise SystemExit("this kernel does not count the bytes a process writes (/proc/self/io)")
    rows = []
    with tempfile.TemporaryDirectory(dir=where) as name:
        for n, case in enumerate(CASES, 1):
            if only and n not in only:
                continue
            per_sample, block = await LAYOUTS[case.layout](
                Path(name) / f"case{n}.db", case, (warmup, window)
            )
            daily = per_sample * RATE * 86400 / GB
            label = f"{n}. {case.label}"
            rows.append(row(SCENARIO, f"{label}: bytes written per sample", per_sample, "B"))
            rows.append(
                row(
                    SCENARIO,
                    f"{label}: a day at {RATE:,} samples/s",
                    daily,
                    "GB/day",
                    target="<= 2 GB/day",
                    met=daily <= 2,
                )
            )
            if block:
                rows.append(row(SCENARIO, f"{label}: the block itself, per sample", block, "B"))
            print(f"{label}: {per_sample:.1f} B per sample, {daily:.2f} GB/day", flush=True)
    return rows


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--only", type=int, nargs="+", help="case numbers (1-based)")
    cli.add_argument("--dir", default=None, help="where the files go (a disk, not tmpfs)")
    args = cli.parse_args()
    window = QUICK_WINDOW if args.quick else WINDOW
    finish(asyncio.run(run_all(window, args.only, args.dir)), args.json)


if __name__ == "__main__":
    main()
