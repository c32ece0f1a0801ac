"""The Odoo the tests talk to: the stand-in by default, a real Odoo when
FLOORGATE_TEST_ODOO_URL, FLOORGATE_TEST_ODOO_DB and FLOORGATE_TEST_ODOO_KEY are set
(FLOORGATE_TEST_ODOO_LOGIN too for Odoo before 19). Against a real Odoo the tests create
what they need under unique names (work centers, a product, a BoM, orders)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.forwarders.odoo_config import OdooProtocol
from agent.forwarders.odoo_transport import OdooTransport
from tests.odoo.kit import OdooTarget
from tests.odoo.standin import OdooStandIn

REAL_URL = os.environ.get("FLOORGATE_TEST_ODOO_URL")


STANDINS = [
    pytest.param(("19.0", True), id="standin-json2"),
    pytest.param(("18.0", False), id="standin-jsonrpc"),
]


@pytest.fixture(params=[pytest.param(None, id="real-odoo")] if REAL_URL else STANDINS)
async def target(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OdooTarget]:
    if REAL_URL:
        key_file = tmp_path / "odoo.key"
        key_file.write_text(os.environ["FLOORGATE_TEST_ODOO_KEY"])
        target = OdooTarget(
            url=REAL_URL,
            database=os.environ["FLOORGATE_TEST_ODOO_DB"],
            key_file=key_file,
            login=os.environ.get("FLOORGATE_TEST_ODOO_LOGIN"),
            standin=None,
        )
        await target.open()
        try:
            yield target
        finally:
            await target.close()
        return
    version, json2 = request.param
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
        await target.open()
        try:
            yield target
        finally:
            await target.close()


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
