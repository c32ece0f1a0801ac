"""A dead unit id on a shared connection: backed off and probed with one request, while
its neighbours keep their poll rate and the connection stays up (issue 15).

Two kinds of test. On a simulated clock (tests.drivers.modbus.fakes) the schedule is
checked exactly: when each request went out and with how many pymodbus retries. Against
a real pymodbus server on 127.0.0.1 the same behaviour is checked by counting requests
at the server and polls at the sink across a sleep, with generous bounds (no assertion
on elapsed time).

What the pymodbus 3.16 server does with a unit id it does not serve (checked in
pymodbus/server/requesthandler.py): with ``ignore_missing_devices=True`` and a datastore
raising NoSuchIdException (the simulator's) it does not answer, like a dead RS-485
device; without ``ignore_missing_devices`` it answers exception 11; the stock SimCore
raises KeyError instead, answered as exception 4. The tests want silence.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest

from drivers.base import ConnectionState, Quality, Sample
from drivers.modbus.driver import ModbusDriver
from floorgate_demo.simulator import SimulatedLine
from tests.drivers.modbus.conftest import (
    Collector,
    UnitServer,
    by_name,
    running,
    tcp_config,
    wait_until,
)
from tests.drivers.modbus.fakes import FakeModbus, simulate

LOGGER = "floorgate.drivers.modbus"


def _unit_signals(*units: int) -> list[dict[str, Any]]:
    """One holding block per unit: state (address 0) and a uint32 counter (2-3)."""
    return [
        signal
        for unit in units
        for signal in (
            {"name": f"u{unit}.state", "address": 0, "device_address": unit},
            {"name": f"u{unit}.good", "address": 2, "data_type": "uint32", "device_address": unit},
        )
    ]


def _backoff_delays(first: float, cap: float, count: int) -> list[float]:
    delays, delay = [], first
    for _ in range(count):
        delays.append(delay)
        delay = min(cap, delay * 2)
    return delays


def _probes_allowed(first: float, cap: float, window: float) -> int:
    """Most probes the backoff schedule allows within ``window`` seconds."""
    total, count = 0.0, 0
    for delay in _backoff_delays(first, cap, 10_000):
        total += delay
        if total > window:
            return count
        count += 1
    return count


# --- on a simulated clock: the exact schedule -------------------------------------------


async def test_a_dead_unit_is_probed_once_per_backoff_period_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan, timeout, retries, duration = 1.0, 1.0, 2, 120.0
    fake = FakeModbus(timeout=timeout, until=duration, dead={2})
    config = tcp_config(
        502,
        _unit_signals(1, 2),
        scan_interval="1s",
        timeout="1s",
        retries=retries,
        backoff_max="8s",
    )
    driver, sink = await simulate(monkeypatch, fake, config)

    dead = fake.sent_to(2)
    # The first failure is not known to be lasting: it gets the configured retries.
    # Every later request is a probe: one attempt, no retries.
    assert dead[0].retries == retries
    assert [r.retries for r in dead[1:]] == [0] * (len(dead) - 1)
    # Probes follow the backoff (1, 2, 4, 8, 8, ... s after the poll that failed); the
    # first one waits for the next poll after the 3 s of the first failure.
    gaps = [b.at - a.at for a, b in itertools.pairwise(dead)]
    assert gaps == pytest.approx([4.0, 2.0, 4.0] + [8.0] * (len(gaps) - 3))
    # The first failure, probes at 4, 6 and 10 s, then every 8 s from 18 s on.
    assert [r.at for r in dead[:5]] == pytest.approx([0.001, 4.001, 6.001, 10.001, 18.001])
    assert len(dead) == 1 + 3 + len(range(18, int(duration), 8))

    # The healthy unit is read in every poll: once per second, two seconds across a
    # poll holding a probe (one timeout), four across the first failure (three).
    healthy = fake.sent_to(1)
    assert [r.retries for r in healthy] == [retries] * len(healthy)
    gaps = [b.at - a.at for a, b in itertools.pairwise(healthy)]
    assert max(gaps) == pytest.approx(scan + (1 + retries) * timeout)
    assert sorted({round(g, 3) for g in gaps}) == [1.0, 2.0, 4.0]
    lost_polls = (1 + retries) + (len(dead) - 1)  # one poll per timeout
    assert len(healthy) == pytest.approx(duration / scan - lost_polls, abs=1)
    assert len(sink.batches) == len(healthy)

    for _, batch in sink.batches:
        samples = by_name(batch)
        assert samples["u1.state"].quality is Quality.GOOD
        assert samples["u2.state"].quality is Quality.BAD
        assert samples["u2.state"].error == (
            "unit 2 does not answer: no reply to holding 40001-40004 within 1 s"
        )
    assert driver.health.state is ConnectionState.DEGRADED
    assert driver.health.last_error == samples["u2.state"].error
    assert fake.connects == 1 and driver.health.reconnects == 0


async def test_several_dead_units_probed_in_a_row_never_drop_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # However many neighbours are dead, the driver keeps the connection while unit 1
    # answers (pymodbus's own count of unanswered requests is checked against a real
    # server below: the fake does not model it).
    fake = FakeModbus(timeout=0.1, until=30.0, dead={2, 3, 4, 5, 6})
    config = tcp_config(502, _unit_signals(1, 2, 3, 4, 5, 6), retries=1)
    driver, sink = await simulate(monkeypatch, fake, config)
    assert fake.connects == 1 and driver.health.reconnects == 0
    assert all(by_name(b)["u1.state"].quality is Quality.GOOD for _, b in sink.batches)
    assert driver.health.state is ConnectionState.DEGRADED


async def test_a_tcp_device_whose_only_unit_is_silent_is_reconnected_with_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nobody answers on the connection: it may be half-dead, so it is opened again,
    # less and less often; each new connection tries the unit once (no retries).
    fake = FakeModbus(timeout=0.3, until=30.0, dead={1})
    config = tcp_config(502, _unit_signals(1), retries=2, backoff_max="4s")
    driver, sink = await simulate(monkeypatch, fake, config)
    sent = fake.sent_to(1)
    assert sent[0].retries == 2 and {r.retries for r in sent[1:]} == {0}
    assert len(sent) <= 1 + _probes_allowed(0.1, 4.0, 30.0)
    assert driver.health.state is ConnectionState.DISCONNECTED
    assert driver.health.last_error == (
        "no unit on 127.0.0.1:502 answers: "
        "unit 1 does not answer: no reply to holding 40001-40004 within 0.3 s"
    )
    assert len(sink.batches) == 1  # bad samples once, on the transition
    assert fake.connects == len(sent)
    assert driver.health.reconnects == fake.connects - 1


async def test_reconnects_count_a_recovery_from_a_failed_first_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeModbus(timeout=0.1, until=5.0, refuse_connects=3)
    driver, _ = await simulate(monkeypatch, fake, tcp_config(502, _unit_signals(1)))
    assert fake.connects == 4
    assert driver.health.reconnects == 1
    assert driver.health.state is ConnectionState.CONNECTED
    assert driver.health.last_error is None


def test_stale_after_follows_the_poll_timing() -> None:
    config = tcp_config(502, _unit_signals(1), scan_interval="2s", timeout="1s", retries=1)
    # three polls missed, plus one read that used all its attempts
    assert ModbusDriver(config).health.stale_after == pytest.approx(3 * 2.0 + 2 * 1.0)


# --- against a real pymodbus server on 127.0.0.1 ----------------------------------------


class StateSink(Collector):
    """A Collector that also notes the source state at each batch."""

    def __init__(self, driver: ModbusDriver) -> None:
        super().__init__()
        self.driver = driver
        self.states: list[ConnectionState] = []

    async def __call__(self, batch: Any) -> None:
        self.states.append(self.driver.health.state)
        await super().__call__(batch)


def _good(batch: list[Sample], unit: int) -> bool:
    samples = by_name(batch)
    return all(samples[f"u{unit}.{name}"].quality is Quality.GOOD for name in ("state", "good"))


@pytest.mark.slow
async def test_a_dead_unit_on_a_real_server_costs_its_neighbour_one_timeout_per_probe() -> None:
    scan, retries, cap, period = 0.1, 2, 0.8, 4.0
    async with UnitServer(SimulatedLine(seed=2), tick=0.05, unit_ids=(2,)) as server:
        await server.start_tcp("127.0.0.1", 0)
        config = tcp_config(
            server.port,
            _unit_signals(1, 2),
            scan_interval="100ms",
            timeout="100ms",
            retries=retries,
            backoff_max="800ms",
        )
        driver = ModbusDriver(config)
        sink = StateSink(driver)
        started = time.monotonic()
        async with running(driver, sink):
            await wait_until(lambda: len(sink.batches) >= 2)
            polls_before = server.by_unit[2]
            await asyncio.sleep(period)
            polls = server.by_unit[2] - polls_before
            elapsed = time.monotonic() - started
            dead_requests = server.by_unit[1]

    # Every poll read unit 2 (one request each), and nearly at its rate: at 10 polls/s,
    # a probe (one 0.1 s timeout) costs at most two ticks, and there are few probes.
    assert all(_good(batch, 2) for batch in sink.batches)
    assert polls >= 0.6 * period / scan
    # Requests to unit 1: the first failure with its retries, then at most one probe
    # per backoff period (0.1, 0.2, 0.4, 0.8, 0.8 ... s). Were probes retried like
    # normal reads, this would be three times as many.
    allowed = (1 + retries) + _probes_allowed(scan, cap, elapsed) + 1
    assert 1 + retries < dead_requests <= allowed
    # Unit 1 bad with a reason while it is out; the connection never dropped.
    for batch in sink.batches:
        assert by_name(batch)["u1.state"].error == (
            "unit 1 does not answer: no reply to holding 40001-40004 within 0.1 s"
        )
    assert set(sink.states) == {ConnectionState.DEGRADED}
    assert driver.health.reconnects == 0
    assert driver.health.last_error is not None and "unit 1" in driver.health.last_error


@pytest.mark.slow
async def test_a_unit_answering_again_is_read_at_full_rate_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with UnitServer(SimulatedLine(seed=4), tick=None, unit_ids=(1, 2)) as server:
        await server.start_tcp("127.0.0.1", 0)
        # retries for the healthy unit: a loaded machine must not make it look dead too
        config = tcp_config(server.port, _unit_signals(1, 2), timeout="100ms", retries=2)
        driver = ModbusDriver(config)
        sink = StateSink(driver)
        async with running(driver, sink):
            await wait_until(lambda: driver.health.state is ConnectionState.CONNECTED)
            server.muted.add(1)
            await wait_until(lambda: bool(sink.batches) and not _good(sink.batches[-1], 1))
            assert driver.health.state is ConnectionState.DEGRADED
            assert "unit 1" in (driver.health.last_error or "")
            server.muted.clear()
            await wait_until(lambda: driver.health.state is ConnectionState.CONNECTED)
            recovered = len(sink.batches)
            await wait_until(lambda: len(sink.batches) >= recovered + 3)

    assert all(_good(batch, 1) for batch in sink.batches[recovered:])
    assert all(_good(batch, 2) for batch in sink.batches)
    assert driver.health.last_error is None and driver.health.bad_signals == {}
    assert ConnectionState.DISCONNECTED not in sink.states
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    out = [line for line in lines if line.startswith("modbus unit not answering")]
    back = [line for line in lines if line.startswith("modbus unit answering again")]
    assert out == [
        "modbus unit not answering source=line unit=1 error='unit 1 does not answer: "
        "no reply to holding 40001-40004 within 0.1 s' next=probe-in-0.1s"
    ]
    assert len(back) == 1
    assert back[0].startswith("modbus unit answering again source=line unit=1 after=")
    assert back[0].endswith("s")
    assert not [line for line in lines if "disconnected" in line]


@pytest.mark.slow
async def test_six_dead_units_on_a_real_server_leave_the_connection_up() -> None:
    # pymodbus 3.16 on its own closes a TCP connection at the (retries + 5)th request
    # in a row that goes unanswered after its retries (TransactionManager.execute):
    # here the sixth, in the first poll, although unit 1 answers.
    dead = (2, 3, 4, 5, 6, 7)
    async with UnitServer(SimulatedLine(seed=5), tick=None, unit_ids=(1,)) as server:
        await server.start_tcp("127.0.0.1", 0)
        config = tcp_config(server.port, _unit_signals(1, *dead), timeout="100ms", retries=1)
        driver = ModbusDriver(config)
        sink = StateSink(driver)
        async with running(driver, sink):
            await wait_until(lambda: len(sink.batches) >= 5)
    assert set(sink.states) == {ConnectionState.DEGRADED}
    assert driver.health.reconnects == 0
    assert all(_good(batch, 1) for batch in sink.batches)
    assert all(server.by_unit[unit] >= 2 for unit in dead)
