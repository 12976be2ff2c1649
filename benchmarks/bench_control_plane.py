"""The control plane on the commit log (format 2) against the old manifest path (format 1), same run.

1. **Commit cost per partition.** Format 2: ``Store.commit_landed`` (one fsync'd record, the
   files' sizes stat'ed, a checkpoint every ``max(100, 0.1 x entries)`` records) on stores
   holding 100, 10,000 and 100,000 entries, taken in turn commit by commit until the largest
   has written its next checkpoint (so checkpoints are in every average). Peer: format 1's
   ``Store.write_manifest`` (the whole ``_manifest.json``, fsync'd) at 100, 1,000 and 10,000.
2. **Open cost for search, beyond the shards.** Two stores with the same partitions, 1 GB and
   10 GB of (sparse) files. Format 2: ``require_verified()`` + ``manifest()`` (the log's
   checkpoint and tail, a ``stat`` per file). Peer: hashing every file, which is what opening a
   store cost before (``verify(deep=False)``).
3. **Resume.** A real ``embedlab embed`` (tiny encoder, 1,024-token partitions) of Wikipedia
   vital articles, then the same command again (trusts committed files of the recorded size),
   and again with ``--verify-deep`` (re-hashes every file, as every resume did before).

    .venv/bin/python benchmarks/bench_control_plane.py [--quick] [--work DIR]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, Results, Spread, busy_note, in_turn, markdown_table, parser, timed  # noqa: E402
from embedlab.commitlog import LOG_DIR, CommitLog, Snapshot  # noqa: E402
from embedlab.store import Manifest, PartitionEntry, Store  # noqa: E402
from embedlab.storelog import COMPLETE, entry_value, part_key  # noqa: E402

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]


def fake_entry(i: int, parquet: str = "", faiss: str = "") -> PartitionEntry:
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return PartitionEntry(index=i, rows=512, tokens=65_536, docs=120, digest=h,
                          parquet=parquet or f"part-{i:05d}.parquet",
                          faiss=faiss or f"_faiss/part-{i:05d}.faiss", parquet_sha256=h, faiss_sha256=h[::-1])


def logged_store(root: Path, n: int, sizes: tuple[int, int] = (1000, 1000)) -> Store:
    """A format-2 store whose log's checkpoint holds ``n`` entries (set-up: written directly)."""
    (root / "_faiss").mkdir(parents=True)
    (root / "_embedlab.json").write_text(json.dumps({"format_version": 2, "dim": 384}))
    snap = Snapshot(meta={COMPLETE: True})
    for i in range(n):
        snap.entries[part_key(i)] = entry_value(fake_entry(i), sizes)
    log = CommitLog(root / LOG_DIR, durable=False)
    log.root.mkdir()
    log.write_checkpoint(snap)
    return Store(root)


def manifest_commit(work: Path, n: int) -> Spread:
    """Seconds of one format-1 commit holding ``n`` entries (the whole manifest, fsync'd)."""
    store = Store(work / f"manifest-{n}")
    store.root.mkdir(parents=True)
    (store.root / "_embedlab.json").write_text(json.dumps({"format_version": 1, "dim": 384}))
    manifest = Manifest(partitions={i: fake_entry(i) for i in range(n)})
    return timed(lambda: store.write_manifest(manifest), repeats=9 if n <= 1000 else 3)[0]


def log_commits(work: Path, sizes: tuple[int, ...]) -> dict[int, tuple[float, float, int]]:
    """Per store size: (mean seconds per commit with checkpoints, median record, commits per checkpoint)."""
    stores, manifests = {}, {}
    for n in sizes:
        store = logged_store(work / f"log-{n}", n)
        (store.root / "part-x.parquet").write_bytes(b"p" * 3000)
        (store.root / "_faiss" / "part-x.faiss").write_bytes(b"f" * 2000)
        manifests[n] = store.manifest()
        store.log.claim("bench")
        stores[n] = store
    times: dict[int, list[float]] = {n: [] for n in sizes}
    largest = stores[max(sizes)].log.held()
    k = 0
    while True:
        for n, store in stores.items():
            e = fake_entry(k % n, "part-x.parquet", "_faiss/part-x.faiss")
            manifests[n].partitions[e.index] = e
            t = time.perf_counter()
            store.commit_landed(manifests[n], [e])
            times[n].append(time.perf_counter() - t)
        k += 1
        if largest.snapshot.checkpoint_seq == largest.snapshot.seq:  # its next checkpoint is written
            break
    for store in stores.values():
        store.log.release()
    return {n: (sum(t) / len(t), Spread(t).median, int(max(100, 0.1 * n))) for n, t in times.items()}


def sparse_store(root: Path, parts: int, part_bytes: int) -> Store:
    """A format-2 store of ``parts`` partitions whose files are sparse (cheap to make at any size)."""
    logged_store(root, 0)
    snap = Snapshot(meta={COMPLETE: True})
    for i in range(parts):
        e = fake_entry(i)
        for rel, size in ((e.parquet, part_bytes * 3 // 4), (e.faiss, part_bytes // 4)):
            with open(root / rel, "wb") as fh:
                fh.truncate(size)
        snap.entries[part_key(i)] = entry_value(e, ((root / e.parquet).stat().st_size,
                                                    (root / e.faiss).stat().st_size))
    CommitLog(root / LOG_DIR).write_checkpoint(snap)
    return Store(root)


def open_new(root: Path) -> int:
    store = Store(root)
    store.require_verified()
    return len(store.manifest().partitions)


def open_old(root: Path) -> int:
    store = Store(root)
    problems = store.verify(deep=False)  # every file hashed: what opening cost before
    assert all("sha256 differs" in p for p in problems), problems[:3]  # sparse files: fake sha256s
    return len(store.manifest().partitions)


def wikipedia_corpus(path: Path, docs: int | None) -> Path:
    with gzip.open(DATA / "wikipedia-vital-en" / "corpus.jsonl.gz", "rt") as src, open(path, "w") as out:
        for i, line in enumerate(src):
            if docs is not None and i >= docs:
                break
            out.write(line)
    return path


def embed_seconds(corpus: Path, out: Path, model: Path, *extra: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run([*EMBEDLAB, "embed", str(corpus), "--out", str(out), "--model", str(model),
                        "--partition-tokens", "1024", "--no-progress", "--json", *extra],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return time.perf_counter() - t0, json.loads(p.stdout)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 entries at most, 20 partitions, "
                    "a quarter of the corpus")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    results = Results("control_plane", args.results, device=None)
    work = Path(tempfile.mkdtemp(prefix="bench-cp-", dir=args.work))
    try:
        rows = []
        man = {n: manifest_commit(work, n) for n in (100, 1_000, 10_000)}
        for n, s in man.items():
            rows.append([f"format 1: rewrite `_manifest.json` ({n:,} partitions)", f"{s.median * 1e3:.2f}",
                         f"{s.median / man[100].median:.2f}", f"{len(s.values)} commits"])
        sizes = (100, 10_000) if args.quick else (100, 10_000, 100_000)
        logs = log_commits(work, sizes)
        for n, (mean, single, interval) in logs.items():
            rows.append([f"format 2: `commit_landed`, one record ({n:,} partitions)", f"{mean * 1e3:.2f}",
                         f"{mean / logs[100][0]:.2f}",
                         f"median record {single * 1e3:.2f} ms; {interval:,} commits per checkpoint"])
        commit_table = markdown_table(["commit of one partition", "ms per commit", "x at 100", "note"], rows)

        parts = 20 if args.quick else 100
        roots = {gb: work / f"open-{gb}" for gb in (1, 10)}
        for gb, root in roots.items():
            sparse_store(root, parts, (gb << 30) // parts)
            open_new(root)  # warm-up
        # the two stores in turn, round by round: drift and other jobs' load fall on both alike
        new_open = in_turn({gb: (lambda r=root: timed(lambda: open_new(r), repeats=1, warmup=0)[0].median)
                            for gb, root in roots.items()}, repeats=31)
        opens = {gb: (Spread(new_open[gb]), timed(lambda: open_old(root), repeats=1 if gb == 10 else 3,
                                                  warmup=0)[0]) for gb, root in roots.items()}
        rows = [[f"{gb} GB, {parts} partitions", f"{new.median * 1e3:.1f}", f"{old.median * 1e3:,.0f}",
                 f"{old.median / new.median:,.0f}x"]
                for gb, (new, old) in opens.items()]
        rows.append(["ratio 10 GB / 1 GB", f"{opens[10][0].median / opens[1][0].median:.2f}",
                     f"{opens[10][1].median / opens[1][1].median:.2f}", ""])
        open_table = markdown_table(["store", "format 2 open ms (log + sizes)",
                                     "format 1 open ms (hash every file)", "old / new"], rows)

        from embedlab.testing import make_tiny_model

        model = make_tiny_model(work / "tiny", hidden=32, layers=1, max_len=256)
        corpus = wikipedia_corpus(work / "wiki.jsonl", 2500 if args.quick else 5000)
        first, summary = embed_seconds(corpus, work / "store", model)
        again, s2 = embed_seconds(corpus, work / "store", model)
        deep, s3 = embed_seconds(corpus, work / "store", model, "--verify-deep")
        assert s2["partitions_skipped"] == s3["partitions_skipped"] == summary["partitions"]
        resume_table = markdown_table(
            ["run", "wall s", "x first run"],
            [[f"first run ({summary['partitions']:,} partitions, {summary['chunks']:,} chunks)", f"{first:.1f}", "1.00"],
             ["re-run of the finished job (trusts sizes)", f"{again:.1f}", f"{again / first:.3f}"],
             ["re-run with --verify-deep (re-hashes, as before)", f"{deep:.1f}", f"{deep / first:.3f}"]])
        intro = ("Issue #20 targets: commit cost per partition at 100,000 <= 1.5x that at 100; open cost "
                 "(beyond the shards) of a 10 GB store <= 1.2x a 1 GB one; re-running a finished job <= 5% "
                 "of its first run. The re-run plans the corpus's splits from file metadata and skips every "
                 "committed one: it reads no corpus text and hashes no file." + (" --quick: small sizes." if args.quick else "")
                 + busy_note(results.load_before))
        results.write_markdown("Control plane: commit, open and resume on the commit log", intro,
                               "\n\n".join([commit_table, open_table, resume_table]),
                               "python benchmarks/bench_control_plane.py" + (" --quick" if args.quick else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
