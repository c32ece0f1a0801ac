"""Helpers shared by the OPC UA tests: a driver running against a simulator, collecting
what it delivers, and ways to make the server or the path misbehave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import nodeid_from_binary

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


PUBLISH_REQUEST = ua.NodeId(ua.ObjectIds.PublishRequest_Encoding_DefaultBinary)
CREATE_SUBSCRIPTION = ua.NodeId(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)


class PublishHold:
    """Makes the asyncua servers of this test keep PublishRequests without answering them
    while every other request (Read, CreateSubscription, CloseSession…) is answered: a
    server whose publishing is wedged, behind a healthy TCP connection, secure channel and
    session. ``release()`` hands the held requests to the server as if they had just
    arrived, so a client still on that connection gets its answers.

    It wraps ``UaProcessor.process_message`` (asyncua 2.1: one processor per connection,
    called once per secure message), the only place that sees every request with its
    session; asyncua has no public switch for this. It also records, per server-side
    session, the CreateSubscription requests and the connection each session came on.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding = False
        self.sessions: list[str] = []  # server-side session ids, in order of first request
        self.connections: dict[str, UaProcessor] = {}  # session -> its connection
        self.subscriptions_created: dict[str, int] = {}  # session -> CreateSubscription count
        self._held: list[tuple[UaProcessor, Any, Buffer]] = []
        original = UaProcessor.process_message
        self._original = original
        hold = self

        async def process_message(processor: UaProcessor, seqhdr: Any, body: Buffer) -> Any:
            typeid = nodeid_from_binary(body.copy())  # peek: the body is read again below
            hold._record(processor, typeid)
            if hold.holding and typeid == PUBLISH_REQUEST:
                hold._held.append((processor, seqhdr, body))
                return True  # keep the connection; answer nothing
            return await original(processor, seqhdr, body)

        monkeypatch.setattr(UaProcessor, "process_message", process_message)

    def _record(self, processor: UaProcessor, typeid: ua.NodeId) -> None:
        if processor.session is None:
            return
        session = str(processor.session.session_id)
        if session not in self.connections:
            self.sessions.append(session)
            self.connections[session] = processor
        if typeid == CREATE_SUBSCRIPTION:
            self.subscriptions_created[session] = self.subscriptions_created.get(session, 0) + 1

    @property
    def held(self) -> int:
        return len(self._held)

    async def release(self) -> None:
        """Answer publishes again, starting with the held ones of connections still open."""
        self.holding = False
        held, self._held = self._held, []
        for processor, seqhdr, body in held:
            if not processor._transport.is_closing():
                await self._original(processor, seqhdr, body)
