"""What a plant engineer reads in health: every error says something in words (also when
the library's exception has no message), thumbprints are printed one way, and the driver
tells health how old its data may get."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from asyncua import ua

from drivers.base import NotConnected, Sample, SourceHealth
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.errors import describe, translate
from drivers.opcua.security import (
    SecuritySetupError,
    format_thumbprint,
    server_certificate,
    thumbprint,
)
from drivers.opcua.session import Session
from floorgate_demo.opcua_sim import make_certificate
from tests.drivers.opcua.helpers import source_config

ENDPOINT = "opc.tcp://127.0.0.1:4840/floorgate/"
COLON_PAIRS = r"(?:[0-9A-F]{2}:){19}[0-9A-F]{2}"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ConnectionResetError(), "connection closed by the server (ConnectionResetError)"),
        (BrokenPipeError(), "connection closed by the server (BrokenPipeError)"),
        (EOFError(), "connection closed by the server (EOFError)"),
        (TimeoutError(), "no answer in time (TimeoutError)"),
        (OSError(), "the operating system reported an error (OSError)"),
        (ua.UaError(), "failed without a message (UaError)"),
        (ConnectionError("transport lost"), "transport lost (ConnectionError)"),
    ],
)
def test_an_exception_is_described_in_words_even_without_a_message(
    exc: BaseException, text: str
) -> None:
    assert describe(exc) == text


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            ConnectionResetError(),
            f"cannot reach {ENDPOINT}: connection closed by the server (ConnectionResetError)",
        ),
        (RuntimeError(), f"{ENDPOINT}: failed without a message (RuntimeError)"),
        (ValueError("bad frame"), f"{ENDPOINT}: bad frame (ValueError)"),
    ],
)
def test_translated_errors_never_end_after_the_colon(exc: BaseException, text: str) -> None:
    error = translate(exc, endpoint=ENDPOINT, username=None, client_thumbprint=None)
    assert str(error) == text


async def ignore(batch: Sequence[Sample]) -> None:
    del batch


def session() -> Session:
    config = source_config(ENDPOINT)
    return Session(config, SourceHealth(config.name), Path("/nonexistent-state"), ignore)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (ConnectionResetError(), "connection closed by the server (ConnectionResetError)"),
        (
            TimeoutError(),
            "the server did not answer the watchdog read of its state within 5 s (TimeoutError)",
        ),
        (ConnectionError("transport lost"), "transport lost (ConnectionError)"),
    ],
)
async def test_a_lost_connection_says_why(exc: Exception, cause: str) -> None:
    lost = session()
    await lost._on_connection_lost(exc)
    with pytest.raises(NotConnected) as raised:
        lost._check_connection()
    assert str(raised.value) == f"connection to {ENDPOINT} lost: {cause}"


def test_a_closed_client_is_named_as_such() -> None:
    with pytest.raises(NotConnected, match=r"lost \(the OPC UA client is closed\)$"):
        session()._check_connection()


def test_thumbprints_are_printed_one_way() -> None:
    assert format_thumbprint("ab" * 20) == ":".join(["AB"] * 20)
    assert format_thumbprint("AB:" * 19 + "ab") == ":".join(["AB"] * 20)
    assert re.fullmatch(COLON_PAIRS, thumbprint(b"any der"))


class OffersEndpoints:
    """The part of asyncua's Client that server_certificate uses to look at endpoints."""

    def __init__(self, endpoints: list[ua.EndpointDescription]) -> None:
        self.endpoints = endpoints

    async def connect_and_get_server_endpoints(self) -> list[ua.EndpointDescription]:
        return self.endpoints


async def test_a_wrong_server_thumbprint_shows_both_thumbprints_the_same_way(
    tmp_path: Path,
) -> None:
    cert, _ = await make_certificate(tmp_path, "urn:floorgate:test:server")
    der = cert.read_bytes()
    offered = ua.EndpointDescription(
        EndpointUrl=ENDPOINT,
        ServerCertificate=der,
        SecurityMode=ua.MessageSecurityMode.SignAndEncrypt,
        SecurityPolicyUri="http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
    )
    config = source_config(
        ENDPOINT,
        security={
            "policy": "Basic256Sha256",
            "mode": "sign_and_encrypt",
            "server_thumbprint": "0a" * 20,  # written in lower case without colons
        },
    )
    with pytest.raises(SecuritySetupError) as raised:
        await server_certificate(config, OffersEndpoints([offered]))  # stands in for the Client
    message = str(raised.value)
    assert message == (
        f"server certificate not trusted: its thumbprint is {thumbprint(der)}, the "
        f"configured server_thumbprint is {':'.join(['0A'] * 20)}"
    )
    assert len(re.findall(COLON_PAIRS, message)) == 2


def test_health_is_told_how_old_polled_data_may_get() -> None:
    poll = OpcUaDriver(source_config(ENDPOINT, mode="poll", poll_interval="200ms", timeout="5s"))
    assert poll.health.stale_after == pytest.approx(3 * 0.2 + 5)
    # subscribe mode: a steady process sends no data, only keep-alives; the driver
    # judges silence by publish responses itself (see test_escalation)
    assert OpcUaDriver(source_config(ENDPOINT)).health.stale_after is None
