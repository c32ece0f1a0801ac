"""Wiring and supervision: start in reverse data-flow order, stop in data-flow order.

Start: buffer → forwarders → rule engine → drivers → health server.
Stop: drivers → engine (drain the queue, report partial windows, commit) → forwarders →
buffer → health server. Every component runs under ``supervise`` so a crash restarts
that component alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from agent.config.models import FloorgateConfig
from agent.engine import RuleEngine
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.registry import make_driver, make_forwarder
from agent.status import DestinationHealth
from agent.supervise import supervise
from buffer.rows import BufferStats
from buffer.sqlite import SqliteBuffer
from drivers.base import Driver

log = logging.getLogger("floorgate.runtime")

STATS_INTERVAL = 2.0
PRUNE_INTERVAL = 3600.0
# How long stop() waits for one stage before it gives up on it; within systemd's
# TimeoutStopSec so the unit never ends in a SIGKILL because of a stuck component.
STOP_GRACE = 10.0


class Agent:
    def __init__(self, config: FloorgateConfig, *, config_checksum: str = "") -> None:
        self.config = config
        self.config_checksum = config_checksum
        self.started_at = time.time()
        self.buffer: SqliteBuffer | None = None
        self.engine: RuleEngine | None = None
        self.drivers: list[Driver] = []
        self.destinations: dict[str, DestinationHealth] = {}
        self.buffer_stats = BufferStats()
        self.buffer_error: str | None = None
        self.running = False
        self.health_port: int | None = None
        self._wakes: list[asyncio.Event] = []
        self._forwarder_tasks: list[asyncio.Task[None]] = []
        self._driver_tasks: list[asyncio.Task[None]] = []
        self._engine_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._health_server: Any = None

    async def start(self) -> None:
        config = self.config
        self.buffer = await SqliteBuffer.open(
            config.buffer_path,
            synchronous=config.buffer.synchronous.value,
            commit_window=config.buffer.commit_window,
        )
        if self.buffer.corrupt_moved_to:
            log.error("buffer was corrupt; moved aside path=%s", self.buffer.corrupt_moved_to)
        self.buffer_stats = await self.buffer.stats()
        for destination in config.destinations:
            self._start_destination(destination)
        self.engine = RuleEngine(config, self.buffer, on_commit=self._wake_forwarders)
        await self.engine.restore()
        self._engine_task = asyncio.create_task(
            supervise(
                "engine",
                self.engine.run,
                finished=lambda: self.engine is not None and self.engine.stopping,
            ),
            name="engine",
        )
        for source in config.sources:
            driver = make_driver(source)
            self.drivers.append(driver)
            task = asyncio.create_task(
                supervise(f"source:{driver.name}", functools.partial(driver.run, self._sink())),
                name=f"source:{driver.name}",
            )
            self._driver_tasks.append(task)
        self._background.append(asyncio.create_task(self._refresh_stats(), name="stats"))
        if config.health.enabled:
            from agent.health import HealthServer

            self._health_server = HealthServer(self)
            self.health_port = await self._health_server.start(
                config.health.host, config.health.port
            )
        self.running = True
        log.info(
            "agent started id=%s sources=%d machines=%d destinations=%d buffer=%s health=%s",
            config.agent.id,
            len(config.sources),
            len(config.machines),
            len(config.destinations),
            config.buffer_path,
            f"http://{config.health.host}:{self.health_port}" if self.health_port else "off",
        )

    def _sink(self) -> Any:
        assert self.engine is not None
        return self.engine.sink

    def _start_destination(self, destination: Any) -> None:
        assert self.buffer is not None
        forwarder = make_forwarder(destination)
        health = DestinationHealth(name=destination.name, type=destination.type)
        self.destinations[destination.name] = health
        wake = asyncio.Event()
        self._wakes.append(wake)
        loop = DeliveryLoop(
            forwarder,
            self.buffer,
            DeliverySettings(batch_size=destination.batch_size, retry=destination.retry),
            health,
            wake,
        )
        self._forwarder_tasks.append(
            asyncio.create_task(
                supervise(f"destination:{destination.name}", loop.run), name=destination.name
            )
        )

    def _wake_forwarders(self) -> None:
        for wake in self._wakes:
            wake.set()

    async def _refresh_stats(self) -> None:
        assert self.buffer is not None
        last_prune = 0.0
        while True:
            try:
                self.buffer_stats = await self.buffer.stats()
                if time.monotonic() - last_prune > PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    pruned = await self.buffer.prune(time.time() - self.config.buffer.retention)
                    if pruned:
                        log.info("delivered events pruned count=%d", pruned)
                self.buffer_error = None
            except Exception as exc:  # health shows it; the next round tries again
                if self.buffer_error is None:
                    log.error("buffer statistics failed error=%s", exc)
                self.buffer_error = str(exc)
            await asyncio.sleep(STATS_INTERVAL)

    async def stop(self) -> None:
        """Stop in data-flow order, committing everything that is in memory."""
        self.running = False
        await _cancel(self._driver_tasks)
        if self.engine is not None and self._engine_task is not None:
            self.engine.request_stop()
            _, pending = await asyncio.wait([self._engine_task], timeout=STOP_GRACE)
            if pending:
                log.error("engine did not finish its round within %gs; cancelling it", STOP_GRACE)
                await _cancel([self._engine_task])
            self._engine_task = None
        if self.engine is not None:
            await self.engine.stop()
        await _cancel(self._forwarder_tasks + self._background)
        if self.buffer is not None:
            await self.buffer.close()
        if self._health_server is not None:
            await self._health_server.stop()
        log.info("agent stopped")

    async def run_until(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait, but never forever: a component that ignores its cancel is named
    in the log and left behind so the agent still stops."""
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "component failed while stopping component=%s error=%s",
                    task.get_name(),
                    task.exception(),
                )
        for task in pending:
            log.error(
                "component did not stop within %gs; abandoning it component=%s",
                STOP_GRACE,
                task.get_name(),
            )
    tasks.clear()
