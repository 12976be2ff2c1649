"""Encoder throughput against sentence-transformers on the same model, texts and cores.

    .venv/bin/python benchmarks/bench_encode.py [--docs 160] [--pipeline-docs 600] [--full] [--repeats 3] \
        [--full-repeats 3] [--results DIR]

Part 1, in this process: SciFact documents chunked at 256 tokens (overlap 32) by embedlab; the
same chunk texts go to `SentenceTransformer.encode` (its best batch size of 32/64/128) and to
embedlab's encoder (token ids, length-sorted batches) at its defaults, with fixed 64-row batches,
torch.compile'd, and at int8. Each row: warm-up, then the median of --repeats timed runs. Achieved
GFLOP/s counts the model's matmul FLOPs per real token and is compared with a measured fp32 matmul
ceiling (16384x384 @ 384x1536, best of 20) on the same threads.

Part 2, whole processes on --pipeline-docs documents cut at 256 tokens (`--truncate`, as the
acceptance check and MTEB): `embedlab embed` (cluster start and model load included) in several
settings, against a plain sentence-transformers script that loads the model, encodes the same
documents and writes the vectors to Parquet. Median wall time of --repeats runs, taken in turn.
Peak RSS is sampled from /proc over the process and its children.

Part 3 (--full): the whole corpus cut at 256 tokens, embedlab's encoder alone in this process
against `embedlab embed` as a whole process: how much the pipeline loses to start-up, reading,
chunking, scheduling and writing, and how busy it keeps the encoder. --full-repeats pipeline
runs, each between two runs of the encoder alone (the machine drifts over ~20 minutes).

Loading embedlab's CPU encoder sets glibc's malloc to keep freed memory (embedlab/malloc.py), for
the whole process: in part 1 sentence-transformers runs under the same settings, so part 1
compares the compute paths; part 2's plain script is a process of its own, without them.

Prints one markdown table and writes benchmarks/results/encode[_full]_<machine>_<date>.md.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from common import (DATA, Results, Spread, command_line, in_turn, markdown_table, parser,  # noqa: E402
                    run_sampled, timed)
from embedlab.chunking import Chunker  # noqa: E402
from embedlab.config import CorpusConfig, EncodeConfig  # noqa: E402
from embedlab.corpus import Document, read_corpus  # noqa: E402
from embedlab.encoder import Encoder  # noqa: E402

ST_SCRIPT = """
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
docs = [json.loads(line) for line in open(sys.argv[1])]
texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
model = SentenceTransformer(sys.argv[2], device="cpu")
v = model.encode(texts, batch_size=int(sys.argv[4]), normalize_embeddings=True)
pq.write_table(pa.table({"doc_id": [d["_id"] for d in docs], "vector": list(v)}), sys.argv[3])
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
    seconds, _ = timed(lambda: a @ b, repeats=repeats, warmup=3)
    return 2 * 16384 * 384 * 1536 / seconds.lo / 1e9


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


HEADER = ["what", "chunks", "chunks/s (median)", "min-max", "tokens/s", "x ST", "min cos to ST",
          "GFLOP/s", "% of matmul ceiling", "encoder busy", "peak RSS MB"]


@dataclass
class Table:
    """Rows of the results table; GFLOP/s from the model's FLOPs per token and the matmul ceiling."""

    fpt: float
    ceiling: float
    rows: list[list[object]] = field(default_factory=list)

    def add(self, name: str, chunks: int, tokens: int, seconds: Spread, ref: float | None = None,
            cos: float | None = None, busy: float | None = None, rss: float | None = None) -> None:
        """A row from the runs' seconds; ``ref``: the peer's median seconds (the "x" column)."""
        med = seconds.median
        gf = tokens / med * self.fpt / 1e9
        self.rows.append([
            name, f"{chunks:,}", f"{chunks / med:.2f}", seconds.map(lambda s: chunks / s).range(),
            f"{tokens / med:,.0f}", f"{ref / med:.2f}" if ref else "1.00",
            f"{cos:.6f}" if cos is not None else "", f"{gf:.1f}", f"{100 * gf / self.ceiling:.0f}%",
            f"{busy:.0%}" if busy is not None else "", f"{rss:.0f}" if rss is not None else ""])

    def section(self, title: str) -> None:
        self.rows.append([f"**{title}**"] + [""] * (len(HEADER) - 1))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=160, help="SciFact documents for part 1")
    ap.add_argument("--pipeline-docs", type=int, default=600, help="documents for part 2 (0: skip)")
    ap.add_argument("--full", action="store_true", help="part 3: the whole corpus (about 20 minutes on 2 cores)")
    ap.add_argument("--only-full", action="store_true",
                    help="part 3 alone, written to encode_cpu_full.md (parts 1 and 2 skipped)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-repeats", type=int, default=3,
                    help="part 3: pipeline runs, each between two runs of the encoder alone")
    ap.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl.gz")
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    results = Results("encode_full" if args.only_full else "encode", args.results, device="cpu")
    eager = Encoder(EncodeConfig(device="cpu", compile=False))
    cfg_model = eager.model.config
    docs = [r for r in read_corpus(CorpusConfig(path=args.data, limit=args.docs)) if isinstance(r, Document)]
    chunks, _ = Chunker(eager.tokenizer, 256, 32).chunk(docs)
    ids, texts = [c.input_ids for c in chunks], [c.text for c in chunks]
    n, tokens = len(chunks), int(sum(len(x) for x in ids))
    fpt = flops_per_token(cfg_model.hidden_size, cfg_model.num_hidden_layers, cfg_model.intermediate_size,
                          seq=tokens / n)
    ceiling = max(matmul_ceiling() for _ in range(3))  # the first calls run below the clock ceiling
    table = Table(fpt, ceiling)
    if not args.only_full:
        best = in_process_rows(args, table, eager, ids, texts)
        if args.pipeline_docs:
            table.section(f"whole processes: {args.pipeline_docs} documents cut at 256 tokens (--truncate)")
            whole_processes(args, table, best)
    if args.full or args.only_full:
        table.section("whole corpus cut at 256 tokens: the pipeline against its own encoder")
        full_corpus(args, table, eager)
    results.write_markdown(
        "Encoder throughput vs sentence-transformers (CPU)",
        f"Model all-MiniLM-L6-v2 fp32 unless named; {threads} torch threads. Median of {args.repeats} "
        f"runs after a warm-up (part 1) or of {args.repeats} whole processes taken in turn (part 2). "
        f"Matmul ceiling (16384x384 @ 384x1536, fp32, best of 20): {ceiling:.1f} GFLOP/s; model FLOPs "
        f"{fpt / 1e6:.1f} MFLOP per token.", markdown_table(HEADER, table.rows), command_line())


def in_process_rows(args, table: Table, eager: Encoder, ids: list, texts: list[str]) -> int:
    """Part 1: sentence-transformers against embedlab's encoders on the same chunks, in this process.

    Returns:
        sentence-transformers' best batch size, which part 2's script then uses.
    """
    n, tokens = len(ids), int(sum(len(x) for x in ids))
    table.section(f"in this process: {args.docs} documents chunked at 256 tokens")

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(eager.info.path, device="cpu")
    st.encode(texts[:32], batch_size=32)
    trial = {bs: timed(lambda bs=bs: st.encode(texts, batch_size=bs), repeats=1)[0].median
             for bs in (32, 64, 128)}
    best = min(trial, key=trial.get)
    st_s, st_vecs = timed(lambda: st.encode(texts, batch_size=best), repeats=args.repeats)
    table.add(f"sentence-transformers encode, batch {best} (best of 32/64/128)", n, tokens, st_s, cos=1.0)

    def row(name: str, encoder: Encoder, **kw) -> tuple[float, np.ndarray]:
        seconds, v = timed(lambda: encoder.encode_ids(ids, **kw), repeats=args.repeats)
        c = cosines(v, st_vecs)
        table.add(name.format(mean=c.mean()), n, tokens, seconds, ref=st_s.median, cos=c.min())
        return seconds.median, v

    budget = eager.max_batch_tokens
    fp32_med, _ = row(f"embedlab encoder (default: eager, batches <= {budget} tokens)", eager)
    row("embedlab encoder, eager, fixed 64-row batches", eager, batch_size=64, max_batch_tokens=0)
    t0 = time.perf_counter()
    compiled = Encoder(EncodeConfig(device="cpu", compile=True))
    compile_s = time.perf_counter() - t0
    row(f"embedlab encoder, --compile (load+compile {compile_s:.0f} s, once)", compiled)
    del compiled
    int8 = Encoder(EncodeConfig(device="cpu", dtype="int8"))
    med, v = row("embedlab --dtype int8: dynamic, per-channel weights (mean cos {mean:.4f})", int8)
    table.rows[-1][0] += f"; {fp32_med / med:.2f}x fp32"
    q = copy.deepcopy(eager)
    q.model = torch.ao.quantization.quantize_dynamic(q.model, {torch.nn.Linear}, dtype=torch.qint8)
    med, _ = row("torch dynamic int8, per-tensor weights (mean cos {mean:.4f})", q)
    table.rows[-1][0] += f"; {fp32_med / med:.2f}x fp32"
    del q, int8
    return best


def first_docs(src: Path, dst: Path, n: int | None) -> Path:
    """The first ``n`` lines (all: None) of a BEIR corpus.jsonl.gz, as plain JSONL."""
    with gzip.open(src, "rt", encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        out.writelines(itertools.islice(f, n))
    return dst


def run_embed(corpus: Path, out: Path, extra: list[str], env: dict) -> tuple[float, float, dict]:
    """One whole ``embedlab embed --truncate`` process: wall seconds, peak RSS MB, its JSON summary."""
    shutil.rmtree(out, ignore_errors=True)
    proc, wall, peak = run_sampled([sys.executable, "-m", "embedlab.cli", "embed", str(corpus), "--out",
                                    str(out), "--truncate", "--no-progress", "--json", *extra], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"embed {extra} failed: {proc.stderr[-2000:]}")
    return wall, peak.total, json.loads(proc.stdout)


def store_vectors(out: Path) -> tuple[list[str], np.ndarray]:
    t = pq.read_table(out, columns=["doc_id", "vector"])
    return t.column("doc_id").to_pylist(), np.stack(t.column("vector").to_numpy(zero_copy_only=False))


def whole_processes(args, table: Table, st_batch: int) -> None:
    """``embedlab embed`` against a plain sentence-transformers script, each a whole process, in turn."""
    from embedlab.encoder import describe_model

    settings = [("default: 1 worker x 2 threads, eager", []),
                ("2 workers x 1 thread", ["--workers", "2", "--threads", "1"]),
                ("--compile", ["--compile"]),
                ("--dtype int8", ["--dtype", "int8"])]
    env = {k: v for k, v in os.environ.items() if k != "EMBEDLAB_COMPILE"}
    model_path = describe_model("sentence-transformers/all-MiniLM-L6-v2").path
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = first_docs(args.data, tmp / "corpus.jsonl", args.pipeline_docs)
        outs = [tmp / f"out-{k}" for k in range(len(settings))]

        def st_script() -> tuple[float, float, dict]:
            proc, wall, peak = run_sampled([sys.executable, "-c", ST_SCRIPT, str(corpus), model_path,
                                            str(tmp / "st.parquet"), str(st_batch)], env=env)
            if proc.returncode != 0:
                raise SystemExit(f"ST script failed: {proc.stderr[-2000:]}")
            return wall, peak.total, {}

        setups = {"st": st_script}
        for (name, extra), out in zip(settings, outs):
            setups[name] = lambda out=out, extra=extra: run_embed(corpus, out, extra, env)
        runs = in_turn(setups, args.repeats)
        st = pq.read_table(tmp / "st.parquet")
        st_vecs = dict(zip(st.column("doc_id").to_pylist(),
                           np.stack(st.column("vector").to_numpy(zero_copy_only=False))))
        st_walls = Spread([w for w, _, _ in runs["st"]])
        summary = runs[settings[0][0]][0][2]
        n, tokens = summary["chunks"], summary["tokens"]
        table.add(f"plain sentence-transformers script, batch {st_batch} (best in part 1)", n, tokens,
                  st_walls, cos=1.0, rss=max(r for _, r, _ in runs["st"]))
        for (name, _), out in zip(settings, outs):
            doc_ids, vecs = store_vectors(out)
            table.add(f"embedlab embed, {name}", n, tokens, Spread([w for w, _, _ in runs[name]]),
                      ref=st_walls.median, cos=cosines(vecs, np.stack([st_vecs[d] for d in doc_ids])).min(),
                      busy=Spread([s["encoder_busy"] for _, _, s in runs[name]]).median,
                      rss=max(r for _, r, _ in runs[name]))


def full_corpus(args, table: Table, encoder: Encoder) -> None:
    """The whole corpus, truncated: the default encoder alone against the default pipeline.

    Taken in turn, alone / pipeline / alone / ... / alone, so that the machine's drift over the
    run falls on both sides; each pipeline run is also set against the mean of the two encoder
    runs beside it.
    """
    docs = [r for r in read_corpus(CorpusConfig(path=args.data)) if isinstance(r, Document)]
    chunks, _ = Chunker(encoder.tokenizer, 256, 0, truncate=True).chunk(docs)
    ids = [c.input_ids for c in chunks]
    n, tokens = len(ids), int(sum(len(x) for x in ids))

    def encode_alone() -> tuple[float, np.ndarray]:
        seconds, vectors = timed(lambda: encoder.encode_ids(ids), repeats=1, warmup=0)
        return seconds.median, vectors

    env = {k: v for k, v in os.environ.items() if k != "EMBEDLAB_COMPILE"}
    alone, ref = encode_alone()
    alone_walls, pipeline_runs = [alone], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.full_repeats):
            pipeline_runs.append(run_embed(args.data, Path(tmp) / "out", [], env))
            alone_walls.append(encode_alone()[0])
        doc_ids, vecs = store_vectors(Path(tmp) / "out")
    alone_med = Spread(alone_walls).median
    walls = [w for w, _, _ in pipeline_runs]
    paired = [(alone_walls[k] + alone_walls[k + 1]) / 2 / w for k, w in enumerate(walls)]
    table.add(f"embedlab encoder alone, in this process (default settings; {len(alone_walls)} runs, "
              f"before, between and after the pipelines: "
              f"{', '.join(f'{n / w:.1f}' for w in alone_walls)} chunks/s)", n, tokens, Spread(alone_walls),
              ref=alone_med, cos=None)
    s = pipeline_runs[0][2]
    by_id = dict(zip((c.doc_id for c in chunks), ref))
    cos = cosines(vecs, np.stack([by_id[d] for d in doc_ids])).min()
    table.add(f"embedlab embed, whole process ({len(walls)} runs: "
              f"{', '.join(f'{n / w:.1f}' for w in walls)} chunks/s; each against the encoder runs "
              f"beside it: {', '.join(f'{r:.2f}' for r in paired)}; min cos is to the encoder alone)",
              s["chunks"], s["tokens"], Spread(walls), ref=alone_med,
              cos=cos, busy=Spread([r[2]["encoder_busy"] for r in pipeline_runs]).median,
              rss=max(r[1] for r in pipeline_runs))
    table.rows[-1][5] = f"{alone_med / Spread(walls).median:.2f} of encoder alone (medians)"
    share = Spread([r[2]["forward_seconds"] / r[0] for r in pipeline_runs]).median
    table.rows[-1][9] += f" of encoding, {share:.0%} of wall"


if __name__ == "__main__":
    main()
