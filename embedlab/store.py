"""The on-disk store: Parquet vectors, FAISS shards, a manifest, and their verification.

Layout of a store folder ``OUT``::

    OUT/part-00000.parquet        chunk_id, doc_id, chunk_index, char_start, char_end,
                                  n_tokens, text, vector (fixed-size list of float32)
    OUT/_faiss/part-00000.faiss   IndexIDMap2(IndexFlatIP) with ids = index.faiss_ids(chunk_id)
    OUT/_embedlab.json            what made the store: model, checksum, dtype, chunking
    OUT/_manifest.json            per partition: rows, tokens, content digest, file sha256s
    OUT/_splits/KEY.json          per corpus split: partitions, documents, lines, rejects; and
    OUT/_splits/KEY.ids.npy       its documents' id hashes, sorted (the duplicate-id pass)
    OUT/_rejects.jsonl            every bad input record, with file, line and reason
    OUT/_summary.json             counts and timings of the last embed (_update_summary.json,
                                  _stream_summary.json: of the last update and stream)
    OUT/_merged/index.faiss       every shard joined into one index (derived; an update drops it)
    OUT/_staging/                 partitions of an update or stream batch not yet committed
    OUT/_writer.lock              held by the one update, compact or stream writing the store

Every name that is not a partition starts with ``_`` or ``.``, which pyarrow, pandas and
DuckDB skip, so ``OUT`` opens as one Parquet dataset. Files are written under a hidden
temporary name and renamed into place, so no reader ever sees half a file.

The manifest (its records are in :mod:`embedlab.manifest`) is the commit point: a partition
belongs to the store once the manifest names it. An update (:mod:`embedlab.transaction` holds the
writers' recover / commit / compact steps) appends partitions and marks the rows it replaces or
deletes as *tombstones* in the manifest entry of the partition holding them; readers
(:meth:`Store.iter_tables`, :class:`embedlab.search.Searcher`) skip them, and compaction rewrites
such a partition under its next *generation* name (``part-00003.g1.parquet``) without them.
Until then the raw Parquet dataset still holds the tombstoned rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.index import faiss_ids, read_shard, shard_bytes, shard_ids
from embedlab.files import atomic_write_bytes, atomic_write_json, reporting, sha256_file
from embedlab.manifest import Manifest, PartitionEntry, drop_tombstoned, part_name

STORE_FILE = "_embedlab.json"
MANIFEST_FILE = "_manifest.json"
REJECTS_FILE = "_rejects.jsonl"
SUMMARY_FILE = "_summary.json"
SUMMARY_FILES = {"embed": SUMMARY_FILE, "update": "_update_summary.json", "stream": "_stream_summary.json"}
MERGED_DIR = "_merged"
FAISS_DIR = "_faiss"
STAGING_DIR = "_staging"
SPLITS_DIR = "_splits"  # per corpus split: its counts and rejects, and its document-id hashes
LOCK_FILE = "_writer.lock"
FORMAT_VERSION = 1
# Fields of the store identity that every partition must share; a run that differs is refused.
IDENTITY_FIELDS = ("model_sha256", "dtype", "chunk_tokens", "overlap", "truncate", "pooling",
                   "normalize", "dim", "vector_dtype", "metric", "format_version")


class StoreError(RuntimeError):
    pass


class StoreMismatchError(StoreError):
    pass




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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e}); the store is damaged") from e


class Store:
    """A store folder: its identity, manifest and partition files."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # -- identity -----------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / STORE_FILE

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def meta(self) -> dict[str, Any]:
        if not self.exists():
            raise StoreError(f"no store at {self.root}: it is not an embedlab store ("
                             f"{'no ' + STORE_FILE if self.root.is_dir() else 'no such folder'}); "
                             f"make one with `embedlab embed CORPUS --out {self.root}`")
        return read_json(self.meta_path)

    def init(self, meta: dict[str, Any]) -> None:
        """Create the store, or check that an existing one was made the same way."""
        if self.exists():
            old = self.meta()
            diffs = [f"{k}: store has {old.get(k)!r}, this run has {meta.get(k)!r}"
                     for k in IDENTITY_FIELDS if old.get(k) != meta.get(k)]
            if diffs:
                raise StoreMismatchError(
                    f"{self.root} holds a store made with different settings; refusing to mix "
                    f"them ({'; '.join(diffs)}). Use another --out folder or delete this one.")
            return
        if self.root.exists() and any(p for p in self.root.iterdir()):
            raise StoreMismatchError(
                f"{self.root} is not empty and is not an embedlab store; refusing to write into it")
        with reporting(self.root, "create the store folder", resumable=False):
            (self.root / FAISS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, meta, resumable=False)

    # -- job records --------------------------------------------------------------------------
    @property
    def rejects_path(self) -> Path:
        """Every input record the last job rejected, one JSON object per line."""
        return self.root / REJECTS_FILE

    def summary_path(self, job: str = "embed") -> Path:
        """Counts and timings of the last ``job`` ("embed", "update" or "stream")."""
        return self.root / SUMMARY_FILES[job]

    def split_record_path(self, key: str) -> Path:
        """What a corpus split gave (partitions, documents, lines, rejects); written when it lands."""
        return self.root / SPLITS_DIR / f"{key}.json"

    def split_ids_path(self, key: str) -> Path:
        """A split's documents as a sorted run of id hashes, for the duplicate-id pass."""
        return self.root / SPLITS_DIR / f"{key}.ids.npy"

    @property
    def merged_dir(self) -> Path:
        """Indexes derived from the shards (the merged index); a commit makes them stale."""
        return self.root / MERGED_DIR

    @property
    def merged_index_path(self) -> Path:
        return self.merged_dir / "index.faiss"

    # -- manifest -----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def manifest(self) -> Manifest:
        if not self.manifest_path.is_file():
            return Manifest()
        return Manifest.from_json(read_json(self.manifest_path))

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.manifest_path, manifest.to_json())

    def parquet_path(self, index: int, generation: int = 0) -> Path:
        return self.root / f"{part_name(index, generation)}.parquet"

    def faiss_path(self, index: int, generation: int = 0) -> Path:
        return self.root / FAISS_DIR / f"{part_name(index, generation)}.faiss"

    @property
    def staging(self) -> Store:
        """``OUT/_staging``: where partitions wait until a manifest commit names them."""
        return Store(self.root / STAGING_DIR)

    def entry_is_current(self, entry: PartitionEntry | None, digest: str) -> bool:
        """True when ``entry`` encodes ``digest`` and both its files hash to what it records."""
        if entry is None or entry.digest != digest:
            return False
        pq_path, fs_path = self.root / entry.parquet, self.root / entry.faiss
        return (pq_path.is_file() and fs_path.is_file()
                and sha256_file(pq_path) == entry.parquet_sha256
                and sha256_file(fs_path) == entry.faiss_sha256)

    def remove_partition(self, index: int) -> None:
        for p in (self.parquet_path(index), self.faiss_path(index)):
            with reporting(p, "remove"):
                p.unlink(missing_ok=True)

    def partition_files(self) -> list[str]:
        """Every partition file in the folder (relative paths), named by the manifest or not."""
        found = [p.name for p in self.root.glob("*.parquet")]
        found += [f"{FAISS_DIR}/{p.name}" for p in (self.root / FAISS_DIR).glob("*.faiss")]
        return sorted(found)

    def remove_uncommitted(self, manifest: Manifest) -> list[str]:
        """Delete partition files that ``manifest`` does not name (left by a crashed writer)."""
        listed = manifest.files()
        stray = [rel for rel in self.partition_files() if rel not in listed]
        for rel in stray:
            with reporting(self.root / rel, "remove an uncommitted file"):
                (self.root / rel).unlink(missing_ok=True)
        return stray

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's writer lock (``OUT/_writer.lock``, an advisory ``flock``).

        Update, compact and stream take it, so two of them never interleave their commits.

        Raises:
            StoreError: another process holds it.
        """
        import fcntl

        with reporting(self.root / LOCK_FILE, "take the writer lock"):
            fh = open(self.root / LOCK_FILE, "a+")
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise StoreError(f"{self.root} is being written by another process ({holder}); "
                                 "try again when it has finished") from None
            with reporting(self.root / LOCK_FILE, "write the writer lock"):
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()}\n")
                fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def remove_stray_temporaries(self) -> list[Path]:
        stray = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for p in stray:
            with reporting(p, "remove a stray temporary file"):
                p.unlink(missing_ok=True)
        return stray

    # -- partitions ---------------------------------------------------------------------------
    def write_partition(self, index: int, columns: dict[str, Any], vectors: np.ndarray,
                        generation: int = 0) -> tuple[str, str]:
        """Write one partition's Parquet file and FAISS shard atomically; return their sha256s."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        table = pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=max(1, min(n, 8192)))
        parquet_bytes = sink.getvalue().to_pybytes()

        faiss_bytes = shard_bytes(vectors, faiss_ids(table.column("chunk_id").to_pylist()))

        atomic_write_bytes(self.parquet_path(index, generation), parquet_bytes)
        atomic_write_bytes(self.faiss_path(index, generation), faiss_bytes)
        return hashlib.sha256(parquet_bytes).hexdigest(), hashlib.sha256(faiss_bytes).hexdigest()

    def parquet_files(self) -> list[Path]:
        m = self.manifest()
        return [self.root / m.partitions[k].parquet for k in sorted(m.partitions)]

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[Any]:
        """Each partition's live rows as a ``pyarrow.Table`` (tombstoned rows left out)."""
        import pyarrow.parquet as pq

        m = self.manifest()
        want = list(columns) if columns else None
        for k in sorted(m.partitions):
            e = m.partitions[k]
            read = want if not e.tombstones or want is None or "chunk_id" in want else [*want, "chunk_id"]
            table = drop_tombstoned(pq.read_table(self.root / e.parquet, columns=read), e.tombstones)
            yield table.select(want) if want is not None and read != want else table

    # -- verification -------------------------------------------------------------------------
    def verify(self, deep: bool = True) -> list[str]:
        """Every problem with the store as ``"file: reason"``; empty when it is whole.

        Checks the manifest against the folder (missing, extra and temporary files), each
        file's sha256, and with ``deep`` also that each Parquet file and FAISS shard opens,
        that their row counts agree, and that the shard's ids are those of the chunk ids.
        """
        problems: list[str] = []
        if not self.exists():
            return [f"{self.meta_path}: missing; not an embedlab store"]
        if not self.manifest_path.is_file():
            return [f"{self.manifest_path}: missing; the run never finished a partition"]
        try:
            manifest = self.manifest()
        except (StoreError, TypeError, KeyError) as e:
            return [f"{self.manifest_path}: unreadable ({e})"]
        if not manifest.complete:
            problems.append(f"{self.manifest_path}: run did not finish (manifest not complete)")
        listed = set()
        live: dict[str, int] = {}  # live chunk id -> partition, to catch one chunk live twice
        for k in sorted(manifest.partitions):
            e = manifest.partitions[k]
            listed.update({e.parquet, e.faiss})
            found = []
            for rel, want in ((e.parquet, e.parquet_sha256), (e.faiss, e.faiss_sha256)):
                path = self.root / rel
                if not path.is_file():
                    found.append(f"{path}: missing")
                elif sha256_file(path) != want:
                    found.append(f"{path}: sha256 differs from the manifest (damaged or replaced)")
            if deep and not found:
                found = self._check_partition(e, live)
            problems.extend(found)
        missing = missing_partitions(manifest)
        if missing:
            problems.append(f"{self.manifest_path}: no entry for partition(s) {missing}")
        # os.walk, unlike rglob, skips a folder that vanishes while it looks: a concurrent writer
        # removes its staging folder right after its commit.
        for path in sorted(Path(d) / f for d, _, files in os.walk(self.root) for f in files):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file() or rel.startswith(f"{STAGING_DIR}/"):  # not committed, not read
                continue
            if path.name.endswith(".tmp"):
                problems.append(f"{path}: stray temporary file from an interrupted write")
            elif (rel.endswith(".parquet") and "/" not in rel
                  or rel.startswith(f"{FAISS_DIR}/") and rel.endswith(".faiss")) and rel not in listed:
                problems.append(f"{path}: not in the manifest")
        return problems

    def _check_partition(self, e: PartitionEntry, live: dict[str, int]) -> list[str]:
        import pyarrow.parquet as pq

        pq_path, fs_path = self.root / e.parquet, self.root / e.faiss
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
            return [f"{self.manifest_path}: partition {e.index} tombstones chunk(s) it does not hold: "
                    f"{sorted(dead - set(chunk_ids))[:5]}"]
        twice = []
        for cid in chunk_ids:
            if cid not in dead:
                if cid in live:
                    twice.append(f"{cid} (also in partition {live[cid]})")
                live[cid] = e.index
        if twice:
            return [f"{pq_path}: chunk(s) live in two partitions: {twice[:5]}"]
        return []

    def require_verified(self) -> None:
        """Raise unless the store verifies (readers call this before trusting a store)."""
        self.meta()  # a folder that holds no store is said to be none, not to be damaged
        problems = self.verify(deep=False)
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise StoreError(
                f"store {self.root} does not verify:\n  {shown}{more}\n"
                f"Run `embedlab verify {self.root}` for details, and re-run the same "
                "`embedlab embed` (or `embedlab update`) command to repair it.")
