"""Keep the C heap from holding on to memory the agent has stopped using (glibc only).

An industrial PC is small and shared, so the agent's resident size is part of the
product (issue 7: at most 100 MiB with 5,000 tags and a million-event backlog). Two
glibc behaviours would otherwise keep freed memory resident for the life of the process:

- glibc raises its mmap threshold every time a large mapped block is freed (up to
  32 MiB). After the first few, large short-lived buffers (a PublishResponse carrying
  5,000 notifications, the JSON document of a 2,000-event append, SQLite's scratch
  during the integrity check) come from the heap instead, and the heap does not shrink
  past the live block above them. ``fix_mmap_threshold`` pins the threshold, so such
  buffers are mapped and given back when freed.
- Free pages inside the heap stay resident until ``malloc_trim`` gives them back;
  ``release_free_heap`` calls it (a fraction of a millisecond; the agent does it on its
  statistics round).

Measured with the 5,000-tag agent (bench/memory_loaded_bench.py): about 4 MiB less
resident. Elsewhere than glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept from then on


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter itself is linked with
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl has neither function)
        return None
    return libc


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (see the module docstring); False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_heap() -> bool:
    """Give free heap pages back to the system; True when glibc released any."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
