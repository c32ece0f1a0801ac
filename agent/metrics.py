"""Prometheus metrics, collected from live status at scrape time (nothing on the hot path).

Every name is documented in README.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from drivers.base import ConnectionState

if TYPE_CHECKING:
    from agent.runtime import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        info = InfoMetricFamily("floorgate_build", "floorgate version and agent id")
        info.add_metric([], {"version": __version__, "agent": agent.config.agent.id})
        yield info
        yield from self._sources()
        yield from self._engine()
        yield from self._destinations()

    def _sources(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "floorgate_source_up", "1 when the source is connected", labels=["source"]
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
        for driver in self.agent.drivers:
            h = driver.health
            up.add_metric([h.name], 1.0 if h.state is ConnectionState.CONNECTED else 0.0)
            reads.add_metric([h.name], h.reads)
            errors.add_metric([h.name], h.read_errors)
            reconnects.add_metric([h.name], h.reconnects)
            last.add_metric([h.name], h.last_data_time or 0.0)
            bad.add_metric([h.name], len(h.bad_signals))
        yield from (up, reads, errors, reconnects, last, bad)

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

    def _destinations(self) -> Iterator[Metric]:
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
            "floorgate_destination_up", "1 when the destination accepts events", labels=labels
        )
        delivered = CounterMetricFamily(
            "floorgate_delivered", "Events delivered since start", labels=labels
        )
        last = GaugeMetricFamily(
            "floorgate_destination_last_success_timestamp_seconds",
            "Wall clock of the last delivery",
            labels=labels,
        )
        import time

        now = time.time()
        for name, health in self.agent.destinations.items():
            stats = self.agent.buffer_stats.destinations.get(name)
            pending.add_metric([name], stats.pending if stats else 0)
            dead.add_metric([name], stats.dead if stats else 0)
            created = stats.oldest_pending_created if stats else None
            oldest.add_metric([name], max(0.0, now - created) if created else 0.0)
            up.add_metric([name], 1.0 if health.state.value == "connected" else 0.0)
            delivered.add_metric([name], health.delivered)
            last.add_metric([name], health.last_success or 0.0)
        yield from (pending, dead, oldest, up, delivered, last)


def make_registry(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
