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
    # Never set by the delivery loop: health shows it for a starting or connected
    # destination whose send (or connect) has been in flight longer than its
    # ``slow_after``. Judged when health is read, so it is true at that moment without a
    # timer that could lag (agent.monitoring.report).
    DEGRADED = "degraded"


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
    # time.monotonic() when the connect or send now in flight began; None between them.
    # Monotonic: a clock step (NTP at boot) must not make a request look hours old.
    in_flight_since: float | None = None

    def in_flight_s(self) -> float | None:
        """Seconds the connect or send now in flight has taken so far; None when idle."""
        started = self.in_flight_since
        return None if started is None else max(0.0, time.monotonic() - started)

    def set_state(self, state: DestinationState, error: str | None = None) -> bool:
        """Change state; return True when it really changed (so it is logged once).

        ``last_error`` keeps the latest error while something is wrong and is cleared
        when the destination is connected again: health must not show an old fault
        beside a healthy state."""
        if error is not None:
            self.last_error = error
        elif state is DestinationState.CONNECTED:
            self.last_error = None
        if state is self.state:
            return False
        self.state = state
        self.since = time.time()
        if state is DestinationState.CONNECTED:
            self.next_retry_at = None
        return True
