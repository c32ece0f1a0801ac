"""A real writer process killed with SIGKILL at random moments, again and again, on the
same database file: nothing it was told is committed may be missing or doubled.

FLOORGATE_CRASH_ROUNDS raises the number of kills (default 30, about 10 s)."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = int(os.environ.get("FLOORGATE_CRASH_ROUNDS", "30"))


def check_database(path: Path, acknowledged: int) -> int:
    """Assert the invariants; return how many events are stored."""
    if not path.exists():
        assert acknowledged < 0
        return 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # killed while creating
            assert acknowledged < 0
            return 0
        numbers = [int(i) for (i,) in conn.execute("SELECT id FROM events ORDER BY seq")]
        # Each number once, in seq order, no hole: commits keep append order.
        assert numbers == list(range(len(numbers)))
        assert len(numbers) > acknowledged  # every acknowledged event is there
        state = dict(conn.execute("SELECT key, value FROM rule_state"))
        assert state.get("last") == (str(numbers[-1]) if numbers else None)  # same commit
        check_counters(conn, len(numbers))
        return len(numbers)
    finally:
        conn.close()


def check_counters(conn: sqlite3.Connection, events: int) -> None:
    counted = dict(
        ((dest, status), n)
        for dest, status, n in conn.execute(
            "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
        )
    )
    counted["", "events"] = events
    kept = {
        (dest, status): n
        for dest, status, n in conn.execute("SELECT destination, status, n FROM counters")
        if n and not status.startswith("written:")  # the disk writes, not rows
    }
    assert kept == {k: v for k, v in counted.items() if v}
    assert events == sum(n for (dest, _), n in counted.items() if dest == "d")


def run_and_kill(
    path: Path, start: int, synchronous: str, rng: random.Random, *bound: str
) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(start), synchronous, *bound],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if rng.random() < 0.15:  # sometimes while it starts, opens or migrates
        time.sleep(rng.uniform(0.0, 0.15))
    else:
        assert proc.stdout.readline() == "ready\n"  # never a corrupt file moved aside
        time.sleep(rng.uniform(0.0, 0.25))
    proc.kill()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -9
    assert "Error" not in err, err
    return out.splitlines(keepends=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(20250611)
    path = tmp_path / "crash.db"
    acknowledged = -1  # highest number the writer reported committed, over all rounds
    stored = 0
    for round_ in range(ROUNDS):
        lines = run_and_kill(path, acknowledged + 1, ("full", "normal")[round_ % 2], rng)
        for line in lines:
            if line.startswith("ack ") and line.endswith("\n"):  # a torn last line is no ack
                acknowledged = max(acknowledged, int(line.split()[2]))
        stored = check_database(path, acknowledged)
    assert stored > 100  # the kills landed while it was busy, not before it began


def check_bounded(path: Path, acknowledged: int) -> int:
    """With the size bound dropping samples: every acknowledged count is there once, every
    acknowledged sample is there or counted as dropped, the counters match the rows."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {int(i): t for i, t in conn.execute("SELECT id, type FROM events")}
        # Commits keep append order, so what is committed is the numbers below ``last``
        # + 1 (the state committed with the newest batch, also when its samples were refused).
        last = conn.execute("SELECT value FROM rule_state WHERE key = 'last'").fetchone()
        committed = int(last[0]) + 1 if last else 0
        assert committed > acknowledged
        counts = sorted(n for n, t in stored.items() if t == "production.count")
        assert counts == list(range(0, committed, 2))  # none lost, none doubled
        samples = sum(1 for t in stored.values() if t == "sample")
        dropped = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM counters WHERE status LIKE 'dropped:%:sample'"
        ).fetchone()[0]
        assert samples + dropped == committed // 2  # each sample stored or counted, once
        real = {
            (d, s): n
            for d, s, n in conn.execute(
                "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
            )
        }
        kept = {
            (d, s): n
            for d, s, n in conn.execute("SELECT destination, status, n FROM counters")
            if n and d
        }
        assert kept == real
        assert conn.execute("SELECT n FROM counters WHERE status = 'events'").fetchone()[0] == (
            len(stored)
        )
        return samples + len(counts)
    finally:
        conn.close()


def committed_last(path: Path) -> int:
    """The newest number committed (the state ``last``), -1 when none is."""
    if not path.exists():
        return -1
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT value FROM rule_state WHERE key = 'last'").fetchone()
    except sqlite3.OperationalError:  # killed before the tables were made
        found = None
    finally:
        conn.close()
    return int(found[0]) if found else -1


@pytest.mark.slow
def test_sigkill_while_the_size_bound_drops_samples(tmp_path: Path) -> None:
    rng = random.Random(20251123)
    path = tmp_path / "bounded.db"
    acknowledged = -1
    dropped_any = False
    for round_ in range(max(10, ROUNDS // 3)):
        # The next writer goes on after what is committed, as the engine does (it restores
        # its sequence from the state committed with its events): a kill between a commit
        # and its ack would otherwise have samples the bound refused sent and counted again.
        start = max(acknowledged, committed_last(path)) + 1
        lines = run_and_kill(path, start, "full", rng, str(256 * 1024))
        for line in lines:
            if line.startswith("ack ") and line.endswith("\n"):
                acknowledged = max(acknowledged, int(line.split()[2]))
        if acknowledged >= 0:
            check_bounded(path, acknowledged)
            conn = sqlite3.connect(path)
            dropped_any = dropped_any or bool(
                conn.execute(
                    "SELECT count(*) FROM counters WHERE status LIKE 'dropped:%'"
                ).fetchone()[0]
            )
            conn.close()
        del round_
    assert dropped_any  # the kills landed while the bound was dropping
