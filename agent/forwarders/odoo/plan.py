"""One flush of events -> what to send to Odoo (the ``Plan``), in event order.

Events are taken in order per machine and *stream*: its states (productivity records),
its counts and order-signal samples (work-order quantities, scrap), its alarms
(maintenance requests). The streams touch different Odoo records, so each keeps its own
order without waiting for the others. When an event cannot be applied yet (a work
center, loss or equipment Odoo does not have, or counts with no work order in progress
and ``no_work_order: hold``), its stream is *held*: the event and every later event of
the same machine and stream stay pending, with the reason; everything else goes on —
downtimes keep reaching Odoo while the counts wait for a work order.

Good counts go to the work order in progress on the machine's work center (the most
recently started one), or to the work order of the order named by the machine's order
signal. The event -> work order assignment is stored before anything is written, so a
repeat goes to the same order even if another has started since.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.config.common import EventType
from agent.config.rules import CountKind, MachineStateValue
from agent.forwarders.odoo.config import (
    AlarmCleared,
    NoWorkOrder,
    OdooDestinationConfig,
    ScrapMode,
    WorkOrderTimers,
)
from agent.forwarders.odoo.mapping import (
    PRODUCTIVITY,
    PRODUCTIVITY_COLUMNS,
    REQUEST,
    REQUEST_COLUMNS,
    SCRAP,
    SCRAP_COLUMNS,
    LoadTable,
    cleared_note,
    closing_times,
    external_id,
    interval_row,
    order_name,
    request_row,
    scrap_row,
)
from agent.forwarders.odoo.master import Kind, MasterData
from agent.forwarders.odoo.state import OdooState
from agent.forwarders.odoo.transport import OdooTransport
from agent.pipeline.events import (
    AlarmData,
    Event,
    MachineStateData,
    ProductionCountData,
    SampleData,
)

log = logging.getLogger(__name__)

# Each stream keeps its order; streams of one machine do not wait for each other.
STREAMS = {
    EventType.MACHINE_STATE: "states",
    EventType.PRODUCTION_COUNT: "counts",
    EventType.SAMPLE: "counts",  # an order signal decides where the counts after it go
    EventType.ALARM: "alarms",
}

WORKORDER_FIELDS = [
    "name",
    "production_id",
    "workcenter_id",
    "product_id",
    "qty_production",
    "state",
    "date_start",
]


@dataclass(frozen=True)
class WorkOrder:
    id: int
    name: str
    production_id: int
    production: str
    workcenter_id: int
    product_id: int
    qty_production: float
    state: str = "progress"

    @property
    def closed(self) -> bool:
        """Done or cancelled: Odoo 19 (and 18 when cancelled) still accepts a quantity,
        which then counts nowhere."""
        return self.state in ("done", "cancel")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WorkOrder:
        production = row.get("production_id") or [0, "?"]
        product = row.get("product_id") or [0, "?"]
        workcenter = row.get("workcenter_id") or [0, "?"]
        return cls(
            id=int(row["id"]),
            name=str(row.get("name") or ""),
            production_id=int(production[0]),
            production=str(production[1]),
            workcenter_id=int(workcenter[0]),
            product_id=int(product[0]),
            qty_production=float(row.get("qty_production") or 0.0),
            state=str(row.get("state") or ""),
        )


BLOCKING_LOSS_TYPES = frozenset({"availability", "quality"})  # what Odoo's Block blocks


@dataclass(frozen=True)
class TimerStep:
    """End the work-order timers on a work center (``pause``) or open them again
    (``resume``), at the machine's time ``at`` (see ``odoo_timers``)."""

    machine: str
    workcenter_id: int
    action: str  # "pause" | "resume"
    at: datetime
    event_id: str
    seq: int


@dataclass
class Plan:
    productivity: LoadTable = field(
        default_factory=lambda: LoadTable(PRODUCTIVITY, PRODUCTIVITY_COLUMNS)
    )
    requests: LoadTable = field(default_factory=lambda: LoadTable(REQUEST, REQUEST_COLUMNS))
    scraps: LoadTable = field(default_factory=lambda: LoadTable(SCRAP, SCRAP_COLUMNS))
    scrap_modes: dict[str, ScrapMode] = field(default_factory=dict)
    assignments: list[tuple[str, int, int]] = field(default_factory=list)
    count_events: dict[int, str] = field(default_factory=dict)  # seq -> event id
    totals: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    workorders: dict[int, WorkOrder] = field(default_factory=dict)
    finish: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    closes: list[str] = field(default_factory=list)
    timers: list[TimerStep] = field(default_factory=list)
    orders: dict[str, str] = field(default_factory=dict)
    planned: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # "<machine> <stream>" -> why
    held_seqs: list[int] = field(default_factory=list)


@dataclass
class Decoded:
    seq: int
    event: Event


class Hold(Exception):
    """This machine's event must wait (a config problem or no work order)."""


class Planner:
    def __init__(
        self,
        config: OdooDestinationConfig,
        agent_id: str,
        master: MasterData,
        state: OdooState,
        transport: OdooTransport,
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self.master = master
        self.state = state
        self.transport = transport
        # per flush
        self._in_progress: dict[int, WorkOrder] = {}
        self._by_order: dict[tuple[str, int], WorkOrder] = {}
        self._orders: dict[str, str | None] = {}

    def xid(self, kind: str, event_id: str) -> str:
        return external_id(self.agent_id, kind, event_id)

    async def plan(self, events: list[Decoded]) -> Plan:
        plan = Plan()
        await self._prefetch(events)
        for item in events:
            stream = f"{item.event.machine} {STREAMS[item.event.type]}"
            if stream in plan.held:
                plan.held_seqs.append(item.seq)
                continue
            try:
                await self._apply(item, plan)
            except Hold as exc:
                plan.held[stream] = str(exc)
                plan.held_seqs.append(item.seq)
                continue
            plan.planned.append(item.seq)
        return plan

    # -- lookups -----------------------------------------------------------------------

    async def _found(self, kind: Kind, ref: str, machine: str) -> int:
        lookup = await self.master.resolve(kind, ref)
        if lookup.id is None:
            raise Hold(f"machine {machine}: {lookup.problem()}")
        return lookup.id

    async def _workcenter(self, machine: str) -> int:
        return await self._found(Kind.WORK_CENTER, self.config.work_center(machine), machine)

    async def _prefetch(self, events: list[Decoded]) -> None:
        """Work orders in progress on the work centers of machines with counts (one call),
        and the orders named by order signals."""
        self._in_progress.clear()
        self._by_order.clear()
        self._orders.clear()
        counting = {d.event.machine for d in events if d.event.type is EventType.PRODUCTION_COUNT}
        ordering = {d.event.machine for d in events if self._is_order_sample(d.event)}
        centers: dict[str, int] = {}
        for machine in sorted(counting | ordering):
            lookup = await self.master.resolve(Kind.WORK_CENTER, self.config.work_center(machine))
            if lookup.id is not None:
                centers[machine] = lookup.id
        if not centers:
            return
        rows = await self.transport.call(
            "mrp.workorder",
            "search_read",
            domain=[
                ["workcenter_id", "in", sorted(set(centers.values()))],
                ["state", "=", "progress"],
            ],
            fields=WORKORDER_FIELDS,
        )
        rows = sorted(rows or [], key=lambda r: str(r.get("date_start") or ""))
        for row in rows:  # the most recently started wins
            workorder = WorkOrder.from_row(row)
            self._in_progress[workorder.workcenter_id] = workorder
        await self._prefetch_orders(events, centers)

    async def _prefetch_orders(self, events: list[Decoded], centers: dict[str, int]) -> None:
        names: set[str] = set()
        for machine in centers:
            if self.config.mapping(machine).order_signal:
                current = self.state.order(machine)
                if current:
                    names.add(current)
        for d in events:
            name = self._order_from_sample(d.event)
            if name:
                names.add(name)
        if not names:
            return
        rows = await self.transport.call(
            "mrp.workorder",
            "search_read",
            domain=[
                ["production_id.name", "in", sorted(names)],
                ["workcenter_id", "in", sorted(set(centers.values()))],
            ],
            fields=WORKORDER_FIELDS,
        )
        for row in rows or []:
            workorder = WorkOrder.from_row(row)
            self._by_order[(workorder.production, workorder.workcenter_id)] = workorder

    def _is_order_sample(self, event: Event) -> bool:
        data = event.data
        return isinstance(data, SampleData) and (
            self.config.mapping(data.machine).order_signal == data.signal
        )

    def _order_from_sample(self, event: Event) -> str | None:
        data = event.data
        if not isinstance(data, SampleData) or not self._is_order_sample(event):
            return None
        mapping = self.config.mapping(data.machine)
        return order_name(mapping.order_format, data.value)

    # -- per event ---------------------------------------------------------------------

    async def _apply(self, item: Decoded, plan: Plan) -> None:
        data = item.event.data
        if isinstance(data, MachineStateData):
            await self._state(item, data, plan)
        elif isinstance(data, ProductionCountData):
            await self._count(item, data, plan)
        elif isinstance(data, AlarmData):
            await self._alarm(item, data, plan)
        elif isinstance(data, SampleData):
            self._sample(item, data, plan)

    async def _state(self, item: Decoded, data: MachineStateData, plan: Plan) -> None:
        machine = data.machine
        closing = closing_times(data)
        close_loss = None
        if closing is not None and data.previous_state is not None:
            close_loss = self.config.loss_for(data.previous_state, data.previous_reason)
        open_loss = self.config.loss_for(data.state, data.reason)
        resume = (
            data.state is MachineStateValue.RUNNING
            and self.config.work_order_timers is WorkOrderTimers.PAUSE_AND_RESUME
        )
        if close_loss is None and open_loss is None and not resume:
            return
        workcenter = await self._workcenter(machine)
        if close_loss is not None and closing is not None and data.previous_event_id:
            loss = await self._found(Kind.LOSS, close_loss, machine)
            xid = self.xid("state", data.previous_event_id)
            previous = data.previous_state or MachineStateValue.DOWN
            row = interval_row(
                workcenter,
                loss,
                closing[0],
                closing[1],
                machine,
                previous.value,
                data.previous_reason,
                data.previous_event_id,
            )
            plan.productivity.put(xid, row, item.seq)
            plan.closes.append(xid)
        if resume:
            plan.timers.append(
                TimerStep(machine, workcenter, "resume", data.since, item.event.id, item.seq)
            )
        if open_loss is not None:
            loss = await self._found(Kind.LOSS, open_loss, machine)
            xid = self.xid("state", item.event.id)
            if xid in self.state.closed([xid]):
                return  # already closed in Odoo: re-opening it would block the work center
            row = interval_row(
                workcenter,
                loss,
                data.since,
                None,
                machine,
                data.state.value,
                data.reason,
                item.event.id,
            )
            plan.productivity.put(xid, row, item.seq)
            blocking = self.master.loss_types.get(loss) in BLOCKING_LOSS_TYPES
            if blocking and self.config.work_order_timers is not WorkOrderTimers.LEAVE:
                plan.timers.append(
                    TimerStep(machine, workcenter, "pause", data.since, item.event.id, item.seq)
                )

    async def _count(self, item: Decoded, data: ProductionCountData, plan: Plan) -> None:
        if data.quantity <= 0:
            return
        mapping = self.config.mapping(data.machine)
        if data.kind is CountKind.SCRAP and mapping.scrap is ScrapMode.IGNORE:
            return
        workorder = await self._workorder_for(item, data, plan)
        if workorder is None:
            return  # dead-lettered
        plan.workorders[workorder.id] = workorder
        if data.kind is CountKind.GOOD:
            plan.assignments.append((item.event.id, workorder.id, data.quantity))
            plan.count_events[item.seq] = item.event.id
            plan.totals[workorder.id].append(item.seq)
            return
        xid = self.xid("scrap", item.event.id)
        if self.state.is_done("scrap", xid):
            return
        product = workorder.product_id
        if mapping.scrap_product:
            product = await self._found(Kind.PRODUCT, mapping.scrap_product, data.machine)
        row = scrap_row(product, data.quantity, workorder.production_id, workorder.id)
        plan.scraps.put(xid, row, item.seq)
        plan.scrap_modes[xid] = mapping.scrap

    async def _workorder_for(
        self, item: Decoded, data: ProductionCountData, plan: Plan
    ) -> WorkOrder | None:
        assigned = self.state.assigned_workorder(item.event.id)
        if assigned is not None and assigned in plan.workorders:
            return plan.workorders[assigned]
        workcenter = await self._workcenter(data.machine)
        if assigned is not None:
            for known in (*self._in_progress.values(), *self._by_order.values()):
                if known.id == assigned:
                    return known
            return await self._read_workorder(assigned)
        mapping = self.config.mapping(data.machine)
        if mapping.order_signal:
            order = self._current_order(data.machine, plan)
            found = self._by_order.get((order, workcenter)) if order else None
            why = (
                f"no order yet from signal {mapping.order_signal}"
                if not order
                else f"order {order!r} has no work order on this work center"
            )
        else:
            found = self._in_progress.get(workcenter)
            why = "no work order in progress"
        if found is not None:
            return found
        reason = (
            f"machine {data.machine}: {why} on work center "
            f"{self.config.work_center(data.machine)!r}: {data.kind.value} counts wait"
        )
        if self.config.no_work_order is NoWorkOrder.DEAD_LETTER:
            plan.rejected[item.seq] = reason
            return None
        raise Hold(reason)

    async def _read_workorder(self, workorder_id: int) -> WorkOrder:
        rows = await self.transport.call(
            "mrp.workorder", "read", ids=[workorder_id], fields=WORKORDER_FIELDS
        )
        return WorkOrder.from_row(rows[0])

    async def _alarm(self, item: Decoded, data: AlarmData, plan: Plan) -> None:
        mapping = self.config.mapping(data.machine)
        event = item.event
        if data.active:
            equipment = None
            if mapping.equipment:
                equipment = await self._found(Kind.EQUIPMENT, mapping.equipment, data.machine)
            priority = self.config.alarm_priority.get(data.severity, "2")
            row = request_row(data, event.id, event.time, equipment, priority)
            self.state.remember_alarm(event.id, data.machine, data.alarm, row)
            plan.requests.put(self.xid("alarm", event.id), row, item.seq)
            return
        if self.config.alarm_cleared is AlarmCleared.IGNORE:
            return
        link = self.state.link_clear(event.id, data.machine, data.alarm)
        if link is None:
            log.debug(
                "alarm cleared without a known raise machine=%s alarm=%s", data.machine, data.alarm
            )
            return
        raise_id, raised_row = link
        xid = self.xid("alarm", raise_id)
        base = plan.requests.rows[xid].values if xid in plan.requests.rows else raised_row
        plan.requests.put(xid, cleared_note(base, data, event.id, event.time), item.seq)

    def _current_order(self, machine: str, plan: Plan) -> str | None:
        if machine in plan.orders:
            return plan.orders[machine] or None
        return self.state.order(machine) or None

    def _sample(self, item: Decoded, data: SampleData, plan: Plan) -> None:
        name = self._order_from_sample(item.event)
        mapping = self.config.mapping(data.machine)
        if mapping.order_signal != data.signal:
            return
        previous = self._current_order(data.machine, plan)
        if (name or None) == previous:
            return
        plan.orders[data.machine] = name or ""  # "" = no order
        if self.config.finish_orders and previous:
            for workorder in self._by_order.values():
                if workorder.production == previous:
                    plan.finish[workorder.production_id].append(item.seq)
