"""The tuning section of bench_gpu_encoder.py: each variant of variants.py measured against
embedlab's default CUDA path in the same section, on the same pool, at the fp16 sweep's best batch.

Per variant: chunks/s, the ratio to the default path measured just before, the smallest cosine
of its vectors to the default path's, and the seconds its setup took (compiles included).
Cheap variants run first for every model, then the compiled ones, each only if the time left allows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gpu_common import cycle_pool, timed
from variants import AsyncEncoder, FixedShapeRunner, fixed_batches, min_cosine


def _measure(b, fn, rows: int) -> tuple[float, np.ndarray]:
    out = {}

    def call():
        out["v"] = fn()

    t = timed(call, b.sync, min_seconds=b.a.min_seconds)
    return rows / t["seconds"], out["v"]


def _cheap(b, model: str, dtype: str, batch: int, rec) -> None:
    enc = b.encoder(model, dtype, packed=False)  # the padded path: the baseline of every variant
    n = max(batch, 8 if b.a.dry_run else 2048)
    n = -(-n // batch) * batch
    pool = cycle_pool(b.ids[model]["chunks"], n)
    rate0, ref = _measure(b, lambda: enc.encode_ids(pool, batch_size=batch, max_batch_tokens=0), n)
    rec("padded (Encoder.encode_ids, SDPA, rows; packed=False)", rate0, rate0, ref, ref, 0.0)

    def variant(name: str, setup, run, rows: int = n, base=(rate0, ref)) -> None:
        est = 5 * rows / base[0] + 5
        if not b.budget.fits(est, reserve=20):
            rec(name, None, None, None, None, 0.0, f"skipped: time budget (needs ~{est:.0f} s)")
            return
        t0 = time.perf_counter()
        try:
            obj = setup()
            setup_s = time.perf_counter() - t0
            rate, vec = _measure(b, lambda: run(obj), rows)
            if hasattr(obj, "packed"):  # whether the encoder packed its tokens here
                name += " (flash varlen_attn)" if obj.packed is not None else " (not packed here: padded path)"
            rec(name, rate, base[0], vec, base[1], setup_s)
        except Exception as e:  # a variant that cannot run here is a result, not a crash
            rec(name, None, None, None, None, time.perf_counter() - t0, f"failed: {type(e).__name__}: {e}"[:300])

    # Eager attention (0.50x / 0.63x of SDPA on the H100, benchmarks/results/encode_gpu.md) is no
    # longer measured: embedlab's own BERT (embedlab/bert.py) runs SDPA only.
    variant("pinned buffers, non-blocking copies, one sync per pass", lambda: AsyncEncoder(enc),
            lambda e: e.encode_ids(pool, batch))
    variant("pinned + non-blocking + no mask on unpadded batches", lambda: AsyncEncoder(enc, drop_full_mask=True),
            lambda e: e.encode_ids(pool, batch))
    variant("embedlab's CUDA default: packed tokens + varlen attention", lambda: b.encoder(model, dtype),
            lambda e: e.encode_ids(pool, batch_size=batch, max_batch_tokens=0))
    # Token budgets against rows, on chunks and queries mixed (where lengths differ most).
    mixed = cycle_pool(b.ids[model]["chunks"] + b.ids[model]["queries"], n, seed=1)
    mrate, mref = _measure(b, lambda: enc.encode_ids(mixed, batch_size=batch, max_batch_tokens=0), n)
    rec(f"mixed chunks+queries: rows ({batch})", mrate, mrate, mref, mref, 0.0)
    for tokens in ((64,) if b.a.dry_run else (batch * 64, batch * 128, batch * 256)):
        variant(f"mixed chunks+queries: token budget {tokens:,} (cap 4,096 rows)", lambda: enc,
                lambda e, t=tokens: e.encode_ids(mixed, batch_size=4096, max_batch_tokens=t), base=(mrate, mref))


def _fixed(b, model: str, dtype: str, batch: int, rec, compiled: bool) -> None:
    enc = b.encoder(model, dtype)
    fb = min(batch, 8 if b.a.dry_run else 512)
    n = max(fb, 8 if b.a.dry_run else 2048)
    pool = cycle_pool(b.ids[model]["chunks"], -(-n // fb) * fb)
    width = 32 if b.a.dry_run else 256
    batches = fixed_batches(pool, fb, width, enc.pad_id)
    rows = len(batches) * fb
    eager = FixedShapeRunner(enc, "eager", fb, width)
    rate0, ref = _measure(b, lambda: eager.run(batches), rows)
    tag = f"fixed shape {fb}x{width}"
    if not compiled:
        rec(f"{tag}: eager", rate0, rate0, ref, ref, 0.0)
        kinds = [("graph", None, "CUDA graph")]
    else:
        kinds = [("compile", None, "torch.compile (static)"),
                 ("compile", "reduce-overhead", "torch.compile reduce-overhead (CUDA graphs)")]
    for kind, mode, label in kinds:
        need = 90 if kind == "compile" and not b.a.dry_run else 10
        if not b.budget.fits(need, reserve=15):
            rec(f"{tag}: {label}", None, None, None, None, 0.0, f"skipped: time budget (needs ~{need} s)")
            continue
        t0 = time.perf_counter()
        try:
            runner = FixedShapeRunner(enc, kind, fb, width, mode=mode)
            runner.run(batches[:1])  # compile / capture before timing
            setup_s = time.perf_counter() - t0
            rate, vec = _measure(b, lambda r=runner: r.run(batches), rows)
            rec(f"{tag}: {label}", rate, rate0, vec, ref, setup_s)
        except Exception as e:
            rec(f"{tag}: {label}", None, None, None, None, time.perf_counter() - t0,
                f"failed: {type(e).__name__}: {e}"[:300])


def _embedlab_compile(b, model: str, dtype: str, batch: int, rec) -> None:
    """embedlab's own --compile (dynamic shapes) on the default path."""
    need = 120 if not b.a.dry_run else 0
    if not b.budget.fits(need, reserve=15):
        rec("embedlab --compile (dynamic shapes)", None, None, None, None, 0.0, "skipped: time budget")
        return
    enc = b.encoder(model, dtype)
    n = -(-max(batch, 8 if b.a.dry_run else 2048) // batch) * batch
    pool = cycle_pool(b.ids[model]["chunks"], n)
    rate0, ref = _measure(b, lambda: enc.encode_ids(pool, batch_size=batch, max_batch_tokens=0), n)
    t0 = time.perf_counter()
    cenc = b.encoder(model, dtype, compile=True)
    if not cenc.compiled:
        rec("embedlab --compile (dynamic shapes)", None, None, None, None, time.perf_counter() - t0,
            f"failed: {cenc.compile_error}"[:300])
        return
    cenc.encode_ids(pool, batch_size=batch, max_batch_tokens=0)  # meets this pass's shapes
    setup_s = time.perf_counter() - t0
    rate, vec = _measure(b, lambda: cenc.encode_ids(pool, batch_size=batch, max_batch_tokens=0), n)
    rec("embedlab --compile (dynamic shapes)", rate, rate0, vec, ref, setup_s)


def measure_variants(b) -> None:
    dtype = "fp16" if b.cuda else "fp32"
    models = b.a.models.split(",")

    def recorder(model: str, batch: int):
        def rec(name: str, rate, base, vec, ref, setup_s: float, status: str = "ok") -> None:
            row: dict[str, Any] = {"model": model, "dtype": dtype, "batch": batch, "variant": name,
                                   "status": status, "chunks_per_s": rate,
                                   "vs_default": rate / base if rate and base else None,
                                   "min_cos_to_default": min_cosine(vec, ref) if vec is not None else None,
                                   "setup_seconds": round(setup_s, 2)}
            b.res.append("variants", row)
            print(f"  {model} {name}: {status} {'' if rate is None else f'{rate:,.0f} chunks/s'}", flush=True)
        return rec

    stages = [(_cheap, {}), (_fixed, {"compiled": False}), (_fixed, {"compiled": True}), (_embedlab_compile, {})]
    skip_compile = "compile" in b.a.skip
    for fn, kw in stages:
        if skip_compile and (kw.get("compiled") or fn is _embedlab_compile):
            continue
        for model in models:
            batch = b.best.get((model, dtype, "chunks"), 8 if b.a.dry_run else 256)
            try:
                fn(b, model, dtype, batch, recorder(model, batch), **kw)
            except Exception as e:
                b.res.append("errors", {"section": f"variants {fn.__name__} {model}", "error": f"{type(e).__name__}: {e}"})
            b.release()
