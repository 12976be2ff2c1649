"""The metrics `embedlab eval` reports, against a second implementation (ranx) query by query,
and the protocol rule that a query with no results scores 0 (not left out of the mean)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ranx  # a test dependency: if it is missing or moved, these tests fail, never skip

import embedlab
from embedlab.evaluate import evaluate

METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from embedlab.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c.scheduler_address


def write_beir(root: Path, docs: list[dict], queries: dict[str, str],
               qrels: list[tuple[str, str, int]]) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return root


def test_reported_metrics_equal_ranx_on_every_query(tmp_path, scifact_docs, tiny, cluster):
    docs = scifact_docs[:30]
    queries = {f"q{i}": " ".join(docs[i]["text"].split()[:12]) for i in range(8)}
    qrels = ([(f"q{i}", docs[i]["_id"], 1) for i in range(8)]
             + [(f"q{i}", docs[i + 10]["_id"], 2) for i in range(0, 8, 2)])
    data = write_beir(tmp_path / "beir", docs, queries, qrels)
    # fp32: ranx reads the run file's 6-decimal scores, and a random 32-wide model at bf16 gave two
    # documents the same 6 decimals (ranx then breaks the tie its own way)
    store = embedlab.embed(data / "corpus.jsonl", tmp_path / "store", model=tiny, progress=False,
                           scheduler=cluster, dtype="fp32").out
    result = evaluate(store, data, k=100)
    run: dict[str, dict[str, float]] = {}
    for line in Path(result.run_path).read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        run.setdefault(q, {})[d] = float(score)
    truth: dict[str, dict[str, int]] = {}
    for q, d, s in qrels:
        truth.setdefault(q, {})[d] = s
    assert sorted(run) == sorted(truth) == sorted(result.per_query) and result.n_queries == 8
    means = ranx.evaluate(ranx.Qrels(truth), ranx.Run(run), METRICS)
    for m in METRICS:  # what eval reports, not a recomputation from the run file
        assert result.metrics[m] == pytest.approx(float(means[m]), abs=1e-6), m
    for q in truth:
        theirs = ranx.evaluate(ranx.Qrels({q: truth[q]}), ranx.Run({q: run[q]}), METRICS)
        for m in METRICS:
            assert result.per_query[q][m] == pytest.approx(float(theirs[m]), abs=1e-6), (q, m)
    assert 0 < result.metrics["ndcg@10"] < 1  # a run with hits and misses, not a trivial one


def test_a_query_with_no_results_scores_zero_and_counts_in_the_mean(tmp_path, scifact_docs, tiny, cluster):
    doc = dict(scifact_docs[0], _id="d0")
    # the query "d0" has the id of the only document, which BEIR's rule drops from its results
    data = write_beir(tmp_path / "beir", [doc], {"d0": "any question", "q2": doc["title"]},
                      [("d0", "d0", 1), ("q2", "d0", 1)])
    store = embedlab.embed(data / "corpus.jsonl", tmp_path / "store", model=tiny, progress=False,
                           scheduler=cluster).out
    result = evaluate(store, data, k=100)  # deep enough for every metric to keep its name
    assert result.n_queries == 2
    assert result.per_query["d0"] == {m: 0.0 for m in METRICS}  # no results
    assert result.per_query["q2"] == pytest.approx({m: 1.0 for m in METRICS})  # its one document, first
    assert result.metrics == pytest.approx({m: 0.5 for m in METRICS})  # averaged over both queries
    assert "d0 Q0" not in Path(result.run_path).read_text()
