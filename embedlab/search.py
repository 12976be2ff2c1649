"""Search a store: encode queries with the store's own model, search every shard, merge exactly.

Each shard returns its own top-k with exact inner-product scores; the global top-k is the
top-k of their union (:func:`merge_topk`). Document-level results score a document by its best
chunk: the top chunks are fetched in growing rounds until they hold ``k`` distinct documents,
which makes the document ranking exact (any document not seen scores at most the last chunk).
Rows an update tombstoned are removed from the loaded shards (``remove_ids``), so they never
come back from a search.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedlab.config import EncodeConfig
from embedlab.store import PartitionEntry, Store, drop_tombstoned, faiss_ids


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


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    score: float
    chunk_id: str
    doc_id: str
    text: str | None = None

    def to_json(self) -> dict:
        d = {"rank": self.rank, "score": self.score, "chunk_id": self.chunk_id, "doc_id": self.doc_id}
        if self.text is not None:
            d["text"] = self.text
        return d


def default_query_prefix(model_path: str) -> str:
    """The model's own query prompt (sentence-transformers' ``prompts["query"]``), else ''."""
    import json

    cfg = Path(model_path) / "config_sentence_transformers.json"
    if cfg.is_file():
        prompts = json.loads(cfg.read_text()).get("prompts") or {}
        return prompts.get("query", "")
    return ""


class Searcher:
    """Searches a verified store; loads the shards and the query encoder once."""

    def __init__(self, store: Store | Path | str, *, device: str = "auto", merged: bool = False,
                 query_prefix: str | None = None):
        import faiss
        import pyarrow.parquet as pq

        from embedlab.encoder import Encoder

        self.store = store if isinstance(store, Store) else Store(store)
        self.store.require_verified()
        self.meta = self.store.meta()
        manifest = self.store.manifest()
        if merged:
            path = self.store.merged_index_path
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no merged index; run `embedlab merge {self.store.root}`")
            self.shards = [faiss.read_index(str(path))]
        else:
            self.shards = [_read_live_shard(self.store, manifest.partitions[i])
                           for i in sorted(manifest.partitions)]
        ids, chunk_ids, doc_ids = [], [], []
        for i in sorted(manifest.partitions):
            e = manifest.partitions[i]
            t = drop_tombstoned(pq.read_table(self.store.root / e.parquet, columns=["chunk_id", "doc_id"]),
                                e.tombstones)
            cids = t.column("chunk_id").to_pylist()
            chunk_ids += cids
            doc_ids += t.column("doc_id").to_pylist()
            ids.append(faiss_ids(cids))
        self._row_of = {int(x): r for r, x in enumerate(np.concatenate(ids) if ids else [])}
        self.chunk_ids, self.doc_ids = chunk_ids, doc_ids
        self.n_chunks = len(chunk_ids)
        self.n_docs = len(set(doc_ids))
        self.encoder = Encoder(EncodeConfig(model=self.meta["model_path"], dtype=self.meta["dtype"],
                                            device=device, compile=False))  # a few queries
        self.query_prefix = (default_query_prefix(self.meta["model_path"]) if query_prefix is None
                             else query_prefix)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self.encoder.encode_texts([self.query_prefix + q for q in queries])

    def search_vectors(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact global top-``k`` chunk scores and FAISS ids for ``xq`` ``(nq, dim)`` float32."""
        k = min(k, self.n_chunks)
        parts = [shard.search(xq, min(k, shard.ntotal)) for shard in self.shards if shard.ntotal]
        D = np.concatenate([d for d, _ in parts], axis=1)
        I = np.concatenate([i for _, i in parts], axis=1)
        return merge_topk(D, I, k)

    def search(self, queries: list[str], k: int = 10, *, text: bool = True) -> list[list[Hit]]:
        """Top-``k`` chunks per query, each with its stored text (``text=False``: without)."""
        D, I = self.search_vectors(self.encode_queries(queries), k)
        hits = [[self._hit(r + 1, d, i) for r, (d, i) in enumerate(zip(ds, is_)) if i >= 0]
                for ds, is_ in zip(D, I)]
        return self.with_text(hits) if text else hits

    def search_documents(self, queries: list[str], k: int = 10, *, text: bool = False) -> list[list[Hit]]:
        """Top-``k`` documents per query; a document scores its best chunk (``Hit.chunk_id``, and
        with ``text=True`` that chunk's text)."""
        hits = self.search_documents_by_vector(self.encode_queries(queries), k)
        return self.with_text(hits) if text else hits

    def with_text(self, hits: list[list[Hit]]) -> list[list[Hit]]:
        """``hits`` with each chunk's stored text filled in."""
        texts = self.texts([h.chunk_id for hs in hits for h in hs])
        return [[replace(h, text=texts.get(h.chunk_id)) for h in hs] for hs in hits]

    def search_documents_by_vector(self, xq: np.ndarray, k: int) -> list[list[Hit]]:
        k = min(k, self.n_docs)
        out: list[list[Hit] | None] = [None] * len(xq)
        todo = np.arange(len(xq))
        depth = min(self.n_chunks, max(2 * k, k + 16))
        while todo.size:
            D, I = self.search_vectors(xq[todo], depth)
            short = []
            for q, ds, is_ in zip(todo, D, I):
                best: dict[str, Hit] = {}
                for d, i in zip(ds, is_):
                    if i < 0:
                        continue
                    row = self._row_of[int(i)]
                    doc = self.doc_ids[row]
                    if doc not in best:
                        best[doc] = Hit(len(best) + 1, float(d), self.chunk_ids[row], doc)
                if len(best) >= k or depth >= self.n_chunks:
                    out[q] = list(best.values())[:k]
                else:
                    short.append(q)
            todo = np.asarray(short, dtype=np.int64)
            depth = min(self.n_chunks, depth * 2)
        return out  # type: ignore[return-value]

    def _hit(self, rank: int, score: float, fid: int) -> Hit:
        row = self._row_of[int(fid)]
        return Hit(rank, float(score), self.chunk_ids[row], self.doc_ids[row])

    def texts(self, chunk_ids: list[str]) -> dict[str, str]:
        """The stored text of the given chunks."""
        import pyarrow as pa
        import pyarrow.compute as pc

        want = pa.array(sorted(set(chunk_ids)), type=pa.string())
        out: dict[str, str] = {}
        for table in self.store.iter_tables(columns=["chunk_id", "text"]):
            mask = pc.is_in(table.column("chunk_id"), value_set=want)
            sub = table.filter(mask)
            out.update(zip(sub.column("chunk_id").to_pylist(), sub.column("text").to_pylist()))
        return out


def _read_live_shard(store: Store, entry: PartitionEntry):
    """A partition's FAISS shard without the rows the manifest tombstones."""
    import faiss

    shard = faiss.read_index(str(store.root / entry.faiss))
    if entry.tombstones:
        shard.remove_ids(faiss_ids(entry.tombstones))
    return shard


def build_merged_index(store: Store | Path | str) -> Path:
    """Join every shard into one index at ``OUT/_merged/index.faiss`` (written atomically)."""
    import faiss

    from embedlab.store import atomic_write_bytes

    store = store if isinstance(store, Store) else Store(store)
    store.require_verified()
    manifest = store.manifest()
    merged = None
    for i in sorted(manifest.partitions):
        shard = _read_live_shard(store, manifest.partitions[i])
        if merged is None:
            merged = faiss.IndexIDMap2(faiss.IndexFlatIP(shard.d))
        if shard.ntotal:
            inner = faiss.downcast_index(shard)
            merged.add_with_ids(inner.index.reconstruct_n(0, shard.ntotal),
                                faiss.vector_to_array(inner.id_map))
    path = store.merged_index_path
    atomic_write_bytes(path, faiss.serialize_index(merged).tobytes())
    return path

