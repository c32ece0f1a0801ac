"""Which destinations receive an event: by event type and machine filters in the config."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from agent.config.common import EventType
from agent.config.models import DestinationConfig


class Router:
    def __init__(self, destinations: Sequence[DestinationConfig]) -> None:
        self._destinations = tuple(destinations)
        self.route = cache(self._route)  # few (type, machine) pairs: compute each once

    def _route(self, event_type: EventType, machine: str) -> tuple[str, ...]:
        return tuple(
            d.name
            for d in self._destinations
            if event_type in d.event_types and (d.machines is None or machine in d.machines)
        )
