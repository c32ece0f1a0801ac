"""Machines made from templates, made plain: each machine's signals placed on the source it
names (by the source type's ``place_template_signal``, named ``<machine>.<signal>``) and
appended to that source's ``signals:``, and a plain machine with the template's rules
reading them. Every item made remembers where it was written and which machine made it
(agent.config.template_origins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from pydantic import AliasChoices, ValidationError

from agent.config.common import Placement, PlacementError
from agent.config.problems import KeyPath, format_path
from agent.config.template_models import MachineInstance
from agent.config.template_origins import (
    Expansion,
    InstanceRef,
    Origin,
    Problem,
    TemplateUse,
    names_text,
)
from agent.config.template_overrides import override_rules, override_signals
from agent.config.template_reading import TEMPLATES, MachineType, TypeRule
from agent.registry import SOURCE_PLUGINS, config_models

Placer = Callable[[dict[str, Any], Placement], dict[str, Any]]  # TemplateTarget's method


def _source_classes() -> dict[str, Any]:
    """Source `type` -> its config class (the plugins', from the registry)."""
    return {
        model.model_fields["type"].annotation.__args__[0]: model
        for model in config_models(SOURCE_PLUGINS)
    }


def _written_key(raw: dict[str, Any], key: str) -> str:
    """The name a machine's key is written with: device_address may be slave or unit."""
    alias = MachineInstance.model_fields[key].validation_alias
    names = alias.choices if isinstance(alias, AliasChoices) else [key]
    return next((name for name in names if isinstance(name, str) and name in raw), key)


class Expander:
    """Expands the machines made from templates of one file, one by one (``expand``),
    then gives the file's data with them (``result``)."""

    def __init__(self, data: dict[str, Any], templates: dict[str, MachineType]) -> None:
        self.data = data
        self.templates = templates
        self.problems: list[Problem] = []
        self.origins: dict[KeyPath, Origin] = {}
        raw_sources = data.get("sources")
        self.sources: list[Any] = list(raw_sources) if isinstance(raw_sources, list) else []
        self.new_signals: dict[int, list[dict[str, Any]]] = {}
        self.signal_owner: dict[str, str] = {}  # signal name -> where it is defined
        for i, source in enumerate(self.sources):
            signals = source.get("signals") if isinstance(source, dict) else None
            for j, signal in enumerate(signals if isinstance(signals, list) else []):
                if isinstance(signal, dict) and isinstance(signal.get("name"), str):
                    self.signal_owner.setdefault(
                        signal["name"], format_path(("sources", i, "signals", j))
                    )
        self.classes = _source_classes()
        self.made: dict[str, list[tuple[str, int, int]]] = {name: [] for name in templates}

    def problem(self, loc: KeyPath, message: str, ref: InstanceRef | None) -> None:
        self.problems.append((loc, message, ref))

    def source_of(self, m: int, instance: MachineInstance) -> tuple[int, Any] | None:
        """The index and config class of the source the machine names."""
        names = []
        for i, source in enumerate(self.sources):
            if not isinstance(source, dict):
                continue
            names.append(str(source.get("name")))
            if source.get("name") == instance.source:
                kind = source.get("type")
                cls = self.classes.get(kind) if isinstance(kind, str) else None
                if cls is None:
                    return None  # an unknown type (or no text at all): the schema names it
                return i, cls
        self.problem(
            ("machines", m, "source"),
            f"unknown source {instance.source!r}; sources: {names_text(names)}",
            None,
        )
        return None

    def expand(self, m: int, raw: dict[str, Any], instance: MachineInstance) -> dict[str, Any]:
        """The plain machine that machines[m] (``raw``, validated as ``instance``) is; its
        signals are added to its source."""
        template = self.templates[instance.template]
        where: KeyPath = ("machines", m)
        detail = ", ".join(
            [f"source {instance.source}"]
            + [f"{key} {value}" for key, value in instance.placement_values().items()]
        )
        ref = InstanceRef(where, instance.name, detail)
        machine: dict[str, Any] = {"name": instance.name}
        keys: dict[str, KeyPath] = {"name": (*where, "name")}
        for key in ("area", "line"):
            own, default = getattr(instance, key), getattr(template.model, key)
            if own is not None or default is not None:
                machine[key] = own if own is not None else default
                keys[key] = (*where, key) if own is not None else (*template.path, key)
        self.origins[where] = Origin(where, keys, ref)
        found = self.source_of(m, instance)
        local, dropped = self.place_signals(m, raw, instance, template, ref, found)
        rules = self.rules(m, raw, instance, template, ref, local, dropped)
        machine.update(rules)
        count = sum(len(v) if isinstance(v, list) else 1 for v in rules.values())
        self.made[template.name].append((instance.name, len(local), count))
        return machine

    def placer(
        self, m: int, raw: dict[str, Any], instance: MachineInstance, found: tuple[int, Any] | None
    ) -> Placer | None:
        """The source type's placement of a template's signal, if it takes this machine."""
        if found is None:
            return None
        index, cls = found
        place = cast(Placer | None, getattr(cls, "place_template_signal", None))
        if place is None:
            self.problem(
                ("machines", m, "source"),
                f"source {instance.source!r} is of a type that cannot read machines made "
                "from a template",
                None,
            )
            return None
        accepted: frozenset[str] = getattr(cls, "PLACEMENT_KEYS", frozenset())
        for key in instance.placement_values():
            if key not in accepted:
                takes = ", ".join(sorted(accepted)) or "none of them"
                written = _written_key(raw, key)
                self.problem(
                    ("machines", m, written),
                    f"{written} does not apply to source {instance.source!r} "
                    f"(type {self.sources[index].get('type')}); its machines take: {takes}",
                    None,
                )
                return None
        return place

    def place_signals(
        self,
        m: int,
        raw: dict[str, Any],
        instance: MachineInstance,
        template: MachineType,
        ref: InstanceRef,
        found: tuple[int, Any] | None,
    ) -> tuple[set[str], dict[str, KeyPath]]:
        """Append the machine's signals to its source. Returns the names (in the template)
        of the signals it has, and of those its overrides drop (with where)."""
        where: KeyPath = ("machines", m)
        signals, dropped = override_signals(where, raw, template, self.problems)
        place = self.placer(m, raw, instance, found)
        if place is None or found is None:
            return set(signals), dropped
        index = found[0]
        placement = Placement(
            instance.name,
            instance.source,
            instance.base_address,
            instance.device_address,
            instance.node,
        )
        made = self.new_signals.setdefault(index, [])
        own = self.sources[index].get("signals")
        first = len(own) if isinstance(own, list) else 0
        for name, (data, keys) in signals.items():
            origin = template.signals[name].path
            try:
                placed = place(data, placement)
            except PlacementError as exc:
                if exc.instance_key is not None:  # the machine's: once is enough
                    loc = (*where, exc.instance_key)
                    self.problem(loc, f"{format_path(origin)}: {exc.message}", ref)
                    break
                key = exc.signal_key
                self.problem(keys.get(key, (*origin, key)) if key else origin, exc.message, ref)
                continue
            full = f"{instance.name}.{name}"
            if full in self.signal_owner:
                self.problem(
                    (*where, "name"),
                    f"machine {instance.name} makes signal {full!r}, which is also "
                    f"{self.signal_owner[full]}; rename one",
                    None,
                )
                continue
            self.signal_owner[full] = f"made by {format_path(where)} ({instance.name})"
            for key in placed.keys() - data.keys():  # set by the placement: the machine's
                keys[key] = (*where, key) if key in MachineInstance.PLACEMENT_FIELDS else where
            self.origins[("sources", index, "signals", first + len(made))] = Origin(
                origin, keys, ref
            )
            made.append({"name": full, **placed})
        return set(signals), dropped

    def rules(
        self,
        m: int,
        raw: dict[str, Any],
        instance: MachineInstance,
        template: MachineType,
        ref: InstanceRef,
        local: set[str],
        dropped: dict[str, KeyPath],
    ) -> dict[str, Any]:
        """The machine's rule sections: the template's, with its overrides, reading the
        machine's own signals."""
        where: KeyPath = ("machines", m)
        chosen = override_rules(where, raw, template, self.problems)
        result: dict[str, Any] = {}
        for rule, data, keys in chosen:
            self.rename(rule, data, keys, instance, template, local, dropped)
            if rule.single:
                place: KeyPath = (*where, rule.section)
                result[rule.section] = data
            else:
                items = result.setdefault(rule.section, [])
                place = (*where, rule.section, len(items))
                items.append(data)
            self.origins[place] = Origin(rule.path, keys, ref)
        return result

    def rename(
        self,
        rule: TypeRule,
        data: dict[str, Any],
        keys: dict[str, KeyPath],
        instance: MachineInstance,
        template: MachineType,
        local: set[str],
        dropped: dict[str, KeyPath],
    ) -> None:
        """Point the rule at the machine's own signals: good -> press07.good."""
        model = rule.model
        if model is not None and keys:  # changed by an override: its signal keys may too
            try:
                model = type(model).model_validate(data)
            except ValidationError:
                model = rule.model  # the schema names the mistake after expansion
        ref_keys = ["signal"] if model is None else [r.key for r in model.signal_refs()]
        for key in ref_keys:
            name = data.get(key)
            if not isinstance(name, str):
                continue
            if name in dropped:
                self.problem(
                    dropped[name],
                    f"drops signal {name!r}, which {format_path(rule.path)} reads; drop that "
                    f"rule too (overrides: {{{rule.section}: "
                    + ("null}" if rule.single else f"{{{rule.identity}: null}}}}")
                    + ")",
                    None,
                )
            elif name not in local and key in keys:
                self.problem(
                    keys[key],
                    f"unknown signal {name!r}; the signals of template {template.name}: "
                    f"{names_text(sorted(local))}",
                    None,
                )
            data[key] = f"{instance.name}.{name}"

    def result(self, machines: list[Any]) -> Expansion:
        """The file's data with ``machines`` (the expanded list) and the signals made."""
        data = {k: v for k, v in self.data.items() if k != TEMPLATES}
        sources = []
        for i, source in enumerate(self.sources):
            own = source.get("signals") if isinstance(source, dict) else None
            if i in self.new_signals and isinstance(own, list | None):
                # (signals: that is not a list is left for the schema to name)
                source = {**source, "signals": [*(own or []), *self.new_signals[i]]}
            sources.append(source)
        if isinstance(data.get("sources"), list):
            data["sources"] = sources
        if isinstance(data.get("machines"), list):
            data["machines"] = machines
        uses = [
            TemplateUse(
                name,
                [machine for machine, _, _ in made],
                sum(signals for _, signals, _ in made),
                sum(rules for _, _, rules in made),
            )
            for name, made in self.made.items()
        ]
        return Expansion(data, self.origins, uses)
