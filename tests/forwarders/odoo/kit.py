"""Test kit for the Odoo destination: the target Odoo (stand-in or real), setup of
master data and orders through the public API, and builders of events and batches."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config.models import AgentSection
from agent.config.rules import CountKind, MachineStateValue, Severity
from agent.forwarders.odoo.config import OdooDestinationConfig, OdooProtocol
from agent.forwarders.odoo.forwarder import OdooForwarder
from agent.forwarders.odoo.transport import OdooTransport
from agent.pipeline.events import (
    AlarmData,
    Event,
    EventData,
    MachineStateData,
    ProductionCountData,
    SampleData,
    format_sequence,
    uuid7,
)
from buffer.rows import ClaimedEvent
from tests.forwarders.odoo.servers import OdooServer
from tests.forwarders.odoo.standin import OdooStandIn, unique

T0 = datetime(2026, 3, 2, 6, 0, 0, tzinfo=UTC)
_seq = itertools.count(1)


@dataclass
class OdooTarget:
    """The Odoo under test. ``rpc`` is the integration user's connection (what the agent
    sees); ``admin`` sets up master data and orders as the plant's Odoo administrator
    would (on the stand-in both are the same key)."""

    url: str
    database: str
    key_file: Path
    login: str | None
    standin: OdooStandIn | None
    protocol: OdooProtocol = OdooProtocol.AUTO
    server: OdooServer | None = None
    rpc: OdooTransport | None = None
    admin: OdooTransport | None = None

    @property
    def real(self) -> bool:
        return self.standin is None

    def _transport(self, key: str, login: str | None) -> OdooTransport:
        return OdooTransport(
            url=self.url,
            database=self.database,
            api_key=key,
            protocol=self.protocol,
            login=login,
            timeout=60.0,
        )

    async def open(self) -> None:
        self.rpc = self._transport(self.key_file.read_text().strip(), self.login)
        await self.rpc.open()
        if self.server is None:
            self.admin = self.rpc
            return
        self.admin = self._transport(self.server.admin_key, "admin")
        await self.admin.open()

    async def close(self) -> None:
        if self.rpc is not None:
            await self.rpc.close()
        if self.admin is not None and self.admin is not self.rpc:
            await self.admin.close()

    async def call(self, model: str, method: str, **kwargs: Any) -> Any:
        """As the integration user."""
        assert self.rpc is not None
        return await self.rpc.call(model, method, **kwargs)

    async def sudo(self, model: str, method: str, **kwargs: Any) -> Any:
        """As the administrator (setup and checks)."""
        assert self.admin is not None
        return await self.admin.call(model, method, **kwargs)

    async def create(self, model: str, vals: dict[str, Any]) -> int:
        answer = await self.sudo(model, "create", vals_list=[vals])
        record_id = int(answer[0] if isinstance(answer, list) else answer)
        return record_id

    async def follow(self, model: str, record_id: int) -> None:
        """Make the integration user a follower of a record: without Maintenance /
        Equipment Manager, Odoo shows a user only the equipment it follows."""
        if not self.real:
            return
        users = await self.search_read("res.users", [["login", "=", self.login]], ["partner_id"])
        partner = users[0]["partner_id"][0]
        await self.sudo(model, "message_subscribe", ids=[record_id], partner_ids=[partner])

    async def read(self, model: str, ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.sudo(model, "read", ids=ids, fields=fields)
        return result

    async def search_read(
        self, model: str, domain: list[Any], fields: list[str]
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.sudo(
            model, "search_read", domain=domain, fields=fields
        )
        return result

    async def workcenter(self, code: str | None = None) -> tuple[str, int]:
        code = code or unique("WC")
        return code, await self.create("mrp.workcenter", {"name": f"Test {code}", "code": code})

    async def product(self) -> int:
        """A storable product on a real Odoo (the kind plants make; consumables skip the
        stock checks that scrap goes through)."""
        values: dict[str, Any] = {"name": unique("Part")}
        if self.real:
            values["is_storable"] = True
        return await self.create("product.product", values)

    async def order(
        self, workcenter_id: int, qty: float = 1000.0, start: bool = True
    ) -> dict[str, Any]:
        """A confirmed manufacturing order with one work order on ``workcenter_id``."""
        product = await self.product()
        template = (await self.read("product.product", [product], ["product_tmpl_id"]))[0]
        bom = await self.create(
            "mrp.bom", {"product_tmpl_id": template["product_tmpl_id"][0], "product_id": product}
        )
        await self.create(
            "mrp.routing.workcenter",
            {"name": "Press", "bom_id": bom, "workcenter_id": workcenter_id},
        )
        production = await self.create(
            "mrp.production", {"product_id": product, "product_qty": qty, "bom_id": bom}
        )
        await self.sudo("mrp.production", "action_confirm", ids=[production])
        workorders = await self.search_read(
            "mrp.workorder", [["production_id", "=", production]], ["id", "state"]
        )
        workorder = int(workorders[0]["id"])
        if start:
            await self.sudo("mrp.workorder", "button_start", ids=[workorder])
        name = (await self.read("mrp.production", [production], ["name"]))[0]["name"]
        return {"product": product, "production": production, "workorder": workorder, "name": name}

    def config(self, **overrides: Any) -> OdooDestinationConfig:
        values: dict[str, Any] = {
            "name": "odoo",
            "type": "odoo",
            "url": self.url,
            "database": self.database,
            "api_key": {"file": str(self.key_file)},
            "login": self.login,
            "protocol": self.protocol.value,
            "timeout": "60s",
        }
        values.update(overrides)
        return OdooDestinationConfig.model_validate(values)

    def forwarder(self, state_dir: Path, **overrides: Any) -> OdooForwarder:
        agent = AgentSection(id="gw-test", state_dir=state_dir)
        return OdooForwarder(self.config(**overrides), agent)


async def real_target(
    servers: dict[str, OdooServer], version: str, protocol: OdooProtocol, tmp_path: Path
) -> AsyncIterator[OdooTarget]:
    server = servers[version]
    assert server.process is not None and server.process.poll() is None, server.tail()
    key_file = tmp_path / "odoo.key"
    key_file.write_text(server.key + "\n")
    target = OdooTarget(
        url=server.url,
        database=server.database,
        key_file=key_file,
        login=server.login,
        standin=None,
        protocol=protocol,
        server=server,
    )
    async with opened(target):
        yield target


@contextlib.asynccontextmanager
async def opened(target: OdooTarget) -> AsyncIterator[OdooTarget]:
    await target.open()
    try:
        yield target
    finally:
        await target.close()


# -- events ------------------------------------------------------------------------------


def event(data: EventData, time: datetime) -> Event:
    kind = {
        MachineStateData: "machine.state",
        ProductionCountData: "production.count",
        AlarmData: "alarm",
        SampleData: "sample",
    }[type(data)]
    return Event.model_validate(
        {
            "id": uuid7(),
            "source": f"/plant/area/line/{data.machine}",
            "type": kind,
            "time": time,
            "sequence": format_sequence(next(_seq)),
            "agentid": "gw-test",
            "data": data,
        }
    )


def claimed(*events: Event) -> list[ClaimedEvent]:
    return [
        ClaimedEvent(
            seq=int(e.sequence),
            id=e.id,
            type=e.type.value,
            key=e.machine,
            payload=e.to_json(),
            attempts=0,
        )
        for e in events
    ]


class Machine:
    """Builds a machine's state events linked the way the rule engine links them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: Event | None = None

    def state(self, state: MachineStateValue, at: datetime, reason: str | None = None) -> Event:
        previous = self.last.data if self.last is not None else None
        assert previous is None or isinstance(previous, MachineStateData)
        data = MachineStateData(
            machine=self.name,
            state=state,
            reason=reason,
            since=at,
            previous_state=previous.state if previous else None,
            previous_reason=previous.reason if previous else None,
            previous_since=previous.since if previous else None,
            previous_duration_s=(at - previous.since).total_seconds() if previous else None,
            previous_event_id=self.last.id if self.last else None,
        )
        self.last = event(data, at)
        return self.last

    def count(self, quantity: int, at: datetime, kind: CountKind = CountKind.GOOD) -> Event:
        data = ProductionCountData(
            machine=self.name,
            signal=f"{self.name}.{kind.value}",
            kind=kind,
            quantity=quantity,
            window_start=at - timedelta(seconds=10),
            window_end=at,
        )
        return event(data, at)

    def alarm(self, active: bool, at: datetime, value: float = 85.0) -> Event:
        data = AlarmData(
            machine=self.name,
            alarm="hot",
            signal=f"{self.name}.temperature",
            active=active,
            value=value,
            limit=80.0,
            severity=Severity.CRITICAL,
        )
        return event(data, at)

    def sample(self, signal: str, value: float | int | str, at: datetime) -> Event:
        data = SampleData(machine=self.name, signal=signal, value=value, unit=None, quality="good")
        return event(data, at)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def odoo_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")
