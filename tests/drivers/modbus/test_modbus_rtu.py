"""ModbusDriver on a serial bus: a socat pty pair, the simulator answering unit ids 1
and 2 at one end, the driver at the other, and unit id 3 silent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drivers.base import ConnectionState, Quality
from drivers.modbus.driver import ModbusDriver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.drivers.modbus.conftest import Collector, rtu_config, running, wait_until

POLLS = 25


def _signals(unit: int) -> list[dict[str, Any]]:
    return [
        {"name": f"u{unit}.state", "address": 0, "device_address": unit},
        {"name": f"u{unit}.good", "address": 2, "data_type": "uint32", "device_address": unit},
        {
            "name": f"u{unit}.part",
            "address": 0,
            "input_type": "coil",
            "data_type": "bool",
            "device_address": unit,
        },
    ]


@pytest.mark.slow
async def test_a_silent_unit_is_backed_off_while_the_others_keep_their_rate(
    pty_pair: tuple[str, str],
) -> None:
    server_end, driver_end = pty_pair
    line = SimulatedLine(seed=3)
    config = rtu_config(driver_end, _signals(1) + _signals(2) + _signals(3))
    driver = ModbusDriver(config)
    sink = Collector()
    async with SimulatorServer(line, tick=0.05, unit_ids=(1, 2)) as server:
        await server.start_rtu(server_end, parity="N")
        async with running(driver, sink):
            await wait_until(lambda: len(sink.batches) >= POLLS)

    batches = sink.batches[:POLLS]
    for batch in batches:  # every poll read units 1 and 2, however unit 3 behaved
        good = {s.signal for s in batch if s.quality is Quality.GOOD}
        assert good == {f"u{unit}.{name}" for unit in (1, 2) for name in ("state", "good", "part")}
        bad = [s for s in batch if s.quality is Quality.BAD]
        assert all(s.value is None and "unit 3" in (s.error or "") for s in bad)
    goods = [next(int(s.value or 0) for s in b if s.signal == "u1.good") for b in batches]
    assert goods == sorted(goods) and goods[-1] > goods[0]  # fresh data, not a stale copy

    # Without backoff unit 3 would time out twice per poll (holding + coil blocks);
    # backed off (0.1 s doubling to 2 s), it is probed once per attempt, in few polls.
    timeouts = driver.health.read_errors
    assert 1 <= timeouts <= POLLS // 2
    assert driver.health.state is ConnectionState.DEGRADED
    assert set(driver.health.bad_signals) == {"u3.state", "u3.good", "u3.part"}
    assert set(line.requests) <= {1, 2, 3, 4}


async def test_a_missing_serial_port_is_disconnected_once(tmp_path: Any) -> None:
    config = rtu_config(str(tmp_path / "ttyNOPE"), _signals(1), backoff_max="100ms")
    driver = ModbusDriver(config)
    sink = Collector()
    async with running(driver, sink):
        first = await sink.next_batch()
        await wait_until(lambda: driver.health.state is ConnectionState.DISCONNECTED)
        await asyncio.sleep(0.5)  # let several reconnect attempts (every 0.1 s) fail
    assert all(s.quality is Quality.BAD for s in first)
    assert {s.error for s in first} == {
        f"cannot open serial port {tmp_path}/ttyNOPE: it does not exist"
    }
    assert all(b[0].quality is Quality.BAD for b in sink.batches)
    assert len(sink.batches) == 1
