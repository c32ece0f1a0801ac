"""The MQTT forwarder under the shared delivery loop, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from agent.config.models import AgentSection
from agent.forwarders.base import SendResult
from agent.forwarders.mqtt.forwarder import MqttForwarder
from agent.monitoring.status import DestinationState
from agent.pipeline.events import Event
from buffer.sqlite import SqliteBuffer
from tests.forwarders.mqtt.broker import Mosquitto, Subscriber
from tests.forwarders.mqtt.conftest import delivering, event_row, mqtt_config, pending, wait_drained
from tests.helpers import wait_until

MACHINES = ("press1", "press2", "packer1")

pytestmark = pytest.mark.mosquitto  # a real broker (mosquitto from apt)


def first_arrivals_in_order(events: list[tuple[str, dict, bytes]]) -> None:
    """Per machine, the first arrival of each id comes in buffer (sequence) order."""
    seen: set[str] = set()
    by_machine: dict[str, list[int]] = defaultdict(list)
    for _, event, _ in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            by_machine[event["data"]["machine"]].append(int(event["sequence"]))
    for machine, seqs in by_machine.items():
        assert seqs == sorted(seqs), f"events of {machine} arrived out of order"


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_events_arrive_on_their_topics_as_cloudevents(
    broker: Mosquitto, buffer: SqliteBuffer, protocol: str
) -> None:
    rows = [event_row(n, MACHINES[n % 3]) for n in range(1, 301)]
    rows += [event_row(n, "press1", "machine.state") for n in range(301, 304)]
    async with Subscriber(broker.port) as sub:
        await buffer.append(rows)
        async with delivering(
            buffer,
            mqtt_config(broker.port, protocol=protocol, batch_size=50),
        ) as running:
            await wait_drained(buffer, running)
            await wait_until(lambda: len(sub.event_ids()) == len(rows), 30, "all received")
            assert running.health.state is DestinationState.CONNECTED
            assert running.health.delivered == len(rows)
    events = sub.events()
    assert {e["id"] for _, e, _ in events} == {r.id for r in rows}
    for topic, event, raw in events:
        Event.model_validate_json(raw)  # a valid CloudEvent envelope, as buffered
        machine = event["data"]["machine"]
        assert topic == f"plant/hall/line1/{machine}/{event['type']}"
    assert raw in {r.payload for r in rows}  # the buffered bytes, not re-serialised
    first_arrivals_in_order(events)


async def test_status_is_online_while_connected_and_offline_after_a_clean_close(
    broker: Mosquitto, buffer: SqliteBuffer
) -> None:
    async with Subscriber(broker.port) as sub:
        async with delivering(buffer, mqtt_config(broker.port)) as running:
            await wait_until(lambda: sub.last("floorgate/gw/status") == b"online", 30, "online")
            running.check()
            # paho runs on the event loop: no network thread of its own for the forwarder
            # (the test's subscriber has one, named after its client id).
            assert not [t for t in threading.enumerate() if "floorgate-gw" in t.name]
        await wait_until(lambda: sub.last("floorgate/gw/status") == b"offline", 30, "offline")
    # Retained: a subscriber arriving later still reads the gateway's last word.
    async with Subscriber(broker.port, client_id="late-subscriber") as late:
        await wait_until(lambda: late.on("floorgate/gw/status") == [b"offline"], 30, "retained")


async def test_samples_at_qos0_and_machine_state_retained_per_machine(
    broker: Mosquitto, buffer: SqliteBuffer
) -> None:
    rows = [event_row(1, "press1", "machine.state"), event_row(2, "press2", "machine.state")]
    rows += [event_row(n, "press1") for n in range(3, 53)]
    rows.append(event_row(53, "press1", "machine.state"))  # press1's newest state
    config = mqtt_config(
        broker.port, qos={"sample": 0}, state_topic="{site}/{line}/{machine}/state"
    )
    async with Subscriber(broker.port) as sub:
        await buffer.append(rows)
        async with delivering(buffer, config) as running:
            await wait_drained(buffer, running)
            await wait_until(lambda: sub.event_ids() == {r.id for r in rows}, 30, "received")
    async with Subscriber(broker.port, "+/+/+/state", client_id="state-reader") as reader:
        await wait_until(lambda: len(reader.messages) == 2, 30, "retained states")
        states = {m.topic: m for m in reader.messages}
    assert set(states) == {"plant/line1/press1/state", "plant/line1/press2/state"}
    assert all(m.retain for m in states.values())
    assert states["plant/line1/press1/state"].payload == rows[-1].payload


@pytest.mark.slow
async def test_broker_answers_held_back_nothing_is_acknowledged_then_sent_again_same_ids(
    broker: Mosquitto, buffer: SqliteBuffer
) -> None:
    from tests.forwarders.mqtt.broker import HoldingProxy

    first = [event_row(n, MACHINES[n % 3]) for n in range(1, 31)]
    held = [event_row(n, MACHINES[n % 3]) for n in range(31, 231)]
    async with Subscriber(broker.port) as sub, HoldingProxy(broker.port) as proxy:
        config = mqtt_config(proxy.port, ack_timeout="2s", connect_timeout="2s")
        async with delivering(buffer, config) as running:
            await buffer.append(first)
            await wait_drained(buffer, running)
            proxy.hold()  # publishes reach the broker, its PUBACKs do not come back
            await buffer.append(held)
            running.wake.set()
            held_ids = {r.id for r in held}
            # Mosquitto's Receive Maximum (20 by default) bounds the publishes in flight.
            window = 20
            await wait_until(
                lambda: len(held_ids & sub.event_ids()) >= window, 30, "a window in flight"
            )

            def gave_up() -> bool:
                running.check()
                return running.health.state is not DestinationState.CONNECTED

            await wait_until(gave_up, 30, "the batch timed out waiting for its PUBACKs")
            # The broker has a window of them, but without a PUBACK none is acknowledged,
            # and no more than the window went out unacknowledged.
            assert await pending(buffer) == len(held)
            assert len(held_ids & sub.event_ids()) == window
            assert running.health.delivered == len(first)
            await proxy.cut()
            proxy.release()
            await wait_drained(buffer, running)
    events = sub.events()
    payloads: dict[str, set[bytes]] = defaultdict(set)
    for _, event, raw in events:
        payloads[event["id"]].add(raw)
    assert set(payloads) == {r.id for r in first + held}
    assert all(len(p) == 1 for p in payloads.values()), "a repeat must be the same event"
    assert len(events) > len(first) + len(held), "the held events were sent again"
    first_arrivals_in_order(events)


@pytest.mark.slow
async def test_broker_stopped_and_restarted_mid_stream_every_event_arrives(
    broker: Mosquitto, buffer: SqliteBuffer
) -> None:
    total = 1500
    rows = [event_row(n, MACHINES[n % 3]) for n in range(1, total + 1)]

    async def produce() -> None:
        for start in range(0, total, 30):
            await buffer.append(rows[start : start + 30])
            running.wake.set()
            await asyncio.sleep(0.04)

    config = mqtt_config(broker.port, batch_size=100)
    async with Subscriber(broker.port) as sub, delivering(buffer, config) as running:
        producer = asyncio.create_task(produce())
        await wait_until(lambda: len(sub.event_ids()) >= 200, 30, "flowing")
        await broker.stop()

        def down() -> bool:
            running.check()
            return running.health.state is DestinationState.DISCONNECTED

        await wait_until(down, 30, "health shows the broker down")
        assert "127.0.0.1" in (running.health.last_error or "")
        delivered_while_down = running.health.delivered
        await wait_until(lambda: producer.done(), 60, "producer finished")
        assert await pending(buffer) > 0  # they wait in the buffer
        assert running.health.delivered == delivered_while_down
        await broker.start()
        await wait_drained(buffer, running)
        assert running.health.state is DestinationState.CONNECTED
        await wait_until(lambda: len(sub.event_ids()) == total, 60, "all received")
    events = sub.events()
    payloads: dict[str, set[bytes]] = defaultdict(set)
    for _, event, raw in events:
        payloads[event["id"]].add(raw)
    assert set(payloads) == {r.id for r in rows}
    assert all(len(p) == 1 for p in payloads.values()), "a repeat must be the same event"
    first_arrivals_in_order(events)


async def test_a_send_reports_only_what_the_broker_acknowledged(
    broker: Mosquitto, buffer: SqliteBuffer
) -> None:
    from agent.config.models import AgentSection
    from agent.forwarders.base import NotConnected
    from agent.forwarders.mqtt.forwarder import MqttForwarder

    rows = [event_row(n, "press1") for n in range(1, 11)]
    await buffer.append(rows)
    batch = await buffer.claim("broker", 10)
    forwarder = MqttForwarder(mqtt_config(broker.port), AgentSection(id="gw"))
    with pytest.raises(NotConnected):
        await forwarder.send(batch)  # before connect: nothing is claimed as sent
    await forwarder.connect()
    try:
        result = await forwarder.send(batch)
    finally:
        await forwarder.close()
    assert result == SendResult(delivered=[e.seq for e in batch])
    await broker.stop()
    with pytest.raises(NotConnected, match="connection refused"):
        await forwarder.connect()


@pytest.mark.slow
async def test_an_idle_connection_comes_back_by_itself_and_says_online_again(
    tmp_path: Path, buffer: SqliteBuffer
) -> None:
    broker = Mosquitto(tmp_path / "forgetful", persistence=False)  # retained: lost on restart
    await broker.start()
    try:
        async with delivering(buffer, mqtt_config(broker.port)) as running:
            await wait_until(
                lambda: running.health.state is DestinationState.CONNECTED, 30, "connected"
            )
            await broker.stop()
            # Idle, yet health learns the link is down (not at the next send only).
            await wait_until(
                lambda: running.health.state is DestinationState.DISCONNECTED, 30, "seen down"
            )
            assert "connection lost" in (running.health.last_error or "")
            await broker.start()
            await wait_until(
                lambda: running.health.state is DestinationState.CONNECTED, 30, "seen up"
            )
            async with Subscriber(broker.port) as sub:
                # Nothing was sent meanwhile: paho reconnected on its own and said online.
                await wait_until(lambda: sub.last("floorgate/gw/status") == b"online", 30, "back")
                rows = [event_row(n, "press1") for n in range(1, 4)]
                await buffer.append(rows)
                running.wake.set()
                await wait_until(lambda: sub.event_ids() == {r.id for r in rows}, 30, "flows")
    finally:
        await broker.stop()
    after_restart = broker.log_text().split("running")[-1]
    assert "as floorgate-gw-broker" in after_restart


@pytest.mark.slow
async def test_a_close_during_a_reconnect_attempt_leaves_no_socket_behind(
    broker: Mosquitto,
) -> None:
    forwarder = MqttForwarder(mqtt_config(broker.port), AgentSection(id="gw"))
    await forwarder.connect()
    link = forwarder._link
    assert link is not None
    entered, finished = threading.Event(), threading.Event()
    real = link._reconnect_call

    def slow_reconnect() -> object:  # a slow DNS lookup, TCP connect or TLS handshake
        entered.set()
        time.sleep(1.0)
        try:
            return real()
        finally:
            finished.set()

    link._reconnect_call = slow_reconnect
    await broker.stop()
    await broker.start()  # the idle link dropped: it reconnects by itself
    await wait_until(entered.is_set, 30, "a reconnect attempt under way")
    await forwarder.close()  # while the attempt is still in its thread
    await wait_until(finished.is_set, 30, "the attempt over")
    await wait_until(lambda: link.client.socket() is None, 10, "its socket closed")
