"""One line per message with key=value context; no timestamps under journald (it adds them)."""

from __future__ import annotations

import logging
import os
import sys

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


class OneLineFormatter(logging.Formatter):
    """Keeps a traceback on one journal entry by indenting its lines, and masks every
    secret the agent has read (API keys, tokens, passwords) wherever it appears."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for value in secret_values():
            text = text.replace(value, REDACTED)
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
    # Libraries log every retry at INFO/WARNING; the agent reports state changes itself.
    for noisy in ("pymodbus", "asyncua", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
