"""Machine state from a state-code signal, with an optional reason code (``machine.state``).

An interval is identified by ``(state, reason)``: a reason change while the machine is
down starts a new interval. A new interval is committed only after it was seen for
``min_duration`` without interruption (against flapping); its start is the source time
at which it was first seen. The very first observation ever (nothing restored) is
committed at once, with no previous interval: there is nothing to debounce against.
An unmapped state code is ignored and kept in ``unmapped_codes`` for the engine to log.

Debounce is measured on source time between readings. A signal reported only on change
(an OPC UA subscription) sends no further reading while the state holds, so ``on_tick``
also commits a pending interval once ``now`` is ``min_duration`` past its first sighting.

Persisted: the committed interval (state, reason, reason code, since). A pending
(not yet committed) interval is not persisted: after a crash it is simply seen again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from agent.config.common import EventType
from agent.config.models import MachineConfig
from agent.config.rules import MachineStateValue, StateRuleConfig
from agent.pipeline.events import MachineStateData
from agent.rules.base import Draft
from drivers.base import Quality, Sample, Value
from drivers.codecs import DataType


@dataclass(frozen=True, slots=True)
class _Interval:
    state: MachineStateValue
    reason: str | None
    reason_code: int | None
    since: datetime

    def same_as(self, other: _Interval) -> bool:
        return (self.state, self.reason) == (other.state, other.reason)


def as_code(value: Value) -> int | None:
    """An integral reading as an int code; None for anything else."""
    if isinstance(value, int):  # bool included: a bit as code 0 / 1
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


class StateRule:
    """Commits machine state intervals and emits ``machine.state`` on each change."""

    def __init__(self, machine: str, config: StateRuleConfig) -> None:
        self.machine = machine
        self.config = config
        self.key = f"{machine}/state"
        signals = {config.signal}
        if config.reason_signal is not None:
            signals.add(config.reason_signal)
        self.signals = frozenset(signals)
        self.dirty = False
        self.ticks = True  # a pending state is committed once it lasted min_duration
        self.unmapped_codes: set[int | float | str] = set()
        """State codes seen that ``map`` does not know (the engine logs each once)."""
        self._committed: _Interval | None = None
        self._pending: _Interval | None = None
        self._state_code: int | None = None  # last good, mapped state code
        self._reason_code: int | None = None  # last good reason code

    @classmethod
    def from_config(
        cls,
        machine: MachineConfig,
        config: StateRuleConfig,
        signal_types: Mapping[str, DataType | None],
        signal_units: Mapping[str, str | None],
    ) -> Self:
        return cls(machine.name, config)

    @property
    def current(self) -> tuple[MachineStateValue, str | None, datetime] | None:
        """The committed state, its reason and since when; None before the first."""
        committed = self._committed
        return None if committed is None else (committed.state, committed.reason, committed.since)

    def on_samples(self, samples: Mapping[str, Sample], now: datetime) -> list[Draft]:
        times: list[datetime] = []
        state_sample = samples.get(self.config.signal)
        if (
            state_sample is not None
            and state_sample.quality is not Quality.BAD
            and self._take_state(state_sample.value)
        ):
            times.append(state_sample.source_time)
        reason_signal = self.config.reason_signal
        reason_sample = samples.get(reason_signal) if reason_signal is not None else None
        if reason_sample is not None and reason_sample.quality is not Quality.BAD:
            code = as_code(reason_sample.value)
            if code is not None:
                self._reason_code = code
                times.append(reason_sample.source_time)
        if not times or self._state_code is None:
            return []
        return self._observe(self._interval_at(max(times)))

    def on_tick(self, now: datetime) -> list[Draft]:
        pending = self._pending
        if pending is None or (now - pending.since).total_seconds() < self.config.min_duration:
            return []
        return self._commit(pending)

    def flush(self, now: datetime) -> list[Draft]:
        # A pending interval has not lasted min_duration: it is not a state yet.
        return []

    def snapshot(self) -> dict[str, Any]:
        self.dirty = False
        current = self._committed
        if current is None:
            return {}
        return {
            "state": current.state.value,
            "reason": current.reason,
            "reason_code": current.reason_code,
            "since": current.since.isoformat(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self._committed = _Interval(
            state=MachineStateValue(state["state"]),
            reason=state.get("reason"),
            reason_code=state.get("reason_code"),
            since=datetime.fromisoformat(state["since"]),
        )
        self._pending = None

    # -- internals -------------------------------------------------------------------

    def _take_state(self, value: Value) -> bool:
        code = as_code(value)
        if code is None or code not in self.config.map:
            if value is not None:
                self.unmapped_codes.add(value if code is None else code)
            return False
        self._state_code = code
        return True

    def _interval_at(self, time: datetime) -> _Interval:
        assert self._state_code is not None
        state = self.config.map[self._state_code]
        code = self._reason_code
        if state is MachineStateValue.RUNNING or code is None:
            return _Interval(state, None, None, time)
        return _Interval(state, self.config.reasons.get(code, f"code_{code}"), code, time)

    def _observe(self, seen: _Interval) -> list[Draft]:
        committed = self._committed
        if committed is None:
            return self._commit(seen)  # the very first observation: nothing to debounce
        if seen.same_as(committed):
            self._pending = None  # a flap that did not last: forgotten
            return []
        if self._pending is None or not seen.same_as(self._pending):
            self._pending = seen
        held = (seen.since - self._pending.since).total_seconds()
        if held >= self.config.min_duration:
            return self._commit(self._pending)
        return []

    def _commit(self, new: _Interval) -> list[Draft]:
        previous = self._committed
        self._committed = new
        self._pending = None
        self.dirty = True
        duration = None
        if previous is not None:
            duration = max(0.0, (new.since - previous.since).total_seconds())
        data = MachineStateData(
            machine=self.machine,
            state=new.state,
            reason=new.reason,
            reason_code=new.reason_code,
            since=new.since,
            previous_state=previous.state if previous else None,
            previous_reason=previous.reason if previous else None,
            previous_since=previous.since if previous else None,
            previous_duration_s=duration,
        )
        return [Draft(type=EventType.MACHINE_STATE, time=new.since, data=data)]
