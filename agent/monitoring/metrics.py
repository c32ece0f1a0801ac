"""Prometheus metrics, collected from live status at scrape time (nothing on the hot path).

Every name is documented in docs/monitoring.md ("Metrics");
tests/service/test_metrics_documented.py fails on one that is not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.monitoring.report import health_report

if TYPE_CHECKING:
    from agent.service.runtime import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        info = InfoMetricFamily("floorgate_build", "floorgate version and agent id")
        info.add_metric([], {"version": __version__, "agent": agent.config.agent.id})
        yield info
        # One judgement per scrape: the up gauges and floorgate_status agree with /readyz.
        report = health_report(agent)
        yield from self._sources(report)
        yield from self._engine()
        yield from self._destinations(report)
        yield from self._host(report)

    def _host(self, report: dict[str, Any]) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "floorgate_status",
            "Overall health as /readyz says it: 0 ok, 1 degraded, 2 failing",
        )
        status.add_metric([], {"ok": 0, "degraded": 1, "failing": 2}[report["status"]])
        yield status
        free = report["disk"]["free_bytes"]
        if free is not None:
            yield GaugeMetricFamily(
                "floorgate_disk_free_bytes",
                "Free space on the file system of the state directory (the buffer)",
                value=free,
            )

    def _sources(self, report: dict[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "floorgate_source_up",
            "1 when the source is connected and its data is not stale",
            labels=["source"],
        )
        reads = CounterMetricFamily(
            "floorgate_source_reads", "Requests or notifications handled", labels=["source"]
        )
        errors = CounterMetricFamily(
            "floorgate_source_read_errors", "Failed reads", labels=["source"]
        )
        reconnects = CounterMetricFamily(
            "floorgate_source_reconnects", "Reconnections", labels=["source"]
        )
        last = GaugeMetricFamily(
            "floorgate_source_last_data_timestamp_seconds",
            "Wall clock of the last good read",
            labels=["source"],
        )
        bad = GaugeMetricFamily(
            "floorgate_source_bad_signals", "Signals currently unreadable", labels=["source"]
        )
        items = GaugeMetricFamily(
            "floorgate_source_subscribed_items",
            "Monitored items the server accepted (subscription sources)",
            labels=["source"],
        )
        rebuilds = CounterMetricFamily(
            "floorgate_source_subscription_rebuilds",
            "Subscriptions rebuilt after going silent",
            labels=["source"],
        )
        for driver in self.agent.drivers:
            h = driver.health
            if h.subscribed_items is not None:
                items.add_metric([h.name], h.subscribed_items)
            rebuilds.add_metric([h.name], h.subscription_rebuilds)
            shown = report["sources"].get(driver.name, {}).get("state")
            up.add_metric([h.name], 1.0 if shown == "connected" else 0.0)
            reads.add_metric([h.name], h.reads)
            errors.add_metric([h.name], h.read_errors)
            reconnects.add_metric([h.name], h.reconnects)
            last.add_metric([h.name], h.last_data_time or 0.0)
            bad.add_metric([h.name], len(h.bad_signals))
        yield from (up, reads, errors, reconnects, last, bad, items, rebuilds)

    def _engine(self) -> Iterator[Metric]:
        engine = self.agent.engine
        events = CounterMetricFamily("floorgate_events", "Events created, by type", labels=["type"])
        samples = CounterMetricFamily("floorgate_samples", "Samples processed by the rules")
        memory = GaugeMetricFamily(
            "floorgate_engine_pending_events", "Events held in memory (buffer not writable)"
        )
        if engine is not None:
            for event_type, count in engine.health.events_by_type.items():
                events.add_metric([event_type], count)
            samples.add_metric([], engine.health.samples)
            memory.add_metric([], engine.health.pending_events)
        stats = self.agent.buffer_stats
        size = GaugeMetricFamily("floorgate_buffer_size_bytes", "Buffer database size on disk")
        size.add_metric([], stats.size_bytes)
        stored = GaugeMetricFamily("floorgate_buffer_events", "Events stored in the buffer")
        stored.add_metric([], stats.events)
        yield from (events, samples, memory, size, stored)
        yield from self._buffer_bounds()

    def _buffer_bounds(self) -> Iterator[Metric]:
        stats = self.agent.buffer_stats
        dropped = CounterMetricFamily(
            "floorgate_buffer_dropped_events",
            "Undelivered events dropped by the buffer bounds (reason full, refused, expired),"
            " or that the buffer could not store (rejected): totals kept in the buffer file;"
            " or held in memory too long (held: since start)",
            labels=["type", "reason"],
        )
        for (reason, event_type), count in sorted(stats.dropped.items()):
            dropped.add_metric([event_type, reason], count)
        engine = self.agent.engine
        if engine is not None and engine.health.held_samples_dropped:
            # held in memory while the buffer was not writable (disk full); since start
            dropped.add_metric(["sample", "held"], engine.health.held_samples_dropped)
        evicted = CounterMetricFamily(
            "floorgate_buffer_evicted_delivered_events",
            "Delivered events removed before their retention to make room",
        )
        evicted.add_metric([], stats.evicted_delivered)
        limit = GaugeMetricFamily("floorgate_buffer_max_size_bytes", "The buffer's max_size")
        limit.add_metric([], self.agent.config.buffer.max_size)
        full = GaugeMetricFamily(
            "floorgate_buffer_full", "1 while the buffer is at max_size and dropping samples"
        )
        full.add_metric(
            [], 1.0 if self.agent.buffer is not None and self.agent.buffer.full else 0.0
        )
        yield from (dropped, evicted, limit, full)
        yield from self._buffer_writes()

    def _buffer_writes(self) -> Iterator[Metric]:
        """The flash budget: what the buffer costs the disk (docs/buffer.md)."""
        stats, buffer = self.agent.buffer_stats, self.agent.buffer
        free = GaugeMetricFamily(
            "floorgate_buffer_free_bytes",
            "Free pages in the buffer file (left by pruning), filled before the file grows",
        )
        free.add_metric([], stats.free_bytes)
        yield free
        if buffer is None:
            return
        commits = CounterMetricFamily(
            "floorgate_buffer_commits",
            "Write transactions committed to the buffer (appends, acks, prunes), since start",
        )
        commits.add_metric([], buffer.commits)
        yield commits
        written = buffer.written_bytes  # read from /proc/self/io at each scrape
        if written is not None:  # None: the kernel does not say (not Linux)
            yield CounterMetricFamily(
                "floorgate_buffer_written_bytes",
                "Bytes the agent process wrote to the disk since start (/proc/self/io "
                "write_bytes less cancelled_write_bytes): the buffer file, its WAL, checkpoints",
                value=written,
            )

    def _destinations(self, report: dict[str, Any]) -> Iterator[Metric]:
        labels = ["destination"]
        pending = GaugeMetricFamily(
            "floorgate_buffer_pending", "Events waiting for this destination", labels=labels
        )
        dead = GaugeMetricFamily(
            "floorgate_buffer_dead_letters", "Dead-lettered events", labels=labels
        )
        oldest = GaugeMetricFamily(
            "floorgate_buffer_oldest_pending_age_seconds",
            "Age of the oldest undelivered event",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "floorgate_destination_up",
            "1 when the destination accepts events (connected, no request past slow_after)",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "floorgate_destination_request_in_flight_seconds",
            "Age of the connect or send in flight (0 between them)",
            labels=labels,
        )
        delivered = CounterMetricFamily(
            "floorgate_delivered", "Events delivered since start", labels=labels
        )
        last = GaugeMetricFamily(
            "floorgate_destination_last_success_timestamp_seconds",
            "Wall clock of the last delivery",
            labels=labels,
        )
        now = time.time()
        for name, health in self.agent.destinations.items():
            shown = report["destinations"].get(name, {})
            stats = self.agent.buffer_stats.destinations.get(name)
            pending.add_metric([name], stats.pending if stats else 0)
            dead.add_metric([name], stats.dead if stats else 0)
            created = stats.oldest_pending_created if stats else None
            oldest.add_metric([name], max(0.0, now - created) if created else 0.0)
            up.add_metric([name], 1.0 if shown.get("state") == "connected" else 0.0)
            in_flight.add_metric([name], shown.get("request_in_flight_s") or 0.0)
            delivered.add_metric([name], health.delivered)
            last.add_metric([name], health.last_success or 0.0)
        yield from (pending, dead, oldest, up, in_flight, delivered, last)


def make_registry(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
