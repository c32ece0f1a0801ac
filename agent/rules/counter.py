"""Good or scrap parts (``production.count``) from a PLC counter or a part-done bit.

Counting (mode ``counter``): each reading adds ``value - last``. A decrease is a wrap
when ``rollover`` is known and the parts through the wrap (``rollover - last + value``)
are at most ``max_delta`` (default: half the rollover); otherwise it is a counter reset
and the value itself is the parts counted since the reset. Mode ``edge``: each
False -> True transition of a part-done bit is one part.

Windows: parts are reported when ``report_every`` has elapsed since the window start
(checked on each reading and on each tick) or ``report_parts`` are counted. A window
starts at the previous report (or at the baseline) and ends at the report, so windows
are contiguous and integrators can sum them. A window with no parts emits nothing and
is *not* closed: it stretches until the first part arrives and is then reported
(at once, since ``report_every`` has usually elapsed by then). Idle machines therefore
cost neither events nor snapshot writes, and no time is ever left uncovered.

Persistence, designed for a crash at any moment (the engine stores ``snapshot()`` in
the transaction that stores the emitted events, and a crash loses everything since):

- ``counter`` mode persists the raw counter value *as of the last report* and the
  window start, never the pending parts. After a crash, the first reading's delta from
  that value is exactly the unreported parts: nothing lost, nothing counted twice. The
  very first value ever seen is a baseline and is persisted at once (dirty), otherwise
  a crash before the first report would lose the parts counted meanwhile.
- A reset is reported at once (``reset_detected``): once the counter restarts from
  zero, the pre-reset value is no longer a valid base for the delta after a crash.
- With a rollover, a report is also forced when the pending parts reach half of
  ``max_delta``, so the span a crash makes the rule re-read can never be mistaken for
  a reset. (A restart after downtime in which the counter moved more than ``max_delta``
  is ambiguous whatever we do.)
- ``edge`` mode persists the bit as of the last report and the window start, and the bit
  low again once it falls with nothing pending (one state write per part). Edges are
  not recoverable from a later reading, so a crash loses the parts of the open window;
  use ``report_parts: 1`` where that matters. A part whose report a crash took is
  counted again after the restart when the bit is still high then (it was persisted
  low before that part's edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from agent.config.common import EventType
from agent.config.models import MachineConfig
from agent.config.rules import CounterMode, CounterRuleConfig
from agent.pipeline.events import ProductionCountData
from agent.rules.base import Draft
from drivers.base import Quality, Sample, Value
from drivers.codecs import DataType

ROLLOVER_FOR_TYPE: dict[DataType, int] = {
    DataType.UINT16: 2**16,
    DataType.UINT32: 2**32,
    DataType.UINT64: 2**64,
}
"""Where an unsigned PLC counter wraps; signed and float counters have no known wrap."""


def _as_count(value: Value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_bit(value: Value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return None


class CounterRule:
    """Counts parts from one signal and reports them in contiguous windows."""

    def __init__(
        self, machine: str, config: CounterRuleConfig, default_rollover: int | None = None
    ) -> None:
        self.machine = machine
        self.config = config
        self.key = f"{machine}/counter/{config.signal}"
        self.signals = frozenset({config.signal})
        self.dirty = False
        self.ticks = True  # count windows close on time
        self.rollover = config.rollover if config.rollover is not None else default_rollover
        self.max_delta: int | None = config.max_delta
        if self.max_delta is None and self.rollover is not None:
            self.max_delta = self.rollover // 2
        # Report early so that the unreported span stays unambiguous across a crash.
        self._safety_parts: int | None = None
        if config.mode is CounterMode.COUNTER and self.max_delta is not None and self.rollover:
            self._safety_parts = max(1, self.max_delta // 2)
        self._last: int | bool | None = None  # last good raw value (int counter, bool bit)
        self._reported: int | bool | None = None  # raw value as of the last report (persisted)
        self._window_start: datetime | None = None
        self._pending = 0
        self._reset = False

    @classmethod
    def from_config(
        cls,
        machine: MachineConfig,
        config: CounterRuleConfig,
        signal_types: Mapping[str, DataType | None],
        signal_units: Mapping[str, str | None],
    ) -> Self:
        data_type = signal_types.get(config.signal)
        rollover = ROLLOVER_FOR_TYPE.get(data_type) if data_type is not None else None
        return cls(machine.name, config, default_rollover=rollover)

    @property
    def pending(self) -> int:
        """Parts counted but not yet reported."""
        return self._pending

    def on_samples(self, samples: Mapping[str, Sample], now: datetime) -> list[Draft]:
        sample = samples.get(self.config.signal)
        if sample is None:
            return []
        time = sample.source_time
        if sample.quality is Quality.BAD or sample.value is None:
            return self._report_if_due(time)
        if self.config.mode is CounterMode.EDGE:
            bit = _as_bit(sample.value)
            if bit is not None:
                self._take_bit(bit, time)
            return self._report_if_due(time)
        count = _as_count(sample.value)
        if count is None:
            return self._report_if_due(time)
        if self._take_count(count, time):
            return self._report(time)  # a reset: report at once, re-basing the snapshot
        return self._report_if_due(time)

    def on_tick(self, now: datetime) -> list[Draft]:
        return self._report_if_due(now)

    def flush(self, now: datetime) -> list[Draft]:
        return self._report(now)

    def snapshot(self) -> dict[str, Any]:
        self.dirty = False
        if self._reported is None or self._window_start is None:
            return {}
        name = "bit" if self.config.mode is CounterMode.EDGE else "value"
        return {name: self._reported, "window_start": self._window_start.isoformat()}

    def restore(self, state: Mapping[str, Any]) -> None:
        name = "bit" if self.config.mode is CounterMode.EDGE else "value"
        if name not in state or "window_start" not in state:
            return  # nothing usable (or the mode changed): the next reading is a baseline
        value = state[name]
        self._reported = bool(value) if self.config.mode is CounterMode.EDGE else int(value)
        self._last = self._reported
        self._window_start = datetime.fromisoformat(state["window_start"])
        self._pending = 0
        self._reset = False

    # -- internals -------------------------------------------------------------------

    def _baseline(self, value: int | bool, time: datetime) -> None:
        self._last = self._reported = value
        self._window_start = time
        self.dirty = True

    def _take_bit(self, bit: bool, time: datetime) -> None:
        if self._last is None:
            self._baseline(bit, time)
            return
        if bit and not self._last:
            self._pending += 1
        elif self._last and not bit and self._pending == 0:
            # The bit fell with every part reported: persist it low. Left at its value as
            # of the last report (high: a report follows a rising edge), a crash before
            # the next part's report was committed would restore it high, and the next
            # reading (the new part, still high) would not be an edge: a part lost.
            self._reported = False
            self.dirty = True
        self._last = bit

    def _take_count(self, value: int, time: datetime) -> bool:
        """Add the parts since the last reading; True when the counter was reset."""
        last = self._last
        if last is None:
            self._baseline(value, time)
            return False
        self._last = value
        if value >= last:
            self._pending += value - last
            return False
        if self.rollover is not None and self.max_delta is not None:
            wrapped = self.rollover - int(last) + value
            if wrapped <= self.max_delta:
                self._pending += wrapped
                return False
        self._pending += max(0, value)
        self._reset = True
        return True

    def _report_if_due(self, time: datetime) -> list[Draft]:
        if self._pending == 0 or self._window_start is None:
            return []
        elapsed = (time - self._window_start).total_seconds()
        parts = self.config.report_parts
        if (
            elapsed >= self.config.report_every
            or (parts is not None and self._pending >= parts)
            or (self._safety_parts is not None and self._pending >= self._safety_parts)
        ):
            return self._report(time)
        return []

    def _report(self, time: datetime) -> list[Draft]:
        if self._last is None or self._window_start is None:
            return []
        if self._pending == 0:
            if self._reset:  # reset to zero with nothing pending: re-base silently
                self._reported = self._last
                self.dirty = True
            return []
        end = max(time, self._window_start)  # never a negative window, whatever the clocks
        data = ProductionCountData(
            machine=self.machine,
            signal=self.config.signal,
            kind=self.config.kind,
            quantity=self._pending,
            window_start=self._window_start,
            window_end=end,
            counter_value=None if isinstance(self._last, bool) else self._last,
            reset_detected=self._reset,
        )
        self._reported = self._last
        self._window_start = end
        self._pending = 0
        self._reset = False
        self.dirty = True
        return [Draft(type=EventType.PRODUCTION_COUNT, time=end, data=data)]
