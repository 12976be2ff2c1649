"""Score a store on a BEIR split: search every query, compute IR metrics, write the run.

Retrieval is at document level: a document scores its best chunk (max over chunks), which for a
``--truncate`` store (one chunk per document) is the MTEB / BEIR protocol. Following BEIR, a
retrieved document whose id equals the query id is ignored by default (for sets whose queries
are themselves in the corpus), and qrels lines naming documents absent from the corpus are
kept (see :mod:`embedlab.beir`). A metric deeper than the run is measured at the run's depth
and named so (:func:`embedlab.metrics.metrics_at_depth`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedlab.beir import BeirSplit, Run, load_split
from embedlab.metrics import DEFAULT_METRICS, ir_metrics, metrics_at_depth
from embedlab.search import Searcher
from embedlab.store import Store, atomic_write_bytes, atomic_write_json

EVAL_DIR = "_eval"
log = logging.getLogger(__name__)  # warnings reach stderr without any logging set-up (logging.lastResort)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # mean over the split's queries, e.g. {"ndcg@10": 0.645}
    per_query: dict[str, dict[str, float]]
    dataset: str
    split: str
    n_queries: int  # queries scored: every query the split's qrels name
    k: int
    level: str  # "document (max over chunks)"
    model: dict[str, Any]
    store: str
    store_checksum: str  # sha256 of the store's manifest, which holds every file's sha256
    config: dict[str, Any]
    truncated_documents: int | None = None
    metrics_capped: dict[str, str] = field(default_factory=dict)  # asked-for name -> measured name
    queries_missing_documents: int = 0  # queries with a relevant document absent from the corpus
    queries_without_documents: int = 0  # ... whose every relevant document is absent (score 0)
    relevant_documents: dict[str, int] = field(default_factory=dict)  # {"split", "in_corpus", "in_store"}
    warnings: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # odd qrels / queries lines
    json_path: str | None = None
    run_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [f"{'metric':<12}{'value':>8}"] + [f"{m:<12}{v * 100:>8.2f}" for m, v in self.metrics.items()]
        head = (f"{self.dataset}/{self.split}: {self.n_queries} queries scored, {self.level}, "
                f"model {self.model['name']} ({self.model['dtype']})")
        tail = []
        if self.metrics_capped:
            tail.append(f"run cut at --k {self.k}: " + ", ".join(
                f"{a} measured as {b}" for a, b in self.metrics_capped.items()))
        if self.queries_missing_documents:
            tail.append(f"{self.queries_missing_documents} queries have relevant documents missing from "
                        f"the corpus ({self.queries_without_documents} have none left and score 0); scored "
                        "as BEIR does")
        rel = self.relevant_documents
        if rel and (rel["in_store"] < rel["split"]):
            tail.append(f"relevant documents: {rel['split']:,} in the qrels, {rel['in_corpus']:,} in the "
                        f"corpus, {rel['in_store']:,} in the store")
        skipped = sum(p.get("severity") != "warning" for p in self.problems)
        if self.problems:
            tail.append(f"{len(self.problems)} qrels/query line(s) reported ({skipped} skipped; listed in "
                        "the JSON)")
        if self.json_path:
            tail.append(f"result: {self.json_path}\nrun:    {self.run_path}")
        return "\n".join([head, *rows, *tail])


def store_checksum(store: Store) -> str:
    return store.state_digest()


def write_trec_run(path: Path, run: Run, tag: str = "embedlab") -> None:
    lines = []
    for q in sorted(run):
        ranked = sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"{q} Q0 {d} {r} {s:.6f} {tag}\n" for r, (d, s) in enumerate(ranked, start=1)]
    atomic_write_bytes(path, "".join(lines).encode())


def result_name(dataset: str, split: str, k: int, *, ignore_identical_ids: bool = True,
                query_prefix: str = "", metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    """One file name per setting, so a run at another depth or prefix does not overwrite this one."""
    def tag(s: str) -> str:
        return hashlib.sha256(s.encode()).hexdigest()[:8]

    name = f"{dataset}-{split}-k{k}"
    name += "" if ignore_identical_ids else "-keep-identical-ids"
    name += f"-prefix-{tag(query_prefix)}" if query_prefix else ""
    name += "" if tuple(metrics) == DEFAULT_METRICS else f"-metrics-{tag(','.join(metrics))}"
    return name


def coverage(beir: BeirSplit, store_docs: set[str]) -> tuple[dict[str, int], list[str]]:
    """How many of the split's relevant documents the corpus and the store hold, and the warning
    a store of part of the corpus (``embed --limit``) earns."""
    relevant = beir.relevant()
    absent = {d for docs in beir.absent.values() for d in docs}
    counts = {"split": len(relevant), "in_corpus": len(relevant - absent),
              "in_store": len(relevant & store_docs)}
    warnings = []
    if counts["in_store"] < counts["in_corpus"]:
        warnings.append(
            f"the store holds {counts['in_store']:,} of the {counts['in_corpus']:,} relevant documents the "
            f"corpus has for this split: it was embedded from part of the corpus (e.g. with --limit), so the "
            f"other {counts['in_corpus'] - counts['in_store']:,} can never be retrieved and the metrics are "
            f"lower than for the whole corpus")
    return counts, warnings


def evaluate(store: Store | Path | str, data: Path | str, *, split: str = "test", k: int = 100,
             query_prefix: str | None = None, ignore_identical_ids: bool = True,
             metrics: tuple[str, ...] = DEFAULT_METRICS, device: str = "auto",
             write: bool = True, searcher: Searcher | None = None) -> EvalResult:
    """Evaluate ``store`` on the BEIR folder ``data``; write JSON and TREC run into ``store/_eval``."""
    store = store if isinstance(store, Store) else Store(store)
    data = Path(data)
    measured, capped = metrics_at_depth(tuple(metrics), k)
    searcher = searcher or Searcher(store, device=device, query_prefix=query_prefix)
    beir = load_split(data, split)
    qids = sorted(beir.queries)
    extra = 1 if ignore_identical_ids else 0
    hits = searcher.search_documents([beir.queries[q] for q in qids], k + extra)
    run: Run = {}
    for q, hs in zip(qids, hits):
        docs = {h.doc_id: h.score for h in hs if not (ignore_identical_ids and h.doc_id == q)}
        run[q] = dict(list(docs.items())[:k])
    mean, per_query = ir_metrics(beir.qrels, run, measured)
    some, every = beir.queries_missing_documents()
    relevant, warnings = coverage(beir, set(searcher.doc_ids))
    for w in warnings:
        log.warning("warning: %s", w)
    meta = store.meta()
    summary_path = store.summary_path()
    truncated = json.loads(summary_path.read_text()).get("truncated_documents") if summary_path.is_file() else None
    result = EvalResult(
        metrics=mean, per_query=per_query, dataset=data.name, split=split, n_queries=len(qids), k=k,
        level="document (max over chunks)",
        model={"name": meta["model"], "sha256": meta["model_sha256"], "revision": meta["model_revision"],
               "dtype": meta["dtype"]},
        store=str(store.root), store_checksum=store_checksum(store),
        config={"chunk_tokens": meta["chunk_tokens"], "overlap": meta["overlap"],
                "truncate": meta["truncate"], "query_prefix": searcher.query_prefix,
                "ignore_identical_ids": ignore_identical_ids, "metrics": list(metrics)},
        truncated_documents=truncated, metrics_capped=capped,
        queries_missing_documents=some, queries_without_documents=every,
        relevant_documents=relevant, warnings=warnings,
        problems=[p.to_json() for p in beir.problems],
    )
    if write:
        base = store.root / EVAL_DIR / result_name(
            data.name, split, k, ignore_identical_ids=ignore_identical_ids,
            query_prefix=searcher.query_prefix, metrics=tuple(metrics))
        result.json_path, result.run_path = str(base) + ".json", str(base) + ".trec"
        write_trec_run(Path(result.run_path), run)
        atomic_write_json(Path(result.json_path), result.to_json())
    return result
