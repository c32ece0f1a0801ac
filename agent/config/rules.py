"""The YAML schema of a machine's rules: state, counters, alarms, samples.

Each rule's config describes itself: the event type it makes (``EVENT_TYPE``), the
signals it reads and the data types it accepts (``signal_refs``, checked by
agent.config.xref) and its line in `floorgate check-config` (``describe``). Nothing
else switches on the kind of a rule."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Self

from pydantic import Field, model_validator

from agent.common.model import StrictModel
from agent.common.units import Duration, format_duration
from agent.config.common import EventType
from drivers.codecs import INTEGER_TYPES, DataType


@dataclass(frozen=True)
class SignalRef:
    """A signal a rule reads: the key naming it, and what the signal must be."""

    key: str  # the rule's key holding the signal name ("signal", "reason_signal")
    name: str
    accepts: frozenset[DataType] | None = None  # None: any data type
    needs: str = ""  # says what is expected, e.g. "a counter needs an integer signal"


class RuleConfig(StrictModel):
    """What every rule's config offers."""

    EVENT_TYPE: ClassVar[EventType]

    def signal_refs(self) -> Iterator[SignalRef]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for `floorgate check-config`: what is made from which signal."""
        raise NotImplementedError


INTEGER_SIGNAL = frozenset(INTEGER_TYPES)
INTEGER = "must be an integer signal"


RulePlace = tuple[str | int, ...]


def rule_entries_of(model: StrictModel) -> Iterator[tuple[RulePlace, RuleConfig]]:
    """Every rule of a machine (or a machine template) with its place under it, e.g.
    ("counters", 0), in section order then config order. A section is one rule, a list
    of them, or None; other fields are skipped."""
    for section in type(model).model_fields:
        entries = getattr(model, section)
        if isinstance(entries, RuleConfig):
            yield (section,), entries
        elif isinstance(entries, list):
            for index, entry in enumerate(entries):
                if isinstance(entry, RuleConfig):
                    yield (section, index), entry


class MachineStateValue(enum.StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    DOWN = "down"
    STOPPED = "stopped"


class StateRuleConfig(RuleConfig):
    """Machine state from a state-code signal, with an optional reason code."""

    signal: str = Field(description="Signal holding the machine's state code.")
    map: dict[int, MachineStateValue] = Field(
        min_length=1,
        description="State code -> running | idle | down | stopped. Unmapped codes are "
        "logged once and ignored.",
    )
    reason_signal: str | None = Field(
        default=None, description="Signal holding the reason code while not running."
    )
    reasons: dict[int, str] = Field(
        default_factory=dict,
        description="Reason code -> loss reason name (e.g. 'material_shortage'). An unmapped "
        "code is reported as 'code_<n>'.",
    )
    min_duration: Duration = Field(
        default=0.0,
        ge=0,
        description="A new state must last this long before it counts (against flapping).",
    )

    EVENT_TYPE: ClassVar[EventType] = EventType.MACHINE_STATE

    def signal_refs(self) -> Iterator[SignalRef]:
        yield SignalRef(
            "signal", self.signal, INTEGER_SIGNAL, "a state code must be an integer signal"
        )
        if self.reason_signal:
            yield SignalRef(
                "reason_signal",
                self.reason_signal,
                INTEGER_SIGNAL,
                "a reason code must be an integer signal",
            )

    def describe(self) -> str:
        reason = f", reason from {self.reason_signal}" if self.reason_signal else ""
        return f"state      <- {self.signal}{reason}"


class CountKind(enum.StrEnum):
    GOOD = "good"
    SCRAP = "scrap"


class CounterMode(enum.StrEnum):
    COUNTER = "counter"  # a PLC counter register that increases
    EDGE = "edge"  # a part-done bit: each rising edge is one part


class CounterRuleConfig(RuleConfig):
    """Good or scrap parts from a PLC counter or a part-done bit."""

    signal: str = Field(description="Counter register or part-done bit.")
    kind: CountKind = Field(default=CountKind.GOOD, description="good | scrap.")
    mode: CounterMode = Field(default=CounterMode.COUNTER, description="counter | edge.")
    report_every: Duration = Field(
        default=10.0, gt=0, description="Report the parts counted at least this often."
    )
    report_parts: int | None = Field(
        default=None, ge=1, description="Also report as soon as this many parts are counted."
    )
    rollover: int | None = Field(
        default=None,
        ge=2,
        description="Value at which the PLC counter wraps to 0 (65536 for a 16-bit counter). "
        "Default: from the signal's data type when it is an unsigned integer.",
    )
    max_delta: int | None = Field(
        default=None,
        ge=1,
        description="A decrease that would mean more parts than this through a wrap is taken "
        "as a counter reset instead. Default: half the rollover.",
    )

    EVENT_TYPE: ClassVar[EventType] = EventType.PRODUCTION_COUNT

    def signal_refs(self) -> Iterator[SignalRef]:
        if self.mode is CounterMode.EDGE:
            yield SignalRef(
                "signal",
                self.signal,
                frozenset({DataType.BOOL}),
                "mode edge counts rising edges of a bool signal",
            )
        else:
            yield SignalRef(
                "signal", self.signal, INTEGER_SIGNAL, "a counter needs an integer signal"
            )

    def describe(self) -> str:
        how = "rising edges of" if self.mode is CounterMode.EDGE else "counter"
        return (
            f"{self.kind.value:<10} <- {how} {self.signal}, reported every "
            f"{format_duration(self.report_every)}"
        )


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlarmRuleConfig(RuleConfig):
    """An alarm from a value crossing a limit (with hysteresis) or from an alarm bit."""

    name: str = Field(description="Alarm name, unique within the machine.")
    signal: str = Field(description="Signal watched.")
    high: float | None = Field(default=None, description="Active above this value.")
    low: float | None = Field(default=None, description="Active below this value.")
    hysteresis: float = Field(
        default=0.0, ge=0, description="How far back past the limit the value must go to clear."
    )
    severity: Severity = Field(default=Severity.WARNING, description="info | warning | critical.")

    EVENT_TYPE: ClassVar[EventType] = EventType.ALARM

    @property
    def is_bit(self) -> bool:
        return self.high is None and self.low is None

    def signal_refs(self) -> Iterator[SignalRef]:
        yield SignalRef("signal", self.signal)

    def describe(self) -> str:
        limits = []
        if self.high is not None:
            limits.append(f"> {self.high}")
        if self.low is not None:
            limits.append(f"< {self.low}")
        return (
            f"alarm {self.name} <- {self.signal} {' or '.join(limits) or 'is true'}"
            f" ({self.severity.value})"
        )


class SampleRuleConfig(RuleConfig):
    """A process value reported on change beyond a deadband and/or every interval."""

    signal: str = Field(description="Signal reported.")
    deadband: float | None = Field(
        default=None, ge=0, description="Report when the value moves more than this."
    )
    interval: Duration | None = Field(
        default=None, gt=0, description="Report at least this often, changed or not."
    )
    unit: str | None = Field(default=None, description="Unit; default: the signal's unit.")

    EVENT_TYPE: ClassVar[EventType] = EventType.SAMPLE

    def signal_refs(self) -> Iterator[SignalRef]:
        yield SignalRef("signal", self.signal)

    def describe(self) -> str:
        triggers = []
        if self.deadband is not None:
            triggers.append(f"change > {self.deadband}")
        if self.interval is not None:
            triggers.append(f"every {format_duration(self.interval)}")
        return f"sample     <- {self.signal} on {' or '.join(triggers)}"

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> Self:
        if self.deadband is None and self.interval is None:
            raise ValueError("a sample rule needs deadband, interval, or both")
        return self
