"""Production events -> ``load()`` rows, one table per Odoo model.

Every row carries an external id made from the event id
(``floorgate.<agent id>_<kind>_<event id>``, hyphens written as underscores), so the same event
sent twice updates the same record, and an integrator can go from an Odoo record to the
machine event and back. Rows are merged by external id within a flush: an interval
opened and closed in the same batch is sent once, in its latest state (``load()`` is
last-write-wins, so an "open" must never follow its "close").

Values are strings, as ``load()`` reads them (datetimes naive UTC
``YYYY-MM-DD HH:MM:SS``; the call passes ``context={"tz": "UTC"}`` because ``load()``
otherwise reads datetimes in the user's timezone).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.pipeline.events import AlarmData, MachineStateData

XID_MODULE = "floorgate"
PRODUCTIVITY = "mrp.workcenter.productivity"
REQUEST = "maintenance.request"
SCRAP = "stock.scrap"
WORKORDER = "mrp.workorder"
PRODUCTION = "mrp.production"

# One table for downtimes and work-order timers: a row has an external id (``id``: the
# agent's own records) or a database id (``.id``: a timer Odoo opened, being ended).
PRODUCTIVITY_COLUMNS = [
    "id",
    ".id",
    "workcenter_id/.id",
    "loss_id/.id",
    "workorder_id/.id",
    "user_id/.id",
    "date_start",
    "date_end",
    "description",
]
REQUEST_COLUMNS = [
    "id",
    "name",
    "equipment_id/.id",
    "maintenance_type",
    "request_date",
    "priority",
    "description",
]
TIMER_FIELDS = ["workcenter_id", "workorder_id", "user_id", "loss_id", "date_start", "description"]
TOTAL_COLUMNS = [".id", "qty_producing"]  # existing work orders, by database id
SCRAP_COLUMNS = ["id", "product_id/.id", "scrap_qty", "production_id/.id", "workorder_id/.id"]


def odoo_datetime(value: datetime) -> str:
    """Naive UTC with second precision: the only datetime form Odoo accepts."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def odoo_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def external_id(agent_id: str, kind: str, event_id: str) -> str:
    name = f"{agent_id}_{kind}_{event_id}".replace("-", "_")  # plain identifier characters
    return f"{XID_MODULE}.{name}"


@dataclass
class Row:
    xid: str
    values: dict[str, str]
    seqs: list[int] = field(default_factory=list)

    def as_list(self, columns: list[str]) -> list[str]:
        """The row in ``columns`` order; a row of an existing record by database id
        (``.id``) has no external id (``xid`` is only its name in messages)."""
        by_id = bool(self.values.get(".id"))
        return [
            ("" if by_id else self.xid) if column == "id" else self.values.get(column, "")
            for column in columns
        ]


@dataclass
class LoadTable:
    """The rows of one model for one flush, merged by external id (latest wins)."""

    model: str
    columns: list[str]
    rows: dict[str, Row] = field(default_factory=dict)

    def put(self, xid: str, values: dict[str, str], seq: int) -> None:
        row = self.rows.get(xid)
        if row is None:
            self.rows[xid] = Row(xid, dict(values), [seq])
            return
        row.values.update(values)
        if seq not in row.seqs:
            row.seqs.append(seq)

    def drop(self, xid: str) -> None:
        self.rows.pop(xid, None)


def interval_row(
    workcenter_id: int,
    loss_id: int,
    start: datetime,
    end: datetime | None,
    machine: str,
    state: str,
    reason: str | None,
    event_id: str,
) -> dict[str, str]:
    """A productivity record; ``end`` None leaves it open (the work center shows blocked
    for availability and quality losses)."""
    why = f" ({reason})" if reason else ""
    return {
        "workcenter_id/.id": str(workcenter_id),
        "loss_id/.id": str(loss_id),
        "date_start": odoo_datetime(start),
        "date_end": "" if end is None else odoo_datetime(end),
        "description": f"{machine} {state}{why} — floorgate event {event_id}",
    }


def timer_row(
    workcenter_id: int,
    workorder_id: int,
    user_id: int,
    loss_id: int,
    start: datetime,
    event_id: str,
) -> dict[str, str]:
    """A work-order timer opened again when the machine runs (see ``odoo_timers``)."""
    return {
        "workcenter_id/.id": str(workcenter_id),
        "workorder_id/.id": str(workorder_id),
        "user_id/.id": str(user_id) if user_id else "",
        "loss_id/.id": str(loss_id),
        "date_start": odoo_datetime(start),
        "date_end": "",
        "description": f"resumed by floorgate when the machine ran again — event {event_id}",
    }


def existing_timer_row(record: dict[str, Any]) -> dict[str, str]:
    """A timer Odoo opened (read with TIMER_FIELDS), as a row that keeps all it has: a
    ``load()`` row sets every column, so the row to end it must carry them."""

    def many2one(name: str) -> str:
        value = record.get(name)
        return str(value[0]) if value else ""

    return {
        ".id": str(record["id"]),
        "workcenter_id/.id": many2one("workcenter_id"),
        "loss_id/.id": many2one("loss_id"),
        "workorder_id/.id": many2one("workorder_id"),
        "user_id/.id": many2one("user_id"),
        "date_start": str(record["date_start"]),
        "date_end": "",
        "description": str(record.get("description") or ""),
    }


def closing_times(data: MachineStateData) -> tuple[datetime, datetime] | None:
    """Start and end of the interval this state event closes, when there is one."""
    if data.previous_state is None or data.previous_since is None:
        return None
    return data.previous_since, data.since


def request_row(
    data: AlarmData, event_id: str, time: datetime, equipment_id: int | None, priority: str
) -> dict[str, str]:
    limit = "" if data.limit is None else f", limit {data.limit:g}"
    return {
        "name": f"{data.machine}: alarm {data.alarm}",
        "equipment_id/.id": "" if equipment_id is None else str(equipment_id),
        "maintenance_type": "corrective",
        "request_date": odoo_date(time),
        "priority": priority,
        "description": paragraph(
            f"Alarm {data.alarm} on {data.machine} ({data.signal} = {data.value}{limit}, "
            f"severity {data.severity.value}) raised at {odoo_datetime(time)} UTC — "
            f"floorgate event {event_id}"
        ),
    }


def paragraph(text: str) -> str:
    """``maintenance.request.description`` is an HTML field: plain text loses its line
    breaks in Odoo's form, and a ``<`` in a signal name would be markup."""
    return f"<p>{html.escape(text, quote=False)}</p>"


def cleared_note(
    row: dict[str, str], data: AlarmData, event_id: str, time: datetime
) -> dict[str, str]:
    note = paragraph(
        f"Cleared at {odoo_datetime(time)} UTC ({data.signal} = {data.value}) — "
        f"floorgate event {event_id}"
    )
    return {**row, "description": row.get("description", "") + note}


def scrap_row(
    product_id: int, quantity: int, production_id: int | None, workorder_id: int | None
) -> dict[str, str]:
    return {
        "product_id/.id": str(product_id),
        "scrap_qty": str(quantity),
        "production_id/.id": "" if production_id is None else str(production_id),
        "workorder_id/.id": "" if workorder_id is None else str(workorder_id),
    }


def order_name(template: str, value: object) -> str | None:
    """The manufacturing-order name for an order signal's value (None: no order).

    A number read as text ("42") or as a whole float (42.0) is formatted as an integer,
    so ``WH/MO/{value:05d}`` works whatever the signal's type; a value the template
    cannot format is used as it is."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    try:
        return template.format(value=value)
    except (ValueError, IndexError, KeyError):
        return str(value)
