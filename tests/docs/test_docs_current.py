"""The docs say what the code does: generated pages are current (`python docs/generate.py
--check`), the configuration reference has every key of every plugin and rule, the plugin
READMEs' sample configs validate, links resolve, and documented commands exist."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from agent import registry
from agent.cli.main import build_parser
from agent.config.models import FloorgateConfig
from agent.rules import RULE_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"
PLUGINS = (*registry.SOURCE_PLUGINS, *registry.DESTINATION_PLUGINS)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def test_generated_docs_are_current() -> None:
    problems = generate.check()
    assert not problems, "\n".join(problems) + "\n\nrun: python docs/generate.py"


def test_check_reports_a_page_that_drifted(monkeypatch: pytest.MonkeyPatch) -> None:
    real = generate.configuration_page
    monkeypatch.setattr(generate, "configuration_page", lambda: real() + "\nchanged\n")
    problems = generate.check()
    assert any(p.startswith("docs/configuration.md: differs") for p in problems)
    assert generate.main(["--check"]) == 1


# -- the configuration reference ---------------------------------------------------------


def _tables() -> dict[str, list[str]]:
    """Heading -> the keys in the first column of the table under it."""
    found: dict[str, list[str]] = {}
    heading = ""
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^#+ (.+)$", line):
            heading = match.group(1).strip()
            found.setdefault(heading, [])
        elif match := re.match(r"^\| `([^`]+)` \|", line):
            found[heading].append(match.group(1))
    return found


def _nested_models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for info in model.model_fields.values():
        stack: list[Any] = [info.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield annotation
            else:
                stack.extend(typing.get_args(annotation))


def _heading_of(model: type[BaseModel]) -> str:
    return generate.Reference().docs[model].heading  # type: ignore[no-any-return]


def _assert_table(tables: dict[str, list[str]], heading: str, model: type[BaseModel]) -> None:
    assert heading in tables, f"docs/configuration.md has no section {heading!r}"
    missing = [key for key in model.model_fields if key not in tables[heading]]
    assert not missing, f"{heading}: keys missing from the reference: {missing}"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_reference_has_every_field_of_every_plugin_model(plugin: str) -> None:
    tables = _tables()
    for model in registry.config_models((plugin,)):
        kind = typing.get_args(model.model_fields["type"].annotation)[0]
        _assert_table(tables, f"type: {kind}", model)
        for nested in _nested_models(model):
            if nested.__name__ != "Secret":
                _assert_table(tables, _heading_of(nested), nested)
    assert generate.Reference().secret_uses  # secrets are one table of their own
    _assert_table(tables, "secrets", generate.Secret)


def test_reference_has_every_section_and_rule() -> None:
    tables = _tables()
    _assert_table(tables, "Top level", FloorgateConfig)
    for rule_config in RULE_TYPES:
        _assert_table(tables, _heading_of(rule_config), rule_config)
    for section in ("agent", "buffer", "health"):
        model = FloorgateConfig.model_fields[section].annotation
        assert isinstance(model, type)
        _assert_table(tables, section, model)


# -- plugin READMEs ----------------------------------------------------------------------

BASE: dict[str, Any] = {
    "sources": [
        {
            "name": "base",
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "signals": [{"name": "base.state", "address": 0}],
        }
    ],
    "machines": [{"name": "press1"}, {"name": "press2"}, {"name": "packer1"}],
}


def _yaml_blocks(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_readme_sample_config_validates(plugin: str) -> None:
    readme = ROOT / plugin.replace(".", "/") / "README.md"
    samples = [
        block
        for block in _yaml_blocks(readme)
        if isinstance(block, dict) and {"sources", "destinations"} & block.keys()
    ]
    assert samples, f"{readme.relative_to(ROOT)} has no ```yaml sample with sources/destinations"
    kinds = {
        typing.get_args(m.model_fields["type"].annotation)[0]
        for m in registry.config_models((plugin,))
    }
    for sample in samples:
        config = FloorgateConfig.model_validate({**BASE, **sample})
        items: list[Any] = [*config.sources, *config.destinations]
        assert kinds & {item.type for item in items}, f"{plugin}: sample uses none of {kinds}"


# -- links and commands ------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    files += [ROOT / p.replace(".", "/") / "README.md" for p in PLUGINS]
    return [f for f in files if "templates" not in f.parts]


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {generate.github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        missing_anchor = bool(anchor) and resolved.suffix == ".md" and resolved.exists()
        if not resolved.exists() or (missing_anchor and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands_in(text: str) -> Iterator[str]:
    """Command lines: inline code and lines of fenced blocks that start with `floorgate `
    (after a `$ ` prompt or `sudo -u floorgate`)."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    lines = [
        line
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]
    for code in (*spans, *lines):
        code = re.sub(r"^\s*(\$ )?(sudo -u floorgate )?", "", code)
        if code.startswith("floorgate "):
            yield code


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_exist(path: Path) -> None:
    """Every `floorgate COMMAND [SUBCOMMAND] [--option ...]` is one `--help` shows."""
    commands = _choices(build_parser())
    unknown = []
    pattern = r"^floorgate ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?(?=\s|$)"
    for code in _commands_in(path.read_text(encoding="utf-8")):
        match = re.match(pattern, code)
        if match is None:
            continue
        command, sub = match.groups()
        if command not in commands:
            unknown.append(code)
            continue
        parser = commands[command]
        subcommands = _choices(parser)
        if subcommands and sub:
            if sub not in subcommands:
                unknown.append(code)
                continue
            parser = subcommands[sub]
        known = _options(parser)
        unknown += [f"{code}: {o}" for o in re.findall(r"--[a-z-]+", code) if o not in known]
    assert not unknown, f"{path.relative_to(ROOT)} documents unknown commands: {unknown}"


def test_readme_first_config_loads(tmp_path: Path) -> None:
    """The README's five-step config passes the whole loader, cross-checks included."""
    from agent.config.loader import load_config

    (block,) = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    path = tmp_path / "config.yaml"
    path.write_text(block, encoding="utf-8")
    config = load_config(path, environ={})
    assert [s.name for s in config.sources] == ["press_line"]


def test_performance_page_shows_the_latest_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(started: str, value: float) -> dict[str, Any]:
        row = {
            "scenario": "ingest",
            "figure": "events/s | into the buffer",
            "value": value,
            "unit": "events/s",
            "ceiling": 200000.0,
            "ceiling_label": "raw executemany",
            "ratio": value / 200000.0,
            "target": ">= 50,000/s",
            "met": True,
        }
        machine = {
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 4.0,
            "load_average": [0.1, 0.2, 0.3],
            "python": "3.11.7",
            "kernel": "6.1.0",
        }
        return {
            "machine": machine,
            "command": "bench/run.py --quick",
            "started": started,
            "quick": True,
            "scripts": [{"name": "ingest_bench.py", "seconds": 12.5, "status": "ok"}],
            "rows": [row],
        }

    (tmp_path / "latest.json").write_text(json.dumps(run("2026-12-01T10:00:00+00:00", 70000.0)))
    (tmp_path / "older.json").write_text(json.dumps(run("2026-11-01T10:00:00+00:00", 1.0)))
    (tmp_path / "notes.json").write_text("not a run")
    monkeypatch.setattr(generate, "BENCH_RESULTS", tmp_path)
    page = generate.performance_page(generate.latest_run(generate.result_files()))
    assert "`bench/results/latest.json`" in page and "2026-12-01T10:00:00+00:00" in page
    assert "| ingest | events/s \\| into the buffer | 70,000 events/s |" in page
    assert "Test CPU, 2 cores, 4.0 GiB" in page and "quick run" in page
    assert str(tmp_path) not in page and "<!-- results -->" not in page
