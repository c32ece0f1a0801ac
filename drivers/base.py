"""What every driver shares: the Sample it produces, its health, and its protocol.

A driver reads one connection (a Modbus TCP device, a serial bus, an OPC UA server)
and hands batches of Samples to a sink. It knows nothing of events, the buffer or
destinations, and it never writes to a machine.

Error kinds (library exceptions are translated into these inside the driver module
that uses the library; nobody else sees a pymodbus or asyncua exception):

- ``NotConnected``: the peer cannot be reached now; the driver reconnects with backoff.
- ``DriverError``: base class, carries a message meant for a person.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

Value = bool | int | float | str | None


class Quality(enum.StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Sample(NamedTuple):
    """One reading of one signal.

    ``source_time`` is timezone-aware UTC: the OPC UA SourceTimestamp, or the poll
    time for Modbus. A bad-quality sample carries ``value=None`` and an ``error``.

    A NamedTuple rather than a frozen dataclass: drivers make one per value per poll
    (30,000 a second on a big plant) and a tuple is built about three times faster.
    """

    signal: str
    value: Value
    quality: Quality
    source_time: datetime
    error: str | None = None


SampleSink = Callable[[Sequence[Sample]], Awaitable[None]]
"""Where a driver puts each batch (one poll, or one burst of notifications).

Awaiting it applies back-pressure: the queue behind it is bounded."""


class DriverError(Exception):
    """A driver problem, with a message meant for a plant engineer."""


class NotConnected(DriverError):
    """The device or server cannot be reached; reconnect with backoff."""


class ConnectionState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    DEGRADED = "degraded"  # connected, but some devices or signals fail
    DISCONNECTED = "disconnected"


@dataclass
class SourceHealth:
    """What health and metrics show about one source. Updated by the driver only."""

    name: str
    state: ConnectionState = ConnectionState.STARTING
    since: float = field(default_factory=time.time)
    last_data_time: float | None = None  # wall clock of the last good read
    last_error: str | None = None
    reconnects: int = 0
    reads: int = 0  # requests / notifications handled
    read_errors: int = 0
    bad_signals: dict[str, str] = field(default_factory=dict)  # signal -> why
    # Subscription-based sources (OPC UA); None where the protocol only polls.
    subscribed_items: int | None = None  # monitored items the server accepted
    subscription_rebuilds: int = 0  # subscriptions rebuilt after going silent
    time_origins: dict[str, int] = field(default_factory=dict)  # source/server/agent -> samples
    # Seconds without good data after which health calls a connected source degraded
    # ("no data for N s"); set by the driver from its own timing (poll interval,
    # keep-alive window). None: the driver has not said (health does not judge age).
    stale_after: float | None = None

    def set_state(self, state: ConnectionState, error: str | None = None) -> bool:
        """Change state; return True when it really changed (so it is logged once).

        ``last_error`` keeps the latest error while something is wrong and is cleared
        when the source is fully connected again: health must not show an old fault
        beside a healthy state."""
        if error is not None:
            self.last_error = error
        elif state is ConnectionState.CONNECTED:
            self.last_error = None
        if state is self.state:
            return False
        self.state = state
        self.since = time.time()
        return True


class LastReads:
    """The latest reading of each signal of one source, its raw form and when it last
    changed: what the health server's signal view shows. Kept by the driver.

    Cheap on the hot path: ``put`` does a lookup, a compare and a store per sample, and
    ``raw`` holds objects the driver made anyway (a signal's register words, the OPC UA
    Variant); nothing is rendered until someone asks."""

    __slots__ = ("changed", "raw", "samples")

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.raw: dict[str, object] = {}  # signal -> the driver's raw value (None: none)
        self.changed: dict[str, float] = {}  # signal -> wall clock of its last change

    def put(self, samples: Sequence[Sample], now: float) -> None:
        """Take one batch; a change of value or quality stamps ``changed`` with ``now``."""
        last, changed = self.samples, self.changed
        for sample in samples:
            name = sample.signal
            old = last.get(name)
            if old is None or old.value != sample.value or old.quality is not sample.quality:
                changed[name] = now
            last[name] = sample


@dataclass(frozen=True, slots=True)
class SignalRead:
    """One signal as the signal view shows it: built when asked, never per sample."""

    signal: str
    address: str  # where it is read: "unit 1 holding 40006-40007" or the node id
    data_type: str | None  # None: the server says at run time (OPC UA without data_type)
    swap: str | None  # Modbus word/byte order; None where it does not apply
    unit: str | None  # unit_of_measurement
    raw: str | None  # "0x4292 0xCCCD", "Float 73.4"; None before the first read
    sample: Sample | None  # the latest reading, decoded
    changed: float | None  # wall clock of the last change of value or quality


class Driver(Protocol):
    """One connection's reader. ``run`` loops until cancelled, reconnecting itself."""

    name: str
    health: SourceHealth

    def signal_names(self) -> Sequence[str]: ...

    def signal_reads(self) -> list[SignalRead]:
        """Every signal with its address, raw and decoded value (the signal view)."""
        ...

    async def run(self, sink: SampleSink) -> None: ...
