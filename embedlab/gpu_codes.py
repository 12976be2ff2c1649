"""Binary and int8 codes made where the vectors are (a GPU tensor, or a CPU one), before any copy.

A worker that keeps only codes copies 1/32 (binary) or 1/4 (int8) of the float32 bytes from the
device. The codes equal :mod:`embedlab.ops` bit for bit on the same vectors: the same float32
arithmetic (IEEE subtraction and division, floor, clip), the same bit order (most significant
first, zero padding), so a store can mix codes made on either side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedlab.config import CODE_KINDS
from embedlab.ops import INT8_LEVELS, int8_steps

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def quantize_binary(x):
    """Sign bits (1 where ``x > 0``) packed 8 per byte, most significant first.

    Args:
        x: ``(n, d)`` float torch tensor on any device.

    Returns:
        ``(n, ceil(d / 8))`` uint8 tensor on the same device; equal to ``ops.quantize_binary``.
    """
    import torch

    bits = x > 0
    pad = (-bits.shape[-1]) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.reshape(*bits.shape[:-1], -1, 8).to(torch.int32)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.int32, device=x.device)
    return (bits * weights).sum(-1).to(torch.uint8)


def quantize_int8(x, ranges):
    """Per-dimension int8 levels between ``ranges``, as ``ops.quantize_int8`` computes them.

    Args:
        x: ``(n, d)`` float torch tensor (fp16/bf16 are widened to float32 first, as numpy does).
        ranges: ``(2, d)`` lower and upper bounds (numpy or torch), from ``ops.calibrate_int8_ranges``.

    Returns:
        ``(n, d)`` int8 tensor on ``x``'s device.
    """
    import torch

    lo, width = int8_steps(ranges)  # on the host, as ops does: no reciprocal-product division
    starts = torch.from_numpy(lo).to(x.device)
    steps = torch.from_numpy(width).to(x.device)
    levels = torch.clamp(torch.floor((x.to(torch.float32) - starts) / steps), 0, INT8_LEVELS)
    return (levels - 128).to(torch.int8)


def codes_to_host(x, kinds: Sequence[str], ranges=None) -> dict[str, np.ndarray]:
    """The requested codes of ``x`` made on its device, then copied to numpy arrays.

    Args:
        x: ``(n, d)`` float torch tensor.
        kinds: any of ``CODE_KINDS``.
        ranges: ``(2, d)`` int8 ranges; required for ``"int8"``.
    """
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "binary":
            out[kind] = quantize_binary(x).cpu().numpy()
        elif kind == "int8":
            if ranges is None:
                raise ValueError("int8 codes need calibrated ranges (ops.calibrate_int8_ranges)")
            out[kind] = quantize_int8(x, ranges).cpu().numpy()
        else:
            raise ValueError(f"code kind must be one of {', '.join(CODE_KINDS)}; got {kind!r}")
    return out


def bytes_per_vector(dim: int, kind: str) -> int:
    """Bytes one vector of ``dim`` dimensions takes as ``kind`` (float32, float16, int8 or binary)."""
    sizes = {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": -(-dim // 8)}
    if kind not in sizes:
        raise ValueError(f"kind must be one of {', '.join(sizes)}; got {kind!r}")
    return sizes[kind]
