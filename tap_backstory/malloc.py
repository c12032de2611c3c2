"""glibc's allocator, tuned for a process that streams gigabytes through short-lived megabyte buffers.

Every body chunk a download thread receives, every chunk the reader reads back from its spool and every block of
RECORD lines is a fresh buffer of 100 KB to 1 MB, freed moments later. With glibc's defaults each thread gets an
arena of its own whose freed top is handed back to the OS and faulted in again for the next buffer: about 450,000
page faults per million activities (1.8 GB zeroed by the kernel), a second of system time on a 2-CPU machine
(docs/performance.md). One arena, buffers up to 8 MB kept off `mmap` and up to 64 MB of freed heap kept (not
trimmed) make those buffers reuse the same pages: about 15,000 faults, a second less system time. BATCH's 4 MB
chunks (up to 4 waiting) freed more than 16 MB at the heap's top at times: with a 16 MB threshold it was
trimmed and faulted in again (80,000-127,000 faults per 1M, a second of system time), with 64 MB 20,000. Keeping
freed memory does not raise the peak: those pages were already resident. Peak RSS stays flat with N (1M
activities ÷ 100k: 1.03-1.1; a 32 MB mmap threshold gave 1.12, the defaults 1.08).

Applied once, before any thread starts; a no-op where the C library is not glibc (musl, macOS) or where the
user set the same knobs through `MALLOC_*` environment variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 8 * 1024 * 1024), (M_TRIM_THRESHOLD, 64 * 1024 * 1024))
"""(mallopt parameter, value): glibc's own names and numbers (malloc.h)."""
ENV_VARS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune() -> bool:
    """Apply SETTINGS through glibc's `mallopt`; whether it was applied."""
    if any(name in os.environ for name in ENV_VARS):
        return False  # the user's own tuning wins
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
