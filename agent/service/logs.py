"""One line per message with key=value context; no timestamps under journald (it adds them)."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable

from agent.common.secrets import secret_values


def running_under_journald() -> bool:
    # systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected to stderr.
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


REDACTED = "***"
# A secret at least this long is masked wherever it stands as a whole value (not inside
# a longer word). A shorter one may be an ordinary word ("wrong", "admin") that a
# message uses as a word: it is masked only where it stands as a value (see _masker).
WORD_LIKE_BELOW = 8
# The library loggers the agent quiets: each logs every retry, timeout or lost
# connection (pymodbus with a hex dump of the frame, asyncua with a traceback), and the
# agent reports those itself, one line per change with what it will do next.
LIBRARY_LOGGERS = (
    "pymodbus",
    "asyncua",
    "httpx",
    "httpcore",
    "paho",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


def _masker(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for every secret read so far, longest first.

    A long secret is masked as a whole token: not where it is only part of a longer run
    of letters and digits. A short one only where it stands as a value: quoted, after
    ``=``, or as a URL's password (``user:secret@``)."""
    alternatives = []
    for value in sorted(set(secrets), key=len, reverse=True):
        if not value:
            continue
        quoted = re.escape(value)
        if len(value) >= WORD_LIKE_BELOW:
            alternatives.append(rf"(?<![A-Za-z0-9]){quoted}(?![A-Za-z0-9])")
        else:
            alternatives.append(rf"(?<=')(?:{quoted})(?=')")
            alternatives.append(rf'(?<=")(?:{quoted})(?=")')
            alternatives.append(rf"(?<==)(?:{quoted})(?![A-Za-z0-9])")
            alternatives.append(rf"(?<=:)(?:{quoted})(?=@)")
    return re.compile("|".join(alternatives)) if alternatives else None


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    pattern = _masker(secrets)
    return text if pattern is None else pattern.sub(REDACTED, text)


class OneLineFormatter(logging.Formatter):
    """Keeps a traceback on one journal entry by indenting its lines, and masks every
    secret the agent has read (API keys, tokens, passwords) where it stands as a value."""

    def __init__(self, fmt: str, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt=datefmt)
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        secrets = secret_values()
        if secrets != self._secrets:  # secrets are read at start and on reload only
            self._secrets, self._pattern = secrets, _masker(secrets)
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return text.replace("\n", "\n    ")


def setup_logging(level: str = "info") -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not running_under_journald():
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Quiet unless the engineer asked for debug, where the libraries' own lines (frame
    # dumps, tracebacks) are what one wants to see.
    library_level = logging.DEBUG if level.lower() == "debug" else logging.CRITICAL
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
