"""Load the config in a forked child process, for ``floorgate run``.

Why a child: parsing and validating a large config (5,000 tags make a 680 KB YAML file)
allocates about 30 MiB of short-lived objects (YAML nodes, dicts, validation scratch)
interleaved with the 6 MiB of models that live on. CPython's allocator gives an arena
back to the OS only once all of it is free, so in-process the agent would keep most of
that as fragmented heap for its whole life. A forked child parses and validates, and
hands back the validated models pickled through a pipe; its heap goes away with it, and
the agent never imports PyYAML.

It also shortens the start: while the child parses and validates, the parent imports
the protocol stacks the file names (asyncua alone takes 0.3 s) on the other core.

A reload (SIGHUP) loads in a subprocess too, for the same reason and so the event loop
keeps running meanwhile; the running agent has threads, so that one is a fresh
interpreter (``python -m agent.config.child PATH``) rather than a fork.

The child is a fork of this process (or a fresh interpreter on the same code), so it
reads the same file with the same environment; the pipe is private to the two of them.
Whatever goes wrong in the child other than a ConfigError (a crash, a kill, an
unpicklable result) makes the parent load in process instead, so the outcome is never
worse than without the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import re
import sys
import threading
from pathlib import Path
from typing import IO

from agent.config.loader import ConfigError, load_config
from agent.config.models import FloorgateConfig
from agent.registry import STACK_MODULES

# A source's or destination's `type:` (the only key of that name), outside comments.
# `input_type:`, `data_type:` and the like do not match: no word boundary before `type`.
_TYPE_KEY = re.compile(r"""^[^#\n]*?\btype:\s*["']?([a-z_0-9]+)""", re.MULTILINE)


class ChildLoad:
    """A config load running in a forked child; ``result()`` returns the config or
    raises the ConfigError that ``load_config`` would have raised."""

    def __init__(self, path: Path, pid: int | None, pipe: IO[bytes] | None) -> None:
        self.path = path
        self._pid = pid
        self._pipe = pipe

    @property
    def forked(self) -> bool:
        """Whether a child does the load (False: ``result()`` loads in this process)."""
        return self._pid is not None

    @classmethod
    def start(cls, path: Path) -> ChildLoad:
        # Forking is only safe while this is the only thread (a lock another thread held
        # at the fork would never be released in the child); otherwise load in process.
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return cls(path, None, None)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _child(path, write_end)
        os.close(write_end)
        return cls(path, pid, os.fdopen(read_end, "rb"))

    def import_stacks(self) -> list[str]:
        """Import the protocol stacks the file names, while the child validates it;
        returns their module names. A head start only, judged from the raw text: a wrong
        guess costs a little time, and a module that fails to import here fails again,
        and is reported, where the agent starts it."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []  # the load reports it
        names = sorted({STACK_MODULES[t] for t in _TYPE_KEY.findall(text) if t in STACK_MODULES})
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        return names

    def result(self) -> FloorgateConfig:
        found = _taken(self._collect())
        return found if found is not None else load_config(self.path)  # the child failed

    def _collect(self) -> bytes:
        if self._pid is None or self._pipe is None:
            return b""
        with self._pipe as pipe:
            data = pipe.read()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
        self._pid = self._pipe = None
        return data


async def load_in_subprocess(path: Path) -> FloorgateConfig:
    """``load_config`` in a fresh interpreter, for a reload in the running agent: the
    loop goes on serving while it parses, and the agent's heap keeps none of the
    parsing's garbage. Raises the ConfigError the load found; if the subprocess fails
    otherwise, loads in a thread here instead."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    found = _taken(out if proc.returncode == 0 else b"")
    return found if found is not None else await asyncio.to_thread(load_config, path)


def _outcome(path: Path) -> bytes:
    """What a child hands back, pickled: the config, or the ConfigError of its load."""
    try:
        found: object = load_config(path)
    except ConfigError as exc:
        found = exc
    return pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL)


def _taken(data: bytes) -> FloorgateConfig | None:
    """The config a child handed back; raises its ConfigError; None when it handed back
    nothing usable (it died, or the result is torn), so the caller loads by itself."""
    try:
        found = pickle.loads(data)  # from our own child, over a pipe only it holds
    except Exception:
        return None
    if isinstance(found, ConfigError):
        raise found
    return found if isinstance(found, FloorgateConfig) else None


def _child(path: Path, write_end: int) -> None:
    """Load and hand the outcome back through the pipe, then exit without running the
    parent's cleanup (atexit handlers, buffered output)."""
    code = 1
    try:
        data = _outcome(path)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
        code = 0
    except BaseException:
        pass
    finally:
        os._exit(code)


if __name__ == "__main__":  # python -m agent.config.child PATH: the outcome on stdout
    sys.stdout.buffer.write(_outcome(Path(sys.argv[1])))
