"""A machine's ``overrides:``: the template's signals and rules with the keys the machine
changes, and those it drops (``null``). Signals are named by their name in the template,
a state rule is the one of its template, a counter or sample is named by the signal it
reads, an alarm by its name. Each item changed remembers where its changed keys were
written, so that an error in one is reported at the override.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from typing import Any

from agent.config.problems import KeyPath
from agent.config.template_models import InstanceOverrides, TemplateConfig
from agent.config.template_origins import Problem, names_text
from agent.config.template_reading import MachineType, TypeRule

# The rule sections a machine's overrides change, and whether each holds a list of rules
# (counters) or one (state).
RULE_SECTIONS = {
    name: typing.get_origin(TemplateConfig.model_fields[name].annotation) is list
    for name in InstanceOverrides.model_fields
    if name != "signals"
}

# A template's signal for one machine: its keys, and where the keys an override set were
# written.
SignalKeys = tuple[dict[str, Any], dict[str, KeyPath]]
# A template's rule for one machine: the rule, its keys, and where the keys written
# elsewhere (an override, a range) were written.
Chosen = tuple[TypeRule, dict[str, Any], dict[str, KeyPath]]


def match_names(key: str, names: list[str]) -> list[str]:
    """The names ``key`` means: the same, else ignoring case, else with every character
    other than a letter, digit or _ read as _ (as the environment overrides match)."""

    def env_form(text: str) -> str:
        return re.sub(r"[^0-9a-z_]", "_", text.lower())

    forms: list[Callable[[str], str]] = [lambda s: s, str.lower, env_form]
    for form in forms:
        found = [name for name in names if form(name) == form(key)]
        if found:
            return found
    return []


def override_signals(
    where: KeyPath, raw: dict[str, Any], template: MachineType, problems: list[Problem]
) -> tuple[dict[str, SignalKeys], dict[str, KeyPath]]:
    """The template's signals with the overrides of the machine at ``where``: name ->
    (keys, where the keys set by an override were written); and the names it drops,
    with where."""
    signals = {name: (dict(s.data), dict[str, KeyPath]()) for name, s in template.signals.items()}
    dropped: dict[str, KeyPath] = {}
    overrides = (raw.get("overrides") or {}).get("signals") or {}
    for key, override in overrides.items():
        path = (*where, "overrides", "signals", key)
        names = match_names(str(key), list(signals))
        if len(names) != 1:
            what = "matches several signals" if names else "is no signal"
            problems.append(
                (
                    path,
                    f"{key!r} {what} of template {template.name}; its signals: "
                    f"{names_text(names or list(template.signals))}",
                    None,
                )
            )
        elif override is None:
            dropped[names[0]] = path
            del signals[names[0]]
        elif "name" in override:
            problems.append(
                (
                    (*path, "name"),
                    "a signal's name comes from the template and cannot be changed",
                    None,
                )
            )
        else:
            data, keys = signals[names[0]]
            data.update(override)
            keys.update({k: (*path, k) for k in override})
    return signals, dropped


def override_rules(
    where: KeyPath, raw: dict[str, Any], template: MachineType, problems: list[Problem]
) -> list[Chosen]:
    """The template's rules with the overrides of the machine at ``where``, in the
    template's order, without those it drops."""
    overrides = raw.get("overrides") or {}
    chosen: list[Chosen] = [(rule, dict(rule.data), dict(rule.keys)) for rule in template.rules]
    for section, is_list in RULE_SECTIONS.items():
        if section not in overrides:
            continue
        value = overrides[section]
        path = (*where, "overrides", section)
        if is_list:
            chosen = _override_list(chosen, section, value or {}, path, template, problems)
        else:
            chosen = _override_single(chosen, section, value, path, template, problems)
    return chosen


def _override_single(
    chosen: list[Chosen],
    section: str,
    value: Any,
    path: KeyPath,
    template: MachineType,
    problems: list[Problem],
) -> list[Chosen]:
    """A section holding one rule (state): its keys changed, or dropped by null."""
    found = [c for c in chosen if c[0].section == section]
    if not found:
        problems.append((path, f"template {template.name} has no {section} rule to change", None))
        return chosen
    if value is None:
        return [c for c in chosen if c[0].section != section]
    _, data, keys = found[0]
    data.update(value)
    keys.update({k: (*path, k) for k in value})
    return chosen


def _override_list(
    chosen: list[Chosen],
    section: str,
    overrides: dict[str, Any],
    path: KeyPath,
    template: MachineType,
    problems: list[Problem],
) -> list[Chosen]:
    """A section holding a list of rules: each named one's keys changed, or dropped."""
    drop: set[int] = set()
    candidates = [(i, c) for i, c in enumerate(chosen) if c[0].section == section]
    named = any(
        c[0].model is not None and "name" in type(c[0].model).model_fields for _, c in candidates
    )
    by = "name" if named else "signal"
    for key, value in overrides.items():
        identities = [str(c[0].identity) for _, c in candidates]
        names = match_names(str(key), list(dict.fromkeys(identities)))
        hits = [(i, c) for i, c in candidates if c[0].identity in names]
        if not candidates:
            problems.append(((*path, key), f"template {template.name} has no {section}", None))
            continue
        if len(hits) != 1:
            if hits:
                what = f"matches {len(hits)} {section} of template {template.name}"
            else:
                what = f"names no {section[:-1]} of template {template.name}"
            problems.append(
                (
                    (*path, key),
                    f"{key!r} {what}; {section} there by {by}: "
                    f"{names_text(list(dict.fromkeys(identities)))}",
                    None,
                )
            )
            continue
        index, (_, data, keys) = hits[0]
        if value is None:
            drop.add(index)
            continue
        data.update(value)
        keys.update({k: (*path, key, k) for k in value})
    return [c for i, c in enumerate(chosen) if i not in drop]
