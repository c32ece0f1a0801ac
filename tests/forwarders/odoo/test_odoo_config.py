"""The Odoo destination's schema: defaults, the loss mapping, clear refusals, and the
documented block of config.example.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agent.config.rules import MachineStateValue
from agent.forwarders.odoo.config import OdooDestinationConfig, OdooProtocol, ScrapMode
from agent.forwarders.odoo.mapping import external_id, order_name

EXAMPLE = Path(__file__).resolve().parents[3] / "config.example.yaml"
BASE: dict[str, Any] = {
    "name": "odoo",
    "type": "odoo",
    "url": "https://erp.example.com",
    "database": "prod",
    "api_key": {"file": "/etc/floorgate/odoo.key"},
}


def config(**extra: Any) -> OdooDestinationConfig:
    return OdooDestinationConfig.model_validate({**BASE, **extra})


def test_defaults_are_the_documented_ones() -> None:
    c = config()
    assert c.protocol is OdooProtocol.AUTO
    assert c.timeout == 120.0
    assert c.no_work_order.value == "hold"
    assert c.work_center("press1") == "press1"
    assert c.mapping("press1").scrap is ScrapMode.FORCE


@pytest.mark.parametrize(
    ("state", "reason", "loss"),
    [
        (MachineStateValue.DOWN, None, "Equipment Failure"),
        (MachineStateValue.DOWN, "code_12", "Equipment Failure"),
        (MachineStateValue.STOPPED, "setup", "Setup and Adjustments"),
        (MachineStateValue.IDLE, "Tool_Setup_Change", "Setup and Adjustments"),
        (MachineStateValue.IDLE, "material_shortage", "Material Availability"),
        (MachineStateValue.IDLE, None, None),
        (MachineStateValue.STOPPED, "lunch", None),
        (MachineStateValue.RUNNING, None, None),
    ],
)
def test_default_loss_mapping(
    state: MachineStateValue, reason: str | None, loss: str | None
) -> None:
    assert config().loss_for(state, reason) == loss


def test_configured_reasons_win_and_running_can_be_logged() -> None:
    c = config(
        losses={"reasons": {"setup": "Reduced Speed"}, "states": {"idle": "Process Defect"}},
        log_running=True,
    )
    assert c.loss_for(MachineStateValue.STOPPED, "setup") == "Reduced Speed"
    assert c.loss_for(MachineStateValue.IDLE, None) == "Process Defect"
    assert c.loss_for(MachineStateValue.DOWN, None) is None  # states replaced as a whole
    assert c.loss_for(MachineStateValue.RUNNING, None) == "Fully Productive Time"


def test_inline_api_key_and_bad_choices_are_refused_with_the_key_named() -> None:
    with pytest.raises(ValidationError, match="secrets are never written in the YAML"):
        config(api_key="abc")
    with pytest.raises(ValidationError, match="no_work_order"):
        config(no_work_order="drop")
    with pytest.raises(ValidationError, match="protocol jsonrpc needs login"):
        config(protocol="jsonrpc")
    with pytest.raises(ValidationError, match="needs `sample` in event_types"):
        config(
            machine_map={"press1": {"order_signal": "press1.order"}},
            event_types=["machine.state", "production.count"],
        )


def test_the_example_block_validates_with_every_option_shown() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("  # - name: odoo") : text.index("# The store-and-forward buffer")]
    lines = []
    for line in block.splitlines():
        if line.startswith("  #   # ") and ":" in line and not line.rstrip().endswith("."):
            candidate = "    " + line[len("  #   # ") :]
            try:  # an option shown commented out: take it if it is YAML
                yaml.safe_load(candidate.strip())
            except yaml.YAMLError:
                continue
            if candidate.strip().split(":")[0].isidentifier():
                lines.append(candidate)
            continue
        if line.startswith("  # ") and not line.startswith("  #   #"):
            lines.append("  " + line[len("  # ") :])
    document = yaml.safe_load("\n".join(lines))
    destination = OdooDestinationConfig.model_validate(document[0])
    assert destination.login and destination.machine_map["press2"].order_signal
    assert destination.master_refresh == 600.0


@pytest.mark.parametrize(
    ("template", "value", "name"),
    [
        ("{value}", "WH/MO/00042", "WH/MO/00042"),
        ("WH/MO/{value:05d}", 42, "WH/MO/00042"),
        ("WH/MO/{value:05d}", 42.0, "WH/MO/00042"),
        ("WH/MO/{value:05d}", " 42", "WH/MO/00042"),
        ("WH/MO/{value:05d}", "A-7", "A-7"),
        ("{value}", 0, None),
        ("{value}", "", None),
        ("{value}", None, None),
    ],
)
def test_order_names_from_signal_values(template: str, value: object, name: str | None) -> None:
    assert order_name(template, value) == name


def test_external_ids_carry_the_event_id() -> None:
    xid = external_id("gw-1", "state", "0190f3c2-7a6b-7c3d-8e9f-0a1b2c3d4e5f")
    assert xid == "floorgate.gw_1_state_0190f3c2_7a6b_7c3d_8e9f_0a1b2c3d4e5f"
