"""What a config reload (SIGHUP, `systemctl reload floorgate`) changes, component by
component, so only what changed is restarted.

The agent and buffer sections are not reloadable: a new agent id or buffer file under a
running agent would split one gateway's history in two. A reload that changes them is
refused as a whole (the running config stays) with a message that says to restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.config.models import FloorgateConfig

NOT_RELOADABLE = ("agent", "buffer")


class ReloadRefused(Exception):
    """The new config cannot be applied without a restart; the message says why."""


def _by_name(items: list[Any]) -> dict[str, dict[str, Any]]:
    return {item.name: item.model_dump(mode="json") for item in items}


def _changed(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """Names that were removed, added, or whose settings differ."""
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


@dataclass
class ReloadPlan:
    sources: list[str] = field(default_factory=list)  # stop (if running) and start (if kept)
    destinations: list[str] = field(default_factory=list)
    # Machines added, removed or with other settings (a template's change shows in every
    # machine made from it: the diff is of the expanded config). Only named in the log:
    # the engine is rebuilt as a whole.
    machines: list[str] = field(default_factory=list)
    engine: bool = False  # machines, rules or routing changed
    health: bool = False

    @property
    def empty(self) -> bool:
        return not (self.sources or self.destinations or self.engine or self.health)

    def describe(self) -> str:
        parts = [f"source {name}" for name in self.sources]
        parts += [f"destination {name}" for name in self.destinations]
        if self.engine and self.machines:
            shown = ", ".join(self.machines[:5])
            more = f" and {len(self.machines) - 5} more" if len(self.machines) > 5 else ""
            parts.append(f"rule engine (machines {shown}{more})")
        else:
            parts += ["rule engine"] * self.engine
        parts += ["health server"] * self.health
        return ", ".join(parts) or "nothing"


def plan_reload(old: FloorgateConfig, new: FloorgateConfig) -> ReloadPlan:
    for section in NOT_RELOADABLE:
        if getattr(old, section) != getattr(new, section):
            raise ReloadRefused(
                f"the {section} section changed; it takes effect only on a restart "
                "(systemctl restart floorgate)"
            )
    sources = _changed(_by_name(old.sources), _by_name(new.sources))
    destinations = _changed(_by_name(old.destinations), _by_name(new.destinations))
    machines = _changed(_by_name(old.machines), _by_name(new.machines))
    return ReloadPlan(
        sources=sources,
        destinations=destinations,
        machines=machines,
        # The engine holds the rules and the routing; any source change may change the
        # signal catalog the rules were built from, so it is rebuilt with them.
        engine=bool(machines) or bool(sources) or bool(destinations),
        health=old.health != new.health,
    )
