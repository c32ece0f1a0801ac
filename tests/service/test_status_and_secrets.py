"""`floorgate status`, the health token, and secrets never reaching the logs."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.common.secrets import read_secret
from agent.config.common import Secret
from agent.service.logs import OneLineFormatter
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import (
    free_port,
    line_config,
    readyz,
    start_agent,
    stop_process,
    wait_until,
    write_config,
)

HEALTH_TOKEN = "hz-7f3c9a1e5b2d4c6f"
DESTINATION_TOKEN = "dt-91b8e7d6c5a4f3e2"


def test_the_log_formatter_masks_every_secret_read(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("k-5e4d3c2b1a\n")
    value = read_secret(Secret(file=path))
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "server said: bad key %s", (value,), None
    )
    text = OneLineFormatter("%(message)s").format(record)
    assert value not in text and text == "server said: bad key ***"


async def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
async def test_status_table_token_and_no_secret_in_the_logs(tmp_path: Path) -> None:
    (tmp_path / "health-token").write_text(HEALTH_TOKEN + "\n")
    (tmp_path / "middleware-token").write_text(DESTINATION_TOKEN + "\n")
    health_port = free_port()
    log = tmp_path / "agent.log"
    line = SimulatedLine(seed=3)
    # The middleware expects another token, and its error page echoes the header it got:
    # a careless agent would copy the token into its log with the error.
    async with (
        SimulatorServer(line, tick=0.05) as simulator,
        EventReceiver(token="the-right-one") as receiver,
    ):
        await simulator.start_tcp(port=0)
        data = line_config(tmp_path / "state", simulator.port, receiver.url, health_port)
        data["agent"]["log_level"] = "debug"
        data["health"]["token"] = {"file": str(tmp_path / "health-token")}
        data["destinations"][0] |= {
            "auth": "bearer",
            "token": {"file": str(tmp_path / "middleware-token")},
        }
        config = write_config(tmp_path / "config.yaml", data)
        receiver.fail_next(500, times=2, text=f"rejected Authorization: Bearer {DESTINATION_TOKEN}")
        agent = start_agent(config, log)
        try:
            await wait_until(lambda: len(receiver.requests) >= 3, 60, "agent tried to deliver")

            # /healthz stays open; /readyz and /metrics need the token.
            url = f"http://127.0.0.1:{health_port}"
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/healthz")).status_code == 200
                assert (await client.get(f"{url}/readyz")).status_code == 401
                assert (await client.get(f"{url}/metrics")).status_code == 401
                wrong = {"Authorization": "Bearer nope"}
                assert (await client.get(f"{url}/readyz", headers=wrong)).status_code == 401
                right = {"Authorization": f"Bearer {HEALTH_TOKEN}"}
                ready = await client.get(f"{url}/readyz", headers=right)
                assert ready.status_code == 503  # the destination refuses our credentials
                assert ready.json()["destinations"]["middleware"]["state"] == "failing"
                assert ready.headers["content-type"] == "application/json; charset=utf-8"
                metrics = await client.get(f"{url}/metrics", headers=right)
                assert metrics.status_code == 200 and "floorgate_status" in metrics.text
                head = await client.head(f"{url}/healthz")
                assert head.status_code == 200 and head.content == b""
                assert (await client.get(f"{url}/nothing", headers=right)).status_code == 404
                posted = await client.post(f"{url}/readyz", headers=right)
                assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
            assert readyz(health_port) == {"error": "a bearer token is required (health.token)"}

            status = await _status("--config", str(config))
            assert status.returncode == 2, status.stderr  # failing
            assert "status FAILING" in status.stdout
            assert "line-plc" in status.stdout and "middleware" in status.stdout
            assert "destination middleware stopped" in status.stdout

            unauthorised = await _status("--url", url)
            assert unauthorised.returncode == 3
            assert "bearer token is required" in unauthorised.stderr
            given = await _status("--url", url, "--token-file", str(tmp_path / "health-token"))
            assert given.returncode == 2 and "status FAILING" in given.stdout, given.stderr

            # The unit's way: the token is a systemd credential, which only the service
            # can read. The command says how to give it, and --token-file does.
            data["health"]["token"] = {"credential": "health-token"}
            as_unit = write_config(tmp_path / "unit-config.yaml", data)
            refused = await _status("--config", str(as_unit))
            assert refused.returncode == 3
            assert "readable by the service only; give its file with --token-file" in (
                refused.stderr
            )
            assert "LoadCredential=health-token:" in refused.stderr
            with_file = await _status(
                "--config", str(as_unit), "--token-file", str(tmp_path / "health-token")
            )
            assert with_file.returncode == 2 and "status FAILING" in with_file.stdout

            assert await stop_process(agent) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                await asyncio.to_thread(agent.wait)
    unreachable = await _status("--config", str(config))
    assert unreachable.returncode == 3 and "not answering" in unreachable.stderr

    text = log.read_text()
    assert "rejected Authorization: Bearer ***" in text  # the echo was logged, masked
    for secret in (HEALTH_TOKEN, DESTINATION_TOKEN):
        assert secret not in text
