"""Alarms (``alarm``) from a value crossing a limit, with hysteresis, or from an alarm bit.

Limits: active when the value goes above ``high`` (or below ``low``); cleared when it
comes back below ``high - hysteresis`` (above ``low + hysteresis``). With both limits
set, the event names the limit that was crossed. A bit alarm (no limits) is active
while the bit is true. An event is emitted on activation and on clearing.

Persisted: whether the alarm is active and which limit it crossed, so that an alarm
raised before a restart is cleared (not raised again) after it. A first observation
with a normal value emits nothing; one already in alarm emits ``active``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Self

from agent.config.common import EventType
from agent.config.models import MachineConfig
from agent.config.rules import AlarmRuleConfig
from agent.pipeline.events import AlarmData
from agent.rules.base import Draft
from drivers.base import Quality, Sample, Value
from drivers.codecs import DataType

Limit = Literal["high", "low", "bit"]


def _as_float(value: Value) -> float | None:
    if isinstance(value, int | float):  # a bool reads as 0 / 1
        return float(value)
    return None


def _as_bit(value: Value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return None


class AlarmRule:
    """One alarm on one signal."""

    def __init__(self, machine: str, config: AlarmRuleConfig) -> None:
        self.machine = machine
        self.config = config
        self.key = f"{machine}/alarm/{config.name}"
        self.signals = frozenset({config.signal})
        self.dirty = False
        self.ticks = False  # judged on samples only
        self._active: Limit | None = None  # None: not active

    @classmethod
    def from_config(
        cls,
        machine: MachineConfig,
        config: AlarmRuleConfig,
        signal_types: Mapping[str, DataType | None],
        signal_units: Mapping[str, str | None],
    ) -> Self:
        return cls(machine.name, config)

    @property
    def active(self) -> bool:
        return self._active is not None

    def on_samples(self, samples: Mapping[str, Sample], now: datetime) -> list[Draft]:
        sample = samples.get(self.config.signal)
        if sample is None or sample.quality is Quality.BAD or sample.value is None:
            return []
        if self.config.is_bit:
            bit = _as_bit(sample.value)
            if bit is None:
                return []
            return self._bit(bit, sample.source_time)
        value = _as_float(sample.value)
        if value is None:
            return []
        return self._limits(value, sample.source_time)

    def on_tick(self, now: datetime) -> list[Draft]:
        return []  # never called: ticks is False

    def flush(self, now: datetime) -> list[Draft]:
        return []

    def snapshot(self) -> dict[str, Any]:
        self.dirty = False
        return {"active": self._active is not None, "limit": self._active}

    def restore(self, state: Mapping[str, Any]) -> None:
        limit = state.get("limit")
        if state.get("active") and limit in ("high", "low", "bit"):
            self._active = limit
        else:
            self._active = None

    # -- internals -------------------------------------------------------------------

    def _bit(self, bit: bool, time: datetime) -> list[Draft]:
        if bit == self.active:
            return []
        return self._set("bit", bit, bit, time)

    def _limits(self, value: float, time: datetime) -> list[Draft]:
        high, low, hysteresis = self.config.high, self.config.low, self.config.hysteresis
        drafts: list[Draft] = []
        if self._active == "high" and (high is None or value < high - hysteresis):
            drafts += self._set("high", False, value, time)
        elif self._active == "low" and (low is None or value > low + hysteresis):
            drafts += self._set("low", False, value, time)
        elif self._active == "bit":  # limits were added since the snapshot was taken
            drafts += self._set("bit", False, value, time)
        if self._active is None:
            if high is not None and value > high:
                drafts += self._set("high", True, value, time)
            elif low is not None and value < low:
                drafts += self._set("low", True, value, time)
        return drafts

    def _set(self, limit: Limit, active: bool, value: float | bool, time: datetime) -> list[Draft]:
        self._active = limit if active else None
        self.dirty = True
        limit_value = {"high": self.config.high, "low": self.config.low}.get(limit)
        data = AlarmData(
            machine=self.machine,
            alarm=self.config.name,
            signal=self.config.signal,
            active=active,
            value=value,
            limit=limit_value,
            severity=self.config.severity,
        )
        return [Draft(type=EventType.ALARM, time=time, data=data)]
