"""Every error text a destination shows says what happened in words (issue 15): a
connection reset is not "ReadError: " with nothing after it.

Real servers on 127.0.0.1: one that resets the connection after reading the request
(SO_LINGER 0, an RST) and one that never answers; the real HTTP forwarder, Odoo
transport and MQTT forwarder.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from agent.common.errors import describe
from agent.config.models import AgentSection
from agent.forwarders.base import ForwardError, NotConnected, Transient
from agent.forwarders.http.config import HttpDestinationConfig
from agent.forwarders.http.forwarder import WebhookForwarder
from agent.forwarders.mqtt.config import MqttDestinationConfig
from agent.forwarders.mqtt.forwarder import MqttForwarder
from agent.forwarders.odoo.config import OdooProtocol
from agent.forwarders.odoo.transport import OdooTransport
from buffer.rows import ClaimedEvent
from tests.forwarders.test_destination_health import ResettingServer, SilentServer, event_row

# A colon followed by nothing, or straight by the "(Type)" at the end: a text with a
# hole where the message should be.
HOLE = re.compile(r":\s*(?:$|\()")


def assert_in_words(text: str) -> None:
    assert text.strip(), "an empty error text"
    assert not HOLE.search(text), f"nothing after a colon: {text!r}"


@pytest.fixture
async def resetting() -> AsyncIterator[ResettingServer]:
    async with ResettingServer() as server:
        yield server


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


def claimed(n: int) -> ClaimedEvent:
    row = event_row(n, "mw")
    return ClaimedEvent(n, row.id, row.type, row.key, row.payload, attempts=0)


async def http_send(url: str, timeout: str = "5s") -> ForwardError:
    config = HttpDestinationConfig.model_validate(
        {"name": "mw", "type": "http", "url": url, "timeout": timeout}
    )
    forwarder = WebhookForwarder(config)
    await forwarder.connect()
    try:
        with pytest.raises(ForwardError) as caught:
            await forwarder.send([claimed(1)])
    finally:
        await forwarder.close()
    return caught.value


async def test_http_connection_reset_says_reset_and_the_request(
    resetting: ResettingServer,
) -> None:
    error = await http_send(f"{resetting.url}/events")
    text = str(error)
    assert isinstance(error, Transient)
    assert resetting.requests == 1
    assert_in_words(text)
    assert text.startswith(f"destination mw: POST {resetting.url}/events: ")
    assert "reset" in text.lower() and text.endswith("(ReadError)"), text


async def test_http_server_that_never_answers_says_no_answer_within(silent: SilentServer) -> None:
    error = await http_send(f"{silent.url}/events", timeout="300ms")
    text = str(error)
    assert isinstance(error, Transient)
    assert_in_words(text)
    # httpx's own read timeout or the whole-request bound, whichever fires first: the
    # same words either way.
    assert "no answer within 0.3 s" in text, text


def transport(url: str, timeout: float) -> OdooTransport:
    return OdooTransport(
        url=url,
        database="prod",
        api_key="key",
        protocol=OdooProtocol.AUTO,
        login="floorgate",
        timeout=timeout,
        where="destination odoo",
    )


async def test_odoo_connection_reset_says_reset_and_the_request(
    resetting: ResettingServer,
) -> None:
    odoo = transport(resetting.url, 5.0)
    with pytest.raises(Transient) as caught:
        await odoo.open()
    text = str(caught.value)
    assert_in_words(text)
    assert text.startswith(f"destination odoo: GET {resetting.url}/web/version: "), text
    assert "reset" in text.lower() and text.endswith("(ReadError)"), text


async def test_odoo_server_that_never_answers_says_no_answer_within(silent: SilentServer) -> None:
    odoo = transport(silent.url, 0.3)
    with pytest.raises(Transient) as caught:
        await odoo.open()
    text = str(caught.value)
    assert_in_words(text)
    assert "no answer within 0.3 s" in text, text


def mqtt(port: int) -> MqttForwarder:
    config = MqttDestinationConfig.model_validate(
        {
            "name": "uns",
            "type": "mqtt",
            "host": "127.0.0.1",
            "port": port,
            "connect_timeout": "500ms",
        }
    )
    return MqttForwarder(config, AgentSection(id="gw", site="plant"))


async def test_mqtt_connection_reset_is_said_in_words(resetting: ResettingServer) -> None:
    forwarder = mqtt(resetting.port)
    try:
        with pytest.raises(NotConnected) as caught:
            await forwarder.connect()
    finally:
        await forwarder.close()
    text = str(caught.value)
    assert_in_words(text)
    assert text.startswith(f"destination uns (mqtt://127.0.0.1:{resetting.port}): "), text


async def test_mqtt_broker_that_never_answers_is_said_in_words(silent: SilentServer) -> None:
    forwarder = mqtt(silent.port)
    try:
        with pytest.raises(NotConnected) as caught:
            await forwarder.connect()
    finally:
        await forwarder.close()
    text = str(caught.value)
    assert_in_words(text)
    assert "no CONNACK within 0.5" in text, text


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad topic"), "bad topic (ValueError)"),
        (OSError(), "the operating system reported an error (OSError)"),
    ],
)
def test_describe_names_the_type_and_never_leaves_a_hole(exc: Exception, expected: str) -> None:
    assert describe(exc) == expected
    assert_in_words(describe(exc))


def test_describe_finds_the_message_along_the_cause_chain() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError() from inner
    except RuntimeError as outer:
        assert describe(outer) == "[Errno 104] Connection reset by peer (RuntimeError)"
    assert describe(OSError(), "the broker went away") == "the broker went away (OSError)"
