"""Helper for test_crash: append numbered events until killed.

    python crash_writer.py DB START SYNCHRONOUS [MAX_SIZE]

Opens the buffer (prints ``ready`` or ``moved <path>`` if it had to move a corrupt file
aside), then three appender tasks take consecutive numbers from START on and append them
in small batches (id ``n:012d``, destination ``d``, state ``last`` = the batch's last
number). After each append returns (durably committed) it prints ``ack FIRST LAST`` and
flushes. A fourth task claims and acks delivered events meanwhile, so kills also land
in the middle of acks. Runs until killed.

With MAX_SIZE (bytes) the buffer is bounded, every odd number is a ``sample`` and
nothing is acked, so kills also land while the bound drops undelivered samples. Then one
appender alone takes the three batch sizes in turn and retries a refused append (only
counts left) before it takes the next numbers, as the engine, the agent's only appender,
does: appenders retrying on their own would commit out of order (each append is its own
transaction), and the check reads what is committed from the newest ``last``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from buffer import BufferStoreError, EventRow, SqliteBuffer

BOUNDED = len(sys.argv) > 4


def row(n: int) -> EventRow:
    kind = ("production.count", "sample")[n % 2] if BOUNDED else "t"
    return EventRow(f"{n:012d}", kind, f"m{n % 4}", "2025-01-01T00:00:00+00:00", b"x" * 64, ("d",))


async def appender(
    buffer: SqliteBuffer, numbers: itertools.count[int], sizes: tuple[int, ...]
) -> None:
    for size in itertools.cycle(sizes):
        batch = [next(numbers) for _ in range(size)]
        while True:
            try:
                await buffer.append([row(n) for n in batch], {"last": str(batch[-1])})
                break
            except BufferStoreError:  # bounded and only counts left: wait, as the engine does
                if not BOUNDED:
                    raise
                await asyncio.sleep(0.01)
        sys.stdout.write(f"ack {batch[0]} {batch[-1]}\n")
        sys.stdout.flush()


async def acker(buffer: SqliteBuffer) -> None:
    while True:
        claimed = await buffer.claim("d", 7)
        if claimed:
            await buffer.ack("d", [event.seq for event in claimed[:5]])
        await asyncio.sleep(0.001)


async def main(path: Path, start: int, synchronous: str, max_size: int | None) -> None:
    buffer = await SqliteBuffer.open(path, synchronous=synchronous, max_size=max_size)
    print(f"moved {buffer.corrupt_moved_to}" if buffer.corrupt_moved_to else "ready", flush=True)
    numbers = itertools.count(start)
    if max_size:  # no acks, so the bound has undelivered samples to drop, not history
        await appender(buffer, numbers, (1, 5, 13))
    else:
        appenders = (appender(buffer, numbers, (size,)) for size in (1, 5, 13))
        await asyncio.gather(*appenders, acker(buffer))


if __name__ == "__main__":
    bound = int(sys.argv[4]) if BOUNDED else None
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], bound))
