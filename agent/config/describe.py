"""What `floorgate check-config` prints: what will be read from which device, sent where."""

from __future__ import annotations

from agent.common.units import format_duration, format_size
from agent.config.models import DestinationConfig, FloorgateConfig


def _machine_lines(config: FloorgateConfig) -> list[str]:
    lines = []
    for machine in config.machines:
        lines.append(
            f"  {machine.name}  (/{config.agent.site}/{machine.area}/{machine.line}/{machine.name})"
        )
        lines += [f"    {rule.describe()}" for _, rule in machine.rule_entries()]
    return lines


def _destination_line(destination: DestinationConfig) -> str:
    types = ", ".join(t.value for t in destination.event_types)
    machines = ", ".join(destination.machines) if destination.machines else "all machines"
    return (
        f"  {destination.name}: {destination.target()}, "
        f"batches of {destination.batch_size}; {types}; {machines}"
    )


def describe_config(config: FloorgateConfig) -> str:
    lines = [
        f"agent {config.agent.id} at site {config.agent.site}",
        f"buffer {config.buffer_path} (synchronous {config.buffer.synchronous.value}, "
        f"at most {format_size(config.buffer.max_size)}, delivered events kept "
        f"{format_duration(config.buffer.retention)}"
        + (
            f", undelivered dropped after {format_duration(config.buffer.max_age)})"
            if config.buffer.max_age is not None
            else ")"
        ),
        "",
        "reads from:",
    ]
    lines += [f"  {s.name}: {s.summary()}" for s in config.sources]
    lines += ["", "machines:", *_machine_lines(config)]
    lines += ["", "sends to:"]
    lines += [_destination_line(d) for d in config.destinations] or [
        "  (no destination: events are only buffered)"
    ]
    health = (
        f"http://{config.health.host}:{config.health.port}/readyz"
        if config.health.enabled
        else "disabled"
    )
    lines += ["", f"health: {health}"]
    return "\n".join(lines)
