"""Odoo's behaviour floorgate relies on, through floorgate's own transport.

Runs against the real Odoo 18 and 19 servers and against the stand-in: the stand-in is
kept only for faults a real server cannot be made to show, and this suite is where it
would show that it disagrees with the real shapes.
"""

from __future__ import annotations

import pytest

from agent.forwarders.base import Fatal
from agent.forwarders.odoo.config import OdooProtocol
from agent.forwarders.odoo.mapping import PRODUCTIVITY_COLUMNS, Row, existing_timer_row
from agent.forwarders.odoo.transport import CallRejected, OdooTransport, major_version
from tests.forwarders.odoo.kit import OdooTarget
from tests.forwarders.odoo.standin import unique

UTC_CONTEXT = {"tz": "UTC"}


@pytest.fixture
def target(any_target: OdooTarget) -> OdooTarget:
    return any_target


async def loss_id(target: OdooTarget, name: str) -> int:
    rows = await target.search_read(
        "mrp.workcenter.productivity.loss", [["name", "=", name]], ["id"]
    )
    return int(rows[0]["id"])


def productivity_row(xid: str, workcenter: int, loss: int, start: str, end: str) -> list[str]:
    values = {
        "workcenter_id/.id": str(workcenter),
        "loss_id/.id": str(loss),
        "date_start": start,
        "date_end": end,
        "description": "contract test",
    }
    return Row(xid, values).as_list(PRODUCTIVITY_COLUMNS)


async def test_server_version_and_protocol_are_detected(target: OdooTarget) -> None:
    assert target.rpc is not None
    assert target.rpc.server_version
    major = major_version(target.rpc.server_version)
    expected = OdooProtocol.JSON2 if major >= 19 else OdooProtocol.JSONRPC
    if target.protocol is not OdooProtocol.AUTO:
        expected = target.protocol  # configured, as a plant may keep JSON-RPC on 19
    assert target.rpc.protocol is expected


async def test_load_creates_then_updates_the_same_record(target: OdooTarget) -> None:
    _, workcenter = await target.workcenter()
    failure = await loss_id(target, "Equipment Failure")
    xid = f"floorgate.{unique('contract').replace('-', '_')}"
    opened = await target.call(
        "mrp.workcenter.productivity",
        "load",
        fields=PRODUCTIVITY_COLUMNS,
        data=[productivity_row(xid, workcenter, failure, "2026-03-02 06:00:00", "")],
        context=UTC_CONTEXT,
    )
    assert opened["messages"] == [] and len(opened["ids"]) == 1
    record = opened["ids"][0]
    state = await target.read("mrp.workcenter", [workcenter], ["working_state"])
    assert state[0]["working_state"] == "blocked"
    closed = await target.call(
        "mrp.workcenter.productivity",
        "load",
        fields=PRODUCTIVITY_COLUMNS,
        data=[
            productivity_row(xid, workcenter, failure, "2026-03-02 06:00:00", "2026-03-02 06:10:00")
        ],
        context=UTC_CONTEXT,
    )
    assert closed["ids"] == [record]
    rows = await target.read(
        "mrp.workcenter.productivity", [record], ["date_start", "date_end", "duration"]
    )
    assert rows[0]["date_start"] == "2026-03-02 06:00:00"
    assert rows[0]["date_end"] == "2026-03-02 06:10:00"
    state = await target.read("mrp.workcenter", [workcenter], ["working_state"])
    assert state[0]["working_state"] == "normal"


async def test_load_reads_datetimes_in_the_user_timezone_unless_the_context_says_utc(
    target: OdooTarget,
) -> None:
    _, workcenter = await target.workcenter()
    failure = await loss_id(target, "Equipment Failure")
    user = await target.call("res.users", "context_get")
    results = {}
    for context in (None, UTC_CONTEXT):
        xid = f"floorgate.{unique('tz').replace('-', '_')}"
        answer = await target.call(
            "mrp.workcenter.productivity",
            "load",
            fields=PRODUCTIVITY_COLUMNS,
            data=[productivity_row(xid, workcenter, failure, "2026-07-01 09:00:00", "")],
            context=context,
        )
        record = answer["ids"][0]
        rows = await target.read("mrp.workcenter.productivity", [record], ["date_start"])
        results[bool(context)] = rows[0]["date_start"]
    assert results[True] == "2026-07-01 09:00:00"
    if user.get("tz") == "Europe/Brussels":  # the stand-in's user; a real one may differ
        assert results[False] == "2026-07-01 07:00:00"


async def test_iso_datetimes_are_refused_with_a_value_error(target: OdooTarget) -> None:
    _, workcenter = await target.workcenter()
    failure = await loss_id(target, "Equipment Failure")
    for bad in ("2026-03-02T06:00:00", "2026-03-02 06:00:00Z", "2026-03-02 06:00:00.123456"):
        with pytest.raises(CallRejected) as caught:
            await target.call(
                "mrp.workcenter.productivity",
                "create",
                vals_list={"workcenter_id": workcenter, "loss_id": failure, "date_start": bad},
            )
        assert caught.value.error_name == "builtins.ValueError"


async def test_a_create_list_is_one_transaction(target: OdooTarget) -> None:
    name = unique("atomic")
    with pytest.raises(CallRejected):
        await target.call(
            "maintenance.request",
            "create",
            vals_list=[{"name": name}, {"name": name, "request_date": "not a date"}],
        )
    assert await target.search_read("maintenance.request", [["name", "=", name]], ["id"]) == []


async def test_load_refuses_the_whole_batch_and_names_the_failing_row(target: OdooTarget) -> None:
    name = unique("poison")
    columns = ["id", "name", "request_date"]
    data = [
        [f"floorgate.{unique('a').replace('-', '_')}", name, "2026-03-02"],
        [f"floorgate.{unique('b').replace('-', '_')}", name, "2026-13-45"],
        [f"floorgate.{unique('c').replace('-', '_')}", name, "2026-03-02"],
    ]
    answer = await target.call(
        "maintenance.request", "load", fields=columns, data=data, context=UTC_CONTEXT
    )
    assert answer["ids"] is False
    assert [m["record"] for m in answer["messages"] if m["type"] == "error"] == [1]
    assert await target.search_read("maintenance.request", [["name", "=", name]], ["id"]) == []


async def test_a_blocked_work_center_refuses_button_start(target: OdooTarget) -> None:
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter, start=False)
    failure = await loss_id(target, "Equipment Failure")
    record = await target.create(
        "mrp.workcenter.productivity",
        {"workcenter_id": workcenter, "loss_id": failure, "date_start": "2026-03-02 06:00:00"},
    )
    assert record
    with pytest.raises(CallRejected) as caught:
        await target.call("mrp.workorder", "button_start", ids=[order["workorder"]])
    assert caught.value.error_name == "odoo.exceptions.UserError"


async def test_button_start_prefills_the_whole_quantity(target: OdooTarget) -> None:
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=1000)
    rows = await target.read("mrp.workorder", [order["workorder"]], ["qty_producing", "state"])
    assert rows[0]["state"] == "progress"
    assert rows[0]["qty_producing"] == 1000


async def test_button_mark_done_returns_a_wizard_unless_told_to_backorder(
    target: OdooTarget,
) -> None:
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=100)
    await target.call(
        "mrp.workorder", "write", ids=[order["workorder"]], vals={"qty_producing": 40}
    )
    wizard = await target.call("mrp.production", "button_mark_done", ids=[order["production"]])
    assert isinstance(wizard, dict) and wizard["res_model"] == "mrp.production.backorder"
    context = {
        "skip_backorder": True,
        "skip_redirection": True,
        "mo_ids_to_backorder": [order["production"]],
    }
    done = await target.call(
        "mrp.production", "button_mark_done", ids=[order["production"]], context=context
    )
    assert done is True
    rows = await target.read("mrp.production", [order["production"]], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 40
    backorders = await target.search_read(
        "mrp.production",
        [["product_id", "=", order["product"]], ["state", "!=", "done"]],
        ["product_qty"],
    )
    assert [b["product_qty"] for b in backorders] == [60]


async def test_scrap_of_a_product_not_in_stock_returns_the_insufficient_quantity_wizard(
    target: OdooTarget,
) -> None:
    product = await target.product()
    scrap = await target.create("stock.scrap", {"product_id": product, "scrap_qty": 3})
    answer = await target.call("stock.scrap", "action_validate", ids=[scrap])
    assert isinstance(answer, dict)
    assert answer["res_model"] == "stock.warn.insufficient.qty.scrap"
    rows = await target.read("stock.scrap", [scrap], ["state"])
    assert rows[0]["state"] == "draft"
    await target.call("stock.scrap", "do_scrap", ids=[scrap])
    rows = await target.read("stock.scrap", [scrap], ["state"])
    assert rows[0]["state"] == "done"


async def test_a_wrong_api_key_is_fatal(target: OdooTarget) -> None:
    transport = OdooTransport(
        url=target.url,
        database=target.database,
        api_key="0" * 40,
        protocol=OdooProtocol.AUTO,
        login=target.login,
        timeout=60.0,
    )
    with pytest.raises(Fatal):
        await transport.open()
        await transport.call("res.users", "context_get")
    await transport.close()


async def test_one_record_create_answers_an_id_on_jsonrpc_and_a_list_on_json2(
    target: OdooTarget,
) -> None:
    assert target.admin is not None
    answer = await target.sudo("maintenance.request", "create", vals_list={"name": unique("one")})
    if target.admin.protocol is OdooProtocol.JSON2:
        assert isinstance(answer, list) and len(answer) == 1
    else:
        assert isinstance(answer, int) and not isinstance(answer, bool)


async def test_a_work_order_accepts_qty_producing_through_its_renamed_write(
    target: OdooTarget,
) -> None:
    # mrp.workorder overrides write(self, values): a named `vals` is refused on 18
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=50)
    assert await target.call(
        "mrp.workorder", "write", ids=[order["workorder"]], vals={"qty_producing": 7}
    )
    rows = await target.read("mrp.workorder", [order["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 7


async def test_a_backorder_of_nothing_is_refused_and_none_is_needed(target: OdooTarget) -> None:
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=20)
    await target.call(
        "mrp.workorder", "write", ids=[order["workorder"]], vals={"qty_producing": 20}
    )
    production = order["production"]
    with pytest.raises(CallRejected):
        await target.call(
            "mrp.production",
            "button_mark_done",
            ids=[production],
            context={"skip_backorder": True, "mo_ids_to_backorder": [production]},
        )
    done = await target.call(
        "mrp.production",
        "button_mark_done",
        ids=[production],
        context={"skip_backorder": True, "skip_redirection": True},
    )
    assert done is True
    rows = await target.read("mrp.production", [production], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 20


async def test_a_backorder_comes_back_as_an_action_unless_redirection_is_skipped(
    target: OdooTarget,
) -> None:
    _, workcenter = await target.workcenter()
    answers = []
    for extra in ({}, {"skip_redirection": True}):
        order = await target.order(workcenter, qty=30)
        await target.call(
            "mrp.workorder", "write", ids=[order["workorder"]], vals={"qty_producing": 10}
        )
        context = {"skip_backorder": True, "mo_ids_to_backorder": [order["production"]], **extra}
        answers.append(
            await target.call(
                "mrp.production", "button_mark_done", ids=[order["production"]], context=context
            )
        )
        rows = await target.read("mrp.production", [order["production"]], ["state"])
        assert rows[0]["state"] == "done"
    action, plain = answers
    assert isinstance(action, dict) and action["res_model"] == "mrp.production"
    assert plain is True


async def test_button_start_opens_a_timer_that_a_write_of_date_end_closes(
    target: OdooTarget,
) -> None:
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter)
    timers = await target.search_read(
        "mrp.workcenter.productivity",
        [["workorder_id", "=", order["workorder"]], ["date_end", "=", False]],
        ["loss_type", "date_start", "user_id"],
    )
    assert len(timers) == 1 and timers[0]["loss_type"] == "productive"
    end = timers[0]["date_start"]
    assert await target.call(
        "mrp.workcenter.productivity", "write", ids=[timers[0]["id"]], vals={"date_end": end}
    )
    rows = await target.read("mrp.workcenter.productivity", [timers[0]["id"]], ["date_end"])
    assert rows[0]["date_end"] == end
    rows = await target.read("mrp.workorder", [order["workorder"]], ["state"])
    assert rows[0]["state"] == "progress"  # ending its timer does not stop the work order


async def test_a_maintenance_request_description_is_html(target: OdooTarget) -> None:
    xid = f"floorgate.{unique('html').replace('-', '_')}"
    text = "<p>Alarm hot on press1</p><p>Cleared at 2026-03-02 06:10:00 UTC</p>"
    answer = await target.call(
        "maintenance.request",
        "load",
        fields=["id", "name", "description"],
        data=[[xid, unique("html"), text]],
        context=UTC_CONTEXT,
    )
    rows = await target.read("maintenance.request", answer["ids"], ["description"])
    assert rows[0]["description"] == text


async def test_one_load_ends_a_timer_by_database_id_and_creates_by_external_id(
    target: OdooTarget,
) -> None:
    """Downtimes and work-order timers go in one productivity load(): rows with an
    external id create or update, rows with a database id (.id) update that record."""
    _, workcenter = await target.workcenter()
    order = await target.order(workcenter)
    (timer,) = await target.search_read(
        "mrp.workcenter.productivity",
        [["workorder_id", "=", order["workorder"]]],
        ["workcenter_id", "workorder_id", "user_id", "loss_id", "date_start", "description"],
    )
    failure = await loss_id(target, "Equipment Failure")
    end = timer["date_start"]
    ended = Row(f"timer {timer['id']}", {**existing_timer_row(timer), "date_end": end})
    xid = f"floorgate.{unique('mixed').replace('-', '_')}"
    answer = await target.call(
        "mrp.workcenter.productivity",
        "load",
        fields=PRODUCTIVITY_COLUMNS,
        data=[
            ended.as_list(PRODUCTIVITY_COLUMNS),
            productivity_row(xid, workcenter, failure, end, ""),
        ],
        context=UTC_CONTEXT,
    )
    assert answer["messages"] == [] and answer["ids"][0] == timer["id"], answer
    rows = await target.read(
        "mrp.workcenter.productivity", answer["ids"], ["date_end", "workorder_id", "user_id"]
    )
    assert rows[0]["date_end"] == end and rows[0]["workorder_id"][0] == order["workorder"]
    assert rows[0]["user_id"] == timer["user_id"]  # kept: the row carries it
    assert rows[1]["date_end"] is False and rows[1]["workorder_id"] is False
