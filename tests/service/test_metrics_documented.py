"""Every metric the agent exposes is documented in docs/monitoring.md for the monitoring team."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from agent.config.models import FloorgateConfig
from agent.service.runtime import Agent
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import line_config, wait_until

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def _base_name(sample_name: str) -> str:
    # prometheus_client adds _total/_created to counters and _info to info metrics.
    return re.sub(r"_(total|created|info)$", "", sample_name)


async def test_every_exposed_metric_is_documented(tmp_path: Path) -> None:
    async with SimulatorServer(SimulatedLine(seed=2), tick=0.05) as simulator:
        await simulator.start_tcp(port=0)
        data = line_config(tmp_path / "state", simulator.port, "http://127.0.0.1:9/e", 0)
        agent = Agent(FloorgateConfig.model_validate(data))
        await agent.start()
        try:
            await wait_until(lambda: agent.drivers[0].health.reads > 0, 30, "polling")
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{agent.health_port}/metrics")).text
        finally:
            await agent.stop()
    names = {
        _base_name(line.split("{")[0].split(" ")[0])
        for line in text.splitlines()
        if line.startswith("floorgate_")
    }
    assert len(names) > 15  # sources, engine, buffer, destinations and host all present
    text = MONITORING.read_text(encoding="utf-8")
    documented = {_base_name(n) for n in re.findall(r"`(floorgate_[a-z_]+)`", text)}
    assert names - documented == set()
