"""One line per source type and per destination type: adding one never touches the runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.models import DestinationConfig, SourceConfig
from agent.forwarders.base import Forwarder
from drivers.base import Driver


def _modbus(config: Any) -> Driver:
    from drivers.modbus import ModbusDriver  # the protocol stack is loaded only when used

    return ModbusDriver(config)


def _http(config: Any) -> Forwarder:
    from agent.forwarders.http import WebhookForwarder

    return WebhookForwarder(config)


DRIVERS: dict[str, Callable[[Any], Driver]] = {
    "modbus_tcp": _modbus,
    "modbus_rtu": _modbus,
}

FORWARDERS: dict[str, Callable[[Any], Forwarder]] = {
    "http": _http,
}


def make_driver(config: SourceConfig) -> Driver:
    return DRIVERS[config.type](config)


def make_forwarder(config: DestinationConfig) -> Forwarder:
    return FORWARDERS[config.type](config)
