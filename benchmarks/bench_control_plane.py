"""The control plane's costs today (manifest rewrite per commit, re-hash on open) against the commit log.

Baseline for issue #20, measured in one run on the same disk:

1. **Commit cost per partition.** Today each landed partition rewrites the whole
   ``_manifest.json`` (``Store.write_manifest``, fsync'd): timed with 100, 1,000 and 10,000
   synthetic entries. The commit log (``embedlab/commitlog.py``, durable: fsync'd record and
   folder) appends one record: timed with 100, 10,000 and 100,000 entries, the logs taking
   turns commit by commit, until the largest has written its next checkpoint (so the amortized
   checkpoints are included).
2. **Open cost for search.** Today readers call ``Store.require_verified()``, which hashes
   every file; timed on synthetic stores of ~100 MB and ~1 GB (real Parquet + FAISS files from
   ``Store.write_partition``), with the files in the page cache (just written) and evicted from it
   (``posix_fadvise(DONTNEED)``). The commit-log open reads the last checkpoint plus the tail and
   checks each listed file's size.

    .venv/bin/python benchmarks/bench_control_plane.py [--quick] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Results, busy_note, markdown_table  # noqa: E402
from embedlab.commitlog import CommitLog  # noqa: E402
from embedlab.store import Manifest, PartitionEntry, Store  # noqa: E402


def fake_entry(i: int) -> PartitionEntry:
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return PartitionEntry(index=i, rows=512, tokens=65_536, docs=120, digest=h,
                          parquet=f"part-{i:05d}.parquet", faiss=f"_faiss/part-{i:05d}.faiss",
                          parquet_sha256=h, faiss_sha256=h[::-1])


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def manifest_commit(work: Path, n: int) -> float:
    """Seconds for one manifest write holding ``n`` entries (what one commit costs today)."""
    store = Store(work / f"manifest-{n}")
    store.root.mkdir(parents=True)
    manifest = Manifest(partitions={i: fake_entry(i) for i in range(n)})
    repeats = 9 if n <= 1000 else 3
    return median_time(lambda: store.write_manifest(manifest), repeats)


def log_commits(work: Path, sizes: tuple[int, ...]) -> dict[int, tuple[float, float, int]]:
    """Per log size: (seconds per commit amortized, median seconds of one record, commits per checkpoint).

    Each log first gets ``n`` commits without fsync (set-up only). The timed commits are durable
    and go to the logs in turn, one each, so every size sees the same disk at the same moments;
    each re-lands an existing partition (same record size, the entry count stays ``n``). They run
    until the largest log has gone from one checkpoint to the next, so every log's checkpoints
    are included in its average.
    """
    writers = {}
    for n in sizes:
        log = CommitLog(work / f"log-{n}", durable=False)
        w = log.acquire("bench set-up")
        for i in range(n):
            w.commit([{"op": "add", "key": str(i), "entry": fake_entry(i).to_json()}])
        log.durable = True
        log.write_checkpoint(w.snapshot)  # every log starts at a checkpoint
        writers[n] = w
    times: dict[int, list[float]] = {n: [] for n in sizes}
    largest = writers[max(sizes)]
    k = 0
    while True:
        for n, w in writers.items():
            t = time.perf_counter()
            w.commit([{"op": "add", "key": str(k % n), "entry": fake_entry(k).to_json()}])
            times[n].append(time.perf_counter() - t)
        k += 1
        if largest.snapshot.checkpoint_seq == largest.snapshot.seq:  # its next checkpoint is written
            break
    return {n: (sum(t) / len(t), statistics.median(t),
                int(max(w.log.checkpoint_every, w.log.checkpoint_fraction * n)))
            for (n, w), t in zip(writers.items(), times.values())}


def synthetic_store(root: Path, target_bytes: int, rows: int = 512, dim: int = 384) -> CommitLog:
    """A store of real partition files (today's manifest) and the same partitions in a commit log."""
    store = Store(root)
    store.init({"format_version": 1, "dim": dim})
    rng = np.random.default_rng(0)
    manifest = Manifest(complete=True)
    log = CommitLog(root / "_log", durable=False)
    w = log.acquire("bench set-up")
    written, k = 0, 0
    while written < target_bytes:
        vectors = rng.standard_normal((rows, dim)).astype(np.float32)
        ids = [f"d{k}-{j}#0" for j in range(rows)]
        cols = {"chunk_id": ids, "doc_id": [c.split("#")[0] for c in ids], "text": ["x" * 200] * rows}
        pq_sha, fs_sha = store.write_partition(k, cols, vectors)
        e = PartitionEntry(index=k, rows=rows, tokens=rows * 128, docs=rows, digest=pq_sha,
                           parquet=f"part-{k:05d}.parquet", faiss=f"_faiss/part-{k:05d}.faiss",
                           parquet_sha256=pq_sha, faiss_sha256=fs_sha)
        manifest.partitions[k] = e
        sizes = {rel: (root / rel).stat().st_size for rel in (e.parquet, e.faiss)}
        w.commit([{"op": "add", "key": str(k), "entry": {**e.to_json(), "sizes": sizes}}])
        written += sum(sizes.values())
        k += 1
    store.write_manifest(manifest)
    w.release()
    return log


def evict(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def log_open(root: Path) -> int:
    """Open for search with the commit log: the snapshot, then each file's size."""
    snap = CommitLog(root / "_log").open()
    bad = 0
    for e in snap.entries.values():
        for rel, size in e["sizes"].items():
            try:
                bad += os.stat(root / rel).st_size != size
            except FileNotFoundError:
                bad += 1
    if bad:
        raise RuntimeError(f"{bad} files differ")
    return len(snap.entries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a busy machine): 10,000 log "
                    "entries instead of 100,000 and stores of 20 MB / 200 MB")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    results = Results("control_plane_baseline", device=None)  # named by machine and date
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-cp-", dir=args.work))
    try:
        rows = []
        man = {n: manifest_commit(work, n) for n in (100, 1_000, 10_000)}
        for n, s in man.items():
            rows.append([f"today: rewrite `_manifest.json` ({n:,} partitions)", f"{s * 1e3:.2f}",
                         f"{s / man[100]:.2f}", ""])
        sizes = (100, 10_000) if args.quick else (100, 10_000, 100_000)
        logs = log_commits(work, sizes)
        for n, (amortized, single, interval) in logs.items():
            rows.append([f"commit log: append one record ({n:,} partitions)", f"{amortized * 1e3:.2f}",
                         f"{amortized / logs[100][0]:.2f}",
                         f"median record {single * 1e3:.2f} ms; {interval:,} commits per checkpoint"])
        commit_table = markdown_table(["commit of one partition", "ms per commit", "x at 100", "note"], rows)

        small, large = ((20, 200) if args.quick else (100, 1000))
        opens = []
        for mb in (small, large):
            root = work / f"store-{mb}"
            log = synthetic_store(root, mb << 20)
            total = sum(p.stat().st_size for p in root.rglob("*.parquet")) + sum(
                p.stat().st_size for p in root.rglob("*.faiss"))
            n_parts = len(Store(root).manifest().partitions)
            warm = median_time(lambda: Store(root).require_verified(), 3)
            cold = []
            for _ in range(3):
                evict(root)
                cold.append(median_time(lambda: Store(root).require_verified(), 1))
            log.write_checkpoint(log.open())
            new_warm = median_time(lambda: log_open(root), 21)
            new_cold = []
            for _ in range(3):
                evict(root)
                new_cold.append(median_time(lambda: log_open(root), 1))
            new_cold = statistics.median(new_cold)
            opens.append((mb, total, n_parts, warm, statistics.median(cold), new_warm, new_cold))
            shutil.rmtree(root)
        rows = []
        base = opens[0]
        for mb, total, n_parts, warm, cold, new_warm, new_cold in opens:
            rows.append([f"{total / 2**20:,.0f} MB, {n_parts:,} partitions",
                         f"{warm * 1e3:,.0f}", f"{cold * 1e3:,.0f}", f"{new_warm * 1e3:,.1f}",
                         f"{new_cold * 1e3:,.1f}", f"{cold / new_cold:,.0f}x"])
        rows.append([f"ratio {opens[1][1] / base[1]:.0f}x the data", f"{opens[1][3] / base[3]:.2f}",
                     f"{opens[1][4] / base[4]:.2f}", f"{opens[1][5] / base[5]:.2f}",
                     f"{opens[1][6] / base[6]:.2f}", ""])
        open_table = markdown_table(
            ["store", "today `require_verified` ms (cached)", "today ms (evicted)",
             "commit log + sizes ms (cached)", "commit log ms (evicted)", "today / log (evicted)"], rows)
        intro = ("Baseline for issue #20 (today's control plane) and the new `embedlab/commitlog.py`, same "
                 "run, same disk. Today's manifest write is `Store.write_manifest` (fsync'd, whole file); "
                 "the log's commit is one fsync'd record plus its folder's fsync; the logs take turns commit by "
                 "commit (same disk, same moments) until the largest has written its next checkpoint, so "
                 "checkpoints are included in every average. Open: today's readers hash every file "
                 "(`require_verified`); the log opens its last checkpoint plus the tail and stats each "
                 "file's size. 'Evicted': files dropped from the page cache with "
                 "posix_fadvise(DONTNEED) first." + (" --quick: small sizes." if args.quick else "")
                 + f" Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on "
                 f"{os.cpu_count()} cores (other jobs share them)." + busy_note(load_before))
        results.write_markdown("Control plane: commit and open costs (baseline)",
                      intro, commit_table + "\n\n" + open_table,
                      "python benchmarks/bench_control_plane.py" + (" --quick" if args.quick else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
