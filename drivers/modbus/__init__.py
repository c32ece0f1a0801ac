"""Modbus TCP and RTU sources (plugin): config schema here, pymodbus only in ``driver``.

See README.md in this folder for a sample config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.modbus.config import ModbusRtuConfig, ModbusTcpConfig

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from drivers.base import Driver

CONFIGS = (ModbusTcpConfig, ModbusRtuConfig)
COMMANDS: str | None = None  # no command group of its own


def create(config: Any, agent: AgentSection) -> Driver:
    from drivers.modbus.driver import ModbusDriver  # pymodbus loads only when used

    del agent
    return ModbusDriver(config)
