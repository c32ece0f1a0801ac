"""SqliteBuffer on real SQLite files: append, claim, ack, dead letters, state, stats,
corruption. Bounds and a full disk: test_bounds.py."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from buffer import BufferError, EventRow, SqliteBuffer

ROOT = Path(__file__).resolve().parents[2]


def rows(
    start: int,
    count: int,
    destinations: tuple[str, ...] = ("a",),
    keys: Sequence[str] = ("m1",),
    payload: bytes = b"{}",
) -> list[EventRow]:
    return [
        EventRow(
            id=f"{n:012d}",
            type="sample",
            key=keys[n % len(keys)],
            time="2025-01-01T00:00:00+00:00",
            payload=payload,
            destinations=destinations,
        )
        for n in range(start, start + count)
    ]


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    buf = await SqliteBuffer.open(tmp_path / "state" / "buffer.db", commit_window=0.005)
    yield buf
    await buf.close()


def counted(path: Path) -> dict[tuple[str, str], int]:
    """Real row counts, to compare with the counters stats() reads."""
    conn = sqlite3.connect(path)
    try:
        return {
            (dest, status): n
            for dest, status, n in conn.execute(
                "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
            )
        }
    finally:
        conn.close()


async def test_append_claim_ack_round_trip(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 3))
    claimed = await buffer.claim("a", 10)
    assert [e.id for e in claimed] == ["000000000000", "000000000001", "000000000002"]
    assert claimed[0].payload == b"{}" and claimed[0].attempts == 0
    assert await buffer.claim("a", 10) == claimed  # a claim changes nothing
    await buffer.ack("a", [e.seq for e in claimed[:2]])
    assert [e.id for e in await buffer.claim("a", 10)] == ["000000000002"]


async def test_concurrent_appends_share_few_commits(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db", commit_window=0.05)
    try:
        await asyncio.gather(*(buf.append(rows(i * 10, 10)) for i in range(50)))
        assert buf.commits <= 3
        assert len(await buf.claim("a", 1000)) == 500
    finally:
        await buf.close()


async def test_a_lone_sequential_appender_does_not_wait_for_the_window(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db", commit_window=600.0)
    try:
        async with asyncio.timeout(60):  # ten appends would take 100 minutes if each waited
            for i in range(10):
                await buf.append(rows(i, 1))
        assert buf.commits == 10
    finally:
        await buf.close()


async def test_max_batch_splits_commits_without_splitting_an_append(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db", commit_window=600.0, max_batch=100)
    try:
        async with asyncio.timeout(60):  # full batches do not wait for the 600 s window
            await asyncio.gather(*(buf.append(rows(i * 25, 25)) for i in range(8)))
        assert buf.commits == 2  # 4 + 4 appends of 25 rows
        buf.commit_window = 0.01
        await asyncio.gather(*(buf.append(rows(200 + i * 30, 30)) for i in range(4)))
        assert buf.commits == 4  # 3 appends of 30 rows fit in 100, the fourth goes next
    finally:
        await buf.close()


async def test_fan_out_destinations_progress_independently(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 4, destinations=("a", "b")))
    a = await buffer.claim("a", 10)
    await buffer.ack("a", [e.seq for e in a])
    assert await buffer.claim("a", 10) == []
    assert [e.id for e in await buffer.claim("b", 10)] == [e.id for e in a]
    stats = await buffer.stats()
    assert (stats.destinations["a"].delivered, stats.destinations["a"].pending) == (4, 0)
    assert (stats.destinations["b"].delivered, stats.destinations["b"].pending) == (0, 4)


async def test_claim_is_in_seq_order_and_limited(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 5))
    await buffer.append(rows(5, 5))
    claimed = await buffer.claim("a", 7)
    assert [int(e.id) for e in claimed] == list(range(7))
    assert [e.seq for e in claimed] == sorted(e.seq for e in claimed)
    assert await buffer.claim("a", 0) == []


async def test_claim_after_seq_and_exclude_keys(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 9, keys=("m1", "m2", "m3")))
    first = await buffer.claim("a", 3)
    after = await buffer.claim("a", 3, after_seq=first[-1].seq)
    assert [int(e.id) for e in after] == [3, 4, 5]
    others = await buffer.claim("a", 10, exclude_keys={"m1", "m3"})
    assert [int(e.id) for e in others] == [1, 4, 7]
    assert {e.key for e in others} == {"m2"}


async def test_dead_letter_does_not_block_the_rest(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 3))
    head = (await buffer.claim("a", 1))[0]
    await buffer.record_failure("a", [head.seq], "timeout")
    await buffer.dead_letter("a", {head.seq: "422: unknown work center"})
    assert [int(e.id) for e in await buffer.claim("a", 10)] == [1, 2]
    [dead] = await buffer.dead_letters()
    assert (dead.seq, dead.id, dead.destination) == (head.seq, head.id, "a")
    assert dead.reason == "422: unknown work center"
    assert dead.attempts == 1 and dead.dead_at > 0
    assert await buffer.dead_letters("b") == []
    assert (await buffer.stats()).destinations["a"].dead == 1


async def test_record_failure_counts_attempts(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 2))
    seqs = [e.seq for e in await buffer.claim("a", 2)]
    await buffer.record_failure("a", seqs, "503")
    await buffer.record_failure("a", seqs[:1], "503")
    assert [e.attempts for e in await buffer.claim("a", 2)] == [2, 1]


async def test_requeue_all_one_destination_or_given_seqs(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 4, destinations=("a", "b")))
    seqs = [e.seq for e in await buffer.claim("a", 4)]
    await buffer.record_failure("a", seqs, "503")
    await buffer.dead_letter("a", {s: "bad" for s in seqs})
    await buffer.dead_letter("b", {s: "bad" for s in seqs})
    assert await buffer.requeue("a", seqs[:1]) == 1
    [back] = await buffer.claim("a", 10)
    assert back.seq == seqs[0] and back.attempts == 0
    assert await buffer.requeue("b") == 4
    assert await buffer.requeue() == 3
    assert await buffer.requeue() == 0
    assert len(await buffer.claim("a", 10)) == 4 and len(await buffer.claim("b", 10)) == 4
    stats = await buffer.stats()
    assert {d.dead for d in stats.destinations.values()} == {0}
    assert {d.pending for d in stats.destinations.values()} == {4}


async def test_prune_deletes_only_events_delivered_everywhere(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 4, destinations=("a", "b")))
    await buffer.append(rows(4, 1, destinations=()))  # stored for replay, no delivery
    seqs = [e.seq for e in await buffer.claim("a", 4)]
    await buffer.ack("a", seqs)
    await buffer.ack("b", seqs[:2])
    await buffer.dead_letter("b", {seqs[2]: "rejected"})
    assert await buffer.prune(time.time() - 3600) == 0  # delivered, but not before the cutoff
    assert await buffer.prune(time.time() + 1) == 3  # 0 and 1, plus the destination-less one
    assert [e.seq for e in await buffer.claim("b", 10)] == [seqs[3]]
    assert [d.seq for d in await buffer.dead_letters()] == [seqs[2]]
    stats = await buffer.stats()
    assert stats.events == 2
    assert (stats.destinations["a"].delivered, stats.destinations["b"].delivered) == (2, 0)
    assert counted(buffer.path) == {("a", "delivered"): 2, ("b", "dead"): 1, ("b", "pending"): 1}


async def test_state_upserts_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await asyncio.gather(
        buf.append(rows(0, 1), {"press": "1", "seq": "1"}),
        buf.append([], {"press": "2"}),  # state alone is fine; last value wins
    )
    await buf.append([], {"oven": "x"})
    await buf.close()
    buf = await SqliteBuffer.open(path)
    try:
        assert await buf.load_state() == {"press": "2", "seq": "1", "oven": "x"}
        assert len(await buf.claim("a", 10)) == 1
    finally:
        await buf.close()


async def test_duplicate_id_is_ignored(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 3))
    await buffer.append(rows(2, 3))  # 2 again, then 3 and 4
    await buffer.append([*rows(5, 1), *rows(5, 1)])  # twice in one append
    claimed = await buffer.claim("a", 10)
    assert [int(e.id) for e in claimed] == [0, 1, 2, 3, 4, 5]
    assert [e.seq for e in claimed] == sorted({e.seq for e in claimed})
    stats = await buffer.stats()
    assert (stats.events, stats.destinations["a"].pending) == (6, 6)


async def test_stats_numbers(buffer: SqliteBuffer) -> None:
    assert (await buffer.stats()).destinations == {}
    before = time.time()
    await buffer.append(rows(0, 5, destinations=("a", "b")))
    seqs = [e.seq for e in await buffer.claim("a", 5)]
    await buffer.ack("a", seqs[:2])
    await buffer.dead_letter("a", {seqs[2]: "bad"})
    stats = await buffer.stats()
    a, b = stats.destinations["a"], stats.destinations["b"]
    assert stats.events == 5 and stats.size_bytes > 0
    assert (a.pending, a.dead, a.delivered) == (2, 1, 2)
    assert (b.pending, b.dead, b.delivered) == (5, 0, 0)
    assert a.last_delivered_at is not None and a.last_delivered_at >= before
    assert b.last_delivered_at is None
    assert a.oldest_pending_created is not None and a.oldest_pending_created >= before
    await buffer.ack("a", seqs[3:])
    assert (await buffer.stats()).destinations["a"].oldest_pending_created is None
    assert counted(buffer.path) == {
        ("a", "delivered"): 4,
        ("a", "dead"): 1,
        ("b", "pending"): 5,
    }


async def test_ack_of_a_dead_letter_counts_it_delivered(buffer: SqliteBuffer) -> None:
    await buffer.append(rows(0, 1))
    [event] = await buffer.claim("a", 1)
    await buffer.dead_letter("a", {event.seq: "bad"})
    await buffer.ack("a", [event.seq, event.seq])
    stats = (await buffer.stats()).destinations["a"]
    assert (stats.pending, stats.dead, stats.delivered) == (0, 0, 1)


async def test_append_after_close_raises(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    await buf.close()
    await buf.close()  # twice is fine
    with pytest.raises(BufferError, match="closed"):
        await buf.append(rows(0, 1))
    with pytest.raises(BufferError, match="closed"):
        await buf.claim("a", 1)


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path, commit_window=10.0)
    pending = asyncio.ensure_future(buf.append(rows(0, 3)))
    await asyncio.sleep(0)
    await buf.close()
    await pending
    buf = await SqliteBuffer.open(path)
    try:
        assert len(await buf.claim("a", 10)) == 3
    finally:
        await buf.close()


async def test_corrupt_file_is_moved_aside_and_a_fresh_buffer_works(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.append(rows(0, 10))
    await buf.close()
    path.write_bytes(b"\x5a\xa5 not a database " * 4096)
    buf = await SqliteBuffer.open(path)
    try:
        moved = buf.corrupt_moved_to
        assert moved is not None and moved.name.startswith("b.db.corrupt-")
        assert moved.read_bytes().startswith(b"\x5a\xa5 not a database")
        await buf.append(rows(0, 2))
        assert len(await buf.claim("a", 10)) == 2
    finally:
        await buf.close()


async def test_damaged_pages_fail_the_check_and_are_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.append(rows(0, 2000, payload=b"p" * 200))
    await buf.close()
    data = bytearray(path.read_bytes())
    data[8192:16384] = b"\xff" * 8192  # pages 3 and 4; the header stays valid
    path.write_bytes(bytes(data))
    buf = await SqliteBuffer.open(path)
    try:
        assert buf.corrupt_moved_to is not None
        assert (await buf.stats()).events == 0
    finally:
        await buf.close()


async def test_newer_schema_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(BufferError, match="newer"):
        await SqliteBuffer.open(path)
    assert path.exists()


async def test_a_bad_row_fails_only_its_own_append(buffer: SqliteBuffer) -> None:
    bad = EventRow("bad", "sample", "m1", "t", object(), ("a",))  # type: ignore[arg-type]
    results = await asyncio.gather(
        buffer.append(rows(0, 2)),
        buffer.append([bad]),
        buffer.append(rows(2, 2)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BufferError)
    assert [int(e.id) for e in await buffer.claim("a", 10)] == [0, 1, 2, 3]


async def test_open_rejects_unknown_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        await SqliteBuffer.open(tmp_path / "b.db", synchronous="off")


def test_an_unclosed_buffer_does_not_hang_exit(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from buffer import SqliteBuffer, EventRow\n"
        "async def main():\n"
        "    buf = await SqliteBuffer.open(Path(sys.argv[1]))\n"
        "    await buf.append([EventRow('1', 't', 'k', 't', b'{}', ('a',))])\n"
        "asyncio.run(main())\n"
    )
    path = tmp_path / "b.db"
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=ROOT, timeout=30, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    conn.close()
