"""Config pieces shared by the root schema and by the schemas of the source and
destination types that live in their own modules (OPC UA, MQTT, Odoo)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import Field

from agent.common.model import NAME_PATTERN as NAME_PATTERN
from agent.common.model import StrictModel
from agent.common.secrets import Secret as Secret  # re-exported: configs import it from here
from agent.common.units import Duration
from drivers.codecs import DataType


class EventType(enum.StrEnum):
    MACHINE_STATE = "machine.state"
    PRODUCTION_COUNT = "production.count"
    ALARM = "alarm"
    SAMPLE = "sample"


class RetryConfig(StrictModel):
    initial: Duration = Field(default=1.0, gt=0, description="First wait after a failure.")
    max: Duration = Field(default=300.0, gt=0, description="Longest wait between attempts.")


class DestinationCommon(StrictModel):
    """Keys every destination has: name, routing, batch size, retry."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique destination name.")
    event_types: list[EventType] = Field(
        default_factory=lambda: list(EventType),
        description="Event types sent here. Default: all.",
    )
    machines: list[str] | None = Field(
        default=None, description="Machines whose events are sent here. Default: all."
    )
    batch_size: int = Field(default=500, ge=1, le=10000, description="Events per request.")
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="Waits between delivery attempts while the destination fails "
        "(exponential with jitter; a Retry-After from the server wins).",
    )
    # 10 s: real Odoo answers one call in ~20 ms, a 2000-record list in ~3 s and a new
    # API key's first call in under 1 s (key hashing), so a normal send stays well
    # below; the request timeouts (HTTP 30 s, Odoo 120 s) are far above, so a silent
    # network shows 20 s to 110 s earlier. Odoo retrying a serialization conflict for up
    # to ~30 s does show as degraded: events are late then, which is worth seeing.
    slow_after: Duration = Field(
        default=10.0,
        gt=0,
        description="Health calls the destination degraded while one send (its connect "
        "included) has been in flight longer than this, long before the request's "
        "timeout: a network that silently drops packets shows at once. Raise it for "
        "large batches to a slow server.",
    )

    def target(self) -> str:
        """Where and how events go, for `floorgate check-config` (e.g. "POST https://...")."""
        raise NotImplementedError


class SignalSpec(Protocol):
    """What every source type's signal config has (Modbus, OPC UA, ...)."""

    @property
    def name(self) -> str: ...
    @property
    def data_type(self) -> DataType | None: ...
    @property
    def unit_of_measurement(self) -> str | None: ...


class SourceSpec(Protocol):
    """What every source type's config has, whatever its plugin."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def signals(self) -> Sequence[SignalSpec]: ...
    def summary(self) -> str:
        """One line for `floorgate check-config`: what is read, from where, how often."""
        ...


@dataclass(frozen=True)
class Placement:
    """Where one machine made from a template reads its signals: the machine's name and
    the keys of its instance that locate the signals on its source (agent.config.templates).
    A source type uses the keys that make sense for it and names the others in
    ``PLACEMENT_KEYS`` (Modbus: base_address, device_address; OPC UA: node)."""

    machine: str
    source: str
    base_address: int | None = None
    device_address: int | None = None
    node: str | None = None


class PlacementError(ValueError):
    """A template's signal that cannot be placed for one machine. ``signal_key`` names the
    signal's key at fault (it is in the template, or in the machine's override), or
    ``instance_key`` the machine's key (e.g. a missing node)."""

    def __init__(
        self, message: str, *, signal_key: str | None = None, instance_key: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.signal_key = signal_key
        self.instance_key = instance_key


class TemplateTarget(Protocol):
    """What a source type's config class offers so that machines made from a template can
    read from it (class attributes: the template's signals are raw mappings, placed before
    any model is validated)."""

    PLACEMENT_KEYS: ClassVar[frozenset[str]]

    @classmethod
    def place_template_signal(cls, signal: dict[str, Any], placement: Placement) -> dict[str, Any]:
        """The template's signal (without its name) made this source's signal for one
        machine; raises PlacementError."""
        ...
