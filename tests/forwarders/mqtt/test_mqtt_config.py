"""The MQTT destination's schema: defaults, topics and the errors a plant engineer sees."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.config.models import AgentSection
from agent.forwarders.mqtt.config import Message, MqttDestinationConfig, MqttProtocol, TopicBuilder
from agent.forwarders.mqtt.forwarder import MqttForwarder


def config(**keys: Any) -> MqttDestinationConfig:
    return MqttDestinationConfig.model_validate(
        {"name": "uns", "type": "mqtt", "host": "broker.plant", **keys}
    )


def test_defaults_qos1_mqtt5_persistent_stable_client_id() -> None:
    destination = config()
    assert destination.protocol is MqttProtocol.V5
    assert destination.effective_port == 1883
    assert destination.max_in_flight == 100
    assert destination.topic == "{site}/{area}/{line}/{machine}/{type}"
    assert all(destination.qos_for(t) == 1 for t in ("machine.state", "alarm", "sample"))
    forwarder = MqttForwarder(destination, AgentSection(id="line1-gw"))
    assert forwarder.client_id == "floorgate-line1-gw-uns"
    assert forwarder.status_topic == "floorgate/line1-gw/status"
    assert config(tls={}).effective_port == 8883
    assert config(tls={}).target() == (
        "MQTT 5 mqtts://broker.plant:8883 topic {site}/{area}/{line}/{machine}/{type}"
    )


@pytest.mark.parametrize(("written", "expected"), [(5, "5"), ("3.1.1", "3.1.1"), ("5", "5")])
def test_protocol_reads_as_yaml_writes_it(written: object, expected: str) -> None:
    assert config(protocol=written).protocol.value == expected


def test_qos_per_event_type() -> None:
    destination = config(qos={"sample": 0})
    assert destination.qos_for("sample") == 0
    assert destination.qos_for("machine.state") == 1


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"topic": "plant/+/x"}, "wildcards"),
        ({"topic": "{site}/{cell}"}, "unknown field(s) cell"),
        ({"topic": "{machine:>5}"}, "format specs"),
        ({"status_topic": "gw/{machine}/status"}, "unknown field(s) machine"),
        ({"qos": {"sample": 2}}, "qos.sample"),
        ({"qos": {"telemetry": 0}}, "qos.telemetry"),
        ({"password": {"file": "/etc/pw"}}, "password needs username"),
        ({"username": "gw", "password": "secret"}, "never written in the YAML"),
        ({"tls": {"cert_file": "/c.pem"}}, "cert_file and key_file"),
        ({"protocol": "4"}, "protocol"),
        ({"max_in_flight": 0}, "max_in_flight"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_message(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        config(**keys)
    assert message in str(refused.value)


def test_topics_come_from_the_events_isa95_place() -> None:
    builder = TopicBuilder(
        config(state_topic="{site}/{area}/{line}/{machine}/state", qos={"sample": 0}), "gw"
    )
    state = b'{"source": "/plant/hall/line1/press1", "id": "x"}'
    assert builder.messages("machine.state", state) == [
        Message("plant/hall/line1/press1/machine.state", 1, False),
        Message("plant/hall/line1/press1/state", 1, True),
    ]
    assert builder.messages("sample", state) == [
        Message("plant/hall/line1/press1/sample", 0, False)
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not a CloudEvent JSON object"),
        (b"[1]", "not a CloudEvent JSON object"),
        (b'{"source": "/plant/press1"}', "is not /site/area/line/machine"),
        (b'{"source": "/plant/hall/line1/a+b"}', "wildcard"),
    ],
)
def test_an_event_that_cannot_be_published_says_why(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicBuilder(config(), "gw").messages("sample", payload)


def test_topics_are_kept_per_type_and_source_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TopicBuilder, "CACHE_SIZE", 2)
    builder = TopicBuilder(config(), "gw")
    press = b'{"source": "/plant/hall/line1/press1"}'
    first = builder.messages("sample", press)
    first.append(Message("changed/by/the/caller", 0, False))  # a caller's list is its own
    assert builder.messages("sample", press) == [
        Message("plant/hall/line1/press1/sample", 1, False)
    ]
    for machine in ("m2", "m3", "m4"):  # past the bound: kept ones are dropped, not wrong
        source = f'{{"source": "/plant/hall/line1/{machine}"}}'.encode()
        assert builder.messages("alarm", source) == [
            Message(f"plant/hall/line1/{machine}/alarm", 1, False)
        ]
        assert len(builder._cache) <= 2
    with pytest.raises(ValueError, match="wildcard"):  # refusals are never kept
        builder.messages("sample", b'{"source": "/plant/hall/line1/a+b"}')
    with pytest.raises(ValueError, match="wildcard"):
        builder.messages("sample", b'{"source": "/plant/hall/line1/a+b"}')
