"""Retrieval quality on a BEIR set against the published MTEB number, in both embed modes.

    .venv/bin/python benchmarks/bench_eval.py [--data ../shared/data/scifact] [--published 64.51] \
        [--results DIR]

Runs `embedlab embed --truncate` (one chunk per document, cut at 256 tokens: MTEB's protocol)
and the default chunked mode (256-token windows, 32 overlap; a document scores its best chunk),
then `embedlab eval` on each, through the public API. Prints a markdown table and writes it to
benchmarks/results/eval_<dataset>[_<dtype>]_<machine>_<date>.md. Re-running reuses finished
stores (the embed resumes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import embedlab  # noqa: E402
from common import DATA, Results, command_line, markdown_table, parser  # noqa: E402
from embedlab.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=DATA / "scifact")
    ap.add_argument("--published", type=float, default=64.51, help="published nDCG@10 x 100")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_eval"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--dtype", default="fp32", help="encoder precision (fp32, bf16, int8, ...)")
    ap.add_argument("--modes", default="truncate,chunked")
    args = ap.parse_args()
    stem = f"eval_{args.data.name}" + ("" if args.dtype == "fp32" else f"_{args.dtype}")
    results = Results(stem, args.results)
    corpus = next(p for p in (args.data / "corpus.jsonl.gz", args.data / "corpus.jsonl") if p.is_file())
    rows = []
    modes = {"truncate": ("truncate (MTEB protocol)", {"truncate": True}),
             "chunked": ("chunked, max over chunks", {})}
    for key in args.modes.split(","):
        mode, kw = modes[key]
        suffix = "" if args.dtype == "fp32" else f"-{args.dtype}"
        out = args.work / f"{args.data.name}-{key}{suffix}"
        t0 = time.perf_counter()
        r = embedlab.embed(corpus, out, progress=False, dtype=args.dtype, **kw)
        wall = time.perf_counter() - t0
        e = evaluate(out, args.data, split=args.split)
        m = {k: v * 100 for k, v in e.metrics.items()}
        rows.append([mode, f"{r.documents:,}", f"{r.chunks:,}", f"{r.truncated_documents:,}", e.n_queries,
                     f"{m['ndcg@10']:.2f}", f"{m['ndcg@10'] - args.published:+.2f}", f"{m['recall@10']:.2f}",
                     f"{m['recall@100']:.2f}", f"{m['mrr@10']:.2f}", f"{m['map@100']:.2f}",
                     f"{wall:.0f}" + (" (resumed)" if r.partitions_skipped == r.partitions else "")])
    header = ["mode", "docs", "chunks", "docs truncated", "queries scored", "nDCG@10", "vs published", "R@10",
              "R@100",
              "MRR@10", "MAP@100", "embed wall s"]
    results.write_markdown(
        f"{args.data.name} / {args.split}: all-MiniLM-L6-v2, {args.dtype}",
        f"Published (MTEB): nDCG@10 = {args.published:.2f}. Metrics from pytrec_eval, x 100, over every "
        "query the qrels name (BEIR's protocol).", markdown_table(header, rows), command_line())


if __name__ == "__main__":
    main()
