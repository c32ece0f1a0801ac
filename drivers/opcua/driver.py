"""OPC UA source: subscribe or poll one server with asyncua, and recover on its own.

One :class:`OpcUaDriver` owns one endpoint. The asyncua stack lives in this module and
its ``opcua_*`` siblings; nothing else sees an asyncua type or exception.

Each connection is a fresh *session* (:class:`drivers.opcua.session.Session`):
open the secure channel and session, read the namespace array, resolve every node id
(``nsu=`` forms included, so renumbered namespaces do not matter), check that each node
exists, then either create one subscription with all monitored items or poll them. A
node that cannot be used is reported by name (bad samples, ``health.bad_signals``, one
log line) and the others carry on.

Recovery
    - connection lost (server stopped, network, session closed): bad samples for every
      signal once, state DISCONNECTED, then a new client, session and subscription after
      a backoff (1 s doubling up to ``backoff_max``). asyncua's own auto-reconnect is not
      used: it re-creates monitored items with the old numeric node ids, which is wrong
      after a server renumbered its namespaces.
    - subscription silent (no publish response, not even a keep-alive) while the
      connection answers: DEGRADED from the first missed keep-alive window, the
      subscription re-created once on the same session after ``stale_after_intervals``
      publishing intervals (``health.subscription_rebuilds``), and if it stays silent
      for as long again, a new session like after a lost connection (DISCONNECTED,
      backoff, ``health.reconnects``). See drivers/opcua/session.py.
    - a connection that is up but no longer answers: asyncua's watchdog reads the
      server state every ``watchdog_interval`` and reports the loss.

Errors a person must fix (wrong password, certificate not trusted, server certificate
not the configured one, no endpoint with the wanted security) are retried with the same
backoff, shown in ``health.last_error`` and logged once per change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.common.backoff import Backoff
from agent.common.paths import default_state_dir
from agent.common.units import seconds_text
from drivers.base import (
    ConnectionState,
    DriverError,
    LastReads,
    Quality,
    Sample,
    SampleSink,
    SignalRead,
    SourceHealth,
)
from drivers.opcua.config import Mode, OpcUaConfig
from drivers.opcua.session import Session
from drivers.opcua.values import raw_text

log = logging.getLogger("floorgate.drivers.opcua")


class OpcUaDriver:
    """Reads one OPC UA server; see the module docstring."""

    def __init__(self, config: OpcUaConfig, *, state_dir: Path | None = None) -> None:
        self.config = config
        self.name = config.name
        self.health = SourceHealth(config.name)
        self.health.stale_after = _stale_after(config)
        self.state_dir = state_dir or default_state_dir()
        self.reads = LastReads()  # kept across sessions; raw: each signal's Variant
        # Monotonic time the source went down (a failed first connect included); None
        # while a session is open. A session opening after it is a reconnection.
        self._down_since: float | None = None

    def signal_names(self) -> Sequence[str]:
        return [signal.name for signal in self.config.signals]

    def signal_reads(self) -> list[SignalRead]:
        """Each signal's node id, the Variant the server sent, and the decoded value."""
        reads = self.reads
        return [
            SignalRead(
                signal=signal.name,
                address=signal.node_id,
                data_type=None if signal.data_type is None else signal.data_type.value,
                swap=None,
                unit=signal.unit_of_measurement,
                raw=raw_text(reads.raw.get(signal.name)),
                sample=reads.samples.get(signal.name),
                changed=reads.changed.get(signal.name),
            )
            for signal in self.config.signals
        ]

    async def run(self, sink: SampleSink) -> None:
        """Read until cancelled, reconnecting with backoff; never raises on I/O errors."""
        backoff = Backoff(min(1.0, self.config.backoff_max), self.config.backoff_max)
        while True:
            session = Session(self.config, self.health, self.state_dir, sink, self.reads)
            try:
                await session.open()
                self._on_connected()
                await session.serve()
            except DriverError as exc:
                # Start the backoff over only after a session that delivered something:
                # one that opens and then stays silent (a server holding publishes) is
                # retried less and less often, up to backoff_max, like a refused connect.
                if session.proven:
                    backoff.reset()
                delay = backoff.next()
                await self._disconnected(str(exc), sink, delay)
            finally:
                await session.close()
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cancel close() swallowed
                    raise asyncio.CancelledError
            await asyncio.sleep(delay)

    def _on_connected(self) -> None:
        # A session that opens after any failure is a reconnection, a failed first
        # connect included: health must show that the source recovered.
        if self._down_since is None:
            log.info(
                "opcua source connected source=%s endpoint=%s mode=%s items=%s bad_signals=%d",
                self.name,
                self.config.endpoint,
                self.config.mode.value,
                self.health.subscribed_items,
                len(self.health.bad_signals),
            )
            return
        self.health.reconnects += 1
        log.info(
            "opcua source connected again source=%s endpoint=%s after=%ss reconnects=%d "
            "items=%s bad_signals=%d",
            self.name,
            self.config.endpoint,
            seconds_text(time.monotonic() - self._down_since),
            self.health.reconnects,
            self.health.subscribed_items,
            len(self.health.bad_signals),
        )
        self._down_since = None

    async def _disconnected(self, error: str, sink: SampleSink, delay: float) -> None:
        """Enter DISCONNECTED; log and send bad samples on the transition only."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        changed = self.health.set_state(ConnectionState.DISCONNECTED, error)
        self.health.subscribed_items = None
        if not changed:
            log.debug("opcua source still down source=%s error=%r", self.name, error)
            return
        log.warning(
            "opcua source disconnected source=%s endpoint=%s error=%r next=reconnect-in-%ss",
            self.name,
            self.config.endpoint,
            error,
            seconds_text(delay),
        )
        now = datetime.now(UTC)
        self.health.bad_signals = {name: error for name in self.signal_names()}
        samples = [Sample(name, None, Quality.BAD, now, error) for name in self.signal_names()]
        self.reads.raw.clear()
        self.reads.put(samples, time.time())
        await sink(samples)


def _stale_after(config: OpcUaConfig) -> float | None:
    """Seconds without good data after which central health calls the source degraded."""
    if config.mode is Mode.POLL:
        # Every poll delivers every signal: three missed polls is no longer jitter, and
        # one request timeout on top lets a slow read finish (or fail and say why) first.
        return 3 * config.poll_interval + config.timeout
    # Subscribe mode: data arrives only on change, so a steady process (a constant value,
    # a deadband) legitimately sends none for hours, only keep-alives. Health judges by
    # last_data_time, which keep-alives do not move; the session judges by publish
    # responses instead and sets DEGRADED itself after a missed keep-alive window.
    return None
