"""HTTP middleware destination (plugin): batches of CloudEvents, one POST each.

See README.md in this folder for a sample config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.forwarders.http.config import HttpDestinationConfig

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from agent.forwarders.base import Forwarder

CONFIGS = (HttpDestinationConfig,)
COMMANDS: str | None = None


def create(config: Any, agent: AgentSection) -> Forwarder:
    from agent.forwarders.http.forwarder import WebhookForwarder  # httpx only when used

    del agent  # the webhook needs nothing of the agent section
    return WebhookForwarder(config)
