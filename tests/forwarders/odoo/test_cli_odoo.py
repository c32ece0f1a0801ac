"""`floorgate odoo check`: run as a plant engineer would, against the real servers, as the
non-admin integration user."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.forwarders.odoo.kit import OdooTarget
from tests.forwarders.odoo.standin import unique
from tests.helpers import free_port, line_config, write_config


def write(tmp_path: Path, target: OdooTarget, key: str, **destination: Any) -> Path:
    key_file = tmp_path / "check.key"
    key_file.write_text(key + "\n")
    config = line_config(tmp_path / "state", free_port(), "http://127.0.0.1:9/events", 0)
    config["destinations"] = [
        {
            "name": "erp",
            "type": "odoo",
            "url": target.url,
            "database": target.database,
            "api_key": {"file": str(key_file)},
            "login": target.login,
            "protocol": target.protocol.value,
            **destination,
        }
    ]
    return write_config(tmp_path / "config.yaml", config)


async def check(config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent", "odoo", "check", "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=90
    )


def line_with(out: str, *words: str) -> str:
    found = [line for line in out.splitlines() if all(word in line for word in words)]
    assert found, f"no line with {words}:\n{out}"
    return found[0]


async def test_check_lists_what_is_missing_and_exits_non_zero(
    target: OdooTarget, tmp_path: Path
) -> None:
    p1, packer = unique("P1"), unique("PK")
    await target.create("mrp.workcenter", {"name": f"Press {p1}", "code": p1})
    press2 = unique("press2")
    await target.create("mrp.workcenter", {"name": press2, "code": unique("X")})
    for _ in range(2):
        await target.create("mrp.workcenter", {"name": f"Packer {packer}", "code": packer})
    machine_map = {
        "press1": {"work_center": p1, "equipment": unique("SN")},
        "press2": {"work_center": press2},
        "packer1": {"work_center": packer},
    }
    key = target.key_file.read_text().strip()
    result = await check(write(tmp_path, target, key, machine_map=machine_map))
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert target.rpc is not None and target.rpc.server_version
    assert f"server {target.rpc.server_version}, protocol {target.rpc.protocol.value}" in out
    assert "user tz Europe/Brussels" in out
    assert "found" in line_with(out, "work center", p1, "press1")
    assert "found" in line_with(out, "work center", press2, "press2")
    assert "ambiguous" in line_with(out, "work center", packer, "packer1")
    equipment = line_with(out, "equipment", "press1")
    assert "missing" in equipment and "follows" in equipment  # says why a user may not see it
    for loss in ("Equipment Failure", "Material Availability", "Setup and Adjustments"):
        assert "found" in line_with(out, "loss", loss)


async def test_check_passes_and_shows_the_key_expiry_when_everything_is_there(
    target: OdooTarget, tmp_path: Path
) -> None:
    codes = {machine: unique(machine) for machine in ("press1", "press2", "packer1")}
    for code in codes.values():
        await target.create("mrp.workcenter", {"name": code, "code": code})
    serial = unique("SN")
    equipment = await target.create("maintenance.equipment", {"name": "Press", "serial_no": serial})
    await target.follow("maintenance.equipment", equipment)
    machine_map: dict[str, Any] = {m: {"work_center": c} for m, c in codes.items()}
    machine_map["press1"]["equipment"] = serial
    key = target.key_file.read_text().strip()
    config = write(tmp_path, target, key, machine_map=machine_map, finish_orders=True)
    result = await check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.server is not None
    expiry = line_with(result.stdout, "api key expires:")
    assert target.server.key_expires in expiry and "days left" in expiry
    for right in ("mrp.workorder write", "mrp.workcenter.productivity create", "stock.scrap"):
        line = line_with(result.stdout, "right", right)
        assert " ok" in line and "missing" not in line
    assert "everything the config needs was found" in result.stdout


async def test_check_names_each_right_a_restricted_user_lacks(
    target: OdooTarget, tmp_path: Path
) -> None:
    assert target.server is not None
    config = write(
        tmp_path,
        target,
        target.server.spec["restricted_key"],
        login=target.server.spec["restricted_login"],
        finish_orders=True,
    )
    result = await check(config)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    for right in (
        "mrp.workcenter.productivity create",
        "mrp.workorder write",
        "stock.scrap create",
    ):
        assert "missing" in line_with(out, "right", right)
    # an Internal User may create maintenance requests: not reported
    assert "ok" in line_with(out, "right", "maintenance.request create")


async def test_check_with_a_refused_key_exits_2(target: OdooTarget, tmp_path: Path) -> None:
    result = await check(write(tmp_path, target, "0" * 40))
    assert result.returncode == 2
    assert "0" * 40 not in result.stdout + result.stderr
    assert "api key" in result.stdout.lower() or "access denied" in result.stdout.lower()
