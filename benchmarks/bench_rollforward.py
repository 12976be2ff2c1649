"""What copy-on-write with roll-forward commits costs against tombstones: stream batches and an update
that remove rows.

    .venv/bin/python benchmarks/bench_rollforward.py [--docs 2000] [--ops 48] [--repeats 5] [--results DIR]

A store of ``--docs`` SciFact documents is embedded once with a random one-layer BERT of
all-MiniLM-L6-v2's width (384-dimension vectors, so a partition's file is the size a real
store's is; max length 128) at the default 65,536-token partitions: full-size partitions, which
is what a rewrite reads and writes. Then, each run on a fresh copy of it, copy-on-write and ``--tombstones`` taken
in turn for ``--repeats`` rounds:

* ``stream``: ``--ops`` change-feed records, alternately a delete and a modify, each of a document
  in another partition (round robin), one record per batch (``--max-batch 1``), all waiting at
  the start: milliseconds per batch (first arrival to last commit, over the batches), so the
  copy-on-write column pays one partition rewrite and a roll-forward commit per batch.
* ``update``: the same records as one ``update --feed`` on a cluster started once for the whole
  run (one worker): wall time, which pays every touched partition's rewrite in one commit.

The table gives the median ± std and the ratio copy-on-write / tombstones of the medians.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import DATA, Results, Spread, command_line, in_turn, markdown_table, parser  # noqa: E402

import embedlab  # noqa: E402
from embedlab.config import ClusterConfig  # noqa: E402
from embedlab.incremental import UpdateConfig, update  # noqa: E402
from embedlab.store import Store  # noqa: E402
from embedlab.streaming import StreamConfig, stream  # noqa: E402
from embedlab.testing import make_tiny_model  # noqa: E402
from embedlab.transaction import live_documents  # noqa: E402


def load_docs(n: int) -> list[dict]:
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def change_feed(store: Store, docs: list[dict], ops: int, path: Path) -> int:
    """``ops`` records, a delete then a modify, each of a document in the next partition; the
    number of partitions they touch."""
    by_id = {d["_id"]: d for d in docs}
    live = live_documents(store, store.manifest())
    per_part: dict[int, list[str]] = {}
    for doc_id, info in sorted(live.items()):
        per_part.setdefault(info.partition, []).append(doc_id)
    parts = sorted(per_part)
    with open(path, "w") as fh:
        for i in range(ops):
            doc_id = per_part[parts[i % len(parts)]].pop()
            rec = ({"op": "delete", "_id": doc_id} if i % 2 == 0 else
                   dict(by_id[doc_id], text=by_id[doc_id]["text"] + " Revised."))
            fh.write(json.dumps(rec) + "\n")
    return min(ops, len(parts))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=2000, help="SciFact documents in the store")
    ap.add_argument("--ops", type=int, default=48, help="change-feed records (deletes and modifies)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("EMBEDLAB_COMPILE", "0")  # a tiny model: torch.compile's warm-up is not the point
    results = Results("rollforward", args.results)
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory(prefix="bench-rollforward-") as tmp, \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster:
        work = Path(tmp)
        model = make_tiny_model(work / "tiny", hidden=384, layers=1, max_len=128)
        docs = load_docs(args.docs)
        corpus = work / "v1.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        base = embedlab.embed(corpus, work / "base", model=str(model), dtype="fp32", progress=False,
                              scheduler=cluster.scheduler_address)
        feed = work / "feed.jsonl"
        touched = change_feed(Store(base.out), docs, args.ops, feed)
        runs = iter(range(10**6))

        def fresh() -> Path:
            out = work / f"run-{next(runs)}"
            shutil.copytree(base.out, out)
            return out

        def run_stream(cow: bool) -> float:
            r = stream(StreamConfig(watch=feed, out=fresh(), max_batch=1, max_delay_ms=0, idle_exit_s=0.3,
                                    copy_on_write=cow))
            assert r.batches == args.ops and r.rewritten == (args.ops if cow else 0), r.summary()
            return r.wall_seconds / r.batches * 1e3

        def run_update(cow: bool) -> float:
            r = update(UpdateConfig(source=feed, out=fresh(), feed=True, copy_on_write=cow, progress=False,
                                    cluster=ClusterConfig(scheduler=cluster.scheduler_address)))
            assert r.partitions_rewritten == (touched if cow else 0), r.summary()
            return r.wall_seconds

        setups = {("stream", True): lambda: run_stream(True), ("stream", False): lambda: run_stream(False),
                  ("update", True): lambda: run_update(True), ("update", False): lambda: run_update(False)}
        run_stream(False)  # warm-up: the encoder loads once per process
        got = in_turn(setups, args.repeats, lambda name, v: print(f"{name}: {v:.3f}", flush=True))

    rows, tidy = [], []
    for job, unit in (("stream", "ms per batch"), ("update", "s wall")):
        cow, tomb = Spread(got[(job, True)]), Spread(got[(job, False)])
        rows.append([f"`{job}`", unit, cow.pm(".1f" if job == "stream" else ".2f"),
                     tomb.pm(".1f" if job == "stream" else ".2f"), f"{cow.median / tomb.median:.2f}x"])
        tidy += [{"job": job, "copy_on_write": c, "value": v, "unit": unit, "docs": args.docs, "ops": args.ops}
                 for c in (True, False) for v in got[(job, c)]]
    n_parts = base.partitions
    intro = (f"Store: {args.docs:,} SciFact documents, {base.chunks:,} chunks in {n_parts} partitions of "
             f"up to 65,536 tokens (random one-layer BERT, 384 dimensions, max length 128, fp32). Changes: {args.ops} change-feed "
             f"records (deletes and modifies alternately), round robin over the partitions ({touched} touched). "
             f"Median ± std of {args.repeats} runs per setup, setups taken in turn, each run on a fresh copy of "
             "the store. Copy-on-write rewrites each partition a change removes rows from and commits by "
             "roll-forward (staged files, one record, one rename per file); `--tombstones` only records the "
             "removed chunk ids in the commit.")
    body = markdown_table(["job", "unit", "copy-on-write", "--tombstones", "copy-on-write / tombstones"], rows)
    results.write_markdown("Copy-on-write with roll-forward commits vs tombstones", intro, body, command_line())
    results.write_csv(tidy)


if __name__ == "__main__":
    main()
