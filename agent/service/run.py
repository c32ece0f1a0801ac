"""`floorgate run`: the agent as a service. Signals (TERM/INT stop, HUP reloads the
config), systemd notifications (READY, STATUS, RELOADING, STOPPING, WATCHDOG)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from pathlib import Path
from typing import Any

from agent.config.loader import ConfigError, load_config
from agent.config.models import FloorgateConfig
from agent.monitoring.report import health_report
from agent.service.reload import ReloadRefused
from agent.service.runtime import Agent
from agent.service.sdnotify import SystemdNotifier

log = logging.getLogger("floorgate.service")

STATUS_INTERVAL = 2.0


def status_line(report: dict[str, Any]) -> str:
    """The one line `systemctl status` shows, e.g. "degraded: 3/4 sources up, 120 events
    pending, 1/1 destinations delivering"."""
    sources = report["sources"]
    up = sum(1 for s in sources.values() if s["state"] == "connected")
    destinations = report["destinations"]
    delivering = sum(1 for d in destinations.values() if d["state"] == "connected")
    return (
        f"{report['status']}: {up}/{len(sources)} sources up, "
        f"{report['buffer']['pending']} events pending, "
        f"{delivering}/{len(destinations)} destinations delivering"
    )


async def _report_status(agent: Agent, notifier: SystemdNotifier) -> None:
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        notifier.status(status_line(health_report(agent)))


async def _reload(agent: Agent, path: Path, notifier: SystemdNotifier) -> None:
    notifier.reloading()
    try:
        # In a thread: the event loop goes on serving while the file is parsed.
        new = await asyncio.to_thread(load_config, path)
        checksum = config_checksum(path)
        plan = await agent.reload(new, checksum)
    except ConfigError as exc:
        log.error("config reload refused; the running config stays: %s", _one_line(exc.render()))
    except ReloadRefused as exc:
        log.error("config reload refused; the running config stays: %s", exc)
    else:
        if plan.empty:
            log.info("config reloaded; nothing changed checksum=%s", checksum)
        else:
            log.info("config reloaded restarted=%s checksum=%s", plan.describe(), checksum)
    notifier.ready(status_line(health_report(agent)))


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def config_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


async def serve(path: Path, config: FloorgateConfig) -> None:
    """Run until SIGTERM/SIGINT. ``config`` is what the caller loaded from ``path`` (loaded
    once: a second copy would stay in memory for the agent's whole life); ``path`` is
    read again on SIGHUP."""
    agent = Agent(config, config_checksum=config_checksum(path))
    notifier = SystemdNotifier()
    wake = asyncio.Event()
    requests: set[str] = set()

    def request(what: str) -> None:
        requests.add(what)
        wake.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request, "stop")
    loop.add_signal_handler(signal.SIGHUP, request, "reload")
    background: list[asyncio.Task[None]] = []
    try:
        await agent.start()
        notifier.ready(status_line(health_report(agent)))
        background.append(asyncio.create_task(_report_status(agent, notifier)))
        interval = notifier.watchdog_interval()
        if interval is not None:
            background.append(asyncio.create_task(notifier.watchdog(agent.alive, interval)))
        while "stop" not in requests:
            await wake.wait()
            wake.clear()
            if "reload" in requests and "stop" not in requests:
                requests.discard("reload")
                await _reload(agent, path, notifier)
    finally:
        notifier.stopping()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await agent.stop()
        notifier.close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
