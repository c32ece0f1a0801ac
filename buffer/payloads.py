"""Payloads as the buffer keeps them on disk: compressed one by one with Zstandard and a
dictionary of what every CloudEvent envelope repeats.

Why: a delivered event costs the flash its row about twice (the WAL frame, then the
checkpoint; docs/buffer.md), and most of a row is the payload. An event's JSON is ~330
bytes of which ~250 are field names, the envelope's constant parts and the machine's
path; against the dictionary a sample keeps ~75 bytes. Each payload is compressed on its
own so that a claim, a requeue or a prune touches one row as before (a block of many
would need its own bookkeeping for partial delivery).

Why Zstandard (the ``zstandard`` package) and not the standard library's zlib: with a
preset dictionary zlib gave 62 bytes but cost 12 µs per payload (its stream state is
allocated per call); zstandard reuses one compressor: 4 µs for 75 bytes, and 1 µs to
decompress, inside the writer and reader threads (it releases the GIL).

The stored form, told apart by the first byte:

- ``{`` or anything but NUL: the payload as it is (every row written before this module
  existed, and a payload compression would not make smaller);
- ``\\x00\\x00`` + the payload: stored as it is, escaped because it begins with NUL;
- ``\\x00`` + a dictionary version (1..255) + a Zstandard frame made with that
  dictionary.

A dictionary is never changed once released (tests/buffer/test_payloads.py holds its
hash): rows compressed with it must decompress after an upgrade. A better one gets the
next version number, and the old ones stay here.
"""

from __future__ import annotations

import threading

import zstandard

ESCAPE = b"\x00"
RAW = b"\x00"  # after ESCAPE: the payload follows as it is
LEVEL = 3  # zstd's default; level 1 saves no measurable time on 300-byte inputs

# One representative envelope of each event type, most frequent last (zstd reaches the
# end of a raw dictionary with the shortest offsets).
DICTIONARY_V1 = (
    b'{"specversion":"1.0","id":"01a23621-e8de-7000-862c-22ffcd59413c","source":"/plant/'
    b'area/line1/machine","type":"alarm","time":"2026-12-02T09:42:01.665716Z","datacont'
    b'enttype":"application/json","sequence":"00000000000000000001","agentid":"gateway",'
    b'"data":{"machine":"machine","alarm":"high","signal":"machine.temperature","active":'
    b'true,"value":81.5,"limit":80.0,"severity":"warning"}}'
    b'{"specversion":"1.0","id":"01a23621-e8de-7000-862c-22ffcd59413c","source":"/plant/'
    b'area/line1/machine","type":"machine.state","time":"2026-12-02T09:42:01.665716Z","da'
    b'tacontenttype":"application/json","sequence":"00000000000000000001","agentid":"gat'
    b'eway","data":{"machine":"machine","state":"stopped","reason":"material_shortage","r'
    b'eason_code":3,"since":"2026-12-02T09:42:01.665716Z","previous_state":"running","pre'
    b'vious_since":"2026-12-02T09:42:01.665716Z","previous_duration_s":12.5,"previous_eve'
    b'nt_id":"01a23621-e8de-7000-862c-22ffcd59413c"}}'
    b'{"specversion":"1.0","id":"01a23622-0fce-7000-87ee-0b8c2c53c7a6","source":"/plant/'
    b'area/line1/machine","type":"production.count","time":"2026-12-02T09:42:11.662540Z",'
    b'"datacontenttype":"application/json","sequence":"00000000000000000006","agentid":"g'
    b'ateway","data":{"machine":"machine","signal":"machine.good","kind":"good","quantity'
    b'":23,"window_start":"2026-12-02T09:42:01.531203Z","window_end":"2026-12-02T09:42:11.'
    b'662540Z","counter_value":65029,"reset_detected":false}}'
    b'{"specversion":"1.0","id":"01a23622-0fce-7000-87ee-0b8c2c53c7a6","source":"/plant/'
    b'area/line1/machine","type":"sample","time":"2026-12-02T09:42:11.662540Z","datacont'
    b'enttype":"application/json","sequence":"00000000000000000006","agentid":"gateway","'
    b'data":{"machine":"machine","signal":"machine.temperature","value":73.4,"unit":"degC'
    b'","quality":"good"}}'
)
DICTIONARIES = {1: DICTIONARY_V1}
CURRENT = 1


class _Codecs(threading.local):
    """A compressor and decompressors per thread: zstandard's objects are not to be shared
    between threads, and the buffer's writer and reader each run in their own."""

    def __init__(self) -> None:
        data = zstandard.ZstdCompressionDict(
            DICTIONARIES[CURRENT], dict_type=zstandard.DICT_TYPE_RAWCONTENT
        )
        self.compressor = zstandard.ZstdCompressor(
            level=LEVEL,
            dict_data=data,
            write_checksum=False,  # SQLite's pages are what guards the bytes
            write_dict_id=False,  # the version byte names the dictionary
            write_content_size=True,
        )
        self.decompressors: dict[int, zstandard.ZstdDecompressor] = {}

    def decompressor(self, version: int) -> zstandard.ZstdDecompressor:
        found = self.decompressors.get(version)
        if found is None:
            raw = DICTIONARIES.get(version)
            if raw is None:
                raise ValueError(
                    f"payload compressed with dictionary {version}, which this floorgate "
                    f"does not know (it knows {sorted(DICTIONARIES)}): written by a newer one"
                )
            data = zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            found = self.decompressors[version] = zstandard.ZstdDecompressor(dict_data=data)
        return found


_codecs = _Codecs()


def pack(payload: bytes) -> bytes:
    """The payload as stored: compressed when that makes it smaller."""
    compressed = _codecs.compressor.compress(payload)
    if len(compressed) + 2 < len(payload):
        return ESCAPE + bytes((CURRENT,)) + compressed
    if payload[:1] == ESCAPE:
        return ESCAPE + RAW + payload
    return payload


def unpack(stored: bytes) -> bytes:
    """The payload as it was appended, from what ``pack`` stored (or an older row)."""
    if stored[:1] != ESCAPE or len(stored) < 2:
        return stored
    version = stored[1]
    if version == RAW[0]:
        return stored[2:]
    return _codecs.decompressor(version).decompress(stored[2:])
