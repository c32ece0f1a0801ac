"""The SQLite store-and-forward buffer. It knows events only as rows (buffer.rows) and
imports neither ``agent`` nor ``drivers``."""

from buffer.rows import BufferStats, ClaimedEvent, DeadLetter, DestinationStats, EventRow
from buffer.sqlite import BufferError, SqliteBuffer

__all__ = [
    "BufferError",
    "BufferStats",
    "ClaimedEvent",
    "DeadLetter",
    "DestinationStats",
    "EventRow",
    "SqliteBuffer",
]
