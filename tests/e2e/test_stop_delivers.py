"""A graceful stop delivers the last partial count windows before the agent exits.

Counters report every hour here, so what the machines made during the test exists only
as the open windows; SIGTERM must report them and hand them to the destination that
answers, before the process ends — not at the next start.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.e2e.test_end_to_end import COUNTED, delivered_counts, machines_seen
from tests.helpers import (
    free_port,
    line_config,
    readyz,
    start_agent,
    stop_process,
    wait_until,
    write_config,
)


def _hourly_reports(config: dict[str, Any]) -> dict[str, Any]:
    for machine in config["machines"]:
        for counter in machine.get("counters", []):
            counter["report_every"] = "1h"
    return config


def _reads(health_port: int) -> int:
    report = readyz(health_port)
    return int(report["sources"]["line-plc"]["reads"]) if report else 0


@pytest.mark.slow
async def test_sigterm_delivers_the_open_count_windows_before_exit(tmp_path: Path) -> None:
    line = SimulatedLine(seed=11)
    line.freeze()
    log = tmp_path / "agent.log"
    health_port = free_port()
    async with SimulatorServer(line, tick=0.05) as simulator, EventReceiver() as receiver:
        await simulator.start_tcp(port=0)
        config = line_config(tmp_path / "state", simulator.port, receiver.url, health_port)
        path = write_config(tmp_path / "config.yaml", _hourly_reports(config))
        before = line.totals
        agent = start_agent(path, log)
        try:
            # the counters' baselines are committed with the first machine.state events
            await wait_until(
                lambda: machines_seen(receiver) == {"press1", "press2", "packer1"},
                60,
                "first states",
            )
            line.resume()
            await asyncio.sleep(2)
            line.freeze()
            after = line.totals
            # let the agent read the frozen image a few times (4 polls a second)
            reads = _reads(health_port)
            await wait_until(lambda: _reads(health_port) >= reads + 8, 30, "frozen image read")
            assert delivered_counts(receiver) == {}, "nothing is reported before the hour"
            assert await stop_process(agent, signal.SIGTERM) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    expected = {(m, k): after[m][k] - before[m][k] for m, k in COUNTED}
    assert expected[("press1", "good")] > 0
    got = delivered_counts(receiver)
    # delivered by the time the process ended: the receiver is stopped with it
    assert {key: got[key] for key in expected} == expected, log.read_text()[-3000:]
    assert receiver.conflicts == 0
    assert "stopping with events not yet delivered" not in log.read_text()


@pytest.mark.slow
async def test_sigterm_with_the_destination_down_keeps_the_windows_for_the_next_start(
    tmp_path: Path,
) -> None:
    line = SimulatedLine(seed=12)
    log = tmp_path / "agent.log"
    health_port = free_port()
    closed = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    async with SimulatorServer(line, tick=0.05) as simulator:
        await simulator.start_tcp(port=0)
        config = line_config(tmp_path / "state", simulator.port, closed, health_port)
        path = write_config(tmp_path / "config.yaml", _hourly_reports(config))
        agent = start_agent(path, log)
        try:

            def retrying() -> bool:
                report = readyz(health_port)
                return bool(report) and report["destinations"]["middleware"]["state"] in (
                    "retrying",
                    "disconnected",
                )

            await wait_until(retrying, 60, "destination down")
            assert await stop_process(agent, signal.SIGTERM) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    text = log.read_text()
    assert "stopping with events not yet delivered destination=middleware" in text, text[-3000:]
    assert "next=sent-after-the-next-start" in text
    assert "agent stopped" in text
