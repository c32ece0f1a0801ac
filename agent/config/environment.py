"""Environment overrides: ``FLOORGATE__<PATH>=<value>``, the parts of the key path joined by
two underscores; keys match whatever their case. List items are addressed by their
``name``, never by position (a position silently moves to another device when an item is
inserted above it)::

    FLOORGATE__HEALTH__PORT=8411
    FLOORGATE__SOURCES__press_line__HOST=10.0.0.7
    FLOORGATE__SOURCES__press_line__SIGNALS__PRESS1_GOOD__ADDRESS=40

The item is the one whose name, as written in the file, is the same; else the one whose
name is the same ignoring case; else the one whose name is the same ignoring case with
every character other than a letter, digit or ``_`` read as ``_`` (a variable name cannot
hold ``.`` or ``-``: ``PRESS1_GOOD`` finds ``press1.good``). No match, several matches, or
a number is an error naming the variable and the names there. A list whose items have no
name (counters, samples, event_types, ...) is set whole, as YAML:
``FLOORGATE__DESTINATIONS__middleware__EVENT_TYPES='[alarm, machine.state]'``. Values are
read as YAML (``8411`` is a number, ``'[a, b]'`` a list, an empty value an empty string).
Two variables for the same value, or one inside a value another sets whole, are an error.
Overrides apply to the file as written, before its templates are expanded
(agent.config.templates): a machine made from a template is addressed by its name like any
machine, its signals through ``MACHINES__<machine>__OVERRIDES__SIGNALS__<signal>__<KEY>``.
(Plain pydantic-settings env parsing cannot address list items, which is most of this
file.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.config.problems import ConfigError, ConfigProblem, KeyPath, format_path
from agent.config.yamlfile import load_yaml

ENV_PREFIX = "FLOORGATE__"
# The signals of a machine made from a template are not in the file's sources: they are
# set through the machine, which is in the file.
MADE_SIGNAL_HINT = (
    "a signal of a machine made from a template is set through the machine: "
    f"{ENV_PREFIX}MACHINES__<machine>__OVERRIDES__SIGNALS__<signal>__<KEY>"
)


@dataclass(frozen=True)
class _Override:
    variable: str
    path: KeyPath  # resolved: list items by their index in the file
    value: Any


class _EnvProblem(Exception):
    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def env_overrides(data: dict[str, Any], environ: Mapping[str, str], file: str) -> list[_Override]:
    """The FLOORGATE__ variables, each resolved to the key path it sets in ``data``.
    Names are looked up in the file as written, before any override is applied."""
    overrides: list[_Override] = []
    problems: list[ConfigProblem] = []
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = [p for p in variable[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            path = _resolve(data, parts)
            if (
                len(path) > 3
                and path[::2][:2] == ("sources", "signals")
                and isinstance(path[3], str)
            ):
                raise _EnvProblem(path[:3], "this source has no signals: list in the file")
            overrides.append(_Override(variable, path, _env_value(raw, path)))
        except _EnvProblem as exc:
            message = exc.message
            if "templates" in data and exc.path[::2][:2] == ("sources", "signals"):
                message += f"; {MADE_SIGNAL_HINT}"
            problems.append(ConfigProblem(format_path(exc.path), message, variable=variable))
    problems += _conflicts(overrides)
    if problems:
        raise ConfigError(file, problems)
    return overrides


def _resolve(data: dict[str, Any], parts: list[str]) -> KeyPath:
    node: Any = data
    path: list[int | str] = []
    for i, part in enumerate(parts):
        if isinstance(node, list):
            index = _item_index(node, parts, i, tuple(path))
            path.append(index)
            node = node[index]
        elif isinstance(node, dict):
            key = _key_in(node, part)
            path.append(key)
            node = node.get(key)
        elif node is None:  # not in the file (or empty): the override adds it
            path.append(part.lower())
        else:
            raise _EnvProblem(
                tuple(path),
                f"this is a single value ({node!r}), it has no key {part.lower()!r}",
            )
    return tuple(path)


def _key_in(mapping: dict[Any, Any], part: str) -> Any:
    """The key of ``mapping`` that ``part`` names: keys are matched ignoring case, and a
    number names a number key (``MAP__1`` is ``map: {1: ...}``)."""
    lower = part.lower()
    if lower in mapping:
        return lower
    for key in mapping:
        if str(key).lower() == lower:
            return key
    return lower


def _env_form(name: str) -> str:
    return re.sub(r"[^0-9a-z_]", "_", name.lower())


def _item_index(items: list[Any], parts: list[str], i: int, path: KeyPath) -> int:
    """The index of the item ``parts[i]`` names (see the module docstring)."""
    part = parts[i]
    named = [
        (index, str(item["name"]))
        for index, item in enumerate(items)
        if isinstance(item, dict) and item.get("name") is not None
    ]
    if not named:
        whole = ENV_PREFIX + "__".join(parts[:i])
        raise _EnvProblem(
            path,
            "the items of this list have no name, so one of them cannot be set alone; "
            f"set the whole list, as YAML: {whole}='[...]'",
        )
    for same in (
        lambda name: name == part,
        lambda name: name.lower() == part.lower(),
        lambda name: _env_form(name) == _env_form(part),
    ):
        found = [(index, name) for index, name in named if same(name)]
        if len(found) == 1:
            return found[0][0]
        if found:
            raise _EnvProblem(
                path,
                f"{part!r} matches more than one item: {', '.join(n for _, n in found)}",
            )
    names = _names_text([name for _, name in named])
    if part.isdigit():
        by_name = ENV_PREFIX + "__".join([*parts[:i], "<name>", *parts[i + 1 :]])
        raise _EnvProblem(path, f"list items are addressed by name: {by_name}, names here: {names}")
    raise _EnvProblem(path, f"no item is named {part!r}; names here: {names}")


def _names_text(names: list[str], most: int = 10) -> str:
    text = ", ".join(names[:most])
    if len(names) > most:
        text += f", ... ({len(names)} in all)"
    if any(re.search(r"[^A-Za-z0-9_]", name) for name in names):
        text += " (in a variable name, write . and - as _)"
    return text


def _env_value(raw: str, path: KeyPath) -> Any:
    import yaml

    if not raw:
        return raw
    try:
        value, duplicates = load_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise _EnvProblem(path, f"the value is not valid YAML: {problem}") from None
    if duplicates:
        raise _EnvProblem(path, f"duplicate key {duplicates[0].key!r} in the value")
    return value


def _conflicts(overrides: list[_Override]) -> list[ConfigProblem]:
    problems = []
    for n, first in enumerate(overrides):
        for second in overrides[n + 1 :]:
            outer, inner = sorted((first, second), key=lambda o: len(o.path))
            if inner.path[: len(outer.path)] != outer.path:
                continue
            why = (
                f"{outer.variable} sets the same value; set it once"
                if inner.path == outer.path
                else f"this is inside {format_path(outer.path)}, which {outer.variable} "
                "sets whole; set one or the other"
            )
            problems.append(ConfigProblem(format_path(inner.path), why, variable=inner.variable))
    return problems


def apply_env(data: dict[str, Any], overrides: list[_Override]) -> None:
    for override in overrides:
        target: Any = data
        for key in override.path[:-1]:
            if isinstance(target, dict):
                child = target.get(key)
                if not isinstance(child, dict | list):
                    child = target[key] = {}  # a section not in the file, or left empty
                target = child
            else:
                target = target[key]  # a list item, by the index its name resolved to
        target[override.path[-1]] = override.value
