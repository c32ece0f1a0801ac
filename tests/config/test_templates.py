"""Machine templates: a machine type written once, expanded at load time into the plain
sources' signals and machines everything downstream already reads; mistakes named at the
template's line and the machine that hit them; environment overrides and reload on the
expanded config; check-config's summary and --expanded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.describe import describe_config, expanded_yaml
from agent.config.loader import ConfigError, load_config, load_expanded
from agent.config.models import FloorgateConfig, MachineConfig
from agent.config.rules import RuleConfig
from agent.config.template_models import InstanceOverrides, TemplateConfig
from agent.config.templates import FROM_THE_TEMPLATE
from agent.service.reload import plan_reload

REPO = Path(__file__).resolve().parents[2]
PLANT50 = Path(__file__).parent / "fixtures" / "plant50.yaml"

HEAD = """\
agent: {id: gw, site: plant}
sources:
  - name: plc
    type: modbus_tcp
    host: 127.0.0.1
    signals: [{name: plc.heartbeat, address: 900}]
  - name: ua
    type: opcua
    endpoint: "opc.tcp://127.0.0.1:4840/"
    signals: [{name: ua.server_time, node_id: "i=2258"}]
"""

PRESS = """\
templates:
  press:
    area: stamping
    signals:
      - {name: state, address: 0}
      - {name: reason, address: 1}
      - {name: good, address: 2, data_type: uint32}
      - {name: scrap, address: 4}
      - {name: temperature, address: 5, data_type: float32, unit_of_measurement: degC}
    state:
      signal: state
      map: {0: stopped, 1: running, 2: idle, 3: down}
      reason_signal: reason
    counters:
      - {signal: good, kind: good}
      - {signal: scrap, kind: scrap}
    alarms:
      - {name: overtemperature, signal: temperature, high: 80.0, hysteresis: 2.0}
    samples:
      - {signal: temperature, deadband: 0.5}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_with(tmp_path: Path, machines: str, templates: str = PRESS) -> Path:
    return write(tmp_path, HEAD + templates + "machines:\n" + textwrap.dedent(machines))


def errors(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    text = caught.value.render()
    assert "Traceback" not in text
    return text


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    lines = path.read_text().splitlines()
    return [n for n, line in enumerate(lines, 1) if needle in line][nth - 1]


def signals_by_name(config: FloorgateConfig) -> dict[str, Any]:
    return {s.name: s for source in config.sources for s in source.signals}


# -- expansion ----------------------------------------------------------------------------


def test_a_50_press_plant_fits_in_under_200_lines_and_expands_fully() -> None:
    assert len(PLANT50.read_text().splitlines()) < 200
    loaded = load_expanded(PLANT50, environ={})
    config = loaded.config
    assert [m.name for m in config.machines] == [f"press{n:02d}" for n in range(1, 51)]
    signals = signals_by_name(config)
    assert len(signals) == 50 * (6 + 20)
    for n in range(1, 51):
        machine = config.machines[n - 1]
        name = machine.name
        line, unit = (n - 1) // 10 + 1, (n - 1) % 10 + 1
        assert (machine.area, machine.line) == ("stamping", f"line{line}")
        assert machine.state is not None and machine.state.signal == f"{name}.state"
        assert machine.state.reason_signal == f"{name}.reason"
        assert [c.signal for c in machine.counters] == [f"{name}.good", f"{name}.scrap"]
        assert [a.name for a in machine.alarms] == ["overtemperature", "door_open"]
        assert [s.signal for s in machine.samples] == [
            f"{name}.temperature",
            *(f"{name}.pv{address}" for address in range(100, 120)),
        ]
        good = signals[f"{name}.good"]
        assert (good.address, good.data_type.value, good.device_address) == (2, "uint32", unit)
        pv = signals[f"{name}.pv105"]
        assert (pv.address, pv.data_type.value, pv.scale) == (105, "int16", 0.1)
        assert signals[f"{name}.door_open"].bit == 3
        source = config.sources[line - 1]
        assert f"{name}.state" in {s.name for s in source.signals}
    assert config.machines[49].alarms[0].high == 90.0  # press50's override
    assert config.machines[48].alarms[0].high == 80.0
    (use,) = loaded.expansion.uses
    assert (use.template, len(use.machines), use.signals, use.rules) == ("press", 50, 1300, 1300)


def test_modbus_machines_are_placed_at_their_base_address_and_unit_id(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        """\
        - {name: press1, template: press, source: plc}
        - {name: press2, template: press, line: line2, source: plc, base_address: 100, unit: 7}
        """,
    )
    config = load_config(path, environ={})
    signals = signals_by_name(config)
    assert signals["press1.good"].address == 2 and signals["press1.good"].device_address is None
    assert signals["press2.good"].address == 102 and signals["press2.good"].device_address == 7
    assert signals["press2.temperature"].unit_of_measurement == "degC"
    press2 = config.machines[1]
    assert (press2.area, press2.line) == ("stamping", "line2")
    assert press2.alarms[0].signal == "press2.temperature"


def test_opcua_node_ids_take_the_machine_node_and_name(tmp_path: Path) -> None:
    template = """\
    templates:
      uapress:
        signals:
          - {name: state, node_id: "{node}.State", data_type: uint16}
          - {name: good, node_id: "nsu=urn:plant:line1;s={machine}.Good", data_type: uint32}
        state: {signal: state, map: {1: running, 3: down}}
        counters: [{signal: good}]
    """
    path = config_with(
        tmp_path,
        """\
        - {name: press7, template: uapress, source: ua, node: "ns=2;s=Line1.Press7"}
        """,
        textwrap.dedent(template),
    )
    signals = signals_by_name(load_config(path, environ={}))
    assert signals["press7.state"].node_id == "ns=2;s=Line1.Press7.State"
    assert signals["press7.good"].node_id == "nsu=urn:plant:line1;s=press7.Good"


def test_overrides_change_drop_and_keep_the_rest(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        """\
        - name: press1
          template: press
          source: plc
          overrides:
            signals: {temperature: {scale: 0.1}, scrap: null}
            state: {min_duration: 5s}
            counters: {scrap: null, good: {report_every: 30s}}
            alarms: {overtemperature: {high: 90.0}}
            samples: {temperature: null}
        - {name: press2, template: press, source: plc, base_address: 10}
        """,
    )
    config = load_config(path, environ={})
    signals = signals_by_name(config)
    assert signals["press1.temperature"].scale == 0.1 and "press1.scrap" not in signals
    press1, press2 = config.machines
    assert press1.state is not None and press1.state.min_duration == 5.0
    assert [(c.signal, c.report_every) for c in press1.counters] == [("press1.good", 30.0)]
    assert press1.alarms[0].high == 90.0 and press1.samples == []
    # The other machine keeps the template as written.
    assert signals["press2.temperature"].scale == 1.0 and "press2.scrap" in signals
    assert press2.alarms[0].high == 80.0 and len(press2.counters) == 2


def test_a_range_makes_one_signal_per_value_with_its_sample_rule(tmp_path: Path) -> None:
    template = """\
    templates:
      meter:
        ranges:
          - addresses: 0-9
            data_type: float32
            prefix: v
            unit_of_measurement: kW
            sample: {interval: 1m}
          - {input_type: coil, addresses: 16-19}
        alarms: [{name: tripped, signal: coil17}]
    """
    path = config_with(
        tmp_path,
        "- {name: m1, template: meter, source: plc, base_address: 1000}\n",
        textwrap.dedent(template),
    )
    config = load_config(path, environ={})
    signals = {name: s for name, s in signals_by_name(config).items() if name.startswith("m1.")}
    assert sorted(signals) == sorted(
        [f"m1.v{a}" for a in range(0, 10, 2)] + [f"m1.coil{a}" for a in range(16, 20)]
    )
    assert signals["m1.v4"].address == 1004 and signals["m1.v4"].unit_of_measurement == "kW"
    assert signals["m1.coil17"].input_type.value == "coil" and signals["m1.coil17"].address == 1017
    machine = config.machines[0]
    assert [s.signal for s in machine.samples] == [f"m1.v{a}" for a in range(0, 10, 2)]
    assert machine.samples[0].interval == 60.0
    assert machine.alarms[0].signal == "m1.coil17"


def test_plain_machines_and_sources_are_left_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD.replace("{name: plc.heartbeat, address: 900}", "{name: packer.state, address: 20}")
        + PRESS
        + """\
machines:
  - {name: press1, template: press, source: plc}
  - {name: packer, state: {signal: packer.state, map: {1: running}}}
""",
    )
    config = load_config(path, environ={})
    assert [s.name for s in config.sources[0].signals][:2] == ["packer.state", "press1.state"]
    assert config.machines[1].state is not None
    assert config.machines[1].state.signal == "packer.state"


def test_a_config_without_templates_is_not_touched(tmp_path: Path) -> None:
    data = yaml.safe_load(HEAD)
    data["sources"][0]["signals"] = [{"name": "m.state", "address": 0}]
    data["machines"] = [{"name": "m", "state": {"signal": "m.state", "map": {1: "running"}}}]
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_expanded(path, environ={})
    assert loaded.expansion.origins == {} and loaded.expansion.uses == []


def test_the_template_schema_has_every_rule_section_of_a_machine() -> None:
    """A new rule in MachineConfig needs its place in templates and their overrides."""

    def rule_sections(model: type[Any]) -> set[str]:
        found = set()
        for name, info in model.model_fields.items():
            args = typing.get_args(info.annotation) or (info.annotation,)
            for arg in args:
                inner = typing.get_args(arg) or (arg,)
                if any(isinstance(t, type) and issubclass(t, RuleConfig) for t in inner):
                    found.add(name)
        return found

    sections = rule_sections(MachineConfig)
    assert sections == {"state", "counters", "alarms", "samples"}
    assert rule_sections(TemplateConfig) == sections
    assert sections <= set(InstanceOverrides.model_fields)
    # ... and its message when written on a machine made from a template
    assert set(FROM_THE_TEMPLATE) == {"signals", *sections}


# -- mistakes -----------------------------------------------------------------------------


def test_an_address_past_65535_names_the_template_line_and_the_machine_line(
    tmp_path: Path,
) -> None:
    path = config_with(
        tmp_path,
        """\
        - {name: press01, template: press, source: plc}
        - {name: press09, template: press, source: plc, base_address: 65530}
        """,
    )
    text = errors(path)
    template_line = line_of(path, "{name: temperature")
    machine_line = line_of(path, "name: press09")
    assert template_line != machine_line
    assert (
        f"{path}:{template_line}: templates.press.signals[4].address: a float32 at address "
        "5 + base_address 65530 takes registers 65535-65536, past the last Modbus address 65535"
        f" (instance press09 at line {machine_line}: source plc, base_address 65530)"
    ) in text
    assert "signals[2]" not in text  # press09's uint32 at 65532-65533 still fits
    assert "press01" not in text


def test_a_mistake_in_a_template_is_one_problem_naming_the_machines(tmp_path: Path) -> None:
    machines = "".join(f"- {{name: p{n}, template: press, source: plc}}\n" for n in range(1, 7))
    path = config_with(tmp_path, machines, PRESS.replace("data_type: uint32", "data_type: uint23"))
    text = errors(path)
    assert text.count("templates.press.signals[2].data_type") == 1
    line = line_of(path, "uint23")
    assert f"{path}:{line}: templates.press.signals[2].data_type: Input should be" in text
    assert "(got 'uint23') (instances p1 at line" in text and "and 3 more)" in text


def test_a_counter_on_a_float_in_a_template_is_named_at_the_template(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        "- {name: p1, template: press, source: plc}\n- {name: p2, template: press, source: plc}\n",
        PRESS.replace("- {signal: scrap, kind: scrap}", "- {signal: temperature, kind: scrap}"),
    )
    text = errors(path)
    line = line_of(path, "{signal: temperature, kind: scrap}")
    assert f"{path}:{line}: templates.press.counters[1].signal: a counter needs an integer" in text
    assert text.count("counters[1]") == 1


@pytest.mark.parametrize(
    ("template", "machines", "path", "expected"),
    [
        pytest.param(
            PRESS.replace("    signals:", "    signalz:"),
            "- {name: p1, template: press, source: plc}\n",
            "templates.press.signalz",
            "unknown key",
            id="typo-in-a-template-key",
        ),
        pytest.param(
            PRESS.replace("{name: scrap, address: 4}", "{name: scrap, adress: 4}"),
            "- {name: p1, template: press, source: plc}\n",
            "templates.press.signals[3].adress",
            "unknown key",
            id="typo-in-a-template-signal-key",
        ),
        pytest.param(
            PRESS.replace("- {signal: good, kind: good}", "- {signal: god, kind: good}"),
            "- {name: p1, template: press, source: plc}\n",
            "templates.press.counters[0].signal",
            "unknown signal 'god'; the template's signals: state, reason, good",
            id="rule-names-no-signal-of-the-template",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc, base_adress: 10}\n",
            "machines[0].base_adress",
            "unknown key",
            id="typo-in-a-machine-key",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc, overrides: {state: {min_durration: 5s}}}\n",
            "machines[0].overrides.state.min_durration",
            "unknown key",
            id="typo-in-an-override",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: prss, source: plc}\n",
            "machines[0].template",
            "unknown template 'prss'; templates: press",
            id="unknown-template",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc9}\n",
            "machines[0].source",
            "unknown source 'plc9'; sources: plc, ua",
            id="unknown-source",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press}\n",
            "machines[0].source",
            "required key is missing",
            id="no-source",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: ua, base_address: 10}\n",
            "machines[0].base_address",
            "does not apply to source 'ua' (type opcua); its machines take: node",
            id="modbus-key-on-an-opcua-source",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: ua}\n",
            "machines[0].source",
            "has a Modbus address and no node_id, and source 'ua' is an OPC UA server",
            id="modbus-template-on-an-opcua-source",
        ),
        pytest.param(
            "templates:\n  ua:\n    signals: [{name: s, node_id: '{node}.S'}]\n",
            "- {name: p1, template: ua, source: ua}\n",
            "machines[0].node",
            "needs the machine's node, and machine 'p1' gives none",
            id="opcua-node-missing",
        ),
        pytest.param(
            "templates:\n  ua:\n    signals: [{name: s, node_id: 'ns=2;s={nod}.S'}]\n",
            "- {name: p1, template: ua, source: ua, node: 'ns=2;s=P1'}\n",
            "templates.ua.signals[0].node_id",
            "unknown placeholder {nod} in node_id",
            id="opcua-unknown-placeholder",
        ),
        pytest.param(
            "templates:\n  ua:\n    signals: [{name: s, node_id: 'ns=2;s=P1.S'}]\n",
            "- {name: p1, template: ua, source: ua}\n",
            "templates.ua.signals[0].node_id",
            "every machine made from the template would read the same node",
            id="opcua-fixed-node",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc, overrides: {signals: {scrap: null}}}\n",
            "machines[0].overrides.signals.scrap",
            "drops signal 'scrap', which templates.press.counters[1] reads; drop that rule "
            "too (overrides: {counters: {scrap: null}})",
            id="dropped-signal-still-read",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc,\n"
            "   overrides: {alarms: {overheat: {high: 1}}}}\n",
            "machines[0].overrides.alarms.overheat",
            "names no alarm of template press; alarms there by name: overtemperature",
            id="override-of-no-rule",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: plc,\n"
            "   overrides: {signals: {temp: {scale: 2}}}}\n",
            "machines[0].overrides.signals.temp",
            "'temp' is no signal of template press; its signals: state, reason",
            id="override-of-no-signal",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, source: plc, state: {signal: x, map: {1: running}}}\n",
            "machines[0].source",
            "source is a key of a machine made from a template, and this machine names none",
            id="instance-key-on-a-plain-machine",
        ),
        pytest.param(
            "templates:\n  m:\n    ranges: [{addresses: 0-4, data_type: float32}]\n",
            "- {name: p1, template: m, source: plc}\n",
            "templates.m.ranges[0]",
            "addresses 0-4 are 5 registers, not a whole number of float32 values",
            id="range-not-whole-values",
        ),
        pytest.param(
            "templates:\n  m:\n"
            "    ranges: [{input_type: coil, addresses: 0-1, data_type: int16}]\n",
            "- {name: p1, template: m, source: plc}\n",
            "templates.m.ranges[0]",
            "input_type coil reads bits: data_type must be bool",
            id="range-of-coils-not-bool",
        ),
        pytest.param(
            PRESS + "  Press 2:\n    signals: []\n",
            "- {name: p1, template: press, source: plc}\n",
            "templates.Press 2",
            "a template name is letters, digits, _ and - only",
            id="bad-template-name",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, template: press, source: ua, unit: 3}\n",
            "machines[0].unit",
            "unit does not apply to source 'ua' (type opcua); its machines take: node",
            id="placement-key-named-as-written",
        ),
        pytest.param(
            PRESS,
            "- {name: p1, unit: 3}\n",
            "machines[0].unit",
            "unit is a key of a machine made from a template, and this machine names none",
            id="unit-alias-on-a-plain-machine",
        ),
        pytest.param(
            "templates:\n  m:\n    ranges: [{addresses: '0..9'}]\n",
            "- {name: p1, template: m, source: plc}\n",
            "templates.m.ranges[0].addresses",
            "the first and last address, both included, e.g. 0-499 (got '0..9')",
            id="range-addresses-in-words",
        ),
        pytest.param(
            "templates:\n  m:\n    ranges: [{addresses: 100}]\n",
            "- {name: p1, template: m, source: plc}\n",
            "templates.m.ranges[0].addresses",
            "the first and last address, both included, e.g. 0-499 (got 100)",
            id="range-of-one-number",
        ),
    ],
)
def test_a_mistake_names_the_key_and_what_was_expected(
    tmp_path: Path, template: str, machines: str, path: str, expected: str
) -> None:
    text = errors(config_with(tmp_path, machines, template))
    assert f": {path}: " in text, text
    assert expected in text, text


def test_a_made_signal_clashing_with_a_written_one_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD.replace("{name: plc.heartbeat, address: 900}", "{name: p1.state, address: 20}")
        + PRESS
        + "machines:\n  - {name: p1, template: press, source: plc}\n",
    )
    text = errors(path)
    assert (
        "machines[0].name: machine p1 makes signal 'p1.state', which is also "
        "sources[0].signals[0]; rename one" in text
    )


def test_a_misspelled_templates_section_is_named_not_each_machine(tmp_path: Path) -> None:
    for written in ("templtes", "template", "Templates"):
        path = config_with(
            tmp_path,
            "- {name: p1, template: press, source: plc}\n"
            "- {name: p2, template: press, source: plc}\n",
            PRESS.replace("templates:", f"{written}:"),
        )
        text = errors(path)
        assert (
            f"{path}:{line_of(path, written + ':')}: {written}: unknown key: is templates: "
            "meant? machines[0] is made from template 'press', and the file has no templates: "
            "section"
        ) in text
        assert "unknown template" not in text and len(text.splitlines()) == 2


def test_a_typo_in_a_signal_of_a_template_no_machine_uses_is_named(tmp_path: Path) -> None:
    unused = "  spare:\n    signals: [{name: x, adress: 4}, {name: y, node_id: '{node}.Y'}]\n"
    path = config_with(tmp_path, "- {name: p1, template: press, source: plc}\n", PRESS + unused)
    text = errors(path)
    assert (
        f"{path}:{line_of(path, 'adress')}: templates.spare.signals[0].adress: unknown key" in text
    )
    assert "a template's signal has the keys of a source's signal: address, bit," in text
    assert text.count("\n  ") == 1  # y's node_id is a key of an OPC UA signal


@pytest.mark.parametrize("key", ["state", "counters", "alarms", "samples", "signals"])
def test_rules_or_signals_on_a_machine_made_from_a_template_say_to_use_overrides(
    tmp_path: Path, key: str
) -> None:
    path = config_with(tmp_path, f"- {{name: p1, template: press, source: plc, {key}: []}}\n")
    text = errors(path)
    assert f"machines[0].{key}: a machine made from a template gets its {key} from the " in text
    assert f"write overrides: {{{key}: " in text and "check the spelling" not in text


def test_a_machine_name_used_twice_is_one_problem_not_one_per_signal(tmp_path: Path) -> None:
    machines = "".join(
        f"- {{name: {name}, template: press, source: plc}}\n" for name in ("p1", "p2", "p1")
    )
    text = errors(config_with(tmp_path, machines))
    assert text.splitlines()[1:] == [
        f"  {tmp_path / 'config.yaml'}:{line_of(tmp_path / 'config.yaml', 'p1', 2)}: "
        "machines[2].name: 'p1' is already used by machines[0]"
    ]


@pytest.mark.parametrize("kind", ["[modbus_tcp]", "{tcp: 1}"])
def test_a_source_type_that_is_no_text_is_named_not_a_traceback(tmp_path: Path, kind: str) -> None:
    path = write(
        tmp_path,
        HEAD.replace("type: modbus_tcp", f"type: {kind}")
        + PRESS
        + "machines:\n  - {name: p1, template: press, source: plc}\n",
    )
    assert "sources[0].type: unknown type" in errors(path)


def test_check_config_names_a_template_mistake_and_exits_78_without_traceback(
    tmp_path: Path,
) -> None:
    path = config_with(
        tmp_path,
        "- {name: p1, template: press, source: plc}\n",
        PRESS.replace("{name: reason, address: 1}", "{name: reason, address: 1, swap: wrod}"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "templates.press.signals[1].swap" in proc.stderr and "(got 'wrod')" in proc.stderr
    assert "instance p1 at line" in proc.stderr and "Traceback" not in proc.stderr


# -- environment overrides ----------------------------------------------------------------


def test_environment_overrides_reach_machines_made_from_templates(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        """\
        - {name: press1, template: press, source: plc}
        - {name: press2, template: press, source: plc, base_address: 10}
        """,
    )
    environ = {
        "FLOORGATE__MACHINES__press2__BASE_ADDRESS": "200",
        "FLOORGATE__MACHINES__PRESS2__DEVICE_ADDRESS": "3",
        "FLOORGATE__MACHINES__press1__OVERRIDES__ALARMS__overtemperature__HIGH": "95",
        "FLOORGATE__MACHINES__press1__OVERRIDES__SIGNALS__good__ADDRESS": "40",
        "FLOORGATE__TEMPLATES__press__SIGNALS__temperature__UNIT_OF_MEASUREMENT": "degF",
    }
    config = load_config(path, environ=environ)
    signals = signals_by_name(config)
    assert signals["press2.state"].address == 200 and signals["press2.state"].device_address == 3
    assert signals["press1.good"].address == 40 and signals["press2.good"].address == 202
    assert config.machines[0].alarms[0].high == 95.0 and config.machines[1].alarms[0].high == 80.0
    assert {signals[f"press{n}.temperature"].unit_of_measurement for n in (1, 2)} == {"degF"}


def test_an_error_from_an_override_of_a_machine_names_the_variable(tmp_path: Path) -> None:
    path = config_with(tmp_path, "- {name: press1, template: press, source: plc}\n")
    variable = "FLOORGATE__MACHINES__press1__BASE_ADDRESS"
    text = errors(path, {variable: "65534"})
    assert "templates.press.signals[2].address" in text and "65534" in text
    text = errors(path, {variable: "-1"})
    assert f"{variable} (environment): machines[0].base_address" in text


def test_a_made_signal_addressed_through_its_source_says_to_use_the_machine(
    tmp_path: Path,
) -> None:
    path = config_with(tmp_path, "- {name: press1, template: press, source: plc}\n")
    variable = "FLOORGATE__SOURCES__plc__SIGNALS__press1_good__ADDRESS"
    text = errors(path, {variable: "40"})
    assert f"{variable} (environment)" in text
    assert "FLOORGATE__MACHINES__<machine>__OVERRIDES__SIGNALS__<signal>__<KEY>" in text


# -- reload and check-config --------------------------------------------------------------


def test_a_template_change_reloads_every_machine_made_from_it_and_their_source(
    tmp_path: Path,
) -> None:
    machines = """\
    - {name: press1, template: press, source: plc}
    - {name: press2, template: press, source: plc, base_address: 10}
    - {name: packer, state: {signal: press1.state, map: {1: running}}}
    """
    old = load_config(config_with(tmp_path, machines), environ={})
    rules = load_config(
        write(
            tmp_path,
            HEAD
            + PRESS.replace("high: 80.0", "high: 85.0")
            + "machines:\n"
            + textwrap.dedent(machines),
            "rules.yaml",
        ),
        environ={},
    )
    plan = plan_reload(old, rules)
    assert (plan.sources, plan.machines, plan.engine) == ([], ["press1", "press2"], True)
    assert plan.describe() == "rule engine (machines press1, press2)"
    signals = load_config(
        write(
            tmp_path,
            HEAD
            + PRESS.replace("address: 5, data_type: float32", "address: 6, data_type: float32")
            + "machines:\n"
            + textwrap.dedent(machines),
            "signals.yaml",
        ),
        environ={},
    )
    plan = plan_reload(old, signals)
    assert plan.sources == ["plc"] and plan.engine and plan.machines == []
    one = load_config(
        write(
            tmp_path,
            HEAD
            + PRESS
            + "machines:\n"
            + textwrap.dedent(machines).replace("base_address: 10", "base_address: 10, line: l2"),
            "one.yaml",
        ),
        environ={},
    )
    assert plan_reload(old, one).machines == ["press2"]
    assert plan_reload(old, load_config(config_with(tmp_path, machines), environ={})).empty


def test_check_config_says_what_each_template_made() -> None:
    loaded = load_expanded(PLANT50, environ={})
    text = describe_config(loaded.config, loaded.expansion.uses)
    assert (
        "templates:\n  press: 50 machines (press01, press02, press03, ...), "
        "1300 signals, 1300 rules" in text
    )
    assert "  press07  (/plant1/stamping/line1/press07)  from template press" in text
    assert "... and 15 more rules (check-config --expanded lists them)" in text


def test_the_expanded_config_is_a_plain_config_that_loads_the_same(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--expanded", str(PLANT50)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "templates:" not in proc.stdout and "template: press" not in proc.stdout
    plain = tmp_path / "plain.yaml"
    plain.write_text(proc.stdout)
    original = load_config(PLANT50, environ={})
    again = load_expanded(plain, environ={})
    assert again.expansion.uses == []
    assert again.config.model_dump() == original.model_dump()


def test_expanded_yaml_writes_shared_values_out_without_anchors() -> None:
    shared = {0: "stopped", 1: "running"}
    text = expanded_yaml({"machines": [{"state": {"map": shared}}, {"state": {"map": shared}}]})
    assert "&" not in text and "*" not in text


def test_the_example_config_makes_press1_from_a_template() -> None:
    loaded = load_expanded(REPO / "config.example.yaml", environ={})
    (use,) = loaded.expansion.uses
    assert (use.template, use.machines) == ("press", ["press1"])
    press1 = next(m for m in loaded.config.machines if m.name == "press1")
    assert (press1.area, press1.line) == ("stamping", "line1")
    assert press1.state is not None and press1.state.reason_signal == "press1.reason"
    assert {s.name for s in loaded.config.sources[0].signals} >= {
        "press1.state",
        "press1.good",
        "press1.temperature",
        "packer1.part_done",
    }


def test_the_examples_of_the_templates_page_load(tmp_path: Path) -> None:
    import re

    page = (REPO / "docs" / "templates.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", page, re.S) if "machines:" in b]
    assert len(blocks) == 2
    for index, block in enumerate(blocks):
        loaded = load_expanded(write(tmp_path, block, f"page{index}.yaml"), environ={})
        assert loaded.expansion.uses and all(use.machines for use in loaded.expansion.uses)
    assert blocks[1] == PLANT50.read_text()  # the page shows the tested file as it is
