"""Shifts (agent.shifts, agent.timezone): when the current shift began, on the plant's
local calendar, daylight-saving changes included; and the parts of a machine's shift,
kept by the engine with the count events across a restart and started anew at the next
shift."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config.models import FloorgateConfig
from agent.pipeline.engine import RuleEngine
from agent.pipeline.shifts import ShiftCalendar
from buffer.sqlite import SqliteBuffer
from drivers.base import Quality, Sample

BERLIN = ZoneInfo("Europe/Berlin")
THREE = [time(6), time(14), time(22)]


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "began"),
    [
        (berlin(2026, 12, 2, 6, 0), berlin(2026, 12, 2, 6, 0)),  # at the start itself
        (berlin(2026, 12, 2, 13, 59), berlin(2026, 12, 2, 6, 0)),
        (berlin(2026, 12, 2, 14, 0), berlin(2026, 12, 2, 14, 0)),
        (berlin(2026, 12, 2, 23, 30), berlin(2026, 12, 2, 22, 0)),
        (berlin(2026, 12, 2, 5, 59), berlin(2026, 12, 1, 22, 0)),  # the night shift, begun
        (berlin(2027, 1, 1, 2, 0), berlin(2026, 12, 31, 22, 0)),  # across the year
    ],
)
def test_the_current_shift_began_at_the_latest_start_not_after_now(
    now: datetime, began: datetime
) -> None:
    calendar = ShiftCalendar(THREE, "Europe/Berlin")
    assert calendar.start_of(now) == began
    assert calendar.start_of(now.astimezone(UTC)) == began  # whatever zone it is given in


def test_across_a_daylight_saving_change_the_night_shift_is_an_hour_shorter() -> None:
    calendar = ShiftCalendar(THREE, "Europe/Berlin")
    # 29 March 2026: clocks go from 02:00 to 03:00. The night shift began 22:00 CET.
    night = calendar.start_of(berlin(2026, 3, 29, 5, 0))
    morning = calendar.start_of(berlin(2026, 3, 29, 6, 0))
    assert night == datetime(2026, 3, 28, 21, 0, tzinfo=UTC)  # 22:00 CET
    assert morning == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)  # 06:00 CEST
    assert (morning - night).total_seconds() == 7 * 3600


def test_one_shift_a_day_by_default_in_the_machines_zone() -> None:
    calendar = ShiftCalendar([time(0)])
    now = datetime.now(UTC)
    start = calendar.start_of(now)
    assert start <= now and (now - start).total_seconds() < 25 * 3600
    assert start.astimezone().time() == time(0)


def _config(tmp_path: Path) -> FloorgateConfig:
    return FloorgateConfig.model_validate(
        {
            "agent": {
                "id": "gw",
                "state_dir": str(tmp_path),
                "shifts": ["06:00", "18:00"],
                "timezone": "UTC",
            },
            "sources": [
                {
                    "name": "plc",
                    "type": "modbus_tcp",
                    "host": "127.0.0.1",
                    "signals": [
                        {"name": "m1.good", "address": 1},
                        {"name": "m1.bad", "address": 2},
                    ],
                }
            ],
            "machines": [
                {
                    "name": "m1",
                    "counters": [
                        {"signal": "m1.good", "kind": "good", "report_every": "1h"},
                        {"signal": "m1.bad", "kind": "scrap", "report_every": "1h"},
                    ],
                }
            ],
            "destinations": [{"name": "mw", "type": "http", "url": "http://127.0.0.1:9/e"}],
        }
    )


def _counts(at: datetime, good: int, bad: int) -> list[Sample]:
    return [
        Sample("m1.good", good, Quality.GOOD, at),
        Sample("m1.bad", bad, Quality.GOOD, at),
    ]


async def _shift(path: Path, config: FloorgateConfig, at: datetime, batches: list[list[Sample]]):
    """One run of the engine at ``at`` (its clock): the batches, then a clean stop that
    reports the open windows. Returns the machine's shift total after it."""
    buffer = await SqliteBuffer.open(path)
    try:
        engine = RuleEngine(config, buffer, clock=lambda: at)
        await engine.restore()
        found = engine.shift_totals.get("m1")
        restored = None if found is None else dataclasses.replace(found)  # it changes next
        task = asyncio.create_task(engine.run())
        for batch in batches:
            await engine.sink(batch)
        engine.request_stop()
        await asyncio.wait_for(task, 10)
        await engine.stop()
        return restored, engine.shift_totals["m1"]
    finally:
        await buffer.close()


async def test_a_machines_shift_parts_survive_a_restart_and_start_anew_next_shift(
    tmp_path: Path,
) -> None:
    config, path = _config(tmp_path), tmp_path / "buffer.db"
    morning = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    _, first = await _shift(
        path, config, morning, [_counts(morning, 100, 7), _counts(morning, 112, 9)]
    )
    assert (first.start, first.good, first.scrap) == (datetime(2026, 12, 2, 6, tzinfo=UTC), 12, 2)

    later = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # a restart in the same shift
    restored, second = await _shift(path, config, later, [_counts(later, 120, 9)])
    assert restored == first  # read back from the buffer, committed with the events
    assert (second.good, second.scrap) == (20, 2)

    evening = datetime(2026, 12, 2, 18, 30, tzinfo=UTC)  # the next shift
    _, third = await _shift(path, config, evening, [_counts(evening, 125, 10)])
    assert (third.start, third.good, third.scrap) == (datetime(2026, 12, 2, 18, tzinfo=UTC), 5, 1)
