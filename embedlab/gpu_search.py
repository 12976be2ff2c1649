"""Exact inner-product top-k by matrix products in torch: on the GPU when there is one, else the CPU.

The corpus is held on the device once (float32), queries come in blocks, and each block of
corpus rows contributes its top-k, merged into a running top-k per query. The float32 products
run without TF32, so scores equal FAISS's ``IndexFlatIP`` to rounding (summation order differs)
and the ids are the same wherever scores do not tie. Final order: score, then smaller id, as
:func:`embedlab.search.merge_topk` orders shard results.
"""

from __future__ import annotations

import numpy as np

from embedlab.index import merge_topk


class TorchFlatIndex:
    """An exact inner-product index on a torch device.

    Example:
        >>> index = TorchFlatIndex(vectors, ids, device="auto")
        >>> D, I = index.search(queries, k=10)   # (nq, k) float32 scores, int64 ids, best first

    Args:
        vectors: ``(n, d)`` float corpus vectors.
        ids: ``(n,)`` int64 ids returned for the rows; None: row numbers.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
        block_rows: corpus rows scored per matrix product (bounds device memory with query_block).
        query_block: queries per matrix product.
    """

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None, *, device: str = "auto",
                 block_rows: int = 1 << 20, query_block: int = 1024):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, d); got shape {vectors.shape}")
        self.ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if self.ids.shape != (len(vectors),):
            raise ValueError(f"ids must be ({len(vectors)},); got shape {self.ids.shape}")
        self.device, self.block_rows, self.query_block = device, block_rows, query_block
        self.torch = torch
        self.corpus = torch.from_numpy(vectors).to(device)
        self.ids_t = torch.from_numpy(self.ids).to(device)

    @property
    def ntotal(self) -> int:
        return int(self.corpus.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` scores and ids per query, best first; ``-inf`` / ``-1`` past the corpus size."""
        torch = self.torch
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.corpus.shape[1]:
            raise ValueError(f"queries must be (nq, {self.corpus.shape[1]}); got shape {q.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        kk = min(k, self.ntotal)
        D = np.full((len(q), k), -np.inf, dtype=np.float32)
        I = np.full((len(q), k), -1, dtype=np.int64)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # exact float32 products, as FAISS computes
        try:
            with torch.inference_mode():
                for s in range(0, len(q), self.query_block):
                    qt = torch.from_numpy(q[s:s + self.query_block]).to(self.device)
                    best_d = best_i = None
                    for c in range(0, self.ntotal, self.block_rows):
                        scores = qt @ self.corpus[c:c + self.block_rows].T
                        d, i = torch.topk(scores, min(kk, scores.shape[1]), dim=1)
                        i = self.ids_t[i + c]
                        if best_d is not None:
                            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
                            d, j = torch.topk(d, kk, dim=1)
                            i = torch.gather(i, 1, j)
                        best_d, best_i = d, i
                    d_np, i_np = merge_topk(best_d.cpu().numpy(), best_i.cpu().numpy(), kk)
                    D[s:s + len(qt), :kk], I[s:s + len(qt), :kk] = d_np, i_np
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        return D, I


def same_results(D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray,
                 tol: float = 1e-3) -> dict[str, float | bool]:
    """How two top-k results agree, telling ties from differences.

    Two exact searches that sum in different orders may order near-equal scores differently,
    and when the k-th and (k+1)-th scores tie, keep different ids at the cut. So per query:
    the sorted scores agree within ``tol``; an id both lists hold has the same score in each
    (within ``tol``); an id only one list holds ties with the other list's last score.

    Returns:
        ``{"ids_equal", "ids_equal_up_to_ties", "max_score_diff", "equal"}``; ``equal`` is the
        second and the score bound together.
    """
    diff = float(np.max(np.abs(D1 - D2))) if D1.size else 0.0
    exact = bool(np.array_equal(I1, I2))
    ties = exact or all(_row_ties(D1[r], I1[r], D2[r], I2[r], tol)
                        for r in np.nonzero((I1 != I2).any(1))[0])
    return {"ids_equal": exact, "ids_equal_up_to_ties": ties, "max_score_diff": diff,
            "equal": ties and diff <= tol}


def _row_ties(d1: np.ndarray, i1: np.ndarray, d2: np.ndarray, i2: np.ndarray, tol: float) -> bool:
    score1, score2 = dict(zip(i1.tolist(), d1.tolist())), dict(zip(i2.tolist(), d2.tolist()))
    for ident, s in score1.items():
        other = score2.get(ident)
        if abs(s - (d2[-1] if other is None else other)) > tol:
            return False
    return all(ident in score1 or abs(s - d1[-1]) <= tol for ident, s in score2.items())
