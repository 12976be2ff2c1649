"""Sleeping or spinning OpenMP threads: the whole `embed` under each ``OMP_WAIT_POLICY``, in turn.

embedlab sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (embedlab/openmp.py). This script
measures what that buys against libgomp's own default (spin ~300,000 rounds, then sleep; reached
here by an empty value, which libgomp reports as invalid on stderr and then ignores) and against
``ACTIVE`` (spin until work arrives), on two jobs, each in a fresh process, configurations in turn:

* **input ceiling** (the setting of ``../shared/acceptance/10-input-ceiling``): a 1-layer, 32-wide
  random BERT with the real tokenizer over a 1x and a 3x copy of Wikipedia vital articles, at the
  default 2 torch threads; the steady-state rate (3x minus 1x) against the raw Rust tokenizer
  reading, parsing and tokenizing the same texts in the same run.
* **600 SciFact documents**, all-MiniLM-L6-v2, ``--truncate``, default dtype: the whole process's
  wall time (the setting of ``../shared/acceptance/15-cpu-precision``).

    .venv/bin/python benchmarks/bench_openmp_wait.py [--repeats 3] [--policies PASSIVE,default,ACTIVE]
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_pipeline import PIPE, copies, raw, steady  # noqa: E402
from benchmarks.common import DATA, REPO, Results, busy_note, command_line, in_turn, markdown_table, parser  # noqa: E402

POLICY_VALUES = {"PASSIVE": "PASSIVE", "ACTIVE": "ACTIVE", "default": ""}


def run_embed(corpus: Path, out: Path, model: str, policy: str, **opts) -> dict:
    """One whole `embedlab.embed` in a fresh process under ``policy``; its timings."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": POLICY_VALUES[policy]}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PIPE, str(corpus), str(out), model, json.dumps(opts)],
                          env=environ, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"embed ({policy}) failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - t0}


def scifact_head(work: Path, n: int) -> Path:
    out = work / f"scifact{n}.jsonl"
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as src, open(out, "w") as dst:
        for _, line in zip(range(n), src):
            dst.write(line)
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default="PASSIVE,default,ACTIVE", help="comma-separated: PASSIVE, default, ACTIVE")
    ap.add_argument("--docs", type=int, default=600, help="SciFact documents of the second job")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    results = Results("openmp_wait", args.results, device=None)
    from embedlab.encoder import describe_model
    from embedlab.testing import make_tiny_model

    wiki = DATA / "wikipedia-vital-en" / "corpus.jsonl.gz"
    if not wiki.is_file() or not (DATA / "scifact").is_dir():
        raise SystemExit(f"data not found under {DATA} (set EMBEDLAB_DATA)")
    minilm = describe_model("sentence-transformers/all-MiniLM-L6-v2").path
    log = lambda name, r: print(f"  {name}: {r}", file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-openmp-") as tmp:
        work = Path(tmp)
        tiny = str(make_tiny_model(work / "tiny", hidden=32, layers=1, max_len=256))
        c1, c3, sf = copies(wiki, work, 1), copies(wiki, work, 3), scifact_head(work, args.docs)
        setups = {"raw 1x": lambda: raw(c1, Path(tiny)), "raw 3x": lambda: raw(c3, Path(tiny))}
        for p in policies:
            setups[f"{p} 1x"] = lambda p=p: run_embed(c1, work / "o", tiny, p)
            setups[f"{p} 3x"] = lambda p=p: run_embed(c3, work / "o", tiny, p)
            setups[f"{p} scifact"] = lambda p=p: run_embed(sf, work / "o", minilm, p, truncate=True)
        runs = in_turn(setups, args.repeats, log)
    n1, n3 = runs["raw 1x"][0][1], runs["raw 3x"][0][1]
    tok = [(n3 - n1) / (b[0] - a[0]) for a, b in zip(runs["raw 1x"], runs["raw 3x"])]
    base = statistics.median(r["process"] for r in runs[f"{policies[0]} scifact"])
    rows = [["raw Rust tokenizer (both cores)", f"{statistics.median(tok) / 1e6:.2f}", "1.00", "", ""]]
    for p in policies:
        rate = steady(n1, n3, runs[f"{p} 1x"], runs[f"{p} 3x"])
        walls = [r["process"] for r in runs[f"{p} scifact"]]
        name = {"default": "libgomp default (spin ~300k rounds, then sleep)"}.get(p, p)
        rows.append([name, f"{statistics.median(rate) / 1e6:.2f} ({' / '.join(f'{x / 1e6:.2f}' for x in rate)})",
                     f"{statistics.median(rate) / statistics.median(tok):.2f}",
                     f"{statistics.median(walls):.1f} ({' / '.join(f'{w:.1f}' for w in walls)})",
                     f"{statistics.median(walls) / base:.2f}"])
    table = markdown_table(["OMP_WAIT_POLICY", "input ceiling: embed M tokens/s, steady state (median; runs)",
                            "x raw tokenizer", f"{args.docs} SciFact docs, MiniLM: whole process s (median; runs)",
                            f"x {policies[0]}"], rows)
    intro = (f"Each configuration in a fresh process, in turn, {args.repeats} rounds; medians. Near-free encoder: "
             "1 layer, 32 wide, default 2 torch threads; Wikipedia vital articles 1x and 3x "
             f"({n1:,} and {n3:,} tokens). MiniLM job: default dtype, `--truncate`." + busy_note(results.load_before))
    results.write_markdown("OpenMP wait policy: the whole embed", intro, table, command_line())


if __name__ == "__main__":
    main()
