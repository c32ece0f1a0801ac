"""The simulated press line: deterministic, counters that add up, a wrapping counter,
and servers that start and stop cleanly."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.codecs import REGISTER_COUNT, DataType, Swap, decode_registers
from floorgate_demo.simulator import (
    REGISTER_MAP,
    Reason,
    SimulatedLine,
    SimulatorServer,
    State,
    serve_modbus_tcp,
    signal_table,
)
from tests.drivers.modbus.conftest import wait_until


def _read(line: SimulatedLine, machine: str, signal: str) -> int | float | bool | str:
    reg = REGISTER_MAP[machine][signal]
    if reg.data_type is DataType.BOOL:
        return line.coils[reg.address]
    words = line.holding[reg.address : reg.address + REGISTER_COUNT[reg.data_type]]
    return decode_registers(words, reg.data_type, Swap.NONE)


def _count(line: SimulatedLine, machine: str, signal: str) -> int:
    value = _read(line, machine, signal)
    assert isinstance(value, int)
    return value


def _run(seed: int, ticks: int) -> list[tuple[int, ...]]:
    line = SimulatedLine(seed)
    images = []
    for _ in range(ticks):
        line.step()
        images.append((*line.holding[:32], *line.coils))
    return images


def test_same_seed_gives_the_same_line() -> None:
    assert _run(7, 600) == _run(7, 600)
    assert _run(7, 600) != _run(8, 600)


def test_press2_good_counter_wraps_at_65536() -> None:
    line = SimulatedLine(seed=1)
    assert _count(line, "press2", "good") == 65_000
    previous, wrapped = 65_000, False
    while not wrapped:
        line.step()
        current = _count(line, "press2", "good")
        wrapped = current < previous
        previous = current
        assert line.ticks < 20_000, "press2 never wrapped"
    assert line.totals["press2"]["good"] >= 536
    assert current == (65_000 + line.totals["press2"]["good"]) % 65_536


def test_totals_match_the_register_deltas() -> None:
    line = SimulatedLine(seed=5)
    start = {
        "p1good": _count(line, "press1", "good"),
        "p1scrap": _count(line, "press1", "scrap"),
    }
    press2_delta, edges, previous_p2, previous_bit = 0, 0, _count(line, "press2", "good"), False
    levels: list[int] = [0]
    for _ in range(6_000):  # 20 minutes of machine time
        line.step()
        p2 = _count(line, "press2", "good")
        press2_delta += (p2 - previous_p2) % 65_536
        previous_p2 = p2
        bit = line.coils[0]
        if bit == previous_bit:
            levels[-1] += 1
        else:
            levels.append(1)
            edges += bit and not previous_bit
        previous_bit = bit
    totals = line.totals
    assert _count(line, "press1", "good") == start["p1good"] + totals["press1"]["good"]
    assert _count(line, "press1", "scrap") == start["p1scrap"] + totals["press1"]["scrap"]
    assert press2_delta == totals["press2"]["good"]
    assert edges == totals["packer1"]["good"] > 0
    assert min(levels[1:-1]) >= 10  # every level lasts >= 2 s: edges survive a 1 s poll
    assert totals["press1"]["scrap"] > 0


@pytest.mark.slow
def test_machines_mostly_run_and_stop_with_reasons() -> None:
    line = SimulatedLine(seed=2)
    seen: set[tuple[int, int]] = set()
    running = produced_while_not_running = 0
    temperatures: list[float] = []
    for _ in range(9_000):  # 30 minutes
        before = line.totals["press1"]["good"] + line.totals["press1"]["scrap"]
        line.step()
        after = line.totals["press1"]["good"] + line.totals["press1"]["scrap"]
        state, reason = _read(line, "press1", "state"), _read(line, "press1", "reason")
        assert isinstance(state, int) and isinstance(reason, int)
        seen.add((state, reason))
        running += state == State.RUNNING
        produced_while_not_running += after > before and state != State.RUNNING
        temperature = _read(line, "press1", "temperature")
        assert isinstance(temperature, float)
        temperatures.append(temperature)
    assert produced_while_not_running == 0
    assert running / line.ticks > 0.6
    assert seen == {
        (State.RUNNING, Reason.NONE),
        (State.IDLE, Reason.MATERIAL_SHORTAGE),
        (State.DOWN, Reason.EQUIPMENT_FAILURE),
        (State.STOPPED, Reason.SETUP),
    }
    assert max(temperatures) > 80.0 > min(temperatures)


def test_signal_table_lists_every_register() -> None:
    table = signal_table()
    assert len(table) == sum(len(signals) for signals in REGISTER_MAP.values())
    assert {
        "name": "packer1.part_done",
        "address": 0,
        "input_type": "coil",
        "data_type": "bool",
    } in (table)


async def test_frozen_line_stands_still_while_served() -> None:
    line = SimulatedLine()
    async with SimulatorServer(line, tick=0.01) as server:
        await server.start_tcp("127.0.0.1", 0)
        await wait_until(lambda: line.ticks >= 3)
        line.freeze()
        frozen_at = line.ticks
        await asyncio.sleep(0.1)  # ten ticks' worth
        assert line.ticks == frozen_at
        line.resume()
        await wait_until(lambda: line.ticks > frozen_at)


async def test_serve_modbus_tcp_runs_until_cancelled_and_cleans_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = SimulatedLine()
    before = asyncio.all_tasks()
    task = asyncio.create_task(serve_modbus_tcp(line, port=port, tick=0.01))
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    try:
        await wait_until(lambda: line.ticks > 0)
        assert await client.connect()
        response = await client.read_holding_registers(0, count=22, device_id=1)
        assert not response.isError() and len(response.registers) == 22
        write = await client.write_register(0, 5, device_id=1)
        assert write.isError()  # the line is read-only
        assert line.requests[3] == 1 and line.requests[6] == 1  # the server counts codes
    finally:
        client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", port))
