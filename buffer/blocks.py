"""Sample blocks: the samples of one commit for one set of destinations, kept as one row.

Why: a row per sample costs the flash ~1 KB (its row, three index entries, a delivery
row and the counters, each written to the WAL and again by the checkpoint; see
docs/buffer.md, "What 2 GB a day would take"). A block is one events row (type
``sample``, ``n`` = its samples) with one delivery row per destination, whatever it
holds; a sample in it costs its columns, about 6 bytes compressed.

What the buffer knows of a block, without knowing what a CloudEvent is:

- **heads**: what the samples of one signal share, written once (rule state under
  ``HEAD_KEY`` + its number, committed with the first block that uses it, never
  changed): the event type, the ordering key (the machine) and a *template*, the event's
  bytes with four slots: its id, its time (a JSON string), its sequence and its variable
  part (a *fragment*: value, quality...);
- per sample: its head's number, its time in microseconds and its fragment.

Ids and seqs are derived, so each sample keeps both through every retry:

- the block's id is a UUIDv7 whose last 16 bits are 0; sample ``i`` has that id with
  ``i + 1`` in those bits (so a block holds at most ``MAX_SAMPLES``, and a sample's id
  names its block);
- the block's row takes the seq ``first + n - 1`` and leaves the ``n - 1`` below it
  unused: sample ``i`` has seq ``first + i``, so claims, acks and dead letters name a
  sample as they name an event;
- sample ``i``'s sequence (the slot) is the block's first sequence + ``i``.

Delivery state per destination is the delivery row's status (``delivered`` once every
sample is settled) plus two bitmaps: ``done`` (settled: delivered, or moved out) while
it is pending, and ``moved`` (dead-lettered: such a sample is copied into a row of its
own, with a dead delivery row for that destination, and is requeued, shown and purged
like any event). The counters count samples, not rows.

The stored form (zstd-compressed): a version byte, the first sequence, the base time
(µs: the earliest sample's), the count; then the columns: each sample's u32 head, its
time as an i64 µs step from the one before (the first: from the base time; the samples
of one poll share a time, so most steps are 0) and its u32 fragment length; then the
fragments end to end.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson
import zstandard

HEAD_KEY = "sample-head/"  # rule_state keys of the heads: HEAD_KEY + their number
MAX_SAMPLES = 0xFFFF  # per block: a sample's index + 1 fills the last 16 bits of its id
SLOT_ID, SLOT_TIME, SLOT_SEQUENCE, SLOT_VALUE = b"\x00I", b"\x00T", b"\x00S", b"\x00V"
VERSION = 1
_HEADER = struct.Struct("<BQqI")  # version, first sequence, base time (µs), count
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEVEL = 3
# What reading a block the file holds can raise: a head missing or unreadable, a block
# written by a newer floorgate, damaged compressed bytes.
UNREADABLE = (ValueError, zstandard.ZstdError)
DECODED_CACHED = 4  # decoded blocks kept per buffer (claims of a block come in batches)


class BlockSample(NamedTuple):
    head: int  # the head's number (HEAD_KEY + str(head) in rule state)
    time_us: int  # microseconds since the epoch, UTC
    fragment: bytes  # what fills SLOT_VALUE


class Head(NamedTuple):
    type: str
    key: str
    template: bytes
    # Another head whose template goes before this one's: what many heads share (a
    # sample's envelope, per source) is written once. None: the template is whole.
    base: int | None = None

    def to_text(self) -> str:
        found: dict[str, object] = {
            "type": self.type,
            "key": self.key,
            "template": self.template.decode("latin-1"),
        }
        if self.base is not None:
            found["base"] = self.base
        return orjson.dumps(found).decode()

    @classmethod
    def from_text(cls, text: str) -> Head:
        found = orjson.loads(text)
        base = found.get("base")
        return cls(
            sys.intern(found["type"]),  # shared by thousands of heads
            sys.intern(found["key"]),
            found["template"].encode("latin-1"),
            None if base is None else int(base),
        )


class Sample(NamedTuple):
    """One sample of a stored block, as the delivery side sees an event."""

    seq: int
    id: str
    type: str
    key: str
    time: str  # ISO 8601 (for replay's --since/--until)
    payload: bytes
    time_us: int  # the same, in microseconds since the epoch


def block_id(fresh_uuid: str) -> str:
    """A block's id from a fresh UUIDv7: its last 16 bits are for the samples' indexes."""
    return fresh_uuid[:-4] + "0000"


def sample_id(block: str, index: int) -> str:
    return f"{block[:-4]}{index + 1:04x}"


def parse_sample_id(ident: str) -> tuple[str, int] | None:
    """(block id, index) of what may be a sample's id; None when it cannot be one."""
    if len(ident) != 36 or ident.endswith("0000"):
        return None
    try:
        index = int(ident[-4:], 16) - 1
    except ValueError:
        return None
    return ident[:-4] + "0000", index


def iso(time_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=time_us)


def julian_day(at_us: int) -> float:
    """What SQLite's julianday() gives for this time's ISO text: whole milliseconds, the
    seconds rounded as SQLite does (as a double: ``(int)(s * 1000 + 0.5)``)."""
    minutes_ms = at_us // 60_000_000 * 60_000
    # As SQLite parses "SS.ffffff": the digits as a number, over 10 ** 6, plus the seconds.
    seconds = at_us // 1_000_000 % 60 + float(at_us % 1_000_000) / 1_000_000.0
    return (minutes_ms + int(seconds * 1000 + 0.5) + 210_866_760_000_000) / 86_400_000.0


def time_us(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Zstd(threading.local):
    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=False)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def encode(first_sequence: int, samples: Sequence[BlockSample]) -> tuple[bytes, int]:
    """The stored form of a block, and its base time (the earliest sample's, µs)."""
    if not 0 < len(samples) <= MAX_SAMPLES:
        raise ValueError(f"a block holds 1 to {MAX_SAMPLES} samples, not {len(samples)}")
    times = [s.time_us for s in samples]
    base = min(times)
    count = len(samples)
    columns = struct.pack(
        f"<{count}I{count}q{count}I",
        *(s.head for s in samples),
        *(s.time_us - before for s, before in zip(samples, [base, *times], strict=False)),
        *(len(s.fragment) for s in samples),
    )
    head = _HEADER.pack(VERSION, first_sequence, base, count)
    raw = b"".join((head, columns, *(s.fragment for s in samples)))
    return _zstd.compressor.compress(raw), base


@dataclass(frozen=True, slots=True)
class Decoded:
    first_sequence: int
    base_us: int
    heads: tuple[int, ...]
    offsets: tuple[int, ...]
    fragments: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.heads)


def decode(stored: bytes) -> Decoded:
    raw = _zstd.decompressor.decompress(stored)
    version, first, base, count = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise ValueError(f"sample block version {version}: written by a newer floorgate")
    columns = struct.unpack_from(f"<{count}I{count}q{count}I", raw, _HEADER.size)
    heads, steps, lengths = columns[:count], columns[count : 2 * count], columns[2 * count :]
    offsets, at_us = [], 0
    for step in steps:  # each time is stored as the step from the one before
        at_us += step
        offsets.append(at_us)
    fragments = []
    at = _HEADER.size + 16 * count
    for length in lengths:
        fragments.append(raw[at : at + length])
        at += length
    return Decoded(first, base, heads, tuple(offsets), tuple(fragments))


class Expander:
    """Blocks back into their samples, with the heads and the last blocks decoded cached
    (heads never change; a block is claimed in several batches). One per buffer; used
    from its reader and writer threads (the caches are plain dicts: each operation on
    them is atomic, and what one thread adds the other may add again)."""

    def __init__(self) -> None:
        self._heads: dict[int, Head] = {}
        self._decoded: OrderedDict[tuple[int, str], Decoded] = OrderedDict()
        self._lock = threading.Lock()

    def decoded(self, top: int, block: str, stored: bytes) -> Decoded:
        key = (top, block)
        with self._lock:
            found = self._decoded.get(key)
            if found is not None:
                self._decoded.move_to_end(key)
                return found
        found = decode(stored)
        with self._lock:
            self._decoded[key] = found
            while len(self._decoded) > DECODED_CACHED:
                self._decoded.popitem(last=False)
        return found

    def head(self, conn: sqlite3.Connection, number: int) -> Head:
        """The head as stored (its template without its base's)."""
        found = self._heads.get(number)
        if found is None:
            row = conn.execute(
                "SELECT value FROM rule_state WHERE key = ?", (f"{HEAD_KEY}{number}",)
            ).fetchone()
            if row is None:
                raise ValueError(f"sample block refers to head {number}, which the file lacks")
            found = self._heads[number] = Head.from_text(row[0])
        return found

    def template(self, conn: sqlite3.Connection, head: Head) -> bytes:
        """A head's whole template: its base's, then its own (one level of bases)."""
        if head.base is None:
            return head.template
        return self.head(conn, head.base).template + head.template

    def samples(
        self,
        conn: sqlite3.Connection,
        top: int,
        block: str,
        stored: bytes,
        indexes: Iterable[int],
    ) -> Iterator[Sample]:
        decoded = self.decoded(top, block, stored)
        first = top - len(decoded) + 1
        for i in indexes:
            head = self.head(conn, decoded.heads[i])
            at_us = decoded.base_us + decoded.offsets[i]
            when = iso(at_us)
            payload = (
                self.template(conn, head)
                .replace(SLOT_ID, sample_id(block, i).encode())
                .replace(SLOT_TIME, orjson.dumps(when, option=orjson.OPT_UTC_Z))
                .replace(SLOT_SEQUENCE, f"{decoded.first_sequence + i:020d}".encode())
                .replace(SLOT_VALUE, decoded.fragments[i])
            )
            yield Sample(
                first + i,
                sample_id(block, i),
                head.type,
                head.key,
                when.isoformat(),
                payload,
                at_us,
            )


# -- bitmaps -------------------------------------------------------------------------------


def bits(blob: bytes | None) -> int:
    return int.from_bytes(blob, "little") if blob else 0


def blob(value: int) -> bytes | None:
    return value.to_bytes((value.bit_length() + 7) // 8, "little") if value else None


def full(n: int) -> int:
    return (1 << n) - 1


def counts(n: int, status: str, done: bytes | None, moved: bytes | None) -> dict[str, int]:
    """A block's samples at one destination by the status they count under (moved ones
    count in rows of their own)."""
    gone = bits(moved).bit_count()
    if status == "delivered":
        return {"delivered": n - gone}
    settled = bits(done).bit_count()
    return {"pending": n - settled, "delivered": settled - gone}


# -- finding the blocks of seqs -------------------------------------------------------------


def blocks_in(conn: sqlite3.Connection, low: int, high: int) -> list[tuple[int, int]]:
    """(top seq, n) of the blocks whose seqs meet [low, high], in seq order."""
    return conn.execute(
        "SELECT seq, n FROM events INDEXED BY events_blocks WHERE n IS NOT NULL"
        " AND seq >= ? AND seq <= ? ORDER BY seq",
        (low, high + MAX_SAMPLES),
    ).fetchall()


def split(
    conn: sqlite3.Connection, seqs: Iterable[int]
) -> tuple[list[int], dict[int, tuple[int, list[int]]]]:
    """Seqs of rows of their own, and those of samples in blocks: {top seq: (n, indexes)}."""
    wanted = sorted(set(seqs))
    if not wanted:
        return [], {}
    found = [(top, n) for top, n in blocks_in(conn, wanted[0], wanted[-1]) if top - n < wanted[-1]]
    if not found:
        return wanted, {}
    tops = [top for top, _ in found]
    own: list[int] = []
    inside: dict[int, tuple[int, list[int]]] = {}
    for seq in wanted:
        at = bisect_left(tops, seq)
        if at < len(found):
            top, n = found[at]
            if top - n < seq:
                inside.setdefault(top, (n, []))[1].append(seq - (top - n + 1))
                continue
        own.append(seq)
    return own, inside


def locate(conn: sqlite3.Connection, seq: int) -> tuple[int, int] | None:
    """(top seq, index) of the block sample with this seq, or None."""
    for top, n in blocks_in(conn, seq, seq):
        if top - n < seq <= top:
            return top, seq - (top - n + 1)
    return None
