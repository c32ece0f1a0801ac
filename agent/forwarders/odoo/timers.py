"""Work-order timers during downtimes (``work_order_timers``).

When an operator presses Start on a work order, Odoo opens a time log of its own: an
``mrp.workcenter.productivity`` row with ``workorder_id`` set and no end, counted as
productive time. A downtime the agent logs on the same work center would overlap it,
and Odoo's OEE would count those minutes twice. Odoo's own Block button ends the timers
(``workcenter_id.order_ids.end_all()``) at the moment it is pressed; the agent does the
same at the *machine's* time, so a downtime that reaches Odoo late (after a WAN outage)
still ends the timers where the machine stopped:

- **pause** (a downtime with an availability or quality loss opens at ``t``): the open
  timers on the work center that started at or before ``t`` end at ``t``; those started
  during the downtime (an operator pressed Start while the downtime had not reached
  Odoo) end where they started; their (work order, user) pairs are remembered
  (``OdooState.paused``).
- **resume** (the machine runs again at ``t``, ``pause_and_resume`` only): one new timer
  per remembered pair whose work order is still in progress and has no open timer for
  that user (the operator may have pressed Start again; Odoo refuses a second one),
  from ``t``, with the productive loss, under an external id made from the running
  event's id.

A flush's steps are worked out in event order against one read of the open timers (and
one of the work orders' states), and their rows join the flush's downtime rows in the
one ``mrp.workcenter.productivity.load()``: timers to end by database id (``.id``),
timers to open by external id. Downtimes and timers thus reach Odoo in one transaction,
for two reads more per flush, not per downtime. The pairs are stored before anything
is ended and forgotten only after the load, so a crash at any point resumes them on the
next try; a repeat finds nothing left to end (a pause never touches a timer started
after the machine ran again) and loads the same external ids again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from agent.forwarders.odoo.config import OdooDestinationConfig
from agent.forwarders.odoo.mapping import (
    PRODUCTIVITY,
    TIMER_FIELDS,
    WORKORDER,
    existing_timer_row,
    external_id,
    odoo_datetime,
    timer_row,
)
from agent.forwarders.odoo.master import Kind, MasterData
from agent.forwarders.odoo.plan import Plan, TimerStep
from agent.forwarders.odoo.state import OdooState
from agent.forwarders.odoo.transport import CallRejected, OdooTransport

Pair = tuple[int, int]  # (work order id, user id; 0 for none)


@dataclass
class _Timer:
    """An open timer: in Odoo already (``row`` has its ``.id``) or opened in this flush."""

    pair: Pair
    key: str  # its row's key in the flush's productivity table
    start: str
    row: dict[str, str]


@dataclass
class Outcome:
    """What a flush's steps did to the remembered pairs, settled after the load."""

    steps: list[TimerStep]
    paused: dict[str, set[Pair]] = field(default_factory=dict)  # machine -> pairs now
    ever_paused: dict[str, set[Pair]] = field(default_factory=lambda: defaultdict(set))


class TimerKeeper:
    def __init__(
        self,
        config: OdooDestinationConfig,
        agent_id: str,
        transport: OdooTransport,
        state: OdooState,
        master: MasterData,
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self.transport = transport
        self.state = state
        self.master = master

    async def prepare(self, plan: Plan) -> Outcome | None:
        """Put the timer rows into ``plan.productivity`` (before its load)."""
        steps = [s for s in plan.timers if s.seq not in plan.rejected]
        pauses = any(s.action == "pause" for s in steps)
        if not pauses and not any(self.state.paused(s.machine) for s in steps):
            return None  # machines ran again with nothing paused: no call to make
        outcome = Outcome(steps)
        try:
            await self._prepare(outcome, plan)
        except CallRejected as exc:
            for step in steps:
                plan.rejected.setdefault(
                    step.seq, f"work-order timers on work center {step.workcenter_id}: {exc}"
                )
            return None
        for machine, pairs in outcome.ever_paused.items():
            self.state.add_paused(machine, sorted(pairs))
        self.state.commit()  # remembered before Odoo ends them: a crash still resumes them
        self.state.begin()
        return outcome

    def settle(self, outcome: Outcome | None, plan: Plan) -> None:
        """After the load: remember what is paused now (unless a row of the machine's
        steps was refused: the next try works it out again)."""
        if outcome is None:
            return
        for machine, pairs in outcome.paused.items():
            if {s.seq for s in outcome.steps if s.machine == machine} & plan.rejected.keys():
                continue
            self.state.clear_paused(machine)
            self.state.add_paused(machine, sorted(pairs))

    async def _prepare(self, outcome: Outcome, plan: Plan) -> None:
        steps = outcome.steps
        open_timers = await self._open_timers(steps)
        for machine in {s.machine for s in steps}:
            outcome.paused[machine] = set(self.state.paused(machine))
        in_progress = await self._in_progress(steps, open_timers, outcome)
        resumes = any(s.action == "resume" for s in steps)
        productive = await self._productive_loss() if resumes else 0
        for index, step in enumerate(steps):
            timers = open_timers[step.workcenter_id]
            if step.action == "pause":
                until = next(
                    (
                        s.at
                        for s in steps[index + 1 :]
                        if s.machine == step.machine and s.action == "resume"
                    ),
                    None,
                )
                self._pause(step, until, timers, outcome, plan)
            else:
                self._resume(step, timers, outcome, plan, in_progress, productive)

    async def _open_timers(self, steps: list[TimerStep]) -> dict[int, list[_Timer]]:
        rows = await self.transport.call(
            PRODUCTIVITY,
            "search_read",
            domain=[
                ["workcenter_id", "in", sorted({s.workcenter_id for s in steps})],
                ["workorder_id", "!=", False],
                ["date_end", "=", False],
            ],
            fields=TIMER_FIELDS,
        )
        timers: dict[int, list[_Timer]] = defaultdict(list)
        for r in rows or []:
            row = existing_timer_row(r)
            pair = (int(r["workorder_id"][0]), int(row["user_id/.id"] or 0))
            timer = _Timer(pair, f"timer {r['id']}", row["date_start"], row)
            timers[int(r["workcenter_id"][0])].append(timer)
        return timers

    async def _in_progress(
        self, steps: list[TimerStep], timers: dict[int, list[_Timer]], outcome: Outcome
    ) -> set[int]:
        """The work orders that may be resumed: still in progress in Odoo."""
        if not any(s.action == "resume" for s in steps):
            return set()
        candidates = {p[0] for pairs in outcome.paused.values() for p in pairs}
        candidates |= {t.pair[0] for ts in timers.values() for t in ts}
        if not candidates:
            return set()
        rows = await self.transport.call(
            WORKORDER, "read", ids=sorted(candidates), fields=["state"]
        )
        return {int(r["id"]) for r in rows or [] if r.get("state") == "progress"}

    async def _productive_loss(self) -> int:
        lookup = await self.master.resolve(Kind.LOSS, self.config.losses.productive)
        if lookup.id is None:
            raise CallRejected(f"cannot resume timers: {lookup.problem()}", "floorgate.NoLoss")
        return lookup.id

    def _pause(
        self,
        step: TimerStep,
        until: datetime | None,
        timers: list[_Timer],
        outcome: Outcome,
        plan: Plan,
    ) -> None:
        """End the timers open at ``step.at``, and void those started while the machine
        was down (before ``until``, its running time when this flush has it): an operator
        can press Start while a downtime has not reached Odoo yet (a WAN outage); the
        machine made nothing until it ran, and the timer resumes then."""
        at = odoo_datetime(step.at)
        end_of_downtime = odoo_datetime(until) if until is not None else None
        for timer in list(timers):
            if end_of_downtime is not None and timer.start >= end_of_downtime:
                continue  # started after the machine ran again (a timer resumed, or new)
            timers.remove(timer)
            outcome.paused[step.machine].add(timer.pair)
            outcome.ever_paused[step.machine].add(timer.pair)
            end = at if timer.start <= at else timer.start
            plan.productivity.put(timer.key, {**timer.row, "date_end": end}, step.seq)

    def _resume(
        self,
        step: TimerStep,
        timers: list[_Timer],
        outcome: Outcome,
        plan: Plan,
        in_progress: set[int],
        loss: int,
    ) -> None:
        running = {t.pair for t in timers}
        for pair in sorted(outcome.paused[step.machine]):
            if pair[0] not in in_progress or pair in running:
                continue
            workorder, user = pair
            xid = external_id(self.agent_id, "timer", f"{step.event_id}_{workorder}_{user}")
            row = timer_row(step.workcenter_id, workorder, user, loss, step.at, step.event_id)
            plan.productivity.put(xid, row, step.seq)
            timers.append(_Timer(pair, xid, row["date_start"], row))
        outcome.paused[step.machine] = set()
