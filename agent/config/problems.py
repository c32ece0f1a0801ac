"""What a config check reports: a problem at a key path (with its line, or the environment
variable that set it) and the error the CLI prints before exiting 78."""

from __future__ import annotations

from dataclasses import dataclass

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
