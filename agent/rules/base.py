"""The rule protocol: pure and synchronous, a batch of readings in, event drafts out.

Rules do no I/O. Their state lives in the instance; the engine persists ``snapshot()``
in the same SQLite transaction as the events the rule emitted, so after a crash the
rule resumes exactly where its last committed event left it (no double count, no gap).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from agent.config.common import EventType
from agent.pipeline.events import EventData
from drivers.base import Sample


class Draft(NamedTuple):
    """An event before the engine gives it an id, a sequence and its envelope. (A
    NamedTuple: rules make one per event on the ingest hot path.)"""

    type: EventType
    time: datetime  # UTC, aware: when it happened at the machine
    data: EventData


class Rule(Protocol):
    key: str
    """Unique and stable across restarts: the key its state is persisted under."""
    machine: str

    @property
    def signals(self) -> Collection[str]:
        """Signals this rule reads; the engine calls it only when one of them is in a batch."""
        ...

    dirty: bool
    """True when state that must survive a restart changed since the last snapshot()."""

    ticks: bool
    """False when on_tick can never make anything (a sample rule without interval): the
    engine then leaves it out of its ticks (30,000 calls a second on a big plant)."""

    def on_samples(self, samples: Mapping[str, Sample], now: datetime) -> list[Draft]:
        """Readings of one poll (or one burst of notifications), by signal name."""
        ...

    def on_tick(self, now: datetime) -> list[Draft]:
        """Called about once a second: time-based reporting (count windows, intervals)."""
        ...

    def flush(self, now: datetime) -> list[Draft]:
        """On clean shutdown: report what is pending (a partial count window)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state; clears ``dirty``."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from a snapshot taken by a previous run."""
        ...
