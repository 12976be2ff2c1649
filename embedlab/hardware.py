"""What machine a measurement ran on: every results table and experiment record names it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


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


def machine_info(device: str | None = None, **extra: Any) -> dict[str, Any]:
    """CPU model, logical cores, memory and Python; with ``device``, the device probe's findings too.

    Args:
        device: ``None`` (no torch import: the machine alone), ``"auto"`` (CUDA when present)
            or the device a measurement used (``"cpu"``, ``"cuda:0"``).
        extra: more keys the measurement's record needs (e.g. ``faiss_threads``).
    """
    mem = memory_gib()
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                            "memory_gib": None if mem is None else round(mem, 1),
                            "python": platform.python_version()}
    if device is not None:
        info.update(device_info(device))
    return {**info, **extra}


def device_info(device: str = "auto") -> dict[str, Any]:
    """What :mod:`embedlab.device` finds of ``device``: torch's version and threads, the device,
    and the GPU's name on CUDA (imports torch, which takes a second or two)."""
    from embedlab.device import cuda_available, gpu_name, torch_threads, torch_version

    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    info: dict[str, Any] = {"torch": torch_version(), "threads": torch_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = gpu_name(device)
    return info


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
