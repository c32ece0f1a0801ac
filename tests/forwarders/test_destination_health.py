"""A destination behind a silent network shows in health while its request hangs, not
only when the request's timeout fires (issue 15).

Real parts throughout: a TCP server on 127.0.0.1 that accepts and reads but never
writes (from the sending end, a WAN that drops packets without a reset), the agent
with its real delivery loop, forwarder and SQLite buffer in tmp_path, and /readyz and
/metrics read over HTTP. The servers here are shared with the other
test_destination_health_* files.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from agent.config.models import FloorgateConfig
from agent.service.runtime import Agent
from buffer.rows import EventRow
from tests.helpers import free_port, line_config

OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _TcpServer:
    """A raw TCP server on 127.0.0.1 whose connection handlers are cancelled on exit."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.requests = 0  # HTTP requests read whole

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client gave up, or the test is over
        finally:
            self._handlers.discard(task)
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match:
            await reader.readexactly(int(match.group(1)))
        self.requests += 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class SilentServer(_TcpServer):
    """Accepts, reads every request and never writes — until ``answer()``: from then on
    each request (the one held included) gets 200 ``{}``."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._answering = asyncio.Event()

    def answer(self) -> None:
        self._answering.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self.read_request(reader)
            await self._answering.wait()
            writer.write(OK_ANSWER)
            await writer.drain()


class ResettingServer(_TcpServer):
    """Accepts, reads the request, then resets the connection (SO_LINGER 0: an RST, not
    a FIN), as a crashing server or a firewall dropping the session does."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the request (HTTP) or CONNECT packet (MQTT) is out
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.requests += 1


def event_row(n: int, destination: str) -> EventRow:
    event_id = f"00000000-0000-7000-8000-{n:012d}"
    payload = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/plant/area/line/press1",
        "type": "sample",
        "time": "2026-11-22T08:00:00Z",
        "sequence": f"{n:020d}",
        "agentid": "gw-test",
        "data": {"machine": "press1", "signal": "t", "value": n, "quality": "good"},
    }
    time_ = str(payload["time"])
    return EventRow(event_id, "sample", "press1", time_, orjson.dumps(payload), (destination,))


def agent_config(tmp_path: Path, destination: dict[str, Any]) -> FloorgateConfig:
    """The test line with one destination. Its Modbus source points at a closed port: it
    stays disconnected (well within health.source_down_after), so the overall status
    is ok unless the destination makes it otherwise."""
    data = line_config(tmp_path / "state", free_port(), "http://127.0.0.1:9/e", 0)
    data["destinations"] = [destination]
    return FloorgateConfig.model_validate(data)


async def readyz(agent: Agent) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{agent.health_port}/readyz", timeout=5)
    result: dict[str, Any] = response.json()
    return result


async def metric(agent: Agent, name: str, destination: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{agent.health_port}/metrics")).text
    match = re.search(rf'^{name}{{destination="{destination}"}} (\S+)$', text, re.M)
    assert match, f"{name} missing"
    return float(match.group(1))


async def wait_for_report(agent: Agent, condition: Any, what: str) -> dict[str, Any]:
    """Poll /readyz until ``condition(report)``, bounded; returns that report."""
    report: dict[str, Any] = {}
    async with asyncio.timeout(20):
        while True:
            report = await readyz(agent)
            if condition(report):
                return report
            await asyncio.sleep(0.05)
    del what  # named for readers of a failing test's traceback


IN_FLIGHT = re.compile(r"^destination (\w+): request in flight for [\d.]+ s \(limit 0\.5 s\)$")


def slow_destinations(report: dict[str, Any]) -> list[str]:
    """The destinations a reason calls slow, in the words the issue asks for."""
    return [m.group(1) for r in report["reasons"] if (m := IN_FLIGHT.match(r))]


async def test_a_silent_server_turns_readyz_degraded_while_the_request_hangs(
    tmp_path: Path,
) -> None:
    async with SilentServer() as server:
        config = agent_config(
            tmp_path,
            {
                "name": "middleware",
                "type": "http",
                "url": f"{server.url}/events",
                "timeout": "30s",
                "slow_after": "500ms",
                "retry": {"initial": "100ms", "max": "500ms"},
            },
        )
        agent = Agent(config)
        await agent.start()
        try:
            before = await readyz(agent)
            assert before["status"] == "ok", before["reasons"]
            assert agent.buffer is not None
            await agent.buffer.append([event_row(1, "middleware")])

            def hanging(report: dict[str, Any]) -> bool:
                return bool(report["status"] == "degraded")

            report = await wait_for_report(agent, hanging, "degraded while the POST hangs")
            dest = report["destinations"]["middleware"]
            # The request is still in flight: nothing failed, no timeout fired, no retry.
            assert server.requests == 1
            assert dest["state"] == "degraded"
            assert dest["last_error"] is None and dest["next_retry_in_s"] is None
            assert dest["request_in_flight_s"] > 0.5 and dest["slow_after_s"] == 0.5
            assert report["ready"] is True  # degraded, not failing: /readyz still 200
            assert slow_destinations(report) == ["middleware"]
            assert len(report["reasons"]) == 1  # the only thing wrong
            in_flight = "floorgate_destination_request_in_flight_seconds"
            assert await metric(agent, in_flight, "middleware") > 0.5
            assert await metric(agent, "floorgate_destination_up", "middleware") == 0

            server.answer()  # the network heals: the held request gets its answer

            def delivered(report: dict[str, Any]) -> bool:
                dest = report["destinations"]["middleware"]
                # >= 1: the rule engine may have buffered events of its own for it
                return bool(report["status"] == "ok" and dest["delivered"] >= 1)

            report = await wait_for_report(agent, delivered, "ok once the answer came")
            dest = report["destinations"]["middleware"]
            assert dest["state"] == "connected" and dest["request_in_flight_s"] is None
            assert report["reasons"] == []
            assert await metric(agent, "floorgate_destination_up", "middleware") == 1
        finally:
            await agent.stop()


async def test_a_connect_that_hangs_counts_as_a_request_in_flight(tmp_path: Path) -> None:
    """Odoo's connect talks to the server (version, login, context): on a silent network
    the destination, still starting, turns degraded too."""
    key = tmp_path / "odoo-key"
    key.write_text("key\n")
    agent: Agent | None = None
    try:
        # The server goes before the agent stops: the hung connect then fails at once,
        # and the stop does not wait for a destination that looks as if it answered.
        async with SilentServer() as server:
            config = agent_config(
                tmp_path,
                {
                    "name": "odoo",
                    "type": "odoo",
                    "url": server.url,
                    "database": "prod",
                    "api_key": {"file": str(key)},
                    "slow_after": "500ms",
                },
            )
            agent = Agent(config)
            await agent.start()

            def hanging(report: dict[str, Any]) -> bool:
                return bool(report["status"] == "degraded")

            report = await wait_for_report(agent, hanging, "degraded while connecting")
            dest = report["destinations"]["odoo"]
            assert server.requests == 1  # GET /web/version, never answered
            assert dest["state"] == "degraded" and dest["last_error"] is None
            assert dest["request_in_flight_s"] > 0.5
            assert slow_destinations(report) == ["odoo"]
            assert len(report["reasons"]) == 1
    finally:
        if agent is not None:
            await agent.stop()
