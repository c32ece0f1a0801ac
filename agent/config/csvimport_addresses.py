"""Tag addresses of a Kepware or TIA Portal export made Modbus locations (0-based, as
floorgate counts them), for `floorgate import-csv` (agent.config.csvimport):

- Modbus notation, one-based (Kepware): ``400001`` / ``40001`` holding, ``300001`` /
  ``30001`` input register, ``000001`` / ``00001`` coil, ``100001`` / ``10001`` discrete
  input; ``400001.3`` a bit of a register; ``400010.20H`` (``L``) a string of 20 bytes,
  high (low) byte first. The prefix form ``HR1``, ``IR1``, ``C1`` / ``CO1``, ``DI1`` too.
- S7 addresses as an S7-1200/1500 ``MB_SERVER`` serves them (TIA Portal): ``%I0.0``
  discrete input 0 (byte * 8 + bit), ``%Q0.0`` coil 0, ``%IW64`` / ``%ID64`` input
  register 32 (byte / 2); ``%MW``, ``%MD``, ``%M`` bits and ``%DB<n>.DBW`` / ``DBD`` /
  ``DBX`` holding registers, counted from where ``MB_HOLD_REG`` starts (``HoldingArea``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ADDRESS = 65535


class CsvImportError(Exception):
    """The file as a whole cannot be imported (unreadable, not a known export)."""


class RowRefused(Exception):
    """One row cannot be imported: the message says why."""


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
