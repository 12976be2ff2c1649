"""Where the encoder's time goes: torch.profiler over the default CPU encoder on SciFact.

    .venv/bin/python benchmarks/profile_encode.py [--docs 120] [--rows 15] [--results DIR]

Encodes the first --docs SciFact documents cut at 256 tokens once to warm up, then once under
torch.profiler, and prints the operators that took the most CPU time (self time, so nothing is
counted twice) with their share of the profiled forward passes, grouped into matmuls, attention,
normalisation and element-wise work. Writes benchmarks/results/profile_encode_<machine>_<date>.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from common import DATA, Results, command_line, markdown_table, parser, timed  # noqa: E402
from embedlab.chunking import Chunker  # noqa: E402
from embedlab.config import CorpusConfig, EncodeConfig  # noqa: E402
from embedlab.corpus import Document, read_corpus  # noqa: E402
from embedlab.encoder import Encoder  # noqa: E402

GROUPS = {  # operator name fragments -> what the time is spent on
    "matmul (Linear layers)": ("addmm", "mm", "linear", "bmm", "matmul"),
    "attention (SDPA)": ("scaled_dot_product", "flash_attention", "_softmax", "baddbmm"),
    "LayerNorm": ("layer_norm",),
    "GELU": ("gelu",),
}


def group_of(name: str) -> str:
    for group, parts in GROUPS.items():
        if any(p in name for p in parts):
            return group
    return "other (copies, views, add, masks, pooling)"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--rows", type=int, default=15, help="operators listed")
    ap.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl.gz")
    args = ap.parse_args()
    results = Results("profile_encode", args.results, device="cpu")
    encoder = Encoder(EncodeConfig(device="cpu"))
    docs = [r for r in read_corpus(CorpusConfig(path=args.data, limit=args.docs)) if isinstance(r, Document)]
    chunks, _ = Chunker(encoder.tokenizer, 256, 0, truncate=True).chunk(docs)
    ids = [c.input_ids for c in chunks]
    timed(lambda: encoder.encode_ids(ids), repeats=1)  # the warm-up pass, outside the profiler
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = timed(lambda: encoder.encode_ids(ids), repeats=1, warmup=0)[0].median
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    op_rows = [[e.key, e.count, f"{e.self_cpu_time_total / 1e3:,.0f}", f"{100 * e.self_cpu_time_total / total:.1f}%"]
               for e in events[:args.rows]]
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    group_rows = [[g, f"{t / 1e3:,.0f}", f"{100 * t / total:.1f}%"]
                  for g, t in sorted(groups.items(), key=lambda kv: -kv[1])]
    tokens = sum(len(x) for x in ids)
    results.write_markdown(
        "Where the CPU encoder's time goes (torch.profiler)",
        f"Default encoder (eager fp32, batches <= {encoder.max_batch_tokens} padded tokens, "
        f"{torch.get_num_threads()} threads), {len(ids)} SciFact documents cut at 256 tokens "
        f"({tokens:,} tokens), one profiled pass after a warm-up: {wall:.1f} s under the profiler. "
        "Self CPU time of the calling thread's operators (intra-op worker threads are inside them).",
        markdown_table(["where", "self CPU ms", "share"], group_rows) + "\n\n"
        + markdown_table(["operator", "calls", "self CPU ms", "share"], op_rows), command_line())


if __name__ == "__main__":
    main()
