"""Subscribe and poll modes against a real asyncua server on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua

from drivers.base import ConnectionState, Quality
from floorgate_demo.opcua_sim import NAMESPACE_URI, OpcUaSimulator
from floorgate_demo.simulator import PRESS1_GOOD_START
from tests.drivers.opcua.helpers import running, source_config
from tests.helpers import wait_until

MODES = ["subscribe", "poll"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_delivers_the_line_values_with_their_source_timestamps(
    simulator: OpcUaSimulator, mode: str
) -> None:
    simulator.line.freeze()
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    await simulator.add_variable("probe", 41, ua.VariantType.Int32)
    await simulator.write("probe", 42, source_time=stamp)
    config = source_config(
        simulator.endpoint,
        mode=mode,
        signals=[
            {"name": "press1.good", "node_id": f"nsu={NAMESPACE_URI};s=press1.good"},
            {"name": "press1.temperature", "node_id": f"nsu={NAMESPACE_URI};s=press1.temperature"},
            {"name": "probe", "node_id": f"ns={simulator.namespace_index};s=probe"},
        ],
    )
    async with running(config) as (driver, got):
        await wait_until(lambda: {"press1.good", "probe"} <= set(got.latest), 30, "first values")
        probe = got.latest["probe"]
        assert (probe.value, probe.quality, probe.source_time) == (42, Quality.GOOD, stamp)
        good = got.latest["press1.good"]
        assert good.value == PRESS1_GOOD_START + simulator.line.totals["press1"]["good"]
        assert isinstance(got.latest["press1.temperature"].value, float)
        assert abs(good.source_time - datetime.now(UTC)) < timedelta(minutes=1)
        # a change made on the server arrives with its own timestamp
        later = stamp + timedelta(seconds=1)
        await simulator.write("probe", 43, source_time=later)
        await wait_until(lambda: got.latest["probe"].value == 43, 30, "changed value")
        assert got.latest["probe"].source_time == later
        assert driver.health.state is ConnectionState.CONNECTED
        assert driver.health.subscribed_items == 3
        assert driver.health.last_data_time is not None
        assert driver.health.time_origins.get("source", 0) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_a_missing_node_is_reported_by_name_and_the_others_still_flow(
    simulator: OpcUaSimulator, mode: str
) -> None:
    config = source_config(
        simulator.endpoint,
        mode=mode,
        signals=[
            {"name": "press1.good", "node_id": f"nsu={NAMESPACE_URI};s=press1.good"},
            {"name": "ghost", "node_id": f"nsu={NAMESPACE_URI};s=no.such.node"},
            {"name": "elsewhere", "node_id": "nsu=urn:not:on:this:server;s=x"},
            {"name": "folder", "node_id": f"nsu={NAMESPACE_URI};s=press1"},
        ],
    )
    async with running(config) as (driver, got):
        await wait_until(lambda: "press1.good" in got.latest, 30, "good signal")
        health = driver.health
        assert health.state is ConnectionState.DEGRADED
        assert set(health.bad_signals) == {"ghost", "elsewhere", "folder"}
        assert "BadNodeIdUnknown" in health.bad_signals["ghost"]
        assert "urn:not:on:this:server" in health.bad_signals["elsewhere"]
        assert "not a variable" in health.bad_signals["folder"]
        assert got.latest["ghost"].quality is Quality.BAD
        assert health.subscribed_items == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_status_codes_become_quality_and_arrays_a_clear_error(
    simulator: OpcUaSimulator, mode: str
) -> None:
    await simulator.add_variable("sensor", 1.5, ua.VariantType.Double)
    await simulator.add_variable("profile", [1, 2, 3], ua.VariantType.Int32)
    await simulator.add_variable("counter", 7, ua.VariantType.UInt32)
    ns = simulator.namespace_index
    config = source_config(
        simulator.endpoint,
        mode=mode,
        signals=[
            {"name": "sensor", "node_id": f"ns={ns};s=sensor"},
            {"name": "profile", "node_id": f"ns={ns};s=profile"},
            {"name": "counter", "node_id": f"ns={ns};s=counter", "data_type": "bool"},
        ],
    )
    async with running(config) as (driver, got):
        await wait_until(lambda: len(got.latest) == 3, 30, "first values")
        assert got.latest["sensor"].quality is Quality.GOOD
        assert got.latest["profile"].quality is Quality.BAD
        assert got.latest["profile"].error == "unsupported type: array of 3 values"
        assert "expected bool" in (got.latest["counter"].error or "")
        await simulator.write("sensor", 2.5, status=ua.StatusCodes.UncertainLastUsableValue)
        await wait_until(lambda: got.latest["sensor"].value == 2.5, 30, "uncertain value")
        assert got.latest["sensor"].quality is Quality.UNCERTAIN
        await simulator.write("sensor", 0.0, status=ua.StatusCodes.BadSensorFailure)
        await wait_until(lambda: got.latest["sensor"].quality is Quality.BAD, 30, "bad value")
        assert got.latest["sensor"].value is None
        assert "BadSensorFailure" in (got.latest["sensor"].error or "")
        assert "sensor" in driver.health.bad_signals


@pytest.mark.slow
async def test_absolute_deadband_is_applied_by_the_server(simulator: OpcUaSimulator) -> None:
    await simulator.add_variable("pressure", 1.0, ua.VariantType.Double)
    await simulator.add_variable("marker", 0, ua.VariantType.Int32)
    ns = simulator.namespace_index
    config = source_config(
        simulator.endpoint,
        signals=[
            {"name": "pressure", "node_id": f"ns={ns};s=pressure", "deadband": 5.0},
            {"name": "marker", "node_id": f"ns={ns};s=marker", "sampling_interval": "50ms"},
        ],
    )
    async with running(config) as (_driver, got):
        await wait_until(lambda: len(got.latest) == 2, 30, "first values")
        await simulator.write("pressure", 3.0)  # within the deadband: not reported
        await simulator.write("marker", 1)
        await wait_until(lambda: got.latest["marker"].value == 1, 30, "marker")
        await simulator.write("pressure", 9.0)  # beyond it
        await wait_until(lambda: got.latest["pressure"].value == 9.0, 30, "big change")
    assert [s.value for s in got.good("pressure")] == [1.0, 9.0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_a_node_added_later_is_found_without_a_reconnect(
    simulator: OpcUaSimulator, mode: str
) -> None:
    config = source_config(
        simulator.endpoint,
        mode=mode,
        missing_node_retry="200ms",
        signals=[
            {"name": "press1.good", "node_id": f"nsu={NAMESPACE_URI};s=press1.good"},
            {"name": "late", "node_id": f"nsu={NAMESPACE_URI};s=late"},
        ],
    )
    async with running(config) as (driver, got):
        await wait_until(lambda: "late" in driver.health.bad_signals, 30, "reported missing")
        assert driver.health.subscribed_items == 1
        await simulator.add_variable("late", 5, ua.VariantType.Int32)
        await wait_until(lambda: bool(got.good("late")), 30, "found")
        assert got.good("late")[-1].value == 5
        assert driver.health.subscribed_items == 2
        await wait_until(lambda: driver.health.bad_signals == {}, 30, "healthy")
        assert driver.health.reconnects == 0
