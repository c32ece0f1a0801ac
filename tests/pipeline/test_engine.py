"""The rule engine against a real SQLite buffer: links between state events across a
restart, a graceful stop that commits everything once, log lines said once, and an
event the buffer cannot store that must not stall the engine."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config.models import FloorgateConfig
from agent.pipeline.engine import RuleEngine
from agent.rules.base import Draft, Rule
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
from drivers.base import Quality, Sample


def _config(tmp_path: Path) -> FloorgateConfig:
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
                        {"name": "m1.good", "address": 1},
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
                    "counters": [{"signal": "m1.good", "kind": "good", "report_every": "1h"}],
                }
            ],
            "destinations": [{"name": "mw", "type": "http", "url": "http://127.0.0.1:9/e"}],
        }
    )


def _batch(state: int, good: int) -> list[Sample]:
    now = datetime.now(UTC)
    return [
        Sample("m1.state", state, Quality.GOOD, now),
        Sample("m1.good", good, Quality.GOOD, now),
    ]


async def _events(buffer: SqliteBuffer) -> list[dict[str, Any]]:
    claimed = await buffer.claim("mw", 1000)
    return [json.loads(event.payload) for event in claimed]


async def _run(engine: RuleEngine, batches: list[list[Sample]]) -> None:
    task = asyncio.create_task(engine.run())
    for batch in batches:
        await engine.sink(batch)
    engine.request_stop()
    await asyncio.wait_for(task, 10)
    await engine.stop()


async def test_state_events_link_to_the_event_that_opened_the_state_across_restarts(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    path = tmp_path / "buffer.db"
    buffer = await SqliteBuffer.open(path)
    engine = RuleEngine(config, buffer)
    await engine.restore()
    await _run(engine, [_batch(1, 100), _batch(3, 105)])
    await buffer.close()

    buffer = await SqliteBuffer.open(path)  # a restart
    engine = RuleEngine(config, buffer)
    await engine.restore()
    await _run(engine, [_batch(1, 110)])
    states = [e for e in await _events(buffer) if e["type"] == "machine.state"]
    counts = [e for e in await _events(buffer) if e["type"] == "production.count"]
    await buffer.close()

    assert [e["data"]["state"] for e in states] == ["running", "down", "running"]
    assert "previous_event_id" not in states[0]["data"]
    assert states[1]["data"]["previous_event_id"] == states[0]["id"]
    assert states[2]["data"]["previous_event_id"] == states[1]["id"]
    # Each clean stop reports the partial window: 5 parts, then 5 more after the restart.
    assert [e["data"]["quantity"] for e in counts] == [5, 5]


async def test_a_graceful_stop_commits_every_queued_batch_exactly_once(tmp_path: Path) -> None:
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
    engine = RuleEngine(_config(tmp_path), buffer)
    await engine.restore()
    await _run(engine, [_batch(1, 1000 + n) for n in range(200)])
    events = await _events(buffer)
    await buffer.close()
    counts = [e["data"]["quantity"] for e in events if e["type"] == "production.count"]
    assert counts == [199]
    assert len({e["id"] for e in events}) == len(events)


async def test_an_unmapped_state_code_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
    engine = RuleEngine(_config(tmp_path), buffer)
    await engine.restore()
    with caplog.at_level(logging.WARNING, logger="floorgate.engine"):
        await _run(engine, [_batch(1, 1), _batch(7, 1), _batch(7, 1), _batch(9, 1)])
    await buffer.close()
    unmapped = [
        r.getMessage() for r in caplog.records if "not in the machine's map" in r.getMessage()
    ]
    assert len(unmapped) == 2
    assert "code=7" in unmapped[0] and "code=9" in unmapped[1]


@pytest.mark.slow
async def test_an_event_that_cannot_be_stored_is_dropped_counted_and_the_engine_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One poison event in a round: before, its commit failed at every retry, the engine
    held the whole round in memory and took no sample again (drivers then block on the
    queue). Now it alone is left out, counted and logged; the rest commits."""
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
    committed = asyncio.Event()
    engine = RuleEngine(_config(tmp_path), buffer, on_commit=committed.set)
    await engine.restore()
    poisoned: list[str] = []
    to_row = engine._to_row

    def poison_the_down_state(rule: Rule, draft: Draft) -> EventRow | None:
        row = to_row(rule, draft)
        if row is not None and not poisoned and b'"state":"down"' in row.payload:
            poisoned.append(row.id)
            # A key that is not valid UTF-8 (a lone surrogate): SQLite never takes it.
            return row._replace(key="m1\udc80")
        return row

    monkeypatch.setattr(engine, "_to_row", poison_the_down_state)
    task = asyncio.create_task(engine.run())
    try:
        with caplog.at_level(logging.ERROR, logger="floorgate.buffer"):
            for batch in (_batch(1, 100), _batch(3, 101), _batch(1, 102)):
                await engine.sink(batch)
            async with asyncio.timeout(10):  # before: never (the round was held forever)
                while len(await _events(buffer)) < 2:
                    await committed.wait()
                    committed.clear()
            assert poisoned and engine.health.commit_failing_since is None
            assert engine.health.pending_events == 0 and not engine._rows
            await engine.sink(_batch(3, 103))  # the engine still takes samples
            async with asyncio.timeout(10):
                while len(await _events(buffer)) < 3:
                    await committed.wait()
                    committed.clear()
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 10)
    await engine.stop()
    events = await _events(buffer)
    stats = await buffer.stats()
    await buffer.close()

    states = [e for e in events if e["type"] == "machine.state"]
    assert [e["data"]["state"] for e in states] == ["running", "running", "down"]
    assert poisoned[0] not in {e["id"] for e in events}
    assert [e["data"]["quantity"] for e in events if e["type"] == "production.count"] == [3]
    assert engine.health.dropped_rejected == 1
    assert stats.dropped == {("rejected", "machine.state"): 1}
    [logged] = [r.getMessage() for r in caplog.records if "cannot be stored" in r.getMessage()]
    assert f"id={poisoned[0]}" in logged and "type=machine.state" in logged
