"""End to end on a real Odoo: the simulated line (real Modbus TCP) -> agent process -> real
Odoo 18 (JSON-RPC) and 19 (JSON-2), as the non-admin integration user, for a few minutes,
with the agent SIGKILLed twice and Odoo stopped and started once.

Odoo's records are compared with the *simulator's* truth (its part totals and its state
transitions with their wall-clock times), not with the agent's events:

- each work order's ``qty_producing`` equals the parts the machine made, exactly;
- one productivity record per downtime, with the mapped loss and start / end within 1 s;
- the work-order timers an operator's Start opened are ended at each downtime and
  resumed when the machine runs again: no two records of a work center overlap;
- Odoo's OEE for each work center equals the machine's running share within 1 point;
- the packer's small order is finished (``finish_orders``) when its quantity is reached,
  with no backorder and no false "not finished", and the counts after it go to the
  next order its operator starts (Start is refused while the work center is blocked);
- scrap in Odoo equals the machine's scrap (a storable product, forced validation);
- one maintenance request per alarm raised, the cleared note readable (HTML);
- no dead letters.

The line is frozen while the agent is dead: a polling gateway cannot see what a PLC did
while it was not running (a counter it can: that is proven by the count staying exact,
but a state's start time it cannot), and these tests are about what reaches Odoo.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config.rules import MachineStateValue
from agent.forwarders.base import ForwardError
from agent.forwarders.odoo.config import OdooDestinationConfig, OdooProtocol
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer, State, Transition
from tests.forwarders.odoo.conftest import UNAVAILABLE
from tests.forwarders.odoo.kit import OdooTarget, real_target
from tests.forwarders.odoo.servers import OdooServer
from tests.forwarders.odoo.standin import unique
from tests.helpers import free_port, line_config, readyz, start_agent, wait_until, write_config

MACHINES = ("press1", "press2", "packer1")
PACKER_ORDER = 6  # parts: the packer finishes its first order during the run
Span = tuple[datetime, datetime]
FMT = "%Y-%m-%d %H:%M:%S"
Order = dict[str, Any]
RUN = 60.0  # seconds of line time between the faults
pytestmark = [pytest.mark.timeout(900), pytest.mark.odoo, pytest.mark.slow]


def e2e_params() -> list[Any]:
    params = []
    for version, name in (("18.0", "odoo18-jsonrpc"), ("19.0", "odoo19-json2")):
        marks = []
        if version in UNAVAILABLE:
            reason = f"REAL ODOO {version} NOT RUN: {UNAVAILABLE[version]}"
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(version, id=name, marks=marks))
    return params


@pytest.fixture(params=e2e_params())
async def odoo(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OdooTarget]:
    servers = request.getfixturevalue("odoo_servers")
    async for target in real_target(servers, request.param, OdooProtocol.AUTO, tmp_path):
        yield target


def parse(value: str) -> datetime:
    return datetime.strptime(value, FMT).replace(tzinfo=UTC)


def loss_of(config: OdooDestinationConfig, change: Transition) -> str | None:
    reason = None if change.reason.value == 0 else change.reason.name.lower()
    return config.loss_for(MachineStateValue(change.state.name.lower()), reason)


def truth_intervals(
    line: SimulatedLine, machine: str, since: datetime, config: OdooDestinationConfig
) -> list[tuple[datetime, datetime | None, str]]:
    """The machine's downtimes that map to a loss, from the simulator's transitions."""
    changes = [t for t in line.transitions if t.machine == machine]
    result = []
    for index, change in enumerate(changes):
        loss = loss_of(config, change)
        if loss is None or change.at < since:
            continue
        end = changes[index + 1].at if index + 1 < len(changes) else None
        result.append((change.at, end, loss))
    return result


def running_share(
    line: SimulatedLine, machine: str, start: datetime, end: datetime, gaps: list[Span]
) -> float:
    """The machine's running share of [start, end], at Odoo's resolution (Odoo stores
    times to the second, so each transition is taken to its second). Running time in
    ``gaps`` (no work order in progress: no timer to count it) is left out."""
    changes = [t for t in line.transitions if t.machine == machine]
    times = [t.at.replace(microsecond=0) for t in changes]
    running = stopped = 0.0
    for index, change in enumerate(changes):
        until = times[index + 1] if index + 1 < len(changes) else end
        lo, hi = max(times[index], start), min(until, end)
        if hi <= lo:
            continue
        if change.state is not State.RUNNING:
            stopped += (hi - lo).total_seconds()
            continue
        uncounted = sum(overlap((lo, hi), gap) for gap in gaps)
        running += (hi - lo).total_seconds() - uncounted
    return running / (running + stopped)


def overlap(a: Span, b: Span) -> float:
    return max(0.0, (min(a[1], b[1]) - max(a[0], b[0])).total_seconds())


async def setup_orders(odoo: OdooTarget, codes: dict[str, str]) -> dict[str, list[Order]]:
    """A work center per machine (no working calendar: the line runs around the clock, so
    Odoo counts a downtime's whole duration) and a started order: 100,000 parts, but
    PACKER_ORDER for the packer, which finishes it (``finish_orders``) mid-run."""
    orders = {}
    for machine, code in codes.items():
        center = await odoo.create(
            "mrp.workcenter",
            {"name": f"{machine} {code}", "code": code, "resource_calendar_id": False},
        )
        qty = PACKER_ORDER if machine == "packer1" else 100000
        orders[machine] = [{"workcenter": center, **await odoo.order(center, qty=qty)}]
    return orders


async def operator(odoo: OdooTarget, orders: list[Order]) -> None:
    """What the packer's operator does: once its order is done, start the next one (Odoo
    refuses Start while the work center is blocked, or may be restarting: try again)."""
    first = orders[0]
    while (await read_or_none(odoo, "mrp.production", first["production"], "state")) != "done":
        await asyncio.sleep(1)
    following = await odoo.order(first["workcenter"], qty=100000, start=False)
    while True:
        try:
            await odoo.sudo("mrp.workorder", "button_start", ids=[following["workorder"]])
            break
        except ForwardError:
            await asyncio.sleep(1)
    orders.append({"workcenter": first["workcenter"], **following})


async def read_or_none(odoo: OdooTarget, model: str, record: int, name: str) -> Any:
    try:
        rows = await odoo.read(model, [record], [name])
    except ForwardError:  # Odoo is being restarted by the test
        return None
    return rows[0][name]


def agent_config(
    tmp_path: Path, odoo: OdooTarget, codes: dict[str, str], modbus: int, witness: str, health: int
) -> tuple[Path, OdooDestinationConfig]:
    config = line_config(tmp_path / "state", modbus, witness, health)
    # Odoo keeps times to the second; a 100 ms scan keeps the agent's own lag well below
    # that, so each state change lands on the machine's second (or the next one)
    config["sources"][0]["scan_interval"] = "100ms"
    packer = next(m for m in config["machines"] if m["name"] == "packer1")
    packer["state"]["reason_signal"] = "packer1.reason"
    packer["state"]["reasons"] = {10: "material_shortage", 20: "equipment_failure", 30: "setup"}
    destination = {
        "name": "odoo",
        "type": "odoo",
        "url": odoo.url,
        "database": odoo.database,
        "api_key": {"file": str(odoo.key_file)},
        "login": odoo.login,
        "timeout": "60s",
        "batch_size": 100,
        "retry": {"initial": "200ms", "max": "2s"},
        "machine_map": {m: {"work_center": code} for m, code in codes.items()},
        "finish_orders": True,
    }
    config["destinations"].append(destination)
    path = write_config(tmp_path / "config.yaml", config)
    return path, OdooDestinationConfig.model_validate(destination)


class Run:
    """The agent process and the line, with the faults of the test."""

    def __init__(self, line: SimulatedLine, config: Path, log: Path, health: int) -> None:
        self.line, self.config, self.log, self.health = line, config, log, health
        self.agent: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.agent = start_agent(self.config, self.log)

    async def connected(self) -> None:
        def up() -> bool:
            report = readyz(self.health)
            sources = (report or {}).get("sources", {})
            return bool(sources) and all(s["state"] == "connected" for s in sources.values())

        await wait_until(up, 60, "agent up and reading the line")

    async def kill_and_restart(self) -> None:
        """SIGKILL with the line frozen, restart, and let the line go on once it reads."""
        assert self.agent is not None
        self.line.freeze()
        self.agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.agent.wait, 10)
        self.start()
        await self.connected()
        self.line.resume()

    def pending(self) -> int | None:
        report = readyz(self.health)
        return None if report is None else int(report["buffer"]["pending"])

    def dead_letters(self) -> int:
        report = readyz(self.health)
        assert report is not None
        return int(report["buffer"]["dead_letters"])

    async def stop(self) -> None:
        if self.agent is None or self.agent.poll() is not None:
            return
        self.agent.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.agent.wait, 30)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            await asyncio.to_thread(self.agent.wait)


async def restart_odoo(server: OdooServer, down_for: float) -> None:
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(down_for)
    await asyncio.to_thread(server.start)


async def test_odoo_records_match_the_machines_through_kills_and_an_odoo_restart(
    odoo: OdooTarget, tmp_path: Path
) -> None:
    assert odoo.server is not None
    codes = {machine: unique(machine) for machine in MACHINES}
    orders = await setup_orders(odoo, codes)
    line = SimulatedLine(seed=23)
    line.freeze()
    health = free_port()
    async with SimulatorServer(line, tick=0.2) as simulator, EventReceiver() as witness:
        await simulator.start_tcp(port=0)
        config, destination = agent_config(
            tmp_path, odoo, codes, simulator.port, witness.url, health
        )
        run = Run(line, config, tmp_path / "agent.log", health)
        run.start()
        packer = asyncio.create_task(operator(odoo, orders["packer1"]))
        try:
            await run.connected()
            before = line.totals
            since = datetime.now(UTC)
            line.resume()
            await asyncio.sleep(RUN)
            await run.kill_and_restart()
            await asyncio.sleep(RUN / 2)
            await restart_odoo(odoo.server, down_for=15)
            await asyncio.sleep(RUN)
            await run.kill_and_restart()
            await asyncio.sleep(RUN / 2)
            line.freeze()
            after = line.totals
            await asyncio.wait_for(packer, 60)  # it finished its first order long ago
            made = {m: after[m]["good"] - before[m]["good"] for m in MACHINES}
            # the last count windows close after the freeze: wait (bounded) until Odoo
            # shows the machines' totals, then until nothing is pending; the check below
            # then proves nothing was added on top
            try:
                await wait_until_async(lambda: quantities(odoo, orders), made, 180)
            except TimeoutError:
                got = await quantities(odoo, orders)
                raise AssertionError(f"Odoo {got} != machines {made}") from None
            await wait_until(lambda: run.pending() == 0, 180, "everything delivered to Odoo")
            dead = run.dead_letters()
        finally:
            packer.cancel()
            await run.stop()
        log = run.log.read_text(errors="replace")
        assert dead == 0, log[-4000:]
        assert "order not finished" not in log
        await check_counts(odoo, orders, before, after)
        await check_finished(odoo, orders["packer1"])
        for machine in MACHINES:
            await check_time(odoo, line, machine, orders[machine], since, destination)
        await check_alarms(odoo, witness.events)
    assert set(line.requests) <= {1, 2, 3, 4}  # read function codes only


async def quantities(odoo: OdooTarget, orders: dict[str, list[Order]]) -> dict[str, float]:
    """What Odoo says each machine made: produced on finished orders, producing on the
    one running."""
    got = {}
    for machine in MACHINES:
        ids = [order["workorder"] for order in orders[machine]]
        rows = await odoo.read("mrp.workorder", ids, ["qty_producing", "qty_produced", "state"])
        got[machine] = sum(
            r["qty_produced"] if r["state"] == "done" else r["qty_producing"] for r in rows
        )
    return got


async def wait_until_async(
    read: Callable[[], Awaitable[object]], expected: object, timeout: float
) -> None:
    async with asyncio.timeout(timeout):
        while await read() != expected:
            await asyncio.sleep(1)


async def check_counts(
    odoo: OdooTarget,
    orders: dict[str, list[Order]],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
) -> None:
    made = {m: after[m]["good"] - before[m]["good"] for m in MACHINES}
    assert all(made.values()), made
    assert await quantities(odoo, orders) == made
    scraps = await odoo.search_read(
        "stock.scrap",
        [["production_id", "=", orders["press1"][0]["production"]]],
        ["scrap_qty", "state"],
    )
    assert {s["state"] for s in scraps} <= {"done"}
    assert (
        sum(s["scrap_qty"] for s in scraps) == after["press1"]["scrap"] - before["press1"]["scrap"]
    )


async def check_time(
    odoo: OdooTarget,
    line: SimulatedLine,
    machine: str,
    orders: list[Order],
    since: datetime,
    destination: OdooDestinationConfig,
) -> None:
    center = orders[0]["workcenter"]
    rows = await odoo.search_read(
        "mrp.workcenter.productivity",
        [["workcenter_id", "=", center]],
        ["date_start", "date_end", "loss_id", "workorder_id"],
    )
    downtimes = sorted((r for r in rows if not r["workorder_id"]), key=lambda r: r["date_start"])
    truth = truth_intervals(line, machine, since, destination)
    assert len(truth) >= 2, f"{machine}: the line made too few downtimes to prove anything"
    assert len(downtimes) == len(truth), (machine, downtimes, truth)
    for (start, end, loss), record in zip(truth, downtimes, strict=True):
        assert record["loss_id"][1] == loss
        assert abs((parse(record["date_start"]) - start).total_seconds()) <= 1.0, (record, start)
        if end is None:
            assert record["date_end"] is False  # the one still running
        else:
            assert record["date_end"], (machine, record)
            assert abs((parse(record["date_end"]) - end).total_seconds()) <= 1.0, (record, end)
    # no minute counted twice: timers and downtimes never overlap
    far = datetime.now(UTC) + timedelta(days=1)
    spans = sorted(
        (parse(r["date_start"]), parse(r["date_end"]) if r["date_end"] else far) for r in rows
    )
    spans = [(start, end) for start, end in spans if end > start]  # zero length: no time
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end, (machine, spans)
    assert sum(1 for r in rows if not r["date_end"]) == 1  # only the current one is open
    # Odoo's OEE over what it counts (closed records) = the machine's running share
    closed = [r for r in rows if r["date_end"]]
    start = min(parse(r["date_start"]) for r in closed)
    end = max(parse(r["date_end"]) for r in closed)
    expected = 100.0 * running_share(line, machine, start, end, between_orders(rows, orders))
    logged = await odoo.search_read(
        "mrp.workcenter.productivity",
        [["workcenter_id", "=", center], ["date_end", "!=", False]],
        ["duration", "loss_type"],
    )
    productive = sum(r["duration"] for r in logged if r["loss_type"] == "productive")
    total = sum(r["duration"] for r in logged)
    got = 100.0 * productive / total
    shifts = [  # Odoo's time minus the machine's, per downtime start and end
        (
            round((parse(r["date_start"]) - a).total_seconds(), 2),
            round((parse(r["date_end"]) - b).total_seconds(), 2) if b and r["date_end"] else None,
        )
        for (a, b, _), r in zip(truth, downtimes, strict=True)
    ]
    # Odoo's resolution bounds the difference: it keeps whole seconds (each boundary moved
    # by the shift measured above, at most 1 s) and a record's duration in hundredths of
    # a minute (0.3 s either way). A count or a downtime gone wrong moves it far more.
    moved = sum(abs(s) for pair in shifts for s in pair if s is not None) + 0.3 * len(logged)
    tolerance = 100.0 * moved / (total * 60.0)
    print(
        f"OEE {machine}: Odoo {got:.2f} machine {expected:.2f} over {total:.2f} min {shifts}"
        f" (Odoo's resolution allows {tolerance:.2f})"
    )
    assert abs(got - expected) <= tolerance, (machine, got, expected, total, shifts, tolerance)
    if odoo.server is not None and odoo.server.major >= 19:
        # 18 computes the form's OEE from hours rounded to 0.01 h (36 s): only a long
        # period makes it exact there; 19 sums the minutes, so its form shows the records'
        # own share (two decimals), which the check above holds to the machine within
        # Odoo's resolution. (A fixed 1-point bound failed on a 2.5-minute run where one
        # boundary kept whole seconds: 81.89 against 83.33, within the 2.17 allowed.)
        (oee,) = await odoo.read("mrp.workcenter", [center], ["oee"])
        assert abs(oee["oee"] - got) <= 0.01, (machine, oee["oee"], got, expected)


def between_orders(rows: list[dict[str, Any]], orders: list[Order]) -> list[Span]:
    """From the end of one order's last timer to the start of the next one's first: the
    machine had no work order in progress, so Odoo counts no productive time there."""
    gaps = []
    for done, following in itertools.pairwise(orders):
        ended = [
            parse(r["date_end"])
            for r in rows
            if r["workorder_id"] and r["workorder_id"][0] == done["workorder"] and r["date_end"]
        ]
        started = [
            parse(r["date_start"])
            for r in rows
            if r["workorder_id"] and r["workorder_id"][0] == following["workorder"]
        ]
        gaps.append((max(ended), min(started)))
    return gaps


async def check_finished(odoo: OdooTarget, orders: list[Order]) -> None:
    """The packer's first order closed when its quantity was reached, with no backorder
    (nothing was left to make), and the next one took the counts after it."""
    assert len(orders) == 2, orders
    first, following = orders
    (row,) = await odoo.read("mrp.production", [first["production"]], ["state", "qty_produced"])
    assert row["state"] == "done" and row["qty_produced"] >= PACKER_ORDER, row
    others = await odoo.search_read(
        "mrp.production",
        [["product_id", "=", first["product"]], ["id", "!=", first["production"]]],
        ["name"],
    )
    assert others == [], "a backorder of nothing"
    (row,) = await odoo.read("mrp.workorder", [following["workorder"]], ["state", "qty_producing"])
    assert row["state"] == "progress" and row["qty_producing"] > 0, row


async def check_alarms(odoo: OdooTarget, events: list[dict[str, Any]]) -> None:
    """One request per alarm raised (its event id is in the description), with the
    cleared note as a paragraph of its own once the alarm cleared."""
    alarms = [e for e in events if e["type"] == "alarm"]
    raised = [e["id"] for e in alarms if e["data"]["active"]]
    assert raised, "the line raised no alarm to prove anything with"
    requests = await odoo.search_read(
        "maintenance.request", [["name", "=", "press1: alarm hot"]], ["description"]
    )
    for event_id in raised:
        mine = [r["description"] for r in requests if event_id in (r["description"] or "")]
        assert len(mine) == 1, (event_id, mine)
        assert mine[0].startswith("<p>Alarm hot on press1")
    cleared = sum(1 for e in alarms if not e["data"]["active"])
    notes = sum(r["description"].count("<p>Cleared at") for r in requests if r["description"])
    assert notes >= cleared  # requests of other runs of this test may carry notes too
