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
``session_expiry``). A connection that drops while idle is re-established by paho in its
network thread (and says ``online`` again). A connection that drops or stops answering
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

paho-mqtt is used only in this module. Its callbacks run in paho's network thread and do
nothing but hand their facts to the event loop; all state is kept on the loop.
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

from agent.config.models import AgentSection
from agent.forwarders.base import Fatal, ForwardError, NotConnected, SendResult
from agent.forwarders.mqtt_config import (
    Message,
    MqttDestinationConfig,
    MqttProtocol,
    TopicBuilder,
    default_client_id,
)
from buffer.rows import ClaimedEvent
from drivers.secrets import SecretError, read_secret

log = logging.getLogger("floorgate.forwarders.mqtt")
P = ParamSpec("P")

ONLINE = b"online"
OFFLINE = b"offline"
CLOSE_GRACE = 2.0  # longest wait for the offline status's PUBACK, then for the thread
RECONNECT_DELAY = (1, 30)  # paho's own backoff (s) when an idle connection dropped

# CONNACK reason codes (MQTT 3.1.1 codes arrive mapped to these by paho) that a retry can
# cure; every other refusal needs a person.
_CONNACK_RETRYABLE = frozenset({0x80, 0x88, 0x89, 0x97})  # unspecified, unavailable, busy, quota
# PUBACK reason codes that mean "later", not "never".
_PUBACK_RETRYABLE = frozenset({0x91, 0x97})  # packet id in use, quota exceeded


class _Inbox:
    """Hands acknowledgements from paho's thread to the loop: one wake-up per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Callable[[list[Any]], None]):
        self._loop = loop
        self._handler = handler
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._scheduled = False

    def put(self, item: Any) -> None:  # network thread
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        _call_on_loop(self._loop, self._drain)

    def _drain(self) -> None:  # event loop
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        self._handler(items)


def _call_on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(callback, *args)


def _no_delay(_: Client, __: Any, sock: Any) -> None:
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
    """One connection: a paho client, its network thread, and the publishes in flight."""

    def __init__(
        self, client: Client, where: str, status_topic: str, tls: bool, in_flight: int
    ) -> None:
        self.client = client
        self.in_flight = in_flight
        self.tls = tls
        self.where = where
        self.connected = False
        self.lost_reason = "not connected yet"
        self.receive_maximum: int | None = None
        self._status_topic = status_topic
        self._loop = asyncio.get_running_loop()
        # The CONNACK's reason code, or why the connection ended before one came.
        self._first_answer: asyncio.Future[ReasonCode | str] = self._loop.create_future()
        self._trackers: dict[int, _Tracker] = {}
        self._inbox = _Inbox(self._loop, self._settle)
        self._started = False
        # A callback that raises would end paho's network thread: each one logs its own
        # failure (see _logged), and paho is told to carry on regardless.
        client.suppress_exceptions = True
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_socket_open = _no_delay

    @property
    def too_many_in_flight(self) -> bool:
        return self.receive_maximum is not None and self.receive_maximum < self.in_flight

    # --- paho's network thread: hand over, nothing else -----------------------------

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
        _call_on_loop(self._loop, self._on_connect, reason, flags.session_present)

    @_logged
    def _paho_disconnect(
        self, _: Client, __: Any, flags: DisconnectFlags, reason: ReasonCode, ___: Properties | None
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            why = f"the broker closed the connection: {reason}"
        else:
            why = "connection lost"
        _call_on_loop(self._loop, self._on_disconnect, why)

    @_logged
    def _paho_publish(
        self, _: Client, __: Any, mid: int, reason: ReasonCode, ___: Properties | None
    ) -> None:
        self._inbox.put((mid, reason))

    # --- the event loop --------------------------------------------------------------

    def _on_connect(self, reason: ReasonCode, session_present: bool) -> None:
        if not reason.is_failure:
            if self._first_answer.done():
                log.info("mqtt reconnected %s session_present=%s", self.where, session_present)
            self.connected = True
        if not self._first_answer.done():
            self._first_answer.set_result(reason)

    def _on_disconnect(self, reason: str) -> None:
        if self.connected and not self._trackers:
            log.warning(
                "mqtt connection lost while idle %s reason=%r next=reconnect", self.where, reason
            )
        self.connected = False
        self.lost_reason = reason
        if not self._first_answer.done():
            self._first_answer.set_result(reason)
        for tracker in set(self._trackers.values()):
            tracker.done.set()

    def _settle(self, answers: list[tuple[int, ReasonCode]]) -> None:
        for mid, reason in answers:
            tracker = self._trackers.pop(mid, None)
            if tracker is not None:
                tracker.waiting.discard(mid)
                tracker.answers[mid] = reason
                if not tracker.waiting:
                    tracker.done.set()

    async def open(self, connect: Callable[[], object], within: float) -> None:
        """Connect (blocking socket and TLS work in a thread), start paho's network
        thread, and wait for the CONNACK."""
        connecting = asyncio.ensure_future(asyncio.to_thread(connect))
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # The thread finishes its connect regardless: close what it opened then.
            connecting.add_done_callback(lambda _: self._discard_sockets())
            raise
        self.client.loop_start()
        self._started = True
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
            raise _Refused(str(exc)) from None
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
        """Say offline (bounded), disconnect, stop the network thread, close sockets."""
        client = self.client
        if say_offline and self.connected:
            tracker = _Tracker()
            with contextlib.suppress(_LinkLost, _Refused):
                self.publish(tracker, Message(self._status_topic, 1, True), OFFLINE)
                await self.wait(tracker, CLOSE_GRACE)
        self.connected = False
        client.drop_out_messages()  # the buffer still has them; nothing may resend them
        client.disconnect()
        if self._started:
            self._started = False
            stopping = asyncio.ensure_future(asyncio.to_thread(client.loop_stop))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await asyncio.shield(stopping)
            if not stopping.done():  # stuck writing to a dead peer: cut the socket
                with contextlib.suppress(OSError, AttributeError):
                    client.socket().close()  # type: ignore[union-attr]
                stopping.add_done_callback(lambda _: self._discard_sockets())
                return
        self._discard_sockets()

    def _discard_sockets(self) -> None:
        # paho has no public call that closes its socket and wake-up socket pair once
        # the thread has stopped; left to its __del__ they would close during garbage
        # collection, in any order, with a ResourceWarning.
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
        return NotConnected(f"{where}: TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, TimeoutError):
        return NotConnected(f"{where}: connect timed out")
    if isinstance(exc, ConnectionRefusedError):
        return NotConnected(f"{where}: connection refused (is the broker running?)")
    if isinstance(exc, socket.gaierror):
        return NotConnected(f"{where}: cannot resolve the host: {exc.strerror}")
    if isinstance(exc, OSError):
        return NotConnected(f"{where}: cannot connect: {exc.strerror or exc}")
    return Fatal(f"{where}: cannot connect: {exc}")


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
        link = _Link(client, self._where, self.status_topic, tls, self._in_flight)
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
            reconnect_on_failure=True,
        )
        client.max_inflight_messages_set(self._in_flight)
        client.max_queued_messages_set(0)  # bounded by the batch size instead
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.connect_timeout = config.connect_timeout
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        if config.username is not None:
            client.username_pw_set(config.username, self._password())
        if config.tls is not None:
            self._tls = self._tls_context()
            client.tls_set_context(self._tls)
        return client

    def _blocking_connect(self, client: Client) -> Callable[[], object]:
        config = self._config
        if config.protocol is MqttProtocol.V5:
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
