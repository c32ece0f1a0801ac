"""A simulated press line, served as one Modbus device, for the demo and the tests.

Three machines share one register image, exposed as unit id 1. Holding registers
(function code 3) and input registers (4) show the same words; coils (1) and
discrete inputs (2) show the same bits. Everything is read-only.

=======  ===========  =======  ==========  ============  ===================================
machine  signal       address  input_type  data_type     meaning
=======  ===========  =======  ==========  ============  ===================================
press1   state        0        holding     uint16        0 stopped, 1 running, 2 idle, 3 down
press1   reason       1        holding     uint16        0 none, 10 material_shortage,
                                                         20 equipment_failure, 30 setup
press1   good         2-3      holding     uint32        good parts counter (starts 100000)
press1   scrap        4        holding     uint16        scrap parts counter
press1   temperature  5-6      holding     float32       °C, drifts, sometimes above 80.0
press2   state        10       holding     uint16        as press1
press2   reason       11       holding     uint16        as press1
press2   good         12       holding     uint16        starts at 65000, wraps at 65536
press2   temperature  13-14    holding     float32       °C
packer1  state        20       holding     uint16        as press1
packer1  reason       21       holding     uint16        as press1
packer1  part_done    0        coil        bool          high >= 2 s, low >= 2 s per part
=======  ===========  =======  ==========  ============  ===================================

Holding registers 0-255 and coils 0-15 exist; 100-255 are spare registers that
``step()`` never touches (tests put known values there). Any other address answers
exception 2 (illegal data address); unit ids that are not served never answer.

Machine time advances only through :meth:`SimulatedLine.step` (one tick is 0.2 s of
machine time) and uses only the seeded random generator, so a seed gives the same
line every time. The servers call ``step()`` every ``tick`` seconds unless frozen.

Run it by hand: ``python -m floorgate_demo.simulator --port 5020`` (TCP on 127.0.0.1), or
``await serve_modbus_tcp(SimulatedLine())`` / ``serve_modbus_rtu(line, "/dev/pts/7")``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Self, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from drivers.codecs import DataType, encode_registers
from drivers.modbus.config import InputType

TICK = 0.2
"""Seconds of machine time per ``step()``."""

UNIT_ID = 1
HOLDING_SIZE = 256
COIL_SIZE = 16
SPARE_REGISTERS = range(100, HOLDING_SIZE)
PRESS1_GOOD_START = 100_000
PRESS2_GOOD_START = 65_000


class State(enum.IntEnum):
    STOPPED = 0
    RUNNING = 1
    IDLE = 2
    DOWN = 3


class Reason(enum.IntEnum):
    NONE = 0
    MATERIAL_SHORTAGE = 10
    EQUIPMENT_FAILURE = 20
    SETUP = 30


@dataclass(frozen=True, slots=True)
class Register:
    address: int
    input_type: InputType
    data_type: DataType


_H, _C = InputType.HOLDING, InputType.COIL
REGISTER_MAP: dict[str, dict[str, Register]] = {
    "press1": {
        "state": Register(0, _H, DataType.UINT16),
        "reason": Register(1, _H, DataType.UINT16),
        "good": Register(2, _H, DataType.UINT32),
        "scrap": Register(4, _H, DataType.UINT16),
        "temperature": Register(5, _H, DataType.FLOAT32),
    },
    "press2": {
        "state": Register(10, _H, DataType.UINT16),
        "reason": Register(11, _H, DataType.UINT16),
        "good": Register(12, _H, DataType.UINT16),
        "temperature": Register(13, _H, DataType.FLOAT32),
    },
    "packer1": {
        "state": Register(20, _H, DataType.UINT16),
        "reason": Register(21, _H, DataType.UINT16),
        "part_done": Register(0, _C, DataType.BOOL),
    },
}
"""machine -> signal -> where it lives on unit id 1 (see the module docstring)."""


def signal_table() -> list[dict[str, object]]:
    """REGISTER_MAP as ``signals:`` entries of a modbus_tcp source (name ``machine.signal``)."""
    return [
        {
            "name": f"{machine}.{signal}",
            "address": reg.address,
            "input_type": reg.input_type.value,
            "data_type": reg.data_type.value,
        }
        for machine, signals in REGISTER_MAP.items()
        for signal, reg in signals.items()
    ]


@dataclass(frozen=True, slots=True)
class Transition:
    """A machine entered ``state`` (with ``reason``) at wall-clock time ``at``."""

    machine: str
    state: State
    reason: Reason
    at: datetime


@dataclass
class _Machine:
    name: str
    rate: float  # parts per second while running
    scrap_rate: float  # share of parts that are scrap
    ticks_left: int
    state: State = State.RUNNING
    reason: Reason = Reason.NONE
    good: int = 0
    scrap: int = 0
    pending: float = 0.0
    temperature: float = 70.0
    hot_ticks: int = 0

    def advance_state(self, rng: random.Random) -> None:
        self.ticks_left -= 1
        if self.ticks_left > 0:
            return
        if self.state is State.RUNNING:
            roll = rng.random()
            if roll < 0.5:
                self.state, self.reason = State.IDLE, Reason.MATERIAL_SHORTAGE
            elif roll < 0.8:
                self.state, self.reason = State.DOWN, Reason.EQUIPMENT_FAILURE
            else:
                self.state, self.reason = State.STOPPED, Reason.SETUP
            self.ticks_left = rng.randint(15, 50)  # 3-10 s
        else:
            self.state, self.reason = State.RUNNING, Reason.NONE
            self.ticks_left = rng.randint(100, 300)  # 20-60 s

    def produce(self, rng: random.Random) -> None:
        if self.state is not State.RUNNING:
            return
        self.pending += self.rate * TICK * rng.uniform(0.7, 1.3)
        while self.pending >= 1.0:
            self.pending -= 1.0
            if rng.random() < self.scrap_rate:
                self.scrap += 1
            else:
                self.good += 1

    def heat(self, rng: random.Random) -> None:
        if self.hot_ticks > 0:
            self.hot_ticks -= 1
        elif rng.random() < 0.004:  # about once a minute: a hot spell of 10-30 s
            self.hot_ticks = rng.randint(50, 150)
        target = 84.0 if self.hot_ticks else 74.0 if self.state is State.RUNNING else 55.0
        self.temperature += (target - self.temperature) * 0.02 + rng.gauss(0.0, 0.15)


class SimulatedLine:
    """press1, press2 and packer1, with their register image.

    ``holding`` (256 words) and ``coils`` (16 bits) are the image the servers show;
    ``totals`` counts the parts really made (never wrapped); ``requests`` counts the
    function codes any server of this line received, so a test can prove no write
    ever arrived; ``transitions`` is the truth about states: every change of a machine's
    state, with the wall-clock time of the step that made it (a frozen line stays in
    its states while wall-clock time passes).
    """

    def __init__(self, seed: int = 1) -> None:
        self._rng = random.Random(seed)
        self.ticks = 0
        self.frozen = False
        self.holding: list[int] = [0] * HOLDING_SIZE
        self.coils: list[bool] = [False] * COIL_SIZE
        self.requests: collections.Counter[int] = collections.Counter()
        rng = self._rng
        self._press1 = _Machine("press1", 3.5, 0.04, rng.randint(100, 300), temperature=72.0)
        self._press2 = _Machine("press2", 2.5, 0.0, rng.randint(100, 300), temperature=68.0)
        self._packer = _Machine("packer1", 0.0, 0.0, rng.randint(100, 300))
        self._part_phase_left = rng.randint(10, 14)  # running ticks until the coil toggles
        created = datetime.now(UTC)
        self.transitions: collections.deque[Transition] = collections.deque(
            (Transition(m.name, m.state, m.reason, created) for m in self._machines),
            maxlen=100_000,  # weeks of a demo line; a test reads minutes of it
        )
        self._write_image()

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        """Parts made per machine since creation: ``{"press1": {"good": .., "scrap": ..}}``."""
        return {m.name: {"good": m.good, "scrap": m.scrap} for m in self._machines}

    @property
    def _machines(self) -> tuple[_Machine, _Machine, _Machine]:
        return (self._press1, self._press2, self._packer)

    def freeze(self) -> None:
        """Stop the servers from stepping the line (the image stays readable)."""
        self.frozen = True

    def resume(self) -> None:
        self.frozen = False

    def step(self) -> None:
        """Advance machine time by one tick (0.2 s), then refresh the register image."""
        rng = self._rng
        for machine in self._machines:
            before = machine.state
            machine.advance_state(rng)
            if machine.state is not before:
                change = Transition(machine.name, machine.state, machine.reason, datetime.now(UTC))
                self.transitions.append(change)
            machine.produce(rng)
            machine.heat(rng)
        self._step_packer(rng)
        self.ticks += 1
        self._write_image()

    def _step_packer(self, rng: random.Random) -> None:
        if self._packer.state is not State.RUNNING:
            return
        self._part_phase_left -= 1
        if self._part_phase_left > 0:
            return
        self._part_phase_left = rng.randint(10, 14)  # 2.0-2.8 s per level
        bit = not self.coils[0]
        self.coils[0] = bit
        if bit:
            self._packer.good += 1

    def _put(self, machine: str, signal: str, value: int | float) -> None:
        reg = REGISTER_MAP[machine][signal]
        words = encode_registers(value, reg.data_type)
        self.holding[reg.address : reg.address + len(words)] = words

    def _write_image(self) -> None:
        for machine in self._machines:
            self._put(machine.name, "state", int(machine.state))
            self._put(machine.name, "reason", int(machine.reason))
        p1, p2 = self._press1, self._press2
        self._put("press1", "good", (PRESS1_GOOD_START + p1.good) % 2**32)
        self._put("press1", "scrap", p1.scrap % 2**16)
        self._put("press1", "temperature", p1.temperature)
        self._put("press2", "good", (PRESS2_GOOD_START + p2.good) % 2**16)
        self._put("press2", "temperature", p2.temperature)


class _ServedUnits(SimCore):
    """pymodbus 3.16's SimCore raises KeyError for a unit id it does not know (which
    the server answers with "device failure"); a missing RS-485 device is silent, so
    raise NoSuchIdException and let ``ignore_missing_devices`` drop the request."""

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id not in self.devices:
            raise NoSuchIdException(f"unit id {device_id} is not served")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if device_id not in self.devices:
            raise NoSuchIdException(f"unit id {device_id} is not served")
        return await super().async_setValues(device_id, func_code, address, values)


async def _refresh(
    line: SimulatedLine,
    function_code: int,
    start_address: int,
    _address: int,
    _count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """SimDevice action: copy the line's image into the block being read."""
    if set_values is not None:
        return ExcCodes.ILLEGAL_FUNCTION  # read-only device (writes never get here anyway)
    if function_code in (1, 2):  # bits are packed 16 per word, bit 0 first
        for index in range(COIL_SIZE // 16):
            bits = line.coils[16 * index : 16 * index + 16]
            registers[index - start_address] = sum(1 << i for i, bit in enumerate(bits) if bit)
    else:
        registers[-start_address : HOLDING_SIZE - start_address] = line.holding
    return None


def _sim_device(line: SimulatedLine, unit_id: int) -> SimDevice:
    bits = [SimData(0, values=[False] * COIL_SIZE, datatype=SimType.BITS, readonly=True)]
    words = [SimData(0, count=HOLDING_SIZE, values=0, datatype=SimType.REGISTERS, readonly=True)]
    return SimDevice(
        id=unit_id,
        simdata=(list(bits), list(bits), list(words), list(words)),
        action=partial(_refresh, line),
    )


class SimulatorServer:
    """A pymodbus server showing ``line`` on ``unit_ids``, plus the task stepping it.

    ``async with SimulatorServer(line) as server: await server.start_tcp(port=0)``;
    ``server.port`` is the bound port. ``stop()`` closes the server (clients see
    the connection drop) and a later ``start_*`` serves again; leaving the block
    stops everything. ``tick=None`` never steps the line.
    """

    def __init__(
        self,
        line: SimulatedLine,
        *,
        tick: float | None = TICK,
        unit_ids: tuple[int, ...] = (UNIT_ID,),
    ) -> None:
        self.line = line
        self.port = 0
        self._tick = tick
        self._unit_ids = unit_ids
        self._server: ModbusBaseServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.line.requests[pdu.function_code] += 1
        return pdu

    def _devices(self) -> list[SimDevice]:
        return [_sim_device(self.line, unit_id) for unit_id in self._unit_ids]

    async def _serve(self, server: ModbusBaseServer) -> None:
        server.context = _ServedUnits(self._devices())
        await server.serve_forever(background=True)
        self._server = server
        if self._tick is not None and self._ticker is None:
            self._ticker = asyncio.create_task(_tick(self.line, self._tick), name="simulator tick")

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
        """Listen on ``host:port`` (``port=0``: any free port, see ``self.port``)."""
        server = ModbusTcpServer(
            self._devices(),
            address=(host, port),
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await self._serve(server)
        listener = cast(asyncio.Server, server.transport)
        self.port = int(listener.sockets[0].getsockname()[1])

    async def start_rtu(
        self,
        port_path: str,
        *,
        baudrate: int = 19200,
        parity: str = "E",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        """Answer RTU requests on a serial device or pty."""
        server = ModbusSerialServer(
            self._devices(),
            framer=FramerType.RTU,
            port=port_path,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await self._serve(server)

    async def stop(self) -> None:
        """Close the listener and every client connection; the tick task keeps going."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # untyped in 3.16
            self._server = None

    async def close(self) -> None:
        await self.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _tick(line: SimulatedLine, tick: float) -> None:
    """Call ``line.step()`` every ``tick`` seconds (fixed rate), except while frozen."""
    loop = asyncio.get_running_loop()
    next_time = loop.time()
    while True:
        next_time += tick
        await asyncio.sleep(max(0.0, next_time - loop.time()))
        if not line.frozen:
            line.step()


async def serve_modbus_tcp(
    line: SimulatedLine,
    host: str = "127.0.0.1",
    port: int = 5020,
    tick: float | None = TICK,
    *,
    unit_ids: tuple[int, ...] = (UNIT_ID,),
) -> None:
    """Serve ``line`` over Modbus TCP and step it every ``tick`` s until cancelled."""
    async with SimulatorServer(line, tick=tick, unit_ids=unit_ids) as server:
        await server.start_tcp(host, port)
        await asyncio.Event().wait()


async def serve_modbus_rtu(
    line: SimulatedLine,
    port_path: str,
    tick: float | None = TICK,
    *,
    baudrate: int = 19200,
    parity: str = "E",
    stopbits: int = 1,
    bytesize: int = 8,
    unit_ids: tuple[int, ...] = (UNIT_ID,),
) -> None:
    """Serve ``line`` over Modbus RTU on a serial port (or pty) until cancelled."""
    async with SimulatorServer(line, tick=tick, unit_ids=unit_ids) as server:
        await server.start_rtu(
            port_path, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m floorgate_demo.simulator [--host H] [--port P] [--seed N]``: serve over TCP."""
    parser = argparse.ArgumentParser(description="Simulated press line (Modbus TCP).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_modbus_tcp(SimulatedLine(args.seed), args.host, args.port))


if __name__ == "__main__":
    main()
