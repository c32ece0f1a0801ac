"""OPC UA benchmark: 5,000 monitored items, the floorgate driver vs a bare asyncua client.

    .venv/bin/python bench/opcua_bench.py [--quick] [--json PATH] [--items N]

Three processes, so each CPU figure is one client's alone:
- a server (floorgate_demo.opcua_sim.OpcUaSimulator with N extra Double variables) that writes
  every variable once per --period (default 1 s: 5,000 changes/s for 5,000 items, which
  the asyncua server sustains here; the rate is set by the server, so the rate ratio shows
  whether the driver keeps up, and CPU per notification shows what it costs);
- the ceiling: a bare asyncua client (iterator mode, one subscription, publishing
  interval 100 ms, all items created in calls of 1,000) that only counts notifications;
- the agent's part: drivers.opcua.driver.OpcUaDriver, subscribe mode, same interval, nsu= node
  ids resolved and checked at connect, every notification mapped to a Sample and handed
  to a counting sink.

Each client is timed from start to all items subscribed, then measured for --seconds
(15 s; 5 s with --quick): notifications/s, CPU % of one core, CPU µs per notification,
RSS at the end. Targets: connect+subscribe ≤ 3x the bare client; ≥ 90 % of its rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, Row, finish, memory, parser, row

SCENARIO = "opcua"
PUBLISHING_MS = 100.0


def item_names(count: int) -> list[str]:
    return [f"bench.{index:05d}" for index in range(count)]


# -- the server process --------------------------------------------------------------


async def serve(items: int, period: float) -> None:
    import logging

    from asyncua import ua

    from floorgate_demo.opcua_sim import OpcUaSimulator
    from floorgate_demo.simulator import SimulatedLine

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    names = item_names(items)
    async with OpcUaSimulator(SimulatedLine(), tick=None) as sim:
        await sim.add_variables(names, 0.0, ua.VariantType.Double)
        await sim.start()
        print(json.dumps({"endpoint": sim.endpoint, "ns": sim.namespace_index}), flush=True)
        value = 0.0
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            value += 1.0
            for index, name in enumerate(names):
                await sim.write(name, value + index)
                if index % 500 == 499:
                    await asyncio.sleep(0)
            next_round += period
            await asyncio.sleep(max(0.0, next_round - loop.time()))


# -- the client processes ------------------------------------------------------------


def _rss() -> int:
    import os

    return memory(os.getpid()).get("VmRSS", 0)


async def bare_client(endpoint: str, ns: int, items: int, seconds: float) -> dict[str, Any]:
    import logging

    from asyncua import Client, ua

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    started = time.monotonic()
    client = Client(endpoint, timeout=30, watchdog_intervall=10)
    await client.connect()
    sub = await client.create_subscription(PUBLISHING_MS, None, queue_maxsize=10 * items)
    nodes = [client.get_node(ua.NodeId(name, ns)) for name in item_names(items)]
    for start in range(0, items, 1000):
        await sub.subscribe_data_change(nodes[start : start + 1000])
    subscribed = time.monotonic() - started
    count = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    # The cheapest consumer asyncua allows: iterate and count, nothing else.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for _event in sub:
                count += 1
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    result = {"subscribe_s": subscribed, "count": count, "wall": wall, "cpu": cpu, "rss": _rss()}
    await client.disconnect()
    return result


async def driver_client(endpoint: str, items: int, seconds: float) -> dict[str, Any]:
    from drivers.opcua.config import OpcUaConfig
    from drivers.opcua.driver import OpcUaDriver
    from floorgate_demo.opcua_sim import NAMESPACE_URI

    config = OpcUaConfig.model_validate(
        {
            "type": "opcua",
            "name": "bench",
            "endpoint": endpoint,
            "publishing_interval": f"{PUBLISHING_MS:g}ms",
            "timeout": "30s",
            "signals": [
                {"name": name, "node_id": f"nsu={NAMESPACE_URI};s={name}"}
                for name in item_names(items)
            ],
        }
    )
    counted = 0

    async def sink(batch: Any) -> None:
        nonlocal counted
        counted += len(batch)

    driver = OpcUaDriver(config, state_dir=Path("/nonexistent"))
    started = time.monotonic()
    task = asyncio.create_task(driver.run(sink))
    while driver.health.subscribed_items != items:
        if task.done():
            raise RuntimeError(f"driver stopped: {driver.health.last_error}")
        await asyncio.sleep(0.01)
    subscribed = time.monotonic() - started
    start_count = counted
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    result = {
        "subscribe_s": subscribed,
        "count": counted - start_count,
        "wall": wall,
        "cpu": cpu,
        "rss": _rss(),
        "rebuilds": driver.health.subscription_rebuilds,
        "reconnects": driver.health.reconnects,
    }
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return result


# -- orchestration -------------------------------------------------------------------


def run_client(kind: str, server: dict[str, Any], items: int, seconds: float) -> dict[str, Any]:
    args = [sys.executable, __file__, "--client", kind, "--endpoint", server["endpoint"]]
    args += ["--ns", str(server["ns"]), "--items", str(items), "--seconds", str(seconds)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} client failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(items: int, seconds: float, period: float) -> list[Row]:
    server_args = [sys.executable, __file__, "--serve", "--items", str(items)]
    server_args += ["--period", str(period)]
    server = subprocess.Popen(server_args, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        bare = run_client("bare", ready, items, seconds)
        agent = run_client("driver", ready, items, seconds)
    finally:
        server.kill()
        server.wait()
    return rows_from(items, bare, agent)


def rows_from(items: int, bare: dict[str, Any], agent: dict[str, Any]) -> list[Row]:
    label = "bare asyncua client, same run"
    name = f"{SCENARIO} subscribe {items} items"
    rate, bare_rate = agent["count"] / agent["wall"], bare["count"] / bare["wall"]
    per_note = 1e6 * agent["cpu"] / max(agent["count"], 1)
    bare_per_note = 1e6 * bare["cpu"] / max(bare["count"], 1)
    return [
        row(
            name,
            "connect + subscribe",
            agent["subscribe_s"],
            "s",
            ceiling=bare["subscribe_s"],
            ceiling_label=label,
            target="<= 3x bare",
            met=agent["subscribe_s"] <= 3 * bare["subscribe_s"],
        ),
        row(
            name,
            "notifications handled",
            rate,
            "/s",
            ceiling=bare_rate,
            ceiling_label=label,
            target=">= 90% of bare",
            met=rate >= 0.9 * bare_rate,
        ),
        row(
            name, "CPU per notification", per_note, "us", ceiling=bare_per_note, ceiling_label=label
        ),
        row(
            name,
            "CPU",
            100.0 * agent["cpu"] / agent["wall"],
            "% of a core",
            ceiling=100.0 * bare["cpu"] / bare["wall"],
            ceiling_label=label,
        ),
        row(name, "RSS", agent["rss"] / MIB, "MiB", ceiling=bare["rss"] / MIB, ceiling_label=label),
        row(
            name,
            "subscription rebuilds + reconnects",
            agent["rebuilds"] + agent["reconnects"],
            "",
            target="0",
            met=agent["rebuilds"] + agent["reconnects"] == 0,
        ),
    ]


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--items", type=int, default=None, help="monitored items (default 5000)")
    cli.add_argument("--period", type=float, default=1.0, help="server rewrites every item")
    cli.add_argument("--seconds", type=float, default=None, help=argparse_hidden())
    cli.add_argument("--serve", action="store_true", help=argparse_hidden())
    cli.add_argument("--client", choices=["bare", "driver"], help=argparse_hidden())
    cli.add_argument("--endpoint", help=argparse_hidden())
    cli.add_argument("--ns", type=int, default=0, help=argparse_hidden())
    args = cli.parse_args()
    items = args.items or (1000 if args.quick else 5000)
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    if args.serve:
        asyncio.run(serve(items, args.period))
    elif args.client == "bare":
        print(json.dumps(asyncio.run(bare_client(args.endpoint, args.ns, items, seconds))))
    elif args.client == "driver":
        print(json.dumps(asyncio.run(driver_client(args.endpoint, items, seconds))))
    else:
        finish(measure(items, seconds, args.period), args.json)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
