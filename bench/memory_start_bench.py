"""Memory and start benchmark: `floorgate run` against a bare interpreter.

    .venv/bin/python bench/memory_start_bench.py [--quick] [--json PATH]

The agent runs as systemd would start it (``floorgate run --config``, NOTIFY_SOCKET set)
with the simulated press line's config: one Modbus TCP source on the simulated line
(served by this process), its three machines, one HTTP destination (an EventReceiver
served here), health server on. Each start gets a fresh state directory.

- start: from spawning the process to the READY=1 datagram (median of 3 starts; 1 with
  --quick), against spawning ``python -c "import <the same modules>"`` until it exits;
- memory: VmRSS (and the peak, VmHWM) of the agent after it polled for a few seconds,
  against the RSS of that bare interpreter once it imported the same modules.

"The same modules" are the top-level modules the agent had loaded (stdlib and
third-party, without floorgate's own packages), recorded at its exit by a
sitecustomize hook in the memory run only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from bench.common import (
    MIB,
    ROOT,
    NotifySocket,
    Row,
    finish,
    log_tail,
    memory,
    parser,
    row,
    start_agent,
    stop_agent,
)
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer, signal_table

TARGET_START = 1.5
TARGET_MEMORY_MIB = 100
OWN_PACKAGES = {"agent", "drivers", "buffer", "bench", "sitecustomize", "__main__"}
MODULE_HOOK = """\
import atexit, os, sys

def _record_modules():
    with open(os.environ["FG_BENCH_MODULES"], "w") as out:
        out.write("\\n".join(sorted({name.split(".")[0] for name in sys.modules})))

atexit.register(_record_modules)
"""
BASELINE = """\
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def line_config(state_dir: Path, modbus_port: int, receiver_url: str) -> dict[str, Any]:
    """The simulated press line as a plant would configure it: one Modbus TCP source,
    three machines (states with reasons, counters, an alarm, a sample), one HTTP
    destination, the health server on."""
    states = {0: "stopped", 1: "running", 2: "idle", 3: "down"}
    reasons = {10: "material_shortage", 20: "equipment_failure", 30: "setup"}

    def machine(name: str, counters: list[dict[str, Any]], **rules: Any) -> dict[str, Any]:
        state = {"signal": f"{name}.state", "map": states, "reason_signal": f"{name}.reason"}
        return {"name": name, "state": {**state, "reasons": reasons}, "counters": counters, **rules}

    return {
        "agent": {"id": "bench-gateway", "site": "plant", "state_dir": str(state_dir)},
        "sources": [
            {
                "name": "press-line-plc",
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "scan_interval": "1s",
                "signals": signal_table(),
            }
        ],
        "machines": [
            machine(
                "press1",
                [{"signal": "press1.good"}, {"signal": "press1.scrap", "kind": "scrap"}],
                alarms=[{"name": "hot", "signal": "press1.temperature", "high": 80}],
                samples=[{"signal": "press1.temperature", "deadband": 0.5}],
            ),
            machine("press2", [{"signal": "press2.good"}]),
            machine("packer1", [{"signal": "packer1.part_done", "mode": "edge"}]),
        ],
        "destinations": [{"name": "middleware", "type": "http", "url": receiver_url}],
        "health": {"port": 0},
    }


class Rig:
    """The simulated line and the receiver the agent talks to, and a place for files."""

    def __init__(self, tmp: Path, modbus_port: int, receiver_url: str) -> None:
        self.tmp = tmp
        self.modbus_port = modbus_port
        self.receiver_url = receiver_url
        self.runs = 0

    async def run_agent(
        self, settle: float, env: dict[str, str] | None = None
    ) -> tuple[float, dict[str, int]]:
        """Start an agent with a fresh state dir; (seconds to READY, memory after settle)."""
        self.runs += 1
        run_dir = self.tmp / f"run{self.runs}"
        run_dir.mkdir()
        config = run_dir / "config.yaml"
        state = line_config(run_dir / "state", self.modbus_port, self.receiver_url)
        config.write_text(yaml.safe_dump(state))
        notify = NotifySocket(run_dir / "notify.sock")
        log = run_dir / "agent.log"
        try:
            spawned = time.perf_counter()
            proc = start_agent(config, log, notify.path, env)
            try:
                try:
                    async with asyncio.timeout(60):
                        ready = await notify.wait_ready()
                except TimeoutError:
                    raise RuntimeError(f"agent not READY within 60 s:\n{log_tail(log)}") from None
                await asyncio.sleep(settle)
                if proc.poll() is not None:
                    raise RuntimeError(f"agent exited ({proc.returncode}):\n{log_tail(log)}")
                used = memory(proc.pid)
            finally:
                code = await stop_agent(proc)
            if code != 0:
                raise RuntimeError(f"agent stopped with exit code {code}:\n{log_tail(log)}")
        finally:
            notify.close()
        return ready - spawned, used


def baseline(modules: list[str]) -> tuple[float, int]:
    """Seconds from spawn to exit of an interpreter importing ``modules``, and its RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BASELINE, *modules],
        capture_output=True,
        check=True,
        text=True,
        cwd=ROOT,
    )
    return time.perf_counter() - started, int(done.stdout.strip())


async def measure(tmp: Path, quick: bool) -> dict[str, Any]:
    starts = 1 if quick else 3
    settle = 2.0 if quick else 5.0
    async with SimulatorServer(SimulatedLine()) as server, EventReceiver() as receiver:
        await server.start_tcp(port=0)
        rig = Rig(tmp, server.port, receiver.url)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(MODULE_HOOK)
        modules_file = tmp / "modules.txt"
        path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
        env = {"PYTHONPATH": path, "FG_BENCH_MODULES": str(modules_file)}
        _, used = await rig.run_agent(settle, env)
        delays = [(await rig.run_agent(0.0))[0] for _ in range(starts)]
        events = len(receiver.ids)
    modules = [
        name
        for name in modules_file.read_text().split()
        if name not in OWN_PACKAGES and not name.startswith("_")
    ]
    bare = [baseline(modules) for _ in range(starts)]
    return {
        "rss": used["VmRSS"],
        "peak": used.get("VmHWM", used["VmRSS"]),
        "start": statistics.median(delays),
        "bare_start": statistics.median(b[0] for b in bare),
        "bare_rss": statistics.median(b[1] for b in bare),
        "modules": len(modules),
        "starts": starts,
        "events": events,
    }


async def run(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="fg-memstart-") as name:
        found = await measure(Path(name), quick)
    if found["events"] == 0:
        raise RuntimeError("the agents delivered no event: the run did not really work")
    bare = f"bare python importing the same {found['modules']} modules"
    return [
        row(
            "memory",
            "RSS of floorgate run after start (Modbus on the simulator, HTTP destination)",
            found["rss"] / MIB,
            "MiB",
            ceiling=found["bare_rss"] / MIB,
            ceiling_label=bare,
            target=f"part of <= {TARGET_MEMORY_MIB} MiB with 5,000 tags + 1M backlog",
        ),
        row("memory", "peak RSS (VmHWM) of that run", found["peak"] / MIB, "MiB"),
        row(
            "start",
            f"process start to READY=1 (median of {found['starts']})",
            found["start"],
            "s",
            ceiling=found["bare_start"],
            ceiling_label=f"spawn to exit of {bare}",
            target=f"<= {TARGET_START:g} s",
            met=found["start"] <= TARGET_START,
        ),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    # The simulator's side of pymodbus dumps frames at ERROR when a client goes away.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
