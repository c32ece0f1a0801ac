"""`floorgate import-csv`: a tag list exported from Kepware or TIA Portal made a template's
signals, printed as YAML to paste into config.yaml.

Why a command that prints YAML, not a ``signals_csv:`` key read at every start: the config
stays one file, the one the agent's checksum, `check-config`, the environment overrides
and the reload diff are about (a CSV beside it could change under a running agent unseen);
an export is made once per machine type, and its names, scales and units usually want a
look before they are trusted; and a plant's export is often bigger than the machine (whole
PLC tag tables), so the engineer picks rows anyway.

Two shapes are read, recognised by their header row (comma, semicolon or tab separated,
UTF-8 with or without a byte order mark):

- Kepware CSV export (File > Export CSV of a device or tag group): ``"Tag Name",
  "Address","Data Type","Respect Data Type","Client Access","Scan Rate","Scaling",
  "Raw Low","Raw High","Scaled Low","Scaled High","Scaled Data Type","Clamp Low",
  "Clamp High","Eng Units","Description","Negate Value"``. Used: the name, address, data
  type, linear scaling (to scale and offset), negation, units and description.
- TIA Portal PLC tag table (exported, saved as CSV): ``Name,Path,Data Type,Logical
  Address,Comment,Hmi Visible,Hmi Accessible,Hmi Writeable,...`` (German: ``Name,Pfad,
  Datentyp,Logische Adresse,Kommentar``). Used: the name, data type, address, comment.

Addresses become Modbus addresses (0-based, as floorgate counts them):

- Modbus notation, one-based: ``400001`` / ``40001`` holding, ``300001`` / ``30001``
  input register, ``000001`` / ``00001`` coil, ``100001`` / ``10001`` discrete input;
  ``400001.3`` a bit of a register; ``400010.20H`` (``L``) a string of 20 bytes, high
  (low) byte first. The prefix form ``HR1``, ``IR1``, ``C1`` / ``CO1``, ``DI1`` too.
- S7 addresses as an S7-1200/1500 ``MB_SERVER`` serves them: ``%I0.0`` discrete input
  0 (byte * 8 + bit), ``%Q0.0`` coil 0, ``%IW64`` / ``%ID64`` input register 32 (byte / 2);
  ``%MW``, ``%MD``, ``%M`` bits and ``%DB<n>.DBW`` / ``DBD`` / ``DBX`` holding registers,
  counted from where ``MB_HOLD_REG`` starts (``--mb-hold-reg MW100`` or ``DB10``).

A row that does not map (an 8-bit type, BCD, a date, an array, an output word, an
address outside the holding area, ...) is refused with its line and the reason; the
others are still imported.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.codecs import REGISTER_COUNT, DataType

MAX_ADDRESS = 65535


class CsvImportError(Exception):
    """The file as a whole cannot be imported (unreadable, not a known export)."""


class RowRefused(Exception):
    """One row cannot be imported: the message says why."""


@dataclass(frozen=True)
class ImportedSignal:
    name: str
    fields: dict[str, Any]  # the signal's keys besides its name, as written in the YAML
    comment: str
    line: int


@dataclass(frozen=True)
class RefusedRow:
    line: int
    tag: str
    reason: str

    def render(self, file: str) -> str:
        return f"{file}:{self.line}: tag {self.tag!r}: {self.reason}"


@dataclass
class TagImport:
    file: str
    kind: str  # "Kepware CSV export" | "TIA Portal tag table"
    signals: list[ImportedSignal] = field(default_factory=list)
    refused: list[RefusedRow] = field(default_factory=list)


# -- data types ---------------------------------------------------------------------------

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


# -- addresses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldingArea:
    """Where the S7 MB_SERVER's holding registers start (its MB_HOLD_REG parameter):
    in M memory (``area`` "M") or a data block (``area`` "DB10"), at ``byte``."""

    area: str
    byte: int

    @classmethod
    def parse(cls, text: str) -> HoldingArea:
        written = text.strip().upper().lstrip("%").replace("P#", "")
        if match := re.fullmatch(r"M[WBD]?(\d+)(?:\.0)?", written):
            return cls("M", int(match.group(1)))
        if match := re.fullmatch(r"DB(\d+)(?:\.DB[XBWD](\d+)(?:\.0)?)?", written):
            return cls(f"DB{match.group(1)}", int(match.group(2) or 0))
        raise CsvImportError(
            f"--mb-hold-reg {text!r}: write where MB_HOLD_REG starts, e.g. MW100 or DB10"
        )

    def __str__(self) -> str:
        return f"%MW{self.byte}" if self.area == "M" else f"%{self.area}.DBW{self.byte}"


@dataclass(frozen=True)
class Location:
    input_type: str
    address: int
    bit: int | None = None
    string_bytes: int | None = None  # Kepware .<n>H / .<n>L: a string of n bytes
    low_byte_first: bool = False
    width: int | None = None  # S7: bytes the address names (1 bit/byte, 2 W, 4 D)


MODBUS_AREAS = {"0": "coil", "1": "discrete_input", "3": "input", "4": "holding"}
PREFIX_AREAS = {"HR": "holding", "IR": "input", "C": "coil", "CO": "coil", "DI": "discrete_input"}


def _one_based(number: int, text: str) -> int:
    if number < 1 or number - 1 > MAX_ADDRESS:
        raise RowRefused(f"address {text!r}: the register number must be 1-65536 (1-based)")
    return number - 1


def _modbus_location(text: str) -> Location | None:
    written = text.strip().upper()
    if match := re.fullmatch(r"([0134])(\d{4,5})(?:\.(\d{1,3})([HL])?)?", written):
        area, number, sub, order = match.groups()
        input_type = MODBUS_AREAS[area]
        address = _one_based(int(number), text)
    elif match := re.fullmatch(r"(HR|IR|CO|C|DI)(\d+)(?:\.(\d{1,3})([HL])?)?", written):
        kind, number, sub, order = match.groups()
        input_type = PREFIX_AREAS[kind]
        address = _one_based(int(number), text)
    else:
        return None
    if sub is None:
        return Location(input_type, address)
    if input_type in ("coil", "discrete_input"):
        raise RowRefused(f"address {text!r}: a coil or discrete input has no bit or length")
    if order is not None:
        return Location(input_type, address, string_bytes=int(sub), low_byte_first=order == "L")
    if int(sub) > 15:
        raise RowRefused(f"address {text!r}: a register's bit is 0-15")
    return Location(input_type, address, bit=int(sub))


S7_WIDTH = {"": 1, "X": 1, "B": 1, "W": 2, "D": 4}


def _s7_location(text: str, holding: HoldingArea | None) -> Location | None:
    written = text.strip().upper().lstrip("%")
    if match := re.fullmatch(r"([IEQAM])([BWD]?)(\d+)(?:\.([0-7]))?", written):
        area, size, byte_text, bit_text = match.groups()
        area = {"E": "I", "A": "Q"}.get(area, area)  # German mnemonics: E inputs, A outputs
    elif match := re.fullmatch(r"DB(\d+)\.DB([XBWD])(\d+)(?:\.([0-7]))?", written):
        db, size, byte_text, bit_text = match.groups()
        area = f"DB{db}"
    else:
        return None
    byte = int(byte_text)
    if (size in ("", "X")) != (bit_text is not None):
        raise RowRefused(f"address {text!r} is not an S7 address (a bit is <byte>.<0-7>)")
    if size == "B":
        raise RowRefused(f"address {text!r} is one byte, half a Modbus register")
    if area == "I":
        if bit_text is not None:  # MB_SERVER: discrete inputs 0... are %I0.0...
            return Location("discrete_input", byte * 8 + int(bit_text), width=1)
        if byte % 2:
            raise RowRefused(f"address {text!r} starts at an odd byte, not on a register")
        return Location("input", byte // 2, width=S7_WIDTH[size])  # %IW0 is input register 0
    if area == "Q":
        if bit_text is not None:
            return Location("coil", byte * 8 + int(bit_text), width=1)
        raise RowRefused(
            f"address {text!r}: MB_SERVER serves output words to no read function "
            "(only %Q bits as coils)"
        )
    return _holding_location(text, area, byte, size, bit_text, holding)


def _holding_location(
    text: str,
    area: str,
    byte: int,
    size: str,
    bit_text: str | None,
    holding: HoldingArea | None,
) -> Location:
    """An M or DB address, as a holding register counted from MB_HOLD_REG."""
    if holding is None:
        raise RowRefused(
            f"address {text!r} is a holding register only through MB_HOLD_REG: give "
            "where it starts with --mb-hold-reg (e.g. MW100 or DB10)"
        )
    if area != holding.area or byte < holding.byte:
        raise RowRefused(
            f"address {text!r} is outside the holding registers (MB_HOLD_REG starts at {holding})"
        )
    offset = byte - holding.byte
    if bit_text is not None:
        # S7 words are big-endian: the even byte is the high byte of the register.
        bit = int(bit_text) + (8 if offset % 2 == 0 else 0)
        return Location("holding", offset // 2, bit=bit, width=1)
    if offset % 2:
        raise RowRefused(f"address {text!r} starts at an odd byte, not on a register")
    return Location("holding", offset // 2, width=S7_WIDTH[size])


def location_of(text: str, holding: HoldingArea | None) -> Location:
    """The Modbus location of an export's address; raises RowRefused saying why not."""
    if not text.strip():
        raise RowRefused("no address")
    if "[" in text:
        raise RowRefused(f"address {text!r} is an array; import one tag per value")
    found = _modbus_location(text) or _s7_location(text, holding)
    if found is None:
        raise RowRefused(
            f"address {text!r} is not one floorgate reads: Modbus 400001/40001, HR1, "
            "or an S7 address served by MB_SERVER (%I0.0, %IW64, %MW10, %DB1.DBW0)"
        )
    return found


# -- rows ---------------------------------------------------------------------------------

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
        fields["length"] = max(1, math.ceil(location.string_bytes / 2))
        if location.low_byte_first:
            fields["swap"] = "byte"
    elif swap != "none" and REGISTER_COUNT.get(kind, 1) > 1:
        fields["swap"] = swap
    return fields


def _kepware_scaling(row: dict[str, str], fields: dict[str, Any]) -> str:
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


# -- files --------------------------------------------------------------------------------

KEPWARE = "Kepware CSV export"
TIA = "TIA Portal tag table"
HEADERS: dict[str, dict[str, tuple[str, ...]]] = {
    KEPWARE: {"name": ("tag name",), "address": ("address",), "type": ("data type",)},
    TIA: {
        "name": ("name",),
        "address": ("logical address", "logische adresse"),
        "type": ("data type", "datentyp"),
    },
}
COMMENT_COLUMNS = ("description", "comment", "kommentar")
UNIT_COLUMNS = ("eng units", "eng. units")


def _read_text(path: Path) -> str:
    if path.suffix.lower() in (".xlsx", ".xls"):
        raise CsvImportError(
            f"{path} is a spreadsheet: save it as CSV first (CSV UTF-8, comma separated)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CsvImportError(f"cannot read {path}: {exc.strerror}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # an older Windows export


def _rows(text: str) -> tuple[csv.DictReader[str], str]:
    # The separator is the one the header row has most of: a German Excel writes ";".
    header = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    for kind, wanted in HEADERS.items():
        if all(any(name in columns for name in names) for names in wanted.values()):
            return reader, kind
    raise CsvImportError(
        "not a Kepware CSV export (columns Tag Name, Address, Data Type, ...) nor a TIA "
        "Portal tag table (Name, Path, Data Type, Logical Address, Comment, ...); its "
        f"columns: {', '.join(columns) or '(none)'}"
    )


def _column(row: dict[str, str], names: Iterable[str]) -> str:
    for name in names:
        value = row.get(name)
        if value:
            return value.strip()
    return ""


def read_tag_export(
    path: Path,
    *,
    base_address: int = 0,
    mb_hold_reg: str | None = None,
    swap: str = "none",
) -> TagImport:
    """The signals of a Kepware or TIA Portal export, and the rows refused (with why)."""
    holding = HoldingArea.parse(mb_hold_reg) if mb_hold_reg else None
    reader, kind = _rows(_read_text(path))
    result = TagImport(str(path), kind)
    wanted = HEADERS[kind]
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        tag = _column(row, wanted["name"])
        if not tag and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        try:
            signal = _signal(row, kind, tag, line, holding, base_address, swap)
            if signal.name in seen:
                raise RowRefused(
                    f"its name {signal.name!r} is already the signal of line {seen[signal.name]}"
                )
        except RowRefused as exc:
            result.refused.append(RefusedRow(line, tag, str(exc)))
            continue
        seen[signal.name] = line
        result.signals.append(signal)
    return result


def _signal(
    row: dict[str, str],
    kind: str,
    tag: str,
    line: int,
    holding: HoldingArea | None,
    base_address: int,
    swap: str,
) -> ImportedSignal:
    wanted = HEADERS[kind]
    name = signal_name(tag)
    if not name:
        raise RowRefused("no tag name")
    address_text = _column(row, wanted["address"])
    data_type = data_type_of(_column(row, wanted["type"]))
    location = location_of(address_text, holding)
    fields = signal_fields(
        location, data_type, address_text=address_text, base_address=base_address, swap=swap
    )
    notes = []
    if kind == KEPWARE:
        note = _kepware_scaling(row, fields)
        if note:
            notes.append(note)
    unit = _column(row, UNIT_COLUMNS)
    if unit:
        fields["unit_of_measurement"] = unit
    comment = _column(row, COMMENT_COLUMNS)
    if name != tag:
        comment = f"{tag}: {comment}" if comment else tag
    comment = " ".join("; ".join(part for part in (comment, *notes) if part).split())
    return ImportedSignal(name, fields, comment, line)


# -- output -------------------------------------------------------------------------------


def _flow(mapping: dict[str, Any]) -> str:
    import yaml

    text: str = yaml.safe_dump(
        mapping, default_flow_style=True, sort_keys=False, width=10**6, allow_unicode=True
    )
    return text.strip()


def template_yaml(result: TagImport, template: str, *, command: str) -> str:
    """The imported signals as a ``templates:`` section to paste into config.yaml."""
    refused = (
        f"; {len(result.refused)} rows not imported (listed on stderr)" if result.refused else ""
    )
    lines = [
        f"# {command}",
        f"# {len(result.signals)} signals from {Path(result.file).name} ({result.kind}){refused}.",
        "# Addresses count from each machine's base_address. Paste this into config.yaml",
        "# (into its templates: section if it has one), add the rules (state, counters,",
        "# alarms, samples) and make machines from it: see docs/templates.md.",
        "templates:",
        f"  {template}:",
        "    signals:",
    ]
    for signal in result.signals:
        item = f"      - {_flow({'name': signal.name, **signal.fields})}"
        lines.append(f"{item}  # {signal.comment}" if signal.comment else item)
    if not result.signals:
        lines.append("      []")
    return "\n".join(lines) + "\n"
