"""The base of every config model: unknown keys are errors, never silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Names that end up in topics, file names and Odoo external ids.
NAME_PATTERN = r"^[A-Za-z0-9_\-]+$"


class StrictModel(BaseModel):
    # defer_build: a model's validator is built on first use, so importing a config module
    # costs little until the config is validated.
    model_config = ConfigDict(extra="forbid", defer_build=True)
