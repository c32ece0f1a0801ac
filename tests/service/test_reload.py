"""Config reload (SIGHUP): what restarts, what is refused, and that nothing is lost."""

from __future__ import annotations

import asyncio
import copy
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import load_config
from agent.service.reload import ReloadRefused, plan_reload
from floorgate_demo.receiver import EventReceiver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer
from tests.helpers import (
    NotifySocket,
    free_port,
    line_config,
    readyz,
    start_agent,
    stop_process,
    wait_until,
    write_config,
)


def _load(tmp_path: Path, data: dict[str, Any], name: str) -> Any:
    return load_config(write_config(tmp_path / name, data))


def _base(tmp_path: Path) -> dict[str, Any]:
    return line_config(tmp_path / "state", 5020, "http://127.0.0.1:8080/events", 8410)


def test_a_changed_source_restarts_it_and_the_engine_only(tmp_path: Path) -> None:
    old = _base(tmp_path)
    new = copy.deepcopy(old)
    new["sources"][0]["scan_interval"] = "500ms"
    plan = plan_reload(_load(tmp_path, old, "a.yaml"), _load(tmp_path, new, "b.yaml"))
    assert (plan.sources, plan.destinations, plan.engine, plan.health) == (
        ["line-plc"],
        [],
        True,
        False,
    )


def test_an_added_destination_starts_it_without_touching_the_sources(tmp_path: Path) -> None:
    old = _base(tmp_path)
    new = copy.deepcopy(old)
    new["destinations"].append({"name": "second", "type": "http", "url": "http://h/e"})
    plan = plan_reload(_load(tmp_path, old, "a.yaml"), _load(tmp_path, new, "b.yaml"))
    assert plan.sources == [] and plan.destinations == ["second"] and plan.engine
    assert plan.describe() == "destination second, rule engine"


def test_the_same_config_changes_nothing(tmp_path: Path) -> None:
    config = _load(tmp_path, _base(tmp_path), "a.yaml")
    assert plan_reload(config, config).empty


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("buffer", "path", "other.db"), ("agent", "id", "gw-other")],
)
def test_agent_and_buffer_changes_are_refused_with_a_reason(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    old = _base(tmp_path)
    new = copy.deepcopy(old)
    new.setdefault(section, {})[key] = value
    with pytest.raises(ReloadRefused, match=f"the {section} section changed"):
        plan_reload(_load(tmp_path, old, "a.yaml"), _load(tmp_path, new, "b.yaml"))


def _good_totals(receiver: EventReceiver) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for event in receiver.events:
        data = event["data"]
        if event["type"] == "production.count" and data["kind"] == "good":
            totals[data["machine"]] += data["quantity"]
    return totals


@pytest.mark.slow
async def test_sighup_applies_a_valid_config_refuses_a_bad_one_and_loses_no_count(
    tmp_path: Path,
) -> None:
    """The agent runs under a real notify socket; SIGHUP adds a second destination, then a
    broken config is refused; the first destination's counts stay exact throughout."""
    notify = NotifySocket(tmp_path / "notify")
    line = SimulatedLine(seed=11)
    line.freeze()
    health_port = free_port()
    log = tmp_path / "agent.log"
    async with (
        SimulatorServer(line, tick=0.05) as simulator,
        EventReceiver() as first,
        EventReceiver() as second,
    ):
        await simulator.start_tcp(port=0)
        data = line_config(tmp_path / "state", simulator.port, first.url, health_port)
        config = write_config(tmp_path / "config.yaml", data)
        before = line.totals
        agent = start_agent(
            config, log, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
        )
        try:
            await wait_until(lambda: _sent(notify, "READY=1") == 1, 60, "READY=1")
            line.resume()
            await wait_until(lambda: len(_good_totals(first)) == 3, 60, "counts flowing")

            data["destinations"].append(
                {**data["destinations"][0], "name": "second", "url": second.url}
            )
            write_config(config, data)
            agent.send_signal(signal.SIGHUP)
            await wait_until(lambda: "config reloaded" in log.read_text(), 30, "reloaded")
            await wait_until(lambda: _sent(notify, "READY=1") == 2, 30, "READY=1 after reload")
            assert "restarted=destination second, rule engine" in log.read_text()
            await wait_until(lambda: len(second.events) > 0, 30, "second destination")

            config.write_text(config.read_text().replace("type: http", "type: htp", 1))
            agent.send_signal(signal.SIGHUP)
            await wait_until(lambda: "config reload refused" in log.read_text(), 30, "refused")
            assert "destinations[0].type: unknown type 'htp'" in log.read_text()
            report = readyz(health_port)
            assert report is not None and report["ready"]
            assert set(report["destinations"]) == {"middleware", "second"}

            line.freeze()
            after = line.totals
            await asyncio.sleep(2.5)  # count windows are 1 s: let the last ones close
            expected = {m: after[m]["good"] - before[m]["good"] for m in ("press1", "press2")}

            def delivered() -> bool:
                totals = _good_totals(first)
                return all(totals.get(m, 0) == n for m, n in expected.items())

            await wait_until(delivered, 60, "exact counts at the first destination")
            assert await stop_process(agent) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                await asyncio.to_thread(agent.wait)
            notify.close()
        assert first.conflicts == 0 and first.duplicates == 0
        assert {m: _good_totals(first)[m] for m in expected} == expected
        assert _sent(notify, "RELOADING=1") == 2  # the refused reload is announced too
        assert _sent(notify, "WATCHDOG=1") > 0
        assert notify.texts()[-1].startswith("STOPPING=1")


def _sent(notify: NotifySocket, first_line: str) -> int:
    return sum(1 for text in notify.texts() if text.splitlines()[0] == first_line)
