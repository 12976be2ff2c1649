"""Sorted runs merged in bounded memory, against a brute-force sort; verify's live-twice check."""

from __future__ import annotations

import numpy as np

from embedlab.manifest import Manifest, PartitionEntry
from embedlab.runs import RunFile, RunWriter, merge_sorted, write_run
from embedlab.store import Store

DT = np.dtype([("key", np.uint64), ("sub", np.int64), ("line", np.int64)])


def random_run(rng, n: int) -> np.ndarray:
    run = np.zeros(n, dtype=DT)
    run["key"] = rng.integers(0, 40, size=n).astype(np.uint64)  # long groups of equal keys
    run["sub"] = rng.integers(0, 3, size=n)
    run["line"] = rng.permutation(n)
    return np.sort(run, order=["key", "sub", "line"])


def test_merge_of_files_and_arrays_equals_a_full_sort_and_never_cuts_a_group(tmp_path):
    rng = np.random.default_rng(5)
    arrays = [random_run(rng, int(rng.integers(0, 400))) for _ in range(6)]
    runs = [RunFile(write_run(tmp_path / f"r{k}.npy", DT, len(a), np.array_split(a, 3)))
            if k % 2 else a for k, a in enumerate(arrays)]
    assert [len(r) for r in runs] == [len(a) for a in arrays]
    rounds = list(merge_sorted(runs, ("key", "sub"), ("line",), block=5))
    got = [(int(r["key"]), int(r["sub"]), int(o), int(r["line"])) for rows, owners in rounds
           for r, o in zip(rows, owners)]
    want = sorted((int(r["key"]), int(r["sub"]), k, int(r["line"])) for k, a in enumerate(arrays) for r in a)
    assert got == want and len(rounds) > 5
    firsts = [set(rows["key"].tolist()) for rows, _ in rounds]
    assert all(not (a & b) for i, a in enumerate(firsts) for b in firsts[i + 1:])  # no key in two rounds


def test_run_writer_merges_level_by_level_and_keeps_every_row(tmp_path):
    rng = np.random.default_rng(7)
    rows = np.zeros(5000, dtype=DT)
    rows["key"] = rng.integers(0, 2**63, size=5000, dtype=np.uint64)
    rows["line"] = np.arange(5000)
    writer = RunWriter(tmp_path, DT, ("key",), spill=100, fan_in=4)
    for part in np.array_split(rows, 37):
        writer.add(part)
    runs = writer.runs()
    assert len(runs) <= 3 * len(writer.levels)  # at most fan_in - 1 runs per level
    assert len(list(tmp_path.glob("*.npy"))) == len(runs)  # merged runs are removed
    merged = np.concatenate([r for r, _ in merge_sorted(runs, ("key",))])
    assert np.array_equal(np.sort(merged["line"]), np.arange(5000))
    assert np.all(merged["key"][1:] >= merged["key"][:-1])


def test_verify_names_chunks_live_in_two_partitions(tmp_path):
    store = Store(tmp_path / "s")
    store.init({"model_sha256": "m", "dtype": "fp32", "dim": 4})
    vecs = np.eye(4, dtype=np.float32)[np.arange(6) % 4]
    entries = {}
    for k, ids in enumerate([["a#0", "a#1", "b#0", "c#0", "d#0", "e#0"],
                             ["f#0", "b#0", "g#0", "c#0", "h#0", "i#0"]]):
        pq_sha, fs_sha = store.write_partition(k, {"chunk_id": ids, "doc_id": [c[0] for c in ids]}, vecs)
        entries[k] = PartitionEntry(index=k, rows=6, tokens=6, docs=6, digest=str(k),
                                    parquet=f"part-{k:05d}.parquet", faiss=f"_faiss/part-{k:05d}.faiss",
                                    parquet_sha256=pq_sha, faiss_sha256=fs_sha)
    store.write_manifest(Manifest(partitions=entries, complete=True))
    assert store.verify() == [f"{store.root / 'part-00001.parquet'}: 2 chunk(s) live in two partitions: "
                              "['b#0 (also in partition 0)', 'c#0 (also in partition 0)']"]
    entries[0].tombstones = ["b#0", "c#0"]  # an update replaced them: live once again
    store.write_manifest(Manifest(partitions=entries, complete=True))
    assert store.verify() == []
