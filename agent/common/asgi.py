"""Serve one raw ASGI app with uvicorn on sockets bound here: the agent's health server,
the demo's middleware receiver and the test servers all run on this.

uvicorn runs with its h11 protocol (h11 is loaded anyway: httpx uses it), no lifespan and
no websockets. The sockets are ours rather than uvicorn's for three reasons: a bind error
comes back as the OSError it is (uvicorn would log it and ``sys.exit``), port 0 gives a
free port that the caller reads back from the socket, and the socket is created with the
protocol number getaddrinfo gives: asyncio sets TCP_NODELAY only on connections accepted
from a socket whose proto is IPPROTO_TCP, and uvicorn writes a response's head and body
separately, so with Nagle on every answer would wait ~40 ms for a delayed ACK.

``Server.serve`` installs its own SIGINT and SIGTERM handlers while it runs; those signals
belong to whoever runs the event loop (the agent's service loop, ``floorgate demo``,
pytest), so the server here leaves them alone. It stops when ``stop()`` sets
``should_exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


async def send_reply(send: Send, reply: Reply, *, head: bool = False) -> None:
    """The whole answer at once, with its length; ``head``: the headers only (HEAD)."""
    headers = [
        (b"content-type", reply.content_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None when the client went away first. Raises
    BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = asyncio.Event()  # listening, or failed (should_exit)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the signals belong to whoever runs the loop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_done.set()


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address of host (as loop.create_server does; "" is every
    interface); with port 0 they share the port the first one got. OSError when one
    cannot be bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)  # proto: see the module docstring
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class AsgiServer:
    """``app`` served on host:port from ``start()`` to ``stop()``.

    keep_alive: seconds an idle connection stays open. shutdown_timeout: seconds
    ``stop()`` lets requests in flight finish before cancelling them (None: no limit).
    """

    def __init__(
        self,
        app: App,
        *,
        name: str,
        keep_alive: int = 5,
        shutdown_timeout: int | None = None,
    ) -> None:
        self.name = name
        self._config = uvicorn.Config(
            app,
            interface="asgi3",
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_keep_alive=keep_alive,
            timeout_graceful_shutdown=shutdown_timeout,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []
        self.port = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port) and return the bound port. OSError when
        the address cannot be bound or uvicorn cannot start."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        sockets = bind_sockets(host, port)
        server = _Server(self._config)
        task = asyncio.create_task(server.serve(sockets=sockets), name=self.name)
        started = asyncio.ensure_future(server.startup_done.wait())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not server.started:  # uvicorn logged why; say it as an OSError like a bind
            for sock in sockets:
                sock.close()
            with contextlib.suppress(BaseException):
                await task
            raise OSError(f"the {self.name} could not start on {host}:{port}")
        self._server, self._task, self._sockets = server, task, sockets
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, close idle connections, let requests in flight finish (up to
        shutdown_timeout). Harmless when not started."""
        server, task, sockets = self._server, self._task, self._sockets
        self._server, self._task, self._sockets = None, None, []
        if server is not None and task is not None:
            server.should_exit = True
            await task
        for sock in sockets:
            sock.close()
