"""The buffer inside the running agent: a corrupt file (agent process), a full disk and
the size bound (agent in this process, so the test can take the disk's room away)."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import load_config
from agent.monitoring.metrics import make_registry, render
from agent.monitoring.report import health_report
from agent.service.runtime import Agent
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import free_port, line_config, readyz, start_agent, wait_until, write_config


async def stop_agent(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, 30)


@pytest.mark.slow
async def test_agent_moves_a_corrupt_buffer_aside_reports_it_and_keeps_working(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    garbage = b"\x00\x13 this is not a database \xff" * 4096
    (state / "buffer.db").write_bytes(garbage)
    health_port = free_port()
    log = tmp_path / "agent.log"
    async with (
        SimulatorServer(SimulatedLine(seed=11), tick=0.05) as simulator,
        EventReceiver() as receiver,
    ):
        await simulator.start_tcp(port=0)
        config = write_config(
            tmp_path / "config.yaml",
            line_config(state, simulator.port, receiver.url, health_port),
        )
        agent = start_agent(config, log)
        try:
            report: dict[str, Any] = {}

            def reported() -> bool:
                nonlocal report
                report = readyz(health_port) or {}
                return bool(report.get("buffer", {}).get("corrupt_moved_to"))

            await wait_until(reported, 60, "readyz up")
            moved = Path(report["buffer"]["corrupt_moved_to"])
            assert moved.parent == state and moved.name.startswith("buffer.db.corrupt-")
            assert await asyncio.to_thread(moved.read_bytes) == garbage  # kept for a person
            assert any(str(moved) in reason for reason in report["reasons"])
            await wait_until(lambda: len(receiver.events) >= 5, 60, "events delivered")
            later = readyz(health_port)
            assert later is not None and later["status"] == "degraded"  # says so while it runs
            assert later["buffer"]["writable"] is True
            assert await stop_agent(agent) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                await asyncio.to_thread(agent.wait, 30)
    conn = sqlite3.connect(state / "buffer.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


async def limit_file_growth(agent: Agent, pages: int | None) -> None:
    """Take the disk's room away (None) or give it back. SQLite reports a file that cannot
    grow with SQLITE_FULL, the result code a real ENOSPC gives, while the file is far below
    the agent's max_size: the same path as a really full disk from there on."""
    assert agent.buffer is not None

    def limit(conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {current if pages is None else pages}")

    await agent.buffer._writer.call(limit)


@pytest.mark.slow
async def test_full_disk_holds_events_in_memory_reports_it_and_recovers(tmp_path: Path) -> None:
    async with (
        SimulatorServer(SimulatedLine(seed=13), tick=0.05) as simulator,
        EventReceiver() as receiver,
    ):
        await simulator.start_tcp(port=0)
        raw = line_config(tmp_path / "state", simulator.port, receiver.url, 0)
        raw["health"] = {"enabled": False}
        config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
        agent = Agent(config)
        await agent.start()
        try:
            assert agent.engine is not None
            engine = agent.engine
            await wait_until(lambda: len(receiver.events) >= 3, 60, "events flowing")
            await limit_file_growth(agent, None)
            await wait_until(
                lambda: engine.health.commit_failing_since is not None, 60, "commit fails"
            )
            await wait_until(lambda: engine.health.pending_events > 0, 60, "events held")
            report = health_report(agent)
            assert report["status"] == "failing" and report["buffer"]["writable"] is False
            assert any("disk is full" in reason for reason in report["reasons"])
            assert report["buffer"]["memory_pending_events"] > 0
            assert report["buffer"]["dropped"] == {}  # a full disk drops nothing
            assert agent.running and engine.health.running  # nothing crashed
            delivered = len(receiver.events)
            await limit_file_growth(agent, 1 << 30)  # room again
            await wait_until(lambda: engine.health.commit_failing_since is None, 60, "recovers")
            await wait_until(lambda: len(receiver.events) > delivered, 60, "delivers again")
            assert health_report(agent)["buffer"]["writable"] is True
        finally:
            await agent.stop()
    assert receiver.conflicts == 0


async def test_metrics_count_what_the_size_bound_dropped(tmp_path: Path) -> None:
    """A small max_size at the agent level: the scrape says how many samples went."""
    from buffer import EventRow

    async with (
        SimulatorServer(SimulatedLine(seed=17), tick=0.05) as simulator,
        EventReceiver() as receiver,
    ):
        await simulator.start_tcp(port=0)
        raw = line_config(tmp_path / "state", simulator.port, receiver.url, 0)
        raw["health"] = {"enabled": False}
        raw["buffer"] = {"max_size": "1MiB"}
        raw["destinations"][0]["event_types"] = ["machine.state", "production.count"]
        config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
        agent = Agent(config)
        await agent.start()
        try:
            assert agent.buffer is not None
            # A backlog of samples for a destination that is not connected fills the file.
            big = random.Random(2000).randbytes(2000)  # incompressible: it must fill the file
            for n in range(100):
                await agent.buffer.append(
                    [
                        EventRow(f"fill-{n:03d}-{i:02d}", "sample", "press1", "t", big, ("cloud",))
                        for i in range(10)
                    ]
                )
            agent.buffer_stats = await agent.buffer.stats()
            dropped = agent.buffer_stats.dropped[("full", "sample")]
            assert dropped > 0
            text = render(make_registry(agent)).decode()
            expected = (
                'floorgate_buffer_dropped_events_total{reason="full",type="sample"} '
                f"{float(dropped)}"
            )
            assert expected in text
            assert "floorgate_buffer_full 1.0" in text
            assert health_report(agent)["status"] in ("degraded", "failing")
            assert any("buffer full" in r for r in health_report(agent)["reasons"])
            await wait_until(lambda: len(receiver.events) >= 3, 60, "counts still delivered")
        finally:
            await agent.stop()


async def test_events_held_in_memory_stay_bounded_while_the_disk_is_full(tmp_path: Path) -> None:
    """Only sample heartbeats keep coming while nothing commits: beyond the limit the
    oldest held samples go (counted), states and counts stay."""
    from agent.pipeline.engine import RuleEngine
    from buffer import EventRow, SqliteBuffer

    raw = line_config(tmp_path / "state", 1, "http://127.0.0.1:1/", 0)
    config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
    buffer = await SqliteBuffer.open(config.buffer_path)
    try:
        engine = RuleEngine(config, buffer)

        def made(n: int, event_type: str) -> EventRow:
            return EventRow(f"held-{n:06d}", event_type, "press1", "t", b"{}", ("middleware",))

        counts = [made(n, "production.count") for n in range(5)]
        engine._rows = [*counts, *(made(n, "sample") for n in range(5, 10_105))]
        await buffer._writer.call(
            lambda conn: conn.execute(
                f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}"
            )
        )
        await engine._commit(final=True)  # fails: the disk is full
        assert engine.health.commit_failing_since is not None
        assert len(engine._rows) == 10_000 and engine.health.pending_events == 10_000
        assert engine._rows[:5] == counts  # states and counts are kept
        assert engine._rows[5].id == "held-000110"  # the oldest 105 samples went
        assert engine.health.held_samples_dropped == 105
        await buffer._writer.call(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        await engine._commit(final=True)
        assert engine.health.commit_failing_since is None and engine._rows == []
        assert (await buffer.stats()).events == 10_000
    finally:
        await buffer.close()


async def test_agent_prunes_by_retention_and_expires_by_max_age(tmp_path: Path) -> None:
    from buffer import EventRow, SqliteBuffer

    state = tmp_path / "state"
    buffer = await SqliteBuffer.open(state / "buffer.db")
    try:

        def old(n: int, destination: str) -> EventRow:
            return EventRow(f"old-{n}", "production.count", "press1", "t", b"{}", (destination,))

        await buffer.append([old(n, "middleware") for n in range(5)])
        await buffer.append([old(n, "retired") for n in range(5, 8)])
        delivered = await buffer.claim("middleware", 10)
        await buffer.ack("middleware", [e.seq for e in delivered])
    finally:
        await buffer.close()
    conn = sqlite3.connect(state / "buffer.db")
    with conn:  # ten days ago
        conn.execute("UPDATE events SET created = created - 864000")
        conn.execute("UPDATE deliveries SET updated = updated - 864000")
    conn.close()
    async with (
        SimulatorServer(SimulatedLine(seed=19), tick=0.05) as simulator,
        EventReceiver() as receiver,
    ):
        await simulator.start_tcp(port=0)
        raw = line_config(state, simulator.port, receiver.url, 0)
        raw["health"] = {"enabled": False}
        raw["buffer"] = {"retention": "1d", "max_age": "2d"}
        config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
        agent = Agent(config)
        await agent.start()
        try:
            assert agent.buffer is not None
            buf = agent.buffer

            async def gone() -> bool:
                return all([await buf.show(f"old-{n}") is None for n in range(8)])

            async with asyncio.timeout(60):
                while not await gone():
                    await asyncio.sleep(0.1)
            stats = await buf.stats()
            assert stats.dropped == {("expired", "production.count"): 3}
            assert "retired" not in {
                name for name, d in stats.destinations.items() if d.pending or d.dead
            }
        finally:
            await agent.stop()
