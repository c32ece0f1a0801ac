"""The one backoff of the agent's own loops: reconnecting drivers, a silent Modbus unit,
the MQTT link, a crashed component. Waits ``first``, then twice as long each time, up to
``cap``; ``reset()`` after a success.

The delivery loop's retries use tenacity (agent.forwarders.loop): they also honour a
destination's Retry-After and add jitter, which these loops do not need."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    first: float
    cap: float
    delay: float = 0.0

    def next(self) -> float:
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0
