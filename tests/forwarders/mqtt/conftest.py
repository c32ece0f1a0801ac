"""Fixtures: a real Mosquitto on a free loopback port, a real SQLite buffer, and the
MQTT forwarder running under the shared delivery loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config.models import AgentSection
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.forwarders.mqtt.config import MqttDestinationConfig
from agent.forwarders.mqtt.forwarder import MqttForwarder
from agent.monitoring.status import DestinationHealth
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
from tests.forwarders.mqtt.broker import Mosquitto

DEST = "broker"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker")
    await mosquitto.start()
    try:
        yield mosquitto
    finally:
        await mosquitto.stop()


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    buf = await SqliteBuffer.open(tmp_path / "buffer.db")
    yield buf
    await buf.close()


def event_row(
    n: int, machine: str, type_: str = "sample", *, site: str = "plant", agent: str = "gw"
) -> EventRow:
    """A CloudEvent as the rule engine buffers it (ids time-ordered, sequence zero-padded)."""
    event_id = f"00000000-0000-7000-8000-{n:012d}"
    data: dict[str, Any]
    if type_ == "machine.state":
        data = {"machine": machine, "state": "running", "since": "2026-11-22T08:00:00Z"}
    else:
        data = {"machine": machine, "signal": "temperature", "value": n, "quality": "good"}
    payload = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/{site}/hall/line1/{machine}",
        "type": type_,
        "time": "2026-11-22T08:00:00Z",
        "datacontenttype": "application/json",
        "sequence": f"{n:020d}",
        "agentid": agent,
        "data": data,
    }
    return EventRow(event_id, type_, machine, payload["time"], orjson.dumps(payload), (DEST,))


def mqtt_config(port: int, **keys: Any) -> MqttDestinationConfig:
    return MqttDestinationConfig.model_validate(
        {
            "name": DEST,
            "type": "mqtt",
            "host": "127.0.0.1",
            "port": port,
            "connect_timeout": "5s",
            "ack_timeout": "10s",
            "retry": {"initial": "50ms", "max": "500ms"},
            **keys,
        }
    )


@dataclass
class Running:
    loop: DeliveryLoop
    health: DestinationHealth
    wake: asyncio.Event
    task: asyncio.Task[None]

    def check(self) -> None:
        if self.task.done():  # a crashed loop fails the test with its own error
            self.task.result()


@contextlib.asynccontextmanager
async def delivering(
    buffer: SqliteBuffer,
    config: MqttDestinationConfig,
    agent: AgentSection | None = None,
    fatal_pause: float = 600.0,
) -> AsyncIterator[Running]:
    """The forwarder under the real delivery loop, cancelled (clean close) on exit."""
    forwarder = MqttForwarder(config, agent or AgentSection(id="gw", site="plant"))
    health = DestinationHealth(name=config.name, type="mqtt")
    wake = asyncio.Event()
    settings = DeliverySettings(
        batch_size=config.batch_size, retry=config.retry, fatal_pause=fatal_pause
    )
    loop = DeliveryLoop(forwarder, buffer, settings, health, wake)
    task = asyncio.create_task(loop.run())
    try:
        yield Running(loop, health, wake, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def pending(buffer: SqliteBuffer) -> int:
    stats = await buffer.stats()
    dest = stats.destinations.get(DEST)
    return dest.pending if dest else 0


async def wait_drained(buffer: SqliteBuffer, running: Running, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while await pending(buffer) > 0:
            running.check()
            await asyncio.sleep(0.05)
