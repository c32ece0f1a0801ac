"""Odoo destination benchmark: events/s and Odoo calls per 1,000 events, against the
Odoo stand-in (tests/forwarders/odoo/standin.py) running in its own process.

    .venv/bin/python bench/odoo_bench.py [--quick] [--json PATH]

A stream of machine events (8 machines: state changes down/running, good counts every
few seconds, an alarm raised and cleared now and then) goes through the real
OdooForwarder.send() in batches of 500, then in batches of 1 (what a connector that posts
one record per event does). Every call the forwarder makes is recorded; the ceiling is a
bare httpx client replaying exactly those calls (pre-encoded JSON-2 bodies) against a
fresh stand-in: what the wire and the stand-in cost, without floorgate's mapping and
state. The stand-in is not Odoo: a real Odoo 18 on this kind of machine does ~450
load() rows/s (ODOO.md), so the absolute rates here say what floorgate costs, not what
a plant will see; calls per 1,000 events carry over to a real Odoo.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson

from agent.config.models import AgentSection
from agent.config.rules import MachineStateValue
from agent.forwarders.odoo.config import OdooDestinationConfig
from agent.forwarders.odoo.forwarder import OdooForwarder
from agent.forwarders.odoo.transport import OdooTransport
from bench.common import Row, finish, parser, row
from buffer.rows import ClaimedEvent
from tests.forwarders.odoo.kit import Machine, claimed

SCENARIO = "odoo"
MACHINES = 8
TARGET_RATE = 2000
SERVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from tests.forwarders.odoo.standin import OdooStandIn
async def main():
    async with OdooStandIn() as odoo:
        print(odoo.port, odoo.api_key, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


class Recorder:
    """Wraps a transport's call() to keep every (model, method, named args)."""

    def __init__(self, transport: OdooTransport) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        original = transport.call

        async def call(model: str, method: str, **named: Any) -> Any:
            self.calls.append((model, method, dict(named)))
            return await original(model, method, **named)

        transport.call = call  # type: ignore[method-assign]


def start_standin() -> tuple[subprocess.Popen[str], str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(root=root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port, key = proc.stdout.readline().split()
    return proc, f"http://127.0.0.1:{port}", key


def created(result: Any) -> int:
    """The id of one created record: JSON-2's create answers a list of ids."""
    return int(result[0] if isinstance(result, list) else result)


async def seed(url: str, key: str) -> None:
    """A work center per machine, each with a started work order (through the API)."""
    rpc = OdooTransport(
        url=url, database="floorgate", api_key=key, protocol="auto", login=None, timeout=60
    )  # type: ignore[arg-type]
    await rpc.open()
    try:
        for n in range(MACHINES):
            center = created(
                await rpc.call(
                    "mrp.workcenter", "create", vals_list={"name": f"m{n}", "code": f"m{n}"}
                )
            )
            product = created(
                await rpc.call("product.product", "create", vals_list={"name": f"p{n}"})
            )
            template = (
                await rpc.call("product.product", "read", ids=[product], fields=["product_tmpl_id"])
            )[0]
            bom = created(
                await rpc.call(
                    "mrp.bom",
                    "create",
                    vals_list={"product_tmpl_id": template["product_tmpl_id"][0]},
                )
            )
            await rpc.call(
                "mrp.routing.workcenter",
                "create",
                vals_list={"name": "op", "bom_id": bom, "workcenter_id": center},
            )
            production = created(
                await rpc.call(
                    "mrp.production",
                    "create",
                    vals_list={"product_id": product, "product_qty": 1e9, "bom_id": bom},
                )
            )
            await rpc.call("mrp.production", "action_confirm", ids=[production])
            workorder = await rpc.call(
                "mrp.workorder", "search", domain=[["production_id", "=", production]]
            )
            await rpc.call("mrp.workorder", "button_start", ids=workorder)
    finally:
        await rpc.close()


def stream(count: int, t0: datetime = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)) -> list[ClaimedEvent]:
    machines = [Machine(f"m{n}") for n in range(MACHINES)]
    events = []
    step = 0
    while len(events) < count:
        at = t0 + timedelta(seconds=10 * step)
        machine = machines[step % MACHINES]
        phase = (step // MACHINES) % 10
        if phase == 0:
            events.append(machine.state(MachineStateValue.RUNNING, at))
        elif phase == 6:
            events.append(machine.state(MachineStateValue.DOWN, at, "equipment_failure"))
        elif phase == 7 and step % 3 == 0:
            events.append(machine.alarm(True, at))
        elif phase == 8 and step % 3 == 0:
            events.append(machine.alarm(False, at, 70.0))
        else:
            events.append(machine.count(5, at))
        step += 1
    return claimed(*events)


async def run_forwarder(
    url: str, key: str, events: list[ClaimedEvent], batch: int, state_dir: Path
) -> tuple[float, Recorder]:
    key_file = state_dir / "key"
    key_file.write_text(key)
    config = OdooDestinationConfig.model_validate(
        {
            "name": "odoo",
            "type": "odoo",
            "url": url,
            "database": "floorgate",
            "api_key": {"file": str(key_file)},
        }
    )
    forwarder = OdooForwarder(config, AgentSection(id="bench", state_dir=state_dir))
    await forwarder.connect()
    assert forwarder.transport is not None
    recorder = Recorder(forwarder.transport)
    try:
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            result = await forwarder.send(events[i : i + batch])
            assert len(result.delivered) == len(events[i : i + batch]), result.rejected
        elapsed = time.perf_counter() - start
    finally:
        await forwarder.close()
    return elapsed, recorder


async def replay(url: str, key: str, calls: list[tuple[str, str, dict[str, Any]]]) -> float:
    """The same calls from a bare httpx client (pre-encoded JSON-2 bodies)."""
    headers = {
        "Authorization": f"bearer {key}",
        "Content-Type": "application/json",
        "X-Odoo-Database": "floorgate",
    }
    bodies = [(f"{url}/json/2/{m}/{method}", orjson.dumps(named)) for m, method, named in calls]
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        start = time.perf_counter()
        for path, body in bodies:
            response = await client.post(path, content=body)
            response.raise_for_status()
        return time.perf_counter() - start


async def measure(count: int, batch: int) -> tuple[float, float, float]:
    """events/s through the forwarder, the bare replay's events/s, calls per 1,000."""
    server, url, key = start_standin()
    try:
        await seed(url, key)
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, recorder = await run_forwarder(url, key, stream(count), batch, Path(tmp))
    finally:
        server.terminate()
        server.wait()
    server, url, key = start_standin()
    try:
        await seed(url, key)
        replayed = await replay(url, key, recorder.calls)
    finally:
        server.terminate()
        server.wait()
    return count / elapsed, count / replayed, 1000.0 * len(recorder.calls) / count


async def main_async(quick: bool) -> list[Row]:
    batched_count = 2000 if quick else 10000
    single_count = 200 if quick else 1000
    rows: list[Row] = []
    rate, ceiling, calls = await measure(batched_count, 500)
    rows.append(
        row(
            SCENARIO,
            "events/s, batches of 500",
            rate,
            "events/s",
            ceiling=ceiling,
            ceiling_label="bare httpx, same calls",
            # A real Odoo absorbs ~450-800 records/s (ODOO.md): floorgate must not be
            # what limits a plant, with a wide margin.
            target=f">= {TARGET_RATE:,} events/s",
            met=rate >= TARGET_RATE,
        )
    )
    rate1, ceiling1, calls1 = await measure(single_count, 1)
    rows.append(
        row(
            SCENARIO,
            "events/s, one event per send",
            rate1,
            "events/s",
            ceiling=ceiling1,
            ceiling_label="bare httpx, same calls",
        )
    )
    rows.append(row(SCENARIO, "Odoo calls per 1,000 events, one event per send", calls1, "calls"))
    rows.append(
        row(
            SCENARIO,
            "batching gain (events/s, 500 vs 1)",
            rate / rate1,
            "x",
            target=">= 10x",
            met=rate / rate1 >= 10,
        )
    )
    rows.append(
        row(
            SCENARIO,
            "Odoo calls per 1,000 events, batches of 500",
            calls,
            "calls",
            target="<= 50",
            met=calls <= 50,
        )
    )
    return rows


def main() -> None:
    args = parser(__doc__).parse_args()
    finish(asyncio.run(main_async(args.quick)), args.json)


if __name__ == "__main__":
    main()
