"""Memory flat: the embed driver's and `embedlab verify`'s peak RSS at N and 10 x N documents.

Issue #20's target: driver and verify peak RSS within 10% between 100,000 and 1,000,000 documents.

Synthetic corpus: ``--docs`` (and ten times as many) short documents of 8 words drawn from 30
(seeded), about 12 tokens each, one chunk each. ``embedlab embed`` runs them on the simulated
device (``sim:``, the real worker path at a near-free device rate, 16-dimension vectors so the
store stays small) with the default 65,536-token partitions and 16 MB splits, so the larger run
has ten times the partitions, splits and id runs of the duplicate-id pass. Then ``embedlab
verify`` (deep: every sha256, rows, ids, no chunk live twice) on each store.

Peak RSS of the driver and of verify is the process's own ``ru_maxrss`` (exact, read at its
exit, its worker processes not included); the workers' peak is sampled from /proc every 0.1 s.
The sizes run in turn, ``--repeats`` rounds, and the table gives medians.

    .venv/bin/python benchmarks/bench_memory.py [--docs 100000] [--repeats 2] [--work DIR]
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Results, busy_note, command_line, markdown_table, parser, run_sampled  # noqa: E402

MODEL = "sim:r_max=1e8,b_half=1,dim=16"
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega cell protein gene tumor study trial").split()
# Runs the embedlab command and prints the process's own peak RSS (ru_maxrss, KB) at its exit.
PEAK = ("import atexit, resource, sys\n"
        "atexit.register(lambda: print('EMBEDLAB_MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " file=sys.stderr))\n"
        "sys.argv = ['embedlab', *sys.argv[1:]]\n"
        "from embedlab.cli import main\n"
        "main()\n")


def write_corpus(path: Path, docs: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(docs):
            fh.write(json.dumps({"_id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=8))}) + "\n")
    return path


def peak_of(stderr: str) -> float:
    """MB from the line PEAK prints."""
    line = next(x for x in stderr.splitlines() if x.startswith("EMBEDLAB_MAXRSS_KB"))
    return int(line.split()[1]) / 1024


def run(args: list[str]) -> tuple[dict, float, float, float]:
    """(the command's JSON, its wall seconds, own peak RSS MB, its descendants' sampled peak MB)."""
    proc, wall, sampler = run_sampled([sys.executable, "-c", PEAK, *args])
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), wall, peak_of(proc.stderr), sampler.workers


def one_round(corpus: Path, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    s, wall, driver, workers = run(["embed", str(corpus), "--out", str(out), "--model", MODEL,
                                    "--no-progress", "--json"])
    v, vwall, verify, _ = run(["verify", str(out), "--json"])
    if not v["ok"]:
        raise SystemExit(f"{out} does not verify: {v['problems'][:3]}")
    return {"docs": s["documents"], "chunks": s["chunks"], "partitions": s["partitions"], "splits": s["splits"],
            "embed_s": wall, "driver_mb": driver, "workers_mb": workers, "verify_s": vwall, "verify_mb": verify}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=100_000, help="the smaller corpus; the larger has 10x")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    results = Results("memory", args.results, device=None)
    work = Path(tempfile.mkdtemp(prefix="bench-mem-", dir=args.work))
    sizes = (args.docs, 10 * args.docs)
    try:
        corpora = {n: write_corpus(work / f"c{n}.jsonl", n) for n in sizes}
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
        for _ in range(args.repeats):  # the sizes in turn: load from other jobs falls on both
            for n in sizes:
                runs[n].append(one_round(corpora[n], work / f"s{n}"))
                print(n, runs[n][-1], flush=True)
        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
        small, large = (med[n] for n in sizes)
        rows = [[f"{m['docs']:,.0f} docs ({m['chunks']:,.0f} chunks, {m['partitions']:.0f} partitions, "
                 f"{m['splits']:.0f} splits)", f"{m['driver_mb']:.1f}", f"{m['verify_mb']:.1f}",
                 f"{m['workers_mb']:.0f}", f"{m['embed_s']:.0f}", f"{m['verify_s']:.1f}"] for m in (small, large)]
        rows.append([f"ratio {sizes[1]:,} / {sizes[0]:,}", f"{large['driver_mb'] / small['driver_mb']:.3f}",
                     f"{large['verify_mb'] / small['verify_mb']:.3f}",
                     f"{large['workers_mb'] / small['workers_mb']:.2f}", f"{large['embed_s'] / small['embed_s']:.1f}",
                     f"{large['verify_s'] / small['verify_s']:.1f}"])
        table = markdown_table(["corpus", "driver peak RSS MB", "verify peak RSS MB", "workers peak RSS MB",
                                "embed wall s", "verify wall s"], rows)
        spread = "\n".join(f"- {n:,} docs, each round: driver " + ", ".join(f"{r['driver_mb']:.1f}" for r in rs)
                           + " MB; verify " + ", ".join(f"{r['verify_mb']:.1f}" for r in rs) + " MB"
                           for n, rs in runs.items())
        intro = (f"Issue #20 target: driver and verify peak RSS within 10% (ratio <= 1.10) between {sizes[0]:,} "
                 f"and {sizes[1]:,} documents. Embed: `{MODEL}`, default partitions (65,536 tokens) and splits "
                 f"(16 MB); medians of {args.repeats} rounds, sizes in turn. Driver and verify: the process's own "
                 "ru_maxrss; workers: /proc sampled every 0.1 s (bounded by the split and partition sizes, not a target)."
                 + busy_note(results.load_before))
        results.write_markdown("Memory flat: driver and verify peak RSS at 10x the documents", intro,
                               table + "\n\n" + spread, command_line())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
