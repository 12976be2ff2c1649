"""The input path (issue #19): the whole pipeline against the raw Rust tokenizer, in one run.

Four tables, each measured in fresh processes, configurations taken in turn (``--repeats``
rounds), medians reported:

1. **Input ceiling.** The whole ``embedlab embed`` (a fresh process per run) with a near-free
   encoder (a 1-layer, 32-wide random BERT with the real tokenizer, as
   ``../shared/acceptance/10-input-ceiling`` uses) against the raw Rust tokenizer reading,
   parsing (``json.loads``) and tokenizing (``encode_batch`` of 1,024 texts, offsets included) the
   same texts on the same cores (one worker; its encoder on one torch thread). Steady state: the rate between a 1x and a 3x copy of the corpus,
   so fixed start-up costs (imports, cluster, model load) cancel. Rates count the raw
   tokenizer's tokens (no special tokens), so both rows divide the same work.
2. **No waiting.** The simulated device (:mod:`embedlab.simdevice`) set to half of the ceiling
   just measured (in chunks/s at the batch size of 128), on the 1x corpus: how busy the device
   is during the encode phase, and how long it waited for input and for the writer.
3. **Driver CPU.** CPU seconds of the driver process (imports and the scheduler included: it
   runs in the driver's process) per 100,000 chunks, at two corpus sizes, and the difference
   between them (what grows with the corpus).
4. **Scale-out.** The near-free-encoder pipeline with 1 and 2 single-threaded workers, the
   corpus cut in 8 splits: input rate per worker.
5. **From pre-tokenized chunks** (``embedlab chunk``, then ``embed`` of the chunk folder: workers
   read integers, no tokenizer). Steady state between a 1x and a ``--chunk-copies`` x copy, in
   turn with the raw tokenizer on the same copies: the chunk job itself, the whole embed from the
   raw corpus and from the chunk folder with a near-free device (the simulated device,
   ``sim:r_max=1e7,b_half=0,dim=32``: a 128-row batch costs 13 microseconds, 32-wide vectors as
   the 1-layer encoder's), and from the chunk folder with the real 1-layer, 32-wide encoder
   (1x and 3x: its own forward pass is its limit). Writes (Parquet, FAISS shards, commits) included.
   ``--only-chunks`` runs this section alone (results ``pipeline_chunks_*``).

    .venv/bin/python benchmarks/bench_pipeline.py [--corpus wikipedia-vital-en] [--repeats 3] [--only-chunks]
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

from benchmarks.common import (REPO, Results, busy_note, command_line, corpus_file, in_turn,  # noqa: E402
                               markdown_table, near_free_encoder, parser)

RAW = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2] + "/tokenizer.json"); tok.no_truncation(); tok.no_padding()
t0 = time.perf_counter(); n = 0; block = []
for line in open(sys.argv[1], "rb"):
    d = json.loads(line); block.append((d.get("title", "") + " " + d["text"]).strip())
    if len(block) == 1024:
        n += sum(len(e.ids) for e in tok.encode_batch(block, add_special_tokens=False)); block = []
if block: n += sum(len(e.ids) for e in tok.encode_batch(block, add_special_tokens=False))
print(time.perf_counter() - t0, n)
"""

PIPE = r"""
import json, sys, time, shutil
t0 = time.perf_counter(); c0 = time.process_time()
import embedlab
corpus, out, model, opts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
r = embedlab.embed(corpus, out, model=model, progress=False, **opts)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "chunks": r.chunks,
                  "encode_wall": r.encode_wall_seconds, "busy": r.encoder_busy, "forward": r.forward_seconds,
                  "input_wait": r.input_wait_seconds, "writer_wait": r.writer_wait_seconds,
                  "workers": r.cluster.get("workers")}))
shutil.rmtree(out)
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "true"}


def raw(corpus: Path, model: Path) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", RAW, str(corpus), str(model)], env=env(), check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def pipe(corpus: Path, work: Path, model: str, **opts) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PIPE, str(corpus), str(work / "out"), model, json.dumps(opts)],
                          env=env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"embed failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - t0}


CHUNK = r"""
import json, sys, time
t0 = time.perf_counter()
import embedlab
r = embedlab.chunk(sys.argv[1], sys.argv[2], model=sys.argv[3], progress=False)
print(json.dumps({"wall": time.perf_counter() - t0, "chunks": r.chunks, "tokens": r.tokens, "bytes": r.bytes_written}))
"""

NEAR_FREE_SIM = "sim:r_max=1e7,b_half=0,dim=32"


def chunk_folder(corpus: Path, out: Path, model: str) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHUNK, str(corpus), str(out), model], env=env(),
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"chunk failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - t0}


def steady(n1: int, n2: int, a: list, b: list, key=lambda r: r["process"]) -> list[float]:
    """Rates between the small and the large copy, run by run: (n2 - n1) / (t2 - t1)."""
    return [(n2 - n1) / (key(y) - key(x)) for x, y in zip(a, b)]


def chunks_section(src: Path, work: Path, tiny: str, k: int, repeats: int, log) -> tuple[str, str]:
    """Section 5: the input ceiling from pre-tokenized chunks (intro line, table)."""
    c1, ck, c3 = copies(src, work, 1), copies(src, work, k), copies(src, work, 3)
    raw_runs = in_turn({"raw 1x": lambda: raw(c1, Path(tiny)), f"raw {k}x": lambda: raw(ck, Path(tiny)),
                        "chunk 1x": lambda: chunk_folder(c1, work / "ch1", tiny),
                        f"chunk {k}x": lambda: chunk_folder(ck, work / f"ch{k}", tiny)}, repeats, log)
    chunk_folder(c3, work / "ch3", tiny)
    n1, nk = raw_runs["raw 1x"][0][1], raw_runs[f"raw {k}x"][0][1]
    n3 = 3 * n1
    tok = steady(n1, nk, raw_runs["raw 1x"], raw_runs[f"raw {k}x"], key=lambda r: r[0])
    made = steady(n1, nk, raw_runs["chunk 1x"], raw_runs[f"chunk {k}x"])
    runs = in_turn({"sim raw 1x": lambda: pipe(c1, work, NEAR_FREE_SIM),
                    f"sim raw {k}x": lambda: pipe(ck, work, NEAR_FREE_SIM),
                    "sim chunks 1x": lambda: pipe(work / "ch1", work, NEAR_FREE_SIM),
                    f"sim chunks {k}x": lambda: pipe(work / f"ch{k}", work, NEAR_FREE_SIM),
                    "tiny chunks 1x": lambda: pipe(work / "ch1", work, tiny, threads=1),
                    "tiny chunks 3x": lambda: pipe(work / "ch3", work, tiny, threads=1)}, repeats, log)
    from_raw = steady(n1, nk, runs["sim raw 1x"], runs[f"sim raw {k}x"])
    from_chunks = steady(n1, nk, runs["sim chunks 1x"], runs[f"sim chunks {k}x"])
    tiny_rate = steady(n1, n3, runs["tiny chunks 1x"], runs["tiny chunks 3x"])
    tiny_fwd = [n3 / r["forward"] for r in runs["tiny chunks 3x"]]
    each = lambda xs: " / ".join(f"{x / 1e6:.2f}" for x in xs)  # noqa: E731
    ratio = lambda xs: f"{med(xs) / med(tok):.2f}"  # noqa: E731
    rows = [["raw Rust tokenizer: read, json.loads, encode_batch (both cores)", f"{med(tok) / 1e6:.2f}", each(tok), "1.00"],
            ["`embedlab chunk` (read, tokenize, chunk, write the chunk files; 1 worker)", f"{med(made) / 1e6:.2f}",
             each(made), ratio(made)],
            [f"whole `embedlab embed` of the raw corpus, near-free device `{NEAR_FREE_SIM}`", f"{med(from_raw) / 1e6:.2f}",
             each(from_raw), ratio(from_raw)],
            [f"**whole `embedlab embed` of the chunk folder, near-free device `{NEAR_FREE_SIM}`** (goal >= 4)",
             f"**{med(from_chunks) / 1e6:.2f}**", each(from_chunks), f"**{ratio(from_chunks)}**"],
            ["whole `embedlab embed` of the chunk folder, the real 1-layer 32-wide encoder (1 torch thread; 1x/3x)",
             f"{med(tiny_rate) / 1e6:.2f}", each(tiny_rate), ratio(tiny_rate)],
            ["that encoder's forward passes alone, in those runs (tokens / forward s, 3x)", f"{med(tiny_fwd) / 1e6:.2f}",
             each(tiny_fwd), ratio(tiny_fwd)]]
    big = runs[f"sim chunks {k}x"]
    intro = (f"Section 5: 1x and {k}x copies ({n1:,} and {nk:,} tokens without special tokens; the chunk folder of "
             f"the {k}x copy: {raw_runs[f'chunk {k}x'][0]['bytes'] / 1e6:.1f} MB, {raw_runs[f'chunk {k}x'][0]['chunks']:,} "
             f"chunks). From the {k}x chunk folder the near-free device was busy {med(r['busy'] for r in big):.1%} of the "
             f"encode phase and waited {med(r['input_wait'] for r in big):.2f} s for input, "
             f"{med(r['writer_wait'] for r in big):.2f} s for the writer (medians).")
    table = markdown_table(["what", "M tokens/s, steady state (median)", "each run", "x raw tokenizer"], rows)
    return intro, table


def copies(src: Path, work: Path, k: int) -> Path:
    docs = [json.loads(x) for x in gzip.open(src, "rt", encoding="utf-8")]
    out = work / f"c{k}.jsonl"
    if out.is_file():
        return out
    with open(out, "w", encoding="utf-8") as fh:
        for r in range(k):
            for d in docs:
                fh.write(json.dumps({**d, "_id": f"{d['_id']}-{r}"}) + "\n")
    return out


def med(values) -> float:
    return statistics.median(values)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--corpus", default="wikipedia-vital-en", help="a folder under the data dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-copies", type=int, default=9, help="section 5: the large copy (x the corpus)")
    ap.add_argument("--only-chunks", action="store_true", help="run section 5 alone")
    args = ap.parse_args()
    results = Results("pipeline_chunks" if args.only_chunks else "pipeline_input", args.results, device=None)
    src = corpus_file(args.corpus)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        tiny = near_free_encoder(work / "tiny")
        log = lambda name, r: print(f"  {name}: {r}", file=sys.stderr, flush=True)  # noqa: E731
        intro5, t5 = chunks_section(src, work, tiny, args.chunk_copies, args.repeats, log)
        if args.only_chunks:
            intro = (f"`{args.corpus}`. Near-free encoders: the simulated device `{NEAR_FREE_SIM}` (the real "
                     "1-layer, 32-wide encoder's own forward pass is slower than the input path: last row); the real "
                     f"all-MiniLM-L6-v2 tokenizer. Medians of {args.repeats} rounds, configurations in turn. "
                     "Rates count the raw tokenizer's tokens (no special tokens, no overlap), so every row "
                     "divides the same work." + busy_note(results.load_before))
            results.write_markdown("Input path from pre-tokenized chunks (`embedlab chunk`)", intro + "\n\n" + intro5,
                                   "## 5. From pre-tokenized chunks (goal >= 4 M tokens/s)\n\n" + t5, command_line())
            return
        c1, c3 = copies(src, work, 1), copies(src, work, 3)
        eight = {"split_bytes": c3.stat().st_size // 8 + 1}

        # 1. input ceiling
        one = {"threads": 1}  # a 2-thread OpenMP pool spins against the tokenizer's threads when
        # other jobs load the machine; on one thread the encoder only takes its own time
        runs = in_turn({"raw 1x": lambda: raw(c1, Path(tiny)), "raw 3x": lambda: raw(c3, Path(tiny)),
                        "pipe 1x": lambda: pipe(c1, work, tiny, **one), "pipe 3x": lambda: pipe(c3, work, tiny, **one)},
                       args.repeats, log)
        n1, n3 = runs["raw 1x"][0][1], runs["raw 3x"][0][1]
        tok_rates = [(n3 - n1) / (b[0] - a[0]) for a, b in zip(runs["raw 1x"], runs["raw 3x"])]
        pipe_rates = [(n3 - n1) / (b["process"] - a["process"]) for a, b in zip(runs["pipe 1x"], runs["pipe 3x"])]
        ratios = [p / t for p, t in zip(pipe_rates, tok_rates)]
        fwd_rates = [n3 / r["forward"] for r in runs["pipe 3x"]]  # what the encoder alone could take
        chunks3 = runs["pipe 3x"][0]["chunks"]
        chunks1 = runs["pipe 1x"][0]["chunks"]
        chunk_rate = med(pipe_rates) * (chunks3 - chunks1) / (n3 - n1)
        t1 = markdown_table(
            ["what", "M tokens/s (median)", "each run", "x raw tokenizer"],
            [["raw Rust tokenizer: read, json.loads, encode_batch (both cores)", f"{med(tok_rates) / 1e6:.2f}",
              " / ".join(f"{r / 1e6:.2f}" for r in tok_rates), "1.00"],
             ["whole `embedlab embed`, near-free encoder, steady state", f"{med(pipe_rates) / 1e6:.2f}",
              " / ".join(f"{r / 1e6:.2f}" for r in pipe_rates), f"{med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"],
             ["the near-free encoder's forward passes alone, in those runs (tokens / forward s, 3x)",
              f"{med(fwd_rates) / 1e6:.2f}", " / ".join(f"{r / 1e6:.2f}" for r in fwd_rates),
              f"{med(fwd_rates) / med(tok_rates):.2f}"]])

        # 2. the simulated device at half of the ceiling
        rate = chunk_rate / 2
        b_half = 16
        sim = f"sim:r_max={rate * (128 + b_half) / 128:.0f},b_half={b_half},dim=384"
        sims = in_turn({"sim": lambda: pipe(c1, work, sim)}, args.repeats, log)["sim"]
        t2 = markdown_table(
            ["device", "device busy, encode phase (median)", "each run", "input wait s", "writer wait s",
             "encode phase s"],
            [[f"`{sim}` ({rate:,.0f} chunks/s at 128 rows: half the ceiling's {chunk_rate:,.0f})",
              f"{med(s['busy'] for s in sims):.1%}", " / ".join(f"{s['busy']:.1%}" for s in sims),
              f"{med(s['input_wait'] for s in sims):.2f}", f"{med(s['writer_wait'] for s in sims):.2f}",
              f"{med(s['encode_wall'] for s in sims):.1f}"]])

        # 3. driver CPU per 100k chunks, 4. per-worker input rate with 1 and 2 workers
        scale = in_turn({"1 worker": lambda: pipe(c3, work, tiny, workers=1, threads=1, **eight),
                         "2 workers": lambda: pipe(c3, work, tiny, workers=2, threads=1, **eight)},
                        args.repeats, log)
        rows3 = []
        for label, runs_ in (("1x (one split)", runs["pipe 1x"]), ("3x (one split)", runs["pipe 3x"]),
                             ("3x, 8 splits, 2 workers", scale["2 workers"])):
            per = [r["cpu"] / r["chunks"] * 1e5 for r in runs_]
            rows3.append([label, f"{runs_[0]['chunks']:,}", f"{med(r['cpu'] for r in runs_):.2f}",
                          f"{med(per):.2f}", " / ".join(f"{p:.2f}" for p in per)])
        marginal = [(b["cpu"] - a["cpu"]) / (b["chunks"] - a["chunks"]) * 1e5
                     for a, b in zip(runs["pipe 1x"], runs["pipe 3x"])]
        rows3.append(["3x minus 1x (the cost that grows with the corpus)", f"{chunks3 - chunks1:,}", "",
                      f"{med(marginal):.2f}", " / ".join(f"{p:.2f}" for p in marginal)])
        t3 = markdown_table(["corpus", "chunks", "driver CPU s (median)", "driver CPU s per 100k chunks",
                             "each run"], rows3)
        rows4 = []
        for label, runs_ in scale.items():
            total = [n3 / r["encode_wall"] for r in runs_]
            w = runs_[0]["workers"]
            rows4.append([label, f"{med(total) / 1e6:.2f}", f"{med(total) / w / 1e6:.2f}",
                          " / ".join(f"{t / 1e6:.2f}" for t in total), f"{med(r['input_wait'] for r in runs_):.2f}"])
        t4 = markdown_table(["workers (1 torch thread each)", "M tokens/s, encode phase", "per worker", "each run",
                             "input wait s (summed)"], rows4)
    load = results.load_before
    intro = (f"`{args.corpus}` ({n1:,} tokens without special tokens, {chunks1:,} chunks at 1x; {n3:,} at 3x). "
             f"Near-free encoder: 1 layer, 32 wide, the real all-MiniLM-L6-v2 tokenizer. "
             f"Medians of {args.repeats} rounds, configurations in turn." + busy_note(load))
    body = "\n\n".join([
        "## 1. Input ceiling (goal >= 0.80 of the raw tokenizer)", t1,
        "## 2. Simulated device at half the ceiling (goal: busy >= 95%)", t2,
        "## 3. Driver CPU (goal <= 2 s per 100,000 chunks)", t3,
        "## 4. Input rate with 1 and 2 workers", t4,
        "## 5. From pre-tokenized chunks (goal >= 4 M tokens/s)", intro5 + "\n\n" + t5])
    results.write_markdown("Input path: pipeline vs raw tokenizer, simulated device, driver CPU, workers",
                           intro, body, command_line())


if __name__ == "__main__":
    main()
