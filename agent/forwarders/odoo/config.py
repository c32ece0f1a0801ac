"""The YAML schema of an Odoo destination.

Example::

    - name: odoo
      type: odoo
      url: https://erp.example.com
      database: production
      api_key: {credential: odoo-api-key}
      machine_map:
        press1: {work_center: PRESS-1, equipment: "SN-4711"}
        press2: {work_center: PRESS-2, order_signal: press2.order}

A machine without an entry in ``machine_map`` uses a work center whose code (or name)
is the machine's name. Loss names are looked up in Odoo by name.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from agent.common.model import StrictModel
from agent.common.units import Duration
from agent.config.common import DestinationCommon, EventType, Secret
from agent.config.rules import MachineStateValue, Severity

FULLY_PRODUCTIVE = "Fully Productive Time"
EQUIPMENT_FAILURE = "Equipment Failure"
SETUP = "Setup and Adjustments"
MATERIAL = "Material Availability"

DEFAULT_STATE_LOSSES: dict[MachineStateValue, str] = {MachineStateValue.DOWN: EQUIPMENT_FAILURE}
# A reason name containing one of these words maps to the loss (after `reasons`).
DEFAULT_REASON_WORDS: dict[str, str] = {"setup": SETUP, "material": MATERIAL}


KEY_EXPIRY_WARNING_DAYS = 14  # warn (log, odoo check) when the API key expires sooner

Priority = Literal["0", "1", "2", "3"]
DEFAULT_PRIORITY: dict[Severity, Priority] = {
    Severity.INFO: "1",
    Severity.WARNING: "2",
    Severity.CRITICAL: "3",
}


class OdooProtocol(enum.StrEnum):
    AUTO = "auto"  # JSON-2 when the server offers it (Odoo 19+), else JSON-RPC
    JSON2 = "json2"
    JSONRPC = "jsonrpc"


class NoWorkOrder(enum.StrEnum):
    HOLD = "hold"  # counts wait in the buffer; health says why
    DEAD_LETTER = "dead_letter"  # counts are dead-lettered with the reason


class ScrapMode(enum.StrEnum):
    FORCE = "force"  # stock.scrap validated with do_scrap, as confirming Odoo's warning does
    CHECK = "check"  # action_validate: a stock warning leaves the scrap draft and is logged
    DRAFT = "draft"  # stock.scrap created, left for a person to validate
    IGNORE = "ignore"  # scrap counts are not sent to Odoo


class WorkOrderTimers(enum.StrEnum):
    """What a downtime does to the work-order timers running on its work center (the
    productivity rows Odoo opens when an operator presses Start)."""

    # End them at the downtime's start (as Odoo's Block button does, but at the machine's
    # time) and open them again, for the same work orders and users, when it runs again.
    PAUSE_AND_RESUME = "pause_and_resume"
    PAUSE = "pause"  # end them at the downtime's start; the operator presses Start again
    LEAVE = "leave"  # leave them running (blocked and productive time then overlap)


class AlarmCleared(enum.StrEnum):
    NOTE = "note"  # the request's description gains "cleared at ..."
    IGNORE = "ignore"


class MachineMapping(StrictModel):
    """How one machine appears in Odoo."""

    work_center: str | None = Field(
        default=None,
        description="Work-center code (or name) in Odoo. Default: the machine's name.",
    )
    equipment: str | None = Field(
        default=None,
        description="maintenance.equipment serial number (or name) for alarm requests. "
        "Default: requests without equipment.",
    )
    order_signal: str | None = Field(
        default=None,
        description="Signal holding the current order (its `sample` events must be routed "
        "here). Default: the work order in progress on the work center.",
    )
    order_format: str = Field(
        default="{value}",
        description="Manufacturing-order name made from the order signal's value, e.g. "
        "'WH/MO/{value:05d}'.",
    )
    scrap: ScrapMode = Field(
        default=ScrapMode.FORCE,
        description="force | check | draft | ignore (see docs/destinations/odoo.md).",
    )
    scrap_product: str | None = Field(
        default=None,
        description="Internal reference (default_code) of the product scrapped. Default: the "
        "product of the running order.",
    )


class LossMapping(StrictModel):
    """Which machine states become productivity records, and with which loss."""

    reasons: dict[str, str] = Field(
        default_factory=dict,
        description="Reason name -> loss name. Checked first. Then a reason containing "
        "'setup' -> Setup and Adjustments, 'material' -> Material Availability.",
    )
    states: dict[MachineStateValue, str] = Field(
        default_factory=lambda: dict(DEFAULT_STATE_LOSSES),
        description="State -> loss name when the reason maps to none. Default: down -> "
        "Equipment Failure. States mapped to nothing (idle, stopped) are not logged.",
    )
    productive: str = Field(
        default=FULLY_PRODUCTIVE, description="Loss used for running periods (log_running)."
    )


class OdooDestinationConfig(DestinationCommon):
    """An Odoo database: machine events become work-center, work-order, scrap and
    maintenance records."""

    type: Literal["odoo"]
    url: str = Field(pattern=r"^https?://", description="Odoo base URL.")
    database: str = Field(description="Database name.")
    api_key: Secret = Field(description="API key of the integration user.")
    login: str | None = Field(
        default=None,
        description="Login of the API key's user; needed by JSON-RPC (Odoo 14-18) only.",
    )
    protocol: OdooProtocol = Field(default=OdooProtocol.AUTO, description="auto | json2 | jsonrpc.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    timeout: Duration = Field(
        default=120.0,
        gt=0,
        description="Whole-request timeout. Odoo retries conflicts itself for ~30 s: keep it "
        "above 60 s.",
    )
    machine_map: dict[str, MachineMapping] = Field(
        default_factory=dict, description="Machine name -> its Odoo records."
    )
    losses: LossMapping = Field(default_factory=LossMapping)
    log_running: bool = Field(
        default=False,
        description="Also log running periods as Fully Productive Time, so Odoo's OEE has "
        "both sides.",
    )
    no_work_order: NoWorkOrder = Field(
        default=NoWorkOrder.HOLD,
        description="Counts with no work order in progress: hold (wait) | dead_letter.",
    )
    finish_orders: bool = Field(
        default=False,
        description="Close the manufacturing order (button_mark_done, with a backorder for "
        "the rest when one is left) when the count reaches its quantity or the order "
        "signal changes.",
    )
    work_order_timers: WorkOrderTimers = Field(
        default=WorkOrderTimers.PAUSE_AND_RESUME,
        description="pause_and_resume | pause | leave: work-order timers during a downtime "
        "(availability or quality loss). Ending them keeps Odoo's OEE from counting the "
        "same minutes as productive and blocked.",
    )
    alarm_cleared: AlarmCleared = Field(
        default=AlarmCleared.NOTE, description="note | ignore: what a cleared alarm does."
    )
    alarm_priority: dict[Severity, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITY),
        description="Alarm severity -> maintenance request priority '0'..'3'.",
    )
    master_refresh: Duration = Field(
        default=600.0, gt=0, description="Re-read work centers, losses, equipment this often."
    )
    batch_size: int = Field(default=500, ge=1, le=10000, description="Events per flush.")

    def target(self) -> str:
        return f"Odoo {self.url} database {self.database} (protocol {self.protocol.value})"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.protocol is OdooProtocol.JSONRPC and not self.login:
            raise ValueError("protocol jsonrpc needs login: (the API key's user login)")
        signals = [m for m, c in self.machine_map.items() if c.order_signal]
        if signals and EventType.SAMPLE not in self.event_types:
            raise ValueError(
                f"machine_map[{signals[0]}].order_signal needs `sample` in event_types: the "
                "order number arrives as the signal's sample events"
            )
        return self

    def mapping(self, machine: str) -> MachineMapping:
        return self.machine_map.get(machine) or MachineMapping()

    def work_center(self, machine: str) -> str:
        return self.mapping(machine).work_center or machine

    def loss_for(self, state: MachineStateValue, reason: str | None) -> str | None:
        """The loss name for an interval, or None when it is not logged."""
        if state is MachineStateValue.RUNNING:
            return self.losses.productive if self.log_running else None
        if reason:
            if reason in self.losses.reasons:
                return self.losses.reasons[reason]
            lowered = reason.lower()
            for word, loss in DEFAULT_REASON_WORDS.items():
                if word in lowered:
                    return loss
        return self.losses.states.get(state)
