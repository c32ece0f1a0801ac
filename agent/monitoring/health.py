"""The health server: /healthz (liveness), /readyz (readiness + detail), /metrics.

A small ASGI app served by uvicorn with its h11 protocol (h11 is loaded anyway: httpx
uses it). It replaced aiohttp here because importing aiohttp cost 8.6 MiB of RSS and
0.2 s of every start; uvicorn costs 2.4 MiB and a few tens of ms. ``Server.serve``
installs its own SIGINT and SIGTERM handlers for the time it runs; those signals belong
to the agent's service loop, so ``_Server`` leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from agent.common.secrets import read_secret
from agent.monitoring.metrics import make_registry, render
from agent.monitoring.report import health_report

if TYPE_CHECKING:
    from agent.service.runtime import Agent

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Reply = tuple[int, bytes, str]  # status, body, content type

JSON = "application/json; charset=utf-8"
# uvicorn's own start and stop lines would repeat the agent's "agent started ... health=".
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = asyncio.Event()  # listening, or failed (should_exit)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the agent's service loop handles SIGINT and SIGTERM

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_done.set()


def _json(status: int, data: object) -> Reply:
    return status, json.dumps(data).encode(), JSON


class HealthServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = make_registry(agent)
        token = agent.config.health.token
        # Read once at start: a missing file fails the start with a clear message.
        self._expected = f"Bearer {read_secret(token)}".encode() if token else None
        self._routes: dict[str, Callable[[], Reply]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the port. OSError when the
        address cannot be bound (the CLI reports it and exits EX_UNAVAILABLE)."""
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            server_header=False,
            date_header=False,
            proxy_headers=False,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="health-server")
        started = asyncio.ensure_future(server.startup_done.wait())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not server.started:  # uvicorn logged why; say it as an OSError like a bind
            sock.close()
            with contextlib.suppress(BaseException):
                await task
            raise OSError(f"the health server could not start on {host}:{port}")
        self._server, self._task, self._socket = server, task, sock
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        server, task, sock = self._server, self._task, self._socket
        self._server = self._task = self._socket = None
        if server is not None and task is not None:
            server.should_exit = True
            await task
        if sock is not None:
            sock.close()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        handler = self._routes.get(scope["path"])
        extra: list[tuple[bytes, bytes]] = []
        if handler is None:
            status, body, content_type = _json(404, {"error": "not found"})
        elif method not in ("GET", "HEAD"):
            status, body, content_type = _json(405, {"error": "method not allowed"})
            extra.append((b"allow", b"GET, HEAD"))
        elif not self._authorized(scope):
            status, body, content_type = _json(
                401, {"error": "a bearer token is required (health.token)"}
            )
            extra.append((b"www-authenticate", b"Bearer"))
        else:
            status, body, content_type = handler()
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _authorized(self, scope: Scope) -> bool:
        # /healthz stays open: liveness probes carry no credentials and it reveals nothing.
        if self._expected is None or scope["path"] == "/healthz":
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._expected)

    def _healthz(self) -> Reply:
        return _json(200, {"status": "alive", "agent": self.agent.config.agent.id})

    def _readyz(self) -> Reply:
        report = health_report(self.agent)
        return _json(200 if report["ready"] else 503, report)

    def _metrics(self) -> Reply:
        return 200, render(self.registry), CONTENT_TYPE_LATEST
