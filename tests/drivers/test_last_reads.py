"""The drivers' tables of last reads, behind the status page's signal view."""

from __future__ import annotations

from datetime import UTC, datetime

from asyncua import ua

from drivers.base import LastReads, Quality, Sample
from drivers.modbus.driver import _raw_text
from drivers.opcua.values import raw_text

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_last_change_moves_only_when_the_value_or_quality_changes() -> None:
    reads = LastReads()
    reads.put([Sample("t", 73.4, Quality.GOOD, NOW), Sample("s", 1, Quality.GOOD, NOW)], 10.0)
    reads.put([Sample("t", 73.4, Quality.GOOD, NOW), Sample("s", 2, Quality.GOOD, NOW)], 20.0)
    assert reads.changed == {"t": 10.0, "s": 20.0}
    reads.put([Sample("t", None, Quality.BAD, NOW, "unit 1 does not answer")], 30.0)
    assert reads.changed["t"] == 30.0 and reads.samples["t"].error == "unit 1 does not answer"
    reads.put([Sample("t", None, Quality.BAD, NOW, "still not")], 40.0)
    assert reads.changed["t"] == 30.0


def test_modbus_raw_values_are_shown_as_vendor_tools_show_them() -> None:
    assert _raw_text([0x4292, 0xCCCD]) == "0x4292 0xCCCD"
    assert _raw_text([7]) == "0x0007"
    assert _raw_text(True) == "1" and _raw_text(False) == "0"
    assert _raw_text(None) is None


def test_opcua_raw_values_name_the_variant_type() -> None:
    assert raw_text(ua.Variant(73.5, ua.VariantType.Float)) == "Float 73.5"
    assert raw_text(ua.Variant(7, ua.VariantType.UInt16)) == "UInt16 7"
    long = raw_text(ua.Variant(list(range(100)), ua.VariantType.Int32))
    assert long is not None and long.startswith("Int32 [0, 1, 2") and long.endswith("...")
    assert raw_text(None) is None
