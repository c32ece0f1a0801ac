"""After a clean close the buffer opens without the blocking integrity check and checks
in the background; after a crash, a leftover WAL or a changed file it checks first, as
before. Real files, real damage."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from buffer import EventRow, SqliteBuffer
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def rows(count: int) -> list[EventRow]:
    return [
        EventRow(f"{n:08d}", "sample", "m1", "2026-01-01T00:00:00Z", b"p" * 200, ("a",))
        for n in range(count)
    ]


def mark(path: Path) -> Path:
    return Path(f"{path}.clean")


def present(path: Path) -> bool:
    return path.exists()


async def test_a_clean_close_leaves_a_mark_that_the_next_open_takes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.append(rows(10))
    assert not present(mark(path))  # never while open: a crash leaves none
    await buf.close()
    assert present(mark(path)) and not present(Path(f"{path}-wal"))
    buf = await SqliteBuffer.open(path)
    try:
        assert not present(mark(path))
        assert buf._check_task is not None  # the check runs in the background
        await buf._check_task
        assert buf.integrity_problem is None
        assert len(await buf.claim("a", 100)) == 10
    finally:
        await buf.close()


async def test_damage_after_a_clean_close_is_found_in_the_background_then_moved_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.append(rows(2000))
    await buf.close()
    # Bit rot: the same size and mtime, so the mark still matches.
    before = path.stat()
    with path.open("r+b") as db:
        db.seek(8192)
        db.write(b"\xff" * 8192)  # pages 3 and 4; the header stays valid
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    buf = await SqliteBuffer.open(path)
    try:
        assert buf.corrupt_moved_to is None  # opened at once
        assert buf._check_task is not None
        await buf._check_task
        assert buf.integrity_problem is not None
    finally:
        await buf.close()
    assert not present(mark(path))  # so the next start checks before opening
    buf = await SqliteBuffer.open(path)
    try:
        assert buf.corrupt_moved_to is not None
        assert (await buf.stats()).events == 0
    finally:
        await buf.close()


async def test_a_killed_writer_leaves_no_mark_and_the_next_open_checks_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.close()  # a clean close first: the mark is there
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "buffer" / "crash_writer.py"),
        str(path),
        "5",
        "full",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
        await wait_until(lambda: present(Path(f"{path}-wal")), 30, "writes")
    finally:
        proc.kill()  # SIGKILL
        await proc.wait()
    assert not present(mark(path))
    buf = await SqliteBuffer.open(path)
    try:
        assert buf._check_task is None  # checked before opening
        assert buf.corrupt_moved_to is None
    finally:
        await buf.close()


async def test_a_mark_that_does_not_match_the_file_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = await SqliteBuffer.open(path)
    await buf.append(rows(5))
    await buf.close()
    mark(path).write_text('{"size": 1, "mtime_ns": 2, "inode": 3}')
    buf = await SqliteBuffer.open(path)
    try:
        assert buf._check_task is None and not present(mark(path))
    finally:
        await buf.close()
