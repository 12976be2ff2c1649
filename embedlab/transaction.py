"""Writers' transactions on a store: recover, stage, commit, compact, and what is live.

An update, a stream batch and a compaction change a store the same way. Their new files are
written to ``store.staging`` (new partitions with a journal, the staging folder's own manifest,
so an interrupted run resumes instead of re-encoding them; rewritten partitions as their next
generation), then one commit record names them and the moves that make them live (the
decision point), then the moves are made (:func:`commit`; :mod:`embedlab.rollforward`). A crash
before the record leaves the store as it was; after it, the next opener finishes the moves.
:func:`recover`, run by the next writer, does that and clears what staging holds that no
journal lists. Callers hold :meth:`Store.claimed` around all of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlab.files import reporting
from embedlab.manifest import Manifest, PartitionEntry, drop_tombstoned
from embedlab.rollforward import INTENT, crash_point, fsync_dirs, intent, roll_forward
from embedlab.store import FAISS_DIR, STAGING_DIR, Store, StoreError


@dataclass(frozen=True)
class LiveDoc:
    """What the store holds for one live document."""

    sha256: str  # content_sha256 of the text it embedded
    partition: int  # a document's chunks always sit in one partition
    chunk_ids: tuple[str, ...]


def live_documents(store: Store, manifest: Manifest) -> dict[str, LiveDoc]:
    """Doc id -> hash, partition and chunk ids of every live document of the store.

    Raises:
        StoreError: a partition has no ``doc_sha256`` column (written before the store kept
            document hashes).
    """
    import pyarrow.parquet as pq

    live: dict[str, LiveDoc] = {}
    for k in sorted(manifest.partitions):
        e = manifest.partitions[k]
        path = store.root / e.parquet
        if "doc_sha256" not in pq.read_schema(path).names:
            raise StoreError(f"{path} has no doc_sha256 column: the store predates document hashes. "
                             "Re-run the `embedlab embed` that made it once to record them.")
        table = drop_tombstoned(pq.read_table(path, columns=["chunk_id", "doc_id", "doc_sha256"]),
                                e.tombstones)
        live.update(index_rows(k, table.column("doc_id").to_pylist(),
                               table.column("chunk_id").to_pylist(),
                               table.column("doc_sha256").to_pylist()))
    return live


def index_rows(partition: int, doc_ids: list[str], chunk_ids: list[str], hashes: list[str],
               ) -> dict[str, LiveDoc]:
    """Group one partition's rows by document."""
    chunks: dict[str, list[str]] = {}
    sha: dict[str, str] = {}
    for d, c, h in zip(doc_ids, chunk_ids, hashes):
        chunks.setdefault(d, []).append(c)
        sha[d] = h
    return {d: LiveDoc(sha[d], partition, tuple(cs)) for d, cs in chunks.items()}


def recover(store: Store) -> Manifest:
    """Bring a store to its last commit before a writer starts; return that manifest.

    A commit whose moves a crash interrupted is finished (by :meth:`Store.manifest`); stray
    temporaries, staged files the journal does not list and partition files no commit names
    (left by a crashed embed, or by a format-2 writer) are removed.

    Raises:
        StoreError: not a store, or its last embed did not finish.
    """
    store.meta()
    if not store.has_commits() or not store.manifest().complete:
        raise StoreError(f"the last `embedlab embed` into {store.root} did not finish; "
                         "re-run it before updating the store")
    manifest = store.manifest()
    store.remove_stray_temporaries()
    staging = store.staging
    if staging.root.is_dir():
        journal = staging.manifest()
        for k in [k for k in journal.partitions if k < manifest.next_index]:
            del journal.partitions[k]  # committed, or superseded
        staging.remove_uncommitted(journal)
        staging.write_manifest(journal)
    store.remove_uncommitted(manifest)
    return manifest


def next_manifest(manifest: Manifest, added: Iterable[PartitionEntry],
                  dead: dict[int, set[str]]) -> Manifest:
    """A copy of ``manifest`` with ``added`` partitions and ``dead`` chunk ids tombstoned."""
    new = Manifest.from_json(manifest.to_json())
    for index, ids in dead.items():
        e = new.partitions[index]
        e.tombstones = sorted(set(e.tombstones) | ids)
    for e in added:
        new.partitions[e.index] = dataclasses.replace(e)
    new.complete = True
    return new


def commit(store: Store, manifest: Manifest, staged: Iterable[PartitionEntry],
           sets: dict[str, Any] | None = None) -> None:
    """Commit ``manifest``, whose ``staged`` entries name files in ``store.staging``, then roll
    forward: one record, then one rename per file (:mod:`embedlab.rollforward`).

    A staged entry of a partition the store holds takes over that partition's live file names
    (so its old generation is replaced in one rename, never listed beside it); a new partition
    gets ``part-NNNNN.parquet``. ``manifest``'s entries are set to the live names. ``sets`` are
    values committed in the same record (a stream's feed position).
    """
    shutil.rmtree(store.merged_dir, ignore_errors=True)  # derived from the shards: now stale
    old = store.manifest()
    staged = sorted(staged, key=lambda e: (e.index not in old.partitions, e.index))  # rewrites first
    moves: list[tuple[str, str]] = []
    sizes: dict[int, tuple[int, int]] = {}
    for e in staged:
        prev = old.partitions.get(e.index)
        live = ((prev.parquet, prev.faiss) if prev else
                tuple(p.relative_to(store.root).as_posix() for p in (store.parquet_path(e.index),
                                                                      store.faiss_path(e.index))))
        src = (f"{STAGING_DIR}/{e.parquet}", f"{STAGING_DIR}/{e.faiss}")
        with reporting(store.root / src[0], "read a staged partition's size"):
            sizes[e.index] = ((store.root / src[0]).stat().st_size, (store.root / src[1]).stat().st_size)
        moves += zip(src, live)
        manifest.partitions[e.index] = dataclasses.replace(e, parquet=live[0], faiss=live[1])
    with reporting(store.staging.root, "make the staged files durable"):
        fsync_dirs(store.staging.root, store.staging.root / FAISS_DIR)
    crash_point("staged")
    todo = intent(moves)
    store.write_manifest(manifest, sets={**(sets or {}), INTENT: todo}, sizes=sizes)
    crash_point("committed")
    roll_forward(store.root, todo)
    with reporting(store.root, "make the moved files durable"):
        fsync_dirs(store.root, store.root / FAISS_DIR)
    crash_point("moved")
    shutil.rmtree(store.staging.root, ignore_errors=True)


def discard_staging(store: Store) -> None:
    """Drop what a writer staged but will not commit (nothing changed)."""
    shutil.rmtree(store.staging.root, ignore_errors=True)


def compact_entries(store: Store, manifest: Manifest, only: Collection[int] | None = None,
                    ) -> list[PartitionEntry]:
    """Rewrite every partition with tombstones (of ``only``, when given), without them, into
    staging as its next generation (:func:`commit` moves it over the live files).

    Returns:
        The new entries (files in ``store.staging``), to pass to :func:`commit`.
    """
    import pyarrow.parquet as pq

    out = []
    staging = store.staging
    for k in sorted(manifest.partitions):
        e = manifest.partitions[k]
        if not e.tombstones or only is not None and k not in only:
            continue
        table = drop_tombstoned(pq.read_table(store.root / e.parquet), e.tombstones)
        dim = table.schema.field("vector").type.list_size
        vectors = table.column("vector").combine_chunks().values.to_numpy().reshape(-1, dim)
        columns = {c: table.column(c) for c in table.column_names if c != "vector"}
        gen = e.generation + 1  # its staged names are unique to this transaction
        pq_sha, fs_sha = staging.write_partition(k, columns, vectors, generation=gen)
        keep = set(table.column("chunk_id").to_pylist())
        out.append(PartitionEntry(
            index=k, rows=table.num_rows, tokens=int(np.sum(table.column("n_tokens").to_numpy())),
            docs=len(set(table.column("doc_id").to_pylist())),
            digest=hashlib.sha256("\0".join([e.digest, *e.tombstones]).encode()).hexdigest(),
            parquet=staging.parquet_path(k, gen).relative_to(staging.root).as_posix(),
            faiss=staging.faiss_path(k, gen).relative_to(staging.root).as_posix(),
            parquet_sha256=pq_sha, faiss_sha256=fs_sha,
            reencoded_fp32=[c for c in e.reencoded_fp32 if c in keep], generation=gen))
    return out
