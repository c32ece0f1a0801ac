"""`floorgate demo`'s live view points at the status page first."""

from __future__ import annotations

from pathlib import Path

from agent.config.models import FloorgateConfig
from agent.service.runtime import Agent
from floorgate_demo.demo import _render, page_url
from floorgate_demo.receiver import EventReceiver
from tests.helpers import line_config


def test_the_live_view_starts_with_the_status_page_address(tmp_path: Path) -> None:
    config = FloorgateConfig.model_validate(
        line_config(tmp_path / "state", 5020, "http://127.0.0.1:8080/events", 8410)
    )
    agent = Agent(config)
    agent.health_port = 8410  # as start() sets it once the health server listens
    view = _render(agent, EventReceiver(), config).splitlines()
    assert view[0] == (
        "status page:  http://127.0.0.1:8410/  (signals: http://127.0.0.1:8410/signals)"
    )
    agent.health_port = None  # health.enabled: false
    assert page_url(agent, config) is None
    assert _render(agent, EventReceiver(), config).splitlines()[0] == "status page:  off"
