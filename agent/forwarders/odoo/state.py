"""What the Odoo forwarder remembers between batches and restarts, in a small SQLite file
of its own (``<state_dir>/odoo-<destination>.db``).

Every entry is keyed by an event id, so applying the same event twice changes nothing:

- ``counts``: which work order each good-count event went to, and its quantity. A work
  order's ``qty_producing`` is always written as the SUM of its rows — an absolute
  total, so a batch sent twice (or after a crash between Odoo's answer and the ack)
  writes the same number again instead of adding twice.
- ``closed``: external ids of productivity records already closed; an "open" row is
  never sent after its close (``load()`` is last-write-wins and would re-open it).
- ``alarms`` / ``alarm_links``: the request row a raised alarm created, so the cleared
  event can add its note to the same record (by the same external id).
- ``orders``: the current order of machines that have an order signal.
- ``done``: scraps validated and orders finished, so neither is done twice.
- ``paused``: the work-order timers (work order, user) a downtime ended on a machine's
  work center, to be opened again when it runs (``work_order_timers``). Written before
  the timers are ended in Odoo, so a crash in between still resumes them.

Writes are few and small per batch and grouped into one transaction per flush
(``begin`` / ``commit``); the stdlib driver is used directly (FULL sync).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    event_id TEXT PRIMARY KEY, workorder_id INTEGER NOT NULL, qty INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS counts_by_workorder ON counts (workorder_id);
CREATE TABLE IF NOT EXISTS closed (xid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS alarms (event_id TEXT PRIMARY KEY, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_open (
    machine TEXT NOT NULL, alarm TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (machine, alarm));
CREATE TABLE IF NOT EXISTS alarm_links (clear_id TEXT PRIMARY KEY, raise_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (machine TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paused (
    machine TEXT NOT NULL, workorder_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
    PRIMARY KEY (machine, workorder_id, user_id));
CREATE TABLE IF NOT EXISTS done (kind TEXT NOT NULL, ref TEXT NOT NULL, PRIMARY KEY (kind, ref));
"""


class OdooState:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")
        self._conn.close()

    def begin(self) -> None:
        """Group the writes of one flush into one transaction (one fsync, not dozens)."""
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")

    def commit(self) -> None:
        """Make what was recorded durable (before Odoo is told anything that needs it)."""
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        if self._conn.in_transaction:  # inside a flush's transaction
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- counts ------------------------------------------------------------------------

    def assign_counts(self, rows: list[tuple[str, int, int]]) -> None:
        """(event_id, workorder_id, qty): the first assignment of an event wins."""
        with self._tx():
            self._conn.executemany("INSERT OR IGNORE INTO counts VALUES (?, ?, ?)", rows)

    def unassign(self, event_ids: list[str]) -> None:
        """Forget assignments whose write Odoo refused (their events are dead letters)."""
        with self._tx():
            self._conn.executemany(
                "DELETE FROM counts WHERE event_id = ?", [(e,) for e in event_ids]
            )

    def assigned_workorder(self, event_id: str) -> int | None:
        row = self._conn.execute(
            "SELECT workorder_id FROM counts WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def total(self, workorder_id: int) -> int:
        row = self._conn.execute(
            "SELECT coalesce(sum(qty), 0) FROM counts WHERE workorder_id = ?", (workorder_id,)
        ).fetchone()
        return int(row[0])

    # -- productivity ------------------------------------------------------------------

    def closed(self, xids: list[str]) -> set[str]:
        if not xids:
            return set()
        marks = ",".join("?" * len(xids))
        rows = self._conn.execute(f"SELECT xid FROM closed WHERE xid IN ({marks})", xids)
        return {row[0] for row in rows}

    def mark_closed(self, xids: list[str]) -> None:
        with self._tx():
            self._conn.executemany("INSERT OR IGNORE INTO closed VALUES (?)", [(x,) for x in xids])

    # -- alarms ------------------------------------------------------------------------

    def remember_alarm(self, event_id: str, machine: str, alarm: str, row: dict[str, Any]) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT OR IGNORE INTO alarms VALUES (?, ?)", (event_id, orjson.dumps(row).decode())
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO alarm_open VALUES (?, ?, ?)", (machine, alarm, event_id)
            )

    def link_clear(
        self, clear_id: str, machine: str, alarm: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The raise this clear belongs to (remembered, so a repeat finds the same one)."""
        with self._tx():
            row = self._conn.execute(
                "SELECT raise_id FROM alarm_links WHERE clear_id = ?", (clear_id,)
            ).fetchone()
            if row is None:
                row = self._conn.execute(
                    "SELECT event_id FROM alarm_open WHERE machine = ? AND alarm = ?",
                    (machine, alarm),
                ).fetchone()
                if row is None:
                    return None
                self._conn.execute("INSERT INTO alarm_links VALUES (?, ?)", (clear_id, row[0]))
                self._conn.execute(
                    "DELETE FROM alarm_open WHERE machine = ? AND alarm = ?", (machine, alarm)
                )
            raised = self._conn.execute(
                "SELECT row FROM alarms WHERE event_id = ?", (row[0],)
            ).fetchone()
        if raised is None:
            return None
        return str(row[0]), dict(orjson.loads(raised[0]))

    # -- work-order timers ------------------------------------------------------------

    def add_paused(self, machine: str, timers: list[tuple[int, int]]) -> None:
        """(workorder_id, user_id) pairs whose timers a downtime ends."""
        with self._tx():
            self._conn.executemany(
                "INSERT OR IGNORE INTO paused VALUES (?, ?, ?)",
                [(machine, workorder, user) for workorder, user in timers],
            )

    def paused(self, machine: str) -> list[tuple[int, int]]:
        rows = self._conn.execute(
            "SELECT workorder_id, user_id FROM paused WHERE machine = ? ORDER BY 1, 2", (machine,)
        )
        return [(int(w), int(u)) for w, u in rows]

    def clear_paused(self, machine: str) -> None:
        with self._tx():
            self._conn.execute("DELETE FROM paused WHERE machine = ?", (machine,))

    # -- orders and one-off actions ----------------------------------------------------

    def order(self, machine: str) -> str | None:
        row = self._conn.execute("SELECT name FROM orders WHERE machine = ?", (machine,)).fetchone()
        return None if row is None else str(row[0])

    def set_order(self, machine: str, name: str) -> None:
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO orders VALUES (?, ?)", (machine, name))

    def is_done(self, kind: str, ref: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM done WHERE kind = ? AND ref = ?", (kind, ref)
        ).fetchone()
        return row is not None

    def mark_done(self, kind: str, refs: list[str]) -> None:
        with self._tx():
            self._conn.executemany(
                "INSERT OR IGNORE INTO done VALUES (?, ?)", [(kind, ref) for ref in refs]
            )
