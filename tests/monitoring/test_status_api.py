"""The status page's JSON and files on the health port, against a real agent reading the
simulated line over Modbus TCP and OPC UA (tests/monitoring/conftest.py).

An agent takes about 3 s to start with both sources connected: the fast lane keeps the
signal view and the token; the rest are marked slow (`make test` runs them)."""

from __future__ import annotations

import asyncio
import json
import shlex
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.monitoring.health import PAGE_FILES
from agent.monitoring.history import History
from agent.monitoring.statuspage import mask, status_document
from floorgate_demo.simulator import REGISTER_MAP
from tests.helpers import wait_until
from tests.monitoring.conftest import DESTINATION_TOKEN, HEALTH_TOKEN, RunningLine

PAGE_DIR = Path(__file__).parents[2] / "agent/monitoring/page"
PAGE_BUDGET = 100 * 1024


async def get(line: RunningLine, path: str, token: str | None = None) -> httpx.Response:
    """Asynchronously: the agent answers on this test's event loop."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(line.url + path, headers=headers)


async def poll_json(
    line: RunningLine, path: str, until: Any, what: str, token: str | None = None
) -> dict[str, Any]:
    """GET ``path`` until ``until(document)`` holds (bounded), as the page does."""
    async with asyncio.timeout(60):
        while not until(found := (await get(line, path, token)).json()):
            await asyncio.sleep(0.2)
    del what  # named for the reader of a timeout's traceback
    return found


def test_the_page_is_small_and_loads_nothing_from_elsewhere() -> None:
    files = [PAGE_DIR / name for name, _ in PAGE_FILES.values()]
    total = sum(f.stat().st_size for f in files)
    assert total < PAGE_BUDGET, f"the page is {total} bytes"
    for file in files:
        text = file.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text and "@import" not in text


@pytest.mark.slow
async def test_status_shows_machines_sources_destinations_and_buffer(
    running_line: RunningLine,
) -> None:
    names = {"press1", "press2", "packer1"}
    status = await poll_json(
        running_line,
        "/api/status",
        lambda s: (
            {m["name"] for m in s["machines"] if m["state"]} == names
            and s["destinations"][0]["delivered"] > 0
        ),
        "every machine has a state and the destination took events",
    )
    assert status["agent"] == "gw-test" and status["site"] == "plant"
    assert status["status"] in ("ok", "degraded") and isinstance(status["reasons"], list)
    press1 = next(m for m in status["machines"] if m["name"] == "press1")
    assert press1["state"] in ("running", "idle", "down", "stopped") and press1["since"]
    assert isinstance(press1["good"], int) and isinstance(press1["scrap"], int)
    assert {s["name"]: s["state"] for s in status["sources"]} == {
        "line-plc": "connected",
        "press2-opcua": "connected",
    }
    destination = status["destinations"][0]
    assert destination["name"] == "middleware" and destination["type"] == "http"
    assert destination["state"] == "connected"
    assert {"pending", "oldest_pending_age_s", "dead_letters", "last_error"} <= set(destination)
    buffer = status["buffer"]
    assert buffer["path"] == str(running_line.agent.config.buffer_path) and buffer["writable"]
    assert isinstance(buffer["events"], int) and isinstance(buffer["size_bytes"], int)
    assert status["disk"]["free_bytes"] > 0
    assert status["dead_letters"] == {"total": 0, "shown": [], "commands": {}}
    # The history's first point is taken when the server starts.
    assert status["history"] and len(status["history"][0]) == 3


@pytest.mark.slow
async def test_machine_counts_are_what_the_middleware_received(running_line: RunningLine) -> None:
    """good and scrap on the page are the parts the rules counted: once the line stops
    and everything is reported and delivered, they equal the receiver's sums."""
    line, receiver = running_line.line, running_line.receiver
    await wait_until(lambda: receiver.sum_quantity("good") > 0, 60, "parts delivered")
    line.freeze()

    def settled(status: dict[str, Any]) -> bool:
        good = sum(m["good"] or 0 for m in status["machines"])
        scrap = sum(m["scrap"] or 0 for m in status["machines"])
        return (
            status["buffer"]["pending"] == 0
            and good == receiver.sum_quantity("good")
            and scrap == receiver.sum_quantity("scrap")
        )

    await poll_json(running_line, "/api/status", settled, "page counts = delivered counts")


def _registers(machine: str, signal: str, holding: list[int]) -> str:
    reg = REGISTER_MAP[machine][signal]
    count = 2 if reg.data_type.value in ("uint32", "float32") else 1
    return " ".join(f"0x{word:04X}" for word in holding[reg.address : reg.address + count])


async def test_signal_view_shows_raw_registers_and_variants_beside_decoded_values(
    running_line: RunningLine,
) -> None:
    line = running_line.line
    line.freeze()  # the image stays as it is: raw and decoded can be compared exactly
    holding = list(line.holding)
    temperature = struct.unpack(">f", struct.pack(">HH", *holding[5:7]))[0]

    def current(doc: dict[str, Any]) -> bool:
        rows = {s["signal"]: s for s in doc["signals"]}
        return (
            rows["press1.temperature"]["raw"] == _registers("press1", "temperature", holding)
            and rows["opc.press2.good"]["value"] == holding[12]
        )

    doc = await poll_json(running_line, "/api/signals", current, "the frozen image is read")
    rows = {s["signal"]: s for s in doc["signals"]}
    assert len(rows) == 14 and doc["matched"] == 14  # 12 Modbus + 2 OPC UA signals
    t = rows["press1.temperature"]
    assert t["source"] == "line-plc" and t["machines"] == ["press1"]
    assert t["address"] == "unit 1 holding 40006-40007"
    assert (t["data_type"], t["swap"], t["quality"]) == ("float32", "none", "good")
    assert t["value"] == pytest.approx(temperature, rel=1e-6)
    assert t["source_time"] and t["changed"]
    good = rows["press1.good"]
    assert good["raw"] == _registers("press1", "good", holding)
    assert good["value"] == (holding[2] << 16) | holding[3]
    assert rows["packer1.part_done"]["raw"] in ("0", "1")
    assert rows["packer1.part_done"]["address"] == "unit 1 coil 00001"
    opc = rows["opc.press2.temperature"]
    assert opc["source"] == "press2-opcua" and opc["address"].endswith("s=press2.temperature")
    assert opc["raw"].startswith("Double ") or opc["raw"].startswith("Float ")
    assert opc["unit"] == "degC" and opc["swap"] is None and opc["machines"] == []
    assert rows["opc.press2.good"]["raw"].split()[0] in ("UInt16", "Int32", "UInt32", "Int64")


@pytest.mark.slow
async def test_signal_view_filters_by_machine_and_by_name(running_line: RunningLine) -> None:
    # press2's: those its rules read, and press2.temperature by its name (no rule reads it).
    by_machine = (await get(running_line, "/api/signals?machine=press2")).json()
    assert {s["signal"] for s in by_machine["signals"]} == {
        "press2.state",
        "press2.reason",
        "press2.good",
        "press2.temperature",
    }
    by_name = (await get(running_line, "/api/signals?name=TEMPERATURE")).json()
    assert {s["signal"] for s in by_name["signals"]} == {
        "press1.temperature",
        "press2.temperature",
        "opc.press2.temperature",
    }
    both = (await get(running_line, "/api/signals?machine=press1&name=good")).json()
    assert [s["signal"] for s in both["signals"]] == ["press1.good"]


@pytest.mark.slow
async def test_the_page_files_are_served_with_a_policy_that_forbids_other_origins(
    running_line: RunningLine,
) -> None:
    for path, (name, content_type) in PAGE_FILES.items():
        response = await get(running_line, path)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.content == (PAGE_DIR / name).read_bytes()
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert (await get(running_line, "/nowhere")).status_code == 404
    async with httpx.AsyncClient(timeout=5) as client:
        posted = await client.post(running_line.url + "/api/status")
    assert posted.status_code == 405  # read-only


@pytest.mark.slow
async def test_dead_letters_are_listed_with_the_command_that_requeues_them(
    running_line: RunningLine,
) -> None:
    receiver = running_line.receiver
    receiver.fail_next(422, times=1000, text="unknown work center")  # a rejection: dead
    status = await poll_json(
        running_line,
        "/api/status",
        lambda s: s["dead_letters"]["shown"],
        "dead letters appear",
    )
    receiver.stop_failing()
    letter = status["dead_letters"]["shown"][0]
    assert letter["destination"] == "middleware" and "422" in letter["reason"]
    db = str(running_line.agent.config.buffer_path)
    assert letter["requeue"] == f"floorgate buffer requeue {letter['id']} --db {db}"
    commands = status["dead_letters"]["commands"]["middleware"]
    assert commands["purge"] == f"floorgate buffer purge --dead --destination middleware --db {db}"
    # The command is exact: run as printed, it requeues that letter and it is delivered.
    argv = [sys.executable, "-m", "agent", *shlex.split(letter["requeue"])[1:]]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    await wait_until(lambda: letter["id"] in receiver.ids, 60, "the requeued letter delivered")


@pytest.mark.parametrize("health_token", ["with-token"], indirect=True)
async def test_with_a_token_the_shell_is_open_and_the_data_is_not(
    running_line: RunningLine,
) -> None:
    page = await get(running_line, "/")
    assert page.status_code == 200 and b"gw-test" not in page.content
    assert (await get(running_line, "/api/auth")).json() == {"token_required": True, "valid": False}
    wrong = (await get(running_line, "/api/auth", "not-the-token")).json()
    assert wrong == {"token_required": True, "valid": False}
    assert (await get(running_line, "/api/auth", HEALTH_TOKEN)).json()["valid"] is True
    for path in ("/api/status", "/api/signals", "/readyz", "/metrics"):
        assert (await get(running_line, path)).status_code == 401, path
        assert (await get(running_line, path, "not-the-token")).status_code == 401, path
        assert (await get(running_line, path, HEALTH_TOKEN)).status_code == 200, path


@pytest.mark.slow
@pytest.mark.parametrize("health_token", ["with-token"], indirect=True)
async def test_no_secret_is_ever_on_the_page(running_line: RunningLine) -> None:
    """Neither token is in any document the server sends, and a secret in the data is
    masked: a destination error quoting the key, a URL with credentials."""
    for path in ("/", "/signals", "/static/app.js", "/api/status", "/api/signals", "/readyz"):
        text = (await get(running_line, path, HEALTH_TOKEN)).text
        assert HEALTH_TOKEN not in text and DESTINATION_TOKEN not in text, path
    agent = running_line.agent
    # Put there and read at once (no await between): the delivery loop cannot clear it.
    agent.destinations[
        "middleware"
    ].last_error = f"refused key {DESTINATION_TOKEN} at http://line:pw0rd-x@mw.example/e"
    text = mask(json.dumps(await status_document(agent, History())))
    assert DESTINATION_TOKEN not in text and "pw0rd-x" not in text
    error = json.loads(text)["destinations"][0]["last_error"]
    assert error == "refused key *** at http://***@mw.example/e"
