"""Compression tiers: one FAISS index per (method, dimension), built from float32 store vectors.

Every tier is built without re-encoding, at a truncation dimension (Matryoshka: the first
``dim`` components, renormalised); queries go through the same transform. Methods:

- ``float32``: ``IndexFlatIP``, exact.
- ``float16``: ``IndexScalarQuantizer(QT_fp16)``; float queries against decoded half floats.
- ``int8``: ``IndexScalarQuantizer(QT_8bit)`` whose per-dimension ranges are ours
  (:func:`embedlab.ops.calibrate_int8_ranges` on a calibration sample, percentile-clipped by
  default) and are serialized in the index. Search is asymmetric: the float query meets each
  document's decoded int8 vector.
- ``int8-sym``: the sentence-transformers protocol. Documents and queries are both quantized
  with the same ranges (:func:`embedlab.ops.quantize_int8`) and scored by the inner product
  of their int8 codes (``IndexScalarQuantizer(QT_8bit_direct_signed)``).
- ``binary``: sign bits in ``IndexBinaryFlat``, ranked by Hamming distance alone.
- ``binary+rescore``: the ``k * rescore_multiplier`` nearest Hamming candidates rescored by
  the float query against the documents' float32 (or dequantized int8) vectors, which stay on
  disk and are read for the candidates only; the index in memory is the binary one.
- ``pq``: ``IndexIVFPQ``, ``dim // 8`` bytes per vector by default.

Every index carries the store's FAISS ids (:func:`embedlab.index.faiss_ids` of the chunk ids).
The experiment that scores and times the tiers is :mod:`embedlab.experiments.compress`.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedlab import ops
from embedlab.index import IdMap, serialize_index
from embedlab.store import atomic_write_bytes


class Method(str, enum.Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT8_SYM = "int8-sym"
    BINARY = "binary"
    BINARY_RESCORE = "binary+rescore"
    PQ = "pq"


class Rescore(str, enum.Enum):
    FLOAT32 = "float32"
    INT8 = "int8"


class TierSettings(Protocol):
    """What building a tier reads from its config (``CompressConfig`` declares the defaults)."""

    k: int  # documents retrieved per query
    rescore_multiplier: int  # binary+rescore: rescore the top k * m Hamming candidates
    rescore_with: Rescore  # vectors the candidates are rescored with
    int8_percentile: float  # int8 range per dimension: [100-p, p] percentiles; 100: min/max
    pq_m: int | None  # PQ sub-quantizers; None: dim // 8
    pq_nlist: int | None  # IVF lists; None: about sqrt(vectors)
    pq_nprobe: int  # IVF lists visited per query
    seed: int  # IVF-PQ training


@dataclass(kw_only=True)
class Tier:
    """One built index and what its search needs: the query transform and the rescoring data."""

    method: Method
    dim: int
    index: Any  # faiss.Index or faiss.IndexBinary, holding the store's FAISS ids
    code_bytes: int  # bytes one vector takes in the index (ids excluded)
    ranges: np.ndarray | None = None  # (2, dim) float32 int8 ranges
    rescore: np.ndarray | None = None  # (n, dim) float32 or int8 vectors, read for candidates only
    candidates: int = 0  # binary+rescore: Hamming candidates rescored (at least the k asked for)
    rows: IdMap | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # settings to report (pq_m, nlist, ...)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` similarities (higher is better) and FAISS ids.

        Args:
            xq: ``(nq, d)`` float32 unit-norm queries at the store's full dimension.
            k: results per query.

        Returns:
            ``(D, I)``: ``(nq, k)`` float32 scores and int64 ids (-1 where fewer than ``k``).
        """
        q = ops.truncate(xq, self.dim)
        k = min(k, self.index.ntotal)
        if self.method is Method.INT8_SYM:
            return self.index.search(ops.quantize_int8(q, self.ranges).astype(np.float32), k)
        if self.method is Method.BINARY:
            D, I = self.index.search(ops.quantize_binary(q), k)
            return -D.astype(np.float32), I
        if self.method is Method.BINARY_RESCORE:
            c = min(max(k, self.candidates), self.index.ntotal)
            _, I = self.index.search(ops.quantize_binary(q), c)
            rows = self.rows(I)
            cand = self.rescore[np.maximum(rows, 0)]
            if cand.dtype == np.int8:
                cand = ops.dequantize_int8(cand, self.ranges)
            D = np.einsum("qd,qcd->qc", q, cand)
            D[rows < 0] = -np.inf
            top = np.argsort(-D, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(D, top, 1), np.take_along_axis(I, top, 1)
        return self.index.search(q, k)


def pq_shape(n: int, dim: int, cfg: TierSettings) -> tuple[int, int, int]:
    """``(m, nbits, nlist)`` for IVF-PQ on ``n`` vectors of ``dim``.

    Codebooks get fewer than 8 bits when ``n`` is too small to train 256 centroids, and the
    lists hold about ``sqrt(n)`` vectors each (at least 39, FAISS's minimum per centroid).
    """
    m = cfg.pq_m or max(1, dim // 8)
    if dim % m:
        raise ValueError(f"pq_m ({m}) must divide the dimension {dim}")
    nbits = min(8, max(1, int(np.log2(max(2, n // 4)))))
    nlist = cfg.pq_nlist or max(1, min(int(np.sqrt(n) + 0.5), n // 39))
    return m, nbits, nlist


def build_tier(method: Method, dim: int, x: np.ndarray, ids: np.ndarray, cfg: TierSettings,
               calibration: np.ndarray) -> Tier:
    """Build ``method``'s index at ``dim`` from the store's vectors.

    Args:
        method: the tier.
        dim: truncation dimension.
        x: ``(n, d)`` float32 unit-norm store vectors, ``d >= dim``.
        ids: ``(n,)`` int64 FAISS ids of the rows.
        cfg: rescoring, PQ and int8 settings (a ``CompressConfig`` has them all).
        calibration: ``(s,)`` row positions of the int8 calibration sample.
    """
    import faiss

    xt = ops.truncate(x, dim)
    ip = faiss.METRIC_INNER_PRODUCT
    if method in (Method.BINARY, Method.BINARY_RESCORE) and dim % 8:
        raise ValueError(f"binary tiers need a dimension that is a multiple of 8; got {dim}")
    ranges = None
    if method in (Method.INT8, Method.INT8_SYM) or (
            method is Method.BINARY_RESCORE and cfg.rescore_with is Rescore.INT8):
        ranges = ops.calibrate_int8_ranges(xt[calibration], percentile=cfg.int8_percentile)

    if method is Method.FLOAT32:
        return _flat(method, dim, faiss.IndexFlatIP(dim), xt, ids, 4 * dim)
    if method is Method.FLOAT16:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip)
        return _flat(method, dim, sq, xt, ids, 2 * dim)
    if method is Method.INT8:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip)
        faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]), sq.sq.trained)
        sq.is_trained = True
        return _flat(method, dim, sq, xt, ids, dim, ranges=ranges)
    if method is Method.INT8_SYM:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, ip)
        codes = ops.quantize_int8(xt, ranges).astype(np.float32)
        return _flat(method, dim, sq, codes, ids, dim, ranges=ranges)
    if method in (Method.BINARY, Method.BINARY_RESCORE):
        index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(dim))
        index.add_with_ids(ops.quantize_binary(xt), ids)
        tier = Tier(method=method, dim=dim, index=index, code_bytes=dim // 8)
        if method is Method.BINARY_RESCORE:
            tier.rescore = xt if ranges is None else ops.quantize_int8(xt, ranges)
            tier.ranges, tier.rows = ranges, IdMap(ids)
            tier.candidates = cfg.k * cfg.rescore_multiplier
        return tier
    if method is Method.PQ:
        m, nbits, nlist = pq_shape(len(xt), dim, cfg)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, ip)
        index.cp.seed = cfg.seed
        index.pq.cp.seed = cfg.seed
        index.pq.cp.min_points_per_centroid = 1  # train on the store, even if under 39 per centroid
        index.train(xt)
        index.add_with_ids(xt, ids)
        index.nprobe = min(cfg.pq_nprobe, nlist)
        return Tier(method=method, dim=dim, index=index, code_bytes=(m * nbits + 7) // 8,
                    extra={"pq_m": m, "pq_nbits": nbits, "pq_nlist": nlist, "pq_nprobe": index.nprobe})
    raise ValueError(f"unknown method {method!r}")


def _flat(method: Method, dim: int, inner: Any, x: np.ndarray, ids: np.ndarray, code_bytes: int,
          ranges: np.ndarray | None = None) -> Tier:
    import faiss

    index = faiss.IndexIDMap(inner)
    index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), ids)
    return Tier(method=method, dim=dim, index=index, code_bytes=code_bytes, ranges=ranges)


def write_tier(tier: Tier, folder: Path) -> int:
    """Write the tier's index (and rescoring vectors, int8 ranges) into ``folder``; total bytes."""
    name = tier.method.value
    files = {f"{name}.faiss": serialize_index(tier.index)}
    if tier.rescore is not None:
        files[f"{name}.rescore.npy"] = _npy(tier.rescore)
    if tier.ranges is not None and tier.method is not Method.INT8:
        files[f"{name}.ranges.npy"] = _npy(tier.ranges)
    for fname, blob in files.items():
        atomic_write_bytes(folder / fname, blob)
    return sum(len(b) for b in files.values())


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
