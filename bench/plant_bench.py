"""A realistic plant: `floorgate run` with 5,000 OPC UA tags at 1 Hz, 50 Modbus devices,
~1,000 events/s and a 1,000,000-event backlog; the agent's CPU and memory.

    .venv/bin/python bench/plant_bench.py [--quick] [--json PATH]
        [--agent-tree PATH] [--env NAME=VALUE ...] [--window SECONDS]

The issue's check ("CPU and memory within 15 % of today; <= 120 MiB for that plant"),
measured on one real agent process. Everything runs on 127.0.0.1:

- an OPC UA server in its own process (asyncua, the demo simulator's namespace; see
  serve_opcua for why not the simulator itself) with 5,000 Double variables, every one
  written once per second; the agent subscribes all of them (one source, publishing
  interval 1 s), 100 tags per machine, each with a sample rule: the first 1,000 tags
  change by 1.0 every second and have deadband 0 (each change is an event), the other
  4,000 swing by 0.5 against a deadband of 1.0 (never an event);
- 50 simulated PLCs (floorgate_demo.simulator.SimulatorServer, one TCP port each, every
  one with its own seeded press line) in a second server process, one modbus_tcp source
  per PLC (the line's 12 signals, scan_interval 1 s) and one machine per PLC (state with
  reasons, a counter of good parts);
- a buffer pre-filled with 1,000,000 pending events for an HTTP destination that is down
  (nothing listens on its port), so the backlog stays on disk while the agent retries.
  It is filled by the buffer code of the agent's own tree, so its file is one that agent
  writes.

Once every tag is subscribed (seen in /readyz) and after a warm-up, over the window
(60 s; --quick: 500 tags of which 100 change, 10 PLCs, a 50,000-event backlog, 10 s):
agent CPU % of one core (utime + stime from /proc/<pid>/stat), VmRSS at the end (and the
highest seen once a second in the window), VmHWM, events/s committed to the buffer (its
highest seq) and created by the rules (/metrics), samples/s reaching the rules, and the
load average, since other work on the machine makes the CPU figure noisy.

``--agent-tree PATH`` runs the agent from another checkout (``python -m agent run`` with
that tree as cwd and first on PYTHONPATH, this interpreter): servers, config and figures
come from this tree, the backlog from that tree's buffer code. ``--env NAME=VALUE`` adds
to the agent's environment, as a unit's Environment= would (e.g. MALLOC_ARENA_MAX=2).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import yaml

from bench.common import (
    CLOCK_TICKS,
    MIB,
    ROOT,
    NotifySocket,
    Row,
    cpu_seconds,
    ensure_bytecode,
    finish,
    log_tail,
    memory,
    parser,
    row,
    stop_agent,
)
from floorgate_demo.simulator import signal_table

SCENARIO = "plant"
TARGET_MIB = 120
TAGS_PER_MACHINE = 100
NAMESPACE_URI = "urn:floorgate:simulator"
HOT_DEADBAND = 0.0  # every change of a hot tag is an event
COLD_DEADBAND = 1.0  # a cold tag swings by COLD_SWING: never an event
COLD_SWING = 0.5
STATES = {0: "stopped", 1: "running", 2: "idle", 3: "down"}
REASONS = {10: "material_shortage", 20: "equipment_failure", 30: "setup"}
START_TIMEOUT = 150.0

FULL = {"tags": 5000, "hot": 1000, "devices": 50, "backlog": 1_000_000, "warmup": 15.0}
QUICK = {"tags": 500, "hot": 100, "devices": 10, "backlog": 50_000, "warmup": 3.0}
FULL_WINDOW, QUICK_WINDOW = 60.0, 10.0

# Run in the agent's tree (cwd and PYTHONPATH), so the backlog is written by the buffer
# code of the agent that will open it. argv: path, count, destination.
PREFILL = """\
import asyncio, sys
from pathlib import Path
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
try:
    from agent.pipeline.events import uuid7_batch
except ImportError:
    from agent.events import uuid7_batch

PAYLOAD = (
    '{"specversion":"1.0","id":"%s","source":"/plant/area/line/press-07",'
    '"type":"production.count","time":"2026-01-01T00:00:00Z","datacontenttype":'
    '"application/json","sequence":"%020d","agentid":"bench","data":{"machine":"press-07",'
    '"signal":"press-07.good","kind":"good","quantity":12,"window_start":'
    '"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z"}}'
)

async def main(path, count, destination):
    buffer = await SqliteBuffer.open(Path(path), synchronous="normal")
    try:
        written = 0
        while written < count:
            ids = uuid7_batch(min(10_000, count - written))
            rows = [
                EventRow(
                    id=event_id,
                    type="production.count",
                    key="press-07",
                    time="2026-01-01T00:00:00+00:00",
                    payload=(PAYLOAD % (event_id, written + n + 1)).encode(),
                    destinations=(destination,),
                )
                for n, event_id in enumerate(ids)
            ]
            await buffer.append(rows)
            written += len(rows)
    finally:
        await buffer.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


class Notify(NotifySocket):
    """$NOTIFY_SOCKET, read for as long as the agent runs, as systemd does. The agent
    sends STATUS= whenever its summary changes (every 2 s while events come in: it holds
    the pending count) with a blocking sendto on its event loop: once a socket nobody
    reads holds net.unix.max_dgram_qlen datagrams (10 by default), the agent's loop blocks
    on the next one, for good (SIGTERM included)."""

    _drain: asyncio.Task[None] | None = None

    async def wait_ready(self) -> float:
        """As NotifySocket.wait_ready; then reads and drops every later message."""
        ready = await super().wait_ready()
        self._drain = asyncio.create_task(self._drop_messages())
        return ready

    async def _drop_messages(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await loop.sock_recv(self._sock, 4096)

    def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        super().close()


def tag_names(count: int) -> list[str]:
    return [f"tag.{index:05d}" for index in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def system_seconds(pid: int) -> float:
    """The part of bench.common.cpu_seconds spent in the kernel (stime): page faults,
    mmap/munmap and madvise show up here."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[12]) / CLOCK_TICKS


def loadavg() -> float:
    return os.getloadavg()[0]


# -- the server processes ------------------------------------------------------------


async def serve_opcua(count: int, hot: int) -> None:
    """Server process: ``count`` Double variables ``ns=<NAMESPACE_URI>;s=tag.NNNNN`` in
    folders of TAGS_PER_MACHINE, each written once a second (the first ``hot`` moving by
    1.0, the others swinging by COLD_SWING), until stdin ends; prints the endpoint.

    A bare asyncua server rather than floorgate_demo's OpcUaSimulator, for two costs of
    the server that are no part of the agent's and that this machine could not carry
    beside it: the simulator puts every extra variable in one folder, and asyncua checks
    a new node against all of its siblings (40 s of CPU to add 5,000); and asyncua
    deep-copies every written value for each monitored item (0.8 s of CPU per round of
    5,000, so under load the server fell behind and the agent saw half the changes).
    Every value written here is a new DataValue that nothing changes afterwards, so the
    monitored items keep it as it is."""
    from asyncua import Server, ua
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def keep_value(self: MonitoredItemValues, value: ua.DataValue) -> None:
        self.old_dvalue, self.current_dvalue = self.current_dvalue, value

    MonitoredItemValues.set_current_datavalue = keep_value
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plant/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE_URI)
    names = tag_names(count)
    nodes = []
    for start in range(0, count, TAGS_PER_MACHINE):
        folder_name = f"machine.{start // TAGS_PER_MACHINE:03d}"
        folder = await server.nodes.objects.add_folder(
            ua.NodeId(folder_name, ns), ua.QualifiedName(folder_name, ns)
        )
        for name in names[start : start + TAGS_PER_MACHINE]:
            variable = await folder.add_variable(
                ua.NodeId(name, ns), ua.QualifiedName(name, ns), 0.0, ua.VariantType.Double
            )
            nodes.append(variable.nodeid)
    async with server:
        print(endpoint, flush=True)
        writer = asyncio.create_task(_write_rounds(server, nodes, hot))
        await asyncio.to_thread(sys.stdin.read)
        writer.cancel()


async def _write_rounds(server: Any, nodes: list[Any], hot: int) -> None:
    from datetime import UTC, datetime

    from asyncua import ua

    double = ua.VariantType.Double
    loop = asyncio.get_running_loop()
    next_round = loop.time()
    round_ = 0
    while True:
        round_ += 1
        swing = COLD_SWING * (round_ % 2)
        now = datetime.now(UTC)
        for index, node in enumerate(nodes):
            value = 10.0 * index + (round_ if index < hot else swing)
            await server.write_attribute_value(
                node,
                ua.DataValue(ua.Variant(value, double), SourceTimestamp=now, ServerTimestamp=now),
            )
            if index % 500 == 499:
                await asyncio.sleep(0)
        next_round += 1.0
        await asyncio.sleep(max(0.0, next_round - loop.time()))


async def serve_modbus(devices: int) -> None:
    """Server process: ``devices`` simulated PLCs, one port each; prints the ports."""
    from floorgate_demo.simulator import SimulatedLine, SimulatorServer

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for seed in range(devices):
            server = await stack.enter_async_context(SimulatorServer(SimulatedLine(seed + 1)))
            await server.start_tcp(port=0)
            ports.append(server.port)
        print(json.dumps(ports), flush=True)
        await asyncio.to_thread(sys.stdin.read)


@contextlib.asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[str]:
    """Run this script with ``args`` as a server until the block ends; yields its first
    line of output (what it serves)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            first = (await proc.stdout.readline()).decode().strip()
        if not first:
            raise RuntimeError(f"server {args} did not start")
        yield first
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the agent -----------------------------------------------------------------------


def plant_config(
    state_dir: Path, endpoint: str, ports: list[int], tags: int, hot: int, health_port: int
) -> dict[str, Any]:
    names = tag_names(tags)
    sources: list[dict[str, Any]] = [
        {
            "name": "tags",
            "type": "opcua",
            "endpoint": endpoint,
            "publishing_interval": "1s",
            "signals": [
                {"name": name, "node_id": f"nsu={NAMESPACE_URI};s={name}", "data_type": "float64"}
                for name in names
            ],
        }
    ]
    machines: list[dict[str, Any]] = []
    for start in range(0, tags, TAGS_PER_MACHINE):
        machines.append(
            {
                "name": f"tags{start // TAGS_PER_MACHINE:03d}",
                "samples": [
                    {"signal": name, "deadband": HOT_DEADBAND if i < hot else COLD_DEADBAND}
                    for i, name in enumerate(names[start : start + TAGS_PER_MACHINE], start)
                ],
            }
        )
    for d, port in enumerate(ports):
        plc = f"plc{d:02d}"
        signals = [{**signal, "name": f"{plc}.{signal['name']}"} for signal in signal_table()]
        sources.append(
            {
                "name": plc,
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": port,
                "scan_interval": "1s",
                "signals": signals,
            }
        )
        machines.append(
            {
                "name": f"press{d:02d}",
                "state": {
                    "signal": f"{plc}.press1.state",
                    "map": STATES,
                    "reason_signal": f"{plc}.press1.reason",
                    "reasons": REASONS,
                },
                "counters": [{"signal": f"{plc}.press1.good"}],
            }
        )
    down = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    return {
        "agent": {"id": "bench-plant", "site": "plant", "state_dir": str(state_dir)},
        "sources": sources,
        "machines": machines,
        "destinations": [
            {
                "name": "middleware",
                "type": "http",
                "url": down,
                "retry": {"initial": "1s", "max": "30s"},
            }
        ],
        "health": {"port": health_port},
    }


def tree_env(tree: Path, extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def compile_tree(tree: Path) -> None:
    """As bench.common.ensure_bytecode, for the tree the agent runs from."""
    if tree == ROOT:
        ensure_bytecode()
        return
    for package in ("agent", "drivers", "buffer"):
        compileall.compile_dir(tree / package, quiet=1)


async def prefill(tree: Path, path: Path, count: int, destination: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PREFILL,
        str(path),
        str(count),
        destination,
        cwd=tree,
        env=tree_env(tree, {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"backlog prefill failed:\n{out.decode(errors='replace')[-3000:]}")


def start_agent(
    tree: Path, config: Path, log: Path, notify: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``python -m agent run --config`` from ``tree``, as systemd would start it."""
    compile_tree(tree)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tree,
            env=tree_env(tree, {"NOTIFY_SOCKET": str(notify), **env}),
        )


async def http_get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def counters(port: int) -> dict[str, float]:
    """Events created (all types) and samples processed, from /metrics."""
    text = (await http_get(port, "/metrics")).text
    found = {"events": 0.0, "samples": 0.0}
    for line in text.splitlines():
        if line.startswith("floorgate_events_total"):
            found["events"] += float(line.rsplit(None, 1)[1])
        elif line.startswith("floorgate_samples_total"):
            found["samples"] += float(line.rsplit(None, 1)[1])
    return found


def last_seq(db: Path) -> int:
    """The buffer's highest event seq: what has been committed so far."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


async def wait_subscribed(
    proc: subprocess.Popen[bytes], notify: Notify, port: int, tags: int, log: Path
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await notify.wait_ready()
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"agent exited ({proc.returncode}):\n{log_tail(log)}")
                report: dict[str, Any] = (await http_get(port, "/readyz")).json()
                if (report["sources"]["tags"].get("subscribed_items") or 0) >= tags:
                    return report
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise RuntimeError(
            f"tags not subscribed within {START_TIMEOUT:g} s:\n{log_tail(log)}"
        ) from None


async def measure(
    tmp: Path, size: dict[str, Any], window: float, tree: Path, env: dict[str, str]
) -> dict[str, Any]:
    tags, hot, devices = size["tags"], size["hot"], size["devices"]
    db = tmp / "state" / "buffer.db"
    started = time.monotonic()
    fill = asyncio.create_task(prefill(tree, db, size["backlog"], "middleware"))
    try:
        async with (
            server_process("--serve-opcua", str(tags), "--hot", str(hot)) as endpoint,
            server_process("--serve-modbus", str(devices)) as served,
        ):
            await fill
            prepared = time.monotonic() - started
            health_port = free_port()
            config = plant_config(
                tmp / "state", endpoint, json.loads(served), tags, hot, health_port
            )
            (tmp / "config.yaml").write_text(yaml.safe_dump(config))
            notify = Notify(tmp / "notify.sock")
            log = tmp / "agent.log"
            proc = start_agent(tree, tmp / "config.yaml", log, notify.path, env)
            try:
                spawned = time.monotonic()
                await wait_subscribed(proc, notify, health_port, tags, log)
                subscribed = time.monotonic() - spawned
                await asyncio.sleep(size["warmup"])
                found = await window_figures(proc, health_port, db, window)
                report = (await http_get(health_port, "/readyz")).json()
                if proc.poll() is not None:
                    raise RuntimeError(f"agent exited ({proc.returncode}):\n{log_tail(log)}")
            finally:
                await stop_agent(proc)
                notify.close()
    finally:
        fill.cancel()
    return {
        **found,
        "pending": report["buffer"]["pending"],
        "prepare_s": prepared,
        "subscribe_s": subscribed,
    }


async def window_figures(
    proc: subprocess.Popen[bytes], port: int, db: Path, window: float
) -> dict[str, Any]:
    load_start = loadavg()
    before = await counters(port)
    seq = await asyncio.to_thread(last_seq, db)
    cpu, system, wall = cpu_seconds(proc.pid), system_seconds(proc.pid), time.monotonic()
    highest = 0
    end = wall + window
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        highest = max(highest, memory(proc.pid)["VmRSS"])
    cpu, wall = cpu_seconds(proc.pid) - cpu, time.monotonic() - wall
    system = system_seconds(proc.pid) - system
    used = memory(proc.pid)
    seq = await asyncio.to_thread(last_seq, db) - seq
    after = await counters(port)
    return {
        "cpu": 100.0 * cpu / wall,
        "system": 100.0 * system / wall,
        "wall": wall,
        "rss": used["VmRSS"],
        "highest": max(highest, used["VmRSS"]),
        "hwm": used.get("VmHWM", used["VmRSS"]),
        "anon": used.get("RssAnon", 0),
        "committed": seq / wall,
        "created": (after["events"] - before["events"]) / wall,
        "samples": (after["samples"] - before["samples"]) / wall,
        "load": (load_start, loadavg()),
    }


async def run(quick: bool, window: float | None, tree: Path, env: dict[str, str]) -> list[Row]:
    size = QUICK if quick else FULL
    window = window or (QUICK_WINDOW if quick else FULL_WINDOW)
    with tempfile.TemporaryDirectory(prefix="fg-plant-") as name:
        found = await measure(Path(name), size, window, tree, env)
    if found["pending"] < size["backlog"]:
        raise RuntimeError(f"backlog of {size['backlog']} expected, {found['pending']} pending")
    if found["committed"] <= 0:
        raise RuntimeError("no event was committed in the window: the plant did not run")
    where = "" if tree == ROOT else f"; agent from {tree}"
    where += "".join(f"; {key}={value}" for key, value in sorted(env.items()))
    plant = f"{size['tags']:,} tags, {size['devices']} PLCs, {found['pending']:,} pending{where}"
    rss, hwm = found["rss"] / MIB, found["hwm"] / MIB
    target = f"<= {TARGET_MIB} MiB"
    label = "the plant's memory target"
    expected = size["tags"] + size["devices"] * len(signal_table())
    per_sample = 1e4 * found["cpu"] / found["samples"] if found["samples"] else 0.0
    return [
        row(
            SCENARIO, f"agent CPU over {found['wall']:.0f} s ({plant})", found["cpu"], "% of a core"
        ),
        row(SCENARIO, "of which in the kernel (stime)", found["system"], "% of a core"),
        row(
            SCENARIO,
            "RSS at the end of the window",
            rss,
            "MiB",
            ceiling=TARGET_MIB,
            ceiling_label=label,
            target=target,
            met=rss <= TARGET_MIB,
        ),
        row(SCENARIO, "of which anonymous (RssAnon: heaps, not code)", found["anon"] / MIB, "MiB"),
        row(SCENARIO, "highest RSS seen in the window (1 s steps)", found["highest"] / MIB, "MiB"),
        row(
            SCENARIO,
            "peak RSS (VmHWM) since start",
            hwm,
            "MiB",
            ceiling=TARGET_MIB,
            ceiling_label=label,
            target=target,
            met=hwm <= TARGET_MIB,
        ),
        row(
            SCENARIO,
            "events committed to the buffer",
            found["committed"],
            "/s",
            ceiling=size["hot"],
            ceiling_label=f"{size['hot']:,} tags changing at 1 Hz, deadband 0",
        ),
        row(SCENARIO, "events created by the rules (/metrics)", found["created"], "/s"),
        row(
            SCENARIO,
            "samples processed by the rules (/metrics)",
            found["samples"],
            "/s",
            ceiling=expected,
            ceiling_label="every tag and PLC signal once a second",
        ),
        row(SCENARIO, "agent CPU per sample processed", per_sample, "us"),
        row(SCENARIO, "load average (1 min) at the window's start", found["load"][0], ""),
        row(SCENARIO, "load average (1 min) at the window's end", found["load"][1], ""),
        row(SCENARIO, "servers ready + backlog filled", found["prepare_s"], "s"),
        row(SCENARIO, "agent start to all tags subscribed", found["subscribe_s"], "s"),
    ]


def environment(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {pair!r}")
        found[name] = value
    return found


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument(
        "--agent-tree", type=Path, default=ROOT, help="run the agent from this checkout"
    )
    cli.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="agent environment"
    )
    cli.add_argument("--window", type=float, default=None, help="seconds measured")
    cli.add_argument("--serve-opcua", type=int, help=argparse.SUPPRESS)
    cli.add_argument("--hot", type=int, default=0, help=argparse.SUPPRESS)
    cli.add_argument("--serve-modbus", type=int, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.serve_opcua:
        asyncio.run(serve_opcua(args.serve_opcua, args.hot))
        return
    if args.serve_modbus:
        asyncio.run(serve_modbus(args.serve_modbus))
        return
    tree = args.agent_tree.resolve()
    if not (tree / "agent" / "__main__.py").is_file():
        raise SystemExit(f"{tree} has no agent/__main__.py")
    rows = asyncio.run(run(args.quick, args.window, tree, environment(args.env)))
    finish(rows, args.json)


if __name__ == "__main__":
    main()
