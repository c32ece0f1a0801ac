"""The YAML schema of a machine's rules: state, counters, alarms, samples."""

from __future__ import annotations

import enum
from typing import Self

from pydantic import Field, model_validator

from agent.common.model import StrictModel
from agent.common.units import Duration


class MachineStateValue(enum.StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    DOWN = "down"
    STOPPED = "stopped"


class StateRuleConfig(StrictModel):
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


class CountKind(enum.StrEnum):
    GOOD = "good"
    SCRAP = "scrap"


class CounterMode(enum.StrEnum):
    COUNTER = "counter"  # a PLC counter register that increases
    EDGE = "edge"  # a part-done bit: each rising edge is one part


class CounterRuleConfig(StrictModel):
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


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlarmRuleConfig(StrictModel):
    """An alarm from a value crossing a limit (with hysteresis) or from an alarm bit."""

    name: str = Field(description="Alarm name, unique within the machine.")
    signal: str = Field(description="Signal watched.")
    high: float | None = Field(default=None, description="Active above this value.")
    low: float | None = Field(default=None, description="Active below this value.")
    hysteresis: float = Field(
        default=0.0, ge=0, description="How far back past the limit the value must go to clear."
    )
    severity: Severity = Field(default=Severity.WARNING, description="info | warning | critical.")

    @property
    def is_bit(self) -> bool:
        return self.high is None and self.low is None


class SampleRuleConfig(StrictModel):
    """A process value reported on change beyond a deadband and/or every interval."""

    signal: str = Field(description="Signal reported.")
    deadband: float | None = Field(
        default=None, ge=0, description="Report when the value moves more than this."
    )
    interval: Duration | None = Field(
        default=None, gt=0, description="Report at least this often, changed or not."
    )
    unit: str | None = Field(default=None, description="Unit; default: the signal's unit.")

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> Self:
        if self.deadband is None and self.interval is None:
            raise ValueError("a sample rule needs deadband, interval, or both")
        return self
