"""The shared delivery loop against a real SQLite buffer and a real HTTP receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config.common import RetryConfig
from agent.forwarders.base import Transient
from agent.forwarders.http.config import HttpDestinationConfig
from agent.forwarders.http.forwarder import WebhookForwarder
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.monitoring.status import DestinationHealth, DestinationState
from buffer.rows import EventRow
from buffer.sqlite import BufferStoreError, SqliteBuffer
from floorgate_demo.receiver import EventReceiver

DEST = "mw"


def event_row(n: int, machine: str) -> EventRow:
    event_id = f"00000000-0000-7000-8000-{n:012d}"
    payload = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/plant/a/l/{machine}",
        "type": "sample",
        "time": "2026-11-22T08:00:00Z",
        "sequence": f"{n:020d}",
        "agentid": "gw",
        "data": {"machine": machine, "signal": "t", "value": n, "quality": "good"},
    }
    return EventRow(event_id, "sample", machine, payload["time"], orjson.dumps(payload), (DEST,))


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[SqliteBuffer]:
    buf = await SqliteBuffer.open(tmp_path / "buffer.db")
    yield buf
    await buf.close()


@pytest.fixture
async def receiver() -> AsyncIterator[EventReceiver]:
    async with EventReceiver() as rec:
        yield rec


async def deliver(
    buffer: SqliteBuffer, receiver: EventReceiver, *, count: int, batch_size: int = 10
) -> DestinationHealth:
    config = HttpDestinationConfig.model_validate(
        {
            "name": DEST,
            "type": "http",
            "url": receiver.url,
            "timeout": "5s",
            "batch_size": batch_size,
        }
    )
    health = DestinationHealth(name=DEST, type="http")
    loop = DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(batch_size=batch_size, retry=RetryConfig(initial="10ms", max="50ms")),
        health,
        asyncio.Event(),
    )
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(30):
            while True:
                if task.done():  # a crashed loop fails the test with its own error
                    task.result()
                stats = await buffer.stats()
                dest = stats.destinations[DEST]
                if dest.pending == 0 and dest.delivered + dest.dead >= count:
                    break
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return health


def sequences_by_machine(receiver: EventReceiver) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for event in receiver.events:
        result.setdefault(event["data"]["machine"], []).append(int(event["sequence"]))
    return result


async def test_503_for_a_while_then_everything_arrives_in_order(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    await buffer.append([event_row(n, f"m{n % 3}") for n in range(1, 101)])
    receiver.fail_next(503, times=4)
    await deliver(buffer, receiver, count=100)
    assert len(receiver.events) == 100
    assert receiver.conflicts == 0
    for machine, seqs in sequences_by_machine(receiver).items():
        assert seqs == sorted(seqs), f"{machine} out of order"
    assert [r.status for r in receiver.requests[:4]] == [503] * 4


async def test_one_rejected_event_is_dead_lettered_and_the_rest_flow(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    rows = [event_row(n, "m1") for n in range(1, 51)]
    await buffer.append(rows)
    receiver.reject_ids({rows[16].id}, status=400)
    health = await deliver(buffer, receiver, count=50)
    received = set(receiver.ids)
    assert rows[16].id not in received
    assert received == {r.id for r in rows} - {rows[16].id}
    dead = await buffer.dead_letters(DEST)
    assert [d.id for d in dead] == [rows[16].id]
    assert "HTTP 400" in dead[0].reason
    assert health.dead == 1
    seqs = sequences_by_machine(receiver)["m1"]
    assert seqs == sorted(seqs)


async def test_bad_credentials_stop_the_destination_without_a_retry_storm(
    buffer: SqliteBuffer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("wrong\n")
    async with EventReceiver(token="right") as rec:
        config = HttpDestinationConfig.model_validate(
            {
                "name": DEST,
                "type": "http",
                "url": rec.url,
                "auth": "bearer",
                "token": {"file": str(token)},
            }
        )
        await buffer.append([event_row(n, "m1") for n in range(1, 6)])
        health = DestinationHealth(name=DEST, type="http")
        loop = DeliveryLoop(
            WebhookForwarder(config),
            buffer,
            DeliverySettings(
                batch_size=10, retry=RetryConfig(initial="10ms", max="50ms"), fatal_pause=3600
            ),
            health,
            asyncio.Event(),
        )
        task = asyncio.create_task(loop.run())
        async with asyncio.timeout(10):
            while health.state is not DestinationState.FAILING:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # room for a storm, if there were one
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert len(rec.requests) == 1
        assert "401" in (health.last_error or "")
        stats = await buffer.stats()
        assert stats.destinations[DEST].pending == 5  # nothing lost, nothing dead-lettered
        assert stats.destinations[DEST].dead == 0


async def test_a_stop_right_after_the_last_send_still_commits_its_ack(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    """Acks commit while the next batch is sent (pipelined); a loop cancelled the moment
    the destination has everything must still leave nothing pending, and send nothing
    twice on the way."""
    await buffer.append([event_row(n, f"m{n % 4}") for n in range(1, 2001)])
    config = HttpDestinationConfig.model_validate(
        {"name": DEST, "type": "http", "url": receiver.url, "batch_size": 100}
    )
    health = DestinationHealth(name=DEST, type="http")
    loop = DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(batch_size=100, retry=config.retry),
        health,
        asyncio.Event(),
    )
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(60):
            while health.delivered < 2000:
                if task.done():
                    task.result()
                await asyncio.sleep(0)  # cancel as soon as the count is reached
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stats = await buffer.stats()
    assert (stats.destinations[DEST].pending, stats.destinations[DEST].delivered) == (0, 2000)
    assert len(receiver.events) == 2000 and receiver.conflicts == 0
    for machine, seqs in sequences_by_machine(receiver).items():
        assert seqs == sorted(seqs), f"{machine} out of order"


@pytest.mark.parametrize(("ack_interval", "ack_commits"), [(0.0, 3), (5.0, 2)])
async def test_with_an_ack_interval_acks_are_held_until_the_queue_is_caught_up(
    buffer: SqliteBuffer, receiver: EventReceiver, ack_interval: float, ack_commits: int
) -> None:
    """buffer.commit_interval: the first batch's ack goes at once, the next ones within the
    interval wait until the loop has claimed everything, then go as one commit; every
    event is marked delivered exactly once and nothing is sent twice."""
    await buffer.append([event_row(n, "m1") for n in range(1, 31)])
    acks: list[list[int]] = []
    ack = buffer.ack

    async def counting_ack(destination: str, seqs: list[int]) -> None:
        acks.append(list(seqs))
        await ack(destination, seqs)

    buffer.ack = counting_ack  # type: ignore[method-assign]
    config = HttpDestinationConfig.model_validate(
        {"name": DEST, "type": "http", "url": receiver.url, "timeout": "5s", "batch_size": 10}
    )
    loop = DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(
            batch_size=10, retry=RetryConfig(initial="10ms", max="50ms"), ack_interval=ack_interval
        ),
        DestinationHealth(name=DEST, type="http"),
        asyncio.Event(),
    )
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(30):
            while (await buffer.stats()).destinations[DEST].delivered < 30:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(acks) == ack_commits
    assert sorted(seq for seqs in acks for seq in seqs) == list(range(1, 31))
    assert len(receiver.events) == 30 and receiver.duplicates == 0
    assert (await buffer.stats()).destinations[DEST].pending == 0


def held_ack_loop(
    buffer: SqliteBuffer, receiver: EventReceiver, backoff: str = "10ms"
) -> DeliveryLoop:
    """Batches of 10 and an ack interval of a minute: acks after the first are held."""
    config = HttpDestinationConfig.model_validate(
        {"name": DEST, "type": "http", "url": receiver.url, "timeout": "5s", "batch_size": 10}
    )
    return DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(
            batch_size=10, retry=RetryConfig(initial=backoff, max=backoff), ack_interval=60.0
        ),
        DestinationHealth(name=DEST, type="http"),
        asyncio.Event(),
    )


async def test_a_stop_while_acks_are_held_commits_them(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    await buffer.append([event_row(n, "m1") for n in range(1, 31)])
    loop = held_ack_loop(buffer, receiver)
    sends = 0
    send = loop.forwarder.send
    third_send = asyncio.Event()

    async def send_two_then_hang(batch: Any) -> Any:
        nonlocal sends
        sends += 1
        if sends == 3:  # the second batch's ack is held now
            third_send.set()
            await asyncio.Event().wait()
        return await send(batch)

    loop.forwarder.send = send_two_then_hang  # type: ignore[method-assign]
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(30):
        await third_send.wait()
    assert loop._held_acks == list(range(11, 21))
    task.cancel()  # the agent stopping
    await asyncio.gather(task, return_exceptions=True)
    dest = (await buffer.stats()).destinations[DEST]
    assert (dest.delivered, dest.pending) == (20, 10)


async def test_a_failed_ack_loses_none_of_the_acks_held_behind_it(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    """The first batch's ack fails (the disk, say): that batch stays pending and is sent
    again, as without an interval; the two batches delivered after it, whose acks were
    held, are marked delivered and not sent again."""
    await buffer.append([event_row(n, "m1") for n in range(1, 31)])
    ack = buffer.ack
    calls = 0

    async def first_ack_fails(destination: str, seqs: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BufferStoreError("disk full (test)")
        await ack(destination, seqs)

    buffer.ack = first_ack_fails  # type: ignore[method-assign]
    loop = held_ack_loop(buffer, receiver)
    with pytest.raises(BufferStoreError):  # the supervisor would restart the loop
        async with asyncio.timeout(30):
            await loop.run()
    dest = (await buffer.stats()).destinations[DEST]
    assert (dest.delivered, dest.pending) == (20, 10)
    assert len(receiver.events) == 30 and receiver.duplicates == 0


async def test_acks_held_when_a_send_fails_are_committed_before_the_backoff(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    """Delivered events must not look pending through a long backoff (stats, max_age and
    replay go by their status)."""
    await buffer.append([event_row(n, "m1") for n in range(1, 31)])
    loop = held_ack_loop(buffer, receiver, backoff="10m")
    sends = 0
    send = loop.forwarder.send

    async def third_send_fails(batch: Any) -> Any:
        nonlocal sends
        sends += 1
        if sends >= 3:
            raise Transient("503 (test)")
        return await send(batch)

    loop.forwarder.send = third_send_fails  # type: ignore[method-assign]
    task = asyncio.create_task(loop.run())
    try:
        await wait_for_delivered(buffer, 20)
        assert sends == 3  # in the backoff after the third send, not after a retry
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_for_delivered(buffer: SqliteBuffer, count: int) -> None:
    async with asyncio.timeout(20):
        while (await buffer.stats()).destinations[DEST].delivered < count:
            await asyncio.sleep(0.02)


async def test_acks_waiting_for_the_next_append_do_not_hold_the_sends_up(
    buffer: SqliteBuffer, receiver: EventReceiver
) -> None:
    """With the buffer committing acks in its next append (commit_interval), each batch's
    ack waits for that append; the loop sends on meanwhile instead of waiting for each
    ack in turn, and the append commits them all."""
    buffer.ack_with_appends(3600.0)  # no ack commits alone within this test
    await buffer.append([event_row(n, "m1") for n in range(1, 101)])
    config = HttpDestinationConfig.model_validate(
        {"name": DEST, "type": "http", "url": receiver.url, "timeout": "5s", "batch_size": 10}
    )
    loop = DeliveryLoop(
        WebhookForwarder(config),
        buffer,
        DeliverySettings(batch_size=10, retry=RetryConfig(initial="10ms", max="50ms")),
        DestinationHealth(name=DEST, type="http"),
        asyncio.Event(),
    )
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(20):
            while len(receiver.events) < 100:  # all ten batches sent, no ack committed yet
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        assert (await buffer.stats()).destinations[DEST].delivered == 0
        await buffer.append([event_row(101, "m1")])  # the engine's next hand-over
        await wait_for_delivered(buffer, 100)
        async with asyncio.timeout(20):
            while len(receiver.events) < 101:  # and the new event is sent after them
                await asyncio.sleep(0.02)
    finally:
        await buffer.close()  # commits the last ack, which waits for an append
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert receiver.duplicates == 0
