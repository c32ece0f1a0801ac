"""A server that stops answering PublishRequests while the connection, the secure channel
and the session stay up and Read is still answered: the source goes degraded with the
cause in words, the subscription is re-created once on the same session, then a new
session is opened; when the server answers again, data flows and the source is connected.

The server is the simulator (a real asyncua server on 127.0.0.1) with its publish handling
wrapped (helpers.PublishHold); the driver is the real one. Intervals are small so a test
takes seconds; every wait has a generous bound and nothing asserts how long anything took.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pytest
from asyncua import ua

from drivers.base import ConnectionState, Quality, SourceHealth
from drivers.opcua.config import OpcUaConfig
from floorgate_demo.opcua_sim import NAMESPACE_URI, OpcUaSimulator
from tests.drivers.opcua.helpers import PublishHold, running, source_config
from tests.helpers import wait_until

PROBE = {"name": "probe", "node_id": f"nsu={NAMESPACE_URI};s=probe"}
# publishing_interval 100ms (source_config) x keepalive_count 3
SILENCE = re.compile(r"^no publish response for \d+(\.\d)? s \(keep-alive expected every 0\.3 s\)")


@dataclass(frozen=True)
class Seen:
    """One state change as the driver made it, with the counters at that moment."""

    state: ConnectionState
    error: str | None
    subscription_rebuilds: int
    reconnects: int


def record_states(health: SourceHealth) -> list[Seen]:
    """Every set_state call that changed the state or the error, in order: the waits below
    then never depend on catching a short-lived state while polling."""
    seen: list[Seen] = []
    set_state = health.set_state

    def recording(state: ConnectionState, error: str | None = None) -> bool:
        changed = set_state(state, error)
        entry = Seen(
            health.state, health.last_error, health.subscription_rebuilds, health.reconnects
        )
        if not seen or (seen[-1].state, seen[-1].error) != (entry.state, entry.error):
            seen.append(entry)
        return changed

    health.set_state = recording  # type: ignore[method-assign]
    return seen


def probe_source(simulator: OpcUaSimulator, stale_after_intervals: int) -> OpcUaConfig:
    return source_config(
        simulator.endpoint,
        keepalive_count=3,  # a keep-alive every 0.3 s
        stale_after_intervals=stale_after_intervals,
        signals=[PROBE],
    )


@pytest.mark.slow
async def test_a_server_holding_publishes_is_escalated_from_rebuild_to_a_new_session(
    simulator: OpcUaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    await simulator.add_variable("probe", 1, ua.VariantType.Int32)
    hold = PublishHold(monkeypatch)
    config = probe_source(simulator, stale_after_intervals=20)  # re-create after 2 s
    async with running(config) as (driver, got):
        seen = record_states(driver.health)
        await wait_until(lambda: "probe" in got.latest, 30, "first value")
        assert driver.health.state is ConnectionState.CONNECTED
        assert driver.health.stale_after is None  # judged by publish responses, see driver
        [first_session] = hold.sessions
        assert hold.subscriptions_created == {first_session: 1}

        hold.holding = True
        await simulator.write("probe", 2)  # the server has it, but cannot publish it
        await wait_until(lambda: driver.health.reconnects == 1, 60, "a new session")

        # 1. degraded from the first missed keep-alive window, before any re-creation
        degraded = next(s for s in seen if s.state is ConnectionState.DEGRADED)
        assert degraded.error is not None and SILENCE.match(degraded.error), degraded
        assert (degraded.subscription_rebuilds, degraded.reconnects) == (0, 0)
        # ... and the last value is not left standing as good: bad, with the cause
        assert any(
            s.signal == "probe"
            and s.quality is Quality.BAD
            and SILENCE.match(s.error or "")
            and "opening a new session" not in (s.error or "")
            for s in got.samples
        )
        # 2. one re-creation on the same session, shown in the health message
        rebuilt = next(s for s in seen if "re-created" in (s.error or ""))
        assert rebuilt.state is ConnectionState.DEGRADED
        assert rebuilt.subscription_rebuilds == 1
        assert hold.subscriptions_created[first_session] == 2  # original + one re-creation
        # 3. then disconnected: the session is rebuilt, saying why
        down = next(s for s in seen if s.state is ConnectionState.DISCONNECTED)
        assert down.error is not None and SILENCE.match(down.error), down
        assert "opening a new session" in down.error
        assert (down.subscription_rebuilds, down.reconnects) == (1, 0)
        assert any(
            s.signal == "probe" and s.quality is Quality.BAD and s.error == down.error
            for s in got.samples
        )
        # the new session came on a new connection (secure channel)
        await wait_until(lambda: len(hold.sessions) >= 2, 30, "new session seen by the server")
        new_session = hold.sessions[1]
        assert new_session != first_session
        assert hold.connections[new_session] is not hold.connections[first_session]

        await hold.release()
        await simulator.write("probe", 3)
        await wait_until(
            lambda: got.latest["probe"].quality is Quality.GOOD and got.latest["probe"].value == 3,
            60,
            "data after the server publishes again",
        )
        await wait_until(
            lambda: driver.health.state is ConnectionState.CONNECTED, 30, "connected again"
        )
        assert driver.health.last_error is None
        assert driver.health.reconnects >= 1
        assert driver.health.subscribed_items == 1


@pytest.mark.slow
async def test_keep_alives_that_resume_clear_degraded_on_the_same_session(
    simulator: OpcUaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    await simulator.add_variable("probe", 1, ua.VariantType.Int32)
    hold = PublishHold(monkeypatch)
    # re-create only after 10 s, far beyond the keep-alive window (1.4 s)
    config = probe_source(simulator, stale_after_intervals=100)
    async with running(config) as (driver, got):
        await wait_until(lambda: "probe" in got.latest, 30, "first value")
        hold.holding = True
        await wait_until(
            lambda: driver.health.state is ConnectionState.DEGRADED, 30, "missed keep-alive"
        )
        assert SILENCE.match(driver.health.last_error or ""), driver.health.last_error
        assert hold.held >= 1
        # while silent the value is bad, with the cause: never a frozen "good"
        await wait_until(lambda: got.latest["probe"].quality is Quality.BAD, 30, "value marked bad")
        assert SILENCE.match(got.latest["probe"].error or ""), got.latest["probe"]
        await hold.release()  # the held request is answered with a keep-alive: no data
        await wait_until(
            lambda: driver.health.state is ConnectionState.CONNECTED, 30, "keep-alives again"
        )
        # the unchanged value was read again (no notification would bring it back)
        assert got.latest["probe"].quality is Quality.GOOD
        assert got.latest["probe"].value == 1
        assert driver.health.last_error is None
        assert driver.health.subscription_rebuilds == 0
        assert driver.health.reconnects == 0
        assert len(hold.sessions) == 1
        await simulator.write("probe", 2)
        await wait_until(lambda: got.latest["probe"].value == 2, 30, "data on the same session")


@pytest.mark.slow
async def test_a_failed_first_connect_counts_as_a_reconnect_once_the_source_recovers(
    simulator: OpcUaSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="floorgate.drivers.opcua")
    await simulator.stop()  # nothing listens on the endpoint when the agent starts
    await simulator.add_variable("probe", 7, ua.VariantType.Int32)  # served once started
    config = source_config(simulator.endpoint, signals=[PROBE])
    async with running(config) as (driver, got):
        await wait_until(lambda: driver.health.state is ConnectionState.DISCONNECTED, 30, "refused")
        error = driver.health.last_error or ""
        assert error.startswith(f"cannot reach {simulator.endpoint}: ")
        assert not error.endswith(": ")  # the cause is said, not left empty
        assert driver.health.reconnects == 0
        await simulator.start()
        await wait_until(
            lambda: got.latest["probe"].quality is Quality.GOOD, 60, "data after start"
        )
        assert got.latest["probe"].value == 7
        assert driver.health.state is ConnectionState.CONNECTED
        assert driver.health.reconnects == 1
    # one line when it went down, saying what comes next; one when it came back
    lines = [r.getMessage() for r in caplog.records if r.name == "floorgate.drivers.opcua"]
    down = [line for line in lines if line.startswith("opcua source disconnected")]
    back = [line for line in lines if line.startswith("opcua source connected again")]
    assert len(down) == 1 and "next=reconnect-in-" in down[0], lines
    assert len(back) == 1 and "reconnects=1" in back[0], lines
