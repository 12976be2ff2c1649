"""Cheaper vectors from an existing store: quality against bytes for each compression tier.

Every tier (:mod:`embedlab.tiers`: float32, float16, int8, int8-sym, binary, binary+rescore,
IVF-PQ) is built from the store's float32 vectors, without re-encoding, at each truncation
dimension asked for; int8 ranges are calibrated on a seeded corpus sample. Quality is measured
as ``embedlab eval`` measures it: document level (max over chunks,
:func:`embedlab.index.document_ranking`), BEIR's identical-id rule, ``pytrec_eval`` metrics.
Results go to ``OUT/_compress/``: the tidy table (``compress.csv``), the plot
(``compress.png``), the config (``config.json``) and each tier's index under ``d<dim>/``.
"""

from __future__ import annotations

import io
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab import hardware
from embedlab.beir import load_split
from embedlab.config import parse_enum, to_jsonable
from embedlab.index import document_ranking, faiss_ids, faiss_threads
from embedlab.metrics import ir_metrics, knn_recall
from embedlab.report import csv_text, markdown_table
from embedlab.search import QueryEncoder
from embedlab.store import Store, atomic_write_bytes, atomic_write_json
from embedlab.tiers import Method, Rescore, Tier, build_tier, write_tier

COMPRESS_DIR = "_compress"
QUALITY = "ndcg@10"
METRICS = ("ndcg@10", "recall@100")
DEFAULT_METHODS = (Method.FLOAT32, Method.FLOAT16, Method.INT8, Method.BINARY,
                   Method.BINARY_RESCORE, Method.PQ)


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    dims: tuple[int, ...] = ()  # truncation dimensions; empty: the store's own dimension only
    methods: tuple[Method, ...] = DEFAULT_METHODS
    eval_data: Path | None = None  # BEIR folder; None: no IR metrics, queries are corpus vectors
    split: str = "test"  # qrels split to score
    k: int = 100  # documents retrieved per query (Recall@100 needs 100)
    rescore_multiplier: int = 4  # binary+rescore: rescore the top k * m Hamming candidates
    rescore_with: Rescore = Rescore.FLOAT32  # vectors the candidates are rescored with
    int8_percentile: float = 99.9  # int8 range per dimension: [100-p, p] percentiles; 100: min/max
    calibration_sample: int = 100_000  # corpus vectors (seeded sample) that calibrate int8 ranges
    pq_m: int | None = None  # PQ sub-quantizers; None: dim // 8 (the bytes of the binary tier)
    pq_nlist: int | None = None  # IVF lists; None: about sqrt(vectors)
    pq_nprobe: int = 16  # IVF lists visited per query
    threads: int = 1  # FAISS OpenMP threads for building and searching
    batch_size: int = 64  # queries per search call when timing
    repeats: int = 5  # timed passes over all queries after one warm-up; the median is reported
    seed: int = 0  # calibration sample, IVF-PQ training, corpus-vector queries
    ignore_identical_ids: bool = True  # BEIR: drop a retrieved document whose id is the query id
    subset: bool = False  # score only qrels whose document is in the store (a partial corpus)
    query_prefix: str | None = None  # None: the model's own query prompt
    device: str = "auto"  # query encoder device
    write: bool = True  # write indexes, CSV, plot and config under OUT/_compress

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "methods", tuple(parse_enum(Method, m, "method") for m in self.methods))
        object.__setattr__(self, "rescore_with", parse_enum(Rescore, self.rescore_with, "rescore_with"))
        if self.eval_data is not None:
            object.__setattr__(self, "eval_data", Path(self.eval_data))
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for name in ("k", "rescore_multiplier", "calibration_sample", "pq_nprobe", "threads",
                     "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if any(d < 1 for d in self.dims):
            raise ValueError(f"dims must be >= 1; got {self.dims}")
        if not 50 < self.int8_percentile <= 100:
            raise ValueError(f"int8_percentile must be in (50, 100]; got {self.int8_percentile}")


@dataclass(kw_only=True)
class CompressResult:
    rows: list[dict[str, Any]]  # one per (dim, method): config, quality, cost columns
    config: dict[str, Any]
    machine: dict[str, Any]
    csv_path: str | None = None
    plot_path: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)  # bad qrels / query lines

    def table(self) -> str:
        """The rows as a Markdown table, in run order (dimension, then method)."""
        cols = [("dim", "dim", "{}"), ("method", "method", "{}"), ("searched B/vec", "bytes_per_vector", "{}"),
                ("stored B/vec", "stored_bytes_per_vector", "{}"),
                ("nDCG@10", "ndcg@10", "{:.2f}"), ("retention %", "ndcg@10_retention", "{:.1f}"),
                ("R@100", "recall@100", "{:.2f}"), ("R@100 ret. %", "recall@100_retention", "{:.1f}"),
                ("top-10 overlap", "overlap@10", "{:.3f}"), ("index KiB", "index_bytes", "{}"),
                ("build s", "build_s", "{:.3f}"), ("ms/query", "search_ms_per_query", "{:.4f}"),
                ("frontier (stored)", "pareto", "{}"), ("frontier (searched)", "pareto_searched", "{}")]
        scale = {"ndcg@10": 100, "recall@100": 100, "ndcg@10_retention": 100,
                 "recall@100_retention": 100}
        rows = []
        for r in self.rows:
            cells = []
            for _, key, fmt in cols:
                v = r.get(key)
                if v is None or v == "":
                    cells.append("")
                elif key == "index_bytes":
                    cells.append(f"{v / 1024:.0f}")
                elif key.startswith("pareto"):
                    cells.append("*" if v else "")
                else:
                    cells.append(fmt.format(v * scale.get(key, 1)))
            rows.append(cells)
        return markdown_table([c[0] for c in cols], rows)


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, cores, memory and the FAISS thread count the timings used (no torch)."""
    return hardware.machine_info(faiss_threads=threads)


# -- evaluation -------------------------------------------------------------------------------

Ranking = list[list[str]]  # per query, document ids best first


def _run(qids: Sequence[str], docs: Ranking, scores: list[list[float]], k: int,
         ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    """BEIR run ``{qid: {doc: score}}`` of the top ``k``, as ``embedlab eval`` builds it."""
    run = {}
    for q, ds, ss in zip(qids, docs, scores):
        kept = {d: s for d, s in zip(ds, ss) if not (ignore_identical_ids and d == q)}
        run[q] = dict(list(kept.items())[:k])
    return run


def overlap_at(run: dict[str, dict[str, float]], exact: dict[str, dict[str, float]], k: int = 10) -> float:
    """Mean fraction of each query's exact top-``k`` documents that ``run``'s top-``k`` also holds."""
    names: dict[str, int] = {}

    def ids(r: dict[str, dict[str, float]]) -> np.ndarray:
        out = np.full((len(exact), k), -1, dtype=np.int64)
        for row, q in enumerate(exact):
            top = sorted(r.get(q, {}).items(), key=lambda kv: -kv[1])[:k]
            out[row, :len(top)] = [names.setdefault(d, len(names)) for d, _ in top]
        return out

    return knn_recall(ids(run), ids(exact))


def time_search(tier: Tier, xq: np.ndarray, k: int, batch_size: int, repeats: int) -> list[float]:
    """Seconds per query of ``repeats`` passes over ``xq`` in batches, after one warm-up pass."""
    times = []
    for rep in range(repeats + 1):
        t0 = time.perf_counter()
        for s in range(0, len(xq), batch_size):
            tier.search(xq[s:s + batch_size], k)
        if rep:
            times.append((time.perf_counter() - t0) / max(1, len(xq)))
    return times


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """True for each point no other point beats: as cheap or cheaper and strictly better, or vice versa."""
    out = []
    for c, q in zip(cost, quality):
        out.append(not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for c2, q2 in zip(cost, quality)))
    return out


def plot_tradeoff(rows: list[dict[str, Any]], path: Path, *, quality: str = QUALITY,
                  title: str = "") -> None:
    """Quality against bytes stored per vector, one line per method through its dimensions, frontier marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["stored_bytes_per_vector"], r[quality], r["dim"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=method)
        for b, v, d in pts:
            ax.annotate(str(d), (b, 100 * v), textcoords="offset points", xytext=(3, 3), fontsize=7)
    front = sorted((r["stored_bytes_per_vector"], r[quality]) for r in rows if r["pareto"])
    ax.step([p[0] for p in front], [100 * p[1] for p in front], where="post", color="black",
            linestyle="--", linewidth=1, label="Pareto frontier (bytes stored)")
    ax.scatter([p[0] for p in front], [100 * p[1] for p in front], s=140, facecolors="none",
               edgecolors="black", zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes stored per vector: index codes + rescoring vectors (log scale)")
    ax.set_ylabel(f"{quality} x 100")
    ax.set_title(title or f"{quality} against bytes stored per vector (labels: dimensions)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# -- the experiment ---------------------------------------------------------------------------


def load_vectors(store: Store) -> tuple[np.ndarray, list[str], list[str]]:
    """``(n, d)`` float32 vectors, chunk ids and document ids of every row, in manifest order."""
    xs, chunk_ids, doc_ids = [], [], []
    for t in store.iter_tables(columns=["chunk_id", "doc_id", "vector"]):
        dim = t.schema.field("vector").type.list_size
        xs.append(t.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim))
        chunk_ids += t.column("chunk_id").to_pylist()
        doc_ids += t.column("doc_id").to_pylist()
    return np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), chunk_ids, doc_ids


def run_compress(store: Store | Path | str, cfg: CompressConfig) -> CompressResult:
    """Build, search, score and time every (dim, method) tier of ``cfg`` on ``store``."""
    store = store if isinstance(store, Store) else Store(store)
    store.require_verified()
    meta = store.meta()
    x, chunk_ids, doc_ids = load_vectors(store)
    full = x.shape[1]
    dims = cfg.dims or (full,)
    if any(d > full for d in dims):
        raise ValueError(f"dims {dims} exceed the store's dimension {full}")
    ids = faiss_ids(chunk_ids)
    doc_of = dict(zip(ids.tolist(), doc_ids))
    n_docs = len(set(doc_ids))
    rng = np.random.default_rng(cfg.seed)
    calibration = np.sort(rng.permutation(len(x))[:cfg.calibration_sample])

    problems: list[dict[str, Any]] = []
    if cfg.eval_data is not None:
        beir = load_split(cfg.eval_data, cfg.split)
        beir = beir.restricted_to(set(doc_ids)) if cfg.subset else beir
        problems = [p.to_json() for p in beir.problems]
        qids = sorted(beir.queries)
        encode = QueryEncoder(meta, device=cfg.device, query_prefix=cfg.query_prefix)
        xq = encode([beir.queries[q] for q in qids])
        dataset, qrels = cfg.eval_data.name, beir.qrels
    else:
        pick = np.sort(rng.permutation(len(x))[:1000])
        qids, xq, dataset, qrels = [f"row{i}" for i in pick], x[pick], "corpus-sample", None
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    extra = 1 if cfg.ignore_identical_ids else 0
    depth = cfg.k + extra

    def scored(tier: Tier) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        docs, scores = document_ranking(tier.search, xq, depth, doc_of, n_docs)
        run = _run(qids, docs, scores, cfg.k, cfg.ignore_identical_ids)
        return run, (ir_metrics(qrels, run, METRICS)[0] if qrels is not None else {})

    if cfg.write:  # the folder holds one run: no index of an earlier run is left beside this table
        shutil.rmtree(store.root / COMPRESS_DIR, ignore_errors=True)
    with faiss_threads(cfg.threads):
        exact_run, exact_metrics = scored(build_tier(Method.FLOAT32, full, x, ids, cfg, calibration))
        rows = []
        for dim in dims:
            for method in cfg.methods:
                t0 = time.perf_counter()
                tier = build_tier(method, dim, x, ids, cfg, calibration)
                build_s = time.perf_counter() - t0
                run, mean = scored(tier)
                times = time_search(tier, xq, depth, cfg.batch_size, cfg.repeats)
                index_bytes = (write_tier(tier, store.root / COMPRESS_DIR / f"d{dim}")
                               if cfg.write else None)
                rows.append(_row(cfg, meta, dataset, len(qids), len(x), method, dim, tier, mean,
                                 exact_metrics, overlap_at(run, exact_run), index_bytes, build_s, times))

    quality = QUALITY if qrels is not None else "overlap@10"
    for key, cost in (("pareto", "stored_bytes_per_vector"), ("pareto_searched", "bytes_per_vector")):
        for r, p in zip(rows, pareto_front([r[cost] for r in rows], [r[quality] for r in rows])):
            r[key] = p  # "pareto": the frontier on bytes stored (index + rescoring vectors)
    result = CompressResult(rows=rows, config=to_jsonable(cfg), machine=machine_info(cfg.threads),
                            problems=problems)
    if cfg.write:
        folder = store.root / COMPRESS_DIR
        atomic_write_json(folder / "config.json", {"config": result.config, "machine": result.machine,
                                                   "store": str(store.root), "model": meta.get("model")})
        atomic_write_bytes(folder / "compress.csv", csv_text(rows).encode())
        plot_tradeoff(rows, folder / "compress.png", quality=quality,
                      title=f"{dataset}, {meta.get('model')}: {quality} against bytes stored per vector")
        result.csv_path, result.plot_path = str(folder / "compress.csv"), str(folder / "compress.png")
    return result


def _row(cfg: CompressConfig, meta: dict[str, Any], dataset: str, n_queries: int, n_vectors: int,
         method: Method, dim: int, tier: Tier, mean: dict[str, float], exact: dict[str, float],
         overlap: float, index_bytes: int | None, build_s: float, times: list[float]) -> dict[str, Any]:
    ranges = "minmax" if cfg.int8_percentile == 100 else f"p{cfg.int8_percentile:g}"
    row: dict[str, Any] = {
        "dataset": dataset, "split": cfg.split, "model": meta.get("model"), "n_queries": n_queries,
        "n_vectors": n_vectors, "method": method.value, "dim": dim,
        "int8_ranges": "" if tier.ranges is None else ranges,
        "rescore": "" if tier.rescore is None else f"{cfg.rescore_with.value}, top {tier.candidates} Hamming",
        "bytes_per_vector": tier.code_bytes,
        "rescore_bytes_per_vector": 0 if tier.rescore is None else tier.rescore.itemsize * dim,
    }
    row["stored_bytes_per_vector"] = row["bytes_per_vector"] + row["rescore_bytes_per_vector"]
    for m in METRICS:
        measured = m in mean and int(m.split("@")[1]) <= cfg.k  # recall@100 needs 100 documents
        row[m] = mean[m] if measured else None
        row[f"{m}_retention"] = mean[m] / exact[m] if measured and exact.get(m) else None
    row.update({
        "overlap@10": overlap, "index_bytes": index_bytes, "build_s": build_s,
        "search_ms_per_query": 1000 * statistics.median(times),
        "search_ms_std": 1000 * statistics.pstdev(times), "k": cfg.k, "batch_size": cfg.batch_size,
        "threads": cfg.threads, "repeats": cfg.repeats, **tier.extra,
    })
    return row


def compress(store: Store | Path | str, *, dims: Sequence[int] = (),
             methods: Sequence[str | Method] = DEFAULT_METHODS, eval_data: Path | str | None = None,
             **options: Any) -> CompressResult:
    """Build every compression tier of a store, score each on a BEIR split, write table and plot.

    Example:
        >>> r = compress("runs/scifact", dims=(384, 128), methods=("float32", "int8", "binary+rescore"),
        ...              eval_data="../shared/data/scifact")
        >>> [(row["method"], row["dim"], row["bytes_per_vector"]) for row in r.rows][:2]
        [('float32', 384, 1536), ('int8', 384, 384)]

    Args:
        store: store folder written by ``embedlab embed``.
        dims: truncation dimensions; empty: the store's own.
        methods: tiers, any of :class:`Method`.
        eval_data: BEIR folder to score on; ``None`` scores top-10 overlap with exact search only.
        **options: any other :class:`CompressConfig` field (``k``, ``threads``, ``batch_size``, ...).

    Returns:
        The tidy rows, also written to ``OUT/_compress/compress.csv`` with the plot ``compress.png``.
    """
    cfg = CompressConfig(dims=tuple(dims), methods=tuple(methods), eval_data=eval_data, **options)
    return run_compress(store, cfg)
