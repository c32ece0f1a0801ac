"""The Odoo access rights an Odoo destination needs, from its config, and a check of
them as the integration user (``floorgate odoo check``).

The integration user should not be an administrator. With the defaults it needs the
groups Manufacturing / User (which implies Inventory / User and Internal User); an
Internal User may create maintenance requests. Alarms mapped to equipment also need the
user to see that equipment: Odoo shows a user without Maintenance / Equipment Manager
only the equipment it follows.

Each right is asked of Odoo with ``has_access(operation)`` on the model (public on 18
and 19, over both APIs), so what is reported is what Odoo would refuse, not a guess from
group names.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.common import EventType
from agent.forwarders.base import Rejected
from agent.forwarders.odoo.config import OdooDestinationConfig, ScrapMode, WorkOrderTimers
from agent.forwarders.odoo.transport import OdooTransport

# The smallest of Odoo's groups that grants each model's rights the agent needs.
GROUP_FOR = {
    "maintenance.request": "Internal User",
    "maintenance.equipment": "Maintenance / Equipment Manager (or make the user follow it)",
    "product.product": "Internal User",
}
DEFAULT_GROUP = "Manufacturing / User"


@dataclass(frozen=True)
class Right:
    model: str
    operation: str  # read | create | write
    why: str


def needed_rights(destination: OdooDestinationConfig) -> list[Right]:
    types = set(destination.event_types)
    rights: list[Right] = []

    def need(model: str, operations: str, why: str) -> None:
        rights.extend(Right(model, op, why) for op in operations.split())

    if EventType.MACHINE_STATE in types:
        need("mrp.workcenter", "read", "states")
        need("mrp.workcenter.productivity.loss", "read", "states")
        need("mrp.workcenter.productivity", "read create write", "states")
        if destination.work_order_timers is not WorkOrderTimers.LEAVE:
            need("mrp.workorder", "read", "work-order timers")
    if EventType.PRODUCTION_COUNT in types:
        need("mrp.workcenter", "read", "counts")
        need("mrp.workorder", "read write", "counts")
        maps = [destination.mapping(m) for m in destination.machine_map] or [
            destination.mapping("")
        ]
        if any(m.scrap is not ScrapMode.IGNORE for m in maps):
            need("stock.scrap", "read create write", "scrap")
        if any(m.scrap_product for m in maps):
            need("product.product", "read", "scrap")
        if destination.finish_orders:
            need("mrp.production", "read write", "finish_orders")
    if EventType.ALARM in types:
        need("maintenance.request", "read create write", "alarms")
        if any(m.equipment for m in destination.machine_map.values()):
            need("maintenance.equipment", "read", "alarms")
    unique: dict[tuple[str, str], Right] = {}
    for right in rights:
        unique.setdefault((right.model, right.operation), right)
    return list(unique.values())


async def missing_rights(
    transport: OdooTransport, rights: list[Right]
) -> list[tuple[Right, str | None]]:
    """Each right with None when granted, or why not."""
    result: list[tuple[Right, str | None]] = []
    for right in rights:
        try:
            granted = await transport.call(
                right.model, "has_access", ids=[], operation=right.operation
            )
        except Rejected as exc:  # the model is not installed, or Odoo before 18
            result.append((right, f"cannot ask Odoo: {exc}"))
            continue
        group = GROUP_FOR.get(right.model, DEFAULT_GROUP)
        result.append((right, None if granted is True else f"refused: needs the group {group}"))
    return result
