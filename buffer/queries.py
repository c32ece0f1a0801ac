"""The SQL of the buffer: one function per transaction or read, each taking the
connection last so the buffer's worker threads and the operator CLI run the same code
(and the counters stay right whoever writes)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import orjson

from buffer import payloads, schema
from buffer.rows import (
    BufferStats,
    ClaimedEvent,
    DeadLetter,
    Delivery,
    DestinationStats,
    EventRow,
    StoredEvent,
)

CLAIM = """
    SELECT d.seq, e.id, e.type, e.key, e.payload, d.attempts
    FROM deliveries AS d INDEXED BY deliveries_pending JOIN events AS e ON e.seq = d.seq
    WHERE d.destination = ? AND d.status = 'pending' AND d.seq > ?{exclude}
    ORDER BY d.seq LIMIT ?
"""
EXCLUDE = " AND e.key NOT IN (SELECT value FROM json_each(?))"
# The append path binds a whole batch as one JSON document and lets SQLite unpack it:
# executemany needs the GIL back for every row, and while the event loop thread is busy
# with rules each of those waits lasts up to the interpreter's switch interval. Measured
# against a busy Python thread, executemany stored ~180 rows/s, one json_each statement
# ~48,000. Elements: [id, type, key, time, offset, length]; element i gets seq ?1 + i + 1
# (?1 is the highest seq ever used, so every slot is free). The payloads are not in the
# document but in ?4, all of them end to end, each cut out by its offset and length:
# bytes as they are (any bytes), without JSON escaping them in Python and unescaping
# them in SQLite (that cost 0.36 µs per event with the GIL held, and 1.2 µs in SQLite).
INSERT_EVENTS_JSON = """
    INSERT OR IGNORE INTO events (seq, id, type, key, time, payload, size, created)
    SELECT ?1 + j.key + 1, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
           json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
           substr(?4, json_extract(j.value, '$[4]') + 1, json_extract(j.value, '$[5]')),
           json_extract(j.value, '$[5]'), ?2
    FROM json_each(?3) AS j
"""
# Pending deliveries. When every event of the batch goes to the same destinations (the
# usual case: routes depend on type and machine only), one statement joins the events
# this append stored (a range of seqs: ignored ids left their slot empty) with the
# destinations (?3, a JSON list). Otherwise the elements of ?3 are [index in the batch,
# destination], and ``{stored}`` is STORED_ONLY when the insert ignored some ids. OR
# IGNORE drops a destination named twice for one event (the slots are new: nothing else
# can collide).
INSERT_DELIVERIES_ALL = """
    INSERT OR IGNORE INTO deliveries (destination, seq, status, attempts, updated)
    SELECT d.value, e.seq, 'pending', 0, ?2
    FROM events AS e, json_each(?3) AS d
    WHERE e.seq > ?1 AND e.seq <= ?4
"""
INSERT_DELIVERIES_EACH = """
    INSERT OR IGNORE INTO deliveries (destination, seq, status, attempts, updated)
    SELECT json_extract(j.value, '$[1]'), ?1 + json_extract(j.value, '$[0]') + 1, 'pending',
           0, ?2
    FROM json_each(?3) AS j{stored}
"""
STORED_ONLY = (
    " WHERE EXISTS (SELECT 1 FROM events WHERE seq = ?1 + json_extract(j.value, '$[0]') + 1)"
)
# The counters of what an append stored: the event total (?4) and, for each destination
# of the batch (?3, a JSON list), its new pending deliveries (a range of its primary key).
COUNT_APPENDED = """
    INSERT INTO counters (destination, status, n, last)
    SELECT '', 'events', ?4, ?2 WHERE ?4 > 0
    UNION ALL
    SELECT dest, 'pending', n, ?2
    FROM (
        SELECT d.value AS dest,
               (SELECT count(*) FROM deliveries
                WHERE destination = d.value AND seq > ?1 AND seq <= ?5) AS n
        FROM json_each(?3) AS d
    )
    WHERE n > 0
    ON CONFLICT (destination, status) DO UPDATE SET n = n + excluded.n,
        last = CASE WHEN excluded.n > 0 THEN excluded.last ELSE last END
"""
UPSERT_STATE_JSON = (
    "INSERT INTO rule_state (key, value) SELECT key, value FROM json_each(?) WHERE true"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
UPSERT_STATE = (
    "INSERT INTO rule_state (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
BUMP = (
    "INSERT INTO counters (destination, status, n, last) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (destination, status) DO UPDATE SET n = n + excluded.n,"
    # ``last`` is the time of the latest increase (for delivered: the last delivery), so a
    # replay or a prune does not move it.
    " last = CASE WHEN excluded.n > 0 THEN excluded.last ELSE last END"
)
SET_STATUS = (
    "UPDATE deliveries SET status = ?, last_error = coalesce(?, last_error), updated = ?"
    " WHERE destination = ? AND seq = ? AND status = ?"
)
SET_STATUS_LIST = (
    "UPDATE deliveries SET status = ?, last_error = coalesce(?, last_error), updated = ?"
    " WHERE destination = ? AND status = ? AND seq IN (SELECT value FROM json_each(?))"
)
EVICTED = "evicted"  # counters status ('' destination): delivered events removed for room
# Counters ('' destination) of what the agent wrote to the disk (/proc/self/io, see
# buffer.diskio), added up over its runs: bytes, seconds of running covered, and events
# stored meanwhile. Kept in the file so that `floorgate buffer stats`, another process,
# can show them.
WRITTEN_BYTES, WRITTEN_SECONDS, WRITTEN_EVENTS = (
    "written:bytes",
    "written:seconds",
    "written:events",
)
CHUNK = 5000  # rows per maintenance transaction (appends run in between)
# Whether an event is done with: every delivery row of it delivered before the cutoff
# (events without any delivery row are done). One clause per destination (``:dN``), so
# each is one primary-key lookup. ``{cutoff}`` is an expression of the row ``e``.
DONE = (
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.destination = :d{n}"
    " AND d.seq = e.seq AND (d.status != 'delivered' OR d.updated >= {cutoff}))"
)
# The events to prune among the seqs (start, end], as one JSON array in one row: reading
# them row by row would need the GIL back for each (see INSERT_EVENTS_JSON), which a busy
# event loop holds for up to its switch interval each time.
PRUNABLE = """
    SELECT json_group_array(e.seq) FROM events AS e
    WHERE e.seq > :start AND e.seq <= :end AND e.created < {cutoff}{done}
"""
# Samples only, in (start, end], at most :limit of them examined (the partial index in seq
# order): the seqs to prune as a JSON array, and the last seq examined (where to go on).
PRUNABLE_SAMPLES = """
    SELECT json_group_array(e.seq) FILTER (WHERE e.created < :cutoff{done}), max(e.seq)
    FROM (SELECT seq, created FROM events INDEXED BY events_samples
          WHERE type = 'sample' AND seq > :start AND seq <= :end ORDER BY seq LIMIT :limit) AS e
"""
# The cutoff of one event in the full pass: samples have their own (sample_retention).
CUTOFF_BY_TYPE = "(CASE WHEN e.type = 'sample' THEN :samples ELSE :cutoff END)"
DEAD_LETTERS = """
    SELECT d.seq, e.id, e.type, e.key, d.destination, d.last_error, d.attempts, d.updated
    FROM deliveries AS d INDEXED BY deliveries_dead JOIN events AS e ON e.seq = d.seq
    WHERE d.status = 'dead'{where} ORDER BY d.seq LIMIT ?
"""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def bump(conn: sqlite3.Connection, changes: Sequence[tuple[str, str, int]], now: float) -> None:
    conn.executemany(BUMP, [(dest, status, n, now) for dest, status, n in changes if n])


def json_list(values: Iterable[object]) -> str:
    return json.dumps(list(values))


def dropped_status(reason: str, event_type: str) -> str:
    """The counters status under which undelivered events dropped for ``reason`` count."""
    return f"dropped:{reason}:{event_type}"


# -- transactions (run in the writer thread) ---------------------------------------------


def append_tx(
    rows: Sequence[EventRow],
    state: dict[str, str],
    dropped: Counter[tuple[str, str]],
    conn: sqlite3.Connection,
) -> int:
    """Events (each id once), rule state and the count of what the append gave up, by
    (reason, type): samples refused for lack of room, events rejected for their data; in
    one transaction. Returns how many events were stored."""
    now = time.time()
    stored = 0
    with transaction(conn):
        if rows:  # an id repeated (in the batch or from before) is stored once
            stored = insert_events(conn, rows, now)
        if state:
            upsert_state(conn, state)
        if dropped:
            bump(conn, [("", dropped_status(r, t), n) for (r, t), n in dropped.items()], now)
    return stored


def insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow], now: float) -> int:
    """Events (an id already stored is ignored) with their pending deliveries and the
    counters, in the caller's transaction. Returns how many were stored."""
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    base: int = found[0] if found else 0
    document, payloads = _events_document(rows)
    inserted = conn.execute(INSERT_EVENTS_JSON, (base, now, document, payloads)).rowcount
    top = base + len(rows)
    routes = {r.destinations for r in rows}
    if len(routes) == 1:
        (route,) = routes
        if route:
            conn.execute(INSERT_DELIVERIES_ALL, (base, now, orjson.dumps(route), top))
    else:
        each = [(i, dest) for i, r in enumerate(rows) for dest in r.destinations]
        stored = STORED_ONLY if inserted < len(rows) else ""
        conn.execute(INSERT_DELIVERIES_EACH.format(stored=stored), (base, now, orjson.dumps(each)))
    destinations = sorted({dest for route in routes for dest in route})
    conn.execute(COUNT_APPENDED, (base, now, orjson.dumps(destinations), inserted, top))
    return int(inserted)


def upsert_state(conn: sqlite3.Connection, state: dict[str, str]) -> None:
    if any("\0" in k or "\0" in v for k, v in state.items()):  # JSON text would cut it
        conn.executemany(UPSERT_STATE, state.items())
    else:
        conn.execute(UPSERT_STATE_JSON, (orjson.dumps(state),))


def _events_document(rows: Sequence[EventRow]) -> tuple[bytes, bytes]:
    """The batch for INSERT_EVENTS_JSON: a JSON array of [id, type, key, time, offset,
    length], and every payload end to end."""
    items = []
    offset = 0
    stored = [payloads.pack(r.payload) for r in rows]
    for r, payload in zip(rows, stored, strict=True):
        size = len(payload)
        items.append((r.id, r.type, r.key, r.time, offset, size))
        offset += size
    return orjson.dumps(items), b"".join(stored)


def move(
    conn: sqlite3.Connection,
    destination: str,
    params: Sequence[tuple[str | None, int]],
    source: str,
    target: str,
    now: float,
) -> int:
    """Move deliveries of ``destination`` from status ``source`` to ``target``;
    ``params`` are (error or None, seq). Returns how many moved."""
    errors = {error for error, _ in params}
    if len(errors) == 1:  # one statement over the list: ~1.6x executemany's rate (acks)
        (error,) = errors
        moved = conn.execute(
            SET_STATUS_LIST,
            (target, error, now, destination, source, json_list(s for _, s in params)),
        ).rowcount
        return int(moved)
    sql_params = [(target, error, now, destination, seq, source) for error, seq in params]
    return int(conn.executemany(SET_STATUS, sql_params).rowcount)


def ack_tx(
    destination: str, seqs: Sequence[int], conn: sqlite3.Connection, *, prune: bool = False
) -> int:
    """Mark delivered. ``prune``: in the same transaction, delete the samples among them
    that are now delivered everywhere (sample_retention 0s). Returns how many went."""
    now = time.time()
    params = [(None, seq) for seq in seqs]
    with transaction(conn):
        from_pending = move(conn, destination, params, "pending", "delivered", now)
        from_dead = 0
        if from_pending < len(params):
            from_dead = move(conn, destination, params, "dead", "delivered", now)
        bump(
            conn,
            [
                (destination, "pending", -from_pending),
                (destination, "dead", -from_dead),
                (destination, "delivered", from_pending + from_dead),
            ],
            now,
        )
        if not prune:
            return 0
        low, high = min(seqs), max(seqs)
        return prune_samples(conn, math.inf, low - 1, high, high - low + 1, now)[0]


def failure_tx(destination: str, seqs: Sequence[int], error: str, conn: sqlite3.Connection) -> None:
    now = time.time()
    with transaction(conn):
        conn.executemany(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, updated = ?"
            " WHERE destination = ? AND seq = ? AND status = 'pending'",
            [(error, now, destination, seq) for seq in seqs],
        )


def dead_tx(destination: str, reasons: dict[int, str], conn: sqlite3.Connection) -> None:
    now = time.time()
    params = [(reason, seq) for seq, reason in reasons.items()]
    with transaction(conn):
        moved = move(conn, destination, params, "pending", "dead", now)
        bump(conn, [(destination, "pending", -moved), (destination, "dead", moved)], now)


def destinations(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT destination FROM counters WHERE destination != ''")
    return [dest for (dest,) in rows]


def requeue_tx(
    destination: str | None, seqs: Sequence[int] | None, conn: sqlite3.Connection
) -> int:
    now = time.time()
    total = 0
    with transaction(conn):
        for dest in [destination] if destination else destinations(conn):
            if seqs is None:
                moved = conn.execute(
                    "UPDATE deliveries INDEXED BY deliveries_dead"
                    " SET status = 'pending', attempts = 0, updated = ?"
                    " WHERE destination = ? AND status = 'dead'",
                    (now, dest),
                ).rowcount
            else:
                moved = conn.executemany(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, updated = ?"
                    " WHERE destination = ? AND seq = ? AND status = 'dead'",
                    [(now, dest, seq) for seq in seqs],
                ).rowcount
            bump(conn, [(dest, "dead", -moved), (dest, "pending", moved)], now)
            total += moved
    return total


def prune_tx(
    cutoff: float, sample_cutoff: float, start: int, end: int, conn: sqlite3.Connection
) -> int:
    """Delete the events with seq in (start, end] that are done with: buffered and
    delivered everywhere before the cutoff of their type (``sample_cutoff`` for samples,
    ``cutoff`` for the rest). Events with a pending or dead delivery stay. Returns how many
    went."""
    now = time.time()
    with transaction(conn):
        dests = destinations(conn)
        done = "".join(DONE.format(n=n, cutoff=CUTOFF_BY_TYPE) for n in range(len(dests)))
        params = _named(dests, start=start, end=end, cutoff=cutoff, samples=sample_cutoff)
        (found,) = conn.execute(
            PRUNABLE.format(cutoff=CUTOFF_BY_TYPE, done=done), params
        ).fetchone()
        return _delete_done(conn, found, dests, now)


def prune_samples_tx(
    cutoff: float, start: int, end: int, limit: int, conn: sqlite3.Connection
) -> tuple[int, int | None]:
    """Delete the samples among the first ``limit`` with seq in (start, end] that were
    buffered and delivered everywhere before ``cutoff`` (the sample_retention pass).
    Returns how many went and the last seq examined (None: no sample in the range)."""
    now = time.time()
    with transaction(conn):
        return prune_samples(conn, cutoff, start, end, limit, now)


def prune_samples(
    conn: sqlite3.Connection, cutoff: float, start: int, end: int, limit: int, now: float
) -> tuple[int, int | None]:
    """prune_samples_tx in the caller's transaction."""
    dests = destinations(conn)
    done = "".join(DONE.format(n=n, cutoff=":cutoff") for n in range(len(dests)))
    params = _named(dests, start=start, end=end, cutoff=cutoff, limit=limit)
    found, last = conn.execute(PRUNABLE_SAMPLES.format(done=done), params).fetchone()
    if last is None:
        return 0, None
    return _delete_done(conn, found, dests, now), int(last)


def _named(dests: Sequence[str], **params: object) -> dict[str, object]:
    return {**params, **{f"d{n}": dest for n, dest in enumerate(dests)}}


def _delete_done(conn: sqlite3.Connection, listed: str, dests: Sequence[str], now: float) -> int:
    """Delete the events of ``listed`` (a JSON array of seqs) and their delivery rows (all
    delivered: the caller chose them so), keeping the counters right."""
    count = len(json.loads(listed))
    if not count:
        return 0
    conn.execute("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))", (listed,))
    changes = []
    for dest in dests:
        deleted = conn.execute(
            "DELETE FROM deliveries WHERE destination = ? AND seq IN"
            " (SELECT value FROM json_each(?))",
            (dest, listed),
        ).rowcount
        changes.append((dest, "delivered", -deleted))
    bump(conn, [*changes, (*schema.EVENTS_TOTAL, -count)], now)
    return count


def record_written_tx(written: int, seconds: int, events: int, conn: sqlite3.Connection) -> None:
    """Add what the agent wrote to the disk since it last said so (see WRITTEN_BYTES)."""
    now = time.time()
    with transaction(conn):
        bump(
            conn,
            [
                ("", WRITTEN_BYTES, written),
                ("", WRITTEN_SECONDS, seconds),
                ("", WRITTEN_EVENTS, events),
            ],
            now,
        )


# -- reads (run in the reader thread) ----------------------------------------------------


def stats(path: Path, conn: sqlite3.Connection) -> BufferStats:
    stats = BufferStats()
    with contextlib.suppress(OSError):
        stats.size_bytes = os.stat(path).st_size
    with contextlib.suppress(OSError):
        stats.wal_bytes = os.stat(f"{path}-wal").st_size
    stats.size_bytes += stats.wal_bytes
    with read_transaction(conn):
        # Pages freed by deletes (pruning, eviction), which SQLite fills again before it
        # makes the file longer.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        stats.free_bytes = int(conn.execute("PRAGMA freelist_count").fetchone()[0]) * page_size
        for dest, status, n, last in conn.execute(
            "SELECT destination, status, n, last FROM counters"
        ):
            if dest == "":
                _global_counter(stats, status, n, last)
                continue
            per = stats.destinations.setdefault(dest, DestinationStats(dest))
            if status == "pending":
                per.pending = n
            elif status == "dead":
                per.dead = n
            elif status == "delivered":
                per.delivered = n
                per.last_delivered_at = last
        for per in stats.destinations.values():
            oldest = conn.execute(
                "SELECT e.created FROM deliveries AS d INDEXED BY deliveries_pending"
                " JOIN events AS e ON e.seq = d.seq"
                " WHERE d.destination = ? AND d.status = 'pending' ORDER BY d.seq LIMIT 1",
                (per.destination,),
            ).fetchone()
            per.oldest_pending_created = oldest[0] if oldest else None
    return stats


def _global_counter(stats: BufferStats, status: str, n: int, last: float | None) -> None:
    if status == schema.EVENTS_TOTAL[1]:
        stats.events = n
    elif status == EVICTED:
        stats.evicted_delivered = n
    elif status in (WRITTEN_BYTES, WRITTEN_SECONDS, WRITTEN_EVENTS):
        if status == WRITTEN_BYTES:
            stats.written_bytes = n
        elif status == WRITTEN_SECONDS:
            stats.written_seconds = n
        else:
            stats.written_events = n
        if last is not None and (stats.written_at is None or last > stats.written_at):
            stats.written_at = last
    elif status.startswith("dropped:") and n:
        _, reason, event_type = status.split(":", 2)
        stats.dropped[reason, event_type] = n
        if last is not None and (stats.last_dropped_at is None or last > stats.last_dropped_at):
            stats.last_dropped_at = last


@contextlib.contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One snapshot for several SELECTs."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def dead_letters(destination: str | None, limit: int, conn: sqlite3.Connection) -> list[DeadLetter]:
    where, params = (
        (" AND d.destination = ?", (destination, limit)) if destination else ("", (limit,))
    )
    rows = conn.execute(DEAD_LETTERS.format(where=where), params).fetchall()
    return [DeadLetter(*row) for row in rows]


def claim(sql: str, params: tuple[object, ...], conn: sqlite3.Connection) -> list[ClaimedEvent]:
    """Pending events by CLAIM (the buffer picks the variant), payloads as appended."""
    return [
        ClaimedEvent(seq, event_id, event_type, key, payloads.unpack(payload), attempts)
        for seq, event_id, event_type, key, payload, attempts in conn.execute(sql, params)
    ]


def show(ident: str, conn: sqlite3.Connection) -> StoredEvent | None:
    """The event with this id (or, failing that, this seq number) and its deliveries."""
    columns = "SELECT seq, id, type, key, time, created, payload FROM events"
    with read_transaction(conn):
        found = conn.execute(f"{columns} WHERE id = ?", (ident,)).fetchone()
        if found is None and ident.isdigit():
            found = conn.execute(f"{columns} WHERE seq = ?", (int(ident),)).fetchone()
        if found is None:
            return None
        deliveries = tuple(
            Delivery(*row)
            for dest in destinations(conn)
            for row in conn.execute(
                "SELECT destination, status, attempts, last_error, updated FROM deliveries"
                " WHERE destination = ? AND seq = ?",
                (dest, found[0]),
            )
        )
    seq, event_id, event_type, key, event_time, created, payload = found
    return StoredEvent(
        seq, event_id, event_type, key, event_time, created, payloads.unpack(payload), deliveries
    )


def retrying(destination: str, conn: sqlite3.Connection, window: int = 10_000) -> int:
    """Pending events of ``destination`` that failed at least once, among the oldest
    ``window``: what is being retried now (failures happen at the head of the queue)."""
    found = conn.execute(
        "SELECT count(*) FROM (SELECT attempts FROM deliveries INDEXED BY deliveries_pending"
        " WHERE destination = ? AND status = 'pending' ORDER BY seq LIMIT ?) WHERE attempts > 0",
        (destination, window),
    ).fetchone()
    return int(found[0])


def seq_range(conn: sqlite3.Connection) -> tuple[int, int] | None:
    low, high = conn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
    return None if low is None else (int(low), int(high))


def replay_tx(
    destination: str, since: str, until: str | None, start: int, end: int, conn: sqlite3.Connection
) -> int:
    """Delivered events of ``destination`` with seq in (start, end] and event time in
    [since, until) back to pending: they are sent again with their ids."""
    now = time.time()
    with transaction(conn):
        moved = conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL,"
            " updated = ? WHERE destination = ? AND status = 'delivered' AND seq > ?"
            " AND seq <= ? AND seq IN (SELECT seq FROM events WHERE seq > ? AND seq <= ?"
            " AND julianday(time) >= julianday(?) AND julianday(time) < julianday(?))",
            (now, destination, start, end, start, end, since, until or "9999-12-31"),
        ).rowcount
        bump(conn, [(destination, "delivered", -moved), (destination, "pending", moved)], now)
    return int(moved)


def purge_dead_tx(
    destination: str | None, dead_before: float | None, conn: sqlite3.Connection
) -> int:
    """Give up on dead letters (all, or those dead before ``dead_before``): their delivery
    rows go; the events stay until retention prunes them."""
    now = time.time()
    total = 0
    with transaction(conn):
        for dest in [destination] if destination else destinations(conn):
            gone = conn.execute(
                "DELETE FROM deliveries INDEXED BY deliveries_dead"
                " WHERE destination = ? AND status = 'dead' AND updated < ?",
                (dest, now + 1 if dead_before is None else dead_before),
            ).rowcount
            bump(conn, [(dest, "dead", -gone)], now)
            total += gone
    return total
