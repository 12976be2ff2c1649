"""Writers' transactions on a store: recover, stage, commit, compact, and what is live.

An update, a stream batch and a compaction change a store the same way. Their partitions are
written to ``store.staging`` (with a journal, the staging folder's own manifest, so an
interrupted run resumes instead of re-encoding them), then moved into place, then one commit
record names them (:meth:`Store.write_manifest`): that record is the commit. A crash before it leaves the store as it was; files
moved in before a crash are not in the manifest, and :func:`recover`, run by the next writer,
moves them back into staging (or removes them) before it starts. Callers hold
:meth:`Store.claimed` around all of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlab.files import reporting, sha256_file
from embedlab.manifest import Manifest, PartitionEntry, drop_tombstoned
from embedlab.store import Store, StoreError


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
    """Bring a store back to its last commit before a writer starts; return that manifest.

    Partition files an interrupted commit had already moved in are moved back into staging
    (when its journal lists them) or removed, as are stray temporaries and staged files that
    the journal does not list.

    Raises:
        StoreError: not a store, or its last embed did not finish.
    """
    store.meta()
    if not store.has_commits() or not store.manifest().complete:
        raise StoreError(f"the last `embedlab embed` into {store.root} did not finish; "
                         "re-run it before updating the store")
    store.remove_stray_temporaries()
    manifest = store.manifest()
    staging = store.staging
    if staging.root.is_dir():
        journal = staging.manifest()
        committed = manifest.files()
        for k in list(journal.partitions):
            e = journal.partitions[k]
            if k < manifest.next_index:
                del journal.partitions[k]
                continue
            for rel, sha in ((e.parquet, e.parquet_sha256), (e.faiss, e.faiss_sha256)):
                moved, staged = store.root / rel, staging.root / rel
                if (not staged.is_file() and moved.is_file() and rel not in committed
                        and sha256_file(moved) == sha):
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(moved, staged)
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
    """Move the ``staged`` partitions' files into place and write ``manifest``: the commit.

    ``sets`` are values committed in the same record (a stream's feed position). Afterwards,
    files no manifest entry names (superseded generations) and the staging folder are removed.
    """
    shutil.rmtree(store.merged_dir, ignore_errors=True)  # derived from the shards: now stale
    staging = store.staging
    for e in staged:
        for rel in (e.parquet, e.faiss):
            with reporting(store.root / rel, "move a staged partition into place"):
                (store.root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging.root / rel, store.root / rel)
    store.write_manifest(manifest, sets=sets)
    store.remove_uncommitted(manifest)
    shutil.rmtree(staging.root, ignore_errors=True)


def discard_staging(store: Store) -> None:
    """Drop what a writer staged but will not commit (nothing changed)."""
    shutil.rmtree(store.staging.root, ignore_errors=True)


def compact_entries(store: Store, manifest: Manifest, only: Collection[int] | None = None,
                    ) -> list[PartitionEntry]:
    """Rewrite every partition with tombstones (of ``only``, when given), without them, into
    staging as its next generation.

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
        gen = e.generation + 1
        pq_sha, fs_sha = staging.write_partition(k, columns, vectors, generation=gen)
        keep = set(table.column("chunk_id").to_pylist())
        out.append(PartitionEntry(
            index=k, rows=table.num_rows, tokens=int(np.sum(table.column("n_tokens").to_numpy())),
            docs=len(set(table.column("doc_id").to_pylist())),
            digest=hashlib.sha256("\0".join([e.digest, *e.tombstones]).encode()).hexdigest(),
            parquet=store.parquet_path(k, gen).relative_to(store.root).as_posix(),
            faiss=store.faiss_path(k, gen).relative_to(store.root).as_posix(),
            parquet_sha256=pq_sha, faiss_sha256=fs_sha,
            reencoded_fp32=[c for c in e.reencoded_fp32 if c in keep], generation=gen))
    return out
