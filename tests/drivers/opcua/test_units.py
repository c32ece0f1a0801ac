"""Pure parts of the OPC UA source: node ids, value mapping, config rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua
from pydantic import ValidationError

from drivers.base import Quality
from drivers.codecs import DataType
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.values import NodeIdError, TimeOrigin, nsu_form, resolve_node_id, to_sample

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:vendor", "urn:line"]
T1 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 8, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "index", "identifier"),
    [
        ("nsu=urn:line;s=Press1.Good", 2, "Press1.Good"),
        ("nsu=urn:vendor;i=42", 1, 42),
        ("ns=2;s=A;B", 2, "A;B"),
        ("i=2258", 0, 2258),
    ],
)
def test_node_ids_resolve_against_this_sessions_namespaces(
    text: str, index: int, identifier: object
) -> None:
    node_id = resolve_node_id(text, NAMESPACES)
    assert (node_id.NamespaceIndex, node_id.Identifier) == (index, identifier)


def test_a_renumbered_namespace_resolves_to_its_new_index() -> None:
    renumbered = [NAMESPACES[0], "urn:line", "urn:vendor"]
    assert resolve_node_id("nsu=urn:line;s=X", renumbered).NamespaceIndex == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [("nsu=urn:elsewhere;s=X", "urn:elsewhere"), ("ns=7;s=X", "namespace index 7")],
)
def test_unknown_namespaces_are_named(text: str, message: str) -> None:
    with pytest.raises(NodeIdError, match=message):
        resolve_node_id(text, NAMESPACES)


def test_nsu_form_round_trips() -> None:
    node_id = resolve_node_id("nsu=urn:line;s=Press1.Good", NAMESPACES)
    assert nsu_form(node_id, NAMESPACES) == "nsu=urn:line;s=Press1.Good"
    assert nsu_form(ua.NodeId(2258, 0), NAMESPACES) == "i=2258"


def value(raw: object, variant: ua.VariantType, **kwargs: object) -> ua.DataValue:
    return ua.DataValue(ua.Variant(raw, variant), **kwargs)


@pytest.mark.parametrize(
    ("data_value", "expected_time", "origin"),
    [
        (value(1, ua.VariantType.Int32, SourceTimestamp=T1, ServerTimestamp=T2), T1, "source"),
        (value(1, ua.VariantType.Int32, ServerTimestamp=T2), T2, "server"),
    ],
)
def test_source_timestamp_is_preferred_then_server(
    data_value: ua.DataValue, expected_time: datetime, origin: str
) -> None:
    sample, got_origin = to_sample("x", data_value, None)
    assert sample.source_time == expected_time and got_origin == origin


def test_without_timestamps_the_agent_clock_is_used_and_said() -> None:
    before = datetime.now(UTC)
    sample, origin = to_sample("x", value(1, ua.VariantType.Int32), None)
    assert origin is TimeOrigin.AGENT and sample.source_time >= before


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (ua.StatusCodes.Good, Quality.GOOD),
        (ua.StatusCodes.UncertainSensorNotAccurate, Quality.UNCERTAIN),
        (ua.StatusCodes.BadCommunicationError, Quality.BAD),
    ],
)
def test_status_code_maps_to_quality(status: int, quality: Quality) -> None:
    data_value = value(3.5, ua.VariantType.Double, StatusCode=ua.StatusCode(status))
    sample, _ = to_sample("x", data_value, None)
    assert sample.quality is quality
    assert sample.value == (None if quality is Quality.BAD else 3.5)


@pytest.mark.parametrize(
    ("raw", "variant", "expected"),
    [
        (True, ua.VariantType.Boolean, True),
        (65535, ua.VariantType.UInt16, 65535),
        ("lot-7", ua.VariantType.String, "lot-7"),
        (ua.LocalizedText("Auto"), ua.VariantType.LocalizedText, "Auto"),
        (T1, ua.VariantType.DateTime, "2026-03-01T08:00:00+00:00"),
    ],
)
def test_values_become_plain_python(raw: object, variant: ua.VariantType, expected: object) -> None:
    sample, _ = to_sample("x", value(raw, variant, SourceTimestamp=T1), None)
    assert (sample.value, sample.quality) == (expected, Quality.GOOD)


def test_a_value_that_breaks_the_declared_type_is_a_bad_sample() -> None:
    sample, _ = to_sample("x", value(2.5, ua.VariantType.Double), DataType.UINT32)
    assert sample.quality is Quality.BAD
    assert sample.error == "expected uint32 (data_type), got float 2.5"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (float("nan"), "the server sent not a number (NaN)"),
        (float("-inf"), "the server sent infinite value"),
    ],
)
def test_a_nan_or_infinite_float_is_a_bad_sample_that_says_why(raw: float, why: str) -> None:
    sample, _ = to_sample("x", value(raw, ua.VariantType.Double), DataType.FLOAT64)
    assert (sample.value, sample.quality, sample.error) == (None, Quality.BAD, why)


def config(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "type": "opcua",
        "name": "plc",
        "endpoint": "opc.tcp://plc:4840",
        "signals": [{"name": "a", "node_id": "ns=2;s=A"}],
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"security": {"policy": "Basic256Sha256", "mode": "sign"}}, "server certificate"),
        ({"security": {"policy": "Basic256Sha256", "mode": "none"}}, "go together"),
        ({"security": {"server_thumbprint": "abc", "policy": "none"}}, "40 hex digits"),
        ({"username": "op"}, "username and password"),
        ({"password": "inline"}, "never written in the YAML"),
        ({"keepalive_count": 10, "stale_after_intervals": 10}, "must be larger"),
        ({"signals": [{"name": "a", "node_id": "Press1.Good"}]}, "node_id"),
        (
            {"signals": [{"name": "a", "node_id": "i=1"}, {"name": "a", "node_id": "i=2"}]},
            "used twice",
        ),
    ],
)
def test_config_mistakes_are_refused_with_a_reason(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaConfig.model_validate(config(**overrides))


def test_summary_says_how_the_source_is_read() -> None:
    secured = OpcUaConfig.model_validate(
        config(
            security={
                "policy": "Basic256Sha256",
                "mode": "sign_and_encrypt",
                "server_thumbprint": "ab:" * 19 + "ab",
            },
            username="op",
            password={"file": "/etc/floorgate/opcua-password"},
        )
    )
    assert secured.security.server_thumbprint == "AB" * 20
    assert secured.summary() == (
        "opcua opc.tcp://plc:4840, subscribe every 1s, Basic256Sha256/sign_and_encrypt, "
        "user op, 1 signals"
    )
    assert secured.stale_after == 15.0
