"""The size bound (``max_size``) and the age bound (``max_age``): what the buffer gives up
when it has no room, and the once-per-episode log of it.

The bound is enforced by SQLite itself: ``PRAGMA max_page_count`` caps the database file,
so a commit that would pass ``max_size`` fails with SQLITE_FULL and leaves nothing behind.
The writer then makes room and tries again, in this order:

1. delivered events still kept for replay, oldest first (nothing undelivered is lost;
   counted as ``evicted``);
2. the oldest ``sample`` events, delivered or not (undelivered ones are counted as
   dropped, reason ``full``);
3. when no sample is left, the new samples of the append are not stored (counted as
   dropped, reason ``refused``) and the machine states, counts and alarms are; if even they
   do not fit, the append fails like a full disk (the engine holds them in memory).

Machine states, counts, scrap and alarms are never dropped for room.

A SQLITE_FULL while the file is well below ``max_size`` is a really full disk: nothing is
dropped, the append fails (``BufferStoreError``: the disk is full) and the engine waits.

Everything here runs in the buffer's writer thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from buffer import blocks, queries, schema
from buffer.rows import EventRow

log = logging.getLogger("floorgate.buffer")

SQLITE_FULL = 13
SAMPLE = "sample"
EVICT_CHUNK = 500  # events deleted per eviction transaction
HISTORY_WINDOW = 4 * EVICT_CHUNK  # oldest events examined for delivered history per round
ROOM_FRACTION = 0.02  # make at least this share of max_size free at a time (no thrashing)
EPISODE_ENDS_BELOW = 0.9  # the episode ends when the live data is below 90 % of max_size
ROW_OVERHEAD = 120  # bytes per event beyond its payload (row, index entries)
# (The payload as appended: stored compressed (buffer.payloads), it takes less, so room
# made by this estimate errs on the side of enough.)
DELIVERY_BYTES = 40  # bytes per delivery row


class Full(Exception):
    """The bound is reached and nothing may be dropped: the append fails, nothing of it is
    stored, and its caller holds the events (like on a full disk)."""


def is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == SQLITE_FULL


def page_counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(page size, pages in the file, free pages)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(page_size), int(pages), int(free)


def needed_bytes(rows: Sequence[EventRow]) -> int:
    return sum(len(r.payload) + ROW_OVERHEAD + DELIVERY_BYTES * len(r.destinations) for r in rows)


class Capacity:
    """The bound of one buffer file (None: no bound) and the current drop episode."""

    def __init__(self, path: Path, max_size: int | None) -> None:
        self.path = path
        self.max_size = max_size
        self.episode: Counter[str] | None = None  # dropped per type since the episode began
        self._history_logged = False

    @property
    def full(self) -> bool:
        """True while an episode lasts (health shows it)."""
        return self.episode is not None

    def configure(self, conn: sqlite3.Connection) -> None:
        if self.max_size is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(16, self.max_size // page_size)}")

    def store(
        self,
        rows: Sequence[EventRow],
        state: dict[str, str],
        conn: sqlite3.Connection,
        *,
        rejected: Counter[str] | None = None,
        acks: queries.Acks | None = None,
    ) -> tuple[int, list[tuple[int, int]]]:
        """Commit an append, making room by the policy when the file reached max_size.
        ``rejected``: events left out of it for their data, by type (counted with it);
        ``acks``: committed with it. Returns how many events were stored and the seq
        range each ack touched."""
        dropped: Counter[tuple[str, str]] = Counter(
            {("rejected", t): n for t, n in (rejected or {}).items()}
        )
        while True:
            try:
                stored = queries.append_tx(rows, state, dropped, conn, acks)
            except sqlite3.OperationalError as exc:
                if not is_full(exc) or not self._at_limit(conn, rows):
                    raise  # a really full disk (or another error): the caller holds the rows
                if self._make_room(conn, needed_bytes(rows)):
                    continue
                kept = [row for row in rows if row.type != SAMPLE]
                if len(kept) == len(rows):  # only protected events left: keep them all
                    raise Full(
                        f"the buffer is at its max_size ({self.max_size} bytes) and holds only"
                        " undelivered machine states, counts and alarms; they are kept and the"
                        " new events wait in memory until a destination takes some"
                    ) from exc
                refused: Counter[str] = Counter()
                for row in rows:
                    if row.type == SAMPLE:
                        refused[row.type] += row.samples
                dropped.update({("refused", t): n for t, n in refused.items()})
                self._dropped(refused, 0)
                rows = kept
                continue
            break
        if self.episode is not None:
            self._maybe_end(conn)
        return stored

    def expire(self, created_before: float, conn: sqlite3.Connection) -> Counter[str]:
        """The ``max_age`` bound: drop events (of any type) buffered before
        ``created_before`` that a destination still waits for. Delivered history is left
        to retention and dead letters to the operator. One chunk; returns what went, by
        type (empty: nothing left to expire)."""
        newer = conn.execute(
            "SELECT seq FROM events WHERE created >= ? ORDER BY seq LIMIT 1", (created_before,)
        ).fetchone()
        bound = newer[0] if newer else (1 << 62)
        seqs: set[int] = set()
        for dest in queries.destinations(conn):
            seqs.update(
                seq
                for (seq,) in conn.execute(
                    "SELECT seq FROM deliveries INDEXED BY deliveries_pending WHERE"
                    " destination = ? AND status = 'pending' AND seq < ? ORDER BY seq LIMIT ?",
                    (dest, bound, EVICT_CHUNK),
                )
            )
        if not seqs:
            return Counter()
        dropped, _ = evict_tx(sorted(seqs), "expired", conn)
        return dropped

    # -- internals -----------------------------------------------------------------------

    def _at_limit(self, conn: sqlite3.Connection, rows: Sequence[EventRow]) -> bool:
        """Whether a SQLITE_FULL is our bound (the file is at max_size) or the disk."""
        if self.max_size is None:
            return False
        page_size, pages, _ = page_counts(conn)
        return (pages * page_size + 2 * needed_bytes(rows) + 16 * page_size) >= self.max_size

    def _make_room(self, conn: sqlite3.Connection, need: int) -> bool:
        """Evict by the policy until enough pages are free. False: nothing left to evict."""
        assert self.max_size is not None
        target = max(2 * need, int(self.max_size * ROOM_FRACTION))
        freed_any = lost_any = False
        while True:
            page_size, _, free = page_counts(conn)
            missing = target - free * page_size
            if missing <= 0:
                break
            candidates = _delivered_history(conn) or _oldest_samples(conn)
            if not candidates:
                break
            dropped, history = evict_tx(_enough(candidates, missing), "full", conn)
            if history and not self._history_logged:
                self._history_logged = True
                log.info(
                    "buffer reached max_size; delivered events are removed before their"
                    " retention to make room path=%s max_size=%d",
                    self.path,
                    self.max_size,
                )
            if dropped:
                self._dropped(dropped, history)
            freed_any = True
            lost_any = lost_any or bool(dropped)
        if freed_any and not lost_any and self.episode is not None:
            self._end()  # room came from delivered history alone: nothing is lost any more
        return freed_any

    def _dropped(self, dropped: Counter[str], history: int) -> None:
        if self.episode is None:
            self.episode = Counter()
            log.warning(
                "buffer full: dropping the oldest undelivered samples (states, counts and"
                " alarms are kept) path=%s max_size=%d",
                self.path,
                self.max_size or 0,
            )
        self.episode.update(dropped)

    def _maybe_end(self, conn: sqlite3.Connection) -> None:
        assert self.max_size is not None and self.episode is not None
        page_size, pages, free = page_counts(conn)
        if (pages - free) * page_size < self.max_size * EPISODE_ENDS_BELOW:
            self._end()

    def _end(self) -> None:
        assert self.episode is not None
        log.info(
            "buffer no longer drops events path=%s dropped=%s",
            self.path,
            ",".join(f"{t}:{n}" for t, n in sorted(self.episode.items())) or "none",
        )
        self.episode = None


def _enough(candidates: list[tuple[int, int]], missing: int) -> list[int]:
    """The oldest candidates (seq, payload size) whose removal frees about ``missing``
    bytes: never more than needed, so a full buffer drops little at a time."""
    seqs, freed = [], 0
    for seq, size in candidates:
        seqs.append(seq)
        freed += size + ROW_OVERHEAD
        if freed >= missing:
            break
    return seqs


def _delivered_history(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """Among the oldest events, those every destination has (or that have none)."""
    dests = queries.destinations(conn)
    unfinished = " ".join(
        "AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.destination = ?"
        " AND d.seq = e.seq AND d.status != 'delivered')"
        for _ in dests
    )
    sql = (
        "SELECT seq, size FROM (SELECT seq, size FROM events ORDER BY seq LIMIT ?) AS e"
        f" WHERE 1 {unfinished} ORDER BY seq LIMIT ?"
    )
    return conn.execute(sql, [HISTORY_WINDOW, *dests, EVICT_CHUNK]).fetchall()


def _oldest_samples(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    return conn.execute(
        # The literal matches the partial index's WHERE (a parameter would not).
        "SELECT seq, size FROM events INDEXED BY events_samples WHERE type = 'sample'"
        " ORDER BY seq LIMIT ?",
        (EVICT_CHUNK,),
    ).fetchall()


def evict_tx(
    seqs: Sequence[int], reason: str, conn: sqlite3.Connection
) -> tuple[Counter[str], int]:
    """Delete these events and their deliveries, keeping every counter right. Returns the
    undelivered ones by type (counted as dropped for ``reason``) and how many were
    delivered everywhere (counted as evicted history). A block counts its samples: those
    some destination has not settled are dropped (moved ones live on in their own rows)."""
    now = time.time()
    listed = queries.json_list(seqs)
    with queries.transaction(conn):
        events = conn.execute(
            "SELECT seq, type, n FROM events WHERE seq IN (SELECT value FROM json_each(?))",
            (listed,),
        ).fetchall()
        sizes = {seq: n for seq, _, n in events if n is not None}
        unsettled: dict[int, int] = {}  # seq -> bitmap of samples some destination lacks
        changes: list[tuple[str, str, int]] = []
        for dest in queries.destinations(conn):
            per_status: Counter[str] = Counter()
            for seq, status, done, moved in conn.execute(
                "SELECT seq, status, done, moved FROM deliveries WHERE destination = ?"
                " AND seq IN (SELECT value FROM json_each(?))",
                (dest, listed),
            ):
                n = sizes.get(seq)
                if n is None:
                    per_status[status] += 1
                    if status != "delivered":
                        unsettled[seq] = 1
                    continue
                per_status.update(blocks.counts(n, status, done, moved))
                if status != "delivered":
                    lacking = blocks.full(n) & ~blocks.bits(done)
                    unsettled[seq] = unsettled.get(seq, 0) | lacking
            changes += [(dest, status, -n) for status, n in per_status.items() if n]
            conn.execute(
                "DELETE FROM deliveries WHERE destination = ?"
                " AND seq IN (SELECT value FROM json_each(?))",
                (dest, listed),
            )
        conn.execute("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))", (listed,))
        dropped: Counter[str] = Counter()
        total = 0
        for seq, event_type, n in events:
            total += n or 1
            lost = unsettled.get(seq, 0).bit_count()
            if lost:
                dropped[event_type] += lost
        history = total - sum(dropped.values())
        changes += [("", queries.dropped_status(reason, t), n) for t, n in dropped.items()]
        changes += [(*schema.EVENTS_TOTAL, -total), ("", queries.EVICTED, history)]
        queries.bump(conn, changes, now)
    return dropped, history
