"""What the buffer stores and hands out. It knows events only as rows with an id, a
type, a key (the machine: order is kept per key) and an opaque payload."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EventRow:
    id: str  # the event id (UUIDv7, time-ordered)
    type: str
    key: str  # ordering key: the machine
    time: str  # ISO 8601 UTC event time, for replay --since/--until
    payload: bytes  # the CloudEvent JSON, sent as-is
    destinations: tuple[str, ...]  # one delivery row per destination


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    seq: int  # buffer-wide order of arrival
    id: str
    type: str
    key: str
    payload: bytes
    attempts: int  # failed attempts so far at this destination


@dataclass(slots=True)
class DestinationStats:
    destination: str
    pending: int = 0
    dead: int = 0
    delivered: int = 0
    oldest_pending_created: float | None = None  # wall clock when the oldest pending was buffered
    last_delivered_at: float | None = None


@dataclass(slots=True)
class BufferStats:
    events: int = 0
    size_bytes: int = 0
    destinations: dict[str, DestinationStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    id: str
    type: str
    key: str
    destination: str
    reason: str
    attempts: int
    dead_at: float
