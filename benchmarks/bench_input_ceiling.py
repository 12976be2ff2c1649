"""The input path's ceiling today: the raw Rust tokenizer against the current driver, same texts, one run.

Baseline for issue #19. Each measurement runs in a fresh process, with the tokenizer's thread
pool fixed by ``RAYON_NUM_THREADS``, over the whole corpus twice; the second (warm) pass is
timed. Configurations are taken in turn, ``--repeats`` times, and the median is reported.

* **raw tokenizer**: read the JSONL file, ``json.loads`` each line, build the encoded text
  (``title + " " + text``, stripped), and ``Tokenizer.encode_batch`` blocks of 1,024 texts
  (offsets and word ids are computed by ``encode_batch`` itself), 1 and 2 threads.
* **driver**: today's public functions, as ``embedlab embed`` runs them before anything reaches
  a worker: ``read_corpus`` -> ``Chunker`` (the model's tokenizer, 256-token windows with 32
  overlap) -> ``ChunkStream.partitions`` (65,536-token partitions, content digests included).

Rates are in million corpus tokens per second (the raw tokenizer's count, no special tokens),
so every row divides the same work by its own time.

    .venv/bin/python benchmarks/bench_input_ceiling.py [--corpus wikipedia-vital-en] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, REPO, Results, busy_note, markdown_table  # noqa: E402

RAW = r"""
import json, sys, time
from tokenizers import Tokenizer
from embedlab.encoder import describe_model
tok = Tokenizer.from_file(describe_model("sentence-transformers/all-MiniLM-L6-v2").path + "/tokenizer.json")
tok.no_truncation(); tok.no_padding()
def run():
    n, block = 0, []
    for line in open(sys.argv[1], "rb"):
        d = json.loads(line)
        block.append((d.get("title", "") + " " + d["text"]).strip())
        if len(block) == 1024:
            n += sum(len(e.ids) for e in tok.encode_batch(block, add_special_tokens=False)); block = []
    if block:
        n += sum(len(e.ids) for e in tok.encode_batch(block, add_special_tokens=False))
    return n
run()
t0 = time.perf_counter(); n = run(); print(time.perf_counter() - t0, n)
"""

DRIVER = r"""
import sys, time
from embedlab.config import CorpusConfig, EmbedConfig
from embedlab.corpus import read_corpus
from embedlab.chunk_stream import ChunkStream, make_chunker
cfg = EmbedConfig(corpus=CorpusConfig(path=sys.argv[1]), out="unused")
chunker = make_chunker(cfg)
def run():
    stream = ChunkStream(read_corpus(cfg.corpus), chunker, cfg.corpus.block_docs)
    parts = chunks = 0
    for p in stream.partitions(cfg.partition_tokens):
        parts += 1; chunks += p.n_chunks
    return parts, chunks
run()
t0 = time.perf_counter(); parts, chunks = run(); print(time.perf_counter() - t0, parts, chunks)
"""



def measure(script: str, corpus: Path, threads: int) -> list[str]:
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script, str(corpus)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out


def plain_jsonl(name: str, work: Path) -> Path:
    src = DATA / name / "corpus.jsonl.gz"
    if not src.is_file():
        raise SystemExit(f"{src} not found (set EMBEDLAB_DATA)")
    out = work / f"{name}.jsonl"
    out.write_bytes(gzip.decompress(src.read_bytes()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="wikipedia-vital-en", help="a folder under the data dir")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = Results("input_ceiling_baseline", device=None)  # named by machine and date
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        corpus = plain_jsonl(args.corpus, Path(tmp))
        docs = sum(1 for _ in open(corpus, "rb"))
        configs = [("raw tokenizer, 1 thread", RAW, 1), ("raw tokenizer, 2 threads", RAW, 2),
                   ("driver (read, tokenize, chunk, partition), 2 threads", DRIVER, 2),
                   ("driver, 1 thread", DRIVER, 1)]
        times: dict[str, list[float]] = {c[0]: [] for c in configs}
        tokens = parts = chunks = 0
        for _ in range(args.repeats):
            for label, script, threads in configs:
                out = measure(script, corpus, threads)
                times[label].append(float(out[0]))
                if script is RAW:
                    tokens = int(out[1])
                else:
                    parts, chunks = int(out[1]), int(out[2])
    med = {k: statistics.median(v) for k, v in times.items()}
    raw2 = med["raw tokenizer, 2 threads"]
    rows = [[label, f"{med[label]:.2f}", f"{' / '.join(f'{t:.2f}' for t in times[label])}",
             f"{tokens / med[label] / 1e6:.2f}", f"{raw2 / med[label]:.2f}"] for label, _, _ in configs]
    table = markdown_table(["what", "s (median)", "s (each run)", "M tokens/s", "x raw tokenizer, 2 threads"],
                           rows)
    per_core = tokens / med["raw tokenizer, 1 thread"]
    intro = (f"Baseline for issue #19 on `{args.corpus}` ({docs:,} documents, {tokens:,} tokens without "
             f"special tokens; the driver makes {chunks:,} chunks in {parts:,} partitions). Fresh process per "
             f"measurement, warm second pass timed, configurations in turn, median of {args.repeats}. "
             f"The raw tokenizer's per-core rate, {per_core / 1e6:.2f} M tokens/s, is "
             f"{1e6 / per_core:.2f} us per token per core. Load average (1 min) before / after the run: "
             f"{load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs share them)."
             + busy_note(load_before))
    results.write_markdown("Input ceiling: raw tokenizer vs today's driver (baseline)",
                  intro, table, f"python benchmarks/bench_input_ceiling.py --corpus {args.corpus} "
                  f"--repeats {args.repeats}")


if __name__ == "__main__":
    main()
