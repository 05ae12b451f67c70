"""The C allocator's settings for training on the CPU: keep freed memory for the next step instead of handing it
back to the system.

glibc's defaults return freed memory at the top of the heap beyond 128 KiB, and serve blocks above a threshold it
moves at run time with fresh `mmap` pages; a training or evaluation step frees and re-allocates the same tensors
every batch, so the process spends much of its time in the kernel zeroing pages it has just given back. Measured
on this project's cpu profile (2-core AMD EPYC, one lifelong cell: 10 evaluations a task on 2,000 test images),
97 s wall of which 57 s in the kernel, against 58 s and 1.3 s with the settings below (a distillation cell on the
different-family pair: 90 s against 74 s); records are bit for bit the same, as the allocator does no arithmetic.
The settings match what glibc's own `MALLOC_*_` environment variables would set, so a user who has set one of
them, or preloads another allocator, is left alone.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters (malloc.h) and the values: blocks up to 32 MiB (glibc's largest threshold on 64-bit) come
# from the heap, which grows 256 MiB at a time and is trimmed only above 1 GiB free.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 2**30, M_TOP_PAD: 256 * 2**20}
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")

_state: dict[str, str] = {}


def keep_freed_memory() -> str:
    """Apply the settings once per process; returns what the allocator is now: "glibc-tuned" (applied), "user"
    (the environment configures it) or "default" (not glibc, or glibc refused a value)."""
    if "allocator" not in _state:
        _state["allocator"] = _apply()
    return _state["allocator"]


def allocator() -> str:
    """What `keep_freed_memory` made of the allocator in this process ("default" if it was not called), which
    records keep beside their timings."""
    return _state.get("allocator", "default")


def _apply() -> str:
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return "user"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return "default"
    applied = [mallopt(param, value) == 1 for param, value in SETTINGS.items()]
    return "glibc-tuned" if all(applied) else "default"
