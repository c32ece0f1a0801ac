"""End to end: simulated line (real Modbus TCP) → agent process → real HTTP receiver.

The agent runs as its own process and is killed with SIGKILL in the middle; the counts
delivered must still add up exactly to what the simulated machines made.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import free_port, line_config, readyz, start_agent, wait_until, write_config

COUNTED = [("press1", "good"), ("press1", "scrap"), ("press2", "good")]
PRESS2_GOOD_REGISTER = 12


def delivered_counts(receiver: EventReceiver) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for event in receiver.events:
        if event["type"] == "production.count":
            totals[(event["data"]["machine"], event["data"]["kind"])] += event["data"]["quantity"]
    return totals


def machines_seen(receiver: EventReceiver) -> set[str]:
    return {e["data"]["machine"] for e in receiver.events if e["type"] == "machine.state"}


def assert_in_order_per_machine(events: list[dict[str, Any]]) -> None:
    by_machine: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_machine[event["data"]["machine"]].append(int(event["sequence"]))
    for machine, seqs in by_machine.items():
        assert seqs == sorted(seqs), f"events of {machine} arrived out of order"


async def stop_agent(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Signal the agent and wait in a thread: the simulator and receiver run on this
    test's event loop and must keep answering while the agent shuts down."""
    proc.send_signal(signum)
    return await asyncio.to_thread(proc.wait, 30)


@pytest.mark.slow
# buffer.commit_interval 1s: the kill loses up to a second of what the rules made; the
# counters resume from the raw value of their last committed report, so no part is lost.
@pytest.mark.parametrize("commit_interval", ["0s", "1s"])
async def test_counts_are_exact_across_a_sigkill_and_a_restart(
    tmp_path: Path, commit_interval: str
) -> None:
    line = SimulatedLine(seed=7)
    while line.holding[PRESS2_GOOD_REGISTER] < 65525:  # so press2's 16-bit counter wraps mid-test
        line.step()
    line.freeze()
    log = tmp_path / "agent.log"
    async with SimulatorServer(line, tick=0.05) as simulator, EventReceiver() as receiver:
        await simulator.start_tcp(port=0)
        raw = line_config(tmp_path / "state", simulator.port, receiver.url, free_port())
        raw["buffer"] = {"commit_interval": commit_interval}
        config = write_config(tmp_path / "config.yaml", raw)
        before = line.totals
        agent = start_agent(config, log)
        try:
            # First readings are the counters' baselines; they are committed with the
            # first machine.state events, so once those arrive the baseline is durable.
            await wait_until(
                lambda: machines_seen(receiver) == {"press1", "press2", "packer1"},
                60,
                "first states",
            )
            line.resume()
            await asyncio.sleep(3)
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            await asyncio.sleep(1.5)  # the line keeps producing while the agent is dead
            agent = start_agent(config, log)
            await asyncio.sleep(3)
            line.freeze()
            after = line.totals
            expected = {(m, k): after[m][k] - before[m][k] for m, k in COUNTED}
            assert expected[("press1", "good")] > 0 and expected[("press2", "good")] > 0

            def complete() -> bool:
                got = delivered_counts(receiver)
                return all(got[key] >= value for key, value in expected.items())

            await wait_until(complete, 60, "all counts delivered")
            await asyncio.sleep(1.5)  # a double count would show up in the next windows
            assert await stop_agent(agent) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        got = delivered_counts(receiver)
        assert {key: got[key] for key in expected} == expected, log.read_text()[-3000:]
        assert line.holding[PRESS2_GOOD_REGISTER] < 65400, "press2's counter should have wrapped"
        assert receiver.conflicts == 0  # no id delivered twice with different content
        assert_in_order_per_machine(receiver.events)
        assert set(line.requests) <= {1, 2, 3, 4}  # read function codes only


@pytest.mark.slow
async def test_middleware_down_for_a_while_then_everything_arrives(tmp_path: Path) -> None:
    line = SimulatedLine(seed=3)
    log = tmp_path / "agent.log"
    health_port = free_port()
    async with SimulatorServer(line, tick=0.05) as simulator, EventReceiver() as receiver:
        await simulator.start_tcp(port=0)
        config = write_config(
            tmp_path / "config.yaml",
            line_config(tmp_path / "state", simulator.port, receiver.url, health_port),
        )
        receiver.fail_next(503, times=10_000)
        agent = start_agent(config, log)
        try:

            def retrying() -> bool:
                report = readyz(health_port)
                return bool(report) and report["destinations"]["middleware"]["state"] == "retrying"

            await wait_until(retrying, 60, "destination retrying")
            report = readyz(health_port)
            assert report is not None
            assert report["status"] == "degraded"
            await asyncio.sleep(2)
            pending = readyz(health_port)
            assert pending is not None and pending["buffer"]["pending"] > 0
            receiver.stop_failing()
            line.freeze()
            await asyncio.sleep(1.5)  # let the last windows be reported

            def drained() -> bool:
                report = readyz(health_port)
                return bool(report) and report["buffer"]["pending"] == 0

            await wait_until(drained, 60, "backlog drained")
            assert await stop_agent(agent) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        assert receiver.conflicts == 0
        assert len(receiver.events) >= pending["buffer"]["pending"]
        assert_in_order_per_machine(receiver.events)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_signal_commits_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    line = SimulatedLine(seed=5)
    log = tmp_path / "agent.log"
    health_port = free_port()
    async with SimulatorServer(line, tick=0.05) as simulator, EventReceiver() as receiver:
        await simulator.start_tcp(port=0)
        config = write_config(
            tmp_path / "config.yaml",
            line_config(tmp_path / "state", simulator.port, receiver.url, health_port),
        )
        agent = start_agent(config, log)
        await wait_until(lambda: len(receiver.events) > 5, 60, "events flowing")
        assert await stop_agent(agent, signum) == 0
        assert "agent stopped" in log.read_text()
