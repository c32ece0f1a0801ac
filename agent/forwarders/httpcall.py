"""One HTTP request within a whole-request timeout, httpx's failures mapped to the
delivery loop's kinds: shared by the HTTP and Odoo forwarders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx

from agent.forwarders.base import NotConnected, Transient


async def bounded(request: Awaitable[httpx.Response], within: float, where: str) -> httpx.Response:
    """``request`` answered within ``within`` seconds (httpx's own timeouts bound each
    phase, not the whole). NotConnected when the server cannot be reached, Transient
    for a timeout or an answer cut short."""
    try:
        async with asyncio.timeout(within):
            return await request
    except TimeoutError:
        raise Transient(f"{where}: no answer within {within:g}s") from None
    except httpx.ConnectTimeout:
        raise NotConnected(f"{where}: connect timed out") from None
    except httpx.TimeoutException as exc:
        raise Transient(f"{where}: timed out ({type(exc).__name__})") from None
    except (httpx.ConnectError, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
        raise NotConnected(f"{where}: cannot connect: {exc or type(exc).__name__}") from None
    except httpx.HTTPError as exc:  # dropped mid-answer, a body that cannot be decoded
        raise Transient(f"{where}: {type(exc).__name__}: {exc}") from None
