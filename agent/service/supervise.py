"""Run a component forever: a crash is logged with its traceback and the component is
restarted after a growing pause, so one failing part never stops the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.common.backoff import Backoff

log = logging.getLogger("floorgate.runtime")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    max_pause: float = 60.0,
    finished: Callable[[], bool] = lambda: False,
) -> None:
    """``finished`` tells a requested return (the component was asked to stop) from one
    that is a bug."""
    pause = Backoff(1.0, max_pause)
    while True:
        try:
            await run()
            if finished():
                return
            log.warning("component returned; restarting component=%s", name)
            wait = pause.next()
        except asyncio.CancelledError:
            raise
        except Exception:
            wait = pause.next()
            log.exception("component crashed; restarting component=%s in=%.0fs", name, wait)
        await asyncio.sleep(wait)
