"""What a config check reports: a problem at a key path (with its line, or the environment
variable that set it) and the error the CLI prints before exiting 78."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


def describe_error(error: Mapping[str, Any]) -> str:
    """A pydantic error in the words of the YAML file: the key and what was expected."""
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
    if error["type"] == "model_type":  # pydantic names the model class: say what is meant
        got = type(error.get("input")).__name__
        kind = {"list": "a list", "str": "a text", "int": "a number", "NoneType": "empty"}
        return f"should be a mapping of keys (key: value), not {kind.get(got, got)}"
    if error["type"] == "union_tag_not_found":
        return "required key is missing (it says which kind of source or destination this is)"
    if (
        "input" in error
        and error["type"] not in ("model_type", "dict_type")
        and not isinstance(error["input"], dict | list)
    ):
        message += f" (got {error['input']!r})"
    return message
