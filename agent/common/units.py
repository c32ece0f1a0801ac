"""Durations and sizes written as strings with units ("500ms", "5m", "512MiB").

One parser for the whole configuration, so every key reads the same way and a bare
number (seconds? milliseconds?) is never guessed.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(value: object) -> float:
    """Return seconds for a duration like "250ms", "10s", "5m", "2h" or "7d"."""
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match and match.group(2).lower() in _DURATION_UNITS:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    raise ValueError(
        f"expected a duration with a unit such as '500ms', '10s', '5m', '2h' or '7d', got {value!r}"
    )


def parse_size(value: object) -> int:
    """Return bytes for a size like "512MiB", "1GiB", "100MB" or "4096B"."""
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(
        f"expected a size with a unit such as '512MiB', '1GiB' or '100MB', got {value!r}"
    )


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for printing configs back."""
    if seconds == 0:
        return "0s"
    for unit, factor in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def seconds_text(value: float) -> str:
    """Seconds in a message for a person, without the unit: whole from 10 on, else at most
    two significant digits ("0.25", "7.2", "2", "47"). Every message writes " s" after
    it, so health reasons, errors and log lines spell durations alike."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
"""Seconds, written in YAML as a string with a unit."""

Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size)]
"""Bytes, written in YAML as a string with a unit."""
