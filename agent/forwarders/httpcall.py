"""One HTTP request within a whole-request timeout, httpx's failures mapped to the
delivery loop's kinds, in words: shared by the HTTP and Odoo forwarders.

httpx's transport errors often carry no message (a connection reset is
``ReadError('')``, a read timeout ``ReadTimeout('')``), so each text here says what
happened itself and names the exception type: "POST http://…: no answer within 30 s
(ReadTimeout)", "…: [Errno 104] Connection reset by peer (ReadError)".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx

from agent.common.errors import describe
from agent.forwarders.base import NotConnected, Transient

# What an httpx error means, said when neither it nor its causes carry a message.
_MEANING: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ReadError, "the connection was reset or closed before the answer came"),
    (httpx.WriteError, "the connection was reset or closed while the request was sent"),
    (httpx.CloseError, "the connection could not be closed cleanly"),
    (httpx.RemoteProtocolError, "the server broke off its answer or did not speak HTTP"),
    (httpx.ProxyError, "the proxy refused or failed the connection"),
    (httpx.UnsupportedProtocol, "the URL's scheme is not http or https"),
    (httpx.ConnectError, "the server cannot be reached"),
    (httpx.DecodingError, "the answer's body cannot be decoded"),
)


def _timed_out(exc: httpx.TimeoutException, within: float) -> str:
    """httpx's timeouts bound each phase by the same ``within`` (the forwarders build
    ``httpx.Timeout(within)``), so the phase and the figure say it all."""
    phase = {
        httpx.ConnectTimeout: "no connection within",
        httpx.ReadTimeout: "no answer within",
        httpx.WriteTimeout: "request not sent within",
        httpx.PoolTimeout: "no free connection within",
    }.get(type(exc), "timed out after")
    return f"{phase} {within:g} s ({type(exc).__name__})"


async def bounded(request: Awaitable[httpx.Response], within: float, where: str) -> httpx.Response:
    """``request`` answered within ``within`` seconds (httpx's own timeouts bound each
    phase, not the whole). NotConnected when the server cannot be reached, Transient
    for a timeout or an answer cut short. ``where`` names the request (e.g.
    "destination mw: POST https://…") and starts every message."""
    try:
        async with asyncio.timeout(within):
            return await request
    except TimeoutError:
        raise Transient(f"{where}: no answer within {within:g} s") from None
    except httpx.ConnectTimeout as exc:
        raise NotConnected(f"{where}: {_timed_out(exc, within)}") from None
    except httpx.TimeoutException as exc:
        raise Transient(f"{where}: {_timed_out(exc, within)}") from None
    except (httpx.ConnectError, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
        raise NotConnected(f"{where}: cannot connect: {describe(exc, words=_MEANING)}") from None
    except httpx.HTTPError as exc:  # dropped mid-answer, a body that cannot be decoded
        raise Transient(f"{where}: {describe(exc, words=_MEANING)}") from None
