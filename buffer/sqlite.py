"""SqliteBuffer: the durable store-and-forward outbox.

Errors: every failure a caller sees is ``BufferError`` with a message for a person (disk
full, database locked, I/O error, closed). It deliberately shares its name with the
builtin; import it from here. Bad arguments (an unknown ``synchronous`` mode) raise
``ValueError``.

Threads: SQLite blocks, so each of the two connections lives in its own worker thread
(``_Worker``). The writer connection does every write, so writes serialise; the reader
connection serves claim, stats, dead letters and state (WAL lets it read while the writer
commits). Each operation is one function run in its thread: one thread hop per
transaction rather than one per statement (aiosqlite hops per call, ~90 µs each). A
worker is a plain ``ThreadPoolExecutor`` thread, so a buffer that was never closed does
not hang interpreter exit.

Appends are group-committed: ``append()`` queues its rows and waits; one writer task takes
what is queued (up to ``max_batch`` rows, waiting at most ``commit_window`` after the
oldest queued append) and commits it in one transaction, then wakes every waiter. A
failed commit fails every append of that transaction and leaves nothing of it behind,
except that an error caused by the data itself (a bad value in a row) is retried append by
append, so only the append that carried it fails.

An event with no destination is stored (for replay) without delivery rows; ``prune``
removes it once it is older than the cutoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from buffer import schema
from buffer.rows import BufferStats, ClaimedEvent, DeadLetter, DestinationStats, EventRow

T = TypeVar("T")

SYNCHRONOUS_MODES = ("full", "normal")
BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL is truncated to this after a checkpoint
PRUNE_CHUNK = 5000  # events examined per prune transaction (appends run in between)

# Primary SQLite result codes -> what a person should read.
_REASONS = {
    5: "the database is locked by another process",
    6: "a table is locked",
    8: "the database is read-only (check file permissions)",
    10: "disk I/O error",
    11: "the database file is corrupt",
    13: "the disk is full or the buffer reached its size limit",
    14: "the database file cannot be opened",
    26: "the file is not a database",
}
_CORRUPTION = {11, 26}
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    OverflowError,
)

_CLAIM = """
    SELECT d.seq, e.id, e.type, e.key, e.payload, d.attempts
    FROM deliveries AS d INDEXED BY deliveries_pending JOIN events AS e ON e.seq = d.seq
    WHERE d.destination = ? AND d.status = 'pending' AND d.seq > ?{exclude}
    ORDER BY d.seq LIMIT ?
"""
_EXCLUDE = " AND e.key NOT IN (SELECT value FROM json_each(?))"
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (seq, id, type, key, time, payload, size, created)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (destination, seq, status, attempts, updated)"
    " VALUES (?, ?, 'pending', 0, ?)"
)
_UPSERT_STATE = (
    "INSERT INTO rule_state (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_BUMP = (
    "INSERT INTO counters (destination, status, n, last) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (destination, status) DO UPDATE SET n = n + excluded.n, last = excluded.last"
)
_SET_STATUS = (
    "UPDATE deliveries SET status = ?, last_error = coalesce(?, last_error), updated = ?"
    " WHERE destination = ? AND seq = ? AND status = ?"
)
_DEAD_LETTERS = """
    SELECT d.seq, e.id, e.type, e.key, d.destination, d.last_error, d.attempts, d.updated
    FROM deliveries AS d INDEXED BY deliveries_dead JOIN events AS e ON e.seq = d.seq
    WHERE d.status = 'dead'{where} ORDER BY d.seq LIMIT ?
"""


class BufferError(Exception):  # the public name; it shadows the builtin in this module
    """The buffer could not do what was asked; the message says why, for a person."""


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _REASONS.get(code & 0xFF) if isinstance(code, int) else None
    return f"{reason} ({exc})" if reason else str(exc) or type(exc).__name__


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPTION


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _bump(conn: sqlite3.Connection, changes: Sequence[tuple[str, str, int]], now: float) -> None:
    conn.executemany(_BUMP, [(dest, status, n, now) for dest, status, n in changes if n])


class _Corrupt(Exception):
    pass


class _Worker:
    """One SQLite connection owned by one thread; calls run there, one after another."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise BufferError("the buffer is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


@dataclass(slots=True)
class _Append:
    rows: tuple[EventRow, ...]
    state: dict[str, str]
    future: asyncio.Future[None]
    queued_at: float  # loop time


class SqliteBuffer:
    """The outbox. Open with ``await SqliteBuffer.open(path)``; close with ``close()``."""

    def __init__(
        self, path: Path, commit_window: float, max_batch: int, writer: _Worker, reader: _Worker
    ) -> None:
        self.path = path
        self.corrupt_moved_to: Path | None = None
        self.commit_window = commit_window
        self.max_batch = max_batch
        self.commits = 0  # append transactions committed (group commit: one per batch)
        self._writer = writer
        self._reader = reader
        self._queue: deque[_Append] = deque()
        self._inflight: list[_Append] = []
        self._queued_rows = 0
        self._wake = asyncio.Event()  # something was queued (or closing)
        self._full = asyncio.Event()  # max_batch rows are queued (or closing)
        self._closing = False
        self._write_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None

    # -- opening and closing -----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "full",
        commit_window: float = 0.02,
        max_batch: int = 1000,
        max_size: int | None = None,
    ) -> SqliteBuffer:
        """Open (creating or migrating) the buffer at ``path``. A file that is not a
        database or fails ``PRAGMA quick_check`` is moved aside (see ``corrupt_moved_to``)
        and a fresh buffer is created. ``max_size`` caps the database file in bytes;
        appends beyond it fail with BufferError until space is freed (ack + prune)."""
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if commit_window < 0 or max_batch < 1:
            raise ValueError("commit_window must be >= 0 and max_batch >= 1")
        path = Path(path)
        writer, reader = _Worker("floorgate-buffer-writer"), _Worker("floorgate-buffer-reader")
        self = cls(path, commit_window, max_batch, writer, reader)
        try:
            await writer.start(partial(self._open_writer, synchronous.upper(), max_size))
            await reader.start(self._open_reader)
        except sqlite3.Error as exc:
            await writer.close()
            await reader.close()
            raise BufferError(f"cannot open the buffer {path}: {_describe(exc)}") from exc
        except schema.SchemaTooNew as exc:
            await writer.close()
            await reader.close()
            raise BufferError(f"cannot open the buffer {path}: {exc}") from exc
        self._write_task = asyncio.create_task(self._write_loop(), name="buffer-writer")
        return self

    def _open_writer(self, synchronous: str, max_size: int | None) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect_writer(synchronous, max_size)
        except (sqlite3.DatabaseError, _Corrupt) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _is_corruption(exc):
                raise
        self.corrupt_moved_to = self._move_aside()
        return self._connect_writer(synchronous, max_size)

    def _connect_writer(self, synchronous: str, max_size: int | None) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _Corrupt("; ".join(problems))
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            if max_size is not None:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, max_size // page_size)}")
            schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = 1")
        return conn

    def _move_aside(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                side.rename(f"{target}{suffix}")
        self.path.rename(target)
        return target

    async def close(self) -> None:
        """Commit what is queued, then close both connections. Safe to call twice."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._write_task is not None:
            await self._write_task
        await self._writer.close()
        await self._reader.close()

    # -- appending (group commit) ------------------------------------------------------

    async def append(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> None:
        """Store events (one pending delivery per destination) and rule state in one
        durable commit. Returns once committed; an id already stored is ignored."""
        if self._closing or self._write_task is None or self._write_task.done():
            raise BufferError(f"the buffer {self.path} is closed")
        if not rows and not state:
            return
        loop = asyncio.get_running_loop()
        item = _Append(tuple(rows), dict(state or {}), loop.create_future(), loop.time())
        self._queue.append(item)
        self._queued_rows += len(item.rows)
        self._wake.set()
        if self._queued_rows >= self.max_batch:
            self._full.set()
        await item.future

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._gather()
                self._inflight = self._take()
                await self._commit(self._inflight)
                self._inflight = []
        finally:  # cancelled: nobody may wait forever
            for item in [*self._inflight, *self._queue]:
                if not item.future.done():
                    item.future.set_exception(BufferError(f"the buffer {self.path} is closed"))
            self._queue.clear()

    async def _gather(self) -> None:
        """Wait until max_batch rows are queued or the oldest append waited commit_window."""
        delay = self._queue[0].queued_at + self.commit_window - asyncio.get_running_loop().time()
        if delay <= 0 or self._closing:
            return
        self._full.clear()
        if self._queued_rows >= self.max_batch:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._full.wait()

    def _take(self) -> list[_Append]:
        batch = [self._queue.popleft()]
        n = len(batch[0].rows)
        while self._queue and n + len(self._queue[0].rows) <= self.max_batch:
            item = self._queue.popleft()
            batch.append(item)
            n += len(item.rows)
        self._queued_rows -= n
        return batch

    async def _commit(self, batch: list[_Append]) -> None:
        try:
            await self._writer.call(partial(_append_tx, batch))
        except _DATA_ERRORS as exc:
            if len(batch) > 1:  # find the append that carries the bad value
                for item in batch:
                    await self._commit([item])
                return
            self._fail(batch, exc)
        except Exception as exc:  # delivered to every waiter, who decides what to do
            self._fail(batch, exc)
        else:
            self.commits += 1
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)

    def _fail(self, batch: list[_Append], exc: Exception) -> None:
        error = exc if isinstance(exc, BufferError) else None
        message = f"append to the buffer {self.path} failed: {_describe(exc)}"
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error or BufferError(message))

    # -- the delivery side -------------------------------------------------------------

    async def claim(
        self,
        destination: str,
        limit: int,
        *,
        after_seq: int = 0,
        exclude_keys: Collection[str] = (),
    ) -> list[ClaimedEvent]:
        """The oldest pending events of ``destination`` (seq > after_seq, key not in
        exclude_keys) in seq order, at most ``limit``. Changes nothing."""
        if limit <= 0:
            return []
        if exclude_keys:
            sql = _CLAIM.format(exclude=_EXCLUDE)
            params: tuple[object, ...] = (destination, after_seq, _json_list(exclude_keys), limit)
        else:
            sql = _CLAIM.format(exclude="")
            params = (destination, after_seq, limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall(), "claim")
        return [ClaimedEvent(*row) for row in rows]

    async def ack(self, destination: str, seqs: Sequence[int]) -> None:
        """Mark delivered (pending or dead rows; delivered ones stay as they are)."""
        if seqs:
            await self._write(partial(_ack_tx, destination, seqs), "ack")

    async def record_failure(self, destination: str, seqs: Sequence[int], error: str) -> None:
        """A failed attempt at pending deliveries: attempts += 1, last_error = error."""
        if seqs:
            await self._write(partial(_failure_tx, destination, seqs, error), "record failure")

    async def dead_letter(self, destination: str, reasons: Mapping[int, str]) -> None:
        """Pending deliveries become dead with their reason; the queue moves on."""
        if reasons:
            await self._write(partial(_dead_tx, destination, dict(reasons)), "dead-letter")

    async def requeue(
        self, destination: str | None = None, seqs: Sequence[int] | None = None
    ) -> int:
        """Dead deliveries back to pending (attempts reset): all of them, one
        destination's, or the given seqs. Returns how many."""
        return await self._write(partial(_requeue_tx, destination, seqs), "requeue")

    async def prune(self, delivered_before: float) -> int:
        """Delete events whose every delivery was delivered before ``delivered_before``
        (events with a dead or pending delivery stay). Returns how many were deleted."""
        low = await self._read(
            lambda conn: conn.execute("SELECT min(seq) - 1, max(seq) FROM events").fetchone(),
            "prune",
        )
        start, top = low
        removed = 0
        while top is not None and start < top:
            removed += await self._write(
                partial(_prune_tx, delivered_before, start, start + PRUNE_CHUNK), "prune"
            )
            start += PRUNE_CHUNK
        return removed

    # -- reading -----------------------------------------------------------------------

    async def load_state(self) -> dict[str, str]:
        rows = await self._read(
            lambda conn: conn.execute("SELECT key, value FROM rule_state").fetchall(), "load state"
        )
        return dict(rows)

    async def stats(self) -> BufferStats:
        """Counts (kept in the counters table), oldest pending and file size: a few
        index lookups whatever the backlog."""
        return await self._read(partial(_stats, self.path), "stats")

    async def dead_letters(
        self, destination: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead deliveries in seq order (one destination's or all)."""
        where, params = (
            (" AND d.destination = ?", (destination, limit)) if destination else ("", (limit,))
        )
        sql = _DEAD_LETTERS.format(where=where)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall(), "dead letters")
        return [DeadLetter(*row) for row in rows]

    # -- plumbing ----------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        return await self._run(self._reader, fn, doing)

    async def _write(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        return await self._run(self._writer, fn, doing)

    async def _run(self, worker: _Worker, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        if self._closing:
            raise BufferError(f"the buffer {self.path} is closed")
        try:
            return await worker.call(fn)
        except sqlite3.Error as exc:
            raise BufferError(f"buffer {self.path}: {doing} failed: {_describe(exc)}") from exc


def _json_list(values: Collection[str]) -> str:
    return json.dumps(list(values))


# -- transactions (run in the writer thread) ---------------------------------------------


def _append_tx(batch: list[_Append], conn: sqlite3.Connection) -> None:
    rows: dict[str, EventRow] = {}
    state: dict[str, str] = {}
    for item in batch:
        for row in item.rows:
            rows.setdefault(row.id, row)
        state.update(item.state)
    now = time.time()
    with _transaction(conn):
        if rows:
            _insert_events(conn, list(rows.values()), now)
        if state:
            conn.executemany(_UPSERT_STATE, state.items())


def _insert_events(conn: sqlite3.Connection, rows: list[EventRow], now: float) -> None:
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    base: int = found[0] if found else 0
    inserted = conn.executemany(
        _INSERT_EVENT,
        [
            (seq, r.id, r.type, r.key, r.time, r.payload, len(r.payload), now)
            for seq, r in enumerate(rows, base + 1)
        ],
    ).rowcount
    numbered: Iterator[tuple[int, EventRow]] = enumerate(rows, base + 1)
    if inserted < len(rows):  # some ids were stored already: only new ones get deliveries
        new = {
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE seq > ? AND seq <= ?", (base, base + len(rows))
            )
        }
        numbered = ((seq, r) for seq, r in enumerate(rows, base + 1) if seq in new)
    deliveries = [
        (dest, seq, now)
        for seq, r in numbered
        for dest in (r.destinations if len(r.destinations) < 2 else dict.fromkeys(r.destinations))
    ]
    conn.executemany(_INSERT_DELIVERY, deliveries)
    per_destination = Counter(dest for dest, _, _ in deliveries)
    changes = [(dest, "pending", n) for dest, n in per_destination.items()]
    _bump(conn, [*changes, (*schema.EVENTS_TOTAL, inserted)], now)


def _move(
    conn: sqlite3.Connection,
    destination: str,
    params: Sequence[tuple[str | None, int]],
    source: str,
    target: str,
    now: float,
) -> int:
    """Move deliveries of ``destination`` from status ``source`` to ``target``;
    ``params`` are (error or None, seq). Returns how many moved."""
    sql_params = [(target, error, now, destination, seq, source) for error, seq in params]
    return int(conn.executemany(_SET_STATUS, sql_params).rowcount)


def _ack_tx(destination: str, seqs: Sequence[int], conn: sqlite3.Connection) -> None:
    now = time.time()
    params = [(None, seq) for seq in seqs]
    with _transaction(conn):
        from_pending = _move(conn, destination, params, "pending", "delivered", now)
        from_dead = 0
        if from_pending < len(params):
            from_dead = _move(conn, destination, params, "dead", "delivered", now)
        _bump(
            conn,
            [
                (destination, "pending", -from_pending),
                (destination, "dead", -from_dead),
                (destination, "delivered", from_pending + from_dead),
            ],
            now,
        )


def _failure_tx(
    destination: str, seqs: Sequence[int], error: str, conn: sqlite3.Connection
) -> None:
    now = time.time()
    with _transaction(conn):
        conn.executemany(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, updated = ?"
            " WHERE destination = ? AND seq = ? AND status = 'pending'",
            [(error, now, destination, seq) for seq in seqs],
        )


def _dead_tx(destination: str, reasons: dict[int, str], conn: sqlite3.Connection) -> None:
    now = time.time()
    params = [(reason, seq) for seq, reason in reasons.items()]
    with _transaction(conn):
        moved = _move(conn, destination, params, "pending", "dead", now)
        _bump(conn, [(destination, "pending", -moved), (destination, "dead", moved)], now)


def _destinations(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT destination FROM counters WHERE destination != ''")
    return [dest for (dest,) in rows]


def _requeue_tx(
    destination: str | None, seqs: Sequence[int] | None, conn: sqlite3.Connection
) -> int:
    now = time.time()
    total = 0
    with _transaction(conn):
        for dest in [destination] if destination else _destinations(conn):
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
            _bump(conn, [(dest, "dead", -moved), (dest, "pending", moved)], now)
            total += moved
    return total


def _prune_tx(cutoff: float, start: int, end: int, conn: sqlite3.Connection) -> int:
    now = time.time()
    with _transaction(conn):
        dests = _destinations(conn)
        unfinished = " ".join(
            "AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.destination = ?"
            " AND d.seq = e.seq AND (d.status != 'delivered' OR d.updated >= ?))"
            for _ in dests
        )
        params: list[object] = [start, end, cutoff]
        for dest in dests:
            params += [dest, cutoff]
        seqs = [
            (seq,)
            for (seq,) in conn.execute(
                f"SELECT seq FROM events AS e WHERE e.seq > ? AND e.seq <= ? AND e.created < ? "
                f"{unfinished}",
                params,
            )
        ]
        if not seqs:
            return 0
        conn.executemany("DELETE FROM events WHERE seq = ?", seqs)
        changes = []
        for dest in dests:
            deleted = conn.executemany(
                "DELETE FROM deliveries WHERE destination = ? AND seq = ?",
                [(dest, seq) for (seq,) in seqs],
            ).rowcount
            changes.append((dest, "delivered", -deleted))
        _bump(conn, [*changes, (*schema.EVENTS_TOTAL, -len(seqs))], now)
    return len(seqs)


# -- reads (run in the reader thread) ----------------------------------------------------


def _stats(path: Path, conn: sqlite3.Connection) -> BufferStats:
    stats = BufferStats()
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            stats.size_bytes += os.stat(f"{path}{suffix}").st_size
    with _read_transaction(conn):
        for dest, status, n, last in conn.execute(
            "SELECT destination, status, n, last FROM counters"
        ):
            if (dest, status) == schema.EVENTS_TOTAL:
                stats.events = n
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


@contextlib.contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One snapshot for several SELECTs."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
