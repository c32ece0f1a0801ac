"""MQTT destination (plugin): one message per event, acknowledged by the broker.

See README.md in this folder for a sample config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.forwarders.mqtt.config import MqttDestinationConfig

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from agent.forwarders.base import Forwarder

CONFIGS = (MqttDestinationConfig,)
COMMANDS: str | None = None


def create(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.mqtt.forwarder import MqttForwarder  # paho only when used

    # The agent id goes into topics and the client id.
    return MqttForwarder(config, agent)
