"""A bigger plant: `floorgate run` with 20,000 Modbus registers and 10,000 OPC UA items at
1 Hz, 10 % of them changing every second, every change an event delivered over HTTP; the
agent's CPU and memory per 1,000 signals, and whether it keeps pace.

    .venv/bin/python bench/plant_scale_bench.py [--quick] [--json PATH]
        [--agent-tree PATH] [--env NAME=VALUE ...] [--window SECONDS] [--drain SECONDS]
        [--keep DIR] [--profile DIR [--profiler sample|cprofile]]

Everything runs on 127.0.0.1:

- 40 simulated PLCs (one pymodbus TCP server each, one port each, all in one server
  process), each with 500 holding registers 0-499; the agent has one modbus_tcp source
  per PLC (scan_interval 1 s, 4 read requests of 125 registers a poll) and one machine
  per PLC made from a template whose ``ranges:`` makes the 500 uint16 signals, each with a
  sample rule of deadband 0: every change of a register is one event;
- an asyncua server process with 10,000 Double variables in 100 folders of 100
  (bench.common.opcua_server); the agent subscribes all of them on one source
  (publishing interval 1 s) through 100 machines made from one template of 100 signals,
  each with a sample rule of deadband 0;
- every second (a "round" r = 1, 2, ... of each server) each server sets the value r on
  every tenth register or item (those whose index is r modulo 10): 10 % change each
  second, each register or item once every 10 s, so a change is never overwritten before
  the next poll or publish. Each server logs its rounds (start, end, changes, its own
  CPU), so the changes it made are counted, not assumed; the OPC UA server's own rate is
  reported, since the agent cannot deliver changes it did not make;
- an HTTP receiver in this process that answers 200 to everything and counts the sample
  events it receives by round (the event's value) and by server (its signal's machine).

After every item is subscribed and a warm-up (20 s; --quick 5 s), over the window (60 s;
--quick 10 s): the agent's CPU % of one core (utime + stime from /proc/<pid>/stat), also
of its busiest thread (the event loop, which the GIL makes the ceiling) and of the others,
the share of the time its main thread was runnable but waiting for a CPU (schedstat: the
load of other processes), VmRSS (at the end and the highest seen every 5 s), VmHWM,
**CPU and memory per 1,000 signals**,
samples/s reaching the rules and events/s created (/metrics), events/s delivered (at the
receiver), and **keeping pace**: the changes the servers made in the window's rounds
against the events delivered for them after a drain (until all arrived, or nothing more
came for 5 s, at most --drain: 60 s; --quick 20 s), the change-to-delivery time of those
rounds, and the backlog (floorgate_buffer_pending) at the start and end of the window and
its growth per second (flat when the agent keeps pace). The load average is noted, since
other work on the machine makes the CPU figures noisy. --quick is the same plant at a
tenth of the size (4 PLCs, 1,000 items): the shares of a profile of a quick run hold for
the full plant.

``--agent-tree`` and ``--env`` as in bench/plant_bench.py. ``--keep DIR`` keeps the
agent's log and config, /readyz and /metrics at the end and the servers' round logs.
``--profile DIR`` profiles the agent's event loop over the window (see SAMPLER): stack
samples (default) or, with ``--profiler cprofile``, cProfile; the figures are printed
after the table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from agent.config.models import BufferConfig
from bench.common import (
    MIB,
    ROOT,
    Row,
    agent_parser,
    cpu_seconds,
    finish,
    free_port,
    http_receiver,
    memory,
    opcua_server,
    row,
    server_process,
    thread_cpu_seconds,
)
from bench.plant_bench import (
    counters,
    environment,
    http_get,
    loadavg,
    running_agent,
    system_seconds,
)

SCENARIO = "plant scale"
NAMESPACE_URI = "urn:floorgate:plant-scale"
CHANGE_EVERY = 10  # a register or item changes every 10th round: 10 % of them a second
OPCUA_SOURCE = "tags"  # the name plant_bench.running_agent waits on (subscribed_items)
MODBUS_PREFIX, OPCUA_PREFIX = "mb", "ua"  # machine names: mb00 ..., ua000 ...
MEMORY_STEP = 5.0  # seconds between RSS and pending readings in the window
DRAIN_QUIET = 5.0  # the drain ends when no event of the window's rounds came for this long


# --profile DIR: written to DIR/sitecustomize.py, which the agent imports at start (DIR
# first on its PYTHONPATH). A thread samples the main thread's (the event loop's) stack
# every 10 ms from when DIR/start exists until DIR/stop does (the window), then writes
# DIR/profile.json: per function, the samples it was running in (inclusive) and at the
# top of (own, with the C calls it made); "project" charges each sample to the innermost
# function of agent/, drivers/ or buffer/, or to idle: a sample in the selector's select()
# is the loop waiting. Costs the agent about 1 % (a GIL hand-over 100 times a second), but
# the GIL biases it: the sampler gets the GIL soonest when the main thread releases it, so
# calls that do (socket sends, select) collect more than their share of samples.
# --profiler cprofile instead runs cProfile on the event loop's thread over the window
# (DIR/agent.prof; exact calls and times, the agent about twice as slow).
SAMPLER = """\
import collections, json, os, sys, threading, time

def _sample(folder):
    main = threading.main_thread().ident
    while not os.path.exists(os.path.join(folder, "start")):
        time.sleep(0.1)
    own, inclusive, project = collections.Counter(), collections.Counter(), collections.Counter()
    total, stop = 0, os.path.join(folder, "stop")
    while total % 50 or not os.path.exists(stop):
        time.sleep(0.01)
        frame = sys._current_frames().get(main)
        if frame is None:
            continue
        total += 1
        names, first_project = [], None
        while frame is not None:
            code = frame.f_code
            path = code.co_filename
            for root in ("/agent/", "/drivers/", "/buffer/"):
                if root in path and "site-packages" not in path:
                    path = root[1:] + path.rsplit(root, 1)[1]
                    if first_project is None:
                        first_project = len(names)
                    break
            else:
                path = "/".join(path.rsplit("/", 2)[-2:])
            names.append(f"{code.co_qualname} ({path}:{code.co_firstlineno})")
            frame = frame.f_back
        own[names[0]] += 1
        inclusive.update(set(names))
        if names[0].startswith("EpollSelector.select "):
            project["(idle: the event loop waiting in select)"] += 1
        elif first_project is not None:
            project[names[first_project]] += 1
    result = {
        "samples": total,
        "own": own.most_common(40),
        "inclusive": inclusive.most_common(80),
        "project": project.most_common(40),
    }
    with open(os.path.join(folder, "profile.json"), "w") as out:
        json.dump(result, out, indent=1)

def _cprofile(folder):
    import asyncio, cProfile, gc
    while not os.path.exists(os.path.join(folder, "start")):
        time.sleep(0.1)
    loop = next(
        o for o in gc.get_objects() if isinstance(o, asyncio.BaseEventLoop) and o.is_running()
    )
    profiler = cProfile.Profile()
    loop.call_soon_threadsafe(profiler.enable)  # on the loop's thread: it profiles that one
    while not os.path.exists(os.path.join(folder, "stop")):
        time.sleep(0.1)

    def finish():
        profiler.disable()
        profiler.dump_stats(os.path.join(folder, "agent.prof.tmp"))
        os.replace(os.path.join(folder, "agent.prof.tmp"), os.path.join(folder, "agent.prof"))

    loop.call_soon_threadsafe(finish)

if os.environ.get("FLOORGATE_BENCH_PROFILE"):
    threading.Thread(
        target=_cprofile if os.environ.get("FLOORGATE_BENCH_PROFILER") == "cprofile" else _sample,
        args=(os.environ["FLOORGATE_BENCH_PROFILE"],),
        daemon=True,
    ).start()
"""


@dataclasses.dataclass(frozen=True)
class Size:
    devices: int  # Modbus PLCs, one port each
    registers: int  # holding registers per PLC
    machines: int  # OPC UA folders (machines)
    items: int  # OPC UA items per machine
    warmup: float
    window: float
    drain: float

    @property
    def modbus_signals(self) -> int:
        return self.devices * self.registers

    @property
    def opcua_signals(self) -> int:
        return self.machines * self.items

    @property
    def signals(self) -> int:
        return self.modbus_signals + self.opcua_signals

    def describe(self) -> str:
        return (
            f"{self.modbus_signals:,} Modbus registers on {self.devices} PLCs + "
            f"{self.opcua_signals:,} OPC UA items, {100 // CHANGE_EVERY} % changing a second"
        )


FULL = Size(devices=40, registers=500, machines=100, items=100, warmup=20, window=60, drain=60)
QUICK = Size(devices=4, registers=500, machines=10, items=100, warmup=5, window=10, drain=20)


# -- the server processes ------------------------------------------------------------


class RoundLog:
    """A server's log of its rounds, one JSON line each: round, start and end (wall
    clock), the changes made, the process's CPU seconds at the end and how late the round
    started against its schedule."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1)

    def write(self, round_: int, start: float, changes: int, late: float) -> None:
        entry = {
            "round": round_,
            "start": start,
            "end": time.time(),
            "changes": changes,
            "cpu": time.process_time(),
            "late": late,
        }
        self._file.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        self._file.close()


async def every_second(log: RoundLog, one_round: Any) -> None:
    """Call ``await one_round(r)`` (which returns the changes it made) for r = 1, 2, ...
    once a second at a fixed rate, logging each round."""
    loop = asyncio.get_running_loop()
    scheduled = loop.time()
    round_ = 0
    while True:
        round_ += 1
        late = loop.time() - scheduled
        start = time.time()
        changes = await one_round(round_)
        log.write(round_, start, changes, late)
        scheduled += 1.0
        await asyncio.sleep(max(0.0, scheduled - loop.time()))


def modbus_device(image: list[int]) -> Any:
    """A pymodbus SimDevice (unit id 1) whose holding (and input) registers show
    ``image``: each read copies the registers asked for from it."""
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    async def refresh(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if function_code in (3, 4) and set_values is None:
            offset = address - start_address
            registers[offset : offset + count] = image[address : address + count]

    words = [SimData(0, count=len(image), values=0, datatype=SimType.REGISTERS, readonly=True)]
    bits = [SimData(0, values=[False] * 16, datatype=SimType.BITS, readonly=True)]
    return SimDevice(id=1, simdata=(bits, list(bits), words, list(words)), action=refresh)


async def serve_modbus(devices: int, registers: int, log_path: Path) -> None:
    """Server process: ``devices`` PLCs of ``registers`` holding registers, one port
    each; every second round r sets r on every CHANGE_EVERY-th register of each. Prints
    the ports as JSON, serves until stdin ends."""
    from pymodbus.server import ModbusTcpServer

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    images = [[0] * registers for _ in range(devices)]
    servers, ports = [], []
    for image in images:
        server = ModbusTcpServer(modbus_device(image), address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server)
        listener = cast(asyncio.Server, server.transport)
        ports.append(int(listener.sockets[0].getsockname()[1]))

    async def one_round(round_: int) -> int:
        value = round_ & 0xFFFF
        first = round_ % CHANGE_EVERY
        for image in images:
            image[first::CHANGE_EVERY] = [value] * len(range(first, registers, CHANGE_EVERY))
        return devices * len(range(first, registers, CHANGE_EVERY))

    log = RoundLog(log_path)
    print(json.dumps(ports), flush=True)
    writer = asyncio.create_task(every_second(log, one_round))
    try:
        await asyncio.to_thread(sys.stdin.read)
    finally:
        writer.cancel()
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        log.close()


def opcua_folders(machines: int, items: int) -> list[tuple[str, list[str]]]:
    """(machine, its items' node names): ua000: ua000.v00 ... ua000.v99, ..."""
    names = [f"{OPCUA_PREFIX}{m:03d}" for m in range(machines)]
    return [(name, [f"{name}.v{i:02d}" for i in range(items)]) for name in names]


async def serve_opcua(machines: int, items: int, log_path: Path) -> None:
    """Server process: ``machines`` folders of ``items`` Double variables; every second
    round r writes r to every CHANGE_EVERY-th variable (a new DataValue each). Prints the
    endpoint, serves until stdin ends."""
    from datetime import UTC, datetime

    from asyncua import ua

    server, endpoint, nodes = await opcua_server(NAMESPACE_URI, opcua_folders(machines, items))
    double = ua.VariantType.Double

    async def one_round(round_: int) -> int:
        now = datetime.now(UTC)
        value = float(round_)
        written = 0
        for index in range(round_ % CHANGE_EVERY, len(nodes), CHANGE_EVERY):
            await server.write_attribute_value(
                nodes[index],
                ua.DataValue(ua.Variant(value, double), SourceTimestamp=now, ServerTimestamp=now),
            )
            written += 1
            if written % 500 == 0:
                await asyncio.sleep(0)
        return written

    log = RoundLog(log_path)
    async with server:
        print(endpoint, flush=True)
        writer = asyncio.create_task(every_second(log, one_round))
        try:
            await asyncio.to_thread(sys.stdin.read)
        finally:
            writer.cancel()
            log.close()


def read_rounds(path: Path) -> list[dict[str, Any]]:
    rounds = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            rounds.append(json.loads(line))
    return rounds


# -- the receiver ----------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the receiver got: sample events by (server, round), with the wall clock of
    the last one of each; all events."""

    events: int = 0
    by_round: collections.Counter[tuple[str, int]] = dataclasses.field(
        default_factory=collections.Counter
    )
    last: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)

    def add(self, body: bytes) -> None:
        now = time.time()
        batch = json.loads(body)
        self.events += len(batch)
        for event in batch:
            if event.get("type") != "sample":
                continue
            data = event["data"]
            value = data.get("value")
            if not isinstance(value, int | float):
                continue
            key = (data["signal"][:2], int(value))
            self.by_round[key] += 1
            self.last[key] = now

    def delivered(self, server: str, rounds: Sequence[int]) -> int:
        return sum(self.by_round[(server, r)] for r in rounds)


# -- the agent -----------------------------------------------------------------------


def scale_config(
    state_dir: Path, endpoint: str, ports: list[int], size: Size, health_port: int, url: str
) -> dict[str, Any]:
    """Templates keep it small: one for the PLCs (a range of registers, each sampled)
    and one for the OPC UA machines (its items, each sampled)."""
    items = [f"v{i:02d}" for i in range(size.items)]
    sources: list[dict[str, Any]] = [
        {"name": OPCUA_SOURCE, "type": "opcua", "endpoint": endpoint, "publishing_interval": "1s"}
    ]
    sources += [
        {
            "name": f"plc{d:02d}",
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "scan_interval": "1s",
        }
        for d, port in enumerate(ports)
    ]
    templates = {
        "plc": {
            "ranges": [
                {
                    "input_type": "holding",
                    "addresses": f"0-{size.registers - 1}",
                    "data_type": "uint16",
                    "sample": {"deadband": 0},
                }
            ]
        },
        "ua_machine": {
            "signals": [
                {
                    "name": item,
                    "node_id": f"nsu={NAMESPACE_URI};s={{machine}}.{item}",
                    "data_type": "float64",
                }
                for item in items
            ],
            "samples": [{"signal": item, "deadband": 0} for item in items],
        },
    }
    machines = [
        {"name": f"{MODBUS_PREFIX}{d:02d}", "template": "plc", "source": f"plc{d:02d}"}
        for d in range(len(ports))
    ]
    machines += [
        {"name": name, "template": "ua_machine", "source": OPCUA_SOURCE}
        for name, _ in opcua_folders(size.machines, size.items)
    ]
    return {
        "agent": {"id": "bench-plant-scale", "site": "plant", "state_dir": str(state_dir)},
        "sources": sources,
        "templates": templates,
        "machines": machines,
        "destinations": [{"name": "receiver", "type": "http", "url": url}],
        "health": {"port": health_port},
    }


async def pending_now(port: int) -> float:
    """floorgate_buffer_pending, all destinations."""
    text = (await http_get(port, "/metrics")).text
    return sum(
        float(line.rsplit(None, 1)[1])
        for line in text.splitlines()
        if line.startswith("floorgate_buffer_pending")
    )


def threads_used(
    pid: int, before: dict[int, float], after: dict[int, float]
) -> list[tuple[float, str]]:
    """(CPU seconds, name) of each thread between the readings, the busiest first; the
    main thread (the event loop's) is named "main"."""
    used = [
        (after[tid] - before.get(tid, 0.0), "main" if tid == pid else thread_name(pid, tid))
        for tid in after
    ]
    return sorted(used, reverse=True)


def thread_name(pid: int, tid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    return "?"


def run_queue_seconds(pid: int, tid: int) -> float:
    """Seconds the thread spent runnable but waiting for a CPU (/proc schedstat's second
    field): what the other processes on the machine took from it."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except OSError:
        return math.nan
    return int(fields[1]) / 1e9


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares growth per second of (time, value) points."""
    if len(points) < 2:
        return math.nan
    return statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope


async def window_figures(
    pid: int, port: int, window: float, tally: Tally, profile: Path | None
) -> dict[str, Any]:
    load_start = loadavg()
    if profile is not None:
        (profile / "start").touch()
    received = tally.events
    before = await counters(port)
    pending = [(0.0, await pending_now(port))]
    threads = thread_cpu_seconds(pid)
    waited = run_queue_seconds(pid, pid)
    cpu, system = cpu_seconds(pid), system_seconds(pid)
    wall_start, start = time.time(), time.monotonic()
    highest = memory(pid)["VmRSS"]
    end = start + window
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(MEMORY_STEP, left))
        highest = max(highest, memory(pid)["VmRSS"])
        pending.append((time.monotonic() - start, await pending_now(port)))
    cpu, system = cpu_seconds(pid) - cpu, system_seconds(pid) - system
    wall = time.monotonic() - start
    if profile is not None:
        (profile / "stop").touch()
    waited = run_queue_seconds(pid, pid) - waited
    wall_end = time.time()
    used_by = threads_used(pid, threads, thread_cpu_seconds(pid))
    used = memory(pid)
    received = tally.events - received
    after = await counters(port)
    return {
        "wall": wall,
        "span": (wall_start, wall_end),
        "cpu": 100.0 * cpu / wall,
        "system": 100.0 * system / wall,
        "busiest": 100.0 * used_by[0][0] / wall,
        "busiest_name": used_by[0][1],
        "others": 100.0 * sum(seconds for seconds, _ in used_by[1:]) / wall,
        "second": (100.0 * used_by[1][0] / wall, used_by[1][1]) if len(used_by) > 1 else None,
        "waited": 100.0 * waited / wall,
        "rss": used["VmRSS"],
        "highest": max(highest, used["VmRSS"]),
        "hwm": used.get("VmHWM", used["VmRSS"]),
        "samples": (after["samples"] - before["samples"]) / wall,
        "created": (after["events"] - before["events"]) / wall,
        "delivered_agent": (after["delivered"] - before["delivered"]) / wall,
        "received": received / wall,
        "pending": pending,
        "load": (load_start, loadavg()),
    }


async def drain(tally: Tally, keys: list[tuple[str, int]], made: int, limit: float) -> float:
    """Wait until every change of the window was delivered, or none came for DRAIN_QUIET
    seconds, or ``limit`` passed; the seconds waited."""
    start = time.monotonic()
    seen, quiet_since = -1, start
    while (now := time.monotonic()) - start < limit:
        got = sum(tally.by_round[key] for key in keys)
        if got >= made:
            break
        if got != seen:
            seen, quiet_since = got, now
        elif now - quiet_since >= DRAIN_QUIET:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - start


def server_figures(rounds: list[dict[str, Any]], span: tuple[float, float]) -> dict[str, Any]:
    """The rounds a server started in the window: which, the changes made, their rate,
    the longest round, the latest start and the server's CPU."""
    inside = [r for r in rounds if span[0] <= r["start"] < span[1]]
    if len(inside) < 2:
        raise RuntimeError(f"a server made {len(inside)} rounds in the window: it is stuck")
    seconds = span[1] - span[0]
    cpu_wall = inside[-1]["end"] - inside[0]["end"]
    return {
        "rounds": [r["round"] for r in inside],
        "starts": {r["round"]: r["start"] for r in inside},
        "made": sum(r["changes"] for r in inside),
        "rate": sum(r["changes"] for r in inside) / seconds,
        "longest": max(r["end"] - r["start"] for r in inside),
        "late": max(r["late"] for r in inside),
        "cpu": 100.0 * (inside[-1]["cpu"] - inside[0]["cpu"]) / cpu_wall if cpu_wall else 0.0,
    }


def prepare_profile(folder: Path) -> Path:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("start", "stop", "profile.json", "agent.prof"):
        (folder / name).unlink(missing_ok=True)
    (folder / "sitecustomize.py").write_text(SAMPLER)
    return folder


def print_profile(folder: Path, top: int = 25) -> None:
    """The profiler's figures: cProfile's, or the sampler's as shares of the main thread's
    samples."""
    for _ in range(50):  # the sampler writes its file within a sample or two of the stop
        if (folder / "agent.prof").exists() or (folder / "profile.json").exists():
            break
        time.sleep(0.1)
    if (folder / "agent.prof").exists():
        stats = pstats.Stats(str(folder / "agent.prof")).strip_dirs()
        print(f"\ncProfile of the event loop's thread over the window ({folder / 'agent.prof'}):")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return
    path = folder / "profile.json"
    if not path.exists():
        print(f"no {path}: the sampler did not run")
        return
    found = json.loads(path.read_text())
    total = found["samples"] or 1
    print(f"\nmain thread, {found['samples']} stack samples over the window ({path}):")
    for title, key in (
        ("own (top of stack)", "own"),
        ("innermost floorgate function", "project"),
        ("inclusive", "inclusive"),
    ):
        print(f"  {title}:")
        for name, count in found[key][:top]:
            print(f"    {100.0 * count / total:5.1f} %  {name}")


def keep_files(keep: Path, texts: dict[str, str], paths: list[Path]) -> None:
    """What to look at when the agent does not keep pace: its log, config, /readyz and
    /metrics at the end, the servers' round logs."""
    keep.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (keep / name).write_text(text)
    for path in paths:
        shutil.copy(path, keep / path.name)


@contextlib.asynccontextmanager
async def receiving(tally: Tally) -> AsyncIterator[str]:
    server, url = await http_receiver(tally.add)
    async with server:
        yield url


async def measure(
    tmp: Path,
    size: Size,
    tree: Path,
    env: dict[str, str],
    keep: Path | None,
    profile: Path | None,
) -> dict[str, Any]:
    tally = Tally()
    modbus_log, opcua_log = tmp / "modbus-rounds.jsonl", tmp / "opcua-rounds.jsonl"
    started = time.monotonic()
    async with (
        server_process(
            __file__,
            "--serve-opcua",
            str(size.machines),
            "--items",
            str(size.items),
            "--rounds",
            str(opcua_log),
        ) as endpoint,
        server_process(
            __file__,
            "--serve-modbus",
            str(size.devices),
            "--registers",
            str(size.registers),
            "--rounds",
            str(modbus_log),
        ) as served,
        receiving(tally) as url,
    ):
        servers_ready = time.monotonic() - started
        port = free_port()
        config = scale_config(tmp / "state", endpoint, json.loads(served), size, port, url)
        async with running_agent(tree, tmp, config, env, size.opcua_signals) as (proc, _, ready):
            await asyncio.sleep(size.warmup)
            found = await window_figures(proc.pid, port, size.window, tally, profile)
            span = found["span"]
            servers = {
                MODBUS_PREFIX: server_figures(read_rounds(modbus_log), span),
                OPCUA_PREFIX: server_figures(read_rounds(opcua_log), span),
            }
            keys = [(name, r) for name, s in servers.items() for r in s["rounds"]]
            made = sum(s["made"] for s in servers.values())
            found["drain"] = await drain(tally, keys, made, size.drain)
            found["pending_after_drain"] = await pending_now(port)
            report = (await http_get(port, "/readyz")).json()
            metrics = (await http_get(port, "/metrics")).text
    if keep is not None:
        texts = {
            "readyz.json": json.dumps(report, indent=1),
            "metrics.txt": metrics,
            "config.yaml": yaml.safe_dump(config),
        }
        keep_files(keep, texts, [tmp / "agent.log", modbus_log, opcua_log])
    for name, server in servers.items():
        server["delivered"] = tally.delivered(name, server["rounds"])
        server["times"] = sorted(
            tally.last[(name, r)] - server["starts"][r]
            for r in server["rounds"]
            if (name, r) in tally.last
        )
    found.update(
        servers=servers,
        servers_ready=servers_ready,
        subscribed=ready,
        config_lines=len(yaml.safe_dump(config).splitlines()),
        subscribed_items=report["sources"][OPCUA_SOURCE].get("subscribed_items"),
    )
    return found


def rows_of(found: dict[str, Any], size: Size, where: str) -> list[Row]:
    per_thousand = size.signals / 1000
    rss = found["rss"] / MIB
    servers = found["servers"]
    modbus, opcua = servers[MODBUS_PREFIX], servers[OPCUA_PREFIX]
    made = modbus["made"] + opcua["made"]
    delivered = modbus["delivered"] + opcua["delivered"]
    nominal = size.signals / CHANGE_EVERY  # changes a second
    samples_expected = size.modbus_signals + size.opcua_signals / CHANGE_EVERY
    times = sorted(modbus["times"] + opcua["times"])
    pending = found["pending"]
    growth = slope(pending)
    # What "flat" allows, events/s: pending moves by whole batches, and by a whole commit
    # interval's events (buffer.commit_interval) at each commit, so over the window a
    # reading's phase against the commits alone tilts the slope by up to that much.
    window = pending[-1][0] - pending[0][0] if len(pending) > 1 else 1.0
    swing = nominal * BufferConfig().commit_interval / max(window, 1.0)
    flat = 0.01 * nominal + swing
    drained = f"after a drain of {found['drain']:.0f} s"
    keeps_pace = delivered >= made and growth <= flat
    rows = [
        row(
            SCENARIO,
            f"agent CPU over {found['wall']:.0f} s ({size.describe()}{where})",
            found["cpu"],
            "% of a core",
        ),
        row(SCENARIO, "of which in the kernel (stime)", found["system"], "% of a core"),
        row(
            SCENARIO,
            f"busiest thread's CPU ({found['busiest_name']}; the GIL makes one core the ceiling)",
            found["busiest"],
            "% of a core",
            ceiling=100.0,
            ceiling_label="one core",
        ),
        row(
            SCENARIO,
            "the other threads' CPU"
            + (
                f" (busiest: {found['second'][1]}, {found['second'][0]:.1f} %)"
                if found["second"]
                else ""
            ),
            found["others"],
            "% of a core",
        ),
        row(
            SCENARIO,
            "main thread runnable but waiting for a CPU (schedstat: other processes' load)",
            found["waited"],
            "% of the time",
        ),
        row(
            SCENARIO,
            f"agent CPU per 1,000 signals ({size.signals:,} signals)",
            found["cpu"] / per_thousand,
            "% of a core",
        ),
        row(SCENARIO, "RSS at the end of the window", rss, "MiB"),
        row(SCENARIO, "highest RSS seen in the window (5 s steps)", found["highest"] / MIB, "MiB"),
        row(SCENARIO, "peak RSS (VmHWM) since start", found["hwm"] / MIB, "MiB"),
        row(
            SCENARIO, "RSS per 1,000 signals (at the end of the window)", rss / per_thousand, "MiB"
        ),
        row(
            SCENARIO,
            "samples reaching the rules (/metrics)",
            found["samples"],
            "/s",
            ceiling=samples_expected,
            ceiling_label="every register a second + every OPC UA change",
        ),
        row(
            SCENARIO,
            "events created by the rules (/metrics)",
            found["created"],
            "/s",
            ceiling=nominal,
            ceiling_label=f"{100 // CHANGE_EVERY} % of the signals a second",
        ),
        row(
            SCENARIO,
            "events delivered (received in the window)",
            found["received"],
            "/s",
            ceiling=(made / found["wall"]),
            ceiling_label="changes the servers made",
        ),
        row(
            SCENARIO,
            "Modbus server: register changes made",
            modbus["rate"],
            "/s",
            ceiling=size.modbus_signals / CHANGE_EVERY,
            ceiling_label="as planned",
        ),
        row(
            SCENARIO,
            "OPC UA server: item changes made (its own rate; one asyncua process)",
            opcua["rate"],
            "/s",
            ceiling=size.opcua_signals / CHANGE_EVERY,
            ceiling_label="as planned",
        ),
        row(
            SCENARIO,
            "OPC UA server: longest write round",
            opcua["longest"],
            "s",
            target="<= 1 s",
            met=opcua["longest"] <= 1.0,
        ),
        row(SCENARIO, "OPC UA server process CPU", opcua["cpu"], "% of a core"),
        row(SCENARIO, "Modbus server process CPU", modbus["cpu"], "% of a core"),
        row(
            SCENARIO,
            f"keeps pace: Modbus changes of the window delivered ({drained})",
            modbus["delivered"],
            "events",
            ceiling=modbus["made"],
            ceiling_label="changes made",
            target="all",
            met=modbus["delivered"] >= modbus["made"],
        ),
        row(
            SCENARIO,
            f"keeps pace: OPC UA changes of the window delivered ({drained})",
            opcua["delivered"],
            "events",
            ceiling=opcua["made"],
            ceiling_label="changes made",
            target="all",
            met=opcua["delivered"] >= opcua["made"],
        ),
        row(
            SCENARIO,
            "change-to-delivery time of the window's rounds (last event of a round), median",
            statistics.median(times) if times else math.nan,
            "s",
        ),
        row(
            SCENARIO,
            "change-to-delivery time of the window's rounds, longest",
            max(times) if times else math.nan,
            "s",
        ),
        row(SCENARIO, "backlog (pending) at the window's start", pending[0][1], "events"),
        row(SCENARIO, "backlog (pending) at the window's end", pending[-1][1], "events"),
        row(
            SCENARIO,
            f"backlog growth over the window (least squares of {len(pending)} readings)",
            growth,
            "events/s",
            target=f"<= {flat:g}/s (flat)",
            met=growth <= flat,
        ),
        row(
            SCENARIO,
            "keeps pace: every change delivered and the backlog flat",
            1.0 if keeps_pace else 0.0,
            "",
            target="1 (yes)",
            met=keeps_pace,
        ),
        row(SCENARIO, "load average (1 min) at the window's start", found["load"][0], ""),
        row(SCENARIO, "load average (1 min) at the window's end", found["load"][1], ""),
        row(SCENARIO, "servers ready (processes started, nodes made)", found["servers_ready"], "s"),
        row(SCENARIO, "agent start to all OPC UA items subscribed", found["subscribed"], "s"),
        row(
            SCENARIO,
            f"config with templates and ranges ({size.signals:,} signals)",
            found["config_lines"],
            "lines",
        ),
    ]
    return rows


async def run(
    quick: bool,
    window: float | None,
    drain_s: float | None,
    tree: Path,
    env: dict[str, str],
    keep: Path | None = None,
    profile: Path | None = None,
    profiler: str = "sample",
) -> list[Row]:
    size = QUICK if quick else FULL
    agent_env = env
    if profile is not None:
        profile = prepare_profile(profile)
        agent_env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(profile), str(tree)]),
            "FLOORGATE_BENCH_PROFILE": str(profile),
            "FLOORGATE_BENCH_PROFILER": profiler,
        }
    size = dataclasses.replace(size, window=window or size.window, drain=drain_s or size.drain)
    with tempfile.TemporaryDirectory(prefix="fg-plant-scale-") as name:
        found = await measure(Path(name), size, tree, agent_env, keep, profile)
    if found["received"] <= 0:
        raise RuntimeError("no event reached the receiver in the window: the plant did not run")
    where = "" if tree == ROOT else f"; agent from {tree}"
    where += "".join(f"; {key}={value}" for key, value in sorted(env.items()))
    if profile is not None:
        where += f"; event loop under --profiler {profiler}"
    return rows_of(found, size, where)


def main() -> None:
    cli = agent_parser(__doc__)
    cli.add_argument("--drain", type=float, default=None, help="longest drain, seconds")
    cli.add_argument(
        "--keep", type=Path, default=None, help="keep the agent's log, config, /readyz here"
    )
    cli.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the agent's event-loop stack over the window; figures in DIR",
    )
    cli.add_argument(
        "--profiler",
        choices=("sample", "cprofile"),
        default="sample",
        help="with --profile: stack samples (default) or cProfile",
    )
    cli.add_argument("--serve-opcua", type=int, help=argparse.SUPPRESS)
    cli.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    cli.add_argument("--serve-modbus", type=int, help=argparse.SUPPRESS)
    cli.add_argument("--registers", type=int, default=0, help=argparse.SUPPRESS)
    cli.add_argument("--rounds", type=Path, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.serve_opcua:
        asyncio.run(serve_opcua(args.serve_opcua, args.items, args.rounds))
        return
    if args.serve_modbus:
        asyncio.run(serve_modbus(args.serve_modbus, args.registers, args.rounds))
        return
    tree = args.agent_tree.resolve()
    if not (tree / "agent" / "__main__.py").is_file():
        raise SystemExit(f"{tree} has no agent/__main__.py")
    rows = asyncio.run(
        run(
            args.quick,
            args.window,
            args.drain,
            tree,
            environment(args.env),
            args.keep,
            args.profile,
            args.profiler,
        )
    )
    finish(rows, args.json)
    if args.profile is not None:
        print_profile(args.profile.resolve())


if __name__ == "__main__":
    main()
