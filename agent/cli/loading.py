"""What every command that reads config.yaml shares: where it is by default, and loading
it or exiting 78 with the message (file, line, key) and no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config.loader import EX_CONFIG, ConfigError, LoadedConfig, load_expanded
from agent.config.models import FloorgateConfig

DEFAULT_CONFIG = Path("/etc/floorgate/config.yaml")


def load_or_exit(path: Path) -> FloorgateConfig:
    return load_expanded_or_exit(path).config


def load_expanded_or_exit(path: Path) -> LoadedConfig:
    """load_or_exit, with the expansion of the templates (for check-config)."""
    try:
        return load_expanded(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
