"""The Odoo destination, batch by batch, against the stand-in (default) or a real Odoo
(FLOORGATE_TEST_ODOO_URL / _DB / _KEY): the records it leaves are checked in Odoo."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config.rules import CountKind, MachineStateValue
from agent.forwarders.base import SendResult, Transient
from agent.forwarders.odoo.forwarder import OdooForwarder
from agent.forwarders.odoo.mapping import external_id
from buffer.rows import ClaimedEvent
from tests.forwarders.odoo.kit import Machine, OdooTarget, at, claimed, odoo_time
from tests.forwarders.odoo.standin import unique

RUNNING, DOWN, IDLE = MachineStateValue.RUNNING, MachineStateValue.DOWN, MachineStateValue.IDLE


@asynccontextmanager
async def connected(forwarder: OdooForwarder) -> AsyncIterator[OdooForwarder]:
    await forwarder.connect()
    try:
        yield forwarder
    finally:
        await forwarder.close()


async def send(
    forwarder: OdooForwarder, batch: list[ClaimedEvent], rejects: bool = False
) -> SendResult:
    """Send one batch; unless the test expects dead letters (``rejects``), none may come."""
    result = await forwarder.send(batch)
    assert not set(result.delivered) & set(result.rejected), "an event both delivered and rejected"
    assert rejects or not result.rejected, result.rejected
    return result


async def intervals(target: OdooTarget, workcenter: int) -> list[dict[str, Any]]:
    """The downtime records (not the work-order timers Odoo opens on Start)."""
    return await target.search_read(
        "mrp.workcenter.productivity",
        [["workcenter_id", "=", workcenter], ["workorder_id", "=", False]],
        ["date_start", "date_end", "loss_id"],
    )


def loss_names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["loss_id"][1] for row in rows]


async def test_a_downtime_is_one_record_opened_then_closed(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    async with connected(forwarder):
        first = [press.state(RUNNING, at(0)), press.state(DOWN, at(5), "equipment_failure")]
        result = await send(forwarder, claimed(*first))
        assert len(result.delivered) == 2 and not result.rejected
        state = await target.read("mrp.workcenter", [workcenter], ["working_state"])
        assert state[0]["working_state"] == "blocked"
        result = await send(forwarder, claimed(press.state(RUNNING, at(12))))
        assert len(result.delivered) == 1
    rows = await intervals(target, workcenter)
    assert [(r["date_start"], r["date_end"]) for r in rows] == [
        (odoo_time(at(5)), odoo_time(at(12)))
    ]
    assert loss_names(rows) == ["Equipment Failure"]
    state = await target.read("mrp.workcenter", [workcenter], ["working_state"])
    assert state[0]["working_state"] == "normal"


async def test_losses_follow_the_reason_then_the_state(target: OdooTarget, tmp_path: Path) -> None:
    code, workcenter = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    events = [
        press.state(RUNNING, at(0)),
        press.state(IDLE, at(1), "material_shortage"),
        press.state(RUNNING, at(2)),
        press.state(MachineStateValue.STOPPED, at(3), "setup"),
        press.state(RUNNING, at(4)),
        press.state(DOWN, at(5), "code_77"),
        press.state(RUNNING, at(6)),
        press.state(IDLE, at(7)),  # idle without a reason: planned time, not logged
        press.state(RUNNING, at(8)),
    ]
    async with connected(forwarder):
        result = await send(forwarder, claimed(*events))
    assert len(result.delivered) == len(events)
    rows = sorted(await intervals(target, workcenter), key=lambda r: r["date_start"])
    assert loss_names(rows) == [
        "Material Availability",
        "Setup and Adjustments",
        "Equipment Failure",
    ]
    assert all(r["date_end"] for r in rows)


async def test_running_periods_are_logged_as_fully_productive_when_asked(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(
        tmp_path, machine_map={"press1": {"work_center": code}}, log_running=True
    )
    events = [press.state(RUNNING, at(0)), press.state(DOWN, at(3)), press.state(RUNNING, at(4))]
    async with connected(forwarder):
        await send(forwarder, claimed(*events))
    rows = sorted(await intervals(target, workcenter), key=lambda r: r["date_start"])
    assert loss_names(rows) == [
        "Fully Productive Time",
        "Equipment Failure",
        "Fully Productive Time",
    ]
    assert [bool(r["date_end"]) for r in rows] == [True, True, False]


async def test_a_batch_sent_twice_leaves_odoo_as_if_sent_once(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=1000)
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    batch = claimed(
        press.state(RUNNING, at(0)),
        press.count(5, at(1)),
        press.state(DOWN, at(2)),
        press.alarm(True, at(2)),
        press.state(RUNNING, at(3)),
        press.count(7, at(4)),
        press.alarm(False, at(4), value=70.0),
    )
    async with connected(forwarder):
        for _ in range(2):
            result = await send(forwarder, batch)
            assert len(result.delivered) == len(batch) and not result.rejected
    # and once more after a restart (a crash between Odoo's answer and the ack)
    async with connected(
        target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    ) as again:
        await send(again, batch)
    assert len(await intervals(target, workcenter)) == 1
    workorder = await target.read("mrp.workorder", [order["workorder"]], ["qty_producing"])
    assert workorder[0]["qty_producing"] == 12
    requests = await target.search_read(
        "maintenance.request", [["name", "=", "press1: alarm hot"]], ["description"]
    )
    mine = [r for r in requests if batch[3].id in r["description"]]
    assert len(mine) == 1
    assert mine[0]["description"].count("Cleared at") == 1


async def test_counts_are_an_absolute_total_per_order_from_zero(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    first = await target.order(workcenter, qty=1000)
    # button_start pre-filled the whole quantity: not a count
    rows = await target.read("mrp.workorder", [first["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 1000
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    async with connected(forwarder):
        await send(forwarder, claimed(press.count(3, at(1)), press.count(4, at(2))))
        rows = await target.read("mrp.workorder", [first["workorder"]], ["qty_producing"])
        assert rows[0]["qty_producing"] == 7
        await target.call(
            "mrp.production",
            "button_mark_done",
            ids=[first["production"]],
            context={"skip_backorder": True},
        )
        second = await target.order(workcenter, qty=50)
        await send(forwarder, claimed(press.count(2, at(3))))
    rows = await target.read("mrp.workorder", [second["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 2


async def test_counts_with_no_work_order_wait_and_say_why(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    counts = claimed(press.count(3, at(1)))
    async with connected(forwarder):
        with pytest.raises(Transient) as caught:
            await send(forwarder, counts)
        assert "no work order in progress" in str(caught.value) and code in str(caught.value)
        order = await target.order(workcenter, qty=100)
        result = await send(forwarder, counts)
    assert result.delivered == [counts[0].seq]
    rows = await target.read("mrp.workorder", [order["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 3


async def test_downtimes_flow_while_the_same_machines_counts_wait(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    batch = claimed(
        press.state(RUNNING, at(0)),
        press.count(3, at(1)),
        press.state(DOWN, at(2)),
        press.count(4, at(3)),
        press.state(RUNNING, at(4)),
    )
    async with connected(forwarder):
        result = await send(forwarder, batch)
        assert sorted(result.delivered) == [batch[0].seq, batch[2].seq, batch[4].seq]
        assert not result.rejected
        order = await target.order(workcenter, qty=100)
        result = await send(forwarder, [batch[1], batch[3]])
    assert sorted(result.delivered) == [batch[1].seq, batch[3].seq]
    rows = await intervals(target, workcenter)
    assert [(r["date_start"], r["date_end"]) for r in rows] == [
        (odoo_time(at(2)), odoo_time(at(4)))
    ]
    rows = await target.read("mrp.workorder", [order["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 7


async def test_counts_with_no_work_order_can_be_dead_lettered(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, _ = await target.workcenter()
    press = Machine("press1")
    forwarder = target.forwarder(
        tmp_path, machine_map={"press1": {"work_center": code}}, no_work_order="dead_letter"
    )
    counts = claimed(press.count(3, at(1)))
    async with connected(forwarder):
        result = await send(forwarder, counts, rejects=True)
    assert list(result.rejected) == [counts[0].seq]
    assert "no work order in progress" in result.rejected[counts[0].seq]


async def test_a_missing_work_center_holds_only_that_machine(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    good, lost = Machine("press1"), Machine("press9")
    forwarder = target.forwarder(
        tmp_path,
        machine_map={"press1": {"work_center": code}, "press9": {"work_center": "NO-SUCH-WC"}},
    )
    batch = claimed(
        good.state(RUNNING, at(0)),
        lost.state(DOWN, at(0)),
        lost.state(RUNNING, at(1)),
        good.state(DOWN, at(1)),
    )
    async with connected(forwarder):
        result = await send(forwarder, batch)
        assert sorted(result.delivered) == [batch[0].seq, batch[3].seq]
        assert not result.rejected
        # The loop shows this as the destination's last error (not "not confirmed").
        assert result.waiting_reason is not None
        assert "press9" in result.waiting_reason and "NO-SUCH-WC" in result.waiting_reason
        with pytest.raises(Transient) as caught:
            await send(forwarder, batch[1:3])
    assert "work center 'NO-SUCH-WC' not found" in str(caught.value)
    assert len(await intervals(target, workcenter)) == 1


async def test_a_poison_row_is_dead_lettered_and_the_rest_go_through(
    target: OdooTarget, tmp_path: Path
) -> None:
    code_a, workcenter_a = await target.workcenter()
    code_b, workcenter_b = await target.workcenter()
    a, b = Machine("pressA"), Machine("pressB")
    forwarder = target.forwarder(
        tmp_path,
        machine_map={"pressA": {"work_center": code_a}, "pressB": {"work_center": code_b}},
    )
    async with connected(forwarder):
        # the first lookup caches every work center, B's too
        await send(forwarder, claimed(a.state(DOWN, at(0))))
        # B's work center disappears after it was cached: B's row names a dead id
        await target.sudo("mrp.workcenter", "unlink", ids=[workcenter_b])
        batch = claimed(a.state(RUNNING, at(1)), b.state(DOWN, at(1)), a.state(DOWN, at(2)))
        result = await send(forwarder, batch, rejects=True)
    assert sorted(result.delivered) == [batch[0].seq, batch[2].seq]
    assert list(result.rejected) == [batch[1].seq]
    reason = result.rejected[batch[1].seq]
    assert external_id("gw-test", "state", batch[1].id) in reason
    assert str(workcenter_b) in reason
    rows = sorted(await intervals(target, workcenter_a), key=lambda r: r["date_start"])
    assert [(r["date_start"], r["date_end"]) for r in rows] == [
        (odoo_time(at(0)), odoo_time(at(1))),
        (odoo_time(at(2)), False),
    ]


async def test_scrap_is_forced_by_default_and_left_draft_on_check(
    target: OdooTarget, tmp_path: Path
) -> None:
    code_a, workcenter_a = await target.workcenter()
    code_b, workcenter_b = await target.workcenter()
    order_a = await target.order(workcenter_a)
    order_b = await target.order(workcenter_b)
    a, b = Machine("pressA"), Machine("pressB")
    forwarder = target.forwarder(
        tmp_path,
        machine_map={
            "pressA": {"work_center": code_a},
            "pressB": {"work_center": code_b, "scrap": "check"},
        },
    )
    batch = claimed(a.count(2, at(1), CountKind.SCRAP), b.count(3, at(1), CountKind.SCRAP))
    async with connected(forwarder):
        result = await send(forwarder, batch)
        assert len(result.delivered) == 2
        await send(forwarder, batch)  # a repeat neither duplicates nor re-validates
    scraps = {}
    for order in (order_a, order_b):
        rows = await target.search_read(
            "stock.scrap", [["production_id", "=", order["production"]]], ["state", "scrap_qty"]
        )
        scraps[order["production"]] = [(r["state"], r["scrap_qty"]) for r in rows]
    assert scraps[order_a["production"]] == [("done", 2)]
    assert scraps[order_b["production"]] == [("draft", 3)]


async def backorders(target: OdooTarget, order: dict[str, Any]) -> list[float]:
    rows = await target.search_read(
        "mrp.production",
        [["product_id", "=", order["product"]], ["id", "!=", order["production"]]],
        ["product_qty"],
    )
    return [row["product_qty"] for row in rows]


async def test_finish_orders_closes_a_complete_order_without_a_backorder(
    target: OdooTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code, workcenter = await target.workcenter()
    order = await target.order(workcenter, qty=10)
    press = Machine("press1")
    forwarder = target.forwarder(
        tmp_path, machine_map={"press1": {"work_center": code}}, finish_orders=True
    )
    async with connected(forwarder):
        await send(forwarder, claimed(press.count(6, at(1))))
        rows = await target.read("mrp.production", [order["production"]], ["state"])
        assert rows[0]["state"] != "done"
        with caplog.at_level(logging.INFO, logger="agent.forwarders.odoo.forwarder"):
            await send(forwarder, claimed(press.count(4, at(2))))
    rows = await target.read("mrp.production", [order["production"]], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 10
    assert await backorders(target, order) == []  # nothing was left to make
    assert "order finished" in caplog.text and "not finished" not in caplog.text


async def test_an_order_signal_picks_the_order_and_its_change_finishes_it(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    first = await target.order(workcenter, qty=100)
    second = await target.order(workcenter, qty=100, start=False)
    press = Machine("press1")
    mapping = {"work_center": code, "order_signal": "press1.order"}
    forwarder = target.forwarder(tmp_path, machine_map={"press1": mapping}, finish_orders=True)
    async with connected(forwarder):
        await send(
            forwarder,
            claimed(
                press.sample("press1.order", first["name"], at(0)),
                press.count(5, at(1)),
                press.sample("press1.order", second["name"], at(2)),
                press.count(8, at(3)),
            ),
        )
        rows = await target.read("mrp.workorder", [second["workorder"]], ["qty_producing"])
        assert rows[0]["qty_producing"] == 8
        # the order signal drops to 0 (no order) in a batch without counts
        await send(forwarder, claimed(press.sample("press1.order", 0, at(4))))
    rows = await target.read("mrp.production", [first["production"]], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 5
    rows = await target.read("mrp.production", [second["production"]], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 8
    # each order left a real rest: a backorder for it
    assert await backorders(target, first) == [95]
    assert await backorders(target, second) == [92]


async def test_equipment_and_scrap_product_are_looked_up_by_reference(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    order = await target.order(workcenter)
    serial = unique("SN")
    equipment = await target.create("maintenance.equipment", {"name": "Press", "serial_no": serial})
    await target.follow("maintenance.equipment", equipment)
    reference = unique("SCRAP")
    product = await target.create("product.product", {"name": "Offcut", "default_code": reference})
    press = Machine("press1")
    mapping = {"work_center": code, "equipment": serial, "scrap_product": reference}
    forwarder = target.forwarder(tmp_path, machine_map={"press1": mapping})
    batch = claimed(press.alarm(True, at(1)), press.count(2, at(1), CountKind.SCRAP))
    async with connected(forwarder):
        result = await send(forwarder, batch)
    assert len(result.delivered) == 2
    requests = await target.search_read(
        "maintenance.request", [["equipment_id", "=", equipment]], ["priority", "maintenance_type"]
    )
    assert [(r["priority"], r["maintenance_type"]) for r in requests] == [("3", "corrective")]
    scraps = await target.search_read(
        "stock.scrap", [["production_id", "=", order["production"]]], ["product_id", "state"]
    )
    assert [(s["product_id"][0], s["state"]) for s in scraps] == [(product, "done")]


# -- work-order timers -------------------------------------------------------------------


async def timers(target: OdooTarget, workorder: int) -> list[dict[str, Any]]:
    rows = await target.search_read(
        "mrp.workcenter.productivity",
        [["workorder_id", "=", workorder]],
        ["date_start", "date_end", "user_id", "loss_type"],
    )
    return sorted(rows, key=lambda r: (r["date_start"], r["id"]))


def overlapping(rows: list[dict[str, Any]], now: str) -> list[tuple[int, int]]:
    """Pairs of productivity records whose time overlaps (an open one runs until now; a
    zero-length one counts no time)."""
    spans = sorted((r["date_start"], r["date_end"] or now, r["id"]) for r in rows)
    spans = [span for span in spans if span[1] > span[0]]
    return [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1]]


def seconds_after(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


@pytest.mark.parametrize("mode", ["pause_and_resume", "pause", "leave"])
async def test_a_downtime_ends_the_work_order_timers_at_the_machine_time(
    target: OdooTarget, tmp_path: Path, mode: str
) -> None:
    code, workcenter = await target.workcenter()
    order = await target.order(workcenter)  # an operator pressed Start: a timer runs
    (started,) = await timers(target, order["workorder"])
    t0 = datetime.strptime(started["date_start"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    press = Machine("press1")
    batch = claimed(
        press.state(RUNNING, seconds_after(t0, 1)),
        press.state(DOWN, seconds_after(t0, 3), "equipment_failure"),
        press.state(RUNNING, seconds_after(t0, 8)),
    )
    mapping = {"press1": {"work_center": code}}
    forwarder = target.forwarder(tmp_path, machine_map=mapping, work_order_timers=mode)
    async with connected(forwarder):
        for _ in range(2):  # a repeat changes nothing
            result = await send(forwarder, batch)
            assert len(result.delivered) == 3 and not result.rejected
    now = odoo_time(datetime.now(UTC) + timedelta(hours=1))
    got = [
        (r["date_start"], r["date_end"], r["user_id"][0])
        for r in await timers(target, order["workorder"])
    ]
    operator = started["user_id"][0]
    ended = (started["date_start"], odoo_time(seconds_after(t0, 3)), operator)
    expected = {
        "pause_and_resume": [ended, (odoo_time(seconds_after(t0, 8)), False, operator)],
        "pause": [ended],
        "leave": [(started["date_start"], False, operator)],
    }[mode]
    assert got == expected
    everything = await target.search_read(
        "mrp.workcenter.productivity",
        [["workcenter_id", "=", workcenter]],
        ["date_start", "date_end"],
    )
    if mode != "leave":
        assert overlapping(everything, now) == []
    else:
        assert overlapping(everything, now)  # what the other modes prevent


async def test_a_refused_count_is_out_of_the_total_and_counts_once_when_requeued(
    target: OdooTarget, tmp_path: Path
) -> None:
    code, workcenter = await target.workcenter()
    first = await target.order(workcenter, qty=100)
    press = Machine("press1")
    counted, late = press.count(5, at(1)), press.count(3, at(2))
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    async with connected(forwarder):
        await send(forwarder, claimed(counted))
        # `late` was assigned to the first order just before a crash (assignments are
        # stored before the write), and an operator finished that order meanwhile
        assert forwarder._state is not None
        forwarder._state.assign_counts([(late.id, first["workorder"], 3)])
        forwarder._state.commit()
        await target.sudo(
            "mrp.production",
            "button_mark_done",
            ids=[first["production"]],
            context={"skip_backorder": True, "skip_redirection": True},
        )
        result = await send(forwarder, claimed(late), rejects=True)
        assert list(result.rejected) == [int(late.sequence)], result
        assert f"work order {first['workorder']}" in result.rejected[int(late.sequence)]
        # the operator starts the next order and requeues the dead letter
        second = await target.order(workcenter, qty=100)
        result = await send(forwarder, claimed(late))
        assert result.delivered == [int(late.sequence)] and not result.rejected
        assert forwarder._state.total(first["workorder"]) == 5
    rows = await target.read("mrp.production", [first["production"]], ["state", "qty_produced"])
    assert rows[0]["state"] == "done" and rows[0]["qty_produced"] == 5
    rows = await target.read("mrp.workorder", [second["workorder"]], ["qty_producing"])
    assert rows[0]["qty_producing"] == 3  # counted once, where it was delivered


async def test_a_timer_started_during_a_late_downtime_runs_from_when_the_machine_ran(
    target: OdooTarget, tmp_path: Path
) -> None:
    # The WAN was down: the machine stopped, then an operator pressed Start (Odoo did not
    # know of the downtime, so the work center was not blocked). The downtime arrives
    # late, then the machine runs again.
    code, workcenter = await target.workcenter()
    order = await target.order(workcenter)
    (started,) = await timers(target, order["workorder"])
    t0 = datetime.strptime(started["date_start"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    press = Machine("press1")
    forwarder = target.forwarder(tmp_path, machine_map={"press1": {"work_center": code}})
    async with connected(forwarder):
        await send(
            forwarder, claimed(press.state(DOWN, seconds_after(t0, -10), "equipment_failure"))
        )
        rows = await timers(target, order["workorder"])
        assert [(r["date_start"], r["date_end"]) for r in rows] == [
            (started["date_start"], started["date_start"])  # it made nothing: zero length
        ]
        await send(forwarder, claimed(press.state(RUNNING, seconds_after(t0, 5))))
    rows = await timers(target, order["workorder"])
    assert [(r["date_start"], r["date_end"], r["user_id"][0]) for r in rows] == [
        (started["date_start"], started["date_start"], started["user_id"][0]),
        (odoo_time(seconds_after(t0, 5)), False, started["user_id"][0]),
    ]
    everything = await target.search_read(
        "mrp.workcenter.productivity",
        [["workcenter_id", "=", workcenter]],
        ["date_start", "date_end"],
    )
    assert overlapping(everything, odoo_time(datetime.now(UTC) + timedelta(hours=1))) == []
