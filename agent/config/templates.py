"""Machine templates: a machine type written once, made into many machines at load time.

``expand_templates`` takes the parsed file (environment overrides applied) and turns the
``templates:`` section and every ``machines:`` item with ``template:`` into what the file
would hold without them: each machine's signals appended to the ``signals:`` of the source
it names (named ``<machine>.<signal>``, placed by the source type's
``place_template_signal``), and a plain machine with the template's rules reading them.
The root schema, the cross-checks, the engine, the drivers and the reload diff see only
that plain config, so none of them knows templates exist.

Every expanded signal and rule remembers where it was written (the template, or the
machine's override) and which machine made it (``Expansion.locate``): an error in it is
reported at the template's line, naming the machine.

The parts, in the order they run:

- agent.config.template_models: the schema of templates and of the machines made from them;
- agent.config.template_reading: the ``templates:`` section read and checked once;
- agent.config.template_overrides: what a machine's ``overrides:`` change;
- agent.config.template_expander: each machine's signals placed on its source, its rules
  pointed at them;
- agent.config.template_origins: where each made item was written, the problems found.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from agent.config.models import FloorgateConfig
from agent.config.template_expander import Expander
from agent.config.template_models import MachineInstance
from agent.config.template_origins import Expansion as Expansion
from agent.config.template_origins import InstanceRef as InstanceRef
from agent.config.template_origins import Origin as Origin
from agent.config.template_origins import Problem, names_text, validation_problems
from agent.config.template_origins import TemplateError as TemplateError
from agent.config.template_origins import TemplateUse as TemplateUse
from agent.config.template_reading import TEMPLATES, MachineType, read_templates

# Keys only a machine made from a template has: on a plain machine they are a mistake
# whose likely cause (a forgotten template:) deserves its own message.
INSTANCE_ONLY_KEYS = (
    "source",
    "base_address",
    "device_address",
    "slave",
    "unit",
    "node",
    "overrides",
)
# Keys of a plain machine that a machine made from a template gets from its template: on
# such a machine they are changed under overrides:, here an example of each, and how an
# item is named there.
FROM_THE_TEMPLATE = {
    "signals": ("{temperature: {scale: 0.1}}", " (by the signal's name in the template)"),
    "state": ("{min_duration: 5s}", ""),
    "counters": ("{good: {report_every: 30s}}", " (by the signal the counter reads)"),
    "alarms": ("{overtemperature: {high: 90}}", " (by the alarm's name)"),
    "samples": ("{temperature: {deadband: 1.0}}", " (by the signal the sample reads)"),
}


def _instances(machines: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for m, item in enumerate(machines if isinstance(machines, list) else []):
        if isinstance(item, dict) and "template" in item:
            yield m, item


def _plain_machine_problems(machines: Any) -> list[Problem]:
    problems: list[Problem] = []
    for m, item in enumerate(machines if isinstance(machines, list) else []):
        if not isinstance(item, dict) or "template" in item:
            continue
        for key in INSTANCE_ONLY_KEYS:
            if key in item:
                problems.append(
                    (
                        ("machines", m, key),
                        f"{key} is a key of a machine made from a template, and this machine "
                        "names none: add template: <name>, or remove it",
                        None,
                    )
                )
    return problems


def _from_the_template_problems(m: int, item: dict[str, Any]) -> list[Problem]:
    """Signals or rules written on a machine made from a template (which gets them from
    the template): said with how to change them, not as an unknown key."""
    return [
        (
            ("machines", m, key),
            f"a machine made from a template gets its {key} from the template; to change "
            f"{'it' if key == 'state' else 'them'} on this machine, write overrides: "
            f"{{{key}: {example}}}{how}",
            None,
        )
        for key, (example, how) in FROM_THE_TEMPLATE.items()
        if key in item
    ]


def _reused_names(machines: Any, instances: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    """A machine made from a template named like a machine above it: said once, rather
    than once for every signal the two would both make."""
    first: dict[str, int] = {}
    for m, item in enumerate(machines if isinstance(machines, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            first.setdefault(name, m)
    problems: list[Problem] = []
    for m, item in instances:
        name = item.get("name")
        if isinstance(name, str) and first[name] < m:
            message = f"{name!r} is already used by machines[{first[name]}]"
            problems.append((("machines", m, "name"), message, None))
    return problems


def _misspelled_section(
    data: dict[str, Any], instances: list[tuple[int, dict[str, Any]]]
) -> list[Problem]:
    """With no ``templates:`` section, a key of the file that is no section and reads
    like it (``template:``, ``Templates:``, ``templtes:``)."""
    if TEMPLATES in data:
        return []
    unknown = {str(key).lower(): key for key in data if key not in FloorgateConfig.model_fields}
    close = difflib.get_close_matches(TEMPLATES, list(unknown), n=1, cutoff=0.75)
    if not close:
        return []
    m, item = instances[0]
    message = (
        f"unknown key: is templates: meant? machines[{m}] is made from template "
        f"{item['template']!r}, and the file has no templates: section"
    )
    return [((unknown[close[0]],), message, None)]


def _instance(
    m: int,
    item: dict[str, Any],
    data: dict[str, Any],
    templates: dict[str, MachineType],
    problems: list[Problem],
) -> MachineInstance | None:
    """machines[m] validated, if its template can make it; else None, with what is wrong
    added to ``problems`` (unless it is said already: a wrong template or section)."""
    misplaced = _from_the_template_problems(m, item)
    if misplaced:
        problems += misplaced
        item = {key: value for key, value in item.items() if key not in FROM_THE_TEMPLATE}
    try:
        instance = MachineInstance.model_validate(item)
    except ValidationError as exc:
        problems += validation_problems(exc, ("machines", m))
        return None
    if instance.template in templates:
        return None if misplaced else instance
    written = data.get(TEMPLATES)
    if written is not None and not isinstance(written, dict):
        return None  # the section itself is wrong: said
    if isinstance(written, dict) and instance.template in written:
        return None  # the template itself is wrong: said
    if written is None and _misspelled_section(data, [(m, item)]):
        return None  # the section's key is misspelled: said
    known = names_text(list(templates)) if templates else "(there is no templates:)"
    problems.append(
        (
            ("machines", m, "template"),
            f"unknown template {instance.template!r}; templates: {known}",
            None,
        )
    )
    return None


def expand_templates(data: dict[str, Any]) -> Expansion:
    """The data with every template expanded (see the module docstring); raises
    TemplateError naming each template or machine that cannot be expanded."""
    machines = data.get("machines")
    instances = list(_instances(machines))
    problems = _plain_machine_problems(machines)
    if TEMPLATES not in data and not instances:
        if problems:
            raise TemplateError(problems)
        return Expansion(data)
    templates = read_templates(data.get(TEMPLATES), problems)
    problems += _misspelled_section(data, instances)
    problems += _reused_names(machines, instances)
    shells: list[tuple[int, dict[str, Any], MachineInstance]] = []
    for m, item in instances:
        instance = _instance(m, item, data, templates, problems)
        if instance is not None:
            shells.append((m, item, instance))
    if problems:
        raise TemplateError(problems)
    expander = Expander(data, templates)
    expanded = list(machines) if isinstance(machines, list) else []
    for m, item, instance in shells:
        expanded[m] = expander.expand(m, item, instance)
    if expander.problems:
        raise TemplateError(expander.problems)
    return expander.result(expanded)
