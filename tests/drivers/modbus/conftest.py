"""Fixtures for the driver tests: a real pymodbus server on 127.0.0.1, a collecting
sink, bounded waits (never a fixed sleep as an assertion), and a socat pty pair."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU

from drivers.base import Sample
from drivers.modbus.config import ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.driver import ModbusDriver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer

WAIT = 10.0  # upper bound for any condition; tests normally finish far sooner


async def wait_until(condition: Callable[[], bool], limit: float = WAIT) -> None:
    """Poll ``condition`` until it holds; fail the test after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


def by_name(batch: Sequence[Sample]) -> dict[str, Sample]:
    return {sample.signal: sample for sample in batch}


class Collector:
    """A SampleSink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []

    async def __call__(self, batch: Sequence[Sample]) -> None:
        self.batches.append(list(batch))

    async def next_batch(self, after: int | None = None) -> list[Sample]:
        """The first batch delivered after the ``after`` batches seen so far."""
        seen = len(self.batches) if after is None else after
        await wait_until(lambda: len(self.batches) > seen)
        return self.batches[seen]


@contextlib.asynccontextmanager
async def running(driver: ModbusDriver, sink: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(driver.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tcp_config(port: int, signals: list[dict[str, Any]], **overrides: Any) -> ModbusTcpConfig:
    data: dict[str, Any] = {
        "type": "modbus_tcp",
        "name": "line",
        "host": "127.0.0.1",
        "port": port,
        "scan_interval": "100ms",
        "timeout": "300ms",
        "retries": 0,
        "backoff_max": "1s",
        "signals": signals,
    }
    data.update(overrides)
    return ModbusTcpConfig.model_validate(data)


def rtu_config(port: str, signals: list[dict[str, Any]], **overrides: Any) -> ModbusRtuConfig:
    data: dict[str, Any] = {
        "type": "modbus_rtu",
        "name": "bus",
        "port": port,
        "parity": "none",  # a pty refuses parity settings
        "scan_interval": "100ms",
        "timeout": "200ms",
        "retries": 0,
        "backoff_max": "2s",
        "signals": signals,
    }
    data.update(overrides)
    return ModbusRtuConfig.model_validate(data)


@pytest.fixture
def line() -> SimulatedLine:
    return SimulatedLine(seed=1)


@pytest.fixture
async def sim(line: SimulatedLine) -> AsyncIterator[SimulatorServer]:
    """The line served over TCP on a free port, not stepping (tests set values)."""
    async with SimulatorServer(line, tick=None) as server:
        await server.start_tcp("127.0.0.1", 0)
        yield server


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two linked pseudo-terminals, like a null-modem cable between two serial ports."""
    if shutil.which("socat") is None:
        # A failure, not a skip: a skipped RTU test would hide that serial was never tested.
        # .ci/run installs it.
        pytest.fail("socat is required for the Modbus RTU tests: apt-get install -y socat")
    a, b = tmp_path / "A", tmp_path / "B"
    process = await asyncio.create_subprocess_exec(
        "socat",
        "-d",
        "-d",
        f"pty,raw,echo=0,link={a}",
        f"pty,raw,echo=0,link={b}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: os.path.exists(a) and os.path.exists(b))
        yield str(a), str(b)
    finally:
        process.terminate()
        await process.wait()


UNSERVED = 247  # a unit id no test server serves: requests for it are never answered


class UnitServer(SimulatorServer):
    """The simulator, counting requests per unit id and not answering ``muted`` ones.

    pymodbus 3.16's server with ``ignore_missing_devices`` drops a request for a unit
    id it does not serve (no answer, like a dead RS-485 device); a muted unit's
    request is redirected to such an id after it is counted."""

    def __init__(self, line: SimulatedLine, **kwargs: Any) -> None:
        super().__init__(line, **kwargs)
        self.by_unit: collections.Counter[int] = collections.Counter()
        self.muted: set[int] = set()

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.by_unit[pdu.dev_id] += 1
            if pdu.dev_id in self.muted:
                pdu.dev_id = UNSERVED
        return super()._trace_pdu(sending, pdu)
