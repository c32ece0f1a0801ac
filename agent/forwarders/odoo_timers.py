"""Work-order timers during downtimes (``work_order_timers``).

When an operator presses Start on a work order, Odoo opens a time log of its own: an
``mrp.workcenter.productivity`` row with ``workorder_id`` set and no end, counted as
productive time. A downtime the agent logs on the same work center would overlap it,
and Odoo's OEE would count those minutes twice. Odoo's own Block button ends the timers
(``workcenter_id.order_ids.end_all()``) at the moment it is pressed; the agent does the
same at the *machine's* time, so a downtime that reaches Odoo late (after a WAN outage)
still ends the timers where the machine stopped:

- **pause** (a downtime with an availability or quality loss opens at ``t``): the open
  timers on the work center that started at or before ``t`` get ``date_end = t``.
  Which (work order, user) pairs were ended is stored first (``OdooState.paused``).
- **resume** (the machine runs again at ``t``, ``pause_and_resume`` only): one new timer
  per stored pair whose work order is still in progress, opened with ``load()`` under an
  external id made from the running event's id, from ``t``, with the productive loss.

Both steps are safe to repeat: a pause finds nothing left to end (and never touches a
timer started after its time, such as one it resumed), a resume loads the same
external ids again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent.forwarders.odoo_config import OdooDestinationConfig
from agent.forwarders.odoo_mapping import (
    PRODUCTIVITY,
    TIMER_COLUMNS,
    WORKORDER,
    LoadTable,
    external_id,
    odoo_datetime,
    timer_row,
)
from agent.forwarders.odoo_master import Kind, MasterData
from agent.forwarders.odoo_plan import Plan, TimerStep
from agent.forwarders.odoo_state import OdooState
from agent.forwarders.odoo_transport import CallRejected, OdooTransport

Loader = Callable[[LoadTable, Plan], Awaitable[dict[str, int]]]


class TimerKeeper:
    def __init__(
        self,
        config: OdooDestinationConfig,
        agent_id: str,
        transport: OdooTransport,
        state: OdooState,
        master: MasterData,
        load: Loader,
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self.transport = transport
        self.state = state
        self.master = master
        self.load = load

    async def apply(self, plan: Plan) -> None:
        """Each step in event order; a refusal dead-letters the state event with why."""
        for step in plan.timers:
            if step.seq in plan.rejected:
                continue
            try:
                if step.action == "pause":
                    await self._pause(step)
                else:
                    await self._resume(step, plan)
            except CallRejected as exc:
                plan.rejected.setdefault(
                    step.seq, f"work-order timers on work center {step.workcenter_id}: {exc}"
                )

    async def _pause(self, step: TimerStep) -> None:
        at = odoo_datetime(step.at)
        rows = await self.transport.call(
            PRODUCTIVITY,
            "search_read",
            domain=[
                ["workcenter_id", "=", step.workcenter_id],
                ["workorder_id", "!=", False],
                ["date_end", "=", False],
                ["date_start", "<=", at],
            ],
            fields=["workorder_id", "user_id"],
        )
        if not rows:
            return
        timers = [
            (int(r["workorder_id"][0]), int(r["user_id"][0]) if r.get("user_id") else 0)
            for r in rows
        ]
        self.state.add_paused(step.machine, timers)
        self.state.commit()  # remembered before Odoo ends them: a crash still resumes them
        self.state.begin()
        ids = sorted(int(r["id"]) for r in rows)
        await self.transport.call(PRODUCTIVITY, "write", ids=ids, vals={"date_end": at})

    async def _resume(self, step: TimerStep, plan: Plan) -> None:
        paused = self.state.paused(step.machine)
        if not paused:
            return
        workorders = sorted({w for w, _ in paused})
        rows = await self.transport.call(WORKORDER, "read", ids=workorders, fields=["state"])
        running = {int(r["id"]) for r in rows or [] if r.get("state") == "progress"}
        lookup = await self.master.resolve(Kind.LOSS, self.config.losses.productive)
        if lookup.id is None:
            raise CallRejected(f"cannot resume timers: {lookup.problem()}", "floorgate.NoLoss")
        table = LoadTable(PRODUCTIVITY, TIMER_COLUMNS)
        for workorder, user in paused:
            if workorder not in running:
                continue
            xid = external_id(self.agent_id, "timer", f"{step.event_id}_{workorder}_{user}")
            row = timer_row(step.workcenter_id, workorder, user, lookup.id, step.at, step.event_id)
            table.put(xid, row, step.seq)
        if table.rows:
            await self.load(table, plan)
        if step.seq not in plan.rejected:
            self.state.clear_paused(step.machine)
