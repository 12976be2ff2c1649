"""Load: embed 200,000+ chunks on the default cluster and show that memory stays bounded.

    .venv/bin/python benchmarks/bench_load.py [--repeats 1,5] [--results DIR]

The corpus is wikipedia-vital-en (10,033 real documents) repeated R times with the repetition
number appended to each id, chunked at 32 tokens (overlap 4) and encoded by a tiny random-weight
BERT (embedlab.testing.make_tiny_model) so that the run measures the pipeline, not the model.
For each R the `embedlab embed` command runs as its own process; a sampler reads the resident
memory of that process and of every worker process it starts from /proc every 0.1 s. If memory
were proportional to the corpus, peak RSS at R=5 would be about five times that at R=1.
Writes benchmarks/results/load_<machine>_<date>.md.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import DATA, Results, command_line, markdown_table, parser, run_sampled  # noqa: E402
from embedlab.store import Store  # noqa: E402
from embedlab.testing import make_tiny_model  # noqa: E402


def write_corpus(path: Path, repeats: int) -> int:
    src = DATA / "wikipedia-vital-en" / "corpus.jsonl.gz"
    docs = [json.loads(line) for line in gzip.open(src, "rt", encoding="utf-8")]
    with open(path, "w", encoding="utf-8") as fh:
        for r in range(repeats):
            for d in docs:
                fh.write(json.dumps({"_id": f"{d['_id']}-r{r}", "title": d["title"], "text": d["text"]}) + "\n")
    return len(docs) * repeats


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", default="1,5")
    ap.add_argument("--chunk-tokens", type=int, default=32)
    args = ap.parse_args()
    results = Results("load", args.results)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_model(tmp / "tiny", hidden=32, layers=2, max_len=args.chunk_tokens)
        for r in (int(x) for x in args.repeats.split(",")):
            corpus = tmp / f"corpus-x{r}.jsonl"
            n_docs = write_corpus(corpus, r)
            out = tmp / f"out-x{r}"
            cmd = [sys.executable, "-m", "embedlab.cli", "embed", str(corpus), "--out", str(out),
                   "--model", str(model), "--chunk-tokens", str(args.chunk_tokens), "--overlap", "4",
                   "--batch-size", "256", "--no-progress", "--json"]
            proc, wall, sampler = run_sampled(cmd)
            if proc.returncode != 0:
                raise SystemExit(f"embed failed ({proc.returncode}): {proc.stderr[-2000:]}")
            s = json.loads(proc.stdout)
            problems = Store(out).verify()
            rows.append([r, f"{n_docs:,}", f"{s['chunks']:,}", f"{s['tokens']:,}", s["partitions"],
                         f"{wall:.0f}", f"{s['chunks'] / wall:,.0f}", f"{sampler.driver:.0f}",
                         f"{sampler.workers:.0f}", f"{sampler.total:.0f}",
                         "yes" if not problems else f"NO: {problems[:3]}"])
            corpus.unlink()
    header = ["repeats", "docs", "chunks", "tokens", "partitions", "wall s", "chunks/s",
              "peak RSS driver MB", "peak RSS workers MB", "peak RSS total MB", "store verifies"]
    results.write_markdown(
        "Load: bounded memory on the default cluster",
        f"wikipedia-vital-en repeated, chunked at {args.chunk_tokens} tokens (overlap 4), tiny random BERT "
        "(hidden 32, 2 layers), default in-process cluster (1 worker x all cores), 65,536 tokens per "
        "partition. RSS sampled from /proc every 0.1 s.", markdown_table(header, rows), command_line())


if __name__ == "__main__":
    main()
