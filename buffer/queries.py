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
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import orjson

from buffer import blocks, payloads, schema
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
    SELECT d.seq, e.id, e.type, e.key, e.payload, d.attempts, e.n, d.done
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


class Acks(NamedTuple):
    """Acks committed in an append's transaction (see SqliteBuffer.ack_with_appends)."""

    items: Sequence[tuple[str, Sequence[int]]]  # (destination, seqs)
    prune: bool  # sample_retention 0: delete the samples they complete (ack_tx)


def append_tx(
    rows: Sequence[EventRow],
    state: dict[str, str],
    dropped: Counter[tuple[str, str]],
    conn: sqlite3.Connection,
    acks: Acks | None = None,
) -> tuple[int, list[tuple[int, int]]]:
    """Events (each id once), rule state and the count of what the append gave up, by
    (reason, type): samples refused for lack of room, events rejected for their data; and
    ``acks``; in one transaction. Returns how many events were stored and the seq range
    (low, high) each ack touched."""
    now = time.time()
    stored = 0
    ranges: list[tuple[int, int]] = []
    acks = acks or Acks((), prune=False)
    with transaction(conn):
        for destination, seqs in acks.items:
            _, high = ack_in(conn, destination, seqs, acks.prune, now)
            ranges.append((min(seqs), high))
        if rows:  # an id repeated (in the batch or from before) is stored once
            stored = insert_events(conn, rows, now)
        if state:
            upsert_state(conn, state)
        if dropped:
            bump(conn, [("", dropped_status(r, t), n) for (r, t), n in dropped.items()], now)
    return stored, ranges


def insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow], now: float) -> int:
    """Events and sample blocks (an id already stored is ignored) with their pending
    deliveries and the counters, in the caller's transaction, taking seqs in the order
    given (the engine's hand-over order, which its sequences follow). Returns how many
    events were stored (a block counts its samples)."""
    stored = 0
    for is_block, run in groupby(rows, key=lambda row: bool(row.n)):
        if is_block:
            stored += sum(_insert_block(conn, row, now) for row in run)
        else:  # the events between two blocks, in one statement
            stored += _insert_single(conn, list(run), now)
    return stored


def _insert_block(conn: sqlite3.Connection, row: EventRow, now: float) -> int:
    """The block takes the seq ``n`` above the highest used (buffer.blocks)."""
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    top = (found[0] if found else 0) + row.n
    inserted = conn.execute(
        "INSERT OR IGNORE INTO events (seq, id, type, key, time, payload, size, created, n)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (top, *row[:5], len(row.payload), now, row.n),
    ).rowcount
    if not inserted:
        return 0
    dests = sorted(set(row.destinations))
    conn.executemany(
        "INSERT INTO deliveries (destination, seq, status, attempts, updated)"
        " VALUES (?, ?, 'pending', 0, ?)",
        [(dest, top, now) for dest in dests],
    )
    bump(conn, [(*schema.EVENTS_TOTAL, row.n), *((d, "pending", row.n) for d in dests)], now)
    return row.n


def _insert_single(conn: sqlite3.Connection, rows: Sequence[EventRow], now: float) -> int:
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
) -> tuple[int, int]:
    """Mark delivered. ``prune``: in the same transaction, delete the samples among them
    that are now delivered everywhere (sample_retention 0s). Returns how many went, and
    the highest seq of a row the ack touched (a block's row is above its samples')."""
    with transaction(conn):
        return ack_in(conn, destination, seqs, prune, time.time())


def ack_in(
    conn: sqlite3.Connection, destination: str, seqs: Sequence[int], prune: bool, now: float
) -> tuple[int, int]:
    """ack_tx in the caller's transaction."""
    own, inside = blocks.split(conn, seqs)
    params = [(None, seq) for seq in own]
    from_pending = move(conn, destination, params, "pending", "delivered", now) if own else 0
    from_dead = 0
    if from_pending < len(params):
        from_dead = move(conn, destination, params, "dead", "delivered", now)
    in_blocks = _ack_blocks(conn, destination, inside, now)
    bump(
        conn,
        [
            (destination, "pending", -from_pending - in_blocks),
            (destination, "dead", -from_dead),
            (destination, "delivered", from_pending + from_dead + in_blocks),
        ],
        now,
    )
    low, high = min(seqs), max(max(seqs), max(inside, default=0))
    if not prune:
        return 0, high
    return prune_samples(conn, math.inf, low - 1, high, high - low + 1, now)[0], high


def _ack_blocks(
    conn: sqlite3.Connection, destination: str, inside: dict[int, tuple[int, list[int]]], now: float
) -> int:
    """Samples of pending blocks marked settled; returns how many were not already."""
    acked = 0
    for top, (n, indexes) in inside.items():
        row = conn.execute(
            "SELECT status, done FROM deliveries WHERE destination = ? AND seq = ?",
            (destination, top),
        ).fetchone()
        if row is None or row[0] != "pending":
            continue
        done = blocks.bits(row[1])
        new = _mask(indexes) & ~done
        if new:
            acked += new.bit_count()
            _set_done(conn, destination, top, n, done | new, now)
    return acked


def _mask(indexes: Iterable[int]) -> int:
    mask = 0
    for i in indexes:
        mask |= 1 << i
    return mask


def _set_done(
    conn: sqlite3.Connection, destination: str, top: int, n: int, done: int, now: float
) -> None:
    """A pending block's settled samples; all of them: the block is delivered."""
    if done == blocks.full(n):
        conn.execute(
            "UPDATE deliveries SET status = 'delivered', done = NULL, updated = ?"
            " WHERE destination = ? AND seq = ?",
            (now, destination, top),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET done = ?, updated = ? WHERE destination = ? AND seq = ?",
            (blocks.blob(done), now, destination, top),
        )


def failure_tx(destination: str, seqs: Sequence[int], error: str, conn: sqlite3.Connection) -> None:
    """A failed attempt (a block's row counts one per attempt, whatever of it was sent)."""
    now = time.time()
    with transaction(conn):
        own, inside = blocks.split(conn, seqs)
        seqs = [*own, *inside]
        conn.executemany(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, updated = ?"
            " WHERE destination = ? AND seq = ? AND status = 'pending'",
            [(error, now, destination, seq) for seq in seqs],
        )


def dead_tx(
    destination: str,
    reasons: dict[int, str],
    expander: blocks.Expander,
    conn: sqlite3.Connection,
) -> None:
    now = time.time()
    with transaction(conn):
        own, inside = blocks.split(conn, reasons)
        params = [(reasons[seq], seq) for seq in own]
        moved = move(conn, destination, params, "pending", "dead", now) if own else 0
        added = 0
        for top, (n, indexes) in inside.items():
            out, new_rows = _move_out(conn, destination, top, n, indexes, reasons, expander, now)
            moved += out
            added += new_rows
        bump(
            conn,
            [
                (destination, "pending", -moved),
                (destination, "dead", moved),
                (*schema.EVENTS_TOTAL, added),
            ],
            now,
        )


def _move_out(
    conn: sqlite3.Connection,
    destination: str,
    top: int,
    n: int,
    indexes: Sequence[int],
    reasons: dict[int, str],
    expander: blocks.Expander,
    now: float,
) -> tuple[int, int]:
    """Dead-letter samples of a pending block: each is copied into a row of its own (same
    id; one row whichever destinations refuse it) with a dead delivery row for this
    destination, and marked settled and moved in the block. Returns (samples moved, rows
    added)."""
    row = conn.execute(
        "SELECT d.status, d.done, d.moved, d.attempts, e.id, e.payload, e.created"
        " FROM deliveries AS d JOIN events AS e ON e.seq = d.seq"
        " WHERE d.destination = ? AND d.seq = ?",
        (destination, top),
    ).fetchone()
    if row is None or row[0] != "pending":
        return 0, 0
    _, done_blob, moved_blob, attempts, block, stored, created = row
    done, gone = blocks.bits(done_blob), blocks.bits(moved_blob)
    fresh = sorted(i for i in set(indexes) if not done >> i & 1)
    added = 0
    for sample in expander.samples(conn, top, block, stored, fresh):
        packed = payloads.pack(sample.payload)
        added += conn.execute(
            "INSERT OR IGNORE INTO events (id, type, key, time, payload, size, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sample.id, sample.type, sample.key, sample.time, packed, len(packed), created),
        ).rowcount
        (seq,) = conn.execute("SELECT seq FROM events WHERE id = ?", (sample.id,)).fetchone()
        conn.execute(
            "INSERT OR IGNORE INTO deliveries"
            " (destination, seq, status, attempts, last_error, updated)"
            " VALUES (?, ?, 'dead', ?, ?, ?)",
            (destination, seq, attempts, reasons[sample.seq], now),
        )
    bit = _mask(fresh)
    if bit:
        conn.execute(
            "UPDATE deliveries SET moved = ? WHERE destination = ? AND seq = ?",
            (blocks.blob(gone | bit), destination, top),
        )
        _set_done(conn, destination, top, n, done | bit, now)
    return len(fresh), added


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
    delivered: the caller chose them so), keeping the counters right (a block counts its
    samples, less those moved out into rows of their own)."""
    if not json.loads(listed):
        return 0
    (count,) = conn.execute(
        "SELECT sum(coalesce(n, 1)) FROM events WHERE seq IN (SELECT value FROM json_each(?))",
        (listed,),
    ).fetchone()
    changes = []
    for dest in dests:
        delivered = sum(
            1 if n is None else blocks.counts(n, status, done, moved).get("delivered", 0)
            for n, status, done, moved in conn.execute(
                "SELECT e.n, d.status, d.done, d.moved FROM deliveries AS d"
                " JOIN events AS e ON e.seq = d.seq"
                " WHERE d.destination = ? AND d.seq IN (SELECT value FROM json_each(?))",
                (dest, listed),
            )
        )
        conn.execute(
            "DELETE FROM deliveries WHERE destination = ? AND seq IN"
            " (SELECT value FROM json_each(?))",
            (dest, listed),
        )
        changes.append((dest, "delivered", -delivered))
    conn.execute("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))", (listed,))
    bump(conn, [*changes, (*schema.EVENTS_TOTAL, -count)], now)
    return int(count)


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


def claim(
    sql: str,
    params: tuple[object, ...],
    limit: int,
    after_seq: int,
    exclude: Collection[str],
    expander: blocks.Expander,
    conn: sqlite3.Connection,
) -> list[ClaimedEvent]:
    """Pending events by CLAIM (the buffer picks the variant), payloads as appended; the
    samples of a block one by one (those after ``after_seq`` not yet settled, not of an
    ``exclude``d key), at most ``limit`` in all."""
    claimed: list[ClaimedEvent] = []
    for seq, event_id, event_type, key, payload, attempts, n, done in conn.execute(sql, params):
        if n is None:
            claimed.append(
                ClaimedEvent(seq, event_id, event_type, key, payloads.unpack(payload), attempts)
            )
        else:
            settled = blocks.bits(done)
            first = seq - n + 1
            wanted = (i for i in range(max(0, after_seq + 1 - first), n) if not settled >> i & 1)
            for sample in expander.samples(conn, seq, event_id, payload, wanted):
                if sample.key in exclude:
                    continue
                claimed.append(
                    ClaimedEvent(
                        sample.seq, sample.id, sample.type, sample.key, sample.payload, attempts
                    )
                )
                if len(claimed) >= limit:
                    break
        if len(claimed) >= limit:
            break
    return claimed


def show(ident: str, expander: blocks.Expander, conn: sqlite3.Connection) -> StoredEvent | None:
    """The event with this id (or, failing that, this seq number) and its deliveries; a
    sample in a block too (its deliveries from the block's rows, and from its own row
    for a destination that dead-lettered it)."""
    columns = "SELECT seq, id, type, key, time, created, payload, n FROM events"
    with read_transaction(conn):
        found = conn.execute(f"{columns} WHERE id = ?", (ident,)).fetchone()
        if found is not None and found[7] is not None:
            found = None  # a block's own id names no event
        located = _sample_by_id(ident, conn)
        if found is None and located is None and ident.isdigit():
            found = conn.execute(f"{columns} WHERE seq = ?", (int(ident),)).fetchone()
            if found is not None and found[7] is not None:
                found = None
            if found is None:
                at = blocks.locate(conn, int(ident))
                located = at if at is not None else None
        if found is None and located is None:
            return None
        own = {d.destination: d for d in _deliveries(conn, found[0])} if found else {}
        if located is None:
            assert found is not None
            seq, event_id, event_type, key, event_time, created, payload, _ = found
            return StoredEvent(
                seq,
                event_id,
                event_type,
                key,
                event_time,
                created,
                payloads.unpack(payload),
                tuple(own.values()),
            )
        return _block_sample(conn, expander, *located, own)


def row_seq(ident: str, conn: sqlite3.Connection) -> int | None:
    """The seq of the row of its own with this event id (not a block's), or None."""
    found = conn.execute("SELECT seq FROM events WHERE id = ? AND n IS NULL", (ident,)).fetchone()
    return None if found is None else int(found[0])


def _sample_by_id(ident: str, conn: sqlite3.Connection) -> tuple[int, int] | None:
    """(top seq, index) of the block sample with this id, if its block is still kept."""
    parsed = blocks.parse_sample_id(ident)
    if parsed is None:
        return None
    block, index = parsed
    row = conn.execute("SELECT seq, n FROM events WHERE id = ?", (block,)).fetchone()
    if row is None or row[1] is None or index >= row[1]:
        return None
    return int(row[0]), index


def _deliveries(conn: sqlite3.Connection, seq: int) -> list[Delivery]:
    return [
        Delivery(*row)
        for dest in destinations(conn)
        for row in conn.execute(
            "SELECT destination, status, attempts, last_error, updated FROM deliveries"
            " WHERE destination = ? AND seq = ?",
            (dest, seq),
        )
    ]


def _block_sample(
    conn: sqlite3.Connection,
    expander: blocks.Expander,
    top: int,
    index: int,
    own: dict[str, Delivery],
) -> StoredEvent:
    block, stored, created = conn.execute(
        "SELECT id, payload, created FROM events WHERE seq = ?", (top,)
    ).fetchone()
    (sample,) = expander.samples(conn, top, block, stored, [index])
    if not own:  # moved out for some destination? Its own row has the same id.
        found = conn.execute("SELECT seq FROM events WHERE id = ?", (sample.id,)).fetchone()
        own = {d.destination: d for d in _deliveries(conn, found[0])} if found else {}
    deliveries = []
    for dest, status, attempts, error, updated, done, moved in conn.execute(
        "SELECT destination, status, attempts, last_error, updated, done, moved"
        " FROM deliveries WHERE seq = ? ORDER BY destination",
        (top,),
    ):
        if blocks.bits(moved) >> index & 1:  # dead-lettered: its own row says (gone: purged)
            if dest in own:
                deliveries.append(own[dest])
            continue
        settled = status == "delivered" or blocks.bits(done) >> index & 1
        deliveries.append(
            Delivery(dest, "delivered" if settled else "pending", attempts, error, updated)
        )
    return StoredEvent(
        sample.seq,
        sample.id,
        sample.type,
        sample.key,
        sample.time,
        created,
        sample.payload,
        tuple(deliveries),
    )


def retrying(destination: str, conn: sqlite3.Connection, window: int = 10_000) -> int:
    """Pending events of ``destination`` that failed at least once, among the oldest
    ``window`` rows: what is being retried now (failures happen at the head of the
    queue). A block counts its samples not yet settled."""
    rows = conn.execute(
        "SELECT d.attempts, e.n, d.done FROM (SELECT seq, attempts, done"
        " FROM deliveries INDEXED BY deliveries_pending"
        " WHERE destination = ? AND status = 'pending' ORDER BY seq LIMIT ?) AS d"
        " JOIN events AS e ON e.seq = d.seq WHERE d.attempts > 0",
        (destination, window),
    )
    return sum(1 if n is None else n - blocks.bits(done).bit_count() for _, n, done in rows)


def seq_range(conn: sqlite3.Connection) -> tuple[int, int] | None:
    low, high = conn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
    return None if low is None else (int(low), int(high))


def replay_tx(
    destination: str,
    since: str,
    until: str | None,
    start: int,
    end: int,
    expander: blocks.Expander,
    conn: sqlite3.Connection,
) -> int:
    """Delivered events of ``destination`` with seq in (start, end] and event time in
    [since, until) back to pending: they are sent again with their ids. Blocks whose row
    is in the range: their delivered samples in the time range, the rest untouched."""
    now = time.time()
    until = until or "9999-12-31"
    with transaction(conn):
        moved = conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL,"
            " updated = ? WHERE destination = ? AND status = 'delivered' AND seq > ?"
            " AND seq <= ? AND seq IN (SELECT seq FROM events WHERE seq > ? AND seq <= ?"
            " AND n IS NULL"
            " AND julianday(time) >= julianday(?) AND julianday(time) < julianday(?))",
            (now, destination, start, end, start, end, since, until),
        ).rowcount
        moved += _replay_blocks(conn, destination, since, until, start, end, expander, now)
        bump(conn, [(destination, "delivered", -moved), (destination, "pending", moved)], now)
    return int(moved)


def _replay_blocks(
    conn: sqlite3.Connection,
    destination: str,
    since: str,
    until: str,
    start: int,
    end: int,
    expander: blocks.Expander,
    now: float,
) -> int:
    low, high = conn.execute("SELECT julianday(?), julianday(?)", (since, until)).fetchone()
    if low is None or high is None:
        return 0
    candidates = conn.execute(
        "SELECT e.seq, e.n, e.id, e.payload, d.status, d.done, d.moved"
        " FROM events AS e INDEXED BY events_blocks JOIN deliveries AS d ON d.seq = e.seq"
        " WHERE e.n IS NOT NULL AND e.seq > ? AND e.seq <= ? AND d.destination = ?"
        " AND julianday(e.time) < ?",
        (start, end, destination, high),
    ).fetchall()
    moved = 0
    for top, n, block, stored, status, done, gone in candidates:
        settled = blocks.full(n) if status == "delivered" else blocks.bits(done)
        delivered = settled & ~blocks.bits(gone)
        if not delivered:
            continue
        indexes = [i for i in range(n) if delivered >> i & 1]
        back = _mask(
            s.seq - (top - n + 1)
            for s in expander.samples(conn, top, block, stored, indexes)
            if low <= blocks.julian_day(s.time_us) < high
        )
        if back:
            conn.execute(
                "UPDATE deliveries SET status = 'pending', done = ?, attempts = 0,"
                " last_error = NULL, updated = ? WHERE destination = ? AND seq = ?",
                (blocks.blob(settled & ~back), now, destination, top),
            )
            moved += back.bit_count()
    return moved


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
