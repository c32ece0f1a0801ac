"""MQTT destination: one message per event, delivered when the broker's PUBACK arrives.

What is published
-----------------
- Every event, as its buffered CloudEvent JSON (never re-serialised; the event ``id`` is
  inside, so a subscriber drops repeats by id), on the ``topic`` template filled from the
  event's ISA-95 place (its CloudEvent ``source`` ``/site/area/line/machine``) and
  ``{type}``. QoS 1 unless ``qos`` names 0 for that event type.
- With ``state_topic``: each ``machine.state`` event once more, retained, so a new
  subscriber reads every machine's current state at once.
- ``status_topic`` (``floorgate/<agent id>/status``), retained: ``online`` after every
  connect, ``offline`` on a clean close, and ``offline`` as the last will, which the broker
  publishes itself when the gateway vanishes (crash, power cut, network down).

Delivery
--------
A batch is published in order, up to ``max_in_flight`` publishes awaiting their PUBACK at
once (paho queues the rest in order), so events of one machine reach the broker in the
order they were buffered (within one QoS level). ``send`` returns only the events whose
PUBACK arrived (QoS 0: whose bytes were written); the delivery loop acknowledges exactly
those in the buffer. An event is never reported delivered before its PUBACK.

The client id is stable (default ``floorgate-<agent id>-<destination>``) and the session
persistent (MQTT 3.1.1 clean session false; MQTT 5 clean start false with
``session_expiry``). A connection that drops while idle is re-established by the link,
with backoff (and says ``online`` again). A connection that drops or stops answering
during a batch is closed for good, and the batch's unacknowledged events are sent again
on a new connection — the same ids, so a repeat is harmless.

What goes wrong, and what the delivery loop is told
---------------------------------------------------
- Connection refused, host not found, connect timeout, TLS handshake failure, broker
  unavailable or busy, connection lost, no PUBACK within ``ack_timeout``: ``NotConnected``.
- Bad user name or password, not authorised, client id refused, banned, unsupported
  protocol version: ``Fatal`` (a person must act).
- The broker's certificate is not trusted or does not match the host: ``Fatal``, saying so.
- Password file or TLS files unreadable: ``Fatal``.
- An MQTT 5 PUBACK refusing one message (not authorised on that topic, invalid topic or
  payload): that event is rejected (dead-lettered with the reason). Quota exceeded:
  kept for retry. MQTT 3.1.1 has no such answer: Mosquitto acknowledges a publish its ACL
  denies, so use MQTT 5 where the ACL matters.

paho-mqtt is used only in this module, without its network thread: the event loop
watches paho's socket and calls paho when it is readable or writable, so every paho
callback runs on the loop and all state is kept there (see ``_Link``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.common.backoff import Backoff
from agent.common.errors import describe
from agent.common.secrets import SecretError, read_secret
from agent.config.models import AgentSection
from agent.forwarders.base import Fatal, ForwardError, NotConnected, SendResult
from agent.forwarders.mqtt.config import (
    Message,
    MqttDestinationConfig,
    MqttProtocol,
    TopicBuilder,
    default_client_id,
)
from buffer.rows import ClaimedEvent

log = logging.getLogger("floorgate.forwarders.mqtt")
P = ParamSpec("P")

ONLINE = b"online"
OFFLINE = b"offline"
CLOSE_GRACE = 2.0  # longest wait for the offline status's PUBACK
RECONNECT_DELAY = (1, 30)  # backoff (s) when an open connection dropped

# CONNACK reason codes (MQTT 3.1.1 codes arrive mapped to these by paho) that a retry can
# cure; every other refusal needs a person.
_CONNACK_RETRYABLE = frozenset({0x80, 0x88, 0x89, 0x97})  # unspecified, unavailable, busy, quota
# PUBACK reason codes that mean "later", not "never".
_PUBACK_RETRYABLE = frozenset({0x91, 0x97})  # packet id in use, quota exceeded


def _no_delay(sock: Any) -> None:
    """paho leaves Nagle's algorithm on: the last publishes of a batch would wait for the
    broker's delayed ACK (~40 ms) before leaving."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _logged(callback: Callable[P, None]) -> Callable[P, None]:
    """A paho callback that logs its own exception instead of raising into paho."""

    @functools.wraps(callback)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            log.exception("mqtt callback failed callback=%s", callback.__name__)

    return run


@dataclass(eq=False)  # identity: trackers are kept in sets
class _Tracker:
    """The publishes of one batch awaiting their acknowledgement."""

    waiting: set[int] = field(default_factory=set)
    answers: dict[int, ReasonCode] = field(default_factory=dict)
    topics: dict[int, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _LinkLost(Exception):
    pass


class _Link:
    """One connection: a paho client driven by the event loop, and the publishes in flight.

    paho runs without its network thread: the loop watches its socket and calls paho's
    loop_read / loop_write when it is readable / writable, and loop_misc every second
    (keep-alive pings). Every paho callback then runs on the loop. Only connecting (DNS,
    TCP, TLS handshake: blocking) runs in a worker thread; the socket callbacks paho calls
    from there are handed to the loop. With paho's own network thread, the loop and that
    thread took turns at the GIL for every message: a drain to Mosquitto reached about
    half of bare paho's rate; driven by the loop, about 0.7 (bench/mqtt_bench.py)."""

    def __init__(
        self,
        client: Client,
        where: str,
        status_topic: str,
        tls: bool,
        in_flight: int,
        reconnect: Callable[[], object],
    ) -> None:
        self.client = client
        self.in_flight = in_flight
        self.tls = tls
        self.where = where
        self.connected = False
        self.lost_reason = "not connected yet"
        self.receive_maximum: int | None = None
        self._status_topic = status_topic
        self._reconnect_call = reconnect
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # The CONNACK's reason code, or why the connection ended before one came.
        self._first_answer: asyncio.Future[ReasonCode | str] = self._loop.create_future()
        self._trackers: dict[int, _Tracker] = {}
        self._read_fd: int | None = None  # paho's socket, watched for reading
        self._write_fd: int | None = None  # ... and for writing, while paho has bytes
        self._closing = False
        self._refused: str | None = None  # why the last CONNACK refused, until one accepts
        self._answered = asyncio.Event()  # set by every CONNACK and every drop
        self._misc: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        # A callback that raises would abort paho's read or write: each one logs its own
        # failure (see _logged), and paho is told to carry on regardless.
        client.suppress_exceptions = True
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_register_write
        client.on_socket_unregister_write = self._socket_unregister_write

    @property
    def too_many_in_flight(self) -> bool:
        return self.receive_maximum is not None and self.receive_maximum < self.in_flight

    # --- the socket, watched by the loop ---------------------------------------------

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run now when on the loop's thread, else hand it to the loop (connecting)."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(callback, *args)

    def _socket_open(self, _: Client, __: Any, sock: Any) -> None:
        _no_delay(sock)
        self._on_loop(self._watch, sock)

    def _socket_close(self, _: Client, __: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _socket_register_write(self, _: Client, __: Any, sock: Any) -> None:
        self._on_loop(self._watch_writes, sock)

    def _socket_unregister_write(self, _: Client, __: Any, sock: Any) -> None:
        self._on_loop(self._unwatch_writes, sock)

    # Watched by file descriptor number: a socket paho closed from the connect thread
    # reports fileno() -1 by the time the loop hears of it.

    def _watch(self, sock: Any) -> None:
        fd = sock.fileno()
        if self._closing or fd < 0:
            return
        self._unwatch(sock)
        self._read_fd = fd
        self._loop.add_reader(fd, self._readable)

    def _unwatch(self, _: Any) -> None:
        self._unwatch_writes(None)
        if self._read_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._read_fd)
            self._read_fd = None

    def _watch_writes(self, sock: Any) -> None:
        fd = sock.fileno()
        if self._closing or fd < 0 or fd != self._read_fd or self._write_fd == fd:
            return
        self._write_fd = fd
        self._loop.add_writer(fd, self._writable)

    def _unwatch_writes(self, _: Any) -> None:
        if self._write_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self._write_fd)
            self._write_fd = None

    def _readable(self) -> None:
        client = self.client
        client.loop_read()
        # TLS: a record may hold more than paho read; those bytes wait in the SSL object
        # while the socket itself is no longer readable, so read them now.
        sock = client.socket()
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            sock = client.socket()

    def _writable(self) -> None:
        self.client.loop_write()

    async def _keep_alive(self) -> None:
        """paho's periodic work: PINGREQ when due, and a dead broker noticed."""
        while True:
            await asyncio.sleep(1.0)
            self.client.loop_misc()

    # --- paho's callbacks (on the loop) ------------------------------------------------

    @_logged
    def _paho_connect(
        self,
        client: Client,
        _: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        # An MQTT 5 broker may allow fewer publishes in flight than configured; paho
        # neither honours that nor lets it be changed on an open connection, so the
        # forwarder reconnects with the broker's number (and says online only then).
        receive_maximum = getattr(props, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            self.receive_maximum = receive_maximum
        if not reason.is_failure and not self.too_many_in_flight:
            client.publish(self._status_topic, ONLINE, qos=1, retain=True)
        if not reason.is_failure:
            if self._first_answer.done():
                log.info(
                    "mqtt reconnected %s session_present=%s", self.where, flags.session_present
                )
            self.connected = True
            self._refused = None
        else:  # kept as the reason through the drop that follows (e.g. a rotated password)
            self._refused = str(_refusal(self.where, reason))
        self._answered.set()
        if not self._first_answer.done():
            self._first_answer.set_result(reason)

    @_logged
    def _paho_disconnect(
        self, _: Client, __: Any, flags: DisconnectFlags, reason: ReasonCode, ___: Properties | None
    ) -> None:
        if self._refused is not None:
            why = self._refused
        elif flags.is_disconnect_packet_from_server:
            why = f"the broker closed the connection: {reason}"
        else:
            why = "connection lost"
        was_open = self.connected
        if was_open and not self._trackers and not self._closing:
            log.warning(
                "mqtt connection lost while idle %s reason=%r next=reconnect", self.where, why
            )
        self.connected = False
        self.lost_reason = why
        self._answered.set()
        if not self._first_answer.done():
            self._first_answer.set_result(why)
        for tracker in set(self._trackers.values()):
            tracker.done.set()
        # Only an open connection is re-established here: one that never opened is the
        # caller's to retry, and a reconnect under way goes on by itself.
        if was_open and not self._closing and self._reconnecting is None:
            self._reconnecting = self._loop.create_task(self._reconnect(), name="mqtt reconnect")

    @_logged
    def _paho_publish(
        self, _: Client, __: Any, mid: int, reason: ReasonCode, ___: Properties | None
    ) -> None:
        tracker = self._trackers.pop(mid, None)
        if tracker is not None:
            tracker.waiting.discard(mid)
            tracker.answers[mid] = reason
            if not tracker.waiting:
                tracker.done.set()

    async def _reconnect(self) -> None:
        """A connection that dropped while open: connect again with backoff (as paho's
        own network thread would), until it is back or the link is closed."""
        backoff = Backoff(*RECONNECT_DELAY)
        try:
            while not self._closing and not self.connected:
                await asyncio.sleep(backoff.next())
                self._answered.clear()
                if self.client.socket() is not None:  # close the last try's socket here,
                    self._discard_sockets()  # not in the thread while the loop watches it
                try:
                    await self._connect_in_thread(self._reconnect_call)
                except ForwardError as exc:
                    self.lost_reason = str(exc)
                    continue
                # The CONNACK (or the next drop) comes through the socket now watched.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECONNECT_DELAY[1]):
                        await self._answered.wait()
        finally:
            self._reconnecting = None

    # --- the event loop --------------------------------------------------------------

    async def open(self, connect: Callable[[], object], within: float) -> None:
        """Connect (blocking socket and TLS work in a thread), then let the loop drive
        the socket, and wait for the CONNACK."""
        await self._connect_in_thread(connect)
        self._misc = self._loop.create_task(self._keep_alive(), name="mqtt keep-alive")
        try:
            async with asyncio.timeout(within):
                reason = await self._first_answer
        except TimeoutError:
            raise NotConnected(f"{self.where}: no CONNACK within {within:g}s") from None
        if isinstance(reason, str):
            hint = " (does the broker require a client certificate?)" if self.tls else ""
            raise NotConnected(f"{self.where}: {reason} before the CONNACK{hint}")
        if reason.is_failure:
            raise _refusal(self.where, reason)

    def publish(self, tracker: _Tracker, message: Message, payload: bytes) -> int:
        try:
            info: MQTTMessageInfo = self.client.publish(
                message.topic, payload, qos=message.qos, retain=message.retain
            )
        except ValueError as exc:  # paho refuses the topic or payload itself
            raise _Refused(describe(exc, "paho refused the topic or the payload")) from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise _LinkLost(f"publish failed: {info.rc.name}")
        tracker.waiting.add(info.mid)
        tracker.topics[info.mid] = message.topic
        self._trackers[info.mid] = tracker
        return info.mid

    async def wait(self, tracker: _Tracker, within: float) -> None:
        """Until every publish is answered; _LinkLost when the connection drops first."""
        try:
            async with asyncio.timeout(within):
                while tracker.waiting and self.connected:
                    tracker.done.clear()
                    await tracker.done.wait()
        except TimeoutError:
            raise _LinkLost(f"no PUBACK within {within:g}s") from None
        finally:
            for mid in tracker.waiting:
                self._trackers.pop(mid, None)
        if tracker.waiting:
            raise _LinkLost(self.lost_reason)

    async def close(self, say_offline: bool) -> None:
        """Say offline (bounded), disconnect, stop watching the socket and close it."""
        client = self.client
        if say_offline and self.connected:
            tracker = _Tracker()
            with contextlib.suppress(_LinkLost, _Refused):
                self.publish(tracker, Message(self._status_topic, 1, True), OFFLINE)
                await self.wait(tracker, CLOSE_GRACE)
        self._closing = True
        self.connected = False
        tasks = [task for task in (self._misc, self._reconnecting) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        client.drop_out_messages()  # the buffer still has them; nothing may resend them
        client.disconnect()
        # The DISCONNECT goes out now if the socket takes it (it is non-blocking: a dead
        # peer cannot hold the close up); writing it makes paho close the socket.
        with contextlib.suppress(OSError):
            client.loop_write()
        self._discard_sockets()

    async def _connect_in_thread(self, connect: Callable[[], object]) -> None:
        """The blocking connect (DNS, TCP, TLS) in a worker thread. Cancelled, the
        thread still finishes its attempt: whatever it opened is closed then."""
        attempt = asyncio.ensure_future(asyncio.to_thread(connect))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(self._discard_after)
            raise

    def _discard_after(self, attempt: asyncio.Future[object]) -> None:
        if not attempt.cancelled():
            attempt.exception()  # retrieved: a failed attempt is no news after a cancel
        self._discard_sockets()

    def _discard_sockets(self) -> None:
        # paho has no public call that closes its socket; left to its __del__ it would
        # close during garbage collection, with a ResourceWarning.
        self._unwatch(None)
        self.client._reset_sockets()


class _Refused(Exception):
    """The broker (or paho) refused one message for good."""


def _refusal(where: str, reason: ReasonCode) -> ForwardError:
    message = f"{where}: broker refused the connection: {reason}"
    if reason.value in _CONNACK_RETRYABLE:
        return NotConnected(message)
    if reason.value in (0x86, 0x87):
        return Fatal(f"{message}; check username and password")
    return Fatal(message)


def _connect_error(where: str, exc: BaseException, tls: str) -> ForwardError:
    """A blocking connect's exception as one of our kinds, in words for a person."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Fatal(
            f"{where}: the broker's TLS certificate is not trusted: {exc.verify_message}; "
            f"check tls.ca_file ({tls}) and that host matches the certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return NotConnected(f"{where}: TLS handshake failed: {exc.reason or describe(exc)}")
    if isinstance(exc, TimeoutError):
        return NotConnected(f"{where}: connect timed out")
    if isinstance(exc, ConnectionRefusedError):
        return NotConnected(f"{where}: connection refused (is the broker running?)")
    if isinstance(exc, socket.gaierror):
        return NotConnected(f"{where}: cannot resolve the host: {exc.strerror or describe(exc)}")
    if isinstance(exc, OSError):
        said = exc.strerror or describe(exc, "the connection failed")
        return NotConnected(f"{where}: cannot connect: {said}")
    return Fatal(f"{where}: cannot connect: {describe(exc)}")


class _TlsContext(ssl.SSLContext):
    """Remembers the TLS socket it wrapped last: when the handshake fails, paho drops the
    socket without closing it, so the connect closes it instead."""

    _last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._last = super().wrap_socket(*args, **kwargs)
        return self._last

    def close_last(self) -> None:
        if self._last is not None:
            self._last.close()

    def forget_last(self) -> None:
        self._last = None


class MqttForwarder:
    """Publishes batches to one MQTT broker over one persistent-session connection."""

    def __init__(self, config: MqttDestinationConfig, agent: AgentSection) -> None:
        self.name = config.name
        self._config = config
        self.client_id = config.client_id or default_client_id(agent.id, config.name)
        self.status_topic = config.status_topic.format(agent_id=agent.id)
        self._topics = TopicBuilder(config, agent.id)
        scheme = "mqtts" if config.tls is not None else "mqtt"
        self._where = (
            f"destination {config.name} ({scheme}://{config.host}:{config.effective_port})"
        )
        self._link: _Link | None = None
        self._in_flight = config.max_in_flight
        self._tls: _TlsContext | None = None

    def link_problem(self) -> str | None:
        """paho reconnects by itself; while it is at it, health says so."""
        link = self._link
        if link is None or link.connected:
            return None
        return f"{self._where}: connection lost ({link.lost_reason}); reconnecting"

    async def connect(self) -> None:
        await self.close()
        link = await self._open_link()
        if link.too_many_in_flight and link.receive_maximum is not None:
            log.info(
                "mqtt broker allows fewer publishes in flight %s configured=%d broker=%d",
                self._where,
                self._in_flight,
                link.receive_maximum,
            )
            self._in_flight = link.receive_maximum
            await link.close(say_offline=False)
            link = await self._open_link()
        self._link = link
        log.debug("mqtt connected %s client_id=%s", self._where, self.client_id)

    async def _open_link(self) -> _Link:
        client = self._new_client()
        tls = self._config.tls is not None
        link = _Link(
            client,
            self._where,
            self.status_topic,
            tls,
            self._in_flight,
            reconnect=self._blocking_connect(client, again=True),
        )
        try:
            await link.open(self._blocking_connect(client), self._config.connect_timeout)
        except BaseException:
            await link.close(say_offline=False)
            raise
        return link

    def _new_client(self) -> Client:
        config = self._config
        v5 = config.protocol is MqttProtocol.V5
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # the link reconnects (paho's loop is not used)
        )
        client.max_inflight_messages_set(self._in_flight)
        client.max_queued_messages_set(0)  # bounded by the batch size instead
        client.connect_timeout = config.connect_timeout
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        if config.username is not None:
            client.username_pw_set(config.username, self._password())
        if config.tls is not None:
            self._tls = self._tls_context()
            client.tls_set_context(self._tls)
        return client

    def _blocking_connect(self, client: Client, again: bool = False) -> Callable[[], object]:
        """The blocking connect, for a worker thread; ``again``: reconnect with what the
        first connect set (paho keeps host, properties and clean start)."""
        config = self._config
        if again:
            call: Callable[[], object] = client.reconnect
        elif config.protocol is MqttProtocol.V5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = int(config.session_expiry)
            call = functools.partial(
                client.connect,
                config.host,
                config.effective_port,
                int(config.keep_alive),
                clean_start=False,
                properties=properties,
            )
        else:
            call = functools.partial(
                client.connect, config.host, config.effective_port, int(config.keep_alive)
            )
        ca_file = config.tls.ca_file if config.tls is not None else None
        tls = str(ca_file) if ca_file is not None else "the system's CAs"

        context = self._tls

        def connect() -> object:
            try:
                return call()
            except Exception as exc:
                if context is not None:
                    context.close_last()
                raise _connect_error(self._where, exc, tls) from None
            finally:
                if context is not None:
                    context.forget_last()

        return connect

    def _password(self) -> str | None:
        if self._config.password is None:
            return None
        try:
            return read_secret(self._config.password)
        except SecretError as exc:
            raise Fatal(f"{self._where}: password: {exc}") from None

    def _tls_context(self) -> _TlsContext:
        tls = self._config.tls
        assert tls is not None
        context = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and host name
        key = f"tls.ca_file {tls.ca_file}"
        try:
            if tls.ca_file is not None:
                context.load_verify_locations(cafile=str(tls.ca_file))
            else:
                context.load_default_certs()
            if tls.cert_file is not None and tls.key_file is not None:
                key = f"tls.cert_file {tls.cert_file} / tls.key_file {tls.key_file}"
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise Fatal(f"{self._where}: cannot load {key}: {reason}") from None
        return context

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(say_offline=True)

    async def send(self, batch: Sequence[ClaimedEvent]) -> SendResult:
        result = SendResult()
        link = self._link
        if not batch:
            return result
        if link is None or not link.connected:
            reason = link.lost_reason if link is not None else "not connected"
            raise NotConnected(f"{self._where}: {reason}")
        tracker = _Tracker()
        mids: dict[int, list[int]] = {}  # seq -> its publishes
        try:
            for event in batch:
                try:
                    messages = self._topics.messages(event.type, event.payload)
                    mids[event.seq] = [link.publish(tracker, m, event.payload) for m in messages]
                except (ValueError, _Refused) as exc:
                    result.rejected[event.seq] = f"{self._where}: {exc}"
            await link.wait(tracker, self._config.ack_timeout)
            lost = None
        except _LinkLost as exc:
            lost = exc
        self._judge(batch, mids, tracker, result)
        if lost is not None:
            # Close for good: paho must not resend what the buffer will send again.
            self._link = None
            await link.close(say_offline=False)
            if not result.delivered and not result.rejected:
                raise NotConnected(f"{self._where}: {lost}")
            log.warning("mqtt batch cut short %s error=%r next=reconnect", self._where, str(lost))
        return result

    def _judge(
        self,
        batch: Sequence[ClaimedEvent],
        mids: dict[int, list[int]],
        tracker: _Tracker,
        result: SendResult,
    ) -> None:
        """Delivered: every publish of the event acknowledged. Rejected: one refused."""
        for event in batch:
            published = mids.get(event.seq, [])
            answers = [tracker.answers.get(mid) for mid in published]
            if event.seq in result.rejected or not answers or None in answers:
                continue
            refused = [(m, tracker.answers[m]) for m in published if tracker.answers[m].is_failure]
            if not refused:
                result.delivered.append(event.seq)
            elif all(reason.value not in _PUBACK_RETRYABLE for _, reason in refused):
                mid, reason = refused[0]
                topic = tracker.topics.get(mid, "?")
                result.rejected[event.seq] = (
                    f"{self._where}: broker refused the publish on {topic}: {reason}"
                )
