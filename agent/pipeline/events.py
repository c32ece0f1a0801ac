"""Production events: CloudEvents 1.0 envelopes with typed data, validated before buffering.

Every event gets its id when it is created (a time-ordered UUIDv7) and keeps it through
every retry, so destinations can drop repeats by id.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.config.common import EventType
from agent.config.rules import CountKind, MachineStateValue, Severity
from buffer.blocks import SLOT_ID, SLOT_SEQUENCE, SLOT_TIME, SLOT_VALUE


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

_uuid_lock = threading.Lock()
_last_uuid_ms = 0
_uuid_counter = 0
_uuid_prefix = ""  # "tttttttt-tttt-7" of _last_uuid_ms
# Random bits come from a pool of os.urandom hex, refilled 512 ids at a time: one
# os.urandom call per id cost more than the rest of the id, because the syscall gives up
# the GIL and, with the buffer's SQLite thread busy, waits to get it back.
_RANDOM_POOL_BYTES = 4096
_random_hex = ""
_random_pos = 0
# The variant field (RFC 9562: binary 10) replaces the top two bits of the random part.
_VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562) with a 12-bit per-millisecond counter.

    Time-ordered ids keep SQLite's unique index appends cheap (random uuid4 keys make
    batch inserts ~5x slower). The stdlib gains uuid.uuid7 only in Python 3.14.
    """
    return uuid7_batch(1)[0]


def uuid7_batch(count: int) -> list[str]:
    """``count`` ids in creation order, for one lock and one clock read (the engine takes
    them a round at a time: once per event, uuid7() was a tenth of an event's CPU). The
    text form is assembled from cached pieces: the millisecond prefix changes once per
    ms, the random part is a slice of the pool."""
    global _last_uuid_ms, _uuid_counter, _uuid_prefix, _random_hex, _random_pos
    ids: list[str] = []
    with _uuid_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_uuid_ms:
            _last_uuid_ms, _uuid_counter, _uuid_prefix = now_ms, -1, _ms_prefix(now_ms)
        for _ in range(count):
            _uuid_counter += 1
            if _uuid_counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_uuid_ms += 1
                _uuid_counter = 0
                _uuid_prefix = _ms_prefix(_last_uuid_ms)
            if _random_pos >= len(_random_hex):
                _random_hex = os.urandom(_RANDOM_POOL_BYTES).hex()
                _random_pos = 0
            rand = _random_hex[_random_pos : _random_pos + 16]
            _random_pos += 16
            ids.append(
                f"{_uuid_prefix}{_uuid_counter:03x}-{_VARIANT_DIGIT[rand[0]]}{rand[1:4]}-{rand[4:]}"
            )
    return ids


def _ms_prefix(ms: int) -> str:
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}-7"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineStateData(_Data):
    machine: str
    state: MachineStateValue
    reason: str | None = None
    reason_code: int | None = None
    since: UtcDatetime = Field(description="When the machine entered this state.")
    previous_state: MachineStateValue | None = None
    previous_reason: str | None = None
    previous_since: UtcDatetime | None = None
    previous_duration_s: float | None = Field(default=None, ge=0)
    previous_event_id: str | None = Field(
        default=None,
        description="Id of the machine.state event that opened the previous state, so a "
        "destination can close the record it opened for it (e.g. an Odoo downtime).",
    )


class ProductionCountData(_Data):
    machine: str
    signal: str
    kind: CountKind
    quantity: int = Field(ge=0)
    window_start: UtcDatetime
    window_end: UtcDatetime
    counter_value: int | None = Field(
        default=None, description="The raw PLC counter after this window (for auditing)."
    )
    reset_detected: bool = False


class AlarmData(_Data):
    machine: str
    alarm: str
    signal: str
    active: bool
    value: float | bool | None
    limit: float | None = None
    severity: Severity


class SampleData(_Data):
    machine: str
    signal: str
    value: float | int | bool | str | None
    unit: str | None = None
    quality: Literal["good", "uncertain", "bad"]
    reason: str | None = Field(
        default=None,
        description="Why the value is bad or uncertain, in words (e.g. 'not a number "
        "(NaN)', 'no publish response for 47 s'); null for a good value.",
    )


EventData = MachineStateData | ProductionCountData | AlarmData | SampleData

DATA_FOR_TYPE: dict[EventType, type[_Data]] = {
    EventType.MACHINE_STATE: MachineStateData,
    EventType.PRODUCTION_COUNT: ProductionCountData,
    EventType.ALARM: AlarmData,
    EventType.SAMPLE: SampleData,
}


class Event(BaseModel):
    """A CloudEvents 1.0 envelope. Extension attribute names are lowercase alphanumerics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str = Field(description="ISA-95 path: /site/area/line/machine")
    type: EventType
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    sequence: str = Field(description="Per-agent sequence, zero-padded so it sorts as text.")
    agentid: str
    data: EventData

    @property
    def machine(self) -> str:
        return self.data.machine

    def to_json(self) -> bytes:
        # pydantic-core writes the compact JSON directly (same bytes as orjson over
        # model_dump(mode="json"), without building the intermediate dicts).
        return self.model_dump_json(exclude_none=True).encode()


def encode_event(
    *,
    id: str,
    source: str,
    type: EventType,
    time: datetime,
    sequence: str,
    agentid: str,
    data: EventData,
) -> bytes:
    """The bytes ``Event(...).to_json()`` gives, without building the envelope model;
    one event's worth of ``EnvelopeEncoder`` (the engine keeps an encoder instead)."""
    return EnvelopeEncoder(agentid).encode(
        id=id, source=source, type=type, time=time, sequence=sequence, data=data
    )


class EnvelopeEncoder:
    """CloudEvent envelopes of one agent, for the engine's hot path.

    ``data`` is a data model the rules built (validated when it was created) and the
    other fields are the engine's own, so building and re-validating the whole envelope
    model only to serialise it again would cost a third of an event's CPU. What repeats
    from event to event is cached: the envelope head of each (source, type), the agent
    id, and the time (the events of one poll share it). Ids and sequences are written
    without JSON escaping: the engine's are UUIDs and digits. Byte-equal to
    ``Event.to_json`` (tests/pipeline/test_event_encoding.py)."""

    def __init__(self, agentid: str) -> None:
        self._tail = b'","agentid":' + orjson.dumps(agentid) + b',"data":'
        self._heads: dict[tuple[str, EventType], bytes] = {}
        self._time: tuple[datetime, bytes] | None = None

    def encode(
        self,
        *,
        id: str,
        source: str,
        type: EventType,
        time: datetime,
        sequence: str,
        data: EventData,
    ) -> bytes:
        head = self._heads.get((source, type))
        if head is None:
            head = self._heads[(source, type)] = (
                b'","source":' + orjson.dumps(source) + b',"type":' + orjson.dumps(type.value)
            )
        cached = self._time
        if cached is None or cached[0] != time:
            cached = self._time = (time, orjson.dumps(_utc(time), option=orjson.OPT_UTC_Z))
        # One orjson call over the data model's fields: the models hold plain values
        # (str, numbers, bool, UTC datetimes, str enums), which orjson writes exactly as
        # pydantic does, at about half the cost of model_dump_json.
        try:
            body = orjson.dumps(
                {k: v for k, v in data.__dict__.items() if v is not None},
                option=orjson.OPT_UTC_Z,
            )
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: pydantic writes it
            body = data.model_dump_json(exclude_none=True).encode()
        return b"".join(
            (
                b'{"specversion":"1.0","id":"',
                id.encode(),
                head,
                b',"time":',
                cached[1],
                b',"datacontenttype":"application/json","sequence":"',
                sequence.encode(),
                self._tail,
                body,
                b"}",
            )
        )

    def sample_templates(
        self, source: str, machine: str, signal: str, unit: str | None
    ) -> tuple[bytes, bytes, bytes, bytes]:
        """A signal's sample events as sample block heads (buffer.blocks): the bytes
        ``encode`` gives, with slots for the id, time, sequence and a fragment of the
        data. Returns (the envelope up to the data, the same for every signal of the
        source; what follows it for a good reading in ``unit``, whose fragment is the
        value alone; what follows it for any other, whose fragment is what follows the
        machine and signal; the data up to them, for ``sample_fragment``)."""
        head = self._heads.get((source, EventType.SAMPLE))
        if head is None:
            head = self._heads[(source, EventType.SAMPLE)] = (
                b'","source":' + orjson.dumps(source) + b',"type":"sample"'
            )
        prefix = orjson.dumps({"machine": machine, "signal": signal})[:-1] + b","
        envelope = b"".join(
            (
                b'{"specversion":"1.0","id":"',
                SLOT_ID,
                head,
                b',"time":',
                SLOT_TIME,
                b',"datacontenttype":"application/json","sequence":"',
                SLOT_SEQUENCE,
                self._tail,
            )
        )
        unit_part = b',"unit":' + orjson.dumps(unit) if unit is not None else b""
        good = prefix + b'"value":' + SLOT_VALUE + unit_part + b',"quality":"good"}}'
        return envelope, good, prefix + SLOT_VALUE + b"}", prefix

    @staticmethod
    def sample_fragment(
        data: SampleData, prefix: bytes, unit: str | None
    ) -> tuple[bool, bytes] | None:
        """What fills a sample's slot: (True, the value) for a good reading in ``unit``
        (the good template), else (False, what of its data ``encode`` writes after
        ``prefix``). None when orjson cannot write it (an integer beyond 64 bits): the
        event is then stored as a row of its own."""
        try:
            if (
                data.quality == "good"
                and data.value is not None
                and data.reason is None
                and data.unit == unit
            ):
                # Copied: orjson's result for a small value keeps a 4 KiB buffer, and
                # a round's samples are kept until the hand-over (20 MB on 5,000 tags).
                return True, memoryview(orjson.dumps(data.value)).tobytes()
            body = orjson.dumps({k: v for k, v in data.__dict__.items() if v is not None})
        except orjson.JSONEncodeError:
            return None
        if not body.startswith(prefix):
            return None
        return False, body[len(prefix) :]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_sequence(seq: int) -> str:
    return f"{seq:020d}"
