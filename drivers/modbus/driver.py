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
    - a unit id stops answering (timeout after the configured retries, or gateway
      exceptions 10/11): the unit is *out*. Its signals are bad with the reason, and
      it is *probed* with one request and no retries after ``scan_interval``, then
      twice as long each time up to ``backoff_max``. Units that answer are read
      first in every poll and keep their rate; a dead unit costs them one timeout
      per probe, i.e. per backoff period, never one per retry. A unit timing out
      never closes the connection while another unit on it answers;
    - the connection is refused or lost, or (TCP only) every unit on it times out:
      state DISCONNECTED, one batch of bad samples for all signals on the
      transition, reconnect with the same backoff.

Each event (the source connecting, going or coming back, a unit going out or
answering again, a block or a value failing or reading again) is logged once, as
one line with key=value context and, for a failure, what the driver does next.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from agent.common.backoff import Backoff
from agent.common.errors import Words, describe
from agent.common.units import seconds_text
from drivers.base import (
    ConnectionState,
    DriverError,
    LastReads,
    NotConnected,
    Quality,
    Sample,
    SampleSink,
    SignalRead,
    SourceHealth,
    Value,
)
from drivers.codecs import CodecError, Decoder, make_decoder
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
# What each exception code means for a read, in words a plant engineer can act on.
EXCEPTION_MEANINGS = {
    1: "the device does not support this kind of read",
    2: "the device says the address does not exist",
    3: "the device refuses a read this long (lower max_registers_per_request)",
    4: "the device reports an internal failure",
    5: "the device accepted the read but has not finished it",
    6: "the device is busy",
    7: "the device cannot perform the read",
    8: "the device reports a memory parity error",
    10: "the gateway has no path to this unit",
    11: "the gateway got no answer from this unit",
}
_GATEWAY_SILENT = {10, 11}

# Vendor manuals number registers from 1 with the table as first digit (holding 40001 is
# address 0); errors use that spelling so they match the manual the engineer holds.
_TABLE_DIGIT = {
    InputType.COIL: 0,
    InputType.DISCRETE_INPUT: 1,
    InputType.INPUT: 3,
    InputType.HOLDING: 4,
}

# pymodbus 3.16 closes a TCP connection at the (retries + 5)th request in a row that
# stays unanswered after its retries, counted over all unit ids: a few dead units probed
# one after the other would drop the connection their healthy neighbours use. The driver
# decides that itself (every unit silent, see ModbusDriver._poll), so pymodbus's count
# is set out of reach.
_NEVER = 2**31

# What pymodbus's bare exceptions mean; agent.common.errors has the general ones (a reset
# or refused connection, a timeout).
_WORDS: Words = (
    (ConnectionException, "the connection is not open"),
    (ModbusIOException, "no valid answer arrived"),
)
_MODBUS_TAG = re.compile(r"^\[[^\]]*\]\s*")


class DeviceSilent(DriverError):
    """A unit id did not answer (timeout, or a gateway says it cannot reach it)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out  # False: a gateway answered for it (exception 10/11)


class BlockFailed(DriverError):
    """A block read failed while the unit is there (an exception response, a short
    answer), or the request could not be made at all (``answered`` False)."""

    def __init__(self, message: str, *, answered: bool = True) -> None:
        super().__init__(message)
        self.answered = answered


def exception_text(exc: BaseException) -> str:
    """ "message (Type)" (agent.common.errors), never a bare ``ConnectionResetError:``."""
    if isinstance(exc, ModbusException):
        # str() wraps the message in "Modbus Error: [Connection] ..."; the type name
        # already says that much, and without a message the wrapper is all there is.
        message = _MODBUS_TAG.sub("", exc.string).strip()
        said = message or next((text for kind, text in _WORDS if isinstance(exc, kind)), None)
        return f"{said or 'failed without a message'} ({type(exc).__name__})"
    return describe(exc, words=_WORDS)


def exception_response_text(code: int) -> str:
    """'the device says ... (Modbus exception 2, illegal data address)'."""
    name = EXCEPTION_NAMES.get(code)
    if name is None:
        return f"the device answered with exception code {code}, which Modbus does not define"
    return f"{EXCEPTION_MEANINGS[code]} (Modbus exception {code}, {name})"


def register_reference(input_type: InputType, address: int) -> str:
    """A 0-based address in vendor notation: holding 100 is 40101, coil 0 is 00001;
    above 9999 the six-digit form (holding 10000 is 410001)."""
    number = address + 1
    digits = 4 if number <= 9999 else 5
    return f"{_TABLE_DIGIT[input_type]}{number:0{digits}d}"


class _Slot(NamedTuple):
    """Where one signal sits in its block's answer and how it is decoded: worked out
    once per block, not for every value of every poll (30 % of the event loop on a
    20,000-register plant went to working it out again: bench/plant_scale_bench.py)."""

    name: str
    offset: int  # from the block's first address
    width: int  # registers (1 for a bit)
    decode: Decoder | None  # None: a coil or discrete input, read as a bool
    signal: ModbusSignalConfig


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers or bits from ``address`` on ``unit``."""

    unit: int
    input_type: InputType
    address: int
    count: int
    signals: tuple[ModbusSignalConfig, ...]
    layout: tuple[_Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bits = self.input_type.is_bit
        layout = tuple(
            _Slot(
                signal.name,
                signal.address - self.address,
                signal.register_count,
                None
                if bits
                else make_decoder(
                    signal.data_type,
                    signal.swap,
                    bit=signal.bit,
                    scale=signal.scale,
                    offset=signal.offset,
                ),
                signal,
            )
            for signal in self.signals
        )
        object.__setattr__(self, "layout", layout)  # frozen: set once, here

    def registers(self, address: int | None = None, count: int | None = None) -> str:
        """'holding 40101-40103' (the block, or ``count`` items from ``address``)."""
        first = self.address if address is None else address
        last = first + (self.count if count is None else count) - 1
        text = f"{self.input_type.value} {register_reference(self.input_type, first)}"
        if last > first:
            text += f"-{register_reference(self.input_type, last)}"
        return text

    def where(self) -> str:
        """'unit 1 holding 40101-40103'."""
        return f"unit {self.unit} {self.registers()}"


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
    client: _Client
    if isinstance(config, ModbusTcpConfig):
        client = AsyncModbusTcpClient(
            config.host,
            port=config.port,
            name=config.name,
            timeout=config.timeout,
            retries=config.retries,
            reconnect_delay=0,
        )
    else:
        client = AsyncModbusSerialClient(
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
    client.set_max_no_responses(_NEVER)
    return client


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
    """One unit id on the connection, and whether it is out (stopped answering)."""

    id: int
    backoff: Backoff
    out: bool = False
    probe_at: float = 0.0  # monotonic; while out, the next single request is sent then
    out_since: float = 0.0  # monotonic, for the after=...s of the recovery line
    timed_out: bool = False  # out by timeout (not by a gateway's exception 10/11)
    logged: bool = False  # its going out was logged, so its return is logged too
    error: str = ""


@dataclass
class _Fault:
    """A block or value that fails now: the error and since when (monotonic)."""

    error: str
    since: float


class ModbusDriver:
    """Polls one Modbus TCP connection or RTU bus; see the module docstring."""

    def __init__(self, config: ModbusConfig) -> None:
        self.config = config
        self.name = config.name
        self.health = SourceHealth(config.name)
        # Health calls a connected source stale after this long without a good read.
        # Good reads come at least once per poll; a poll may be late by one read that
        # used all its retries (or by the probe of a unit that is out: one timeout), so
        # allow three polls plus that: one slow answer is not a stall, three missed
        # polls are.
        self.health.stale_after = 3 * config.scan_interval + (config.retries + 1) * config.timeout
        self.plan = plan_blocks(config)
        self.reads = LastReads()  # raw: a signal's register words (list) or its bit
        self._units = {
            block.unit: _Unit(block.unit, Backoff(config.scan_interval, config.backoff_max))
            for block in self.plan
        }
        self._block_faults: dict[int, _Fault] = {}
        self._value_faults: dict[str, _Fault] = {}
        self._tcp = isinstance(config, ModbusTcpConfig)
        self._failed = False  # a connect failed or a connection was lost since the last open
        self._open = False  # run() opened the connection and has not seen it close
        self._disconnected_at = 0.0
        self._answered = False  # some unit answered during the current poll
        if isinstance(config, ModbusTcpConfig):
            self._target = f"{config.host}:{config.port}"
        else:
            self._target = config.port

    def signal_names(self) -> Sequence[str]:
        return [signal.name for signal in self.config.signals]

    def signal_reads(self) -> list[SignalRead]:
        """Each signal's registers in vendor notation, raw words in hex, decoded value."""
        reads = self.reads
        result = []
        for block in self.plan:
            for signal in block.signals:
                name = signal.name
                raw = reads.raw.get(name)
                result.append(
                    SignalRead(
                        signal=name,
                        address=f"unit {block.unit} "
                        + block.registers(signal.address, signal.register_count),
                        data_type=signal.data_type.value,
                        swap=None if block.input_type.is_bit else signal.swap.value,
                        unit=signal.unit_of_measurement,
                        raw=_raw_text(raw),
                        sample=reads.samples.get(name),
                        changed=reads.changed.get(name),
                    )
                )
        return result

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled, reconnecting with backoff; never raises on I/O errors."""
        client = _make_client(self.config)
        self._open = False
        try:
            await self._run(client, sink)
        finally:
            client.close()

    async def _run(self, client: _Client, sink: SampleSink) -> None:
        schedule = _Schedule(self.config.scan_interval)
        backoff = Backoff(self.config.scan_interval, self.config.backoff_max)
        while True:
            # Not `client.connected`: a connection that closed on its own is reported
            # as lost (below) before the next connect, which may fail for another reason.
            if not self._open:
                error = await self._connect(client)
                if error is not None:
                    await self._lost(error, sink, backoff.next())
                    continue
                self._open = True
                schedule.reset()
            try:
                samples = await self._poll(client)
            except NotConnected as exc:
                client.close()  # drop a half-dead transport before reconnecting
                self._open = False
                await self._lost(str(exc), sink, backoff.next())
                continue
            # Reset on an answer, not on connect: a TCP peer that accepts connections
            # but never answers must still be retried less and less often.
            if self._answered:
                backoff.reset()
            await sink(samples)
            await schedule.wait()

    async def _connect(self, client: _Client) -> str | None:
        """Open the connection; the reason in words when it cannot be opened."""
        started = time.monotonic()
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:
            return f"cannot connect to {self._target}: {exception_text(exc)}"
        if not connected:
            return self._connect_failure(time.monotonic() - started)
        if self._failed:
            self._failed = False
            self.health.reconnects += 1
        elif self.health.state is ConnectionState.STARTING:
            log.info(
                "modbus source connected source=%s target=%s units=%s requests_per_poll=%d",
                self.name,
                self._target,
                ",".join(str(unit) for unit in self._units),
                len(self.plan),
            )
        # A fresh connection deserves a fresh look: units that are out are probed in
        # the first poll (one request each) instead of waiting out their backoff.
        for unit in self._units.values():
            unit.probe_at = 0.0
        return None

    def _connect_failure(self, elapsed: float) -> str:
        # pymodbus logs why connect() failed and returns False; tell what we can see.
        if not self._tcp:
            port = self._target
            if not os.path.exists(port):
                return f"cannot open serial port {port}: it does not exist"
            if not os.access(port, os.R_OK | os.W_OK):
                return (
                    f"cannot open serial port {port}: permission denied "
                    "(the agent's user needs the group that owns it, usually dialout)"
                )
            return f"cannot open serial port {port}: it exists but could not be opened"
        if elapsed >= 0.9 * self.config.timeout:
            timeout = seconds_text(self.config.timeout)
            return f"cannot connect to {self._target}: no answer within {timeout} s"
        return (
            f"cannot connect to {self._target}: the connection was refused "
            "or the host is unreachable"
        )

    async def _lost(self, error: str, sink: SampleSink, delay: float) -> None:
        """A connect failed or the connection was lost: report it, wait ``delay``."""
        self._failed = True
        await self._disconnected(error, sink, delay)
        await asyncio.sleep(delay)

    async def _disconnected(self, error: str, sink: SampleSink, delay: float) -> None:
        """Enter DISCONNECTED; on the transition only, log once and send bad samples."""
        if not self.health.set_state(ConnectionState.DISCONNECTED, error):
            return
        self._disconnected_at = time.monotonic()
        log.warning(
            "modbus source disconnected source=%s target=%s error=%r next=reconnect-in-%ss",
            self.name,
            self._target,
            error,
            seconds_text(delay),
        )
        now = datetime.now(UTC)
        self.health.bad_signals = {name: error for name in self.signal_names()}
        self.reads.raw.clear()
        samples = [_bad(name, now, error) for name in self.signal_names()]
        self.reads.put(samples, time.time())
        await sink(samples)

    async def _poll(self, client: _Client) -> list[Sample]:
        if not client.connected:  # checked here too: a poll may send no request at all
            raise NotConnected(self._closed())
        poll_time = datetime.now(UTC)
        now = time.monotonic()
        self._answered = False
        results: dict[str, Sample] = {}
        failed_units: set[int] = set()
        # Units that answer are read first, probes of units that are out come last: a
        # probe's timeout then delays neither the reads nor the poll time stamped on them.
        ordered = sorted(enumerate(self.plan), key=lambda item: self._units[item[1].unit].out)
        for index, block in ordered:
            unit = self._units[block.unit]
            if block.unit in failed_units or (unit.out and now < unit.probe_at):
                _bad_block(block, poll_time, unit.error, results, self.reads.raw)
                continue
            try:
                values = await self._read(client, block, probe=unit.out)
            except DeviceSilent as exc:
                failed_units.add(block.unit)
                _bad_block(block, poll_time, str(exc), results, self.reads.raw)
                everyone_silent = self._tcp and exc.timed_out and self._all_timed_out(unit)
                self._unit_out(unit, str(exc), now, timed_out=exc.timed_out, quiet=everyone_silent)
                if everyone_silent:
                    # The TCP connection may be half-dead (peer gone without a FIN):
                    # with no unit answering, a fresh connection is worth a try.
                    raise NotConnected(f"no unit on {self._target} answers: {exc}") from None
                continue
            except BlockFailed as exc:
                if exc.answered:
                    self._unit_answers(unit)
                self._block_state(index, block, str(exc))
                _bad_block(block, poll_time, str(exc), results, self.reads.raw)
                continue
            self._unit_answers(unit)
            self._block_state(index, block, None)
            undecodable: dict[str, str] = {}
            if _decode_block(block, values, poll_time, results, undecodable, self.reads.raw):
                self.health.last_data_time = time.time()
            self._value_states(block, undecodable)
        samples = [results[signal.name] for signal in self.config.signals]
        self.reads.put(samples, time.time())
        self._update_health(samples)
        return samples

    def _closed(self) -> str:
        if self._tcp:
            return f"connection to {self._target} closed by the device or the network"
        return f"serial port {self._target} closed (adapter unplugged or port error)"

    def _all_timed_out(self, failing: _Unit) -> bool:
        """Would every unit be out by timeout once ``failing`` is?"""
        return all(u is failing or (u.out and u.timed_out) for u in self._units.values())

    async def _read(
        self, client: _Client, block: Block, *, probe: bool
    ) -> Sequence[int] | Sequence[bool]:
        """One request, with pymodbus errors translated into this module's errors."""
        if not client.connected:
            raise NotConnected(self._closed())
        read = {
            InputType.COIL: client.read_coils,
            InputType.DISCRETE_INPUT: client.read_discrete_inputs,
            InputType.HOLDING: client.read_holding_registers,
            InputType.INPUT: client.read_input_registers,
        }[block.input_type]
        # pymodbus 3.16 has no per-request retries: the transaction manager reads
        # ctx.retries for each request it sends, and this driver sends one at a time,
        # so setting it here applies to this request only. A probe of a unit that is
        # out gets no retries: it costs its neighbours one timeout, not retries+1.
        client.ctx.retries = 0 if probe else self.config.retries
        self.health.reads += 1
        try:
            response: ModbusPDU = await read(block.address, count=block.count, device_id=block.unit)
        except ConnectionException as exc:
            self.health.read_errors += 1
            raise NotConnected(
                f"connection to {self._target} lost: {exception_text(exc)}"
            ) from None
        except ModbusIOException:
            self.health.read_errors += 1
            if not client.connected:
                raise NotConnected(
                    f"connection to {self._target} closed while waiting for {block.where()}"
                ) from None
            raise DeviceSilent(
                f"unit {block.unit} does not answer: no reply to {block.registers()} "
                f"within {seconds_text(self.config.timeout)} s",
                timed_out=True,
            ) from None
        except OSError as exc:  # a serial adapter unplugged, a socket error on send
            self.health.read_errors += 1
            raise NotConnected(
                f"connection to {self._target} failed: {exception_text(exc)}"
            ) from None
        except ModbusException as exc:
            self.health.read_errors += 1
            raise BlockFailed(
                f"{block.where()}: the request failed: {exception_text(exc)}", answered=False
            ) from None
        return self._values(response, block)

    def _values(self, response: ModbusPDU, block: Block) -> Sequence[int] | Sequence[bool]:
        if response.isError():
            self.health.read_errors += 1
            code = int(getattr(response, "exception_code", 0))
            text = f"{block.where()}: {exception_response_text(code)}"
            if code in _GATEWAY_SILENT:
                raise DeviceSilent(text, timed_out=False)
            raise BlockFailed(text)
        values: Sequence[int] | Sequence[bool]
        values = response.bits if block.input_type.is_bit else response.registers
        if len(values) < block.count:
            self.health.read_errors += 1
            raise BlockFailed(
                f"{block.where()}: the device sent {len(values)} of the "
                f"{block.count} values asked for"
            )
        return values[: block.count]

    def _unit_out(
        self, unit: _Unit, error: str, poll_start: float, *, timed_out: bool, quiet: bool
    ) -> None:
        """A request to ``unit`` went unanswered: (re)schedule its next probe.

        The next probe is due ``delay`` after the start of this poll, not after the
        timeout: polls start on the schedule's ticks, so a probe then comes once per
        backoff period instead of one tick later each time.
        ``quiet``: the source-disconnected line says it, so no line of its own."""
        delay = unit.backoff.next()
        now = time.monotonic()
        unit.probe_at = poll_start + delay
        unit.error = error
        unit.timed_out = timed_out
        if unit.out:
            log.debug(
                "modbus probe unanswered source=%s unit=%d next=probe-in-%ss",
                self.name,
                unit.id,
                seconds_text(delay),
            )
            return
        unit.out, unit.out_since, unit.logged = True, now, not quiet
        if unit.logged:
            log.warning(
                "modbus unit not answering source=%s unit=%d error=%r next=probe-in-%ss",
                self.name,
                unit.id,
                error,
                seconds_text(delay),
            )

    def _unit_answers(self, unit: _Unit) -> None:
        self._answered = True
        if not unit.out:
            return
        if unit.logged:
            log.info(
                "modbus unit answering again source=%s unit=%d after=%ss",
                self.name,
                unit.id,
                seconds_text(time.monotonic() - unit.out_since),
            )
        unit.out = unit.timed_out = unit.logged = False
        unit.error = ""
        unit.backoff.reset()

    def _block_state(self, index: int, block: Block, error: str | None) -> None:
        fault = self._block_faults.get(index)
        if error is None:
            if fault is not None:
                del self._block_faults[index]
                log.info(
                    "modbus block reads again source=%s unit=%d block=%r after=%ss",
                    self.name,
                    block.unit,
                    block.registers(),
                    seconds_text(time.monotonic() - fault.since),
                )
            return
        if fault is not None:
            fault.error = error  # same fault going on: no new line
            return
        self._block_faults[index] = _Fault(error, time.monotonic())
        log.warning(
            "modbus block failed source=%s unit=%d block=%r error=%r next=retry-in-%ss",
            self.name,
            block.unit,
            block.registers(),
            error,
            seconds_text(self.config.scan_interval),
        )

    def _value_states(self, block: Block, undecodable: dict[str, str]) -> None:
        """Log a value of a block just read that stops or starts decoding again (NaN,
        bad text), once each."""
        for signal in block.signals:
            fault = self._value_faults.get(signal.name)
            error = undecodable.get(signal.name)
            if error is None and fault is not None:
                del self._value_faults[signal.name]
                log.info(
                    "modbus value readable again source=%s signal=%s after=%ss",
                    self.name,
                    signal.name,
                    seconds_text(time.monotonic() - fault.since),
                )
            elif error is not None and fault is None:
                self._value_faults[signal.name] = _Fault(error, time.monotonic())
                log.warning(
                    "modbus value unreadable source=%s signal=%s error=%r next=retry-in-%ss",
                    self.name,
                    signal.name,
                    error,
                    seconds_text(self.config.scan_interval),
                )

    def _update_health(self, samples: Sequence[Sample]) -> None:
        bad = {s.signal: s.error or "bad quality" for s in samples if s.quality is not Quality.GOOD}
        self.health.bad_signals = bad
        state = ConnectionState.DEGRADED if bad else ConnectionState.CONNECTED
        # A unit that is out is the fault a person should see first: it names the unit.
        errors = [unit.error for unit in self._units.values() if unit.out] + list(bad.values())
        error = errors[0] if errors else None
        before = self.health.state
        # Only a return from DISCONNECTED is logged here: the first connection is logged
        # when it opens, and DEGRADED <-> CONNECTED is always explained by the unit,
        # block or value line logged when it happened.
        if self.health.set_state(state, error) and before is ConnectionState.DISCONNECTED:
            log.info(
                "modbus source connected again source=%s target=%s after=%ss reconnects=%d "
                "bad_signals=%d",
                self.name,
                self._target,
                seconds_text(time.monotonic() - self._disconnected_at),
                self.health.reconnects,
                len(bad),
            )


def _bad(name: str, when: datetime, error: str) -> Sample:
    return Sample(name, None, Quality.BAD, when, error)


def _bad_block(
    block: Block, when: datetime, error: str, results: dict[str, Sample], raw: dict[str, object]
) -> None:
    for signal in block.signals:
        results[signal.name] = _bad(signal.name, when, error)
        raw.pop(signal.name, None)  # not read this time: an old raw value would mislead


def _raw_text(raw: object) -> str | None:
    """Register words as the vendor tools show them (0x4292 0xCCCD), a bit as 0 or 1."""
    if isinstance(raw, bool):
        return str(int(raw))
    if isinstance(raw, list):
        return " ".join(f"0x{word:04X}" for word in raw)
    return None


def _decode_block(
    block: Block,
    values: Sequence[int] | Sequence[bool],
    when: datetime,
    out: dict[str, Sample],
    undecodable: dict[str, str],
    raw: dict[str, object],
) -> int:
    """Put one Sample per signal of ``block`` into ``out`` and the errors of values that
    do not decode into ``undecodable``, and each signal's words (or bit) into ``raw``;
    return how many samples are good."""
    good = 0
    for name, offset, width, decode, signal in block.layout:
        value: Value
        if decode is None:
            value = raw[name] = bool(values[offset])
        else:
            words = values[offset : offset + width]
            raw[name] = words  # made for decoding anyway: no extra allocation
            try:
                value = decode(words)
            except CodecError as exc:
                where = f"unit {block.unit} {block.registers(signal.address, width)}"
                error = f"{where}: not a usable {signal.data_type.value}: {exc}"
                undecodable[name] = error
                out[name] = _bad(name, when, error)
                continue
        out[name] = Sample(name, value, Quality.GOOD, when)
        good += 1
    return good
