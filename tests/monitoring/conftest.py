"""A real agent on the simulated line, for the status page's tests.

The Modbus simulator serves the three machines (their rules read it); its OPC UA twin
serves press2's values too, read by a second source under other names (no rule reads
them), so the signal view has both protocols. Machine time runs four times faster
(``tick``) and ``min_duration`` is 0 s, so each machine changes state within seconds.
The middleware receiver stands in for the destination; a test may stop it (an outage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config.models import FloorgateConfig
from agent.service.runtime import Agent
from drivers.base import ConnectionState
from floorgate_demo.opcua_sim import OpcUaSimulator
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import line_config, wait_until

HEALTH_TOKEN = "hz-5d1e7c3a9b2f4e60"
DESTINATION_TOKEN = "dt-8a7b6c5d4e3f2a1b"
NODE = "nsu=urn:floorgate:simulator;s="
OPCUA_SIGNALS = {  # signal on the OPC UA source -> the simulator's node
    "opc.press2.temperature": "press2.temperature",
    "opc.press2.good": "press2.good",
}


@dataclass
class RunningLine:
    agent: Agent
    line: SimulatedLine
    receiver: EventReceiver
    config: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.agent.health_port}"


def line_with_opcua(
    tmp_path: Path, modbus_port: int, opcua_endpoint: str, receiver_url: str
) -> dict[str, Any]:
    data = line_config(tmp_path / "state", modbus_port, receiver_url, 0)
    data["sources"].append(
        {
            "name": "press2-opcua",
            "type": "opcua",
            "endpoint": opcua_endpoint,
            "signals": [
                {"name": name, "node_id": NODE + node, "unit_of_measurement": "degC"}
                if name.endswith("temperature")
                else {"name": name, "node_id": NODE + node}
                for name, node in OPCUA_SIGNALS.items()
            ],
        }
    )
    for machine in data["machines"]:
        machine["state"]["min_duration"] = "0s"
    (tmp_path / "destination-token").write_text(DESTINATION_TOKEN + "\n")
    data["destinations"][0].update(
        auth="bearer", token={"file": str(tmp_path / "destination-token")}
    )
    return data


@pytest.fixture
def health_token(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """A health token file when parametrized (indirect=True) with any value, else None."""
    if getattr(request, "param", None) is None:
        return None
    path = tmp_path / "health-token"
    path.write_text(HEALTH_TOKEN + "\n")
    return path


@pytest.fixture
async def running_line(tmp_path: Path, health_token: Path | None) -> AsyncIterator[RunningLine]:
    line = SimulatedLine(seed=5)
    async with (
        SimulatorServer(line, tick=0.05) as modbus,
        OpcUaSimulator(line, tick=None) as opcua,
        EventReceiver(token=DESTINATION_TOKEN) as receiver,
    ):
        await modbus.start_tcp(port=0)
        await opcua.start("127.0.0.1", 0)
        data = line_with_opcua(tmp_path, modbus.port, opcua.endpoint, receiver.url)
        if health_token is not None:
            data["health"]["token"] = {"file": str(health_token)}
        agent = Agent(FloorgateConfig.model_validate(data))
        await agent.start()
        try:
            await wait_until(
                lambda: all(d.health.state is ConnectionState.CONNECTED for d in agent.drivers),
                60,
                "both sources connected",
            )
            yield RunningLine(agent, line, receiver, data)
        finally:
            await agent.stop()
