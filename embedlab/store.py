"""The on-disk store: Parquet vectors, FAISS shards, a manifest, and their verification.

Layout of a store folder ``OUT``::

    OUT/part-00000.parquet        chunk_id, doc_id, chunk_index, char_start, char_end,
                                  n_tokens, text, vector (fixed-size list of float32)
    OUT/_faiss/part-00000.faiss   IndexIDMap2(IndexFlatIP) with ids = index.faiss_ids(chunk_id)
    OUT/_embedlab.json            what made the store: model, checksum, dtype, chunking
    OUT/_log/                     the commit log (formats 2, 3): one record per commit, checkpoints
                                  (:mod:`embedlab.storelog`); per partition: rows, tokens, content
                                  digest, file sha256s and sizes; the last transaction's moves
    OUT/_manifest.json            format 1 only: the whole manifest, rewritten per commit
    OUT/_splits/KEY.json          per corpus split: partitions, documents, lines, rejects; and
    OUT/_splits/KEY.ids.npy       its documents' id hashes, sorted (the duplicate-id pass)
    OUT/_rejects.jsonl            every bad input record, with file, line and reason
    OUT/_summary.json             counts and timings of the last embed (_update_summary.json,
                                  _stream_summary.json: of the last update and stream)
    OUT/_merged/index.faiss       every shard joined into one index (derived; an update drops it)
    OUT/_staging/                 new files of an update, stream batch or compaction, not yet live
                                  (Parquet ones as ``part-NNNNN[.gK].parquet.staged``)

Every name that is not a partition starts with ``_`` or ``.``, which pyarrow and pandas skip,
and no other file ends in ``.parquet`` (what Dask, DuckDB and Polars go by), so ``OUT`` opens as
one Parquet dataset. Files are written under a hidden temporary name and renamed into
place, so no reader ever sees half a file.

The commit log is the commit point: a partition belongs to the store once a record names it.
In memory the committed state is a manifest (its records are in :mod:`embedlab.manifest`). A
format-1 store (``_manifest.json``) is read as it is; writers refuse it and name
``embedlab migrate OUT``, which turns its manifest into the log's first checkpoint. A writer
holds a claim on the log (:meth:`Store.claimed`): a second writer is refused with the first
one's host, pid and start time. Opening a store for reading (:meth:`Store.require_verified`)
checks the log and each listed file's size; a FAISS shard's sha256 is checked when it is loaded
(:meth:`Store.load_shard`); :meth:`Store.verify` checks everything. An update (:mod:`embedlab.transaction` holds the
writers' recover / commit / compact steps) appends partitions and marks the rows it replaces or
deletes as *tombstones* in the manifest entry of the partition holding them; readers
(:meth:`Store.iter_tables`, :class:`embedlab.search.Searcher`) skip them, and compaction rewrites
such a partition as its next *generation* without them; an update or a stream batch does so
itself, in its commit (copy-on-write), unless told to leave tombstones. A format-3 commit
stages new generations and moves them over the live names after its record
(:mod:`embedlab.rollforward`); :meth:`Store.manifest` finishes a commit a crash interrupted.
Format 2 named generations ``part-00003.g1.parquet``; such a store is upgraded in place by its
next writer (only ``_embedlab.json`` changes) and keeps those names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.files import atomic_write_bytes, atomic_write_json, reporting, sha256_file
from embedlab.index import faiss_ids, shard_bytes
from embedlab.manifest import Manifest, PartitionEntry, drop_tombstoned, part_name
from embedlab.rollforward import STAGED_SUFFIX, roll_forward
from embedlab.storecheck import (LiveIds, StoreError, StoreMismatchError, listed_problems,
                                 partition_problems, read_checked_shard, stray_files)
from embedlab.storelog import LOG_DIR, StoreLog

STORE_FILE = "_embedlab.json"
MANIFEST_FILE = "_manifest.json"
REJECTS_FILE = "_rejects.jsonl"
SUMMARY_FILE = "_summary.json"
SUMMARY_FILES = {"embed": SUMMARY_FILE, "update": "_update_summary.json", "stream": "_stream_summary.json"}
MERGED_DIR = "_merged"
FAISS_DIR = "_faiss"
STAGING_DIR = "_staging"
DICTIONARY_COLUMNS = ["doc_id"]  # in store and chunk files; the rest are all-distinct (bench_parquet_write.py)
SPLITS_DIR = "_splits"  # per corpus split: its counts and rejects, and its document-id hashes
FORMAT_VERSION = 3  # 1: one _manifest.json rewritten per commit; 2: the commit log in _log/;
# 3: and roll-forward commits (a format-2 writer would not finish one a crash interrupted)
# Fields of the store identity that every partition must share; a run that differs is refused.
IDENTITY_FIELDS = ("model_sha256", "dtype", "chunk_tokens", "overlap", "truncate", "pooling",
                   "normalize", "dim", "vector_dtype", "metric", "format_version", "codes")


__all__ = ["Manifest", "PartitionEntry", "Store", "StoreError", "StoreMismatchError",
           "atomic_write_bytes", "atomic_write_json", "sha256_file"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e}); the store is damaged") from e


class Store:
    """A store folder: its identity, manifest and partition files."""

    def __init__(self, root: Path | str, *, verify_deep: bool = False):
        self.root = Path(root)
        self.verify_deep = verify_deep  # resume re-hashes committed files instead of trusting sizes
        self.log = StoreLog(self.root)
        self._format: int | None = None

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
        """Create the store, or check that an existing one was made the same way.

        Raises:
            StoreError: the store is format 1 (writers refuse it; ``embedlab migrate`` converts it).
            StoreMismatchError: it was made with other settings.
        """
        meta = {**meta, "format_version": meta.get("format_version", FORMAT_VERSION)}
        if self.exists():
            self.require_writable_format()
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
    def int8_ranges_path(self) -> Path:
        """The int8 ranges every partition's ``code_int8`` column was made with (``embed --codes``)."""
        return self.root / "_int8_ranges.npy"

    @property
    def merged_dir(self) -> Path:
        """Indexes derived from the shards (the merged index); a commit makes them stale."""
        return self.root / MERGED_DIR

    @property
    def merged_index_path(self) -> Path:
        return self.merged_dir / "index.faiss"

    # -- commits ------------------------------------------------------------------------------
    @property
    def format_version(self) -> int:
        """3, 2: commits in ``_log``; 1: a ``_manifest.json`` store; 0: no store (a staging journal)."""
        if self._format is None:
            if not self.exists():
                return 0
            self._format = int(self.meta().get("format_version", 1))
        return self._format

    @property
    def logged(self) -> bool:
        return self.format_version >= 2

    def require_writable_format(self) -> None:
        """Raise unless writers may commit to this store (format 1 must be migrated first); mark a
        format-2 store format 3 (nothing else changes) so that an older writer refuses it."""
        if self.exists() and self.format_version < 2:
            raise StoreError(
                f"{self.root} is a format-{self.format_version} store (one {MANIFEST_FILE} rewritten per "
                f"commit); this embedlab reads it but writes only format {FORMAT_VERSION}. Run "
                f"`embedlab migrate {self.root}` once (nothing is re-embedded), then run this command again.")
        if self.exists() and self.format_version < FORMAT_VERSION:
            atomic_write_json(self.meta_path, {**self.meta(), "format_version": FORMAT_VERSION})
            self._format = None

    @property
    def manifest_path(self) -> Path:
        """The manifest of a format-1 store or of a staging journal."""
        return self.root / MANIFEST_FILE

    def has_commits(self) -> bool:
        return self.log.exists() if self.logged else self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        """The committed state; a commit whose moves a crash interrupted is finished first."""
        if self.logged:
            manifest = self.log.manifest()
            roll_forward(self.root, self.log.intent)
            return manifest
        if not self.manifest_path.is_file():
            return Manifest()
        return Manifest.from_json(read_json(self.manifest_path))

    def write_manifest(self, manifest: Manifest, sets: dict[str, Any] | None = None,
                       sizes: dict[int, tuple[int, int]] | None = None) -> None:
        """Commit ``manifest``, and ``sets`` (format 2+ only), as one log record of what changed
        (``sizes``: of files still staged); format 1: the whole file."""
        if self.logged:
            with reporting(self.log.log.root, "commit to the store's log"):
                self.log.write(manifest, sets, sizes)
        else:
            atomic_write_json(self.manifest_path, manifest.to_json())

    def commit_landed(self, manifest: Manifest, landed: Sequence[PartitionEntry]) -> None:
        """Commit partitions that landed (already in ``manifest``): O(1) each in format 2."""
        if self.logged:
            with reporting(self.log.log.root, "commit to the store's log"):
                self.log.commit(landed, complete=manifest.complete)
        else:
            atomic_write_json(self.manifest_path, manifest.to_json())

    def state_digest(self) -> str:
        """Names the committed state: changes with every commit (a cache key for results)."""
        if not self.logged:
            return hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()
        seq = self.log.seq
        path = self.log.log.record_path(seq) if seq else self.log.log.checkpoint_path(0)
        return hashlib.sha256(str(seq).encode() + path.read_bytes()).hexdigest()

    @contextlib.contextmanager
    def claimed(self, owner: str, *, take_over: bool = False, stale_after: float = 60.0) -> Iterator[None]:
        """Hold the store's writer claim (a record in its log, not a host-local lock) inside.

        Raises:
            WriterConflictError: another writer holds it; the message names its host, pid and start.
        """
        self.require_writable_format()
        with reporting(self.log.log.root, "claim the store for writing"):
            self.log.claim(owner, takeover=take_over, stale_after=stale_after)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the first fault is the one to report
                self.log.release()
            raise
        with reporting(self.log.log.root, "release the writer claim"):
            self.log.release()

    def migrate(self) -> int:
        """Turn a format-1 store into format 2 in place; return its partition count.

        The manifest becomes the log's checkpoint 0 (files kept, nothing re-embedded), then the
        store's identity says format 2, then the manifest goes. A crash in between leaves a
        format-1 store that migrates again.
        """
        if self.logged:
            raise StoreError(f"{self.root} is already a format-{self.format_version} store")
        manifest = self.manifest()
        if not manifest.complete:
            raise StoreError(f"the last `embedlab embed` into {self.root} did not finish; re-run it with the "
                             "embedlab that made the store, or embed again into an empty folder")
        self.log.migrate(manifest)
        atomic_write_json(self.meta_path, {**self.meta(), "format_version": FORMAT_VERSION}, resumable=False)
        self._format = None
        self.manifest_path.unlink()
        return len(manifest.partitions)

    def parquet_path(self, index: int, generation: int = 0) -> Path:
        """``part-NNNNN.parquet``; in a staging folder ``part-NNNNN.gK.parquet.staged``."""
        return self.root / f"{part_name(index, generation)}{self.parquet_suffix}"

    @property
    def parquet_suffix(self) -> str:
        return ".parquet" + (STAGED_SUFFIX if self.root.name == STAGING_DIR else "")

    def faiss_path(self, index: int, generation: int = 0) -> Path:
        return self.root / FAISS_DIR / f"{part_name(index, generation)}.faiss"

    @property
    def staging(self) -> Store:
        """``OUT/_staging``: where partitions wait until a manifest commit names them."""
        return Store(self.root / STAGING_DIR)

    def entry_is_current(self, entry: PartitionEntry | None, digest: str,
                         sizes: tuple[int, int] | None = None) -> bool:
        """True when ``entry`` encodes ``digest`` and its files are intact.

        Intact: both exist with the sizes their commit recorded (format 2, trusted on resume;
        ``sizes`` when the caller holds them, e.g. a split task, else this store's log), or, with
        ``verify_deep`` or no recorded sizes, both hash to what the entry records.
        """
        if entry is None or entry.digest != digest:
            return False
        if self.verify_deep or not self.logged:
            sizes = None
        elif sizes is None:
            sizes = self.log.sizes.get(entry.index)
        return not listed_problems(self.root, Manifest(partitions={entry.index: entry}),
                                   {entry.index: sizes} if sizes else {}, hashes=sizes is None,
                                   contiguous=False)

    def remove_partition(self, index: int) -> None:
        for p in (self.parquet_path(index), self.faiss_path(index)):
            with reporting(p, "remove"):
                p.unlink(missing_ok=True)

    def partition_files(self) -> list[str]:
        """Every partition file in the folder (relative paths), named by the manifest or not."""
        found = [p.name for p in self.root.glob(f"*{self.parquet_suffix}")]
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

    def discard(self, existed: bool) -> None:
        """Remove what a failed first run wrote (the folder was empty, or missing, when it began)."""
        for child in self.root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not existed:
            self.root.rmdir()

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
        pq.write_table(table, sink, compression="zstd", row_group_size=max(1, min(n, 8192)),
                       use_dictionary=DICTIONARY_COLUMNS)
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

    def load_shard(self, entry: PartitionEntry) -> Any:
        """The entry's FAISS shard without its tombstoned rows, its sha256 checked as it is read.

        Raises:
            ShardChecksumError: the shard's bytes differ from what was committed.
        """
        return read_checked_shard(self.root / entry.faiss, entry.faiss_sha256, entry.tombstones)

    # -- verification -------------------------------------------------------------------------
    def verify(self, deep: bool = True) -> list[str]:
        """Every problem with the store as ``"file: reason"``; empty when it is whole.

        Checks the commits against the folder (missing, extra and temporary files, sizes), each
        file's sha256, and with ``deep`` also that each Parquet file and FAISS shard opens, that
        their row counts agree, that the shard's ids are those of the chunk ids, and that no
        chunk is live twice.
        """
        return self._problems(hashes=True, deep=deep)

    def _problems(self, *, hashes: bool, deep: bool) -> list[str]:
        if not self.exists():
            return [f"{self.meta_path}: missing; not an embedlab store"]
        where = self.log.log.root if self.logged else self.manifest_path
        try:
            if not self.has_commits():
                return [f"{where}: missing; the run never finished a partition"]
            manifest = self.manifest()
        except (StoreError, RuntimeError, TypeError, KeyError) as e:
            return [f"{where}: unreadable ({e})"]
        problems = [] if manifest.complete else [f"{where}: run did not finish (not complete)"]
        sizes = self.log.sizes if self.logged else {}
        listed_bad = listed_problems(self.root, manifest, sizes, hashes=hashes)
        problems += listed_bad
        if deep:
            live = LiveIds()
            for k in sorted(manifest.partitions):
                e = manifest.partitions[k]
                if not any(p.startswith((f"{self.root / e.parquet}:", f"{self.root / e.faiss}:"))
                           for p in listed_bad):
                    problems += partition_problems(self.root, e, live)
            problems += live.problems(self.root, manifest)
        return problems + stray_files(self.root, manifest.files(), FAISS_DIR, (STAGING_DIR, LOG_DIR))

    def quick_problems(self) -> list[str]:
        """What opening the store checks: its commits, each listed file's size, stray files."""
        return self._problems(hashes=False, deep=False)

    def require_verified(self) -> None:
        """Raise unless the store opens whole: its commits, and each listed file at its committed size.

        This is what readers call before trusting a store; it reads no file's contents (a FAISS
        shard's sha256 is checked when :meth:`load_shard` reads it; ``embedlab verify`` checks all).
        """
        self.meta()  # a folder that holds no store is said to be none, not to be damaged
        problems = self.quick_problems()
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise StoreError(
                f"store {self.root} does not verify:\n  {shown}{more}\n"
                f"Run `embedlab verify {self.root}` for details, and re-run the same "
                "`embedlab embed` (or `embedlab update`) command to repair it.")
