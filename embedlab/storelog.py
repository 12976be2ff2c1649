"""A store's commits as a commit log (format 2): one small record per commit, not a whole manifest.

A format-2 store keeps its commits in ``OUT/_log`` (:mod:`embedlab.commitlog`). Each landed
partition is an ``add`` of the entry ``part/<index>`` whose value is the partition's manifest
entry plus the byte sizes of its two files (stat'ed when the commit is made, where the files
are staged for a roll-forward commit: :mod:`embedlab.rollforward`), so a reader can trust a
listed file without hashing it; the store's ``complete`` flag is a ``set``, as is the
roll-forward intent of the last transaction. The
in-memory :class:`~embedlab.manifest.Manifest` the pipeline works on is the log folded up.

Writers hold a claim on the log (:meth:`StoreLog.claim`): the one writer of a store in this
process is kept in a process-wide table, so every :class:`StoreLog` of that folder commits
through it, and a second process is refused with the first writer's host, pid and start time.
A commit made with no claim held claims, commits and releases (three records), which is what a
one-off :meth:`StoreLog.write` needs.

Commit cost: :meth:`StoreLog.commit` writes the actions it is given (O(1) per partition);
:meth:`StoreLog.write` diffs a whole manifest against the last commit in memory (O(partitions)
compares, no I/O beyond the record) and is for one-off commits such as the end of a run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from embedlab.commitlog import LOG_DIR, CommitLog, Snapshot, Writer
from embedlab.manifest import Manifest, PartitionEntry
from embedlab.rollforward import INTENT

PART = "part/"
COMPLETE = "complete"
_HELD: dict[str, Writer] = {}  # resolved store root -> the writer this process holds on it


def part_key(index: int) -> str:
    return f"{PART}{index:012d}"


def _copy(e: PartitionEntry) -> PartitionEntry:
    return dataclasses.replace(e, reencoded_fp32=list(e.reencoded_fp32), tombstones=list(e.tombstones))


def entry_value(e: PartitionEntry, sizes: tuple[int, int]) -> dict[str, Any]:
    """What the log keeps for a partition: its manifest entry and its files' sizes."""
    return {**e.to_json(), "sizes": list(sizes)}


def entry_from_value(value: dict[str, Any]) -> tuple[PartitionEntry, tuple[int, int] | None]:
    fields = {k: v for k, v in value.items() if k != "sizes"}
    sizes = value.get("sizes")
    return PartitionEntry(**fields), (tuple(sizes) if sizes else None)


class StoreLog:
    """The commit log of the store at ``root``, read as a manifest and written one record a commit."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.log = CommitLog(self.root / LOG_DIR)
        self.sizes: dict[int, tuple[int, int]] = {}  # partition -> (parquet, faiss) bytes, as committed
        self._committed: dict[int, PartitionEntry] | None = None  # copies, to diff a manifest against
        self._complete = False
        self._seq = -1
        self.intent: dict[str, Any] | None = None  # the last transaction's moves, as committed

    @property
    def _key(self) -> str:
        return str(self.root.resolve())

    def exists(self) -> bool:
        """True once a run committed a partition or the ``complete`` flag (a claim is not enough)."""
        if not self.log.root.is_dir():
            return False
        snap = self.snapshot()
        return bool(snap.entries) or COMPLETE in snap.meta

    def held(self) -> Writer | None:
        """The writer this process holds on the store, if any."""
        w = _HELD.get(self._key)
        return None if w is None or w.released else w

    def snapshot(self) -> Snapshot:
        w = self.held()
        return w.snapshot if w is not None else self.log.open()

    def manifest(self) -> Manifest:
        """The committed state as a manifest (every entry, the ``complete`` flag)."""
        snap = self.snapshot()
        parts: dict[int, PartitionEntry] = {}
        sizes: dict[int, tuple[int, int]] = {}
        for key, value in snap.entries.items():
            if key.startswith(PART):
                e, s = entry_from_value(value)
                parts[e.index] = e
                if s is not None:
                    sizes[e.index] = s
        self.sizes = sizes
        self._committed = {k: _copy(e) for k, e in parts.items()}
        self._complete = bool(snap.meta.get(COMPLETE, False))
        self._seq = snap.seq
        self.intent = snap.meta.get(INTENT)
        return Manifest(partitions=dict(sorted(parts.items())), complete=self._complete)

    def meta_value(self, key: str, default: Any = None) -> Any:
        return self.snapshot().meta.get(key, default)

    @property
    def seq(self) -> int:
        """The number of the last record committed (0: none)."""
        return self.snapshot().seq

    # -- writing --------------------------------------------------------------------------------
    def claim(self, owner: str, *, takeover: bool = False, stale_after: float = 60.0) -> Writer:
        """Claim the store for this process (see :meth:`embedlab.commitlog.CommitLog.acquire`).

        A torn last record (a writer killed mid-write without hard links) is set aside first. A
        claim this same process left behind (a writer that ended without releasing) is taken over.

        Raises:
            WriterConflictError: another live writer holds the store; the message names it.
        """
        if self.held() is not None:
            return _HELD[self._key]
        self.log.repair_torn_tail()
        holder = self.log.open().claim
        if holder is not None and holder.pid == os.getpid() and holder.alive():
            takeover, stale_after = True, 0.0
        writer = self.log.acquire(owner, takeover=takeover, stale_after=stale_after)
        _HELD[self._key] = writer
        self._committed = None
        return writer

    def release(self) -> None:
        w = _HELD.pop(self._key, None)
        if w is not None and self.log.root.is_dir():
            w.__exit__(None, None, None)

    def commit(self, put: Iterable[PartitionEntry] = (), drop: Iterable[int] = (),
               complete: bool | None = None, sets: dict[str, Any] | None = None,
               sizes: dict[int, tuple[int, int]] | None = None) -> int:
        """One record: ``put`` entries (their files stat'ed now, unless ``sizes`` holds theirs: files
        still staged), ``drop`` indices, flags; its number.

        Raises:
            FencedError: another writer took the store over since this writer's last record.
            OSError: a ``put`` entry's file is missing.
        """
        put = list(put)
        actions: list[dict[str, Any]] = []
        for e in put:
            got = (sizes or {}).get(e.index) or ((self.root / e.parquet).stat().st_size,
                                                 (self.root / e.faiss).stat().st_size)
            self.sizes[e.index] = got
            actions.append({"op": "add", "key": part_key(e.index), "entry": entry_value(e, got)})
        dropped = list(drop)
        actions += [{"op": "remove", "key": part_key(k)} for k in dropped]
        if complete is not None:
            actions.append({"op": "set", "key": COMPLETE, "value": complete})
        actions += [{"op": "set", "key": k, "value": v} for k, v in (sets or {}).items()]
        writer, temporary = self.held(), False
        if writer is None:
            writer, temporary = self.claim("a one-off commit"), True
        try:
            seq = writer.commit(actions)
        finally:
            if temporary:
                self.release()
        if self._committed is not None:
            for e in put:
                self._committed[e.index] = _copy(e)
            for k in dropped:
                self._committed.pop(k, None)
            self._complete = self._complete if complete is None else complete
            self._seq = seq
        return seq

    def write(self, manifest: Manifest, sets: dict[str, Any] | None = None,
              sizes: dict[int, tuple[int, int]] | None = None) -> int | None:
        """Commit whatever differs between ``manifest`` and the last commit, as one record
        (``sizes``: of files still staged, see :meth:`commit`).

        Returns:
            The record's number; None when nothing differs.
        """
        if self._committed is None or self._seq != self.seq:
            self.manifest()
        old = self._committed or {}
        put = [e for k, e in manifest.partitions.items() if old.get(k) != e]
        drop = [k for k in old if k not in manifest.partitions]
        fresh = manifest.complete != self._complete or COMPLETE not in self.snapshot().meta
        complete = manifest.complete if fresh else None
        if not put and not drop and complete is None and not sets:
            return None
        return self.commit(put, drop, complete, sets, sizes)

    def migrate(self, manifest: Manifest) -> Path:
        """Write ``manifest`` (a version-1 store's) as checkpoint 0 of a new log; return its path.

        File names are kept and nothing is re-embedded; sizes are stat'ed now.
        """
        snap = Snapshot()
        for k in sorted(manifest.partitions):
            e = manifest.partitions[k]
            sizes = ((self.root / e.parquet).stat().st_size, (self.root / e.faiss).stat().st_size)
            snap.entries[part_key(k)] = entry_value(e, sizes)
        snap.meta[COMPLETE] = manifest.complete
        self.log.root.mkdir(parents=True, exist_ok=True)
        return self.log.write_checkpoint(snap)
