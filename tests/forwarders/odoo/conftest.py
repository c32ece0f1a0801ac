"""The Odoo the tests talk to: real Odoo 18 and 19 servers (tests/forwarders/odoo/servers.py), as a
non-admin integration user with an API key, over JSON-RPC on 18 and JSON-2 and JSON-RPC
on 19. Tests create what they need under unique names (work centers, products, BoMs,
orders) through an admin key, as a plant's Odoo administrator would.

Where a server cannot run here (no tree under ../shared/odoo, or `.ci/odoo-servers
prepare` not run), its tests are reported as skipped with the reason, and the end of
the test summary says in capitals that real-Odoo tests did not run.

The stand-in (tests/forwarders/odoo/standin.py) stays for the faults a real server cannot be made
to show; the contract suite runs against it too so that it keeps the real shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.forwarders.odoo.config import OdooProtocol
from agent.forwarders.odoo.transport import OdooTransport
from tests.forwarders.odoo.kit import OdooTarget, opened, real_target
from tests.forwarders.odoo.servers import OdooServer, start_servers, stop_servers, why_not_available
from tests.forwarders.odoo.standin import OdooStandIn

UNAVAILABLE = why_not_available()

# (server version, protocol the agent is configured with)
REAL = [("18.0", OdooProtocol.AUTO), ("19.0", OdooProtocol.AUTO), ("19.0", OdooProtocol.JSONRPC)]


def real_params() -> list[object]:
    params = []
    for version, protocol in REAL:
        json2 = version >= "19" and protocol is OdooProtocol.AUTO
        ident = f"odoo{version[:2]}-{'json2' if json2 else 'jsonrpc'}"
        marks = []
        if version in UNAVAILABLE:
            marks.append(
                pytest.mark.skip(reason=f"REAL ODOO {version} NOT RUN: {UNAVAILABLE[version]}")
            )
        params.append(pytest.param((version, protocol), id=ident, marks=marks))
    return params


STANDINS = [
    pytest.param(("19.0", True), id="standin-json2"),
    pytest.param(("18.0", False), id="standin-jsonrpc"),
]


@pytest.fixture(scope="session")
def odoo_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, OdooServer]]:
    """Every real server that can run here, started once for the session."""
    servers = start_servers(tmp_path_factory.mktemp("odoo-servers"))
    try:
        yield {server.version: server for server in servers}
    finally:
        stop_servers(servers)


async def standin_target(version: str, json2: bool, tmp_path: Path) -> AsyncIterator[OdooTarget]:
    async with OdooStandIn(version=version, json2=json2) as standin:
        key_file = tmp_path / "odoo.key"
        key_file.write_text(standin.api_key + "\n")
        target = OdooTarget(
            url=standin.url,
            database=standin.database,
            key_file=key_file,
            login=standin.login,
            standin=standin,
        )
        async with opened(target):
            yield target


@pytest.fixture(params=real_params())
async def target(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OdooTarget]:
    """A real Odoo, as the integration user, per server version and protocol."""
    version, protocol = request.param
    servers = request.getfixturevalue("odoo_servers")
    async for item in real_target(servers, version, protocol, tmp_path):
        yield item


@pytest.fixture(params=real_params() + STANDINS)
async def any_target(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OdooTarget]:
    """The real servers and the stand-in: the contract that keeps the stand-in honest."""
    if isinstance(request.param[1], OdooProtocol):
        servers = request.getfixturevalue("odoo_servers")
        async for item in real_target(servers, *request.param, tmp_path):
            yield item
        return
    async for item in standin_target(*request.param, tmp_path):
        yield item


@pytest.fixture
async def standin() -> AsyncIterator[OdooStandIn]:
    """A stand-in for behaviour only a stand-in can be made to show (faults)."""
    async with OdooStandIn() as odoo:
        yield odoo


def transport_for(odoo: OdooStandIn, protocol: OdooProtocol = OdooProtocol.AUTO) -> OdooTransport:
    return OdooTransport(
        url=odoo.url,
        database=odoo.database,
        api_key=odoo.api_key,
        protocol=protocol,
        login=odoo.login,
        timeout=10.0,
    )
