"""Process values (``sample``) on change beyond a deadband and/or every interval.

A reading is emitted when it is the first one, when its quality differs from the last
emitted one (good -> bad -> good; a bad reading is emitted with value None), when it
moved more than ``deadband`` from the last emitted value (any change for a value that
is not a number), or when ``interval`` has elapsed since the last emission. The
interval is also checked on each tick, re-emitting the last reading at ``now``: a value
reported only on change would otherwise go silent.

Nothing is persisted (``snapshot()`` is ``{}``, ``dirty`` stays False): a sample is an
observation, not a quantity. After a restart the first reading is emitted anyway, so a
restart costs at most one extra sample and never hides a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Self

from agent.config.common import EventType
from agent.config.models import MachineConfig
from agent.config.rules import SampleRuleConfig
from agent.pipeline.events import SampleData
from agent.rules.base import Draft
from drivers.base import Quality, Sample, Value
from drivers.codecs import DataType

_QUALITY: dict[Quality, Literal["good", "uncertain", "bad"]] = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain",
    Quality.BAD: "bad",
}


_NUMBER_TYPES = (int, float)  # exact types: drivers hand plain Python values


class SampleRule:
    """Reports one signal's value."""

    # One per sampled tag, thousands on a big line: slots keep each at ~200 bytes.
    __slots__ = (
        "_deadband",
        "_emitted",
        "_emitted_at",
        "_error",
        "_interval",
        "_reading",
        "_signal",
        "config",
        "dirty",
        "key",
        "machine",
        "signals",
        "ticks",
        "unit",
    )

    def __init__(self, machine: str, config: SampleRuleConfig, unit: str | None = None) -> None:
        self.machine = machine
        self.config = config
        self.unit = config.unit if config.unit is not None else unit
        self.key = f"{machine}/sample/{config.signal}"
        self.signals = (config.signal,)  # a 1-tuple: a third of a frozenset's size
        self._signal = config.signal
        self._interval = config.interval
        self.ticks = config.interval is not None  # on_tick only re-emits after interval
        self._deadband = config.deadband
        self.dirty = False
        self._reading: tuple[Value, Quality] | None = None  # the last reading
        self._error: str | None = None  # why the last reading is not good (the driver's words)
        self._emitted: tuple[Value, Quality] | None = None  # the last emitted reading
        self._emitted_at: datetime | None = None

    @classmethod
    def from_config(
        cls,
        machine: MachineConfig,
        config: SampleRuleConfig,
        signal_types: Mapping[str, DataType | None],
        signal_units: Mapping[str, str | None],
    ) -> Self:
        return cls(machine.name, config, unit=signal_units.get(config.signal))

    def on_samples(self, samples: Mapping[str, Sample], now: datetime) -> list[Draft]:
        sample = samples.get(self._signal)
        if sample is None:
            return []
        quality = sample.quality
        value = None if quality is Quality.BAD else sample.value
        self._reading = (value, quality)
        self._error = None if quality is Quality.GOOD else sample.error
        if self._changed(value, quality) or (
            self._interval is not None and self._due(sample.source_time)
        ):
            return self._emit(sample.source_time)
        return []

    def on_tick(self, now: datetime) -> list[Draft]:
        if self._reading is not None and self._emitted is not None and self._due(now):
            return self._emit(now)
        return []

    def flush(self, now: datetime) -> list[Draft]:
        return []

    def snapshot(self) -> dict[str, Any]:
        self.dirty = False
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        return None

    # -- internals -------------------------------------------------------------------

    def _due(self, time: datetime) -> bool:
        interval, last = self._interval, self._emitted_at
        return (
            interval is not None and last is not None and (time - last).total_seconds() >= interval
        )

    def _changed(self, value: Value, quality: Quality) -> bool:
        emitted = self._emitted
        if emitted is None:
            return True  # the first reading
        last_value, last_quality = emitted
        if quality is not last_quality:
            return True
        deadband = self._deadband
        if deadband is None:
            return False
        # Exact type checks (bool is an int subclass and must compare as a state); this
        # runs for every reading of every sample signal.
        if type(value) in _NUMBER_TYPES and type(last_value) in _NUMBER_TYPES:
            assert isinstance(value, int | float) and isinstance(last_value, int | float)
            return abs(value - last_value) > deadband
        return value != last_value

    def _emit(self, time: datetime) -> list[Draft]:
        assert self._reading is not None
        value, quality = self._reading
        self._emitted = self._reading
        self._emitted_at = time
        data = SampleData(
            machine=self.machine,
            signal=self.config.signal,
            value=value,
            unit=self.unit,
            quality=_QUALITY[quality],
            reason=self._error,
        )
        return [Draft(type=EventType.SAMPLE, time=time, data=data)]
