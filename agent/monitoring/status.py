"""Live status of the agent's parts, read by health, metrics, the demo and `status`."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class DestinationState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    RETRYING = "retrying"  # transient errors: backing off
    DISCONNECTED = "disconnected"  # cannot reach it
    FAILING = "failing"  # needs a person (bad credentials): stopped


@dataclass
class DestinationHealth:
    name: str
    type: str
    state: DestinationState = DestinationState.STARTING
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    last_success: float | None = None
    next_retry_at: float | None = None
    delivered: int = 0
    dead: int = 0

    def set_state(self, state: DestinationState, error: str | None = None) -> bool:
        if error is not None:
            self.last_error = error
        if state is self.state:
            return False
        self.state = state
        self.since = time.time()
        if state is DestinationState.CONNECTED:
            self.next_retry_at = None
        return True
