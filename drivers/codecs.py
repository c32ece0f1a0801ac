"""Register data types and byte/word orders, and the pure functions that decode them.

No pymodbus here: the driver hands over plain 16-bit register values and gets Python
values back, so every type and order is table-tested without a device.

Byte order follows Home Assistant's ``swap`` words. Modbus registers are big-endian
16-bit words, most significant word first (``none``). The chosen ``swap`` is applied
to the register words as they arrived, then the bytes are read big-endian:

- ``byte``: swap the two bytes inside each word;
- ``word``: reverse the order of the words (no-op for a single register);
- ``word_byte``: both.

The same rule applies to every type, strings included. A value that cannot be a
reading (NaN, infinity, undecodable text, wrong register count) raises
:class:`CodecError`; the driver turns it into a bad-quality sample for that signal.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Sequence

from drivers.base import DriverError


class DataType(enum.StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


INTEGER_TYPES = frozenset(
    {
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.INT64,
        DataType.UINT64,
    }
)


class Swap(enum.StrEnum):
    """Order of bytes and 16-bit words, in Home Assistant's words.

    Modbus sends big-endian words, most significant word first (``none``).
    ``byte`` swaps the two bytes in each word, ``word`` reverses the word order,
    ``word_byte`` does both.
    """

    NONE = "none"
    BYTE = "byte"
    WORD = "word"
    WORD_BYTE = "word_byte"


REGISTER_COUNT = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}
"""Registers per value; strings take their configured ``length``."""


class CodecError(DriverError):
    """Registers that do not hold a usable value of the configured type."""


_STRUCT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


def _reorder(words: list[bytes], swap: Swap) -> list[bytes]:
    """Apply ``swap`` to 2-byte words; the operation is its own inverse."""
    if swap in (Swap.WORD, Swap.WORD_BYTE):
        words = words[::-1]
    if swap in (Swap.BYTE, Swap.WORD_BYTE):
        words = [word[::-1] for word in words]
    return words


def registers_to_bytes(registers: Sequence[int], swap: Swap) -> bytes:
    """The big-endian byte string the registers stand for, after ``swap``."""
    words: list[bytes] = []
    for register in registers:
        if not 0 <= register <= 0xFFFF:
            raise CodecError(f"register value {register} is not a 16-bit word")
        words.append(register.to_bytes(2, "big"))
    return b"".join(_reorder(words, swap))


def bytes_to_registers(data: bytes, swap: Swap) -> list[int]:
    """Inverse of :func:`registers_to_bytes` (``data`` is padded to whole words)."""
    if len(data) % 2:
        data += b"\x00"
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    return [int.from_bytes(word, "big") for word in _reorder(words, swap)]


def _check_finite(value: float) -> float:
    if math.isnan(value):
        raise CodecError("not a number (NaN)")
    if math.isinf(value):
        raise CodecError("infinite value")
    return value


def _decode_string(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(
            f"registers are not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    return text.rstrip("\x00 ")


def decode_registers(
    registers: Sequence[int], data_type: DataType, swap: Swap, *, bit: int | None = None
) -> bool | int | float | str:
    """Decode the registers of one signal into its Python value.

    ``bit`` picks one bit (0 = least significant) of a bool register; without it a
    bool is ``register != 0``.
    """
    expected = REGISTER_COUNT.get(data_type)
    if (expected is not None and len(registers) != expected) or not registers:
        raise CodecError(f"{data_type.value} needs {expected} registers, got {len(registers)}")
    data = registers_to_bytes(registers, swap)
    if data_type is DataType.STRING:
        return _decode_string(data)
    if data_type is DataType.BOOL:
        word = int.from_bytes(data, "big")
        return word != 0 if bit is None else bool((word >> bit) & 1)
    (value,) = struct.unpack(_STRUCT[data_type], data)
    if isinstance(value, float):
        return _check_finite(value)
    return int(value)


Decoder = Callable[[Sequence[int]], bool | int | float | str]


def make_decoder(
    data_type: DataType,
    swap: Swap,
    *,
    bit: int | None = None,
    scale: float = 1,
    offset: float = 0,
) -> Decoder:
    """``decode_registers`` then ``apply_scale`` for one signal, chosen once when the
    driver plans its reads rather than worked out again for every value of every poll.

    The common plain 16-bit value (a uint16 or int16 with no byte swap, unscaled: every
    register of a ``ranges:`` block) is read from the register itself, ~15 times faster
    than going through bytes; everything else takes the general path. Same values, same
    errors (tests/drivers/test_codecs.py holds the two to each other over every type,
    swap and scale)."""
    count = REGISTER_COUNT.get(data_type)
    plain = swap in (Swap.NONE, Swap.WORD) and scale == 1 and offset == 0 and count == 1
    if plain and data_type is DataType.UINT16:
        return _plain_uint16
    if plain and data_type is DataType.INT16:
        return _plain_int16

    def decode(registers: Sequence[int]) -> bool | int | float | str:
        raw = decode_registers(registers, data_type, swap, bit=bit)
        if isinstance(raw, bool | str):
            return raw
        return apply_scale(raw, scale, offset)

    return decode


def _one_register(registers: Sequence[int], data_type: DataType) -> int:
    if len(registers) != 1:
        raise CodecError(f"{data_type.value} needs 1 registers, got {len(registers)}")
    (register,) = registers
    if not 0 <= register <= 0xFFFF:
        raise CodecError(f"register value {register} is not a 16-bit word")
    return int(register)


def _plain_uint16(registers: Sequence[int]) -> int:
    return _one_register(registers, DataType.UINT16)


def _plain_int16(registers: Sequence[int]) -> int:
    register = _one_register(registers, DataType.INT16)
    return register - 0x10000 if register & 0x8000 else register


def encode_registers(
    value: bool | int | float | str,
    data_type: DataType,
    swap: Swap = Swap.NONE,
    *,
    length: int | None = None,
) -> list[int]:
    """Registers that hold ``value``; the inverse of :func:`decode_registers`.

    Used by the simulator and tests. Strings are padded with NULs to ``length``
    registers (default: just long enough).
    """
    if data_type is DataType.STRING:
        raw = str(value).encode("utf-8")
        size = 2 * length if length is not None else len(raw) + len(raw) % 2
        if len(raw) > size:
            raise CodecError(f"string of {len(raw)} bytes does not fit in {length} registers")
        return bytes_to_registers(raw.ljust(size, b"\x00"), swap)
    if data_type is DataType.BOOL:
        return [1 if value else 0]
    try:
        data = struct.pack(_STRUCT[data_type], value)
    except struct.error as exc:
        raise CodecError(f"{value!r} does not fit {data_type.value}: {exc}") from None
    return bytes_to_registers(data, swap)


def apply_scale(raw: int | float, scale: float, offset: float) -> int | float:
    """``raw * scale + offset``; integers stay integers when nothing changes them."""
    if scale == 1 and offset == 0:
        return raw
    return _check_finite(raw * scale + offset)
