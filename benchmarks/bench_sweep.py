"""Batch-size x precision sweep of the default encoder on SciFact chunks, printed as markdown.

Each point: a warm-up pass, then >= 3 timed passes over the same seeded chunks; the median
pass gives chunks/s (min-max across passes shown) and "x base" compares every point with the
first one (fp32, batch 1) measured in the same run. Writes the markdown, the tidy rows (.csv),
the fits (.json, read by `embedlab plan --from-sweep`) and the plot (.png) as
benchmarks/results/sweep_<machine>_<date>.*.

    .venv/bin/python benchmarks/bench_sweep.py [--batch-sizes 1,2,4,...,128] [--dtypes fp32,bf16,int8] \
        [--results DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, Results, command_line, parser  # noqa: E402
from embedlab.config import DEFAULT_MODEL, EncodeConfig  # noqa: E402
from embedlab.experiments.sweeps import SweepConfig, run_sweep  # noqa: E402
from embedlab.planner import parse_ints  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl.gz",
                   help="corpus to chunk (default: SciFact)")
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
    a = p.parse_args(argv)
    if a.repeats < 3:
        p.error("--repeats must be >= 3 for a median")

    cfg = SweepConfig(corpus=a.data, docs=a.docs, chunks=a.chunks,
                      batch_sizes=tuple(parse_ints(a.batch_sizes)), dtypes=tuple(a.dtypes.split(",")),
                      warmup=a.warmup, repeats=a.repeats, seed=a.seed,
                      encode=EncodeConfig(model=a.model, device=a.device, torch_threads=a.threads,
                                          compile=True if a.compile else None))
    results = Results("sweep", a.results, device=a.device)
    res = run_sweep(cfg, progress=lambda r: print(r["dtype"], r["batch"], r["status"], r["chunks_per_s"],
                                                  file=sys.stderr, flush=True))
    results.machine = res.machine  # the device the sweep ran on, as it recorded it
    ok = [r for r in res.rows if r["status"] == "ok"]
    body = [res.table(), "",
            "x base: chunks/s over the first point (first dtype, smallest batch). pad %: padding share of "
            "the tokens after length sorting."]
    if res.fits:
        body += ["", "Fit of r(b) = r_max * b / (b + b_half) per dtype (± standard error; knee: smallest "
                 f"batch reaching {cfg.knee_frac:.0%} of the fitted r_max):", "", res.fits_table()]
    results.write_markdown(
        f"Encoder throughput sweep: {a.model.split('/')[-1]} on {a.device}",
        f"data: {ok[0]['chunks'] if ok else 0} chunks of {cfg.corpus.name} (first {a.docs} docs, "
        f"seed {a.seed}, {ok[0]['tokens'] if ok else 0:,} real tokens per pass); "
        f"warm-up: {a.warmup} pass, then the median of {a.repeats} timed passes per point.",
        "\n".join(body), command_line() if argv is None else f"bench_sweep.main({argv})")
    for path in res.save(results.folder, results.path().stem):
        print(f"written: {path}")


if __name__ == "__main__":
    main()
