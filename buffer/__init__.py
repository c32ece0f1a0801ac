"""The SQLite store-and-forward buffer. It knows events only as rows (buffer.rows) and
imports neither ``agent`` nor ``drivers``."""

from buffer.rows import (
    BufferStats,
    ClaimedEvent,
    DeadLetter,
    DestinationStats,
    EventRow,
    Unstorable,
)
from buffer.sqlite import BufferStoreError, SqliteBuffer

__all__ = [
    "BufferStats",
    "BufferStoreError",
    "ClaimedEvent",
    "DeadLetter",
    "DestinationStats",
    "EventRow",
    "SqliteBuffer",
    "Unstorable",
]
