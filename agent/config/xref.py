"""Checks that span sections: names unique, every signal a rule reads exists and fits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from agent.config.common import SignalSpec
from agent.config.models import FloorgateConfig, SourceConfig
from agent.config.rules import SignalRef
from drivers.codecs import DataType

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


def _duplicates(names: list[str], where: Location) -> Iterator[tuple[Location, str]]:
    """Names used twice in the list at ``where`` (a location, so the line is found)."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            first = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
            yield (
                (*where, index, "name"),
                f"{name!r} is already used by {first.lstrip('.')}[{seen[name]}]",
            )
        else:
            seen[name] = index


def _signal_refs(config: FloorgateConfig) -> Iterator[tuple[Location, SignalRef]]:
    """Every signal a rule reads, with the location of the key naming it."""
    for m, machine in enumerate(config.machines):
        for place, rule in machine.rule_entries():
            for ref in rule.signal_refs():
                yield ("machines", m, *place, ref.key), ref


def _check_signal_fits(ref: SignalRef, info: SignalInfo) -> str | None:
    if info.data_type is None or ref.accepts is None or info.data_type in ref.accepts:
        return None  # None: the source knows the type only at run time (OPC UA)
    return f"{ref.needs}, but it is {info.data_type.value}"


def cross_check(config: FloorgateConfig) -> list[tuple[Location, str]]:
    problems: list[tuple[Location, str]] = []
    problems += _duplicates([s.name for s in config.sources], ("sources",))
    problems += _duplicates([m.name for m in config.machines], ("machines",))
    problems += _duplicates([d.name for d in config.destinations], ("destinations",))
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
    for location, ref in _signal_refs(config):
        name = ref.name
        if name not in catalog:
            known = ", ".join(sorted(catalog)[:8]) + (", ..." if len(catalog) > 8 else "")
            problems.append(
                (location, f"unknown signal {name!r}; signals defined in sources: {known}")
            )
        elif (why := _check_signal_fits(ref, catalog[name])) is not None:
            problems.append((location, why))
    for m, machine in enumerate(config.machines):
        problems += _duplicates([a.name for a in machine.alarms], ("machines", m, "alarms"))
    machine_names = {m.name for m in config.machines}
    for d, destination in enumerate(config.destinations):
        for k, name in enumerate(destination.machines or []):
            if name not in machine_names:
                problems.append((("destinations", d, "machines", k), f"unknown machine {name!r}"))
    return problems
