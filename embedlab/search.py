"""Search a store: load its live shards, search them exactly, map FAISS ids back to chunks.

Queries arrive as vectors (:meth:`Searcher.search_vectors`,
:meth:`Searcher.search_documents_by_vector`) or as text through a query encoder handed in from
above: :class:`QueryEncoder`, the store's own model and query prompt, which a ``Searcher`` given
none makes itself and loads on its first text query. The FAISS work (shards, the exact merge,
the document-level top-k that scores a document by its best chunk) is :mod:`embedlab.index`.
Rows an update tombstoned are removed from the loaded shards, so they never come back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.config import EncodeConfig
from embedlab.corpus import replace_lone_surrogates
from embedlab.index import (IdMap, document_topk, faiss_ids, merge_shards, read_shard, search_shards,
                            serialize_index)
from embedlab.store import Store, StoreError, atomic_write_bytes


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


class QueryEncoder:
    """Query texts to ``(n, dim)`` float32 vectors with a store's own model and query prompt.

    The model loads on the first call, so making one costs nothing until a text query comes.

    Args:
        meta: the store's identity (:meth:`Store.meta`): ``model_path`` and ``dtype``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        query_prefix: text put before each query; None: the model's own query prompt.
    """

    def __init__(self, meta: dict[str, Any], *, device: str = "auto", query_prefix: str | None = None):
        self.cfg = EncodeConfig(model=meta["model_path"], dtype=meta["dtype"], device=device,
                                compile=False)  # a few queries: compiling would cost more than it saves
        self.query_prefix = default_query_prefix(meta["model_path"]) if query_prefix is None else query_prefix
        self._encoder: Any = None

    def __call__(self, queries: list[str]) -> np.ndarray:
        if self._encoder is None:
            from embedlab.encoder import Encoder

            self._encoder = Encoder(self.cfg)
        # a lone surrogate (a cut emoji, or bytes that were not UTF-8 on the command line) would stop
        # the tokenizer; it becomes U+FFFD, as in the corpus
        return self._encoder.encode_texts([replace_lone_surrogates(self.query_prefix + q)[0] for q in queries])


class Searcher:
    """Searches a verified store; loads its shards and the chunk and document ids once.

    Args:
        store: the store or its folder.
        encoder: turns query texts into vectors; None: a :class:`QueryEncoder` of the store's own
            model on ``device`` with ``query_prefix``, loaded on the first text query.
        merged: search ``OUT/_merged/index.faiss`` (:func:`build_merged_index`), not the shards.
    """

    def __init__(self, store: Store | Path | str, *, encoder: Callable[[list[str]], np.ndarray] | None = None,
                 device: str = "auto", merged: bool = False, query_prefix: str | None = None):
        self.store = store if isinstance(store, Store) else Store(store)
        self.store.require_verified()
        self.meta = self.store.meta()
        manifest = self.store.manifest()
        entries = [manifest.partitions[i] for i in sorted(manifest.partitions)]
        if merged:
            path = self.store.merged_index_path
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no merged index; run `embedlab merge {self.store.root}`")
            self.shards = [read_shard(path)]
        else:
            self.shards = [self.store.load_shard(e) for e in entries]
        chunk_ids: list[str] = []
        doc_ids: list[str] = []
        for t in self.store.iter_tables(columns=["chunk_id", "doc_id"]):
            chunk_ids += t.column("chunk_id").to_pylist()
            doc_ids += t.column("doc_id").to_pylist()
        ids = faiss_ids(chunk_ids)
        self.rows = IdMap(ids)
        self.doc_of = dict(zip(ids.tolist(), doc_ids))
        self.chunk_ids, self.doc_ids = chunk_ids, doc_ids
        self.n_chunks = len(chunk_ids)
        self.n_docs = len(set(doc_ids))
        self.encoder = encoder or QueryEncoder(self.meta, device=device, query_prefix=query_prefix)

    @property
    def query_prefix(self) -> str | None:
        """The text put before each query, when the encoder says (a :class:`QueryEncoder` does)."""
        return getattr(self.encoder, "query_prefix", None)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self.encoder(queries)

    def search_vectors(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact global top-``k`` chunk scores and FAISS ids for ``xq`` ``(nq, dim)`` float32."""
        return search_shards(self.shards, xq, min(k, self.n_chunks))

    def search(self, queries: list[str], k: int = 10, *, text: bool = True) -> list[list[Hit]]:
        """Top-``k`` chunks per query, each with its stored text (``text=False``: without)."""
        D, I = self.search_vectors(self.encode_queries(queries), k)
        rows = self.row_of(I)
        hits = [[Hit(r + 1, float(d), self.chunk_ids[row], self.doc_ids[row])
                 for r, (d, i, row) in enumerate(zip(ds, is_, rs)) if i >= 0]
                for ds, is_, rs in zip(D, I, rows)]
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
        """Top-``k`` documents for ``xq`` ``(nq, dim)`` float32, each scored by its best chunk."""
        out = []
        for hs in document_topk(self.search_vectors, xq, k, self.doc_of, self.n_docs):
            rows = self.row_of(np.array([fid for _, _, fid in hs], dtype=np.int64))
            out.append([Hit(r + 1, score, self.chunk_ids[row], doc)
                        for r, ((doc, score, _), row) in enumerate(zip(hs, rows))])
        return out

    def row_of(self, I: np.ndarray) -> np.ndarray:
        """Row of each FAISS id in ``I`` (-1 stays -1).

        Raises:
            StoreError: an id is no chunk of the store (a merged index older than an update).
        """
        rows = self.rows(I)
        if ((rows < 0) & (I >= 0)).any():
            raise StoreError(f"{self.store.root}: the index returned chunks the store does not hold; "
                             f"rebuild the merged index with `embedlab merge {self.store.root}`")
        return rows

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


def build_merged_index(store: Store | Path | str) -> Path:
    """Join every live shard into one index at ``OUT/_merged/index.faiss`` (written atomically)."""
    store = store if isinstance(store, Store) else Store(store)
    store.require_verified()
    manifest = store.manifest()
    shards = [store.load_shard(manifest.partitions[i]) for i in sorted(manifest.partitions)]
    path = store.merged_index_path
    atomic_write_bytes(path, serialize_index(merge_shards(shards, int(store.meta()["dim"]))))
    return path
