"""Basic256Sha256 SignAndEncrypt with user name and password against a server that requires
both; clear errors in health for a wrong password or a certificate nobody trusts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asyncua import ua

from drivers.base import ConnectionState, Quality
from drivers.opcua.security import thumbprint
from floorgate_demo.opcua_sim import OpcUaSimulator, Security, make_certificate, node_ids
from floorgate_demo.simulator import SimulatedLine
from tests.drivers.opcua.helpers import running, source_config
from tests.helpers import wait_until

USER, PASSWORD = "operator", "s3cret-pass"


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[OpcUaSimulator]:
    """Only Basic256Sha256/SignAndEncrypt, only user `operator`, no client trusted yet."""
    cert, key = await make_certificate(tmp_path / "server-pki", "urn:floorgate:simulator:server")
    security = Security(cert, key, users={USER: PASSWORD}, trusted_clients=set())
    async with OpcUaSimulator(SimulatedLine(seed=5), tick=0.05, security=security) as sim:
        await sim.start()
        yield sim


def secured_config(sim: OpcUaSimulator, password_file: Path, **security: object) -> object:
    assert sim.security is not None
    return source_config(
        sim.endpoint,
        username=USER,
        password={"file": str(password_file)},
        security={"policy": "Basic256Sha256", "mode": "sign_and_encrypt", **security},
        signals=[{"name": "press1.good", "node_id": node_ids()["press1.good"]}],
    )


def password(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "password"
    path.write_text(text + "\n")
    return path


@pytest.mark.slow
async def test_generated_certificate_is_refused_until_trusted_then_data_flows(
    secured: OpcUaSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert secured.security is not None
    config = secured_config(
        secured,
        password(tmp_path, PASSWORD),
        server_certificate=str(secured.security.certificate),
    )
    state = tmp_path / "state"
    caplog.set_level(logging.WARNING, logger="floorgate.drivers.opcua")
    async with running(config, state) as (driver, got):  # type: ignore[arg-type]
        await wait_until(lambda: "certificate" in (driver.health.last_error or ""), 60, "refusal")
        client_cert = state / "opcua" / "line-opcua" / "client_cert.der"
        print_line = thumbprint(client_cert.read_bytes())
        assert driver.health.state is ConnectionState.DISCONNECTED
        assert print_line in (driver.health.last_error or "")
        assert "trust it on the server" in (driver.health.last_error or "")
        assert any(
            print_line in r.getMessage() and "generated" in r.getMessage() for r in caplog.records
        )
        assert "press1.good" not in got.latest or got.latest["press1.good"].quality is Quality.BAD
        # the engineer trusts the printed certificate on the server
        secured.security.trusted_clients.add(print_line.replace(":", ""))  # type: ignore[union-attr]
        await wait_until(
            lambda: driver.health.state is ConnectionState.CONNECTED, 60, "trusted connection"
        )
        await wait_until(lambda: got.latest["press1.good"].quality is Quality.GOOD, 30, "data")
        assert (state / "opcua" / "line-opcua" / "client_key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.slow
async def test_wrong_password_is_a_clear_error_and_a_fixed_one_connects(
    secured: OpcUaSimulator, tmp_path: Path
) -> None:
    assert secured.security is not None
    state = tmp_path / "state"
    server_der = secured.security.certificate.read_bytes()
    secret = password(tmp_path, "not-the-password")
    config = secured_config(secured, secret, server_thumbprint=thumbprint(server_der))
    secured.security.trusted_clients = None  # any client certificate
    secured.security.users[USER] = PASSWORD
    async with running(config, state) as (driver, got):  # type: ignore[arg-type]
        await wait_until(lambda: "password" in (driver.health.last_error or ""), 60, "refusal")
        assert "refused user 'operator'" in (driver.health.last_error or "")
        assert driver.health.state is ConnectionState.DISCONNECTED
        secret.write_text(PASSWORD + "\n")  # the password is read again at each attempt
        await wait_until(
            lambda: (
                "press1.good" in got.latest and got.latest["press1.good"].quality is Quality.GOOD
            ),
            60,
            "data",
        )


@pytest.mark.slow
async def test_a_server_certificate_other_than_the_trusted_one_is_refused(
    secured: OpcUaSimulator, tmp_path: Path
) -> None:
    config = secured_config(secured, password(tmp_path, PASSWORD), server_thumbprint="00" * 20)
    async with running(config, tmp_path / "state") as (driver, got):  # type: ignore[arg-type]
        await wait_until(lambda: "thumbprint" in (driver.health.last_error or ""), 60, "refusal")
        error = driver.health.last_error or ""
        assert "server certificate not trusted" in error
        # both thumbprints printed the same way, so they can be compared by eye
        assert secured.security is not None
        presented = thumbprint(secured.security.certificate.read_bytes())
        assert f"its thumbprint is {presented}, " in error
        assert error.endswith(f"configured server_thumbprint is {':'.join(['00'] * 20)}")
        assert not got.good("press1.good")


@pytest.mark.slow
async def test_no_silent_fallback_when_the_server_offers_no_secure_endpoint(
    simulator: OpcUaSimulator, tmp_path: Path
) -> None:
    config = source_config(
        simulator.endpoint,
        security={
            "policy": "Basic256Sha256",
            "mode": "sign_and_encrypt",
            "server_thumbprint": "11" * 20,
        },
        signals=[{"name": "press1.good", "node_id": node_ids()["press1.good"]}],
    )
    async with running(config, tmp_path / "state") as (driver, got):
        await wait_until(
            lambda: "offers no endpoint" in (driver.health.last_error or ""), 60, "refusal"
        )
        assert "None_" in (driver.health.last_error or "")
        assert not got.good("press1.good")
        assert driver.health.state is ConnectionState.DISCONNECTED


@pytest.mark.parametrize(
    ("policy", "mode", "server_policy"),
    [
        ("Aes128_Sha256_RsaOaep", "sign", ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign),
        (
            "Aes256_Sha256_RsaPss",
            "sign_and_encrypt",
            ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
        ),
    ],
)
@pytest.mark.slow
async def test_the_aes_policies_connect_too(
    tmp_path: Path, policy: str, mode: str, server_policy: ua.SecurityPolicyType
) -> None:
    cert, key = await make_certificate(tmp_path / "server-pki", "urn:floorgate:simulator:server")
    security = Security(cert, key, policies=[server_policy])
    async with OpcUaSimulator(SimulatedLine(seed=5), tick=0.05, security=security) as sim:
        await sim.start()
        config = source_config(
            sim.endpoint,
            security={"policy": policy, "mode": mode, "server_certificate": str(cert)},
            signals=[{"name": "press1.good", "node_id": node_ids()["press1.good"]}],
        )
        async with running(config, tmp_path / "state") as (driver, got):
            await wait_until(lambda: bool(got.good("press1.good")), 60, "data")
            assert driver.health.state is ConnectionState.CONNECTED
