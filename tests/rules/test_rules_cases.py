"""Data-driven rule cases (Telegraf style): one folder per case under ``cases/``.

Each folder holds:

- ``config.yaml``: a MachineConfig, plus optional ``signal_types`` and ``signal_units``
  (signal -> data type / unit), as the engine would pass them to ``build_rules``.
- ``input.yaml``: a list of steps, ``t`` in seconds after a fixed epoch:
  ``{t, samples: {signal: value | {value, quality, error}}}`` (source_time = now = t),
  ``{t, tick: true}``, ``{t, flush: true}``, or ``{restart: true}``.
- ``expected.yaml``: every draft emitted, in order: ``{type, t, data}``, where ``data``
  holds the fields that differ from their defaults (``machine`` left out) and
  timestamps are written as seconds after the epoch.

A restart models a crash honestly: the harness keeps, per rule, the snapshot taken at
the end of the last step in which the rule was dirty (as the engine commits it with that
step's events) and builds fresh rules restored from those snapshots. Everything else
the old rules held is lost.

A regression test is a new folder.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.models import MachineConfig
from agent.rules import Draft, Rule, build_rules
from drivers.base import Quality, Sample
from drivers.codecs import DataType

CASES = Path(__file__).parent / "cases"
EPOCH = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def at(t: float) -> datetime:
    return EPOCH + timedelta(seconds=t)


def plain(value: Any) -> Any:
    """A draft's data as YAML-comparable values: offsets for times, strings for enums."""
    if isinstance(value, datetime):
        return (value - EPOCH).total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def as_dict(draft: Draft) -> dict[str, Any]:
    data = draft.data.model_dump(exclude_defaults=True, exclude={"machine"})
    return {
        "type": draft.type.value,
        "t": plain(draft.time),
        "data": {name: plain(value) for name, value in data.items()},
    }


def parse_sample(signal: str, raw: Any, time: datetime) -> Sample:
    if isinstance(raw, dict):
        quality = Quality(raw.get("quality", "good"))
        value = None if quality is Quality.BAD else raw.get("value")
        error = raw.get("error", "read failed" if quality is Quality.BAD else None)
        return Sample(signal, value, quality, time, error)
    return Sample(signal, raw, Quality.GOOD, time)


@dataclass
class Harness:
    """Drives a machine's rules the way the engine does, with crash-honest persistence."""

    machine: MachineConfig
    signal_types: Mapping[str, DataType | None]
    signal_units: Mapping[str, str | None]
    persisted: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)

    def start(self) -> None:
        self.rules = build_rules(self.machine, self.signal_types, self.signal_units)
        for rule in self.rules:
            if rule.key in self.persisted:
                rule.restore(self.persisted[rule.key])

    def step(self, step: Mapping[str, Any]) -> list[Draft]:
        if step.get("restart"):
            self.start()
            return []
        now = at(step["t"])
        drafts: list[Draft] = []
        for rule in self.rules:
            if "samples" in step:
                batch = {
                    name: parse_sample(name, raw, now)
                    for name, raw in step["samples"].items()
                    if name in rule.signals
                }
                if batch:  # the engine calls a rule only for its own signals
                    drafts += rule.on_samples(batch, now)
            if step.get("tick"):
                ticked = rule.on_tick(now)
                # The engine leaves a rule that says it never ticks out of its ticks:
                # hold it to that on every case.
                assert rule.ticks or not ticked, f"{rule.key} made events on a tick"
                drafts += ticked
            if step.get("flush"):
                drafts += rule.flush(now)
            if rule.dirty:  # committed together with this step's drafts
                self.persisted[rule.key] = rule.snapshot()
        return drafts


def load(path: Path) -> Any:
    with path.open() as stream:
        return yaml.safe_load(stream)


def run_case(folder: Path) -> tuple[list[dict[str, Any]], MachineConfig]:
    raw = load(folder / "config.yaml")
    signal_types = {k: DataType(v) for k, v in (raw.pop("signal_types", None) or {}).items()}
    signal_units = raw.pop("signal_units", None) or {}
    machine = MachineConfig.model_validate(raw)
    harness = Harness(machine, signal_types, signal_units)
    harness.start()
    emitted: list[Draft] = []
    for step in load(folder / "input.yaml"):
        emitted += harness.step(step)
    assert all(draft.data.machine == machine.name for draft in emitted)
    return [as_dict(draft) for draft in emitted], machine


@pytest.mark.parametrize(
    "folder", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda path: path.name
)
def test_rule_case_emits_expected_drafts(folder: Path) -> None:
    emitted, _ = run_case(folder)
    expected = load(folder / "expected.yaml") or []
    assert emitted == expected
