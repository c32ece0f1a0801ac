"""`floorgate buffer ...` run as a real subprocess against real buffer files, also while
another process holds the file open and writes to it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from buffer import EventRow, SqliteBuffer
from tests.buffer.test_crash import WRITER, check_counters
from tests.helpers import line_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def floorgate(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "buffer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(*args: str) -> Any:
    return json.loads(floorgate(*args, "--json").stdout)


def event(n: int, event_type: str = "production.count") -> EventRow:
    return EventRow(
        id=f"evt-{n:04d}",
        type=event_type,
        key=f"press{n % 2}",
        time=f"2025-06-01T08:{n:02d}:00+00:00",
        payload=json.dumps({"n": n}).encode(),
        destinations=("http", "mqtt"),
    )


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """10 events for http and mqtt: http has 0-5 delivered, 6 dead, 7-9 pending (7 failed
    once)."""
    path = tmp_path / "buffer.db"
    buf = await SqliteBuffer.open(path)
    try:
        await buf.append([event(n) for n in range(10)])
        claimed = await buf.claim("http", 10)
        await buf.ack("http", [e.seq for e in claimed[:6]])
        await buf.record_failure("http", [claimed[6].seq], "422")
        await buf.dead_letter("http", {claimed[6].seq: "422: unknown work center PRESS-9"})
        await buf.record_failure("http", [claimed[7].seq], "503")  # being retried
    finally:
        await buf.close()
    return path


def statuses(path: Path, destination: str) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(
            conn.execute(
                "SELECT e.id, d.status FROM deliveries AS d JOIN events AS e ON e.seq = d.seq"
                " WHERE d.destination = ?",
                (destination,),
            ).fetchall()
        )
    finally:
        conn.close()


@pytest.mark.slow
def test_stats_table_and_json(db: Path) -> None:
    table = floorgate("stats", "--db", str(db)).stdout
    assert "10 events" in table
    http_line = next(line for line in table.splitlines() if line.startswith("http"))
    assert http_line.split()[1:5] == ["3", "1", "1", "6"]  # pending, retrying, dead, delivered
    stats = as_json("stats", "--db", str(db))
    assert stats["events"] == 10 and stats["size_bytes"] > 0
    assert stats["destinations"]["http"]["pending"] == 3
    assert stats["destinations"]["http"]["retrying"] == 1
    assert stats["destinations"]["mqtt"]["pending"] == 10
    assert stats["destinations"]["mqtt"]["oldest_pending_age_s"] >= 0
    assert stats["dropped"] == []


@pytest.mark.slow
def test_stats_finds_the_buffer_through_the_config(db: Path, tmp_path: Path) -> None:
    config = line_config(tmp_path, 5020, "http://127.0.0.1:1/", 0)
    config["buffer"] = {"path": db.name, "max_size": "64MiB"}
    path = write_config(tmp_path / "config.yaml", config)
    stats = as_json("stats", "--config", str(path))
    assert stats["path"] == str(db) and stats["max_size"] == 64 * 1024**2
    assert "of 64.0 MiB" in floorgate("stats", "--config", str(path)).stdout


@pytest.mark.slow
def test_dead_letters_show_and_requeue_one(db: Path) -> None:
    [dead] = as_json("dead-letters", "--db", str(db))
    assert (dead["id"], dead["destination"], dead["type"], dead["key"]) == (
        "evt-0006",
        "http",
        "production.count",
        "press0",
    )
    assert dead["reason"] == "422: unknown work center PRESS-9" and dead["attempts"] == 1
    assert "unknown work center" in floorgate("dead-letters", "--db", str(db)).stdout
    assert as_json("dead-letters", "--db", str(db), "--destination", "mqtt") == []
    shown = as_json("show", "--db", str(db), "evt-0006")
    assert shown["payload"] == {"n": 6} and shown["time"] == "2025-06-01T08:06:00+00:00"
    assert {d["destination"]: d["status"] for d in shown["deliveries"]} == {
        "http": "dead",
        "mqtt": "pending",
    }
    assert "422: unknown work center" in floorgate("show", "--db", str(db), "evt-0006").stdout
    assert as_json("requeue", "--db", str(db), "evt-0006") == {"requeued": 1}
    assert statuses(db, "http")["evt-0006"] == "pending"
    assert as_json("requeue", "--db", str(db), "--all") == {"requeued": 0}


@pytest.mark.slow
def test_purge_dead_respects_older_than(db: Path) -> None:
    assert as_json("purge", "--db", str(db), "--dead", "--older-than", "1h") == {"purged": 0}
    assert as_json("purge", "--db", str(db), "--dead") == {"purged": 1}
    assert "evt-0006" not in statuses(db, "http")
    stats = as_json("stats", "--db", str(db))
    assert stats["destinations"]["http"]["dead"] == 0


@pytest.mark.slow
def test_replay_puts_delivered_events_back_with_their_ids(db: Path) -> None:
    replayed = as_json(
        "replay",
        "--db",
        str(db),
        "--destination",
        "http",
        "--since",
        "2025-06-01T08:02:00",
        "--until",
        "2025-06-01T08:05:00Z",
    )
    assert replayed["replayed"] == 3  # 2, 3, 4: until is exclusive; 6 is dead, not delivered
    now = statuses(db, "http")
    assert [i for i, s in sorted(now.items()) if s == "pending"] == [
        "evt-0002",
        "evt-0003",
        "evt-0004",
        "evt-0007",
        "evt-0008",
        "evt-0009",
    ]
    stats = as_json("stats", "--db", str(db))["destinations"]["http"]
    assert (stats["pending"], stats["delivered"]) == (6, 3)


async def test_replayed_events_are_claimed_first_with_the_same_ids(db: Path) -> None:
    floorgate("replay", "--db", str(db), "--destination", "http", "--since", "2025-06-01")
    buf = await SqliteBuffer.open(db)
    try:
        claimed = await buf.claim("http", 100)
    finally:
        await buf.close()
    assert [e.id for e in claimed] == [f"evt-{n:04d}" for n in (0, 1, 2, 3, 4, 5, 7, 8, 9)]
    assert json.loads(claimed[0].payload) == {"n": 0}


@pytest.mark.slow
def test_bad_arguments_and_missing_files_say_what_is_wrong(db: Path, tmp_path: Path) -> None:
    missing = floorgate("stats", "--db", str(tmp_path / "nope.db"), check=False)
    assert missing.returncode == 1 and "no buffer at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()  # never created
    unknown = floorgate(
        "replay", "--db", str(db), "--destination", "odoo", "--since", "1h", check=False
    )
    assert unknown.returncode == 1 and "known: http, mqtt" in unknown.stderr
    bad_time = floorgate(
        "replay", "--db", str(db), "--destination", "http", "--since", "yesterday", check=False
    )
    assert bad_time.returncode == 1 and "ISO 8601" in bad_time.stderr
    absent = floorgate("show", "--db", str(db), "evt-9999", check=False)
    assert absent.returncode == 1 and "no event evt-9999" in absent.stderr
    assert floorgate("requeue", "--db", str(db), check=False).returncode == 2  # ID or --all


def test_a_corrupt_file_is_reported_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(b"garbage " * 2048)
    done = floorgate("stats", "--db", str(path), check=False)
    assert done.returncode == 1 and "not a database" in done.stderr
    assert path.read_bytes() == b"garbage " * 2048
    assert [p.name for p in tmp_path.iterdir()] == ["buffer.db"]  # nothing moved aside


@pytest.mark.slow
def test_commands_work_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "0", "full"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        seen, replayed = [], 0
        for _ in range(5):
            stats = as_json("stats", "--db", str(path))
            seen.append(stats["events"])
            replayed += as_json(
                "replay", "--db", str(path), "--destination", "d", "--since", "2000-01-01"
            )["replayed"]
            time.sleep(0.05)  # let the writer move on between two looks
        assert seen == sorted(seen) and seen[-1] > seen[0]  # it kept writing meanwhile
        assert replayed > 0  # its acker had delivered events: they were put back
        assert writer.poll() is None
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        check_counters(conn, events)  # the CLI's writes kept every counter right
    finally:
        conn.close()


def test_running_as_another_user_than_the_files_owner_warns(db: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("only root can give the file to another user")
    os.chown(db, 4242, -1)
    done = floorgate("stats", "--db", str(db))
    assert "run this as the agent's user" in done.stderr
    assert "10 events" in done.stdout  # a warning, not a refusal
