from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from floorgate_demo.opcua_sim import OpcUaSimulator
from floorgate_demo.simulator import SimulatedLine


@pytest.fixture
async def simulator() -> AsyncIterator[OpcUaSimulator]:
    """The simulated line on OPC UA (any free port), stepping every 0.05 s."""
    async with OpcUaSimulator(SimulatedLine(seed=3), tick=0.05) as sim:
        await sim.start()
        yield sim
