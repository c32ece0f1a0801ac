"""OPC UA sources (plugin): config schema here, asyncua only in the modules that talk.

See README.md in this folder for a sample config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.opcua.config import OpcUaConfig

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from drivers.base import Driver

CONFIGS = (OpcUaConfig,)
COMMANDS: str | None = "drivers.opcua.cli"  # `floorgate opcua browse|endpoints`


def create(config: Any, agent: AgentSection) -> Driver:
    from drivers.opcua.driver import OpcUaDriver  # asyncua loads only when used

    # The client certificate generated on first start lives in the state directory.
    return OpcUaDriver(config, state_dir=agent.state_dir)
