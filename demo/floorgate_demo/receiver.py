"""A small HTTP middleware receiver for CloudEvents, used by the demo and the tests.

``POST /events`` accepts ``application/cloudevents-batch+json`` (a JSON array of
events) and ``application/cloudevents+json`` (one event); ``application/json`` is read
as either. It answers 200 with ``{"accepted": n, "duplicates": d}``, 400 when the body is
not JSON or not CloudEvents (each event needs ``specversion`` "1.0", ``id``, ``type`` and
``source``), 401 when a configured bearer token or HMAC key does not match (see
``agent.forwarders.http.forwarder`` for the signature recipe) and 415 for other content types.

Events are kept by CloudEvent id: the first-seen content wins; a repeat is counted in
``duplicates`` and, when its content differs, in ``conflicts`` too. ``GET /events``
returns the summary as JSON.

Test hooks: ``fail_next(status, times, retry_after)`` answers the next requests with an
error; ``reject_ids(ids, status)`` refuses any batch holding one of those ids; every
request is kept in ``requests`` (headers and raw body).

Bodies over 64 MiB get 413; other paths 404 and other methods 405. It is a raw ASGI app
served by uvicorn (agent.common.asgi), like the agent's health server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import orjson

from agent.common.asgi import (
    AsgiServer,
    BodyTooLarge,
    Receive,
    Reply,
    Scope,
    Send,
    read_body,
    send_reply,
)

BATCH_TYPE = "application/cloudevents-batch+json"
SINGLE_TYPE = "application/cloudevents+json"
REQUIRED_ATTRIBUTES = ("specversion", "id", "type", "source")
MAX_BODY = 64 * 1024 * 1024
MAX_CLOCK_SKEW = 300.0
# Seconds an idle connection stays open: past httpx's 5 s keep-alive expiry, so it is the
# client that ends an idle connection and a POST never races the server closing it.
KEEP_ALIVE = 75
SHUTDOWN_TIMEOUT = 1  # seconds stop() lets requests in flight finish

Headers = list[tuple[bytes, bytes]]

TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"


class BadRequest(Exception):
    """The body is not what the endpoint accepts; the message goes back to the client."""


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered


def _text(status: int, text: str, headers: Headers | None = None) -> Reply:
    return Reply(status, text.encode(), TEXT, headers or [])


def _json(body: bytes) -> Reply:
    return Reply(200, body, JSON)


def _content_type(raw: str | None) -> str:
    """The media type of a Content-Type value, lower-cased, by email.message's rules:
    application/octet-stream when absent, text/plain when malformed."""
    if raw is None:
        return "application/octet-stream"
    media_type = raw.partition(";")[0].strip().lower()
    return media_type if media_type.count("/") == 1 else "text/plain"


@dataclass(slots=True)
class _PlannedFailure:
    status: int
    times: int
    retry_after: str | None
    text: str


def parse_events(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The CloudEvents in a request body; raises BadRequest."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if content_type == BATCH_TYPE and not isinstance(document, list):
        raise BadRequest(f"{BATCH_TYPE} needs a JSON array of events")
    if content_type == SINGLE_TYPE and not isinstance(document, dict):
        raise BadRequest(f"{SINGLE_TYPE} needs one JSON object")
    events = document if isinstance(document, list) else [document]
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadRequest(f"event {index} is not a JSON object")
        missing = [name for name in REQUIRED_ATTRIBUTES if not event.get(name)]
        if missing:
            raise BadRequest(f"event {index} is not a CloudEvent: missing {', '.join(missing)}")
        if event["specversion"] != "1.0" or not isinstance(event["id"], str):
            raise BadRequest(f"event {index}: specversion must be '1.0' and id a string")
    return events


def _machine(event: dict[str, Any]) -> str:
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("machine"), str):
        return str(data["machine"])
    return str(event["source"]).rstrip("/").rsplit("/", 1)[-1]


class EventReceiver:
    """A uvicorn server storing the CloudEvents it receives, deduplicated by id."""

    def __init__(self, *, token: str | None = None, hmac_key: str | None = None) -> None:
        self._token = token
        self._hmac_key = hmac_key
        self._server = AsgiServer(
            self._app,
            name="middleware receiver",
            keep_alive=KEEP_ALIVE,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        self._host = "127.0.0.1"
        self._plan: deque[_PlannedFailure] = deque()
        self._rejected_ids: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self.requests: list[ReceivedRequest] = []
        self.clear()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0: any free port) and return the bound port. OSError when
        the address cannot be bound."""
        if self._server.running:
            raise RuntimeError("receiver already started")
        port = await self._server.start(host, port)
        self._host = host
        return port

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        if not self._server.running:
            raise RuntimeError("receiver not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.port}/events"

    # -- test hooks --------------------------------------------------------------

    def fail_next(
        self, status: int, times: int = 1, retry_after: str | float | None = None, text: str = ""
    ) -> None:
        """Answer the next ``times`` POSTs with ``status`` (and Retry-After, if given)."""
        header = None if retry_after is None else str(retry_after)
        body = text or f"planned failure {status}"
        self._plan.append(_PlannedFailure(status, times, header, body))

    def stop_failing(self) -> None:
        """Drop the planned failures that are left: answer normally from now on."""
        self._plan.clear()

    def reject_ids(self, ids: Iterable[str], status: int = 400) -> None:
        """Refuse, with ``status``, any batch holding one of these event ids."""
        for event_id in ids:
            self._rejected_ids[event_id] = status

    def clear(self) -> None:
        """Forget received events, counters, requests and planned failures."""
        self._events: dict[str, dict[str, Any]] = {}
        self._order: dict[str, list[str]] = {}
        self._duplicates = 0
        self._conflict_ids: list[str] = []
        self.requests = []
        self._plan.clear()
        self._rejected_ids.clear()

    # -- summaries ---------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Unique events, first-seen content, in order of arrival."""
        return list(self._events.values())

    @property
    def ids(self) -> list[str]:
        return list(self._events)

    @property
    def duplicates(self) -> int:
        """Events received again after the first time (same id)."""
        return self._duplicates

    @property
    def conflicts(self) -> int:
        """Repeats whose content differed from the first-seen content."""
        return len(self._conflict_ids)

    @property
    def conflict_ids(self) -> list[str]:
        return list(self._conflict_ids)

    @property
    def order_by_machine(self) -> dict[str, list[str]]:
        """Event ids per machine, in order of first arrival."""
        return {machine: list(ids) for machine, ids in self._order.items()}

    def count_by_type(self) -> dict[str, int]:
        return dict(Counter(str(event["type"]) for event in self._events.values()))

    def sum_quantity(self, kind: str) -> int:
        """Sum of data.quantity over production.count events of this kind (good/scrap)."""
        total = 0
        for event in self._events.values():
            data = event.get("data")
            if (
                event["type"] == "production.count"
                and isinstance(data, dict)
                and data.get("kind") == kind
            ):
                total += int(data.get("quantity", 0))
        return total

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` unique events arrived (wrap in asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._events) >= count)

    # -- handlers ----------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        reply: Reply | None
        if scope["path"] != "/events":
            reply = _text(404, "404: Not Found")
        elif method == "POST":
            reply = await self._handle_post(scope, receive)
        elif method in ("GET", "HEAD"):
            reply = self._handle_summary()
        else:
            reply = _text(405, "405: Method Not Allowed", [(b"allow", b"GET,HEAD,POST")])
        if reply is None:
            return  # the client went away before its body was in
        await send_reply(send, reply, head=method == "HEAD")

    def _handle_summary(self) -> Reply:
        summary = {
            "events": len(self._events),
            "duplicates": self._duplicates,
            "conflicts": self.conflicts,
            "by_type": self.count_by_type(),
        }
        return _json(orjson.dumps(summary))

    async def _handle_post(self, scope: Scope, receive: Receive) -> Reply | None:
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:  # answered unread, so the connection cannot be reused
            message = f"Maximum request body size {MAX_BODY} exceeded."
            return _text(413, message, [(b"connection", b"close")])
        if body is None:
            return None
        # Names come lower-cased; values as UTF-8, undecodable bytes kept as surrogates. A
        # repeated header keeps its last value.
        headers = {
            name.decode("latin-1"): value.decode("utf-8", "surrogateescape")
            for name, value in scope["headers"]
        }
        reply = self._answer(scope, headers, body)
        self.requests.append(ReceivedRequest(headers, body, reply.status))
        async with self._changed:
            self._changed.notify_all()
        return reply

    def _answer(self, scope: Scope, headers: dict[str, str], body: bytes) -> Reply:
        planned = self._take_planned()
        if planned is not None:
            extra = (
                []
                if planned.retry_after is None
                else [(b"retry-after", planned.retry_after.encode())]
            )
            return _text(planned.status, planned.text, extra)
        if not self._authorised(scope, body):
            return _text(401, "missing or wrong credentials")
        content_type = _content_type(headers.get("content-type"))
        if content_type not in (BATCH_TYPE, SINGLE_TYPE, "application/json"):
            return _text(415, f"unsupported content type {content_type}")
        try:
            events = parse_events(content_type, body)
        except BadRequest as exc:
            return _text(400, str(exc))
        for event in events:
            status = self._rejected_ids.get(event["id"])
            if status is not None:
                return _text(status, f"event {event['id']} refused")
        accepted, repeated = self._store(events)
        return _json(json.dumps({"accepted": accepted, "duplicates": repeated}).encode())

    def _take_planned(self) -> _PlannedFailure | None:
        if not self._plan:
            return None
        planned = self._plan[0]
        planned.times -= 1
        if planned.times <= 0:
            self._plan.popleft()
        return planned

    def _authorised(self, scope: Scope, body: bytes) -> bool:
        if self._token is not None:
            given = _header(scope, b"authorization")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                return False
        if self._hmac_key is not None:
            return verify_signature(
                self._hmac_key,
                _header(scope, b"x-floorgate-timestamp"),
                body,
                _header(scope, b"x-floorgate-signature"),
            )
        return True

    def _store(self, events: list[dict[str, Any]]) -> tuple[int, int]:
        accepted = repeated = 0
        for event in events:
            event_id = event["id"]
            first = self._events.get(event_id)
            if first is None:
                self._events[event_id] = event
                self._order.setdefault(_machine(event), []).append(event_id)
                accepted += 1
                continue
            repeated += 1
            self._duplicates += 1
            if first != event:
                self._conflict_ids.append(event_id)
        return accepted, repeated


def _header(scope: Scope, name: bytes) -> str:
    """The first value of a request header, "" when absent; bytes that are not UTF-8
    become U+FFFD and so just fail the credential comparisons."""
    value = next((v for k, v in scope["headers"] if k == name), b"")
    return str(value.decode("utf-8", "replace"))


def verify_signature(
    key: str, timestamp: str, body: bytes, signature: str, max_skew: float = MAX_CLOCK_SKEW
) -> bool:
    """Check an ``X-Floorgate-Signature`` the way a middleware should."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent_at) > max_skew:
        return False
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), f"sha256={digest}".encode())
