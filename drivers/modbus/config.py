"""The YAML schema of Modbus sources (TCP and RTU). No pymodbus import here, so
checking a config never loads the protocol stack."""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Literal, Self

from pydantic import AliasChoices, Field, model_validator

from agent.common.model import StrictModel
from agent.common.units import Duration, format_duration
from agent.config.common import Placement, PlacementError
from drivers.codecs import REGISTER_COUNT, DataType, Swap


class InputType(enum.StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"

    @property
    def is_bit(self) -> bool:
        return self in (InputType.COIL, InputType.DISCRETE_INPUT)


DEVICE_ADDRESS_ALIASES = AliasChoices("device_address", "slave", "unit")
DEVICE_ADDRESS_KEYS = frozenset({"device_address", "slave", "unit"})

LAST_ADDRESS = 65535  # addresses are 16 bits: a value's registers (or bit) must all fit


class ModbusSignalConfig(StrictModel):
    """One value read from a device."""

    name: str = Field(
        description="Unique name of the signal across all sources; rules refer to it.",
        pattern=r"^[A-Za-z0-9_.\-]+$",
    )
    address: int = Field(ge=0, le=LAST_ADDRESS, description="0-based register or bit address.")
    input_type: InputType = Field(
        default=InputType.HOLDING,
        description="holding | input (registers), coil | discrete_input (bits).",
    )
    data_type: DataType = Field(default=DataType.UINT16, description="How registers decode.")
    swap: Swap = Field(default=Swap.NONE, description="none | byte | word | word_byte.")
    bit: int | None = Field(
        default=None, ge=0, le=15, description="For data_type bool on a register: bit 0-15."
    )
    length: int | None = Field(
        default=None, ge=1, le=125, description="For data_type string: number of registers."
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")
    unit_of_measurement: str | None = Field(
        default=None, description="Engineering unit shown with samples (e.g. degC, bar)."
    )
    device_address: int | None = Field(
        default=None,
        ge=0,
        le=255,
        validation_alias=DEVICE_ADDRESS_ALIASES,
        description="Unit id for this signal, when it differs from the source's.",
    )

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.input_type.is_bit and self.data_type is not DataType.BOOL:
            raise ValueError(
                f"input_type {self.input_type.value} reads bits: data_type must be bool"
            )
        if self.data_type is DataType.STRING and self.length is None:
            raise ValueError("data_type string needs length (number of registers)")
        if self.bit is not None and (self.data_type is not DataType.BOOL or self.input_type.is_bit):
            raise ValueError("bit is only for data_type bool on a holding or input register")
        last = self.address + self.register_count - 1
        if last > LAST_ADDRESS:
            what = (
                f"string of length {self.length}"
                if self.data_type is DataType.STRING
                else self.data_type.value
            )
            raise ValueError(
                f"signal {self.name!r} runs past the last Modbus address {LAST_ADDRESS}: "
                f"a {what} at address {self.address} takes {self.register_count} registers, "
                f"so its last address would be {last}"
            )
        return self

    @property
    def register_count(self) -> int:
        if self.input_type.is_bit:
            return 1
        if self.data_type is DataType.STRING:
            assert self.length is not None
            return self.length
        return REGISTER_COUNT[self.data_type]


def _raw_extent(signal: dict[str, Any]) -> tuple[str, int]:
    """What a signal not yet validated holds and how many addresses it takes (1 when its
    keys are wrong: validation names them afterwards)."""
    try:
        input_type = InputType(signal.get("input_type", InputType.HOLDING))
        data_type = DataType(signal.get("data_type", DataType.UINT16))
    except ValueError:
        return "value", 1
    if input_type.is_bit:
        return "bit", 1
    if data_type is DataType.STRING:
        length = signal.get("length")
        count = length if isinstance(length, int) and length > 0 else 1
        return f"string of length {count}", count
    return data_type.value, REGISTER_COUNT[data_type]


class ModbusCommon(StrictModel):
    name: str = Field(description="Unique name of this source (shown in health and logs).")
    device_address: int = Field(
        default=1,
        ge=0,
        le=255,
        validation_alias=DEVICE_ADDRESS_ALIASES,
        description="Default unit id (also accepted as slave or unit).",
    )
    scan_interval: Duration = Field(default=1.0, gt=0, description="Time between polls.")
    timeout: Duration = Field(default=1.0, gt=0, description="Per-request timeout.")
    retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Retries per request before failing. A unit that stopped answering "
        "is probed with one request, without retries.",
    )
    backoff_max: Duration = Field(
        default=30.0,
        gt=0,
        description="Longest wait before probing a unit that stopped answering, and "
        "between reconnect attempts.",
    )
    max_registers_per_request: int = Field(
        default=125,
        ge=1,
        le=125,
        description="Most registers one read asks for (neighbouring signals are read "
        "together up to this). Lower it for a device that refuses long reads.",
    )
    max_bits_per_request: int = Field(
        default=2000,
        ge=1,
        le=2000,
        description="Most coils or discrete inputs one read asks for.",
    )
    max_gap: int = Field(
        default=10,
        ge=0,
        le=125,
        description="Unused registers allowed inside one block read to save a request.",
    )
    signals: list[ModbusSignalConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_signals(self) -> Self:
        seen: set[str] = set()
        for index, signal in enumerate(self.signals):
            if signal.name in seen:
                raise ValueError(f"signals[{index}].name {signal.name!r} is used twice")
            seen.add(signal.name)
            # plan_blocks reads every value in one request: it must fit in one.
            if not signal.input_type.is_bit and signal.register_count > (
                self.max_registers_per_request
            ):
                raise ValueError(
                    f"signals[{index}] {signal.name!r} takes {signal.register_count} registers, "
                    f"more than one read request may ask for (max_registers_per_request: "
                    f"{self.max_registers_per_request})"
                )
        return self

    # Machines made from a template (agent.config.templates): a template's addresses are
    # offsets from the machine's base_address, and the machine's device_address is the
    # unit id of every signal that does not name its own.
    PLACEMENT_KEYS: ClassVar[frozenset[str]] = frozenset({"base_address", "device_address"})

    @classmethod
    def place_template_signal(cls, signal: dict[str, Any], placement: Placement) -> dict[str, Any]:
        if "address" not in signal and "node_id" in signal:
            raise PlacementError(
                f"has an OPC UA node_id and no address, and source {placement.source!r} is "
                "a Modbus device: a template's signals are written for one kind of source",
                instance_key="source",
            )
        placed = dict(signal)
        address = signal.get("address")
        if isinstance(address, int) and not isinstance(address, bool):
            base = placement.base_address or 0
            first = address + base
            what, count = _raw_extent(signal)
            last = first + count - 1
            if last > LAST_ADDRESS:
                span = f"registers {first}-{last}" if count > 1 else f"address {first}"
                raise PlacementError(
                    f"a {what} at address {address} + base_address {base} takes {span}, "
                    f"past the last Modbus address {LAST_ADDRESS}",
                    signal_key="address",
                )
            placed["address"] = first
        if placement.device_address is not None and not DEVICE_ADDRESS_KEYS & placed.keys():
            placed["device_address"] = placement.device_address
        return placed

    def unit_of(self, signal: ModbusSignalConfig) -> int:
        return self.device_address if signal.device_address is None else signal.device_address

    def where(self) -> str:
        raise NotImplementedError

    def summary(self) -> str:
        """One line for `floorgate check-config`: what is read, from where, how often."""
        from drivers.modbus.driver import plan_blocks  # lazy: checking a config loads no pymodbus

        units = sorted({self.unit_of(s) for s in self.signals})
        return (
            f"{self.where()}, unit id {', '.join(map(str, units))}, every "
            f"{format_duration(self.scan_interval)}, {len(self.signals)} signals"
            f" in {len(plan_blocks(self))} read requests per poll"
        )


class ModbusTcpConfig(ModbusCommon):
    type: Literal["modbus_tcp"]
    host: str = Field(description="IP address or host name of the device or gateway.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port of the device.")

    def where(self) -> str:
        return f"modbus_tcp {self.host}:{self.port}"


class Parity(enum.StrEnum):
    NONE = "none"
    EVEN = "even"
    ODD = "odd"

    @property
    def letter(self) -> str:
        return self.value[0].upper()


class ModbusRtuConfig(ModbusCommon):
    type: Literal["modbus_rtu"]
    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=19200, description="Bits per second.")
    parity: Parity = Field(default=Parity.EVEN, description="none | even | odd.")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits: 1 | 2.")
    bytesize: Literal[7, 8] = Field(default=8, description="Data bits: 7 | 8.")

    def where(self) -> str:
        framing = f"{self.bytesize}{self.parity.letter}{self.stopbits}"
        return f"modbus_rtu {self.port} {self.baudrate} {framing}"
