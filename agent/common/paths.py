"""Where the agent keeps its state: the buffer, OPC UA certificates, forwarder files."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """systemd sets STATE_DIRECTORY from StateDirectory=; outside systemd the FHS place."""
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/floorgate").split(":")[0])
