"""OPC UA node ids and values, translated to and from what the rest of floorgate knows.

- :func:`resolve_node_id` turns ``nsu=<uri>;s=...`` / ``ns=2;s=...`` / ``i=...`` into an
  asyncua NodeId using the server's namespace array *of this session* (a restarted server
  may have renumbered its namespaces).
- :func:`nsu_form` writes a NodeId back with its namespace URI, for `floorgate opcua browse`.
- :func:`to_sample` maps one DataValue to a Sample: StatusCode to quality, the best
  timestamp available (source, else server, else the agent's clock: which one is returned
  so health can count them), and the Variant to a plain Python value. Arrays, structures
  and other kinds a rule cannot use are a bad sample naming the type, not a crash.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from drivers.base import DriverError, Quality, Sample, Value
from drivers.codecs import INTEGER_TYPES, DataType


class NodeIdError(DriverError):
    """A configured node id cannot be used with this server."""


class TimeOrigin(enum.StrEnum):
    SOURCE = "source"  # the device's SourceTimestamp
    SERVER = "server"  # the server's ServerTimestamp
    AGENT = "agent"  # neither was sent: the agent's clock when the value arrived


_NSU = re.compile(r"^nsu=([^;]+);(.+)$")


def resolve_node_id(text: str, namespaces: list[str]) -> ua.NodeId:
    """Parse a configured node id; ``nsu=`` is looked up in ``namespaces`` (index = position)."""
    match = _NSU.match(text)
    if match:
        uri, identifier = match.groups()
        if uri not in namespaces:
            raise NodeIdError(f"namespace {uri!r} is not on this server")
        text = f"ns={namespaces.index(uri)};{identifier}"
    try:
        node_id = ua.NodeId.from_string(text)
    except (ValueError, ua.UaError) as exc:
        raise NodeIdError(f"cannot parse node id {text!r}: {exc}") from None
    if node_id.NamespaceIndex >= len(namespaces):
        raise NodeIdError(f"namespace index {node_id.NamespaceIndex} is not on this server")
    return node_id


def nsu_form(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """``nsu=<uri>;s=...`` for namespaces above 0 (their index can change), else ``i=...``."""
    plain = str(node_id.to_string())
    index = node_id.NamespaceIndex
    if index == 0 or index >= len(namespaces):
        return plain
    identifier = plain.split(";", 1)[1] if plain.startswith("ns=") else plain
    return f"nsu={namespaces[index]};{identifier}"


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def status_text(status: ua.StatusCode) -> str:
    try:
        return f"{status.name}: {status.doc}".rstrip(": ")
    except (KeyError, AttributeError):
        return f"status 0x{status.value:08X}"


def time_of(value: ua.DataValue) -> tuple[datetime, TimeOrigin]:
    if value.SourceTimestamp is not None:
        return _utc(value.SourceTimestamp), TimeOrigin.SOURCE
    if value.ServerTimestamp is not None:
        return _utc(value.ServerTimestamp), TimeOrigin.SERVER
    return datetime.now(UTC), TimeOrigin.AGENT


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def raw_text(variant: object) -> str | None:
    """A Variant as the signal view shows it: "Float 73.4"; None for anything else."""
    if not isinstance(variant, ua.Variant):
        return None
    text = repr(variant.Value)
    if len(text) > 80:  # an array or a structure: its start is enough to recognise it
        text = text[:77] + "..."
    return f"{variant.VariantType.name} {text}"


class UnsupportedValue(DriverError):
    """A value of a kind rules cannot use (array, structure, ...)."""


def plain_value(raw: Any) -> Value:
    """A Variant's value as bool / int / float / str, or UnsupportedValue naming the kind."""
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw  # IntEnum values are ints and pass through as their number
    if isinstance(raw, datetime):
        return _utc(raw).isoformat()
    if isinstance(raw, ua.LocalizedText):
        return str(raw.Text)
    if isinstance(raw, ua.QualifiedName):
        return str(raw.Name)
    if isinstance(raw, ua.NodeId):
        return str(raw.to_string())
    if isinstance(raw, list | tuple):
        raise UnsupportedValue(f"unsupported type: array of {len(raw)} values")
    raise UnsupportedValue(f"unsupported type: {type(raw).__name__}")


def check_declared(value: Value, declared: DataType | None) -> None:
    """Refuse a value that does not fit the data_type the config promised to the rules."""
    if declared is None or value is None:
        return
    if declared is DataType.BOOL:
        fits = isinstance(value, bool)
    elif declared in INTEGER_TYPES:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif declared is DataType.STRING:
        fits = isinstance(value, str)
    else:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    if not fits:
        raise UnsupportedValue(
            f"expected {declared.value} (data_type), got {type(value).__name__} {value!r}"
        )


def to_sample(
    signal: str, value: ua.DataValue, declared: DataType | None
) -> tuple[Sample, TimeOrigin]:
    when, origin = time_of(value)
    status = value.StatusCode
    quality = quality_of(status)
    if quality is Quality.BAD:
        assert status is not None
        return Sample(signal, None, Quality.BAD, when, status_text(status)), origin
    try:
        plain = plain_value(value.Value.Value if value.Value is not None else None)
        check_declared(plain, declared)
    except UnsupportedValue as exc:
        return Sample(signal, None, Quality.BAD, when, str(exc)), origin
    if plain is None:
        return Sample(signal, None, Quality.BAD, when, "the server sent no value"), origin
    if isinstance(plain, float) and not math.isfinite(plain):
        # Rules cannot compare or add it, and JSON has no NaN: bad, saying why (as the
        # Modbus codec does for a float register holding NaN).
        why = "not a number (NaN)" if math.isnan(plain) else "infinite value"
        return Sample(signal, None, Quality.BAD, when, f"the server sent {why}"), origin
    return Sample(signal, plain, quality, when), origin
