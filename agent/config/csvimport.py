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

Addresses become Modbus addresses (0-based, as floorgate counts them): Modbus notation
(``400001``, ``HR1``) and S7 addresses as an S7-1200/1500 ``MB_SERVER`` serves them
(``%I0.0``, ``%IW64``, ``%MW100`` from ``--mb-hold-reg``), in
agent.config.csvimport_addresses; data types, names and Kepware's scaling in
agent.config.csvimport_signals. This module reads the file and prints the template.

A row that does not map (an 8-bit type, BCD, a date, an array, an output word, an
address outside the holding area, ...) is refused with its line and the reason; the
others are still imported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.csvimport_addresses import CsvImportError as CsvImportError
from agent.config.csvimport_addresses import HoldingArea as HoldingArea
from agent.config.csvimport_addresses import RowRefused as RowRefused
from agent.config.csvimport_addresses import location_of as location_of
from agent.config.csvimport_signals import data_type_of as data_type_of
from agent.config.csvimport_signals import kepware_scaling, signal_name
from agent.config.csvimport_signals import signal_fields as signal_fields


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
        return raw.decode("utf-16", errors="replace")  # (a cut-off last byte: no traceback)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # an older Windows export


def _rows(text: str) -> tuple[csv.DictReader[str], str]:
    # The separator is the one the header row has most of: a German Excel writes ";".
    header = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    try:
        columns = [c.strip().lower() for c in reader.fieldnames or []]
    except csv.Error as exc:
        raise CsvImportError(f"its header row is not readable as CSV ({exc})") from None
    reader.fieldnames = columns
    for kind, wanted in HEADERS.items():
        if all(any(name in columns for name in names) for names in wanted.values()):
            return reader, kind
    raise CsvImportError(
        "not a Kepware CSV export (columns Tag Name, Address, Data Type, ...) nor a TIA "
        "Portal tag table (Name, Path, Data Type, Logical Address, Comment, ...); its "
        f"columns: {', '.join(columns) or '(none)'}"
    )


def _records(reader: csv.DictReader[str], path: Path) -> Iterator[dict[str, str]]:
    """The rows after the header; a file the csv module cannot go on reading (a field
    longer than 128 KiB, ...) is one error naming the line, not a traceback."""
    try:
        yield from reader
    except csv.Error as exc:
        raise CsvImportError(
            f"{path}: not readable as CSV after line {reader.line_num} ({exc})"
        ) from None


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
    for row in _records(reader, path):
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
        note = kepware_scaling(row, fields)
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
