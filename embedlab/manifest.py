"""The manifest's records: what a store holds, partition by partition.

A store's manifest (see :mod:`embedlab.store` for where it lives) lists each committed
partition with everything needed to check it without trusting it: row, token and document
counts, the digest of what was encoded, its two files and their sha256s, and the chunk ids an
update has since tombstoned. These are plain records; reading and writing them is the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def part_name(index: int, generation: int = 0) -> str:
    """``part-00003``; a rewrite is staged as ``part-00003.g1``, ``part-00003.g2``, ... (and keeps
    the live name it replaces; format 2 made ``.gK`` the live name)."""
    return f"part-{index:05d}" + (f".g{generation}" if generation else "")


def drop_tombstoned(table: Any, tombstones: Sequence[str]) -> Any:
    """``table`` (with a ``chunk_id`` column) without the rows whose chunk id is tombstoned."""
    if not tombstones:
        return table
    import pyarrow as pa
    import pyarrow.compute as pc

    dead = pc.is_in(table.column("chunk_id"), value_set=pa.array(list(tombstones), type=pa.string()))
    return table.filter(pc.invert(dead))


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
    tombstones: list[str] = field(default_factory=list)  # sorted chunk ids of rows no longer live
    generation: int = 0  # times compaction rewrote the partition; part of its file names
    split: str = ""  # key of the corpus split it was cut from ("": cut by the driver's stream)
    ordinal: int = 0  # its place among that split's partitions
    split_parts: int = 0  # partitions the split gave (0: not known yet)

    def __post_init__(self) -> None:
        # Lists whatever carried the entry (a Dask event delivers tuples): an entry must compare
        # equal to its committed copy, or each commit of a split's partitions re-adds them all.
        self.reencoded_fp32 = list(self.reencoded_fp32)
        self.tombstones = list(self.tombstones)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for key in ("tombstones", "generation", "split", "ordinal", "split_parts"):  # absent when
            # unused: older manifests read the same
            if not d[key]:
                del d[key]
        return d

    @property
    def live_rows(self) -> int:
        return self.rows - len(self.tombstones)


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
        """Rows in the partition files, tombstoned ones included."""
        return sum(p.rows for p in self.partitions.values())

    @property
    def live_rows(self) -> int:
        return sum(p.live_rows for p in self.partitions.values())

    @property
    def next_index(self) -> int:
        """Index of the next partition an update appends."""
        return max(self.partitions, default=-1) + 1

    def files(self) -> set[str]:
        """Paths (relative to the store) of every file the manifest names."""
        return {f for e in self.partitions.values() for f in (e.parquet, e.faiss)}
