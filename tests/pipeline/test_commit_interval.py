"""buffer.commit_interval: the engine hands what the rules made to the buffer at most once
per interval (fewer commits, fewer bytes written), the first events after a quiet spell at
once, and a stop commits what was waiting. Against a real SQLite buffer."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config.loader import ConfigError, load_config
from agent.config.models import FloorgateConfig
from agent.pipeline.engine import RuleEngine
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
from drivers.base import Quality, Sample
from tests.helpers import line_config, wait_until, write_config

INTERVAL = 5.0  # long enough that no stall of a loaded machine reaches it


def _config(tmp_path: Path, interval: str) -> FloorgateConfig:
    return FloorgateConfig.model_validate(
        {
            "agent": {"id": "gw", "state_dir": str(tmp_path)},
            "sources": [
                {
                    "name": "plc",
                    "type": "modbus_tcp",
                    "host": "127.0.0.1",
                    "signals": [{"name": "m1.state", "address": 0}],
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
                }
            ],
            "destinations": [{"name": "mw", "type": "http", "url": "http://127.0.0.1:9/e"}],
            "buffer": {"commit_interval": interval},
        }
    )


def _state(code: int) -> list[Sample]:
    return [Sample("m1.state", code, Quality.GOOD, datetime.now(UTC))]


async def test_events_of_one_interval_are_committed_together_and_a_stop_commits_them(
    tmp_path: Path,
) -> None:
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
    handed: list[list[str]] = []  # the states of each commit handed to the buffer
    submit = buffer.submit

    def counting_submit(rows: list[EventRow], state: dict[str, str]) -> asyncio.Future[object]:
        handed.append([json.loads(row.payload)["data"]["state"] for row in rows])
        return submit(rows, state)  # type: ignore[return-value]

    buffer.submit = counting_submit  # type: ignore[method-assign]
    engine = RuleEngine(_config(tmp_path, f"{INTERVAL:g}s"), buffer)
    await engine.restore()
    task = asyncio.create_task(engine.run())
    try:
        await engine.sink(_state(1))
        await wait_until(lambda: len(handed) == 1, 5, "the first event, at once")
        for code in (3, 1, 3):
            await engine.sink(_state(code))
            await asyncio.sleep(0.05)
        await wait_until(lambda: engine.queue.empty(), 5, "the rules took the samples")
        await asyncio.sleep(0.2)
        assert handed == [["running"]]  # the three changes wait for the interval
        engine.request_stop()
        await asyncio.wait_for(task, 10)
        await engine.stop()
        assert handed == [["running"], ["down", "running", "down"]]
        stored = [json.loads(e.payload)["data"]["state"] for e in await buffer.claim("mw", 10)]
        assert stored == ["running", "down", "running", "down"]
    finally:
        if not task.done():
            task.cancel()
        await buffer.close()


async def test_after_the_interval_what_waited_is_committed_without_a_stop(tmp_path: Path) -> None:
    buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
    submitted: list[int] = []  # events per commit handed to the buffer
    submit = buffer.submit

    def counting_submit(rows: list[EventRow], state: dict[str, str]) -> asyncio.Future[object]:
        submitted.append(len(rows))
        return submit(rows, state)  # type: ignore[return-value]

    buffer.submit = counting_submit  # type: ignore[method-assign]
    engine = RuleEngine(_config(tmp_path, "1s"), buffer)
    await engine.restore()
    task = asyncio.create_task(engine.run())
    try:
        for code in (1, 3, 1):
            await engine.sink(_state(code))
            await asyncio.sleep(0.05)
        # Committed by the engine's own clock, about a second after the first one.
        await wait_until(lambda: sum(submitted) == 3, 10, "the events that waited")
        assert submitted == [1, 2]
        claimed = await buffer.claim("mw", 10)
        assert [json.loads(e.payload)["data"]["state"] for e in claimed] == [
            "running",
            "down",
            "running",
        ]
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 10)
        await engine.stop()
        await buffer.close()


def test_commit_interval_is_a_duration_of_at_most_10s(tmp_path: Path) -> None:
    raw = line_config(tmp_path / "state", 5020, "http://127.0.0.1:9/events", 0)
    assert (
        load_config(write_config(tmp_path / "d.yaml", raw), environ={}).buffer.commit_interval == 2
    )
    raw["buffer"] = {"commit_interval": "0s"}
    assert (
        load_config(write_config(tmp_path / "ok.yaml", raw), environ={}).buffer.commit_interval == 0
    )
    for wrong, expected in (("20s", "10"), ("-1s", "0"), ("soon", "duration")):
        raw["buffer"] = {"commit_interval": wrong}
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path / "bad.yaml", raw), environ={})
        message = str(caught.value)
        assert "buffer.commit_interval" in message and expected in message, message
