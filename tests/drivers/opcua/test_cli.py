"""`floorgate opcua browse` / `endpoints`, run as real processes against the simulator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from drivers.opcua.security import thumbprint
from floorgate_demo.opcua_sim import NAMESPACE_URI, OpcUaSimulator, Security, make_certificate
from floorgate_demo.simulator import SimulatedLine
from tests.helpers import free_port


async def floorgate(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "opcua",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_browse_prints_nsu_node_ids_types_and_values(simulator: OpcUaSimulator) -> None:
    simulator.line.freeze()
    code, out, err = await floorgate("browse", simulator.endpoint)
    assert code == 0, err
    good = f"nsu={NAMESPACE_URI};s=press1.good"
    line = next(text for text in out.splitlines() if f"{good}  " in text)
    expected_value = simulator.line.holding[2] << 16 | simulator.line.holding[3]
    assert "[Variable]" in line and f"UInt32 = {expected_value}" in line
    assert "Server" not in out  # namespace 0 is left out by default
    assert err == ""


@pytest.mark.slow
async def test_browse_from_a_node_and_as_json(simulator: OpcUaSimulator) -> None:
    code, out, err = await floorgate(
        "browse", simulator.endpoint, "--node", f"nsu={NAMESPACE_URI};s=packer1", "--json"
    )
    assert code == 0, err
    nodes = json.loads(out)
    assert nodes[0]["browse_name"].endswith("packer1") and nodes[0]["depth"] == 0
    part_done = next(n for n in nodes if n["node_id"].endswith("s=packer1.part_done"))
    assert part_done["data_type"] == "Boolean" and part_done["value"] in ("True", "False")


@pytest.mark.slow
async def test_endpoints_show_the_server_thumbprint(tmp_path: Path) -> None:
    cert, key = await make_certificate(tmp_path, "urn:floorgate:simulator:server")
    security = Security(cert, key)
    async with OpcUaSimulator(SimulatedLine(), security=security) as sim:
        await sim.start()
        code, out, err = await floorgate("endpoints", sim.endpoint)
    assert code == 0, err
    assert "Basic256Sha256" in out and "SignAndEncrypt" in out
    assert thumbprint(cert.read_bytes()) in out


@pytest.mark.slow
async def test_unreachable_server_is_a_one_line_error() -> None:
    code, out, err = await floorgate("browse", f"opc.tcp://127.0.0.1:{free_port()}/")
    assert code == 1
    assert out == ""
    assert err.startswith("floorgate opcua browse: cannot reach opc.tcp://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1
