"""Configuration: clear errors with the key path, exit 78, env overrides, the example."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.loader import EX_CONFIG, ConfigError, load_config
from agent.registry import DESTINATION_PLUGINS, SOURCE_PLUGINS, config_models

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "agent": {"id": "gw-test", "site": "plant"},
    "sources": [
        {
            "name": "plc",
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": 5020,
            "scan_interval": "1s",
            "signals": [
                {"name": "m1.state", "address": 0},
                {"name": "m1.good", "address": 1, "data_type": "uint32"},
                {
                    "name": "m1.temp",
                    "address": 3,
                    "data_type": "float32",
                    "unit_of_measurement": "degC",
                },
            ],
        }
    ],
    "machines": [
        {
            "name": "m1",
            "state": {"signal": "m1.state", "map": {1: "running", 3: "down"}},
            "counters": [{"signal": "m1.good", "kind": "good", "report_every": "5s"}],
            "alarms": [{"name": "hot", "signal": "m1.temp", "high": 80, "hysteresis": 2}],
            "samples": [{"signal": "m1.temp", "deadband": 0.5}],
        }
    ],
    "destinations": [{"name": "mw", "type": "http", "url": "http://127.0.0.1:9/events"}],
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def mutated(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target: Any = data
        parts = dotted.split("__")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        target[parts[-1]] = value
    return data


def test_base_config_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), environ={})
    assert config.sources[0].scan_interval == 1.0
    assert config.machines[0].counters[0].report_every == 5.0


INVALID = [
    pytest.param(
        mutated(sources__0__type="modbus_tpc"),
        "sources[0].type",
        "unknown type 'modbus_tpc'; expected one of 'modbus_tcp', 'modbus_rtu', 'opcua'",
        id="unknown-source-type",
    ),
    pytest.param(
        mutated(sources__0__scan_intervall="2s"),
        "sources[0].scan_intervall",
        "unknown key",
        id="typo-in-key",
    ),
    pytest.param(
        mutated(sources__0__signals__2__data_type="float17"),
        "sources[0].signals[2].data_type",
        "'float32'",
        id="bad-data-type",
    ),
    pytest.param(
        mutated(sources__0__scan_interval=5),
        "sources[0].scan_interval",
        "duration with a unit",
        id="duration-without-unit",
    ),
    pytest.param(
        mutated(machines__0__counters=[{"signal": "m1.goood"}]),
        "machines[0].counters[0].signal",
        "unknown signal 'm1.goood'",
        id="rule-names-unknown-signal",
    ),
    pytest.param(
        mutated(machines__0__counters=[{"signal": "m1.temp"}]),
        "machines[0].counters[0].signal",
        "integer signal",
        id="counter-on-a-float",
    ),
    pytest.param(
        mutated(destinations__0__auth="bearer", destinations__0__token="s3cret"),
        "destinations[0].token",
        "never written in the YAML",
        id="inline-secret",
    ),
    pytest.param(
        mutated(sources__0__type="modbus_udp"),
        "sources[0]",
        "modbus_tcp",
        id="unknown-source-type",
    ),
    pytest.param(
        mutated(sources__0__signals__1__name="m1.state"),
        "sources[0]",
        "used twice",
        id="duplicate-signal",
    ),
    pytest.param(
        mutated(sources__0__signals__0__address=70000),
        "sources[0].signals[0].address",
        "less than or equal to 65535",
        id="address-out-of-range",
    ),
    pytest.param(
        {k: v for k, v in BASE.items() if k != "machines"},
        "machines",
        "required key is missing",
        id="missing-section",
    ),
]


@pytest.mark.parametrize(("data", "path", "expected"), INVALID)
def test_invalid_config_names_key_path_and_expectation(
    tmp_path: Path, data: Any, path: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data), environ={})
    text = caught.value.render()
    assert path in text
    assert expected in text


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("  host: 127.0.0.1", "  host: [127.0.0.1")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert "YAML syntax error" in caught.value.render()
    assert caught.value.problems[0].line is not None


def test_error_points_at_the_line_of_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, mutated(sources__0__signals__2__data_type="float17"))
    lines = path.read_text().splitlines()
    expected_line = next(i for i, line in enumerate(lines, 1) if "float17" in line)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems[0].line == expected_line


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_cli_exits_78_without_traceback(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, mutated(sources__0__signals__2__data_type="float17"))
    argv = [command, str(path)] if command == "check-config" else [command, "--config", str(path)]
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == EX_CONFIG
    assert "sources[0].signals[2].data_type" in proc.stderr
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_prints_what_it_would_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(write(tmp_path, BASE))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "modbus_tcp 127.0.0.1:5020" in proc.stdout
    assert "POST http://127.0.0.1:9/events" in proc.stdout
    assert "m1.good" in proc.stdout


def test_environment_overrides_any_value_including_list_items(tmp_path: Path) -> None:
    # List items by their name: FLOORGATE__SOURCES__<source>__SIGNALS__<signal>__...
    environ = {
        "FLOORGATE__HEALTH__PORT": "9999",
        "FLOORGATE__SOURCES__PLC__HOST": "10.1.2.3",
        "FLOORGATE__SOURCES__PLC__SIGNALS__M1_GOOD__ADDRESS": "40",
        "UNRELATED": "x",
    }
    config = load_config(write(tmp_path, BASE), environ=environ)
    assert config.health.port == 9999
    assert config.sources[0].host == "10.1.2.3"  # type: ignore[union-attr]
    assert config.sources[0].signals[1].address == 40


@pytest.mark.parametrize(
    "variable",
    [
        "FLOORGATE__SOURCES__plc7__HOST",  # no source of that name
        "FLOORGATE__SOURCES__7__HOST",  # a position, not a name
    ],
)
def test_environment_override_naming_no_key_is_an_error(tmp_path: Path, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE), environ={variable: "x"})
    assert f"{variable} (environment)" in caught.value.render()
    assert "names here: plc" in caught.value.render()


def test_example_config_is_valid_and_documents_every_registered_type() -> None:
    example = REPO / "config.example.yaml"
    load_config(example, environ={})
    text = example.read_text()
    for model in config_models(SOURCE_PLUGINS + DESTINATION_PLUGINS):
        registered = model.model_fields["type"].annotation.__args__[0]
        assert f"type: {registered}" in text, f"config.example.yaml does not show type {registered}"
