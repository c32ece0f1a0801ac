"""Modbus TCP and RTU polling driver: the only agent module that imports pymodbus.

One :class:`ModbusDriver` owns one connection (a TCP device or gateway, or one
serial bus) and one pymodbus client. It only ever sends read function codes
(1 coils, 2 discrete inputs, 3 holding registers, 4 input registers).

Block plan
    :func:`plan_blocks` groups signals by (unit id, input type), sorts them by
    address and merges neighbours into one request while the request spans at most
    ``max_registers_per_request`` registers (``max_bits_per_request`` bits) and the
    hole between two signals is at most ``max_gap``. A signal is never split.

Poll loop
    Every ``scan_interval`` on a fixed-rate monotonic schedule (late polls skip the
    missed ticks instead of drifting or bursting), each block is read in turn and
    the sink gets one batch with one Sample per signal, stamped with the poll time.

Failures, from small to large
    - a value that does not decode (NaN, bad text): bad sample for that signal;
    - an exception response (e.g. 2, illegal data address): bad samples for that
      block's signals; the other blocks are still read;
    - no answer from a unit id (timeout, or gateway exceptions 10/11): the unit is
      *silent*; its signals are bad and it is tried again after scan_interval,
      then twice as long each time up to ``backoff_max``, while the other unit ids
      on the same connection keep their full rate;
    - the connection is refused or lost: state DISCONNECTED, one batch of bad
      samples for all signals on the transition, reconnect with the same backoff.

State changes (source state, a unit going silent or back, a block failing or
recovering) are logged once, as one line with key=value context.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from agent.common.backoff import Backoff
from drivers.base import (
    ConnectionState,
    DriverError,
    NotConnected,
    Quality,
    Sample,
    SampleSink,
    SourceHealth,
    Value,
)
from drivers.codecs import CodecError, apply_scale, decode_registers
from drivers.modbus.config import (
    InputType,
    ModbusCommon,
    ModbusRtuConfig,
    ModbusSignalConfig,
    ModbusTcpConfig,
)

log = logging.getLogger("floorgate.drivers.modbus")

ModbusConfig = ModbusTcpConfig | ModbusRtuConfig
_Client = AsyncModbusTcpClient | AsyncModbusSerialClient

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
_GATEWAY_SILENT = {10, 11}


class DeviceSilent(DriverError):
    """A unit id did not answer (timeout, or a gateway says it cannot reach it)."""


class BlockFailed(DriverError):
    """The device answered a block read with an exception response."""


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers or bits from ``address`` on ``unit``."""

    unit: int
    input_type: InputType
    address: int
    count: int
    signals: tuple[ModbusSignalConfig, ...]

    def describe(self) -> str:
        return f"unit={self.unit} {self.input_type.value}={self.address}+{self.count}"


def plan_blocks(config: ModbusCommon) -> list[Block]:
    """Merge the source's signals into as few read requests as the limits allow."""
    groups: dict[tuple[int, InputType], list[ModbusSignalConfig]] = {}
    for signal in config.signals:
        groups.setdefault((config.unit_of(signal), signal.input_type), []).append(signal)
    order = list(InputType)
    blocks: list[Block] = []
    for unit, input_type in sorted(groups, key=lambda key: (key[0], order.index(key[1]))):
        limit = (
            config.max_bits_per_request if input_type.is_bit else config.max_registers_per_request
        )
        signals = sorted(groups[unit, input_type], key=lambda s: (s.address, s.register_count))
        current: list[ModbusSignalConfig] = []
        start = end = 0
        for signal in signals:
            signal_end = signal.address + signal.register_count
            fits = max(end, signal_end) - start <= limit
            if current and signal.address - end <= config.max_gap and fits:
                current.append(signal)
                end = max(end, signal_end)
                continue
            if current:
                blocks.append(Block(unit, input_type, start, end - start, tuple(current)))
            current, start, end = [signal], signal.address, signal_end
        blocks.append(Block(unit, input_type, start, end - start, tuple(current)))
    return blocks


def _make_client(config: ModbusConfig) -> _Client:
    # reconnect_delay=0: pymodbus must not reconnect on its own; run() does, with backoff.
    if isinstance(config, ModbusTcpConfig):
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            name=config.name,
            timeout=config.timeout,
            retries=config.retries,
            reconnect_delay=0,
        )
    return AsyncModbusSerialClient(
        config.port,
        framer=FramerType.RTU,
        name=config.name,
        baudrate=config.baudrate,
        parity=config.parity.letter,
        stopbits=config.stopbits,
        bytesize=config.bytesize,
        timeout=config.timeout,
        retries=config.retries,
        reconnect_delay=0,
    )


def _quiet_pymodbus() -> None:
    """pymodbus logs every timeout at ERROR with a frame dump; this driver reports
    them itself (samples, health, one log line per change). Leave a level someone
    configured on purpose alone."""
    library_log = logging.getLogger("pymodbus")
    if library_log.level == logging.NOTSET:
        library_log.setLevel(logging.CRITICAL)


class _Schedule:
    """Fixed-rate ticks on the monotonic clock; a late poll skips the missed ticks."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next = time.monotonic()

    def reset(self) -> None:
        self.next = time.monotonic()

    async def wait(self) -> None:
        self.next += self.interval
        now = time.monotonic()
        if now > self.next:
            self.next += math.ceil((now - self.next) / self.interval) * self.interval
        await asyncio.sleep(self.next - now)


@dataclass
class _Unit:
    backoff: Backoff
    silent: bool = False
    retry_at: float = 0.0
    error: str = ""


class ModbusDriver:
    """Polls one Modbus TCP connection or RTU bus; see the module docstring."""

    def __init__(self, config: ModbusConfig) -> None:
        _quiet_pymodbus()
        self.config = config
        self.name = config.name
        self.health = SourceHealth(config.name)
        self.plan = plan_blocks(config)
        self._units: dict[int, _Unit] = {}
        self._block_errors: dict[int, str] = {}
        if isinstance(config, ModbusTcpConfig):
            self._target = f"{config.host}:{config.port}"
        else:
            self._target = config.port

    def signal_names(self) -> Sequence[str]:
        return [signal.name for signal in self.config.signals]

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled, reconnecting with backoff; never raises on I/O errors."""
        client = _make_client(self.config)
        try:
            await self._run(client, sink)
        finally:
            client.close()

    async def _run(self, client: _Client, sink: SampleSink) -> None:
        schedule = _Schedule(self.config.scan_interval)
        backoff = Backoff(self.config.scan_interval, self.config.backoff_max)
        while True:
            if not client.connected:
                if not await self._connect(client, sink):
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                schedule.reset()
            try:
                samples = await self._poll(client)
            except NotConnected as exc:
                client.close()  # drop a half-dead transport before reconnecting
                await self._disconnected(str(exc), sink)
                continue
            await sink(samples)
            await schedule.wait()

    async def _connect(self, client: _Client, sink: SampleSink) -> bool:
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:
            connected, reason = False, str(exc)
        else:
            reason = "connection refused or timed out"
        if connected:
            if self.health.state is ConnectionState.DISCONNECTED:
                self.health.reconnects += 1
            return True
        await self._disconnected(f"cannot connect to {self._target}: {reason}", sink)
        return False

    async def _disconnected(self, error: str, sink: SampleSink) -> None:
        """Enter DISCONNECTED; on the transition only, log once and send bad samples."""
        if not self.health.set_state(ConnectionState.DISCONNECTED, error):
            return
        log.warning(
            "modbus source disconnected source=%s target=%s error=%r",
            self.name,
            self._target,
            error,
        )
        now = datetime.now(UTC)
        self.health.bad_signals = {name: error for name in self.signal_names()}
        await sink([_bad(name, now, error) for name in self.signal_names()])

    async def _poll(self, client: _Client) -> list[Sample]:
        poll_time = datetime.now(UTC)
        now = time.monotonic()
        results: dict[str, Sample] = {}
        failed_units: set[int] = set()
        for index, block in enumerate(self.plan):
            unit = self._units.setdefault(
                block.unit, _Unit(Backoff(self.config.scan_interval, self.config.backoff_max))
            )
            if block.unit in failed_units or (unit.silent and now < unit.retry_at):
                _bad_block(block, poll_time, unit.error, results)
                continue
            try:
                values = await self._read(client, block)
            except DeviceSilent as exc:
                self._unit_silent(block.unit, unit, str(exc))
                failed_units.add(block.unit)
                _bad_block(block, poll_time, str(exc), results)
                continue
            except BlockFailed as exc:
                self._unit_answers(block.unit, unit)
                self._block_state(index, block, str(exc))
                _bad_block(block, poll_time, str(exc), results)
                continue
            self._unit_answers(block.unit, unit)
            self._block_state(index, block, None)
            _decode_block(block, values, poll_time, results)
        samples = [results[signal.name] for signal in self.config.signals]
        self._update_health(samples)
        return samples

    async def _read(self, client: _Client, block: Block) -> Sequence[int] | Sequence[bool]:
        """One request, with pymodbus errors translated into this module's errors."""
        if not client.connected:
            raise NotConnected(f"connection to {self._target} lost")
        read = {
            InputType.COIL: client.read_coils,
            InputType.DISCRETE_INPUT: client.read_discrete_inputs,
            InputType.HOLDING: client.read_holding_registers,
            InputType.INPUT: client.read_input_registers,
        }[block.input_type]
        self.health.reads += 1
        try:
            response: ModbusPDU = await read(block.address, count=block.count, device_id=block.unit)
        except ConnectionException as exc:
            self.health.read_errors += 1
            raise NotConnected(f"connection to {self._target} lost: {exc}") from None
        except ModbusIOException:
            self.health.read_errors += 1
            if not client.connected:
                raise NotConnected(f"connection to {self._target} lost (no answer)") from None
            raise DeviceSilent(f"unit {block.unit} did not answer (timeout)") from None
        except (ModbusException, OSError) as exc:
            self.health.read_errors += 1
            raise BlockFailed(f"reading {block.describe()} failed: {exc}") from None
        return self._values(response, block)

    def _values(self, response: ModbusPDU, block: Block) -> Sequence[int] | Sequence[bool]:
        if response.isError():
            self.health.read_errors += 1
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown")
            text = f"exception {code} ({name}) from {block.describe()}"
            if code in _GATEWAY_SILENT:
                raise DeviceSilent(text)
            raise BlockFailed(text)
        values: Sequence[int] | Sequence[bool]
        values = response.bits if block.input_type.is_bit else response.registers
        if len(values) < block.count:
            self.health.read_errors += 1
            raise BlockFailed(f"short answer from {block.describe()}: {len(values)} values")
        return values[: block.count]

    def _unit_silent(self, unit_id: int, unit: _Unit, error: str) -> None:
        delay = unit.backoff.next()
        unit.retry_at = time.monotonic() + delay
        unit.error = error
        if not unit.silent:
            unit.silent = True
            log.warning(
                "modbus device silent source=%s unit=%d retry_in=%.1fs error=%r",
                self.name,
                unit_id,
                delay,
                error,
            )

    def _unit_answers(self, unit_id: int, unit: _Unit) -> None:
        if unit.silent:
            log.info("modbus device answers again source=%s unit=%d", self.name, unit_id)
            unit.silent = False
            unit.error = ""
            unit.backoff.reset()

    def _block_state(self, index: int, block: Block, error: str | None) -> None:
        previous = self._block_errors.get(index)
        if error == previous:
            return
        if error is None:
            del self._block_errors[index]
            log.info("modbus block reads again source=%s block=%s", self.name, block.describe())
        else:
            self._block_errors[index] = error
            log.warning(
                "modbus block failed source=%s block=%s error=%r",
                self.name,
                block.describe(),
                error,
            )

    def _update_health(self, samples: Sequence[Sample]) -> None:
        bad = {s.signal: s.error or "bad quality" for s in samples if s.quality is not Quality.GOOD}
        self.health.bad_signals = bad
        if len(bad) < len(samples):
            self.health.last_data_time = time.time()
        state = ConnectionState.DEGRADED if bad else ConnectionState.CONNECTED
        error = next(iter(bad.values())) if bad else None
        if self.health.set_state(state, error):
            log.info(
                "modbus source state source=%s target=%s state=%s bad_signals=%d",
                self.name,
                self._target,
                state.value,
                len(bad),
            )


def _bad(name: str, when: datetime, error: str) -> Sample:
    return Sample(name, None, Quality.BAD, when, error)


def _bad_block(block: Block, when: datetime, error: str, results: dict[str, Sample]) -> None:
    for signal in block.signals:
        results[signal.name] = _bad(signal.name, when, error)


def _decode(signal: ModbusSignalConfig, words: Sequence[int]) -> Value:
    raw = decode_registers(words, signal.data_type, signal.swap, bit=signal.bit)
    if isinstance(raw, bool | str):
        return raw
    return apply_scale(raw, signal.scale, signal.offset)


def _decode_block(
    block: Block, values: Sequence[int] | Sequence[bool], when: datetime, out: dict[str, Sample]
) -> None:
    for signal in block.signals:
        offset = signal.address - block.address
        try:
            if block.input_type.is_bit:
                value: Value = bool(values[offset])
            else:
                words = [int(v) for v in values[offset : offset + signal.register_count]]
                value = _decode(signal, words)
        except CodecError as exc:
            out[signal.name] = _bad(signal.name, when, f"{signal.data_type.value}: {exc}")
        else:
            out[signal.name] = Sample(signal.name, value, Quality.GOOD, when)
