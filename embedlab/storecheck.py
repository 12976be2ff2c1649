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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.files import reporting, sha256_file
from embedlab.index import faiss_ids, read_shard, shard_ids
from embedlab.manifest import Manifest, PartitionEntry


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


def partition_problems(root: Path, e: PartitionEntry, live: dict[int, int]) -> list[str]:
    """Deep checks of one partition whose files hash right; ``live`` maps live FAISS ids to partitions."""
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
    twice = []
    for cid, fid in zip(chunk_ids, ids.tolist()):
        if cid not in dead:
            if fid in live:
                twice.append(f"{cid} (also in partition {live[fid]})")
            live[fid] = e.index
    if twice:
        return [f"{pq_path}: chunk(s) live in two partitions: {twice[:5]}"]
    return []


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
