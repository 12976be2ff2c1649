"""Encoder throughput against sentence-transformers on the same model, texts and cores.

    .venv/bin/python benchmarks/bench_encode.py [--docs 160] [--pipeline-docs 600] [--repeats 3]

Part 1, in this process: SciFact documents chunked at 256 tokens (overlap 32) by embedlab; the
same chunk texts go to `SentenceTransformer.encode` (its best batch size of 32/64/128) and to
embedlab's encoder (token ids, length-sorted batches), eager and torch.compile'd, and to torch
dynamic int8. Each row: warm-up, then the median of --repeats timed runs. Achieved GFLOP/s counts
the model's matmul FLOPs per real token and is compared with a measured fp32 matmul ceiling
(16384x384 @ 384x1536) on the same threads.

Part 2, whole processes: `embedlab embed --limit N` (cluster start and model load included) in
several worker/thread/compile settings, against a plain sentence-transformers script that loads
the model, encodes the same chunk texts and writes them to Parquet. Peak RSS is sampled from /proc.

Prints one markdown table and writes benchmarks/results/encode_cpu.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import DATA, RESULTS, machine, markdown_table, run_sampled  # noqa: E402
from embedlab.chunking import Chunker  # noqa: E402
from embedlab.config import CorpusConfig, EncodeConfig  # noqa: E402
from embedlab.corpus import Document, read_corpus  # noqa: E402
from embedlab.encoder import Encoder  # noqa: E402

ST_SCRIPT = """
import json, sys, time
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[1]))
model = SentenceTransformer(sys.argv[2], device="cpu")
v = model.encode(texts, batch_size=int(sys.argv[4]), convert_to_numpy=True)
pq.write_table(pa.table({"vector": list(v)}), sys.argv[3])
"""


def flops_per_token(hidden: int, layers: int, ffn: int, seq: float) -> float:
    """Matmul FLOPs per token of a BERT encoder: QKVO and FFN projections plus attention scores."""
    linear = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * 2 * seq * hidden
    return layers * (linear + attention)


def matmul_ceiling(repeats: int = 20) -> float:
    """Best fp32 GFLOP/s of a (16384x384) @ (384x1536) matmul on the current threads.

    The best of many runs, not the median: a ceiling is what the machine can do when nothing
    else gets in the way.
    """
    a, b = torch.randn(16384, 384), torch.randn(384, 1536)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 16384 * 384 * 1536 / best / 1e9


def timed(fn, repeats: int) -> tuple[float, float, float, object]:
    """Median, min and max seconds of ``repeats`` calls after one warm-up; and the last result."""
    out = fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts), max(ts), out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=160, help="SciFact documents for part 1")
    ap.add_argument("--pipeline-docs", type=int, default=600, help="documents for part 2 (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl.gz")
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    eager = Encoder(EncodeConfig(device="cpu", compile=False))
    info = eager.info
    cfg_model = eager.model.config
    docs = [r for r in read_corpus(CorpusConfig(path=args.data, limit=args.docs)) if isinstance(r, Document)]
    chunks, _ = Chunker(eager.tokenizer, 256, 32).chunk(docs)
    ids, texts = [c.input_ids for c in chunks], [c.text for c in chunks]
    n, tokens = len(chunks), int(sum(len(x) for x in ids))
    fpt = flops_per_token(cfg_model.hidden_size, cfg_model.num_hidden_layers, cfg_model.intermediate_size,
                          seq=tokens / n)
    ceiling = max(matmul_ceiling() for _ in range(3))  # the first calls run below the clock ceiling
    rows: list[list[object]] = []
    header = ["what", "chunks", "chunks/s (median)", "min-max", "tokens/s", "x ST", "min cos to ST",
              "GFLOP/s", "% of matmul ceiling", "encoder busy", "peak RSS MB"]

    def add(name: str, med: float, lo: float, hi: float, ref: float | None, vecs, st_vecs, busy="", rss=""):
        rate = n / med
        cos = f"{cosines(vecs, st_vecs).min():.6f}" if vecs is not None and st_vecs is not None else ""
        gf = rate * tokens / n * fpt / 1e9
        rows.append([name, n, f"{rate:.2f}", f"{n / hi:.2f}-{n / lo:.2f}", f"{rate * tokens / n:,.0f}",
                     f"{ref / med:.2f}" if ref else "1.00", cos, f"{gf:.1f}", f"{100 * gf / ceiling:.0f}%",
                     busy, rss])

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(info.path, device="cpu")
    st.encode(texts[:32], batch_size=32)
    trial = {bs: timed(lambda bs=bs: st.encode(texts, batch_size=bs), 1)[0] for bs in (32, 64, 128)}
    best = min(trial, key=trial.get)
    st_med, st_lo, st_hi, st_vecs = timed(lambda: st.encode(texts, batch_size=best), args.repeats)
    add(f"sentence-transformers encode, batch {best} (best of 32/64/128)", st_med, st_lo, st_hi, None,
        st_vecs, st_vecs)
    for bs in (64,):
        med, lo, hi, v = timed(lambda: eager.encode_ids(ids, bs), args.repeats)
        add(f"embedlab encoder, eager, batch {bs}", med, lo, hi, st_med, v, st_vecs)
    t0 = time.perf_counter()
    compiled = Encoder(EncodeConfig(device="cpu", compile=True))
    compile_s = time.perf_counter() - t0
    med, lo, hi, v = timed(lambda: compiled.encode_ids(ids, 64), args.repeats)
    add(f"embedlab encoder, torch.compile, batch 64 (load+compile {compile_s:.0f} s, once)", med, lo, hi,
        st_med, v, st_vecs)
    fp32_med = med
    int8 = Encoder(EncodeConfig(device="cpu", dtype="int8"))
    med, lo, hi, v = timed(lambda: int8.encode_ids(ids, 64), args.repeats)
    c = cosines(v, st_vecs)
    add(f"embedlab --dtype int8: dynamic, per-channel weights (mean cos {c.mean():.4f}; "
        f"{fp32_med / med:.2f}x compiled fp32)", med, lo, hi, st_med, v, st_vecs)
    q = copy.deepcopy(eager)
    q.model = torch.ao.quantization.quantize_dynamic(q.model, {torch.nn.Linear}, dtype=torch.qint8)
    med, lo, hi, v = timed(lambda: q.encode_ids(ids, 64), args.repeats)
    c = cosines(v, st_vecs)
    add(f"torch dynamic int8, per-tensor weights (mean cos {c.mean():.4f}; {fp32_med / med:.2f}x compiled fp32)",
        med, lo, hi, st_med, v, st_vecs)

    if args.pipeline_docs:
        rows.append(["**whole processes**", "", "", "", "", "", "", "", "", "", ""])
        pipeline_rows(args, rows, header, fpt, ceiling)
    text = ("# Encoder throughput vs sentence-transformers (CPU)\n\n"
            f"Model all-MiniLM-L6-v2 fp32; SciFact chunked at 256 tokens (overlap 32); {threads} threads. "
            f"Part 1: {args.docs} documents, {n} chunks, {tokens:,} tokens in this process, median of "
            f"{args.repeats} runs after a warm-up. Matmul ceiling (16384x384 @ 384x1536, fp32): "
            f"{ceiling:.1f} GFLOP/s; model FLOPs {fpt / 1e6:.1f} MFLOP per token.\n\n"
            + markdown_table(header, rows)
            + f"\n\nMachine: {machine()}\n"
            f"Command: .venv/bin/python benchmarks/bench_encode.py --docs {args.docs} "
            f"--pipeline-docs {args.pipeline_docs} --repeats {args.repeats}\n")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encode_cpu.md").write_text(text)


def pipeline_rows(args, rows, header, fpt, ceiling) -> None:
    """Whole-process runs on ``--pipeline-docs`` documents: embedlab embed vs a plain ST script."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        import gzip

        with gzip.open(args.data, "rt", encoding="utf-8") as src, open(corpus, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i == args.pipeline_docs:
                    break
                dst.write(line)
        env = {k: v for k, v in os.environ.items() if k != "EMBEDLAB_COMPILE"}
        settings = [("1 worker x 2 threads, compiled (default)", []),
                    ("2 workers x 1 thread, compiled", ["--workers", "2", "--threads", "1"]),
                    ("1 worker x 2 threads, eager", ["--no-compile"]),
                    ("2 workers x 1 thread, eager", ["--workers", "2", "--threads", "1", "--no-compile"])]
        results = []
        for name, extra in settings:
            out = tmp / f"out-{len(results)}"
            proc, wall, peak = run_sampled([sys.executable, "-m", "embedlab.cli", "embed", str(corpus), "--out",
                                            str(out), "--no-progress", "--json", *extra], env=env)
            if proc.returncode != 0:
                raise SystemExit(f"embed failed: {proc.stderr[-2000:]}")
            results.append((name, out, wall, peak, json.loads(proc.stdout)))
        texts = pq.read_table(results[0][1], columns=["text"]).column("text").to_pylist()
        (tmp / "texts.json").write_text(json.dumps(texts))
        from embedlab.encoder import describe_model

        path = describe_model("sentence-transformers/all-MiniLM-L6-v2").path
        proc, st_wall, st_peak = run_sampled([sys.executable, "-c", ST_SCRIPT, str(tmp / "texts.json"), path,
                                              str(tmp / "st.parquet"), "32"], env=env)
        if proc.returncode != 0:
            raise SystemExit(f"ST script failed: {proc.stderr[-2000:]}")
        st_vecs = np.stack(pq.read_table(tmp / "st.parquet").column("vector").to_numpy(zero_copy_only=False))
        n, tokens = len(texts), results[0][4]["tokens"]
        rows.append([f"plain sentence-transformers script, batch 32 ({args.pipeline_docs} docs, whole process)",
                     n, f"{n / st_wall:.2f}", "", f"{tokens / st_wall:,.0f}", "1.00", "1.000000",
                     f"{tokens / st_wall * fpt / 1e9:.1f}", f"{100 * tokens / st_wall * fpt / 1e9 / ceiling:.0f}%",
                     "", f"{st_peak.total:.0f}"])
        for name, out, wall, peak, s in results:
            t = pq.read_table(out, columns=["chunk_id", "vector"])
            v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
            order = {c: i for i, c in enumerate(pq.read_table(results[0][1], columns=["chunk_id"])
                                                .column("chunk_id").to_pylist())}
            ref = st_vecs[[order[c] for c in t.column("chunk_id").to_pylist()]]
            rows.append([f"embedlab embed, {name}", s["chunks"], f"{s['chunks'] / wall:.2f}", "",
                         f"{s['tokens'] / wall:,.0f}", f"{st_wall / wall:.2f}", f"{cosines(v, ref).min():.6f}",
                         f"{s['tokens'] / wall * fpt / 1e9:.1f}",
                         f"{100 * s['tokens'] / wall * fpt / 1e9 / ceiling:.0f}%",
                         f"{s['encoder_busy']:.0%}", f"{peak.total:.0f}"])


if __name__ == "__main__":
    main()
