"""An exception in words for a person, in one format everywhere: "its message (Type)".

Many exceptions carry no message: httpx's ``ReadError('')`` after a connection reset,
a bare ``ConnectionResetError()`` from asyncio, pymodbus's timeouts. Shown as they are,
they make texts like ``connection lost: `` that tell an engineer nothing. ``describe``
then takes the first message along the cause chain, else a sentence known to be true of
that type (the caller's words first, then the common ones below).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

Words = Sequence[tuple[type[BaseException], str]]

# What the common library exceptions mean when they say nothing; most specific first.
COMMON_WORDS: Words = (
    (ConnectionResetError, "the other side reset the connection"),
    (ConnectionRefusedError, "the connection was refused: nothing listens there"),
    (ConnectionAbortedError, "the connection was aborted by this machine's network stack"),
    (BrokenPipeError, "the connection was closed by the other side"),
    (EOFError, "the other side closed the connection"),
    (TimeoutError, "no answer in time"),
    (ConnectionError, "the connection failed"),
    (OSError, "the operating system reported an error"),
)


def describe(exc: BaseException, when_empty: str | None = None, words: Words = ()) -> str:
    """``exc`` as "its message (Type)", never an empty text after a colon.

    Without a message of its own or along its causes: ``when_empty`` (a sentence the
    caller knows to be true here), else the first of ``words`` then ``COMMON_WORDS``
    that matches its type, else a plain statement that it gave no detail."""
    text = message_of(exc) or when_empty or _words_for(exc, words) or "failed without a message"
    return f"{text} ({type(exc).__name__})"


def message_of(exc: BaseException) -> str:
    """The first non-empty message along ``exc``'s cause chain, or ""."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if isinstance(current, OSError) and current.errno and not current.strerror:
            text = os.strerror(current.errno)  # OSError(104) prints as a bare "104"
        if text:
            return text
        current = current.__cause__ or current.__context__
    return ""


def _words_for(exc: BaseException, words: Words) -> str | None:
    return next((text for kind, text in (*words, *COMMON_WORDS) if isinstance(exc, kind)), None)
