"""A scripted stand-in for the pymodbus client on a simulated clock, for tests that
count exactly when and how each request was sent (no wall clock involved)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from pymodbus.exceptions import ModbusIOException

from drivers.base import Sample
from drivers.modbus.config import ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.driver import ModbusDriver


class Stop(Exception):
    """Raised by the sink to end a simulated run."""


@dataclass(frozen=True)
class Request:
    at: float  # simulated seconds when it was sent
    unit: int
    retries: int  # the pymodbus retries in force for it


@dataclass
class FakeModbus:
    """Answers every read at once, except for the ``dead`` units: those cost ``timeout``
    per attempt (1 + retries attempts, as pymodbus 3.16 does) and then raise
    ModbusIOException, the way pymodbus reports an unanswered request."""

    timeout: float
    until: float  # simulated seconds: the first sleep after this ends the run (Stop)
    dead: set[int] = field(default_factory=set)
    refuse_connects: int = 0  # the first N connects fail
    exceptions: dict[int, int] = field(default_factory=dict)  # unit -> exception code
    fail_next: BaseException | None = None  # raised by the next read, once
    image: dict[int, int] = field(default_factory=dict)  # register -> value (default 7)
    now: float = 0.0
    connected: bool = False
    connects: int = 0
    requests: list[Request] = field(default_factory=list)
    ctx: Any = field(default_factory=lambda: SimpleNamespace(retries=0))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the driver use this client and this clock."""
        real_sleep = asyncio.sleep

        async def sleep(seconds: float) -> None:
            if self.now >= self.until:
                raise Stop
            self.now += max(0.0, seconds)
            await real_sleep(0)

        monkeypatch.setattr("drivers.modbus.driver._make_client", lambda config: self)
        monkeypatch.setattr("drivers.modbus.driver.time.monotonic", lambda: self.now)
        monkeypatch.setattr("drivers.modbus.driver.asyncio.sleep", sleep)

    async def connect(self) -> bool:
        self.connects += 1
        if self.connects <= self.refuse_connects:
            return False
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False

    def set_max_no_responses(self, count: int) -> None:
        pass

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> Any:
        return await self._read(address, count, device_id)

    async def read_input_registers(self, address: int, *, count: int, device_id: int) -> Any:
        return await self._read(address, count, device_id)

    async def read_coils(self, address: int, *, count: int, device_id: int) -> Any:
        return await self._read(address, count, device_id)

    async def read_discrete_inputs(self, address: int, *, count: int, device_id: int) -> Any:
        return await self._read(address, count, device_id)

    async def _read(self, address: int, count: int, unit: int) -> Any:
        retries = int(self.ctx.retries)
        self.requests.append(Request(self.now, unit, retries))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            self.connected = False
            raise error
        if unit in self.dead:
            self.now += self.timeout * (1 + retries)
            raise ModbusIOException(f"No response received after {retries} retries")
        if unit in self.exceptions:
            self.now += 0.001
            code = self.exceptions[unit]
            return SimpleNamespace(isError=lambda: True, exception_code=code)
        self.now += 0.001  # a quick answer
        words = [self.image.get(address + i, 7) for i in range(count)]
        return SimpleNamespace(isError=lambda: False, registers=words, bits=[True] * count)

    def sent_to(self, unit: int) -> list[Request]:
        return [r for r in self.requests if r.unit == unit]


class ClockedSink:
    """Keeps each batch with the simulated time it arrived; ``script`` (if given) is
    called with the number of batches so far, to change the fake between polls."""

    def __init__(self, fake: FakeModbus, script: Callable[[int], None] | None = None) -> None:
        self.fake = fake
        self.script = script
        self.batches: list[tuple[float, list[Sample]]] = []

    async def __call__(self, batch: Sequence[Sample]) -> None:
        self.batches.append((self.fake.now, list(batch)))
        if self.script is not None:
            self.script(len(self.batches))


async def simulate(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeModbus,
    config: ModbusTcpConfig | ModbusRtuConfig,
    script: Callable[[int], None] | None = None,
) -> tuple[ModbusDriver, ClockedSink]:
    """Run a driver on ``config`` against ``fake`` until ``fake.until`` (simulated)."""
    fake.install(monkeypatch)
    driver = ModbusDriver(config)
    sink = ClockedSink(fake, script)
    with pytest.raises(Stop):
        await driver.run(sink)
    return driver, sink
