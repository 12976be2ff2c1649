"""Score a store on a BEIR split: search every query, compute IR metrics, write the run.

Retrieval is at document level: a document scores its best chunk (max over chunks), which for a
``--truncate`` store (one chunk per document) is the MTEB / BEIR protocol. Following BEIR, a
retrieved document whose id equals the query id is ignored by default (for sets whose queries
are themselves in the corpus).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedlab.beir import Run, load_split
from embedlab.metrics import DEFAULT_METRICS, ir_metrics
from embedlab.search import Searcher
from embedlab.store import Store, atomic_write_bytes, atomic_write_json

EVAL_DIR = "_eval"


@dataclass
class EvalResult:
    metrics: dict[str, float]  # mean over the split's queries, e.g. {"ndcg@10": 0.645}
    per_query: dict[str, dict[str, float]]
    dataset: str
    split: str
    n_queries: int
    k: int
    level: str  # "document (max over chunks)"
    model: dict[str, Any]
    store: str
    store_checksum: str  # sha256 of the store's manifest, which holds every file's sha256
    config: dict[str, Any]
    truncated_documents: int | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)  # bad qrels / queries lines
    json_path: str | None = None
    run_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [f"{'metric':<12}{'value':>8}"] + [f"{m:<12}{v * 100:>8.2f}" for m, v in self.metrics.items()]
        head = (f"{self.dataset}/{self.split}: {self.n_queries} queries, {self.level}, "
                f"model {self.model['name']} ({self.model['dtype']})")
        tail = []
        if self.problems:
            tail.append(f"{len(self.problems)} qrels/query line(s) reported as bad (listed in the JSON)")
        if self.json_path:
            tail.append(f"result: {self.json_path}\nrun:    {self.run_path}")
        return "\n".join([head, *rows, *tail])


def store_checksum(store: Store) -> str:
    return hashlib.sha256(store.manifest_path.read_bytes()).hexdigest()


def write_trec_run(path: Path, run: Run, tag: str = "embedlab") -> None:
    lines = []
    for q in sorted(run):
        ranked = sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"{q} Q0 {d} {r} {s:.6f} {tag}\n" for r, (d, s) in enumerate(ranked, start=1)]
    atomic_write_bytes(path, "".join(lines).encode())


def evaluate(store: Store | Path | str, data: Path | str, *, split: str = "test", k: int = 100,
             query_prefix: str | None = None, ignore_identical_ids: bool = True,
             metrics: tuple[str, ...] = DEFAULT_METRICS, device: str = "auto",
             write: bool = True, searcher: Searcher | None = None) -> EvalResult:
    """Evaluate ``store`` on the BEIR folder ``data``; write JSON and TREC run into ``store/_eval``."""
    store = store if isinstance(store, Store) else Store(store)
    data = Path(data)
    searcher = searcher or Searcher(store, device=device, query_prefix=query_prefix)
    beir = load_split(data, split)
    qids = sorted(beir.queries)
    extra = 1 if ignore_identical_ids else 0
    hits = searcher.search_documents([beir.queries[q] for q in qids], k + extra)
    run: Run = {}
    for q, hs in zip(qids, hits):
        docs = {h.doc_id: h.score for h in hs if not (ignore_identical_ids and h.doc_id == q)}
        run[q] = dict(list(docs.items())[:k])
    mean, per_query = ir_metrics(beir.qrels, run, metrics)
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
        truncated_documents=truncated,
        problems=[p.to_json() for p in beir.problems],
    )
    if write:
        base = store.root / EVAL_DIR / f"{data.name}-{split}"
        result.json_path, result.run_path = str(base) + ".json", str(base) + ".trec"
        write_trec_run(Path(result.run_path), run)
        atomic_write_json(Path(result.json_path), result.to_json())
    return result
