"""What this process has written to the disk, from the kernel's own count.

Industrial PCs run on eMMC or SSDs rated for so many bytes written; the buffer is what the
agent writes (its file, the WAL, checkpoints; logs go to journald), so the process's count
is the buffer's cost. ``/proc/self/io``:

- ``write_bytes``: page cache the process dirtied on a block device, i.e. bytes that go to
  the disk (a page dirtied again before writeback is counted once; SQLite's fsyncs make
  most of them count each time);
- ``cancelled_write_bytes``: dirty pages the process truncated away before writeback
  (a WAL cut back to ``journal_size_limit``): they never reach the disk.

The figure is their difference, for the whole process (every thread, ended ones too).
It stays 0 where nothing reaches a block device (tmpfs) and is None where the file cannot
be read (not Linux, no task I/O accounting).
"""

from __future__ import annotations

from pathlib import Path

PROC_IO = Path("/proc/self/io")


def written_bytes(source: Path | None = None) -> int | None:
    """Bytes this process sent to the disk so far (write_bytes - cancelled_write_bytes),
    or None when the kernel does not say. ``source``: another file of that format."""
    try:
        text = (source or PROC_IO).read_text()
    except OSError:
        return None
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        if value.isdigit():
            found[name.strip()] = int(value)
    if "write_bytes" not in found:
        return None
    return found["write_bytes"] - found.get("cancelled_write_bytes", 0)
