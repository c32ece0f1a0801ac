"""Helper for test_crash: append numbered events until killed.

    python crash_writer.py DB START SYNCHRONOUS

Opens the buffer (prints ``ready`` or ``moved <path>`` if it had to move a corrupt file
aside), then three appender tasks take consecutive numbers from START on and append them
in small batches (id ``n:012d``, destination ``d``, state ``last`` = the batch's last
number). After each append returns (durably committed) it prints ``ack FIRST LAST`` and
flushes. A fourth task claims and acks delivered events meanwhile, so kills also land
in the middle of acks. Runs until killed.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from buffer import EventRow, SqliteBuffer


def row(n: int) -> EventRow:
    return EventRow(f"{n:012d}", "t", f"m{n % 4}", "2025-01-01T00:00:00+00:00", b"x" * 64, ("d",))


async def appender(buffer: SqliteBuffer, numbers: itertools.count[int], size: int) -> None:
    while True:
        batch = [next(numbers) for _ in range(size)]
        await buffer.append([row(n) for n in batch], {"last": str(batch[-1])})
        sys.stdout.write(f"ack {batch[0]} {batch[-1]}\n")
        sys.stdout.flush()


async def acker(buffer: SqliteBuffer) -> None:
    while True:
        claimed = await buffer.claim("d", 7)
        if claimed:
            await buffer.ack("d", [event.seq for event in claimed[:5]])
        await asyncio.sleep(0.001)


async def main(path: Path, start: int, synchronous: str) -> None:
    buffer = await SqliteBuffer.open(path, synchronous=synchronous, commit_window=0.002)
    print(f"moved {buffer.corrupt_moved_to}" if buffer.corrupt_moved_to else "ready", flush=True)
    numbers = itertools.count(start)
    await asyncio.gather(
        *(appender(buffer, numbers, size) for size in (1, 5, 13)),
        acker(buffer),
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
