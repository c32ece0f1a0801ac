"""`floorgate odoo check`: run as a plant engineer would, against the stand-in."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port, line_config, write_config
from tests.odoo.standin import OdooStandIn


def write(tmp_path: Path, odoo: OdooStandIn, key: str, login: str | None = None) -> Path:
    key_file = tmp_path / "odoo.key"
    key_file.write_text(key + "\n")
    config = line_config(tmp_path / "state", free_port(), "http://127.0.0.1:9/events", 0)
    config["destinations"] = [
        {
            "name": "erp",
            "type": "odoo",
            "url": odoo.url,
            "database": odoo.database,
            "api_key": {"file": str(key_file)},
            "login": login,
            "machine_map": {"press1": {"work_center": "P1", "equipment": "SN-1"}},
        }
    ]
    return write_config(tmp_path / "config.yaml", config)


async def check(config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent", "odoo", "check", "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )


async def test_check_lists_what_is_missing_and_exits_non_zero(tmp_path: Path) -> None:
    async with OdooStandIn() as odoo:
        odoo.db.new_record("mrp.workcenter", {"name": "Press 1", "code": "P1"})
        odoo.db.new_record("mrp.workcenter", {"name": "press2", "code": "X"})
        odoo.db.new_record("mrp.workcenter", {"name": "Packer", "code": "packer1"})
        odoo.db.new_record("mrp.workcenter", {"name": "Packer bis", "code": "packer1"})
        config = write(tmp_path, odoo, odoo.api_key)
        result = await check(config)
        assert result.returncode == 1, result.stdout + result.stderr
        out = result.stdout
        assert "server 19.0, protocol json2" in out
        lines = {tuple(line.split()[:4]) for line in out.splitlines()}
        assert ("work", "center", "P1", "press1") in lines
        assert any("SN-1" in line and "missing" in line for line in out.splitlines())
        assert any(
            "'press2'" in line or ("press2" in line and "found" in line)
            for line in out.splitlines()
        )
        assert any("packer1" in line and "ambiguous" in line for line in out.splitlines())
        for loss in ("Equipment Failure", "Material Availability", "Setup and Adjustments"):
            assert any(loss in line and "found" in line for line in out.splitlines()), out


async def test_check_passes_when_everything_is_found(tmp_path: Path) -> None:
    async with OdooStandIn(version="18.0", json2=False) as odoo:
        for code in ("P1", "press2", "packer1"):
            odoo.db.new_record("mrp.workcenter", {"name": code, "code": code})
        odoo.db.new_record("maintenance.equipment", {"name": "Press one", "serial_no": "SN-1"})
        config = write(tmp_path, odoo, odoo.api_key, login=odoo.login)
        result = await check(config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "protocol jsonrpc" in result.stdout
        assert "api key expires: never" in result.stdout
        assert "everything the config needs was found" in result.stdout


async def test_check_with_a_refused_key_exits_2(tmp_path: Path) -> None:
    async with OdooStandIn() as odoo:
        result = await check(write(tmp_path, odoo, "not-the-key"))
        assert result.returncode == 2
        assert "access denied" in result.stdout.lower()
        assert "not-the-key" not in result.stdout + result.stderr
