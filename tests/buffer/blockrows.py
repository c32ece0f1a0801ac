"""Sample blocks for buffer tests, made as the engine makes them (its envelope encoder
and buffer.blocks), with the CloudEvent each sample must come back as, made the other
way (pydantic's Event.to_json), and counters recounted from the rows sample by sample."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from agent.config.common import EventType
from agent.pipeline.events import EnvelopeEncoder, Event, SampleData, uuid7
from buffer import blocks
from buffer.rows import EventRow

AGENT = "gw"
T0 = datetime(2026, 12, 2, 9, 0, 0, 123456, tzinfo=UTC)


@dataclass
class Made:
    row: EventRow
    state: dict[str, str]  # the heads, as the engine commits them with the block
    ids: list[str]
    payloads: list[bytes]  # what each sample must be sent as


@dataclass
class BlockMaker:
    encoder: EnvelopeEncoder = field(default_factory=lambda: EnvelopeEncoder(AGENT))
    heads: dict[str, int] = field(default_factory=dict)  # head text -> number
    sequence: int = 0

    def block(
        self,
        count: int,
        destinations: tuple[str, ...] = ("a",),
        *,
        machines: tuple[str, ...] = ("m1", "m2"),
        start: datetime = T0,
        step: timedelta = timedelta(milliseconds=250),
    ) -> Made:
        state: dict[str, str] = {}
        samples: list[blocks.BlockSample] = []
        data: list[tuple[SampleData, datetime, str]] = []
        for i in range(count):
            machine = machines[i % len(machines)]
            source = f"/plant/area/line/{machine}"
            signal = f"{machine}.s{i % 5}"
            value: float | int | bool | str | None = [
                20.0 + i / 7,
                i,
                i % 2 == 0,
                f"txt{i}",
                None,
            ][i % 5]
            quality = "bad" if value is None else "good"
            sample = SampleData(
                machine=machine,
                signal=signal,
                value=value,
                unit="degC" if i % 5 == 0 else None,
                quality=quality,
                reason="not a number (NaN)" if value is None else None,
            )
            unit = sample.unit if i % 2 else "degC"  # the signal's unit, as configured
            envelope, good, other, prefix = self.encoder.sample_templates(
                source, machine, signal, unit
            )
            made = self.encoder.sample_fragment(sample, prefix, unit)
            assert made is not None
            base = self.number(blocks.Head("sample", "", envelope), state)
            number = self.number(
                blocks.Head("sample", machine, good if made[0] else other, base), state
            )
            when = start + step * (i // 3)
            samples.append(blocks.BlockSample(number, blocks.time_us(when), made[1]))
            data.append((sample, when, source))
        payload, base = blocks.encode(self.sequence + 1, samples)
        block_id = blocks.block_id(uuid7())
        ids = [blocks.sample_id(block_id, i) for i in range(count)]
        expected = [
            Event(
                id=ids[i],
                source=source,
                type=EventType.SAMPLE,
                time=when,
                sequence=f"{self.sequence + 1 + i:020d}",
                agentid=AGENT,
                data=sample,
            ).to_json()
            for i, (sample, when, source) in enumerate(data)
        ]
        self.sequence += count
        row = EventRow(
            block_id,
            "sample",
            "",
            blocks.iso(base).isoformat(),
            payload,
            destinations,
            count,
        )
        return Made(row, state, ids, expected)

    def number(self, head: blocks.Head, state: dict[str, str]) -> int:
        """The head's number; a new one is added to ``state`` (committed with the block)."""
        key = head.to_text()
        number = self.heads.get(key)
        if number is None:
            number = self.heads[key] = len(self.heads)
            state[f"{blocks.HEAD_KEY}{number}"] = key
        return number


def real_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(destination, status) -> events, counted sample by sample from the rows; and the
    event total under ('', 'events')."""
    counted: dict[tuple[str, str], int] = {}
    for dest, status, n, done, moved in conn.execute(
        "SELECT d.destination, d.status, e.n, d.done, d.moved FROM deliveries AS d"
        " JOIN events AS e ON e.seq = d.seq"
    ):
        if n is None:
            counted[dest, status] = counted.get((dest, status), 0) + 1
            continue
        for i in range(n):
            if blocks.bits(moved) >> i & 1:
                continue  # counted in its own row
            settled = status == "delivered" or blocks.bits(done) >> i & 1
            key = (dest, "delivered" if settled else "pending")
            counted[key] = counted.get(key, 0) + 1
    counted["", "events"] = sum(n or 1 for (n,) in conn.execute("SELECT n FROM events"))
    return {k: v for k, v in counted.items() if v}


def kept_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {
        (dest, status): n
        for dest, status, n in conn.execute("SELECT destination, status, n FROM counters")
        if n and not status.startswith(("dropped:", "written:")) and status != "evicted"
    }
