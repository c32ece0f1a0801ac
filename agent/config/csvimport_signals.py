"""One exported tag made the keys of a template's signal, for `floorgate import-csv`
(agent.config.csvimport): its name cleaned, its data type mapped (Kepware's and TIA
Portal's names), its location (agent.config.csvimport_addresses) checked against that
type, and Kepware's linear scaling and negation made ``scale`` and ``offset``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from agent.config.csvimport_addresses import MAX_ADDRESS, Location, RowRefused
from drivers.codecs import REGISTER_COUNT, DataType

# Kepware and TIA Portal names (lower case) -> floorgate's. The two vocabularies do not
# clash: Kepware's Long is TIA's DInt, Kepware's Float TIA's Real.
DATA_TYPES = {
    "boolean": DataType.BOOL,
    "bool": DataType.BOOL,
    "short": DataType.INT16,
    "int": DataType.INT16,
    "word": DataType.UINT16,
    "uint": DataType.UINT16,
    "long": DataType.INT32,
    "dint": DataType.INT32,
    "dword": DataType.UINT32,
    "udint": DataType.UINT32,
    "float": DataType.FLOAT32,
    "real": DataType.FLOAT32,
    "double": DataType.FLOAT64,
    "lreal": DataType.FLOAT64,
    "llong": DataType.INT64,
    "lint": DataType.INT64,
    "qword": DataType.UINT64,
    "ulint": DataType.UINT64,
    "lword": DataType.UINT64,
    "string": DataType.STRING,
}
REFUSED_TYPES = {
    ("byte", "char", "sint", "usint"): "is 8 bits, half a Modbus register; floorgate reads "
    "whole registers (read the word holding it as uint16)",
    ("bcd", "lbcd"): "is binary-coded decimal, which floorgate does not decode",
    (
        "date",
        "time",
        "ltime",
        "s5time",
        "time_of_day",
        "tod",
        "ltod",
        "date_and_time",
        "dtl",
        "ldt",
    ): "is a date or time, which floorgate has no data type for (read it as the integer "
    "it is stored as, e.g. DInt milliseconds for Time)",
    ("wstring", "wchar"): "is a 16-bit character type, which floorgate does not decode",
}


def data_type_of(text: str) -> DataType | None:
    """floorgate's data type for an export's; None for Kepware's Default (the area's).
    Raises RowRefused naming the type and why."""
    key = text.strip().lower()
    if key in ("", "default"):
        return None
    if key in DATA_TYPES:
        return DATA_TYPES[key]
    if "array" in key or "[" in key:
        raise RowRefused(f"data type {text!r} is an array; import one tag per value")
    for names, why in REFUSED_TYPES.items():
        if key in names:
            raise RowRefused(f"data type {text!r} {why}")
    known = "Boolean/Bool, Short/Int, Word/UInt, Long/DInt, DWord/UDInt, Float/Real, ..."
    raise RowRefused(f"unknown data type {text!r}; known: {known}")


SIGNAL_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


def signal_name(tag: str) -> str:
    """A tag name made a floorgate signal name: letters, digits, _ . - (others as _)."""
    return SIGNAL_NAME.sub("_", tag.strip()).strip("_")


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        raise RowRefused(f"{text!r} is not a number") from None


def _bits_fit(location: Location, data_type: DataType, text: str) -> None:
    bits = location.input_type in ("coil", "discrete_input") or location.bit is not None
    if bits and data_type is not DataType.BOOL:
        raise RowRefused(f"address {text!r} is a bit, but the data type is {data_type.value}")
    if location.string_bytes is not None and data_type is not DataType.STRING:
        raise RowRefused(f"address {text!r} is a string, but the data type is {data_type.value}")
    if data_type is DataType.STRING and location.string_bytes is None:
        raise RowRefused(
            f"a string needs its length in the address (Kepware 400001.20H: 20 bytes); {text!r}"
        )
    if location.width in (2, 4) and data_type in REGISTER_COUNT:
        bytes_named = location.width
        bytes_typed = REGISTER_COUNT[data_type] * 2
        if data_type is not DataType.BOOL and bytes_typed <= 4 and bytes_typed != bytes_named:
            raise RowRefused(
                f"address {text!r} names {bytes_named} bytes, but {data_type.value} is "
                f"{bytes_typed}"
            )


MAX_STRING_REGISTERS = 125  # a signal's length: what one Modbus read returns


def _extent_fits(location: Location, kind: DataType, text: str) -> None:
    """The value ends at the last Modbus address at the latest: a float32 at 65535, a bit
    past it (an S7 %I8192.0) or a string longer than one read would not load."""
    if kind is DataType.STRING:
        assert location.string_bytes is not None
        count = math.ceil(location.string_bytes / 2)
        if count < 1 or count > MAX_STRING_REGISTERS:
            raise RowRefused(
                f"address {text!r}: a string of {location.string_bytes} bytes; floorgate reads "
                f"strings of 1-{MAX_STRING_REGISTERS * 2} bytes (1-{MAX_STRING_REGISTERS} "
                "registers)"
            )
    elif location.input_type in ("coil", "discrete_input"):
        count = 1
    else:
        count = REGISTER_COUNT[kind]
    last = location.address + count - 1
    if last > MAX_ADDRESS:
        kind_text = "string" if kind is DataType.STRING else kind.value
        where = (
            f"a {kind_text} there takes registers {location.address}-{last}"
            if count > 1
            else f"it is {location.input_type.replace('_', ' ')} {location.address}"
        )
        raise RowRefused(f"address {text!r}: {where}, past the last Modbus address {MAX_ADDRESS}")


def signal_fields(
    location: Location,
    data_type: DataType | None,
    *,
    address_text: str,
    base_address: int,
    swap: str,
) -> dict[str, Any]:
    """The YAML keys of one signal at ``location``."""
    bits = location.input_type in ("coil", "discrete_input")
    kind = data_type or (DataType.BOOL if bits or location.bit is not None else DataType.UINT16)
    _bits_fit(location, kind, address_text)
    _extent_fits(location, kind, address_text)
    address = location.address - base_address
    if address < 0:
        raise RowRefused(
            f"address {address_text!r} ({location.address}) is below --base-address {base_address}"
        )
    fields: dict[str, Any] = {"address": address}
    if location.input_type != "holding":
        fields["input_type"] = location.input_type
    if kind is not DataType.UINT16:
        fields["data_type"] = kind.value
    if location.bit is not None:
        fields["bit"] = location.bit
    if kind is DataType.STRING:
        assert location.string_bytes is not None
        fields["length"] = math.ceil(location.string_bytes / 2)
        if location.low_byte_first:
            fields["swap"] = "byte"
    elif swap != "none" and REGISTER_COUNT.get(kind, 1) > 1:
        fields["swap"] = swap
    return fields


def kepware_scaling(row: dict[str, str], fields: dict[str, Any]) -> str:
    """scale and offset from Kepware's linear scaling and negation; a note for the comment."""
    mode = (row.get("scaling") or "").strip().lower()
    notes = []
    scale, offset = 1.0, 0.0
    if mode in ("linear", "lin"):
        raw_low, raw_high = _number(row.get("raw low")), _number(row.get("raw high"))
        low, high = _number(row.get("scaled low")), _number(row.get("scaled high"))
        if None in (raw_low, raw_high, low, high) or raw_low == raw_high:
            raise RowRefused("linear scaling needs Raw Low < Raw High and Scaled Low/High")
        assert raw_low is not None and raw_high is not None and low is not None and high is not None
        scale = (high - low) / (raw_high - raw_low)
        offset = low - raw_low * scale
        if (row.get("clamp low") or "").strip() == "1" or (
            row.get("clamp high") or ""
        ).strip() == "1":
            notes.append("Kepware clamps it to the scaled range; floorgate does not")
    elif mode not in ("", "none"):
        raise RowRefused(f"scaling {row.get('scaling')!r} is not linear; floorgate scales linearly")
    if (row.get("negate value") or "").strip() == "1":
        scale, offset = -scale, -offset
    if scale != 1.0:
        fields["scale"] = round(scale, 12)
    if offset != 0.0:
        fields["offset"] = round(offset, 12)
    return "; ".join(notes)
