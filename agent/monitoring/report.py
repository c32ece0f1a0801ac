"""The agent's health as one JSON document: what /readyz serves and the demo shows.

Overall status:
- ``failing``: the buffer cannot be written, the engine is not running, or a destination
  needs a person (bad credentials);
- ``degraded``: a source is not connected, a destination cannot deliver, the buffer was
  found corrupt and replaced, an event waits longer than ``health.stale_after``, a
  source is down longer than ``health.source_down_after``, or the disk holding the
  state directory has less than ``health.min_free_disk`` free;
- ``ok`` otherwise.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.monitoring.status import DestinationState
from drivers.base import ConnectionState

if TYPE_CHECKING:
    from agent.service.runtime import Agent


def _disk(agent: Agent) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(agent.config.agent.state_dir)
    except OSError as exc:
        return {"free_bytes": None, "total_bytes": None, "error": exc.strerror}
    return {"free_bytes": usage.free, "total_bytes": usage.total, "error": None}


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 3)


def _sources(agent: Agent, now: float) -> dict[str, Any]:
    return {
        d.name: {
            "state": d.health.state.value,
            "since": d.health.since,
            "last_data_age_s": _age(d.health.last_data_time, now),
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
    for name, health in agent.destinations.items():
        stats = agent.buffer_stats.destinations.get(name)
        result[name] = {
            "type": health.type,
            "state": health.state.value,
            "since": health.since,
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
    for name, dest in destinations.items():
        if dest["state"] == DestinationState.FAILING:
            failing = True
            reasons.append(f"destination {name} stopped: {dest['last_error']}")
        elif dest["state"] in (DestinationState.RETRYING, DestinationState.DISCONNECTED):
            reasons.append(f"destination {name} {dest['state']}: {dest['last_error']}")
        if (dest["oldest_pending_age_s"] or 0) > thresholds.stale_after:
            reasons.append(
                f"destination {name}: oldest undelivered event is"
                f" {dest['oldest_pending_age_s']:.0f}s old"
            )
    for name, source in sources.items():
        down_for = now - source["since"]
        if source["state"] == ConnectionState.DEGRADED or (
            source["state"] != ConnectionState.CONNECTED
            and down_for >= thresholds.source_down_after
        ):
            reasons.append(
                f"source {name} {source['state']} for {down_for:.0f}s: {source['last_error']}"
            )
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
