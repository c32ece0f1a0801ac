"""The ``templates:`` section read once: each template validated (agent.config.
template_models) and made a ``MachineType``, its signals by name (a range's values made
one signal each) and its rules with where each was written. Mistakes in a template are
found here, whether or not a machine is made from it.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from agent.common.model import NAME_PATTERN
from agent.config.problems import KeyPath, format_path
from agent.config.rules import RuleConfig
from agent.config.template_models import TemplateConfig
from agent.config.template_origins import Problem, names_text, validation_problems
from agent.registry import SOURCE_PLUGINS, config_models

TEMPLATES = "templates"


@dataclass
class TypeSignal:
    """A signal of a machine type, as its template writes it."""

    name: str
    data: dict[str, Any]  # the keys as written, without the name
    path: KeyPath


@dataclass
class TypeRule:
    """A rule of a machine type, as its template writes it."""

    section: str
    single: bool  # state: one rule, not a list
    data: dict[str, Any]
    path: KeyPath
    keys: Mapping[str, KeyPath]  # keys written elsewhere (a range's sample: its signal)
    model: RuleConfig | None  # None: a range's sample, whose only signal key is "signal"
    identity: str | None  # how an override names it: an alarm's name, else its signal


@dataclass
class MachineType:
    """One template, read: what every machine made from it gets."""

    name: str
    path: KeyPath
    model: TemplateConfig
    signals: dict[str, TypeSignal]
    rules: list[TypeRule]


def _identity(rule: RuleConfig) -> str | None:
    """How an override names a rule of a list: by its name when it has one (alarms),
    else by the signal it reads."""
    for key in ("name", "signal"):
        value = getattr(rule, key, None)
        if isinstance(value, str):
            return value
    return None


@cache
def source_signal_keys() -> frozenset[str]:
    """Every key a signal of some source type takes (its aliases too; not its name): a
    template's signal with another key has a typo, whichever source its machines name."""
    keys: set[Any] = set()
    for model in config_models(SOURCE_PLUGINS):
        annotations = [model.model_fields["signals"].annotation]
        while annotations:  # list[X], list[X | Y], ...: every model in it
            annotation = annotations.pop()
            annotations += typing.get_args(annotation)
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                continue
            for name, info in annotation.model_fields.items():
                alias = info.validation_alias
                keys.update(alias.choices if isinstance(alias, AliasChoices) else [name])
    return frozenset(key for key in keys if isinstance(key, str)) - {"name"}


def _unknown_signal_keys(data: dict[str, Any], where: KeyPath) -> list[Problem]:
    """Checked here, so that a typo is named even in a template no machine is made from
    yet; the source's schema checks the rest for each machine."""
    known = source_signal_keys()
    if not known:  # no source type says what its signals hold: each machine's schema will
        return []
    return [
        (
            (*where, key),
            "unknown key (check the spelling); a template's signal has the keys of a "
            f"source's signal: {', '.join(sorted(known))}",
            None,
        )
        for key in data
        if key not in known
    ]


def _read_signals(
    model: TemplateConfig, raw: dict[str, Any], path: KeyPath, problems: list[Problem]
) -> dict[str, TypeSignal]:
    signals: dict[str, TypeSignal] = {}
    for index, signal in enumerate(model.signals):
        where = (*path, "signals", index)
        if signal.name in signals:
            first = format_path(signals[signal.name].path)
            problems.append(((*where, "name"), f"{signal.name!r} is already used by {first}", None))
            continue
        data = {k: v for k, v in raw["signals"][index].items() if k != "name"}
        problems += _unknown_signal_keys(data, where)
        signals[signal.name] = TypeSignal(signal.name, data, where)
    return signals


def _read_ranges(
    model: TemplateConfig,
    raw: dict[str, Any],
    path: KeyPath,
    signals: dict[str, TypeSignal],
    problems: list[Problem],
) -> list[TypeRule]:
    """Add each range's signals to ``signals``; returns their sample rules."""
    samples: list[TypeRule] = []
    for index, block in enumerate(model.ranges):
        where = (*path, "ranges", index)
        raw_block = raw["ranges"][index]
        # Only what differs from a signal's defaults, so the expanded YAML stays short.
        data: dict[str, Any] = {"data_type": block.value_type.value}
        if block.input_type != "holding":
            data["input_type"] = block.input_type
        data.update({k: raw_block[k] for k in ("swap", "scale", "offset") if k in raw_block})
        if block.unit_of_measurement is not None:
            data["unit_of_measurement"] = block.unit_of_measurement
        for address in block.addresses_of_values():
            local = f"{block.signal_prefix()}{address}"
            if local in signals:
                problems.append(
                    (
                        (*where, "addresses"),
                        f"makes signal {local!r}, which {format_path(signals[local].path)} "
                        "also names; give the range another prefix",
                        None,
                    )
                )
                break
            signals[local] = TypeSignal(local, {"address": address, **data}, where)
            if block.sample is not None:
                sample = {"signal": local, **raw_block["sample"]}
                samples.append(
                    TypeRule(
                        "samples", False, sample, (*where, "sample"), {"signal": where}, None, local
                    )
                )
    return samples


def _read_rules(
    model: TemplateConfig,
    raw: dict[str, Any],
    path: KeyPath,
    signals: dict[str, TypeSignal],
    problems: list[Problem],
) -> list[TypeRule]:
    rules: list[TypeRule] = []
    for place, rule in model.rule_entries():
        raw_rule: Any = raw
        for part in place:
            raw_rule = raw_rule[part]
        single = len(place) == 1
        rules.append(
            TypeRule(
                str(place[0]), single, dict(raw_rule), (*path, *place), {}, rule, _identity(rule)
            )
        )
        for ref in rule.signal_refs():
            if ref.name not in signals:
                problems.append(
                    (
                        (*path, *place, ref.key),
                        f"unknown signal {ref.name!r}; the template's signals: "
                        f"{names_text(list(signals))}",
                        None,
                    )
                )
    return rules


def _read_template(name: str, raw: Any, problems: list[Problem]) -> MachineType | None:
    path: KeyPath = (TEMPLATES, name)
    if not re.match(NAME_PATTERN, str(name)):
        problems.append((path, "a template name is letters, digits, _ and - only", None))
        return None
    if not isinstance(raw, dict):
        problems.append(
            (path, "a template is a mapping: signals:, ranges:, state:, counters: ...", None)
        )
        return None
    try:
        model = TemplateConfig.model_validate(raw)
    except ValidationError as exc:
        problems += validation_problems(exc, path)
        return None
    signals = _read_signals(model, raw, path, problems)
    range_samples = _read_ranges(model, raw, path, signals, problems)
    rules = _read_rules(model, raw, path, signals, problems)
    # A range's samples come after the template's own, as the YAML reads top-down.
    return MachineType(name, path, model, signals, rules + range_samples)


def read_templates(raw: Any, problems: list[Problem]) -> dict[str, MachineType]:
    """The templates of the ``templates:`` section ``raw``, by name; the mistakes in them
    are added to ``problems`` (a template with one is left out)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(
            (
                (TEMPLATES,),
                "templates is a mapping of template names: templates: {press: {signals: ...}}",
                None,
            )
        )
        return {}
    found = {}
    for name, value in raw.items():
        template = _read_template(str(name), value, problems)
        if template is not None:
            found[template.name] = template
    return found
