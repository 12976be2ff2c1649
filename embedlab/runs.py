"""Sorted runs on disk, merged in bounded memory: duplicate checks that do not grow with the corpus.

A *run* is a structured numpy array sorted by its key fields, kept as a ``.npy`` file.
:class:`RunFile` reads one block by block with plain reads: a memory map would leave every page
it touched resident, and those pages count toward the process's RSS as much as its heap.
:func:`merge_sorted` yields the rows of many runs in key order, a round at a time; a round holds
about :data:`MERGE_ROWS` rows whatever the runs' lengths. :class:`RunWriter` turns a stream of
unsorted rows into such runs (sorted in memory :data:`SPILL_ROWS` at a time, then written to a
folder, and every :data:`FAN_IN` runs of a level merged into one of the next level, so the runs
left to merge stay few), which is how ``embedlab verify`` checks that no chunk id is live twice.
Memory is then about ``SPILL_ROWS + MIN_BLOCK x FAN_IN x levels`` rows, for any number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

MERGE_ROWS = 1 << 13  # rows one merge round holds across all runs (400 KB of split id rows)
MIN_BLOCK = 1024  # rows read from one run at a time, at least
SPILL_ROWS = 1 << 16  # rows a RunWriter sorts in memory before it writes a run
FAN_IN = 64  # runs a RunWriter merges into one, level by level, so few runs are left to merge


class RunFile:
    """A ``.npy`` run read by row ranges, without a memory map."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, self.dtype = read_header(fh)
            self.offset = fh.tell()
        self.length = int(shape[0]) if shape else 0

    def __len__(self) -> int:
        return self.length

    def rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.length)
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.dtype.itemsize)
            data = fh.read((stop - start) * self.dtype.itemsize)
        return np.frombuffer(data, dtype=self.dtype)


def write_run(path: Path, dtype: np.dtype, length: int, blocks: Iterable[np.ndarray]) -> Path:
    """Write ``length`` rows, given block by block, as one ``.npy`` file (never all in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (length,)}
    written = 0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for b in blocks:
            fh.write(np.ascontiguousarray(b, dtype=dtype).tobytes())
            written += len(b)
    if written != length:
        raise ValueError(f"{path}: {written} rows written, {length} announced")
    return path


def _rows(run: np.ndarray | RunFile, start: int, stop: int) -> np.ndarray:
    return run.rows(start, stop) if isinstance(run, RunFile) else np.asarray(run[start:stop])


def merge_sorted(runs: Sequence[np.ndarray | RunFile], keys: Sequence[str], then: Sequence[str] = (),
                 block: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of ``runs`` (each sorted by ``keys``) in rounds: (rows, their run numbers), sorted
    by ``keys``, then run number, then ``then``.

    Each round takes every row whose first key is at most the smallest of the runs' buffered
    last first keys, reading further where a run holds more rows of that key, so a group of
    equal keys is never cut between rounds. A round holds about ``max(MERGE_ROWS, MIN_BLOCK x
    len(runs))`` rows (``block`` rows per run when given).
    """
    first = keys[0]
    block = block or max(MIN_BLOCK, MERGE_ROWS // max(1, len(runs)))
    pos = [0] * len(runs)  # rows of each run read into its buffer so far
    buf = [np.zeros(0, dtype=(r.dtype)) for r in runs]

    def more(k: int) -> bool:
        if pos[k] >= len(runs[k]):
            return False
        got = _rows(runs[k], pos[k], pos[k] + block)
        pos[k] += len(got)
        buf[k] = np.concatenate([buf[k], got]) if len(buf[k]) else got
        return True

    while True:
        for k in range(len(runs)):
            if len(buf[k]) < block:
                more(k)
        live = [k for k in range(len(runs)) if len(buf[k])]
        if not live:
            return
        cutoff = min(buf[k][first][-1] for k in live)
        rows, owners = [], []
        for k in live:
            while buf[k][first][-1] <= cutoff and more(k):
                pass  # the run may hold more rows of the cutoff key: take them all this round
            end = int(np.searchsorted(buf[k][first], cutoff, side="right"))
            if end:
                rows.append(buf[k][:end])
                owners.append(np.full(end, k, dtype=np.int64))
                buf[k] = buf[k][end:]
        run, owner = np.concatenate(rows), np.concatenate(owners)
        order = np.lexsort([run[f] for f in reversed(then)] + [owner] + [run[f] for f in reversed(keys)])
        yield run[order], owner[order]


class RunWriter:
    """Collects rows in any order and keeps them as sorted runs in ``folder``.

    Args:
        folder: where the runs go (a scratch folder the caller owns).
        dtype: the rows' structured dtype.
        keys: the fields the runs are sorted by.
        spill: rows sorted in memory before they are written as a run.
        fan_in: runs of one level merged into one run of the next.
    """

    def __init__(self, folder: Path | str, dtype: np.dtype, keys: Sequence[str], spill: int = SPILL_ROWS,
                 fan_in: int = FAN_IN):
        self.folder, self.dtype, self.keys = Path(folder), np.dtype(dtype), list(keys)
        self.spill, self.fan_in = spill, fan_in
        self.pending: list[np.ndarray] = []
        self.held = 0
        self.levels: list[list[Path]] = []
        self.written = 0  # runs written, merged ones included (names them)

    def add(self, rows: np.ndarray) -> None:
        self.pending.append(rows.astype(self.dtype, copy=False))
        self.held += len(rows)
        if self.held >= self.spill:
            self._spill()

    def _path(self) -> Path:
        self.written += 1
        return self.folder / f"run-{self.written:08d}.npy"

    def _spill(self) -> None:
        if not self.held:
            return
        run = np.concatenate(self.pending)
        self.pending, self.held = [], 0
        run = run[np.lexsort([run[f] for f in reversed(self.keys)])]
        path = self._path()
        np.save(path, run, allow_pickle=False)
        self._push(0, path)

    def _push(self, level: int, path: Path) -> None:
        while len(self.levels) <= level:
            self.levels.append([])
        self.levels[level].append(path)
        if len(self.levels[level]) < self.fan_in:
            return
        group, self.levels[level] = self.levels[level], []
        runs = [RunFile(p) for p in group]
        merged = write_run(self._path(), self.dtype, sum(len(r) for r in runs),
                           (rows for rows, _ in merge_sorted(runs, self.keys)))
        for p in group:
            p.unlink()
        self._push(level + 1, merged)

    def runs(self) -> list[RunFile]:
        """Every run (the rows still held are written first), at most ``fan_in - 1`` per level."""
        self._spill()
        return [RunFile(p) for level in self.levels for p in level]
