"""Secrets named in the config (a file, or a systemd credential) and reading them.

Here, in the dependency-free part of the code, so that drivers (an OPC UA password) and
the agent (API keys, tokens) share one schema and one reader — and every value read is
known to the log formatter, which masks it wherever it would appear.

systemd's LoadCredential= places credentials in $CREDENTIALS_DIRECTORY (readable only by
the service); outside systemd a credential name is an error that says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from agent.common.model import StrictModel


class Secret(StrictModel):
    """A secret is never written in the YAML: name a file or a systemd credential."""

    file: Path | None = Field(default=None, description="File holding the secret.")
    credential: str | None = Field(
        default=None,
        description="Name of a systemd credential (LoadCredential=), read from "
        "$CREDENTIALS_DIRECTORY.",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline(cls, data: object) -> object:
        if isinstance(data, str):
            raise ValueError(
                "secrets are never written in the YAML: use {file: /path/to/file} or "
                "{credential: NAME} (a systemd LoadCredential= name)"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.file is None) == (self.credential is None):
            raise ValueError("give exactly one of file or credential")
        return self

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"credential {self.credential}"


# Every secret value read so far: the log formatter masks them, so a library message
# that echoes a URL with a password or a header with a token never reaches the journal.
_read_values: set[str] = set()


def secret_values() -> frozenset[str]:
    return frozenset(_read_values)


class SecretError(Exception):
    """A secret could not be read; the message says which and why (never its value)."""


def secret_path(secret: Secret) -> Path:
    if secret.file is not None:
        return secret.file
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"credential {secret.credential!r} needs $CREDENTIALS_DIRECTORY "
            "(set by systemd's LoadCredential=); outside systemd use {file: PATH}"
        )
    assert secret.credential is not None
    return Path(directory) / secret.credential


def read_secret(secret: Secret) -> str:
    """Return the secret's text without the trailing newline editors add."""
    path = secret_path(secret)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read secret from {secret.describe()}: {exc.strerror}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise SecretError(f"secret from {secret.describe()} is empty")
    _read_values.add(value)
    return value
