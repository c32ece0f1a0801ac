"""Register data types and byte/word orders (implementation: see functions below)."""

from __future__ import annotations

import enum


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
