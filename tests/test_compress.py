"""Compression tiers: each tier's search against brute force on seeded arrays, then one real run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from embedlab import ops
from embedlab.experiments.compress import CompressConfig, compress, pareto_front
from embedlab.index import document_ranking, faiss_ids
from embedlab.store import Store
from embedlab.tiers import Method, build_tier

from .conftest import write_jsonl

N, D, K = 600, 64, 10


@pytest.fixture(scope="module")
def data():
    """(600, 64) unit corpus vectors with ids, and 25 unit queries near some of them."""
    rng = np.random.default_rng(7)
    x = ops.normalize(rng.standard_normal((N, D)) * rng.uniform(0.3, 2.0, D))
    xq = ops.normalize(x[rng.choice(N, 25, replace=False)] + 0.5 * rng.standard_normal((25, D)))
    ids = faiss_ids([f"doc{i}#0" for i in range(N)])
    return x, xq, ids


def tier(method: str, data, dim: int = D, **cfg):
    x, _, ids = data
    return build_tier(Method(method), dim, x, ids, CompressConfig(**cfg), np.arange(N))


def brute(scores: np.ndarray, ids: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of an (nq, n) score matrix: sorted scores and the ids holding them."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def check(Dt, It, scores, ids, atol=1e-5):
    """The tier's results are a brute-force top-k: same sorted scores, and each id has its score."""
    Db, _ = brute(scores, ids)
    assert np.allclose(Dt, Db, atol=atol)
    row = {int(v): r for r, v in enumerate(ids)}
    own = np.array([[scores[q, row[int(i)]] for i in It[q]] for q in range(len(It))])
    assert np.allclose(Dt, own, atol=atol)


@pytest.mark.parametrize("dim", [D, 32])
def test_float_tiers_match_brute_force(data, dim):
    x, xq, ids = data
    xt, qt = ops.truncate(x, dim), ops.truncate(xq, dim)
    Df, If = tier("float32", data, dim).search(xq, K)
    check(Df, If, qt @ xt.T, ids)
    assert np.array_equal(If, brute(qt @ xt.T, ids)[1])
    Dh, Ih = tier("float16", data, dim).search(xq, K)
    check(Dh, Ih, qt @ ops.to_float16(xt).astype(np.float32).T, ids, atol=1e-4)


@pytest.mark.parametrize("percentile", [100.0, 99.0])
def test_int8_is_float_query_against_dequantized_codes(data, percentile):
    x, xq, ids = data
    t = tier("int8", data, dim=32, int8_percentile=percentile)
    xt, qt = ops.truncate(x, 32), ops.truncate(xq, 32)
    assert np.array_equal(t.ranges, ops.calibrate_int8_ranges(xt, percentile=percentile))
    # FAISS encodes with our ranges: its codes are ours shifted to uint8 (rare float-rounding ties aside)
    inner = t.index.index
    faiss_codes = inner.sa_encode(xt).astype(np.int16) - 128
    assert (faiss_codes == ops.quantize_int8(xt, t.ranges)).mean() > 0.999
    Dt, It = t.search(xq, K)
    check(Dt, It, qt @ ops.dequantize_int8(faiss_codes.astype(np.int8), t.ranges).T, ids, atol=1e-4)


def test_int8_sym_is_the_inner_product_of_int8_codes(data):
    x, xq, ids = data
    t = tier("int8-sym", data, int8_percentile=100.0)
    codes = ops.quantize_int8(ops.truncate(x, D), t.ranges).astype(np.int64)
    qcodes = ops.quantize_int8(ops.truncate(xq, D), t.ranges).astype(np.int64)
    Dt, It = t.search(xq, K)
    check(Dt, It, (qcodes @ codes.T).astype(np.float64), ids, atol=0)


def test_binary_is_hamming(data):
    x, xq, ids = data
    Dt, It = tier("binary", data).search(xq, K)
    H = ops.hamming(ops.quantize_binary(xq), ops.quantize_binary(x))
    check(Dt, It, -H.astype(np.float64), ids, atol=0)


def test_binary_rescore(data):
    x, xq, ids = data
    exact = xq @ x.T
    H = ops.hamming(ops.quantize_binary(xq), ops.quantize_binary(x))
    t = tier("binary+rescore", data, k=K, rescore_multiplier=4)
    assert t.candidates == 40
    Dt, It = t.search(xq, K)
    row = {int(v): r for r, v in enumerate(ids)}
    rows = np.vectorize(row.get)(It)
    assert np.allclose(Dt, np.take_along_axis(exact, rows, 1), atol=1e-5)
    assert (np.diff(Dt, axis=1) <= 0).all()
    # every result is among the 40 nearest in Hamming distance
    kth = np.sort(H, axis=1)[:, 4 * K - 1]
    assert (np.take_along_axis(H, rows, 1) <= kth[:, None]).all()
    # with every vector a candidate, rescoring is exact search; the best Hamming candidates beat Hamming alone
    full = tier("binary+rescore", data, rescore_multiplier=N)
    assert np.array_equal(full.search(xq, K)[1], brute(exact, ids)[1])
    top = brute(exact, ids)[1]

    def hits(I: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) for a, b in zip(I, top)]))

    assert hits(It) >= hits(tier("binary", data).search(xq, K)[1])
    # int8 rescoring: the float query against the dequantized int8 candidates
    t8 = tier("binary+rescore", data, rescore_multiplier=N, rescore_with="int8", int8_percentile=100.0)
    xt = ops.truncate(x, D)  # the tier quantizes the renormalised vectors; codes can differ at a boundary
    deq = ops.dequantize_int8(ops.quantize_int8(xt, t8.ranges), t8.ranges)
    check(*t8.search(xq, K), xq @ deq.T, ids, atol=1e-5)


def test_ivfpq_searching_every_list_is_brute_force_over_its_reconstructions(data):
    import faiss

    _, xq, ids = data
    t = tier("pq", data, pq_nlist=8, pq_nprobe=8)
    assert t.extra["pq_m"] == D // 8 and t.code_bytes == D // 8 * t.extra["pq_nbits"] // 8
    t.index.set_direct_map_type(faiss.DirectMap.Hashtable)
    recon = np.stack([t.index.reconstruct(int(i)) for i in ids])
    Dt, It = t.search(xq, K)
    check(Dt, It, xq @ recon.T, ids, atol=1e-4)


def test_document_ranking_is_max_over_chunks():
    rng = np.random.default_rng(3)
    x = ops.normalize(rng.standard_normal((300, 16)))
    xq = ops.normalize(rng.standard_normal((5, 16)))
    docs = [f"d{i % 70}" for i in range(300)]  # 70 documents of 4 or 5 chunks
    ids = faiss_ids([f"{d}#{i}" for i, d in enumerate(docs)])
    t = build_tier(Method.FLOAT32, 16, x, ids, CompressConfig(), np.arange(300))
    ranked, scores = document_ranking(t.search, xq, 20, dict(zip(ids.tolist(), docs)), 70)
    S = xq @ x.T
    for q in range(5):
        best = {}
        for r in np.argsort(-S[q]):
            best.setdefault(docs[r], float(S[q, r]))
        assert ranked[q] == list(best)[:20]
        assert np.allclose(scores[q], list(best.values())[:20], atol=1e-6)


def test_pareto_front():
    cost, quality = [1, 2, 2, 4, 8, 8], [0.5, 0.7, 0.6, 0.7, 0.9, 0.8]
    assert pareto_front(cost, quality) == [True, True, False, False, True, False]


def test_config_is_checked():
    with pytest.raises(ValueError, match="binary\\+rescore"):
        CompressConfig(methods=("int4",))
    with pytest.raises(ValueError, match="int8_percentile"):
        CompressConfig(int8_percentile=20)
    assert CompressConfig(methods=("int8",)).methods == (Method.INT8,)


@pytest.fixture(scope="module")
def store(tmp_path_factory, scifact_docs):
    """A 40-document SciFact store, one chunk per document, made with the real model."""
    import embedlab

    root = tmp_path_factory.mktemp("compress")
    corpus = write_jsonl(root / "corpus.jsonl", scifact_docs[:40])
    return embedlab.embed(corpus, root / "out", truncate=True, progress=False).out


def test_compress_end_to_end(store, scifact_dir):
    """Every tier at two dimensions, scored on SciFact as `embedlab eval` scores."""
    from embedlab.evaluate import evaluate

    out = store
    methods = ("float32", "float16", "int8", "int8-sym", "binary", "binary+rescore", "pq")
    result = compress(out, dims=(384, 64), methods=methods, eval_data=scifact_dir, repeats=1)
    rows = {(r["method"], r["dim"]): r for r in result.rows}
    assert len(rows) == 14
    base = rows[("float32", 384)]
    assert base["ndcg@10"] == pytest.approx(evaluate(out, scifact_dir, write=False).metrics["ndcg@10"])
    assert base["ndcg@10_retention"] == 1 and base["overlap@10"] == 1
    bytes_ = {m: rows[(m, 384)]["bytes_per_vector"] for m in methods}
    assert bytes_["float32"] == 1536 and bytes_["float16"] == 768 and bytes_["int8"] == 384
    assert bytes_["binary"] == bytes_["binary+rescore"] == 48
    assert rows[("binary", 64)]["bytes_per_vector"] == 8
    for r in result.rows:
        assert r["index_bytes"] > 0 and r["search_ms_per_query"] > 0 and 0 <= r["overlap@10"] <= 1
    assert any(r["pareto"] for r in result.rows)
    folder = out / "_compress"
    assert (folder / "compress.png").stat().st_size > 0 and (folder / "config.json").is_file()
    with open(folder / "compress.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 14
    assert (folder / "d64" / "binary+rescore.rescore.npy").is_file()
    assert Store(out).verify() == []


def test_cli_without_eval(store):
    """`embedlab compress` with no BEIR data: top-10 overlap with exact search on corpus vectors."""
    from typer.testing import CliRunner

    from embedlab.cli import app

    out = store
    res = CliRunner().invoke(app, ["compress", str(out), "--dims", "384,128", "--methods",
                                   "float32,binary,binary+rescore", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    assert "faiss threads 1" in res.output and "binary+rescore" in res.output
    bad = CliRunner().invoke(app, ["compress", str(out), "--methods", "int4"])
    assert bad.exit_code == 1 and "must be one of" in bad.output
