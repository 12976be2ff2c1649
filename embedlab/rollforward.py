"""Roll-forward commits: a raw Parquet reader sees each partition at exactly one generation.

A writer that changes partitions (``update``, a ``stream`` batch, ``compact``) stages each new
file in ``OUT/_staging/`` under a name no raw reader lists: the folder starts with ``_``, which
pyarrow's dataset discovery (and so pandas) skips, and a staged Parquet file ends in
``.parquet.staged``, which Dask's, DuckDB's and Polars' ``*.parquet`` listings (recursive ones
too, which enter ``_`` folders) do not match (``scripts/check_raw_readers.py``). Then one commit record names the new entries *and* the intent: each staged file and the
live name it takes. That record is the decision point. Then each staged file is moved over its
live name with :func:`os.replace`, one atomic rename per file, so a reader listing the folder
finds for each partition the old file or the new one, never both and never neither. Rewritten
partitions move first (they lose rows), new partitions last (they add rows), so a chunk that
moved between partitions (a modified document) is never listed twice.

A crash before the record leaves the store at its old commit. A crash after it leaves a store
that whoever opens it next, a reader through embedlab or the next writer, rolls forward
(:func:`roll_forward`): the moves whose staged file is still there are done; the rest were. Only
the latest transaction can be unfinished (a writer finishes its own before it starts another,
and recovers its predecessor's first), and staged names are unique to their transaction
(partition index and generation), so a reader that races the writer over the same moves does
each at most once and never moves a later transaction's file.

Tests kill a writer at a named step: with ``EMBEDLAB_CRASH_AT=STEP`` in its environment the
process SIGKILLs itself there (:func:`crash_point`; ``staged``, ``committed``, ``moved-N`` after
the N-th move, ``moved``). Nothing else reads that variable.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedlab.files import reporting

INTENT = "rollforward"  # store meta key: the moves of the last transaction, as [[staged, live], ...]
STAGED_SUFFIX = ".staged"  # a staged Parquet file is part-NNNNN[.gK].parquet.staged
CRASH_ENV = "EMBEDLAB_CRASH_AT"


def crash_point(step: str) -> None:
    """SIGKILL this process when ``EMBEDLAB_CRASH_AT`` names ``step`` (fault tests only)."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def intent(moves: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The value committed under :data:`INTENT`: (staged, live) paths relative to the store."""
    return {"moves": [[src, dst] for src, dst in moves]}


def moves_of(value: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(src, dst) for src, dst in (value or {}).get("moves", [])]


def pending(root: Path, value: dict[str, Any] | None) -> bool:
    """True when a committed transaction's staged file is still waiting (one ``stat`` per file)."""
    return any((root / src).exists() for src, _ in moves_of(value))


def roll_forward(root: Path, value: dict[str, Any] | None) -> int:
    """Finish the committed moves ``value`` names; return how many this call made.

    Idempotent: a move whose staged file is gone was made already (by an earlier opener, or by
    the writer at the same moment).

    Raises:
        EnvironmentFault: a move the system refused (e.g. a read-only store), naming the file.
    """
    done = 0
    for i, (src, dst) in enumerate(moves_of(value), 1):
        with reporting(root / dst, "move a committed partition file into place"):
            try:
                os.replace(root / src, root / dst)
            except FileNotFoundError:
                if not (root / dst).parent.is_dir():
                    raise
                continue
        done += 1
        crash_point(f"moved-{i}")
    return done


def fsync_dirs(*folders: Path) -> None:
    """Make renames and creations in ``folders`` durable (before a record names them, or after
    moves that staging's removal must not outrun)."""
    for folder in folders:
        if folder.is_dir():
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
