"""A realistic plant: `floorgate run` with 5,000 OPC UA tags at 1 Hz, 50 Modbus devices,
~1,000 events/s and a 1,000,000-event backlog; the agent's CPU and memory; then the bytes
it writes to disk per delivered event.

    .venv/bin/python bench/plant_bench.py [--quick] [--json PATH]
        [--agent-tree PATH] [--env NAME=VALUE ...] [--window SECONDS]
        [--flash-only] [--flash-warmup SECONDS] [--flash-window SECONDS]
        [--buffer KEY=VALUE ...]

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

Then the flash phase: the same plant with a destination that takes everything (an HTTP
receiver on loopback that answers 200) and a fresh buffer, as a plant runs day after day.
After a warm-up (15 s; --quick 10 s: the WAL reaches its size), over its window (20 s;
--quick 10 s): events delivered, and the **bytes the agent process wrote to disk per
delivered event**: ``write_bytes`` less
``cancelled_write_bytes`` of /proc/<pid>/io, which counts what the process dirtied in the
page cache of a block device (the buffer file, its WAL, checkpoints; also the agent's log
file here, where systemd would take it to journald: that part is shown on its own row);
the daily volume at 1,000 events/s this makes; ``wchar`` (every byte handed to write(),
HTTP sends included: not disk) and the growth of buffer.db + buffer.db-wal, for machines
whose ``write_bytes`` stays 0 (tmpfs, some container file systems: a row says so). The
agent's own figure (``floorgate_buffer_written_bytes_total``) is read too, to check it.
``--flash-only`` runs only this phase; ``--buffer KEY=VALUE`` sets a key of the flash
agent's ``buffer`` section (e.g. ``synchronous=normal``, ``sample_retention=7d``);
``--flash-warmup`` lengthens its warm-up (with ``--buffer max_size=32MiB``, 90 s fill the
file, to measure an agent that lives at its max_size).

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
import dataclasses
import json
import logging
import math
import os
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
    agent_parser,
    cpu_seconds,
    disk_written,
    ensure_bytecode,
    finish,
    free_port,
    http_receiver,
    io_counters,
    log_tail,
    memory,
    opcua_server,
    row,
    server_process,
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
# The flash phase: (warm-up, window) in seconds. The warm-up lets the WAL reach its size
# (16 MiB: about 12 s at 1,000 events/s), so the window sees the steady state; both are
# short for bench/run.py's 180 s per script, the CPU/memory phase taking ~115 s.
FULL_FLASH, QUICK_FLASH = (15.0, 20.0), (10.0, 10.0)
DAILY_RATE = 1000  # events/s: the daily volume is given for the plant
DAY = 86400
GB = 1e9  # the flash budget is in decimal GB (a drive's TBW is)
TARGET_DAILY_GB = 2.0

# Run in the agent's tree (cwd and PYTHONPATH), so the backlog is written by the buffer
# code of the agent that will open it: self-contained (its payload is bench.common's
# PAYLOAD written out), since it imports nothing of this tree. argv: path, count,
# destination.
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
            # Unregister the socket now, not when the loop gets to the cancel: closed while
            # still registered, it leaves the selector a stale entry for its fd, and the
            # next socket (the flash phase's, given the same fd) would never be polled.
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        super().close()


def tag_names(count: int) -> list[str]:
    return [f"tag.{index:05d}" for index in range(count)]


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
    folders of TAGS_PER_MACHINE (bench.common.opcua_server, which says why not the demo
    simulator), each written once a second (the first ``hot`` moving by 1.0, the others
    swinging by COLD_SWING), until stdin ends; prints the endpoint."""
    names = tag_names(count)
    folders = [
        (f"machine.{start // TAGS_PER_MACHINE:03d}", names[start : start + TAGS_PER_MACHINE])
        for start in range(0, count, TAGS_PER_MACHINE)
    ]
    server, endpoint, nodes = await opcua_server(NAMESPACE_URI, folders)
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


async def serve_receiver() -> None:
    """Server process: an HTTP receiver that reads every request and answers 200 (the
    flash phase's destination, which takes everything); prints its URL."""
    server, url = await http_receiver()
    async with server:
        print(url, flush=True)
        await asyncio.to_thread(sys.stdin.read)


# -- the agent -----------------------------------------------------------------------


def plant_config(
    state_dir: Path,
    endpoint: str,
    ports: list[int],
    tags: int,
    hot: int,
    health_port: int,
    destination: dict[str, Any],
    buffer: dict[str, Any] | None = None,
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
    config = {
        "agent": {"id": "bench-plant", "site": "plant", "state_dir": str(state_dir)},
        "sources": sources,
        "machines": machines,
        "destinations": [destination],
        "health": {"port": health_port},
    }
    if buffer:
        config["buffer"] = buffer
    return config


def down_destination() -> dict[str, Any]:
    return {
        "name": "middleware",
        "type": "http",
        "url": f"http://127.0.0.1:{free_port()}/events",  # nothing listens there
        "retry": {"initial": "1s", "max": "30s"},
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
    """Events created (all types), samples processed, events delivered (all
    destinations), the agent's own written-bytes figure and its buffer commits (NaN from an
    agent without them), from /metrics."""
    text = (await http_get(port, "/metrics")).text
    nan = float("nan")
    found = {"events": 0.0, "samples": 0.0, "delivered": 0.0, "written": nan, "commits": nan}
    sums = {
        "floorgate_events_total": "events",
        "floorgate_samples_total": "samples",
        "floorgate_delivered_total": "delivered",
    }
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            found[sums[name]] += float(line.rsplit(None, 1)[1])
        elif name == "floorgate_buffer_written_bytes_total":
            found["written"] = float(line.rsplit(None, 1)[1])
        elif name == "floorgate_buffer_commits_total":
            found["commits"] = float(line.rsplit(None, 1)[1])
    return found


def file_sizes(db: Path) -> int:
    """buffer.db + buffer.db-wal, in bytes (a missing one counts 0)."""
    total = 0
    for path in (db, Path(f"{db}-wal")):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def io_now(pid: int) -> dict[str, int]:
    """/proc/<pid>/io, or zeros where it cannot be read (the rows then say so)."""
    return io_counters(pid) or {}


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


@dataclasses.dataclass(frozen=True)
class FlashPlan:
    """The flash phase: warm-up and window (s), the flash agent's ``buffer`` keys, and
    whether the CPU/memory phase is skipped."""

    warmup: float
    window: float
    buffer: dict[str, Any]
    only: bool = False


def write_config(workdir: Path, config: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def file_size(path: Path) -> int:
    return path.stat().st_size


@contextlib.asynccontextmanager
async def running_agent(
    tree: Path, workdir: Path, config: dict[str, Any], env: dict[str, str], tags: int
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Path, float]]:
    """Start the agent on ``config`` and wait until every tag is subscribed; yields the
    process, its log and the seconds that took. Stops it when the block ends."""
    write_config(workdir, config)
    notify = Notify(workdir / "notify.sock")
    log = workdir / "agent.log"
    port = int(config["health"]["port"])
    proc = start_agent(tree, workdir / "config.yaml", log, notify.path, env)
    try:
        spawned = time.monotonic()
        await wait_subscribed(proc, notify, port, tags, log)
        yield proc, log, time.monotonic() - spawned
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited ({proc.returncode}):\n{log_tail(log)}")
    finally:
        await stop_agent(proc)
        notify.close()


async def measure(
    tmp: Path,
    size: dict[str, Any],
    window: float,
    tree: Path,
    env: dict[str, str],
    flash: FlashPlan,
) -> dict[str, Any]:
    tags, hot, devices = size["tags"], size["hot"], size["devices"]
    db = tmp / "state" / "buffer.db"
    started = time.monotonic()
    fill = None
    if not flash.only:
        fill = asyncio.create_task(prefill(tree, db, size["backlog"], "middleware"))
    found: dict[str, Any] = {}
    try:
        async with (
            server_process(__file__, "--serve-opcua", str(tags), "--hot", str(hot)) as endpoint,
            server_process(__file__, "--serve-modbus", str(devices)) as served,
            server_process(__file__, "--serve-receiver") as receiver,
        ):
            ports = json.loads(served)
            if fill is not None:
                await fill
                prepared = time.monotonic() - started
                health_port = free_port()
                config = plant_config(
                    tmp / "state", endpoint, ports, tags, hot, health_port, down_destination()
                )
                async with running_agent(tree, tmp, config, env, tags) as (proc, _, subscribed):
                    await asyncio.sleep(size["warmup"])
                    found = await window_figures(proc, health_port, db, window)
                    report = (await http_get(health_port, "/readyz")).json()
                found.update(
                    pending=report["buffer"]["pending"],
                    prepare_s=prepared,
                    subscribe_s=subscribed,
                )
            found["flash"] = await flash_phase(
                tmp / "flash", endpoint, ports, receiver, size, tree, env, flash
            )
    finally:
        if fill is not None:
            fill.cancel()
    return found


async def window_figures(
    proc: subprocess.Popen[bytes], port: int, db: Path, window: float
) -> dict[str, Any]:
    load_start = loadavg()
    before = await counters(port)
    seq = await asyncio.to_thread(last_seq, db)
    io = io_now(proc.pid)
    cpu, system, wall = cpu_seconds(proc.pid), system_seconds(proc.pid), time.monotonic()
    highest = 0
    end = wall + window
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        highest = max(highest, memory(proc.pid)["VmRSS"])
    cpu, wall = cpu_seconds(proc.pid) - cpu, time.monotonic() - wall
    system = system_seconds(proc.pid) - system
    written = disk_written(io_now(proc.pid)) - disk_written(io)
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
        "written_per_event": written / seq if seq else math.nan,
        "created": (after["events"] - before["events"]) / wall,
        "samples": (after["samples"] - before["samples"]) / wall,
        "load": (load_start, loadavg()),
    }


# -- the flash phase: bytes written per delivered event --------------------------------


async def flash_phase(
    workdir: Path,
    endpoint: str,
    ports: list[int],
    receiver: str,
    size: dict[str, Any],
    tree: Path,
    env: dict[str, str],
    flash: FlashPlan,
) -> dict[str, Any]:
    """The plant delivering everything to a receiver that takes it, from a fresh buffer:
    what the agent writes to disk per delivered event once it runs steadily."""
    port = free_port()
    destination = {"name": "receiver", "type": "http", "url": receiver}
    state = workdir / "state"
    config = plant_config(
        state, endpoint, ports, size["tags"], size["hot"], port, destination, flash.buffer
    )
    async with running_agent(tree, workdir, config, env, size["tags"]) as (proc, log, _):
        await asyncio.sleep(flash.warmup)
        found = await flash_figures(proc, port, state / "buffer.db", log, flash.window)
        found["readyz"] = (await http_get(port, "/readyz")).json()
    return found


async def flash_figures(
    proc: subprocess.Popen[bytes], port: int, db: Path, log: Path, window: float
) -> dict[str, Any]:
    before, io, files = await counters(port), io_now(proc.pid), file_sizes(db)
    logged, wall = file_size(log), time.monotonic()
    await asyncio.sleep(window)
    after, io_after, wall = await counters(port), io_now(proc.pid), time.monotonic() - wall
    delivered = after["delivered"] - before["delivered"]
    return {
        "wall": wall,
        "delivered": delivered,
        "io_readable": bool(io_after),
        "write_bytes": io_after.get("write_bytes", 0) - io.get("write_bytes", 0),
        "cancelled": io_after.get("cancelled_write_bytes", 0) - io.get("cancelled_write_bytes", 0),
        "disk": disk_written(io_after) - disk_written(io),
        "wchar": io_after.get("wchar", 0) - io.get("wchar", 0),
        "growth": file_sizes(db) - files,
        "files": file_sizes(db),
        "log": file_size(log) - logged,
        "own": after["written"] - before["written"],
        "commits": after["commits"] - before["commits"],
    }


def flash_rows(found: dict[str, Any], plant: str, settings: str, hot: int) -> list[Row]:
    delivered = found["delivered"]
    if delivered <= 0:
        raise RuntimeError("flash phase: nothing was delivered in the window")
    per_event = found["disk"] / delivered
    daily = per_event * DAILY_RATE * DAY / GB
    where = "write_bytes - cancelled_write_bytes of /proc/<pid>/io"
    if not found["io_readable"]:
        where = "/proc/<pid>/io cannot be read here: see the file growth"
    elif found["write_bytes"] == 0:
        where = "write_bytes stays 0 on this file system (tmpfs?): see wchar and file growth"
    own = found["own"] / delivered if not math.isnan(found["own"]) else math.nan
    return [
        row(
            SCENARIO,
            f"flash: events delivered ({plant}; {settings})",
            delivered / found["wall"],
            "/s",
            ceiling=hot,
            ceiling_label=f"{hot:,} tags changing at 1 Hz, deadband 0",
        ),
        row(
            SCENARIO, f"flash: bytes written to disk per delivered event ({where})", per_event, "B"
        ),
        row(
            SCENARIO,
            f"flash: daily write volume at {DAILY_RATE:,} events/s (decimal GB)",
            daily,
            "GB/day",
            target=f"<= {TARGET_DAILY_GB:g} GB/day",
            met=daily <= TARGET_DAILY_GB,
        ),
        row(
            SCENARIO,
            "flash: of which the agent's log file (journald's, not the agent's, in production)",
            found["log"] / delivered,
            "B",
        ),
        row(
            SCENARIO,
            "flash: the agent's own figure (floorgate_buffer_written_bytes_total) per event",
            own,
            "B",
        ),
        row(
            SCENARIO,
            "flash: wchar per delivered event (every write(): files, HTTP sends, logs)",
            found["wchar"] / delivered,
            "B",
        ),
        row(
            SCENARIO,
            f"flash: buffer.db + WAL growth over the {found['wall']:.0f} s window",
            found["growth"] / MIB,
            "MiB",
        ),
        row(SCENARIO, "flash: buffer.db + WAL at the window's end", found["files"] / MIB, "MiB"),
        row(
            SCENARIO,
            "flash: buffer write transactions (appends, acks, prunes; /metrics)",
            found["commits"] / found["wall"],
            "/s",
        ),
    ]


async def run(
    quick: bool, window: float | None, tree: Path, env: dict[str, str], flash: FlashPlan
) -> list[Row]:
    size = QUICK if quick else FULL
    window = window or (QUICK_WINDOW if quick else FULL_WINDOW)
    with tempfile.TemporaryDirectory(prefix="fg-plant-") as name:
        found = await measure(Path(name), size, window, tree, env, flash)
    where = "" if tree == ROOT else f"; agent from {tree}"
    where += "".join(f"; {key}={value}" for key, value in sorted(env.items()))
    settings = ", ".join(f"{k}={v}" for k, v in sorted(flash.buffer.items())) or "defaults"
    flash_plant = f"{size['tags']:,} tags, {size['devices']} PLCs{where}"
    rows = flash_rows(found["flash"], flash_plant, f"buffer {settings}", int(size["hot"]))
    if flash.only:
        return rows
    if found["pending"] < size["backlog"]:
        raise RuntimeError(f"backlog of {size['backlog']} expected, {found['pending']} pending")
    if found["committed"] <= 0:
        raise RuntimeError("no event was committed in the window: the plant did not run")
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
        row(
            SCENARIO,
            "bytes written to disk per event committed (destination down: nothing delivered)",
            found["written_per_event"],
            "B",
        ),
        *rows,
    ]


def environment(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env and --buffer want NAME=VALUE, got {pair!r}")
        found[name] = value
    return found


def main() -> None:
    cli = agent_parser(__doc__)
    cli.add_argument("--flash-only", action="store_true", help="only the flash phase")
    cli.add_argument("--flash-window", type=float, default=None, help="flash phase seconds")
    cli.add_argument(
        "--flash-warmup",
        type=float,
        default=None,
        help="flash warm-up seconds (e.g. to fill a small max_size first)",
    )
    cli.add_argument(
        "--buffer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a buffer key of the flash agent's config (YAML value), e.g. synchronous=normal",
    )
    cli.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
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
    if args.serve_receiver:
        asyncio.run(serve_receiver())
        return
    tree = args.agent_tree.resolve()
    if not (tree / "agent" / "__main__.py").is_file():
        raise SystemExit(f"{tree} has no agent/__main__.py")
    warmup, window = QUICK_FLASH if args.quick else FULL_FLASH
    buffer = {key: yaml.safe_load(value) for key, value in environment(args.buffer).items()}
    flash = FlashPlan(
        args.flash_warmup or warmup, args.flash_window or window, buffer, args.flash_only
    )
    rows = asyncio.run(run(args.quick, args.window, tree, environment(args.env), flash))
    finish(rows, args.json)


if __name__ == "__main__":
    main()
