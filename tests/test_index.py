"""embedlab.index against brute force on seeded arrays, and a Searcher given vectors or an encoder.

No model is loaded here: the store is written through the Store API, and the Searcher's encoder
is a plain function handed in from above.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from embedlab import ops
from embedlab.index import (
    IdMap,
    document_ranking,
    document_topk,
    faiss_ids,
    faiss_threads,
    merge_shards,
    read_shard,
    search_shards,
    shard_bytes,
    shard_ids,
)
from embedlab.search import Searcher, build_merged_index
from embedlab.store import Manifest, PartitionEntry, Store, StoreError

DIM = 16


def chunks(n: int, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` unit vectors and their chunk and document ids (documents of 1 to 4 chunks)."""
    rng = np.random.default_rng(seed)
    x = ops.normalize(rng.standard_normal((n, DIM)))
    docs = [f"s{seed}d{i // 3 + (i % 7 == 0)}" for i in range(n)]
    return x, [f"{d}#{i}" for i, d in enumerate(docs)], docs


def write_shards(tmp_path, x, chunk_ids, parts: int = 3) -> list:
    shards = []
    for p, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
        path = tmp_path / f"{p}.faiss"
        path.write_bytes(shard_bytes(x[rows], faiss_ids([chunk_ids[r] for r in rows])))
        shards.append(read_shard(path))
    return shards


def test_shards_round_trip_and_tombstones_leave(tmp_path):
    x, cids, _ = chunks(40, 0)
    path = tmp_path / "s.faiss"
    path.write_bytes(shard_bytes(x, faiss_ids(cids)))
    assert np.array_equal(shard_ids(read_shard(path)), faiss_ids(cids))
    live = read_shard(path, tombstones=cids[:5])
    assert live.ntotal == 35 and set(shard_ids(live).tolist()) == set(faiss_ids(cids[5:]).tolist())
    path.write_bytes(shard_bytes(np.zeros((0, DIM), np.float32), faiss_ids([])))
    assert read_shard(path).ntotal == 0 and shard_ids(read_shard(path)).size == 0


def test_search_across_shards_and_the_merged_index_are_exact(tmp_path):
    x, cids, _ = chunks(200, 1)
    xq = ops.normalize(np.random.default_rng(2).standard_normal((6, DIM)))
    ids = faiss_ids(cids)
    shards = write_shards(tmp_path, x, cids)
    want = np.argsort(-(xq @ x.T), axis=1, kind="stable")[:, :15]
    D, I = search_shards(shards, xq, 15)
    assert np.array_equal(I, ids[want]) and np.allclose(D, np.take_along_axis(xq @ x.T, want, 1), atol=1e-5)
    merged = merge_shards(shards, DIM)
    assert merged.ntotal == 200
    assert np.array_equal(search_shards([merged], xq, 15)[1], I)


def test_id_map_gives_rows_and_minus_one_for_none_or_unknown():
    ids = faiss_ids([f"c{i}" for i in range(50)])
    rows = IdMap(ids)
    I = np.stack([ids[[3, 0, 49]], np.array([-1, ids[7], 12345])])
    assert rows(I).tolist() == [[3, 0, 49], [-1, 7, -1]]
    assert IdMap(np.zeros(0, np.int64))(np.array([5, -1])).tolist() == [-1, -1]


def test_document_topk_is_max_over_chunks_with_the_best_chunk(tmp_path):
    x, cids, docs = chunks(300, 3)
    xq = ops.normalize(np.random.default_rng(4).standard_normal((5, DIM)))
    ids = faiss_ids(cids)
    shards = write_shards(tmp_path, x, cids, parts=4)
    doc_of = dict(zip(ids.tolist(), docs))
    ranked = document_topk(lambda q, k: search_shards(shards, q, k), xq, 30, doc_of, len(set(docs)))
    S = xq @ x.T
    for q in range(5):
        best: dict[str, tuple[float, int]] = {}
        for r in np.argsort(-S[q], kind="stable"):
            best.setdefault(docs[r], (float(S[q, r]), int(ids[r])))
        assert [h[0] for h in ranked[q]] == list(best)[:30]
        assert np.allclose([h[1] for h in ranked[q]], [v[0] for v in list(best.values())[:30]], atol=1e-5)
        assert [h[2] for h in ranked[q]] == [v[1] for v in list(best.values())[:30]]
    names, scores = document_ranking(lambda q, k: search_shards(shards, q, k), xq, 30, doc_of, len(set(docs)))
    assert names == [[h[0] for h in hs] for hs in ranked] and scores == [[h[1] for h in hs] for hs in ranked]
    every = document_topk(lambda q, k: search_shards(shards, q, k), xq[:1], 10**6, doc_of, len(set(docs)))
    assert sorted(h[0] for h in every[0]) == sorted(set(docs))  # k beyond the documents: all of them


def test_faiss_threads_restores_the_setting():
    import faiss

    before = faiss.omp_get_max_threads()
    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


def make_store(root, seed: int, parts: int = 3, tombstone: int = 4):
    """A verified store of ``parts`` partitions written through the Store API; partition 0
    tombstones its first ``tombstone`` chunks. Returns the store and its live (x, chunk ids, docs)."""
    x, cids, docs = chunks(90, seed)
    store = Store(root)
    store.init({"model_sha256": "none", "model_path": str(root / "no-model"), "dtype": "fp32", "dim": DIM})
    entries = {}
    for p, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
        cols = {"chunk_id": [cids[r] for r in rows], "doc_id": [docs[r] for r in rows]}
        pq_sha, fs_sha = store.write_partition(p, cols, x[rows])
        entries[p] = PartitionEntry(index=p, rows=len(rows), tokens=len(rows), docs=len(set(cols["doc_id"])),
                                    digest=str(p), parquet=f"part-{p:05d}.parquet",
                                    faiss=f"_faiss/part-{p:05d}.faiss", parquet_sha256=pq_sha,
                                    faiss_sha256=fs_sha,
                                    tombstones=sorted(cols["chunk_id"][:tombstone]) if p == 0 else [])
    store.write_manifest(Manifest(partitions=entries, complete=True))
    dead = set(entries[0].tombstones)
    live = [i for i, c in enumerate(cids) if c not in dead]
    return store, x[live], [cids[i] for i in live], [docs[i] for i in live]


def test_searcher_takes_an_encoder_from_above_and_loads_no_model(tmp_path):
    store, x, cids, docs = make_store(tmp_path / "s", seed=5)
    assert store.verify() == []
    vectors = dict(zip(cids, x))
    s = Searcher(store, encoder=lambda texts: np.stack([vectors[t] for t in texts]))
    assert (s.n_chunks, len(s.shards)) == (len(cids), 3) and s.query_prefix is None
    hits = s.search([cids[10], cids[-1]], 5, text=False)
    assert [h[0].chunk_id for h in hits] == [cids[10], cids[-1]]  # each chunk finds itself first
    S = np.stack([vectors[cids[10]]]) @ x.T
    want = np.argsort(-S[0], kind="stable")[:5]
    assert [h.chunk_id for h in hits[0]] == [cids[r] for r in want]  # tombstoned rows never return
    best: dict[str, str] = {}
    for r in np.argsort(-S[0], kind="stable"):
        best.setdefault(docs[r], cids[r])
    doc_hits = s.search_documents([cids[10]], 8)[0]
    assert [(h.doc_id, h.chunk_id) for h in doc_hits] == list(best.items())[:8]
    assert [h.rank for h in doc_hits] == list(range(1, 9))


def test_a_merged_index_from_another_store_is_refused_not_misread(tmp_path):
    a, *_ = make_store(tmp_path / "a", seed=6)
    b, xb, *_ = make_store(tmp_path / "b", seed=7)
    build_merged_index(a)
    (b.root / "_merged").mkdir()
    shutil.copy(a.root / "_merged" / "index.faiss", b.root / "_merged" / "index.faiss")
    s = Searcher(b, merged=True, encoder=lambda texts: xb[:len(texts)])
    with pytest.raises(StoreError, match="embedlab merge"):
        s.search(["q"], 3)
