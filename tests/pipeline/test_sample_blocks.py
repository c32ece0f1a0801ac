"""The engine keeps each hand-over's samples as sample blocks (buffer.blocks): one row per
set of destinations, each sample sent as the same CloudEvent it always was, with ids and
sequences that stay unique across restarts. Against a real SQLite buffer."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from agent.config.models import FloorgateConfig
from agent.pipeline.engine import RuleEngine
from agent.pipeline.events import Event
from buffer import blocks
from buffer.rows import EventRow
from buffer.sqlite import BufferStoreError, SqliteBuffer
from drivers.base import Quality, Sample


def _config(tmp_path: Path, signals: int, commit_interval: str = "2s") -> FloorgateConfig:
    names = [f"m1.t{i}" for i in range(signals)]
    return FloorgateConfig.model_validate(
        {
            "agent": {"id": "gw", "state_dir": str(tmp_path)},
            "sources": [
                {
                    "name": "plc",
                    "type": "modbus_tcp",
                    "host": "127.0.0.1",
                    "signals": [
                        {"name": "m1.state", "address": 0},
                        *(
                            {
                                "name": name,
                                "address": 10 + i,
                                "data_type": "float32",
                                "unit_of_measurement": "degC" if i % 2 else None,
                            }
                            for i, name in enumerate(names)
                        ),
                    ],
                }
            ],
            "machines": [
                {
                    "name": "m1",
                    "state": {
                        "signal": "m1.state",
                        "map": {1: "running", 3: "down"},
                        "min_duration": "0s",
                    },
                    "samples": [{"signal": name, "deadband": 0} for name in names],
                }
            ],
            "destinations": [{"name": "mw", "type": "http", "url": "http://127.0.0.1:9/e"}],
            "buffer": {"commit_interval": commit_interval},
        }
    )


def _poll(signals: int, value: float, when: datetime) -> list[Sample]:
    return [Sample(f"m1.t{i}", value + i, Quality.GOOD, when) for i in range(signals)]


async def _run(engine: RuleEngine, polls: list[list[Sample]]) -> None:
    task = asyncio.create_task(engine.run())
    try:
        for poll in polls:
            await engine.sink(poll)
        while not engine.queue.empty():
            await asyncio.sleep(0.01)
    finally:
        engine.request_stop()
        await task
        await engine.stop()


async def test_samples_are_stored_in_blocks_and_sent_as_the_events_they_were(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    start = datetime(2026, 12, 2, 8, 0, 0, 250001, tzinfo=UTC)
    polls = [_poll(6, 20.0 + n, start + timedelta(seconds=n)) for n in range(5)]
    polls[2].append(Sample("m1.state", 1, Quality.GOOD, start + timedelta(seconds=2)))
    polls[3].append(Sample("m1.t0", None, Quality.BAD, start + timedelta(seconds=3), "NaN"))
    buffer = await SqliteBuffer.open(path)
    try:
        engine = RuleEngine(_config(tmp_path, 6), buffer)
        await engine.restore()
        await _run(engine, polls)
        claimed = await buffer.claim("mw", 1000)
    finally:
        await buffer.close()
    events = [orjson.loads(e.payload) for e in claimed]
    samples = [e for e in events if e["type"] == "sample"]
    good = [e for e in claimed if b'"quality":"good"' in e.payload]
    for event in good:
        Event.model_validate_json(event.payload)  # a valid CloudEvent with valid sample data
    assert [e["data"]["signal"] for e in samples[:6]] == [f"m1.t{i}" for i in range(6)]
    # Every poll's every signal (deadband 0); in the fourth poll m1.t0 is NaN.
    assert len(samples) == 6 * 5
    first = samples[0]
    assert first["time"] == "2026-12-02T08:00:00.250001Z"
    assert (first["source"], first["agentid"], first["data"]["value"]) == (
        "/site/area/line/m1",
        "gw",
        20.0,
    )
    units = {e["data"]["signal"]: e["data"].get("unit") for e in samples}
    assert units["m1.t1"] == "degC" and units["m1.t0"] is None
    (bad,) = [e for e in samples if e["data"]["quality"] == "bad"]
    assert "value" not in bad["data"] and bad["data"]["reason"]
    # Ids are unique and name their block; sequences are unique across all events.
    assert len({e["id"] for e in events}) == len(events)
    assert all(blocks.parse_sample_id(e["id"]) is not None for e in samples)
    # Sequences follow the order the events are stored and sent in.
    assert [int(e["sequence"]) for e in events] == sorted({int(e["sequence"]) for e in events})
    assert [e.seq for e in claimed] == sorted(e.seq for e in claimed)
    assert any(e["type"] == "machine.state" for e in events)
    conn = sqlite3.connect(path)
    try:
        rows, blocked = conn.execute("SELECT count(*), sum(n) FROM events").fetchone()
    finally:
        conn.close()
    assert blocked == len(samples) and rows < len(events) // 2  # far fewer rows than events


async def test_heads_survive_a_restart_and_new_signals_get_new_numbers(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    now = datetime.now(UTC)
    buffer = await SqliteBuffer.open(path)
    try:
        engine = RuleEngine(_config(tmp_path, 2), buffer)
        await engine.restore()
        await _run(engine, [_poll(2, 1.0, now)])
        before = {k: v for k, v in (await buffer.load_state()).items() if "head" in k}
        # After a restart with one more signal, the old heads are reused, not rewritten.
        engine = RuleEngine(_config(tmp_path, 3), buffer)
        await engine.restore()
        await _run(engine, [_poll(3, 5.0, now + timedelta(seconds=1))])
        after = {k: v for k, v in (await buffer.load_state()).items() if "head" in k}
        claimed = await buffer.claim("mw", 1000)
    finally:
        await buffer.close()
    # The machine's envelope, and per signal: good readings, the others.
    assert len(before) == 1 + 2 * 2 and len(after) == 1 + 3 * 2
    assert {k: after[k] for k in before} == before
    signals = [orjson.loads(e.payload)["data"]["signal"] for e in claimed]
    assert signals == ["m1.t0", "m1.t1", "m1.t0", "m1.t1", "m1.t2"]
    sequences = [orjson.loads(e.payload)["sequence"] for e in claimed]
    assert sequences == sorted(set(sequences))


async def test_after_a_failed_commit_the_held_events_go_first_in_sequence_order(
    tmp_path: Path,
) -> None:
    """The first hand-over fails (a full disk) after the next poll was taken: the held
    block and state event are stored before that poll's samples, and every sequence
    follows the order of delivery."""
    path = tmp_path / "buffer.db"
    start = datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC)
    buffer = await SqliteBuffer.open(path)
    submit = buffer.submit
    calls = 0

    def first_fails_late(rows: list[EventRow], state: dict[str, str]) -> asyncio.Future[object]:
        nonlocal calls
        calls += 1
        if calls > 1:
            return submit(rows, state)  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[object] = loop.create_future()
        loop.call_later(0.3, failed.set_exception, BufferStoreError("disk full (test)"))
        return failed

    buffer.submit = first_fails_late  # type: ignore[method-assign]
    try:
        engine = RuleEngine(_config(tmp_path, 3, "0.5s"), buffer)
        await engine.restore()
        task = asyncio.create_task(engine.run())
        try:
            first = _poll(3, 1.0, start)
            first.append(Sample("m1.state", 1, Quality.GOOD, start))
            await engine.sink(first)
            async with asyncio.timeout(10):
                while calls < 1:
                    await asyncio.sleep(0.01)
            await engine.sink(_poll(3, 2.0, start + timedelta(seconds=1)))  # while in flight
            async with asyncio.timeout(10):
                while calls < 2 or engine.health.commit_failing_since is not None:
                    await asyncio.sleep(0.01)
        finally:
            engine.request_stop()
            await task
            await engine.stop()
        claimed = await buffer.claim("mw", 1000)
    finally:
        await buffer.close()
    events = [orjson.loads(e.payload) for e in claimed]
    assert [(e["type"], e["time"]) for e in events] == [
        *[("sample", "2026-12-02T08:00:00Z")] * 3,
        ("machine.state", "2026-12-02T08:00:00Z"),
        *[("sample", "2026-12-02T08:00:01Z")] * 3,
    ]
    assert [int(e["sequence"]) for e in events] == list(range(1, 8))
