"""What the buffer stores and hands out. It knows events only as rows with an id, a
type, a key (the machine: order is kept per key) and an opaque payload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class EventRow(NamedTuple):
    """One event to store. A NamedTuple rather than a frozen dataclass: one is made per
    event on the ingest hot path, and a tuple is built ~3x faster."""

    id: str  # the event id (UUIDv7, time-ordered)
    type: str
    key: str  # ordering key: the machine
    time: str  # ISO 8601 UTC event time, for replay --since/--until
    payload: bytes  # the CloudEvent JSON, sent as-is (a block: its stored form)
    destinations: tuple[str, ...]  # one delivery row per destination
    # 0: one event. Otherwise a block of this many samples (buffer.blocks): ``id`` is the
    # block's, ``key`` empty, ``time`` its earliest sample's, ``payload`` blocks.encode's.
    n: int = 0

    @property
    def samples(self) -> int:
        """Events this row stands for."""
        return self.n or 1


@dataclass(frozen=True, slots=True)
class Unstorable:
    """What an append could not store because of its own data (a string that is not valid
    UTF-8, a payload that is not bytes): it would fail every retry. It is left
    out, counted (dropped, reason ``rejected``) and logged; the rest of the append was
    stored. Either an event (``row``) or a rule-state key (``state_key``)."""

    reason: str
    row: EventRow | None = None
    state_key: str | None = None


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
    size_bytes: int = 0  # database + WAL on disk
    wal_bytes: int = 0  # of which the WAL
    free_bytes: int = 0  # free pages in the database file, reused before it grows
    destinations: dict[str, DestinationStats] = field(default_factory=dict)
    # Undelivered events the buffer gave up, by (reason, type); reason is "full" (oldest
    # samples dropped for room), "refused" (new samples not stored: only protected events
    # were left), "expired" (older than max_age) or "rejected" (never stored: the event's
    # own data could not be, see Unstorable). Kept in the file: totals since creation.
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    last_dropped_at: float | None = None
    evicted_delivered: int = 0  # delivered events removed before their retention, for room
    # What the agent wrote to the disk (its /proc/self/io), added up over its runs and kept
    # in the file: bytes, seconds of running they cover, events stored meanwhile, and when
    # it was last brought up to date (None: never; the agent does so about once a minute).
    written_bytes: int = 0
    written_seconds: int = 0
    written_events: int = 0
    written_at: float | None = None


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


@dataclass(frozen=True, slots=True)
class Delivery:
    destination: str
    status: str  # pending | delivered | dead
    attempts: int
    last_error: str | None
    updated: float  # wall clock of the last change (delivery time for delivered rows)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored, with its deliveries: what `floorgate buffer show` prints."""

    seq: int
    id: str
    type: str
    key: str
    time: str
    created: float
    payload: bytes
    deliveries: tuple[Delivery, ...]
