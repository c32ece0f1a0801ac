"""A connected source whose good data is older than its driver's ``stale_after`` is
degraded in health (issue 15).

A real agent reads the Modbus simulator. A driver keeps a healthy line's data fresh, so
the silence is made the one way it happens without a driver bug: by putting the health
fields where a silent source leaves them (connected, last good data long ago), then
judging at once — no await in between, so the polling driver cannot move them first.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config.models import FloorgateConfig
from agent.monitoring.metrics import make_registry, render
from agent.monitoring.report import health_report
from agent.service.runtime import Agent
from drivers.base import ConnectionState
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import line_config, wait_until

SOURCE = "line-plc"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with SimulatorServer(SimulatedLine(seed=4), tick=0.05) as simulator:
        await simulator.start_tcp(port=0)
        data = line_config(tmp_path / "state", simulator.port, "http://127.0.0.1:9/e", 0)
        data["destinations"] = []  # nothing else to make the status degraded
        agent = Agent(FloorgateConfig.model_validate(data))
        await agent.start()
        try:
            health = agent.drivers[0].health
            await wait_until(
                lambda: (
                    health.state is ConnectionState.CONNECTED and health.last_data_time is not None
                ),
                30,
                "the source connected with good data",
            )
            yield agent
        finally:
            await agent.stop()


def source_up(agent: Agent) -> str:
    text = render(make_registry(agent)).decode()
    return next(
        line.split()[-1]
        for line in text.splitlines()
        if line.startswith(f'floorgate_source_up{{source="{SOURCE}"}}')
    )


async def test_fresh_data_within_stale_after_is_ok(agent: Agent) -> None:
    health = agent.drivers[0].health
    health.stale_after = 5.0
    report = health_report(agent)
    assert report["status"] == "ok", report["reasons"]
    assert report["sources"][SOURCE]["state"] == "connected"
    assert report["sources"][SOURCE]["stale_after_s"] == 5.0


async def test_connected_but_data_older_than_stale_after_is_degraded(agent: Agent) -> None:
    health = agent.drivers[0].health
    health.stale_after = 5.0
    health.state = ConnectionState.CONNECTED
    health.last_data_time = time.time() - 47
    report = health_report(agent)
    up = source_up(agent)
    assert report["status"] == "degraded" and report["ready"] is True
    assert report["reasons"] == [f"source {SOURCE}: no good data for 47 s (expected within 5 s)"]
    source = report["sources"][SOURCE]
    assert source["state"] == "degraded"
    assert source["last_data_age_s"] >= 47
    assert up == "0.0"  # the metric agrees with /readyz

    # The driver's next good read makes it fresh again: ok, without anyone resetting it.
    await wait_until(lambda: time.time() - (health.last_data_time or 0) < 5, 30, "fresh data")
    report = health_report(agent)
    assert report["status"] == "ok", report["reasons"]
    assert report["sources"][SOURCE]["state"] == "connected"


async def test_a_source_that_never_had_data_counts_from_its_since(agent: Agent) -> None:
    health = agent.drivers[0].health
    health.stale_after = 5.0
    health.state = ConnectionState.CONNECTED
    health.last_data_time = None
    health.since = time.time() - 47
    report = health_report(agent)
    assert report["status"] == "degraded"
    assert report["reasons"] == [f"source {SOURCE}: no good data for 47 s (expected within 5 s)"]
    assert report["sources"][SOURCE]["state"] == "degraded"


async def test_without_stale_after_health_does_not_judge_the_age(agent: Agent) -> None:
    health = agent.drivers[0].health
    health.stale_after = None
    health.state = ConnectionState.CONNECTED
    health.last_data_time = time.time() - 3600
    report = health_report(agent)
    assert report["status"] == "ok", report["reasons"]
    assert report["sources"][SOURCE]["state"] == "connected"
