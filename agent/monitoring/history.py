"""The last hour of backlog and events/s, for the status page's two small charts.

One point every ``interval`` seconds in a ring of fixed length: bounded memory (360
points of three numbers), and cheap: each point reads two figures the agent keeps anyway
(the pending count of the last buffer statistics, the engine's event counters). The
health server owns the task that takes them; nothing in the flow depends on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

INTERVAL = 10.0
SPAN = 3600.0

Point = tuple[float, int, float | None]  # wall clock, events pending, events/s (None: first)


class History:
    def __init__(self, interval: float = INTERVAL, span: float = SPAN) -> None:
        self.interval = interval
        self.points: deque[Point] = deque(maxlen=max(1, int(span / interval)))
        self._last: tuple[float, int] | None = None  # (time, events made) of the last point

    def take(self, now: float, pending: int, events: int) -> Point:
        """Add one point; events/s is the count made since the previous point over the
        time between them (None for the first point, and after the engine was rebuilt
        by a reload, whose counters start again from zero)."""
        point = self.peek(now, pending, events)
        self._last = (now, events)
        self.points.append(point)
        return point

    def peek(self, now: float, pending: int, events: int) -> Point:
        """The point ``take`` would add now, without adding it: the page's last point."""
        rate: float | None = None
        last = self._last
        if last is not None and now > last[0] and events >= last[1]:
            rate = round((events - last[1]) / (now - last[0]), 3)
        return (round(now, 3), pending, rate)

    def last_hour(self, now: float, pending: int, events: int) -> list[Point]:
        """Every point kept, and the one for ``now`` (not kept)."""
        return [*self.points, self.peek(now, pending, events)]

    async def run(self, read: Callable[[], tuple[int, int]]) -> None:
        """Take a point every ``interval`` until cancelled; ``read`` gives (pending,
        events made so far)."""
        while True:
            self.take(time.time(), *read())
            await asyncio.sleep(self.interval)
