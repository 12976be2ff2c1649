"""bf16 forward passes on the CPU with oneDNN-packed Linear layers (embedlab/onednn.py) against
torch's own bf16 Linear layers and fp32, in one process, in turn.

The same SciFact documents (cut at the model's window) go through three encoders of
all-MiniLM-L6-v2 that differ only in their model: the default bf16 one (packed weights, fused
bias, GELU and QKV), the same checkpoint at bf16 with plain ``nn.Linear`` layers, and fp32.
Reported: wall and CPU seconds of ``encode_ids`` (medians of ``--repeats`` rounds, after a
warm-up), the ratio to the unpacked bf16 model, and the minimum cosine to it and to fp32.

    .venv/bin/python benchmarks/bench_onednn.py [--docs 200] [--repeats 5]
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import embedlab  # noqa: E402, F401  (sets the OpenMP wait policy before torch loads)
from benchmarks.common import DATA, Results, busy_note, command_line, markdown_table, parser  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = Results("onednn_bf16", args.results, device="cpu")
    import numpy as np
    import torch

    from embedlab import bert, onednn
    from embedlab.config import EncodeConfig
    from embedlab.encoder import Encoder

    if not onednn.available():
        raise SystemExit("this torch build has no oneDNN prepacked linear ops")
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [(d["title"] + " " + d["text"]).strip() for d in map(json.loads, fh)][: args.docs]
    packed = Encoder(EncodeConfig(model=MODEL, dtype="bf16", device="cpu"))
    unpacked = Encoder(EncodeConfig(model=MODEL, dtype="bf16", device="cpu"))
    unpacked.model = bert.load(packed.info.path).to(torch.bfloat16)
    fp32 = Encoder(EncodeConfig(model=MODEL, dtype="fp32", device="cpu"))
    window = packed.info.max_seq_length - 2
    ids = [np.concatenate([x[:1], x[1:-1][:window], x[-1:]]) for x in packed.tokenize(texts)]
    encoders = {"bf16, oneDNN-packed (default)": packed, "bf16, torch's nn.Linear": unpacked, "fp32": fp32}
    vectors = {name: enc.encode_ids(ids) for name, enc in encoders.items()}  # warm-up, and the vectors
    wall: dict[str, list[float]] = {n: [] for n in encoders}
    cpu: dict[str, list[float]] = {n: [] for n in encoders}
    for _ in range(args.repeats):
        for name, enc in encoders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            enc.encode_ids(ids)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    base = "bf16, torch's nn.Linear"
    rows = []
    for name in encoders:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        rows.append([name, f"{w:.2f} ({' / '.join(f'{x:.2f}' for x in wall[name])})",
                     f"{statistics.median(wall[base]) / w:.2f}", f"{c:.2f}", f"{statistics.median(cpu[base]) / c:.2f}",
                     f"{(vectors[name] * vectors[base]).sum(1).min():.6f}",
                     f"{(vectors[name] * vectors['fp32']).sum(1).min():.6f}"])
    table = markdown_table(["model", "wall s (median; runs)", "x unpacked (wall)", "CPU s (median)",
                            "x unpacked (CPU)", "min cos to unpacked bf16", "min cos to fp32"], rows)
    intro = (f"{MODEL}, {len(ids)} SciFact documents cut at {window + 2} tokens ({sum(map(len, ids)):,} tokens), "
             f"{torch.get_num_threads()} torch threads, default token-budget batches; {args.repeats} rounds in turn "
             "after a warm-up, medians." + busy_note(results.load_before))
    results.write_markdown("bf16 on the CPU: oneDNN-packed Linear layers vs torch's", intro, table, command_line())


if __name__ == "__main__":
    main()
