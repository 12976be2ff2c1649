"""Batch size x precision throughput of the encoder, and the saturation fit r(b).

For each dtype the encoder is loaded once, as ``encode`` configures it (on CPU it is
``torch.compile``-d unless ``compile=False``; each row records which). For each batch size b,
smallest first, one pass encodes the pool of real chunks in full batches of b (the pool is
cycled up to a multiple of b, in a seeded order; no token budget) through
:meth:`Encoder.encode_ids`, length-sorted as the pipeline does.
``warmup`` untimed passes come first (a compiled encoder meets every shape of the pass
there, not in the timed passes), then ``repeats`` timed passes between device syncs;
the median pass gives chunks/s and tokens/s (real tokens, padding excluded). Peak memory per
point is CUDA's max allocated bytes on a GPU and the process's peak RSS (VmHWM, reset per
point) on CPU. A batch that runs out of memory is recorded and ends that dtype's sweep.

The medians are fitted with ``r(b) = r_max * b / (b + b_half)`` (scipy ``curve_fit``,
relative residuals); the knee is the smallest batch whose fitted rate reaches 90 % of r_max.

Example:
    >>> res = run_sweep(SweepConfig(corpus="corpus.jsonl.gz", batch_sizes=(1, 2, 4), chunks=16))
    >>> print(res.table())       # one row per (dtype, batch): chunks/s, tokens/s, peak memory
    >>> res.fits["fp32"].knee    # smallest batch reaching 90 % of the fitted r_max
    >>> res.save("out")          # sweep.csv, sweep.json (read by `embedlab plan --from-sweep`), sweep.png
"""

from __future__ import annotations

import functools
import gc
import json
import math
import resource
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.config import ChunkConfig, Dtype, EncodeConfig, to_jsonable
from embedlab.device import (bf16_supported, empty_cache, gpu_name, peak_memory_mb, reset_peak_memory,
                             synchronize, torch_threads)
from embedlab.hardware import machine_info
from embedlab.planner import Curve, r_of_b
from embedlab.report import csv_text, machine_line, markdown_table

COLUMNS = ("dtype", "batch", "status", "chunks_per_s", "chunks_per_s_min", "chunks_per_s_max",
           "tokens_per_s", "speedup", "seconds", "chunks", "tokens", "pad_frac", "peak_mem_mb",
           "mem_kind", "repeats", "device", "model", "threads", "compiled", "note")


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    corpus: Path | None = None  # corpus read by run_sweep; None: pass the chunk ids to run_sweep
    docs: int = 200  # documents read and chunked
    chunks: int = 256  # chunks sampled from them (seeded): the pool one pass encodes
    chunk_tokens: int | None = None  # tokens per chunk incl. special tokens; None: model max length
    overlap: int | None = None  # shared by consecutive chunks; None: an eighth of the window
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)  # swept in ascending order
    dtypes: tuple[str, ...] = ("fp32", "bf16")  # one the device cannot run is skipped with a reason
    warmup: int = 1  # untimed passes before the timed ones at each point
    repeats: int = 3  # timed passes per point; the median is reported
    seed: int = 0  # chunk sample and pass order
    knee_frac: float = 0.9  # the knee reaches this fraction of r_max
    encode: EncodeConfig = field(default_factory=EncodeConfig)  # model, device, threads, compile;
    # dtype is swept and max_batch_tokens ignored (batches are always b rows)

    def __post_init__(self) -> None:
        if self.corpus is not None:
            object.__setattr__(self, "corpus", Path(self.corpus))
        sizes = tuple(sorted({int(b) for b in self.batch_sizes}))
        if not sizes or sizes[0] < 1:
            raise ValueError(f"batch sizes must be >= 1; got {self.batch_sizes}")
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "dtypes", tuple(str(getattr(d, "value", d)) for d in self.dtypes))
        if not self.dtypes:
            raise ValueError("dtypes must not be empty")
        for name in ("docs", "chunks", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0; got {self.warmup}")
        if not 0 < self.knee_frac < 1:
            raise ValueError(f"knee_frac must be in (0, 1); got {self.knee_frac}")
        ChunkConfig(chunk_tokens=self.chunk_tokens, overlap=self.overlap)


@dataclass(frozen=True, kw_only=True)
class SaturationFit:
    """``r(b) = r_max * b / (b + b_half)`` fitted to measured rates."""

    r_max: float  # chunks/s
    b_half: float  # chunks per batch
    r_max_se: float | None  # standard errors from the covariance; None when it cannot be estimated
    b_half_se: float | None
    rel_rms: float  # RMS of (fitted - measured) / measured over the points
    knee: int  # smallest integer batch whose fitted rate reaches knee_frac * r_max
    knee_measured: int | None  # smallest measured batch whose rate reaches knee_frac * r_max
    points: int
    max_batch: int  # largest batch measured; a knee beyond it is an extrapolation

    @property
    def curve(self) -> Curve:
        return Curve(r_max=self.r_max, b_half=self.b_half)


def fit_saturation(b: Sequence[float], r: Sequence[float], knee_frac: float = 0.9) -> SaturationFit:
    """Fit r_max and b_half to rates ``r`` (chunks/s) measured at batch sizes ``b``.

    Residuals are relative (``sigma = r``), so small and large batches weigh alike.

    Args:
        b: (n,) batch sizes, n >= 2.
        r: (n,) measured chunks/s.
        knee_frac: fraction of r_max that defines the knee.

    Example:
        >>> f = fit_saturation([8, 32, 128, 512, 2048], [69.2, 225, 514.3, 757.9, 859.7])
        >>> round(f.r_max), round(f.b_half)
        (900, 96)
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    b = np.asarray(b, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if b.shape != r.shape or b.ndim != 1 or b.size < 2:
        raise ValueError(f"need two or more (b, r) points of equal length; got {b.shape} and {r.shape}")
    if (b <= 0).any() or (r <= 0).any():
        raise ValueError("batch sizes and rates must be > 0")
    p0 = (1.2 * r.max(), float(np.median(b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        (r_max, b_half), cov = curve_fit(r_of_b, b, r, p0=p0, sigma=r, bounds=([0, 0], [np.inf, np.inf]),
                                         maxfev=20000)
    se = np.sqrt(np.diag(cov)) if np.isfinite(cov).all() else np.full(2, np.nan)
    rel = float(np.sqrt(np.mean(((r_of_b(b, r_max, b_half) - r) / r) ** 2)))
    curve = Curve(r_max=float(r_max), b_half=float(b_half))
    reached = sorted(int(x) for x, y in zip(b, r) if y >= knee_frac * r_max)
    return SaturationFit(r_max=float(r_max), b_half=float(b_half),
                         r_max_se=float(se[0]) if np.isfinite(se[0]) else None,
                         b_half_se=float(se[1]) if np.isfinite(se[1]) else None,
                         rel_rms=rel, knee=curve.knee(knee_frac),
                         knee_measured=reached[0] if reached else None,
                         points=int(b.size), max_batch=int(b.max()))


def unsupported_reason(dtype: str, device: str) -> str | None:
    """Why ``dtype`` cannot be swept on ``device`` (``"cpu"``, ``"cuda[:N]"``), or None if it can."""
    allowed = [d.value for d in Dtype]
    if dtype not in allowed:
        return f"the encoder has no {dtype} dtype (embedlab.config.Dtype: {', '.join(allowed)})"
    if device.startswith("cuda"):
        if dtype == "int8":
            return "int8 is dynamic quantization, which runs on the CPU only"
        if dtype == Dtype.BF16.value and not bf16_supported(device):
            return f"{gpu_name(device)} does not support bf16"
        return None
    if dtype == Dtype.FP16.value:
        return "fp16 has no fast CPU kernels (several times slower than fp32); sweep it on a GPU"
    return None


def describe_machine(info: dict[str, Any]) -> str:
    """One line naming the machine and device (:func:`embedlab.report.machine_line`)."""
    return "machine: " + machine_line(info)


def sample_chunks(cfg: SweepConfig, tokenizer, max_length: int) -> list[np.ndarray]:
    """``cfg.chunks`` real chunks (token ids) of the first ``cfg.docs`` documents, seeded."""
    from embedlab.chunking import Chunker
    from embedlab.config import CorpusConfig
    from embedlab.corpus import Document, read_corpus

    from embedlab.chunkfile import chunk_folder, folder_token_ids

    if cfg.corpus is None:
        raise ValueError("SweepConfig.corpus is None and no chunk ids were given")
    folder = chunk_folder(cfg.corpus)
    if folder is not None:  # a chunk folder (embedlab chunk): its token ids, no tokenizer run
        ids = folder_token_ids(folder, tokenizer, cfg.docs, cfg.chunk_tokens, max_length)
    else:
        docs = [r for r in read_corpus(CorpusConfig(path=cfg.corpus, limit=cfg.docs)) if isinstance(r, Document)]
        ids = [c.input_ids for c in Chunker(tokenizer, cfg.chunk_tokens or max_length, cfg.overlap).chunk(docs)[0]]
    if not ids:
        raise ValueError(f"{cfg.corpus}: no chunks in the first {cfg.docs} documents")
    pick = np.random.default_rng(cfg.seed).choice(len(ids), size=min(cfg.chunks, len(ids)), replace=False)
    return [ids[i] for i in np.sort(pick)]


class _Memory:
    """Peak memory of one point: CUDA max allocated, or the process's RSS high-water mark."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device
        self.kind = "cuda_max_allocated" if self.cuda else "rss_peak"

    def reset(self) -> None:
        if self.cuda:
            reset_peak_memory(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self.kind = "rss_peak_process"  # no reset: the process-lifetime peak

    def peak_mb(self) -> float:
        if self.cuda:
            return peak_memory_mb(self.device)
        try:
            with open("/proc/self/status") as fh:
                kb = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        except (OSError, StopIteration):
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def _pad_frac(lengths: np.ndarray, b: int) -> float:
    """Padding share of a pass encoded longest first in batches of ``b``."""
    srt = np.sort(lengths)[::-1]
    padded = sum(int(srt[i]) * len(srt[i:i + b]) for i in range(0, len(srt), b))
    return 1.0 - float(srt.sum()) / padded


@dataclass(frozen=True)
class SweepResult:
    """Tidy rows (one per point, plus one per skipped dtype), fits per dtype, and the machine.

    A row's ``speedup`` is its chunks/s over the first point measured (first dtype, smallest
    batch), the peer every other point is compared with.
    """

    config: SweepConfig
    rows: list[dict[str, Any]]
    fits: dict[str, SaturationFit]
    machine: dict[str, Any]

    def table(self) -> str:
        """Markdown table of the measured points."""
        def num(v: Any, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        return markdown_table(
            ["dtype", "mode", "batch", "chunks/s (median)", "min-max", "tokens/s", "x base", "pad %",
             "peak MB", "status"],
            [[r["dtype"], "" if r.get("compiled") is None else ("compiled" if r["compiled"] else "eager"),
              num(r["batch"], "d"), num(r["chunks_per_s"], ",.1f"),
              "" if r["chunks_per_s_min"] is None else
              f"{r['chunks_per_s_min']:,.1f}-{r['chunks_per_s_max']:,.1f}",
              num(r["tokens_per_s"], ",.0f"), num(r["speedup"], ".2f"),
              num(None if r["pad_frac"] is None else 100 * r["pad_frac"], ".1f"),
              num(r["peak_mem_mb"], ",.0f"), r["status"] + (f": {r['note']}" if r["note"] else "")]
             for r in self.rows], align=True)

    def fits_table(self) -> str:
        """Markdown table of r_max, b_half (with standard errors), fit error and knee per dtype."""
        def pm(v: float, se: float | None) -> str:
            return f"{v:,.1f}" + ("" if se is None else f" ± {se:,.1f}")

        return markdown_table(
            ["dtype", "r_max (chunks/s)", "b_half", "fit rel. RMS", "knee (fit)", "knee (measured)",
             "points", "max batch"],
            [[d, pm(f.r_max, f.r_max_se), pm(f.b_half, f.b_half_se), f"{f.rel_rms:.1%}",
              f"{f.knee}" + (" (extrapolated)" if f.knee > f.max_batch else ""),
              "" if f.knee_measured is None else f.knee_measured, f.points, f.max_batch]
             for d, f in self.fits.items()], align=True)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(csv_text(self.rows, COLUMNS))
        return path

    def to_json(self, path: str | Path) -> Path:
        """Config, machine, rows and fits as JSON; ``embedlab plan --from-sweep`` reads it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"config": to_jsonable(self.config), "machine": self.machine, "rows": self.rows,
               "fits": {d: asdict(f) for d, f in self.fits.items()}}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path

    def figure(self):
        """Matplotlib Figure of the measured medians (min-max bars) and the fitted curve per dtype."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9.5, 4.5))
        ax = fig.subplots()
        for i, dtype in enumerate(dict.fromkeys(r["dtype"] for r in self.rows if r["status"] == "ok")):
            pts = [r for r in self.rows if r["dtype"] == dtype and r["status"] == "ok"]
            b = np.array([r["batch"] for r in pts], dtype=float)
            y = np.array([r["chunks_per_s"] for r in pts])
            err = np.array([[r["chunks_per_s"] - r["chunks_per_s_min"] for r in pts],
                            [r["chunks_per_s_max"] - r["chunks_per_s"] for r in pts]])
            color = f"C{i}"
            ax.errorbar(b, y, yerr=err, fmt="o", color=color, capsize=3, label=f"{dtype} measured")
            fit = self.fits.get(dtype)
            if fit is not None:
                xs = np.geomspace(1, min(max(b.max(), fit.knee), 4 * b.max()) * 1.5, 200)
                ax.plot(xs, fit.curve.rate(xs), "-", color=color,
                        label=f"{dtype} fit: r_max={fit.r_max:,.0f}, b_half={fit.b_half:,.1f}, "
                              f"knee={fit.knee}")
                if fit.knee <= xs[-1]:
                    ax.axvline(fit.knee, color=color, ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (chunks)")
        ax.set_ylabel("chunks/s per worker")
        where = self.machine.get("gpu", self.machine.get("cpu", ""))
        ax.set_title(f"{self.config.encode.model.split('/')[-1]} on {where}  "
                     f"(dotted: knee, {self.config.knee_frac:.0%} of r_max)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        fig.tight_layout()
        return fig

    def plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure().savefig(path, dpi=120)
        return path

    def save(self, out: str | Path, stem: str = "sweep") -> list[Path]:
        """Write ``stem``.csv, .json and .png into the folder ``out``."""
        out = Path(out)
        return [self.to_csv(out / f"{stem}.csv"), self.to_json(out / f"{stem}.json"),
                self.plot(out / f"{stem}.png")]


def read_sweep_fits(path: str | Path) -> dict[str, SaturationFit]:
    """The per-dtype fits of a sweep written by :meth:`SweepResult.to_json`."""
    doc = json.loads(Path(path).read_text())
    return {d: SaturationFit(**f) for d, f in doc.get("fits", {}).items()}


def _row(cfg: SweepConfig, device: str, dtype: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(dtype=dtype, device=device, model=cfg.encode.model, note="")
    row.update(values)
    return row


def _measure_point(encoder, ids: list[np.ndarray], b: int, cfg: SweepConfig, mem: _Memory,
                   sync) -> dict[str, Any]:
    n = math.ceil(len(ids) / b) * b
    order = np.resize(np.random.default_rng(cfg.seed).permutation(len(ids)), n)
    batch_ids = [ids[i] for i in order]
    lengths = np.fromiter((len(x) for x in batch_ids), dtype=np.int64, count=n)
    mem.reset()
    for _ in range(cfg.warmup):
        encoder.encode_ids(batch_ids, batch_size=b)
    sync()
    times = []
    for _ in range(cfg.repeats):
        sync()
        t0 = time.perf_counter()
        encoder.encode_ids(batch_ids, batch_size=b)
        sync()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"batch": b, "status": "ok", "chunks_per_s": n / t, "chunks_per_s_min": n / max(times),
            "chunks_per_s_max": n / min(times), "tokens_per_s": float(lengths.sum()) / t, "seconds": t,
            "chunks": n, "tokens": int(lengths.sum()), "pad_frac": _pad_frac(lengths, b),
            "peak_mem_mb": mem.peak_mb(), "mem_kind": mem.kind, "repeats": cfg.repeats}


def run_sweep(cfg: SweepConfig, ids: Sequence[np.ndarray] | None = None, progress=None) -> SweepResult:
    """Measure every (dtype, batch) point of ``cfg`` and fit r(b) per dtype.

    Args:
        cfg: the sweep.
        ids: the pool of chunks as (n_tokens,) int token-id arrays; None: sample ``cfg.chunks``
            chunks of ``cfg.corpus`` with the model's tokenizer.
        progress: called with each finished row (e.g. ``print``); None: silent.

    Returns:
        A :class:`SweepResult`; a dtype the device cannot run has one ``skipped`` row with the
        reason, and the batch that ran out of memory an ``oom`` row.
    """
    from embedlab.encoder import Encoder, pick_device

    device = pick_device(cfg.encode.device)
    sync = functools.partial(synchronize, device)
    mem = _Memory(device)
    pool = list(ids) if ids is not None else None
    rows: list[dict[str, Any]] = []
    fits: dict[str, SaturationFit] = {}
    base: float | None = None

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    for dtype in cfg.dtypes:
        reason = unsupported_reason(dtype, device)
        if reason:
            emit(_row(cfg, device, dtype, status="skipped", note=reason))
            continue
        encoder = Encoder(replace(cfg.encode, dtype=dtype, device=device, max_batch_tokens=0))
        if pool is None:
            pool = sample_chunks(cfg, encoder.tokenizer, encoder.info.max_seq_length)
        threads = torch_threads()
        compiled = bool(getattr(encoder, "compiled", False))
        for b in cfg.batch_sizes:
            try:
                point = _measure_point(encoder, pool, b, cfg, mem, sync)
            except (RuntimeError, MemoryError) as e:
                if not _is_oom(e):
                    raise
                emit(_row(cfg, device, dtype, batch=b, status="oom", threads=threads, compiled=compiled,
                          peak_mem_mb=mem.peak_mb(), mem_kind=mem.kind,
                          note=f"out of memory; larger batches not tried ({str(e).splitlines()[0][:120]})"))
                gc.collect()
                empty_cache(device)
                break
            base = base or point["chunks_per_s"]
            emit(_row(cfg, device, dtype, threads=threads, compiled=compiled,
                      speedup=point["chunks_per_s"] / base, **point))
        ok = [r for r in rows if r["dtype"] == dtype and r["status"] == "ok"]
        if len(ok) >= 2:
            fits[dtype] = fit_saturation([r["batch"] for r in ok], [r["chunks_per_s"] for r in ok],
                                         cfg.knee_frac)
        del encoder
        gc.collect()
        empty_cache(device)
    return SweepResult(config=cfg, rows=rows, fits=fits, machine=machine_info(device))
