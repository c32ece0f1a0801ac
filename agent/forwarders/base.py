"""The forwarder contract: ``connect / send / close``, and the four kinds of failure.

Retry loops live in one place (``agent.forwarders.loop``), not in each forwarder. A
forwarder translates its library's exceptions into these at its module boundary:

- ``NotConnected``: the destination cannot be reached (connection refused, DNS, TLS
  handshake, broker down). The loop reconnects with backoff; events wait in the buffer.
- ``Transient``: try the same batch again later (HTTP 408/425/429/5xx, timeouts, an Odoo
  serialization failure). ``retry_after`` honours the destination's own hint.
- ``Rejected``: the destination refused the batch and will refuse it again. When the
  batch holds more than one event the loop splits it to find the poison event; a single
  rejected event is dead-lettered with ``reason``.
- ``Fatal``: this destination cannot work until a person acts (bad or expired API key).
  The loop stops sending to it, health says failing, and it is retried only after a
  long pause or a config reload — never in a tight loop.

Every message says what happened in words: ``agent.common.errors.describe`` turns a
library exception into "message (Type)", and into a sentence when the exception carries
no message (httpx's ``ReadError`` after a connection reset is ``ReadError('')``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from buffer.rows import ClaimedEvent


class ForwardError(Exception):
    """Base class; the message is meant for a person reading the log."""


class NotConnected(ForwardError):
    pass


class Transient(ForwardError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(ForwardError):
    pass


class Fatal(ForwardError):
    pass


@dataclass(slots=True)
class SendResult:
    """Per-event outcome of one send. Every event of the batch is in exactly one of
    ``delivered`` or ``rejected``; events in neither are retried (kept pending)."""

    delivered: list[int] = field(default_factory=list)  # seqs
    rejected: dict[int, str] = field(default_factory=dict)  # seq -> reason
    # Why the events in neither list wait (e.g. "press1: no work order in progress"):
    # health shows it instead of a generic "not confirmed".
    waiting_reason: str | None = None


class Forwarder(Protocol):
    """Optionally also ``link_problem() -> str | None``: for a forwarder whose library
    keeps its connection by itself, why the link is down right now (checked while idle)."""

    name: str

    async def connect(self) -> None: ...

    async def send(self, batch: Sequence[ClaimedEvent]) -> SendResult: ...

    async def close(self) -> None: ...
