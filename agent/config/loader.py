"""Load config.yaml: parse, apply environment overrides, validate, cross-check.

Every problem becomes a ConfigError naming the file, the key path as a plant engineer
reads it (``sources[0].signals[2].data_type``), the line when known, and what was
expected; a problem in a value set from the environment names the variable instead of a
line. The CLI prints it and exits 78 (EX_CONFIG); no traceback. A key written twice in
one mapping is an error (YAML loaders keep the last one silently).

Environment overrides: agent.config.environment. Parsing: agent.config.yamlfile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config.environment import apply_env, env_overrides
from agent.config.models import FloorgateConfig
from agent.config.problems import EX_CONFIG as EX_CONFIG
from agent.config.problems import ConfigError as ConfigError
from agent.config.problems import ConfigProblem, KeyPath, format_path
from agent.config.xref import cross_check
from agent.config.yamlfile import key_lines, parse_yaml


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
    data = parse_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            file,
            [ConfigProblem("", "the file must be a mapping of sections (agent:, sources:, ...)")],
        )
    overrides = env_overrides(data, os.environ if environ is None else environ, file)
    apply_env(data, overrides)
    env = {override.path: override.variable for override in overrides}
    try:
        config = FloorgateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, _problems_from(exc, key_lines(text), env)) from None
    found = cross_check(config)
    if found:
        lines = key_lines(text)
        raise ConfigError(file, [_problem_at(loc, message, lines, env) for loc, message in found])
    return config


def _nearest_line(loc: KeyPath, lines: Mapping[KeyPath, int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
