"""Search across shards and BEIR evaluation, on a real SciFact subset with the real model."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedlab
from embedlab.beir import BeirError, load_split
from embedlab.evaluate import evaluate
from embedlab.metrics import ir_metrics, knn_recall, top_k
from embedlab.index import faiss_ids, merge_topk
from embedlab.search import Searcher, build_merged_index
from embedlab.store import Store, StoreError

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]


def make_beir_subset(src: Path, dst: Path, n_queries: int = 50, n_distractors: int = 150) -> Path:
    """A BEIR folder with the first test queries, their relevant docs and some distractors."""
    lines = (src / "qrels" / "test.tsv").read_bytes().split(b"\r\n")
    rows = [line.split(b"\t") for line in lines[1:] if line]
    qids = sorted({r[0] for r in rows})[:n_queries]
    keep_rows = [r for r in rows if r[0] in qids]
    relevant = {r[1].decode() for r in keep_rows}
    docs = []
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            d = json.loads(line)
            if d["_id"] in relevant or i < n_distractors:
                docs.append(line)
    (dst / "qrels").mkdir(parents=True)
    (dst / "corpus.jsonl").write_text("".join(docs), encoding="utf-8")
    (dst / "queries.jsonl").write_bytes((src / "queries.jsonl").read_bytes())
    (dst / "qrels" / "test.tsv").write_bytes(b"\r\n".join([lines[0], *(b"\t".join(r) for r in keep_rows)]) + b"\r\n")
    return dst


@pytest.fixture(scope="module")
def subset(tmp_path_factory, scifact_dir):
    root = tmp_path_factory.mktemp("beir")
    data = make_beir_subset(scifact_dir, root / "scifact-sub")
    trunc = embedlab.embed(data / "corpus.jsonl", root / "trunc", truncate=True, progress=False,
                           partition_tokens=8000)
    chunked = embedlab.embed(data / "corpus.jsonl", root / "chunked", chunk_tokens=96, overlap=16,
                             progress=False, partition_tokens=8000)
    return data, trunc, chunked


def test_merge_topk_equals_brute_force_on_seeded_shards():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, 16)).astype(np.float32)
    xq = rng.standard_normal((7, 16)).astype(np.float32)
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    scores = xq @ xb.T
    k = 10
    shards = np.array_split(np.arange(300), 4)
    D = np.concatenate([np.sort(scores[:, s], axis=1)[:, ::-1][:, :k] for s in shards], axis=1)
    I = np.concatenate([ids[s][np.argsort(-scores[:, s], axis=1)[:, :k]] for s in shards], axis=1)
    Dm, Im = merge_topk(D, I, k)
    want = np.argsort(-scores, axis=1)[:, :k]
    assert np.array_equal(Im, ids[want]) and np.allclose(Dm, np.take_along_axis(scores, want, 1))
    assert knn_recall(Im, ids[want]) == 1.0 and knn_recall(Im[:, :5], ids[want][:, :5]) == 1.0


def test_chunk_search_across_shards_matches_exhaustive_search(subset, encoder):
    _, _, chunked = subset
    s = Searcher(chunked.out)
    assert len(s.shards) == chunked.partitions > 1
    table = __import__("pyarrow.parquet", fromlist=["x"]).read_table(chunked.out)
    xb = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    xq = s.encode_queries(["aspirin and cancer risk", "stem cells in the bone marrow"])
    D, I = s.search_vectors(xq, 20)
    exact = np.argsort(-(xq @ xb.T), axis=1)[:, :20]
    assert np.array_equal(I, faiss_ids(table.column("chunk_id").to_pylist())[exact])
    # documents score their best chunk, and the document ranking is exact
    docs = s.search_documents_by_vector(xq, 10)
    doc_ids = np.array(table.column("doc_id").to_pylist())
    for q in range(2):
        best: dict[str, float] = {}
        for score, d in zip(xq[q] @ xb.T, doc_ids):
            best[d] = max(best.get(d, -9.0), float(score))
        want = sorted(best, key=lambda d: -best[d])[:10]
        assert [h.doc_id for h in docs[q]] == want
        assert [h.rank for h in docs[q]] == list(range(1, 11))


def test_merged_index_gives_the_same_results(subset):
    _, trunc, _ = subset
    path = build_merged_index(trunc.out)
    assert path.is_file() and Store(trunc.out).verify() == []  # not mistaken for a shard
    a = Searcher(trunc.out).search(["protein folding"], 10)[0]
    b = Searcher(trunc.out, merged=True).search(["protein folding"], 10)[0]
    assert [h.chunk_id for h in a] == [h.chunk_id for h in b]


def test_eval_matches_sentence_transformers_exact_search(subset, st_model):
    data, trunc, _ = subset
    result = evaluate(trunc.out, data)
    assert result.n_queries == 50 and not result.problems
    assert set(result.metrics) == {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"}
    # an independent pipeline: sentence-transformers encodes, numpy ranks, pytrec_eval scores
    split = load_split(data, "test")
    corpus = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines()]
    xb = st_model.encode([(d["title"] + " " + d["text"]).strip() for d in corpus], batch_size=32)
    qids = sorted(split.queries)
    xq = st_model.encode([split.queries[q] for q in qids])
    scores = xq @ xb.T
    run = {q: {corpus[j]["_id"]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
           for i, q in enumerate(qids)}
    mean, _ = ir_metrics(split.qrels, run)
    for m in mean:
        assert abs(mean[m] - result.metrics[m]) < 0.01, m
    assert result.truncated_documents and result.truncated_documents > 0


def test_metrics_agree_with_a_second_implementation_on_the_run_file(subset):
    ranx = pytest.importorskip("ranx")
    data, trunc, _ = subset
    result = evaluate(trunc.out, data)
    run: dict[str, dict[str, float]] = {}
    for line in Path(result.run_path).read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        run.setdefault(q, {})[d] = float(score)
    split = load_split(data, "test")
    theirs = ranx.evaluate(ranx.Qrels(split.qrels), ranx.Run(run),
                           ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"])
    ours, _ = ir_metrics(split.qrels, run)
    for m, v in theirs.items():
        assert abs(float(v) - ours[m]) < 1e-6, m
    saved = json.loads(Path(result.json_path).read_text())
    assert saved["metrics"] == result.metrics and len(saved["store_checksum"]) == 64


def test_chunked_store_scores_documents_by_their_best_chunk(subset):
    data, trunc, chunked = subset
    r = evaluate(chunked.out, data, write=False)
    assert r.level.startswith("document (max over chunks)")
    assert r.metrics["ndcg@10"] > 0.5  # real retrieval, not noise


def test_qrels_naming_unknown_queries_or_documents_are_reported(tmp_path, subset):
    data, _, _ = subset
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    with open(bad / "qrels" / "test.tsv", "ab") as fh:
        fh.write(b"no-such-query\t4983\t1\r\n1\tno-such-doc\t1\r\n1\t4983\r\n")
    split = load_split(bad, "test")
    reasons = [p.reason for p in split.problems]
    assert any("no-such-query" in r for r in reasons) and any("no-such-doc" in r for r in reasons)
    assert any("3 tab-separated" in r for r in reasons)
    assert all(p.source.endswith("test.tsv") and p.line > 1 for p in split.problems)
    with pytest.raises(BeirError, match="missing"):
        load_split(bad, "dev")


def test_identical_ids_are_ignored_as_beir_does(tmp_path, subset):
    data, trunc, _ = subset
    s = Searcher(trunc.out)
    doc = s.doc_ids[0]
    # a split whose query is itself a document of the corpus, with that document's own text
    text = s.texts([s.chunk_ids[0]])[s.chunk_ids[0]]
    d = tmp_path / "self"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text((data / "corpus.jsonl").read_text())
    (d / "queries.jsonl").write_text(json.dumps({"_id": doc, "text": text}) + "\n")
    (d / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\r\n{doc}\t{s.doc_ids[-1]}\t1\r\n")
    run_with = evaluate(trunc.out, d, ignore_identical_ids=False, searcher=s, write=False)
    run_without = evaluate(trunc.out, d, searcher=s, write=True)
    first = Path(run_without.run_path).read_text().splitlines()[0].split()
    assert first[2] != doc  # the query's own document is not in the run
    assert run_with.n_queries == run_without.n_queries == 1


def test_readers_refuse_a_store_that_does_not_verify(tmp_path, subset):
    import shutil

    _, trunc, _ = subset
    out = tmp_path / "broken"
    shutil.copytree(trunc.out, out)
    p = Store(out).parquet_path(0)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(StoreError, match="(?s)does not verify.*embedlab verify"):
        Searcher(out)
    proc = subprocess.run([*EMBEDLAB, "eval", str(out), "--data", "x"], capture_output=True, text=True)
    assert proc.returncode == 1 and "re-run the same `embedlab embed`" in proc.stderr


def test_cli_search_and_eval_json(subset):
    data, trunc, _ = subset
    proc = subprocess.run([*EMBEDLAB, "search", str(trunc.out), "aspirin", "-k", "3", "--json"],
                          capture_output=True, text=True)
    hits = json.loads(proc.stdout)["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert set(hits[0]) >= {"chunk_id", "doc_id", "score", "rank"}
    proc = subprocess.run([*EMBEDLAB, "eval", str(trunc.out), "--data", str(data), "--json"],
                          capture_output=True, text=True)
    out = json.loads(proc.stdout)
    assert {"ndcg@10", "recall@100", "mrr@10", "recall@10", "map@100"} <= set(out["metrics"])
    assert out["model"]["name"] and out["store_checksum"]
    plain = subprocess.run([*EMBEDLAB, "search", str(trunc.out), "aspirin", "-k", "2"],
                           capture_output=True, text=True).stdout
    assert "[" in plain and len(plain.splitlines()) == 4


def test_top_k_breaks_ties_by_id():
    assert list(top_k({"q": {"b": 1.0, "a": 1.0, "c": 2.0}}, 2)["q"]) == ["c", "a"]
