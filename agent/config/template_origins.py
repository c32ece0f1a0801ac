"""Where each item made from a template was written, and the problems found expanding.

An expanded signal or rule is not in the file as such: ``Expansion.locate`` maps its key
path in the expanded data back to the place it was written (the template, or the
machine's override or placement key) and names the machine that made it, so that the
loader reports an error at the template's line, naming the machines that hit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent.config.problems import KeyPath, describe_error, format_path


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


# A problem at a key path in the file, with the machine whose expansion hit it (None for a
# mistake in what was written, e.g. a template's own key).
Problem = tuple[KeyPath, str, InstanceRef | None]


class TemplateError(Exception):
    """Templates or machines made from them that cannot be expanded."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{format_path(p[0])}: {p[1]}" for p in problems))
        self.problems = problems


def names_text(names: list[str], most: int = 12) -> str:
    """Names for a message: the first ``most``, and how many in all."""
    text = ", ".join(names[:most])
    return text + (f", ... ({len(names)} in all)" if len(names) > most else "") or "(none)"


def validation_problems(exc: ValidationError, prefix: KeyPath) -> list[Problem]:
    """A pydantic error of a template or machine, in the words of the YAML file."""
    return [(prefix + tuple(e["loc"]), describe_error(e), None) for e in exc.errors()]
