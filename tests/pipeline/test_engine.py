"""The rule engine against a real SQLite buffer: links between state events across a
restart, a graceful stop that commits everything once, and log lines said once."""

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
    buffer = await SqliteBuffer.open(path, commit_window=0)
    engine = RuleEngine(config, buffer)
    await engine.restore()
    await _run(engine, [_batch(1, 100), _batch(3, 105)])
    await buffer.close()

    buffer = await SqliteBuffer.open(path, commit_window=0)  # a restart
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
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db", commit_window=0)
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
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db", commit_window=0)
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
