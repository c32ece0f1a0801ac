"""Load config.yaml: parse, apply environment overrides, validate, cross-check.

Every problem becomes a ConfigError naming the file, the key path as a plant engineer
reads it (``sources[0].signals[2].data_type``), the line when known, and what was
expected; a problem in a value set from the environment names the variable instead of a
line. The CLI prints it and exits 78 (EX_CONFIG); no traceback. A key written twice in
one mapping is an error (YAML loaders keep the last one silently).

Machine templates are expanded after the environment overrides and before validation
(agent.config.templates): the schema checks the plain config they make, and a problem in
an expanded item is reported where it was written (the template's line), naming the
machine that made it; the same problem in many machines is reported once.

Environment overrides: agent.config.environment. Parsing: agent.config.yamlfile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.config.environment import apply_env, env_overrides
from agent.config.models import FloorgateConfig
from agent.config.problems import EX_CONFIG as EX_CONFIG
from agent.config.problems import ConfigError as ConfigError
from agent.config.problems import ConfigProblem, KeyPath, describe_error, format_path
from agent.config.templates import Expansion, InstanceRef, TemplateError, expand_templates
from agent.config.xref import cross_check
from agent.config.yamlfile import key_lines, parse_yaml

Found = list[tuple[KeyPath, str, InstanceRef | None]]


def _validation_problems(exc: ValidationError, expansion: Expansion) -> Found:
    found: Found = []
    for error in exc.errors():
        loc = _yaml_location(tuple(error["loc"]))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")  # pydantic points at the item; the culprit is its type key
        where, ref = expansion.locate(loc)
        message = describe_error(error)
        if error["type"] == "missing" and loc[::2] == ("sources", "signals") and expansion.uses:
            message += " (no machine made from a template reads from this source either)"
        found.append((where, message, ref))
    return found


def _cross_check_problems(config: FloorgateConfig, expansion: Expansion) -> Found:
    found: Found = []
    for loc, message in cross_check(config):
        where, ref = expansion.locate(loc)
        found.append((where, message, ref))
    return found


def _located(
    found: Found, lines: Mapping[KeyPath, int], env: Mapping[KeyPath, str]
) -> list[ConfigProblem]:
    """One problem per key path and message: a mistake in a template is one problem,
    naming the machines made from it that hit it."""
    grouped: dict[tuple[KeyPath, str], list[InstanceRef]] = {}
    for loc, message, ref in found:
        refs = grouped.setdefault((loc, message), [])
        if ref is not None and ref not in refs and loc[: len(ref.path)] != ref.path:
            refs.append(ref)  # (a key of the machine itself needs no "instance ..." note)
    return [
        _problem_at(loc, message + _instances_note(refs, lines), lines, env)
        for (loc, message), refs in grouped.items()
    ]


def _instances_note(refs: list[InstanceRef], lines: Mapping[KeyPath, int]) -> str:
    def at(ref: InstanceRef) -> str:
        line = _nearest_line(ref.path, lines)
        return f"{ref.name} at line {line}" if line else ref.name

    if not refs:
        return ""
    if len(refs) == 1:
        return f" (instance {at(refs[0])}: {refs[0].detail})"
    shown = ", ".join(at(ref) for ref in refs[:3])
    more = f" and {len(refs) - 3} more" if len(refs) > 3 else ""
    return f" (instances {shown}{more})"


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


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config and the expansion of its templates (for `floorgate check-config`)."""

    config: FloorgateConfig
    expansion: Expansion


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> FloorgateConfig:
    """Read, override, expand, validate and cross-check; raise ConfigError on any problem."""
    return load_expanded(path, environ).config


def load_expanded(path: Path | str, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """load_config, also returning the expansion of the templates."""
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
        expansion = expand_templates(data)
    except TemplateError as exc:
        raise ConfigError(file, _located(exc.problems, key_lines(text), env)) from None
    try:
        config = FloorgateConfig.model_validate(expansion.data)
    except ValidationError as exc:
        found = _validation_problems(exc, expansion)
        raise ConfigError(file, _located(found, key_lines(text), env)) from None
    found = _cross_check_problems(config, expansion)
    if found:
        raise ConfigError(file, _located(found, key_lines(text), env))
    return LoadedConfig(config, expansion)


def _nearest_line(loc: KeyPath, lines: Mapping[KeyPath, int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
