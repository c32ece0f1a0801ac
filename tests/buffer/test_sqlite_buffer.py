"""SqliteBuffer on real SQLite files: append, claim, ack, dead letters, state, stats,
corruption, rows that cannot be stored. Bounds and a full disk: test_bounds.py."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from buffer import BufferStoreError, EventRow, SqliteBuffer

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
    buf = await SqliteBuffer.open(tmp_path / "state" / "buffer.db")
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


async def test_concurrent_appends_each_commit_whole_in_the_order_they_came(
    tmp_path: Path,
) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        results = await asyncio.gather(
            *(buf.append(rows(i * 10, 10), {f"appender-{i}": str(i)}) for i in range(50))
        )
        assert results == [[]] * 50  # nothing rejected
        claimed = await buf.claim("a", 1000)
        assert [int(e.id) for e in claimed] == list(range(500))  # one after another, in order
        assert len(await buf.load_state()) == 50
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
    with pytest.raises(BufferStoreError, match="closed"):
        await buf.append(rows(0, 1))
    with pytest.raises(BufferStoreError, match="closed"):
        await buf.claim("a", 1)


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
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
    with pytest.raises(BufferStoreError, match="newer"):
        await SqliteBuffer.open(path)
    assert path.exists()


def unstorable_rows() -> list[EventRow]:
    """Rows whose own data SQLite or the encoding refuses, the same at every retry."""
    return [
        # A lone surrogate (what decoding bad bytes with surrogateescape leaves): not
        # valid UTF-8, so the JSON document of the batch cannot be written.
        EventRow("bad-key", "sample", "m1\udc80", "2025-01-01T00:00:00+00:00", b"{}", ("a",)),
        # The same in a destination's name: the batch's routes cannot be written.
        EventRow("bad-route", "sample", "m1", "t", b"{}", ("a", "b\udc80")),
        # A payload that is not bytes cannot be compressed (buffer/payloads.py).
        EventRow("bad-payload", "sample", "m1", "t", "{}", ("a",)),  # type: ignore[arg-type]
    ]


async def test_rows_that_cannot_be_stored_are_rejected_counted_and_the_rest_committed(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = unstorable_rows()
    with caplog.at_level(logging.ERROR, logger="floorgate.buffer"):
        rejected = await buffer.append(
            [*rows(0, 2), bad[0], *rows(2, 1), bad[1], bad[2], *rows(3, 1)], {"seq": "4"}
        )
    assert [r.row for r in rejected] == bad
    assert "surrogates not allowed" in rejected[0].reason
    assert "surrogates not allowed" in rejected[1].reason
    assert "a bytes-like object is required, not 'str'" in rejected[2].reason
    assert all(r.state_key is None for r in rejected)
    # The others and the rule state went in, in one commit, in their order.
    assert [int(e.id) for e in await buffer.claim("a", 10)] == [0, 1, 2, 3]
    assert await buffer.load_state() == {"seq": "4"}
    stats = await buffer.stats()
    assert stats.events == 4 and stats.destinations["a"].pending == 4
    assert stats.dropped == {("rejected", "sample"): 3}  # counted in the file
    assert counted(buffer.path) == {("a", "pending"): 4}
    logged = [r.getMessage() for r in caplog.records if "cannot be stored" in r.getMessage()]
    assert len(logged) == 3
    assert "id=bad-key" in logged[0] and "key=m1\\udc80" in logged[0]
    assert "id=bad-route" in logged[1] and "id=bad-payload" in logged[2]
    # The next appends are not held up by them.
    assert await buffer.append(rows(4, 2)) == []
    assert len(await buffer.claim("a", 10)) == 6


async def test_an_append_of_nothing_but_bad_rows_stores_only_its_state(
    buffer: SqliteBuffer,
) -> None:
    rejected = await buffer.append(unstorable_rows()[:1], {"k": "v"})
    assert len(rejected) == 1
    assert await buffer.claim("a", 10) == []
    assert await buffer.load_state() == {"k": "v"}
    assert (await buffer.stats()).dropped == {("rejected", "sample"): 1}


async def test_a_state_key_that_cannot_be_stored_is_left_out(buffer: SqliteBuffer) -> None:
    rejected = await buffer.append(rows(0, 2), {"good": "1", "bad\udc80": "2"})
    assert [(r.row, r.state_key) for r in rejected] == [(None, "bad\udc80")]
    assert await buffer.load_state() == {"good": "1"}
    assert len(await buffer.claim("a", 10)) == 2
    assert (await buffer.stats()).dropped == {}  # no event was lost


async def test_concurrent_appends_with_a_bad_row_do_not_affect_each_other(
    buffer: SqliteBuffer,
) -> None:
    bad = EventRow("bad", "sample", "m1", "t", object(), ("a",))  # type: ignore[arg-type]
    results = await asyncio.gather(
        buffer.append(rows(0, 2)),
        buffer.append([bad]),
        buffer.append(rows(2, 2)),
    )
    assert results[0] == [] and results[2] == []
    assert [r.row for r in results[1]] == [bad]
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
