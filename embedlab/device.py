"""The device probe: what torch knows of the device a measurement runs on.

With :mod:`embedlab.encoder` (and the tiny-model maker in :mod:`embedlab.testing`), the only
module that imports torch: the cluster, experiments and jobs ask here (CUDA present, thread
count, GPU name, bf16 support, synchronisation, peak memory).
``device`` is a torch device string: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; on the CPU the
CUDA calls do nothing.
"""

from __future__ import annotations

from typing import Any


def _torch_cuda(device: str) -> Any:
    """``torch.cuda`` when ``device`` is a CUDA device, else None."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def torch_version() -> str:
    import torch

    return torch.__version__


def torch_threads() -> int:
    """Threads torch computes with in this process."""
    import torch

    return torch.get_num_threads()


def gpu_name(device: str) -> str | None:
    """The GPU's name, or None on the CPU."""
    cuda = _torch_cuda(device)
    return None if cuda is None else cuda.get_device_name(device)


def bf16_supported(device: str) -> bool:
    """Whether ``device`` runs bf16: a CUDA device says; the CPU always can (slowly without AVX512-BF16)."""
    cuda = _torch_cuda(device)
    return True if cuda is None else cuda.is_bf16_supported()


def synchronize(device: str) -> None:
    """Wait for the work queued on ``device`` (a timer stops after it); nothing on the CPU."""
    cuda = _torch_cuda(device)
    if cuda is not None:
        cuda.synchronize(device)


def empty_cache(device: str) -> None:
    """Hand cached, unused GPU memory back to the driver; nothing on the CPU."""
    cuda = _torch_cuda(device)
    if cuda is not None:
        cuda.empty_cache()


def reset_peak_memory(device: str) -> None:
    """Start a new peak for :func:`peak_memory_mb`; nothing on the CPU."""
    cuda = _torch_cuda(device)
    if cuda is not None:
        cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: str) -> float | None:
    """CUDA's peak allocated MiB on ``device`` since the last reset; None on the CPU."""
    cuda = _torch_cuda(device)
    return None if cuda is None else cuda.max_memory_allocated(device) / 2**20
