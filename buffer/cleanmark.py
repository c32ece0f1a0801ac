"""The clean-close mark: lets a buffer that was closed properly open without waiting
for an integrity check.

``PRAGMA quick_check`` reads the whole file: a second per 700 MiB of backlog, which
was most of the agent's start. It finds damage that a crash, a power cut or a failing
disk left behind. After a clean close (every append committed, both connections closed,
the WAL checkpointed away) the buffer writes ``<db>.clean`` with the identity of the
file it closed; the next open takes the mark away before it writes anything and, if it
still matches, runs the check in the background instead (see SqliteBuffer). Any doubt
-- no mark, a WAL left behind, another size, mtime or inode -- means the check runs
before opening, as it always did.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


class CleanMark:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = Path(f"{db}.clean")

    def take(self) -> bool:
        """Remove the mark (durably); True when it described the file as it is now."""
        if not self.path.exists():
            return False
        recorded: object
        try:
            recorded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            recorded = None  # unreadable: not trusted, removed all the same
        self.path.unlink(missing_ok=True)
        _sync_dir(self.path.parent)
        if Path(f"{self.db}-wal").exists():
            return False  # closed without a checkpoint: not the file the mark describes
        return bool(recorded == self._identity())

    def write(self) -> None:
        identity = self._identity()
        if identity is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as out:
            json.dump(identity, out)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)
        _sync_dir(self.path.parent)

    def _identity(self) -> dict[str, int] | None:
        try:
            st = self.db.stat()
        except OSError:
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
