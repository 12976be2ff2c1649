"""The encoder on a GPU (issue 21): throughput, MFU and batch knee per model x dtype, against
sentence-transformers, vector parity with CPU fp32, and tuning variants, in one time-boxed run.

    python benchmarks/gpu/bench_gpu_encoder.py --out OUT [--budget 420] [--dry-run]

Run through ``benchmarks/gpu/run_device.sh`` on the device machine. Models are all-MiniLM-L6-v2
and bge-base-en-v1.5 built from their configs with random weights (speed does not depend on
weight values); the parity check uses MiniLM's real weights carried in fp16. Texts: SciFact cut
at 256 tokens by embedlab's chunker, and SciFact's queries (short texts), both from the carry
folder that ``prepare_carry.py`` writes (``--dry-run`` falls back to the bundled sample corpus).

Each point runs embedlab's CUDA default path, ``Encoder.encode_ids`` (length-sorted batches of b
rows, no token budget), over a pool of max(b, --pool-rows) texts: one warm-up pass, then timed
passes between device syncs until at least 3 and --min-seconds; the median gives chunks/s,
tokens/s (real tokens) and MFU = model FLOPs per second (2 x matmul weights + attention, per
real token; gpu_common.model_flops) over the datasheet's dense fp16/bf16 peak (989 TFLOP/s on
an H100), for every dtype, and over a matmul ceiling measured in the same run. r(b) is fitted
with embedlab's sweep fit (embedlab.experiments.sweeps.fit_saturation); the knee is the
smallest batch reaching 90% of r_max.

Results are rewritten after every point (OUT/encode_gpu.json and .md), so a run stopped by its
time limit still returns what it measured; sections that do not fit the budget say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from gpu_common import (ARCH_NAMES, ARCHS, CARRY, Budget, Results, build_model_dir, cuda_device_info,  # noqa: E402
                        cycle_pool, datasheet_peak, model_flops, read_jsonl_gz)
from gpu_report import render_encoder  # noqa: E402

GPU_BATCHES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DRY_BATCHES = (4, 8)
DRY_TEXT_CHARS = 160  # dry run: short texts, so a tiny model on a busy CPU runs each point in milliseconds


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for encode_gpu.json / .md")
    p.add_argument("--carry", type=Path, default=CARRY / "enc", help="folder prepare_carry.py wrote")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 420; dry 900)")
    p.add_argument("--dry-run", action="store_true", help="tiny models and sizes (CPU): the same code path")
    p.add_argument("--models", default="minilm,bge-base")
    p.add_argument("--dtypes", default="fp16,bf16,fp32")
    p.add_argument("--batch-sizes", default=None, help="comma list (default 8..4096, dry run 4,8,16)")
    p.add_argument("--pool-rows", type=int, default=None, help="texts per pass at least (default 512; dry 8)")
    p.add_argument("--min-seconds", type=float, default=None, help="timed seconds per point at least")
    p.add_argument("--skip", default="", help="sections to leave out: parity,st,variants,compile,queries")
    a = p.parse_args(argv)
    a.batch_sizes = tuple(int(x) for x in a.batch_sizes.split(",")) if a.batch_sizes else (
        DRY_BATCHES if a.dry_run else GPU_BATCHES)
    a.pool_rows = a.pool_rows or (8 if a.dry_run else 512)
    a.budget = a.budget or (900.0 if a.dry_run else 420.0)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if a.dry_run else 0.4)
    a.skip = set(filter(None, a.skip.split(",")))
    return a


class Bench:
    """State shared by the sections: device, texts, models, results and the clock."""

    def __init__(self, a: argparse.Namespace):
        import torch

        self.a, self.torch = a, torch
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.budget = Budget(a.budget)
        self.res = Results(a.out, "encode_gpu", render_encoder)
        self.info = cuda_device_info()
        self.peak = datasheet_peak(self.info["device"])
        self.tmp = Path(tempfile.mkdtemp(prefix="embedlab-gpu-"))
        self.model_dirs: dict[str, Path] = {}
        self.configs: dict[str, dict] = {}
        self.encoders: dict[tuple[str, str], Any] = {}
        self.texts: dict[str, list[str]] = {}
        self.ids: dict[str, list[np.ndarray]] = {}
        self.best: dict[tuple[str, str, str], int] = {}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def supported(self, dtype: str) -> str | None:
        if dtype == "fp16" and not self.cuda:
            return "fp16 has no fast CPU kernels; measured on the GPU only"
        if dtype == "bf16" and self.cuda and not self.torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        return None

    def section(self, name: str, fn, *args) -> None:
        """Run one section; an exception is recorded with its traceback and the run goes on."""
        t0 = time.perf_counter()
        print(f"[{self.budget.elapsed():6.1f} s] {name}", flush=True)
        try:
            fn(*args)
        except Exception as e:  # a broken section must not cost the others their GPU minutes
            self.res.append("errors", {"section": name, "error": f"{type(e).__name__}: {e}",
                                       "traceback": traceback.format_exc()[-3000:]})
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
        finally:
            self.release()
        self.res.append("sections", {"name": name, "seconds": round(time.perf_counter() - t0, 2)})

    def release(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def encoder(self, model: str, dtype: str, **kw):
        from embedlab.config import EncodeConfig
        from embedlab.encoder import Encoder

        key = (model, dtype) if not kw else None
        if key in self.encoders:
            return self.encoders[key]
        enc = Encoder(EncodeConfig(model=str(self.model_dirs[model]), dtype=dtype, device=self.device,
                                   max_batch_tokens=0, **kw))
        if key is not None:
            self.encoders = {k: v for k, v in self.encoders.items() if k[0] == model}  # bound memory
            self.encoders[key] = enc
        return enc

    def flops(self, lengths: np.ndarray, model: str) -> float:
        return model_flops(lengths, self.configs[model])


# ---------------------------------------------------------------- sections

def load_texts(b: Bench) -> None:
    """Chunk texts and queries from the carry folder; the dry run falls back to the bundled sample."""
    carry = b.a.carry
    if (carry / "data" / "scifact_chunks.jsonl.gz").is_file():
        rows = read_jsonl_gz(carry / "data" / "scifact_chunks.jsonl.gz")
        queries = [r["text"] for r in read_jsonl_gz(carry / "data" / "queries.jsonl")]
        source = "SciFact chunks (256 tokens, overlap 32) and queries from the carry folder"
    elif b.a.dry_run:
        import embedlab

        SAMPLE_CORPUS = Path(embedlab.__file__).parent / "data" / "sample_corpus.jsonl"
        rows = [{"text": json.loads(line)["text"]} for line in SAMPLE_CORPUS.open() if line.strip()]
        queries = [r["text"].split(".")[0][:80] for r in rows]
        source = f"dry run without a carry folder: {SAMPLE_CORPUS.name} (documents and their first sentences)"
    else:
        raise FileNotFoundError(f"{carry}/data/scifact_chunks.jsonl.gz: run prepare_carry.py and carry {carry}")
    n = 32 if b.a.dry_run else len(rows)
    cut = DRY_TEXT_CHARS if b.a.dry_run else None
    b.texts = {"chunks": [r["text"][:cut] for r in rows[:n]], "queries": [q[:cut] for q in queries[:n]]}
    b.res.update(data={"source": source, "chunks": len(b.texts["chunks"]), "queries": len(b.texts["queries"])})


def build_models(b: Bench) -> None:
    for name in b.a.models.split(","):
        t0 = time.perf_counter()
        d = build_model_dir(ARCHS[name], b.tmp / name, tiny=b.a.dry_run)
        b.model_dirs[name] = d
        b.configs[name] = json.loads((d / "config.json").read_text())
        enc = b.encoder(name, "fp32")
        b.ids[name] = {k: enc.tokenize(v) for k, v in b.texts.items()}
        lens = {k: float(np.mean([len(x) for x in v])) for k, v in b.ids[name].items()}
        b.res.append("models", {"model": name, "name": ARCH_NAMES[name] + " (random weights)",
                                "config": {k: b.configs[name][k] for k in ("hidden_size", "num_hidden_layers",
                                           "num_attention_heads", "intermediate_size")},
                                "attn_implementation": getattr(enc.model.config, "_attn_implementation", None),
                                "pooling": enc.info.pooling, "max_seq_length": enc.info.max_seq_length,
                                "mean_tokens": lens, "build_seconds": round(time.perf_counter() - t0, 2)})


def ceilings(b: Bench) -> None:
    """A large matmul per dtype: the rate this device reaches, beside the datasheet's."""
    torch = b.torch
    n = 8192 if b.cuda else 512
    out = {}
    for dtype in b.a.dtypes.split(","):
        if b.supported(dtype):
            continue
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        x = torch.randn(n, n, device=b.device, dtype=dt)
        y = torch.randn(n, n, device=b.device, dtype=dt)
        reps = 10 if b.cuda else 3
        (x @ y)
        b.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            x @ y
        b.sync()
        out[dtype] = 2 * n**3 * reps / (time.perf_counter() - t0)
    b.res.update(matmul_ceiling_flops=out, matmul_ceiling_shape=f"{n}x{n}x{n}",
                 datasheet_peak_flops=b.peak)


def parity(b: Bench) -> None:
    """Cosine of fp16/bf16/fp32 vectors (real MiniLM weights, carried in fp16) to CPU fp32 ones."""
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    carry = b.a.carry
    if not (carry / "ref" / "chunks_fp32.npy").is_file():
        b.res.update(parity={"status": f"skipped: no reference vectors in {carry}/ref"})
        return
    rows = read_jsonl_gz(carry / "data" / "scifact_chunks.jsonl.gz")
    pick = np.load(carry / "ref" / "chunk_rows.npy")
    ref = np.load(carry / "ref" / "chunks_fp32.npy")
    qref = np.load(carry / "ref" / "queries_fp32.npy")
    queries = [r["text"] for r in read_jsonl_gz(carry / "data" / "queries.jsonl")]
    if b.a.dry_run:
        pick, ref, qref, queries = pick[:8], ref[:8], qref[:8], queries[:8]
    texts = [rows[i]["text"] for i in pick]
    out: dict[str, Any] = {"chunks": len(texts), "queries": len(queries),
                           "reference": "CPU fp32, fp32 weights (prepare_carry.py)",
                           "weights": "carried in fp16, cast to each dtype"}
    for dtype in ("fp16", "bf16", "fp32"):
        if b.supported(dtype):
            out[dtype] = {"status": "skipped: " + b.supported(dtype)}
            continue
        enc = Encoder(EncodeConfig(model=str(carry / "minilm-fp16"), dtype=dtype, device=b.device,
                                   max_batch_tokens=0, batch_size=256))
        cos = np.sum(enc.encode_texts(texts) * ref, axis=1)
        qcos = np.sum(enc.encode_texts(queries) * qref, axis=1)
        out[dtype] = {"min_cos_chunks": float(cos.min()), "mean_cos_chunks": float(cos.mean()),
                      "min_cos_queries": float(qcos.min()), "mean_cos_queries": float(qcos.mean())}
        del enc
        b.release()
    b.res.update(parity=out)


def sweep(b: Bench, model: str, dtype: str, texts: str, deadline: float) -> None:
    """One (model, dtype, texts) sweep over the batch sizes, ascending, inside ``deadline``."""
    from embedlab.experiments.sweeps import fit_saturation
    from gpu_common import timed

    key = "rows" if texts == "chunks" else "query_rows"
    reason = b.supported(dtype)
    base = {"model": f"{ARCH_NAMES[model]} (random weights)", "arch": model, "dtype": dtype, "texts": texts,
            "device": b.info["device"]}
    if reason:
        b.res.append("skipped", {**base, "status": "skipped: " + reason})
        return
    enc = b.encoder(model, dtype)
    ids = b.ids[model][texts]
    rate = None
    ok: list[dict] = []
    for batch in b.a.batch_sizes:
        rows = max(batch, b.a.pool_rows)
        rows = -(-rows // batch) * batch
        pool = cycle_pool(ids, rows)
        need = 4 * rows / rate if rate else 0.0
        if rate and time.perf_counter() + need > deadline:
            b.res.append("skipped", {**base, "batch": batch, "status": f"skipped: time budget (needs ~{need:.0f} s)"})
            break
        lengths = np.fromiter((len(x) for x in pool), dtype=np.int64)
        if b.cuda:
            b.torch.cuda.reset_peak_memory_stats()
        try:
            t = timed(lambda: enc.encode_ids(pool, batch_size=batch, max_batch_tokens=0), b.sync,
                      min_seconds=b.a.min_seconds)
        except Exception as e:  # torch.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(e).lower():
                raise
            b.res.append("skipped", {**base, "batch": batch, "status": "oom: larger batches not tried"})
            break
        rate = rows / t["seconds"]
        flops = b.flops(lengths, model) / t["seconds"]
        ceiling = b.res.doc.get("matmul_ceiling_flops", {}).get(dtype)
        row = {**base, "batch": batch, "status": "ok", "chunks_per_s": rate,
               "tokens_per_s": float(lengths.sum()) / t["seconds"], "model_tflops": flops / 1e12,
               "mfu": flops / b.peak if b.peak else (flops / ceiling if ceiling else None),
               "mfu_peak": "datasheet dense fp16/bf16" if b.peak else "measured matmul (no datasheet peak)",
               "of_matmul_ceiling": flops / ceiling if ceiling else None,
               "rows_per_pass": rows, "mean_tokens": float(lengths.mean()), "reps": t["reps"],
               "chunks_per_s_min": rows / t["max"], "chunks_per_s_max": rows / t["min"],
               "peak_mem_mb": b.torch.cuda.max_memory_allocated() / 2**20 if b.cuda else None}
        ok.append(row)
        b.res.append(key, row)
    if len(ok) >= 2:
        f = fit_saturation([r["batch"] for r in ok], [r["chunks_per_s"] for r in ok])
        b.res.doc.setdefault("fits", {})[f"{model}/{dtype}/{texts}"] = {
            "r_max": f.r_max, "b_half": f.b_half, "knee": f.knee, "knee_measured": f.knee_measured,
            "rel_rms": f.rel_rms, "max_batch": f.max_batch, "points": f.points}
        b.res.save()
    if ok:
        b.best[(model, dtype, texts)] = max(ok, key=lambda r: r["chunks_per_s"])["batch"]


def run_sweeps(b: Bench, stage: int) -> None:
    """Stage 0: fp16/bf16 (the targets); stage 1: fp32. Chunks before queries; equal time shares."""
    dtypes = [d for d in b.a.dtypes.split(",") if (d != "fp32") == (stage == 0)]
    texts = ["chunks"] + ([] if "queries" in b.a.skip else ["queries"])
    plan = [(m, d, t) for t in texts for d in dtypes for m in b.a.models.split(",")]
    share_end = b.budget.start + b.a.budget * (0.40 if stage == 0 else 0.60)
    for i, (m, d, t) in enumerate(plan):
        left = share_end - time.perf_counter()
        deadline = time.perf_counter() + max(left, 0) / (len(plan) - i)
        b.section(f"sweep {m} {d} {t}", sweep, b, m, d, t, deadline)


def st_compare(b: Bench) -> None:
    """sentence-transformers encode at fp16 (its best batch) against embedlab on the same texts."""
    from sentence_transformers import SentenceTransformer

    from gpu_common import timed

    dtype = "fp16" if b.cuda else "fp32"
    n = 16 if b.a.dry_run else 4096
    texts = cycle_pool(b.texts["chunks"], n)
    sizes = (8,) if b.a.dry_run else (128, 256, 512)
    out = {"dtype": dtype, "texts": n, "what": "texts in, vectors out (tokenization included), same texts"}
    ratios = {}
    for model in b.a.models.split(","):
        if not b.budget.fits(40 if not b.a.dry_run else 0, reserve=60 if not b.a.dry_run else 0):
            out[model] = {"status": "skipped: time budget"}
            continue
        st = SentenceTransformer(str(b.model_dirs[model]), device=b.device)
        if dtype == "fp16":
            st = st.half()
        st_rates = {}
        for bs in sizes:
            t = timed(lambda bs=bs: st.encode(texts, batch_size=bs, convert_to_numpy=True), b.sync,
                      min_seconds=b.a.min_seconds)
            st_rates[bs] = n / t["seconds"]
        st_vecs = st.encode(texts[:256], batch_size=64, convert_to_numpy=True)
        b.sync()
        st = None  # frees the model before embedlab's is built
        b.release()
        enc = b.encoder(model, dtype)
        em_rates = {}
        for bs in sorted({b.best.get((model, dtype, "chunks"), 256), *sizes}):
            t = timed(lambda bs=bs: enc.encode_texts(texts, batch_size=bs), b.sync, min_seconds=b.a.min_seconds)
            em_rates[bs] = n / t["seconds"]
        ids = enc.tokenize(texts)
        t = timed(lambda: enc.encode_ids(ids, batch_size=max(em_rates, key=em_rates.get)), b.sync,
                  min_seconds=b.a.min_seconds)
        from variants import min_cosine

        cos = min_cosine(st_vecs, enc.encode_texts(texts[:256]))
        st_best, em_best = max(st_rates.values()), max(em_rates.values())
        ratios[model] = em_best / st_best
        out[model] = {"st_chunks_per_s": st_rates, "st_best": st_best, "embedlab_chunks_per_s": em_rates,
                      "embedlab_best": em_best, "ratio": em_best / st_best,
                      "embedlab_pretokenized_chunks_per_s": n / t["seconds"],
                      "min_cos_to_st": cos}
        b.res.update(sentence_transformers=out)
    if ratios:
        b.res.update(sentence_transformers=out, vs_sentence_transformers_fp16=min(ratios.values()),
                     vs_sentence_transformers_fp16_note=f"min over models {sorted(ratios)} at {dtype}")


def run_variants(b: Bench) -> None:
    from variant_runs import measure_variants

    measure_variants(b)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    b = Bench(a)
    b.res.update(device=b.info["device"], machine=b.info, status="running", dry_run=a.dry_run,
                 budget_seconds=a.budget, batch_sizes=list(a.batch_sizes), pool_rows=a.pool_rows,
                 command="python benchmarks/gpu/bench_gpu_encoder.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 rows=[], query_rows=[])
    b.section("texts", load_texts, b)
    b.section("ceilings", ceilings, b)
    b.section("models", build_models, b)
    if "parity" not in a.skip:
        b.section("parity", parity, b)
    run_sweeps(b, 0)
    if "st" not in a.skip:
        b.section("sentence-transformers", st_compare, b)
    run_sweeps(b, 1)
    if "variants" not in a.skip:
        b.section("variants", run_variants, b)
    b.res.update(status="done", wall_seconds=round(b.budget.elapsed(), 1))
    shutil.rmtree(b.tmp, ignore_errors=True)  # random-weight models and stores
    print(b.res.render(b.res.doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
