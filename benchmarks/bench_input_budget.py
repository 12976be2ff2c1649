"""Where acceptance 10's CPU goes: the input ceiling as a budget of CPU microseconds per token.

The input-ceiling check (``../shared/acceptance/10-input-ceiling``) runs the whole ``embedlab
embed`` with a 1-layer, 32-wide random BERT against the raw Rust tokenizer on the same two cores.
Both are CPU-bound there, so the pipeline's rate is at most ``cores / (input CPU + encoder CPU)``
per token, however well its stages overlap. This script measures each term in one run, in fresh
processes, configurations in turn (``--repeats`` rounds, medians):

* **raw tokenizer**: the check's own script (read, ``json.loads``, ``encode_batch`` of 1,024
  texts with offsets); wall rate and CPU per token (all threads).
* **input stage**: what a worker does before encoding (read its split, tokenize, chunk, cut
  partitions: ``embedlab.split_task.cut_split``), every partition taken and dropped; with the
  ids-first tokenizing (``embedlab.chunking``) and with offsets for every document. On a corpus
  of long documents (``--corpus scifact``) most go straight to offsets: the row shows that
  routing costs nothing there.
* **encoder**: the 1-layer encoder's forward passes (``Encoder.encode_ids``, the worker's
  batches) over those partitions' token ids, on 1 and 2 torch threads.
* **whole pipeline**: ``embedlab embed`` at its defaults, steady state between a 1x and a 3x copy
  (start-up cancels), as the check runs it.

The last table turns the terms into the bound: the rate two cores could give if nothing else
cost anything and the stages overlapped perfectly, as a fraction of the raw tokenizer's rate.

    .venv/bin/python benchmarks/bench_input_budget.py [--corpus wikipedia-vital-en] [--repeats 3]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_pipeline import RAW, copies, env, med  # noqa: E402
from benchmarks.common import (Results, busy_note, command_line, corpus_file, in_turn, markdown_table,  # noqa: E402
                               near_free_encoder, parser)

STAGES = r"""
import json, sys, time
from pathlib import Path
import embedlab.chunking as chunking
from embedlab.config import CorpusConfig, EmbedConfig, EncodeConfig
from embedlab.split_embed import plan
from embedlab.split_task import cut_split
corpus, model, what = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = EmbedConfig(corpus=CorpusConfig(path=corpus, split_bytes=1 << 40), out=Path(corpus).parent / "unused",
                  encode=EncodeConfig(model=model))
(work,), _, _ = plan(cfg, 256)
if what == "offsets":
    chunking.edges_known = lambda spec: False  # every document tokenized with offsets
def stage():
    _, _, parts = cut_split(work)
    return list(parts)
if what in ("ids-first", "offsets"):
    stage()  # warm: the tokenizer built, the file in the page cache
    c0, t0 = time.process_time(), time.perf_counter()
    parts = stage()
else:
    from embedlab.encoder import Encoder
    parts = stage()
    enc = Encoder(EncodeConfig(model=model, torch_threads=int(what)))
    enc.encode_ids(parts[0].input_ids())  # warm
    c0, t0 = time.process_time(), time.perf_counter()
    for p in parts:
        enc.encode_ids(p.input_ids())
print(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0,
                  "tokens": sum(p.n_tokens for p in parts)}))
"""

PIPE = r"""
import sys, shutil, embedlab
embedlab.embed(sys.argv[1], sys.argv[2], model=sys.argv[3], progress=False)
shutil.rmtree(sys.argv[2])
"""


def child(args: list[str]) -> tuple[str, float, float]:
    """Run a Python child: (stdout, wall s, CPU s of the child and its threads and processes)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", *args], env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"failed: {args[1:]}\n{proc.stderr[-3000:]}")
    return proc.stdout, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def stage(corpus: Path, model: str, what: str) -> dict:
    return json.loads(child([STAGES, str(corpus), model, what])[0].strip().splitlines()[-1])


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--corpus", default="wikipedia-vital-en", help="a folder under the data dir")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    name = "input_budget" if args.corpus == "wikipedia-vital-en" else f"input_budget_{args.corpus}"
    results = Results(name, args.results, device=None)
    src = corpus_file(args.corpus)
    with tempfile.TemporaryDirectory(prefix="bench-input-budget-") as tmp:
        work = Path(tmp)
        tiny = near_free_encoder(work / "tiny")
        c1, c3 = copies(src, work, 1), copies(src, work, 3)
        out = str(work / "out")
        log = lambda name, r: print(f"  {name}: {r}", file=sys.stderr, flush=True)  # noqa: E731
        runs = in_turn({
            "raw 1x": lambda: child([RAW, str(c1), tiny]), "raw 3x": lambda: child([RAW, str(c3), tiny]),
            "ids-first": lambda: stage(c1, tiny, "ids-first"), "offsets": lambda: stage(c1, tiny, "offsets"),
            "encoder 1": lambda: stage(c1, tiny, "1"), "encoder 2": lambda: stage(c1, tiny, "2"),
            "pipe 1x": lambda: child([PIPE, str(c1), out, tiny]), "pipe 3x": lambda: child([PIPE, str(c3), out, tiny]),
        }, args.repeats, log)
    n1 = int(runs["raw 1x"][0][0].split()[1])
    n3 = int(runs["raw 3x"][0][0].split()[1])

    def steady(a: str, b: str, wall=lambda r: r[1]) -> tuple[list[float], list[float]]:
        """Per round: tokens/s and CPU us per token between the 1x and the 3x run."""
        rate = [(n3 - n1) / (wall(y) - wall(x)) for x, y in zip(runs[a], runs[b])]
        cpu = [(y[2] - x[2]) * 1e6 / (n3 - n1) for x, y in zip(runs[a], runs[b])]
        return rate, cpu

    raw_rate, raw_cpu = steady("raw 1x", "raw 3x", wall=lambda r: float(r[0].split()[0]))
    pipe_rate, pipe_cpu = steady("pipe 1x", "pipe 3x")
    tok = med(raw_rate)

    def per_token(name: str) -> tuple[list[float], list[float]]:
        # stages count tokens with special tokens; rates divide the raw tokenizer's count, as the check does
        return ([n1 / r["wall"] for r in runs[name]], [r["cpu"] * 1e6 / n1 for r in runs[name]])

    each = lambda xs, f=".2f": " / ".join(f"{x:{f}}" for x in xs)  # noqa: E731
    rows, cpu_of = [], {}
    for label, (rate, cpu) in [
            ("raw Rust tokenizer: read, json.loads, encode_batch with offsets (the check's peer)", (raw_rate, raw_cpu)),
            ("input stage, ids-first tokenizing (embedlab's)", per_token("ids-first")),
            ("input stage, offsets for every document (before)", per_token("offsets")),
            ("1-layer 32-wide encoder's forward passes, 1 torch thread", per_token("encoder 1")),
            ("1-layer 32-wide encoder's forward passes, 2 torch threads", per_token("encoder 2")),
            ("**whole `embedlab embed`, defaults, steady state 1x -> 3x**", (pipe_rate, pipe_cpu))]:
        cpu_of[label] = med(cpu)
        rows.append([label, f"{med(cpu):.2f}", each(cpu), f"{med(rate) / 1e6:.2f}", f"{med(rate) / tok:.2f}"])
    t1 = markdown_table(["what", "CPU us per token (median)", "each run", "M tokens/s", "x raw tokenizer"], rows)
    input_cpu = cpu_of["input stage, ids-first tokenizing (embedlab's)"]
    fwd_cpu = min(cpu_of["1-layer 32-wide encoder's forward passes, 1 torch thread"],
                  cpu_of["1-layer 32-wide encoder's forward passes, 2 torch threads"])
    bound = 2e6 / (input_cpu + fwd_cpu)
    need = 2e6 / (0.8 * tok) - input_cpu
    t2 = markdown_table(["what", "value"], [
        ["input stage + the encoder's cheaper forward, CPU us per token", f"{input_cpu + fwd_cpu:.2f}"],
        ["two cores' bound: 2 / that (stages overlapped perfectly, writes and scheduling free)",
         f"{bound / 1e6:.2f} M tokens/s = **{bound / tok:.2f} x the raw tokenizer**"],
        ["the whole pipeline, as a share of that bound", f"{med(pipe_rate) / bound:.2f}"],
        ["encoder CPU per token that 0.8 x the raw tokenizer leaves beside this input stage",
         f"{need:.2f} us (measured: {fwd_cpu:.2f})"]])
    intro = (f"`{args.corpus}`: {n1:,} tokens at 1x (the raw tokenizer's count, no special tokens), {n3:,} at 3x. "
             f"Near-free encoder: 1 layer, 32 wide, random weights, the all-MiniLM-L6-v2 tokenizer, default "
             f"precision. Medians of {args.repeats} rounds, configurations in turn; CPU is user + system time "
             "of the process and all its threads (the pipeline's: every process of the job)."
             + busy_note(results.load_before))
    body = "\n\n".join(["## CPU per token", t1, "## The bound on two cores", t2])
    results.write_markdown("Input ceiling as a CPU budget", intro, body, command_line())


if __name__ == "__main__":
    main()
