"""Cheaper vectors from an existing store: quality against bytes for each compression tier.

Every tier is built from the store's float32 vectors, without re-encoding, at each truncation
dimension asked for (Matryoshka: the first ``dim`` components, renormalised). Queries go
through the same transform as the corpus. Tiers:

- ``float32``: ``IndexFlatIP``, exact.
- ``float16``: ``IndexScalarQuantizer(QT_fp16)``; float queries against decoded half floats.
- ``int8``: ``IndexScalarQuantizer(QT_8bit)`` whose per-dimension ranges are ours
  (:func:`embedlab.ops.calibrate_int8_ranges` on a seeded corpus sample, percentile-clipped by
  default) and are serialized in the index. Search is asymmetric: the float query meets each
  document's decoded int8 vector.
- ``int8-sym``: the sentence-transformers protocol. Documents and queries are both quantized
  with the same ranges (:func:`embedlab.ops.quantize_int8`) and scored by the inner product
  of their int8 codes (``IndexScalarQuantizer(QT_8bit_direct_signed)``).
- ``binary``: sign bits in ``IndexBinaryFlat``, ranked by Hamming distance alone.
- ``binary+rescore``: the ``k * rescore_multiplier`` nearest Hamming candidates rescored by
  the float query against the documents' float32 (or dequantized int8) vectors, which stay on
  disk and are read for the candidates only; the index in memory is the binary one.
- ``pq``: ``IndexIVFPQ``, ``dim // 8`` bytes per vector by default.

Every index carries the store's FAISS ids (:func:`embedlab.store.faiss_ids` of the chunk ids).
Quality is measured as ``embedlab eval`` measures it: document level (max over chunks), BEIR's
identical-id rule, ``pytrec_eval`` metrics. Results go to ``OUT/_compress/``: the tidy table
(``compress.csv``), the plot (``compress.png``), the config (``config.json``) and each tier's
index under ``d<dim>/``.
"""

from __future__ import annotations

import enum
import io
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab import hardware, ops
from embedlab.beir import load_split
from embedlab.config import parse_enum, to_jsonable
from embedlab.metrics import ir_metrics, knn_recall
from embedlab.report import csv_text, markdown_table
from embedlab.store import Store, atomic_write_bytes, atomic_write_json, faiss_ids

COMPRESS_DIR = "_compress"
QUALITY = "ndcg@10"
METRICS = ("ndcg@10", "recall@100")


class Method(str, enum.Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT8_SYM = "int8-sym"
    BINARY = "binary"
    BINARY_RESCORE = "binary+rescore"
    PQ = "pq"


class Rescore(str, enum.Enum):
    FLOAT32 = "float32"
    INT8 = "int8"


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


# -- tiers ------------------------------------------------------------------------------------


class _RowMap:
    """FAISS ids back to row positions, vectorised (ids are any int64, -1 stays -1)."""

    def __init__(self, ids: np.ndarray):
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def __call__(self, I: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(self.sorted, I), 0, len(self.sorted) - 1)
        return np.where(I < 0, -1, self.order[pos])


@dataclass(kw_only=True)
class Tier:
    """One built index and what its search needs: the query transform and the rescoring data."""

    method: Method
    dim: int
    index: Any  # faiss.Index or faiss.IndexBinary, holding the store's FAISS ids
    code_bytes: int  # bytes one vector takes in the index (ids excluded)
    ranges: np.ndarray | None = None  # (2, dim) float32 int8 ranges
    rescore: np.ndarray | None = None  # (n, dim) float32 or int8 vectors, read for candidates only
    candidates: int = 0  # binary+rescore: Hamming candidates rescored (at least the k asked for)
    rows: _RowMap | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # settings to report (pq_m, nlist, ...)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` similarities (higher is better) and FAISS ids.

        Args:
            xq: ``(nq, d)`` float32 unit-norm queries at the store's full dimension.
            k: results per query.

        Returns:
            ``(D, I)``: ``(nq, k)`` float32 scores and int64 ids (-1 where fewer than ``k``).
        """
        q = ops.truncate(xq, self.dim)
        k = min(k, self.index.ntotal)
        if self.method is Method.INT8_SYM:
            return self.index.search(ops.quantize_int8(q, self.ranges).astype(np.float32), k)
        if self.method is Method.BINARY:
            D, I = self.index.search(ops.quantize_binary(q), k)
            return -D.astype(np.float32), I
        if self.method is Method.BINARY_RESCORE:
            c = min(max(k, self.candidates), self.index.ntotal)
            _, I = self.index.search(ops.quantize_binary(q), c)
            rows = self.rows(I)
            cand = self.rescore[np.maximum(rows, 0)]
            if cand.dtype == np.int8:
                cand = ops.dequantize_int8(cand, self.ranges)
            D = np.einsum("qd,qcd->qc", q, cand)
            D[rows < 0] = -np.inf
            top = np.argsort(-D, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(D, top, 1), np.take_along_axis(I, top, 1)
        return self.index.search(q, k)


def pq_shape(n: int, dim: int, cfg: CompressConfig) -> tuple[int, int, int]:
    """``(m, nbits, nlist)`` for IVF-PQ on ``n`` vectors of ``dim``.

    Codebooks get fewer than 8 bits when ``n`` is too small to train 256 centroids, and the
    lists hold about ``sqrt(n)`` vectors each (at least 39, FAISS's minimum per centroid).
    """
    m = cfg.pq_m or max(1, dim // 8)
    if dim % m:
        raise ValueError(f"pq_m ({m}) must divide the dimension {dim}")
    nbits = min(8, max(1, int(np.log2(max(2, n // 4)))))
    nlist = cfg.pq_nlist or max(1, min(int(np.sqrt(n) + 0.5), n // 39))
    return m, nbits, nlist


def build_tier(method: Method, dim: int, x: np.ndarray, ids: np.ndarray, cfg: CompressConfig,
               calibration: np.ndarray) -> Tier:
    """Build ``method``'s index at ``dim`` from the store's vectors.

    Args:
        method: the tier.
        dim: truncation dimension.
        x: ``(n, d)`` float32 unit-norm store vectors, ``d >= dim``.
        ids: ``(n,)`` int64 FAISS ids of the rows.
        cfg: the run's config (rescoring, PQ and int8 settings).
        calibration: ``(s,)`` row positions of the int8 calibration sample.
    """
    import faiss

    xt = ops.truncate(x, dim)
    ip = faiss.METRIC_INNER_PRODUCT
    if method in (Method.BINARY, Method.BINARY_RESCORE) and dim % 8:
        raise ValueError(f"binary tiers need a dimension that is a multiple of 8; got {dim}")
    ranges = None
    if method in (Method.INT8, Method.INT8_SYM) or (
            method is Method.BINARY_RESCORE and cfg.rescore_with is Rescore.INT8):
        ranges = ops.calibrate_int8_ranges(xt[calibration], percentile=cfg.int8_percentile)

    if method is Method.FLOAT32:
        return _flat(method, dim, faiss.IndexFlatIP(dim), xt, ids, 4 * dim)
    if method is Method.FLOAT16:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip)
        return _flat(method, dim, sq, xt, ids, 2 * dim)
    if method is Method.INT8:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip)
        faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]), sq.sq.trained)
        sq.is_trained = True
        return _flat(method, dim, sq, xt, ids, dim, ranges=ranges)
    if method is Method.INT8_SYM:
        sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, ip)
        codes = ops.quantize_int8(xt, ranges).astype(np.float32)
        return _flat(method, dim, sq, codes, ids, dim, ranges=ranges)
    if method in (Method.BINARY, Method.BINARY_RESCORE):
        index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(dim))
        index.add_with_ids(ops.quantize_binary(xt), ids)
        tier = Tier(method=method, dim=dim, index=index, code_bytes=dim // 8)
        if method is Method.BINARY_RESCORE:
            tier.rescore = xt if ranges is None else ops.quantize_int8(xt, ranges)
            tier.ranges, tier.rows = ranges, _RowMap(ids)
            tier.candidates = cfg.k * cfg.rescore_multiplier
        return tier
    if method is Method.PQ:
        m, nbits, nlist = pq_shape(len(xt), dim, cfg)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, ip)
        index.cp.seed = cfg.seed
        index.pq.cp.seed = cfg.seed
        index.pq.cp.min_points_per_centroid = 1  # train on the store, even if under 39 per centroid
        index.train(xt)
        index.add_with_ids(xt, ids)
        index.nprobe = min(cfg.pq_nprobe, nlist)
        return Tier(method=method, dim=dim, index=index, code_bytes=(m * nbits + 7) // 8,
                    extra={"pq_m": m, "pq_nbits": nbits, "pq_nlist": nlist, "pq_nprobe": index.nprobe})
    raise ValueError(f"unknown method {method!r}")


def _flat(method: Method, dim: int, inner: Any, x: np.ndarray, ids: np.ndarray, code_bytes: int,
          ranges: np.ndarray | None = None) -> Tier:
    import faiss

    index = faiss.IndexIDMap(inner)
    index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), ids)
    return Tier(method=method, dim=dim, index=index, code_bytes=code_bytes, ranges=ranges)


def write_tier(tier: Tier, folder: Path) -> int:
    """Write the tier's index (and rescoring vectors, int8 ranges) into ``folder``; total bytes."""
    import faiss

    name = tier.method.value
    if isinstance(tier.index, faiss.IndexBinary):
        data = faiss.serialize_index_binary(tier.index).tobytes()
    else:
        data = faiss.serialize_index(tier.index).tobytes()
    files = {f"{name}.faiss": data}
    if tier.rescore is not None:
        files[f"{name}.rescore.npy"] = _npy(tier.rescore)
    if tier.ranges is not None and tier.method is not Method.INT8:
        files[f"{name}.ranges.npy"] = _npy(tier.ranges)
    for fname, blob in files.items():
        atomic_write_bytes(folder / fname, blob)
    return sum(len(b) for b in files.values())


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# -- evaluation -------------------------------------------------------------------------------

Ranking = list[list[str]]  # per query, document ids best first


def document_ranking(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                     xq: np.ndarray, k: int, doc_of: dict[int, str], n_docs: int,
                     ) -> tuple[Ranking, list[list[float]]]:
    """Top-``k`` documents per query, a document scoring its best chunk (as ``Searcher`` does).

    Chunks are fetched in growing rounds until each query has ``k`` distinct documents.

    Args:
        search: ``(xq, depth) -> (D, I)`` chunk-level search returning FAISS ids.
        xq: ``(nq, d)`` float32 queries.
        k: documents per query.
        doc_of: FAISS id -> document id.
        n_docs: documents in the store (bounds ``k``).
    """
    k = min(k, n_docs)
    n_chunks = len(doc_of)
    docs: list[list[str]] = [[] for _ in range(len(xq))]
    scores: list[list[float]] = [[] for _ in range(len(xq))]
    todo = np.arange(len(xq))
    depth = min(n_chunks, max(2 * k, k + 16))
    while todo.size:
        D, I = search(xq[todo], depth)
        short = []
        for q, ds, is_ in zip(todo, D, I):
            best: dict[str, float] = {}
            for d, i in zip(ds, is_):
                if i >= 0 and doc_of[int(i)] not in best:
                    best[doc_of[int(i)]] = float(d)
            if len(best) >= k or depth >= n_chunks:
                docs[q], scores[q] = list(best)[:k], list(best.values())[:k]
            else:
                short.append(q)
        todo = np.asarray(short, dtype=np.int64)
        depth = min(n_chunks, depth * 2)
    return docs, scores


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
    import faiss

    from embedlab.search import Searcher

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
        searcher = Searcher(store, device=cfg.device, query_prefix=cfg.query_prefix)
        xq = searcher.encode_queries([beir.queries[q] for q in qids])
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
    threads_before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(cfg.threads)
    try:
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
    finally:
        faiss.omp_set_num_threads(threads_before)

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
