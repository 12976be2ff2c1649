"""glibc malloc settings under which CPU forward passes stop page-faulting their activations.

By default glibc gives a freed activation buffer straight back to the kernel: buffers above its
mmap threshold (128 KiB, raised only as far as the largest buffer freed so far) are unmapped, and
free memory at the top of the heap is trimmed. The next batch then faults the same memory in
again, a page at a time, with the kernel zeroing each page. A CPU encoder of all-MiniLM-L6-v2
took 3-5 million minor faults per 1,500 SciFact chunks that way; with the settings below it took
0.2 million and ran 5-8% faster (benchmarks/results/encode_cpu.md). The cost is that memory freed
by the process stays mapped, up to about the largest working set of a forward pass.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MIB = 1 << 20
# The largest mmap threshold glibc accepts on 64-bit is 32 MiB: every activation of a
# token-budget batch (2,048 tokens x 1,536 fp32 = 12 MiB) stays on the heap.
KEEP_FREED_MEMORY = {M_MMAP_THRESHOLD: 32 * MIB, M_TRIM_THRESHOLD: 1024 * MIB, M_TOP_PAD: 64 * MIB}


@functools.cache
def keep_freed_memory() -> bool:
    """Apply :data:`KEEP_FREED_MEMORY` to this process's malloc; False where it is not glibc's.

    Process-wide and once: later calls return the first call's answer.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False  # not glibc (musl's mallopt does nothing)
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in KEEP_FREED_MEMORY.items())
