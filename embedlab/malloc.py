"""glibc malloc settings under which CPU forward passes stop page-faulting their activations.

By default glibc gives a freed activation buffer straight back to the kernel: buffers above its
mmap threshold (128 KiB, raised only as far as the largest buffer freed so far) are unmapped, and
free memory at the top of the heap is trimmed. The next batch then faults the same memory in
again, a page at a time, with the kernel zeroing each page. A CPU encoder of all-MiniLM-L6-v2
took 2.4 million minor faults over 1,000 SciFact chunks that way; under the settings below, 29
thousand, and it ran 1.11x as fast at the same peak RSS (benchmarks/results/malloc_cpu.md).

The settings hold for the whole process once applied, and cannot be undone: buffers up to
32 MiB come from the heap, and freed memory stays mapped (up to 1 GiB of it at the heap's top),
so the process's resident size stays near its peak instead of falling back after each batch.
``EncodeConfig(keep_freed_memory=False)`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MIB = 1 << 20
# 32 MiB is the largest mmap threshold glibc accepts on 64-bit; every activation of a CPU
# token-budget batch (2,048 tokens x 1,536 fp32 = 12 MiB at most) stays below it.
KEEP_FREED_MEMORY = {M_MMAP_THRESHOLD: 32 * MIB, M_TRIM_THRESHOLD: 1024 * MIB, M_TOP_PAD: 64 * MIB}


@functools.cache
def keep_freed_memory() -> bool:
    """Apply :data:`KEEP_FREED_MEMORY` to this process's malloc, once.

    Returns:
        True when glibc accepted every setting; False on other C libraries (musl's mallopt does
        nothing, macOS has none) or if glibc refused one (the others stay applied).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library the interpreter itself runs on
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    accepted = [mallopt(param, value) == 1 for param, value in KEEP_FREED_MEMORY.items()]
    return all(accepted)
