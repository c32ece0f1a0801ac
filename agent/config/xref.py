"""Checks that span sections: names unique, every signal a rule reads exists and fits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from agent.config.common import SignalSpec
from agent.config.models import FloorgateConfig, SourceConfig
from drivers.codecs import INTEGER_TYPES, DataType

Location = tuple[int | str, ...]


def signals_of(source: SourceConfig) -> Sequence[SignalSpec]:
    return source.signals


@dataclass(frozen=True)
class SignalInfo:
    source: str
    data_type: DataType | None  # None when the source only knows it at run time (OPC UA)
    unit: str | None


def signal_catalog(config: FloorgateConfig) -> dict[str, SignalInfo]:
    catalog: dict[str, SignalInfo] = {}
    for source in config.sources:
        for signal in signals_of(source):
            catalog.setdefault(
                signal.name, SignalInfo(source.name, signal.data_type, signal.unit_of_measurement)
            )
    return catalog


def _duplicates(names: list[str], where: str) -> Iterator[tuple[Location, str]]:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            yield (where, index, "name"), f"{name!r} is already used by {where}[{seen[name]}]"
        else:
            seen[name] = index


def _signal_refs(config: FloorgateConfig) -> Iterator[tuple[Location, str, str]]:
    """(location of the reference, signal name, what reads it)."""
    for m, machine in enumerate(config.machines):
        if machine.state:
            yield ("machines", m, "state", "signal"), machine.state.signal, "state"
            if machine.state.reason_signal:
                yield (
                    ("machines", m, "state", "reason_signal"),
                    machine.state.reason_signal,
                    "reason",
                )
        for c, counter in enumerate(machine.counters):
            yield (
                ("machines", m, "counters", c, "signal"),
                counter.signal,
                f"counter:{counter.mode.value}",
            )
        for a, alarm in enumerate(machine.alarms):
            yield ("machines", m, "alarms", a, "signal"), alarm.signal, "alarm"
        for s, sample in enumerate(machine.samples):
            yield ("machines", m, "samples", s, "signal"), sample.signal, "sample"


def _check_signal_fits(kind: str, info: SignalInfo) -> str | None:
    if info.data_type is None:
        return None
    if kind == "counter:counter" and info.data_type not in INTEGER_TYPES:
        return f"a counter needs an integer signal, but it is {info.data_type.value}"
    if kind == "counter:edge" and info.data_type is not DataType.BOOL:
        return f"mode edge counts rising edges of a bool signal, but it is {info.data_type.value}"
    if kind in ("state", "reason") and info.data_type not in INTEGER_TYPES:
        return f"a {kind} code must be an integer signal, but it is {info.data_type.value}"
    return None


def cross_check(config: FloorgateConfig) -> list[tuple[Location, str]]:
    problems: list[tuple[Location, str]] = []
    problems += _duplicates([s.name for s in config.sources], "sources")
    problems += _duplicates([m.name for m in config.machines], "machines")
    problems += _duplicates([d.name for d in config.destinations], "destinations")
    seen_signals: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        for j, signal in enumerate(signals_of(source)):
            if signal.name in seen_signals and seen_signals[signal.name] != source.name:
                problems.append(
                    (
                        ("sources", i, "signals", j, "name"),
                        f"signal {signal.name!r} is already defined in source"
                        f" {seen_signals[signal.name]!r}",
                    )
                )
            seen_signals.setdefault(signal.name, source.name)
    catalog = signal_catalog(config)
    for location, name, kind in _signal_refs(config):
        if name not in catalog:
            known = ", ".join(sorted(catalog)[:8]) + (", ..." if len(catalog) > 8 else "")
            problems.append(
                (location, f"unknown signal {name!r}; signals defined in sources: {known}")
            )
        elif (why := _check_signal_fits(kind, catalog[name])) is not None:
            problems.append((location, why))
    for m, machine in enumerate(config.machines):
        problems += _duplicates([a.name for a in machine.alarms], f"machines[{m}].alarms")
    machine_names = {m.name for m in config.machines}
    for d, destination in enumerate(config.destinations):
        for k, name in enumerate(destination.machines or []):
            if name not in machine_names:
                problems.append((("destinations", d, "machines", k), f"unknown machine {name!r}"))
    return problems
