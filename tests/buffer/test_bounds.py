"""The buffer's bounds on real SQLite files: max_size (samples go first, states, counts
and alarms are kept), max_age, and a really full disk (the append fails cleanly and
nothing is dropped)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from buffer import BufferStoreError, EventRow, SqliteBuffer

KiB = 1024
# Random bytes: the buffer compresses payloads (buffer/payloads.py), and these tests fill a
# bounded file, so each row must really take its thousand bytes.
PAYLOAD = random.Random(1000).randbytes(1000)


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def rows(self, types: list[str], destinations: tuple[str, ...] = ("a",)) -> list[EventRow]:
        made = []
        for event_type in types:
            self.n += 1
            made.append(
                EventRow(
                    id=f"{self.n:012d}",
                    type=event_type,
                    key="m1",
                    time="2025-01-01T00:00:00+00:00",
                    payload=PAYLOAD,
                    destinations=destinations,
                )
            )
        return made


def count_types(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    finally:
        conn.close()


def stored_ids(path: Path, event_type: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [i for (i,) in conn.execute("SELECT id FROM events WHERE type = ?", (event_type,))]
    finally:
        conn.close()


def check_counters(path: Path) -> None:
    """The counters stats() reads equal the real rows after evictions."""
    conn = sqlite3.connect(path)
    try:
        real = {
            (dest, status): n
            for dest, status, n in conn.execute(
                "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
            )
        }
        real["", "events"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        kept = {
            (dest, status): n
            for dest, status, n in conn.execute("SELECT destination, status, n FROM counters")
            if n and not status.startswith(("dropped:", "written:")) and status != "evicted"
        }
        assert kept == {k: v for k, v in real.items() if v}
    finally:
        conn.close()


async def test_full_buffer_drops_oldest_samples_and_keeps_every_count_and_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.db"
    ids = Ids()
    protected: list[str] = []
    buf = await SqliteBuffer.open(path, max_size=512 * KiB)
    try:
        with caplog.at_level(logging.INFO, logger="floorgate.buffer"):
            for _ in range(150):  # ~1.5 MB of events into 512 KiB: 3 times the bound
                batch = ids.rows(["sample"] * 8 + ["production.count", "machine.state"])
                protected += [r.id for r in batch if r.type != "sample"]
                await buf.append(batch)  # never fails while samples remain
        stats = await buf.stats()
        assert buf.full
    finally:
        await buf.close()
    assert path.stat().st_size <= 512 * KiB
    assert sorted(stored_ids(path, "production.count") + stored_ids(path, "machine.state")) == (
        sorted(protected)
    )
    samples = stored_ids(path, "sample")
    assert samples and samples == sorted(samples)
    assert samples[-1] == f"{ids.n - 2:012d}"  # the newest samples are kept, the oldest went
    dropped = stats.dropped[("full", "sample")]
    assert dropped == 150 * 8 - len(samples)  # every sample is stored or counted as dropped
    assert set(stats.dropped) == {("full", "sample")}
    assert stats.last_dropped_at is not None
    episode_logs = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(episode_logs) == 1  # logged once per episode, not per drop
    check_counters(path)


async def test_when_only_protected_events_remain_new_samples_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    ids = Ids()
    buf = await SqliteBuffer.open(path, max_size=256 * KiB)
    try:
        await buf.append(ids.rows(["sample"] * 20))
        counts: list[str] = []
        with pytest.raises(
            BufferStoreError, match=r"at its max_size .* only undelivered"
        ) as caught:
            for _ in range(1000):
                batch = ids.rows(["production.count", "alarm", "machine.state", "sample"])
                # A sample that takes more room than the rest of the batch (a block of
                # samples does): once no sample is left to drop, the protected events
                # still fit where it does not, whatever the file's page geometry.
                batch[-1] = batch[-1]._replace(payload=os.urandom(3000))
                await buf.append(batch)
                counts += [r.id for r in batch if r.type != "sample"]
        assert str(path) in str(caught.value)
        stats = await buf.stats()
        assert stored_ids(path, "sample") == []
        assert sorted(
            stored_ids(path, "production.count")
            + stored_ids(path, "alarm")
            + stored_ids(path, "machine.state")
        ) == sorted(counts)  # nothing protected was dropped; the failed append left nothing
        refused = stats.dropped.get(("refused", "sample"), 0)
        assert refused > 0
        # Each sample is stored or counted; the failed append is not stored (its caller holds it).
        assert stats.dropped[("full", "sample")] + refused == 20 + len(counts) // 3
        # Delivering and pruning makes room: everything is accepted again.
        claimed = await buf.claim("a", 10_000)
        await buf.ack("a", [e.seq for e in claimed])
        await buf.append(ids.rows(["production.count", "sample"]))
        assert count_types(path)["sample"] == 1  # delivered history made room
        check_counters(path)
    finally:
        await buf.close()


async def test_delivered_history_goes_before_any_undelivered_sample(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    ids = Ids()
    buf = await SqliteBuffer.open(path, max_size=512 * KiB)
    try:
        await buf.append(ids.rows(["sample"] * 300))
        claimed = await buf.claim("a", 1000)
        await buf.ack("a", [e.seq for e in claimed])  # delivered: kept only for replay
        for _ in range(30):
            await buf.append(ids.rows(["sample"] * 10))
        stats = await buf.stats()
        assert stats.evicted_delivered > 0
        assert stats.dropped == {}  # no undelivered event was lost
        assert stats.destinations["a"].pending == 300
        assert not buf.full
    finally:
        await buf.close()
    check_counters(path)


async def set_disk_room(buf: SqliteBuffer, pages: int | None) -> None:
    """Simulate a full disk: SQLite answers SQLITE_FULL when the file cannot grow, the same
    result code as for ENOSPC from the OS, while the buffer is far below its max_size."""

    def limit(conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {current if pages is None else pages}")

    await buf._writer.call(limit)


async def test_a_really_full_disk_fails_the_append_and_drops_nothing(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    ids = Ids()
    buf = await SqliteBuffer.open(path, max_size=1024**3)
    try:
        await buf.append(ids.rows(["sample"] * 50), {"n": "1"})
        await set_disk_room(buf, None)
        with pytest.raises(BufferStoreError, match="disk is full") as caught:
            for n in range(2, 100):
                await buf.append(ids.rows(["sample"] * 50 + ["production.count"]), {"n": str(n)})
        assert str(path) in str(caught.value)
        stats = await buf.stats()
        assert stats.dropped == {} and stats.evicted_delivered == 0 and not buf.full
        assert await buf.load_state() == {"n": str(n - 1)}  # the failed append left nothing
        assert stats.events == 50 + (n - 2) * 51
        await set_disk_room(buf, 1 << 30)  # space came back
        await buf.append(ids.rows(["production.count"]), {"n": "done"})
        assert await buf.load_state() == {"n": "done"}
    finally:
        await buf.close()


async def test_a_full_disk_fails_an_append_with_a_bad_row_whole_then_rejects_the_row_once(
    tmp_path: Path,
) -> None:
    """A full disk is not the data's fault: the append fails as a whole (the caller holds
    all of it, the bad row too) and nothing is counted; once there is room the bad row
    alone is left out, counted once."""
    path = tmp_path / "b.db"
    ids = Ids()
    buf = await SqliteBuffer.open(path, max_size=1024**3)
    try:
        await buf.append(ids.rows(["sample"] * 50), {"n": "1"})
        await set_disk_room(buf, None)
        with pytest.raises(BufferStoreError, match="disk is full"):
            for n in range(2, 100):
                good = ids.rows(["sample"] * 50 + ["production.count"])
                await buf.append(good, {"n": str(n)})
        bad = EventRow("bad", "alarm", "m1\udc80", "2025-01-01T00:00:00+00:00", b"{}", ("a",))
        held = [*good[:25], bad, *good[25:]]
        before = await buf.stats()
        with pytest.raises(BufferStoreError, match="disk is full"):
            await buf.append(held, {"n": str(n)})
        after = await buf.stats()
        assert after.events == before.events and after.dropped == {}  # nothing, not counted
        await set_disk_room(buf, 1 << 30)  # space came back: the held append again
        rejected = await buf.append(held, {"n": str(n)})
        assert [r.row for r in rejected] == [bad]
        stats = await buf.stats()
        assert stats.events == before.events + len(good)
        assert stats.dropped == {("rejected", "alarm"): 1}
        assert await buf.load_state() == {"n": str(n)}
    finally:
        await buf.close()
    check_counters(path)


async def test_expire_drops_only_undelivered_events_older_than_max_age(tmp_path: Path) -> None:
    ids = Ids()
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        await buf.append(ids.rows(["sample", "production.count", "alarm"], ("a", "b")))
        [first, *_] = await buf.claim("a", 10)
        for dest in ("a", "b"):
            await buf.ack(dest, [first.seq])  # delivered everywhere: retention's business
        cutoff = time.time() + 0.001
        await wait_for(lambda: time.time() > cutoff)
        await buf.append(ids.rows(["production.count"], ("a",)))
        assert await buf.expire(cutoff) == 2
        stats = await buf.stats()
        assert stats.dropped == {("expired", "production.count"): 1, ("expired", "alarm"): 1}
        assert [int(e.id) for e in await buf.claim("a", 10)] == [4]
        assert (await buf.show(first.id)) is not None
    finally:
        await buf.close()
    check_counters(tmp_path / "b.db")


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)
