"""The health server (aiohttp): /healthz (liveness), /readyz (readiness + detail), /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent.metrics import make_registry, render
from agent.report import health_report
from drivers.secrets import read_secret

if TYPE_CHECKING:
    from agent.runtime import Agent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HealthServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = make_registry(agent)
        token = agent.config.health.token
        # Read once at start: a missing file fails the start with a clear message.
        self._expected = f"Bearer {read_secret(token)}" if token else None
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        await self._runner.cleanup()

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # /healthz stays open: liveness probes carry no credentials and it reveals nothing.
        if self._expected is None or request.path == "/healthz":
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), self._expected.encode()):
            return web.json_response(
                {"error": "a bearer token is required (health.token)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "agent": self.agent.config.agent.id})

    async def _readyz(self, _: web.Request) -> web.Response:
        report = health_report(self.agent)
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=render(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
