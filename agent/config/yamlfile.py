"""config.yaml as text: parsed with libyaml, keys written twice refused with both lines,
and the line of every key path found again when an error needs it.

PyYAML is imported where a file is parsed: modules that only need the error types do not
pay for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml

from agent.config.problems import ConfigError, ConfigProblem, KeyPath, format_path


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


def load_yaml(text: str) -> tuple[Any, list[_Duplicate]]:
    """The data of a YAML text and the keys written twice in it."""
    loader = _loader()(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str) -> Any:
    """The data of the file. Line numbers are not kept: they are needed only for an
    error, and ``key_lines`` finds them by parsing again then. (Keeping a line for every
    key of a 5,000-tag file cost 5 MiB and 0.15 s at every start.)"""
    import yaml

    try:
        data, duplicates = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise ConfigError(file, [ConfigProblem("", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [ConfigProblem("", f"YAML error: {exc}")]) from None
    if duplicates:
        raise ConfigError(file, duplicate_problems(text, duplicates))
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


def duplicate_problems(text: str, duplicates: list[_Duplicate]) -> list[ConfigProblem]:
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


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key path of a file that parsed before."""
    import yaml

    node = yaml.compose(text, Loader=_loader())
    return dict(_line_map(node)) if node is not None else {}
