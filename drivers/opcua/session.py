"""One OPC UA connection, from connect to loss: the part of the OPC UA driver that runs
while a session is up (see drivers/opcua/driver.py for the recovery around it).

Subscribe mode uses asyncua's iterator API (about half the CPU of handler mode). A
collector task moves notifications from the subscription into a bounded queue that the
serve loop drains in batches, so the sink's back-pressure reaches the subscription; if
asyncua's own queue still overflows, the subscription asks for a reconnect
(``OverflowPolicy.DISCONNECT``), which re-sends every current value, rather than
silently dropping changes.

A silent subscription (no publish response, not even a keep-alive) is judged by publish
responses, not by data: a steady process legitimately sends only keep-alives. Escalation:

1. after the first missed keep-alive window the source is DEGRADED, with the silence in
   words in ``last_error``;
2. after ``stale_after`` of silence the subscription is re-created on the same session,
   once (``subscription_rebuilds``): that cures a server that dropped the subscription;
3. still silent one more ``stale_after`` later, :meth:`Session.serve` raises
   NotConnected and the driver opens a new session on a new secure channel, with its
   backoff. asyncua keeps a single PublishRequest outstanding; a server that holds it
   starves every subscription of the session, so no re-creation on that session can
   help (CreateSubscription still succeeds there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)

from agent.common.units import seconds_text
from drivers.base import (
    ConnectionState,
    DriverError,
    LastReads,
    NotConnected,
    Quality,
    Sample,
    SampleSink,
    SourceHealth,
)
from drivers.opcua.config import DeadbandType, Mode, OpcUaConfig, OpcUaSignalConfig
from drivers.opcua.errors import describe, translate
from drivers.opcua.security import apply_security
from drivers.opcua.values import NodeIdError, resolve_node_id, to_sample

log = logging.getLogger("floorgate.drivers.opcua")

CHUNK = 1000  # items per CreateMonitoredItems / Read request
BATCH = 5000  # notifications handed to the sink at most at once
# Slack on top of the keep-alive period before a keep-alive counts as missed. The server
# starts counting keep-alive cycles on the cycle after its last message (one publishing
# interval, added separately), and asyncua sends the next PublishRequest only after it has
# handled the previous response, so a keep-alive that falls due in between waits for one
# round trip; both server and client timers also jitter. One second covers a LAN round
# trip and a busy event loop on either side without hiding a real silence for long.
KEEPALIVE_MARGIN = 1.0


class _Lost:
    """Queue marker: asyncua reported the connection lost."""


_LOST = _Lost()
_Item: TypeAlias = SubEvent | _Lost


class Session:
    """Connect, resolve nodes, then subscribe or poll until the connection is lost."""

    def __init__(
        self,
        config: OpcUaConfig,
        health: SourceHealth,
        state_dir: Path,
        sink: SampleSink,
        reads: LastReads | None = None,
    ) -> None:
        self.config = config
        self.health = health
        # The driver's table of last reads (it outlives the session); raw: the Variant.
        self.reads = reads if reads is not None else LastReads()
        self.state_dir = state_dir
        self.sink = sink
        self.client: Client | None = None
        self.nodes: list[tuple[OpcUaSignalConfig, ua.NodeId]] = []
        self._thumbprint: str | None = None
        self._bad: dict[str, str] = {}
        self._lost_reason: str | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(
            maxsize=max(BATCH, 2 * len(config.signals))
        )
        self._subscription: Subscription | None = None
        self._subscribed_at = 0.0
        # The publishing interval (s) and keep-alive count the server granted.
        self._interval = config.publishing_interval
        self._keepalive_count = config.keepalive_count
        # Monotonic time of the last publish response of this session (data or keep-alive;
        # the first subscription's creation until one arrives).
        self._last_heard: float | None = None
        self._silence: str | None = None  # why the source is degraded for silence
        self._rebuilt_for_silence = False  # re-created once; nothing heard since
        # True once this session delivered something (a publish response, a poll): the
        # driver then starts its reconnect backoff from the beginning again. A session
        # that opens but never delivers (a server holding publishes) must not.
        self.proven = False
        self._collector: asyncio.Task[None] | None = None
        self._handles: dict[int, OpcUaSignalConfig] = {}
        self._absent: dict[str, tuple[OpcUaSignalConfig, str]] = {}  # name -> (signal, why)
        self._next_look = time.monotonic() + config.missing_node_retry

    # -- connect ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and set up reading; raises a DriverError saying what went wrong."""
        config = self.config
        client = Client(
            config.endpoint, timeout=config.timeout, watchdog_intervall=config.watchdog_interval
        )
        # asyncua's own stale-subscription watchdog would re-create silently and forever;
        # ours escalates and is counted in health. (The subscription is built without
        # Client.create_subscription, so that watchdog does not see it anyway.)
        client._stale_check_margin = math.inf
        client.session_timeout = max(60_000.0, 6_000.0 * config.watchdog_interval)
        client.connection_lost_callback = self._on_connection_lost
        self.client = client
        try:
            self._thumbprint = await apply_security(config, client, self.state_dir)
            await client.connect()
            namespaces = await client.get_namespace_array()
            self.nodes = await self._resolve(client, namespaces, self.config.signals)
            if config.mode is Mode.SUBSCRIBE:
                await self._subscribe(client)
            self.health.subscribed_items = len(self.nodes)
        except Exception as exc:  # every asyncua failure becomes a driver error here
            raise self._translate(exc) from None
        self._opened()

    def _translate(self, exc: BaseException) -> DriverError:
        return translate(
            exc,
            endpoint=self.config.endpoint,
            username=self.config.username,
            client_thumbprint=self._thumbprint,
        )

    async def _on_connection_lost(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError) and not str(exc):
            # asyncua's watchdog read of the server state timed out: say so
            why = (
                "the server did not answer the watchdog read of its state within "
                f"{seconds_text(self.config.watchdog_interval)} s (TimeoutError)"
            )
        else:
            why = describe(exc)
        self._lost_reason = f"connection to {self.config.endpoint} lost: {why}"
        with contextlib.suppress(asyncio.QueueFull):  # the serve loop also checks the flag
            self._queue.put_nowait(_LOST)

    async def _resolve(
        self, client: Client, namespaces: list[str], signals: Sequence[OpcUaSignalConfig]
    ) -> list[tuple[OpcUaSignalConfig, ua.NodeId]]:
        """Resolve node ids for this session; return the variables that exist."""
        candidates: list[tuple[OpcUaSignalConfig, ua.NodeId]] = []
        for signal in signals:
            try:
                candidates.append((signal, resolve_node_id(signal.node_id, namespaces)))
            except NodeIdError as exc:
                self._missing(signal, str(exc))
        classes: list[ua.DataValue] = []
        for start in range(0, len(candidates), CHUNK):
            chunk = [node_id for _, node_id in candidates[start : start + CHUNK]]
            classes += await client.uaclient.read_attributes(chunk, ua.AttributeIds.NodeClass)
        found = []
        for (signal, node_id), answer in zip(candidates, classes, strict=True):
            status = answer.StatusCode
            if status is not None and not status.is_good():
                self._missing(signal, f"node not found on the server ({status.name})")
            elif answer.Value is None or answer.Value.Value != ua.NodeClass.Variable:
                self._missing(signal, "node is not a variable (no value to read)")
            else:
                found.append((signal, node_id))
        return found

    def _missing(self, signal: OpcUaSignalConfig, why: str) -> None:
        """Report an unusable node (logged once per reason) and look for it again later."""
        self._bad[signal.name] = f"{signal.node_id}: {why}"
        previous = self._absent.get(signal.name)
        self._absent[signal.name] = (signal, why)
        if previous is not None and previous[1] == why:
            return
        log.warning(
            "opcua node unusable source=%s signal=%s node_id=%s error=%r",
            self.config.name,
            signal.name,
            signal.node_id,
            why,
        )

    def _opened(self) -> None:
        self.health.bad_signals = dict(self._bad)
        self._update_state()

    def _update_state(self) -> None:
        """State from what is wrong now: a silent subscription first (it hides every
        signal), then bad signals; connected (error cleared) when nothing is."""
        if self._silence is not None:
            state, error = ConnectionState.DEGRADED, self._silence
        elif self._bad:
            state, error = ConnectionState.DEGRADED, next(iter(self._bad.values()))
        else:
            state, error = ConnectionState.CONNECTED, None
        if self.health.set_state(state, error):
            log.info(
                "opcua source state source=%s state=%s bad_signals=%d error=%r",
                self.config.name,
                state.value,
                len(self._bad),
                error,
            )

    # -- subscribe -------------------------------------------------------------------

    async def _subscribe(self, client: Client) -> None:
        config = self.config
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=config.publishing_interval * 1000.0,
            RequestedLifetimeCount=max(3 * config.keepalive_count, 300),
            RequestedMaxKeepAliveCount=config.keepalive_count,
            MaxNotificationsPerPublish=0,  # no limit
            PublishingEnabled=True,
            Priority=0,
        )
        # Built like Client.create_subscription does, to keep the server's answer: the
        # keep-alive window is judged on the interval and count the server revised, and
        # asyncua's version would also replace our keep-alive count by one derived from
        # the session timeout whenever the server revises the interval.
        subscription = Subscription(
            client.uaclient.session,
            params,
            None,  # iterator mode
            queue_maxsize=max(10_000, 4 * len(self.nodes)),
            overflow=OverflowPolicy.DISCONNECT,
        )
        subscription.set_overflow_disconnect_handler(self._on_overflow)
        revised = await subscription.init()
        self._interval = (revised.RevisedPublishingInterval or 0.0) / 1000.0 or (
            config.publishing_interval
        )
        self._keepalive_count = int(revised.RevisedMaxKeepAliveCount or 0) or (
            config.keepalive_count
        )
        self._subscription = subscription
        self._subscribed_at = time.monotonic()
        if self._last_heard is None:
            self._last_heard = self._subscribed_at
        self._collector = asyncio.create_task(self._collect(subscription), name="opcua collect")
        self._handles = {}
        self.nodes = await self._monitor(subscription, self.nodes)

    async def _monitor(
        self, subscription: Subscription, nodes: list[tuple[OpcUaSignalConfig, ua.NodeId]]
    ) -> list[tuple[OpcUaSignalConfig, ua.NodeId]]:
        """Create monitored items (handles continue the numbering); return those accepted."""
        first = len(self._handles) + 1
        results: list[int | ua.StatusCode] = []
        # Requests are built a chunk at a time: all 5,000 at once held ~5 MiB of request
        # objects across the round trips, heap that stayed fragmented afterwards.
        for start in range(0, len(nodes), CHUNK):
            requests = [
                self._item_request(handle, signal, node_id)
                for handle, (signal, node_id) in enumerate(
                    nodes[start : start + CHUNK], start=first + start
                )
            ]
            results += await subscription.create_monitored_items(requests)
        accepted = []
        for handle, (signal, node_id), result in zip(
            range(first, first + len(nodes)), nodes, results, strict=True
        ):
            if isinstance(result, ua.StatusCode):
                self._missing(signal, f"server refused to monitor the node ({result.name})")
            else:
                self._handles[handle] = signal
                accepted.append((signal, node_id))
        return accepted

    async def _look_again(self) -> None:
        """Look again for nodes that were missing (a server may add them while running)."""
        now = time.monotonic()
        if not self._absent or now < self._next_look:
            return
        self._next_look = now + self.config.missing_node_retry
        client = self.client
        assert client is not None
        signals = [signal for signal, _ in self._absent.values()]
        try:
            namespaces = await client.get_namespace_array()
            found = await self._resolve(client, namespaces, signals)
            if self._subscription is not None:
                found = await self._monitor(self._subscription, found)
        except Exception as exc:
            raise self._translate(exc) from None
        for signal, _ in found:
            self._absent.pop(signal.name, None)
            self._bad.pop(signal.name, None)
            log.info(
                "opcua node found source=%s signal=%s node_id=%s",
                self.config.name,
                signal.name,
                signal.node_id,
            )
        self.nodes += found
        self.health.subscribed_items = len(self.nodes)

    def _item_request(
        self, handle: int, signal: OpcUaSignalConfig, node_id: ua.NodeId
    ) -> ua.MonitoredItemCreateRequest:
        sampling = signal.sampling_interval
        if sampling is None:
            sampling = self.config.publishing_interval
        parameters = ua.MonitoringParameters(
            ClientHandle=handle,
            SamplingInterval=sampling * 1000.0,
            QueueSize=signal.queue_size,
            DiscardOldest=True,
        )
        if signal.deadband is not None:
            parameters.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=2 if signal.deadband_type is DeadbandType.PERCENT else 1,
                DeadbandValue=signal.deadband,
            )
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=parameters,
        )

    def _on_overflow(self) -> None:
        self._lost_reason = (
            "notifications arrive faster than they are handled: queue overflow, reconnecting "
            "to re-read every value"
        )
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_LOST)

    async def _collect(self, subscription: Subscription) -> None:
        async for event in subscription:
            await self._queue.put(event)

    async def _rebuild_subscription(self, reason: str) -> None:
        """Delete the subscription and create it again on the same session."""
        self.health.subscription_rebuilds += 1
        log.warning("opcua subscription rebuilt source=%s reason=%r", self.config.name, reason)
        await self._drop_subscription()
        assert self.client is not None
        try:
            await self._subscribe(self.client)
        except Exception as exc:
            raise self._translate(exc) from None

    async def _drop_subscription(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            # the collector may also have ended on its own with an asyncua error
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._collector
            self._collector = None
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout):
                    await subscription.delete()

    # -- serve -----------------------------------------------------------------------

    async def serve(self) -> None:
        """Deliver samples until the connection is lost (raises NotConnected)."""
        if self._bad:
            now = datetime.now(UTC)
            bad = [Sample(n, None, Quality.BAD, now, e) for n, e in self._bad.items()]
            self.reads.put(bad, time.time())
            await self.sink(bad)
        if self.config.mode is Mode.SUBSCRIBE:
            await self._serve_subscription()
        else:
            await self._serve_polls()

    def _check_connection(self) -> None:
        client = self.client
        if self._lost_reason is not None:
            raise NotConnected(self._lost_reason)
        if client is None or client.state is not UaClientState.CONNECTED:
            state = "closed" if client is None else client.state.name.lower()
            raise NotConnected(
                f"connection to {self.config.endpoint} lost (the OPC UA client is {state})"
            )

    async def _serve_subscription(self) -> None:
        check_every = max(0.05, min(1.0, self.config.stale_after / 5))
        while True:
            items = await self._next_items(check_every)
            samples: list[Sample] = []
            for item in items:
                if isinstance(item, DataChangeEvent):
                    sample = self._sample_of(item)
                    if sample is not None:
                        samples.append(sample)
                elif isinstance(item, StatusChangeEvent):
                    await self._status_change(item)
            self._check_connection()
            if samples:
                await self._deliver(samples)
            await self._check_silence()
            await self._look_again()

    async def _next_items(self, wait: float) -> list[_Item]:
        try:
            async with asyncio.timeout(wait):
                first = await self._queue.get()
        except TimeoutError:
            return []
        items = [first]
        while len(items) < BATCH and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def _sample_of(self, event: DataChangeEvent) -> Sample | None:
        notification = event.data.monitored_item
        signal = self._handles.get(notification.ClientHandle)
        if signal is None:
            return None
        sample, origin = to_sample(signal.name, notification.Value, signal.data_type)
        # The Variant (not the whole DataValue: less kept per signal), rendered when asked.
        self.reads.raw[signal.name] = notification.Value.Value
        origins = self.health.time_origins
        origins[origin.value] = origins.get(origin.value, 0) + 1
        return sample

    async def _status_change(self, event: StatusChangeEvent) -> None:
        status = event.notification.Status
        if status.is_good():
            return
        self._check_connection()  # BadShutdown after a lost connection: reconnect
        await self._rebuild_subscription(f"server reported subscription status {status.name}")

    def _keepalive_period(self) -> float:
        """Seconds between keep-alives of a quiet subscription, as the server granted."""
        return self._interval * self._keepalive_count

    def _stale_limit(self) -> float:
        """The configured silence limit before re-creating, but never below 1.5 keep-alive
        periods as the server revised them (a server may lengthen the interval or the
        keep-alive count; re-creating a healthy quiet subscription would be worse)."""
        interval = max(self._interval, self.config.publishing_interval)
        return max(interval * self.config.stale_after_intervals, 1.5 * self._keepalive_period())

    async def _check_silence(self) -> None:
        """Escalate a subscription without publish responses; see the module docstring."""
        subscription = self._subscription
        if subscription is None or self._last_heard is None:
            return
        heard = subscription.last_publish_at  # any publish response, keep-alives included
        if heard is not None:
            self.proven = True
            self._rebuilt_for_silence = False
            self._last_heard = max(self._last_heard, heard)
        now = time.monotonic()
        keepalive = self._keepalive_period()
        limit = self._stale_limit()
        silent = now - self._last_heard  # on this session, across re-creations
        if silent <= min(keepalive + self._interval + KEEPALIVE_MARGIN, limit):
            if self._silence is not None:
                log.info(
                    "opcua publish responses again source=%s next=re-read-every-value",
                    self.config.name,
                )
                self._silence = None
                await self._reread()
                self._update_state()
            return
        starting = self._silence is None
        self._check_connection()  # a lost connection explains the silence better
        cause = (
            f"no publish response for {seconds_text(silent)} s "
            f"(keep-alive expected every {seconds_text(keepalive)} s)"
        )
        if now - max(heard or 0.0, self._subscribed_at) > limit:
            if self._rebuilt_for_silence:
                raise NotConnected(
                    f"{cause}; re-creating the subscription on the same session did not "
                    "help: opening a new session"
                )
            self._rebuilt_for_silence = True
            self._silence = cause  # degraded before the round trips of the re-creation
            self._update_state()
            await self._rebuild_subscription(cause)
        if self._rebuilt_for_silence:
            cause += "; subscription re-created on the same session"
        self._silence = cause  # the text follows the growing silence
        self._update_state()
        if starting:
            log.warning(
                "opcua subscription silent source=%s error=%r next=values-bad-until-it-answers",
                self.config.name,
                cause,
            )
            # The last values may no longer be true, and nothing says so: rules must not
            # go on reporting them as good (a sample rule's interval would re-send a
            # frozen value stamped with the current time). Bad, with the cause, until
            # the server answers again.
            when = datetime.now(UTC)
            await self._deliver(
                [Sample(signal.name, None, Quality.BAD, when, cause) for signal, _ in self.nodes]
            )

    async def _reread(self) -> None:
        """Read every value once: after a silence that ended without a new subscription,
        an unchanged value would get no notification and stay bad."""
        await self._read_and_deliver()

    async def _read_and_deliver(self) -> None:
        """One Read of every resolved node, handed to the sink as samples."""
        nodes = list(self.nodes)  # _look_again may add to it between reads
        try:
            values = await self._read(nodes)
        except Exception as exc:
            raise self._translate(exc) from None
        self.proven = True
        origins = self.health.time_origins
        samples = []
        raw = self.reads.raw
        for (signal, _), value in zip(nodes, values, strict=True):
            sample, origin = to_sample(signal.name, value, signal.data_type)
            raw[signal.name] = value.Value
            origins[origin.value] = origins.get(origin.value, 0) + 1
            samples.append(sample)
        if samples:
            await self._deliver(samples)

    # -- poll ------------------------------------------------------------------------

    async def _serve_polls(self) -> None:
        interval = self.config.poll_interval
        next_poll = time.monotonic()
        while True:
            self._check_connection()
            await self._read_and_deliver()
            await self._look_again()
            next_poll += interval
            now = time.monotonic()
            if now > next_poll:  # late: skip missed ticks rather than burst
                next_poll += math.ceil((now - next_poll) / interval) * interval
            await asyncio.sleep(next_poll - now)

    async def _read(self, nodes: list[tuple[OpcUaSignalConfig, ua.NodeId]]) -> list[ua.DataValue]:
        """One Read per 1,000 nodes, straight from the device (MaxAge 0), both timestamps."""
        assert self.client is not None
        reads = [
            ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
            for _, node_id in nodes
        ]
        values: list[ua.DataValue] = []
        for start in range(0, len(reads), CHUNK):
            params = ua.ReadParameters(
                MaxAge=0,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=reads[start : start + CHUNK],
            )
            values += await self.client.uaclient.read(params)
        return values

    # -- health and delivery ---------------------------------------------------------

    async def _deliver(self, samples: Sequence[Sample]) -> None:
        health = self.health
        health.reads += len(samples)
        fresh = False
        for sample in samples:
            if sample.quality is Quality.BAD:
                self._bad[sample.signal] = sample.error or "bad quality"
            else:
                fresh = True
                self._bad.pop(sample.signal, None)
        now = time.time()
        if fresh:
            health.last_data_time = now
        self.reads.put(samples, now)
        health.bad_signals = dict(self._bad)
        self._update_state()
        await self.sink(samples)

    async def close(self) -> None:
        """Release everything; never raises (the connection may already be gone)."""
        await self._drop_subscription()
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.timeout):
                await client.disconnect()
        with contextlib.suppress(Exception):
            client.disconnect_socket()
