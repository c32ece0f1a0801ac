"""Config pieces shared by the root schema and by the schemas of the source and
destination types that live in their own modules (OPC UA, MQTT, Odoo)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from drivers.secrets import Secret as Secret  # re-exported: configs import it from here
from drivers.units import Duration

NAME_PATTERN = r"^[A-Za-z0-9_\-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class EventType(enum.StrEnum):
    MACHINE_STATE = "machine.state"
    PRODUCTION_COUNT = "production.count"
    ALARM = "alarm"
    SAMPLE = "sample"


class RetryConfig(_Strict):
    initial: Duration = Field(default=1.0, gt=0, description="First wait after a failure.")
    max: Duration = Field(default=300.0, gt=0, description="Longest wait between attempts.")


class DestinationCommon(_Strict):
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
    retry: RetryConfig = Field(default_factory=RetryConfig)

    def target(self) -> str:
        """Where and how events go, for `floorgate check-config` (e.g. "POST https://...")."""
        raise NotImplementedError
