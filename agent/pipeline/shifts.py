"""Shifts: when the current one began, for "parts this shift" on the status page.

A plant's shifts are given as the times of day they start (``agent.shifts``, e.g.
``["06:00", "14:00", "22:00"]``; default ``["00:00"]``, one shift a day) in the plant's
time zone (``agent.timezone``, an IANA name; default the machine's own). The current
shift began at the latest of those times that is not after now, today or yesterday, read
on the local calendar: across a daylight-saving change a shift is an hour shorter or
longer, as it is on the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo


class ShiftCalendar:
    def __init__(self, starts: Sequence[time], zone: str | None = None) -> None:
        if not starts:
            raise ValueError("a shift calendar needs at least one start time")
        self.starts = sorted(starts)
        self.zone: tzinfo | None = ZoneInfo(zone) if zone else None

    def _local(self, day: datetime, at: time) -> datetime:
        naive = datetime.combine(day.date(), at)
        if self.zone is None:
            return naive.astimezone()  # the machine's local time, with its DST on that day
        return naive.replace(tzinfo=self.zone)

    def start_of(self, when: datetime) -> datetime:
        """When the shift that ``when`` (timezone-aware) falls in began, in UTC (Python
        compares two times of one zone by the wall clock, blind to a DST change)."""
        local = when.astimezone(self.zone) if self.zone is not None else when.astimezone()
        for day in (local, local - timedelta(days=1)):
            for at in reversed(self.starts):
                start = self._local(day, at).astimezone(UTC)
                if start <= when:
                    return start
        raise AssertionError("unreachable: yesterday's last start is before now")
