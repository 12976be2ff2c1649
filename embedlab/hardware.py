"""What machine a measurement ran on: every results table and experiment record names it."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo; None where it cannot be read."""
    try:
        return int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return None


# CPU flags (as Linux names them in /proc/cpuinfo) that give a CPU native bf16 matrix arithmetic:
# AVX512-BF16's dot-product instructions, or AMX's bf16 tiles.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ... and native fp16 arithmetic (AVX512-FP16, AMX-FP16), and int8 dot products (VNNI, AMX-INT8).
NATIVE_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
NATIVE_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> frozenset[str]:
    """The feature flags of this machine's CPU from /proc/cpuinfo; empty where it cannot be read.

    Read at run time, on the machine that computes: a wheel built elsewhere says nothing about
    the CPU it lands on.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_any(flags: frozenset[str] | set[str], wanted: tuple[str, ...]) -> bool:
    return any(f in flags for f in wanted)


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver lists a GPU, without importing torch (which costs ~1.5 s)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()
    except OSError:
        return False
