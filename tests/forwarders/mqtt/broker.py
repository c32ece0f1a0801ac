"""A real Mosquitto for the tests, a subscriber that records what the broker delivers, and
a TCP proxy that can hold back the broker's answers (PUBACKs) or cut the connection."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.helpers import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


class Mosquitto:
    """One broker on a free loopback port; its config file and log live in ``directory``.

    ``persistence`` keeps retained messages, sessions and queued messages across a
    restart (saved on a clean stop), as a production broker would."""

    def __init__(
        self,
        directory: Path,
        *,
        persistence: bool = True,
        settings: tuple[str, ...] = ("allow_anonymous true",),
        tls: tuple[str, ...] = (),
    ) -> None:
        """``settings``: broker-wide lines; ``tls``: lines for ``port`` (cafile, certfile,
        keyfile, ...). With TLS a second, plain listener (``plain_port``) serves the
        test's subscriber."""
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.plain_port = free_port() if tls else self.port
        self.log = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        lines = [
            # As root, mosquitto would switch to its own user, which cannot write here.
            *(["user root"] if os.geteuid() == 0 else []),
            *settings,
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {directory}/",
            "max_queued_messages 0",  # a subscriber that is away misses nothing
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} 127.0.0.1",
            *tls,
        ]
        if tls:
            lines.append(f"listener {self.plain_port} 127.0.0.1")
        self.config.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def add_user(self, username: str, password: str) -> Path:
        path = self.directory / "passwords"
        flags = ["-b"] if path.exists() else ["-c", "-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(path), username, password], check=True)
        return path

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )

    async def start(self) -> None:
        self._proc = self._spawn()
        async with asyncio.timeout(30):
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.plain_port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)
            await asyncio.to_thread(proc.wait, 30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho client (its own network thread) subscribed with QoS 1 and a persistent
    session, recording every message the broker delivers."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "test-subscriber") -> None:
        self.port = port
        self.topic = topic
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._subscribed = threading.Event()
        self._client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect

    def configure_tls(self, ca_file: Path) -> None:
        self._client.tls_set(ca_certs=str(ca_file))

    def login(self, username: str, password: str) -> None:
        self._client.username_pw_set(username, password)

    def _on_connect(
        self, client: Client, _: Any, __: ConnectFlags, reason: ReasonCode, ___: Properties | None
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_disconnect(
        self, _: Client, __: Any, ___: DisconnectFlags, ____: ReasonCode, _____: Any
    ) -> None:
        self._subscribed.clear()

    def _on_subscribe(self, _: Client, __: Any, ___: int, ____: Any, _____: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _: Client, __: Any, message: MQTTMessage) -> None:
        with self._lock:
            self._messages.append(Received(message.topic, message.payload, message.retain))

    async def start(self) -> None:
        await asyncio.to_thread(self._client.connect, "127.0.0.1", self.port, 30)
        self._client.loop_start()
        await asyncio.to_thread(self._subscribed.wait, 30)
        assert self._subscribed.is_set(), "no SUBACK"

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._client._reset_sockets()

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def on(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        payloads = self.on(topic)
        return payloads[-1] if payloads else None

    def events(self) -> list[tuple[str, dict[str, Any], bytes]]:
        """(topic, parsed CloudEvent, raw payload) of every event message, in arrival order."""
        found = []
        for message in self.messages:
            if message.payload.startswith(b"{"):
                found.append((message.topic, orjson.loads(message.payload), message.payload))
        return found

    def event_ids(self) -> set[str]:
        return {event["id"] for _, event, _ in self.events()}


class HoldingProxy:
    """TCP proxy to the broker. ``hold()`` keeps everything the broker says (CONNACK,
    PUBACK) from reaching the client while the client's publishes still go through;
    ``release()`` lets them flow again; ``cut()`` closes every proxied connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._held = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.release()
        await self.cut()
        await self._server.wait_closed()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def cut(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, held=False), self._pump(up_reader, writer, held=True)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, held: bool
    ) -> None:
        while data := await reader.read(65536):
            while held and not self._released.is_set():
                if writer.is_closing():  # cut while held: what was held is gone
                    return
                await asyncio.sleep(0.01)
            writer.write(data)
            await writer.drain()
        writer.close()
