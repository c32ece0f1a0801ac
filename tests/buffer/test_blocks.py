"""Sample blocks in the buffer (buffer.blocks): each sample of a block is claimed, acked,
retried, dead-lettered, shown, replayed, evicted and counted as if it were a row of its
own, with the id, seq and bytes it had when it was made."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from buffer import BufferStoreError, SqliteBuffer, blocks
from buffer.operator import OperatorBuffer
from tests.buffer.blockrows import T0, BlockMaker, kept_counts, real_counts


def counters_match(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert kept_counts(conn) == real_counts(conn)
    finally:
        conn.close()


async def test_a_block_is_one_row_and_its_samples_come_back_as_made(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(40)
    buf = await SqliteBuffer.open(path)
    try:
        assert await buf.append([made.row], made.state) == []
        claimed = await buf.claim("a", 100)
        stats = await buf.stats()
    finally:
        await buf.close()
    assert [e.id for e in claimed] == made.ids
    assert [e.payload for e in claimed] == made.payloads  # byte for byte
    assert [orjson.loads(e.payload)["data"]["machine"] for e in claimed] == [e.key for e in claimed]
    seqs = [e.seq for e in claimed]
    assert seqs == list(range(seqs[0], seqs[0] + 40))
    assert {e.type for e in claimed} == {"sample"}
    assert stats.events == 40 and stats.destinations["a"].pending == 40
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert conn.execute("SELECT seq FROM events").fetchone()[0] == seqs[-1]
    finally:
        conn.close()
    counters_match(path)


async def test_a_block_is_claimed_in_batches_and_acked_piece_by_piece_across_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    maker = BlockMaker()
    first, second = maker.block(30), maker.block(10)
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([first.row], first.state)
        await buf.append([second.row], second.state)
        batch = await buf.claim("a", 12)
        assert [e.id for e in batch] == first.ids[:12]
        following = await buf.claim("a", 12, after_seq=batch[-1].seq)  # pipelined claim
        assert [e.id for e in following] == first.ids[12:24]
        # Delivered out of order and in part: every other sample of the first batch.
        await buf.ack("a", [e.seq for e in batch[::2]])
        stats = await buf.stats()
        assert stats.destinations["a"].pending == 34
        assert stats.destinations["a"].delivered == 6
    finally:
        await buf.close()
    counters_match(path)
    buf = await SqliteBuffer.open(path)  # what was acked is kept; the rest is claimed again
    try:
        again = await buf.claim("a", 100)
        assert [e.id for e in again] == [*first.ids[1:12:2], *first.ids[12:], *second.ids]
        assert [e.payload for e in again[-10:]] == second.payloads
        await buf.ack("a", [e.seq for e in again])
        assert await buf.claim("a", 100) == []
        stats = await buf.stats()
        assert stats.destinations["a"].pending == 0
        assert stats.destinations["a"].delivered == 40
        assert await buf.prune(time.time() + 1) == 40
        assert (await buf.stats()).events == 0
    finally:
        await buf.close()
    counters_match(path)


async def test_destinations_settle_a_block_each_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(20, ("a", "b"))
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        await buf.ack("a", [e.seq for e in await buf.claim("a", 100)])
        to_b = await buf.claim("b", 5)
        await buf.ack("b", [e.seq for e in to_b])
        assert await buf.prune(time.time() + 1) == 0  # b still waits for 15
        stats = await buf.stats()
        assert (stats.destinations["a"].pending, stats.destinations["a"].delivered) == (0, 20)
        assert (stats.destinations["b"].pending, stats.destinations["b"].delivered) == (15, 5)
        assert [e.id for e in await buf.claim("b", 100)] == made.ids[5:]
        assert await buf.claim("a", 100) == []
    finally:
        await buf.close()
    counters_match(path)


async def test_claims_leave_out_the_excluded_machines_samples(tmp_path: Path) -> None:
    made = BlockMaker().block(10, machines=("m1", "m2"))
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        await buf.append([made.row], made.state)
        claimed = await buf.claim("a", 100, exclude_keys={"m1"})
    finally:
        await buf.close()
    assert [e.id for e in claimed] == made.ids[1::2]
    assert {e.key for e in claimed} == {"m2"}


async def test_a_failed_attempt_counts_for_the_block_and_shows_as_retrying(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(10)
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        batch = await buf.claim("a", 4)
        await buf.ack("a", [batch[0].seq])
        await buf.record_failure("a", [e.seq for e in batch[1:]], "HTTP 503")
        again = await buf.claim("a", 100)
    finally:
        await buf.close()
    assert [e.id for e in again] == made.ids[1:]
    assert {e.attempts for e in again} == {1}
    with OperatorBuffer(path) as op:
        assert op.retrying("a") == 9  # the samples not yet settled
        shown = op.show(made.ids[3])
    assert shown is not None
    (delivery,) = shown.deliveries
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "HTTP 503")


async def test_a_refused_sample_becomes_a_dead_letter_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(8, ("a", "b"))
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        claimed = await buf.claim("a", 100)
        poison = claimed[3]
        await buf.dead_letter("a", {poison.seq: "HTTP 422: unknown signal"})
        await buf.ack("a", [e.seq for e in claimed if e is not poison])
        (letter,) = await buf.dead_letters()
        assert (letter.id, letter.destination, letter.type, letter.key) == (
            made.ids[3],
            "a",
            "sample",
            poison.key,
        )
        assert letter.reason == "HTTP 422: unknown signal"
        stats = await buf.stats()
        assert (stats.destinations["a"].pending, stats.destinations["a"].dead) == (0, 1)
        assert stats.destinations["a"].delivered == 7
        counters_match(path)
        shown = await buf.show(made.ids[3])
        assert shown is not None and shown.payload == made.payloads[3]
        assert {d.destination: d.status for d in shown.deliveries} == {"a": "dead", "b": "pending"}
        # b takes the whole block, the refused sample too, from the block.
        assert [e.id for e in await buf.claim("b", 100)] == made.ids
    finally:
        await buf.close()
    with OperatorBuffer(path) as op:  # the operator names it by the id it was sent with
        assert op.requeue("a", made.ids[3]) == 1
    buf = await SqliteBuffer.open(path)
    try:
        (again,) = await buf.claim("a", 100)
        assert (again.id, again.payload) == (made.ids[3], made.payloads[3])
        await buf.ack("a", [again.seq])
        assert (await buf.stats()).destinations["a"].delivered == 8
    finally:
        await buf.close()
    counters_match(path)


async def test_a_purged_dead_sample_shows_no_delivery_for_its_destination(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(4, ("a", "b"))
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        claimed = await buf.claim("a", 100)
        await buf.dead_letter("a", {claimed[1].seq: "HTTP 422"})
        assert await buf.purge_dead("a") == 1
        shown = await buf.show(made.ids[1])
    finally:
        await buf.close()
    assert shown is not None
    assert [(d.destination, d.status) for d in shown.deliveries] == [("b", "pending")]
    counters_match(path)


async def test_show_finds_a_sample_by_its_id_or_seq(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(6)
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        claimed = await buf.claim("a", 2)
        await buf.ack("a", [claimed[0].seq])
    finally:
        await buf.close()
    with OperatorBuffer(path) as op:
        by_id = op.show(made.ids[0])
        by_seq = op.show(str(claimed[1].seq))
        assert op.show(made.row.id) is None  # the block's own id names no event
        assert op.show(made.ids[0][:-4] + "0007") is None  # beyond the block
    assert by_id is not None and by_seq is not None
    assert (by_id.id, by_id.payload, by_id.key) == (made.ids[0], made.payloads[0], claimed[0].key)
    assert [d.status for d in by_id.deliveries] == ["delivered"]
    assert (by_seq.id, [d.status for d in by_seq.deliveries]) == (made.ids[1], ["pending"])
    assert by_id.time == T0.isoformat()


async def test_replay_sends_again_the_samples_of_its_time_range(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    made = BlockMaker().block(12)  # 4 poll times, 250 ms apart, 3 samples each
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([made.row], made.state)
        await buf.ack("a", [e.seq for e in await buf.claim("a", 100)])
    finally:
        await buf.close()
    since = made.payloads[3]  # the second poll's time ...
    since_time = orjson.loads(since)["time"]
    until_time = orjson.loads(made.payloads[9])["time"]  # ... until the fourth's (exclusive)
    with OperatorBuffer(path) as op:
        assert op.replay("a", since_time, until_time) == 6
    buf = await SqliteBuffer.open(path)
    try:
        again = await buf.claim("a", 100)
        assert [e.id for e in again] == made.ids[3:9]
        assert [e.payload for e in again] == made.payloads[3:9]
        await buf.ack("a", [e.seq for e in again])
        assert await buf.claim("a", 100) == []
    finally:
        await buf.close()
    counters_match(path)


async def test_max_age_and_max_size_count_the_samples_a_block_loses(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    maker = BlockMaker()
    old, new = maker.block(50, ("a", "b")), maker.block(5, ("a",))
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([old.row], old.state)
        await buf.ack("a", [e.seq for e in await buf.claim("a", 30)])
        await buf.ack("b", [e.seq for e in await buf.claim("b", 50)])
        await buf.append([new.row], new.state)
        assert await buf.expire(time.time() + 1) == 20 + 5  # what a still waited for
        stats = await buf.stats()
    finally:
        await buf.close()
    assert stats.dropped == {("expired", "sample"): 25}
    assert stats.events == 0
    counters_match(path)


async def test_a_full_buffer_drops_whole_blocks_and_counts_their_samples(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    maker = BlockMaker()
    buf = await SqliteBuffer.open(path, max_size=256 * 1024)
    appended = 0
    try:
        for _ in range(300):  # ~600 KiB of blocks into 256 KiB
            made = maker.block(400)
            await buf.append([made.row], made.state)
            appended += 400
        stats = await buf.stats()
        assert buf.full
    finally:
        await buf.close()
    assert stats.dropped[("full", "sample")] > 0
    assert stats.events + stats.dropped[("full", "sample")] == appended
    assert stats.destinations["a"].pending == stats.events
    counters_match(path)


async def test_a_block_without_its_heads_is_an_error_not_garbage(tmp_path: Path) -> None:
    made = BlockMaker().block(3)
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        await buf.append([made.row])  # the heads were not committed
        with pytest.raises(BufferStoreError, match=r"head \d+, which the file lacks"):
            await buf.claim("a", 10)
    finally:
        await buf.close()


def test_sample_ids_name_their_block() -> None:
    block = blocks.block_id("0190f3c2-7a6b-7c4e-9d1a-3b5e8f2a4c6d")
    assert block.endswith("0000")
    ids = [blocks.sample_id(block, i) for i in (0, 1, blocks.MAX_SAMPLES - 1)]
    assert ids == [block[:-4] + "0001", block[:-4] + "0002", block[:-4] + "ffff"]
    assert [blocks.parse_sample_id(i) for i in ids] == [
        (block, 0),
        (block, 1),
        (block, blocks.MAX_SAMPLES - 1),
    ]
    assert blocks.parse_sample_id(block) is None
    assert blocks.parse_sample_id("42") is None
    with pytest.raises(ValueError, match="1 to 65535"):
        blocks.encode(1, [])


def test_sample_times_compare_as_sqlite_compares_row_times() -> None:
    """Replay selects rows by SQLite's julianday() and block samples by julian_day(): the
    two must agree to the bit, half milliseconds included."""
    rng = random.Random(5)
    base = blocks.time_us(T0)
    times = [base + rng.randrange(0, 10**12) for _ in range(3000)]
    times += [t - t % 1000 + 500 for t in times[:1500]]  # exactly half a millisecond
    conn = sqlite3.connect(":memory:")
    try:
        for at_us in times:
            text = blocks.iso(at_us).isoformat()
            (expected,) = conn.execute("SELECT julianday(?)", (text,)).fetchone()
            assert blocks.julian_day(at_us) == expected, text
    finally:
        conn.close()
