"""The agent's view of secrets: the schema and reader live in ``drivers.secrets`` so the
drivers share them (see there)."""

from __future__ import annotations

from drivers.secrets import Secret, SecretError, read_secret, secret_path, secret_values

__all__ = ["Secret", "SecretError", "read_secret", "secret_path", "secret_values"]
