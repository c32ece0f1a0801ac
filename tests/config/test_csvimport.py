"""`floorgate import-csv`: Kepware and TIA Portal tag exports made a template's signals;
every row that does not map to Modbus refused with its line and why; the printed YAML
pasted into a config loads."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.config.csvimport import (
    CsvImportError,
    HoldingArea,
    RowRefused,
    data_type_of,
    location_of,
    read_tag_export,
    signal_fields,
    template_yaml,
)
from agent.config.loader import load_config
from drivers.codecs import DataType

FIXTURES = Path(__file__).parent / "fixtures"
KEPWARE = FIXTURES / "kepware_press.csv"
TIA = FIXTURES / "tia_press.csv"


def fields_of(path: Path, **options: object) -> dict[str, dict[str, object]]:
    return {s.name: s.fields for s in read_tag_export(path, **options).signals}  # type: ignore[arg-type]


def test_a_kepware_export_becomes_signals_with_scaling_and_units() -> None:
    result = read_tag_export(KEPWARE)
    assert result.kind == "Kepware CSV export"
    signals = {s.name: s for s in result.signals}
    assert {name: s.fields for name, s in signals.items()} == {
        "State": {"address": 0},
        "Reason": {"address": 1},
        "GoodCount": {"address": 2, "data_type": "uint32"},
        "ScrapCount": {"address": 4},
        "OilTemp": {"address": 5, "data_type": "float32", "unit_of_measurement": "degC"},
        "Pressure": {
            "address": 7,
            "data_type": "int16",
            "scale": 0.1,
            "unit_of_measurement": "bar",
        },
        "DoorOpen": {"address": 9, "data_type": "bool", "bit": 3},
        "PartDone": {"address": 0, "input_type": "coil", "data_type": "bool"},
        "EStop": {"address": 0, "input_type": "discrete_input", "data_type": "bool"},
        "MotorCurrent": {
            "address": 0,
            "input_type": "input",
            "data_type": "float32",
            "unit_of_measurement": "A",
        },
        "RecipeName": {"address": 19, "data_type": "string", "length": 10},
        "StrokeCount": {"address": 30, "data_type": "int32"},
        "Vibration": {
            "address": 32,
            "scale": 0.003125,
            "offset": -12.5,
            "unit_of_measurement": "mm/s",
        },
    }
    assert signals["GoodCount"].comment == "Good parts counter"
    assert "Kepware clamps it to the scaled range" in signals["Vibration"].comment
    assert [(r.line, r.tag) for r in result.refused] == [
        (15, "ToolCode"),
        (16, "ShiftStart"),
        (17, "ModeByte"),
        (18, "ForceCurve"),
        (19, "Flow"),
    ]
    reasons = [r.reason for r in result.refused]
    assert "binary-coded decimal" in reasons[0]
    assert "date or time" in reasons[1]
    assert "8 bits, half a Modbus register" in reasons[2]
    assert "is an array" in reasons[3]
    assert "scaling 'Square Root' is not linear" in reasons[4]
    assert result.refused[0].render("tags.csv") == (
        "tags.csv:15: tag 'ToolCode': data type 'BCD' is binary-coded decimal, which "
        "floorgate does not decode"
    )


def test_a_tia_tag_table_becomes_signals_counted_from_mb_hold_reg() -> None:
    result = read_tag_export(TIA, mb_hold_reg="MW100")
    assert result.kind == "TIA Portal tag table"
    assert {s.name: s.fields for s in result.signals} == {
        "Press_State": {"address": 0},
        "Press_Reason": {"address": 1},
        "Good_Count": {"address": 2, "data_type": "int32"},
        "Scrap_Count": {"address": 4, "data_type": "int16"},
        "Oil_Temp": {"address": 5, "data_type": "float32"},
        # %M114.3: byte 14 of the area is the high byte of register 7.
        "Door_Open": {"address": 7, "data_type": "bool", "bit": 11},
        "Part_Done": {"address": 0, "input_type": "coil", "data_type": "bool"},
        "E_Stop": {"address": 1, "input_type": "discrete_input", "data_type": "bool"},
        "Motor_Current": {"address": 32, "input_type": "input", "data_type": "int16"},
        "Spindle_Speed": {"address": 34, "input_type": "input", "data_type": "float32"},
    }
    spindle = next(s for s in result.signals if s.name == "Spindle_Speed")
    assert spindle.comment == "Spindle Speed: Spindle speed in rpm"  # the name as exported
    refused = {r.tag: r.reason for r in result.refused}
    assert set(refused) == {"Mode_Byte", "Lamp_Word", "Cycle_Time", "Old_Counter", "Clock_Byte"}
    assert "output words" in refused["Lamp_Word"]
    assert refused["Old_Counter"] == (
        "address '%MW20' is outside the holding registers (MB_HOLD_REG starts at %MW100)"
    )


def test_without_mb_hold_reg_memory_tags_are_refused_saying_what_to_give() -> None:
    result = read_tag_export(TIA)
    assert [s.name for s in result.signals] == [
        "Part_Done",
        "E_Stop",
        "Motor_Current",
        "Spindle_Speed",
    ]
    reason = next(r.reason for r in result.refused if r.tag == "Press_State")
    assert "--mb-hold-reg" in reason and "MW100 or DB10" in reason


def test_a_german_tia_export_with_semicolons_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plc_tags.csv"
    path.write_text(
        "\ufeffName;Pfad;Datentyp;Logische Adresse;Kommentar\n"
        "Zustand;Standard-Variablentabelle;Word;%DB10.DBW0;Maschinenzustand\n"
        "Tür_offen;Standard-Variablentabelle;Bool;%DB10.DBX3.0;Schutztür\n"
        "Eingang;Standard-Variablentabelle;Bool;%E1.2;\n",
        encoding="utf-8",
    )
    result = read_tag_export(path, mb_hold_reg="DB10")
    assert result.kind == "TIA Portal tag table" and not result.refused
    assert {s.name: s.fields for s in result.signals} == {
        "Zustand": {"address": 0},
        "T_r_offen": {"address": 1, "data_type": "bool", "bit": 0},
        "Eingang": {"address": 10, "input_type": "discrete_input", "data_type": "bool"},
    }


@pytest.mark.parametrize(
    ("address", "input_type", "number", "bit"),
    [
        ("40001", "holding", 0, None),
        ("400001", "holding", 0, None),
        ("465536", "holding", 65535, None),
        ("30010", "input", 9, None),
        ("000017", "coil", 16, None),
        ("10001", "discrete_input", 0, None),
        ("400001.15", "holding", 0, 15),
        ("HR1", "holding", 0, None),
        ("hr100", "holding", 99, None),
        ("IR5", "input", 4, None),
        ("C1", "coil", 0, None),
        ("DI3", "discrete_input", 2, None),
        ("%I0.1", "discrete_input", 1, None),
        ("%I2.0", "discrete_input", 16, None),
        ("%Q1.2", "coil", 10, None),
        ("%IW64", "input", 32, None),
        ("IW64", "input", 32, None),
        ("%MW104", "holding", 2, None),
        ("%M100.0", "holding", 0, 8),
        ("%M101.0", "holding", 0, 0),
    ],
)
def test_address_forms_map_to_modbus(
    address: str, input_type: str, number: int, bit: int | None
) -> None:
    location = location_of(address, HoldingArea.parse("MW100"))
    assert (location.input_type, location.address, location.bit) == (input_type, number, bit)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("400000", "1-65536 (1-based)"),
        ("465537", "1-65536 (1-based)"),
        ("400001.16", "bit is 0-15"),
        ("000001.2", "no bit or length"),
        ("40001[4]", "array"),
        ("%MB100", "one byte"),
        ("%IW3", "odd byte"),
        ("%QW0", "output words"),
        ("%MW101", "odd byte"),
        ("%MW98", "outside the holding registers"),
        ("%DB11.DBW0", "outside the holding registers"),
        ("%T5", "not one floorgate reads"),
        ("N7:0", "not one floorgate reads"),
        ("", "no address"),
    ],
)
def test_addresses_that_do_not_map_are_refused_saying_why(address: str, why: str) -> None:
    with pytest.raises(RowRefused, match=re.escape(why)):
        location_of(address, HoldingArea.parse("MW100"))


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Word", DataType.UINT16),
        ("Short", DataType.INT16),
        ("DWord", DataType.UINT32),
        ("Long", DataType.INT32),
        ("Float", DataType.FLOAT32),
        ("Double", DataType.FLOAT64),
        ("Boolean", DataType.BOOL),
        ("LLong", DataType.INT64),
        ("QWord", DataType.UINT64),
        ("Int", DataType.INT16),
        ("UInt", DataType.UINT16),
        ("DInt", DataType.INT32),
        ("UDInt", DataType.UINT32),
        ("Real", DataType.FLOAT32),
        ("LReal", DataType.FLOAT64),
        ("Bool", DataType.BOOL),
        ("String", DataType.STRING),
        ("Default", None),
    ],
)
def test_data_types_map_to_floorgate_types(written: str, expected: DataType | None) -> None:
    assert data_type_of(written) is expected


@pytest.mark.parametrize(
    "written",
    [
        "Byte",
        "Char",
        "SInt",
        "USInt",
        "BCD",
        "LBCD",
        "Time",
        "DTL",
        "Float Array",
        "Array[0..9] of Int",
        "Struct",
    ],
)
def test_data_types_without_a_floorgate_type_are_refused(written: str) -> None:
    with pytest.raises(RowRefused, match=re.escape(f"data type '{written}'")):
        data_type_of(written)


def test_a_type_that_does_not_fit_its_address_is_refused() -> None:
    for address, data_type, why in [
        ("%ID4", DataType.UINT16, "names 4 bytes, but uint16 is 2"),
        ("%IW4", DataType.FLOAT32, "names 2 bytes, but float32 is 4"),
        ("000001", DataType.UINT16, "is a bit, but the data type is uint16"),
        ("400001", DataType.STRING, "a string needs its length"),
        ("400001.20H", DataType.UINT16, "is a string, but the data type is uint16"),
    ]:
        with pytest.raises(RowRefused, match=why):
            signal_fields(
                location_of(address, None),
                data_type,
                address_text=address,
                base_address=0,
                swap="none",
            )


@pytest.mark.parametrize(
    ("address", "data_type", "why"),
    [
        ("465536", DataType.FLOAT32, "a float32 there takes registers 65535-65536, past the"),
        ("465534", DataType.FLOAT64, "a float64 there takes registers 65533-65536, past the"),
        ("%I8192.0", DataType.BOOL, "it is discrete input 65536, past the last Modbus address"),
        ("%Q8192.1", DataType.BOOL, "it is coil 65537, past the last Modbus address 65535"),
        ("465531.14H", DataType.STRING, "a string there takes registers 65530-65536, past"),
        ("400001.252H", DataType.STRING, "a string of 252 bytes; floorgate reads strings of 1-250"),
        ("400001.0H", DataType.STRING, "a string of 0 bytes; floorgate reads strings of 1-250"),
    ],
)
def test_a_value_past_the_last_modbus_address_is_refused(
    address: str, data_type: DataType, why: str
) -> None:
    """Refused here, with the row's line, rather than printed into a template that no
    config made from it could load."""
    with pytest.raises(RowRefused, match=re.escape(why)):
        signal_fields(
            location_of(address, None),
            data_type,
            address_text=address,
            base_address=0,
            swap="none",
        )


@pytest.mark.parametrize(
    ("address", "data_type", "fields"),
    [
        ("465536", DataType.UINT16, {"address": 65535}),
        ("465535", DataType.FLOAT32, {"address": 65534, "data_type": "float32"}),
        ("%I8191.7", DataType.BOOL, {"address": 65535, "input_type": "discrete_input"}),
        ("465531.12H", DataType.STRING, {"address": 65530, "length": 6}),
        ("400001.250H", DataType.STRING, {"address": 0, "length": 125}),
    ],
)
def test_a_value_ending_at_the_last_modbus_address_is_imported(
    address: str, data_type: DataType, fields: dict[str, object]
) -> None:
    made = signal_fields(
        location_of(address, None), data_type, address_text=address, base_address=0, swap="none"
    )
    assert fields.items() <= made.items()


def test_base_address_and_swap_shape_the_template() -> None:
    fields = fields_of(KEPWARE, base_address=2, swap="word")
    assert fields["GoodCount"] == {"address": 0, "data_type": "uint32", "swap": "word"}
    assert fields["ScrapCount"] == {"address": 2}  # one register: nothing to swap
    assert "State" not in fields  # below the base: refused
    refused = {r.tag: r.reason for r in read_tag_export(KEPWARE, base_address=2).refused}
    assert refused["State"] == "address '400001' (0) is below --base-address 2"


def test_names_clashing_after_cleaning_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    path.write_text(
        '"Tag Name","Address","Data Type"\n"Motor Speed","400001","Word"\n'
        '"Motor_Speed","400002","Word"\n\n',
        encoding="utf-8",
    )
    result = read_tag_export(path)
    assert [s.name for s in result.signals] == ["Motor_Speed"]
    assert result.refused[0].reason == "its name 'Motor_Speed' is already the signal of line 2"


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("tags.xlsx", "", "save it as CSV first"),
        ("tags.csv", "Symbol,Value\nA,1\n", "not a Kepware CSV export"),
        ("missing.csv", None, "cannot read"),
    ],
)
def test_a_file_that_is_no_tag_export_is_refused(
    tmp_path: Path, name: str, content: str | None, why: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(CsvImportError, match=why):
        read_tag_export(path)


def test_a_file_the_csv_reader_cannot_read_is_one_message_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tags.csv"
    path.write_text(f'"Tag Name","Address","Data Type"\n"{"x" * 200_000}","400001","Word"\n')
    with pytest.raises(CsvImportError, match=r"not readable as CSV after line \d+ \(field larger"):
        read_tag_export(path)
    proc = _run(str(path), "--template", "t")
    assert proc.returncode == 65 and "Traceback" not in proc.stderr
    assert "floorgate import-csv: " in proc.stderr and "not readable as CSV" in proc.stderr


def test_a_cut_off_utf16_export_is_read_as_far_as_it_goes(tmp_path: Path) -> None:
    """Excel's "Unicode text" is UTF-16; a file cut one byte short is no traceback."""
    text = '"Tag Name"\t"Address"\t"Data Type"\r\n"Speed"\t"400001"\t"Word"\r\n'
    path = tmp_path / "tags.csv"
    path.write_bytes(text.encode("utf-16") + b"\x00")
    result = read_tag_export(path)
    assert [(s.name, s.fields) for s in result.signals] == [("Speed", {"address": 0})]


def test_mb_hold_reg_is_checked() -> None:
    assert HoldingArea.parse("%MW100") == HoldingArea("M", 100)
    assert HoldingArea.parse("P#M1000.0") == HoldingArea("M", 1000)
    assert HoldingArea.parse("DB10") == HoldingArea("DB10", 0)
    assert str(HoldingArea.parse("%DB10.DBW20")) == "%DB10.DBW20"
    with pytest.raises(CsvImportError, match=r"e\.g\. MW100 or DB10"):
        HoldingArea.parse("Q0")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "import-csv", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_printed_template_pasted_into_a_config_loads(tmp_path: Path) -> None:
    proc = _run(str(KEPWARE), "--template", "press")
    assert proc.returncode == 1  # some rows were refused: said on stderr, the rest printed
    assert proc.stderr.count("not imported: ") == 5
    assert f"{KEPWARE}:15: tag 'ToolCode'" in proc.stderr
    assert proc.stdout.startswith("# floorgate import-csv kepware_press.csv --template press\n")
    rules = """\
        state: {signal: State, map: {0: stopped, 1: running}, reason_signal: Reason}
        counters: [{signal: GoodCount}, {signal: PartDone, mode: edge}]
        alarms: [{name: door, signal: DoorOpen}, {name: hot, signal: OilTemp, high: 70}]
        samples: [{signal: Pressure, deadband: 1.0}, {signal: RecipeName, interval: 1m}]
    """
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - {name: plc, type: modbus_tcp, host: 10.0.0.7}\n"
        + proc.stdout
        + textwrap.indent(textwrap.dedent(rules), "    ")
        + "machines:\n"
        + "  - {name: press1, template: press, source: plc}\n"
        + "  - {name: press2, template: press, source: plc, base_address: 100}\n"
    )
    loaded = load_config(config, environ={})
    signals: dict[str, Any] = {s.name: s for s in loaded.sources[0].signals}
    assert len(signals) == 26
    assert signals["press2.GoodCount"].address == 102
    assert signals["press2.Vibration"].scale == 0.003125
    assert loaded.machines[1].counters[1].signal == "press2.PartDone"


def test_a_clean_import_exits_0_and_a_useless_file_65(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_text('"Tag Name","Address","Data Type"\n"Speed","HR10","Float"\n')
    proc = _run(str(clean), "--template", "drive")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "      - {name: Speed, address: 9, data_type: float32}\n" in proc.stdout
    none = tmp_path / "none.csv"
    none.write_text('"Tag Name","Address","Data Type"\n"Mode","400001","Byte"\n')
    proc = _run(str(none), "--template", "drive")
    assert proc.returncode == 65 and "no row of" in proc.stderr and proc.stdout == ""
    proc = _run(str(tmp_path / "absent.csv"), "--template", "drive")
    assert proc.returncode == 65 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_template_name_or_swap_is_a_usage_error() -> None:
    proc = _run(str(KEPWARE), "--template", "press 1")
    assert proc.returncode == 2 and "letters, digits, _ and - only" in proc.stderr
    proc = _run(str(KEPWARE), "--template", "press", "--swap", "little")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = _run(str(KEPWARE), "--template", "press", "--base-address", "-5")
    assert proc.returncode == 2 and "a Modbus address, 0-65535" in proc.stderr


def test_the_template_text_says_where_it_came_from() -> None:
    text = template_yaml(read_tag_export(TIA, mb_hold_reg="MW100"), "press", command="cmd")
    assert "# 10 signals from tia_press.csv (TIA Portal tag table); 5 rows not imported" in text
    assert "templates:\n  press:\n    signals:\n      - {name: Press_State, address: 0}" in text
