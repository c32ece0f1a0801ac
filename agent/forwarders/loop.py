"""The one delivery loop every destination shares: claim → send → ack / retry / dead-letter.

Order is kept per destination: a batch that fails transiently is retried from the head
of the queue (same events, same ids) after a backoff that honours the destination's
Retry-After. A rejected batch is split in halves until the poison event is alone; that
event is dead-lettered with the reason and the events behind it flow on. A fatal error
(bad credentials) stops this destination — logged once, health failing — and it is
tried again only after a long pause or a config reload.

Health sees each connect and send while it is in flight (``DestinationHealth.
in_flight_since``): a silent network, where packets vanish and nothing fails until the
request's own timeout, shows as a slow request at once. A destination in trouble
(retrying, disconnected, failing) is called connected again only when it proved it — a
send that went through, or an idle link the forwarder reports up — not when a connect
that touches no network (HTTP's) returns; that moment is logged once ("destination
recovered").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from agent.config.common import RetryConfig
from agent.forwarders.base import Fatal, Forwarder, NotConnected, Rejected, Transient
from agent.monitoring.status import DestinationHealth, DestinationState
from buffer.rows import ClaimedEvent
from buffer.sqlite import SqliteBuffer

log = logging.getLogger("floorgate.forwarders")

RETRYABLE = (NotConnected, Transient)
TROUBLE = frozenset(
    {DestinationState.RETRYING, DestinationState.DISCONNECTED, DestinationState.FAILING}
)
FATAL_PAUSE_SECONDS = 600.0
IDLE_POLL_SECONDS = 1.0


class RetryAfterOrBackoff:
    """tenacity wait: the destination's Retry-After when it gave one, else exponential
    backoff with jitter between ``initial`` and ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))


# With an ack interval, acks held back past this many events are committed at once: a
# crash resends what was held, and that stays a few batches.
MAX_HELD_ACKS = 5000


async def _both(first: asyncio.Future[None], second: asyncio.Future[None]) -> None:
    """Two acks in flight as one: done when both are, raising the first failure."""
    failed: BaseException | None = None
    try:
        await asyncio.shield(first)
    except BaseException as exc:  # re-raised below, once the second is through too
        failed = exc
    await asyncio.shield(second)
    if failed is not None:
        raise failed


@dataclass
class DeliverySettings:
    batch_size: int
    retry: RetryConfig
    fatal_pause: float = FATAL_PAUSE_SECONDS
    # buffer.commit_interval: acks are committed at most once per this interval while a
    # backlog streams, and whenever the queue is caught up (0: each batch's at once).
    ack_interval: float = 0.0


class DeliveryLoop:
    def __init__(
        self,
        forwarder: Forwarder,
        buffer: SqliteBuffer,
        settings: DeliverySettings,
        health: DestinationHealth,
        wake: asyncio.Event,
    ) -> None:
        self.forwarder = forwarder
        self.buffer = buffer
        self.settings = settings
        self.health = health
        self._wake = wake
        self._connected = False
        # Pipelining (a third more events/s on a backlog): while a batch is sent, the next
        # one is claimed (a read, seqs after this batch's) and the previous batch's ack
        # commits. Sends stay one at a time and in seq order.
        self._next: asyncio.Future[list[ClaimedEvent]] | None = None
        self._acking: asyncio.Future[None] | None = None
        # Delivered but not yet handed to the buffer (ack_interval), and when the last
        # ack was (monotonic).
        self._held_acks: list[int] = []
        self._acked_at = -math.inf
        # The trouble now being lived through, for the one "recovered" line: when it
        # began (monotonic) and how many attempts failed since.
        self._trouble_since: float | None = None
        self._failed_attempts = 0

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._deliver_until_idle()
                except Fatal as exc:
                    await self._pause_after_fatal(exc)
                    continue
                await self._wait_for_events()
        finally:
            await self._drop_next()
            with contextlib.suppress(Exception):  # stopping: let the last ack commit
                await self._settle_ack()
            await self._disconnect()

    async def _deliver_until_idle(self) -> None:
        """Retry (with backoff) until the queue is empty; raises Fatal."""
        while True:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(RETRYABLE),
                wait=RetryAfterOrBackoff(self.settings.retry.initial, self.settings.retry.max),
                stop=stop_never,
                before_sleep=self._before_retry,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    progressed = await self._cycle()
            if not progressed:
                return

    async def _cycle(self) -> bool:
        """One claim → send round. Returns False when nothing was pending."""
        if not self._connected:
            with self._in_flight():
                await self.forwarder.connect()
            self._connected = True
            # Only a first connect says connected: after trouble, a send (or the idle
            # check) must prove it, or HTTP (whose connect opens no socket) would flap to
            # connected between two failed attempts.
            if self.health.state is DestinationState.STARTING:
                self.health.set_state(DestinationState.CONNECTED)
        batch = await self._take_batch()
        if not batch:
            await self._settle_ack()
            await self._check_idle_link()
            return False
        self._next = asyncio.ensure_future(
            self.buffer.claim(
                self.forwarder.name, self.settings.batch_size, after_seq=batch[-1].seq
            )
        )
        try:
            await self._send(batch)
        except BaseException as exc:
            await self._drop_next()  # the batch is sent again first: claim afresh
            if isinstance(exc, Exception) and self._held_acks:
                # What was delivered before the failure is marked so now, not after the
                # backoff or a fatal pause (stats, max_age and replay go by it).
                with contextlib.suppress(Exception):  # an ack that fails keeps them held
                    await self._settle_ack()
            raise
        return True

    async def _take_batch(self) -> list[ClaimedEvent]:
        """The batch claimed while the last one was sent; when there is none (or it came
        back empty), a claim from the oldest pending event on, once the last ack is
        committed (its events would be claimed again otherwise). So an event requeued
        behind a long backlog waits until the backlog is through."""
        claimed, self._next = self._next, None
        if claimed is not None:
            batch = await claimed
            if batch:
                return batch
        await self._settle_ack()
        return await self.buffer.claim(self.forwarder.name, self.settings.batch_size)

    async def _drop_next(self) -> None:
        claimed, self._next = self._next, None
        if claimed is not None:
            claimed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await claimed

    async def _settle_ack(self) -> None:
        """Commit the acks held back, and wait for the ack in flight. Called before
        every claim from the oldest pending event (held acks would have their events
        claimed again), before counting what is pending, and when stopping."""
        if self._held_acks:
            await self._commit_held_acks()
        await self._wait_for_ack()

    async def _wait_for_ack(self) -> None:
        """Wait for the ack in flight; its failure (the buffer) is raised here. Shielded:
        a cancel (the agent stopping) leaves it to commit, and run() waits for it."""
        acking = self._acking
        if acking is None:
            return
        try:
            await asyncio.shield(acking)
        finally:
            if acking.done() and self._acking is acking:
                self._acking = None

    async def _ack(self, seqs: Sequence[int]) -> None:
        """Mark delivered without waiting for the commit: the next batch is sent
        meanwhile. If the agent dies first, those events are sent again after the
        restart, as after any crash between a send and its ack (receivers drop repeats
        by event id).

        With an ack interval, an ack within the interval of the last one is held back
        (each commit writes whole pages to the disk, however few events it marks): the
        next claim from the oldest pending event, a stop, the interval or
        MAX_HELD_ACKS commits it. A crash resends what was held, as above."""
        self._held_acks.extend(seqs)
        if (
            self.settings.ack_interval
            and time.monotonic() - self._acked_at < self.settings.ack_interval
            and len(self._held_acks) < MAX_HELD_ACKS
        ):
            return
        await self._commit_held_acks()

    async def _commit_held_acks(self) -> None:
        """Hand the held acks to the buffer. An ack in flight that is through is waited
        for first: if it failed (raised here) or was cancelled, these are still held, not
        lost (their events would be sent again). One still waiting (the buffer commits
        acks with its next append, ack_with_appends) is not: both wait together, and the
        loop sends on meanwhile."""
        acking = self._acking
        if acking is None or acking.done() or not self.buffer.acks_wait_for_appends:
            await self._wait_for_ack()
            acking = None
        held, self._held_acks = self._held_acks, []
        self._acked_at = time.monotonic()
        ack = asyncio.ensure_future(self.buffer.ack(self.forwarder.name, held))
        self._acking = ack if acking is None else asyncio.ensure_future(_both(acking, ack))

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Health's clock for one connect or send: /readyz shows its age and calls the
        destination degraded past ``slow_after``, long before the request's timeout."""
        self.health.in_flight_since = time.monotonic()
        try:
            yield
        finally:
            self.health.in_flight_since = None

    async def _send(self, batch: Sequence[ClaimedEvent]) -> None:
        try:
            with self._in_flight():
                result = await self.forwarder.send(batch)
        except Rejected as exc:
            if len(batch) == 1:
                await self._dead_letter({batch[0].seq: str(exc)}, batch)
                # It answered (refusing one event): the destination itself works.
                await self._mark_connected()
                return
            # Find the poison event: halves in order, so per-machine order holds.
            middle = len(batch) // 2
            await self._send(batch[:middle])
            await self._send(batch[middle:])
            return
        except RETRYABLE as exc:
            await self.buffer.record_failure(self.forwarder.name, [e.seq for e in batch], str(exc))
            if isinstance(exc, NotConnected):
                await self._disconnect()
            raise
        if result.delivered:
            await self._ack(result.delivered)
            self.health.delivered += len(result.delivered)
            self.health.last_success = time.time()
        if result.rejected:
            await self._dead_letter(result.rejected, batch)
        settled = set(result.delivered) | result.rejected.keys()
        left = [e.seq for e in batch if e.seq not in settled]
        if left:
            await self.buffer.record_failure(
                self.forwarder.name,
                left,
                result.waiting_reason or "not confirmed by the destination",
            )
            why = result.waiting_reason or "not confirmed by the destination"
            raise Transient(f"{len(left)} events of the batch wait: {why}")
        await self._mark_connected()

    async def _mark_connected(self) -> None:
        """Connected, and when that ends a trouble, one INFO line saying so."""
        was = self.health.state
        if not self.health.set_state(DestinationState.CONNECTED) or was not in TROUBLE:
            return
        began, self._trouble_since = self._trouble_since, None
        attempts, self._failed_attempts = self._failed_attempts, 0
        after = time.monotonic() - began if began is not None else 0.0
        log.info(
            "destination recovered destination=%s after=%.0fs attempts=%d pending=%s",
            self.forwarder.name,
            after,
            attempts,
            await self._pending(),
        )

    async def _pending(self) -> int | str:
        """Events still waiting for this destination, for the recovery line. The ack in
        flight is committed first, so the batch just delivered is not counted."""
        await self._settle_ack()  # its failure is the buffer's: raised as anywhere else
        try:
            stats = await self.buffer.stats()
        except Exception:  # only a figure in a log line: never a reason to stop delivering
            return "unknown"
        dest = stats.destinations.get(self.forwarder.name)
        return dest.pending if dest else 0

    def _trouble(self, failed: bool) -> None:
        if self._trouble_since is None:
            self._trouble_since = time.monotonic()
        if failed:
            self._failed_attempts += 1

    async def _dead_letter(self, reasons: dict[int, str], batch: Sequence[ClaimedEvent]) -> None:
        await self.buffer.dead_letter(self.forwarder.name, reasons)
        self.health.dead += len(reasons)
        ids = {e.seq: e.id for e in batch}
        for seq, reason in reasons.items():
            log.warning(
                "event dead-lettered destination=%s event=%s reason=%r next=continue-with-the-rest",
                self.forwarder.name,
                ids.get(seq, seq),
                reason,
            )

    def _before_retry(self, state: RetryCallState) -> None:
        self._trouble(failed=True)
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        kind = (
            DestinationState.DISCONNECTED
            if isinstance(exc, NotConnected)
            else DestinationState.RETRYING
        )
        if self.health.set_state(kind, str(exc)) or state.attempt_number in (1, 10, 100):
            log.warning(
                "destination unavailable destination=%s error=%r attempt=%d next=retry-in-%.1fs",
                self.forwarder.name,
                str(exc),
                state.attempt_number,
                wait,
            )
        self.health.next_retry_at = time.time() + wait

    async def _pause_after_fatal(self, exc: Fatal) -> None:
        self._trouble(failed=True)
        await self._disconnect()
        if self.health.set_state(DestinationState.FAILING, str(exc)):
            log.error(
                "destination stopped destination=%s error=%r next=retry-in-%ds-or-on-reload",
                self.forwarder.name,
                str(exc),
                int(self.settings.fatal_pause),
            )
        await asyncio.sleep(self.settings.fatal_pause)

    async def _check_idle_link(self) -> None:
        """Idle and connected as far as the loop knows. A forwarder whose library keeps
        the connection itself (MQTT) can say the link dropped while nothing was sent;
        health shows it without waiting for a send."""
        probe = getattr(self.forwarder, "link_problem", None)
        if not self._connected:
            return
        problem = probe() if probe is not None else None
        if problem is not None:
            self._trouble(failed=False)
            self.health.set_state(DestinationState.DISCONNECTED, problem)
        else:
            await self._mark_connected()

    async def _wait_for_events(self) -> None:
        self._wake.clear()
        # asyncio.timeout, not wait_for, which on 3.11 can swallow a cancellation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_POLL_SECONDS):
                await self._wake.wait()

    async def _disconnect(self) -> None:
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):
                await self.forwarder.close()
