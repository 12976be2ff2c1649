"""Retrieval metrics.

IR metrics (nDCG, recall, MRR, MAP) come from ``pytrec_eval``, the C++ port of NIST's trec_eval
that BEIR and MTEB use, so numbers here are comparable with theirs by construction. ANN
measures (recall of an approximate top-k against exact search) are small numpy functions.
"""

from __future__ import annotations

import numpy as np

from embedlab.beir import Qrels, Run

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")


def _trec_measures(names: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Our metric name -> (pytrec_eval measure to ask for, key in its output)."""
    out = {}
    for name in names:
        metric, _, k = name.partition("@")
        if not k.isdigit():
            raise ValueError(f"metric {name!r} must look like ndcg@10")
        if metric == "ndcg":
            out[name] = (f"ndcg_cut.{k}", f"ndcg_cut_{k}")
        elif metric == "recall":
            out[name] = (f"recall.{k}", f"recall_{k}")
        elif metric == "map":
            out[name] = (f"map_cut.{k}", f"map_cut_{k}")
        elif metric == "precision":
            out[name] = (f"P.{k}", f"P_{k}")
        elif metric == "mrr":
            out[name] = ("recip_rank", "recip_rank")  # on the run cut to its top k, as BEIR does
        else:
            raise ValueError(f"unknown metric {metric!r}; known: ndcg, recall, map, precision, mrr")
    return out


def metrics_at_depth(metrics: tuple[str, ...], depth: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """The metrics a run ``depth`` documents deep can measure, and what each deeper one became.

    A cutoff past the run's depth would report the figure at the depth under a deeper name
    (``recall@100`` of a run cut at 5 is recall@5), so such a metric is measured, and named, at
    the depth instead; duplicates are dropped.

    Returns:
        ``(measured, capped)``: e.g. ``(("ndcg@5", "recall@5"), {"ndcg@10": "ndcg@5", ...})``.
    """
    if depth < 1:
        raise ValueError(f"the run's depth must be >= 1; got {depth}")
    _trec_measures(tuple(metrics))  # reject unknown names first
    measured: dict[str, None] = {}
    capped = {}
    for name in metrics:
        metric, _, k = name.partition("@")
        if int(k) > depth:
            capped[name] = f"{metric}@{depth}"
        measured[capped.get(name, name)] = None
    return tuple(measured), capped


def top_k(run: Run, k: int) -> Run:
    """Each query's ``k`` highest-scoring documents (ties broken by document id)."""
    return {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, docs in run.items()}


def ir_metrics(qrels: Qrels, run: Run, metrics: tuple[str, ...] = DEFAULT_METRICS,
               ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics of ``run`` against ``qrels``.

    Every query in ``qrels`` counts; one with no results scores 0 (pytrec_eval alone would
    leave it out of the mean and flatter the run).

    Returns:
        ``(mean, per_query)``: ``{"ndcg@10": 0.64, ...}`` and ``{qid: {"ndcg@10": ..., ...}}``.
    """
    import pytrec_eval

    measures = _trec_measures(tuple(metrics))
    per_query: dict[str, dict[str, float]] = {q: {m: 0.0 for m in metrics} for q in qrels}
    plain = {m: v for m, v in measures.items() if not m.startswith("mrr@")}
    if plain:
        ev = pytrec_eval.RelevanceEvaluator(qrels, {v[0] for v in plain.values()})
        for q, scores in ev.evaluate(run).items():
            for m, (_, key) in plain.items():
                per_query[q][m] = float(scores[key])
    for m in measures:
        if m.startswith("mrr@"):
            k = int(m.split("@")[1])
            ev = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
            for q, scores in ev.evaluate(top_k(run, k)).items():
                per_query[q][m] = float(scores["recip_rank"])
    n = max(1, len(per_query))
    mean = {m: sum(s[m] for s in per_query.values()) / n for m in metrics}
    return mean, per_query


def knn_recall(I_approx: np.ndarray, I_exact: np.ndarray) -> float:
    """Fraction of the exact top-k ids that the approximate top-k also returns.

    Args:
        I_approx: ``(nq, k)`` int64 ids from the approximate search (-1 for none).
        I_exact: ``(nq, k)`` int64 ids from exact search.
    """
    assert I_approx.shape[0] == I_exact.shape[0], "both searches need the same queries"
    hits = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(I_approx, I_exact))
    return hits / max(1, int((I_exact >= 0).sum()))
