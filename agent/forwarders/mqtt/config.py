"""The YAML schema of an MQTT destination and its topic templates. No paho import here,
so checking a config never loads the MQTT client.

Topics are templates filled from each event's ISA-95 place: ``{site}``, ``{area}``,
``{line}``, ``{machine}``, the event ``{type}`` and this gateway's ``{agent_id}``.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import orjson
from pydantic import Field, field_validator, model_validator

from agent.common.model import StrictModel
from agent.common.units import Duration
from agent.config.common import DestinationCommon, EventType, Secret

EVENT_TOPIC_FIELDS = frozenset({"site", "area", "line", "machine", "type", "agent_id"})
STATUS_TOPIC_FIELDS = frozenset({"agent_id"})
DEFAULT_TOPIC = "{site}/{area}/{line}/{machine}/{type}"
DEFAULT_STATUS_TOPIC = "floorgate/{agent_id}/status"


def check_topic_template(template: str, allowed: frozenset[str]) -> str:
    """Refuse a template an MQTT broker would refuse, or one naming an unknown field."""
    if not template:
        raise ValueError("a topic must not be empty")
    if "+" in template or "#" in template:
        raise ValueError(f"{template!r}: + and # are wildcards, not allowed in a publish topic")
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:  # e.g. an unmatched brace
        raise ValueError(f"{template!r}: {exc}") from None
    names = [name for name, _, _ in parsed if name is not None]
    if "" in names:
        raise ValueError(f"{template!r}: empty {{}}; name a field such as {{machine}}")
    unknown = sorted(set(names) - allowed)
    if unknown:
        fields = ", ".join("{" + name + "}" for name in sorted(allowed))
        raise ValueError(f"{template!r}: unknown field(s) {', '.join(unknown)}; use {fields}")
    if any(spec or conv for name, spec, conv in parsed if name is not None):
        raise ValueError(f"{template!r}: format specs (:... or !...) are not supported in topics")
    return template


class MqttProtocol(enum.StrEnum):
    V311 = "3.1.1"
    V5 = "5"


class MqttTlsConfig(StrictModel):
    """TLS towards the broker. The broker's host name is always verified."""

    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that signed the broker's certificate. Default: the "
        "system's trusted CAs.",
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM), when the broker asks for one."
    )
    key_file: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class MqttDestinationConfig(DestinationCommon):
    """An MQTT broker: one message per event, on a topic built from the ISA-95 place."""

    type: Literal["mqtt"]
    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port. Default: 1883, or 8883 with tls."
    )
    protocol: MqttProtocol = Field(
        default=MqttProtocol.V5,
        description="MQTT version: 5 (PUBACK reason codes: a refused message is named) or 3.1.1.",
    )
    qos: dict[EventType, Literal[0, 1]] = Field(
        default_factory=dict,
        description="QoS per event type; unnamed types use 1 (delivered when the broker's "
        "PUBACK arrives). 0 suits high-rate samples: sent once, counted delivered when "
        "written to the connection.",
    )
    max_in_flight: int = Field(
        default=100,
        ge=1,
        le=65535,
        description="Publishes awaiting their PUBACK at once. A lower Receive Maximum "
        "announced by an MQTT 5 broker wins.",
    )
    topic: str = Field(default=DEFAULT_TOPIC, description="Topic template of every event.")
    state_topic: str | None = Field(
        default=None,
        description="Also publish each machine.state event, retained, on this topic "
        "template (e.g. '{site}/{area}/{line}/{machine}/state'), so a new subscriber "
        "reads every machine's current state at once. Default: off.",
    )
    status_topic: str = Field(
        default=DEFAULT_STATUS_TOPIC,
        description="Retained gateway status: 'online' on connect, 'offline' as last will "
        "and on a clean shutdown.",
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="MQTT client id. Default: floorgate-<agent id>-<destination name>, "
        "stable across restarts so the broker keeps the session.",
    )
    keep_alive: Duration = Field(
        default=60.0, ge=1, le=65535, description="Ping interval when nothing else is sent."
    )
    session_expiry: Duration = Field(
        default=3600.0,
        ge=0,
        description="MQTT 5: how long the broker keeps this client's session after a "
        "disconnect. MQTT 3.1.1 always connects with clean session false.",
    )
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="Longest wait for the TCP/TLS connect and the CONNACK."
    )
    ack_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the PUBACKs of one batch; past it the connection is "
        "taken as dead and the batch is sent again on a new one.",
    )
    tls: MqttTlsConfig | None = Field(
        default=None, description="Use TLS ({} for the system's trusted CAs). Default: off."
    )
    username: str | None = Field(default=None, min_length=1, description="Broker user name.")
    password: Secret | None = Field(
        default=None, description="Broker password: {file: PATH} or {credential: NAME}."
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # YAML reads `protocol: 5` as a number and `protocol: 3.1.1` as text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:g}"
        return value

    @field_validator("topic", "state_topic")
    @classmethod
    def _event_topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic_template(value, EVENT_TOPIC_FIELDS)

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, value: str) -> str:
        return check_topic_template(value, STATUS_TOPIC_FIELDS)

    @model_validator(mode="after")
    def _password_needs_username(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def qos_for(self, event_type: str) -> int:
        for known, qos in self.qos.items():
            if known.value == event_type:
                return qos
        return 1

    def target(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return (
            f"MQTT {self.protocol.value} {scheme}://{self.host}:{self.effective_port} "
            f"topic {self.topic}"
        )


def default_client_id(agent_id: str, destination: str) -> str:
    return f"floorgate-{agent_id}-{destination}"


@dataclass(frozen=True, slots=True)
class Message:
    """One publish: where, how, and whether the broker keeps it as the topic's last value."""

    topic: str
    qos: int
    retain: bool


class TopicBuilder:
    """The messages of one event, its topics filled from the payload's CloudEvent
    ``source`` (``/site/area/line/machine``), its ``type`` and the agent id."""

    # Topics per (type, source): a line has a few hundred of them, and filling the
    # templates for every message was a tenth of the drain's time on the event loop.
    CACHE_SIZE = 4096

    def __init__(self, config: MqttDestinationConfig, agent_id: str) -> None:
        self._config = config
        self._agent_id = agent_id
        self._cache: dict[tuple[str, str], list[Message]] = {}

    def messages(self, event_type: str, payload: bytes) -> list[Message]:
        """ValueError names what is wrong with an event that cannot be published."""
        try:
            source = orjson.loads(payload).get("source")
        except (orjson.JSONDecodeError, AttributeError):
            raise ValueError("payload is not a CloudEvent JSON object") from None
        key = (event_type, source) if isinstance(source, str) else None
        found = self._cache.get(key) if key is not None else None
        if found is None:
            found = self._build(event_type, source)
            if key is not None:
                if len(self._cache) >= self.CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = found
        return list(found)

    def _build(self, event_type: str, source: object) -> list[Message]:
        parts = source.strip("/").split("/") if isinstance(source, str) else []
        if len(parts) != 4 or not all(parts):
            raise ValueError(f"source {source!r} is not /site/area/line/machine")
        site, area, line, machine = parts
        place = {"site": site, "area": area, "line": line, "machine": machine}
        place |= {"type": event_type, "agent_id": self._agent_id}
        config = self._config
        found = [Message(config.topic.format(**place), config.qos_for(event_type), False)]
        if config.state_topic is not None and event_type == EventType.MACHINE_STATE.value:
            found.append(Message(config.state_topic.format(**place), 1, True))
        for message in found:
            if "+" in message.topic or "#" in message.topic:
                raise ValueError(f"topic {message.topic!r} would contain a wildcard")
        return found
