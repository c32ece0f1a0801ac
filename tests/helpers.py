"""Small helpers shared by the integration tests (imported as tests.helpers)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from floorgate_demo.simulator import signal_table


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition (bounded): no fixed sleeps standing in for synchronisation."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    del what  # named for readers of the failing test's traceback


def line_config(
    state_dir: Path, modbus_port: int, receiver_url: str, health_port: int, **agent: Any
) -> dict[str, Any]:
    """The simulated line's config (as config.example.yaml), with fast reporting for tests."""
    state = {"map": {0: "stopped", 1: "running", 2: "idle", 3: "down"}, "min_duration": "0s"}
    reasons = {10: "material_shortage", 20: "equipment_failure", 30: "setup"}
    return {
        "agent": {"id": "gw-test", "site": "plant", "state_dir": str(state_dir), **agent},
        "sources": [
            {
                "name": "line-plc",
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "scan_interval": "250ms",
                "timeout": "500ms",
                "backoff_max": "1s",
                "signals": signal_table(),
            }
        ],
        "machines": [
            {
                "name": "press1",
                "state": {
                    **state,
                    "signal": "press1.state",
                    "reason_signal": "press1.reason",
                    "reasons": reasons,
                },
                "counters": [
                    {"signal": "press1.good", "kind": "good", "report_every": "1s"},
                    {"signal": "press1.scrap", "kind": "scrap", "report_every": "1s"},
                ],
                "alarms": [
                    {"name": "hot", "signal": "press1.temperature", "high": 80, "hysteresis": 2}
                ],
                "samples": [{"signal": "press1.temperature", "deadband": 1.0}],
            },
            {
                "name": "press2",
                "state": {
                    **state,
                    "signal": "press2.state",
                    "reason_signal": "press2.reason",
                    "reasons": reasons,
                },
                "counters": [{"signal": "press2.good", "kind": "good", "report_every": "1s"}],
            },
            {
                "name": "packer1",
                "state": {**state, "signal": "packer1.state"},
                "counters": [
                    {
                        "signal": "packer1.part_done",
                        "kind": "good",
                        "mode": "edge",
                        "report_every": "1s",
                    }
                ],
            },
        ],
        "destinations": [
            {
                "name": "middleware",
                "type": "http",
                "url": receiver_url,
                "timeout": "5s",
                "retry": {"initial": "100ms", "max": "500ms"},
            }
        ],
        "health": {"port": health_port},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_agent(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


async def stop_process(proc: subprocess.Popen[bytes], signum: int = 15) -> int:
    """Signal a process and wait for it in a thread, so servers on the test's event loop
    keep answering while it shuts down."""
    proc.send_signal(signum)
    return await asyncio.to_thread(proc.wait, 30)


def readyz(port: int) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    result: dict[str, Any] = response.json()
    return result


class NotifySocket:
    """The receiving end systemd would hold: collects (monotonic time, message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
