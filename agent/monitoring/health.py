"""The health server: /healthz (liveness), /readyz (readiness + detail), /metrics, and
the status page for a person at the box: / (status), /signals (every signal, raw and
decoded), the JSON they poll (/api/status, /api/signals) and their static files.

A small ASGI app served by uvicorn (agent.common.asgi), chosen for its light import:
2.4 MiB of RSS and a few tens of ms of the agent's start.

With ``health.token`` set, everything but /healthz, /api/auth and the page files needs
the bearer token. The page files hold no data: the page asks for the token once, keeps it
in the tab's sessionStorage and sends it on each call of the JSON API. The pages are
read-only and load nothing from elsewhere (a Content-Security-Policy says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from agent.common.asgi import AsgiServer, Receive, Scope, Send, send_reply
from agent.common.asgi import Reply as AsgiReply
from agent.common.secrets import read_secret
from agent.monitoring.history import History
from agent.monitoring.metrics import make_registry, render
from agent.monitoring.report import health_report
from agent.monitoring.statuspage import (
    history_figures,
    mask,
    signals_document,
    status_document,
)

if TYPE_CHECKING:
    from agent.service.runtime import Agent

Reply = tuple[int, bytes, str]  # status, body, content type
Handler = Callable[[Scope], Awaitable[Reply]]

JSON = "application/json; charset=utf-8"
# The page files: path -> (file in agent/monitoring/page/, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/signals": ("signals.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Served to anyone: they hold no data. Everything else but /healthz and /api/auth needs
# the token when one is set.
_OPEN = {"/healthz", "/api/auth", *PAGE_FILES}
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
_API_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


def _json(status: int, data: object) -> Reply:
    return status, json.dumps(data).encode(), JSON


def _masked_json(data: object) -> Reply:
    return 200, mask(json.dumps(data)).encode(), JSON


def _page_files() -> dict[str, bytes]:
    folder = resources.files("agent.monitoring").joinpath("page")
    return {path: folder.joinpath(name).read_bytes() for path, (name, _) in PAGE_FILES.items()}


class HealthServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = make_registry(agent)
        token = agent.config.health.token
        # Read once at start: a missing file fails the start with a clear message.
        self._expected = f"Bearer {read_secret(token)}".encode() if token else None
        self.history = History()
        self._history_task: asyncio.Task[None] | None = None
        self._files = _page_files()
        self._routes: dict[str, Handler] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/api/auth": self._auth,
            "/api/status": self._status,
            "/api/signals": self._signals,
            **{path: self._page for path in PAGE_FILES},
        }
        self._server = AsgiServer(self._app, name="health server")

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the port. OSError when the
        address cannot be bound (the CLI reports it and exits EX_UNAVAILABLE)."""
        port = await self._server.start(host, port)
        self._history_task = asyncio.create_task(
            self.history.run(functools.partial(history_figures, self.agent)),
            name="health history",
        )
        return port

    async def stop(self) -> None:
        task, self._history_task = self._history_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.stop()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        path = scope["path"]
        handler = self._routes.get(path)
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
            status, body, content_type = await handler(scope)
            if path in PAGE_FILES:
                extra += _PAGE_HEADERS
            elif path.startswith("/api/"):
                extra += _API_HEADERS
        await send_reply(send, AsgiReply(status, body, content_type, extra), head=method == "HEAD")

    def _authorized(self, scope: Scope) -> bool:
        # /healthz stays open: liveness probes carry no credentials and it reveals nothing;
        # so do the page files (no data in them) and /api/auth (says whether to ask).
        if self._expected is None or scope["path"] in _OPEN:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._expected)

    async def _healthz(self, scope: Scope) -> Reply:
        return _json(200, {"status": "alive", "agent": self.agent.config.agent.id})

    async def _readyz(self, scope: Scope) -> Reply:
        report = health_report(self.agent)
        return _json(200 if report["ready"] else 503, report)

    async def _metrics(self, scope: Scope) -> Reply:
        return 200, render(self.registry), CONTENT_TYPE_LATEST

    async def _page(self, scope: Scope) -> Reply:
        path = scope["path"]
        return 200, self._files[path], PAGE_FILES[path][1]

    async def _auth(self, scope: Scope) -> Reply:
        """Whether the page must ask for a token, and whether the one sent is right."""
        given = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        valid = self._expected is None or (
            given is not None and hmac.compare_digest(given, self._expected)
        )
        return _json(200, {"token_required": self._expected is not None, "valid": valid})

    async def _status(self, scope: Scope) -> Reply:
        return _masked_json(await status_document(self.agent, self.history))

    async def _signals(self, scope: Scope) -> Reply:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        machine = query.get("machine", [""])[0]
        name = query.get("name", [""])[0]
        return _masked_json(signals_document(self.agent, machine, name))
