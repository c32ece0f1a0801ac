"""WebhookForwarder against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.common.asgi import AsgiServer, Receive, Scope, Send
from agent.forwarders.base import Fatal, NotConnected, Rejected, Transient
from agent.forwarders.http.config import HttpDestinationConfig
from agent.forwarders.http.forwarder import (
    MAX_RETRY_AFTER,
    WebhookForwarder,
    idempotency_key,
    parse_retry_after,
)
from agent.pipeline.events import Event, ProductionCountData, uuid7
from buffer.rows import ClaimedEvent
from floorgate_demo.receiver import EventReceiver

TOKEN = "s3cret-token-value"


def claimed(seq: int, machine: str = "press-1", quantity: int = 5) -> ClaimedEvent:
    now = datetime.now(UTC)
    event = Event(
        id=uuid7(),
        source=f"/site/area/line/{machine}",
        type="production.count",
        time=now,
        sequence=f"{seq:020d}",
        agentid="gw-1",
        data=ProductionCountData(
            machine=machine,
            signal="parts",
            kind="good",
            quantity=quantity,
            window_start=now - timedelta(seconds=10),
            window_end=now,
        ),
    )
    return ClaimedEvent(
        seq=seq, id=event.id, type=event.type, key=machine, payload=event.to_json(), attempts=0
    )


def config(url: str, **extra: Any) -> HttpDestinationConfig:
    return HttpDestinationConfig.model_validate(
        {"name": "middleware", "type": "http", "url": url, "timeout": "2s", **extra}
    )


def token_file(tmp_path: Path, value: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(value + "\n")
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def receiver() -> AsyncIterator[EventReceiver]:
    async with EventReceiver() as server:
        yield server


@pytest.fixture
async def forwarders() -> AsyncIterator[Callable[[HttpDestinationConfig], WebhookForwarder]]:
    made: list[WebhookForwarder] = []

    def make(cfg: HttpDestinationConfig) -> WebhookForwarder:
        forwarder = WebhookForwarder(cfg)
        made.append(forwarder)
        return forwarder

    yield make
    for forwarder in made:
        await forwarder.close()


Reply = tuple[int, dict[str, str]]  # status and headers of an answer with no body
Handler = Callable[[], Awaitable[Reply]]


@pytest.fixture
async def tiny_app() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler at POST /hook for behaviour the EventReceiver does not offer."""
    servers: list[AsgiServer] = []

    async def start(handler: Handler) -> str:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            message = await receive()  # the body, read and dropped
            while message["type"] == "http.request" and message.get("more_body", False):
                message = await receive()
            if (scope["method"], scope["path"]) == ("POST", "/hook"):
                status, headers = await handler()
            else:
                status, headers = 404, {}
            raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            raw.append((b"content-length", b"0"))
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": b""})

        server = AsgiServer(app, name="tiny app", shutdown_timeout=1)
        servers.append(server)
        port = await server.start("127.0.0.1", 0)
        return f"http://127.0.0.1:{port}/hook"

    yield start
    for server in servers:
        await server.stop()


async def test_batch_is_one_post_of_the_payloads_joined_verbatim(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    batch = [claimed(seq) for seq in (3, 4, 5)]
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    result = await forwarder.send(batch)

    assert result.delivered == [3, 4, 5]
    assert result.rejected == {}
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.body == b"[" + b",".join(e.payload for e in batch) + b"]"
    assert request.headers["content-type"] == "application/cloudevents-batch+json"
    assert request.headers["user-agent"].startswith("floorgate/")
    assert "authorization" not in request.headers
    assert receiver.ids == [e.id for e in batch]


async def test_empty_batch_sends_nothing(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    result = await forwarder.send([])

    assert result.delivered == []
    assert receiver.requests == []


async def test_bearer_token_is_sent_in_authorization_header(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    async with EventReceiver(token=TOKEN) as receiver:
        cfg = config(receiver.url, auth="bearer", token={"file": str(token_file(tmp_path))})
        forwarder = forwarders(cfg)
        await forwarder.connect()

        result = await forwarder.send([claimed(1)])

        assert result.delivered == [1]
        assert receiver.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_wrong_bearer_token_is_fatal_and_message_hides_the_token(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    async with EventReceiver(token="the-right-one") as receiver:
        cfg = config(receiver.url, auth="bearer", token={"file": str(token_file(tmp_path))})
        forwarder = forwarders(cfg)
        await forwarder.connect()

        with pytest.raises(Fatal, match="HTTP 401") as caught:
            await forwarder.send([claimed(1)])

        assert TOKEN not in str(caught.value)
        assert "middleware" in str(caught.value)


async def test_hmac_signature_verifies_with_the_documented_recipe(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    async with EventReceiver(hmac_key=TOKEN) as receiver:  # the receiver checks it too
        cfg = config(receiver.url, auth="hmac", token={"file": str(token_file(tmp_path))})
        forwarder = forwarders(cfg)
        await forwarder.connect()

        result = await forwarder.send([claimed(1), claimed(2)])

        assert result.delivered == [1, 2]
        request = receiver.requests[0]
        timestamp = request.headers["x-floorgate-timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        expected = hmac.new(
            TOKEN.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
        ).hexdigest()
        assert request.headers["x-floorgate-signature"] == f"sha256={expected}"
        assert "authorization" not in request.headers


async def test_hmac_signed_with_another_key_is_refused_by_the_receiver(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    async with EventReceiver(hmac_key="another-key") as receiver:
        cfg = config(receiver.url, auth="hmac", token={"file": str(token_file(tmp_path))})
        forwarder = forwarders(cfg)
        await forwarder.connect()

        with pytest.raises(Fatal, match="HTTP 401"):
            await forwarder.send([claimed(1)])


async def test_idempotency_key_is_stable_for_the_same_batch(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    batch = [claimed(1), claimed(2)]
    other = [claimed(3)]
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    await forwarder.send(batch)
    await forwarder.send(batch)
    await forwarder.send(other)

    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys[0] == keys[1] == idempotency_key(batch)
    assert keys[2] != keys[0]
    assert len(keys[0]) == 64 and int(keys[0], 16) >= 0
    assert receiver.duplicates == 2 and receiver.conflicts == 0


async def test_409_means_already_delivered(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    receiver.fail_next(409)
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    result = await forwarder.send([claimed(7), claimed(8)])

    assert result.delivered == [7, 8]


async def test_503_with_retry_after_seconds_is_transient_with_that_wait(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    receiver.fail_next(503, retry_after=7, text="maintenance")
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    with pytest.raises(Transient, match="HTTP 503") as caught:
        await forwarder.send([claimed(1)])

    assert caught.value.retry_after == 7
    assert "middleware" in str(caught.value) and "maintenance" in str(caught.value)
    assert (await forwarder.send([claimed(1)])).delivered == [1]  # the next try goes through


async def test_429_with_retry_after_http_date_gives_the_seconds_until_then(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    receiver.fail_next(429, retry_after=format_datetime(when, usegmt=True))
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    with pytest.raises(Transient) as caught:
        await forwarder.send([claimed(1)])

    assert caught.value.retry_after is not None
    assert 115 <= caught.value.retry_after <= 121


@pytest.mark.parametrize("status", [408, 425, 500, 502, 504])
async def test_retryable_statuses_are_transient_without_hint(
    status: int, receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    receiver.fail_next(status)
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    with pytest.raises(Transient, match=f"HTTP {status}") as caught:
        await forwarder.send([claimed(1)])

    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("86400", MAX_RETRY_AFTER),
        ("-3", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: go now
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date_is_relative_to_now_and_capped() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 02 Jan 2030 12:00:00 GMT", now=now) == MAX_RETRY_AFTER


async def test_400_is_rejected_with_the_response_text(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    batch = [claimed(1), claimed(2)]
    receiver.reject_ids({batch[1].id})
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    with pytest.raises(Rejected) as caught:
        await forwarder.send(batch)

    assert str(caught.value) == f"HTTP 400: event {batch[1].id} refused"
    assert receiver.events == []  # the whole batch was refused
    assert (await forwarder.send(batch[:1])).delivered == [1]


async def test_rejection_text_is_cut_to_500_characters(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    receiver.fail_next(422, text="x" * 5000)
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    with pytest.raises(Rejected) as caught:
        await forwarder.send([claimed(1)])

    assert str(caught.value) == "HTTP 422: " + "x" * 500


async def test_connection_refused_is_not_connected(
    forwarders: Callable[..., WebhookForwarder],
) -> None:
    forwarder = forwarders(config(f"http://127.0.0.1:{closed_port()}/events"))
    await forwarder.connect()

    with pytest.raises(NotConnected, match="middleware"):
        await forwarder.send([claimed(1)])


async def test_unknown_host_is_not_connected(forwarders: Callable[..., WebhookForwarder]) -> None:
    forwarder = forwarders(config("http://no-such-host.invalid/events"))
    await forwarder.connect()

    with pytest.raises(NotConnected):
        await forwarder.send([claimed(1)])


async def test_tls_handshake_failure_is_not_connected(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    # The receiver speaks plain HTTP: a TLS client hello cannot complete.
    forwarder = forwarders(config(receiver.url.replace("http://", "https://")))
    await forwarder.connect()

    with pytest.raises(NotConnected, match="cannot connect"):
        await forwarder.send([claimed(1)])


async def test_slow_server_times_out_as_transient(
    tiny_app: Callable[[Handler], Awaitable[str]],
    forwarders: Callable[..., WebhookForwarder],
) -> None:
    release = asyncio.Event()

    async def slow() -> Reply:
        await release.wait()
        return 200, {}

    url = await tiny_app(slow)
    forwarder = forwarders(config(url, timeout="200ms"))
    await forwarder.connect()

    # The server answers only once released, after send() returns: the Transient can only
    # come from the forwarder's own timeout (no wall-clock figure needed to prove it).
    try:
        with pytest.raises(Transient, match="middleware"):
            await forwarder.send([claimed(1)])
    finally:
        release.set()


async def test_connection_dropped_mid_request_is_transient(
    forwarders: Callable[..., WebhookForwarder],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        forwarder = forwarders(config(f"http://127.0.0.1:{port}/events"))
        await forwarder.connect()
        with pytest.raises(Transient):
            await forwarder.send([claimed(1)])
    finally:
        server.close()
        await server.wait_closed()


async def test_redirect_is_fatal_and_not_followed(
    tiny_app: Callable[[Handler], Awaitable[str]],
    forwarders: Callable[..., WebhookForwarder],
) -> None:
    async def moved() -> Reply:
        return 308, {"Location": "https://elsewhere.example/"}

    url = await tiny_app(moved)
    forwarder = forwarders(config(url))
    await forwarder.connect()

    with pytest.raises(Fatal, match=r"elsewhere\.example"):
        await forwarder.send([claimed(1)])


async def test_missing_token_file_is_fatal_at_connect(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    missing = tmp_path / "nope"
    forwarder = forwarders(
        config("http://127.0.0.1:9/events", auth="bearer", token={"file": str(missing)})
    )

    with pytest.raises(Fatal, match=r"middleware.*nope"):
        await forwarder.connect()


async def test_missing_ca_file_is_fatal_at_connect(
    tmp_path: Path, forwarders: Callable[..., WebhookForwarder]
) -> None:
    forwarder = forwarders(config("https://127.0.0.1:9/", ca_file=str(tmp_path / "ca.pem")))

    with pytest.raises(Fatal, match="ca_file"):
        await forwarder.connect()


async def test_send_before_connect_is_not_connected() -> None:
    forwarder = WebhookForwarder(config("http://127.0.0.1:9/events"))

    with pytest.raises(NotConnected):
        await forwarder.send([claimed(1)])
    await forwarder.close()  # closing a never-connected forwarder is harmless


async def test_userinfo_in_url_stays_out_of_messages(
    forwarders: Callable[..., WebhookForwarder],
) -> None:
    forwarder = forwarders(config(f"http://user:pw-secret@127.0.0.1:{closed_port()}/events"))
    await forwarder.connect()

    with pytest.raises(NotConnected) as caught:
        await forwarder.send([claimed(1)])

    assert "pw-secret" not in str(caught.value)


async def test_events_arrive_parsed_and_countable(
    receiver: EventReceiver, forwarders: Callable[..., WebhookForwarder]
) -> None:
    forwarder = forwarders(config(receiver.url))
    await forwarder.connect()

    await forwarder.send([claimed(1, quantity=3), claimed(2, quantity=4, machine="press-2")])

    assert receiver.sum_quantity("good") == 7
    assert receiver.count_by_type() == {"production.count": 2}
    first = orjson.loads(receiver.requests[0].body)[0]
    assert first["data"]["machine"] == "press-1"
