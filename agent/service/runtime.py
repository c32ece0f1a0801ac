"""Wiring and supervision: start in reverse data-flow order, stop in data-flow order.

Start: buffer → forwarders → rule engine → drivers → health server.
Stop: drivers → engine (drain the queue, report partial windows, commit) → a short
delivery round (the destinations that answer take what is pending, so the last partial
count windows reach them before the agent exits) → forwarders → buffer → health server.
Every component runs under ``supervise`` so a crash restarts that component alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from agent.config.models import FloorgateConfig, SourceConfig
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.monitoring.report import destination_state, slow_after_limits
from agent.monitoring.status import DestinationHealth, DestinationState
from agent.pipeline.engine import RuleEngine
from agent.registry import make_driver, make_forwarder
from agent.service.reload import ReloadPlan, plan_reload
from agent.service.supervise import supervise
from buffer.rows import BufferStats
from buffer.sqlite import SqliteBuffer
from drivers.base import Driver, Sample

log = logging.getLogger("floorgate.runtime")

STATS_INTERVAL = 2.0
# The full retention pass (every event, the whole file in chunks) and max_age, this often.
# Delivered samples go sooner, so the file stops growing (docs/buffer.md, "The flash
# budget"): with sample_retention 0s by the ack that completes them, else at every stats
# round once their time is up.
PRUNE_INTERVAL = 3600.0
# How long stop() waits for one stage before it gives up on it; within systemd's
# TimeoutStopSec so the unit never ends in a SIGKILL because of a stuck component.
STOP_GRACE = 10.0
# How long stop() lets the destinations deliver what is pending (the engine's last
# commit holds the partial count windows). The stages together (drivers, engine,
# delivery, forwarders: 4 x 10 s at worst) stay under the unit's TimeoutStopSec=45s.
DELIVER_ON_STOP = 10.0
SAMPLE_QUEUE_SIZE = 1000  # batches; drivers wait when the engine is this far behind


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
        self.samples: asyncio.Queue[Sequence[Sample]] = asyncio.Queue(maxsize=SAMPLE_QUEUE_SIZE)
        self._wakes: dict[str, asyncio.Event] = {}
        self._forwarder_tasks: dict[str, asyncio.Task[None]] = {}
        self._driver_tasks: dict[str, asyncio.Task[None]] = {}
        self._engine_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._health_server: Any = None

    async def start(self) -> None:
        config = self.config
        self.buffer = await SqliteBuffer.open(
            config.buffer_path,
            synchronous=config.buffer.synchronous.value,
            max_size=config.buffer.max_size,
        )
        # Set once: a change of the buffer section needs a restart (agent.service.reload).
        self.buffer.keep_samples(config.buffer.sample_retention)
        # Acks ride in the engine's next append (one commit a second instead of two).
        self.buffer.ack_with_appends(config.buffer.commit_interval)
        if self.buffer.corrupt_moved_to:
            log.error("buffer was corrupt; moved aside path=%s", self.buffer.corrupt_moved_to)
        self.buffer_stats = await self.buffer.stats()
        for destination in config.destinations:
            self._start_destination(destination)
        await self._start_engine()
        for source in config.sources:
            self._start_source(source)
        self._background.append(asyncio.create_task(self._refresh_stats(), name="stats"))
        await self._start_health()
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

    async def _sink(self, samples: Sequence[Sample]) -> None:
        """Where every driver puts its batches; bounded, so a slow engine slows the polls."""
        await self.samples.put(samples)

    async def _start_engine(self) -> None:
        assert self.buffer is not None
        engine = RuleEngine(
            self.config, self.buffer, on_commit=self._wake_forwarders, queue=self.samples
        )
        await engine.restore()
        self.engine = engine
        self._engine_task = asyncio.create_task(
            supervise("engine", engine.run, finished=lambda: engine.stopping), name="engine"
        )

    async def _stop_engine(self) -> None:
        """Let the engine finish its round, then drain the queue, flush and commit."""
        if self.engine is not None and self._engine_task is not None:
            self.engine.request_stop()
            _, pending = await asyncio.wait([self._engine_task], timeout=STOP_GRACE)
            if pending:
                log.error("engine did not finish its round within %gs; cancelling it", STOP_GRACE)
                await _cancel([self._engine_task])
            self._engine_task = None
        if self.engine is not None:
            await self.engine.stop()

    def _start_source(self, source: SourceConfig) -> None:
        driver = make_driver(source, self.config.agent)
        self.drivers.append(driver)
        self._driver_tasks[driver.name] = asyncio.create_task(
            supervise(f"source:{driver.name}", functools.partial(driver.run, self._sink)),
            name=f"source:{driver.name}",
        )

    async def _stop_source(self, name: str) -> None:
        task = self._driver_tasks.pop(name, None)
        if task is not None:
            await _cancel([task])
        self.drivers = [d for d in self.drivers if d.name != name]

    async def _start_health(self) -> None:
        if self.config.health.enabled:
            from agent.monitoring.health import HealthServer

            self._health_server = HealthServer(self)
            self.health_port = await self._health_server.start(
                self.config.health.host, self.config.health.port
            )

    async def _stop_health(self) -> None:
        if self._health_server is not None:
            await self._health_server.stop()
            self._health_server = None
            self.health_port = None

    async def _stop_destination(self, name: str) -> None:
        task = self._forwarder_tasks.pop(name, None)
        if task is not None:
            await _cancel([task])
        self._wakes.pop(name, None)
        self.destinations.pop(name, None)

    def alive(self) -> bool:
        """For the systemd watchdog: the engine and every supervised component are still
        running (a supervisor that died would leave its component silently stopped)."""
        tasks = [self._engine_task, *self._driver_tasks.values(), *self._forwarder_tasks.values()]
        return self.running and all(t is not None and not t.done() for t in tasks)

    def _start_destination(self, destination: Any) -> None:
        assert self.buffer is not None
        forwarder = make_forwarder(destination, self.config.agent)
        health = DestinationHealth(name=destination.name, type=destination.type)
        self.destinations[destination.name] = health
        wake = asyncio.Event()
        self._wakes[destination.name] = wake
        loop = DeliveryLoop(
            forwarder,
            self.buffer,
            DeliverySettings(
                batch_size=destination.batch_size,
                retry=destination.retry,
                ack_interval=self.config.buffer.commit_interval,
            ),
            health,
            wake,
        )
        self._forwarder_tasks[destination.name] = asyncio.create_task(
            supervise(f"destination:{destination.name}", loop.run), name=destination.name
        )

    def _wake_forwarders(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _refresh_stats(self) -> None:
        assert self.buffer is not None
        last_prune: float | None = None  # the first round prunes at once
        while True:
            try:
                self.buffer_stats = await self.buffer.stats()
                full = last_prune is None or time.monotonic() - last_prune > PRUNE_INTERVAL
                if full:
                    last_prune = time.monotonic()
                await self._prune(full)
                self.buffer_error = None
            except Exception as exc:  # health shows it; the next round tries again
                if self.buffer_error is None:
                    log.error("buffer statistics failed error=%s", exc)
                self.buffer_error = str(exc)
            await asyncio.sleep(STATS_INTERVAL)

    async def _prune(self, full: bool) -> None:
        """Every round: the delivered samples past sample_retention (with 0s, the default,
        each ack deletes the samples it completes; otherwise those acknowledged since the
        last round, in small transactions) and the written-bytes counters of the file (the
        buffer does that once a minute). ``full``: the retention pass over every event,
        then the max_age bound (logged by the buffer)."""
        assert self.buffer is not None
        settings = self.config.buffer
        await self.buffer.prune_samples(time.time() - settings.sample_retention)
        await self.buffer.record_written()
        if not full:
            return
        now = time.time()
        pruned = await self.buffer.prune(now - settings.retention, now - settings.sample_retention)
        if pruned:
            log.info("delivered events pruned count=%d", pruned)
        if settings.max_age is not None:
            await self.buffer.expire(time.time() - settings.max_age)

    async def stop(self) -> None:
        """Stop in data-flow order, committing everything that is in memory."""
        self.running = False
        await _cancel(list(self._driver_tasks.values()))
        self._driver_tasks.clear()
        await self._stop_engine()
        if self.buffer is not None:
            self.buffer.ack_with_appends(0)  # no append will come: acks commit at once
        await self._deliver_before_exit()
        await _cancel([*self._forwarder_tasks.values(), *self._background])
        self._forwarder_tasks.clear()
        self._background.clear()
        if self.buffer is not None:
            await self.buffer.close()
        await self._stop_health()
        log.info("agent stopped")

    async def _deliver_before_exit(self) -> None:
        """Give the destinations that answer up to DELIVER_ON_STOP to empty their queue.

        Without this the partial count windows the engine just committed would wait for
        the next start (hours, on a line stopped for the weekend). A destination that is
        failing or backing off is not waited for: its events stay in the buffer, as
        always, and go after the next start."""
        if self.buffer is None or not self._forwarder_tasks:
            return
        self._wake_forwarders()
        deadline = time.monotonic() + DELIVER_ON_STOP
        slow_after = slow_after_limits(self)
        while True:
            try:
                stats = await self.buffer.stats()
            except Exception as exc:  # the buffer is failing: nothing to deliver from
                log.error("stopping: cannot read the buffer to deliver error=%s", exc)
                return
            self.buffer_stats = stats
            pending = {
                name: stats.destinations[name].pending
                for name in self.destinations
                if name in stats.destinations and stats.destinations[name].pending
            }
            waited_for = [
                name
                for name in pending
                if _answering(self.destinations[name], slow_after.get(name))
                and name in self._forwarder_tasks
                and not self._forwarder_tasks[name].done()
            ]
            if not waited_for or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for name, count in pending.items():
            log.warning(
                "stopping with events not yet delivered destination=%s pending=%d state=%s "
                "next=sent-after-the-next-start",
                name,
                count,
                self.destinations[name].state.value,
            )

    async def reload(self, new: FloorgateConfig, checksum: str) -> ReloadPlan:
        """Apply a new config, restarting only the components it changes. Stopping the
        engine commits what it holds and restarting it restores rule state, so counts
        and open downtimes carry over. Raises ReloadRefused (nothing changed) when the
        new config needs a restart."""
        plan = plan_reload(self.config, new)
        old = self.config
        for name in plan.sources:
            await self._stop_source(name)
        if plan.engine:
            await self._stop_engine()
        for name in plan.destinations:
            await self._stop_destination(name)
        if plan.health:
            await self._stop_health()
        self.config = new
        self.config_checksum = checksum
        for destination in new.destinations:
            if destination.name in plan.destinations:
                self._start_destination(destination)
        if plan.engine:
            await self._start_engine()
        for source in new.sources:
            if source.name in plan.sources:
                self._start_source(source)
        if plan.health:
            try:
                await self._start_health()
            except OSError as exc:  # e.g. the new port is taken: keep serving on the old one
                log.error("health server cannot move; keeping the old address error=%s", exc)
                self.config = self.config.model_copy(update={"health": old.health})
                await self._start_health()
        self._wake_forwarders()
        return plan

    async def run_until(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()


def _answering(health: DestinationHealth, slow_after: float | None) -> bool:
    """Worth waiting for at stop: what health shows as connected or starting. Not a
    destination stuck in a request past its ``slow_after`` (health shows it degraded): on
    a silent network it would hold the stop for the whole budget and deliver nothing."""
    shown = destination_state(health, health.in_flight_s(), slow_after)
    return shown in (DestinationState.CONNECTED, DestinationState.STARTING)


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
