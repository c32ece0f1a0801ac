"""The buffer file as the operator CLI opens it: from another process, maybe while the
agent runs and writes.

Careful by design: the file must exist and carry exactly this floorgate's schema; it is
never created, migrated, checked or moved aside here (the agent does that when it
starts). Every write is one short ``BEGIN IMMEDIATE`` transaction of ``buffer.queries`` —
the code the agent runs — so the counters stay right, and ``busy_timeout`` lets it wait
for the agent's commits instead of failing. Long work (replay) goes in chunks, so the
agent's appends are never held up for long.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from buffer import blocks, queries, schema
from buffer.rows import BufferStats, DeadLetter, StoredEvent
from buffer.sqlite import BUSY_TIMEOUT_MS, BufferStoreError, describe_error

T = TypeVar("T")


class OperatorBuffer:
    """Synchronous access for one CLI command. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._blocks = blocks.Expander()
        if not self.path.is_file():
            raise BufferStoreError(
                f"no buffer at {self.path} (has the agent run with this config?)"
            )
        try:
            # mode=rw: never create a file that is not there.
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=rw", uri=True, isolation_level=None, timeout=0
            )
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            found = schema.version(self._conn)
        except sqlite3.Error as exc:
            raise BufferStoreError(
                f"cannot open the buffer {self.path}: {describe_error(exc)}"
            ) from exc
        if found != schema.SCHEMA_VERSION:
            self._conn.close()
            raise BufferStoreError(_version_problem(self.path, found))

    def __enter__(self) -> OperatorBuffer:
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.close()

    def stats(self) -> BufferStats:
        return self._run("stats", lambda: queries.stats(self.path, self._conn))

    def retrying(self, destination: str) -> int:
        return self._run("stats", lambda: queries.retrying(destination, self._conn))

    def destinations(self) -> list[str]:
        return self._run("list destinations", lambda: queries.destinations(self._conn))

    def dead_letters(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return self._run(
            "list dead letters", lambda: queries.dead_letters(destination, limit, self._conn)
        )

    def show(self, ident: str) -> StoredEvent | None:
        return self._run("show", lambda: queries.show(ident, self._blocks, self._conn))

    def requeue(self, destination: str | None, ident: str | None) -> int:
        """Dead letters back to pending: the event ``ident`` (id or seq) or all of them."""
        seqs = None
        if ident is not None:
            # Dead letters are rows (a block's sample is dead-lettered into a row of its
            # own, with its id): that row, else whatever show() finds.
            own = self._run("requeue", lambda: queries.row_seq(ident, self._conn))
            event = None if own is not None else self.show(ident)
            seq = own if own is not None else event.seq if event is not None else None
            if seq is None:
                raise BufferStoreError(f"no event {ident} in the buffer {self.path}")
            seqs = [seq]
        return self._run("requeue", lambda: queries.requeue_tx(destination, seqs, self._conn))

    def purge_dead(self, destination: str | None, dead_before: float | None) -> int:
        return self._run(
            "purge", lambda: queries.purge_dead_tx(destination, dead_before, self._conn)
        )

    def replay(self, destination: str, since: str, until: str | None) -> int:
        span = self._run("replay", lambda: queries.seq_range(self._conn))
        if span is None:
            return 0
        moved = 0
        for start in range(span[0] - 1, span[1], queries.CHUNK):
            chunk = partial(queries.replay_tx, destination, since, until, start)
            moved += self._run(
                "replay", partial(chunk, start + queries.CHUNK, self._blocks, self._conn)
            )
        return moved

    def _run(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise BufferStoreError(
                f"buffer {self.path}: {doing} failed: {describe_error(exc)}"
            ) from exc
        except blocks.UNREADABLE as exc:  # a sample block it cannot read
            raise BufferStoreError(f"buffer {self.path}: {doing} failed: {exc}") from exc


def _version_problem(path: Path, found: int) -> str:
    if found == 0:
        return f"{path} is not a floorgate buffer (no schema)"
    if found < schema.SCHEMA_VERSION:
        return (
            f"the buffer {path} has schema version {found}; this floorgate uses"
            f" {schema.SCHEMA_VERSION}: start the agent once to migrate it"
        )
    return (
        f"the buffer {path} has schema version {found}, newer than this floorgate knows"
        f" ({schema.SCHEMA_VERSION}): use the floorgate that wrote it"
    )
