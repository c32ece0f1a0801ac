"""What `floorgate check-config` prints: what will be read from which device, sent where,
what each template made; and, with --expanded, the config with its templates expanded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.common.units import format_duration, format_size
from agent.config.models import DestinationConfig, FloorgateConfig
from agent.config.templates import TemplateUse

# A machine made from a template with a range may have hundreds of sample rules: the
# first few say what they are, --expanded lists them all.
RULES_SHOWN = 12


def _machine_lines(config: FloorgateConfig, made_from: dict[str, str]) -> list[str]:
    lines = []
    for machine in config.machines:
        template = f"  from template {made_from[machine.name]}" if machine.name in made_from else ""
        lines.append(
            f"  {machine.name}  (/{config.agent.site}/{machine.area}/{machine.line}/{machine.name})"
            + template
        )
        rules = [f"    {rule.describe()}" for _, rule in machine.rule_entries()]
        if len(rules) > RULES_SHOWN:
            more = len(rules) - (RULES_SHOWN - 1)
            note = f"    ... and {more} more rules (check-config --expanded lists them)"
            rules = [*rules[: RULES_SHOWN - 1], note]
        lines += rules
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _template_lines(uses: Sequence[TemplateUse]) -> list[str]:
    lines = []
    for use in uses:
        if not use.machines:
            lines.append(f"  {use.template}: no machine is made from it")
            continue
        names = ", ".join(use.machines[:3]) + (", ..." if len(use.machines) > 3 else "")
        lines.append(
            f"  {use.template}: {_count(len(use.machines), 'machine')} ({names}), "
            f"{_count(use.signals, 'signal')}, {_count(use.rules, 'rule')}"
        )
    return lines


def _destination_line(destination: DestinationConfig) -> str:
    types = ", ".join(t.value for t in destination.event_types)
    machines = ", ".join(destination.machines) if destination.machines else "all machines"
    return (
        f"  {destination.name}: {destination.target()}, "
        f"batches of {destination.batch_size}; {types}; {machines}"
    )


def describe_config(config: FloorgateConfig, templates: Sequence[TemplateUse] = ()) -> str:
    shifts = ", ".join(start.strftime("%H:%M") for start in config.agent.shifts)
    zone = config.agent.timezone or "this machine's time zone"
    lines = [
        f"agent {config.agent.id} at site {config.agent.site}, shifts from {shifts} ({zone})",
        f"buffer {config.buffer_path} (synchronous {config.buffer.synchronous.value}, "
        + (
            f"commit interval {format_duration(config.buffer.commit_interval)}, "
            if config.buffer.commit_interval
            else ""
        )
        + f"at most {format_size(config.buffer.max_size)}, delivered events kept "
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
    if templates:
        lines += ["", "templates:", *_template_lines(templates)]
    made_from = {machine: use.template for use in templates for machine in use.machines}
    lines += ["", "machines:", *_machine_lines(config, made_from)]
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


def expanded_yaml(data: dict[str, Any]) -> str:
    """The config as the agent runs it, templates expanded: a plain config file."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # machines share a template's values: write them out, no &anchors

    body = yaml.dump(
        data, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True
    )
    return (
        "# The configuration as the agent runs it: every template expanded into plain\n"
        "# signals and machines (written by floorgate check-config --expanded).\n" + body
    )
