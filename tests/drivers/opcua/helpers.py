"""Helpers shared by the OPC UA tests: a driver running against a simulator, collecting
what it delivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from drivers.base import Quality, Sample
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.driver import OpcUaDriver
from floorgate_demo.opcua_sim import node_ids


def source_config(endpoint: str, **overrides: Any) -> OpcUaConfig:
    """An OPC UA source with every signal of the simulated line (nsu= node ids)."""
    signals = [{"name": name, "node_id": node} for name, node in node_ids().items()]
    data: dict[str, Any] = {
        "type": "opcua",
        "name": "line-opcua",
        "endpoint": endpoint,
        "publishing_interval": "100ms",
        "poll_interval": "200ms",
        "timeout": "5s",
        "watchdog_interval": "5s",
        "backoff_max": "1s",
        "signals": signals,
    }
    data.update(overrides)
    return OpcUaConfig.model_validate(data)


class Collector:
    """The sink: keeps every batch, and the latest good value per signal."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.latest: dict[str, Sample] = {}

    async def __call__(self, batch: Sequence[Sample]) -> None:
        self.samples.extend(batch)
        for sample in batch:
            self.latest[sample.signal] = sample

    def good(self, signal: str) -> list[Sample]:
        return [s for s in self.samples if s.signal == signal and s.quality is Quality.GOOD]


@contextlib.asynccontextmanager
async def running(
    config: OpcUaConfig, state_dir: Path | None = None
) -> AsyncIterator[tuple[OpcUaDriver, Collector]]:
    driver = OpcUaDriver(config, state_dir=state_dir or Path("/nonexistent-state"))
    collector = Collector()
    task = asyncio.create_task(driver.run(collector))
    try:
        yield driver, collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled() or task.exception() is None


class FreezingProxy:
    """A TCP relay between the driver and the server that can go silent without closing
    anything: what a half-dead network path or a hung server looks like from the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.frozen.is_set():
            return  # accepted, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # hold the bytes: the path is dead
                sink.write(data)
                await sink.drain()
        sink.close()

    def thaw_and_drop(self) -> None:
        """The path recovers: frozen connections are closed, new ones are relayed."""
        self.frozen.clear()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.thaw_and_drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
