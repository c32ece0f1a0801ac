"""A destination back from trouble: one INFO line says it recovered, health clears the
old error, and between failed attempts it never claims to be connected (issue 15).

The real delivery loop, HTTP forwarder and SQLite buffer against real HTTP servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config.common import RetryConfig
from agent.forwarders.http.config import HttpDestinationConfig
from agent.forwarders.http.forwarder import WebhookForwarder
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.monitoring.status import DestinationHealth, DestinationState
from buffer.sqlite import SqliteBuffer
from floorgate_demo.receiver import EventReceiver
from tests.forwarders.test_destination_health import event_row
from tests.helpers import free_port, wait_until

DEST = "mw"
C, R, D = DestinationState.CONNECTED, DestinationState.RETRYING, DestinationState.DISCONNECTED


@dataclass
class RecordingHealth(DestinationHealth):
    """DestinationHealth that keeps every state it was really put in, and counts the
    failures reported to it (each failed attempt sets a state with its error)."""

    states: list[DestinationState] = field(default_factory=list)
    failures: int = 0

    def set_state(self, state: DestinationState, error: str | None = None) -> bool:
        if error is not None:
            self.failures += 1
        changed = super().set_state(state, error)
        if changed:
            self.states.append(state)
        return changed


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    buf = await SqliteBuffer.open(tmp_path / "buffer.db")
    yield buf
    await buf.close()


def recovered_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("destination recovered") and r.levelno == logging.INFO
    ]


async def start_loop(buffer: SqliteBuffer, url: str, health: RecordingHealth) -> asyncio.Task[None]:
    config = HttpDestinationConfig.model_validate(
        {"name": DEST, "type": "http", "url": url, "timeout": "5s"}
    )
    loop = DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(batch_size=10, retry=RetryConfig(initial="10ms", max="50ms")),
        health,
        asyncio.Event(),
    )
    return asyncio.create_task(loop.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_recovery_after_retries_is_logged_once_and_clears_the_error(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="floorgate.forwarders")
    async with EventReceiver() as receiver:
        receiver.fail_next(503, times=3)
        await buffer.append([event_row(n, DEST) for n in range(1, 6)])
        health = RecordingHealth(name=DEST, type="http")
        task = await start_loop(buffer, receiver.url, health)
        try:
            await wait_until(lambda: health.delivered == 5 or task.done(), 20, "delivered")
            assert health.state is C and health.last_error is None
            # Sending on after the recovery is not another recovery.
            await buffer.append([event_row(n, DEST) for n in range(6, 9)])
            await wait_until(lambda: health.delivered == 8 or task.done(), 20, "more delivered")
        finally:
            await stop(task)
    assert health.states == [C, R, C]
    lines = recovered_lines(caplog)
    assert len(lines) == 1, lines
    assert f"destination={DEST} " in lines[0] and " attempts=3 " in lines[0]
    assert lines[0].endswith(" pending=0")  # the batch just delivered is not counted
    assert "after=" in lines[0]


async def test_an_unreachable_destination_stays_disconnected_until_a_send_goes_through(
    buffer: SqliteBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP's connect opens no socket: were a connect enough to say connected, health
    would flap connected/disconnected at every attempt and log a recovery each time."""
    caplog.set_level(logging.INFO, logger="floorgate.forwarders")
    port = free_port()  # nothing listens there yet: connection refused
    await buffer.append([event_row(n, DEST) for n in range(1, 4)])
    health = RecordingHealth(name=DEST, type="http")
    task = await start_loop(buffer, f"http://127.0.0.1:{port}/events", health)
    receiver = EventReceiver()
    try:
        await wait_until(lambda: health.failures >= 5 or task.done(), 20, "several attempts")
        assert health.state is D
        assert "cannot connect" in (health.last_error or "")
        await receiver.start(port=port)
        await wait_until(lambda: health.delivered == 3 or task.done(), 20, "delivered")
    finally:
        await stop(task)
        await receiver.stop()
    assert health.states == [C, D, C]  # the first connect, the trouble, the recovery
    assert health.last_error is None
    lines = recovered_lines(caplog)
    assert len(lines) == 1, lines
    attempts = int(lines[0].split(" attempts=")[1].split()[0])
    assert attempts >= 5
