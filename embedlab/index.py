"""FAISS in one place: the ids every index carries, shard files, exact merge, document-level top-k.

Every index holds the store's FAISS ids, :func:`faiss_ids` of the chunk ids, so a result maps
back to its chunk in any shard, merged index or compression tier (:class:`IdMap`). A store
partition's shard is ``IndexIDMap2(IndexFlatIP)``; searching all shards and taking the top-k of
their union (:func:`merge_topk`) is exact. A document scores its best chunk
(:func:`document_topk`): chunks are fetched in growing rounds until they hold ``k`` distinct
documents, which makes the document ranking exact (a document not seen scores at most the last
chunk fetched).

Nothing here reads a manifest or loads a model: the store hands over file paths and tombstones,
the searcher query vectors. ``faiss`` is imported on first use (it costs a few hundred ms).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ID_SCHEME = "blake2b-8(chunk_id) & (2**63 - 1)"

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (xq, k) -> (D, I) FAISS ids


def faiss_ids(chunk_ids: Sequence[str]) -> np.ndarray:
    """``(n,)`` int64 FAISS ids: the first 8 bytes of blake2b(chunk_id), sign bit cleared.

    Derived from the id alone, so the same chunk has the same FAISS id in every run and shard.
    """
    out = np.empty(len(chunk_ids), dtype=np.int64)
    for i, cid in enumerate(chunk_ids):
        d = hashlib.blake2b(cid.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little") & 0x7FFF_FFFF_FFFF_FFFF
    return out


# -- shards -----------------------------------------------------------------------------------


def shard_bytes(vectors: np.ndarray, ids: np.ndarray) -> bytes:
    """A serialized shard, ``IndexIDMap2(IndexFlatIP)``, of ``vectors`` ``(n, dim)`` with ``ids`` ``(n,)``."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return serialize_index(index)


def serialize_index(index: Any) -> bytes:
    """Any FAISS index, float or binary, as bytes."""
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return faiss.serialize_index_binary(index).tobytes()
    return faiss.serialize_index(index).tobytes()


def read_shard(path: Path | str, tombstones: Sequence[str] = ()) -> Any:
    """The FAISS index at ``path``, without the rows of the ``tombstones`` chunk ids."""
    import faiss

    shard = faiss.read_index(str(path))
    if tombstones:
        shard.remove_ids(faiss_ids(tombstones))
    return shard


def shard_ids(shard: Any) -> np.ndarray:
    """``(ntotal,)`` int64 ids an ``IndexIDMap``/``IndexIDMap2`` holds, in row order."""
    import faiss

    if not shard.ntotal:
        return np.zeros(0, dtype=np.int64)
    return faiss.vector_to_array(faiss.downcast_index(shard).id_map)


def merge_shards(shards: Sequence[Any], dim: int) -> Any:
    """One ``IndexIDMap2(IndexFlatIP)`` holding every row (vector and id) of ``shards``."""
    import faiss

    merged = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    for shard in shards:
        if shard.ntotal:
            inner = faiss.downcast_index(shard)
            merged.add_with_ids(inner.index.reconstruct_n(0, shard.ntotal), shard_ids(shard))
    return merged


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """FAISS computes with ``n`` OpenMP threads inside the block; the setting before is restored."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# -- exact search across shards ---------------------------------------------------------------


def merge_topk(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k from shard results laid side by side.

    Args:
        D: ``(nq, s*k)`` float32 scores (higher is better); -inf where a shard had fewer than k.
        I: ``(nq, s*k)`` int64 ids, -1 where a shard had fewer than k.
        k: results to keep.

    Returns:
        ``(D, I)`` of shape ``(nq, k)``, best first; ties are broken by smaller id.
    """
    D = np.where(I < 0, -np.inf, D)
    order = np.lexsort((I, -D), axis=1)[:, :k] if D.size else np.zeros((D.shape[0], 0), np.int64)
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def search_shards(shards: Sequence[Any], xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact global top-``k`` scores and ids of ``xq`` ``(nq, dim)`` float32 over every shard.

    ``k`` must not exceed the rows the shards hold together.
    """
    parts = [shard.search(xq, min(k, shard.ntotal)) for shard in shards if shard.ntotal]
    D = np.concatenate([d for d, _ in parts], axis=1)
    I = np.concatenate([i for _, i in parts], axis=1)
    return merge_topk(D, I, k)


class IdMap:
    """FAISS ids back to row positions, vectorised: ``IdMap(ids)(I)`` has the row of each id.

    Ids are any int64; -1 (no result) and ids the map does not hold give -1.
    """

    def __init__(self, ids: np.ndarray):
        self.order = np.argsort(ids, kind="stable")
        self.sorted = np.asarray(ids, dtype=np.int64)[self.order]

    def __len__(self) -> int:
        return len(self.sorted)

    def __call__(self, I: np.ndarray) -> np.ndarray:
        if not len(self.sorted):
            return np.full(np.shape(I), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.sorted, I), 0, len(self.sorted) - 1)
        return np.where((I < 0) | (self.sorted[pos] != I), -1, self.order[pos])


# -- documents --------------------------------------------------------------------------------

DocHit = tuple[str, float, int]  # document id, its best chunk's score, that chunk's FAISS id


def document_topk(search: Search, xq: np.ndarray, k: int, doc_of: Mapping[int, str],
                  n_docs: int) -> list[list[DocHit]]:
    """Top-``k`` documents per query, a document scoring its best chunk.

    Chunks are fetched in growing rounds (``2k``, at least ``k + 16``, doubling) until each query
    has ``k`` distinct documents or every chunk has been seen.

    Args:
        search: ``(xq, depth) -> (D, I)`` exact chunk-level search returning FAISS ids.
        xq: ``(nq, d)`` float32 queries.
        k: documents per query.
        doc_of: FAISS id -> document id, for every chunk ``search`` can return.
        n_docs: documents in the store (bounds ``k``).

    Returns:
        Per query, ``(doc_id, score, faiss_id)`` best first.
    """
    k = min(k, n_docs)
    n_chunks = len(doc_of)
    out: list[list[DocHit]] = [[] for _ in range(len(xq))]
    todo = np.arange(len(xq))
    depth = min(n_chunks, max(2 * k, k + 16))
    while todo.size:
        D, I = search(xq[todo], depth)
        short = []
        for q, ds, is_ in zip(todo, D, I):
            best: dict[str, DocHit] = {}
            for d, i in zip(ds, is_):
                if i >= 0 and doc_of[int(i)] not in best:
                    best[doc_of[int(i)]] = (doc_of[int(i)], float(d), int(i))
            if len(best) >= k or depth >= n_chunks:
                out[q] = list(best.values())[:k]
            else:
                short.append(q)
        todo = np.asarray(short, dtype=np.int64)
        depth = min(n_chunks, depth * 2)
    return out


def document_ranking(search: Search, xq: np.ndarray, k: int, doc_of: Mapping[int, str], n_docs: int,
                     ) -> tuple[list[list[str]], list[list[float]]]:
    """:func:`document_topk` as ``(documents, scores)``: per query, document ids and scores best first."""
    ranked = document_topk(search, xq, k, doc_of, n_docs)
    return [[h[0] for h in hs] for hs in ranked], [[h[1] for h in hs] for hs in ranked]
