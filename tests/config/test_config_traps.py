"""Configuration traps: environment overrides address list items by name and name the
variable in their errors; a key written twice is refused; a Modbus value must end at or
before address 65535."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.loader import ConfigError, load_config
from agent.config.models import FloorgateConfig

CONFIG = """\
agent:
  id: gw-test
sources:
  - name: press_line
    type: modbus_tcp
    host: 10.0.0.1
    signals:
      - name: press1.state
        address: 0
      - name: press1.good
        address: 1
        data_type: uint32
      - name: press1.temp
        address: 3
        data_type: float32
  - name: packer
    type: modbus_tcp
    host: 10.0.0.2
    signals:
      - {name: packer1.state, address: 0}
machines:
  - name: press1
    state:
      signal: press1.state
      map: {1: running, 3: down}
    counters:
      - signal: press1.good
    alarms:
      - {name: hot, signal: press1.temp, high: 80}
destinations:
  - {name: mw, type: http, url: "http://127.0.0.1:9/events"}
health:
"""

# A source inserted above press_line: an index that meant press_line now means `new`.
INSERTED = CONFIG.replace(
    "sources:\n",
    "sources:\n"
    "  - name: new\n"
    "    type: modbus_tcp\n"
    "    host: 10.0.0.9\n"
    "    signals: [{name: new.state, address: 0}]\n",
)


def write(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str = CONFIG, **environ: str) -> FloorgateConfig:
    return load_config(write(tmp_path, text), environ=environ)


def problems(tmp_path: Path, text: str = CONFIG, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **environ)
    assert "Traceback" not in caught.value.render()
    return caught.value


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return found[occurrence - 1]


def host(config: FloorgateConfig, name: str) -> str:
    source = next(s for s in config.sources if s.name == name)
    return str(source.host)  # type: ignore[attr-defined]


def address(config: FloorgateConfig, signal: str) -> int:
    found = [s for source in config.sources for s in source.signals if s.name == signal]
    return int(found[0].address)  # type: ignore[attr-defined]


# --- environment overrides: list items by name ------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "FLOORGATE__SOURCES__press_line__HOST",  # the name as written
        "FLOORGATE__SOURCES__PRESS_LINE__HOST",  # upper-case, as variables usually are
    ],
)
def test_a_list_item_is_addressed_by_its_name(tmp_path: Path, variable: str) -> None:
    config = load(tmp_path, **{variable: "10.9.9.9"})
    assert host(config, "press_line") == "10.9.9.9"
    assert host(config, "packer") == "10.0.0.2"


def test_an_override_by_name_still_finds_its_item_after_one_is_inserted_above(
    tmp_path: Path,
) -> None:
    environ = {"FLOORGATE__SOURCES__press_line__HOST": "10.9.9.9"}
    assert host(load(tmp_path, CONFIG, **environ), "press_line") == "10.9.9.9"
    config = load(tmp_path, INSERTED, **environ)
    assert host(config, "press_line") == "10.9.9.9"
    assert host(config, "new") == "10.0.0.9"


def test_nested_list_items_are_addressed_by_name_with_dots_written_as_underscores(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        FLOORGATE__SOURCES__PRESS_LINE__SIGNALS__PRESS1_GOOD__ADDRESS="40",
        **{"FLOORGATE__SOURCES__packer__SIGNALS__packer1.state__ADDRESS": "7"},
    )
    assert address(config, "press1.good") == 40
    assert address(config, "packer1.state") == 7
    assert address(config, "press1.state") == 0


def test_an_exact_name_wins_over_one_that_differs_only_in_case(tmp_path: Path) -> None:
    text = CONFIG.replace("name: packer\n", "name: PRESS_LINE\n")
    config = load(tmp_path, text, FLOORGATE__SOURCES__PRESS_LINE__HOST="10.9.9.9")
    assert host(config, "PRESS_LINE") == "10.9.9.9"
    assert host(config, "press_line") == "10.0.0.1"


def test_a_name_matching_several_items_ignoring_case_is_an_error(tmp_path: Path) -> None:
    text = CONFIG.replace("name: packer\n", "name: PRESS_LINE\n")
    error = problems(tmp_path, text, FLOORGATE__SOURCES__Press_Line__HOST="10.9.9.9")
    rendered = error.render()
    assert "FLOORGATE__SOURCES__Press_Line__HOST (environment)" in rendered
    assert "press_line, PRESS_LINE" in rendered


def test_a_list_index_in_a_variable_is_refused_with_the_name_form(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__SOURCES__0__HOST="10.9.9.9")
    assert error.render().splitlines()[1].strip() == (
        "FLOORGATE__SOURCES__0__HOST (environment): sources: list items are addressed by "
        "name: FLOORGATE__SOURCES__<name>__HOST, names here: press_line, packer"
    )
    assert error.problems[0].line is None


def test_a_nested_list_index_is_refused_naming_the_signals(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__SOURCES__press_line__SIGNALS__1__ADDRESS="40")
    rendered = error.render()
    assert "FLOORGATE__SOURCES__press_line__SIGNALS__<name>__ADDRESS" in rendered
    assert "names here: press1.state, press1.good, press1.temp" in rendered
    assert "write . and - as _" in rendered


def test_an_unknown_name_is_an_error_listing_the_names(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__SOURCES__press_lin__HOST="10.9.9.9")
    assert error.render().splitlines()[1].strip() == (
        "FLOORGATE__SOURCES__press_lin__HOST (environment): sources: no item is named "
        "'press_lin'; names here: press_line, packer"
    )


def test_items_without_a_name_are_not_addressed_one_by_one(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__MACHINES__press1__COUNTERS__0__KIND="scrap")
    rendered = error.render()
    assert "machines[0].counters: the items of this list have no name" in rendered
    assert "FLOORGATE__MACHINES__press1__COUNTERS='[...]'" in rendered


def test_a_list_without_names_is_set_whole_as_yaml(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        FLOORGATE__MACHINES__PRESS1__COUNTERS="[{signal: press1.good, kind: scrap}]",
        FLOORGATE__DESTINATIONS__MW__EVENT_TYPES="[alarm, machine.state]",
    )
    assert [c.kind.value for c in config.machines[0].counters] == ["scrap"]
    assert [t.value for t in config.destinations[0].event_types] == ["alarm", "machine.state"]


def test_a_number_key_of_a_map_is_found(tmp_path: Path) -> None:
    config = load(tmp_path, FLOORGATE__MACHINES__press1__STATE__MAP__1="idle")
    assert config.machines[0].state is not None
    assert {k: v.value for k, v in config.machines[0].state.map.items()} == {1: "idle", 3: "down"}


def test_a_variable_inside_a_value_another_sets_whole_is_an_error(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        FLOORGATE__SOURCES__packer="{name: packer, type: modbus_tcp, host: h, signals: []}",
        FLOORGATE__SOURCES__packer__HOST="10.9.9.9",
    )
    assert "FLOORGATE__SOURCES__packer__HOST (environment): sources[1].host" in error.render()
    assert "FLOORGATE__SOURCES__packer sets whole" in error.render()


def test_two_variables_for_the_same_value_are_an_error(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        FLOORGATE__SOURCES__press_line__HOST="10.9.9.8",
        FLOORGATE__SOURCES__PRESS_LINE__HOST="10.9.9.9",
    )
    assert "sets the same value" in error.render()


def test_a_variable_into_a_plain_value_is_an_error(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__SOURCES__press_line__HOST__NAME="x")
    assert error.problems[0].variable == "FLOORGATE__SOURCES__press_line__HOST__NAME"
    assert "single value ('10.0.0.1')" in error.render()


def test_an_override_of_a_section_left_empty_applies(tmp_path: Path) -> None:
    assert load(tmp_path, FLOORGATE__HEALTH__PORT="9999").health.port == 9999


# --- environment overrides: errors name the variable --------------------------------------


def test_a_validation_error_in_an_override_names_the_variable_not_a_line(
    tmp_path: Path,
) -> None:
    error = problems(tmp_path, FLOORGATE__HEALTH__PORT="99999")
    assert error.render().splitlines()[1].strip() == (
        "FLOORGATE__HEALTH__PORT (environment): health.port: Input should be less than or "
        "equal to 65535 (got 99999)"
    )
    assert error.problems[0].line is None
    assert error.problems[0].variable == "FLOORGATE__HEALTH__PORT"


def test_an_error_inside_a_value_set_whole_names_the_variable(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        FLOORGATE__SOURCES__packer__SIGNALS="[{name: packer1.state, address: 70000}]",
    )
    (problem,) = error.problems
    assert problem.path == "sources[1].signals[0].address"
    assert problem.variable == "FLOORGATE__SOURCES__packer__SIGNALS"
    assert problem.line is None


def test_a_cross_check_error_in_an_override_names_the_variable(tmp_path: Path) -> None:
    error = problems(tmp_path, FLOORGATE__MACHINES__press1__STATE__SIGNAL="press1.stat")
    (problem,) = error.problems
    assert problem.variable == "FLOORGATE__MACHINES__press1__STATE__SIGNAL"
    line = error.render().splitlines()[1].strip()
    assert line.startswith(
        "FLOORGATE__MACHINES__press1__STATE__SIGNAL (environment): machines[0].state.signal: "
        "unknown signal 'press1.stat'"
    )


def test_an_error_around_an_overridden_value_gives_the_line_and_the_variable(
    tmp_path: Path,
) -> None:
    variable = "FLOORGATE__SOURCES__press_line__SIGNALS__press1_temp__ADDRESS"
    error = problems(tmp_path, **{variable: "65535"})
    (problem,) = error.problems
    assert problem.line == line_of(CONFIG, "name: press1.temp")
    assert f"with {variable} from the environment" in problem.message


def test_errors_in_the_file_still_point_at_their_line(tmp_path: Path) -> None:
    text = CONFIG.replace("host: 10.0.0.2", "host: 10.0.0.2\n    port: 0")
    error = problems(tmp_path, text, FLOORGATE__HEALTH__PORT="9999")
    (problem,) = error.problems
    assert (problem.path, problem.line, problem.variable) == (
        "sources[1].port",
        line_of(text, "port: 0"),
        None,
    )


# --- keys written twice ------------------------------------------------------------------


def test_a_duplicate_key_is_refused_with_both_lines_and_its_path(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "    host: 10.0.0.2\n", "    host: 10.0.0.2\n    port: 502\n    host: x\n"
    )
    error = problems(tmp_path, text)
    first, second = line_of(text, "host: 10.0.0.2"), line_of(text, "host: x")
    assert error.render().splitlines()[1].strip() == (
        f"{tmp_path / 'config.yaml'}:{second}: sources[1].host: duplicate key 'host' "
        f"(lines {first} and {second}); keep one"
    )


def test_every_duplicate_key_is_reported(tmp_path: Path) -> None:
    text = CONFIG.replace("  id: gw-test\n", "  id: gw-test\n  id: gw-2\n").replace(
        "map: {1: running, 3: down}", "map: {1: running, 3: down, 1: idle}"
    )
    error = problems(tmp_path, text)
    assert [(p.path, p.message) for p in error.problems] == [
        ("agent.id", "duplicate key 'id' (lines 2 and 3); keep one"),
        (
            "machines[0].state.map.1",
            f"duplicate key 1 (twice on line {line_of(text, 'map:')}); keep one",
        ),
    ]


def test_keys_from_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "machines:\n",
        "machines:\n"
        "  - name: press2\n"
        "    alarms:\n"
        "      - &hot {name: hot, signal: press1.temp, high: 80}\n"
        "      - {<<: *hot, name: hotter, high: 90}\n",
    )
    config = load(tmp_path, text)
    assert [(a.name, a.high) for a in config.machines[0].alarms] == [("hot", 80), ("hotter", 90)]


def test_a_recursive_anchor_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    text = CONFIG.replace("  id: gw-test\n", "  id: gw-test\n  me: &me {again: *me}\n")
    error = problems(tmp_path, text)
    assert "agent.me: unknown key" in error.render()


def test_a_duplicate_name_of_an_alarm_points_at_its_line(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "      - {name: hot, signal: press1.temp, high: 80}\n",
        "      - {name: hot, signal: press1.temp, high: 80}\n"
        "      - {name: hot, signal: press1.temp, high: 90}\n",
    )
    (problem,) = problems(tmp_path, text).problems
    assert problem.path == "machines[0].alarms[1].name"
    assert problem.line == line_of(text, "high: 90")
    assert problem.message == "'hot' is already used by machines[0].alarms[0]"


# --- Modbus addresses --------------------------------------------------------------------


def signal_at(address: int, data_type: str, extra: str = "") -> str:
    return CONFIG.replace(
        "      - {name: packer1.state, address: 0}\n",
        f"      - {{name: packer1.state, address: 0}}\n"
        f"      - {{name: packer1.x, address: {address}, data_type: {data_type}{extra}}}\n",
    )


@pytest.mark.parametrize(
    ("at", "data_type", "extra", "last"),
    [
        pytest.param(65535, "float32", "", 65536, id="float32"),
        pytest.param(65533, "float64", "", 65536, id="float64"),
        pytest.param(65530, "string", ", length: 10", 65539, id="string-by-its-length"),
    ],
)
def test_a_value_running_past_address_65535_is_refused(
    tmp_path: Path, at: int, data_type: str, extra: str, last: int
) -> None:
    text = signal_at(at, data_type, extra)
    (problem,) = problems(tmp_path, text).problems
    assert problem.path == "sources[1].signals[1]"
    assert problem.line == line_of(text, "packer1.x")
    assert "signal 'packer1.x' runs past the last Modbus address 65535" in problem.message
    assert f"its last address would be {last}" in problem.message


@pytest.mark.parametrize(
    ("at", "data_type", "extra"),
    [
        (65535, "uint16", ""),
        (65532, "float64", ""),
        (65534, "string", ", length: 2"),
        (65535, "bool", ", input_type: coil"),
        (65535, "bool", ", input_type: discrete_input"),
    ],
)
def test_a_value_ending_at_address_65535_is_accepted(
    tmp_path: Path, at: int, data_type: str, extra: str
) -> None:
    load(tmp_path, signal_at(at, data_type, extra))


def test_a_value_larger_than_one_read_request_is_refused(tmp_path: Path) -> None:
    text = signal_at(10, "string", ", length: 40").replace(
        "    host: 10.0.0.2\n", "    host: 10.0.0.2\n    max_registers_per_request: 32\n"
    )
    (problem,) = problems(tmp_path, text).problems
    assert problem.path == "sources[1]"
    assert "'packer1.x' takes 40 registers" in problem.message
    assert "max_registers_per_request: 32" in problem.message


# --- shifts and the time zone ------------------------------------------------------------


def test_shifts_and_time_zone_are_read_sorted(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "  id: gw-test\n",
        '  id: gw-test\n  shifts: ["22:00", "06:00", "14:00"]\n  timezone: Europe/Berlin\n',
    )
    agent = load(tmp_path, text).agent
    assert [t.strftime("%H:%M") for t in agent.shifts] == ["06:00", "14:00", "22:00"]
    assert agent.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("written", "message"),
    [
        # YAML 1.1 reads an unquoted 6:00 as sexagesimal minutes: 360.
        ("[6:00]", '360 is a number: write the time of day in quotes, e.g. "06:00"'),
        ('["24:00"]', "'24:00' is not a time of day HH:MM (00:00 to 23:59)"),
        ('["6:30"]', "'6:30' is not a time of day HH:MM"),
        ('["06:00", "06:00"]', "a shift start is given twice"),
    ],
)
def test_a_wrong_shift_start_says_what_to_write(tmp_path: Path, written: str, message: str) -> None:
    text = CONFIG.replace("  id: gw-test\n", f"  id: gw-test\n  shifts: {written}\n")
    rendered = problems(tmp_path, text).render()
    assert f"config.yaml:{line_of(text, 'shifts:')}: agent.shifts" in rendered
    assert message in rendered


def test_an_unknown_time_zone_is_named(tmp_path: Path) -> None:
    text = CONFIG.replace("  id: gw-test\n", "  id: gw-test\n  timezone: Europe/Berln\n")
    rendered = problems(tmp_path, text).render()
    assert "agent.timezone" in rendered
    assert "unknown time zone 'Europe/Berln': use an IANA name such as Europe/Berlin" in rendered
