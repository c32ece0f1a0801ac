"""SqliteBuffer: the durable store-and-forward outbox.

Errors: every failure a caller sees is ``BufferError`` with a message for a person (disk
full, database locked, I/O error, closed). It deliberately shares its name with the
builtin; import it from here. Bad arguments (an unknown ``synchronous`` mode) raise
``ValueError``.

Threads: SQLite blocks, so each of the two connections lives in its own worker thread
(``_Worker``). The writer connection does every write, so writes serialise; the reader
connection serves claim, stats, dead letters and state (WAL lets it read while the writer
commits). Each operation is one function run in its thread: one thread hop per
transaction rather than one per statement (a hop costs ~90 µs; aiosqlite hops per call). A
worker is a plain ``ThreadPoolExecutor`` thread, so a buffer that was never closed does
not hang interpreter exit.

Appends are group-committed: ``append()`` queues its rows and waits; one writer task takes
what is queued (up to ``max_batch`` rows) and commits it in one transaction, then wakes
every waiter. While one commit runs, new appends queue up and share the next one. It waits
for more (at most ``commit_window`` after the oldest queued append) only when the last
commit was shared, i.e. when appends come concurrently: a lone sequential appender is
committed at once instead of paying the window on every append. A
failed commit fails every append of that transaction and leaves nothing of it behind,
except that an error caused by the data itself (a bad value in a row) is retried append by
append, so only the append that carried it fails.

An event with no destination is stored (for replay) without delivery rows; ``prune``
removes it once it is older than the cutoff.

Bounds (``max_size``, ``max_age``) and what they drop: see ``buffer.capacity``. The SQL
itself lives in ``buffer.queries``, shared with the operator CLI (``buffer.operator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from buffer import queries, schema
from buffer.capacity import Capacity
from buffer.cleanmark import CleanMark
from buffer.rows import BufferStats, ClaimedEvent, DeadLetter, EventRow, StoredEvent

T = TypeVar("T")

log = logging.getLogger("floorgate.buffer")

SYNCHRONOUS_MODES = ("full", "normal")
BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL is truncated to this after a checkpoint
PRUNE_CHUNK = queries.CHUNK

# Primary SQLite result codes -> what a person should read.
_REASONS = {
    5: "the database is locked by another process",
    6: "a table is locked",
    8: "the database is read-only (check file permissions)",
    10: "disk I/O error",
    11: "the database file is corrupt",
    13: "the disk is full",
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


class BufferError(Exception):  # the public name; it shadows the builtin in this module
    """The buffer could not do what was asked; the message says why, for a person."""


def describe_error(exc: BaseException) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _REASONS.get(code & 0xFF) if isinstance(code, int) else None
    return f"{reason} ({exc})" if reason else str(exc) or type(exc).__name__


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPTION


class _Corrupt(Exception):
    pass


def _quick_check(conn: sqlite3.Connection) -> list[str]:
    """``["ok"]``, or the first problems PRAGMA quick_check finds (it reads the file)."""
    return [row[0] for row in conn.execute("PRAGMA quick_check(5)")]


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
        self,
        path: Path,
        commit_window: float,
        max_batch: int,
        writer: _Worker,
        reader: _Worker,
        max_size: int | None = None,
    ) -> None:
        self.path = path
        self.corrupt_moved_to: Path | None = None
        # After a clean close the integrity check runs in the background instead of
        # before the first write; what it found, if anything (health shows it).
        self.integrity_problem: str | None = None
        self._check_deferred = False
        self._check_task: asyncio.Task[None] | None = None
        self.commit_window = commit_window
        self.max_batch = max_batch
        self.commits = 0  # append transactions committed (group commit: one per batch)
        self.capacity = Capacity(path, max_size)  # used in the writer thread only
        self._clean_mark = CleanMark(path)
        self._last_commit_shared = False  # the last commit carried several appends
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
        and a fresh buffer is created. ``max_size`` caps the database file in bytes: at
        the cap the policy of ``buffer.capacity`` makes room (delivered history, then the
        oldest samples) and an append fails with BufferError only when nothing but
        machine states, counts and alarms is left."""
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if commit_window < 0 or max_batch < 1:
            raise ValueError("commit_window must be >= 0 and max_batch >= 1")
        path = Path(path)
        writer, reader = _Worker("floorgate-buffer-writer"), _Worker("floorgate-buffer-reader")
        self = cls(path, commit_window, max_batch, writer, reader, max_size)
        try:
            await writer.start(partial(self._open_writer, synchronous.upper()))
            await reader.start(self._open_reader)
        except sqlite3.Error as exc:
            await writer.close()
            await reader.close()
            raise BufferError(f"cannot open the buffer {path}: {describe_error(exc)}") from exc
        except schema.SchemaTooNew as exc:
            await writer.close()
            await reader.close()
            raise BufferError(f"cannot open the buffer {path}: {exc}") from exc
        self._write_task = asyncio.create_task(self._write_loop(), name="buffer-writer")
        if self._check_deferred:
            self._check_task = asyncio.create_task(self._check_integrity(), name="buffer-check")
        return self

    def _open_writer(self, synchronous: str) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect_writer(synchronous)
        except (sqlite3.DatabaseError, _Corrupt) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _is_corruption(exc):
                raise
        self.corrupt_moved_to = self._move_aside()
        return self._connect_writer(synchronous)

    def _connect_writer(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            clean = self._clean_mark.take()
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if clean:
                self._check_deferred = True  # closed cleanly by us: checked after opening
            else:
                problems = _quick_check(conn)
                if problems != ["ok"]:
                    raise _Corrupt("; ".join(problems))
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            self.capacity.configure(conn)
            schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _quick_check(self) -> list[str]:
        conn = self._open_reader()  # one of its own: the reader serves claims meanwhile
        try:
            return _quick_check(conn)
        finally:
            conn.close()

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
        if self._check_task is not None:
            self._check_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check_task
        if self._write_task is not None:
            await self._write_task
        closed_cleanly = (
            self._write_task is not None
            and not self._write_task.cancelled()
            and self._write_task.exception() is None
            and self.integrity_problem is None
        )
        await self._writer.close()
        await self._reader.close()
        if closed_cleanly:
            await asyncio.to_thread(self._clean_mark.write)

    async def _check_integrity(self) -> None:
        """PRAGMA quick_check while the agent runs, on a connection of its own (the
        reader serves claims meanwhile; WAL lets writes go on). A problem is logged and
        kept in ``integrity_problem``; the clean mark is then not written at close, so
        the next start checks before opening and moves a corrupt file aside."""
        try:
            problems = await asyncio.to_thread(self._quick_check)
        except sqlite3.Error as exc:
            problems = [describe_error(exc)]
        if problems != ["ok"]:
            self.integrity_problem = "; ".join(problems)
            log.error(
                "buffer integrity check failed path=%s problems=%s "
                "fix=restart-the-agent-to-move-it-aside",
                self.path,
                self.integrity_problem,
            )

    # -- appending (group commit) ------------------------------------------------------

    async def append(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> None:
        """Store events (one pending delivery per destination) and rule state in one
        durable commit. Returns once committed; an id already stored is ignored."""
        await self.submit(rows, state)

    def submit(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> asyncio.Future[None]:
        """``append`` without waiting: queue the rows now, get the future of their commit.

        For a caller that goes on working while the commit runs (the engine pipelines its
        rounds). The writer task picks the rows up at the caller's next await. Raises
        BufferError at once when the buffer is closed."""
        if self._closing or self._write_task is None or self._write_task.done():
            raise BufferError(f"the buffer {self.path} is closed")
        loop = asyncio.get_running_loop()
        item = _Append(tuple(rows), dict(state or {}), loop.create_future(), loop.time())
        if not item.rows and not item.state:
            item.future.set_result(None)
            return item.future
        self._queue.append(item)
        self._queued_rows += len(item.rows)
        self._wake.set()
        if self._queued_rows >= self.max_batch:
            self._full.set()
        return item.future

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
        """When appends come concurrently, wait until max_batch rows are queued or the
        oldest append waited commit_window; a lone appender is committed at once."""
        if len(self._queue) == 1 and not self._last_commit_shared:
            return
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
        self._last_commit_shared = len(batch) > 1
        rows = [row for item in batch for row in item.rows]
        state = {key: value for item in batch for key, value in item.state.items()}
        try:
            await self._writer.call(partial(self.capacity.store, rows, state))
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
        message = f"append to the buffer {self.path} failed: {describe_error(exc)}"
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
            sql = queries.CLAIM.format(exclude=queries.EXCLUDE)
            params: tuple[object, ...] = (
                destination,
                after_seq,
                queries.json_list(exclude_keys),
                limit,
            )
        else:
            sql = queries.CLAIM.format(exclude="")
            params = (destination, after_seq, limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall(), "claim")
        return [ClaimedEvent(*row) for row in rows]

    async def ack(self, destination: str, seqs: Sequence[int]) -> None:
        """Mark delivered (pending or dead rows; delivered ones stay as they are)."""
        if seqs:
            await self._write(partial(queries.ack_tx, destination, seqs), "ack")

    async def record_failure(self, destination: str, seqs: Sequence[int], error: str) -> None:
        """A failed attempt at pending deliveries: attempts += 1, last_error = error."""
        if seqs:
            await self._write(
                partial(queries.failure_tx, destination, seqs, error), "record failure"
            )

    async def dead_letter(self, destination: str, reasons: Mapping[int, str]) -> None:
        """Pending deliveries become dead with their reason; the queue moves on."""
        if reasons:
            await self._write(partial(queries.dead_tx, destination, dict(reasons)), "dead-letter")

    async def requeue(
        self, destination: str | None = None, seqs: Sequence[int] | None = None
    ) -> int:
        """Dead deliveries back to pending (attempts reset): all of them, one
        destination's, or the given seqs. Returns how many."""
        return await self._write(partial(queries.requeue_tx, destination, seqs), "requeue")

    async def prune(self, delivered_before: float) -> int:
        """Delete events whose every delivery was delivered before ``delivered_before``
        (events with a dead or pending delivery stay). Returns how many were deleted."""
        span = await self._read(queries.seq_range, "prune")
        if span is None:
            return 0
        start, top = span[0] - 1, span[1]
        removed = 0
        while start < top:
            removed += await self._write(
                partial(queries.prune_tx, delivered_before, start, start + PRUNE_CHUNK), "prune"
            )
            start += PRUNE_CHUNK
        return removed

    async def expire(self, buffered_before: float) -> int:
        """The ``max_age`` bound: drop events buffered before ``buffered_before`` that a
        destination still waits for (counted as dropped, reason ``expired``; one log line)."""
        removed: Counter[str] = Counter()
        while dropped := await self._write(
            partial(self.capacity.expire, buffered_before), "expire"
        ):
            removed.update(dropped)
        if removed:
            log.warning(
                "undelivered events older than max_age dropped path=%s %s",
                self.path,
                " ".join(f"{t}={n}" for t, n in sorted(removed.items())),
            )
        return sum(removed.values())

    async def replay(self, destination: str, since: str, until: str | None = None) -> int:
        """Send again what ``destination`` already has: delivered events with an event
        time in [since, until) (ISO 8601) go back to pending, with their ids. Events
        pruned by retention are gone. Returns how many."""
        span = await self._read(queries.seq_range, "replay")
        if span is None:
            return 0
        moved = 0
        for start in range(span[0] - 1, span[1], queries.CHUNK):
            moved += await self._write(
                partial(queries.replay_tx, destination, since, until, start, start + queries.CHUNK),
                "replay",
            )
        return moved

    async def purge_dead(
        self, destination: str | None = None, dead_before: float | None = None
    ) -> int:
        """Give up on dead letters (all, one destination's, or those dead before a time)."""
        return await self._write(
            partial(queries.purge_dead_tx, destination, dead_before), "purge dead letters"
        )

    @property
    def full(self) -> bool:
        """True while the buffer is at max_size and dropping (an episode; see capacity)."""
        return self.capacity.full

    # -- reading -----------------------------------------------------------------------

    async def load_state(self) -> dict[str, str]:
        rows = await self._read(
            lambda conn: conn.execute("SELECT key, value FROM rule_state").fetchall(), "load state"
        )
        return dict(rows)

    async def stats(self) -> BufferStats:
        """Counts (kept in the counters table), oldest pending and file size: a few
        index lookups whatever the backlog."""
        return await self._read(partial(queries.stats, self.path), "stats")

    async def dead_letters(
        self, destination: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead deliveries in seq order (one destination's or all)."""
        return await self._read(partial(queries.dead_letters, destination, limit), "dead letters")

    async def show(self, ident: str) -> StoredEvent | None:
        """One event (by id, else by seq) with its deliveries."""
        return await self._read(partial(queries.show, ident), "show")

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
            raise BufferError(f"buffer {self.path}: {doing} failed: {describe_error(exc)}") from exc
