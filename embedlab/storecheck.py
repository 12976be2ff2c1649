"""Checking a store against what it committed: cheaply on open, in full for ``embedlab verify``.

Two levels:

* :func:`listed_problems` with ``hashes=False`` is what opening a store costs: each listed file
  exists and has the size its commit recorded (a ``stat`` per file, no reading). A FAISS shard's
  sha256 is then checked where it is read anyway (:func:`read_checked_shard`).
* with ``hashes=True`` (and :func:`partition_problems`), every file's sha256, that each Parquet
  file and FAISS shard opens, that their row counts agree, that the shard's ids are those of the
  chunk ids, and that no chunk is live in two partitions.

The functions take the store's root and manifest, not a store, so the store can call them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.files import reporting, sha256_file
from embedlab.index import faiss_ids, read_shard, shard_ids
from embedlab.manifest import Manifest, PartitionEntry
from embedlab.runs import RunWriter, merge_sorted

LIVE_DTYPE = np.dtype([("fid", np.int64), ("part", np.int64)])  # a live chunk's FAISS id, partition


class StoreError(RuntimeError):
    pass


class StoreMismatchError(StoreError):
    pass


class ShardChecksumError(StoreError):
    """A FAISS shard whose bytes do not hash to what its commit recorded."""


def listed_problems(root: Path, manifest: Manifest, sizes: Mapping[int, tuple[int, int]],
                    *, hashes: bool, contiguous: bool = True) -> list[str]:
    """Each listed file's problems: missing, another size than committed, (``hashes``) sha256.

    With ``contiguous``, also a partition the numbering says should be there (:func:`missing_partitions`).
    """
    problems: list[str] = []
    for k in sorted(manifest.partitions):
        e = manifest.partitions[k]
        want_sizes = sizes.get(k, (None, None))
        for rel, sha, size in ((e.parquet, e.parquet_sha256, want_sizes[0]),
                               (e.faiss, e.faiss_sha256, want_sizes[1])):
            path = root / rel
            try:
                got = path.stat().st_size
            except FileNotFoundError:
                problems.append(f"{path}: missing")
                continue
            if size is not None and got != size:
                problems.append(f"{path}: {got} bytes, its commit recorded {size} (damaged or replaced)")
            elif hashes and sha256_file(path) != sha:
                problems.append(f"{path}: sha256 differs from the manifest (damaged or replaced)")
    missing = missing_partitions(manifest) if contiguous else []
    if missing:
        problems.append(f"{root}: no entry for partition(s) {missing[:20]}")
    return problems


def partition_problems(root: Path, e: PartitionEntry, live: LiveIds) -> list[str]:
    """Deep checks of one partition whose files hash right; its live FAISS ids go to ``live``."""
    import pyarrow.parquet as pq

    pq_path, fs_path = root / e.parquet, root / e.faiss
    try:
        table = pq.read_table(pq_path, columns=["chunk_id"])
    except Exception as exc:
        return [f"{pq_path}: unreadable Parquet ({exc})"]
    if table.num_rows != e.rows:
        return [f"{pq_path}: {table.num_rows} rows, manifest says {e.rows}"]
    try:
        index = read_shard(fs_path)
    except Exception as exc:
        return [f"{fs_path}: unreadable FAISS index ({exc})"]
    if index.ntotal != e.rows:
        return [f"{fs_path}: ntotal {index.ntotal}, manifest says {e.rows} rows"]
    ids = shard_ids(index)
    chunk_ids = table.column("chunk_id").to_pylist()
    if not np.array_equal(ids, faiss_ids(chunk_ids)):
        return [f"{fs_path}: FAISS ids do not match the chunk ids of {pq_path.name}"]
    dead = set(e.tombstones)
    if not dead <= set(chunk_ids):
        return [f"{root}: partition {e.index} tombstones chunk(s) it does not hold: "
                f"{sorted(dead - set(chunk_ids))[:5]}"]
    live.add(e.index, ids if not dead else ids[[c not in dead for c in chunk_ids]])
    return []


class LiveIds:
    """Every live chunk's FAISS id and partition, as sorted runs in a scratch folder (``$TMPDIR``,
    16 bytes a chunk), so the check that no chunk is live twice holds memory flat at any size."""

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="embedlab-verify-")
        self.writer = RunWriter(self._scratch.name, LIVE_DTYPE, ("fid",))

    def add(self, partition: int, fids: np.ndarray) -> None:
        rows = np.empty(len(fids), dtype=LIVE_DTYPE)
        rows["fid"], rows["part"] = fids, partition
        self.writer.add(rows)

    def problems(self, root: Path, manifest: Manifest, shown: int = 5) -> list[str]:
        """Per partition, the chunks live again in it (each with the partition it is live in first)."""
        twice: dict[int, list[tuple[int, int]]] = {}  # partition -> (fid, first partition), a few
        count: dict[int, int] = {}
        try:
            for rows, _ in merge_sorted(self.writer.runs(), ("fid",), ("part",)):
                fid, part = rows["fid"], rows["part"]
                for i in np.flatnonzero(fid[1:] == fid[:-1]) + 1:
                    first = i - 1
                    while first and fid[first - 1] == fid[i]:
                        first -= 1
                    k = int(part[i])
                    count[k] = count.get(k, 0) + 1
                    if len(twice.setdefault(k, [])) < shown:
                        twice[k].append((int(fid[i]), int(part[first])))
        finally:
            self._scratch.cleanup()
        return [f"{root / manifest.partitions[k].parquet}: {count[k]} chunk(s) live in two partitions: "
                f"{_named(root, manifest.partitions[k], twice[k])}" for k in sorted(twice)]


def _named(root: Path, e: PartitionEntry, found: list[tuple[int, int]]) -> list[str]:
    import pyarrow.parquet as pq

    chunk_ids = pq.read_table(root / e.parquet, columns=["chunk_id"]).column("chunk_id").to_pylist()
    names = dict(zip(faiss_ids(chunk_ids).tolist(), chunk_ids))
    return sorted(f"{names.get(f, f)} (also in partition {p})" for f, p in found)


def read_checked_shard(path: Path, sha256: str, tombstones: Sequence[str] = ()) -> Any:
    """The FAISS shard at ``path``, after checking its bytes hash to ``sha256`` (read once).

    Raises:
        ShardChecksumError: the bytes differ from what was committed.
    """
    import faiss

    with reporting(path, "read a FAISS shard"):
        data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ShardChecksumError(f"{path}: sha256 {got[:12]}... differs from the committed {sha256[:12]}... "
                                 "(damaged or replaced); run `embedlab verify` on the store")
    shard = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    if tombstones:
        shard.remove_ids(faiss_ids(tombstones))
    return shard


def missing_partitions(manifest: Manifest) -> list[int]:
    """Indices a manifest should list and does not: gaps among the partitions cut by the driver
    (numbered from 0, or appended by an update after a split's), and among each corpus split's
    (its ordinals 0 to ``split_parts - 1``)."""
    plain = [k for k, e in manifest.partitions.items() if not e.split]
    has_splits = len(plain) < len(manifest.partitions)  # an update appends after a split's partitions
    lo = min(plain, default=0) if has_splits else 0
    missing = sorted(set(range(lo, max(plain) + 1)) - set(manifest.partitions)) if plain else []
    by_split: dict[str, list[PartitionEntry]] = {}
    for e in manifest.partitions.values():
        if e.split:
            by_split.setdefault(e.split, []).append(e)
    for entries in by_split.values():
        base = entries[0].index - entries[0].ordinal
        parts = max([e.split_parts for e in entries] + [e.ordinal + 1 for e in entries])
        missing += sorted(set(range(base, base + parts)) - set(manifest.partitions))  # compaction
        # may have rewritten some of them as plain entries under the same index
    return sorted(missing)


def stray_files(root: Path, listed: Collection[str], faiss_dir: str, skipped: Sequence[str]) -> list[str]:
    """Temporaries and partition files no commit names, in ``root`` outside the ``skipped`` folders.

    ``os.walk``, unlike ``rglob``, passes over a folder that vanishes while it looks: a concurrent
    writer removes its staging folder right after its commit.
    """
    problems = []
    for d, _, files in os.walk(root):
        rel_dir = Path(d).relative_to(root).as_posix()
        if rel_dir in skipped or rel_dir.startswith(tuple(f"{s}/" for s in skipped)):
            continue  # not committed, not read; the log's own temporaries are its business
        for f in sorted(files):
            path = Path(d) / f
            rel = path.relative_to(root).as_posix()
            if f.endswith(".tmp"):
                problems.append(f"{path}: stray temporary file from an interrupted write")
            elif (rel.endswith(".parquet") and "/" not in rel
                  or rel.startswith(f"{faiss_dir}/") and rel.endswith(".faiss")) and rel not in listed:
                problems.append(f"{path}: not in the manifest")
    return problems
