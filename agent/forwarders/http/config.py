"""The YAML schema of an HTTP middleware destination. No httpx import here."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from agent.common.units import Duration
from agent.config.common import DestinationCommon, Secret


class HttpAuth(enum.StrEnum):
    NONE = "none"
    BEARER = "bearer"
    HMAC = "hmac"


class HttpDestinationConfig(DestinationCommon):
    """HTTP middleware: batches of CloudEvents in one POST."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="Endpoint receiving the POSTs.")
    auth: HttpAuth = Field(default=HttpAuth.NONE, description="none | bearer | hmac.")
    token: Secret | None = Field(
        default=None, description="Bearer token or HMAC key (auth bearer or hmac)."
    )
    timeout: Duration = Field(default=30.0, gt=0, description="Whole-request timeout.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")

    def target(self) -> str:
        return f"POST {self.url} (auth {self.auth.value})"

    @model_validator(mode="after")
    def _token_when_auth(self) -> Self:
        if self.auth is not HttpAuth.NONE and self.token is None:
            raise ValueError(f"auth {self.auth.value} needs token: {{file: ...}}")
        return self
