"""The rule engine: batches of samples in, validated events committed to the buffer.

Events and the rule state that produced them are committed in one transaction, so a
crash at any moment leaves the rules exactly where their last committed events left
them. While a commit fails (disk full), the engine keeps what it made in memory,
retries, and stops taking samples: drivers then wait on the bounded queue. An event the
buffer cannot store because of its own data (it would fail every retry) is not held: the
buffer leaves it out, counts and logs it, and commits the rest (``dropped_rejected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.config.common import EventType
from agent.config.models import FloorgateConfig
from agent.config.rules import CountKind
from agent.config.xref import signal_catalog
from agent.pipeline.events import (
    EnvelopeEncoder,
    MachineStateData,
    ProductionCountData,
    SampleData,
    format_sequence,
    utcnow,
    uuid7_batch,
)
from agent.pipeline.routing import Router
from agent.pipeline.shifts import ShiftCalendar
from agent.rules import build_rules
from agent.rules.base import Draft, Rule
from buffer import blocks
from buffer.rows import EventRow, Unstorable
from buffer.sqlite import BufferStoreError, SqliteBuffer
from drivers.base import Sample

log = logging.getLogger("floorgate.engine")

SEQUENCE_KEY = "engine/sequence"
STATE_EVENT_KEY = "engine/state-event"
SHIFT_KEY = "engine/shift"  # + "/<machine>": the parts of its current shift (ShiftTotal)
TICK_SECONDS = 1.0
MAX_BATCHES_PER_COMMIT = 200
# A round (take, rules, hand to the buffer) stops taking batches past this many samples:
# rounds of a few thousand events let one round's commit overlap the next one's rules,
# where one huge round would leave the two threads taking turns.
MAX_SAMPLES_PER_ROUND = 2000
# Event ids are drawn this many at a time (one lock and clock read each) and the rest
# dropped when the round ends, so an id's timestamp is never older than its round.
IDS_PER_DRAW = 64
_TYPE_VALUES: dict[EventType, str] = {t: t.value for t in EventType}
# An event's sequence is given when it is handed over, in the order the buffer stores
# (blocks as they come, then the other events), so that it follows the delivery order.
_UNNUMBERED = format_sequence(0)
_UNNUMBERED_FIELD = b'"sequence":"' + _UNNUMBERED.encode() + b'"'
# Samples per block at most: a block is the unit the held-events bound drops.
BLOCK_SAMPLES = 5000


def _digest(template: bytes, base: int | None) -> bytes:
    """What tells heads apart (the same template on another base is another head)."""
    return hashlib.blake2b(f"{base}|".encode() + template, digest_size=16).digest()


@dataclass
class ShiftTotal:
    """A machine's parts reported in one shift (by the end of their count window), kept
    in the buffer with the count events themselves: after a restart the status page
    still shows the whole shift, and always what the destinations were sent."""

    start: datetime
    good: int = 0
    scrap: int = 0

    def to_json(self) -> str:
        return json.dumps({"start": self.start.isoformat(), "good": self.good, "scrap": self.scrap})

    @classmethod
    def from_json(cls, text: str) -> ShiftTotal:
        found = json.loads(text)
        return cls(datetime.fromisoformat(found["start"]), int(found["good"]), int(found["scrap"]))


@dataclass
class EngineHealth:
    running: bool = False
    samples: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    last_commit: float | None = None
    commit_failing_since: float | None = None
    last_error: str | None = None
    pending_events: int = 0  # held in memory because commits fail (0 while they succeed)
    dropped_invalid: int = 0
    dropped_rejected: int = 0  # events the buffer could not store for their own data
    held_samples_dropped: int = 0  # held in memory too long (buffer not writable): total
    held_samples_dropped_episode: int = 0  # ... since the buffer stopped being writable


class RuleEngine:
    def __init__(
        self,
        config: FloorgateConfig,
        buffer: SqliteBuffer,
        *,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
        queue_size: int = 1000,
        queue: asyncio.Queue[Sequence[Sample]] | None = None,
    ) -> None:
        self.config = config
        self.buffer = buffer
        # The agent passes its own queue so that an engine rebuilt on a config reload
        # takes over the samples the old one had not taken yet.
        self.queue: asyncio.Queue[Sequence[Sample]] = queue or asyncio.Queue(maxsize=queue_size)
        self.health = EngineHealth()
        self._on_commit = on_commit
        self._clock = clock
        self._stopping = False
        self._links: dict[str, str] = {}
        self.shifts = ShiftCalendar(config.agent.shifts, config.agent.timezone)
        self.shift_totals: dict[str, ShiftTotal] = {}  # machine -> its current shift's parts
        self._last_time: tuple[datetime, str] | None = None
        self._unmapped_logged: dict[str, set[int | float | str]] = {}
        self._router = Router(config.destinations)
        self._encoder = EnvelopeEncoder(config.agent.id)
        self._ids: list[str] = []  # drawn for this round; dropped at its end (see _commit)
        self._sources: dict[str, str] = {
            m.name: f"/{config.agent.site}/{m.area}/{m.line}/{m.name}" for m in config.machines
        }
        catalog = signal_catalog(config)
        data_types = {name: info.data_type for name, info in catalog.items()}
        units = {name: info.unit for name, info in catalog.items()}
        self.rules: list[Rule] = []
        for machine in config.machines:
            self.rules += build_rules(machine, data_types, units)
        self._by_signal: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for signal in rule.signals:
                self._by_signal.setdefault(signal, []).append(rule)
        # Rules whose samples may carry a state code missing from the map, logged by
        # _emit even when the rule made nothing of them.
        self._may_report: set[int] = {id(r) for r in self.rules if hasattr(r, "unmapped_codes")}
        self._ticking = [rule for rule in self.rules if rule.ticks]
        self._sequence = 0
        self._rows: list[EventRow] = []
        # Samples made since the last hand-over, by destinations: each set becomes one
        # sample block (buffer.blocks) when they are handed over. Their heads: template
        # -> number, and the templates of each (source, machine, signal).
        self._samples: dict[tuple[str, ...], list[blocks.BlockSample]] = {}
        # Heads by a digest of their template (a plant has two per signal: the templates
        # themselves, a few hundred bytes each, stay in the buffer only).
        self._heads: dict[bytes, int] = {}
        self._next_head = 0
        self._templates: dict[tuple[str, str, str], tuple[int, int, bytes, str | None]] = {}
        self._sample_time: tuple[datetime, int] | None = None
        self._state: dict[str, str] = {}
        # The commit handed to the buffer and not yet confirmed: (rows, state, future).
        self._inflight: (
            tuple[list[EventRow], dict[str, str], asyncio.Future[list[Unstorable]]] | None
        ) = None

    async def sink(self, samples: Sequence[Sample]) -> None:
        """Given to drivers; waits when the engine is behind (bounded memory)."""
        await self.queue.put(samples)

    async def restore(self) -> None:
        states = await self.buffer.load_state()
        self._sequence = int(states.get(SEQUENCE_KEY, "0"))
        self._links = {k: v for k, v in states.items() if k.startswith(STATE_EVENT_KEY + "/")}
        for key, value in states.items():
            if key.startswith(blocks.HEAD_KEY):
                with contextlib.suppress(ValueError):
                    number = int(key.removeprefix(blocks.HEAD_KEY))
                    # Even an unreadable head keeps its number: blocks refer to it.
                    self._next_head = max(self._next_head, number + 1)
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        head = blocks.Head.from_text(value)
                        self._heads[_digest(head.template, head.base)] = number
        for key, value in states.items():
            if key.startswith(SHIFT_KEY + "/"):
                with contextlib.suppress(ValueError, KeyError, TypeError):  # unreadable: anew
                    self.shift_totals[key.removeprefix(SHIFT_KEY + "/")] = ShiftTotal.from_json(
                        value
                    )
        restored = 0
        for rule in self.rules:
            if rule.key in states:
                rule.restore(json.loads(states[rule.key]))
                restored += 1
        log.info(
            "rule state restored rules=%d restored=%d sequence=%d",
            len(self.rules),
            restored,
            self._sequence,
        )

    async def run(self) -> None:
        self.health.running = True
        next_tick = time.monotonic() + TICK_SECONDS
        # buffer.commit_interval: what the rules made is handed to the buffer at most once
        # per interval (each commit writes whole pages whatever it holds; docs/buffer.md,
        # "The flash budget"). After a quiet spell the first events go at once.
        interval = self.config.buffer.commit_interval
        handed_over = -math.inf  # monotonic time of the last hand-over
        try:
            while not self._stopping:
                due = next_tick
                if interval and self._made():
                    due = min(due, handed_over + interval)
                batches = await self._take(max(0.0, due - time.monotonic()))
                for batch in batches:
                    self._process(batch)
                if time.monotonic() >= next_tick:
                    next_tick += TICK_SECONDS * max(
                        1, int((time.monotonic() - next_tick) // TICK_SECONDS) + 1
                    )
                    self._tick()
                if (
                    not interval
                    or time.monotonic() >= handed_over + interval
                    or self.health.commit_failing_since is not None  # held: retried each round
                ):
                    if self._made():
                        handed_over = time.monotonic()
                    await self._commit()
                else:
                    self._ids = []  # ids are drawn per round (see IDS_PER_DRAW)
                    if self._inflight is not None and self._inflight[2].done():
                        await self._settle()  # wakes the forwarders now, not at the next one
                    await asyncio.sleep(0)  # as _commit does: let drivers and forwarders run
            await self._settle(final=True)  # asked to stop: what was handed over is durable
        finally:
            self.health.running = False

    def _made(self) -> bool:
        """Whether anything waits to be handed to the buffer."""
        return bool(self._rows or self._state or self._samples)

    def request_stop(self) -> None:
        """Ask run() to return after its current round.

        The engine is stopped this way rather than cancelled: a cancel that lands while a
        commit runs in the buffer's thread would leave rows that are committed but still
        held here, and the final commit would write them twice."""
        self._stopping = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(())  # wakes a run() that waits for samples

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        """Process what is queued, report partial windows, commit. Called after drivers stop."""
        while not self.queue.empty():
            self._process(self.queue.get_nowait())
        now = self._clock()
        for rule in self.rules:
            self._emit(rule, rule.flush(now))
        await self._commit(final=True)

    async def _take(self, wait: float) -> list[Sequence[Sample]]:
        if self._made() and self.health.commit_failing_since is not None:
            return []  # a failed commit is pending: retry it before taking more
        batches: list[Sequence[Sample]] = []
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
        # arrives as the item does, and a task that ignores its cancel never stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                batches.append(await self.queue.get())
        taken = sum(len(batch) for batch in batches)
        while (
            batches
            and not self.queue.empty()
            and len(batches) < MAX_BATCHES_PER_COMMIT
            and taken < MAX_SAMPLES_PER_ROUND
        ):
            batches.append(self.queue.get_nowait())
            taken += len(batches[-1])
        return batches

    def _process(self, batch: Sequence[Sample]) -> None:
        self.health.samples += len(batch)
        by_signal = {sample.signal: sample for sample in batch}
        touched: dict[int, Rule] = {}
        for signal in by_signal:
            for rule in self._by_signal.get(signal, ()):
                touched[id(rule)] = rule
        now = self._clock()
        may_report = self._may_report
        for rule in touched.values():
            drafts = rule.on_samples(by_signal, now)
            # Most calls make nothing (a value within its deadband): skip _emit then. On a
            # 30,000-signal plant it ran 17 times per event made.
            if drafts or rule.dirty or id(rule) in may_report:
                self._emit(rule, drafts)

    def _tick(self) -> None:
        now = self._clock()
        for rule in self._ticking:
            drafts = rule.on_tick(now)
            if drafts or rule.dirty:
                self._emit(rule, drafts)

    def _emit(self, rule: Rule, drafts: Sequence[Draft]) -> None:
        self._report_unmapped(rule)
        for draft in drafts:
            row = self._to_row(rule, draft)
            if row is not None:
                self._rows.append(row)
        if rule.dirty:
            self._state[rule.key] = json.dumps(rule.snapshot())

    def _report_unmapped(self, rule: Rule) -> None:
        """A state code missing from the machine's map is logged once per code, not at
        every poll: the engineer adds it to `state.map` (or the PLC sends a new code)."""
        codes = getattr(rule, "unmapped_codes", None)
        if not codes:
            return
        seen = self._unmapped_logged.setdefault(rule.key, set())
        for code in sorted(codes - seen, key=str):
            log.warning(
                "state code not in the machine's map; ignored machine=%s code=%r "
                "fix=add-it-to-machines.state.map",
                rule.machine,
                code,
            )
            seen.add(code)

    def _to_row(self, rule: Rule, draft: Draft) -> EventRow | None:
        # Once per event: the hot path of ingest. Attribute chains and enum .value
        # lookups are hoisted (each costs as much as a dict lookup several times over).
        if type(draft[2]) is SampleData and self._to_block(rule.machine, draft[1], draft[2]):
            return None
        if not self._ids:
            self._ids = uuid7_batch(IDS_PER_DRAW)[::-1]  # pop() takes the oldest
        event_id = self._ids.pop()
        event_type, when, data = draft
        machine = rule.machine
        if type(data) is MachineStateData:
            # Link each state to the event that opened the one it ends; the link is
            # committed with the event, so it survives restarts like rule state does.
            key = f"{STATE_EVENT_KEY}/{machine}"
            data = data.model_copy(update={"previous_event_id": self._links.get(key)})
            self._links[key] = event_id
            self._state[key] = event_id
        try:
            payload = self._encoder.encode(
                id=event_id,
                source=self._sources[machine],
                type=event_type,
                time=when,
                sequence=_UNNUMBERED,  # numbered at hand-over (_number)
                data=data,
            )
        except ValueError as exc:  # a rule bug must not stop the line: count it and say so
            self.health.dropped_invalid += 1
            log.error("invalid event dropped rule=%s type=%s error=%s", rule.key, event_type, exc)
            return None
        if type(data) is ProductionCountData:
            self._count_in_shift(machine, data)
        type_value = _TYPE_VALUES[event_type]
        counts = self.health.events_by_type
        counts[type_value] = counts.get(type_value, 0) + 1
        return EventRow(
            event_id,
            type_value,
            machine,
            self._iso_time(when),
            payload,
            self._router.route(event_type, machine),
        )

    def _to_block(self, machine: str, when: datetime, data: SampleData) -> bool:
        """Keep a sample for its destinations' next block; False when it cannot go in
        one (its data needs a row of its own)."""
        source = self._sources[machine]
        found = self._templates.get((source, machine, data.signal))
        if found is None:
            found = self._templates[(source, machine, data.signal)] = self._sample_heads(
                source, machine, data
            )
        good, other, prefix, unit = found
        fragment = self._encoder.sample_fragment(data, prefix, unit)
        if fragment is None:
            return False
        cached = self._sample_time
        if cached is None or cached[0] is not when:
            cached = self._sample_time = (when, blocks.time_us(when.astimezone(UTC)))
        route = self._router.route(EventType.SAMPLE, machine)
        made = self._samples.get(route)
        if made is None:
            made = self._samples[route] = []
        made.append(blocks.BlockSample(good if fragment[0] else other, cached[1], fragment[1]))
        counts = self.health.events_by_type
        counts["sample"] = counts.get("sample", 0) + 1
        return True

    def _sample_heads(
        self, source: str, machine: str, data: SampleData
    ) -> tuple[int, int, bytes, str | None]:
        """A signal's two heads (a good reading in its unit, any other), numbered, on the
        head of its source's envelope; a head not yet in the buffer goes in with the next
        hand-over."""
        envelope, good, other, prefix = self._encoder.sample_templates(
            source, machine, data.signal, data.unit
        )
        base = self._head(blocks.Head(_TYPE_VALUES[EventType.SAMPLE], "", envelope))
        # A signal's own heads are looked up once (then _templates has their numbers):
        # their digests are not kept (on 30,000 signals they took 11 MB).
        return (
            self._head(blocks.Head(_TYPE_VALUES[EventType.SAMPLE], machine, good, base), False),
            self._head(blocks.Head(_TYPE_VALUES[EventType.SAMPLE], machine, other, base), False),
            prefix,
            data.unit,
        )

    def _head(self, head: blocks.Head, keep: bool = True) -> int:
        """The number of this head; a new one's goes in with the next hand-over."""
        digest = _digest(head.template, head.base)
        number = self._heads.get(digest) if keep else self._heads.pop(digest, None)
        if number is None:
            number = self._next_head
            self._next_head += 1
            self._state[f"{blocks.HEAD_KEY}{number}"] = head.to_text()
        if keep:
            self._heads[digest] = number
        return number

    def _blocks(self) -> list[EventRow]:
        """The samples made since the last hand-over, as blocks: one per set of
        destinations (more past BLOCK_SAMPLES). Each takes its sequences now."""
        made: list[EventRow] = []
        for route, samples in self._samples.items():
            for start in range(0, len(samples), BLOCK_SAMPLES):
                chunk = samples[start : start + BLOCK_SAMPLES]
                payload, base = blocks.encode(self._sequence + 1, chunk)
                self._sequence += len(chunk)
                made.append(
                    EventRow(
                        blocks.block_id(uuid7_batch(1)[0]),
                        _TYPE_VALUES[EventType.SAMPLE],
                        "",
                        blocks.iso(base).isoformat(),
                        payload,
                        route,
                        len(chunk),
                    )
                )
        self._samples = {}
        return made

    def _number(self, rows: list[EventRow]) -> list[EventRow]:
        """What is handed over, in the order the buffer stores it: the rows held from a
        failed commit (numbered then), the new blocks, the new events; each not yet
        numbered takes the next sequences now."""
        held: list[EventRow] = []
        fresh: list[EventRow] = []
        for row in rows:
            (fresh if not row.n and _UNNUMBERED_FIELD in row.payload else held).append(row)
        ordered = held + self._blocks()
        for row in fresh:
            self._sequence += 1
            numbered = b'"sequence":"' + format_sequence(self._sequence).encode() + b'"'
            ordered.append(
                row._replace(payload=row.payload.replace(_UNNUMBERED_FIELD, numbered, 1))
            )
        return ordered

    def _count_in_shift(self, machine: str, data: ProductionCountData) -> None:
        """Add a count event's parts to its machine's shift total, in the commit that
        stores the event. A new shift starts the total anew; parts of a window that
        ended in a shift before the current total's are left out of it."""
        start = self.shifts.start_of(data.window_end)
        total = self.shift_totals.get(machine)
        if total is None or start > total.start:
            total = self.shift_totals[machine] = ShiftTotal(start)
        elif start < total.start:
            return
        if data.kind is CountKind.GOOD:
            total.good += data.quantity
        else:
            total.scrap += data.quantity
        self._state[f"{SHIFT_KEY}/{machine}"] = total.to_json()

    def _iso_time(self, when: datetime) -> str:
        """The events of one poll share one timestamp: format it once (ingest hot path)."""
        if self._last_time is None or self._last_time[0] != when:
            self._last_time = (when, when.astimezone(UTC).isoformat())
        return self._last_time[1]

    async def _commit(self, final: bool = False) -> None:
        """Hand what the last round made to the buffer, without waiting for the disk.

        Commits are pipelined: the durable commit of one round (SQLite, in the buffer's
        thread) runs while the next round's samples go through the rules here, and a
        round waits only for the previous commit before handing over its own. Commits
        stay one at a time and in order, so rule state and events still land together.
        While commits fail (disk full), each one is waited for: nothing new is taken
        until the held events are written."""
        self._ids = []
        if not await self._settle(final) and not final:
            return  # the next round retries (it takes no samples while events are held)
        if not self._made():
            return
        self._rows = self._number(self._rows)
        self._state[SEQUENCE_KEY] = str(self._sequence)
        rows, state = self._rows, self._state
        self._rows, self._state = [], {}
        try:
            commit = self.buffer.submit(rows, state)
        except BufferStoreError as exc:  # closed: held like any failed commit
            commit = asyncio.get_running_loop().create_future()
            commit.set_exception(exc)
        # The commit's future is shielded where it is awaited: a cancel of run() must not
        # cancel a commit half-way (its rows are committed or held, never both).
        self._inflight = (rows, state, commit)
        if final or self.health.commit_failing_since is not None:
            await self._settle(final)
        else:
            # The commit already runs in the buffer's thread. One turn of the loop per
            # round all the same: Queue.get does not yield while samples are waiting, so
            # in a flood nothing else (drivers, forwarders) would run between rounds.
            await asyncio.sleep(0)

    async def _settle(self, final: bool = False) -> bool:
        """Wait for the commit in flight. A failed one puts its events and state back in
        front of what was made since, and the engine pauses a second before retrying.
        Events the buffer rejected for their own data were not stored and are not held
        (retrying them would fail forever): the buffer logged and counted them."""
        if self._inflight is None:
            return True
        rows, state, commit = self._inflight
        try:
            rejected = await asyncio.shield(commit)
        except BufferStoreError as exc:
            self._inflight = None
            self._rows = rows + self._rows
            self._state = {**state, **self._state}
            self.health.pending_events = self._held()
            self._commit_failed(str(exc))
            if not final:
                await asyncio.sleep(1.0)
            return False
        self._inflight = None
        self.health.dropped_rejected += sum(r.row.samples for r in rejected if r.row is not None)
        if self.health.commit_failing_since is not None:
            log.info(
                "buffer writable again pending=%d held_samples_dropped=%d",
                sum(row.samples for row in rows),
                self.health.held_samples_dropped_episode,
            )
        self.health.held_samples_dropped_episode = 0
        self.health.commit_failing_since = None
        self.health.last_commit = time.time()
        self.health.pending_events = 0
        self._on_commit()
        return True

    def _commit_failed(self, error: str) -> None:
        if self.health.commit_failing_since is None:
            self.health.commit_failing_since = time.time()
            log.error(
                "buffer commit failed; holding events in memory error=%s pending=%d",
                error,
                self._held(),
            )
        self.health.last_error = error
        # Memory stays bounded: while nothing can be committed no sample is processed, so
        # only sample heartbeats keep coming; beyond the limit the oldest held samples go.
        # States, counts and alarms are kept (few: they need samples to be made).
        held_limit = 10_000
        excess = self._held() - held_limit
        if excess <= 0:
            return
        dropped = 0
        kept: list[EventRow] = []
        for row in self._rows:  # the oldest first: held blocks and samples, whole
            if excess > 0 and row.type == "sample":
                excess -= row.samples
                dropped += row.samples
            else:
                kept.append(row)
        self._rows = kept
        for made in self._samples.values():  # then those not yet in a block
            cut = min(max(excess, 0), len(made))
            del made[:cut]
            excess -= cut
            dropped += cut
        self._samples = {route: made for route, made in self._samples.items() if made}
        if not dropped:
            return
        if self.health.held_samples_dropped_episode == 0:
            log.warning(
                "buffer still not writable; dropping the oldest held samples limit=%d",
                held_limit,
            )
        self.health.held_samples_dropped += dropped
        self.health.held_samples_dropped_episode += dropped
        self.health.pending_events = self._held()

    def _held(self) -> int:
        """Events held in memory: rows (a block counts its samples) and samples made
        since the last hand-over."""
        return sum(row.samples for row in self._rows) + sum(
            len(made) for made in self._samples.values()
        )
