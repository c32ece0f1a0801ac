"""Write the generated pages of docs/ (or, with --check, say which ones are out of date).

    python docs/generate.py           write them
    python docs/generate.py --check   exit 1, with a diff summary, when one differs

What is generated, and from what:

- ``docs/configuration.md``: the configuration reference, from the pydantic schema
  (``FloorgateConfig``, every plugin's config models from ``agent.registry``, the rule
  configs, and the machine templates that are expanded before ``FloorgateConfig`` sees
  the file: ``TemplateConfig``, ``MachineInstance``): one table per model with key, type,
  default and the field's description.
  To change a description, edit the ``Field(description=...)`` in the code.
- ``docs/sources/<plugin>.md`` and ``docs/destinations/<plugin>.md``: each plugin
  folder's ``README.md``, with its relative links rewritten for the new place.
- ``docs/performance.md``: ``docs/templates/performance.md`` with the table of the
  latest run in ``bench/results/*.json`` (``make bench`` writes ``latest.json``). When
  ``bench/results/`` holds no run (a fresh clone: the directory is not committed), the
  check leaves the committed page alone.

Everything is deterministic: no timestamps, no paths of this machine, defaults that
depend on the environment printed as documented.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import importlib
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import AliasChoices, BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from agent import registry  # noqa: E402
from agent.common import units  # noqa: E402
from agent.common.model import NAME_PATTERN  # noqa: E402
from agent.common.paths import default_state_dir  # noqa: E402
from agent.common.secrets import Secret  # noqa: E402
from agent.config.models import FloorgateConfig, ShiftStart, one_shift_a_day  # noqa: E402
from agent.config.template_models import (  # noqa: E402
    RANGE_PATTERN,
    MachineInstance,
    RuleOverrides,
    TemplateConfig,
)
from bench.common import number  # noqa: E402 (after the path is set)
from drivers.opcua.config import NODE_ID_PATTERN  # noqa: E402

DOCS = ROOT / "docs"
BENCH_RESULTS = ROOT / "bench" / "results"
PERFORMANCE_TEMPLATE = DOCS / "templates" / "performance.md"
RESULTS_MARKER = "<!-- results -->"
GENERATED = "docs/generate.py"

# Defaults that depend on where the agent runs: printed as documented, never as found.
DOCUMENTED_DEFAULTS: dict[Callable[..., Any], str] = {
    default_state_dir: "`$STATE_DIRECTORY` (set by systemd), else `/var/lib/floorgate`",
    one_shift_a_day: '`["00:00"]` (one shift a day)',
}
# Patterns a plant engineer reads better as words.
PATTERN_WORDS = {
    NAME_PATTERN: "name: letters, digits, `_`, `-`",
    r"^[A-Za-z0-9_.\-]+$": "name: letters, digits, `_`, `-`, `.`",
    r"^https?://": "URL (`http://` or `https://`)",
    r"^opc\.tcp://": "URL (`opc.tcp://`)",
    NODE_ID_PATTERN: "node id: `nsu=<uri>;` or `ns=<index>;` then `i=`, `s=`, `g=` or `b=`",
    RANGE_PATTERN: "first-last, e.g. `0-499`",
}
# Types a plant engineer reads better as words (a template's overrides: loose mappings,
# checked once merged into the machine).
TYPE_WORDS: dict[Any, str] = {
    RuleOverrides: "map of name → the keys to change, or `null`",
    dict[str, Any]: "the keys to change, or `null`",
    ShiftStart: 'time of day, `"HH:MM"` in quotes',
}
SCALARS: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "`true` | `false`",
    Path: "path",
}


# -- the configuration reference ---------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def cell(text: str) -> str:
    """Text fit for one table cell: one line, pipes escaped, and a ``<`` outside code
    spans written as an entity (``<source name>`` would be taken for an HTML tag)."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(
        part if part.startswith("`") else part.replace("<", "&lt;") for part in parts
    ).replace("|", "\\|")


def strip_optional(annotation: Any) -> Any:
    """X for Optional[X] / X | None; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def unit_kind(annotation: Any, metadata: Sequence[Any]) -> str | None:
    """Whether the value is a duration or a size written with a unit (agent.common.units)."""
    found = list(metadata)
    inner = strip_optional(annotation)
    if typing.get_origin(inner) is typing.Annotated:
        found += list(getattr(inner, "__metadata__", ()))
    for meta in found:
        func = getattr(meta, "func", None)
        if func is units.parse_duration:
            return "duration"
        if func is units.parse_size:
            return "size"
    return None


def is_model(annotation: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def union_members(annotation: Any) -> list[Any]:
    """The models of a discriminated union (``Annotated[Union[...], Field(...)]``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) > 1 and all(is_model(m) for m in members):
            return members
    return []


def type_value(model: type[BaseModel]) -> str | None:
    """The `type:` value that selects a plugin's model."""
    found = model.model_fields.get("type")
    if found is None or typing.get_origin(found.annotation) is not typing.Literal:
        return None
    return str(typing.get_args(found.annotation)[0])


def literal_values(values: Sequence[Any]) -> str:
    return " | ".join(f"`{v}`" for v in values)


def yaml_scalar(value: Any) -> str:
    """A value as it would be written in the YAML."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if not text or text != text.strip() or re.search(r"[:{}\[\],#&*!|>'\"%@`]", text):
        return json.dumps(text)
    number = r"[-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?|\.inf|\.nan"
    if re.fullmatch(number + r"|true|false|null|yes|no|on|off|~", text, re.I):
        return json.dumps(text)
    return text


def yaml_flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_flow(k)}: {yaml_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_flow(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return yaml_flow(value.model_dump(mode="json", exclude_defaults=True))
    return yaml_scalar(value)


def format_bound(value: Any, kind: str | None) -> str:
    if kind == "duration":
        return units.format_duration(float(value)) if value else "0"
    if kind == "size":
        return units.format_size(int(value))
    return str(value)


def constraints(metadata: Sequence[Any], kind: str | None) -> list[str]:
    found = []
    for meta in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None and type(meta).__name__.lower() == attr:
                found.append(f"{sign} {format_bound(bound, kind)}")
        if type(meta).__name__ == "MinLen":
            found.append(f"at least {meta.min_length}")
        if type(meta).__name__ == "MaxLen":
            found.append(f"at most {meta.max_length}")
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str):
            found.append(PATTERN_WORDS.get(pattern, f"matching `{pattern}`"))
    return found


class ModelDoc:
    """One table: a model and every place it is used. Its heading names its owner (the
    plugin, or the section when several plugins share it) and its key under the owner."""

    def __init__(self, model: type[BaseModel], level: int, section: str) -> None:
        self.model = model
        self.level = level
        self.section = section
        self.plugin: str | None = None  # a plugin's top model: e.g. drivers.modbus
        self.fixed_heading: str | None = None  # a plugin type, a section
        self.used_at: list[str] = []  # key paths, e.g. sources[] (opcua).security
        self.owners: list[str] = []  # who holds it: "modbus", "machines[]", ...
        self.key = ""  # its key under the owner, e.g. signals[]

    @property
    def heading(self) -> str:
        if self.fixed_heading is not None:
            return self.fixed_heading
        owners = sorted(set(self.owners))
        owner = owners[0] if len(owners) == 1 else f"{self.section}[]"
        return f"{owner}: {self.key}"

    @property
    def anchor(self) -> str:
        return github_anchor(self.heading)


class Reference:
    """Walks the schema once, then renders it."""

    def __init__(self) -> None:
        self.docs: dict[type[BaseModel], ModelDoc] = {}
        self.order: list[ModelDoc] = []
        self.plugin_of: dict[type[BaseModel], str] = {}
        self.secret_uses: list[str] = []
        for name in (*registry.SOURCE_PLUGINS, *registry.DESTINATION_PLUGINS):
            for model in importlib.import_module(name).CONFIGS:
                self.plugin_of[model] = name
        for section, info in FloorgateConfig.model_fields.items():
            self._section(section, info.annotation)
        # Templates are expanded before FloorgateConfig validates the file, so the root
        # schema does not name them: their models are walked here, in their sections.
        instance = self._add(MachineInstance, 2, "machines", INSTANCE_HEADING, "")
        instance.fixed_heading = INSTANCE_HEADING
        template = self._add(TemplateConfig, 2, "templates", "templates.NAME", "")
        template.fixed_heading = "templates.NAME"

    # walking

    def _section(self, section: str, annotation: Any) -> None:
        inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        members = union_members(inner) if inner is not None else []
        if members:  # sources, destinations: one table per plugin type
            for model in members:
                label = type_value(model) or model.__name__
                plugin = self.plugin_of.get(model, label)
                doc = self._add(model, 3, section, f"{section}[] ({label})", plugin.split(".")[-1])
                doc.fixed_heading = f"type: {label}"
                doc.plugin = self.plugin_of.get(model)
        elif is_model(inner):
            self._add(inner, 2, section, f"{section}[]", "").fixed_heading = f"{section}[]"
        elif is_model(annotation):
            self._add(annotation, 2, section, section, "").fixed_heading = section

    def _add(
        self, model: type[BaseModel], level: int, section: str, path: str, owner: str, key: str = ""
    ) -> ModelDoc:
        if model is Secret:
            self.secret_uses.append(path)
            return ModelDoc(model, level, section)
        doc = self.docs.get(model)
        if doc is None:
            doc = self.docs[model] = ModelDoc(model, level, section)
            doc.key = key
            self.order.append(doc)
            first = True
        else:
            first = False
        doc.used_at.append(path)
        doc.owners.append(owner or path)
        if first:
            owner = owner or path  # a section: its nested models are "machines[]: ..."
            for name, info in model.model_fields.items():
                for child, suffix in self._children(info.annotation):
                    inner_key = f"{key}.{name}{suffix}" if key else f"{name}{suffix}"
                    self._add(
                        child,
                        max(level + 1, 3),
                        section,
                        f"{path}.{name}{suffix}",
                        owner,
                        inner_key,
                    )
        return doc

    def _children(self, annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
        annotation = strip_optional(annotation)
        origin = typing.get_origin(annotation)
        if is_model(annotation):
            yield annotation, ""
        elif origin is list:
            for child, suffix in self._children(typing.get_args(annotation)[0]):
                yield child, "[]" + suffix
        elif origin is dict:
            for child, suffix in self._children(typing.get_args(annotation)[1]):
                yield child, ".NAME" + suffix

    # rendering

    def link(self, model: type[BaseModel]) -> str:
        if model is Secret:
            return "[secret](#secrets)"
        doc = self.docs[model]
        return f"[{doc.heading}](#{doc.anchor})"

    def type_text(self, annotation: Any, metadata: Sequence[Any]) -> str:
        kind = unit_kind(annotation, metadata)
        base = strip_optional(annotation)
        if base in TYPE_WORDS:
            return TYPE_WORDS[base]
        if kind is not None:
            text = kind
        elif members := union_members(base):
            text = " or ".join(self.link(m) for m in members)
        elif is_model(base):
            text = self.link(base)
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            members = union_members(item)
            if members:
                text = "list of " + ", ".join(self.link(m) for m in members)
            else:
                text = "list of " + self.type_text(item, ())
        elif typing.get_origin(base) is dict:
            key, value = typing.get_args(base)
            text = f"map of {self.type_text(key, ())} → {self.type_text(value, ())}"
        elif typing.get_origin(base) is typing.Literal:
            text = literal_values(typing.get_args(base))
        elif isinstance(base, type) and issubclass(base, enum.Enum):
            text = literal_values([member.value for member in base])
        elif base in SCALARS:
            text = SCALARS[base]
        else:
            text = str(base).replace("typing.", "")
        bounds = constraints(metadata, kind)
        return ", ".join([text, *bounds])

    def default_text(self, info: Any, kind: str | None) -> str:
        factory = info.default_factory
        if factory is not None:
            if factory in DOCUMENTED_DEFAULTS:
                return DOCUMENTED_DEFAULTS[factory]
            if is_model(factory):
                return "the section's defaults"
            value = factory()
        elif info.default is PydanticUndefined:
            return "**required**"
        else:
            value = info.default
        if value is None:
            return "none"
        if kind == "duration":
            return f"`{units.format_duration(float(value))}`"
        if kind == "size":
            return f"`{units.format_size(int(value))}`"
        return f"`{yaml_flow(value)}`"

    def description(self, key: str, info: Any, model: type[BaseModel]) -> str:
        text = info.description or ""
        if not text and model is FloorgateConfig:
            text = TOP_LEVEL.get(key, "")
        base = strip_optional(info.annotation)
        if not text and key == "type" and typing.get_origin(base) is typing.Literal:
            kind = "source" if model in self._plugins(registry.SOURCE_PLUGINS) else "destination"
            text = f"Selects this kind of {kind}."
        if not text:
            item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
            if is_model(item) and item.__doc__ and item is not Secret:
                text = item.__doc__.strip().split("\n\n")[0]
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            others = [str(c) for c in alias.choices if c != key]
            if others:
                text += " Also accepted as " + ", ".join(f"`{o}`" for o in others) + "."
        return text.strip()

    def _plugins(self, names: tuple[str, ...]) -> set[type[BaseModel]]:
        return {m for m, plugin in self.plugin_of.items() if plugin in names}

    def table(self, model: type[BaseModel]) -> list[str]:
        lines = ["| key | type | default | description |", "|---|---|---|---|"]
        for key, info in model.model_fields.items():
            kind = unit_kind(info.annotation, info.metadata)
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"`{key}`",
                        cell(self.type_text(info.annotation, info.metadata)),
                        cell(self.default_text(info, kind)),
                        cell(self.description(key, info, model)),
                    ]
                )
                + " |"
            )
        return lines

    def top_level_table(self) -> list[str]:
        """The root model's keys, with templates (not a key of the root model: expanded
        before it validates) after machines."""
        lines = self.table(FloorgateConfig)
        after = next(n for n, line in enumerate(lines) if line.startswith("| `machines`"))
        lines.insert(after + 1, TEMPLATES_ROW.format(link=self.link(TemplateConfig)))
        return lines

    def model_block(self, doc: ModelDoc) -> list[str]:
        lines = [f"{'#' * doc.level} {doc.heading}", ""]
        summary = (doc.model.__doc__ or "").strip().split("\n\n")[0]
        if summary and not summary.startswith(("A plain model", "The root")):
            lines += [" ".join(summary.split()), ""]
        if doc.plugin:
            page = "sources" if doc.plugin in registry.SOURCE_PLUGINS else "destinations"
            name = doc.plugin.rsplit(".", 1)[1]
            folder = doc.plugin.replace(".", "/")
            lines += [f"Plugin `{folder}/`; manual: [{page}/{name}.md]({page}/{name}.md).", ""]
        elif len(doc.used_at) > 1:
            places = ", ".join(f"`{p}`" for p in doc.used_at)
            lines += [f"Used at {places}.", ""]
        return [*lines, *self.table(doc.model), ""]

    def render(self) -> str:
        out = [
            f"<!-- Generated by {GENERATED} from the configuration schema. Do not edit: change"
            " the Field descriptions in the code, then run `python docs/generate.py`. -->",
            "",
            *INTRO,
            "## Top level",
            "",
            *self.top_level_table(),
            "",
        ]
        for section in SECTION_ORDER:
            docs = [d for d in self.order if d.section == section]
            if not docs:
                continue
            if docs[0].level > 2:  # a list of plugin types: a heading of its own first
                out += [f"## {section}", "", SECTION_NOTES[section], ""]
            for doc in docs:
                out += self.model_block(doc)
        uses = ", ".join(f"`{p}`" for p in self.secret_uses)
        out += ["## secrets", "", *SECRETS_NOTE, "", f"Used at {uses}.", ""]
        out += [*self.table(Secret), ""]
        return "\n".join(out).rstrip() + "\n"

    def fields_without_description(self) -> list[str]:
        found = []
        for doc in [*self.order]:
            for key, info in doc.model.model_fields.items():
                if not self.description(key, info, doc.model):
                    found.append(f"{doc.model.__module__}.{doc.model.__name__}.{key}")
        return found


def _units(table: dict[str, Any]) -> str:
    return ", ".join(f"`{name}`" for name in table)


INTRO = [
    "# Configuration reference",
    "",
    "floorgate reads one YAML file, by default `/etc/floorgate/config.yaml`.",
    "[`config.example.yaml`](../config.example.yaml) is a commented example of every key;",
    "this page lists every key the schema accepts, with its type, its default and what it",
    "does. Check a file with `floorgate check-config PATH` before you restart or reload:",
    "it exits 0 when the file is valid and 78 when not, naming the file, the line, the key",
    "path and what was expected:",
    "",
    "```",
    "invalid configuration in /etc/floorgate/config.yaml:",
    "  /etc/floorgate/config.yaml:31: sources[0].signals[2].data_type: Input should be"
    " 'bool', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64'"
    " or 'string' (got 'float17')",
    "```",
    "",
    "Rules that hold for every key:",
    "",
    "- **Durations** are written with a unit: "
    + _units(units._DURATION_UNITS)
    + ' (`"500ms"`, `"10s"`, `"5m"`, `"7d"`). **Sizes** too: '
    + _units(units._SIZE_UNITS)
    + " (any case; `KiB` = 1024 bytes, `KB` = 1000). A bare number is refused.",
    "- **Secrets** (tokens, passwords, API keys) are never written in the YAML: a secret"
    " names a file or a systemd credential (see [secrets](#secrets)).",
    "- **Unknown keys are errors**, and so is a key written twice in the same mapping (the"
    " message gives both lines).",
    "- **Names** (`agent.id`, sources, machines, destinations) end up in topics, file names"
    " and Odoo external ids: letters, digits, `_` and `-`.",
    "- **Environment overrides**: `FLOORGATE__` followed by the key path, parts joined by"
    " `__` (keys match whatever their case); a list item (a source, a signal, a machine, a"
    " destination) is addressed by its `name`, never by position:"
    " `FLOORGATE__HEALTH__PORT=8411`, `FLOORGATE__SOURCES__press_line__HOST=10.0.0.7`,"
    " `FLOORGATE__DESTINATIONS__odoo__URL=https://erp.example.com`. The item is the one whose"
    " name is the same as written, else the same ignoring case, else the same with `.` and"
    " `-` written `_` (`FLOORGATE__SOURCES__PRESS_LINE_PLC__SIGNALS__PRESS1_GOOD__ADDRESS=40`"
    " finds `press-line-plc` and `press1.good`). A list whose items have no name is set"
    " whole, as YAML: `FLOORGATE__DESTINATIONS__middleware__EVENT_TYPES='[alarm,"
    " machine.state]'`. Values are read as YAML (`8411` is a number, an empty value an"
    " empty string). A number in place of a name (`FLOORGATE__SOURCES__0__HOST`), a name"
    " that matches no item or several, and two variables for the same value are refused;"
    " every error caused by an override names the variable instead of a line.",
    "- **Templates**: a machine type written once under `templates:` is made into machines"
    " by `machines:` items with `template:` ([templates.md](templates.md)); the file is"
    " expanded when read, so everything else sees plain signals and machines (`floorgate"
    " check-config --expanded` prints them). A mistake in a template is reported at its line,"
    " naming the machines made from it. Environment overrides apply before the expansion:"
    " `FLOORGATE__MACHINES__press07__BASE_ADDRESS=700`,"
    " `FLOORGATE__MACHINES__press07__OVERRIDES__SIGNALS__good__ADDRESS=40`.",
    "- **Reload**: `systemctl reload floorgate` applies a valid file by restarting only what"
    " changed; a change to `agent` or `buffer` needs a restart (see"
    " [install.md](install.md#reload-and-restart)).",
    "",
    "Types: *duration* and *size* as above; *secret* see [secrets](#secrets); `a` | `b`: one"
    " of these values; *map of K → V*: a YAML mapping.",
    "",
]

INSTANCE_HEADING = "machines[] (from a template)"
# The sections in the order of the page: the root model's, with templates after machines.
SECTION_ORDER = [*FloorgateConfig.model_fields]
SECTION_ORDER.insert(SECTION_ORDER.index("machines") + 1, "templates")
TEMPLATES_ROW = (
    "| `templates` | map of name → {link} | `{{}}` | Machine types written once: their signals "
    "and rules, made into machines by `machines:` items with `template:` (see "
    "[templates.md](templates.md)). Expanded when the file is read. |"
)

# The root model's sections carry no Field description: what each one is, in short.
TOP_LEVEL = {
    "agent": "This gateway: its id, ISA-95 site, state directory, log level.",
    "sources": "The connections read (PLCs, OPC UA servers); at least one.",
    "machines": "Each machine's ISA-95 place and the rules that make events of its signals;"
    " written out, or [made from a template](#machines-from-a-template).",
    "destinations": "Where events are forwarded. None: events are only buffered.",
    "buffer": "The SQLite store-and-forward buffer (see [buffer.md](buffer.md)).",
    "health": "The health server: /healthz, /readyz, /metrics (see"
    " [monitoring.md](monitoring.md)).",
}

SECTION_NOTES = {
    "sources": "A list of connections to read; each item's `type` picks its table below."
    " Signal names are unique across all sources: the machines' rules refer to them.",
    "destinations": "A list of places events go; each item's `type` picks its table below."
    " Every destination has its own queue in the buffer.",
}

SECRETS_NOTE = [
    "A secret is written `{file: /etc/floorgate/odoo.key}` (a file readable by the service)"
    " or `{credential: odoo-api-key}` (a systemd credential: `LoadCredential=` in the unit,"
    " read from `$CREDENTIALS_DIRECTORY`; see [install.md](install.md#secrets)). A string in"
    " its place is refused. The text is read without its trailing newline; every value read"
    " is masked as `***` in the logs.",
]


def configuration_page() -> str:
    return Reference().render()


# -- plugin pages ------------------------------------------------------------------------

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def rewrite_links(text: str, source_dir: Path, target_dir: Path) -> str:
    """Relative Markdown links of a file in source_dir, made right for one in target_dir."""

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            return match.group(0)
        path, sep, anchor = target.partition("#")
        resolved = (source_dir / path).resolve()
        relative = _relative(resolved, target_dir)
        return f"{match.group(1)}{relative}{sep}{anchor}{match.group(3)}"

    return _LINK.sub(fix, text)


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path, start)).as_posix()


def plugin_pages() -> dict[Path, str]:
    pages: dict[Path, str] = {}
    for folder, names in (
        ("sources", registry.SOURCE_PLUGINS),
        ("destinations", registry.DESTINATION_PLUGINS),
    ):
        for name in names:
            readme = ROOT / name.replace(".", "/") / "README.md"
            relative = readme.relative_to(ROOT).as_posix()
            target = DOCS / folder / f"{name.rsplit('.', 1)[1]}.md"
            if not readme.is_file():
                raise SystemExit(f"{relative} is missing: every plugin folder has a README.md")
            body = rewrite_links(readme.read_text(encoding="utf-8"), readme.parent, target.parent)
            head = (
                f"<!-- Generated by {GENERATED} from {relative}: edit that file, then run"
                " `python docs/generate.py`. -->\n"
                f"> Generated from [{relative}]({_relative(readme, target.parent)}): edit that"
                " file.\n\n"
            )
            pages[target] = head + body
    return pages


# -- performance -------------------------------------------------------------------------


def result_files() -> list[Path]:
    return sorted(BENCH_RESULTS.glob("*.json")) if BENCH_RESULTS.is_dir() else []


def latest_run(files: Sequence[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The run that started last (file name breaks ties); files that are not a run are
    skipped."""
    runs = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            runs.append((str(data.get("started", "")), path.name, path, data))
    if not runs:
        return None
    _, _, path, data = max(runs, key=lambda run: (run[0], run[1]))
    return path, data


def results_block(found: tuple[Path, dict[str, Any]] | None) -> str:
    if found is None:
        return "\n".join(
            [
                "No benchmark run is recorded in `bench/results/` in this tree. Run `make bench`",
                "(it writes `bench/results/latest.json`), then `python docs/generate.py` to put",
                "its table here.",
            ]
        )
    path, data = found
    info = data.get("machine") or {}
    load = info.get("load_average") or []
    cores = info.get("cores") or 1
    lines = [
        f"From `bench/results/{path.name}`: `{data.get('command', 'bench/run.py')}`, started"
        f" {data.get('started', '?')}"
        + (" (quick run: figures less stable)." if data.get("quick") else "."),
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores,"
        f" {info.get('memory_gib', '?')} GiB, Linux {info.get('kernel', '?')},"
        f" Python {info.get('python', '?')}; load average at the start"
        f" {', '.join(str(x) for x in load) or '?'}.",
    ]
    if load and load[0] > 0.5 * cores:
        lines += [
            "",
            "The machine was busy with other work when the run started: read the ratios"
            " rather than the absolute figures.",
        ]
    lines += [
        "",
        "| scenario | figure | value | ceiling (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data.get("rows", []):
        ceiling = number(row.get("ceiling"))
        if row.get("ceiling_label") and row.get("ceiling") is not None:
            ceiling = f"{ceiling} ({row['ceiling_label']})"
        ratio = row.get("ratio")
        met = row.get("met")
        cells = [
            str(row.get("scenario", "?")),
            str(row.get("figure", "?")),
            number(row.get("value"), str(row.get("unit") or "")),
            ceiling,
            "-" if ratio is None else f"{ratio:.2f}",
            str(row.get("target") or "-"),
            "-" if met is None else ("yes" if met else "**NO**"),
        ]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    scripts = data.get("scripts") or []
    if scripts:
        lines += [
            "",
            "Scripts: "
            + ", ".join(
                f"`{s.get('name')}` {s.get('status')} in {s.get('seconds')} s" for s in scripts
            )
            + ".",
        ]
    return "\n".join(lines)


def performance_page(found: tuple[Path, dict[str, Any]] | None) -> str:
    template = PERFORMANCE_TEMPLATE.read_text(encoding="utf-8")
    if RESULTS_MARKER not in template:
        raise SystemExit(f"{PERFORMANCE_TEMPLATE.relative_to(ROOT)} lacks {RESULTS_MARKER}")
    head = (
        f"<!-- Generated by {GENERATED} from docs/templates/performance.md and"
        " bench/results/*.json: edit the template, then run `python docs/generate.py`. -->\n"
    )
    return head + template.replace(RESULTS_MARKER, results_block(found))


# -- writing and checking ----------------------------------------------------------------


def outputs() -> tuple[dict[Path, str], list[str]]:
    """Every generated page and its text; and notes on pages left alone."""
    pages = {DOCS / "configuration.md": configuration_page(), **plugin_pages()}
    notes = []
    found = latest_run(result_files())
    if found is None and (DOCS / "performance.md").is_file():
        notes.append(
            "docs/performance.md: left as it is, bench/results/ holds no run"
            " (`make bench` measures one)"
        )
    else:
        pages[DOCS / "performance.md"] = performance_page(found)
    return pages, notes


def stale_pages(pages: dict[Path, str]) -> list[Path]:
    """Generated plugin pages whose plugin is gone."""
    found = []
    for folder in ("sources", "destinations"):
        for path in sorted((DOCS / folder).glob("*.md")):
            if path not in pages and GENERATED in path.read_text(encoding="utf-8")[:300]:
                found.append(path)
    return found


def check() -> list[str]:
    """One line (and a short diff) per generated page that is missing or differs."""
    pages, _ = outputs()
    problems = []
    for path, text in pages.items():
        name = path.relative_to(ROOT).as_posix()
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current is None:
            problems.append(f"{name}: missing")
        elif current != text:
            diff = list(
                difflib.unified_diff(
                    current.splitlines(),
                    text.splitlines(),
                    f"{name} (committed)",
                    f"{name} (generated)",
                    lineterm="",
                    n=1,
                )
            )
            changed = sum(1 for line in diff[2:] if line[:1] in "+-")
            shown = "\n".join("    " + line for line in diff[:40])
            more = "\n    ..." if len(diff) > 40 else ""
            problems.append(f"{name}: differs ({changed} lines)\n{shown}{more}")
    for path in stale_pages(pages):
        problems.append(f"{path.relative_to(ROOT).as_posix()}: its plugin is gone")
    return problems


def write() -> list[str]:
    pages, notes = outputs()
    written = []
    for path, text in pages.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(f"wrote {path.relative_to(ROOT).as_posix()}")
    for path in stale_pages(pages):
        path.unlink()
        written.append(f"removed {path.relative_to(ROOT).as_posix()}")
    return written + notes


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    cli.add_argument("--check", action="store_true", help="exit 1 when a page is out of date")
    args = cli.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem)
        if problems:
            print(f"\n{len(problems)} generated page(s) out of date: run python docs/generate.py")
            return 1
        print("generated docs are up to date")
        return 0
    for line in write() or ["generated docs were already up to date"]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
