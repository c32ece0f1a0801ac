"""How the Odoo destination reads what comes back: classified by the exception name Odoo
sends (never its message), on both protocols; and what the delivery loop then does.
These need faults a real Odoo cannot be told to make, so they run on the stand-in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config.common import RetryConfig
from agent.config.models import AgentSection
from agent.config.rules import MachineStateValue
from agent.forwarders.base import Fatal, ForwardError, NotConnected, Transient
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.forwarders.odoo import master as odoo_master
from agent.forwarders.odoo.config import OdooDestinationConfig, OdooProtocol
from agent.forwarders.odoo.forwarder import OdooForwarder
from agent.forwarders.odoo.transport import CallRejected, OdooTransport
from agent.monitoring.status import DestinationHealth, DestinationState
from buffer.rows import ClaimedEvent, EventRow
from buffer.sqlite import SqliteBuffer
from tests.forwarders.odoo.conftest import transport_for
from tests.forwarders.odoo.kit import Machine, at, claimed
from tests.forwarders.odoo.standin import OdooStandIn
from tests.helpers import free_port

PROTOCOLS = [
    pytest.param(("19.0", True, OdooProtocol.AUTO), id="json2"),
    pytest.param(("18.0", False, OdooProtocol.AUTO), id="jsonrpc"),
]


@pytest.fixture(params=PROTOCOLS)
async def odoo(request: pytest.FixtureRequest) -> AsyncIterator[tuple[OdooStandIn, OdooTransport]]:
    version, json2, protocol = request.param
    async with OdooStandIn(version=version, json2=json2) as standin:
        transport = transport_for(standin, protocol)
        await transport.open()
        try:
            yield standin, transport
        finally:
            await transport.close()


async def call(transport: OdooTransport) -> object:
    return await transport.call("mrp.workcenter", "search_read", domain=[], fields=["name"])


async def test_the_protocol_matches_the_server(odoo: tuple[OdooStandIn, OdooTransport]) -> None:
    standin, transport = odoo
    expected = OdooProtocol.JSON2 if standin.json2 else OdooProtocol.JSONRPC
    assert transport.protocol is expected
    assert transport.server_version == standin.version


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_an_html_error_page_is_transient(
    odoo: tuple[OdooStandIn, OdooTransport], status: int
) -> None:
    standin, transport = odoo
    standin.fail_next(status)
    with pytest.raises(Transient) as caught:
        await call(transport)
    assert f"HTTP {status}" in str(caught.value)
    assert await call(transport) == []  # and the next call works


async def test_a_truncated_answer_is_transient(odoo: tuple[OdooStandIn, OdooTransport]) -> None:
    standin, transport = odoo
    await transport.call("mrp.workcenter", "create", vals_list={"name": "x" * 200})
    standin.truncate_next()
    with pytest.raises(Transient) as caught:
        await call(transport)
    assert "not JSON" in str(caught.value) and "truncated" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("psycopg2.errors.SerializationFailure", Transient),
        ("psycopg2.errors.DeadlockDetected", Transient),
        ("psycopg2.OperationalError", Transient),
        ("odoo.exceptions.ValidationError", CallRejected),
        ("odoo.exceptions.UserError", CallRejected),
        ("odoo.exceptions.MissingError", CallRejected),
        ("builtins.ValueError", CallRejected),
        ("psycopg2.errors.InvalidTextRepresentation", CallRejected),
        ("odoo.exceptions.AccessDenied", Fatal),
    ],
)
async def test_errors_are_classified_by_name_not_by_message(
    odoo: tuple[OdooStandIn, OdooTransport], name: str, kind: type[ForwardError]
) -> None:
    standin, transport = odoo
    standin.raise_next(name, "Message in the user's language: Fehler")
    with pytest.raises(kind) as caught:
        await call(transport)
    assert type(caught.value) is kind
    assert name in str(caught.value)


async def test_a_wrong_database_name_is_transient_and_says_so() -> None:
    async with OdooStandIn(version="18.0", json2=False) as standin:
        transport = transport_for(standin)
        standin.database = "other"
        with pytest.raises(Transient) as caught:
            await transport.open()
        await transport.close()
        assert "database name 'floorgate' is wrong" in str(caught.value)


async def test_a_refused_key_is_fatal_on_both_protocols(
    odoo: tuple[OdooStandIn, OdooTransport],
) -> None:
    standin, transport = odoo
    standin.revoke(standin.api_key)
    with pytest.raises(Fatal):
        await call(transport)
    with pytest.raises(Fatal):
        await transport.open()


async def test_json_rpc_needs_a_login() -> None:
    async with OdooStandIn(version="18.0", json2=False) as standin:
        transport = OdooTransport(
            url=standin.url,
            database=standin.database,
            api_key=standin.api_key,
            protocol=OdooProtocol.AUTO,
            login=None,
            timeout=5.0,
        )
        with pytest.raises(Fatal, match="needs `login:`"):
            await transport.open()


async def test_json2_asked_of_an_old_server_is_fatal() -> None:
    async with OdooStandIn(version="18.0", json2=False) as standin:
        with pytest.raises(Fatal, match="does not offer JSON-2"):
            await transport_for(standin, OdooProtocol.JSON2).open()


async def test_nothing_listening_is_not_connected() -> None:
    transport = OdooTransport(
        url=f"http://127.0.0.1:{free_port()}",
        database="x",
        api_key="k",
        protocol=OdooProtocol.AUTO,
        login="l",
        timeout=5.0,
    )
    with pytest.raises(NotConnected):
        await transport.open()


# -- with the delivery loop --------------------------------------------------------------


def odoo_config(standin: OdooStandIn, key_file: Path) -> OdooDestinationConfig:
    return OdooDestinationConfig.model_validate(
        {
            "name": "odoo",
            "type": "odoo",
            "url": standin.url,
            "database": standin.database,
            "api_key": {"file": str(key_file)},
            "login": standin.login,
            "retry": {"initial": "10ms", "max": "50ms"},
            "machine_map": {"press1": {"work_center": "P1"}},
        }
    )


def rows(events: list[ClaimedEvent]) -> list[EventRow]:
    return [
        EventRow(e.id, e.type, e.key, "2026-03-02T06:00:00+00:00", e.payload, ("odoo",))
        for e in events
    ]


async def run_loop(
    forwarder: OdooForwarder, buffer: SqliteBuffer, health: DestinationHealth
) -> asyncio.Task[None]:
    settings = DeliverySettings(
        batch_size=100, retry=RetryConfig(initial="10ms", max="50ms"), fatal_pause=3600
    )
    loop = DeliveryLoop(forwarder, buffer, settings, health, asyncio.Event())
    return asyncio.create_task(loop.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(("version", "json2"), [("19.0", True), ("18.0", False)])
async def test_access_denied_stops_the_destination_without_a_retry_storm(
    tmp_path: Path, version: str, json2: bool
) -> None:
    async with OdooStandIn(version=version, json2=json2) as standin:
        key_file = tmp_path / "key"
        key_file.write_text("expired-key\n")
        press = Machine("press1")
        buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
        try:
            await buffer.append(rows(claimed(press.state(MachineStateValue.DOWN, at(0)))))
            forwarder = OdooForwarder(
                odoo_config(standin, key_file), AgentSection(id="gw-test", state_dir=tmp_path)
            )
            health = DestinationHealth(name="odoo", type="odoo")
            task = await run_loop(forwarder, buffer, health)
            async with asyncio.timeout(20):
                while health.state is not DestinationState.FAILING:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # room for a storm, if there were one
            await stop(task)
            assert standin.denied == 1
            error = (health.last_error or "").lower()
            assert "access denied" in error or "authentication refused" in error
            stats = await buffer.stats()
            assert stats.destinations["odoo"].pending == 1  # nothing lost or dead-lettered
            assert stats.destinations["odoo"].dead == 0
        finally:
            await buffer.close()


async def test_a_missing_work_center_waits_then_flows_once_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(odoo_master, "MISS_REFRESH", 0.0)
    async with OdooStandIn() as standin:
        key_file = tmp_path / "key"
        key_file.write_text(standin.api_key)
        press = Machine("press1")
        buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
        try:
            events = claimed(
                press.state(MachineStateValue.DOWN, at(0)),
                press.state(MachineStateValue.RUNNING, at(3)),
            )
            await buffer.append(rows(events))
            forwarder = OdooForwarder(
                odoo_config(standin, key_file), AgentSection(id="gw-test", state_dir=tmp_path)
            )
            health = DestinationHealth(name="odoo", type="odoo")
            task = await run_loop(forwarder, buffer, health)
            async with asyncio.timeout(20):
                while "'P1' not found" not in (health.last_error or ""):
                    await asyncio.sleep(0.02)
            assert health.state is DestinationState.RETRYING
            standin.db.new_record("mrp.workcenter", {"name": "Press 1", "code": "P1"})
            async with asyncio.timeout(20):
                while health.delivered < 2:
                    await asyncio.sleep(0.02)
            await stop(task)
            records = standin.records("mrp.workcenter.productivity")
            assert [(r["date_start"], r["date_end"]) for r in records] == [
                ("2026-03-02 06:00:00", "2026-03-02 06:03:00")
            ]
        finally:
            await buffer.close()


async def test_odoo_down_for_a_while_then_every_record_once(tmp_path: Path) -> None:
    async with OdooStandIn() as standin:
        standin.db.new_record("mrp.workcenter", {"name": "Press 1", "code": "P1"})
        key_file = tmp_path / "key"
        key_file.write_text(standin.api_key)
        press = Machine("press1")
        buffer = await SqliteBuffer.open(tmp_path / "buffer.db")
        try:
            forwarder = OdooForwarder(
                odoo_config(standin, key_file), AgentSection(id="gw-test", state_dir=tmp_path)
            )
            health = DestinationHealth(name="odoo", type="odoo")
            task = await run_loop(forwarder, buffer, health)
            events = [press.state(MachineStateValue.RUNNING, at(0))]
            for minute in range(1, 21, 2):
                events.append(press.state(MachineStateValue.DOWN, at(minute)))
                events.append(press.state(MachineStateValue.RUNNING, at(minute + 1)))
            # The first half arrives; Odoo then fails (HTML 500s) while the rest arrives.
            await buffer.append(rows(claimed(*events[:7])))
            async with asyncio.timeout(20):
                while health.delivered < 7:
                    await asyncio.sleep(0.02)
            standin.fail_until_cleared(500)
            await buffer.append(rows(claimed(*events[7:])))
            async with asyncio.timeout(20):
                while health.state is not DestinationState.RETRYING:
                    await asyncio.sleep(0.02)
            standin.stop_failing()
            async with asyncio.timeout(30):
                while health.delivered < len(events):
                    await asyncio.sleep(0.02)
            await stop(task)
        finally:
            await buffer.close()
        records = sorted(standin.records("mrp.workcenter.productivity"), key=lambda r: r["id"])
        assert len(records) == 10
        assert all(r["date_end"] for r in records)


async def test_a_row_failing_the_whole_call_is_found_by_splitting(tmp_path: Path) -> None:
    async with OdooStandIn() as standin:
        key_file = tmp_path / "key"
        key_file.write_text(standin.api_key)
        standin.poison = "press3: alarm"
        config = odoo_config(standin, key_file)
        forwarder = OdooForwarder(config, AgentSection(id="gw-test", state_dir=tmp_path))
        machines = [Machine(f"press{n}") for n in range(1, 6)]
        batch = claimed(*(m.alarm(True, at(1)) for m in machines))
        await forwarder.connect()
        try:
            result = await forwarder.send(batch)
        finally:
            await forwarder.close()
        assert list(result.rejected) == [batch[2].seq]
        assert "cannot process" in result.rejected[batch[2].seq]
        assert sorted(result.delivered) == sorted(e.seq for i, e in enumerate(batch) if i != 2)
        names = sorted(r["name"] for r in standin.records("maintenance.request"))
        assert names == [f"press{n}: alarm hot" for n in (1, 2, 4, 5)]


async def test_an_api_key_expiring_soon_is_warned_about_at_connect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with OdooStandIn() as standin:
        soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
        for key in standin.records("res.users.apikeys"):
            key["expiration_date"] = soon
        key_file = tmp_path / "key"
        key_file.write_text(standin.api_key)
        forwarder = OdooForwarder(
            odoo_config(standin, key_file), AgentSection(id="gw-test", state_dir=tmp_path)
        )
        with caplog.at_level(logging.WARNING, logger="agent.forwarders.odoo.forwarder"):
            await forwarder.connect()
            await forwarder.close()
        warnings = [r.getMessage() for r in caplog.records if "expires soon" in r.getMessage()]
        assert len(warnings) == 1
        assert "days_left=3.0" in warnings[0] or "days_left=2.9" in warnings[0]
