"""SqliteBuffer.ack_with_appends: an ack waits for the next append and is committed in
its transaction (one commit where there were two), or alone when no append comes in
time, when the append fails, or when the buffer closes. Against a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from buffer import BufferStoreError, EventRow, SqliteBuffer
from tests.buffer.blockrows import BlockMaker


def counts(n: int, first: int, destination: str = "a") -> list[EventRow]:
    return [
        EventRow(
            f"c{first + i:06d}",
            "production.count",
            "m1",
            "2026-12-02T09:00:00+00:00",
            b"y" * 600,
            (destination,),
        )
        for i in range(n)
    ]


async def test_an_ack_rides_in_the_next_append(tmp_path: Path) -> None:
    maker = BlockMaker()
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        buf.ack_with_appends(30.0)  # never alone within this test
        made = maker.block(20)
        await buf.append([made.row], made.state)
        claimed = await buf.claim("a", 100)
        ack = asyncio.ensure_future(buf.ack("a", [e.seq for e in claimed[:15]]))
        await asyncio.sleep(0.2)
        assert not ack.done()  # waiting for an append
        assert (await buf.stats()).destinations["a"].delivered == 0
        commits = buf.commits
        more = maker.block(5)
        await buf.append([more.row], more.state)
        await asyncio.wait_for(ack, 5)
        assert buf.commits == commits + 1  # one transaction for both
        stats = await buf.stats()
        assert (stats.destinations["a"].delivered, stats.destinations["a"].pending) == (15, 10)
        assert [e.id for e in await buf.claim("a", 100)] == [*made.ids[15:], *more.ids]
    finally:
        await buf.close()


async def test_an_ack_no_append_takes_is_committed_alone_in_time(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        buf.ack_with_appends(0.2)
        await buf.append(counts(4, 0))
        claimed = await buf.claim("a", 10)
        await asyncio.wait_for(buf.ack("a", [claimed[0].seq]), 5)
        assert (await buf.stats()).destinations["a"].delivered == 1
    finally:
        await buf.close()


async def test_a_close_commits_the_acks_still_waiting(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    buf.ack_with_appends(30.0)
    await buf.append(counts(3, 0))
    claimed = await buf.claim("a", 10)
    ack = asyncio.ensure_future(buf.ack("a", [e.seq for e in claimed]))
    await asyncio.sleep(0)
    await buf.close()
    await asyncio.wait_for(ack, 5)
    buf = await SqliteBuffer.open(path)
    try:
        assert await buf.claim("a", 10) == []
    finally:
        await buf.close()


async def test_acks_are_committed_even_when_the_append_they_wait_for_fails(
    tmp_path: Path,
) -> None:
    """A full buffer holding only counts refuses appends; the acks that would make room
    must not fail with them."""
    buf = await SqliteBuffer.open(tmp_path / "b.db", max_size=128 * 1024)
    try:
        buf.ack_with_appends(30.0)
        first = 0
        with pytest.raises(BufferStoreError, match="max_size"):
            while True:
                await buf.append(counts(20, first))
                first += 20
        claimed = await buf.claim("a", 10)
        ack = asyncio.ensure_future(buf.ack("a", [e.seq for e in claimed]))
        await asyncio.sleep(0)
        with pytest.raises(BufferStoreError, match="max_size"):
            await buf.append(counts(400, first))
        await asyncio.wait_for(ack, 5)  # committed alone
        stats = await buf.stats()
        assert stats.destinations["a"].delivered == 10
        assert [e.id for e in await buf.claim("a", 1)] == [f"c{10:06d}"]
    finally:
        await buf.close()


async def test_a_cancelled_ack_is_still_committed(tmp_path: Path) -> None:
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        buf.ack_with_appends(30.0)
        await buf.append(counts(3, 0))
        claimed = await buf.claim("a", 10)
        ack = asyncio.ensure_future(buf.ack("a", [claimed[0].seq]))
        await asyncio.sleep(0)
        ack.cancel()  # the delivery loop stopping
        await buf.append(counts(1, 3))
        assert [e.id for e in await buf.claim("a", 10)] == ["c000001", "c000002", "c000003"]
    finally:
        await buf.close()


async def test_turning_it_off_commits_the_acks_waiting(tmp_path: Path) -> None:
    """The agent stopping: its engine made the last append, so acks may not wait."""
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        buf.ack_with_appends(30.0)
        await buf.append(counts(3, 0))
        claimed = await buf.claim("a", 10)
        ack = asyncio.ensure_future(buf.ack("a", [e.seq for e in claimed]))
        await asyncio.sleep(0)
        assert buf.acks_wait_for_appends
        buf.ack_with_appends(0)
        await asyncio.wait_for(ack, 5)
        assert not buf.acks_wait_for_appends
        assert (await buf.stats()).destinations["a"].delivered == 3
        await asyncio.wait_for(buf.ack("a", []), 5)  # and the next ones commit at once
    finally:
        await buf.close()
