"""Vector transforms that make embeddings cheaper: numpy in, numpy out, no I/O, torch or Dask.

Corpus and queries must go through the same transform: the same truncation dimension, the
same int8 ``ranges`` (calibrated once on the corpus and stored with the index) and the same
binarization. int8 and binary codes match ``sentence_transformers.quantize_embeddings``
(precisions ``"int8"`` and ``"ubinary"``).
"""

from __future__ import annotations

import numpy as np

INT8_LEVELS = 255


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero.

    Args:
        x: ``(n, d)`` float array.

    Returns:
        ``(n, d)`` float32.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)


def truncate(x: np.ndarray, dim: int, *, renormalize: bool = True) -> np.ndarray:
    """Matryoshka truncation: the first ``dim`` components, renormalised to unit length.

    Example:
        >>> truncate(np.ones((2, 384), np.float32), 64).shape
        (2, 64)

    Args:
        x: ``(n, d)`` float array with ``d >= dim``.
        dim: dimensions to keep.
        renormalize: scale each truncated row back to unit norm, so inner product is cosine.

    Returns:
        ``(n, dim)`` float32.
    """
    if not 1 <= dim <= x.shape[-1]:
        raise ValueError(f"dim must be between 1 and {x.shape[-1]}; got {dim}")
    out = np.ascontiguousarray(x[..., :dim], dtype=np.float32)
    return normalize(out) if renormalize else out


def to_float16(x: np.ndarray) -> np.ndarray:
    """``(n, d)`` float -> ``(n, d)`` float16 (round to nearest)."""
    return np.asarray(x).astype(np.float16)


def calibrate_int8_ranges(x: np.ndarray, *, percentile: float = 100.0) -> np.ndarray:
    """Per-dimension int8 ranges from a calibration sample.

    ``percentile=100`` gives min/max ranges (as sentence-transformers calibrates). A lower
    value clips the tails: the range is the ``[100 - p, p]`` percentile interval, so the 256
    levels are spent where the values are and the few outliers saturate.

    Args:
        x: ``(n, d)`` float calibration vectors (a sample of the corpus, transformed as the corpus is).
        percentile: upper percentile in ``(50, 100]``.

    Returns:
        ``(2, d)`` float32: row 0 the lower bounds, row 1 the upper bounds.
    """
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile must be in (50, 100]; got {percentile}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need a non-empty (n, d) calibration sample; got shape {x.shape}")
    if percentile == 100:
        return np.stack([x.min(0), x.max(0)]).astype(np.float32)
    return np.percentile(x, [100 - percentile, percentile], axis=0).astype(np.float32)


def int8_steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 lower bounds and level widths ``(hi - lo) / 255`` (1 where a range is empty).

    Computed once on the host and shared by every side that makes int8 codes: on CUDA, torch
    divides a tensor by a Python scalar as a product with its reciprocal, which can differ from
    the division in the last bit and so move a value across a level boundary.
    """
    ranges = np.asarray(ranges, dtype=np.float32)
    starts = ranges[0]
    steps = (ranges[1] - starts) / INT8_LEVELS
    return starts, np.where(steps == 0, 1, steps).astype(np.float32)


def quantize_int8(x: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Scalar-quantize each dimension to 256 levels between its ``ranges``.

    Level ``floor((x - lo) / step)`` clipped to ``[0, 255]`` and shifted by -128, with
    ``step = (hi - lo) / 255``: the same codes as ``quantize_embeddings(x, "int8", ranges)``.

    Args:
        x: ``(n, d)`` float vectors.
        ranges: ``(2, d)`` lower and upper bounds from :func:`calibrate_int8_ranges`.

    Returns:
        ``(n, d)`` int8 codes.
    """
    starts, steps = int8_steps(ranges)
    levels = np.clip(np.floor((np.asarray(x, dtype=np.float32) - starts) / steps), 0, INT8_LEVELS)
    return (levels - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The centre of each code's interval: the float vector an int8 code stands for.

    Args:
        codes: ``(n, d)`` int8 from :func:`quantize_int8`.
        ranges: ``(2, d)`` the ranges they were made with.

    Returns:
        ``(n, d)`` float32.
    """
    starts, steps = int8_steps(ranges)
    return (starts + (codes.astype(np.float32) + 128.5) * steps).astype(np.float32)


def quantize_binary(x: np.ndarray) -> np.ndarray:
    """One sign bit per dimension (1 where ``x > 0``), packed 8 per byte, most significant first.

    Args:
        x: ``(n, d)`` float vectors.

    Returns:
        ``(n, ceil(d / 8))`` uint8; the codes of ``quantize_embeddings(x, "ubinary")``.
    """
    return np.packbits(np.asarray(x) > 0, axis=-1)


def unpack_binary(codes: np.ndarray, dim: int) -> np.ndarray:
    """Packed sign bits back to ``±1`` per dimension.

    Args:
        codes: ``(n, ceil(dim / 8))`` uint8 from :func:`quantize_binary`.
        dim: the dimension before packing.

    Returns:
        ``(n, dim)`` float32 of -1 and +1.
    """
    bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1, count=dim)
    return bits.astype(np.float32) * 2 - 1


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances between packed codes.

    Args:
        a: ``(na, nbytes)`` uint8.
        b: ``(nb, nbytes)`` uint8.

    Returns:
        ``(na, nb)`` int32 numbers of differing bits.
    """
    a, b = np.asarray(a, dtype=np.uint8), np.asarray(b, dtype=np.uint8)
    x = a[:, None, :] ^ b[None, :, :]
    bits = np.bitwise_count(x) if hasattr(np, "bitwise_count") else np.unpackbits(x, axis=-1)
    return bits.sum(-1, dtype=np.int32)
