"""The on-disk store: Parquet vectors, FAISS shards, a manifest, and their verification.

Layout of a store folder ``OUT``::

    OUT/part-00000.parquet        chunk_id, doc_id, chunk_index, char_start, char_end,
                                  n_tokens, text, vector (fixed-size list of float32)
    OUT/_faiss/part-00000.faiss   IndexIDMap2(IndexFlatIP) with ids = faiss_ids(chunk_id)
    OUT/_embedlab.json            what made the store: model, checksum, dtype, chunking
    OUT/_manifest.json            per partition: rows, tokens, content digest, file sha256s
    OUT/_rejects.jsonl            every bad input record, with file, line and reason
    OUT/_summary.json             counts and timings of the last run

Every name that is not a partition starts with ``_`` or ``.``, which pyarrow, pandas and
DuckDB skip, so ``OUT`` opens as one Parquet dataset. Files are written under a hidden
temporary name and renamed into place, so no reader ever sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STORE_FILE = "_embedlab.json"
MANIFEST_FILE = "_manifest.json"
REJECTS_FILE = "_rejects.jsonl"
SUMMARY_FILE = "_summary.json"
FAISS_DIR = "_faiss"
FORMAT_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)
ID_SCHEME = "blake2b-8(chunk_id) & (2**63 - 1)"
# Fields of the store identity that every partition must share; a run that differs is refused.
IDENTITY_FIELDS = ("model_sha256", "dtype", "chunk_tokens", "overlap", "truncate", "pooling",
                   "normalize", "dim", "vector_dtype", "metric", "format_version")


class StoreError(RuntimeError):
    pass


class StoreMismatchError(StoreError):
    pass


def faiss_ids(chunk_ids: Sequence[str]) -> np.ndarray:
    """``(n,)`` int64 FAISS ids: the first 8 bytes of blake2b(chunk_id), sign bit cleared.

    Derived from the id alone, so the same chunk has the same FAISS id in every run and shard.
    """
    out = np.empty(len(chunk_ids), dtype=np.int64)
    for i, cid in enumerate(chunk_ids):
        d = hashlib.blake2b(cid.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little") & 0x7FFF_FFFF_FFFF_FFFF
    return out


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e}); the store is damaged") from e


@dataclass
class PartitionEntry:
    """One manifest row: everything needed to check a partition without trusting it."""

    index: int
    rows: int
    tokens: int
    docs: int
    digest: str  # Partition.digest: what was encoded
    parquet: str  # paths relative to the store folder
    faiss: str
    parquet_sha256: str
    faiss_sha256: str
    reencoded_fp32: list[str] = field(default_factory=list)  # chunks whose vectors were non-finite

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Manifest:
    partitions: dict[int, PartitionEntry] = field(default_factory=dict)
    complete: bool = False  # True once a run planned and wrote every partition

    def to_json(self) -> dict[str, Any]:
        return {"complete": self.complete,
                "partitions": [self.partitions[k].to_json() for k in sorted(self.partitions)]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        parts = {p["index"]: PartitionEntry(**p) for p in obj.get("partitions", [])}
        return cls(partitions=parts, complete=bool(obj.get("complete", False)))

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions.values())


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
            raise StoreError(f"{self.root} is not an embedlab store (no {STORE_FILE}); "
                             f"run `embedlab embed CORPUS --out {self.root}` first")
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
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / FAISS_DIR).mkdir(exist_ok=True)
        atomic_write_json(self.meta_path, meta)

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

    def parquet_path(self, index: int) -> Path:
        return self.root / f"{part_name(index)}.parquet"

    def faiss_path(self, index: int) -> Path:
        return self.root / FAISS_DIR / f"{part_name(index)}.faiss"

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
            p.unlink(missing_ok=True)

    def remove_stray_temporaries(self) -> list[Path]:
        stray = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for p in stray:
            p.unlink(missing_ok=True)
        return stray

    # -- partitions ---------------------------------------------------------------------------
    def write_partition(self, index: int, columns: dict[str, Any], vectors: np.ndarray,
                        ) -> tuple[str, str]:
        """Write one partition's Parquet file and FAISS shard atomically; return their sha256s."""
        import faiss
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        table = pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=max(1, min(n, 8192)))
        parquet_bytes = sink.getvalue().to_pybytes()

        index_ = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index_.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                faiss_ids(columns["chunk_id"]))
        faiss_bytes = faiss.serialize_index(index_).tobytes()

        atomic_write_bytes(self.parquet_path(index), parquet_bytes)
        atomic_write_bytes(self.faiss_path(index), faiss_bytes)
        return hashlib.sha256(parquet_bytes).hexdigest(), hashlib.sha256(faiss_bytes).hexdigest()

    def parquet_files(self) -> list[Path]:
        m = self.manifest()
        return [self.root / m.partitions[k].parquet for k in sorted(m.partitions)]

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[Any]:
        import pyarrow.parquet as pq

        for path in self.parquet_files():
            yield pq.read_table(path, columns=list(columns) if columns else None)

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
                found = self._check_partition(e)
            problems.extend(found)
        indices = sorted(manifest.partitions)
        if indices and indices != list(range(len(indices))):
            missing = sorted(set(range(max(indices) + 1)) - set(indices))
            problems.append(f"{self.manifest_path}: no entry for partition(s) {missing}")
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file():
                continue
            if path.name.endswith(".tmp"):
                problems.append(f"{path}: stray temporary file from an interrupted write")
            elif (rel.endswith(".parquet") and "/" not in rel
                  or rel.startswith(f"{FAISS_DIR}/") and rel.endswith(".faiss")) and rel not in listed:
                problems.append(f"{path}: not in the manifest")
        return problems

    def _check_partition(self, e: PartitionEntry) -> list[str]:
        import faiss
        import pyarrow.parquet as pq

        pq_path, fs_path = self.root / e.parquet, self.root / e.faiss
        try:
            table = pq.read_table(pq_path, columns=["chunk_id"])
        except Exception as exc:
            return [f"{pq_path}: unreadable Parquet ({exc})"]
        if table.num_rows != e.rows:
            return [f"{pq_path}: {table.num_rows} rows, manifest says {e.rows}"]
        try:
            index = faiss.read_index(str(fs_path))
        except Exception as exc:
            return [f"{fs_path}: unreadable FAISS index ({exc})"]
        if index.ntotal != e.rows:
            return [f"{fs_path}: ntotal {index.ntotal}, manifest says {e.rows} rows"]
        ids = faiss.vector_to_array(faiss.downcast_index(index).id_map) if e.rows else np.zeros(0)
        if not np.array_equal(ids, faiss_ids(table.column("chunk_id").to_pylist())):
            return [f"{fs_path}: FAISS ids do not match the chunk ids of {pq_path.name}"]
        return []

    def require_verified(self) -> None:
        """Raise unless the store verifies (readers call this before trusting a store)."""
        problems = self.verify(deep=False)
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise StoreError(
                f"store {self.root} does not verify:\n  {shown}{more}\n"
                f"Run `embedlab verify {self.root}` for details, and re-run the same "
                "`embedlab embed` command to repair it.")
