"""SqliteBuffer: the durable store-and-forward outbox.

Errors: every failure a caller sees is ``BufferStoreError`` with a message for a person
(disk full, database locked, I/O error, closed). Bad arguments (an unknown
``synchronous`` mode) raise ``ValueError``.

Threads: SQLite blocks, so each of the two connections lives in its own worker thread
(``_Worker``). The writer connection does every write, so writes serialise; the reader
connection serves claim, stats, dead letters and state (WAL lets it read while the writer
commits). Each operation is one function run in its thread: one thread hop per
transaction rather than one per statement (a hop costs ~90 µs; aiosqlite hops per call). A
worker is a plain ``ThreadPoolExecutor`` thread, so a buffer that was never closed does
not hang interpreter exit.

Appends: ``append()`` (or ``submit()``, which does not wait) hands its rows and rule state
to the writer thread at once, as one transaction, and returns when it is durable. There
is no group commit: the agent has one appender, the engine, which waits for each commit
before handing over the next, so there was never anything to group. Concurrent appenders
are served one transaction each, in the order they called.

What an append does when it fails depends on whose fault it is:

- the file or the disk (full, I/O error, locked, the ``max_size`` bound with only
  protected events left): the append fails as a whole with ``BufferStoreError`` and
  leaves nothing behind; the caller keeps its rows and tries again later (the engine
  holds them in memory) until the disk has room or works again.
- the data of some rows (a string that is not valid UTF-8, a payload that is not
  bytes: SQLite or the encoding refuses it the same way at every retry): those rows
  are found (each tried alone in a transaction that is rolled back), everything else
  is committed with the rule state in one transaction, and the rejected ones are counted
  (dropped, reason ``rejected``), logged with their ids and returned (``Unstorable``). A
  rule-state key that cannot be stored is left out the same way. Retrying such a row
  would fail forever and hold up every event behind it. Only when no single row or key
  fails alone (rows bad only together, e.g. an append beyond SQLite's 1 GB limit as a
  whole) does the append fail as a whole.

An event with no destination is stored (for replay) without delivery rows; ``prune``
removes it once it is older than the cutoff.

Retention: ``prune`` (the full pass, hourly: every event, by seq chunks) and, for
samples, either the ack itself (``keep_samples(0)``: the ack that completes a sample
deletes it in its transaction) or ``prune_samples`` (every few seconds: only the samples
of the seq ranges acknowledged since it last ran, which the buffer notes at each
``ack``). Delivered samples are the bulk of what a plant buffers; deleting them soon after
delivery frees their pages, which SQLite fills again before it makes the file longer, so
the file stops growing. Nothing undelivered and no dead letter is ever pruned.

The flash budget: ``written_bytes`` is what this process sent to the disk since the buffer
opened (``buffer.diskio``); ``record_written`` adds it to counters in the file, with the
seconds and the events it covers, for ``floorgate buffer stats`` (another process).

Bounds (``max_size``, ``max_age``) and what they drop: see ``buffer.capacity``. The SQL
itself lives in ``buffer.queries``, shared with the operator CLI (``buffer.operator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from buffer import blocks, diskio, queries, schema
from buffer.capacity import SAMPLE, Capacity, is_full
from buffer.cleanmark import CleanMark
from buffer.rows import BufferStats, ClaimedEvent, DeadLetter, EventRow, StoredEvent, Unstorable

T = TypeVar("T")

log = logging.getLogger("floorgate.buffer")

SYNCHRONOUS_MODES = ("full", "normal")
BUSY_TIMEOUT_MS = 5000
# Checkpoints, sized by measurement (bench/buffer_bench.py, "flash" rows; docs/buffer.md):
# a checkpoint copies every page the WAL holds into the file once, however often it was
# rewritten meanwhile, so the fewer checkpoints the fewer bytes, down to the pages that
# really changed. Against SQLite's 1,000 pages (4 MiB), 4,000 pages (a 16 MiB WAL) wrote
# 3 % fewer bytes per event with samples deleted by their ack (the live part of the file
# is small either way) and 16 % fewer with samples pruned in batches every 2 s; 16,000
# (64 MiB) about 5 % fewer again, for a WAL four times larger to keep, read and recover.
WAL_AUTOCHECKPOINT = 4000  # pages
# After a checkpoint the WAL is cut back to this when it grew past it (a long reader held
# the checkpoint back). Above the WAL's usual size: cutting it at every checkpoint would
# free and allocate its blocks again each time.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# Pages of a new buffer file. A commit writes each page it touches whole, to the WAL and
# again at the checkpoint: with sample blocks most commits touch a few pages of a few
# rows, and 1 KiB pages made a delivered sample cost ~40 % less than 4 KiB ones
# (docs/buffer.md, "The flash budget").
NEW_FILE_PAGE_SIZE = 1024
PRUNE_CHUNK = queries.CHUNK
SAMPLE_PRUNE_CHUNK = 1000  # samples examined per transaction of prune_samples
# Seq ranges acknowledged and not yet looked at by prune_samples, at most (about 1 s of
# acks each: a few hundred bytes of memory per second of sample_retention). Beyond it the
# oldest are forgotten: the hourly full pass prunes what they held.
DELIVERED_RANGES = 10_000
RANGE_MERGE_SECONDS = 1.0  # acks this close in time, with touching seqs, make one range
# ack_with_appends: acks waiting for an append past this many events are committed at
# once (a crash resends what waited; a destination draining a backlog acks that fast).
MAX_WAITING_ACKS = 5000
RECORD_WRITTEN_EVERY = 60.0  # seconds between updates of the written counters in the file
REJECTED_LOGGED = 10  # rejected rows logged one by one per append; the rest are summed up

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
# What a row's own data makes SQLite or the encoding raise, the same at every retry (orjson's
# JSONEncodeError is a TypeError, an unencodable str a ValueError).
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    OverflowError,
)


class BufferStoreError(Exception):
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

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Start ``fn`` in the thread now (after what was submitted before)."""
        if self._conn is None:
            raise BufferStoreError("the buffer is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(fn)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class SqliteBuffer:
    """The outbox. Open with ``await SqliteBuffer.open(path)``; close with ``close()``."""

    def __init__(
        self, path: Path, writer: _Worker, reader: _Worker, max_size: int | None = None
    ) -> None:
        self.path = path
        self.corrupt_moved_to: Path | None = None
        # After a clean close the integrity check runs in the background instead of
        # before the first write; what it found, if anything (health shows it).
        self.integrity_problem: str | None = None
        self._check_deferred = False
        self._check_task: asyncio.Task[None] | None = None
        self.capacity = Capacity(path, max_size)  # used in the writer thread only
        self._blocks = blocks.Expander()
        self._clean_mark = CleanMark(path)
        self._writer = writer
        self._reader = reader
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        # (wall clock, lowest seq, highest seq) of what was acknowledged (or stored with no
        # destination), oldest first, for prune_samples. Touched by the loop (ack) and the
        # writer thread (append): under the lock.
        self._delivered: deque[tuple[float, int, int]] = deque()
        self._delivered_lock = threading.Lock()
        self._sample_retention: float | None = None  # see keep_samples
        self.commits = 0  # write transactions handed to the writer thread (appends, acks...)
        # The disk writes of this process since the buffer opened (buffer.diskio), and what
        # of them the counters in the file already hold.
        self._written_base = diskio.written_bytes()
        self._written_high = 0
        self._recorded = (0, time.monotonic())  # (bytes, monotonic time) recorded so far
        self._stored_since_record = 0  # events stored since (writer thread only)
        self._recorded_at = time.monotonic()  # when record_written last ran
        # ack_with_appends: acks waiting for the next append's transaction (event loop
        # thread only), and the timer that commits them alone when no append comes.
        self._ack_wait = 0.0
        self._waiting_acks: list[tuple[str, tuple[int, ...], asyncio.Future[None]]] = []
        self._ack_timer: asyncio.TimerHandle | None = None

    # -- opening and closing -----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "full",
        max_size: int | None = None,
    ) -> SqliteBuffer:
        """Open (creating or migrating) the buffer at ``path``. A file that is not a
        database or fails ``PRAGMA quick_check`` is moved aside (see ``corrupt_moved_to``)
        and a fresh buffer is created. ``max_size`` caps the database file in bytes: at
        the cap the policy of ``buffer.capacity`` makes room (delivered history, then the
        oldest samples) and an append fails with BufferStoreError only when nothing but
        machine states, counts and alarms is left."""
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        path = Path(path)
        writer, reader = _Worker("floorgate-buffer-writer"), _Worker("floorgate-buffer-reader")
        self = cls(path, writer, reader, max_size)
        try:
            await writer.start(partial(self._open_writer, synchronous.upper()))
            await reader.start(self._open_reader)
        except sqlite3.Error as exc:
            await writer.close()
            await reader.close()
            raise BufferStoreError(f"cannot open the buffer {path}: {describe_error(exc)}") from exc
        except schema.SchemaTooNew as exc:
            await writer.close()
            await reader.close()
            raise BufferStoreError(f"cannot open the buffer {path}: {exc}") from exc
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
            # Only a new file takes it (an existing one keeps its page size).
            conn.execute(f"PRAGMA page_size = {NEW_FILE_PAGE_SIZE}")
            clean = self._clean_mark.take()
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if clean:
                self._check_deferred = True  # closed cleanly by us: checked after opening
            else:
                problems = _quick_check(conn)
                if problems != ["ok"]:
                    raise _Corrupt("; ".join(problems))
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            # Debian's SQLite zeroes deleted content (SECURE_DELETE), writing every page a
            # delete frees once more; FAST zeroes only on pages written anyway.
            conn.execute("PRAGMA secure_delete = FAST")
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
        """Let the appends already handed over commit, then close both connections (the
        writer thread runs them in order). Safe to call twice."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._flush_acks()  # acks still waiting for an append: committed before the end
        self._closing = True
        if self._check_task is not None:
            self._check_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check_task
        # Exact written totals after a clean stop; a failing file (disk full) goes without.
        with contextlib.suppress(BufferStoreError, sqlite3.Error):
            await self._writer.call(self._record_written)
        await self._writer.close()  # after the appends handed over: one thread, in order
        await self._reader.close()
        if self.integrity_problem is None:
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

    # -- appending ---------------------------------------------------------------------

    async def append(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> list[Unstorable]:
        """Store events (one pending delivery per destination) and rule state in one
        durable commit. Returns once committed; an id already stored is ignored. Returns
        what was left out for its own data (see the module docstring), usually nothing."""
        return await self.submit(rows, state)

    def submit(
        self, rows: Sequence[EventRow], state: Mapping[str, str] | None = None
    ) -> asyncio.Future[list[Unstorable]]:
        """``append`` without waiting: the commit starts in the writer thread now; get its
        future. For a caller that goes on working while the commit runs (the engine
        pipelines its rounds). Raises BufferStoreError at once when the buffer is closed."""
        if self._closing:
            raise BufferStoreError(f"the buffer {self.path} is closed")
        rows, state = tuple(rows), dict(state or {})
        loop = asyncio.get_running_loop()
        if not rows and not state:
            nothing: asyncio.Future[list[Unstorable]] = loop.create_future()
            nothing.set_result([])
            return nothing
        self.commits += 1
        waiting = self._take_waiting_acks()
        if not waiting:
            return self._writer.submit(partial(self._store, rows, state, None))
        acks = self._acks_of(waiting)
        both = self._writer.submit(partial(self._store_with_acks, rows, state, acks))
        appended: asyncio.Future[list[Unstorable]] = loop.create_future()

        def settle(
            done: asyncio.Future[
                tuple[list[Unstorable] | BufferStoreError, BufferStoreError | None]
            ],
        ) -> None:
            error = done.exception()
            if error is not None:  # not one of the two outcomes: everything failed
                _settle_all(waiting, error)
                appended.set_exception(error)
                return
            outcome, ack_error = done.result()
            _settle_all(waiting, ack_error)
            if isinstance(outcome, BufferStoreError):
                appended.set_exception(outcome)
            else:
                appended.set_result(outcome)

        both.add_done_callback(settle)
        return appended

    def _store_with_acks(
        self,
        rows: Sequence[EventRow],
        state: dict[str, str],
        acks: queries.Acks,
        conn: sqlite3.Connection,
    ) -> tuple[list[Unstorable] | BufferStoreError, BufferStoreError | None]:
        """An append with acks in its transaction (writer thread). When the append fails
        (a full disk; a full buffer holding only what must be kept) the acks are committed
        alone: they are what makes room. Returns how each went: what the append rejected
        (or its failure), and the acks' failure (None: committed)."""
        try:
            return self._store(rows, state, acks, conn), None
        except BufferStoreError as failed:
            try:
                self._ack_alone(acks, conn)
            except Exception as exc:
                return failed, BufferStoreError(f"ack in {self.path} failed: {describe_error(exc)}")
            return failed, None

    def _ack_alone(self, acks: queries.Acks, conn: sqlite3.Connection) -> None:
        """Acks in transactions of their own (writer thread), noting what they touched
        for prune_samples (unless they pruned it themselves)."""
        for dest, seqs in acks.items:
            _, high = queries.ack_tx(dest, seqs, conn, prune=acks.prune)
            if not acks.prune:
                self._note_delivered(min(seqs), high)

    def _store(
        self,
        rows: Sequence[EventRow],
        state: dict[str, str],
        acks: queries.Acks | None,
        conn: sqlite3.Connection,
    ) -> list[Unstorable]:
        """The append's transaction (writer thread). Rows and state keys whose own data
        fails are found, left out and counted; any other failure fails the append."""
        try:
            try:
                self._stored(rows, self.capacity.store(rows, state, conn, acks=acks), conn)
                return []
            except _DATA_ERRORS:
                rejected = _unstorable(rows, state, conn)
                if not rejected:
                    raise  # not one row's doing: fail the append as a whole
            bad_rows = {id(r.row) for r in rejected if r.row is not None}
            bad_keys = {r.state_key for r in rejected if r.state_key is not None}
            kept = [row for row in rows if id(row) not in bad_rows]
            stored = self.capacity.store(
                kept,
                {k: v for k, v in state.items() if k not in bad_keys},
                conn,
                rejected=_by_type(rejected),
                acks=acks,
            )
            self._stored(kept, stored, conn)
        except Exception as exc:
            message = f"append to the buffer {self.path} failed: {describe_error(exc)}"
            raise BufferStoreError(message) from exc
        self._log_rejected(rejected)
        return rejected

    def _stored(
        self,
        rows: Sequence[EventRow],
        outcome: tuple[int, list[tuple[int, int]]],
        conn: sqlite3.Connection,
    ) -> None:
        """After an append committed (writer thread): count it, note the seq ranges its
        acks touched, and the samples it stored without a destination: they are done with
        at once (prune_samples)."""
        stored, ranges = outcome
        if self._sample_retention != 0:
            for low, high in ranges:
                self._note_delivered(low, high)
        self._stored_since_record += stored
        if stored and any(row.type == SAMPLE and not row.destinations for row in rows):
            found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            top = int(found.fetchone()[0])
            self._note_delivered(top - sum(row.samples for row in rows) + 1, top)

    def _log_rejected(self, rejected: Sequence[Unstorable]) -> None:
        for item in rejected[:REJECTED_LOGGED]:
            if item.row is not None:
                log.error(
                    "event cannot be stored; dropped (counted as rejected) id=%s type=%s "
                    "key=%s error=%s path=%s",
                    _printable(item.row.id),
                    _printable(item.row.type),
                    _printable(item.row.key),
                    item.reason,
                    self.path,
                )
            else:
                log.error(
                    "rule state cannot be stored; left out key=%s error=%s path=%s",
                    _printable(item.state_key),
                    item.reason,
                    self.path,
                )
        if len(rejected) > REJECTED_LOGGED:
            log.error(
                "more of the same append could not be stored; left out rejected=%d path=%s",
                len(rejected) - REJECTED_LOGGED,
                self.path,
            )

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
        return await self._read(
            partial(
                queries.claim, sql, params, limit, after_seq, frozenset(exclude_keys), self._blocks
            ),
            "claim",
        )

    async def ack(self, destination: str, seqs: Sequence[int]) -> None:
        """Mark delivered (pending or dead rows; delivered ones stay as they are). With
        ``keep_samples(0)``, the samples among them that are now delivered everywhere are
        deleted in the same transaction."""
        if not seqs:
            return
        if self._ack_wait:
            done = asyncio.get_running_loop().create_future()
            self._waiting_acks.append((destination, tuple(seqs), done))
            if sum(len(s) for _, s, _ in self._waiting_acks) >= MAX_WAITING_ACKS:
                self._flush_acks()  # a backlog streams: commit them now (and resend few)
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(
                    self._ack_wait, self._flush_acks
                )
            await done
            return
        acks = queries.Acks([(destination, seqs)], self._sample_retention == 0)
        await self._write(partial(self._ack_alone, acks), "ack")

    def ack_with_appends(self, wait: float) -> None:
        """From now on an ack waits up to ``wait`` seconds for the next append and is
        committed in its transaction (one commit instead of two: each commit writes whole
        pages; docs/buffer.md, "The flash budget"); with no append by then, alone. 0: each
        ack commits at once (the default)."""
        self._ack_wait = wait
        if not wait:
            self._flush_acks()  # no append will come for those waiting

    @property
    def acks_wait_for_appends(self) -> bool:
        """Whether an ack may wait for the next append (ack_with_appends)."""
        return bool(self._ack_wait)

    def _acks_of(
        self, waiting: Sequence[tuple[str, tuple[int, ...], asyncio.Future[None]]]
    ) -> queries.Acks:
        return queries.Acks(
            [(dest, seqs) for dest, seqs, _ in waiting], self._sample_retention == 0
        )

    def _take_waiting_acks(self) -> list[tuple[str, tuple[int, ...], asyncio.Future[None]]]:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        waiting, self._waiting_acks = self._waiting_acks, []
        return waiting

    def _flush_acks(self) -> None:
        """The timer: acks no append took, committed alone (event loop thread)."""
        waiting = self._take_waiting_acks()  # (cancels the timer, when not this call)
        if not waiting:
            return
        acks = self._acks_of(waiting)
        if self._closing:
            _settle_all(waiting, BufferStoreError(f"the buffer {self.path} is closed"))
            return
        self.commits += 1
        alone = self._writer.submit(partial(self._ack_alone, acks))

        def settle(done: asyncio.Future[None]) -> None:
            error = done.exception()
            if error is not None and not isinstance(error, BufferStoreError):
                error = BufferStoreError(f"buffer {self.path}: ack failed: {describe_error(error)}")
            _settle_all(waiting, error)

        alone.add_done_callback(settle)

    def keep_samples(self, seconds: float | None) -> None:
        """How long delivered samples are kept (``sample_retention``). 0: each ack deletes
        the samples it completes, in its own transaction: pages freed and filled again
        while they are still in the WAL cost the least (docs/buffer.md). Otherwise (and
        None: the default) ``prune_samples`` deletes them."""
        self._sample_retention = seconds

    async def record_failure(self, destination: str, seqs: Sequence[int], error: str) -> None:
        """A failed attempt at pending deliveries: attempts += 1, last_error = error."""
        if seqs:
            await self._write(
                partial(queries.failure_tx, destination, seqs, error), "record failure"
            )

    async def dead_letter(self, destination: str, reasons: Mapping[int, str]) -> None:
        """Pending deliveries become dead with their reason; the queue moves on."""
        if reasons:
            await self._write(
                partial(queries.dead_tx, destination, dict(reasons), self._blocks), "dead-letter"
            )

    async def requeue(
        self, destination: str | None = None, seqs: Sequence[int] | None = None
    ) -> int:
        """Dead deliveries back to pending (attempts reset): all of them, one
        destination's, or the given seqs. Returns how many."""
        return await self._write(partial(queries.requeue_tx, destination, seqs), "requeue")

    async def prune(
        self, delivered_before: float, samples_delivered_before: float | None = None
    ) -> int:
        """The full pass: delete events buffered and delivered everywhere before
        ``delivered_before`` (samples: before ``samples_delivered_before`` when given).
        Events with a dead or pending delivery stay. Goes over the whole file in chunks of
        PRUNE_CHUNK seqs, a transaction each. Returns how many were deleted."""
        samples = delivered_before if samples_delivered_before is None else samples_delivered_before
        span = await self._read(queries.seq_range, "prune")
        if span is None:
            return 0
        start, top = span[0] - 1, span[1]
        removed = 0
        while start < top:
            chunk = partial(queries.prune_tx, delivered_before, samples, start, start + PRUNE_CHUNK)
            removed += await self._write(chunk, "prune")
            start += PRUNE_CHUNK
        return removed

    async def prune_samples(self, delivered_before: float) -> int:
        """The sample_retention pass: delete the samples buffered and delivered everywhere
        (or stored with no destination) before ``delivered_before``, looking only at the
        seq ranges acknowledged since the last pass (noted at each ack), in transactions
        of SAMPLE_PRUNE_CHUNK samples so that appends go in between. A sample another
        destination still waits for stays, and goes after that destination's ack. Returns
        how many were deleted."""
        removed = 0
        for low, high in self._take_delivered(delivered_before):
            start = low - 1
            while start < high:
                chunk = partial(
                    queries.prune_samples_tx, delivered_before, start, high, SAMPLE_PRUNE_CHUNK
                )
                gone, last = await self._write(chunk, "prune samples")
                removed += gone
                if last is None:
                    break
                start = last
        return removed

    def _note_delivered(self, low: int, high: int) -> None:
        """A seq range just acknowledged (any thread): prune_samples looks at it once it is
        older than sample_retention."""
        now = time.time()
        with self._delivered_lock:
            ranges = self._delivered
            if ranges:
                at, last_low, last_high = ranges[-1]
                if now - at < RANGE_MERGE_SECONDS and low <= last_high + 1 and high >= last_low - 1:
                    ranges[-1] = (now, min(low, last_low), max(high, last_high))
                    return
            ranges.append((now, low, high))
            if len(ranges) > DELIVERED_RANGES:
                ranges.popleft()  # the hourly full pass prunes what it held

    def _take_delivered(self, before: float) -> list[tuple[int, int]]:
        """The ranges noted before ``before``, taken out, merged and in seq order."""
        taken = []
        with self._delivered_lock:
            while self._delivered and self._delivered[0][0] < before:
                _, low, high = self._delivered.popleft()
                taken.append((low, high))
        merged: list[tuple[int, int]] = []
        for low, high in sorted(taken):
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
            else:
                merged.append((low, high))
        return merged

    @property
    def written_bytes(self) -> int | None:
        """What this process sent to the disk since the buffer opened (the buffer is what
        the agent writes): /proc/self/io, see buffer.diskio. Never decreases. None when
        the kernel does not say."""
        now = diskio.written_bytes()
        if now is None or self._written_base is None:
            return None
        self._written_high = max(self._written_high, now - self._written_base)
        return self._written_high

    async def record_written(self) -> None:
        """Add what was written since the last call to the counters in the file (for
        `floorgate buffer stats`), at most every RECORD_WRITTEN_EVERY seconds: a small
        transaction of its own. Also done at close."""
        if time.monotonic() - self._recorded_at >= RECORD_WRITTEN_EVERY:
            self._recorded_at = time.monotonic()
            await self._write(self._record_written, "record written bytes")

    def _record_written(self, conn: sqlite3.Connection) -> None:
        """Writer thread: the counters in the file, brought up to date."""
        written = self.written_bytes
        if written is None:
            return
        recorded, since = self._recorded
        seconds = int(time.monotonic() - since)  # whole seconds; the rest waits for next time
        if written == recorded and not self._stored_since_record:
            return
        queries.record_written_tx(written - recorded, seconds, self._stored_since_record, conn)
        self._recorded = (written, since + seconds)
        self._stored_since_record = 0

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
                partial(
                    queries.replay_tx,
                    destination,
                    since,
                    until,
                    start,
                    start + queries.CHUNK,
                    self._blocks,
                ),
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
        return await self._read(partial(queries.show, ident, self._blocks), "show")

    # -- plumbing ----------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        return await self._run(self._reader, fn, doing)

    async def _write(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        self.commits += 1
        return await self._run(self._writer, fn, doing)

    async def _run(self, worker: _Worker, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        if self._closing:
            raise BufferStoreError(f"the buffer {self.path} is closed")
        try:
            return await worker.call(fn)
        except sqlite3.Error as exc:
            message = f"buffer {self.path}: {doing} failed: {describe_error(exc)}"
            raise BufferStoreError(message) from exc
        except blocks.UNREADABLE as exc:  # a sample block it cannot read
            raise BufferStoreError(f"buffer {self.path}: {doing} failed: {exc}") from exc


def _by_type(rejected: Sequence[Unstorable]) -> Counter[str]:
    """The events left out, by type (a block counts its samples)."""
    found: Counter[str] = Counter()
    for item in rejected:
        if item.row is not None:
            found[_printable(item.row.type)] += item.row.samples
    return found


def _settle_all(
    waiting: Sequence[tuple[str, tuple[int, ...], asyncio.Future[None]]],
    error: BaseException | None,
) -> None:
    """Tell the callers of acks that waited for a commit how it went (a caller that was
    cancelled meanwhile is past caring; its acks were committed all the same)."""
    for _, _, done in waiting:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


# -- rows that cannot be stored (writer thread) ---------------------------------------------


def _unstorable(
    rows: Sequence[EventRow], state: dict[str, str], conn: sqlite3.Connection
) -> list[Unstorable]:
    """The rows and state keys that fail alone, each tried in a savepoint of one
    transaction that is rolled back: nothing is written. Runs only after an append failed
    on its data, so only then does each row cost a statement of its own."""
    found: list[Unstorable] = []
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            reason = _fails(conn, partial(queries.insert_events, conn, [row], now))
            if reason is not None:
                found.append(Unstorable(reason, row=row))
        for key, value in state.items():
            reason = _fails(conn, partial(queries.upsert_state, conn, {key: value}))
            if reason is not None:
                found.append(Unstorable(reason, state_key=key))
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return found


def _fails(conn: sqlite3.Connection, attempt: Callable[[], object]) -> str | None:
    """Why ``attempt`` fails on its data, or None (undone either way)."""
    conn.execute("SAVEPOINT probe")
    try:
        attempt()
    except _DATA_ERRORS as exc:
        return describe_error(exc)
    except sqlite3.OperationalError as exc:
        if not is_full(exc):
            raise  # the disk, not the data: the append fails as a whole
        # No room for it here: the bound or the disk, not its data (Capacity.store decides).
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO probe")
            conn.execute("RELEASE probe")
        else:  # SQLite gave up the whole transaction (it may on SQLITE_FULL)
            conn.execute("BEGIN IMMEDIATE")
    return None


def _printable(value: object) -> str:
    """For logs and counter names: a str as it is, with what UTF-8 cannot carry escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(value)
