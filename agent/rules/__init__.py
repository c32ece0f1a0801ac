"""Rules: a machine's readings in, production event drafts out (pure and synchronous).

Each rule type is one module and one line in ``RULE_TYPES``, which maps a rule's config
class (agent.config.rules) to the class built for each entry. ``build_rules`` turns one
machine's configuration into its rules.

Public API: ``build_rules``, ``RULE_TYPES``, ``Rule``, ``Draft``, and the rule classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from agent.config.models import MachineConfig
from agent.config.rules import (
    AlarmRuleConfig,
    CounterRuleConfig,
    RuleConfig,
    SampleRuleConfig,
    StateRuleConfig,
)
from agent.rules.alarm import AlarmRule
from agent.rules.base import Draft, Rule
from agent.rules.counter import ROLLOVER_FOR_TYPE, CounterRule
from agent.rules.sample import SampleRule
from agent.rules.state import StateRule
from drivers.codecs import DataType

__all__ = [
    "ROLLOVER_FOR_TYPE",
    "RULE_TYPES",
    "AlarmRule",
    "CounterRule",
    "Draft",
    "Rule",
    "RuleFactory",
    "SampleRule",
    "StateRule",
    "build_rules",
]


class RuleFactory(Protocol):
    """What a rule class offers the registry: build one rule from one config entry."""

    def from_config(
        self,
        machine: MachineConfig,
        config: Any,
        signal_types: Mapping[str, DataType | None],
        signal_units: Mapping[str, str | None],
    ) -> Rule: ...


RULE_TYPES: dict[type[RuleConfig], RuleFactory] = {
    StateRuleConfig: StateRule,
    CounterRuleConfig: CounterRule,
    AlarmRuleConfig: AlarmRule,
    SampleRuleConfig: SampleRule,
}
"""Rule config class -> rule class."""


def build_rules(
    machine: MachineConfig,
    signal_types: Mapping[str, DataType | None],
    signal_units: Mapping[str, str | None],
) -> list[Rule]:
    """The rules of one machine, in section order then config order.

    ``signal_types`` gives the counters their default rollover (unsigned types) and
    ``signal_units`` the samples their default unit. Raises ValueError when two rules
    would share a state key (two counters on one signal, two alarms with one name).
    """
    rules: list[Rule] = []
    keys: set[str] = set()
    for place, config in machine.rule_entries():
        rule = RULE_TYPES[type(config)].from_config(machine, config, signal_types, signal_units)
        if rule.key in keys:
            raise ValueError(
                f"machine {machine.name}: two {place[0]} rules share the key {rule.key!r}"
            )
        keys.add(rule.key)
        rules.append(rule)
    return rules
