"""End to end: simulated line (real Modbus TCP) -> agent process -> Odoo stand-in (and the
HTTP receiver as a witness of every event the agent made).

The agent is killed with SIGKILL while Odoo requests are in flight, and Odoo then answers
HTML 500s for a while. Afterwards every downtime interval the agent reported is exactly
one productivity record with the right start, end and loss; each work order's quantity
equals the good parts the simulated machine made; scrap and alarms are there once.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

from agent.config.rules import MachineStateValue
from agent.forwarders.odoo_config import OdooDestinationConfig
from agent.forwarders.receiver import EventReceiver
from drivers.simulator import SimulatedLine, SimulatorServer
from tests.helpers import free_port, line_config, readyz, start_agent, wait_until, write_config
from tests.odoo.standin import OdooStandIn

MACHINES = ("press1", "press2", "packer1")
Interval = tuple[str, str, str | None, str]  # machine, start, end, loss


def odoo_destination(odoo: OdooStandIn, key_file: Path) -> dict[str, Any]:
    return {
        "name": "odoo",
        "type": "odoo",
        "url": odoo.url,
        "database": odoo.database,
        "api_key": {"file": str(key_file)},
        "timeout": "10s",
        "batch_size": 50,
        "retry": {"initial": "100ms", "max": "500ms"},
        # no machine_map: each machine's work center has the machine's name as its code
    }


def expected_intervals(
    events: list[dict[str, Any]], config: OdooDestinationConfig
) -> set[Interval]:
    """Every state interval the agent reported that maps to a loss, from the witness."""
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["type"] == "machine.state":
            by_machine[event["data"]["machine"]].append(event)
    result: set[Interval] = set()
    for machine, states in by_machine.items():
        states.sort(key=lambda e: int(e["sequence"]))
        for index, event in enumerate(states):
            data = event["data"]
            loss = config.loss_for(MachineStateValue(data["state"]), data.get("reason"))
            if loss is None:
                continue
            end = states[index + 1]["data"]["since"] if index + 1 < len(states) else None
            result.add((machine, odoo_time(data["since"]), odoo_time(end) if end else None, loss))
    return result


def closed_downtimes(events: list[dict[str, Any]], config: OdooDestinationConfig) -> int:
    return sum(1 for interval in expected_intervals(events, config) if interval[2] is not None)


def odoo_time(iso: str) -> str:
    return iso.replace("T", " ")[:19]


def odoo_intervals(odoo: OdooStandIn, centers: dict[int, str]) -> list[Interval]:
    losses = {r["id"]: r["name"] for r in odoo.records("mrp.workcenter.productivity.loss")}
    return [
        (centers[r["workcenter_id"]], r["date_start"], r["date_end"] or None, losses[r["loss_id"]])
        for r in odoo.records("mrp.workcenter.productivity")
    ]


def reported(events: list[dict[str, Any]], machine: str) -> int:
    return sum(
        e["data"]["quantity"]
        for e in events
        if e["type"] == "production.count"
        and e["data"]["machine"] == machine
        and e["data"]["kind"] == "good"
    )


def pending(port: int) -> int | None:
    report = readyz(port)
    return None if report is None else int(report["buffer"]["pending"])


async def test_records_are_exact_after_a_sigkill_and_an_odoo_outage(tmp_path: Path) -> None:
    line = SimulatedLine(seed=11)
    line.freeze()
    log = tmp_path / "agent.log"
    health_port = free_port()
    async with (
        SimulatorServer(line, tick=0.05) as simulator,
        EventReceiver() as witness,
        OdooStandIn() as odoo,
    ):
        await simulator.start_tcp(port=0)
        centers: dict[int, str] = {}
        workorders: dict[str, int] = {}
        for machine in MACHINES:
            center = odoo.db.new_record(
                "mrp.workcenter", {"name": machine.title(), "code": machine}
            )
            centers[center["id"]] = machine
            workorders[machine] = start_order(odoo, center["id"])
        key_file = tmp_path / "odoo.key"
        key_file.write_text(odoo.api_key + "\n")
        config = line_config(tmp_path / "state", simulator.port, witness.url, health_port)
        config["destinations"].append(odoo_destination(odoo, key_file))
        config_path = write_config(tmp_path / "config.yaml", config)
        destination = OdooDestinationConfig.model_validate(odoo_destination(odoo, key_file))
        before = line.totals
        odoo.delay = 0.15  # requests take a while: the kill lands while one is in flight
        agent = start_agent(config_path, log)
        try:
            await wait_until(
                lambda: (
                    {e["data"]["machine"] for e in witness.events if e["type"] == "machine.state"}
                    == set(MACHINES)
                ),
                60,
                "first states",
            )
            line.resume()
            await asyncio.sleep(4)
            requests = odoo.requests
            await wait_until(lambda: odoo.requests > requests, 30, "an Odoo request in flight")
            agent.send_signal(signal.SIGKILL)
            await asyncio.to_thread(agent.wait, 10)
            odoo.fail_until_cleared(500)  # Odoo answers HTML 500s for a while
            agent = start_agent(config_path, log)
            await asyncio.sleep(3)
            odoo.stop_failing()
            # let the line run until some downtimes have ended (bounded, not timed)
            await wait_until(
                lambda: closed_downtimes(witness.events, destination) >= 4, 120, "downtimes"
            )
            line.freeze()
            after = line.totals
            # Presses count a PLC counter: exact across the kill. The packer counts edges
            # of a part-done bit, which nobody sees while the agent is dead: its Odoo
            # quantity must equal what the agent reported (the witness), not the line.
            good = {m: after[m]["good"] - before[m]["good"] for m in ("press1", "press2")}
            scrap = after["press1"]["scrap"] - before["press1"]["scrap"]
            assert good["press1"] > 0 and good["press2"] > 0

            def quantities() -> dict[str, float]:
                return {
                    m: odoo.db.tables["mrp.workorder"][workorders[m]]["qty_producing"] for m in good
                }

            try:
                await wait_until(lambda: quantities() == good, 90, "all counts in Odoo")
            except TimeoutError:
                raise AssertionError(
                    f"{quantities()} != {good}\n{log.read_text()[-4000:]}"
                ) from None
            await wait_until(lambda: pending(health_port) == 0, 60, "both destinations drained")
            await asyncio.sleep(1.5)  # a double count would show in the next windows
            assert quantities() == good, log.read_text()[-3000:]
            packer = odoo.db.tables["mrp.workorder"][workorders["packer1"]]["qty_producing"]
            assert packer == reported(witness.events, "packer1") > 0
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 30) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                await asyncio.to_thread(agent.wait)
        got = odoo_intervals(odoo, centers)
        assert len(got) == len(set(got)), "an interval was recorded twice"
        assert set(got) == expected_intervals(witness.events, destination)
        assert sum(1 for _, _, end, _ in got if end is not None) >= 4
        scraps = [s for s in odoo.records("stock.scrap") if s["state"] == "done"]
        assert sum(s["scrap_qty"] for s in scraps) == scrap
        assert len(odoo.records("stock.scrap")) == len(scraps)
        raised = [e for e in witness.events if e["type"] == "alarm" and e["data"]["active"]]
        assert len(odoo.records("maintenance.request")) == len(raised)
        assert set(line.requests) <= {1, 2, 3, 4}  # read function codes only


def start_order(odoo: OdooStandIn, workcenter_id: int) -> int:
    """A started work order of 100,000 parts on the work center (through the stand-in's
    own model code, as an operator pressing Start would)."""
    db = odoo.db
    product = db.new_record("product.product", {"name": f"Part {workcenter_id}"})
    bom = db.new_record("mrp.bom", {"product_tmpl_id": product["product_tmpl_id"]})
    db.new_record(
        "mrp.routing.workcenter",
        {"name": "Op", "bom_id": bom["id"], "workcenter_id": workcenter_id},
    )
    production = db.new_record(
        "mrp.production", {"product_id": product["id"], "product_qty": 100000, "bom_id": bom["id"]}
    )
    db.call("mrp.production", "action_confirm", [production["id"]], {})
    workorder = next(
        w for w in db.tables["mrp.workorder"].values() if w["production_id"] == production["id"]
    )
    db.call("mrp.workorder", "button_start", [workorder["id"]], {})
    return int(workorder["id"])
