"""Odoo destination: machine states, counts, scrap and alarms become Odoo records,
exactly once.

One flush (one claimed batch) is a handful of calls, whatever its size:

1. ``mrp.workcenter.productivity.load()`` — every interval opened or closed in the batch,
   one row per interval in its latest state (down/idle/setup -> a loss; optionally
   running -> Fully Productive Time);
2. ``maintenance.request.load()`` — alarms raised, and the cleared note on them;
3. ``mrp.workorder.load()`` of ``qty_producing`` by database id for every work order
   counted — an absolute total of the events applied to it (see ``odoo_state``), never
   read-add-write;
4. ``stock.scrap.load()`` then ``do_scrap`` / ``action_validate`` (per machine config);
5. ``mrp.production.button_mark_done`` (``finish_orders``), a backorder only for a rest.

Between 1 and 2, work-order timers on a work center that goes down are ended at the
downtime's start and resumed when it runs again (``odoo_timers``).

Each call is repeat-safe (external ids with the event id, absolute totals, local record
of what was closed, validated and finished), so when anything fails transiently the
whole batch is simply sent again. A ``load()`` refused because of one row is sent again
without that row; the row's events are dead-lettered with Odoo's message. A batch that
fails the RPC as a whole is split in halves until the poison row is alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agent.common.secrets import SecretError, read_secret
from agent.config.models import AgentSection
from agent.forwarders.base import Fatal, ForwardError, NotConnected, SendResult, Transient
from agent.forwarders.odoo.config import KEY_EXPIRY_WARNING_DAYS, OdooDestinationConfig, ScrapMode
from agent.forwarders.odoo.mapping import (
    PRODUCTION,
    SCRAP,
    TOTAL_COLUMNS,
    WORKORDER,
    LoadTable,
    Row,
)
from agent.forwarders.odoo.master import MasterData
from agent.forwarders.odoo.plan import Decoded, Plan, Planner
from agent.forwarders.odoo.state import OdooState
from agent.forwarders.odoo.timers import TimerKeeper
from agent.forwarders.odoo.transport import CallRejected, OdooTransport
from agent.pipeline.events import Event
from buffer.rows import ClaimedEvent

log = logging.getLogger(__name__)

LOAD_CONTEXT = {"tz": "UTC"}  # load() reads datetimes in the user's timezone otherwise
WIZARD_FIELD = "res_model"
SAFE_TIMEOUT = 60
REFUSED = object()  # a guarded call that Odoo refused


class OdooForwarder:
    def __init__(self, config: OdooDestinationConfig, agent: AgentSection) -> None:
        self.name = config.name
        self.config = config
        self.agent_id = agent.id
        self.state_path = agent.state_dir / f"odoo-{config.name}.db"
        self.where = f"destination {config.name} ({config.url} db {config.database})"
        self.transport: OdooTransport | None = None
        self._state: OdooState | None = None
        self._master: MasterData | None = None
        self._last_hold: str | None = None
        self._warned_timeout = False

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        try:
            key = read_secret(self.config.api_key)
        except SecretError as exc:
            raise Fatal(f"{self.where}: api_key: {exc}") from None
        transport = OdooTransport(
            url=self.config.url,
            database=self.config.database,
            api_key=key,
            protocol=self.config.protocol,
            login=self.config.login,
            timeout=self.config.timeout,
            ca_file=self.config.ca_file,
            where=self.where,
        )
        await transport.open()  # closes itself when it fails
        self.transport = transport
        try:
            await self._warn_key_expiry(transport)
        except ForwardError as exc:  # only a warning: never a reason not to deliver
            log.debug("api key expiry not checked destination=%s error=%s", self.name, exc)
        if self.config.timeout < SAFE_TIMEOUT and not self._warned_timeout:
            self._warned_timeout = True
            log.warning(
                "odoo timeout is short destination=%s timeout=%gs: Odoo retries conflicts "
                "for ~30 s itself; below %ds a slow success looks like a failure",
                self.name,
                self.config.timeout,
                SAFE_TIMEOUT,
            )
        if self._state is None:
            self._state = OdooState(self.state_path)
        if self._master is None:
            self._master = MasterData(transport, self.config.master_refresh)
        self._master.use(transport)
        log.info(
            "odoo connected destination=%s version=%s protocol=%s",
            self.name,
            transport.server_version,
            transport.protocol.value,
        )

    async def _warn_key_expiry(self, transport: OdooTransport) -> None:
        expiry = await transport.key_expiry()
        if expiry is None:
            return
        days = (expiry - datetime.now(UTC)).total_seconds() / 86400
        if days < KEY_EXPIRY_WARNING_DAYS:
            log.warning(
                "odoo api key expires soon destination=%s expires=%s days_left=%.1f "
                "next=create-a-new-key-and-update-%s",
                self.name,
                expiry.isoformat(),
                days,
                self.config.api_key.describe().replace(" ", "-"),
            )

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.close()
        state, self._state = self._state, None
        if state is not None:
            state.close()

    # -- send --------------------------------------------------------------------------

    async def send(self, batch: Sequence[ClaimedEvent]) -> SendResult:
        if not batch:
            return SendResult()
        if self.transport is None or self._state is None or self._master is None:
            raise NotConnected(f"{self.where}: not connected")
        result = SendResult()
        decoded: list[Decoded] = []
        for claimed in batch:
            try:
                decoded.append(Decoded(claimed.seq, Event.model_validate_json(claimed.payload)))
            except ValidationError as exc:
                result.rejected[claimed.seq] = f"not a valid floorgate event: {exc}"
        planner = Planner(self.config, self.agent_id, self._master, self._state, self.transport)
        self._state.begin()
        try:
            plan = await planner.plan(decoded)
            self._report_holds(plan)
            if plan.held and not plan.planned and not result.rejected:
                raise Transient(f"{self.where}: events wait: " + "; ".join(plan.held.values()))
            await self._execute(plan)
        except CallRejected as exc:
            # Refusals that are an event's fault are caught per record; one reaching here
            # refused a lookup (e.g. missing access rights): the events are not to blame.
            raise Transient(
                f"{self.where}: Odoo refused a lookup, events wait: {exc} (check the "
                "integration user's access rights and installed apps)"
            ) from None
        finally:
            # What was recorded stays true whatever Odoo answered (all of it is keyed by
            # event id and repeat-safe), so it is kept in every case.
            self._state.commit()
        result.rejected.update(plan.rejected)
        result.delivered = [seq for seq in plan.planned if seq not in result.rejected]
        if plan.held:
            result.waiting_reason = "; ".join(f"{m}: {why}" for m, why in sorted(plan.held.items()))
        return result

    def _report_holds(self, plan: Plan) -> None:
        summary = "; ".join(f"{m}: {why}" for m, why in sorted(plan.held.items())) or None
        if summary != self._last_hold:
            if summary:
                log.warning("odoo events wait destination=%s why=%r", self.name, summary)
            elif self._last_hold:
                log.info("odoo events flow again destination=%s", self.name)
            self._last_hold = summary

    async def _execute(self, plan: Plan) -> None:
        assert self._state is not None
        assert self.transport is not None and self._master is not None
        timers = TimerKeeper(self.config, self.agent_id, self.transport, self._state, self._master)
        paused = await timers.prepare(plan)  # timer rows join the downtime rows
        await self._load_all(plan.productivity, plan)
        closed = [x for x in plan.closes if x in plan.productivity.rows]
        self._state.mark_closed(closed)
        timers.settle(paused, plan)
        await self._load_all(plan.requests, plan)
        self._state.assign_counts(plan.assignments)
        self._state.commit()  # assignments are durable before any total is written
        self._state.begin()
        await self._write_totals(plan)
        await self._scraps(plan)
        await self._finish(plan)
        for machine, order in plan.orders.items():
            self._state.set_order(machine, order)

    # -- load() with poison-row isolation ----------------------------------------------

    async def _load_all(self, table: LoadTable, plan: Plan) -> dict[str, int]:
        """Load every row; rows Odoo refuses are dropped from ``table`` and their events
        rejected. Returns external id -> database id of the rows loaded."""
        if not table.rows:
            return {}
        ids = await self._load_rows(table, list(table.rows.values()), plan)
        for xid in [x for x in table.rows if x not in ids]:
            table.drop(xid)
        return ids

    async def _load_rows(self, table: LoadTable, rows: list[Row], plan: Plan) -> dict[str, int]:
        assert self.transport is not None
        while rows:
            data = [row.as_list(table.columns) for row in rows]
            try:
                answer = await self.transport.call(
                    table.model, "load", fields=table.columns, data=data, context=LOAD_CONTEXT
                )
            except CallRejected as exc:
                if len(rows) == 1:
                    self._reject(rows, str(exc), plan)
                    return {}
                middle = len(rows) // 2  # halves in order: per-machine order holds
                first = await self._load_rows(table, rows[:middle], plan)
                return first | await self._load_rows(table, rows[middle:], plan)
            ids = answer.get("ids") if isinstance(answer, dict) else None
            if ids:
                return {row.xid: int(i) for row, i in zip(rows, ids, strict=False)}
            rows = self._drop_failed(table.model, rows, answer, plan)
        return {}

    def _drop_failed(self, model: str, rows: list[Row], answer: Any, plan: Plan) -> list[Row]:
        messages = answer.get("messages", []) if isinstance(answer, dict) else []
        failed: dict[int, str] = {}
        for message in messages or []:
            if message.get("type") != "error":
                continue
            index = message.get("record")
            if isinstance(index, int) and 0 <= index < len(rows):
                field = f" (field {message['field']})" if message.get("field") else ""
                failed.setdefault(index, f"{model}.load: {message.get('message')}{field}")
        if not failed:  # refused without naming a row: nothing can be isolated
            self._reject(rows, f"{model}.load refused the batch: {messages!r}"[:500], plan)
            return []
        for index, reason in failed.items():
            self._reject([rows[index]], reason, plan)
        return [row for i, row in enumerate(rows) if i not in failed]

    @staticmethod
    def _reject(rows: list[Row], reason: str, plan: Plan) -> None:
        for row in rows:
            for seq in row.seqs:
                plan.rejected.setdefault(seq, f"{row.xid}: {reason}")

    # -- counts, scrap, orders ---------------------------------------------------------

    async def _write_totals(self, plan: Plan) -> None:
        """Every counted work order's absolute total in one ``load()`` by database id
        (Odoo runs the work order's own write for each row; one call, not one per order).
        A row Odoo refuses dead-letters that order's counts of this flush."""
        assert self.transport is not None and self._state is not None
        table = LoadTable(WORKORDER, TOTAL_COLUMNS)
        totals: dict[int, int] = {}
        for workorder_id, seqs in plan.totals.items():
            workorder = plan.workorders[workorder_id]
            if workorder.closed:
                reason = (
                    f"{workorder.production} / {workorder.name} is {workorder.state} in Odoo: "
                    "a quantity written there counts nowhere"
                )
                self._reject_counts(plan, workorder_id, seqs, reason)
                continue
            totals[workorder_id] = self._state.total(workorder_id)
            values = {".id": str(workorder_id), "qty_producing": str(totals[workorder_id])}
            for seq in seqs:
                table.put(f"work order {workorder_id}", values, seq)
        loaded = await self._load_all(table, plan)
        for workorder_id, total in totals.items():
            seqs = plan.totals[workorder_id]
            if f"work order {workorder_id}" not in loaded:
                self._reject_counts(plan, workorder_id, seqs, "Odoo refused the quantity")
                continue
            workorder = plan.workorders[workorder_id]
            if self.config.finish_orders and 0 < workorder.qty_production <= total:
                plan.finish[workorder.production_id].extend(seqs)

    def _reject_counts(self, plan: Plan, workorder_id: int, seqs: list[int], reason: str) -> None:
        assert self._state is not None
        for seq in seqs:
            plan.rejected.setdefault(seq, f"work order {workorder_id}: {reason}")
        # Dead letters are not in any total: the running total keeps agreeing with what
        # was delivered, and a requeued count is assigned afresh, once.
        self._state.unassign([plan.count_events[seq] for seq in seqs])

    async def _scraps(self, plan: Plan) -> None:
        """Create the scraps, then validate the drafts among them (Odoo's state is read
        first: a repeat never validates a scrap twice)."""
        assert self.transport is not None and self._state is not None
        ids = await self._load_all(plan.scraps, plan)
        todo = {xid: i for xid, i in ids.items() if plan.scrap_modes[xid] is not ScrapMode.DRAFT}
        if not todo:
            return
        rows = await self.transport.call(SCRAP, "read", ids=sorted(todo.values()), fields=["state"])
        drafts = {int(r["id"]) for r in rows if r.get("state") == "draft"}
        done = [xid for xid, i in todo.items() if i not in drafts]
        forced = {
            x: i for x, i in todo.items() if i in drafts and plan.scrap_modes[x] is ScrapMode.FORCE
        }
        if forced and await self._guarded("do_scrap", forced, plan) is not REFUSED:
            done.extend(forced)
        for xid, scrap_id in todo.items():
            if scrap_id not in drafts or plan.scrap_modes[xid] is not ScrapMode.CHECK:
                continue
            answer = await self._guarded("action_validate", {xid: scrap_id}, plan)
            if isinstance(answer, dict) and answer.get(WIZARD_FIELD):
                log.warning(
                    "scrap left in draft destination=%s scrap=%s odoo_id=%d wizard=%s "
                    "next=validate-it-in-odoo",
                    self.name,
                    xid,
                    scrap_id,
                    answer[WIZARD_FIELD],
                )
            elif answer is not REFUSED:
                done.append(xid)
        self._state.mark_done("scrap", done)

    async def _guarded(self, method: str, scraps: dict[str, int], plan: Plan) -> Any:
        """Call a stock.scrap method; a refusal rejects the events of those scraps only."""
        assert self.transport is not None
        try:
            return await self.transport.call(SCRAP, method, ids=sorted(scraps.values()))
        except CallRejected as exc:
            rows = [plan.scraps.rows[x] for x in scraps if x in plan.scraps.rows]
            self._reject(rows, str(exc), plan)
            return REFUSED

    async def _finish(self, plan: Plan) -> None:
        """Close each order once: a backorder only for a real rest (Odoo refuses one of
        nothing), and success judged by the order's state afterwards, not by the answer
        (a backorder comes back as a window action; a wizard means not finished)."""
        assert self.transport is not None and self._state is not None
        for production_id, seqs in plan.finish.items():
            ref = str(production_id)
            if self._state.is_done("order", ref):
                continue
            order = await self._production(production_id)
            if order.get("state") not in ("done", "cancel"):
                answer = await self._mark_done(production_id, order)
                order = await self._production(production_id)
                if order.get("state") != "done":
                    wizard = answer.get(WIZARD_FIELD) if isinstance(answer, dict) else None
                    log.warning(
                        "order not finished destination=%s production=%d state=%s why=%s "
                        "next=finish-in-odoo",
                        self.name,
                        production_id,
                        order.get("state"),
                        wizard or answer,
                    )
                    continue
                log.info(
                    "order finished destination=%s production=%d events=%d",
                    self.name,
                    production_id,
                    len(seqs),
                )
            self._state.mark_done("order", [ref])

    async def _production(self, production_id: int) -> dict[str, Any]:
        assert self.transport is not None
        rows = await self.transport.call(
            PRODUCTION,
            "read",
            ids=[production_id],
            fields=["state", "product_qty", "qty_producing"],
        )
        return dict(rows[0]) if rows else {}

    async def _mark_done(self, production_id: int, order: dict[str, Any]) -> Any:
        assert self.transport is not None
        rest = float(order.get("product_qty") or 0) - float(order.get("qty_producing") or 0)
        context: dict[str, Any] = {"skip_backorder": True, "skip_redirection": True}
        if rest > 0:
            context["mo_ids_to_backorder"] = [production_id]
        try:
            return await self.transport.call(
                PRODUCTION, "button_mark_done", ids=[production_id], context=context
            )
        except CallRejected as exc:
            return str(exc)
