"""Run a component forever: a crash is logged with its traceback and the component is
restarted after a growing pause, so one failing part never stops the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("floorgate.runtime")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    max_pause: float = 60.0,
    finished: Callable[[], bool] = lambda: False,
) -> None:
    """``finished`` tells a requested return (the component was asked to stop) from one
    that is a bug."""
    pause = 1.0
    while True:
        try:
            await run()
            if finished():
                return
            log.warning("component returned; restarting component=%s", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component crashed; restarting component=%s in=%.0fs", name, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_pause)
