"""The health server: /healthz (liveness), /readyz (readiness + detail), /metrics.

A small ASGI app served by uvicorn (agent.common.asgi), chosen for its light import:
2.4 MiB of RSS and a few tens of ms of the agent's start.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST

from agent.common.asgi import AsgiServer, Receive, Scope, Send, send_reply
from agent.common.asgi import Reply as AsgiReply
from agent.common.secrets import read_secret
from agent.monitoring.metrics import make_registry, render
from agent.monitoring.report import health_report

if TYPE_CHECKING:
    from agent.service.runtime import Agent

Reply = tuple[int, bytes, str]  # status, body, content type

JSON = "application/json; charset=utf-8"


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
        self._server = AsgiServer(self._app, name="health server")

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the port. OSError when the
        address cannot be bound (the CLI reports it and exits EX_UNAVAILABLE)."""
        return await self._server.start(host, port)

    async def stop(self) -> None:
        await self._server.stop()

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
        await send_reply(send, AsgiReply(status, body, content_type, extra), head=method == "HEAD")

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
