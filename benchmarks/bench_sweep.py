"""Batch-size x precision sweep of the default encoder on SciFact chunks, printed as markdown.

Each point: a warm-up pass, then >= 3 timed passes over the same seeded chunks; the median
pass gives chunks/s (min-max across passes shown) and "x base" compares every point with the
first one (fp32, batch 1) measured in the same run. Tidy rows, fits and the plot are saved
next to the markdown when --out is given.

    .venv/bin/python benchmarks/bench_sweep.py --out benchmarks/results --stem sweep_cpu \\
        > benchmarks/results/sweep_cpu.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from embedlab.config import DEFAULT_MODEL, EncodeConfig
from embedlab.experiments.sweeps import SweepConfig, describe_machine, run_sweep
from embedlab.planner import parse_ints

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl.gz"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SCIFACT, help="corpus to chunk (default: SciFact)")
    p.add_argument("--docs", type=int, default=200, help="documents read and chunked")
    p.add_argument("--chunks", type=int, default=256, help="chunks sampled: one pass encodes them all")
    p.add_argument("--batch-sizes", default="1,2,4,...,128")
    p.add_argument("--dtypes", default="fp32,bf16,int8")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per point (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per point")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (default: eager)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for STEM.csv, STEM.json, STEM.png")
    p.add_argument("--stem", default="sweep_cpu")
    a = p.parse_args(argv)
    if a.repeats < 3:
        p.error("--repeats must be >= 3 for a median")

    cfg = SweepConfig(corpus=a.data, docs=a.docs, chunks=a.chunks,
                      batch_sizes=tuple(parse_ints(a.batch_sizes)), dtypes=tuple(a.dtypes.split(",")),
                      warmup=a.warmup, repeats=a.repeats, seed=a.seed,
                      encode=EncodeConfig(model=a.model, device=a.device, torch_threads=a.threads,
                                          compile=True if a.compile else None))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run_sweep(cfg, progress=lambda r: print(r["dtype"], r["batch"], r["status"], r["chunks_per_s"],
                                                  file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()

    ok = [r for r in res.rows if r["status"] == "ok"]
    print(f"# Encoder throughput sweep: {a.model.split('/')[-1]} on {a.device}\n")
    print(describe_machine(res.machine) + "  ")
    print(f"data: {ok[0]['chunks'] if ok else 0} chunks of {cfg.corpus.name} (first {a.docs} docs, "
          f"seed {a.seed}, {ok[0]['tokens'] if ok else 0:,} real tokens per pass); "
          f"warm-up: {a.warmup} pass, then the median of {a.repeats} timed passes per point  ")
    print(f"run: {wall:.0f} s wall; load average {load0[0]:.2f} before, {load1[0]:.2f} after  ")
    print(f"command: `python benchmarks/bench_sweep.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print(res.table() + "\n")
    print("x base: chunks/s over the first point (first dtype, smallest batch). pad %: padding share of the "
          "tokens after length sorting.\n")
    if res.fits:
        print("Fit of r(b) = r_max * b / (b + b_half) per dtype (± standard error; knee: smallest batch "
              f"reaching {cfg.knee_frac:.0%} of the fitted r_max):\n")
        print(res.fits_table())
    if a.out is not None:
        res.save(a.out, a.stem)


if __name__ == "__main__":
    main()
