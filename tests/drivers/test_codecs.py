"""Every data type in every byte/word order, against register words written by hand."""

from __future__ import annotations

import math

import pytest

from drivers.codecs import (
    CodecError,
    DataType,
    Swap,
    apply_scale,
    decode_registers,
    encode_registers,
    make_decoder,
)

N, B, W, WB = Swap.NONE, Swap.BYTE, Swap.WORD, Swap.WORD_BYTE

# (data type, expected value, {swap: registers as the device sends them})
CASES: list[tuple[DataType, object, dict[Swap, list[int]]]] = [
    (DataType.INT16, -2, {N: [0xFFFE], B: [0xFEFF], W: [0xFFFE], WB: [0xFEFF]}),
    (DataType.INT16, 0x1234, {N: [0x1234], B: [0x3412], W: [0x1234], WB: [0x3412]}),
    (DataType.UINT16, 0xFF01, {N: [0xFF01], B: [0x01FF], W: [0xFF01], WB: [0x01FF]}),
    (
        DataType.INT32,
        0x12345678,
        {
            N: [0x1234, 0x5678],
            B: [0x3412, 0x7856],
            W: [0x5678, 0x1234],
            WB: [0x7856, 0x3412],
        },
    ),
    (
        DataType.INT32,
        -2,
        {
            N: [0xFFFF, 0xFFFE],
            B: [0xFFFF, 0xFEFF],
            W: [0xFFFE, 0xFFFF],
            WB: [0xFEFF, 0xFFFF],
        },
    ),
    (
        DataType.UINT32,
        0x89ABCDEF,
        {
            N: [0x89AB, 0xCDEF],
            B: [0xAB89, 0xEFCD],
            W: [0xCDEF, 0x89AB],
            WB: [0xEFCD, 0xAB89],
        },
    ),
    (
        DataType.INT64,
        -0x0123456789ABCDEF,  # two's complement 0xFEDCBA9876543211
        {
            N: [0xFEDC, 0xBA98, 0x7654, 0x3211],
            B: [0xDCFE, 0x98BA, 0x5476, 0x1132],
            W: [0x3211, 0x7654, 0xBA98, 0xFEDC],
            WB: [0x1132, 0x5476, 0x98BA, 0xDCFE],
        },
    ),
    (
        DataType.UINT64,
        0x0123456789ABCDEF,
        {
            N: [0x0123, 0x4567, 0x89AB, 0xCDEF],
            B: [0x2301, 0x6745, 0xAB89, 0xEFCD],
            W: [0xCDEF, 0x89AB, 0x4567, 0x0123],
            WB: [0xEFCD, 0xAB89, 0x6745, 0x2301],
        },
    ),
    (
        DataType.FLOAT32,
        1.5,  # 0x3FC00000
        {
            N: [0x3FC0, 0x0000],
            B: [0xC03F, 0x0000],
            W: [0x0000, 0x3FC0],
            WB: [0x0000, 0xC03F],
        },
    ),
    (
        DataType.FLOAT32,
        -2.25,  # 0xC0100000
        {
            N: [0xC010, 0x0000],
            B: [0x10C0, 0x0000],
            W: [0x0000, 0xC010],
            WB: [0x0000, 0x10C0],
        },
    ),
    (
        DataType.FLOAT32,
        pytest.approx(math.pi, abs=1e-6),  # 0x40490FDB
        {
            N: [0x4049, 0x0FDB],
            B: [0x4940, 0xDB0F],
            W: [0x0FDB, 0x4049],
            WB: [0xDB0F, 0x4940],
        },
    ),
    (
        DataType.FLOAT64,
        0.1,  # 0x3FB999999999999A
        {
            N: [0x3FB9, 0x9999, 0x9999, 0x999A],
            B: [0xB93F, 0x9999, 0x9999, 0x9A99],
            W: [0x999A, 0x9999, 0x9999, 0x3FB9],
            WB: [0x9A99, 0x9999, 0x9999, 0xB93F],
        },
    ),
    (
        DataType.FLOAT64,
        -2.25,  # 0xC002000000000000
        {
            N: [0xC002, 0, 0, 0],
            B: [0x02C0, 0, 0, 0],
            W: [0, 0, 0, 0xC002],
            WB: [0, 0, 0, 0x02C0],
        },
    ),
    (
        DataType.STRING,
        "AB12",  # padded with NULs to 3 registers
        {
            N: [0x4142, 0x3132, 0x0000],
            B: [0x4241, 0x3231, 0x0000],
            W: [0x0000, 0x3132, 0x4142],
            WB: [0x0000, 0x3231, 0x4241],
        },
    ),
    (
        DataType.STRING,
        "AB",  # padded with spaces
        {N: [0x4142, 0x2020], B: [0x4241, 0x2020], W: [0x2020, 0x4142], WB: [0x2020, 0x4241]},
    ),
    (
        DataType.STRING,
        "é1",  # UTF-8 C3 A9 31 00
        {N: [0xC3A9, 0x3100], B: [0xA9C3, 0x0031], W: [0x3100, 0xC3A9], WB: [0x0031, 0xA9C3]},
    ),
    (DataType.BOOL, True, {N: [0x0100], B: [0x0001], W: [0x0100], WB: [0x0001]}),
    (DataType.BOOL, False, {N: [0], B: [0], W: [0], WB: [0]}),
]

TABLE = [
    pytest.param(data_type, swap, registers, expected, id=f"{data_type.value}-{swap.value}-{i}")
    for i, (data_type, expected, by_swap) in enumerate(CASES)
    for swap, registers in by_swap.items()
]


def test_the_table_covers_every_data_type_in_every_swap_order() -> None:
    covered = {(data_type, swap) for data_type, _, by_swap in CASES for swap in by_swap}
    assert covered == {(data_type, swap) for data_type in DataType for swap in Swap}


@pytest.mark.parametrize(("data_type", "swap", "registers", "expected"), TABLE)
def test_decode_gives_the_known_value(
    data_type: DataType, swap: Swap, registers: list[int], expected: object
) -> None:
    value = decode_registers(registers, data_type, swap)
    assert value == expected
    assert type(value) is type(expected) or isinstance(expected, type(pytest.approx(0)))


@pytest.mark.parametrize(("data_type", "swap", "registers", "expected"), TABLE)
def test_encode_is_the_inverse_of_decode(
    data_type: DataType, swap: Swap, registers: list[int], expected: object
) -> None:
    value = decode_registers(registers, data_type, swap)
    length = len(registers) if data_type is DataType.STRING else None
    again = encode_registers(value, data_type, swap, length=length)
    assert decode_registers(again, data_type, swap) == value


@pytest.mark.parametrize(
    ("registers", "swap", "bit", "expected"),
    [
        ([0x0004], N, 2, True),
        ([0x0004], N, 1, False),
        ([0x8000], N, 15, True),
        ([0x8000], N, 0, False),
        ([0x0001], N, 0, True),
        ([0x0400], B, 2, True),  # byte swap turns 0x0400 into 0x0004
        ([0x0400], N, 10, True),
        ([0xFFFB], N, 2, False),
    ],
)
def test_bool_reads_one_bit_of_a_register(
    registers: list[int], swap: Swap, bit: int, expected: bool
) -> None:
    assert decode_registers(registers, DataType.BOOL, swap, bit=bit) is expected


@pytest.mark.parametrize(
    ("registers", "data_type", "message"),
    [
        ([0x7FC0, 0x0000], DataType.FLOAT32, "not a number"),
        ([0x7F80, 0x0000], DataType.FLOAT32, "infinite"),
        ([0xFF80, 0x0000], DataType.FLOAT32, "infinite"),
        ([0x7FF8, 0, 0, 0], DataType.FLOAT64, "not a number"),
        ([0xFFF0, 0, 0, 0], DataType.FLOAT64, "infinite"),
        ([0xFFFF], DataType.INT32, "needs 2 registers"),
        ([0x4142, 0xFF00], DataType.STRING, "not UTF-8"),
        ([0x1_0000], DataType.UINT16, "not a 16-bit word"),
        ([], DataType.STRING, "registers"),
    ],
)
def test_unusable_registers_raise_a_codec_error(
    registers: list[int], data_type: DataType, message: str
) -> None:
    with pytest.raises(CodecError, match=message):
        decode_registers(registers, data_type, Swap.NONE)


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected", "kind"),
    [
        (42, 1.0, 0.0, 42, int),
        (-7, 1, 0, -7, int),
        (42, 0.1, 0.0, pytest.approx(4.2), float),
        (42, 1.0, 0.5, 42.5, float),
        (1000, 0.01, -273.15, pytest.approx(-263.15), float),
        (1.5, 1.0, 0.0, 1.5, float),
        (1.5, 2.0, 1.0, 4.0, float),
    ],
)
def test_apply_scale(raw: float, scale: float, offset: float, expected: object, kind: type) -> None:
    value = apply_scale(raw, scale, offset)
    assert value == expected
    assert type(value) is kind


def test_scaling_that_overflows_to_infinity_is_an_error() -> None:
    with pytest.raises(CodecError, match="infinite"):
        apply_scale(1e308, 10.0, 0.0)


def test_a_string_too_long_for_its_registers_cannot_be_encoded() -> None:
    with pytest.raises(CodecError, match="does not fit"):
        encode_registers("ABCDE", DataType.STRING, length=2)


# -- make_decoder: the per-signal decoder the driver plans once -------------------------


def _general(registers: list[int], data_type: DataType, swap: Swap, scale: float, offset: float):
    """What make_decoder must equal: decode_registers then apply_scale (value or error)."""
    try:
        raw = decode_registers(registers, data_type, swap)
        return raw if isinstance(raw, bool | str) else apply_scale(raw, scale, offset)
    except CodecError as exc:
        return ("error", str(exc))


def _planned(registers: list[int], data_type: DataType, swap: Swap, scale: float, offset: float):
    try:
        return make_decoder(data_type, swap, scale=scale, offset=offset)(registers)
    except CodecError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize(("data_type", "swap", "registers", "expected"), TABLE)
@pytest.mark.parametrize(("scale", "offset"), [(1, 0), (0.1, -40.0)])
def test_the_planned_decoder_gives_what_decode_and_scale_give(
    data_type: DataType,
    swap: Swap,
    registers: list[int],
    expected: object,
    scale: float,
    offset: float,
) -> None:
    planned = _planned(registers, data_type, swap, scale, offset)
    general = _general(registers, data_type, swap, scale, offset)
    assert planned == general and type(planned) is type(general)


@pytest.mark.parametrize("data_type", [DataType.UINT16, DataType.INT16])
@pytest.mark.parametrize("swap", list(Swap))
def test_the_plain_16_bit_path_agrees_on_every_edge_and_every_error(
    data_type: DataType, swap: Swap
) -> None:
    edges = [[0], [1], [0x7FFF], [0x8000], [0x8001], [0xFFFF], [0x1234], [0xFF00]]
    unusable = [[0x1_0000], [-1], [], [1, 2]]
    for registers in edges + unusable:
        planned = _planned(registers, data_type, swap, 1, 0)
        general = _general(registers, data_type, swap, 1, 0)
        assert planned == general and type(planned) is type(general), registers
