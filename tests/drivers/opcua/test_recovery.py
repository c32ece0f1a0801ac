"""Recovery without restarting the agent: a server that goes away and comes back (with
its namespaces renumbered), and a server that keeps the connection but stops publishing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from asyncua import ua

from agent.config.loader import load_config
from agent.monitoring.report import health_report
from agent.service.runtime import Agent
from drivers.base import ConnectionState, Quality
from floorgate_demo.opcua_sim import NAMESPACE_URI, OpcUaSimulator, node_ids
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine
from tests.drivers.opcua.helpers import FreezingProxy, running, source_config
from tests.e2e.test_end_to_end import COUNTED, delivered_counts, machines_seen
from tests.helpers import free_port, line_config, wait_until, write_config


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_server_restart_with_renumbered_namespaces_reconnects_by_itself(
    simulator: OpcUaSimulator, mode: str
) -> None:
    await simulator.add_variable("probe", 1, ua.VariantType.Int32)
    first_index = simulator.namespace_index
    config = source_config(
        simulator.endpoint,
        mode=mode,
        signals=[
            {"name": "press1.state", "node_id": node_ids()["press1.state"]},
            {"name": "probe", "node_id": f"nsu={NAMESPACE_URI};s=probe"},
        ],
    )
    async with running(config) as (driver, got):
        await wait_until(lambda: "probe" in got.latest, 30, "first value")
        await simulator.stop()
        await wait_until(
            lambda: driver.health.state is ConnectionState.DISCONNECTED, 30, "loss noticed"
        )
        assert got.latest["probe"].quality is Quality.BAD
        assert driver.health.subscribed_items is None
        assert driver.health.last_error
        await simulator.start(namespace_shift=2)
        assert simulator.namespace_index == first_index + 2
        await simulator.write("probe", 2)
        await wait_until(lambda: got.latest["probe"].value == 2, 60, "data after restart")
        await wait_until(lambda: got.latest["press1.state"].quality is Quality.GOOD, 30, "state")
        health = driver.health
        assert health.state is ConnectionState.CONNECTED
        assert health.reconnects == 1
        assert health.subscribed_items == 2
        assert health.bad_signals == {}


@pytest.mark.slow
async def test_silent_subscription_is_rebuilt_while_the_connection_stays_up(
    simulator: OpcUaSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    await simulator.add_variable("probe", 1, ua.VariantType.Int32)
    config = source_config(
        simulator.endpoint,
        keepalive_count=3,
        stale_after_intervals=20,  # 2 s without a change or keep-alive
        signals=[{"name": "probe", "node_id": f"nsu={NAMESPACE_URI};s=probe"}],
    )
    caplog.set_level(logging.WARNING, logger="floorgate.drivers.opcua")
    async with running(config) as (driver, got):
        await wait_until(lambda: "probe" in got.latest, 30, "first value")
        rebuilds_before = driver.health.subscription_rebuilds
        assert simulator.hang_subscriptions() == 1
        await simulator.write("probe", 2)  # not published by the hung subscription
        await wait_until(
            lambda: driver.health.subscription_rebuilds > rebuilds_before, 30, "rebuild"
        )
        await wait_until(lambda: got.latest["probe"].value == 2, 30, "data after rebuild")
        assert any(
            "subscription rebuilt" in r.getMessage() and "no publish response" in r.getMessage()
            for r in caplog.records
        )
        assert driver.health.subscription_rebuilds == rebuilds_before + 1
        assert driver.health.reconnects == 0  # the session was kept; only the subscription
        assert driver.health.state is ConnectionState.CONNECTED
        assert driver.health.last_error is None  # healthy again: no old fault beside it
        await simulator.write("probe", 3)
        await wait_until(lambda: got.latest["probe"].value == 3, 30, "rebuilt one publishes")


@pytest.mark.slow
async def test_production_counts_stay_exact_across_a_server_restart(tmp_path: Path) -> None:
    line = SimulatedLine(seed=11)
    line.freeze()
    async with OpcUaSimulator(line, tick=0.05) as simulator, EventReceiver() as receiver:
        await simulator.start()
        raw = line_config(tmp_path / "state", 1, receiver.url, free_port())
        raw["sources"] = [
            {
                "name": "line-opcua",
                "type": "opcua",
                "endpoint": simulator.endpoint,
                "publishing_interval": "100ms",
                "backoff_max": "1s",
                "signals": [{"name": n, "node_id": i} for n, i in node_ids().items()],
            }
        ]
        config = load_config(write_config(tmp_path / "config.yaml", raw), environ={})
        before = line.totals
        agent = Agent(config)
        await agent.start()
        try:
            await wait_until(
                lambda: machines_seen(receiver) == {"press1", "press2", "packer1"},
                60,
                "first states",
            )
            line.resume()
            await wait_until(
                lambda: line.totals["press1"]["good"] > before["press1"]["good"] + 3,
                60,
                "production",
            )
            await simulator.stop()  # the line keeps producing while the server is down
            await asyncio.sleep(1.0)
            await simulator.start(namespace_shift=3)
            await wait_until(lambda: agent.drivers[0].health.reconnects == 1, 60, "reconnected")
            await wait_until(
                lambda: line.totals["press1"]["good"] > before["press1"]["good"] + 8,
                60,
                "more production",
            )
            line.freeze()
            after = line.totals
            expected = {(m, k): after[m][k] - before[m][k] for m, k in COUNTED}

            def complete() -> bool:
                got = delivered_counts(receiver)
                return all(got[key] >= value for key, value in expected.items())

            await wait_until(complete, 60, "all counts delivered")
            await asyncio.sleep(1.5)  # a double count would show up in the next windows
            source = health_report(agent)["sources"]["line-opcua"]
            assert source["state"] == "connected"
            assert source["subscribed_items"] == len(node_ids())
            assert source["reconnects"] == 1
            assert source["last_data_age_s"] is not None
            assert source["last_error"] is None  # connected again: no old fault beside it
            metrics = await asyncio.to_thread(
                httpx.get, f"http://127.0.0.1:{agent.health_port}/metrics", timeout=10
            )
            items = f'floorgate_source_subscribed_items{{source="line-opcua"}} {len(node_ids())}'
            assert items in metrics.text
        finally:
            await agent.stop()
    got = delivered_counts(receiver)
    assert {key: got[key] for key in expected} == expected
    assert receiver.conflicts == 0


@pytest.mark.slow
async def test_a_path_that_goes_silent_is_detected_and_recovered(
    simulator: OpcUaSimulator,
) -> None:
    await simulator.add_variable("probe", 1, ua.VariantType.Int32)
    proxy = FreezingProxy(simulator.port)
    await proxy.start()
    try:
        config = source_config(
            f"opc.tcp://127.0.0.1:{proxy.port}/floorgate/",
            keepalive_count=3,
            stale_after_intervals=20,  # 2 s
            timeout="2s",
            watchdog_interval="2s",
            signals=[{"name": "probe", "node_id": f"nsu={NAMESPACE_URI};s=probe"}],
        )
        async with running(config) as (driver, got):
            await wait_until(lambda: "probe" in got.latest, 30, "first value")
            proxy.frozen.set()  # the TCP connection stays open; nothing comes through
            await wait_until(
                lambda: driver.health.state is ConnectionState.DISCONNECTED, 60, "detected"
            )
            assert got.latest["probe"].quality is Quality.BAD
            proxy.thaw_and_drop()
            await simulator.write("probe", 2)
            await wait_until(lambda: got.latest["probe"].value == 2, 60, "recovered")
            assert driver.health.reconnects >= 1
    finally:
        await proxy.close()
