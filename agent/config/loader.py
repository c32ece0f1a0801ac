"""Load config.yaml: parse, apply environment overrides, validate, cross-check.

Every problem becomes a ConfigError naming the file, the key path as a plant engineer
reads it (``sources[0].signals[2].data_type``), the line when known, and what was
expected; a problem in a value set from the environment names the variable instead of a
line. The CLI prints it and exits 78 (EX_CONFIG); no traceback. A key written twice in
one mapping is an error (YAML loaders keep the last one silently).

Environment overrides: ``FLOORGATE__<PATH>=<value>``, the parts of the key path joined by
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
(Plain pydantic-settings env parsing cannot address list items, which is most of this
file.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.config.models import FloorgateConfig
from agent.config.xref import cross_check

if TYPE_CHECKING:
    import yaml

# PyYAML is imported where a file is parsed, not here: modules that only need the error
# types (the health report, the CLI's parser) do not pay for it.

ENV_PREFIX = "FLOORGATE__"
EX_CONFIG = 78

KeyPath = tuple[int | str, ...]


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # "sources[0].signals[2].data_type", or "" for the whole file
    message: str
    line: int | None = None
    variable: str | None = None  # the FLOORGATE__ environment variable that set the value

    def render(self, file: str) -> str:
        if self.variable:
            where = f"{self.variable} (environment)"
        else:
            where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"invalid configuration in {self.file}:"]
        lines += [f"  {problem.render(self.file)}" for problem in self.problems]
        return "\n".join(lines)


def format_path(parts: KeyPath) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _line_map(
    node: yaml.Node, prefix: KeyPath = (), active: frozenset[int] = frozenset()
) -> Iterator[tuple[KeyPath, int]]:
    """Map each key path to its 1-based line, so messages can point into the file.
    (``active``: the nodes being walked, so a recursive anchor is not followed forever.)"""
    import yaml

    yield prefix, node.start_mark.line + 1
    if id(node) in active:
        return
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            yield (*prefix, key), key_node.start_mark.line + 1
            for path, line in _line_map(value_node, (*prefix, key), active):
                if path != (*prefix, key):
                    yield path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_map(item, (*prefix, index), active)


@dataclass(frozen=True)
class _Duplicate:
    mapping: tuple[int, int]  # (line, column) where the mapping starts, 0-based
    key: Any
    first: int  # 1-based lines of the two keys
    second: int


@cache
def _loader() -> Any:
    """The YAML loader class: PyYAML's safe loader that also notes duplicate keys."""
    import yaml

    # libyaml when PyYAML was built with it (the wheels are): a 5,000-tag config parses
    # in 0.5 s instead of 3.6 s, with a third of the peak memory. Only the parser is C;
    # the constructor, where duplicates are seen, is Python either way.
    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merge_tag, str_tag = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:str"

    class Loader(base):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.duplicates: list[_Duplicate] = []
            self._checked: set[int] = set()

        def flatten_mapping(self, node: yaml.MappingNode) -> None:
            # The first sight of a mapping's own keys: construct_mapping starts here, and
            # it folds merge keys (<<: *base) in, which may repeat a key on purpose.
            if id(node) not in self._checked:
                self._checked.add(id(node))
                self._note_duplicates(node)
            super().flatten_mapping(node)

        def _note_duplicates(self, node: yaml.MappingNode) -> None:
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                tag = key_node.tag
                if tag == str_tag:  # nearly every key: its text is the key
                    key = key_node.value
                elif tag == merge_tag or not isinstance(key_node, yaml.ScalarNode):
                    continue
                else:  # 1 and 0x1 are the same key (kept: construct_mapping reuses it)
                    key = self.construct_object(key_node)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    self.duplicates.append(
                        _Duplicate(
                            (node.start_mark.line, node.start_mark.column),
                            key,
                            first.start_mark.line + 1,
                            key_node.start_mark.line + 1,
                        )
                    )

    return Loader


def _load_yaml(text: str) -> tuple[Any, list[_Duplicate]]:
    """The data of a YAML text and the keys written twice in it."""
    loader = _loader()(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def _parse_yaml(text: str, file: str) -> Any:
    """The data of the file. Line numbers are not kept: they are needed only for an
    error, and ``_lines`` finds them by parsing again then. (Keeping a line for every
    key of a 5,000-tag file cost 5 MiB and 0.15 s at every start.)"""
    import yaml

    try:
        data, duplicates = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise ConfigError(file, [ConfigProblem("", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [ConfigProblem("", f"YAML error: {exc}")]) from None
    if duplicates:
        raise ConfigError(file, _duplicate_problems(text, duplicates))
    return data


def _mapping_paths(
    node: yaml.Node, prefix: KeyPath = (), active: frozenset[int] = frozenset()
) -> Iterator[tuple[tuple[int, int], KeyPath]]:
    """(start of each mapping, its key path), to name where a duplicate key is."""
    import yaml

    if id(node) in active:
        return
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        yield (node.start_mark.line, node.start_mark.column), prefix
        for key_node, value_node in node.value:
            yield from _mapping_paths(value_node, (*prefix, key_node.value), active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _mapping_paths(item, (*prefix, index), active)


def _duplicate_problems(text: str, duplicates: list[_Duplicate]) -> list[ConfigProblem]:
    import yaml

    node = yaml.compose(text, Loader=_loader())
    paths: dict[tuple[int, int], KeyPath] = {}
    for start, path in _mapping_paths(node) if node is not None else ():
        paths.setdefault(start, path)
    problems = []
    for dup in duplicates:
        lines = (
            f"lines {dup.first} and {dup.second}"
            if dup.first != dup.second
            else f"twice on line {dup.first}"
        )
        path = (*paths.get(dup.mapping, ()), str(dup.key))
        problems.append(
            ConfigProblem(
                format_path(path),
                f"duplicate key {dup.key!r} ({lines}); keep one",
                dup.second,
            )
        )
    return problems


def _lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key path of a file that parsed before."""
    import yaml

    node = yaml.compose(text, Loader=_loader())
    return dict(_line_map(node)) if node is not None else {}


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


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str], file: str) -> list[_Override]:
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
            overrides.append(_Override(variable, path, _env_value(raw, path)))
        except _EnvProblem as exc:
            problems.append(ConfigProblem(format_path(exc.path), exc.message, variable=variable))
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
        value, duplicates = _load_yaml(raw)
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


def _apply_env(data: dict[str, Any], overrides: list[_Override]) -> None:
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


def _describe_error(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see config.example.yaml for every key)"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags', '')}"
    if error["type"] == "union_tag_not_found":
        return "required key is missing (it says which kind of source or destination this is)"
    if (
        "input" in error
        and error["type"] not in ("model_type", "dict_type")
        and not isinstance(error["input"], dict | list)
    ):
        message += f" (got {error['input']!r})"
    return message


def _problems_from(
    exc: ValidationError, lines: Mapping[KeyPath, int], env: Mapping[KeyPath, str]
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        loc = _yaml_location(tuple(error["loc"]))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")  # pydantic points at the item; the culprit is its type key
        problems.append(_problem_at(loc, _describe_error(error), lines, env))
    return problems


def _problem_at(
    loc: KeyPath, message: str, lines: Mapping[KeyPath, int], env: Mapping[KeyPath, str]
) -> ConfigProblem:
    """A problem at ``loc``: named by the environment variable that set the value (or a
    value around it), else by the line in the file."""
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in env:
            return ConfigProblem(format_path(loc), message, variable=env[loc[:cut]])
    inside = sorted(variable for path, variable in env.items() if loc and path[: len(loc)] == loc)
    if inside:
        message += f" (with {', '.join(inside)} from the environment)"
    return ConfigProblem(format_path(loc), message, _nearest_line(loc, lines))


# Lists whose items are a union chosen by their `type:`; pydantic adds the chosen tag
# ("modbus_tcp") to the error location, which is not a key the engineer wrote.
_TAGGED_LISTS = {"sources", "destinations"}


def _yaml_location(loc: KeyPath) -> KeyPath:
    if len(loc) > 2 and loc[0] in _TAGGED_LISTS and isinstance(loc[1], int):
        return (*loc[:2], *loc[3:])
    return loc


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> FloorgateConfig:
    """Read, override, validate and cross-check; raise ConfigError on any problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            file, [ConfigProblem("", f"cannot read the file: {exc.strerror}")]
        ) from None
    data = _parse_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            file,
            [ConfigProblem("", "the file must be a mapping of sections (agent:, sources:, ...)")],
        )
    overrides = _env_overrides(data, os.environ if environ is None else environ, file)
    _apply_env(data, overrides)
    env = {override.path: override.variable for override in overrides}
    try:
        config = FloorgateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, _problems_from(exc, _lines(text), env)) from None
    found = cross_check(config)
    if found:
        lines = _lines(text)
        raise ConfigError(file, [_problem_at(loc, message, lines, env) for loc, message in found])
    return config


def _nearest_line(loc: KeyPath, lines: Mapping[KeyPath, int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
