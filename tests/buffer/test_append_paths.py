"""The append statement unpacks a batch from one JSON document, with the payloads end to
end in one blob beside it: any payload (JSON text, not UTF-8, with NUL) must be stored
with the same rows, deliveries and counters, and given back exactly."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from buffer import EventRow, SqliteBuffer

PAYLOADS = {
    "json text": '{"v":"Grüße \\" \\\\ \\n ✓","n":1e-7}'.encode(),
    "not utf-8": b"\xff\xfe binary",
    "with NUL": b"a\x00b",
}


def event(n: int, payload: bytes, destinations: tuple[str, ...]) -> EventRow:
    return EventRow(
        f"id-{n:04d}", "sample", f"m{n % 3}", "2026-01-01T00:00:00Z", payload, destinations
    )


def table(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("kind", list(PAYLOADS))
async def test_every_payload_is_stored_with_the_same_rows_and_counts(
    tmp_path: Path, kind: str
) -> None:
    payload = PAYLOADS[kind]
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        await buf.append([event(0, payload, ("a",)), event(1, payload, ("a", "b"))])
        await buf.append(
            [
                event(1, payload, ("a", "b")),  # stored before: ignored, no new deliveries
                event(2, payload, ("a", "a", "b")),  # a destination named twice
                event(3, payload, ()),  # kept for replay, delivered nowhere
                event(2, payload, ("a", "b")),  # twice in the same append
                event(4, payload, ("b",)),
            ],
            {"rule/x": '{"n": 1}'},
        )
        claimed_a = await buf.claim("a", 10)
        claimed_b = await buf.claim("b", 10)
        stats = await buf.stats()
        state = await buf.load_state()
    finally:
        await buf.close()
    assert [e.id for e in claimed_a] == ["id-0000", "id-0001", "id-0002"]
    assert [e.id for e in claimed_b] == ["id-0001", "id-0002", "id-0004"]
    assert all(e.payload == payload for e in [*claimed_a, *claimed_b])
    assert stats.events == 5
    assert (stats.destinations["a"].pending, stats.destinations["b"].pending) == (3, 3)
    assert state == {"rule/x": '{"n": 1}'}
    rows = table(
        tmp_path / "b.db", "SELECT seq, id, key, time, payload, size FROM events ORDER BY seq"
    )
    assert [r[1] for r in rows] == ["id-0000", "id-0001", "id-0002", "id-0003", "id-0004"]
    assert [r[0] for r in rows] == sorted({r[0] for r in rows})
    assert all(r[4] == payload and r[5] == len(payload) for r in rows)
    assert rows[3][2:4] == ("m0", "2026-01-01T00:00:00Z")
    assert table(tmp_path / "b.db", "SELECT count(*) FROM deliveries") == [(6,)]
    counters = table(
        tmp_path / "b.db",
        "SELECT destination, status, n FROM counters WHERE n AND status NOT LIKE 'written:%'",
    )
    assert sorted(counters) == [("", "events", 5), ("a", "pending", 3), ("b", "pending", 3)]


async def test_state_keys_and_values_are_stored_exactly(tmp_path: Path) -> None:
    state = {"rule/ü": '{"s": "\\" \\n ✓"}', "with\x00nul": "x\x00y", "plain": "1"}
    buf = await SqliteBuffer.open(tmp_path / "b.db")
    try:
        await buf.append([], state)
        await buf.append([], {"plain": "2"})  # an upsert
        assert await buf.load_state() == {**state, "plain": "2"}
    finally:
        await buf.close()
