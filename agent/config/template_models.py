"""The YAML schema of machine templates (``templates:``) and of the machines made from them
(a ``machines:`` item with ``template:``). agent.config.templates expands them into plain
sources' signals and machines before the root schema sees the file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.common.model import NAME_PATTERN, StrictModel
from agent.common.units import Duration
from agent.config.rules import (
    AlarmRuleConfig,
    CounterRuleConfig,
    RuleConfig,
    RulePlace,
    SampleRuleConfig,
    StateRuleConfig,
    rule_entries_of,
)
from drivers.codecs import REGISTER_COUNT, DataType, Swap

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
RANGE_PATTERN = r"^\s*(\d+)\s*-\s*(\d+)\s*$"
BIT_INPUTS = ("coil", "discrete_input")
# Names of range signals: <prefix><address>, by input_type unless the range says.
RANGE_PREFIXES = {"holding": "hr", "input": "ir", "coil": "coil", "discrete_input": "di"}


class TemplateSignal(BaseModel):
    """A signal of the machine type. Besides `name`, it has the keys of a signal of the
    source each machine names ([modbus: signals[]](#modbus-signals) or
    [opcua: signals[]](#opcua-signals)), checked for each machine made from the template.
    Modbus: `address` counts from the machine's `base_address`, and the machine's
    `device_address` is the unit id. OPC UA: `node_id` holds `{node}` (the machine's
    `node`) and/or `{machine}` (its name): `"{node}.Good"`,
    `"nsu=urn:plant:line1;s={machine}.Good"`."""

    # The other keys depend on the source type, known only per machine: each machine's
    # expanded signal is validated by its source's strict schema (unknown keys refused).
    model_config = ConfigDict(extra="allow", defer_build=True)

    name: str = Field(
        pattern=SIGNAL_NAME_PATTERN,
        description="The signal's name in the template, used by the template's rules; "
        "machine press07 reads it as press07.<name>.",
    )


class RangeSample(StrictModel):
    """A sample rule for every signal of a range."""

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


class RangeConfig(StrictModel):
    """Many Modbus values of one kind at consecutive addresses, written once: `{input_type:
    holding, addresses: 0-499, data_type: uint16, sample: {interval: 1m}}` makes the 500
    signals hr0 ... hr499 (press07.hr0 ... on machine press07), each with a sample rule."""

    input_type: Literal["holding", "input", "coil", "discrete_input"] = Field(
        default="holding",
        description="holding | input (registers), coil | discrete_input (bits).",
    )
    addresses: str = Field(
        pattern=RANGE_PATTERN,
        description="First and last address, both included: 0-499. Offsets from the "
        "machine's base_address, like a template signal's address.",
    )
    data_type: DataType | None = Field(
        default=None,
        description="How each value decodes; a 32-bit type takes two registers per value. "
        "Default: uint16 for registers, bool for coils and discrete inputs.",
    )
    prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Each signal is named <prefix><address> (the address in the template, "
        "before base_address is added). Default: hr, ir, coil or di after input_type.",
    )
    swap: Swap = Field(default=Swap.NONE, description="none | byte | word | word_byte.")
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")
    unit_of_measurement: str | None = Field(
        default=None, description="Engineering unit of every value (e.g. degC, bar)."
    )
    sample: RangeSample | None = Field(
        default=None,
        description="A sample rule for every signal of the range. Default: none (the "
        "signals are read for the rules that name them).",
    )

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses_in_words(cls, value: Any) -> Any:
        # Said in words before the pattern is tried, which would print the regex.
        if isinstance(value, str) and re.match(RANGE_PATTERN, value):
            return value
        raise ValueError("the first and last address, both included, e.g. 0-499")

    @property
    def value_type(self) -> DataType:
        if self.data_type is not None:
            return self.data_type
        return DataType.BOOL if self.input_type in BIT_INPUTS else DataType.UINT16

    @property
    def step(self) -> int:
        return 1 if self.input_type in BIT_INPUTS else REGISTER_COUNT[self.value_type]

    @property
    def bounds(self) -> tuple[int, int]:
        match = re.match(RANGE_PATTERN, self.addresses)
        assert match is not None  # the pattern was validated
        return int(match.group(1)), int(match.group(2))

    def addresses_of_values(self) -> range:
        first, last = self.bounds
        return range(first, last + 1, self.step)

    def signal_prefix(self) -> str:
        return RANGE_PREFIXES[self.input_type] if self.prefix is None else self.prefix

    @model_validator(mode="after")
    def _check(self) -> Self:
        first, last = self.bounds
        if last < first:
            raise ValueError(f"addresses {self.addresses!r}: the last is below the first")
        if last > 65535:
            raise ValueError(f"addresses {self.addresses!r} run past the last Modbus address 65535")
        kind = self.value_type
        if self.input_type in BIT_INPUTS and kind is not DataType.BOOL:
            raise ValueError(f"input_type {self.input_type} reads bits: data_type must be bool")
        if kind is DataType.STRING:
            raise ValueError(
                "a range cannot hold strings (each needs its length): write them as signals"
            )
        count = last - first + 1
        if count % self.step:
            raise ValueError(
                f"addresses {first}-{last} are {count} registers, not a whole number of "
                f"{kind.value} values ({self.step} registers each)"
            )
        return self


class TemplateConfig(StrictModel):
    """A machine type, written once: its signals and its rules. Every machine made from it
    (a `machines:` item with `template:`) gets the signals, named <machine>.<signal>, and
    the rules, reading its own signals. The rules name the template's signals as written
    here (`signal: good`)."""

    area: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="ISA-95 area of the machines made from it, unless a machine says.",
    )
    line: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="ISA-95 line of the machines made from it, unless a machine says.",
    )
    signals: list[TemplateSignal] = Field(
        default_factory=list,
        description="The machine type's signals, written as for its source (see "
        "templates.NAME: signals[]).",
    )
    ranges: list[RangeConfig] = Field(
        default_factory=list,
        description="Blocks of Modbus values of one kind, each value a signal named "
        "<prefix><address>, optionally each with a sample rule.",
    )
    state: StateRuleConfig | None = Field(
        default=None,
        description="The machine state rule, as under machines[] (signals by their name "
        "in the template).",
    )
    counters: list[CounterRuleConfig] = Field(
        default_factory=list, description="Counter rules, as under machines[]."
    )
    alarms: list[AlarmRuleConfig] = Field(
        default_factory=list, description="Alarm rules, as under machines[]."
    )
    samples: list[SampleRuleConfig] = Field(
        default_factory=list, description="Sample rules, as under machines[]."
    )

    def rule_entries(self) -> Iterator[tuple[RulePlace, RuleConfig]]:
        """Every rule with its place, e.g. ("counters", 0) (config.rules.rule_entries_of)."""
        return rule_entries_of(self)


RuleOverrides = dict[str, dict[str, Any] | None]


class InstanceOverrides(StrictModel):
    """What differs on this machine from its template. Each entry changes only the keys it
    names; `null` drops the signal or rule from this machine."""

    signals: RuleOverrides = Field(
        default_factory=dict,
        description="By the signal's name in the template: `{temperature: {scale: 0.1}}`. "
        "An address stays an offset from base_address. Dropping a signal needs the rules "
        "reading it dropped too.",
    )
    state: dict[str, Any] | None = Field(
        default_factory=dict,
        description="Keys of the state rule: `{min_duration: 5s}`; `null` drops it.",
    )
    counters: RuleOverrides = Field(
        default_factory=dict,
        description="By the counter's signal (its name in the template): "
        "`{good: {report_every: 30s}}`.",
    )
    alarms: RuleOverrides = Field(
        default_factory=dict,
        description="By the alarm's name: `{overtemperature: {high: 90}}`.",
    )
    samples: RuleOverrides = Field(
        default_factory=dict,
        description="By the sample's signal (its name in the template): "
        "`{temperature: {deadband: 1.0}}`.",
    )


class MachineInstance(StrictModel):
    """A machine made from a template: a `machines:` item with `template:`. It names the
    machine, its place, the source that reads its signals and where they are on it, and
    what differs from the template; the template gives the rest."""

    name: str = Field(pattern=NAME_PATTERN, description="Machine id, unique in this gateway.")
    template: str = Field(description="The template it is made from (a key of templates:).")
    area: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="ISA-95 area; default the template's."
    )
    line: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="ISA-95 line; default the template's."
    )
    source: str = Field(description="The source (its name under sources:) reading its signals.")
    base_address: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Modbus: added to every address of the template. Default 0.",
    )
    device_address: int | None = Field(
        default=None,
        ge=0,
        le=255,
        validation_alias=AliasChoices("device_address", "slave", "unit"),
        description="Modbus: the unit id of its signals. Default: the source's.",
    )
    node: str | None = Field(
        default=None,
        description="OPC UA: the text put in place of {node} in the template's node ids, "
        "e.g. ns=2;s=Line1.Press07.",
    )
    overrides: InstanceOverrides = Field(
        default_factory=InstanceOverrides,
        description="Signal and rule settings that differ from the template on this machine.",
    )

    # The keys that say where the signals are on the source; each source type takes some
    # (its PLACEMENT_KEYS) and refuses the others.
    PLACEMENT_FIELDS: ClassVar[tuple[str, ...]] = ("base_address", "device_address", "node")

    def placement_values(self) -> dict[str, Any]:
        """The placement keys this machine sets (written or from the environment)."""
        values = {key: getattr(self, key) for key in self.PLACEMENT_FIELDS}
        return {key: value for key, value in values.items() if value is not None}
