"""`floorgate demo`: the simulated line, the agent and an HTTP middleware receiver in one
process, with a live view of what flows. Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config.loader import ConfigError, load_config
from agent.config.models import FloorgateConfig
from agent.forwarders.http.config import HttpDestinationConfig
from agent.monitoring.report import health_report
from agent.service.runtime import Agent
from drivers.modbus.config import ModbusTcpConfig
from drivers.opcua.config import OpcUaConfig
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer

REFRESH_SECONDS = 2.0


def _machines_view(receiver: EventReceiver, config: FloorgateConfig) -> list[str]:
    """What the middleware has received, per machine: it proves the whole chain works."""
    state: dict[str, tuple[str, str]] = {}
    good: dict[str, int] = {}
    scrap: dict[str, int] = {}
    alarms: dict[str, set[str]] = {}
    for event in receiver.events:
        data: dict[str, Any] = event.get("data", {})
        machine = data.get("machine", "?")
        if event["type"] == "machine.state":
            reason = f" ({data['reason']})" if data.get("reason") else ""
            state[machine] = (data["state"] + reason, data["since"][11:19])
        elif event["type"] == "production.count":
            bucket = good if data["kind"] == "good" else scrap
            bucket[machine] = bucket.get(machine, 0) + int(data["quantity"])
        elif event["type"] == "alarm":
            raised = alarms.setdefault(machine, set())
            (raised.add if data["active"] else raised.discard)(data["alarm"])
    lines = [f"  {'machine':<10} {'state':<30} {'since':<9} {'good':>7} {'scrap':>6}  alarms"]
    for machine in config.machines:
        name = machine.name
        current, since = state.get(name, ("-", "-"))
        active = ", ".join(sorted(alarms.get(name, set()))) or "-"
        lines.append(
            f"  {name:<10} {current:<30} {since:<9}"
            f" {good.get(name, 0):>7} {scrap.get(name, 0):>6}  {active}"
        )
    return lines


def page_url(agent: Agent, config: FloorgateConfig) -> str | None:
    """The status page's address (None with the health server off)."""
    if agent.health_port is None:
        return None
    host = config.health.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{agent.health_port}/"


def _render(agent: Agent, receiver: EventReceiver, config: FloorgateConfig) -> str:
    report = health_report(agent)
    buffer = report["buffer"]
    page = page_url(agent, config)
    lines = [
        f"status page:  {page}  (signals: {page}signals)" if page else "status page:  off",
        f"floorgate demo  {datetime.now():%H:%M:%S}  status {report['status'].upper()}"
        + (f"  health {page}readyz" if page else ""),
        "",
        "received by the middleware (from the events the agent delivered):",
        *_machines_view(receiver, config),
        "",
        "sources:      " + "  ".join(f"{n} {s['state']}" for n, s in report["sources"].items()),
        "events made:  "
        + "  ".join(f"{t} {c}" for t, c in sorted(report["engine"]["events"].items())),
        f"buffer:       {buffer['events']} stored, {buffer['pending']} pending, "
        f"{buffer['dead_letters']} dead letters ({config.buffer_path})",
        "destinations: "
        + "  ".join(
            f"{n} {d['state']} delivered {d['delivered']}"
            for n, d in report["destinations"].items()
        ),
        f"receiver:     {len(receiver.events)} events, {receiver.duplicates} repeats",
    ]
    if report["reasons"]:
        lines += ["", "attention:"] + [f"  - {reason}" for reason in report["reasons"][:5]]
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def _start_opcua_simulator(
    stack: contextlib.AsyncExitStack, modbus: SimulatorServer, config: FloorgateConfig
) -> str | None:
    """Serve the same line over OPC UA for the first opcua source; returns its endpoint.
    The Modbus simulator steps the line when it serves; otherwise the OPC UA one does."""
    for source in config.sources:
        if isinstance(source, OpcUaConfig):
            from floorgate_demo.opcua_sim import (
                OpcUaSimulator,  # asyncua only when the demo uses it
            )
            from floorgate_demo.simulator import TICK

            url = urlsplit(source.endpoint)
            tick = None if modbus.port else TICK
            opcua = await stack.enter_async_context(OpcUaSimulator(modbus.line, tick=tick))
            await opcua.start(url.hostname or "127.0.0.1", url.port or 4840)
            return opcua.endpoint
    return None


def _demo_config(config_path: Path, state_dir: Path) -> FloorgateConfig:
    environ = dict(os.environ)
    environ["FLOORGATE__AGENT__STATE_DIR"] = str(state_dir.resolve())
    return load_config(config_path, environ=environ)


async def run_demo(config_path: Path, *, state_dir: Path, seed: int = 1) -> None:
    try:
        config = _demo_config(config_path, state_dir)
    except ConfigError as exc:
        raise SystemExit(exc.render()) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        simulator = await stack.enter_async_context(SimulatorServer(SimulatedLine(seed=seed)))
        for source in config.sources:
            if isinstance(source, ModbusTcpConfig):
                await simulator.start_tcp(source.host, source.port)
                break
        opcua = await _start_opcua_simulator(stack, simulator, config)
        receiver = EventReceiver()
        for destination in config.destinations:
            if isinstance(destination, HttpDestinationConfig):
                url = urlsplit(destination.url)
                await receiver.start(url.hostname or "127.0.0.1", url.port or 80)
                stack.push_async_callback(receiver.stop)
                break
        agent = Agent(config)
        await agent.start()
        stack.push_async_callback(agent.stop)
        also = f" and OPC UA {opcua}" if opcua else ""
        page = page_url(agent, config)
        if page:
            print(f"status page: {page} (open it in a browser)", flush=True)
        print(
            f"simulated line on Modbus TCP{also}, middleware receiver at {receiver.url}",
            flush=True,
        )
        interactive = sys.stdout.isatty()
        while not stop.is_set():
            view = _render(agent, receiver, config)
            print(("\x1b[2J\x1b[H" if interactive else "\n") + view, flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_SECONDS):
                    await stop.wait()
        print("\nstopping: committing what is in memory, closing connections ...", flush=True)
        started = time.monotonic()
    print(f"stopped cleanly in {time.monotonic() - started:.1f}s", flush=True)
