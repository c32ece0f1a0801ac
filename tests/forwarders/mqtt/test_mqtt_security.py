"""Passwords and TLS against a real Mosquitto: what works, and the clear errors when not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config.models import AgentSection
from agent.forwarders.base import Fatal, NotConnected
from agent.forwarders.mqtt.forwarder import MqttForwarder
from agent.monitoring.status import DestinationState
from buffer.sqlite import SqliteBuffer
from tests.forwarders.mqtt.broker import Mosquitto, Subscriber
from tests.forwarders.mqtt.conftest import delivering, event_row, mqtt_config, wait_drained
from tests.forwarders.mqtt.pki import Authority
from tests.helpers import wait_until

pytestmark = pytest.mark.mosquitto  # a real broker (mosquitto from apt)


def secret(tmp_path: Path, name: str, value: str) -> dict[str, str]:
    path = tmp_path / name
    path.write_text(value + "\n")
    return {"file": str(path)}


@pytest.fixture
async def locked_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(
        tmp_path / "locked",
        settings=("allow_anonymous false", f"password_file {tmp_path / 'locked' / 'passwords'}"),
    )
    broker.add_user("gateway", "right-password")
    broker.add_user("reader", "reader-password")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_username_and_password_from_a_file(
    locked_broker: Mosquitto, buffer: SqliteBuffer, tmp_path: Path, protocol: str
) -> None:
    rows = [event_row(n, "press1") for n in range(1, 21)]
    config = mqtt_config(
        locked_broker.port,
        protocol=protocol,
        username="gateway",
        password=secret(tmp_path, "pw", "right-password"),
    )
    sub = Subscriber(locked_broker.port)
    sub.login("reader", "reader-password")
    async with sub:
        await buffer.append(rows)
        async with delivering(buffer, config) as running:
            await wait_drained(buffer, running)
        await wait_until(lambda: sub.event_ids() == {r.id for r in rows}, 30, "received")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_wrong_password_is_a_clear_fatal_error_in_health(
    locked_broker: Mosquitto, buffer: SqliteBuffer, tmp_path: Path, protocol: str
) -> None:
    await buffer.append([event_row(1, "press1")])
    config = mqtt_config(
        locked_broker.port,
        protocol=protocol,
        username="gateway",
        password=secret(tmp_path, "pw", "wrong-password"),
    )
    async with delivering(buffer, config) as running:

        def failing() -> bool:
            running.check()
            return running.health.state is DestinationState.FAILING

        await wait_until(failing, 30, "destination failing")
        error = running.health.last_error or ""
        assert "Bad user name or password" in error or "Not authorized" in error, error
        assert "check username and password" in error
        assert "wrong-password" not in error
        assert running.health.delivered == 0


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path, "plant-ca")


@pytest.fixture
async def tls_broker(tmp_path: Path, authority: Authority) -> AsyncIterator[Mosquitto]:
    server = authority.issue("broker", server=True)
    broker = Mosquitto(
        tmp_path / "tls",
        tls=(
            f"cafile {authority.ca_file}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
        ),
    )
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_tls_with_the_plants_ca(
    tls_broker: Mosquitto, authority: Authority, buffer: SqliteBuffer, host: str
) -> None:
    rows = [event_row(n, "press2") for n in range(1, 21)]
    config = mqtt_config(tls_broker.port, host=host, tls={"ca_file": str(authority.ca_file)})
    async with Subscriber(tls_broker.plain_port) as sub:
        await buffer.append(rows)
        async with delivering(buffer, config) as running:
            await wait_drained(buffer, running)
            assert running.health.state is DestinationState.CONNECTED
        await wait_until(lambda: sub.event_ids() == {r.id for r in rows}, 30, "received")
        await wait_until(lambda: sub.last("floorgate/gw/status") == b"offline", 30, "offline")


async def test_an_untrusted_broker_certificate_is_a_clear_fatal_error_in_health(
    tls_broker: Mosquitto, tmp_path: Path, buffer: SqliteBuffer
) -> None:
    other = Authority(tmp_path, "someone-else")
    await buffer.append([event_row(1, "press1")])
    config = mqtt_config(tls_broker.port, tls={"ca_file": str(other.ca_file)})
    async with delivering(buffer, config) as running:

        def failing() -> bool:
            running.check()
            return running.health.state is DestinationState.FAILING

        await wait_until(failing, 30, "destination failing")
        error = running.health.last_error or ""
        assert "TLS certificate is not trusted" in error, error
        assert str(other.ca_file) in error
        assert running.health.delivered == 0


async def test_a_certificate_for_another_host_is_refused(
    tmp_path: Path, authority: Authority
) -> None:
    server = authority.issue("elsewhere", server=True, names=("elsewhere.example",))
    broker = Mosquitto(
        tmp_path / "elsewhere",
        tls=(f"cafile {authority.ca_file}", f"certfile {server.cert}", f"keyfile {server.key}"),
    )
    await broker.start()
    try:
        config = mqtt_config(broker.port, tls={"ca_file": str(authority.ca_file)})
        forwarder = MqttForwarder(config, AgentSection(id="gw"))
        with pytest.raises(Fatal, match="not trusted: IP address mismatch"):
            await forwarder.connect()
    finally:
        await broker.stop()


async def test_client_certificate_when_the_broker_requires_one(
    tmp_path: Path, authority: Authority, buffer: SqliteBuffer
) -> None:
    server = authority.issue("broker", server=True)
    client = authority.issue("gateway", server=False)
    broker = Mosquitto(
        tmp_path / "mtls",
        tls=(
            f"cafile {authority.ca_file}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
            "require_certificate true",
        ),
    )
    await broker.start()
    try:
        rows = [event_row(n, "press1") for n in range(1, 6)]
        tls = {"ca_file": str(authority.ca_file)}
        with_cert = mqtt_config(
            broker.port, tls={**tls, "cert_file": str(client.cert), "key_file": str(client.key)}
        )
        async with Subscriber(broker.plain_port) as sub:
            await buffer.append(rows)
            async with delivering(buffer, with_cert) as running:
                await wait_drained(buffer, running)
            await wait_until(lambda: sub.event_ids() == {r.id for r in rows}, 30, "received")
        without = MqttForwarder(mqtt_config(broker.port, tls=tls), AgentSection(id="gw"))
        with pytest.raises(NotConnected, match="require a client certificate"):
            await without.connect()
    finally:
        await broker.stop()


@pytest.mark.slow
async def test_mqtt5_publish_refused_by_the_acl_is_dead_lettered_the_rest_flows(
    tmp_path: Path, buffer: SqliteBuffer
) -> None:
    # Mosquitto 2.0.11 answers a refused MQTT 5 publish with PUBACK "Not authorized" and
    # then drops the connection, sometimes before that PUBACK is read: the refusal may
    # take a few reconnects to be seen, but it is seen, and nothing else is lost.
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write floorgate/#\ntopic write plant/hall/line1/press1/#\n")
    broker = Mosquitto(
        tmp_path / "acl-broker", settings=("allow_anonymous true", f"acl_file {acl}")
    )
    await broker.start()
    try:
        allowed = [event_row(n, "press1") for n in range(1, 6)]
        denied = event_row(6, "press2")
        after = [event_row(n, "press1") for n in range(7, 10)]
        async with Subscriber(broker.port) as sub:
            await buffer.append([*allowed, denied, *after])
            async with delivering(buffer, mqtt_config(broker.port, protocol="5")) as running:
                await wait_drained(buffer, running)
                assert running.health.dead == 1
            await wait_until(
                lambda: sub.event_ids() == {r.id for r in allowed + after}, 30, "the rest"
            )
        dead = await buffer.dead_letters("broker")
        assert [d.id for d in dead] == [denied.id]
        assert "Not authorized" in dead[0].reason
        assert "plant/hall/line1/press2/sample" in dead[0].reason
    finally:
        await broker.stop()


async def test_unreadable_tls_or_password_files_name_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    tls = MqttForwarder(mqtt_config(1, tls={"ca_file": str(missing)}), AgentSection(id="gw"))
    with pytest.raises(Fatal, match=f"cannot load tls.ca_file {missing}: No such file"):
        await tls.connect()
    password = {"file": str(tmp_path / "nope")}
    login = MqttForwarder(mqtt_config(1, username="gw", password=password), AgentSection(id="gw"))
    with pytest.raises(Fatal, match="password: cannot read secret from file"):
        await login.connect()


async def test_an_idle_reconnect_refused_says_why_in_health(
    locked_broker: Mosquitto, tmp_path: Path
) -> None:
    config = mqtt_config(
        locked_broker.port, username="gateway", password=secret(tmp_path, "pw", "right-password")
    )
    forwarder = MqttForwarder(config, AgentSection(id="gw"))
    await forwarder.connect()
    try:
        locked_broker.add_user("gateway", "rotated-password")  # the file still says "right"
        await locked_broker.stop()
        await locked_broker.start()
        await wait_until(
            lambda: "check username and password" in (forwarder.link_problem() or ""),
            30,
            "the refusal named while idle",
        )
    finally:
        await forwarder.close()
