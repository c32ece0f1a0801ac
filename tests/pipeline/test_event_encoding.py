"""The engine's fast envelope encoder writes exactly the bytes of the validated model."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agent.config.common import EventType
from agent.config.rules import CountKind, MachineStateValue, Severity
from agent.pipeline.events import (
    AlarmData,
    EnvelopeEncoder,
    Event,
    EventData,
    MachineStateData,
    ProductionCountData,
    SampleData,
    encode_event,
    format_sequence,
    uuid7,
)

WHEN = datetime(2026, 11, 23, 6, 30, 15, 123456, tzinfo=UTC)

CASES: list[tuple[EventType, EventData]] = [
    (
        EventType.MACHINE_STATE,
        MachineStateData(
            machine="press1",
            state=MachineStateValue.DOWN,
            reason="equipment_failure",
            reason_code=20,
            since=WHEN,
            previous_state=MachineStateValue.RUNNING,
            previous_since=WHEN - timedelta(minutes=5),
            previous_duration_s=300.0,
            previous_event_id=uuid7(),
        ),
    ),
    (
        EventType.MACHINE_STATE,
        MachineStateData(machine="press1", state=MachineStateValue.RUNNING, since=WHEN),
    ),
    (
        EventType.PRODUCTION_COUNT,
        ProductionCountData(
            machine="press2",
            signal="press2.good",
            kind=CountKind.GOOD,
            quantity=17,
            window_start=WHEN.replace(microsecond=0),
            window_end=WHEN,
            counter_value=2**32 - 1,
            reset_detected=True,
        ),
    ),
    (
        EventType.ALARM,
        AlarmData(
            machine="press1",
            alarm="overtemperature",
            signal="press1.temperature",
            active=True,
            value=81.25,
            limit=80.0,
            severity=Severity.CRITICAL,
        ),
    ),
    *[
        (
            EventType.SAMPLE,
            SampleData(machine="m", signal="s", value=value, unit=unit, quality="good"),
        )
        for value, unit in [
            (72.13375091552734, "°C"),
            (1e-7, None),
            (3.0, "bar"),
            (2**63, None),
            (-5, None),
            (True, None),
            ('Grüße ✓ "quoted" \\ \n', None),
            (None, None),
            (float("nan"), None),
            (float("-inf"), None),
            (2**64 + 1, None),  # beyond orjson's 64 bits: the pydantic fallback writes it
            ("\x00\x1f\x7f\u2028 controls", None),
            (-0.0, None),
        ]
    ],
]


@pytest.mark.parametrize(("event_type", "data"), CASES)
@pytest.mark.parametrize(
    "time",
    [WHEN, WHEN.replace(microsecond=0), WHEN.astimezone(timezone(timedelta(hours=2)))],
    ids=["utc", "whole-second", "other-offset"],
)
def test_fast_encoding_matches_the_validated_model(
    event_type: EventType, data: EventData, time: datetime
) -> None:
    fields: dict[str, Any] = {
        "id": uuid7(),
        "source": "/plant/stamping/line1/press1",
        "type": event_type,
        "time": time,
        "sequence": format_sequence(42),
        "agentid": "gw-1",
        "data": data,
    }
    expected = Event(**fields).to_json()
    assert encode_event(**fields) == expected
    # The engine's encoder caches heads and times: the first and a repeated call.
    encoder = EnvelopeEncoder("gw-1")
    without_agent = {k: v for k, v in fields.items() if k != "agentid"}
    assert encoder.encode(**without_agent) == expected
    assert encoder.encode(**without_agent) == expected


def test_the_encoder_follows_time_and_source_changes() -> None:
    encoder = EnvelopeEncoder('gw "quoted"')
    data = SampleData(machine="m", signal="s", value=1.5, quality="good")
    for n, (time, source) in enumerate(
        [
            (WHEN, "/s/a/l/m"),
            (WHEN, "/s/a/l/ü"),
            (WHEN + timedelta(microseconds=1), "/s/a/l/ü"),
            (WHEN.astimezone(timezone(timedelta(hours=-5))), "/s/a/l/m"),
            (WHEN.replace(microsecond=0), "/s/a/l/m"),
        ]
    ):
        fields: dict[str, Any] = {
            "id": uuid7(),
            "source": source,
            "type": EventType.SAMPLE,
            "time": time,
            "sequence": format_sequence(n),
            "data": data,
        }
        expected = Event(**fields, agentid='gw "quoted"').to_json()
        assert encoder.encode(**fields) == expected


def test_sample_values_of_every_magnitude_encode_like_the_model() -> None:
    """Float formatting is where two JSON writers could differ: a seeded sweep of random
    bit patterns (doubles and the float32 values Modbus registers decode to)."""
    rng = random.Random(20261123)
    values: list[float] = []
    for _ in range(3000):
        values.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
        values.append(struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0])
        values.append(rng.uniform(-1e6, 1e6))
    encoder = EnvelopeEncoder("gw")
    for value in values:
        fields: dict[str, Any] = {
            "id": "0195c0de-0000-7000-8000-000000000000",
            "source": "/s/a/l/m",
            "type": EventType.SAMPLE,
            "time": WHEN,
            "sequence": format_sequence(1),
            "agentid": "gw",
            "data": SampleData(machine="m", signal="s", value=value, quality="good"),
        }
        expected = Event(**fields).to_json()
        assert encode_event(**fields) == expected, value
        assert encoder.encode(**{k: v for k, v in fields.items() if k != "agentid"}) == expected


def test_a_naive_time_is_refused_like_the_model_refuses_it() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_event(
            id=uuid7(),
            source="/s/a/l/m",
            type=EventType.SAMPLE,
            time=datetime(2026, 1, 1),
            sequence=format_sequence(1),
            agentid="gw",
            data=SampleData(machine="m", signal="s", value=1, quality="good"),
        )
