"""The agent as its own process publishing to a real Mosquitto: status and last will,
and two gateways sharing one broker.

The simulated line (real Modbus TCP) runs on this test's event loop, so the agent
processes are waited for in threads, never on the loop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.pipeline.events import Event
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.forwarders.mqtt.broker import Mosquitto, Subscriber
from tests.helpers import free_port, line_config, readyz, start_agent, wait_until, write_config

pytestmark = pytest.mark.mosquitto  # a real broker (mosquitto from apt)


def mqtt_agent_config(
    state_dir: Path, modbus_port: int, broker_port: int, health_port: int, agent_id: str
) -> dict[str, Any]:
    config = line_config(state_dir, modbus_port, "http://127.0.0.1:9/unused", health_port)
    config["agent"]["id"] = agent_id
    config["destinations"] = [
        {
            "name": "uns",
            "type": "mqtt",
            "host": "127.0.0.1",
            "port": broker_port,
            "keep_alive": "5s",
            "retry": {"initial": "100ms", "max": "500ms"},
        }
    ]
    return config


async def stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    proc.send_signal(signum)
    return await asyncio.to_thread(proc.wait, 30)


async def kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        await asyncio.to_thread(proc.wait, 30)


@pytest.mark.slow
async def test_status_online_offline_on_stop_and_last_will_on_sigkill(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    await broker.start()
    log = tmp_path / "agent.log"
    health_port = free_port()
    status = "floorgate/gw-test/status"
    try:
        async with (
            SimulatorServer(SimulatedLine(seed=11), tick=0.05) as simulator,
            Subscriber(broker.port) as sub,
        ):
            await simulator.start_tcp(port=0)
            config = write_config(
                tmp_path / "config.yaml",
                mqtt_agent_config(
                    tmp_path / "state", simulator.port, broker.port, health_port, "gw-test"
                ),
            )
            agent = start_agent(config, log)
            try:
                await wait_until(lambda: sub.last(status) == b"online", 60, "online")
                machine_state = "plant/area/line/press1/machine.state"
                await wait_until(lambda: sub.on(machine_state), 60, "press1's state")
                report = readyz(health_port)
                assert report is not None
                assert report["destinations"]["uns"]["state"] == "connected"
                assert await stop(agent) == 0
                await wait_until(lambda: sub.last(status) == b"offline", 30, "offline on stop")

                agent = start_agent(config, log)
                await wait_until(lambda: sub.last(status) == b"online", 60, "online again")
                assert await stop(agent, signal.SIGKILL) == -signal.SIGKILL
                # Nobody said goodbye: the broker publishes the last will.
                await wait_until(lambda: sub.last(status) == b"offline", 30, "last will")
            finally:
                await kill_if_running(agent)
    finally:
        await broker.stop()
    assert sub.on(status) == [b"online", b"offline", b"online", b"offline"]
    events = sub.events()
    assert events, log.read_text()[-3000:]
    for topic, event, raw in events:
        parsed = Event.model_validate_json(raw)
        assert topic == f"plant/area/line/{parsed.machine}/{parsed.type.value}"
        assert event["agentid"] == "gw-test"


@pytest.mark.slow
async def test_two_gateways_share_one_broker_without_interfering(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    await broker.start()
    owned = {"gw-a": {"press1", "press2"}, "gw-b": {"packer1"}}
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with (
            SimulatorServer(SimulatedLine(seed=12), tick=0.05) as simulator,
            Subscriber(broker.port) as sub,
        ):
            await simulator.start_tcp(port=0)
            for agent_id, machines in owned.items():
                config = mqtt_agent_config(
                    tmp_path / agent_id, simulator.port, broker.port, free_port(), agent_id
                )
                config["machines"] = [m for m in config["machines"] if m["name"] in machines]
                path = write_config(tmp_path / f"{agent_id}.yaml", config)
                agents[agent_id] = start_agent(path, tmp_path / f"{agent_id}.log")

            def everyone_publishes() -> bool:
                seen = {event["data"]["machine"] for _, event, _ in sub.events()}
                online = all(sub.last(f"floorgate/{a}/status") == b"online" for a in owned)
                return online and seen == {"press1", "press2", "packer1"}

            await wait_until(everyone_publishes, 60, "both gateways publishing")
            for agent_id, proc in agents.items():
                assert await stop(proc) == 0, (tmp_path / f"{agent_id}.log").read_text()[-2000:]
            for agent_id in owned:
                topic = f"floorgate/{agent_id}/status"
                await wait_until(lambda t=topic: sub.last(t) == b"offline", 30, "offline")
    finally:
        for proc in agents.values():
            await kill_if_running(proc)
        await broker.stop()
    for _, event, _ in sub.events():
        assert event["data"]["machine"] in owned[event["agentid"]]
    for agent_id in owned:
        assert sub.on(f"floorgate/{agent_id}/status") == [b"online", b"offline"]
    # Distinct client ids: neither gateway ever took the other's session over.
    assert "already connected" not in broker.log_text()
    for agent_id in owned:
        assert f"as floorgate-{agent_id}-uns (p5, c0, k5)" in broker.log_text()
