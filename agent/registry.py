"""One line per source type and per destination type: adding one never touches the runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.models import AgentSection, DestinationConfig, SourceConfig
from agent.forwarders.base import Forwarder
from drivers.base import Driver


def _modbus(config: Any, agent: AgentSection) -> Driver:
    from drivers.modbus import ModbusDriver  # the protocol stack is loaded only when used

    del agent
    return ModbusDriver(config)


def _opcua(config: Any, agent: AgentSection) -> Driver:
    from drivers.opcua import OpcUaDriver

    # The client certificate generated on first start lives in the state directory.
    return OpcUaDriver(config, state_dir=agent.state_dir)


def _mqtt(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.mqtt import MqttForwarder

    return MqttForwarder(config, agent)


def _odoo(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.odoo import OdooForwarder

    return OdooForwarder(config, agent)


def _http(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.http import WebhookForwarder

    del agent  # the webhook needs nothing of the agent section
    return WebhookForwarder(config)


DRIVERS: dict[str, Callable[[Any, AgentSection], Driver]] = {
    "modbus_tcp": _modbus,
    "modbus_rtu": _modbus,
    "opcua": _opcua,
}

# A forwarder gets its destination's config and the agent section (agent id for MQTT
# topics and client ids, state_dir for files a forwarder keeps, site).
FORWARDERS: dict[str, Callable[[Any, AgentSection], Forwarder]] = {
    "http": _http,
    "mqtt": _mqtt,
    "odoo": _odoo,
}


# The module holding each type's protocol stack (what its factory above imports), so
# `floorgate run` can import the stacks a config needs while it is still being validated
# (agent.config.child).
STACK_MODULES: dict[str, str] = {
    "modbus_tcp": "drivers.modbus",
    "modbus_rtu": "drivers.modbus",
    "opcua": "drivers.opcua",
    "http": "agent.forwarders.http",
    "mqtt": "agent.forwarders.mqtt",
    "odoo": "agent.forwarders.odoo",
}


def make_driver(config: SourceConfig, agent: AgentSection) -> Driver:
    return DRIVERS[config.type](config, agent)


def make_forwarder(config: DestinationConfig, agent: AgentSection) -> Forwarder:
    return FORWARDERS[config.type](config, agent)
