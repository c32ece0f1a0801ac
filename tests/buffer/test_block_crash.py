"""SIGKILL at random moments while sample blocks are appended, claimed in batches that
cut through them, acked in the appends' transactions and dead-lettered: what an append
returned is there, each sample exactly once (waiting, delivered or dead), what an ack or
dead-letter returned stays so, and the counters match a sample-by-sample recount."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from buffer import blocks, payloads
from tests.buffer.blockrows import kept_counts, real_counts

WRITER = Path(__file__).with_name("block_crash_writer.py")
ROUNDS = 12


def run_and_kill(path: Path, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(rng.uniform(0.05, 0.4))
    proc.kill()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -9
    assert "Error" not in err, err
    return [line for line in out.splitlines(keepends=True) if line.endswith("\n")]


def sample_states(path: Path) -> dict[str, str]:
    """Each sample id in the file -> pending, delivered or dead (destination d)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert kept_counts(conn) == real_counts(conn)
        found: dict[str, str] = {}
        for event_id, n, status, done, moved in conn.execute(
            "SELECT e.id, e.n, d.status, d.done, d.moved FROM events AS e"
            " JOIN deliveries AS d ON d.seq = e.seq WHERE e.n IS NOT NULL"
        ):
            for i in range(n):
                if blocks.bits(moved) >> i & 1:
                    continue  # in its own row
                settled = status == "delivered" or blocks.bits(done) >> i & 1
                found[blocks.sample_id(event_id, i)] = "delivered" if settled else "pending"
        for event_id, status in conn.execute(
            "SELECT e.id, d.status FROM events AS e JOIN deliveries AS d ON d.seq = e.seq"
            " WHERE e.n IS NULL"
        ):
            assert event_id not in found  # never in its block and in a row of its own
            found[event_id] = status
        return found
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_while_blocks_are_half_delivered(tmp_path: Path) -> None:
    rng = random.Random(20261202)
    path = tmp_path / "blocks.db"
    stored: set[str] = set()
    acked: set[str] = set()
    dead: set[str] = set()
    for _ in range(ROUNDS):
        for line in run_and_kill(path, rng):
            word, *ids = line.split()
            {"stored": stored, "acked": acked, "dead": dead}[word].update(ids)
        states = sample_states(path)  # (retention keeps every delivered block: no pruning)
        assert stored <= states.keys()  # every stored sample is there, once
        assert all(states[i] == "delivered" for i in acked)
        assert all(states[i] == "dead" for i in dead)
    assert len(stored) > 1000 and len(acked) > 300 and dead  # the kills landed mid-work
    assert any(s == "pending" for s in sample_states(path).values())
    # A sample refused for good went out of its block into a row with the same id, type,
    # key and bytes: what the claims would have sent.
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT id, key, payload FROM events WHERE n IS NULL AND type = 'sample' LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    event = orjson.loads(payloads.unpack(row[2]))
    assert (event["id"], event["data"]["machine"]) == (row[0], row[1])
