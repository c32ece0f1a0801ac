"""The buffer's tables and their migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` brings a database
from version ``i`` to ``i + 1``; each step runs in one transaction together with the new
version number, so a crash during a migration leaves the previous version intact.
Append steps; never edit one that has shipped.

Tables (version 1):

``events``
    One row per event, ``seq`` is the buffer-wide order of arrival (AUTOINCREMENT: never
    reused, even after the newest rows were pruned). ``id`` is the event id (UNIQUE:
    appending an id twice is a no-op). ``created`` is the wall clock of the commit.
``deliveries``
    One row per (destination, event): ``status`` pending / delivered / dead, failed
    ``attempts``, ``last_error`` (the dead-letter reason for dead rows), ``updated`` (the
    delivery time for delivered rows). Partial indexes keep the pending and the dead rows
    of each destination in ``seq`` order, so a claim and a dead-letter listing read only
    what they return.
``counters``
    Rows per (destination, status), kept in the same transactions as the rows they count,
    plus the event total under the destination ``''`` / status ``'events'``. ``last`` is
    the time of the latest increase (for ``delivered``: the last delivery). They make
    ``stats()`` cost a few index lookups whatever the backlog, and stay right across
    processes (the operator CLI writes through the same code).
``rule_state``
    Key/value state of the rules (counters, open machine states), upserted with events.

Version 2 adds ``events_samples``, a partial index of the ``sample`` events in ``seq``
order: when the buffer is full the oldest samples are found without reading the rest.
Version 2 also gives ``counters`` rows under the destination ``''`` for what the bounds
took away: ``dropped:<reason>:<type>`` (reason ``full``, ``refused`` or ``expired``) and
``evicted`` (delivered events removed early to make room).

Version 3 changes no table: from it on ``events.payload`` may hold a compressed payload
(``buffer.payloads``), which only a floorgate that knows version 3 reads right.

Version 4 adds sample blocks (``buffer.blocks``): ``events.n`` (NULL for an event, the
sample count of a block, whose seq is the last of the ``n`` it stands for), the
``deliveries`` bitmaps ``done`` (samples settled while the block is pending) and
``moved`` (samples dead-lettered into rows of their own), and ``events_blocks``, a
partial index of the blocks in ``seq`` order (to find the block of a sample's seq). The
counters count samples.
"""

from __future__ import annotations

import sqlite3

EVENTS_TOTAL = ("", "events")  # (destination, status) of the event total in ``counters``

MIGRATIONS: list[tuple[str, ...]] = [
    (  # 0 -> 1
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            key TEXT NOT NULL,
            time TEXT NOT NULL,
            payload BLOB NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL
        )
        """,
        """
        CREATE TABLE deliveries (
            destination TEXT NOT NULL,
            seq INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            updated REAL NOT NULL,
            PRIMARY KEY (destination, seq)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX deliveries_pending ON deliveries (destination, seq) WHERE status = 'pending'",
        "CREATE INDEX deliveries_dead ON deliveries (destination, seq) WHERE status = 'dead'",
        """
        CREATE TABLE counters (
            destination TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL DEFAULT 0,
            last REAL,
            PRIMARY KEY (destination, status)
        ) WITHOUT ROWID
        """,
        "INSERT INTO counters (destination, status, n) VALUES ('', 'events', 0)",
        "CREATE TABLE rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
    (  # 1 -> 2
        "CREATE INDEX events_samples ON events (seq) WHERE type = 'sample'",
    ),
    # 2 -> 3: no table changes. Payloads may now be stored compressed (buffer.payloads);
    # the new version makes an older floorgate refuse the file (SchemaTooNew) instead of
    # sending compressed bytes to its destinations as if they were the event.
    (),
    (  # 3 -> 4: sample blocks (buffer.blocks)
        "ALTER TABLE events ADD COLUMN n INTEGER",
        "ALTER TABLE deliveries ADD COLUMN done BLOB",
        "ALTER TABLE deliveries ADD COLUMN moved BLOB",
        "CREATE INDEX events_blocks ON events (seq) WHERE n IS NOT NULL",
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The file was written by a newer floorgate (its user_version is above ours)."""


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; return the version found. The connection must
    be in autocommit mode (``isolation_level=None``)."""
    found = version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"schema version {found} is newer than this floorgate knows ({SCHEMA_VERSION})"
        )
    for target in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version(conn) >= target:  # another process migrated meanwhile
                conn.execute("ROLLBACK")
                continue
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return found
