"""The flash budget (docs/buffer.md): delivered samples pruned after sample_retention, the
rest after retention, a file that stops growing under a steady load, and the bytes the
agent writes shown by `floorgate buffer stats` and /metrics. Real SQLite files; the
kernel's write count comes from a stand-in /proc/self/io where a figure is asserted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.loader import load_config
from agent.config.problems import ConfigError
from agent.monitoring.metrics import make_registry, render
from agent.service.runtime import Agent
from buffer import EventRow, SqliteBuffer, diskio
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.buffer.test_bounds import check_counters
from tests.helpers import line_config, write_config

ROOT = Path(__file__).resolve().parents[2]
# A real sample event (330 bytes); its id varies like a real one (buffer/payloads.py
# compresses what every envelope repeats, not the id, the time and the value).
PAYLOAD = (
    b'{"specversion":"1.0","id":"%s","source":"/plant/area/line/tags003","type":"sample",'
    b'"time":"2026-12-02T07:03:%02d.%06dZ","datacontenttype":"application/json",'
    b'"sequence":"%020d","agentid":"test-plant","data":{"machine":"tags003",'
    b'"signal":"tag.%05d","value":%d.5,"quality":"good"}}'
)


def payload(n: int) -> bytes:
    event_id = hashlib.sha256(b"%d" % n).hexdigest()[:32].encode()
    return PAYLOAD % (event_id, n % 60, n * 7919 % 1_000_000, n, n % 1000, n * 31 % 997)


class Events:
    def __init__(self) -> None:
        self.n = 0

    def rows(self, count: int, event_type: str = "sample", to: tuple[str, ...] = ("a",)) -> list:
        made = []
        for _ in range(count):
            self.n += 1
            made.append(
                EventRow(
                    f"evt-{self.n:08d}",
                    event_type,
                    "m1",
                    "2026-01-01T00:00:00+00:00",
                    payload(self.n),
                    to,
                )
            )
        return made


def types_left(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    finally:
        conn.close()


def pages(path: Path) -> tuple[int, int]:
    """(pages of the database, of which free), as the file's readers see it."""
    conn = sqlite3.connect(path)
    try:
        total = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(total), int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def proc_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in /proc/self/io whose write_bytes the test sets."""
    path = tmp_path / "io"
    monkeypatch.setattr(diskio, "PROC_IO", path)
    yield path


def set_io(path: Path, write_bytes: int, cancelled: int = 0) -> None:
    path.write_text(
        f"rchar: 1\nwchar: {write_bytes}\nsyscr: 1\nsyscw: 1\nread_bytes: 0\n"
        f"write_bytes: {write_bytes}\ncancelled_write_bytes: {cancelled}\n"
    )


async def deliver_all(buf: SqliteBuffer, destination: str = "a") -> list[int]:
    acked = []
    while batch := await buf.claim(destination, 500):
        await buf.ack(destination, [e.seq for e in batch])
        acked += [e.seq for e in batch]
    return acked


async def test_delivered_samples_go_after_sample_retention_the_rest_after_retention(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    events = Events()
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append(events.rows(20))  # samples for a
        await buf.append(
            [
                *events.rows(1, "machine.state"),
                *events.rows(1, "production.count"),
                *events.rows(1, "alarm"),
            ]
        )
        both = events.rows(5, to=("a", "b"))  # b has not taken them yet
        await buf.append(both)
        dead = events.rows(1)
        await buf.append(dead)
        await buf.append(events.rows(3, to=()))  # no destination: done with at once
        claimed = await buf.claim("a", 100)
        dead_seq = next(e.seq for e in claimed if e.id == dead[0].id)
        await buf.dead_letter("a", {dead_seq: "400: refused"})
        await buf.ack("a", [e.seq for e in claimed if e.seq != dead_seq])
        await buf.append(events.rows(7))  # not delivered yet

        # Delivered, but not yet before the cutoff: nothing goes, and nothing is forgotten.
        assert await buf.prune_samples(time.time() - 3600) == 0
        assert types_left(path)["sample"] == 20 + 5 + 1 + 3 + 7

        assert await buf.prune_samples(time.time() + 1) == 20 + 3
        left = types_left(path)
        assert left == {"sample": 5 + 1 + 7, "machine.state": 1, "production.count": 1, "alarm": 1}
        assert [d.id for d in await buf.dead_letters()] == [dead[0].id]
        assert len(await buf.claim("a", 100)) == 7  # the undelivered ones are all there

        # b takes the shared ones: they go at the next pass.
        await deliver_all(buf, "b")
        assert await buf.prune_samples(time.time() + 1) == 5

        # The full pass: samples by their own cutoff, the rest by retention's.
        day = 86400.0
        assert await buf.prune(time.time() - day, time.time() + 1) == 0
        assert await buf.prune(time.time() + 1, time.time() + 1) == 3  # state, count, alarm
        assert types_left(path) == {"sample": 1 + 7}
        stats = await buf.stats()
        assert stats.events == 8
        assert stats.destinations["a"].pending == 7 and stats.destinations["a"].dead == 1
        assert stats.destinations["a"].delivered == 0  # every delivered one was pruned
        assert stats.destinations["b"].delivered == 0
        check_counters(path)
    finally:
        await buf.close()


async def test_with_sample_retention_0s_each_ack_deletes_the_samples_it_completes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    events = Events()
    buf = await SqliteBuffer.open(path)
    buf.keep_samples(0)
    try:
        only_a = events.rows(10)
        shared = events.rows(4, to=("a", "b"))
        count = events.rows(1, "production.count", to=("a", "b"))
        await buf.append([*only_a, *shared, *count])
        await deliver_all(buf, "a")
        assert types_left(path) == {"sample": 4, "production.count": 1}  # b waits for them
        claimed = await buf.claim("b", 10)
        refused = claimed[0].seq
        await buf.dead_letter("b", {refused: "400: refused"})
        await buf.ack("b", [e.seq for e in claimed[1:]])
        assert types_left(path) == {"sample": 1, "production.count": 1}  # a dead letter stays
        assert [d.seq for d in await buf.dead_letters()] == [refused]
        stats = await buf.stats()
        assert stats.events == 2
        assert (stats.destinations["a"].delivered, stats.destinations["b"].delivered) == (2, 1)
        assert stats.destinations["a"].last_delivered_at is not None
        check_counters(path)  # what stats() reads equals the rows left
    finally:
        await buf.close()


async def test_the_full_pass_prunes_samples_the_fast_one_never_saw(tmp_path: Path) -> None:
    """After a restart the acknowledged ranges are gone from memory: the hourly pass takes
    the delivered samples by sample_retention, and keeps the rest for retention."""
    path = tmp_path / "buffer.db"
    events = Events()
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([*events.rows(10), *events.rows(2, "production.count")])
        await deliver_all(buf)
    finally:
        await buf.close()
    buf = await SqliteBuffer.open(path)
    try:
        assert await buf.prune_samples(time.time() + 1) == 0  # nothing noted in this run
        assert await buf.prune(time.time() - 3600, time.time() + 1) == 10
        assert types_left(path) == {"production.count": 2}
    finally:
        await buf.close()


async def test_the_file_stops_growing_under_a_steady_append_and_delivery(tmp_path: Path) -> None:
    """Rounds of append, deliver, prune: the pages freed by the prune are filled again by
    the next rounds, so the database stops growing; without the prune it grows each round."""

    async def rounds(path: Path, prune: bool) -> list[int]:
        events = Events()
        counts = []
        buf = await SqliteBuffer.open(path)
        try:
            for _ in range(60):
                await buf.append(events.rows(200))
                await deliver_all(buf)
                if prune:
                    await buf.prune_samples(time.time() + 1)
                counts.append(pages(path)[0])
        finally:
            await buf.close()
        return counts

    pruned = await rounds(tmp_path / "pruned.db", prune=True)
    kept = await rounds(tmp_path / "kept.db", prune=False)
    assert max(pruned[10:]) == pruned[9]  # not one page more after the first rounds
    assert kept[-1] > 10 * pruned[-1]  # 60 rounds of samples, about 14 pages each
    total, free = pages(tmp_path / "pruned.db")
    assert free > 0 and free * 2 > total  # at rest, most of it is free pages


async def test_sample_retention_is_a_duration(tmp_path: Path) -> None:
    raw = line_config(tmp_path / "state", 5020, "http://127.0.0.1:9/events", 0)
    raw["buffer"] = {"sample_retention": "5m"}
    config = load_config(write_config(tmp_path / "ok.yaml", raw), environ={})
    assert config.buffer.sample_retention == 300.0
    assert config.buffer.retention == 7 * 86400.0
    del raw["buffer"]
    defaults = load_config(write_config(tmp_path / "default.yaml", raw), environ={})
    assert defaults.buffer.sample_retention == 0.0
    for wrong in ("-5m", "5", "soon"):
        raw["buffer"] = {"sample_retention": wrong}
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path / "bad.yaml", raw), environ={})
        message = str(caught.value)
        assert "buffer.sample_retention" in message
        assert "expected a duration with a unit such as" in message and repr(wrong) in message


async def test_written_bytes_are_kept_in_the_file_and_shown_by_stats(
    tmp_path: Path, proc_io: Path
) -> None:
    path = tmp_path / "buffer.db"
    events = Events()
    set_io(proc_io, 1_000_000)
    buf = await SqliteBuffer.open(path)
    try:
        assert buf.written_bytes == 0  # counted from the opening
        await buf.append(events.rows(100))
        set_io(proc_io, 1_500_000, cancelled=100_000)
        assert buf.written_bytes == 400_000
        set_io(proc_io, 1_400_000)  # cancelled pages of another process's: never backwards
        assert buf.written_bytes == 400_000
        await buf.record_written()  # less than a minute after opening: not yet
        assert (await buf.stats()).written_at is None
        set_io(proc_io, 1_600_000)
    finally:
        await buf.close()  # a clean stop records what was written
    stats_before_reopen = json.loads(cli("stats", "--db", str(path), "--json").stdout)
    written = stats_before_reopen["written"]
    assert written["bytes"] == 600_000 and written["events"] == 100
    assert written["bytes_per_event"] == 6000
    set_io(proc_io, 5_000_000)
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append(events.rows(50))
        set_io(proc_io, 5_300_000)
    finally:
        await buf.close()
    stats = await asyncio.to_thread(cli, "stats", "--db", str(path))
    assert "written to disk by the agent: 878.9 KiB in " in stats.stdout  # 900,000 bytes
    assert "5.9 KiB per event stored" in stats.stdout  # 6,000 bytes
    found = json.loads(cli("stats", "--db", str(path), "--json").stdout)
    assert found["written"]["bytes"] == 900_000 and found["written"]["events"] == 150
    assert found["wal_bytes"] + found["file_bytes"] == found["size_bytes"]
    assert 0 <= found["free_bytes"] <= found["file_bytes"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "buffer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


async def test_the_agent_prunes_delivered_samples_and_shows_what_it_writes(
    tmp_path: Path, proc_io: Path
) -> None:
    """The running agent (default sample_retention): its delivered samples leave the file
    within a few stats rounds while its delivered states and counts stay, and /metrics
    shows the bytes it writes (from the stand-in /proc/self/io) and its commits."""
    set_io(proc_io, 10_000)
    state = tmp_path / "state"
    async with (
        SimulatorServer(SimulatedLine(seed=23), tick=0.05) as simulator,
        EventReceiver() as receiver,
    ):
        await simulator.start_tcp(port=0)
        raw = line_config(state, simulator.port, receiver.url, 0)
        raw["health"] = {"enabled": False}
        config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
        agent = Agent(config)
        await agent.start()
        try:
            assert agent.buffer is not None
            db = agent.buffer.path

            def delivered_samples() -> int:
                return len([e for e in receiver.events if e["type"] == "sample"])

            async with asyncio.timeout(60):
                while delivered_samples() < 3 or len(receiver.events) < 10:
                    await asyncio.sleep(0.1)
                # Every sample delivered by now leaves the file; states and counts stay.
                delivered = {e["id"] for e in receiver.events if e["type"] == "sample"}
                while await asyncio.to_thread(stored_ids, db, delivered):
                    await asyncio.sleep(0.2)
            kept = await asyncio.to_thread(types_left, db)
            assert kept.get("production.count", 0) + kept.get("machine.state", 0) > 0
            set_io(proc_io, 25_000)
            text = render(make_registry(agent)).decode()
            samples = dict(
                line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
            )
            assert float(samples["floorgate_buffer_written_bytes_total"]) == 15_000
            assert float(samples["floorgate_buffer_commits_total"]) >= 3
            assert float(samples["floorgate_buffer_free_bytes"]) >= 0
        finally:
            await agent.stop()


def stored_ids(path: Path, ids: set[str]) -> int:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT count(*) FROM events WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(ids)),),
        ).fetchone()
        return int(found[0])
    finally:
        conn.close()
