"""Payloads on disk (buffer/payloads.py): compressed against a dictionary, every row read
back byte for byte, rows of older versions still read, and the released dictionary
frozen."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from buffer import EventRow, SqliteBuffer, payloads
from tests.buffer.test_flash import payload as sample_payload

# Rows written with dictionary 1 must decompress for as long as floorgate reads buffers:
# changing it is a new version, never an edit.
DICTIONARY_V1_SHA256 = "86a773b9d2a86bd54ad37cae212341f621280da0d00b5951da7e8983258121a7"


def test_the_released_dictionary_never_changes() -> None:
    assert hashlib.sha256(payloads.DICTIONARY_V1).hexdigest() == DICTIONARY_V1_SHA256
    assert payloads.DICTIONARIES[1] is payloads.DICTIONARY_V1


@pytest.mark.parametrize(
    "original",
    [
        sample_payload(1),
        b"",
        b"{}",
        b"\x00",
        b"\x00\x01 starts like a compressed row",
        b"\x00\x00 starts like an escaped row",
        random.Random(5).randbytes(3000),
        b"x" * 100_000,
    ],
    ids=["sample", "empty", "tiny", "nul", "fake-compressed", "fake-escaped", "random", "long"],
)
def test_every_payload_comes_back_as_it_was(original: bytes) -> None:
    stored = payloads.pack(original)
    assert payloads.unpack(stored) == original
    assert len(stored) <= len(original) + 2  # never more than the escape


def test_a_sample_event_keeps_under_two_fifths_of_its_bytes() -> None:
    sizes = [(len(p), len(payloads.pack(p))) for p in map(sample_payload, range(1, 200))]
    original = sum(a for a, _ in sizes)
    stored = sum(b for _, b in sizes)
    # Its random 32-digit id, time and value stay: ~110 of 330 bytes.
    assert stored * 5 < original * 2, (original, stored)


def test_json_rows_of_older_versions_read_as_they_are() -> None:
    old = b'{"specversion":"1.0","id":"x"}'
    assert payloads.unpack(old) == old


def test_a_row_from_a_newer_dictionary_is_named_not_garbled() -> None:
    with pytest.raises(ValueError, match="dictionary 200, which this floorgate does not know"):
        payloads.unpack(b"\x00\xc8" + b"frame")


async def test_the_buffer_stores_compressed_and_hands_out_the_original(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    rows = [
        EventRow(f"e{n}", "sample", "m1", "2026-01-01T00:00:00Z", sample_payload(n), ("a",))
        for n in range(1, 51)
    ]
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append(rows)
    finally:
        await buf.close()
    conn = sqlite3.connect(path)
    try:
        # Version 3 makes a floorgate from before compression refuse the file.
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 3
        stored = conn.execute("SELECT payload, size FROM events ORDER BY seq").fetchall()
        # e1 as a floorgate before compression wrote it, and left the file at version 2.
        conn.execute(
            "UPDATE events SET payload = ?, size = ? WHERE id = 'e1'", (rows[0].payload, 0)
        )
        # ... without what version 4 added (sample blocks): a file as version 2 left it.
        conn.execute("DROP INDEX events_blocks")
        conn.execute("ALTER TABLE events DROP COLUMN n")
        conn.execute("ALTER TABLE deliveries DROP COLUMN done")
        conn.execute("ALTER TABLE deliveries DROP COLUMN moved")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()
    assert all(blob[:1] == b"\x00" and len(blob) == size for blob, size in stored)
    assert sum(len(blob) for blob, _ in stored) * 5 < sum(len(r.payload) for r in rows) * 2
    # Opened again: migrated to 3 and 4; e1 read as it is, the others decompressed.
    buf = await SqliteBuffer.open(path)
    try:
        claimed = await buf.claim("a", 100)
        assert [c.payload for c in claimed] == [r.payload for r in rows]
        shown = await buf.show("e2")
        assert shown is not None and shown.payload == rows[1].payload
    finally:
        await buf.close()
