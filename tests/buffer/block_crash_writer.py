"""Helper for test_block_crash: sample blocks appended, claimed in batches that cut
through them, acked (riding in the appends) and now and then dead-lettered, until killed.

    python block_crash_writer.py DB

Prints ``ready`` once open, then ``stored ID...`` (the sample ids of a block) after each
append returned, ``acked ID...`` after each ack returned and ``dead ID`` after each
dead-letter returned, each line flushed. Heads are numbered from those the file holds
(as the engine restores them), so every run's blocks expand right.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from buffer import SqliteBuffer, blocks
from tests.buffer.blockrows import BlockMaker


def say(*words: str) -> None:
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


async def appender(buffer: SqliteBuffer, maker: BlockMaker) -> None:
    while True:
        made = maker.block(37, ("d",), machines=("m1", "m2", "m3"))
        await buffer.append([made.row], made.state)
        say("stored", *made.ids)
        await asyncio.sleep(0.005)


async def acker(buffer: SqliteBuffer) -> None:
    turn = 0
    while True:
        claimed = await buffer.claim("d", 11)
        if not claimed:
            await asyncio.sleep(0.005)
            continue
        turn += 1
        if turn % 7 == 0:  # the destination refuses one for good
            await buffer.dead_letter("d", {claimed[0].seq: "HTTP 422"})
            say("dead", claimed[0].id)
            claimed = claimed[1:]
        acked = claimed[:8]  # the rest of the batch "not confirmed": claimed again
        await buffer.ack("d", [e.seq for e in acked])
        say("acked", *(e.id for e in acked))


async def main() -> None:
    buffer = await SqliteBuffer.open(Path(sys.argv[1]))
    buffer.ack_with_appends(0.05)
    maker = BlockMaker()
    state = await buffer.load_state()
    for key, text in state.items():
        if key.startswith(blocks.HEAD_KEY):
            maker.heads[text] = int(key.removeprefix(blocks.HEAD_KEY))
    say("ready")
    await asyncio.gather(appender(buffer, maker), acker(buffer))


asyncio.run(main())
