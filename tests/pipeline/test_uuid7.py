"""Event ids: RFC 9562 UUIDv7, unique and in creation order (the buffer relies on it)."""

from __future__ import annotations

import time
import uuid

import pytest

from agent.pipeline import events
from agent.pipeline.events import uuid7, uuid7_batch


def test_ids_are_rfc_9562_version_7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    text = uuid7()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical lowercase form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_sort_in_creation_order_across_pool_refills() -> None:
    ids = [uuid7() for _ in range(20_000)]  # ~40 refills of the random pool
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_more_ids_than_the_counter_holds_in_one_millisecond_stay_ordered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = (time.time_ns() // 1_000_000 + 10_000) * 1_000_000  # later than any id so far
    monkeypatch.setattr(events.time, "time_ns", lambda: frozen)
    # Put the generator's clock back afterwards, so later ids carry the real time.
    for name in ("_last_uuid_ms", "_uuid_counter", "_uuid_prefix"):
        monkeypatch.setattr(events, name, getattr(events, name))
    ids = [uuid7() for _ in range(3 * 4096)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    # The 12-bit counter runs out after 4,096 ids: the next ones borrow the next ms.
    assert stamps[0] == frozen // 1_000_000
    assert stamps[4095] == stamps[0] and stamps[4096] == stamps[0] + 1
    assert stamps[-1] == stamps[0] + 2


def test_batches_continue_the_order_of_single_ids() -> None:
    ids = [uuid7(), *uuid7_batch(700), uuid7(), *uuid7_batch(1), *uuid7_batch(0), uuid7()]
    assert len(ids) == 704 and len(set(ids)) == 704
    assert ids == sorted(ids)
