"""MQTT benchmark: a buffered backlog delivered to a real Mosquitto, next to bare paho-mqtt.

    .venv/bin/python bench/mqtt_bench.py [--quick] [--json PATH]

One Mosquitto on a free loopback port (Receive Maximum 100, set_tcp_nodelay, no
persistence, no subscriber: the broker only receives and acknowledges). Per MQTT version
(5, 3.1.1):

- ``floorgate``: a real SqliteBuffer (WAL, synchronous FULL) holding a backlog of
  production.count events (50,000; 10,000 with --quick) is drained by the agent's own
  DeliveryLoop and MqttForwarder (batches of 500, topic from each event's ISA-95 place,
  QoS 1, 100 publishes in flight, each event acknowledged in the buffer after its PUBACK);
- ceiling: a bare paho-mqtt client (its network thread, QoS 1, 100 in flight) publishing
  the same payloads to the same topics, timed until the last PUBACK: no buffer, no claim,
  no ack, no topic building.

Target: the forwarder delivers at least half the bare client's rate.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config.models import AgentSection
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.forwarders.mqtt.config import MqttDestinationConfig
from agent.forwarders.mqtt.forwarder import MqttForwarder
from agent.monitoring.status import DestinationHealth
from agent.pipeline.events import Event, ProductionCountData, format_sequence, uuid7
from bench.common import Row, finish, parser, row
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer

SCENARIO = "MQTT to Mosquitto"
DESTINATION = "uns"
BATCH = 500
IN_FLIGHT = 100
TARGET_RATIO = 0.5
MACHINES = [f"press{n}" for n in range(1, 11)]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            "\n".join(
                [
                    *(["user root"] if os.geteuid() == 0 else []),
                    "allow_anonymous true",
                    "persistence false",
                    f"max_inflight_messages {IN_FLIGHT}",
                    "set_tcp_nodelay true",
                    "log_dest none",
                    f"listener {self.port} 127.0.0.1",
                ]
            )
            + "\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def make_events(count: int) -> list[EventRow]:
    now = datetime.now(UTC)
    rows = []
    for n in range(count):
        machine = MACHINES[n % len(MACHINES)]
        event = Event(
            id=uuid7(),
            source=f"/plant/hall-1/line-1/{machine}",
            type="production.count",
            time=now,
            sequence=format_sequence(n + 1),
            agentid="gw-bench",
            data=ProductionCountData(
                machine=machine,
                signal=f"{machine}.good",
                kind="good",
                quantity=12,
                window_start=now,
                window_end=now,
            ),
        )
        rows.append(
            EventRow(
                event.id,
                event.type.value,
                machine,
                event.time.isoformat(),
                event.to_json(),
                (DESTINATION,),
            )
        )
    return rows


def topic_of(event: EventRow) -> str:
    return f"plant/hall-1/line-1/{event.key}/{event.type}"


def bare_paho(port: int, events: list[EventRow], protocol: MQTTProtocolVersion) -> float:
    """Messages/s of a bare paho client: publish everything, wait for the last PUBACK."""
    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(_: Client, __: Any, ___: int, ____: Any, _____: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked == len(events):
                done.set()

    connected = threading.Event()
    client = Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=protocol)
    client.max_inflight_messages_set(IN_FLIGHT)
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    try:
        if not connected.wait(30):
            raise RuntimeError("bare paho: no CONNACK")
        started = time.perf_counter()
        for event in events:
            client.publish(topic_of(event), event.payload, qos=1)
        if not done.wait(300):
            raise RuntimeError(f"bare paho: {acked} of {len(events)} acknowledged")
        elapsed = time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()
    return len(events) / elapsed


async def forwarder_rate(
    tmp: Path, port: int, events: list[EventRow], protocol: str, batch: int
) -> tuple[float, int]:
    """Events/s drained from a buffered backlog through DeliveryLoop + MqttForwarder."""
    path = tmp / f"buffer-{protocol}.db"
    buffer = await SqliteBuffer.open(path, synchronous="full")
    try:
        for start in range(0, len(events), 10_000):
            await buffer.append(events[start : start + 10_000])
        config = MqttDestinationConfig.model_validate(
            {
                "name": DESTINATION,
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": port,
                "protocol": protocol,
                "batch_size": batch,
                "max_in_flight": IN_FLIGHT,
            }
        )
        forwarder = MqttForwarder(config, AgentSection(id="gw-bench", site="plant"))
        health = DestinationHealth(name=DESTINATION, type="mqtt")
        loop = DeliveryLoop(
            forwarder,
            buffer,
            DeliverySettings(batch_size=batch, retry=config.retry),
            health,
            asyncio.Event(),
        )
        started = time.perf_counter()
        task = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(300):
                while health.delivered < len(events):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        stats = await buffer.stats()
        pending = stats.destinations[DESTINATION].pending
    finally:
        await buffer.close()
    return len(events) / elapsed, pending


async def run_all(quick: bool, batch: int) -> list[Row]:
    count = 10_000 if quick else 50_000
    events = make_events(count)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = Broker(tmp)
        broker.start()
        try:
            versions = (("5", MQTTProtocolVersion.MQTTv5), ("3.1.1", MQTTProtocolVersion.MQTTv311))
            for label, paho_version in versions:
                ceiling = await asyncio.to_thread(bare_paho, broker.port, events, paho_version)
                rate, pending = await forwarder_rate(tmp, broker.port, events, label, batch)
                if pending:
                    raise RuntimeError(f"{pending} events still pending after the drain")
                rows.append(
                    row(
                        SCENARIO,
                        f"delivered events/s, MQTT {label}, QoS 1, {IN_FLIGHT} in flight, "
                        f"batches of {batch} ({count:,} backlog)",
                        rate,
                        "events/s",
                        ceiling=ceiling,
                        ceiling_label=f"bare paho QoS 1, {IN_FLIGHT} in flight",
                        target=f">= {TARGET_RATIO:g} x bare paho",
                        met=rate >= TARGET_RATIO * ceiling,
                    )
                )
        finally:
            broker.stop()
    return rows


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--batch-size", type=int, default=BATCH, help="events per claimed batch")
    args = cli.parse_args()
    finish(asyncio.run(run_all(args.quick, args.batch_size)), args.json)


if __name__ == "__main__":
    main()
