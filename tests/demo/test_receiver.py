"""EventReceiver: the demo and test middleware, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
import pytest

from floorgate_demo.receiver import BATCH_TYPE, SINGLE_TYPE, EventReceiver, verify_signature


def event(
    event_id: str,
    machine: str = "press-1",
    type_: str = "production.count",
    **data: Any,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/site/area/line/{machine}",
        "type": type_,
        "time": "2030-01-01T00:00:00Z",
        "data": {"machine": machine, **data},
    }


@pytest.fixture
async def receiver() -> AsyncIterator[EventReceiver]:
    async with EventReceiver() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def post(
    session: httpx.AsyncClient,
    url: str,
    body: Any,
    content_type: str = BATCH_TYPE,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Mapping[str, str]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"Content-Type": content_type, **(headers or {})}
    response = await session.post(url, content=data, headers=all_headers)
    return response.status_code, response.text, response.headers  # names case-insensitive


async def test_start_binds_a_free_port_and_stop_releases_it() -> None:
    receiver = EventReceiver()
    port = await receiver.start()
    try:
        assert port > 0
        assert receiver.url == f"http://127.0.0.1:{port}/events"
    finally:
        await receiver.stop()
    await receiver.stop()  # stopping twice is harmless


async def test_batch_is_stored_in_order_of_arrival(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    status, text, _ = await post(session, receiver.url, [event("a"), event("b")])

    assert status == 200
    assert orjson.loads(text) == {"accepted": 2, "duplicates": 0}
    assert receiver.ids == ["a", "b"]


async def test_single_structured_event_is_accepted(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    status, _, _ = await post(session, receiver.url, event("one"), content_type=SINGLE_TYPE)

    assert status == 200
    assert receiver.ids == ["one"]


async def test_repeats_are_deduplicated_keeping_the_first_content(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    await post(session, receiver.url, [event("a", quantity=1), event("b", quantity=2)])
    status, text, _ = await post(
        session, receiver.url, [event("a", quantity=1), event("b", quantity=99), event("c")]
    )

    assert status == 200
    assert orjson.loads(text) == {"accepted": 1, "duplicates": 2}
    assert receiver.ids == ["a", "b", "c"]
    assert receiver.duplicates == 2
    assert receiver.conflicts == 1
    assert receiver.conflict_ids == ["b"]
    assert receiver.events[1]["data"]["quantity"] == 2  # first-seen content kept


async def test_order_is_kept_per_machine(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    await post(session, receiver.url, [event("a1", "A"), event("b1", "B"), event("a2", "A")])
    await post(session, receiver.url, [event("b2", "B"), event("a1", "A")])

    assert receiver.order_by_machine == {"A": ["a1", "a2"], "B": ["b1", "b2"]}


async def test_summaries_count_types_and_sum_quantities_by_kind(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    batch = [
        event("1", kind="good", quantity=10),
        event("2", kind="scrap", quantity=2),
        event("3", kind="good", quantity=5),
        event("4", type_="machine.state", state="running"),
        event("5", type_="sample", kind="good", quantity=1000),  # not a count
    ]
    await post(session, receiver.url, batch)
    await post(session, receiver.url, [event("1", kind="good", quantity=10)])  # a repeat

    assert receiver.sum_quantity("good") == 15
    assert receiver.sum_quantity("scrap") == 2
    assert receiver.count_by_type() == {"production.count": 3, "machine.state": 1, "sample": 1}
    summary = (await session.get(receiver.url)).json()
    assert summary["events"] == 5 and summary["duplicates"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"[{not json", BATCH_TYPE, "invalid JSON"),
        ({"specversion": "1.0"}, BATCH_TYPE, "JSON array"),
        ([event("a")], SINGLE_TYPE, "one JSON object"),
        ([1], BATCH_TYPE, "not a JSON object"),
        ([{"id": "x", "type": "t", "source": "/s"}], BATCH_TYPE, "missing specversion"),
        ([{"specversion": "1.0", "id": "x"}], BATCH_TYPE, "missing type, source"),
        ([{**event("x"), "specversion": "0.3"}], BATCH_TYPE, "specversion must be"),
    ],
)
async def test_bodies_that_are_not_cloudevents_get_400(
    body: Any,
    content_type: str,
    message: str,
    receiver: EventReceiver,
    session: httpx.AsyncClient,
) -> None:
    status, text, _ = await post(session, receiver.url, body, content_type=content_type)

    assert status == 400
    assert message in text
    assert receiver.events == []


async def test_other_content_types_get_415(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    status, _, _ = await post(session, receiver.url, [event("a")], content_type="text/plain")

    assert status == 415


async def test_bearer_token_is_checked() -> None:
    async with EventReceiver(token="tok") as receiver, httpx.AsyncClient() as session:
        missing, _, _ = await post(session, receiver.url, [event("a")])
        wrong, _, _ = await post(
            session, receiver.url, [event("a")], headers={"Authorization": "Bearer nope"}
        )
        right, _, _ = await post(
            session, receiver.url, [event("a")], headers={"Authorization": "Bearer tok"}
        )

    assert (missing, wrong, right) == (401, 401, 200)
    assert receiver.ids == ["a"]


def test_signature_check_refuses_tampering_and_stale_timestamps() -> None:
    body = b'[{"id":"a"}]'
    now = str(int(time.time()))
    good = "sha256=" + hmac.new(b"k", now.encode() + b"." + body, hashlib.sha256).hexdigest()

    assert verify_signature("k", now, body, good)
    assert not verify_signature("k", now, body + b" ", good)
    assert not verify_signature("other", now, body, good)
    assert not verify_signature("k", "not-a-number", body, good)
    old = str(int(time.time()) - 3600)
    stale = "sha256=" + hmac.new(b"k", old.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert not verify_signature("k", old, body, stale)


async def test_fail_next_answers_the_planned_status_then_recovers(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    receiver.fail_next(503, times=2, retry_after=7)

    first = await post(session, receiver.url, [event("a")])
    second = await post(session, receiver.url, [event("a")])
    third = await post(session, receiver.url, [event("a")])

    assert [first[0], second[0], third[0]] == [503, 503, 200]
    assert first[2]["Retry-After"] == "7"
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert receiver.ids == ["a"] and receiver.duplicates == 0


async def test_reject_ids_refuses_whole_batches_holding_them(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    receiver.reject_ids({"poison"}, status=422)

    refused, text, _ = await post(session, receiver.url, [event("a"), event("poison")])
    accepted, _, _ = await post(session, receiver.url, [event("a")])

    assert refused == 422 and "poison" in text
    assert accepted == 200
    assert receiver.ids == ["a"]


async def test_wait_for_returns_once_enough_events_arrived(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    waiter = asyncio.create_task(receiver.wait_for(2))
    await post(session, receiver.url, [event("a")])
    await asyncio.sleep(0)
    assert not waiter.done()

    await post(session, receiver.url, [event("b")])

    async with asyncio.timeout(2):
        await waiter


async def test_clear_forgets_everything(
    receiver: EventReceiver, session: httpx.AsyncClient
) -> None:
    await post(session, receiver.url, [event("a"), event("a")])
    receiver.fail_next(500)

    receiver.clear()

    assert (receiver.events, receiver.duplicates, receiver.requests) == ([], 0, [])
    status, _, _ = await post(session, receiver.url, [event("a")])
    assert status == 200
