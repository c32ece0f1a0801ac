"""Odoo destination (plugin): states, counts, scrap and alarms as Odoo records, once.

See README.md in this folder for a sample config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.forwarders.odoo.config import OdooDestinationConfig

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from agent.forwarders.base import Forwarder

CONFIGS = (OdooDestinationConfig,)
COMMANDS: str | None = "agent.forwarders.odoo.cli"  # `floorgate odoo check`


def create(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.odoo.forwarder import OdooForwarder

    # The forwarder keeps its own state file in agent.state_dir.
    return OdooForwarder(config, agent)
