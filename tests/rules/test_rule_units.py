"""Rule behaviour not easily written as a case folder: properties, registry, snapshots."""

from __future__ import annotations

import itertools
import json
import random
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.config.models import MachineConfig
from agent.config.rules import (
    AlarmRuleConfig,
    CounterMode,
    CounterRuleConfig,
    RuleConfig,
    SampleRuleConfig,
    StateRuleConfig,
)
from agent.pipeline.events import ProductionCountData
from agent.rules import (
    RULE_TYPES,
    AlarmRule,
    CounterRule,
    Draft,
    SampleRule,
    StateRule,
    build_rules,
)
from drivers.base import Quality, Sample, Value
from drivers.codecs import DataType

EPOCH = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def at(t: float) -> datetime:
    return EPOCH + timedelta(seconds=t)


def reading(
    signal: str, value: Value, t: float, quality: Quality = Quality.GOOD
) -> dict[str, Sample]:
    if quality is Quality.BAD:
        value = None
    return {signal: Sample(signal, value, quality, at(t))}


def counter_config(**fields: Any) -> CounterRuleConfig:
    return CounterRuleConfig.model_validate({"signal": "parts", **fields})


def quantities(drafts: list[Draft]) -> int:
    total = 0
    for draft in drafts:
        assert isinstance(draft.data, ProductionCountData)
        total += draft.data.quantity
    return total


# -- counter: the property that matters ------------------------------------------------


def run_counter_with_crashes(seed: int) -> tuple[int, int, list[Draft]]:
    """A uint16 counter through many wraps, with crashes at random points.

    A crash happens either between steps or in the middle of one: the step's drafts
    and snapshot were not committed yet, so both are lost (the engine commits them in
    one transaction). Not before the baseline is first committed: parts made before the
    rule ever stored a counter value are unknowable. Returns (true parts, reported
    parts, committed drafts).
    """
    rng = random.Random(seed)
    config = counter_config(
        report_every=f"{rng.randint(1, 30)}s",
        report_parts=rng.choice([None, rng.randint(1, 5000)]),
    )

    def fresh(persisted: dict[str, Any] | None) -> CounterRule:
        rule = CounterRule("press1", config, default_rollover=2**16)
        if persisted is not None:
            rule.restore(json.loads(json.dumps(persisted)))  # as stored in SQLite
        return rule

    raw = rng.randrange(2**16)
    persisted: dict[str, Any] | None = None
    rule = fresh(persisted)
    committed: list[Draft] = []
    true_parts = 0
    steps = rng.randint(50, 400)
    for step in range(steps + 1):
        if step > 0:
            made = rng.choice([0, 0, 1, 5, rng.randint(0, 2000)])
            raw = (raw + made) % 2**16
            true_parts += made
        last = step == steps
        bad = step > 0 and not last and rng.random() < 0.1
        drafts = rule.on_samples(
            reading("parts", raw, step, Quality.BAD if bad else Quality.GOOD), at(step)
        )
        if rng.random() < 0.3:
            drafts += rule.on_tick(at(step + 0.5))
        if step > 0 and not last and rng.random() < 0.05:  # crash before this step's commit
            rule = fresh(persisted)
            continue
        committed += drafts
        if rule.dirty:
            persisted = rule.snapshot()
        if not last and rng.random() < 0.05:  # crash after the commit
            rule = fresh(persisted)
    committed += rule.flush(at(steps + 1))
    return true_parts, quantities(committed), committed


@pytest.mark.parametrize("seed", range(200))
def test_counter_reports_every_part_once_through_wraps_and_crashes(seed: int) -> None:
    true_parts, reported, drafts = run_counter_with_crashes(seed)
    assert reported == true_parts
    for draft in drafts:
        assert isinstance(draft.data, ProductionCountData)
        assert not draft.data.reset_detected
    windows = [d.data for d in drafts if isinstance(d.data, ProductionCountData)]
    for before, after in itertools.pairwise(windows):
        assert before.window_end == after.window_start  # contiguous: sums are meaningful


def test_counter_reports_early_when_pending_parts_approach_the_ambiguous_span() -> None:
    rule = CounterRule("press1", counter_config(report_every="1h"), default_rollover=2**16)
    rule.on_samples(reading("parts", 0, 0), at(0))
    assert rule.on_samples(reading("parts", 16000, 1), at(1)) == []
    drafts = rule.on_samples(reading("parts", 16384, 2), at(2))
    assert quantities(drafts) == 16384


# -- counter: baseline, dirty, snapshot -------------------------------------------------


def test_counter_first_value_is_a_baseline_persisted_at_once() -> None:
    rule = CounterRule("press1", counter_config(), default_rollover=2**16)
    assert rule.on_samples(reading("parts", 500, 0), at(0)) == []
    assert rule.dirty
    assert rule.snapshot() == {"value": 500, "window_start": at(0).isoformat()}
    assert not rule.dirty


def test_counter_is_dirty_only_on_baseline_and_report() -> None:
    rule = CounterRule("press1", counter_config(report_every="10s"), default_rollover=2**16)
    rule.on_samples(reading("parts", 0, 0), at(0))
    rule.snapshot()
    for t in range(1, 10):
        rule.on_samples(reading("parts", t, t), at(t))
        rule.on_tick(at(t))
        assert not rule.dirty
    assert quantities(rule.on_tick(at(10))) == 9
    assert rule.dirty
    assert rule.snapshot() == {"value": 9, "window_start": at(10).isoformat()}


def test_counter_explicit_max_delta_turns_a_large_wrap_into_a_reset() -> None:
    rule = CounterRule("press1", counter_config(max_delta=1000), default_rollover=2**16)
    rule.on_samples(reading("parts", 65500, 0), at(0))
    assert rule.on_samples(reading("parts", 50, 1), at(1)) == []  # wrap of 86 parts
    drafts = rule.on_samples(reading("parts", 10, 2), at(2))  # wrap of 65496: a reset
    assert len(drafts) == 1
    assert isinstance(drafts[0].data, ProductionCountData)
    assert drafts[0].data.quantity == 86 + 10
    assert drafts[0].data.reset_detected


def test_counter_never_emits_a_window_ending_before_it_starts() -> None:
    rule = CounterRule("press1", counter_config(), default_rollover=None)
    rule.on_samples(reading("parts", 0, 100), at(100))  # the PLC clock runs ahead
    rule.on_samples(reading("parts", 3, 101), at(101))
    drafts = rule.flush(at(50))
    assert isinstance(drafts[0].data, ProductionCountData)
    assert drafts[0].data.window_end >= drafts[0].data.window_start


def test_edge_counter_snapshot_holds_the_bit_and_window_start() -> None:
    rule = CounterRule("press1", counter_config(mode="edge", report_every="5s"))
    rule.on_samples(reading("parts", False, 0), at(0))
    rule.on_samples(reading("parts", True, 1), at(1))
    rule.on_samples(reading("parts", False, 2), at(2))
    assert quantities(rule.on_tick(at(5))) == 1
    assert rule.snapshot() == {"bit": False, "window_start": at(5).isoformat()}


def test_edge_counter_counts_a_part_whose_report_a_crash_took() -> None:
    """The kill lands after a part's report was made but before it was committed, the bit
    still high: the restored rule must see that reading as the part's edge (the real Odoo
    end-to-end test lost such a part once)."""
    rule = CounterRule("packer1", counter_config(mode="edge", report_every="1s"))
    rule.on_samples(reading("parts", False, 0), at(0))
    rule.snapshot()  # committed: the baseline
    assert quantities(rule.on_samples(reading("parts", True, 1), at(1))) == 1
    rule.snapshot()  # committed with that report: the bit high
    rule.on_samples(reading("parts", False, 3), at(3))
    assert rule.dirty  # the bit fell with nothing pending: persisted low
    committed = rule.snapshot()
    assert committed["bit"] is False
    assert quantities(rule.on_samples(reading("parts", True, 5), at(5))) == 1
    # SIGKILL: that report and its state were never committed.
    restarted = CounterRule("packer1", counter_config(mode="edge", report_every="1s"))
    restarted.restore(json.loads(json.dumps(committed)))
    assert quantities(restarted.on_samples(reading("parts", True, 6), at(6))) == 1


def test_edge_counter_keeps_the_bit_of_the_last_report_while_parts_are_pending() -> None:
    rule = CounterRule("press1", counter_config(mode="edge", report_every="10s"))
    rule.on_samples(reading("parts", False, 0), at(0))
    rule.snapshot()
    rule.on_samples(reading("parts", True, 1), at(1))
    rule.on_samples(reading("parts", False, 2), at(2))
    assert not rule.dirty  # a part waits for its report: nothing to persist yet


def test_counter_ignores_a_snapshot_of_the_other_mode() -> None:
    rule = CounterRule("press1", counter_config(mode="edge"))
    rule.restore({"value": 12, "window_start": at(0).isoformat()})
    assert rule.on_samples(reading("parts", True, 1), at(1)) == []  # a new baseline
    assert rule.dirty


# -- state, alarm, sample ---------------------------------------------------------------


def state_rule(**fields: Any) -> StateRule:
    config = StateRuleConfig.model_validate(
        {"signal": "state_code", "map": {1: "running", 3: "down"}, **fields}
    )
    return StateRule("cnc3", config)


def test_state_rule_keeps_unmapped_codes_visible() -> None:
    rule = state_rule()
    assert rule.on_samples(reading("state_code", 42, 0), at(0)) == []
    assert rule.on_samples(reading("state_code", "jammed", 1), at(1)) == []
    assert rule.unmapped_codes == {42, "jammed"}
    assert not rule.dirty


def test_state_rule_is_dirty_after_the_first_observation_and_on_change_only() -> None:
    rule = state_rule()
    rule.on_samples(reading("state_code", 1, 0), at(0))
    assert rule.dirty
    rule.snapshot()
    rule.on_samples(reading("state_code", 1, 1), at(1))
    assert not rule.dirty
    rule.on_samples(reading("state_code", 3, 2), at(2))
    assert rule.dirty


def test_state_rule_flush_does_not_commit_a_state_shorter_than_min_duration() -> None:
    rule = state_rule(min_duration="10s")
    rule.on_samples(reading("state_code", 1, 0), at(0))
    rule.on_samples(reading("state_code", 3, 1), at(1))
    assert rule.flush(at(2)) == []


def test_alarm_restored_inactive_with_a_normal_value_emits_nothing() -> None:
    config = AlarmRuleConfig(name="hot", signal="temp", high=80.0)
    rule = AlarmRule("press1", config)
    rule.restore({"active": False, "limit": None})
    assert rule.on_samples(reading("temp", 20.0, 0), at(0)) == []
    assert not rule.dirty


def test_sample_rule_is_never_dirty_and_snapshots_nothing() -> None:
    rule = SampleRule("oven1", SampleRuleConfig(signal="temp", deadband=0.1))
    for t in range(5):
        rule.on_samples(reading("temp", float(t), t), at(t))
        assert not rule.dirty
    assert rule.snapshot() == {}


# -- registry ---------------------------------------------------------------------------


def machine(**sections: Any) -> MachineConfig:
    return MachineConfig.model_validate({"name": "press1", **sections})


def _rule_configs_in(annotation: Any) -> set[type]:
    found = {annotation} if isinstance(annotation, type) else set()
    for arg in typing.get_args(annotation):
        found |= _rule_configs_in(arg)
    return {cls for cls in found if issubclass(cls, RuleConfig)}


def test_registry_covers_every_rule_section_of_a_machine() -> None:
    sections = set(MachineConfig.model_fields) - {"name", "area", "line"}
    configs = {
        cls
        for section in sections
        for cls in _rule_configs_in(MachineConfig.model_fields[section].annotation)
    }
    assert len(configs) == len(sections)  # every other section holds one kind of rule
    assert set(RULE_TYPES) == configs


def test_every_rule_describes_itself_and_the_signals_it_reads() -> None:
    config = machine(
        state={"signal": "state_code", "map": {1: "running"}, "reason_signal": "reason"},
        counters=[{"signal": "part_done", "mode": "edge"}],
        alarms=[{"name": "hot", "signal": "temp", "high": 80}],
        samples=[{"signal": "temp", "interval": "5s"}],
    )
    entries = list(config.rule_entries())
    assert [place for place, _ in entries] == [
        ("state",),
        ("counters", 0),
        ("alarms", 0),
        ("samples", 0),
    ]
    refs = {(place, ref.key, ref.name) for place, rule in entries for ref in rule.signal_refs()}
    assert refs == {
        (("state",), "signal", "state_code"),
        (("state",), "reason_signal", "reason"),
        (("counters", 0), "signal", "part_done"),
        (("alarms", 0), "signal", "temp"),
        (("samples", 0), "signal", "temp"),
    }
    assert [rule.describe() for _, rule in entries] == [
        "state      <- state_code, reason from reason",
        "good       <- rising edges of part_done, reported every 10s",
        "alarm hot <- temp > 80.0 (warning)",
        "sample     <- temp on every 5s",
    ]
    assert {type(rule).EVENT_TYPE.value for _, rule in entries} == {
        "machine.state",
        "production.count",
        "alarm",
        "sample",
    }


def test_build_rules_makes_one_rule_per_entry_with_stable_keys() -> None:
    config = machine(
        state={"signal": "state_code", "map": {1: "running"}, "reason_signal": "reason"},
        counters=[{"signal": "good"}, {"signal": "scrap", "kind": "scrap"}],
        alarms=[{"name": "hot", "signal": "temp", "high": 80}],
        samples=[{"signal": "temp", "deadband": 0.5}],
    )
    rules = build_rules(config, {}, {"temp": "degC"})
    assert [rule.key for rule in rules] == [
        "press1/state",
        "press1/counter/good",
        "press1/counter/scrap",
        "press1/alarm/hot",
        "press1/sample/temp",
    ]
    assert rules[0].signals == {"state_code", "reason"}
    assert isinstance(rules[4], SampleRule)
    assert rules[4].unit == "degC"


@pytest.mark.parametrize(
    ("data_type", "rollover"),
    [
        (DataType.UINT16, 2**16),
        (DataType.UINT32, 2**32),
        (DataType.UINT64, 2**64),
        (DataType.INT16, None),
        (DataType.INT32, None),
        (DataType.FLOAT32, None),
        (None, None),
    ],
)
def test_counter_rollover_defaults_from_the_signal_data_type(
    data_type: DataType | None, rollover: int | None
) -> None:
    (rule,) = build_rules(machine(counters=[{"signal": "parts"}]), {"parts": data_type}, {})
    assert isinstance(rule, CounterRule)
    assert rule.rollover == rollover
    assert rule.max_delta == (None if rollover is None else rollover // 2)


def test_configured_rollover_wins_over_the_data_type() -> None:
    config = machine(counters=[{"signal": "parts", "rollover": 10000}])
    (rule,) = build_rules(config, {"parts": DataType.UINT32}, {})
    assert isinstance(rule, CounterRule)
    assert (rule.rollover, rule.max_delta) == (10000, 5000)


def test_build_rules_refuses_two_rules_with_one_key() -> None:
    config = machine(
        alarms=[
            {"name": "hot", "signal": "temp", "high": 80},
            {"name": "hot", "signal": "oil", "high": 90},
        ]
    )
    with pytest.raises(ValueError, match="press1/alarm/hot"):
        build_rules(config, {}, {})


def test_every_snapshot_is_json_and_restores_to_the_same_state() -> None:
    config = machine(
        state={"signal": "state_code", "map": {1: "running", 3: "down"}},
        counters=[{"signal": "parts"}, {"signal": "done", "mode": CounterMode.EDGE.value}],
        alarms=[{"name": "hot", "signal": "temp", "high": 80}],
        samples=[{"signal": "temp", "interval": "10s"}],
    )
    rules = build_rules(config, {"parts": DataType.UINT16}, {})
    batch = {
        **reading("state_code", 3, 0),
        **reading("parts", 7, 0),
        **reading("done", True, 0),
        **reading("temp", 95.0, 0),
    }
    for rule in rules:
        rule.on_samples({k: v for k, v in batch.items() if k in rule.signals}, at(0))
    fresh = build_rules(config, {"parts": DataType.UINT16}, {})
    for old, new in zip(rules, fresh, strict=True):
        stored = json.loads(json.dumps(old.snapshot()))
        new.restore(stored)
        assert new.snapshot() == stored
