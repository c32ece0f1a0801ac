"""What the Modbus driver tells a person: error texts in samples and health, and log
lines (one per event, with the device, what happened and what comes next)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.base import ConnectionState, Quality
from drivers.modbus.config import InputType
from drivers.modbus.driver import (
    Block,
    exception_response_text,
    exception_text,
    register_reference,
)
from tests.drivers.modbus.conftest import by_name, tcp_config
from tests.drivers.modbus.fakes import FakeModbus, simulate

LOGGER = "floorgate.drivers.modbus"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def _says_something(text: str | None) -> bool:
    """Not empty, and not a type name followed by nothing ('ReadError: ')."""
    return bool(text) and not (text or "").rstrip().endswith(":")


# --- the pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ConnectionResetError(), "the other side reset the connection (ConnectionResetError)"),
        (
            OSError(104, "Connection reset by peer"),  # OSError picks the subclass by errno
            "[Errno 104] Connection reset by peer (ConnectionResetError)",
        ),
        (BrokenPipeError(), "the connection was closed by the other side (BrokenPipeError)"),
        (TimeoutError(), "no answer in time (TimeoutError)"),
        (OSError(), "the operating system reported an error (OSError)"),
        (ConnectionException(""), "the connection is not open (ConnectionException)"),
        (
            ModbusIOException("No response received after 1 retries"),
            "No response received after 1 retries (ModbusIOException)",
        ),
        (RuntimeError(), "failed without a message (RuntimeError)"),
        (ValueError("  "), "failed without a message (ValueError)"),
        (ValueError("bad frame"), "bad frame (ValueError)"),
    ],
)
def test_an_exception_always_reads_as_words(exc: BaseException, text: str) -> None:
    assert exception_text(exc) == text
    assert _says_something(exception_text(exc))


def test_exception_responses_say_what_the_device_means() -> None:
    assert exception_response_text(2) == (
        "the device says the address does not exist (Modbus exception 2, illegal data address)"
    )
    assert exception_response_text(11) == (
        "the gateway got no answer from this unit"
        " (Modbus exception 11, gateway target failed to respond)"
    )
    assert exception_response_text(3).startswith("the device refuses a read this long")
    assert exception_response_text(42) == (
        "the device answered with exception code 42, which Modbus does not define"
    )
    for code in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11):
        assert f"(Modbus exception {code}, " in exception_response_text(code)


@pytest.mark.parametrize(
    ("input_type", "address", "reference"),
    [
        (InputType.HOLDING, 0, "40001"),
        (InputType.HOLDING, 100, "40101"),
        (InputType.INPUT, 0, "30001"),
        (InputType.COIL, 0, "00001"),
        (InputType.DISCRETE_INPUT, 9998, "19999"),
        (InputType.HOLDING, 9999, "410000"),  # past 9999: the six-digit form
        (InputType.HOLDING, 65535, "465536"),
    ],
)
def test_addresses_are_shown_as_in_vendor_manuals(
    input_type: InputType, address: int, reference: str
) -> None:
    assert register_reference(input_type, address) == reference


def test_a_block_names_its_unit_and_registers() -> None:
    assert Block(1, InputType.HOLDING, 100, 1, ()).where() == "unit 1 holding 40101"
    assert Block(3, InputType.COIL, 0, 16, ()).where() == "unit 3 coil 00001-00016"


# --- on a simulated device ----------------------------------------------------------------


async def test_an_illegal_address_reads_like_a_sentence_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = FakeModbus(timeout=1.0, until=10.0, exceptions={1: 2})

    def script(batches: int) -> None:
        if batches == 5:
            fake.exceptions.clear()  # the PLC program is fixed

    signals: list[dict[str, Any]] = [
        {"name": "recipe", "address": 100},
        {"name": "other", "address": 0, "device_address": 2},
    ]
    config = tcp_config(502, signals, scan_interval="1s")
    driver, sink = await simulate(monkeypatch, fake, config, script)

    first = by_name(sink.batches[0][1])
    expected = (
        "unit 1 holding 40101: the device says the address does not exist"
        " (Modbus exception 2, illegal data address)"
    )
    assert first["recipe"].quality is Quality.BAD and first["recipe"].error == expected
    assert first["other"].quality is Quality.GOOD
    assert by_name(sink.batches[-1][1])["recipe"].quality is Quality.GOOD
    assert driver.health.state is ConnectionState.CONNECTED
    assert driver.health.last_error is None  # cleared once everything reads again
    assert _lines(caplog) == [
        "modbus source connected source=line target=127.0.0.1:502 units=1,2 requests_per_poll=2",
        f"modbus block failed source=line unit=1 block='holding 40101' error={expected!r} "
        "next=retry-in-1s",
        "modbus block reads again source=line unit=1 block='holding 40101' after=5s",
    ]


async def test_a_gateway_exception_puts_the_unit_out_but_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = FakeModbus(timeout=1.0, until=20.0, exceptions={1: 11})
    signals = [{"name": "a", "address": 0}]
    config = tcp_config(502, signals, scan_interval="1s", backoff_max="8s")
    driver, sink = await simulate(monkeypatch, fake, config)
    error = (
        "unit 1 holding 40001: the gateway got no answer from this unit"
        " (Modbus exception 11, gateway target failed to respond)"
    )
    # The gateway answers, so the connection works: no reconnect, the unit is probed.
    assert driver.health.state is ConnectionState.DEGRADED
    assert driver.health.last_error == error
    assert fake.connects == 1
    assert [r.retries for r in fake.sent_to(1)[1:]] == [0] * (len(fake.sent_to(1)) - 1)
    assert len(fake.sent_to(1)) < len(sink.batches)
    assert f"modbus unit not answering source=line unit=1 error={error!r} next=probe-in-1s" in (
        _lines(caplog)
    )


async def test_a_reset_connection_is_described_logged_once_and_its_recovery_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = FakeModbus(timeout=1.0, until=20.0)

    def script(batches: int) -> None:
        if batches == 3:
            fake.fail_next = ConnectionResetError()
            fake.refuse_connects = fake.connects + 2  # then two refused reconnects

    signals = [{"name": "a", "address": 0}]
    config = tcp_config(502, signals, scan_interval="1s", backoff_max="8s")
    driver, sink = await simulate(monkeypatch, fake, config, script)

    error = (
        "connection to 127.0.0.1:502 failed: "
        "the other side reset the connection (ConnectionResetError)"
    )
    lost = [batch for _, batch in sink.batches if batch[0].quality is Quality.BAD]
    assert [batch[0].error for batch in lost] == [error]  # bad samples once
    assert driver.health.state is ConnectionState.CONNECTED
    assert driver.health.reconnects == 1
    lines = _lines(caplog)
    assert lines[1] == (
        f"modbus source disconnected source=line target=127.0.0.1:502 error={error!r} "
        "next=reconnect-in-1s"
    )
    # lost at 3 s; reconnect attempts 1, 2 and 4 s apart: the third one opens
    assert lines[2:] == [
        "modbus source connected again source=line target=127.0.0.1:502 after=7s "
        "reconnects=1 bad_signals=0"
    ]


async def test_a_value_that_does_not_decode_names_its_place_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = FakeModbus(timeout=1.0, until=10.0, image={152: 0x7FC0, 153: 0})  # NaN

    def script(batches: int) -> None:
        if batches == 4:
            fake.image[152] = 0x4120  # 10.0

    signals: list[dict[str, Any]] = [
        {"name": "t", "address": 152, "data_type": "float32"},
        {"name": "n", "address": 150},
    ]
    driver, sink = await simulate(monkeypatch, fake, tcp_config(502, signals), script)
    error = "unit 1 holding 40153-40154: not a usable float32: not a number (NaN)"
    assert by_name(sink.batches[0][1])["t"].error == error
    assert by_name(sink.batches[-1][1])["t"].value == 10.0
    assert driver.health.state is ConnectionState.CONNECTED
    assert _lines(caplog)[1:] == [
        f"modbus value unreadable source=line signal=t error={error!r} next=retry-in-0.1s",
        "modbus value readable again source=line signal=t after=0.4s",
    ]
