"""BEIR's evaluation protocol: qrels naming documents absent from the corpus, metric depth, partial stores.

A small BEIR folder is built in the test from 40 real SciFact documents: query q1's only relevant
document is missing from the corpus, q2 has one of two missing. Metrics must equal pytrec_eval run
directly on the raw qrels file and the written run file, and ranx on the same inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import embedlab
from embedlab.beir import load_split
from embedlab.evaluate import evaluate
from embedlab.metrics import DEFAULT_METRICS, metrics_at_depth

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
QUERIES = ["cancer risk", "protein folding", "vaccine trial", "gene expression in cells"]


def raw_qrels(path: Path) -> dict[str, dict[str, int]]:
    """The qrels file as BEIR's loader reads it: every line, no knowledge of the corpus."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    return qrels


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        run.setdefault(q, {})[d] = float(score)
    return run


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory, scifact_docs) -> tuple[Path, list[dict]]:
    docs = scifact_docs[:40]
    root = tmp_path_factory.mktemp("protocol") / "mini"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(QUERIES)))
    rows = [("q0", docs[0]["_id"]), ("q1", "missing-doc-1"), ("q2", docs[2]["_id"]), ("q2", "missing-doc-2"),
            ("q3", docs[5]["_id"]), ("q3", docs[30]["_id"])]
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\n" + "".join(f"{q}\t{d}\t1\r\n" for q, d in rows), newline="")
    return root, docs


@pytest.fixture(scope="module")
def stores(beir_folder, tmp_path_factory):
    data, _ = beir_folder
    root = tmp_path_factory.mktemp("protocol-stores")
    kw = {"truncate": True, "progress": False, "workers": 1}
    whole = embedlab.embed(data / "corpus.jsonl", root / "whole", **kw)
    part = embedlab.embed(data / "corpus.jsonl", root / "part", limit=10, **kw)  # docs 0-9: 3 of 4 relevant
    return whole.out, part.out


def test_absent_documents_are_kept_as_warnings_and_bad_lines_skipped(beir_folder, tmp_path):
    data, _ = beir_folder
    split = load_split(data)
    assert sorted(split.queries) == ["q0", "q1", "q2", "q3"]
    assert split.qrels == raw_qrels(data / "qrels" / "test.tsv")
    assert split.absent == {"q1": {"missing-doc-1": 1}, "q2": {"missing-doc-2": 1}}
    assert split.queries_missing_documents() == (2, 1)
    warned = [p for p in split.problems if p.severity == "warning"]
    assert [(Path(p.source).name, p.line, p.doc_id) for p in warned] == [
        ("test.tsv", 3, "missing-doc-1"), ("test.tsv", 5, "missing-doc-2")]
    assert all("not in the corpus" in p.reason and "kept" in p.reason for p in warned)
    assert warned[0].to_json()["severity"] == "warning" and warned[0].to_json()["line"] == 3
    # unknown queries and lines that do not parse are reported and skipped
    with open(data / "qrels" / "test.tsv", "rb") as src:
        text = src.read() + b"no-such-query\tmissing-doc-1\t1\r\nq0\tx\r\nq0\tx\tgood\r\n"
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "qrels" / "test.tsv").write_bytes(text)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (bad / name).write_bytes((data / name).read_bytes())
    split = load_split(bad)
    skipped = [p for p in split.problems if p.severity == "skipped"]
    assert [p.line for p in skipped] == [8, 9, 10] and "no-such-query" not in split.qrels
    assert "x" not in split.qrels["q0"]


def test_restricted_to_scores_only_the_documents_given(beir_folder):
    data, docs = beir_folder
    split = load_split(data).restricted_to({d["_id"] for d in docs[:10]})
    assert split.qrels == {"q0": {docs[0]["_id"]: 1}, "q2": {docs[2]["_id"]: 1}, "q3": {docs[5]["_id"]: 1}}
    assert sorted(split.queries) == ["q0", "q2", "q3"]


def test_metrics_equal_pytrec_eval_and_ranx_on_the_raw_qrels(beir_folder, stores):
    import pytrec_eval

    data, _ = beir_folder
    whole, _ = stores
    r = evaluate(whole, data)
    assert r.n_queries == 4 and r.queries_missing_documents == 2 and r.queries_without_documents == 1
    assert r.relevant_documents == {"split": 6, "in_corpus": 4, "in_store": 4} and not r.warnings
    assert r.per_query["q1"]["ndcg@10"] == 0.0 and r.per_query["q1"]["recall@100"] == 0.0
    qrels = raw_qrels(data / "qrels" / "test.tsv")
    run = read_run(Path(r.run_path))
    assert set(run) == set(qrels) and all(len(docs) == 40 for docs in run.values())
    measures = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100",
                "map@100": "map_cut_100"}
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100", "map_cut.100"})
    scores = direct.evaluate(run)
    for ours, theirs in measures.items():
        assert r.metrics[ours] == pytest.approx(sum(scores[q][theirs] for q in qrels) / len(qrels), abs=1e-9)
    ranx = pytest.importorskip("ranx")
    second = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(DEFAULT_METRICS))
    for m in DEFAULT_METRICS:
        assert r.metrics[m] == pytest.approx(float(second[m]), abs=1e-6), m
    # q2 retrieves its one present document at most: recall is at most one half, not one
    assert r.per_query["q2"]["recall@100"] == 0.5
    saved = json.loads(Path(r.json_path).read_text())
    assert saved["queries_missing_documents"] == 2 and saved["n_queries"] == 4
    assert sum(p["severity"] == "warning" for p in saved["problems"]) == 2


def test_a_metric_deeper_than_the_run_is_measured_and_named_at_the_depth(beir_folder, stores):
    assert metrics_at_depth(DEFAULT_METRICS, 5) == (
        ("ndcg@5", "recall@5", "mrr@5", "map@5"),
        {"ndcg@10": "ndcg@5", "recall@10": "recall@5", "recall@100": "recall@5", "mrr@10": "mrr@5",
         "map@100": "map@5"})
    assert metrics_at_depth(DEFAULT_METRICS, 100) == (DEFAULT_METRICS, {})
    with pytest.raises(ValueError, match="depth"):
        metrics_at_depth(DEFAULT_METRICS, 0)
    data, _ = beir_folder
    whole, _ = stores
    r20 = evaluate(whole, data, k=20)
    assert list(r20.metrics) == ["ndcg@10", "recall@10", "recall@20", "mrr@10", "map@20"]
    assert r20.metrics_capped == {"recall@100": "recall@20", "map@100": "map@20"}
    assert "recall@100 measured as recall@20" in r20.table()
    r100 = evaluate(whole, data)
    assert r20.metrics["ndcg@10"] == r100.metrics["ndcg@10"]
    # one result file per setting: neither run overwrote the other
    assert r20.json_path != r100.json_path
    assert Path(r20.json_path).is_file() and Path(r100.json_path).is_file()
    assert json.loads(Path(r20.json_path).read_text())["k"] == 20
    assert len(read_run(Path(r20.run_path))["q0"]) == 20


def test_a_store_of_part_of_the_corpus_says_so_and_warns(beir_folder, stores):
    data, _ = beir_folder
    _, part = stores
    proc = subprocess.run([*EMBEDLAB, "eval", str(part), "--data", str(data), "--k", "5", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["relevant_documents"] == {"split": 6, "in_corpus": 4, "in_store": 3}
    assert set(out["metrics"]) == {"ndcg@5", "recall@5", "mrr@5", "map@5"} and out["k"] == 5
    assert "warning: the store holds 3 of the 4 relevant documents" in proc.stderr
    assert "--limit" in proc.stderr
    table = subprocess.run([*EMBEDLAB, "eval", str(part), "--data", str(data)], capture_output=True,
                           text=True)
    assert table.returncode == 0 and "4 queries scored" in table.stdout
    assert "2 queries have relevant documents missing from the corpus (1 have none left" in table.stdout
    assert "relevant documents: 6 in the qrels, 4 in the corpus, 3 in the store" in table.stdout
    assert "warning: the store holds 3 of the 4" in table.stderr
