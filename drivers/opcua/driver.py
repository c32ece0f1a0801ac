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
    - subscription silent (no data change and no keep-alive for
      ``stale_after_intervals`` publishing intervals) while the connection answers:
      the subscription is deleted and created again (``health.subscription_rebuilds``);
      if that fails, the whole session is rebuilt.
    - a connection that is up but no longer answers: asyncua's watchdog reads the
      server state every ``watchdog_interval`` and reports the loss.

Errors a person must fix (wrong password, certificate not trusted, server certificate
not the configured one, no endpoint with the wanted security) are retried with the same
backoff, shown in ``health.last_error`` and logged once per change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.common.backoff import Backoff
from agent.common.paths import default_state_dir
from drivers.base import (
    ConnectionState,
    DriverError,
    Quality,
    Sample,
    SampleSink,
    SourceHealth,
)
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.session import Session

log = logging.getLogger("floorgate.drivers.opcua")


class OpcUaDriver:
    """Reads one OPC UA server; see the module docstring."""

    def __init__(self, config: OpcUaConfig, *, state_dir: Path | None = None) -> None:
        _quiet_asyncua()
        self.config = config
        self.name = config.name
        self.health = SourceHealth(config.name)
        self.state_dir = state_dir or default_state_dir()
        self._connected_once = False

    def signal_names(self) -> Sequence[str]:
        return [signal.name for signal in self.config.signals]

    async def run(self, sink: SampleSink) -> None:
        """Read until cancelled, reconnecting with backoff; never raises on I/O errors."""
        backoff = Backoff(min(1.0, self.config.backoff_max), self.config.backoff_max)
        while True:
            session = Session(self.config, self.health, self.state_dir, sink)
            try:
                await session.open()
                self._on_connected()
                backoff.reset()
                await session.serve()
            except DriverError as exc:
                await self._disconnected(str(exc), sink)
            finally:
                await session.close()
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cancel close() swallowed
                    raise asyncio.CancelledError
            await asyncio.sleep(backoff.next())

    def _on_connected(self) -> None:
        if self._connected_once:  # serve() only ends on a loss: this is a reconnection
            self.health.reconnects += 1
        self._connected_once = True
        log.info(
            "opcua source connected source=%s endpoint=%s mode=%s items=%s bad_signals=%d",
            self.name,
            self.config.endpoint,
            self.config.mode.value,
            self.health.subscribed_items,
            len(self.health.bad_signals),
        )

    async def _disconnected(self, error: str, sink: SampleSink) -> None:
        """Enter DISCONNECTED; log and send bad samples on the transition only."""
        changed = self.health.set_state(ConnectionState.DISCONNECTED, error)
        self.health.subscribed_items = None
        if not changed:
            return
        log.warning(
            "opcua source disconnected source=%s endpoint=%s error=%r",
            self.name,
            self.config.endpoint,
            error,
        )
        now = datetime.now(UTC)
        self.health.bad_signals = {name: error for name in self.signal_names()}
        await sink([Sample(name, None, Quality.BAD, now, error) for name in self.signal_names()])


def _quiet_asyncua() -> None:
    """asyncua logs every lost connection and retry at WARNING/ERROR with tracebacks; this
    driver reports them itself (health, one line per change). Leave a level someone
    configured on purpose alone."""
    library_log = logging.getLogger("asyncua")
    if library_log.level == logging.NOTSET:
        library_log.setLevel(logging.CRITICAL)
