"""ModbusDriver against a real pymodbus TCP server (the simulator) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

import pytest

from drivers.base import ConnectionState, Quality
from drivers.codecs import DataType, Swap, decode_registers, encode_registers
from drivers.modbus.driver import ModbusDriver, _Schedule, plan_blocks
from floorgate_demo.simulator import SimulatedLine, SimulatorServer, signal_table
from tests.drivers.modbus.conftest import Collector, by_name, running, tcp_config, wait_until

READ_CODES = {1, 2, 3, 4}

VALUES: dict[DataType, Any] = {
    DataType.BOOL: True,
    DataType.INT16: -1234,
    DataType.UINT16: 54321,
    DataType.INT32: -123456789,
    DataType.UINT32: 3_000_000_000,
    DataType.INT64: -(2**40) - 5,
    DataType.UINT64: 2**63 + 7,
    DataType.FLOAT32: -2.25,
    DataType.FLOAT64: 1.5e10,
    DataType.STRING: "AB12",
}


def _uint16(name: str, address: int) -> dict[str, Any]:
    return {"name": name, "address": address}


# --- block planning (pure) -------------------------------------------------------


def test_125_contiguous_registers_are_one_block() -> None:
    config = tcp_config(502, [_uint16(f"r{i}", 100 + i) for i in range(125)])
    assert [(b.address, b.count) for b in plan_blocks(config)] == [(100, 125)]


def test_the_126th_register_starts_a_second_block() -> None:
    config = tcp_config(502, [_uint16(f"r{i}", 100 + i) for i in range(126)])
    assert [(b.address, b.count) for b in plan_blocks(config)] == [(100, 125), (225, 1)]


@pytest.mark.parametrize(("second", "blocks"), [(111, 1), (112, 2)])
def test_a_hole_up_to_max_gap_is_read_through(second: int, blocks: int) -> None:
    config = tcp_config(502, [_uint16("a", 100), _uint16("b", second)], max_gap=10)
    assert len(plan_blocks(config)) == blocks


def test_a_multi_register_value_is_never_split_across_blocks() -> None:
    signals = [_uint16(f"r{i}", i) for i in range(124)]
    signals.append({"name": "f", "address": 124, "data_type": "float32"})
    blocks = plan_blocks(tcp_config(502, signals))
    assert [(b.address, b.count) for b in blocks] == [(0, 124), (124, 2)]


def test_unit_ids_and_input_types_are_never_merged() -> None:
    config = tcp_config(
        502,
        [
            _uint16("h1", 0),
            {"name": "i1", "address": 1, "input_type": "input"},
            {"name": "c1", "address": 2, "input_type": "coil", "data_type": "bool"},
            {"name": "d1", "address": 3, "input_type": "discrete_input", "data_type": "bool"},
            {"name": "h2", "address": 1, "device_address": 2},
        ],
    )
    plan = plan_blocks(config)
    assert [(b.unit, b.input_type.value) for b in plan] == [
        (1, "holding"),
        (1, "input"),
        (1, "coil"),
        (1, "discrete_input"),
        (2, "holding"),
    ]


def test_bits_merge_up_to_max_bits_per_request() -> None:
    coils = [
        {"name": f"c{i}", "address": i, "input_type": "coil", "data_type": "bool"}
        for i in range(0, 30, 3)
    ]
    config = tcp_config(502, coils, max_bits_per_request=16, max_gap=2)
    assert [(b.address, b.count) for b in plan_blocks(config)] == [(0, 16), (18, 10)]


def test_bool_bits_of_one_register_share_it() -> None:
    bits = [{"name": f"b{i}", "address": 7, "data_type": "bool", "bit": i} for i in range(16)]
    assert [(b.address, b.count) for b in plan_blocks(tcp_config(502, bits))] == [(7, 1)]


# --- the schedule ----------------------------------------------------------------


async def test_a_late_poll_skips_missed_ticks_instead_of_drifting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        clock[0] += seconds

    monkeypatch.setattr("drivers.modbus.driver.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("drivers.modbus.driver.asyncio.sleep", fake_sleep)
    schedule = _Schedule(1.0)
    clock[0] += 0.3  # a poll taking 0.3 s
    await schedule.wait()
    clock[0] += 2.5  # a poll taking 2.5 s: ticks 102 and 103 are missed
    await schedule.wait()
    clock[0] += 0.1
    await schedule.wait()
    assert sleeps == [0.7, 0.5, 0.9]
    assert clock[0] == pytest.approx(105.0)


# --- against the server ----------------------------------------------------------


async def test_driver_reads_the_simulated_line(sim: SimulatorServer, line: SimulatedLine) -> None:
    for _ in range(40):
        line.step()
    driver = ModbusDriver(tcp_config(sim.port, signal_table()))
    sink = Collector()
    async with running(driver, sink):
        batch = by_name(await sink.next_batch())
    totals = line.totals
    assert all(s.quality is Quality.GOOD for s in batch.values())
    assert batch["press1.good"].value == 100_000 + totals["press1"]["good"]
    assert batch["press1.scrap"].value == totals["press1"]["scrap"]
    assert batch["press2.good"].value == 65_000 + totals["press2"]["good"]
    assert batch["press1.state"].value in {0, 1, 2, 3}
    assert batch["packer1.part_done"].value is line.coils[0]
    expected = decode_registers(line.holding[5:7], DataType.FLOAT32, Swap.NONE)
    assert batch["press1.temperature"].value == expected
    assert batch["press1.state"].source_time.utcoffset() is not None
    assert list(batch) == driver.signal_names()
    assert driver.health.state is ConnectionState.CONNECTED


async def test_every_data_type_and_swap_round_trips(
    sim: SimulatorServer, line: SimulatedLine
) -> None:
    signals: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    address = 100
    for swap in Swap:
        for data_type, value in VALUES.items():
            length = 3 if data_type is DataType.STRING else None
            words = encode_registers(value, data_type, swap, length=length)
            line.holding[address : address + len(words)] = words
            name = f"{data_type.value}.{swap.value}"
            signals.append(
                {"name": name, "address": address, "data_type": data_type.value, "swap": swap.value}
                | ({"length": length} if length else {})
            )
            expected[name] = value
            address += len(words)
    line.holding[address] = 0b1010_0000_0000_0000  # bits 13 and 15
    signals += [
        {"name": "bit15", "address": address, "data_type": "bool", "bit": 15},
        {"name": "bit14", "address": address, "data_type": "bool", "bit": 14},
        {"name": "scaled", "address": 100 + 1, "data_type": "int16", "scale": 0.1, "offset": 5},
        {"name": "in.uint16", "address": 100 + 2, "input_type": "input"},
        {"name": "coil0", "address": 0, "input_type": "coil", "data_type": "bool"},
        {"name": "di0", "address": 0, "input_type": "discrete_input", "data_type": "bool"},
    ]
    line.coils[0] = True
    expected |= {"bit15": True, "bit14": False, "scaled": -1234 * 0.1 + 5}
    expected |= {"in.uint16": 54321, "coil0": True, "di0": True}
    driver = ModbusDriver(tcp_config(sim.port, signals))
    sink = Collector()
    async with running(driver, sink):
        batch = by_name(await sink.next_batch())
    got = {name: sample.value for name, sample in batch.items()}
    assert got == pytest.approx(expected)
    assert all(sample.quality is Quality.GOOD for sample in batch.values())
    assert set(line.requests) <= READ_CODES


async def test_125_contiguous_registers_cost_one_request_per_poll(
    sim: SimulatorServer, line: SimulatedLine
) -> None:
    signals = [_uint16(f"r{i}", 100 + i) for i in range(125)]
    driver = ModbusDriver(tcp_config(sim.port, signals, scan_interval="1h"))
    sink = Collector()
    async with running(driver, sink):
        await sink.next_batch()
    assert line.requests == {3: 1}
    assert len(sink.batches) == 1 and len(sink.batches[0]) == 125


async def test_illegal_address_block_is_bad_while_other_blocks_read(
    sim: SimulatorServer,
) -> None:
    signals = [
        _uint16("press1.state", 0),
        _uint16("nowhere", 1000),
        {"name": "also_nowhere", "address": 1001, "data_type": "uint32"},
        {"name": "part", "address": 0, "input_type": "coil", "data_type": "bool"},
    ]
    driver = ModbusDriver(tcp_config(sim.port, signals))
    sink = Collector()
    async with running(driver, sink):
        batch = by_name(await sink.next_batch())
        second = by_name(await sink.next_batch())
    for name in ("nowhere", "also_nowhere"):
        assert batch[name].quality is Quality.BAD and batch[name].value is None
        assert batch[name].error == (
            "unit 1 holding 41001-41003: the device says the address does not exist"
            " (Modbus exception 2, illegal data address)"
        )
    assert batch["press1.state"].quality is Quality.GOOD
    assert second["part"].quality is Quality.GOOD
    assert driver.health.state is ConnectionState.DEGRADED
    assert set(driver.health.bad_signals) == {"nowhere", "also_nowhere"}
    assert driver.health.read_errors >= 2


async def test_a_nan_register_is_bad_for_that_signal_only(
    sim: SimulatorServer, line: SimulatedLine
) -> None:
    line.holding[150:152] = encode_registers(math.inf, DataType.FLOAT32)
    line.holding[152:154] = [0x7FC0, 0x0000]  # float32 NaN
    line.holding[154] = 42
    signals = [
        {"name": "inf", "address": 150, "data_type": "float32"},
        {"name": "nan", "address": 152, "data_type": "float32"},
        _uint16("fine", 154),
    ]
    driver = ModbusDriver(tcp_config(sim.port, signals))
    sink = Collector()
    async with running(driver, sink):
        batch = by_name(await sink.next_batch())
    assert batch["nan"].quality is Quality.BAD
    assert batch["nan"].error == (
        "unit 1 holding 40153-40154: not a usable float32: not a number (NaN)"
    )
    assert batch["inf"].quality is Quality.BAD
    assert batch["inf"].error == "unit 1 holding 40151-40152: not a usable float32: infinite value"
    assert batch["fine"].value == 42 and batch["fine"].quality is Quality.GOOD


async def test_stopped_server_gives_bad_samples_once_then_recovers(
    sim: SimulatorServer, line: SimulatedLine
) -> None:
    driver = ModbusDriver(tcp_config(sim.port, signal_table(), backoff_max="200ms"))
    sink = Collector()
    async with running(driver, sink):
        await sink.next_batch()
        await sim.stop()
        await wait_until(lambda: driver.health.state is ConnectionState.DISCONNECTED)
        lost_at = len(sink.batches) - 1
        await asyncio.sleep(1.0)  # several reconnect attempts (every 0.1-0.2 s) fail
        assert len(sink.batches) == lost_at + 1
        lost = sink.batches[lost_at]
        assert all(s.quality is Quality.BAD and s.value is None for s in lost)
        # "... closed by the device or the network", or "... closed while waiting for
        # unit 1 holding ..." when the server stopped during a request
        closed = f"connection to 127.0.0.1:{sim.port} closed "
        assert all((s.error or "").startswith(closed) for s in lost)
        assert set(driver.health.bad_signals) == set(driver.signal_names())

        line.step()
        await sim.start_tcp("127.0.0.1", sim.port)
        batch = by_name(await sink.next_batch())
    assert all(s.quality is Quality.GOOD for s in batch.values())
    assert batch["press1.good"].value == 100_000 + line.totals["press1"]["good"]
    assert driver.health.state is ConnectionState.CONNECTED
    assert driver.health.reconnects == 1
    assert driver.health.bad_signals == {}
    assert set(line.requests) <= READ_CODES


async def test_refused_connection_at_start_then_server_appears(line: SimulatedLine) -> None:
    with socket.socket() as probe:  # a port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = ModbusDriver(tcp_config(port, signal_table(), backoff_max="200ms"))
    sink = Collector()
    async with running(driver, sink), SimulatorServer(line, tick=None) as server:
        first = await sink.next_batch()
        assert driver.health.state is ConnectionState.DISCONNECTED
        assert all(s.quality is Quality.BAD for s in first)
        assert first[0].error == (
            f"cannot connect to 127.0.0.1:{port}: "
            "the connection was refused or the host is unreachable"
        )
        await server.start_tcp("127.0.0.1", port)
        await wait_until(lambda: driver.health.state is ConnectionState.CONNECTED)
        batch = await sink.next_batch()
    assert all(s.quality is Quality.GOOD for s in batch)
    assert driver.health.reconnects == 1  # a recovery from a failed first connect counts
    assert driver.health.last_error is None
    assert [b for b in sink.batches if b[0].quality is Quality.BAD] == [first]
