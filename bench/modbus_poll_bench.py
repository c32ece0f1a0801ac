"""Modbus polling benchmark: the agent's CPU reading 10 devices x 100 registers at 1 Hz.

    .venv/bin/python bench/modbus_poll_bench.py [--quick] [--json PATH]

This process serves ten simulated PLCs (floorgate_demo.simulator.SimulatorServer, one TCP port
each, every one with its own simulated line). ``floorgate run`` runs as a separate
process, with one modbus_tcp source per PLC (100 holding registers, addresses 0-99, each
a uint16 signal, scan_interval 1s), one machine per PLC (state, a counter and a process
sample) and an HTTP destination served here, so its CPU (from /proc/<pid>/stat) is the
agent's alone. After the agent is READY and has polled for a few seconds:

- agent CPU % of one core over the window (20 s; 6 s with --quick);
- requests per poll of all ten devices, counted at the servers: requests seen / (registers
  read / registers per poll), against the 1,000 a one-register-per-request reader needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from pymodbus.pdu import ModbusPDU

from bench.common import (
    CpuMeter,
    NotifySocket,
    Row,
    finish,
    log_tail,
    parser,
    row,
    start_agent,
    stop_agent,
)
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer

SCENARIO = "Modbus polling"
DEVICES = 10
REGISTERS = 100
MAX_PER_REQUEST = 125
TARGET_CPU = 5.0


class CountingServer(SimulatorServer):
    """A simulated PLC that also counts the registers it was asked for."""

    registers = 0
    requests = 0

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending and pdu.function_code in (3, 4):
            self.requests += 1
            self.registers += int(getattr(pdu, "count", 0))
        return super()._trace_pdu(sending, pdu)


def poll_config(state_dir: Path, ports: list[int], receiver_url: str) -> dict[str, Any]:
    sources, machines = [], []
    for d, port in enumerate(ports):
        device = f"plc{d:02d}"
        sources.append(
            {
                "name": device,
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": port,
                "scan_interval": "1s",
                "signals": [
                    {"name": f"{device}.r{r:03d}", "address": r, "data_type": "uint16"}
                    for r in range(REGISTERS)
                ],
            }
        )
        machines.append(
            {
                "name": f"machine{d:02d}",
                # The simulator's press1: state at 0, reason at 1, press2's good count at 12.
                "state": {
                    "signal": f"{device}.r000",
                    "map": {0: "stopped", 1: "running", 2: "idle", 3: "down"},
                    "reason_signal": f"{device}.r001",
                },
                "counters": [{"signal": f"{device}.r012", "report_every": "10s"}],
                "samples": [{"signal": f"{device}.r005", "deadband": 1000}],
            }
        )
    return {
        "agent": {"id": "bench-modbus", "site": "plant", "state_dir": str(state_dir)},
        "sources": sources,
        "machines": machines,
        "destinations": [{"name": "middleware", "type": "http", "url": receiver_url}],
        "health": {"port": 0},
    }


async def measure(tmp: Path, warmup: float, window: float) -> tuple[float, float, int]:
    """(agent CPU %, requests per poll of all devices, registers read in the window)."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for seed in range(DEVICES):
            server = await stack.enter_async_context(CountingServer(SimulatedLine(seed + 1)))
            await server.start_tcp(port=0)
            servers.append(server)
        receiver = await stack.enter_async_context(EventReceiver())
        config = tmp / "modbus.yaml"
        ports = [s.port for s in servers]
        config.write_text(yaml.safe_dump(poll_config(tmp / "state", ports, receiver.url)))
        notify = NotifySocket(tmp / "notify.sock")
        stack.callback(notify.close)
        log = tmp / "agent.log"
        proc = start_agent(config, log, notify.path)
        try:
            try:
                async with asyncio.timeout(60):
                    await notify.wait_ready()
            except TimeoutError:
                raise RuntimeError(f"agent not READY within 60 s:\n{log_tail(log)}") from None
            await asyncio.sleep(warmup)
            meter = CpuMeter(proc.pid)
            requests = sum(s.requests for s in servers)
            registers = sum(s.registers for s in servers)
            meter.start()
            await asyncio.sleep(window)
            cpu = meter.stop()
            requests = sum(s.requests for s in servers) - requests
            registers = sum(s.registers for s in servers) - registers
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited ({proc.returncode}):\n{log_tail(log)}")
        finally:
            await stop_agent(proc)
    if registers == 0:
        raise RuntimeError(f"the agent read no register:\n{log_tail(log)}")
    polls = registers / (DEVICES * REGISTERS)
    return cpu, requests / polls, registers


async def run(quick: bool) -> list[Row]:
    warmup, window = (3.0, 6.0) if quick else (5.0, 20.0)
    with tempfile.TemporaryDirectory(prefix="fg-modbus-") as name:
        cpu, per_poll, registers = await measure(Path(name), warmup, window)
    naive = DEVICES * REGISTERS
    needed = DEVICES * -(-REGISTERS // MAX_PER_REQUEST)
    return [
        row(
            SCENARIO,
            f"agent CPU, {DEVICES} devices x {REGISTERS} registers at 1 Hz ({window:g} s)",
            cpu,
            "% of a core",
            target=f"<= {TARGET_CPU:g} %",
            met=cpu <= TARGET_CPU,
        ),
        row(
            SCENARIO,
            f"requests per poll of {DEVICES} devices ({registers:,} registers read)",
            per_poll,
            "requests",
            ceiling=naive,
            ceiling_label="one register per request",
            target=f"<= {needed} (1 per 125 contiguous registers)",
            met=per_poll <= needed + 1e-9,
        ),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    # The servers' side of pymodbus dumps frames at ERROR when a client goes away.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
