"""Odoo exceptions as the stand-in raises them: the class path Odoo sends as
``error.data.name`` (JSON-RPC) or ``name`` (JSON-2), and the message."""

from __future__ import annotations


class OdooError(Exception):
    """An Odoo exception as the server names it (``odoo.exceptions.UserError``, ...)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def user_error(message: str) -> OdooError:
    return OdooError("odoo.exceptions.UserError", message)


def value_error(message: str) -> OdooError:
    return OdooError("builtins.ValueError", message)
