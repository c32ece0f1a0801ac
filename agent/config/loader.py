"""Load config.yaml: parse, apply environment overrides, validate, cross-check.

Every problem becomes a ConfigError naming the file, the key path as a plant engineer
reads it (``sources[0].signals[2].data_type``), the line when known, and what was
expected. The CLI prints it and exits 78 (EX_CONFIG); no traceback.

Environment overrides: ``FLOORGATE__<PATH>`` where the path's parts are joined by two
underscores and list items are numbers, e.g. ``FLOORGATE__HEALTH__PORT=8411`` or
``FLOORGATE__SOURCES__0__HOST=10.0.0.7``. Values are read as YAML scalars. (Plain
pydantic-settings env parsing cannot address list items, which is most of this file.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # "sources[0].signals[2].data_type", or "" for the whole file
    message: str
    line: int | None = None

    def render(self, file: str) -> str:
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


def format_path(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _line_map(
    node: yaml.Node, prefix: tuple[int | str, ...] = ()
) -> Iterator[tuple[tuple[int | str, ...], int]]:
    """Map each key path to its 1-based line, so messages can point into the file."""
    import yaml

    yield prefix, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            yield (*prefix, key), key_node.start_mark.line + 1
            for path, line in _line_map(value_node, (*prefix, key)):
                if path != (*prefix, key):
                    yield path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_map(item, (*prefix, index))


def _loader() -> type[yaml.SafeLoader] | type[yaml.CSafeLoader]:
    import yaml

    # libyaml when PyYAML was built with it (the wheels are): a 5,000-tag config parses
    # in 0.5 s instead of 3.6 s, with a third of the peak memory.
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, file: str) -> Any:
    """The data of the file. Line numbers are not kept: they are needed only for an
    error, and ``_lines`` finds them by parsing again then. (Keeping a line for every
    key of a 5,000-tag file cost 5 MiB and 0.15 s at every start.)"""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise ConfigError(file, [ConfigProblem("", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [ConfigProblem("", f"YAML error: {exc}")]) from None


def _lines(text: str) -> dict[tuple[int | str, ...], int]:
    """The 1-based line of every key path of a file that parsed before."""
    import yaml

    node = yaml.compose(text, Loader=_loader())
    return dict(_line_map(node)) if node is not None else {}


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], file: str) -> None:
    import yaml

    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        target: Any = data
        try:
            for part in parts[:-1]:
                target = (
                    target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
                )
            value = yaml.safe_load(raw) if raw else raw
            if isinstance(target, list):
                target[int(parts[-1])] = value
            else:
                target[parts[-1]] = value
        except (ValueError, IndexError, TypeError, AttributeError, yaml.YAMLError):
            raise ConfigError(
                file,
                [ConfigProblem(".".join(parts), f"environment variable {name} names no key here")],
            ) from None


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
    exc: ValidationError, lines: Mapping[tuple[int | str, ...], int]
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        loc = _yaml_location(tuple(error["loc"]))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")  # pydantic points at the item; the culprit is its type key
        problems.append(
            ConfigProblem(format_path(loc), _describe_error(error), _nearest_line(loc, lines))
        )
    return problems


# Lists whose items are a union chosen by their `type:`; pydantic adds the chosen tag
# ("modbus_tcp") to the error location, which is not a key the engineer wrote.
_TAGGED_LISTS = {"sources", "destinations"}


def _yaml_location(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
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
    _apply_env(data, os.environ if environ is None else environ, file)
    try:
        config = FloorgateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, _problems_from(exc, _lines(text))) from None
    found = cross_check(config)
    if found:
        lines = _lines(text)
        raise ConfigError(
            file,
            [
                ConfigProblem(format_path(loc), message, _nearest_line(loc, lines))
                for loc, message in found
            ],
        )
    return config


def _nearest_line(
    loc: tuple[int | str, ...], lines: Mapping[tuple[int | str, ...], int]
) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
