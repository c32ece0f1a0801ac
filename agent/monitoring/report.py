"""The agent's health as one JSON document: what /readyz serves and the demo shows.

Judged when asked, from the live status of every part, so it is true at that moment.
Each problem found adds one sentence to ``reasons``; the overall ``status`` is:

- ``failing`` (``ready`` false, /readyz answers 503): the buffer cannot be written, the
  rule engine is not running, or a destination is ``failing`` (needs a person: bad
  credentials, a missing secret);
- ``degraded``: any of
  - a source is ``degraded`` as its driver says (up, some devices or signals unreadable);
  - a source is ``connected`` (or driver-degraded) but its last good data is older than
    the ``stale_after`` its driver set (counted from its ``since`` when it never had
    data); it is then shown as ``degraded``: "source plc1: no good data for 47 s
    (expected within 5 s)";
  - a source is ``starting`` or ``disconnected`` for ``health.source_down_after`` or
    longer;
  - a destination is ``retrying`` or ``disconnected``;
  - a destination's connect or send has been in flight longer than its ``slow_after``
    (a starting or connected one is then shown as ``degraded``): "destination odoo:
    request in flight for 12 s (limit 10 s)";
  - a destination's oldest undelivered event is older than ``health.stale_after``;
  - the disk of the state directory has less than ``health.min_free_disk`` free;
  - the buffer was found corrupt and moved aside, its integrity check failed, or it is
    full and dropping samples;
- ``ok`` otherwise. A source ``starting``/``disconnected`` for less than
  ``source_down_after`` and a destination ``starting``/``connected`` with no slow
  request are ok.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.common.units import seconds_text
from agent.monitoring.status import DestinationHealth, DestinationState
from drivers.base import ConnectionState, SourceHealth

if TYPE_CHECKING:
    from agent.service.runtime import Agent

# States in which a source or destination is up; the age checks below can only make
# them look worse, never a down one look better.
_SOURCE_UP = (ConnectionState.CONNECTED, ConnectionState.DEGRADED)
_DESTINATION_UP = (DestinationState.STARTING, DestinationState.CONNECTED)


def _disk(agent: Agent) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(agent.config.agent.state_dir)
    except OSError as exc:
        return {"free_bytes": None, "total_bytes": None, "error": exc.strerror}
    return {"free_bytes": usage.free, "total_bytes": usage.total, "error": None}


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 3)


def stale_for(health: SourceHealth, now: float) -> float | None:
    """Seconds without good data when an up source is past its driver's ``stale_after``
    (counted from ``since`` when it never had data), else None."""
    limit = health.stale_after
    if limit is None or health.state not in _SOURCE_UP:
        return None
    last = health.last_data_time if health.last_data_time is not None else health.since
    silent = max(0.0, now - last)
    return silent if silent > limit else None


def source_state(health: SourceHealth, now: float) -> str:
    """The state health shows: the driver's, or degraded when its data is stale."""
    if stale_for(health, now) is not None:
        return ConnectionState.DEGRADED.value
    return health.state.value


def _slow(in_flight: float | None, limit: float | None) -> bool:
    return in_flight is not None and limit is not None and in_flight > limit


def destination_state(
    health: DestinationHealth, in_flight: float | None, limit: float | None
) -> str:
    """The state health shows: the loop's, or degraded for a starting or connected
    destination whose request in flight (``in_flight`` seconds, read once by the caller
    so the state and the reason agree) is past ``limit``, its ``slow_after``."""
    if health.state in _DESTINATION_UP and _slow(in_flight, limit):
        return DestinationState.DEGRADED.value
    return health.state.value


def slow_after_limits(agent: Agent) -> dict[str, float]:
    """Each destination's ``slow_after``, read from the config now in force (a reload
    applies a new limit at once)."""
    return {d.name: d.slow_after for d in agent.config.destinations}


def _sources(agent: Agent, now: float) -> dict[str, Any]:
    return {
        d.name: {
            "state": source_state(d.health, now),
            "since": d.health.since,
            "last_data_age_s": _age(d.health.last_data_time, now),
            "stale_after_s": d.health.stale_after,
            "last_error": d.health.last_error,
            "reconnects": d.health.reconnects,
            "reads": d.health.reads,
            "read_errors": d.health.read_errors,
            "bad_signals": dict(d.health.bad_signals),
            # subscription sources (OPC UA): null / 0 / {} for polled protocols
            "subscribed_items": d.health.subscribed_items,
            "subscription_rebuilds": d.health.subscription_rebuilds,
            "time_origins": dict(d.health.time_origins),
        }
        for d in agent.drivers
    }


def _destinations(agent: Agent, now: float) -> dict[str, Any]:
    result = {}
    limits = slow_after_limits(agent)
    for name, health in agent.destinations.items():
        stats = agent.buffer_stats.destinations.get(name)
        in_flight = health.in_flight_s()
        in_flight = None if in_flight is None else round(in_flight, 3)
        result[name] = {
            "type": health.type,
            "state": destination_state(health, in_flight, limits.get(name)),
            "since": health.since,
            "request_in_flight_s": in_flight,
            "slow_after_s": limits.get(name),
            "last_error": health.last_error,
            "last_success": health.last_success,
            "next_retry_in_s": None
            if health.next_retry_at is None
            else round(max(0.0, health.next_retry_at - now), 1),
            "pending": stats.pending if stats else 0,
            "dead_letters": stats.dead if stats else 0,
            "oldest_pending_age_s": _age(stats.oldest_pending_created if stats else None, now),
            "delivered": health.delivered,
        }
    return result


def _destination_reasons(agent: Agent, destinations: dict[str, Any], reasons: list[str]) -> bool:
    """Append each destination's problems; True when one needs a person (failing)."""
    failing = False
    for name, health in agent.destinations.items():
        dest = destinations[name]
        if health.state is DestinationState.FAILING:
            failing = True
            reasons.append(f"destination {name} stopped: {health.last_error}")
        elif health.state in (DestinationState.RETRYING, DestinationState.DISCONNECTED):
            reasons.append(f"destination {name} {health.state.value}: {health.last_error}")
        in_flight, limit = dest["request_in_flight_s"], dest["slow_after_s"]
        if _slow(in_flight, limit):
            reasons.append(
                f"destination {name}: request in flight for {seconds_text(in_flight)} s"
                f" (limit {limit:g} s)"
            )
        if (dest["oldest_pending_age_s"] or 0) > agent.config.health.stale_after:
            reasons.append(
                f"destination {name}: oldest undelivered event is"
                f" {seconds_text(dest['oldest_pending_age_s'])} s old"
            )
    return failing


def _source_reasons(agent: Agent, now: float, reasons: list[str]) -> None:
    for driver in agent.drivers:
        health = driver.health
        down_for = now - health.since
        if health.state is ConnectionState.DEGRADED or (
            health.state is not ConnectionState.CONNECTED
            and down_for >= agent.config.health.source_down_after
        ):
            reasons.append(
                f"source {driver.name} {health.state.value} for {seconds_text(down_for)} s:"
                f" {health.last_error}"
            )
        silent = stale_for(health, now)
        if silent is not None and health.stale_after is not None:
            reasons.append(
                f"source {driver.name}: no good data for {seconds_text(silent)} s"
                f" (expected within {health.stale_after:g} s)"
            )


def health_report(agent: Agent) -> dict[str, Any]:
    now = time.time()
    engine = agent.engine
    commit_failing = engine is not None and engine.health.commit_failing_since is not None
    buffer_ok = agent.buffer is not None and not commit_failing and agent.buffer_error is None
    thresholds = agent.config.health
    sources = _sources(agent, now)
    destinations = _destinations(agent, now)
    reasons: list[str] = []
    failing = not buffer_ok or not agent.running or engine is None or not engine.health.running
    if not buffer_ok:
        reasons.append(
            "buffer not writable: "
            + str((engine.health.last_error if engine else None) or agent.buffer_error)
        )
    failing |= _destination_reasons(agent, destinations, reasons)
    _source_reasons(agent, now, reasons)
    disk = _disk(agent)
    if disk["free_bytes"] is not None and disk["free_bytes"] < thresholds.min_free_disk:
        reasons.append(f"disk nearly full: {disk['free_bytes'] // 1024**2} MiB free")
    moved = agent.buffer.corrupt_moved_to if agent.buffer else None
    if moved:
        reasons.append(f"buffer was corrupt and was moved aside to {moved}")
    damaged = agent.buffer.integrity_problem if agent.buffer else None
    if damaged:
        reasons.append(
            f"buffer integrity check failed ({damaged}): restart the agent to move it aside"
        )
    buffer_full = agent.buffer is not None and agent.buffer.full
    if buffer_full:
        reasons.append(
            f"buffer full (max_size {agent.config.buffer.max_size} bytes): dropping the oldest"
            " samples; states, counts and alarms are kept"
        )
    status = "failing" if failing else ("degraded" if reasons else "ok")
    stats = agent.buffer_stats
    return {
        "status": status,
        "reasons": reasons,
        "ready": not failing,
        "version": __version__,
        "agent": agent.config.agent.id,
        "site": agent.config.agent.site,
        "config_checksum": agent.config_checksum,
        "uptime_s": round(now - agent.started_at, 1),
        "buffer": {
            "path": str(agent.config.buffer_path),
            "writable": buffer_ok,
            "events": stats.events,
            "size_bytes": stats.size_bytes,
            "pending": sum(d.pending for d in stats.destinations.values()),
            "dead_letters": sum(d.dead for d in stats.destinations.values()),
            "oldest_pending_age_s": _age(
                min(
                    (
                        d.oldest_pending_created
                        for d in stats.destinations.values()
                        if d.oldest_pending_created
                    ),
                    default=None,
                ),
                now,
            ),
            "corrupt_moved_to": str(moved) if moved else None,
            "integrity_problem": damaged,
            "memory_pending_events": engine.health.pending_events if engine else 0,
            "max_size": agent.config.buffer.max_size,
            "full": buffer_full,
            "dropped": {
                **{
                    f"{reason}/{event_type}": n for (reason, event_type), n in stats.dropped.items()
                },
                **(
                    {"held/sample": engine.health.held_samples_dropped}
                    if engine and engine.health.held_samples_dropped
                    else {}
                ),
            },
            "evicted_delivered": stats.evicted_delivered,
        },
        "engine": {
            "running": bool(engine and engine.health.running),
            "samples": engine.health.samples if engine else 0,
            "events": dict(engine.health.events_by_type) if engine else {},
            "last_commit_age_s": _age(engine.health.last_commit if engine else None, now),
        },
        "disk": disk,
        "sources": sources,
        "destinations": destinations,
    }
