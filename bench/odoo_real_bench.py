"""Odoo destination on a real Odoo 18 server: events/s the agent delivers against raw
batched ``load()`` of the same rows on the same server, in one run, and Odoo calls per
1,000 events.

    .venv/bin/python bench/odoo_real_bench.py [--quick] [--json PATH]

Needs the real servers (``.ci/odoo-servers prepare``). The same event stream as
bench/odoo_bench.py (8 machines: downtimes, good counts, alarms raised and cleared),
timed from now, goes through OdooForwarder.send() in batches of 500 as the non-admin
integration user over JSON-RPC, with ``work_order_timers: leave`` so that the rows are
the same as the raw import's; a second run with the default (the timers an operator's
Start opened are ended and resumed around each downtime) says what that costs. The
ceiling replays every ``load()`` the
forwarder made with the rows that carry the events' data (downtimes, maintenance
requests, scrap under fresh external ids; work-order quantities by database id) as raw
``execute_kw`` calls from a bare httpx client, on the same server: what Odoo itself
costs for those rows. Lookups, work-order timers and the checks are what the agent adds.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson

from agent.config.models import AgentSection
from agent.forwarders.odoo.config import OdooDestinationConfig, OdooProtocol
from agent.forwarders.odoo.forwarder import OdooForwarder
from bench.common import Row, finish, parser, row
from bench.odoo_bench import MACHINES, Recorder, stream
from tests.forwarders.odoo.kit import OdooTarget, opened
from tests.forwarders.odoo.servers import OdooServer, start_servers, stop_servers, why_not_available

SCENARIO = "odoo (real 18)"
VERSION = "18.0"
TARGET_RATIO = 0.8


async def seed(odoo: OdooTarget) -> dict[str, str]:
    """A work center per machine with a started order, as the plant's admin would."""
    codes = {}
    for n in range(MACHINES):
        code = f"bench-{time.time_ns()}-{n}"
        center = await odoo.create(
            "mrp.workcenter", {"name": code, "code": code, "resource_calendar_id": False}
        )  # no working calendar: a line that runs around the clock
        await odoo.order(center, qty=100_000)
        codes[f"m{n}"] = code
    return codes


async def run_forwarder(
    server: OdooServer, codes: dict[str, str], count: int, state_dir: Path, timers: str
) -> tuple[float, Recorder]:
    key_file = state_dir / "key"
    key_file.write_text(server.key)
    config = OdooDestinationConfig.model_validate(
        {
            "name": f"odoo-{timers}",  # its own state file
            "type": "odoo",
            "url": server.url,
            "database": server.database,
            "api_key": {"file": str(key_file)},
            "login": server.login,
            "machine_map": {m: {"work_center": c} for m, c in codes.items()},
            "work_order_timers": timers,
        }
    )
    events = stream(count, datetime.now(UTC).replace(microsecond=0))
    forwarder = OdooForwarder(
        config, AgentSection(id=f"bench{time.time_ns()}", state_dir=state_dir)
    )
    await forwarder.connect()
    assert forwarder.transport is not None
    recorder = Recorder(forwarder.transport)
    try:
        start = time.perf_counter()
        for i in range(0, len(events), 500):
            result = await forwarder.send(events[i : i + 500])
            assert len(result.delivered) == len(events[i : i + 500]), result.rejected
        elapsed = time.perf_counter() - start
    finally:
        await forwarder.close()
    return elapsed, recorder


def raw_rows(fields: list[str], data: list[list[Any]]) -> list[list[Any]]:
    """The rows of one of the forwarder's load() calls that carry the events' data, as
    a plain import would send them: records by external id under fresh ids, existing
    records (work-order quantities) by database id as they were. Work-order timers (rows
    with a work order) are left out: keeping Odoo's own timers right is what the agent
    adds."""
    if "workorder_id/.id" in fields:
        column = fields.index("workorder_id/.id")
        data = [row for row in data if not row[column]]
    if fields[0] != "id":
        return data
    return [[f"{row[0]}_raw", *row[1:]] for row in data]


async def replay_loads(
    server: OdooServer, uid: int, calls: list[tuple[str, str, dict[str, Any]]]
) -> float:
    """The forwarder's load() calls again (``raw_rows``), as bare JSON-RPC calls."""
    bodies = []
    for n, (model, _, named) in enumerate(c for c in calls if c[1] == "load"):
        data = raw_rows(named["fields"], named["data"])
        if not data:
            continue
        args = [server.database, uid, server.key, model, "load", [named["fields"], data]]
        params = {
            "service": "object",
            "method": "execute_kw",
            "args": [*args, {"context": named["context"]}],
        }
        bodies.append(orjson.dumps({"jsonrpc": "2.0", "method": "call", "id": n, "params": params}))
    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        for body in bodies:
            response = await client.post(
                f"{server.url}/jsonrpc", content=body, headers={"Content-Type": "application/json"}
            )
            answer = orjson.loads(response.content)
            assert "error" not in answer and answer["result"]["ids"], answer
        return time.perf_counter() - start


async def main_async(quick: bool) -> list[Row]:
    missing = why_not_available().get(VERSION)
    if missing:
        raise SystemExit(f"real Odoo {VERSION} not available: {missing}")
    count = 1000 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        (server,) = start_servers(Path(tmp), (VERSION,))
        try:
            odoo = OdooTarget(
                url=server.url, database=server.database, key_file=Path(tmp) / "k",
                login=server.login, standin=None, protocol=OdooProtocol.JSONRPC, server=server,
            )  # fmt: skip
            odoo.key_file.write_text(server.key)
            async with opened(odoo):
                codes = await seed(odoo)
                twin = await seed(odoo)
                assert odoo.rpc is not None and odoo.rpc.uid is not None
                uid = odoo.rpc.uid
            elapsed, recorder = await run_forwarder(server, codes, count, Path(tmp), "leave")
            raw = await replay_loads(server, uid, recorder.calls)
            with_timers, _ = await run_forwarder(server, twin, count, Path(tmp), "pause_and_resume")
        finally:
            stop_servers([server])
    rate, ceiling = count / elapsed, count / raw
    calls = 1000.0 * len(recorder.calls) / count
    return [
        row(
            SCENARIO,
            "events/s delivered, batches of 500",
            rate,
            "events/s",
            ceiling=ceiling,
            ceiling_label="raw batched load() of the same rows",
            target=f">= {TARGET_RATIO} x raw load()",
            met=rate >= TARGET_RATIO * ceiling,
        ),
        row(
            SCENARIO,
            "events/s with work-order timers paused and resumed (default)",
            count / with_timers,
            "events/s",
            ceiling=rate,
            ceiling_label="the same stream, timers left alone",
        ),
        row(
            SCENARIO, "Odoo calls per 1,000 events", calls, "calls", target="<= 50", met=calls <= 50
        ),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    finish(asyncio.run(main_async(args.quick)), args.json)


if __name__ == "__main__":
    main()
