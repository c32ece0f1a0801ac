"""The whole configuration: one YAML file, validated before any connection is opened."""

from __future__ import annotations

import datetime
import enum
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from agent.common.model import StrictModel
from agent.common.paths import default_state_dir
from agent.common.units import Duration, Size
from agent.config.common import (
    NAME_PATTERN,
    DestinationCommon,
    Secret,
    SourceSpec,
)
from agent.config.rules import (
    AlarmRuleConfig,
    CounterRuleConfig,
    RuleConfig,
    RulePlace,
    SampleRuleConfig,
    StateRuleConfig,
    rule_entries_of,
)
from agent.registry import DESTINATION_PLUGINS, SOURCE_PLUGINS, config_models


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _time_of_day(value: object) -> object:
    """A shift start: "06:00" -> time(6, 0), or a message that says what to write."""
    if isinstance(value, datetime.time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 06:00 as sexagesimal: 360.
        raise ValueError(
            f'{value} is a number: write the time of day in quotes, e.g. "06:00" '
            "(YAML reads an unquoted 06:00 as a count of minutes)"
        )
    text = str(value)
    try:
        if len(text) != 5 or text[2] != ":":
            raise ValueError
        return datetime.time(int(text[:2]), int(text[3:]))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00 to 23:59)") from None


ShiftStart = Annotated[datetime.time, BeforeValidator(_time_of_day)]


def one_shift_a_day() -> list[datetime.time]:
    return [datetime.time(0, 0)]


class AgentSection(StrictModel):
    id: str = Field(
        default="floorgate",
        pattern=NAME_PATTERN,
        description="This gateway's id: in every event and in MQTT topics. Unique per gateway.",
    )
    site: str = Field(default="site", pattern=NAME_PATTERN, description="ISA-95 site.")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the buffer and generated files live. Default: $STATE_DIRECTORY, "
        "else /var/lib/floorgate.",
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, description="debug | info | warning.")
    shifts: list[ShiftStart] = Field(
        default_factory=one_shift_a_day,
        min_length=1,
        description='When each shift starts, as times of day ("06:00", "14:00", "22:00"). The '
        "status page shows each machine's good and scrap parts of the current shift. "
        'Default: one shift a day from "00:00".',
    )
    timezone: str | None = Field(
        default=None,
        description="The plant's time zone for shifts, an IANA name (Europe/Berlin). "
        "Default: the machine's own.",
    )

    @field_validator("shifts")
    @classmethod
    def _distinct_shifts(cls, starts: list[datetime.time]) -> list[datetime.time]:
        if len(set(starts)) != len(starts):
            raise ValueError("a shift start is given twice")
        return sorted(starts)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or "
                "America/Chicago (the machine's list: timedatectl list-timezones)"
            ) from None
        return name


# The source and destination types are the plugins' config models (agent.registry): the
# YAML's `type` key picks one.
if TYPE_CHECKING:
    SourceConfig = SourceSpec
    DestinationConfig = DestinationCommon
else:
    SourceConfig = Annotated[
        Union[config_models(SOURCE_PLUGINS)],  # noqa: UP007 (a union built from a tuple)
        Field(discriminator="type"),
    ]
    DestinationConfig = Annotated[
        Union[config_models(DESTINATION_PLUGINS)],  # noqa: UP007
        Field(discriminator="type"),
    ]


class MachineConfig(StrictModel):
    """A machine: its ISA-95 place and the rules that turn its signals into events."""

    name: str = Field(pattern=NAME_PATTERN, description="Machine id, unique in this gateway.")
    area: str = Field(default="area", pattern=NAME_PATTERN, description="ISA-95 area.")
    line: str = Field(default="line", pattern=NAME_PATTERN, description="ISA-95 line.")
    state: StateRuleConfig | None = None
    counters: list[CounterRuleConfig] = Field(default_factory=list)
    alarms: list[AlarmRuleConfig] = Field(default_factory=list)
    samples: list[SampleRuleConfig] = Field(default_factory=list)

    def rule_entries(self) -> Iterator[tuple[RulePlace, RuleConfig]]:
        """Every rule with its place, e.g. ("counters", 0) (config.rules.rule_entries_of)."""
        return rule_entries_of(self)


class SynchronousMode(enum.StrEnum):
    FULL = "full"  # survives a power cut
    NORMAL = "normal"  # survives a process crash, may lose the last commits on a power cut


class BufferConfig(StrictModel):
    path: Path = Field(
        default=Path("buffer.db"), description="SQLite file; relative to agent.state_dir."
    )
    synchronous: SynchronousMode = Field(
        default=SynchronousMode.FULL,
        description="full: every committed event survives a power cut | normal: a crash of "
        "the agent loses nothing, a power cut may roll back the last seconds of commits "
        "(fewer fsyncs).",
    )
    commit_interval: Duration = Field(
        default=2.0,
        ge=0,
        le=10,
        description="Commit the events the rules made, with each destination's acks, at most "
        "once per this interval. Each commit writes whole pages whatever it holds: with 2s "
        "(the default) a plant at 1,000 events/s wrote 1.9 GB a day, with 1s 2.8 GB, with 0s "
        "(each round at once, a few commits a second) several times that (docs/buffer.md, "
        "'The flash budget'). Every event waits up to the interval before it is stored and "
        "sent, and a crash of the agent loses the samples of that last interval (counts are "
        "never lost).",
    )
    commit_window: Duration | None = Field(
        default=None,
        description="Deprecated and ignored: the buffer no longer groups commits (the engine "
        "commits each round at once). Still accepted so that older config files load; "
        "remove it. The agent logs a warning when it is set.",
        json_schema_extra={"deprecated": True},
    )
    max_size: Size = Field(
        default=1024**3,
        ge=1024**2,
        description="Largest size of the database file. When reached: delivered history, then "
        "the oldest samples are removed; states, counts and alarms are never dropped.",
    )
    max_age: Duration | None = Field(
        default=None,
        gt=0,
        description="Drop undelivered events buffered longer than this (counted). "
        "Default: none, events wait until delivered.",
    )
    retention: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        description="How long delivered machine states, counts and alarms are kept for replay "
        "(samples: sample_retention).",
    )
    sample_retention: Duration = Field(
        default=0.0,
        ge=0,
        description="How long delivered samples are kept for replay. 0s (the default): each "
        "is deleted as soon as every destination has it, so the file stays small and the "
        "disk is spared.",
    )

    @model_validator(mode="after")
    def _commit_window_is_ignored(self) -> BufferConfig:
        # A warning, not an error: a plant's existing config must still start the agent.
        if "commit_window" in self.model_fields_set:
            import logging

            logging.getLogger("floorgate.config").warning(
                "buffer.commit_window is deprecated and ignored (the buffer no longer groups "
                "commits); remove it from the config"
            )
        return self


class HealthConfig(StrictModel):
    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics.")
    host: str = Field(default="127.0.0.1", description="Listen address (loopback by default).")
    port: int = Field(default=8410, ge=0, le=65535, description="Listen port (0: any free).")
    token: Secret | None = Field(
        default=None,
        description="Bearer token required on /readyz and /metrics (/healthz stays open "
        "for liveness probes). Default: no token, which is why the server binds loopback.",
    )
    stale_after: Duration = Field(
        default=15 * 60.0,
        gt=0,
        description="Degraded when the oldest undelivered event is older than this.",
    )
    source_down_after: Duration = Field(
        default=5 * 60.0,
        ge=0,
        description="Degraded when a source has been down longer than this (0: at once).",
    )
    min_free_disk: Size = Field(
        default=100 * 1024**2,
        ge=0,
        description="Degraded when the state directory's disk has less free space.",
    )


_SECTIONS = {"agent", "buffer", "health", "destinations"}


class FloorgateConfig(BaseModel):
    """The root of config.yaml.

    A plain model, not a pydantic-settings ``BaseSettings``: the loader validates parsed
    YAML with ``model_validate`` (which reads no settings sources) and applies the
    ``FLOORGATE__`` environment overrides itself, because settings' env parsing cannot
    address list items. As a base class alone it cost 5 MiB of RSS and 80 ms of every
    start (its import). ``validate_default`` is what BaseSettings set."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    agent: AgentSection = Field(default_factory=AgentSection)
    sources: list[SourceConfig] = Field(min_length=1)
    machines: list[MachineConfig] = Field(min_length=1)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_mean_defaults(cls, data: object) -> object:
        # A section whose keys are all commented out reads as null: use its defaults.
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if not (value is None and key in _SECTIONS)
            }
        return data

    @property
    def buffer_path(self) -> Path:
        return self.agent.state_dir / self.buffer.path
