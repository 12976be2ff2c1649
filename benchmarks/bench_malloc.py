"""The CPU encoder with glibc's malloc defaults against keep_freed_memory (embedlab/malloc.py).

    .venv/bin/python benchmarks/bench_malloc.py [--docs 1000] [--repeats 3] [--results DIR]

Each run is a fresh process (malloc settings cannot be undone in one) that loads the default
CPU encoder, chunks the first --docs SciFact documents at 256 tokens (truncated), warms up on 64
chunks, then encodes them all once. It reports chunks/s, the minor page faults and the kernel
(system) CPU seconds of the timed pass. The two settings are taken in turn, --repeats times
each, and the table shows medians. Writes benchmarks/results/malloc_<machine>_<date>.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, Results, Spread, command_line, in_turn, markdown_table, parser  # noqa: E402

ONE_RUN = """
import json, resource, sys, time
from pathlib import Path
from embedlab.chunking import Chunker
from embedlab.config import CorpusConfig, EncodeConfig
from embedlab.corpus import Document, read_corpus
from embedlab.encoder import Encoder

data, docs, keep = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keep"
encoder = Encoder(EncodeConfig(device="cpu", keep_freed_memory=keep))
records = [r for r in read_corpus(CorpusConfig(path=data, limit=docs)) if isinstance(r, Document)]
chunks, _ = Chunker(encoder.tokenizer, 256, 0, truncate=True).chunk(records)
ids = [c.input_ids for c in chunks]
encoder.encode_ids(ids[:64])
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
encoder.encode_ids(ids)
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"kept": encoder.keeps_freed_memory, "chunks": len(ids), "wall": wall,
                  "faults": r1.ru_minflt - r0.ru_minflt, "sys": r1.ru_stime - r0.ru_stime,
                  "user": r1.ru_utime - r0.ru_utime, "peak_rss_mb": r1.ru_maxrss / 1024}))
"""


def one_run(data: Path, docs: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ONE_RUN, str(data), str(docs), mode],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl.gz")
    args = ap.parse_args()

    results = Results("malloc", args.results)
    modes = {"glibc defaults": "default", "keep_freed_memory (embedlab default)": "keep"}
    def progress(name: str, r: dict) -> None:
        print(f"{name}: {r['chunks'] / r['wall']:.2f} chunks/s, {r['faults']:,} faults, sys {r['sys']:.1f} s",
              flush=True)

    runs = in_turn({name: (lambda mode=mode: one_run(args.data, args.docs, mode))
                    for name, mode in modes.items()}, args.repeats, progress)

    rows, base = [], None
    for name, rs in runs.items():
        n = rs[0]["chunks"]
        rate = Spread([n / r["wall"] for r in rs])
        faults = Spread([r["faults"] for r in rs]).median
        base = base or rate.median
        rows.append([name, n, f"{rate.median:.2f}", rate.range(), f"{rate.median / base:.2f}",
                     f"{faults:,.0f}", f"{faults / n:,.0f}", f"{Spread([r['sys'] for r in rs]).median:.1f}",
                     f"{Spread([r['user'] for r in rs]).median:.1f}",
                     f"{max(r['peak_rss_mb'] for r in rs):.0f}"])
    header = ["malloc", "chunks", "chunks/s (median)", "min-max", "x glibc defaults", "minor faults",
              "faults per chunk", "system CPU s", "user CPU s", "peak RSS MB"]
    results.write_markdown(
        "CPU encoder: glibc malloc defaults vs keep_freed_memory",
        f"all-MiniLM-L6-v2 fp32, default CPU encoder (2,048-token batches), first {args.docs} SciFact documents "
        f"truncated at 256 tokens; one timed pass per fresh process after a 64-chunk warm-up; median of "
        f"{args.repeats} runs per setting, taken in turn. Faults and CPU seconds are the timed pass's, from getrusage.",
        markdown_table(header, rows), command_line())


if __name__ == "__main__":
    main()
