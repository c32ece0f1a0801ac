"""Memory under load: `floorgate run` with 5,000 OPC UA tags and a 1,000,000-event backlog.

    .venv/bin/python bench/memory_loaded_bench.py [--quick] [--json PATH]

The issue's memory target (<= 100 MiB total with 5,000 tags and the backlog) measured on
one real agent process rather than added up from parts:

- an OPC UA server in its own process (floorgate_demo.opcua_sim.OpcUaSimulator) with 5,000
  Double variables (500 with --quick), all subscribed by the agent (one sample rule with a
  deadband per tag, 100 tags per machine);
- the simulated press line on Modbus TCP, as in memory_start_bench.py;
- a buffer pre-filled with 1,000,000 pending events (50,000 with --quick) for an HTTP
  destination that is down (nothing listens on its port), so the backlog stays on disk
  while the agent retries;

then, once every tag is subscribed (seen in /readyz) and the agent has run a few seconds,
VmRSS and VmHWM of the agent process. The tags do not change: the figure is what holding
the subscription costs, not a notification storm (see opcua_bench.py for that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import yaml

from agent.pipeline.events import uuid7
from bench.common import (
    MIB,
    PAYLOAD,
    NotifySocket,
    Row,
    finish,
    log_tail,
    memory,
    parser,
    row,
    server_process,
    start_agent,
    stop_agent,
)
from bench.memory_start_bench import line_config
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
from floorgate_demo.simulator import SimulatedLine, SimulatorServer

SCENARIO = "memory"
TARGET_MIB = 100
TAGS_PER_MACHINE = 100
NAMESPACE_URI = "urn:floorgate:simulator"


def tag_names(count: int) -> list[str]:
    return [f"tag.{index:05d}" for index in range(count)]


async def serve_opcua(count: int) -> None:
    """Server process: OPC UA simulator with ``count`` extra variables until stdin ends."""
    from asyncua import ua

    from floorgate_demo.opcua_sim import OpcUaSimulator

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    async with OpcUaSimulator(SimulatedLine(), tick=None) as simulator:
        await simulator.add_variables(tag_names(count), 0.0, ua.VariantType.Double)
        await simulator.start()
        print(simulator.endpoint, flush=True)
        await asyncio.to_thread(sys.stdin.read)


@contextlib.asynccontextmanager
async def opcua_server(count: int) -> AsyncIterator[str]:
    async with server_process(__file__, "--serve-opcua", str(count)) as endpoint:
        if not endpoint.startswith("opc.tcp://"):
            raise RuntimeError(f"the OPC UA server did not start (said {endpoint!r})")
        yield endpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def prefill(path: Path, count: int, destination: str) -> None:
    """``count`` pending events for ``destination``, appended through the buffer's API."""
    buffer = await SqliteBuffer.open(path, synchronous="normal")
    try:
        written = 0
        while written < count:
            rows = []
            for seq in range(written, min(count, written + 10_000)):
                event_id = uuid7()
                rows.append(
                    EventRow(
                        id=event_id,
                        type="production.count",
                        key="press-07",
                        time="2026-01-01T00:00:00+00:00",
                        payload=(PAYLOAD % (event_id, seq + 1)).encode(),
                        destinations=(destination,),
                    )
                )
            await buffer.append(rows)
            written += len(rows)
    finally:
        await buffer.close()


def loaded_config(
    state_dir: Path, modbus_port: int, endpoint: str, tags: int, health_port: int
) -> dict[str, Any]:
    config = line_config(state_dir, modbus_port, f"http://127.0.0.1:{free_port()}/events")
    names = tag_names(tags)
    config["sources"].append(
        {
            "name": "tags",
            "type": "opcua",
            "endpoint": endpoint,
            "signals": [
                {"name": name, "node_id": f"nsu={NAMESPACE_URI};s={name}", "data_type": "float64"}
                for name in names
            ],
        }
    )
    for start in range(0, tags, TAGS_PER_MACHINE):
        config["machines"].append(
            {
                "name": f"tags{start // TAGS_PER_MACHINE:03d}",
                "samples": [
                    {"signal": name, "deadband": 1.0}
                    for name in names[start : start + TAGS_PER_MACHINE]
                ],
            }
        )
    config["destinations"][0]["retry"] = {"initial": "1s", "max": "30s"}
    config["health"] = {"port": health_port}
    return config


async def readyz(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/readyz")
    found: dict[str, Any] = response.json()
    return found


async def measure(tmp: Path, tags: int, backlog: int, settle: float) -> dict[str, Any]:
    async with (
        opcua_server(tags) as endpoint,
        SimulatorServer(SimulatedLine()) as line,
    ):
        await line.start_tcp(port=0)
        health_port = free_port()
        config = loaded_config(tmp / "state", line.port, endpoint, tags, health_port)
        filled = time.perf_counter()
        await prefill(tmp / "state" / "buffer.db", backlog, config["destinations"][0]["name"])
        filled = time.perf_counter() - filled
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        notify = NotifySocket(tmp / "notify.sock")
        log = tmp / "agent.log"
        spawned = time.perf_counter()
        proc = start_agent(tmp / "config.yaml", log, notify.path)
        try:
            async with asyncio.timeout(120):
                ready = await notify.wait_ready() - spawned
                while True:
                    report = await readyz(health_port)
                    if (report["sources"]["tags"].get("subscribed_items") or 0) >= tags:
                        break
                    if proc.poll() is not None:
                        raise RuntimeError(f"agent exited:\n{log_tail(log)}")
                    await asyncio.sleep(0.5)
            await asyncio.sleep(settle)
            report = await readyz(health_port)
            used = memory(proc.pid)
        except TimeoutError:
            raise RuntimeError(f"tags not subscribed within 120 s:\n{log_tail(log)}") from None
        finally:
            await stop_agent(proc)
            notify.close()
    return {"used": used, "report": report, "fill_seconds": filled, "ready": ready}


async def run(quick: bool) -> list[Row]:
    tags, backlog, settle = (500, 50_000, 2.0) if quick else (5000, 1_000_000, 5.0)
    with tempfile.TemporaryDirectory(prefix="fg-memload-") as name:
        found = await measure(Path(name), tags, backlog, settle)
    pending = found["report"]["buffer"]["pending"]
    if pending < backlog:
        raise RuntimeError(f"backlog of {backlog} expected, readyz says {pending} pending")
    rss, peak = found["used"]["VmRSS"] / MIB, found["used"].get("VmHWM", 0) / MIB
    what = f"{tags:,} OPC UA tags subscribed + {pending:,}-event backlog"
    return [
        row(
            SCENARIO,
            f"RSS of floorgate run with {what} (+ Modbus line)",
            rss,
            "MiB",
            target=f"<= {TARGET_MIB} MiB",
            met=rss <= TARGET_MIB,
        ),
        row(SCENARIO, "peak RSS (VmHWM) of that run", peak, "MiB"),
        row(
            "start",
            f"process start to READY=1 with {tags:,} tags + backlog",
            found["ready"],
            "s",
            target="<= 1.5 s",
            met=found["ready"] <= 1.5,
        ),
    ]


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--serve-opcua", type=int, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.serve_opcua:
        asyncio.run(serve_opcua(args.serve_opcua))
        return
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
