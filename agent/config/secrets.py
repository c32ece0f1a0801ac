"""Reading secrets named in the config: a file, or a systemd credential.

systemd's LoadCredential= places credentials in $CREDENTIALS_DIRECTORY (readable only by
the service); outside systemd a credential name is an error that says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.config.common import Secret

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
