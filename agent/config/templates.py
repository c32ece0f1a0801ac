"""Machine templates: a machine type written once, made into many machines at load time.

``expand_templates`` takes the parsed file (environment overrides applied) and turns the
``templates:`` section and every ``machines:`` item with ``template:`` into what the file
would hold without them: each machine's signals appended to the ``signals:`` of the source
it names (named ``<machine>.<signal>``, placed by the source type's
``place_template_signal``), and a plain machine with the template's rules reading them.
The root schema, the cross-checks, the engine, the drivers and the reload diff see only
that plain config, so none of them knows templates exist.

Every expanded signal and rule remembers where it was written (the template, or the
machine's override) and which machine made it (``Expansion.locate``): an error in it is
reported at the template's line, naming the machine. The schema is in
agent.config.template_models.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from agent.common.model import NAME_PATTERN
from agent.config.common import Placement, PlacementError
from agent.config.problems import KeyPath, describe_error, format_path
from agent.config.rules import RuleConfig
from agent.config.template_models import InstanceOverrides, MachineInstance, TemplateConfig
from agent.registry import SOURCE_PLUGINS, config_models

TEMPLATES = "templates"
# Keys only a machine made from a template has: on a plain machine they are a mistake
# whose likely cause (a forgotten template:) deserves its own message.
INSTANCE_ONLY_KEYS = ("source", "base_address", "device_address", "node", "overrides")


@dataclass(frozen=True)
class InstanceRef:
    """The machine that made an expanded item, to name it in an error."""

    path: KeyPath  # ("machines", 7)
    name: str
    detail: str  # "source press-line-plc, base_address 700"


@dataclass(frozen=True)
class Origin:
    """Where an expanded item was written: ``path``, except for the keys in ``keys``
    (set by the machine's override or placement)."""

    path: KeyPath
    keys: Mapping[str, KeyPath]
    instance: InstanceRef


@dataclass(frozen=True)
class TemplateUse:
    """What one template made: for `floorgate check-config`."""

    template: str
    machines: list[str]
    signals: int
    rules: int


@dataclass
class Expansion:
    """The file's data with the templates expanded, and where each expanded item came from."""

    data: dict[str, Any]
    origins: dict[KeyPath, Origin] = field(default_factory=dict)
    uses: list[TemplateUse] = field(default_factory=list)

    def locate(self, loc: KeyPath) -> tuple[KeyPath, InstanceRef | None]:
        """The key path in the file of a key path in the expanded data, and the machine
        whose expansion it is (None for what was written as it is)."""
        for cut in range(len(loc), 0, -1):
            origin = self.origins.get(loc[:cut])
            if origin is None:
                continue
            rest = loc[cut:]
            if rest and isinstance(rest[0], str) and rest[0] in origin.keys:
                return (*origin.keys[rest[0]], *rest[1:]), origin.instance
            return (*origin.path, *rest), origin.instance
        return loc, None


# The rule sections a machine's overrides change, and whether each holds a list of rules
# (counters) or one (state).
RULE_SECTIONS = {
    name: typing.get_origin(TemplateConfig.model_fields[name].annotation) is list
    for name in InstanceOverrides.model_fields
    if name != "signals"
}

Problem = tuple[KeyPath, str, InstanceRef | None]
Placer = Callable[[dict[str, Any], Placement], dict[str, Any]]  # TemplateTarget's method


class TemplateError(Exception):
    """Templates or machines made from them that cannot be expanded."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{format_path(p[0])}: {p[1]}" for p in problems))
        self.problems = problems


# -- the templates, read once -------------------------------------------------------------


@dataclass
class _Signal:
    name: str
    data: dict[str, Any]  # the keys as written, without the name
    path: KeyPath


@dataclass
class _Rule:
    section: str
    single: bool  # state: one rule, not a list
    data: dict[str, Any]
    path: KeyPath
    keys: Mapping[str, KeyPath]  # keys written elsewhere (a range's sample: its signal)
    model: RuleConfig | None  # None: a range's sample, whose only signal key is "signal"
    identity: str | None  # how an override names it: an alarm's name, else its signal


@dataclass
class _Template:
    name: str
    path: KeyPath
    model: TemplateConfig
    signals: dict[str, _Signal]
    rules: list[_Rule]


def _match(key: str, names: list[str]) -> list[str]:
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


def _names_text(names: list[str], most: int = 12) -> str:
    text = ", ".join(names[:most])
    return text + (f", ... ({len(names)} in all)" if len(names) > most else "") or "(none)"


def _validation_problems(exc: ValidationError, prefix: KeyPath) -> list[Problem]:
    return [(prefix + tuple(e["loc"]), describe_error(e), None) for e in exc.errors()]


def _identity(rule: RuleConfig) -> str | None:
    """How an override names a rule of a list: by its name when it has one (alarms),
    else by the signal it reads."""
    for key in ("name", "signal"):
        value = getattr(rule, key, None)
        if isinstance(value, str):
            return value
    return None


def _read_signals(
    model: TemplateConfig, raw: dict[str, Any], path: KeyPath, problems: list[Problem]
) -> dict[str, _Signal]:
    signals: dict[str, _Signal] = {}
    for index, signal in enumerate(model.signals):
        where = (*path, "signals", index)
        if signal.name in signals:
            first = format_path(signals[signal.name].path)
            problems.append(((*where, "name"), f"{signal.name!r} is already used by {first}", None))
            continue
        data = {k: v for k, v in raw["signals"][index].items() if k != "name"}
        signals[signal.name] = _Signal(signal.name, data, where)
    return signals


def _read_ranges(
    model: TemplateConfig,
    raw: dict[str, Any],
    path: KeyPath,
    signals: dict[str, _Signal],
    problems: list[Problem],
) -> list[_Rule]:
    """Add each range's signals to ``signals``; returns their sample rules."""
    samples: list[_Rule] = []
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
            signals[local] = _Signal(local, {"address": address, **data}, where)
            if block.sample is not None:
                sample = {"signal": local, **raw_block["sample"]}
                samples.append(
                    _Rule(
                        "samples", False, sample, (*where, "sample"), {"signal": where}, None, local
                    )
                )
    return samples


def _read_rules(
    model: TemplateConfig,
    raw: dict[str, Any],
    path: KeyPath,
    signals: dict[str, _Signal],
    problems: list[Problem],
) -> list[_Rule]:
    rules: list[_Rule] = []
    for place, rule in model.rule_entries():
        raw_rule: Any = raw
        for part in place:
            raw_rule = raw_rule[part]
        single = len(place) == 1
        rules.append(
            _Rule(str(place[0]), single, dict(raw_rule), (*path, *place), {}, rule, _identity(rule))
        )
        for ref in rule.signal_refs():
            if ref.name not in signals:
                problems.append(
                    (
                        (*path, *place, ref.key),
                        f"unknown signal {ref.name!r}; the template's signals: "
                        f"{_names_text(list(signals))}",
                        None,
                    )
                )
    return rules


def _read_template(name: str, raw: Any, problems: list[Problem]) -> _Template | None:
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
        problems += _validation_problems(exc, path)
        return None
    signals = _read_signals(model, raw, path, problems)
    range_samples = _read_ranges(model, raw, path, signals, problems)
    rules = _read_rules(model, raw, path, signals, problems)
    # A range's samples come after the template's own, as the YAML reads top-down.
    return _Template(name, path, model, signals, rules + range_samples)


def _read_templates(raw: Any, problems: list[Problem]) -> dict[str, _Template]:
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


# -- the machines made from them ----------------------------------------------------------


def _source_classes() -> dict[str, Any]:
    """Source `type` -> its config class (the plugins', from the registry)."""
    return {
        model.model_fields["type"].annotation.__args__[0]: model
        for model in config_models(SOURCE_PLUGINS)
    }


class _Expander:
    def __init__(self, data: dict[str, Any], templates: dict[str, _Template]) -> None:
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
                cls = self.classes.get(source.get("type"))  # type: ignore[arg-type]
                if cls is None:
                    return None  # an unknown type: the schema names it
                return i, cls
        self.problem(
            ("machines", m, "source"),
            f"unknown source {instance.source!r}; sources: {_names_text(names)}",
            None,
        )
        return None

    def expand(self, m: int, raw: dict[str, Any], instance: MachineInstance) -> dict[str, Any]:
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

    def override_signals(
        self, m: int, raw: dict[str, Any], template: _Template
    ) -> tuple[dict[str, tuple[dict[str, Any], dict[str, KeyPath]]], dict[str, KeyPath]]:
        """The template's signals with the machine's overrides: name -> (keys, where the
        keys set by an override were written); and the names it drops, with where."""
        signals = {
            name: (dict(s.data), dict[str, KeyPath]()) for name, s in template.signals.items()
        }
        dropped: dict[str, KeyPath] = {}
        overrides = (raw.get("overrides") or {}).get("signals") or {}
        for key, override in overrides.items():
            path = ("machines", m, "overrides", "signals", key)
            names = _match(str(key), list(signals))
            if len(names) != 1:
                what = "matches several signals" if names else "is no signal"
                self.problem(
                    path,
                    f"{key!r} {what} of template {template.name}; its signals: "
                    f"{_names_text(names or list(template.signals))}",
                    None,
                )
            elif override is None:
                dropped[names[0]] = path
                del signals[names[0]]
            elif "name" in override:
                self.problem(
                    (*path, "name"),
                    "a signal's name comes from the template and cannot be changed",
                    None,
                )
            else:
                data, keys = signals[names[0]]
                data.update(override)
                keys.update({k: (*path, k) for k in override})
        return signals, dropped

    def placer(
        self, m: int, instance: MachineInstance, found: tuple[int, Any] | None
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
                self.problem(
                    ("machines", m, key),
                    f"{key} does not apply to source {instance.source!r} "
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
        template: _Template,
        ref: InstanceRef,
        found: tuple[int, Any] | None,
    ) -> tuple[set[str], dict[str, KeyPath]]:
        """Append the machine's signals to its source. Returns the names (in the template)
        of the signals it has, and of those its overrides drop (with where)."""
        where: KeyPath = ("machines", m)
        signals, dropped = self.override_signals(m, raw, template)
        place = self.placer(m, instance, found)
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
        template: _Template,
        ref: InstanceRef,
        local: set[str],
        dropped: dict[str, KeyPath],
    ) -> dict[str, Any]:
        where: KeyPath = ("machines", m)
        overrides = raw.get("overrides") or {}
        chosen: list[tuple[_Rule, dict[str, Any], dict[str, KeyPath]]] = [
            (rule, dict(rule.data), dict(rule.keys)) for rule in template.rules
        ]
        for section, is_list in RULE_SECTIONS.items():
            if section not in overrides:
                continue
            value = overrides[section]
            path = (*where, "overrides", section)
            if is_list:
                chosen = self.override_list(chosen, section, value or {}, path, template)
            else:
                chosen = self.override_single(chosen, section, value, path, template)
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

    def override_single(
        self,
        chosen: list[tuple[_Rule, dict[str, Any], dict[str, KeyPath]]],
        section: str,
        value: Any,
        path: KeyPath,
        template: _Template,
    ) -> list[tuple[_Rule, dict[str, Any], dict[str, KeyPath]]]:
        """A section holding one rule (state): its keys changed, or dropped by null."""
        found = [c for c in chosen if c[0].section == section]
        if not found:
            self.problem(path, f"template {template.name} has no {section} rule to change", None)
            return chosen
        if value is None:
            return [c for c in chosen if c[0].section != section]
        _, data, keys = found[0]
        data.update(value)
        keys.update({k: (*path, k) for k in value})
        return chosen

    def override_list(
        self,
        chosen: list[tuple[_Rule, dict[str, Any], dict[str, KeyPath]]],
        section: str,
        overrides: dict[str, Any],
        path: KeyPath,
        template: _Template,
    ) -> list[tuple[_Rule, dict[str, Any], dict[str, KeyPath]]]:
        drop: set[int] = set()
        candidates = [(i, c) for i, c in enumerate(chosen) if c[0].section == section]
        named = any(
            c[0].model is not None and "name" in type(c[0].model).model_fields
            for _, c in candidates
        )
        by = "name" if named else "signal"
        for key, value in overrides.items():
            identities = [str(c[0].identity) for _, c in candidates]
            names = _match(str(key), list(dict.fromkeys(identities)))
            hits = [(i, c) for i, c in candidates if c[0].identity in names]
            if not candidates:
                self.problem((*path, key), f"template {template.name} has no {section}", None)
                continue
            if len(hits) != 1:
                if hits:
                    what = f"matches {len(hits)} {section} of template {template.name}"
                else:
                    what = f"names no {section[:-1]} of template {template.name}"
                self.problem(
                    (*path, key),
                    f"{key!r} {what}; {section} there by {by}: "
                    f"{_names_text(list(dict.fromkeys(identities)))}",
                    None,
                )
                continue
            index, (_, data, keys) = hits[0]
            if value is None:
                drop.add(index)
                continue
            data.update(value)
            keys.update({k: (*path, key, k) for k in value})
        return [c for i, c in enumerate(chosen) if i not in drop]

    def rename(
        self,
        rule: _Rule,
        data: dict[str, Any],
        keys: dict[str, KeyPath],
        instance: MachineInstance,
        template: _Template,
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
                    f"{_names_text(sorted(local))}",
                    None,
                )
            data[key] = f"{instance.name}.{name}"

    def result(self, machines: list[Any]) -> Expansion:
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


def _instances(machines: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for m, item in enumerate(machines if isinstance(machines, list) else []):
        if isinstance(item, dict) and "template" in item:
            yield m, item


def _plain_machine_problems(machines: Any) -> list[Problem]:
    problems: list[Problem] = []
    for m, item in enumerate(machines if isinstance(machines, list) else []):
        if not isinstance(item, dict) or "template" in item:
            continue
        for key in INSTANCE_ONLY_KEYS:
            if key in item:
                problems.append(
                    (
                        ("machines", m, key),
                        f"{key} is a key of a machine made from a template, and this machine "
                        "names none: add template: <name>, or remove it",
                        None,
                    )
                )
    return problems


def expand_templates(data: dict[str, Any]) -> Expansion:
    """The data with every template expanded (see the module docstring); raises
    TemplateError naming each template or machine that cannot be expanded."""
    machines = data.get("machines")
    instances = list(_instances(machines))
    problems = _plain_machine_problems(machines)
    if TEMPLATES not in data and not instances:
        if problems:
            raise TemplateError(problems)
        return Expansion(data)
    templates = _read_templates(data.get(TEMPLATES), problems)
    shells: list[tuple[int, dict[str, Any], MachineInstance]] = []
    for m, item in instances:
        try:
            instance = MachineInstance.model_validate(item)
        except ValidationError as exc:
            problems += _validation_problems(exc, ("machines", m))
            continue
        if instance.template not in templates:
            written = data.get(TEMPLATES)
            if written is not None and not isinstance(written, dict):
                continue  # the section itself is wrong: said above
            if isinstance(written, dict) and instance.template in written:
                continue  # the template itself is wrong: said above
            known = _names_text(list(templates)) if templates else "(there is no templates:)"
            problems.append(
                (
                    ("machines", m, "template"),
                    f"unknown template {instance.template!r}; templates: {known}",
                    None,
                )
            )
            continue
        shells.append((m, item, instance))
    if problems:
        raise TemplateError(problems)
    expander = _Expander(data, templates)
    expanded = list(machines) if isinstance(machines, list) else []
    for m, item, instance in shells:
        expanded[m] = expander.expand(m, item, instance)
    if expander.problems:
        raise TemplateError(expander.problems)
    return expander.result(expanded)
