"""Codes written beside the vectors (``embed --codes binary,int8``): what to make, and their columns.

A worker makes each partition's codes where its vectors are (on the GPU for a CUDA encoder,
:mod:`embedlab.gpu_codes`, before the copy to the host; with :mod:`embedlab.ops` otherwise; the
two agree bit for bit) and writes them as Parquet columns of the partition file:

- ``code_binary``: sign bits, ``ceil(dim / 8)`` bytes per chunk (``fixed_size_binary``);
- ``code_int8``: one int8 level per dimension (``fixed_size_list<int8>``), between per-dimension
  ranges calibrated once per store (:func:`calibrate`, on the first partition of the corpus) and
  kept in the store, so every partition, worker and resume quantizes with the same ranges.

The compression tiers (:mod:`embedlab.tiers`) read the same conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlab.config import CODE_KINDS
from embedlab.ops import calibrate_int8_ranges, quantize_binary, quantize_int8

CALIBRATION_ROWS = 4096  # chunks of the first partition the int8 ranges are calibrated on


def parse_codes(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"binary,int8"`` (or a sequence) as a tuple in a fixed order; unknown kinds refused."""
    if not text:
        return ()
    kinds = [k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    unknown = sorted(set(kinds) - set(CODE_KINDS))
    if unknown:
        raise ValueError(f"code kinds must be among {', '.join(CODE_KINDS)}; got {', '.join(unknown)}")
    return tuple(k for k in CODE_KINDS if k in kinds)


@dataclass(frozen=True)
class CodeSpec:
    """Which codes a worker makes, and the int8 ranges (lower row, upper row) when it makes int8."""

    kinds: tuple[str, ...] = ()
    int8_ranges: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if "int8" in self.kinds and self.int8_ranges is None:
            raise ValueError("int8 codes need calibrated ranges")

    @classmethod
    def of(cls, kinds: Sequence[str], ranges: np.ndarray | None = None) -> CodeSpec:
        r = None if ranges is None else (tuple(map(float, ranges[0])), tuple(map(float, ranges[1])))
        return cls(tuple(kinds), r)

    @property
    def ranges(self) -> np.ndarray | None:
        return None if self.int8_ranges is None else np.asarray(self.int8_ranges, dtype=np.float32)

    def on_host(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """The codes of float32 ``vectors`` made with :mod:`embedlab.ops`."""
        out: dict[str, np.ndarray] = {}
        if "binary" in self.kinds:
            out["binary"] = quantize_binary(vectors)
        if "int8" in self.kinds:
            out["int8"] = quantize_int8(vectors, self.ranges)
        return out

    def on_device(self, pooled: Any) -> dict[str, np.ndarray]:
        """The codes of a torch tensor made on its device, then copied to the host."""
        from embedlab.gpu_codes import codes_to_host

        return codes_to_host(pooled, self.kinds, self.ranges)


def calibrate(vectors: np.ndarray) -> np.ndarray:
    """Per-dimension int8 ranges ``(2, dim)`` from the first :data:`CALIBRATION_ROWS` vectors."""
    return calibrate_int8_ranges(vectors[:CALIBRATION_ROWS])


def code_columns(codes: dict[str, np.ndarray]) -> dict[str, Any]:
    """Parquet columns (pyarrow arrays) for a partition's codes."""
    import pyarrow as pa

    cols: dict[str, Any] = {}
    if "binary" in codes:
        b = np.ascontiguousarray(codes["binary"], dtype=np.uint8)
        cols["code_binary"] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(b.shape[1]), b.shape[0], [None, pa.py_buffer(b.tobytes())])
    if "int8" in codes:
        q = np.ascontiguousarray(codes["int8"], dtype=np.int8)
        cols["code_int8"] = pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1)), q.shape[1])
    return cols


def read_codes(table: Any, kind: str) -> np.ndarray:
    """A partition table's ``kind`` codes as the numpy array :mod:`embedlab.ops` makes."""
    col = table.column(f"code_{kind}").combine_chunks()
    if kind == "binary":
        width = col.type.byte_width
        return np.frombuffer(col.buffers()[1], dtype=np.uint8, count=len(col) * width,
                             offset=col.offset * width).reshape(len(col), width)
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.int8).reshape(len(col), dim)
